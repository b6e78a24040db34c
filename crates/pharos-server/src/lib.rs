//! The pharos control plane: a REST API over a store of training jobs, a controller
//! that schedules them (a pure [`pharos_policy::training::GangScheduler`]) and
//! supervises their learners through a [`Backend`], and API tokens mapped to
//! tenants.
//!
//! Architecture Invariant: no job state lives only in memory - the store is the truth,
//! and the controller's actions on a backend are idempotent, so a crash of the server at
//! any point loses nothing accepted and runs nothing twice.

pub mod api;
pub mod auth;
pub mod config;
pub mod controller;
pub mod dashboard;
pub mod dataplane;
pub mod error;
pub mod graphs;
pub mod leader;
pub mod listen;
pub mod logs;
pub mod minutes;
pub mod openapi;
pub mod router;
pub mod services;
pub mod store;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
pub use pharos_core::Manifest;
use pharos_engine::host::LockExt;
use pharos_policy::training::GangScheduler;
use tokio::sync::Notify;
use tracing::info;

pub use config::ServerConfig;
/// The bounds of what tenants send (re-exported for the binaries).
pub use pharos_core::limits;
pub use pharos_core::{ErrorCode, format_memory};
pub use pharos_engine::Backend;
use pharos_engine::sandbox;
pub use store::Store;

/// Everything the API handlers and the controller share.
pub struct AppState {
    pub config: ServerConfig,
    pub store: Store,
    pub backend: Arc<dyn Backend>,
    /// Wakes the controller when the API changed something.
    pub wake: Notify,
    pub metrics: Metrics,
    pub scheduler: Mutex<GangScheduler>,
    /// The inference services and their autoscaler.
    pub services: services::Services,
    /// The function graphs (their functions are services).
    pub graphs: graphs::Graphs,
    /// Parsed manifests by job id (a job's manifest never changes), so that a pass over
    /// thousands of queued jobs does not parse YAML again.
    manifests: Mutex<HashMap<i64, Arc<Manifest>>>,
    /// Jobs whose engine calls fail (unreachable engine): failures in a row and when
    /// the next call is allowed (a back-off, so a dead engine is not hammered).
    pub engine_trouble: Mutex<HashMap<i64, (u32, i64)>>,
    /// Whether tenants' code runs as per-tenant users ([`sandbox`]), and why (not).
    pub sandbox: (bool, String),
    /// Tenants' sandbox users, once looked up.
    run_as: Mutex<HashMap<String, sandbox::RunAs>>,
    /// Held for the server's life (see [`open`]); none when servers share the data
    /// directory under an election.
    _lock: Option<std::fs::File>,
    /// This server's name in leader elections.
    pub candidate: String,
    /// Notified when this server may do the leader's work (again).
    pub leader_changed: Notify,
    /// When this server's state was made (the base of `lease_until_nanos`).
    started: std::time::Instant,
    /// Until when this server's lease holds, nanoseconds after `started`.
    lease_until_nanos: AtomicU64,
}

impl AppState {
    /// Whether this server does the leader's work now (always, without an election):
    /// it holds the term and its lease, as last renewed, has not run out.
    pub fn leads(&self) -> bool {
        !self.store.elects() || (self.store.term().is_some() && !self.lease_over())
    }

    /// Records a renewal: this server's lease is good until `until` (less than the
    /// lease, counted from when the renewal was sent).
    pub fn renewed(&self, until: std::time::Instant) {
        let nanos = until.saturating_duration_since(self.started).as_nanos() as u64;
        self.lease_until_nanos.store(nanos, Ordering::SeqCst);
    }

    /// Whether this server's lease, as last renewed, has run out.
    pub fn lease_over(&self) -> bool {
        let until = self.lease_until_nanos.load(Ordering::SeqCst);
        self.started.elapsed().as_nanos() as u64 >= until
    }

    /// The API address this server tells others it serves: `election.advertise_url`,
    /// else `http://` + `listen` - with this machine's address in place of a wildcard
    /// (0.0.0.0, ::), which would send clients to their own machine.
    pub fn advertise_url(&self) -> String {
        if let Some(u) = &self.config.election.advertise_url {
            return u.clone();
        }
        let listen = &self.config.listen;
        let (host, port) = listen.rsplit_once(':').unwrap_or((listen, "8080"));
        let host = host.trim_matches(['[', ']']);
        if host == "0.0.0.0" || host == "::" || host.is_empty() {
            // The address a route out would leave from (no packet is sent).
            let ip = std::net::UdpSocket::bind("0.0.0.0:0")
                .and_then(|s| s.connect("10.255.255.255:9").map(|()| s))
                .and_then(|s| s.local_addr())
                .map(|a| a.ip().to_string())
                .unwrap_or_else(|_| "127.0.0.1".into());
            return format!("http://{ip}:{port}");
        }
        format!("http://{listen}")
    }

