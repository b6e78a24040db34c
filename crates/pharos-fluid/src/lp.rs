//! The time-discretised LP: u constant on each interval of a grid, x linear between
//! grid points. Both sides of every constraint are then linear on each interval, so
//! holding them at the grid points holds them everywhere: the LP is a restriction of the
//! SCLP, and its optimum is a lower bound on the SCLP's maximum (an upper bound on the
//! cost of a network). The gap comes only from forcing breakpoints onto the grid.
//!
//! Variables: u_n (J) on intervals n = 1..N, and x_n (L) and the slacks s_n (K) at grid
//! points n = 0..N, with s_0 + F x_0 = alpha and
//! s_n - s_{n-1} + tau_n G u_n + F (x_n - x_{n-1}) = a tau_n; H u_n <= b; u, x, s >= 0.
//! The objective integrates exactly: sum_n (tau_n gamma + tau_n (T - mid_n) c)' u_n +
//! sum_n tau_n / 2 d' (x_{n-1} + x_n). Solved by Clarabel (interior point, sparse).

use std::time::Instant;

use clarabel::algebra::CscMatrix;
use clarabel::solver::{
    DefaultSettingsBuilder, DefaultSolver, IPSolver, SolverStatus, SupportedConeT,
};

use crate::{FluidError, Sclp, Solution};

/// Where the breakpoints of the discretisation are.
#[derive(Debug, Clone, PartialEq)]
pub enum Grid {
    /// N intervals of length T / N.
    Uniform(usize),
    /// N intervals, t_n = T (n / N)^2: dense near t = 0, where optimal plans change most.
    Dense(usize),
    /// These breakpoints (strictly increasing, from 0 to T).
    Points(Vec<f64>),
}

impl Grid {
    pub fn points(&self, t: f64) -> Result<Vec<f64>, FluidError> {
        let pts = match self {
            Grid::Uniform(n) | Grid::Dense(n) if *n == 0 => {
                return Err(FluidError::Invalid(
                    "a grid needs at least one interval".into(),
                ));
            }
            Grid::Uniform(n) => (0..=*n).map(|k| t * k as f64 / *n as f64).collect(),
            Grid::Dense(n) => (0..=*n)
                .map(|k| t * (k as f64 / *n as f64).powi(2))
                .collect(),
            Grid::Points(p) => p.clone(),
        };
        let ok = pts.len() >= 2
            && pts[0] == 0.0
            && (pts[pts.len() - 1] - t).abs() <= 1e-12 * t.max(1.0)
            && pts.windows(2).all(|w| w[1] > w[0]);
        if !ok {
            return Err(FluidError::Invalid(
                "grid points must rise strictly from 0 to T".into(),
            ));
        }
        Ok(pts)
    }

    fn label(&self) -> String {
        match self {
            Grid::Uniform(n) => format!("lp-uniform-{n}"),
            Grid::Dense(n) => format!("lp-dense-{n}"),
            Grid::Points(p) => format!("lp-points-{}", p.len().saturating_sub(1)),
        }
    }
}

/// Solve the discretised LP of `p` on `grid`, and verify the answer.
pub fn solve(p: &Sclp, grid: &Grid) -> Result<Solution, FluidError> {
    p.validate()?;
    let pts = grid.points(p.t)?;
    let s = solve_on(p, &pts, grid.label())?;
    s.verify(p, 1e-6)?;
    Ok(s)
}

/// The restriction of `p` on `grid` (a lower bound on the SCLP's maximum) together with
/// the restriction of its symmetric dual ([`Sclp::dual`]) on the same grid reversed in
/// time (the dual runs backwards), whose optimum, negated, is an upper bound: the exact
/// optimum lies in [objective, dual_objective] of the answer, whatever the grid.
pub fn solve_bracketed(p: &Sclp, grid: &Grid) -> Result<Solution, FluidError> {
    bracket(p, &p.dual(), grid).map(|(s, _)| s)
}

/// [`solve_bracketed`] with the dual `d` of `p` given, returning the dual's own solution
/// too (None when it did not solve or verify: a dual answer that does not verify bounds
/// nothing, and the bound is then infinite).
fn bracket(p: &Sclp, d: &Sclp, grid: &Grid) -> Result<(Solution, Option<Solution>), FluidError> {
    let lower = solve(p, grid)?;
    let reversed: Vec<f64> = lower.breakpoints.iter().rev().map(|t| p.t - t).collect();
    let dual = solve_on(d, &reversed, String::new())
        .and_then(|s| s.verify(d, 1e-6).map(|()| s))
        .ok();
    let s = match &dual {
        Some(dual) => Solution {
            dual_objective: -dual.objective,
            solve_s: lower.solve_s + dual.solve_s,
            iterations: lower.iterations + dual.iterations,
            ..lower
        },
        None => Solution {
            dual_objective: f64::INFINITY,
            ..lower
        },
    };
    Ok((s, dual))
}

