//! Inference services: each is a router (see [`crate::router`]) on its own port in front
//! of replicas that an engine runs - local processes (`pharos-local`), Ray Serve or
//! Kubernetes, all behind the `pharos_engine::ServiceEngine` seam - and one autoscaler
//! for all of them runs an inference policy (the same objects, through the same driver,
//! as the simulator) on the routers' live counters.
//!
//! The store holds the services (their specs, router ports and targets); what runs is
//! the engine's to know and to report every pass.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pharos_core::{ClusterView, InferencePolicy, JobCounters, JobView};
use pharos_engine::host::LockExt;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::AppState;
use crate::error::ApiError;
use crate::router::Router;
use crate::store::now_ms;
use autoscale::{Autoscaler, DecisionRecord, autoscale};
use axum::http::StatusCode;
pub use pharos_engine::service::{KubeApp, Phase, RayApp, ServiceSpec};

mod autoscale;
pub mod engine;
mod graph_scale;
mod history;
mod learning;

pub use history::{ClusterPoint, ServicePoint};

struct Svc {
    spec: ServiceSpec,
    tenant: String,
    port: u16,
    router: Arc<Router>,
    listener: Option<tokio::task::JoinHandle<()>>,
    router_error: Option<String>,
    target: u32,
    /// Measured cold starts (process start to ready).
    cold_starts: ColdStarts,
    /// Its per-minute load history (see [`learning`]).
    hist: learning::SvcHistory,
    deleting: bool,
    events_seq: i64,
    /// The target as last written to the store.
    stored_target: Option<u32>,
    /// The replicas the engine last reported (and what it said of the service).
    remote: engine::RemoteSvc,
    /// Raised targets not yet served: when each was decided and how many replicas.
    scale_ups: Vec<(Instant, u32)>,
    /// Decision to serving, per scale-up, seconds (the control latency).
    control_latencies: Vec<f64>,
    /// The user its replicas run as (an engine that runs them here, sandboxed).
    run_as: Option<pharos_engine::sandbox::RunAs>,
    /// vCPUs per replica the graph autoscaler chose (within its function's range; an
    /// engine that resizes replicas only); `None`: the spec's.
    size: Option<f64>,
    /// Why replicas of its target wait for capacity, as of the last pass.
    unschedulable: Option<String>,
}

impl Svc {
    /// Its conditions, as Kubernetes states them (type, status, reason, message): always
    /// `Ready`; `Unschedulable`, `CrashLoop`, `EngineUnavailable` and `RouterFailed`
    /// while they hold.
    fn conditions(&self) -> Vec<Value> {
        let ready = self.count(Phase::Ready);
        let starting = self.count(Phase::Starting);
        let is_ready = !self.deleting && ready >= self.target;
        let mut c = vec![json!({
            "type": "Ready",
            "status": if is_ready { "True" } else { "False" },
            "reason": if self.deleting {
                "Deleting"
            } else if is_ready {
                "TargetReady"
            } else if starting > 0 {
                "Starting"
            } else {
                "Waiting"
            },
            "message": format!("{ready} of {} replicas ready, {starting} starting", self.target),
        })];
        let mut add = |kind: &str, reason: &str, message: &str| {
            c.push(json!({"type": kind, "status": "True", "reason": reason, "message": message}));
        };
        if let Some(m) = &self.unschedulable {
            add("Unschedulable", "InsufficientCapacity", m);
        }
        if let Some(m) = &self.remote.failing {
            add("CrashLoop", "ReplicasFailToStart", m);
        }
        if self.remote.told_unavailable {
            add(
                "EngineUnavailable",
                "EngineUnreachable",
                "the engine does not answer; the last known replicas serve",
            );
        }
        if let Some(e) = &self.router_error {
            add("RouterFailed", "ListenFailed", e);
        }
        if let Some(e) = self.router.process().and_then(|p| p.unreachable()) {
            add(
                "RouterFailed",
                "RouterProcessUnreachable",
                &format!("the router process does not answer: {e}"),
            );
        }
        c
    }

    /// vCPUs each replica has (or is being resized to).
    fn cpus(&self) -> f64 {
        self.size.unwrap_or(self.spec.cpus)
    }

    /// Replicas in phase `p`, as the engine last reported them.
    fn count(&self, p: Phase) -> u32 {
        self.remote.replicas.iter().filter(|r| r.phase == p).count() as u32
    }

    /// Replicas that hold capacity (any phase: a stopping replica still runs).
    fn held_replicas(&self) -> u32 {
        self.remote.replicas.len() as u32
    }

    /// Ends the pending scale-up measurements that enough replicas now serve.
    fn note_served(&mut self, events: &mut Events) {
        let ready = self.count(Phase::Ready);
        let name = self.spec.name.clone();
        let lat = &mut self.control_latencies;
        self.scale_ups.retain(|&(t0, want)| {
            if ready < want {
                return true;
            }
            let s = t0.elapsed().as_secs_f64();
            lat.push(s);
            events.push((
                name.clone(),
                "served",
                format!("{want} replica(s) serving {s:.3} s after the decision"),
            ));
            false
        });
    }

    /// What an autoscaler's target `t` may be: replicas that cannot start are not asked
    /// for in greater numbers while the crash loop lasts (but a service at zero may go
    /// to one, so that it is tried again).
    fn allowed_target(&self, t: u32) -> u32 {
        if self.remote.failing.is_some() {
            t.min(self.target.max(1))
        } else {
            t
        }
    }

    /// A new target: a raise is measured until it serves; a cut forgets the raises it
    /// undoes.
    fn set_target(&mut self, t: u32) {
        if t > self.count(Phase::Ready) && t > self.target {
            self.scale_ups.push((Instant::now(), t));
        }
        self.scale_ups.retain(|&(_, want)| want <= t);
        self.target = t;
    }
}

/// Every service's runtime, owned by the services loop and the API.
pub struct Services {
    inner: Mutex<Inner>,
    /// The engine that runs the replicas (none wired: services are refused).
    engine: Option<Arc<dyn pharos_engine::ServiceEngine>>,
    held_now: std::sync::Mutex<Vec<(f64, u32)>>,
    /// vCPUs held by training jobs, as of the controller's last scheduling pass.
    training_cpus_bits: std::sync::atomic::AtomicU64,
    /// The services loop's latest periods (pass start to pass start), seconds.
    periods: std::sync::Mutex<std::collections::VecDeque<f64>>,
    /// The engine's alive nodes as last reported (an engine with a view of its
    /// cluster's nodes: Ray), by name.
    cluster: std::sync::Mutex<Option<BTreeMap<String, pharos_core::Node>>>,
}

