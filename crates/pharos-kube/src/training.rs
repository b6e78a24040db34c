//! Training jobs as Kubernetes Jobs.
//!
//! A pharos job is one indexed Job `pharos-<installation>-<id>` (completions =
//! parallelism = learners, `backoffLimit: 0`: pharos restarts gangs itself, from their
//! checkpoints) and a headless Service of the same name owned by it, so learner `k`
//! is reachable as `<job>-<k-1>.<job>` (MASTER_ADDR is learner 1's). The Job is created
//! **suspended**; `start` lets it go only when the nodes have room for every learner
//! (else the call answers "waiting", and the controller asks again). Halting suspends it
//! (Kubernetes deletes its pods); the next attempt of a suspended Job unsuspends it with
//! the new attempt number, while the Job of a failed attempt is deleted and made anew.
//!
//! Learner statuses come from the watched pods (`batch.kubernetes.io/job-completion-
//! index`); logs are copied from the pods into the job's log files (at most once a
//! second per learner, once more at the end), so `pharos train logs` and the metrics work
//! as on the other backends. A learner submitted to a Job that is gone is
//! [`LearnerStatus::Lost`].

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use pharos_engine::host::LockExt;
use pharos_engine::training::{Backend, BackendError, JobRun, LearnerStatus};
use serde_json::{Value, json};

use crate::{ATTEMPT, JOB_LABEL, Kube, describe, fit, transient};

const INDEX_LABEL: &str = "batch.kubernetes.io/job-completion-index";

/// The cluster's nodes and the pods on them, as listed for an admission.
type Listed = (Vec<Node>, Vec<Pod>);

pub struct KubeBackend {
    kube: Arc<Kube>,
    /// The nodes and the pods on them as last listed for an admission, shared for a
    /// second by the gangs that wait (forgotten once one is let go).
    room: std::sync::Mutex<Option<(std::time::Instant, Arc<Listed>)>>,
    /// Jobs let go in the last seconds (the watch may still show them suspended).
    let_go: std::sync::Mutex<BTreeMap<String, std::time::Instant>>,
}

fn err(what: &str, e: kube::Error) -> BackendError {
    let m = format!("{what}: {}", describe(&e));
    if transient(&e) {
        BackendError::transient(m)
    } else {
        BackendError::new(m)
    }
}

