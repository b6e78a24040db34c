//! Server configuration: embedded defaults, then a YAML file, then the environment
//! (`PHAROS_LISTEN`, `PHAROS_DATA_DIR`, `PHAROS_DATABASE_URL`, `PHAROS_ADMIN_TOKEN`,
//! `PHAROS_RAY_TOKEN`),
//! then command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pharos_core::{Node, QueueSpec};
pub use pharos_engine::config::{KubernetesConfig, RayConfig, SandboxConfig, SandboxMode};
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
    /// A scheduling decision considers the first this many waiting jobs of each queue
    /// (in the queue's order); the others wait their turn ("not yet scheduled").
    pub schedule_window: usize,
    /// Several servers on one PostgreSQL: one leader at a time runs the controller and
    /// the autoscalers (every server answers the API).
    pub election: ElectionConfig,
    /// Where services' routers run: `server` (in the server's process) or `process`
    /// (a process of their own per service, which keeps serving while no server leads
    /// and is adopted by the next leader). Default: `process` with an election
    /// (PostgreSQL), else `server`.
    pub service_routers: Option<RouterPlacement>,
    /// Between SIGTERM and SIGKILL when stopping learners, seconds.
    pub halt_grace_s: f64,
    /// The first restart waits this long; each further one twice as long.
    pub restart_backoff_s: f64,
    pub restart_backoff_max_s: f64,
    /// The inference autoscaler: one policy for all services (the SLO-utility
    /// objectives are cluster-wide).
    pub autoscaler: AutoscalerConfig,
    /// The function graphs' autoscaler: one policy for the functions of every graph
    /// (`fluid`, the fluid-optimal one; or `hpa`, `kpa`, ... applied to each function).
    pub graph_autoscaler: GraphAutoscalerConfig,
    /// Every service's durable per-minute load history and the forecasters fitted on it.
    pub forecast: ForecastConfig,
    /// Where learners and replicas run: `local` (processes on this machine), `ray`
    /// (Ray Jobs and Ray Serve on the cluster named in `ray`) or `kubernetes` (Jobs and
    /// Deployments in the cluster and namespace named in `kubernetes`).
    pub backend: BackendKind,
    pub ray: RayConfig,
    pub kubernetes: KubernetesConfig,
    /// The dashboard's history: a sample every this many seconds ...
    pub history_interval_s: f64,
    /// ... kept this long.
    pub history_hours: f64,
    /// Limits on every listener (the API's and each service's router port).
    pub listener: ListenerConfig,
    /// How learners and replicas are isolated on the local backend.
    pub sandbox: SandboxConfig,
    /// The local engine's replicas: vCPU limits.
    pub local: pharos_engine::config::LocalConfig,
    /// What every tenant may use (the admin is not limited) ...
    pub tenant_limits: TenantLimits,
    /// ... and per tenant, instead of `tenant_limits`.
    pub tenants: BTreeMap<String, TenantLimits>,
}

/// Where services' routers run (see `ServerConfig::service_routers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouterPlacement {
    Server,
    Process,
}

/// Leader election among servers sharing one PostgreSQL (used whenever the store is
/// PostgreSQL; SQLite has one server).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElectionConfig {
    /// A leader that has not renewed its lease for this long is replaced, seconds.
    /// It renews every third of it.
    pub lease_s: f64,
    /// The API address other servers and clients are told the leader serves (default:
    /// `http://` + `listen`).
    pub advertise_url: Option<String>,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        Self {
            lease_s: 5.0,
            advertise_url: None,
        }
    }
}

/// Limits on a listener's connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// A request's headers must arrive within this many seconds of its first byte.
    pub header_read_timeout_s: f64,
    /// A connection with no request in progress and no bytes moved for this long is
    /// closed (idle keep-alive connections, and connections that never send a byte).
    pub idle_timeout_s: f64,
    /// Connections served at once per listener; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// An API request (its body read and its handler, not a streamed answer) must be
    /// done within this many seconds, else 408: a body trickled byte by byte cannot
    /// hold a connection for ever. Routers have no such limit (a model may be slow).
    pub request_timeout_s: f64,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_s: 10.0,
            idle_timeout_s: 30.0,
            max_connections: 4096,
            request_timeout_s: 300.0,
        }
    }
}

