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

pub(super) struct GraphScaler {
    driver: GraphDriver<Box<dyn GraphPolicy>>,
    /// The graphs it was built for: (graph, its functions' services).
    key: Vec<(String, Vec<String>)>,
    graph: Graph,
    /// Function services in the model's order.
    names: Vec<String>,
    started: Instant,
    pub(super) calls: u64,
}

/// The graphs' model: one app per graph, functions indexed across all of them.
fn combined(graphs: &[Arc<GraphRt>]) -> (Graph, Vec<String>, Vec<(String, Vec<String>)>) {
    let mut g = Graph {
        apps: Vec::new(),
        entries: Vec::new(),
        functions: Vec::new(),
    };
    let mut names = Vec::new();
    let mut key = Vec::new();
    for (a, rt) in graphs.iter().enumerate() {
        let spec = rt.spec();
        let core = spec.to_core();
        let off = g.functions.len();
        g.apps.push(spec.name.clone());
        g.entries.push(off + core.entries[0]);
        let svcs: Vec<String> = (0..spec.functions.len())
            .map(|j| spec.function_service(j).name)
            .collect();
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
        names.extend(svcs.iter().cloned());
        key.push((spec.name.clone(), svcs));
    }
    (g, names, key)
}

/// Calls the graph policy when it is due and sets its functions' targets.
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
            let spec = rt.spec();
            (0..spec.functions.len()).all(|j| {
                g.svcs
                    .get(&spec.function_service(j).name)
                    .is_some_and(|s| !s.deleting)
            })
        })
        .cloned()
        .collect();
    if graphs.is_empty() {
        g.graph_scaler = None;
        return;
    }
    let (model, names, key) = combined(&graphs);
    // Rebuilt when the graphs (or their routes and bounds) changed.
    if g.graph_scaler
        .as_ref()
        .is_none_or(|s| s.key != key || s.graph != model)
    {
        let cfg = &state.config.graph_autoscaler;
        match pharos_policy::graph::build_graph(&cfg.policy, &cfg.params) {
            Ok(p) => {
                g.graph_scaler = Some(GraphScaler {
                    driver: GraphDriver::new(p),
                    key,
                    graph: model,
                    names,
                    started: Instant::now(),
                    calls: 0,
                })
            }
            Err(e) => {
                warn!("graph autoscaler: {e}");
                return;
            }
        }
    }
    let now_s = {
        let s = g.graph_scaler.as_ref().expect("built above");
        if s.driver.initial_pending() {
            0.0
        } else {
            match s.driver.due(s.started.elapsed().as_secs_f64()) {
                Some(t) => t,
                None => return,
            }
        }
    };
    // The pool left to graphs: the capacity training leaves, less what inference
    // services hold.
    let others: f64 = g
        .svcs
        .values()
        .filter(|s| s.spec.graph.is_none())
        .map(|s| s.spec.cpus * s.held_replicas() as f64)
        .sum();
    let capacity = (state.services.capacity_left(state) - others).max(0.0);
    let scaler = g.graph_scaler.as_mut().expect("built above");
    let stats: Vec<_> = scaler
        .names
        .iter()
        .map(|n| g.svcs[n].router.stats())
        .collect();
    let views: Vec<JobView<'_>> = scaler
        .names
        .iter()
        .zip(&stats)
        .map(|(n, st)| autoscale::job_view(n, &g.svcs[n], st))
        .collect();
    let held: Vec<f64> = scaler
        .names
        .iter()
        .map(|n| g.svcs[n].spec.cpus * g.svcs[n].held_replicas() as f64)
        .collect();
    let current: Vec<(u32, f64)> = scaler
        .names
        .iter()
        .map(|n| (g.svcs[n].target, g.svcs[n].spec.cpus))
        .collect();
    let external: Vec<u64> = graphs.iter().map(|rt| rt.arrivals()).collect();
    let view = GraphView {
        cluster: ClusterView {
            now_s,
            capacity_cpus: capacity,
            free_cpus: (capacity - held.iter().sum::<f64>()).max(0.0),
            jobs: &views,
        },
        graph: &scaler.graph,
        external_arrivals: &external,
    };
    let targets = scaler.driver.step(&view, &current, &held);
    scaler.calls += 1;
    let policy = scaler.driver.policy().name().to_string();
    drop(views);
    let names = scaler.names.clone();
    for (n, (reps, _size)) in names.iter().zip(targets.into_iter().flatten()) {
        let s = g.svcs.get_mut(n).expect("listed");
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
