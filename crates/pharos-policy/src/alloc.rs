//! The cross-job replica allocator of the SLO-utility autoscaler.
//!
//! Every job i gets x_i whole replicas (min_i <= x_i <= max_i, sum_i r_i x_i <= R) and, in
//! the penalty variants, an accept rate a_i. A job's value over the prediction window is
//! the mean over steps of U(L(a_i lambda_{i,t}, x_{i,t})) (times 1 - P_lin(1 - a_i) in the
//! penalty variants), where x_{i,t} keeps the current replicas for the first `cold_steps`
//! steps of a scale-up. The objectives combine the values:
//!
//! | objective | maximise |
//! |---|---|
//! | Sum, PenaltySum | sum_i w_i V_i |
//! | Fair | -(max_i V_i - min_i V_i) (spreads up to 0.05 count as 0; ties broken by the sum of values) |
//! | FairSum, PenaltyFairSum | sum_i V_i + N (1 - (max V - min V)) |
//!
//! Solvers: the separable objectives (Sum, PenaltySum) exactly by dynamic programming over
//! capacity units when the table is small, else by greedy marginal gain with a look-ahead
//! over the concave envelope of each job's value; the fairness objectives by a search over
//! the utility level every job must reach (water filling), then greedy completion.
//! [`exhaustive`] is the reference for tests.

use pharos_queueing::{LatencyModel, relaxed_utility, solver_drop_penalty, step_utility};
use serde::{Deserialize, Serialize};

/// The cluster-wide objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Objective {
    Sum,
    Fair,
    FairSum,
    PenaltySum,
    PenaltyFairSum,
}

impl Objective {
    pub fn uses_accept_rates(self) -> bool {
        matches!(self, Objective::PenaltySum | Objective::PenaltyFairSum)
    }
    pub fn fair(self) -> bool {
        matches!(
            self,
            Objective::Fair | Objective::FairSum | Objective::PenaltyFairSum
        )
    }
}

/// The utility of a predicted latency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum UtilityKind {
    /// min((SLO / L)^alpha, 1).
    Relaxed { alpha: f64 },
    /// 1 if L <= SLO else 0.
    Step,
}

impl UtilityKind {
    #[inline]
    pub fn eval(self, latency_s: f64, slo_s: f64) -> f64 {
        match self {
            UtilityKind::Relaxed { alpha } => relaxed_utility(latency_s, slo_s, alpha),
            UtilityKind::Step => step_utility(latency_s, slo_s),
        }
    }
}

/// One job of an allocation problem.
#[derive(Debug, Clone, PartialEq)]
pub struct AllocJob {
    pub weight: f64,
    pub cpus_per_replica: f64,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub slo_s: f64,
    pub percentile: f64,
    pub processing_s: f64,
    /// Predicted arrival rate at each step of the window.
    pub rates_rps: Vec<f64>,
    /// Replicas now.
    pub current: u32,
    /// Steps at the start of the window during which a scale-up has not taken effect.
    pub cold_steps: usize,
    /// Value charged per replica removed from `current` (hysteresis against churn:
    /// moving a replica pays only when it gains more than this).
    pub removal_cost: f64,
    /// Value charged per replica held (the price of capacity in utility): 0 spends
    /// capacity while it adds any value; more keeps only replicas worth their price.
    /// For the separable objectives (Sum, PenaltySum) only: the fairness objectives
    /// compare the jobs' values, which a price per replica would skew against the jobs
    /// that need more replicas: they leave it out (and the policies refuse it there).
    pub replica_cost: f64,
}

impl AllocJob {
    /// The highest predicted rate over the window (req/s; 0 for an empty window).
    pub fn peak_rps(&self) -> f64 {
        self.rates_rps.iter().copied().fold(0.0, f64::max)
    }
}

/// A whole allocation problem.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub capacity_cpus: f64,
    pub jobs: Vec<AllocJob>,
    pub objective: Objective,
    pub utility: UtilityKind,
    pub model: LatencyModel,
}

impl Problem {
    /// The vCPUs an allocation of replicas per job holds.
    pub fn cpus_used(&self, replicas: &[u32]) -> f64 {
        replicas
            .iter()
            .zip(&self.jobs)
            .map(|(x, j)| *x as f64 * j.cpus_per_replica)
            .sum()
    }
}

