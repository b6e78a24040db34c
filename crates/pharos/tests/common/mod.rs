//! Helpers shared by the integration tests that start servers.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub const PHAROS: &str = env!("CARGO_BIN_EXE_pharos");
/// The example workloads (crate `pharos-workloads`), built into the same directory as
/// `pharos` (where the server looks for programs named without a path).
pub const REPLICA: &str = concat!(env!("CARGO_BIN_EXE_pharos"), "-replica");
pub const SGD: &str = concat!(env!("CARGO_BIN_EXE_pharos"), "-sgd");

/// The example workloads are there (`cargo test --workspace` builds them; a test of
/// this crate alone needs `cargo build -p pharos-workloads` first).
pub fn workloads_built() {
    for w in [REPLICA, SGD] {
        assert!(
            std::path::Path::new(w).is_file(),
            "{w} is missing: build the example workloads (cargo build -p pharos-workloads, with the same profile)"
        );
    }
}
pub const ADMIN: &str = "test-admin-token-0123456789";

pub struct Server {
    pub dir: tempfile::TempDir,
    /// The data directory (the temporary directory's `data`, or one shared with
    /// another server).
    data: PathBuf,
    /// Whether the data directory is this server's own (not another's it shares).
    owns_data: bool,
    pub url: String,
    pub child: Option<Child>,
    pub config: PathBuf,
    pub agent: ureq::Agent,
}

impl Server {
    /// A server with a test configuration plus `extra` (YAML lines).
    pub fn start(extra: &str) -> Server {
        Self::start_opts(extra, false)
    }

    /// A server whose data directory other users can reach (o+x), so that a server
    /// running as root can start tenants' code as other users (its sandbox).
    pub fn start_reachable(extra: &str) -> Server {
        Self::start_opts(extra, true)
    }

    /// A server on another's data directory (servers electing a leader share one).
    pub fn start_sharing(extra: &str, data: &std::path::Path) -> Server {
        Self::start_in(extra, false, Some(data.to_path_buf()))
    }

    fn start_opts(extra: &str, reachable: bool) -> Server {
        Self::start_in(extra, reachable, None)
    }

