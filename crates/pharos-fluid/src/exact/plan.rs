//! A base sequence with its interval lengths as affine functions of T ([`Plan`]), and
//! the next collision as T grows.

use super::*;

/// A base sequence with its interval lengths tau = tau0 + T dtau.
#[derive(Clone)]
pub(super) struct Plan {
    pub(super) bases: Vec<Rc<Rates>>,
    pub(super) tau0: Vec<f64>,
    pub(super) dtau: Vec<f64>,
}

/// What reaches zero first as T grows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Event {
    /// Interval n shrinks to 0.
    Time(usize),
    /// State column `col` reaches 0 at breakpoint n (n = N: at T).
    State(usize, usize),
    /// The dual state of control column `col` reaches 0 at breakpoint n (n = 0: at 0).
    Dual(usize, usize),
}

pub(super) struct Look {
    /// The smallest T >= t at which something reaches 0 (infinite when nothing does).
    pub(super) next: f64,
    pub(super) what: Option<Event>,
    /// The most negative length or level at t.
    pub(super) worst: f64,
}

impl Plan {
    pub(super) fn new(ctx: &Ctx, bases: Vec<Rc<Rates>>) -> Option<Plan> {
        let n = bases.len();
        if n == 0 {
            return None;
        }
        add_work((n * ctx.m) as u64);
        let mut mat = vec![0.0; n * n];
        let mut beta = vec![0.0; n];
        for q in 0..n - 1 {
            let (out, _) = pivot(&bases[q], &bases[q + 1])?;
            if ctx.is_state(out) {
                for (m, b) in bases.iter().enumerate().take(q + 1) {
                    mat[q * n + m] = b.prim[out];
                }
                beta[q] = -ctx.x0[out];
            } else {
                for (m, b) in bases.iter().enumerate().skip(q + 1) {
                    mat[q * n + m] = b.dual[out];
                }
                beta[q] = -ctx.qn[out];
            }
        }
        mat[(n - 1) * n..].iter_mut().for_each(|v| *v = 1.0);
        let lu = Lu::factor(mat, n)?;
        let tau0 = lu.solve(&beta);
        let mut e = vec![0.0; n];
        e[n - 1] = 1.0;
        let dtau = lu.solve(&e);
        if tau0.iter().chain(&dtau).any(|v| !v.is_finite()) {
            return None;
        }
        Some(Plan { bases, tau0, dtau })
    }

    pub(super) fn taus(&self, t: f64) -> Vec<f64> {
        self.tau0
            .iter()
            .zip(&self.dtau)
            .map(|(a, b)| a + t * b)
            .collect()
    }

    /// Lengths and levels at horizon t, and the first horizon >= t where one of them
    /// reaches 0.
    pub(super) fn look(&self, ctx: &Ctx, t: f64) -> Look {
        let n = self.bases.len();
        add_work((n * ctx.ncol) as u64);
        let mut out = Look {
            next: f64::INFINITY,
            what: None,
            worst: f64::INFINITY,
        };
        let tol_slope = 1e-12;
        let consider = |v0: f64, v1: f64, norm: f64, ev: Event, out: &mut Look| {
            let val = v0 + t * v1;
            // NaN counts as the worst.
            out.worst = if val.is_nan() {
                f64::NEG_INFINITY
            } else {
                out.worst.min(val / norm)
            };
            // Lengths have slopes without units; levels' slopes scale with the levels.
            let slope_norm = if matches!(ev, Event::Time(_)) {
                1.0
            } else {
                norm
            };
            if v1 < -tol_slope * slope_norm {
                let at = t + val.max(0.0) / -v1;
                if at < out.next {
                    out.next = at;
                    out.what = Some(ev);
                }
            }
        };
        let tnorm = t.max(1.0);
        for q in 0..n {
            consider(self.tau0[q], self.dtau[q], tnorm, Event::Time(q), &mut out);
        }
        // States, forwards: level at breakpoint q + 1 (after interval q).
        let norm = ctx.tol / 1e-9;
        let mut l0 = ctx.x0.clone();
        let mut l1 = vec![0.0; ctx.ncol];
        for q in 0..n {
            let b = &self.bases[q];
            for c in ctx.j..ctx.j + ctx.k {
                if b.basic[c] {
                    l0[c] += b.prim[c] * self.tau0[q];
                    l1[c] += b.prim[c] * self.dtau[q];
                    if q + 1 == n || self.bases[q + 1].basic[c] {
                        consider(l0[c], l1[c], norm, Event::State(c, q + 1), &mut out);
                    }
                }
            }
        }
        // Dual states, backwards: level at breakpoint q (before interval q).
        let mut l0 = ctx.qn.clone();
        let mut l1 = vec![0.0; ctx.ncol];
        for q in (0..n).rev() {
            let b = &self.bases[q];
            for c in 0..ctx.ncol {
                if !ctx.is_state(c) && !b.basic[c] {
                    l0[c] += b.dual[c] * self.tau0[q];
                    l1[c] += b.dual[c] * self.dtau[q];
                    if q == 0 || !self.bases[q - 1].basic[c] {
                        consider(l0[c], l1[c], norm, Event::Dual(c, q), &mut out);
                    }
                }
            }
        }
        out
    }
}
