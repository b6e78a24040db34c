//! Discrete-event simulation of function graphs (serverless applications).
//!
//! Requests enter each application at its entry function as a Poisson process whose rate
//! is the trace's count for the minute. Every function has one FIFO queue in front of
//! its replicas; a replica with r units of resource serves one request at a time, for
//! an exponential time of mean 1 / (mu r) (the rates of the fluid model). A request
//! fails when it finds `queue_cap` requests waiting or has waited `timeout_s`; after
//! service it moves on by the routing probabilities or leaves, and its end-to-end
//! response time (entry to leaving) is recorded for its application.
//!
//! A policy decides every `interval_s` a replica count and a resource per replica per
//! function. New replicas are ready after `cold_start_s`; removed ones go starting
//! first, then idle, then busy ones finish their request and leave. A new resource per
//! replica applies at once to starting and idle replicas and to busy ones when they
//! finish. The pool's capacity bounds the sum of replicas x resource: increases beyond
//! it are scaled down in proportion (whole replicas).
//!
//! Random streams (arrivals per app, service and routing per function) are seeded from
//! one seed, so two policies on the same seed see the same arrivals.

use std::collections::VecDeque;

use pharos_core::{
    ClusterView, Graph, GraphPolicy, GraphView, JobCounters, JobView, Slo, SpecError,
};
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::Serialize;

use crate::inference::stream_seed;
use crate::queue::EventQueue;
use pharos_policy::graph::GraphDriver;

/// A function-graph run.
#[derive(Debug, Clone)]
pub struct GraphSimConfig {
    pub graph: Graph,
    /// The pool's resource (CPUs).
    pub capacity: f64,
    pub cold_start_s: f64,
    /// Requests per minute entering each application, minute by minute (every app the
    /// same number of minutes).
    pub load_rpm: Vec<Vec<f64>>,
    /// Replicas every function has at the start, before the policy's initial decision.
    pub initial_replicas: u32,
    pub seed: u64,
}

impl GraphSimConfig {
    pub fn validate(&self) -> Result<(), SpecError> {
        self.graph.validate()?;
        SpecError::check_positive("capacity", self.capacity)?;
        SpecError::check_non_negative("cold_start_s", self.cold_start_s)?;
        if self.load_rpm.len() != self.graph.apps.len() {
            return Err(SpecError::new("load", "one load per app"));
        }
        let minutes = self.load_rpm[0].len();
        if minutes == 0 {
            return Err(SpecError::new("load", "the load has no minutes"));
        }
        for (a, l) in self.load_rpm.iter().enumerate() {
            if l.len() != minutes {
                return Err(SpecError::new(
                    format!("load[{a}]"),
                    "apps' loads differ in length",
                ));
            }
            if let Some(m) = l.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
                return Err(SpecError::new(
                    format!("load[{a}][{m}]"),
                    "must be a count >= 0",
                ));
            }
        }
        Ok(())
    }
}

/// One application's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct AppResult {
    pub name: String,
    pub arrivals: u64,
    pub completed: u64,
    /// Requests that timed out or found a full queue anywhere in the graph.
    pub failed: u64,
    /// End-to-end response time of completed requests.
    pub mean_s: f64,
    pub p99_s: f64,
    /// Resource-seconds held by the app's replicas (starting ones included).
    pub resource_s: f64,
}

