//! Forecasters without fitted parameters: they read the history they are shown.

use crate::{ForecastError, Forecaster, TrainSet, check_input, flat_quantiles, quantile_sorted};

/// The last complete minute, held flat (a point forecast: every quantile the same).
#[derive(Debug, Clone, Default)]
pub struct LastValue;

impl Forecaster for LastValue {
    fn name(&self) -> &str {
        "last-value"
    }
    fn predict(
        &mut self,
        job: usize,
        history: &[f64],
        horizon: usize,
        qs: &[f64],
    ) -> Result<Vec<Vec<f64>>, ForecastError> {
        let last = check_input(job, history, qs)?;
        Ok(flat_quantiles(vec![last; horizon], qs))
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
    fn predict(
        &mut self,
        job: usize,
        history: &[f64],
        horizon: usize,
        qs: &[f64],
    ) -> Result<Vec<Vec<f64>>, ForecastError> {
        check_input(job, history, qs)?;
        let from = history.len().saturating_sub(self.window.max(1));
        let m = history[from..].iter().copied().fold(0.0, f64::max);
        Ok(flat_quantiles(vec![m; horizon], qs))
    }
}

/// The same minute `days` days ago (1: daily, 7: weekly seasonality). Where the history
/// does not reach back that far it tries one day back, then holds the last value.
#[derive(Debug, Clone)]
pub struct SeasonalNaive {
    pub days: usize,
    pub day_minutes: usize,
}

impl SeasonalNaive {
    pub fn new(days: usize, day_minutes: usize) -> Self {
        Self {
            days: days.max(1),
            day_minutes: day_minutes.max(1),
        }
    }
}

impl Forecaster for SeasonalNaive {
    fn name(&self) -> &str {
        if self.days == 7 {
            "seasonal-naive-weekly"
        } else {
            "seasonal-naive"
        }
    }
    fn fit(&mut self, train: &TrainSet) -> Result<(), ForecastError> {
        self.day_minutes = train.day_minutes();
        Ok(())
    }
    fn save(&self) -> serde_json::Value {
        crate::save_day(self.day_minutes)
    }
    fn load(&mut self, state: &serde_json::Value) -> Result<(), ForecastError> {
        self.day_minutes = crate::load_day(self.name(), state)?;
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
        let point = (0..horizon)
            .map(|h| {
                let target = n + h;
                [self.days, 1]
                    .iter()
                    .map(|d| d * self.day_minutes)
                    .find(|back| *back <= target && target - back < n)
                    .map_or(last, |back| history[target - back])
            })
            .collect();
        Ok(flat_quantiles(point, qs))
    }
}

/// The errors y[t + h] - y[t] of origins t in [from, to) with t = phase mod period.
fn change_errors(
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

fn quantile_of(errors: &mut [f64], q: f64) -> f64 {
    errors.sort_by(f64::total_cmp);
    quantile_sorted(errors, q)
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

    /// The period whose phase-matched median forecasts had the least absolute error over
    /// the second half of the window.
    pub(crate) fn pick_period(&self, history: &[f64], from: usize) -> usize {
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
                change_errors(history, from, t, 1, period, t, &mut errs);
                if errs.len() < self.min_errors {
                    continue;
                }
                let e = quantile_of(&mut errs, 0.5);
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
    fn predict(
        &mut self,
        job: usize,
        history: &[f64],
        horizon: usize,
        qs: &[f64],
    ) -> Result<Vec<Vec<f64>>, ForecastError> {
        let last = check_input(job, history, qs)?;
        let n = history.len();
        let from = n.saturating_sub(self.window.max(2));
        let period = if self.periods.is_empty() {
            1
        } else {
            self.pick_period(history, from)
        };
        // The origin of this forecast is the last complete minute, n - 1.
        let phase = n - 1;
        let mut out = vec![vec![last; horizon]; qs.len()];
        let mut errors = Vec::with_capacity(self.window);
        for h in 1..=horizon {
            change_errors(history, from, n, h, period, phase, &mut errors);
            if errors.len() < self.min_errors {
                continue;
            }
            errors.sort_by(f64::total_cmp);
            for (k, q) in qs.iter().enumerate() {
                out[k][h - 1] = (last + quantile_sorted(&errors, *q)).max(0.0);
            }
        }
        Ok(out)
    }
}

/// The true future of the trace (an upper bound on forecasting; not a real forecaster).
/// `truth[job]` is aligned with the histories it is shown (same minute 0); beyond its
/// end it repeats its last minute.
#[derive(Debug, Clone)]
pub struct Oracle {
    truth: Vec<Vec<f64>>,
}

impl Oracle {
    pub fn new(truth: Vec<Vec<f64>>) -> Self {
        Self { truth }
    }
}

impl Forecaster for Oracle {
    fn name(&self) -> &str {
        "oracle"
    }
    fn predict(
        &mut self,
        job: usize,
        history: &[f64],
        horizon: usize,
        qs: &[f64],
    ) -> Result<Vec<Vec<f64>>, ForecastError> {
        check_input(job, history, qs)?;
        let t = self.truth.get(job).map(Vec::as_slice).unwrap_or(&[]);
        let last = t.last().copied().unwrap_or(0.0);
        let point = (0..horizon)
            .map(|k| t.get(history.len() + k).copied().unwrap_or(last))
            .collect();
        Ok(flat_quantiles(point, qs))
    }
}

/// The previous day's load scaled to today's level: minute `target` is forecast as the
/// same minute a day earlier times the ratio of the last `level_window` minutes to the
/// same minutes a day earlier (bounded to [0.25, 4]). None while the history does not
/// reach a day back.
pub(crate) fn previous_day_point(
    history: &[f64],
    target: usize,
    day: usize,
    level_window: usize,
) -> Option<f64> {
    let n = history.len();
    if target < day || target - day >= n || n < day + 1 {
        return None;
    }
    let base = history[target - day];
    let from = n.saturating_sub(level_window).max(day);
    let today: f64 = history[from..n].iter().sum();
    let before: f64 = history[from - day..n - day].iter().sum();
    let ratio = if before > 0.0 {
        (today / before).clamp(0.25, 4.0)
    } else {
        1.0
    };
    Some(base * ratio)
}

/// Online choice, per job and call, between holding the last value and the previous
/// day scaled to today's level: whichever erred less (mean absolute error over the
/// horizon) on the last `window` origins forecasts, plus the empirical quantiles of its
/// own errors at each step. While the history does not reach a day back it is the last
/// value with its error quantiles.
#[derive(Debug, Clone)]
pub struct Adaptive {
    pub day_minutes: usize,
    pub window: usize,
    pub level_window: usize,
}

impl Adaptive {
    pub fn new(day_minutes: usize) -> Self {
        Self {
            day_minutes: day_minutes.max(1),
            window: 60,
            level_window: 10,
        }
    }

    /// Model 0 (last value) or 1 (previous day) forecast of minute `origin + h - 1` from
    /// the minutes before `origin`.
    fn point(&self, history: &[f64], origin: usize, h: usize, model: usize) -> Option<f64> {
        let past = &history[..origin];
        match model {
            0 => past.last().copied(),
            _ => previous_day_point(past, origin + h - 1, self.day_minutes, self.level_window),
        }
    }
}

impl Forecaster for Adaptive {
    fn name(&self) -> &str {
        "adaptive"
    }
    fn fit(&mut self, train: &TrainSet) -> Result<(), ForecastError> {
        self.day_minutes = train.day_minutes();
        Ok(())
    }
    fn save(&self) -> serde_json::Value {
        crate::save_day(self.day_minutes)
    }
    fn load(&mut self, state: &serde_json::Value) -> Result<(), ForecastError> {
        self.day_minutes = crate::load_day(self.name(), state)?;
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
        let models = 2;
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
                    if let Some(f) = self.point(history, origin, h, m) {
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
        let mut out = vec![vec![0.0; horizon]; qs.len()];
        for h in 1..=horizon {
            let point = self.point(history, n, h, best).unwrap_or(last);
            let errs = &mut errors[best][h - 1];
            errs.sort_by(f64::total_cmp);
            for (k, q) in qs.iter().enumerate() {
                let e = if errs.len() < 10 {
                    0.0
                } else {
                    quantile_sorted(errs, *q)
                };
                out[k][h - 1] = (point + e).max(0.0);
            }
        }
        Ok(out)
    }
}
