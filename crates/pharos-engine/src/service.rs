//! Inference services as engines see them: the spec a user applies ([`ServiceSpec`]),
//! the phases of a replica, and the [`ServiceEngine`] seam through which the server
//! asks an engine (local processes, Ray Serve, Kubernetes) to run a service's replicas.

use std::collections::BTreeMap;

use futures_util::future::BoxFuture;
use pharos_core::Slo;
use serde::{Deserialize, Serialize};

/// What a user applies: one inference service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// `[a-z0-9-]`, at most 40 characters.
    pub name: String,
    /// The program and arguments that start one replica; `$PORT` in an argument is the
    /// port it must listen on (also in the environment as PORT), `$HOST` the address
    /// (HOST; the local backend's replicas listen on loopback only). A program without a
    /// `/` is looked up next to the pharos executable, then in PATH. (Local backend.)
    #[serde(default)]
    pub command: Vec<String>,
    /// The Ray Serve application instead of a command (Ray backend).
    #[serde(default)]
    pub ray: Option<RayApp>,
    /// The container instead of a command (Kubernetes backend): pharos runs the
    /// replicas as a Deployment and owns its replica count.
    #[serde(default)]
    pub kubernetes: Option<KubeApp>,
    /// Extra environment of the replicas (they get PATH, HOME, PORT, SERVICE and
    /// REPLICA besides).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A replica is ready when a GET of this path answers 2xx.
    #[serde(default = "d_readiness")]
    pub readiness_path: String,
    /// vCPUs per replica (taken from the capacity shared with training jobs).
    #[serde(default = "d_one")]
    pub cpus: f64,
    /// GPUs per replica (Ray backend; the local backend gives GPUs to training jobs
    /// only: 0).
    #[serde(default)]
    pub gpus: u32,
    pub slo: Slo,
    /// What a request takes on one replica, seconds (model-based policies use it).
    pub processing_time_s: f64,
    #[serde(default = "d_one_u32")]
    pub min_replicas: u32,
    #[serde(default = "d_max")]
    pub max_replicas: u32,
    /// Replicas started when the service is created [default: min_replicas].
    #[serde(default)]
    pub initial_replicas: Option<u32>,
    /// Requests one replica is sent at once; more wait at the router.
    #[serde(default = "d_one_u32")]
    pub max_concurrent: u32,
    /// Requests the router queues before it drops (503).
    #[serde(default = "d_queue")]
    pub max_queue: usize,
    /// The router's port [default: a free one, kept across restarts].
    #[serde(default)]
    pub port: Option<u16>,
    /// A replica not ready after this long is abandoned (stopped, with an event).
    #[serde(default = "d_ready_timeout")]
    pub ready_timeout_s: f64,
    /// A request queued while no replica is ready gets 503 (with `Retry-After`) once
    /// it has waited this long and there is still none.
    #[serde(default = "d_unavailable_timeout")]
    pub unavailable_timeout_s: f64,
    /// Set by pharos on the services that run a function graph's functions (named
    /// `GRAPH.FUNCTION`); a spec a user applies has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph: Option<String>,
}

/// A Ray Serve application: pharos deploys it with `external_scaler_enabled` under the
/// route prefix `/<service name>` and sets its deployment's replica count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RayApp {
    /// `module:attribute` of the bound application, imported in `working_dir`.
    pub import_path: String,
    /// A directory on the server's machine with the application's code, uploaded to Ray
    /// as the application's working directory (`pharos apply` makes a relative one
    /// relative to the spec file).
    #[serde(default)]
    pub working_dir: Option<String>,
    /// The deployment pharos scales (the application's ingress).
    pub deployment: String,
}

/// A service's replicas on Kubernetes: a Deployment named after the service, in the
/// server's namespace, of pods running this container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeApp {
    pub image: String,
    /// The port the container serves on (also in its environment as PORT).
    #[serde(default = "d_container_port")]
    pub port: u16,
    /// The container's entrypoint and arguments [default: the image's].
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
}

fn d_container_port() -> u16 {
    8080
}

