//! The Ray backend: a real `pharos server` with `backend: ray`.
//!
//! - Against a small fake of Ray's REST API (in this file): a job Ray loses, Ray
//!   unreachable and then back, Serve's config kept for applications pharos does not own,
//!   an application removed behind pharos's back.
//! - Against a real Ray head (`ray start --head` on loopback, stopped at the end) when
//!   PHAROS_TEST_RAY names the directory of the `ray` executable (`.ci/run` installs
//!   `ray[serve]` into a virtual environment and sets it; under CI the test fails
//!   without it): the example Serve application scaled up and back down by a Faro
//!   policy under a load replay, a training job run on Ray Jobs to COMPLETED with its
//!   logs through `pharos train logs`, the control latency.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::{ADMIN, PHAROS, Server, free_port, wait_until};

// ----- a fake of Ray's REST API -------------------------------------------------------

#[derive(Default)]
struct Fake {
    /// Jobs Ray knows, by submission id: their status.
    jobs: BTreeMap<String, String>,
    /// Forget every job at once (a restarted head).
    lose_jobs: bool,
    /// Serve's applications as deployed: config and replica count.
    apps: BTreeMap<String, (Value, u64)>,
    /// "METHOD PATH" of every call.
    calls: Vec<String>,
    /// The bodies of the PUTs of Serve's config.
    serve_puts: Vec<Value>,
    scales: Vec<(String, u64)>,
}

fn answer(fake: &Mutex<Fake>, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let mut f = fake.lock().unwrap();
    f.calls.push(format!("{method} {path}"));
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let path = path.split('?').next().unwrap_or("");
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        ("GET", ["api", "version"]) => (200, json!({"ray_version": "fake"})),
        // One node, the head on loopback.
        ("GET", ["api", "v0", "nodes"]) => (
            200,
            json!({"result": true, "data": {"result": {"total": 1, "result": [{
                "node_id": "f00d", "node_ip": "127.0.0.1", "is_head_node": true,
                "state": "ALIVE", "resources_total": {"CPU": 4.0, "node:127.0.0.1": 1.0},
            }]}}}),
        ),
        ("GET", ["api", "packages", ..]) => (404, json!("no such package")),
        ("PUT", ["api", "packages", ..]) => (200, Value::Null),
        ("POST", ["api", "jobs"]) => {
            let id = body["submission_id"].as_str().unwrap_or("").to_string();
            if f.jobs.contains_key(&id) {
                return (
                    400,
                    json!(format!("Job with submission_id {id} already exists.")),
                );
            }
            // `sleep` runs until stopped; anything else succeeds at once.
            let status = if body["entrypoint"]
                .as_str()
                .unwrap_or("")
                .starts_with("sleep")
            {
                "RUNNING"
            } else {
                "SUCCEEDED"
            };
            f.jobs.insert(id.clone(), status.into());
            (200, json!({"job_id": null, "submission_id": id}))
        }
        ("GET", ["api", "jobs", id]) => match f.jobs.get(*id) {
            Some(s) if !f.lose_jobs => (200, json!({"status": s, "driver_exit_code": 0})),
            _ => (404, json!(format!("Job {id} does not exist"))),
        },
        ("GET", ["api", "jobs", id, "logs"]) if f.jobs.contains_key(*id) && !f.lose_jobs => {
            (200, json!({"logs": "step=1 loss=0.5\nstep=2 loss=0.25\n"}))
        }
        ("GET", ["api", "serve", "applications"]) => {
            let apps: serde_json::Map<String, Value> = f
                .apps
                .iter()
                .map(|(name, (cfg, n))| {
                    let dep = cfg["deployments"][0]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    let replicas: Vec<Value> = (0..*n)
                        .map(|i| json!({"replica_id": format!("r{i}"), "state": "RUNNING"}))
                        .collect();
                    (
                        name.clone(),
                        json!({
                            "status": "RUNNING", "message": "",
                            "deployed_app_config": cfg,
                            "deployments": {dep: {"target_num_replicas": n, "replicas": replicas}},
                        }),
                    )
                })
                .collect();
            (200, json!({"applications": apps}))
        }
        ("PUT", ["api", "serve", "applications"]) => {
            f.serve_puts.push(body.clone());
            // Serve refuses an application it cannot import.
            if body["applications"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["import_path"].as_str().unwrap_or("").starts_with("bad"))
            {
                return (400, json!("ModuleNotFoundError: No module named 'bad'"));
            }
            let mut apps = BTreeMap::new();
            for a in body["applications"].as_array().into_iter().flatten() {
                let n = a["deployments"][0]["num_replicas"].as_u64().unwrap_or(1);
                apps.insert(a["name"].as_str().unwrap_or("").to_string(), (a.clone(), n));
            }
            f.apps = apps;
            (200, Value::Null)
        }
        ("POST", ["api", "v1", "applications", app, "deployments", _, "scale"]) => {
            let n = body["target_num_replicas"].as_u64().unwrap_or(0);
            f.scales.push((app.to_string(), n));
            match f.apps.get_mut(*app) {
                Some(a) => {
                    a.1 = n;
                    (200, json!({"message": "ok"}))
                }
                None => (404, json!({"error": "Application or Deployment not found"})),
            }
        }
        ("POST", ["api", "jobs", id, "stop"]) => {
            if let Some(s) = f.jobs.get_mut(*id) {
                *s = "STOPPED".into();
            }
            (200, json!({"stopped": true}))
        }
        ("DELETE", ["api", "jobs", _]) => (200, json!({"deleted": true})),
        _ => (404, json!("not found")),
    }
}

