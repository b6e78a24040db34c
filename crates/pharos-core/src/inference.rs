//! The seam between inference autoscaling policies and what runs them.
//!
//! A policy sees a [`ClusterView`] (a snapshot of every job's replicas, queues and
//! cumulative counters) and returns a [`Decision`] (target replicas and accept rates per
//! job). It has no clock of its own - the time is `view.now_s` - and does no I/O, so the
//! same policy object runs unchanged in the simulator and in a live control loop.

use crate::Slo;

/// Cumulative counters of one job since the start of the run, in the style of
/// Prometheus counters: a policy that wants a rate or a mean over a window remembers the
/// value at the window's start and takes the difference.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JobCounters {
    /// Requests that reached the job's router (after the router delay, before admission).
    pub arrivals: u64,
    /// Requests dropped by admission control or because the router queue was full.
    pub dropped: u64,
    /// Requests served to completion.
    pub completed: u64,
    /// Sum of the end-to-end latencies of completed requests.
    pub latency_sum_s: f64,
    /// Time integral of the requests in the system (queued at the router plus in flight
    /// at replicas), in request-seconds. Its difference over a window divided by the
    /// window's length is the time-weighted mean number of ongoing requests.
    pub ongoing_req_s: f64,
    /// Time integral of the number of replicas serving at least one request, in
    /// replica-seconds (a CPU-utilisation proxy: one replica is one busy core).
    pub busy_replica_s: f64,
    /// Time integral of the number of ready replicas, in replica-seconds.
    pub ready_replica_s: f64,
}

/// What a policy sees of one inference job.
#[derive(Debug, Clone)]
pub struct JobView<'a> {
    pub name: &'a str,
    pub slo: Slo,
    /// The per-request processing time the operator told pharos (a hint for model-based
    /// policies; the real service time is whatever the replicas take).
    pub processing_time_s: f64,
    pub cpus_per_replica: f64,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Requests one replica takes at once (its hard concurrency limit); more wait at the
    /// router.
    pub max_concurrent: u32,
    /// The replica count last decided for the job.
    pub target_replicas: u32,
    /// Replicas serving requests now.
    pub ready_replicas: u32,
    /// Replicas started but not ready yet (cold or hot start in progress).
    pub starting_replicas: u32,
    /// Requests waiting at the router.
    pub queued: u32,
    /// Requests being served by replicas.
    pub in_flight: u32,
    /// The fraction of arriving requests the router admits.
    pub accept_rate: f64,
    pub counters: JobCounters,
    /// Requests that arrived in each completed minute of the run so far, oldest first.
    pub minute_arrivals: &'a [u32],
    /// Seconds a new replica of the job takes from its start to ready, as measured (the
    /// mean of its latest cold starts); `None` before the first. A scale-up decided now
    /// serves requests only this much later.
    pub cold_start_s: Option<f64>,
}

impl JobView<'_> {
    /// Replicas that are ready or on their way.
    pub fn provisioned_replicas(&self) -> u32 {
        self.ready_replicas + self.starting_replicas
    }
}

/// What a policy sees of the whole cluster.
#[derive(Debug, Clone)]
pub struct ClusterView<'a> {
    pub now_s: f64,
    /// The cluster's hard capacity in vCPUs.
    pub capacity_cpus: f64,
    /// vCPUs not held by any replica or idle pod.
    pub free_cpus: f64,
    pub jobs: &'a [JobView<'a>],
}

/// A policy's answer: per job, a new target replica count and a new accept rate, each
/// `None` for "leave as it is".
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub target_replicas: Vec<Option<u32>>,
    pub accept_rate: Vec<Option<f64>>,
}

impl Decision {
    /// A decision that changes nothing for `n_jobs` jobs.
    pub fn unchanged(n_jobs: usize) -> Self {
        Self {
            target_replicas: vec![None; n_jobs],
            accept_rate: vec![None; n_jobs],
        }
    }

    /// A decision that sets every job's target replicas.
    pub fn targets(targets: impl IntoIterator<Item = u32>) -> Self {
        let target_replicas: Vec<Option<u32>> = targets.into_iter().map(Some).collect();
        let n = target_replicas.len();
        Self {
            target_replicas,
            accept_rate: vec![None; n],
        }
    }

    pub fn is_unchanged(&self) -> bool {
        self.target_replicas.iter().all(Option::is_none)
            && self.accept_rate.iter().all(Option::is_none)
    }
}

/// An inference autoscaling policy.
///
/// Implementations must be pure functions of the views they are shown (plus their own
/// state and, where they need randomness, a seeded RNG they own): no clock, no I/O.
pub trait InferencePolicy: Send {
    /// The policy's name as users select it (`fairshare`, `aiad`, ...).
    fn name(&self) -> &str;

    /// Seconds between two calls of [`InferencePolicy::decide`].
    fn interval_s(&self) -> f64;

    /// Time of the first call of [`InferencePolicy::decide`]; one interval by default.
    fn first_call_s(&self) -> f64 {
        self.interval_s()
    }

    /// The replicas the jobs start with, already running when the run begins (the
    /// deployment that exists before traffic arrives). Unchanged by default, which keeps
    /// each job's configured initial replicas.
    fn initial_decision(&mut self, view: &ClusterView<'_>) -> Decision {
        Decision::unchanged(view.jobs.len())
    }

    /// Decide targets for every job from the current view.
    fn decide(&mut self, view: &ClusterView<'_>) -> Decision;

    /// Why the last decision is what it is, for people: one entry per job in view order
    /// (`None` for a job it says nothing about; `None` in all when the policy says
    /// nothing). Never read by a policy.
    fn explain(&self) -> Option<Vec<Option<Explanation>>> {
        None
    }
}

impl<P: InferencePolicy + ?Sized> InferencePolicy for Box<P> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn interval_s(&self) -> f64 {
        (**self).interval_s()
    }
    fn first_call_s(&self) -> f64 {
        (**self).first_call_s()
    }
    fn initial_decision(&mut self, view: &ClusterView<'_>) -> Decision {
        (**self).initial_decision(view)
    }
    fn decide(&mut self, view: &ClusterView<'_>) -> Decision {
        (**self).decide(view)
    }
    fn explain(&self) -> Option<Vec<Option<Explanation>>> {
        (**self).explain()
    }
}

/// Why a policy decided what it did for one job (shown to people as JSON: the API's
/// decision records and the dashboard).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Explanation {
    /// A plan from a forecast: the forecast quantile, the peak predicted rate over the
    /// window, the replicas (and accept rate) chosen, the candidates near them, and the
    /// allocation's objective; `ready_after_steps` is how many of the window's minutes
    /// a scale-up was planned not to serve yet (its replicas' cold start).
    Planned {
        quantile: f64,
        peak_rate_rps: f64,
        ready_after_steps: usize,
        replicas: u32,
        accept_rate: Option<f64>,
        candidates: Vec<Candidate>,
        objective: f64,
    },
    /// A correction of the reactive loop, and why.
    Reactive { reason: String },
}

/// One replica count a plan weighed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Candidate {
    pub replicas: u32,
    /// Predicted latency at the peak rate (None: the queue would not be stable).
    pub latency_s: Option<f64>,
    /// Mean utility over the window.
    pub utility: f64,
    pub chosen: bool,
}
