//! pharos on a real multi-host Ray cluster, on this machine: a Ray head and a Ray worker,
//! each in a network namespace of its own with its own address on a bridge (made by
//! the test and removed after), and the pharos server in the host's namespace as the
//! third host. Each Ray node has a private /tmp (a tmpfs in a mount namespace of its
//! own), so it sees neither the server's data directory (under /tmp) nor the other
//! node's files; code reaches the nodes only as Ray packages, and checkpoints through
//! the one directory every host mounts (`ray.storage`). The cluster runs Ray's token
//! authentication, which pharos reads from `ray.token_file`.
//!
//! Shown: a service scaled 1 -> 3 -> 1 with replicas on both nodes; a 2-learner gang
//! spread over both nodes; the worker node killed mid-run (every process of its
//! namespace): the service's replicas come back on the head and its router accounts
//! for every failed request, the capacity pharos gives out falls to the head's (and
//! rises again with the worker), the gang's events name the lost node, it waits for a
//! second node and, once the worker is back, resumes from its checkpoint and
//! completes; its logs and metrics come back through Ray's API.
//!
//! Needs root (namespaces), `ip`, `unshare` and PHAROS_TEST_RAY (the directory of the
//! `ray` executable, as for `tests/ray.rs`); under CI it fails without them, elsewhere
//! it is skipped with a message.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{ADMIN, Server, wait_until};

fn skip_or_fail(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI runs the multi-host Ray test: {why}"
    );
    eprintln!("skipped: {why}");
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A bridge on the host and one network namespace per Ray node, each with a veth on
/// the bridge; removed when dropped.
struct Net {
    bridge: String,
    namespaces: Vec<String>,
    /// 10.<a>.<b>: the /24 of the bridge (.1) and the nodes (.2, .3 ...).
    prefix: String,
}

