//! The REST API (FfDL's shape, under `/v1`): training jobs ("models"), their status,
//! logs and evaluation metrics; tokens; health, Prometheus metrics and the OpenAPI
//! document. Errors are JSON `{error, field?, code?}` with a 4xx status for anything the
//! caller can fix.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pharos_core::{ErrorCode, JobState, Manifest};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::info;

use crate::auth::{Caller, generate_token, hash_token};
use crate::error::{ApiError, ApiResult};
use crate::store::{Desired, JobRow, JobUpdate, NewJob, StoreError};
use crate::{AppState, archive_path};
use pharos_engine::JobPaths;

/// A body rejection (too large, unreadable) as a JSON error.
fn body_error(status: StatusCode, text: String, limit: usize) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    } else {
        ApiError::new(status, text)
    }
}

// ----- router ---------------------------------------------------------------------

pub fn router(state: Arc<AppState>) -> Router {
    let upload_limit = state.config.max_upload_bytes;
    let request_limit = state.config.max_request_bytes;
    let jobs = Router::new()
        .route(
            "/v1/models",
            post(submit)
                .get(list)
                .layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route(
            "/v1/models/{id}",
            get(show)
                .patch(patch)
                .delete(delete)
                .layer(DefaultBodyLimit::max(request_limit)),
        )
        .route("/v1/models/{id}/logs", get(logs))
        .route("/v1/models/{id}/metrics", get(job_metrics))
        .route("/v1/models/{id}/events", get(events))
        .route("/v1/models/{id}/definition", get(definition))
        .route(
            "/v1/tokens",
            post(create_token).layer(DefaultBodyLimit::max(request_limit)),
        )
        .route("/v1/services", get(list_services))
        .route(
            "/v1/services/{name}",
            get(show_service)
                .put(apply_service)
                .delete(delete_service)
                .layer(DefaultBodyLimit::max(request_limit)),
        )
        .route("/v1/services/{name}/events", get(service_events))
        .route("/v1/autoscaler", get(autoscaler))
        .route("/v1/admin/integrity", get(integrity))
        .route("/v1/history", get(history))
        .route(
            "/v1/tokens/revoke",
            post(revoke_token).layer(DefaultBodyLimit::max(request_limit)),
        );
    let queues: Vec<String> = state.config.queues.iter().map(|q| q.name.clone()).collect();
    let doc = Arc::new(crate::openapi::document(&queues));
    Router::new()
        .route(
            "/healthz",
            get(|State(state): State<Arc<AppState>>| async move {
                Json(json!({
                    "status": "ok",
                    "sandbox": if state.sandbox.0 { "users" } else { "off" },
                }))
            }),
        )
        .route("/metrics", get(prometheus))
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { Json((*doc).clone()) }
            }),
        )
        .merge(jobs)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Counts and logs every request.
async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let t0 = std::time::Instant::now();
    let limit = Duration::from_secs_f64(state.config.listener.request_timeout_s);
    let resp = match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request took longer than listener.request_timeout_s ({} s)",
                limit.as_secs_f64()
            ),
        )
        .into_response(),
    };
    let status = resp.status();
    state.metrics.http_requests.fetch_add(1, Ordering::Relaxed);
    if status.is_client_error() {
        state
            .metrics
            .http_client_errors
            .fetch_add(1, Ordering::Relaxed);
    } else if status.is_server_error() {
        state
            .metrics
            .http_server_errors
            .fetch_add(1, Ordering::Relaxed);
    }
    info!(%method, %path, status = status.as_u16(), ms = t0.elapsed().as_secs_f64() * 1e3, "request");
    resp
}

fn parse_id(raw: &str) -> ApiResult<i64> {
    raw.strip_prefix("training-")
        .unwrap_or(raw)
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::not_found(raw))
}

async fn owned_job(state: &AppState, caller: &Caller, raw: &str) -> ApiResult<JobRow> {
    let id = parse_id(raw)?;
    let job = state
        .store
        .job(id, caller.scope())
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => ApiError::not_found(raw),
            other => other.into(),
        })?;
    // A job being deleted is gone for the API at once (its learners may still be
    // stopping).
    if job.desired == Desired::Delete {
        return Err(ApiError::not_found(raw));
    }
    Ok(job)
}

