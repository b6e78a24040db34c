//! The gang scheduler's decision time with many queued jobs: 64 nodes (32 CPUs, 256
//! GiB, 4 v100 + 4 a100 GPUs), 300 jobs running, and 1,000 / 10,000 random jobs queued
//! (1-8 learners of 1-8 CPUs, a third with 1-2 GPUs, priorities 0-3, two queues with
//! GPU quotas). Median of 5 decisions, with and without preemption.
//!
//!   cargo run --release -p pharos-policy --example sched_bench

use std::collections::BTreeMap;
use std::time::Instant;

use pharos_core::{
    LearnerResources, Node, PendingJob, QueueSpec, RunningJob, SchedView, TrainingScheduler,
};
use pharos_policy::training::{GangParams, GangScheduler};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn resources(rng: &mut Rng) -> LearnerResources {
    let gpus = if rng.below(3) == 0 {
        1 + rng.below(2) as u32
    } else {
        0
    };
    LearnerResources {
        cpus: (1 + rng.below(8)) as f64,
        memory_bytes: (1 + rng.below(16)) << 30,
        gpus,
        gpu_type: (gpus > 0 && rng.below(2) == 0)
            .then(|| if rng.below(2) == 0 { "v100" } else { "a100" }.to_string()),
    }
}

fn main() {
    let nodes: Vec<Node> = (0..64)
        .map(|i| Node {
            name: format!("n{i}"),
            cpus: 32.0,
            memory_bytes: 256 << 30,
            gpus: BTreeMap::from([("v100".to_string(), 4), ("a100".to_string(), 4)]),
        })
        .collect();
    let queues = vec![
        QueueSpec {
            name: "research".into(),
            quota: BTreeMap::from([("gpu".to_string(), 300.0)]),
        },
        QueueSpec {
            name: "prod".into(),
            quota: BTreeMap::from([("gpu/a100".to_string(), 200.0)]),
        },
    ];
    let mut rng = Rng(42);
    // Running jobs: one learner of 4 CPUs each, spread over the nodes.
    let running: Vec<RunningJob> = (0..300)
        .map(|i| RunningJob {
            id: 1_000_000 + i,
            queue: if i % 2 == 0 { "research" } else { "prod" }.into(),
            priority: (i % 3) as i32,
            started_s: i as f64,
            per_learner: LearnerResources {
                cpus: 4.0,
                memory_bytes: 8 << 30,
                gpus: 0,
                gpu_type: None,
            },
            placement: vec![((i % 64) as usize, None)],
            preemptible: true,
            attained_gpu_s: 0.0,
        })
        .collect();
    println!(
        "{:>8} {:>11} {:>10} {:>8} {:>9}",
        "queued", "preemption", "median_ms", "started", "preempted"
    );
    for n in [1_000usize, 10_000] {
        let pending: Vec<PendingJob> = (0..n as u64)
            .map(|id| PendingJob {
                id,
                queue: if rng.below(2) == 0 {
                    "research"
                } else {
                    "prod"
                }
                .into(),
                priority: rng.below(4) as i32,
                submitted_s: id as f64,
                learners: 1 + rng.below(8) as u32,
                per_learner: resources(&mut rng),
                duration_s: BTreeMap::new(),
                attained_gpu_s: 0.0,
            })
            .collect();
        for preemption in [false, true] {
            let mut s = GangScheduler::new(GangParams {
                preemption,
                ..GangParams::default()
            });
            let view = SchedView {
                explain: true,
                now_s: 0.0,
                nodes: &nodes,
                queues: &queues,
                pending: &pending,
                running: &running,
            };
            let mut times = Vec::new();
            let mut last = None;
            for _ in 0..5 {
                let t = Instant::now();
                let d = s.decide(&view);
                times.push(t.elapsed().as_secs_f64());
                last = Some(d);
            }
            times.sort_by(f64::total_cmp);
            let d = last.expect("ran");
            println!(
                "{:>8} {:>11} {:>10.1} {:>8} {:>9}",
                n,
                preemption,
                times[2] * 1e3,
                d.start.len(),
                d.preempt.len()
            );
        }
    }
}
