//! Experiments: an experiment file names a trace, the jobs, cluster sizes, policies and
//! seeds; [`Experiment::load`] checks all of it before anything runs, [`Experiment::run_all`]
//! runs the grid (in parallel), and [`report`] writes results, timelines and plots.

mod error;
pub mod frontier;
pub mod graph;
pub mod report;
pub mod shared;
mod spec;
pub mod svg;
pub mod training;

use std::path::{Path, PathBuf};
use std::time::Instant;

use pharos_core::{InferencePolicy, SpecError};
use pharos_sim::{
    ClusterConfig, Dist, JobSummary, MinuteRecord, SimConfig, SimJob, Simulation, Summary,
};
use pharos_trace::{Format, Selection, Trace};
use rayon::prelude::*;
use serde::Serialize;

pub use error::ExperimentError;
pub use spec::{ClusterSpec, ExperimentSpec, GenerateSpec, JobTemplate, ProfileRef, TraceSpec};

/// Command-line changes to an experiment file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Replay this trace file instead (the experiment's day, previous day and job
    /// selection, which name things in its own trace, are dropped; its minute range and
    /// rescaling stay).
    pub trace: Option<PathBuf>,
    pub trace_format: Option<Format>,
    pub day: Option<u32>,
    pub jobs: Option<Vec<String>>,
    pub minutes: Option<[usize; 2]>,
    pub cpus: Vec<f64>,
    /// Policy names or labels; a label of the file's list keeps its parameters.
    pub policies: Vec<String>,
    pub seeds: Vec<u64>,
    pub over_capacity: Option<pharos_sim::OverCapacity>,
}

/// A policy of the experiment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyEntry {
    /// How it is shown in results.
    pub label: String,
    /// The policy's name (what [`pharos_policy::build`] knows).
    pub name: String,
    pub params: serde_json::Value,
    /// The sweep this entry is one point of: `policies: [{name: hpa, sweep: {target:
    /// [0.5, 0.7]}}]` runs `hpa[target=0.5]` and `hpa[target=0.7]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepPoint>,
}

/// One value of a policy's knob in a sweep.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepPoint {
    /// The label of the swept policy (the family its points are drawn as).
    pub family: String,
    pub knob: String,
    pub value: serde_json::Value,
}

/// At most this many values in one sweep.
pub const MAX_SWEEP: usize = 64;

impl PolicyEntry {
    /// The entries of `policies[index]`: one, or one per value of its sweep.
    pub(crate) fn from_value(
        v: &serde_json::Value,
        index: usize,
    ) -> Result<Vec<PolicyEntry>, String> {
        match v {
            serde_json::Value::String(name) => Ok(vec![PolicyEntry {
                label: name.clone(),
                name: name.clone(),
                params: serde_json::Value::Object(Default::default()),
                sweep: None,
            }]),
            serde_json::Value::Object(map) => {
                let mut map = map.clone();
                let name = match map.remove("name") {
                    Some(serde_json::Value::String(s)) => s,
                    _ => return Err(format!("policies[{index}]: needs a `name`")),
                };
                let label = match map.remove("label") {
                    Some(serde_json::Value::String(s)) => s,
                    None => name.clone(),
                    Some(_) => return Err(format!("policies[{index}]: `label` must be a string")),
                };
                let Some(sweep) = map.remove("sweep") else {
                    return Ok(vec![PolicyEntry {
                        label,
                        name,
                        params: serde_json::Value::Object(map),
                        sweep: None,
                    }]);
                };
                let bad = |what: &str| {
                    format!(
                        "policies[{index}].sweep: {what} (a sweep walks one knob: `sweep: {{ KNOB: [V1, V2, ...] }}`)"
                    )
                };
                let sweep = match sweep {
                    serde_json::Value::Object(m) if m.len() == 1 => m,
                    serde_json::Value::Object(m) => {
                        return Err(bad(&format!("names {} knobs", m.len())));
                    }
                    _ => return Err(bad("not a map")),
                };
                let (knob, values) = sweep.into_iter().next().expect("one knob");
                let values = match values {
                    serde_json::Value::Array(v) if !v.is_empty() && v.len() <= MAX_SWEEP => v,
                    serde_json::Value::Array(v) => {
                        return Err(bad(&format!(
                            "{knob} has {} values; 1 to {MAX_SWEEP} are allowed",
                            v.len()
                        )));
                    }
                    _ => return Err(bad(&format!("{knob} is not a list of values"))),
                };
                if map.contains_key(&knob) {
                    return Err(bad(&format!("{knob} is also set outside the sweep")));
                }
                Ok(values
                    .into_iter()
                    .map(|value| {
                        let mut params = map.clone();
                        params.insert(knob.clone(), value.clone());
                        let shown = match &value {
                            serde_json::Value::String(s) => s.clone(),
                            v => v.to_string(),
                        };
                        PolicyEntry {
                            label: format!("{label}[{knob}={shown}]"),
                            name: name.clone(),
                            params: serde_json::Value::Object(params),
                            sweep: Some(SweepPoint {
                                family: label.clone(),
                                knob: knob.clone(),
                                value,
                            }),
                        }
                    })
                    .collect())
            }
            _ => Err(format!(
                "policies[{index}]: a policy is a name or a map with `name` and parameters"
            )),
        }
    }

