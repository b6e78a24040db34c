//! Training-job schedulers: pure policy objects (no clock, no I/O) that the control
//! plane runs live and the simulator runs on traces.
//!
//! [`GangScheduler`]: queues with quotas per resource (CPUs, memory, GPUs of any model,
//! GPUs of one model), priorities, gang admission (every learner of a job is placed at
//! once or none is), optional backfill (a job that fits may start while one ahead of it
//! waits; without runtime estimates there are no reservations) and optional preemption
//! (a job that cannot fit may halt running jobs of strictly lower priority, youngest
//! first, when that frees enough). Learners go to the node that leaves the least room
//! (pack) or the most (spread).

use std::collections::BTreeMap;

use pharos_core::{
    LearnerResources, Node, PendingJob, QueueSpec, RunningJob, SchedDecision, SchedView,
    TrainingScheduler,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    Pack,
    Spread,
}

/// The order jobs are considered in, which is also what preemption compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// Arrival order; nobody preempts.
    Fifo,
    /// The job's priority, then arrival; a higher priority preempts a lower one.
    Priority,
    /// Shortest known duration first (on the job's fastest GPU model; unknown last);
    /// nobody preempts. An upper bound: real platforms rarely know durations.
    Sjf,
    /// Least attained service (Tiresias's two-queue form): jobs with under
    /// `las_threshold_gpu_s` GPU-seconds of service rank above the rest and may preempt
    /// them; arrival order within a rank. Needs no durations.
    Las,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GangParams {
    pub order: Order,
    pub backfill: bool,
    pub preemption: bool,
    pub placement: Placement,
    pub las_threshold_gpu_s: f64,
    /// Try the GPU models where the job runs fastest first (needs durations; Gavel's
    /// heterogeneity awareness in its simplest form). Otherwise the models with the
    /// most free GPUs first.
    pub gpu_affinity: bool,
}

impl Default for GangParams {
    fn default() -> Self {
        Self {
            order: Order::Priority,
            backfill: true,
            preemption: true,
            placement: Placement::Pack,
            las_threshold_gpu_s: 3600.0,
            gpu_affinity: false,
        }
    }
}

impl GangScheduler {
    /// The rank preemption compares (higher wins), by the order.
    fn rank(&self, priority: i32, attained_gpu_s: f64) -> i64 {
        match self.params.order {
            Order::Fifo | Order::Sjf => 0,
            Order::Priority => priority as i64,
            Order::Las => i64::from(attained_gpu_s < self.params.las_threshold_gpu_s),
        }
    }

    /// Where a pending job that has attained no service yet ranks among the pending
    /// jobs: they are considered by this rank (higher first), then by submission time,
    /// then by id - an order that does not change while they wait, so a caller may keep
    /// them sorted and hand the scheduler only the first ones.
    pub fn waiting_rank(&self, priority: i32) -> i64 {
        match self.params.order {
            // By duration: unknown to a server, so submission order.
            Order::Sjf => 0,
            _ => self.rank(priority, 0.0),
        }
    }

    /// GPU models to try for a job, in order.
    /// By default the models with the most free GPUs first (then by name).
    fn models(&self, view: &SchedView<'_>, job: Option<&PendingJob>, free: &[Free]) -> Vec<String> {
        let mut all: Vec<String> = view
            .nodes
            .iter()
            .flat_map(|n| n.gpus.keys().cloned())
            .collect();
        all.sort();
        all.dedup();
        let free_of = |m: &String| -> u32 {
            free.iter()
                .map(|f| f.gpus.get(m).copied().unwrap_or(0))
                .sum()
        };
        all.sort_by(|a, b| free_of(b).cmp(&free_of(a)).then(a.cmp(b)));
        if let Some(job) = job
            && self.params.gpu_affinity
            && !job.duration_s.is_empty()
        {
            let d = |m: &String| job.duration_s.get(m).copied().unwrap_or(f64::INFINITY);
            all.sort_by(|a, b| d(a).total_cmp(&d(b)).then(a.cmp(b)));
        }
        all
    }
}

fn best_duration(job: &PendingJob) -> f64 {
    job.duration_s
        .values()
        .copied()
        .fold(f64::INFINITY, f64::min)
}

