//! Services' replicas as processes on this machine, behind the same [`ServiceEngine`]
//! seam as Ray Serve and Kubernetes.
//!
//! A replica is the service's command with `$PORT`, started in its own session (it
//! outlives the server) as the tenant's user when sandboxed, with a scrubbed
//! environment, in the service's work directory. Its process id, port and start time
//! are kept in `<data_dir>/services/<name>/replicas/<id>.json` (its output next to it,
//! `<id>.log`), so a restarted server adopts the replicas still alive instead of
//! orphaning them: a process is named by its pid and its start time, so a reused pid is
//! never mistaken for it.
//!
//! Each pass ([`ServiceEngine::sync`]): starting replicas are probed (a GET of the
//! readiness path answering 2xx makes one ready); replicas that exited, that were not
//! ready within `ready_timeout_s`, that finished draining or that ignore SIGTERM for
//! 5 s are dealt with; then each service is brought toward its target - new replicas
//! within the vCPUs the others leave free (services in name order), after a failed
//! start only once its back-off (1 s, 2 s, ... 300 s) has passed, and from the second
//! failure in a row the service is reported failing (a crash loop); extra ones are removed newest starting first, then the ready ones
//! with the fewest requests in flight, which drain before they are stopped.
//!
//! Architecture invariant: what a restarted server needs is on disk before a replica
//! is reported; nothing a replica writes is read back (its records and logs are out of
//! its reach).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use pharos_engine::host::{Backoff, LockExt, free_port, write_atomic};
use pharos_engine::sandbox::{self, RunAs};
use pharos_engine::service::{
    EngineReplica, Phase, ReplicaProcess, Report, ServiceEngine, ServiceSpec, Want,
};
use serde::{Deserialize, Serialize};

use crate::cpu_limits::CpuLimits;

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
    cold_start_s: Option<f64>,
    adopted: bool,
    /// The vCPU limit its group has (None: no limits kept, or not known yet).
    cpus: Option<f64>,
    /// A size its group refused (said once, not tried again until the size changes).
    refused: Option<f64>,
    /// When its listeners were last looked at (see [`exposed`]).
    checked: Instant,
}

impl Replica {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.file.port)
    }

    /// Why it may not serve, if it listens past loopback (see [`exposed`]).
    fn exposure(&self) -> Option<String> {
        let addr = exposed(self.file.pid).into_iter().next()?;
        Some(format!(
            "replica {} listens on {addr}, reachable from other machines past the router; \
             it must listen on $HOST ({REPLICA_HOST}) only",
            self.id
        ))
    }

    fn stop(&mut self) {
        signal_group(self.file.pid, libc::SIGTERM);
        self.phase = Phase::Stopping;
        self.since = Instant::now();
    }
}

/// One service's replicas.
struct Local {
    replicas: Vec<Replica>,
    next_id: u64,
    /// Starts that failed in a row (exit or abandoned), the latest's reason, and when
    /// the next is allowed.
    failures: u32,
    last_failure: String,
    not_before: Instant,
}

/// Samples of a log's length over time, `(unix ms, bytes)`, at most [`LogMarks::CAP`]:
/// when full every other one goes, so the span doubles and the spacing with it.
#[derive(Default)]
struct LogMarks(Vec<(i64, u64)>);

impl LogMarks {
    const CAP: usize = 512;
    /// Samples closer than this are not kept.
    const MIN_GAP_MS: i64 = 1000;

    fn note(&mut self, now_ms: i64, len: u64) {
        if let Some(&(t, l)) = self.0.last()
            && (l == len || now_ms - t < Self::MIN_GAP_MS)
        {
            return;
        }
        if self.0.len() == Self::CAP {
            let mut i = 0;
            self.0.retain(|_| {
                i += 1;
                i % 2 == 0
            });
        }
        self.0.push((now_ms, len));
    }

    /// The length at `unix_ms`: the latest sample at or before it (0 before any).
    fn at(&self, unix_ms: i64) -> u64 {
        let i = self.0.partition_point(|&(t, _)| t <= unix_ms);
        if i == 0 { 0 } else { self.0[i - 1].1 }
    }
}

