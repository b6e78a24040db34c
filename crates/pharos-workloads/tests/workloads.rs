//! The example workloads run as pharos runs them: the replica answers its readiness
//! path and does work per request; the learner trains alone, checkpoints and writes
//! its model, and refuses a bad environment with the input exit code.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REPLICA: &str = env!("CARGO_BIN_EXE_pharos-replica");
const SGD: &str = env!("CARGO_BIN_EXE_pharos-sgd");

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// Starts a replica with these arguments on a free port and waits until it answers.
fn start_replica(args: &[&str]) -> (std::process::Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(REPLICA)
        .args(args)
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let health = loop {
        // Only an HTTP answer counts: a connect to a port nobody listens on yet can
        // connect the socket to itself and read back its own request.
        if let Some(h) = get(port, "/healthz").filter(|h| h.starts_with("HTTP/1.")) {
            break h;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the replica never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    (child, port)
}

#[test]
fn the_replica_is_ready_and_serves_requests() {
    let (mut child, port) = start_replica(&[]);
    let answer = get(port, "/infer").unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let _ = child.kill();
    let _ = child.wait();
}

/// The process's CPU time (user + system), seconds, from /proc (clock ticks of 10 ms).
fn process_cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// A request costs `--service-ms` of CPU, its HTTP handling included: once the replica
/// has paced itself, 300 requests of 2 ms cost 0.6 s of the process's CPU, whether
/// calibration alone over- or under-shot (2.6 ms a request on one machine, 1.6 on another).
#[test]
fn a_request_costs_its_service_time_in_cpu_http_included() {
    let (mut child, port) = start_replica(&["--service-ms", "2", "--dist", "det"]);
    for _ in 0..200 {
        assert!(get(port, "/infer").unwrap().starts_with("HTTP/1.1 200"));
    }
    let c0 = process_cpu_s(child.id());
    let mut last = String::new();
    for _ in 0..300 {
        last = get(port, "/infer").unwrap();
    }
    let per_request_ms = (process_cpu_s(child.id()) - c0) / 300.0 * 1e3;
    let body = &last[last.find("\r\n\r\n").unwrap() + 4..];
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    // The pace is whatever makes the process's CPU match: below 1 where HTTP handling
    // costs more than calibration missed, above 1 where calibration ran slow (a busy
    // machine), always inside its clamp.
    let pace = v["pace"].as_f64().unwrap();
    assert!((0.01..=4.0).contains(&pace), "{body}");
    assert!(
        (1.6..=2.4).contains(&per_request_ms),
        "{per_request_ms:.2} ms of CPU per 2 ms request ({body})"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_learner_trains_checkpoints_and_refuses_a_bad_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(SGD)
        .args(["--steps", "20"])
        .env_clear()
        .env("CHECKPOINT_DIR", dir.path())
        .env("RESULT_DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("model.json").is_file());
    assert!(dir.path().join("checkpoint.json").is_file());
    // Two learners without a rendezvous address: an input error, said.
    let bad = Command::new(SGD)
        .args(["--steps", "20"])
        .env_clear()
        .env("WORLD_SIZE", "2")
        .env("RANK", "0")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("MASTER_ADDR"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
