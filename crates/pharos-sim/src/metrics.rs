//! The metrics of the Faro evaluation, computed per job and per one-minute bin (by
//! arrival time) while the simulation runs, so memory stays bounded by the requests
//! still in flight.
//!
//! - SLO violation rate: per job and bin, the fraction of requests over the SLO, drops
//!   counting as violations; the mean over the jobs that had requests in the bin, then
//!   the mean over bins that had requests.
//! - Utility: per job and minute, U(p99 of the minute) with the relaxed utility
//!   (exponent alpha), drops counting as infinite latency; a minute without requests has
//!   utility 1. Cluster utility is the sum over jobs; lost utility = N - its time mean.
//! - Effective utility: (1 - P(drop rate)) x U(p99 of the served requests), P the
//!   evaluation drop penalty.

use std::collections::VecDeque;

use pharos_queueing::{eval_drop_penalty, relaxed_utility};
use serde::{Deserialize, Serialize};

/// One job's numbers for one minute of arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MinuteRecord {
    pub minute: u32,
    pub arrivals: u32,
    pub dropped: u32,
    pub completed: u32,
    /// Requests over the SLO, drops included.
    pub violations: u32,
    /// p99 latency with drops as infinite latency (None: no requests, or infinite).
    pub p99_s: Option<f64>,
    /// p99 latency of the served requests (None: none served).
    pub p99_served_s: Option<f64>,
    pub utility: f64,
    pub effective_utility: f64,
    /// Time-mean of the job's ready replicas over the minute.
    pub mean_ready_replicas: f64,
    /// The job's target replicas at the end of the minute.
    pub target_replicas: u32,
}

/// A histogram of latencies in log-spaced buckets (each 0.5% wider than the last, from
/// 0.1 ms to about 4 hours; faster or slower ones go to the end buckets), for a run's
/// quantiles without keeping every request: a quantile read from it is within 0.5% of
/// the exact one.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
}

const HIST_MIN_S: f64 = 1e-4;
const HIST_RATIO: f64 = 1.005;
const HIST_BUCKETS: usize = 3600;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: vec![0; HIST_BUCKETS],
            total: 0,
        }
    }
}

impl LatencyHistogram {
    #[inline]
    pub fn record(&mut self, latency_s: f64) {
        let b = if latency_s <= HIST_MIN_S || latency_s.is_nan() {
            0
        } else {
            ((latency_s / HIST_MIN_S).ln() / HIST_RATIO.ln()).ceil() as usize
        };
        self.counts[b.min(HIST_BUCKETS - 1)] += 1;
        self.total += 1;
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The nearest-rank q-quantile, as the upper edge of its bucket; 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((self.total as f64 * q).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (b, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return HIST_MIN_S * HIST_RATIO.powi(b as i32);
            }
        }
        HIST_MIN_S * HIST_RATIO.powi(HIST_BUCKETS as i32 - 1)
    }
}

/// Requests of one job that arrived in one minute.
#[derive(Debug, Default)]
pub(crate) struct Bin {
    pub minute: u32,
    pub arrivals: u32,
    pub dropped: u32,
    pub violations: u32,
    /// Requests of this bin not yet finished (served or dropped).
    pub outstanding: u32,
    pub latencies_s: Vec<f64>,
}

/// Streaming per-minute metrics of one job (the simulator's, and `pharos load`'s for a
/// live run). Requests are reported by the minute they arrived in, minutes in order.
#[derive(Debug)]
pub struct JobMetrics {
    slo_s: f64,
    percentile: f64,
    alpha: f64,
    bins: VecDeque<Bin>,
    spare: Vec<Vec<f64>>,
    pub records: Vec<MinuteRecord>,
    /// Per finished minute: (mean ready replicas, target at the minute's end).
    pub replicas: Vec<(f64, u32)>,
    /// Every served request's latency.
    pub latencies: LatencyHistogram,
}

