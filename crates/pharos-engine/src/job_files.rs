//! What every training engine does with a job's files on the server's machine: the
//! learners' environment, the job's directories, the model unpacked, logs copied in,
//! results written.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::host::write_atomic;
use crate::sandbox;
use crate::training::{BackendError, JobRun};

/// The environment of learner `learner` (1-based): FfDL's variables, the rendezvous
/// variables of distributed frameworks, and a minimal base (never pharos's own
/// credentials: the environment is built from scratch).
pub fn learner_env(job: &JobRun, learner: u32, exe_dir: Option<&Path>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let path = match exe_dir {
        Some(d) => format!("{}:{path}", d.display()),
        None => path,
    };
    env.insert("PATH".into(), path);
    for key in ["HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "TZ"] {
        if let Ok(v) = std::env::var(key) {
            env.insert(key.into(), v);
        }
    }
    let p = &job.paths;
    let s = |p: &Path| p.display().to_string();
    let n = job.manifest.learners;
    let gpus = job.manifest.gpus;
    env.insert("TRAINING_ID".into(), format!("training-{}", job.id));
    env.insert("LEARNER_ID".into(), learner.to_string());
    env.insert("NUM_LEARNERS".into(), n.to_string());
    env.insert("GPU_COUNT".into(), gpus.to_string());
    env.insert("MODEL_DIR".into(), s(&p.model));
    env.insert("DATA_DIR".into(), s(&job.data_dir()));
    env.insert("RESULT_DIR".into(), s(&job.result_dir()));
    env.insert("LOG_DIR".into(), s(&p.logs));
    env.insert("CHECKPOINT_DIR".into(), s(&p.checkpoints));
    env.insert("JOB_STATE_DIR".into(), s(&p.state));
    env.insert("ATTEMPT".into(), job.attempt.to_string());
    env.insert("MASTER_ADDR".into(), "127.0.0.1".into());
    env.insert("MASTER_PORT".into(), job.master_port.to_string());
    env.insert("RANK".into(), (learner - 1).to_string());
    env.insert("LOCAL_RANK".into(), (learner - 1).to_string());
    env.insert("WORLD_SIZE".into(), n.to_string());
    // The learner's own GPUs (none: an empty list, so that it uses no GPU).
    let devices = job
        .devices
        .get(learner as usize - 1)
        .map(|d| d.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    env.insert("CUDA_VISIBLE_DEVICES".into(), devices);
    for (k, v) in &job.env {
        if !k.starts_with("PHAROS_") {
            env.insert(k.clone(), v.clone());
        }
    }
    env
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// The variables of [`learner_env`] that describe this machine rather than the learner
/// (with the GPUs it was given here): engines whose learners run elsewhere drop them.
pub const HOST_VARIABLES: [&str; 8] = [
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "TZ",
    "CUDA_VISIBLE_DEVICES",
];

/// Keeps an engine's copy of a learner's log of this attempt as the end of its log file,
/// after what earlier attempts logged: where the attempt begins in the file is recorded
/// at its first copy (`state/attempt-N/learner-L/log_start`, as the local backend
/// records it), and the file is rewritten from there when its length changed, else
/// touched, so that the next copy waits its second ([`log_copy_due`]).
pub fn store_log_copy(job: &JobRun, learner: u32, logs: &[u8]) -> Result<(), BackendError> {
    let path = job.paths.log_file(learner);
    // Only a regular file of its own counts (a learner that can write the job's
    // directory may put a link there): anything else is replaced.
    let own = |p: &Path| {
        fs::symlink_metadata(p)
            .ok()
            .filter(|m| m.file_type().is_file())
            .map(|m| m.len())
    };
    let old = own(&path).unwrap_or(0);
    let dir = job
        .paths
        .state
        .join(format!("attempt-{}", job.attempt))
        .join(format!("learner-{learner}"));
    let start_file = dir.join(crate::training::LOG_START);
    let start = match crate::host::read_own_file(&start_file, 64)
        .and_then(|t| String::from_utf8(t).ok())
        .and_then(|t| t.trim().parse::<u64>().ok())
    {
        Some(s) => s.min(old),
        None => {
            fs::create_dir_all(&dir).map_err(|e| BackendError::io(dir.display(), e))?;
            write_atomic(&start_file, old.to_string().as_bytes())
                .map_err(|e| BackendError::io(start_file.display(), e))?;
            old
        }
    };
    if start + logs.len() as u64 != old {
        let mut text = if start > 0 {
            crate::host::read_own_file(&path, start).unwrap_or_default()
        } else {
            Vec::new()
        };
        text.extend_from_slice(logs);
        write_atomic(&path, &text).map_err(|e| BackendError::io(path.display(), e))?;
    } else {
        let _ = fs::File::options()
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    }
    Ok(())
}

/// Whether a running learner's log is due for another copy (at most once a second).
pub fn log_copy_due(job: &JobRun, learner: u32) -> bool {
    fs::metadata(job.paths.log_file(learner))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age >= std::time::Duration::from_secs(1))
}

/// Creates the job's own directories for results, logs, checkpoints and learner state
/// (engines whose learners run elsewhere; the local backend also makes DATA_DIR's).
pub fn make_job_dirs(job: &JobRun) -> Result<(), BackendError> {
    let p = &job.paths;
    for d in [&p.results, &p.logs, &p.checkpoints, &p.state] {
        fs::create_dir_all(d).map_err(|e| BackendError::io(d.display(), e))?;
    }
    Ok(())
}

/// Unpacks the model archive into MODEL_DIR (once; into a temporary directory, then
/// renamed, so a crash leaves no half model).
pub fn unpack_model(job: &JobRun) -> Result<(), BackendError> {
    let p = &job.paths;
    if p.model.is_dir() {
        return Ok(());
    }
    let tmp = p.root.join("model.unpacking");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| BackendError::io(tmp.display(), e))?;
    sandbox::own(&tmp, job.run_as, 0o700).map_err(|e| BackendError::io(tmp.display(), e))?;
    if let Some(archive) = &job.model_archive {
        let f = File::open(archive)
            .map_err(|e| BackendError::io(format!("model archive {}", archive.display()), e))?;
        // As the tenant: the files are its own, and nothing in the archive can make the
        // server write outside the directory.
        sandbox::as_user(job.run_as, || {
            let mut a = tar::Archive::new(f);
            a.set_preserve_permissions(false);
            a.set_preserve_ownerships(false);
            a.unpack(&tmp)
        })
        .map_err(|e| BackendError::new(format!("unpacking the model archive: {e}")))?;
    }
    fs::rename(&tmp, &p.model).map_err(|e| BackendError::io(p.model.display(), e))
}