    /// The family this entry is drawn with on a frontier: its sweep's, or its label.
    pub fn family(&self) -> &str {
        self.sweep.as_ref().map_or(&self.label, |s| &s.family)
    }

    /// Whether `--policy NAME` picks this entry: its label, or its sweep's family.
    pub fn is_named(&self, name: &str) -> bool {
        self.label == name || self.family() == name
    }

    pub fn build(
        &self,
        ctx: &pharos_policy::PolicyContext,
    ) -> Result<Box<dyn InferencePolicy>, ExperimentError> {
        pharos_policy::build_with(&self.name, &self.params, ctx).map_err(ExperimentError::Policy)
    }
}

/// A loaded, checked experiment.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub spec: ExperimentSpec,
    pub file: PathBuf,
    pub trace: Trace,
    /// What forecasters know before the run: every job's minutes from minute 0 of the
    /// first history day up to the run's first minute (empty without history days),
    /// and the trace's day length.
    pub past_rpm: Vec<Vec<f64>>,
    pub day_minutes: Option<usize>,
    /// Forecasters fitted for this experiment's runs (fitted once, copied to each).
    pub fitted: pharos_forecast::FitCache,
    /// The jobs with their loads (one per trace job, settings resolved).
    pub jobs: Vec<SimJob>,
    pub policies: Vec<PolicyEntry>,
    pub cpus: Vec<f64>,
    pub seeds: Vec<u64>,
}

/// One cell of the grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunKey {
    pub policy: usize,
    pub cpus: f64,
    pub seed: u64,
}

/// The outcome of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub policy: String,
    pub policy_name: String,
    pub cpus: f64,
    pub seed: u64,
    #[serde(flatten)]
    pub summary: Summary,
    pub jobs: Vec<JobSummary>,
    #[serde(skip)]
    pub minutes: Vec<Vec<MinuteRecord>>,
    /// Wall-clock seconds the simulation took (not part of results.json, which must be
    /// the same for the same seed).
    #[serde(skip)]
    pub sim_wall_s: f64,
}

impl Experiment {
    /// Read and check an experiment file.
    pub fn load(path: &Path, ov: &Overrides) -> Result<Experiment, ExperimentError> {
        let spec: ExperimentSpec = read_yaml(path)?;
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        Self::from_spec(spec, path, &base, ov)
    }

