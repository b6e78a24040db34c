//! A calibrated quantile layer on top of any forecaster.
//!
//! The base forecaster gives a median; the layer adds, per horizon step h, the
//! empirical quantile of the base's own h-step errors, each error divided by the local
//! volatility at its origin (the mean absolute minute-to-minute change over the last
//! 15 minutes, plus 1). Scaling makes errors of busy and quiet jobs, calm and bursty
//! hours comparable, so one set of errors serves them all (split-conformal with a
//! normalised score).
//!
//! The errors come from two places:
//! - offline, at `fit`: the base is fitted without the last `calibration_days` training
//!   days and forecasts every origin of those days (errors it could not have learned
//!   from); then it is refitted on all days. Where those days hold more than
//!   `max_origins` origins over all jobs (100,000 by default), every k-th origin is
//!   taken, k the smallest stride that fits (counted across jobs and days), which bounds
//!   the fit's time whatever the number of jobs;
//! - online: every forecast is remembered, and its errors are recorded once its target
//!   minutes are seen (the most recent `online_window` per job and step are kept).
//!
//! A job's own errors are used once it has `min_job_errors` of them at a step; until
//! then the errors of all jobs pooled. Without any errors the base's own quantiles are
//! returned unchanged.

use std::borrow::Cow;
use std::collections::VecDeque;

use crate::{ForecastError, Forecaster, TrainSet, check_input, quantile_sorted};

/// Minutes over which the volatility scale is measured.
const SCALE_WINDOW: usize = 15;

/// The volatility scale of a history at its end: mean absolute change over the last
/// 15 minutes, plus 1.
pub(crate) fn volatility(history: &[f64]) -> f64 {
    let n = history.len();
    let from = n.saturating_sub(SCALE_WINDOW + 1);
    let w = &history[from..];
    if w.len() < 2 {
        return 1.0;
    }
    let sum: f64 = w.windows(2).map(|p| (p[1] - p[0]).abs()).sum();
    sum / (w.len() - 1) as f64 + 1.0
}

#[derive(Clone)]
struct Pending {
    origin: usize,
    median: Vec<f64>,
    scale: f64,
    /// The first step whose error is not yet recorded.
    next: usize,
}

#[derive(Default, Clone)]
struct JobState {
    /// Offline errors per step (scaled).
    offline: Vec<Vec<f64>>,
    /// Online errors per step (scaled), newest last.
    online: Vec<VecDeque<f64>>,
    pending: VecDeque<Pending>,
    /// History length at the last update.
    seen: usize,
}

/// See the module.
#[derive(Clone)]
pub struct Calibrated {
    base: Box<dyn Forecaster>,
    name: String,
    pub calibration_days: usize,
    pub max_horizon: usize,
    pub online_window: usize,
    pub min_job_errors: usize,
    /// The most offline origins over all jobs (see the module).
    pub max_origins: usize,
    /// The first origin of each calibration day (the minutes before it are the context
    /// a forecast needs).
    pub context: usize,
    jobs: Vec<JobState>,
    /// Offline errors of all jobs, per step, sorted.
    pooled: Vec<Vec<f64>>,
}

impl Calibrated {
    pub fn new(base: Box<dyn Forecaster>) -> Self {
        let name = format!("{}+cal", base.name());
        Self {
            base,
            name,
            calibration_days: 2,
            max_horizon: 16,
            online_window: 720,
            min_job_errors: 200,
            max_origins: 100_000,
            context: 15,
            jobs: Vec::new(),
            pooled: Vec::new(),
        }
    }

    fn job(&mut self, job: usize) -> &mut JobState {
        if self.jobs.len() <= job {
            self.jobs.resize_with(job + 1, JobState::default);
        }
        &mut self.jobs[job]
    }

    /// Pools every job's offline errors, per step, sorted.
    fn pool(&mut self) {
        self.pooled = vec![Vec::new(); self.max_horizon];
        for j in &self.jobs {
            for (h, e) in j.offline.iter().enumerate().take(self.max_horizon) {
                self.pooled[h].extend_from_slice(e);
            }
        }
        for p in &mut self.pooled {
            p.sort_by(f64::total_cmp);
        }
    }

    /// The sorted errors at step h (0-based) for a job: its own (offline and online)
    /// when it has enough, else the pooled offline ones.
    fn errors(&self, job: usize, h: usize) -> Cow<'_, [f64]> {
        let h = h.min(self.max_horizon.max(1) - 1);
        if let Some(s) = self.jobs.get(job) {
            let own =
                s.offline.get(h).map_or(0, Vec::len) + s.online.get(h).map_or(0, VecDeque::len);
            if own >= self.min_job_errors {
                let mut e: Vec<f64> = s.offline.get(h).into_iter().flatten().copied().collect();
                e.extend(s.online.get(h).into_iter().flatten().copied());
                e.sort_by(f64::total_cmp);
                return Cow::Owned(e);
            }
        }
        Cow::Borrowed(self.pooled.get(h).map_or(&[][..], Vec::as_slice))
    }
}

impl Forecaster for Calibrated {
    fn name(&self) -> &str {
        &self.name
    }