/// The local service engine.
pub struct LocalReplicas {
    data_dir: PathBuf,
    services: Mutex<BTreeMap<String, Local>>,
    /// Samples of each running replica's log length, by (service, replica).
    log_marks: Mutex<BTreeMap<(String, u64), LogMarks>>,
    /// Each replica held to its vCPUs (and resized in place), when configured.
    cpu_limits: Option<CpuLimits>,
}

/// One pass's events for a service.
type Events = Vec<(&'static str, String)>;

impl LocalReplicas {
    /// Replicas of services kept under `data_dir` (the server's, absolute).
    pub fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            services: Mutex::new(BTreeMap::new()),
            log_marks: Mutex::new(BTreeMap::new()),
            cpu_limits: None,
        }
    }

    /// Holds every replica to its service's vCPUs with `limits`, and resizes running
    /// replicas in place when a service's vCPUs per replica change.
    pub fn with_cpu_limits(mut self, limits: CpuLimits) -> Self {
        self.cpu_limits = Some(limits);
        self
    }

    fn services(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Local>> {
        self.services.lock_or_recover()
    }

    fn svc_dir(&self, name: &str) -> PathBuf {
        self.data_dir.join("services").join(name)
    }

    fn replicas_dir(&self, name: &str) -> PathBuf {
        self.svc_dir(name).join("replicas")
    }

    fn log_of(&self, name: &str, id: u64) -> PathBuf {
        self.replicas_dir(name).join(format!("{id}.log"))
    }

    /// The service's replicas still alive from an earlier server, adopted (the records
    /// of the others removed).
    fn adopt(&self, name: &str, events: &mut Events) -> Local {
        let mut l = Local {
            replicas: Vec::new(),
            next_id: 1,
            failures: 0,
            last_failure: String::new(),
            not_before: Instant::now(),
        };
        let Ok(entries) = std::fs::read_dir(self.replicas_dir(name)) else {
            return l;
        };
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
            l.next_id = l.next_id.max(id + 1);
            match file {
                Some(f) if alive(&f) => {
                    events.push((
                        "adopted",
                        format!("replica {id} (pid {}) adopted after a restart", f.pid),
                    ));
                    let cpus = self.cpu_limits.as_ref().and_then(|c| c.get(name, id));
                    l.replicas.push(Replica {
                        id,
                        file: f,
                        child: None,
                        phase: Phase::Starting,
                        since: Instant::now(),
                        cold_start_s: None,
                        adopted: true,
                        cpus,
                        refused: None,
                        checked: Instant::now(),
                    });
                }
                _ => {
                    let _ = std::fs::remove_file(&path);
                    self.remove_group(name, id);
                }
            }
        }
        l.replicas.sort_by_key(|r| r.id);
        l
    }

    async fn pass(&self, wants: &[Want]) -> Vec<Report> {
        let mut events: BTreeMap<String, Events> = BTreeMap::new();
        // Services seen for the first time adopt what an earlier server left running;
        // the starting replicas are probed without the lock.
        let probes: Vec<(String, u64, u16, String)> = {
            let mut g = self.services();
            for w in wants {
                if !g.contains_key(&w.name) {
                    let l = self.adopt(&w.name, events.entry(w.name.clone()).or_default());
                    g.insert(w.name.clone(), l);
                }
            }
            wants
                .iter()
                .flat_map(|w| {
                    g[&w.name]
                        .replicas
                        .iter()
                        .filter(|r| r.phase == Phase::Starting)
                        .map(|r| {
                            (
                                w.name.clone(),
                                r.id,
                                r.file.port,
                                w.spec.readiness_path.clone(),
                            )
                        })
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let mut ready = Vec::new();
        for (name, id, port, path) in probes {
            if probe(port, &path).await {
                ready.push((name, id));
            }
        }
        let mut g = self.services();
        for (name, id) in ready {
            if let Some(l) = g.get_mut(&name)
                && let Some(r) = l
                    .replicas
                    .iter_mut()
                    .find(|r| r.id == id && r.phase == Phase::Starting)
            {
                // Reachable from elsewhere, it would let clients bypass the router (its
                // admission and accounting): stopped, as a failed start.
                if let Some(why) = r.exposure() {
                    r.stop();
                    events
                        .entry(name.clone())
                        .or_default()
                        .push(("exposed", why.clone()));
                    backoff(l, why);
                    continue;
                }
                r.phase = Phase::Ready;
                if !r.adopted {
                    r.cold_start_s = Some(r.since.elapsed().as_secs_f64());
                }
                l.failures = 0;
            }
        }
        for w in wants {
            let ev = events.entry(w.name.clone()).or_default();
            let l = g.get_mut(&w.name).expect("added above");
            self.watch(w, l, ev);
            self.resize(w, l, ev);
        }
        // New replicas fit what the replicas left running leave free, services in name
        // order.
        let held: f64 = wants
            .iter()
            .map(|w| g[&w.name].replicas.len() as f64 * w.spec.cpus)
            .sum();
        let mut free_cpus = wants.first().map_or(0.0, |w| w.capacity_cpus) - held;
        let mut reports = Vec::with_capacity(wants.len());
        for w in wants {
            let ev = events.entry(w.name.clone()).or_default();
            let l = g.get_mut(&w.name).expect("added above");
            self.scale(w, l, &mut free_cpus, ev);
            if w.deleting && l.replicas.is_empty() {
                // Its records and logs leave with it.
                let _ = std::fs::remove_dir_all(self.svc_dir(&w.name));
            }
            reports.push(Report {
                name: w.name.clone(),
                present: !l.replicas.is_empty(),
                replicas: l.replicas.iter().map(report).collect(),
                status: String::new(),
                message: String::new(),
                events: std::mem::take(ev),
                failing: crash_loop(l),
            });
        }
        // Services no longer wanted at all (deleted and gone): forget them.
        g.retain(|name, l| !l.replicas.is_empty() || wants.iter().any(|w| &w.name == name));
        self.mark_logs(&g);
        reports
    }

    /// Samples how far each running replica's log has grown (for `--since`); forgets the
    /// samples of services gone.
    fn mark_logs(&self, g: &BTreeMap<String, Local>) {
        let now = now_ms();
        let mut marks = self.log_marks.lock_or_recover();
        // Kept while the replica runs (a stopped one's log is read from its start).
        marks.retain(|(name, id), _| {
            g.get(name)
                .is_some_and(|l| l.replicas.iter().any(|r| r.id == *id))
        });
        for (name, l) in g {
            for r in &l.replicas {
                if let Ok(m) = std::fs::metadata(self.log_of(name, r.id)) {
                    marks
                        .entry((name.clone(), r.id))
                        .or_default()
                        .note(now, m.len());
                }
            }
        }
    }

    /// Notices replicas that exited, that never became ready, that finished draining,
    /// and that ignore SIGTERM.
    fn watch(&self, w: &Want, l: &mut Local, events: &mut Events) {
        let name = &w.name;
        let mut failed: Option<String> = None;
        let mut i = 0;
        while i < l.replicas.len() {
            let r = &mut l.replicas[i];
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
                            "exited",
                            format!(
                                "replica {} (pid {}) {how} while {}; log: {}",
                                r.id,
                                r.file.pid,
                                format!("{:?}", r.phase).to_lowercase(),
                                self.log_of(name, r.id).display()
                            ),
                        ));
                        if r.phase == Phase::Starting {
                            failed = Some(format!("replica {} {how} before it was ready", r.id));
                        }
                    }
                    Phase::Stopping => {
                        events.push(("stopped", format!("replica {} stopped", r.id)));
                    }
                }
                let _ =
                    std::fs::remove_file(self.replicas_dir(name).join(format!("{}.json", r.id)));
                self.remove_group(name, r.id);
                l.replicas.remove(i);
                continue;
            }
            match r.phase {
                Phase::Starting if r.since.elapsed().as_secs_f64() > w.spec.ready_timeout_s => {
                    events.push((
                        "abandoned",
                        format!(
                            "replica {} abandoned: not ready at {} after {:.0} s; log: {}",
                            r.id,
                            w.spec.readiness_path,
                            w.spec.ready_timeout_s,
                            self.log_of(name, r.id).display()
                        ),
                    ));
                    failed = Some(format!(
                        "replica {} not ready at {} after {:.0} s",
                        r.id, w.spec.readiness_path, w.spec.ready_timeout_s
                    ));
                    r.stop();
                }
                // A ready replica that opens a listener past loopback later is stopped too.
                Phase::Ready if r.checked.elapsed() >= EXPOSURE_CHECK => {
                    r.checked = Instant::now();
                    if let Some(why) = r.exposure() {
                        events.push(("exposed", why.clone()));
                        failed = Some(why);
                        r.stop();
                    }
                }
                Phase::Draining if !w.in_flight.contains_key(&r.url()) => r.stop(),
                Phase::Stopping if r.since.elapsed() > Duration::from_secs(5) => {
                    signal_group(r.file.pid, libc::SIGKILL);
                }
                _ => {}
            }
            i += 1;
        }
        if let Some(why) = failed {
            backoff(l, why);
        }
    }

    /// Removes a replica's vCPU group, where limits are kept.
    fn remove_group(&self, name: &str, id: u64) {
        if let Some(c) = &self.cpu_limits {
            c.remove(name, id);
        }
    }

    /// Brings the vCPU limit of every replica not stopping to the service's vCPUs per
    /// replica (one event per change).
    fn resize(&self, w: &Want, l: &mut Local, events: &mut Events) {
        let Some(c) = &self.cpu_limits else { return };
        let cpus = w.spec.cpus;
        let mut changed = Vec::new();
        for r in l.replicas.iter_mut().filter(|r| r.phase != Phase::Stopping) {
            let same = |x: Option<f64>| x.is_some_and(|x| (x - cpus).abs() < 1e-6);
            if same(r.cpus) || same(r.refused) {
                continue;
            }
            match c.set(&w.name, r.id, cpus) {
                Ok(()) => {
                    if let Some(old) = r.cpus {
                        changed.push(format!("{} ({old} -> {cpus})", r.id));
                    }
                    r.cpus = Some(cpus);
                }
                Err(e) => {
                    r.refused = Some(cpus);
                    events.push(("resize-failed", format!("replica {}: {e}", r.id)))
                }
            }
        }
        if !changed.is_empty() {
            events.push((
                "resized",
                format!(
                    "vCPUs per replica now {cpus}: replicas {}",
                    changed.join(", ")
                ),
            ));
        }
    }

    /// Starts or drains replicas toward the target (new ones within `free_cpus`, which
    /// they take); a deleted service's are all stopped.
    fn scale(&self, w: &Want, l: &mut Local, free_cpus: &mut f64, events: &mut Events) {
        let target = if w.deleting { 0 } else { w.target };
        let active = l
            .replicas
            .iter()
            .filter(|r| matches!(r.phase, Phase::Starting | Phase::Ready))
            .count() as u32;
        if active < target {
            if Instant::now() < l.not_before {
                return;
            }
            for _ in active..target {
                if *free_cpus + 1e-9 < w.spec.cpus {
                    break;
                }
                match self.start(&w.spec, w.run_as, l) {
                    Ok(id) => {
                        *free_cpus -= w.spec.cpus;
                        events.push(("started", format!("replica {id} started")));
                    }
                    Err(e) => {
                        backoff(l, e.clone());
                        events.push(("start-failed", e));
                        break;
                    }
                }
            }
        } else if active > target {
            let mut extra = active - target;
            // Newest starting replicas first, then the ready ones with the fewest
            // requests; a deleted service's stop at once.
            let mut order: Vec<usize> = (0..l.replicas.len())
                .filter(|&i| matches!(l.replicas[i].phase, Phase::Starting | Phase::Ready))
                .collect();
            order.sort_by_key(|&i| {
                let r = &l.replicas[i];
                let busy = w.in_flight.get(&r.url()).copied().unwrap_or(0);
                (r.phase == Phase::Ready, busy, std::cmp::Reverse(r.id))
            });
            for i in order {
                if extra == 0 {
                    break;
                }
                let r = &mut l.replicas[i];
                if r.phase == Phase::Starting || w.deleting {
                    r.stop();
                } else {
                    r.phase = Phase::Draining;
                    r.since = Instant::now();
                }
                extra -= 1;
            }
        }
        if w.deleting {
            for r in l.replicas.iter_mut().filter(|r| r.phase == Phase::Draining) {
                r.stop();
            }
        }
    }

    /// Starts one replica process in its own session; records it on disk first.
    fn start(
        &self,
        spec: &ServiceSpec,
        run_as: Option<RunAs>,
        l: &mut Local,
    ) -> Result<u64, String> {
        use std::os::unix::process::CommandExt;
        let id = l.next_id;
        l.next_id += 1;
        let name = &spec.name;
        let dir = self.replicas_dir(name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // The replicas' working directory is theirs; their records and logs (next to
        // it) are the server's, out of their reach.
        let work = self.svc_dir(name).join("work");
        self.prepare_work_dir(name, &work, run_as)
            .map_err(|e| format!("{}: {e}", work.display()))?;
        let port = free_port("127.0.0.1").map_err(|e| format!("no free port: {e}"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_of(name, id))
            .map_err(|e| format!("replica log: {e}"))?;
        let err = log.try_clone().map_err(|e| format!("replica log: {e}"))?;
        let args: Vec<String> = spec.command[1..]
            .iter()
            .map(|a| {
                a.replace("${PORT}", &port.to_string())
                    .replace("$PORT", &port.to_string())
                    .replace("${HOST}", REPLICA_HOST)
                    .replace("$HOST", REPLICA_HOST)
            })
            .collect();
        let mut cmd = std::process::Command::new(resolve_program(&spec.command[0]));
        cmd.args(&args)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env(
                "HOME",
                if run_as.is_some() {
                    work.clone().into_os_string()
                } else {
                    std::env::var_os("HOME").unwrap_or_else(|| "/".into())
                },
            )
            .env("PORT", port.to_string())
            .env("HOST", REPLICA_HOST)
            .env("SERVICE", name)
            .env("REPLICA", id.to_string())
            .envs(&spec.env)
            .current_dir(&work)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err);
        sandbox::confine(&mut cmd, run_as);
        // Its vCPU limit before it runs anything.
        let group = match &self.cpu_limits {
            Some(c) => Some(
                c.prepare(name, id, spec.cpus)
                    .map_err(|e| format!("replica {id}: its vCPU limit: {e}"))?,
            ),
            None => None,
        };
        if let Some(f) = &group {
            use std::os::fd::AsRawFd;
            let fd = f.as_raw_fd();
            // SAFETY: only write(2) between fork and exec (join_in_child).
            unsafe {
                cmd.pre_exec(move || crate::cpu_limits::join_in_child(fd));
            }
        }
        // SAFETY: setsid between fork and exec (async-signal-safe): the replica leads its
        // own session and process group, and outlives the server.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            self.remove_group(name, id);
            format!("replica {id}: cannot start {:?}: {e}", spec.command[0])
        })?;
        drop(group);
        let pid = child.id() as i32;
        let file = ReplicaFile {
            pid,
            port,
            start_ticks: proc_start_ticks(pid).unwrap_or(0),
            started_ms: now_ms(),
        };
        let path = dir.join(format!("{id}.json"));
        if let Err(e) = write_atomic(&path, &serde_json::to_vec(&file).unwrap_or_default()) {
            tracing::warn!(service = name, "recording replica {id}: {e}");
        }
        l.replicas.push(Replica {
            id,
            file,
            child: Some(child),
            phase: Phase::Starting,
            since: Instant::now(),
            cold_start_s: None,
            adopted: false,
            cpus: self.cpu_limits.as_ref().map(|_| spec.cpus),
            refused: None,
            checked: Instant::now(),
        });
        Ok(id)
    }

    /// The service's directory passable (0711 when sandboxed), its replica records
    /// owner-only, and `work` the replicas' own.
    fn prepare_work_dir(
        &self,
        name: &str,
        work: &Path,
        run_as: Option<RunAs>,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let pass = if run_as.is_some() { 0o711 } else { 0o700 };
        std::fs::set_permissions(self.svc_dir(name), std::fs::Permissions::from_mode(pass))?;
        std::fs::set_permissions(
            self.replicas_dir(name),
            std::fs::Permissions::from_mode(0o700),
        )?;
        if !work.is_dir() {
            std::fs::create_dir_all(work)?;
        }
        // Made by the server: giving it away follows no link a tenant planted.
        sandbox::own(work, run_as, 0o700)
    }
}

