//! The adversarial suite (docs/SECURITY.md): a tenant - and the code it runs - tries to
//! crash, hijack, snoop on or starve a real server. After each scenario the server is
//! still up, the other tenant's work is untouched, and the store passes its integrity
//! check.
//!
//! The sandbox scenarios need root (the server starts tenants' code as other users);
//! without root they say they are skipped, and under `CI=true` they fail instead.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether the sandbox scenarios can run here; under CI they must.
fn root_or_skip(what: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "{what}: needs root, and CI runs as root"
    );
    eprintln!("skipped {what}: needs root");
    false
}

fn yaml(text: &str) -> Option<(&'static str, Vec<u8>)> {
    Some(("application/yaml", text.as_bytes().to_vec()))
}

/// A token of a new tenant.
fn token(s: &Server, tenant: &str) -> String {
    let (st, v) = s.request(
        "POST",
        "/v1/tokens",
        Some(ADMIN),
        Some((
            "application/json",
            format!(r#"{{"tenant": "{tenant}"}}"#).into_bytes(),
        )),
    );
    assert_eq!(st, 201, "{v}");
    v["token"].as_str().unwrap().to_string()
}

fn apply_as(s: &Server, tok: &str, spec: &str) -> (u16, Value) {
    let name = spec
        .lines()
        .find_map(|l| l.strip_prefix("name: "))
        .unwrap()
        .trim()
        .to_string();
    s.request(
        "PUT",
        &format!("/v1/services/{name}"),
        Some(tok),
        yaml(spec),
    )
}

/// The server is alive and its store is intact.
fn still_standing(s: &Server) {
    let (st, v) = s.request("GET", "/healthz", None, None);
    assert_eq!(st, 200, "{v}\n{}", s.server_log());
    let (st, v) = s.request("GET", "/v1/admin/integrity", Some(ADMIN), None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
}

/// Peak resident memory of a process, bytes (VmHWM).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib * 1024
}

const SERVICE: &str = "name: web\ncommand: [/bin/sleep, '600']\nslo: { latency_s: 0.5 }\n\
processing_time_s: 0.05\nmin_replicas: 0\ninitial_replicas: 0\nmax_replicas: 2\nmax_queue: 0\n";

/// Every number a tenant sends has a range: out of it is a 400 (or 403 for a priority
/// above the tenant's ceiling) naming the field, and nothing is stored.
#[test]
fn numbers_out_of_range_are_refused_naming_the_field() {
    let s = Server::start(
        "tenant_limits: { max_priority: 5, max_services: 2, max_jobs: 2, max_memory: 8GiB }",
    );
    let alice = token(&s, "alice");
    let service = |extra: &str| {
        format!(
            "name: big\ncommand: [/bin/true]\nslo: {{ latency_s: 0.5 }}\nprocessing_time_s: 0.05\n{extra}\n"
        )
    };
    for (extra, field) in [
        ("max_replicas: 4294967295", "max_replicas"),
        ("cpus: 0.0001", "cpus"),
        ("cpus: 1.0e300", "cpus"),
        ("max_queue: 18446744073709551615", "max_queue"),
        ("max_concurrent: 4000000000", "max_concurrent"),
        ("ready_timeout_s: 1.0e12", "ready_timeout_s"),
        ("port: 22", "port"),
    ] {
        let (st, v) = apply_as(&s, &alice, &service(extra));
        assert_eq!(st, 400, "{extra}: {v}");
        assert!(v["error"].as_str().unwrap().contains(field), "{extra}: {v}");
    }
    let (st, _) = s.request("GET", "/v1/services/big", Some(&alice), None);
    assert_eq!(st, 404, "nothing stored");
    let job =
        |extra: &str| format!("name: j\nframework:\n  name: custom\n  command: 'true'\n{extra}\n");
    for (extra, field, code) in [
        ("priority: 2147483647", "priority", 400),
        ("priority: 6", "priority", 403),
        ("learners: 100000", "learners", 400),
        ("cpus: 0.0001", "cpus", 400),
        ("max_restarts: 4000000000", "max_restarts", 400),
        ("memory: 900TiB", "memory", 400),
        ("cpus: 64\nlearners: 8", "cpus", 400),
        ("memory: 4GiB\nlearners: 3", "memory", 400),
    ] {
        let (st, v) = s.request("POST", "/v1/models", Some(&alice), yaml(&job(extra)));
        assert_eq!(st, code, "{extra}: {v}");
        assert_eq!(v["field"], field, "{extra}: {v}");
    }
    // The admin is not held to a tenant's ceiling, only to the bounds.
    let (st, v) = s.request("POST", "/v1/models", Some(ADMIN), yaml(&job("priority: 6")));
    assert_eq!(st, 201, "{v}");
    // Quotas: at most 2 unfinished jobs, 2 services.
    let sleeper = job("").replace("'true'", "'sleep 60'");
    for _ in 0..2 {
        let (st, v) = s.request("POST", "/v1/models", Some(&alice), yaml(&sleeper));
        assert_eq!(st, 201, "{v}");
    }
    let (st, v) = s.request("POST", "/v1/models", Some(&alice), yaml(&sleeper));
    assert_eq!(st, 429, "{v}");
    for n in ["s1", "s2"] {
        let (st, v) = apply_as(
            &s,
            &alice,
            &SERVICE.replace("name: web", &format!("name: {n}")),
        );
        assert_eq!(st, 201, "{v}");
    }
    let (st, v) = apply_as(&s, &alice, &SERVICE.replace("name: web", "name: s3"));
    assert_eq!(st, 429, "{v}");
    // A bad page size is refused, a good one pages.
    for bad in ["limit=0", "limit=1001", "after=-1"] {
        let (st, v) = s.request("GET", &format!("/v1/models?{bad}"), Some(ADMIN), None);
        assert_eq!(st, 400, "{bad}: {v}");
    }
    let (st, v) = s.request("GET", "/v1/models?limit=2", Some(ADMIN), None);
    assert_eq!(st, 200);
    assert_eq!(v["models"].as_array().unwrap().len(), 2);
    let after = v["next_after"].as_i64().unwrap();
    let (_, v) = s.request(
        "GET",
        &format!("/v1/models?limit=2&after={after}"),
        Some(ADMIN),
        None,
    );
    assert_eq!(v["models"].as_array().unwrap().len(), 1, "{v}");
    assert!(v["next_after"].is_null());
    still_standing(&s);
}

/// A spec stored before the bounds existed (written into the store directly) does not
/// stop the server from starting: it is skipped with an event, the other services run,
/// and its owner can delete it.
#[test]
fn a_stored_spec_out_of_range_is_skipped_not_fatal() {
    let mut s = Server::start("");
    let (st, v) = s.apply(SERVICE);
    assert_eq!(st, 201, "{v}");
    let (st, v) = s.apply(&SERVICE.replace("name: web", "name: other"));
    assert_eq!(st, 201, "{v}");
    s.kill();
    let url = format!("sqlite://{}", s.data().join("pharos.db").display());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = pharos_server::Store::open(&url).await.unwrap();
        let mut spec: Value = serde_json::from_str(
            &store
                .services()
                .await
                .unwrap()
                .into_iter()
                .find(|r| r.name == "web")
                .unwrap()
                .spec,
        )
        .unwrap();
        spec["max_replicas"] = 4294967295u32.into();
        store
            .update_service("web", &spec.to_string())
            .await
            .unwrap();
        store.close().await;
    });
    s.spawn();
    s.service("other");
    let v = s.service("web");
    assert!(
        v["invalid_spec"].as_str().unwrap().contains("max_replicas"),
        "{v}"
    );
    wait_until(
        10,
        || s.service_events("web").contains("invalid-spec"),
        || s.service_events("web"),
    );
    assert!(s.server_log().contains("stored spec skipped"));
    let (st, v) = s.request("DELETE", "/v1/services/web", Some(ADMIN), None);
    assert_eq!(st, 200, "{v}");
    still_standing(&s);
}

