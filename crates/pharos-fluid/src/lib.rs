//! Separated continuous linear programs (SCLP) in the standard form
//!
//! ```text
//! max  integral_0^T [ (gamma + (T - t) c)' u(t) + d' x(t) ] dt
//! s.t. integral_0^t G u(s) ds + F x(t) <= alpha + a t,   0 <= t <= T
//!      H u(t) <= b,   u(t) >= 0,  x(t) >= 0
//! ```
//!
//! - [`Sclp`]: the problem, checked, and its JSON form (fields `G, H, F, a, b, c, d,
//!   alpha, gamma, T`; matrices as row-major nested arrays);
//! - [`network`]: fluid networks of functions (or buffers) served by resources, and their
//!   mapping to the standard form;
//! - [`exact`]: the exact solver (a simplex-type homotopy in T after Weiss), verified,
//!   with [`exact::solve_auto`] falling back to the discretised LP;
//! - [`lp`]: the time-discretised LP (uniform or non-uniform grids), a restriction of
//!   the SCLP whose optimum is a lower bound on the SCLP's maximum;
//! - [`generate`]: seeded random multiclass queueing network instances.
//!
//! Architecture invariant: no I/O and no clock outside the solve-time measurement; the
//! same problem gives the same answer.

#[cfg(test)]
mod tests;

pub mod exact;
pub mod generate;
pub mod lp;
pub mod network;

use serde::{Deserialize, Serialize};

/// Why a problem is not well formed, or was not solved.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FluidError {
    #[error("{0}")]
    Invalid(String),
    #[error("the solver failed: {0}")]
    Solver(String),
    /// The exact solver went past its work budget (a bound on its time).
    #[error(
        "the exact solver went over its work budget ({work} operations, budget {budget}, {seconds:.3} s)"
    )]
    OverBudget {
        work: u64,
        budget: u64,
        /// How long the solve ran before it stopped.
        seconds: f64,
    },
}

/// `value < floor`, or NaN: a check that NaN always fails.
pub(crate) fn below(value: f64, floor: f64) -> bool {
    value.is_nan() || value < floor
}

fn invalid<T>(msg: String) -> Result<T, FluidError> {
    Err(FluidError::Invalid(msg))
}

/// An SCLP in the standard form (see the crate documentation). K = rows of G, J =
/// columns of G (controls u), L = columns of F (states x), I = rows of H.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sclp {
    #[serde(rename = "G")]
    pub g: Vec<Vec<f64>>,
    #[serde(rename = "H")]
    pub h: Vec<Vec<f64>>,
    /// K rows of L columns; empty rows (or no rows) when there are no states.
    #[serde(rename = "F", default)]
    pub f: Vec<Vec<f64>>,
    pub a: Vec<f64>,
    pub b: Vec<f64>,
    pub c: Vec<f64>,
    #[serde(default)]
    pub d: Vec<f64>,
    pub alpha: Vec<f64>,
    pub gamma: Vec<f64>,
    #[serde(rename = "T")]
    pub t: f64,
}

impl Sclp {
    /// Constraint rows K.
    pub fn k(&self) -> usize {
        self.g.len()
    }
    /// Controls J.
    pub fn j(&self) -> usize {
        self.g.first().map_or(self.c.len(), Vec::len)
    }
    /// States L.
    pub fn l(&self) -> usize {
        self.f.first().map_or(0, Vec::len)
    }
    /// Resource rows I.
    pub fn i(&self) -> usize {
        self.h.len()
    }

