//! Shared-cluster experiments: static serving slices against the shared split, on a
//! day of bursty services and the Philly training jobs.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use pharos_experiment::shared::{SharedExperiment, best_static, summary};

/// Loads `yaml` (its `TRACE` the repository's Philly trace) from a file of its own.
fn experiment(yaml: &str) -> Result<SharedExperiment, String> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/philly-gavel/0e4a51.csv");
    let yaml = yaml.replace("TRACE", &data.display().to_string());
    let file = std::env::temp_dir().join(format!(
        "pharos-shared-{}-{}.yaml",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&file, yaml).unwrap();
    let exp = SharedExperiment::load(&file).map_err(|e| e.to_string());
    let _ = std::fs::remove_file(&file);
    exp
}

const YAML: &str = r#"
kind: shared-cluster
name: small
services:
  trace:
    generate:
      minutes: 1440
      jobs:
        - { name: a, kind: bursts, base_rpm: 300, burst_rpm: 1500, every_min: 240, length_min: 30, offset_min: 60 }
        - { name: b, kind: constant, rpm: 300 }
  job:
    slo: { latency_s: 1.0, percentile: 99 }
    processing_time_s: 0.2
    cpus_per_replica: 1
    max_concurrent: 2
    max_queue: 50
    min_replicas: 1
    max_replicas: 16
    initial_replicas: 2
    service_time: { kind: lognormal, loc_s: 0.1, scale_s: 0.09, shape: 0.4 }
cluster: { gpu_type: v100, nodes: 2, gpus_per_node: 8 }
training: { trace: TRACE, from_day: 7, scheduler: { order: fifo, preemption: false } }
static: { serving_gpus: [6, 10], policy: { name: hpa, label: hpa-static } }
policies: [ hpa ]
"#;

#[test]
fn the_shared_split_gives_training_what_a_static_slice_keeps_idle() {
    let exp = experiment(YAML).unwrap();
    let rows = exp.run_all(1).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r.policy.as_str()).collect();
    assert_eq!(names, ["static-6", "static-10", "shared-hpa"]);
    let json = serde_json::to_value(&rows).unwrap();
    for row in json.as_array().unwrap() {
        for key in [
            "policy",
            "slo_violation_rate",
            "training_useful_gpu_hours",
            "mean_jct_h",
        ] {
            assert!(row.get(key).is_some(), "{key} in {row}");
        }
    }
    let table = summary(&exp, &rows);
    eprintln!("{table}");
    let (small, big, shared) = (&rows[0], &rows[1], &rows[2]);
    // The same jobs arrive in every run.
    assert!(small.jobs_arrived > 0);
    assert!(rows.iter().all(|r| r.jobs_arrived == small.jobs_arrived));
    // A slice too small for the bursts violates the SLO; the big one keeps it and
    // leaves training less: its jobs wait longer.
    assert!(
        small.slo_violation_rate > big.slo_violation_rate,
        "{small:?} {big:?}"
    );
    assert!(big.mean_jct_h > small.mean_jct_h);
    // Sharing: the services hold less than the big slice on average, training's jobs
    // finish sooner than beside it with no less work done, and every halt names the
    // service that caused it.
    assert!(shared.mean_serving_gpus < 10.0);
    assert!(shared.mean_jct_h < big.mean_jct_h, "{shared:?} {big:?}");
    assert!(shared.training_useful_gpu_hours >= big.training_useful_gpu_hours);
    assert!(
        shared.preemptions as usize
            == shared
                .events
                .iter()
                .filter(|e| e.kind == "preempted")
                .count()
    );
    for e in shared.events.iter().filter(|e| e.kind == "preempted") {
        assert!(e.message.contains("service "), "{}", e.message);
    }
    assert_eq!(small.preemptions + big.preemptions, 0);
    let best = best_static(&rows, 42, 0.01).map(|r| r.policy.clone());
    let text = table;
    assert!(text.contains("| shared-hpa |"), "{text}");
    if let Some(b) = best {
        assert!(
            text.contains(&format!("best static partition {b}")),
            "{text}"
        );
    }
    // The frontier: each run a point, the static slices one family; GPU-hours without
    // useful training are the cluster's less the useful ones.
    let f = pharos_experiment::shared::frontier(&exp, &rows);
    assert_eq!(f.points.len(), rows.len());
    assert_eq!(f.points[0].family, "static");
    assert_eq!(f.points[2].family, "shared-hpa");
    for (p, r) in f.points.iter().zip(&rows) {
        assert!(p.cost > 0.0 && p.cost + r.training_useful_gpu_hours > 0.0);
        assert_eq!(p.quality[0], r.slo_violation_rate * 100.0);
    }
    assert!(
        (f.points[0].cost
            - f.points[1].cost
            - (rows[1].training_useful_gpu_hours - rows[0].training_useful_gpu_hours))
            .abs()
            < 1e-6
    );
    assert_eq!(
        shared.moves as usize,
        shared.events.iter().filter(|e| e.kind == "moved").count()
    );
}

#[test]
fn bad_shared_experiments_name_what_is_wrong() {
    let e = experiment(&YAML.replace("serving_gpus: [6, 10]", "serving_gpus: [16]")).unwrap_err();
    assert!(e.contains("static.serving_gpus") && e.contains("16"), "{e}");
    let e = experiment(&YAML.replace("from_day: 7", "from_day: 900")).unwrap_err();
    assert!(e.contains("training.from_day"), "{e}");
    let e = experiment(&YAML.replace("gpu_type: v100", "gpu_type: h100")).unwrap_err();
    assert!(e.contains("cluster.gpu_type"), "{e}");
    let e = experiment(&YAML.replace("kind: shared-cluster", "kind: shared")).unwrap_err();
    assert!(e.contains("kind"), "{e}");
}