// ----- submission -----------------------------------------------------------------

/// Parses and validates a manifest; the error names the field.
pub fn check_manifest(state: &AppState, text: &str) -> ApiResult<Manifest> {
    let manifest: Manifest = serde_saphyr::from_str(text).map_err(|e| {
        let msg = e.to_string();
        let field = msg
            .split('`')
            .nth(1)
            .filter(|_| msg.contains("field"))
            .unwrap_or("manifest")
            .to_string();
        ApiError::bad(field, format!("manifest: {msg}"), ErrorCode::C101)
    })?;
    manifest.validate().map_err(|e| {
        let code = ErrorCode::for_manifest_field(&e.field);
        ApiError::bad(e.field.clone(), e.to_string(), code)
    })?;
    if !state.config.queues.iter().any(|q| q.name == manifest.queue) {
        let names: Vec<&str> = state
            .config
            .queues
            .iter()
            .map(|q| q.name.as_str())
            .collect();
        return Err(ApiError::bad(
            "queue",
            format!(
                "no queue {:?}; queues: {}",
                manifest.queue,
                names.join(", ")
            ),
            ErrorCode::C101,
        ));
    }
    for (i, d) in manifest.data_stores.iter().enumerate() {
        if let Some(path) = d.connection.get("path")
            && inside(std::path::Path::new(path), &state.config.data_dir)
        {
            return Err(ApiError::bad(
                format!("data_stores[{i}].connection.path"),
                "must not be inside the server's data directory",
                ErrorCode::C103,
            ));
        }
        if !state.backend.supports_store(&d.kind) {
            return Err(ApiError::bad(
                format!("data_stores[{i}].type"),
                format!(
                    "the {} backend cannot serve {:?} stores",
                    state.backend.name(),
                    d.kind
                ),
                ErrorCode::C101,
            ));
        }
    }
    if let Some(m) = &manifest.evaluation_metrics {
        regex::Regex::new(&m.regex).map_err(|e| {
            ApiError::bad("evaluation_metrics.regex", e.to_string(), ErrorCode::C101)
        })?;
    }
    Ok(manifest)
}

/// A tenant's job within the limits the admin set for it.
async fn check_job_limits(state: &AppState, tenant: &str, m: &Manifest) -> ApiResult<()> {
    let l = state.config.limits(tenant);
    if m.priority > l.max_priority {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: format!(
                "priority: {} is above tenant {tenant}'s ceiling of {}",
                m.priority, l.max_priority
            ),
            field: Some("priority".into()),
            code: Some(ErrorCode::C101),
        });
    }
    let cpus = m.cpus * m.learners as f64;
    if cpus > l.max_cpus {
        return Err(ApiError::bad(
            "cpus",
            format!(
                "{} learners of {} vCPUs ask for {cpus} vCPUs; tenant {tenant} may ask for at most {}",
                m.learners, m.cpus, l.max_cpus
            ),
            ErrorCode::C104,
        ));
    }
    let memory = m.per_learner().memory_bytes as f64 * m.learners as f64;
    let max_memory = pharos_core::parse_memory(&l.max_memory).unwrap_or(u64::MAX) as f64;
    if memory > max_memory {
        return Err(ApiError::bad(
            "memory",
            format!(
                "{} learners of {} ask for {} bytes; tenant {tenant} may ask for at most {}",
                m.learners,
                m.memory.as_deref().unwrap_or("1GiB"),
                memory,
                l.max_memory
            ),
            ErrorCode::C104,
        ));
    }
    let active = state.store.unfinished_jobs(tenant).await?;
    if active >= l.max_jobs as i64 {
        return Err(ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: format!(
                "tenant {tenant} has {active} jobs not yet ended, the most it may have ({})",
                l.max_jobs
            ),
            field: None,
            code: Some(ErrorCode::C104),
        });
    }
    Ok(())
}

