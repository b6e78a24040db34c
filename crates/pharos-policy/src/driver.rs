//! The policy driver: the one piece of code that turns what a cluster looks like into a
//! policy call and the policy's answer into targets. The simulator and the live server
//! both drive their inference policy through a [`PolicyDriver`], so that what is
//! measured in simulation is what runs live:
//!
//! - **when** a policy is called: an initial decision at time 0, then at its first call
//!   time and every interval after (no faster than [`MIN_INTERVAL_S`]); a caller that fell
//!   behind (a live loop) skips to the latest tick due, and the policy is shown the tick's
//!   time, not the wall time a few milliseconds later;
//! - **what** its answer becomes: accept rates clamped to 0..=1 (a number that is not
//!   finite admits everything: a broken policy never sheds load), targets clamped to each
//!   job's bounds and then, under [`OverCapacity::Trim`], trimmed so that the targets of
//!   all jobs fit the capacity.
//!
//! Architecture invariant: no I/O and no clock, like the policies; the caller says what
//! time it is.

use pharos_core::{ClusterView, Decision, InferencePolicy};
use serde::{Deserialize, Serialize};

/// The shortest interval between two policy calls, whatever the policy asks for.
pub const MIN_INTERVAL_S: f64 = 0.05;

/// What the cluster does with targets whose replicas do not fit its capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverCapacity {
    /// Trim the target when it is decided so that the targets of all jobs fit the
    /// capacity (the Faro controller's rule: an upscale is cut to the free quota and the
    /// rest is dropped; a policy that wants more must ask again).
    #[default]
    Trim,
    /// Keep the target; replicas that do not fit wait for capacity and start, first come
    /// first served, as it is freed (a Kubernetes Deployment under a resource quota).
    Wait,
}

/// One policy call and what the driver made of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The time the policy was shown (`view.now_s`).
    pub tick_s: f64,
    pub initial: bool,
    /// The policy's answer as it gave it.
    pub decision: Decision,
    /// Every job's target after the decision (clamped, trimmed), in view order.
    pub targets: Vec<u32>,
    /// The accept rate to set per job (`None`: leave it), sanitised.
    pub accept_rate: Vec<Option<f64>>,
}

/// Calls an inference policy on its schedule and applies its answers.
pub struct PolicyDriver<P> {
    policy: P,
    over_capacity: OverCapacity,
    /// The next regular call's time (infinite: never).
    next_call_s: f64,
    initial_pending: bool,
}

impl<P: InferencePolicy> PolicyDriver<P> {
    pub fn new(policy: P, over_capacity: OverCapacity) -> Self {
        let first = policy.first_call_s();
        let next_call_s = if first.is_finite() && policy.interval_s().is_finite() {
            first.max(0.0)
        } else {
            f64::INFINITY
        };
        Self {
            policy,
            over_capacity,
            next_call_s,
            initial_pending: true,
        }
    }

    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// Swaps in another policy (the same one refitted on newer data) keeping the
    /// schedule: the next call is when it was due.
    pub fn replace_policy(&mut self, policy: P) {
        self.policy = policy;
    }

    pub fn over_capacity(&self) -> OverCapacity {
        self.over_capacity
    }

    /// The policy's interval, floored at [`MIN_INTERVAL_S`] (infinite: called once).
    pub fn interval_s(&self) -> f64 {
        let i = self.policy.interval_s();
        if i.is_finite() {
            i.max(MIN_INTERVAL_S)
        } else {
            i
        }
    }

    /// Whether the initial decision is still to be asked for.
    pub fn initial_pending(&self) -> bool {
        self.initial_pending
    }

    /// When the next regular call is due, if ever.
    pub fn next_call_s(&self) -> Option<f64> {
        self.next_call_s.is_finite().then_some(self.next_call_s)
    }

    /// The tick a regular call is due for at time `now_s`: the latest
    /// `next + k * interval` (k >= 0) at or before `now_s`; `None` before the next call.
    pub fn due(&self, now_s: f64) -> Option<f64> {
        let next = self.next_call_s()?;
        if now_s < next {
            return None;
        }
        let interval = self.interval_s();
        if !interval.is_finite() {
            return Some(next);
        }
        Some(next + ((now_s - next) / interval).floor() * interval)
    }

