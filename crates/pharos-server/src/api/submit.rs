//! Submitting a training job: the manifest and the model archive checked, bounded
//! and stored, the tenant's limits applied, the job queued (idempotently).

use super::*;

/// Parses and validates a manifest; the error names the field.
pub fn check_manifest(state: &AppState, text: &str) -> ApiResult<Manifest> {
    let manifest: Manifest = pharos_engine::yaml::parse(text, "manifest")
        .map_err(|e| ApiError::bad(e.field, e.message, ErrorCode::C101))?;
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

/// A job that could never run - larger than the whole cluster, or than its queue's
/// quota - is refused with the scheduler's own reason rather than queued to wait
/// forever (after the tenant's limits, which say more to a tenant).
fn check_fits(state: &AppState, manifest: &Manifest) -> ApiResult<()> {
    let job = pharos_core::PendingJob {
        id: 0,
        queue: manifest.queue.clone(),
        priority: manifest.priority,
        submitted_s: 0.0,
        learners: manifest.learners,
        per_learner: manifest.per_learner(),
        duration_s: Default::default(),
        attained_gpu_s: 0.0,
    };
    if let Some(why) =
        pharos_policy::training::never_fits_on(&[state.config.node()], &state.config.queues, &job)
    {
        return Err(ApiError::bad("learners", why, ErrorCode::S100));
    }
    Ok(())
}

/// A tenant's job within the limits the admin set for it.
pub(super) async fn check_job_limits(
    state: &AppState,
    tenant: &str,
    m: &Manifest,
) -> ApiResult<()> {
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
pub(super) fn inside(path: &std::path::Path, dir: &std::path::Path) -> bool {
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
pub(super) struct Submitted {
    model_id: String,
    id: i64,
    state: JobState,
    /// False when an earlier submission with the same Idempotency-Key is returned.
    created: bool,
}

pub(super) async fn submit(
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
    check_fits(&state, &manifest)?;
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
    // A new job is answered as accepted (QUEUED), whatever the controller has done with
    // it since; a retried submission with the job's state now.
    let job_state = if created {
        JobState::Queued
    } else {
        state.store.job(id, None).await?.state
    };
    Ok((
        status,
        [(header::LOCATION, format!("/v1/models/{id}"))],
        Json(Submitted {
            model_id: format!("training-{id}"),
            id,
            state: job_state,
            created,
        }),
    )
        .into_response())
}