/// What a tenant may ask for. The admin sets them; tenants cannot exceed them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantLimits {
    /// The highest job priority (a higher one is refused).
    pub max_priority: i32,
    /// Services at once.
    pub max_services: u32,
    /// The sum of `max_replicas` over its services.
    pub max_replicas: u32,
    /// Training jobs not yet ended (queued, waiting or running).
    pub max_jobs: u32,
    /// vCPUs one job's learners, or one service at its `max_replicas`, may ask for.
    pub max_cpus: f64,
    /// Memory one job's learners may ask for together (`64GiB`).
    pub max_memory: String,
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            max_priority: 10,
            max_services: 20,
            max_replicas: 200,
            max_jobs: 1000,
            max_cpus: 256.0,
            max_memory: "1TiB".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[default]
    Local,
    Ray,
    Kubernetes,
}

/// Which inference policy scales the services, with its parameters (as in an
/// experiment file: `{interval_s: 10, ...}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoscalerConfig {
    /// A policy name (`pharos simulate` knows the same: `hpa`, `faro-fairsum`, ...).
    pub policy: String,
    pub params: serde_json::Value,
    /// Targets whose replicas do not fit the capacity: `trim` (cut to what fits when
    /// decided, as the simulator does by default) or `wait` (kept; replicas start as
    /// capacity frees).
    pub over_capacity: pharos_policy::OverCapacity,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        Self {
            policy: "faro-fairsum".into(),
            params: serde_json::Value::Null,
            over_capacity: pharos_policy::OverCapacity::Trim,
        }
    }
}

/// The function graphs' autoscaler (as in a graph experiment file:
/// `{policy: fluid, params: {interval_s: 10, ...}}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphAutoscalerConfig {
    /// `fluid`, or an inference policy applied to each function (`hpa`, `kpa`, ...).
    pub policy: String,
    pub params: serde_json::Value,
}

impl Default for GraphAutoscalerConfig {
    fn default() -> Self {
        Self {
            policy: "fluid".into(),
            params: serde_json::Value::Null,
        }
    }
}

