//! Function graphs live: an application of functions (see
//! [`pharos_engine::graph`]) behind one entry port. Each function is a service named
//! `GRAPH.FUNCTION` - its replicas run by the service engine, its router with the
//! services' semantics (concurrency cap, bounded queue, drops) plus the function's queue
//! timeout - and the entry walks each request through the graph: the function's router,
//! then its parallel calls (all waited for), then a route drawn by the platform.
//!
//! The draws are the platform's, not the replicas': request number `i` of a graph (in
//! arrival order since the server started) draws from a generator seeded with the
//! graph's `seed` and `i`, so a run that sends requests one at a time takes the same
//! paths every time. Every answer says the path it took in `x-pharos-path`
//! (`front,[left;right],back`: functions in order, a fan-out's branches in brackets).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use pharos_engine::graph::GraphSpec;
use pharos_engine::host::LockExt;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::AppState;
use crate::error::ApiError;
use crate::router::Router;

/// The largest request or answer body passed between functions, bytes.
pub const MAX_BODY_BYTES: usize = 8 << 20;
/// Function visits one request may make (a route that loops ends here: 508).
pub const MAX_VISITS: u32 = 256;
/// Response times kept per graph and per function for the percentiles.
const LATENCIES_KEPT: usize = 10_000;

/// Response times: count, sum, and the latest [`LATENCIES_KEPT`].
#[derive(Debug, Default)]
struct Latencies {
    count: u64,
    sum_s: f64,
    latest: VecDeque<f64>,
}

impl Latencies {
    fn push(&mut self, s: f64) {
        self.count += 1;
        self.sum_s += s;
        if self.latest.len() == LATENCIES_KEPT {
            self.latest.pop_front();
        }
        self.latest.push_back(s);
    }

    /// Mean over all, p50 and p99 over the latest (nearest rank).
    fn summary(&self) -> Value {
        let mut v: Vec<f64> = self.latest.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| {
            (!v.is_empty())
                .then(|| v[((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1])
        };
        json!({
            "mean_s": (self.count > 0).then(|| self.sum_s / self.count as f64),
            "p50_s": q(50.0),
            "p99_s": q(99.0),
        })
    }
}

/// What happened to the requests that entered a graph.
#[derive(Debug, Default, Clone, Serialize)]
pub struct AppCounters {
    pub arrivals: u64,
    pub completions: u64,
    /// Failed requests, by cause: a function's queue was full (`dropped`), a request
    /// waited for its timeout (`timeouts`), a replica answered an error or broke off
    /// (`errors`), too many visits or too large a body (`refused`).
    pub failed: u64,
    pub dropped: u64,
    pub timeouts: u64,
    pub errors: u64,
    pub refused: u64,
    pub in_flight: u64,
}

/// Why a request failed, and where.
struct Failure {
    status: StatusCode,
    function: Option<String>,
    message: String,
}

/// A successful answer: the last function's.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    path: String,
}

/// The request as the caller sent it, sent to every function on its path.
struct Head {
    method: Method,
    path: String,
    headers: HeaderMap,
}

/// One running graph.
pub struct GraphRt {
    pub name: String,
    pub tenant: String,
    pub port: u16,
    spec: RwLock<GraphSpec>,
    /// Bumped whenever the spec changes (the autoscaler rebuilds its model then).
    version: AtomicU64,
    /// Per function, its service's name (fixed for the graph's life).
    pub services: Vec<String>,
    /// Per function, the router of its service.
    routers: Vec<Arc<Router>>,
    listener: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    listen_error: Option<String>,
    /// Requests that entered so far (numbers each one's draws).
    seq: AtomicU64,
    counters: std::sync::Mutex<AppCounters>,
    latencies: std::sync::Mutex<Latencies>,
    /// Per function: response times seen by the graph (queue and service).
    fn_latencies: Vec<std::sync::Mutex<Latencies>>,
}

impl GraphRt {
    /// Serves one request that entered the graph.
    async fn handle(self: Arc<Self>, req: Request) -> Response {
        let t0 = Instant::now();
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        {
            let mut c = self.counters.lock_or_recover();
            c.arrivals += 1;
            c.in_flight += 1;
        }
        let result = self.clone().serve(n, req).await;
        let mut c = self.counters.lock_or_recover();
        c.in_flight -= 1;
        match result {
            Ok(a) => {
                c.completions += 1;
                drop(c);
                self.latencies
                    .lock_or_recover()
                    .push(t0.elapsed().as_secs_f64());
                let mut resp = (a.status, a.body).into_response();
                for (k, v) in &a.headers {
                    if k == axum::http::header::CONTENT_TYPE {
                        resp.headers_mut().insert(k.clone(), v.clone());
                    }
                }
                if let Ok(v) = HeaderValue::from_str(&a.path) {
                    resp.headers_mut().insert("x-pharos-path", v);
                }
                resp
            }
            Err(f) => {
                c.failed += 1;
                match f.status {
                    StatusCode::SERVICE_UNAVAILABLE => c.dropped += 1,
                    StatusCode::GATEWAY_TIMEOUT => c.timeouts += 1,
                    StatusCode::LOOP_DETECTED | StatusCode::PAYLOAD_TOO_LARGE => c.refused += 1,
                    _ => c.errors += 1,
                }
                drop(c);
                let msg = match &f.function {
                    Some(name) => format!("function {name}: {}", f.message),
                    None => f.message,
                };
                (f.status, msg).into_response()
            }
        }
    }