    /// The user `tenant`'s learners and replicas run as (None without a sandbox).
    pub async fn run_as(&self, tenant: &str) -> Result<Option<sandbox::RunAs>, String> {
        if !self.sandbox.0 {
            return Ok(None);
        }
        if let Some(r) = self.run_as.lock_or_recover().get(tenant) {
            return Ok(Some(*r));
        }
        let sb = &self.config.sandbox;
        let uid = self
            .store
            .tenant_uid(tenant, sb.uid_base, sb.uid_count)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "no sandbox user left for tenant {tenant}: all {} of sandbox.uid_count are taken",
                    sb.uid_count
                )
            })?;
        let r = sandbox::RunAs {
            uid,
            gid: uid,
            max_processes: sb.max_processes,
            max_open_files: sb.max_open_files,
        };
        self.run_as.lock_or_recover().insert(tenant.to_string(), r);
        Ok(Some(r))
    }

    /// The job's manifest, parsed once.
    pub fn manifest(&self, job: &store::JobRow) -> Result<Arc<Manifest>, String> {
        let mut cache = self.manifests.lock_or_recover();
        if let Some(m) = cache.get(&job.id) {
            return Ok(m.clone());
        }
        let m = Arc::new(controller::parse_manifest(&job.manifest)?);
        if cache.len() >= 200_000 {
            cache.clear();
        }
        cache.insert(job.id, m.clone());
        Ok(m)
    }
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    pub http_requests: AtomicU64,
    pub http_client_errors: AtomicU64,
    pub http_server_errors: AtomicU64,
    pub jobs_submitted: AtomicU64,
    pub decisions: AtomicU64,
    last_reconcile_nanos: AtomicU64,
    decision_seconds_sum_nanos: AtomicU64,
    last_decision_nanos: AtomicU64,
    /// Queued jobs waiting to run, as the controller's last pass saw them.
    pub waiting_jobs: AtomicU64,
    /// The controller's latest passes, seconds (at most [`PASSES_KEPT`]).
    passes: Mutex<std::collections::VecDeque<f64>>,
}

/// Controller passes the pass-time quantiles are taken over.
pub const PASSES_KEPT: usize = 1000;

