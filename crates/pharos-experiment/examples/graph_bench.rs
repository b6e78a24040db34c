//! The fluid autoscaler's own cost: the wall time of one decision (build the SCLP,
//! solve it exactly or by the LP fallback, size replicas) for random function graphs
//! of 3, 10, 50 and 200 functions, over 20 random queue states each; with the share of
//! decisions that fell back to the LP.
//!
//! `--overloaded`: the state a live server reached (docs/results/graph-live-bench.sh):
//! replicas of a fixed 0.25 vCPU, a pool of 4 vCPUs far below the graph's need, the
//! entry's queue growing by 100 each decision and a few requests queued at the first
//! 20 functions.
//!
//! Decisions keep to the fluid autoscaler's default work budget (past it, the flow
//! rule: `over_budget`); `--unbounded` lifts it, to time the exact solver alone.
//!
//!   cargo run --release -p pharos-experiment --example graph_bench [-- [--overloaded] [--unbounded] F...]

use std::time::Instant;

use pharos_core::{
    ClusterView, Function, Graph, GraphPolicy, GraphView, JobCounters, JobView, Slo,
};
use pharos_policy::graph::{FluidGraph, FluidGraphParams};

/// SplitMix64, seeded.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A random layered graph: function j routes to one or two later functions (90% of
/// its output), the last functions exit.
fn graph(n: usize, rng: &mut Rng, resource: [f64; 2]) -> Graph {
    let functions = (0..n)
        .map(|j| {
            let mut routes = Vec::new();
            let later = n - j - 1;
            if later > 0 {
                let a = j + 1 + (rng.next() * later.min(4) as f64) as usize;
                if later > 1 && rng.next() < 0.5 {
                    let b = j + 1 + (rng.next() * later.min(4) as f64) as usize;
                    if b != a {
                        routes.push((a, 0.5));
                        routes.push((b, 0.4));
                    } else {
                        routes.push((a, 0.9));
                    }
                } else {
                    routes.push((a, 0.9));
                }
            }
            Function {
                name: format!("f{j}"),
                app: 0,
                mu: 5.0 + 45.0 * rng.next(),
                resource,
                resource_per_replica: None,
                timeout_s: 5.0,
                queue_cap: 1000,
                max_replicas: 100,
                routes,
                calls: Vec::new(),
                min_replicas: 0,
            }
        })
        .collect();
    Graph {
        apps: vec!["app".into()],
        entries: vec![0],
        functions,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let overloaded = args.iter().any(|a| a == "--overloaded");
    let unbounded = args.iter().any(|a| a == "--unbounded");
    args.retain(|a| a != "--overloaded" && a != "--unbounded");
    let sizes: Vec<usize> = args.iter().map(|a| a.parse()).collect::<Result<_, _>>()?;
    let sizes = if sizes.is_empty() {
        vec![3, 10, 50, 200]
    } else {
        sizes
    };
    println!(
        "{:>10} {:>10} {:>12} {:>12} {:>10} {:>12}",
        "functions", "decisions", "mean_ms", "max_ms", "fallbacks", "over_budget"
    );
    for n in sizes {
        let mut rng = Rng(n as u64);
        let resource = if overloaded {
            [0.25, 0.25]
        } else {
            [0.25, 2.0]
        };
        let g = graph(n, &mut rng, resource);
        let lambda = 50.0;
        let flow = g.effective_rates(&{
            let mut e = vec![0.0; n];
            e[0] = lambda;
            e
        });
        let need: f64 = flow
            .iter()
            .zip(&g.functions)
            .map(|(f, func)| f / func.mu)
            .sum();
        let capacity = if overloaded { 4.0 } else { 1.5 * need / 0.8 };
        let mut policy = FluidGraph::new(FluidGraphParams {
            max_solver_work: unbounded.then_some(u64::MAX),
            ..FluidGraphParams::default()
        });
        let (mut total, mut max) = (0.0f64, 0.0f64);
        let decisions = if overloaded { 5 } else { 20 };
        for d in 0..=decisions {
            let queues: Vec<u32> = (0..n)
                .map(|j| match (overloaded, j) {
                    (false, _) => (rng.next() * 50.0) as u32,
                    (true, 0) => 100 * d as u32,
                    (true, j) if j < 20 => (rng.next() * 5.0) as u32,
                    (true, _) => 0,
                })
                .collect();
            let jobs: Vec<JobView<'_>> = g
                .functions
                .iter()
                .zip(&queues)
                .map(|(f, &q)| JobView {
                    name: &f.name,
                    slo: Slo {
                        latency_s: 5.0,
                        percentile: 99.0,
                    },
                    processing_time_s: 1.0 / f.mu,
                    cpus_per_replica: 1.0,
                    min_replicas: 0,
                    max_replicas: 100,
                    max_concurrent: 1,
                    target_replicas: 1,
                    ready_replicas: 1,
                    starting_replicas: 0,
                    queued: q,
                    in_flight: 0,
                    accept_rate: 1.0,
                    counters: JobCounters::default(),
                    minute_arrivals: &[],
                    cold_start_s: None,
                })
                .collect();
            let now = 10.0 * d as f64;
            let arrivals = [(lambda * now) as u64];
            let view = GraphView {
                cluster: ClusterView {
                    now_s: now,
                    capacity_cpus: capacity,
                    free_cpus: 0.0,
                    jobs: &jobs,
                },
                graph: &g,
                external_arrivals: &arrivals,
            };
            if d == 0 {
                policy.initial_decision(&view);
                continue;
            }
            let t = Instant::now();
            policy.decide(&view);
            let s = t.elapsed().as_secs_f64();
            total += s;
            max = max.max(s);
        }
        println!(
            "{:>10} {:>10} {:>12.3} {:>12.3} {:>10} {:>12}",
            n,
            decisions,
            total / decisions as f64 * 1e3,
            max * 1e3,
            policy.fallbacks,
            policy.over_budget
        );
    }
    Ok(())
}
