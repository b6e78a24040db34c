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