impl JobMetrics {
    pub fn new(slo_s: f64, percentile: f64, alpha: f64, minutes: usize) -> Self {
        Self {
            slo_s,
            percentile,
            alpha,
            bins: VecDeque::new(),
            spare: Vec::new(),
            records: Vec::with_capacity(minutes),
            replicas: Vec::with_capacity(minutes + 1),
            latencies: LatencyHistogram::default(),
        }
    }

    #[inline]
    fn bin(&mut self, minute: u32) -> &mut Bin {
        let front = self.bins.front().map_or(minute, |b| b.minute);
        debug_assert!(minute >= front, "a request of an already finished minute");
        let idx = (minute - front) as usize;
        while self.bins.len() <= idx {
            let m = front + self.bins.len() as u32;
            let latencies_s = self.spare.pop().unwrap_or_default();
            self.bins.push_back(Bin {
                minute: m,
                latencies_s,
                ..Bin::default()
            });
        }
        &mut self.bins[idx]
    }

    #[inline]
    pub fn arrived(&mut self, minute: u32) {
        let b = self.bin(minute);
        b.arrivals += 1;
        b.outstanding += 1;
    }

    #[inline]
    pub fn dropped(&mut self, minute: u32) {
        let b = self.bin(minute);
        b.dropped += 1;
        b.violations += 1;
        b.outstanding -= 1;
    }

    #[inline]
    pub fn completed(&mut self, minute: u32, latency_s: f64) {
        let slo = self.slo_s;
        self.latencies.record(latency_s);
        let b = self.bin(minute);
        b.latencies_s.push(latency_s);
        if latency_s > slo {
            b.violations += 1;
        }
        b.outstanding -= 1;
    }

    /// Close every bin of a minute before `before_minute` whose requests all finished.
    /// With `force`, close all bins (the end of the run).
    pub fn flush(&mut self, before_minute: u32, force: bool) {
        while let Some(front) = self.bins.front() {
            if !force && (front.minute >= before_minute || front.outstanding > 0) {
                break;
            }
            let mut bin = self.bins.pop_front().expect("front exists");
            // Fill minutes with no arrivals that lie between records.
            let next = self.records.last().map_or(0, |r| r.minute + 1);
            for m in next..bin.minute {
                self.records.push(self.empty_record(m));
            }
            let record = self.close(&mut bin);
            self.records.push(record);
            bin.latencies_s.clear();
            self.spare.push(std::mem::take(&mut bin.latencies_s));
        }
    }

    /// Pad the records up to `minutes` (minutes at the end without arrivals) and attach
    /// the replica samples.
    pub fn finish(&mut self, minutes: usize) {
        self.flush(u32::MAX, true);
        let next = self.records.last().map_or(0, |r| r.minute + 1);
        for m in next..minutes as u32 {
            self.records.push(self.empty_record(m));
        }
        for r in &mut self.records {
            if let Some((mean, target)) = self.replicas.get(r.minute as usize) {
                r.mean_ready_replicas = *mean;
                r.target_replicas = *target;
            }
        }
    }

    fn empty_record(&self, minute: u32) -> MinuteRecord {
        MinuteRecord {
            minute,
            arrivals: 0,
            dropped: 0,
            completed: 0,
            violations: 0,
            p99_s: None,
            p99_served_s: None,
            utility: 1.0,
            effective_utility: 1.0,
            mean_ready_replicas: 0.0,
            target_replicas: 0,
        }
    }

    fn close(&self, bin: &mut Bin) -> MinuteRecord {
        if bin.arrivals == 0 {
            return self.empty_record(bin.minute);
        }
        let q = self.percentile / 100.0;
        let served = bin.latencies_s.len();
        let p_served = quantile(&mut bin.latencies_s, 0, q);
        let p_all = quantile(&mut bin.latencies_s, bin.dropped as usize, q);
        let utility = relaxed_utility(p_all, self.slo_s, self.alpha);
        let drop_rate = bin.dropped as f64 / bin.arrivals.max(1) as f64;
        let u_served = if served > 0 {
            relaxed_utility(p_served, self.slo_s, self.alpha)
        } else {
            0.0
        };
        let finite = |v: f64| v.is_finite().then_some(v);
        MinuteRecord {
            minute: bin.minute,
            arrivals: bin.arrivals,
            dropped: bin.dropped,
            completed: served as u32,
            violations: bin.violations,
            p99_s: finite(p_all),
            p99_served_s: if served > 0 { finite(p_served) } else { None },
            utility,
            effective_utility: (1.0 - eval_drop_penalty(drop_rate)) * u_served,
            mean_ready_replicas: 0.0,
            target_replicas: 0,
        }
    }
}