/// One function's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct FunctionResult {
    pub name: String,
    pub served: u64,
    pub timed_out: u64,
    pub queue_full: u64,
    /// Time-mean replicas held and resource held.
    pub mean_replicas: f64,
    pub mean_resource: f64,
    /// Time-mean share of ready replicas busy.
    pub utilisation: f64,
    /// Per minute: time-mean replicas held (starting ones included).
    pub minute_replicas: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GraphRunResult {
    pub apps: Vec<AppResult>,
    pub functions: Vec<FunctionResult>,
    pub duration_s: f64,
    pub decisions: u64,
    /// Per minute: resource held (all apps) and requests failed.
    pub minute_resource: Vec<f64>,
    pub minute_failed: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ev {
    Arrival(usize),
    Done(usize, usize, u64),
    Ready(usize, usize, u64),
    Timeout(usize, u64),
    Decide,
}

#[derive(Debug, Clone, Copy)]
struct Req {
    id: u64,
    app: usize,
    origin: f64,
    enq: f64,
    /// The fan-out this request is a branch of ([`NO_JOIN`]: none).
    join: u32,
}

const NO_JOIN: u32 = u32::MAX;

/// A fan-out waiting for its branches: the request that made it goes on from function
/// `at` (by its routes) once all are done, or fails if any failed.
#[derive(Debug, Clone, Copy)]
struct Join {
    remaining: u32,
    failed: bool,
    parent: Req,
    at: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum RepState {
    Starting,
    Idle,
    Busy,
    Gone,
}

#[derive(Debug, Clone, Copy)]
struct Rep {
    state: RepState,
    resource: f64,
    retire: bool,
    /// The request in service, and when it started.
    req: Option<Req>,
    /// Replicas are reused slot by slot; events carry the generation they were for.
    generation: u64,
}

struct Func {
    queue: VecDeque<Req>,
    reps: Vec<Rep>,
    target: u32,
    resource: f64,
    counters: JobCounters,
    served: u64,
    timed_out: u64,
    queue_full: u64,
    held_replica_s: f64,
    held_resource_s: f64,
    minute_replicas: Vec<f64>,
    rng_service: Pcg64Mcg,
    rng_route: Pcg64Mcg,
    minute_arrivals: Vec<u32>,
}

impl Func {
    fn count(&self, s: RepState) -> u32 {
        self.reps.iter().filter(|r| r.state == s).count() as u32
    }
    fn held(&self) -> (u32, f64) {
        let live = self.reps.iter().filter(|r| r.state != RepState::Gone);
        live.fold((0, 0.0), |(n, r), rep| (n + 1, r + rep.resource))
    }
}

fn exp(rng: &mut Pcg64Mcg, rate: f64) -> f64 {
    let u: f64 = rng.random();
    -(1.0 - u).ln() / rate
}

struct Sim<'a> {
    cfg: &'a GraphSimConfig,
    now: f64,
    events: EventQueue<Ev>,
    funcs: Vec<Func>,
    rng_arrival: Vec<Pcg64Mcg>,
    next_id: u64,
    external: Vec<u64>,
    app_completed: Vec<u64>,
    app_failed: Vec<u64>,
    app_latency: Vec<Vec<f64>>,
    app_resource_s: Vec<f64>,
    minute_resource: Vec<f64>,
    minute_failed: Vec<u64>,
    generation: u64,
    /// Fan-outs waiting for branches, and the free slots among them.
    joins: Vec<Join>,
    free_joins: Vec<u32>,
}

/// `[from, to)` split at minute boundaries: (minute, seconds in it), the time past the
/// last of `minutes` counted in the last.
fn minute_spans(from: f64, to: f64, minutes: usize) -> impl Iterator<Item = (usize, f64)> {
    let mut at = from;
    std::iter::from_fn(move || {
        if at >= to {
            return None;
        }
        let m = (at / 60.0) as usize;
        let until = ((m + 1) as f64 * 60.0).min(to);
        let span = (m.min(minutes - 1), until - at);
        at = until;
        Some(span)
    })
}

impl Sim<'_> {
    fn push(&mut self, t: f64, ev: Ev) {
        self.events.push(t, ev);
    }

    /// Integrate the time-weighted counters up to `t`.
    fn advance(&mut self, t: f64) {
        let dt = t - self.now;
        if dt <= 0.0 {
            return;
        }
        let minutes = self.minute_resource.len();
        let mut held_now = 0.0;
        for (j, f) in self.funcs.iter_mut().enumerate() {
            let busy = f.count(RepState::Busy);
            let ready = busy + f.count(RepState::Idle);
            let (n, r) = f.held();
            f.counters.ongoing_req_s += dt * (f.queue.len() as f64 + busy as f64);
            f.counters.busy_replica_s += dt * busy as f64;
            f.counters.ready_replica_s += dt * ready as f64;
            f.held_replica_s += dt * n as f64;
            f.held_resource_s += dt * r;
            for (m, span) in minute_spans(self.now, t, minutes) {
                f.minute_replicas[m] += span * n as f64 / 60.0;
            }
            self.app_resource_s[self.cfg.graph.functions[j].app] += dt * r;
            held_now += r;
        }
        for (m, span) in minute_spans(self.now, t, minutes) {
            self.minute_resource[m] += span * held_now / 60.0;
        }
        self.now = t;
    }

    /// A request failed: the app's request, or a branch, whose fan-out then fails once
    /// all its branches are done.
    fn fail(&mut self, req: Req) {
        if req.join != NO_JOIN {
            let j = &mut self.joins[req.join as usize];
            j.failed = true;
            j.remaining -= 1;
            if j.remaining == 0 {
                let parent = j.parent;
                self.free_joins.push(req.join);
                self.fail(parent);
            }
            return;
        }
        self.app_failed[req.app] += 1;
        let m = ((self.now / 60.0) as usize).min(self.minute_failed.len() - 1);
        self.minute_failed[m] += 1;
    }

    /// A request leaves (no next route): the app's request completes, or a branch is
    /// done and its fan-out goes on once all are.
    fn leave(&mut self, req: Req) {
        if req.join == NO_JOIN {
            self.app_completed[req.app] += 1;
            self.app_latency[req.app].push(self.now - req.origin);
            return;
        }
        let j = &mut self.joins[req.join as usize];
        j.remaining -= 1;
        if j.remaining > 0 {
            return;
        }
        let Join {
            failed, parent, at, ..
        } = *j;
        self.free_joins.push(req.join);
        if failed {
            self.fail(parent);
        } else {
            self.route(at, parent);
        }
    }

    /// A request served at `j` goes on by j's routes (drawn), or leaves.
    fn route(&mut self, j: usize, req: Req) {
        let u: f64 = self.funcs[j].rng_route.random();
        let mut acc = 0.0;
        let mut next = None;
        for &(to, p) in &self.cfg.graph.functions[j].routes {
            acc += p;
            if u < acc {
                next = Some(to);
                break;
            }
        }
        match next {
            Some(to) => self.enter(to, req),
            None => self.leave(req),
        }
    }

    /// A request served at `j` that calls others: one branch to each, all waited for.
    fn fan_out(&mut self, j: usize, req: Req) {
        let calls = &self.cfg.graph.functions[j].calls;
        let join = Join {
            remaining: calls.len() as u32,
            failed: false,
            parent: req,
            at: j,
        };
        let id = match self.free_joins.pop() {
            Some(i) => {
                self.joins[i as usize] = join;
                i
            }
            None => {
                self.joins.push(join);
                (self.joins.len() - 1) as u32
            }
        };
        for c in 0..self.cfg.graph.functions[j].calls.len() {
            let k = self.cfg.graph.functions[j].calls[c];
            self.enter(
                k,
                Req {
                    join: id,
                    enq: self.now,
                    ..req
                },
            );
        }
    }

    /// A request reaches function j.
    fn enter(&mut self, j: usize, mut req: Req) {
        req.enq = self.now;
        let f = &mut self.funcs[j];
        f.counters.arrivals += 1;
        let minute = (self.now / 60.0) as usize;
        if f.minute_arrivals.len() <= minute {
            f.minute_arrivals.resize(minute + 1, 0);
        }
        f.minute_arrivals[minute] += 1;
        if let Some(k) = f.reps.iter().position(|r| r.state == RepState::Idle) {
            self.start(j, k, req);
            return;
        }
        if f.queue.len() as u32 >= self.cfg.graph.functions[j].queue_cap {
            f.queue_full += 1;
            f.counters.dropped += 1;
            self.fail(req);
            return;
        }
        f.queue.push_back(req);
        let timeout = self.cfg.graph.functions[j].timeout_s;
        self.push(self.now + timeout, Ev::Timeout(j, req.id));
    }

    fn start(&mut self, j: usize, k: usize, req: Req) {
        let mu = self.cfg.graph.functions[j].mu;
        let f = &mut self.funcs[j];
        let rep = &mut f.reps[k];
        rep.state = RepState::Busy;
        rep.req = Some(req);
        let d = exp(&mut f.rng_service, mu * rep.resource);
        let generation = rep.generation;
        self.push(self.now + d, Ev::Done(j, k, generation));
    }

    /// Replica k of j is free: take the next request, or idle, or leave.
    fn free(&mut self, j: usize, k: usize) {
        let f = &mut self.funcs[j];
        let target_res = f.resource;
        let rep = &mut f.reps[k];
        rep.req = None;
        rep.resource = target_res;
        if rep.retire {
            rep.state = RepState::Gone;
            return;
        }
        rep.state = RepState::Idle;
        if let Some(req) = f.queue.pop_front() {
            self.start(j, k, req);
        }
    }

    fn done(&mut self, j: usize, k: usize, generation: u64) {
        let rep = &self.funcs[j].reps[k];
        if rep.generation != generation || rep.state != RepState::Busy {
            return;
        }
        let Some(req) = rep.req else {
            return;
        };
        let latency = self.now - req.enq;
        {
            let f = &mut self.funcs[j];
            f.served += 1;
            f.counters.completed += 1;
            f.counters.latency_sum_s += latency;
        }
        // Onwards: its calls first (the routes follow when they are done), else a route.
        // (The route is drawn from j's own stream, which freeing the replica leaves alone.)
        self.free(j, k);
        if self.cfg.graph.functions[j].calls.is_empty() {
            self.route(j, req);
        } else {
            self.fan_out(j, req);
        }
    }

    /// The queue is FIFO and every request of a function has the same timeout, so the
    /// requests that have waited that long are at its front (a request that visits the
    /// function twice is judged by its current visit, whatever event woke us).
    fn timeout(&mut self, j: usize) {
        let limit = self.cfg.graph.functions[j].timeout_s;
        while let Some(front) = self.funcs[j].queue.front() {
            if front.enq + limit > self.now + 1e-9 {
                break;
            }
            let req = self.funcs[j].queue.pop_front().expect("front exists");
            let f = &mut self.funcs[j];
            f.timed_out += 1;
            f.counters.dropped += 1;
            self.fail(req);
        }
    }

    fn ready(&mut self, j: usize, k: usize, generation: u64) {
        let rep = &mut self.funcs[j].reps[k];
        if rep.state != RepState::Starting || rep.generation != generation {
            return;
        }
        rep.state = RepState::Idle;
        if let Some(req) = self.funcs[j].queue.pop_front() {
            self.start(j, k, req);
        }
    }

    fn scale(&mut self, j: usize, target: u32, res: f64) {
        let cold = self.cfg.cold_start_s;
        let now = self.now;
        let f = &mut self.funcs[j];
        f.target = target;
        f.resource = res;
        for r in f.reps.iter_mut() {
            if matches!(r.state, RepState::Starting | RepState::Idle) {
                r.resource = res;
            }
        }
        let live = |f: &Func| {
            f.reps
                .iter()
                .filter(|r| r.state != RepState::Gone && !r.retire)
                .count() as u32
        };
        // Down: starting, then idle, then busy (retire after the request).
        let mut excess = live(f).saturating_sub(target);
        for state in [RepState::Starting, RepState::Idle, RepState::Busy] {
            for r in f.reps.iter_mut().rev() {
                if excess == 0 {
                    break;
                }
                if r.state == state && !r.retire {
                    if state == RepState::Busy {
                        r.retire = true;
                    } else {
                        r.state = RepState::Gone;
                    }
                    excess -= 1;
                }
            }
        }
        // Up: a retiring replica is kept instead of starting a new one.
        let mut missing = target.saturating_sub(live(f));
        for r in f.reps.iter_mut() {
            if missing == 0 {
                break;
            }
            if r.retire && r.state == RepState::Busy {
                r.retire = false;
                missing -= 1;
            }
        }
        let mut started: Vec<(usize, u64)> = Vec::new();
        for _ in 0..missing {
            self.generation += 1;
            let rep = Rep {
                state: RepState::Starting,
                resource: res,
                retire: false,
                req: None,
                generation: self.generation,
            };
            let slot = match f.reps.iter().position(|r| r.state == RepState::Gone) {
                Some(k) => {
                    f.reps[k] = rep;
                    k
                }
                None => {
                    f.reps.push(rep);
                    f.reps.len() - 1
                }
            };
            started.push((slot, self.generation));
        }
        for (k, generation) in started {
            if cold <= 0.0 {
                self.ready(j, k, generation);
            } else {
                self.push(now + cold, Ev::Ready(j, k, generation));
            }
        }
    }

    fn view_jobs(&self) -> Vec<JobView<'_>> {
        let g = &self.cfg.graph;
        self.funcs
            .iter()
            .enumerate()
            .map(|(j, f)| {
                let spec = &g.functions[j];
                JobView {
                    name: &spec.name,
                    slo: Slo {
                        latency_s: spec.timeout_s,
                        percentile: 99.0,
                    },
                    processing_time_s: 1.0 / (spec.mu * f.resource),
                    cpus_per_replica: f.resource,
                    min_replicas: 0,
                    max_replicas: spec.max_replicas,
                    max_concurrent: 1,
                    target_replicas: f.target,
                    ready_replicas: f.count(RepState::Idle) + f.count(RepState::Busy),
                    starting_replicas: f.count(RepState::Starting),
                    queued: f.queue.len() as u32,
                    in_flight: f.count(RepState::Busy),
                    accept_rate: 1.0,
                    counters: f.counters,
                    minute_arrivals: &f.minute_arrivals
                        [..f.minute_arrivals.len().min((self.now / 60.0) as usize)],
                    // Every start here takes the configured cold start.
                    cold_start_s: Some(self.cfg.cold_start_s),
                }
            })
            .collect()
    }

    /// A policy call through the driver (the live server's path too), then the scaling.
    fn decide(&mut self, driver: &mut GraphDriver<&mut dyn GraphPolicy>) {
        let held: Vec<f64> = self.funcs.iter().map(|f| f.held().1).collect();
        let current: Vec<(u32, f64)> = self.funcs.iter().map(|f| (f.target, f.resource)).collect();
        let jobs = self.view_jobs();
        let view = GraphView {
            cluster: ClusterView {
                now_s: self.now,
                capacity_cpus: self.cfg.capacity,
                free_cpus: (self.cfg.capacity - held.iter().sum::<f64>()).max(0.0),
                jobs: &jobs,
            },
            graph: &self.cfg.graph,
            external_arrivals: &self.external,
        };
        let targets = driver.step(&view, &current, &held);
        drop(jobs);
        for (j, (reps, res)) in targets.into_iter().flatten().enumerate() {
            self.scale(j, reps, res);
        }
    }
}

