//! Function graphs as users apply them (`kind: graph`): an application of functions,
//! each run by replicas like an inference service's, with the routes a request takes
//! from one function to the next. The server runs each function as a service named
//! `GRAPH.FUNCTION` (see [`GraphSpec::function_service`]) and routes requests between
//! them; its autoscalers see the graph as a [`pharos_core::Graph`].
//!
//! A request enters at the entry function. After a function has served it, the request
//! goes to every function of its `calls` at once (fan-out), each branch following its
//! own routes until it leaves the graph, and waits for them all (fan-in); then it goes on
//! to one of `routes`, drawn by the platform with the routes' probabilities (the rest:
//! it leaves), seeded per graph so that a run can be repeated. Every function on the
//! path is sent the caller's method, path, headers and body; the caller gets the answer
//! of the last function on its path.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::service::ServiceSpec;
// A function's defaults are a service's.
use crate::service::{d_max, d_one, d_one_u32, d_queue, d_readiness, d_ready_timeout};

/// At most this many functions in one graph.
pub const MAX_FUNCTIONS: usize = 200;
/// At most this many routes or calls per function.
pub const MAX_EDGES: usize = 32;
/// A graph's name is at most this long (its functions' services are `GRAPH.FUNCTION`,
/// at most 40 characters).
pub const MAX_GRAPH_NAME: usize = 20;
/// A function's name is at most this long.
pub const MAX_FUNCTION_NAME: usize = 19;

/// A function graph (`kind: graph`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSpec {
    /// `graph`.
    pub kind: String,
    /// `[a-z0-9-]`, at most 20 characters.
    pub name: String,
    /// The function requests enter at [default: the first].
    #[serde(default)]
    pub entry: Option<String>,
    /// The entry's port [default: a free one, kept across restarts].
    #[serde(default)]
    pub port: Option<u16>,
    /// Seeds the draws of the routes.
    #[serde(default)]
    pub seed: u64,
    pub functions: Vec<FunctionSpec>,
}

/// One function of a graph: how its replicas run and where its requests go next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    /// `[a-z0-9-]`, at most 19 characters, unique in the graph.
    pub name: String,
    /// Starts one replica; `$PORT` is the port it must listen on (as for services).
    #[serde(default)]
    pub command: Vec<String>,
    /// The Ray Serve application instead of a command (Ray backend), as for services.
    #[serde(default)]
    pub ray: Option<crate::service::RayApp>,
    /// The container instead of a command (Kubernetes backend), as for services.
    #[serde(default)]
    pub kubernetes: Option<crate::service::KubeApp>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "d_readiness")]
    pub readiness_path: String,
    /// vCPUs per replica.
    #[serde(default = "d_one")]
    pub cpus: f64,
    /// The vCPUs per replica an autoscaler may choose: [min, max] [default: cpus only].
    #[serde(default)]
    pub cpus_range: Option<[f64; 2]>,
    /// What one request takes on a replica of `cpus` vCPUs, seconds.
    pub processing_time_s: f64,
    /// A request that has waited this long for a replica fails (504).
    #[serde(default = "d_timeout")]
    pub timeout_s: f64,
    #[serde(default = "d_one_u32")]
    pub min_replicas: u32,
    #[serde(default = "d_max")]
    pub max_replicas: u32,
    #[serde(default)]
    pub initial_replicas: Option<u32>,
    /// Requests one replica is sent at once.
    #[serde(default = "d_one_u32")]
    pub max_concurrent: u32,
    /// Requests that may wait for a replica; one more is dropped (503).
    #[serde(default = "d_queue")]
    pub max_queue: usize,
    #[serde(default = "d_ready_timeout")]
    pub ready_timeout_s: f64,
    /// The next function, drawn with these probabilities (their sum at most 1; the rest
    /// of the requests leave).
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Functions called in parallel after this one, all waited for.
    #[serde(default)]
    pub calls: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub to: String,
    pub p: f64,
}

fn d_timeout() -> f64 {
    30.0
}

fn check_name(field: &str, n: &str, max: usize) -> Result<(), String> {
    if n.is_empty()
        || n.len() > max
        || !n
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!(
            "{field}: {n:?} must be 1-{max} characters of a-z, 0-9 and -"
        ));
    }
    Ok(())
}

