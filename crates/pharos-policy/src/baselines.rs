//! The published autoscalers pharos is compared with, as pure policies.

use pharos_core::{ClusterView, Decision, InferencePolicy, JobView};
use serde::{Deserialize, Serialize};

use crate::window::CounterWindow;

fn clamp_job(j: &JobView<'_>, x: u32) -> u32 {
    x.clamp(j.min_replicas, j.max_replicas)
}

/// `x` within the job's bounds and under the policy's own replica cap (Ray Serve's
/// `max_replicas`, Knative's `max-scale`, an HPA's `maxReplicas`), when it has one.
pub(crate) fn clamp_capped(j: &JobView<'_>, x: u32, cap: Option<u32>) -> u32 {
    clamp_job(j, cap.map_or(x, |c| x.min(c)))
}

// ---------------------------------------------------------------------------------
// FairShare

/// `fairshare`: a static equal split, set once before traffic arrives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FairShareParams {
    /// Replicas per job; default floor(capacity / sum of every job's cpus per replica),
    /// i.e. floor(R / N) for one-vCPU replicas.
    #[serde(default)]
    pub replicas_per_job: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct FairShare {
    params: FairShareParams,
}

impl FairShare {
    pub fn new(params: FairShareParams) -> Self {
        Self { params }
    }

    /// The replicas per job this policy gives a cluster.
    pub fn replicas_per_job(&self, view: &ClusterView<'_>) -> u32 {
        self.params.replicas_per_job.unwrap_or_else(|| {
            let per_round: f64 = view.jobs.iter().map(|j| j.cpus_per_replica).sum();
            ((view.capacity_cpus / per_round) + 1e-9).floor().max(1.0) as u32
        })
    }
}

impl InferencePolicy for FairShare {
    fn name(&self) -> &str {
        "fairshare"
    }
    fn interval_s(&self) -> f64 {
        f64::INFINITY
    }
    fn initial_decision(&mut self, view: &ClusterView<'_>) -> Decision {
        let n = self.replicas_per_job(view);
        Decision::targets(view.jobs.iter().map(|j| clamp_job(j, n)))
    }
    fn decide(&mut self, view: &ClusterView<'_>) -> Decision {
        Decision::unchanged(view.jobs.len())
    }
}

// ---------------------------------------------------------------------------------
// Oneshot and AIAD: latency-threshold controllers with sustained-condition delays.

/// Parameters shared by `oneshot` and `aiad` (the Faro artifact's defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThresholdParams {
    pub interval_s: f64,
    /// The mean latency is taken over requests completed in this window.
    pub look_back_s: f64,
    /// Scale up after the latency has been over the SLO this long (consecutive checks).
    pub upscale_delay_s: f64,
    /// Scale down after the latency has been at or under the SLO this long.
    pub downscale_delay_s: f64,
    /// How a refused (dropped) request counts in the mean latency. The published
    /// controllers average every request that came back, a refusal included at the time
    /// it took (two router hops, about 9 ms in the published simulator): each drop counts
    /// as this many seconds, beside at least one served request (a window with requests
    /// but nothing served is over the SLO). `null` leaves drops out (the served
    /// requests' mean).
    pub drop_latency_s: Option<f64>,
    /// Drop a job's action while it still has replicas starting from the last one (the
    /// published controller's executor is busy until they are ready: the action is lost
    /// and the count starts over). A target waiting for capacity does not hold the job
    /// (the published executor waits for it too, but a job could then never act again).
    pub wait_while_scaling: bool,
}

