//! Autoscalers of function graphs behind the [`pharos_core::GraphPolicy`] seam.
//!
//! - [`FluidGraph`] (`fluid`): the fluid-optimal autoscaler. Every `interval_s` it
//!   observes each function's queue (waiting + in service) and the apps' recent arrival
//!   rates, builds the SCLP of the fluid model over `horizon_s` (holding cost for the
//!   time requests spend in the system, a cost per resource-second, the pool's capacity
//!   and each function's most replicas), solves it (the exact solver, the discretised LP
//!   when that cannot; past `max_solver_work` operations - a deterministic bound on a
//!   decision's time - the flow rule: each function sized for its inflow plus its
//!   queue drained within one interval), and turns the plan's mean resources over the
//!   next interval into replicas and resources per replica, provisioned for
//!   `target_utilization`, repaired to fit the pool. Only the first interval of a plan is used (receding horizon), so
//!   the end-of-horizon artefact (the plan stops serving when the remaining benefit is
//!   below the resource cost) stays out of what runs.
//! - [`PerFunction`]: any inference autoscaler (`hpa`, `kpa`, ...) applied to each
//!   function independently, each function seen as a job whose replicas have the
//!   function's fixed size.

use pharos_core::{Graph, GraphDecision, GraphPolicy, GraphView, InferencePolicy};
use pharos_fluid::Sclp;
use pharos_fluid::lp::Grid;
use serde::{Deserialize, Serialize};

use crate::PolicyError;

/// `fluid`: parameters of [`FluidGraph`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FluidGraphParams {
    /// Seconds between decisions (the part of each plan that runs).
    pub interval_s: f64,
    /// The plan's horizon.
    pub horizon_s: f64,
    /// Cost of one request spending one second in the system.
    pub holding_cost: f64,
    /// Cost of one unit of resource held for one second.
    pub resource_cost: f64,
    /// Plans are provisioned so that replicas run at this utilisation.
    pub target_utilization: f64,
    /// Arrival rates are measured over this window.
    pub rate_window_s: f64,
    /// Intervals of the discretised LP, when it answers (dense near the start).
    pub lp_intervals: usize,
    /// Add the timeout as a state bound: x_j <= inflow_j x timeout_j (Little's law; at
    /// least the current queue). The exact solver does not take these bounds with a
    /// resource cost (they need a dual impulse at T), so plans come from the LP.
    pub timeout_bound: bool,
    /// The exact solver's budget per decision, in elementary operations (about 4e8 a
    /// second on one core here; see `pharos_fluid::exact::solve_within`); past it the
    /// decision takes the flow rule instead. Default: 2e8 x `interval_s` (a decision
    /// then stays under about half its interval here, whatever the graph's state).
    /// Counted, not timed, so that simulated and live decisions agree.
    pub max_solver_work: Option<u64>,
}

impl Default for FluidGraphParams {
    fn default() -> Self {
        Self {
            interval_s: 10.0,
            horizon_s: 120.0,
            holding_cost: 1.0,
            resource_cost: 0.01,
            target_utilization: 0.8,
            rate_window_s: 30.0,
            lp_intervals: 40,
            timeout_bound: false,
            max_solver_work: None,
        }
    }
}

impl FluidGraphParams {
    pub fn check(&self) -> Result<(), PolicyError> {
        let bad = |p: String| PolicyError::BadParams {
            name: "fluid".into(),
            problem: p,
        };
        for (f, v) in [
            ("interval_s", self.interval_s),
            ("horizon_s", self.horizon_s),
            ("rate_window_s", self.rate_window_s),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(format!("{f} must be > 0, got {v}")));
            }
        }
        if self.horizon_s < self.interval_s {
            return Err(bad("horizon_s must be at least interval_s".into()));
        }
        for (f, v) in [
            ("holding_cost", self.holding_cost),
            ("resource_cost", self.resource_cost),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad(format!("{f} must be >= 0, got {v}")));
            }
        }
        if !(self.target_utilization > 0.0 && self.target_utilization <= 1.0) {
            return Err(bad("target_utilization must be in (0, 1]".into()));
        }
        if self.lp_intervals == 0 {
            return Err(bad("lp_intervals must be at least 1".into()));
        }
        if self.max_solver_work == Some(0) {
            return Err(bad("max_solver_work must be at least 1".into()));
        }
        Ok(())
    }

    /// The exact solver's budget per decision.
    pub fn solver_budget(&self) -> u64 {
        self.max_solver_work
            .unwrap_or((2e8 * self.interval_s).clamp(1.0, u64::MAX as f64) as u64)
    }
}

