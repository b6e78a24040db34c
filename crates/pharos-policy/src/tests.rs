use pharos_core::{ClusterView, JobCounters, JobView, Slo};
use serde_json::json;

use super::*;

/// A job with `replicas` ready replicas whose counters grew at constant rates since 0:
/// `lat_s` mean latency at `rate` completions per second, `ongoing` requests in the
/// system, `util` of the replicas busy.
fn job(
    now: f64,
    replicas: u32,
    rate: f64,
    lat_s: f64,
    ongoing: f64,
    util: f64,
) -> JobView<'static> {
    let completed = (rate * now) as u64;
    JobView {
        name: "j",
        slo: Slo::p99(0.72),
        processing_time_s: 0.18,
        cpus_per_replica: 1.0,
        min_replicas: 1,
        max_replicas: 100,
        max_concurrent: 4,
        target_replicas: replicas,
        ready_replicas: replicas,
        starting_replicas: 0,
        queued: 0,
        in_flight: 0,
        accept_rate: 1.0,
        counters: JobCounters {
            arrivals: completed,
            dropped: 0,
            completed,
            latency_sum_s: completed as f64 * lat_s,
            ongoing_req_s: ongoing * now,
            busy_replica_s: util * replicas as f64 * now,
            ready_replica_s: replicas as f64 * now,
        },
        minute_arrivals: &[],
        cold_start_s: None,
    }
}

