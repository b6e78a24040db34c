//! Function-graph experiments end to end: the fluid autoscaler against the queueing
//! prediction, and bad experiment files.

use std::path::Path;

use pharos_experiment::Overrides;
use pharos_experiment::graph::{GraphExperiment, GraphExperimentSpec};

fn experiment(yaml: &str) -> Result<GraphExperiment, String> {
    let spec: GraphExperimentSpec = serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?;
    GraphExperiment::from_spec(
        spec,
        Path::new("test.yaml"),
        Path::new("."),
        &Overrides::default(),
    )
    .map_err(|e| e.to_string())
}

const CHAIN: &str = r#"
name: steady
trace: { generate: { minutes: 60, jobs: [ { name: load, kind: constant, rpm: 1200 } ] } }
apps:
  - name: chain
    load: load
    functions:
      - { name: a, mu: 40, resource: [0.25, 2], timeout_s: 60, queue_cap: 5000, routes: { b: 1.0 } }
      - { name: b, mu: 20, resource: [0.25, 2], timeout_s: 60, queue_cap: 5000, routes: { c: 1.0 } }
      - { name: c, mu: 10, resource: [0.25, 2], timeout_s: 60, queue_cap: 5000 }
cluster: { capacity: [100], cold_start_s: 2 }
policies: [ { name: fluid, rate_window_s: 300 } ]
seeds: [1, 2]
"#;

/// Steady load with ample capacity: the fluid autoscaler settles near inflow / mu per
/// function provisioned for 80% utilisation (a: 1 x 0.625 CPU, b: 1 x 1.25, c: 2 x
/// 1.25; a little more, as it drains what queues up between decisions), and the
/// simulated response time agrees within 10% with the M/M/n prediction for the
/// replicas it held.
#[test]
fn the_fluid_autoscaler_in_steady_state_matches_the_queueing_prediction() {
    let exp = experiment(CHAIN).unwrap();
    let runs = exp.run_all(2).unwrap();
    let lambda = 20.0;
    let mu = [40.0, 20.0, 10.0];
    let steady = [(1.0, 0.625), (1.0, 1.25), (2.0, 2.5)];
    for r in &runs {
        let f = &r.result.functions;
        let mut want = 0.0;
        for j in 0..3 {
            let (n, res) = (f[j].mean_replicas, f[j].mean_resource);
            assert!((n - steady[j].0).abs() < 0.05, "function {j}: {n} replicas");
            assert!(
                res >= steady[j].1 && res < 1.06 * steady[j].1,
                "function {j}: {res} CPUs"
            );
            let servers = n.round() as u32;
            let rate = mu[j] * res / n;
            want += pharos_queueing::mmc_mean_wait_s(servers, lambda, 1.0 / rate) + 1.0 / rate;
        }
        let got = r.result.apps[0].mean_s;
        eprintln!("seed {}: simulated {got:.4} s, M/M/n {want:.4} s", r.seed);
        assert!(
            (got - want).abs() / want < 0.10,
            "seed {}: {got} s vs {want} s",
            r.seed
        );
        assert_eq!(r.result.apps[0].failed, 0);
    }
}

#[test]
fn bad_graph_experiments_are_named() {
    let e = experiment(&CHAIN.replace("routes: { c: 1.0 }", "routes: { d: 1.0 }")).unwrap_err();
    assert!(e.contains("no function \"d\""), "{e}");
    let e = experiment(&CHAIN.replace("load: load", "load: other")).unwrap_err();
    assert!(e.contains("no trace job \"other\""), "{e}");
    let e = experiment(&CHAIN.replace("routes: { b: 1.0 }", "routes: { b: 1.5 }")).unwrap_err();
    assert!(e.contains("sum to 1.5"), "{e}");
    let e = experiment(&CHAIN.replace("mu: 20", "mu: -1")).unwrap_err();
    assert!(e.contains("mu"), "{e}");
    let e = experiment(&CHAIN.replace("name: fluid,", "name: fluidd,")).unwrap_err();
    assert!(e.contains("fluidd"), "{e}");
}

/// The live comparison's experiment (benches/graphs-live/sim.yaml) simulates exactly the
/// graphs the server runs: its apps name the live specs, and the model holds their
/// functions as the server's autoscaler sees them (service rate per vCPU, sizes and
/// range, replica bounds, timeouts, queues, routes and calls).
#[test]
fn an_app_may_be_the_spec_of_a_live_graph() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/graphs-live");
    let exp = GraphExperiment::load(&dir.join("sim.yaml"), &Overrides::default()).unwrap();
    let g = &exp.graph;
    assert_eq!(g.apps, ["diamond", "fanout"]);
    let mut off = 0;
    for (a, file) in ["diamond.yaml", "fanout.yaml"].iter().enumerate() {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let live = pharos_engine::graph::GraphSpec::parse(&text)
            .unwrap()
            .to_core();
        assert_eq!(g.entries[a], off + live.entries[0]);
        for (i, want) in live.functions.iter().enumerate() {
            let f = &g.functions[off + i];
            assert_eq!(f.name, format!("{}/{}", g.apps[a], want.name));
            assert_eq!(f.app, a);
            assert!((f.mu - want.mu).abs() < 1e-9 * want.mu, "{}", f.name);
            assert_eq!(f.resource, want.resource);
            assert_eq!(f.resource_per_replica, want.resource_per_replica);
            assert_eq!(
                (f.min_replicas, f.max_replicas, f.queue_cap, f.timeout_s),
                (
                    want.min_replicas,
                    want.max_replicas,
                    want.queue_cap,
                    want.timeout_s
                )
            );
            let mut routes: Vec<(usize, f64)> =
                want.routes.iter().map(|&(k, p)| (off + k, p)).collect();
            let mut got = f.routes.clone();
            routes.sort_by_key(|r| r.0);
            got.sort_by_key(|r| r.0);
            assert_eq!(got, routes, "{}", f.name);
            let calls: Vec<usize> = want.calls.iter().map(|c| off + c).collect();
            assert_eq!(f.calls, calls, "{}", f.name);
        }
        off += live.functions.len();
    }
    // The fan-out's front calls its three workers; the diamond keeps one replica each.
    assert_eq!(g.functions[5].calls.len(), 3);
    assert!(g.functions.iter().all(|f| f.min_replicas == 1));
}

#[test]
fn an_app_with_a_graph_and_functions_is_refused() {
    let yaml = CHAIN.replace("    load: load\n", "    load: load\n    graph: x.yaml\n");
    let e = experiment(&yaml).unwrap_err();
    assert!(e.contains("apps[0].graph") && e.contains("not both"), "{e}");
    let yaml = r#"
name: missing
trace: { generate: { minutes: 5, jobs: [ { name: load, kind: constant, rpm: 60 } ] } }
apps: [ { name: x, load: load, graph: no-such-graph.yaml } ]
cluster: { capacity: [1] }
policies: [fluid]
"#;
    let e = experiment(yaml).unwrap_err();
    assert!(
        e.contains("apps[0].graph") && e.contains("no-such-graph.yaml"),
        "{e}"
    );
}
