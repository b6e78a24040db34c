//! Inference services end to end: a real `pharos server`, replicas of the example
//! replica (`pharos-replica`) as local processes behind the service's router, and the
//! faults the issue names - a replica killed under load, a replica that never becomes
//! ready, the server killed and restarted under load.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{ADMIN, Load, REPLICA, Server, pids};

fn spec(name: &str, replicas: u32, extra: &str) -> String {
    format!(
        "name: {name}\ncommand: ['{REPLICA}', --port, $PORT, --service-ms, '20', --dist, det]\n\
         slo: {{ latency_s: 0.5 }}\nprocessing_time_s: 0.02\nmin_replicas: {replicas}\n\
         max_replicas: {replicas}\nmax_queue: 1000\n{extra}\n"
    )
}

/// Running and not a zombie.
fn running(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..i + 3].to_string()))
        .is_some_and(|st| st != "Z" && st != "X")
}

#[test]
fn a_replica_killed_under_load_is_replaced_and_its_requests_counted_as_failed() {
    let s = Server::start("capacity: { cpus: 4 }\nautoscaler: { policy: hpa }");
    // Through the CLI.
    let file = s.dir.path().join("svc.yaml");
    std::fs::write(&file, spec("svc", 2, "")).unwrap();
    let (ok, out, err) = s.cli(&["apply", "-f", file.to_str().unwrap()], ADMIN);
    assert!(ok, "{out}{err}");
    assert!(out.contains("service svc applied"), "{out}");
    let v = s.wait_service("svc", 30, "2 ready", |v| v["ready_replicas"] == 2);
    let url = v["url"].as_str().unwrap().to_string();
    let (ok, out, _) = s.cli(&["get", "services"], ADMIN);
    assert!(ok && out.contains("svc") && out.contains(&url), "{out}");
    // Cold starts are measured.
    assert_eq!(v["cold_start_s"]["count"], 2, "{v}");
    assert!(v["cold_start_s"]["mean"].as_f64().unwrap() > 0.0, "{v}");

    let load = Load::start(&url, 4);
    std::thread::sleep(Duration::from_millis(1500));
    let victim = s.service("svc")["replicas"][0]["pid"].as_i64().unwrap();
    // SAFETY: kill -9 of a replica this test's server started.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    // Replaced: two ready replicas again, neither the victim.
    s.wait_service("svc", 30, "replaced", |v| {
        v["ready_replicas"] == 2 && !pids(v).contains(&victim)
    });
    std::thread::sleep(Duration::from_millis(1000));
    let (answered, errors) = load.finish();
    let v = s.wait_service("svc", 10, "idle", |v| {
        v["in_flight"] == 0 && v["queued"] == 0
    });
    let c = &v["counters"];
    let n = |k: &str| c[k].as_u64().unwrap();
    // The victim's request in flight failed, and was counted.
    assert!(n("failed") >= 1, "{v}");
    // Every arrival is accounted for, and matches what the clients saw.
    common::assert_counted(&v, answered, errors);
    assert!(answered > 50, "{answered}");
    let ev = s.service_events("svc");
    assert!(
        ev.contains("exited") && ev.contains(&format!("pid {victim}")),
        "{ev}"
    );
    // `pharos get service` shows it.
    let (ok, out, _) = s.cli(&["get", "service", "svc"], ADMIN);
    assert!(
        ok && out.contains("exited") && out.contains("cold start"),
        "{out}"
    );
}

#[test]
fn a_replica_that_never_becomes_ready_is_abandoned_with_a_clear_event() {
    let s = Server::start("capacity: { cpus: 4 }");
    let never = "name: never\ncommand: [sleep, '600']\nslo: { latency_s: 0.5 }\n\
                 processing_time_s: 0.02\nmin_replicas: 1\nmax_replicas: 1\nready_timeout_s: 1\n";
    let (status, v) = s.apply(never);
    assert_eq!(status, 201, "{v}");
    let first = s.wait_service("never", 10, "starting", |v| {
        v["replicas"][0]["pid"].is_i64()
    });
    let pid = first["replicas"][0]["pid"].as_i64().unwrap();
    let t0 = Instant::now();
    while !s.service_events("never").contains("abandoned") {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{}",
            s.service_events("never")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ev = s.service_events("never");
    assert!(
        ev.contains("replica 1 abandoned: not ready at /healthz after 1 s"),
        "{ev}"
    );
    // Its process is stopped, and another is tried (after a back-off).
    let t0 = Instant::now();
    while running(pid) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "replica {pid} still runs"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s.wait_service("never", 15, "retried", |v| {
        v["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"].as_u64() > Some(1))
    });
    assert_eq!(s.service("never")["ready_replicas"], 0);
}