impl KubeBackend {
    pub fn new(kube: Arc<Kube>) -> Self {
        Self {
            kube,
            room: std::sync::Mutex::new(None),
            let_go: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// The nodes and the pods bound to them (listed at most once a second).
    fn nodes_and_pods(&self) -> Result<Arc<Listed>, BackendError> {
        let fresh = self
            .room
            .lock_or_recover()
            .as_ref()
            .filter(|(t, _)| t.elapsed() < Duration::from_secs(1))
            .map(|(_, r)| r.clone());
        if let Some(r) = fresh {
            return Ok(r);
        }
        let nodes: kube::Api<Node> = kube::Api::all(self.kube.client.clone());
        let pods: kube::Api<Pod> = kube::Api::all(self.kube.client.clone());
        let (nodes, pods) = self.block_on(async {
            let n = nodes.list(&ListParams::default()).await;
            let p = pods
                .list(&ListParams::default().fields("status.phase!=Succeeded,status.phase!=Failed"))
                .await;
            (n, p)
        })?;
        let nodes = nodes.map_err(|e| err("listing the nodes", e))?;
        let pods = pods.map_err(|e| err("listing the pods on the nodes", e))?;
        let r = Arc::new((nodes.items, pods.items));
        *self.room.lock_or_recover() = Some((std::time::Instant::now(), r.clone()));
        Ok(r)
    }

    /// The Job's (and its Service's) name.
    pub fn job_name(&self, job: &JobRun) -> String {
        format!("pharos-{}-{}", self.kube.installation, job.id)
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> Result<T, BackendError> {
        match tokio::runtime::Handle::try_current() {
            Ok(h) => Ok(h.block_on(f)),
            Err(_) => Err(BackendError::new("called outside the server's runtime")),
        }
    }

    fn learner_dir(job: &JobRun, learner: u32) -> PathBuf {
        job.paths
            .state
            .join(format!("attempt-{}", job.attempt))
            .join(format!("learner-{learner}"))
    }

    fn submitted_marker(job: &JobRun) -> PathBuf {
        job.paths
            .state
            .join(format!("attempt-{}", job.attempt))
            .join("submitted")
    }

    /// Records that this attempt's Job was made (so its absence later means lost).
    fn mark_submitted(&self, job: &JobRun, name: &str) -> Result<(), BackendError> {
        let marker = Self::submitted_marker(job);
        if marker.exists() {
            return Ok(());
        }
        fs::create_dir_all(marker.parent().expect("a parent"))
            .and_then(|_| fs::write(&marker, name))
            .map_err(|e| BackendError::io(marker.display(), e))
    }

    /// The image for the manifest's framework.
    fn image(&self, job: &JobRun) -> String {
        let c = &self.kube.config;
        c.images
            .get(&job.manifest.framework.name)
            .cloned()
            .unwrap_or_else(|| c.image.clone())
    }

    fn need(&self, job: &JobRun) -> fit::Need {
        let m = &job.manifest;
        let c = &self.kube.config;
        fit::Need {
            cpus: m.cpus,
            memory: memory_bytes(job) as f64,
            gpus: (m.gpus > 0).then(|| (c.gpu_resource.clone(), m.gpus as f64)),
            selector: (m.gpus > 0)
                .then(|| m.gpu_type.clone().map(|t| (c.gpu_type_label.clone(), t)))
                .flatten(),
        }
    }

    /// The Job of `job` (suspended), as pharos makes it.
    pub fn job_object(&self, job: &JobRun) -> Job {
        let m = &job.manifest;
        let c = &self.kube.config;
        let name = self.job_name(job);
        let mut labels = self.kube.labels();
        labels.insert(JOB_LABEL.into(), job.id.to_string());
        // What every learner shares; the per-learner variables come from the index.
        let mut env = pharos_engine::job_files::learner_env(job, 1, None);
        for k in pharos_engine::job_files::HOST_VARIABLES.iter().chain(&[
            "LEARNER_ID",
            "RANK",
            "ATTEMPT",
        ]) {
            // (ATTEMPT too: a resumed Job's pods keep the environment it was made with.)
            env.remove(*k);
        }
        env.insert("LOCAL_RANK".into(), "0".into());
        env.insert("MASTER_ADDR".into(), format!("{name}-0.{name}"));
        let env: Vec<Value> = env
            .into_iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect();
        let script = format!(
            "export LEARNER_ID=$((JOB_COMPLETION_INDEX + 1)) RANK=$JOB_COMPLETION_INDEX\n{}",
            m.framework.command
        );
        let cpu = format!("{}m", (m.cpus * 1000.0).round() as u64);
        let memory = memory_bytes(job).to_string();
        let mut requests = json!({"cpu": cpu, "memory": memory});
        let mut limits = json!({});
        if c.cpu_limits {
            limits["cpu"] = json!(cpu);
        }
        if c.memory_limits {
            limits["memory"] = json!(memory);
        }
        if m.gpus > 0 {
            requests[&c.gpu_resource] = json!(m.gpus.to_string());
            limits[&c.gpu_resource] = json!(m.gpus.to_string());
        }
        let mut container = json!({
            "name": "learner",
            "image": self.image(job),
            "command": ["/bin/sh", "-c", script],
            "env": env,
            "resources": {"requests": requests, "limits": limits},
            "securityContext": crate::untrusted_security_context(),
        });
        // Learners are tenants' code: no credentials for the Kubernetes API.
        let mut pod = json!({
            "restartPolicy": "Never",
            "subdomain": name,
            "automountServiceAccountToken": false,
            "containers": [],
        });
        if let Some(claim) = &c.data_claim {
            // Only this job's own directory of the claim, at the path the server knows
            // it by: never the store, the tokens or another job's files.
            container["volumeMounts"] = json!([{
                "name": "data",
                "mountPath": job.paths.root.display().to_string(),
                "subPath": format!("jobs/{}", job.id),
            }]);
            pod["volumes"] =
                json!([{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]);
        }
        pod["containers"] = json!([container]);
        if let Some(sa) = &c.service_account {
            pod["serviceAccountName"] = json!(sa);
        }
        if let Some((k, v)) = self.need(job).selector {
            pod["nodeSelector"] = json!({ k: v });
        }
        if m.gpus > 0 {
            // Nodes are often tainted by their GPU resource; not every cluster adds the
            // toleration itself.
            pod["tolerations"] = json!([{"key": c.gpu_resource, "operator": "Exists"}]);
        }
        serde_json::from_value(json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {ATTEMPT: job.attempt.to_string()},
            },
            "spec": {
                "suspend": true,
                "completionMode": "Indexed",
                "completions": m.learners,
                "parallelism": m.learners,
                "backoffLimit": 0,
                "template": {"metadata": {"labels": labels}, "spec": pod},
            }
        }))
        .expect("a Job")
    }

    /// The headless Service the learners find each other by, owned by the Job.
    fn service_object(&self, job: &JobRun, owner: &Job) -> Service {
        let name = self.job_name(job);
        let mut labels = self.kube.labels();
        labels.insert(JOB_LABEL.into(), job.id.to_string());
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "labels": labels,
                "ownerReferences": [{
                    "apiVersion": "batch/v1", "kind": "Job", "name": name,
                    "uid": owner.metadata.uid.clone().unwrap_or_default(),
                    "controller": true,
                }],
            },
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": true,
                "selector": {JOB_LABEL: job.id.to_string(), crate::INSTALLATION: self.kube.installation},
            }
        }))
        .expect("a Service")
    }

    /// The Job of `job` from the watch, if any (an error until the watch has listed).
    fn cached_job(&self, job: &JobRun) -> Result<Option<Arc<Job>>, BackendError> {
        let name = self.job_name(job);
        let jobs = self
            .kube
            .jobs
            .objects()
            .ok_or_else(|| BackendError::transient("the watch of Jobs has not listed yet"))?;
        Ok(jobs
            .into_iter()
            .find(|j| j.metadata.name.as_deref() == Some(&name)))
    }

    /// The pods of the Job `j` (by their owner: an earlier Job of the same name may
    /// still have pods going away).
    fn pods_of(&self, j: &Job) -> Result<Vec<Arc<Pod>>, BackendError> {
        let pods = self
            .kube
            .pods
            .objects()
            .ok_or_else(|| BackendError::transient("the watch of pods has not listed yet"))?;
        let uid = j.metadata.uid.as_deref().unwrap_or("-");
        Ok(pods
            .into_iter()
            .filter(|p| {
                p.metadata
                    .owner_references
                    .as_ref()
                    .is_some_and(|rs| rs.iter().any(|r| r.uid == uid))
            })
            .collect())
    }

    /// Makes sure the learners' Service exists and belongs to `owner` (a Service left by
    /// an earlier Job of the same name would be collected with it).
    fn ensure_service(&self, job: &JobRun, owner: &Job) -> Result<(), BackendError> {
        let api = self.kube.api::<Service>();
        let want = self.service_object(job, owner);
        match self.block_on(api.create(&PostParams::default(), &want))? {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(err("creating the learners' Service", e)),
        }
        let name = self.job_name(job);
        let have = match self.block_on(api.get_opt(&name))? {
            Ok(Some(h)) => h,
            Ok(None) => {
                return Err(BackendError::transient(
                    "the learners' Service went away while being made",
                ));
            }
            Err(e) => return Err(err("reading the learners' Service", e)),
        };
        if have.metadata.deletion_timestamp.is_some() {
            return Err(BackendError::waiting(
                "the previous attempt's Service is being deleted",
            ));
        }
        let owned = have.metadata.owner_references.as_ref().is_some_and(|rs| {
            rs.iter()
                .any(|r| Some(&r.uid) == owner.metadata.uid.as_ref())
        });
        if !owned {
            let patch = json!({"metadata": {"ownerReferences": want.metadata.owner_references}});
            self.block_on(api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)))?
                .map_err(|e| err("handing the learners' Service to the new Job", e))?;
        }
        Ok(())
    }

    /// Lets the suspended Job `j` go with `attempt` if the gang fits the nodes now (its
    /// Service first, in case making it failed before).
    fn admit(&self, job: &JobRun, j: &Job) -> Result<(), BackendError> {
        let name = j.metadata.name.as_deref().unwrap_or_default();
        if self.kube.config.check_nodes {
            let room = self.nodes_and_pods()?;
            let reserved = self.unplaced(name, &room.1)?;
            fit::gang_fits(
                &room.0,
                &room.1,
                &self.need(job),
                job.manifest.learners,
                &reserved,
            )
            .map_err(BackendError::waiting)?;
        }
        self.ensure_service(job, j)?;
        let patch = json!({
            "metadata": {"annotations": {ATTEMPT: job.attempt.to_string()}},
            "spec": {"suspend": false},
        });
        let api = self.kube.api::<Job>();
        self.block_on(api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)))?
            .map_err(|e| err("unsuspending the Job", e))?;
        // What was listed does not hold this gang's pods yet.
        *self.room.lock_or_recover() = None;
        let mut let_go = self.let_go.lock_or_recover();
        let_go.retain(|_, t| t.elapsed() < Duration::from_secs(10));
        let_go.insert(name.to_string(), std::time::Instant::now());
        Ok(())
    }

    /// The learners of this installation's other Jobs that were let go but whose pods
    /// are not on a node yet in `listed` (Kubernetes makes and binds them a moment
    /// later): their room is taken before a new gang's is looked for.
    fn unplaced(
        &self,
        except: &str,
        listed: &[Pod],
    ) -> Result<Vec<(fit::Need, u32)>, BackendError> {
        let jobs = self
            .kube
            .jobs
            .objects()
            .ok_or_else(|| BackendError::transient("the watch of Jobs has not listed yet"))?;
        let recent: Vec<String> = self
            .let_go
            .lock_or_recover()
            .iter()
            .filter(|(_, t)| t.elapsed() < Duration::from_secs(10))
            .map(|(n, _)| n.clone())
            .collect();
        let mut out = Vec::new();
        for j in jobs {
            let name = j.metadata.name.as_deref().unwrap_or("");
            if name == except
                || (suspended(&j) && !recent.iter().any(|r| r == name))
                || finished(&j).is_some()
                || j.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            let Some(spec) = j.spec.as_ref() else {
                continue;
            };
            // Learners that finished hold nothing.
            let done = j
                .status
                .as_ref()
                .and_then(|s| s.succeeded)
                .unwrap_or(0)
                .max(0) as u32;
            let learners = (spec.parallelism.unwrap_or(1).max(0) as u32).saturating_sub(done);
            // Counted in what was listed, so that a pod is either in the nodes' use or
            // here, never in both nor in neither.
            let uid = j.metadata.uid.as_deref().unwrap_or("-");
            let placed = listed
                .iter()
                .filter(|p| {
                    p.metadata
                        .owner_references
                        .as_ref()
                        .is_some_and(|rs| rs.iter().any(|r| r.uid == uid))
                        && p.spec.as_ref().is_some_and(|s| s.node_name.is_some())
                })
                .count() as u32;
            let template = spec.template.spec.as_ref();
            let Some(c) = template.and_then(|s| s.containers.first()) else {
                continue;
            };
            let res = c.resources.as_ref();
            let (req, lim) = (
                res.and_then(|r| r.requests.as_ref()),
                res.and_then(|r| r.limits.as_ref()),
            );
            let gpu = &self.kube.config.gpu_resource;
            let gpus = fit::amount(req, gpu).max(fit::amount(lim, gpu));
            let need = fit::Need {
                cpus: fit::amount(req, "cpu"),
                memory: fit::amount(req, "memory"),
                gpus: (gpus > 0.0).then(|| (gpu.clone(), gpus)),
                selector: template
                    .and_then(|s| s.node_selector.as_ref())
                    .and_then(|s| s.iter().next())
                    .map(|(k, v)| (k.clone(), v.clone())),
            };
            if learners > placed {
                out.push((need, learners - placed));
            }
        }
        Ok(out)
    }

    /// Copies the pod's log into the learner's log file (bytes that are not UTF-8
    /// become U+FFFD). Failing to copy never stops a job: the caller logs it.
    fn mirror_logs(&self, job: &JobRun, learner: u32, pod: &str) -> Result<(), BackendError> {
        use futures_util::AsyncReadExt;
        let api = self.kube.api::<Pod>();
        let read = self.block_on(async {
            let mut stream = api.log_stream(pod, &LogParams::default()).await?;
            let mut bytes = Vec::new();
            stream
                .read_to_end(&mut bytes)
                .await
                .map_err(kube::Error::ReadEvents)?;
            Ok::<_, kube::Error>(bytes)
        })?;
        let logs = match read {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            // Not started yet, or gone: nothing to copy.
            Err(kube::Error::Api(s)) if s.code == 400 || s.code == 404 => return Ok(()),
            Err(e) => return Err(err("reading a learner's log", e)),
        };
        pharos_engine::job_files::store_log_copy(job, learner, logs.as_bytes())
    }

    /// Copies every learner's log it can; what fails is logged, not returned.
    fn mirror_all(&self, job: &JobRun, pods: &BTreeMap<u32, Arc<Pod>>) {
        for (learner, p) in pods {
            let pod = p.metadata.name.as_deref().unwrap_or("");
            if let Err(e) = self.mirror_logs(job, *learner, pod) {
                tracing::warn!(job = job.id, learner, "copying the log of pod {pod}: {e}");
            }
        }
    }

    /// Each learner's newest pod of the Job `j`.
    fn learner_pods(&self, j: &Job) -> Result<BTreeMap<u32, Arc<Pod>>, BackendError> {
        let mut out: BTreeMap<u32, Arc<Pod>> = BTreeMap::new();
        for p in self.pods_of(j)? {
            // A pod that ended while being deleted (by a suspension, most likely) is
            // a remnant, not a learner: its index has a new pod or none.
            if terminating(&p) && pod_status(&p).ended() {
                continue;
            }
            // A label since Kubernetes 1.28, an annotation before.
            let index = label(&p.metadata.labels, INDEX_LABEL)
                .or_else(|| label(&p.metadata.annotations, INDEX_LABEL));
            let Some(i) = index.and_then(|i| i.parse::<u32>().ok()) else {
                continue;
            };
            let newer = out.get(&(i + 1)).is_none_or(|q| {
                p.metadata.creation_timestamp.as_ref().map(|t| t.0)
                    >= q.metadata.creation_timestamp.as_ref().map(|t| t.0)
            });
            if newer {
                out.insert(i + 1, p);
            }
        }
        Ok(out)
    }
}

