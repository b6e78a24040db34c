//! The `pharos simulate` command end to end: outputs, determinism, bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn example() -> PathBuf {
    root().join("examples/faro-10jobs.yaml")
}

fn tmpdir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "pharos-cli-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn pharos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pharos"))
        .args(args)
        .output()
        .expect("pharos runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A short slice of the example: 20 minutes on one cluster size.
fn short_run(out: &Path, extra: &[&str]) -> Output {
    let ex = example();
    let mut args = vec![
        "simulate",
        ex.to_str().unwrap(),
        "--minutes",
        "0:20",
        "--cpus",
        "32",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    pharos(&args)
}

#[test]
fn simulate_prints_json_and_writes_its_files() {
    let out = tmpdir("json");
    let o = short_run(
        &out,
        &["--policy", "aiad", "--policy", "fairshare", "--json"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    // Day 11, minutes 0-19 of the trace: the exact request count of those minutes.
    let csv =
        std::fs::read_to_string(root().join("data/faro-10jobs/requests_per_minute.csv")).unwrap();
    let expected: u64 = csv
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[2] == "11" && f[3].parse::<u32>().unwrap() < 20)
                .then(|| f[4].parse::<u64>().unwrap())
        })
        .sum();
    for (row, policy) in rows.iter().zip(["aiad", "fairshare"]) {
        assert_eq!(row["policy"], policy);
        assert_eq!(row["cpus"], 32.0);
        assert_eq!(row["seed"], 42);
        assert_eq!(row["requests"].as_u64().unwrap(), expected);
        for key in [
            "slo_violation_rate",
            "lost_utility",
            "dropped",
            "sim_wall_s",
        ] {
            assert!(row.get(key).is_some(), "{key} missing");
        }
        let v = row["slo_violation_rate"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v));
    }
    for f in [
        "results.json",
        "timing.json",
        "summary.md",
        "summary.svg",
        "timeline-aiad-32cpu-seed42.csv",
        "run-aiad-32cpu-seed42.svg",
        "run-fairshare-32cpu-seed42.svg",
    ] {
        assert!(out.join(f).is_file(), "{f} not written");
    }
    let timeline =
        std::fs::read_to_string(out.join("timeline-fairshare-32cpu-seed42.csv")).unwrap();
    // A header and 10 jobs x 20 minutes.
    assert_eq!(timeline.lines().count(), 1 + 10 * 20);
    // The example's warm-up: a second table of minutes 10-19. AIAD starts from one
    // replica per job, so leaving its start out must lower its violation rate.
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("From minute 10 on"), "{md}");
    let cell = |table: &str| -> f64 {
        let row = table.lines().find(|l| l.starts_with("| 32 |")).unwrap();
        let aiad = row.split('|').nth(2).unwrap().trim();
        aiad.split('%').next().unwrap().parse().unwrap()
    };
    let (whole, after) = md.split_once("From minute 10 on").unwrap();
    assert!(cell(after) < cell(whole), "{md}");
}

#[test]
fn same_seed_gives_identical_results_json() {
    let (a, b, c) = (tmpdir("a"), tmpdir("b"), tmpdir("c"));
    for (dir, seed) in [(&a, "7"), (&b, "7"), (&c, "8")] {
        let o = short_run(
            dir,
            &["--policy", "hpa", "--policy", "aiad", "--seed", seed],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let read = |d: &Path| std::fs::read(d.join("results.json")).unwrap();
    assert_eq!(read(&a), read(&b), "same seed, different results.json");
    assert_ne!(read(&a), read(&c), "another seed should change the results");
    let read_t = |d: &Path| std::fs::read(d.join("timeline-hpa-32cpu-seed7.csv")).unwrap();
    assert_eq!(read_t(&a), read_t(&b));
}

#[test]
fn a_malformed_trace_line_is_named() {
    let dir = tmpdir("trace");
    let trace = dir.join("bad.csv");
    std::fs::write(&trace, "job,day,minute,requests\n0,11,0,100\n0,11,1,lots\n").unwrap();
    let o = short_run(&dir, &["--trace", trace.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("bad.csv:3:") && e.contains("requests"), "{e}");
}

#[test]
fn an_unknown_policy_is_an_error() {
    let dir = tmpdir("policy");
    let o = short_run(&dir, &["--policy", "magic"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("unknown policy \"magic\"") && e.contains("fairshare"),
        "{e}"
    );
}

#[test]
fn a_negative_slo_is_an_error() {
    let dir = tmpdir("slo");
    let text = std::fs::read_to_string(example()).unwrap();
    let data = root().join("data");
    let text = text
        .replace("latency_s: 0.72", "latency_s: -0.72")
        .replace("../data", data.to_str().unwrap());
    let file = dir.join("neg.yaml");
    std::fs::write(&file, text).unwrap();
    let o = pharos(&[
        "simulate",
        file.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("neg.yaml") && e.contains("slo.latency_s") && e.contains("> 0"),
        "{e}"
    );
}

#[test]
fn a_cluster_too_small_for_the_jobs_is_an_error() {
    let dir = tmpdir("small");
    let o = short_run(&dir, &["--cpus", "5"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("5 vCPUs cannot host the minimum replicas of the 10 jobs"),
        "{e}"
    );
}

#[test]
fn a_broken_experiment_file_is_an_error() {
    let dir = tmpdir("yaml");
    let file = dir.join("x.yaml");
    std::fs::write(
        &file,
        "name: x\ntrace: {path: t.csv}\nclusterr: {cpus: [4]}\npolicies: [aiad]\n",
    )
    .unwrap();
    let o = pharos(&["simulate", file.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("x.yaml") && e.contains("clusterr"), "{e}");
}

#[test]
fn the_faro_replay_file_gives_the_same_run_as_the_csv() {
    let (a, b) = (tmpdir("csv"), tmpdir("jsonl"));
    let json = root().join("data/faro-10jobs/day11_input.json");
    let run = |dir: &Path, extra: &[&str]| {
        let mut args = vec!["--policy", "aiad", "--json"];
        args.extend_from_slice(extra);
        let o = short_run(dir, &args);
        assert!(o.status.success(), "{}", stderr(&o));
        let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let r = &rows[0];
        (
            r["requests"].clone(),
            r["dropped"].clone(),
            r["slo_violation_rate"].clone(),
        )
    };
    // The same day in two formats, jobs in the same order: the same requests, the same
    // random streams, the same result (aiad uses no forecaster, so the history days the
    // CSV run has and the JSON run lacks does not matter).
    assert_eq!(run(&a, &[]), run(&b, &["--trace", json.to_str().unwrap()]));
}
