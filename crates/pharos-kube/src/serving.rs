//! Inference services as Deployments.
//!
//! Each service is a Deployment named after it (labels `pharos.io/service`, the
//! installation's), of pods running the spec's container with a readiness probe on its
//! `readiness_path`. pharos owns the replica count and sets it through the scale
//! subresource (`PATCH .../deployments/NAME/scale` with `{"spec":{"replicas":N}}`), so
//! nothing else of the Deployment is touched once it runs. A Deployment that a
//! HorizontalPodAutoscaler targets is not scaled (one `hpa-conflict` event; pharos
//! would otherwise fight the HPA), and one of the same name that another owner made is
//! left alone (`not-ours`). Ready pods join the router at `http://<pod IP>:<port>`
//! (pharos runs in the cluster, or somewhere that reaches pod IPs).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use pharos_engine::host::LockExt;
use pharos_engine::service::{EngineReplica, Phase, Report, ServiceEngine, ServiceSpec, Want};
use serde_json::json;

use crate::{INSTALLATION, Kube, SERVICE_LABEL, describe};

pub struct KubeEngine {
    kube: Arc<Kube>,
    memory: Mutex<Memory>,
}

#[derive(Default)]
struct Memory {
    /// Per service: the replica count last sent, and when.
    scaled: BTreeMap<String, (u32, Instant)>,
    /// When a deleted service's Deployment was last asked to go.
    deleted: BTreeMap<String, Instant>,
    /// Events said once per cause: (service, kind, message).
    said: BTreeSet<(String, &'static str, String)>,
    /// Services whose Deployment could not be made (another owner's is there, or the
    /// API refused it): the status and message, and when to try again.
    held_back: BTreeMap<String, (String, String, Instant)>,
}

/// How long a service whose Deployment could not be made waits before trying again.
const HOLD_BACK: Duration = Duration::from_secs(30);

impl KubeEngine {
    pub fn new(kube: Arc<Kube>) -> Self {
        Self {
            kube,
            memory: Mutex::new(Memory::default()),
        }
    }

    fn labels(&self, name: &str) -> BTreeMap<String, String> {
        let mut l = self.kube.labels();
        l.insert(SERVICE_LABEL.into(), name.into());
        l
    }