    async fn serve(self: Arc<Self>, n: u64, req: Request) -> Result<Answer, Failure> {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|e| Failure {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                function: None,
                message: format!("the request body: {e} (at most {MAX_BODY_BYTES} bytes)"),
            })?;
        let mut headers = parts.headers;
        headers.remove(axum::http::header::HOST);
        headers.remove(axum::http::header::CONTENT_LENGTH);
        let head = Head {
            method: parts.method,
            path: parts
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
            headers,
        };
        let seed = {
            let spec = self.spec.read().unwrap_or_else(|e| e.into_inner());
            spec.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        };
        let entry = self
            .spec
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .entry_index();
        let visits = AtomicU32::new(0);
        self.visit(entry, seed, &head, &body, &visits).await
    }

    /// Function `j` and what follows it: its calls, then its routes, until the request
    /// leaves. `seed` draws the routes of this branch.
    fn visit<'a>(
        self: &'a Arc<Self>,
        j: usize,
        seed: u64,
        head: &'a Head,
        body: &'a Bytes,
        visits: &'a AtomicU32,
    ) -> BoxFuture<'a, Result<Answer, Failure>> {
        Box::pin(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut j = j;
            let mut path: Vec<String> = Vec::new();
            loop {
                let name = self.fn_name(j);
                if visits.fetch_add(1, Ordering::Relaxed) >= MAX_VISITS {
                    return Err(Failure {
                        status: StatusCode::LOOP_DETECTED,
                        function: Some(name),
                        message: format!("more than {MAX_VISITS} function visits"),
                    });
                }
                let t0 = Instant::now();
                let resp = self.routers[j]
                    .clone()
                    .handle_buffered(&head.method, &head.path, &head.headers, body)
                    .await;
                let status = resp.status();
                let (parts, b) = resp.into_parts();
                let bytes = axum::body::to_bytes(b, MAX_BODY_BYTES).await;
                if let Some(l) = self.fn_latencies.get(j)
                    && status.is_success()
                    && bytes.is_ok()
                {
                    l.lock_or_recover().push(t0.elapsed().as_secs_f64());
                }
                let bytes = match bytes {
                    Ok(b) => b,
                    Err(e) => {
                        return Err(Failure {
                            status: StatusCode::BAD_GATEWAY,
                            function: Some(name),
                            message: format!("the answer broke off: {e}"),
                        });
                    }
                };
                if !status.is_success() {
                    return Err(Failure {
                        status,
                        function: Some(name),
                        message: String::from_utf8_lossy(&bytes[..bytes.len().min(512)])
                            .into_owned(),
                    });
                }
                path.push(name);
                let (calls, next) = {
                    let spec = self.spec.read().unwrap_or_else(|e| e.into_inner());
                    let f = &spec.functions[j];
                    let calls: Vec<usize> = f.calls.iter().filter_map(|c| spec.index(c)).collect();
                    let u: f64 = rng.random();
                    let mut acc = 0.0;
                    let mut next = None;
                    for r in &f.routes {
                        acc += r.p;
                        if u < acc {
                            next = spec.index(&r.to);
                            break;
                        }
                    }
                    (calls, next)
                };
                if !calls.is_empty() {
                    let seeds: Vec<u64> = calls.iter().map(|_| rng.random()).collect();
                    let branches = futures_util::future::join_all(
                        calls
                            .iter()
                            .zip(seeds)
                            .map(|(&k, s)| self.visit(k, s, head, body, visits)),
                    )
                    .await;
                    let mut parts_of = Vec::new();
                    for b in branches {
                        parts_of.push(b?.path);
                    }
                    path.push(format!("[{}]", parts_of.join(";")));
                }
                match next {
                    Some(k) => j = k,
                    None => {
                        return Ok(Answer {
                            status,
                            headers: parts.headers,
                            body: bytes,
                            path: path.join(","),
                        });
                    }
                }
            }
        })
    }

    /// The spec as it runs now.
    pub fn spec(&self) -> GraphSpec {
        self.spec.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Which version of the spec runs (bumped by every update).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// Requests that entered so far.
    pub fn arrivals(&self) -> u64 {
        self.counters.lock_or_recover().arrivals
    }

    fn fn_name(&self, j: usize) -> String {
        self.spec
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .functions[j]
            .name
            .clone()
    }

    fn stop(&self) {
        if let Some(l) = self.listener.lock_or_recover().take() {
            l.abort();
        }
    }
}

