//! Training-scheduler experiments: a job trace (the philly-gavel CSV), GPU cluster
//! shapes, and scheduler configurations compared on job completion time, queueing
//! delay, GPU utilisation and makespan.
//!
//! ```yaml
//! kind: training
//! name: philly-0e4a51
//! trace: ../../data/philly-gavel/0e4a51.csv
//! clusters:
//!   - { name: small, pools: [ { gpu_type: v100, nodes: 2, gpus_per_node: 8 } ] }
//! policies:
//!   - { label: fifo, order: fifo, backfill: false, preemption: false }
//!   - { label: las, order: las }
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use pharos_core::SpecError;
use pharos_policy::training::{GangParams, GangScheduler};
use pharos_sim::nearest_rank;
use pharos_sim::training::{GpuPool, TraceJob, TrainRunResult, TrainSimConfig, read_jobs_csv};
use serde::{Deserialize, Serialize};

use crate::ExperimentError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSpec {
    /// Must be `training`.
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The trace file, relative to the experiment file.
    pub trace: PathBuf,
    pub clusters: Vec<ClusterShape>,
    #[serde(default = "cpg")]
    pub cpus_per_gpu: f64,
    #[serde(default = "ckpt")]
    pub checkpoint_interval_s: f64,
    #[serde(default = "restart")]
    pub restart_cost_s: f64,
    #[serde(default = "tick")]
    pub tick_s: f64,
    /// A gang over more than one node runs this much slower.
    #[serde(default)]
    pub cross_node_slowdown: f64,
    /// Jobs given priority 1 (the rest 0), drawn with this probability, seeded.
    #[serde(default)]
    pub high_priority_share: f64,
    #[serde(default)]
    pub seed: u64,
    /// Each: `label` and the scheduler's parameters (unknown ones refused).
    pub policies: Vec<serde_json::Value>,
}

