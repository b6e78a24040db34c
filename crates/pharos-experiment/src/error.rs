use std::path::PathBuf;

use pharos_core::SpecError;
use pharos_policy::PolicyError;
use pharos_trace::TraceError;
use thiserror::Error;

/// Why an experiment cannot be loaded or run.
#[derive(Debug, Error)]
pub enum ExperimentError {
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a valid experiment: {problem}")]
    Yaml { file: PathBuf, problem: String },
    #[error("{file}: {error}")]
    Spec { file: PathBuf, error: SpecError },
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error(transparent)]
    Policy(PolicyError),
    #[error("{0}")]
    Other(String),
}
