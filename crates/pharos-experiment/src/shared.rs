//! Shared-cluster experiments (`kind: shared-cluster`): inference services and training
//! jobs on one GPU cluster, split statically (a serving slice of fixed size, training
//! the rest) or shared (the services' policy takes what its plan needs, training every
//! gap; see [`pharos_sim::shared`]). Each row reports the services' SLO violations, the
//! training work done and the jobs' completion times.
//!
//! ```yaml
//! kind: shared-cluster
//! name: shared-cluster
//! services:                  # as an inference experiment's trace, job and arrivals
//!   trace: { path: ../data/faro-10jobs/requests_per_minute.csv, select: { stretch: 4 } }
//!   job: { slo: { latency_s: 0.1, percentile: 99 }, service_time: ... }
//! cluster: { gpu_type: v100, nodes: 8, gpus_per_node: 8 }
//! training: { trace: ../data/philly-gavel/0e4a51.csv, from_day: 7 }
//! static: { serving_gpus: [16, 24, 32], policy: faro-sum }
//! policies: [ faro-sum, hpa ]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pharos_core::SpecError;
use pharos_policy::training::{GangParams, GangScheduler};
use pharos_sim::shared::{HourUse, SharedConfig, SharedResult, Split, YieldEvent, YieldRules};
use pharos_sim::training::{GpuPool, TraceJob, TrainSimConfig, read_jobs_csv};
use pharos_sim::{ArrivalCount, Summary};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::spec::{ClusterSpec, ExperimentSpec, JobTemplate, TraceSpec};
use crate::training::{ckpt, restart};
use crate::{Experiment, ExperimentError, Overrides, PolicyEntry};

/// Whether an experiment file is a shared-cluster experiment.
pub fn is_shared(text: &str) -> bool {
    text.lines().any(|l| l.trim() == "kind: shared-cluster")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedSpec {
    /// Must be `shared-cluster`.
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub services: ServicesSpec,
    pub cluster: GpuCluster,
    pub training: TrainingPart,
    #[serde(default)]
    pub rules: YieldRules,
    /// The static partitions to compare with.
    #[serde(rename = "static")]
    pub static_split: StaticSpec,
    /// The services' policies on the shared cluster (as in an inference experiment).
    pub policies: Vec<serde_json::Value>,
    #[serde(default = "seeds")]
    pub seeds: Vec<u64>,
}

fn seeds() -> Vec<u64> {
    vec![42]
}

/// The services: an inference experiment's trace, job settings and arrivals. A
/// replica's `cpus_per_replica` is its GPUs here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesSpec {
    pub trace: TraceSpec,
    #[serde(default)]
    pub job: JobTemplate,
    #[serde(default)]
    pub overrides: BTreeMap<String, JobTemplate>,
    #[serde(default)]
    pub arrivals: ArrivalCount,
    #[serde(default)]
    pub cold_start_s: Option<f64>,
    #[serde(default)]
    pub hot_start_s: Option<f64>,
    #[serde(default)]
    pub pod_idle_timeout_s: Option<f64>,
}

/// Nodes of one GPU model: the training trace's durations on that model are used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuCluster {
    pub gpu_type: String,
    pub nodes: u32,
    pub gpus_per_node: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingPart {
    /// A philly-gavel CSV, relative to the experiment file.
    pub trace: PathBuf,
    /// The jobs arriving from this day of the trace on, for as long as the services'
    /// trace lasts, replayed from time 0.
    #[serde(default)]
    pub from_day: f64,
    #[serde(default = "ckpt")]
    pub checkpoint_interval_s: f64,
    #[serde(default = "restart")]
    pub restart_cost_s: f64,
    #[serde(default = "tick")]
    pub tick_s: f64,
    #[serde(default)]
    pub cross_node_slowdown: f64,
    /// Jobs that may never be halted, drawn with this probability (seeded).
    #[serde(default)]
    pub non_preemptible_share: f64,
    #[serde(default)]
    pub seed: u64,
    /// The gang scheduler's parameters.
    #[serde(default)]
    pub scheduler: Option<serde_json::Value>,
}