/// Serves the fake on `listener` until the test ends.
fn serve_fake(listener: TcpListener) -> Arc<Mutex<Fake>> {
    let fake = Arc::new(Mutex::new(Fake::default()));
    let f = fake.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let f = f.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let mut it = line.split_whitespace();
                let (method, path) = (
                    it.next().unwrap_or("").to_string(),
                    it.next().unwrap_or("").to_string(),
                );
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let (status, v) = answer(&f, &method, &path, &body);
                let text = if v.is_null() {
                    String::new()
                } else {
                    v.to_string()
                };
                let mut s = stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
            });
        }
    });
    fake
}

/// The server's installation id (part of its Ray submission ids).
fn inst(s: &Server) -> String {
    std::fs::read_to_string(s.data().join("installation-id"))
        .unwrap()
        .trim()
        .to_string()
}

fn ray_config(address_port: u16, serve_port: u16, extra: &str) -> String {
    format!(
        "backend: ray\nray: {{address: 'http://127.0.0.1:{address_port}', serve_url: 'http://127.0.0.1:{serve_port}', timeout_s: 2}}\ncapacity: {{cpus: 4}}\n{extra}"
    )
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/ray")
}

fn ray_spec(name: &str, extra: &str) -> String {
    format!(
        "name: {name}\nray: {{import_path: 'model:app', deployment: Model, working_dir: '{}'}}\n\
         cpus: 0.5\nslo: {{latency_s: 0.1}}\nprocessing_time_s: 0.02\n{extra}\n",
        examples().join("serve").display()
    )
}

const ONE_LEARNER: &str = "name: on-ray\nlearners: 1\ncpus: 1\nmax_restarts: 1\n\
    framework: {name: custom, version: '1', command: python train.py}\n\
    evaluation_metrics: {type: regex, regex: 'step=(?P<step>\\d+) loss=(?P<loss>[0-9.]+)'}\n";

#[test]
fn a_job_ray_loses_is_restarted_then_fails_saying_so() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = serve_fake(listener);
    fake.lock().unwrap().lose_jobs = true;
    let s = Server::start(&ray_config(port, free_port(), ""));
    let id = s.submit(ONE_LEARNER);
    let j = s.wait_state(id, "FAILED", 60);
    let events = s.events(id);
    assert!(
        events
            .contains("learner 1 lost: the engine no longer knows it (attempt 1); restart 1 of 1"),
        "{events}"
    );
    assert!(j["message"].as_str().unwrap().contains("lost"), "{j}");
    let f = fake.lock().unwrap();
    // Each attempt submitted once, under its own submission id.
    let submitted: Vec<&String> = f.jobs.keys().collect();
    assert_eq!(
        submitted,
        [
            &format!("pharos-{}-{id}-a1-l1", inst(&s)),
            &format!("pharos-{}-{id}-a2-l1", inst(&s))
        ]
    );
}