impl Default for ThresholdParams {
    fn default() -> Self {
        Self {
            interval_s: 10.0,
            look_back_s: 30.0,
            upscale_delay_s: 30.0,
            downscale_delay_s: 600.0,
            drop_latency_s: Some(0.009),
            wait_while_scaling: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Multiply the replicas by mean latency / SLO (Oneshot).
    Proportional,
    /// One replica up or down (AIAD).
    Additive,
}

/// A threshold controller: every interval, compare each job's mean latency over the
/// look-back window with its SLO latency; count consecutive checks over (and at or
/// under) it; act when the count reaches delay / interval, then start counting again.
///
/// The mean counts refused requests as `drop_latency_s` each (by default, as the
/// published controllers measure it); a window in which requests arrived but none came
/// back counts as over the SLO; a window without any request counts as latency 0 (under
/// the SLO), as in the Faro artifact. With `wait_while_scaling` (the default, as
/// published) an action for a job whose replicas are still starting is dropped.
#[derive(Debug, Clone)]
pub struct Threshold {
    name: &'static str,
    step: Step,
    params: ThresholdParams,
    window: CounterWindow,
    /// Per job: > 0 consecutive checks over the SLO, < 0 consecutive checks under it.
    streak: Vec<i64>,
}

impl Threshold {
    pub fn oneshot(params: ThresholdParams) -> Self {
        Self::new("oneshot", Step::Proportional, params)
    }
    pub fn aiad(params: ThresholdParams) -> Self {
        Self::new("aiad", Step::Additive, params)
    }
    fn new(name: &'static str, step: Step, params: ThresholdParams) -> Self {
        Self {
            name,
            step,
            params,
            window: CounterWindow::default(),
            streak: Vec::new(),
        }
    }
}

impl InferencePolicy for Threshold {
    fn name(&self) -> &str {
        self.name
    }
    fn interval_s(&self) -> f64 {
        self.params.interval_s
    }
    fn decide(&mut self, view: &ClusterView<'_>) -> Decision {
        let p = &self.params;
        self.window.record(view, p.look_back_s);
        self.streak.resize(view.jobs.len(), 0);
        let up_checks = ((p.upscale_delay_s / p.interval_s).floor() as i64).max(1);
        let down_checks = ((p.downscale_delay_s / p.interval_s).floor() as i64).max(1);
        let mut d = Decision::unchanged(view.jobs.len());
        for (i, j) in view.jobs.iter().enumerate() {
            let w = self.window.delta(i, p.look_back_s);
            // Refusals count only beside served requests: a window in which nothing was
            // served while requests came (a job without replicas) is over the SLO.
            let (sum, n) = match p.drop_latency_s {
                Some(d) if w.completed > 0 => (
                    w.latency_sum_s + d * w.dropped as f64,
                    w.completed + w.dropped,
                ),
                _ => (w.latency_sum_s, w.completed),
            };
            let latency = if n > 0 {
                sum / n as f64
            } else if w.arrivals > 0 || j.queued + j.in_flight > 0 {
                f64::INFINITY
            } else {
                0.0
            };
            // Busy while replicas start; not while a target waits for capacity that may
            // never come (the job would never act again).
            let busy = p.wait_while_scaling && j.starting_replicas > 0;
            let slo = j.slo.latency_s;
            let s = &mut self.streak[i];
            let cur = j.target_replicas;
            if latency > slo {
                *s = if *s < 0 { 1 } else { *s + 1 };
                if *s >= up_checks {
                    *s = 0;
                    let new = match self.step {
                        Step::Additive => cur + 1,
                        Step::Proportional if latency.is_finite() => {
                            (cur as f64 * latency / slo).ceil() as u32
                        }
                        Step::Proportional => j.max_replicas,
                    };
                    if !busy {
                        d.target_replicas[i] = Some(clamp_job(j, new));
                    }
                }
            } else {
                *s = if *s > 0 { -1 } else { *s - 1 };
                if -*s >= down_checks {
                    *s = 0;
                    let new = match self.step {
                        Step::Additive => cur.saturating_sub(1),
                        Step::Proportional => (cur as f64 * latency / slo).ceil() as u32,
                    };
                    if !busy {
                        d.target_replicas[i] = Some(clamp_job(j, new));
                    }
                }
            }
        }
        d
    }
}

// ---------------------------------------------------------------------------------
// Ray Serve's default autoscaler

/// `rayserve`: Ray Serve's default request-based autoscaling (its documented defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RayServeParams {
    /// Ray's control loop period.
    pub interval_s: f64,
    pub look_back_period_s: f64,
    pub target_ongoing_requests: f64,
    pub upscale_delay_s: f64,
    pub downscale_delay_s: f64,
    pub upscaling_factor: f64,
    pub downscaling_factor: f64,
    /// The deployment's `max_replicas` (Ray requires one; `null`: the job's bound).
    pub max_replicas: Option<u32>,
}

impl Default for RayServeParams {
    fn default() -> Self {
        Self {
            interval_s: 0.1,
            look_back_period_s: 30.0,
            target_ongoing_requests: 2.0,
            upscale_delay_s: 30.0,
            downscale_delay_s: 600.0,
            upscaling_factor: 1.0,
            downscaling_factor: 1.0,
            max_replicas: None,
        }
    }
}

/// Every control period: total = time-weighted mean over the look-back period of the
/// job's queued plus running requests; desired = total / target_ongoing_requests;
/// scaled = ceil(cur + factor (desired - cur)), clamped to the job's bounds; an increase
/// is applied after `upscale_delay_s` of consecutive periods wanting more, a decrease
/// after `downscale_delay_s`.
#[derive(Debug, Clone)]
pub struct RayServe {
    params: RayServeParams,
    window: CounterWindow,
    counter: Vec<i64>,
}

impl RayServe {
    pub fn new(params: RayServeParams) -> Self {
        Self {
            params,
            window: CounterWindow::default(),
            counter: Vec::new(),
        }
    }
}

impl InferencePolicy for RayServe {
    fn name(&self) -> &str {
        "rayserve"
    }
    fn interval_s(&self) -> f64 {
        self.params.interval_s
    }
    fn decide(&mut self, view: &ClusterView<'_>) -> Decision {
        let p = &self.params;
        self.window.record(view, p.look_back_period_s);
        self.counter.resize(view.jobs.len(), 0);
        let up_periods = (p.upscale_delay_s / p.interval_s).round() as i64;
        let down_periods = (p.downscale_delay_s / p.interval_s).round() as i64;
        let mut d = Decision::unchanged(view.jobs.len());
        for (i, j) in view.jobs.iter().enumerate() {
            let cur = j.target_replicas;
            let w = self.window.delta(i, p.look_back_period_s);
            let desired = w.mean_ongoing() / p.target_ongoing_requests;
            let factor = if desired > cur as f64 {
                p.upscaling_factor
            } else {
                p.downscaling_factor
            };
            let scaled = (cur as f64 + factor * (desired - cur as f64))
                .ceil()
                .max(0.0) as u32;
            let scaled = clamp_capped(j, scaled, p.max_replicas);
            let c = &mut self.counter[i];
            if scaled > cur {
                *c = (*c).max(0) + 1;
                if *c > up_periods {
                    *c = 0;
                    d.target_replicas[i] = Some(scaled);
                }
            } else if scaled < cur {
                *c = (*c).min(0) - 1;
                if -*c > down_periods {
                    *c = 0;
                    d.target_replicas[i] = Some(scaled);
                }
            } else {
                *c = 0;
            }
        }
        d
    }
}

// ---------------------------------------------------------------------------------
// Knative KPA

/// `kpa`: Knative's pod autoscaler with its documented defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KpaParams {
    pub interval_s: f64,
    pub stable_window_s: f64,
    pub panic_window_s: f64,
    /// Target concurrency per pod before utilisation; by default the replica's hard
    /// concurrency limit (Knative's soft target defaults to `containerConcurrency` when
    /// that is set), else 100 (`container-concurrency-target-default`).
    pub target_concurrency: Option<f64>,
    pub target_utilization: f64,
    /// Enter panic mode when the panic-window desire is this many times the ready pods.
    pub panic_threshold: f64,
    pub max_scale_up_rate: f64,
    pub max_scale_down_rate: f64,
    /// The revision's `autoscaling.knative.dev/max-scale` (`null`: the job's bound).
    pub max_replicas: Option<u32>,
}

