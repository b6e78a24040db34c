//! Inference services: each is a router (see [`crate::router`]) on its own port in front
//! of replicas - local processes started from the service's command with `$PORT` - and
//! one autoscaler for all of them runs an inference policy (the same objects the
//! simulator evaluates) on the routers' live counters.
//!
//! The store holds the services (their specs and router ports); a replica's process id,
//! port and start time are kept in `<data_dir>/services/<name>/replicas/<id>.json`, so a
//! restarted server adopts the replicas that are still alive instead of orphaning them.
//! Replicas run in their own session and outlive the server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use pharos_core::{ClusterView, InferencePolicy, JobCounters, JobView};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::AppState;
use crate::router::Router;
use crate::store::now_ms;
use autoscale::{Autoscaler, DecisionRecord, autoscale};
use pharos_engine::host::{Backoff, write_atomic};
pub use pharos_engine::service::{KubeApp, Phase, RayApp, ServiceSpec};

mod autoscale;
pub mod engine;
mod history;

pub use history::{ClusterPoint, ServicePoint};

/// What is kept on disk of a replica (so that a restarted server adopts it).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReplicaFile {
    pid: i32,
    port: u16,
    /// The process's start time in clock ticks since boot (/proc/PID/stat field 22):
    /// with the pid, names the process even if the pid is reused.
    start_ticks: u64,
    started_ms: i64,
}

struct Replica {
    id: u64,
    file: ReplicaFile,
    /// Ours to reap (None: adopted from a previous server).
    child: Option<std::process::Child>,
    phase: Phase,
    since: Instant,
    /// Requests once it was ready (not for adopted replicas).
    cold_start_s: Option<f64>,
    adopted: bool,
}

impl Replica {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.file.port)
    }
}

struct Svc {
    spec: ServiceSpec,
    tenant: String,
    port: u16,
    router: Arc<Router>,
    listener: Option<tokio::task::JoinHandle<()>>,
    router_error: Option<String>,
    replicas: Vec<Replica>,
    target: u32,
    next_id: u64,
    /// Measured cold starts (process start to ready), seconds.
    cold_starts: Vec<f64>,
    /// Arrivals per completed minute since the autoscaler (re)started.
    minute_arrivals: Vec<u32>,
    arrivals_at_minute: u64,
    /// Starting replicas that failed in a row (exit or abandoned) and when the next
    /// start is allowed.
    failures: u32,
    not_before: Instant,
    deleting: bool,
    events_seq: i64,
    /// The target as last written to the store.
    stored_target: Option<u32>,
    /// On an engine elsewhere (Ray Serve, Kubernetes): the replicas it last reported
    /// (and, on Ray, what Serve said of the application).
    remote: engine::RemoteSvc,
    /// Raised targets not yet served: when each was decided and how many replicas.
    scale_ups: Vec<(Instant, u32)>,
    /// Decision to serving, per scale-up, seconds (the control latency).
    control_latencies: Vec<f64>,
    /// The user its replicas run as (local backend, sandboxed).
    run_as: Option<pharos_engine::sandbox::RunAs>,
}

impl Svc {
    /// Replicas in phase `p`, local processes or Ray replicas.
    fn count(&self, p: Phase) -> u32 {
        (self.replicas.iter().filter(|r| r.phase == p).count()
            + self.remote.replicas.iter().filter(|r| r.1 == p).count()) as u32
    }

