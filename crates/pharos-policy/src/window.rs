use std::collections::VecDeque;

use pharos_core::{ClusterView, JobCounters};

/// Remembers snapshots of every job's cumulative counters so a policy can take means
/// over a sliding window by differencing (the counters start at zero at time 0).
#[derive(Debug, Clone, Default)]
pub struct CounterWindow {
    snaps: VecDeque<(f64, Vec<JobCounters>)>,
}

/// The change of one job's counters over a window of `span_s` seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowDelta {
    pub span_s: f64,
    pub arrivals: u64,
    pub completed: u64,
    pub dropped: u64,
    pub latency_sum_s: f64,
    pub ongoing_req_s: f64,
    pub busy_replica_s: f64,
    pub ready_replica_s: f64,
}

impl WindowDelta {
    /// Mean latency of the requests completed in the window; `None` when none completed.
    pub fn mean_latency_s(&self) -> Option<f64> {
        (self.completed > 0).then(|| self.latency_sum_s / self.completed as f64)
    }

    /// Time-weighted mean number of requests in the system (queued + in flight).
    pub fn mean_ongoing(&self) -> f64 {
        if self.span_s > 0.0 {
            self.ongoing_req_s / self.span_s
        } else {
            0.0
        }
    }

    /// Busy replica-seconds per ready replica-second (a CPU utilisation in [0, 1]);
    /// `None` without ready replicas in the window.
    pub fn utilisation(&self) -> Option<f64> {
        (self.ready_replica_s > 0.0).then(|| self.busy_replica_s / self.ready_replica_s)
    }
}

impl CounterWindow {
    /// Record the view's counters, forgetting snapshots older than `keep_s` before the
    /// newest one that is still needed for a window of `keep_s`.
    pub fn record(&mut self, view: &ClusterView<'_>, keep_s: f64) {
        let now = view.now_s;
        self.snaps
            .push_back((now, view.jobs.iter().map(|j| j.counters).collect()));
        // Keep the newest snapshot at or before now - keep_s, drop the ones before it.
        while self.snaps.len() >= 2 && self.snaps[1].0 <= now - keep_s {
            self.snaps.pop_front();
        }
    }

    /// The change of job `job`'s counters over the last `window_s` seconds (or since the
    /// start when the run is younger), measured against the view of the same instant the
    /// last [`CounterWindow::record`] saw.
    pub fn delta(&self, job: usize, window_s: f64) -> WindowDelta {
        let Some((now, latest)) = self.snaps.back() else {
            return WindowDelta::zero();
        };
        let start = now - window_s;
        let (t0, base) = self
            .snaps
            .iter()
            .rev()
            .find(|(t, _)| *t <= start)
            .map(|(t, c)| (*t, c[job]))
            .unwrap_or((0.0, JobCounters::default()));
        let cur = latest[job];
        WindowDelta {
            span_s: now - t0,
            arrivals: cur.arrivals - base.arrivals,
            completed: cur.completed - base.completed,
            dropped: cur.dropped - base.dropped,
            latency_sum_s: cur.latency_sum_s - base.latency_sum_s,
            ongoing_req_s: cur.ongoing_req_s - base.ongoing_req_s,
            busy_replica_s: cur.busy_replica_s - base.busy_replica_s,
            ready_replica_s: cur.ready_replica_s - base.ready_replica_s,
        }
    }
}

impl WindowDelta {
    fn zero() -> Self {
        WindowDelta {
            span_s: 0.0,
            arrivals: 0,
            completed: 0,
            dropped: 0,
            latency_sum_s: 0.0,
            ongoing_req_s: 0.0,
            busy_replica_s: 0.0,
            ready_replica_s: 0.0,
        }
    }
}