/// A solution: replicas and accept rates per job, and the objective they reach.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    pub replicas: Vec<u32>,
    pub accept: Vec<f64>,
    pub objective: f64,
}

/// Drop fractions the penalty variants consider (accept = 1 - drop).
const DROPS: [f64; 16] = [
    0.0, 0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9,
];

/// Spreads of utility up to this count as fair in [`Objective::Fair`].
pub const FAIR_TOLERANCE: f64 = 0.05;

/// Value gains below this per replica are not worth a replica (the shrink rule).
pub const MIN_GAIN: f64 = 1e-4;

/// Per-job values by replica count, computed on demand.
struct Values<'a> {
    p: &'a Problem,
    /// values[i][x - min_i] = (value, accept)
    memo: Vec<Vec<Option<(f64, f64)>>>,
}

impl<'a> Values<'a> {
    fn new(p: &'a Problem) -> Self {
        let memo = p
            .jobs
            .iter()
            .map(|j| vec![None; (j.max_replicas.saturating_sub(j.min_replicas) + 1) as usize])
            .collect();
        Values { p, memo }
    }

    /// The utility over the window of job i on x replicas accepting a fraction `accept`.
    fn utility(&self, i: usize, x: u32, accept: f64) -> f64 {
        let j = &self.p.jobs[i];
        let n = j.rates_rps.len().max(1);
        let mut sum = 0.0;
        for (t, rate) in j.rates_rps.iter().enumerate() {
            let xt = if t < j.cold_steps && x > j.current {
                j.current
            } else {
                x
            };
            let l = self
                .p
                .model
                .latency_s(rate * accept, xt as f64, j.processing_s, j.percentile);
            sum += self.p.utility.eval(l, j.slo_s);
        }
        if j.rates_rps.is_empty() {
            1.0
        } else {
            sum / n as f64
        }
    }

    /// (value, best accept rate) of job i on x replicas.
    fn get(&mut self, i: usize, x: u32) -> (f64, f64) {
        let j = &self.p.jobs[i];
        let k = (x - j.min_replicas) as usize;
        if let Some(v) = self.memo[i][k] {
            return v;
        }
        let v = if self.p.objective.uses_accept_rates() {
            let mut best = (f64::NEG_INFINITY, 1.0);
            for d in DROPS {
                let a = 1.0 - d;
                let v = self.utility(i, x, a) * (1.0 - solver_drop_penalty(d));
                if v > best.0 + 1e-12 {
                    best = (v, a);
                }
                if best.0 >= 1.0 - 1e-12 {
                    break;
                }
            }
            best
        } else {
            (self.utility(i, x, 1.0), 1.0)
        };
        let price = if self.p.objective.fair() {
            0.0
        } else {
            j.replica_cost * x as f64
        };
        let v = (
            v.0 - j.removal_cost * j.current.saturating_sub(x) as f64 - price,
            v.1,
        );
        self.memo[i][k] = Some(v);
        v
    }

    fn value(&mut self, i: usize, x: u32) -> f64 {
        self.get(i, x).0
    }
}

/// The objective of an allocation (replicas per job; accept rates chosen per job as the
/// allocator would).
pub fn evaluate(p: &Problem, replicas: &[u32]) -> f64 {
    let mut v = Values::new(p);
    objective_of(p, &mut v, replicas)
}

fn objective_of(p: &Problem, v: &mut Values<'_>, x: &[u32]) -> f64 {
    let vals: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, xi)| v.value(i, *xi))
        .collect();
    combine(p, &vals)
}

fn combine(p: &Problem, vals: &[f64]) -> f64 {
    let n = vals.len() as f64;
    let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = vals.iter().copied().fold(f64::INFINITY, f64::min);
    let spread = if vals.is_empty() { 0.0 } else { max - min };
    match p.objective {
        Objective::Sum | Objective::PenaltySum => {
            vals.iter().zip(&p.jobs).map(|(v, j)| v * j.weight).sum()
        }
        // With whole replicas utilities can rarely be made equal: spreads up to
        // FAIR_TOLERANCE count as equal, and ties are broken by the total value (a
        // negligible bonus), so an equal split prefers everyone high to everyone low.
        Objective::Fair => {
            -(spread - FAIR_TOLERANCE).max(0.0) + 1e-6 * vals.iter().sum::<f64>() / n.max(1.0)
        }
        Objective::FairSum | Objective::PenaltyFairSum => {
            vals.iter().sum::<f64>() + n * (1.0 - spread)
        }
    }
}

