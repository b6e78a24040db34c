//! Allocator speed and quality: time to a decision and the objective reached for 10 to
//! 10,000 jobs (capacity 3.6 vCPUs per job), against the exact dynamic program where it
//! finishes in reasonable time.
//!
//!     cargo run --release -p pharos-policy --example alloc_bench

use std::time::Instant;

use pharos_policy::alloc::{self, AllocJob, Objective, Problem, UtilityKind};
use pharos_queueing::LatencyModel;

/// Jobs like the Faro trace's: 1-27 requests/s (up to 1,600 a minute), ResNet34 told
/// as 180 ms, p99 SLO 720 ms, a 7-step window with some drift. Deterministic.
fn problem(n: usize, objective: Objective) -> Problem {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15 ^ n as u64;
    let mut rnd = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let jobs = (0..n)
        .map(|_| {
            let base = 1.0 + rnd() * 26.0;
            AllocJob {
                weight: 1.0,
                cpus_per_replica: 1.0,
                min_replicas: 1,
                max_replicas: 20,
                slo_s: 0.72,
                percentile: 99.0,
                processing_s: 0.18,
                rates_rps: (0..7).map(|_| base * (0.8 + 0.4 * rnd())).collect(),
                current: 3,
                cold_steps: 1,
                removal_cost: 0.0,
                replica_cost: 0.0,
            }
        })
        .collect();
    Problem {
        capacity_cpus: (3.6 * n as f64).floor(),
        jobs,
        objective,
        utility: UtilityKind::Relaxed { alpha: 1.0 },
        model: LatencyModel::MdcHalfMmc,
    }
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (T, f64) {
    let mut times = Vec::new();
    let mut out = None;
    for _ in 0..runs {
        let t = Instant::now();
        out = Some(f());
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    (out.expect("ran"), times[times.len() / 2])
}

fn main() {
    println!(
        "{:<10} {:>7} {:>10} {:>14} {:>12} {:>14} {:>12} {:>10}",
        "objective", "jobs", "solver", "decision ms", "objective", "reference", "ref ms", "gap"
    );
    for objective in [Objective::Sum, Objective::FairSum] {
        for n in [10usize, 100, 1_000, 10_000] {
            if objective == Objective::FairSum && n > 1_000 {
                continue;
            }
            let p = problem(n, objective);
            let runs = if n >= 10_000 { 3 } else { 7 };
            let (a, ms) = time(runs, || alloc::solve(&p).expect("feasible"));
            let (g, gms) = time(runs, || alloc::solve_greedy(&p).expect("feasible"));
            // The exact DP as the reference for the separable objective, up to 1,000 jobs.
            let reference = (objective == Objective::Sum && n <= 1_000).then(|| {
                time(1, || {
                    alloc::solve_exact_dp(&p)
                        .expect("separable")
                        .expect("feasible")
                })
            });
            let used: u32 = a.replicas.iter().sum();
            assert!(used as f64 <= p.capacity_cpus, "capacity exceeded");
            let show = |name: &str, a: &alloc::Allocation, ms: f64| {
                let (r, rms, gap) = match &reference {
                    Some((r, rms)) => (
                        format!("{:.4}", r.objective),
                        format!("{:.1}", rms * 1e3),
                        format!("{:+.2e}", a.objective - r.objective),
                    ),
                    None => ("-".into(), "-".into(), "-".into()),
                };
                println!(
                    "{:<10} {:>7} {:>10} {:>14.3} {:>12.4} {:>14} {:>12} {:>10}",
                    format!("{objective:?}"),
                    n,
                    name,
                    ms * 1e3,
                    a.objective,
                    r,
                    rms,
                    gap
                );
            };
            show("solve", &a, ms);
            if objective == Objective::Sum {
                show("greedy", &g, gms);
            }
        }
    }
}