/// Every graph the server runs.
#[derive(Default)]
pub struct Graphs {
    inner: tokio::sync::Mutex<BTreeMap<String, Arc<GraphRt>>>,
}

fn conflict(name: &str) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, format!("graph {name} exists"))
}

impl Graphs {
    /// Creates or updates a graph. Its functions' services are applied first (with the
    /// tenant's limits); a new graph whose entry or functions cannot start leaves
    /// nothing behind.
    pub async fn apply(
        &self,
        state: &AppState,
        tenant: &str,
        limits: Option<&crate::config::TenantLimits>,
        spec: GraphSpec,
    ) -> Result<(bool, Value), ApiError> {
        // Functions whose least replicas, at their least vCPUs, exceed the cluster
        // could never all run: refused, as a service that could never fit is.
        let least: f64 = spec
            .functions
            .iter()
            .map(|f| f.cpus_range.map_or(f.cpus, |r| r[0]) * f.min_replicas as f64)
            .sum();
        let capacity = state.config.capacity.cpus;
        if least > capacity + 1e-9 {
            return Err(ApiError::at(
                StatusCode::BAD_REQUEST,
                "functions",
                format!(
                    "Unschedulable: the functions' min_replicas need {least} vCPUs together, \
                     the cluster has {capacity} (capacity.cpus)"
                ),
            ));
        }
        // A range of vCPUs per replica needs an engine that resizes running replicas;
        // the tenant's vCPU limit holds at the top of the range.
        let resizes = state.services.engine_resizes();
        for (j, f) in spec.functions.iter().enumerate() {
            let Some([_, hi]) = f.cpus_range.filter(|r| *r != [f.cpus, f.cpus]) else {
                continue;
            };
            let at = format!("functions[{j}].cpus_range");
            if !resizes {
                return Err(ApiError::at(
                    StatusCode::BAD_REQUEST,
                    at.clone(),
                    format!(
                        "{at} ({}): this server's engine does not resize running replicas \
                         (the local engine does with local.cpu_limits); give cpus alone",
                        f.name
                    ),
                ));
            }
            let most = hi * f.max_replicas as f64;
            if let Some(l) = limits.filter(|l| most > l.max_cpus) {
                return Err(ApiError::at(
                    StatusCode::BAD_REQUEST,
                    at.clone(),
                    format!(
                        "{at}: {} replicas of up to {hi} vCPUs ask for {most} vCPUs; the \
                         tenant may ask for at most {}",
                        f.max_replicas, l.max_cpus
                    ),
                ));
            }
        }
        let mut g = self.inner.lock().await;
        if let Some(rt) = g.get(&spec.name).cloned() {
            if rt.tenant != tenant {
                return Err(conflict(&spec.name));
            }
            let old = rt.spec.read().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(f) = old.fixed_change(&spec) {
                return Err(ApiError::at(
                    StatusCode::CONFLICT,
                    f.clone(),
                    format!("{f}: cannot change while the graph runs; delete it and apply again"),
                ));
            }
            let mut spec = spec;
            spec.port = Some(rt.port);
            for j in 0..spec.functions.len() {
                state
                    .services
                    .apply(state, tenant, limits, spec.function_service(j))
                    .await?;
                rt.routers[j].set_queue_timeout(Some(spec.functions[j].timeout_s));
            }
            state
                .store
                .update_graph(
                    &spec.name,
                    &serde_json::to_string(&spec).unwrap_or_default(),
                )
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
            *rt.spec.write().unwrap_or_else(|e| e.into_inner()) = spec;
            rt.version.fetch_add(1, Ordering::Relaxed);
            drop(g);
            return Ok((false, self.status(state, &rt).await));
        }
        // A new graph: its functions' names must be free.
        for j in 0..spec.functions.len() {
            let s = spec.function_service(j);
            if state.services.exists(&s.name).await {
                return Err(ApiError::at(
                    StatusCode::CONFLICT,
                    format!("functions[{j}]"),
                    format!("functions[{j}]: service {} exists", s.name),
                ));
            }
        }
        let host = crate::services::host_of(&state.config.listen);
        let mut taken = state.services.ports().await;
        taken.extend(g.values().map(|r| r.port));
        let (port, listener) =
            crate::services::listen_on(&host, spec.port, |p| taken.contains(&p)).await?;
        let mut created = Vec::new();
        let mut routers = Vec::new();
        for j in 0..spec.functions.len() {
            let s = spec.function_service(j);
            let name = s.name.clone();
            match state.services.apply(state, tenant, limits, s).await {
                Ok(_) => {
                    created.push(name.clone());
                    let r = state.services.router(&name).await.expect("just applied");
                    r.set_queue_timeout(Some(spec.functions[j].timeout_s));
                    routers.push(r);
                }
                Err(e) => {
                    for n in created {
                        let _ = state.services.delete(state, &n, None).await;
                    }
                    return Err(e);
                }
            }
        }
        let mut spec = spec;
        spec.port = Some(port);
        if let Err(e) = state
            .store
            .insert_graph(
                &spec.name,
                tenant,
                &serde_json::to_string(&spec).unwrap_or_default(),
                port as i64,
            )
            .await
        {
            for n in created {
                let _ = state.services.delete(state, &n, None).await;
            }
            return Err(ApiError::internal(e.to_string()));
        }
        let rt = new_rt(spec, tenant.to_string(), port, routers, None);
        rt.listener.lock_or_recover().replace(spawn_entry(
            rt.clone(),
            listener,
            state.config.listener.clone(),
        ));
        info!(graph = rt.name, "created: entry on {host}:{port}");
        g.insert(rt.name.clone(), rt.clone());
        drop(g);
        Ok((true, self.status(state, &rt).await))
    }