fn view<'a>(now: f64, jobs: &'a [JobView<'a>]) -> ClusterView<'a> {
    ClusterView {
        now_s: now,
        capacity_cpus: 32.0,
        free_cpus: 0.0,
        jobs,
    }
}

/// Call the policy at its interval with a job in a steady state; return the first
/// (time, target) it decides.
fn first_change(
    p: &mut dyn pharos_core::InferencePolicy,
    replicas: u32,
    rate: f64,
    lat_s: f64,
    ongoing: f64,
    util: f64,
    until_s: f64,
) -> Option<(f64, u32)> {
    let mut t = p.first_call_s();
    while t <= until_s {
        let jobs = [job(t, replicas, rate, lat_s, ongoing, util)];
        let d = p.decide(&view(t, &jobs));
        if let Some(x) = d.target_replicas[0] {
            return Some((t, x));
        }
        t += p.interval_s();
    }
    None
}

#[test]
fn fairshare_splits_the_cluster_equally() {
    let jobs: Vec<JobView> = (0..10).map(|_| job(0.0, 1, 0.0, 0.0, 0.0, 0.0)).collect();
    let mut p = FairShare::new(FairShareParams::default());
    for (cpus, want) in [(16.0, 1), (32.0, 3), (36.0, 3), (40.0, 4)] {
        let v = ClusterView {
            capacity_cpus: cpus,
            ..view(0.0, &jobs)
        };
        let d = p.initial_decision(&v);
        assert!(
            d.target_replicas.iter().all(|t| *t == Some(want)),
            "{cpus}: {d:?}"
        );
        assert!(p.decide(&v).is_unchanged());
    }
    let mut p = FairShare::new(FairShareParams {
        replicas_per_job: Some(2),
    });
    assert_eq!(
        p.initial_decision(&view(0.0, &jobs)).target_replicas[0],
        Some(2)
    );
}

#[test]
fn aiad_waits_for_sustained_conditions() {
    let mut p = build("aiad", &json!(null)).unwrap();
    // Latency 1 s over a 0.72 s SLO: +1 at the third consecutive check (30 s).
    assert_eq!(
        first_change(&mut *p, 5, 10.0, 1.0, 0.0, 0.0, 1000.0),
        Some((30.0, 6))
    );
    // Under the SLO: -1 after 60 checks (600 s).
    let mut p = build("aiad", &json!({})).unwrap();
    assert_eq!(
        first_change(&mut *p, 5, 10.0, 0.2, 0.0, 0.0, 1000.0),
        Some((600.0, 4))
    );
}

#[test]
fn oneshot_scales_in_proportion_to_latency() {
    let mut p = build("oneshot", &json!({"upscale_delay_s": 10})).unwrap();
    // 1.44 s is twice the SLO: 5 -> 10 replicas at the first check.
    assert_eq!(
        first_change(&mut *p, 5, 10.0, 1.44, 0.0, 0.0, 100.0),
        Some((10.0, 10))
    );
    let mut p = build("oneshot", &json!({"downscale_delay_s": 20})).unwrap();
    // Half the SLO: 10 -> 5.
    assert_eq!(
        first_change(&mut *p, 10, 10.0, 0.36, 0.0, 0.0, 100.0),
        Some((20.0, 5))
    );
}

/// The published Oneshot averages refused requests into its latency (at the time a
/// refusal takes) and drops an action for a job still starting replicas; both can be
/// turned off.
#[test]
fn oneshot_and_aiad_measure_and_wait_as_published() {
    // One replica: 20 requests/s arrive, 5/s are served in 2.88 s (4x the SLO), 15/s
    // are refused.
    let overloaded = |now: f64, starting: u32| {
        let mut j = job(now, 1, 5.0, 2.88, 0.0, 1.0);
        j.counters.dropped = (15.0 * now) as u64;
        j.counters.arrivals += j.counters.dropped;
        j.starting_replicas = starting;
        j
    };
    let first = |p: &mut dyn pharos_core::InferencePolicy, starting_until: f64| {
        let mut t = p.first_call_s();
        while t <= 200.0 {
            let jobs = [overloaded(t, u32::from(t <= starting_until))];
            if let Some(x) = p.decide(&view(t, &jobs)).target_replicas[0] {
                return Some((t, x));
            }
            t += p.interval_s();
        }
        None
    };
    // Published: (5 x 2.88 + 15 x 0.009) / 20 = 0.7268 s, just over 0.72: 1 -> 2.
    let mut p = build("oneshot", &json!({})).unwrap();
    assert_eq!(first(&mut *p, -1.0), Some((30.0, 2)));
    // The served requests only: 2.88 / 0.72 = 4x.
    let mut p = build("oneshot", &json!({"drop_latency_s": null})).unwrap();
    assert_eq!(first(&mut *p, -1.0), Some((30.0, 4)));
    // Replicas still starting at the third check: that action is lost, the count starts
    // over, and the next comes three checks later.
    let mut p = build("oneshot", &json!({})).unwrap();
    assert_eq!(first(&mut *p, 30.0), Some((60.0, 2)));
    let mut p = build("aiad", &json!({"wait_while_scaling": false})).unwrap();
    assert_eq!(first(&mut *p, 30.0), Some((30.0, 2)));
    // A target waiting for capacity (nothing starting) does not hold the job.
    let mut p = build("oneshot", &json!({})).unwrap();
    let mut t = p.first_call_s();
    let got = loop {
        let mut j = overloaded(t, 0);
        j.target_replicas = 3;
        if let Some(x) = p.decide(&view(t, &[j])).target_replicas[0] {
            break (t, x);
        }
        t += p.interval_s();
        assert!(t < 100.0);
    };
    assert_eq!(got, (30.0, 4), "ceil(3 x 0.72675 / 0.72)");
    // Nothing served while requests came (every one refused): over the SLO, whatever
    // the refusals took.
    let mut p = build("oneshot", &json!({})).unwrap();
    let mut t = p.first_call_s();
    let got = loop {
        let mut j = job(t, 1, 0.0, 0.0, 0.0, 0.0);
        j.counters.dropped = (15.0 * t) as u64;
        j.counters.arrivals = j.counters.dropped;
        if let Some(x) = p.decide(&view(t, &[j])).target_replicas[0] {
            break (t, x);
        }
        t += p.interval_s();
        assert!(t < 100.0);
    };
    assert_eq!(got, (30.0, 100), "to the job's maximum");
    let e = build("oneshot", &json!({"drop_latency_s": -1}))
        .err()
        .unwrap();
    assert!(e.to_string().contains("drop_latency_s"), "{e}");
}

/// Ray Serve's `max_replicas`, Knative's max-scale and an HPA's `maxReplicas` cap what
/// each asks for.
#[test]
fn the_peers_replica_caps_hold() {
    for (name, params) in [
        ("rayserve", json!({"interval_s": 1.0, "max_replicas": 6})),
        ("kpa", json!({"max_replicas": 6})),
        ("hpa", json!({"target": 0.1, "max_replicas": 6})),
    ] {
        let mut p = build(name, &params).unwrap();
        // 200 requests in the system and every replica busy: each wants far more than 6.
        let got = first_change(&mut *p, 4, 0.0, 0.0, 200.0, 1.0, 200.0);
        assert_eq!(got.map(|x| x.1), Some(6), "{name}");
        let e = build(name, &json!({"max_replicas": 0})).err().unwrap();
        assert!(e.to_string().contains("max_replicas"), "{name}: {e}");
    }
}

/// A price per replica is for the separable objectives only.
#[test]
fn replica_cost_is_refused_for_the_fairness_objectives() {
    for name in ["faro-fair", "faro-fairsum", "faro-penaltyfairsum"] {
        let e = build(name, &json!({"prediction": "none", "replica_cost": 0.1}))
            .err()
            .unwrap();
        assert!(e.to_string().contains("replica_cost"), "{name}: {e}");
    }
    for name in ["faro-sum", "faro-penaltysum"] {
        build(name, &json!({"prediction": "none", "replica_cost": 0.1})).unwrap();
    }
}

#[test]
fn rayserve_targets_ongoing_requests_per_replica() {
    let mut p = build("rayserve", &json!({"interval_s": 1.0})).unwrap();
    // 20 ongoing requests, target 2 per replica: 10 replicas, after more than 30 periods.
    assert_eq!(
        first_change(&mut *p, 4, 0.0, 0.0, 20.0, 0.0, 100.0),
        Some((31.0, 10))
    );
    let mut p = build(
        "rayserve",
        &json!({"interval_s": 1.0, "downscale_delay_s": 5.0}),
    )
    .unwrap();
    assert_eq!(
        first_change(&mut *p, 4, 0.0, 0.0, 2.0, 0.0, 100.0),
        Some((6.0, 1))
    );
}

#[test]
fn kpa_uses_the_hard_concurrency_limit_as_target() {
    let mut p = build("kpa", &json!(null)).unwrap();
    // 28 in the system, 4 x 0.7 = 2.8 per pod: 10 pods, at the first tick (panic: 10/2 >= 2).
    assert_eq!(
        first_change(&mut *p, 2, 0.0, 0.0, 28.0, 0.0, 100.0),
        Some((2.0, 10))
    );
    // With the knative default target of 100 and little load: scale down, at most halving.
    let mut p = build("kpa", &json!({"target_concurrency": 100.0})).unwrap();
    assert_eq!(
        first_change(&mut *p, 8, 0.0, 0.0, 5.0, 0.0, 100.0),
        Some((2.0, 4))
    );
}

#[test]
fn hpa_scales_on_utilisation_with_tolerance_and_limits() {
    let mut p = build("hpa", &json!(null)).unwrap();
    // 100% busy against 80%: ratio 1.25 -> ceil(4 x 1.25) = 5.
    assert_eq!(
        first_change(&mut *p, 4, 0.0, 0.0, 0.0, 1.0, 100.0),
        Some((15.0, 5))
    );
    // 85% is within the 10% tolerance: no change.
    let mut p = build("hpa", &json!({})).unwrap();
    assert_eq!(first_change(&mut *p, 4, 0.0, 0.0, 0.0, 0.85, 100.0), None);
    // Scale-up is limited to max(+4, x2) per period.
    let mut p = build("hpa", &json!({"target": 0.1})).unwrap();
    assert_eq!(
        first_change(&mut *p, 2, 0.0, 0.0, 0.0, 1.0, 100.0),
        Some((15.0, 6))
    );
}

#[test]
fn bad_names_and_parameters_are_reported() {
    let e = build("nope", &json!(null)).err().unwrap();
    assert!(e.to_string().contains("unknown policy \"nope\""), "{e}");
    assert!(e.to_string().contains("fairshare"));
    let e = build("aiad", &json!({"interval": 5})).err().unwrap();
    assert!(e.to_string().contains("unknown field `interval`"), "{e}");
    let e = build("hpa", &json!({"target": -1.0})).err().unwrap();
    assert!(e.to_string().contains("target must be"), "{e}");
    for name in POLICY_NAMES {
        let p = build(name, &json!(null)).unwrap();
        assert_eq!(p.name(), name);
    }
    let e = build("faro-sum", &json!({"forecaster": "oracle"}))
        .err()
        .unwrap();
    assert!(e.to_string().contains("oracle"), "{e}");
    let e = build("faro-sum", &json!({"quantile": 1.5})).err().unwrap();
    assert!(e.to_string().contains("quantiles"), "{e}");
}

/// A job whose history shows `rpm` requests every minute so far.
fn busy_job<'a>(now: f64, replicas: u32, history: &'a [u32]) -> JobView<'a> {
    JobView {
        minute_arrivals: history,
        ..job(now, replicas, 0.0, 0.0, 0.0, 0.0)
    }
}