/// The gang scheduler (see the module docs).
#[derive(Debug, Clone)]
pub struct GangScheduler {
    pub params: GangParams,
}

impl GangScheduler {
    pub fn new(params: GangParams) -> Self {
        Self { params }
    }
}

/// Free resources of one node.
#[derive(Debug, Clone)]
struct Free {
    cpus: f64,
    memory: f64,
    gpus: BTreeMap<String, u32>,
}

/// The nodes with nothing running.
fn empty(view: &SchedView<'_>) -> Vec<Free> {
    view.nodes
        .iter()
        .map(|n| Free {
            cpus: n.cpus,
            memory: n.memory_bytes as f64,
            gpus: n.gpus.clone(),
        })
        .collect()
}

fn free_of(view: &SchedView<'_>) -> Vec<Free> {
    let mut free = empty(view);
    for r in view.running {
        hold(&mut free, r, -1.0);
    }
    free
}

/// Take (`sign` = -1) or give back (+1) a running job's resources.
fn hold(free: &mut [Free], r: &RunningJob, sign: f64) {
    for (node, model) in &r.placement {
        if let Some(f) = free.get_mut(*node) {
            f.cpus += sign * r.per_learner.cpus;
            f.memory += sign * r.per_learner.memory_bytes as f64;
            if let Some(m) = model {
                let g = f.gpus.entry(m.clone()).or_insert(0);
                *g = if sign < 0.0 {
                    g.saturating_sub(r.per_learner.gpus)
                } else {
                    *g + r.per_learner.gpus
                };
            }
        }
    }
}

/// The resource keys one learner uses, with amounts.
fn usage(res: &LearnerResources, model: Option<&str>) -> Vec<(String, f64)> {
    let mut u = vec![
        ("cpu".to_string(), res.cpus),
        ("memory".to_string(), res.memory_bytes as f64),
    ];
    if res.gpus > 0 {
        u.push(("gpu".into(), res.gpus as f64));
        if let Some(m) = model.or(res.gpu_type.as_deref()) {
            u.push((format!("gpu/{m}"), res.gpus as f64));
        }
    }
    u
}

/// A node (and GPU model) for one learner, or None.
fn place_one(
    free: &[Free],
    res: &LearnerResources,
    placement: Placement,
) -> Option<(usize, Option<String>)> {
    let eps = 1e-9;
    let mut best: Option<(f64, usize, Option<String>)> = None;
    for (i, f) in free.iter().enumerate() {
        if f.cpus + eps < res.cpus || f.memory + eps < res.memory_bytes as f64 {
            continue;
        }
        let model = if res.gpus == 0 {
            None
        } else {
            let fits = |m: &str| f.gpus.get(m).is_some_and(|g| *g >= res.gpus);
            match &res.gpu_type {
                Some(m) if fits(m) => Some(m.clone()),
                Some(_) => continue,
                None => match f.gpus.iter().find(|(_, g)| **g >= res.gpus) {
                    Some((m, _)) => Some(m.clone()),
                    None => continue,
                },
            }
        };
        // Room left (CPUs, the scarcer resource in these clusters, then GPUs).
        let gpus_left: u32 = model
            .as_ref()
            .map_or(0, |m| f.gpus.get(m).copied().unwrap_or(0) - res.gpus);
        let left = f.cpus - res.cpus + 1000.0 * gpus_left as f64;
        let better = match (&best, placement) {
            (None, _) => true,
            (Some((b, _, _)), Placement::Pack) => left < *b - eps,
            (Some((b, _, _)), Placement::Spread) => left > *b + eps,
        };
        if better {
            best = Some((left, i, model));
        }
    }
    best.map(|(_, i, m)| (i, m))
}

/// Place every learner of a job on `free` (updated) or none (unchanged).
fn place_gang(
    free: &mut [Free],
    job: &PendingJob,
    placement: Placement,
) -> Option<Vec<(usize, Option<String>)>> {
    place_gang_on(free, job, &job.per_learner, placement)
}

