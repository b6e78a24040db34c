/// The relaxed ("sloppified") SLO utility min((slo / latency)^alpha, 1).
/// Zero for an infinite latency (e.g. a dropped request); one for a latency <= 0.
pub fn relaxed_utility(latency_s: f64, slo_s: f64, alpha: f64) -> f64 {
    if latency_s <= slo_s {
        1.0
    } else if latency_s.is_infinite() {
        0.0
    } else {
        (slo_s / latency_s).powf(alpha)
    }
}

/// The exact SLO as a utility: 1 when the latency meets the SLO, else 0.
pub fn step_utility(latency_s: f64, slo_s: f64) -> f64 {
    if latency_s <= slo_s { 1.0 } else { 0.0 }
}

/// The evaluation penalty of a drop rate (AWS-style availability SLO):
/// <= 1% -> 0, <= 5% -> 0.25, <= 10% -> 0.5, else 1.
pub fn eval_drop_penalty(drop_rate: f64) -> f64 {
    if drop_rate <= 0.01 {
        0.0
    } else if drop_rate <= 0.05 {
        0.25
    } else if drop_rate <= 0.10 {
        0.5
    } else {
        1.0
    }
}

/// The optimiser's stricter, piecewise-linear drop penalty through
/// (0.1%, 0), (3%, 0.25), (8%, 0.5), (100%, 1).
pub fn solver_drop_penalty(drop_rate: f64) -> f64 {
    const POINTS: [(f64, f64); 4] = [(0.001, 0.0), (0.03, 0.25), (0.08, 0.5), (1.0, 1.0)];
    if drop_rate <= POINTS[0].0 {
        return 0.0;
    }
    for w in POINTS.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if drop_rate <= x1 {
            return y0 + (y1 - y0) * (drop_rate - x0) / (x1 - x0);
        }
    }
    1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relaxed_utility_values() {
        assert_eq!(relaxed_utility(0.5, 0.72, 1.0), 1.0);
        assert!((relaxed_utility(1.44, 0.72, 1.0) - 0.5).abs() < 1e-12);
        assert!((relaxed_utility(2.88, 0.72, 2.0) - 0.0625).abs() < 1e-12);
        assert_eq!(relaxed_utility(f64::INFINITY, 0.72, 1.0), 0.0);
        assert_eq!(step_utility(0.73, 0.72), 0.0);
        assert_eq!(step_utility(0.72, 0.72), 1.0);
    }

    #[test]
    fn penalties() {
        assert_eq!(eval_drop_penalty(0.01), 0.0);
        assert_eq!(eval_drop_penalty(0.02), 0.25);
        assert_eq!(eval_drop_penalty(0.10), 0.5);
        assert_eq!(eval_drop_penalty(0.11), 1.0);
        assert_eq!(solver_drop_penalty(0.0005), 0.0);
        assert!((solver_drop_penalty(0.03) - 0.25).abs() < 1e-12);
        assert!((solver_drop_penalty(0.055) - 0.375).abs() < 1e-12);
        assert!((solver_drop_penalty(1.0) - 1.0).abs() < 1e-12);
    }
}
