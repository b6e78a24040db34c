//! Predicted tail latency of a job from its arrival rate, replicas and processing time.

use crate::erlang_c;

/// How a policy predicts a job's latency percentile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyModel {
    /// The pessimistic bound lambda p / x (MArk-style sizing: x >= lambda p / SLO).
    UpperBound,
    /// M/D/c approximated as half the M/M/c waiting time (Faro): the P-percentile wait
    /// of M/M/c, ln(C / (1 - P)) / (x mu - lambda), halved, plus the processing time;
    /// queues with utilisation over 0.95 are relaxed (computed at 0.95 and scaled up in
    /// proportion to the load) so the latency grows smoothly instead of jumping to
    /// infinity.
    MdcHalfMmc,
}

/// Utilisation above which [`LatencyModel::MdcHalfMmc`] relaxes the queue.
pub const RELAXED_RHO: f64 = 0.95;

impl LatencyModel {
    /// The predicted `percentile` (in (0, 100)) latency in seconds of a job receiving
    /// `arrival_rps` on `replicas` (continuous: between two whole numbers the latency is
    /// interpolated linearly) that take `processing_s` per request. Infinite for no
    /// replicas; the processing time for no load.
    pub fn latency_s(
        self,
        arrival_rps: f64,
        replicas: f64,
        processing_s: f64,
        percentile: f64,
    ) -> f64 {
        if replicas <= 0.0 {
            return f64::INFINITY;
        }
        if arrival_rps <= 0.0 {
            return processing_s;
        }
        match self {
            LatencyModel::UpperBound => (arrival_rps * processing_s / replicas).max(processing_s),
            LatencyModel::MdcHalfMmc => {
                let lo = replicas.floor();
                let frac = replicas - lo;
                let at = |x: f64| {
                    if x < 1.0 {
                        f64::INFINITY
                    } else {
                        mdc_latency_s(arrival_rps, x as u32, processing_s, percentile)
                    }
                };
                if frac == 0.0 {
                    at(lo)
                } else if lo < 1.0 {
                    // Below one replica: scale the one-replica latency up.
                    at(1.0) / replicas
                } else {
                    let (a, b) = (at(lo), at(lo + 1.0));
                    a + frac * (b - a)
                }
            }
        }
    }
}

/// The M/D/c-as-half-M/M/c latency on a whole number of replicas, with the relaxed
/// unstable-queue rule.
fn mdc_latency_s(arrival_rps: f64, replicas: u32, processing_s: f64, percentile: f64) -> f64 {
    let x = replicas as f64;
    let rho = arrival_rps * processing_s / x;
    if rho > RELAXED_RHO {
        let relaxed = RELAXED_RHO * x / processing_s;
        return stable_mdc_latency_s(relaxed, replicas, processing_s, percentile) * arrival_rps
            / relaxed;
    }
    stable_mdc_latency_s(arrival_rps, replicas, processing_s, percentile)
}

fn stable_mdc_latency_s(
    arrival_rps: f64,
    replicas: u32,
    processing_s: f64,
    percentile: f64,
) -> f64 {
    let x = replicas as f64;
    let mu = 1.0 / processing_s;
    let c = erlang_c(replicas, arrival_rps * processing_s);
    let tail = 1.0 - percentile / 100.0;
    let wait = ((c / tail).ln() / (x * mu - arrival_rps)).max(0.0);
    wait / 2.0 + processing_s
}

/// The fewest whole replicas (up to `max`) whose predicted latency meets `slo_s`;
/// `None` when even `max` does not.
pub fn replicas_for_slo(
    model: LatencyModel,
    arrival_rps: f64,
    processing_s: f64,
    percentile: f64,
    slo_s: f64,
    max: u32,
) -> Option<u32> {
    (1..=max).find(|x| model.latency_s(arrival_rps, *x as f64, processing_s, percentile) <= slo_s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specs_check_value() {
        // p = 150 ms, lambda = 40/s, P = 99.99%: 7 replicas ~804 ms, 8 ~457 ms.
        let m = LatencyModel::MdcHalfMmc;
        let l7 = m.latency_s(40.0, 7.0, 0.15, 99.99);
        let l8 = m.latency_s(40.0, 8.0, 0.15, 99.99);
        assert!((l7 - 0.804).abs() < 0.01, "{l7}");
        assert!((l8 - 0.457).abs() < 0.01, "{l8}");
        // An SLO of 600 ms: 8 replicas with M/D/c, 10 with the upper bound.
        assert_eq!(replicas_for_slo(m, 40.0, 0.15, 99.99, 0.6, 100), Some(8));
        assert_eq!(
            replicas_for_slo(LatencyModel::UpperBound, 40.0, 0.15, 99.99, 0.6, 100),
            Some(10)
        );
    }

    #[test]
    fn hand_computed_single_replica() {
        // x = 1: C = rho = 0.5 (lambda 5, p 0.1); W99 = ln(0.5 / 0.01) / (10 - 5).
        let l = LatencyModel::MdcHalfMmc.latency_s(5.0, 1.0, 0.1, 99.0);
        let want = (50.0f64).ln() / 5.0 / 2.0 + 0.1;
        assert!((l - want).abs() < 1e-12, "{l} vs {want}");
        // Light load: the percentile wait is negative, so just the processing time.
        assert_eq!(LatencyModel::MdcHalfMmc.latency_s(0.1, 4.0, 0.1, 99.0), 0.1);
    }

    #[test]
    fn relaxed_queue_grows_smoothly_and_stays_finite() {
        let m = LatencyModel::MdcHalfMmc;
        // At rho = 0.95 exactly and just above: continuous, then proportional to load.
        let at = m.latency_s(9.5, 1.0, 0.1, 99.0);
        let above = m.latency_s(9.5 * 1.0001, 1.0, 0.1, 99.0);
        assert!((above - at).abs() / at < 1e-3);
        let double = m.latency_s(19.0, 1.0, 0.1, 99.0);
        assert!((double / at - 2.0).abs() < 1e-9);
        // Hundreds of replicas, near saturation.
        let big = m.latency_s(4700.0, 500.0, 0.1, 99.0);
        assert!(big.is_finite() && big > 0.1, "{big}");
        assert!(m.latency_s(10.0, 0.0, 0.1, 99.0).is_infinite());
    }

    #[test]
    fn latency_falls_with_replicas_and_interpolates() {
        let m = LatencyModel::MdcHalfMmc;
        let mut last = f64::INFINITY;
        for x in 1..30 {
            let l = m.latency_s(40.0, x as f64, 0.15, 99.0);
            assert!(l <= last, "not monotone at {x}");
            last = l;
        }
        let (a, b) = (
            m.latency_s(40.0, 7.0, 0.15, 99.0),
            m.latency_s(40.0, 8.0, 0.15, 99.0),
        );
        let mid = m.latency_s(40.0, 7.5, 0.15, 99.0);
        assert!((mid - (a + b) / 2.0).abs() < 1e-12);
    }
}