fn label<'a>(labels: &'a Option<BTreeMap<String, String>>, key: &str) -> Option<&'a str> {
    labels.as_ref().and_then(|l| l.get(key)).map(String::as_str)
}

fn memory_bytes(job: &JobRun) -> u64 {
    job.manifest
        .memory
        .as_deref()
        .and_then(|m| pharos_core::parse_memory(m).ok())
        .filter(|b| *b > 0)
        .unwrap_or(1 << 30)
}

fn attempt_of(j: &Job) -> Option<u32> {
    j.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ATTEMPT))
        .and_then(|a| a.parse().ok())
}

fn suspended(j: &Job) -> bool {
    j.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false)
}

/// The Job ended, or is ending: `Complete` (or `SuccessCriteriaMet`), `Failed` (or
/// `FailureTarget`, set first since Kubernetes 1.31 while the other pods go).
fn finished(j: &Job) -> Option<&'static str> {
    let conds = j.status.as_ref().and_then(|s| s.conditions.as_ref())?;
    conds
        .iter()
        .find_map(|c| match (c.type_.as_str(), c.status.as_str()) {
            ("Complete" | "SuccessCriteriaMet", "True") => Some("Complete"),
            ("Failed" | "FailureTarget", "True") => Some("Failed"),
            _ => None,
        })
}