fn cpg() -> f64 {
    4.0
}
pub(crate) fn ckpt() -> f64 {
    900.0
}
pub(crate) fn restart() -> f64 {
    60.0
}
fn tick() -> f64 {
    300.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterShape {
    pub name: String,
    pub pools: Vec<GpuPool>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicySpec {
    pub label: String,
    pub params: GangParams,
}

#[derive(Debug, Clone)]
pub struct TrainingExperiment {
    pub spec: TrainingSpec,
    pub policies: Vec<PolicySpec>,
    pub jobs: Vec<TraceJob>,
    pub priorities: Vec<i32>,
}

/// The summary of one run.
#[derive(Debug, Clone, Serialize)]
pub struct TrainingRow {
    pub cluster: String,
    pub policy: String,
    pub jobs: usize,
    pub never_ran: usize,
    pub mean_jct_h: f64,
    pub median_jct_h: f64,
    pub p95_jct_h: f64,
    pub mean_queueing_h: f64,
    pub waited_over_1h: f64,
    pub gpu_utilisation: f64,
    pub makespan_d: f64,
    pub preemptions: u64,
    pub decisions: u64,
    /// JCT quantiles (hours) at 0, 5, ..., 100%.
    pub jct_cdf_h: Vec<f64>,
    /// Wall seconds of the run (not deterministic).
    #[serde(skip)]
    pub wall_s: f64,
    #[serde(skip)]
    pub daily_utilisation: Vec<f64>,
}

/// `n` uniform draws in [0, 1) from `seed` (SplitMix64): per-job choices of an
/// experiment (priorities, which jobs may be halted), the same for the same seed.
pub(crate) fn seeded_uniforms(seed: u64, n: usize) -> impl Iterator<Item = f64> {
    let mut state = seed;
    (0..n).map(move |_| {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// Whether an experiment file is a training experiment (`kind: training`).
pub fn is_training(text: &str) -> bool {
    text.lines().any(|l| l.trim() == "kind: training")
}

impl TrainingExperiment {
    pub fn load(path: &Path) -> Result<TrainingExperiment, ExperimentError> {
        let spec: TrainingSpec = crate::read_yaml(path)?;
        let bad = |e: SpecError| ExperimentError::Spec {
            file: path.to_path_buf(),
            error: e,
        };
        if spec.kind != "training" {
            return Err(bad(SpecError::new("kind", "must be `training`")));
        }
        if spec.clusters.is_empty() || spec.policies.is_empty() {
            return Err(bad(SpecError::new(
                "",
                "needs at least one cluster and one policy",
            )));
        }
        let mut policies: Vec<PolicySpec> = Vec::new();
        for (i, v) in spec.policies.iter().enumerate() {
            let at = |p: String| bad(SpecError::new(format!("policies[{i}]"), p));
            let mut map = v
                .as_object()
                .cloned()
                .ok_or_else(|| at("must be a map with a `label`".into()))?;
            let label = match map.remove("label") {
                Some(serde_json::Value::String(l)) => l,
                _ => return Err(at("needs a `label`".into())),
            };
            let params: GangParams = serde_json::from_value(serde_json::Value::Object(map))
                .map_err(|e| at(e.to_string()))?;
            if policies.iter().any(|q| q.label == label) {
                return Err(at(format!("{label:?} appears twice")));
            }
            policies.push(PolicySpec { label, params });
        }
        if !(0.0..=1.0).contains(&spec.high_priority_share) {
            return Err(bad(SpecError::new(
                "high_priority_share",
                "must be in [0, 1]",
            )));
        }
        let base = path.parent().unwrap_or(Path::new(""));
        let trace = base.join(&spec.trace);
        let text = std::fs::read_to_string(&trace).map_err(|source| ExperimentError::Io {
            file: trace.clone(),
            source,
        })?;
        let jobs = read_jobs_csv(&text)
            .map_err(|e| ExperimentError::Other(format!("{}: {e}", trace.display())))?;
        let priorities = seeded_uniforms(spec.seed, jobs.len())
            .map(|u| i32::from(u < spec.high_priority_share))
            .collect();
        Ok(TrainingExperiment {
            spec,
            policies,
            jobs,
            priorities,
        })
    }

    pub fn config(&self, c: &ClusterShape) -> TrainSimConfig {
        TrainSimConfig {
            pools: c.pools.clone(),
            jobs: self.jobs.clone(),
            cpus_per_gpu: self.spec.cpus_per_gpu,
            checkpoint_interval_s: self.spec.checkpoint_interval_s,
            restart_cost_s: self.spec.restart_cost_s,
            tick_s: self.spec.tick_s,
            priorities: self.priorities.clone(),
            cross_node_slowdown: self.spec.cross_node_slowdown,
            preemptible: vec![],
        }
    }

    /// Every cluster x policy (one at a time: each run is well under a second).
    pub fn run_all(&self) -> Result<Vec<TrainingRow>, ExperimentError> {
        let mut rows = Vec::new();
        for c in &self.spec.clusters {
            let cfg = self.config(c);
            for p in &self.policies {
                let mut s = GangScheduler::new(p.params.clone());
                let t = Instant::now();
                let r =
                    pharos_sim::training::run(&cfg, &mut s).map_err(|e| ExperimentError::Spec {
                        file: PathBuf::from(&self.spec.name),
                        error: e.within(&format!("clusters.{}", c.name)),
                    })?;
                rows.push(summarise(&c.name, &p.label, &r, t.elapsed().as_secs_f64()));
            }
        }
        Ok(rows)
    }
}

fn summarise(cluster: &str, policy: &str, r: &TrainRunResult, wall_s: f64) -> TrainingRow {
    let mut jct: Vec<f64> = r
        .jobs
        .iter()
        .map(|j| (j.end_s - j.arrival_s) / 3600.0)
        .collect();
    jct.sort_by(f64::total_cmp);
    let n = jct.len().max(1) as f64;
    let queueing: Vec<f64> = r
        .jobs
        .iter()
        .map(|j| (j.first_start_s - j.arrival_s) / 3600.0)
        .collect();
    let daily = r
        .hourly_utilisation
        .chunks(24)
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect();
    TrainingRow {
        cluster: cluster.into(),
        policy: policy.into(),
        jobs: r.jobs.len(),
        never_ran: r.never_ran.len(),
        mean_jct_h: jct.iter().sum::<f64>() / n,
        median_jct_h: nearest_rank(&jct, 0.5),
        p95_jct_h: nearest_rank(&jct, 0.95),
        mean_queueing_h: queueing.iter().sum::<f64>() / n,
        waited_over_1h: queueing.iter().filter(|q| **q > 1.0).count() as f64 / n,
        gpu_utilisation: r.gpu_utilisation,
        makespan_d: r.makespan_s / 86400.0,
        preemptions: r.jobs.iter().map(|j| u64::from(j.preemptions)).sum(),
        decisions: r.decisions,
        jct_cdf_h: (0..=20)
            .map(|k| nearest_rank(&jct, k as f64 / 20.0))
            .collect(),
        wall_s,
        daily_utilisation: daily,
    }
}

/// The summary table (markdown).
pub fn summary(exp: &TrainingExperiment, rows: &[TrainingRow]) -> String {
    let mut s = format!("# {}\n\n", exp.spec.name);
    if let Some(d) = &exp.spec.description {
        s += &format!("{d}\n\n");
    }
    s += &format!(
        "{} jobs. Checkpoint every {} s of work, restart cost {} s, scheduler ticks every {} s, \
         gangs over more than one node {}% slower. JCT = completion - arrival; queueing = \
         first start - arrival.\n\n",
        exp.jobs.len(),
        exp.spec.checkpoint_interval_s,
        exp.spec.restart_cost_s,
        exp.spec.tick_s,
        exp.spec.cross_node_slowdown * 100.0
    );
    for c in &exp.spec.clusters {
        let gpus: u32 = c.pools.iter().map(|p| p.nodes * p.gpus_per_node).sum();
        let shape: Vec<String> = c
            .pools
            .iter()
            .map(|p| format!("{} x {} {}", p.nodes, p.gpus_per_node, p.gpu_type))
            .collect();
        s += &format!("## {} ({gpus} GPUs: {})\n\n", c.name, shape.join(", "));
        s += "| policy | mean JCT h | median h | p95 h | mean queueing h | waited > 1 h | GPU util | makespan d | preemptions | never ran | run s |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
        for r in rows.iter().filter(|r| r.cluster == c.name) {
            s += &format!(
                "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1}% | {:.1}% | {:.1} | {} | {} | {:.3} |\n",
                r.policy,
                r.mean_jct_h,
                r.median_jct_h,
                r.p95_jct_h,
                r.mean_queueing_h,
                r.waited_over_1h * 100.0,
                r.gpu_utilisation * 100.0,
                r.makespan_d,
                r.preemptions,
                r.never_ran,
                r.wall_s
            );
        }
        s += "\n";
    }
    s
}

/// results.json, summary.md, and per cluster a JCT CDF and daily utilisation chart.
pub fn write_all(
    exp: &TrainingExperiment,
    rows: &[TrainingRow],
    dir: &Path,
) -> Result<Vec<PathBuf>, ExperimentError> {
    crate::report::create_dir(dir)?;
    let write = |name: &str, text: String| crate::report::write_in(dir, name, text);
    let mut out = vec![
        write(
            "results.json",
            serde_json::to_string_pretty(&serde_json::json!({"name": exp.spec.name, "rows": rows}))
                .unwrap_or_default(),
        )?,
        write("summary.md", summary(exp, rows))?,
    ];
    for c in &exp.spec.clusters {
        let mine: Vec<&TrainingRow> = rows.iter().filter(|r| r.cluster == c.name).collect();
        let cdf = crate::svg::LineChart {
            title: format!("{}: job completion time CDF", c.name),
            x_label: "JCT (hours)".into(),
            y_label: "share of jobs".into(),
            series: mine
                .iter()
                .map(|r| crate::svg::Series {
                    name: r.policy.clone(),
                    points: r
                        .jct_cdf_h
                        .iter()
                        .enumerate()
                        .map(|(k, h)| (*h, k as f64 / 20.0))
                        .collect(),
                })
                .collect(),
            reference: None,
            y_max: None,
            ..Default::default()
        };
        let util = crate::svg::LineChart {
            title: format!("{}: GPU utilisation per day", c.name),
            x_label: "day".into(),
            y_label: "busy share".into(),
            series: mine
                .iter()
                .map(|r| crate::svg::Series {
                    name: r.policy.clone(),
                    points: r
                        .daily_utilisation
                        .iter()
                        .enumerate()
                        .map(|(d, u)| (d as f64, *u))
                        .collect(),
                })
                .collect(),
            reference: None,
            y_max: Some(1.0),
            ..Default::default()
        };
        out.push(write(
            &format!("{}.svg", c.name),
            crate::svg::panels(&format!("{} on {}", exp.spec.name, c.name), &[cdf, util]),
        )?);
    }
    Ok(out)
}