#[test]
fn mark_sizes_each_job_by_its_peak_rate_alone() {
    let mut p = build("mark", &json!({"forecaster": "last-value"})).unwrap();
    let (a, b) = ([1200u32], [300u32]);
    let jobs = [busy_job(60.0, 1, &a), busy_job(60.0, 1, &b)];
    // 20 req/s x 0.18 s / 0.72 s = 5 replicas; 5 req/s -> 1.25 -> 2.
    let d = p.decide(&view(60.0, &jobs));
    assert_eq!(d.target_replicas, vec![Some(5), Some(2)]);
    // Between predictive runs only the reactive loop acts (nothing here).
    assert!(p.decide(&view(70.0, &jobs)).is_unchanged());
}

#[test]
fn faro_splits_the_capacity_by_load_and_never_exceeds_it() {
    let (a, b) = ([1200u32; 5], [300u32; 5]);
    for name in [
        "faro-sum",
        "faro-fairsum",
        "faro-penaltysum",
        "faro-penaltyfairsum",
        "faro-fair",
    ] {
        let mut p = build(name, &json!({"forecaster": "last-value"})).unwrap();
        let jobs = [busy_job(300.0, 2, &a), busy_job(300.0, 2, &b)];
        let v = ClusterView {
            capacity_cpus: 10.0,
            ..view(300.0, &jobs)
        };
        let d = p.decide(&v);
        let x: Vec<u32> = d.target_replicas.iter().map(|t| t.unwrap()).collect();
        assert!(x.iter().sum::<u32>() <= 10, "{name}: {x:?}");
        assert!(x[0] > x[1] && x[1] >= 1, "{name}: {x:?}");
        assert!(
            d.accept_rate
                .iter()
                .all(|a| a.is_some_and(|a| (0.0..=1.0).contains(&a)))
        );
    }
}