/// Whether `path` is `dir` or below it, lexically and (where both exist) after
/// resolving links.
fn inside(path: &std::path::Path, dir: &std::path::Path) -> bool {
    let lexical = |p: &std::path::Path| {
        let mut out = std::path::PathBuf::new();
        for c in p.components() {
            match c {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                std::path::Component::CurDir => {}
                other => out.push(other),
            }
        }
        out
    };
    if lexical(path).starts_with(lexical(dir)) {
        return true;
    }
    // The deepest existing ancestor, resolved.
    let mut probe = path.to_path_buf();
    loop {
        if let (Ok(p), Ok(d)) = (probe.canonicalize(), dir.canonicalize()) {
            return p.starts_with(d);
        }
        if !probe.pop() {
            return false;
        }
    }
}

/// Checks a model archive (a tar file of relative paths) before anything is stored.
pub fn check_archive(bytes: &[u8]) -> ApiResult<()> {
    let bad = |m: String| ApiError::bad("model_definition", m, ErrorCode::C102);
    let mut archive = tar::Archive::new(bytes);
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    let mut n = 0;
    for entry in entries {
        let entry = entry.map_err(|e| bad(format!("not a tar archive: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(format!("an entry has an unreadable path: {e}")))?;
        if path.is_absolute()
            || path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(bad(format!(
                "entry {:?} escapes the model directory",
                path.display().to_string()
            )));
        }
        // A link may point only inside the archive's own tree.
        if let Ok(Some(target)) = entry.link_name()
            && (target.is_absolute()
                || target
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir)))
        {
            return Err(bad(format!(
                "entry {:?} links outside the model directory",
                path.display().to_string()
            )));
        }
        n += 1;
    }
    if n == 0 && !bytes.iter().all(|b| *b == 0) {
        return Err(bad("not a tar archive".into()));
    }
    Ok(())
}