/// Place a gang whose learners use GPUs of one model: the first of `models` it fits on
/// whole (the job's own model when it names one).
fn place_gang_models(
    free: &mut [Free],
    job: &PendingJob,
    placement: Placement,
    models: &[String],
) -> Option<Vec<(usize, Option<String>)>> {
    if job.per_learner.gpus == 0 || job.per_learner.gpu_type.is_some() {
        return place_gang(free, job, placement);
    }
    for m in models {
        let res = LearnerResources {
            gpu_type: Some(m.clone()),
            ..job.per_learner.clone()
        };
        if let Some(p) = place_gang_on(free, job, &res, placement) {
            return Some(p);
        }
    }
    None
}

fn place_gang_on(
    free: &mut [Free],
    job: &PendingJob,
    res: &LearnerResources,
    placement: Placement,
) -> Option<Vec<(usize, Option<String>)>> {
    let mut trial: Vec<Free> = free.to_vec();
    let mut out = Vec::new();
    // Packing: the whole gang on one node when one has room for it (the fullest such
    // node), so that its gradients stay off the network; learner by learner otherwise.
    if placement == Placement::Pack && job.learners > 1 {
        let whole = LearnerResources {
            cpus: res.cpus * job.learners as f64,
            memory_bytes: res.memory_bytes.saturating_mul(job.learners as u64),
            gpus: res.gpus.saturating_mul(job.learners),
            gpu_type: res.gpu_type.clone(),
        };
        if let Some((node, model)) = place_one(&trial, &whole, Placement::Pack) {
            let f = &mut trial[node];
            f.cpus -= whole.cpus;
            f.memory -= whole.memory_bytes as f64;
            if let Some(m) = &model {
                *f.gpus.get_mut(m).expect("placed on it") -= whole.gpus;
            }
            free.clone_from_slice(&trial);
            return Some(vec![(node, model); job.learners as usize]);
        }
    }
    for _ in 0..job.learners {
        let (node, model) = place_one(&trial, res, placement)?;
        let f = &mut trial[node];
        f.cpus -= job.per_learner.cpus;
        f.memory -= job.per_learner.memory_bytes as f64;
        if let Some(m) = &model {
            *f.gpus.get_mut(m).expect("placed on it") -= job.per_learner.gpus;
        }
        out.push((node, model));
    }
    free.clone_from_slice(&trial);
    Some(out)
}

/// Why a job can never run on these nodes under its queue's quota, even on an empty
/// cluster, if so: the scheduler's own verdict, for refusing a job when it is
/// submitted.
pub fn never_fits_on(nodes: &[Node], queues: &[QueueSpec], job: &PendingJob) -> Option<String> {
    let view = SchedView {
        now_s: 0.0,
        nodes,
        queues,
        pending: &[],
        running: &[],
        explain: true,
    };
    let mut models: Vec<String> = nodes.iter().flat_map(|n| n.gpus.keys().cloned()).collect();
    models.sort();
    models.dedup();
    never_fits(&view, job, &models)
}

/// Why a job can never run on these nodes, if so.
fn never_fits(view: &SchedView<'_>, job: &PendingJob, models: &[String]) -> Option<String> {
    let mut all = empty(view);
    if place_gang_models(&mut all, job, Placement::Pack, models).is_none() {
        let p = &job.per_learner;
        let cpus: f64 = view.nodes.iter().map(|n| n.cpus).sum();
        let memory: u64 = view
            .nodes
            .iter()
            .map(|n| n.memory_bytes)
            .fold(0, u64::saturating_add);
        let gpus: u32 = view.nodes.iter().flat_map(|n| n.gpus.values()).sum();
        let model = p
            .gpu_type
            .as_ref()
            .map(|m| format!(" {m}"))
            .unwrap_or_default();
        return Some(format!(
            "never fits: {} learner(s) of {} CPUs, {} and {} GPUs{model} each; the cluster has {cpus} CPUs, {} and {gpus} GPUs on {} node(s)",
            job.learners,
            p.cpus,
            pharos_core::format_memory(p.memory_bytes),
            p.gpus,
            pharos_core::format_memory(memory),
            view.nodes.len(),
        ));
    }
    if let Some(q) = view.queues.iter().find(|q| q.name == job.queue) {
        let mut total: BTreeMap<String, f64> = BTreeMap::new();
        for _ in 0..job.learners {
            for (k, v) in usage(&job.per_learner, None) {
                *total.entry(k).or_insert(0.0) += v;
            }
        }
        for (k, limit) in &q.quota {
            if total.get(k).copied().unwrap_or(0.0) > limit + 1e-9 {
                return Some(format!(
                    "never fits: the job needs {} of {k}, queue {} allows {limit}",
                    total[k], q.name
                ));
            }
        }
        // A job of any GPU model: never, when every model's quota is too small.
        if job.per_learner.gpus > 0 && job.per_learner.gpu_type.is_none() {
            let gpus = (job.per_learner.gpus * job.learners) as f64;
            let some_model = models.iter().any(|m| {
                q.quota
                    .get(&format!("gpu/{m}"))
                    .is_none_or(|limit| gpus <= limit + 1e-9)
            });
            if !some_model {
                return Some(format!(
                    "never fits: the job needs {gpus} GPUs and queue {} allows fewer of every model",
                    q.name
                ));
            }
        }
    }
    None
}

