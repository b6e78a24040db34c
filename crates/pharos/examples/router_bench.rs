//! The router's own overhead: the same replica called directly and through `pharos
//! router`, in the same run - added p50/p99 latency per request (one client, requests
//! one after another) and the most requests per second (many clients at once).
//!
//! `cargo build --release -p pharos && cargo run --release -p pharos --example router_bench`
//! (options: `--requests 2000 --clients 32 --seconds 5`; `--baseline PATH` also measures
//! the router of another `pharos` executable, an older build, in the same run).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn bin(name: &str) -> PathBuf {
    let me = std::env::current_exe().expect("current exe");
    me.parent()
        .and_then(Path::parent)
        .map(|d| d.join(name))
        .expect("target directory")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait(port: u16) {
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "port {port} not ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn pct(v: &[f64], p: f64) -> f64 {
    let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[i.clamp(1, v.len()) - 1]
}

/// Latencies (ms) of `n` requests one after another.
fn sequential(url: &str, n: usize) -> Vec<f64> {
    let a = agent();
    for _ in 0..50 {
        a.get(url)
            .call()
            .unwrap()
            .into_body()
            .read_to_vec()
            .unwrap();
    }
    let mut lat: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let r = a.get(url).call().unwrap();
            assert!(r.status().is_success());
            r.into_body().read_to_vec().unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    lat
}

/// Requests per second from `clients` closed-loop clients over `secs` seconds.
fn throughput(url: &str, clients: usize, secs: f64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, done, url) = (stop.clone(), done.clone(), url.to_string());
            std::thread::spawn(move || {
                let a = agent();
                while !stop.load(Ordering::Relaxed) {
                    let r = a.get(&url).call().unwrap();
                    if r.status().is_success() {
                        r.into_body().read_to_vec().unwrap();
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    for h in handles {
        h.join().unwrap();
    }
    n as f64 / elapsed
}

fn main() {
    let mut requests = 2000;
    let mut clients = 32;
    let mut seconds = 5.0;
    let mut baseline: Option<PathBuf> = None;
    let args: Vec<String> = std::env::args().skip(1).collect();
    for w in args.chunks(2) {
        let v = w.get(1).expect("a value");
        match w[0].as_str() {
            "--requests" => requests = v.parse().expect("a number"),
            "--clients" => clients = v.parse().expect("a number"),
            "--seconds" => seconds = v.parse().expect("a number"),
            "--baseline" => baseline = Some(PathBuf::from(v)),
            other => panic!("unknown option {other}"),
        }
    }
    let (rp, pp) = (free_port(), free_port());
    // A replica that does almost no work, so that what is measured is HTTP and routing.
    let _replica = Kill(
        Command::new(bin("pharos-replica"))
            .args([
                "--port",
                &rp.to_string(),
                "--service-ms",
                "0.05",
                "--dist",
                "det",
            ])
            .args(["--concurrency", "256"])
            .stderr(Stdio::null())
            .spawn()
            .expect("pharos-replica (cargo build --release -p pharos)"),
    );
    let router = |exe: &Path, port: u16, control: Option<u16>| {
        let mut c = Command::new(exe);
        c.args(["router", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--replica", &format!("http://127.0.0.1:{rp}")])
            .args(["--concurrency", "256", "--queue", "4096"]);
        if let Some(cp) = control {
            c.args(["--control", &format!("127.0.0.1:{cp}")]);
        }
        Kill(
            c.stderr(Stdio::null())
                .spawn()
                .expect("pharos (cargo build --release -p pharos)"),
        )
    };
    let _router = router(&bin("pharos"), pp, Some(free_port()));
    let bp = free_port();
    let _base = baseline.as_ref().map(|b| router(b, bp, None));
    wait(rp);
    wait(pp);
    if baseline.is_some() {
        wait(bp);
    }
    let direct_url = format!("http://127.0.0.1:{rp}/infer");
    let mut routers = vec![("via router", format!("http://127.0.0.1:{pp}/infer"))];
    if baseline.is_some() {
        routers.push(("via baseline", format!("http://127.0.0.1:{bp}/infer")));
    }
    let d = sequential(&direct_url, requests);
    println!("one client, {requests} requests one after another (ms):");
    println!(
        "  direct        p50 {:.3}  p99 {:.3}",
        pct(&d, 50.0),
        pct(&d, 99.0)
    );
    for (label, url) in &routers {
        let r = sequential(url, requests);
        println!(
            "  {label:<13} p50 {:.3}  p99 {:.3}  (added p50 {:.3}, p99 {:.3})",
            pct(&r, 50.0),
            pct(&r, 99.0),
            pct(&r, 50.0) - pct(&d, 50.0),
            pct(&r, 99.0) - pct(&d, 99.0)
        );
    }
    let dt = throughput(&direct_url, clients, seconds);
    println!("{clients} clients at once for {seconds} s (requests/s):");
    println!("  direct {dt:.0}");
    for (label, url) in &routers {
        let rt = throughput(url, clients, seconds);
        println!("  {label} {rt:.0} ({:.2} of direct)", rt / dt);
    }
}