pub(crate) fn d_readiness() -> String {
    "/healthz".into()
}
pub(crate) fn d_one() -> f64 {
    1.0
}
pub(crate) fn d_one_u32() -> u32 {
    1
}
pub(crate) fn d_max() -> u32 {
    10
}
pub(crate) fn d_queue() -> usize {
    100
}
pub(crate) fn d_ready_timeout() -> f64 {
    60.0
}
pub(crate) fn d_unavailable_timeout() -> f64 {
    30.0
}

impl ServiceSpec {
    /// Parses YAML or JSON; the error names what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_named(text, "spec").map_err(|e| e.message)
    }

    /// Parses YAML or JSON named `source` in messages (a file's path); the error names
    /// the field's whole path, the line and what was expected.
    pub fn parse_named(text: &str, source: &str) -> Result<Self, crate::yaml::YamlError> {
        let spec: ServiceSpec = crate::yaml::parse(text, source)?;
        spec.validate()
            .map_err(|e| crate::yaml::invalid(source, &e))?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<(), String> {
        self.check_bounds().map_err(|e| e.to_string())?;
        let n = &self.name;
        // A graph's function: GRAPH.FUNCTION.
        let plain = match &self.graph {
            Some(g) => n
                .strip_prefix(g.as_str())
                .and_then(|f| f.strip_prefix('.'))
                .unwrap_or(""),
            None => n,
        };
        if plain.is_empty()
            || n.len() > 40
            || !plain
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!(
                "name: {n:?} must be 1-40 characters of a-z, 0-9 and -"
            ));
        }
        let engines = [
            !self.command.is_empty(),
            self.ray.is_some(),
            self.kubernetes.is_some(),
        ];
        if engines.iter().filter(|b| **b).count() > 1 {
            return Err("command, ray, kubernetes: give one (a command for the local backend, a Serve application for Ray, a container for Kubernetes)".into());
        }
        if let Some(k) = &self.kubernetes {
            if k.image.trim().is_empty() {
                return Err("kubernetes.image: a container image is required".into());
            }
            if k.port == 0 {
                return Err("kubernetes.port: must be a port number (1-65535)".into());
            }
        }
        match &self.ray {
            None if self.kubernetes.is_none()
                && (self.command.is_empty() || self.command[0].is_empty()) =>
            {
                return Err("command: a program to run is required".into());
            }
            Some(r)
                if !r.import_path.contains([':', '.']) || r.import_path.starts_with([':', '.']) =>
            {
                return Err(format!(
                    "ray.import_path: {:?} must be module:attribute",
                    r.import_path
                ));
            }
            Some(r) if r.deployment.is_empty() || r.deployment.contains('/') => {
                return Err(format!(
                    "ray.deployment: {:?} must be a deployment's name",
                    r.deployment
                ));
            }
            _ => {}
        }
        if !self.readiness_path.starts_with('/') {
            return Err("readiness_path: must start with /".into());
        }
        if !(self.cpus.is_finite() && self.cpus > 0.0) {
            return Err("cpus: must be positive".into());
        }
        if self.gpus > 0 && self.ray.is_none() && self.kubernetes.is_none() {
            return Err(
                "gpus: replicas with GPUs are not supported by the local backend (training jobs get GPUs)"
                    .into(),
            );
        }
        if !(self.slo.latency_s.is_finite() && self.slo.latency_s > 0.0) {
            return Err("slo.latency_s: must be positive".into());
        }
        if !(self.slo.percentile > 0.0 && self.slo.percentile < 100.0) {
            return Err("slo.percentile: must be in (0, 100)".into());
        }
        if !(self.processing_time_s.is_finite() && self.processing_time_s > 0.0) {
            return Err("processing_time_s: must be positive".into());
        }
        if self.max_replicas == 0 || self.min_replicas > self.max_replicas {
            return Err("min_replicas, max_replicas: need 0 <= min <= max and max >= 1".into());
        }
        if let Some(i) = self.initial_replicas
            && (i < self.min_replicas || i > self.max_replicas)
        {
            return Err("initial_replicas: must be within min_replicas..=max_replicas".into());
        }
        if self.max_concurrent == 0 {
            return Err("max_concurrent: must be at least 1".into());
        }
        if !(self.ready_timeout_s.is_finite() && self.ready_timeout_s > 0.0) {
            return Err("ready_timeout_s: must be positive".into());
        }
        for k in self.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(format!("env: {k:?} is not a variable name"));
            }
        }
        Ok(())
    }

    /// Every number and size within its documented range (`docs/limits.md`).
    fn check_bounds(&self) -> Result<(), pharos_core::SpecError> {
        use pharos_core::limits::*;
        check_count("command", self.command.len(), MAX_ARGS)?;
        for (i, a) in self.command.iter().enumerate() {
            check_len(&format!("command[{i}]"), a, MAX_PATH)?;
        }
        check_count("env", self.env.len(), MAX_ENV)?;
        for (k, v) in &self.env {
            check_len("env", k, MAX_SHORT)?;
            check_len(&format!("env.{k}"), v, MAX_PATH)?;
        }
        check_len("readiness_path", &self.readiness_path, MAX_PATH)?;
        check_f64("cpus", self.cpus, MIN_CPUS, MAX_CPUS)?;
        check_int("gpus", self.gpus, 0, MAX_GPUS)?;
        check_positive_at_most("slo.latency_s", self.slo.latency_s, MAX_LATENCY_S)?;
        check_positive_at_most("processing_time_s", self.processing_time_s, MAX_LATENCY_S)?;
        check_int("max_replicas", self.max_replicas, 1, MAX_REPLICAS)?;
        check_int("min_replicas", self.min_replicas, 0, MAX_REPLICAS)?;
        if let Some(i) = self.initial_replicas {
            check_int("initial_replicas", i, 0, MAX_REPLICAS)?;
        }
        check_int("max_concurrent", self.max_concurrent, 1, MAX_CONCURRENT)?;
        check_int("max_queue", self.max_queue, 0, MAX_QUEUE)?;
        if let Some(p) = self.port {
            check_int("port", p, MIN_PORT, u16::MAX)?;
        }
        check_positive_at_most("ready_timeout_s", self.ready_timeout_s, MAX_TIMEOUT_S)?;
        check_positive_at_most(
            "unavailable_timeout_s",
            self.unavailable_timeout_s,
            MAX_TIMEOUT_S,
        )?;
        if let Some(r) = &self.ray {
            check_len("ray.import_path", &r.import_path, MAX_SHORT * 2)?;
            check_len("ray.deployment", &r.deployment, MAX_SHORT)?;
            if let Some(w) = &r.working_dir {
                check_len("ray.working_dir", w, MAX_PATH)?;
            }
        }
        if let Some(k) = &self.kubernetes {
            check_len("kubernetes.image", &k.image, MAX_PATH)?;
            check_count("kubernetes.command", k.command.len(), MAX_ARGS)?;
            check_count("kubernetes.args", k.args.len(), MAX_ARGS)?;
            for a in k.command.iter().chain(&k.args) {
                check_len("kubernetes.args", a, MAX_PATH)?;
            }
        }
        if self
            .command
            .iter()
            .chain(self.env.values())
            .chain(self.env.keys())
            .any(|a| a.contains('\0'))
        {
            return Err(pharos_core::SpecError::new(
                "command",
                "arguments and environment must not contain NUL bytes",
            ));
        }
        Ok(())
    }

    /// Fields that cannot change while replicas run (they define the replicas or the
    /// router); the first that differs.
    pub fn fixed_change(&self, new: &ServiceSpec) -> Option<&'static str> {
        if self.command != new.command {
            Some("command")
        } else if self.ray != new.ray {
            Some("ray")
        } else if self.kubernetes != new.kubernetes {
            Some("kubernetes")
        } else if self.gpus != new.gpus {
            Some("gpus")
        } else if self.env != new.env {
            Some("env")
        } else if self.readiness_path != new.readiness_path {
            Some("readiness_path")
        } else if self.cpus != new.cpus {
            Some("cpus")
        } else if self.max_concurrent != new.max_concurrent {
            Some("max_concurrent")
        } else if self.max_queue != new.max_queue {
            Some("max_queue")
        } else if new.port.is_some() && self.port != new.port {
            Some("port")
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Started, not answering its readiness path yet.
    Starting,
    /// Taking traffic.
    Ready,
    /// Removed from the router; stopped once its requests are done.
    Draining,
    /// SIGTERM sent (SIGKILL after the grace).
    Stopping,
}

