//! The local engine: services' replicas as processes on this machine ([`replicas`],
//! [`LocalReplicas`]), and training: [`LocalBackend`] runs learners as processes on this machine. Each learner is started
//! through a small supervisor (`pharos __learner`, [`learner_main`]) in its own session,
//! so it outlives a crash of the server. The supervisor holds an exclusive lock on the
//! learner's `lock` file for as long as it lives - the server takes that lock *before*
//! starting it and hands it over, so there is no moment when a learner runs unlocked -
//! writes the learner's pid, and when the learner ends writes `exit.json` (its exit code
//! or signal) atomically. A restarted server learns everything from these files: a held
//! lock is a running learner, `exit.json` an ended one, neither a learner never started.
//!
//! Architecture Invariant: every action is idempotent and keyed by (job, attempt,
//! learner); nothing here keeps state in memory.

pub mod cpu_limits;
pub mod replicas;

pub use cpu_limits::CpuLimits;
pub use replicas::LocalReplicas;

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pharos_engine::host::write_atomic;
use pharos_engine::job_files::{learner_env, unpack_model, write_results};
use pharos_engine::sandbox::{self, RunAs};
use pharos_engine::training::{Backend, BackendError, JobRun, LearnerStatus};

use serde::{Deserialize, Serialize};

/// Learner processes on this machine.
pub struct LocalBackend {
    /// The `pharos` executable, which supervises each learner (`pharos __learner`).
    pub exe: PathBuf,
}

impl LocalBackend {
    pub fn new(exe: PathBuf) -> Self {
        Self { exe }
    }

    fn learner_dir(job: &JobRun, learner: u32) -> PathBuf {
        job.paths
            .state
            .join(format!("attempt-{}", job.attempt))
            .join(format!("learner-{learner}"))
    }
}

/// What the supervisor records when its learner ends.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ExitRecord {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

fn flock(f: &File, op: i32) -> std::io::Result<bool> {
    // SAFETY: flock on a valid open descriptor.
    let r = unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

fn open_lock(dir: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("lock"))
}

/// The exit record, if the supervisor wrote one.
fn read_exit(path: &Path) -> Result<Option<LearnerStatus>, BackendError> {
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(None);
    };
    let rec: ExitRecord = serde_json::from_str(&text)
        .map_err(|e| BackendError::new(format!("{}: {e}", path.display())))?;
    Ok(Some(LearnerStatus::Exited {
        code: rec.code,
        signal: rec.signal,
    }))
}

/// A learner's status from its directory.
pub fn learner_status(dir: &Path) -> Result<LearnerStatus, BackendError> {
    let exit = dir.join("exit.json");
    if let Some(ended) = read_exit(&exit)? {
        return Ok(ended);
    }
    if !dir.join("lock").exists() {
        return Ok(LearnerStatus::NotStarted);
    }
    let lock = open_lock(dir).map_err(|e| BackendError::io(dir.display(), e))?;
    if !flock(&lock, libc::LOCK_EX).map_err(|e| BackendError::io("flock", e))? {
        return Ok(LearnerStatus::Running);
    }
    // Nobody holds the lock. The exit record may have been written just before the
    // supervisor ended: look again while holding it.
    if let Some(ended) = read_exit(&exit)? {
        return Ok(ended);
    }
    if dir.join("pid").exists() {
        // The supervisor died without recording how its learner ended.
        Ok(LearnerStatus::Exited {
            code: None,
            signal: None,
        })
    } else {
        Ok(LearnerStatus::NotStarted)
    }
}

impl Backend for LocalBackend {
    fn name(&self) -> &str {
        "local"
    }

    fn supports_store(&self, kind: &str) -> bool {
        matches!(kind, "local" | "nfs")
    }

