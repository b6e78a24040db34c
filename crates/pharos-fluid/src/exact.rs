//! The exact solver: a simplex-type algorithm after Weiss (2008), a homotopy in the
//! horizon T over base sequences of the rates LP.
//!
//! **Rates LP.** With F empty (the networks of this crate), write the state slacks
//! x = alpha + a t - integral G u (K of them) and the capacity slacks s = b - H u (I).
//! On an interval where the solution is linear, its rates solve
//! `G u + x' = a, H u + s = b` (K + I rows; columns u (J), x' (K), s (I)). A basis B of
//! this system gives
//! - the primal rates: the basic solution (u and s are controls and must be >= 0; the
//!   state rates x' have any sign);
//! - the dual rates: with y = c_B B^-1, the reduced costs y A - c. On a state column
//!   that is the dual control p_k (must be >= 0); on a u column it is the rate of the
//!   dual state q_j, and on an s column the rate of the dual state r_i, both running
//!   backwards from T, where q(T) = -gamma and r(T) = 0.
//!
//! A basic variable's dual partner is zero, and a non-basic variable is zero: states
//! out of the basis sit at 0, controls out of the basis are 0.
//!
//! **Base sequences.** The optimum is a sequence of bases B_1..B_N, consecutive ones one
//! pivot apart, on intervals of lengths tau_1..tau_N. Each pivot fixes one equation:
//! when a state leaves the basis it is 0 at that breakpoint (forward from alpha); when a
//! control leaves, its dual state is 0 there (backward from T). With sum tau = T that is
//! a square system whose solution is affine in T. The sequence is optimal for T as long
//! as every tau >= 0, every state is >= 0 and every dual state is >= 0 at the
//! breakpoints.
//!
//! **Homotopy.** For T -> 0 the solution is one interval whose basis is optimal for the
//! rates LP with the boundary's sign restrictions (a state at 0 cannot fall, a control
//! that costs at T is not used). T then grows; the lengths and levels move linearly in
//! T until an interval shrinks to 0 (a time collision) or a state or dual state reaches
//! 0 at a breakpoint (a state collision). The sequence is then repaired (an SCLP pivot):
//! 1. the states and dual states that are positive at the collision point fix the sign
//!    restrictions of a rates LP (a positive state's rate is free, a control whose dual
//!    state is positive is 0); its optimal basis, reached by the primal or dual simplex
//!    warm-started from each neighbour, is the new basis at the point;
//! 2. the neighbours are joined to it (or to each other) by short paths of valid bases
//!    that pivot only on the columns in play (those that differ between the neighbours,
//!    the new basis and the simplex paths, and the colliding one), found by iterative
//!    deepening: this stands in for Weiss's recursive sub-problem;
//! 3. simpler repairs are candidates too: dropping a vanished interval, the other basis
//!    between its neighbours, or one inserted basis in which the colliding variable
//!    leaves.
//!
//! Intervals of zero length next to the point are part of the collision. Every
//! candidate is checked by solving its length equations (all lengths and levels >= 0 at
//! the collision) and the one whose next collision is furthest is kept; a repair may not
//! return to a sequence already met at the same T.
//!
//! **What is not built.** Weiss's recursive sub-problems in general (when no short path
//! joins a collision), problems with states in F or with gamma > 0, and impulse
//! controls at the boundaries (the queue-cap prototype of the spec needs a dual impulse
//! at T). The solver then returns an error naming the collision, and [`solve_auto`]
//! falls back to the discretised LP. Whatever the path, the answer is verified before
//! it is returned: T reached, u >= 0, H u <= b, x >= 0 (recomputed from u), the dual
//! feasible (p >= 0, r >= 0 and the dual slacks recomputed from p and r >= 0), and the
//! primal and dual objectives equal.

// Dense linear algebra reads best with index loops.
#![allow(clippy::needless_range_loop)]

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Instant;

use crate::lp::{self, Grid};
use crate::{FluidError, Sclp, Solution, below};

/// Dense LU factorisation with partial pivoting (row-major).
struct Lu {
    n: usize,
    a: Vec<f64>,
    piv: Vec<usize>,
}

impl Lu {
    fn factor(mut a: Vec<f64>, n: usize) -> Option<Lu> {
        let mut piv: Vec<usize> = (0..n).collect();
        let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        if scale == 0.0 {
            return None;
        }
        for k in 0..n {
            let (mut p, mut best) = (k, a[k * n + k].abs());
            for r in k + 1..n {
                let v = a[r * n + k].abs();
                if v > best {
                    best = v;
                    p = r;
                }
            }
            if best <= 1e-12 * scale {
                return None;
            }
            if p != k {
                for c in 0..n {
                    a.swap(k * n + c, p * n + c);
                }
                piv.swap(k, p);
            }
            let d = a[k * n + k];
            for r in k + 1..n {
                let f = a[r * n + k] / d;
                a[r * n + k] = f;
                if f != 0.0 {
                    let (top, bottom) = a.split_at_mut(r * n);
                    let pivot_row = &top[k * n + k + 1..k * n + n];
                    for (x, y) in bottom[k + 1..n].iter_mut().zip(pivot_row) {
                        *x -= f * y;
                    }
                }
            }
        }
        Some(Lu { n, a, piv })
    }

    /// x with A x = b.
    fn solve(&self, b: &[f64]) -> Vec<f64> {
        let n = self.n;
        let mut x: Vec<f64> = self.piv.iter().map(|&p| b[p]).collect();
        for r in 0..n {
            let row = &self.a[r * n..r * n + r];
            let s: f64 = row.iter().zip(&x[..r]).map(|(l, v)| l * v).sum();
            x[r] -= s;
        }
        for r in (0..n).rev() {
            let row = &self.a[r * n + r + 1..r * n + n];
            let s: f64 = row.iter().zip(&x[r + 1..]).map(|(u, v)| u * v).sum();
            x[r] = (x[r] - s) / self.a[r * n + r];
        }
        x
    }

    /// y with A' y = b.
    fn solve_t(&self, b: &[f64]) -> Vec<f64> {
        let n = self.n;
        let mut z = b.to_vec();
        for r in 0..n {
            let mut s = z[r];
            for c in 0..r {
                s -= self.a[c * n + r] * z[c];
            }
            z[r] = s / self.a[r * n + r];
        }
        for r in (0..n).rev() {
            let mut s = z[r];
            for c in r + 1..n {
                s -= self.a[c * n + r] * z[c];
            }
            z[r] = s;
        }
        let mut y = vec![0.0; n];
        for (i, &p) in self.piv.iter().enumerate() {
            y[p] = z[i];
        }
        y
    }
}