fn tick() -> f64 {
    1800.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticSpec {
    /// Serving slices to try (GPUs).
    pub serving_gpus: Vec<u32>,
    /// The services' policy inside the slice.
    pub policy: serde_json::Value,
}

/// A loaded, checked shared-cluster experiment.
#[derive(Debug)]
pub struct SharedExperiment {
    pub spec: SharedSpec,
    /// The services as an inference experiment on the whole cluster (its jobs, policies
    /// and forecasting context); entry 0 is the static slices' policy.
    pub services: Experiment,
    pub training: TrainSimConfig,
    pub params: GangParams,
}

/// One row: a split and the services' policy, on one seed.
#[derive(Debug, Clone, Serialize)]
pub struct SharedRow {
    /// `static-<GPUs>` for a static slice, `shared-<label>` otherwise.
    pub policy: String,
    /// The services' policy.
    pub services_policy: String,
    /// The static slice's GPUs (absent when shared).
    pub serving_gpus: Option<u32>,
    pub seed: u64,
    pub slo_violation_rate: f64,
    pub dropped_rate: f64,
    pub training_useful_gpu_hours: f64,
    pub training_busy_gpu_hours: f64,
    pub preemptions: u32,
    /// Gangs moved onto one node at a checkpoint.
    pub moves: u32,
    /// Work halts and moves lost (not checkpointed), GPU-hours.
    pub preemption_lost_gpu_hours: f64,
    pub restart_gpu_hours: f64,
    pub mean_jct_h: f64,
    pub jobs_arrived: usize,
    pub jobs_completed: usize,
    /// Mean GPUs the services' pods held.
    pub mean_serving_gpus: f64,
    /// Mean GPUs held for the services (the static slice, or what the shared split kept
    /// for them): training could not use these.
    pub mean_serving_held_gpus: f64,
    /// The frontier family (`static`, or the shared policy and its sweep) and the knob's
    /// value.
    #[serde(skip)]
    pub family: String,
    #[serde(skip)]
    pub knob: Option<(String, serde_json::Value)>,
    #[serde(skip)]
    pub summary: Summary,
    #[serde(skip)]
    pub hours: Vec<HourUse>,
    #[serde(skip)]
    pub events: Vec<YieldEvent>,
}

impl SharedExperiment {
    pub fn load(path: &Path) -> Result<SharedExperiment, ExperimentError> {
        let spec: SharedSpec = crate::read_yaml(path)?;
        let bad = |e: SpecError| ExperimentError::Spec {
            file: path.to_path_buf(),
            error: e,
        };
        if spec.kind != "shared-cluster" {
            return Err(bad(SpecError::new("kind", "must be `shared-cluster`")));
        }
        let c = &spec.cluster;
        if c.nodes == 0 || c.gpus_per_node == 0 || c.nodes.saturating_mul(c.gpus_per_node) > 100_000
        {
            return Err(bad(SpecError::new(
                "cluster",
                "needs 1 to 100000 GPUs (nodes x gpus_per_node)",
            )));
        }
        let total = c.nodes * c.gpus_per_node;
        if spec.static_split.serving_gpus.is_empty() && spec.policies.is_empty() {
            return Err(bad(SpecError::new(
                "",
                "no static slice and no policy to run",
            )));
        }
        if let Some(s) = spec
            .static_split
            .serving_gpus
            .iter()
            .find(|s| **s == 0 || **s >= total)
        {
            return Err(bad(SpecError::new(
                "static.serving_gpus",
                format!(
                    "{s} is not between 1 and {} (the cluster's GPUs less one)",
                    total - 1
                ),
            )));
        }
        let t = &spec.training;
        if !(0.0..=1.0).contains(&t.non_preemptible_share) {
            return Err(bad(SpecError::new(
                "training.non_preemptible_share",
                "must be in [0, 1]",
            )));
        }
        SpecError::check_non_negative("training.from_day", t.from_day).map_err(bad)?;
        let params: GangParams = match &t.scheduler {
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| bad(SpecError::new("training.scheduler", e.to_string())))?,
            None => GangParams::default(),
        };
        // The services, as an inference experiment on the whole cluster.
        let s = &spec.services;
        let mut policies = vec![spec.static_split.policy.clone()];
        policies.extend(spec.policies.iter().cloned());
        let inference = ExperimentSpec {
            name: spec.name.clone(),
            description: spec.description.clone(),
            trace: s.trace.clone(),
            job: s.job.clone(),
            overrides: s.overrides.clone(),
            cluster: ClusterSpec {
                cpus: vec![total as f64],
                cold_start_s: s.cold_start_s,
                hot_start_s: s.hot_start_s,
                pod_idle_timeout_s: s.pod_idle_timeout_s,
                pod_monitor_interval_s: None,
                over_capacity: Default::default(),
            },
            policies,
            seeds: spec.seeds.clone(),
            arrivals: s.arrivals,
            utility_alpha: 1.0,
            warmup_min: None,
        };
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        // (The static policy counts as policies[0]: a shared one of the same label is
        // refused, asking for a `label`.)
        let services = Experiment::from_spec(inference, path, &base, &Overrides::default())?;
        let minutes = services.jobs[0].requests_per_min.len();
        let horizon_s = minutes as f64 * 60.0;
        let trace = base.join(&t.trace);
        let text = std::fs::read_to_string(&trace).map_err(|source| ExperimentError::Io {
            file: trace.clone(),
            source,
        })?;
        let all = read_jobs_csv(&text)
            .map_err(|e| ExperimentError::Other(format!("{}: {e}", trace.display())))?;
        let from_s = t.from_day * 86_400.0;
        let jobs: Vec<TraceJob> = all
            .into_iter()
            .filter(|j| j.arrival_s >= from_s && j.arrival_s < from_s + horizon_s)
            .map(|mut j| {
                j.arrival_s -= from_s;
                j
            })
            .collect();
        if jobs.is_empty() {
            return Err(bad(SpecError::new(
                "training.from_day",
                format!(
                    "no job of {} arrives in the {:.1} days from day {}",
                    trace.display(),
                    horizon_s / 86_400.0,
                    t.from_day
                ),
            )));
        }
        if !jobs[0].duration_s.contains_key(&c.gpu_type) {
            return Err(bad(SpecError::new(
                "cluster.gpu_type",
                format!("the training trace has no durations on {:?}", c.gpu_type),
            )));
        }
        let preemptible = crate::training::seeded_uniforms(t.seed, jobs.len())
            .map(|u| u >= t.non_preemptible_share)
            .collect();
        let training = TrainSimConfig {
            pools: vec![GpuPool {
                gpu_type: c.gpu_type.clone(),
                nodes: c.nodes,
                gpus_per_node: c.gpus_per_node,
            }],
            jobs,
            cpus_per_gpu: 4.0,
            checkpoint_interval_s: t.checkpoint_interval_s,
            restart_cost_s: t.restart_cost_s,
            tick_s: t.tick_s,
            priorities: vec![],
            cross_node_slowdown: t.cross_node_slowdown,
            preemptible,
        };
        Ok(SharedExperiment {
            spec,
            services,
            training,
            params,
        })
    }

    /// The runs: static slices (with the static policy), then shared policies; each on
    /// every seed.
    pub fn runs(&self) -> Vec<(Split, usize, u64)> {
        let mut out = Vec::new();
        for &seed in &self.services.seeds {
            for &g in &self.spec.static_split.serving_gpus {
                out.push((Split::Static { serving_gpus: g }, 0, seed));
            }
            for p in 1..self.services.policies.len() {
                out.push((Split::Shared, p, seed));
            }
        }
        out
    }

    pub fn run(
        &self,
        split: Split,
        policy: usize,
        seed: u64,
    ) -> Result<SharedRow, ExperimentError> {
        let entry: &PolicyEntry = &self.services.policies[policy];
        let p = entry.build(&self.services.context())?;
        let cfg = SharedConfig {
            inference: self.services.sim_config(self.services.cpus[0], seed),
            training: self.training.clone(),
            split,
            rules: self.spec.rules,
        };
        let mut sched = GangScheduler::new(self.params.clone());
        let r =
            pharos_sim::shared::run(&cfg, p, &mut sched).map_err(|e| ExperimentError::Spec {
                file: self.services.file.clone(),
                error: e,
            })?;
        Ok(row(split, entry, seed, r))
    }

    /// Every run, `threads` at a time (0: one per core), in [`Self::runs`] order.
    pub fn run_all(&self, threads: usize) -> Result<Vec<SharedRow>, ExperimentError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| ExperimentError::Other(format!("cannot start worker threads: {e}")))?;
        let runs = self.runs();
        pool.install(|| {
            runs.par_iter()
                .map(|(s, p, seed)| self.run(*s, *p, *seed))
                .collect()
        })
    }
}