impl ServiceEngine for LocalReplicas {
    fn name(&self) -> &'static str {
        "local"
    }

    fn check(&self, spec: &ServiceSpec) -> Result<(), String> {
        if spec.ray.is_some() {
            return Err("ray: this server runs services as local processes; give a command".into());
        }
        if spec.kubernetes.is_some() {
            return Err(
                "kubernetes: this server runs services as local processes; give a command".into(),
            );
        }
        Ok(())
    }

    fn runs_here(&self) -> bool {
        true
    }

    fn resizes(&self) -> bool {
        self.cpu_limits.is_some()
    }

    fn sync<'a>(&'a self, wants: &'a [Want]) -> BoxFuture<'a, Result<Vec<Report>, String>> {
        Box::pin(async move { Ok(self.pass(wants).await) })
    }

    fn replica_logs(&self, service: &str) -> Vec<(String, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(self.replicas_dir(service)) else {
            return Vec::new();
        };
        let mut ids: Vec<u64> = entries
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                (p.extension()? == "log").then_some(())?;
                p.file_stem()?.to_str()?.parse().ok()
            })
            .collect();
        ids.sort_unstable();
        ids.into_iter()
            .map(|id| (id.to_string(), self.log_of(service, id)))
            .collect()
    }

    fn log_offset_at(&self, service: &str, replica: &str, unix_ms: i64) -> u64 {
        let Ok(id) = replica.parse::<u64>() else {
            return 0;
        };
        self.log_marks
            .lock_or_recover()
            .get(&(service.to_string(), id))
            .map_or(0, |m| m.at(unix_ms))
    }
}

