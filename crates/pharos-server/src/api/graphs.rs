//! Function graphs: applied, read and deleted as a whole (their functions' services are
//! pharos's to manage).

use super::*;

fn graph_not_found(name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("graph {name} not found"))
}

pub(super) async fn list_graphs(State(state): State<Arc<AppState>>, caller: Caller) -> Json<Value> {
    Json(json!({ "graphs": state.graphs.list(&state, caller.scope()).await }))
}

pub(super) async fn show_graph(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    state
        .graphs
        .get(&state, &name, caller.scope())
        .await
        .map(Json)
        .ok_or_else(|| graph_not_found(&name))
}

/// Creates (201) or updates (200) the graph named in the path from a YAML or JSON spec
/// (`kind: graph`).
pub(super) async fn apply_graph(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad("spec", "the spec is not UTF-8 text", ErrorCode::C101))?;
    let spec = pharos_engine::GraphSpec::parse_named(text, "spec")
        .map_err(|e| ApiError::bad(e.field, e.message, ErrorCode::C101))?;
    if spec.name != name {
        return Err(ApiError::bad(
            "name",
            format!("the spec names {:?}, the path {name:?}", spec.name),
            ErrorCode::C101,
        ));
    }
    let limits = (!caller.admin).then(|| state.config.limits(&caller.tenant));
    let (created, v) = state
        .graphs
        .apply(&state, &caller.tenant, limits, spec)
        .await?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(v)).into_response())
}

pub(super) async fn delete_graph(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    match state.graphs.delete(&state, &name, caller.scope()).await {
        Ok(true) => Ok(Json(json!({ "name": name, "deleted": true }))),
        Ok(false) => Err(graph_not_found(&name)),
        Err(e) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e)),
    }
}