impl GraphSpec {
    /// Parses YAML or JSON; the error names what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_named(text, "spec").map_err(|e| e.message)
    }

    /// Parses YAML or JSON named `source` in messages (a file's path); the error names
    /// the field's whole path, the line and what was expected.
    pub fn parse_named(text: &str, source: &str) -> Result<Self, crate::yaml::YamlError> {
        let spec: GraphSpec = crate::yaml::parse(text, source)?;
        spec.validate()
            .map_err(|e| crate::yaml::invalid(source, &e))?;
        Ok(spec)
    }

    /// Whether a YAML or JSON document says `kind: graph` (else it is a service).
    pub fn is_graph(text: &str) -> bool {
        #[derive(Deserialize)]
        struct Kind {
            kind: Option<String>,
        }
        serde_saphyr::from_str::<Kind>(text)
            .ok()
            .and_then(|k| k.kind)
            .is_some_and(|k| k == "graph")
    }

    /// The index of a function by name.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.functions.iter().position(|f| f.name == name)
    }

    /// The entry function's index.
    pub fn entry_index(&self) -> usize {
        self.entry
            .as_deref()
            .and_then(|e| self.index(e))
            .unwrap_or(0)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.kind != "graph" {
            return Err(format!("kind: {:?} must be graph", self.kind));
        }
        check_name("name", &self.name, MAX_GRAPH_NAME)?;
        if self.functions.is_empty() {
            return Err("functions: a graph needs at least one function".into());
        }
        pharos_core::limits::check_count("functions", self.functions.len(), MAX_FUNCTIONS)
            .map_err(|e| e.to_string())?;
        if let Some(p) = self.port {
            pharos_core::limits::check_int("port", p, pharos_core::limits::MIN_PORT, u16::MAX)
                .map_err(|e| e.to_string())?;
        }
        for (j, f) in self.functions.iter().enumerate() {
            check_name(&format!("functions[{j}].name"), &f.name, MAX_FUNCTION_NAME)?;
            if self.functions[..j].iter().any(|g| g.name == f.name) {
                return Err(format!(
                    "functions[{j}].name: {:?} names two functions",
                    f.name
                ));
            }
        }
        if let Some(e) = &self.entry
            && self.index(e).is_none()
        {
            return Err(format!("entry: {e:?} is not a function of the graph"));
        }
        for (j, f) in self.functions.iter().enumerate() {
            let at = |field: &str| format!("functions[{j}] ({}).{field}", f.name);
            // How its replicas run, checked as a service's are.
            self.function_service(j)
                .validate()
                .map_err(|e| format!("functions[{j}] ({}).{e}", f.name))?;
            pharos_core::limits::check_positive_at_most(
                &at("timeout_s"),
                f.timeout_s,
                pharos_core::limits::MAX_TIMEOUT_S,
            )
            .map_err(|e| e.to_string())?;
            // The replicas are a service's: its checks, under the function's name.
            self.function_service(j)
                .validate()
                .map_err(|e| format!("functions[{j}] ({}).{e}", f.name))?;
            if let Some([lo, hi]) = f.cpus_range {
                use pharos_core::limits::{MAX_CPUS, MIN_CPUS, check_f64};
                check_f64(&at("cpus_range[0]"), lo, MIN_CPUS, MAX_CPUS)
                    .map_err(|e| e.to_string())?;
                check_f64(&at("cpus_range[1]"), hi, MIN_CPUS, MAX_CPUS)
                    .map_err(|e| e.to_string())?;
                if !(lo <= f.cpus && f.cpus <= hi) {
                    return Err(format!(
                        "{}: [{lo}, {hi}] must hold cpus ({})",
                        at("cpus_range"),
                        f.cpus
                    ));
                }
            }
            pharos_core::limits::check_count(&at("routes"), f.routes.len(), MAX_EDGES)
                .map_err(|e| e.to_string())?;
            pharos_core::limits::check_count(&at("calls"), f.calls.len(), MAX_EDGES)
                .map_err(|e| e.to_string())?;
            for r in &f.routes {
                if self.index(&r.to).is_none() {
                    return Err(format!(
                        "{}: {:?} is not a function of the graph",
                        at("routes"),
                        r.to
                    ));
                }
                if !(r.p.is_finite() && r.p > 0.0 && r.p <= 1.0) {
                    return Err(format!(
                        "{}: the probability to {} is {}; it must be in (0, 1]",
                        at("routes"),
                        r.to,
                        r.p
                    ));
                }
            }
            for c in &f.calls {
                if self.index(c).is_none() {
                    return Err(format!(
                        "{}: {c:?} is not a function of the graph",
                        at("calls")
                    ));
                }
            }
        }
        // Probabilities, fan-outs and cycles: the model's own checks (which name the
        // function by index and name).
        self.to_core().validate().map_err(|e| e.to_string())
    }

    /// The service that runs function `j`'s replicas: named `GRAPH.FUNCTION`, with no
    /// SLO of its own (the timeout stands for it).
    pub fn function_service(&self, j: usize) -> ServiceSpec {
        let f = &self.functions[j];
        ServiceSpec {
            name: format!("{}.{}", self.name, f.name),
            command: f.command.clone(),
            ray: f.ray.clone(),
            kubernetes: f.kubernetes.clone(),
            env: f.env.clone(),
            readiness_path: f.readiness_path.clone(),
            cpus: f.cpus,
            gpus: 0,
            slo: pharos_core::Slo {
                latency_s: f.timeout_s.clamp(1e-3, pharos_core::limits::MAX_LATENCY_S),
                percentile: 99.0,
            },
            processing_time_s: f.processing_time_s,
            min_replicas: f.min_replicas,
            max_replicas: f.max_replicas,
            initial_replicas: f.initial_replicas,
            max_concurrent: f.max_concurrent,
            max_queue: f.max_queue,
            port: None,
            ready_timeout_s: f.ready_timeout_s,
            unavailable_timeout_s: crate::service::d_unavailable_timeout(),
            graph: Some(self.name.clone()),
        }
    }

    /// The graph as the autoscalers and the simulator model it: one app, each function's
    /// service rate per vCPU from its processing time at `cpus`.
    pub fn to_core(&self) -> pharos_core::Graph {
        let idx = |n: &str| self.index(n).unwrap_or(usize::MAX);
        pharos_core::Graph {
            apps: vec![self.name.clone()],
            entries: vec![self.entry_index()],
            functions: self
                .functions
                .iter()
                .map(|f| {
                    let [lo, hi] = f.cpus_range.unwrap_or([f.cpus, f.cpus]);
                    pharos_core::Function {
                        name: f.name.clone(),
                        app: 0,
                        mu: 1.0 / (f.processing_time_s * f.cpus),
                        resource: [lo, hi],
                        resource_per_replica: Some(f.cpus),
                        timeout_s: f.timeout_s,
                        queue_cap: f.max_queue.min(u32::MAX as usize) as u32,
                        max_replicas: f.max_replicas,
                        min_replicas: f.min_replicas,
                        routes: f.routes.iter().map(|r| (idx(&r.to), r.p)).collect(),
                        calls: f.calls.iter().map(|c| idx(c)).collect(),
                    }
                })
                .collect(),
        }
    }

    /// Fields that cannot change while the graph runs: its functions and their edges
    /// (functions' replicas follow the service rules).
    pub fn fixed_change(&self, new: &GraphSpec) -> Option<String> {
        if self.functions.len() != new.functions.len()
            || self
                .functions
                .iter()
                .zip(&new.functions)
                .any(|(a, b)| a.name != b.name)
        {
            return Some("functions".into());
        }
        if self.entry_index() != new.entry_index() {
            return Some("entry".into());
        }
        if new.port.is_some() && self.port != new.port {
            return Some("port".into());
        }
        for j in 0..self.functions.len() {
            if let Some(f) = self
                .function_service(j)
                .fixed_change(&new.function_service(j))
            {
                return Some(format!("functions[{j}].{f}"));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIAMOND: &str = r#"
kind: graph
name: diamond
functions:
  - name: front
    command: [pharos-replica, --port, $PORT]
    processing_time_s: 0.01
    routes: [{to: left, p: 0.6}, {to: right, p: 0.3}]
  - name: left
    command: [pharos-replica, --port, $PORT]
    processing_time_s: 0.02
    routes: [{to: back, p: 1.0}]
  - name: right
    command: [pharos-replica, --port, $PORT]
    processing_time_s: 0.02
    routes: [{to: back, p: 1.0}]
  - name: back
    command: [pharos-replica, --port, $PORT]
    processing_time_s: 0.01
"#;

    #[test]
    fn a_graph_parses_and_becomes_the_model_the_autoscalers_see() {
        let g = GraphSpec::parse(DIAMOND).unwrap();
        assert!(GraphSpec::is_graph(DIAMOND));
        assert!(!GraphSpec::is_graph("name: a\ncommand: [x]\n"));
        assert_eq!(g.entry_index(), 0);
        let core = g.to_core();
        assert_eq!(core.functions[0].routes, vec![(1, 0.6), (2, 0.3)]);
        let r = core.effective_rates(&[10.0, 0.0, 0.0, 0.0]);
        assert!((r[3] - 9.0).abs() < 1e-9, "{r:?}");
        assert!((core.functions[1].mu - 50.0).abs() < 1e-9);
        let s = g.function_service(1);
        assert_eq!(s.name, "diamond.left");
        assert_eq!(s.graph.as_deref(), Some("diamond"));
        s.validate().unwrap();
    }

    #[test]
    fn a_bad_graph_is_refused_naming_what_is_wrong() {
        for (from, to, want) in [
            ("name: diamond", "name: Diamond", "name:"),
            (
                "{to: left, p: 0.6}",
                "{to: lefty, p: 0.6}",
                "functions[0] (front).routes: \"lefty\" is not a function",
            ),
            ("{to: left, p: 0.6}", "{to: left, p: 0.8}", "sum to"),
            ("{to: left, p: 0.6}", "{to: left, p: -1}", "(0, 1]"),
            // front -> left -> front, always: requests never leave.
            (
                "[{to: left, p: 0.6}, {to: right, p: 0.3}]\n  - name: left\n    command: [pharos-replica, --port, $PORT]\n    processing_time_s: 0.02\n    routes: [{to: back, p: 1.0}]",
                "[{to: left, p: 1.0}]\n  - name: left\n    command: [pharos-replica, --port, $PORT]\n    processing_time_s: 0.02\n    routes: [{to: front, p: 1.0}]",
                "closed cycle",
            ),
            (
                "  - name: back\n",
                "  - name: left\n",
                "names two functions",
            ),
            (
                "name: back",
                "name: back\n    max_replicas: 0",
                "max_replicas",
            ),
            (
                "name: back",
                "name: back\n    calls: [nowhere]",
                "calls: \"nowhere\"",
            ),
            (
                "name: back",
                "name: back\n    cpus_range: [2, 4]",
                "cpus_range",
            ),
            ("name: back", "name: back\n    timeout_s: 0", "timeout_s"),
            ("kind: graph", "kind: service", "kind:"),
        ] {
            let text = DIAMOND.replacen(from, to, 1);
            assert_ne!(text, DIAMOND, "{from}");
            let e = GraphSpec::parse(&text).unwrap_err();
            assert!(e.contains(want), "{to}: {e}");
        }
        let e = GraphSpec::parse(&DIAMOND.replace("name: diamond", "name: diamond\nentry: nope"))
            .unwrap_err();
        assert!(e.starts_with("spec: entry:"), "{e}");
    }

    #[test]
    fn a_graph_past_its_size_bounds_is_refused() {
        let g = GraphSpec::parse(DIAMOND).unwrap();
        let mut big = g.clone();
        big.functions = (0..=MAX_FUNCTIONS)
            .map(|i| FunctionSpec {
                name: format!("f{i}"),
                routes: Vec::new(),
                ..g.functions[3].clone()
            })
            .collect();
        let e = big.validate().unwrap_err();
        assert!(e.starts_with("functions:"), "{e}");
        let mut wide = g.clone();
        wide.functions[0].routes = (0..=MAX_EDGES)
            .map(|_| Route {
                to: "back".into(),
                p: 0.001,
            })
            .collect();
        let e = wide.validate().unwrap_err();
        assert!(e.contains("(front).routes"), "{e}");
        let mut fan = g;
        fan.functions[0].calls = vec!["back".to_string(); MAX_EDGES + 1];
        let e = fan.validate().unwrap_err();
        assert!(e.contains("(front).calls"), "{e}");
    }

    /// A function runs as a command, a Ray Serve application or a container, as a
    /// service does: exactly one, checked as a service's is and named by function.
    #[test]
    fn a_function_runs_a_command_a_ray_application_or_a_container() {
        let ray = DIAMOND.replacen(
            "command: [pharos-replica, --port, $PORT]",
            "ray: {import_path: 'model:app', deployment: Model, working_dir: serve}",
            1,
        );
        let g = GraphSpec::parse(&ray).unwrap();
        let s = g.function_service(0);
        assert!(s.command.is_empty());
        assert_eq!(s.ray.as_ref().unwrap().deployment, "Model");
        assert_eq!(s.name, "diamond.front");
        assert!(g.function_service(1).ray.is_none());
        let both = DIAMOND.replacen(
            "command: [pharos-replica, --port, $PORT]",
            "command: [x]\n    ray: {import_path: 'model:app', deployment: Model}",
            1,
        );
        let e = GraphSpec::parse(&both).unwrap_err();
        assert!(e.contains("functions[0] (front).command, ray"), "{e}");
        let none = DIAMOND.replacen("    command: [pharos-replica, --port, $PORT]\n", "", 1);
        let e = GraphSpec::parse(&none).unwrap_err();
        assert!(e.contains("functions[0] (front).command:"), "{e}");
        let bad = ray.replace("import_path: 'model:app'", "import_path: model");
        let e = GraphSpec::parse(&bad).unwrap_err();
        assert!(e.contains("functions[0] (front).ray.import_path"), "{e}");
    }

    #[test]
    fn what_may_change_while_a_graph_runs() {
        let g = GraphSpec::parse(DIAMOND).unwrap();
        let mut h = g.clone();
        h.functions[1].max_replicas = 4;
        h.functions[0].routes[0].p = 0.5;
        assert_eq!(g.fixed_change(&h), None);
        h.functions[2].cpus = 2.0;
        assert_eq!(g.fixed_change(&h).as_deref(), Some("functions[2].cpus"));
        let mut h = g.clone();
        h.functions.pop();
        assert_eq!(g.fixed_change(&h).as_deref(), Some("functions"));
    }
}
