//! Training jobs on a Ray cluster through the Ray Jobs REST API.
//!
//! Each learner of an attempt is one Ray job, its submission id
//! `pharos-<installation>-<job>-a<attempt>-l<learner>` (so submitting again is
//! harmless), its entrypoint the manifest's command, its working directory the job's
//! model directory uploaded as a Ray package, and its environment FfDL's variables and
//! the rendezvous variables.
//!
//! **Placement.** Ray's placement groups are not reachable through its REST API, so
//! pharos lays the gang over the cluster's alive nodes itself (Ray's state API) and pins
//! each learner to its node with Ray's `node:<ip>` resource: `pack` fills as few nodes
//! as hold the learners (by their total CPUs, GPUs, memory and GPU model,
//! `accelerator_type:<model>`), `spread` gives each learner a node of its own; a gang
//! the nodes cannot hold waits (no learner is submitted). The nodes chosen for an
//! attempt are kept in its state directory, so a start asked again submits the rest to
//! the same nodes; MASTER_ADDR is learner 1's node.
//!
//! **Lost nodes.** A learner whose node Ray reports dead (or no longer lists) is lost
//! at once, even while Ray still calls it running or pending (its driver is stopped),
//! and the job's events name the node.
//!
//! **Storage.** With `ray.storage` a directory every node mounts, learners get
//! CHECKPOINT_DIR, RESULT_DIR and DATA_DIR under it; with an object-storage URL, the
//! URIs under it; without it, the server's own directories (reachable only by a
//! cluster on the server's machine). The server's log and state directories are never
//! given to learners.
//!
//! A learner's directory under JOB_STATE_DIR holds `submitted` once Ray accepted it: a
//! submitted learner Ray no longer knows is [`LearnerStatus::Lost`] (a restarted head
//! forgets its jobs), one never submitted is not started. Ray's logs are copied into the
//! job's log files as it runs (at most once a second per learner, and once more when it
//! ends), so `pharos train logs` and the evaluation metrics read them as on the local
//! backend.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pharos_core::{LearnerPlacement, Manifest};
use pharos_engine::config::RayStorage;
use pharos_engine::host::LockExt;
use pharos_engine::job_files;

use crate::client::{RayClient, RayError, RayNode};
use pharos_engine::training::{Backend, BackendError, JobRun, LearnerStatus};
use serde_json::{Value, json};

/// How long a read of the cluster's nodes serves the liveness checks of polls.
const NODES_TTL: Duration = Duration::from_secs(2);
/// The share of a node's `node:<ip>` resource each pinned learner takes (Ray gives
/// every node 1.0 of it).
const PIN: f64 = 0.001;

pub struct RayBackend {
    client: RayClient,
    /// This installation's id (see [`pharos_engine::host::installation_id`]): submission ids are
    /// `pharos-<installation>-<job>-a<attempt>-l<learner>`, so two pharos servers (or a
    /// fresh store) on one Ray cluster never take each other's jobs for their own.
    installation: String,
    /// Where learners reach learner 1 when its node is not known: the Ray head's
    /// host.
    master_addr: String,
    storage: Option<RayStorage>,
    /// The cluster's nodes as last read, and when.
    nodes: Mutex<Option<(Instant, Vec<RayNode>)>>,
}

impl RayBackend {
    pub fn new(
        client: RayClient,
        installation: String,
        storage: Option<RayStorage>,
    ) -> anyhow::Result<Self> {
        let master_addr = client
            .address()
            .trim_start_matches("http://")
            .split([':', '/'])
            .next()
            .unwrap_or("127.0.0.1")
            .to_string();
        Ok(Self {
            client,
            installation,
            master_addr,
            storage,
            nodes: Mutex::new(None),
        })
    }

    /// The cluster's nodes, read again when the last read is older than `max_age`.
    fn nodes(&self, max_age: Duration) -> Result<Vec<RayNode>, RayError> {
        if let Some((at, nodes)) = self.nodes.lock_or_recover().as_ref()
            && at.elapsed() <= max_age
        {
            return Ok(nodes.clone());
        }
        let nodes = self.block_on(self.client.nodes())?;
        *self.nodes.lock_or_recover() = Some((Instant::now(), nodes.clone()));
        Ok(nodes)
    }

    /// The job's directory in `ray.storage` when that is a mounted path.
    fn storage_dir(&self, job: &JobRun) -> Option<PathBuf> {
        match &self.storage {
            Some(RayStorage::Path(root)) => Some(
                root.join(format!("pharos-{}", self.installation))
                    .join("jobs")
                    .join(job.id.to_string()),
            ),
            _ => None,
        }
    }