/// Loop periods kept for their percentiles.
const PERIODS_KEPT: usize = 3000;

struct Inner {
    svcs: BTreeMap<String, Svc>,
    autoscaler: Option<Autoscaler>,
    /// The function graphs' autoscaler (see [`graph_scale`]).
    graph_scaler: Option<graph_scale::GraphScaler>,
    /// The forecaster fitted in the background, and when to fit next.
    learn: learning::Learner,
    /// The autoscaler's decisions that changed something, newest last (at most
    /// [`DECISIONS_KEPT`]), with what the policy was shown.
    decisions: std::collections::VecDeque<DecisionRecord>,
    /// Calls of the policy since the server started, and the last one's time.
    calls: u64,
    last_call_ms: Option<i64>,
    /// Ages of the replica states shown to the policy: count, sum, max (seconds).
    state_age: AgeStats,
    /// The engine loop's back-off while the engine is unreachable.
    engine: engine::EngineLoop,
    /// Samples for the dashboard.
    history: history::History,
    /// Stored services whose specs are no longer valid: name -> (tenant, why). They do
    /// not run; their owner sees why, and may apply them again (replacing the stored
    /// spec) or delete them.
    invalid: BTreeMap<String, (String, String)>,
}

/// Ages of the replica states shown to the policy, seconds.
#[derive(Default)]
struct AgeStats {
    count: u64,
    sum_s: f64,
    max_s: f64,
}

const DECISIONS_KEPT: usize = 200;

impl Default for Services {
    fn default() -> Self {
        Self::with_engine(None)
    }
}

impl Services {
    /// Services whose replicas `engine` runs (without one, none can be applied).
    /// Whether the engine resizes running replicas (a graph function may then have a
    /// range of vCPUs per replica).
    pub fn engine_resizes(&self) -> bool {
        self.engine.as_ref().is_some_and(|e| e.resizes())
    }

    pub fn with_engine(engine: Option<Arc<dyn pharos_engine::ServiceEngine>>) -> Self {
        Self {
            engine,
            inner: Mutex::new(Inner {
                svcs: BTreeMap::new(),
                autoscaler: None,
                graph_scaler: None,
                learn: learning::Learner::default(),
                decisions: std::collections::VecDeque::new(),
                calls: 0,
                last_call_ms: None,
                state_age: AgeStats::default(),
                engine: engine::EngineLoop::default(),
                history: history::History::default(),
                invalid: BTreeMap::new(),
            }),
            held_now: std::sync::Mutex::new(Vec::new()),
            training_cpus_bits: std::sync::atomic::AtomicU64::new(0),
            cluster: std::sync::Mutex::new(None),
            periods: std::sync::Mutex::new(std::collections::VecDeque::new()),
        }
    }
}

/// The port a new router or graph entry listens on - the one asked for, else a free one
/// - and its listener. `taken`: whether a port belongs to another service or graph.
pub(crate) async fn listen_on(
    host: &str,
    port: Option<u16>,
    taken: impl Fn(u16) -> bool,
) -> Result<(u16, tokio::net::TcpListener), ApiError> {
    let port = match port {
        Some(p) => p,
        None => pharos_engine::host::free_port(host)
            .map_err(|e| ApiError::internal(format!("no free port: {e}")))?,
    };
    if taken(port) {
        return Err(ApiError::at(
            StatusCode::CONFLICT,
            "port",
            format!("port: {port} is taken by another service or graph"),
        ));
    }
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .map_err(|e| {
            ApiError::at(
                StatusCode::CONFLICT,
                "port",
                format!("port: cannot listen on {host}:{port}: {e}"),
            )
        })?;
    Ok((port, listener))
}

/// Serves `app` (a router's or a graph entry's) on `listener` until the task is aborted.
pub(crate) fn spawn_listener(
    what: &'static str,
    app: axum::Router,
    listener: tokio::net::TcpListener,
    limits: crate::config::ListenerConfig,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = crate::listen::serve(listener, app, &limits, std::future::pending()).await {
            warn!("{what} stopped: {e}");
        }
    })
}

pub(crate) fn host_of(listen: &str) -> String {
    match listen.rsplit_once(':') {
        Some((h, _)) if !h.is_empty() => h.trim_matches(['[', ']']).to_string(),
        _ => "127.0.0.1".into(),
    }
}

/// A service's measured cold starts: how many, and the latest [`ColdStarts::KEPT`].
#[derive(Debug, Default)]
pub(crate) struct ColdStarts {
    count: u64,
    latest: std::collections::VecDeque<f64>,
}

impl ColdStarts {
    /// Cold starts kept (a replica that keeps crashing must not grow the status).
    const KEPT: usize = 100;
    /// Cold starts averaged for the autoscaler's actuation delay.
    const PLANNED: usize = 5;

    fn push(&mut self, s: f64) {
        self.count += 1;
        if self.latest.len() == Self::KEPT {
            self.latest.pop_front();
        }
        self.latest.push_back(s);
    }

    /// The mean of the latest few: what a replica started now is expected to take.
    fn expected_s(&self) -> Option<f64> {
        let n = self.latest.len().min(Self::PLANNED);
        (n > 0).then(|| self.latest.iter().rev().take(n).sum::<f64>() / n as f64)
    }

    fn status(&self) -> Value {
        let mean = (!self.latest.is_empty())
            .then(|| self.latest.iter().sum::<f64>() / self.latest.len() as f64);
        json!({
            "count": self.count,
            "mean": mean,
            "expected": self.expected_s(),
            "latest": self.latest,
        })
    }
}