/// The q-quantile (linear interpolation between order statistics, as numpy's default)
/// of `values` plus `infinities` values of +infinity. Reorders `values`.
/// NaN when there are no values at all.
pub fn quantile(values: &mut [f64], infinities: usize, q: f64) -> f64 {
    let n = values.len() + infinities;
    if n == 0 {
        return f64::NAN;
    }
    let h = (n - 1) as f64 * q;
    let lo = h.floor() as usize;
    let frac = h - lo as f64;
    let at = |values: &mut [f64], k: usize| -> f64 {
        if k >= values.len() {
            f64::INFINITY
        } else {
            *values.select_nth_unstable_by(k, f64::total_cmp).1
        }
    };
    let a = at(values, lo);
    if frac == 0.0 || lo + 1 >= n {
        return a;
    }
    // After the selection above, the next order statistic is the minimum to the right.
    let b = if lo + 1 >= values.len() {
        f64::INFINITY
    } else {
        values[lo + 1..]
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
    };
    if b.is_infinite() {
        f64::INFINITY
    } else {
        a + frac * (b - a)
    }
}

/// The nearest-rank q-quantile of values sorted ascending (the smallest value with at
/// least a share q of the values at or below it); 0 when there are none.
pub fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Per-job totals of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub name: String,
    pub requests: u64,
    pub dropped: u64,
    pub completed: u64,
    pub slo_violation_rate: f64,
    pub mean_utility: f64,
    pub mean_effective_utility: f64,
    pub mean_latency_s: f64,
    pub mean_ready_replicas: f64,
}

/// The cluster-wide numbers of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub jobs: usize,
    pub minutes: usize,
    pub requests: u64,
    pub dropped: u64,
    pub completed: u64,
    pub slo_violation_rate: f64,
    /// N - time-mean of the cluster utility.
    pub lost_utility: f64,
    /// N - time-mean of the cluster effective utility.
    pub lost_effective_utility: f64,
    pub mean_latency_s: f64,
    /// The 99th percentile of the served requests' latencies (within 0.5%; drops are
    /// counted in `dropped`, not here).
    #[serde(default)]
    pub p99_latency_s: f64,
    /// Time-mean of the ready replicas of all jobs.
    pub mean_ready_replicas: f64,
    /// Events the simulator processed.
    pub events: u64,
    /// Simulated seconds until the last request finished.
    pub sim_time_s: f64,
}

/// Combine the per-minute records of all jobs into the run's summary numbers.
pub(crate) fn summarize(records: &[Vec<MinuteRecord>]) -> (f64, f64, f64) {
    summarize_from(records, 0)
}