/// Container states that never get better by waiting (the learner cannot start).
const CANNOT_START: [&str; 6] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// A learner's status from its pod.
pub fn pod_status(p: &Pod) -> LearnerStatus {
    let status = p.status.as_ref();
    let containers = status.and_then(|s| s.container_statuses.as_ref());
    match status.and_then(|s| s.phase.as_deref()) {
        Some("Succeeded") => LearnerStatus::Exited {
            code: Some(0),
            signal: None,
        },
        Some("Failed") => {
            let code = containers
                .and_then(|cs| cs.first())
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code);
            LearnerStatus::Exited {
                // Evicted or never ran: no exit code, a failure all the same.
                code: Some(code.unwrap_or(1)),
                signal: None,
            }
        }
        _ => {
            let stuck = containers.is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.state
                        .as_ref()
                        .and_then(|s| s.waiting.as_ref())
                        .and_then(|w| w.reason.as_deref())
                        .is_some_and(|r| CANNOT_START.contains(&r))
                })
            });
            if stuck {
                LearnerStatus::Exited {
                    code: None,
                    signal: None,
                }
            } else {
                LearnerStatus::Running
            }
        }
    }
}

fn terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

/// Some completion index of the Job succeeded.
fn any_succeeded(j: &Job) -> bool {
    j.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0
}