#[test]
fn ray_unreachable_is_an_event_and_a_kept_state_until_it_answers() {
    // Nothing listens on the port at first.
    let port = free_port();
    let s = Server::start(&ray_config(port, free_port(), ""));
    let id = s.submit(ONE_LEARNER);
    let (status, v) = s.apply(&ray_spec("m", "min_replicas: 1\nmax_replicas: 3"));
    assert_eq!(status, 201, "{v}");
    wait_until(
        20,
        || {
            s.events(id).contains("engine-unavailable")
                && s.service_events("m").contains("ray-unavailable")
        },
        || format!("{}\n{}", s.events(id), s.service_events("m")),
    );
    // The job keeps its state; the server answers.
    assert_eq!(s.job(id)["state"], "PENDING", "{}", s.events(id));
    assert_eq!(s.request("GET", "/healthz", None, None).0, 200);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.job(id)["state"], "PENDING");
    // Ray comes up (after the first back-offs): both go on by themselves.
    let fake = serve_fake(TcpListener::bind(("127.0.0.1", port)).unwrap());
    // An application pharos does not own is on the cluster already.
    let other = json!({"name": "theirs", "route_prefix": "/theirs", "import_path": "a:b",
                       "deployments": [{"name": "D", "num_replicas": 2}]});
    fake.lock()
        .unwrap()
        .apps
        .insert("theirs".into(), (other.clone(), 2));
    s.wait_state(id, "COMPLETED", 60);
    assert!(
        s.events(id).contains("the engine answers again"),
        "{}",
        s.events(id)
    );
    assert!(
        s.log(id, 1).contains("step=2 loss=0.25"),
        "logs copied from Ray: {}",
        s.log(id, 1)
    );
    let (_, m) = s.request(
        "GET",
        &format!("/v1/models/{id}/metrics"),
        Some(ADMIN),
        None,
    );
    assert_eq!(m["last"]["loss"], 0.25, "{m}");
    s.wait_service("m", 60, "deployed with a ready replica", |v| {
        v["ready_replicas"] == 1
    });
    let ev = s.service_events("m");
    assert!(
        ev.contains("ray-available") && ev.contains("deployed to Ray Serve as /m"),
        "{ev}"
    );
    {
        let f = fake.lock().unwrap();
        let put = f.serve_puts.last().unwrap();
        let names: Vec<&str> = put["applications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"m") && names.contains(&"theirs"), "{put}");
        assert_eq!(
            put["applications"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["name"] == "theirs")
                .unwrap(),
            &other,
            "another's application is sent back as Serve had it"
        );
        let app = put["applications"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "m")
            .unwrap();
        assert_eq!(app["external_scaler_enabled"], true);
        assert!(
            app["runtime_env"]["working_dir"]
                .as_str()
                .unwrap()
                .starts_with("gcs://_ray_pkg_")
        );
    }
    // Removed behind pharos's back: deployed again, with an event.
    fake.lock().unwrap().apps.remove("m");
    wait_until(
        20,
        || s.service_events("m").contains("redeployed"),
        || s.service_events("m"),
    );
    assert!(fake.lock().unwrap().apps.contains_key("m"));
    // A new target goes through the external scaler.
    let (status, v) = s.apply(&ray_spec("m", "min_replicas: 3\nmax_replicas: 3"));
    assert_eq!(status, 200, "{v}");
    s.wait_service("m", 30, "at 3 replicas", |v| v["ready_replicas"] == 3);
    assert!(fake.lock().unwrap().scales.contains(&("m".into(), 3)));
    // Deleted: the application leaves Serve's config, the other stays.
    let (ok, _, err) = s.cli(&["delete", "service", "m"], ADMIN);
    assert!(ok, "{err}");
    wait_until(
        20,
        || !fake.lock().unwrap().apps.contains_key("m"),
        || "the application still in Serve".into(),
    );
    assert!(fake.lock().unwrap().apps.contains_key("theirs"));
}

#[test]
fn a_halt_stops_the_ray_job_and_a_restarted_server_adopts_what_runs() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = serve_fake(listener);
    let mut s = Server::start(&ray_config(port, free_port(), ""));
    let id = s.submit(&ONE_LEARNER.replace("command: python train.py", "command: sleep 600"));
    s.wait_state(id, "PROCESSING", 30);
    let (status, v) = s.apply(&ray_spec("m", "min_replicas: 2\nmax_replicas: 2"));
    assert_eq!(status, 201, "{v}");
    s.wait_service("m", 30, "at 2 replicas", |v| v["ready_replicas"] == 2);
    let puts = fake.lock().unwrap().serve_puts.len();
    // Restarted: the job is still PROCESSING (not submitted again), the application is
    // adopted as Serve runs it (not deployed again).
    s.kill();
    s.spawn();
    wait_until(
        20,
        || s.service_events("m").contains("adopted"),
        || s.service_events("m"),
    );
    assert_eq!(s.service("m")["ready_replicas"], 2);
    assert_eq!(fake.lock().unwrap().serve_puts.len(), puts, "no new deploy");
    assert_eq!(s.job(id)["state"], "PROCESSING");
    let (ok, _, err) = s.cli(&["train", "halt", &id.to_string()], ADMIN);
    assert!(ok, "{err}");
    s.wait_state(id, "HALTED", 30);
    let f = fake.lock().unwrap();
    assert_eq!(f.jobs.len(), 1, "submitted once: {:?}", f.jobs);
    assert_eq!(
        f.jobs[&format!("pharos-{}-{id}-a1-l1", inst(&s))],
        "STOPPED"
    );
    assert!(f.calls.contains(&format!(
        "POST /api/jobs/pharos-{}-{id}-a1-l1/stop",
        inst(&s)
    )));
}

