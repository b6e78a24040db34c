//! Server configuration: embedded defaults, then a YAML file, then the environment
//! (`PHAROS_LISTEN`, `PHAROS_DATA_DIR`, `PHAROS_DATABASE_URL`, `PHAROS_ADMIN_TOKEN`,
//! `PHAROS_RAY_TOKEN`),
//! then command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pharos_core::{Node, QueueSpec};
use pharos_policy::training::GangParams;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Where the store (SQLite), archives and job files live.
    pub data_dir: PathBuf,
    /// `postgres://...` to use PostgreSQL; by default SQLite at `<data_dir>/pharos.db`.
    pub database_url: Option<String>,
    /// An admin token to register at start (its hash is stored). When no admin token
    /// exists and none is given, one is generated and written to
    /// `<data_dir>/admin-token` (mode 0600).
    #[serde(skip_serializing)]
    pub admin_token: Option<String>,
    /// What learners may use on this machine; by default all its CPUs and memory and
    /// no GPUs.
    pub capacity: Capacity,
    /// Queues and their quotas; a job naming another queue is refused.
    pub queues: Vec<QueueSpec>,
    /// The gang scheduler's parameters.
    pub scheduler: GangParams,
    /// Largest request body, bytes (manifests, API calls).
    pub max_request_bytes: usize,
    /// Largest job submission with its model archive, bytes.
    pub max_upload_bytes: usize,
    /// How often the controller looks at every job, milliseconds.
    pub tick_ms: u64,
    /// Between SIGTERM and SIGKILL when stopping learners, seconds.
    pub halt_grace_s: f64,
    /// The first restart waits this long; each further one twice as long.
    pub restart_backoff_s: f64,
    pub restart_backoff_max_s: f64,
    /// The inference autoscaler: one policy for all services (the SLO-utility
    /// objectives are cluster-wide).
    pub autoscaler: AutoscalerConfig,
    /// Where learners and replicas run: `local` (processes on this machine), `ray`
    /// (Ray Jobs and Ray Serve on the cluster named in `ray`) or `kubernetes` (Jobs and
    /// Deployments in the cluster and namespace named in `kubernetes`).
    pub backend: BackendKind,
    pub ray: crate::ray::RayConfig,
    pub kubernetes: KubernetesConfig,
    /// The dashboard's history: a sample every this many seconds ...
    pub history_interval_s: f64,
    /// ... kept this long.
    pub history_hours: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[default]
    Local,
    Ray,
    Kubernetes,
}

/// The Kubernetes backend: where the cluster is and how learners and replicas become
/// pods. With this backend `capacity` is the share of the cluster pharos plans with
/// (like a Kueue cluster queue's quota); a gang also starts only once the nodes have
/// room for every learner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// A kubeconfig file [default: the pod's service account when pharos runs in the
    /// cluster, else $KUBECONFIG or ~/.kube/config].
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig's context [default: its current one].
    pub context: Option<String>,
    /// Where pharos creates everything [default: the kubeconfig's or the pod's
    /// namespace].
    pub namespace: Option<String>,
    /// The learners' image, unless `images` names one for the manifest's framework.
    pub image: String,
    /// Images by framework name (`tensorflow: tensorflow/tensorflow:2.16.1`).
    pub images: BTreeMap<String, String>,
    /// The extended resource a GPU is (`nvidia.com/gpu`, `amd.com/gpu`).
    pub gpu_resource: String,
    /// The node label whose value is the GPU model a manifest's `gpu_type` names.
    pub gpu_type_label: String,
    /// Set CPU limits equal to the requests (off by default: limits throttle).
    pub cpu_limits: bool,
    /// Set memory limits equal to the requests.
    pub memory_limits: bool,
    /// A PersistentVolumeClaim holding the data directory, mounted in learner pods at
    /// the same path, so MODEL_DIR, CHECKPOINT_DIR and RESULT_DIR are the server's
    /// (ReadWriteMany when learners run on other nodes than the server).
    pub data_claim: Option<String>,
    /// The learner pods' service account [default: the namespace's default].
    pub service_account: Option<String>,
    /// Start a gang only when the nodes' free allocatable resources hold every learner.
    pub check_nodes: bool,
    /// Seconds a replica keeps serving after Kubernetes marks it for removal (a preStop
    /// sleep, Kubernetes 1.30 or newer); 0 for none.
    pub replica_drain_s: u32,
    /// Each API call's time limit, seconds.
    pub timeout_s: f64,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            context: None,
            namespace: None,
            image: "python:3.12-slim".into(),
            images: BTreeMap::new(),
            gpu_resource: "nvidia.com/gpu".into(),
            gpu_type_label: "nvidia.com/gpu.product".into(),
            cpu_limits: false,
            memory_limits: true,
            data_claim: None,
            service_account: None,
            check_nodes: true,
            replica_drain_s: 2,
            timeout_s: 10.0,
        }
    }
}

