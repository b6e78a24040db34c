//! Writing an experiment's results: `results.json` (deterministic for a seed),
//! `timing.json` (wall-clock times), `summary.md` (the tables), `summary.svg` (the
//! table as bars), a per-minute CSV timeline per run and an SVG plot per policy and
//! cluster size (of the first seed).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::frontier::{Frontier, Point};
use crate::svg::{BarChart, LineChart, Series, panels};
use crate::{Experiment, ExperimentError, RunResult};

/// The file stem of a run's outputs, e.g. `aiad-32cpu-seed42`.
pub fn run_stem(r: &RunResult) -> String {
    let label: String = r
        .policy
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{label}-{}cpu-seed{}", fmt_num(r.cpus), r.seed)
}

fn fmt_num(v: f64) -> String {
    if v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

#[derive(Serialize)]
struct ResultsFile<'a> {
    experiment: &'a str,
    description: Option<&'a str>,
    trace: TraceInfo,
    policies: &'a [crate::PolicyEntry],
    runs: Vec<RunEntry<'a>>,
}

#[derive(Serialize)]
struct TraceInfo {
    jobs: Vec<String>,
    minutes: usize,
    expected_requests: f64,
}

#[derive(Serialize)]
struct RunEntry<'a> {
    #[serde(flatten)]
    result: &'a RunResult,
    timeline: String,
    plot: Option<String>,
}

/// A summary row as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryRow {
    pub policy: String,
    pub cpus: f64,
    pub seed: u64,
    pub slo_violation_rate: f64,
    pub lost_utility: f64,
    pub lost_effective_utility: f64,
    pub requests: u64,
    pub dropped: u64,
    pub mean_ready_replicas: f64,
    pub events: u64,
    pub sim_wall_s: f64,
}

pub fn summary_rows(results: &[RunResult]) -> Vec<SummaryRow> {
    results
        .iter()
        .map(|r| SummaryRow {
            policy: r.policy.clone(),
            cpus: r.cpus,
            seed: r.seed,
            slo_violation_rate: r.summary.slo_violation_rate,
            lost_utility: r.summary.lost_utility,
            lost_effective_utility: r.summary.lost_effective_utility,
            requests: r.summary.requests,
            dropped: r.summary.dropped,
            mean_ready_replicas: r.summary.mean_ready_replicas,
            events: r.summary.events,
            sim_wall_s: r.sim_wall_s,
        })
        .collect()
}

/// The columns of a run's row, shared by the text and the Markdown table.
const RUN_COLUMNS: [&str; 9] = [
    "policy",
    "vCPUs",
    "seed",
    "violation",
    "lost U",
    "lost effU",
    "requests",
    "dropped",
    "replicas",
];

fn run_cells(r: &RunResult) -> [String; 9] {
    let m = &r.summary;
    [
        r.policy.clone(),
        fmt_num(r.cpus),
        r.seed.to_string(),
        format!("{:.1}%", m.slo_violation_rate * 100.0),
        format!("{:.2}", m.lost_utility),
        format!("{:.2}", m.lost_effective_utility),
        m.requests.to_string(),
        m.dropped.to_string(),
        format!("{:.1}", m.mean_ready_replicas),
    ]
}

/// The results as a text table (one row per run, with its wall time).
pub fn table(results: &[RunResult]) -> String {
    const WIDTHS: [usize; 9] = [20, 6, 6, 10, 9, 9, 10, 8, 9];
    let mut s = String::new();
    let line = |s: &mut String, cells: &[String], wall: &str| {
        for (i, (c, w)) in cells.iter().zip(WIDTHS).enumerate() {
            if i == 0 {
                let _ = write!(s, "{c:<w$}");
            } else {
                let _ = write!(s, " {c:>w$}");
            }
        }
        let _ = writeln!(s, " {wall:>8}");
    };
    line(&mut s, &RUN_COLUMNS.map(String::from), "run s");
    for r in results {
        line(&mut s, &run_cells(r), &format!("{:.3}", r.sim_wall_s));
    }
    s
}