fn row(split: Split, entry: &PolicyEntry, seed: u64, r: SharedResult) -> SharedRow {
    let hours = r.hours.len().max(1) as f64;
    SharedRow {
        policy: match split {
            Split::Static { serving_gpus } => format!("static-{serving_gpus}"),
            Split::Shared => format!("shared-{}", entry.label),
        },
        services_policy: entry.label.clone(),
        serving_gpus: match split {
            Split::Static { serving_gpus } => Some(serving_gpus),
            Split::Shared => None,
        },
        seed,
        slo_violation_rate: r.inference.summary.slo_violation_rate,
        dropped_rate: r.inference.summary.dropped as f64
            / r.inference.summary.requests.max(1) as f64,
        training_useful_gpu_hours: r.useful_gpu_hours,
        training_busy_gpu_hours: r.training_busy_gpu_hours,
        preemptions: r.preemptions,
        moves: r.moves,
        preemption_lost_gpu_hours: r.preemption_lost_gpu_hours,
        restart_gpu_hours: r.restart_gpu_hours,
        mean_jct_h: r.mean_jct_h,
        jobs_arrived: r.jobs_arrived,
        jobs_completed: r.jobs_completed,
        mean_serving_gpus: r.hours.iter().map(|h| h.inference_gpus).sum::<f64>() / hours,
        mean_serving_held_gpus: r.hours.iter().map(|h| h.serving_held_gpus).sum::<f64>() / hours,
        family: match split {
            Split::Static { .. } => "static".into(),
            Split::Shared => format!("shared-{}", entry.family()),
        },
        knob: match split {
            Split::Static { serving_gpus } => Some(("serving_gpus".into(), serving_gpus.into())),
            Split::Shared => entry
                .sweep
                .as_ref()
                .map(|w| (w.knob.clone(), w.value.clone())),
        },
        summary: r.inference.summary,
        hours: r.hours,
        events: r.events,
    }
}

