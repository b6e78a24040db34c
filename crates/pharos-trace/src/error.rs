use std::path::PathBuf;

use thiserror::Error;

/// Why a trace could not be read or used.
#[derive(Debug, Error)]
pub enum TraceError {
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A problem at a place in a file. `line` is 1-based; 0 when the file as a whole is
    /// at fault.
    #[error("{file}:{line}: {problem}")]
    Malformed {
        file: PathBuf,
        line: u64,
        problem: String,
    },
    /// A selection or a trace that does not make sense as a whole.
    #[error("{0}")]
    Invalid(String),
}

impl TraceError {
    pub(crate) fn malformed(file: &std::path::Path, line: u64, problem: impl Into<String>) -> Self {
        TraceError::Malformed {
            file: file.to_path_buf(),
            line,
            problem: problem.into(),
        }
    }

    pub(crate) fn invalid(problem: impl Into<String>) -> Self {
        TraceError::Invalid(problem.into())
    }
}
