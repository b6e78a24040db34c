//! The experiment file (YAML): what to replay, on which jobs and clusters, under which
//! policies and seeds.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pharos_core::Slo;
use pharos_sim::{ArrivalCount, Dist};
use pharos_trace::{Format, GeneratedJob, Selection};
use serde::{Deserialize, Serialize};

/// An experiment as written in its YAML file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// A name for the experiment (the default output directory is `out/<name>`).
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub trace: TraceSpec,
    /// Settings every job starts from.
    #[serde(default)]
    pub job: JobTemplate,
    /// Per-job settings by job name, over the template.
    #[serde(default)]
    pub overrides: BTreeMap<String, JobTemplate>,
    pub cluster: ClusterSpec,
    /// Policies: a name, or a map with `name`, an optional `label` (how the policy is
    /// shown in results; defaults to the name) and the policy's parameters.
    pub policies: Vec<serde_json::Value>,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    #[serde(default)]
    pub arrivals: ArrivalCount,
    /// The exponent alpha of the relaxed utility in the metrics.
    #[serde(default = "one")]
    pub utility_alpha: f64,
    /// When set, summary.md adds the table of the minutes from this one on (every
    /// policy's start left out: the deployment a run begins with differs by policy).
    #[serde(default)]
    pub warmup_min: Option<usize>,
}

fn default_seeds() -> Vec<u64> {
    vec![42]
}
fn one() -> f64 {
    1.0
}

/// Where the load comes from: a trace file (and a selection of it) or generators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSpec {
    /// A trace file, relative to the experiment file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The file's format; detected from the file when absent.
    #[serde(default)]
    pub format: Option<Format>,
    #[serde(default)]
    pub select: Selection,
    /// Days of the same jobs that forecasters know before the run (and fit on), oldest
    /// first, e.g. `[1, 2, 3]` or `1-10`; each whole, then the run's day up to its first
    /// minute. Needs `select.day`.
    #[serde(default, deserialize_with = "days")]
    pub history_days: Option<Vec<u32>>,
    /// Synthetic jobs instead of a file.
    #[serde(default)]
    pub generate: Option<GenerateSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateSpec {
    pub minutes: usize,
    pub jobs: Vec<GeneratedJob>,
}

/// Job settings; every field optional so that overrides can change just a few.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobTemplate {
    pub slo: Option<Slo>,
    /// What policies are told a request takes (default: the service time's mean).
    pub processing_time_s: Option<f64>,
    pub cpus_per_replica: Option<f64>,
    pub max_concurrent: Option<u32>,
    pub max_queue: Option<u32>,
    pub min_replicas: Option<u32>,
    pub max_replicas: Option<u32>,
    pub initial_replicas: Option<u32>,
    /// A distribution (`kind: constant | exponential | lognormal | quantiles`) or a
    /// measured profile (`kind: profile`, see [`ProfileRef`]).
    pub service_time: Option<serde_json::Value>,
    pub router_delay: Option<Dist>,
}

/// A row of a measured latency profile (`data/model-profiles/torchvision_latency.csv`),
/// turned into a log-normal through its median and 99th percentile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileRef {
    pub kind: String,
    /// The profile CSV, relative to the experiment file.
    pub file: PathBuf,
    pub model: String,
    #[serde(default = "cpu")]
    pub device: String,
    #[serde(default = "one_u32")]
    pub cpu_threads: u32,
    #[serde(default = "one_u32")]
    pub batch: u32,
    /// Batching: a replica serves up to this many requests at once, a batch taking the
    /// time of the profile's smallest batch size that holds it (the profile's rows up to
    /// this size). Set `max_concurrent` at least as high, or batches stay smaller.
    #[serde(default)]
    pub max_batch: Option<u32>,
}

fn cpu() -> String {
    "cpu".into()
}
fn one_u32() -> u32 {
    1
}

impl JobTemplate {
    /// This template with the fields `over` sets replaced.
    pub fn merged(&self, over: &JobTemplate) -> JobTemplate {
        JobTemplate {
            slo: over.slo.or(self.slo),
            processing_time_s: over.processing_time_s.or(self.processing_time_s),
            cpus_per_replica: over.cpus_per_replica.or(self.cpus_per_replica),
            max_concurrent: over.max_concurrent.or(self.max_concurrent),
            max_queue: over.max_queue.or(self.max_queue),
            min_replicas: over.min_replicas.or(self.min_replicas),
            max_replicas: over.max_replicas.or(self.max_replicas),
            initial_replicas: over.initial_replicas.or(self.initial_replicas),
            service_time: over
                .service_time
                .clone()
                .or_else(|| self.service_time.clone()),
            router_delay: over
                .router_delay
                .clone()
                .or_else(|| self.router_delay.clone()),
        }
    }
}

/// The clusters to simulate: one run per capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// Capacities in vCPUs.
    pub cpus: Vec<f64>,
    #[serde(default)]
    pub cold_start_s: Option<f64>,
    #[serde(default)]
    pub hot_start_s: Option<f64>,
    #[serde(default)]
    pub pod_idle_timeout_s: Option<f64>,
    #[serde(default)]
    pub pod_monitor_interval_s: Option<f64>,
    /// `trim` (default) or `wait`: see [`pharos_sim::OverCapacity`].
    #[serde(default)]
    pub over_capacity: pharos_sim::OverCapacity,
}

/// `[1, 2, 3]`, `3`, or `"1-10"`.
fn days<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<u32>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Days {
        One(u32),
        List(Vec<u32>),
        Text(String),
    }
    Ok(Some(match Option::<Days>::deserialize(d)? {
        None => return Ok(None),
        Some(Days::One(d)) => vec![d],
        Some(Days::List(v)) => v,
        Some(Days::Text(s)) => pharos_trace::parse_days(&s).map_err(serde::de::Error::custom)?,
    }))
}