/// One service as the engine should make it.
#[derive(Debug, Clone)]
pub struct Want {
    pub name: String,
    pub spec: ServiceSpec,
    /// Replicas the autoscaler (or the API) wants.
    pub target: u32,
    /// Deleted: everything of it should go.
    pub deleting: bool,
    /// The vCPUs the replicas of all services may hold together (the capacity pharos
    /// plans with, less what training holds; the same in every want of a pass). The
    /// local engine starts no replica beyond it; an engine whose cluster places
    /// replicas itself may ignore it.
    pub capacity_cpus: f64,
    /// Requests the service's router has in flight at each replica URL it still
    /// sends to or waits on; a URL absent has left the router (a draining replica
    /// absent here is done).
    pub in_flight: BTreeMap<String, u32>,
    /// The user the replicas run as, where they run on this machine (sandboxed).
    pub run_as: Option<crate::sandbox::RunAs>,
}

/// One replica as the engine reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineReplica {
    pub id: String,
    pub phase: Phase,
    /// Where the router sends requests, for a ready replica (`http://10.1.2.3:8080`).
    pub url: Option<String>,
    /// The process, where the engine runs replicas as processes on this machine.
    pub process: Option<ReplicaProcess>,
}

/// A replica that is a process on this machine.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaProcess {
    pub pid: i32,
    pub port: u16,
    pub started_ms: i64,
    /// Seconds from its start to its first ready answer (None: not ready yet, or
    /// adopted from an earlier server, which did not see it start).
    pub cold_start_s: Option<f64>,
    /// Started by an earlier server and adopted after a restart.
    pub adopted: bool,
}

