//! `pharos graph` end to end.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn pharos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pharos"))
        .args(args)
        .output()
        .expect("pharos runs")
}

#[test]
fn a_graph_experiment_runs_and_writes_its_files() {
    let file = root().join("examples/graphs/chain.yaml");
    let out = std::env::temp_dir().join(format!("pharos-graph-{}", std::process::id()));
    let run = |dir: &Path| {
        pharos(&[
            "graph",
            file.to_str().unwrap(),
            "--cpus",
            "6",
            "--seed",
            "1",
            "--policy",
            "fluid",
            "--policy",
            "hpa",
            "--out",
            dir.to_str().unwrap(),
        ])
    };
    let o = run(&out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("| fluid |") && stdout.contains("| hpa |"),
        "{stdout}"
    );
    assert!(!stdout.contains("| kpa |"));
    for f in [
        "results.json",
        "summary.md",
        "timing.json",
        "cpu_s.svg",
        "mean_ms_chain.svg",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["runs"].as_array().unwrap().len(), 4);
    // The same seed gives the same results.json.
    let again = out.join("again");
    let o = run(&again);
    assert!(o.status.success());
    assert_eq!(
        std::fs::read(out.join("results.json")).unwrap(),
        std::fs::read(again.join("results.json")).unwrap()
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_bad_graph_file_is_named() {
    let dir = std::env::temp_dir().join(format!("pharos-graph-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.yaml");
    std::fs::write(
        &f,
        "name: bad\ntrace: { generate: { minutes: 5, jobs: [ { name: l, kind: constant, rpm: 60 } ] } }\napps: [ { name: a, load: l, functions: [ { name: x, mu: 0, resource: [1, 1], timeout_s: 1, queue_cap: 1 } ] } ]\ncluster: { capacity: [2] }\npolicies: [fluid]\n",
    )
    .unwrap();
    let o = pharos(&["graph", f.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("bad.yaml") && e.contains("mu"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