/// Which inference policy scales the services, with its parameters (as in an
/// experiment file: `{interval_s: 10, ...}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoscalerConfig {
    /// A policy name (`pharos simulate` knows the same: `hpa`, `faro-fairsum`, ...).
    pub policy: String,
    pub params: serde_json::Value,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        Self {
            policy: "faro-fairsum".into(),
            params: serde_json::Value::Null,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Capacity {
    pub cpus: f64,
    pub memory: String,
    /// GPUs by model (e.g. `{a100: 2}`).
    pub gpus: BTreeMap<String, u32>,
    /// The device indices of each model (what CUDA_VISIBLE_DEVICES names); by default
    /// the models in name order take consecutive indices from 0.
    pub gpu_devices: BTreeMap<String, Vec<u32>>,
}

impl Capacity {
    /// The device indices of each GPU model.
    pub fn devices(&self) -> BTreeMap<String, Vec<u32>> {
        let mut next = 0;
        self.gpus
            .iter()
            .map(|(m, n)| {
                let ids = self.gpu_devices.get(m).cloned().unwrap_or_else(|| {
                    let ids = (next..next + n).collect();
                    next += n;
                    ids
                });
                (m.clone(), ids)
            })
            .collect()
    }
}

impl Default for Capacity {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as f64)
            .unwrap_or(1.0);
        Self {
            cpus,
            memory: format!("{}", total_memory_bytes().unwrap_or(4 << 30)),
            gpus: BTreeMap::new(),
            gpu_devices: BTreeMap::new(),
        }
    }
}

fn total_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("pharos");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/pharos"),
        None => PathBuf::from("pharos-data"),
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: default_data_dir(),
            database_url: None,
            admin_token: None,
            capacity: Capacity::default(),
            queues: vec![QueueSpec {
                name: "default".into(),
                quota: BTreeMap::new(),
            }],
            scheduler: GangParams::default(),
            max_request_bytes: 1 << 20,
            max_upload_bytes: 64 << 20,
            tick_ms: 200,
            halt_grace_s: 10.0,
            restart_backoff_s: 1.0,
            autoscaler: AutoscalerConfig::default(),
            restart_backoff_max_s: 60.0,
            backend: BackendKind::Local,
            ray: crate::ray::RayConfig::default(),
            kubernetes: KubernetesConfig::default(),
            history_interval_s: 10.0,
            history_hours: 6.0,
        }
    }
}

impl ServerConfig {
    /// Defaults, then `file` (if given), then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut cfg = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("reading the configuration {}: {e}", path.display())
                })?;
                serde_saphyr::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("configuration {}: {e}", path.display()))?
            }
            None => ServerConfig::default(),
        };
        if let Ok(v) = std::env::var("PHAROS_LISTEN") {
            cfg.listen = v;
        }
        if let Some(v) = std::env::var_os("PHAROS_DATA_DIR") {
            cfg.data_dir = v.into();
        }
        if let Ok(v) = std::env::var("PHAROS_DATABASE_URL") {
            cfg.database_url = Some(v);
        }
        if let Ok(v) = std::env::var("PHAROS_ADMIN_TOKEN") {
            cfg.admin_token = Some(v);
        }
        if let Ok(v) = std::env::var("PHAROS_RAY_TOKEN") {
            cfg.ray.token = Some(v);
        }
        Ok(cfg)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.capacity.cpus > 0.0, "capacity.cpus must be positive");
        pharos_core::parse_memory(&self.capacity.memory)
            .map_err(|e| anyhow::anyhow!("capacity.memory: {e}"))?;
        anyhow::ensure!(!self.queues.is_empty(), "queues: at least one queue");
        for (m, ids) in &self.capacity.gpu_devices {
            let n = self.capacity.gpus.get(m).copied().unwrap_or(0) as usize;
            anyhow::ensure!(
                ids.len() == n,
                "capacity.gpu_devices.{m}: {} indices for {n} GPUs",
                ids.len()
            );
        }
        anyhow::ensure!(self.tick_ms > 0, "tick_ms must be positive");
        anyhow::ensure!(
            self.history_interval_s >= 0.1 && self.history_hours > 0.0,
            "history_interval_s must be at least 0.1 and history_hours positive"
        );
        pharos_policy::build(&self.autoscaler.policy, &self.autoscaler.params)
            .map_err(|e| anyhow::anyhow!("autoscaler: {e}"))?;
        anyhow::ensure!(
            self.halt_grace_s >= 0.0 && self.restart_backoff_s >= 0.0,
            "halt_grace_s and restart_backoff_s must not be negative"
        );
        Ok(())
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.data_dir.join("pharos.db").display()),
        }
    }

    /// This machine as the scheduler sees it.
    pub fn node(&self) -> Node {
        Node {
            name: "local".into(),
            cpus: self.capacity.cpus,
            memory_bytes: pharos_core::parse_memory(&self.capacity.memory).unwrap_or(u64::MAX),
            gpus: self.capacity.gpus.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_devices_default_to_consecutive_indices_by_model_name() {
        let mut c = ServerConfig::default();
        c.capacity.gpus = BTreeMap::from([("v100".into(), 2), ("a100".into(), 1)]);
        let d = c.capacity.devices();
        assert_eq!(d["a100"], vec![0]);
        assert_eq!(d["v100"], vec![1, 2]);
        c.capacity.gpu_devices = BTreeMap::from([("v100".into(), vec![4, 7])]);
        assert_eq!(c.capacity.devices()["v100"], vec![4, 7]);
        c.validate().unwrap();
        c.capacity.gpu_devices = BTreeMap::from([("v100".into(), vec![4])]);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("capacity.gpu_devices.v100"), "{err}");
    }
}