    /// Backend calls run on the server runtime's blocking threads (`spawn_blocking`);
    /// the client's connections live on that runtime.
    fn block_on<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, RayError>>,
    ) -> Result<T, RayError> {
        match tokio::runtime::Handle::try_current() {
            Ok(h) => h.block_on(f),
            Err(_) => Err(RayError::Unreachable(
                self.client.address().to_string(),
                "called outside the server's runtime".into(),
            )),
        }
    }

    pub fn submission_id(&self, job: &JobRun, learner: u32) -> String {
        self.attempt_id(job, job.attempt, learner)
    }

    fn attempt_id(&self, job: &JobRun, attempt: u32, learner: u32) -> String {
        format!(
            "pharos-{}-{}-a{attempt}-l{learner}",
            self.installation, job.id
        )
    }

    fn learner_dir(job: &JobRun, learner: u32) -> PathBuf {
        job.paths
            .state
            .join(format!("attempt-{}", job.attempt))
            .join(format!("learner-{learner}"))
    }

    fn submitted(job: &JobRun, learner: u32) -> bool {
        Self::learner_dir(job, learner).join("submitted").exists()
    }

    /// Copies Ray's log of the learner into its log file, if it grew.
    fn mirror_logs(&self, job: &JobRun, learner: u32, id: &str) -> Result<(), BackendError> {
        let logs = self.block_on(self.client.job_logs(id)).map_err(err)?;
        job_files::store_log_copy(job, learner, logs.as_bytes())
    }

    /// What the learner's driver is given: FfDL's variables and the rendezvous ones
    /// (learner 1 on `master_addr`), the storage's places instead of the server's.
    fn env(&self, job: &JobRun, learner: u32, master_addr: &str) -> serde_json::Map<String, Value> {
        let mut env = pharos_engine::job_files::learner_env(job, learner, None);
        // Ray gives each driver its own PATH, home and GPUs.
        for k in job_files::HOST_VARIABLES {
            if !job.env.contains_key(k) {
                env.remove(k);
            }
        }
        // The server's own files: logs come back through Ray.
        for k in ["LOG_DIR", "JOB_STATE_DIR"] {
            env.remove(k);
        }
        env.insert("MODEL_DIR".into(), ".".into());
        env.insert("MASTER_ADDR".into(), master_addr.to_string());
        if let Some(base) = self.storage_dir(job) {
            for (k, sub) in [
                ("CHECKPOINT_DIR", "checkpoints"),
                ("RESULT_DIR", "results"),
                ("DATA_DIR", "data"),
            ] {
                env.insert(k.into(), base.join(sub).display().to_string());
            }
        } else if let Some(RayStorage::Url(url)) = &self.storage {
            for k in ["CHECKPOINT_DIR", "RESULT_DIR", "DATA_DIR"] {
                env.remove(k);
            }
            let base = format!("{url}/pharos-{}/jobs/{}", self.installation, job.id);
            env.insert("CHECKPOINT_URI".into(), format!("{base}/checkpoints"));
            env.insert("RESULT_URI".into(), format!("{base}/results"));
        }
        env.into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect()
    }

    /// The nodes of this attempt's learners (id and address, learner 1 first): as
    /// chosen before, else laid over the alive nodes now and kept.
    fn attempt_nodes(&self, job: &JobRun) -> Result<Vec<(String, String)>, BackendError> {
        let file = job
            .paths
            .state
            .join(format!("attempt-{}", job.attempt))
            .join("nodes.json");
        // A read of the nodes that fails is retried later, whatever Ray said.
        let nodes = self
            .nodes(Duration::ZERO)
            .map_err(|e| BackendError::transient(format!("reading the cluster's nodes: {e}")))?;
        if let Ok(text) = fs::read_to_string(&file)
            && let Ok(kept) = serde_json::from_str::<Vec<(String, String)>>(&text)
            && kept.len() == job.manifest.learners as usize
        {
            // Kept once a learner went to them; before that, laid again if one of
            // them died meanwhile.
            let any_submitted = (1..=job.manifest.learners).any(|l| Self::submitted(job, l));
            let all_alive = kept
                .iter()
                .all(|(id, _)| nodes.iter().any(|n| &n.id == id && n.alive));
            if any_submitted || all_alive {
                return Ok(kept);
            }
        }
        let chosen = place_gang(&nodes, &job.manifest, job.id).map_err(BackendError::waiting)?;
        let dir = file.parent().expect("an attempt directory");
        fs::create_dir_all(dir).map_err(|e| BackendError::io(dir.display(), e))?;
        let text = serde_json::to_string(&chosen).unwrap_or_default();
        pharos_engine::host::write_atomic(&file, text.as_bytes())
            .map_err(|e| BackendError::io(file.display(), e))?;
        Ok(chosen)
    }

    /// The node `learner` was pinned to (its id and address), if it was.
    fn pinned(job: &JobRun, learner: u32) -> Option<(String, String)> {
        let text = fs::read_to_string(Self::learner_dir(job, learner).join("node")).ok()?;
        let (id, ip) = text.trim().split_once(' ')?;
        Some((id.to_string(), ip.to_string()))
    }
}