/// Writes an archive under its content hash (write, fsync, rename), so a crash leaves
/// either the whole file or none.
pub fn store_archive(data_dir: &std::path::Path, bytes: &[u8]) -> ApiResult<String> {
    use std::io::Write;
    let sha: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = archive_path(data_dir, &sha);
    if path.exists() {
        return Ok(sha);
    }
    // A name of its own, so that two uploads of the same archive never share a file.
    static UPLOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = path.with_extension(format!(
        "tmp-{}-{}",
        std::process::id(),
        UPLOADS.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        // ENOSPC, EFBIG (a file-size limit) and EDQUOT: the disk takes no more.
        let status = if matches!(e.raw_os_error(), Some(28 | 27 | 122)) {
            StatusCode::INSUFFICIENT_STORAGE
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return Err(ApiError {
            status,
            message: format!("storing the model archive failed: {e}"),
            field: None,
            code: Some(ErrorCode::S200),
        });
    }
    Ok(sha)
}

#[derive(Serialize)]
struct Submitted {
    model_id: String,
    id: i64,
    state: JobState,
    /// False when an earlier submission with the same Idempotency-Key is returned.
    created: bool,
}

async fn submit(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    req: Request,
) -> ApiResult<Response> {
    let limit = state.config.max_upload_bytes;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (manifest_text, archive) = if content_type.starts_with("multipart/form-data") {
        let mut mp = Multipart::from_request(req, &state)
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        let mut manifest = None;
        let mut archive = None;
        while let Some(field) = mp
            .next_field()
            .await
            .map_err(|e| body_error(e.status(), e.body_text(), limit))?
        {
            let name = field.name().unwrap_or("").to_string();
            let data = field
                .bytes()
                .await
                .map_err(|e| body_error(e.status(), e.body_text(), limit))?;
            match name.as_str() {
                "manifest" => manifest = Some(String::from_utf8_lossy(&data).into_owned()),
                "model_definition" => archive = Some(data),
                other => {
                    return Err(ApiError::bad(
                        other,
                        format!(
                            "unknown part {other:?}; expected `manifest` and `model_definition`"
                        ),
                        ErrorCode::C101,
                    ));
                }
            }
        }
        let manifest = manifest.ok_or_else(|| {
            ApiError::bad(
                "manifest",
                "the `manifest` part is missing",
                ErrorCode::C101,
            )
        })?;
        (manifest, archive)
    } else {
        let body = Bytes::from_request(req, &state)
            .await
            .map_err(|e| body_error(e.status(), e.body_text(), limit))?;
        (String::from_utf8_lossy(&body).into_owned(), None)
    };
    let manifest = check_manifest(&state, &manifest_text)?;
    if !caller.admin {
        check_job_limits(&state, &caller.tenant, &manifest).await?;
    }
    let idem = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(k) = &idem
        && (k.is_empty() || k.len() > 200)
    {
        return Err(ApiError::bad(
            "Idempotency-Key",
            "1-200 characters",
            ErrorCode::C101,
        ));
    }
    let model_sha = match &archive {
        Some(bytes) => {
            check_archive(bytes)?;
            let dir = state.config.data_dir.clone();
            let bytes = bytes.clone();
            Some(
                tokio::task::spawn_blocking(move || store_archive(&dir, &bytes))
                    .await
                    .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))??,
            )
        }
        None => None,
    };
    let (id, created) = state
        .store
        .insert_job(&NewJob {
            tenant: &caller.tenant,
            name: &manifest.name,
            manifest: &manifest_text,
            queue: &manifest.queue,
            priority: manifest.priority as i64,
            model_sha256: model_sha.as_deref(),
            idempotency_key: idem.as_deref(),
        })
        .await?;
    if created {
        state.metrics.jobs_submitted.fetch_add(1, Ordering::Relaxed);
        state.wake.notify_one();
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let job = state.store.job(id, None).await?;
    Ok((
        status,
        [(header::LOCATION, format!("/v1/models/{id}"))],
        Json(Submitted {
            model_id: format!("training-{id}"),
            id,
            state: job.state,
            created,
        }),
    )
        .into_response())
}

// ----- reading --------------------------------------------------------------------

fn job_json(state: &AppState, job: &JobRow, position: Option<usize>) -> Value {
    let manifest = state.manifest(job).ok();
    json!({
        "id": job.id,
        "model_id": format!("training-{}", job.id),
        "name": job.name,
        "tenant": job.tenant,
        "state": job.state,
        "error_code": job.error_code,
        "message": job.message,
        "queue": job.queue,
        "priority": job.priority,
        "learners": manifest.as_ref().map(|m| m.learners),
        "submitted_ms": job.submitted_ms,
        "started_ms": job.started_ms,
        "finished_ms": job.finished_ms,
        "updated_ms": job.updated_ms,
        "attempt": job.attempt,
        "restarts": job.restarts,
        "desired": job.desired,
        "wait_reason": job.wait_reason,
        "queue_position": position,
    })
}

/// 1-based position among the queued jobs of the same queue, in arrival order.
async fn position(state: &AppState, job: &JobRow) -> ApiResult<Option<usize>> {
    if job.state == JobState::Queued && job.desired == Desired::Run {
        Ok(Some(
            state.store.queue_position(job.id, &job.queue).await? as usize,
        ))
    } else {
        Ok(None)
    }
}

/// Jobs a list returns at most per page.
pub const MAX_PAGE: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    /// Jobs with ids above this (the previous page's `next_after`).
    after: Option<i64>,
    /// Jobs per page, 1-1000 [default 500].
    limit: Option<usize>,
}

async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let filter = match q.state.as_deref() {
        Some(s) => Some(
            JobState::ALL
                .into_iter()
                .find(|st| st.name().eq_ignore_ascii_case(s))
                .ok_or_else(|| {
                    ApiError::bad("state", format!("unknown state {s:?}"), ErrorCode::C101)
                })?,
        ),
        None => None,
    };
    let limit = q.limit.unwrap_or(500);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad(
            "limit",
            format!("must be 1-{MAX_PAGE}, got {limit}"),
            ErrorCode::C101,
        ));
    }
    let after = q.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::bad(
            "after",
            format!("must be at least 0, got {after}"),
            ErrorCode::C101,
        ));
    }
    // One row more than asked tells whether another page follows.
    let mut jobs = state
        .store
        .jobs_page(caller.scope(), filter, after, limit as i64 + 1)
        .await?;
    let more = jobs.len() > limit;
    jobs.truncate(limit);
    let mut items = Vec::with_capacity(jobs.len());
    for j in &jobs {
        items.push(job_json(&state, j, position(&state, j).await?));
    }
    let next_after = if more {
        jobs.last().map(|j| j.id)
    } else {
        None
    };
    Ok(Json(json!({ "models": items, "next_after": next_after })))
}