#[test]
fn the_server_restarted_under_load_adopts_its_replicas_and_orphans_none() {
    let mut s = Server::start("capacity: { cpus: 4 }\nautoscaler: { policy: hpa }");
    let (status, v) = s.apply(&spec("svc", 2, ""));
    assert_eq!(status, 201, "{v}");
    let v = s.wait_service("svc", 30, "2 ready", |v| v["ready_replicas"] == 2);
    let url = v["url"].as_str().unwrap().to_string();
    let before = pids(&v);
    let load = Load::start(&url, 3);
    std::thread::sleep(Duration::from_millis(1000));
    s.kill();
    std::thread::sleep(Duration::from_millis(500));
    // The replicas outlive the server.
    assert!(before.iter().all(|p| running(*p)), "{before:?}");
    s.spawn();
    let v = s.wait_service("svc", 30, "adopted", |v| v["ready_replicas"] == 2);
    // The same processes, on the same router URL, and no new ones.
    assert_eq!(pids(&v), before, "{v}");
    assert_eq!(v["url"], url.as_str());
    assert!(
        v["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["adopted"] == true),
        "{v}"
    );
    let served_before = load.ok.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1500));
    let (answered, _) = load.finish();
    assert!(
        answered > served_before + 20,
        "{served_before} -> {answered}"
    );
    let files = std::fs::read_dir(s.data().join("services/svc/replicas"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .count();
    assert_eq!(files, 2);
    common::wait_until(
        5,
        || s.service_events("svc").contains("adopted after a restart"),
        || s.service_events("svc"),
    );
    // Deleting the service stops them all.
    let (ok, out, err) = s.cli(&["delete", "service", "svc"], ADMIN);
    assert!(ok, "{out}{err}");
    let t0 = Instant::now();
    while before.iter().any(|p| running(*p)) {
        assert!(t0.elapsed() < Duration::from_secs(15), "replicas still run");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, _) = s.request("GET", "/v1/services/svc", Some(ADMIN), None);
    assert_eq!(status, 404);
}

#[test]
fn the_autoscaler_sets_targets_and_training_shares_the_capacity() {
    // FairShare splits 4 vCPUs between two services: two replicas each.
    let s = Server::start("capacity: { cpus: 4 }\nautoscaler: { policy: fairshare }");
    for name in ["a", "b"] {
        let spec = format!(
            "name: {name}\ncommand: ['{REPLICA}', --port, $PORT, --service-ms, '5']\n\
             slo: {{ latency_s: 0.5 }}\nprocessing_time_s: 0.005\nmin_replicas: 1\nmax_replicas: 4\n"
        );
        let (status, v) = s.apply(&spec);
        assert_eq!(status, 201, "{v}");
    }
    for name in ["a", "b"] {
        let v = s.wait_service(name, 30, "2 ready", |v| v["ready_replicas"] == 2);
        assert_eq!(v["target_replicas"], 2, "{v}");
    }
    // The decision is on record with what the policy was shown.
    let (status, v) = s.request("GET", "/v1/autoscaler", Some(ADMIN), None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["policy"], "fairshare");
    let last = v["decisions"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["initial"], true, "{v}");
    assert_eq!(last["capacity_cpus"], 4.0, "{v}");
    let after: Vec<(String, u64, u64)> = last["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["service"].as_str().unwrap().to_string(),
                x["target_before"].as_u64().unwrap(),
                x["target_after"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(after, [("a".into(), 1, 2), ("b".into(), 1, 2)], "{v}");
    let (ok, out, _) = s.cli(&["get", "autoscaler"], ADMIN);
    assert!(
        ok && out.contains("fairshare") && out.contains("a 1 -> 2"),
        "{out}"
    );
    // Another tenant sees no decision about these services.
    let (_, t) = s.request(
        "POST",
        "/v1/tokens",
        Some(ADMIN),
        Some(("application/json", br#"{"tenant": "team-a"}"#.to_vec())),
    );
    let tenant = t["token"].as_str().unwrap().to_string();
    let (status, v) = s.request("GET", "/v1/autoscaler", Some(&tenant), None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["decisions"].as_array().unwrap().len(), 0, "{v}");
    let (_, v) = s.request("GET", "/v1/services", Some(&tenant), None);
    assert_eq!(v["services"].as_array().unwrap().len(), 0, "{v}");
    // The replicas hold all 4 vCPUs: a 1-CPU training job waits.
    let manifest = "name: t\nlearners: 1\ncpus: 1\nmemory: 64MiB\nframework:\n  name: custom\n  command: 'true'\n";
    let id = s.submit(manifest);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(s.job(id)["state"], "QUEUED");
    assert!(
        s.job(id)["wait_reason"]
            .as_str()
            .is_some_and(|r| !r.contains("never fits")),
        "{}",
        s.job(id)
    );
    // With one service left, FairShare gives it the whole capacity: still no room.
    let (status, _) = s.request("DELETE", "/v1/services/b", Some(ADMIN), None);
    assert_eq!(status, 200);
    s.wait_service("a", 30, "4 ready", |v| v["ready_replicas"] == 4);
    assert_eq!(s.job(id)["state"], "QUEUED");
    // Without services, the job runs.
    let (status, _) = s.request("DELETE", "/v1/services/a", Some(ADMIN), None);
    assert_eq!(status, 200);
    s.wait_state(id, "COMPLETED", 60);
}

fn condition<'a>(v: &'a Value, kind: &str) -> Option<&'a Value> {
    v["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind && c["status"] == "True")
}

#[test]
fn what_can_never_run_is_refused_and_what_cannot_run_now_says_why_without_hanging() {
    let s = Server::start("capacity: { cpus: 2 }");
    // Larger than the cluster: refused, by the API and the CLI.
    let (status, v) = s.apply(&spec("big", 1, "cpus: 8"));
    assert_eq!((status, v["field"].as_str()), (400, Some("cpus")), "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("Unschedulable: a replica needs 8 vCPUs, the cluster has 2"),
        "{v}"
    );
    let (status, v) = s.apply(&spec("many", 3, ""));
    assert_eq!(
        (status, v["field"].as_str()),
        (400, Some("min_replicas")),
        "{v}"
    );
    let file = s.dir.path().join("big.yaml");
    std::fs::write(&file, spec("big", 1, "cpus: 8")).unwrap();
    let (ok, _, err) = s.cli(&["apply", "-f", file.to_str().unwrap()], ADMIN);
    assert!(!ok && err.contains("Unschedulable"), "{err}");

    // A command that does not exist: a crash loop, said by a condition and an event,
    // and a request to it fails with 503 and Retry-After after unavailable_timeout_s.
    let typo = "name: typo\ncommand: [/nonexistent/pharos-replicaa, --port, $PORT]\n\
                slo: { latency_s: 0.5 }\nprocessing_time_s: 0.02\nunavailable_timeout_s: 2\n";
    let (status, v) = s.apply(typo);
    assert_eq!(status, 201, "{v}");
    let url = v["url"].as_str().unwrap().to_string();
    let v = s.wait_service("typo", 20, "crash-looping", |v| {
        condition(v, "CrashLoop").is_some()
    });
    let m = condition(&v, "CrashLoop").unwrap()["message"].to_string();
    assert!(
        m.contains("starts failed in a row")
            && m.contains("cannot start")
            && m.contains("next try in"),
        "{m}"
    );
    // The event is written by the same pass, after the condition is shown.
    common::wait_until(
        5,
        || s.service_events("typo").contains("crash-loop"),
        || s.service_events("typo"),
    );
    let (ok, out, _) = s.cli(&["get", "services"], ADMIN);
    assert!(
        ok && out
            .lines()
            .any(|l| l.starts_with("typo") && l.contains("CrashLoop")),
        "{out}"
    );
    let (ok, out, _) = s.cli(&["get", "service", "typo"], ADMIN);
    assert!(
        ok && out.contains("CrashLoop") && out.contains("ReplicasFailToStart"),
        "{out}"
    );
    let t0 = Instant::now();
    let r = s.agent.get(format!("{url}/infer")).call().unwrap();
    let waited = t0.elapsed().as_secs_f64();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers().get("retry-after").and_then(|h| h.to_str().ok()),
        Some("2")
    );
    assert!((1.9..10.0).contains(&waited), "{waited}");
    assert_eq!(s.service("typo")["counters"]["unavailable"], 1);
    let (status, _) = s.request("DELETE", "/v1/services/typo", Some(ADMIN), None);
    assert_eq!(status, 200);

    // A replica listening on every address (clients could go past the router): never
    // ready, stopped as a failed start.
    let open = "name: open\ncommand: [python3, -m, http.server, $PORT]\nreadiness_path: /\n\
                slo: { latency_s: 0.5 }\nprocessing_time_s: 0.02\n";
    let (status, v) = s.apply(open);
    assert_eq!(status, 201, "{v}");
    common::wait_until(
        30,
        || s.service_events("open").contains("exposed"),
        || s.service_events("open"),
    );
    let ev = s.service_events("open");
    assert!(
        ev.contains("listens on 0.0.0.0:") && ev.contains("127.0.0.1"),
        "{ev}"
    );
    assert_eq!(s.service("open")["ready_replicas"], 0);
    let (status, _) = s.request("DELETE", "/v1/services/open", Some(ADMIN), None);
    assert_eq!(status, 200);

    // Room taken by a training job: the service waits, and says for what.
    let id = s.submit(
        "name: t\nlearners: 2\ncpus: 1\nmemory: 64MiB\nframework:\n  name: custom\n  command: 'sleep 600'\n",
    );
    s.wait_state(id, "PROCESSING", 30);
    // Watched as it changes: a new state printed when the service appears.
    let mut watch = std::process::Command::new(common::PHAROS)
        .args(["get", "services", "--watch"])
        .env("PHAROS_URL", &s.url)
        .env("PHAROS_TOKEN", ADMIN)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let seen = seen.clone();
        let out = watch.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                seen.lock().unwrap().push_str(&(line + "\n"));
            }
        })
    };
    let (status, v) = s.apply(&spec("later", 1, ""));
    assert_eq!(status, 201, "{v}");
    let v = s.wait_service("later", 20, "unschedulable", |v| {
        condition(v, "Unschedulable").is_some()
    });
    let m = condition(&v, "Unschedulable").unwrap()["message"].to_string();
    assert!(
        m.contains("1 of 1 replicas wait for capacity") && m.contains("training jobs hold 2.00"),
        "{m}"
    );
    common::wait_until(
        5,
        || s.service_events("later").contains("unschedulable"),
        || s.service_events("later"),
    );
    assert_eq!(v["ready_replicas"], 0);
    common::wait_until(
        20,
        || {
            seen.lock()
                .unwrap()
                .lines()
                .any(|l| l.starts_with("later") && l.contains("Unschedulable"))
        },
        || seen.lock().unwrap().clone(),
    );
    watch.kill().unwrap();
    watch.wait().unwrap();
    reader.join().unwrap();
    let text = seen.lock().unwrap().clone();
    assert!(
        text.matches("every 2 s until interrupted").count() >= 2,
        "{text}"
    );

    // Who holds the cluster, and who waits for what.
    let (ok, out, err) = s.cli(&["get", "cluster"], ADMIN);
    assert!(ok, "{err}");
    assert!(out.contains("capacity: 2 vCPUs"), "{out}");
    assert!(
        out.contains("held:     training 2 vCPUs, 128 MiB, 0 GPUs; services 0 vCPUs"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("training-{id} (t)")) && l.contains("2 learners")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("later") && l.contains("wait for capacity")),
        "{out}"
    );
    let (_, v) = s.request("GET", "/v1/cluster", Some(ADMIN), None);
    assert_eq!(v["free"]["cpus"], 0.0, "{v}");
    assert_eq!(v["waiting_count"], 1, "{v}");
}

