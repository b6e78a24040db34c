use pharos_core::{Slo, SpecError};
use serde::{Deserialize, Serialize};

use crate::Dist;

/// The largest batch a replica may serve at once.
pub const MAX_BATCH: u32 = 4096;

/// One inference job of a simulated cluster, with its load.
#[derive(Debug, Clone, PartialEq)]
pub struct SimJob {
    pub name: String,
    pub slo: Slo,
    /// The processing time policies are told (a hint; replicas take `service_time`).
    pub processing_time_s: f64,
    pub cpus_per_replica: f64,
    /// Requests one replica holds at once (`max_concurrent_queries`); it serves them one
    /// after another, the rest wait at the router.
    pub max_concurrent: u32,
    /// The router queue holds at most this many requests; more are dropped (tail drop).
    pub max_queue: u32,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Replicas running when the run begins (unless the policy's initial decision says
    /// otherwise).
    pub initial_replicas: u32,
    pub service_time: Dist,
    /// Batching: the service time of a batch by its size, sizes ascending. Empty: a
    /// replica serves the requests it holds one at a time, each taking `service_time`.
    /// Otherwise a replica that is free takes as one batch the requests it holds, up to
    /// the largest size listed (and `max_concurrent`); the batch takes the time of the
    /// smallest listed size that holds it, and all its requests complete together.
    pub batch_service: Vec<(u32, Dist)>,
    pub router_delay: Dist,
    /// The load: requests in each minute of the run.
    pub requests_per_min: Vec<f64>,
}

/// How many requests arrive in a minute with `r` requests in the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArrivalCount {
    /// Exactly the trace's count (a fractional count rounds up with probability equal to
    /// its fraction), at independent uniform times within the minute: a Poisson process
    /// conditioned on the count. Replays the trace's totals exactly.
    #[default]
    Exact,
    /// A Poisson number with mean `r`, at uniform times: a Poisson process of rate r/60.
    Poisson,
}

/// The cluster the jobs share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Hard capacity in vCPUs: pods (busy or idle) never hold more.
    pub capacity_cpus: f64,
    /// Start-up time of a replica that needs a new pod.
    #[serde(default = "d_cold")]
    pub cold_start_s: f64,
    /// Start-up time of a replica that reuses an idle pod of its job.
    #[serde(default = "d_hot")]
    pub hot_start_s: f64,
    /// An idle pod keeps its vCPUs until it has been idle this long ...
    #[serde(default = "d_idle")]
    pub pod_idle_timeout_s: f64,
    /// ... as checked by a monitor running this often (which also retries replica
    /// starts that waited for capacity).
    #[serde(default = "d_monitor")]
    pub pod_monitor_interval_s: f64,
    /// What happens to a target that does not fit the capacity.
    #[serde(default)]
    pub over_capacity: OverCapacity,
}

pub use pharos_policy::OverCapacity;

fn d_cold() -> f64 {
    35.0
}
fn d_hot() -> f64 {
    3.0
}
fn d_idle() -> f64 {
    30.0
}
fn d_monitor() -> f64 {
    5.0
}

impl ClusterConfig {
    pub fn with_capacity(capacity_cpus: f64) -> Self {
        Self {
            capacity_cpus,
            cold_start_s: d_cold(),
            hot_start_s: d_hot(),
            pod_idle_timeout_s: d_idle(),
            pod_monitor_interval_s: d_monitor(),
            over_capacity: OverCapacity::Trim,
        }
    }
}

/// Everything one simulation run needs besides the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub cluster: ClusterConfig,
    pub jobs: Vec<SimJob>,
    pub arrivals: ArrivalCount,
    /// The exponent of the relaxed utility used by the metrics (1 in the Faro paper).
    pub utility_alpha: f64,
    pub seed: u64,
}

impl SimConfig {
    pub fn validate(&self) -> Result<(), SpecError> {
        let c = &self.cluster;
        SpecError::check_positive("cluster.capacity_cpus", c.capacity_cpus)?;
        SpecError::check_non_negative("cluster.cold_start_s", c.cold_start_s)?;
        SpecError::check_non_negative("cluster.hot_start_s", c.hot_start_s)?;
        SpecError::check_non_negative("cluster.pod_idle_timeout_s", c.pod_idle_timeout_s)?;
        SpecError::check_positive("cluster.pod_monitor_interval_s", c.pod_monitor_interval_s)?;
        SpecError::check_positive("utility_alpha", self.utility_alpha)?;
        if self.jobs.is_empty() {
            return Err(SpecError::new("jobs", "there are no jobs to simulate"));
        }
        let minutes = self.jobs[0].requests_per_min.len();
        for (i, j) in self.jobs.iter().enumerate() {
            let at = format!("jobs[{i}] ({})", j.name);
            j.slo
                .validate()
                .map_err(|e| e.within(&format!("{at}.slo")))?;
            SpecError::check_positive(&format!("{at}.processing_time_s"), j.processing_time_s)?;
            SpecError::check_positive(&format!("{at}.cpus_per_replica"), j.cpus_per_replica)?;
            if j.max_concurrent == 0 {
                return Err(SpecError::new(
                    format!("{at}.max_concurrent"),
                    "must be >= 1",
                ));
            }
            if j.min_replicas == 0 || j.min_replicas > j.max_replicas {
                return Err(SpecError::new(
                    format!("{at}.min_replicas"),
                    format!(
                        "need 1 <= min_replicas <= max_replicas, got {} and {}",
                        j.min_replicas, j.max_replicas
                    ),
                ));
            }
            j.service_time
                .validate()
                .map_err(|e| e.within(&format!("{at}.service_time")))?;
            j.router_delay
                .validate()
                .map_err(|e| e.within(&format!("{at}.router_delay")))?;
            let mut last = 0;
            for (size, d) in &j.batch_service {
                if *size <= last {
                    return Err(SpecError::new(
                        format!("{at}.batch_service"),
                        format!("batch sizes must rise from 1 up, got {size} after {last}"),
                    ));
                }
                if *size > MAX_BATCH {
                    return Err(SpecError::new(
                        format!("{at}.batch_service"),
                        format!("batch sizes are at most {MAX_BATCH}, got {size}"),
                    ));
                }
                last = *size;
                d.validate()
                    .map_err(|e| e.within(&format!("{at}.batch_service[{size}]")))?;
            }
            if j.requests_per_min.len() != minutes {
                return Err(SpecError::new(
                    format!("{at}.requests_per_min"),
                    "all jobs need traces of the same length",
                ));
            }
            if j.requests_per_min
                .iter()
                .any(|r| !(r.is_finite() && *r >= 0.0))
            {
                return Err(SpecError::new(
                    format!("{at}.requests_per_min"),
                    "counts must be finite and >= 0",
                ));
            }
        }
        let need: f64 = self
            .jobs
            .iter()
            .map(|j| j.cpus_per_replica * j.min_replicas as f64)
            .sum();
        if need > c.capacity_cpus + 1e-9 {
            return Err(SpecError::new(
                "cluster.capacity_cpus",
                format!(
                    "{} vCPUs cannot host the minimum replicas of the {} jobs ({} vCPUs needed)",
                    c.capacity_cpus,
                    self.jobs.len(),
                    need
                ),
            ));
        }
        Ok(())
    }
}
