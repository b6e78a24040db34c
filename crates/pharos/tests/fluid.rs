//! `pharos fluid solve` and `pharos fluid gen` end to end.

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
fn the_worked_example_file_solves_to_its_known_cost() {
    let file = root().join("examples/fluid-worked-example.json");
    let o = pharos(&[
        "fluid",
        "solve",
        file.to_str().unwrap(),
        "--method",
        "lp",
        "--intervals",
        "2000",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Holding cost = h'x0 T + h'lambda T^2 / 2 - objective = 1780 + 6540 - objective: the
    // file's cost_constant, and the cost printed.
    let cost = 8320.0 - s["objective"].as_f64().unwrap();
    assert_eq!(s["cost"].as_f64(), Some(cost));
    assert!(
        (303.6665..303.6665 * (1.0 + 1e-5)).contains(&cost),
        "cost {cost}"
    );
    assert_eq!(s["u"].as_array().unwrap().len(), 2000);
    // Refined on events: the certified bracket closes to 1e-8 of the objective.
    let o = pharos(&[
        "fluid",
        "solve",
        file.to_str().unwrap(),
        "--method",
        "refine",
        "--intervals",
        "10",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (lo, hi) = (
        s["objective"].as_f64().unwrap(),
        s["dual_objective"].as_f64().unwrap(),
    );
    assert!(lo <= hi && hi - lo <= 1e-8 * lo, "{lo} {hi}");
    assert!((8320.0 - lo - 303.6665).abs() < 1e-4);
    // The default, exact: the four intervals of the spec's table, the cost to 1e-6,
    // primal = dual, and the duals in the JSON.
    let o = pharos(&["fluid", "solve", file.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let (lo, hi) = (
        s["objective"].as_f64().unwrap(),
        s["dual_objective"].as_f64().unwrap(),
    );
    assert!((8320.0 - lo - 303.6665).abs() < 3e-4, "{lo}");
    assert!((hi - lo).abs() <= 1e-9 * lo);
    assert_eq!(s["u"].as_array().unwrap().len(), 4);
    assert_eq!(s["dual_controls"].as_array().unwrap().len(), 4);
    assert!(s.get("fallback").is_none());
    let o = pharos(&["fluid", "solve", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("cost 303.66"), "{text}");
}

#[test]
fn the_queue_cap_prototype_falls_back_to_the_lp_and_says_why() {
    let file = root().join("examples/fluid-queue-cap.json");
    let o = pharos(&[
        "fluid",
        "solve",
        file.to_str().unwrap(),
        "--intervals",
        "100",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("the exact solver did not solve it") && out.contains("impulse"),
        "{out}"
    );
    assert!(out.contains("method lp-uniform-100"), "{out}");
}

#[test]
fn generated_instances_are_seeded_and_bad_files_are_named() {
    let generate = |seed: &str| {
        pharos(&[
            "fluid",
            "gen",
            "--k",
            "12",
            "--servers",
            "3",
            "--seed",
            seed,
        ])
        .stdout
    };
    assert_eq!(generate("5"), generate("5"));
    assert_ne!(generate("5"), generate("6"));
    let dir = std::env::temp_dir().join(format!("pharos-fluid-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("g.json");
    std::fs::write(&f, generate("5")).unwrap();
    let o = pharos(&["fluid", "solve", f.to_str().unwrap(), "--intervals", "20"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("objective"));
    std::fs::write(&f, "{\"G\": [[1, 2]], \"H\": [], \"a\": [1], \"b\": [], \"c\": [1], \"alpha\": [1], \"gamma\": [0, 0], \"T\": 1}").unwrap();
    let o = pharos(&["fluid", "solve", f.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("g.json") && e.contains("c has 1 entries, expected 2"),
        "{e}"
    );
}