    /// Check a parsed experiment; relative paths are taken from `base`.
    pub fn from_spec(
        spec: ExperimentSpec,
        file: &Path,
        base: &Path,
        ov: &Overrides,
    ) -> Result<Experiment, ExperimentError> {
        let bad = |e: SpecError| ExperimentError::Spec {
            file: file.to_path_buf(),
            error: e,
        };
        let (trace, past) = load_trace(&spec.trace, base, ov)?;
        let jobs = resolve_jobs(&spec, &trace, base).map_err(|e| match e {
            ResolveError::Spec(e) => bad(e),
            ResolveError::Other(e) => e,
        })?;
        let mut policies = Vec::new();
        for (i, v) in spec.policies.iter().enumerate() {
            policies.extend(PolicyEntry::from_value(v, i).map_err(|p| bad(SpecError::new("", p)))?);
        }
        if !ov.policies.is_empty() {
            // A label picks its entry, a swept policy's label all its points, another
            // name the policy with its defaults.
            policies = ov
                .policies
                .iter()
                .flat_map(|want| {
                    let found: Vec<PolicyEntry> = policies
                        .iter()
                        .filter(|p| p.is_named(want))
                        .cloned()
                        .collect();
                    if found.is_empty() {
                        vec![PolicyEntry {
                            label: want.clone(),
                            name: want.clone(),
                            params: serde_json::Value::Object(Default::default()),
                            sweep: None,
                        }]
                    } else {
                        found
                    }
                })
                .collect();
        }
        check_labels(&policies).map_err(bad)?;
        let cpus = if ov.cpus.is_empty() {
            spec.cluster.cpus.clone()
        } else {
            ov.cpus.clone()
        };
        if cpus.is_empty() {
            return Err(bad(SpecError::new(
                "cluster.cpus",
                "no cluster size to run",
            )));
        }
        let seeds = if ov.seeds.is_empty() {
            spec.seeds.clone()
        } else {
            ov.seeds.clone()
        };
        if seeds.is_empty() {
            return Err(bad(SpecError::new("seeds", "no seed to run")));
        }
        let mut spec = spec;
        if let Some(m) = ov.over_capacity {
            spec.cluster.over_capacity = m;
        }
        let exp = Experiment {
            spec,
            file: file.to_path_buf(),
            trace,
            past_rpm: past.rpm,
            day_minutes: past.day_minutes,
            fitted: Default::default(),
            jobs,
            policies,
            cpus,
            seeds,
        };
        for c in &exp.cpus {
            exp.sim_config(*c, exp.seeds[0]).validate().map_err(bad)?;
        }
        let ctx = exp.context();
        for p in &exp.policies {
            p.build(&ctx)?;
        }
        Ok(exp)
    }

    fn cluster(&self, cpus: f64) -> ClusterConfig {
        let c = &self.spec.cluster;
        let d = ClusterConfig::with_capacity(cpus);
        ClusterConfig {
            capacity_cpus: cpus,
            cold_start_s: c.cold_start_s.unwrap_or(d.cold_start_s),
            hot_start_s: c.hot_start_s.unwrap_or(d.hot_start_s),
            pod_idle_timeout_s: c.pod_idle_timeout_s.unwrap_or(d.pod_idle_timeout_s),
            pod_monitor_interval_s: c.pod_monitor_interval_s.unwrap_or(d.pod_monitor_interval_s),
            over_capacity: c.over_capacity,
        }
    }

    /// The simulator configuration of one cluster size and seed.
    pub fn sim_config(&self, cpus: f64, seed: u64) -> SimConfig {
        SimConfig {
            cluster: self.cluster(cpus),
            jobs: self.jobs.clone(),
            arrivals: self.spec.arrivals,
            utility_alpha: self.spec.utility_alpha,
            seed,
        }
    }

    /// What policies may know of the run: the jobs' traces (for the oracle forecaster)
    /// and the history days (what forecasters fit on and read).
    pub fn context(&self) -> pharos_policy::PolicyContext {
        pharos_policy::PolicyContext {
            forecast: pharos_forecast::ForecastData {
                truth_rpm: self
                    .jobs
                    .iter()
                    .map(|j| j.requests_per_min.clone())
                    .collect(),
                past_rpm: self.past_rpm.clone(),
                day_minutes: self.day_minutes,
                fitted: self.fitted.clone(),
            },
        }
    }

