//! Training jobs on a Ray cluster through the Ray Jobs REST API.
//!
//! Each learner of an attempt is one Ray job, its submission id
//! `pharos-<installation>-<job>-a<attempt>-l<learner>` (so submitting again is
//! harmless), its
//! entrypoint the manifest's command, its working directory the job's model directory
//! uploaded as a Ray package, and its environment FfDL's variables and the rendezvous
//! variables (as on the local backend; paths such as CHECKPOINT_DIR are this server's,
//! so they reach learners on other nodes only through a shared file system).
//!
//! A learner's directory under JOB_STATE_DIR holds `submitted` once Ray accepted it: a
//! submitted learner Ray no longer knows is [`LearnerStatus::Lost`] (a restarted head
//! forgets its jobs), one never submitted is not started. Ray's logs are copied into the
//! job's log files as it runs (at most once a second per learner, and once more when it
//! ends), so `pharos train logs` and the evaluation metrics read them as on the local
//! backend. Nothing is kept in memory.

use std::fs;
use std::path::PathBuf;

use pharos_engine::job_files;

use crate::client::{RayClient, RayError};
use pharos_engine::training::{Backend, BackendError, JobRun, LearnerStatus};
use serde_json::{Value, json};

pub struct RayBackend {
    client: RayClient,
    /// This installation's id (see [`pharos_engine::host::installation_id`]): submission ids are
    /// `pharos-<installation>-<job>-a<attempt>-l<learner>`, so two pharos servers (or a
    /// fresh store) on one Ray cluster never take each other's jobs for their own.
    installation: String,
    /// Where learners reach learner 1 (MASTER_ADDR): the Ray head's host.
    master_addr: String,
}

impl RayBackend {
    pub fn new(client: RayClient, installation: String) -> anyhow::Result<Self> {
        let master_addr = client
            .address()
            .trim_start_matches("http://")
            .split([':', '/'])
            .next()
            .unwrap_or("127.0.0.1")
            .to_string();
        Ok(Self {
            client,
            installation,
            master_addr,
        })
    }

    /// Backend calls run on the server runtime's blocking threads (`spawn_blocking`);
    /// the client's connections live on that runtime.
    fn block_on<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, RayError>>,
    ) -> Result<T, RayError> {
        match tokio::runtime::Handle::try_current() {
            Ok(h) => h.block_on(f),
            Err(_) => Err(RayError::Unreachable(
                self.client.address().to_string(),
                "called outside the server's runtime".into(),
            )),
        }
    }

    pub fn submission_id(&self, job: &JobRun, learner: u32) -> String {
        self.attempt_id(job, job.attempt, learner)
    }

    fn attempt_id(&self, job: &JobRun, attempt: u32, learner: u32) -> String {
        format!(
            "pharos-{}-{}-a{attempt}-l{learner}",
            self.installation, job.id
        )
    }

    fn learner_dir(job: &JobRun, learner: u32) -> PathBuf {
        job.paths
            .state
            .join(format!("attempt-{}", job.attempt))
            .join(format!("learner-{learner}"))
    }

    fn submitted(job: &JobRun, learner: u32) -> bool {
        Self::learner_dir(job, learner).join("submitted").exists()
    }

    /// Copies Ray's log of the learner into its log file, if it grew.
    fn mirror_logs(&self, job: &JobRun, learner: u32, id: &str) -> Result<(), BackendError> {
        let logs = self.block_on(self.client.job_logs(id)).map_err(err)?;
        job_files::store_log_copy(job, learner, logs.as_bytes())
    }

    /// What the learner's driver is given: FfDL's variables and the rendezvous ones.
    fn env(&self, job: &JobRun, learner: u32) -> serde_json::Map<String, Value> {
        let mut env = pharos_engine::job_files::learner_env(job, learner, None);
        // Ray gives each driver its own PATH, home and GPUs.
        for k in job_files::HOST_VARIABLES {
            if !job.env.contains_key(k) {
                env.remove(k);
            }
        }
        env.insert("MODEL_DIR".into(), ".".into());
        env.insert("MASTER_ADDR".into(), self.master_addr.clone());
        env.into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect()
    }
}

/// Ray unreachable or failing on its side (5xx) is worth retrying; a refusal (4xx) is
/// not.
fn err(e: RayError) -> BackendError {
    match &e {
        RayError::Unreachable(..) => BackendError::transient(e.to_string()),
        RayError::Status(s, _) if *s >= 500 => BackendError::transient(e.to_string()),
        _ => BackendError::new(e.to_string()),
    }
}

impl Backend for RayBackend {
    fn name(&self) -> &str {
        "ray"
    }