    /// Deletes a graph: its entry stops at once, its functions' services are deleted.
    pub async fn delete(
        &self,
        state: &AppState,
        name: &str,
        tenant: Option<&str>,
    ) -> Result<bool, String> {
        let mut g = self.inner.lock().await;
        let Some(rt) = g.get(name).cloned() else {
            return Ok(false);
        };
        if tenant.is_some_and(|t| t != rt.tenant) {
            return Ok(false);
        }
        state
            .store
            .delete_graph(name)
            .await
            .map_err(|e| e.to_string())?;
        g.remove(name);
        rt.stop();
        drop(g);
        for s in &rt.services {
            if let Err(e) = state.services.delete(state, s, None).await {
                warn!(graph = name, "deleting the function {s}: {e}");
            }
        }
        Ok(true)
    }

    pub async fn get(&self, state: &AppState, name: &str, tenant: Option<&str>) -> Option<Value> {
        let rt = self.inner.lock().await.get(name).cloned()?;
        if tenant.is_some_and(|t| t != rt.tenant) {
            return None;
        }
        Some(self.status(state, &rt).await)
    }

    pub async fn list(&self, state: &AppState, tenant: Option<&str>) -> Vec<Value> {
        let all: Vec<Arc<GraphRt>> = self.inner.lock().await.values().cloned().collect();
        let mut out = Vec::new();
        for rt in all {
            if tenant.is_none_or(|t| t == rt.tenant) {
                out.push(self.status(state, &rt).await);
            }
        }
        out
    }

