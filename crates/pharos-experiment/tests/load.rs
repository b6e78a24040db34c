//! Loading experiment files: templates, overrides, profiles, generated traces, errors.

use std::path::{Path, PathBuf};

use pharos_experiment::{Experiment, ExperimentError, Overrides};
use pharos_sim::Dist;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// An example experiment of the repository, loaded as it is.
fn example(name: &str) -> Experiment {
    Experiment::load(
        &root().join("examples").join(format!("{name}.yaml")),
        &Overrides::default(),
    )
    .unwrap_or_else(|err| panic!("examples/{name}.yaml: {err}"))
}

fn write_yaml(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pharos-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let text = text.replace("@ROOT@", root().to_str().unwrap());
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn the_live_runs_experiments_load() {
    for name in ["sim.yaml", "learned.yaml"] {
        let e = Experiment::load(
            &root().join("examples/live").join(name),
            &Overrides::default(),
        )
        .unwrap_or_else(|err| panic!("examples/live/{name}: {err}"));
        assert_eq!(e.jobs.len(), 3, "{name}");
        assert!(e.trace.minutes() > 0, "{name}");
    }
}

#[test]
fn the_example_loads_as_documented() {
    let e = example("faro-10jobs");
    assert_eq!(e.jobs.len(), 10);
    assert_eq!(e.trace.minutes(), 360);
    assert_eq!(e.cpus, vec![16.0, 32.0, 36.0, 40.0]);
    let names: Vec<&str> = e.policies.iter().map(|p| p.label.as_str()).collect();
    assert_eq!(
        names,
        [
            "fairshare",
            "oneshot",
            "aiad",
            "rayserve",
            "kpa",
            "rayserve-default",
            "kpa-default",
            "hpa",
            "mark",
            "mark-oracle",
            "faro-sum",
            "faro-fair",
            "faro-fairsum",
            "faro-penaltysum",
            "faro-penaltyfairsum",
            "faro-fairsum-oracle"
        ]
    );
    assert_eq!(e.seeds, vec![42]);
    assert!(
        e.jobs
            .iter()
            .all(|j| j.slo.latency_s == 0.72 && j.processing_time_s == 0.18)
    );
    // Day 11 of the trace: ~2.68 million requests; days 1-10 given to forecasters.
    assert_eq!(e.trace.total_requests(), 2_675_770.0);
    assert_eq!(e.day_minutes, Some(360));
    assert_eq!(e.past_rpm.len(), 10);
    assert_eq!(e.past_rpm[0].len(), 3600);
    // The last history day is day 10 (2.39 million requests over the ten jobs).
    let day10: f64 = e
        .past_rpm
        .iter()
        .map(|p| p[3240..].iter().sum::<f64>())
        .sum();
    assert_eq!(day10, 2_388_149.0);
    let ctx = e.context();
    assert_eq!(ctx.forecast.past_rpm.len(), 10);
    assert_eq!(ctx.forecast.truth_rpm[0], e.jobs[0].requests_per_min);
    let text = std::fs::read_to_string(root().join("examples/faro-10jobs.yaml")).unwrap();
    let at = |from: &str, to: &str| {
        let bad = text
            .replace(from, to)
            .replace("../data", root().join("data").to_str().unwrap());
        Experiment::load(&write_yaml("prev.yaml", &bad), &Overrides::default())
            .err()
            .unwrap()
            .to_string()
    };
    let err = at("history_days: 1-10", "history_days: 1-99");
    assert!(
        err.contains("history_days") && err.contains("not before"),
        "{err}"
    );
    let err = at("history_days: 1-10", "history_days: [0, 1]");
    assert!(
        err.contains("history_days") && err.contains("no day 0"),
        "{err}"
    );
    let err = at("history_days: 1-10", "history_days: [9, 8]");
    assert!(err.contains("must rise"), "{err}");
    let err = at("history_days: 1-10", "history_days: 1-x");
    assert!(
        err.contains("history_days") || err.contains("not a day"),
        "{err}"
    );
    assert_eq!(e.runs().len(), 16 * 4);
}

const GENERATED: &str = r#"
name: gen
trace:
  generate:
    minutes: 30
    jobs:
      - { name: steady, kind: constant, rpm: 600 }
      - { name: wave, kind: diurnal, mean_rpm: 300, amplitude_rpm: 200, period_min: 30 }
job:
  slo: { latency_s: 0.5 }
  service_time: { kind: exponential, mean_s: 0.05 }
overrides:
  wave:
    cpus_per_replica: 2
    service_time:
      kind: profile
      file: @ROOT@/data/model-profiles/torchvision_latency.csv
      model: resnet18
policies:
  - aiad
  - { name: aiad, label: aiad-fast, upscale_delay_s: 10 }
  - { name: kpa, target_concurrency: 2 }
cluster: { cpus: [8] }
seeds: [1, 2]
"#;

#[test]
fn templates_overrides_profiles_and_labels() {
    let e = Experiment::load(&write_yaml("gen.yaml", GENERATED), &Overrides::default()).unwrap();
    let (steady, wave) = (&e.jobs[0], &e.jobs[1]);
    assert_eq!(steady.service_time, Dist::Exponential { mean_s: 0.05 });
    assert_eq!(
        steady.processing_time_s, 0.05,
        "defaults to the service mean"
    );
    assert_eq!(steady.cpus_per_replica, 1.0);
    assert_eq!(wave.cpus_per_replica, 2.0);
    // resnet18 on one CPU thread: p50 44.603 ms, p99 115.97 ms.
    match &wave.service_time {
        Dist::Lognormal {
            loc_s,
            scale_s,
            shape,
        } => {
            assert_eq!(*loc_s, 0.0);
            assert!((scale_s - 0.044603).abs() < 1e-9);
            assert!((shape - (115.97f64 / 44.603).ln() / 2.326_347_874_040_841).abs() < 1e-9);
        }
        d => panic!("not a log-normal: {d:?}"),
    }
    assert_eq!(e.policies[1].label, "aiad-fast");
    assert_eq!(e.policies[2].label, "kpa");
    // The grid in its order: cpus, policies, seeds.
    let results = e.run_all(2, |_| {}).unwrap();
    let order: Vec<(String, u64)> = results.iter().map(|r| (r.policy.clone(), r.seed)).collect();
    let want: Vec<(String, u64)> = ["aiad", "aiad", "aiad-fast", "aiad-fast", "kpa", "kpa"]
        .iter()
        .zip([1, 2, 1, 2, 1, 2])
        .map(|(p, s)| (p.to_string(), s))
        .collect();
    assert_eq!(order, want);
    // A label selects its entry with its parameters.
    let ov = Overrides {
        policies: vec!["aiad-fast".into(), "hpa".into()],
        ..Default::default()
    };
    let e2 = Experiment::load(&write_yaml("gen2.yaml", GENERATED), &ov).unwrap();
    assert_eq!(e2.policies[0].params["upscale_delay_s"], 10);
    assert_eq!(e2.policies[1].name, "hpa");
}

/// A profile with `max_batch`: the GPU rows up to it, by batch size, and batch 1 as the
/// single-request time; bad combinations named.
#[test]
fn a_batching_profile_gives_the_batch_times_up_to_its_size() {
    let gpu = GENERATED.replace(
        "      model: resnet18\n",
        "      model: resnet50\n      device: gpu-NVIDIA_H100_80GB_HBM3\n      cpu_threads: 0\n      max_batch: 32\n",
    );
    assert_ne!(gpu, GENERATED);
    let e = Experiment::load(&write_yaml("batch.yaml", &gpu), &Overrides::default()).unwrap();
    let (steady, wave) = (&e.jobs[0], &e.jobs[1]);
    assert!(steady.batch_service.is_empty());
    let sizes: Vec<u32> = wave.batch_service.iter().map(|(b, _)| *b).collect();
    assert_eq!(sizes, [1, 2, 4, 8, 16, 32]);
    assert_eq!(wave.service_time, wave.batch_service[0].1);
    // resnet50 at batch 32: p50 4.372 ms (the log-normal's median).
    match &wave.batch_service[5].1 {
        Dist::Lognormal { scale_s, .. } => assert!((scale_s - 0.004372).abs() < 1e-9, "{scale_s}"),
        d => panic!("not a log-normal: {d:?}"),
    }
    e.run_all(1, |_| {}).unwrap();
    let err = |from: &str, to: &str| {
        let text = gpu.replace(from, to);
        assert_ne!(text, gpu);
        load_err("batch-bad.yaml", &text)
    };
    let m = err("max_batch: 32", "max_batch: 1");
    assert!(m.contains("max_batch") && m.contains("must be 2 to"), "{m}");
    let m = err("max_batch: 32", "max_batch: 48");
    assert!(
        m.contains("max_batch") && m.contains("[1, 2, 4, 8, 16, 32, 64, 128]"),
        "{m}"
    );
    let m = err("max_batch: 32", "max_batch: 32\n      batch: 4");
    assert!(m.contains("batch") && m.contains("leave batch at 1"), "{m}");
    // CPU rows are batch 1 only.
    let m = err(
        "device: gpu-NVIDIA_H100_80GB_HBM3\n      cpu_threads: 0",
        "device: cpu\n      cpu_threads: 1",
    );
    assert!(m.contains("batch sizes [1]"), "{m}");
}

fn load_err(name: &str, text: &str) -> String {
    match Experiment::load(&write_yaml(name, text), &Overrides::default()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{name} loaded"),
    }
}

#[test]
fn mistakes_are_named() {
    let e = load_err("dup.yaml", &GENERATED.replace("label: aiad-fast, ", ""));
    assert!(e.contains("two policies are labelled \"aiad\""), "{e}");
    let e = load_err("ov.yaml", &GENERATED.replace("  wave:\n", "  wavy:\n"));
    assert!(
        e.contains("overrides.wavy") && e.contains("no job of that name"),
        "{e}"
    );
    let e = load_err(
        "prof.yaml",
        &GENERATED.replace("model: resnet18", "model: resnet999"),
    );
    assert!(e.contains("no profile for model \"resnet999\""), "{e}");
    let e = load_err(
        "dist.yaml",
        &GENERATED.replace("mean_s: 0.05", "mean_s: -1"),
    );
    assert!(e.contains("service_time.mean_s"), "{e}");
    let e = load_err(
        "param.yaml",
        &GENERATED.replace("upscale_delay_s: 10", "upscale_delay: 10"),
    );
    assert!(
        e.contains("policy aiad") && e.contains("upscale_delay"),
        "{e}"
    );
    let e = load_err("field.yaml", &GENERATED.replace("rpm: 600", "rmp: 600"));
    assert!(e.contains("rmp"), "{e}");
    let e = load_err("gen.yaml", &GENERATED.replace("rpm: 600", "rpm: -600"));
    assert!(e.contains("steady") && e.contains("rpm"), "{e}");
    let missing = Experiment::load(Path::new("/nonexistent/x.yaml"), &Overrides::default());
    assert!(matches!(missing, Err(ExperimentError::Io { .. })));
}

#[test]
fn a_replacement_trace_of_several_days_keeps_its_past_and_scores_like_forecast_eval() {
    use pharos_forecast::eval::{EvalConfig, EvalSet, evaluate, score_run};
    // Three 60-minute days of two jobs with a daily pattern and a trend.
    let value = |job: usize, day: u32, m: usize| {
        ((100 + 40 * job) as f64 * (1.0 + 0.1 * day as f64)
            + 30.0 * (std::f64::consts::TAU * m as f64 / 60.0).sin())
        .round()
    };
    let mut csv = String::from("job,day,minute,requests\n");
    for day in 1..=3 {
        for job in 0..2 {
            for m in 0..60 {
                csv.push_str(&format!("j{job},{day},{m},{}\n", value(job, day, m)));
            }
        }
    }
    let trace = write_yaml("days.csv", &csv);
    let exp = write_yaml(
        "days.yaml",
        "name: days\ntrace:\n  generate: { minutes: 5, jobs: [{ name: g, kind: constant, rpm: 10 }] }\n\
         job:\n  slo: { latency_s: 0.5 }\n  service_time: { kind: constant, value_s: 0.05 }\n\
         cluster: { cpus: [8] }\n\
         policies: [{ name: faro-fairsum, forecaster: seasonal-naive+cal }, hpa]\n",
    );
    let ov = Overrides {
        trace: Some(trace.clone()),
        ..Overrides::default()
    };
    let e = Experiment::load(&exp, &ov).unwrap();
    // The last day is replayed; the two before it are the past.
    assert_eq!(e.trace.minutes(), 60);
    assert_eq!(e.jobs[1].requests_per_min[7], value(1, 3, 7));
    assert_eq!(e.day_minutes, Some(60));
    assert_eq!(e.past_rpm.len(), 2);
    assert_eq!(e.past_rpm[1].len(), 120);
    assert_eq!(e.past_rpm[1][61], value(1, 2, 1));
    // --day picks another day: only the days before it are the past.
    let e2 = Experiment::load(
        &exp,
        &Overrides {
            day: Some(2),
            ..ov.clone()
        },
    )
    .unwrap();
    assert_eq!(e2.past_rpm[0].len(), 60);
    // What simulate reports of the forecaster equals what forecast eval gives on the
    // same days.
    let scores = e.forecast_scores(15, 7).unwrap();
    assert_eq!(scores.len(), 1, "hpa does not forecast");
    let raw = pharos_trace::read_trace(&trace, None).unwrap();
    let set = EvalSet::from_days(
        raw.series
            .into_iter()
            .map(|s| (s.job, s.day.unwrap(), s.requests_per_min)),
    )
    .unwrap();
    let cfg = EvalConfig {
        train_days: vec![1, 2],
        test_days: vec![3],
        context: 15,
        horizon: 7,
    };
    let spec = "seasonal-naive+cal".parse().unwrap();
    let eval = evaluate(&set, &cfg, spec).unwrap();
    assert_eq!(scores[0].rmse, eval.rmse);
    assert_eq!(scores[0].windows, eval.windows);
    assert!(scores[0].rmse > 0.0);
    // Scoring a run with no past at all still works (every origin after the context).
    let mut f =
        pharos_forecast::ForecasterSpec::of(pharos_forecast::BaseModel::LastValue).make(60, &[]);
    let run = vec![vec![1.0; 30]];
    let r = score_run(
        f.as_mut(),
        "last-value".into(),
        &["a".into()],
        &[],
        &run,
        15,
        7,
    )
    .unwrap();
    assert_eq!((r.windows, r.rmse), (9, 0.0));
}

/// A sweep runs one policy per value of its knob; the frontier has a point per value
/// and cluster size, and a tighter HPA target costs more and violates less here.
#[test]
fn a_sweep_walks_a_knob_and_makes_a_frontier() {
    let text = GENERATED.replace(
        "  - { name: kpa, target_concurrency: 2 }\n",
        "  - { name: hpa, label: h, sweep: { target: [0.3, 0.9] } }\n",
    );
    let e = Experiment::load(&write_yaml("sweep.yaml", &text), &Overrides::default()).unwrap();
    let labels: Vec<&str> = e.policies.iter().map(|p| p.label.as_str()).collect();
    assert_eq!(
        labels,
        ["aiad", "aiad-fast", "h[target=0.3]", "h[target=0.9]"]
    );
    assert_eq!(e.policies[2].params["target"], 0.3);
    assert_eq!(e.policies[3].family(), "h");
    // The family's label picks all its points.
    let ov = Overrides {
        policies: vec!["h".into()],
        ..Default::default()
    };
    let e = Experiment::load(&write_yaml("sweep2.yaml", &text), &ov).unwrap();
    assert_eq!(e.policies.len(), 2);
    let results = e.run_all(2, |_| {}).unwrap();
    let f = pharos_experiment::report::frontier(&e, &results);
    assert_eq!(
        f.points.len(),
        2,
        "one per value (means over the two seeds)"
    );
    let (tight, loose) = (&f.points[0], &f.points[1]);
    assert_eq!(tight.knob.as_ref().unwrap().1, 0.3);
    assert!(tight.cost > loose.cost, "{tight:?} {loose:?}");
    assert!(tight.quality[0] <= loose.quality[0], "{tight:?} {loose:?}");
    assert!(tight.quality[4] > 0.0, "a p99 latency");
    let dir = std::env::temp_dir().join(format!("pharos-sweep-{}", std::process::id()));
    let written = pharos_experiment::report::write_all(&e, &results, &dir).unwrap();
    let md = std::fs::read_to_string(dir.join("frontier.md")).unwrap();
    assert!(md.contains("| h | target=0.3 |"), "{md}");
    assert!(written.contains(&dir.join("frontier.svg")));
    let _ = std::fs::remove_dir_all(&dir);
    // Mistakes in a sweep are named.
    for (bad, says) in [
        ("sweep: { target: [] }", "1 to 64 are allowed"),
        (
            "sweep: { target: [0.5], tolerance: [0.1] }",
            "names 2 knobs",
        ),
        ("sweep: { target: 0.5 }", "target is not a list"),
        ("target: 0.5, sweep: { target: [0.4] }", "also set outside"),
        ("sweep: { targett: [0.5] }", "targett"),
    ] {
        let e = load_err(
            "badsweep.yaml",
            &text.replace("sweep: { target: [0.3, 0.9] }", bad),
        );
        assert!(e.contains(says), "{bad}: {e}");
    }
}

/// The frontier and the 20-job examples load: their sweeps expand and the 20-job input
/// (Faro's replay format) is whole.
#[test]
fn the_frontier_and_twenty_job_examples_load() {
    let f = example("faro-frontier");
    let families: std::collections::BTreeSet<&str> =
        f.policies.iter().map(|p| p.family()).collect();
    assert_eq!(f.policies.len(), 46);
    assert_eq!(families.len(), 10, "{families:?}");
    let t = example("faro-20jobs");
    assert_eq!(t.jobs.len(), 20);
    assert_eq!(t.trace.minutes(), 360);
    assert_eq!(t.trace.total_requests(), 5_351_540.0);
    assert_eq!(t.cpus, vec![60.0, 70.0, 80.0]);
}