/// AIAD raises a target by one a second while requests wait; a crash-looping
/// service's target is held where it is, a merely slow one's is raised.
#[test]
fn a_crash_looping_service_gets_no_more_replicas() {
    let s = Server::start(
        "capacity: { cpus: 6 }\nautoscaler: { policy: aiad, params: { interval_s: 1, look_back_s: 2, upscale_delay_s: 1 } }",
    );
    let typo = "name: typo\ncommand: [/nonexistent/pharos-replicaa, --port, $PORT]\n\
                slo: { latency_s: 0.1 }\nprocessing_time_s: 0.02\nmax_replicas: 3\nunavailable_timeout_s: 1\n";
    let (status, v) = s.apply(typo);
    assert_eq!(status, 201, "{v}");
    let typo_url = v["url"].as_str().unwrap().to_string();
    s.wait_service("typo", 20, "crash-looping", |v| {
        condition(v, "CrashLoop").is_some()
    });
    let slow = spec("slow", 1, "")
        .replace("'20'", "'300'")
        .replace("max_replicas: 1", "max_replicas: 3");
    let (status, v) = s.apply(&slow.replace("latency_s: 0.5", "latency_s: 0.1"));
    assert_eq!(status, 201, "{v}");
    let slow_url = v["url"].as_str().unwrap().to_string();
    s.wait_service("slow", 30, "ready", |v| v["ready_replicas"] == 1);
    let (a, b) = (Load::start(&typo_url, 2), Load::start(&slow_url, 2));
    s.wait_service("slow", 30, "raised", |v| {
        v["target_replicas"].as_u64() >= Some(2)
    });
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        let v = s.service("typo");
        assert_eq!(v["target_replicas"], 1, "{v}\n{}", s.service_events("typo"));
        std::thread::sleep(Duration::from_millis(200));
    }
    a.finish();
    b.finish();
    assert!(
        s.service_events("typo")
            .contains("its target is not raised")
    );
}