/// The file in a learner's directory that names the node it lost.
const LOST_NODE: &str = "lost-node";

impl RayBackend {
    /// "node <ip> (<id>) was lost" when `learner`'s pinned node is dead or no longer
    /// listed by Ray.
    /// A failed read of the nodes skips the check (the statuses still come back; Ray
    /// itself fails a learner whose node died, later).
    fn lost_node(&self, job: &JobRun, learner: u32) -> Option<String> {
        let (id, ip) = Self::pinned(job, learner)?;
        let nodes = match self.nodes(NODES_TTL) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(job = job.id, "reading the cluster's nodes: {e}");
                return None;
            }
        };
        let alive = nodes.iter().any(|n| n.id == id && n.alive);
        (!alive).then(|| {
            let short: String = id.chars().take(12).collect();
            format!("its node {ip} ({short}) was lost")
        })
    }
}

/// Each learner's node (id, address) for `m`'s gang over the alive `nodes`, learner 1
/// first, or why the gang does not fit them. Nodes are taken in a fixed order (most
/// learners they hold, then address), so the same cluster gives the same answer.
pub fn place_gang(
    nodes: &[RayNode],
    m: &Manifest,
    job: i64,
) -> Result<Vec<(String, String)>, String> {
    let mut need: BTreeMap<String, f64> = BTreeMap::new();
    need.insert("CPU".into(), m.cpus);
    if m.gpus > 0 {
        need.insert("GPU".into(), m.gpus as f64);
    }
    if let Some(bytes) = m
        .memory
        .as_deref()
        .and_then(|x| pharos_core::parse_memory(x).ok())
        .filter(|b| *b > 0)
    {
        need.insert("memory".into(), bytes as f64);
    }
    if let Some(model) = &m.gpu_type {
        need.insert(format!("accelerator_type:{model}"), PIN);
    }
    // How many learners a node holds by its total resources (Ray queues a learner
    // until the room is free).
    let holds = |n: &RayNode| -> u32 {
        let mut k = u32::MAX;
        for (r, x) in &need {
            if *x > 0.0 {
                let fit = (n.resource(r) / x + 1e-9).floor();
                k = k.min(fit.clamp(0.0, u32::MAX as f64) as u32);
            }
        }
        k.min((1.0 / PIN) as u32)
    };
    let mut fit: Vec<(&RayNode, u32)> = nodes
        .iter()
        .filter(|n| n.alive)
        .map(|n| (n, holds(n)))
        .filter(|(_, k)| *k > 0)
        .collect();
    fit.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then_with(|| a.0.ip.cmp(&b.0.ip))
            .then_with(|| a.0.id.cmp(&b.0.id))
    });
    // Nodes that hold as many learners take turns by job (the totals say nothing of
    // what runs on them now): gangs of the same size start on different nodes.
    let ties = fit.iter().take_while(|x| x.1 == fit[0].1).count();
    if ties > 1 {
        fit[..ties].rotate_left(job.rem_euclid(ties as i64) as usize);
    }
    let wanted = m.learners as usize;
    let what = need
        .iter()
        .map(|(r, x)| format!("{r} {x}"))
        .collect::<Vec<_>>()
        .join(", ");
    let alive = nodes.iter().filter(|n| n.alive).count();
    let mut out = Vec::with_capacity(wanted);
    match m.placement.unwrap_or(LearnerPlacement::Pack) {
        LearnerPlacement::Spread => {
            if fit.len() < wanted {
                return Err(format!(
                    "spread: {wanted} learners need {wanted} nodes with {what} each; {} of the {alive} alive node(s) have it",
                    fit.len()
                ));
            }
            out.extend(
                fit.iter()
                    .take(wanted)
                    .map(|(n, _)| (n.id.clone(), n.ip.clone())),
            );
        }
        LearnerPlacement::Pack => {
            for (n, k) in &fit {
                for _ in 0..*k {
                    if out.len() == wanted {
                        break;
                    }
                    out.push((n.id.clone(), n.ip.clone()));
                }
            }
            if out.len() < wanted {
                return Err(format!(
                    "{wanted} learners with {what} each do not fit the {alive} alive node(s) (they hold {})",
                    out.len()
                ));
            }
        }
    }
    Ok(out)
}