impl TrainingScheduler for GangScheduler {
    fn name(&self) -> &str {
        "gang"
    }

    fn needs_ticks(&self) -> bool {
        self.params.order == Order::Las && self.params.preemption
    }

    fn decide(&mut self, view: &SchedView<'_>) -> SchedDecision {
        let mut d = SchedDecision::default();
        // Why jobs wait, only when asked (formatting thousands of reasons per decision
        // dominates a simulation's time otherwise).
        let explain = view.explain;
        let wait = |d: &mut SchedDecision, id: u64, why: &dyn Fn() -> String| {
            if explain {
                d.waiting.push((id, why()));
            }
        };
        // Whether a job shape can ever fit, once per shape.
        let mut never: std::collections::HashMap<Shape<'_>, Option<String>> =
            std::collections::HashMap::new();
        let mut free = free_of(view);
        // The model order without affinity (by free GPUs), updated when a job starts.
        let mut base_models = self.models(view, None, &free);
        let mut used = queue_usage(view.running);
        let mut preempted: Vec<u64> = Vec::new();
        let mut blocked: Option<u64> = None;
        // Shapes that found no room, and shapes that found no set of victims, since the
        // last preemption. Until a preemption gives resources back, free resources only
        // shrink and (jobs being in rank order) a later job may halt only a subset of
        // what an earlier one could, so a later job of the same shape fails the same
        // way. Not with GPU-model affinity, where jobs of one shape try different
        // models.
        let memo = !self.params.gpu_affinity;
        let mut no_room: std::collections::HashSet<Shape<'_>> = Default::default();
        let mut no_victims: std::collections::HashSet<Shape<'_>> = Default::default();
        for job in self.order(view.pending) {
            if let Some(head) = blocked
                && !self.params.backfill
            {
                wait(&mut d, job.id, &|| {
                    format!("behind job {head} (no backfill)")
                });
                continue;
            }
            let Some(queue) = view.queues.iter().find(|q| q.name == job.queue) else {
                wait(&mut d, job.id, &|| format!("no queue {:?}", job.queue));
                continue;
            };
            let own;
            let models: &[String] = if self.params.gpu_affinity && !job.duration_s.is_empty() {
                own = self.models(view, Some(job), &free);
                &own
            } else {
                &base_models
            };
            let shape = shape_of(job);
            let verdict = never
                .entry(shape)
                .or_insert_with(|| never_fits(view, job, models))
                .clone();
            if let Some(why) = verdict {
                wait(&mut d, job.id, &|| why.clone());
                continue;
            }
            let mut trial = Vec::new();
            let placed = if covers(&free, job, models) && !(memo && no_room.contains(&shape)) {
                trial = free.clone();
                place_gang_models(&mut trial, job, self.params.placement, models)
            } else {
                None
            };
            let outcome = match placed {
                Some(p) => match over_quota(queue, &used, job, &p) {
                    None => Ok((p, trial, Vec::new())),
                    Some(why) => Err(why),
                },
                None if self.params.preemption && memo && no_victims.contains(&shape) => {
                    no_room.insert(shape);
                    Err(NO_ROOM_EVEN_AFTER_HALTING.into())
                }
                None if self.params.preemption => {
                    if memo {
                        no_room.insert(shape);
                    }
                    match self.halt_for(view, job, &free, models, &preempted) {
                        Victims::Found(p, t, chosen) => {
                            // Quota counts without the victims of the same queue.
                            let mut u2 = used.clone();
                            for v in &chosen {
                                for (_, m) in &v.placement {
                                    for (k, x) in usage(&v.per_learner, m.as_deref()) {
                                        if let Some(e) = u2.get_mut(&(v.queue.clone(), k)) {
                                            *e -= x;
                                        }
                                    }
                                }
                            }
                            match over_quota(queue, &u2, job, &p) {
                                None => {
                                    used = u2;
                                    Ok((p, t, chosen.iter().map(|v| v.id).collect()))
                                }
                                Some(why) => Err(why),
                            }
                        }
                        none => {
                            if memo {
                                no_victims.insert(shape);
                            }
                            Err(if matches!(none, Victims::TooFew) {
                                NO_ROOM_EVEN_AFTER_HALTING.into()
                            } else {
                                "does not fit in the free resources (no running job ranks below it)"
                                    .into()
                            })
                        }
                    }
                }
                None => {
                    if memo {
                        no_room.insert(shape);
                    }
                    Err("does not fit in the free resources".into())
                }
            };
            match outcome {
                Ok((p, t, victims)) => {
                    for (_, m) in &p {
                        for (k, v) in usage(&job.per_learner, m.as_deref()) {
                            *used.entry((job.queue.clone(), k)).or_insert(0.0) += v;
                        }
                    }
                    free = t;
                    base_models = self.models(view, None, &free);
                    if !victims.is_empty() {
                        // Resources came back: what did not fit may fit now.
                        no_room.clear();
                        no_victims.clear();
                    }
                    preempted.extend(&victims);
                    d.start.push((job.id, p));
                }
                Err(why) => {
                    blocked.get_or_insert(job.id);
                    wait(&mut d, job.id, &|| why.clone());
                }
            }
        }
        d.preempt = preempted;
        d
    }
}