/// Why a problem has no solution.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the minimum replicas of all jobs need {need} vCPUs, more than the capacity {capacity}")]
pub struct Infeasible {
    pub need: f64,
    pub capacity: f64,
}

fn check(p: &Problem) -> Result<(), Infeasible> {
    let need: f64 = p
        .jobs
        .iter()
        .map(|j| j.min_replicas as f64 * j.cpus_per_replica)
        .sum();
    if need > p.capacity_cpus + 1e-9 {
        return Err(Infeasible {
            need,
            capacity: p.capacity_cpus,
        });
    }
    Ok(())
}

/// Solve a problem with the best solver for its objective and size.
pub fn solve(p: &Problem) -> Result<Allocation, Infeasible> {
    solve_with(p, true)
}

/// [`solve`], with or without the shrink stage (removing replicas that add less than
/// [`MIN_GAIN`] of objective each).
pub fn solve_with(p: &Problem, shrink_stage: bool) -> Result<Allocation, Infeasible> {
    check(p)?;
    let mut v = Values::new(p);
    let mut x = if p.objective.fair() {
        match solve_fair_exact(p, &mut v) {
            Some(x) => x,
            None => solve_fair(p, &mut v),
        }
    } else if dp_size(p).is_some_and(|cells| cells <= 4_000_000) {
        solve_dp(p, &mut v)
    } else {
        greedy(
            p,
            &mut v,
            p.jobs.iter().map(|j| j.min_replicas).collect(),
            &|_, _| true,
        )
    };
    if shrink_stage {
        shrink(p, &mut v, &mut x);
    }
    Ok(finish(p, &mut v, x))
}

/// The greedy solver alone (what [`solve`] uses for large separable problems).
pub fn solve_greedy(p: &Problem) -> Result<Allocation, Infeasible> {
    check(p)?;
    let mut v = Values::new(p);
    let x = greedy(
        p,
        &mut v,
        p.jobs.iter().map(|j| j.min_replicas).collect(),
        &|_, _| true,
    );
    Ok(finish(p, &mut v, x))
}

/// The exact dynamic program for a separable objective (a reference; `None` when the
/// objective is not separable or replica sizes are not whole vCPUs).
pub fn solve_exact_dp(p: &Problem) -> Option<Result<Allocation, Infeasible>> {
    if p.objective.fair() || dp_size(p).is_none() {
        return None;
    }
    Some(check(p).map(|()| {
        let mut v = Values::new(p);
        let x = solve_dp(p, &mut v);
        finish(p, &mut v, x)
    }))
}

fn finish(p: &Problem, v: &mut Values<'_>, x: Vec<u32>) -> Allocation {
    let accept = x
        .iter()
        .enumerate()
        .map(|(i, xi)| v.get(i, *xi).1)
        .collect();
    let objective = objective_of(p, v, &x);
    Allocation {
        replicas: x,
        accept,
        objective,
    }
}

/// Capacity units of a DP over the problem (None when replica sizes are not whole
/// vCPUs), times the table's other dimensions.
fn dp_size(p: &Problem) -> Option<usize> {
    if p.jobs
        .iter()
        .any(|j| j.cpus_per_replica.fract() != 0.0 || j.cpus_per_replica < 1.0)
    {
        return None;
    }
    let cap = p.capacity_cpus.floor() as usize;
    let span: usize = p
        .jobs
        .iter()
        .map(|j| (j.max_replicas - j.min_replicas) as usize + 1)
        .max()
        .unwrap_or(1)
        .min(cap + 1);
    Some(p.jobs.len() * (cap + 1) * span)
}

/// Exact maximisation of a separable objective by dynamic programming over the spare
/// capacity (whole vCPUs) left after every job's minimum.
fn solve_dp(p: &Problem, v: &mut Values<'_>) -> Vec<u32> {
    let lo: Vec<u32> = p.jobs.iter().map(|j| j.min_replicas).collect();
    let hi: Vec<u32> = p.jobs.iter().map(|j| j.max_replicas).collect();
    dp_bounded(p, v, &lo, &hi, true).expect("the minimums fit (checked)")
}

