//! The simulator against closed forms, conservation, capacity and determinism.

use pharos_core::{ClusterView, Decision, InferencePolicy, Slo};
use pharos_queueing::{md1_mean_wait_s, mmc_mean_wait_s};
use pharos_sim::{ArrivalCount, ClusterConfig, Dist, OverCapacity, SimConfig, SimJob, Simulation};

/// Keeps the configured replicas; optionally sets accept rates and scripted targets.
struct Script {
    steps: Vec<(f64, Vec<Option<u32>>)>,
    accept: Option<f64>,
}

impl Script {
    fn fixed() -> Self {
        Script {
            steps: vec![],
            accept: None,
        }
    }
}

impl InferencePolicy for Script {
    fn name(&self) -> &str {
        "script"
    }
    fn interval_s(&self) -> f64 {
        1.0
    }
    fn decide(&mut self, view: &ClusterView<'_>) -> Decision {
        let mut d = Decision::unchanged(view.jobs.len());
        if let Some(a) = self.accept {
            d.accept_rate = vec![Some(a); view.jobs.len()];
        }
        if let Some(pos) = self.steps.iter().position(|(t, _)| *t <= view.now_s) {
            d.target_replicas = self.steps.remove(pos).1;
        }
        d
    }
}

fn job(rpm: f64, minutes: usize, replicas: u32, service: Dist) -> SimJob {
    SimJob {
        name: "j".into(),
        slo: Slo::p99(1.0),
        processing_time_s: service.mean_s(),
        cpus_per_replica: 1.0,
        max_concurrent: 1,
        max_queue: u32::MAX,
        min_replicas: 1,
        max_replicas: 100,
        initial_replicas: replicas,
        service_time: service,
        batch_service: Vec::new(),
        router_delay: Dist::Constant { value_s: 0.0 },
        requests_per_min: vec![rpm; minutes],
    }
}

fn config(jobs: Vec<SimJob>, cpus: f64, seed: u64) -> SimConfig {
    SimConfig {
        cluster: ClusterConfig::with_capacity(cpus),
        jobs,
        arrivals: ArrivalCount::Poisson,
        utility_alpha: 1.0,
        seed,
    }
}

/// Mean wait in queue (mean latency - mean service time), pooled over four seeds.
fn mean_wait(make: impl Fn(u64) -> SimConfig) -> f64 {
    let (mut latency_sum, mut n) = (0.0, 0u64);
    let mut service = 0.0;
    for seed in 1..=4 {
        let cfg = make(seed);
        service = cfg.jobs[0].service_time.mean_s();
        let r = Simulation::new(cfg, Script::fixed()).unwrap().run();
        assert_eq!(r.summary.dropped, 0);
        latency_sum += r.summary.mean_latency_s * r.summary.completed as f64;
        n += r.summary.completed;
    }
    latency_sum / n as f64 - service
}

#[test]
fn mmc_mean_wait_matches_erlang_c() {
    // c = 4, mu = 10/s, lambda = 32/s (rho = 0.8): 4 x 2.3 million requests.
    let (c, mean_s, rps) = (4, 0.1, 32.0);
    let sim = mean_wait(|seed| {
        config(
            vec![job(rps * 60.0, 1200, c, Dist::Exponential { mean_s })],
            8.0,
            seed,
        )
    });
    let exact = mmc_mean_wait_s(c, rps, mean_s);
    let err = (sim - exact).abs() / exact;
    eprintln!("M/M/4: simulated {sim:.5} s, Erlang-C {exact:.5} s, error {err:.4}");
    assert!(
        err < 0.02,
        "M/M/4: simulated {sim:.5} s, Erlang-C {exact:.5} s, error {err:.4}"
    );
}

#[test]
fn md1_mean_wait_matches_pollaczek_khinchine() {
    // rho = 0.7: 4 x 500,000 requests.
    let (d, rps) = (0.1, 7.0);
    let sim = mean_wait(|seed| {
        config(
            vec![job(rps * 60.0, 1200, 1, Dist::Constant { value_s: d })],
            1.0,
            seed,
        )
    });
    let exact = md1_mean_wait_s(rps, d);
    let err = (sim - exact).abs() / exact;
    eprintln!("M/D/1: simulated {sim:.5} s, P-K {exact:.5} s, error {err:.4}");
    assert!(
        err < 0.02,
        "M/D/1: simulated {sim:.5} s, P-K {exact:.5} s, error {err:.4}"
    );
}

