//! The solution of a finished homotopy: breakpoints, controls, states and duals, built
//! from the plan at T and verified.

use super::*;

/// The solution of a plan at the problem's T, with its dual, verified.
pub(super) fn build(ctx: &Ctx, plan: &Plan, start: Instant) -> Result<Solution, FluidError> {
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
pub(super) fn levels_at(ctx: &Ctx, plan: &Plan, t: f64, bp: usize) -> (Vec<f64>, Vec<f64>) {
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