    fn fit(&mut self, train: &TrainSet) -> Result<(), ForecastError> {
        let day = train.day_minutes();
        let cal = self.calibration_days.min(train.days().saturating_sub(1));
        self.jobs.clear();
        self.pooled = vec![Vec::new(); self.max_horizon];
        if cal > 0 {
            self.base.fit(&train.without_last_days(cal))?;
            let first = self.context.max(1);
            let total: usize = train
                .jobs()
                .iter()
                .map(|s| cal.min(s.len() / day) * day.saturating_sub(first))
                .sum();
            let stride = total.div_ceil(self.max_origins.max(1)).max(1);
            let mut k = 0usize;
            for (j, series) in train.jobs().iter().enumerate() {
                let mut offline = vec![Vec::new(); self.max_horizon];
                let first_day = series.len() / day - cal;
                for d in first_day..series.len() / day {
                    let start = d * day;
                    for origin in (start + first)..(start + day) {
                        k += 1;
                        if !(k - 1).is_multiple_of(stride) {
                            continue;
                        }
                        let hist = &series[..origin];
                        let steps = self.max_horizon.min(start + day - origin);
                        let median = self.base.predict(j, hist, steps, &[0.5])?.remove(0);
                        let scale = volatility(hist);
                        for (h, m) in median.iter().enumerate() {
                            offline[h].push((series[origin + h] - m) / scale);
                        }
                    }
                }
                self.job(j).offline = offline;
            }
            self.pool();
        }
        self.base.fit(train)
    }

    /// The base model's state and the offline errors (the online ones are learned
    /// again as the model forecasts; the pooled ones are the jobs' offline errors
    /// together).
    fn save(&self) -> serde_json::Value {
        serde_json::json!({
            "base": self.base.save(),
            "offline": self.jobs.iter().map(|j| &j.offline).collect::<Vec<_>>(),
        })
    }

    fn load(&mut self, state: &serde_json::Value) -> Result<(), ForecastError> {
        #[derive(serde::Deserialize)]
        struct S {
            base: serde_json::Value,
            offline: Vec<Vec<Vec<f64>>>,
        }
        let s: S = crate::state_of(&self.name, state)?;
        if s.offline.iter().flatten().flatten().any(|e| !e.is_finite()) {
            return Err(ForecastError::Invalid(format!(
                "{}: saved errors that are not finite numbers",
                self.name
            )));
        }
        self.base.load(&s.base)?;
        self.jobs = s
            .offline
            .into_iter()
            .map(|offline| JobState {
                offline,
                ..JobState::default()
            })
            .collect();
        self.pool();
        Ok(())
    }

    fn update(&mut self, job: usize, history: &[f64]) {
        let (window, max_h) = (self.online_window, self.max_horizon.max(1));
        let s = self.job(job);
        let n = history.len();
        if n < s.seen {
            // Another series under the same job number: its pending forecasts are moot.
            s.pending.clear();
        }
        s.seen = n;
        if s.online.len() < max_h {
            s.online.resize_with(max_h, VecDeque::new);
        }
        for p in &mut s.pending {
            while p.next < p.median.len() && p.origin + p.next < n {
                let h = p.next;
                let q = &mut s.online[h.min(max_h - 1)];
                q.push_back((history[p.origin + h] - p.median[h]) / p.scale);
                if q.len() > window {
                    q.pop_front();
                }
                p.next += 1;
            }
        }
        s.pending.retain(|p| p.next < p.median.len());
    }

    fn predict(
        &mut self,
        job: usize,
        history: &[f64],
        horizon: usize,
        qs: &[f64],
    ) -> Result<Vec<Vec<f64>>, ForecastError> {
        check_input(job, history, qs)?;
        self.update(job, history);
        let origin = history.len();
        let scale = volatility(history);
        // Asked again at the same origin (another quantile): the base's median is known.
        let same = |p: &Pending| p.origin == origin && p.next == 0 && p.scale == scale;
        let known = self.jobs[job]
            .pending
            .back()
            .filter(|p| same(p) && p.median.len() >= horizon)
            .map(|p| p.median[..horizon].to_vec());
        let median = match known {
            Some(m) => m,
            None => self.base.predict(job, history, horizon, &[0.5])?.remove(0),
        };
        let mut out = vec![vec![0.0; horizon]; qs.len()];
        let base_quantiles = if (0..horizon).any(|h| self.errors(job, h).is_empty()) {
            Some(self.base.predict(job, history, horizon, qs)?)
        } else {
            None
        };
        for h in 0..horizon {
            let errs = self.errors(job, h);
            for (k, q) in qs.iter().enumerate() {
                out[k][h] = match (&base_quantiles, errs.is_empty()) {
                    (Some(b), true) => b[k][h],
                    _ => (median[h] + scale * quantile_sorted(&errs, *q)).max(0.0),
                };
            }
        }
        let pending = &mut self.job(job).pending;
        // One record per origin, whatever the quantiles and horizons asked: the longest.
        let mut median = median;
        if let Some(prev) = pending.back().filter(|p| same(p)) {
            if prev.median.len() > median.len() {
                median = prev.median.clone();
            }
            pending.pop_back();
        }
        pending.push_back(Pending {
            origin,
            median,
            scale,
            next: 0,
        });
        Ok(out)
    }
}