/// What the engine runs of one service.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub name: String,
    /// Something of the service still exists on the engine (a deleted service leaves
    /// once nothing does).
    pub present: bool,
    pub replicas: Vec<EngineReplica>,
    /// The engine's word for the service's state, and why (for the API).
    pub status: String,
    pub message: String,
    /// Events for the service (kind, message), each said once by the engine.
    pub events: Vec<(&'static str, String)>,
    /// Its replicas keep failing to start (crash loop): what failed and when the
    /// next try is. The server raises no target while this is said.
    pub failing: Option<String>,
}

/// An engine that runs services' replicas. `sync` is called once per pass with every
/// service; it must be idempotent (a restarted server calls it with the same wants).
pub trait ServiceEngine: Send + Sync + 'static {
    /// `kubernetes`: also the name of the spec's field this engine reads.
    fn name(&self) -> &'static str;
    /// The events when it stops and starts answering.
    fn event_kinds(&self) -> (&'static str, &'static str) {
        ("engine-unavailable", "engine-available")
    }
    /// Whether this engine can run `spec` (the error names the field).
    fn check(&self, spec: &ServiceSpec) -> Result<(), String>;
    /// Whether the replicas run on this machine (as tenants' users, when sandboxed).
    fn runs_here(&self) -> bool {
        false
    }
    /// The engine's alive nodes as last seen (a cluster whose nodes come and go), for
    /// pharos's view of the capacity; None when the engine has no such view (the
    /// configured capacity stands).
    fn nodes(&self) -> Option<Vec<pharos_core::Node>> {
        None
    }
    /// Whether it resizes running replicas in place when a want's `spec.cpus` changes
    /// (otherwise a service's vCPUs per replica are fixed while it runs).
    fn resizes(&self) -> bool {
        false
    }
    /// The replicas' output files of `service` on this machine, by replica id (oldest
    /// first; stopped replicas' too while the service exists); empty when this engine
    /// keeps none here.
    fn replica_logs(&self, _service: &str) -> Vec<(String, std::path::PathBuf)> {
        Vec::new()
    }
    /// How long replica `replica`'s log was at `unix_ms` (bytes; 0 before what is
    /// known), to within the engine's sampling of it.
    fn log_offset_at(&self, _service: &str, _replica: &str, _unix_ms: i64) -> u64 {
        0
    }
    /// Brings the engine toward `wants` and reports what runs (one report per want).
    /// An error means the engine could not be asked (nothing is known).
    fn sync<'a>(&'a self, wants: &'a [Want]) -> BoxFuture<'a, Result<Vec<Report>, String>>;
}
