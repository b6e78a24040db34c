//! Inference services, the autoscaler's record, the store's integrity check and the
//! dashboard's history.

use super::*;

pub(super) fn service_not_found(name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("service {name} not found"))
}

pub(super) async fn list_services(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Json<Value> {
    Json(json!({ "services": state.services.list(&state, caller.scope()).await }))
}

pub(super) async fn show_service(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    state
        .services
        .get(&state, &name, caller.scope())
        .await
        .map(Json)
        .ok_or_else(|| service_not_found(&name))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServiceLogQuery {
    /// The replica [default: the newest with a log].
    replica: Option<String>,
    /// Only what was written in the last this many seconds (to within a second or so).
    since_s: Option<f64>,
    /// Only the last this many lines.
    tail: Option<usize>,
    /// Keep streaming new output until the replica stops.
    follow: Option<bool>,
}

/// The most lines `tail` may ask for.
pub const MAX_TAIL_LINES: usize = 100_000;

/// A replica's output, streamed (as it is now, or followed while the replica runs):
/// `GET /v1/services/{name}/logs?replica=&since_s=&tail=&follow=`. The replica sent
/// is named in the `x-pharos-replica` header.
pub(super) async fn service_logs(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    query: Result<Query<ServiceLogQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let logs = match state.services.replica_logs(&name, caller.scope()).await {
        None => return Err(service_not_found(&name)),
        Some(Err(e)) => return Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, e)),
        Some(Ok(l)) => l,
    };
    let ids = || {
        logs.iter()
            .map(|(i, _)| i.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (replica, path) = match &q.replica {
        Some(r) => logs.iter().find(|(i, _)| i == r).cloned().ok_or_else(|| {
            ApiError::at(
                StatusCode::NOT_FOUND,
                "replica",
                format!(
                    "service {name} has no log of replica {r}; replicas with logs: {}",
                    ids()
                ),
            )
        })?,
        None => logs.last().cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("service {name} has no replica logs yet"),
            )
        })?,
    };
    if let Some(s) = q.since_s
        && !(s.is_finite() && (0.0..=366.0 * 86_400.0).contains(&s))
    {
        return Err(ApiError::at(
            StatusCode::BAD_REQUEST,
            "since_s",
            "since_s: must be 0 to 31622400 seconds",
        ));
    }
    if q.tail.is_some_and(|t| t > MAX_TAIL_LINES) {
        return Err(ApiError::at(
            StatusCode::BAD_REQUEST,
            "tail",
            format!("tail: at most {MAX_TAIL_LINES} lines"),
        ));
    }
    let mut start = match q.since_s {
        Some(s) => state.services.log_offset_at(
            &name,
            &replica,
            crate::store::now_ms() - (s * 1000.0) as i64,
        ),
        None => 0,
    };
    if let Some(n) = q.tail {
        let p = path.clone();
        let from_tail = tokio::task::spawn_blocking(move || tail_offset(&p, n))
            .await
            .unwrap_or(0);
        start = start.max(from_tail);
    }
    let end = if q.follow.unwrap_or(false) {
        None
    } else {
        Some(std::fs::metadata(&path).map_or(0, |m| m.len()))
    };
    let stream = stream_log(state.clone(), name, replica.clone(), path, start, end);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (header::HeaderName::from_static("x-pharos-replica"), replica),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Where the last `n` lines of a file begin.
fn tail_offset(path: &std::path::Path, n: usize) -> u64 {
    use std::io::{Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return 0;
    };
    let Ok(len) = f.seek(SeekFrom::End(0)) else {
        return 0;
    };
    if n == 0 || len == 0 {
        return len;
    }
    // The file's final newline ends its last line and starts none: counting from
    // before it, the n-th newline back ends the line before the last n.
    let mut pos = len;
    let mut last = [0u8; 1];
    if f.seek(SeekFrom::Start(len - 1)).is_ok()
        && f.read_exact(&mut last).is_ok()
        && last[0] == b'\n'
    {
        pos -= 1;
    }
    let mut seen = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while pos > 0 {
        let take = (pos as usize).min(buf.len());
        pos -= take as u64;
        if f.seek(SeekFrom::Start(pos)).is_err() || f.read_exact(&mut buf[..take]).is_err() {
            return 0;
        }
        for i in (0..take).rev() {
            if buf[i] == b'\n' {
                seen += 1;
                if seen == n {
                    return pos + i as u64 + 1;
                }
            }
        }
    }
    0
}