    /// How well the forecasters of the experiment's policies forecast the run, scored
    /// as `pharos forecast eval` scores a test day (see
    /// [`pharos_forecast::eval::score_run`]): fitted on the history days (the same fit
    /// the runs use), shown them and the run's minutes before each origin. Empty
    /// without history days; the oracle is not scored.
    pub fn forecast_scores(
        &self,
        context: usize,
        horizon: usize,
    ) -> Result<Vec<pharos_forecast::eval::EvalRow>, ExperimentError> {
        if self.past_rpm.is_empty() {
            return Ok(Vec::new());
        }
        let mut specs: Vec<pharos_forecast::ForecasterSpec> = Vec::new();
        for p in &self.policies {
            if let Ok(Some(f)) = pharos_policy::forecaster_of(&p.name, &p.params)
                && !f.is_oracle()
                && !specs.contains(&f)
            {
                specs.push(f);
            }
        }
        let ctx = self.context();
        let jobs: Vec<String> = self.jobs.iter().map(|j| j.name.clone()).collect();
        let run: Vec<Vec<f64>> = self
            .jobs
            .iter()
            .map(|j| j.requests_per_min.clone())
            .collect();
        specs
            .into_iter()
            .map(|spec| {
                let fail = |e: pharos_forecast::ForecastError| {
                    ExperimentError::Other(format!("forecaster {spec}: {e}"))
                };
                let mut f = spec.build(&ctx.forecast).map_err(fail)?;
                pharos_forecast::eval::score_run(
                    f.as_mut(),
                    spec.to_string(),
                    &jobs,
                    &self.past_rpm,
                    &run,
                    context,
                    horizon,
                )
                .map_err(fail)
            })
            .collect()
    }

    /// The grid in its fixed order: cluster sizes, then policies, then seeds.
    pub fn runs(&self) -> Vec<RunKey> {
        let mut out = Vec::new();
        for &cpus in &self.cpus {
            for policy in 0..self.policies.len() {
                for &seed in &self.seeds {
                    out.push(RunKey { policy, cpus, seed });
                }
            }
        }
        out
    }

    /// Run one cell of the grid.
    pub fn run(&self, key: RunKey) -> Result<RunResult, ExperimentError> {
        let entry = &self.policies[key.policy];
        let policy = entry.build(&self.context())?;
        let start = Instant::now();
        let sim = Simulation::new(self.sim_config(key.cpus, key.seed), policy).map_err(|e| {
            ExperimentError::Spec {
                file: self.file.clone(),
                error: e,
            }
        })?;
        let r = sim.run();
        let sim_wall_s = start.elapsed().as_secs_f64();
        Ok(RunResult {
            policy: entry.label.clone(),
            policy_name: entry.name.clone(),
            cpus: key.cpus,
            seed: key.seed,
            summary: r.summary,
            jobs: r.jobs,
            minutes: r.minutes,
            sim_wall_s,
        })
    }

    /// Run the whole grid, `threads` at a time (0: one per core), calling `progress`
    /// after each run. Results come in grid order whatever order the runs finish in.
    pub fn run_all(
        &self,
        threads: usize,
        progress: impl Fn(&RunResult) + Sync,
    ) -> Result<Vec<RunResult>, ExperimentError> {
        let keys = self.runs();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| ExperimentError::Other(format!("cannot start worker threads: {e}")))?;
        pool.install(|| {
            keys.par_iter()
                .map(|k| {
                    let r = self.run(*k)?;
                    progress(&r);
                    Ok(r)
                })
                .collect()
        })
    }
}

/// What is known before the run (see [`Experiment::past_rpm`]).
#[derive(Debug, Clone, Default)]
struct Past {
    rpm: Vec<Vec<f64>>,
    day_minutes: Option<usize>,
}

/// At least one policy, and no two with the same label.
pub(crate) fn check_labels(policies: &[PolicyEntry]) -> Result<(), SpecError> {
    if policies.is_empty() {
        return Err(SpecError::new("policies", "no policy to run"));
    }
    for (i, p) in policies.iter().enumerate() {
        if policies[..i].iter().any(|q| q.label == p.label) {
            return Err(SpecError::new(
                "policies",
                format!(
                    "two policies are labelled {:?}; give one a `label`",
                    p.label
                ),
            ));
        }
    }
    Ok(())
}