/// Copies the logs next to the results and writes a summary (`_pharos.json`), as the
/// tenant's user when sandboxed (the results directory is the tenant's to write).
pub fn write_results(job: &JobRun, outcome: &str) -> Result<(), BackendError> {
    sandbox::as_user(job.run_as, || write_results_as(job, outcome))
}

fn write_results_as(job: &JobRun, outcome: &str) -> Result<(), BackendError> {
    let results = job.result_dir();
    let logs_to = results.join("_logs");
    fs::create_dir_all(&logs_to).map_err(|e| BackendError::io(logs_to.display(), e))?;
    if job.paths.logs.is_dir() {
        copy_dir(&job.paths.logs, &logs_to)
            .map_err(|e| BackendError::io(format!("copying logs to {}", logs_to.display()), e))?;
    }
    let summary = serde_json::json!({
        "training_id": format!("training-{}", job.id),
        "outcome": outcome,
        "attempt": job.attempt,
    });
    let path = results.join("_pharos.json");
    fs::write(
        &path,
        serde_json::to_vec_pretty(&summary).unwrap_or_default(),
    )
    .map_err(|e| BackendError::io(path.display(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::JobPaths;

    fn run(data: &Path, attempt: u32) -> JobRun {
        let manifest = serde_json::from_value(serde_json::json!({
            "name": "j",
            "framework": {"name": "custom", "version": "1", "command": "true"},
        }))
        .unwrap();
        JobRun {
            id: 7,
            manifest,
            paths: JobPaths::new(data, 7),
            model_archive: None,
            attempt,
            master_port: 0,
            placement: Vec::new(),
            devices: Vec::new(),
            env: Default::default(),
            run_as: None,
        }
    }

    #[test]
    fn an_engines_log_copies_keep_earlier_attempts_and_say_where_each_began() {
        let d = tempfile::tempdir().unwrap();
        let a1 = run(d.path(), 1);
        make_job_dirs(&a1).unwrap();
        store_log_copy(&a1, 1, b"step=1\n").unwrap();
        store_log_copy(&a1, 1, b"step=1\nstep=2\n").unwrap();
        // The second attempt's engine log starts empty again: the first stays before it.
        let a2 = run(d.path(), 2);
        store_log_copy(&a2, 1, b"resumed\n").unwrap();
        store_log_copy(&a2, 1, b"resumed\nstep=3\n").unwrap();
        let text = fs::read_to_string(a2.paths.log_file(1)).unwrap();
        assert_eq!(text, "step=1\nstep=2\nresumed\nstep=3\n");
        assert_eq!(a2.paths.attempt_starts(1), vec![(1, 0), (2, 14)]);
    }

    #[test]
    fn a_log_a_learner_turned_into_a_link_is_replaced_not_read() {
        let d = tempfile::tempdir().unwrap();
        let secret = d.path().join("secret");
        fs::write(&secret, "the server's token").unwrap();
        let a2 = run(d.path(), 2);
        make_job_dirs(&a2).unwrap();
        let log = a2.paths.log_file(1);
        std::os::unix::fs::symlink(&secret, &log).unwrap();
        // And a start offset that would take the linked file's bytes, and a link at
        // the temporary file's name.
        let dir = a2.paths.state.join("attempt-2/learner-1");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(crate::training::LOG_START), "100").unwrap();
        std::os::unix::fs::symlink(&secret, log.with_extension("tmp")).unwrap();
        store_log_copy(&a2, 1, b"mine\n").unwrap();
        assert_eq!(fs::read_to_string(&log).unwrap(), "mine\n");
        assert!(!fs::symlink_metadata(&log).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_to_string(&secret).unwrap(), "the server's token");
    }
}
