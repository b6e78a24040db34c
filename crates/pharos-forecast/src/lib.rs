//! Workload forecasters: given a job's requests per minute so far, forecast the next
//! minutes at a quantile.
//!
//! - [`LastValue`]: the last complete minute, held flat;
//! - [`LastValueQuantiles`]: the last value plus the empirical quantile of its own
//!   recent errors per horizon step (honest quantiles without a distribution assumed);
//! - [`WindowMax`]: the busiest of the last few minutes, held flat (a cautious point
//!   forecast);
//! - [`Oracle`]: the true future of the trace - an upper bound on what any forecaster
//!   can do, for experiments only.
//!
//! Architecture invariant: no I/O, no clock; a forecaster is a function of the history
//! it is shown (and, for the oracle, of the trace it was given).

use serde::{Deserialize, Serialize};

/// A forecaster of per-minute request counts.
pub trait Forecaster: Send {
    fn name(&self) -> &str;

    /// Forecast minutes `history.len() .. history.len() + horizon` of job `job`, whose
    /// complete minutes so far are `history` (oldest first), at quantile `q` in (0, 1).
    fn forecast(&mut self, job: usize, history: &[f64], horizon: usize, q: f64) -> Vec<f64>;
}

/// The last complete minute, held flat (0 without history).
#[derive(Debug, Clone, Default)]
pub struct LastValue;

impl Forecaster for LastValue {
    fn name(&self) -> &str {
        "last-value"
    }
    fn forecast(&mut self, _job: usize, history: &[f64], horizon: usize, _q: f64) -> Vec<f64> {
        vec![history.last().copied().unwrap_or(0.0); horizon]
    }
}

/// The busiest of the last `window` complete minutes, held flat.
#[derive(Debug, Clone)]
pub struct WindowMax {
    pub window: usize,
}

impl Forecaster for WindowMax {
    fn name(&self) -> &str {
        "window-max"
    }
    fn forecast(&mut self, _job: usize, history: &[f64], horizon: usize, _q: f64) -> Vec<f64> {
        let from = history.len().saturating_sub(self.window.max(1));
        let m = history[from..].iter().copied().fold(0.0, f64::max);
        vec![m; horizon]
    }
}

/// The last value plus the empirical quantile of its own recent errors at each horizon
/// step: over the last `window` complete minutes, the changes y[t + h] - y[t] give the
/// distribution of the h-step-ahead error of holding the last value. Falls back to the
/// last value while fewer than 10 errors are known.
#[derive(Debug, Clone)]
pub struct LastValueQuantiles {
    pub window: usize,
}

impl Forecaster for LastValueQuantiles {
    fn name(&self) -> &str {
        "last-value-quantiles"
    }
    fn forecast(&mut self, _job: usize, history: &[f64], horizon: usize, q: f64) -> Vec<f64> {
        let n = history.len();
        let Some(&last) = history.last() else {
            return vec![0.0; horizon];
        };
        let from = n.saturating_sub(self.window.max(2));
        let mut errors = Vec::with_capacity(self.window);
        (1..=horizon)
            .map(|h| {
                errors.clear();
                errors.extend((from..n.saturating_sub(h)).map(|t| history[t + h] - history[t]));
                if errors.len() < 10 {
                    return last;
                }
                errors.sort_by(f64::total_cmp);
                let pos = q * (errors.len() - 1) as f64;
                let (lo, frac) = (pos.floor() as usize, pos.fract());
                let e = errors[lo] + frac * (errors[(lo + 1).min(errors.len() - 1)] - errors[lo]);
                (last + e).max(0.0)
            })
            .collect()
    }
}

/// The true future of the trace (an upper bound on forecasting; not a real forecaster).
/// Beyond the end of the trace it repeats the last minute.
#[derive(Debug, Clone)]
pub struct Oracle {
    truth: Vec<Vec<f64>>,
}

impl Oracle {
    /// `truth[job]` is the job's requests in every minute of the run.
    pub fn new(truth: Vec<Vec<f64>>) -> Self {
        Self { truth }
    }
}

impl Forecaster for Oracle {
    fn name(&self) -> &str {
        "oracle"
    }
    fn forecast(&mut self, job: usize, history: &[f64], horizon: usize, _q: f64) -> Vec<f64> {
        let t = self.truth.get(job).map(Vec::as_slice).unwrap_or(&[]);
        let last = t.last().copied().unwrap_or(0.0);
        (0..horizon)
            .map(|k| t.get(history.len() + k).copied().unwrap_or(last))
            .collect()
    }
}

/// The forecasters policies can name in their parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForecasterKind {
    #[default]
    LastValue,
    LastValueQuantiles,
    WindowMax,
    Oracle,
}

impl ForecasterKind {
    /// Make the forecaster; the oracle needs every job's true trace.
    pub fn build(self, truth: &[Vec<f64>]) -> Box<dyn Forecaster> {
        match self {
            ForecasterKind::LastValue => Box::new(LastValue),
            ForecasterKind::LastValueQuantiles => Box::new(LastValueQuantiles { window: 120 }),
            ForecasterKind::WindowMax => Box::new(WindowMax { window: 5 }),
            ForecasterKind::Oracle => Box::new(Oracle::new(truth.to_vec())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_forecasters() {
        let h = [3.0, 9.0, 4.0];
        assert_eq!(LastValue.forecast(0, &h, 2, 0.5), vec![4.0, 4.0]);
        assert_eq!(WindowMax { window: 2 }.forecast(0, &h, 1, 0.5), vec![9.0]);
        assert_eq!(LastValue.forecast(0, &[], 1, 0.5), vec![0.0]);
        // Alternating 10, 20 (ending at 20): one step ahead the last value errs by
        // +-10, two steps ahead not at all.
        let alt: Vec<f64> = (0..40)
            .map(|t| if t % 2 == 0 { 10.0 } else { 20.0 })
            .collect();
        let mut f = LastValueQuantiles { window: 30 };
        let hi = f.forecast(0, &alt, 2, 0.9);
        let lo = f.forecast(0, &alt, 2, 0.1);
        assert_eq!(hi, vec![30.0, 20.0]);
        assert_eq!(lo, vec![10.0, 20.0]);
        let mut o = Oracle::new(vec![vec![1.0, 2.0, 3.0, 4.0, 5.0]]);
        assert_eq!(o.forecast(0, &h, 3, 0.5), vec![4.0, 5.0, 5.0]);
    }
}
