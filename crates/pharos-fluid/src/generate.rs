//! Random multiclass queueing networks (the instances of the SCLP literature), seeded.
//!
//! K buffers served by I servers (buffer k < I on server k, the rest on random servers).
//! u_k is the flow rate out of buffer k, which takes `m_k` of its server's time per
//! unit (H[s(k)][k] = m_k, b = 1). After service, fluid moves to other buffers along a
//! random sparse routing matrix (about `density` of the entries non-zero, rows summing to
//! `stay` where they have any): G = I - P'. Initial fluid U[0, 40) in every buffer,
//! exogenous inflow to about a third of the buffers, scaled so that no server is loaded
//! over 0.9 in the long run; holding costs U[0.5, 2), c = G' h, gamma = 0.

use serde::{Deserialize, Serialize};

use crate::network::FluidNetwork;
use crate::{FluidError, Sclp};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McqnSpec {
    pub buffers: usize,
    pub servers: usize,
    pub density: f64,
    pub stay: f64,
    pub horizon: f64,
    pub seed: u64,
}

impl McqnSpec {
    pub fn new(buffers: usize, servers: usize, seed: u64) -> Self {
        Self {
            buffers,
            servers,
            density: 0.4,
            stay: 0.8,
            horizon: 100.0,
            seed,
        }
    }
}

/// SplitMix64: small, seeded, the same numbers on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The network of a random instance (mu = 1: u is a flow rate; `resource` holds the
/// service times).
pub fn mcqn_network(spec: &McqnSpec) -> Result<FluidNetwork, FluidError> {
    let (k, i) = (spec.buffers, spec.servers);
    if k == 0 || i == 0 || i > k {
        return Err(FluidError::Invalid(format!(
            "need 1 <= servers <= buffers, got {i} servers for {k} buffers"
        )));
    }
    if !(0.0..=1.0).contains(&spec.density) || !(0.0..1.0).contains(&spec.stay) {
        return Err(FluidError::Invalid(
            "density must be in [0, 1] and stay in [0, 1)".into(),
        ));
    }
    let mut rng = Rng(spec.seed);
    let server: Vec<usize> = (0..k)
        .map(|q| if q < i { q } else { rng.below(i) })
        .collect();
    let mut routing = vec![vec![0.0; k]; k];
    for (q, row) in routing.iter_mut().enumerate() {
        for (q2, p) in row.iter_mut().enumerate() {
            if q2 != q && rng.uniform(0.0, 1.0) < spec.density {
                *p = rng.uniform(0.0, 1.0);
            }
        }
        let sum: f64 = row.iter().sum();
        if sum > 0.0 {
            row.iter_mut().for_each(|p| *p *= spec.stay / sum);
        }
    }
    let service: Vec<f64> = (0..k).map(|_| rng.uniform(0.1, 1.0)).collect();
    let mut lambda: Vec<f64> = (0..k)
        .map(|_| {
            if rng.uniform(0.0, 1.0) < 1.0 / 3.0 {
                rng.uniform(0.0, 1.0)
            } else {
                0.0
            }
        })
        .collect();
    // Long-run flow through each buffer: f = lambda + P' f (P's rows sum to < 1).
    let mut flow = lambda.clone();
    for _ in 0..500 {
        let next: Vec<f64> = (0..k)
            .map(|r| lambda[r] + (0..k).map(|q| routing[q][r] * flow[q]).sum::<f64>())
            .collect();
        flow = next;
    }
    let mut load = vec![0.0; i];
    for q in 0..k {
        load[server[q]] += service[q] * flow[q];
    }
    let peak = load.iter().copied().fold(0.0, f64::max);
    if peak > 0.9 {
        lambda.iter_mut().for_each(|l| *l *= 0.9 / peak);
    }
    let mut resource = vec![vec![0.0; k]; i];
    for q in 0..k {
        resource[server[q]][q] = service[q];
    }
    Ok(FluidNetwork {
        mu: vec![1.0; k],
        routing,
        lambda,
        x0: (0..k).map(|_| rng.uniform(0.0, 40.0)).collect(),
        holding_cost: (0..k).map(|_| rng.uniform(0.5, 2.0)).collect(),
        resource,
        capacity: vec![1.0; i],
        resource_cost: Vec::new(),
        horizon: spec.horizon,
    })
}

/// A random instance in the SCLP standard form.
pub fn mcqn(spec: &McqnSpec) -> Result<Sclp, FluidError> {
    mcqn_network(spec)?.to_sclp()
}