/// The primal and dual rates of one basis.
struct Rates {
    /// Basic columns, sorted.
    basis: Vec<usize>,
    basic: Vec<bool>,
    /// Basic values (0 off the basis): controls u, s and state rates x'.
    prim: Vec<f64>,
    /// Reduced costs (0 on the basis): dual controls p, dual-state rates q', r'.
    dual: Vec<f64>,
}

/// The problem as the rates LP sees it.
struct Ctx<'a> {
    p: &'a Sclp,
    k: usize,
    j: usize,
    m: usize,
    ncol: usize,
    /// Column entries (row, value).
    cols: Vec<Vec<(usize, f64)>>,
    rhs: Vec<f64>,
    cost: Vec<f64>,
    /// State levels at t = 0 (state columns; 0 elsewhere).
    x0: Vec<f64>,
    /// Dual-state levels at t = T (control columns; 0 elsewhere).
    qn: Vec<f64>,
    /// Tolerance on rates and levels.
    tol: f64,
    cache: RefCell<HashMap<Vec<usize>, Option<Rc<Rates>>>>,
    factorisations: Cell<u64>,
}

impl<'a> Ctx<'a> {
    fn new(p: &'a Sclp) -> Ctx<'a> {
        let (k, j, i) = (p.k(), p.j(), p.i());
        let m = k + i;
        let ncol = j + k + i;
        let mut cols = vec![Vec::new(); ncol];
        for (q, col) in cols.iter_mut().enumerate().take(j) {
            for r in 0..k {
                if p.g[r][q] != 0.0 {
                    col.push((r, p.g[r][q]));
                }
            }
            for r in 0..i {
                if p.h[r][q] != 0.0 {
                    col.push((k + r, p.h[r][q]));
                }
            }
        }
        for r in 0..m {
            cols[j + r].push((r, 1.0));
        }
        let rhs: Vec<f64> = p.a.iter().chain(&p.b).copied().collect();
        let mut cost = vec![0.0; ncol];
        cost[..j].copy_from_slice(&p.c);
        let mut x0 = vec![0.0; ncol];
        x0[j..j + k].copy_from_slice(&p.alpha);
        let mut qn = vec![0.0; ncol];
        for q in 0..j {
            qn[q] = -p.gamma[q];
        }
        let scale = p
            .alpha
            .iter()
            .chain(&p.a)
            .chain(&p.b)
            .chain(&p.c)
            .chain(&p.gamma)
            .fold(1.0f64, |s, v| s.max(v.abs()));
        Ctx {
            p,
            k,
            j,
            m,
            ncol,
            cols,
            rhs,
            cost,
            x0,
            qn,
            tol: 1e-9 * scale,
            cache: RefCell::new(HashMap::new()),
            factorisations: Cell::new(0),
        }
    }

    fn is_state(&self, col: usize) -> bool {
        col >= self.j && col < self.j + self.k
    }

    fn factor(&self, basis: &[usize]) -> Option<Lu> {
        let m = self.m;
        let mut b = vec![0.0; m * m];
        for (pos, &col) in basis.iter().enumerate() {
            for &(r, v) in &self.cols[col] {
                b[r * m + pos] = v;
            }
        }
        self.factorisations.set(self.factorisations.get() + 1);
        Lu::factor(b, m)
    }

    fn dot_col(&self, col: usize, y: &[f64]) -> f64 {
        self.cols[col].iter().map(|&(r, v)| v * y[r]).sum()
    }

    /// The rates of `basis` (sorted) if it is a basis whose controls are >= 0 and whose
    /// dual controls are >= 0.
    fn rates(&self, basis: Vec<usize>) -> Option<Rc<Rates>> {
        if let Some(hit) = self.cache.borrow().get(&basis) {
            return hit.clone();
        }
        let out = self.compute_rates(&basis).map(Rc::new);
        self.cache.borrow_mut().insert(basis, out.clone());
        out
    }

    fn compute_rates(&self, basis: &[usize]) -> Option<Rates> {
        let lu = self.factor(basis)?;
        let xb = lu.solve(&self.rhs);
        let cb: Vec<f64> = basis.iter().map(|&c| self.cost[c]).collect();
        let y = lu.solve_t(&cb);
        let mut basic = vec![false; self.ncol];
        let mut prim = vec![0.0; self.ncol];
        for (pos, &c) in basis.iter().enumerate() {
            basic[c] = true;
            prim[c] = xb[pos];
        }
        let mut dual = vec![0.0; self.ncol];
        for c in 0..self.ncol {
            if !basic[c] {
                dual[c] = self.dot_col(c, &y) - self.cost[c];
            }
        }
        for c in 0..self.ncol {
            let bad = if self.is_state(c) {
                !basic[c] && dual[c] < -self.tol
            } else {
                basic[c] && prim[c] < -self.tol
            };
            if bad {
                return None;
            }
        }
        Some(Rates {
            basis: basis.to_vec(),
            basic,
            prim,
            dual,
        })
    }

    /// The rates of every basis one pivot from `b` (a column of `outs` for one of
    /// `inns`) into the cache, from one factorisation of `b`: the tableau column of each
    /// entering column and the tableau row of each leaving one give the pivot's new
    /// basic values and reduced costs.
    fn expand(&self, b: &Rates, outs: &[usize], inns: &[usize]) {
        let todo: Vec<(usize, usize)> = outs
            .iter()
            .flat_map(|&o| inns.iter().map(move |&i| (o, i)))
            .filter(|&(o, i)| {
                !self
                    .cache
                    .borrow()
                    .contains_key(&Self::swap(&b.basis, o, i))
            })
            .collect();
        if todo.is_empty() {
            return;
        }
        let Some(lu) = self.factor(&b.basis) else {
            return;
        };
        let m = self.m;
        let mut cols: HashMap<usize, Vec<f64>> = HashMap::new();
        let mut rows: HashMap<usize, Vec<f64>> = HashMap::new();
        for (o, i) in todo {
            let pos = b.basis.binary_search(&o).expect("o is basic");
            let col = cols.entry(i).or_insert_with(|| {
                let mut a = vec![0.0; m];
                for &(r, v) in &self.cols[i] {
                    a[r] = v;
                }
                lu.solve(&a)
            });
            let piv = col[pos];
            let key = Self::swap(&b.basis, o, i);
            // Near-singular pivots are left to a fresh factorisation.
            let size = col.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            if piv.abs() <= 1e-9 * size.max(1e-300) {
                continue;
            }
            let theta = b.prim[o] / piv;
            let mut prim = vec![0.0; self.ncol];
            for (p2, &c) in b.basis.iter().enumerate() {
                if c != o {
                    prim[c] = b.prim[c] - theta * col[p2];
                }
            }
            prim[i] = theta;
            let row = rows.entry(o).or_insert_with(|| {
                let mut e = vec![0.0; m];
                e[pos] = 1.0;
                let z = lu.solve_t(&e);
                (0..self.ncol)
                    .map(|c| {
                        if b.basic[c] {
                            f64::from(u8::from(c == o))
                        } else {
                            self.dot_col(c, &z)
                        }
                    })
                    .collect()
            });
            let f = b.dual[i] / piv;
            let mut basic = b.basic.clone();
            basic[o] = false;
            basic[i] = true;
            let dual: Vec<f64> = (0..self.ncol)
                .map(|c| {
                    if basic[c] {
                        0.0
                    } else {
                        b.dual[c] - f * row[c]
                    }
                })
                .collect();
            let valid = (0..self.ncol).all(|c| {
                if self.is_state(c) {
                    basic[c] || dual[c] >= -self.tol
                } else {
                    !basic[c] || prim[c] >= -self.tol
                }
            });
            let r = valid.then(|| {
                Rc::new(Rates {
                    basis: key.clone(),
                    basic,
                    prim,
                    dual,
                })
            });
            self.cache.borrow_mut().insert(key, r);
        }
    }

    /// `basis` with `out` replaced by `inn`, sorted.
    fn swap(basis: &[usize], out: usize, inn: usize) -> Vec<usize> {
        let mut b: Vec<usize> = basis.iter().copied().filter(|&c| c != out).collect();
        b.push(inn);
        b.sort_unstable();
        b
    }
}

/// Bases one pivot apart, in order.
type Path = Vec<Vec<usize>>;

/// The one column in `a` and not in `b`, when they are one pivot apart.
fn pivot(a: &Rates, b: &Rates) -> Option<(usize, usize)> {
    let out: Vec<usize> = a.basis.iter().copied().filter(|&c| !b.basic[c]).collect();
    let inn: Vec<usize> = b.basis.iter().copied().filter(|&c| !a.basic[c]).collect();
    (out.len() == 1 && inn.len() == 1).then(|| (out[0], inn[0]))
}

/// A base sequence with its interval lengths tau = tau0 + T dtau.
#[derive(Clone)]
struct Plan {
    bases: Vec<Rc<Rates>>,
    tau0: Vec<f64>,
    dtau: Vec<f64>,
}

/// What reaches zero first as T grows.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Event {
    /// Interval n shrinks to 0.
    Time(usize),
    /// State column `col` reaches 0 at breakpoint n (n = N: at T).
    State(usize, usize),
    /// The dual state of control column `col` reaches 0 at breakpoint n (n = 0: at 0).
    Dual(usize, usize),
}