impl Services {
    /// A service's status as the API shows it.
    fn status(&self, s: &Svc, host: &str) -> Value {
        let st = s.router.stats();
        let count = |p: Phase| s.count(p);
        json!({
            "name": s.spec.name,
            "tenant": s.tenant,
            "url": format!("http://{host}:{}", s.port),
            "router_error": s.router_error,
            "target_replicas": s.target,
            "cpus_per_replica": s.cpus(),
            "ready_replicas": count(Phase::Ready),
            "starting_replicas": count(Phase::Starting),
            "stopping_replicas": count(Phase::Draining) + count(Phase::Stopping),
            "accept_rate": st.accept_rate,
            "queued": st.queued,
            "in_flight": st.in_flight,
            "counters": st.counters,
            "cold_start_s": s.cold_starts.status(),
            "replicas": s.remote.replicas.iter().map(|r| match &r.process {
                // A process's id is its number on this machine.
                Some(p) => json!({
                    "id": r.id.parse::<u64>().map_or_else(|_| json!(r.id), |n| json!(n)), "pid": p.pid, "port": p.port, "phase": r.phase,
                    "started_ms": p.started_ms, "cold_start_s": p.cold_start_s, "adopted": p.adopted,
                }),
                None => json!({"id": r.id, "phase": r.phase}),
            }).collect::<Vec<_>>(),
            "control_latency_s": {
                "count": s.control_latencies.len(),
                "mean": (!s.control_latencies.is_empty())
                    .then(|| s.control_latencies.iter().sum::<f64>() / s.control_latencies.len() as f64),
                "all": s.control_latencies,
            },
            "engine": self.engine.as_ref().map(|e| json!({
                "name": e.name(),
                "status": s.remote.status,
                "message": s.remote.message,
                "seen_age_s": s.remote.seen.map(|t| t.elapsed().as_secs_f64()),
            })),
            "deleting": s.deleting,
            "conditions": s.conditions(),
            "forecast": s.hist.forecast,
            "spec": s.spec,
        })
    }

