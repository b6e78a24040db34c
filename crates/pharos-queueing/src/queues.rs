/// Erlang-B blocking probability of `servers` servers offered `load` Erlangs
/// (arrival rate / service rate), by the recursion B(k) = a B(k-1) / (k + a B(k-1)).
pub fn erlang_b(servers: u32, load: f64) -> f64 {
    let mut b = 1.0;
    for k in 1..=servers {
        b = load * b / (k as f64 + load * b);
    }
    b
}

/// Erlang-C probability that an arriving request waits, for `servers` servers offered
/// `load` Erlangs. Returns 1 when the queue is unstable (`load >= servers`).
pub fn erlang_c(servers: u32, load: f64) -> f64 {
    let c = servers as f64;
    if load >= c {
        return 1.0;
    }
    let b = erlang_b(servers, load);
    c * b / (c - load * (1.0 - b))
}

/// Mean waiting time in queue of an M/M/c queue: C(c, a) / (c mu - lambda).
/// Infinite when the queue is unstable.
pub fn mmc_mean_wait_s(servers: u32, arrival_rps: f64, service_time_s: f64) -> f64 {
    let mu = 1.0 / service_time_s;
    let load = arrival_rps * service_time_s;
    if load >= servers as f64 {
        return f64::INFINITY;
    }
    erlang_c(servers, load) / (servers as f64 * mu - arrival_rps)
}

/// Mean waiting time in queue of an M/D/1 queue (Pollaczek-Khinchine):
/// rho D / (2 (1 - rho)). Infinite when rho >= 1.
pub fn md1_mean_wait_s(arrival_rps: f64, service_time_s: f64) -> f64 {
    let rho = arrival_rps * service_time_s;
    if rho >= 1.0 {
        return f64::INFINITY;
    }
    rho * service_time_s / (2.0 * (1.0 - rho))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erlang_c_matches_hand_computed_values() {
        // c = 1: C = rho.
        assert!((erlang_c(1, 0.7) - 0.7).abs() < 1e-12);
        // c = 2, a = 1: B = (1/2) / (1 + 1 + 1/2) = 0.2; C = 2*0.2 / (2 - 1*0.8) = 1/3.
        assert!((erlang_c(2, 1.0) - 1.0 / 3.0).abs() < 1e-12);
        // Unstable.
        assert_eq!(erlang_c(3, 3.0), 1.0);
    }

    #[test]
    fn erlang_c_is_finite_for_hundreds_of_servers() {
        let c = erlang_c(800, 780.0);
        assert!(c.is_finite() && c > 0.0 && c < 1.0, "{c}");
        // Light load on many servers: waiting is very unlikely.
        assert!(erlang_c(500, 100.0) < 1e-30);
    }

    #[test]
    fn mm1_mean_wait_is_rho_over_mu_minus_lambda() {
        // lambda = 0.5, mu = 1: W = 0.5 / 0.5 = 1.
        assert!((mmc_mean_wait_s(1, 0.5, 1.0) - 1.0).abs() < 1e-12);
        assert!(mmc_mean_wait_s(2, 2.0, 1.0).is_infinite());
    }

    #[test]
    fn md1_is_half_mm1() {
        let (l, d) = (3.0, 0.2);
        assert!((md1_mean_wait_s(l, d) - mmc_mean_wait_s(1, l, d) / 2.0).abs() < 1e-12);
    }
}
