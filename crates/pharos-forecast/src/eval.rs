//! Evaluating forecasters on held-out days of a trace.
//!
//! A forecaster is fitted on the training days, then forecasts every window of each
//! test day: from each origin t = context, ..., D - horizon (D minutes a day) the next
//! `horizon` minutes, having seen every earlier day of the trace and the test day's
//! minutes before t. Scores pool every job, window and step:
//! - RMSE of the median (q = 0.5) forecast, in requests per minute;
//! - the pinball (quantile) loss at q = 0.5, 0.6 and 0.9;
//! - the coverage of the 0.9 quantile: the share of outcomes at or below it;
//! - fit time, and predict time per call (one job's window, all three quantiles).

use std::time::Instant;

use serde::Serialize;

use crate::{ForecastError, ForecasterSpec, TrainSet};

/// The first origin of a test day by default (the context a window needs), minutes.
pub const DEFAULT_CONTEXT: usize = 15;
/// Minutes forecast from each origin by default (the SLO-utility autoscaler's window).
pub const DEFAULT_HORIZON: usize = 7;

/// Quantiles every window is forecast at.
pub const QUANTILES: [f64; 3] = [0.5, 0.6, 0.9];

/// Whole days of every job: `values[job][day index][minute]`, `days` ascending.
#[derive(Debug, Clone)]
pub struct EvalSet {
    pub day_minutes: usize,
    pub jobs: Vec<String>,
    pub days: Vec<u32>,
    pub values: Vec<Vec<Vec<f64>>>,
}