    /// The initial decision (the deployment that exists before traffic arrives), shown
    /// the view at time 0. Each job's target is the decision's or else `configured`
    /// (its configured initial replicas), applied as a rise from its minimum, so that
    /// the initial targets of all jobs fit the capacity like any decision's.
    pub fn initial(&mut self, view: &ClusterView<'_>, configured: &[u32]) -> Step {
        self.initial_pending = false;
        let decision = self.policy.initial_decision(view);
        self.apply(view, decision, Some(configured))
    }

    /// A regular call at the tick `view.now_s` (from [`PolicyDriver::due`]); the next call
    /// is one interval after it.
    pub fn decide(&mut self, view: &ClusterView<'_>) -> Step {
        let decision = self.policy.decide(view);
        let interval = self.interval_s();
        self.next_call_s = if interval.is_finite() {
            view.now_s + interval
        } else {
            f64::INFINITY
        };
        self.apply(view, decision, None)
    }

    /// Why the last decision is what it is (the policy's own words).
    pub fn explain(&self) -> Option<Vec<Option<pharos_core::Explanation>>> {
        self.policy.explain()
    }

    fn apply(
        &self,
        view: &ClusterView<'_>,
        decision: Decision,
        configured: Option<&[u32]>,
    ) -> Step {
        let mut targets: Vec<u32>;
        match configured {
            None => {
                targets = view.jobs.iter().map(|j| j.target_replicas).collect();
                set_targets(
                    self.over_capacity,
                    view,
                    &mut targets,
                    &decision.target_replicas,
                );
            }
            Some(configured) => {
                targets = view.jobs.iter().map(|j| j.min_replicas).collect();
                let wanted: Vec<Option<u32>> = (0..view.jobs.len())
                    .map(|i| {
                        decision
                            .target_replicas
                            .get(i)
                            .copied()
                            .flatten()
                            .or_else(|| configured.get(i).copied())
                    })
                    .collect();
                set_targets(self.over_capacity, view, &mut targets, &wanted);
            }
        }
        let accept_rate = (0..view.jobs.len())
            .map(|i| {
                decision
                    .accept_rate
                    .get(i)
                    .copied()
                    .flatten()
                    .map(accept_rate)
            })
            .collect();
        Step {
            tick_s: view.now_s,
            initial: configured.is_some(),
            decision,
            targets,
            accept_rate,
        }
    }
}

/// An accept rate as a router can apply it: clamped to 0..=1; a number that is not
/// finite admits everything.
pub fn accept_rate(a: f64) -> f64 {
    if a.is_finite() {
        a.clamp(0.0, 1.0)
    } else {
        1.0
    }
}

