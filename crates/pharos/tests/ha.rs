//! Several servers on one PostgreSQL (when `PHAROS_TEST_POSTGRES_URL` names one;
//! `.ci/run` starts one): one leads, every one answers the API; the leader killed in the
//! middle of a burst of submissions is replaced within its lease, nothing acknowledged
//! is lost or stored twice, and the running learner is adopted, not restarted. A leader
//! stopped past its lease (SIGSTOP) is replaced and, woken, stops (a restart rejoins
//! as a follower).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A fresh database on the test server, or None (skipped) without one.
fn fresh_database(tag: &str) -> Option<String> {
    let Ok(base) = std::env::var("PHAROS_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but PHAROS_TEST_POSTGRES_URL is not set"
        );
        eprintln!("PHAROS_TEST_POSTGRES_URL not set: skipped");
        return None;
    };
    let name = format!(
        "pharos_ha_{tag}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let out = Command::new("psql")
        .arg(&base)
        .args(["-qc", &format!("CREATE DATABASE {name}")])
        .output()
        .expect("psql (PostgreSQL's client) runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let i = base.rfind('/').unwrap();
    Some(format!("{}/{name}", &base[..i]))
}

fn metric(s: &Server, name: &str) -> f64 {
    let Ok(r) = s.agent.get(format!("{}/metrics", s.url)).call() else {
        return f64::NAN;
    };
    let text = r.into_body().read_to_string().unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

fn leads(s: &Server) -> bool {
    metric(s, "pharos_leader") == 1.0
}

fn manifest(name: &str, command: &str) -> String {
    format!(
        "name: {name}\nlearners: 1\ncpus: 1\nframework:\n  name: custom\n  command: '{command}'\n"
    )
}

/// A submission with an idempotency key to `url`: the job's id when acknowledged.
fn submit(agent: &ureq::Agent, url: &str, name: &str) -> Option<i64> {
    let resp = agent
        .post(format!("{url}/v1/models"))
        .header("Authorization", format!("Bearer {ADMIN}"))
        .header("Idempotency-Key", name)
        .content_type("application/yaml")
        .send(manifest(name, "true").as_bytes())
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let v: Value = serde_json::from_str(&resp.into_body().read_to_string().ok()?).ok()?;
    v["id"].as_i64()
}

/// The CLI with `PHAROS_URL` naming several servers.
fn cli(urls: &[&str], args: &[&str], home: &std::path::Path) -> (bool, String) {
    let out = Command::new(PHAROS)
        .args(args)
        .env("PHAROS_URL", urls.join(","))
        .env("PHAROS_TOKEN", ADMIN)
        .env("PHAROS_CONFIG", home.join("client.yaml"))
        .env("XDG_STATE_HOME", home.join("state"))
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Two servers on `db` sharing one data directory, the first leading.
fn pair(db: &str, extra: &str) -> (Server, Server) {
    let cfg = format!("database_url: {db}\nelection: {{lease_s: 2}}\n{extra}");
    let a = Server::start(&cfg);
    wait_until(10, || leads(&a), || a.server_log());
    let b = Server::start_sharing(&cfg, &a.data());
    (a, b)
}

#[test]
fn the_leader_killed_mid_burst_is_replaced_and_nothing_acknowledged_is_lost() {
    let Some(db) = fresh_database("kill") else {
        return;
    };
    // Three CPUs: a service's two replicas hold two, the long job the third, and
    // everything submitted after waits.
    let (mut a, b) = pair(&db, "capacity: {cpus: 3, memory: 8GiB}");
    assert!(!leads(&b), "{}", b.server_log());
    // Services and what only the leader knows: a follower names the leader.
    let (status, v) = b.request("GET", "/v1/services", Some(ADMIN), None);
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["leader"].as_str(), Some(a.url.as_str()), "{v}");
    // The CLI told of both goes to the leader; told only of the follower, it says who
    // leads.
    let home = b.dir.path();
    let (ok, out) = cli(&[&b.url, &a.url], &["get", "services"], home);
    assert!(ok, "{out}");
    let (ok, out) = cli(&[&b.url], &["get", "services"], home);
    assert!(
        !ok && out.contains(&format!("ask the leader at {}", a.url)),
        "{out}"
    );
    let (status, v) = a.apply(&service_spec("web"));
    assert!(status == 200 || status == 201, "{v}");
    let v = a.wait_service("web", 30, "2 ready", |v| v["ready_replicas"] == 2);
    let service = Load::start(v["url"].as_str().unwrap(), 4);
    let long = a.submit(&manifest("long", "sleep 10"));
    a.wait_state(long, "PROCESSING", 30);
    let pid_file = a
        .data()
        .join(format!("jobs/{long}/state/attempt-1/learner-1/pid"));
    wait_until(
        10,
        || pid_file.exists(),
        || {
            let out = Command::new("find")
                .arg(a.data().join("jobs"))
                .output()
                .unwrap();
            format!(
                "{} missing: {}",
                pid_file.display(),
                String::from_utf8_lossy(&out.stdout)
            )
        },
    );
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();

    // 1000 submissions from 50 clients, each to either server, retried on the other
    // (same idempotency key) when one fails.
    let acked: Arc<Mutex<BTreeMap<String, i64>>> = Default::default();
    let urls = [a.url.clone(), b.url.clone()];
    let handles: Vec<_> = (0..50)
        .map(|c| {
            let acked = acked.clone();
            let urls = urls.clone();
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(10)))
                    .build()
                    .into();
                for i in (c..1000).step_by(50) {
                    let name = format!("burst-{i}");
                    for attempt in 0..40 {
                        if let Some(id) = submit(&agent, &urls[(i + attempt) % 2], &name) {
                            acked.lock().unwrap().insert(name.clone(), id);
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            })
        })
        .collect();
    wait_until(60, || acked.lock().unwrap().len() >= 300, || "burst".into());
    let killed = Instant::now();
    a.kill();
    wait_until(10, || leads(&b), || b.server_log());
    let leading_after = killed.elapsed();
    // The new leader decides: a decision counted on it.
    wait_until(
        10,
        || metric(&b, "pharos_scheduler_decisions_total") >= 1.0,
        || b.server_log(),
    );
    let deciding_after = killed.elapsed();
    for h in handles {
        h.join().unwrap();
    }
    // The service served throughout: its router outlived the leader.
    let (ok, failed) = service.finish();
    eprintln!("service under the burst and the kill: {ok} answered, {failed} failed");
    assert!(ok > 100, "{ok} answered");
    assert!(
        (failed as f64) < 0.01 * (ok + failed) as f64,
        "{failed} of {} failed",
        ok + failed
    );
    eprintln!(
        "fail-over: leader after {:.2} s, first decision after {:.2} s",
        leading_after.as_secs_f64(),
        deciding_after.as_secs_f64()
    );
    assert!(
        deciding_after < Duration::from_secs(5),
        "the new leader decided {deciding_after:?} after the kill"
    );

    // Every acknowledged submission stored exactly once.
    let acked = acked.lock().unwrap().clone();
    assert_eq!(
        acked.len(),
        1000,
        "every submission acknowledged in the end"
    );
    let mut stored: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut after = 0;
    loop {
        let (status, page) = b.request(
            "GET",
            &format!("/v1/models?limit=1000&after={after}"),
            Some(ADMIN),
            None,
        );
        assert_eq!(status, 200, "{page}");
        for m in page["models"].as_array().unwrap() {
            stored
                .entry(m["name"].as_str().unwrap().to_string())
                .or_default()
                .push(m["id"].as_i64().unwrap());
        }
        match page["next_after"].as_i64() {
            Some(n) => after = n,
            None => break,
        }
    }
    for (name, id) in &acked {
        assert_eq!(stored.get(name), Some(&vec![*id]), "{name}");
    }
    assert_eq!(
        stored.len(),
        1001,
        "the burst and the long job, nothing else"
    );

    // The CLI told of both servers carries on with the one left.
    let manifest_file = home.join("late.yaml");
    std::fs::write(&manifest_file, manifest("late", "true")).unwrap();
    let (ok, out) = cli(
        &[&a.url, &b.url],
        &["train", "submit", manifest_file.to_str().unwrap()],
        home,
    );
    assert!(ok, "{out}");
    let (ok, out) = cli(&[&a.url, &b.url], &["get", "services"], home);
    assert!(ok, "{out}");
    // A list a page at a time.
    let (ok, out) = cli(&[&a.url, &b.url], &["train", "list", "--limit", "3"], home);
    assert!(ok, "{out}");
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("training-")).collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(out.contains("(more: --after training-3)"), "{out}");
    let (ok, out) = cli(
        &[&b.url],
        &["train", "list", "--after", "training-3", "--limit", "2"],
        home,
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("training-4 ") && out.contains("training-5 "),
        "{out}"
    );
    assert!(
        !out.contains("training-3 ") && !out.contains("training-6 "),
        "{out}"
    );

    // The running learner was adopted, not restarted: the same process ran to its end.
    let j = b.wait_state(long, "COMPLETED", 30);
    assert_eq!(j["attempt"], 1, "{j}");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        pid,
        "one learner process"
    );
    // And the queue moves on under the new leader.
    let first = acked["burst-0"];
    b.wait_state(first, "COMPLETED", 30);
    let ids: BTreeSet<i64> = acked.values().copied().collect();
    assert_eq!(ids.len(), 1000);
}