#[test]
fn an_application_serve_refuses_is_said_once_and_holds_up_no_other() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = serve_fake(listener);
    let s = Server::start(&ray_config(port, free_port(), ""));
    let (status, v) = s.apply(&ray_spec("good", "min_replicas: 1\nmax_replicas: 1"));
    assert_eq!(status, 201, "{v}");
    s.wait_service("good", 30, "ready", |v| v["ready_replicas"] == 1);
    let (status, v) = s.apply(&ray_spec("broken", "").replace("model:app", "bad:app"));
    assert_eq!(status, 201, "{v}");
    wait_until(
        20,
        || {
            s.service_events("broken")
                .contains("Serve refused the application")
        },
        || s.service_events("broken"),
    );
    // Not sent again pass after pass; the other service is still scaled.
    let puts = fake.lock().unwrap().serve_puts.len();
    let (status, v) = s.apply(&ray_spec("good", "min_replicas: 2\nmax_replicas: 2"));
    assert_eq!(status, 200, "{v}");
    s.wait_service("good", 30, "at 2 replicas", |v| v["ready_replicas"] == 2);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        fake.lock().unwrap().serve_puts.len() <= puts + 1,
        "deploys repeated"
    );
    assert_eq!(
        s.service_events("broken").matches("Serve refused").count(),
        1
    );
}

#[test]
fn specs_for_the_other_backend_are_refused() {
    let s = Server::start(&ray_config(free_port(), free_port(), ""));
    let (status, v) = s.apply(
        "name: local\ncommand: [sleep, '60']\nslo: {latency_s: 0.1}\nprocessing_time_s: 0.02\n",
    );
    assert_eq!(status, 400, "{v}");
    assert!(
        v.to_string()
            .contains("ray: this server runs services on Ray"),
        "{v}"
    );
    let (status, v) = s.apply(&ray_spec("bad-dir", "").replace("/serve'", "/no-such-dir'"));
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("ray.working_dir"), "{v}");
    // Code directories that overlap the server's data directory (its tokens, store and
    // other tenants' jobs) are refused.
    for dir in [
        s.data(),
        s.data().join("jobs"),
        std::path::PathBuf::from("/"),
    ] {
        std::fs::create_dir_all(&dir).unwrap();
        let spec = ray_spec("leak", "").replace(
            &examples().join("serve").display().to_string(),
            &dir.display().to_string(),
        );
        let (status, v) = s.apply(&spec);
        assert_eq!(status, 400, "{}: {v}", dir.display());
        assert!(
            v.to_string()
                .contains("overlaps the server's data directory"),
            "{v}"
        );
    }
    let local = Server::start("");
    let (status, v) = local.apply(&ray_spec("m", ""));
    assert_eq!(status, 400, "{v}");
    assert!(
        v.to_string().contains("runs services as local processes"),
        "{v}"
    );
}

// ----- a real Ray head ---------------------------------------------------------------

/// `ray start --head` on loopback; `ray stop` when dropped.
struct RayHead {
    bin: PathBuf,
    dashboard: u16,
    serve: u16,
}

impl RayHead {
    fn start(bin: PathBuf) -> RayHead {
        let (gcs, dashboard, serve) = (free_port(), free_port(), free_port());
        let out = Command::new(bin.join("ray"))
            .args([
                "start",
                "--head",
                "--node-ip-address",
                "127.0.0.1",
                "--dashboard-host",
                "127.0.0.1",
            ])
            .args([
                "--port",
                &gcs.to_string(),
                "--dashboard-port",
                &dashboard.to_string(),
            ])
            .args(["--num-cpus", "4", "--disable-usage-stats"])
            .env("PATH", common::path_with(&bin))
            .output()
            .expect("running ray start");
        assert!(
            out.status.success(),
            "ray start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        RayHead {
            bin,
            dashboard,
            serve,
        }
    }