#[test]
fn faro_explains_its_decisions_for_people() {
    let (a, b) = ([1200u32; 5], [300u32; 5]);
    let mut p = build("faro-fairsum", &json!({"forecaster": "last-value"})).unwrap();
    let jobs = [busy_job(300.0, 2, &a), busy_job(300.0, 2, &b)];
    let v = ClusterView {
        capacity_cpus: 10.0,
        ..view(300.0, &jobs)
    };
    let d = p.decide(&v);
    let e = p.explain().expect("a predictive decision is explained");
    assert_eq!(e.len(), 2);
    for (i, x) in e.iter().enumerate() {
        let chosen = d.target_replicas[i].unwrap();
        let Some(pharos_core::Explanation::Planned {
            replicas,
            peak_rate_rps,
            candidates,
            quantile,
            ..
        }) = x
        else {
            panic!("a planned explanation: {x:?}");
        };
        assert_eq!(*replicas, chosen);
        // The busy job's predicted peak is the last minute's 1,200 requests.
        if i == 0 {
            assert!((peak_rate_rps - 20.0).abs() < 1e-6, "{x:?}");
        }
        assert!(
            candidates.iter().any(|c| c.chosen && c.replicas == chosen),
            "{x:?}"
        );
        // More replicas never predict a longer latency.
        let l: Vec<f64> = candidates
            .iter()
            .map(|c| c.latency_s.unwrap_or(f64::INFINITY))
            .collect();
        assert!(l.windows(2).all(|w| w[1] <= w[0] + 1e-12), "{l:?}");
        assert!(*quantile >= 0.6 - 1e-9);
        // People read it as JSON (the API's decision records, the dashboard).
        let v = serde_json::to_value(x).unwrap();
        for key in [
            "quantile",
            "peak_rate_rps",
            "replicas",
            "accept_rate",
            "candidates",
            "objective",
        ] {
            assert!(v.get(key).is_some(), "{key} in {v}");
        }
        for key in ["replicas", "latency_s", "utility", "chosen"] {
            assert!(v["candidates"][0].get(key).is_some(), "{key} in {v}");
        }
    }
    // A decision of the reactive loop says so; an unchanged job says nothing.
    let slow = [job(310.0, 3, 10.0, 2.0, 0.0, 0.0)];
    let mut r = build("faro-sum", &json!({"reactive_checks": 1})).unwrap();
    let d = r.decide(&view(310.0, &slow));
    let e = r.explain().unwrap();
    assert_eq!(d.target_replicas[0].is_some(), e[0].is_some(), "{e:?}");
    if let Some(x) = &e[0] {
        assert!(
            matches!(x, pharos_core::Explanation::Reactive { .. }),
            "{x:?}"
        );
        let v = serde_json::to_value(x).unwrap();
        assert!(
            v["reason"].as_str().is_some_and(|r| r.contains("reactive")),
            "{v}"
        );
    }
}

