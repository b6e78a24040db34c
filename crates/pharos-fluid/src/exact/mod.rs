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

mod basis;
mod build;
mod lu;
mod plan;
mod repair;

use basis::*;
use build::*;
use lu::*;
use plan::*;
use repair::*;

thread_local! {
    /// Elementary operations of the exact solve running on this thread (factorisations'
    /// row updates and scans, triangular solves, the plans' length systems and
    /// lookahead, the pivot searches): a deterministic measure of its time.
    static WORK: Cell<u64> = const { Cell::new(0) };
}

pub(super) fn add_work(ops: u64) {
    WORK.with(|w| w.set(w.get().saturating_add(ops)));
}

/// Counters of one exact solve.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ExactStats {
    /// Collisions met and repaired along the homotopy.
    pub collisions: u64,
    /// Bases factorised.
    pub factorisations: u64,
    /// Elementary operations (see [`solve_within`]).
    pub work: u64,
}

/// The exact solver; when it cannot solve `p` (an unsupported form, a collision that
/// needs a sub-problem, an answer that fails verification), the discretised LP on
/// `fallback` with the dual SCLP's bound, and the reason in [`Solution::fallback`].
pub fn solve_auto(p: &Sclp, fallback: &Grid) -> Result<Solution, FluidError> {
    solve_auto_within(p, fallback, None)
}

/// [`solve_auto`] with the exact solver held to `budget` elementary operations (see
/// [`solve_within`]); past it, [`FluidError::OverBudget`] and no LP (whose own time
/// grows as fast on the problems that exhaust the budget).
pub fn solve_auto_within(
    p: &Sclp,
    fallback: &Grid,
    budget: Option<u64>,
) -> Result<Solution, FluidError> {
    match solve_within(p, budget).map(|(s, _)| s) {
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
    solve_within(p, None)
}

/// [`solve_with_stats`] held to `budget` elementary operations: the solve counts its
/// work (each factorisation's row updates and scans, each triangular solve, each plan's
/// length system and lookahead, each pivot tried) and stops with
/// [`FluidError::OverBudget`] at the first collision past the budget. The count depends
/// only on the problem, so a budget bounds a solve's time the same way on every run
/// (4e8 operations took about a second on one core of the machine the results in
/// docs/results were measured on, from 10 to 200 functions).
pub fn solve_within(p: &Sclp, budget: Option<u64>) -> Result<(Solution, ExactStats), FluidError> {
    p.validate()?;
    WORK.with(|w| w.set(0));
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
    let mut seen: FastSet<Vec<Vec<usize>>> = FastSet::default();
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
        let work = WORK.with(Cell::get);
        if let Some(budget) = budget
            && work > budget
        {
            return Err(FluidError::OverBudget {
                work,
                budget,
                seconds: start.elapsed().as_secs_f64(),
            });
        }
    };
    s.iterations = collisions.min(u32::MAX as u64) as u32;
    let stats = ExactStats {
        collisions,
        factorisations: ctx.factorisations.get(),
        work: WORK.with(Cell::get),
    };
    Ok((s, stats))
}