impl Default for KpaParams {
    fn default() -> Self {
        Self {
            interval_s: 2.0,
            stable_window_s: 60.0,
            panic_window_s: 6.0,
            target_concurrency: None,
            target_utilization: 0.7,
            panic_threshold: 2.0,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            max_replicas: None,
        }
    }
}

/// Every tick: observed concurrency (requests in the system) averaged over the stable
/// and the panic window; desired = ceil(observed / (target x utilisation)) for each,
/// bounded by the scale-up and scale-down rates; panic mode starts when the panic desire
/// is at least `panic_threshold` x ready pods, holds the replicas from falling while it
/// lasts, and ends after a whole stable window without that condition.
#[derive(Debug, Clone)]
pub struct Kpa {
    params: KpaParams,
    window: CounterWindow,
    /// Per job: the time panic mode was last (re)entered, and the panic floor.
    panic: Vec<Option<(f64, u32)>>,
}

impl Kpa {
    pub fn new(params: KpaParams) -> Self {
        Self {
            params,
            window: CounterWindow::default(),
            panic: Vec::new(),
        }
    }
}

impl InferencePolicy for Kpa {
    fn name(&self) -> &str {
        "kpa"
    }
    fn interval_s(&self) -> f64 {
        self.params.interval_s
    }
    fn decide(&mut self, view: &ClusterView<'_>) -> Decision {
        let p = &self.params;
        let now = view.now_s;
        self.window.record(view, p.stable_window_s);
        self.panic.resize(view.jobs.len(), None);
        let mut d = Decision::unchanged(view.jobs.len());
        for (i, j) in view.jobs.iter().enumerate() {
            let per_pod = p.target_concurrency.unwrap_or(if j.max_concurrent > 0 {
                j.max_concurrent as f64
            } else {
                100.0
            }) * p.target_utilization;
            let ready = j.ready_replicas.max(1) as f64;
            let max_up = (p.max_scale_up_rate * ready).ceil();
            let max_down = (ready / p.max_scale_down_rate).floor();
            let stable = self.window.delta(i, p.stable_window_s).mean_ongoing();
            let panic_obs = self.window.delta(i, p.panic_window_s).mean_ongoing();
            let want_stable = (stable / per_pod).ceil().clamp(max_down, max_up);
            let want_panic = (panic_obs / per_pod).ceil().clamp(max_down, max_up);
            let over = (panic_obs / per_pod).ceil() / ready >= p.panic_threshold;
            let state = &mut self.panic[i];
            match state {
                None if over => *state = Some((now, 0)),
                Some((since, _)) if over => *since = now,
                Some((since, _)) if now >= *since + p.stable_window_s => *state = None,
                _ => {}
            }
            let desired = match state {
                Some((_, floor)) => {
                    let x = (want_panic as u32).max(*floor).max(j.target_replicas);
                    *floor = x;
                    x
                }
                None => want_stable as u32,
            };
            let desired = clamp_capped(j, desired, p.max_replicas);
            if desired != j.target_replicas {
                d.target_replicas[i] = Some(desired);
            }
        }
        d
    }
}