/// The runs of one policy on one cluster size, over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Aggregate {
    pub policy: String,
    pub cpus: f64,
    pub seeds: usize,
    /// (mean, min, max) over seeds.
    pub slo_violation_rate: (f64, f64, f64),
    pub lost_utility: (f64, f64, f64),
    pub mean_dropped: f64,
    pub mean_ready_replicas: f64,
}

/// Mean, min and max over seeds of every (policy, cluster size), in grid order.
pub fn aggregate(exp: &Experiment, results: &[RunResult]) -> Vec<Aggregate> {
    aggregate_from(exp, results, None)
}

/// [`aggregate`] of the minutes from `from` on (None: the run's own summary).
pub fn aggregate_from(
    exp: &Experiment,
    results: &[RunResult],
    from: Option<usize>,
) -> Vec<Aggregate> {
    let numbers = |r: &RunResult| match from {
        Some(m) => {
            let (v, l, _) = pharos_sim::summarize_from(&r.minutes, m);
            (v, l)
        }
        None => (r.summary.slo_violation_rate, r.summary.lost_utility),
    };
    let stats = |v: &[f64]| {
        let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (mean, min, max)
    };
    let mut out = Vec::new();
    for &cpus in &exp.cpus {
        for p in &exp.policies {
            let runs: Vec<&RunResult> = results
                .iter()
                .filter(|r| r.policy == p.label && r.cpus == cpus)
                .collect();
            if runs.is_empty() {
                continue;
            }
            let n = runs.len() as f64;
            let viol: Vec<f64> = runs.iter().map(|r| numbers(r).0).collect();
            let lost: Vec<f64> = runs.iter().map(|r| numbers(r).1).collect();
            out.push(Aggregate {
                policy: p.label.clone(),
                cpus,
                seeds: runs.len(),
                slo_violation_rate: stats(&viol),
                lost_utility: stats(&lost),
                mean_dropped: runs.iter().map(|r| r.summary.dropped as f64).sum::<f64>() / n,
                mean_ready_replicas: runs
                    .iter()
                    .map(|r| r.summary.mean_ready_replicas)
                    .sum::<f64>()
                    / n,
            });
        }
    }
    out
}

/// The aggregate over seeds as a Markdown table: one row per cluster size, one column
/// per policy, "violation rate / lost utility" in each cell (with the range over seeds
/// when there are several).
pub fn markdown_aggregate(exp: &Experiment, results: &[RunResult]) -> String {
    markdown_aggregate_from(exp, results, None)
}

/// [`markdown_aggregate`] of the minutes from `from` on.
pub fn markdown_aggregate_from(
    exp: &Experiment,
    results: &[RunResult],
    from: Option<usize>,
) -> String {
    let agg = aggregate_from(exp, results, from);
    let mut s = String::from("| vCPUs |");
    for p in &exp.policies {
        let _ = write!(s, " {} |", p.label);
    }
    s.push_str("\n|---|");
    for _ in &exp.policies {
        s.push_str("---|");
    }
    s.push('\n');
    for &cpus in &exp.cpus {
        let _ = write!(s, "| {} |", fmt_num(cpus));
        for p in &exp.policies {
            match agg.iter().find(|a| a.policy == p.label && a.cpus == cpus) {
                Some(a) if a.seeds > 1 => {
                    let (v, v0, v1) = a.slo_violation_rate;
                    let (l, l0, l1) = a.lost_utility;
                    let _ = write!(
                        s,
                        " {:.1}% ({:.1}-{:.1}), {:.2} ({:.2}-{:.2}) |",
                        v * 100.0,
                        v0 * 100.0,
                        v1 * 100.0,
                        l,
                        l0,
                        l1
                    );
                }
                Some(a) => {
                    let _ = write!(
                        s,
                        " {:.1}%, {:.2} |",
                        a.slo_violation_rate.0 * 100.0,
                        a.lost_utility.0
                    );
                }
                None => s.push_str(" - |"),
            }
        }
        s.push('\n');
    }
    s
}