    /// Replicas that hold capacity (any phase: a stopping replica still runs).
    fn held_replicas(&self) -> u32 {
        (self.replicas.len() + self.remote.replicas.len()) as u32
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
    /// The engine that runs the replicas (Ray Serve, Kubernetes), else local processes.
    engine: Option<Arc<dyn pharos_engine::ServiceEngine>>,
    client: Client<HttpConnector, Body>,
    held_now: std::sync::Mutex<Vec<(f64, u32)>>,
    /// vCPUs held by training jobs, as of the controller's last scheduling pass.
    training_cpus_bits: std::sync::atomic::AtomicU64,
}

struct Inner {
    svcs: BTreeMap<String, Svc>,
    autoscaler: Option<Autoscaler>,
    epoch: Instant,
    /// The autoscaler's decisions that changed something, newest last (at most
    /// [`DECISIONS_KEPT`]), with what the policy was shown.
    decisions: std::collections::VecDeque<DecisionRecord>,
    /// Calls of the policy since the server started, and the last one's time.
    calls: u64,
    last_call_ms: Option<i64>,
    /// Ages of the replica states shown to the policy: count, sum, max (seconds).
    state_age: (u64, f64, f64),
    /// The engine loop's back-off while the engine is unreachable.
    engine: engine::EngineLoop,
    /// Samples for the dashboard.
    history: history::History,
    /// Stored services whose specs are no longer valid: name -> (tenant, why). They do
    /// not run; their owner sees why, and may apply them again (replacing the stored
    /// spec) or delete them.
    invalid: BTreeMap<String, (String, String)>,
}

const DECISIONS_KEPT: usize = 200;

impl Default for Services {
    fn default() -> Self {
        Self::with_engine(None)
    }
}

impl Services {
    /// Services whose replicas `engine` runs (local processes without one).
    pub fn with_engine(engine: Option<Arc<dyn pharos_engine::ServiceEngine>>) -> Self {
        Self {
            engine,
            inner: Mutex::new(Inner {
                svcs: BTreeMap::new(),
                autoscaler: None,
                epoch: Instant::now(),
                decisions: std::collections::VecDeque::new(),
                calls: 0,
                last_call_ms: None,
                state_age: (0, 0.0, 0.0),
                engine: engine::EngineLoop::default(),
                history: history::History::default(),
                invalid: BTreeMap::new(),
            }),
            client: Client::builder(TokioExecutor::new()).build_http(),
            held_now: std::sync::Mutex::new(Vec::new()),
            training_cpus_bits: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

fn svc_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("services").join(name)
}

fn replicas_dir(data_dir: &Path, name: &str) -> PathBuf {
    svc_dir(data_dir, name).join("replicas")
}

/// Field 22 of /proc/PID/stat (after the parenthesised command name).
fn proc_start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    // rest starts at field 3 (state); field 22 is the 20th from here.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process in `f` is alive (a zombie is not).
fn alive(f: &ReplicaFile) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", f.pid)) else {
        return false;
    };
    let zombie = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..i + 3))
        .is_some_and(|s| s == "Z" || s == "X");
    !zombie && proc_start_ticks(f.pid) == Some(f.start_ticks)
}

fn signal_group(pid: i32, sig: i32) {
    // SAFETY: kill(2) on the replica's process group (it leads its own session).
    unsafe {
        libc::kill(-pid, sig);
    }
}

