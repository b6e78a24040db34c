//! Training-scheduler experiments on the Philly-derived trace 2869ce (533 jobs).

use std::path::Path;

use pharos_experiment::training::TrainingExperiment;

#[test]
fn the_2869ce_trace_runs_every_policy_and_backfill_relieves_head_of_line_blocking() {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/training/philly-2869ce.yaml");
    let exp = TrainingExperiment::load(&file).unwrap();
    let rows = exp.run_all().unwrap();
    assert_eq!(rows.len(), 2 * exp.policies.len());
    for r in &rows {
        assert_eq!(r.jobs, 533, "{}: every job completes", r.policy);
        assert_eq!(r.never_ran, 0);
        assert!(r.gpu_utilisation > 0.0 && r.gpu_utilisation <= 1.0);
        assert!(r.median_jct_h <= r.p95_jct_h);
    }
    let busy = |p: &str| {
        rows.iter()
            .find(|r| r.cluster == "busy" && r.policy == p)
            .unwrap()
    };
    // Gang FIFO without backfill: jobs wait behind a big one that cannot start.
    assert!(
        busy("fifo-no-backfill").waited_over_1h > 1.5 * busy("gang-fifo-backfill").waited_over_1h
    );
    // Only the preemptive policies preempt.
    assert_eq!(busy("gang-fifo-backfill").preemptions, 0);
    assert!(busy("las").preemptions > 0);
    // Deterministic: the same experiment gives the same numbers.
    let again = exp.run_all().unwrap();
    for (a, b) in rows.iter().zip(&again) {
        assert_eq!(
            (a.mean_jct_h, a.gpu_utilisation, a.preemptions),
            (b.mean_jct_h, b.gpu_utilisation, b.preemptions)
        );
    }
}

#[test]
fn bad_training_files_are_named() {
    let dir = std::env::temp_dir().join(format!("pharos-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("t.yaml");
    std::fs::write(&f, "kind: training\nname: t\ntrace: missing.csv\nclusters: [ { name: c, pools: [ { gpu_type: v100, nodes: 1, gpus_per_node: 8 } ] } ]\npolicies: [ { label: x, order: fifo } ]\n").unwrap();
    let e = TrainingExperiment::load(&f).unwrap_err().to_string();
    assert!(e.contains("missing.csv"), "{e}");
    std::fs::write(&f, "kind: training\nname: t\ntrace: missing.csv\nclusters: [ { name: c, pools: [ { gpu_type: v100, nodes: 1, gpus_per_node: 8 } ] } ]\npolicies: [ { label: x, order: sometimes } ]\n").unwrap();
    let e = TrainingExperiment::load(&f).unwrap_err().to_string();
    assert!(e.contains("sometimes") || e.contains("order"), "{e}");
    // A misspelt parameter is refused, not ignored.
    std::fs::write(&f, "kind: training\nname: t\ntrace: missing.csv\nclusters: [ { name: c, pools: [ { gpu_type: v100, nodes: 1, gpus_per_node: 8 } ] } ]\npolicies: [ { label: x, order: fifo, preemtion: false } ]\n").unwrap();
    let e = TrainingExperiment::load(&f).unwrap_err().to_string();
    assert!(e.contains("preemtion"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