    /// Every service's (and graph function's) metrics in Prometheus' text format, with
    /// the conventional names: requests by outcome, a latency histogram, replicas by
    /// phase, the target, queue, requests in flight and accept rate.
    pub async fn prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        let g = self.inner.lock().await;
        let live: Vec<&Svc> = g.svcs.values().filter(|s| !s.deleting).collect();
        if live.is_empty() {
            return;
        }
        let stats: Vec<_> = live.iter().map(|s| (s, s.router.stats())).collect();
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            out,
            "pharos_service_requests_total",
            "counter",
            "requests that reached the service's router: arrived counts each once, the other outcomes say what became of them (each request at most one; the rest are queued or in flight)",
        );
        for (s, st) in &stats {
            let c = &st.counters;
            let n = &s.spec.name;
            // `dropped` counts the admission's and the unavailable ones too: here it is
            // the full queue's alone.
            let queue_full = c.dropped.saturating_sub(c.rejected + c.unavailable);
            for (outcome, v) in [
                ("arrived", c.arrivals),
                ("completed", c.completed),
                ("failed", c.failed),
                ("dropped", queue_full),
                ("rejected", c.rejected),
                ("timed_out", c.timeouts),
                ("unavailable", c.unavailable),
            ] {
                let _ = writeln!(
                    out,
                    "pharos_service_requests_total{{service=\"{n}\",outcome=\"{outcome}\"}} {v}"
                );
            }
        }
        family(
            out,
            "pharos_service_requests_over_slo_total",
            "counter",
            "completed requests slower than the service's SLO latency",
        );
        for (s, st) in &stats {
            let _ = writeln!(
                out,
                "pharos_service_requests_over_slo_total{{service=\"{}\"}} {}",
                s.spec.name, st.counters.over_slo
            );
        }
        family(
            out,
            "pharos_service_request_duration_seconds",
            "histogram",
            "latency of completed requests at the router, seconds",
        );
        for (s, st) in &stats {
            let n = &s.spec.name;
            let h = s.router.histogram();
            for (ub, count) in crate::router::LATENCY_BUCKETS_S.iter().zip(&h) {
                let _ = writeln!(
                    out,
                    "pharos_service_request_duration_seconds_bucket{{service=\"{n}\",le=\"{ub}\"}} {count}"
                );
            }
            let all = h.last().copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "pharos_service_request_duration_seconds_bucket{{service=\"{n}\",le=\"+Inf\"}} {all}\n\
                 pharos_service_request_duration_seconds_sum{{service=\"{n}\"}} {}\n\
                 pharos_service_request_duration_seconds_count{{service=\"{n}\"}} {all}",
                st.counters.latency_sum_s
            );
        }
        family(
            out,
            "pharos_service_replicas",
            "gauge",
            "replicas by phase, as the engine last reported them",
        );
        for (s, _) in &stats {
            let n = &s.spec.name;
            for (phase, p) in [
                ("ready", Phase::Ready),
                ("starting", Phase::Starting),
                ("draining", Phase::Draining),
                ("stopping", Phase::Stopping),
            ] {
                let _ = writeln!(
                    out,
                    "pharos_service_replicas{{service=\"{n}\",phase=\"{phase}\"}} {}",
                    s.count(p)
                );
            }
        }
        type Gauge = fn(&Svc, &crate::router::Stats) -> f64;
        let gauges: [(&str, &str, Gauge); 5] = [
            (
                "pharos_service_target_replicas",
                "the autoscaler's target",
                |s, _| s.target as f64,
            ),
            (
                "pharos_service_cpus_per_replica",
                "vCPUs each replica holds",
                |s, _| s.cpus(),
            ),
            (
                "pharos_service_queued_requests",
                "requests waiting at the router",
                |_, st| st.queued as f64,
            ),
            (
                "pharos_service_in_flight_requests",
                "requests at replicas",
                |_, st| st.in_flight as f64,
            ),
            (
                "pharos_service_accept_rate",
                "the share of arrivals the router admits",
                |_, st| st.accept_rate,
            ),
        ];
        for (name, help, f) in gauges {
            family(out, name, "gauge", help);
            for (s, st) in &stats {
                let _ = writeln!(out, "{name}{{service=\"{}\"}} {}", s.spec.name, f(s, st));
            }
        }
        family(
            out,
            "pharos_service_condition",
            "gauge",
            "1 while the condition holds (Ready is 1 when ready, 0 when not)",
        );
        for (s, _) in &stats {
            for c in s.conditions() {
                let _ = writeln!(
                    out,
                    "pharos_service_condition{{service=\"{}\",condition=\"{}\"}} {}",
                    s.spec.name,
                    c["type"].as_str().unwrap_or("?"),
                    u8::from(c["status"] == "True")
                );
            }
        }
    }

    /// The services loop's periods over the last [`PERIODS_KEPT`] passes: (count, p50,
    /// p99, max) in seconds (nearest rank).
    pub fn loop_periods(&self) -> (usize, Option<f64>, Option<f64>, Option<f64>) {
        let mut v: Vec<f64> = self.periods.lock_or_recover().iter().copied().collect();
        let n = v.len();
        let p50 = history::percentile(&mut v, 50.0);
        let p99 = history::percentile(&mut v, 99.0);
        (n, p50, p99, v.last().copied())
    }

    pub async fn list(&self, state: &AppState, tenant: Option<&str>) -> Vec<Value> {
        let g = self.inner.lock().await;
        let host = host_of(&state.config.listen);
        g.svcs
            .values()
            .filter(|s| !s.deleting && tenant.is_none_or(|t| t == s.tenant))
            .map(|s| self.status(s, &host))
            .collect()
    }

    pub async fn get(&self, state: &AppState, name: &str, tenant: Option<&str>) -> Option<Value> {
        let g = self.inner.lock().await;
        if let Some((t, why)) = g.invalid.get(name)
            && tenant.is_none_or(|x| x == t)
        {
            return Some(json!({
                "name": name,
                "tenant": t,
                "invalid_spec": why,
                "message": "not running: its stored spec is not valid; apply it again or delete it",
            }));
        }
        let s = g.svcs.get(name)?;
        if s.deleting || tenant.is_some_and(|t| t != s.tenant) {
            return None;
        }
        Some(self.status(s, &host_of(&state.config.listen)))
    }

    /// Several services' status under one lock (`None` for one missing or being deleted).
    pub async fn get_many(&self, state: &AppState, names: &[String]) -> Vec<Option<Value>> {
        let host = host_of(&state.config.listen);
        let g = self.inner.lock().await;
        names
            .iter()
            .map(|n| {
                let s = g.svcs.get(n).filter(|s| !s.deleting)?;
                Some(self.status(s, &host))
            })
            .collect()
    }

    /// The function graphs' autoscaler: its policy, calls and decision times.
    pub async fn graph_autoscaler(&self, state: &AppState) -> Value {
        let policy = &state.config.graph_autoscaler.policy;
        let g = self.inner.lock().await;
        match &g.graph_scaler {
            Some(s) => s.status(policy),
            None => json!({ "policy": policy, "calls": 0 }),
        }
    }

    /// The output files of a service's replicas, by replica id, oldest first, for
    /// `tenant` (None: the admin); None when it may not see such a service, an error
    /// when its engine keeps no logs here.
    pub async fn replica_logs(
        &self,
        name: &str,
        tenant: Option<&str>,
    ) -> Option<Result<Vec<(String, std::path::PathBuf)>, String>> {
        let visible = {
            let g = self.inner.lock().await;
            g.svcs
                .get(name)
                .is_some_and(|s| !s.deleting && tenant.is_none_or(|t| t == s.tenant))
        };
        if !visible {
            return None;
        }
        let engine = self.engine.as_ref()?;
        if !engine.runs_here() {
            return Some(Err(format!(
                "the {} engine keeps the replicas' output itself; read it there",
                engine.name()
            )));
        }
        Some(Ok(engine.replica_logs(name)))
    }

    /// How long a replica's log was at `unix_ms` (see `ServiceEngine::log_offset_at`).
    pub fn log_offset_at(&self, name: &str, replica: &str, unix_ms: i64) -> u64 {
        self.engine
            .as_ref()
            .map_or(0, |e| e.log_offset_at(name, replica, unix_ms))
    }

    /// Whether the engine last reported this replica of this service (running).
    pub async fn replica_reported(&self, name: &str, replica: &str) -> bool {
        let g = self.inner.lock().await;
        g.svcs
            .get(name)
            .is_some_and(|s| s.remote.replicas.iter().any(|r| r.id == replica))
    }

    /// What each service holds, for `GET /v1/cluster`: name, tenant, vCPUs per
    /// replica, replicas held (any phase), target, and why replicas wait (if they do).
    pub async fn holdings(&self) -> Vec<(String, String, f64, u32, u32, Option<String>)> {
        let g = self.inner.lock().await;
        g.svcs
            .values()
            .map(|s| {
                (
                    s.spec.name.clone(),
                    s.tenant.clone(),
                    s.cpus(),
                    s.held_replicas(),
                    s.target,
                    s.unschedulable.clone(),
                )
            })
            .collect()
    }

    /// Whether a service of this name exists (any tenant's, or one being deleted).
    pub async fn exists(&self, name: &str) -> bool {
        let g = self.inner.lock().await;
        g.svcs.contains_key(name) || g.invalid.contains_key(name)
    }

    /// The ports the services' routers listen on.
    pub async fn ports(&self) -> std::collections::HashSet<u16> {
        self.inner
            .lock()
            .await
            .svcs
            .values()
            .map(|s| s.port)
            .collect()
    }

    /// A service's router (not one being deleted).
    pub async fn router(&self, name: &str) -> Option<Arc<Router>> {
        let g = self.inner.lock().await;
        g.svcs
            .get(name)
            .filter(|s| !s.deleting)
            .map(|s| s.router.clone())
    }

    /// The graph a service runs a function of.
    pub async fn graph_of(&self, name: &str) -> Option<String> {
        let g = self.inner.lock().await;
        g.svcs.get(name).and_then(|s| s.spec.graph.clone())
    }

    /// Per service, (vCPUs per replica, replicas) held now (any phase: a stopping
    /// replica still runs), as of the services loop's last pass.
    pub fn held(&self) -> Vec<(f64, u32)> {
        self.held_now.lock_or_recover().clone()
    }

    /// Called by the controller with the vCPUs its running training jobs hold.
    pub fn set_training_cpus(&self, cpus: f64) {
        self.training_cpus_bits
            .store(cpus.to_bits(), std::sync::atomic::Ordering::Relaxed);
    }

    /// vCPUs training jobs hold, as of the controller's last pass.
    fn training_cpus(&self) -> f64 {
        f64::from_bits(
            self.training_cpus_bits
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// What training jobs leave of the capacity.
    pub(crate) fn capacity_left(&self, state: &AppState) -> f64 {
        self.capacity_cpus(state) - self.training_cpus()
    }

    /// The vCPUs pharos gives out now: `capacity.cpus`, or what the engine's alive
    /// nodes have when that is less (nodes of a cluster come and go).
    pub fn capacity_cpus(&self, state: &AppState) -> f64 {
        let configured = state.config.capacity.cpus;
        match &*self.cluster.lock_or_recover() {
            Some(nodes) => configured.min(nodes.values().map(|n| n.cpus).sum()),
            None => configured,
        }
    }

    /// Takes the engine's alive nodes; nodes that joined or left are logged.
    pub(crate) fn set_cluster(&self, nodes: Vec<pharos_core::Node>) {
        let now: BTreeMap<String, pharos_core::Node> =
            nodes.into_iter().map(|n| (n.name.clone(), n)).collect();
        let mut g = self.cluster.lock_or_recover();
        if let Some(before) = g.as_ref() {
            let total: f64 = now.values().map(|n| n.cpus).sum();
            for name in before.keys().filter(|k| !now.contains_key(*k)) {
                warn!(
                    node = name,
                    "a node of the cluster left; {total} vCPUs on {} node(s) now",
                    now.len()
                );
            }
            for name in now.keys().filter(|k| !before.contains_key(*k)) {
                tracing::info!(
                    node = name,
                    "a node joined the cluster; {total} vCPUs on {} node(s) now",
                    now.len()
                );
            }
        }
        *g = Some(now);
    }

    /// Creates or updates a service. Errors: (status code, message).
    pub async fn apply(
        &self,
        state: &AppState,
        tenant: &str,
        limits: Option<&crate::config::TenantLimits>,
        spec: ServiceSpec,
    ) -> Result<(bool, Value), ApiError> {
        // A tenant's Ray application code comes only from the directories the admin
        // named: without ray.code_roots a tenant could ship any directory the server
        // can read to the cluster, where its own code reads it.
        if limits.is_some()
            && spec.ray.as_ref().is_some_and(|r| r.working_dir.is_some())
            && state.config.ray.code_roots.is_empty()
        {
            return Err(ApiError::at(
                StatusCode::BAD_REQUEST,
                "ray.working_dir",
                "ray.working_dir: tenants may only upload code from ray.code_roots, and this server names none",
            ));
        }
        let Some(engine) = &self.engine else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "this server runs no service engine",
            ));
        };
        engine
            .check(&spec)
            .map_err(|m| ApiError::said(StatusCode::BAD_REQUEST, m))?;
        check_fits(&spec, state.config.capacity.cpus)?;
        let run_as = if engine.runs_here() {
            state
                .run_as(tenant)
                .await
                .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e))?
        } else {
            None
        };
        let mut g = self.inner.lock().await;
        if let Some(l) = limits {
            check_tenant_limits(&g, tenant, l, &spec)?;
        }
        let host = host_of(&state.config.listen);
        if let Some(s) = g.svcs.get_mut(&spec.name) {
            if s.tenant != tenant || s.deleting {
                return Err(exists(&spec.name));
            }
            if let Some(f) = s.spec.fixed_change(&spec) {
                return Err(ApiError::at(
                    StatusCode::CONFLICT,
                    f,
                    format!("{f}: cannot change while the service runs; delete it and apply again"),
                ));
            }
            let mut spec = spec;
            spec.port = Some(s.port);
            state
                .store
                .update_service(
                    &spec.name,
                    &serde_json::to_string(&spec).unwrap_or_default(),
                )
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let t = s.target.clamp(spec.min_replicas, spec.max_replicas);
            s.set_target(t);
            let name = spec.name.clone();
            s.router.set_slo(spec.slo.latency_s);
            s.router
                .set_unavailable_timeout(Some(spec.unavailable_timeout_s));
            s.spec = spec;
            let v = self.status(s, &host);
            drop(g);
            self.event(state, &name, "updated", "spec updated").await;
            return Ok((false, v));
        }
        match g.invalid.get(&spec.name).map(|(t, _)| t) {
            Some(t) if t != tenant => return Err(exists(&spec.name)),
            Some(_) => {
                // Its stored spec was invalid: the new one replaces it.
                state
                    .store
                    .delete_service(&spec.name)
                    .await
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                g.invalid.remove(&spec.name);
            }
            None => {}
        }
        // A new service: its port first (kept in the store), then the router.
        let taken: std::collections::HashSet<u16> = g.svcs.values().map(|s| s.port).collect();
        let (port, listener) = listen_on(&host, spec.port, |p| taken.contains(&p)).await?;
        let mut spec = spec;
        spec.port = Some(port);
        state
            .store
            .insert_service(
                &spec.name,
                tenant,
                &serde_json::to_string(&spec).unwrap_or_default(),
                port as i64,
            )
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let mut s = new_svc(spec, tenant.to_string(), port, 0);
        s.run_as = run_as;
        s.target = s.spec.initial_replicas.unwrap_or(s.spec.min_replicas);
        if routers_apart(state, &s.spec.name) {
            // The router process listens on the port (found free above).
            drop(listener);
            if let Err(e) = use_router_process(state, &mut s, &host).await {
                let _ = state.store.delete_service(&s.spec.name).await;
                return Err(ApiError::internal(e));
            }
        } else {
            s.listener = Some(spawn_router(
                s.router.clone(),
                listener,
                state.config.listener.clone(),
            ));
        }
        let v = self.status(&s, &host);
        let name = s.spec.name.clone();
        g.svcs.insert(name.clone(), s);
        g.autoscaler = None; // rebuilt for the new set of services
        drop(g);
        self.event(state, &name, "created", &format!("router on {host}:{port}"))
            .await;
        Ok((true, v))
    }

    /// Deletes a service: its router stops taking requests at once, its replicas are
    /// stopped, its files removed. False when there is no such service for `tenant`.
    pub async fn delete(
        &self,
        state: &AppState,
        name: &str,
        tenant: Option<&str>,
    ) -> Result<bool, String> {
        let mut g = self.inner.lock().await;
        if let Some((t, _)) = g.invalid.get(name)
            && tenant.is_none_or(|x| x == t)
        {
            state
                .store
                .delete_service(name)
                .await
                .map_err(|e| e.to_string())?;
            g.invalid.remove(name);
            return Ok(true);
        }
        let Some(s) = g.svcs.get_mut(name) else {
            return Ok(false);
        };
        if s.deleting || tenant.is_some_and(|t| t != s.tenant) {
            return Ok(false);
        }
        state
            .store
            .delete_service(name)
            .await
            .map_err(|e| e.to_string())?;
        s.deleting = true;
        if let Some(l) = s.listener.take() {
            l.abort();
        }
        if let Some(p) = s.router.process() {
            p.stop();
        }
        // Its replicas are stopped by the engine's next pass.
        s.router.set_replicas(&[]);
        g.autoscaler = None;
        Ok(true)
    }

    /// The autoscaler: its policy, calls, and its recent decisions that changed something
    /// (each with what the policy was shown), limited to `tenant`'s services.
    pub async fn autoscaler(&self, state: &AppState, tenant: Option<&str>) -> Value {
        let g = self.inner.lock().await;
        let mine =
            |name: &str| tenant.is_none_or(|t| g.svcs.get(name).is_some_and(|s| s.tenant == t));
        let decisions: Vec<DecisionRecord> = g
            .decisions
            .iter()
            .filter_map(|d| {
                let services: Vec<_> = d
                    .services
                    .iter()
                    .filter(|v| mine(&v.service))
                    .cloned()
                    .collect();
                (!services.is_empty()).then(|| DecisionRecord {
                    services,
                    ..d.clone()
                })
            })
            .collect();
        let interval = g.autoscaler.as_ref().map(Autoscaler::interval_s);
        let (periods, p50, p99, max) = self.loop_periods();
        json!({
            "loop_period_s": { "count": periods, "p50": p50, "p99": p99, "max": max, "tick_s": state.config.tick_ms.clamp(20, 200) as f64 / 1000.0 },
            "policy": state.config.autoscaler.policy,
            "params": state.config.autoscaler.params,
            "interval_s": interval.filter(|i| i.is_finite()),
            "calls": g.calls,
            "last_call_ms": g.last_call_ms,
            "replica_state_age_s": {
                "count": g.state_age.count,
                "mean": (g.state_age.count > 0).then(|| g.state_age.sum_s / g.state_age.count as f64),
                "max": (g.state_age.count > 0).then_some(g.state_age.max_s),
            },
            "decisions": decisions,
        })
    }

    pub async fn events(&self, state: &AppState, name: &str) -> Result<Value, String> {
        let ev = state
            .store
            .service_events(name)
            .await
            .map_err(|e| e.to_string())?;
        Ok(json!(ev))
    }

    async fn event(&self, state: &AppState, name: &str, kind: &str, message: &str) {
        info!(service = name, kind, "{message}");
        let seq = {
            let mut g = self.inner.lock().await;
            match g.svcs.get_mut(name) {
                Some(s) if !s.deleting => {
                    s.events_seq += 1;
                    s.events_seq
                }
                _ => return,
            }
        };
        if let Err(e) = state
            .store
            .add_service_event(name, seq, kind, message)
            .await
        {
            warn!(service = name, "recording an event: {e}");
        }
    }
}