    /// The Deployment of a service, as pharos makes it (with `replicas` at creation;
    /// afterwards only the scale subresource changes the count).
    pub fn deployment(&self, spec: &ServiceSpec, replicas: u32) -> Deployment {
        let app = spec.kubernetes.as_ref().expect("a Kubernetes service");
        let labels = self.labels(&spec.name);
        let selector: BTreeMap<String, String> = [
            (SERVICE_LABEL.to_string(), spec.name.clone()),
            (INSTALLATION.to_string(), self.kube.installation.clone()),
        ]
        .into();
        let mut env = vec![
            json!({"name": "PORT", "value": app.port.to_string()}),
            json!({"name": "SERVICE", "value": spec.name}),
        ];
        env.extend(spec.env.iter().map(|(k, v)| json!({"name": k, "value": v})));
        let cpu = format!("{}m", (spec.cpus * 1000.0).round() as u64);
        let mut requests = json!({"cpu": cpu});
        let mut limits = json!({});
        if self.kube.config.cpu_limits {
            limits["cpu"] = json!(cpu);
        }
        if spec.gpus > 0 {
            let g = &self.kube.config.gpu_resource;
            requests[g] = json!(spec.gpus.to_string());
            limits[g] = json!(spec.gpus.to_string());
        }
        let mut container = json!({
            "name": "replica",
            "image": app.image,
            "ports": [{"name": "http", "containerPort": app.port}],
            "env": env,
            "resources": {"requests": requests, "limits": limits},
            "readinessProbe": {
                "httpGet": {"path": spec.readiness_path, "port": app.port},
                "periodSeconds": 1,
                "failureThreshold": 1,
            },
            "securityContext": crate::untrusted_security_context(),
        });
        let drain = self.kube.config.replica_drain_s;
        if drain > 0 {
            // Kubernetes picks the pods a scale-down removes: they keep serving a moment
            // after being marked, while the router takes them out of rotation.
            container["lifecycle"] = json!({"preStop": {"sleep": {"seconds": drain}}});
        }
        if !app.command.is_empty() {
            container["command"] = json!(app.command);
        }
        if !app.args.is_empty() {
            container["args"] = json!(app.args);
        }
        // Replicas are tenants' code: no credentials for the Kubernetes API.
        let mut pod = json!({"containers": [container], "automountServiceAccountToken": false});
        if spec.gpus > 0 {
            pod["tolerations"] =
                json!([{"key": self.kube.config.gpu_resource, "operator": "Exists"}]);
        }
        let template = json!({"metadata": {"labels": labels}, "spec": pod});
        serde_json::from_value(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": spec.name,
                "labels": labels,
            },
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": selector},
                "template": template,
            }
        }))
        .expect("a Deployment")
    }

    fn say(&self, r: &mut Report, kind: &'static str, message: String) {
        let mut m = self.memory.lock_or_recover();
        if m.said.insert((r.name.clone(), kind, message.clone())) {
            r.events.push((kind, message));
        }
    }

    fn forget(&self, name: &str, kind: &'static str) {
        let mut m = self.memory.lock_or_recover();
        m.said.retain(|(n, k, _)| !(n == name && *k == kind));
    }

    async fn sync_all(&self, wants: &[Want]) -> Result<Vec<Report>, String> {
        // Until the watches have listed nothing is known: no reports, the loop keeps
        // what it had.
        let (Some(deployments), Some(pods)) =
            (self.kube.deployments.objects(), self.kube.pods.objects())
        else {
            return Ok(Vec::new());
        };
        // Deployments of this installation no service wants any more (a server stopped
        // between deleting a service and its Deployment) go.
        for d in deployments.iter() {
            let name = d.metadata.name.as_deref().unwrap_or("");
            let owned = d
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_LABEL))
                .is_some();
            if owned && !wants.iter().any(|w| w.name == name) {
                tracing::info!(deployment = name, "deleting a Deployment no service wants");
                if let Err(e) = self.delete(name).await {
                    tracing::warn!("{e}");
                }
            }
        }
        let Some(hpas) = self.hpas() else {
            return Ok(Vec::new());
        };
        let mut reports = Vec::new();
        for w in wants {
            let mut r = Report {
                name: w.name.clone(),
                ..Default::default()
            };
            let dep = deployments
                .iter()
                .find(|d| d.metadata.name.as_deref() == Some(w.name.as_str()));
            if w.spec.kubernetes.is_none() && !w.deleting {
                // Stored by a server with another backend: nothing to run here.
                r.status = "REFUSED".into();
                r.message = "the spec names no kubernetes container (it was applied to another backend); delete it and apply it again".into();
                let m = r.message.clone();
                self.say(&mut r, "deploy-failed", m);
                reports.push(r);
                continue;
            }
            r.replicas = replicas_of(
                &pods,
                &w.name,
                w.spec.kubernetes.as_ref().map_or(0, |k| k.port),
            );
            r.present = dep.is_some() || !r.replicas.is_empty();
            if w.deleting {
                if dep.is_some() {
                    self.delete(&w.name).await?;
                } else {
                    // Nothing of it left: a later service of this name starts clean.
                    let mut m = self.memory.lock_or_recover();
                    m.held_back.remove(&w.name);
                    m.said.retain(|(n, _, _)| n != &w.name);
                }
                r.status = "DELETING".into();
                reports.push(r);
                continue;
            }
            let hpa = hpas.iter().find(|h| {
                h.spec.as_ref().is_some_and(|s| {
                    s.scale_target_ref.kind == "Deployment" && s.scale_target_ref.name == w.name
                })
            });
            if let Some(h) = hpa {
                let hname = h.metadata.name.clone().unwrap_or_default();
                r.status = "HPA_CONFLICT".into();
                r.message = format!(
                    "the HorizontalPodAutoscaler {hname} scales Deployment {}; pharos leaves it alone (delete the HPA to let pharos scale it)",
                    w.name
                );
                let m = r.message.clone();
                self.say(&mut r, "hpa-conflict", m);
                reports.push(r);
                continue;
            }
            self.forget(&w.name, "hpa-conflict");
            match dep {
                None => {
                    let held = self
                        .memory
                        .lock_or_recover()
                        .held_back
                        .get(&w.name)
                        .filter(|h| Instant::now() < h.2)
                        .cloned();
                    match held {
                        Some((status, message, _)) => {
                            r.status = status;
                            r.message = message;
                        }
                        None => self.create(w, &mut r).await?,
                    }
                }
                Some(d) => {
                    let have = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as u32;
                    if have != w.target {
                        self.scale(&w.name, w.target).await?;
                    }
                    let st = d.status.as_ref();
                    r.status = format!(
                        "{}/{} available",
                        st.and_then(|s| s.available_replicas).unwrap_or(0),
                        d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
                    );
                    let trouble = st
                        .and_then(|s| s.conditions.as_ref())
                        .and_then(|cs| {
                            cs.iter().find(|c| {
                                (c.type_ == "ReplicaFailure" && c.status == "True")
                                    || (c.type_ == "Progressing"
                                        && c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
                            })
                        })
                        .map(|c| c.message.clone().unwrap_or_else(|| c.type_.clone()));
                    if let Some(m) = trouble {
                        r.message = m.clone();
                        self.say(&mut r, "deploy-failed", m);
                    }
                }
            }
            reports.push(r);
        }
        Ok(reports)
    }

    async fn create(&self, w: &Want, r: &mut Report) -> Result<(), String> {
        let api = self.kube.api::<Deployment>();
        let d = self.deployment(&w.spec, w.target);
        match api.create(&PostParams::default(), &d).await {
            Ok(_) => {
                r.status = "CREATED".into();
                let m = format!("Deployment {} created with {} replica(s)", w.name, w.target);
                r.events.push(("deployed", m));
                self.memory
                    .lock_or_recover()
                    .scaled
                    .insert(w.name.clone(), (w.target, Instant::now()));
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Ours, made a moment ago (the watch has not shown it yet), or another's.
                match api.get_opt(&w.name).await {
                    Ok(Some(other))
                        if other
                            .metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(INSTALLATION))
                            != Some(&self.kube.installation) =>
                    {
                        r.status = "NOT_OURS".into();
                        r.message = format!(
                            "a Deployment named {} exists and was not made by this pharos; it is left alone (delete it, or name the service otherwise)",
                            w.name
                        );
                        let m = r.message.clone();
                        self.say(r, "not-ours", m);
                        self.hold_back(r);
                        Ok(())
                    }
                    Ok(_) => Ok(()),
                    Err(e) => Err(format!("reading Deployment {}: {}", w.name, describe(&e))),
                }
            }
            Err(kube::Error::Api(s)) if (400..500).contains(&s.code) && s.code != 429 => {
                // Refused as made: say so once, try again when the spec changes.
                r.status = "REFUSED".into();
                r.message = format!("creating Deployment {}: {} ({})", w.name, s.message, s.code);
                let m = r.message.clone();
                self.say(r, "deploy-failed", m);
                self.hold_back(r);
                Ok(())
            }
            Err(e) => Err(format!("creating Deployment {}: {}", w.name, describe(&e))),
        }
    }

    /// The namespace's HPAs, from the watch. None until it has listed; an empty list
    /// when it cannot (pharos may not be allowed to: said once in the log, and the check
    /// is then off rather than every service stopped).
    fn hpas(&self) -> Option<Vec<Arc<HorizontalPodAutoscaler>>> {
        if let Some(h) = self.kube.hpas.objects() {
            return Some(h);
        }
        if self.kube.hpas.errors() == 0 {
            return None;
        }
        let mut m = self.memory.lock_or_recover();
        if m.said.insert((String::new(), "hpa-unknown", String::new())) {
            tracing::warn!(
                "HorizontalPodAutoscalers cannot be watched: Deployments are scaled without checking for one"
            );
        }
        Some(Vec::new())
    }

    fn hold_back(&self, r: &Report) {
        self.memory.lock_or_recover().held_back.insert(
            r.name.clone(),
            (
                r.status.clone(),
                r.message.clone(),
                Instant::now() + HOLD_BACK,
            ),
        );
    }

    async fn scale(&self, name: &str, replicas: u32) -> Result<(), String> {
        {
            let m = self.memory.lock_or_recover();
            // Sent a moment ago; the watch has not caught up.
            if let Some((n, t)) = m.scaled.get(name)
                && *n == replicas
                && t.elapsed() < Duration::from_secs(10)
            {
                return Ok(());
            }
        }
        let api = self.kube.api::<Deployment>();
        let patch = json!({"spec": {"replicas": replicas}});
        api.patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| format!("scaling Deployment {name} to {replicas}: {}", describe(&e)))?;
        self.memory
            .lock_or_recover()
            .scaled
            .insert(name.to_string(), (replicas, Instant::now()));
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<(), String> {
        {
            let m = self.memory.lock_or_recover();
            if m.deleted
                .get(name)
                .is_some_and(|t| t.elapsed() < Duration::from_secs(10))
            {
                return Ok(());
            }
        }
        let api = self.kube.api::<Deployment>();
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(format!("deleting Deployment {name}: {}", describe(&e))),
        }
        let mut m = self.memory.lock_or_recover();
        m.deleted.insert(name.to_string(), Instant::now());
        m.scaled.remove(name);
        m.held_back.remove(name);
        m.said.retain(|(n, _, _)| n != name);
        Ok(())
    }
}