/// What the last plan was and how it was solved (for reports and tests).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanInfo {
    /// Mean resource per function over the first interval.
    pub resources: Vec<f64>,
    /// `exact-N`, the LP's method when the exact solver fell back, or `flow-rule` when
    /// the exact solver went over its budget.
    pub method: String,
    pub fell_back: bool,
    pub solve_s: f64,
}

/// The fluid-optimal receding-horizon autoscaler (see the module docs).
#[derive(Debug, Clone)]
pub struct FluidGraph {
    params: FluidGraphParams,
    /// (time, cumulative external arrivals per app), oldest first.
    seen: Vec<(f64, Vec<u64>)>,
    pub last: PlanInfo,
    /// Plans solved, how many fell back to the LP, and how many to the flow rule (the
    /// exact solver over its budget).
    pub plans: u64,
    pub fallbacks: u64,
    pub over_budget: u64,
}

impl FluidGraph {
    pub fn new(params: FluidGraphParams) -> Self {
        Self {
            params,
            seen: Vec::new(),
            last: PlanInfo::default(),
            plans: 0,
            fallbacks: 0,
            over_budget: 0,
        }
    }

    /// External arrival rate per app over the rate window (requests per second).
    fn rates(&mut self, view: &GraphView<'_>) -> Vec<f64> {
        let now = view.cluster.now_s;
        self.seen.push((now, view.external_arrivals.to_vec()));
        let from = now - self.params.rate_window_s;
        while self.seen.len() > 2 && self.seen[1].0 <= from {
            self.seen.remove(0);
        }
        let (t0, c0) = &self.seen[0];
        let span = now - t0;
        if span <= 0.0 {
            return vec![0.0; view.external_arrivals.len()];
        }
        view.external_arrivals
            .iter()
            .zip(c0)
            .map(|(c, c0)| (c - c0) as f64 / span)
            .collect()
    }

    /// The SCLP of the fluid model from queues `x0` and entry rates `lambda` (per
    /// function), with u in resource units.
    pub fn sclp(&self, view: &GraphView<'_>, x0: &[f64], lambda: &[f64]) -> Sclp {
        let g = view.graph;
        let n = g.functions.len();
        let mut gm = vec![vec![0.0; n]; n];
        for (j, f) in g.functions.iter().enumerate() {
            gm[j][j] += f.mu;
            for (k, p) in f.out_flows() {
                gm[k][j] -= p * f.mu;
            }
        }
        let h = vec![self.params.holding_cost; n];
        let c: Vec<f64> = (0..n)
            .map(|j| (0..n).map(|k| gm[k][j] * h[k]).sum())
            .collect();
        // The pool, then each function's most replicas at the largest size where that
        // binds before the pool does.
        let mut hm = vec![vec![1.0; n]];
        let mut b = vec![view.cluster.capacity_cpus];
        for (j, f) in g.functions.iter().enumerate() {
            if f.max_replicas as f64 * f.resource[1] >= view.cluster.capacity_cpus {
                continue;
            }
            let mut row = vec![0.0; n];
            row[j] = 1.0;
            hm.push(row);
            b.push(f.max_replicas as f64 * f.resource[1]);
        }
        let mut gm_all = gm.clone();
        let mut a = lambda.to_vec();
        let mut alpha = x0.to_vec();
        if self.params.timeout_bound {
            // x(t) <= cap  <=>  -integral G u <= cap - x0 - lambda t.
            let flow = g.effective_rates(lambda);
            for (j, f) in g.functions.iter().enumerate() {
                let cap = (flow[j] * f.timeout_s).max(x0[j]);
                gm_all.push(gm[j].iter().map(|v| -v).collect());
                a.push(-lambda[j]);
                alpha.push(cap - x0[j]);
            }
        }
        Sclp {
            g: gm_all,
            h: hm,
            f: Vec::new(),
            a,
            b,
            c,
            d: Vec::new(),
            alpha,
            gamma: vec![-self.params.resource_cost; n],
            t: self.params.horizon_s,
        }
    }

