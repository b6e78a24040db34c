//! Service routers in processes of their own (`service_routers: process`), so that the
//! data plane outlives the control plane: a router keeps serving with its last replica
//! set while no server leads, and the next leader adopts it (and the replicas) without a
//! restart, as Kubernetes' kube-proxy and Ray Serve's proxies do.
//!
//! The router process (`pharos __router CONFIG-JSON`) runs the same [`Router`] on the
//! service's port, started by the leader in a process group of its own (as the learners
//! and replicas are; under systemd, `KillMode=process` keeps them when the server's unit
//! stops), as the server's user. One that stops answering is started again.
//! Its control is a Unix socket in the service's directory (mode 0600: the server's user
//! alone, never a TCP port a tenant could reach): one JSON request per line, one JSON
//! answer per line. The server's side is a [`Router`] whose calls go to that socket
//! ([`Remote`]): settings are sent in order, and every [`POLL`] a snapshot (statistics,
//! latencies completed since the last one) is mirrored, which the autoscalers read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pharos_engine::host::LockExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

use crate::router::{Router, Stats};

/// How often the server mirrors a router process's state.
pub const POLL: Duration = Duration::from_millis(100);

/// A control request or answer longer than this is refused (the replica list is the
/// largest: at most `MAX_REPLICAS` URLs).
const MAX_LINE: usize = 1 << 20;

/// What a router process is started with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouterProcess {
    pub service: String,
    /// host:port of the service's traffic.
    pub listen: String,
    pub socket: PathBuf,
    pub concurrency: usize,
    pub queue: usize,
    pub limits: crate::config::ListenerConfig,
}

/// One control request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Control {
    Snapshot,
    SetReplicas {
        replicas: Vec<String>,
    },
    SetAcceptRate {
        rate: f64,
    },
    SetSlo {
        latency_s: f64,
    },
    SetQueueTimeout {
        seconds: Option<f64>,
    },
    SetUnavailableTimeout {
        seconds: Option<f64>,
    },
    /// The service was deleted: stop.
    Exit,
}

/// A router's state as its process reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub service: String,
    pub listen: String,
    /// The router process's pid (a new one is given the settings again).
    pub pid: u32,
    pub stats: Stats,
    pub histogram: Vec<u64>,
    pub in_flight: BTreeMap<String, u32>,
    /// Latencies completed since the last snapshot (both windows drained).
    pub window: Vec<f64>,
    pub minute_window: Vec<f64>,
}

/// The router process's main: serves the service's port and the control socket until
/// told to exit. Returns the exit code.
pub fn router_main(args: &[String]) -> i32 {
    let cfg: RouterProcess = match args.first().map(|a| serde_json::from_str(a)) {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            eprintln!("pharos __router: bad configuration: {e}");
            return 2;
        }
        None => {
            eprintln!("pharos __router CONFIG-JSON");
            return 2;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pharos __router: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        match serve(cfg).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("pharos __router: {e}");
                1
            }
        }
    })
}

async fn serve(cfg: RouterProcess) -> Result<(), String> {
    let router = Router::new(&[], cfg.concurrency, cfg.queue);
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let _ = std::fs::remove_file(&cfg.socket);
    let control = UnixListener::bind(&cfg.socket)
        .map_err(|e| format!("control socket {}: {e}", cfg.socket.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("control socket {}: {e}", cfg.socket.display()))?;
    }
    eprintln!(
        "router of {} on {} (pid {}), control {}",
        cfg.service,
        cfg.listen,
        std::process::id(),
        cfg.socket.display()
    );
    let app = crate::router::app(router.clone());
    let limits = cfg.limits.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::listen::serve(listener, app, &limits, std::future::pending()).await {
            eprintln!("the router stopped serving: {e}");
            std::process::exit(1);
        }
    });
    loop {
        let (stream, _) = control.accept().await.map_err(|e| e.to_string())?;
        let router = router.clone();
        let cfg = cfg.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &router, &cfg).await {
                eprintln!("control connection: {e}");
            }
        });
    }
}