impl Metrics {
    pub fn record_decision(&self, seconds: f64) {
        let nanos = (seconds * 1e9) as u64;
        self.decisions.fetch_add(1, Ordering::Relaxed);
        self.decision_seconds_sum_nanos
            .fetch_add(nanos, Ordering::Relaxed);
        self.last_decision_nanos.store(nanos, Ordering::Relaxed);
    }
    pub fn record_reconcile(&self, seconds: f64) {
        self.last_reconcile_nanos
            .store((seconds * 1e9) as u64, Ordering::Relaxed);
        let mut p = self.passes.lock_or_recover();
        p.push_back(seconds);
        while p.len() > PASSES_KEPT {
            p.pop_front();
        }
    }
    /// The 0.5, 0.99 and 1 quantiles of the latest passes' times, and how many.
    pub fn pass_quantiles(&self) -> Option<(f64, f64, f64, usize)> {
        let mut v: Vec<f64> = self.passes.lock_or_recover().iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some((at(0.5), at(0.99), v[v.len() - 1], v.len()))
    }
    pub fn last_reconcile_seconds(&self) -> f64 {
        self.last_reconcile_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
    pub fn decision_seconds_sum(&self) -> f64 {
        self.decision_seconds_sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
    pub fn last_decision_seconds(&self) -> f64 {
        self.last_decision_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
}

/// Where an uploaded model archive with this content hash is kept.
pub fn archive_path(data_dir: &Path, sha256: &str) -> PathBuf {
    data_dir.join("archives").join(format!("{sha256}.tar"))
}

/// Opens the data directory and the store, makes sure an admin token exists, and
/// returns the shared state (the API and the controller are started by [`serve`]).
pub async fn open(
    config: ServerConfig,
    backend: Arc<dyn Backend>,
) -> anyhow::Result<Arc<AppState>> {
    open_with_engine(config, backend, None).await
}

/// [`open`], with the services' replicas run by `engine` (the binary wires the one the
/// configuration's backend names: local processes, Ray Serve, Kubernetes; without one
/// the server refuses services).
pub async fn open_with_engine(
    config: ServerConfig,
    backend: Arc<dyn Backend>,
    engine: Option<Arc<dyn pharos_engine::ServiceEngine>>,
) -> anyhow::Result<Arc<AppState>> {
    config.validate()?;
    let mut config = config;
    // Learners and their supervisors run elsewhere than the server: every path they
    // are given must be absolute.
    config.data_dir = std::path::absolute(&config.data_dir)
        .with_context(|| format!("the data directory {}", config.data_dir.display()))?;
    let dir = &config.data_dir;
    // Everything the server writes (the store, tokens, logs, records) is owner-only;
    // what tenants' code must reach is opened up explicitly.
    // SAFETY: umask only changes this process's file creation mask.
    unsafe {
        libc::umask(0o077);
    }
    sandbox::raise_open_files();
    std::fs::create_dir_all(dir.join("archives"))
        .and_then(|_| std::fs::create_dir_all(dir.join("jobs")))
        .with_context(|| format!("the data directory {} cannot be created", dir.display()))?;
    // Fail early and clearly when the directory exists but cannot be written.
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok")
        .with_context(|| format!("the data directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    // One server per data directory: a second one would start every learner twice.
    // Under an election (PostgreSQL) servers may share it: only the leader acts.
    let elects = config.database_url().starts_with("postgres");
    let lock = if elects {
        None
    } else {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("server.lock"))
            .with_context(|| format!("the data directory {} is not writable", dir.display()))?;
        lock.try_lock().map_err(|_| {
            anyhow::anyhow!(
                "another pharos server is using the data directory {}",
                dir.display()
            )
        })?;
        Some(lock)
    };
    let sandboxed = if config.backend == config::BackendKind::Local {
        sandbox::decide(&config.sandbox, dir)?
    } else {
        (
            false,
            "learners and replicas run on the engine, not here".to_string(),
        )
    };
    if sandboxed.0 {
        info!("sandbox: {}", sandboxed.1);
    } else if config.backend == config::BackendKind::Local {
        tracing::warn!("sandbox: {}", sandboxed.1);
    }
    secure_data_dir(dir, sandboxed.0);
    let store = Store::open(&config.database_url())
        .await
        .with_context(|| format!("opening the store {}", redact(&config.database_url())))?;
    auth::bootstrap_admin(&store, &config).await?;
    if elects {
        store.enable_election();
    }
    for q in &config.queues {
        anyhow::ensure!(!q.name.is_empty(), "queues: a queue needs a name");
    }
    let scheduler = Mutex::new(GangScheduler::new(config.scheduler.clone()));
    // Services run on the engine the binary wired for the configured backend.
    let services = services::Services::with_engine(engine);
    Ok(Arc::new(AppState {
        config,
        store,
        backend,
        wake: Notify::new(),
        metrics: Metrics::default(),
        scheduler,
        services,
        graphs: graphs::Graphs::default(),
        manifests: Mutex::new(HashMap::new()),
        engine_trouble: Mutex::new(HashMap::new()),
        sandbox: sandboxed,
        run_as: Mutex::new(HashMap::new()),
        _lock: lock,
        candidate: leader::candidate_name(),
        leader_changed: Notify::new(),
        started: std::time::Instant::now(),
        lease_until_nanos: AtomicU64::new(0),
    }))
}

/// Owner-only modes on what the server keeps (also on a data directory made by an
/// older version); the directories tenants' code must pass through get o+x when
/// sandboxed.
/// Best effort: a directory the server does not own (a volume's root, say) keeps its
/// mode, with a warning.
fn secure_data_dir(dir: &Path, sandboxed: bool) {
    use std::os::unix::fs::PermissionsExt;
    let set = |p: &Path, mode: u32| match std::fs::set_permissions(
        p,
        std::fs::Permissions::from_mode(mode),
    ) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot set mode {mode:o} on {}: {e}", p.display()),
    };
    let pass = if sandboxed { 0o711 } else { 0o700 };
    set(dir, pass);
    set(&dir.join("jobs"), pass);
    let _ = std::fs::create_dir_all(dir.join("services"));
    set(&dir.join("services"), pass);
    set(&dir.join("archives"), 0o700);
    for f in [
        "admin-token",
        "pharos.db",
        "pharos.db-wal",
        "pharos.db-shm",
        "installation-id",
    ] {
        set(&dir.join(f), 0o600);
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Serves the API on `listener` and runs the controller, until ctrl-c or SIGTERM.
pub async fn serve(state: Arc<AppState>, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    info!(%addr, data_dir = %state.config.data_dir.display(), backend = state.backend.name(), "pharos server listening");
    let election = state
        .store
        .elects()
        .then(|| tokio::spawn(leader::run(state.clone())));
    let controller = tokio::spawn(store::as_leader(controller::run(state.clone())));
    let services = tokio::spawn(store::as_leader({
        let state = state.clone();
        async move {
            // The services' engines and routers start with the first term led.
            while !state.leads() {
                let changed = state.leader_changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if state.leads() {
                    break;
                }
                changed.await;
            }
            services::run(state).await
        }
    }));
    let history = tokio::spawn(store::as_leader({
        let state = state.clone();
        async move {
            let every = std::time::Duration::from_secs_f64(state.config.history_interval_s);
            loop {
                tokio::time::sleep(every).await;
                if state.leads() {
                    state.services.sample_history(&state).await;
                }
            }
        }
    }));
    let app = api::router(state.clone()).merge(dashboard::router());
    listen::serve(listener, app, &state.config.listener, shutdown_signal()).await?;
    controller.abort();
    services.abort();
    history.abort();
    if let Some(e) = election {
        e.abort();
        // Another server may lead at once rather than after the lease.
        if let Err(e) = state.store.resign(&state.candidate).await {
            tracing::warn!("giving up the lease: {e}");
        }
    }
    info!(
        "pharos server stopped; learners and replicas keep running and are re-attached at the next start"
    );
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
