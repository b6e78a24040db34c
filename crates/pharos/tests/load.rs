//! `pharos load` against the example replica (`pharos-replica`): arrivals per trace
//! minute as the trace says, every request served and measured; and against nothing.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const PHAROS: &str = env!("CARGO_BIN_EXE_pharos");
const REPLICA: &str = env!("CARGO_BIN_EXE_pharos-replica");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn trace(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("t.csv");
    std::fs::write(&p, "job,minute,requests\nj,0,1200\nj,1,0\nj,2,2400\n").unwrap();
    p
}

fn load(trace: &std::path::Path, url: &str) -> Value {
    let out = Command::new(PHAROS)
        .args(["load", "--trace", trace.to_str().unwrap(), "--url", url])
        .args([
            "--speedup",
            "60",
            "--rate-scale",
            "0.05",
            "--slo-ms",
            "2000",
        ])
        .args(["--timeout-s", "5", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn replays_a_trace_against_the_example_replica() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut replica = Command::new(REPLICA)
        .args([
            "--port",
            &port.to_string(),
            "--service-ms",
            "5",
            "--dist",
            "det",
        ])
        .args(["--concurrency", "4"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/infer");
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(60), "replica not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let v = load(&trace(dir.path()), &url);
    replica.kill().unwrap();
    replica.wait().unwrap();
    let minutes = v["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 3);
    // Poisson arrivals around 60, 0 and 120 requests (sd about 8 and 11).
    let n = |m: usize| minutes[m]["arrivals"].as_u64().unwrap() as f64;
    assert!((n(0) - 60.0).abs() < 30.0, "{}", n(0));
    assert_eq!(n(1), 0.0);
    assert!((n(2) - 120.0).abs() < 45.0, "{}", n(2));
    // Every request served; each took at least the replica's work.
    assert_eq!(v["summary"]["dropped"], 0);
    for m in [0, 2] {
        assert_eq!(minutes[m]["completed"], minutes[m]["arrivals"]);
        let p99 = minutes[m]["p99_s"].as_f64().unwrap();
        assert!(p99 >= 0.004, "minute {m}: p99 {p99}");
    }
    assert_eq!(
        v["summary"]["requests"].as_u64().unwrap() as f64,
        n(0) + n(2)
    );
}

#[test]
fn requests_nobody_answers_are_drops_and_violations() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}/infer", free_port());
    let v = load(&trace(dir.path()), &url);
    let s = &v["summary"];
    assert!(s["requests"].as_u64().unwrap() > 0);
    assert_eq!(s["dropped"], s["requests"]);
    assert_eq!(s["slo_violation_rate"], 1.0);
}

#[test]
fn bad_arguments_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let t = trace(dir.path());
    for (args, needle) in [
        (vec!["--url", "ftp://x/"], "only http://"),
        (
            vec!["--url", "http://127.0.0.1:1/", "--speedup", "0"],
            "--speedup",
        ),
        (
            vec!["--url", "http://127.0.0.1:1/", "--job", "nope"],
            "nope",
        ),
    ] {
        let out = Command::new(PHAROS)
            .args(["load", "--trace", t.to_str().unwrap()])
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
