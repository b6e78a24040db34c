//! Service routers in processes of their own (`service_routers: process`), so that the
//! data plane outlives the control plane: a router keeps serving with its last replica
//! set while no server leads, and the next leader adopts it (and the replicas) without a
//! restart, as Kubernetes' kube-proxy and Ray Serve's proxies do.
//!
//! The router process (`pharos __router CONFIG-JSON`) runs the same [`Router`] on the
//! service's port, started by the leader in a session of its own, as the server's user.
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
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
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
        let n = lines
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            return Err("request too long".into());
        }
        let answer = match serde_json::from_str::<Control>(&line) {
            Ok(Control::Snapshot) => serde_json::to_value(Snapshot {
                service: cfg.service.clone(),
                listen: cfg.listen.clone(),
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
/// their way to it.
pub struct Remote {
    pub socket: PathBuf,
    mirror: Arc<Mutex<Mirror>>,
    tx: tokio::sync::mpsc::UnboundedSender<Control>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Mirror {
    stats: Option<Stats>,
    histogram: Vec<u64>,
    in_flight: BTreeMap<String, u32>,
    window: Vec<f64>,
    minute_window: Vec<f64>,
    /// The router process does not answer (since when, for the condition).
    unreachable: Option<String>,
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Remote {
    fn new(socket: PathBuf, first: Snapshot) -> Self {
        let mirror = Arc::new(Mutex::new(Mirror::default()));
        absorb(&mut mirror.lock_or_recover(), first);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Control>();
        let task = tokio::spawn({
            let mirror = mirror.clone();
            let socket = socket.clone();
            async move {
                let mut tick = tokio::time::interval(POLL);
                loop {
                    tokio::select! {
                        cmd = rx.recv() => {
                            let Some(cmd) = cmd else { return };
                            let exit = matches!(cmd, Control::Exit);
                            if let Err(e) = ask(&socket, &cmd).await {
                                warn!(socket = %socket.display(), "router control: {e}");
                            }
                            if exit {
                                return;
                            }
                        }
                        _ = tick.tick() => {
                            match ask(&socket, &Control::Snapshot).await {
                                Ok(v) => match serde_json::from_value::<Snapshot>(v) {
                                    Ok(s) => absorb(&mut mirror.lock_or_recover(), s),
                                    Err(e) => mirror.lock_or_recover().unreachable = Some(e.to_string()),
                                },
                                Err(e) => mirror.lock_or_recover().unreachable = Some(e),
                            }
                        }
                    }
                }
            }
        });
        Remote {
            socket,
            mirror,
            tx,
            task,
        }
    }

    pub fn send(&self, c: Control) {
        let _ = self.tx.send(c);
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
    if let Ok(v) = ask(&cfg.socket, &Control::Snapshot).await
        && let Ok(s) = serde_json::from_value::<Snapshot>(v)
        && s.listen == cfg.listen
    {
        info!(
            service = cfg.service,
            listen = cfg.listen,
            "adopted the running router process"
        );
        return Ok(Router::remote(Remote::new(cfg.socket.clone(), s)));
    }
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
    let config = serde_json::to_string(&cfg).map_err(|e| e.to_string())?;
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
            // Its own session: it outlives the server.
            .process_group(0);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting the router process: {e}"))?;
    // Reaped by a thread of its own (it outlives this server if the server dies first).
    std::thread::spawn(move || {
        let _ = child.wait();
    });
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
            return Ok(Router::remote(Remote::new(cfg.socket.clone(), s)));
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let log = std::fs::read_to_string(dir.join("router.log")).unwrap_or_default();
            let last = log.lines().last().unwrap_or("").to_string();
            return Err(format!("the router process did not start: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