    /// Read and check a problem from its JSON text.
    pub fn from_json(text: &str) -> Result<Sclp, FluidError> {
        let p: Sclp = serde_json::from_str(text)
            .map_err(|e| FluidError::Invalid(format!("not an SCLP in JSON: {e}")))?;
        p.validate()?;
        Ok(p)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Dimensions agree, every number is finite, T > 0, and the problem is feasible
    /// at t = 0 (alpha >= 0 on the rows F does not touch, b >= 0).
    pub fn validate(&self) -> Result<(), FluidError> {
        let (k, j, l, i) = (self.k(), self.j(), self.l(), self.i());
        if k == 0 || j == 0 {
            return invalid("G must have at least one row and one column".into());
        }
        let rows = |name: &str, m: &[Vec<f64>], cols: usize| -> Result<(), FluidError> {
            for (r, row) in m.iter().enumerate() {
                if row.len() != cols {
                    return invalid(format!(
                        "{name} row {r} has {} columns, expected {cols}",
                        row.len()
                    ));
                }
                if let Some(c) = row.iter().position(|v| !v.is_finite()) {
                    return invalid(format!("{name}[{r}][{c}] is not a finite number"));
                }
            }
            Ok(())
        };
        rows("G", &self.g, j)?;
        rows("H", &self.h, j)?;
        if !self.f.is_empty() {
            if self.f.len() != k {
                return invalid(format!("F has {} rows, G has {k}", self.f.len()));
            }
            rows("F", &self.f, l)?;
        }
        let vector = |name: &str, v: &[f64], n: usize| -> Result<(), FluidError> {
            if v.len() != n {
                return invalid(format!("{name} has {} entries, expected {n}", v.len()));
            }
            if let Some(p) = v.iter().position(|x| !x.is_finite()) {
                return invalid(format!("{name}[{p}] is not a finite number"));
            }
            Ok(())
        };
        vector("a", &self.a, k)?;
        vector("alpha", &self.alpha, k)?;
        vector("b", &self.b, i)?;
        vector("c", &self.c, j)?;
        vector("gamma", &self.gamma, j)?;
        vector("d", &self.d, l)?;
        if !(self.t.is_finite() && self.t > 0.0) {
            return invalid(format!("T must be a number > 0, got {}", self.t));
        }
        if let Some(r) = self.b.iter().position(|v| *v < 0.0) {
            return invalid(format!(
                "b[{r}] = {} < 0: no u >= 0 satisfies H u <= b when H's row is >= 0; infeasible",
                self.b[r]
            ));
        }
        // At t = 0 the constraint reads F x(0) <= alpha: rows without F need alpha >= 0.
        for r in 0..k {
            let touched = self
                .f
                .get(r)
                .is_some_and(|row| row.iter().any(|v| *v != 0.0));
            if !touched && self.alpha[r] < 0.0 {
                return invalid(format!(
                    "alpha[{r}] = {} < 0 with no state in row {r}: infeasible at t = 0",
                    self.alpha[r]
                ));
            }
        }
        Ok(())
    }
}

/// A solution: piecewise-constant controls on intervals, states and constraint slacks
/// at the breakpoints.
#[derive(Debug, Clone, Serialize)]
pub struct Solution {
    /// How it was solved (`lp-uniform-N`, `lp-geometric-N`, ...).
    pub method: String,
    /// The SCLP objective (maximised).
    pub objective: f64,
    /// From [`lp::solve`]: the LP solver's dual objective (a bound for the discretised
    /// LP only). From [`lp::solve_bracketed`]: the symmetric dual SCLP's discretisation,
    /// an upper bound on the exact SCLP optimum (infinite when that dual did not solve).
    pub dual_objective: f64,
    /// Breakpoints 0 = t_0 < ... < t_N = T.
    pub breakpoints: Vec<f64>,
    /// u on interval n (between breakpoints n and n + 1).
    pub u: Vec<Vec<f64>>,
    /// x at each breakpoint (empty vectors without states).
    pub x: Vec<Vec<f64>>,
    /// The slack alpha + a t - integral G u - F x at each breakpoint (the fluid contents
    /// of a network).
    pub slack: Vec<Vec<f64>>,
    pub solve_s: f64,
    /// Solver iterations (interior-point iterations; collisions for the exact solver).
    pub iterations: u32,
    /// The exact solver's dual controls p (one per row of G) on each interval.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dual_controls: Vec<Vec<f64>>,
    /// The exact solver's dual states at each breakpoint: one per control (the slack of
    /// the dual constraint), then one per row of H.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dual_states: Vec<Vec<f64>>,
    /// Why the exact solver was not used, when [`exact::solve_auto`] fell back to the LP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

impl Solution {
    /// (dual - primal) relative to max(1, |primal|).
    pub fn relative_gap(&self) -> f64 {
        (self.dual_objective - self.objective) / self.objective.abs().max(1.0)
    }

