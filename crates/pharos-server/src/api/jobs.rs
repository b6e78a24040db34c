//! Reading training jobs: one, a page of them, their events and stored definition.

use super::*;

pub(super) fn job_json(state: &AppState, job: &JobRow, position: Option<usize>) -> Value {
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
        "conditions": job_conditions(job),
    })
}

/// A job's conditions, as a service's are stated: `Scheduled` (its gang placed, or why
/// not: `Unschedulable` when it can never fit, else `Waiting`), and `Complete` or
/// `Failed` (with the error code) once it has ended.
pub(super) fn job_conditions(job: &JobRow) -> Vec<Value> {
    let c = |kind: &str, status: bool, reason: &str, message: &str| json!({"type": kind, "status": if status { "True" } else { "False" }, "reason": reason, "message": message});
    let mut out = Vec::new();
    match job.state {
        JobState::Queued => {
            let why = job.wait_reason.as_deref().unwrap_or("not yet scheduled");
            let reason = if why.starts_with("never fits") {
                "Unschedulable"
            } else if job.desired == Desired::Run {
                "Waiting"
            } else {
                "Stopping"
            };
            out.push(c("Scheduled", false, reason, why));
        }
        JobState::Halted => out.push(c("Scheduled", false, "Halted", &job.message)),
        _ => out.push(c(
            "Scheduled",
            true,
            "Placed",
            &format!("attempt {} placed", job.attempt),
        )),
    }
    match job.state {
        JobState::Completed => out.push(c("Complete", true, "Completed", &job.message)),
        JobState::Failed => {
            let code = job.error_code.as_deref().unwrap_or("");
            let meaning = ErrorCode::parse(code).map(|e| e.describe()).unwrap_or("");
            out.push(c(
                "Failed",
                true,
                if code.is_empty() { "Failed" } else { code },
                &format!(
                    "{}{}",
                    job.message,
                    if meaning.is_empty() {
                        String::new()
                    } else {
                        format!(" [{code}: {meaning}]")
                    }
                ),
            ));
        }
        _ => {}
    }
    out
}

/// 1-based position among the queued jobs of the same queue, in arrival order.
pub(super) async fn position(state: &AppState, job: &JobRow) -> ApiResult<Option<usize>> {
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
pub(super) struct ListQuery {
    state: Option<String>,
    /// Jobs with ids above this (the previous page's `next_after`).
    after: Option<i64>,
    /// Jobs per page, 1-1000 [default 500].
    limit: Option<usize>,
}

pub(super) async fn list(
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
                    let states: Vec<&str> = JobState::ALL.iter().map(|s| s.name()).collect();
                    ApiError::at(
                        StatusCode::BAD_REQUEST,
                        "state",
                        format!("unknown state {s:?}; states: {}", states.join(", ")),
                    )
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
    // Queue positions: one count up to a queue's first waiting job on the page, then
    // only the (short) ranges between its waiting jobs - not a count from the start of
    // the queue for each (a page deep in a long queue stays as fast as the first).
    let mut last: std::collections::HashMap<&str, (i64, i64)> = Default::default();
    let mut items = Vec::with_capacity(jobs.len());
    for j in &jobs {
        let pos = if j.state == JobState::Queued && j.desired == Desired::Run {
            let p = match last.get(j.queue.as_str()) {
                Some(&(id, p)) => p + state.store.queued_between(&j.queue, id, j.id).await?,
                None => state.store.queue_position(j.id, &j.queue).await?,
            };
            last.insert(&j.queue, (j.id, p));
            Some(p as usize)
        } else {
            None
        };
        items.push(job_json(&state, j, pos));
    }
    let next_after = if more {
        jobs.last().map(|j| j.id)
    } else {
        None
    };
    Ok(Json(json!({ "models": items, "next_after": next_after })))
}

pub(super) async fn show(
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

pub(super) async fn events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let job = owned_job(&state, &caller, &raw).await?;
    Ok(Json(json!({ "events": state.store.events(job.id).await? })))
}

pub(super) async fn definition(
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