/// The violation rate, lost utility and lost effective utility of the minutes from
/// `from` on (e.g. to leave out every policy's start), computed as the run's summary is.
pub fn summarize_from(records: &[Vec<MinuteRecord>], from: usize) -> (f64, f64, f64) {
    let n_jobs = records.len();
    let minutes = records.first().map_or(0, Vec::len);
    let (mut viol_sum, mut viol_bins) = (0.0, 0usize);
    let (mut util_sum, mut eff_sum) = (0.0, 0.0);
    for m in from.min(minutes)..minutes {
        let (mut v, mut k) = (0.0, 0usize);
        for job in records {
            let r = &job[m];
            util_sum += r.utility;
            eff_sum += r.effective_utility;
            if r.arrivals > 0 {
                v += r.violations as f64 / r.arrivals as f64;
                k += 1;
            }
        }
        if k > 0 {
            viol_sum += v / k as f64;
            viol_bins += 1;
        }
    }
    let m = minutes.saturating_sub(from).max(1) as f64;
    let violation = if viol_bins > 0 {
        viol_sum / viol_bins as f64
    } else {
        0.0
    };
    (
        violation,
        n_jobs as f64 - util_sum / m,
        n_jobs as f64 - eff_sum / m,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_like_numpy() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0];
        // numpy.quantile([1,2,3,4], 0.5) = 2.5; 0.99 -> 3.97
        assert!((quantile(&mut v, 0, 0.5) - 2.5).abs() < 1e-12);
        assert!((quantile(&mut v, 0, 0.99) - 3.97).abs() < 1e-12);
        assert_eq!(quantile(&mut v, 0, 0.0), 1.0);
        // With one infinity among five values p99 lies between 4 and inf.
        assert!(quantile(&mut v, 1, 0.99).is_infinite());
        // p50 of [1,2,3,4,inf] is 3.
        assert_eq!(quantile(&mut v, 1, 0.5), 3.0);
        assert!(quantile(&mut [], 0, 0.5).is_nan());
    }

    #[test]
    fn the_histograms_quantile_is_within_half_a_percent_of_the_exact_one() {
        let mut h = LatencyHistogram::default();
        let mut exact = Vec::new();
        // A spread from 1 ms to 10 s, uneven.
        for i in 1..=5000u32 {
            let v = 0.001 * (1.0 + (i as f64).powf(1.7) / 1000.0);
            h.record(v);
            exact.push(v);
        }
        exact.sort_by(f64::total_cmp);
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            let (a, b) = (h.quantile(q), nearest_rank(&exact, q));
            assert!(a >= b && a <= b * 1.005, "q {q}: {a} against {b}");
        }
        let mut other = LatencyHistogram::default();
        other.record(1e9);
        other.record(0.0);
        h.merge(&other);
        assert_eq!(h.count(), 5002);
        assert!(
            h.quantile(1.0) > 3600.0,
            "the slowest lands in the last bucket"
        );
        assert_eq!(LatencyHistogram::default().quantile(0.99), 0.0);
    }

    #[test]
    fn bins_close_in_order_and_count_drops_as_violations() {
        let mut m = JobMetrics::new(1.0, 99.0, 1.0, 3);
        m.arrived(0);
        m.arrived(0);
        m.arrived(2);
        m.completed(0, 0.5);
        m.dropped(0);
        m.flush(1, false);
        assert_eq!(m.records.len(), 1);
        assert_eq!(m.records[0].violations, 1);
        assert_eq!(m.records[0].utility, 0.0);
        // Served p99 is 0.5 <= SLO, but 50% dropped: penalty 1.
        assert_eq!(m.records[0].effective_utility, 0.0);
        m.completed(2, 2.0);
        m.finish(3);
        assert_eq!(m.records.len(), 3);
        assert_eq!(m.records[1].arrivals, 0);
        assert_eq!(m.records[1].utility, 1.0);
        assert!((m.records[2].utility - 0.5).abs() < 1e-12);
        let (viol, lost, _) = summarize(&[m.records.clone()]);
        // Bins with requests: minute 0 (1/2 violated) and minute 2 (1/1).
        assert!((viol - 0.75).abs() < 1e-12);
        assert!((lost - (1.0 - (0.0 + 1.0 + 0.5) / 3.0)).abs() < 1e-12);
        // From minute 1 on: minute 2 alone has requests (all violated); utility 1, 0.5.
        let (viol, lost, _) = summarize_from(&[m.records.clone()], 1);
        assert!((viol - 1.0).abs() < 1e-12);
        assert!((lost - (1.0 - 1.5 / 2.0)).abs() < 1e-12);
        // Past the end: nothing to count, no panic.
        assert_eq!(summarize_from(&[m.records.clone()], 9), (0.0, 1.0, 1.0));
    }
}