async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let job = owned_job(&state, &caller, &raw).await?;
    let mut v = job_json(&state, &job, position(&state, &job).await?);
    v["status_history"] = json!(state.store.status_history(job.id).await?);
    v["manifest"] = json!(job.manifest);
    let paths = JobPaths::new(&state.config.data_dir, job.id);
    v["directories"] = json!({
        "logs": paths.logs,
        "results": paths.results,
        "checkpoints": paths.checkpoints,
    });
    Ok(Json(v))
}

async fn events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let job = owned_job(&state, &caller, &raw).await?;
    Ok(Json(json!({ "events": state.store.events(job.id).await? })))
}

async fn definition(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Response> {
    let job = owned_job(&state, &caller, &raw).await?;
    let bytes = match job.model_sha256 {
        Some(sha) => tokio::fs::read(archive_path(&state.config.data_dir, &sha))
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("reading the archive: {e}"),
                )
            })?,
        // No upload: the model directory is empty, and so is its archive.
        None => vec![0; 1024],
    };
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], bytes).into_response())
}

// ----- control --------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    status: String,
}

async fn patch(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(raw): Path<String>,
    body: Result<Json<PatchBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(body) = body.map_err(|e| ApiError::bad("status", e.body_text(), ErrorCode::C101))?;
    let job = owned_job(&state, &caller, &raw).await?;
    match body.status.as_str() {
        "halt" => {
            let live = [
                JobState::Queued,
                JobState::Pending,
                JobState::Downloading,
                JobState::Processing,
            ];
            if !state
                .store
                .set_desired_if(
                    job.id,
                    Desired::Halt,
                    &live,
                    &[Desired::Run, Desired::Preempt],
                )
                .await?
            {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "job {raw} is {}; only a queued or running job can be halted",
                        job.state.name()
                    ),
                ));
            }
            state
                .store
                .add_event(job.id, "halt", "halt requested")
                .await?;
        }
        "resume" => {
            if job.state != JobState::Halted || job.desired == Desired::Delete {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "job {raw} is {}; only a HALTED job can be resumed",
                        job.state.name()
                    ),
                ));
            }
            state
                .store
                .transition(
                    job.id,
                    JobState::Queued,
                    "resumed; starts from its latest checkpoint",
                    None,
                    &JobUpdate {
                        desired: Some(Desired::Run),
                        stop_sent_ms: Some(None),
                        // Not when a delete arrived meanwhile.
                        expect_desired: Some(Desired::Halt),
                        ..Default::default()
                    },
                )
                .await?;
        }
        other => {
            return Err(ApiError::bad(
                "status",
                format!("{other:?}: expected \"halt\" or \"resume\""),
                ErrorCode::C101,
            ));
        }
    }
    state.wake.notify_one();
    let job = state.store.job(job.id, None).await?;
    Ok((StatusCode::ACCEPTED, Json(job_json(&state, &job, None))))
}

async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let job = owned_job(&state, &caller, &raw).await?;
    state
        .store
        .set_desired_if(
            job.id,
            Desired::Delete,
            &JobState::ALL,
            &[Desired::Run, Desired::Halt, Desired::Preempt],
        )
        .await?;
    state
        .store
        .add_event(job.id, "delete", "delete requested")
        .await?;
    state.wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": job.id, "deleting": true})),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    tenant: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    label: String,
}

async fn create_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Json<TokenBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !caller.admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "only an admin token can create tokens",
        ));
    }
    let Json(body) = body.map_err(|e| ApiError::bad("tenant", e.body_text(), ErrorCode::C101))?;
    let ok = !body.tenant.is_empty()
        && body.tenant.len() <= 64
        && body
            .tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        return Err(ApiError::bad(
            "tenant",
            "1-64 characters of letters, digits, '-', '_' or '.'",
            ErrorCode::C101,
        ));
    }
    let token = generate_token();
    state
        .store
        .add_token(&hash_token(&token), &body.tenant, body.admin, &body.label)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": token, "tenant": body.tenant, "admin": body.admin})),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    token: String,
}