#[test]
fn a_leader_stopped_past_its_lease_is_replaced_and_stops_when_woken() {
    let Some(db) = fresh_database("stop") else {
        return;
    };
    let (mut a, b) = pair(&db, "");
    let pid = a.child.as_ref().unwrap().id() as i32;
    // SAFETY: stopping and resuming the server process this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    wait_until(10, || leads(&b), || b.server_log());
    // The new leader runs a job submitted to it while the old one sleeps.
    let id = b.submit(&manifest("while-stopped", "true"));
    b.wait_state(id, "COMPLETED", 30);
    unsafe { libc::kill(pid, libc::SIGCONT) };
    // Woken, it learns its term is over and stops (a restart rejoins as a follower).
    let log = a.dir.path().join("server.log");
    let mut child = a.child.take().unwrap();
    wait_until(
        10,
        || child.try_wait().unwrap().is_some(),
        || std::fs::read_to_string(&log).unwrap_or_default(),
    );
    assert!(
        a.server_log().contains("this server no longer leads"),
        "{}",
        a.server_log()
    );
    assert!(leads(&b));
    // Nothing of the old leader's landed: the job ran once, its history is the new
    // leader's (one placement, one completion).
    let j = b.job(id);
    assert_eq!(j["attempt"], 1, "{j}");
    let history: Vec<&str> = j["status_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        history.iter().filter(|s| **s == "COMPLETED").count(),
        1,
        "{history:?}"
    );
    assert_eq!(
        history.iter().filter(|s| **s == "PENDING").count(),
        1,
        "{history:?}"
    );
    // Restarted, it serves as a follower; a job submitted to it runs under the leader.
    a.spawn();
    assert!(!leads(&a));
    let next = a.submit(&manifest("after", "true"));
    b.wait_state(next, "COMPLETED", 30);
}

