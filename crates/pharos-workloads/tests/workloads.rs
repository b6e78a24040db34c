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

#[test]
fn the_replica_is_ready_and_serves_requests() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(REPLICA)
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
    let answer = get(port, "/infer").unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
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
