//! Function graphs (serverless applications): functions served by replicas that each
//! hold a share of a resource (CPUs), requests routed from function to function by
//! probabilities, several applications sharing one pool; and the seam between their
//! autoscalers and what runs them.
//!
//! A replica of function j with r units of resource serves one request at a time at
//! rate `mu_j * r` requests per second. A request waits in its function's queue; it
//! fails when it has waited `timeout_s` or finds `queue_cap` requests waiting. After
//! service it moves to function k with probability `routes[k]`, or leaves the
//! application with the remaining probability. A function may also call others in
//! parallel (`calls`, a fan-out): after its service a request goes to every called
//! function at once, each branch following its own routes until it leaves, and the
//! request continues by `routes` only when all branches are done (the fan-in). For the
//! flow balance a call is a route taken with probability 1.

use serde::{Deserialize, Serialize};

use crate::{ClusterView, SpecError};

/// One function of an application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Function {
    pub name: String,
    /// Index of the application it belongs to.
    #[serde(default)]
    pub app: usize,
    /// Requests per second one unit of resource serves.
    pub mu: f64,
    /// Resources one replica may hold: [min, max].
    pub resource: [f64; 2],
    /// The resource per replica of autoscalers that do not size replicas (default: max).
    #[serde(default)]
    pub resource_per_replica: Option<f64>,
    /// A request that has waited this long in the queue fails.
    pub timeout_s: f64,
    /// Requests that may wait; one more fails on arrival.
    pub queue_cap: u32,
    #[serde(default = "default_max_replicas")]
    pub max_replicas: u32,
    /// Replicas it always keeps (a live function's floor; 0 in simulated experiments).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_replicas: u32,
    /// (function index, probability) of the next hop after service.
    #[serde(default)]
    pub routes: Vec<(usize, f64)>,
    /// Functions called in parallel after service, all waited for (fan-out, fan-in).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<usize>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn default_max_replicas() -> u32 {
    1000
}

impl Function {
    /// The resource per replica of fixed-size autoscalers.
    pub fn fixed_resource(&self) -> f64 {
        self.resource_per_replica.unwrap_or(self.resource[1])
    }

    /// Where a served request's flow goes, as (function, expected requests per request
    /// served): every route with its probability, every call with 1.
    pub fn out_flows(&self) -> impl Iterator<Item = (usize, f64)> + '_ {
        self.routes
            .iter()
            .copied()
            .chain(self.calls.iter().map(|&k| (k, 1.0)))
    }
}

/// Applications and their functions, indexed globally.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Graph {
    /// Application names.
    pub apps: Vec<String>,
    /// The entry function of each application (where its external requests arrive).
    pub entries: Vec<usize>,
    pub functions: Vec<Function>,
}