    /// The running graphs (for `/metrics`).
    pub async fn all(&self) -> Vec<Arc<GraphRt>> {
        self.inner.lock().await.values().cloned().collect()
    }

    async fn status(&self, state: &AppState, rt: &GraphRt) -> Value {
        let spec = rt.spec.read().unwrap_or_else(|e| e.into_inner()).clone();
        let host = crate::services::host_of(&state.config.listen);
        let mut functions = Vec::new();
        let svcs = state.services.get_many(state, &rt.services).await;
        // The graph is ready when every function is; a function's other conditions are
        // the graph's, named by the function.
        let mut not_ready = Vec::new();
        let mut conditions = Vec::new();
        for (f, s) in spec.functions.iter().zip(&svcs) {
            for c in s
                .as_ref()
                .and_then(|s| s["conditions"].as_array())
                .into_iter()
                .flatten()
            {
                if c["type"] == "Ready" {
                    if c["status"] != "True" {
                        not_ready.push(format!(
                            "{} ({})",
                            f.name,
                            c["message"].as_str().unwrap_or("")
                        ));
                    }
                } else if c["status"] == "True" {
                    let mut c = c.clone();
                    c["message"] = json!(format!(
                        "{}: {}",
                        f.name,
                        c["message"].as_str().unwrap_or("")
                    ));
                    conditions.push(c);
                }
            }
        }
        conditions.insert(
            0,
            json!({
                "type": "Ready",
                "status": if not_ready.is_empty() { "True" } else { "False" },
                "reason": if not_ready.is_empty() { "AllFunctionsReady" } else { "FunctionsNotReady" },
                "message": if not_ready.is_empty() {
                    format!("all {} functions ready", spec.functions.len())
                } else {
                    format!("not ready: {}", not_ready.join(", "))
                },
            }),
        );
        for (j, (f, s)) in spec.functions.iter().zip(svcs).enumerate() {
            let svc = &rt.services[j];
            let st = rt.routers[j].stats();
            let c = &st.counters;
            let lat = rt.fn_latencies[j].lock_or_recover().summary();
            functions.push(json!({
                "name": f.name,
                "service": svc,
                "url": s.as_ref().map(|s| s["url"].clone()),
                "ready_replicas": s.as_ref().map(|s| s["ready_replicas"].clone()),
                "starting_replicas": s.as_ref().map(|s| s["starting_replicas"].clone()),
                "target_replicas": s.as_ref().map(|s| s["target_replicas"].clone()),
                "conditions": s.as_ref().map(|s| s["conditions"].clone()),
                "resources_per_replica": {
                    "cpus": s.as_ref().map_or(json!(f.cpus), |s| s["cpus_per_replica"].clone()),
                    "cpus_range": f.cpus_range.unwrap_or([f.cpus, f.cpus]),
                },
                "queued": st.queued,
                "in_flight": st.in_flight,
                "counters": {
                    "arrivals": c.arrivals,
                    "completions": c.completed,
                    "drops": c.dropped,
                    "timeouts": c.timeouts,
                    "failed": c.failed,
                    "resent": c.resent,
                    "response_s": lat,
                },
            }));
        }
        let counters = rt.counters.lock_or_recover().clone();
        let lat = rt.latencies.lock_or_recover().summary();
        let mut c = json!(counters);
        c["response_s"] = lat;
        json!({
            "name": rt.name,
            "tenant": rt.tenant,
            "url": format!("http://{host}:{}", rt.port),
            "entry": spec.functions[spec.entry_index()].name,
            "listen_error": rt.listen_error,
            "conditions": conditions,
            "autoscaler": state.services.graph_autoscaler(state).await,
            "counters": c,
            "functions": functions,
            "spec": spec,
        })
    }