    fn start_in(extra: &str, reachable: bool, data: Option<PathBuf>) -> Server {
        workloads_built();
        let dir = tempfile::tempdir().unwrap();
        let owns_data = data.is_none();
        let data = data.unwrap_or_else(|| dir.path().join("data"));
        if reachable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        }
        let port = free_port();
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\ndata_dir: {}\ntick_ms: 100\nhalt_grace_s: 3\nrestart_backoff_s: 0.2\n{extra}\n",
                data.display()
            ),
        )
        .unwrap();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut s = Server {
            dir,
            data,
            owns_data,
            url: format!("http://127.0.0.1:{port}"),
            child: None,
            config,
            agent,
        };
        s.spawn();
        s
    }

    pub fn data(&self) -> PathBuf {
        self.data.clone()
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let child = Command::new(PHAROS)
            .arg("server")
            .arg("--config")
            .arg(&self.config)
            .env("PHAROS_ADMIN_TOKEN", ADMIN)
            // Where it records its data directory for local clients: the test's own.
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t0 = Instant::now();
        loop {
            if let Ok(r) = self.agent.get(format!("{}/healthz", self.url)).call()
                && r.status().is_success()
            {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "server did not start: {}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `kill -9` of the server.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn cli(&self, args: &[&str], token: &str) -> (bool, String, String) {
        let out = Command::new(PHAROS)
            .args(args)
            .env("PHAROS_URL", &self.url)
            .env("PHAROS_TOKEN", token)
            .env("PHAROS_CONFIG", self.dir.path().join("client.yaml"))
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let auth = format!("Bearer {}", token.unwrap_or(""));
        let resp = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(url);
                if token.is_some() {
                    r = r.header("Authorization", &auth);
                }
                r.call()
            }
            ("DELETE", _) => self.agent.delete(url).header("Authorization", &auth).call(),
            (m, Some((ct, bytes))) => {
                let r = match m {
                    "PATCH" => self.agent.patch(url),
                    "PUT" => self.agent.put(url),
                    _ => self.agent.post(url),
                };
                let mut r = r.content_type(ct);
                if token.is_some() {
                    r = r.header("Authorization", &auth);
                }
                r.send(&bytes[..])
            }
            _ => panic!("bad request helper use"),
        }
        .unwrap();
        let status = resp.status().as_u16();
        let text = resp.into_body().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub fn job(&self, id: i64) -> Value {
        let (status, v) = self.request("GET", &format!("/v1/models/{id}"), Some(ADMIN), None);
        assert_eq!(status, 200, "{v}");
        v
    }

    pub fn wait_state(&self, id: i64, state: &str, secs: u64) -> Value {
        let t0 = Instant::now();
        loop {
            let j = self.job(id);
            if j["state"] == state {
                return j;
            }
            let terminal =
                ["COMPLETED", "FAILED", "HALTED"].contains(&j["state"].as_str().unwrap_or(""));
            assert!(
                !(terminal && ["COMPLETED", "FAILED", "HALTED"].contains(&state))
                    || j["state"] == state,
                "job {id} ended {} instead of {state}: {j}\nlog:\n{}\nserver:\n{}",
                j["state"],
                self.log(id, 1),
                self.server_log()
            );
            assert!(
                t0.elapsed() < Duration::from_secs(secs),
                "job {id} not {state} after {secs} s: {j}\nlog:\n{}\nserver:\n{}",
                self.log(id, 1),
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self, id: i64, learner: u32) -> String {
        std::fs::read_to_string(
            self.data()
                .join(format!("jobs/{id}/logs/learner-{learner}.log")),
        )
        .unwrap_or_default()
    }

    /// Waits until learner 1 of job `id` has logged step `step`.
    pub fn wait_step(&self, id: i64, step: u32, secs: u64) {
        let t0 = Instant::now();
        while last_step(&self.log(id, 1)) < step {
            assert!(
                t0.elapsed() < Duration::from_secs(secs),
                "job {id} did not reach step {step}: {}\n{}",
                self.job(id),
                self.log(id, 1)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn submit(&self, manifest: &str) -> i64 {
        self.submit_as(ADMIN, manifest)
    }

    /// Submits `manifest` with `token` (its tenant's job).
    pub fn submit_as(&self, token: &str, manifest: &str) -> i64 {
        let (status, v) = self.request(
            "POST",
            "/v1/models",
            Some(token),
            Some(("application/yaml", manifest.as_bytes().to_vec())),
        );
        assert_eq!(status, 201, "{v}");
        v["id"].as_i64().unwrap()
    }

    pub fn events(&self, id: i64) -> String {
        let (_, v) = self.request("GET", &format!("/v1/models/{id}/events"), Some(ADMIN), None);
        v.to_string()
    }
    pub fn apply(&self, spec: &str) -> (u16, Value) {
        let name = spec
            .lines()
            .find_map(|l| l.strip_prefix("name: "))
            .unwrap_or("x")
            .trim();
        self.put_yaml(&format!("/v1/services/{name}"), ADMIN, spec)
    }

    /// `PUT path` of a YAML document as `token`: the status and the answer.
    pub fn put_yaml(&self, path: &str, token: &str, yaml: &str) -> (u16, Value) {
        self.request(
            "PUT",
            path,
            Some(token),
            Some(("application/yaml", yaml.as_bytes().to_vec())),
        )
    }

    pub fn service(&self, name: &str) -> Value {
        let (status, v) = self.request("GET", &format!("/v1/services/{name}"), Some(ADMIN), None);
        assert_eq!(status, 200, "{v}");
        v
    }

    pub fn service_events(&self, name: &str) -> String {
        let (_, v) = self.request(
            "GET",
            &format!("/v1/services/{name}/events"),
            Some(ADMIN),
            None,
        );
        v.to_string()
    }

    /// Waits until `f` holds of the service's status.
    pub fn wait_service(
        &self,
        name: &str,
        secs: u64,
        what: &str,
        f: impl Fn(&Value) -> bool,
    ) -> Value {
        let t0 = Instant::now();
        loop {
            let v = self.service(name);
            if f(&v) {
                return v;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(secs),
                "service {name}: not {what} after {secs} s: {v}\nevents: {}\nserver:\n{}",
                self.service_events(name),
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        // Stop the supervisors and routers first, so none starts a process while the
        // rest are being found.
        let _ = Command::new("pkill")
            .arg("-STOP")
            .arg("-f")
            .arg(self.data().to_string_lossy().as_ref())
            .status();
        // Learners of an unfinished test must not outlive it: kill every learner's
        // process group, then the supervisors.
        let jobs = self.data().join("jobs");
        for job in std::fs::read_dir(&jobs).into_iter().flatten().flatten() {
            for attempt in std::fs::read_dir(job.path().join("state"))
                .into_iter()
                .flatten()
                .flatten()
            {
                for learner in std::fs::read_dir(attempt.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    if let Some(pid) = std::fs::read_to_string(learner.path().join("pid"))
                        .ok()
                        .and_then(|t| t.trim().parse::<i32>().ok())
                    {
                        // SAFETY: killing the process group of a learner this test started.
                        unsafe { libc::kill(-pid, libc::SIGKILL) };
                    }
                }
            }
        }
        // And every service replica (each leads its own process group).
        for svc in std::fs::read_dir(self.data().join("services"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for f in std::fs::read_dir(svc.path().join("replicas"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let pid = std::fs::read_to_string(f.path())
                    .ok()
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                    .and_then(|v| v["pid"].as_i64());
                if let Some(pid) = pid {
                    // SAFETY: killing the process group of a replica this test started.
                    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                }
            }
        }
        // A learner whose supervisor was stopped before it wrote the pid file is found
        // by its working directory.
        for (pid, _) in processes_of(&self.data()) {
            // SAFETY: killing a process (and its group) working in this test's directory.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        let _ = Command::new("pkill")
            .arg("-9")
            .arg("-f")
            .arg(self.data().to_string_lossy().as_ref())
            .status();
        // Nothing left behind: no process working in the data directory or naming it
        // (learners, replicas, routers). Checked by the server that owns the directory
        // (one sharing it may be dropped while the owner still runs), unless the test
        // failed already.
        if self.owns_data && !std::thread::panicking() {
            let t0 = Instant::now();
            let mut left = processes_of(&self.data());
            while !left.is_empty() && t0.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(100));
                left = processes_of(&self.data());
            }
            assert!(left.is_empty(), "processes left behind: {left:?}");
        }
    }
}

/// Processes (pid, command line) working in `dir` or naming it on their command line.
pub fn processes_of(dir: &std::path::Path) -> Vec<(u32, String)> {
    let needle = dir.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|p| {
            let pid: u32 = p.file_name().to_string_lossy().parse().ok()?;
            if pid == std::process::id() {
                return None;
            }
            let cmd = std::fs::read(p.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let cwd = std::fs::read_link(p.path().join("cwd")).ok();
            (cmd.contains(&needle) || cwd.is_some_and(|c| c.starts_with(dir)))
                .then(|| (pid, cmd.trim().to_string()))
        })
        .collect()
}

/// Waits up to `secs` until `f` holds; otherwise fails with `what()`.
pub fn wait_until(secs: u64, mut f: impl FnMut() -> bool, what: impl Fn() -> String) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "not so after {secs} s: {}",
            what()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn last_step(log: &str) -> u32 {
    log.lines()
        .filter_map(|l| {
            l.strip_prefix("step=")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

/// Client threads sending requests to `url` one after another until stopped; counts
/// answers by kind.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub errors: std::sync::Arc<std::sync::atomic::AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(url: &str, clients: usize) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ok = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let errors = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, errors) = (stop.clone(), ok.clone(), errors.clone());
                let url = format!("{url}/infer");
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(20)))
                        .build()
                        .into();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        // The whole answer is read, as a client does (the router counts
                        // a request whose client left before its end as failed).
                        let answered = agent.get(&url).call().is_ok_and(|mut r| {
                            r.status().is_success() && r.body_mut().read_to_vec().is_ok()
                        });
                        match answered {
                            true => ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                            false => {
                                // The router down (a restart) refuses at once: do not spin.
                                std::thread::sleep(Duration::from_millis(10));
                                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                            }
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            errors,
            threads,
        }
    }

    /// Stops the clients; (answered 2xx, not).
    pub fn finish(self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        (
            self.ok.load(std::sync::atomic::Ordering::Relaxed),
            self.errors.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

/// Checks a service's router counters (`v`: its status, once idle) against what the
/// load's clients saw: every arrival completed, dropped or failed, and each client's
/// answer counted as the router counted it.
pub fn assert_counted(v: &Value, answered: u64, errors: u64) {
    let n = |k: &str| v["counters"][k].as_u64().unwrap_or(0);
    assert_eq!(
        n("arrivals"),
        n("completed") + n("dropped") + n("failed"),
        "{v}"
    );
    assert_eq!(answered, n("completed"), "{v}");
    assert_eq!(errors, n("dropped") + n("failed"), "{v}");
}

/// `PATH` with `dir` first (where a tool such as `ray` is installed).
pub fn path_with(dir: &std::path::Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// The router process of `service` under `data`: its pid, found by its command line.
pub fn router_pid(data: &std::path::Path, service: &str) -> Option<u32> {
    let socket = data.join(format!("services/{service}/router.sock"));
    let needle = socket.to_string_lossy().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|p| {
        let pid: u32 = p.file_name().to_string_lossy().parse().ok()?;
        let cmd = std::fs::read(p.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd);
        (cmd.contains("__router") && cmd.contains(&needle)).then_some(pid)
    })
}

/// A service status's replicas' pids, sorted.
pub fn pids(v: &Value) -> Vec<i64> {
    let mut p: Vec<i64> = v["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pid"].as_i64().unwrap())
        .collect();
    p.sort();
    p
}
