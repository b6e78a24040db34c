//! The pharos domain model.
//!
//! Everything the other crates agree on lives here: latency SLOs, the view of an
//! inference cluster that an autoscaling policy sees, the decision it returns, and the
//! [`InferencePolicy`] trait that is the seam between policies and whatever runs them
//! (the simulator today, real engines later).
//!
//! Units are part of the names: `_s` seconds, `_rps` requests per second, `_rpm`
//! requests per minute, `cpus` virtual CPUs.

mod error;
mod graph;
mod inference;
pub mod limits;
mod slo;
mod training;

pub use error::SpecError;
pub use graph::{Function, Graph, GraphDecision, GraphPolicy, GraphView};
pub use inference::{
    Candidate, ClusterView, Decision, Explanation, InferencePolicy, JobCounters, JobView,
};
pub use slo::Slo;
pub use training::{
    Container, DataStore, ErrorCode, EvaluationMetrics, Framework, GangPlacement, JobState,
    LearnerPlacement, LearnerResources, Manifest, Node, PendingJob, QueueSpec, RunningJob,
    SchedDecision, SchedView, TrainingScheduler, format_memory, parse_memory,
};