/// A service's pods as replicas: ready ones (Ready condition) with their address,
/// terminating ones stopping, the rest starting; ended pods are left out.
pub fn replicas_of(pods: &[Arc<Pod>], name: &str, port: u16) -> Vec<EngineReplica> {
    let mut out: Vec<EngineReplica> = pods
        .iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_LABEL))
                .is_some_and(|s| s == name)
        })
        .filter_map(|p| {
            let st = p.status.as_ref();
            let phase = st.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
            if matches!(phase, "Succeeded" | "Failed") {
                return None;
            }
            let id = p.metadata.name.clone()?;
            let ready = st
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let ip = st.and_then(|s| s.pod_ip.clone());
            let phase = if p.metadata.deletion_timestamp.is_some() {
                Phase::Stopping
            } else if ready && phase == "Running" && ip.is_some() {
                Phase::Ready
            } else {
                Phase::Starting
            };
            let url = (phase == Phase::Ready)
                .then(|| format!("http://{}:{port}", ip.unwrap_or_default()));
            Some(EngineReplica {
                id,
                phase,
                url,
                process: None,
            })
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

impl ServiceEngine for KubeEngine {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn check(&self, spec: &ServiceSpec) -> Result<(), String> {
        if spec.kubernetes.is_none() {
            return Err(
                "kubernetes: this server runs services on Kubernetes; give kubernetes.image (and kubernetes.port)"
                    .into(),
            );
        }
        if spec.name.starts_with('-') || spec.name.ends_with('-') {
            return Err(format!(
                "name: {:?} must start and end with a letter or digit (it names a Deployment)",
                spec.name
            ));
        }
        Ok(())
    }

    fn sync<'a>(&'a self, wants: &'a [Want]) -> BoxFuture<'a, Result<Vec<Report>, String>> {
        Box::pin(self.sync_all(wants))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, phase: &str, ready: bool, deleting: bool) -> Arc<Pod> {
        let mut v = json!({
            "metadata": {"name": name, "labels": {SERVICE_LABEL: "web"}},
            "status": {"phase": phase, "podIP": "10.1.2.3",
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        });
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn pods_as_replicas() {
        let pods = vec![
            pod("a", "Running", true, false),
            pod("b", "Running", false, false),
            pod("c", "Pending", false, false),
            pod("d", "Running", true, true),
            pod("e", "Failed", false, false),
        ];
        let r = replicas_of(&pods, "web", 8080);
        let phases: Vec<(&str, Phase)> = r.iter().map(|x| (x.id.as_str(), x.phase)).collect();
        assert_eq!(
            phases,
            vec![
                ("a", Phase::Ready),
                ("b", Phase::Starting),
                ("c", Phase::Starting),
                ("d", Phase::Stopping),
            ]
        );
        assert_eq!(r[0].url.as_deref(), Some("http://10.1.2.3:8080"));
        assert!(r[1..].iter().all(|x| x.url.is_none()));
        assert!(replicas_of(&pods, "other", 8080).is_empty());
    }
}
