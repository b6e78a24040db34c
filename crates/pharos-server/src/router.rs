//! The router: one HTTP entry per inference service, in front of its replicas, with the
//! simulator's semantics - at most `concurrency` requests in flight per replica, a
//! bounded FIFO queue in front of them, and a tail drop (HTTP 503) when the queue is
//! full - and, as the simulator's router, an admission that drops each arrival with
//! probability `1 - accept_rate` (seeded) when a policy sheds load. It counts what the autoscaling policies need (arrivals, drops, completions,
//! latencies, queue length). Replicas can be replaced at any time: new ones receive
//! traffic at once (add them when ready), removed ones get no new requests and finish
//! the ones they have (drained).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http_body::Body as _;
use pharos_engine::host::LockExt;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::sync::oneshot;

#[derive(Debug)]
struct Replica {
    /// `http://host:port`
    base: String,
    in_flight: usize,
    /// Removed: no new requests.
    draining: bool,
    /// It refused a connection: no new requests before then.
    refused_until: Option<Instant>,
}

/// Latencies a router keeps per history minute, at most.
pub const MINUTE_WINDOW_CAP: usize = 100_000;

/// Upper bounds (seconds) of the latency histogram's buckets (Prometheus' defaults); a
/// last bucket holds the rest.
pub const LATENCY_BUCKETS_S: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default, Clone, Serialize, serde::Deserialize)]
pub struct Counters {
    pub arrivals: u64,
    /// Every drop: the queue full, or refused by the admission.
    pub dropped: u64,
    /// The drops of the admission (accept rate below 1).
    pub rejected: u64,
    /// Requests sent again to another replica because theirs refused the connection
    /// (it had died; the request never reached it). Counted once in `arrivals`.
    pub resent: u64,
    /// Requests that waited in the queue for the queue timeout (see
    /// [`Router::set_queue_timeout`]) and failed (504); not counted in `dropped`.
    pub timeouts: u64,
    /// Requests that waited the unavailability timeout (see
    /// [`Router::set_unavailable_timeout`]) while the router had no replica to send
    /// to, and failed (503 with `Retry-After`); also counted in `dropped`.
    pub unavailable: u64,
    pub completed: u64,
    /// Requests a replica failed (an error status, a broken connection: a replica that
    /// died with requests in flight).
    pub failed: u64,
    /// Sum of the latencies of completed requests, seconds.
    pub latency_sum_s: f64,
    /// Completed requests slower than the service's SLO latency (see
    /// [`Router::set_slo`]).
    pub over_slo: u64,
    /// Time integrals since the router started (what the simulator's counters hold):
    /// requests queued or in flight, replicas serving at least one request, replicas
    /// taking traffic.
    pub ongoing_req_s: f64,
    pub busy_replica_s: f64,
    pub ready_replica_s: f64,
}

#[derive(Debug)]
struct Inner {
    accept_rate: f64,
    rng: rand::rngs::StdRng,
    replicas: Vec<Replica>,
    /// Requests waiting for a replica, oldest first: each is sent the replica it got.
    queue: VecDeque<oneshot::Sender<String>>,
    counters: Counters,
    /// Latencies (seconds) of the requests completed since the last `take_window`, at
    /// most [`MINUTE_WINDOW_CAP`].
    window: Vec<f64>,
    /// The same since the last `take_minute_window`, at most [`MINUTE_WINDOW_CAP`].
    minute_window: Vec<f64>,
    /// The SLO latency (infinite: none set).
    slo_s: f64,
    /// Completed requests by latency bucket ([`LATENCY_BUCKETS_S`], then the rest).
    histogram: [u64; LATENCY_BUCKETS_S.len() + 1],
    /// How long a request may wait in the queue (none: as long as it takes).
    queue_timeout: Option<std::time::Duration>,
    /// How long a queued request waits while there is no replica to send it to.
    unavailable_timeout: Option<std::time::Duration>,
    /// Up to when the time integrals are summed.
    integrated_to: Instant,
}