    /// Mean of the plan's u over [0, interval].
    fn first_interval(&self, s: &pharos_fluid::Solution) -> Vec<f64> {
        let d = self.params.interval_s;
        let n = s.u.first().map_or(0, Vec::len);
        let mut mean = vec![0.0; n];
        for (q, u) in s.u.iter().enumerate() {
            let (t0, t1) = (s.breakpoints[q], s.breakpoints[q + 1].min(d));
            if t1 <= t0 {
                break;
            }
            for (m, v) in mean.iter_mut().zip(u) {
                *m += v.max(0.0) * (t1 - t0) / d;
            }
        }
        mean
    }
}

impl GraphPolicy for FluidGraph {
    fn name(&self) -> &str {
        "fluid"
    }
    fn interval_s(&self) -> f64 {
        self.params.interval_s
    }
    /// Before any arrival is seen there is nothing to plan on: the deployment keeps its
    /// replicas at the functions' fixed sizes, and the rate window starts.
    fn initial_decision(&mut self, view: &GraphView<'_>) -> GraphDecision {
        self.seen.clear();
        self.seen
            .push((view.cluster.now_s, view.external_arrivals.to_vec()));
        GraphDecision {
            replicas: vec![None; view.graph.functions.len()],
            resource: fixed_sizes(view),
        }
    }
    fn decide(&mut self, view: &GraphView<'_>) -> GraphDecision {
        let g = view.graph;
        let n = g.functions.len();
        let rates = self.rates(view);
        let mut lambda = vec![0.0; n];
        for (a, &e) in g.entries.iter().enumerate() {
            lambda[e] += rates[a];
        }
        let flow = g.effective_rates(&lambda);
        let x0: Vec<f64> = view
            .cluster
            .jobs
            .iter()
            .map(|j| (j.queued + j.in_flight) as f64)
            .collect();
        let p = self.sclp(view, &x0, &lambda);
        let grid = Grid::Dense(self.params.lp_intervals);
        let budget = Some(self.params.solver_budget());
        let plan = match pharos_fluid::exact::solve_auto_within(&p, &grid, budget) {
            Ok(s) => s,
            // Over budget: the flow rule - each function's inflow, and its queue drained
            // within one interval.
            Err(pharos_fluid::FluidError::OverBudget { seconds, .. }) => {
                self.plans += 1;
                self.over_budget += 1;
                let u: Vec<f64> = flow
                    .iter()
                    .zip(&x0)
                    .zip(&g.functions)
                    .map(|((f, x), func)| (f + x / self.params.interval_s) / func.mu)
                    .collect();
                self.last = PlanInfo {
                    resources: u.clone(),
                    method: "flow-rule".into(),
                    fell_back: true,
                    solve_s: seconds,
                };
                return size_replicas(view, &u, &flow, &x0, self.params.target_utilization);
            }
            // No plan (should not happen for a valid graph): keep what runs.
            Err(_) => return GraphDecision::unchanged(n),
        };
        self.plans += 1;
        if plan.fallback.is_some() {
            self.fallbacks += 1;
        }
        // Never below the flow into each function: with equal holding costs the fluid
        // optimum is indifferent to where requests wait while downstream functions drain
        // a backlog, and may leave upstream ones idle; real queues then build up there.
        let u: Vec<f64> = self
            .first_interval(&plan)
            .into_iter()
            .zip(&flow)
            .zip(&g.functions)
            .map(|((u, f), func)| u.max(f / func.mu))
            .collect();
        self.last = PlanInfo {
            resources: u.clone(),
            method: plan.method.clone(),
            fell_back: plan.fallback.is_some(),
            solve_s: plan.solve_s,
        };
        size_replicas(view, &u, &flow, &x0, self.params.target_utilization)
    }
}

