//! Forecasting speed: fit every model on days 1-10 of the 10 Faro jobs, then forecast
//! 10,000 jobs' next 7 minutes (quantiles 0.5, 0.6 and 0.9) - job i reads the history
//! of Faro job i mod 10 up to minute 15 + (i mod 330) of day 11. Times are reported
//! as they are and as ratios to holding the last value, measured in the same process.
//!
//!   cargo run --release -p pharos-forecast --example forecast_bench [-- MODEL...]

use std::path::Path;
use std::time::Instant;

use pharos_forecast::eval::{EvalSet, QUANTILES, default_models};
use pharos_forecast::{BaseModel, ForecasterSpec};

const JOBS: usize = 10_000;
const HORIZON: usize = 7;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/faro-10jobs/requests_per_minute.csv");
    let raw = pharos_trace::read_trace(&path, None)?;
    let set = EvalSet::from_days(
        raw.series
            .into_iter()
            .map(|s| (s.job, s.day.unwrap_or(0), s.requests_per_min)),
    )?;
    let train_days: Vec<u32> = (1..=10).collect();
    let train = set.train_set(&train_days)?;
    let day = set.day_minutes;
    // Days 1-11 of each Faro job, one after another.
    let full: Vec<Vec<f64>> = set.values.iter().map(|d| d.concat()).collect();
    let mut models: Vec<ForecasterSpec> = std::env::args()
        .skip(1)
        .map(|m| m.parse())
        .collect::<Result<_, _>>()?;
    if models.is_empty() {
        models = default_models();
    }
    let reference = ForecasterSpec::of(BaseModel::LastValue);
    if models.first() != Some(&reference) {
        models.insert(0, reference);
    }
    println!(
        "fit: {} jobs x {} days of {day} minutes; predict: {JOBS} jobs x {HORIZON} minutes x {} quantiles\n",
        train.jobs().len(),
        train.days(),
        QUANTILES.len()
    );
    println!(
        "{:<24} {:>9} {:>12} {:>12} {:>14}",
        "model", "fit_s", "predict_s", "us_per_job", "x_last_value"
    );
    let mut reference_s = None;
    for spec in models {
        let mut f = spec.make(day, &[]);
        let t0 = Instant::now();
        f.fit(&train)?;
        let fit_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let mut checksum = 0.0;
        for i in 0..JOBS {
            let series = &full[i % full.len()];
            let origin = 10 * day + 15 + i % (day - 15 - HORIZON);
            let q = f.predict(i, &series[..origin], HORIZON, &QUANTILES)?;
            checksum += q[2][HORIZON - 1];
        }
        let predict_s = t1.elapsed().as_secs_f64();
        let r = *reference_s.get_or_insert(predict_s);
        println!(
            "{:<24} {:>9.3} {:>12.3} {:>12.1} {:>14.1}   (checksum {checksum:.0})",
            spec.to_string(),
            fit_s,
            predict_s,
            1e6 * predict_s / JOBS as f64,
            predict_s / r
        );
    }
    Ok(())
}