impl Inner {
    /// Adds the time since the last call to the integrals (at the state before a change).
    fn advance(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.integrated_to).as_secs_f64();
        self.integrated_to = now;
        let in_flight: usize = self.replicas.iter().map(|r| r.in_flight).sum();
        let busy = self.replicas.iter().filter(|r| r.in_flight > 0).count();
        let ready = self.replicas.iter().filter(|r| !r.draining).count();
        let c = &mut self.counters;
        c.ongoing_req_s += dt * (in_flight + self.queue.len()) as f64;
        c.busy_replica_s += dt * busy as f64;
        c.ready_replica_s += dt * ready as f64;
    }
}

/// A snapshot for the policy view and `/router/stats`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Stats {
    pub replicas: Vec<String>,
    pub accept_rate: f64,
    pub draining: usize,
    pub in_flight: usize,
    pub queued: usize,
    pub counters: Counters,
}

pub struct Router {
    inner: Mutex<Inner>,
    concurrency: usize,
    queue_cap: usize,
    client: Client<HttpConnector, Body>,
    /// A router in a process of its own ([`crate::dataplane`]): every call goes there,
    /// the state here is unused.
    remote: Option<crate::dataplane::Remote>,
}

impl Router {
    /// A router whose calls go to a router process.
    pub fn remote(remote: crate::dataplane::Remote) -> Arc<Self> {
        let mut r = Self::build(1, 0);
        r.remote = Some(remote);
        Arc::new(r)
    }

    /// The router process this router's calls go to, if any.
    pub fn process(&self) -> Option<&crate::dataplane::Remote> {
        self.remote.as_ref()
    }

    pub fn new(replicas: &[String], concurrency: usize, queue_cap: usize) -> Arc<Self> {
        let r = Arc::new(Self::build(concurrency, queue_cap));
        r.set_replicas(replicas);
        r
    }

