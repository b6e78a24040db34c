//! Function-graph experiments: applications of functions on a shared pool, their loads
//! from a trace, and autoscalers compared on every capacity x load level x seed.
//!
//! ```yaml
//! name: chain
//! trace: { generate: { minutes: 60, jobs: [ { name: load, kind: constant, rpm: 600 } ] } }
//! apps:
//!   - name: chain
//!     load: load            # the trace job whose counts enter the app
//!     functions:
//!       - { name: a, mu: 20, resource: [0.25, 2], timeout_s: 10, queue_cap: 500, routes: { b: 1.0 } }
//!       - { name: b, mu: 10, resource: [0.25, 2], timeout_s: 10, queue_cap: 500 }
//! cluster: { capacity: [4, 8], cold_start_s: 2 }
//! loads: [1.0, 1.5]          # multiply every app's load
//! policies: [fluid, hpa, kpa]
//! seeds: [1, 2, 3]
//! ```
//!
//! An app may instead name the spec of a graph the server runs (`kind: graph`, what
//! `pharos apply -f` takes): `{ name: diamond, load: load, graph: live/diamond.yaml }`
//! (relative to the experiment file) simulates exactly the functions, routes, sizes,
//! replica bounds, timeouts and queues that run live.
//!
//! Outputs: `results.json` (every run; the same for the same seeds), `timing.json`
//! (the autoscalers' decision times, wall clock) and `summary.md` (means over seeds).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use pharos_core::{Function, Graph, GraphDecision, GraphPolicy, GraphView, SpecError};
use pharos_sim::graph::{GraphRunResult, GraphSimConfig};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::spec::TraceSpec;
use crate::{ExperimentError, Overrides, PolicyEntry};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphExperimentSpec {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub trace: TraceSpec,
    pub apps: Vec<AppSpec>,
    pub cluster: GraphClusterSpec,
    #[serde(default = "one")]
    pub loads: Vec<f64>,
    pub policies: Vec<serde_json::Value>,
    #[serde(default = "seeds")]
    pub seeds: Vec<u64>,
}

