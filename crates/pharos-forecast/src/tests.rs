use super::*;

#[test]
fn simple_forecasters() {
    let h = [3.0, 9.0, 4.0];
    assert_eq!(LastValue.forecast(0, &h, 2, 0.5), vec![4.0, 4.0]);
    assert_eq!(WindowMax { window: 2 }.forecast(0, &h, 1, 0.5), vec![9.0]);
    // Alternating 10, 20 (ending at 20): one step ahead the last value errs by
    // +-10, two steps ahead not at all.
    let alt: Vec<f64> = (0..40)
        .map(|t| if t % 2 == 0 { 10.0 } else { 20.0 })
        .collect();
    let mut f = LastValueQuantiles::new(30);
    let q = f.predict(0, &alt, 2, &[0.9, 0.1]).unwrap();
    assert_eq!(q, vec![vec![30.0, 20.0], vec![10.0, 20.0]]);
    // A load that jumps every 5 minutes: the seasonal variant finds the period and
    // expects the jump at the right step.
    let jumps: Vec<f64> = (0..120)
        .map(|t| if t % 5 == 0 { 200.0 } else { 100.0 })
        .collect();
    let mut f = LastValueQuantiles::seasonal(60, vec![2, 3, 5, 7]);
    assert_eq!(f.pick_period(&jumps, 60), 5);
    // History ends at minute 119 (phase 4): the next minute (120) jumps.
    assert_eq!(f.forecast(0, &jumps, 3, 0.5), vec![200.0, 100.0, 100.0]);
    let mut o = Oracle::new(vec![vec![1.0, 2.0, 3.0, 4.0, 5.0]]);
    assert_eq!(o.forecast(0, &h, 3, 0.5), vec![4.0, 5.0, 5.0]);
}

#[test]
fn seasonal_naive_and_adaptive_read_the_previous_day() {
    // Days of 60 minutes; today is yesterday doubled with a bump at minute 30.
    let yesterday: Vec<f64> = (0..60)
        .map(|t| if t == 30 { 90.0 } else { 10.0 + t as f64 })
        .collect();
    let today: Vec<f64> = yesterday.iter().map(|v| 2.0 * v).collect();
    let mut hist = yesterday.clone();
    hist.extend_from_slice(&today[..29]);
    let mut s = SeasonalNaive::new(1, 60);
    assert_eq!(s.forecast(0, &hist, 2, 0.5), vec![yesterday[29], 90.0]);
    // Weekly falls back to one day back where a week is not known.
    let mut w = SeasonalNaive::new(7, 60);
    assert_eq!(w.forecast(0, &hist, 2, 0.5), vec![yesterday[29], 90.0]);
    // After a few minutes the previous day, scaled, forecasts exactly and wins.
    let mut a = Adaptive::new(60);
    assert_eq!(a.forecast(0, &hist, 2, 0.5), vec![78.0, 180.0]);
    // Without a previous day: the last value with its error quantiles.
    assert_eq!(a.forecast(0, &today[..29], 1, 0.5), vec![today[28] + 2.0]);
}

#[test]
fn bad_input_is_an_error_naming_it() {
    let mut f = LastValue;
    assert_eq!(
        f.predict(3, &[], 2, &[0.5]),
        Err(ForecastError::EmptyHistory { job: 3 })
    );
    let e = f.predict(1, &[1.0, -2.0, 3.0], 2, &[0.5]).unwrap_err();
    assert_eq!(
        e,
        ForecastError::BadValue {
            job: 1,
            minute: 1,
            value: -2.0
        }
    );
    assert!(e.to_string().contains("minute 1"));
    assert!(f.predict(0, &[1.0, f64::NAN], 2, &[0.5]).is_err());
    assert_eq!(
        f.predict(0, &[1.0], 2, &[1.0]),
        Err(ForecastError::BadQuantile(1.0))
    );
    // The convenience call holds the last value instead.
    assert_eq!(f.forecast(0, &[], 2, 0.5), vec![0.0, 0.0]);
    // Training data must be whole days of counts.
    let e = TrainSet::new(10, vec![vec![1.0; 20], vec![1.0; 15]]).unwrap_err();
    assert!(matches!(
        e,
        ForecastError::NotWholeDays {
            job: 1,
            minutes: 15,
            ..
        }
    ));
    assert!(TrainSet::new(10, vec![vec![-1.0; 10]]).is_err());
    assert!(TrainSet::new(10, vec![vec![]]).is_err());
    // Names.
    assert!(
        "nope"
            .parse::<ForecasterSpec>()
            .unwrap_err()
            .contains("unknown forecaster `nope`")
    );
    let s: ForecasterSpec = "ets+cal".parse().unwrap();
    assert_eq!(s, ForecasterSpec::calibrated(BaseModel::Ets));
    assert_eq!(s.to_string(), "ets+cal");
}