/// Run `policy` on the configuration.
pub fn run(
    cfg: &GraphSimConfig,
    policy: &mut dyn GraphPolicy,
) -> Result<GraphRunResult, SpecError> {
    cfg.validate()?;
    let g = &cfg.graph;
    let minutes = cfg.load_rpm[0].len();
    let end = minutes as f64 * 60.0;
    let funcs = g
        .functions
        .iter()
        .enumerate()
        .map(|(j, f)| Func {
            queue: VecDeque::new(),
            reps: Vec::new(),
            target: 0,
            resource: f.fixed_resource(),
            counters: JobCounters::default(),
            served: 0,
            timed_out: 0,
            queue_full: 0,
            held_replica_s: 0.0,
            held_resource_s: 0.0,
            minute_replicas: vec![0.0; minutes],
            rng_service: Pcg64Mcg::seed_from_u64(stream_seed(cfg.seed, j, 2)),
            rng_route: Pcg64Mcg::seed_from_u64(stream_seed(cfg.seed, j, 3)),
            minute_arrivals: Vec::new(),
        })
        .collect();
    let apps = g.apps.len();
    let mut sim = Sim {
        cfg,
        now: 0.0,
        events: EventQueue::new(),
        funcs,
        rng_arrival: (0..apps)
            .map(|a| Pcg64Mcg::seed_from_u64(stream_seed(cfg.seed, a, 1)))
            .collect(),
        next_id: 0,
        external: vec![0; apps],
        app_completed: vec![0; apps],
        app_failed: vec![0; apps],
        app_latency: vec![Vec::new(); apps],
        app_resource_s: vec![0.0; apps],
        minute_resource: vec![0.0; minutes],
        minute_failed: vec![0; minutes],
        generation: 0,
        joins: Vec::new(),
        free_joins: Vec::new(),
    };
    // The deployment that exists before traffic: ready at t = 0, within each
    // function's most replicas and, scaled down evenly, the pool.
    let sizes: Vec<f64> = sim.funcs.iter().map(|f| f.resource).collect();
    let mut counts: Vec<u32> = g
        .functions
        .iter()
        .map(|f| cfg.initial_replicas.min(f.max_replicas))
        .collect();
    while counts
        .iter()
        .zip(&sizes)
        .map(|(n, r)| *n as f64 * r)
        .sum::<f64>()
        > cfg.capacity + 1e-9
    {
        let Some(j) = (0..counts.len())
            .filter(|&j| counts[j] > 0)
            .max_by_key(|&j| counts[j])
        else {
            break;
        };
        counts[j] -= 1;
    }
    for j in 0..g.functions.len() {
        sim.scale_ready(j, counts[j], sizes[j]);
    }
    let mut driver = GraphDriver::new(policy);
    sim.decide(&mut driver);
    for j in 0..g.functions.len() {
        for r in sim.funcs[j].reps.iter_mut() {
            if r.state == RepState::Starting {
                r.state = RepState::Idle;
            }
        }
    }
    for a in 0..apps {
        schedule_arrival(&mut sim, a, 0.0);
    }
    let interval = driver.interval_s();
    sim.push(interval, Ev::Decide);
    let mut decisions = 0;
    while let Some((t, ev)) = sim.events.pop() {
        if t > end {
            break;
        }
        sim.advance(t);
        match ev {
            Ev::Arrival(a) => {
                sim.next_id += 1;
                sim.external[a] += 1;
                let req = Req {
                    join: NO_JOIN,
                    id: sim.next_id,
                    app: a,
                    origin: t,
                    enq: t,
                };
                sim.enter(g.entries[a], req);
                schedule_arrival(&mut sim, a, t);
            }
            Ev::Done(j, k, generation) => sim.done(j, k, generation),
            Ev::Ready(j, k, generation) => sim.ready(j, k, generation),
            Ev::Timeout(j, _) => sim.timeout(j),
            Ev::Decide => {
                decisions += 1;
                sim.decide(&mut driver);
                sim.push(t + interval, Ev::Decide);
            }
        }
    }
    sim.advance(end);
    let app_results = (0..apps)
        .map(|a| {
            let lat = &mut sim.app_latency[a];
            lat.sort_by(f64::total_cmp);
            let mean = if lat.is_empty() {
                0.0
            } else {
                lat.iter().sum::<f64>() / lat.len() as f64
            };
            let p99 = crate::nearest_rank(lat, 0.99);
            AppResult {
                name: g.apps[a].clone(),
                arrivals: sim.external[a],
                completed: sim.app_completed[a],
                failed: sim.app_failed[a],
                mean_s: mean,
                p99_s: p99,
                resource_s: sim.app_resource_s[a],
            }
        })
        .collect();
    let functions = sim
        .funcs
        .iter()
        .enumerate()
        .map(|(j, f)| FunctionResult {
            name: g.functions[j].name.clone(),
            served: f.served,
            timed_out: f.timed_out,
            queue_full: f.queue_full,
            mean_replicas: f.held_replica_s / end,
            mean_resource: f.held_resource_s / end,
            utilisation: if f.counters.ready_replica_s > 0.0 {
                f.counters.busy_replica_s / f.counters.ready_replica_s
            } else {
                0.0
            },
            minute_replicas: f.minute_replicas.clone(),
        })
        .collect();
    Ok(GraphRunResult {
        apps: app_results,
        functions,
        duration_s: end,
        decisions,
        minute_resource: sim.minute_resource,
        minute_failed: sim.minute_failed,
    })
}

