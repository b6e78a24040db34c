//! Workload forecasters: given a job's requests per minute so far, forecast the next
//! minutes as quantiles.
//!
//! One trait, [`Forecaster`]: `fit` learns offline from past days (a [`TrainSet`]),
//! `update` takes the newest minutes online, `predict` gives any quantiles in (0, 1) per
//! step. The history a forecaster is shown always starts at minute 0 of a day, so the
//! time of day of every minute is known.
//!
//! - [`simple`]: last value, window max, seasonal naive (daily, weekly), the last value
//!   with its own recent error quantiles, the adaptive choice between the last value and
//!   the previous day, and the oracle (experiments only);
//! - [`ets`]: exponential smoothing (augurs AutoETS) and an MSTL decomposition (augurs)
//!   with ETS on the deseasonalised series - both with Gaussian prediction intervals;
//! - [`conformal`]: a calibrated quantile layer on top of any forecaster: the empirical
//!   quantiles of its own scaled errors, per horizon step, from held-out days and online;
//! - [`global`]: global models trained across jobs and days on lagged, previous-day and
//!   time-of-day features (weighted ridge regression, gradient-boosted trees);
//! - [`eval`]: the evaluation of forecasters on held-out days (RMSE, pinball loss,
//!   coverage, fit and predict time).
//!
//! Architecture invariant: no I/O, no clock in the forecasters; a forecast is a function
//! of what the forecaster was fitted on and the history it is shown (and, for the
//! oracle, of the trace it was given). Same inputs, same outputs.

pub mod conformal;
pub mod ets;
pub mod eval;
pub mod global;
pub mod simple;
mod spec;

pub use conformal::Calibrated;
pub use ets::{Ets, Mstl};
pub use global::{GlobalGbm, GlobalLinear};
pub use simple::{Adaptive, LastValue, LastValueQuantiles, Oracle, SeasonalNaive, WindowMax};
pub use spec::{BaseModel, FitCache, ForecastData, ForecasterSpec};

/// Why a forecaster cannot fit or forecast.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForecastError {
    #[error("job {job}: the history is empty")]
    EmptyHistory { job: usize },
    #[error(
        "job {job}, minute {minute}: {value} is not a request count (negative or not a number)"
    )]
    BadValue {
        job: usize,
        minute: usize,
        value: f64,
    },
    #[error(
        "job {job}: {minutes} minutes of training history is not a whole number of {day_minutes}-minute days"
    )]
    NotWholeDays {
        job: usize,
        minutes: usize,
        day_minutes: usize,
    },
    #[error("quantile {0} is not in (0, 1)")]
    BadQuantile(f64),
    #[error("{0}")]
    Invalid(String),
}

/// Past days of every job, to fit on: `jobs[j]` is job j's requests per minute over
/// whole days, oldest first, minute 0 of a day first.
#[derive(Debug, Clone)]
pub struct TrainSet {
    day_minutes: usize,
    jobs: Vec<Vec<f64>>,
}

impl TrainSet {
    /// Checks that every job has whole days of valid counts (a gap must be filled by the
    /// caller: it is an error here, not a silent zero).
    pub fn new(day_minutes: usize, jobs: Vec<Vec<f64>>) -> Result<Self, ForecastError> {
        if day_minutes == 0 {
            return Err(ForecastError::Invalid(
                "a day must have at least one minute".into(),
            ));
        }
        for (j, s) in jobs.iter().enumerate() {
            if s.is_empty() {
                return Err(ForecastError::EmptyHistory { job: j });
            }
            if s.len() % day_minutes != 0 {
                return Err(ForecastError::NotWholeDays {
                    job: j,
                    minutes: s.len(),
                    day_minutes,
                });
            }
            validate(j, s)?;
        }
        Ok(Self { day_minutes, jobs })
    }

    pub fn day_minutes(&self) -> usize {
        self.day_minutes
    }

    pub fn jobs(&self) -> &[Vec<f64>] {
        &self.jobs
    }

    /// Whole days per job (the smallest over jobs).
    pub fn days(&self) -> usize {
        self.jobs
            .iter()
            .map(|s| s.len() / self.day_minutes)
            .min()
            .unwrap_or(0)
    }

    /// The same jobs without their last `days` days.
    pub fn without_last_days(&self, days: usize) -> TrainSet {
        TrainSet {
            day_minutes: self.day_minutes,
            jobs: self
                .jobs
                .iter()
                .map(|s| s[..s.len().saturating_sub(days * self.day_minutes)].to_vec())
                .collect(),
        }
    }
}

/// Checks a history: every value a finite, non-negative count.
pub fn validate(job: usize, history: &[f64]) -> Result<(), ForecastError> {
    match history.iter().position(|v| !v.is_finite() || *v < 0.0) {
        Some(minute) => Err(ForecastError::BadValue {
            job,
            minute,
            value: history[minute],
        }),
        None => Ok(()),
    }
}

