//! The control plane end to end: a real `pharos server` on a temporary data directory,
//! real learner processes (`pharos-sgd`, data-parallel SGD over the rendezvous
//! address), the CLI, and the faults it must survive.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::{ADMIN, PHAROS, Server, free_port, last_step, wait_until};

fn losses(log: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.starts_with("step="))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("loss=")?.parse().ok())
        })
        .collect()
}

/// The states a job has been in, oldest first.
fn history_states(job: &Value) -> Vec<String> {
    job["status_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap().to_string())
        .collect()
}

fn manifest(name: &str, learners: u32, cpus: f64, command: &str, extra: &str) -> String {
    format!(
        "name: {name}\nlearners: {learners}\ncpus: {cpus}\nmemory: 64MiB\nframework:\n  name: custom\n  command: '{command}'\nevaluation_metrics:\n  type: regex\n  regex: 'step=(?P<step>\\d+) loss=(?P<loss>[0-9.e+-]+)'\n{extra}\n"
    )
}

fn pid_of(data: &Path, id: i64, attempt: u32, learner: u32) -> i32 {
    let p = data.join(format!(
        "jobs/{id}/state/attempt-{attempt}/learner-{learner}/pid"
    ));
    std::fs::read_to_string(&p).unwrap().trim().parse().unwrap()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn distributed_job_completes_and_a_halted_job_resumes_from_its_checkpoint() {
    let s = Server::start("");
    // A 2-learner job with a model directory, submitted with the CLI.
    let model = s.dir.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("notes.txt"), "hello").unwrap();
    let m = s.dir.path().join("dist.yaml");
    std::fs::write(
        &m,
        manifest(
            "dist",
            2,
            0.5,
            "test -f $MODEL_DIR/notes.txt && pharos-sgd --steps 60 --sleep-ms 5",
            "",
        ),
    )
    .unwrap();
    let (ok, out, err) = s.cli(
        &[
            "train",
            "submit",
            m.to_str().unwrap(),
            model.to_str().unwrap(),
        ],
        ADMIN,
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("training-1 QUEUED"), "{out}");
    let j = s.wait_state(1, "COMPLETED", 120);
    assert_eq!(j["attempt"], 1);
    let (l1, l2) = (s.log(1, 1), s.log(1, 2));
    assert!(
        l1.contains("world_size=2") && l2.contains("rank=1"),
        "{l1}\n{l2}"
    );
    let loss = losses(&l1);
    assert_eq!(loss.len(), 60, "{l1}");
    assert!(loss[59] < loss[0] / 10.0, "loss did not fall: {loss:?}");
    // The model both ranks trained is the averaged one: rank 0 stored it.
    let results = s.data().join("jobs/1/results");
    let model_json: Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("model.json")).unwrap())
            .unwrap();
    assert_eq!(model_json["world_size"], 2);
    assert!(results.join("_logs/learner-2.log").exists());
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(results.join("_pharos.json")).unwrap())
            .unwrap();
    assert_eq!(summary["outcome"], "COMPLETED");
    // Metrics through the CLI and the API.
    let (ok, out, _) = s.cli(&["train", "metrics", "training-1"], ADMIN);
    assert!(ok && out.lines().count() >= 60, "{out}");
    let (_, v) = s.request("GET", "/v1/models/1/metrics", Some(ADMIN), None);
    assert_eq!(v["last"]["step"], 60.0);
    let (ok, out, _) = s.cli(&["train", "logs", "1", "--learner", "2"], ADMIN);
    assert!(ok && out.contains("rank=1"), "{out}");

    // A second job: halted mid-run, resumed, finishes from its checkpoint.
    let id = s.submit(&manifest(
        "long",
        1,
        0.5,
        "pharos-sgd --steps 300 --sleep-ms 20 --checkpoint-every 5",
        "",
    ));
    s.wait_step(id, 30, 60);
    let (ok, _, err) = s.cli(&["train", "halt", &id.to_string()], ADMIN);
    assert!(ok, "{err}");
    s.wait_state(id, "HALTED", 30);
    let halted_at = last_step(&s.log(id, 1));
    assert!(halted_at < 300, "{halted_at}");
    let (ok, out, err) = s.cli(&["train", "resume", &id.to_string()], ADMIN);
    assert!(ok, "{err}");
    assert!(out.contains("QUEUED"), "{out}");
    let j = s.wait_state(id, "COMPLETED", 120);
    assert_eq!(j["attempt"], 2);
    let log = s.log(id, 1);
    let resumed: u32 = log
        .lines()
        .find_map(|l| {
            l.strip_prefix("resumed from checkpoint at step ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no resume line: {log}"));
    assert!(
        resumed >= 25 && resumed <= halted_at,
        "resumed at {resumed}, halted at {halted_at}"
    );
    let states = history_states(&j);
    assert!(
        states
            .windows(2)
            .any(|w| w[0] == "HALTED" && w[1] == "QUEUED"),
        "{states:?}"
    );
    let (ok, out, _) = s.cli(&["train", "list"], ADMIN);
    assert!(
        ok && out.contains("training-2") && out.contains("COMPLETED"),
        "{out}"
    );
    // The resume is an event; metrics say which attempt each step is from, steps as
    // whole numbers, and the steps redone after the checkpoint appear under both.
    assert!(
        s.events(id).contains("resume requested"),
        "{}",
        s.events(id)
    );
    let (ok, out, _) = s.cli(&["train", "metrics", &format!("training-{id}")], ADMIN);
    assert!(ok && out.starts_with("ATTEMPT"), "{out}");
    let rows: Vec<(u32, u32)> = out
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.parse().ok()?, f.get(3)?.parse().ok()?))
        })
        .collect();
    let (first, second): (Vec<_>, Vec<_>) = rows.iter().partition(|(a, _)| *a == 1);
    assert!(first.iter().any(|(_, st)| *st == halted_at), "{out}");
    assert!(second.iter().any(|(_, st)| *st == resumed + 1), "{out}");
    assert_eq!(second.last().map(|r| r.1), Some(300), "{out}");
    let (ok, _, err) = s.cli(&["train", "list", "--state", "BOGUS"], ADMIN);
    assert!(!ok && err.contains("states: QUEUED, PENDING"), "{err}");
    let (ok, _, err) = s.cli(&["train", "show", "99"], ADMIN);
    assert!(!ok && err.contains("job training-99 not found"), "{err}");

    // Deleting the job with the model archive removes the archive (no other job has it).
    assert_eq!(
        std::fs::read_dir(s.data().join("archives"))
            .unwrap()
            .count(),
        1
    );
    let (ok, _, err) = s.cli(&["train", "delete", "training-1"], ADMIN);
    assert!(ok, "{err}");
    let t0 = Instant::now();
    while std::fs::read_dir(s.data().join("archives"))
        .unwrap()
        .count()
        > 0
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "archive not removed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A second server on the same data directory refuses to start.
    let out = Command::new(PHAROS)
        .args(["server", "--config"])
        .arg(&s.config)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another pharos server is using the data directory"),
        "{err}"
    );
}