/// The log from byte `start` to `end` (None: following, until the replica is no longer
/// reported and everything it wrote is sent), in chunks of at most 1 MiB.
fn stream_log(
    state: Arc<AppState>,
    name: String,
    replica: String,
    path: std::path::PathBuf,
    start: u64,
    end: Option<u64>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold((start, false), move |(pos, done)| {
        let (state, name, replica, path) =
            (state.clone(), name.clone(), replica.clone(), path.clone());
        async move {
            if done {
                return None;
            }
            loop {
                if let Some(e) = end
                    && pos >= e
                {
                    return None;
                }
                let mut chunk = read_from(&path, pos, end.is_some());
                if let Some(e) = end {
                    chunk.truncate((e - pos) as usize);
                }
                if !chunk.is_empty() {
                    let next = pos + chunk.len() as u64;
                    return Some((Ok(Bytes::from(chunk)), (next, false)));
                }
                if end.is_some() {
                    return None;
                }
                if !state.services.replica_reported(&name, &replica).await {
                    // Its last words, whole.
                    let chunk = read_from(&path, pos, true);
                    if chunk.is_empty() {
                        return None;
                    }
                    let next = pos + chunk.len() as u64;
                    return Some((Ok(Bytes::from(chunk)), (next, true)));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    })
}

/// Waiting jobs listed by `GET /v1/cluster` at most (the rest are counted).
const CLUSTER_WAITING_LISTED: usize = 100;

/// The cluster's capacity and who holds it: totals by resource, by tenant, each
/// holder (training jobs' gangs, services' replicas), and what waits and why. A tenant
/// sees the totals and its own holders and waiters.
pub(super) async fn cluster(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    let cap = &state.config.capacity;
    let capacity_memory = pharos_core::parse_memory(&cap.memory).unwrap_or(0);
    let capacity_gpus: u32 = cap.gpus.values().sum();
    let mine = |t: &str| caller.scope().is_none_or(|s| s == t);
    #[derive(Default)]
    struct Held {
        cpus: f64,
        memory: u64,
        gpus: u32,
    }
    let mut by_tenant: BTreeMap<String, Held> = BTreeMap::new();
    let (mut training, mut services) = (Held::default(), Held::default());
    let mut holders = Vec::new();
    let mut waiting = Vec::new();
    let mut waiting_count = 0usize;
    // What jobs hold: the few placed or running ones, read alone (not every queued job).
    for job in state.store.holding_jobs().await? {
        let Ok(m) = state.manifest(&job) else {
            continue;
        };
        let p = m.per_learner();
        let n = m.learners;
        let h = Held {
            cpus: p.cpus * n as f64,
            memory: p.memory_bytes.saturating_mul(n as u64),
            gpus: p.gpus * n,
        };
        training.cpus += h.cpus;
        training.memory += h.memory;
        training.gpus += h.gpus;
        let t = by_tenant.entry(job.tenant.clone()).or_default();
        t.cpus += h.cpus;
        t.memory += h.memory;
        t.gpus += h.gpus;
        if mine(&job.tenant) {
            holders.push(json!({
                "kind": "training", "id": format!("training-{}", job.id), "name": job.name,
                "tenant": job.tenant, "state": job.state.name(), "learners": n,
                "cpus": h.cpus, "memory_bytes": h.memory, "gpus": h.gpus,
            }));
        }
    }
    // What waits: counted, and the first few listed.
    waiting_count += state.store.waiting_count(caller.scope()).await? as usize;
    let first = state
        .store
        .jobs_page(
            caller.scope(),
            Some(JobState::Queued),
            0,
            CLUSTER_WAITING_LISTED as i64,
        )
        .await?;
    for job in first.iter().filter(|j| j.desired == Desired::Run) {
        waiting.push(json!({
            "kind": "training", "id": format!("training-{}", job.id), "name": job.name,
            "tenant": job.tenant, "queue": job.queue,
            "reason": job.wait_reason.clone().unwrap_or_else(|| "not yet scheduled".into()),
        }));
    }
    for (name, tenant, cpus, held, target, why) in state.services.holdings().await {
        let h = cpus * held as f64;
        services.cpus += h;
        by_tenant.entry(tenant.clone()).or_default().cpus += h;
        if !mine(&tenant) {
            continue;
        }
        if held > 0 {
            holders.push(json!({
                "kind": "service", "id": name, "name": name, "tenant": tenant,
                "replicas": held, "target": target, "cpus": h, "memory_bytes": 0, "gpus": 0,
            }));
        }
        if let Some(reason) = why {
            waiting_count += 1;
            waiting.push(json!({"kind": "service", "id": name, "name": name, "tenant": tenant, "reason": reason}));
        }
    }
    let tenants: Vec<Value> = by_tenant
        .iter()
        .filter(|(t, _)| mine(t))
        .map(
            |(t, h)| json!({"tenant": t, "cpus": h.cpus, "memory_bytes": h.memory, "gpus": h.gpus}),
        )
        .collect();
    Ok(Json(json!({
        "capacity": {"cpus": cap.cpus, "memory_bytes": capacity_memory, "gpus": capacity_gpus, "gpus_by_model": cap.gpus},
        "held": {
            "training": {"cpus": training.cpus, "memory_bytes": training.memory, "gpus": training.gpus},
            "services": {"cpus": services.cpus},
        },
        "free": {
            "cpus": (cap.cpus - training.cpus - services.cpus).max(0.0),
            "memory_bytes": capacity_memory.saturating_sub(training.memory),
            "gpus": capacity_gpus.saturating_sub(training.gpus),
        },
        "tenants": tenants,
        "holders": holders,
        "waiting": waiting,
        "waiting_count": waiting_count,
    })))
}

/// Creates (201) or updates (200) the service named in the path from a YAML or JSON
/// spec.
pub(super) async fn apply_service(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad("spec", "the spec is not UTF-8 text", ErrorCode::C101))?;
    let spec = crate::services::ServiceSpec::parse_named(text, "spec")
        .map_err(|e| ApiError::bad(e.field, e.message, ErrorCode::C101))?;
    if spec.name != name {
        return Err(ApiError::bad(
            "name",
            format!("the spec names {:?}, the path {name:?}", spec.name),
            ErrorCode::C101,
        ));
    }
    if let Some(g) = &spec.graph {
        return Err(ApiError::bad(
            "graph",
            format!("graph: the functions of graph {g} are applied with the graph"),
            ErrorCode::C101,
        ));
    }
    let limits = (!caller.admin).then(|| state.config.limits(&caller.tenant));
    match state
        .services
        .apply(&state, &caller.tenant, limits, spec)
        .await
    {
        Ok((created, v)) => {
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((code, Json(v)).into_response())
        }
        Err(e) => Err(e),
    }
}

pub(super) async fn delete_service(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    if let Some(g) = state.services.graph_of(&name).await
        && state
            .services
            .get(&state, &name, caller.scope())
            .await
            .is_some()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("service {name} runs a function of graph {g}: delete the graph"),
        ));
    }
    match state.services.delete(&state, &name, caller.scope()).await {
        Ok(true) => Ok(Json(json!({ "name": name, "deleted": true }))),
        Ok(false) => Err(service_not_found(&name)),
        Err(e) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e)),
    }
}