fn report(r: &Replica) -> EngineReplica {
    EngineReplica {
        id: r.id.to_string(),
        phase: r.phase,
        url: Some(r.url()),
        process: Some(ReplicaProcess {
            pid: r.file.pid,
            port: r.file.port,
            started_ms: r.file.started_ms,
            cold_start_s: r.cold_start_s,
            adopted: r.adopted,
        }),
    }
}

/// How often a ready replica's listeners are looked at again.
const EXPOSURE_CHECK: Duration = Duration::from_secs(10);

/// The address replicas must listen on (`HOST` in their environment, `$HOST` in
/// their command): the router, on this machine, is their only client.
pub const REPLICA_HOST: &str = "127.0.0.1";

/// The listening sockets of the processes in session `session` (a replica leads its
/// own) at an address other than loopback (`0.0.0.0`, `[::]`, a network's), as
/// `address:port`: ports where clients could reach the replica past its router. (A
/// guard against replicas that listen everywhere by default; a process that leaves the
/// session escapes it - keeping hostile code off the network would take a network
/// namespace.)
fn exposed(session: i32) -> Vec<String> {
    let mut inodes = std::collections::HashSet::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if session_of(pid) != Some(session) {
            continue;
        }
        for fd in std::fs::read_dir(e.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Some(n) = std::fs::read_link(fd.path()).ok().and_then(|l| {
                l.to_str()?
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            }) {
                inodes.insert(n);
            }
        }
    }
    if inodes.is_empty() {
        return Vec::new();
    }
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(listening_at)
                .filter(|(addr, _, inode)| !addr.is_loopback() && inodes.contains(inode))
                .map(|(addr, p, _)| std::net::SocketAddr::new(addr, p).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The session id of process `pid` (field 6 of its stat).
fn session_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command in parentheses: state, ppid, pgrp, session.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// The local address and socket inode of a `/proc/net/tcp{,6}` line in the LISTEN
/// state.
fn listening_at(line: &str) -> Option<(std::net::IpAddr, u16, u64)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
    if *state != "0A" {
        return None;
    }
    let inode: u64 = inode.parse().ok()?;
    let (hex, port) = local.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // Each 32-bit word of the address (network order) is printed as a native integer.
    let mut bytes = Vec::with_capacity(16);
    for i in (0..hex.len()).step_by(8) {
        let w = u32::from_str_radix(hex.get(i..i + 8)?, 16).ok()?;
        bytes.extend_from_slice(&w.to_ne_bytes());
    }
    let addr = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => {
            let v6 = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?);
            v6.to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4)
        }
        _ => return None,
    };
    Some((addr, port, inode))
}

