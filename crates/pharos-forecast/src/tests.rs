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
    assert!(matches!(e, ForecastError::NotWholeDays { job: 1, minutes: 15, .. }));
    assert!(TrainSet::new(10, vec![vec![-1.0; 10]]).is_err());
    assert!(TrainSet::new(10, vec![vec![]]).is_err());
    // Names.
    assert!("nope".parse::<ForecasterSpec>().unwrap_err().contains("unknown forecaster `nope`"));
    let s: ForecasterSpec = "ets+cal".parse().unwrap();
    assert_eq!(s, ForecasterSpec::calibrated(BaseModel::Ets));
    assert_eq!(s.to_string(), "ets+cal");
}
