//! A deterministic discrete-event simulator of inference clusters.
//!
//! [`Simulation`] replays per-minute request counts ([`SimJob::requests_per_min`])
//! against jobs whose replicas an [`pharos_core::InferencePolicy`] scales, on a cluster
//! of fixed vCPU capacity, with the semantics of the Faro evaluation's model of Ray Serve
//! (see the [`inference`] docs). It records per job and minute what the SLO metrics need
//! ([`MinuteRecord`]) and summarises a run ([`Summary`]).
//!
//! Every random draw comes from per-job, per-purpose PCG streams derived from one seed,
//! so the same seed gives the same result, and two policies run on the same seed see
//! the same arrivals and service times (common random numbers).

mod config;
mod dist;
pub mod graph;
pub mod inference;
mod metrics;
mod queue;
pub mod shared;
pub mod training;

pub use config::{ArrivalCount, ClusterConfig, MAX_BATCH, OverCapacity, SimConfig, SimJob};
pub use dist::Dist;
pub use inference::{Conservation, SimResult, Simulation};
pub use metrics::{
    JobMetrics, JobSummary, LatencyHistogram, MinuteRecord, Summary, nearest_rank, quantile,
    summarize_from,
};