pub(super) async fn service_events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    if state
        .services
        .get(&state, &name, caller.scope())
        .await
        .is_none()
    {
        return Err(service_not_found(&name));
    }
    let ev = state
        .services
        .events(&state, &name)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e))?;
    Ok(Json(json!({ "events": ev })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MinutesQuery {
    /// Unix minutes, `from` included, `to` not (default: the last day up to now).
    from: Option<i64>,
    to: Option<i64>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

/// A service's stored per-minute load history (`GET /v1/services/{name}/history`).
pub(super) async fn service_minutes(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    query: Result<Query<MinutesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let now = crate::store::now_ms().div_euclid(60_000);
    let to = q.to.unwrap_or(now);
    let from = q.from.unwrap_or(to - 1440);
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(f) => {
            return Err(ApiError::at(
                StatusCode::BAD_REQUEST,
                "format",
                format!("format {f:?}: json or csv"),
            ));
        }
    };
    let rows = state
        .services
        .read_minutes(&state, &name, caller.scope(), from, to)
        .await?
        .ok_or_else(|| service_not_found(&name))?;
    if csv {
        use std::fmt::Write;
        let mut out = String::from("minute,arrivals,served,dropped,violations,p99_s,replicas\n");
        for (m, r) in rows {
            let o = r.observed;
            let f = |v: Option<String>| v.unwrap_or_default();
            let _ = writeln!(
                out,
                "{m},{},{},{},{},{},{}",
                r.arrivals,
                f(o.map(|o| o.served.to_string())),
                f(o.map(|o| o.dropped.to_string())),
                f(o.map(|o| o.violations.to_string())),
                f(o.and_then(|o| o.p99_s).map(|p| p.to_string())),
                f(o.map(|o| o.replicas.to_string())),
            );
        }
        return Ok(([(axum::http::header::CONTENT_TYPE, "text/csv")], out).into_response());
    }
    let minutes: Vec<Value> = rows
        .into_iter()
        .map(|(m, r)| {
            let mut v = json!(r);
            v["minute"] = json!(m);
            v
        })
        .collect();
    Ok(Json(json!({
        "service": name,
        "from": from,
        "to": to,
        "now_minute": now,
        "minutes": minutes,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ImportBody {
    /// The unix minute of `arrivals[0]`.
    start: i64,
    /// Requests per minute.
    arrivals: Vec<u64>,
    /// `start` is the first minute of a day of the load's daily pattern.
    #[serde(default)]
    day_start: bool,
}

/// Imports past arrivals (`POST /v1/services/{name}/history`).
pub(super) async fn import_minutes(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Json<ImportBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(b) = body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let (written, kept) = state
        .services
        .import_minutes(
            &state,
            &name,
            caller.scope(),
            b.start,
            &b.arrivals,
            b.day_start,
        )
        .await?
        .ok_or_else(|| service_not_found(&name))?;
    Ok(Json(json!({
        "service": name,
        "start": b.start,
        "minutes": b.arrivals.len(),
        "written": written,
        "kept_observed": kept,
    })))
}

/// The store's consistency check (admin only).
pub(super) async fn integrity(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    if !caller.admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "only an admin token may check the store",
        ));
    }
    let problems = state.store.integrity_check().await?;
    Ok(Json(
        json!({ "ok": problems.is_empty(), "problems": problems }),
    ))
}

/// The autoscaler's policy and its recent decisions (the caller's services only).
pub(super) async fn autoscaler(State(state): State<Arc<AppState>>, caller: Caller) -> Json<Value> {
    Json(state.services.autoscaler(&state, caller.scope()).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    service: Option<String>,
}

/// The dashboard's samples: the cluster's totals and the caller's services.
pub(super) async fn history(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    Ok(Json(
        state
            .services
            .history(&state, caller.scope(), q.service.as_deref())
            .await,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_starts_n_lines_from_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        std::fs::write(&p, "a\nbb\nccc\n").unwrap();
        assert_eq!(tail_offset(&p, 1), 5);
        assert_eq!(tail_offset(&p, 2), 2);
        assert_eq!(tail_offset(&p, 3), 0);
        assert_eq!(tail_offset(&p, 9), 0);
        assert_eq!(tail_offset(&p, 0), 9);
        // A last line without its newline is a line.
        std::fs::write(&p, "a\nbb\nccc").unwrap();
        assert_eq!(tail_offset(&p, 1), 5);
        std::fs::write(&p, "").unwrap();
        assert_eq!(tail_offset(&p, 3), 0);
        assert_eq!(tail_offset(&dir.path().join("none"), 3), 0);
        // Across read blocks.
        let long: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, &long).unwrap();
        let at = tail_offset(&p, 2) as usize;
        assert_eq!(&long[at..], "line 49998\nline 49999\n");
    }
}