    /// Ray's nodes mount nothing pharos names: learners read their data themselves.
    fn supports_store(&self, _kind: &str) -> bool {
        false
    }

    fn prepare(&self, job: &JobRun) -> Result<(), BackendError> {
        let p = &job.paths;
        job_files::make_job_dirs(job)?;
        job_files::unpack_model(job)?;
        // Ray takes the model as a package: upload it now (content-addressed, so again
        // after a crash is the same package).
        self.block_on(self.client.upload_dir(&p.model))
            .map(|_| ())
            .map_err(err)
    }

    fn start(&self, job: &JobRun) -> Result<(), BackendError> {
        let m = &job.manifest;
        let working_dir = self
            .block_on(self.client.upload_dir(&job.paths.model))
            .map_err(err)?;
        for learner in 1..=m.learners {
            if Self::submitted(job, learner) {
                continue;
            }
            let dir = Self::learner_dir(job, learner);
            fs::create_dir_all(&dir).map_err(|e| BackendError::io(dir.display(), e))?;
            let id = self.submission_id(job, learner);
            let mut request = json!({
                "entrypoint": m.framework.command,
                "submission_id": id,
                "runtime_env": {"working_dir": working_dir, "env_vars": self.env(job, learner)},
                "metadata": {
                    "pharos_job": job.id.to_string(),
                    "attempt": job.attempt.to_string(),
                    "learner": learner.to_string(),
                },
                "entrypoint_num_cpus": m.cpus,
                "entrypoint_num_gpus": m.gpus,
            });
            if let Some(bytes) = m
                .memory
                .as_deref()
                .and_then(|x| pharos_core::parse_memory(x).ok())
                .filter(|b| *b > 0)
            {
                request["entrypoint_memory"] = json!(bytes);
            }
            self.block_on(self.client.submit_job(&request))
                .map_err(err)?;
            fs::write(dir.join("submitted"), &id)
                .map_err(|e| BackendError::io(dir.display(), e))?;
        }
        Ok(())
    }

    fn poll(&self, job: &JobRun) -> Result<Vec<LearnerStatus>, BackendError> {
        let mut out = Vec::new();
        for learner in 1..=job.manifest.learners {
            if !Self::submitted(job, learner) {
                out.push(LearnerStatus::NotStarted);
                continue;
            }
            let id = self.submission_id(job, learner);
            let status = match self.block_on(self.client.job(&id)).map_err(err)? {
                None => LearnerStatus::Lost,
                Some(v) => crate::client::learner_status(&v),
            };
            let final_copy = Self::learner_dir(job, learner).join("logs-copied");
            if status.ended() && status != LearnerStatus::Lost {
                if !final_copy.exists() {
                    self.mirror_logs(job, learner, &id)?;
                    let _ = fs::write(&final_copy, b"");
                }
            } else if status == LearnerStatus::Running && job_files::log_copy_due(job, learner) {
                self.mirror_logs(job, learner, &id)?;
            }
            out.push(status);
        }
        Ok(out)
    }

    fn signal(&self, job: &JobRun, _kill: bool) -> Result<(), BackendError> {
        // Ray's stop sends SIGTERM and kills the driver after its own grace period.
        for learner in 1..=job.manifest.learners {
            if Self::submitted(job, learner) {
                let id = self.submission_id(job, learner);
                self.block_on(self.client.stop_job(&id)).map_err(err)?;
            }
        }
        Ok(())
    }

    fn store_results(&self, job: &JobRun, outcome: &str) -> Result<(), BackendError> {
        for learner in 1..=job.manifest.learners {
            if Self::submitted(job, learner) {
                let id = self.submission_id(job, learner);
                // A lost job has no logs left; what was copied stays.
                match self.mirror_logs(job, learner, &id) {
                    Err(e) if e.transient => return Err(e),
                    _ => {}
                }
            }
        }
        job_files::write_results(job, outcome)
    }

    fn remove(&self, job: &JobRun) -> Result<(), BackendError> {
        // The job's files first: they go whatever Ray says.
        match fs::remove_dir_all(&job.paths.root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(BackendError::io(job.paths.root.display(), e)),
        }
        // Then Ray's record of every attempt's drivers (they have ended: a job is
        // removed only once its learners stopped).
        for attempt in 1..=job.attempt {
            for learner in 1..=job.manifest.learners {
                let id = self.attempt_id(job, attempt, learner);
                match self.block_on(self.client.delete_job(&id)) {
                    Ok(()) => {}
                    Err(e @ RayError::Status(400, _)) => {
                        tracing::warn!(job = job.id, "keeping Ray's record of {id}: {e}")
                    }
                    Err(e) => return Err(err(e)),
                }
            }
        }
        Ok(())
    }
}