    /// Graph and function lines for `/metrics`.
    pub async fn prometheus(&self, out: &mut String) {
        use std::fmt::Write;
        let all = self.all().await;
        if all.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "# HELP pharos_graph_requests_total requests that entered a function graph, by outcome\n# TYPE pharos_graph_requests_total counter"
        );
        for rt in &all {
            let c = rt.counters.lock_or_recover().clone();
            for (outcome, v) in [
                ("arrived", c.arrivals),
                ("completed", c.completions),
                ("dropped", c.dropped),
                ("timed_out", c.timeouts),
                ("error", c.errors),
                ("refused", c.refused),
            ] {
                let _ = writeln!(
                    out,
                    "pharos_graph_requests_total{{graph=\"{}\",outcome=\"{outcome}\"}} {v}",
                    rt.name
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP pharos_graph_function_requests_total requests at a graph's function, by outcome\n# TYPE pharos_graph_function_requests_total counter"
        );
        for rt in &all {
            let names: Vec<String> = rt
                .spec
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .functions
                .iter()
                .map(|f| f.name.clone())
                .collect();
            for (name, r) in names.iter().zip(&rt.routers) {
                let c = r.stats().counters;
                for (outcome, v) in [
                    ("arrived", c.arrivals),
                    ("completed", c.completed),
                    ("dropped", c.dropped),
                    ("timed_out", c.timeouts),
                    ("failed", c.failed),
                ] {
                    let _ = writeln!(
                        out,
                        "pharos_graph_function_requests_total{{graph=\"{}\",function=\"{name}\",outcome=\"{outcome}\"}} {v}",
                        rt.name
                    );
                }
            }
        }
    }
}

fn new_rt(
    spec: GraphSpec,
    tenant: String,
    port: u16,
    routers: Vec<Arc<Router>>,
    listen_error: Option<String>,
) -> Arc<GraphRt> {
    Arc::new(GraphRt {
        name: spec.name.clone(),
        tenant,
        port,
        fn_latencies: (0..spec.functions.len())
            .map(|_| std::sync::Mutex::new(Latencies::default()))
            .collect(),
        version: AtomicU64::new(0),
        services: (0..spec.functions.len())
            .map(|j| spec.function_service(j).name)
            .collect(),
        spec: RwLock::new(spec),
        routers,
        listener: std::sync::Mutex::new(None),
        listen_error,
        seq: AtomicU64::new(0),
        counters: std::sync::Mutex::new(AppCounters::default()),
        latencies: std::sync::Mutex::new(Latencies::default()),
    })
}

fn spawn_entry(
    rt: Arc<GraphRt>,
    listener: tokio::net::TcpListener,
    limits: crate::config::ListenerConfig,
) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new()
        .fallback(|axum::extract::State(rt): axum::extract::State<Arc<GraphRt>>, req: Request| async move {
            rt.handle(req).await
        })
        .with_state(rt);
    crate::services::spawn_listener("graph entry", app, listener, limits)
}

/// Loads the stored graphs once the services are loaded: each entry listens again on
/// its port; a function whose service is missing is applied again.
pub async fn load(state: &AppState) -> anyhow::Result<()> {
    let rows = state.store.graphs().await?;
    let host = crate::services::host_of(&state.config.listen);
    let mut g = state.graphs.inner.lock().await;
    for row in rows {
        if g.contains_key(&row.name) {
            continue;
        }
        let spec = match serde_json::from_str::<GraphSpec>(&row.spec)
            .map_err(|e| e.to_string())
            .and_then(|s| s.validate().map(|()| s))
        {
            Ok(s) => s,
            Err(e) => {
                warn!(graph = row.name, "stored spec skipped: {e}");
                continue;
            }
        };
        let mut routers = Vec::new();
        for j in 0..spec.functions.len() {
            let s = spec.function_service(j);
            let name = s.name.clone();
            if state.services.router(&name).await.is_none()
                && let Err(e) = state.services.apply(state, &row.tenant, None, s).await
            {
                warn!(
                    graph = row.name,
                    "function {name} not started: {}", e.message
                );
            }
            let r = match state.services.router(&name).await {
                Some(r) => r,
                // Its requests fail at once (no replica, no queue) until applied again.
                None => Router::new(&[], 1, 0),
            };
            r.set_queue_timeout(Some(spec.functions[j].timeout_s));
            routers.push(r);
        }
        let port = row.port as u16;
        let (listener, err) = match tokio::net::TcpListener::bind((host.as_str(), port)).await {
            Ok(l) => (Some(l), None),
            Err(e) => (None, Some(format!("cannot listen on {host}:{port}: {e}"))),
        };
        let rt = new_rt(spec, row.tenant, port, routers, err);
        if let Some(l) = listener {
            rt.listener.lock_or_recover().replace(spawn_entry(
                rt.clone(),
                l,
                state.config.listener.clone(),
            ));
        }
        g.insert(rt.name.clone(), rt);
    }
    Ok(())
}