    fn get(&self, path: &str) -> Value {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let text = agent
            .get(format!("http://127.0.0.1:{}{path}", self.dashboard))
            .call()
            .map(|r| r.into_body().read_to_string().unwrap_or_default())
            .unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Replicas of the application's deployment that Ray reports RUNNING, and its
    /// target.
    fn replicas(&self, app: &str) -> (usize, u64) {
        let d = &self.get("/api/serve/applications/")["applications"][app]["deployments"]["Model"];
        let running = d["replicas"]
            .as_array()
            .map(|r| r.iter().filter(|r| r["state"] == "RUNNING").count())
            .unwrap_or(0);
        (running, d["target_num_replicas"].as_u64().unwrap_or(0))
    }
}

impl Drop for RayHead {
    fn drop(&mut self) {
        let _ = Command::new(self.bin.join("ray"))
            .args(["stop", "--force"])
            .env("PATH", common::path_with(&self.bin))
            .output();
    }
}

fn ray_bin() -> Option<PathBuf> {
    match std::env::var_os("PHAROS_TEST_RAY") {
        Some(d) => Some(PathBuf::from(d)),
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs the Ray test: PHAROS_TEST_RAY must name the directory of `ray`"
            );
            eprintln!("skipped: set PHAROS_TEST_RAY to the directory of the `ray` executable");
            None
        }
    }
}