fn solve_on(p: &Sclp, pts: &[f64], label: String) -> Result<Solution, FluidError> {
    let n = pts.len() - 1;
    let (k, j, l, i) = (p.k(), p.j(), p.l(), p.i());
    // Variable layout.
    let u0 = 0;
    let x0 = n * j;
    let s0 = x0 + (n + 1) * l;
    let vars = s0 + (n + 1) * k;
    let ui = |step: usize, q: usize| u0 + (step - 1) * j + q;
    let xi = |step: usize, q: usize| x0 + step * l + q;
    let si = |step: usize, r: usize| s0 + step * k + r;

    let (mut rows, mut cols, mut vals) = (Vec::new(), Vec::new(), Vec::new());
    let mut rhs = Vec::new();
    let mut push = |r: usize, c: usize, v: f64, rows: &mut Vec<usize>| {
        if v != 0.0 {
            rows.push(r);
            cols.push(c);
            vals.push(v);
        }
    };
    let mut row = 0;
    // Equalities.
    for r in 0..k {
        push(row, si(0, r), 1.0, &mut rows);
        for q in 0..l {
            push(row, xi(0, q), p.f[r][q], &mut rows);
        }
        rhs.push(p.alpha[r]);
        row += 1;
    }
    for step in 1..=n {
        let tau = pts[step] - pts[step - 1];
        for r in 0..k {
            push(row, si(step, r), 1.0, &mut rows);
            push(row, si(step - 1, r), -1.0, &mut rows);
            for q in 0..j {
                push(row, ui(step, q), tau * p.g[r][q], &mut rows);
            }
            for q in 0..l {
                push(row, xi(step, q), p.f[r][q], &mut rows);
                push(row, xi(step - 1, q), -p.f[r][q], &mut rows);
            }
            rhs.push(p.a[r] * tau);
            row += 1;
        }
    }
    let equalities = row;
    // H u_n <= b.
    for step in 1..=n {
        for r in 0..i {
            for q in 0..j {
                push(row, ui(step, q), p.h[r][q], &mut rows);
            }
            rhs.push(p.b[r]);
            row += 1;
        }
    }
    // Every variable >= 0.
    for v in 0..vars {
        push(row, v, -1.0, &mut rows);
        rhs.push(0.0);
        row += 1;
    }
    let a = CscMatrix::new_from_triplets(row, vars, rows, cols, vals);
    // Minimise the negated SCLP objective.
    let mut q = vec![0.0; vars];
    for step in 1..=n {
        let (t0, t1) = (pts[step - 1], pts[step]);
        let tau = t1 - t0;
        for c in 0..j {
            // The value of u_c over the interval (exact for u constant on it).
            q[ui(step, c)] -= tau * p.gamma[c] + tau * (p.t - 0.5 * (t0 + t1)) * p.c[c];
        }
        for c in 0..l {
            q[xi(step - 1, c)] -= 0.5 * tau * p.d[c];
            q[xi(step, c)] -= 0.5 * tau * p.d[c];
        }
    }
    let pmat = CscMatrix::zeros((vars, vars));
    let cones = [
        SupportedConeT::ZeroConeT(equalities),
        SupportedConeT::NonnegativeConeT(row - equalities),
    ];
    let settings = DefaultSettingsBuilder::default()
        .verbose(false)
        .max_iter(500)
        .tol_gap_abs(1e-10)
        .tol_gap_rel(1e-10)
        .tol_feas(1e-10)
        .build()
        .map_err(|e| FluidError::Solver(format!("settings: {e:?}")))?;
    let started = Instant::now();
    let mut solver = DefaultSolver::new(&pmat, &q, &a, &rhs, &cones, settings)
        .map_err(|e| FluidError::Solver(format!("setting up the LP: {e:?}")))?;
    solver.solve();
    let solve_s = started.elapsed().as_secs_f64();
    let sol = &solver.solution;
    match sol.status {
        SolverStatus::Solved | SolverStatus::AlmostSolved => {}
        other => {
            return Err(FluidError::Solver(format!(
                "the discretised LP ({} intervals) ended {other:?}",
                n
            )));
        }
    }
    let x = &sol.x;
    let out = Solution {
        method: label,
        objective: -sol.obj_val,
        dual_objective: -sol.obj_val_dual,
        breakpoints: pts.to_vec(),
        u: (1..=n)
            .map(|s| (0..j).map(|c| x[ui(s, c)].max(0.0)).collect())
            .collect(),
        x: (0..=n)
            .map(|s| (0..l).map(|c| x[xi(s, c)].max(0.0)).collect())
            .collect(),
        slack: (0..=n)
            .map(|s| (0..k).map(|r| x[si(s, r)]).collect())
            .collect(),
        solve_s,
        iterations: sol.iterations,
        dual_controls: Vec::new(),
        dual_states: Vec::new(),
        fallback: None,
    };
    Ok(out)
}