#[test]
fn server_killed_while_jobs_run_and_wait_loses_nothing_and_runs_nothing_twice() {
    let mut s = Server::start("capacity: {cpus: 1, memory: 8GiB}");
    let a = s.submit(&manifest(
        "a",
        1,
        1.0,
        "pharos-sgd --steps 120 --sleep-ms 25",
        "",
    ));
    let b = s.submit(&manifest("b", 1, 1.0, "pharos-sgd --steps 20", ""));
    s.wait_step(a, 10, 60);
    assert_eq!(s.job(b)["state"], "QUEUED");
    let pid = pid_of(&s.data(), a, 1, 1);
    s.kill();
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(pid), "the learner must outlive the server");
    s.spawn();
    let ja = s.wait_state(a, "COMPLETED", 120);
    let jb = s.wait_state(b, "COMPLETED", 120);
    assert_eq!(
        (ja["attempt"].as_i64(), ja["restarts"].as_i64()),
        (Some(1), Some(0))
    );
    assert_eq!(jb["attempt"], 1);
    // Each learner started once: one start line per log.
    for id in [a, b] {
        let starts = s
            .log(id, 1)
            .lines()
            .filter(|l| l.starts_with("learner rank="))
            .count();
        assert_eq!(starts, 1, "job {id}:\n{}", s.log(id, 1));
    }
    assert_eq!(last_step(&s.log(a, 1)), 120);
    let (_, list) = s.request("GET", "/v1/models", Some(ADMIN), None);
    assert_eq!(list["models"].as_array().unwrap().len(), 2);
}

