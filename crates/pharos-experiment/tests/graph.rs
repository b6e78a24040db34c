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