const NO_ROOM_EVEN_AFTER_HALTING: &str =
    "does not fit in the free resources, even after halting lower-ranked jobs";

/// What a job asks for, as far as fitting goes: learners, resources per learner, queue.
type Shape<'s> = (u32, u64, u64, u32, Option<&'s str>, &'s str);

fn shape_of(job: &PendingJob) -> Shape<'_> {
    (
        job.learners,
        job.per_learner.cpus.to_bits(),
        job.per_learner.memory_bytes,
        job.per_learner.gpus,
        job.per_learner.gpu_type.as_deref(),
        job.queue.as_str(),
    )
}

/// What the running jobs hold, by (queue, resource key).
fn queue_usage(running: &[RunningJob]) -> BTreeMap<(String, String), f64> {
    let mut used: BTreeMap<(String, String), f64> = BTreeMap::new();
    for r in running {
        for (_, m) in &r.placement {
            for (k, v) in usage(&r.per_learner, m.as_deref()) {
                *used.entry((r.queue.clone(), k)).or_insert(0.0) += v;
            }
        }
    }
    used
}

/// Why `job` placed as `placement` would go over its queue's quota (with the GPU model
/// chosen at placement), if it would.
fn over_quota(
    queue: &QueueSpec,
    used: &BTreeMap<(String, String), f64>,
    job: &PendingJob,
    placement: &[(usize, Option<String>)],
) -> Option<String> {
    let mut add: BTreeMap<String, f64> = BTreeMap::new();
    for (_, m) in placement {
        for (k, v) in usage(&job.per_learner, m.as_deref()) {
            *add.entry(k).or_insert(0.0) += v;
        }
    }
    queue.quota.iter().find_map(|(k, limit)| {
        let now = used
            .get(&(queue.name.clone(), k.clone()))
            .copied()
            .unwrap_or(0.0);
        let extra = add.get(k).copied().unwrap_or(0.0);
        (extra > 0.0 && now + extra > limit + 1e-9).then(|| {
            format!(
                "queue {} quota for {k}: {now} held + {extra} > {limit}",
                queue.name
            )
        })
    })
}