/// Ray unreachable or failing on its side (5xx) is worth retrying; a refusal (4xx) is
/// not.
fn err(e: RayError) -> BackendError {
    match &e {
        RayError::Unreachable(..) => BackendError::transient(e.to_string()),
        RayError::Status(s, _) if *s >= 500 => BackendError::transient(e.to_string()),
        _ => BackendError::new(e.to_string()),
    }
}

impl Backend for RayBackend {
    fn name(&self) -> &str {
        "ray"
    }

    /// Ray's nodes mount nothing pharos names: learners read their data themselves.
    fn supports_store(&self, _kind: &str) -> bool {
        false
    }

    fn prepare(&self, job: &JobRun) -> Result<(), BackendError> {
        let p = &job.paths;
        job_files::make_job_dirs(job)?;
        job_files::unpack_model(job)?;
        if let Some(base) = self.storage_dir(job) {
            for sub in ["checkpoints", "results", "data"] {
                let d = base.join(sub);
                fs::create_dir_all(&d).map_err(|e| BackendError::io(d.display(), e))?;
            }
        }
        // Ray takes the model as a package: upload it now (content-addressed, so again
        // after a crash is the same package).
        self.block_on(self.client.upload_dir(&p.model))
            .map(|_| ())
            .map_err(err)
    }

    fn start(&self, job: &JobRun) -> Result<(), BackendError> {
        let m = &job.manifest;
        if (1..=m.learners).all(|l| Self::submitted(job, l)) {
            return Ok(());
        }
        let nodes = self.attempt_nodes(job)?;
        let master = nodes
            .first()
            .map(|n| n.1.clone())
            .unwrap_or_else(|| self.master_addr.clone());
        let working_dir = self
            .block_on(self.client.upload_dir(&job.paths.model))
            .map_err(err)?;
        for learner in 1..=m.learners {
            if Self::submitted(job, learner) {
                continue;
            }
            let dir = Self::learner_dir(job, learner);
            fs::create_dir_all(&dir).map_err(|e| BackendError::io(dir.display(), e))?;
            let (node_id, node_ip) = &nodes[learner as usize - 1];
            fs::write(dir.join("node"), format!("{node_id} {node_ip}"))
                .map_err(|e| BackendError::io(dir.display(), e))?;
            let id = self.submission_id(job, learner);
            let mut request = json!({
                "entrypoint": m.framework.command,
                "submission_id": id,
                "runtime_env": {
                    "working_dir": working_dir,
                    "env_vars": self.env(job, learner, &master),
                },
                "entrypoint_resources": {format!("node:{node_ip}"): PIN},
                "metadata": {
                    "pharos_job": job.id.to_string(),
                    "attempt": job.attempt.to_string(),
                    "learner": learner.to_string(),
                },
                "entrypoint_num_cpus": m.cpus,
                "entrypoint_num_gpus": m.gpus,
            });
            if let Some(bytes) = m
                .memory
                .as_deref()
                .and_then(|x| pharos_core::parse_memory(x).ok())
                .filter(|b| *b > 0)
            {
                request["entrypoint_memory"] = json!(bytes);
            }
            self.block_on(self.client.submit_job(&request))
                .map_err(err)?;
            fs::write(dir.join("submitted"), &id)
                .map_err(|e| BackendError::io(dir.display(), e))?;
        }
        Ok(())
    }