/// A service's port is the service's: the old control paths are requests like any
/// other (here dropped: no replica, no queue), and the replica set is unchanged.
#[test]
fn a_service_port_serves_traffic_only() {
    let s = Server::start("");
    let (st, v) = s.apply(SERVICE);
    assert_eq!(st, 201, "{v}");
    let url = v["url"].as_str().unwrap().to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let r = agent
        .put(format!("{url}/router/replicas"))
        .content_type("application/json")
        .send(r#"["http://127.0.0.1:1"]"#)
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let r = agent
        .put(format!("{url}/router/accept"))
        .content_type("application/json")
        .send(r#"{"accept_rate": 0}"#)
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let r = agent.get(format!("{url}/router/stats")).call().unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let v = s.service("web");
    assert_eq!(v["accept_rate"], 1.0, "{v}");
    assert_eq!(v["counters"]["arrivals"], 3, "{v}");
    assert!(v["replicas"].as_array().unwrap().is_empty(), "{v}");
    still_standing(&s);
}

/// Idle connections and slow headers are closed within their timeouts, and a normal
/// client is served while they hold every connection slot.
#[test]
fn idle_and_slow_connections_do_not_starve_a_client() {
    let mut s = Server::start(
        "listener: { header_read_timeout_s: 1, idle_timeout_s: 2, max_connections: 50 }",
    );
    let addr = s.url.trim_start_matches("http://").to_string();
    let t0 = Instant::now();
    let mut idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let mut slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut c = TcpStream::connect(&addr).unwrap();
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            c
        })
        .collect();
    // A normal client (a new connection: the harness's pooled one has been idle past
    // the timeout too) gets its answer once the idle ones are cut (2 s), well before 10.
    let st = ureq::get(format!("{}/healthz", s.url))
        .call()
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(st, 200);
    let served_s = t0.elapsed().as_secs_f64();
    assert!(served_s < 10.0, "served after {served_s} s");
    // Each idle or slow connection has been closed by the server: EOF (or a reset).
    for c in idle.iter_mut().chain(slow.iter_mut()) {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 512];
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue, // a 408 or the like before the close
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("a connection is still open after {:?}", t0.elapsed())
                }
                Err(_) => break, // reset by the server
            }
        }
    }
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "connections closed after {:?}",
        t0.elapsed()
    );
    // The harness's pooled connections were cut for idling too.
    s.agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    still_standing(&s);
}