/// The per-minute load history the server keeps of every service, and the forecasters
/// it fits on it in the background for the policies that forecast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForecastConfig {
    /// Minutes of history kept, in days (older minutes are deleted).
    pub retention_days: f64,
    /// Minutes in a day of the load's daily pattern (1440; a time-compressed test run
    /// replaying a day in 240 live minutes says 240).
    pub day_minutes: u32,
    /// Whole days a forecaster is fitted on (the latest ones) and shown before today.
    pub fit_days: u32,
    /// Refit every this many minutes (and as soon as every service has a whole day, and
    /// when the set of services changes).
    pub refit_every_minutes: u32,
    /// Minutes ahead that `GET /v1/services/{name}` and `/metrics` show the forecast.
    pub horizon_minutes: u32,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        Self {
            retention_days: 30.0,
            day_minutes: 1440,
            fit_days: 14,
            refit_every_minutes: 360,
            horizon_minutes: 30,
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
            schedule_window: 1000,
            election: ElectionConfig::default(),
            service_routers: None,
            halt_grace_s: 10.0,
            restart_backoff_s: 1.0,
            autoscaler: AutoscalerConfig::default(),
            graph_autoscaler: GraphAutoscalerConfig::default(),
            forecast: ForecastConfig::default(),
            restart_backoff_max_s: 60.0,
            backend: BackendKind::Local,
            ray: RayConfig::default(),
            kubernetes: KubernetesConfig::default(),
            history_interval_s: 10.0,
            history_hours: 6.0,
            listener: ListenerConfig::default(),
            sandbox: SandboxConfig::default(),
            local: Default::default(),
            tenant_limits: TenantLimits::default(),
            tenants: BTreeMap::new(),
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
        anyhow::ensure!(
            (1..=60_000).contains(&self.tick_ms),
            "tick_ms must be 1-60000"
        );
        anyhow::ensure!(
            (1..=100_000).contains(&self.schedule_window),
            "schedule_window must be 1-100000"
        );
        anyhow::ensure!(
            (1.0..=600.0).contains(&self.election.lease_s),
            "election.lease_s must be 1-600"
        );
        anyhow::ensure!(
            (0.1..=86_400.0).contains(&self.history_interval_s)
                && self.history_hours > 0.0
                && self.history_hours <= 8760.0,
            "history_interval_s must be 0.1-86400 and history_hours in (0, 8760]"
        );
        for (name, v) in [
            ("halt_grace_s", self.halt_grace_s),
            ("restart_backoff_s", self.restart_backoff_s),
            ("restart_backoff_max_s", self.restart_backoff_max_s),
        ] {
            anyhow::ensure!(
                (0.0..=86_400.0).contains(&v),
                "{name} must be between 0 and 86400 seconds, got {v}"
            );
        }
        self.ray.storage(&self.data_dir)?;
        for (name, v) in [
            ("ray.timeout_s", self.ray.timeout_s),
            ("kubernetes.timeout_s", self.kubernetes.timeout_s),
        ] {
            anyhow::ensure!(
                v > 0.0 && v <= 3600.0,
                "{name} must be in (0, 3600] seconds, got {v}"
            );
        }
        anyhow::ensure!(
            self.max_request_bytes >= 1024 && self.max_upload_bytes >= 1024,
            "max_request_bytes and max_upload_bytes must be at least 1024"
        );
        pharos_policy::build(&self.autoscaler.policy, &self.autoscaler.params)
            .map_err(|e| anyhow::anyhow!("autoscaler: {e}"))?;
        pharos_policy::graph::build_graph(
            &self.graph_autoscaler.policy,
            &self.graph_autoscaler.params,
        )
        .map_err(|e| anyhow::anyhow!("graph_autoscaler: {e}"))?;
        let f = &self.forecast;
        anyhow::ensure!(
            f.retention_days > 0.0 && f.retention_days <= 3660.0,
            "forecast.retention_days must be in (0, 3660]"
        );
        anyhow::ensure!(
            (10..=10_080).contains(&f.day_minutes),
            "forecast.day_minutes must be 10-10080"
        );
        anyhow::ensure!(
            (1..=60).contains(&f.fit_days),
            "forecast.fit_days must be 1-60"
        );
        anyhow::ensure!(
            (1..=100_000).contains(&f.refit_every_minutes),
            "forecast.refit_every_minutes must be 1-100000"
        );
        anyhow::ensure!(
            (1..=1440).contains(&f.horizon_minutes),
            "forecast.horizon_minutes must be 1-1440"
        );
        anyhow::ensure!(
            self.halt_grace_s >= 0.0 && self.restart_backoff_s >= 0.0,
            "halt_grace_s and restart_backoff_s must not be negative"
        );
        let l = &self.listener;
        anyhow::ensure!(
            l.header_read_timeout_s > 0.0 && l.header_read_timeout_s <= 3600.0,
            "listener.header_read_timeout_s must be in (0, 3600]"
        );
        anyhow::ensure!(
            l.idle_timeout_s > 0.0 && l.idle_timeout_s <= 86_400.0,
            "listener.idle_timeout_s must be in (0, 86400]"
        );
        anyhow::ensure!(
            (1..=1_000_000).contains(&l.max_connections),
            "listener.max_connections must be 1-1000000"
        );
        anyhow::ensure!(
            l.request_timeout_s > 0.0 && l.request_timeout_s <= 86_400.0,
            "listener.request_timeout_s must be in (0, 86400]"
        );
        let sb = &self.sandbox;
        anyhow::ensure!(
            sb.uid_base >= 1000
                && sb.uid_count >= 1
                && sb.uid_base.checked_add(sb.uid_count).is_some(),
            "sandbox.uid_base must be at least 1000 and uid_base + uid_count a valid id"
        );
        anyhow::ensure!(
            sb.max_processes >= 16 && sb.max_open_files >= 64,
            "sandbox.max_processes must be at least 16 and sandbox.max_open_files at least 64"
        );
        for (name, t) in std::iter::once(("tenant_limits", &self.tenant_limits))
            .chain(self.tenants.iter().map(|(k, v)| (k.as_str(), v)))
        {
            anyhow::ensure!(
                (pharos_core::limits::MIN_PRIORITY..=pharos_core::limits::MAX_PRIORITY)
                    .contains(&t.max_priority),
                "{name}.max_priority must be between {} and {}",
                pharos_core::limits::MIN_PRIORITY,
                pharos_core::limits::MAX_PRIORITY
            );
            anyhow::ensure!(
                t.max_cpus.is_finite() && t.max_cpus > 0.0,
                "{name}.max_cpus must be positive"
            );
            pharos_core::parse_memory(&t.max_memory)
                .map_err(|e| anyhow::anyhow!("{name}.max_memory: {e}"))?;
        }
        Ok(())
    }

    /// What `tenant` may use.
    pub fn limits(&self, tenant: &str) -> &TenantLimits {
        self.tenants.get(tenant).unwrap_or(&self.tenant_limits)
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
    fn the_ray_examples_load_and_their_storage_is_checked() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/ray");
        for f in ["server.yaml", "cluster.yaml"] {
            let text = std::fs::read_to_string(dir.join(f)).unwrap();
            let c: ServerConfig = serde_saphyr::from_str(&text).unwrap();
            c.validate().unwrap();
        }
        let text = std::fs::read_to_string(dir.join("cluster.yaml")).unwrap();
        let c: ServerConfig = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(
            c.ray.storage(&c.data_dir).unwrap(),
            Some(pharos_engine::config::RayStorage::Path(
                "/mnt/shared/pharos".into()
            ))
        );
        let mut c = ServerConfig {
            data_dir: "/srv/pharos".into(),
            ..Default::default()
        };
        for (storage, bad) in [
            ("s3://bucket/prefix/", None),
            ("/mnt/shared", None),
            ("relative/dir", Some("must be an absolute path")),
            (
                "/srv/pharos/ckpt",
                Some("overlaps the server's data directory"),
            ),
            ("/srv", Some("overlaps the server's data directory")),
            ("/mnt/../srv/pharos", Some("may not contain `..`")),
            ("://x", Some("is not a URL")),
            ("s3://a b", Some("without spaces")),
        ] {
            c.ray.storage = Some(storage.into());
            match (c.validate(), bad) {
                (Ok(()), None) => {}
                (Err(e), Some(want)) => assert!(e.to_string().contains(want), "{storage}: {e}"),
                (r, _) => panic!("{storage}: {r:?}"),
            }
        }
        c.ray.storage = Some("s3://bucket/prefix/".into());
        assert_eq!(
            c.ray.storage(&c.data_dir).unwrap(),
            Some(pharos_engine::config::RayStorage::Url(
                "s3://bucket/prefix".into()
            ))
        );
    }

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

    #[test]
    fn the_schedule_window_and_the_lease_are_bounded() {
        for (window, lease, bad) in [
            (1000, 5.0, None),
            (1, 1.0, None),
            (100_000, 600.0, None),
            (0, 5.0, Some("schedule_window must be 1-100000")),
            (100_001, 5.0, Some("schedule_window must be 1-100000")),
            (1000, 0.5, Some("election.lease_s must be 1-600")),
            (1000, 601.0, Some("election.lease_s must be 1-600")),
            (1000, f64::NAN, Some("election.lease_s must be 1-600")),
        ] {
            let mut c = ServerConfig {
                schedule_window: window,
                ..Default::default()
            };
            c.election.lease_s = lease;
            match (c.validate(), bad) {
                (Ok(()), None) => {}
                (Err(e), Some(want)) => assert!(e.to_string().contains(want), "{e}"),
                (got, want) => panic!("{window} {lease}: {got:?}, wanted {want:?}"),
            }
        }
        // Where services' routers run: only the two names.
        let c: Result<ServerConfig, _> = serde_saphyr::from_str("service_routers: elsewhere\n");
        assert!(c.is_err());
        let c: ServerConfig = serde_saphyr::from_str("service_routers: process\n").unwrap();
        assert_eq!(c.service_routers, Some(RouterPlacement::Process));
    }
}