impl Sim<'_> {
    /// Replicas that exist before the run, ready at once.
    fn scale_ready(&mut self, j: usize, n: u32, res: f64) {
        let f = &mut self.funcs[j];
        f.target = n;
        for _ in 0..n {
            self.generation += 1;
            f.reps.push(Rep {
                state: RepState::Idle,
                resource: res,
                retire: false,
                req: None,
                generation: self.generation,
            });
        }
    }
}

/// The next external arrival of app `a` after `t`: exponential gaps at the minute's
/// rate, restarted at minute boundaries (exact for a piecewise-constant rate).
fn schedule_arrival(sim: &mut Sim<'_>, a: usize, mut t: f64) {
    let load = &sim.cfg.load_rpm[a];
    loop {
        let m = (t / 60.0) as usize;
        if m >= load.len() {
            return;
        }
        let rate = load[m] / 60.0;
        let boundary = (m + 1) as f64 * 60.0;
        if rate <= 0.0 {
            t = boundary;
            continue;
        }
        let gap = exp(&mut sim.rng_arrival[a], rate);
        if t + gap < boundary {
            sim.push(t + gap, Ev::Arrival(a));
            return;
        }
        t = boundary;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pharos_core::{Function, GraphDecision};

    fn func(name: &str, mu: f64, routes: Vec<(usize, f64)>) -> Function {
        Function {
            name: name.into(),
            app: 0,
            mu,
            resource: [0.5, 1.0],
            resource_per_replica: None,
            timeout_s: 1e6,
            queue_cap: 1_000_000,
            max_replicas: 100,
            routes,
            calls: Vec::new(),
            min_replicas: 0,
        }
    }

    fn chain(rpm: f64, minutes: usize, seed: u64) -> GraphSimConfig {
        GraphSimConfig {
            graph: Graph {
                apps: vec!["chain".into()],
                entries: vec![0],
                functions: vec![func("a", 10.0, vec![(1, 1.0)]), func("b", 5.0, vec![])],
            },
            capacity: 100.0,
            cold_start_s: 1.0,
            load_rpm: vec![vec![rpm; minutes]],
            initial_replicas: 1,
            seed,
        }
    }

    /// With fixed replicas each function is an M/M/n queue: the simulated mean response
    /// time agrees with the sum of the M/M/n predictions, and requests are conserved.
    #[test]
    fn a_fixed_chain_matches_the_mmn_prediction() {
        // 12 req/s: a has 2 replicas of rate 10 (load 0.6), b 4 of rate 5 (load 0.6).
        let cfg = chain(720.0, 120, 7);
        let r = run(&cfg, &mut FixedPer(vec![2, 4])).unwrap();
        let app = &r.apps[0];
        let want = pharos_queueing::mmc_mean_wait_s(2, 12.0, 0.1)
            + 0.1
            + pharos_queueing::mmc_mean_wait_s(4, 12.0, 0.2)
            + 0.2;
        assert!(
            (app.mean_s - want).abs() / want < 0.05,
            "{} vs {want}",
            app.mean_s
        );
        assert_eq!(app.failed, 0);
        let in_system = app.arrivals - app.completed;
        assert!(in_system < 40, "{in_system} requests still in the system");
        // Same seed, same run.
        let again = run(&cfg, &mut FixedPer(vec![2, 4])).unwrap();
        assert_eq!(again.apps[0].completed, app.completed);
        assert_eq!(again.apps[0].mean_s, app.mean_s);
    }

    /// A fan-out: s calls x and y in parallel, waits for both, then goes on to z. With
    /// ample replicas a request takes s + max(x, y) + z: for exponential x and y of
    /// rate 10, E[max] = 1/10 + 1/20. Every branch's requests reach z once per request.
    #[test]
    fn a_fan_out_waits_for_its_slowest_branch_and_joins_once() {
        let fan = |cap_y: u32, mu_y: f64| {
            let mut s = func("s", 100.0, vec![(3, 1.0)]);
            s.calls = vec![1, 2];
            let mut y = func("y", mu_y, vec![]);
            y.queue_cap = cap_y;
            GraphSimConfig {
                graph: Graph {
                    apps: vec!["fan".into()],
                    entries: vec![0],
                    functions: vec![s, func("x", 10.0, vec![]), y, func("z", 100.0, vec![])],
                },
                capacity: 100.0,
                cold_start_s: 1.0,
                load_rpm: vec![vec![60.0; 120]],
                initial_replicas: 1,
                seed: 5,
            }
        };
        let r = run(&fan(1_000_000, 10.0), &mut FixedPer(vec![10, 10, 10, 10])).unwrap();
        let app = &r.apps[0];
        let want = 0.01 + 0.1 + 0.05 + 0.01;
        assert!(
            (app.mean_s - want).abs() / want < 0.05,
            "{} vs {want}",
            app.mean_s
        );
        let f = &r.functions;
        assert!(f[1].served <= f[0].served, "{f:?}");
        assert!(
            f[0].served - f[1].served < 10 && f[0].served - f[2].served < 10,
            "{f:?}"
        );
        assert!(f[3].served <= f[1].served.min(f[2].served), "{f:?}");
        assert!(
            app.completed >= f[3].served - 1 && app.completed <= f[3].served,
            "{app:?}"
        );
        // A branch that fails (y: one slow replica, no queue) fails its request once,
        // after the other branch is done; the request never reaches z.
        let r = run(&fan(0, 1.0), &mut FixedPer(vec![10, 10, 1, 10])).unwrap();
        let (app, f) = (&r.apps[0], &r.functions);
        assert!(f[2].queue_full > 100, "{f:?}");
        assert_eq!(app.failed, f[2].queue_full, "{app:?} {f:?}");
        assert!(app.completed + app.failed + 5 >= app.arrivals, "{app:?}");
        assert!(f[3].served <= f[2].served, "{f:?}");
    }

    /// Holds each function at its replica count, of the function's fixed size.
    struct FixedPer(Vec<u32>);
    impl GraphPolicy for FixedPer {
        fn name(&self) -> &str {
            "fixed"
        }
        fn interval_s(&self) -> f64 {
            10.0
        }
        fn initial_decision(&mut self, _: &GraphView<'_>) -> GraphDecision {
            GraphDecision {
                replicas: self.0.iter().map(|n| Some(*n)).collect(),
                resource: vec![None; self.0.len()],
            }
        }
        fn decide(&mut self, v: &GraphView<'_>) -> GraphDecision {
            GraphDecision::unchanged(v.graph.functions.len())
        }
    }

    /// Timeouts and full queues fail requests, the pool caps what a policy gets, and
    /// resource-seconds count what was held.
    #[test]
    fn failures_capacity_and_resource_accounting() {
        let mut cfg = chain(1200.0, 10, 3);
        cfg.graph.functions[1].timeout_s = 0.5;
        cfg.graph.functions[1].queue_cap = 5;
        cfg.capacity = 3.0;
        // Asks for 2 + 4 replicas of 1 CPU in a pool of 3.
        let r = run(&cfg, &mut FixedPer(vec![2, 4])).unwrap();
        let f = &r.functions;
        assert!(f[0].mean_resource + f[1].mean_resource <= 3.0 + 1e-9);
        assert!(r.apps[0].failed > 0);
        assert_eq!(
            r.apps[0].failed,
            f[1].timed_out + f[1].queue_full + f[0].timed_out + f[0].queue_full
        );
        let held = f[0].mean_resource + f[1].mean_resource;
        assert!((r.apps[0].resource_s - held * r.duration_s).abs() < 1e-6 * r.apps[0].resource_s);
        // The per-minute replicas add up to the time-mean, and the pool caps each minute.
        for fr in f {
            assert_eq!(fr.minute_replicas.len(), r.minute_resource.len());
            let total: f64 = fr.minute_replicas.iter().sum::<f64>() * 60.0;
            assert!((total - fr.mean_replicas * r.duration_s).abs() < 1e-6 * total.max(1.0));
        }
        for m in 0..r.minute_resource.len() {
            assert!(f[0].minute_replicas[m] + f[1].minute_replicas[m] <= 3.0 + 1e-9);
        }
    }
}