/// Maximise sum_i w_i V_i(x_i) (unweighted when `weighted` is false) over lo_i <= x_i <=
/// hi_i within the capacity, by dynamic programming over whole vCPUs; `None` when the
/// lower bounds do not fit. Replica sizes must be whole vCPUs.
fn dp_bounded(
    p: &Problem,
    v: &mut Values<'_>,
    lo: &[u32],
    hi: &[u32],
    weighted: bool,
) -> Option<Vec<u32>> {
    let n = p.jobs.len();
    let base = p.cpus_used(lo);
    if base > p.capacity_cpus + 1e-9 {
        return None;
    }
    let spare = (p.capacity_cpus - base + 1e-9).floor().max(0.0) as usize;
    // best[c] = best total value of the jobs so far using at most c spare vCPUs.
    let mut best = vec![0.0f64; spare + 1];
    let mut choice: Vec<Vec<u32>> = Vec::with_capacity(n);
    for i in 0..n {
        let j = &p.jobs[i];
        let r = j.cpus_per_replica as usize;
        let w = if weighted { j.weight } else { 1.0 };
        let extra_max = (hi[i].saturating_sub(lo[i]) as usize).min(spare / r.max(1));
        let vals: Vec<f64> = (0..=extra_max)
            .map(|e| w * v.value(i, lo[i] + e as u32))
            .collect();
        let mut next = vec![f64::NEG_INFINITY; spare + 1];
        let mut pick = vec![0u32; spare + 1];
        for c in 0..=spare {
            for (e, val) in vals.iter().enumerate() {
                let used = e * r;
                if used > c {
                    break;
                }
                // Strictly better only: ties keep fewer replicas.
                let cand = best[c - used] + val;
                if cand > next[c] + 1e-12 {
                    next[c] = cand;
                    pick[c] = e as u32;
                }
            }
        }
        best = next;
        choice.push(pick);
    }
    let mut x = vec![0u32; n];
    let mut c = spare;
    for i in (0..n).rev() {
        let e = choice[i][c];
        x[i] = lo[i] + e;
        c -= e as usize * p.jobs[i].cpus_per_replica as usize;
    }
    Some(x)
}

/// The fairness objectives exactly, when the jobs' values take few distinct levels: for
/// every pair of levels (m, M), m <= M, every job is held between the fewest replicas
/// reaching m and the most staying at or below M, and the sum of values is maximised by
/// dynamic programming; the best objective over all pairs wins. `None` when there are
/// too many levels or replica sizes are not whole vCPUs.
fn solve_fair_exact(p: &Problem, v: &mut Values<'_>) -> Option<Vec<u32>> {
    const MAX_LEVELS: usize = 64;
    if dp_size(p)? > 200_000 {
        return None;
    }
    let mut levels: Vec<f64> = Vec::new();
    for (i, j) in p.jobs.iter().enumerate() {
        for x in j.min_replicas..=j.max_replicas {
            levels.push(v.value(i, x));
            if levels.len() > 4 * MAX_LEVELS * p.jobs.len() {
                return None;
            }
        }
    }
    levels.sort_by(f64::total_cmp);
    levels.dedup_by(|a, b| (*a - *b).abs() < 1e-12);
    if levels.len() > MAX_LEVELS {
        return None;
    }
    let n = p.jobs.len();
    let mut best: Option<(f64, Vec<u32>)> = None;
    for (a, &m) in levels.iter().enumerate() {
        let lo: Vec<u32> = (0..n).map(|i| reach(p, v, i, m)).collect();
        if (0..n).any(|i| v.value(i, lo[i]) < m - 1e-12) {
            continue;
        }
        for &big_m in &levels[a..] {
            let hi: Option<Vec<u32>> = (0..n)
                .map(|i| {
                    let j = &p.jobs[i];
                    let mut c = lo[i];
                    if v.value(i, c) > big_m + 1e-12 {
                        return None;
                    }
                    while c < j.max_replicas && v.value(i, c + 1) <= big_m + 1e-12 {
                        c += 1;
                    }
                    Some(c)
                })
                .collect();
            let Some(hi) = hi else { continue };
            let Some(x) = dp_bounded(p, v, &lo, &hi, false) else {
                continue;
            };
            let o = objective_of(p, v, &x);
            if best.as_ref().is_none_or(|(b, _)| o > *b + 1e-12) {
                best = Some((o, x));
            }
        }
    }
    best.map(|(_, x)| x)
}