// ---------------------------------------------------------------------------------
// Kubernetes HPA

/// The metric an HPA scales on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HpaMetric {
    /// CPU utilisation of the ready replicas (one busy replica is one busy core).
    Cpu,
    /// Requests in the system per ready replica.
    Concurrency,
}

/// `hpa`: the Kubernetes Horizontal Pod Autoscaler with its documented defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HpaParams {
    pub interval_s: f64,
    pub metric: HpaMetric,
    /// Target value: a utilisation in (0, 1] for `cpu` (80% is `kubectl autoscale`'s
    /// default), requests per replica for `concurrency`.
    pub target: f64,
    pub tolerance: f64,
    /// Scale-down takes the highest recommendation over this window.
    pub downscale_stabilization_s: f64,
    /// The HPA's `maxReplicas` (`null`: the job's bound).
    pub max_replicas: Option<u32>,
    /// A forecast floor under the recommendation (ours; Kubernetes' HPA has none): see
    /// [`crate::faro::ForecastHpa`].
    pub forecast: Option<crate::faro::HpaForecast>,
}

impl Default for HpaParams {
    fn default() -> Self {
        Self {
            interval_s: 15.0,
            metric: HpaMetric::Cpu,
            target: 0.8,
            tolerance: 0.1,
            downscale_stabilization_s: 300.0,
            max_replicas: None,
            forecast: None,
        }
    }
}

/// Every 15 s: ratio = metric over the last interval / target; no change within the
/// tolerance, else desired = ceil(ready x ratio); scale-up limited to max(+4 pods,
/// +100%) per period; scale-down to the highest recommendation of the stabilisation
/// window.
#[derive(Debug, Clone)]
pub struct Hpa {
    params: HpaParams,
    window: CounterWindow,
    /// Per job: recent (time, recommendation).
    recs: Vec<std::collections::VecDeque<(f64, u32)>>,
}

impl Hpa {
    pub fn new(params: HpaParams) -> Self {
        Self {
            params,
            window: CounterWindow::default(),
            recs: Vec::new(),
        }
    }
}

impl InferencePolicy for Hpa {
    fn name(&self) -> &str {
        "hpa"
    }
    fn interval_s(&self) -> f64 {
        self.params.interval_s
    }
    fn decide(&mut self, view: &ClusterView<'_>) -> Decision {
        let p = &self.params;
        let now = view.now_s;
        self.window.record(view, p.interval_s);
        self.recs.resize(view.jobs.len(), Default::default());
        let mut d = Decision::unchanged(view.jobs.len());
        for (i, j) in view.jobs.iter().enumerate() {
            let w = self.window.delta(i, p.interval_s);
            let metric = match p.metric {
                HpaMetric::Cpu => w.utilisation(),
                HpaMetric::Concurrency => {
                    (w.ready_replica_s > 0.0).then(|| w.ongoing_req_s / w.ready_replica_s)
                }
            };
            let Some(metric) = metric else { continue };
            let cur = j.target_replicas;
            let ready = j.ready_replicas.max(1);
            let ratio = metric / p.target;
            let mut rec = if (ratio - 1.0).abs() <= p.tolerance {
                cur
            } else {
                (ready as f64 * ratio).ceil() as u32
            };
            let up_limit = (cur + 4).max(cur * 2);
            rec = rec.min(up_limit);
            let recs = &mut self.recs[i];
            recs.push_back((now, rec));
            while recs
                .front()
                .is_some_and(|(t, _)| *t < now - p.downscale_stabilization_s)
            {
                recs.pop_front();
            }
            let stabilised = if rec < cur {
                recs.iter().map(|(_, r)| *r).max().unwrap_or(rec).min(cur)
            } else {
                rec
            };
            let new = clamp_capped(j, stabilised, p.max_replicas);
            if new != cur {
                d.target_replicas[i] = Some(new);
            }
        }
        d
    }
}
