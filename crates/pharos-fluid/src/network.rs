//! Fluid networks: work (requests, jobs) sits in buffers (functions), resources drain
//! them, and drained work moves to other buffers or leaves. Their optimal control over
//! a horizon is an SCLP (the mapping below).

use serde::{Deserialize, Serialize};

use crate::{FluidError, Sclp};

/// K buffers, I resources. Allocating u_k units of resource to buffer k drains it at
/// rate `mu[k] u_k`; a share `routing[k][k2]` of what leaves k goes to k2, the rest
/// leaves the network. `resource[i][k]` is how much of resource i one unit of u_k uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FluidNetwork {
    pub mu: Vec<f64>,
    pub routing: Vec<Vec<f64>>,
    /// Exogenous arrival rates.
    pub lambda: Vec<f64>,
    /// Initial contents.
    pub x0: Vec<f64>,
    /// Holding cost per unit of content per unit of time.
    pub holding_cost: Vec<f64>,
    pub resource: Vec<Vec<f64>>,
    pub capacity: Vec<f64>,
    /// Cost per unit of u per unit of time (0 when absent).
    #[serde(default)]
    pub resource_cost: Vec<f64>,
    pub horizon: f64,
}

impl FluidNetwork {
    /// The SCLP: G = (I - P') diag(mu), alpha = x0, a = lambda, F empty, H = resource,
    /// b = capacity, c = G' h, gamma = -resource cost. Maximising it minimises the
    /// holding plus resource cost; see [`FluidNetwork::cost`].
    pub fn to_sclp(&self) -> Result<Sclp, FluidError> {
        let k = self.mu.len();
        let bad = |m: String| Err(FluidError::Invalid(m));
        if self.routing.len() != k || self.routing.iter().any(|r| r.len() != k) {
            return bad(format!("routing must be {k} x {k}"));
        }
        for (name, v) in [
            ("lambda", &self.lambda),
            ("x0", &self.x0),
            ("holding_cost", &self.holding_cost),
        ] {
            if v.len() != k {
                return bad(format!("{name} has {} entries, expected {k}", v.len()));
            }
        }
        for (r, row) in self.routing.iter().enumerate() {
            let out: f64 = row.iter().sum();
            if row.iter().any(|p| *p < 0.0) || out > 1.0 + 1e-9 {
                return bad(format!(
                    "routing row {r} must be shares >= 0 summing to at most 1 (sums to {out})"
                ));
            }
        }
        let g: Vec<Vec<f64>> = (0..k)
            .map(|r| {
                (0..k)
                    .map(|q| (f64::from(u8::from(r == q)) - self.routing[q][r]) * self.mu[q])
                    .collect()
            })
            .collect();
        let c = (0..k)
            .map(|q| (0..k).map(|r| g[r][q] * self.holding_cost[r]).sum())
            .collect();
        let gamma = if self.resource_cost.is_empty() {
            vec![0.0; k]
        } else {
            self.resource_cost.iter().map(|r| -r).collect()
        };
        let p = Sclp {
            g,
            h: self.resource.clone(),
            f: Vec::new(),
            a: self.lambda.clone(),
            b: self.capacity.clone(),
            c,
            d: Vec::new(),
            alpha: self.x0.clone(),
            gamma,
            t: self.horizon,
        };
        p.validate()?;
        Ok(p)
    }

    /// The holding plus resource cost of a plan whose SCLP objective is `objective`:
    /// h' x0 T + h' lambda T^2 / 2 - objective.
    pub fn cost(&self, objective: f64) -> f64 {
        let t = self.horizon;
        let dot = |v: &[f64]| {
            v.iter()
                .zip(&self.holding_cost)
                .map(|(a, h)| a * h)
                .sum::<f64>()
        };
        dot(&self.x0) * t + dot(&self.lambda) * t * t / 2.0 - objective
    }
}

/// Three functions on one 6-CPU server: f1 -> f2 (0.6), f1 -> f3 (0.3), f2 -> f3 (0.5);
/// mu = (20, 10, 15) requests/s per CPU, lambda = (30, 1, 1), x(0) = (50, 20, 10),
/// h = (1, 1.2, 1.5), T = 20. Its optimal holding cost is 303.6665.
pub fn worked_example() -> FluidNetwork {
    FluidNetwork {
        mu: vec![20.0, 10.0, 15.0],
        routing: vec![
            vec![0.0, 0.6, 0.3],
            vec![0.0, 0.0, 0.5],
            vec![0.0, 0.0, 0.0],
        ],
        lambda: vec![30.0, 1.0, 1.0],
        x0: vec![50.0, 20.0, 10.0],
        holding_cost: vec![1.0, 1.2, 1.5],
        resource: vec![vec![1.0, 1.0, 1.0]],
        capacity: vec![6.0],
        resource_cost: Vec::new(),
        horizon: 20.0,
    }
}