/// A deterministic daily pattern (days of `day` minutes) with a seeded wobble.
fn daily(days: usize, day: usize, level: f64, seed: u64) -> Vec<f64> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..days * day)
        .map(|t| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = ((x >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 0.1 * level;
            let phase = std::f64::consts::TAU * (t % day) as f64 / day as f64;
            (level * (1.0 + 0.8 * phase.sin()) + noise).max(0.0)
        })
        .collect()
}

fn rmse_of(f: &mut dyn Forecaster, series: &[f64], from: usize, horizon: usize) -> f64 {
    let (mut sq, mut n) = (0.0, 0);
    for t in from..series.len() - horizon {
        let p = f.predict(0, &series[..t], horizon, &[0.5]).unwrap();
        for h in 0..horizon {
            sq += (series[t + h] - p[0][h]).powi(2);
            n += 1;
        }
    }
    (sq / n as f64).sqrt()
}

#[test]
fn ets_follows_a_trend_with_widening_intervals() {
    let y: Vec<f64> = (0..60)
        .map(|t| 100.0 + 2.0 * t as f64 + if t % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let q = Ets::default().predict(0, &y, 5, &[0.1, 0.5, 0.9]).unwrap();
    // The trend continues: about 220, 222, ... from the last point 218 +- 1.
    assert!(
        (q[1][0] - 220.0).abs() < 3.0 && (q[1][4] - 228.0).abs() < 5.0,
        "{q:?}"
    );
    for h in 0..5 {
        assert!(q[0][h] < q[1][h] && q[1][h] < q[2][h]);
    }
    assert!(
        q[2][4] - q[0][4] > q[2][0] - q[0][0],
        "intervals widen with the horizon"
    );
    // Too short for a fit, or constant: the last value.
    assert_eq!(
        Ets::default().forecast(0, &[5.0, 6.0], 2, 0.9),
        vec![6.0, 6.0]
    );
    assert_eq!(
        Ets::default().forecast(0, &[7.0; 30], 2, 0.9),
        vec![7.0, 7.0]
    );
}

#[test]
fn fitted_models_learn_the_daily_pattern() {
    let day = 60;
    let series = daily(6, day, 200.0, 7);
    let train = TrainSet::new(day, vec![series[..5 * day].to_vec()]).unwrap();
    let test_from = 5 * day + 15;
    let last = rmse_of(&mut LastValue, &series, test_from, 7);
    let mut models: Vec<Box<dyn Forecaster>> = vec![
        Box::new(Mstl::default()),
        Box::new(GlobalLinear::default()),
        Box::new(GlobalGbm::default()),
    ];
    for m in &mut models {
        m.fit(&train).unwrap();
        let r = rmse_of(m.as_mut(), &series, test_from, 7);
        assert!(r < 0.7 * last, "{}: {r} vs last value {last}", m.name());
    }
    // Deterministic: a second fit forecasts the same.
    let mut a = GlobalGbm::default();
    let mut b = GlobalGbm::default();
    a.fit(&train).unwrap();
    b.fit(&train).unwrap();
    let h = &series[..test_from];
    assert_eq!(
        a.predict(0, h, 7, &[0.5]).unwrap(),
        b.predict(0, h, 7, &[0.5]).unwrap()
    );
    // A job the global model was not fitted on is forecast too (it is global); so is
    // one with a single minute of history.
    assert!(a.predict(5, &series[..100], 3, &[0.5]).is_ok());
    assert_eq!(a.forecast(5, &[4.0], 2, 0.5), vec![4.0, 4.0]);
}

#[test]
fn the_calibrated_layer_covers_what_it_claims() {
    let day = 60;
    let series = daily(8, day, 300.0, 11);
    let train = TrainSet::new(day, vec![series[..6 * day].to_vec()]).unwrap();
    let mut c = Calibrated::new(Box::new(LastValue));
    assert_eq!(c.name(), "last-value+cal");
    c.fit(&train).unwrap();
    let (mut covered, mut below, mut n) = (0, 0, 0);
    for t in (6 * day + 15)..(8 * day - 7) {
        let q = c.predict(0, &series[..t], 7, &[0.1, 0.5, 0.9]).unwrap();
        for h in 0..7 {
            assert!(q[0][h] <= q[1][h] && q[1][h] <= q[2][h]);
            covered += usize::from(series[t + h] <= q[2][h]);
            below += usize::from(series[t + h] <= q[0][h]);
            n += 1;
        }
    }
    let (cov90, cov10) = (covered as f64 / n as f64, below as f64 / n as f64);
    assert!((0.8..=0.97).contains(&cov90), "0.9 quantile covers {cov90}");
    assert!((0.03..=0.2).contains(&cov10), "0.1 quantile covers {cov10}");
    // Unfitted, it learns online: after the first forecasts' targets are seen, its
    // quantiles spread around the median.
    let mut online = Calibrated::new(Box::new(LastValue));
    online.min_job_errors = 20;
    for t in 100..200 {
        online.predict(0, &series[..t], 3, &[0.5]).unwrap();
    }
    let q = online.predict(0, &series[..200], 3, &[0.1, 0.9]).unwrap();
    assert!(q[1][0] > q[0][0], "{q:?}");
}

#[test]
fn evaluation_scores_by_hand() {
    // Two days of 10 minutes, one job: day 1 all 5, day 2 counts 0..9.
    let set = eval::EvalSet::from_days([
        ("a".to_string(), 1, vec![5.0; 10]),
        ("a".to_string(), 2, (0..10).map(f64::from).collect()),
    ])
    .unwrap();
    let cfg = eval::EvalConfig {
        train_days: vec![1],
        test_days: vec![2],
        context: 3,
        horizon: 2,
    };
    let r = eval::evaluate(&set, &cfg, ForecasterSpec::of(BaseModel::LastValue)).unwrap();
    // Origins 3..=8; the last value is t - 1, the targets t and t + 1: errors 1 and 2.
    assert_eq!(r.windows, 6);
    assert!((r.rmse - (2.5f64).sqrt()).abs() < 1e-12);
    // Under-forecasting by 1.5 on average: pinball at 0.9 is 0.9 x 1.5.
    assert!((r.pinball_90 - 1.35).abs() < 1e-12);
    assert_eq!(r.coverage_90, 0.0);
    // Bad configurations and data are errors naming the problem.
    let bad = |cfg: eval::EvalConfig| {
        eval::evaluate(&set, &cfg, ForecasterSpec::of(BaseModel::LastValue))
            .unwrap_err()
            .to_string()
    };
    assert!(
        bad(eval::EvalConfig {
            test_days: vec![1],
            ..cfg.clone()
        })
        .contains("both")
    );
    assert!(
        bad(eval::EvalConfig {
            test_days: vec![9],
            ..cfg.clone()
        })
        .contains("no day 9")
    );
    assert!(
        bad(eval::EvalConfig {
            horizon: 9,
            ..cfg.clone()
        })
        .contains("must fit")
    );
    let e = eval::EvalSet::from_days([
        ("a".to_string(), 1, vec![5.0; 10]),
        ("a".to_string(), 2, vec![5.0; 9]),
    ])
    .unwrap_err();
    assert!(e.to_string().contains("day 2: 9 minutes"), "{e}");
    let e = eval::EvalSet::from_days([
        ("a".to_string(), 1, vec![5.0; 10]),
        ("b".to_string(), 2, vec![5.0; 10]),
    ])
    .unwrap_err();
    assert!(e.to_string().contains("same days"), "{e}");
    let e =
        eval::EvalSet::from_days([("a".to_string(), 1, vec![5.0, 5.0, 5.0, -1.0])]).unwrap_err();
    assert!(e.to_string().contains("day 1, minute 3: -1"), "{e}");
}

#[test]
fn global_models_fit_days_too_short_for_some_steps() {
    // 20-minute days: with 15 minutes of context, steps beyond 4 have no training target.
    let series = daily(4, 20, 100.0, 3);
    let train = TrainSet::new(20, vec![series.clone()]).unwrap();
    let mut g = GlobalGbm::default();
    g.fit(&train).unwrap();
    let mut l = GlobalLinear::default();
    l.fit(&train).unwrap();
    for f in [&mut g as &mut dyn Forecaster, &mut l] {
        let q = f.predict(0, &series[..70], 8, &[0.5]).unwrap();
        assert!(q[0].iter().all(|v| v.is_finite() && *v >= 0.0), "{q:?}");
    }
    // Days too short for any step: the last value.
    let tiny = TrainSet::new(10, vec![vec![5.0; 30]]).unwrap();
    let mut g = GlobalGbm::default();
    g.fit(&tiny).unwrap();
    assert_eq!(g.forecast(0, &[1.0, 2.0, 3.0], 2, 0.5), vec![3.0, 3.0]);
}

#[test]
fn a_saved_fit_restores_to_the_same_forecasts() {
    let day = 60;
    let a = daily(6, day, 200.0, 7);
    let b = daily(6, day, 80.0, 11);
    let train = TrainSet::new(day, vec![a[..5 * day].to_vec(), b[..5 * day].to_vec()]).unwrap();
    for base in BaseModel::ALL
        .into_iter()
        .filter(|m| *m != BaseModel::Oracle)
    {
        for spec in [ForecasterSpec::of(base), ForecasterSpec::calibrated(base)] {
            let mut fitted = spec.make(day, &[]);
            fitted.fit(&train).unwrap();
            // Through text, as a server keeps it.
            let text = fitted.save().to_string();
            let mut restored = spec.make(1440, &[]);
            restored
                .load(&serde_json::from_str(&text).unwrap())
                .unwrap_or_else(|e| panic!("{spec}: {e}"));
            for (j, s) in [&a, &b].into_iter().enumerate() {
                for origin in [5 * day + 15, 5 * day + 40] {
                    let qs = [0.1, 0.5, 0.9];
                    assert_eq!(
                        fitted.predict(j, &s[..origin], 7, &qs).unwrap(),
                        restored.predict(j, &s[..origin], 7, &qs).unwrap(),
                        "{spec}, job {j}, origin {origin}"
                    );
                }
            }
        }
    }
    // Another model's state, or a damaged one, is refused.
    let mut gbm = GlobalGbm::default();
    gbm.fit(&train).unwrap();
    let state = gbm.save();
    assert!(Mstl::default().load(&state).is_err());
    let mut bad = state.clone();
    bad["trees"][0][0]["nodes"][0] =
        serde_json::json!({"Split": {"feature": 0, "threshold": 1.0, "left": 0, "right": 0}});
    let e = GlobalGbm::default().load(&bad).unwrap_err();
    assert!(e.to_string().contains("saved tree"), "{e}");
    let mut bad = state;
    bad["linear"][0] = serde_json::json!([1.0]);
    assert!(GlobalGbm::default().load(&bad).is_err());
    let cal = ForecasterSpec::calibrated(BaseModel::LastValue).make(day, &[]);
    assert!(
        cal.clone_box()
            .load(&serde_json::json!({"base": null, "offline": [[["x"]]]}))
            .is_err()
    );
}

#[test]
fn training_past_its_budget_takes_every_kth_origin_of_every_job() {
    let day = 60;
    let jobs: Vec<Vec<f64>> = (0..4)
        .map(|j| daily(5, day, 50.0 + 30.0 * j as f64, j))
        .collect();
    let train = TrainSet::new(day, jobs.clone()).unwrap();
    // Step 2: origins 15..58 of each day, 43 a day, 860 in all.
    let all = global::samples(&train, 2, 15, usize::MAX);
    assert_eq!(all.y.len(), 4 * 5 * 43);
    let some = global::samples(&train, 2, 15, 100);
    // Stride 9: 96 samples, every 9th of the full set, each job's among them.
    assert_eq!(some.y.len(), 96);
    for (k, x) in some.x.iter().enumerate() {
        assert_eq!(x, &all.x[9 * k]);
    }
    assert!(
        (0..4).all(|j| some
            .x
            .iter()
            .enumerate()
            .any(|(k, _)| 9 * k / (5 * 43) == j)),
        "every job sampled"
    );
    // A budget as large as the largest step's set (step 0: 45 origins a day) changes
    // nothing; one less does.
    let fitted = |max_samples| {
        let mut g = GlobalGbm::default();
        g.max_samples = max_samples;
        g.fit(&train).unwrap();
        g.save()
    };
    let full = fitted(usize::MAX);
    assert!(full == fitted(4 * 5 * 45));
    assert!(full != fitted(4 * 5 * 45 - 1));

    // Calibration: at most max_origins offline origins over all jobs (step 0 has one
    // error per origin), spread over every job; quantiles still ordered.
    let mut cal = Calibrated::new(Box::new(Mstl::default()));
    cal.max_origins = 50;
    cal.fit(&train).unwrap();
    let state = cal.save();
    let per_job: Vec<usize> = state["offline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j[0].as_array().unwrap().len())
        .collect();
    // 2 calibration days x 45 origins x 4 jobs = 360 origins: stride 8, 45 kept.
    assert_eq!(per_job.iter().sum::<usize>(), 45, "{per_job:?}");
    assert!(per_job.iter().all(|n| *n >= 10), "{per_job:?}");
    let q = cal
        .predict(1, &jobs[1][..4 * day + 30], 5, &[0.1, 0.5, 0.9])
        .unwrap();
    for h in 0..5 {
        assert!(q[0][h] <= q[1][h] && q[1][h] <= q[2][h], "{q:?}");
    }
    // And restored from its state, it forecasts the same.
    let mut back = Calibrated::new(Box::new(Mstl::default()));
    back.load(&serde_json::from_str(&state.to_string()).unwrap())
        .unwrap();
    let mut fresh = cal.clone();
    let origin = &jobs[2][..4 * day + 20];
    assert_eq!(
        fresh.predict(2, origin, 4, &[0.2, 0.8]).unwrap(),
        back.predict(2, origin, 4, &[0.2, 0.8]).unwrap()
    );
}