/// Turn resources per function into replicas and resources per replica: provisioned
/// for `util`, replicas of the largest size and the last one shared out evenly, at
/// least one replica where requests arrive or wait; then shrunk to fit the pool
/// (smaller replicas first, then fewer).
pub fn size_replicas(
    view: &GraphView<'_>,
    u: &[f64],
    flow: &[f64],
    x0: &[f64],
    util: f64,
) -> GraphDecision {
    let g = view.graph;
    let n = g.functions.len();
    let mut reps = vec![0u32; n];
    let mut size = vec![0.0; n];
    for j in 0..n {
        let f = &g.functions[j];
        let need = u[j] / util;
        let busy = flow[j] > 1e-9 || x0[j] > 0.0;
        let count = if need <= 1e-9 {
            u32::from(busy)
        } else {
            ((need / f.resource[1]) - 1e-9).ceil().max(1.0) as u32
        };
        reps[j] = count.min(f.max_replicas);
        size[j] = if reps[j] == 0 {
            f.resource[0]
        } else {
            (need / reps[j] as f64).clamp(f.resource[0], f.resource[1])
        };
    }
    let cap = view.cluster.capacity_cpus;
    let total = |reps: &[u32], size: &[f64]| -> f64 {
        reps.iter().zip(size).map(|(r, s)| *r as f64 * s).sum()
    };
    if total(&reps, &size) > cap {
        // Shrink sizes in proportion, down to each function's minimum.
        let over = total(&reps, &size) - cap;
        let room: f64 = (0..n)
            .map(|j| reps[j] as f64 * (size[j] - g.functions[j].resource[0]))
            .sum();
        let share = if room > 0.0 {
            (over / room).min(1.0)
        } else {
            0.0
        };
        for j in 0..n {
            size[j] -= share * (size[j] - g.functions[j].resource[0]);
        }
        // Then drop replicas from the function holding most, keeping one each.
        while total(&reps, &size) > cap + 1e-9 {
            let Some(j) = (0..n)
                .filter(|&j| reps[j] > 1)
                .max_by(|&a, &b| (reps[a] as f64 * size[a]).total_cmp(&(reps[b] as f64 * size[b])))
            else {
                break;
            };
            reps[j] -= 1;
        }
    }
    GraphDecision {
        replicas: reps.into_iter().map(Some).collect(),
        resource: size.into_iter().map(Some).collect(),
    }
}

/// The function-graph policy driver: the one code path, in the simulator and the live
/// server, from a view of the graph to the replicas that run - when the policy is called
/// (its initial decision, then every interval) and what its answer becomes (clamped to
/// each function's bounds, then fitted to the pool by [`fit_decision`]). Like the
/// policies: no I/O, no clock.
pub struct GraphDriver<P> {
    policy: P,
    next_call_s: f64,
    initial_pending: bool,
}

impl<P: GraphPolicy> GraphDriver<P> {
    pub fn new(policy: P) -> Self {
        let i = policy.interval_s();
        Self {
            next_call_s: if i.is_finite() {
                i.max(1e-3)
            } else {
                f64::INFINITY
            },
            policy,
            initial_pending: true,
        }
    }

    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// The policy's interval (at least a millisecond).
    pub fn interval_s(&self) -> f64 {
        self.policy.interval_s().max(1e-3)
    }

    pub fn initial_pending(&self) -> bool {
        self.initial_pending
    }

    /// The tick a regular call is due for at `now_s` (the latest one at or before it,
    /// so a caller that fell behind skips to it); `None` before the next call.
    pub fn due(&self, now_s: f64) -> Option<f64> {
        if !self.next_call_s.is_finite() || now_s < self.next_call_s {
            return None;
        }
        let i = self.interval_s();
        let k = ((now_s - self.next_call_s) / i).floor();
        Some(self.next_call_s + k * i)
    }

    /// One policy call (the initial decision the first time; the view's time is the
    /// tick); the functions' (replicas, resource per replica) to run, or `None` when the
    /// answer does not cover every function (it is ignored: what runs stays).
    pub fn step(
        &mut self,
        view: &GraphView<'_>,
        current: &[(u32, f64)],
        held: &[f64],
    ) -> Option<Vec<(u32, f64)>> {
        let d = if self.initial_pending {
            self.initial_pending = false;
            self.policy.initial_decision(view)
        } else {
            self.next_call_s = view.cluster.now_s + self.interval_s();
            self.policy.decide(view)
        };
        fit_decision(view.graph, &d, current, held, view.cluster.capacity_cpus)
    }
}