/// Remove replicas whose removal costs less than [`MIN_GAIN`] of objective each.
fn shrink(p: &Problem, v: &mut Values<'_>, x: &mut [u32]) {
    if !p.objective.fair() {
        // Separable: a replica's worth is its job's own value change.
        for (i, xi) in x.iter_mut().enumerate() {
            let j = &p.jobs[i];
            while *xi > j.min_replicas
                && j.weight * (v.value(i, *xi) - v.value(i, *xi - 1)) < MIN_GAIN
            {
                *xi -= 1;
            }
        }
        return;
    }
    let mut cur = objective_of(p, v, x);
    for i in 0..x.len() {
        while x[i] > p.jobs[i].min_replicas {
            x[i] -= 1;
            let o = objective_of(p, v, x);
            if cur - o < MIN_GAIN {
                cur = o;
            } else {
                x[i] += 1;
                break;
            }
        }
    }
}

/// Greedy marginal gain from `x`: repeatedly give replicas to the job whose next
/// 1..K replicas add the most value per vCPU, while the gain per replica is at least
/// [`MIN_GAIN`], the capacity lasts and `allowed(job, new_x)` holds.
fn greedy(
    p: &Problem,
    v: &mut Values<'_>,
    mut x: Vec<u32>,
    allowed: &dyn Fn(usize, u32) -> bool,
) -> Vec<u32> {
    use std::cmp::Ordering;
    use std::collections::BinaryHeap;
    const LOOKAHEAD: u32 = 6;
    #[derive(PartialEq)]
    struct Cand(f64, usize, u32, u32); // (gain per vCPU, job, steps, x at the time)
    impl Eq for Cand {}
    impl PartialOrd for Cand {
        fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
            Some(self.cmp(o))
        }
    }
    impl Ord for Cand {
        fn cmp(&self, o: &Self) -> Ordering {
            self.0.total_cmp(&o.0).then_with(|| o.1.cmp(&self.1))
        }
    }
    let mut left = p.capacity_cpus - p.cpus_used(&x);
    let best_step = |v: &mut Values<'_>, i: usize, xi: u32, left: f64| -> Option<Cand> {
        let j = &p.jobs[i];
        let base = v.value(i, xi);
        let mut best: Option<Cand> = None;
        for s in 1..=LOOKAHEAD {
            let nx = xi + s;
            if nx > j.max_replicas || s as f64 * j.cpus_per_replica > left + 1e-9 || !allowed(i, nx)
            {
                break;
            }
            let gain = j.weight * (v.value(i, nx) - base);
            if gain >= MIN_GAIN * s as f64 {
                let per = gain / (s as f64 * j.cpus_per_replica);
                if best.as_ref().is_none_or(|b| per > b.0 + 1e-15) {
                    best = Some(Cand(per, i, s, xi));
                }
            }
            if v.value(i, nx) >= 1.0 - 1e-12 {
                break;
            }
        }
        best
    };
    let mut heap = BinaryHeap::new();
    for (i, xi) in x.iter().enumerate() {
        if let Some(c) = best_step(v, i, *xi, left) {
            heap.push(c);
        }
    }
    while let Some(Cand(_, i, s, at)) = heap.pop() {
        if at != x[i] {
            continue; // stale
        }
        let cost = s as f64 * p.jobs[i].cpus_per_replica;
        if cost > left + 1e-9 {
            if let Some(c) = best_step(v, i, x[i], left) {
                heap.push(c);
            }
            continue;
        }
        x[i] += s;
        left -= cost;
        if let Some(c) = best_step(v, i, x[i], left) {
            heap.push(c);
        }
    }
    x
}

/// Fewest replicas (from the minimum, up to the maximum) whose value reaches `level`.
fn reach(p: &Problem, v: &mut Values<'_>, i: usize, level: f64) -> u32 {
    let j = &p.jobs[i];
    let mut x = j.min_replicas;
    while x < j.max_replicas && v.value(i, x) < level - 1e-12 {
        x += 1;
    }
    x
}