/// Read and parse a YAML file, naming it in any error.
pub(crate) fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ExperimentError> {
    let text = std::fs::read_to_string(path).map_err(|source| ExperimentError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    serde_saphyr::from_str(&text).map_err(|e| ExperimentError::Yaml {
        file: path.to_path_buf(),
        problem: e.to_string(),
    })
}

/// The run's trace and, when the experiment names `history_days`, what forecasters
/// know before it.
pub(crate) fn load_trace(
    t: &TraceSpec,
    base: &Path,
    ov: &Overrides,
) -> Result<(Trace, Past), ExperimentError> {
    let mut select: Selection = t.select.clone();
    if ov.trace.is_some() {
        // The file's day and job selection name things in its own trace.
        select.day = None;
        select.jobs = None;
    }
    if let Some(d) = ov.day {
        select.day = Some(d);
    }
    if let Some(j) = &ov.jobs {
        select.jobs = Some(j.clone());
    }
    if let Some(m) = ov.minutes {
        select.minutes = Some(m);
    }
    let path = ov
        .trace
        .clone()
        .or_else(|| t.path.as_ref().map(|p| base.join(p)));
    let (raw, name) = match (path, &t.generate) {
        (Some(path), _) => {
            let format = ov
                .trace_format
                .or(if ov.trace.is_some() { None } else { t.format });
            (
                pharos_trace::read_trace(&path, format)?,
                path.display().to_string(),
            )
        }
        (None, Some(g)) => (
            pharos_trace::RawTrace::from(pharos_trace::generate_trace(&g.jobs, g.minutes)?),
            "generated trace".to_string(),
        ),
        (None, None) => {
            return Err(ExperimentError::Other(
                "trace: give a `path` to a trace file or `generate` jobs".into(),
            ));
        }
    };
    let in_file = |e: pharos_trace::TraceError| ExperimentError::Other(format!("{name}: {e}"));
    // A replacement trace of several days replays its last day (or --day) and its
    // earlier days are what forecasters know before the run.
    let mut file_days: Vec<u32> = raw.series.iter().filter_map(|s| s.day).collect();
    file_days.sort_unstable();
    file_days.dedup();
    if ov.trace.is_some() && select.day.is_none() && file_days.len() > 1 {
        select.day = file_days.last().copied();
    }
    let trace = select.apply(&raw).map_err(in_file)?;
    // Like the day, history days name days of the experiment's own trace.
    let history = match (&ov.trace, select.day) {
        (Some(_), Some(day)) => {
            let before: Vec<u32> = file_days.iter().copied().filter(|d| *d < day).collect();
            (!before.is_empty()).then_some(before)
        }
        (Some(_), None) => None,
        (None, _) => t.history_days.clone(),
    };
    let past = match history {
        Some(days) => past_of(&raw, &select, &trace, &days)
            .map_err(|e| ExperimentError::Other(format!("{name}: trace.history_days: {e}")))?,
        None => Past::default(),
    };
    Ok((trace, past))
}

/// The history days' minutes of the run's jobs, then the run's day up to its first
/// minute, scaled as the run is.
fn past_of(
    raw: &pharos_trace::RawTrace,
    select: &Selection,
    trace: &Trace,
    days: &[u32],
) -> Result<Past, String> {
    let Some(run_day) = select.day else {
        return Err("needs `select.day` (the day the run replays)".into());
    };
    if days.windows(2).any(|w| w[1] <= w[0]) {
        return Err(format!("days {days:?} must rise, without repeats"));
    }
    if let Some(d) = days.iter().find(|d| **d >= run_day) {
        return Err(format!("day {d} is not before the run's day {run_day}"));
    }
    let jobs: Vec<String> = trace.jobs.iter().map(|j| j.name.clone()).collect();
    let unscaled = |day: u32, minutes: Option<[usize; 2]>| {
        Selection {
            day: Some(day),
            jobs: Some(jobs.clone()),
            stretch: select.stretch,
            minutes,
            peak_rpm: None,
            scale: None,
        }
        .apply(raw)
        .map_err(|e| format!("day {day}: {e}"))
    };
    // The run's scale factor per job, as its selection applied it.
    let run_raw = unscaled(run_day, select.minutes)?;
    let factor: Vec<f64> = trace
        .jobs
        .iter()
        .zip(&run_raw.jobs)
        .map(|(s, r)| {
            let (a, b): (f64, f64) = (
                s.requests_per_min.iter().sum(),
                r.requests_per_min.iter().sum(),
            );
            if b > 0.0 {
                a / b
            } else {
                select.scale.unwrap_or(1.0)
            }
        })
        .collect();
    let whole_run_day = unscaled(run_day, None)?;
    let day_minutes = whole_run_day.minutes();
    let mut rpm = vec![Vec::new(); jobs.len()];
    for &d in days {
        let t = unscaled(d, None)?;
        for (j, job) in t.jobs.iter().enumerate() {
            if job.name != jobs[j] {
                return Err(format!(
                    "day {d} has no job {} (only {})",
                    jobs[j], job.name
                ));
            }
            if job.requests_per_min.len() != day_minutes {
                return Err(format!(
                    "day {d}, job {}: {} minutes where day {run_day} has {day_minutes}",
                    job.name,
                    job.requests_per_min.len()
                ));
            }
            rpm[j].extend(job.requests_per_min.iter().map(|v| v * factor[j]));
        }
    }
    let first = select.minutes.map_or(0, |m| m[0]);
    for (j, job) in whole_run_day.jobs.iter().enumerate() {
        let upto = first.min(job.requests_per_min.len());
        rpm[j].extend(job.requests_per_min[..upto].iter().map(|v| v * factor[j]));
    }
    Ok(Past {
        rpm,
        day_minutes: Some(day_minutes),
    })
}

enum ResolveError {
    Spec(SpecError),
    Other(ExperimentError),
}

impl From<SpecError> for ResolveError {
    fn from(e: SpecError) -> Self {
        ResolveError::Spec(e)
    }
}

fn resolve_jobs(
    spec: &ExperimentSpec,
    trace: &Trace,
    base: &Path,
) -> Result<Vec<SimJob>, ResolveError> {
    for name in spec.overrides.keys() {
        if !trace.jobs.iter().any(|j| &j.name == name) {
            return Err(SpecError::new(
                format!("overrides.{name}"),
                "no job of that name in the trace",
            )
            .into());
        }
    }
    let mut out = Vec::with_capacity(trace.jobs.len());
    for jt in &trace.jobs {
        let t = match spec.overrides.get(&jt.name) {
            Some(o) => spec.job.merged(o),
            None => spec.job.clone(),
        };
        let at = format!("job {:?}", jt.name);
        let slo = t
            .slo
            .ok_or_else(|| SpecError::new(format!("{at}.slo"), "no SLO (set job.slo)"))?;
        let service_value = t.service_time.clone().ok_or_else(|| {
            SpecError::new(
                format!("{at}.service_time"),
                "no service time (set job.service_time)",
            )
        })?;
        let (service_time, batch_service) =
            service_dist(&service_value, base).map_err(|e| match e {
                ResolveError::Spec(e) => {
                    ResolveError::Spec(e.within(&format!("{at}.service_time")))
                }
                other => other,
            })?;
        let min_replicas = t.min_replicas.unwrap_or(1);
        out.push(SimJob {
            name: jt.name.clone(),
            slo,
            processing_time_s: t.processing_time_s.unwrap_or_else(|| service_time.mean_s()),
            cpus_per_replica: t.cpus_per_replica.unwrap_or(1.0),
            max_concurrent: t.max_concurrent.unwrap_or(4),
            max_queue: t.max_queue.unwrap_or(50),
            min_replicas,
            max_replicas: t.max_replicas.unwrap_or(100),
            initial_replicas: t.initial_replicas.unwrap_or(min_replicas),
            service_time,
            batch_service,
            router_delay: t.router_delay.unwrap_or(Dist::Constant { value_s: 0.0 }),
            requests_per_min: jt.requests_per_min.clone(),
        });
    }
    Ok(out)
}

/// A job's service time, and its batches' service times when it batches (a profile
/// with `max_batch`).
fn service_dist(
    v: &serde_json::Value,
    base: &Path,
) -> Result<(Dist, Vec<(u32, Dist)>), ResolveError> {
    if v.get("kind").and_then(|k| k.as_str()) == Some("profile") {
        let p: ProfileRef =
            serde_json::from_value(v.clone()).map_err(|e| SpecError::new("", e.to_string()))?;
        let file = base.join(&p.file);
        let keep = |b: u32| match p.max_batch {
            Some(m) => b <= m,
            None => b == p.batch,
        };
        let (rows, sizes) = profile_rows(&file, &p, keep).map_err(ResolveError::Other)?;
        let missing = |batch: u32| {
            ResolveError::Other(ExperimentError::Other(format!(
                "{}: no profile for model {:?} on device {:?} with cpu_threads {} and batch {}",
                file.display(),
                p.model,
                p.device,
                p.cpu_threads,
                batch
            )))
        };
        let Some(max_batch) = p.max_batch else {
            let d = rows.into_iter().find(|(b, _)| *b == p.batch);
            return d
                .map(|(_, d)| (d, Vec::new()))
                .ok_or_else(|| missing(p.batch));
        };
        if p.batch != 1 {
            return Err(SpecError::new(
                "batch",
                "with max_batch the replica chooses each batch's size: leave batch at 1",
            )
            .into());
        }
        if !(2..=pharos_sim::MAX_BATCH).contains(&max_batch) {
            return Err(SpecError::new(
                "max_batch",
                format!("must be 2 to {}, got {max_batch}", pharos_sim::MAX_BATCH),
            )
            .into());
        }
        if sizes.is_empty() {
            return Err(missing(1));
        }
        if !sizes.contains(&max_batch) {
            return Err(SpecError::new(
                "max_batch",
                format!(
                    "the profile of {:?} on {:?} has batch sizes {sizes:?}: max_batch must be one \
                     of them above 1",
                    p.model, p.device
                ),
            )
            .into());
        }
        let single = rows
            .iter()
            .find(|(b, _)| *b == 1)
            .map(|(_, d)| d.clone())
            .ok_or_else(|| missing(1))?;
        return Ok((single, rows));
    }
    let d: Dist =
        serde_json::from_value(v.clone()).map_err(|e| SpecError::new("", e.to_string()))?;
    d.validate()?;
    Ok((d, Vec::new()))
}

/// The log-normals through the p50 and p99 of the profile's rows for `p`'s model,
/// device and threads whose batch size `keep` accepts, by batch size (ascending), and
/// every batch size the profile has for them.
#[allow(clippy::type_complexity)]
fn profile_rows(
    file: &Path,
    p: &ProfileRef,
    keep: impl Fn(u32) -> bool,
) -> Result<(Vec<(u32, Dist)>, Vec<u32>), ExperimentError> {
    let text = std::fs::read_to_string(file).map_err(|source| ExperimentError::Io {
        file: file.to_path_buf(),
        source,
    })?;
    let malformed = |line: usize, problem: String| {
        ExperimentError::Other(format!("{}:{line}: {problem}", file.display()))
    };
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let col = |n: &str| {
        header
            .iter()
            .position(|h| *h == n)
            .ok_or_else(|| malformed(1, format!("the header has no `{n}` column")))
    };
    let (cm, cd, ct, cb, c50, c99) = (
        col("model")?,
        col("device")?,
        col("cpu_threads")?,
        col("batch")?,
        col("p50_ms")?,
        col("p99_ms")?,
    );
    let mut out: Vec<(u32, Dist)> = Vec::new();
    let mut sizes: Vec<u32> = Vec::new();
    for (i, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        let get = |c: usize| f.get(c).copied().unwrap_or("");
        if get(cm) == p.model
            && get(cd) == p.device
            && get(ct).parse::<u32>().ok() == Some(p.cpu_threads)
        {
            let batch = get(cb)
                .parse::<u32>()
                .ok()
                .filter(|b| *b >= 1)
                .ok_or_else(|| malformed(i + 2, format!("`batch` is not a size: {:?}", get(cb))))?;
            if sizes.contains(&batch) {
                return Err(malformed(i + 2, format!("a second row for batch {batch}")));
            }
            sizes.push(batch);
            if !keep(batch) {
                continue;
            }
            let num = |c: usize, n: &str| {
                get(c)
                    .parse::<f64>()
                    .map_err(|_| malformed(i + 2, format!("`{n}` is not a number: {:?}", get(c))))
            };
            let (p50, p99) = (num(c50, "p50_ms")?, num(c99, "p99_ms")?);
            let d = Dist::lognormal_from_p50_p99(p50 / 1000.0, p99 / 1000.0)
                .map_err(|e| malformed(i + 2, e.to_string()))?;
            out.push((batch, d));
        }
    }
    out.sort_by_key(|(b, _)| *b);
    sizes.sort_unstable();
    Ok((out, sizes))
}