/// Every run as a point of the cluster's GPU-hours that did no useful training
/// (serving, idle, lost to halts and slowdowns) against its SLO violations (%), and the
/// mean job completion time: the static slices (knob: the slice) against each shared
/// policy's sweep, per seed.
pub fn frontier(exp: &SharedExperiment, rows: &[SharedRow]) -> crate::frontier::Frontier {
    let gpus: f64 = exp
        .training
        .pools
        .iter()
        .map(|p| p.nodes as f64 * p.gpus_per_node as f64)
        .sum();
    let hours = exp.services.jobs[0].requests_per_min.len() as f64 / 60.0;
    let points = rows
        .iter()
        .map(|r| crate::frontier::Point {
            group: format!("seed {}", r.seed),
            family: r.family.clone(),
            label: r.policy.clone(),
            knob: r.knob.clone(),
            cost: gpus * hours - r.training_useful_gpu_hours,
            quality: vec![r.slo_violation_rate * 100.0, r.mean_jct_h],
            pareto: false,
        })
        .collect();
    crate::frontier::Frontier::new(
        "GPU-h without useful training",
        &["SLO violations %", "mean JCT h"],
        points,
    )
}

/// The best static slice of a seed: the smallest whose SLO violations are at most
/// `max_violations` (a share), if any.
pub fn best_static(rows: &[SharedRow], seed: u64, max_violations: f64) -> Option<&SharedRow> {
    rows.iter()
        .filter(|r| r.seed == seed && r.serving_gpus.is_some())
        .filter(|r| r.slo_violation_rate <= max_violations)
        .min_by_key(|r| r.serving_gpus)
}

/// The table, and each shared row against the best static slice of its seed.
pub fn summary(exp: &SharedExperiment, rows: &[SharedRow]) -> String {
    use std::fmt::Write;
    let c = &exp.spec.cluster;
    let mut out = format!(
        "{}: {} services, {} training jobs, {} x {} {} GPUs, {:.1} days\n\n",
        exp.spec.name,
        exp.services.jobs.len(),
        exp.training.jobs.len(),
        c.nodes,
        c.gpus_per_node,
        c.gpu_type,
        exp.services.jobs[0].requests_per_min.len() as f64 / 1440.0
    );
    out.push_str("| policy | seed | SLO violations | dropped | serving GPUs (mean) | held for serving (mean) | training useful GPU-h | busy GPU-h | preemptions | moves | lost to halts and moves GPU-h | restarts GPU-h | jobs done | mean JCT h |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.2}% | {:.2}% | {:.1} | {:.1} | {:.0} | {:.0} | {} | {} | {:.1} | {:.1} | {}/{} | {:.1} |",
            r.policy,
            r.seed,
            r.slo_violation_rate * 100.0,
            r.dropped_rate * 100.0,
            r.mean_serving_gpus,
            r.mean_serving_held_gpus,
            r.training_useful_gpu_hours,
            r.training_busy_gpu_hours,
            r.preemptions,
            r.moves,
            r.preemption_lost_gpu_hours,
            r.restart_gpu_hours,
            r.jobs_completed,
            r.jobs_arrived,
            r.mean_jct_h
        );
    }
    let mut seeds: Vec<u64> = rows.iter().map(|r| r.seed).collect();
    seeds.dedup();
    for seed in seeds {
        let Some(best) = best_static(rows, seed, 0.01) else {
            let _ = writeln!(
                out,
                "\nseed {seed}: no static slice keeps SLO violations at or below 1%"
            );
            continue;
        };
        let _ = writeln!(
            out,
            "\nseed {seed}: best static partition {} ({:.2}% violations, {:.0} useful GPU-h, mean JCT {:.1} h)",
            best.policy,
            best.slo_violation_rate * 100.0,
            best.training_useful_gpu_hours,
            best.mean_jct_h
        );
        for r in rows
            .iter()
            .filter(|r| r.seed == seed && r.serving_gpus.is_none())
        {
            let _ = writeln!(
                out,
                "  {}: {:.2}% violations ({}), useful GPU-h {:+.1}%, mean JCT {:+.1}%",
                r.policy,
                r.slo_violation_rate * 100.0,
                if r.slo_violation_rate <= best.slo_violation_rate {
                    "at or below the static"
                } else {
                    "ABOVE the static"
                },
                (r.training_useful_gpu_hours / best.training_useful_gpu_hours - 1.0) * 100.0,
                (r.mean_jct_h / best.mean_jct_h - 1.0) * 100.0
            );
        }
    }
    out
}