fn one() -> Vec<f64> {
    vec![1.0]
}
fn seeds() -> Vec<u64> {
    vec![1]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    pub name: String,
    /// The trace job whose per-minute counts enter the app.
    pub load: String,
    /// The first function is the entry unless `entry` names another.
    #[serde(default)]
    pub entry: Option<String>,
    #[serde(default)]
    pub functions: Vec<FunctionSpec>,
    /// A live graph's spec file (`kind: graph`) whose functions the app has, instead of
    /// `functions` and `entry`.
    #[serde(default)]
    pub graph: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    pub name: String,
    /// Requests per second per unit of resource.
    pub mu: f64,
    /// [min, max] resource per replica.
    pub resource: [f64; 2],
    #[serde(default)]
    pub resource_per_replica: Option<f64>,
    pub timeout_s: f64,
    pub queue_cap: u32,
    #[serde(default)]
    pub max_replicas: Option<u32>,
    /// Replicas the function keeps however idle [default: 0].
    #[serde(default)]
    pub min_replicas: u32,
    /// Next hops by function name and probability.
    #[serde(default)]
    pub routes: BTreeMap<String, f64>,
    /// Functions called in parallel after this one, all waited for (a fan-out that
    /// joins); the routes follow.
    #[serde(default)]
    pub calls: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphClusterSpec {
    /// Pool sizes to run (CPUs).
    pub capacity: Vec<f64>,
    #[serde(default = "cold")]
    pub cold_start_s: f64,
    /// Replicas every function has before the autoscaler's first decision.
    #[serde(default = "initial")]
    pub initial_replicas: u32,
}

fn cold() -> f64 {
    2.0
}
fn initial() -> u32 {
    1
}

/// A checked experiment.
#[derive(Debug, Clone)]
pub struct GraphExperiment {
    pub spec: GraphExperimentSpec,
    pub graph: Graph,
    /// Per app, requests per minute (before the load factor).
    pub load_rpm: Vec<Vec<f64>>,
    pub policies: Vec<PolicyEntry>,
}

/// One run's key and outcome.
#[derive(Debug, Clone, Serialize)]
pub struct GraphRun {
    pub capacity: f64,
    pub load: f64,
    pub policy: String,
    pub seed: u64,
    pub result: GraphRunResult,
    /// Decision wall time (not in results.json).
    #[serde(skip)]
    pub decide_s: Vec<f64>,
}

impl GraphExperiment {
    pub fn load(path: &Path, ov: &Overrides) -> Result<GraphExperiment, ExperimentError> {
        let spec: GraphExperimentSpec = crate::read_yaml(path)?;
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        Self::from_spec(spec, path, &base, ov)
    }

    pub fn from_spec(
        mut spec: GraphExperimentSpec,
        file: &Path,
        base: &Path,
        ov: &Overrides,
    ) -> Result<GraphExperiment, ExperimentError> {
        let bad = |e: SpecError| ExperimentError::Spec {
            file: file.to_path_buf(),
            error: e,
        };
        let (trace, _) = crate::load_trace(&spec.trace, base, ov)?;
        for (a, app) in spec.apps.iter_mut().enumerate() {
            if let Some(g) = app.graph.clone() {
                live_functions(a, app, &base.join(&g)).map_err(bad)?;
            }
        }
        let graph = build_graph(&spec.apps).map_err(bad)?;
        let mut load_rpm = Vec::new();
        for (a, app) in spec.apps.iter().enumerate() {
            let job = trace
                .jobs
                .iter()
                .find(|j| j.name == app.load)
                .ok_or_else(|| {
                    bad(SpecError::new(
                        format!("apps[{a}].load"),
                        format!(
                            "no trace job {:?} (the trace has: {})",
                            app.load,
                            trace
                                .jobs
                                .iter()
                                .map(|j| j.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ))
                })?;
            load_rpm.push(job.requests_per_min.clone());
        }
        if !ov.cpus.is_empty() {
            spec.cluster.capacity = ov.cpus.clone();
        }
        if !ov.seeds.is_empty() {
            spec.seeds = ov.seeds.clone();
        }
        for (i, c) in spec.cluster.capacity.iter().enumerate() {
            SpecError::check_positive(&format!("cluster.capacity[{i}]"), *c).map_err(bad)?;
        }
        SpecError::check_non_negative("cluster.cold_start_s", spec.cluster.cold_start_s)
            .map_err(bad)?;
        for (i, l) in spec.loads.iter().enumerate() {
            SpecError::check_positive(&format!("loads[{i}]"), *l).map_err(bad)?;
        }
        if spec.seeds.is_empty() || spec.cluster.capacity.is_empty() || spec.loads.is_empty() {
            return Err(bad(SpecError::new(
                "",
                "needs at least one seed, capacity and load",
            )));
        }
        let mut policies = Vec::new();
        for (i, v) in spec.policies.iter().enumerate() {
            policies.extend(PolicyEntry::from_value(v, i).map_err(|p| bad(SpecError::new("", p)))?);
        }
        if !ov.policies.is_empty() {
            policies.retain(|p| ov.policies.iter().any(|w| p.is_named(w)));
        }
        crate::check_labels(&policies).map_err(bad)?;
        for p in &policies {
            pharos_policy::graph::build_graph(&p.name, &p.params)
                .map_err(ExperimentError::Policy)?;
        }
        Ok(GraphExperiment {
            spec,
            graph,
            load_rpm,
            policies,
        })
    }

    pub fn config(&self, capacity: f64, load: f64, seed: u64) -> GraphSimConfig {
        GraphSimConfig {
            graph: self.graph.clone(),
            capacity,
            cold_start_s: self.spec.cluster.cold_start_s,
            load_rpm: self
                .load_rpm
                .iter()
                .map(|l| l.iter().map(|v| v * load).collect())
                .collect(),
            initial_replicas: self.spec.cluster.initial_replicas,
            seed,
        }
    }

    /// Every run, in parallel on `threads` threads (results in a fixed order).
    pub fn run_all(&self, threads: usize) -> Result<Vec<GraphRun>, ExperimentError> {
        let mut keys = Vec::new();
        for &c in &self.spec.cluster.capacity {
            for &l in &self.spec.loads {
                for p in &self.policies {
                    for &s in &self.spec.seeds {
                        keys.push((c, l, p.clone(), s));
                    }
                }
            }
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .build()
            .map_err(|e| ExperimentError::Other(e.to_string()))?;
        pool.install(|| {
            keys.par_iter()
                .map(|(c, l, p, s)| {
                    let inner = pharos_policy::graph::build_graph(&p.name, &p.params)
                        .map_err(ExperimentError::Policy)?;
                    let mut timed = TimedPolicy {
                        inner,
                        decide_s: Vec::new(),
                    };
                    let result = pharos_sim::graph::run(&self.config(*c, *l, *s), &mut timed)
                        .map_err(|e| ExperimentError::Other(e.to_string()))?;
                    Ok(GraphRun {
                        capacity: *c,
                        load: *l,
                        policy: p.label.clone(),
                        seed: *s,
                        result,
                        decide_s: timed.decide_s,
                    })
                })
                .collect()
        })
    }
}

/// Measures each decision's wall time.
struct TimedPolicy {
    inner: Box<dyn GraphPolicy>,
    decide_s: Vec<f64>,
}

impl GraphPolicy for TimedPolicy {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn interval_s(&self) -> f64 {
        self.inner.interval_s()
    }
    fn initial_decision(&mut self, view: &GraphView<'_>) -> GraphDecision {
        self.inner.initial_decision(view)
    }
    fn decide(&mut self, view: &GraphView<'_>) -> GraphDecision {
        let t = Instant::now();
        let d = self.inner.decide(view);
        self.decide_s.push(t.elapsed().as_secs_f64());
        d
    }
}

/// App `a`'s functions and entry from the live graph spec at `path`, as the server's
/// autoscalers see them ([`pharos_engine::graph::GraphSpec::to_core`]).
fn live_functions(a: usize, app: &mut AppSpec, path: &Path) -> Result<(), SpecError> {
    let field = format!("apps[{a}].graph");
    if !app.functions.is_empty() || app.entry.is_some() {
        return Err(SpecError::new(
            field,
            "an app has either a graph or its functions and entry, not both",
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpecError::new(field.clone(), format!("{}: {e}", path.display())))?;
    let spec = pharos_engine::graph::GraphSpec::parse(&text)
        .map_err(|e| SpecError::new(field.clone(), format!("{}: {e}", path.display())))?;
    let core = spec.to_core();
    let name = |i: usize| core.functions[i].name.clone();
    app.entry = Some(name(core.entries[0]));
    app.functions = core
        .functions
        .iter()
        .map(|f| FunctionSpec {
            name: f.name.clone(),
            mu: f.mu,
            resource: f.resource,
            resource_per_replica: f.resource_per_replica,
            timeout_s: f.timeout_s,
            queue_cap: f.queue_cap,
            max_replicas: Some(f.max_replicas),
            min_replicas: f.min_replicas,
            routes: f.routes.iter().map(|&(to, p)| (name(to), p)).collect(),
            calls: f.calls.iter().map(|&c| name(c)).collect(),
        })
        .collect();
    Ok(())
}

/// The apps' functions, indexed in order, routes resolved by name.
fn build_graph(apps: &[AppSpec]) -> Result<Graph, SpecError> {
    let mut functions = Vec::new();
    let mut entries = Vec::new();
    let mut names = Vec::new();
    for (a, app) in apps.iter().enumerate() {
        let first = functions.len();
        if app.functions.is_empty() {
            return Err(SpecError::new(
                format!("apps[{a}].functions"),
                "an app needs a function",
            ));
        }
        let index = |name: &str| -> Option<usize> {
            app.functions
                .iter()
                .position(|f| f.name == name)
                .map(|i| first + i)
        };
        entries.push(match &app.entry {
            None => first,
            Some(e) => index(e).ok_or_else(|| {
                SpecError::new(format!("apps[{a}].entry"), format!("no function {e:?}"))
            })?,
        });
        for (i, f) in app.functions.iter().enumerate() {
            if app.functions[..i].iter().any(|g| g.name == f.name) {
                return Err(SpecError::new(
                    format!("apps[{a}].functions[{i}].name"),
                    format!("{:?} appears twice", f.name),
                ));
            }
            let mut routes = Vec::new();
            for (to, p) in &f.routes {
                let k = index(to).ok_or_else(|| {
                    SpecError::new(
                        format!("apps[{a}].functions[{i}].routes"),
                        format!("no function {to:?} in app {:?}", app.name),
                    )
                })?;
                routes.push((k, *p));
            }
            let mut calls = Vec::new();
            for to in &f.calls {
                calls.push(index(to).ok_or_else(|| {
                    SpecError::new(
                        format!("apps[{a}].functions[{i}].calls"),
                        format!("no function {to:?} in app {:?}", app.name),
                    )
                })?);
            }
            functions.push(Function {
                name: format!("{}/{}", app.name, f.name),
                app: a,
                mu: f.mu,
                resource: f.resource,
                resource_per_replica: f.resource_per_replica,
                timeout_s: f.timeout_s,
                queue_cap: f.queue_cap,
                max_replicas: f.max_replicas.unwrap_or(1000),
                routes,
                calls,
                min_replicas: f.min_replicas,
            });
        }
        names.push(app.name.clone());
    }
    let g = Graph {
        apps: names,
        entries,
        functions,
    };
    g.validate()?;
    Ok(g)
}

/// Means over seeds of one (capacity, load, policy).
#[derive(Debug, Clone, Serialize)]
pub struct GraphCell {
    pub capacity: f64,
    pub load: f64,
    pub policy: String,
    /// Per app: mean and p99 response (s), failed share, resource-seconds.
    pub apps: Vec<AppCell>,
}

/// An app's name, mean and p99 response (s), failed share and resource-seconds.
pub type AppCell = (String, f64, f64, f64, f64);

pub fn cells(runs: &[GraphRun]) -> Vec<GraphCell> {
    let mut out: Vec<GraphCell> = Vec::new();
    for r in runs {
        if out
            .iter()
            .any(|c| c.capacity == r.capacity && c.load == r.load && c.policy == r.policy)
        {
            continue;
        }
        let same: Vec<&GraphRun> = runs
            .iter()
            .filter(|q| q.capacity == r.capacity && q.load == r.load && q.policy == r.policy)
            .collect();
        let n = same.len() as f64;
        let apps = (0..r.result.apps.len())
            .map(|a| {
                let mean =
                    |f: &dyn Fn(&GraphRun) -> f64| same.iter().map(|q| f(q)).sum::<f64>() / n;
                (
                    r.result.apps[a].name.clone(),
                    mean(&|q| q.result.apps[a].mean_s),
                    mean(&|q| q.result.apps[a].p99_s),
                    mean(&|q| {
                        let x = &q.result.apps[a];
                        x.failed as f64 / (x.arrivals as f64).max(1.0)
                    }),
                    mean(&|q| q.result.apps[a].resource_s),
                )
            })
            .collect();
        out.push(GraphCell {
            capacity: r.capacity,
            load: r.load,
            policy: r.policy.clone(),
            apps,
        });
    }
    out
}

/// The summary tables (markdown).
pub fn summary(exp: &GraphExperiment, runs: &[GraphRun]) -> String {
    let mut s = format!("# {}\n\n", exp.spec.name);
    if let Some(d) = &exp.spec.description {
        s += &format!("{d}\n\n");
    }
    s += &format!(
        "Means over seeds {:?}. Response times are end to end (entry to leaving the app) of \
         completed requests; failed = timed out or rejected by a full queue anywhere, as a \
         share of the requests that entered; CPU-s = resource-seconds held (starting \
         replicas included).\n\n",
        exp.spec.seeds
    );
    let cells = cells(runs);
    for &c in &exp.spec.cluster.capacity {
        for &l in &exp.spec.loads {
            s += &format!("## capacity {c} CPUs, load x{l}\n\n| policy |");
            let apps: Vec<String> = cells
                .first()
                .map(|x| x.apps.iter().map(|a| a.0.clone()).collect())
                .unwrap_or_default();
            for a in &apps {
                s += &format!(" {a} mean ms | {a} p99 ms | {a} failed % | {a} CPU-s |");
            }
            s += "\n|---|";
            s += &"---|".repeat(4 * apps.len());
            s += "\n";
            for cell in cells.iter().filter(|x| x.capacity == c && x.load == l) {
                s += &format!("| {} |", cell.policy);
                for a in &cell.apps {
                    s += &format!(
                        " {:.0} | {:.0} | {:.2} | {:.0} |",
                        a.1 * 1e3,
                        a.2 * 1e3,
                        a.3 * 100.0,
                        a.4
                    );
                }
                s += "\n";
            }
            s += "\n";
        }
    }
    s
}

/// Decision times per policy: (label, decisions, mean s, max s).
pub fn timing(runs: &[GraphRun]) -> Vec<(String, usize, f64, f64)> {
    let mut out: Vec<(String, usize, f64, f64)> = Vec::new();
    for r in runs {
        let e = match out.iter_mut().find(|x| x.0 == r.policy) {
            Some(e) => e,
            None => {
                out.push((r.policy.clone(), 0, 0.0, 0.0));
                out.last_mut().expect("pushed")
            }
        };
        e.1 += r.decide_s.len();
        e.2 += r.decide_s.iter().sum::<f64>();
        e.3 = r.decide_s.iter().copied().fold(e.3, f64::max);
    }
    for e in &mut out {
        e.2 /= e.1.max(1) as f64;
    }
    out
}

/// Write results.json, timing.json and summary.md into `dir`.
pub fn write_all(
    exp: &GraphExperiment,
    runs: &[GraphRun],
    dir: &Path,
) -> Result<Vec<PathBuf>, ExperimentError> {
    crate::report::create_dir(dir)?;
    let write = |name: &str, text: String| crate::report::write_in(dir, name, text);
    let results = serde_json::json!({
        "name": exp.spec.name,
        "graph": exp.graph,
        "runs": runs,
        "cells": cells(runs),
    });
    let timing: Vec<serde_json::Value> = timing(runs)
        .into_iter()
        .map(|(p, n, mean, max)| serde_json::json!({"policy": p, "decisions": n, "mean_s": mean, "max_s": max}))
        .collect();
    let mut out = vec![
        write(
            "results.json",
            serde_json::to_string_pretty(&results).unwrap_or_default(),
        )?,
        write(
            "timing.json",
            serde_json::to_string_pretty(&timing).unwrap_or_default(),
        )?,
        write("summary.md", summary(exp, runs))?,
    ];
    for (name, chart) in charts(exp, runs) {
        out.push(write(&name, chart.render())?);
    }
    let f = frontier(exp, runs);
    out.push(write(
        "frontier.md",
        format!(
            "# {}: cost against quality\n\nMeans over seeds {:?}; response times and \
             failed shares are means over the apps.\n\n{}",
            exp.spec.name,
            exp.spec.seeds,
            f.markdown()
        ),
    )?);
    out.push(write(
        "frontier.svg",
        f.svg(&format!(
            "{}: CPU-seconds against mean response",
            exp.spec.name
        )),
    )?);
    Ok(out)
}

/// Every policy (each point of a sweep) at every capacity and load as a point of
/// CPU-seconds (all apps) against the mean response, the p99 response and the failed
/// share (each a mean over the apps; response times in ms, failed in %).
pub fn frontier(exp: &GraphExperiment, runs: &[GraphRun]) -> crate::frontier::Frontier {
    let points = cells(runs)
        .into_iter()
        .filter_map(|cell| {
            let p = exp.policies.iter().find(|p| p.label == cell.policy)?;
            let n = cell.apps.len().max(1) as f64;
            let over_apps = |f: &dyn Fn(&AppCell) -> f64| cell.apps.iter().map(f).sum::<f64>() / n;
            Some(crate::frontier::Point {
                group: format!("capacity {} CPUs, load x{}", cell.capacity, cell.load),
                family: p.family().to_string(),
                label: p.label.clone(),
                knob: p.sweep.as_ref().map(|w| (w.knob.clone(), w.value.clone())),
                cost: cell.apps.iter().map(|a| a.4).sum(),
                quality: vec![
                    over_apps(&|a| a.1 * 1e3),
                    over_apps(&|a| a.2 * 1e3),
                    over_apps(&|a| a.3 * 100.0),
                ],
                pareto: false,
            })
        })
        .collect();
    crate::frontier::Frontier::new(
        "CPU-seconds",
        &["mean response ms", "p99 response ms", "failed %"],
        points,
    )
}

/// Bar charts over (capacity, load): mean and p99 response per app, failed share (mean
/// over apps) and resource-seconds of all apps, one bar per policy.
fn charts(exp: &GraphExperiment, runs: &[GraphRun]) -> Vec<(String, crate::svg::BarChart)> {
    let cells = cells(runs);
    let mut cats = Vec::new();
    for &c in &exp.spec.cluster.capacity {
        for &l in &exp.spec.loads {
            cats.push((c, l));
        }
    }
    let categories: Vec<String> = cats
        .iter()
        .map(|(c, l)| format!("{c} CPUs, x{l}"))
        .collect();
    let series = |f: &dyn Fn(&GraphCell) -> f64| -> Vec<(String, Vec<f64>)> {
        exp.policies
            .iter()
            .map(|p| {
                let v = cats
                    .iter()
                    .map(|(c, l)| {
                        cells
                            .iter()
                            .find(|x| x.capacity == *c && x.load == *l && x.policy == p.label)
                            .map_or(f64::NAN, f)
                    })
                    .collect();
                (p.label.clone(), v)
            })
            .collect()
    };
    let chart =
        |title: String, y: &str, percent: bool, s: Vec<(String, Vec<f64>)>| crate::svg::BarChart {
            title,
            y_label: y.into(),
            categories: categories.clone(),
            series: s,
            percent,
        };
    let name = &exp.spec.name;
    let mut out = Vec::new();
    for (a, app) in exp.graph.apps.iter().enumerate() {
        out.push((
            format!("mean_ms_{app}.svg"),
            chart(
                format!("{name}: {app} mean response (ms)"),
                "ms",
                false,
                series(&|x| x.apps[a].1 * 1e3),
            ),
        ));
        out.push((
            format!("p99_ms_{app}.svg"),
            chart(
                format!("{name}: {app} p99 response (ms)"),
                "ms",
                false,
                series(&|x| x.apps[a].2 * 1e3),
            ),
        ));
    }
    out.push((
        "failed.svg".into(),
        chart(
            format!("{name}: failed share (mean over apps)"),
            "failed",
            true,
            series(&|x| x.apps.iter().map(|a| a.3).sum::<f64>() / x.apps.len() as f64),
        ),
    ));
    out.push((
        "cpu_s.svg".into(),
        chart(
            format!("{name}: CPU-seconds held (all apps)"),
            "CPU-s",
            false,
            series(&|x| x.apps.iter().map(|a| a.4).sum()),
        ),
    ));
    out
}