    fn poll(&self, job: &JobRun) -> Result<Vec<LearnerStatus>, BackendError> {
        let mut out = Vec::new();
        for learner in 1..=job.manifest.learners {
            if !Self::submitted(job, learner) {
                out.push(LearnerStatus::NotStarted);
                continue;
            }
            let id = self.submission_id(job, learner);
            let mut status = match self.block_on(self.client.job(&id)).map_err(err)? {
                None => LearnerStatus::Lost,
                Some(v) => crate::client::learner_status(&v),
            };
            // A learner that ended by itself (or was stopped) did not end with its
            // node, whatever became of the node later.
            if (status == LearnerStatus::Running || status == LearnerStatus::Lost)
                && let Some(lost) = self.lost_node(job, learner)
            {
                let dir = Self::learner_dir(job, learner);
                if !dir.join(LOST_NODE).exists() {
                    fs::write(dir.join(LOST_NODE), &lost)
                        .map_err(|e| BackendError::io(dir.display(), e))?;
                }
                if status == LearnerStatus::Running {
                    // Pending on (or still reported running from) a node that is gone:
                    // lost now rather than when Ray gives up on it.
                    self.block_on(self.client.stop_job(&id)).map_err(err)?;
                    status = LearnerStatus::Lost;
                }
            }
            // The logs are a copy: failing to read them never hides a learner's status
            // (Ray cannot serve the logs of a learner whose node is gone: what was
            // copied stays).
            let dir = Self::learner_dir(job, learner);
            let final_copy = dir.join("logs-copied");
            let node_lost = dir.join(LOST_NODE).exists();
            if status.ended() && status != LearnerStatus::Lost {
                if !final_copy.exists() {
                    // The last lines (a traceback) are wanted before the attempt is left:
                    // Ray failing to serve them now is asked again (the poll is retried).
                    match node_lost {
                        true => Ok(()),
                        false => self.mirror_logs(job, learner, &id),
                    }?;
                    let _ = fs::write(&final_copy, b"");
                }
            } else if status == LearnerStatus::Running
                && !node_lost
                && job_files::log_copy_due(job, learner)
                && let Err(e) = self.mirror_logs(job, learner, &id)
            {
                tracing::warn!(job = job.id, learner, "copying Ray's log: {e}");
            }
            out.push(status);
        }
        Ok(out)
    }

    fn signal(&self, job: &JobRun, _kill: bool) -> Result<(), BackendError> {
        // Ray's stop sends SIGTERM and kills the driver after its own grace period.
        for learner in 1..=job.manifest.learners {
            if Self::submitted(job, learner) {
                let id = self.submission_id(job, learner);
                self.block_on(self.client.stop_job(&id)).map_err(err)?;
            }
        }
        Ok(())
    }

    fn store_results(&self, job: &JobRun, outcome: &str) -> Result<(), BackendError> {
        for learner in 1..=job.manifest.learners {
            let node_lost = Self::learner_dir(job, learner).join(LOST_NODE).exists();
            if Self::submitted(job, learner) && !node_lost {
                let id = self.submission_id(job, learner);
                // A lost job has no logs left; what was copied stays.
                match self.mirror_logs(job, learner, &id) {
                    Err(e) if e.transient => return Err(e),
                    _ => {}
                }
            }
        }
        job_files::write_results(job, outcome)
    }

