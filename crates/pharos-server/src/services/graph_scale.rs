//! The function graphs' live autoscaler: the configured graph policy (`fluid`, or an
//! inference policy per function), driven by the same [`GraphDriver`] as the graph
//! simulator, shown every running graph as one app of a [`pharos_core::Graph`] (the
//! pool they share), its functions' routers' live counters as the jobs of a
//! [`ClusterView`], and the requests that entered each graph.
//!
//! Replicas keep the vCPUs their function's spec gives them live: a policy's resource
//! per replica is bounded to that size (a graph applied with a `cpus_range` is refused
//! by the server).

use super::*;
use crate::graphs::GraphRt;
use pharos_core::{Graph, GraphPolicy, GraphView};
use pharos_policy::graph::GraphDriver;

/// The graphs an autoscaler was built for: (graph, its spec's version).
type Key = Vec<(String, u64)>;

pub(super) struct GraphScaler {
    /// `None` while a decision runs off the loop (see [`Pending`]).
    driver: Option<GraphDriver<Box<dyn GraphPolicy>>>,
    pending: Option<std::sync::mpsc::Receiver<Done>>,
    key: Key,
    graph: Arc<Graph>,
    /// Function services in the model's order.
    names: Vec<String>,
    started: Instant,
    pub(super) calls: u64,
    /// Seconds each decision took (policy call and fit), the latest 100.
    pub(super) decide_s: std::collections::VecDeque<f64>,
}

impl GraphScaler {
    /// The policy, its calls and how long its decisions took.
    pub(super) fn status(&self, policy: &str) -> Value {
        let d = &self.decide_s;
        json!({
            "policy": policy,
            "calls": self.calls,
            "deciding": self.pending.is_some(),
            "decide_s": {
                "count": d.len(),
                "mean": (!d.is_empty()).then(|| d.iter().sum::<f64>() / d.len() as f64),
                "max": d.iter().copied().reduce(f64::max),
                "latest": d.back(),
            },
        })
    }
}

/// A decision made off the loop: the driver back, and its answer.
struct Done {
    driver: GraphDriver<Box<dyn GraphPolicy>>,
    targets: Option<Vec<(u32, f64)>>,
    seconds: f64,
}

/// What a function's job view holds, owned (the decision runs on another thread).
struct OwnedJob {
    name: String,
    minutes: Vec<u32>,
    slo: pharos_core::Slo,
    processing_time_s: f64,
    cpus_per_replica: f64,
    min_replicas: u32,
    max_replicas: u32,
    max_concurrent: u32,
    target_replicas: u32,
    ready_replicas: u32,
    starting_replicas: u32,
    queued: u32,
    in_flight: u32,
    accept_rate: f64,
    counters: JobCounters,
    cold_start_s: Option<f64>,
}

impl OwnedJob {
    fn of(v: &JobView<'_>) -> Self {
        Self {
            name: v.name.to_string(),
            minutes: v.minute_arrivals.to_vec(),
            slo: v.slo,
            processing_time_s: v.processing_time_s,
            cpus_per_replica: v.cpus_per_replica,
            min_replicas: v.min_replicas,
            max_replicas: v.max_replicas,
            max_concurrent: v.max_concurrent,
            target_replicas: v.target_replicas,
            ready_replicas: v.ready_replicas,
            starting_replicas: v.starting_replicas,
            queued: v.queued,
            in_flight: v.in_flight,
            accept_rate: v.accept_rate,
            counters: v.counters,
            cold_start_s: v.cold_start_s,
        }
    }

    fn view(&self) -> JobView<'_> {
        JobView {
            name: &self.name,
            slo: self.slo,
            processing_time_s: self.processing_time_s,
            cpus_per_replica: self.cpus_per_replica,
            min_replicas: self.min_replicas,
            max_replicas: self.max_replicas,
            max_concurrent: self.max_concurrent,
            target_replicas: self.target_replicas,
            ready_replicas: self.ready_replicas,
            starting_replicas: self.starting_replicas,
            queued: self.queued,
            in_flight: self.in_flight,
            accept_rate: self.accept_rate,
            counters: self.counters,
            minute_arrivals: &self.minutes,
            cold_start_s: self.cold_start_s,
        }
    }
}

/// The graphs' model: one app per graph, functions indexed across all of them.
fn combined(graphs: &[Arc<GraphRt>]) -> (Graph, Vec<String>) {
    let mut g = Graph {
        apps: Vec::new(),
        entries: Vec::new(),
        functions: Vec::new(),
    };
    let mut names = Vec::new();
    for (a, rt) in graphs.iter().enumerate() {
        let spec = rt.spec();
        let core = spec.to_core();
        let off = g.functions.len();
        g.apps.push(spec.name.clone());
        g.entries.push(off + core.entries[0]);
        for mut f in core.functions {
            f.app = a;
            for r in &mut f.routes {
                r.0 += off;
            }
            for c in &mut f.calls {
                *c += off;
            }
            g.functions.push(f);
        }
        names.extend(rt.services.iter().cloned());
    }
    (g, names)
}

