//! `pharos load` against the example replica (`pharos-replica`): arrivals per trace
//! minute as the trace says, every request served and measured; and against nothing.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const PHAROS: &str = env!("CARGO_BIN_EXE_pharos");

mod common;
use common::{REPLICA, free_port, workloads_built};

fn trace(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("t.csv");
    std::fs::write(&p, "job,minute,requests\nj,0,1200\nj,1,0\nj,2,2400\n").unwrap();
    p
}

fn load(trace: &std::path::Path, url: &str) -> Value {
    load_with(trace, url, &[]).0
}

/// The JSON report and the progress lines.
fn load_with(trace: &std::path::Path, url: &str, extra: &[&str]) -> (Value, String) {
    let out = Command::new(PHAROS)
        .args(["load", "--trace", trace.to_str().unwrap(), "--url", url])
        .args(extra)
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
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    (serde_json::from_slice(&out.stdout).unwrap(), err)
}

#[test]
fn replays_a_trace_against_the_example_replica() {
    workloads_built();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let replica = Kill(
        Command::new(REPLICA)
            .args([
                "--port",
                &port.to_string(),
                "--service-ms",
                "5",
                "--dist",
                "det",
            ])
            .args(["--concurrency", "4"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}/infer");
    wait_http(port, "/healthz");
    let (v, progress) = load_with(&trace(dir.path()), &url, &[]);
    // A line as each replayed minute ends.
    assert!(
        progress.contains("minute 1/3: ") && progress.contains("minute 3/3: "),
        "{progress}"
    );
    assert!(
        progress.contains("SLO p99 <= 2000 ms (--slo-ms)"),
        "{progress}"
    );
    // Trace minutes FROM..TO.
    let (part, _) = load_with(&trace(dir.path()), &url, &["--minutes", "1..3", "--quiet"]);
    assert_eq!(part["minutes"].as_array().unwrap().len(), 2);
    assert_eq!(part["minutes"][0]["arrivals"], 0);
    drop(replica);
    let minutes = v["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 3);
    // Poisson arrivals around 60, 0 and 120 requests (sd about 8 and 11).
    let n = |m: usize| minutes[m]["arrivals"].as_u64().unwrap() as f64;
    assert!((n(0) - 60.0).abs() < 30.0, "{}", n(0));
    assert_eq!(n(1), 0.0);
    assert!((n(2) - 120.0).abs() < 45.0, "{}", n(2));
    // Every request served; each took at least the replica's work.
    assert_eq!(v["summary"]["dropped"], 0, "{}", v["summary"]);
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
    assert_eq!(s["dropped_by"]["connection"], s["requests"]);
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
            vec![
                "--url",
                "http://127.0.0.1:1/",
                "--job",
                "nope",
                "--slo-ms",
                "100",
            ],
            "nope",
        ),
        (
            vec!["--url", "http://127.0.0.1:1/", "--minutes", "3..1"],
            "FROM must be below TO",
        ),
        // No SLO given, and no server to ask which service that is.
        (
            vec![
                "--url",
                "http://127.0.0.1:1/",
                "--server",
                "http://127.0.0.1:1",
            ],
            "no --slo-ms given",
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

/// Waits until an HTTP server answers `GET path` on `port`. A bare TCP connect is not enough: a
/// connect to a port in the ephemeral range that nobody listens on yet can connect the
/// socket to itself, and the test would then start before the server does.
fn wait_http(port: u16, path: &str) {
    let answers = || -> Option<()> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut head = [0u8; 9];
        s.read_exact(&mut head).ok()?;
        (&head == b"HTTP/1.1 ").then_some(())
    };
    let t0 = Instant::now();
    while answers().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "port {port} not ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A replica taking exactly 400 ms a request.
fn replica(port: u16) -> Kill {
    workloads_built();
    Kill(
        Command::new(REPLICA)
            .args([
                "--port",
                &port.to_string(),
                "--service-ms",
                "400",
                "--dist",
                "det",
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn the_router_caps_each_replica_queues_and_drops_the_rest() {
    let (p1, p2, pr, pc) = (free_port(), free_port(), free_port(), free_port());
    let _r1 = replica(p1);
    let _r2 = replica(p2);
    let _router = Kill(
        Command::new(PHAROS)
            .args(["router", "--listen", &format!("127.0.0.1:{pr}")])
            .args(["--replica", &format!("http://127.0.0.1:{p1}")])
            .args(["--replica", &format!("http://127.0.0.1:{p2}")])
            .args(["--concurrency", "1", "--queue", "2"])
            .args(["--control", &format!("127.0.0.1:{pc}")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The router binds both its ports before it serves either, so an answer on the
    // control port means the traffic port is listening (a probe there would count).
    for (p, path) in [(p1, "/healthz"), (p2, "/healthz"), (pc, "/router/stats")] {
        wait_http(p, path);
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    // 8 requests at once: 2 in service, 2 queued, 4 dropped.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let agent = agent.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                agent
                    .get(format!("http://127.0.0.1:{pr}/infer"))
                    .call()
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut codes: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    codes.sort();
    assert_eq!(codes, vec![200, 200, 200, 200, 503, 503, 503, 503]);
    let stats = || -> Value {
        serde_json::from_str(
            &agent
                .get(format!("http://127.0.0.1:{pc}/router/stats"))
                .call()
                .unwrap()
                .into_body()
                .read_to_string()
                .unwrap(),
        )
        .unwrap()
    };
    let stats_now = stats();
    assert_eq!(stats_now["counters"]["arrivals"], 8);
    assert_eq!(stats_now["counters"]["dropped"], 4);
    assert_eq!(stats_now["counters"]["completed"], 4);
    assert_eq!(stats_now["in_flight"], 0);
    // Replace the replicas: the removed one drains, the list is the new one.
    let resp = agent
        .put(format!("http://127.0.0.1:{pc}/router/replicas"))
        .content_type("application/json")
        .send(format!("[\"http://127.0.0.1:{p2}\"]").as_bytes())
        .unwrap();
    let replaced: Value =
        serde_json::from_str(&resp.into_body().read_to_string().unwrap()).unwrap();
    assert_eq!(
        replaced["replicas"],
        serde_json::json!([format!("http://127.0.0.1:{p2}")])
    );
    let code = agent
        .get(format!("http://127.0.0.1:{pr}/infer"))
        .call()
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(code, 200);
    // Admission: with accept rate 0 every request is refused; back at 1, served.
    let put_accept = |rate: f64| {
        agent
            .put(format!("http://127.0.0.1:{pc}/router/accept"))
            .content_type("application/json")
            .send(format!("{{\"accept_rate\": {rate}}}").as_bytes())
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(put_accept(0.0), 200);
    let get = || {
        agent
            .get(format!("http://127.0.0.1:{pr}/infer"))
            .call()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!((get(), get()), (503, 503));
    assert_eq!(put_accept(1.0), 200);
    assert_eq!(get(), 200);
    let stats_now = stats();
    assert_eq!(stats_now["counters"]["rejected"], 2);
    assert_eq!(stats_now["counters"]["dropped"], 6);
    // The traffic port has no control paths: this is a request to the replica (404
    // there), and the replica set is unchanged.
    let code = agent
        .put(format!("http://127.0.0.1:{pr}/router/replicas"))
        .content_type("application/json")
        .send("[\"http://127.0.0.1:9\"]".as_bytes())
        .unwrap()
        .status()
        .as_u16();
    assert_ne!(code, 200);
    assert_eq!(
        stats()["replicas"],
        serde_json::json!([format!("http://127.0.0.1:{p2}")])
    );
}