#[test]
fn faro_reactive_loop_adds_one_replica_after_three_slow_checks() {
    let mut p = build("faro-sum", &json!({})).unwrap();
    // Latency 2 s against a 0.72 s SLO, between predictive runs (t = 100..).
    let mut changes = Vec::new();
    for k in 0..6 {
        let t = 100.0 + 10.0 * k as f64;
        let jobs = [job(t, 3, 10.0, 2.0, 0.0, 0.0)];
        if let Some(x) = p.decide(&view(t, &jobs)).target_replicas[0] {
            changes.push((t, x));
        }
    }
    assert_eq!(changes, vec![(120.0, 4), (150.0, 4)]);
}

#[test]
fn faro_reactive_loop_takes_a_replica_from_an_idle_job_when_the_cluster_is_full() {
    for (rebalance, want) in [(true, vec![Some(4), Some(3)]), (false, vec![Some(4), None])] {
        let mut p = build("faro-sum", &json!({ "rebalance": rebalance })).unwrap();
        let mut last = None;
        for k in 0..3 {
            let t = 100.0 + 10.0 * k as f64;
            // Job 0: 2 s latency, fully busy; job 1: fast, 20% busy on 4 replicas.
            let jobs = [
                job(t, 3, 10.0, 2.0, 0.0, 1.0),
                job(t, 4, 10.0, 0.2, 0.0, 0.2),
            ];
            last = Some(p.decide(&view(t, &jobs)));
        }
        assert_eq!(last.unwrap().target_replicas, want, "rebalance {rebalance}");
    }
}

#[test]
fn predictive_policies_size_the_starting_deployment_from_the_days_before() {
    // Two jobs known for a 60-minute day before the run: 1200 and 300 requests a minute.
    let ctx = PolicyContext {
        forecast: pharos_forecast::ForecastData {
            past_rpm: vec![vec![1200.0; 60], vec![300.0; 60]],
            day_minutes: Some(60),
            ..Default::default()
        },
    };
    let jobs = [busy_job(0.0, 1, &[]), busy_job(0.0, 1, &[])];
    let v = ClusterView {
        capacity_cpus: 32.0,
        free_cpus: 30.0,
        ..view(0.0, &jobs)
    };
    for name in ["faro-fairsum", "mark"] {
        let mut p = build_with(name, &json!({"forecaster": "last-value"}), &ctx).unwrap();
        let x: Vec<u32> = p
            .initial_decision(&v)
            .target_replicas
            .iter()
            .map(|t| t.unwrap())
            .collect();
        // 20 req/s need at least 5 replicas (5 x 0.72 s / 0.18 s = 20 req/s), 5 req/s 2.
        assert!(x[0] >= 5 && x[1] >= 2 && x[0] > x[1], "{name}: {x:?}");
        // Switched off, or with nothing known before the run: the configured start.
        let mut off = build_with(
            name,
            &json!({"forecaster": "last-value", "initial_from_forecast": false}),
            &ctx,
        )
        .unwrap();
        assert!(off.initial_decision(&v).is_unchanged());
        let mut none = build(name, &json!({"forecaster": "last-value"})).unwrap();
        assert!(none.initial_decision(&v).is_unchanged());
    }
    // The default latency model: M/D/c for the fairness objectives, the upper bound
    // for the others.
    use crate::alloc::Objective;
    assert_eq!(
        faro::default_model(Objective::FairSum),
        faro::ModelKind::Mdc
    );
    assert_eq!(
        faro::default_model(Objective::Sum),
        faro::ModelKind::UpperBound
    );
}