/// A tenant's services, with `spec` applied, within its limits; else (status, message
/// naming the field and the limit).
/// A name taken (by another tenant's service, or one being deleted).
fn exists(name: &str) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, format!("service {name} exists"))
}

/// A service whose replicas could never run - one replica, or its `min_replicas`,
/// larger than the whole cluster - is refused with the reason.
fn check_fits(spec: &ServiceSpec, capacity_cpus: f64) -> Result<(), ApiError> {
    let unschedulable = |field: &str, m: String| {
        Err(ApiError::at(
            StatusCode::BAD_REQUEST,
            field,
            format!("Unschedulable: {m}"),
        ))
    };
    if spec.cpus > capacity_cpus + 1e-9 {
        return unschedulable(
            "cpus",
            format!(
                "a replica needs {} vCPUs, the cluster has {capacity_cpus} (capacity.cpus)",
                spec.cpus
            ),
        );
    }
    let min = spec.cpus * spec.min_replicas as f64;
    if min > capacity_cpus + 1e-9 {
        return unschedulable(
            "min_replicas",
            format!(
                "{} replicas of {} vCPUs need {min}, the cluster has {capacity_cpus} (capacity.cpus)",
                spec.min_replicas, spec.cpus
            ),
        );
    }
    Ok(())
}

