//! The engines' sections of the server's configuration (`sandbox`, `kubernetes`, `ray`):
//! plain data, read by the server and handed to the engine the binary wires.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where learners and replicas run on the local backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// `users` when the server runs as root and the data directory is reachable by
    /// other users; otherwise `off`, with a warning.
    #[default]
    Auto,
    /// Each tenant's code runs as its own unprivileged user; the server refuses to
    /// start without root.
    Users,
    /// Tenants' code runs as the server's own user (no isolation).
    Off,
}

/// Whether the local engine holds each replica to its vCPUs (the kernel's CPU
/// controller, cgroup v2 or v1's `cpu`; needs root or a delegated hierarchy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuLimitsMode {
    /// Replicas use whatever CPU they get; vCPUs are only booked.
    #[default]
    Off,
    /// Limits when this server can write the CPU controller; otherwise off, with a
    /// warning.
    Auto,
    /// Limits, or the server refuses to start (saying why).
    On,
}

/// The local engine's settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    /// Each replica held to its service's vCPUs, and resized in place when a graph
    /// function's vCPUs per replica change (`cpus_range`).
    pub cpu_limits: CpuLimitsMode,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    pub mode: SandboxMode,
    /// Tenants get the user and group ids `uid_base`, `uid_base + 1`, ... (in the order
    /// they first run something), at most `uid_count` of them.
    pub uid_base: u32,
    pub uid_count: u32,
    /// Processes (and threads) one tenant's user may have at once (RLIMIT_NPROC).
    pub max_processes: u64,
    /// Open files per process (RLIMIT_NOFILE).
    pub max_open_files: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            mode: SandboxMode::Auto,
            uid_base: 200_000,
            uid_count: 100_000,
            max_processes: 2048,
            max_open_files: 4096,
        }
    }
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

/// Where the Ray cluster is and how to reach it (the server config's `ray:` section).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RayConfig {
    /// The dashboard (REST API) address.
    pub address: String,
    /// A bearer token for clusters with `RAY_AUTH_MODE=token` (or `token_file`).
    #[serde(skip_serializing)]
    pub token: Option<String>,
    pub token_file: Option<std::path::PathBuf>,
    /// Serve's HTTP proxy, where pharos's routers send requests (each service's route
    /// prefix is `/<name>`).
    pub serve_url: String,
    /// Every REST call gives up after this long (a package upload: ten times as long).
    pub timeout_s: f64,
    /// Where services' `working_dir`s may be (never one overlapping the data
    /// directory). When empty, only the admin may give a `working_dir` (any directory);
    /// tenants need it set.
    pub code_roots: Vec<std::path::PathBuf>,
    /// Where learners on any node keep checkpoints and results: an absolute path that
    /// every Ray node and the server's machine mount at the same place (learners get
    /// `CHECKPOINT_DIR` and `RESULT_DIR` under `<storage>/pharos-<installation>/jobs/<id>/`),
    /// or an object-storage URL (`s3://bucket/prefix`; learners get `CHECKPOINT_URI` and
    /// `RESULT_URI` under it and write there themselves). Unset: learners are given the
    /// server's own directories, which only a cluster on the server's machine reaches.
    pub storage: Option<String>,
}

/// Where Ray learners keep their checkpoints and results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RayStorage {
    /// A directory mounted at the same path everywhere.
    Path(std::path::PathBuf),
    /// An object-storage URL the learners write to themselves.
    Url(String),
}

impl RayConfig {
    /// `storage` read and checked: an absolute path that does not overlap the server's
    /// data directory (learners write there), or a `scheme://...` URL of at most 1024
    /// characters without spaces or control characters.
    pub fn storage(&self, data_dir: &std::path::Path) -> anyhow::Result<Option<RayStorage>> {
        let Some(s) = self.storage.as_deref() else {
            return Ok(None);
        };
        anyhow::ensure!(
            !s.is_empty()
                && s.len() <= 1024
                && !s.chars().any(|c| c.is_whitespace() || c.is_control()),
            "ray.storage: {s:?} must be 1-1024 characters without spaces or control characters"
        );
        if let Some((scheme, rest)) = s.split_once("://") {
            anyhow::ensure!(
                !scheme.is_empty()
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
                    && !rest.is_empty(),
                "ray.storage: {s:?} is not a URL like s3://bucket/prefix"
            );
            return Ok(Some(RayStorage::Url(s.trim_end_matches('/').to_string())));
        }
        let p = std::path::Path::new(s);
        anyhow::ensure!(
            !p.components()
                .any(|c| matches!(c, std::path::Component::ParentDir)),
            "ray.storage: {s:?} may not contain `..`"
        );
        anyhow::ensure!(
            p.is_absolute(),
            "ray.storage: {s:?} must be an absolute path (mounted at the same place on every node) or a URL"
        );
        let data = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        anyhow::ensure!(
            !p.starts_with(&data) && !data.starts_with(p),
            "ray.storage: {s:?} overlaps the server's data directory {}",
            data.display()
        );
        Ok(Some(RayStorage::Path(p.to_path_buf())))
    }
}

impl Default for RayConfig {
    fn default() -> Self {
        Self {
            address: "http://127.0.0.1:8265".into(),
            token: None,
            token_file: None,
            serve_url: "http://127.0.0.1:8000".into(),
            timeout_s: 10.0,
            code_roots: Vec::new(),
            storage: None,
        }
    }
}