/// Answers one control connection's requests, in order.
async fn answer(stream: UnixStream, router: &Router, cfg: &RouterProcess) -> Result<(), String> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        // At most MAX_LINE bytes are read for one request.
        let n = (&mut lines)
            .take(MAX_LINE as u64 + 1)
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE || !line.ends_with('\n') {
            return Err("request too long".into());
        }
        let answer = match serde_json::from_str::<Control>(&line) {
            Ok(Control::Snapshot) => serde_json::to_value(Snapshot {
                service: cfg.service.clone(),
                listen: cfg.listen.clone(),
                pid: std::process::id(),
                stats: router.stats(),
                histogram: router.histogram(),
                in_flight: router.in_flight_by_replica(),
                window: router.take_window(),
                minute_window: router.take_minute_window(),
            })
            .unwrap_or(Value::Null),
            Ok(Control::SetReplicas { replicas }) => {
                router.set_replicas(&replicas);
                json!({"ok": true})
            }
            Ok(Control::SetAcceptRate { rate }) => {
                router.set_accept_rate(rate);
                json!({"ok": true})
            }
            Ok(Control::SetSlo { latency_s }) => {
                router.set_slo(latency_s);
                json!({"ok": true})
            }
            Ok(Control::SetQueueTimeout { seconds }) => {
                router.set_queue_timeout(seconds);
                json!({"ok": true})
            }
            Ok(Control::SetUnavailableTimeout { seconds }) => {
                router.set_unavailable_timeout(seconds);
                json!({"ok": true})
            }
            Ok(Control::Exit) => {
                let _ = write.write_all(b"{\"ok\":true}\n").await;
                let _ = std::fs::remove_file(&cfg.socket);
                std::process::exit(0);
            }
            Err(e) => json!({"error": e.to_string()}),
        };
        let mut out = answer.to_string();
        out.push('\n');
        write
            .write_all(out.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
    }
}

/// One request to a router process's socket and its answer.
async fn ask(socket: &Path, req: &Control) -> Result<Value, String> {
    let stream = tokio::time::timeout(Duration::from_secs(2), UnixStream::connect(socket))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(req).map_err(|e| e.to_string())?;
    text.push('\n');
    write
        .write_all(text.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(2),
        BufReader::new(read).read_line(&mut line),
    )
    .await
    .map_err(|_| "timed out".to_string())?
    .map_err(|e| e.to_string())?;
    serde_json::from_str(&line).map_err(|e| format!("{e}: {line:?}"))
}

/// The server's side of a router process: what it last reported, and the settings on
/// their way to it (kept, to give a router process started again).
pub struct Remote {
    pub socket: PathBuf,
    mirror: Arc<Mutex<Mirror>>,
    desired: Arc<Mutex<Settings>>,
    tx: tokio::sync::mpsc::Sender<Control>,
    task: tokio::task::JoinHandle<()>,
}

/// Commands waiting for a router process at most (more are dropped with a warning:
/// the settings are also given again to a restarted router).
const PENDING: usize = 256;

/// Failed snapshots in a row after which the router process is started again.
const RESTART_AFTER: u32 = 20;

/// The settings the server last gave a router.
#[derive(Default, Clone)]
struct Settings {
    replicas: Option<Vec<String>>,
    accept_rate: Option<f64>,
    slo_s: Option<f64>,
    queue_timeout: Option<Option<f64>>,
    unavailable_timeout: Option<Option<f64>>,
}

impl Settings {
    fn commands(&self) -> Vec<Control> {
        let mut out = Vec::new();
        if let Some(r) = &self.replicas {
            out.push(Control::SetReplicas {
                replicas: r.clone(),
            });
        }
        if let Some(rate) = self.accept_rate {
            out.push(Control::SetAcceptRate { rate });
        }
        if let Some(latency_s) = self.slo_s {
            out.push(Control::SetSlo { latency_s });
        }
        if let Some(seconds) = self.queue_timeout {
            out.push(Control::SetQueueTimeout { seconds });
        }
        if let Some(seconds) = self.unavailable_timeout {
            out.push(Control::SetUnavailableTimeout { seconds });
        }
        out
    }
}