/// A decision made runnable: each function's replicas and resource per replica
/// (unchanged where the decision says `None`), clamped to its bounds; then, where the
/// increases do not fit the pool, every increase scaled down in proportion to what is
/// free (never below a function's `min_replicas`: a floor holds even where the pool is
/// short), and what flooring left handed out one replica at a time (functions with none
/// first, then the largest shortfall). `current`: each function's target and size;
/// `held`: the resource its replicas hold now. `None` when the decision does not cover
/// every function.
pub fn fit_decision(
    g: &Graph,
    d: &GraphDecision,
    current: &[(u32, f64)],
    held: &[f64],
    capacity: f64,
) -> Option<Vec<(u32, f64)>> {
    let n = g.functions.len();
    if d.replicas.len() != n || d.resource.len() != n || current.len() != n || held.len() != n {
        return None;
    }
    let mut want: Vec<(u32, f64)> = (0..n)
        .map(|j| {
            let f = &g.functions[j];
            let reps = d.replicas[j]
                .unwrap_or(current[j].0)
                .clamp(f.min_replicas.min(f.max_replicas), f.max_replicas);
            let res = d.resource[j]
                .filter(|r| r.is_finite())
                .unwrap_or(current[j].1)
                .clamp(f.resource[0], f.resource[1]);
            (reps, res)
        })
        .collect();
    // The pool: what stays plus the increases, scaled to fit.
    let asked: Vec<f64> = want.iter().map(|(r, x)| *r as f64 * x).collect();
    let keep: f64 = (0..n).map(|j| asked[j].min(held[j])).sum();
    let extra: f64 = (0..n).map(|j| (asked[j] - held[j]).max(0.0)).sum();
    let room = (capacity - keep).max(0.0);
    if extra > room + 1e-9 {
        let share = if extra > 0.0 { room / extra } else { 0.0 };
        for j in 0..n {
            let inc = (asked[j] - held[j]).max(0.0);
            if inc > 0.0 {
                let allowed = held[j].min(asked[j]) + inc * share;
                // A function's floor is kept even where the pool is short.
                let floor = g.functions[j].min_replicas.min(g.functions[j].max_replicas);
                want[j].0 = (((allowed / want[j].1) + 1e-9).floor() as u32).max(floor);
            }
        }
        // What flooring left: one more replica each, functions with none first, then
        // the largest shortfall, while it fits.
        let mut total: f64 = (0..n)
            .map(|j| (want[j].0 as f64 * want[j].1).max(held[j].min(asked[j])))
            .sum();
        let mut order: Vec<usize> = (0..n).filter(|&j| asked[j] > held[j]).collect();
        order.sort_by(|&a, &b| {
            (want[a].0 > 0)
                .cmp(&(want[b].0 > 0))
                .then(
                    (asked[b] - want[b].0 as f64 * want[b].1)
                        .total_cmp(&(asked[a] - want[a].0 as f64 * want[a].1)),
                )
                .then(a.cmp(&b))
        });
        for j in order {
            let more = want[j].1;
            if (want[j].0 as f64 + 1.0) * want[j].1 <= asked[j] + 1e-9
                && total + more <= capacity + 1e-9
            {
                want[j].0 += 1;
                total += more;
            }
        }
    }
    Some(want)
}

/// Every function's fixed replica size.
fn fixed_sizes(view: &GraphView<'_>) -> Vec<Option<f64>> {
    view.graph
        .functions
        .iter()
        .map(|f| Some(f.fixed_resource()))
        .collect()
}

/// An inference autoscaler applied to every function independently (each function a
/// job; replicas of the function's fixed size).
pub struct PerFunction {
    inner: Box<dyn InferencePolicy>,
}

impl PerFunction {
    pub fn new(inner: Box<dyn InferencePolicy>) -> Self {
        Self { inner }
    }
}

impl GraphPolicy for PerFunction {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn interval_s(&self) -> f64 {
        self.inner.interval_s()
    }
    fn initial_decision(&mut self, view: &GraphView<'_>) -> GraphDecision {
        let d = self.inner.initial_decision(&view.cluster);
        GraphDecision {
            replicas: d.target_replicas,
            resource: fixed_sizes(view),
        }
    }
    fn decide(&mut self, view: &GraphView<'_>) -> GraphDecision {
        let d = self.inner.decide(&view.cluster);
        GraphDecision {
            replicas: d.target_replicas,
            resource: vec![None; view.graph.functions.len()],
        }
    }
}