/// A quick bound before trying placements: the free CPUs, and for GPU jobs the free
/// GPUs of the best model, must cover the gang.
fn covers(free: &[Free], job: &PendingJob, models: &[String]) -> bool {
    let cpus: f64 = free.iter().map(|f| f.cpus).sum();
    let gpus_ok = job.per_learner.gpus == 0
        || models.iter().any(|m| {
            let g: u32 = free
                .iter()
                .map(|f| f.gpus.get(m).copied().unwrap_or(0) / job.per_learner.gpus)
                .sum();
            g >= job.learners && job.per_learner.gpu_type.as_ref().is_none_or(|t| t == m)
        });
    cpus + 1e-9 >= job.per_learner.cpus * job.learners as f64 && gpus_ok
}

/// The running jobs a pending one may halt, and where it would then go.
enum Victims<'v> {
    /// The gang's placement, the free resources after it, and the jobs to halt.
    Found(Vec<(usize, Option<String>)>, Vec<Free>, Vec<&'v RunningJob>),
    /// Halting every job that ranks below it would not make room.
    TooFew,
    /// No running job ranks below it.
    None,
}

impl GangScheduler {
    /// Jobs pending, in the order they are considered: by the order's rank (SJF: the
    /// shortest first), then by submission, then by id.
    fn order<'p>(&self, pending: &'p [PendingJob]) -> Vec<&'p PendingJob> {
        let mut order: Vec<&PendingJob> = pending.iter().collect();
        let rank = |j: &PendingJob| self.rank(j.priority, j.attained_gpu_s);
        order.sort_by(|a, b| {
            let by_order = match self.params.order {
                Order::Sjf => best_duration(a).total_cmp(&best_duration(b)),
                _ => rank(b).cmp(&rank(a)),
            };
            by_order
                .then(a.submitted_s.total_cmp(&b.submitted_s))
                .then(a.id.cmp(&b.id))
        });
        order
    }

    /// Lower-ranked running jobs to halt for `job`, youngest first, until it fits; then
    /// only those it needs (each one it can do without dropped, the earliest chosen
    /// first).
    fn halt_for<'v>(
        &self,
        view: &'v SchedView<'_>,
        job: &PendingJob,
        free: &[Free],
        models: &[String],
        preempted: &[u64],
    ) -> Victims<'v> {
        let rank = self.rank(job.priority, job.attained_gpu_s);
        let mut victims: Vec<&RunningJob> = view
            .running
            .iter()
            .filter(|r| {
                r.preemptible
                    && self.rank(r.priority, r.attained_gpu_s) < rank
                    && !preempted.contains(&r.id)
            })
            .collect();
        victims.sort_by(|a, b| {
            self.rank(a.priority, a.attained_gpu_s)
                .cmp(&self.rank(b.priority, b.attained_gpu_s))
                .then(b.started_s.total_cmp(&a.started_s))
                .then(b.id.cmp(&a.id))
        });
        if victims.is_empty() {
            return Victims::None;
        }
        let placement = self.params.placement;
        let mut trial_free = free.to_vec();
        let mut chosen = Vec::new();
        let mut found = false;
        for v in victims {
            hold(&mut trial_free, v, 1.0);
            chosen.push(v);
            let mut t = trial_free.clone();
            if place_gang_models(&mut t, job, placement, models).is_some() {
                found = true;
                break;
            }
        }
        if !found {
            return Victims::TooFew;
        }
        let mut k = 0;
        while k < chosen.len() && chosen.len() > 1 {
            let mut without = free.to_vec();
            for (i, v) in chosen.iter().enumerate() {
                if i != k {
                    hold(&mut without, v, 1.0);
                }
            }
            if place_gang_models(&mut without, job, placement, models).is_some() {
                chosen.remove(k);
            } else {
                k += 1;
            }
        }
        let mut t = free.to_vec();
        for v in &chosen {
            hold(&mut t, v, 1.0);
        }
        match place_gang_models(&mut t, job, placement, models) {
            Some(p) => Victims::Found(p, t, chosen),
            None => Victims::TooFew,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pharos_core::{Node, QueueSpec};

    fn res(cpus: f64, gpus: u32, model: Option<&str>) -> LearnerResources {
        LearnerResources {
            cpus,
            memory_bytes: 1 << 30,
            gpus,
            gpu_type: model.map(String::from),
        }
    }

    fn nodes() -> Vec<Node> {
        (0..2)
            .map(|i| Node {
                name: format!("n{i}"),
                cpus: 8.0,
                memory_bytes: 64 << 30,
                gpus: BTreeMap::from([("v100".to_string(), 2)]),
            })
            .collect()
    }

    fn pending(id: u64, priority: i32, learners: u32, r: LearnerResources) -> PendingJob {
        PendingJob {
            id,
            queue: "default".into(),
            priority,
            submitted_s: id as f64,
            learners,
            per_learner: r,
            duration_s: BTreeMap::new(),
            attained_gpu_s: 0.0,
        }
    }

    fn queues(quota: &[(&str, f64)]) -> Vec<QueueSpec> {
        vec![QueueSpec {
            name: "default".into(),
            quota: quota.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }]
    }

    fn run(
        s: &mut GangScheduler,
        nodes: &[Node],
        q: &[QueueSpec],
        p: &[PendingJob],
        r: &[RunningJob],
    ) -> SchedDecision {
        s.decide(&SchedView {
            explain: true,
            now_s: 100.0,
            nodes,
            queues: q,
            pending: p,
            running: r,
        })
    }

    #[test]
    fn gangs_are_placed_whole_or_not_at_all() {
        let n = nodes();
        let q = queues(&[]);
        let mut s = GangScheduler::new(GangParams::default());
        // 3 learners of 6 CPUs: only two fit (one per node): none is placed.
        let d = run(&mut s, &n, &q, &[pending(1, 0, 3, res(6.0, 0, None))], &[]);
        assert!(d.start.is_empty());
        assert!(d.waiting[0].1.contains("never fits"), "{:?}", d.waiting);
        // 2 learners of 6 CPUs: one on each node.
        let d = run(&mut s, &n, &q, &[pending(1, 0, 2, res(6.0, 0, None))], &[]);
        let nodes_used: Vec<usize> = d.start[0].1.iter().map(|(n, _)| *n).collect();
        assert_eq!(nodes_used, vec![0, 1]);
        // GPUs by model: 3 learners of 1 v100 pack two on node 0, one on node 1.
        let d = run(
            &mut s,
            &n,
            &q,
            &[pending(2, 0, 3, res(1.0, 1, Some("v100")))],
            &[],
        );
        let p = &d.start[0].1;
        assert_eq!(p.iter().filter(|(n, _)| *n == 0).count(), 2);
        assert!(p.iter().all(|(_, m)| m.as_deref() == Some("v100")));
        // An unknown model never fits.
        let d = run(
            &mut s,
            &n,
            &q,
            &[pending(3, 0, 1, res(1.0, 1, Some("a100")))],
            &[],
        );
        assert!(d.waiting[0].1.contains("never fits"));
    }

    #[test]
    fn quotas_priorities_and_backfill() {
        let n = nodes();
        let q = queues(&[("gpu", 2.0)]);
        let mut s = GangScheduler::new(GangParams::default());
        // Three 1-GPU jobs, quota of 2 GPUs: the third waits with the quota as reason.
        let jobs: Vec<PendingJob> = (1..=3)
            .map(|i| pending(i, 0, 1, res(1.0, 1, None)))
            .collect();
        let d = run(&mut s, &n, &q, &jobs, &[]);
        assert_eq!(d.start.len(), 2);
        assert!(d.waiting[0].1.contains("quota for gpu"), "{:?}", d.waiting);
        // Priority first: the later, higher-priority job takes the node.
        let q = queues(&[]);
        let big = |id, prio| pending(id, prio, 1, res(8.0, 0, None));
        let d = run(&mut s, &n[..1], &q, &[big(1, 0), big(2, 5)], &[]);
        assert_eq!(d.start[0].0, 2);
        // Backfill: a big job waits, a small one behind it still starts; without
        // backfill it waits behind the big one.
        let jobs = [
            pending(1, 0, 1, res(6.0, 0, None)),
            pending(2, 0, 1, res(2.0, 0, None)),
        ];
        let running = [RunningJob {
            id: 9,
            queue: "default".into(),
            priority: 0,
            started_s: 0.0,
            per_learner: res(4.0, 0, None),
            placement: vec![(0, None), (1, None)],
            preemptible: false,
            attained_gpu_s: 0.0,
        }];
        let d = run(&mut s, &n, &q, &jobs, &running);
        assert_eq!(d.start.iter().map(|x| x.0).collect::<Vec<_>>(), vec![2]);
        let mut strict = GangScheduler::new(GangParams {
            backfill: false,
            ..GangParams::default()
        });
        let d = run(&mut strict, &n, &q, &jobs, &running);
        assert!(d.start.is_empty());
        assert!(
            d.waiting
                .iter()
                .any(|(id, why)| *id == 2 && why.contains("behind job 1"))
        );
    }

    /// Least attained service preempts by service, not priority; FIFO and SJF never
    /// preempt; only the victims needed are halted.
    #[test]
    fn las_preempts_by_attained_service_and_only_what_is_needed() {
        let n = nodes();
        let q = queues(&[]);
        let running = |id: u64, attained: f64| RunningJob {
            id,
            queue: "default".into(),
            priority: 5,
            started_s: id as f64,
            per_learner: res(4.0, 0, None),
            placement: vec![(0, None)],
            preemptible: true,
            attained_gpu_s: attained,
        };
        // Node 0: 10 (4 CPUs, service used up) and 11 (4, fresh). Node 1: 20 (2 CPUs,
        // used up, the youngest) and 21 (6, fresh).
        let on = |mut r: RunningJob, node: usize, cpus: f64| {
            r.placement = vec![(node, None)];
            r.per_learner = res(cpus, 0, None);
            r
        };
        let r = [
            on(running(10, 1e6), 0, 4.0),
            on(running(11, 0.0), 0, 4.0),
            on(running(20, 1e6), 1, 2.0),
            on(running(21, 0.0), 1, 6.0),
        ];
        let newcomer = pending(1, 0, 1, res(4.0, 0, None));
        let mut las = GangScheduler::new(GangParams {
            order: Order::Las,
            ..GangParams::default()
        });
        let d = run(&mut las, &n, &q, std::slice::from_ref(&newcomer), &r);
        // Youngest first, 20 is tried, but only halting 10 makes room: 20 keeps running.
        assert_eq!(d.preempt, vec![10], "{d:?}");
        assert_eq!(d.start[0].1[0].0, 0);
        for order in [Order::Fifo, Order::Sjf] {
            let mut s = GangScheduler::new(GangParams {
                order,
                ..GangParams::default()
            });
            let d = run(&mut s, &n, &q, std::slice::from_ref(&newcomer), &r);
            assert!(d.preempt.is_empty() && d.start.is_empty(), "{order:?}");
        }
    }

    #[test]
    fn preemption_halts_lower_priority_youngest_first_only_when_enough() {
        let n = nodes();
        let q = queues(&[]);
        let mut s = GangScheduler::new(GangParams::default());
        let running = |id, prio, started| RunningJob {
            id,
            queue: "default".into(),
            priority: prio,
            started_s: started,
            per_learner: res(8.0, 0, None),
            placement: vec![(id as usize - 10, None)],
            preemptible: true,
            attained_gpu_s: 0.0,
        };
        let r = [running(10, 0, 1.0), running(11, 0, 5.0)];
        // A priority-5 job of one 8-CPU learner: halts the youngest (11) only.
        let d = run(&mut s, &n, &q, &[pending(1, 5, 1, res(8.0, 0, None))], &r);
        assert_eq!(d.preempt, vec![11]);
        assert_eq!(d.start[0].1[0].0, 1);
        // Same priority: no preemption.
        let d = run(&mut s, &n, &q, &[pending(1, 0, 1, res(8.0, 0, None))], &r);
        assert!(d.preempt.is_empty() && d.start.is_empty());
        // Halting everything would not be enough (3 x 8 CPUs): nobody is halted.
        let d = run(&mut s, &n, &q, &[pending(1, 5, 3, res(6.0, 0, None))], &r);
        assert!(d.preempt.is_empty() && d.start.is_empty());
        // Preemption off.
        let mut off = GangScheduler::new(GangParams {
            preemption: false,
            ..GangParams::default()
        });
        let d = run(&mut off, &n, &q, &[pending(1, 5, 1, res(8.0, 0, None))], &r);
        assert!(d.preempt.is_empty() && d.start.is_empty());
    }
}
