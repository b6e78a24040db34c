//! One GPU cluster shared by a service and training jobs: the split holds what the
//! service's plan asks for, halts jobs (least work lost first) only as the rules allow,
//! gives GPUs back after the service stops asking, and a static split moves nothing.

use std::collections::BTreeMap;

use pharos_core::{ClusterView, Decision, InferencePolicy, Slo};
use pharos_policy::training::{GangParams, GangScheduler, Order};
use pharos_sim::shared::{SharedConfig, SharedResult, Split, YieldRules, run};
use pharos_sim::training::{GpuPool, TraceJob, TrainSimConfig};
use pharos_sim::{ArrivalCount, ClusterConfig, Dist, SimConfig, SimJob};

/// Plans ahead of the load: 1 replica, 6 from t = 1500 s (the burst comes at 1800 s),
/// 1 again from t = 3600 s.
struct Plan;

impl InferencePolicy for Plan {
    fn name(&self) -> &str {
        "plan"
    }
    fn interval_s(&self) -> f64 {
        10.0
    }
    fn decide(&mut self, view: &ClusterView<'_>) -> Decision {
        let mut d = Decision::unchanged(view.jobs.len());
        let t = view.now_s;
        d.target_replicas = vec![Some(if (1500.0..3600.0).contains(&t) { 6 } else { 1 })];
        d
    }
}

/// 90 minutes: 60 rpm, 1200 rpm from minute 30, 60 rpm from minute 60.
fn service() -> SimConfig {
    let mut rpm = vec![60.0; 30];
    rpm.extend(vec![1200.0; 30]);
    rpm.extend(vec![60.0; 30]);
    SimConfig {
        cluster: ClusterConfig::with_capacity(8.0),
        jobs: vec![SimJob {
            name: "svc".into(),
            slo: Slo::p99(1.0),
            processing_time_s: 0.2,
            cpus_per_replica: 1.0,
            max_concurrent: 2,
            max_queue: 100,
            min_replicas: 1,
            max_replicas: 8,
            initial_replicas: 1,
            service_time: Dist::Constant { value_s: 0.2 },
            batch_service: Vec::new(),
            router_delay: Dist::Constant { value_s: 0.0 },
            requests_per_min: rpm,
        }],
        arrivals: ArrivalCount::Exact,
        utility_alpha: 1.0,
        seed: 7,
    }
}

/// Four 2-GPU jobs arriving at 0 that outlast the run, on 2 nodes of 4 GPUs.
fn training(preemptible: bool) -> TrainSimConfig {
    TrainSimConfig {
        pools: vec![GpuPool {
            gpu_type: "g".into(),
            nodes: 2,
            gpus_per_node: 4,
        }],
        jobs: (0..4)
            .map(|id| TraceJob {
                id,
                arrival_s: 0.0,
                gpus: 2,
                job_type: "t".into(),
                duration_s: BTreeMap::from([("g".into(), 1e6)]),
                source: "measured".into(),
            })
            .collect(),
        cpus_per_gpu: 1.0,
        checkpoint_interval_s: 600.0,
        restart_cost_s: 60.0,
        tick_s: 600.0,
        priorities: vec![],
        cross_node_slowdown: 0.25,
        preemptible: vec![preemptible; 4],
    }
}

fn go(split: Split, preemptible: bool) -> SharedResult {
    let cfg = SharedConfig {
        inference: service(),
        training: training(preemptible),
        split,
        rules: YieldRules {
            interval_s: 10.0,
            min_run_s: 300.0,
            max_preemptions_per_hour: 2,
            release_after_s: 300.0,
            consolidate: true,
        },
    };
    let mut sched = GangScheduler::new(GangParams {
        order: Order::Fifo,
        preemption: false,
        ..GangParams::default()
    });
    run(&cfg, Plan, &mut sched).unwrap()
}

fn never_over_the_cluster(r: &SharedResult) {
    for (h, u) in r.hours.iter().enumerate() {
        assert!(
            u.inference_gpus + u.training_gpus <= 8.0 + 1e-9,
            "hour {h}: {u:?}"
        );
    }
}