#[test]
fn faro_plans_a_scale_up_to_serve_from_when_its_replicas_are_ready() {
    let (a, b) = ([1200u32; 5], [300u32; 5]);
    // The steps planned not to serve, and the busy job's planned replicas, for a
    // measured cold start (free capacity: 6 of 10 vCPUs).
    let plan = |cold: Option<f64>, params: serde_json::Value| {
        let mut p = build("faro-fairsum", &params).unwrap();
        let jobs = [
            JobView {
                cold_start_s: cold,
                ..busy_job(300.0, 2, &a)
            },
            JobView {
                cold_start_s: cold,
                ..busy_job(300.0, 2, &b)
            },
        ];
        let v = ClusterView {
            capacity_cpus: 10.0,
            free_cpus: 6.0,
            ..view(300.0, &jobs)
        };
        let d = p.decide(&v);
        let Some(Some(pharos_core::Explanation::Planned {
            ready_after_steps, ..
        })) = p.explain().map(|e| e[0].clone())
        else {
            panic!("a planned decision");
        };
        (ready_after_steps, d.target_replicas[0].unwrap())
    };
    let params = json!({"forecaster": "last-value", "spread_leftover": false});
    // Unmeasured: a scale-up serves at once; measured, from the minute it is ready.
    let (steps, now) = plan(None, params.clone());
    assert_eq!(steps, 0);
    assert!(now > 2, "the busy job grows: {now}");
    assert_eq!(plan(Some(0.4), params.clone()).0, 1);
    assert_eq!(plan(Some(90.0), params.clone()).0, 2);
    // A cold start longer than the window: no replica started now serves within it,
    // so none is planned for it.
    assert_eq!(plan(Some(900.0), params.clone()), (7, 2));
    // Off: as if unmeasured.
    let off =
        json!({"forecaster": "last-value", "spread_leftover": false, "actuation_delay": false});
    assert_eq!(plan(Some(90.0), off).0, 0);
}

/// HPA with a forecast floor: a job whose utilisation is on target keeps its replicas
/// under plain HPA; with the floor it gets what the forecast rate needs at the target
/// (last value 3,000 a minute: 50/s x 0.18 s / 0.8 = 11.25 -> 12), and a floor below
/// what it has changes nothing.
#[test]
fn hpa_with_a_forecast_floor_scales_for_the_forecast() {
    let minutes = [600u32, 1200, 3000];
    let mut j = job(120.0, 4, 10.0, 0.2, 1.0, 0.8);
    j.minute_arrivals = &minutes;
    let jobs = [j];
    let mut plain = build("hpa", &json!({})).unwrap();
    assert_eq!(
        plain.decide(&view(120.0, &jobs)).target_replicas,
        vec![None]
    );
    let floor = json!({"forecast": {"forecaster": "last-value", "quantile": 0.5}});
    let mut p = build("hpa", &floor).unwrap();
    assert_eq!(
        p.decide(&view(120.0, &jobs)).target_replicas,
        vec![Some(12)]
    );
    let minutes = [600u32];
    let mut j = job(120.0, 4, 10.0, 0.2, 1.0, 0.8);
    j.minute_arrivals = &minutes;
    let jobs = [j];
    let mut p = build("hpa", &floor).unwrap();
    assert_eq!(p.decide(&view(120.0, &jobs)).target_replicas, vec![None]);
    // Bad parameters are named.
    let e = build(
        "hpa",
        &json!({"metric": "concurrency", "forecast": {"forecaster": "last-value"}}),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("metric cpu"), "{e}");
    let e = build("hpa", &json!({"forecast": {"quantile": 1.5}}))
        .err()
        .unwrap();
    assert!(e.to_string().contains("quantile"), "{e}");
    for (name, p) in [
        ("hpa", json!({"forecast": {"window_steps": 100000}})),
        ("faro-sum", json!({"window_steps": 0})),
        ("mark", json!({"window_steps": 1441})),
    ] {
        let e = build(name, &p).err().unwrap();
        assert!(
            e.to_string().contains("window_steps must be 1 to 1440"),
            "{name}: {e}"
        );
    }
}