/// A replica answering 2 GB, and a learner writing a 2 GB log line: both go through a
/// server whose memory stays under 200 MB.
#[test]
fn huge_bodies_and_log_lines_stay_out_of_the_servers_memory() {
    let s = Server::start("capacity: { cpus: 2 }");
    // A replica that answers every request with 2 GB (and its readiness path at once).
    let script = "import http.server,os\n\
class H(http.server.BaseHTTPRequestHandler):\n  \
def do_GET(self):\n    \
n = 0 if self.path == '/healthz' else 2 * 1024**3\n    \
self.send_response(200); self.send_header('Content-Length', str(n)); self.end_headers()\n    \
chunk = b'x' * (1 << 20)\n    \
for _ in range(n >> 20): self.wfile.write(chunk)\n  \
def log_message(self, *a): pass\n\
http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), H).serve_forever()\n";
    let spec = format!(
        "name: huge\ncommand: [/usr/bin/python3, -c, {}]\nslo: {{ latency_s: 60 }}\nprocessing_time_s: 1\nmin_replicas: 1\nmax_replicas: 1\n",
        serde_json::to_string(script).unwrap()
    );
    let (st, v) = s.apply(&spec);
    assert_eq!(st, 201, "{v}");
    let url = v["url"].as_str().unwrap().to_string();
    s.wait_service("huge", 60, "ready", |v| v["ready_replicas"] == 1);
    let resp = ureq::get(format!("{url}/big")).call().unwrap();
    let got = std::io::copy(&mut resp.into_body().into_reader(), &mut std::io::sink()).unwrap();
    assert_eq!(got, 2 * 1024 * 1024 * 1024);
    let pid = s.child.as_ref().unwrap().id();
    let after_body = peak_rss(pid);
    let v = s.service("huge");
    assert_eq!(v["counters"]["completed"], 1, "{v}");
    // A learner's 2 GB line, then its log and metrics read through the API.
    let id = s.submit(
        "name: loud\nlearners: 1\ncpus: 1\nmax_restarts: 0\nframework:\n  name: custom\n  \
         command: \"head -c 2147483648 /dev/zero | tr '\\\\0' x; echo; echo step=1 loss=0.5\"\n\
         evaluation_metrics:\n  type: regex\n  regex: 'step=(?P<step>\\d+) loss=(?P<loss>[0-9.]+)'\n",
    );
    s.wait_state(id, "COMPLETED", 240);
    let (st, page) = s.request(
        "GET",
        &format!("/v1/models/{id}/logs?limit=5"),
        Some(ADMIN),
        None,
    );
    assert_eq!(st, 200, "{page}");
    let lines = page["lines"].as_array().unwrap();
    assert!(lines[0].as_str().unwrap().ends_with("[line cut]"));
    assert_eq!(lines[1], "step=1 loss=0.5");
    let (st, m) = s.request(
        "GET",
        &format!("/v1/models/{id}/metrics"),
        Some(ADMIN),
        None,
    );
    assert_eq!(st, 200, "{m}");
    assert_eq!(m["last"]["loss"], 0.5);
    let peak = peak_rss(pid);
    eprintln!(
        "server peak RSS: {:.1} MB after a 2 GiB reply, {:.1} MB after a 2 GiB log line",
        after_body as f64 / 1e6,
        peak as f64 / 1e6
    );
    assert!(peak < 200_000_000, "peak RSS {peak} bytes");
    let (st, _) = s.request("DELETE", &format!("/v1/models/{id}"), Some(ADMIN), None);
    assert_eq!(st, 202);
    still_standing(&s);
}