#[test]
fn the_shared_split_takes_gpus_before_the_burst_and_gives_them_back() {
    let r = go(Split::Shared, true);
    never_over_the_cluster(&r);
    // Before the plan rises training holds 6 of 8 GPUs (three 2-GPU jobs beside the
    // service's replica); at 1500 s the service asks for 5 more: one is free, two jobs
    // are halted, each 300 s after its last checkpoint (started at 0, checkpoints every
    // 600 s).
    let halts: Vec<_> = r.events.iter().filter(|e| e.kind == "preempted").collect();
    assert_eq!(halts.len(), 2, "{:?}", r.events);
    for e in &halts {
        assert_eq!(e.t_s, 1500.0);
        assert_eq!(e.lost_s, 300.0);
        assert_eq!(e.services, vec![("svc".to_string(), 1, 6)]);
        assert!(
            e.message.contains("service svc planned 1 -> 6 replicas"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("losing 300 s of 2 GPUs"),
            "{}",
            e.message
        );
    }
    assert_eq!(r.preemptions, 2);
    assert!((r.preemption_lost_gpu_hours - 2.0 * 300.0 * 2.0 / 3600.0).abs() < 1e-9);
    // The burst is served from its start: the replicas were ready before 1800 s.
    assert_eq!(r.inference.summary.dropped, 0);
    assert!(r.inference.summary.slo_violation_rate < 0.01);
    // The service stops asking at 3600 s (its idle pods a little later); 300 s after
    // that the GPUs go back and the halted jobs resume from their checkpoints.
    let resumes: Vec<_> = r.events.iter().filter(|e| e.kind == "resumed").collect();
    assert_eq!(resumes.len(), 2, "{:?}", r.events);
    for e in &resumes {
        assert!(e.t_s >= 3900.0 && e.t_s <= 4000.0, "{e:?}");
    }
    // Useful work is what was not lost: never above what training held.
    assert!(r.useful_gpu_hours > 0.0 && r.useful_gpu_hours < r.training_busy_gpu_hours);
}

#[test]
fn a_static_split_moves_nothing_and_starves_the_burst_of_nothing_it_owns() {
    let r = go(Split::Static { serving_gpus: 4 }, true);
    never_over_the_cluster(&r);
    assert_eq!(r.preemptions, 0);
    assert!(r.events.is_empty());
    for u in &r.hours {
        assert!(
            u.training_gpus <= 4.0 + 1e-9 && u.inference_gpus <= 4.0 + 1e-9,
            "{u:?}"
        );
    }
    // Training ran on its 4 GPUs all along: two jobs, 1.5 h each.
    assert!((r.training_busy_gpu_hours - 4.0 * 1.5).abs() < 1e-6);
}

#[test]
fn jobs_that_may_not_be_halted_are_not_and_the_service_waits() {
    let r = go(Split::Shared, false);
    never_over_the_cluster(&r);
    assert_eq!(r.preemptions, 0);
    // The service got the one free GPU beside its first replica, no more.
    for u in &r.hours {
        assert!(u.inference_gpus <= 2.0 + 1e-9, "{u:?}");
    }
    let shared = go(Split::Shared, true);
    assert!(r.inference.summary.slo_violation_rate > shared.inference.summary.slo_violation_rate);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = go(Split::Shared, true);
    let b = go(Split::Shared, true);
    assert_eq!(a.events, b.events);
    assert_eq!(a.useful_gpu_hours, b.useful_gpu_hours);
    assert_eq!(
        a.inference.summary.slo_violation_rate,
        b.inference.summary.slo_violation_rate
    );
}

#[test]
fn gpus_a_job_frees_go_to_a_service_still_short_not_to_the_next_job() {
    // No job may be halted; job 0 ends at 1,800 s, while the service lacks 4 GPUs.
    let mut training = training(false);
    training.jobs[0].duration_s.insert("g".into(), 1800.0);
    let cfg = SharedConfig {
        inference: service(),
        training,
        split: Split::Shared,
        rules: YieldRules::default(),
    };
    let mut sched = GangScheduler::new(GangParams {
        order: Order::Fifo,
        preemption: false,
        ..GangParams::default()
    });
    let r = run(&cfg, Plan, &mut sched).unwrap();
    never_over_the_cluster(&r);
    assert_eq!(r.preemptions, 0);
    assert_eq!(r.jobs_completed, 1);
    // First hour: 1 GPU until 1,500 s, 2 (the free one) until job 0 ends at 1,800 s,
    // then its 2 as well: a mean of (1500 + 300 x 2 + 1800 x 4) / 3600 = 2.58 (1.58 had
    // job 3, waiting since 0, taken them).
    let first = r.hours[0];
    assert!(
        (first.inference_gpus - 2.58).abs() < 0.05,
        "the service got the ended job's GPUs: {first:?}"
    );
}