    fn prepare(&self, job: &JobRun) -> Result<(), BackendError> {
        let p = &job.paths;
        fn io(d: &Path) -> impl Fn(std::io::Error) -> BackendError + '_ {
            move |e| BackendError::io(d.display(), e)
        }
        let r = job.run_as;
        // The job's directory: passable (sandboxed) but the server's, so a tenant can
        // neither rename what the server keeps there nor list it.
        fs::create_dir_all(&p.root).map_err(io(&p.root))?;
        sandbox::own(&p.root, None, if r.is_some() { 0o711 } else { 0o700 })
            .map_err(io(&p.root))?;
        let home = home_dir(job);
        for d in [&p.data, &p.results, &p.checkpoints, &home] {
            if !d.is_dir() {
                fs::create_dir_all(d).map_err(io(d))?;
                sandbox::own(d, r, 0o700).map_err(io(d))?;
            }
        }
        // Logs and the supervisors' records: the server's; the tenant may read its logs.
        for d in [&p.logs, &p.state] {
            fs::create_dir_all(d).map_err(io(d))?;
        }
        sandbox::server_dir_readable_by(&p.logs, r).map_err(io(&p.logs))?;
        sandbox::own(&p.state, None, 0o700).map_err(io(&p.state))?;
        // A local store's paths are the tenant's: looked at and made as its user.
        sandbox::as_user(r, || {
            let data = job.data_dir();
            if !data.is_dir() {
                return Err(BackendError::new(format!(
                    "the training data directory {} does not exist{}",
                    data.display(),
                    if r.is_some() {
                        " or is not readable by the job's user"
                    } else {
                        ""
                    }
                )));
            }
            let results = job.result_dir();
            fs::create_dir_all(&results).map_err(|e| BackendError::io(results.display(), e))
        })?;
        unpack_model(job)
    }

    fn start(&self, job: &JobRun) -> Result<(), BackendError> {
        let exe_dir = self.exe.parent().map(Path::to_path_buf);
        for learner in 1..=job.manifest.learners {
            let dir = Self::learner_dir(job, learner);
            fs::create_dir_all(&dir).map_err(|e| BackendError::io(dir.display(), e))?;
            if dir.join("exit.json").exists() || dir.join("pid").exists() {
                continue; // ran (or runs) in this attempt
            }
            let lock = open_lock(&dir).map_err(|e| BackendError::io(dir.display(), e))?;
            if !flock(&lock, libc::LOCK_EX).map_err(|e| BackendError::io("flock", e))? {
                continue; // its supervisor is alive
            }
            let log = job.paths.log_file(learner);
            let mut env = learner_env(job, learner, exe_dir.as_deref());
            if job.run_as.is_some() {
                let home = home_dir(job).display().to_string();
                env.insert("HOME".into(), home.clone());
                env.insert("TMPDIR".into(), home);
                env.remove("USER");
            }
            let fd = lock.as_raw_fd();
            let mut cmd = Command::new(&self.exe);
            cmd.arg("__learner")
                .arg("--dir")
                .arg(&dir)
                .arg("--log")
                .arg(&log)
                .arg("--lock-fd")
                .arg(fd.to_string())
                .args(sandbox_args(job))
                .arg("--")
                .arg("/bin/sh")
                .arg("-c")
                .arg(&job.manifest.framework.command)
                .env_clear()
                .envs(&env)
                .current_dir(&job.paths.root)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setsid() < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // Hand the held lock to the supervisor.
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let mut child = cmd.spawn().map_err(|e| {
                BackendError::io(
                    format!("starting learner {learner} ({})", self.exe.display()),
                    e,
                )
            })?;
            drop(lock); // the supervisor's copy keeps the lock
            // Reap the supervisor when it ends (after a server restart, init does).
            std::thread::spawn(move || {
                let _ = child.wait();
            });
        }
        Ok(())
    }

    fn poll(&self, job: &JobRun) -> Result<Vec<LearnerStatus>, BackendError> {
        (1..=job.manifest.learners)
            .map(|l| learner_status(&Self::learner_dir(job, l)))
            .collect()
    }

    fn signal(&self, job: &JobRun, kill: bool) -> Result<(), BackendError> {
        let sig = if kill { libc::SIGKILL } else { libc::SIGTERM };
        for learner in 1..=job.manifest.learners {
            let dir = Self::learner_dir(job, learner);
            // Running, or its supervisor died without a record (its learner may live).
            let status = learner_status(&dir)?;
            let orphan = status
                == LearnerStatus::Exited {
                    code: None,
                    signal: None,
                }
                && !dir.join("exit.json").exists();
            if status != LearnerStatus::Running && !orphan {
                continue;
            }
            let Some(pgid) = fs::read_to_string(dir.join("pid"))
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
                .filter(|p| *p > 1)
            else {
                continue;
            };
            // SAFETY: kill(2) on the learner's own process group.
            unsafe {
                libc::kill(-pgid, sig);
            }
        }
        Ok(())
    }

    fn store_results(&self, job: &JobRun, outcome: &str) -> Result<(), BackendError> {
        write_results(job, outcome)
    }

    fn remove(&self, job: &JobRun) -> Result<(), BackendError> {
        match fs::remove_dir_all(&job.paths.root) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BackendError::io(job.paths.root.display(), e)),
        }
    }
}