impl Backend for KubeBackend {
    fn name(&self) -> &str {
        "kubernetes"
    }

    /// Learner pods mount only the data directory's claim: learners read their data
    /// themselves.
    fn supports_store(&self, _kind: &str) -> bool {
        false
    }

    fn prepare(&self, job: &JobRun) -> Result<(), BackendError> {
        pharos_engine::job_files::make_job_dirs(job)?;
        pharos_engine::job_files::unpack_model(job)
    }

    fn start(&self, job: &JobRun) -> Result<(), BackendError> {
        let name = self.job_name(job);
        let api = self.kube.api::<Job>();
        match self.cached_job(job)? {
            Some(j) if j.metadata.deletion_timestamp.is_some() => Err(BackendError::waiting(
                "the previous attempt's Job is being deleted",
            )),
            Some(j)
                if attempt_of(&j) == Some(job.attempt)
                    || (suspended(&j) && finished(&j).is_none() && !any_succeeded(&j)) =>
            {
                // This attempt's Job, or a halted one to resume: let it go when it fits.
                if suspended(&j) {
                    self.admit(job, &j)?;
                }
                self.mark_submitted(job, &name)
            }
            Some(_) => {
                // An earlier attempt's Job that ran to its end, or a halted one in which
                // some learners had finished (an indexed Job does not run a completed
                // index again): delete it, its pods first (foreground), and make the new
                // one once it is gone.
                match self.block_on(api.delete(&name, &DeleteParams::foreground()))? {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(err("deleting the previous attempt's Job", e)),
                }
                Err(BackendError::waiting(
                    "the previous attempt's Job is being deleted",
                ))
            }
            None => {
                let created = self
                    .block_on(api.create(&PostParams::default(), &self.job_object(job)))?
                    // Made meanwhile, or still being deleted: the watch will tell.
                    .map_err(|e| err("creating the Job", e))?;
                self.mark_submitted(job, &name)?;
                self.admit(job, &created)
            }
        }
    }