/// Revokes a token: the admin any token, a tenant its own tokens. An unknown token, or
/// another tenant's, is 404.
async fn revoke_token(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Json<RevokeBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(body) = body.map_err(|e| ApiError::bad("token", e.body_text(), ErrorCode::C101))?;
    let hash = hash_token(&body.token);
    let owner = state.store.principal(&hash).await?;
    match owner {
        Some(p) if caller.admin || p.tenant == caller.tenant => {
            state.store.remove_token(&hash).await?;
            Ok(StatusCode::NO_CONTENT)
        }
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "no such token")),
    }
}

// ----- logs and metrics -----------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    learner: Option<u32>,
    offset: Option<usize>,
    limit: Option<usize>,
    follow: Option<bool>,
}

async fn logs(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(raw): Path<String>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let job = owned_job(&state, &caller, &raw).await?;
    let learners = state.manifest(&job).map(|m| m.learners).unwrap_or(1);
    let learner = q.learner.unwrap_or(1);
    if learner == 0 || learner > learners {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("job {raw} has no learner {learner} (it has 1..={learners})"),
        ));
    }
    let path = JobPaths::new(&state.config.data_dir, job.id).log_file(learner);
    if q.follow.unwrap_or(false) {
        return Ok(follow(state.clone(), job.id, path).into_response());
    }
    let limit = q.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad("limit", "must be 1-10000", ErrorCode::C101));
    }
    let offset = q.offset.unwrap_or(0);
    if offset > 1_000_000_000_000 {
        return Err(ApiError::bad(
            "offset",
            "must be at most 10^12",
            ErrorCode::C101,
        ));
    }
    let page =
        tokio::task::spawn_blocking(move || crate::logs::page(&path, learner, offset, limit))
            .await
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
            .map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("reading the log: {e}"),
                )
            })?;
    Ok(Json(page).into_response())
}

/// A stream of the log's bytes from the start, following new output until the job
/// ends.
fn follow(state: Arc<AppState>, id: i64, path: std::path::PathBuf) -> Response {
    struct Cursor {
        state: Arc<AppState>,
        id: i64,
        path: std::path::PathBuf,
        pos: u64,
        done: bool,
    }
    let cursor = Cursor {
        state,
        id,
        path,
        pos: 0,
        done: false,
    };
    let stream = futures_util::stream::unfold(cursor, |mut c| async move {
        if c.done {
            return None;
        }
        loop {
            let chunk = read_from(&c.path, c.pos, false);
            if !chunk.is_empty() {
                c.pos += chunk.len() as u64;
                return Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), c));
            }
            let ended = match c.state.store.job(c.id, None).await {
                Ok(j) => j.state.is_terminal(),
                Err(_) => true,
            };
            if ended {
                // One more read: output written just before the end, to its last byte.
                let chunk = read_from(&c.path, c.pos, true);
                c.done = chunk.len() < 1 << 20;
                if chunk.is_empty() {
                    return None;
                }
                c.pos += chunk.len() as u64;
                return Some((Ok(Bytes::from(chunk)), c));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The file from byte `pos` on, at most 1 MiB: whole lines (unless one line is longer
/// than that, or `all`).
fn read_from(path: &std::path::Path, pos: u64, all: bool) -> Vec<u8> {
    use std::io::{Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    if f.seek(SeekFrom::Start(pos)).is_err() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(1 << 20).read_to_end(&mut buf);
    if all || buf.len() == 1 << 20 {
        return buf;
    }
    match buf.iter().rposition(|b| *b == b'\n') {
        Some(i) => buf.truncate(i + 1),
        None => buf.clear(),
    }
    buf
}

async fn job_metrics(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let job = owned_job(&state, &caller, &raw).await?;
    let manifest = state
        .manifest(&job)
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e))?;
    let Some(em) = manifest.evaluation_metrics.clone() else {
        return Ok(Json(
            json!({"points": [], "last": {}, "note": "the manifest has no evaluation_metrics"}),
        ));
    };
    let re = regex::Regex::new(&em.regex)
        .map_err(|e| ApiError::bad("evaluation_metrics.regex", e.to_string(), ErrorCode::C101))?;
    let paths = JobPaths::new(&state.config.data_dir, job.id);
    let logs: Vec<(u32, std::path::PathBuf)> = (1..=manifest.learners)
        .map(|l| (l, paths.log_file(l)))
        .collect();
    let m = tokio::task::spawn_blocking(move || crate::logs::extract(&logs, &re))
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("reading the logs: {e}"),
            )
        })?;
    Ok(Json(json!(m)))
}

