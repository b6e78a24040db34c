//! The discrete-event engine of the inference-cluster simulator.
//!
//! Semantics (the Faro evaluation's model of Ray Serve, see the crate docs):
//! - requests of a minute arrive at uniform random times within it (a Poisson process,
//!   conditioned on the count or not, see [`ArrivalCount`]); each pays a router delay;
//! - the job's router drops a request with probability `1 - accept_rate`, tail-drops it
//!   when `max_queue` requests already wait, and otherwise hands it round-robin to a ready
//!   replica holding fewer than `max_concurrent` requests, or queues it (FIFO);
//! - a replica serves the requests it holds one at a time, in order; a job with batch
//!   service times (`SimJob::batch_service`) serves them in batches instead: a free
//!   replica takes the requests it holds (after a batch, first the router's waiting ones
//!   into its freed slots), up to the largest batch, as one batch timed by the smallest
//!   listed size that holds it;
//! - capacity is counted in pods: a replica lives in a pod of `cpus_per_replica`; a
//!   removed replica finishes what it holds, then leaves its pod idle, still holding its
//!   vCPUs, until the pod has been idle for `pod_idle_timeout_s` (checked every
//!   `pod_monitor_interval_s`); a new replica reuses an idle pod of its job (hot start)
//!   or needs a new pod and free capacity (cold start); starts that do not fit wait and
//!   are retried whenever capacity may have been freed;
//! - targets are reconciled: downscales of all jobs first, then upscales in job order;
//!   scale-down removes the most recently added replicas (starting ones first).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use pharos_core::{ClusterView, InferencePolicy, JobCounters, JobView};
use pharos_policy::{PolicyDriver, Step};
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Exp1, Poisson};
use rand_pcg::Pcg64Mcg;

use crate::config::{ArrivalCount, SimConfig};
use crate::metrics::{self, JobMetrics, JobSummary, MinuteRecord, Summary};

const MINUTE_S: f64 = 60.0;

/// A request on its way through the system.
#[derive(Debug, Clone, Copy)]
struct Req {
    arrival_s: f64,
    service_s: f64,
}

impl Req {
    #[inline]
    fn minute(&self) -> u32 {
        (self.arrival_s / MINUTE_S) as u32
    }
}

#[derive(Debug, Clone, Copy)]
enum Ev {
    /// The next request of a job (the earliest in its transit buffer) reaches the router.
    RouterIn {
        job: u32,
    },
    /// A replica finished the request it was serving.
    ServiceDone {
        job: u32,
        rep: u32,
    },
    /// A starting replica becomes ready (if it still has generation `generation`).
    Ready {
        job: u32,
        rep: u32,
        generation: u32,
    },
    PolicyTick,
    PodMonitor,
    MinuteTick,
}

/// A scheduled event. `key` orders the heap: the time's bits (monotone for times >= 0)
/// above the scheduling sequence number, so ties pop in scheduling order.
struct Item {
    key: u128,
    ev: Ev,
}

impl Item {
    #[inline]
    fn time(&self) -> f64 {
        f64::from_bits((self.key >> 64) as u64)
    }
}

