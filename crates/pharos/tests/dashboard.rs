//! The dashboard in a real browser: a `pharos server` with two tenants' jobs and a
//! service, and `tests/browser/dashboard.mjs` driving Debian's headless Chromium through
//! playwright-core (log in, a running job's logs update, halt it, a service's replica
//! chart, a simulation result, one tenant never sees the other's work).
//!
//! Needs /usr/bin/chromium, node and `npm ci` in tests/browser (`.ci/run` provides them;
//! under CI the test fails without them, elsewhere it says it is skipped). Screenshots go
//! to PHAROS_SCREENSHOTS (docs/screenshots to refresh the committed ones), else to a
//! temporary directory.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

mod common;
use common::{ADMIN, REPLICA, Server};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The browser, node and playwright-core, or why not.
fn browser_tools() -> Result<(), String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !std::path::Path::new(&chromium).exists() {
        return Err(format!("no {chromium}"));
    }
    if !repo()
        .join("tests/browser/node_modules/playwright-core")
        .is_dir()
    {
        return Err("no tests/browser/node_modules (npm ci --prefix tests/browser)".into());
    }
    Command::new("node")
        .arg("--version")
        .output()
        .map_err(|e| format!("no node: {e}"))?;
    Ok(())
}

fn manifest(name: &str, command: &str) -> String {
    format!(
        "name: {name}\nlearners: 1\ncpus: 0.5\nmemory: 64MiB\nframework:\n  name: custom\n  command: '{command}'\n\
         evaluation_metrics:\n  type: regex\n  regex: 'step=(?P<step>\\d+) loss=(?P<loss>[0-9.e+-]+)'\n"
    )
}

impl Server {
    fn token_for(&self, tenant: &str) -> String {
        let (st, t) = self.request(
            "POST",
            "/v1/tokens",
            Some(ADMIN),
            Some((
                "application/json",
                json!({"tenant": tenant}).to_string().into_bytes(),
            )),
        );
        assert_eq!(st, 201, "{t}");
        t["token"].as_str().unwrap().to_string()
    }
}

#[test]
fn the_dashboard_in_a_browser() {
    if let Err(why) = browser_tools() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs the browser test: {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    // Faro's predictive step every 4 s, so that the page has decisions to explain.
    let s = Server::start(
        "capacity: {cpus: 4}\nhistory_interval_s: 0.5\nautoscaler:\n  policy: faro-fairsum\n  \
         params: {interval_s: 1, first_predictive_s: 2, predictive_interval_s: 4, prediction: none}\n",
    );
    let ta = s.token_for("team-a");
    let tb = s.token_for("team-b");
    let a = s.submit_as(
        &ta,
        &manifest("long-a", "pharos-sgd --steps 100000 --sleep-ms 100"),
    );
    let b = s.submit_as(&tb, &manifest("short-b", "pharos-sgd --steps 20"));
    let spec = format!(
        "name: web-a\ncommand: ['{REPLICA}', --port, $PORT, --service-ms, '5']\ncpus: 0.5\n\
         slo: {{latency_s: 0.1}}\nprocessing_time_s: 0.005\nmin_replicas: 1\nmax_replicas: 3\n"
    );
    let (st, v) = s.put_yaml("/v1/services/web-a", &ta, &spec);
    assert_eq!(st, 201, "{v}");
    let graph = format!(
        "kind: graph\nname: g-a\nfunctions:\n  - name: only\n    command: ['{REPLICA}', --port, $PORT, --service-ms, '5']\n    \
         cpus: 0.5\n    processing_time_s: 0.005\n"
    );
    let (st, v) = s.put_yaml("/v1/graphs/g-a", &ta, &graph);
    assert_eq!(st, 201, "{v}");
    s.wait_state(a, "PROCESSING", 30);
    s.wait_service("web-a", 30, "ready", |v| v["ready_replicas"] == 1);
    // Requests to the service while the test runs, so that its charts have something
    // to show.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, url) = (
            stop.clone(),
            format!("{}/infer", s.service("web-a")["url"].as_str().unwrap()),
        );
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut k = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = agent.get(&url).call();
                k += 1;
                // A burst every few seconds.
                std::thread::sleep(Duration::from_millis(if (k / 50).is_multiple_of(3) {
                    5
                } else {
                    30
                }));
            }
        })
    };
    // A few samples of history for the charts.
    let t0 = Instant::now();
    loop {
        let (_, h) = s.request("GET", "/v1/history", Some(ADMIN), None);
        if h["services"]["web-a"]
            .as_array()
            .is_some_and(|p| p.len() >= 12)
        {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{h}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let shots = std::env::var_os("PHAROS_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("pharos-screenshots-{}", std::process::id()))
        });
    let out = Command::new("node")
        .arg(repo().join("tests/browser/dashboard.mjs"))
        .env("PHAROS_URL", &s.url)
        .env("TOKEN_A", &ta)
        .env("TOKEN_B", &tb)
        .env("JOB_A", a.to_string())
        .env("JOB_B", b.to_string())
        .env("SERVICE", "web-a")
        .env("GRAPH", "g-a")
        .env(
            "RESULTS",
            repo().join("docs/results/faro-10jobs/results.json"),
        )
        .env(
            "RESULTS_TRAINING",
            repo().join("docs/results/training/philly-0e4a51/results.json"),
        )
        .env(
            "RESULTS_GRAPHS",
            repo().join("docs/results/graphs/chain/results.json"),
        )
        .env("SHOTS", &shots)
        .output()
        .expect("running node");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}\nscreenshots: {}", shots.display());
    assert!(
        out.status.success(),
        "the browser test failed:\n{text}\nserver:\n{}",
        s.server_log()
    );
    // What the page did happened on the server: the job was halted.
    assert_eq!(s.job(a)["state"], "HALTED");
}