async fn prometheus(State(state): State<Arc<AppState>>) -> ApiResult<Response> {
    use std::fmt::Write;
    let m = &state.metrics;
    let mut out = String::new();
    let counters = [
        (
            "pharos_http_requests_total",
            "API requests served",
            m.http_requests.load(Ordering::Relaxed),
        ),
        (
            "pharos_http_client_errors_total",
            "API requests answered 4xx",
            m.http_client_errors.load(Ordering::Relaxed),
        ),
        (
            "pharos_http_server_errors_total",
            "API requests answered 5xx",
            m.http_server_errors.load(Ordering::Relaxed),
        ),
        (
            "pharos_jobs_submitted_total",
            "training jobs accepted",
            m.jobs_submitted.load(Ordering::Relaxed),
        ),
        (
            "pharos_scheduler_decisions_total",
            "scheduling decisions taken",
            m.decisions.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP pharos_scheduler_decision_seconds_sum time spent deciding\n# TYPE pharos_scheduler_decision_seconds_sum counter\npharos_scheduler_decision_seconds_sum {}",
        m.decision_seconds_sum()
    );
    let _ = writeln!(
        out,
        "# HELP pharos_controller_last_pass_seconds the controller's last pass over every job\n# TYPE pharos_controller_last_pass_seconds gauge\npharos_controller_last_pass_seconds {}",
        m.last_reconcile_seconds()
    );
    let _ = writeln!(
        out,
        "# HELP pharos_scheduler_last_decision_seconds the last decision's time\n# TYPE pharos_scheduler_last_decision_seconds gauge\npharos_scheduler_last_decision_seconds {}",
        m.last_decision_seconds()
    );
    let _ = writeln!(
        out,
        "# HELP pharos_jobs training jobs by state\n# TYPE pharos_jobs gauge"
    );
    let counts: BTreeMap<String, i64> = state.store.state_counts().await?.into_iter().collect();
    for s in JobState::ALL {
        let _ = writeln!(
            out,
            "pharos_jobs{{state=\"{}\"}} {}",
            s.name(),
            counts.get(s.name()).unwrap_or(&0)
        );
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

// ----- inference services ---------------------------------------------------------

fn service_not_found(name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("service {name} not found"))
}

async fn list_services(State(state): State<Arc<AppState>>, caller: Caller) -> Json<Value> {
    Json(json!({ "services": state.services.list(&state, caller.scope()).await }))
}

async fn show_service(
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

/// Creates (201) or updates (200) the service named in the path from a YAML or JSON
/// spec.
async fn apply_service(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad("spec", "the spec is not UTF-8 text", ErrorCode::C101))?;
    let spec = crate::services::ServiceSpec::parse(text).map_err(|e| {
        let field = e.split(':').next().unwrap_or("spec").to_string();
        ApiError::bad(field, e, ErrorCode::C101)
    })?;
    if spec.name != name {
        return Err(ApiError::bad(
            "name",
            format!("the spec names {:?}, the path {name:?}", spec.name),
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

async fn delete_service(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    match state.services.delete(&state, &name, caller.scope()).await {
        Ok(true) => Ok(Json(json!({ "name": name, "deleted": true }))),
        Ok(false) => Err(service_not_found(&name)),
        Err(e) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e)),
    }
}

async fn service_events(
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

/// The store's consistency check (admin only).
async fn integrity(State(state): State<Arc<AppState>>, caller: Caller) -> ApiResult<Json<Value>> {
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
async fn autoscaler(State(state): State<Arc<AppState>>, caller: Caller) -> Json<Value> {
    Json(state.services.autoscaler(&state, caller.scope()).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    service: Option<String>,
}

/// The dashboard's samples: the cluster's totals and the caller's services.
async fn history(
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