/// Set new targets (`wanted`, `None`: keep), clamped to each job's bounds in `view`:
/// decreases first, then increases in job order, each trimmed (under
/// [`OverCapacity::Trim`]) so that the targets of all jobs fit `view.capacity_cpus` (a
/// quota on targets; the replicas that hold capacity are reconciled afterwards).
/// `targets` holds every job's current target and is updated in place.
pub fn set_targets(
    over_capacity: OverCapacity,
    view: &ClusterView<'_>,
    targets: &mut [u32],
    wanted: &[Option<u32>],
) {
    let jobs = view.jobs;
    let wanted: Vec<Option<u32>> = (0..targets.len())
        .map(|i| {
            wanted
                .get(i)
                .copied()
                .flatten()
                .map(|t| t.clamp(jobs[i].min_replicas, jobs[i].max_replicas))
        })
        .collect();
    for (i, w) in wanted.iter().enumerate() {
        if let Some(t) = *w
            && t < targets[i]
        {
            targets[i] = t;
        }
    }
    for (i, w) in wanted.iter().enumerate() {
        let Some(t) = *w else { continue };
        if t <= targets[i] {
            continue;
        }
        if over_capacity == OverCapacity::Wait {
            targets[i] = t;
            continue;
        }
        let cpus = jobs[i].cpus_per_replica;
        let others: f64 = targets
            .iter()
            .zip(jobs)
            .enumerate()
            .filter(|(k, _)| *k != i)
            .map(|(_, (t, j))| *t as f64 * j.cpus_per_replica)
            .sum();
        let fit = ((view.capacity_cpus - others) / cpus + 1e-9)
            .floor()
            .max(0.0) as u32;
        targets[i] = t.min(fit).max(targets[i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pharos_core::{JobCounters, JobView, Slo};

    struct Fixed(Decision, f64);
    impl InferencePolicy for Fixed {
        fn name(&self) -> &str {
            "fixed"
        }
        fn interval_s(&self) -> f64 {
            self.1
        }
        fn decide(&mut self, _: &ClusterView<'_>) -> Decision {
            self.0.clone()
        }
    }

    fn job(name: &str, target: u32, max: u32) -> JobView<'_> {
        JobView {
            name,
            slo: Slo {
                latency_s: 1.0,
                percentile: 99.0,
            },
            processing_time_s: 0.1,
            cpus_per_replica: 2.0,
            min_replicas: 1,
            max_replicas: max,
            max_concurrent: 1,
            target_replicas: target,
            ready_replicas: target,
            starting_replicas: 0,
            queued: 0,
            in_flight: 0,
            accept_rate: 1.0,
            counters: JobCounters::default(),
            minute_arrivals: &[],
            cold_start_s: None,
        }
    }

    fn view<'a>(now_s: f64, capacity: f64, jobs: &'a [JobView<'a>]) -> ClusterView<'a> {
        ClusterView {
            now_s,
            capacity_cpus: capacity,
            free_cpus: 0.0,
            jobs,
        }
    }

    #[test]
    fn ticks_skip_to_the_latest_due_and_the_next_follows_the_tick() {
        let mut d = PolicyDriver::new(Fixed(Decision::unchanged(1), 10.0), OverCapacity::Trim);
        assert_eq!(d.due(9.9), None);
        assert_eq!(d.due(10.0), Some(10.0));
        // A loop 25 s late is shown the latest tick due, not its wall time.
        assert_eq!(d.due(35.2), Some(30.0));
        let jobs = [job("a", 1, 5)];
        d.decide(&view(30.0, 10.0, &jobs));
        assert_eq!(d.next_call_s(), Some(40.0));
        // Intervals are floored.
        let d = PolicyDriver::new(Fixed(Decision::unchanged(1), 0.001), OverCapacity::Trim);
        assert_eq!(d.interval_s(), MIN_INTERVAL_S);
        // A policy with no interval is called once, at its first call time.
        let d = PolicyDriver::new(
            Fixed(Decision::unchanged(1), f64::INFINITY),
            OverCapacity::Trim,
        );
        assert_eq!(d.next_call_s(), None);
    }

    #[test]
    fn targets_are_clamped_then_trimmed_decreases_first() {
        // 10 vCPUs, 2 per replica: job a wants 4 (8 vCPUs) while b holds 3 (6): a gets
        // what is left after b's decrease to 1, 4 replicas.
        let jobs = [job("a", 1, 10), job("b", 3, 10)];
        let v = view(0.0, 10.0, &jobs);
        let mut t = vec![1, 3];
        set_targets(OverCapacity::Trim, &v, &mut t, &[Some(4), Some(1)]);
        assert_eq!(t, vec![4, 1]);
        // Without b's decrease a gets 2, and a target over max is clamped first.
        let mut t = vec![1, 3];
        set_targets(OverCapacity::Trim, &v, &mut t, &[Some(40), None]);
        assert_eq!(t, vec![2, 3]);
        let mut t = vec![1, 3];
        set_targets(OverCapacity::Wait, &v, &mut t, &[Some(40), Some(0)]);
        assert_eq!(t, vec![10, 1]);
    }

    #[test]
    fn accept_rates_are_sanitised_the_same_everywhere() {
        let jobs = [
            job("a", 1, 5),
            job("b", 1, 5),
            job("c", 1, 5),
            job("d", 1, 5),
        ];
        let decision = Decision {
            target_replicas: vec![None; 4],
            accept_rate: vec![Some(f64::NEG_INFINITY), Some(f64::NAN), Some(-0.5), None],
        };
        let mut d = PolicyDriver::new(Fixed(decision, 1.0), OverCapacity::Trim);
        let s = d.decide(&view(1.0, 10.0, &jobs));
        assert_eq!(s.accept_rate, vec![Some(1.0), Some(1.0), Some(0.0), None]);
    }
}