/// A sandboxed job's home (HOME, TMPDIR and the learners' working directory).
fn home_dir(job: &JobRun) -> PathBuf {
    job.paths.root.join("home")
}

/// The supervisor's arguments that drop its learner's privileges.
fn sandbox_args(job: &JobRun) -> Vec<String> {
    match job.run_as {
        Some(r) => vec![
            "--uid".into(),
            r.uid.to_string(),
            "--gid".into(),
            r.gid.to_string(),
            "--max-processes".into(),
            r.max_processes.to_string(),
            "--max-open-files".into(),
            r.max_open_files.to_string(),
            "--cwd".into(),
            home_dir(job).display().to_string(),
        ],
        None => Vec::new(),
    }
}

// ----- the supervisor -----------------------------------------------------------

/// `pharos __learner --dir DIR --log FILE --lock-fd N -- PROGRAM ARGS...`: runs the
/// learner in its own process group with its output appended to FILE, holding the
/// lock (inherited as descriptor N) until the exit record is written. Returns the
/// supervisor's exit code.
pub fn learner_main(args: &[String]) -> i32 {
    match supervise(args) {
        Ok(()) => 0,
        Err((dir, e)) => {
            eprintln!("pharos __learner: {e}");
            // Record that the learner could not start, so that the server counts a
            // failure instead of starting it again and again.
            if let Some(dir) = dir {
                let rec = ExitRecord {
                    code: None,
                    signal: None,
                };
                let _ = write_atomic(
                    &dir.join("exit.json"),
                    &serde_json::to_vec(&rec).unwrap_or_default(),
                );
                let _ = fs::write(dir.join("error"), e.as_bytes());
            }
            2
        }
    }
}

fn supervise(args: &[String]) -> Result<(), (Option<PathBuf>, String)> {
    let (dir, result) = supervise_in(args);
    result.map_err(|e| (dir, e))
}

fn supervise_in(args: &[String]) -> (Option<PathBuf>, Result<(), String>) {
    let mut dir = None;
    let result = supervise_learner(args, &mut dir);
    (dir, result)
}

