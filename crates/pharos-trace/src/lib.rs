//! Workload traces: per-minute request counts of inference jobs.
//!
//! Readers turn files into a [`RawTrace`] (series per job and day, as the file has them):
//! - [`Format::FaroJsonl`]: Faro's replay format, one JSON object per line,
//!   `{"ts": minute, "counts": {"serve-clusterK": {"classifier": n}}}`;
//! - [`Format::MinuteCsv`]: a CSV with a header holding at least `job,minute,requests`
//!   (and `day` when it has several days; other columns are ignored);
//! - [`Format::AzureFunctions`]: the Azure Functions 2019 per-minute invocation files,
//!   `HashOwner,HashApp,HashFunction,Trigger,1,...,1440`, one file per day.
//!
//! [`Selection`] then picks jobs, a day and a minute range and rescales to a peak,
//! giving a [`Trace`]: one series of requests per minute for each job, all of one length.
//! [`Generator`]s make synthetic traces (constant, diurnal, bursts, Markov-modulated).
//!
//! Malformed input gives a [`TraceError`] naming the file, the line and the problem.

mod error;
mod generate;
mod read;
mod select;

pub use error::TraceError;
pub use generate::{GeneratedJob, Generator, generate_trace};
pub use read::{Format, read_trace, read_trace_str};
pub use select::{Selection, parse_days};

/// Per-minute request counts of jobs, as a file holds them (possibly several days).
#[derive(Debug, Clone, PartialEq)]
pub struct RawTrace {
    pub series: Vec<Series>,
}

/// One job's requests per minute on one day (minute 0 first).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub job: String,
    /// The day the series belongs to, when the source says.
    pub day: Option<u32>,
    pub requests_per_min: Vec<f64>,
}

/// Requests per minute of each job, ready to replay: every job has the same number of
/// minutes.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub jobs: Vec<JobTrace>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobTrace {
    pub name: String,
    pub requests_per_min: Vec<f64>,
}

impl From<Trace> for RawTrace {
    /// A trace as raw series (no days), e.g. to apply a [`Selection`] to generated jobs.
    fn from(t: Trace) -> Self {
        RawTrace {
            series: t
                .jobs
                .into_iter()
                .map(|j| Series {
                    job: j.name,
                    day: None,
                    requests_per_min: j.requests_per_min,
                })
                .collect(),
        }
    }
}

impl Trace {
    /// The number of minutes (the same for every job).
    pub fn minutes(&self) -> usize {
        self.jobs.first().map_or(0, |j| j.requests_per_min.len())
    }

    /// Total requests of all jobs over the whole trace (expected value).
    pub fn total_requests(&self) -> f64 {
        self.jobs
            .iter()
            .map(|j| j.requests_per_min.iter().sum::<f64>())
            .sum()
    }

    /// Check the invariants a replay relies on: at least one job, equal lengths, finite
    /// non-negative counts.
    pub fn validate(&self) -> Result<(), TraceError> {
        if self.jobs.is_empty() {
            return Err(TraceError::invalid("the trace has no jobs"));
        }
        let n = self.minutes();
        for j in &self.jobs {
            if j.requests_per_min.len() != n {
                return Err(TraceError::invalid(format!(
                    "job {:?} has {} minutes but job {:?} has {n}",
                    j.name,
                    j.requests_per_min.len(),
                    self.jobs[0].name
                )));
            }
            if let Some((m, v)) = j
                .requests_per_min
                .iter()
                .enumerate()
                .find(|(_, v)| !(v.is_finite() && **v >= 0.0))
            {
                return Err(TraceError::invalid(format!(
                    "job {:?} minute {m}: requests must be finite and >= 0, got {v}",
                    j.name
                )));
            }
        }
        if n == 0 {
            return Err(TraceError::invalid("the trace has no minutes"));
        }
        Ok(())
    }
}