/// An overloaded two-job cluster with drops of both kinds and scaling under a tight
/// capacity: checked every few seconds.
#[test]
fn requests_are_conserved_and_capacity_holds() {
    let mut a = job(2400.0, 20, 2, Dist::Exponential { mean_s: 0.2 });
    a.max_concurrent = 4;
    a.max_queue = 50;
    let mut b = a.clone();
    b.name = "k".into();
    b.requests_per_min = (0..20)
        .map(|m| if m % 4 == 0 { 3000.0 } else { 100.0 })
        .collect();
    let policy = Script {
        steps: vec![
            (30.0, vec![Some(6), Some(2)]),
            (200.0, vec![Some(1), Some(6)]),
            (260.0, vec![Some(5), Some(3)]),
            (700.0, vec![Some(2), Some(2)]),
        ],
        accept: Some(0.9),
    };
    let mut sim = Simulation::new(config(vec![a, b], 8.0, 3), policy).unwrap();
    let mut t = 0.0;
    while t < 1500.0 {
        t += 2.5;
        sim.run_until(t);
        let c = sim.conservation();
        assert_eq!(
            c.arrived,
            c.completed + c.dropped + c.queued + c.in_flight,
            "at {t}: {c:?}"
        );
        assert!(
            sim.used_cpus() <= 8.0 + 1e-9,
            "at {t}: {} vCPUs",
            sim.used_cpus()
        );
        assert!(c.queued <= 100);
    }
    let r = sim.finish();
    let s = &r.summary;
    assert_eq!(s.requests, s.completed + s.dropped);
    assert!(s.dropped > 0 && s.completed > 0);
    let per_minute: u64 = r.minutes.iter().flatten().map(|m| m.arrivals as u64).sum();
    assert_eq!(per_minute, s.requests);
}

#[test]
fn cold_and_hot_starts_take_their_time() {
    let policy = Script {
        steps: vec![
            (10.0, vec![Some(2)]),
            (100.0, vec![Some(1)]),
            (110.0, vec![Some(2)]),
        ],
        accept: None,
    };
    let mut sim = Simulation::new(
        config(
            vec![job(60.0, 5, 1, Dist::Constant { value_s: 0.01 })],
            4.0,
            1,
        ),
        policy,
    )
    .unwrap();
    sim.run_until(44.9);
    assert_eq!(sim.replicas(0), (1, 1), "cold start still running");
    sim.run_until(45.1);
    assert_eq!(sim.replicas(0), (2, 0), "ready 35 s after the decision");
    assert_eq!(sim.used_cpus(), 2.0);
    sim.run_until(105.0);
    // Scaled down: the pod is idle but still holds its vCPU.
    assert_eq!(sim.replicas(0), (1, 0));
    assert_eq!(sim.used_cpus(), 2.0);
    sim.run_until(112.9);
    assert_eq!(sim.replicas(0), (1, 1));
    sim.run_until(113.1);
    assert_eq!(sim.replicas(0), (2, 0), "hot start in the idle pod: 3 s");
}

#[test]
fn idle_pods_release_capacity_after_the_timeout() {
    let policy = Script {
        steps: vec![(10.0, vec![Some(1)])],
        accept: None,
    };
    let mut sim = Simulation::new(
        config(
            vec![job(60.0, 5, 3, Dist::Constant { value_s: 0.01 })],
            4.0,
            1,
        ),
        policy,
    )
    .unwrap();
    sim.run_until(39.0);
    assert_eq!(sim.used_cpus(), 3.0, "idle for less than 30 s");
    sim.run_until(45.1);
    assert_eq!(
        sim.used_cpus(),
        1.0,
        "released at the first monitor check after 30 s idle"
    );
}

#[test]
fn same_seed_same_result_other_seed_other_result() {
    let mk = |seed| {
        let mut j = job(
            1500.0,
            30,
            3,
            Dist::Lognormal {
                loc_s: 0.0793,
                scale_s: 0.0686,
                shape: 0.4225,
            },
        );
        j.max_concurrent = 4;
        j.max_queue = 50;
        j.router_delay = Dist::Lognormal {
            loc_s: 0.0035,
            scale_s: 0.001,
            shape: 0.48,
        };
        Simulation::new(config(vec![j], 4.0, seed), Script::fixed())
            .unwrap()
            .run()
    };
    let (a, b, c) = (mk(42), mk(42), mk(43));
    assert_eq!(format!("{:?}", a.minutes), format!("{:?}", b.minutes));
    assert_eq!(a.summary, b.summary);
    assert_ne!(a.summary, c.summary);
}

#[test]
fn a_cluster_too_small_for_one_replica_per_job_is_an_error() {
    let j = job(60.0, 5, 1, Dist::Constant { value_s: 0.01 });
    let e = Simulation::new(
        config(vec![j.clone(), j.clone(), j], 2.0, 1),
        Script::fixed(),
    )
    .err()
    .unwrap();
    assert!(
        e.to_string()
            .contains("cannot host the minimum replicas of the 3 jobs"),
        "{e}"
    );
}