/// The results as a Markdown table (for docs).
pub fn markdown_table(results: &[RunResult]) -> String {
    let mut s = format!(
        "| {} |\n|{}\n",
        RUN_COLUMNS.join(" | "),
        "---|".repeat(RUN_COLUMNS.len())
    );
    for r in results {
        let _ = writeln!(s, "| {} |", run_cells(r).join(" | "));
    }
    s
}

/// Create `dir` (and its parents), naming it on failure.
pub(crate) fn create_dir(dir: &Path) -> Result<(), ExperimentError> {
    std::fs::create_dir_all(dir).map_err(|source| ExperimentError::Io {
        file: dir.to_path_buf(),
        source,
    })
}

/// Write `name` in `dir`; returns its path.
pub(crate) fn write_in(
    dir: &Path,
    name: &str,
    contents: impl AsRef<[u8]>,
) -> Result<PathBuf, ExperimentError> {
    let p = dir.join(name);
    write(&p, contents)?;
    Ok(p)
}

fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<(), ExperimentError> {
    std::fs::write(path, contents).map_err(|source| ExperimentError::Io {
        file: path.to_path_buf(),
        source,
    })
}

/// Write every output file into `dir` (created if needed); returns the paths written.
pub fn write_all(
    exp: &Experiment,
    results: &[RunResult],
    dir: &Path,
) -> Result<Vec<PathBuf>, ExperimentError> {
    std::fs::create_dir_all(dir).map_err(|source| ExperimentError::Io {
        file: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    let mut runs = Vec::with_capacity(results.len());
    for r in results {
        let stem = run_stem(r);
        let timeline = format!("timeline-{stem}.csv");
        let plot = format!("run-{stem}.svg");
        let p = dir.join(&timeline);
        write(&p, timeline_csv(r))?;
        written.push(p);
        // One plot per policy and cluster size: the first seed's.
        let plot = if r.seed == exp.seeds[0] {
            let p = dir.join(&plot);
            write(&p, run_svg(exp, r))?;
            written.push(p);
            Some(plot)
        } else {
            None
        };
        runs.push(RunEntry {
            result: r,
            timeline,
            plot,
        });
    }
    let file = ResultsFile {
        experiment: &exp.spec.name,
        description: exp.spec.description.as_deref(),
        trace: TraceInfo {
            jobs: exp.trace.jobs.iter().map(|j| j.name.clone()).collect(),
            minutes: exp.trace.minutes(),
            expected_requests: exp.trace.total_requests(),
        },
        policies: &exp.policies,
        runs,
    };
    let json = serde_json::to_string_pretty(&file)
        .map_err(|e| ExperimentError::Other(format!("cannot encode results: {e}")))?;
    let p = dir.join("results.json");
    write(&p, json + "\n")?;
    written.push(p);
    let timing: Vec<_> = results
        .iter()
        .map(|r| {
            serde_json::json!({
                "policy": r.policy, "cpus": r.cpus, "seed": r.seed,
                "sim_wall_s": r.sim_wall_s, "events": r.summary.events,
                "requests": r.summary.requests,
                "requests_per_s": r.summary.requests as f64 / r.sim_wall_s.max(1e-9),
                "events_per_s": r.summary.events as f64 / r.sim_wall_s.max(1e-9),
            })
        })
        .collect();
    let p = dir.join("timing.json");
    write(
        &p,
        serde_json::to_string_pretty(&timing).unwrap_or_default() + "\n",
    )?;
    written.push(p);
    let p = dir.join("summary.md");
    let seeds = exp.seeds.len();
    let over = if seeds > 1 {
        format!(": mean over {seeds} seeds (range)")
    } else {
        String::new()
    };
    let warmup = match exp.spec.warmup_min {
        Some(m) => format!(
            "From minute {m} on (every policy's start left out: the deployment a run begins with differs by policy){over}:\n\n{}\n",
            markdown_aggregate_from(exp, results, Some(m))
        ),
        None => String::new(),
    };
    let md = format!(
        "# {}\n\nSLO violation rate, lost utility (of {}){over}:\n\n{}\n{warmup}Every run:\n\n{}",
        exp.spec.name,
        exp.jobs.len(),
        markdown_aggregate(exp, results),
        markdown_table(results)
    );
    write(&p, md)?;
    written.push(p);
    let p = dir.join("summary.svg");
    write(&p, summary_svg(exp, results))?;
    written.push(p);
    let f = frontier(exp, results);
    let p = dir.join("frontier.md");
    write(
        &p,
        format!(
            "# {}: cost against quality\n\nMeans over {seeds} seed(s).\n\n{}",
            exp.spec.name,
            f.markdown()
        ),
    )?;
    written.push(p);
    let p = dir.join("frontier.svg");
    write(
        &p,
        f.svg(&format!(
            "{}: replica-hours against SLO violations",
            exp.spec.name
        )),
    )?;
    written.push(p);
    Ok(written)
}

/// Every policy (each point of a sweep) at every cluster size as a point of
/// replica-hours against SLO violations, lost utility, dropped requests and the served
/// requests' mean and p99 latency; means over the seeds.
pub fn frontier(exp: &Experiment, results: &[RunResult]) -> Frontier {
    let mut points = Vec::new();
    for &c in &exp.cpus {
        for p in &exp.policies {
            let runs: Vec<&RunResult> = results
                .iter()
                .filter(|r| r.cpus == c && r.policy == p.label)
                .collect();
            if runs.is_empty() {
                continue;
            }
            let mean = |f: &dyn Fn(&RunResult) -> f64| {
                runs.iter().map(|r| f(r)).sum::<f64>() / runs.len() as f64
            };
            points.push(Point {
                group: format!("{} vCPUs", fmt_num(c)),
                family: p.family().to_string(),
                label: p.label.clone(),
                knob: p.sweep.as_ref().map(|w| (w.knob.clone(), w.value.clone())),
                cost: mean(&|r| r.summary.mean_ready_replicas * r.summary.minutes as f64 / 60.0),
                quality: vec![
                    mean(&|r| r.summary.slo_violation_rate * 100.0),
                    mean(&|r| r.summary.lost_utility),
                    mean(&|r| r.summary.dropped as f64 / r.summary.requests.max(1) as f64 * 100.0),
                    mean(&|r| r.summary.mean_latency_s * 1e3),
                    mean(&|r| r.summary.p99_latency_s * 1e3),
                ],
                pareto: false,
            });
        }
    }
    Frontier::new(
        "replica-hours",
        &[
            "SLO violations %",
            "lost utility",
            "dropped %",
            "mean latency ms",
            "p99 latency ms",
        ],
        points,
    )
}

/// Per job and minute: the minute's numbers, as CSV.
pub fn timeline_csv(r: &RunResult) -> String {
    let mut s = String::from(
        "job,minute,arrivals,dropped,completed,violations,p99_s,p99_served_s,utility,effective_utility,mean_ready_replicas,target_replicas\n",
    );
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
    for (job, recs) in r.jobs.iter().zip(&r.minutes) {
        for m in recs {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{:.6},{:.6},{:.3},{}",
                job.name,
                m.minute,
                m.arrivals,
                m.dropped,
                m.completed,
                m.violations,
                opt(m.p99_s),
                opt(m.p99_served_s),
                m.utility,
                m.effective_utility,
                m.mean_ready_replicas,
                m.target_replicas
            );
        }
    }
    s
}

/// Replicas, p99 latency and utility over time for every job of a run, and the
/// cluster's utility.
pub fn run_svg(exp: &Experiment, r: &RunResult) -> String {
    let per_job = |f: &dyn Fn(&pharos_sim::MinuteRecord) -> f64| -> Vec<Series> {
        r.jobs
            .iter()
            .zip(&r.minutes)
            .map(|(j, recs)| Series {
                name: j.name.clone(),
                points: recs.iter().map(|m| (m.minute as f64, f(m))).collect(),
            })
            .collect()
    };
    let slo = exp.jobs.first().map(|j| j.slo.latency_s);
    let same_slo = exp.jobs.iter().all(|j| Some(j.slo.latency_s) == slo);
    let minutes = r.minutes.first().map_or(0, Vec::len);
    let cluster_util: Vec<(f64, f64)> = (0..minutes)
        .map(|m| (m as f64, r.minutes.iter().map(|recs| recs[m].utility).sum()))
        .collect();
    let charts = [
        LineChart {
            title: "ready replicas (mean over the minute)".into(),
            x_label: "minute".into(),
            y_label: "replicas".into(),
            series: per_job(&|m| m.mean_ready_replicas),
            reference: None,
            y_max: None,
            ..Default::default()
        },
        LineChart {
            title: "p99 latency (drops count as infinite; clipped at 4x the SLO)".into(),
            x_label: "minute".into(),
            y_label: "seconds".into(),
            series: per_job(&|m| {
                m.p99_s
                    .unwrap_or(if m.arrivals > 0 { f64::INFINITY } else { 0.0 })
            }),
            reference: if same_slo {
                slo.map(|s| (s, "SLO".to_string()))
            } else {
                None
            },
            y_max: slo.map(|s| 4.0 * s),
            ..Default::default()
        },
        LineChart {
            title: "utility per job: U(p99 of the minute), drops as infinite latency".into(),
            x_label: "minute".into(),
            y_label: "utility".into(),
            series: per_job(&|m| m.utility),
            reference: None,
            y_max: Some(1.0),
            ..Default::default()
        },
        LineChart {
            title: format!("cluster utility (sum over {} jobs)", r.jobs.len()),
            x_label: "minute".into(),
            y_label: "utility".into(),
            series: vec![Series {
                name: "cluster".into(),
                points: cluster_util,
            }],
            reference: Some((r.jobs.len() as f64, "max".to_string())),
            y_max: None,
            ..Default::default()
        },
    ];
    panels(
        &format!(
            "{}: {} on {} vCPUs, seed {} - violation {:.1}%, lost utility {:.2}",
            exp.spec.name,
            r.policy,
            fmt_num(r.cpus),
            r.seed,
            r.summary.slo_violation_rate * 100.0,
            r.summary.lost_utility
        ),
        &charts,
    )
}

/// The violation rates and lost utilities of all runs (mean over seeds) as bars.
pub fn summary_svg(exp: &Experiment, results: &[RunResult]) -> String {
    let mean = |label: &str, cpus: f64, f: &dyn Fn(&RunResult) -> f64| {
        let v: Vec<f64> = results
            .iter()
            .filter(|r| r.policy == label && r.cpus == cpus)
            .map(f)
            .collect();
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let chart = |title: &str, y: &str, percent: bool, f: &dyn Fn(&RunResult) -> f64| BarChart {
        title: title.into(),
        y_label: y.into(),
        categories: exp
            .cpus
            .iter()
            .map(|c| format!("{} vCPUs", fmt_num(*c)))
            .collect(),
        series: exp
            .policies
            .iter()
            .map(|p| {
                (
                    p.label.clone(),
                    exp.cpus.iter().map(|c| mean(&p.label, *c, f)).collect(),
                )
            })
            .collect(),
        percent,
    };
    let a = chart(
        &format!("{}: SLO violation rate", exp.spec.name),
        "violation rate",
        true,
        &|r| r.summary.slo_violation_rate,
    )
    .render();
    let b = chart(
        &format!("{}: lost utility (of {})", exp.spec.name, exp.jobs.len()),
        "lost utility",
        false,
        &|r| r.summary.lost_utility,
    )
    .render();
    // Stack the two charts in one document.
    let strip = |s: &str| {
        let start = s.find('>').map_or(0, |i| i + 1);
        s[start..].trim_end().trim_end_matches("</svg>").to_string()
    };
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="960" height="840" viewBox="0 0 960 840" font-family="sans-serif"><g>{}</g><g transform="translate(0,420)">{}</g></svg>
"#,
        strip(&a),
        strip(&b)
    )
}