struct Look {
    /// The smallest T >= t at which something reaches 0 (infinite when nothing does).
    next: f64,
    what: Option<Event>,
    /// The most negative length or level at t.
    worst: f64,
}

impl Plan {
    fn new(ctx: &Ctx, bases: Vec<Rc<Rates>>) -> Option<Plan> {
        let n = bases.len();
        if n == 0 {
            return None;
        }
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

    fn taus(&self, t: f64) -> Vec<f64> {
        self.tau0
            .iter()
            .zip(&self.dtau)
            .map(|(a, b)| a + t * b)
            .collect()
    }

    /// Lengths and levels at horizon t, and the first horizon >= t where one of them
    /// reaches 0.
    fn look(&self, ctx: &Ctx, t: f64) -> Look {
        let n = self.bases.len();
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

/// The basis for T -> 0: optimal for max c'u over the rates LP with the boundary's sign
/// restrictions, by a dense primal simplex from the slack basis (Dantzig's rule, Bland's
/// after a run of degenerate pivots).
fn initial_basis(ctx: &Ctx) -> Result<Vec<usize>, FluidError> {
    let (m, n) = (ctx.m, ctx.ncol);
    let unsupported = |why: String| Err(FluidError::Solver(why));
    // Free: states with alpha > 0 (never leave). Excluded: controls that cost at T.
    let free: Vec<bool> = (0..n)
        .map(|c| ctx.is_state(c) && ctx.x0[c] > ctx.tol)
        .collect();
    let allowed: Vec<bool> = (0..n)
        .map(|c| ctx.is_state(c) || ctx.qn[c] <= 0.0)
        .collect();
    let mut basis: Vec<usize> = (ctx.j..n).collect();
    let mut tab = vec![0.0; m * n];
    for (c, col) in ctx.cols.iter().enumerate() {
        for &(r, v) in col {
            tab[r * n + c] = v;
        }
    }
    let mut beta = ctx.rhs.clone();
    for r in 0..m {
        if !free[basis[r]] && beta[r] < -ctx.tol {
            return unsupported(format!(
                "row {r} starts at 0 with a negative rate; the boundary LP needs a phase 1"
            ));
        }
    }
    let mut d: Vec<f64> = ctx.cost.iter().map(|c| -c).collect();
    let mut degenerate = 0;
    for _ in 0..50 * (m + n) {
        let candidates = (0..n).filter(|&c| allowed[c] && d[c] < -ctx.tol && !basis.contains(&c));
        let enter = if degenerate > 20 {
            candidates.min()
        } else {
            candidates.min_by(|&a, &b| d[a].total_cmp(&d[b]))
        };
        let Some(e) = enter else {
            let mut b = basis;
            b.sort_unstable();
            return Ok(b);
        };
        let mut leave: Option<(usize, f64)> = None;
        for r in 0..m {
            let v = tab[r * n + e];
            if free[basis[r]] || v <= 1e-11 {
                continue;
            }
            let ratio = beta[r] / v;
            let better = match leave {
                None => true,
                Some((lr, lv)) => {
                    ratio < lv - 1e-12 || (ratio <= lv + 1e-12 && basis[r] < basis[lr])
                }
            };
            if better {
                leave = Some((r, ratio));
            }
        }
        let Some((r, ratio)) = leave else {
            return unsupported("the rates LP is unbounded".into());
        };
        degenerate = if ratio.abs() <= 1e-12 {
            degenerate + 1
        } else {
            0
        };
        let pv = tab[r * n + e];
        for c in 0..n {
            tab[r * n + c] /= pv;
        }
        beta[r] /= pv;
        for q in 0..m {
            let f = tab[q * n + e];
            if q != r && f != 0.0 {
                for c in 0..n {
                    tab[q * n + c] -= f * tab[r * n + c];
                }
                beta[q] -= f * beta[r];
            }
        }
        let f = d[e];
        for c in 0..n {
            d[c] -= f * tab[r * n + c];
        }
        basis[r] = e;
    }
    unsupported("the simplex for the rates LP did not finish".into())
}

/// Counters of one exact solve.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ExactStats {
    /// Collisions met and repaired along the homotopy.
    pub collisions: u64,
    /// Bases factorised.
    pub factorisations: u64,
}

/// The exact solver; when it cannot solve `p` (an unsupported form, a collision that
/// needs a sub-problem, an answer that fails verification), the discretised LP on
/// `fallback` with the dual SCLP's bound, and the reason in [`Solution::fallback`].
pub fn solve_auto(p: &Sclp, fallback: &Grid) -> Result<Solution, FluidError> {
    match solve(p) {
        Err(FluidError::Solver(why)) => {
            let mut s = lp::solve_bracketed(p, fallback)?;
            s.fallback = Some(why);
            Ok(s)
        }
        other => other,
    }
}

/// Solve `p` exactly; an error (never a wrong answer) when the algorithm cannot.
pub fn solve(p: &Sclp) -> Result<Solution, FluidError> {
    solve_with_stats(p).map(|(s, _)| s)
}

pub fn solve_with_stats(p: &Sclp) -> Result<(Solution, ExactStats), FluidError> {
    p.validate()?;
    let start = Instant::now();
    if p.l() > 0 {
        return Err(FluidError::Solver(
            "the exact solver handles problems without F states only".into(),
        ));
    }
    if let Some(q) = p.gamma.iter().position(|g| *g > 0.0) {
        return Err(FluidError::Solver(format!(
            "gamma[{q}] > 0 needs a boundary LP at T, which the exact solver does not have"
        )));
    }
    let ctx = Ctx::new(p);
    let first = initial_basis(&ctx)?;
    let b1 = ctx
        .rates(first)
        .ok_or_else(|| FluidError::Solver("the initial basis is singular or infeasible".into()))?;
    let mut plan =
        Plan::new(&ctx, vec![b1]).ok_or_else(|| FluidError::Solver("no plan for T -> 0".into()))?;
    let mut t = 0.0;
    let mut collisions = 0u64;
    let mut stuck = 0;
    // Base sequences met at the current T: a repair may not return to one of them.
    let mut seen: HashSet<Vec<Vec<usize>>> = HashSet::new();
    seen.insert(signature(&plan));
    let limit = 20_000 + 50 * (ctx.ncol as u64);
    // Alternatives left at earlier collisions, to back up to when a repair fails.
    let mut history: Vec<Choice> = Vec::new();
    let mut backtracks = 0u64;
    let mut first_failure: Option<FluidError> = None;
    let mut s = loop {
        let look = plan.look(&ctx, t);
        let mut failure = None;
        if look.next >= p.t {
            // T is reached: the answer, unless it fails its checks (then back up).
            match build(&ctx, &plan, start) {
                Ok(s) => break s,
                Err(e) => failure = Some(e),
            }
        }
        let what = look.what.unwrap_or(Event::Time(0));
        let no_progress = look.next <= t * (1.0 + 1e-12) + 1e-14;
        if failure.is_some() {
            // Backing up below.
        } else if no_progress {
            seen.insert(signature(&plan));
            stuck += 1;
            if stuck > 4 * plan.bases.len() + 50 {
                failure = Some(FluidError::Solver(format!(
                    "no progress at T = {t}: collisions repeat ({what:?})"
                )));
            }
        } else {
            stuck = 0;
            seen.clear();
            seen.insert(signature(&plan));
        }
        if failure.is_none() {
            let at = look.next.max(t);
            match repair(&ctx, &plan, at, what, &seen, false) {
                Ok(mut options) => {
                    let before = std::mem::replace(&mut plan, options.remove(0));
                    t = at;
                    history.push(Choice {
                        t,
                        before,
                        what,
                        options,
                        widened: false,
                        seen: seen.clone(),
                        stuck,
                    });
                    if history.len() > 32 {
                        history.remove(0);
                    }
                }
                Err(e) => failure = Some(e),
            }
        }
        if let Some(e) = failure {
            // Back up to the latest collision with another valid repair.
            // When a collision's repairs are used up, its wide search gives more.
            first_failure.get_or_insert(e);
            loop {
                let Some(mut choice) = history.pop() else {
                    return Err(first_failure.expect("set above"));
                };
                backtracks += 1;
                if backtracks > 64 {
                    return Err(first_failure.expect("set above"));
                }
                if choice.options.is_empty() && !choice.widened {
                    choice.widened = true;
                    choice.options = repair(
                        &ctx,
                        &choice.before,
                        choice.t,
                        choice.what,
                        &choice.seen,
                        true,
                    )
                    .unwrap_or_default();
                }
                if choice.options.is_empty() {
                    continue;
                }
                t = choice.t;
                plan = choice.options.remove(0);
                seen = choice.seen.clone();
                stuck = choice.stuck;
                history.push(choice);
                break;
            }
        }
        collisions += 1;
        if collisions > limit {
            return Err(FluidError::Solver(format!("over {limit} collisions")));
        }
    };
    s.iterations = collisions.min(u32::MAX as u64) as u32;
    let stats = ExactStats {
        collisions,
        factorisations: ctx.factorisations.get(),
    };
    Ok((s, stats))
}

/// The other valid repairs of a collision, kept to back up to.
struct Choice {
    t: f64,
    /// The sequence before the repair, and its collision.
    before: Plan,
    what: Event,
    options: Vec<Plan>,
    /// Whether the wide search has been done.
    widened: bool,
    seen: HashSet<Vec<Vec<usize>>>,
    stuck: usize,
}

fn signature(plan: &Plan) -> Vec<Vec<usize>> {
    plan.bases.iter().map(|b| b.basis.clone()).collect()
}

/// The valid repairs of a collision at horizon t, less those already met at t, the one
/// that goes furthest first.
fn repair(
    ctx: &Ctx,
    plan: &Plan,
    t: f64,
    what: Event,
    seen: &HashSet<Vec<Vec<usize>>>,
    wide_only: bool,
) -> Result<Vec<Plan>, FluidError> {
    let bases = &plan.bases;
    let n = bases.len();
    let mut cands: Vec<Vec<Rc<Rates>>> = Vec::new();
    let with = |at: usize, remove: usize, insert: Vec<Rc<Rates>>| {
        let mut v = bases[..at].to_vec();
        v.extend(insert);
        v.extend_from_slice(&bases[at + remove..]);
        v
    };
    match what {
        Event::Time(q) => {
            if n > 1 && (q == 0 || q + 1 == n) {
                cands.push(with(q, 1, vec![]));
            } else if n > 2 {
                let (l, r) = (&bases[q - 1], &bases[q + 1]);
                let outs: Vec<usize> = l.basis.iter().copied().filter(|&c| !r.basic[c]).collect();
                let inns: Vec<usize> = r.basis.iter().copied().filter(|&c| !l.basic[c]).collect();
                match outs.len() {
                    0 => cands.push(with(q, 2, vec![])),
                    1 => cands.push(with(q, 1, vec![])),
                    _ => {
                        for &o in &outs {
                            for &i in &inns {
                                let b = Ctx::swap(&l.basis, o, i);
                                if b != bases[q].basis
                                    && let Some(r) = ctx.rates(b)
                                {
                                    cands.push(with(q, 1, vec![r]));
                                }
                            }
                        }
                    }
                }
            }
        }
        Event::State(c, q) if q == n => {
            let last = &bases[n - 1];
            for b in neighbours_out(ctx, last, c) {
                let mut v = bases.clone();
                v.push(b);
                cands.push(v);
            }
        }
        Event::State(c, q) => {
            let (l, r) = (&bases[q - 1], &bases[q]);
            if let Some((_, inn)) = pivot(l, r)
                && let Some(b) = ctx.rates(Ctx::swap(&l.basis, c, inn))
            {
                cands.push(with(q, 0, vec![b]));
            }
        }
        Event::Dual(c, 0) => {
            for b in neighbours_in(ctx, &bases[0], c) {
                let mut v = vec![b];
                v.extend(bases.iter().cloned());
                cands.push(v);
            }
        }
        Event::Dual(c, q) => {
            let (l, r) = (&bases[q - 1], &bases[q]);
            if let Some((out, _)) = pivot(l, r)
                && let Some(b) = ctx.rates(Ctx::swap(&l.basis, out, c))
            {
                cands.push(with(q, 0, vec![b]));
            }
        }
    }
    if wide_only {
        cands = sclp_pivot(ctx, plan, t, what, true);
    } else {
        cands.extend(sclp_pivot(ctx, plan, t, what, false));
    }
    let mut valid: Vec<(f64, Plan)> = Vec::new();
    let mut wide = wide_only;
    loop {
        for bases in std::mem::take(&mut cands) {
            if bases.windows(2).any(|w| w[0].basis == w[1].basis) {
                continue;
            }
            let met = seen.contains(&bases.iter().map(|b| b.basis.clone()).collect::<Vec<_>>());
            let Some(plan) = Plan::new(ctx, bases) else {
                continue;
            };
            let look = plan.look(ctx, t);
            if look.worst < -1e-7 || (met && look.next <= t * (1.0 + 1e-12) + 1e-14) {
                continue;
            }
            if !valid.iter().any(|(_, p)| signature(p) == signature(&plan)) {
                valid.push((look.next, plan));
            }
        }
        // None: search again over the columns the sequence pivots on near the point.
        if !valid.is_empty() || wide {
            break;
        }
        wide = true;
        cands = sclp_pivot(ctx, plan, t, what, true);
    }
    // The furthest first; a stable sort keeps the order of generation among ties.
    valid.sort_by(|a, b| b.0.total_cmp(&a.0));
    if !valid.is_empty() {
        return Ok(valid.into_iter().map(|(_, p)| p).collect());
    }
    Err(FluidError::Solver(format!(
        "at T = {t} no repair of the collision {what:?} (of {n} intervals) was found: this \
             solver joins a collision's neighbours by short pivot paths only, without Weiss's \
             recursive sub-problems or impulse controls at the boundaries"
    )))
}

/// Bases one pivot from `b` in which state column `c` leaves, valid on their own.
fn neighbours_out(ctx: &Ctx, b: &Rates, c: usize) -> Vec<Rc<Rates>> {
    let Some(lu) = ctx.factor(&b.basis) else {
        return Vec::new();
    };
    let pos = b.basis.iter().position(|&x| x == c).expect("c is basic");
    let mut e = vec![0.0; ctx.m];
    e[pos] = 1.0;
    let z = lu.solve_t(&e);
    let mut out = Vec::new();
    for w in 0..ctx.ncol {
        if b.basic[w] {
            continue;
        }
        let row = ctx.dot_col(w, &z);
        if row.abs() <= 1e-9 {
            continue;
        }
        // Dual controls after the pivot must stay >= 0 (c itself among them).
        let ratio = b.dual[w] / row;
        if -ratio < -ctx.tol {
            continue;
        }
        let ok = (ctx.j..ctx.j + ctx.k)
            .all(|s| s == w || b.basic[s] || b.dual[s] - ratio * ctx.dot_col(s, &z) >= -ctx.tol);
        // At T: a control whose dual state ends positive cannot enter, and a dual state
        // that ends at 0 cannot start falling (loose checks).
        let loose = 10.0 * ctx.tol;
        let at_end_ok = (ctx.is_state(w) || ctx.qn[w] <= ctx.tol)
            && (0..ctx.ncol).all(|u| {
                u == w
                    || ctx.is_state(u)
                    || b.basic[u]
                    || ctx.qn[u] > ctx.tol
                    || b.dual[u] - ratio * ctx.dot_col(u, &z) >= -loose
            });
        if !ok || !at_end_ok {
            continue;
        }
        // Controls after the pivot must stay >= 0 too (a loose check; the factorised
        // rates decide).
        let mut a = vec![0.0; ctx.m];
        for &(r, v) in &ctx.cols[w] {
            a[r] = v;
        }
        let col = lu.solve(&a);
        let theta = b.prim[c] / col[pos];
        let primal_ok = (ctx.is_state(w) || theta >= -loose)
            && b.basis
                .iter()
                .enumerate()
                .all(|(p2, &x)| x == c || ctx.is_state(x) || b.prim[x] - theta * col[p2] >= -loose);
        if primal_ok && let Some(r) = ctx.rates(Ctx::swap(&b.basis, c, w)) {
            out.push(r);
        }
    }
    out
}

/// Bases one pivot from `b` in which control column `c` enters, valid on their own.
fn neighbours_in(ctx: &Ctx, b: &Rates, c: usize) -> Vec<Rc<Rates>> {
    let Some(lu) = ctx.factor(&b.basis) else {
        return Vec::new();
    };
    let mut a = vec![0.0; ctx.m];
    for &(r, v) in &ctx.cols[c] {
        a[r] = v;
    }
    let col = lu.solve(&a);
    let mut out = Vec::new();
    for (pos, &v) in b.basis.iter().enumerate() {
        if col[pos].abs() <= 1e-9 {
            continue;
        }
        let theta = b.prim[v] / col[pos];
        if theta < -ctx.tol {
            continue;
        }
        let ok =
            b.basis.iter().enumerate().all(|(p2, &x)| {
                x == v || ctx.is_state(x) || b.prim[x] - theta * col[p2] >= -ctx.tol
            });
        if ok && let Some(r) = ctx.rates(Ctx::swap(&b.basis, v, c)) {
            out.push(r);
        }
    }
    out
}

/// The solution of a plan at the problem's T, with its dual, verified.
fn build(ctx: &Ctx, plan: &Plan, start: Instant) -> Result<Solution, FluidError> {
    let p = ctx.p;
    let (k, j, i) = (ctx.k, ctx.j, p.i());
    let bad = |m: String| Err(FluidError::Solver(format!("unverified answer: {m}")));
    let taus: Vec<f64> = plan.taus(p.t);
    if taus.iter().any(|v| below(*v, -1e-9 * p.t.max(1.0))) {
        return bad("a negative or undefined interval length".into());
    }
    let taus: Vec<f64> = taus.iter().map(|v| v.max(0.0)).collect();
    let n = taus.len();
    let mut bp = vec![0.0; n + 1];
    for q in 0..n {
        bp[q + 1] = bp[q] + taus[q];
    }
    bp[n] = p.t;
    let u: Vec<Vec<f64>> = plan.bases.iter().map(|b| b.prim[..j].to_vec()).collect();
    let pp: Vec<Vec<f64>> = plan
        .bases
        .iter()
        .map(|b| b.dual[j..j + k].to_vec())
        .collect();
    let mut slack = vec![ctx.p.alpha.clone()];
    for q in 0..n {
        let prev = slack[q].clone();
        slack.push(
            (0..k)
                .map(|r| prev[r] + taus[q] * plan.bases[q].prim[j + r])
                .collect(),
        );
    }
    // r (dual states of the capacity rows) at the breakpoints, backwards from 0 at T.
    let mut rr = vec![vec![0.0; i]; n + 1];
    for q in (0..n).rev() {
        rr[q] = (0..i)
            .map(|r| rr[q + 1][r] + taus[q] * plan.bases[q].dual[j + k + r])
            .collect();
    }
    let mut objective = 0.0;
    let mut dual_objective = 0.0;
    // The sizes of the terms, for a tolerance relative to what was added up.
    let mut magnitude = 0.0;
    for q in 0..n {
        let (t0, t1, tau) = (bp[q], bp[q + 1], taus[q]);
        let mid = p.t - 0.5 * (t0 + t1);
        for c in 0..j {
            let term = (tau * p.gamma[c] + tau * mid * p.c[c]) * u[q][c];
            objective += term;
            magnitude += term.abs();
        }
        for r in 0..k {
            let term = (tau * p.alpha[r] + 0.5 * (t1 * t1 - t0 * t0) * p.a[r]) * pp[q][r];
            dual_objective += term;
            magnitude += term.abs();
        }
        for r in 0..i {
            let term = 0.5 * tau * p.b[r] * (rr[q][r] + rr[q + 1][r]);
            dual_objective += term;
            magnitude += term.abs();
        }
    }
    // Dual feasibility, recomputed from p and r: p >= 0, r >= 0 and the dual slack
    // q(t) = sum_{after t} tau G'p + H'r(t) - gamma - c (T - t) >= 0 at every breakpoint,
    // each within a tolerance relative to the sizes of its own terms (NaN fails).
    let size = |v: &[f64]| v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let ptol = 1e-9 * (1.0 + pp.iter().map(|v| size(v)).fold(0.0, f64::max));
    let rtol = 1e-9 * (1.0 + rr.iter().map(|v| size(v)).fold(0.0, f64::max));
    let mut gp = vec![0.0; j];
    let mut gp_abs = vec![0.0; j];
    for q in (0..=n).rev() {
        if q < n {
            if pp[q].iter().any(|v| below(*v, -ptol)) {
                return bad(format!("dual control p < 0 on interval {q}"));
            }
            for c in 0..j {
                gp[c] += taus[q] * (0..k).map(|r| p.g[r][c] * pp[q][r]).sum::<f64>();
                gp_abs[c] += taus[q] * (0..k).map(|r| (p.g[r][c] * pp[q][r]).abs()).sum::<f64>();
            }
        }
        if rr[q].iter().any(|v| below(*v, -rtol)) {
            return bad(format!("dual state r < 0 at breakpoint {q}"));
        }
        for c in 0..j {
            let hr: f64 = (0..i).map(|r| p.h[r][c] * rr[q][r]).sum();
            let hr_abs: f64 = (0..i).map(|r| (p.h[r][c] * rr[q][r]).abs()).sum();
            let rest = p.gamma[c] + p.c[c] * (p.t - bp[q]);
            let slack = gp[c] + hr - rest;
            let tol = 1e-7
                * (1e-9 + gp_abs[c] + hr_abs + p.gamma[c].abs() + (p.c[c] * (p.t - bp[q])).abs());
            if below(slack, -tol) {
                return bad(format!(
                    "dual constraint {c} violated at t = {} by {}",
                    bp[q], -slack
                ));
            }
        }
    }
    // Dual states at the breakpoints: the dual slack of every control, then r.
    let mut dual_states = vec![Vec::new(); n + 1];
    let mut qlev: Vec<f64> = ctx.qn[..j].to_vec();
    for q in (0..=n).rev() {
        if q < n {
            for (c, v) in qlev.iter_mut().enumerate() {
                *v += taus[q] * plan.bases[q].dual[c];
            }
        }
        dual_states[q] = qlev.iter().chain(&rr[q]).copied().collect();
    }
    let s = Solution {
        method: format!("exact-{n}"),
        objective,
        dual_objective,
        breakpoints: bp,
        u,
        x: vec![Vec::new(); n + 1],
        slack,
        solve_s: start.elapsed().as_secs_f64(),
        iterations: 0,
        dual_controls: pp,
        dual_states,
        fallback: None,
    };
    s.verify(p, 1e-7)?;
    let gap = (s.dual_objective - s.objective).abs();
    if !(s.objective.is_finite()
        && s.dual_objective.is_finite()
        && gap <= 1e-9 * (1e-12 + magnitude))
    {
        return bad(format!(
            "primal {} and dual {} objectives differ",
            s.objective, s.dual_objective
        ));
    }
    Ok(s)
}

/// Levels at breakpoint `bp` of the plan at horizon t: states (forwards from alpha) and
/// dual states (backwards from T), by column.
fn levels_at(ctx: &Ctx, plan: &Plan, t: f64, bp: usize) -> (Vec<f64>, Vec<f64>) {
    let taus = plan.taus(t);
    let mut x = ctx.x0.clone();
    for (b, tau) in plan.bases.iter().zip(&taus).take(bp) {
        for c in ctx.j..ctx.j + ctx.k {
            x[c] += b.prim[c] * tau;
        }
    }
    let mut q = ctx.qn.clone();
    for (b, tau) in plan.bases.iter().zip(&taus).skip(bp).rev() {
        for c in 0..ctx.ncol {
            if !ctx.is_state(c) {
                q[c] += b.dual[c] * tau;
            }
        }
    }
    (x, q)
}

/// Weiss's SCLP pivot: at the collision point, the states and dual states that are
/// positive there fix the sign restrictions of a rates LP (a positive state's rate is
/// free, a control whose dual state is positive is 0); its optimal basis D is the new
/// basis at the point. The simplex paths from the neighbouring bases to D join them to
/// it. Candidates only: the caller checks them.
fn sclp_pivot(ctx: &Ctx, plan: &Plan, t: f64, what: Event, wide: bool) -> Vec<Vec<Rc<Rates>>> {
    let bases = &plan.bases;
    let n = bases.len();
    // (left neighbour, right neighbour, breakpoint of the collision point).
    let (mut left, mut right, bp) = match what {
        Event::Time(q) => (q.checked_sub(1), (q + 1 < n).then_some(q + 1), q),
        Event::State(_, q) | Event::Dual(_, q) => (q.checked_sub(1), (q < n).then_some(q), q),
    };
    // Intervals of zero length next to the point collide with it: the repair spans them.
    let taus = plan.taus(t);
    let zero = 1e-9 * t.max(1.0);
    while let Some(r) = right
        && taus[r] <= zero
    {
        right = (r + 1 < n).then_some(r + 1);
    }
    while let Some(l) = left
        && taus[l] <= zero
    {
        left = l.checked_sub(1);
    }
    let (x, q) = levels_at(ctx, plan, t, bp);
    let free: Vec<bool> = (0..ctx.ncol)
        .map(|c| ctx.is_state(c) && x[c] > ctx.tol * (1.0 + t))
        .collect();
    let fixed: Vec<bool> = (0..ctx.ncol)
        .map(|c| !ctx.is_state(c) && q[c] > ctx.tol * (1.0 + t))
        .collect();
    let path_l = left.and_then(|l| rates_lp(ctx, &bases[l].basis, &free, &fixed));
    let path_r = right.and_then(|r| rates_lp(ctx, &bases[r].basis, &free, &fixed));
    // The new basis at the point, and the ways to reach it from each side: the simplex
    // path itself and every path that changes one differing column at a time through
    // valid bases.
    let mut targets: Vec<Vec<usize>> = Vec::new();
    for p in [&path_l, &path_r].into_iter().flatten() {
        if let Some(t) = p.last()
            && !targets.contains(t)
        {
            targets.push(t.clone());
        }
    }
    // The columns in play: those that differ between the neighbours, the new bases and
    // the simplex paths, and the colliding one.
    let mut universe: Vec<usize> = Vec::new();
    let mut add = |b: &[usize], other: &[usize]| {
        for &c in b
            .iter()
            .filter(|c| !other.contains(c))
            .chain(other.iter().filter(|c| !b.contains(c)))
        {
            if !universe.contains(&c) {
                universe.push(c);
            }
        }
    };
    let anchor: Vec<usize> = left
        .or(right)
        .map(|i| bases[i].basis.clone())
        .or_else(|| targets.first().cloned())
        .unwrap_or_default();
    for p in [&path_l, &path_r].into_iter().flatten() {
        for b in p {
            add(b, &anchor);
        }
    }
    for i in [left, right].into_iter().flatten() {
        add(&bases[i].basis, &anchor);
    }
    if let Event::State(c, _) | Event::Dual(c, _) = what
        && !universe.contains(&c)
    {
        universe.push(c);
    }
    // Wide: also the pivots of the sequence near the point.
    let near = if wide {
        bases[bp.saturating_sub(3)..(bp + 3).min(n)].to_vec()
    } else {
        Vec::new()
    };
    for w in near.windows(2) {
        if let Some((o, i)) = pivot(&w[0], &w[1]) {
            for c in [o, i] {
                if !universe.contains(&c) {
                    universe.push(c);
                }
            }
        }
    }
    let universe: Vec<usize> = universe
        .into_iter()
        .filter(|&c| !free[c] && !fixed[c])
        .collect();
    let mut out = Vec::new();
    for target in &targets {
        join_at(
            ctx,
            plan,
            (left, right),
            (&path_l, &path_r),
            target,
            &universe,
            &mut out,
        );
    }
    // Both neighbours: also any short valid path from one to the other.
    if let (Some(l), Some(r)) = (left, right) {
        for path in search_paths(ctx, &bases[l].basis, &bases[r].basis, &universe, 5, 40) {
            let mut v: Vec<Rc<Rates>> = bases[..=l].to_vec();
            let ok = path[..path.len() - 1]
                .iter()
                .all(|b| match ctx.rates(b.clone()) {
                    Some(x) => {
                        v.push(x);
                        true
                    }
                    None => false,
                });
            if ok {
                v.extend_from_slice(&bases[r..]);
                out.push(v);
            }
        }
    }
    out
}

/// Valid paths of at most `max_len` pivots from `from` to `to` (sorted bases; `from`
/// excluded, `to` included) that only swap columns of `universe`, shortest first, at
/// most `limit` of them.
fn search_paths(
    ctx: &Ctx,
    from: &[usize],
    to: &[usize],
    universe: &[usize],
    max_len: usize,
    limit: usize,
) -> Vec<Vec<Vec<usize>>> {
    let mut found: Vec<Vec<Vec<usize>>> = Vec::new();
    // Iterative deepening keeps the shortest paths first.
    let mut budget = 4000usize;
    for depth in 1..=max_len {
        let mut stack: Vec<(Vec<usize>, Vec<Vec<usize>>)> = vec![(from.to_vec(), Vec::new())];
        while let Some((cur, path)) = stack.pop() {
            let outs: Vec<usize> = cur
                .iter()
                .copied()
                .filter(|c| universe.contains(c))
                .collect();
            let inns: Vec<usize> = universe
                .iter()
                .copied()
                .filter(|c| !cur.contains(c))
                .collect();
            if let Some(r) = ctx.rates(cur.clone()) {
                ctx.expand(&r, &outs, &inns);
            }
            // Columns still to change bound the pivots left.
            let differ = cur.iter().filter(|c| !to.contains(c)).count();
            if differ > depth - path.len() {
                continue;
            }
            for &o in &outs {
                for &i in &inns {
                    let next = Ctx::swap(&cur, o, i);
                    if next.as_slice() == to {
                        if path.len() + 1 == depth {
                            let mut p = path.clone();
                            p.push(next);
                            found.push(p);
                            if found.len() >= limit {
                                return found;
                            }
                        }
                        continue;
                    }
                    if path.len() + 1 >= depth
                        || next.as_slice() == from
                        || path.contains(&next)
                        || budget == 0
                    {
                        continue;
                    }
                    budget -= 1;
                    if ctx.rates(next.clone()).is_some() {
                        let mut p = path.clone();
                        p.push(next.clone());
                        stack.push((next, p));
                    }
                }
            }
        }
    }
    found
}

/// The rates LP max c'u with sign restrictions: states with `free` have a free rate
/// (and must be basic), other states a rate >= 0; controls with `fixed` are 0, the
/// others >= 0. Warm-started from `start` by the primal simplex when it is primal feasible and
/// by the dual simplex when it is dual feasible (None otherwise, or when unbounded or
/// infeasible). Returns the bases visited, `start` first and the optimum last.
fn rates_lp(ctx: &Ctx, start: &[usize], free: &[bool], fixed: &[bool]) -> Option<Vec<Vec<usize>>> {
    let (m, n) = (ctx.m, ctx.ncol);
    if start.iter().any(|&c| fixed[c]) || (0..n).any(|c| free[c] && !start.contains(&c)) {
        return None;
    }
    // The revised simplex: one factorisation per pivot, columns and rows on demand.
    let mut basis = start.to_vec();
    let mut is_basic = vec![false; n];
    basis.iter().for_each(|&c| is_basic[c] = true);
    let tol = ctx.tol;
    let mut path = vec![start.to_vec()];
    let mut a = vec![0.0; m];
    for iter in 0..20 * (m + n) {
        let bland = iter > 5 * (m + n);
        let lu = ctx.factor(&basis)?;
        let beta = lu.solve(&ctx.rhs);
        let cb: Vec<f64> = basis.iter().map(|&c| ctx.cost[c]).collect();
        let y = lu.solve_t(&cb);
        let d: Vec<f64> = (0..n)
            .map(|c| {
                if is_basic[c] {
                    0.0
                } else {
                    ctx.dot_col(c, &y) - ctx.cost[c]
                }
            })
            .collect();
        let primal_bad: Vec<usize> = (0..m)
            .filter(|&r| !free[basis[r]] && beta[r] < -tol)
            .collect();
        let dual_bad: Vec<usize> = (0..n)
            .filter(|&c| !is_basic[c] && !fixed[c] && d[c] < -tol)
            .collect();
        let (r, e) = match (primal_bad.is_empty(), dual_bad.is_empty()) {
            (true, true) => return Some(path),
            (true, false) => {
                let e = if bland {
                    dual_bad[0]
                } else {
                    *dual_bad.iter().min_by(|&&a, &&b| d[a].total_cmp(&d[b]))?
                };
                a.iter_mut().for_each(|v| *v = 0.0);
                for &(r, v) in &ctx.cols[e] {
                    a[r] = v;
                }
                let col = lu.solve(&a);
                let mut leave: Option<(usize, f64)> = None;
                for r in 0..m {
                    let v = col[r];
                    if free[basis[r]] || v <= 1e-11 {
                        continue;
                    }
                    let ratio = beta[r].max(0.0) / v;
                    if leave.is_none_or(|(lr, lv)| {
                        ratio < lv - 1e-12 || (ratio <= lv + 1e-12 && basis[r] < basis[lr])
                    }) {
                        leave = Some((r, ratio));
                    }
                }
                (leave?.0, e)
            }
            (false, true) => {
                let r = if bland {
                    *primal_bad.iter().min_by_key(|&&r| basis[r])?
                } else {
                    *primal_bad
                        .iter()
                        .min_by(|&&a, &&b| beta[a].total_cmp(&beta[b]))?
                };
                let mut unit = vec![0.0; m];
                unit[r] = 1.0;
                let z = lu.solve_t(&unit);
                let mut enter: Option<(usize, f64)> = None;
                for c in 0..n {
                    if is_basic[c] || fixed[c] {
                        continue;
                    }
                    let v = ctx.dot_col(c, &z);
                    if v >= -1e-11 {
                        continue;
                    }
                    let ratio = d[c].max(0.0) / -v;
                    if enter.is_none_or(|(ec, ev)| {
                        ratio < ev - 1e-12 || (ratio <= ev + 1e-12 && c < ec)
                    }) {
                        enter = Some((c, ratio));
                    }
                }
                (r, enter?.0)
            }
            (false, false) => return None,
        };
        is_basic[basis[r]] = false;
        is_basic[e] = true;
        basis[r] = e;
        let mut b = basis.clone();
        b.sort_unstable();
        path.push(b);
    }
    None
}

/// The candidate sequences that replace what lies between `left` and `right` (indices
/// of the plan's bases; None at the ends) by a path through `target`.
fn join_at(
    ctx: &Ctx,
    plan: &Plan,
    (left, right): (Option<usize>, Option<usize>),
    (path_l, path_r): (&Option<Path>, &Option<Path>),
    target: &[usize],
    universe: &[usize],
    out: &mut Vec<Vec<Rc<Rates>>>,
) {
    let bases = &plan.bases;
    let n = bases.len();
    let prefix = left.map_or(0, |l| l + 1);
    let suffix = right.unwrap_or(n);
    let side = |from: Option<usize>, path: &Option<Vec<Vec<usize>>>| -> Vec<Vec<Vec<usize>>> {
        let Some(f) = from else {
            return vec![vec![target.to_vec()]];
        };
        let mut ways = Vec::new();
        if let Some(p) = path
            && p.last().map(Vec::as_slice) == Some(target)
        {
            ways.push(p[1..].to_vec());
        }
        for w in search_paths(ctx, &bases[f].basis, target, universe, 5, 12) {
            if !ways.contains(&w) {
                ways.push(w);
            }
        }
        ways
    };
    let lefts = side(left, path_l);
    let rights = side(right, path_r);
    for l in lefts.iter().take(12) {
        for r in rights.iter().take(12) {
            // l ends at the target; r runs from right's neighbour to the target.
            let mut middle: Vec<Vec<usize>> = l.clone();
            if right.is_some() {
                middle.extend(r.iter().rev().skip(1).cloned());
            } else if left.is_none() {
                middle = r.clone();
            }
            let mut v: Vec<Rc<Rates>> = bases[..prefix].to_vec();
            let mut ok = true;
            for b in middle {
                if v.last().is_some_and(|x| x.basis == b) {
                    continue;
                }
                match ctx.rates(b) {
                    Some(r) => v.push(r),
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            for b in &bases[suffix..] {
                if v.last().is_none_or(|x| x.basis != b.basis) {
                    v.push(b.clone());
                }
            }
            if ok {
                out.push(v);
            }
        }
    }
}
