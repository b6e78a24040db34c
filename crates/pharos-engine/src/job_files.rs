//! What every training engine does with a job's files on the server's machine: the
//! learners' environment, the job's directories, the model unpacked, logs copied in,
//! results written.

use std::collections::BTreeMap;
use std::fs::{self, File};
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

/// Keeps an engine's copy of a learner's log as its log file: rewritten when its length
/// changed, else touched, so that the next copy waits its second ([`log_copy_due`]).
pub fn store_log_copy(job: &JobRun, learner: u32, logs: &[u8]) -> Result<(), BackendError> {
    let path = job.paths.log_file(learner);
    let old = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if logs.len() as u64 != old {
        write_atomic(&path, logs).map_err(|e| BackendError::io(path.display(), e))?;
    } else {
        let _ = fs::File::options()
            .append(true)
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