#[test]
fn a_killed_learner_restarts_the_gang_from_its_checkpoint() {
    let s = Server::start("");
    let id = s.submit(&manifest(
        "k",
        2,
        0.5,
        "pharos-sgd --steps 200 --sleep-ms 20 --checkpoint-every 5",
        "max_restarts: 2",
    ));
    // Follow the log from the start; the stream ends when the job does.
    let follow = Command::new(PHAROS)
        .args(["train", "logs", &id.to_string(), "--follow"])
        .env("PHAROS_URL", &s.url)
        .env("PHAROS_TOKEN", ADMIN)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    s.wait_step(id, 30, 60);
    let pid = pid_of(&s.data(), id, 1, 2);
    // SAFETY: killing the learner process this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let j = s.wait_state(id, "COMPLETED", 120);
    assert_eq!(j["restarts"], 1);
    assert_eq!(j["attempt"], 2);
    let log = s.log(id, 1);
    assert!(log.contains("resumed from checkpoint at step"), "{log}");
    let ev = s.events(id);
    assert!(ev.contains("learner 2 killed by signal 9"), "{ev}");
    let out = follow.wait_with_output().unwrap();
    let followed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(followed, log, "the followed stream is the whole log");
    assert!(followed.contains("done step=200"), "{followed}");

    // Delete: the job and its files are gone; others' ids do not come back.
    let (ok, _, err) = s.cli(&["train", "delete", &id.to_string()], ADMIN);
    assert!(ok, "{err}");
    // Gone for the API at once; its files once the controller has removed them.
    assert_eq!(
        s.request("GET", &format!("/v1/models/{id}"), Some(ADMIN), None)
            .0,
        404
    );
    let t0 = Instant::now();
    while s.data().join(format!("jobs/{id}")).exists() {
        assert!(t0.elapsed() < Duration::from_secs(30), "files not removed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, list) = s.request("GET", "/v1/models", Some(ADMIN), None);
    assert!(list["models"].as_array().unwrap().is_empty(), "{list}");
    let next = s.submit(&manifest("after", 1, 0.5, "true", ""));
    assert_eq!(next, id + 1);
}

/// The whole server on PostgreSQL (when `PHAROS_TEST_POSTGRES_URL` names one): a job
/// runs, the server is killed, and the restarted server has every record.
#[test]
fn the_server_runs_on_postgresql_too() {
    let Ok(url) = std::env::var("PHAROS_TEST_POSTGRES_URL") else {
        eprintln!("PHAROS_TEST_POSTGRES_URL not set: skipped");
        return;
    };
    let mut s = Server::start(&format!("database_url: {url}"));
    let id = s.submit(&manifest("pg", 2, 0.5, "pharos-sgd --steps 20", ""));
    let before = s.wait_state(id, "COMPLETED", 60);
    s.kill();
    s.spawn();
    let after = s.job(id);
    assert_eq!(after["state"], "COMPLETED");
    assert_eq!(after["status_history"], before["status_history"]);
    assert!(s.server_log().contains("pharos server listening"));
}

#[test]
fn a_learner_that_always_crashes_fails_with_c201_after_max_restarts() {
    let s = Server::start("");
    let id = s.submit(&manifest(
        "crash",
        1,
        0.5,
        "pharos-sgd --always-crash",
        "max_restarts: 2",
    ));
    let j = s.wait_state(id, "FAILED", 60);
    assert_eq!(j["error_code"], "C201");
    assert_eq!(j["restarts"], 2);
    assert_eq!(j["attempt"], 3);
    let (ok, out, _) = s.cli(&["train", "show", &id.to_string()], ADMIN);
    assert!(ok && out.contains("C201"), "{out}");
    // The code explained where it is shown.
    assert!(
        out.contains("error:     C201 (a learner crashed more than max_restarts times"),
        "{out}"
    );
    assert!(out.contains("Failed     True   C201: "), "{out}");
}

#[test]
fn a_job_that_can_never_fit_is_refused_and_one_left_behind_by_a_smaller_cluster_waits_with_the_reason()
 {
    let mut s = Server::start("capacity: {cpus: 4, memory: 8GiB}");
    // Refused at submission with the scheduler's reason, by the API and the CLI.
    let (status, v) = s.request(
        "POST",
        "/v1/models",
        Some(ADMIN),
        Some((
            "application/yaml",
            manifest("huge", 5, 1.0, "true", "").into_bytes(),
        )),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["code"], "S100", "{v}");
    let msg = v["error"].as_str().unwrap_or("");
    assert!(
        msg.contains("never fits") && msg.contains("the cluster has 4 CPUs, 8 GiB and 0 GPUs"),
        "{v}"
    );
    let gpu = s.dir.path().join("gpu.yaml");
    std::fs::write(&gpu, manifest("gpu", 1, 0.5, "true", "gpus: 1")).unwrap();
    let (ok, _, err) = s.cli(&["train", "submit", gpu.to_str().unwrap()], ADMIN);
    assert!(
        !ok && err.contains("never fits") && err.contains("1 GPUs"),
        "{err}"
    );
    let (_, v) = s.request("GET", "/v1/models", Some(ADMIN), None);
    assert_eq!(v["models"].as_array().map(|a| a.len()), Some(0), "{v}");

    // A job that fitted when it was accepted (it waited for room), on a cluster since
    // made smaller: kept, queued with the reason, never half placed.
    let hold = s.submit(&manifest(
        "hold",
        2,
        1.0,
        "pharos-sgd --steps 100000 --sleep-ms 20",
        "",
    ));
    s.wait_state(hold, "PROCESSING", 60);
    let big = s.submit(&manifest("big", 3, 1.0, "pharos-sgd --steps 5", ""));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.job(big)["state"], "QUEUED");
    s.kill();
    let config = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("cpus: 4", "cpus: 2");
    std::fs::write(&s.config, config).unwrap();
    s.spawn();
    wait_until(
        30,
        || {
            s.job(big)["wait_reason"]
                .as_str()
                .is_some_and(|r| r.contains("never fits"))
        },
        || s.job(big).to_string(),
    );
    assert_eq!(s.job(big)["state"], "QUEUED");
    assert!(
        !s.data().join(format!("jobs/{big}/state")).exists(),
        "job {big} was placed"
    );
    assert_eq!(s.job(big)["conditions"][0]["reason"], "Unschedulable");
    let (ok, out, _) = s.cli(&["train", "show", &big.to_string()], ADMIN);
    assert!(ok && out.contains("waiting:   never fits"), "{out}");
    assert!(
        out.contains("Scheduled  False  Unschedulable: never fits"),
        "{out}"
    );
    // A placed job's condition says so.
    assert_eq!(s.job(hold)["conditions"][0]["reason"], "Placed");
}

/// A client as a user runs it: no token in its environment, its own configuration and
/// state directories.
fn bare_cli(home: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(PHAROS)
        .args(args)
        .env_remove("PHAROS_TOKEN")
        .env_remove("PHAROS_URL")
        .env_remove("PHAROS_CONTEXT")
        .env_remove("PHAROS_DATA_DIR")
        .env("HOME", home)
        .env("PHAROS_CONFIG", home.join("client.yaml"))
        .env("XDG_STATE_HOME", home.join("state"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_finds_the_local_token_keeps_contexts_and_says_what_to_do_on_401() {
    // A server that makes its own admin token in a data directory of its choosing.
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let data = dir.path().join("elsewhere");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = Command::new(PHAROS)
        .args(["server", "--data-dir", data.to_str().unwrap(), "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env_remove("PHAROS_ADMIN_TOKEN")
        .env("XDG_STATE_HOME", home.join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(&mut server);
    common::wait_until(
        30,
        || {
            data.join("admin-token").exists()
                && bare_cli(&home, &["get", "services", "--url", &url]).0
        },
        || "the server did not start".into(),
    );
    // Found through the record the server left: the same user needs no token.
    let (ok, out, err) = bare_cli(&home, &["get", "services", "--url", &url]);
    assert!(ok && out.contains("NAME"), "{out}{err}");
    // The admin token goes to that server only: not to another address, and not to a
    // stranger on the port once the recorded server is gone.
    let admin_token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let sent = |host: &str, record_pid: Option<&str>| -> String {
        let l = std::net::TcpListener::bind((host, 0)).unwrap();
        let p = l.local_addr().unwrap().port();
        if let Some(pid) = record_pid {
            std::fs::write(
                home.join(format!("state/pharos/servers/127.0.0.1_{p}")),
                format!("{}\n{pid}\n", data.display()),
            )
            .unwrap();
        }
        let seen = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut c, _) = l.accept().unwrap();
            let mut buf = vec![0u8; 4096];
            let n = c.read(&mut buf).unwrap_or(0);
            let _ = c.write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        bare_cli(
            &home,
            &["get", "services", "--url", &format!("http://{host}:{p}")],
        );
        seen.join().unwrap()
    };
    assert!(!sent("127.0.0.2", None).contains(admin_token.trim()));
    assert!(!sent("127.0.0.1", Some("999999999")).contains(admin_token.trim()));
    // (The check itself: a record naming a live process of this user is believed.)
    let me = std::process::id().to_string();
    assert!(sent("127.0.0.1", Some(&me)).contains(admin_token.trim()));
    // Elsewhere (another user's state): a 401 that says what to do.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (ok, _, err) = bare_cli(&other, &["train", "list", "--url", &url]);
    assert!(!ok && err.contains("401"), "{err}");
    assert!(
        err.contains("no token was sent") && err.contains("pharos login URL --token-file FILE"),
        "{err}"
    );
    let (ok, _, err) = bare_cli(
        &other,
        &[
            "train",
            "list",
            "--url",
            &url,
            "--token",
            "wrong-token-0123456789",
        ],
    );
    assert!(
        !ok && err.contains("the token from --token was refused"),
        "{err}"
    );

    // Contexts: log in with the admin token, make a tenant's, log in as the tenant.
    let login = |file: &Path, name: &str| {
        bare_cli(
            &other,
            &[
                "login",
                &url,
                "--token-file",
                file.to_str().unwrap(),
                "--name",
                name,
            ],
        )
    };
    let (ok, out, err) = login(&data.join("admin-token"), "ops");
    assert!(
        ok && out.contains("with an admin token (context ops"),
        "{out}{err}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(other.join("client.yaml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
    let (ok, token, err) = bare_cli(&other, &["token", "create", "alice"]);
    assert!(ok && token.trim().starts_with("pht_"), "{token}{err}");
    let alice_file = other.join("alice.token");
    std::fs::write(&alice_file, token.trim()).unwrap();
    let (ok, out, err) = login(&alice_file, "alice");
    assert!(
        ok && out.contains("as tenant alice (context alice"),
        "{out}{err}"
    );
    let (ok, out, _) = bare_cli(&other, &["context", "list"]);
    assert!(
        ok && out.contains("* alice") && out.contains("  ops"),
        "{out}"
    );
    // The current context's token is the tenant's: creating tokens is refused.
    let (ok, _, err) = bare_cli(&other, &["token", "create", "bob"]);
    assert!(!ok && err.contains("403"), "{err}");
    let (ok, _, _) = bare_cli(&other, &["context", "use", "ops"]);
    assert!(ok);
    let (ok, token, err) = bare_cli(&other, &["token", "create", "--tenant", "bob"]);
    assert!(ok && token.trim().starts_with("pht_"), "{err}");
    // A context named that is not there: nothing is sent anywhere else.
    let (ok, _, err) = bare_cli(&other, &["get", "services", "--context", "prdo"]);
    assert!(!ok && err.contains("no context \"prdo\""), "{err}");
    let (ok, _, err) = bare_cli(&other, &["context", "use", "nope"]);
    assert!(
        !ok && err.contains("no context \"nope\"") && err.contains("alice, ops"),
        "{err}"
    );
    // A token that does not check out is not kept.
    std::fs::write(&alice_file, "pht_not-a-real-token").unwrap();
    let (ok, _, err) = login(&alice_file, "bad");
    assert!(!ok && err.contains("401"), "{err}");
    let (_, out, _) = bare_cli(&other, &["context", "list"]);
    assert!(!out.contains("bad"), "{out}");
}

#[test]
fn a_higher_priority_job_preempts_a_lower_one_to_its_checkpoint() {
    let s = Server::start("capacity: {cpus: 2, memory: 8GiB}");
    let low = s.submit(&manifest(
        "low",
        2,
        1.0,
        "pharos-sgd --steps 250 --sleep-ms 20 --checkpoint-every 5",
        "",
    ));
    s.wait_step(low, 30, 60);
    let high = s.submit(&manifest(
        "high",
        1,
        2.0,
        "pharos-sgd --steps 20",
        "priority: 10",
    ));
    s.wait_state(high, "COMPLETED", 60);
    let j = s.wait_state(low, "COMPLETED", 120);
    let history = j["status_history"].to_string();
    assert!(
        history.contains("preempted; resumes from its latest checkpoint"),
        "{history}"
    );
    assert_eq!(j["restarts"], 0, "a preemption is not a crash");
    assert!(s.log(low, 1).contains("resumed from checkpoint at step"));
    // The high-priority job ran while the low one was off the CPUs.
    let h = s.job(high);
    assert!(h["finished_ms"].as_i64() < j["finished_ms"].as_i64());
}

#[test]
fn bad_requests_are_clear_4xx_errors_and_store_nothing() {
    let s = Server::start("max_upload_bytes: 65536");
    let yaml = |m: &str| Some(("application/yaml", m.as_bytes().to_vec()));
    let good = manifest("ok", 1, 0.5, "true", "");
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("malformed", "name: [unclosed".into(), 400, "name"),
        (
            "unknown field",
            good.replace("learners:", "lerners:"),
            400,
            "lerners",
        ),
        (
            "negative cpus",
            good.replace("cpus: 0.5", "cpus: -1"),
            400,
            "cpus",
        ),
        (
            "missing command",
            "name: x\nframework:\n  name: custom\n".into(),
            400,
            "command",
        ),
        (
            "unknown queue",
            format!("{good}queue: nope\n"),
            400,
            "queue",
        ),
        (
            "object store",
            format!("{good}data_stores:\n  - id: s3\n    type: s3\n"),
            400,
            "data_stores[0].type",
        ),
    ];
    for (what, body, status, field) in &cases {
        let (st, v) = s.request("POST", "/v1/models", Some(ADMIN), yaml(body));
        assert_eq!(st, *status, "{what}: {v}");
        assert!(
            v["field"].as_str().unwrap_or("").contains(field),
            "{what}: {v}"
        );
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {v}"
        );
    }
    let (st, v) = s.request(
        "POST",
        "/v1/models",
        Some(ADMIN),
        yaml(&good.replace("cpus: 0.5", "cpus: -1")),
    );
    assert_eq!((st, v["code"].as_str()), (400, Some("C104")));
    // Oversized upload.
    let (st, v) = s.request(
        "POST",
        "/v1/models",
        Some(ADMIN),
        Some(("application/yaml", vec![b'#'; 100_000])),
    );
    assert_eq!(st, 413, "{v}");
    assert!(v["error"].as_str().unwrap().contains("65536"), "{v}");
    // A bad archive, and one that escapes its directory.
    let boundary = "XyZ";
    let mp = |archive: &[u8]| {
        let mut b = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"manifest\"\r\n\r\n{good}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"model_definition\"\r\n\r\n").into_bytes();
        b.extend_from_slice(archive);
        b.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        Some(("multipart/form-data; boundary=XyZ", b))
    };
    let (st, v) = s.request(
        "POST",
        "/v1/models",
        Some(ADMIN),
        mp(b"this is not a tar file at all, not at all; it is long enough to need a header block"),
    );
    assert_eq!((st, v["code"].as_str()), (400, Some("C102")), "{v}");
    let mut evil = tar::Header::new_gnu();
    evil.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
    evil.set_size(1);
    evil.set_cksum();
    let mut archive = evil.as_bytes().to_vec();
    archive.extend_from_slice(&[b'x'; 512]);
    archive.extend_from_slice(&[0; 1024]);
    let (st, v) = s.request("POST", "/v1/models", Some(ADMIN), mp(&archive));
    assert_eq!(
        (st, v["field"].as_str()),
        (400, Some("model_definition")),
        "{v}"
    );
    // Tokens: none, unknown.
    let (st, _) = s.request("POST", "/v1/models", None, yaml(&good));
    assert_eq!(st, 401);
    let (st, _) = s.request("GET", "/v1/models", Some("not-a-token"), None);
    assert_eq!(st, 401);
    // Data stores inside the server's own directory.
    let inside = format!(
        "{good}data_stores:\n  - id: d\n    type: local\n    connection: {{path: {}/jobs/../jobs}}\n",
        s.data().display()
    );
    let (st, v) = s.request("POST", "/v1/models", Some(ADMIN), yaml(&inside));
    assert_eq!(
        (st, v["field"].as_str()),
        (400, Some("data_stores[0].connection.path")),
        "{v}"
    );
    // Nothing was stored.
    let (_, list) = s.request("GET", "/v1/models", Some(ADMIN), None);
    assert_eq!(list["models"].as_array().unwrap().len(), 0, "{list}");
    assert_eq!(
        std::fs::read_dir(s.data().join("archives"))
            .unwrap()
            .count(),
        0
    );

    // Tenancy: a tenant sees and controls only its own jobs; others' are 404.
    let (st, t) = s.request(
        "POST",
        "/v1/tokens",
        Some(ADMIN),
        Some((
            "application/json",
            json!({"tenant": "team-a"}).to_string().into_bytes(),
        )),
    );
    assert_eq!(st, 201);
    let ta = t["token"].as_str().unwrap().to_string();
    let (_, t) = s.request(
        "POST",
        "/v1/tokens",
        Some(ADMIN),
        Some((
            "application/json",
            json!({"tenant": "team-b"}).to_string().into_bytes(),
        )),
    );
    let tb = t["token"].as_str().unwrap().to_string();
    let (st, _) = s.request(
        "POST",
        "/v1/tokens",
        Some(&ta),
        Some((
            "application/json",
            json!({"tenant": "x"}).to_string().into_bytes(),
        )),
    );
    assert_eq!(st, 403, "a tenant cannot mint tokens");
    let (st, v) = s.request("POST", "/v1/models", Some(&ta), yaml(&good));
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_i64().unwrap();
    for (m, p) in [
        ("GET", format!("/v1/models/{id}")),
        ("GET", format!("/v1/models/{id}/logs")),
        ("DELETE", format!("/v1/models/{id}")),
    ] {
        let (st, _) = s.request(m, &p, Some(&tb), None);
        assert_eq!(st, 404, "{m} {p}");
    }
    let (st, _) = s.request(
        "PATCH",
        &format!("/v1/models/{id}"),
        Some(&tb),
        Some(("application/json", b"{\"status\": \"halt\"}".to_vec())),
    );
    assert_eq!(st, 404);
    let (_, list) = s.request("GET", "/v1/models", Some(&tb), None);
    assert_eq!(list["models"].as_array().unwrap().len(), 0);
    let (st, _) = s.request("GET", &format!("/v1/models/{id}"), Some(&ta), None);
    assert_eq!(st, 200);
    // A bad PATCH body names the field.
    let (st, v) = s.request(
        "PATCH",
        &format!("/v1/models/{id}"),
        Some(&ta),
        Some(("application/json", b"{\"status\": \"explode\"}".to_vec())),
    );
    assert_eq!((st, v["field"].as_str()), (400, Some("status")), "{v}");
    let (st, v) = s.request(
        "PATCH",
        &format!("/v1/models/{id}"),
        Some(&ta),
        Some(("application/json", b"{\"state\": \"halt\"}".to_vec())),
    );
    assert_eq!(st, 400, "{v}");
    // Revocation: team-b cannot revoke team-a's token; team-a can, and it stops working.
    let (ok, _, _) = s.cli(&["token", "revoke", &ta], &tb);
    assert!(!ok, "another tenant's token is not found");
    let (ok, out, err) = s.cli(&["token", "revoke", &ta], &ta);
    assert!(ok && out.contains("revoked"), "{err}");
    let (st, _) = s.request("GET", "/v1/models", Some(&ta), None);
    assert_eq!(st, 401);
    // The learner's environment holds no pharos credentials.
    let env_job = s.submit(&manifest("env", 1, 0.5, "env", ""));
    s.wait_state(env_job, "COMPLETED", 60);
    s.wait_state(id, "COMPLETED", 60);
    let env = s.log(env_job, 1);
    assert!(
        env.contains("TRAINING_ID=training-") && env.contains("WORLD_SIZE=1"),
        "{env}"
    );
    assert!(!env.contains("PHAROS_") && !env.contains(ADMIN), "{env}");
    // The OpenAPI document and the metrics.
    let (st, doc) = s.request("GET", "/openapi.json", None, None);
    assert_eq!(st, 200);
    assert!(doc["paths"]["/v1/models"]["post"].is_object());
    let (st, metrics) = s.request("GET", "/metrics", None, None);
    assert_eq!(st, 200);
    let text = metrics.as_str().unwrap();
    assert!(
        text.contains("pharos_jobs{state=\"COMPLETED\"} 2"),
        "{text}"
    );
    assert!(text.contains("pharos_jobs_submitted_total 2"), "{text}");
}

#[test]
fn an_unusable_data_directory_or_a_full_disk_is_a_clear_error() {
    // A data directory that is a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let out = Command::new(PHAROS)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("data directory") && err.contains("not-a-dir"),
        "{err}"
    );

    // A disk that takes no more: files may not grow past 1 MiB (RLIMIT_FSIZE); a 2 MiB
    // model archive is refused with a clear error and nothing is stored.
    let mut s = Server::start("max_upload_bytes: 8388608");
    s.kill();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(s.dir.path().join("server.log"))
        .unwrap();
    let mut cmd = Command::new(PHAROS);
    cmd.arg("server")
        .arg("--config")
        .arg(&s.config)
        .env("PHAROS_ADMIN_TOKEN", ADMIN)
        .stderr(log);
    // SAFETY: setrlimit and signal between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: 1 << 20,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    s.child = Some(cmd.spawn().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    while s.agent.get(format!("{}/healthz", s.url)).call().is_err() {
        assert!(t0.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut tarb = tar::Builder::new(Vec::new());
    let data = vec![7u8; 2 << 20];
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tarb.append_data(&mut h, "weights.bin", &data[..]).unwrap();
    let archive = tarb.into_inner().unwrap();
    let good = manifest("ok", 1, 0.5, "true", "");
    let mut body = format!("--B\r\nContent-Disposition: form-data; name=\"manifest\"\r\n\r\n{good}\r\n--B\r\nContent-Disposition: form-data; name=\"model_definition\"\r\n\r\n").into_bytes();
    body.extend_from_slice(&archive);
    body.extend_from_slice(b"\r\n--B--\r\n");
    let (st, v) = s.request(
        "POST",
        "/v1/models",
        Some(ADMIN),
        Some(("multipart/form-data; boundary=B", body)),
    );
    assert_eq!(st, 507, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("storing the model archive failed"),
        "{v}"
    );
    let (_, list) = s.request("GET", "/v1/models", Some(ADMIN), None);
    assert_eq!(list["models"].as_array().unwrap().len(), 0);
    let leftovers: Vec<_> = std::fs::read_dir(s.data().join("archives"))
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_relative_data_directory_works() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(PHAROS)
        .args([
            "server",
            "--data-dir",
            "rel-data",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .current_dir(dir.path())
        .env("PHAROS_ADMIN_TOKEN", ADMIN)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let m = dir.path().join("m.yaml");
    std::fs::write(&m, manifest("rel", 1, 0.5, "pharos-sgd --steps 5", "")).unwrap();
    let t0 = Instant::now();
    let submit = loop {
        let out = Command::new(PHAROS)
            .args([
                "train",
                "submit",
                m.to_str().unwrap(),
                "--url",
                &url,
                "--token",
                ADMIN,
            ])
            .output()
            .unwrap();
        if out.status.success() {
            break out;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(String::from_utf8_lossy(&submit.stdout).starts_with("training-1"));
    let t0 = Instant::now();
    loop {
        let out = Command::new(PHAROS)
            .args([
                "train", "show", "1", "--json", "--url", &url, "--token", ADMIN,
            ])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if v["state"] == "COMPLETED" {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        dir.path()
            .join("rel-data/jobs/1/results/model.json")
            .exists()
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn gpu_learners_get_devices_of_their_own() {
    let s = Server::start("capacity: {cpus: 8, memory: 8GiB, gpus: {v100: 2}}");
    let cmd = "echo CVD=[$CUDA_VISIBLE_DEVICES]; sleep 1";
    let a = s.submit(&manifest("a", 2, 0.5, cmd, "gpus: 1\ngpu_type: v100"));
    let b = s.submit(&manifest("b", 1, 0.5, cmd, "gpus: 1"));
    let cpu = s.submit(&manifest("cpu", 1, 0.5, cmd, ""));
    s.wait_state(a, "PROCESSING", 30);
    // Both GPUs are A's: B waits with a reason.
    let jb = s.job(b);
    assert_eq!(jb["state"], "QUEUED", "{jb}");
    s.wait_state(a, "COMPLETED", 30);
    s.wait_state(b, "COMPLETED", 30);
    s.wait_state(cpu, "COMPLETED", 30);
    let mut got = vec![s.log(a, 1), s.log(a, 2)];
    got.sort();
    assert_eq!(got, vec!["CVD=[0]\n", "CVD=[1]\n"]);
    let lb = s.log(b, 1);
    assert!(lb == "CVD=[0]\n" || lb == "CVD=[1]\n", "{lb}");
    assert_eq!(s.log(cpu, 1), "CVD=[]\n");
}

/// The server killed (`kill -9`) again and again at arbitrary moments while jobs are
/// queued, starting, running and finishing: every job still completes, no learner fails
/// because of it, and no learner of an attempt ever starts twice.
#[test]
fn repeated_server_crashes_lose_nothing_and_run_nothing_twice() {
    let mut s = Server::start("capacity: {cpus: 2, memory: 8GiB}");
    let mut ids = Vec::new();
    for i in 0..6 {
        let learners = 1 + i % 2;
        ids.push(s.submit(&manifest(
            &format!("chaos-{i}"),
            learners,
            1.0,
            "pharos-sgd --steps 80 --sleep-ms 10",
            "",
        )));
    }
    // Seeded pauses between kills, 150-650 ms.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..12 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_millis(150 + x % 500));
        s.kill();
        s.spawn();
    }
    for &id in &ids {
        let j = s.wait_state(id, "COMPLETED", 120);
        assert_eq!(j["restarts"], 0, "job {id}: {j}");
        assert_eq!(j["attempt"], 1, "job {id}: {j}");
        let learners = j["learners"].as_u64().unwrap() as u32;
        for l in 1..=learners {
            let starts = s
                .log(id, l)
                .lines()
                .filter(|x| x.starts_with("learner rank="))
                .count();
            assert_eq!(starts, 1, "job {id} learner {l} started {starts} times");
        }
        // The history is one pass through the lifecycle.
        let states = history_states(&j);
        assert_eq!(
            states,
            [
                "QUEUED",
                "PENDING",
                "DOWNLOADING",
                "PROCESSING",
                "STORING",
                "COMPLETED"
            ],
            "job {id}"
        );
    }
    let (_, list) = s.request("GET", "/v1/models", Some(ADMIN), None);
    assert_eq!(list["models"].as_array().unwrap().len(), ids.len());
}