/// Per call: each job's target and the reason given for it.
type Calls = Vec<(Vec<Option<u32>>, Vec<Option<String>>)>;

/// Call a fresh `faro-sum` with `params` at t = 100, 110, 120, 130 on the jobs `jobs(t)`
/// make, with `free` vCPUs free; return each call's targets and reasons.
fn sizing_run(
    params: serde_json::Value,
    free: f64,
    jobs: &dyn Fn(f64) -> Vec<JobView<'static>>,
) -> Calls {
    let mut p = build("faro-sum", &params).unwrap();
    (0..4)
        .map(|k| {
            let t = 100.0 + 10.0 * k as f64;
            let js = jobs(t);
            let v = ClusterView {
                free_cpus: free,
                ..view(t, &js)
            };
            let d = p.decide(&v);
            let why = p.explain().unwrap_or_default();
            let why = (0..js.len())
                .map(|i| why.get(i).cloned().flatten().map(|w| format!("{w:?}")))
                .collect();
            (d.target_replicas, why)
        })
        .collect()
}

#[test]
fn faro_reactive_sizing_raises_a_job_at_once_to_what_its_measured_rate_needs() {
    // 30 req/s on 3 replicas, mean latency under the SLO (the latency loop does nothing),
    // busy all the time: 3 replica-seconds a second over 30 completions, 0.1 s a request.
    let steady = |t: f64| vec![job(t, 3, 30.0, 0.3, 0.0, 1.0)];
    // Off (the default): nothing changes.
    let off = sizing_run(json!({}), 20.0, &steady);
    assert!(off.iter().all(|(t, _)| t[0].is_none()), "{off:?}");
    // The given 0.18 s: 30 x 0.18 / 0.72 = 7.5 -> 8 replicas (faro-sum plans with the
    // upper bound), in one step, once the window has a snapshot 30 s back (t = 130;
    // before, it would measure the rate since the counters began).
    let on = sizing_run(json!({"reactive_sizing": true}), 20.0, &steady);
    assert!(on[..3].iter().all(|(t, _)| t[0].is_none()), "{on:?}");
    assert_eq!(on[3].0[0], Some(8), "{on:?}");
    let why = on[3].1[0].as_deref().unwrap();
    assert!(
        why.contains("needs 8 replicas") && why.contains("0.180 s"),
        "{why}"
    );
    // The measured 0.1 s: 30 x 0.1 / 0.72 = 4.2 -> 5.
    let params = json!({"reactive_sizing": true, "measured_processing": true});
    let m = sizing_run(params, 20.0, &steady);
    assert_eq!(m[3].0[0], Some(5), "{m:?}");
    assert!(m[3].1[0].as_deref().unwrap().contains("0.100 s"), "{m:?}");
    // No more than free capacity holds: 2 vCPUs, 1 vCPU a replica -> 5; 5 vCPUs at 2 a
    // replica -> 2 more, 5, and the reason says the need was not met.
    let tight = sizing_run(json!({"reactive_sizing": true}), 2.0, &steady);
    assert_eq!(tight[3].0[0], Some(5), "{tight:?}");
    let wide = |t: f64| {
        vec![JobView {
            cpus_per_replica: 2.0,
            ..job(t, 3, 30.0, 0.3, 0.0, 1.0)
        }]
    };
    let w = sizing_run(json!({"reactive_sizing": true}), 5.0, &wide);
    assert_eq!(w[3].0[0], Some(5), "{w:?}");
    assert!(w[3].1[0].as_deref().unwrap().contains("room for"), "{w:?}");
    // Half admitted: 15 req/s x 0.18 / 0.72 = 3.75 -> 4.
    let halved = |t: f64| {
        vec![JobView {
            accept_rate: 0.5,
            ..job(t, 3, 30.0, 0.3, 0.0, 1.0)
        }]
    };
    let h = sizing_run(json!({"reactive_sizing": true}), 20.0, &halved);
    assert_eq!(h[3].0[0], Some(4), "{h:?}");
    // An SLO shorter than a request: no replica count meets it, nothing is added.
    let hopeless = |t: f64| {
        vec![JobView {
            slo: Slo::p99(0.1),
            ..job(t, 3, 30.0, 0.05, 0.0, 1.0)
        }]
    };
    let x = sizing_run(json!({"reactive_sizing": true}), 20.0, &hopeless);
    assert!(x.iter().all(|(t, _)| t[0].is_none()), "{x:?}");
    // The latency loop and sizing together, on 4 free vCPUs: the loop adds one (3 -> 4),
    // sizing the 3 left (-> 7); the reason names both.
    let slow = |t: f64| vec![job(t, 3, 30.0, 2.0, 0.0, 1.0)];
    let params = json!({"reactive_sizing": true, "reactive_checks": 1});
    let both = sizing_run(params, 4.0, &slow);
    assert_eq!(both[3].0[0], Some(7), "{both:?}");
    let why = both[3].1[0].as_deref().unwrap();
    assert!(
        why.contains("reactive loop") && why.contains("reactive sizing"),
        "{why}"
    );
    // Sizing lives in the reactive loop.
    let e = build(
        "faro-sum",
        &json!({"reactive_sizing": true, "reactive": false}),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("reactive_sizing"), "{e}");
}