fn check_quantiles(qs: &[f64]) -> Result<(), ForecastError> {
    match qs.iter().find(|q| !(**q > 0.0 && **q < 1.0)) {
        Some(q) => Err(ForecastError::BadQuantile(*q)),
        None => Ok(()),
    }
}

/// A forecaster of per-minute request counts.
///
/// `history` is the job's complete minutes so far, oldest first, and `history[0]` is
/// minute 0 of a day. An empty history or a negative or non-finite count is an error;
/// a history too short for a model's features falls back to a simpler forecast (each
/// model documents which).
pub trait Forecaster: Send + ForecasterClone {
    fn name(&self) -> &str;

    /// Learn from past days (offline). Models without parameters learn nothing; the
    /// default does nothing.
    fn fit(&mut self, train: &TrainSet) -> Result<(), ForecastError> {
        let _ = train;
        Ok(())
    }

    /// Take the newest minutes of job `job` online without forecasting (a model that
    /// learns from its own errors records them here; `predict` does it too).
    fn update(&mut self, job: usize, history: &[f64]) {
        let _ = (job, history);
    }

    /// What `fit` learned, to keep (across a restart of a server): `null` for a model
    /// that learns nothing offline. Restored by [`Forecaster::load`] on a model made
    /// from the same spec, it forecasts exactly as this one did after its fit.
    fn save(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Takes back what [`Forecaster::save`] gave; a state of another model, or damaged,
    /// is an error (the model is then as made, unfitted).
    fn load(&mut self, state: &serde_json::Value) -> Result<(), ForecastError> {
        let _ = state;
        Ok(())
    }

    /// Forecast minutes `history.len() .. history.len() + horizon` of job `job` at each
    /// quantile of `qs`: `out[k][h]` is quantile `qs[k]` of minute `history.len() + h`.
    fn predict(
        &mut self,
        job: usize,
        history: &[f64],
        horizon: usize,
        qs: &[f64],
    ) -> Result<Vec<Vec<f64>>, ForecastError>;

    /// One quantile; on an error (which a simulator's own counts never cause) the last
    /// value held flat, 0 without history.
    fn forecast(&mut self, job: usize, history: &[f64], horizon: usize, q: f64) -> Vec<f64> {
        match self.predict(job, history, horizon, &[q]) {
            Ok(mut v) => v.pop().unwrap_or_default(),
            Err(_) => vec![history.last().copied().unwrap_or(0.0).max(0.0); horizon],
        }
    }
}

/// Cloning boxed forecasters (a fitted model is fitted once and copied to every run
/// that uses it); implemented for every `Forecaster + Clone`.
pub trait ForecasterClone {
    fn clone_box(&self) -> Box<dyn Forecaster>;
}

impl<T: Forecaster + Clone + 'static> ForecasterClone for T {
    fn clone_box(&self) -> Box<dyn Forecaster> {
        Box::new(self.clone())
    }
}

impl Clone for Box<dyn Forecaster> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// The saved state of a model that learns only the day's length ...
pub(crate) fn save_day(day_minutes: usize) -> serde_json::Value {
    serde_json::json!({ "day_minutes": day_minutes })
}

/// ... and the day's length it holds.
pub(crate) fn load_day(model: &str, state: &serde_json::Value) -> Result<usize, ForecastError> {
    #[derive(serde::Deserialize)]
    struct DayState {
        day_minutes: usize,
    }
    Ok(state_of::<DayState>(model, state)?.day_minutes.max(1))
}

/// A model's saved state as `T`, or an error naming the model.
pub(crate) fn state_of<T: serde::de::DeserializeOwned>(
    model: &str,
    v: &serde_json::Value,
) -> Result<T, ForecastError> {
    serde_json::from_value(v.clone()).map_err(|e| {
        ForecastError::Invalid(format!("{model}: a saved state that does not fit: {e}"))
    })
}

/// Linear interpolation between order statistics of `sorted` (ascending, non-empty).
pub(crate) fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, frac) = (pos.floor() as usize, pos.fract());
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + frac * (sorted[hi] - sorted[lo])
}

/// Every quantile the same point forecast (a point model's answer).
pub(crate) fn flat_quantiles(point: Vec<f64>, qs: &[f64]) -> Vec<Vec<f64>> {
    qs.iter().map(|_| point.clone()).collect()
}

/// The checks every `predict` starts with.
pub(crate) fn check_input(job: usize, history: &[f64], qs: &[f64]) -> Result<f64, ForecastError> {
    check_quantiles(qs)?;
    let Some(&last) = history.last() else {
        return Err(ForecastError::EmptyHistory { job });
    };
    validate(job, history)?;
    Ok(last)
}

#[cfg(test)]
mod tests;