#[test]
fn pharos_load_takes_the_url_and_slo_from_the_service_and_metrics_count_its_requests() {
    let s = Server::start("capacity: { cpus: 2 }");
    let (status, v) = s.apply(
        &spec("echo", 1, "slo: { latency_s: 0.25, percentile: 95 }")
            .replace("slo: { latency_s: 0.5 }\n", ""),
    );
    assert_eq!(status, 201, "{v}");
    let url = v["url"].as_str().unwrap().to_string();
    s.wait_service("echo", 30, "ready", |v| v["ready_replicas"] == 1);
    let t = s.dir.path().join("t.csv");
    std::fs::write(&t, "job,minute,requests\nj,0,600\n").unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["load", "--trace", t.to_str().unwrap(), "--speedup", "60"];
        args.extend(["--rate-scale", "0.05", "--json"]);
        args.extend(extra);
        let (ok, out, err) = s.cli(&args, ADMIN);
        assert!(ok, "{err}");
        (serde_json::from_str::<Value>(&out).unwrap(), err)
    };
    // Named: its router's /infer, its SLO.
    let (v, err) = run(&["--service", "echo"]);
    assert_eq!(v["summary"]["url"], format!("{url}/infer"));
    assert_eq!(v["summary"]["slo_ms"], 250.0);
    assert_eq!(v["summary"]["percentile"], 95.0);
    assert!(err.contains("(service echo)"), "{err}");
    assert!(v["summary"]["requests"].as_u64().unwrap() > 0);
    assert_eq!(v["summary"]["dropped"], 0);
    // Found by the URL's address; a given SLO wins.
    let (v, _) = run(&["--url", &format!("{url}/infer")]);
    assert_eq!(v["summary"]["slo_ms"], 250.0);
    let (v, _) = run(&["--url", &format!("{url}/infer"), "--slo-ms", "40"]);
    assert_eq!(v["summary"]["slo_ms"], 40.0);

    // The service's Prometheus metrics count what the router saw.
    let st = s.service("echo");
    // Without a token, totals only: tenants' service names are not shown to anyone.
    let (status, public) = s.request("GET", "/metrics", None, None);
    assert_eq!(status, 200);
    let public = public.as_str().unwrap_or("").to_string();
    assert!(
        public.contains("pharos_http_requests_total") && !public.contains("echo"),
        "{public}"
    );
    let (status, text) = s.request("GET", "/metrics", Some(ADMIN), None);
    assert_eq!(status, 200);
    let text = text.as_str().unwrap_or("").to_string();
    let metric = |line: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line} in\n{text}"))
    };
    let completed = st["counters"]["completed"].as_f64().unwrap();
    assert!(completed > 0.0);
    let at = |outcome: &str| {
        metric(&format!(
            "pharos_service_requests_total{{service=\"echo\",outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(at("completed"), completed);
    assert_eq!(at("arrived"), st["counters"]["arrivals"].as_f64().unwrap());
    let count = metric("pharos_service_request_duration_seconds_count{service=\"echo\"}");
    assert_eq!(count, completed);
    // Cumulative buckets: every 20 ms request is above 10 ms and all are within +Inf.
    assert_eq!(
        metric("pharos_service_request_duration_seconds_bucket{service=\"echo\",le=\"0.01\"}"),
        0.0
    );
    assert_eq!(
        metric("pharos_service_request_duration_seconds_bucket{service=\"echo\",le=\"+Inf\"}"),
        completed
    );
    assert_eq!(
        metric("pharos_service_replicas{service=\"echo\",phase=\"ready\"}"),
        1.0
    );
    assert_eq!(
        metric("pharos_service_target_replicas{service=\"echo\"}"),
        1.0
    );
    assert_eq!(
        metric("pharos_service_condition{service=\"echo\",condition=\"Ready\"}"),
        1.0
    );
}

#[test]
fn a_replicas_output_is_read_tailed_since_a_time_and_followed_from_the_cli() {
    let s = Server::start("capacity: { cpus: 2 }");
    let (status, v) = s.apply(&spec("echo", 1, ""));
    assert_eq!(status, 201, "{v}");
    s.wait_service("echo", 30, "ready", |v| v["ready_replicas"] == 1);
    // The newest replica's, named on stderr.
    let (ok, out, err) = s.cli(&["logs", "service", "echo"], ADMIN);
    assert!(
        ok && out.contains("pharos-replica: calibrated"),
        "{out}{err}"
    );
    assert!(err.contains("replica 1"), "{err}");
    let (ok, out, _) = s.cli(
        &["logs", "service", "echo", "--replica", "1", "--tail", "1"],
        ADMIN,
    );
    assert!(ok && out.lines().count() == 1, "{out}");
    let (ok, _, err) = s.cli(&["logs", "service", "echo", "--replica", "9"], ADMIN);
    assert!(!ok && err.contains("replicas with logs: 1"), "{err}");
    // Since: an hour ago is everything; since now, nothing written since.
    std::thread::sleep(Duration::from_millis(1500));
    let (ok, out, _) = s.cli(&["logs", "service", "echo", "--since", "1h"], ADMIN);
    assert!(ok && out.contains("calibrated"), "{out}");
    let (ok, out, _) = s.cli(&["logs", "service", "echo", "--since", "0s"], ADMIN);
    assert!(ok && out.is_empty(), "{out}");
    let (ok, _, err) = s.cli(&["logs", "service", "echo", "--since", "5y"], ADMIN);
    assert!(!ok && err.contains("unit"), "{err}");
    let (ok, _, err) = s.cli(&["logs", "service", "nope"], ADMIN);
    assert!(!ok && err.contains("404"), "{err}");
    // Followed until the replica stops (its service deleted).
    let follow = std::process::Command::new(common::PHAROS)
        .args(["logs", "service", "echo", "--follow"])
        .env("PHAROS_URL", &s.url)
        .env("PHAROS_TOKEN", ADMIN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (status, _) = s.request("DELETE", "/v1/services/echo", Some(ADMIN), None);
    assert_eq!(status, 200);
    let t0 = Instant::now();
    let out = follow.wait_with_output().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(30));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("calibrated"));
}

#[test]
fn bad_service_specs_are_clear_errors() {
    let s = Server::start("capacity: { cpus: 2 }");
    let cases = [
        (spec("x", 1, "colour: blue"), "colour"),
        (spec("Bad_Name", 1, ""), "name"),
        (spec("x", 1, "gpus: 1"), "gpus"),
        (spec("x", 1, "cpus: -1"), "cpus"),
        (
            "name: x\ncommand: []\nslo: { latency_s: 1 }\nprocessing_time_s: 1\n".into(),
            "command",
        ),
        (
            "name: x\ncommand: [a]\nslo: { latency_s: 0 }\nprocessing_time_s: 1\n".into(),
            "slo.latency_s",
        ),
        ("name: x\ncommand: [a\n".into(), ""),
    ];
    for (text, field) in &cases {
        let (status, v) = s.request(
            "PUT",
            "/v1/services/x",
            Some(ADMIN),
            Some(("application/yaml", text.as_bytes().to_vec())),
        );
        let name_path = text.contains("Bad_Name");
        assert_eq!(status, 400, "{text}: {v}");
        let msg = v.to_string();
        assert!(name_path || msg.contains(field), "{field}: {msg}");
    }
    // The path and the spec must name the same service.
    let (status, v) = s.request(
        "PUT",
        "/v1/services/y",
        Some(ADMIN),
        Some(("application/yaml", spec("x", 1, "").into_bytes())),
    );
    assert_eq!(status, 400, "{v}");
    // Nothing was created.
    let (_, v) = s.request("GET", "/v1/services", Some(ADMIN), None);
    assert_eq!(v["services"].as_array().unwrap().len(), 0, "{v}");
    // No token: 401. An unknown service: 404.
    let (status, _) = s.request("GET", "/v1/services", None, None);
    assert_eq!(status, 401);
    let (status, _) = s.request("DELETE", "/v1/services/nope", Some(ADMIN), None);
    assert_eq!(status, 404);
    // A running service's command cannot change; its replica bounds can.
    let (status, _) = s.apply(&spec("x", 1, ""));
    assert_eq!(status, 201);
    let changed = spec("x", 1, "").replace("'20'", "'30'");
    let (status, v) = s.apply(&changed);
    assert_eq!(status, 409, "{v}");
    assert!(v.to_string().contains("command"), "{v}");
    let (status, v) = s.apply(&spec("x", 1, "").replace("max_replicas: 1", "max_replicas: 2"));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["spec"]["max_replicas"], 2);
    // A malformed file is named by the CLI.
    let file = s.dir.path().join("bad.yaml");
    std::fs::write(&file, "name: [").unwrap();
    let (ok, _, err) = s.cli(&["apply", "-f", file.to_str().unwrap()], ADMIN);
    assert!(!ok && err.contains("bad.yaml"), "{err}");
}