/// results.json, summary.md, events.jsonl (every halt and resume of every run) and
/// gpus.svg (GPUs held by the services and by training, hour by hour, for the best
/// static slice and each shared policy of the first seed).
pub fn write_all(
    exp: &SharedExperiment,
    rows: &[SharedRow],
    out: &Path,
) -> Result<Vec<PathBuf>, ExperimentError> {
    use crate::svg::{LineChart, Series, panels};
    std::fs::create_dir_all(out).map_err(|source| ExperimentError::Io {
        file: out.to_path_buf(),
        source,
    })?;
    let write = |name: &str, text: String| -> Result<PathBuf, ExperimentError> {
        let p = out.join(name);
        std::fs::write(&p, text).map_err(|source| ExperimentError::Io {
            file: p.clone(),
            source,
        })?;
        Ok(p)
    };
    let mut written = vec![
        write(
            "results.json",
            serde_json::to_string_pretty(rows)
                .map_err(|e| ExperimentError::Other(e.to_string()))?,
        )?,
        write("summary.md", summary(exp, rows))?,
    ];
    let mut events = String::new();
    for r in rows {
        for e in &r.events {
            let mut v =
                serde_json::to_value(e).map_err(|e| ExperimentError::Other(e.to_string()))?;
            v["policy"] = r.policy.clone().into();
            v["seed"] = r.seed.into();
            events.push_str(&v.to_string());
            events.push('\n');
        }
    }
    written.push(write("events.jsonl", events)?);
    let front = frontier(exp, rows);
    written.push(write("frontier.md", front.markdown())?);
    written.push(write(
        "frontier.svg",
        front.svg(&format!(
            "{}: GPU-hours without useful training against SLO violations",
            exp.spec.name
        )),
    )?);
    let Some(seed) = rows.first().map(|r| r.seed) else {
        return Ok(written);
    };
    let mut shown: Vec<&SharedRow> = best_static(rows, seed, 0.01).into_iter().collect();
    shown.extend(
        rows.iter()
            .filter(|r| r.seed == seed && r.serving_gpus.is_none()),
    );
    let charts: Vec<LineChart> = shown
        .iter()
        .map(|r| LineChart {
            title: format!("{} (seed {seed})", r.policy),
            x_label: "hour".into(),
            y_label: "GPUs".into(),
            series: vec![
                Series {
                    name: "services".into(),
                    points: r
                        .hours
                        .iter()
                        .enumerate()
                        .map(|(h, u)| (h as f64, u.inference_gpus))
                        .collect(),
                },
                Series {
                    name: "training".into(),
                    points: r
                        .hours
                        .iter()
                        .enumerate()
                        .map(|(h, u)| (h as f64, u.training_gpus))
                        .collect(),
                },
            ],
            reference: Some((
                exp.training.pools[0].nodes as f64 * exp.training.pools[0].gpus_per_node as f64,
                "cluster".into(),
            )),
            ..Default::default()
        })
        .collect();
    if !charts.is_empty() {
        written.push(write(
            "gpus.svg",
            panels(&format!("{}: GPUs by hour", exp.spec.name), &charts),
        )?);
    }
    Ok(written)
}