/// After a failed start, the next waits 1 s, 2 s, 4 s, ... up to five minutes (as
/// Kubernetes' CrashLoopBackOff).
fn backoff(l: &mut Local, why: String) {
    l.failures += 1;
    l.last_failure = why;
    l.not_before = Instant::now() + Backoff::seconds(300).after(l.failures);
}

/// Starts failed in a row, from the second: the crash loop's account.
fn crash_loop(l: &Local) -> Option<String> {
    (l.failures >= 2).then(|| {
        let wait = l.not_before.saturating_duration_since(Instant::now());
        format!(
            "{} starts failed in a row, the latest: {}; next try in {} s",
            l.failures,
            l.last_failure,
            wait.as_secs_f64().ceil()
        )
    })
}

/// Whether `GET http://127.0.0.1:{port}{path}` answers 2xx within half a second.
async fn probe(port: u16, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        // The status line is all that is read: `HTTP/1.1 200 OK`.
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await?;
        std::io::Result::Ok(head.starts_with(b"HTTP/1.") && head[9] == b'2')
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), ask).await,
        Ok(Ok(true))
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Marks keep the length over time within their cap, the span doubling as it
    /// fills; a time maps to the length then.
    #[test]
    fn log_marks_map_a_time_to_the_length_then() {
        let mut m = LogMarks::default();
        assert_eq!(m.at(5), 0);
        for i in 0..2000i64 {
            m.note(i * 1000, (i as u64 + 1) * 10);
        }
        assert!(m.0.len() <= LogMarks::CAP);
        // The newest is kept; an older time maps to a length at or before it.
        assert_eq!(m.at(1_999_000), 20_000);
        let then = m.at(1_000_000);
        assert!((10_010 - 4 * 10 * 4..=10_010).contains(&then), "{then}");
        // Unchanged lengths and samples too close together add nothing.
        let n = m.0.len();
        m.note(2_000_000, 20_000);
        m.note(1_999_500, 20_500);
        assert_eq!(m.0.len(), n);
    }

    /// Sockets on loopback are private; on a wildcard or a network address, exposed -
    /// read back from the kernel's own tables for real listeners of both families.
    #[test]
    fn a_listener_past_loopback_is_exposed() {
        let private = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open4 = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = |l: &std::net::TcpListener| l.local_addr().unwrap().port();
        // SAFETY: getsid(0) asks for this process's own session.
        let me = unsafe { libc::getsid(0) };
        let found = exposed(me);
        assert!(
            found.contains(&format!("0.0.0.0:{}", port(&open4))),
            "{found:?}"
        );
        assert!(
            !found
                .iter()
                .any(|a| a.ends_with(&format!(":{}", port(&private))))
        );
        if let Ok(open6) = std::net::TcpListener::bind("[::]:0") {
            assert!(exposed(me).contains(&format!("[::]:{}", port(&open6))));
        }
        if let Ok(private6) = std::net::TcpListener::bind("[::1]:0") {
            let p = port(&private6);
            assert!(!exposed(me).iter().any(|a| a.ends_with(&format!(":{p}"))));
        }
        // Another session's listeners are not this one's.
        assert!(!exposed(i32::MAX).contains(&format!("0.0.0.0:{}", port(&open4))));
        // A connected socket is not a listener.
        let line = "   0: 0100007F:1F90 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000  1000        0 1";
        assert_eq!(listening_at(line), None);
        let line = "   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 77";
        let (addr, port, inode) = listening_at(line).unwrap();
        assert_eq!(
            (addr.to_string(), port, inode),
            ("0.0.0.0".to_string(), 8080, 77)
        );
    }

    #[tokio::test]
    async fn a_probe_is_ready_on_2xx_only() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            for answer in ["HTTP/1.1 200 OK", "HTTP/1.1 503 Service Unavailable"] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("{answer}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        assert!(probe(port, "/healthz").await);
        assert!(!probe(port, "/healthz").await);
        // Nothing listens: not ready.
        let free = free_port("127.0.0.1").unwrap();
        assert!(!probe(free, "/healthz").await);
    }
}