    fn remove(&self, job: &JobRun) -> Result<(), BackendError> {
        // The job's files first: they go whatever Ray says; each removal is tried (the
        // storage's files are the learners', which may refuse), the first error said
        // at the end.
        let mut first_error = None;
        for dir in std::iter::once(job.paths.root.clone()).chain(self.storage_dir(job)) {
            match fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    first_error.get_or_insert(BackendError::io(dir.display(), e));
                }
            }
        }
        // Then Ray's record of every attempt's drivers (they have ended: a job is
        // removed only once its learners stopped).
        for attempt in 1..=job.attempt {
            for learner in 1..=job.manifest.learners {
                let id = self.attempt_id(job, attempt, learner);
                match self.block_on(self.client.delete_job(&id)) {
                    Ok(()) => {}
                    Err(e @ RayError::Status(400, _)) => {
                        tracing::warn!(job = job.id, "keeping Ray's record of {id}: {e}")
                    }
                    Err(e) => return Err(err(e)),
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn failure_detail(&self, job: &JobRun, learner: u32) -> Option<String> {
        let bytes = pharos_engine::host::read_own_file(
            &Self::learner_dir(job, learner).join(LOST_NODE),
            512,
        )?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, ip: &str, alive: bool, cpus: f64, extra: &[(&str, f64)]) -> RayNode {
        let mut resources: BTreeMap<String, f64> =
            [("CPU".to_string(), cpus), (format!("node:{ip}"), 1.0)].into();
        for (k, v) in extra {
            resources.insert(k.to_string(), *v);
        }
        RayNode {
            id: id.into(),
            ip: ip.into(),
            alive,
            head: false,
            resources,
        }
    }

    fn manifest(learners: u32, cpus: f64, placement: Option<LearnerPlacement>) -> Manifest {
        let mut m: Manifest = serde_json::from_value(json!({
            "name": "g",
            "framework": {"name": "custom", "version": "1", "command": "python train.py"},
        }))
        .unwrap();
        m.learners = learners;
        m.cpus = cpus;
        m.placement = placement;
        m
    }

    #[test]
    fn spread_puts_each_learner_on_a_node_of_its_own_or_waits() {
        let nodes = [
            node("a", "10.0.0.2", true, 2.0, &[]),
            node("b", "10.0.0.3", true, 4.0, &[]),
            node("c", "10.0.0.4", false, 8.0, &[]),
        ];
        let m = manifest(2, 1.0, Some(LearnerPlacement::Spread));
        let p = place_gang(&nodes, &m, 0).unwrap();
        // The node holding most learners first; never the dead one.
        assert_eq!(
            p,
            vec![
                ("b".to_string(), "10.0.0.3".to_string()),
                ("a".to_string(), "10.0.0.2".to_string())
            ]
        );
        let e =
            place_gang(&nodes, &manifest(3, 1.0, Some(LearnerPlacement::Spread)), 0).unwrap_err();
        assert!(
            e.contains("3 nodes") && e.contains("2 of the 2 alive"),
            "{e}"
        );
        // A node too small for one learner does not count.
        let e =
            place_gang(&nodes, &manifest(2, 3.0, Some(LearnerPlacement::Spread)), 0).unwrap_err();
        assert!(e.contains("1 of the 2 alive"), "{e}");
    }

    #[test]
    fn pack_fills_the_roomiest_node_first_and_overflows_in_order() {
        let nodes = [
            node("a", "10.0.0.2", true, 2.0, &[]),
            node("b", "10.0.0.3", true, 3.0, &[]),
        ];
        let ips = |p: Vec<(String, String)>| p.into_iter().map(|x| x.1).collect::<Vec<_>>();
        assert_eq!(
            ips(place_gang(&nodes, &manifest(2, 1.0, None), 0).unwrap()),
            ["10.0.0.3", "10.0.0.3"]
        );
        assert_eq!(
            ips(place_gang(&nodes, &manifest(4, 1.0, None), 0).unwrap()),
            ["10.0.0.3", "10.0.0.3", "10.0.0.3", "10.0.0.2"]
        );
        let e = place_gang(&nodes, &manifest(6, 1.0, None), 0).unwrap_err();
        assert!(e.contains("hold 5"), "{e}");
    }

    #[test]
    fn gangs_take_turns_over_nodes_of_the_same_size() {
        let nodes = [
            node("a", "10.0.0.2", true, 4.0, &[]),
            node("b", "10.0.0.3", true, 4.0, &[]),
            node("c", "10.0.0.4", true, 2.0, &[]),
        ];
        let first = |job| {
            place_gang(&nodes, &manifest(2, 2.0, None), job).unwrap()[0]
                .0
                .clone()
        };
        assert_eq!(
            (first(0), first(1), first(2)),
            ("a".into(), "b".into(), "a".into())
        );
        // The smaller node comes after both, whoever's turn it is.
        let p = place_gang(&nodes, &manifest(3, 2.0, Some(LearnerPlacement::Spread)), 1).unwrap();
        let ids: Vec<_> = p.into_iter().map(|x| x.0).collect();
        assert_eq!(ids, ["b", "a", "c"]);
    }

    #[test]
    fn gpus_and_their_model_choose_the_nodes() {
        let nodes = [
            node(
                "a",
                "10.0.0.2",
                true,
                8.0,
                &[("GPU", 4.0), ("accelerator_type:T4", 1.0)],
            ),
            node(
                "b",
                "10.0.0.3",
                true,
                8.0,
                &[("GPU", 2.0), ("accelerator_type:A100", 1.0)],
            ),
            node("c", "10.0.0.4", true, 16.0, &[]),
        ];
        let mut m = manifest(2, 1.0, Some(LearnerPlacement::Pack));
        m.gpus = 1;
        m.gpu_type = Some("A100".into());
        let p = place_gang(&nodes, &m, 0).unwrap();
        assert!(p.iter().all(|x| x.0 == "b"), "{p:?}");
        m.gpus = 2;
        assert!(place_gang(&nodes, &m, 0).is_err());
        m.gpu_type = None;
        let p = place_gang(&nodes, &m, 0).unwrap();
        assert!(p.iter().all(|x| x.0 == "a"), "{p:?}");
    }
}