/// Add to `pts` the times at which a slack of `s` reaches zero inside an interval
/// (linear between grid points), and the middle of each interval in which a control
/// switches on or off; returns how many points were added.
fn add_events(pts: &mut Vec<f64>, s: &Solution, reversed_t: Option<f64>, eps: f64) -> usize {
    let n = s.u.len();
    let mut new = Vec::new();
    for step in 1..=n {
        let (t0, t1) = (s.breakpoints[step - 1], s.breakpoints[step]);
        for r in 0..s.slack[step].len() {
            let (a, b) = (s.slack[step - 1][r], s.slack[step][r]);
            if a > eps && b <= eps {
                new.push(t0 + (t1 - t0) * (a / (a - b)).clamp(0.0, 1.0));
            }
        }
        if step < n {
            let (u0, u1) = (&s.u[step - 1], &s.u[step]);
            if u0.iter().zip(u1).any(|(x, y)| (*x > eps) != (*y > eps)) {
                new.push(0.5 * (t0 + t1));
                new.push(0.5 * (t1 + s.breakpoints[step + 1]));
            }
        }
    }
    let before = pts.len();
    for t in new {
        let t = reversed_t.map_or(t, |total| total - t);
        let close = pts.iter().any(|p| (p - t).abs() < 1e-9 * (1.0 + t.abs()));
        if !close && t > 0.0 {
            pts.push(t);
        }
    }
    pts.sort_by(f64::total_cmp);
    pts.dedup();
    pts.len() - before
}

/// The discretised LP on a grid refined on events until the certified bracket is
/// within `tol` (relative to max(1, |objective|)): each round solves the primal and
/// dual LPs ([`solve_bracketed`]), then adds the times at which a slack of either
/// reaches zero or a control switches on or off (where exact solutions have their
/// breakpoints), and halves the longest eighth of the intervals (so that the grid keeps
/// refining where no event points). Nested grids: the bracket can only shrink, up to
/// the interior-point solver's own precision (about 1e-9 relative). Returns the answer
/// with the narrowest bracket once `tol` is reached, `rounds` are done, or three rounds
/// in a row did not narrow it.
pub fn refine(p: &Sclp, start: usize, tol: f64, rounds: usize) -> Result<Solution, FluidError> {
    p.validate()?;
    let mut pts = Grid::Uniform(start.max(1)).points(p.t)?;
    let d = p.dual();
    let started = Instant::now();
    let mut best: Option<Solution> = None;
    let mut stale = 0;
    for round in 1..=rounds.max(1) {
        let (s, dual) = bracket(p, &d, &Grid::Points(pts.clone()))?;
        let gap = s.relative_gap();
        let better = best.as_ref().is_none_or(|b| gap < b.relative_gap());
        if better {
            stale = 0;
            best = Some(Solution {
                method: format!("lp-refined-{}-round-{round}", pts.len() - 1),
                solve_s: started.elapsed().as_secs_f64(),
                ..s.clone()
            });
        } else {
            stale += 1;
        }
        if gap <= tol || stale >= 3 {
            break;
        }
        let eps = 1e-7 * (1.0 + p.alpha.iter().fold(0.0f64, |m, v| m.max(v.abs())));
        add_events(&mut pts, &s, None, eps);
        if let Some(dual) = &dual {
            add_events(&mut pts, dual, Some(p.t), eps);
        }
        let mut lens: Vec<(f64, usize)> = pts
            .windows(2)
            .enumerate()
            .map(|(w, x)| (x[1] - x[0], w))
            .collect();
        lens.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mids: Vec<f64> = lens
            .iter()
            .take((lens.len() / 8).max(1))
            .map(|(_, w)| 0.5 * (pts[*w] + pts[*w + 1]))
            .collect();
        pts.extend(mids);
        pts.sort_by(f64::total_cmp);
        pts.dedup();
    }
    let mut b = best.ok_or_else(|| FluidError::Solver("no refinement round ran".into()))?;
    b.solve_s = started.elapsed().as_secs_f64();
    Ok(b)
}