impl Graph {
    /// Every number usable, routes in range with probabilities summing to at most 1, no
    /// closed cycle that would keep requests forever (every function's requests leave
    /// eventually).
    pub fn validate(&self) -> Result<(), SpecError> {
        let n = self.functions.len();
        if self.apps.is_empty() || n == 0 {
            return Err(SpecError::new(
                "apps",
                "needs at least one app with a function",
            ));
        }
        if self.entries.len() != self.apps.len() {
            return Err(SpecError::new("entries", "one entry function per app"));
        }
        for (a, &e) in self.entries.iter().enumerate() {
            if e >= n || self.functions[e].app != a {
                return Err(SpecError::new(
                    format!("apps[{a}].entry"),
                    "must name one of the app's own functions",
                ));
            }
        }
        for (j, f) in self.functions.iter().enumerate() {
            let at = |field: &str| format!("functions[{j}] ({}).{field}", f.name);
            if f.app >= self.apps.len() {
                return Err(SpecError::new(at("app"), "no such app"));
            }
            SpecError::check_positive(&at("mu"), f.mu)?;
            SpecError::check_positive(&at("resource[0]"), f.resource[0])?;
            if !(f.resource[1].is_finite() && f.resource[1] >= f.resource[0]) {
                return Err(SpecError::new(
                    at("resource"),
                    "must be [min, max] with min <= max",
                ));
            }
            if let Some(r) = f.resource_per_replica
                && !(r >= f.resource[0] && r <= f.resource[1])
            {
                return Err(SpecError::new(
                    at("resource_per_replica"),
                    format!("{r} is outside [{}, {}]", f.resource[0], f.resource[1]),
                ));
            }
            SpecError::check_positive(&at("timeout_s"), f.timeout_s)?;
            if f.max_replicas == 0 {
                return Err(SpecError::new(at("max_replicas"), "must be at least 1"));
            }
            if f.min_replicas > f.max_replicas {
                return Err(SpecError::new(
                    at("min_replicas"),
                    "must be at most max_replicas",
                ));
            }
            let mut sum = 0.0;
            for &(k, p) in &f.routes {
                if k >= n || self.functions[k].app != f.app {
                    return Err(SpecError::new(
                        at("routes"),
                        format!("route to function {k}: not a function of the same app"),
                    ));
                }
                if !(p.is_finite() && p > 0.0) {
                    return Err(SpecError::new(
                        at("routes"),
                        format!("probability {p} must be > 0"),
                    ));
                }
                sum += p;
            }
            if sum > 1.0 + 1e-9 {
                return Err(SpecError::new(
                    at("routes"),
                    format!("probabilities sum to {sum} > 1"),
                ));
            }
            for (i, &k) in f.calls.iter().enumerate() {
                if k >= n || self.functions[k].app != f.app || k == j {
                    return Err(SpecError::new(
                        at("calls"),
                        format!("call of function {k}: not another function of the same app"),
                    ));
                }
                if f.calls[..i].contains(&k) {
                    return Err(SpecError::new(
                        at("calls"),
                        format!("function {k} is called twice"),
                    ));
                }
            }
        }
        // Requests must leave: the expected visits (I - P')^-1 exist and are finite.
        let visits = self.visits();
        if let Some(j) = visits.iter().position(|v| !v.is_finite() || *v > 1e6) {
            return Err(SpecError::new(
                format!("functions[{j}].routes"),
                "requests routed in a closed cycle never leave",
            ));
        }
        Ok(())
    }

    /// Expected visits to each function per request entering at each app's entry: the
    /// solution of v = e + P' v, by fixed-point iteration.
    fn visits(&self) -> Vec<f64> {
        let mut entry = vec![0.0; self.functions.len()];
        for &e in &self.entries {
            entry[e] = 1.0;
        }
        self.effective_rates(&entry)
    }

    /// Arrival rates at every function when `external[j]` requests per second enter at
    /// function j: f = external + P' f (the flow balance of the routing).
    pub fn effective_rates(&self, external: &[f64]) -> Vec<f64> {
        let n = self.functions.len();
        let mut f = external.to_vec();
        for _ in 0..10_000 {
            let mut next = external.to_vec();
            for (j, func) in self.functions.iter().enumerate() {
                for (k, p) in func.out_flows() {
                    next[k] += p * f[j];
                }
            }
            let change = next
                .iter()
                .zip(&f)
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            f = next;
            if change <= 1e-12 * (1.0 + f.iter().fold(0.0f64, |m, v| m.max(v.abs()))) {
                return f;
            }
        }
        vec![f64::INFINITY; n]
    }

    /// The functions of app `a`.
    pub fn functions_of(&self, a: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.functions.len()).filter(move |&j| self.functions[j].app == a)
    }
}

/// What a function-graph autoscaler sees: every function as a job of a
/// [`ClusterView`] (replicas, queue, in-flight requests, cumulative counters; the
/// `cpus_per_replica` of a function is its current resource per replica), the graph,
/// and the requests that entered each application so far.
#[derive(Debug, Clone)]
pub struct GraphView<'a> {
    pub cluster: ClusterView<'a>,
    pub graph: &'a Graph,
    /// Cumulative external arrivals per application.
    pub external_arrivals: &'a [u64],
}

/// Per function: a replica count and a resource per replica, each `None` for "leave as
/// it is".
#[derive(Debug, Clone, PartialEq)]
pub struct GraphDecision {
    pub replicas: Vec<Option<u32>>,
    pub resource: Vec<Option<f64>>,
}

impl GraphDecision {
    pub fn unchanged(n: usize) -> Self {
        Self {
            replicas: vec![None; n],
            resource: vec![None; n],
        }
    }
}

