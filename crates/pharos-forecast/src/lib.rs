//! Workload forecasters: given a job's requests per minute so far, forecast the next
//! minutes at a quantile.
//!
//! - [`LastValue`]: the last complete minute, held flat;
//! - [`LastValueQuantiles`]: the last value plus the empirical quantile of its own
//!   recent errors per horizon step (honest quantiles without a distribution assumed);
//!   with a detected period, only the errors of origins in the same phase count;
//! - [`WindowMax`]: the busiest of the last few minutes, held flat (a cautious point
//!   forecast);
//! - [`Adaptive`]: per job and call, the last value or the previous day scaled to
//!   today's level, whichever erred less lately, with its empirical error quantiles;
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
/// distribution of the h-step-ahead error of holding the last value.
///
/// With `periods`, only origins in the same phase as now (t = now mod P) count, P chosen
/// among `periods` (and 1, no season) as the one whose median forecasts erred least over
/// the window: a load that jumps every 5 minutes is then expected to jump. Falls back to
/// the last value while fewer than `min_errors` errors are known.
#[derive(Debug, Clone)]
pub struct LastValueQuantiles {
    pub window: usize,
    pub periods: Vec<usize>,
    pub min_errors: usize,
}

impl LastValueQuantiles {
    pub fn new(window: usize) -> Self {
        Self {
            window,
            periods: Vec::new(),
            min_errors: 10,
        }
    }

    pub fn seasonal(window: usize, periods: Vec<usize>) -> Self {
        Self {
            window,
            periods,
            min_errors: 5,
        }
    }

    /// The errors y[t + h] - y[t] of origins t in [from, to) with t = phase mod period.
    fn errors(
        history: &[f64],
        from: usize,
        to: usize,
        h: usize,
        period: usize,
        phase: usize,
        out: &mut Vec<f64>,
    ) {
        out.clear();
        let end = to.min(history.len().saturating_sub(h));
        out.extend(
            (from..end)
                .filter(|t| t % period == phase % period)
                .map(|t| history[t + h] - history[t]),
        );
    }

    fn quantile(errors: &mut [f64], q: f64) -> f64 {
        errors.sort_by(f64::total_cmp);
        let pos = q * (errors.len() - 1) as f64;
        let (lo, frac) = (pos.floor() as usize, pos.fract());
        errors[lo] + frac * (errors[(lo + 1).min(errors.len() - 1)] - errors[lo])
    }

    /// The period whose phase-matched median forecasts had the least absolute error over
    /// the second half of the window.
    fn pick_period(&self, history: &[f64], from: usize) -> usize {
        let n = history.len();
        let mut best = (f64::INFINITY, 1);
        let mut errs = Vec::new();
        for &period in std::iter::once(&1).chain(&self.periods) {
            if period == 0 {
                continue;
            }
            let mid = from + (n - from) / 2;
            let (mut abs, mut k) = (0.0, 0usize);
            for t in mid..n.saturating_sub(1) {
                // Forecast y[t + 1] from origin t with errors known before t.
                Self::errors(history, from, t, 1, period, t, &mut errs);
                if errs.len() < self.min_errors {
                    continue;
                }
                let e = Self::quantile(&mut errs, 0.5);
                abs += (history[t] + e - history[t + 1]).abs();
                k += 1;
            }
            if k > 0 && abs / (k as f64) < best.0 - 1e-9 {
                best = (abs / k as f64, period);
            }
        }
        best.1
    }
}