/// A service of two replicas (one vCPU each) of the example replica.
fn service_spec(name: &str) -> String {
    format!(
        "name: {name}\ncommand: ['{REPLICA}', --port, $PORT, --service-ms, '10', --dist, det]\n\
         cpus: 1\nslo: {{ latency_s: 0.5 }}\nprocessing_time_s: 0.01\nmin_replicas: 2\n\
         max_replicas: 2\nmax_queue: 1000\n"
    )
}

#[test]
fn a_service_keeps_serving_through_the_leaders_death_and_is_adopted() {
    let Some(db) = fresh_database("svc") else {
        return;
    };
    let (mut a, b) = pair(&db, "capacity: {cpus: 4, memory: 8GiB}");
    let (status, v) = a.apply(&service_spec("web"));
    assert!(status == 200 || status == 201, "{v}");
    let v = a.wait_service("web", 30, "2 ready", |v| v["ready_replicas"] == 2);
    let url = v["url"].as_str().unwrap().to_string();
    let replicas = pids(&v);
    // The service's router is a process of its own.
    let router = router_pid(&a.data(), "web").expect("a router process");

    let load = Load::start(&url, 4);
    std::thread::sleep(Duration::from_millis(1500));
    let before = load.ok.load(std::sync::atomic::Ordering::Relaxed);
    a.kill();
    // While no server leads, the router serves with its last replicas.
    std::thread::sleep(Duration::from_millis(1000));
    let while_leaderless = load.ok.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        while_leaderless > before,
        "served {before} before the kill, {while_leaderless} a second after"
    );
    wait_until(10, || leads(&b), || b.server_log());
    // The new leader adopts the router and the replicas: the same processes.
    let v = b.wait_service("web", 30, "adopted", |v| v["ready_replicas"] == 2);
    assert_eq!(pids(&v), replicas, "{v}");
    assert_eq!(router_pid(&a.data(), "web"), Some(router));
    std::thread::sleep(Duration::from_millis(1500));
    let (ok, failed) = load.finish();
    eprintln!("through the fail-over: {ok} answered, {failed} failed");
    assert!(ok > 200, "{ok} answered");
    assert!(
        (failed as f64) < 0.01 * (ok + failed) as f64,
        "{failed} of {} failed",
        ok + failed
    );
    // The new leader's view of the router (mirrored every 100 ms) counts all it
    // served, before and after the fail-over.
    b.wait_service("web", 5, "every request counted", |v| {
        v["counters"]["completed"].as_u64().unwrap_or(0) >= ok
    });
    // Deleted: the router process goes with it.
    let (status, v) = b.request("DELETE", "/v1/services/web", Some(ADMIN), None);
    assert!(status == 200 || status == 202, "{v}");
    wait_until(
        10,
        || router_pid(&a.data(), "web").is_none(),
        || "router still running".into(),
    );
}
