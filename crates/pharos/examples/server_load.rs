//! Load on the control plane: concurrent job submissions, the scheduler's decision time
//! with many queued jobs, and job start latency on an idle server.
//!
//! `cargo build --release -p pharos && cargo run --release -p pharos --example server_load`
//! (options: `--clients 50 --jobs 1000 --queued 10000 --starts 10`). Starts its own
//! servers (the `pharos` binary next to this example's directory, or `PHAROS_EXE`) on
//! temporary data directories.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-admin-token-0123456789";

struct Server {
    child: Child,
    url: String,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Learners outlive their server by design: end them (each leads its process
        // group, named by its supervisor's pid file), then their supervisors.
        let pids = std::fs::read_dir(self.data.join("jobs"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|job| {
                std::fs::read_dir(job.path().join("state"))
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .flat_map(|attempt| {
                std::fs::read_dir(attempt.path())
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .filter_map(|l| std::fs::read_to_string(l.path().join("pid")).ok())
            .filter_map(|t| t.trim().parse::<i32>().ok())
            .filter(|p| *p > 1);
        for pid in pids {
            // SAFETY: kill(2) of a learner's process group this example started.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = Command::new("pkill")
            .args(["-9", "-f"])
            .arg(self.data.to_string_lossy().as_ref())
            .status();
        // Checked: no process left working in the data directory.
        std::thread::sleep(Duration::from_millis(300));
        LEFT_BEHIND.fetch_add(
            processes_in(&self.data),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// Processes left behind by the servers this example started.
static LEFT_BEHIND: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Processes whose working directory is under `dir` (learners work in their job's).
fn processes_in(dir: &Path) -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|p| {
            p.file_name().to_string_lossy().parse::<u32>().is_ok()
                && std::fs::read_link(p.path().join("cwd")).is_ok_and(|c| c.starts_with(dir))
        })
        .count()
}

/// The server under test: `PHAROS_EXE`, else the `pharos` built with this example.
fn pharos_exe() -> PathBuf {
    if let Some(exe) = std::env::var_os("PHAROS_EXE") {
        return PathBuf::from(exe);
    }
    let me = std::env::current_exe().expect("current exe");
    // target/<profile>/examples/server_load -> target/<profile>/pharos
    me.parent()
        .and_then(Path::parent)
        .map(|d| d.join("pharos"))
        .expect("pharos next to the examples directory")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn start(extra: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("config.yaml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata_dir: {}\n{extra}\n",
            data.display()
        ),
    )
    .unwrap();
    let child = Command::new(pharos_exe())
        .args(["server", "--config"])
        .arg(&config)
        .env("PHAROS_ADMIN_TOKEN", TOKEN)
        .env("PHAROS_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("starting pharos server (build it with cargo build --release -p pharos)");
    let url = format!("http://127.0.0.1:{port}");
    let a = agent();
    let t0 = Instant::now();
    while a.get(format!("{url}/healthz")).call().is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server {
        child,
        url,
        data,
        _dir: dir,
    }
}

fn manifest(name: &str, cpus: f64, command: &str) -> String {
    format!(
        "name: {name}\nlearners: 1\ncpus: {cpus}\nframework:\n  name: custom\n  command: '{command}'\n"
    )
}

fn submit(a: &ureq::Agent, url: &str, body: &str, key: &str) -> (u16, serde_json::Value) {
    let resp = a
        .post(format!("{url}/v1/models"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Idempotency-Key", key)
        .content_type("application/yaml")
        .send(body.as_bytes())
        .unwrap();
    let status = resp.status().as_u16();
    let v = serde_json::from_str(&resp.into_body().read_to_string().unwrap()).unwrap();
    (status, v)
}

fn get(a: &ureq::Agent, url: &str) -> String {
    a.get(url)
        .header("Authorization", format!("Bearer {TOKEN}"))
        .call()
        .unwrap()
        .into_body()
        .with_config()
        .limit(1 << 30)
        .read_to_string()
        .unwrap()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

/// `total` submissions from `clients` threads; returns (wall seconds, latencies ms).
fn burst(url: &str, clients: usize, total: usize, prefix: &str) -> (f64, Vec<f64>) {
    let url = Arc::new(url.to_string());
    let t0 = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let url = url.clone();
            let prefix = prefix.to_string();
            std::thread::spawn(move || {
                let a = agent();
                let mut lat = Vec::new();
                let mut i = c;
                while i < total {
                    let body = manifest(&format!("{prefix}-{i}"), 1.0, "true");
                    let t = Instant::now();
                    let (status, v) = submit(&a, &url, &body, &format!("{prefix}-{i}"));
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                    assert_eq!(status, 201, "{v}");
                    i += clients;
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<f64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    lat.sort_by(f64::total_cmp);
    (t0.elapsed().as_secs_f64(), lat)
}

fn main() {
    let mut clients = 50;
    let mut jobs = 1000;
    let mut queued = 10_000;
    let mut starts = 10;
    let args: Vec<String> = std::env::args().skip(1).collect();
    for w in args.chunks(2) {
        let v: usize = w.get(1).and_then(|v| v.parse().ok()).expect("a number");
        match w[0].as_str() {
            "--clients" => clients = v,
            "--jobs" => jobs = v,
            "--queued" => queued = v,
            "--starts" => starts = v,
            other => panic!("unknown option {other}"),
        }
    }

    // 1. Submissions: one CPU, held by a long job, so everything submitted queues.
    let s = start("capacity: {cpus: 1, memory: 8GiB}");
    let a = agent();
    let (st, _) = submit(
        &a,
        &s.url,
        &manifest("blocker", 1.0, "sleep 3600"),
        "blocker",
    );
    assert_eq!(st, 201);
    std::thread::sleep(Duration::from_millis(500));
    let (wall, lat) = burst(&s.url, clients, jobs, "load");
    // Every page (a server without pages answers all at once, without `next_after`).
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page: serde_json::Value = serde_json::from_str(&get(
            &a,
            &format!("{}/v1/models?limit=1000&after={after}", s.url),
        ))
        .unwrap();
        let page = if page["models"].is_null() {
            // An older server without pages: one list of all.
            serde_json::from_str(&get(&a, &format!("{}/v1/models", s.url))).unwrap()
        } else {
            page
        };
        all.extend(page["models"].as_array().cloned().unwrap_or_default());
        match page["next_after"].as_i64() {
            Some(n) => after = n,
            None => break,
        }
    }
    let models = &all;
    let mut ids: Vec<i64> = models.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    ids.sort();
    ids.dedup();
    let queued_now = models.iter().filter(|m| m["state"] == "QUEUED").count();
    println!(
        "submissions: {jobs} from {clients} concurrent clients in {wall:.2} s = {:.0}/s",
        jobs as f64 / wall
    );
    println!(
        "  API latency ms: p50 {:.1}  p99 {:.1}  max {:.1}",
        pct(&lat, 50.0),
        pct(&lat, 99.0),
        lat[lat.len() - 1]
    );
    println!(
        "  stored jobs {} (distinct ids {}), queued {queued_now}: {}",
        models.len(),
        ids.len(),
        if models.len() == jobs + 1 && ids.len() == jobs + 1 && queued_now == jobs {
            "every submission queued exactly once"
        } else {
            "MISMATCH"
        }
    );
    // A retry with the same idempotency key returns the same job.
    let (st, v) = submit(&a, &s.url, &manifest("load-0", 1.0, "true"), "load-0");
    println!(
        "  a retried submission (same Idempotency-Key): HTTP {st}, created {}",
        v["created"]
    );

    // 2. The controller with many queued jobs: the rest submitted, then another 1000
    // at the same concurrency (their rate against the first 1000's).
    let more = queued.saturating_sub(jobs);
    if more > 0 {
        let (wall, _) = burst(&s.url, clients, more, "more");
        println!(
            "  {more} more submissions in {wall:.1} s = {:.0}/s",
            more as f64 / wall
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    let (wall2, lat2) = burst(&s.url, clients, jobs, "late");
    println!(
        "submissions with {} queued: {jobs} in {wall2:.2} s = {:.0}/s; API latency ms p50 {:.1} p99 {:.1}",
        queued,
        jobs as f64 / wall2,
        pct(&lat2, 50.0),
        pct(&lat2, 99.0)
    );
    std::thread::sleep(Duration::from_secs(3));
    let m = get(&a, &format!("{}/metrics", s.url));
    let decisions = metric(&m, "pharos_scheduler_decisions_total");
    let sum = metric(&m, "pharos_scheduler_decision_seconds_sum");
    let total = queued + jobs;
    println!("controller with {total} queued jobs:");
    println!(
        "  last decision {:.1} ms; last controller pass {:.1} ms; mean decision over the run {:.2} ms ({decisions} decisions); waiting {}",
        metric(&m, "pharos_scheduler_last_decision_seconds") * 1e3,
        metric(&m, "pharos_controller_last_pass_seconds") * 1e3,
        sum / decisions * 1e3,
        metric(&m, "pharos_jobs_waiting")
    );
    println!(
        "  controller pass over its last passes (during the second burst and after): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        metric(&m, "pharos_controller_pass_seconds{quantile=\"0.5\"}") * 1e3,
        metric(&m, "pharos_controller_pass_seconds{quantile=\"0.99\"}") * 1e3,
        metric(&m, "pharos_controller_pass_seconds{quantile=\"1\"}") * 1e3
    );
    // `pharos train list`: its first page, and a page deep in the list.
    for (what, q) in [
        ("first page", "limit=100".to_string()),
        (
            "a page 90% down the list",
            format!("limit=100&after={}", total * 9 / 10),
        ),
        ("queued, first page", "limit=100&state=QUEUED".to_string()),
    ] {
        let mut times = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let page = get(&a, &format!("{}/v1/models?{q}", s.url));
            times.push(t.elapsed().as_secs_f64() * 1e3);
            assert!(page.contains("\"models\""));
        }
        times.sort_by(f64::total_cmp);
        println!(
            "  GET /v1/models ({what}): median {:.1} ms, max {:.1} ms",
            pct(&times, 50.0),
            times[times.len() - 1]
        );
    }
    // The CLI: `pharos train list --limit 100` (one page), and `--state QUEUED`.
    for args in [
        vec!["train", "list", "--limit", "100"],
        vec!["train", "list", "--limit", "100", "--state", "QUEUED"],
    ] {
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let out = Command::new(pharos_exe())
                .args(&args)
                .env("PHAROS_URL", &s.url)
                .env("PHAROS_TOKEN", TOKEN)
                .output()
                .expect("the pharos CLI");
            times.push(t.elapsed().as_secs_f64() * 1e3);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let rows = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("training-"))
                .count();
            assert_eq!(rows, 100);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "  pharos {}: median {:.0} ms (the whole command), max {:.0} ms",
            args.join(" "),
            pct(&times, 50.0),
            times[times.len() - 1]
        );
    }
    println!(
        "  processes working in the server's data directory before it stops: {}",
        processes_in(&s.data)
    );
    drop(s);

    // 3. Job start latency on an idle server: submit -> the learner process running.
    let s = start("tick_ms: 200");
    let mut lat = Vec::new();
    for i in 0..starts {
        // The learner writes where it may (its results; the data directory is the
        // server's, and a sandboxed learner cannot write there).
        let cmd = "date +%s%N > $RESULT_DIR/started".to_string();
        let t_submit = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as f64;
        let (st, v) = submit(
            &a,
            &s.url,
            &manifest(&format!("start-{i}"), 0.5, &cmd),
            &format!("s{i}"),
        );
        assert_eq!(st, 201, "{v}");
        let stamp = s.data.join(format!(
            "jobs/{}/results/started",
            v["id"].as_i64().unwrap()
        ));
        let t0 = Instant::now();
        let started = loop {
            if let Ok(t) = std::fs::read_to_string(&stamp)
                && let Ok(n) = t.trim().parse::<f64>()
            {
                break n;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "job {i} never started"
            );
            std::thread::sleep(Duration::from_millis(2));
        };
        lat.push((started - t_submit) / 1e6);
        std::thread::sleep(Duration::from_millis(300));
    }
    lat.sort_by(f64::total_cmp);
    drop(s);
    println!(
        "processes left behind by the servers and their learners: {}",
        LEFT_BEHIND.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!(
        "job start latency (submit -> learner running, idle server, {starts} jobs): median {:.0} ms, max {:.0} ms",
        pct(&lat, 50.0),
        lat[lat.len() - 1]
    );
}