/// An autoscaler of function graphs. Like [`crate::InferencePolicy`]: no clock (the
/// time is `view.cluster.now_s`), no I/O.
pub trait GraphPolicy: Send {
    fn name(&self) -> &str;
    /// Seconds between two decisions.
    fn interval_s(&self) -> f64;
    /// The replicas and sizes the functions start with.
    fn initial_decision(&mut self, view: &GraphView<'_>) -> GraphDecision {
        GraphDecision::unchanged(view.graph.functions.len())
    }
    fn decide(&mut self, view: &GraphView<'_>) -> GraphDecision;
}

impl<P: GraphPolicy + ?Sized> GraphPolicy for &mut P {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn interval_s(&self) -> f64 {
        (**self).interval_s()
    }
    fn initial_decision(&mut self, view: &GraphView<'_>) -> GraphDecision {
        (**self).initial_decision(view)
    }
    fn decide(&mut self, view: &GraphView<'_>) -> GraphDecision {
        (**self).decide(view)
    }
}

impl<P: GraphPolicy + ?Sized> GraphPolicy for Box<P> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn interval_s(&self) -> f64 {
        (**self).interval_s()
    }
    fn initial_decision(&mut self, view: &GraphView<'_>) -> GraphDecision {
        (**self).initial_decision(view)
    }
    fn decide(&mut self, view: &GraphView<'_>) -> GraphDecision {
        (**self).decide(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, routes: Vec<(usize, f64)>) -> Function {
        Function {
            name: name.into(),
            app: 0,
            mu: 10.0,
            resource: [0.5, 2.0],
            resource_per_replica: None,
            timeout_s: 5.0,
            queue_cap: 100,
            max_replicas: 10,
            routes,
            calls: Vec::new(),
            min_replicas: 0,
        }
    }

    #[test]
    fn effective_rates_follow_the_routing_and_cycles_are_refused() {
        // 0 -> 1 (0.6), 0 -> 2 (0.3), 1 -> 2 (0.5): the worked example's graph.
        let g = Graph {
            apps: vec!["a".into()],
            entries: vec![0],
            functions: vec![
                f("f1", vec![(1, 0.6), (2, 0.3)]),
                f("f2", vec![(2, 0.5)]),
                f("f3", vec![]),
            ],
        };
        g.validate().unwrap();
        let r = g.effective_rates(&[30.0, 1.0, 1.0]);
        assert!((r[0] - 30.0).abs() < 1e-9);
        assert!((r[1] - 19.0).abs() < 1e-9);
        assert!((r[2] - (1.0 + 9.0 + 9.5)).abs() < 1e-9);
        let cyc = Graph {
            functions: vec![f("f1", vec![(1, 1.0)]), f("f2", vec![(0, 1.0)])],
            ..g.clone()
        };
        let e = cyc.validate().unwrap_err();
        assert!(e.to_string().contains("closed cycle"), "{e}");
        let bad = Graph {
            functions: vec![
                f("f1", vec![(1, 0.7), (2, 0.6)]),
                f("f2", vec![]),
                f("f3", vec![]),
            ],
            ..g
        };
        assert!(bad.validate().unwrap_err().to_string().contains("sum to"));
    }

    #[test]
    fn a_fan_out_sends_one_request_to_every_called_function() {
        // 0 calls 1 and 2 in parallel, then goes on to 3 with probability 0.5.
        let mut fs = vec![
            f("a", vec![(3, 0.5)]),
            f("b", vec![]),
            f("c", vec![]),
            f("d", vec![]),
        ];
        fs[0].calls = vec![1, 2];
        let g = Graph {
            apps: vec!["x".into()],
            entries: vec![0],
            functions: fs,
        };
        g.validate().unwrap();
        let r = g.effective_rates(&[10.0, 0.0, 0.0, 0.0]);
        assert_eq!(r, vec![10.0, 10.0, 10.0, 5.0]);
        let mut twice = g.clone();
        twice.functions[0].calls = vec![1, 1];
        assert!(
            twice
                .validate()
                .unwrap_err()
                .to_string()
                .contains("called twice")
        );
        let mut own = g.clone();
        own.functions[0].calls = vec![0];
        assert!(own.validate().unwrap_err().to_string().contains("calls"));
        // A call back to the caller never ends.
        let mut cyc = g;
        cyc.functions[1].calls = vec![0];
        assert!(
            cyc.validate()
                .unwrap_err()
                .to_string()
                .contains("closed cycle")
        );
    }
}