    fn poll(&self, job: &JobRun) -> Result<Vec<LearnerStatus>, BackendError> {
        let n = job.manifest.learners;
        let j = match self.cached_job(job)? {
            Some(j) => j,
            None if Self::submitted_marker(job).exists() => {
                // The watch may not show a Job made a moment ago: ask before calling
                // the learners lost.
                let api = self.kube.api::<Job>();
                match self.block_on(api.get_opt(&self.job_name(job)))? {
                    Ok(Some(j)) => Arc::new(j),
                    Ok(None) => return Ok(vec![LearnerStatus::Lost; n as usize]),
                    Err(e) => return Err(err("reading the Job", e)),
                }
            }
            None => return Ok(vec![LearnerStatus::NotStarted; n as usize]),
        };
        let pods = self.learner_pods(&j)?;
        let current = attempt_of(&j) == Some(job.attempt);
        if !current || suspended(&j) || j.metadata.deletion_timestamp.is_some() {
            // Not let go (yet, or again). Pods still going away count as running, so
            // that nothing starts next to them; a pod of this attempt that failed by
            // itself (not deleted by the suspension) is the learner's failure.
            return Ok((1..=n)
                .map(|l| match pods.get(&l) {
                    Some(p) if !pod_status(p).ended() => LearnerStatus::Running,
                    Some(p) if current && !pod_status(p).succeeded() => pod_status(p),
                    _ => LearnerStatus::NotStarted,
                })
                .collect());
        }
        let ended = finished(&j);
        let mut out = Vec::with_capacity(n as usize);
        for learner in 1..=n {
            let status = match pods.get(&learner) {
                Some(p) => pod_status(p),
                // The Job ended before this learner's pod existed, or after it went.
                None if ended == Some("Failed") => LearnerStatus::Exited {
                    code: None,
                    signal: None,
                },
                None if ended == Some("Complete") => LearnerStatus::Exited {
                    code: Some(0),
                    signal: None,
                },
                None => LearnerStatus::Running,
            };
            if let Some(p) = pods.get(&learner) {
                let pod = p.metadata.name.clone().unwrap_or_default();
                let done = Self::learner_dir(job, learner).join("logs-copied");
                let copy = if status.ended() {
                    !done.exists()
                } else {
                    pharos_engine::job_files::log_copy_due(job, learner)
                };
                if copy {
                    match self.mirror_logs(job, learner, &pod) {
                        Ok(()) if status.ended() => {
                            let _ = fs::create_dir_all(done.parent().expect("a parent"));
                            let _ = fs::write(&done, b"");
                        }
                        Ok(()) => {}
                        Err(e) => {
                            tracing::warn!(
                                job = job.id,
                                learner,
                                "copying the log of pod {pod}: {e}"
                            )
                        }
                    }
                }
            }
            out.push(status);
        }
        Ok(out)
    }