#[derive(Default)]
struct Mirror {
    stats: Option<Stats>,
    histogram: Vec<u64>,
    in_flight: BTreeMap<String, u32>,
    window: Vec<f64>,
    minute_window: Vec<f64>,
    /// The router process's pid, as it last said.
    pid: Option<u32>,
    /// Why the router process does not answer, while it does not.
    unreachable: Option<String>,
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Remote {
    fn new(exe: PathBuf, cfg: RouterProcess, first: Snapshot) -> Self {
        let socket = cfg.socket.clone();
        let mirror = Arc::new(Mutex::new(Mirror::default()));
        absorb(&mut mirror.lock_or_recover(), first);
        let desired = Arc::new(Mutex::new(Settings::default()));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Control>(PENDING);
        let task = tokio::spawn({
            let mirror = mirror.clone();
            let desired = desired.clone();
            async move {
                let mut tick = tokio::time::interval(POLL);
                let mut failures = 0u32;
                loop {
                    tokio::select! {
                        cmd = rx.recv() => {
                            let Some(cmd) = cmd else { return };
                            let exit = matches!(cmd, Control::Exit);
                            if let Err(e) = ask(&cfg.socket, &cmd).await {
                                warn!(service = cfg.service, "router control: {e}");
                            }
                            if exit {
                                return;
                            }
                        }
                        _ = tick.tick() => {
                            let snap = ask(&cfg.socket, &Control::Snapshot)
                                .await
                                .and_then(|v| serde_json::from_value::<Snapshot>(v).map_err(|e| e.to_string()));
                            match snap {
                                Ok(s) => {
                                    failures = 0;
                                    let known = mirror.lock_or_recover().pid;
                                    let fresh = known.is_some_and(|p| p != s.pid);
                                    absorb(&mut mirror.lock_or_recover(), s);
                                    if fresh {
                                        // A router started again: it is given every setting.
                                        let replay = desired.lock_or_recover().commands();
                                        for c in replay {
                                            let _ = ask(&cfg.socket, &c).await;
                                        }
                                    }
                                }
                                Err(e) => {
                                    failures += 1;
                                    mirror.lock_or_recover().unreachable = Some(e);
                                    if failures == RESTART_AFTER {
                                        warn!(service = cfg.service, "the router process does not answer; starting it again");
                                        if let Err(e) = spawn_process(&exe, &cfg) {
                                            warn!(service = cfg.service, "{e}");
                                        }
                                        failures = 0;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        });
        Remote {
            socket,
            mirror,
            desired,
            tx,
            task,
        }
    }

    /// Sends a setting (kept, and not sent again when it is the one last given).
    pub fn send(&self, c: Control) {
        {
            let mut d = self.desired.lock_or_recover();
            match &c {
                Control::SetReplicas { replicas } => {
                    if d.replicas.as_ref() == Some(replicas) {
                        return;
                    }
                    d.replicas = Some(replicas.clone());
                }
                Control::SetAcceptRate { rate } => {
                    if d.accept_rate == Some(*rate) {
                        return;
                    }
                    d.accept_rate = Some(*rate);
                }
                Control::SetSlo { latency_s } => d.slo_s = Some(*latency_s),
                Control::SetQueueTimeout { seconds } => d.queue_timeout = Some(*seconds),
                Control::SetUnavailableTimeout { seconds } => {
                    d.unavailable_timeout = Some(*seconds)
                }
                Control::Snapshot | Control::Exit => {}
            }
        }
        if self.tx.try_send(c).is_err() {
            warn!(socket = %self.socket.display(), "the router process is behind; a setting was dropped (it is given again on restart)");
        }
    }

    /// Ends the router process (its service was deleted): asked to exit, and signalled
    /// too (the service's directory, with the socket, may go before the request).
    pub fn stop(&self) {
        let pid = self.mirror.lock_or_recover().pid;
        let _ = self.tx.try_send(Control::Exit);
        if let Some(pid) = pid {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            if cmd.contains("__router") && cmd.contains(&*self.socket.to_string_lossy()) {
                // SAFETY: kill(2) of the router process this server started or adopted,
                // checked by its command line.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
        }
    }

    pub fn stats(&self) -> Option<Stats> {
        self.mirror.lock_or_recover().stats.clone()
    }

    pub fn histogram(&self) -> Vec<u64> {
        self.mirror.lock_or_recover().histogram.clone()
    }

    pub fn in_flight(&self) -> BTreeMap<String, u32> {
        self.mirror.lock_or_recover().in_flight.clone()
    }

    pub fn take_window(&self) -> Vec<f64> {
        std::mem::take(&mut self.mirror.lock_or_recover().window)
    }

    pub fn take_minute_window(&self) -> Vec<f64> {
        std::mem::take(&mut self.mirror.lock_or_recover().minute_window)
    }

    /// Why the router process does not answer, if it does not.
    pub fn unreachable(&self) -> Option<String> {
        self.mirror.lock_or_recover().unreachable.clone()
    }
}

fn absorb(m: &mut Mirror, s: Snapshot) {
    m.pid = Some(s.pid);
    m.stats = Some(s.stats);
    m.histogram = s.histogram;
    m.in_flight = s.in_flight;
    m.window.extend(s.window);
    if m.window.len() > crate::router::MINUTE_WINDOW_CAP {
        let extra = m.window.len() - crate::router::MINUTE_WINDOW_CAP;
        m.window.drain(..extra);
    }
    let room = crate::router::MINUTE_WINDOW_CAP.saturating_sub(m.minute_window.len());
    m.minute_window
        .extend(s.minute_window.into_iter().take(room));
    m.unreachable = None;
}

/// The router process of `cfg.service`: the running one adopted when its socket
/// answers for the same port, else a new one started (`exe __router`). The router
/// returned sends its calls there.
pub async fn attach_or_spawn(exe: &Path, cfg: RouterProcess) -> Result<Arc<Router>, String> {
    // A Unix socket's path is at most 107 bytes.
    if cfg.socket.as_os_str().len() > 107 {
        return Err(format!(
            "the router's control socket {} is longer than 107 bytes: give the server a shorter data_dir",
            cfg.socket.display()
        ));
    }
    if let Ok(v) = ask(&cfg.socket, &Control::Snapshot).await
        && let Ok(s) = serde_json::from_value::<Snapshot>(v)
        && s.listen == cfg.listen
    {
        info!(
            service = cfg.service,
            listen = cfg.listen,
            "adopted the running router process"
        );
        return Ok(Router::remote(Remote::new(exe.to_path_buf(), cfg, s)));
    }
    spawn_process(exe, &cfg)?;
    let t0 = std::time::Instant::now();
    loop {
        if let Ok(v) = ask(&cfg.socket, &Control::Snapshot).await
            && let Ok(s) = serde_json::from_value::<Snapshot>(v)
        {
            info!(
                service = cfg.service,
                listen = cfg.listen,
                "router process started"
            );
            return Ok(Router::remote(Remote::new(exe.to_path_buf(), cfg, s)));
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let log = cfg
                .socket
                .parent()
                .map(|d| std::fs::read_to_string(d.join("router.log")).unwrap_or_default())
                .unwrap_or_default();
            let last = log.lines().last().unwrap_or("").to_string();
            return Err(format!("the router process did not start: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts a router process (`exe __router CONFIG`) in a process group of its own, so
/// that it outlives the server; its output goes to `router.log` beside the socket.
fn spawn_process(exe: &Path, cfg: &RouterProcess) -> Result<(), String> {
    let dir = cfg
        .socket
        .parent()
        .ok_or("the control socket has no directory")?
        .to_path_buf();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("router.log"))
        .map_err(|e| format!("{}: {e}", dir.join("router.log").display()))?;
    let config = serde_json::to_string(cfg).map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new(exe);
    {
        use std::os::unix::process::CommandExt;
        cmd.arg("__router")
            .arg(config)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .process_group(0);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting the router process: {e}"))?;
    // Reaped by a thread of its own (it outlives this server if the server dies first).
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(())
}

/// Stops the router processes of services that no longer exist (deleted while no
/// server ran): every `router.sock` under `services_dir` whose service is not in `keep`.
pub async fn stop_orphans(services_dir: &Path, keep: &std::collections::HashSet<String>) {
    for dir in std::fs::read_dir(services_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = dir.file_name().to_string_lossy().to_string();
        let socket = dir.path().join("router.sock");
        if keep.contains(&name) || !socket.exists() {
            continue;
        }
        if ask(&socket, &Control::Exit).await.is_ok() {
            info!(
                service = name,
                "stopped the router process of a deleted service"
            );
        }
    }
}