/// Applies a decision that finished off the loop; then, when the next is due, starts it
/// on a thread of its own (a large graph's plan can take seconds; the loop never waits
/// for it).
pub(super) fn autoscale_graphs(
    state: &AppState,
    g: &mut Inner,
    graphs: &[Arc<GraphRt>],
    events: &mut Events,
) {
    // Only graphs whose functions all run (a graph being applied or deleted waits).
    let graphs: Vec<Arc<GraphRt>> = graphs
        .iter()
        .filter(|rt| {
            rt.services
                .iter()
                .all(|n| g.svcs.get(n).is_some_and(|s| !s.deleting))
        })
        .cloned()
        .collect();
    if graphs.is_empty() {
        g.graph_scaler = None;
        return;
    }
    let key: Key = graphs
        .iter()
        .map(|rt| (rt.name.clone(), rt.version()))
        .collect();
    // Rebuilt when the graphs (or their routes and bounds) changed; a decision still
    // running for the old ones is dropped.
    if g.graph_scaler.as_ref().is_none_or(|s| s.key != key) {
        let (model, names) = combined(&graphs);
        let cfg = &state.config.graph_autoscaler;
        match pharos_policy::graph::build_graph(&cfg.policy, &cfg.params) {
            Ok(p) => {
                g.graph_scaler = Some(GraphScaler {
                    driver: Some(GraphDriver::new(p)),
                    pending: None,
                    key,
                    graph: Arc::new(model),
                    names,
                    started: Instant::now(),
                    calls: 0,
                    decide_s: std::collections::VecDeque::new(),
                })
            }
            Err(e) => {
                warn!("graph autoscaler: {e}");
                return;
            }
        }
    }
    // A decision that finished: its targets go to the functions.
    let scaler = g.graph_scaler.as_mut().expect("built above");
    if let Some(rx) = &scaler.pending {
        match rx.try_recv() {
            Ok(done) => {
                scaler.pending = None;
                scaler.driver = Some(done.driver);
                scaler.calls += 1;
                if scaler.decide_s.len() == 100 {
                    scaler.decide_s.pop_front();
                }
                scaler.decide_s.push_back(done.seconds);
                let policy = scaler
                    .driver
                    .as_ref()
                    .map(|d| d.policy().name().to_string())
                    .unwrap_or_default();
                let names = scaler.names.clone();
                let resizes = state.services.engine_resizes();
                for (n, (reps, size)) in names.iter().zip(done.targets.into_iter().flatten()) {
                    let Some(s) = g.svcs.get_mut(n) else { continue };
                    let reps = s.allowed_target(reps);
                    // The policy's size is within the function's range (fit_decision).
                    if resizes && size.is_finite() && size > 0.0 && (size - s.cpus()).abs() > 1e-6 {
                        events.push((
                            n.clone(),
                            "resized",
                            format!(
                                "graph autoscaler ({policy}): {} -> {size} vCPUs per replica",
                                s.cpus()
                            ),
                        ));
                        s.size = Some(size);
                    }
                    if s.target != reps {
                        events.push((
                            n.clone(),
                            "scaled",
                            format!(
                                "graph autoscaler ({policy}): {} -> {reps} replicas",
                                s.target
                            ),
                        ));
                        s.set_target(reps);
                    }
                }
            }
            Err(std::sync::mpsc::TryRecvError::Empty) => return,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                warn!("graph autoscaler: a decision failed; the policy starts again");
                g.graph_scaler = None;
                return;
            }
        }
    }
    let scaler = g.graph_scaler.as_ref().expect("built above");
    let Some(driver) = scaler.driver.as_ref() else {
        return;
    };
    let now_s = if driver.initial_pending() {
        0.0
    } else {
        match driver.due(scaler.started.elapsed().as_secs_f64()) {
            Some(t) => t,
            None => return,
        }
    };
    // The pool left to graphs: the capacity training leaves, less what inference
    // services hold.
    let others: f64 = g
        .svcs
        .values()
        .filter(|s| s.spec.graph.is_none())
        .map(|s| s.cpus() * s.held_replicas() as f64)
        .sum();
    let capacity = (state.services.capacity_left(state) - others).max(0.0);
    let jobs: Vec<OwnedJob> = scaler
        .names
        .iter()
        .map(|n| {
            let s = &g.svcs[n];
            OwnedJob::of(&autoscale::job_view(n, s, &s.router.stats()))
        })
        .collect();
    let held: Vec<f64> = scaler
        .names
        .iter()
        .map(|n| g.svcs[n].cpus() * g.svcs[n].held_replicas() as f64)
        .collect();
    let current: Vec<(u32, f64)> = scaler
        .names
        .iter()
        .map(|n| (g.svcs[n].target, g.svcs[n].cpus()))
        .collect();
    let external: Vec<u64> = graphs.iter().map(|rt| rt.arrivals()).collect();
    let graph = scaler.graph.clone();
    let scaler = g.graph_scaler.as_mut().expect("built above");
    let mut driver = scaler.driver.take().expect("checked above");
    let (tx, rx) = std::sync::mpsc::channel();
    scaler.pending = Some(rx);
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let views: Vec<JobView<'_>> = jobs.iter().map(OwnedJob::view).collect();
        let view = GraphView {
            cluster: ClusterView {
                now_s,
                capacity_cpus: capacity,
                free_cpus: (capacity - held.iter().sum::<f64>()).max(0.0),
                jobs: &views,
            },
            graph: &graph,
            external_arrivals: &external,
        };
        let targets = driver.step(&view, &current, &held);
        drop(views);
        let _ = tx.send(Done {
            driver,
            targets,
            seconds: t0.elapsed().as_secs_f64(),
        });
    });
}