fn supervise_learner(args: &[String], dir_out: &mut Option<PathBuf>) -> Result<(), String> {
    let mut dir = None;
    let mut log = None;
    let mut lock_fd = None;
    let mut cwd = None;
    let (mut uid, mut gid, mut nproc, mut nofile) = (None, None, None, None);
    let mut it = args.iter();
    let mut program = Vec::new();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dir" => dir = it.next().map(PathBuf::from),
            "--log" => log = it.next().map(PathBuf::from),
            "--lock-fd" => lock_fd = it.next().and_then(|v| v.parse::<i32>().ok()),
            "--cwd" => cwd = it.next().map(PathBuf::from),
            "--uid" => uid = it.next().and_then(|v| v.parse::<u32>().ok()),
            "--gid" => gid = it.next().and_then(|v| v.parse::<u32>().ok()),
            "--max-processes" => nproc = it.next().and_then(|v| v.parse::<u64>().ok()),
            "--max-open-files" => nofile = it.next().and_then(|v| v.parse::<u64>().ok()),
            "--" => {
                program = it.by_ref().cloned().collect();
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let dir = dir.ok_or("--dir is required")?;
    *dir_out = Some(dir.clone());
    let log = log.ok_or("--log is required")?;
    let lock_fd = lock_fd.ok_or("--lock-fd is required")?;
    if program.is_empty() {
        return Err("no program after --".into());
    }
    // The learner must not inherit the lock.
    // SAFETY: fcntl on the inherited descriptor.
    unsafe {
        libc::fcntl(lock_fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    // Where this attempt's output begins, for metrics by attempt (the supervisor's own
    // record, out of the learner's reach).
    let start = out.metadata().map_err(|e| e.to_string())?.len();
    fs::write(
        dir.join(pharos_engine::training::LOG_START),
        start.to_string(),
    )
    .map_err(|e| format!("{}: {e}", dir.display()))?;
    let run_as = match (uid, gid) {
        (Some(uid), Some(gid)) => Some(RunAs {
            uid,
            gid,
            max_processes: nproc.unwrap_or(2048),
            max_open_files: nofile.unwrap_or(4096),
        }),
        (None, None) => None,
        _ => return Err("--uid and --gid go together".into()),
    };
    if let Some(r) = run_as {
        // The tenant may read its learner's log, never write it but through stdout.
        use std::os::unix::fs::PermissionsExt;
        std::os::unix::fs::fchown(&out, None, Some(r.gid))
            .and_then(|()| out.set_permissions(fs::Permissions::from_mode(0o640)))
            .map_err(|e| format!("{}: {e}", log.display()))?;
    }
    // The learner runs as the tenant's user (when sandboxed); this supervisor stays the
    // server's, so the learner can neither signal it nor touch what it records.
    let mut cmd = Command::new(&program[0]);
    cmd.args(&program[1..])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    if let Some(c) = &cwd {
        cmd.current_dir(c);
    }
    sandbox::confine(&mut cmd, run_as);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {:?}: {e}", program[0]))?;
    write_atomic(&dir.join("pid"), child.id().to_string().as_bytes())
        .map_err(|e| format!("writing the pid: {e}"))?;
    let pgid = child.id() as i32;
    let status = child.wait().map_err(|e| e.to_string())?;
    // Whatever the learner left behind in its process group goes with it, so that a
    // restart never runs next to a leftover.
    // SAFETY: kill(2) on the learner's own process group.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let rec = ExitRecord {
        code: status.code(),
        signal: status.signal(),
    };
    write_atomic(
        &dir.join("exit.json"),
        &serde_json::to_vec(&rec).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("writing the exit record: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The states a restarted server reads from a learner's directory.
    #[test]
    fn learner_status_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(learner_status(d).unwrap(), LearnerStatus::NotStarted);
        // A held lock: a live supervisor.
        let held = open_lock(d).unwrap();
        assert!(flock(&held, libc::LOCK_EX).unwrap());
        assert_eq!(learner_status(d).unwrap(), LearnerStatus::Running);
        // The lock released with a pid but no exit record: the supervisor died.
        fs::write(d.join("pid"), "12345").unwrap();
        drop(held);
        assert_eq!(
            learner_status(d).unwrap(),
            LearnerStatus::Exited {
                code: None,
                signal: None
            }
        );
        // The exit record wins.
        write_atomic(&d.join("exit.json"), br#"{"code":null,"signal":9}"#).unwrap();
        assert_eq!(
            learner_status(d).unwrap(),
            LearnerStatus::Exited {
                code: None,
                signal: Some(9)
            }
        );
        // A corrupt record is an error, not a guess.
        fs::write(d.join("exit.json"), "{").unwrap();
        assert!(learner_status(d).is_err());
    }

    /// A lock held by another open file description is seen as held.
    #[test]
    fn a_second_lock_attempt_fails_while_held() {
        let dir = tempfile::tempdir().unwrap();
        let a = open_lock(dir.path()).unwrap();
        let b = open_lock(dir.path()).unwrap();
        assert!(flock(&a, libc::LOCK_EX).unwrap());
        assert!(!flock(&b, libc::LOCK_EX).unwrap());
        drop(a);
        assert!(flock(&b, libc::LOCK_EX).unwrap());
    }
}