#[test]
fn targets_over_capacity_are_trimmed_or_wait() {
    let mk = |mode| {
        let j = job(60.0, 5, 1, Dist::Constant { value_s: 0.01 });
        let mut k = j.clone();
        k.name = "k".into();
        let mut cfg = config(vec![j, k], 4.0, 1);
        cfg.cluster.over_capacity = mode;
        let policy = Script {
            steps: vec![(10.0, vec![Some(10), Some(2)])],
            accept: None,
        };
        let mut sim = Simulation::new(cfg, policy).unwrap();
        sim.run_until(60.0);
        (
            (sim.target(0), sim.target(1)),
            sim.replicas(0),
            sim.replicas(1),
        )
    };
    // Trim: job 0 gets what is free (3 of 4 vCPUs); job 1's increase no longer fits.
    assert_eq!(mk(OverCapacity::Trim), ((3, 1), (3, 0), (1, 0)));
    // Wait: both targets stand; job 0 started first and took the capacity, job 1 waits.
    assert_eq!(mk(OverCapacity::Wait), ((10, 2), (3, 0), (1, 0)));
}

/// A batching replica: batches of 1, 2, 4 and 8 take 0.1, 0.12, 0.15 and 0.2 s.
fn batching(rpm: f64, minutes: usize, max_queue: u32) -> SimJob {
    let c = |value_s: f64| Dist::Constant { value_s };
    SimJob {
        max_concurrent: 8,
        max_queue,
        batch_service: vec![(1, c(0.1)), (2, c(0.12)), (4, c(0.15)), (8, c(0.2))],
        ..job(rpm, minutes, 1, c(0.1))
    }
}

#[test]
fn a_lone_request_is_a_batch_of_one() {
    // One request a minute: every batch holds one request and takes 0.1 s.
    let r = Simulation::new(config(vec![batching(1.0, 60, 10)], 1.0, 3), Script::fixed())
        .unwrap()
        .run();
    assert!(r.summary.completed > 30, "{}", r.summary.completed);
    assert!(
        (r.summary.mean_latency_s - 0.1).abs() < 1e-9,
        "{}",
        r.summary.mean_latency_s
    );
}

#[test]
fn batching_serves_what_one_at_a_time_cannot() {
    // 20 requests/s on one replica: one at a time it serves 10/s; in batches of up to 8
    // it serves up to 40/s.
    let one_at_a_time = SimJob {
        max_concurrent: 8,
        max_queue: 100,
        ..job(1200.0, 30, 1, Dist::Constant { value_s: 0.1 })
    };
    let r = Simulation::new(config(vec![one_at_a_time], 1.0, 5), Script::fixed())
        .unwrap()
        .run();
    assert!(
        r.summary.dropped as f64 > 0.4 * r.summary.requests as f64,
        "{:?}",
        r.summary
    );
    let r = Simulation::new(
        config(vec![batching(1200.0, 30, 100)], 1.0, 5),
        Script::fixed(),
    )
    .unwrap()
    .run();
    assert_eq!(r.summary.dropped, 0);
    assert_eq!(r.summary.completed, r.summary.requests);
    assert!(
        r.summary.mean_latency_s < 0.3,
        "{}",
        r.summary.mean_latency_s
    );
    assert!(
        r.summary.mean_latency_s > 0.1,
        "{}",
        r.summary.mean_latency_s
    );
}

#[test]
fn an_overloaded_batching_replica_serves_full_batches() {
    // 100 requests/s against at most 40/s: every batch after the first holds 8 and takes
    // 0.2 s, so 30 minutes complete about 1800 x 40 requests; the rest are dropped.
    let mut sim = Simulation::new(
        config(vec![batching(6000.0, 30, 50)], 1.0, 7),
        Script::fixed(),
    )
    .unwrap();
    sim.run_until(1800.0);
    let c = sim.conservation();
    assert_eq!(
        c.arrived,
        c.completed + c.dropped + c.queued + c.in_flight,
        "{c:?}"
    );
    let rate = c.completed as f64 / 1800.0;
    assert!((rate - 40.0).abs() < 0.2, "{rate} requests/s");
    sim.run_until(f64::INFINITY);
    let r = sim.finish();
    assert_eq!(r.summary.completed + r.summary.dropped, r.summary.requests);
}

#[test]
fn a_batching_replica_that_becomes_ready_takes_what_waits_as_one_batch() {
    // One replica serving full batches of 8 every 0.1 s falls behind 100 requests/s;
    // a second one is asked for at once. Ready, it takes 8 waiting requests as its first
    // batch: in the 0.1 s after it is ready both replicas complete a batch of 8.
    let c = |value_s: f64| Dist::Constant { value_s };
    let job = SimJob {
        batch_service: vec![(1, c(0.1)), (8, c(0.1))],
        ..batching(6000.0, 2, 10_000)
    };
    let mut cfg = config(vec![job], 2.0, 11);
    cfg.cluster.cold_start_s = 1.0;
    let script = Script {
        steps: vec![(0.0, vec![Some(2)])],
        accept: None,
    };
    let mut sim = Simulation::new(cfg, script).unwrap();
    let mut t = 0.0;
    while sim.replicas(0).0 < 2 {
        t += 0.001;
        assert!(t < 10.0, "the second replica never became ready");
        sim.run_until(t);
    }
    let before = sim.conservation().completed;
    sim.run_until(t + 0.1);
    assert_eq!(sim.conservation().completed - before, 16);
}