    fn build(concurrency: usize, queue_cap: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                accept_rate: 1.0,
                rng: rand::SeedableRng::seed_from_u64(0x7068_6172_6f73),
                replicas: Vec::new(),
                queue: VecDeque::new(),
                counters: Counters::default(),
                window: Vec::new(),
                minute_window: Vec::new(),
                slo_s: f64::INFINITY,
                histogram: [0; LATENCY_BUCKETS_S.len() + 1],
                queue_timeout: None,
                unavailable_timeout: None,
                integrated_to: Instant::now(),
            }),
            concurrency: concurrency.max(1),
            queue_cap,
            client: Client::builder(TokioExecutor::new()).build_http(),
            remote: None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock_or_recover()
    }

    /// Replaces the replica set: new ones serve at once, missing ones drain.
    pub fn set_replicas(&self, replicas: &[String]) {
        if let Some(r) = &self.remote {
            return r.send(crate::dataplane::Control::SetReplicas {
                replicas: replicas.to_vec(),
            });
        }
        let replicas: Vec<String> = replicas
            .iter()
            .map(|r| r.trim_end_matches('/').to_string())
            .collect();
        let mut g = self.lock();
        g.advance();
        for r in &mut g.replicas {
            r.draining = !replicas.contains(&r.base);
        }
        for base in &replicas {
            if !g.replicas.iter().any(|r| &r.base == base) {
                g.replicas.push(Replica {
                    base: base.clone(),
                    in_flight: 0,
                    draining: false,
                    refused_until: None,
                });
            }
        }
        // Drained replicas with nothing in flight are gone.
        g.replicas.retain(|r| !r.draining || r.in_flight > 0);
        // New capacity serves the queue.
        self.dispatch(&mut g);
    }

    /// The share of arrivals admitted (clamped to 0..=1; not a number: all).
    pub fn set_accept_rate(&self, rate: f64) {
        if let Some(r) = &self.remote {
            return r.send(crate::dataplane::Control::SetAcceptRate { rate });
        }
        self.lock().accept_rate = if rate.is_nan() {
            1.0
        } else {
            rate.clamp(0.0, 1.0)
        };
    }

    pub fn stats(&self) -> Stats {
        if let Some(r) = &self.remote {
            return r.stats().unwrap_or(Stats {
                replicas: Vec::new(),
                accept_rate: 1.0,
                draining: 0,
                in_flight: 0,
                queued: 0,
                counters: Counters::default(),
            });
        }
        let mut g = self.lock();
        g.advance();
        Stats {
            accept_rate: g.accept_rate,
            replicas: g
                .replicas
                .iter()
                .filter(|r| !r.draining)
                .map(|r| r.base.clone())
                .collect(),
            draining: g.replicas.iter().filter(|r| r.draining).count(),
            in_flight: g.replicas.iter().map(|r| r.in_flight).sum(),
            queued: g.queue.iter().filter(|w| !w.is_closed()).count(),
            counters: g.counters.clone(),
        }
    }

    /// Requests in flight at this replica, or None once it has left the router (it
    /// was removed and has finished them).
    pub fn in_flight_at(&self, base: &str) -> Option<usize> {
        let base = base.trim_end_matches('/');
        if let Some(r) = &self.remote {
            return r.in_flight().get(base).map(|n| *n as usize);
        }
        self.lock()
            .replicas
            .iter()
            .find(|r| r.base == base)
            .map(|r| r.in_flight)
    }

    /// Requests in flight at every replica the router sends to or still waits on.
    pub fn in_flight_by_replica(&self) -> BTreeMap<String, u32> {
        if let Some(r) = &self.remote {
            return r.in_flight();
        }
        self.lock()
            .replicas
            .iter()
            .map(|r| (r.base.clone(), r.in_flight as u32))
            .collect()
    }

    /// Completed requests per latency bucket, cumulative (Prometheus' `le` buckets: the
    /// count at or below each of [`LATENCY_BUCKETS_S`], then all).
    pub fn histogram(&self) -> Vec<u64> {
        if let Some(r) = &self.remote {
            return r.histogram();
        }
        let h = self.lock().histogram;
        h.iter()
            .scan(0, |sum, n| {
                *sum += n;
                Some(*sum)
            })
            .collect()
    }

    /// The latencies completed since the last call.
    pub fn take_window(&self) -> Vec<f64> {
        if let Some(r) = &self.remote {
            return r.take_window();
        }
        std::mem::take(&mut self.lock().window)
    }

    /// The latencies completed since the last call (the first [`MINUTE_WINDOW_CAP`] of
    /// them: a percentile of more is estimated from those).
    pub fn take_minute_window(&self) -> Vec<f64> {
        if let Some(r) = &self.remote {
            return r.take_minute_window();
        }
        std::mem::take(&mut self.lock().minute_window)
    }

    /// The latency over which a completed request counts in `over_slo`.
    pub fn set_slo(&self, latency_s: f64) {
        if let Some(r) = &self.remote {
            return r.send(crate::dataplane::Control::SetSlo { latency_s });
        }
        self.lock().slo_s = if latency_s > 0.0 {
            latency_s
        } else {
            f64::INFINITY
        };
    }

    /// A request that has waited this long in the queue fails with 504 (counted in
    /// `timeouts`); `None` or a number that is not positive: it waits as long as it takes.
    pub fn set_queue_timeout(&self, seconds: Option<f64>) {
        if let Some(r) = &self.remote {
            return r.send(crate::dataplane::Control::SetQueueTimeout { seconds });
        }
        self.lock().queue_timeout = seconds
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(std::time::Duration::from_secs_f64);
    }

    /// A request queued while the router has no replica that takes traffic (none, or
    /// all removed) fails with 503 and `Retry-After` once it has waited this long and
    /// there is still none; `None` or a number that is not positive: it waits.
    pub fn set_unavailable_timeout(&self, seconds: Option<f64>) {
        if let Some(r) = &self.remote {
            return r.send(crate::dataplane::Control::SetUnavailableTimeout { seconds });
        }
        self.lock().unavailable_timeout = seconds
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(std::time::Duration::from_secs_f64);
    }

    /// The least loaded replica with a free slot.
    fn free_slot(&self, g: &Inner) -> Option<usize> {
        let now = Instant::now();
        g.replicas
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                !r.draining
                    && r.in_flight < self.concurrency
                    && r.refused_until.is_none_or(|t| now >= t)
            })
            .min_by_key(|(_, r)| r.in_flight)
            .map(|(i, _)| i)
    }

    /// Hands free slots to queued requests.
    fn dispatch(&self, g: &mut Inner) {
        while !g.queue.is_empty() {
            let Some(i) = self.free_slot(g) else { break };
            let waiter = g.queue.pop_front().expect("not empty");
            g.replicas[i].in_flight += 1;
            if waiter.send(g.replicas[i].base.clone()).is_err() {
                // The client went away while queued.
                g.replicas[i].in_flight -= 1;
            }
        }
    }

    /// A slot on a replica (its base URL), after waiting in the queue if need be; the
    /// reason when there is none.
    async fn acquire(&self) -> Result<String, Refused> {
        let (rx, timeout, unavailable) = {
            let mut g = self.lock();
            g.advance();
            g.counters.arrivals += 1;
            if g.accept_rate < 1.0 {
                let draw: f64 = rand::RngExt::random(&mut g.rng);
                if draw >= g.accept_rate {
                    g.counters.dropped += 1;
                    g.counters.rejected += 1;
                    return Err(Refused::Dropped);
                }
            }
            if g.queue.is_empty()
                && let Some(i) = self.free_slot(&g)
            {
                g.replicas[i].in_flight += 1;
                return Ok(g.replicas[i].base.clone());
            }
            if g.queue.len() >= self.queue_cap {
                // Requests that timed out (or whose client left) hold no place.
                g.queue.retain(|tx| !tx.is_closed());
            }
            if g.queue.len() >= self.queue_cap {
                g.counters.dropped += 1;
                return Err(Refused::Dropped);
            }
            let (tx, rx) = oneshot::channel();
            g.queue.push_back(tx);
            (rx, g.queue_timeout, g.unavailable_timeout)
        };
        let mut rx = rx;
        let start = tokio::time::Instant::now();
        let queue_deadline = timeout.map(|d| start + d);
        let mut unavailable_deadline = unavailable.map(|d| start + d);
        loop {
            let deadline = match (queue_deadline, unavailable_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let Some(deadline) = deadline else {
                return rx.await.map_err(|_| Refused::Dropped);
            };
            if let Ok(r) = tokio::time::timeout_at(deadline, &mut rx).await {
                return r.map_err(|_| Refused::Dropped);
            }
            // Closed under the lock, so that no slot is handed to it after this; one
            // handed over just now is used.
            let mut g = self.lock();
            let now = tokio::time::Instant::now();
            let none_serves = !g.replicas.iter().any(|r| !r.draining);
            let why = if queue_deadline.is_some_and(|d| now >= d) {
                Refused::TimedOut
            } else if none_serves {
                Refused::Unavailable
            } else {
                // Replicas serve: it waits its turn, and is given up only if they
                // are all gone again a whole timeout later.
                unavailable_deadline = unavailable.map(|d| now + d);
                continue;
            };
            rx.close();
            if let Ok(base) = rx.try_recv() {
                return Ok(base);
            }
            match why {
                Refused::TimedOut => g.counters.timeouts += 1,
                _ => {
                    g.counters.unavailable += 1;
                    g.counters.dropped += 1;
                }
            }
            return Err(why);
        }
    }

    fn release(&self, base: &str, latency_s: Option<f64>) {
        let mut g = self.lock();
        g.advance();
        if let Some(r) = g.replicas.iter_mut().find(|r| r.base == base) {
            r.in_flight = r.in_flight.saturating_sub(1);
        }
        match latency_s {
            Some(l) => {
                g.counters.completed += 1;
                g.counters.latency_sum_s += l;
                // Both bounded: a router process with no server to drain them (none
                // leads) must not grow without end.
                if g.window.len() < MINUTE_WINDOW_CAP {
                    g.window.push(l);
                }
                if g.minute_window.len() < MINUTE_WINDOW_CAP {
                    g.minute_window.push(l);
                }
                if l > g.slo_s {
                    g.counters.over_slo += 1;
                }
                let b = LATENCY_BUCKETS_S.partition_point(|&ub| ub < l);
                g.histogram[b] += 1;
            }
            None => g.counters.failed += 1,
        }
        g.replicas.retain(|r| !r.draining || r.in_flight > 0);
        self.dispatch(&mut g);
    }

    /// A slot whose replica refused the connection: given back without counting the
    /// request (it is sent again), and the replica gets no request for a second.
    fn refused(&self, base: &str) {
        let mut g = self.lock();
        g.advance();
        if let Some(r) = g.replicas.iter_mut().find(|r| r.base == base) {
            r.in_flight = r.in_flight.saturating_sub(1);
            r.refused_until = Some(Instant::now() + std::time::Duration::from_secs(1));
        }
        g.counters.arrivals = g.counters.arrivals.saturating_sub(1);
        g.counters.resent += 1;
        g.replicas.retain(|r| !r.draining || r.in_flight > 0);
        self.dispatch(&mut g);
    }

    fn refusal(&self, r: Refused) -> Response {
        match r {
            Refused::Unavailable => {
                let after = self
                    .lock()
                    .unavailable_timeout
                    .map_or(1, |d| d.as_secs().clamp(1, 60));
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(axum::http::header::RETRY_AFTER, after.to_string())],
                    "no replica of this service is ready; try again later",
                )
                    .into_response()
            }
            Refused::Dropped => (
                StatusCode::SERVICE_UNAVAILABLE,
                "dropped: queue full or not admitted",
            )
                .into_response(),
            Refused::TimedOut => (
                StatusCode::GATEWAY_TIMEOUT,
                "timed out waiting for a replica",
            )
                .into_response(),
        }
    }

    /// Serves one request whose whole body the caller holds (a graph's entry, in
    /// process): like [`Router::handle`], except that a request whose replica refuses
    /// the connection (it died; the request never reached it) goes to another replica
    /// instead of failing, at most 3 times.
    pub async fn handle_buffered(
        self: Arc<Self>,
        method: &axum::http::Method,
        path: &str,
        headers: &axum::http::HeaderMap,
        body: &axum::body::Bytes,
    ) -> Response {
        let t0 = Instant::now();
        let mut attempt = 0;
        loop {
            let base = match self.acquire().await {
                Ok(b) => b,
                Err(r) => return self.refusal(r),
            };
            let upstream = base.split('#').next().unwrap_or(&base);
            let req = axum::http::Request::builder()
                .method(method.clone())
                .uri(format!("{upstream}{path}"))
                .body(Body::from(body.clone()));
            let mut req = match req {
                Ok(r) => r,
                Err(e) => {
                    self.release(&base, None);
                    return (StatusCode::BAD_GATEWAY, format!("bad request URL: {e}"))
                        .into_response();
                }
            };
            *req.headers_mut() = headers.clone();
            req.headers_mut().remove(axum::http::header::HOST);
            match self.client.request(req).await {
                Ok(resp) => return self.counted(resp, base, t0),
                Err(e) if e.is_connect() && attempt < 3 => {
                    attempt += 1;
                    self.refused(&base);
                }
                Err(e) => {
                    self.release(&base, None);
                    return (StatusCode::BAD_GATEWAY, format!("replica {base}: {e}"))
                        .into_response();
                }
            }
        }
    }

    /// A replica's answer, counted when its body has been passed on.
    fn counted(
        self: &Arc<Self>,
        resp: axum::http::Response<hyper::body::Incoming>,
        base: String,
        t0: Instant,
    ) -> Response {
        let ok = resp.status().is_success();
        resp.map(|body| {
            Body::new(Counted {
                inner: body,
                router: self.clone(),
                base: Some(base),
                t0,
                ok,
            })
        })
    }

    /// Serves one request: a slot, the replica's answer, the accounting.
    pub async fn handle(self: Arc<Self>, req: Request) -> Response {
        let t0 = Instant::now();
        let base = match self.acquire().await {
            Ok(b) => b,
            Err(r) => return self.refusal(r),
        };
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        // A `#name` suffix only tells apart entries that share an address (replicas
        // behind one proxy, as with Ray Serve); it is not sent.
        let upstream = base.split('#').next().unwrap_or(&base);
        let uri: Uri = match format!("{upstream}{path}").parse() {
            Ok(u) => u,
            Err(e) => {
                self.release(&base, None);
                return (StatusCode::BAD_GATEWAY, format!("bad replica URL: {e}")).into_response();
            }
        };
        let (mut parts, body) = req.into_parts();
        parts.uri = uri;
        parts.headers.remove(axum::http::header::HOST);
        match self
            .client
            .request(axum::http::Request::from_parts(parts, body))
            .await
        {
            // The answer streams through (bounded buffers both ways); the request
            // counts as served when its last byte has been passed on.
            Ok(resp) => self.counted(resp, base, t0),
            Err(e) => {
                self.release(&base, None);
                (StatusCode::BAD_GATEWAY, format!("replica {base}: {e}")).into_response()
            }
        }
    }
}