fn check_tenant_limits(
    g: &Inner,
    tenant: &str,
    l: &crate::config::TenantLimits,
    spec: &ServiceSpec,
) -> Result<(), ApiError> {
    let others: Vec<&Svc> = g
        .svcs
        .values()
        .filter(|s| s.tenant == tenant && !s.deleting && s.spec.name != spec.name)
        .collect();
    if others.len() as u32 >= l.max_services {
        return Err(ApiError::at(
            StatusCode::TOO_MANY_REQUESTS,
            "services",
            format!(
                "services: tenant {tenant} has {} services, the most it may have",
                others.len()
            ),
        ));
    }
    let replicas: u32 = others.iter().map(|s| s.spec.max_replicas).sum::<u32>() + spec.max_replicas;
    if replicas > l.max_replicas {
        return Err(ApiError::at(
            StatusCode::BAD_REQUEST,
            "max_replicas",
            format!(
                "max_replicas: tenant {tenant}'s services would allow {replicas} replicas in all; its limit is {}",
                l.max_replicas
            ),
        ));
    }
    let cpus = spec.cpus * spec.max_replicas as f64;
    if cpus > l.max_cpus {
        return Err(ApiError::at(
            StatusCode::BAD_REQUEST,
            "cpus",
            format!(
                "cpus: {} replicas of {} vCPUs ask for {cpus} vCPUs; tenant {tenant} may ask for at most {}",
                spec.max_replicas, spec.cpus, l.max_cpus
            ),
        ));
    }
    Ok(())
}

fn held(g: &Inner) -> f64 {
    g.svcs
        .values()
        .map(|s| s.cpus() * s.held_replicas() as f64)
        .sum()
}

fn new_svc(spec: ServiceSpec, tenant: String, port: u16, events_seq: i64) -> Svc {
    let router = Router::new(&[], spec.max_concurrent as usize, spec.max_queue);
    router.set_slo(spec.slo.latency_s);
    router.set_unavailable_timeout(Some(spec.unavailable_timeout_s));
    Svc {
        target: spec.min_replicas,
        spec,
        tenant,
        port,
        router,
        listener: None,
        router_error: None,
        cold_starts: ColdStarts::default(),
        hist: learning::SvcHistory::default(),
        deleting: false,
        events_seq,
        stored_target: None,
        remote: engine::RemoteSvc::default(),
        run_as: None,
        scale_ups: Vec::new(),
        control_latencies: Vec::new(),
        size: None,
        unschedulable: None,
    }
}