    /// Checks the solution against the problem: u, x >= 0, H u <= b on every interval,
    /// slacks >= 0 at every breakpoint (recomputed here from u and x), within `tol`
    /// (relative to the problem's scale), and the objective recomputed from u and x.
    pub fn verify(&self, p: &Sclp, tol: f64) -> Result<(), FluidError> {
        let scale = 1.0
            + p.alpha
                .iter()
                .chain(&p.a)
                .chain(&p.b)
                .fold(0.0f64, |m, v| m.max(v.abs()));
        let bad = |m: String| Err(FluidError::Solver(format!("unverified answer: {m}")));
        let n = self.u.len();
        if self.breakpoints.len() != n + 1
            || (self.breakpoints[n] - p.t).abs() > 1e-9 * p.t.max(1.0)
        {
            return bad("the breakpoints do not reach T".into());
        }
        let mut cum = vec![0.0; p.k()];
        let mut obj = 0.0;
        for step in 0..=n {
            let t = self.breakpoints[step];
            if step > 0 {
                let (t0, u) = (self.breakpoints[step - 1], &self.u[step - 1]);
                let tau = t - t0;
                if u.iter().any(|v| below(*v, -tol * scale)) {
                    return bad(format!("u < 0 on interval {}", step - 1));
                }
                for (r, row) in p.h.iter().enumerate() {
                    let used: f64 = row.iter().zip(u).map(|(h, v)| h * v).sum();
                    if below(-used, -(p.b[r] + tol * scale)) {
                        return bad(format!("H u > b in row {r} on interval {}", step - 1));
                    }
                }
                for (r, row) in p.g.iter().enumerate() {
                    cum[r] += tau * row.iter().zip(u).map(|(g, v)| g * v).sum::<f64>();
                }
                let mid = p.t - 0.5 * (t0 + t);
                obj += (0..p.j())
                    .map(|q| (tau * p.gamma[q] + tau * mid * p.c[q]) * u[q])
                    .sum::<f64>();
                let dx: f64 = (0..p.l())
                    .map(|q| p.d[q] * (self.x[step - 1][q] + self.x[step][q]))
                    .sum();
                obj += 0.5 * tau * dx;
            }
            let x = &self.x[step];
            if x.iter().any(|v| below(*v, -tol * scale)) {
                return bad(format!("x < 0 at breakpoint {step}"));
            }
            for r in 0..p.k() {
                let fx: f64 =
                    p.f.get(r)
                        .map_or(0.0, |row| row.iter().zip(x).map(|(f, v)| f * v).sum());
                let slack = p.alpha[r] + p.a[r] * t - cum[r] - fx;
                if below(slack, -tol * scale * (1.0 + t)) {
                    return bad(format!("constraint {r} violated at t = {t} by {}", -slack));
                }
            }
        }
        if below(
            -(obj - self.objective).abs(),
            -tol.sqrt() * obj.abs().max(1.0),
        ) {
            return bad(format!(
                "the objective recomputed from u and x is {obj}, the solver said {}",
                self.objective
            ));
        }
        Ok(())
    }
}

impl Sclp {
    /// The symmetric dual, itself an SCLP in the standard form (maximised, so that its
    /// optimum is minus the primal's): controls p (one per row of G), states q (one per
    /// row of H), G' = -G', F' = -H', H' = -F', alpha' = -gamma, a' = -c, b' = -d,
    /// gamma' = -alpha, c' = -a, d' = -b.
    pub fn dual(&self) -> Sclp {
        let (k, j, l, i) = (self.k(), self.j(), self.l(), self.i());
        let neg_t = |m: &[Vec<f64>], rows: usize, cols: usize| -> Vec<Vec<f64>> {
            (0..cols)
                .map(|c| (0..rows).map(|r| -m[r][c]).collect())
                .collect()
        };
        let neg = |v: &[f64]| v.iter().map(|x| -x).collect::<Vec<f64>>();
        Sclp {
            g: neg_t(&self.g, k, j),
            f: if i > 0 {
                neg_t(&self.h, i, j)
            } else {
                Vec::new()
            },
            h: if l > 0 {
                neg_t(&self.f, k, l)
            } else {
                Vec::new()
            },
            a: neg(&self.c),
            alpha: neg(&self.gamma),
            b: neg(&self.d),
            c: neg(&self.a),
            gamma: neg(&self.alpha),
            d: neg(&self.b),
            t: self.t,
        }
    }
}
