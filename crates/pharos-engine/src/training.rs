//! The seam between the control plane and an engine that runs learners. The controller
//! only asks for idempotent actions (prepare, start the learners of an attempt, poll,
//! signal, store results), so after a crash it can simply ask again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pharos_core::{GangPlacement, Manifest};

/// Where a job's files live under the data directory.
#[derive(Debug, Clone)]
pub struct JobPaths {
    pub root: PathBuf,
    /// The unpacked model definition (MODEL_DIR).
    pub model: PathBuf,
    /// Training data when the manifest names no local store (DATA_DIR).
    pub data: PathBuf,
    /// Results when the manifest names no local store (RESULT_DIR).
    pub results: PathBuf,
    /// Learner logs (LOG_DIR): `learner-<n>.log`.
    pub logs: PathBuf,
    /// Checkpoints (CHECKPOINT_DIR); they outlive attempts, so restarts resume.
    pub checkpoints: PathBuf,
    /// Per attempt and learner: lock, pid, exit code (JOB_STATE_DIR).
    pub state: PathBuf,
}

impl JobPaths {
    pub fn new(data_dir: &Path, id: i64) -> Self {
        let root = data_dir.join("jobs").join(id.to_string());
        Self {
            model: root.join("model"),
            data: root.join("data"),
            results: root.join("results"),
            logs: root.join("logs"),
            checkpoints: root.join("checkpoints"),
            state: root.join("state"),
            root,
        }
    }

    pub fn log_file(&self, learner: u32) -> PathBuf {
        self.logs.join(format!("learner-{learner}.log"))
    }

    /// Where each attempt of `learner` began in its log (byte offsets, as its supervisor
    /// recorded them when it opened the log: `state/attempt-N/learner-L/log_start`),
    /// attempts in order; empty where none was recorded (another engine).
    pub fn attempt_starts(&self, learner: u32) -> Vec<(u32, u64)> {
        let Ok(entries) = std::fs::read_dir(&self.state) else {
            return Vec::new();
        };
        let mut out: Vec<(u32, u64)> = entries
            .flatten()
            .filter_map(|e| {
                let n: u32 = e
                    .file_name()
                    .to_str()?
                    .strip_prefix("attempt-")?
                    .parse()
                    .ok()?;
                let text = std::fs::read_to_string(
                    e.path().join(format!("learner-{learner}")).join(LOG_START),
                )
                .ok()?;
                Some((n, text.trim().parse().ok()?))
            })
            .collect();
        out.sort_unstable();
        out
    }
}

/// The file in a learner's attempt directory holding where its log stood when the
/// attempt began.
pub const LOG_START: &str = "log_start";

/// Everything an engine needs to run one attempt of a job.
#[derive(Debug, Clone)]
pub struct JobRun {
    pub id: i64,
    pub manifest: Manifest,
    pub paths: JobPaths,
    /// The uploaded model archive (a tar file), if any.
    pub model_archive: Option<PathBuf>,
    /// 1 for the first start, +1 for each restart or resume.
    pub attempt: u32,
    /// The rendezvous port of this attempt.
    pub master_port: u16,
    pub placement: GangPlacement,
    /// Each learner's GPU device indices (empty without GPUs).
    pub devices: Vec<Vec<u32>>,
    /// Extra environment for the learners (never pharos's own credentials).
    pub env: BTreeMap<String, String>,
    /// The user the learners run as (the local backend's sandbox), None: the server's.
    pub run_as: Option<crate::sandbox::RunAs>,
}

impl JobRun {
    /// DATA_DIR: the first local/NFS store's training data, else the job's own.
    pub fn data_dir(&self) -> PathBuf {
        self.store_dir(|d| d.training_data.as_ref().map(|c| c.container.as_str()))
            .unwrap_or_else(|| self.paths.data.clone())
    }

