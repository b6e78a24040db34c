//! What the dashboard plots: the cluster's capacity and what holds it, and each
//! service's replicas, load, latency, utility and drops, sampled every
//! `history_interval_s` and kept for `history_hours` (in memory: a restarted server
//! starts a new history).

use super::*;

/// One sample of the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterPoint {
    pub t_ms: i64,
    pub capacity_cpus: f64,
    pub inference_cpus: f64,
    pub training_cpus: f64,
}

/// One sample of a service, over the interval that ends at `t_ms`.
#[derive(Debug, Clone, Serialize)]
pub struct ServicePoint {
    pub t_ms: i64,
    pub target: u32,
    pub ready: u32,
    pub starting: u32,
    pub arrival_rps: f64,
    pub completed: u64,
    pub dropped: u64,
    /// Of the requests completed in the interval (None without any).
    pub p99_latency_s: Option<f64>,
    pub mean_latency_s: Option<f64>,
    /// Faro's relaxed SLO utility per request, min(1, SLO / latency), a dropped request
    /// counting 0 (None without requests).
    pub utility: Option<f64>,
    pub slo_latency_s: f64,
}

#[derive(Default)]
pub(super) struct History {
    cluster: VecDeque<ClusterPoint>,
    services: BTreeMap<String, VecDeque<ServicePoint>>,
    /// Counters at the previous sample: arrivals, dropped, completed.
    last: BTreeMap<String, (u64, u64, u64)>,
    last_ms: Option<i64>,
}

use std::collections::VecDeque;

/// The `p`-th percentile (nearest rank) of `v`, sorted in place.
pub(super) fn percentile(v: &mut [f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

impl History {
    /// Drops a removed service's samples.
    pub(super) fn forget(&mut self, name: &str) {
        self.services.remove(name);
        self.last.remove(name);
    }
}

impl Services {
    /// Takes one sample (called every `history_interval_s`).
    pub async fn sample_history(&self, state: &AppState) {
        let keep = ((state.config.history_hours * 3600.0) / state.config.history_interval_s)
            .ceil()
            .max(1.0) as usize;
        let training = self.training_cpus();
        let mut g = self.inner.lock().await;
        let now = now_ms();
        let inference = held(&g);
        let g = &mut *g;
        let h = &mut g.history;
        let span_s = h
            .last_ms
            .map(|t| ((now - t) as f64 / 1000.0).max(1e-3))
            .unwrap_or(state.config.history_interval_s);
        h.last_ms = Some(now);
        h.cluster.push_back(ClusterPoint {
            t_ms: now,
            capacity_cpus: state.services.capacity_cpus(state),
            inference_cpus: inference,
            training_cpus: training,
        });
        while h.cluster.len() > keep {
            h.cluster.pop_front();
        }
        for s in g.svcs.values().filter(|s| !s.deleting) {
            let name = &s.spec.name;
            let c = s.router.stats().counters;
            let (a0, d0, c0) =
                h.last
                    .get(name)
                    .copied()
                    .unwrap_or((c.arrivals, c.dropped, c.completed));
            h.last
                .insert(name.clone(), (c.arrivals, c.dropped, c.completed));
            let (arrivals, dropped, completed) = (
                c.arrivals.saturating_sub(a0),
                c.dropped.saturating_sub(d0),
                c.completed.saturating_sub(c0),
            );
            let mut lat = s.router.take_window();
            let slo = s.spec.slo.latency_s;
            let served_utility: f64 = lat
                .iter()
                .map(|l| pharos_queueing::relaxed_utility(*l, slo, 1.0))
                .sum();
            let n = lat.len() as u64 + dropped;
            let point = ServicePoint {
                t_ms: now,
                target: s.target,
                ready: s.count(Phase::Ready),
                starting: s.count(Phase::Starting),
                arrival_rps: arrivals as f64 / span_s,
                completed,
                dropped,
                mean_latency_s: (!lat.is_empty())
                    .then(|| lat.iter().sum::<f64>() / lat.len() as f64),
                p99_latency_s: percentile(&mut lat, s.spec.slo.percentile),
                utility: (n > 0).then(|| served_utility / n as f64),
                slo_latency_s: slo,
            };
            let q = h.services.entry(name.clone()).or_default();
            q.push_back(point);
            while q.len() > keep {
                q.pop_front();
            }
        }
        // Deleted services leave the history.
        let live: Vec<String> = g.svcs.keys().cloned().collect();
        h.services.retain(|n, _| live.contains(n));
        h.last.retain(|n, _| live.contains(n));
    }

    /// The history a tenant may see (all of it for the admin): the cluster's (totals
    /// only) and its services'.
    pub async fn history(
        &self,
        state: &AppState,
        tenant: Option<&str>,
        service: Option<&str>,
    ) -> Value {
        let g = self.inner.lock().await;
        let services: BTreeMap<&String, &VecDeque<ServicePoint>> = g
            .history
            .services
            .iter()
            .filter(|(n, _)| {
                service.is_none_or(|s| s == n.as_str())
                    && g.svcs
                        .get(*n)
                        .is_some_and(|s| tenant.is_none_or(|t| t == s.tenant))
            })
            .collect();
        json!({
            "interval_s": state.config.history_interval_s,
            "cluster": g.history.cluster,
            "services": services,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 99.0), Some(99.0));
        assert_eq!(percentile(&mut v, 50.0), Some(50.0));
        let mut one = vec![0.3];
        assert_eq!(percentile(&mut one, 99.0), Some(0.3));
        assert_eq!(percentile(&mut [], 99.0), None);
    }
}