/// The fairness objectives when there are too many levels to pair them all: for each
/// candidate lower level m (every distinct value when there are at most 512, else a grid),
/// every job is held at or above the fewest replicas reaching m, the upper level M is the
/// highest value those floors give (or one of the next three levels above it), the sum
/// of values is maximised within [floor, cap] (dynamic programming, or greedy for large
/// problems), and the best objective wins; then a local search polishes it.
fn solve_fair(p: &Problem, v: &mut Values<'_>) -> Vec<u32> {
    let n = p.jobs.len();
    let mins: Vec<u32> = p.jobs.iter().map(|j| j.min_replicas).collect();
    let mut best_x = mins.clone();
    let mut best_o = objective_of(p, v, &mins);
    let use_dp = dp_size(p).is_some_and(|c| c <= 20_000);
    // Candidate levels.
    let mut levels: Vec<f64> = Vec::new();
    let mut many = false;
    'collect: for (i, j) in p.jobs.iter().enumerate() {
        for x in j.min_replicas..=j.max_replicas {
            if levels.len() >= 4096 {
                many = true;
                break 'collect;
            }
            levels.push(v.value(i, x));
        }
    }
    levels.sort_by(f64::total_cmp);
    levels.dedup_by(|a, b| (*a - *b).abs() < 1e-12);
    if many || levels.len() > 512 {
        let top = levels.last().copied().unwrap_or(1.0).max(1.0);
        levels = (0..=64).map(|k| top * k as f64 / 64.0).collect();
    }
    for &m in &levels {
        let lo: Vec<u32> = (0..n).map(|i| reach(p, v, i, m)).collect();
        if p.cpus_used(&lo) > p.capacity_cpus + 1e-9 {
            continue;
        }
        let top = (0..n)
            .map(|i| v.value(i, lo[i]))
            .fold(f64::NEG_INFINITY, f64::max);
        let above = levels.partition_point(|l| *l <= top + 1e-12);
        let mut uppers = vec![top];
        uppers.extend(levels[above..].iter().take(3).copied());
        for big_m in uppers {
            let hi: Vec<u32> = (0..n)
                .map(|i| {
                    let mut c = lo[i];
                    while c < p.jobs[i].max_replicas && v.value(i, c + 1) <= big_m + 1e-12 {
                        c += 1;
                    }
                    c
                })
                .collect();
            let x = if use_dp {
                match dp_bounded(p, v, &lo, &hi, false) {
                    Some(x) => x,
                    None => continue,
                }
            } else {
                greedy_sum(p, v, lo.clone(), &hi)
            };
            let o = objective_of(p, v, &x);
            if o > best_o + 1e-12 {
                best_o = o;
                best_x = x;
            }
        }
    }
    improve(p, v, &mut best_x);
    best_x
}

/// Local search on the whole objective: apply the best single-replica addition, or (for
/// up to 64 jobs) the best move of one replica between two jobs, while it improves the
/// objective by more than [`MIN_GAIN`].
fn improve(p: &Problem, v: &mut Values<'_>, x: &mut [u32]) {
    let n = x.len();
    let cpus = |i: usize| p.jobs[i].cpus_per_replica;
    let mut left = p.capacity_cpus
        - x.iter()
            .enumerate()
            .map(|(i, xi)| *xi as f64 * cpus(i))
            .sum::<f64>();
    let mut cur = objective_of(p, v, x);
    for _ in 0..10 * n.max(1) {
        let mut best: Option<(f64, Option<usize>, usize)> = None; // (objective, from, to)
        for to in 0..n {
            if x[to] >= p.jobs[to].max_replicas {
                continue;
            }
            if cpus(to) <= left + 1e-9 {
                x[to] += 1;
                let o = objective_of(p, v, x);
                x[to] -= 1;
                if best.as_ref().is_none_or(|b| o > b.0) {
                    best = Some((o, None, to));
                }
            }
            if n <= 64 {
                for from in 0..n {
                    if from == to
                        || x[from] <= p.jobs[from].min_replicas
                        || cpus(to) > left + cpus(from) + 1e-9
                    {
                        continue;
                    }
                    x[to] += 1;
                    x[from] -= 1;
                    let o = objective_of(p, v, x);
                    x[to] -= 1;
                    x[from] += 1;
                    if best.as_ref().is_none_or(|b| o > b.0) {
                        best = Some((o, Some(from), to));
                    }
                }
            }
        }
        match best {
            Some((o, from, to)) if o > cur + MIN_GAIN => {
                x[to] += 1;
                left -= cpus(to);
                if let Some(f) = from {
                    x[f] -= 1;
                    left += cpus(f);
                }
                cur = o;
            }
            _ => break,
        }
    }
}