    /// RESULT_DIR: the first local/NFS store's results container, else the job's own.
    pub fn result_dir(&self) -> PathBuf {
        self.store_dir(|d| d.training_results.as_ref().map(|c| c.container.as_str()))
            .unwrap_or_else(|| self.paths.results.clone())
    }

    fn store_dir(&self, pick: impl Fn(&pharos_core::DataStore) -> Option<&str>) -> Option<PathBuf> {
        self.manifest
            .data_stores
            .iter()
            .filter(|d| matches!(d.kind.as_str(), "local" | "nfs"))
            .find_map(|d| {
                let container = pick(d)?;
                let base = PathBuf::from(d.connection.get("path")?);
                Some(if container.is_empty() {
                    base
                } else {
                    base.join(container)
                })
            })
    }
}

/// How one learner of an attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnerStatus {
    /// Not started (or its start was lost before it ran).
    NotStarted,
    Running,
    /// Ended: the exit code, or the signal that killed it.
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// Started, but the engine no longer knows it (e.g. a restarted Ray head lost its
    /// jobs): it ended, and how is unknown.
    Lost,
}

impl LearnerStatus {
    pub fn succeeded(self) -> bool {
        matches!(self, LearnerStatus::Exited { code: Some(0), .. })
    }
    pub fn ended(self) -> bool {
        matches!(self, LearnerStatus::Exited { .. } | LearnerStatus::Lost)
    }
    pub fn describe(self) -> String {
        match self {
            LearnerStatus::NotStarted => "not started".into(),
            LearnerStatus::Running => "running".into(),
            LearnerStatus::Exited {
                signal: Some(s), ..
            } => format!("killed by signal {s}"),
            LearnerStatus::Exited { code: Some(c), .. } => format!("exited with code {c}"),
            LearnerStatus::Exited { .. } => "ended without a recorded status".into(),
            LearnerStatus::Lost => "lost: the engine no longer knows it".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    pub message: String,
    /// The engine could not be reached (or was busy): the same call may succeed later,
    /// so the job keeps its state and the call is retried with a back-off.
    pub transient: bool,
    /// Nothing failed: the engine cannot start the gang yet (its nodes have no room for
    /// every learner). The job keeps its state and the call is asked again shortly.
    pub waiting: bool,
}

impl BackendError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: false,
            waiting: false,
        }
    }
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: true,
            waiting: false,
        }
    }
    /// The gang does not fit the engine's nodes yet (`message` says what is short).
    pub fn waiting(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: true,
            waiting: true,
        }
    }
    pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> Self {
        Self::new(format!("{what}: {e}"))
    }
}

/// An engine that runs learners. Every method is idempotent.
pub trait Backend: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// Data stores of these kinds can be served (e.g. `local`, `nfs`).
    fn supports_store(&self, kind: &str) -> bool;
    /// Creates the job's directories and unpacks its model (the DOWNLOADING phase).
    fn prepare(&self, job: &JobRun) -> Result<(), BackendError>;
    /// Starts every learner of `job.attempt` that has not started.
    fn start(&self, job: &JobRun) -> Result<(), BackendError>;
    /// Each learner's status in `job.attempt` (learner 1 first).
    fn poll(&self, job: &JobRun) -> Result<Vec<LearnerStatus>, BackendError>;
    /// Asks the attempt's learners to stop (SIGTERM), or kills them (`kill`).
    fn signal(&self, job: &JobRun, kill: bool) -> Result<(), BackendError>;
    /// Stores logs and a summary with the results (the STORING phase).
    fn store_results(&self, job: &JobRun, outcome: &str) -> Result<(), BackendError>;
    /// Removes a deleted job's files.
    fn remove(&self, job: &JobRun) -> Result<(), BackendError>;
    /// What the engine knows of why `learner` of the attempt ended, beyond its status
    /// (say, the node it ran on was lost), for the job's events; read after [`poll`]
    /// saw it end.
    ///
    /// [`poll`]: Backend::poll
    fn failure_detail(&self, _job: &JobRun, _learner: u32) -> Option<String> {
        None
    }
}