/// One predictive decision (t = 60 s) of a `faro-sum` that forecasts the last minute,
/// keeps no leftover and pays nothing to move, with `extra` parameters, for `job`.
fn one_plan(extra: serde_json::Value, job: JobView<'_>) -> u32 {
    let mut params = json!({
        "forecaster": "last-value",
        "spread_leftover": false,
        "raise_quantile": false,
        "move_cost": 0.0,
    });
    if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    let mut p = build("faro-sum", &params).unwrap();
    let jobs = [job];
    p.decide(&view(60.0, &jobs)).target_replicas[0].unwrap()
}

#[test]
fn faro_holds_the_recent_peak_through_a_dip_when_asked() {
    // Ten minutes at 1200 requests a minute, then three at 100: a last-value forecast
    // sees 100 (1.7 req/s: one replica), the ten minutes' peak 20 req/s (5 replicas).
    let mut hist = vec![1200u32; 10];
    hist.extend([100; 3]);
    let plan = |s: f64| {
        one_plan(
            json!({ "downscale_stabilization_s": s }),
            busy_job(60.0, 10, &hist),
        )
    };
    assert_eq!(plan(0.0), 1);
    assert_eq!(plan(300.0), 5);
    // Three minutes back hold only the dip.
    assert_eq!(plan(180.0), 1);
    for bad in [-1.0, 100_000.0] {
        let e = build("faro-sum", &json!({"downscale_stabilization_s": bad}))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("downscale_stabilization_s"), "{bad}: {e}");
    }
}

#[test]
fn faro_plans_for_a_multiple_of_the_slo_when_asked() {
    // 20 req/s: by the upper bound 20 x 0.18 / (0.72 f) replicas - 5 at f = 1, 3 at
    // f = 2 (2.5 up), 2 at f = 3.
    let hist = [1200u32; 5];
    let plan = |f: f64| one_plan(json!({ "plan_slo_factor": f }), busy_job(60.0, 10, &hist));
    assert_eq!([plan(1.0), plan(2.0), plan(3.0)], [5, 3, 2]);
    // Planning with the measured service time: 1200 completed, 10 replicas 20% busy for
    // 60 s = 120 busy replica-seconds, 0.1 s a request: 20 x 0.1 / 0.72 -> 3 replicas;
    // under 200 completed (2 req/s for 60 s) the given 0.18 s stays: 5.
    let measured = |rate: f64| {
        let j = JobView {
            minute_arrivals: &hist,
            ..job(60.0, 10, rate, 0.3, 0.0, 0.2)
        };
        one_plan(json!({ "measured_processing": true }), j)
    };
    assert_eq!([measured(20.0), measured(2.0)], [3, 5]);
    for bad in [0.0, 0.05, -1.0, 11.0] {
        let e = build("faro-sum", &json!({ "plan_slo_factor": bad }))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("plan_slo_factor"), "{bad}: {e}");
    }
}