/// Why a request got no replica.
#[derive(Debug)]
enum Refused {
    /// The queue was full, or the admission turned it away.
    Dropped,
    /// It waited for the queue timeout.
    TimedOut,
    /// It waited the unavailability timeout with no replica to go to.
    Unavailable,
}

/// A replica's answer on its way to the client: releases the replica's slot and counts
/// the request when the body ends (completed with its latency if the status was a
/// success), fails, or is dropped unfinished (the client went away: failed).
struct Counted {
    inner: hyper::body::Incoming,
    router: Arc<Router>,
    /// Taken when counted.
    base: Option<String>,
    t0: Instant,
    ok: bool,
}

impl Counted {
    fn finish(&mut self, served: bool) {
        if let Some(base) = self.base.take() {
            let latency = (served && self.ok).then(|| self.t0.elapsed().as_secs_f64());
            self.router.release(&base, latency);
        }
    }
}

impl http_body::Body for Counted {
    type Data = axum::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let r = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.finish(true),
            _ => {}
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let ended = self.inner.is_end_stream();
        self.finish(ended);
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptBody {
    pub accept_rate: f64,
}

/// The service's own port: every request goes to the replicas, and nothing else is
/// served there (the router's control is in-process, see [`control_app`]).
pub fn app(router: Arc<Router>) -> axum::Router {
    axum::Router::new()
        .fallback(|State(r): State<Arc<Router>>, req: Request| async move { r.handle(req).await })
        .with_state(router)
}

/// The control of a standalone router (`pharos router`), for a separate loopback-only
/// port: `GET /router/stats`, `PUT /router/replicas` (a JSON list of replica base URLs,
/// each `http://host:port`), `PUT /router/accept` (`{"accept_rate": x}`).
pub fn control_app(router: Arc<Router>) -> axum::Router {
    axum::Router::new()
        .route(
            "/router/stats",
            axum::routing::get(|State(r): State<Arc<Router>>| async move {
                axum::Json(r.stats())
            }),
        )
        .route(
            "/router/replicas",
            axum::routing::put(
                |State(r): State<Arc<Router>>, axum::Json(list): axum::Json<Vec<String>>| async move {
                    if list.len() > pharos_core::limits::MAX_REPLICAS as usize {
                        return Err((StatusCode::BAD_REQUEST, format!(
                            "at most {} replicas", pharos_core::limits::MAX_REPLICAS
                        )));
                    }
                    if let Some(bad) = list.iter().find(|u| {
                        !u.starts_with("http://") || u.parse::<Uri>().is_err()
                    }) {
                        return Err((StatusCode::BAD_REQUEST, format!(
                            "{bad:?}: a replica is http://host:port"
                        )));
                    }
                    r.set_replicas(&list);
                    Ok(axum::Json(r.stats()))
                },
            ),
        )
        .route(
            "/router/accept",
            axum::routing::put(
                |State(r): State<Arc<Router>>, axum::Json(body): axum::Json<AcceptBody>| async move {
                    r.set_accept_rate(body.accept_rate);
                    axum::Json(r.stats())
                },
            ),
        )
        .with_state(router)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request that waits for the queue timeout fails as a timeout, not a drop, and
    /// gives its place back: the slot freed later goes to a request still waiting.
    #[tokio::test]
    async fn a_queued_request_times_out_and_leaves_its_place() {
        let r = Router::new(&["http://127.0.0.1:9".to_string()], 1, 1);
        r.set_queue_timeout(Some(0.05));
        let first = r.acquire().await.unwrap();
        assert!(matches!(r.acquire().await, Err(Refused::TimedOut)));
        // The queue (one place) is free again: the next waits, and gets the slot when
        // the first request is done.
        let r2 = r.clone();
        let waiting = tokio::spawn(async move { r2.acquire().await.is_ok() });
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        r.release(&first, Some(0.01));
        assert!(waiting.await.unwrap());
        let c = r.stats().counters;
        assert_eq!(
            (c.arrivals, c.timeouts, c.dropped, c.completed),
            (3, 1, 0, 1)
        );
        assert_eq!(r.stats().in_flight, 1);
    }

    /// With no replica, a queued request fails with 503 and Retry-After after the
    /// unavailability timeout; with a replica that is only busy, it keeps waiting and
    /// gets the slot when one frees up.
    #[tokio::test(start_paused = true)]
    async fn without_a_replica_a_queued_request_fails_with_retry_after() {
        let r = Router::new(&[], 1, 10);
        r.set_unavailable_timeout(Some(30.0));
        let t0 = tokio::time::Instant::now();
        let resp = r.clone().handle(Request::new(Body::empty())).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[axum::http::header::RETRY_AFTER], "30");
        assert_eq!(t0.elapsed().as_secs(), 30);
        let c = r.stats().counters;
        assert_eq!((c.arrivals, c.unavailable, c.dropped), (1, 1, 1));
        assert_eq!(r.stats().queued, 0);

        // A replica that is busy past the timeout: the request waits on.
        r.set_replicas(&["http://127.0.0.1:9".to_string()]);
        let first = r.acquire().await.unwrap();
        let r2 = r.clone();
        let waiting = tokio::spawn(async move { r2.acquire().await.is_ok() });
        tokio::time::sleep(std::time::Duration::from_secs(75)).await;
        r.release(&first, Some(0.01));
        assert!(waiting.await.unwrap());
        // Removed while a request waits: the wait ends a timeout later.
        let r3 = r.clone();
        let waiting = tokio::spawn(async move { r3.acquire().await });
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        r.set_replicas(&[]);
        assert!(matches!(waiting.await.unwrap(), Err(Refused::Unavailable)));
        assert_eq!(r.stats().counters.unavailable, 2);
    }

    /// The admission refuses about 1 - accept_rate of arrivals, the same ones for the
    /// same seed; the queue-full drops are the rest (no replica, no queue here).
    #[tokio::test]
    async fn admission_refuses_the_share_not_accepted() {
        let r = Router::new(&[], 1, 0);
        r.set_accept_rate(0.3);
        for _ in 0..2000 {
            assert!(r.acquire().await.is_err());
        }
        let c = r.stats().counters;
        assert_eq!((c.arrivals, c.dropped), (2000, 2000));
        let refused = c.rejected as f64 / 2000.0;
        assert!((refused - 0.7).abs() < 0.05, "{refused}");
        let again = Router::new(&[], 1, 0);
        again.set_accept_rate(0.3);
        for _ in 0..2000 {
            let _ = again.acquire().await;
        }
        assert_eq!(again.stats().counters.rejected, c.rejected);
        // Out-of-range rates are clamped; NaN admits all.
        r.set_accept_rate(7.0);
        assert_eq!(r.stats().accept_rate, 1.0);
        r.set_accept_rate(f64::NAN);
        assert_eq!(r.stats().accept_rate, 1.0);
    }
}