/// The program to run: a bare name is looked up next to the running executable first
/// (where `pharos-replica` is installed with `pharos`), then in PATH.
fn resolve_program(name: &str) -> PathBuf {
    if !name.contains('/')
        && let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        for d in [Some(dir), dir.parent()].into_iter().flatten() {
            let p = d.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    PathBuf::from(name)
}

fn host_of(listen: &str) -> String {
    match listen.rsplit_once(':') {
        Some((h, _)) if !h.is_empty() => h.trim_matches(['[', ']']).to_string(),
        _ => "127.0.0.1".into(),
    }
}

impl Services {
    /// A service's status as the API shows it.
    fn status(&self, s: &Svc, host: &str) -> Value {
        let st = s.router.stats();
        let count = |p: Phase| s.count(p);
        let mean_cold = if s.cold_starts.is_empty() {
            Value::Null
        } else {
            json!(s.cold_starts.iter().sum::<f64>() / s.cold_starts.len() as f64)
        };
        json!({
            "name": s.spec.name,
            "tenant": s.tenant,
            "url": format!("http://{host}:{}", s.port),
            "router_error": s.router_error,
            "target_replicas": s.target,
            "ready_replicas": count(Phase::Ready),
            "starting_replicas": count(Phase::Starting),
            "stopping_replicas": count(Phase::Draining) + count(Phase::Stopping),
            "accept_rate": st.accept_rate,
            "queued": st.queued,
            "in_flight": st.in_flight,
            "counters": st.counters,
            "cold_start_s": { "count": s.cold_starts.len(), "mean": mean_cold, "all": s.cold_starts },
            "replicas": s.replicas.iter().map(|r| json!({
                "id": r.id, "pid": r.file.pid, "port": r.file.port, "phase": r.phase,
                "started_ms": r.file.started_ms, "cold_start_s": r.cold_start_s, "adopted": r.adopted,
            })).chain(s.remote.replicas.iter().map(|(id, phase)| json!({"id": id, "phase": phase})))
            .collect::<Vec<_>>(),
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
            "spec": s.spec,
        })
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

    /// Per service, (vCPUs per replica, replicas) held now (any phase: a stopping
    /// replica still runs), as of the services loop's last pass.
    pub fn held(&self) -> Vec<(f64, u32)> {
        self.held_now
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
    fn capacity_left(&self, state: &AppState) -> f64 {
        state.config.capacity.cpus - self.training_cpus()
    }

    /// Creates or updates a service. Errors: (status code, message).
    pub async fn apply(
        &self,
        state: &AppState,
        tenant: &str,
        limits: Option<&crate::config::TenantLimits>,
        spec: ServiceSpec,
    ) -> Result<(bool, Value), (u16, String)> {
        // A tenant's Ray application code comes only from the directories the admin
        // named: without ray.code_roots a tenant could ship any directory the server
        // can read to the cluster, where its own code reads it.
        if limits.is_some()
            && spec.ray.as_ref().is_some_and(|r| r.working_dir.is_some())
            && state.config.ray.code_roots.is_empty()
        {
            return Err((
                400,
                "ray.working_dir: tenants may only upload code from ray.code_roots, and this server names none".into(),
            ));
        }
        match &self.engine {
            Some(e) => e.check(&spec).map_err(|m| (400, m))?,
            None if spec.ray.is_some() => {
                return Err((
                    400,
                    "ray: this server runs services as local processes; give a command".into(),
                ));
            }
            None if spec.kubernetes.is_some() => {
                return Err((
                    400,
                    "kubernetes: this server runs services as local processes; give a command"
                        .into(),
                ));
            }
            None => {}
        }
        let run_as = if self.engine.is_none() {
            state.run_as(tenant).await.map_err(|e| (503, e))?
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
                return Err((409, format!("service {} exists", spec.name)));
            }
            if let Some(f) = s.spec.fixed_change(&spec) {
                return Err((
                    409,
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
                .map_err(|e| (500, e.to_string()))?;
            let t = s.target.clamp(spec.min_replicas, spec.max_replicas);
            s.set_target(t);
            let name = spec.name.clone();
            s.spec = spec;
            let v = self.status(s, &host);
            drop(g);
            self.event(state, &name, "updated", "spec updated").await;
            return Ok((false, v));
        }
        match g.invalid.get(&spec.name).map(|(t, _)| t) {
            Some(t) if t != tenant => return Err((409, format!("service {} exists", spec.name))),
            Some(_) => {
                // Its stored spec was invalid: the new one replaces it.
                state
                    .store
                    .delete_service(&spec.name)
                    .await
                    .map_err(|e| (500, e.to_string()))?;
                g.invalid.remove(&spec.name);
            }
            None => {}
        }
        // A new service: its port first (kept in the store), then the router.
        let port = match spec.port {
            Some(p) => p,
            None => pharos_engine::host::free_port(&host)
                .map_err(|e| (500, format!("no free port: {e}")))?,
        };
        if g.svcs.values().any(|s| s.port == port) {
            return Err((409, format!("port: {port} is another service's")));
        }
        let listener = tokio::net::TcpListener::bind((host.as_str(), port))
            .await
            .map_err(|e| (409, format!("port: cannot listen on {host}:{port}: {e}")))?;
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
            .map_err(|e| (500, e.to_string()))?;
        let mut s = new_svc(spec, tenant.to_string(), port, 0);
        s.run_as = run_as;
        s.target = s.spec.initial_replicas.unwrap_or(s.spec.min_replicas);
        s.listener = Some(spawn_router(
            s.router.clone(),
            listener,
            state.config.listener.clone(),
        ));
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
        s.router.set_replicas(&[]);
        for r in &mut s.replicas {
            if r.phase != Phase::Stopping {
                signal_group(r.file.pid, libc::SIGTERM);
                r.phase = Phase::Stopping;
                r.since = Instant::now();
            }
        }
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
        json!({
            "policy": state.config.autoscaler.policy,
            "params": state.config.autoscaler.params,
            "interval_s": interval.filter(|i| i.is_finite()),
            "calls": g.calls,
            "last_call_ms": g.last_call_ms,
            "replica_state_age_s": {
                "count": g.state_age.0,
                "mean": (g.state_age.0 > 0).then(|| g.state_age.1 / g.state_age.0 as f64),
                "max": (g.state_age.0 > 0).then_some(g.state_age.2),
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
fn check_tenant_limits(
    g: &Inner,
    tenant: &str,
    l: &crate::config::TenantLimits,
    spec: &ServiceSpec,
) -> Result<(), (u16, String)> {
    let others: Vec<&Svc> = g
        .svcs
        .values()
        .filter(|s| s.tenant == tenant && !s.deleting && s.spec.name != spec.name)
        .collect();
    if others.len() as u32 >= l.max_services {
        return Err((
            429,
            format!(
                "services: tenant {tenant} has {} services, the most it may have",
                others.len()
            ),
        ));
    }
    let replicas: u32 = others.iter().map(|s| s.spec.max_replicas).sum::<u32>() + spec.max_replicas;
    if replicas > l.max_replicas {
        return Err((
            400,
            format!(
                "max_replicas: tenant {tenant}'s services would allow {replicas} replicas in all; its limit is {}",
                l.max_replicas
            ),
        ));
    }
    let cpus = spec.cpus * spec.max_replicas as f64;
    if cpus > l.max_cpus {
        return Err((
            400,
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
        .map(|s| s.spec.cpus * s.held_replicas() as f64)
        .sum()
}

fn new_svc(spec: ServiceSpec, tenant: String, port: u16, events_seq: i64) -> Svc {
    let router = Router::new(&[], spec.max_concurrent as usize, spec.max_queue);
    Svc {
        target: spec.min_replicas,
        spec,
        tenant,
        port,
        router,
        listener: None,
        router_error: None,
        replicas: Vec::new(),
        next_id: 1,
        cold_starts: Vec::new(),
        minute_arrivals: Vec::new(),
        arrivals_at_minute: 0,
        failures: 0,
        not_before: Instant::now(),
        deleting: false,
        events_seq,
        stored_target: None,
        remote: engine::RemoteSvc::default(),
        run_as: None,
        scale_ups: Vec::new(),
        control_latencies: Vec::new(),
    }
}

fn spawn_router(
    router: Arc<Router>,
    listener: tokio::net::TcpListener,
    limits: crate::config::ListenerConfig,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let app = crate::router::app(router);
        if let Err(e) = crate::listen::serve(listener, app, &limits, std::future::pending()).await {
            warn!("router stopped: {e}");
        }
    })
}

/// Loads the services from the store, adopts their live replicas, then runs the loop
/// that keeps every service at its target and calls the autoscaler.
pub async fn run(state: Arc<AppState>) {
    // Nothing is started before the replicas still running are adopted.
    while let Err(e) = load(&state).await {
        warn!("loading the services (retrying): {e}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let tick = Duration::from_millis(state.config.tick_ms.clamp(20, 200));
    loop {
        pass(&state).await;
        tokio::time::sleep(tick).await;
    }
}

async fn load(state: &AppState) -> anyhow::Result<()> {
    let rows = state.store.services().await?;
    let host = host_of(&state.config.listen);
    let mut adopted = Vec::new();
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
            let run_as = if state.services.engine.is_none() {
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
            s.stored_target = Some(s.target);
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
            // Adopt the replicas still alive; forget the rest.
            let dir = replicas_dir(&state.config.data_dir, &row.name);
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let path = e.path();
                    let Some(id) = path
                        .file_stem()
                        .and_then(|x| x.to_str())
                        .and_then(|x| x.parse::<u64>().ok())
                    else {
                        continue;
                    };
                    if path.extension().is_none_or(|x| x != "json") {
                        continue;
                    }
                    let file: Option<ReplicaFile> = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| serde_json::from_str(&t).ok());
                    s.next_id = s.next_id.max(id + 1);
                    match file {
                        Some(f) if alive(&f) => {
                            adopted.push((row.name.clone(), id, f.pid));
                            s.replicas.push(Replica {
                                id,
                                file: f,
                                child: None,
                                phase: Phase::Starting,
                                since: Instant::now(),
                                cold_start_s: None,
                                adopted: true,
                            });
                        }
                        _ => {
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
            }
            s.replicas.sort_by_key(|r| r.id);
            g.svcs.insert(s.spec.name.clone(), s);
        }
    }
    for (name, id, pid) in adopted {
        state
            .services
            .event(
                state,
                &name,
                "adopted",
                &format!("replica {id} (pid {pid}) adopted after a restart"),
            )
            .await;
    }
    Ok(())
}

/// What happened in a pass that deserves an event (written after the lock is let go).
type Events = Vec<(String, &'static str, String)>;

async fn pass(state: &AppState) {
    let services = &state.services;
    let mut events: Events = Vec::new();
    if let Some(e) = &services.engine {
        engine::sync(state, e.as_ref(), &mut events).await;
    }
    // Readiness probes run without the lock.
    let probes: Vec<(String, u64, String)> = {
        let g = services.inner.lock().await;
        g.svcs
            .values()
            .flat_map(|s| {
                s.replicas
                    .iter()
                    .filter(|r| r.phase == Phase::Starting)
                    .map(|r| {
                        (
                            s.spec.name.clone(),
                            r.id,
                            format!("{}{}", r.base(), s.spec.readiness_path),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let mut ready = Vec::new();
    for (name, id, url) in probes {
        if probe(&services.client, &url).await {
            ready.push((name, id));
        }
    }
    let mut g = services.inner.lock().await;
    for (name, id) in ready {
        if let Some(s) = g.svcs.get_mut(&name)
            && let Some(r) = s
                .replicas
                .iter_mut()
                .find(|r| r.id == id && r.phase == Phase::Starting)
        {
            r.phase = Phase::Ready;
            if !r.adopted {
                let c = r.since.elapsed().as_secs_f64();
                r.cold_start_s = Some(c);
                s.cold_starts.push(c);
                events.push((
                    name.clone(),
                    "ready",
                    format!("replica {id} ready after {c:.3} s (cold start)"),
                ));
            } else {
                events.push((
                    name.clone(),
                    "ready",
                    format!("replica {id} (adopted) ready"),
                ));
            }
            s.failures = 0;
        }
    }
    let data_dir = state.config.data_dir.clone();
    for s in g.svcs.values_mut() {
        watch(s, &data_dir, &mut events);
        s.note_served(&mut events);
    }
    // Deleted services whose replicas are all gone leave.
    let gone: Vec<String> = g
        .svcs
        .values()
        .filter(|s| s.deleting && s.replicas.is_empty() && !s.remote.present)
        .map(|s| s.spec.name.clone())
        .collect();
    for name in gone {
        g.svcs.remove(&name);
        let _ = std::fs::remove_dir_all(svc_dir(&data_dir, &name));
        // A later service of the same name (another tenant's, perhaps) starts clean.
        g.history.forget(&name);
        for d in g.decisions.iter_mut() {
            d.services.retain(|v| v.service != name);
        }
        g.decisions.retain(|d| !d.services.is_empty());
    }
    // Minute arrivals for the forecasters.
    let minute = (g.epoch.elapsed().as_secs() / 60) as usize;
    for s in g.svcs.values_mut() {
        while s.minute_arrivals.len() < minute {
            let a = s.router.stats().counters.arrivals;
            s.minute_arrivals
                .push(a.saturating_sub(s.arrivals_at_minute) as u32);
            s.arrivals_at_minute = a;
        }
    }
    autoscale(state, &mut g, &mut events);
    let capacity = services.capacity_left(state);
    let names: Vec<String> = g.svcs.keys().cloned().collect();
    for name in names {
        let free = capacity - held(&g);
        let s = g.svcs.get_mut(&name).expect("listed");
        scale(s, state, free, &mut events);
    }
    *services.held_now.lock().unwrap_or_else(|p| p.into_inner()) = g
        .svcs
        .values()
        .filter(|s| s.held_replicas() > 0)
        .map(|s| (s.spec.cpus, s.held_replicas()))
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

async fn probe(client: &Client<HttpConnector, Body>, url: &str) -> bool {
    let Ok(uri) = url.parse::<axum::http::Uri>() else {
        return false;
    };
    let req = match axum::http::Request::get(uri).body(Body::empty()) {
        Ok(r) => r,
        Err(_) => return false,
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), client.request(req)).await,
        Ok(Ok(resp)) if resp.status().is_success()
    )
}

/// Notices replicas that exited, that never became ready, that finished draining, and
/// that ignore SIGTERM.
fn watch(s: &mut Svc, data_dir: &Path, events: &mut Events) {
    let name = s.spec.name.clone();
    let mut failed = false;
    let mut i = 0;
    while i < s.replicas.len() {
        let r = &mut s.replicas[i];
        let exited = match &mut r.child {
            Some(c) => match c.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                Ok(None) => None,
                Err(e) => Some(e.to_string()),
            },
            None => (!alive(&r.file)).then(|| "exited".to_string()),
        };
        if let Some(how) = exited {
            match r.phase {
                Phase::Starting | Phase::Ready | Phase::Draining => {
                    events.push((
                        name.clone(),
                        "exited",
                        format!(
                            "replica {} (pid {}) {how} while {}; log: {}",
                            r.id,
                            r.file.pid,
                            format!("{:?}", r.phase).to_lowercase(),
                            replicas_dir(data_dir, &name)
                                .join(format!("{}.log", r.id))
                                .display()
                        ),
                    ));
                    failed |= r.phase == Phase::Starting;
                }
                Phase::Stopping => {
                    events.push((name.clone(), "stopped", format!("replica {} stopped", r.id)));
                }
            }
            let _ =
                std::fs::remove_file(replicas_dir(data_dir, &name).join(format!("{}.json", r.id)));
            s.replicas.remove(i);
            continue;
        }
        match r.phase {
            Phase::Starting if r.since.elapsed().as_secs_f64() > s.spec.ready_timeout_s => {
                events.push((
                    name.clone(),
                    "abandoned",
                    format!(
                        "replica {} abandoned: not ready at {} after {:.0} s; log: {}",
                        r.id,
                        s.spec.readiness_path,
                        s.spec.ready_timeout_s,
                        replicas_dir(data_dir, &name)
                            .join(format!("{}.log", r.id))
                            .display()
                    ),
                ));
                signal_group(r.file.pid, libc::SIGTERM);
                r.phase = Phase::Stopping;
                r.since = Instant::now();
                failed = true;
            }
            Phase::Draining if s.router.in_flight_at(&r.base()).is_none() => {
                signal_group(r.file.pid, libc::SIGTERM);
                r.phase = Phase::Stopping;
                r.since = Instant::now();
            }
            Phase::Stopping if r.since.elapsed() > Duration::from_secs(5) => {
                signal_group(r.file.pid, libc::SIGKILL);
            }
            _ => {}
        }
        i += 1;
    }
    if failed {
        backoff(s);
    }
}

/// After a failed start, the next waits 1 s, 2 s, 4 s, ... up to a minute.
fn backoff(s: &mut Svc) {
    s.failures += 1;
    s.not_before = Instant::now() + Backoff::seconds(60).after(s.failures);
}

/// Ready replicas take traffic; every other leaves (or never joins) the router.
fn set_routed(s: &Svc) {
    let bases: Vec<String> = s
        .replicas
        .iter()
        .filter(|r| r.phase == Phase::Ready)
        .map(Replica::base)
        .collect();
    s.router.set_replicas(&bases);
}

/// Starts or drains replicas toward the target (new ones within `free_cpus`).
fn scale(s: &mut Svc, state: &AppState, mut free_cpus: f64, events: &mut Events) {
    if s.deleting || s.spec.ray.is_some() || s.spec.kubernetes.is_some() {
        return;
    }
    let active = s
        .replicas
        .iter()
        .filter(|r| matches!(r.phase, Phase::Starting | Phase::Ready))
        .count() as u32;
    if active < s.target {
        if Instant::now() < s.not_before {
            set_routed(s);
            return;
        }
        for _ in active..s.target {
            if free_cpus + 1e-9 < s.spec.cpus {
                break;
            }
            match start(s, &state.config.data_dir) {
                Ok(id) => {
                    free_cpus -= s.spec.cpus;
                    events.push((
                        s.spec.name.clone(),
                        "started",
                        format!("replica {id} started"),
                    ));
                }
                Err(e) => {
                    backoff(s);
                    events.push((s.spec.name.clone(), "start-failed", e));
                    break;
                }
            }
        }
    } else if active > s.target {
        // Newest starting replicas first, then the ready ones with the fewest requests.
        let mut extra = active - s.target;
        let mut order: Vec<usize> = (0..s.replicas.len())
            .filter(|&i| matches!(s.replicas[i].phase, Phase::Starting | Phase::Ready))
            .collect();
        order.sort_by_key(|&i| {
            let r = &s.replicas[i];
            let busy = s.router.in_flight_at(&r.base()).unwrap_or(0);
            (r.phase == Phase::Ready, busy, std::cmp::Reverse(r.id))
        });
        for i in order {
            if extra == 0 {
                break;
            }
            let r = &mut s.replicas[i];
            if r.phase == Phase::Starting {
                signal_group(r.file.pid, libc::SIGTERM);
                r.phase = Phase::Stopping;
            } else {
                r.phase = Phase::Draining;
            }
            r.since = Instant::now();
            extra -= 1;
        }
    }
    set_routed(s);
}

/// Starts one replica process in its own session; records it on disk first.
fn start(s: &mut Svc, data_dir: &Path) -> Result<u64, String> {
    use std::os::unix::process::CommandExt;
    let id = s.next_id;
    s.next_id += 1;
    let dir = replicas_dir(data_dir, &s.spec.name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // The replicas' working directory is theirs; their records and logs (next to it)
    // are the server's, out of their reach.
    let work = svc_dir(data_dir, &s.spec.name).join("work");
    prepare_work_dir(data_dir, &s.spec.name, &work, s.run_as)
        .map_err(|e| format!("{}: {e}", work.display()))?;
    let port =
        pharos_engine::host::free_port("127.0.0.1").map_err(|e| format!("no free port: {e}"))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{id}.log")))
        .map_err(|e| format!("replica log: {e}"))?;
    let err = log.try_clone().map_err(|e| format!("replica log: {e}"))?;
    let args: Vec<String> = s.spec.command[1..]
        .iter()
        .map(|a| {
            a.replace("${PORT}", &port.to_string())
                .replace("$PORT", &port.to_string())
        })
        .collect();
    let mut cmd = std::process::Command::new(resolve_program(&s.spec.command[0]));
    cmd.args(&args)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env(
            "HOME",
            if s.run_as.is_some() {
                work.clone().into_os_string()
            } else {
                std::env::var_os("HOME").unwrap_or_else(|| "/".into())
            },
        )
        .env("PORT", port.to_string())
        .env("SERVICE", &s.spec.name)
        .env("REPLICA", id.to_string())
        .envs(&s.spec.env)
        .current_dir(&work)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err);
    pharos_engine::sandbox::confine(&mut cmd, s.run_as);
    // SAFETY: setsid between fork and exec (async-signal-safe): the replica leads its
    // own session and process group, and outlives the server.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("replica {id}: cannot start {:?}: {e}", s.spec.command[0]))?;
    let pid = child.id() as i32;
    let file = ReplicaFile {
        pid,
        port,
        start_ticks: proc_start_ticks(pid).unwrap_or(0),
        started_ms: now_ms(),
    };
    let path = dir.join(format!("{id}.json"));
    if let Err(e) = write_atomic(&path, &serde_json::to_vec(&file).unwrap_or_default()) {
        warn!(service = s.spec.name, "recording replica {id}: {e}");
    }
    s.replicas.push(Replica {
        id,
        file,
        child: Some(child),
        phase: Phase::Starting,
        since: Instant::now(),
        cold_start_s: None,
        adopted: false,
    });
    Ok(id)
}

/// The service's directory passable (0711 when sandboxed), its replica records
/// owner-only, and `work` the replicas' own.
fn prepare_work_dir(
    data_dir: &Path,
    name: &str,
    work: &Path,
    run_as: Option<pharos_engine::sandbox::RunAs>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let pass = if run_as.is_some() { 0o711 } else { 0o700 };
    std::fs::set_permissions(
        svc_dir(data_dir, name),
        std::fs::Permissions::from_mode(pass),
    )?;
    std::fs::set_permissions(
        replicas_dir(data_dir, name),
        std::fs::Permissions::from_mode(0o700),
    )?;
    if !work.is_dir() {
        std::fs::create_dir_all(work)?;
    }
    // Made by the server: giving it away follows no link a tenant planted.
    pharos_engine::sandbox::own(work, run_as, 0o700)
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
        s.remote.replicas = vec![("a".into(), Phase::Ready), ("b".into(), Phase::Ready)];
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
            let e = ServiceSpec::parse(&text).unwrap_err();
            assert!(e.starts_with(field), "{extra}: {e}");
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
    fn a_process_is_named_by_its_pid_and_start_time() {
        let me = std::process::id() as i32;
        let ticks = proc_start_ticks(me).unwrap();
        let f = ReplicaFile {
            pid: me,
            port: 1,
            start_ticks: ticks,
            started_ms: 0,
        };
        assert!(alive(&f));
        // The same pid with another start time is another process.
        assert!(!alive(&ReplicaFile {
            start_ticks: ticks + 1,
            ..f.clone()
        }));
        assert!(!alive(&ReplicaFile { pid: i32::MAX, ..f }));
    }

    #[test]
    fn the_router_host_comes_from_the_listen_address() {
        assert_eq!(host_of("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(host_of("[::1]:8080"), "::1");
        assert_eq!(host_of(":8080"), "127.0.0.1");
    }
}
