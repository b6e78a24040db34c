//! How the fit of a forecaster grows with the number of services: N services with D
//! days of 1440 minutes each (job i is Faro job i mod 10, its days 1-10 repeated to D
//! days and scaled by 1 + (i mod 7) / 10, so that no two services are the same), fitted
//! as a live server fits its policy's forecaster. Reports the fit time, the size of the
//! saved state, and the fit time per service as a ratio to the smallest N measured in
//! the same process.
//!
//!   cargo run --release -p pharos-forecast --example fit_scale -- [MODEL] [DAYS] [N...]
//!   (defaults: ensemble+cal 14 10 100)

use std::path::Path;
use std::time::Instant;

use pharos_forecast::eval::EvalSet;
use pharos_forecast::{ForecasterSpec, TrainSet};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let spec: ForecasterSpec = args
        .next()
        .unwrap_or_else(|| "ensemble+cal".into())
        .parse()?;
    let days: usize = args.next().map_or(Ok(14), |d| d.parse())?;
    let mut sizes: Vec<usize> = args.map(|n| n.parse()).collect::<Result<_, _>>()?;
    if sizes.is_empty() {
        sizes = vec![10, 100];
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/faro-10jobs/requests_per_minute.csv");
    let raw = pharos_trace::read_trace(&path, None)?;
    let set = EvalSet::from_days(
        raw.series
            .into_iter()
            .map(|s| (s.job, s.day.unwrap_or(0), s.requests_per_min)),
    )?;
    // The Faro days are 360 minutes: four of them make a 1440-minute day.
    let minutes: Vec<Vec<f64>> = set.values.iter().map(|d| d[..10].concat()).collect();
    let day = 1440;
    println!("{spec}: services x {days} days of {day} minutes\n");
    println!(
        "{:>8} {:>10} {:>14} {:>12} {:>16}",
        "services", "fit_s", "s_per_service", "state_MB", "x_per_service"
    );
    let mut first: Option<f64> = None;
    for n in sizes {
        let jobs: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                let src = &minutes[i % minutes.len()];
                let k = 1.0 + (i % 7) as f64 / 10.0;
                (0..days * day)
                    .map(|t| (src[t % src.len()] * k).round())
                    .collect()
            })
            .collect();
        let train = TrainSet::new(day, jobs)?;
        let mut f = spec.make(day, &[]);
        let t0 = Instant::now();
        f.fit(&train)?;
        let fit_s = t0.elapsed().as_secs_f64();
        let state_mb = f.save().to_string().len() as f64 / 1e6;
        let per = fit_s / n as f64;
        let ratio = per / *first.get_or_insert(per);
        println!("{n:>8} {fit_s:>10.2} {per:>14.4} {state_mb:>12.1} {ratio:>16.2}");
    }
    Ok(())
}
