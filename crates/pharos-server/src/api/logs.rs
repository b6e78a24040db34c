//! A job's logs (pages or followed) and evaluation metrics, and the server's
//! Prometheus metrics.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogQuery {
    learner: Option<u32>,
    offset: Option<usize>,
    limit: Option<usize>,
    follow: Option<bool>,
}

pub(super) async fn logs(
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
            format!(
                "job training-{} has no learner {learner} (it has 1..={learners})",
                job.id
            ),
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
pub(super) fn follow(state: Arc<AppState>, id: i64, path: std::path::PathBuf) -> Response {
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
pub(super) fn read_from(path: &std::path::Path, pos: u64, all: bool) -> Vec<u8> {
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

pub(super) async fn job_metrics(
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
    let logs: Vec<crate::logs::LearnerLog> = (1..=manifest.learners)
        .map(|l| crate::logs::LearnerLog {
            learner: l,
            path: paths.log_file(l),
            attempts: paths.attempt_starts(l),
        })
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

/// The server's metrics. Without a token: totals over every tenant only; with an admin
/// token, also each service's, graph's and function's (their names are tenants').
pub(super) async fn prometheus(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
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
        "# HELP pharos_controller_last_pass_seconds the controller's last pass\n# TYPE pharos_controller_last_pass_seconds gauge\npharos_controller_last_pass_seconds {}",
        m.last_reconcile_seconds()
    );
    if let Some((p50, p99, max, n)) = m.pass_quantiles() {
        let _ = writeln!(
            out,
            "# HELP pharos_controller_pass_seconds the controller's pass time over its last {n} passes\n# TYPE pharos_controller_pass_seconds gauge\npharos_controller_pass_seconds{{quantile=\"0.5\"}} {p50}\npharos_controller_pass_seconds{{quantile=\"0.99\"}} {p99}\npharos_controller_pass_seconds{{quantile=\"1\"}} {max}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP pharos_jobs_waiting queued jobs waiting to run (the controller's last pass)\n# TYPE pharos_jobs_waiting gauge\npharos_jobs_waiting {}",
        m.waiting_jobs.load(Ordering::Relaxed)
    );
    let (leads, term) = (state.leads(), state.store.term().unwrap_or(-1));
    let _ = writeln!(
        out,
        "# HELP pharos_leader whether this server does the leader's work (1) and its term (-1 without one)\n# TYPE pharos_leader gauge\npharos_leader {}\n# TYPE pharos_leader_term gauge\npharos_leader_term {term}",
        u8::from(leads)
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
    if let (_, Some(p50), Some(p99), Some(max)) = state.services.loop_periods() {
        let _ = writeln!(
            out,
            "# HELP pharos_services_loop_period_seconds the services loop's period (pass start to pass start) over its last passes\n# TYPE pharos_services_loop_period_seconds gauge\npharos_services_loop_period_seconds{{quantile=\"0.5\"}} {p50}\npharos_services_loop_period_seconds{{quantile=\"0.99\"}} {p99}\npharos_services_loop_period_seconds{{quantile=\"1\"}} {max}"
        );
    }
    if !crate::auth::is_admin(&state, &headers).await {
        return Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response());
    }
    let forecasts = state.services.next_minute_forecasts().await;
    if !forecasts.is_empty() {
        let _ = writeln!(
            out,
            "# HELP pharos_service_forecast_requests the next minute's requests as forecast\n# TYPE pharos_service_forecast_requests gauge"
        );
        for (name, mean, q90) in forecasts {
            let _ = writeln!(
                out,
                "pharos_service_forecast_requests{{service=\"{name}\",stat=\"mean\"}} {mean}\npharos_service_forecast_requests{{service=\"{name}\",stat=\"q90\"}} {q90}"
            );
        }
    }
    state.services.prometheus(&mut out).await;
    state.graphs.prometheus(&mut out).await;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}