    fn signal(&self, job: &JobRun, kill: bool) -> Result<(), BackendError> {
        let Some(j) = self.cached_job(job)? else {
            return Ok(());
        };
        let name = self.job_name(job);
        // Copy what the learners wrote before their pods go (only this attempt's: an
        // earlier attempt's pods would be taken for this one's log).
        if attempt_of(&j) == Some(job.attempt)
            && let Ok(pods) = self.learner_pods(&j)
        {
            self.mirror_all(job, &pods);
        }
        if !suspended(&j) && finished(&j).is_none() {
            let api = self.kube.api::<Job>();
            let patch = json!({"spec": {"suspend": true}});
            self.block_on(api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)))?
                .map_err(|e| err("suspending the Job", e))?;
        }
        if kill {
            // A second of grace: a pod deleted at once may still run on its node when
            // the next attempt's starts.
            let api = self.kube.api::<Pod>();
            let lp = ListParams::default().labels(&format!(
                "{JOB_LABEL}={},{}={}",
                job.id,
                crate::INSTALLATION,
                self.kube.installation
            ));
            self.block_on(api.delete_collection(&DeleteParams::default().grace_period(1), &lp))?
                .map_err(|e| err("deleting the learners' pods", e))?;
        }
        Ok(())
    }

    fn store_results(&self, job: &JobRun, outcome: &str) -> Result<(), BackendError> {
        if let Ok(Some(j)) = self.cached_job(job)
            && attempt_of(&j) == Some(job.attempt)
            && let Ok(pods) = self.learner_pods(&j)
        {
            self.mirror_all(job, &pods);
        }
        pharos_engine::job_files::write_results(job, outcome)
    }

    fn remove(&self, job: &JobRun) -> Result<(), BackendError> {
        // The Job first (its pods and the Service it owns go with it), so that a job
        // is never marked deleted with its Job left running.
        let api = self.kube.api::<Job>();
        match self.block_on(api.delete(&self.job_name(job), &DeleteParams::background()))? {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(err("deleting the Job", e)),
        }
        match fs::remove_dir_all(&job.paths.root) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BackendError::io(job.paths.root.display(), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    #[test]
    fn learner_statuses_from_pods() {
        assert_eq!(
            pod_status(&pod(json!({"phase": "Pending"}))),
            LearnerStatus::Running
        );
        assert_eq!(
            pod_status(&pod(json!({"phase": "Running"}))),
            LearnerStatus::Running
        );
        assert!(pod_status(&pod(json!({"phase": "Succeeded"}))).succeeded());
        let failed = pod(
            json!({"phase": "Failed", "containerStatuses": [{"name": "learner",
            "ready": false, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"terminated": {"exitCode": 3}}}]}),
        );
        assert_eq!(
            pod_status(&failed),
            LearnerStatus::Exited {
                code: Some(3),
                signal: None
            }
        );
        // Evicted: no container status, a failure all the same.
        assert!(!pod_status(&pod(json!({"phase": "Failed", "reason": "Evicted"}))).succeeded());
        // An image that cannot be pulled never starts: ended, not running forever.
        let stuck = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "learner",
            "ready": false, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}),
        );
        assert!(pod_status(&stuck).ended() && !pod_status(&stuck).succeeded());
        let creating = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "learner",
            "ready": false, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        assert_eq!(pod_status(&creating), LearnerStatus::Running);
    }

    #[test]
    fn a_job_ends_with_its_terminal_conditions_and_their_forerunners() {
        let job = |conds: Value| -> Job {
            serde_json::from_value(
                json!({"metadata": {"name": "j"}, "status": {"conditions": conds}}),
            )
            .unwrap()
        };
        assert_eq!(finished(&job(json!([]))), None);
        assert_eq!(
            finished(&job(json!([{"type": "FailureTarget", "status": "True"}]))),
            Some("Failed")
        );
        assert_eq!(
            finished(&job(json!([{"type": "Complete", "status": "True"}]))),
            Some("Complete")
        );
        assert_eq!(
            finished(&job(json!([{"type": "Failed", "status": "False"}]))),
            None
        );
        assert!(suspended(
            &serde_json::from_value(json!({"metadata": {}, "spec": {"suspend": true,
                "template": {"spec": {"containers": []}}}}))
            .unwrap()
        ));
    }
}
