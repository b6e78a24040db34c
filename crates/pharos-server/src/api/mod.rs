//! The REST API (FfDL's shape, under `/v1`): training jobs ("models"), their status,
//! logs and evaluation metrics; tokens; health, Prometheus metrics and the OpenAPI
//! document. Errors are JSON `{error, field?, code?}` with a 4xx status for anything the
//! caller can fix ([`crate::error`]).
//!
//! This module holds the routes, the request observer and what every handler shares
//! (a job's id, its owner); the handlers are by subject: [`submit`] (a new training
//! job), [`jobs`] (reading them), [`control`] (halting, resuming, deleting; tokens),
//! [`logs`] (logs, evaluation metrics, Prometheus metrics), [`services`] (inference
//! services, the autoscaler, the dashboard's history) and [`graphs`] (function graphs).

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

mod control;
mod graphs;
mod jobs;
mod logs;
mod services;
mod submit;

use control::*;
use graphs::*;
use jobs::*;
use logs::*;
use services::*;
use submit::*;

pub use submit::{check_archive, check_manifest, store_archive};

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
        .route("/v1/services/{name}/logs", get(service_logs))
        .route(
            "/v1/services/{name}/history",
            get(service_minutes)
                .post(import_minutes)
                .layer(DefaultBodyLimit::max(request_limit)),
        )
        .route("/v1/graphs", get(list_graphs))
        .route(
            "/v1/graphs/{name}",
            get(show_graph)
                .put(apply_graph)
                .delete(delete_graph)
                .layer(DefaultBodyLimit::max(request_limit)),
        )
        .route("/v1/autoscaler", get(autoscaler))
        .route("/v1/whoami", get(whoami))
        .route("/v1/cluster", get(cluster))
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
        .layer(middleware::from_fn_with_state(state.clone(), leader_only))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Services, graphs and what the leader alone knows (the autoscaler, the cluster's use,
/// the dashboard's history) are answered by the leader: another server says which one
/// leads (`503`, `Retry-After`, the leader's URL). Jobs are the store's and any server
/// answers them.
async fn leader_only(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let leaders = [
        "/v1/services",
        "/v1/graphs",
        "/v1/autoscaler",
        "/v1/cluster",
        "/v1/history",
    ];
    if state.leads() || !leaders.iter().any(|p| path.starts_with(p)) {
        return next.run(req).await;
    }
    let leader = state.store.leader().await.ok().filter(|l| l.live);
    let url = leader.as_ref().map(|l| l.url.clone());
    let mut resp = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "error": match &url {
                Some(u) => format!("this server does not lead; ask the leader at {u}"),
                None => "no server leads at the moment (an election is under way); retry".into(),
            },
            "leader": url,
        })),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    // Clients with several servers go to the leader (none named during an election).
    if let Ok(v) = header::HeaderValue::from_str(url.as_deref().unwrap_or("")) {
        resp.headers_mut().insert("x-pharos-leader", v);
    }
    resp
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