#[derive(Debug, Clone)]
pub struct EvalConfig {
    pub train_days: Vec<u32>,
    pub test_days: Vec<u32>,
    pub context: usize,
    pub horizon: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobScore {
    pub job: String,
    pub rmse: f64,
    pub coverage_90: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalRow {
    pub model: String,
    pub rmse: f64,
    pub pinball_50: f64,
    pub pinball_60: f64,
    pub pinball_90: f64,
    pub coverage_90: f64,
    pub fit_s: f64,
    pub predict_ms_per_job: f64,
    /// Forecast windows scored (jobs x test days x origins).
    pub windows: usize,
    pub per_job: Vec<JobScore>,
}

#[derive(Default, Clone, Copy)]
struct Acc {
    sq: f64,
    pinball: [f64; 3],
    covered: usize,
    n: usize,
}

impl Acc {
    fn add(&mut self, y: f64, q: [f64; 3]) {
        let e = y - q[0];
        self.sq += e * e;
        for (k, (level, f)) in QUANTILES.iter().zip(q).enumerate() {
            let d = y - f;
            self.pinball[k] += if d >= 0.0 {
                level * d
            } else {
                (level - 1.0) * d
            };
        }
        self.covered += usize::from(y <= q[2]);
        self.n += 1;
    }
    fn merge(&mut self, o: &Acc) {
        self.sq += o.sq;
        for k in 0..3 {
            self.pinball[k] += o.pinball[k];
        }
        self.covered += o.covered;
        self.n += o.n;
    }
    fn rmse(&self) -> f64 {
        (self.sq / self.n.max(1) as f64).sqrt()
    }
    fn coverage(&self) -> f64 {
        self.covered as f64 / self.n.max(1) as f64
    }
}

impl EvalSet {
    fn day_index(&self, d: u32) -> Result<usize, ForecastError> {
        self.days.iter().position(|x| *x == d).ok_or_else(|| {
            ForecastError::Invalid(format!(
                "the trace has no day {d} (its days: {:?})",
                self.days
            ))
        })
    }

    /// The training set of these days, in order.
    pub fn train_set(&self, days: &[u32]) -> Result<TrainSet, ForecastError> {
        let idx: Vec<usize> = days
            .iter()
            .map(|d| self.day_index(*d))
            .collect::<Result<_, _>>()?;
        TrainSet::new(
            self.day_minutes,
            self.values
                .iter()
                .map(|v| idx.iter().flat_map(|i| v[*i].iter().copied()).collect())
                .collect(),
        )
    }
}

fn check(set: &EvalSet, cfg: &EvalConfig) -> Result<(), ForecastError> {
    let bad = |m: String| Err(ForecastError::Invalid(m));
    if cfg.train_days.is_empty() || cfg.test_days.is_empty() {
        return bad("give at least one training day and one test day".into());
    }
    if let Some(d) = cfg.test_days.iter().find(|d| cfg.train_days.contains(d)) {
        return bad(format!("day {d} is both a training and a test day"));
    }
    if cfg.horizon == 0 || cfg.context + cfg.horizon > set.day_minutes {
        return bad(format!(
            "context {} + horizon {} minutes must fit in a {}-minute day (horizon at least 1)",
            cfg.context, cfg.horizon, set.day_minutes
        ));
    }
    for d in cfg.train_days.iter().chain(&cfg.test_days) {
        set.day_index(*d)?;
    }
    Ok(())
}

/// Fit one forecaster on the training days and score it on the test days.
pub fn evaluate(
    set: &EvalSet,
    cfg: &EvalConfig,
    spec: ForecasterSpec,
) -> Result<EvalRow, ForecastError> {
    check(set, cfg)?;
    if spec.is_oracle() {
        return Err(ForecastError::Invalid(
            "the oracle reads the future; it is not evaluated".into(),
        ));
    }
    let train = set.train_set(&cfg.train_days)?;
    let mut f = spec.make(set.day_minutes, &[]);
    let t0 = Instant::now();
    f.fit(&train)?;
    let fit_s = t0.elapsed().as_secs_f64();
    let mut sc = Scorer::new(set.jobs.len(), cfg.context, cfg.horizon);
    for &test in &cfg.test_days {
        let ti = set.day_index(test)?;
        for (j, job_days) in set.values.iter().enumerate() {
            // Every earlier day of the trace, then the test day.
            let past: Vec<f64> = (0..ti).flat_map(|i| job_days[i].iter().copied()).collect();
            sc.score(f.as_mut(), j, &past, &job_days[ti])?;
        }
    }
    Ok(sc.row(spec.to_string(), fit_s, &set.jobs))
}

/// Scores a fitted forecaster on a run the way [`evaluate`] scores a test day: each
/// job is shown `past[j]` and then the run's minutes before each origin t = context,
/// ..., len - horizon. What `pharos simulate` reports of the forecaster its policies
/// use (its past: the history days), comparable with `pharos forecast eval` on the
/// same days.
pub fn score_run(
    f: &mut dyn crate::Forecaster,
    model: String,
    jobs: &[String],
    past: &[Vec<f64>],
    run: &[Vec<f64>],
    context: usize,
    horizon: usize,
) -> Result<EvalRow, ForecastError> {
    let mut sc = Scorer::new(jobs.len(), context, horizon);
    for (j, test) in run.iter().enumerate() {
        let p = past.get(j).map_or(&[][..], Vec::as_slice);
        sc.score(f, j, p, test)?;
    }
    Ok(sc.row(model, 0.0, jobs))
}

/// The windows scored so far, per job.
struct Scorer {
    per_job: Vec<Acc>,
    calls: usize,
    predict_s: f64,
    context: usize,
    horizon: usize,
}

impl Scorer {
    fn new(jobs: usize, context: usize, horizon: usize) -> Self {
        Self {
            per_job: vec![Acc::default(); jobs],
            calls: 0,
            predict_s: 0.0,
            context,
            horizon,
        }
    }

    /// Job `j`'s windows over `test`, shown `past` first.
    fn score(
        &mut self,
        f: &mut dyn crate::Forecaster,
        j: usize,
        past: &[f64],
        test: &[f64],
    ) -> Result<(), ForecastError> {
        let mut buf = past.to_vec();
        let p = buf.len();
        buf.extend_from_slice(test);
        if test.len() < self.context + self.horizon {
            return Ok(());
        }
        for t in self.context..=test.len() - self.horizon {
            let hist = &buf[..p + t];
            let t1 = Instant::now();
            let q = f.predict(j, hist, self.horizon, &QUANTILES)?;
            self.predict_s += t1.elapsed().as_secs_f64();
            self.calls += 1;
            for h in 0..self.horizon {
                self.per_job[j].add(buf[p + t + h], [q[0][h], q[1][h], q[2][h]]);
            }
        }
        Ok(())
    }

    fn row(&self, model: String, fit_s: f64, jobs: &[String]) -> EvalRow {
        let mut all = Acc::default();
        self.per_job.iter().for_each(|a| all.merge(a));
        let n = all.n.max(1) as f64;
        EvalRow {
            model,
            rmse: all.rmse(),
            pinball_50: all.pinball[0] / n,
            pinball_60: all.pinball[1] / n,
            pinball_90: all.pinball[2] / n,
            coverage_90: all.coverage(),
            fit_s,
            predict_ms_per_job: 1e3 * self.predict_s / self.calls.max(1) as f64,
            windows: self.calls,
            per_job: jobs
                .iter()
                .zip(&self.per_job)
                .map(|(name, a)| JobScore {
                    job: name.clone(),
                    rmse: a.rmse(),
                    coverage_90: a.coverage(),
                })
                .collect(),
        }
    }
}

/// The models `pharos forecast eval` scores by default.
pub fn default_models() -> Vec<ForecasterSpec> {
    use crate::BaseModel as M;
    vec![
        ForecasterSpec::of(M::LastValue),
        ForecasterSpec::of(M::SeasonalNaive),
        ForecasterSpec::of(M::SeasonalNaiveWeekly),
        ForecasterSpec::of(M::LastValueQuantiles),
        ForecasterSpec::of(M::Adaptive),
        ForecasterSpec::of(M::Ets),
        ForecasterSpec::of(M::Mstl),
        ForecasterSpec::calibrated(M::LastValue),
        ForecasterSpec::calibrated(M::SeasonalNaive),
        ForecasterSpec::calibrated(M::Ets),
        ForecasterSpec::calibrated(M::Mstl),
        ForecasterSpec::calibrated(M::GlobalLinear),
        ForecasterSpec::calibrated(M::GlobalGbm),
        ForecasterSpec::calibrated(M::Ensemble),
    ]
}

impl EvalSet {
    /// Gathers per-day series `(job, day, minutes)` (in any order) into whole days of
    /// every job. Every job must have every day, and every day the same length.
    pub fn from_days(
        series: impl IntoIterator<Item = (String, u32, Vec<f64>)>,
    ) -> Result<EvalSet, ForecastError> {
        use std::collections::BTreeMap;
        let mut jobs: Vec<String> = Vec::new();
        let mut by_job: Vec<BTreeMap<u32, Vec<f64>>> = Vec::new();
        for (job, day, values) in series {
            let j = match jobs.iter().position(|n| *n == job) {
                Some(j) => j,
                None => {
                    jobs.push(job.clone());
                    by_job.push(BTreeMap::new());
                    jobs.len() - 1
                }
            };
            if by_job[j].insert(day, values).is_some() {
                return Err(ForecastError::Invalid(format!(
                    "job {job}: day {day} appears twice"
                )));
            }
        }
        let Some(first) = by_job.first() else {
            return Err(ForecastError::Invalid("the trace has no series".into()));
        };
        let days: Vec<u32> = first.keys().copied().collect();
        let day_minutes = first.values().next().map_or(0, Vec::len);
        if day_minutes == 0 {
            return Err(ForecastError::Invalid(
                "the trace's days have no minutes".into(),
            ));
        }
        let mut values = Vec::with_capacity(jobs.len());
        for (name, m) in jobs.iter().zip(by_job) {
            let these: Vec<u32> = m.keys().copied().collect();
            if these != days {
                return Err(ForecastError::Invalid(format!(
                    "job {name} has days {these:?}, job {} has {days:?}: every job needs the same days",
                    jobs[0]
                )));
            }
            let mut v = Vec::with_capacity(days.len());
            for (day, minutes) in m {
                if minutes.len() != day_minutes {
                    return Err(ForecastError::Invalid(format!(
                        "job {name}, day {day}: {} minutes where other days have {day_minutes} (a gap?)",
                        minutes.len()
                    )));
                }
                if let Err(ForecastError::BadValue { minute, value, .. }) =
                    crate::validate(0, &minutes)
                {
                    return Err(ForecastError::Invalid(format!(
                        "job {name}, day {day}, minute {minute}: {value} is not a request count"
                    )));
                }
                v.push(minutes);
            }
            values.push(v);
        }
        Ok(EvalSet {
            day_minutes,
            jobs,
            days,
            values,
        })
    }
}