/// A function-graph autoscaler by name: `fluid`, or any inference policy of
/// [`crate::build`] applied per function.
pub fn build_graph(name: &str, p: &serde_json::Value) -> Result<Box<dyn GraphPolicy>, PolicyError> {
    if name == "fluid" {
        let params: FluidGraphParams = crate::params(name, p)?;
        params.check()?;
        return Ok(Box::new(FluidGraph::new(params)));
    }
    Ok(Box::new(PerFunction::new(crate::build(name, p)?)))
}

#[cfg(test)]
mod tests {
    use super::tests_support::{chain_graph as chain, job_views as jobs};
    use super::*;
    use pharos_core::ClusterView;

    /// In steady state (empty queues) with ample capacity the plan's first interval
    /// allocates each function its inflow / mu; with a backlog it allocates more there.
    #[test]
    fn the_steady_state_plan_serves_each_function_its_inflow() {
        let g = chain();
        let fluid = FluidGraph::new(FluidGraphParams::default());
        let lambda = [30.0, 0.0, 0.0];
        let flow = g.effective_rates(&lambda);
        let js = jobs(&g, &[0, 0, 0]);
        let view = GraphView {
            cluster: ClusterView {
                now_s: 100.0,
                capacity_cpus: 100.0,
                free_cpus: 97.0,
                jobs: &js,
            },
            graph: &g,
            external_arrivals: &[0],
        };
        let p = fluid.sclp(&view, &[0.0; 3], &lambda);
        let s = pharos_fluid::exact::solve(&p).unwrap();
        let u = fluid.first_interval(&s);
        for j in 0..3 {
            let want = flow[j] / g.functions[j].mu;
            assert!(
                (u[j] - want).abs() < 1e-6 * want.max(1.0),
                "{j}: {} vs {want}",
                u[j]
            );
        }
        // A backlog at c: the plan drains it faster than its inflow.
        let p = fluid.sclp(&view, &[0.0, 0.0, 200.0], &lambda);
        let s = pharos_fluid::exact::solve(&p).unwrap();
        let u = fluid.first_interval(&s);
        assert!(u[2] > flow[2] / 10.0 + 1.0, "{u:?}");
    }

    /// The driver: an initial decision, then calls on the interval's ticks (a late
    /// caller skips to the latest); answers clamped to each function's bounds and fitted
    /// to the pool; an answer that does not cover every function changes nothing.
    #[test]
    fn the_graph_driver_calls_on_its_ticks_and_fits_answers_to_the_bounds_and_pool() {
        struct Want(Vec<Option<u32>>);
        impl GraphPolicy for Want {
            fn name(&self) -> &str {
                "want"
            }
            fn interval_s(&self) -> f64 {
                10.0
            }
            fn decide(&mut self, _: &GraphView<'_>) -> GraphDecision {
                GraphDecision {
                    replicas: self.0.clone(),
                    resource: vec![None; self.0.len()],
                }
            }
        }
        let mut g = chain();
        g.functions[2].min_replicas = 2;
        let js = jobs(&g, &[0, 0, 0]);
        let view = |now_s: f64, capacity_cpus: f64| GraphView {
            cluster: ClusterView {
                now_s,
                capacity_cpus,
                free_cpus: 0.0,
                jobs: &js,
            },
            graph: &g,
            external_arrivals: &[0],
        };
        let mut d = GraphDriver::new(Want(vec![Some(4), Some(90), Some(0)]));
        assert!(d.initial_pending());
        assert_eq!(d.due(9.0), None);
        assert_eq!(d.due(35.0), Some(30.0));
        let now = [(1, 1.0), (1, 1.0), (2, 1.0)];
        let held = [1.0, 1.0, 2.0];
        // The initial decision leaves everything as it is.
        assert_eq!(d.step(&view(0.0, 100.0), &now, &held), Some(now.to_vec()));
        assert!(!d.initial_pending());
        // Ample room: 90 is cut to b's most (50), c kept at its least (2).
        assert_eq!(
            d.step(&view(10.0, 100.0), &now, &held),
            Some(vec![(4, 1.0), (50, 1.0), (2, 1.0)])
        );
        assert_eq!(d.due(15.0), None);
        assert_eq!(d.due(20.0), Some(20.0));
        // 10 CPUs: 4 held, 6 free for increases of 3 + 49 - scaled alike, then what
        // flooring left to the largest shortfall.
        let fitted = d.step(&view(20.0, 10.0), &now, &held).unwrap();
        let total: f64 = fitted.iter().map(|(r, x)| *r as f64 * x).sum();
        assert!(total <= 10.0 + 1e-9, "{fitted:?}");
        assert_eq!(fitted[2], (2, 1.0));
        assert!(fitted[1].0 > fitted[0].0, "{fitted:?}");
        // A pool too small for every floor: the floors hold.
        let fitted = d.step(&view(30.0, 1.0), &[(0, 1.0); 3], &[0.0; 3]).unwrap();
        assert_eq!(fitted[2], (2, 1.0), "{fitted:?}");
        // A short answer: nothing changes.
        let mut bad = GraphDriver::new(Want(vec![Some(3)]));
        bad.step(&view(0.0, 100.0), &now, &held);
        assert_eq!(bad.step(&view(10.0, 100.0), &now, &held), None);
    }