/// Whether this service's router runs in a process of its own (see
/// `ServerConfig::service_routers`). A graph's functions keep theirs here: the graph's
/// entry calls them in-process.
fn routers_apart(state: &AppState, name: &str) -> bool {
    let placement = state
        .config
        .service_routers
        .unwrap_or(if state.store.elects() {
            crate::config::RouterPlacement::Process
        } else {
            crate::config::RouterPlacement::Server
        });
    placement == crate::config::RouterPlacement::Process && !name.contains('.')
}

/// Gives `s` the router process of its port: the one running adopted, else one started.
async fn use_router_process(state: &AppState, s: &mut Svc, host: &str) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("the server's program: {e}"))?;
    let cfg = crate::dataplane::RouterProcess {
        service: s.spec.name.clone(),
        listen: format!("{host}:{}", s.port),
        socket: state
            .config
            .data_dir
            .join("services")
            .join(&s.spec.name)
            .join("router.sock"),
        concurrency: s.spec.max_concurrent as usize,
        queue: s.spec.max_queue,
        limits: state.config.listener.clone(),
    };
    let router = crate::dataplane::attach_or_spawn(&exe, cfg).await?;
    router.set_slo(s.spec.slo.latency_s);
    router.set_unavailable_timeout(Some(s.spec.unavailable_timeout_s));
    s.router = router;
    Ok(())
}

fn spawn_router(
    router: Arc<Router>,
    listener: tokio::net::TcpListener,
    limits: crate::config::ListenerConfig,
) -> tokio::task::JoinHandle<()> {
    spawn_listener("router", crate::router::app(router), listener, limits)
}

