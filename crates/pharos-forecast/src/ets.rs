//! Exponential smoothing and seasonal decomposition, from the augurs crates.
//!
//! - [`Ets`]: AutoETS (additive error; no trend, additive or damped trend, chosen by
//!   AICc) fitted on the last `window` minutes at each forecast origin, with its
//!   Gaussian prediction intervals as quantiles;
//! - [`Mstl`]: the daily seasonal component from an MSTL decomposition of each job's
//!   training days, and ETS on the recent deseasonalised minutes: the forecast is ETS's
//!   plus the seasonal component of the target minutes (MSTL's own forecasting scheme,
//!   with the decomposition fitted offline and the trend model online).

use augurs_core::{Fit, Predict};
use augurs_ets::AutoETS;
use augurs_mstl::MSTLModel;

use crate::{ForecastError, Forecaster, TrainSet, check_input, flat_quantiles};

/// The smallest window ETS is fitted on; shorter histories hold the last value.
const MIN_POINTS: usize = 10;

/// Quantiles from one ETS fit of `y`: `out[k][h]`, or None when no model fits.
fn ets_quantiles(y: &[f64], horizon: usize, qs: &[f64]) -> Option<Vec<Vec<f64>>> {
    if y.len() < MIN_POINTS {
        return None;
    }
    // A constant window has no error to estimate (the optimiser would divide by zero).
    let first = y[0];
    if y.iter().all(|v| (*v - first).abs() < 1e-12) {
        return Some(flat_quantiles(vec![first; horizon], qs));
    }
    let model = AutoETS::new(1, "AZN").ok()?.fit(y).ok()?;
    let mut out = Vec::with_capacity(qs.len());
    for &q in qs {
        let level = (2.0 * q - 1.0).abs();
        if level < 1e-9 {
            out.push(model.predict(horizon, None).ok()?.point);
            continue;
        }
        let f = model.predict(horizon, level).ok()?;
        let iv = f.intervals?;
        out.push(if q > 0.5 { iv.upper } else { iv.lower });
    }
    if out.iter().flatten().any(|v| !v.is_finite()) {
        return None;
    }
    Some(out)
}

/// AutoETS on the last `window` minutes (see the module). Histories shorter than 10
/// minutes, or windows no model fits, hold the last value.
#[derive(Debug, Clone)]
pub struct Ets {
    pub window: usize,
}

impl Default for Ets {
    fn default() -> Self {
        Self { window: 60 }
    }
}

impl Forecaster for Ets {
    fn name(&self) -> &str {
        "ets"
    }
    fn predict(
        &mut self,
        job: usize,
        history: &[f64],
        horizon: usize,
        qs: &[f64],
    ) -> Result<Vec<Vec<f64>>, ForecastError> {
        let last = check_input(job, history, qs)?;
        let from = history.len().saturating_sub(self.window.max(MIN_POINTS));
        let out = ets_quantiles(&history[from..], horizon, qs)
            .unwrap_or_else(|| flat_quantiles(vec![last; horizon], qs));
        Ok(clamp(out))
    }
}

fn clamp(mut out: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    out.iter_mut().flatten().for_each(|v| *v = v.max(0.0));
    out
}

/// MSTL decomposition offline, ETS online (see the module). A job without a fitted
/// seasonal component (not in the training set, or with fewer than two training days)
/// is forecast by plain ETS.
#[derive(Debug, Clone)]
pub struct Mstl {
    pub window: usize,
    day_minutes: usize,
    /// Per job, the seasonal component of each minute of the day (from the last
    /// training day of the decomposition).
    seasonal: Vec<Option<Vec<f64>>>,
}

impl Default for Mstl {
    fn default() -> Self {
        Self {
            window: 60,
            day_minutes: 1440,
            seasonal: Vec::new(),
        }
    }
}

impl Mstl {
    /// The seasonal component of the series' daily period, one value per minute of
    /// the day, from its last day.
    fn decompose(series: &[f64], day: usize) -> Option<Vec<f64>> {
        if day < 2 || series.len() < 2 * day {
            return None;
        }
        let fitted = MSTLModel::naive(vec![day]).fit(series).ok()?;
        let s = fitted.fit().seasonal().first()?;
        let last_day = &s[s.len() - day..];
        Some(last_day.iter().map(|v| *v as f64).collect())
    }
}

impl Forecaster for Mstl {
    fn name(&self) -> &str {
        "mstl"
    }
    fn fit(&mut self, train: &TrainSet) -> Result<(), ForecastError> {
        self.day_minutes = train.day_minutes();
        self.seasonal = train
            .jobs()
            .iter()
            .map(|s| Self::decompose(s, self.day_minutes))
            .collect();
        Ok(())
    }
    fn save(&self) -> serde_json::Value {
        serde_json::json!({ "day_minutes": self.day_minutes, "seasonal": self.seasonal })
    }
    fn load(&mut self, state: &serde_json::Value) -> Result<(), ForecastError> {
        #[derive(serde::Deserialize)]
        struct S {
            day_minutes: usize,
            seasonal: Vec<Option<Vec<f64>>>,
        }
        let s: S = crate::state_of("mstl", state)?;
        self.day_minutes = s.day_minutes.max(1);
        self.seasonal = s.seasonal;
        Ok(())
    }
    fn predict(
        &mut self,
        job: usize,
        history: &[f64],
        horizon: usize,
        qs: &[f64],
    ) -> Result<Vec<Vec<f64>>, ForecastError> {
        let last = check_input(job, history, qs)?;
        let n = history.len();
        let from = n.saturating_sub(self.window.max(MIN_POINTS));
        let day = self.day_minutes;
        let Some(Some(season)) = self.seasonal.get(job) else {
            let out = ets_quantiles(&history[from..], horizon, qs)
                .unwrap_or_else(|| flat_quantiles(vec![last; horizon], qs));
            return Ok(clamp(out));
        };
        let deseasonalised: Vec<f64> = (from..n).map(|t| history[t] - season[t % day]).collect();
        let out = match ets_quantiles(&deseasonalised, horizon, qs) {
            Some(mut out) => {
                for row in &mut out {
                    for (h, v) in row.iter_mut().enumerate() {
                        *v += season[(n + h) % day];
                    }
                }
                out
            }
            None => flat_quantiles(vec![last; horizon], qs),
        };
        Ok(clamp(out))
    }
}
