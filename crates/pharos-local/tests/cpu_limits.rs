//! Local replicas held to their vCPUs by the kernel's CPU controller, and resized in
//! place: a replica that spins uses about its quota of CPU, its group's limit follows
//! the service's vCPUs per replica without a restart, and its group goes with it.
//!
//! Needs a writable CPU controller (root): skipped with a message outside CI, required
//! in CI.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pharos_engine::service::{Phase, Report, ServiceEngine, ServiceSpec, Want};
use pharos_local::{CpuLimits, LocalReplicas};

fn limits(dir: &std::path::Path) -> Option<CpuLimits> {
    match CpuLimits::detect(dir) {
        Ok(l) => Some(l),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: no writable CPU controller here ({e})");
            None
        }
        Err(e) => panic!("CI runs as root and must have a CPU controller: {e}"),
    }
}

/// A replica that answers its readiness path and spins one core in the same group.
fn spec(cpus: f64) -> ServiceSpec {
    ServiceSpec::parse(&format!(
        r#"
name: spin
command: [sh, -c, "python3 -m http.server $PORT --bind 127.0.0.1 >/dev/null 2>&1 & while :; do :; done"]
readiness_path: /
cpus: {cpus}
slo: {{ latency_s: 1, percentile: 99 }}
processing_time_s: 0.1
"#
    ))
    .unwrap()
}

fn want(cpus: f64, target: u32) -> Want {
    Want {
        name: "spin".into(),
        spec: spec(cpus),
        target,
        deleting: false,
        capacity_cpus: 8.0,
        in_flight: BTreeMap::new(),
        run_as: None,
    }
}

async fn sync(e: &LocalReplicas, w: &Want) -> Report {
    e.sync(std::slice::from_ref(w)).await.unwrap().remove(0)
}

/// CPU seconds (user and system) process `pid` and its waited-for children used.
fn cpu_s(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // utime, stime are fields 14 and 15 (11 and 12 from field 3).
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f[11] + f[12]) / ticks
}

#[tokio::test]
async fn replicas_are_held_to_their_vcpus_and_resized_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let Some(limits) = limits(dir.path()) else {
        return;
    };
    let e = LocalReplicas::new(dir.path()).with_cpu_limits(limits.clone());
    assert!(e.resizes());
    // One replica at 0.2 vCPU, ready.
    let w = want(0.2, 1);
    let t0 = Instant::now();
    let pid = loop {
        let r = sync(&e, &w).await;
        if let Some(x) = r.replicas.iter().find(|x| x.phase == Phase::Ready) {
            break x.process.as_ref().unwrap().pid;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "not ready: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        limits.holds("spin", 1, pid),
        "the replica is not in its group"
    );
    assert_eq!(limits.get("spin", 1), Some(0.2));
    // It spins, but gets about a fifth of a core: without the limit a whole one.
    let (c0, t) = (cpu_s(pid), Instant::now());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let share = (cpu_s(pid) - c0) / t.elapsed().as_secs_f64();
    assert!(
        share < 0.35,
        "used {share:.2} of a core under a 0.2 vCPU limit"
    );
    // Resized to 0.6 vCPU: the same process, a new limit, an event.
    let r = sync(&e, &want(0.6, 1)).await;
    assert_eq!(r.replicas.len(), 1);
    assert_eq!(r.replicas[0].process.as_ref().unwrap().pid, pid);
    assert_eq!(limits.get("spin", 1), Some(0.6));
    assert!(
        r.events
            .iter()
            .any(|(k, m)| *k == "resized" && m.contains("0.2 -> 0.6")),
        "{:?}",
        r.events
    );
    // Deleted: stopped, and its group removed.
    let mut gone = want(0.6, 0);
    gone.deleting = true;
    let t0 = Instant::now();
    while sync(&e, &gone).await.present {
        assert!(t0.elapsed() < Duration::from_secs(30), "not stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(limits.get("spin", 1), None, "its group is left behind");
    limits.remove_all();
}