/// Greedy on the plain sum of values within per-job caps (used inside the fairness
/// search, where the spread is held by the caps).
fn greedy_sum(p: &Problem, v: &mut Values<'_>, x: Vec<u32>, caps: &[u32]) -> Vec<u32> {
    greedy(p, v, x, &|i, nx| nx <= caps[i])
}

/// Exhaustive search over all allocations (the reference for tests; tiny problems only).
pub fn exhaustive(p: &Problem) -> Result<Allocation, Infeasible> {
    check(p)?;
    let mut v = Values::new(p);
    let n = p.jobs.len();
    let mut x: Vec<u32> = p.jobs.iter().map(|j| j.min_replicas).collect();
    let mut best: Option<(f64, Vec<u32>)> = None;
    loop {
        if p.cpus_used(&x) <= p.capacity_cpus + 1e-9 {
            let o = objective_of(p, &mut v, &x);
            if best.as_ref().is_none_or(|(b, _)| o > *b + 1e-12) {
                best = Some((o, x.clone()));
            }
        }
        // Next combination (odometer).
        let mut k = 0;
        loop {
            if k == n {
                let (_, bx) = best.expect("the minimum allocation fits");
                return Ok(finish(p, &mut v, bx));
            }
            if x[k] < p.jobs[k].max_replicas {
                x[k] += 1;
                break;
            }
            x[k] = p.jobs[k].min_replicas;
            k += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic generator for random instances.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn random_problem(rng: &mut Lcg, objective: Objective) -> Problem {
        let n = 2 + (rng.next() * 3.0) as usize;
        let jobs: Vec<AllocJob> = (0..n)
            .map(|_| {
                let p = 0.05 + rng.next() * 0.2;
                let steps = 1 + (rng.next() * 4.0) as usize;
                AllocJob {
                    weight: if rng.next() < 0.3 { 2.0 } else { 1.0 },
                    cpus_per_replica: if rng.next() < 0.3 { 2.0 } else { 1.0 },
                    min_replicas: 1,
                    max_replicas: 2 + (rng.next() * 4.0) as u32,
                    slo_s: p * (1.5 + rng.next() * 3.0),
                    percentile: 99.0,
                    processing_s: p,
                    rates_rps: (0..steps).map(|_| rng.next() * 4.0 / p).collect(),
                    current: 1 + (rng.next() * 3.0) as u32,
                    cold_steps: (rng.next() * 2.0) as usize,
                    removal_cost: if rng.next() < 0.3 { 0.02 } else { 0.0 },
                    replica_cost: 0.0,
                }
            })
            .collect();
        let need: f64 = jobs.iter().map(|j| j.cpus_per_replica).sum();
        Problem {
            capacity_cpus: need + (rng.next() * 10.0).floor(),
            jobs,
            objective,
            utility: if rng.next() < 0.2 {
                UtilityKind::Step
            } else {
                UtilityKind::Relaxed { alpha: 1.0 }
            },
            model: if rng.next() < 0.3 {
                LatencyModel::UpperBound
            } else {
                LatencyModel::MdcHalfMmc
            },
        }
    }

    fn feasible(p: &Problem, a: &Allocation) {
        let used = p.cpus_used(&a.replicas);
        assert!(
            used <= p.capacity_cpus + 1e-9,
            "capacity exceeded: {used} > {}",
            p.capacity_cpus
        );
        for (x, j) in a.replicas.iter().zip(&p.jobs) {
            assert!(*x >= j.min_replicas.max(1) && *x <= j.max_replicas);
        }
        for a in &a.accept {
            assert!((0.0..=1.0).contains(a));
        }
    }

    #[test]
    fn matches_exhaustive_search_on_small_random_instances() {
        let mut rng = Lcg(7);
        for objective in [
            Objective::Sum,
            Objective::PenaltySum,
            Objective::FairSum,
            Objective::PenaltyFairSum,
            Objective::Fair,
        ] {
            let (mut worst, mut exact) = (0.0f64, 0);
            for case in 0..150 {
                let p = random_problem(&mut rng, objective);
                let got = solve(&p).unwrap();
                let want = exhaustive(&p).unwrap();
                feasible(&p, &got);
                assert!((got.objective - evaluate(&p, &got.replicas)).abs() < 1e-9);
                // The shrink rule may give up less than MIN_GAIN per replica it saves.
                let replicas: u32 = want.replicas.iter().sum();
                let gap = want.objective - got.objective;
                assert!(
                    gap <= MIN_GAIN * replicas as f64 + 1e-9,
                    "{objective:?} case {case}: {} < exhaustive {} ({:?} vs {:?})",
                    got.objective,
                    want.objective,
                    got.replicas,
                    want.replicas
                );
                worst = worst.max(gap);
                exact += usize::from(gap <= 1e-9);
            }
            eprintln!("{objective:?}: {exact}/150 exactly optimal, worst gap {worst:.2e}");
        }
    }

    #[test]
    fn the_fairness_heuristic_is_near_the_optimum() {
        let mut rng = Lcg(5);
        let mut worst = 0.0f64;
        for objective in [Objective::FairSum, Objective::PenaltyFairSum] {
            for _ in 0..150 {
                let p = random_problem(&mut rng, objective);
                let mut v = Values::new(&p);
                let x = solve_fair(&p, &mut v);
                let got = objective_of(&p, &mut v, &x);
                let want = exhaustive(&p).unwrap().objective;
                let rel = (want - got) / want.abs().max(1e-9);
                worst = worst.max(rel);
            }
        }
        eprintln!("fairness heuristic: worst relative gap {worst:.4}");
        assert!(worst <= 0.02, "{worst}");
    }

    #[test]
    fn greedy_is_near_the_dp_optimum_on_larger_instances() {
        let mut rng = Lcg(11);
        for _ in 0..30 {
            let mut p = random_problem(&mut rng, Objective::Sum);
            for _ in 0..20 {
                let extra = random_problem(&mut rng, Objective::Sum);
                p.jobs.extend(extra.jobs);
            }
            p.capacity_cpus = p.jobs.iter().map(|j| j.cpus_per_replica).sum::<f64>() * 2.5;
            let mut v = Values::new(&p);
            let dp = solve_dp(&p, &mut v);
            let gr = greedy(
                &p,
                &mut v,
                p.jobs.iter().map(|j| j.min_replicas).collect(),
                &|_, _| true,
            );
            let (od, og) = (evaluate(&p, &dp), evaluate(&p, &gr));
            assert!(og >= od - 0.01 * od.abs() - 1e-9, "greedy {og} vs dp {od}");
        }
    }

    #[test]
    fn dropping_is_a_real_lever() {
        // One replica of 100 ms, offered 12/s (rho 1.2), a 300 ms SLO: accepting
        // everything overloads it; dropping some of the load gives a better value.
        let job = AllocJob {
            weight: 1.0,
            cpus_per_replica: 1.0,
            min_replicas: 1,
            max_replicas: 1,
            slo_s: 0.3,
            percentile: 99.0,
            processing_s: 0.1,
            rates_rps: vec![12.0],
            current: 1,
            cold_steps: 0,
            removal_cost: 0.0,
            replica_cost: 0.0,
        };
        let mut p = Problem {
            capacity_cpus: 1.0,
            jobs: vec![job],
            objective: Objective::PenaltySum,
            utility: UtilityKind::Relaxed { alpha: 1.0 },
            model: LatencyModel::MdcHalfMmc,
        };
        let a = solve(&p).unwrap();
        assert!(a.accept[0] < 1.0, "{a:?}");
        p.objective = Objective::Sum;
        let b = solve(&p).unwrap();
        assert!(
            a.objective > b.objective,
            "{} vs {}",
            a.objective,
            b.objective
        );
        assert_eq!(b.accept[0], 1.0);
    }

    #[test]
    fn infeasible_minimums_are_an_error() {
        let mut rng = Lcg(3);
        let mut p = random_problem(&mut rng, Objective::Sum);
        p.capacity_cpus = 0.5;
        assert!(solve(&p).is_err());
    }
}