    /// Sizing: replicas of at most the largest size, provisioned for the target
    /// utilisation, and shrunk to fit the pool.
    #[test]
    fn sizing_respects_sizes_utilisation_and_the_pool() {
        let g = chain();
        let js = jobs(&g, &[0, 0, 0]);
        let mut view = GraphView {
            cluster: ClusterView {
                now_s: 0.0,
                capacity_cpus: 100.0,
                free_cpus: 100.0,
                jobs: &js,
            },
            graph: &g,
            external_arrivals: &[0],
        };
        let d = size_replicas(&view, &[0.5, 1.6, 3.0], &[1.0; 3], &[0.0; 3], 0.8);
        let reps: Vec<u32> = d.replicas.iter().map(|r| r.unwrap()).collect();
        let size: Vec<f64> = d.resource.iter().map(|r| r.unwrap()).collect();
        assert_eq!(reps, vec![1, 1, 2]);
        assert!((size[0] - 0.625).abs() < 1e-9 && (size[1] - 2.0).abs() < 1e-9);
        assert!((size[2] - 1.875).abs() < 1e-9);
        view.cluster.capacity_cpus = 3.0;
        let d = size_replicas(&view, &[0.5, 1.6, 3.0], &[1.0; 3], &[0.0; 3], 0.8);
        let used: f64 = d
            .replicas
            .iter()
            .zip(&d.resource)
            .map(|(r, s)| r.unwrap() as f64 * s.unwrap())
            .sum();
        assert!(used <= 3.0 + 1e-9, "{used}");
        assert!(d.replicas.iter().all(|r| r.unwrap() >= 1));
    }

    #[test]
    fn bad_parameters_are_named() {
        let e = build_graph(
            "fluid",
            &serde_json::json!({"horizon_s": 5, "interval_s": 10}),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("horizon_s"), "{e}");
        let e = build_graph("fluid", &serde_json::json!({"nope": 1}))
            .err()
            .unwrap();
        assert!(e.to_string().contains("nope"), "{e}");
        assert!(build_graph("hpa", &serde_json::Value::Null).is_ok());
    }
}

#[cfg(test)]
mod bound_tests {
    use super::tests_support::*;
    use super::*;

    /// With `timeout_bound` the plan keeps each queue under inflow x timeout (or the
    /// current queue, when that is already above): the SCLP has a second block of rows,
    /// it solves (by the LP when the exact solver cannot), and the answer is verified.
    #[test]
    fn the_timeout_bound_is_a_second_block_of_state_rows() {
        let g = chain_graph();
        let js = job_views(&g, &[0, 0, 0]);
        let view = view_of(&g, &js, 100.0);
        let fluid = FluidGraph::new(FluidGraphParams {
            timeout_bound: true,
            ..FluidGraphParams::default()
        });
        let lambda = [30.0, 0.0, 0.0];
        let p = fluid.sclp(&view, &[10.0, 0.0, 500.0], &lambda);
        assert_eq!(p.k(), 6);
        // c's cap: inflow 24 x 5 s = 120 < its queue of 500, so the bound starts at 500.
        assert_eq!(p.alpha[5], 0.0);
        assert!((p.alpha[3] - (30.0 * 5.0 - 10.0)).abs() < 1e-9);
        let s = pharos_fluid::exact::solve_auto(&p, &Grid::Dense(40)).unwrap();
        s.verify(&p, 1e-6).unwrap();
    }