#[test]
fn serve_and_jobs_on_a_real_ray_head() {
    let Some(bin) = ray_bin() else { return };
    let ray = RayHead::start(bin);
    // A Faro policy that reacts within seconds: its reactive loop adds replicas while
    // the mean latency is over the SLO; its predictive step (every minute, on the last
    // complete minute's arrivals) sizes the service for the load, and to its minimum
    // when the load is gone (no charge for removing a replica, as in Faro: idle
    // replicas go back even when nobody else needs the capacity).
    let policy = "autoscaler:\n  policy: faro-fairsum\n  params: {interval_s: 1, reactive_look_back_s: 3, \
        reactive_checks: 2, first_predictive_s: 60, predictive_interval_s: 60, prediction: none, \
        spread_leftover: false, move_cost: 0}\n";
    let s = Server::start(&ray_config(ray.dashboard, ray.serve, policy));
    // The example application, through the CLI (its working_dir is relative to the file).
    let (ok, out, err) = s.cli(
        &[
            "apply",
            "-f",
            examples().join("model.yaml").to_str().unwrap(),
        ],
        ADMIN,
    );
    assert!(ok, "{out}{err}");
    let v = s.wait_service("model", 120, "serving on Ray", |v| v["ready_replicas"] == 1);
    assert_eq!(ray.replicas("model"), (1, 1), "Ray reports one replica");
    let url = v["url"].as_str().unwrap().to_string();

    // A training job on Ray Jobs meanwhile.
    let (ok, out, err) = s.cli(
        &[
            "train",
            "submit",
            examples().join("train.yaml").to_str().unwrap(),
            examples().join("train").to_str().unwrap(),
        ],
        ADMIN,
    );
    assert!(ok, "{out}{err}");

    // The load: 60 requests/s for 40 s (1.2x what one replica doing 20 ms of CPU work
    // a request can serve at all).
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.csv");
    std::fs::write(&trace, "job,minute,requests\nmodel,0,2400\n").unwrap();
    let load = Command::new(PHAROS)
        .args([
            "load",
            "--trace",
            trace.to_str().unwrap(),
            "--url",
            &format!("{url}/infer"),
        ])
        .args([
            "--speedup",
            "1.5",
            "--slo-ms",
            "100",
            "--timeout-s",
            "5",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut most = (0, 0);
    while t0.elapsed() < Duration::from_secs(45) {
        let r = ray.replicas("model");
        most = most.max(r);
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = load.wait_with_output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(
        most.0 >= 2,
        "Ray never ran more than {} replica(s) under the load: {}\n{}",
        most.0,
        s.service_events("model"),
        s.server_log()
    );
    eprintln!("load: {}", report["summary"]);
    let served = report["summary"]["requests"].as_u64().unwrap_or(0)
        - report["summary"]["dropped"].as_u64().unwrap_or(0);
    assert!(served > 1500, "{report}");

    // The job finished on Ray; its logs are pharos's.
    s.wait_state(1, "COMPLETED", 120);
    let (ok, logs, err) = s.cli(&["train", "logs", "training-1"], ADMIN);
    assert!(ok, "{err}");
    assert!(
        logs.contains("step=60 loss=") && logs.contains("done"),
        "{logs}"
    );
    let (_, m) = s.request("GET", "/v1/models/1/metrics", Some(ADMIN), None);
    assert!(m["last"]["accuracy"].as_f64().unwrap_or(0.0) > 0.9, "{m}");
    assert_eq!(
        ray.get(&format!("/api/jobs/pharos-{}-1-a1-l1", inst(&s)))["status"],
        "SUCCEEDED"
    );

    // Back down once a complete minute shows the load gone.
    let t0 = Instant::now();
    loop {
        let r = ray.replicas("model");
        if r == (1, 1) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(150),
            "not back to one replica on Ray: {r:?}\n{}",
            s.service_events("model")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let v = s.service("model");
    assert_eq!(v["target_replicas"], 1);
    let lat = &v["control_latency_s"];
    assert!(lat["count"].as_u64().unwrap() >= 1, "{v}");
    eprintln!(
        "control latency (decision to serving on Ray), s: {}",
        lat["all"]
    );
    let (_, a) = s.request("GET", "/v1/autoscaler", Some(ADMIN), None);
    eprintln!(
        "replica state age at decisions, s: {}",
        a["replica_state_age_s"]
    );
    assert!(
        a["replica_state_age_s"]["count"].as_u64().unwrap() > 0,
        "{a}"
    );

    // Removed behind pharos's back (Serve's config without it): deployed again.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let r = agent
        .put(format!(
            "http://127.0.0.1:{}/api/serve/applications/",
            ray.dashboard
        ))
        .content_type("application/json")
        .send(json!({"applications": []}).to_string())
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    s.wait_service("model", 120, "deployed again", |_| {
        s.service_events("model").contains("redeployed")
    });
    wait_until(
        120,
        || ray.replicas("model").0 >= 1,
        || s.service_events("model"),
    );

    // Deleted through pharos: gone from Ray.
    let (ok, _, err) = s.cli(&["delete", "service", "model"], ADMIN);
    assert!(ok, "{err}");
    wait_until(
        60,
        || ray.get("/api/serve/applications/")["applications"]["model"].is_null(),
        || "the application still in Serve".into(),
    );

    // A function graph on Ray: each function a Serve application of its own (the
    // example model), pharos routing every request from one to the next and back to
    // the caller through the graph's entry URL.
    let serve = examples().join("serve");
    let function = |name: &str, extra: &str| {
        format!(
            "  - name: {name}\n    ray: {{import_path: 'model:app', deployment: Model, working_dir: '{}'}}\n    \
             env: {{SERVICE_MS: '5'}}\n    cpus: 0.5\n    processing_time_s: 0.005\n    \
             min_replicas: 1\n    max_replicas: 1\n{extra}",
            serve.display()
        )
    };
    let graph = dir.path().join("pair.yaml");
    std::fs::write(
        &graph,
        format!(
            "kind: graph\nname: pair\nfunctions:\n{}{}",
            function("front", "    routes: [{to: back, p: 1.0}]\n"),
            function("back", "")
        ),
    )
    .unwrap();
    let (ok, out, err) = s.cli(&["apply", "-f", graph.to_str().unwrap()], ADMIN);
    assert!(ok, "{out}{err}");
    let status = || s.request("GET", "/v1/graphs/pair", Some(ADMIN), None).1;
    wait_until(
        180,
        || {
            status()["functions"]
                .as_array()
                .is_some_and(|f| f.len() == 2 && f.iter().all(|f| f["ready_replicas"] == 1))
        },
        || format!("{}\n{}", status(), s.server_log()),
    );
    for f in ["pair.front", "pair.back"] {
        assert_eq!(ray.replicas(f), (1, 1), "{f} on Ray");
    }
    let entry = status()["url"].as_str().unwrap().to_string();
    for _ in 0..20 {
        let r = agent.get(format!("{entry}/infer")).call().unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let v = status();
    assert_eq!(v["counters"]["completions"], 20, "{v}");
    for f in v["functions"].as_array().unwrap() {
        assert_eq!(f["counters"]["completions"], 20, "{v}");
    }
    let (ok, _, err) = s.cli(&["delete", "graph", "pair"], ADMIN);
    assert!(ok, "{err}");
    wait_until(
        60,
        || {
            let apps = &ray.get("/api/serve/applications/")["applications"];
            apps["pair.front"].is_null() && apps["pair.back"].is_null()
        },
        || "the graph's applications still in Serve".into(),
    );
}