#[test]
fn the_autoscaler_is_shown_what_training_jobs_leave() {
    let s = Server::start("capacity: { cpus: 4 }\nautoscaler: { policy: fairshare }");
    let manifest = "name: t\nlearners: 1\ncpus: 3\nmemory: 64MiB\nframework:\n  name: custom\n  command: 'sleep 60'\n";
    let id = s.submit(manifest);
    s.wait_state(id, "PROCESSING", 30);
    let spec = format!(
        "name: a\ncommand: ['{REPLICA}', --port, $PORT, --service-ms, '5']\n\
         slo: {{ latency_s: 0.5 }}\nprocessing_time_s: 0.005\nmin_replicas: 1\nmax_replicas: 4\n"
    );
    let (status, v) = s.apply(&spec);
    assert_eq!(status, 201, "{v}");
    // FairShare splits the 1 vCPU the learner leaves: one replica, not four.
    s.wait_service("a", 30, "1 ready", |v| v["ready_replicas"] == 1);
    // (Shown the whole 4 vCPUs, it would ask for 4.) Its decision changed nothing, so
    // none is on record, but it was taken.
    let (_, v) = s.request("GET", "/v1/autoscaler", Some(ADMIN), None);
    assert!(v["calls"].as_u64().unwrap() >= 1, "{v}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.service("a")["target_replicas"], 1);
    assert_eq!(s.service("a")["ready_replicas"], 1);
}

#[test]
fn the_autoscaler_plans_scale_ups_for_when_the_measured_cold_start_ends() {
    // Faro's first predictive step 4 s in, after the first replica's cold start has
    // been measured; it hands the idle capacity to the service (1 -> 3 replicas).
    let s = Server::start(
        "capacity: { cpus: 4 }\nautoscaler:\n  policy: faro-fairsum\n  \
         params: {interval_s: 1, first_predictive_s: 4, predictive_interval_s: 4, prediction: none}\n",
    );
    let (status, v) = s.apply(&spec("svc", 1, "").replace("max_replicas: 1", "max_replicas: 3"));
    assert_eq!(status, 201, "{v}");
    let v = s.wait_service("svc", 30, "ready", |v| v["ready_replicas"] == 1);
    let expected = v["cold_start_s"]["expected"].as_f64().expect("measured");
    assert!(expected > 0.0 && expected < 60.0, "{v}");
    assert_eq!(v["cold_start_s"]["count"], 1, "{v}");
    // The plan that grew it kept the current replica for the window's first minute:
    // the cold start, rounded up to whole minutes.
    let t0 = Instant::now();
    let planned = loop {
        let (_, a) = s.request("GET", "/v1/autoscaler", Some(ADMIN), None);
        let found = a["decisions"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|d| {
                d["services"].as_array()?.iter().find_map(|x| {
                    let e = &x["explanation"];
                    (x["target_after"].as_u64() > x["target_before"].as_u64()
                        && e["ready_after_steps"].is_u64())
                    .then(|| e.clone())
                })
            });
        if let Some(e) = found {
            break e;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no planned scale-up: {a}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(planned["ready_after_steps"], 1, "{planned}");
}

/// The minutes of `name`'s stored history, as `pharos history show --json` prints them.
fn stored_minutes(s: &Server, name: &str) -> Vec<Value> {
    let (ok, out, err) = s.cli(&["history", "show", name, "--json"], ADMIN);
    assert!(ok, "{out}{err}");
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn load_history_is_imported_recorded_kept_over_a_kill_and_learned_from() {
    // Days of 60 minutes, so that four imported days fit the test; the seasonal naive
    // forecaster (the same minute of the day before), whose forecast says exactly which
    // minute of the day it thinks each minute is.
    let mut s = Server::start(
        "capacity: { cpus: 4 }\n\
         autoscaler: { policy: faro-fairsum, params: { forecaster: seasonal-naive+cal } }\n\
         forecast: { day_minutes: 60, fit_days: 3 }",
    );
    let (status, v) = s.apply(&spec("svc", 1, "").replace("max_replicas: 1", "max_replicas: 2"));
    assert_eq!(status, 201, "{v}");
    // Four days of a daily pattern: 100 + 50 sin(2 pi minute / 60) requests a minute.
    let pattern =
        |m: usize| (100.0 + 50.0 * (std::f64::consts::TAU * m as f64 / 60.0).sin()).round();
    let mut csv = String::from("job,day,minute,requests\n");
    for day in 1..=4 {
        for m in 0..60 {
            csv.push_str(&format!("web,{day},{m},{}\n", pattern(m)));
        }
    }
    let file = s.dir.path().join("past.csv");
    std::fs::write(&file, csv).unwrap();
    let (ok, out, err) = s.cli(
        &[
            "history",
            "import",
            "--service",
            "svc",
            file.to_str().unwrap(),
        ],
        ADMIN,
    );
    assert!(ok && out.contains("240 minutes imported"), "{out}{err}");
    // Read back: CSV by default, one JSON object per minute with --json.
    let (ok, out, err) = s.cli(&["history", "show", "svc"], ADMIN);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "minute,arrivals,served,dropped,violations,p99_s,replicas"
    );
    assert!(lines.len() >= 241, "{out}");
    assert!(
        lines[1].ends_with(&format!(",{},,,,,", pattern(0))),
        "{}",
        lines[1]
    );
    let imported = stored_minutes(&s, "svc");
    let first = imported[0]["minute"].as_i64().unwrap();
    assert_eq!(
        imported[..240]
            .iter()
            .map(|m| m["arrivals"].as_f64().unwrap())
            .collect::<Vec<_>>(),
        (0..240).map(|m| pattern(m % 60)).collect::<Vec<_>>()
    );
    assert!(imported[0].get("served").is_none(), "{}", imported[0]);

    // The forecaster is fitted on the imported days in the background, and its forecast
    // of the next half hour is the daily pattern at the right time of day (the import's
    // first minute starts a day).
    let v = s.wait_service("svc", 90, "forecast", |v| {
        v["forecast"]["horizon"].is_array()
    });
    let f = &v["forecast"];
    assert_eq!(f["model"], "seasonal-naive+cal", "{f}");
    let h = f["horizon"].as_array().unwrap();
    assert_eq!(h.len(), 30, "{f}");
    for p in h {
        let (m, q50, q90) = (
            p["minute"].as_i64().unwrap(),
            p["q50"].as_f64().unwrap(),
            p["q90"].as_f64().unwrap(),
        );
        // Minutes not recorded since the import (the test's own) count 0, so only the
        // minutes whose day-before is imported are exact.
        if m < first + 300 {
            let want = pattern((m - first).rem_euclid(60) as usize);
            assert!(
                (q50 - want).abs() < 1.0,
                "minute {m}: {q50} for {want}: {f}"
            );
        }
        assert!(q90 >= q50 - 1e-9, "{f}");
    }
    common::wait_until(
        5,
        || s.service_events("svc").contains("forecast-fitted"),
        || s.service_events("svc"),
    );
    let (_, metrics) = s.request("GET", "/metrics", Some(ADMIN), None);
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("pharos_service_forecast_requests{service=\"svc\",stat=\"q90\"}"),
        "{metrics}"
    );

    // Bad requests name what is wrong.
    let (status, e) = s.request(
        "POST",
        "/v1/services/svc/history",
        Some(ADMIN),
        Some((
            "application/json",
            format!("{{\"start\": {}, \"arrivals\": [1, 2]}}", first + 100_000).into_bytes(),
        )),
    );
    assert_eq!((status, e["field"].as_str()), (400, Some("start")), "{e}");
    let (status, e) = s.request(
        "GET",
        "/v1/services/svc/history?from=0&to=9999999",
        Some(ADMIN),
        None,
    );
    assert_eq!((status, e["field"].as_str()), (400, Some("to")), "{e}");
    let (status, e) = s.request(
        "GET",
        "/v1/services/svc/history?format=xml",
        Some(ADMIN),
        None,
    );
    assert_eq!((status, e["field"].as_str()), (400, Some("format")), "{e}");
    // One minute past an import's bound, all in the past: refused whole, naming it.
    let big = format!(
        "{{\"start\": {}, \"arrivals\": [{}]}}",
        first - 200_000,
        vec!["1"; 100_001].join(",")
    );
    let (status, e) = s.request(
        "POST",
        "/v1/services/svc/history",
        Some(ADMIN),
        Some(("application/json", big.into_bytes())),
    );
    assert_eq!(
        (status, e["field"].as_str()),
        (400, Some("arrivals")),
        "{e}"
    );
    let (status, _) = s.request("GET", "/v1/services/nope/history", Some(ADMIN), None);
    assert_eq!(status, 404);

    // Observed minutes: load until a whole minute has been recorded with what was served.
    let url = v["url"].as_str().unwrap().to_string();
    let load = Load::start(&url, 1);
    let mut observed = Vec::new();
    common::wait_until(
        80,
        || {
            observed = stored_minutes(&s, "svc")
                .into_iter()
                .filter(|m| m.get("served").is_some() && m["arrivals"].as_u64() > Some(0))
                .collect();
            !observed.is_empty()
        },
        || "no observed minute recorded".into(),
    );
    load.finish();
    let m = &observed[0];
    assert!(
        m["served"].as_u64().unwrap() > 0 && m["replicas"].as_u64() == Some(1),
        "{m}"
    );
    assert!(m["p99_s"].as_f64().unwrap() > 0.0, "{m}");
    let before = stored_minutes(&s, "svc");

    // kill -9: every minute recorded before is still there after the restart, and the
    // fitted forecaster is taken back, not fitted again.
    let fitted_at = f["fitted_at_ms"].clone();
    let fitted_before = s.service_events("svc").matches("forecast-fitted").count();
    s.kill();
    let restarted_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    s.spawn();
    // The policy decides at once (its initial decision, at the loop's first pass; the
    // time is printed, not asserted: it is the machine's).
    let t0 = Instant::now();
    let first_call_ms = loop {
        let (_, a) = s.request("GET", "/v1/autoscaler", Some(ADMIN), None);
        if let Some(ms) = a["last_call_ms"].as_i64() {
            assert!(a["calls"].as_u64() > Some(0), "{a}");
            break ms;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no decision: {a}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(first_call_ms >= restarted_ms);
    eprintln!(
        "first decision {:.3} s after the restart began (control period 10 s)",
        (first_call_ms - restarted_ms) as f64 / 1000.0
    );
    let after = stored_minutes(&s, "svc");
    assert_eq!(
        after[..before.len()],
        before[..],
        "history changed over the restart"
    );
    let v = s.wait_service("svc", 30, "forecast after the restart", |v| {
        v["forecast"]["horizon"].is_array()
    });
    assert_eq!(
        v["forecast"]["fitted_at_ms"], fitted_at,
        "{}",
        v["forecast"]
    );
    let events = s.service_events("svc");
    assert!(events.contains("forecast-restored"), "{events}");
    assert_eq!(
        events.matches("forecast-fitted").count(),
        fitted_before,
        "{events}"
    );
}

/// With routers in processes of their own, a single server's restart does not stop a
/// service: its router serves while the server is down, and the restarted server
/// adopts the router and the replicas.
#[test]
fn a_router_process_serves_while_its_server_restarts() {
    let mut s = Server::start("capacity: { cpus: 4 }\nservice_routers: process");
    let (status, v) = s.apply(&spec("svc", 2, ""));
    assert!(status == 200 || status == 201, "{v}");
    let v = s.wait_service("svc", 30, "2 ready", |v| v["ready_replicas"] == 2);
    let url = v["url"].as_str().unwrap().to_string();
    let before = pids(&v);
    let load = Load::start(&url, 3);
    std::thread::sleep(Duration::from_millis(1000));
    s.kill();
    let down = load.ok.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        load.ok.load(Ordering::Relaxed) > down,
        "nothing served while the server was down"
    );
    s.spawn();
    let v = s.wait_service("svc", 30, "adopted", |v| v["ready_replicas"] == 2);
    assert_eq!(pids(&v), before, "{v}");
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failed) = load.finish();
    assert!(ok > 100 && failed == 0, "{ok} answered, {failed} failed");
    assert!(
        s.server_log()
            .contains("adopted the running router process")
    );
    // A router process that dies is started again and given its replicas.
    let router = common::router_pid(&s.data(), "svc").expect("a router process");
    // SAFETY: kill -9 of the router process this test's server started.
    unsafe { libc::kill(router as i32, libc::SIGKILL) };
    common::wait_until(
        20,
        || common::router_pid(&s.data(), "svc").is_some_and(|p| p != router),
        || s.server_log(),
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    common::wait_until(
        10,
        || {
            agent
                .get(format!("{url}/infer"))
                .call()
                .is_ok_and(|r| r.status().is_success())
        },
        || s.server_log(),
    );
}