impl Forecaster for LastValueQuantiles {
    fn name(&self) -> &str {
        if self.periods.is_empty() {
            "last-value-quantiles"
        } else {
            "last-value-seasonal"
        }
    }
    fn forecast(&mut self, _job: usize, history: &[f64], horizon: usize, q: f64) -> Vec<f64> {
        let n = history.len();
        let Some(&last) = history.last() else {
            return vec![0.0; horizon];
        };
        let from = n.saturating_sub(self.window.max(2));
        let period = if self.periods.is_empty() {
            1
        } else {
            self.pick_period(history, from)
        };
        // The origin of this forecast is the last complete minute, n - 1.
        let phase = n - 1;
        let mut errors = Vec::with_capacity(self.window);
        (1..=horizon)
            .map(|h| {
                Self::errors(history, from, n, h, period, phase, &mut errors);
                if errors.len() < self.min_errors {
                    return last;
                }
                (last + Self::quantile(&mut errors, q)).max(0.0)
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

/// The previous day's load, scaled to today's level: minute m of today is forecast as
/// minute m of `previous_day` times the ratio of today's last `level_window` minutes to
/// the same minutes of the previous day (bounded to [0.25, 4]).
fn previous_day_point(
    previous_day: &[f64],
    history: &[f64],
    target: usize,
    level_window: usize,
) -> Option<f64> {
    let n = history.len();
    let &base = previous_day.get(target)?;
    if n == 0 || n > previous_day.len() {
        return None;
    }
    let from = n.saturating_sub(level_window);
    let today: f64 = history[from..n].iter().sum();
    let before: f64 = previous_day[from..n].iter().sum();
    let ratio = if before > 0.0 {
        (today / before).clamp(0.25, 4.0)
    } else {
        1.0
    };
    Some(base * ratio)
}

/// Online choice, per job and call, between holding the last value and the previous
/// day scaled to today's level: whichever erred less (mean absolute error over the
/// horizon) on the last `window` origins forecasts, plus the empirical `q`-quantile of
/// its own errors at each step. Without a previous day it is the last value with
/// error quantiles.
#[derive(Debug, Clone)]
pub struct Adaptive {
    previous_day: Vec<Vec<f64>>,
    pub window: usize,
    pub level_window: usize,
}

impl Adaptive {
    /// `previous_day[job]`: the job's requests per minute on the day before the run,
    /// aligned minute by minute with the run.
    pub fn new(previous_day: Vec<Vec<f64>>) -> Self {
        Self {
            previous_day,
            window: 60,
            level_window: 10,
        }
    }

    /// Model 0 (last value) or 1 (previous day) forecast of minute `origin + h` from
    /// minutes before `origin`.
    fn point(
        &self,
        job: usize,
        history: &[f64],
        origin: usize,
        h: usize,
        model: usize,
    ) -> Option<f64> {
        let past = &history[..origin];
        match model {
            0 => past.last().copied(),
            _ => previous_day_point(
                self.previous_day.get(job)?,
                past,
                origin + h - 1,
                self.level_window,
            ),
        }
    }
}

impl Forecaster for Adaptive {
    fn name(&self) -> &str {
        "adaptive"
    }
    fn forecast(&mut self, job: usize, history: &[f64], horizon: usize, q: f64) -> Vec<f64> {
        let n = history.len();
        let Some(&last) = history.last() else {
            return vec![0.0; horizon];
        };
        let models = if self.previous_day.get(job).is_some_and(|d| !d.is_empty()) {
            2
        } else {
            1
        };
        let from = n.saturating_sub(self.window).max(1);
        // errors[model][h - 1] over past origins whose target is known.
        let mut errors = vec![vec![Vec::new(); horizon]; models];
        let mut mae = vec![(0.0f64, 0usize); models];
        for origin in from..n {
            for h in 1..=horizon {
                let target = origin + h - 1;
                if target >= n {
                    break;
                }
                for (m, errs) in errors.iter_mut().enumerate() {
                    if let Some(f) = self.point(job, history, origin, h, m) {
                        let e = history[target] - f;
                        errs[h - 1].push(e);
                        mae[m].0 += e.abs();
                        mae[m].1 += 1;
                    }
                }
            }
        }
        let score = |m: usize| {
            if mae[m].1 > 0 {
                mae[m].0 / mae[m].1 as f64
            } else {
                f64::INFINITY
            }
        };
        let best = (0..models)
            .min_by(|a, b| score(*a).total_cmp(&score(*b)))
            .unwrap_or(0);
        (1..=horizon)
            .map(|h| {
                let point = self.point(job, history, n, h, best).unwrap_or(last);
                let errs = &mut errors[best][h - 1];
                if errs.len() < 10 {
                    return point.max(0.0);
                }
                errs.sort_by(f64::total_cmp);
                let pos = q * (errs.len() - 1) as f64;
                let (lo, frac) = (pos.floor() as usize, pos.fract());
                let e = errs[lo] + frac * (errs[(lo + 1).min(errs.len() - 1)] - errs[lo]);
                (point + e).max(0.0)
            })
            .collect()
    }
}

/// What forecasters may know of the run beyond the history they are shown.
#[derive(Debug, Clone, Default)]
pub struct ForecastData {
    /// Every job's requests per minute for the whole run (the oracle's input only).
    pub truth_rpm: Vec<Vec<f64>>,
    /// Every job's requests per minute on the day before the run, aligned with it.
    pub previous_day_rpm: Vec<Vec<f64>>,
}

/// The forecasters policies can name in their parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForecasterKind {
    #[default]
    LastValue,
    LastValueQuantiles,
    LastValueSeasonal,
    WindowMax,
    Adaptive,
    Oracle,
}

impl ForecasterKind {
    /// Make the forecaster; the oracle needs every job's true trace, the adaptive one
    /// the previous day (without it, it holds the last value).
    pub fn build(self, data: &ForecastData) -> Box<dyn Forecaster> {
        match self {
            ForecasterKind::LastValue => Box::new(LastValue),
            ForecasterKind::LastValueQuantiles => Box::new(LastValueQuantiles::new(120)),
            ForecasterKind::LastValueSeasonal => Box::new(LastValueQuantiles::seasonal(
                120,
                vec![2, 3, 4, 5, 6, 10, 15, 30],
            )),
            ForecasterKind::WindowMax => Box::new(WindowMax { window: 5 }),
            ForecasterKind::Adaptive => Box::new(Adaptive::new(data.previous_day_rpm.clone())),
            ForecasterKind::Oracle => Box::new(Oracle::new(data.truth_rpm.clone())),
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
        let mut f = LastValueQuantiles::new(30);
        let hi = f.forecast(0, &alt, 2, 0.9);
        let lo = f.forecast(0, &alt, 2, 0.1);
        assert_eq!(hi, vec![30.0, 20.0]);
        assert_eq!(lo, vec![10.0, 20.0]);
        // A load that jumps every 5 minutes: the seasonal variant finds the period and
        // expects the jump at the right step.
        let jumps: Vec<f64> = (0..120)
            .map(|t| if t % 5 == 0 { 200.0 } else { 100.0 })
            .collect();
        let mut f = LastValueQuantiles::seasonal(60, vec![2, 3, 5, 7]);
        assert_eq!(f.pick_period(&jumps, 60), 5);
        // History ends at minute 119 (phase 4): the next minute (120) jumps.
        assert_eq!(f.forecast(0, &jumps, 3, 0.5), vec![200.0, 100.0, 100.0]);
        // Today is yesterday doubled with a bump at minute 30: after a few minutes the
        // previous day, scaled, forecasts it exactly and wins over the last value.
        let yesterday: Vec<f64> = (0..60)
            .map(|t| if t == 30 { 90.0 } else { 10.0 + t as f64 })
            .collect();
        let today: Vec<f64> = yesterday.iter().map(|v| 2.0 * v).collect();
        let mut a = Adaptive::new(vec![yesterday]);
        // Minutes 0-28 known: minute 29 is 2 x 39, minute 30 the bump.
        assert_eq!(a.forecast(0, &today[..29], 2, 0.5), vec![78.0, 180.0]);
        let mut none = Adaptive::new(vec![]);
        assert_eq!(
            none.forecast(0, &today[..29], 1, 0.5),
            vec![today[28] + 2.0]
        );
        let mut o = Oracle::new(vec![vec![1.0, 2.0, 3.0, 4.0, 5.0]]);
        assert_eq!(o.forecast(0, &h, 3, 0.5), vec![4.0, 5.0, 5.0]);
    }
}