/// Loads the services from the store, adopts their live replicas, then runs the loop
/// that keeps every service at its target and calls the autoscaler.
pub async fn run(state: Arc<AppState>) {
    // Nothing is started before the replicas still running are adopted.
    while let Err(e) = load(&state).await {
        warn!("loading the services (retrying): {e}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    while let Err(e) = crate::graphs::load(&state).await {
        warn!("loading the function graphs (retrying): {e}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    learning::restore(&state).await;
    let tick = Duration::from_millis(state.config.tick_ms.clamp(20, 200));
    let mut last: Option<Instant> = None;
    loop {
        let t0 = Instant::now();
        if let Some(l) = last {
            let mut p = state.services.periods.lock_or_recover();
            p.push_back(t0.duration_since(l).as_secs_f64());
            while p.len() > PERIODS_KEPT {
                p.pop_front();
            }
        }
        last = Some(t0);
        // A leader whose lease ran out (paused past it) drives no engine and no router:
        // another may lead now (it ends its process at its next renewal).
        if !state.leads() {
            tokio::time::sleep(tick).await;
            continue;
        }
        pass(&state).await;
        learning::prune(&state).await;
        tokio::time::sleep(tick).await;
    }
}

async fn load(state: &AppState) -> anyhow::Result<()> {
    let rows = state.store.services().await?;
    let host = host_of(&state.config.listen);
    {
        let mut g = state.services.inner.lock().await;
        for row in rows {
            // Applied through the API since the rows were read.
            if g.svcs.contains_key(&row.name) {
                continue;
            }
            // A stored spec that is no longer valid (bounds tightened since it was
            // applied) is reported and skipped, never fatal: the other services start.
            let spec = match serde_json::from_str::<ServiceSpec>(&row.spec)
                .map_err(|e| e.to_string())
                .and_then(|s| s.validate().map(|()| s))
            {
                Ok(s) => s,
                Err(e) => {
                    warn!(service = row.name, "stored spec skipped: {e}");
                    g.invalid
                        .insert(row.name.clone(), (row.tenant.clone(), e.clone()));
                    let seq = state.store.last_service_event(&row.name).await.unwrap_or(0);
                    let _ = state
                        .store
                        .add_service_event(
                            &row.name,
                            seq + 1,
                            "invalid-spec",
                            &format!(
                                "not started: its stored spec is not valid ({e}); apply it again"
                            ),
                        )
                        .await;
                    continue;
                }
            };
            let seq = state.store.last_service_event(&row.name).await.unwrap_or(0);
            let runs_here = state
                .services
                .engine
                .as_ref()
                .is_some_and(|e| e.runs_here());
            let run_as = if runs_here {
                match state.run_as(&row.tenant).await {
                    Ok(r) => r,
                    Err(e) => {
                        warn!(service = row.name, "sandbox user: {e}");
                        continue;
                    }
                }
            } else {
                None
            };
            let mut s = new_svc(spec, row.tenant, row.port as u16, seq);
            s.run_as = run_as;
            s.target = row.target.map(|t| t as u32).unwrap_or(s.spec.min_replicas);
            s.hist.day_origin = row.day_origin.unwrap_or(0);
            s.stored_target = Some(s.target);
            if routers_apart(state, &s.spec.name) {
                // The router process still running is adopted (it served meanwhile).
                if let Err(e) = use_router_process(state, &mut s, &host).await {
                    s.router_error = Some(e);
                }
                g.svcs.insert(s.spec.name.clone(), s);
                continue;
            }
            match tokio::net::TcpListener::bind((host.as_str(), s.port)).await {
                Ok(l) => {
                    s.listener = Some(spawn_router(
                        s.router.clone(),
                        l,
                        state.config.listener.clone(),
                    ))
                }
                Err(e) => s.router_error = Some(format!("cannot listen on {host}:{}: {e}", s.port)),
            }
            g.svcs.insert(s.spec.name.clone(), s);
        }
        // Router processes of services deleted while no server ran.
        let keep: std::collections::HashSet<String> = g.svcs.keys().cloned().collect();
        crate::dataplane::stop_orphans(&state.config.data_dir.join("services"), &keep).await;
    }
    Ok(())
}

/// Notes each service whose target wants replicas the capacity has no room for (an
/// event when that begins); a crash loop or a back-off is not a lack of room.
fn note_unschedulable(state: &AppState, g: &mut Inner, events: &mut Events) {
    let capacity = state.services.capacity_cpus(state);
    let training = state.services.training_cpus();
    let services = held(g);
    let free = capacity - training - services;
    for s in g.svcs.values_mut() {
        let active = s.count(Phase::Ready) + s.count(Phase::Starting);
        let why = (!s.deleting
            && s.remote.failing.is_none()
            && s.target > active
            && free + 1e-9 < s.cpus())
        .then(|| {
            format!(
                "{} of {} replicas wait for capacity: a replica needs {} vCPUs, {:.2} of {capacity} are free (training jobs hold {training:.2}, services {services:.2})",
                s.target - active,
                s.target,
                s.cpus(),
                free.max(0.0),
            )
        });
        if why.is_some() && s.unschedulable.is_none() {
            events.push((
                s.spec.name.clone(),
                "unschedulable",
                why.clone().unwrap_or_default(),
            ));
        }
        s.unschedulable = why;
    }
}

/// What happened in a pass that deserves an event (written after the lock is let go).
type Events = Vec<(String, &'static str, String)>;

async fn pass(state: &Arc<AppState>) {
    let services = &state.services;
    let mut events: Events = Vec::new();
    learning::load_histories(state).await;
    let graphs = state.graphs.all().await;
    let writes = {
        let mut g = services.inner.lock().await;
        // The minutes that ended go to the history, and forecasters learn from it.
        let now = learning::unix_minute();
        let writes = learning::record(state, &mut g, now);
        learning::maybe_fit(state, &mut g, now, &mut events);
        autoscale(state, &mut g, &mut events);
        graph_scale::autoscale_graphs(state, &mut g, &graphs, &mut events);
        writes
    };
    if let Err(e) = state.store.put_minute_chunks(&writes).await {
        warn!("recording {} service minute(s): {e}", writes.len());
    }
    // The engine brings every service toward its target and says what runs.
    if let Some(e) = &services.engine {
        engine::sync(state, e.as_ref(), &mut events).await;
    }
    let mut g = services.inner.lock().await;
    for s in g.svcs.values_mut() {
        s.note_served(&mut events);
    }
    note_unschedulable(state, &mut g, &mut events);
    // Deleted services whose replicas are all gone leave.
    let gone: Vec<String> = g
        .svcs
        .values()
        .filter(|s| s.deleting && !s.remote.present)
        .map(|s| s.spec.name.clone())
        .collect();
    for name in gone {
        g.svcs.remove(&name);
        // A later service of the same name (another tenant's, perhaps) starts clean.
        g.history.forget(&name);
        for d in g.decisions.iter_mut() {
            d.services.retain(|v| v.service != name);
        }
        g.decisions.retain(|d| !d.services.is_empty());
    }
    *services.held_now.lock_or_recover() = g
        .svcs
        .values()
        .filter(|s| s.held_replicas() > 0)
        .map(|s| (s.cpus(), s.held_replicas()))
        .collect();
    let targets: Vec<(String, u32)> = g
        .svcs
        .values_mut()
        .filter(|s| !s.deleting && s.stored_target != Some(s.target))
        .map(|s| {
            s.stored_target = Some(s.target);
            (s.spec.name.clone(), s.target)
        })
        .collect();
    drop(g);
    for (name, t) in targets {
        if let Err(e) = state.store.set_service_target(&name, t as i64).await {
            warn!(service = name, "recording the target: {e}");
        }
    }
    for (name, kind, message) in events {
        services.event(state, &name, kind, &message).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec::parse(
            "name: a\ncommand: [x, --port, $PORT]\nslo: { latency_s: 0.1 }\nprocessing_time_s: 0.01\n",
        )
        .unwrap()
    }

    #[test]
    fn each_scale_up_is_timed_until_enough_replicas_serve() {
        let mut s = new_svc(spec(), "t".into(), 1, 0);
        s.target = 1;
        s.set_target(2);
        s.set_target(3);
        assert_eq!(s.scale_ups.len(), 2);
        let mut events = Vec::new();
        s.remote.replicas = ["a", "b"]
            .map(|id| pharos_engine::service::EngineReplica {
                id: id.into(),
                phase: Phase::Ready,
                url: None,
                process: None,
            })
            .to_vec();
        s.note_served(&mut events);
        // The raise to 2 is served; the one to 3 waits.
        assert_eq!(s.control_latencies.len(), 1);
        assert_eq!(s.scale_ups.len(), 1);
        assert!(
            events[0].2.starts_with("2 replica(s) serving"),
            "{events:?}"
        );
        // Cut back to 2: the raise to 3 is no longer wanted, nothing is left to time.
        s.set_target(2);
        assert!(s.scale_ups.is_empty());
        // A cut is not a scale-up.
        s.set_target(1);
        assert!(s.scale_ups.is_empty());
    }

    #[test]
    fn defaults_and_errors_that_name_the_field() {
        let s = spec();
        assert_eq!(
            (s.min_replicas, s.max_replicas, s.max_concurrent),
            (1, 10, 1)
        );
        assert_eq!(s.readiness_path, "/healthz");
        assert_eq!(s.slo.percentile, 99.0);
        for (extra, field) in [
            ("min_replicas: 5\nmax_replicas: 2", "min_replicas"),
            ("initial_replicas: 20", "initial_replicas"),
            ("readiness_path: healthz", "readiness_path"),
            ("max_concurrent: 0", "max_concurrent"),
            ("ready_timeout_s: 0", "ready_timeout_s"),
            ("env: { 'A=B': x }", "env"),
        ] {
            let text = format!(
                "name: a\ncommand: [x]\nslo: {{ latency_s: 0.1 }}\nprocessing_time_s: 0.01\n{extra}\n"
            );
            let e = ServiceSpec::parse_named(&text, "a.yaml").unwrap_err();
            assert_eq!(e.field, field, "{extra}: {e}");
            assert!(e.message.starts_with("a.yaml: "), "{extra}: {e}");
        }
    }

    #[test]
    fn what_may_change_while_a_service_runs() {
        let s = spec();
        let mut t = s.clone();
        t.max_replicas = 3;
        t.slo.latency_s = 0.2;
        assert_eq!(s.fixed_change(&t), None);
        t.cpus = 2.0;
        assert_eq!(s.fixed_change(&t), Some("cpus"));
        let mut t = s.clone();
        t.command.push("--more".into());
        assert_eq!(s.fixed_change(&t), Some("command"));
    }

    #[test]
    fn the_router_host_comes_from_the_listen_address() {
        assert_eq!(host_of("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8080"), "::1");
        assert_eq!(host_of(":8080"), "127.0.0.1");
    }
}