    /// Past its work budget a decision takes the flow rule: each function sized for its
    /// inflow plus its queue drained within one interval; within it, the exact plan.
    #[test]
    fn a_decision_over_the_solver_budget_takes_the_flow_rule() {
        let g = chain_graph();
        let js = job_views(&g, &[0, 0, 200]);
        let decide = |budget: Option<u64>| {
            let mut fluid = FluidGraph::new(FluidGraphParams {
                max_solver_work: budget,
                ..FluidGraphParams::default()
            });
            let mut view = view_of(&g, &js, 100.0);
            view.cluster.now_s = 0.0;
            fluid.initial_decision(&view);
            // 30 requests/s over the first 10 s.
            view.cluster.now_s = 10.0;
            view.external_arrivals = &[300];
            let d = fluid.decide(&view);
            (fluid, d)
        };
        let (fluid, d) = decide(Some(1));
        assert_eq!((fluid.plans, fluid.over_budget), (1, 1));
        assert_eq!(fluid.last.method, "flow-rule");
        // c: inflow 24/s plus 200 queued over 10 s, at mu 10 per vCPU, for 80%.
        let want = (24.0 + 200.0 / 10.0) / 10.0 / 0.8;
        let held =
            |d: &GraphDecision, j: usize| d.replicas[j].unwrap() as f64 * d.resource[j].unwrap();
        assert!(
            (held(&d, 2) - want).abs() < 0.5 + 1e-9,
            "{} vs {want}",
            held(&d, 2)
        );
        // a: 30/s at 40 per vCPU.
        assert!(held(&d, 0) >= 30.0 / 40.0 / 0.8 - 1e-9, "{d:?}");
        let (fluid, _) = decide(None);
        assert_eq!((fluid.plans, fluid.over_budget), (1, 0));
        assert!(
            fluid.last.method.starts_with("exact"),
            "{}",
            fluid.last.method
        );
        assert!(
            build_graph("fluid", &serde_json::json!({"max_solver_work": 0})).is_err(),
            "a zero budget is refused"
        );
    }
}

#[cfg(test)]
mod tests_support {
    use pharos_core::{ClusterView, Function, Graph, GraphView, JobCounters, JobView, Slo};

    pub fn chain_graph() -> Graph {
        let f = |name: &str, mu: f64, routes: Vec<(usize, f64)>| Function {
            name: name.into(),
            app: 0,
            mu,
            resource: [0.25, 2.0],
            resource_per_replica: Some(1.0),
            timeout_s: 5.0,
            queue_cap: 100,
            max_replicas: 50,
            routes,
            calls: Vec::new(),
            min_replicas: 0,
        };
        Graph {
            apps: vec!["chain".into()],
            entries: vec![0],
            functions: vec![
                f("a", 40.0, vec![(1, 0.8)]),
                f("b", 20.0, vec![(2, 1.0)]),
                f("c", 10.0, vec![]),
            ],
        }
    }

    pub fn job_views<'a>(g: &'a Graph, queues: &[u32]) -> Vec<JobView<'a>> {
        g.functions
            .iter()
            .zip(queues)
            .map(|(f, &q)| JobView {
                name: &f.name,
                slo: Slo {
                    latency_s: 5.0,
                    percentile: 99.0,
                },
                processing_time_s: 0.1,
                cpus_per_replica: 1.0,
                min_replicas: 0,
                max_replicas: 50,
                max_concurrent: 1,
                target_replicas: 1,
                ready_replicas: 1,
                starting_replicas: 0,
                queued: q,
                in_flight: 0,
                accept_rate: 1.0,
                counters: JobCounters::default(),
                minute_arrivals: &[],
                cold_start_s: None,
            })
            .collect()
    }

    pub fn view_of<'a>(g: &'a Graph, jobs: &'a [JobView<'a>], capacity: f64) -> GraphView<'a> {
        GraphView {
            cluster: ClusterView {
                now_s: 100.0,
                capacity_cpus: capacity,
                free_cpus: capacity,
                jobs,
            },
            graph: g,
            external_arrivals: &[0],
        }
    }
}