impl Net {
    fn new(nodes: &[&str]) -> Result<Net, String> {
        let pid = std::process::id();
        let mut net = Net {
            bridge: format!("phb{pid}"),
            namespaces: Vec::new(),
            prefix: format!("10.{}.{}", 200 + pid % 50, (pid / 50) % 250),
        };
        run("ip", &["link", "add", &net.bridge, "type", "bridge"])?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}.1/24", net.prefix),
                "dev",
                &net.bridge,
            ],
        )?;
        run("ip", &["link", "set", &net.bridge, "up"])?;
        for (i, node) in nodes.iter().enumerate() {
            let ns = format!("pharos-{pid}-{node}");
            run("ip", &["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            let host_end = format!("ph{pid}{}", &node[..1]);
            run(
                "ip",
                &[
                    "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            run(
                "ip",
                &["link", "set", &host_end, "master", &net.bridge, "up"],
            )?;
            let addr = format!("{}/24", net.ip(i));
            for args in [
                vec!["link", "set", "lo", "up"],
                vec!["addr", "add", &addr, "dev", "eth0"],
                vec!["link", "set", "eth0", "up"],
            ] {
                let mut full = vec!["netns", "exec", &ns, "ip"];
                full.extend(args);
                run("ip", &full)?;
            }
        }
        Ok(net)
    }

    /// The address of node `i`.
    fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, i + 2)
    }

    /// Kills every process in namespace `i` (a lost host).
    fn kill_all(&self, i: usize) {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.namespaces[i]])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        for pid in out.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for i in 0..self.namespaces.len() {
            self.kill_all(i);
        }
        std::thread::sleep(Duration::from_millis(300));
        for ns in &self.namespaces {
            let _ = run("ip", &["netns", "del", ns]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}

/// The Ray cluster: the head in namespace 0, the worker in namespace 1.
struct Cluster {
    bin: PathBuf,
    net: Net,
    token: String,
    dir: PathBuf,
    children: Vec<Child>,
}

const HEAD: usize = 0;
const WORKER: usize = 1;

impl Cluster {
    fn start(bin: PathBuf, dir: &Path) -> Result<Cluster, String> {
        let net = Net::new(&["head", "worker"])?;
        let token: String = (0..4)
            .map(|i| {
                format!(
                    "{:016x}",
                    std::process::id() as u64 * 7919 + i * 104729 + nanos()
                )
            })
            .collect();
        let mut c = Cluster {
            bin,
            net,
            token,
            dir: dir.to_path_buf(),
            children: Vec::new(),
        };
        c.join(HEAD)?;
        c.join(WORKER)?;
        Ok(c)
    }

    /// Starts node `i` until it is alive, up to three times: a Ray node starting on a
    /// busy machine sometimes gives up waiting for its own GCS record (its client
    /// server times out) and exits; a fresh start then succeeds.
    fn join(&mut self, i: usize) -> Result<(), String> {
        let mut last = String::new();
        for attempt in 1..=3 {
            self.start_node(i)?;
            match self.wait_nodes(i + 1, 90) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    eprintln!("Ray node {i} did not join (start {attempt} of 3): {e}");
                    last = e;
                    self.net.kill_all(i);
                    std::thread::sleep(Duration::from_secs(2));
                }
            }
        }
        Err(last)
    }

    /// `ray start --block` in node `i`'s namespace, with a private /tmp.
    fn start_node(&mut self, i: usize) -> Result<(), String> {
        let ip = self.net.ip(i);
        let ray = self.bin.join("ray");
        let mut args = format!(
            "{} start --node-ip-address {ip} --num-cpus 3 --disable-usage-stats --block",
            ray.display()
        );
        if i == HEAD {
            args += " --head --port 6379 --dashboard-host 0.0.0.0 --dashboard-port 8265";
        } else {
            args += &format!(" --address {}:6379", self.net.ip(HEAD));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node-{i}.log")))
            .map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.net.namespaces[i]])
            .args(["unshare", "--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!("mount -t tmpfs tmpfs /tmp && exec {args}"))
            .env("RAY_AUTH_MODE", "token")
            .env("RAY_AUTH_TOKEN", &self.token)
            .env("PATH", common::path_with(&self.bin))
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting Ray node {i}: {e}"))?;
        self.children.push(child);
        Ok(())
    }

    fn dashboard(&self) -> String {
        format!("http://{}:8265", self.net.ip(HEAD))
    }

    fn get(&self, path: &str) -> Value {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        agent
            .get(format!("{}{path}", self.dashboard()))
            .header("authorization", &format!("Bearer {}", self.token))
            .call()
            .ok()
            .and_then(|r| r.into_body().read_to_string().ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    }

    /// The addresses of the alive nodes.
    fn alive(&self) -> Vec<String> {
        let v = self.get("/api/v0/nodes?limit=100");
        let mut ips: Vec<String> = v["data"]["result"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["state"] == "ALIVE")
            .filter_map(|n| n["node_ip"].as_str().map(String::from))
            .collect();
        ips.sort();
        ips
    }

    fn wait_nodes(&self, n: usize, secs: u64) -> Result<(), String> {
        let t0 = Instant::now();
        while self.alive().len() != n {
            if t0.elapsed() > Duration::from_secs(secs) {
                return Err(format!(
                    "{n} Ray node(s) not alive after {secs} s: {:?}\n{}",
                    self.alive(),
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(())
    }

    fn logs(&self) -> String {
        (0..2)
            .map(|i| {
                let t = std::fs::read_to_string(self.dir.join(format!("node-{i}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = t.lines().rev().take(15).collect();
                format!(
                    "node {i}:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The address of the node Ray ran the driver of job `submission` on (as Ray says,
    /// not as pharos chose).
    fn driver_ip(&self, submission: &str) -> String {
        let job = self.get(&format!("/api/jobs/{submission}"));
        let id = job["driver_node_id"].as_str().unwrap_or("").to_string();
        let v = self.get("/api/v0/nodes?limit=100");
        v["data"]["result"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["node_id"] == id.as_str())
            .and_then(|n| n["node_ip"].as_str())
            .unwrap_or("")
            .to_string()
    }

    /// The node addresses of the RUNNING replicas of `app`, and its target.
    fn replicas(&self, app: &str) -> (Vec<String>, u64) {
        let d = &self.get("/api/serve/applications/")["applications"][app]["deployments"]["Model"];
        let mut ips: Vec<String> = d["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["state"] == "RUNNING")
            .filter_map(|r| r["node_ip"].as_str().map(String::from))
            .collect();
        ips.sort();
        (ips, d["target_num_replicas"].as_u64().unwrap_or(0))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.net.namespaces.len() {
            self.net.kill_all(i);
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 ^ d.as_secs())
        .unwrap_or(0)
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/ray")
}

fn service(replicas: u32) -> String {
    format!(
        "name: model\nray: {{import_path: 'model:app', deployment: Model, working_dir: '{}'}}\n\
         env: {{SERVICE_MS: '20'}}\ncpus: 0.5\nslo: {{latency_s: 0.5}}\nprocessing_time_s: 0.02\n\
         max_concurrent: 1\nmin_replicas: {replicas}\nmax_replicas: {replicas}\n",
        examples().join("serve").display()
    )
}

const GANG: &str = "name: spread-gang\nlearners: 2\ncpus: 1\nmax_restarts: 3\nplacement: spread\n\
    framework: {name: custom, version: '1', command: python train.py --steps 400 --sleep-ms 150}\n\
    evaluation_metrics: {type: regex, regex: 'step=(?P<step>\\d+) loss=(?P<loss>[0-9.e+-]+) accuracy=(?P<accuracy>[0-9.]+)'}\n";

#[test]
fn ray_multihost() {
    let Some(bin) = std::env::var_os("PHAROS_TEST_RAY").map(PathBuf::from) else {
        return skip_or_fail("set PHAROS_TEST_RAY to the directory of the `ray` executable");
    };
    if unsafe { libc::geteuid() } != 0 {
        return skip_or_fail("network namespaces need root");
    }
    for tool in ["ip", "unshare"] {
        let path = std::env::var_os("PATH").unwrap_or_default();
        if !std::env::split_paths(&path).any(|d| d.join(tool).is_file()) {
            return skip_or_fail(&format!("`{tool}` is not installed"));
        }
    }
    // Outside /tmp: the one directory every host sees (checkpoints).
    let shared = tempfile::Builder::new()
        .prefix("pharos-ray-storage")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let ray = match Cluster::start(bin, work.path()) {
        Ok(c) => c,
        Err(e) => panic!("the Ray cluster did not start: {e}"),
    };
    let (head, worker) = (ray.net.ip(HEAD), ray.net.ip(WORKER));
    // The cluster refuses calls without the token.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let r = agent
        .get(format!("{}/api/version", ray.dashboard()))
        .call()
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        401,
        "an unauthenticated call was taken"
    );

    let token_file = work.path().join("ray-token");
    std::fs::write(&token_file, &ray.token).unwrap();
    let s = Server::start(&format!(
        "backend: ray\nray: {{address: '{}', serve_url: 'http://{head}:8000', timeout_s: 5, \
         token_file: '{}', storage: '{}'}}\ncapacity: {{cpus: 6}}\n\
         history_interval_s: 1\nautoscaler: {{policy: faro-fairsum, params: {{interval_s: 1}}}}\n",
        ray.dashboard(),
        token_file.display(),
        shared.path().display()
    ));

    // A service with one replica, then three: on both nodes.
    let (status, v) = s.apply(&service(1));
    assert!(status == 200 || status == 201, "{status} {v}");
    let v = s.wait_service("model", 180, "one replica on Ray", |v| {
        v["ready_replicas"] == 1
    });
    let url = v["url"].as_str().unwrap().to_string();
    let (status, v) = s.apply(&service(3));
    assert!(status == 200 || status == 201, "{status} {v}");
    wait_until(
        180,
        || {
            let (ips, target) = ray.replicas("model");
            target == 3 && ips.len() == 3 && ips.contains(&head) && ips.contains(&worker)
        },
        || format!("{:?}\n{}", ray.replicas("model"), s.service_events("model")),
    );
    s.wait_service("model", 60, "three replicas routed", |v| {
        v["ready_replicas"] == 3
    });

    // A gang spread over the two nodes, checkpointing to the shared storage.
    let manifest = work.path().join("gang.yaml");
    std::fs::write(&manifest, GANG).unwrap();
    let (ok, out, err) = s.cli(
        &[
            "train",
            "submit",
            manifest.to_str().unwrap(),
            examples().join("train").to_str().unwrap(),
        ],
        ADMIN,
    );
    assert!(ok, "{out}{err}");
    let id = 1;
    s.wait_state(id, "PROCESSING", 120);
    let nodes_of = |attempt: u32| -> Vec<String> {
        (1..=2)
            .map(|l| {
                std::fs::read_to_string(s.data().join(format!(
                    "jobs/{id}/state/attempt-{attempt}/learner-{l}/node"
                )))
                .unwrap_or_default()
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string()
            })
            .collect()
    };
    let mut first = nodes_of(1);
    first.sort();
    assert_eq!(first, [head.clone(), worker.clone()], "learners not spread");
    // Where Ray ran them, by Ray's own account.
    let inst = std::fs::read_to_string(s.data().join("installation-id")).unwrap();
    let submission = |a: u32, l: u32| format!("pharos-{}-{id}-a{a}-l{l}", inst.trim());
    let ran_on = |ray: &Cluster, a: u32| {
        let mut ips: Vec<String> = (1..=2).map(|l| ray.driver_ip(&submission(a, l))).collect();
        ips.sort();
        ips
    };
    wait_until(
        60,
        || ran_on(&ray, 1) == [head.clone(), worker.clone()],
        || format!("Ray ran the learners on {:?}", ran_on(&ray, 1)),
    );
    // Past a checkpoint (every 10 steps) on both learners.
    wait_until(
        120,
        || (1..=2).all(|l| common::last_step(&s.log(id, l)) >= 25),
        || format!("{}\n{}\n{}", s.log(id, 1), s.log(id, 2), s.events(id)),
    );
    let ckpt = shared.path().to_path_buf();
    let found = walk(&ckpt)
        .into_iter()
        .any(|p| p.ends_with("checkpoints/logreg.json"));
    assert!(
        found,
        "no checkpoint in the shared storage: {:?}",
        walk(&ckpt)
    );

    // Load on the service, then the worker host is lost.
    let load = common::Load::start(&url, 4);
    std::thread::sleep(Duration::from_secs(3));
    let t_kill = Instant::now();
    ray.net.kill_all(WORKER);
    ray.wait_nodes(1, 90).unwrap();
    eprintln!(
        "worker killed; Ray saw it dead after {:.1} s",
        t_kill.elapsed().as_secs_f64()
    );
    // The service is back to three replicas, all on the head.
    wait_until(
        180,
        || {
            let (ips, _) = ray.replicas("model");
            ips.len() == 3 && ips.iter().all(|ip| *ip == head)
        },
        || format!("{:?}\n{}", ray.replicas("model"), s.service_events("model")),
    );
    eprintln!(
        "service back to 3 replicas {:.1} s after the kill",
        t_kill.elapsed().as_secs_f64()
    );
    // The capacity pharos gives out is what the alive node has (3 of the 6 vCPUs).
    let capacity = || {
        let (_, h) = s.request("GET", "/v1/history", Some(ADMIN), None);
        h["cluster"]
            .as_array()
            .and_then(|c| c.last())
            .and_then(|p| p["capacity_cpus"].as_f64())
            .unwrap_or(-1.0)
    };
    wait_until(
        60,
        || capacity() == 3.0,
        || format!("capacity {}", capacity()),
    );
    std::thread::sleep(Duration::from_secs(2));
    let (answered, errors) = load.finish();
    let v = s.wait_service("model", 30, "idle", |v| {
        v["in_flight"] == 0 && v["queued"] == 0
    });
    eprintln!(
        "load through the node loss: {answered} answered, {errors} errors; {}",
        v["counters"]
    );
    common::assert_counted(&v, answered, errors);
    assert!(answered > 100, "{answered}");
    let ev = s.service_events("model");
    assert!(
        ev.contains("replica-lost") && ev.contains(&worker),
        "no event names the lost node: {ev}"
    );

    // The gang lost a learner with the node: its events say which; with one node left
    // it waits (spread), and runs again once the worker host is back.
    wait_until(
        120,
        || s.events(id).contains(&format!("its node {worker}")),
        || format!("{}\n{}", s.events(id), s.server_log()),
    );
    // One node left: the spread gang waits for a second, saying why.
    wait_until(
        120,
        || {
            s.events(id)
                .contains("the gang waits: spread: 2 learners need 2 nodes")
        },
        || s.events(id),
    );
    let mut ray = ray;
    ray.join(WORKER).unwrap();
    wait_until(
        60,
        || capacity() == 6.0,
        || format!("capacity {}", capacity()),
    );
    let j = s.wait_state(id, "COMPLETED", 300);
    let attempt = j["attempt"].as_u64().unwrap_or(0) as u32;
    assert!(attempt >= 2, "{j}");
    let mut last = nodes_of(attempt);
    last.sort();
    assert_eq!(
        last,
        [head.clone(), worker.clone()],
        "the restarted gang not spread"
    );
    assert_eq!(ran_on(&ray, attempt), [head.clone(), worker.clone()]);
    let (ok, logs, err) = s.cli(&["train", "logs", &format!("training-{id}")], ADMIN);
    assert!(ok, "{err}");
    assert!(
        logs.contains("attempt 1")
            && logs.contains(&format!("attempt {attempt}"))
            && logs.contains("resumed from step")
            && logs.contains("step=400 loss=")
            && logs.contains("done"),
        "{logs}"
    );
    let (_, m) = s.request(
        "GET",
        &format!("/v1/models/{id}/metrics"),
        Some(ADMIN),
        None,
    );
    assert!(m["last"]["accuracy"].as_f64().unwrap_or(0.0) > 0.9, "{m}");

    // Back to one replica.
    let (status, v) = s.apply(&service(1));
    assert!(status == 200 || status == 201, "{status} {v}");
    wait_until(
        120,
        || {
            let (ips, target) = ray.replicas("model");
            ips.len() == 1 && target == 1
        },
        || format!("{:?}\n{}", ray.replicas("model"), s.service_events("model")),
    );
    let v = s.service("model");
    eprintln!(
        "control latency (decision to serving, multi-host Ray), s: {}",
        v["control_latency_s"]["all"]
    );
    // The cluster's secret is nowhere pharos writes.
    assert!(!s.server_log().contains(&ray.token));
    let (_, cfg) = s.request("GET", "/v1/services/model", Some(ADMIN), None);
    assert!(!cfg.to_string().contains(&ray.token));
    let (ok, _, err) = s.cli(&["delete", "service", "model"], ADMIN);
    assert!(ok, "{err}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