impl PartialEq for Item {
    #[inline]
    fn eq(&self, o: &Self) -> bool {
        self.key == o.key
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    #[inline]
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    /// Reversed: the heap pops the earliest time, ties in scheduling order.
    #[inline]
    fn cmp(&self, o: &Self) -> Ordering {
        o.key.cmp(&self.key)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RepState {
    Free,
    Starting,
    Ready,
    Draining,
}

struct Replica {
    state: RepState,
    generation: u32,
    /// Requests held: the one in service, the rest of its batch, and `local`.
    held: u32,
    serving: Option<Req>,
    /// The other requests of the batch in service (batching jobs only).
    batch: Vec<Req>,
    local: VecDeque<Req>,
}

/// A job's arrival stream and the requests on their way to its router.
///
/// Invariant: every request that arrives no later than the earliest router time in
/// `transit` has been generated and is in `transit`, so that request is truly the next
/// to reach the router. One heap event per job stands for the front of `transit`.
struct Arrivals {
    /// The next minute to draw requests for.
    next_minute: usize,
    /// Arrival times of the current minute's requests not generated yet, ascending,
    /// consumed from `cursor`.
    times_s: Vec<f64>,
    cursor: usize,
    /// The next request of the stream, not yet in transit.
    next: Option<Req>,
    /// Requests sorted by the time they reach the router.
    transit: VecDeque<(f64, Req)>,
}

struct JobState {
    reps: Vec<Replica>,
    free_slots: Vec<u32>,
    /// Starting and ready replicas, oldest first (scale-down pops the newest).
    active: Vec<u32>,
    /// Ready replicas in round-robin order.
    ready: Vec<u32>,
    rr: usize,
    queue: VecDeque<Req>,
    target: u32,
    /// Since when the job has wanted more replicas than the capacity let it start
    /// (infinite when it is not waiting); waiting jobs get capacity in this order.
    waiting_since: f64,
    starting: u32,
    in_flight: u32,
    busy: u32,
    /// Idle pods: the time each became idle, oldest first.
    idle_pods: VecDeque<f64>,
    accept_rate: f64,
    counters: JobCounters,
    last_integral_t: f64,
    minute_arrivals: Vec<u32>,
    ready_replica_s_at_minute: f64,
    arrivals: Arrivals,
    rng_arrival: Pcg64Mcg,
    rng_service: Pcg64Mcg,
    rng_router: Pcg64Mcg,
    rng_admit: Pcg64Mcg,
    metrics: JobMetrics,
}

impl JobState {
    /// Hand replica `rep` requests waiting at the router, up to `max_conc` held.
    fn take_waiting(&mut self, rep: usize, max_conc: u32) {
        let r = &mut self.reps[rep];
        while r.held < max_conc {
            let Some(req) = self.queue.pop_front() else {
                break;
            };
            r.held += 1;
            self.in_flight += 1;
            r.local.push_back(req);
        }
    }

    /// Advance the time integrals of the counters to `now`.
    #[inline]
    fn integrate(&mut self, now: f64) {
        let dt = now - self.last_integral_t;
        if dt > 0.0 {
            let c = &mut self.counters;
            c.ongoing_req_s += dt * (self.queue.len() as u32 + self.in_flight) as f64;
            c.busy_replica_s += dt * self.busy as f64;
            c.ready_replica_s += dt * self.ready.len() as f64;
            self.last_integral_t = now;
        }
    }

    fn provisioned(&self) -> u32 {
        self.active.len() as u32
    }
}

/// The result of one simulation run.
#[derive(Debug, Clone)]
pub struct SimResult {
    pub summary: Summary,
    pub jobs: Vec<JobSummary>,
    /// Per job, one record per minute of the trace.
    pub minutes: Vec<Vec<MinuteRecord>>,
}

/// Counts that must balance: arrived (reached the router) = completed + dropped + queued +
/// in flight. `in_transit` requests have arrived but not reached the router yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conservation {
    pub arrived: u64,
    pub completed: u64,
    pub dropped: u64,
    pub queued: u64,
    pub in_flight: u64,
    pub in_transit: u64,
}

/// One simulation of an inference cluster under a policy.
pub struct Simulation<P: InferencePolicy> {
    cfg: SimConfig,
    driver: PolicyDriver<P>,
    heap: BinaryHeap<Item>,
    seq: u64,
    now: f64,
    jobs: Vec<JobState>,
    /// vCPUs held by pods (serving, starting, draining or idle).
    used_cpus: f64,
    /// What pods may hold: the cluster's capacity, unless another workload holds part of
    /// it ([`Simulation::set_pod_capacity`]); policies still see the cluster's capacity.
    pod_capacity: f64,
    /// Requests not yet born or still in the system; the run ends when both are zero.
    open_streams: usize,
    outstanding: u64,
    events: u64,
    minutes: usize,
    /// Jobs with a target above what they have provisioned (waiting for capacity).
    pending_starts: bool,
    /// Reused for the requests of a finished batch.
    finished: Vec<Req>,
}

/// Derive an independent seed for one random stream of one job.
pub(crate) fn stream_seed(seed: u64, job: usize, stream: u64) -> u64 {
    // SplitMix64 finaliser over a combination of the inputs.
    let mut z = seed
        .wrapping_add((job as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl<P: InferencePolicy> Simulation<P> {
    /// Set up a run. The configuration must be valid ([`SimConfig::validate`]).
    pub fn new(cfg: SimConfig, policy: P) -> Result<Self, pharos_core::SpecError> {
        cfg.validate()?;
        let minutes = cfg.jobs[0].requests_per_min.len();
        let jobs = cfg
            .jobs
            .iter()
            .enumerate()
            .map(|(i, j)| JobState {
                reps: Vec::new(),
                free_slots: Vec::new(),
                active: Vec::new(),
                ready: Vec::new(),
                rr: 0,
                queue: VecDeque::with_capacity((j.max_queue as usize).saturating_add(1).min(1024)),
                // What the initial decision starts from (and shows the policy).
                target: j.initial_replicas,
                waiting_since: f64::INFINITY,
                starting: 0,
                in_flight: 0,
                busy: 0,
                idle_pods: VecDeque::new(),
                accept_rate: 1.0,
                counters: JobCounters::default(),
                last_integral_t: 0.0,
                minute_arrivals: vec![0; minutes],
                ready_replica_s_at_minute: 0.0,
                arrivals: Arrivals {
                    next_minute: 0,
                    times_s: Vec::new(),
                    cursor: 0,
                    next: None,
                    transit: VecDeque::new(),
                },
                rng_arrival: Pcg64Mcg::seed_from_u64(stream_seed(cfg.seed, i, 1)),
                rng_service: Pcg64Mcg::seed_from_u64(stream_seed(cfg.seed, i, 2)),
                rng_router: Pcg64Mcg::seed_from_u64(stream_seed(cfg.seed, i, 3)),
                rng_admit: Pcg64Mcg::seed_from_u64(stream_seed(cfg.seed, i, 4)),
                metrics: JobMetrics::new(
                    j.slo.latency_s,
                    j.slo.percentile,
                    cfg.utility_alpha,
                    minutes,
                ),
            })
            .collect();
        let over_capacity = cfg.cluster.over_capacity;
        let pod_capacity = cfg.cluster.capacity_cpus;
        let mut sim = Simulation {
            cfg,
            driver: PolicyDriver::new(policy, over_capacity),
            heap: BinaryHeap::with_capacity(1024),
            seq: 0,
            now: 0.0,
            jobs,
            used_cpus: 0.0,
            pod_capacity: 0.0,
            open_streams: 0,
            outstanding: 0,
            events: 0,
            minutes,
            pending_starts: false,
            finished: Vec::new(),
        };
        sim.pod_capacity = pod_capacity;
        sim.start();
        Ok(sim)
    }

    #[inline]
    fn push(&mut self, t: f64, ev: Ev) {
        debug_assert!(
            t >= 0.0 && t >= self.now,
            "an event in the past: {t} < {}",
            self.now
        );
        self.seq += 1;
        self.heap.push(Item {
            key: ((t.to_bits() as u128) << 64) | self.seq as u128,
            ev,
        });
    }

    fn start(&mut self) {
        // Initial replicas: the jobs' configured counts, or the policy's initial
        // decision, running (not starting) at time 0, as far as the capacity allows.
        let step = self.ask_policy(true);
        self.apply_accept_rates(&step);
        for (js, t) in self.jobs.iter_mut().zip(&step.targets) {
            js.target = *t;
        }
        // Everyone gets one replica first so no job starts without service.
        for round in [1u32, u32::MAX] {
            for i in 0..self.jobs.len() {
                let cpus = self.cfg.jobs[i].cpus_per_replica;
                let want = self.jobs[i].target.min(round);
                while self.jobs[i].provisioned() < want
                    && self.used_cpus + cpus <= self.pod_capacity + 1e-9
                {
                    self.used_cpus += cpus;
                    let rep = self.new_replica(i, RepState::Ready);
                    self.jobs[i].active.push(rep);
                    self.jobs[i].ready.push(rep);
                }
            }
        }
        self.pending_starts = self.jobs.iter().any(|j| j.provisioned() < j.target);
        for i in 0..self.jobs.len() {
            self.jobs[i].arrivals.next = self.generate(i);
            if self.refill_transit(i) {
                self.open_streams += 1;
            }
        }
        if let Some(first) = self.driver.next_call_s() {
            self.push(first, Ev::PolicyTick);
        }
        self.push(self.cfg.cluster.pod_monitor_interval_s, Ev::PodMonitor);
        self.push(MINUTE_S, Ev::MinuteTick);
    }

    fn new_replica(&mut self, job: usize, state: RepState) -> u32 {
        let max_conc = self.cfg.jobs[job].max_concurrent as usize;
        let js = &mut self.jobs[job];
        if let Some(slot) = js.free_slots.pop() {
            let r = &mut js.reps[slot as usize];
            r.state = state;
            r.generation += 1;
            slot
        } else {
            js.reps.push(Replica {
                state,
                generation: 0,
                held: 0,
                serving: None,
                batch: Vec::new(),
                local: VecDeque::with_capacity(max_conc),
            });
            js.reps.len() as u32 - 1
        }
    }

    /// The next request of job `i`'s trace (its arrival time, service time and bin
    /// counted), or `None` when the trace is over.
    fn generate(&mut self, i: usize) -> Option<Req> {
        let job = &self.cfg.jobs[i];
        let js = &mut self.jobs[i];
        let a = &mut js.arrivals;
        while a.cursor == a.times_s.len() {
            let minute = a.next_minute;
            let &r = job.requests_per_min.get(minute)?;
            a.next_minute += 1;
            let n = match self.cfg.arrivals {
                ArrivalCount::Exact => {
                    let whole = r.floor();
                    whole as usize + usize::from(js.rng_arrival.random::<f64>() < r - whole)
                }
                ArrivalCount::Poisson if r > 0.0 => {
                    Poisson::new(r).map_or(0, |p| p.sample(&mut js.rng_arrival) as usize)
                }
                ArrivalCount::Poisson => 0,
            };
            // n sorted independent uniform points of the minute, as the normalised
            // partial sums of n + 1 exponential spacings.
            a.times_s.clear();
            a.cursor = 0;
            let mut sum = 0.0;
            for _ in 0..n {
                let e: f64 = Exp1.sample(&mut js.rng_arrival);
                sum += e;
                a.times_s.push(sum);
            }
            let last: f64 = Exp1.sample(&mut js.rng_arrival);
            let total = sum + last;
            let start = minute as f64 * MINUTE_S;
            for t in &mut a.times_s {
                *t = start + *t / total * MINUTE_S;
            }
        }
        let arrival_s = a.times_s[a.cursor];
        a.cursor += 1;
        // (A batching job's service time is drawn per batch.)
        let service_s = if job.batch_service.is_empty() {
            job.service_time.sample(&mut js.rng_service)
        } else {
            0.0
        };
        let req = Req {
            arrival_s,
            service_s,
        };
        js.metrics.arrived(req.minute());
        Some(req)
    }

    /// Restore the transit invariant of job `i` and schedule its next router event;
    /// false when the job has no more requests to come.
    fn refill_transit(&mut self, i: usize) -> bool {
        loop {
            let a = &self.jobs[i].arrivals;
            let Some(next) = a.next else { break };
            if a.transit.front().is_some_and(|(t, _)| next.arrival_s > *t) {
                break;
            }
            let delay = &self.cfg.jobs[i].router_delay;
            let js = &mut self.jobs[i];
            let at = next.arrival_s + delay.sample(&mut js.rng_router);
            let transit = &mut js.arrivals.transit;
            if transit.back().is_none_or(|(t, _)| *t <= at) {
                transit.push_back((at, next));
            } else {
                let pos = transit
                    .iter()
                    .rposition(|(t, _)| *t <= at)
                    .map_or(0, |p| p + 1);
                transit.insert(pos, (at, next));
            }
            self.outstanding += 1;
            let next = self.generate(i);
            self.jobs[i].arrivals.next = next;
        }
        match self.jobs[i].arrivals.transit.front() {
            Some((t, _)) => {
                let t = *t;
                self.push(t, Ev::RouterIn { job: i as u32 });
                true
            }
            None => false,
        }
    }

    /// Run to the end: until every request of the trace has finished.
    pub fn run(mut self) -> SimResult {
        self.run_until(f64::INFINITY);
        self.finish()
    }

    /// Process events up to time `t_end` (inclusive) or until the run is over.
    pub fn run_until(&mut self, t_end: f64) {
        while let Some(top) = self.heap.peek() {
            if top.time() > t_end || (self.open_streams == 0 && self.outstanding == 0) {
                break;
            }
            let item = self.heap.pop().expect("peeked");
            let ev = item.ev;
            self.now = item.time();
            self.events += 1;
            match ev {
                Ev::RouterIn { job } => self.on_router_event(job as usize),
                Ev::ServiceDone { job, rep } => self.on_service_done(job as usize, rep),
                Ev::Ready {
                    job,
                    rep,
                    generation,
                } => self.on_ready(job as usize, rep, generation),
                Ev::PolicyTick => self.on_policy_tick(),
                Ev::PodMonitor => self.on_pod_monitor(),
                Ev::MinuteTick => self.on_minute_tick(),
            }
        }
    }

    /// The simulated time now.
    pub fn now_s(&self) -> f64 {
        self.now
    }

    /// Request counts for a conservation check, summed over jobs.
    pub fn conservation(&self) -> Conservation {
        let mut c = Conservation {
            arrived: 0,
            completed: 0,
            dropped: 0,
            queued: 0,
            in_flight: 0,
            in_transit: 0,
        };
        for j in &self.jobs {
            c.arrived += j.counters.arrivals;
            c.completed += j.counters.completed;
            c.dropped += j.counters.dropped;
            c.queued += j.queue.len() as u64;
            c.in_flight += j.in_flight as u64;
            c.in_transit += j.arrivals.transit.len() as u64;
        }
        c
    }

    /// Ready and starting replicas of job `job` now.
    pub fn replicas(&self, job: usize) -> (u32, u32) {
        let j = &self.jobs[job];
        (j.ready.len() as u32, j.starting)
    }

    /// The target replicas of job `job` now.
    pub fn target(&self, job: usize) -> u32 {
        self.jobs[job].target
    }

    /// vCPUs held by pods now; never above the capacity.
    pub fn used_cpus(&self) -> f64 {
        self.used_cpus
    }

    /// Capacity units the jobs ask for now: per job, its target or the pods it holds
    /// (starting, ready, draining and idle), whichever is more (a job's idle pods serve
    /// only it).
    pub fn wanted_cpus(&self) -> f64 {
        self.jobs
            .iter()
            .zip(&self.cfg.jobs)
            .map(|(js, j)| {
                let draining = js
                    .reps
                    .iter()
                    .filter(|r| r.state == RepState::Draining)
                    .count();
                let pods = js.active.len() + draining + js.idle_pods.len();
                js.target.max(pods as u32) as f64 * j.cpus_per_replica
            })
            .sum()
    }

    /// Let pods hold at most `capacity` from now on (another workload holds the rest of
    /// the cluster). Pods already above it keep running until they end; starts wait for
    /// room, and those waiting start at once when `capacity` grows. Policies keep seeing
    /// the cluster's whole capacity: they decide what the service should have, the
    /// caller makes room for it.
    pub fn set_pod_capacity(&mut self, capacity: f64) {
        let grew = capacity > self.pod_capacity;
        self.pod_capacity = capacity;
        if grew && self.pending_starts {
            self.reconcile_all();
        }
    }

    /// Whether every request of the trace has finished.
    pub fn is_over(&self) -> bool {
        self.open_streams == 0 && self.outstanding == 0
    }

    fn on_router_event(&mut self, i: usize) {
        let (_, req) = self.jobs[i]
            .arrivals
            .transit
            .pop_front()
            .expect("a router event has a request in transit");
        let js = &mut self.jobs[i];
        js.integrate(self.now);
        js.counters.arrivals += 1;
        if let Some(c) = js.minute_arrivals.get_mut(req.minute() as usize) {
            *c += 1;
        }
        self.on_router_in(i, req);
        if !self.refill_transit(i) {
            self.open_streams -= 1;
        }
    }

    fn on_router_in(&mut self, i: usize, req: Req) {
        let max_queue = self.cfg.jobs[i].max_queue as usize;
        let js = &mut self.jobs[i];
        if js.accept_rate < 1.0 && js.rng_admit.random::<f64>() >= js.accept_rate {
            self.drop_request(i, req);
            return;
        }
        if js.queue.is_empty() && self.try_dispatch(i, req) {
            return;
        }
        let js = &mut self.jobs[i];
        if js.queue.len() >= max_queue {
            self.drop_request(i, req);
        } else {
            js.queue.push_back(req);
        }
    }

    fn drop_request(&mut self, i: usize, req: Req) {
        let js = &mut self.jobs[i];
        js.counters.dropped += 1;
        js.metrics.dropped(req.minute());
        self.outstanding -= 1;
    }

    /// Hand `req` to the next ready replica (round robin) that holds fewer than
    /// `max_concurrent` requests. False when all are full.
    #[inline]
    fn try_dispatch(&mut self, i: usize, req: Req) -> bool {
        let max_conc = self.cfg.jobs[i].max_concurrent;
        let js = &mut self.jobs[i];
        let n = js.ready.len();
        let mut idx = js.rr;
        for _ in 0..n {
            if idx >= n {
                idx = 0;
            }
            let rep = js.ready[idx] as usize;
            idx += 1;
            if js.reps[rep].held < max_conc {
                js.rr = if idx == n { 0 } else { idx };
                self.assign(i, rep, req);
                return true;
            }
        }
        false
    }

    #[inline]
    fn assign(&mut self, i: usize, rep: usize, req: Req) {
        let now = self.now;
        let js = &mut self.jobs[i];
        js.in_flight += 1;
        let r = &mut js.reps[rep];
        r.held += 1;
        if r.serving.is_none() {
            r.serving = Some(req);
            js.busy += 1;
            let service_s = match self.cfg.jobs[i].batch_service.first() {
                None => req.service_s,
                Some((_, d)) => d.sample(&mut js.rng_service),
            };
            self.push(
                now + service_s,
                Ev::ServiceDone {
                    job: i as u32,
                    rep: rep as u32,
                },
            );
        } else {
            r.local.push_back(req);
        }
    }

    fn on_service_done(&mut self, i: usize, rep: u32) {
        if !self.cfg.jobs[i].batch_service.is_empty() {
            self.on_batch_done(i, rep);
            return;
        }
        let now = self.now;
        let js = &mut self.jobs[i];
        js.integrate(now);
        let r = &mut js.reps[rep as usize];
        let done = r
            .serving
            .take()
            .expect("a replica that finished was serving");
        r.held -= 1;
        let next = r.local.pop_front();
        let state = r.state;
        let held = r.held;
        js.in_flight -= 1;
        let latency = now - done.arrival_s;
        js.counters.completed += 1;
        js.counters.latency_sum_s += latency;
        js.metrics.completed(done.minute(), latency);
        self.outstanding -= 1;
        match next {
            Some(req) => {
                js.reps[rep as usize].serving = Some(req);
                self.push(now + req.service_s, Ev::ServiceDone { job: i as u32, rep });
            }
            None => js.busy -= 1,
        }
        match state {
            RepState::Draining if held == 0 => self.retire(i, rep),
            RepState::Ready => {
                if let Some(req) = self.jobs[i].queue.pop_front() {
                    let ok = self.try_dispatch(i, req);
                    debug_assert!(ok, "the replica that finished has room");
                }
            }
            _ => {}
        }
    }

    /// A batching replica finished its batch: all its requests complete; it takes the
    /// requests waiting at the router into the slots they freed, then the requests it
    /// holds, up to the largest batch, as its next batch.
    fn on_batch_done(&mut self, i: usize, rep: u32) {
        let now = self.now;
        let job = &self.cfg.jobs[i];
        let js = &mut self.jobs[i];
        js.integrate(now);
        let r = &mut js.reps[rep as usize];
        let mut finished = std::mem::take(&mut self.finished);
        finished.push(
            r.serving
                .take()
                .expect("a replica that finished was serving"),
        );
        finished.append(&mut r.batch);
        let n = finished.len() as u32;
        r.held -= n;
        let state = r.state;
        js.in_flight -= n;
        if state == RepState::Ready {
            js.take_waiting(rep as usize, job.max_concurrent);
        }
        let held = js.reps[rep as usize].held;
        for req in &finished {
            let latency = now - req.arrival_s;
            js.counters.completed += 1;
            js.counters.latency_sum_s += latency;
            js.metrics.completed(req.minute(), latency);
        }
        self.outstanding -= n as u64;
        finished.clear();
        self.finished = finished;
        if !self.next_batch(i, rep) {
            self.jobs[i].busy -= 1;
            if state == RepState::Draining && held == 0 {
                self.retire(i, rep);
            }
        }
    }

    /// Batching replica `rep`, not serving, starts a batch of what it holds (up to the
    /// largest size); false when it holds nothing.
    fn next_batch(&mut self, i: usize, rep: u32) -> bool {
        let now = self.now;
        let job = &self.cfg.jobs[i];
        let js = &mut self.jobs[i];
        let r = &mut js.reps[rep as usize];
        let largest = job.batch_service.last().map_or(1, |b| b.0) as usize;
        let m = r.local.len().min(largest);
        if m == 0 {
            return false;
        }
        r.serving = r.local.pop_front();
        r.batch.extend(r.local.drain(..m - 1));
        let size = m as u32;
        let (_, d) = job
            .batch_service
            .iter()
            .find(|(s, _)| *s >= size)
            .expect("a batch is at most the largest size");
        let service_s = d.sample(&mut js.rng_service);
        self.push(now + service_s, Ev::ServiceDone { job: i as u32, rep });
        true
    }

    /// A replica that is gone leaves its pod idle.
    fn retire(&mut self, i: usize, rep: u32) {
        let now = self.now;
        let js = &mut self.jobs[i];
        js.reps[rep as usize].state = RepState::Free;
        js.free_slots.push(rep);
        js.idle_pods.push_back(now);
        if js.provisioned() < js.target {
            self.pending_starts = true;
        }
    }

    fn on_ready(&mut self, i: usize, rep: u32, generation: u32) {
        let now = self.now;
        let max_conc = self.cfg.jobs[i].max_concurrent;
        let js = &mut self.jobs[i];
        let r = &js.reps[rep as usize];
        if r.generation != generation || r.state != RepState::Starting {
            return; // cancelled while starting
        }
        js.integrate(now);
        js.reps[rep as usize].state = RepState::Ready;
        js.starting -= 1;
        js.ready.push(rep);
        if !self.cfg.jobs[i].batch_service.is_empty() {
            // A batching replica takes what waits as its first batch.
            js.take_waiting(rep as usize, max_conc);
            if self.next_batch(i, rep) {
                self.jobs[i].busy += 1;
            }
            return;
        }
        while self.jobs[i].reps[rep as usize].held < max_conc {
            let Some(req) = self.jobs[i].queue.pop_front() else {
                break;
            };
            self.assign(i, rep as usize, req);
        }
    }

    fn on_pod_monitor(&mut self) {
        let now = self.now;
        let timeout = self.cfg.cluster.pod_idle_timeout_s;
        for i in 0..self.jobs.len() {
            let cpus = self.cfg.jobs[i].cpus_per_replica;
            let js = &mut self.jobs[i];
            while js.idle_pods.front().is_some_and(|t| now - t >= timeout) {
                js.idle_pods.pop_front();
                self.used_cpus -= cpus;
            }
        }
        if self.pending_starts {
            self.reconcile_all();
        }
        self.push(
            now + self.cfg.cluster.pod_monitor_interval_s,
            Ev::PodMonitor,
        );
    }

    fn on_minute_tick(&mut self) {
        let now = self.now;
        let minute = (now / MINUTE_S).round() as u32;
        for js in &mut self.jobs {
            js.integrate(now);
            let mean_ready =
                (js.counters.ready_replica_s - js.ready_replica_s_at_minute) / MINUTE_S;
            js.ready_replica_s_at_minute = js.counters.ready_replica_s;
            js.metrics.replicas.push((mean_ready, js.target));
            js.metrics.flush(minute, false);
        }
        self.push(now + MINUTE_S, Ev::MinuteTick);
    }

    /// Ask the policy through the driver (its initial decision or a regular one).
    fn ask_policy(&mut self, initial: bool) -> Step {
        let completed_minutes = ((self.now / MINUTE_S).floor() as usize).min(self.minutes);
        let views = job_views(&self.jobs, &self.cfg, self.now, completed_minutes);
        let view = ClusterView {
            now_s: self.now,
            capacity_cpus: self.cfg.cluster.capacity_cpus,
            free_cpus: (self.cfg.cluster.capacity_cpus - self.used_cpus).max(0.0),
            jobs: &views,
        };
        if initial {
            let configured: Vec<u32> = self.cfg.jobs.iter().map(|j| j.initial_replicas).collect();
            self.driver.initial(&view, &configured)
        } else {
            self.driver.decide(&view)
        }
    }

    fn on_policy_tick(&mut self) {
        // Events fire at their tick: the driver's due tick is now.
        if self.driver.due(self.now).is_none() {
            return;
        }
        let step = self.ask_policy(false);
        self.apply(&step);
        if let Some(next) = self.driver.next_call_s()
            && next > self.now
        {
            self.push(next, Ev::PolicyTick);
        }
    }

    fn apply_accept_rates(&mut self, step: &Step) {
        for (js, a) in self.jobs.iter_mut().zip(&step.accept_rate) {
            if let Some(a) = a {
                js.accept_rate = *a;
            }
        }
    }

    /// Apply a decision: accept rates at once, the driver's targets (clamped and trimmed
    /// to the capacity), then reconciled.
    fn apply(&mut self, step: &Step) {
        self.apply_accept_rates(step);
        for (js, t) in self.jobs.iter_mut().zip(&step.targets) {
            js.target = *t;
        }
        self.reconcile_all();
    }

    /// Bring every job towards its target: all downscales first, then upscales as far
    /// as the capacity allows, first come first served: jobs that have waited for
    /// capacity longest go first, then the others in job order.
    fn reconcile_all(&mut self) {
        let now = self.now;
        for i in 0..self.jobs.len() {
            while self.jobs[i].provisioned() > self.jobs[i].target {
                self.remove_newest(i);
            }
        }
        let mut order: Vec<usize> = (0..self.jobs.len())
            .filter(|i| self.jobs[*i].provisioned() < self.jobs[*i].target)
            .collect();
        order.sort_by(|a, b| {
            self.jobs[*a]
                .waiting_since
                .total_cmp(&self.jobs[*b].waiting_since)
        });
        let mut pending = false;
        for i in order {
            while self.jobs[i].provisioned() < self.jobs[i].target {
                if !self.start_replica(i) {
                    pending = true;
                    break;
                }
            }
            let js = &mut self.jobs[i];
            js.waiting_since = if js.provisioned() < js.target {
                js.waiting_since.min(now)
            } else {
                f64::INFINITY
            };
        }
        for js in &mut self.jobs {
            if js.provisioned() >= js.target {
                js.waiting_since = f64::INFINITY;
            }
        }
        self.pending_starts = pending;
    }

    /// Start one replica of job `i`: hot in an idle pod of the job, else cold in a new pod.
    /// False when there is neither an idle pod nor free capacity.
    fn start_replica(&mut self, i: usize) -> bool {
        let now = self.now;
        let cpus = self.cfg.jobs[i].cpus_per_replica;
        let delay = if self.jobs[i].idle_pods.pop_back().is_some() {
            self.cfg.cluster.hot_start_s
        } else if self.used_cpus + cpus <= self.pod_capacity + 1e-9 {
            self.used_cpus += cpus;
            self.cfg.cluster.cold_start_s
        } else {
            return false;
        };
        let rep = self.new_replica(i, RepState::Starting);
        let js = &mut self.jobs[i];
        js.active.push(rep);
        js.starting += 1;
        let generation = js.reps[rep as usize].generation;
        self.push(
            now + delay,
            Ev::Ready {
                job: i as u32,
                rep,
                generation,
            },
        );
        true
    }

    fn remove_newest(&mut self, i: usize) {
        let now = self.now;
        let js = &mut self.jobs[i];
        js.integrate(now);
        // Prefer cancelling a starting replica (the newest of them).
        let pos = js
            .active
            .iter()
            .rposition(|r| js.reps[*r as usize].state == RepState::Starting)
            .unwrap_or(js.active.len() - 1);
        let rep = js.active.remove(pos);
        match js.reps[rep as usize].state {
            RepState::Starting => {
                js.starting -= 1;
                self.retire(i, rep);
            }
            RepState::Ready => {
                if let Some(k) = js.ready.iter().position(|r| *r == rep) {
                    js.ready.remove(k);
                    if js.rr > k {
                        js.rr -= 1;
                    }
                    if js.rr >= js.ready.len() {
                        js.rr = 0;
                    }
                }
                if js.reps[rep as usize].held == 0 {
                    self.retire(i, rep);
                } else {
                    js.reps[rep as usize].state = RepState::Draining;
                }
            }
            RepState::Draining | RepState::Free => {
                unreachable!("active replicas are starting or ready")
            }
        }
    }

    /// Close the metrics and summarise the run.
    pub fn finish(mut self) -> SimResult {
        let now = self.now;
        let minutes = self.minutes;
        let mut records = Vec::with_capacity(self.jobs.len());
        let mut jobs = Vec::with_capacity(self.jobs.len());
        for (js, j) in self.jobs.iter_mut().zip(&self.cfg.jobs) {
            js.integrate(now);
            // The run ended (its last request done) inside a minute of the trace: that
            // minute's replicas are the time mean over the part of it that ran.
            let sampled = js.metrics.replicas.len();
            let span = now - sampled as f64 * MINUTE_S;
            if sampled < minutes && span > 0.0 {
                let mean_ready =
                    (js.counters.ready_replica_s - js.ready_replica_s_at_minute) / span;
                js.metrics.replicas.push((mean_ready, js.target));
            }
            js.metrics.finish(minutes);
            let recs = std::mem::take(&mut js.metrics.records);
            let m = recs.len().max(1) as f64;
            let c = &js.counters;
            let (viol, _, _) = metrics::summarize(std::slice::from_ref(&recs));
            jobs.push(JobSummary {
                name: j.name.clone(),
                requests: c.arrivals,
                dropped: c.dropped,
                completed: c.completed,
                slo_violation_rate: viol,
                mean_utility: recs.iter().map(|r| r.utility).sum::<f64>() / m,
                mean_effective_utility: recs.iter().map(|r| r.effective_utility).sum::<f64>() / m,
                mean_latency_s: if c.completed > 0 {
                    c.latency_sum_s / c.completed as f64
                } else {
                    0.0
                },
                mean_ready_replicas: recs.iter().map(|r| r.mean_ready_replicas).sum::<f64>() / m,
            });
            records.push(recs);
        }
        let (slo_violation_rate, lost_utility, lost_effective_utility) =
            metrics::summarize(&records);
        let requests: u64 = jobs.iter().map(|j| j.requests).sum();
        let completed: u64 = jobs.iter().map(|j| j.completed).sum();
        let latency_sum: f64 = self.jobs.iter().map(|j| j.counters.latency_sum_s).sum();
        let mut latencies = metrics::LatencyHistogram::default();
        for j in &self.jobs {
            latencies.merge(&j.metrics.latencies);
        }
        SimResult {
            summary: Summary {
                jobs: jobs.len(),
                minutes,
                requests,
                dropped: jobs.iter().map(|j| j.dropped).sum(),
                completed,
                slo_violation_rate,
                lost_utility,
                lost_effective_utility,
                mean_latency_s: if completed > 0 {
                    latency_sum / completed as f64
                } else {
                    0.0
                },
                p99_latency_s: latencies.quantile(0.99),
                mean_ready_replicas: jobs.iter().map(|j| j.mean_ready_replicas).sum(),
                events: self.events,
                sim_time_s: now,
            },
            jobs,
            minutes: records,
        }
    }
}

fn job_views<'a>(
    jobs: &'a [JobState],
    cfg: &'a SimConfig,
    now: f64,
    completed_minutes: usize,
) -> Vec<JobView<'a>> {
    jobs.iter()
        .zip(&cfg.jobs)
        .map(|(js, j)| {
            let mut counters = js.counters;
            // Bring the integrals up to now without mutating the state.
            let dt = now - js.last_integral_t;
            counters.ongoing_req_s += dt * (js.queue.len() as u32 + js.in_flight) as f64;
            counters.busy_replica_s += dt * js.busy as f64;
            counters.ready_replica_s += dt * js.ready.len() as f64;
            JobView {
                name: &j.name,
                slo: j.slo,
                processing_time_s: j.processing_time_s,
                cpus_per_replica: j.cpus_per_replica,
                min_replicas: j.min_replicas,
                max_replicas: j.max_replicas,
                max_concurrent: j.max_concurrent,
                target_replicas: js.target,
                ready_replicas: js.ready.len() as u32,
                starting_replicas: js.starting,
                queued: js.queue.len() as u32,
                in_flight: js.in_flight,
                accept_rate: js.accept_rate,
                counters,
                minute_arrivals: &js.minute_arrivals[..completed_minutes],
                // Every start in a new pod here takes the configured cold start.
                cold_start_s: Some(cfg.cluster.cold_start_s),
            }
        })
        .collect()
}