/// A server whose tenants' code runs as per-tenant users from `uid_base` (its own
/// range: tests run at once, and a tenant's `kill -9 -1` reaches every process of its
/// user id), and a token of tenant alice.
fn sandboxed(uid_base: u32) -> (Server, String) {
    let s = Server::start_reachable(&format!(
        "sandbox: {{ mode: users, uid_base: {uid_base} }}\ncapacity: {{ cpus: 2 }}"
    ));
    let (_, h) = s.request("GET", "/healthz", None, None);
    assert_eq!(h["sandbox"], "users", "{h}");
    let alice = token(&s, "alice");
    (s, alice)
}

/// The user id a script printed as `uid=N`.
fn uid_in(log: &str) -> u32 {
    log.split_whitespace()
        .find_map(|w| w.strip_prefix("uid="))
        .unwrap_or_else(|| panic!("no uid= in {log}"))
        .parse()
        .unwrap()
}

/// What a sandboxed learner tries against the server and another tenant: reading the
/// admin token and the store, signalling the server and the other tenant's learner,
/// forging its exit record, reading the other tenant's files. All fail: the job ends
/// with the exit code it really had, the server and the other job run on.
#[test]
fn a_learner_cannot_snoop_signal_or_forge() {
    if !root_or_skip("a_learner_cannot_snoop_signal_or_forge") {
        return;
    }
    let (s, alice) = sandboxed(210_000);
    let bob = token(&s, "bob");
    let data = s.data();
    let server_pid = s.child.as_ref().unwrap().id();
    let bobs = s.submit_as(
        &bob,
        "name: bobs\nlearners: 1\ncpus: 0.5\nmax_restarts: 0\nframework:\n  name: custom\n  \
         command: 'echo secret > $CHECKPOINT_DIR/mine; echo started; sleep 120'\n",
    );
    s.wait_state(bobs, "PROCESSING", 30);
    wait_until(20, || s.log(bobs, 1).contains("started"), || s.log(bobs, 1));
    let bob_pid: i32 =
        std::fs::read_to_string(data.join(format!("jobs/{bobs}/state/attempt-1/learner-1/pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    let d = data.display();
    let script = format!(
        "echo uid=$(id -u); \
         cat {d}/admin-token && echo LEAK-TOKEN; \
         cat {d}/pharos.db > /dev/null && echo LEAK-DB; \
         ls {d}/archives && echo LEAK-ARCHIVES; \
         cat {d}/jobs/{bobs}/checkpoints/mine && echo LEAK-OTHER; \
         cat {d}/jobs/{bobs}/logs/learner-1.log && echo LEAK-OTHER-LOG; \
         kill -9 {server_pid} && echo KILLED-SERVER; \
         kill -9 -{bob_pid} && echo KILLED-OTHER; \
         kill -9 -1; \
         echo '{{\"code\":0,\"signal\":null}}' > $JOB_STATE_DIR/attempt-1/learner-1/exit.json && echo FORGED; \
         echo 999 > $JOB_STATE_DIR/attempt-1/learner-1/pid && echo FORGED-PID; \
         mv $JOB_STATE_DIR $HOME/x && echo MOVED-STATE; \
         ln -s /etc/passwd $RESULT_DIR/_pharos.json; \
         echo done; exit 3"
    );
    let manifest = format!(
        "name: mallory\nlearners: 1\ncpus: 0.5\nmax_restarts: 0\nframework:\n  name: custom\n  command: {}\n",
        serde_json::to_string(&script).unwrap()
    );
    let id = s.submit_as(&alice, &manifest);
    let j = s.wait_state(id, "FAILED", 60);
    let log = s.log(id, 1);
    assert!(log.contains("done"), "{log}");
    let uid = uid_in(&log);
    assert!(uid >= 200_000, "{log}");
    for leak in ["LEAK-", "KILLED-", "FORGED", "MOVED-STATE"] {
        assert!(!log.contains(leak), "{leak} in\n{log}");
    }
    // The exit code is the one the supervisor saw, not the forged 0.
    assert!(
        j["message"].as_str().unwrap_or("").contains("code 3") || s.events(id).contains("code 3"),
        "{j}\n{}",
        s.events(id)
    );
    // /etc/passwd was not overwritten by the server's results summary.
    assert!(
        !std::fs::read_to_string("/etc/passwd")
            .unwrap()
            .contains("training_id")
    );
    // Bob's learner still runs.
    assert_eq!(s.job(bobs)["state"], "PROCESSING");
    assert!(std::path::Path::new(&format!("/proc/{bob_pid}")).exists());
    // A second tenant's learner runs as another user.
    let uid_job = s.submit_as(
        &bob,
        "name: who\nlearners: 1\ncpus: 0.5\nframework:\n  name: custom\n  command: 'echo uid=$(id -u)'\n",
    );
    s.wait_state(uid_job, "COMPLETED", 60);
    let bob_uid = uid_in(&s.log(uid_job, 1));
    assert!(bob_uid >= 200_000 && bob_uid != uid, "{bob_uid} vs {uid}");
    still_standing(&s);
}

/// A replica runs as its tenant's user, in a working directory of its own, and cannot
/// read the server's secrets or its own replica records.
#[test]
fn a_replica_runs_as_its_tenant() {
    if !root_or_skip("a_replica_runs_as_its_tenant") {
        return;
    }
    let (s, alice) = sandboxed(220_000);
    let d = s.data().display().to_string();
    let script = format!(
        "echo uid=$(id -u) cwd=$(pwd); cat {d}/admin-token && echo LEAK-TOKEN; \
         ls {d}/services/peek/replicas && echo LEAK-RECORDS; \
         echo '{{}}' > {d}/services/peek/replicas/1.json && echo FORGED; echo done; sleep 60"
    );
    let spec = format!(
        "name: peek\ncommand: [/bin/sh, -c, {}]\nslo: {{ latency_s: 0.5 }}\nprocessing_time_s: 0.05\nmin_replicas: 1\nmax_replicas: 1\n",
        serde_json::to_string(&script).unwrap()
    );
    let (st, v) = apply_as(&s, &alice, &spec);
    assert_eq!(st, 201, "{v}");
    let log_path = s.data().join("services/peek/replicas/1.log");
    wait_until(
        20,
        || {
            std::fs::read_to_string(&log_path)
                .unwrap_or_default()
                .contains("done")
        },
        || std::fs::read_to_string(&log_path).unwrap_or_default(),
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(uid_in(&log) >= 200_000, "{log}");
    assert!(
        log.contains(&format!("cwd={d}/services/peek/work")),
        "{log}"
    );
    for leak in ["LEAK-", "FORGED"] {
        assert!(!log.contains(leak), "{leak} in\n{log}");
    }
    // The record is still the server's own, naming the real process.
    let rec: Value = serde_json::from_str(
        &std::fs::read_to_string(s.data().join("services/peek/replicas/1.json")).unwrap(),
    )
    .unwrap();
    assert!(rec["pid"].as_i64().unwrap() > 1, "{rec}");
    still_standing(&s);
}

/// Secrets and the store are owner-only on disk.
#[test]
fn secrets_and_the_store_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let s = Server::start("");
    for f in ["pharos.db", "pharos.db-wal", "server.lock"] {
        let mode = std::fs::metadata(s.data().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{f}: {mode:o}");
    }
    let mode = std::fs::metadata(s.data()).unwrap().permissions().mode();
    assert_eq!(mode & 0o066, 0, "data dir: {mode:o}");
    // The generated token (none configured): a server started without
    // PHAROS_ADMIN_TOKEN.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = std::process::Command::new(PHAROS)
        .args([
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path().join("d"))
        .env_remove("PHAROS_ADMIN_TOKEN")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let token = dir.path().join("d/admin-token");
    wait_until(20, || token.exists(), || "no admin token written".into());
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    let mode = std::fs::metadata(&token).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "admin-token: {mode:o}");
    still_standing(&s);
}

/// A learner that forks without end is held to its tenant's process limit: the forks
/// beyond it fail (the shell gives up: exit 2), the server goes on.
#[test]
fn a_fork_bomb_is_held_to_the_tenants_process_limit() {
    if !root_or_skip("a_fork_bomb_is_held_to_the_tenants_process_limit") {
        return;
    }
    let s = Server::start_reachable(
        "sandbox: { mode: users, max_processes: 40, uid_base: 230000 }\ncapacity: { cpus: 2 }",
    );
    let alice = token(&s, "alice");
    let script = "i=0; while [ $i -lt 200 ]; do sleep 30 & echo spawned=$i; i=$((i+1)); done";
    let manifest = format!(
        "name: bomb\nlearners: 1\ncpus: 0.5\nmax_restarts: 0\nframework:\n  name: custom\n  command: {}\n",
        serde_json::to_string(script).unwrap()
    );
    let id = s.submit_as(&alice, &manifest);
    let j = s.wait_state(id, "FAILED", 120);
    let log = s.log(id, 1);
    let spawned = log
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("spawned="))
        .filter_map(|n| n.parse::<usize>().ok())
        .max()
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        (20..40).contains(&spawned),
        "{spawned} forks before the limit of 40:\n{log}"
    );
    assert!(log.to_lowercase().contains("fork"), "{log}");
    assert!(j["message"].as_str().unwrap().contains("code 2"), "{j}");
    still_standing(&s);
}
