//! Changing training jobs (halt, resume, delete) and API tokens.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PatchBody {
    status: String,
}

pub(super) async fn patch(
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
                        "job training-{} is {}; only a queued or running job can be halted",
                        job.id,
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
                        "job training-{} is {}; only a HALTED job can be resumed",
                        job.id,
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
            state
                .store
                .add_event(
                    job.id,
                    "resume",
                    &format!(
                        "resume requested; attempt {} will start from the latest checkpoint",
                        job.attempt + 1
                    ),
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

pub(super) async fn delete(
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
pub(super) struct TokenBody {
    tenant: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    label: String,
}

/// Who the caller's token names: what `pharos login` checks before it keeps a token.
pub(super) async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({"tenant": caller.tenant, "admin": caller.admin}))
}

pub(super) async fn create_token(
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
pub(super) struct RevokeBody {
    token: String,
}

/// Revokes a token: the admin any token, a tenant its own tokens. An unknown token, or
/// another tenant's, is 404.
pub(super) async fn revoke_token(
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
