//! The controller: a reconcile loop that moves every job towards what it should be
//! doing. It keeps nothing in memory that the store does not have (its copy of the jobs,
//! [`cache::JobCache`], follows the store's changes), so after a crash it picks up each
//! job where the store says it is, and its actions on the backend are idempotent
//! (starting a learner that runs is a no-op).

pub mod cache;

use std::sync::Arc;
use std::time::Instant;

use pharos_core::{
    ErrorCode, GangPlacement, JobState, Manifest, PendingJob, RunningJob, SchedView,
    TrainingScheduler,
};
use pharos_engine::host::LockExt;
use pharos_engine::training::{BackendError, JobPaths, JobRun, LearnerStatus};
use pharos_policy::training::GangScheduler;
use tracing::{info, warn};

use crate::AppState;
use crate::store::{Desired, JobRow, JobUpdate, StoreError, now_ms};
use cache::JobCache;

/// Runs the loop until the process ends (while this server leads: see
/// [`crate::leader`]).
pub async fn run(state: Arc<AppState>) {
    let tick = std::time::Duration::from_millis(state.config.tick_ms);
    let mut cache = JobCache::new(
        GangScheduler::new(state.config.scheduler.clone()),
        state.config.schedule_window,
    );
    loop {
        if !state.leads() {
            cache.clear();
            let changed = state.leader_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !state.leads() {
                tokio::select! {
                    _ = changed => {}
                    _ = tokio::time::sleep(tick) => {}
                }
            }
            continue;
        }
        let t0 = Instant::now();
        let result = reconcile(&state, &mut cache).await;
        state.metrics.record_reconcile(t0.elapsed().as_secs_f64());
        match result {
            Err(StoreError::Fenced(term)) => {
                warn!(term, "no longer the leader; the controller stops");
                cache.clear();
            }
            Err(e) => {
                warn!(error = %e, "reconcile failed; retrying");
                // What failed may have been half read: read everything again.
                cache.clear();
            }
            Ok(()) => {}
        }
        if cache.behind {
            continue;
        }
        tokio::select! {
            _ = state.wake.notified() => {}
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

/// One pass: what changed is read, every job but the waiting ones is supervised, then
/// one scheduling decision over the first waiting jobs of each queue.
pub async fn reconcile(state: &AppState, cache: &mut JobCache) -> Result<(), StoreError> {
    cache.refresh(&state.store).await?;
    let others: Vec<JobRow> = cache.others().cloned().collect();
    for job in others {
        let id = job.id;
        // Follow a job through several phases in one pass (PENDING -> DOWNLOADING ->
        // PROCESSING) rather than one phase per tick.
        let mut job = job;
        for _ in 0..4 {
            let before = (job.state, job.attempt, job.desired);
            if let Err(e) = supervise(state, job).await {
                // No longer the leader: nothing more is done, here or on an engine.
                if matches!(e, StoreError::Fenced(_)) {
                    return Err(e);
                }
                // A transition refused because the API changed the job meanwhile is
                // retried on the next pass; anything else is worth a warning.
                if !matches!(e, StoreError::Transition { .. }) {
                    warn!(job = id, error = %e, "supervising the job failed");
                }
                break;
            }
            match state.store.job(id, None).await {
                Ok(next) if (next.state, next.attempt, next.desired) != before => job = next,
                _ => break,
            }
        }
    }
    cache.refresh(&state.store).await?;
    // A decision only when it could differ from the last (a submission behind the
    // first waiting jobs of its queue does not change it); time-driven orders and a
    // periodic look decide anyway.
    state.metrics.waiting_jobs.store(
        cache.waiting_count() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    let services = state.services.held();
    let needs_ticks = state.scheduler.lock_or_recover().needs_ticks();
    // Not on a copy still catching up with the store (the rest is read next pass).
    if !cache.behind
        && (needs_ticks || cache.worth_deciding(&services, std::time::Duration::from_secs(10)))
        && schedule(state, cache).await?
    {
        cache.decided(services);
    }
    Ok(())
}

pub fn parse_manifest(text: &str) -> Result<Manifest, String> {
    // Validated again: a stored manifest that is no longer valid (bounds tightened
    // since it was accepted) fails its job with the reason instead of running.
    let m = serde_saphyr::from_str::<Manifest>(text).map_err(|e| e.to_string())?;
    m.validate().map_err(|e| e.to_string())?;
    Ok(m)
}

/// Where a running job's learners are: this machine, with the GPU model the scheduler
/// chose (stored at placement).
fn placement_for(job: &JobRow, m: &Manifest) -> GangPlacement {
    let model = if m.gpus == 0 {
        None
    } else {
        job.gpu_model.clone().or_else(|| m.gpu_type.clone())
    };
    vec![(0, model); m.learners as usize]
}

fn job_run(state: &AppState, job: &JobRow, manifest: Manifest) -> JobRun {
    JobRun {
        id: job.id,
        paths: JobPaths::new(&state.config.data_dir, job.id),
        model_archive: job
            .model_sha256
            .as_ref()
            .map(|h| crate::archive_path(&state.config.data_dir, h)),
        attempt: job.attempt.max(0) as u32,
        master_port: job.master_port.unwrap_or(0) as u16,
        placement: placement_for(job, &manifest),
        devices: job
            .devices
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_default(),
        manifest,
        env: Default::default(),
        run_as: None,
    }
}

async fn event(state: &AppState, id: i64, kind: &str, message: &str) {
    info!(job = id, kind, message);
    if let Err(e) = state.store.add_event(id, kind, message).await {
        warn!(job = id, error = %e, "recording an event failed");
    }
}

/// Runs a blocking backend call off the async threads.
async fn on_backend<T: Send + 'static>(
    state: &AppState,
    run: &Arc<JobRun>,
    f: impl FnOnce(&dyn crate::Backend, &JobRun) -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    let (backend, run) = (state.backend.clone(), run.clone());
    tokio::task::spawn_blocking(move || f(backend.as_ref(), &run))
        .await
        .unwrap_or_else(|e| Err(BackendError::new(format!("backend task: {e}"))))
}

/// The learners' statuses, or None when they could not be read: a failed look never
/// reads as "nothing runs", the caller tries again (after a back-off while the engine
/// keeps failing).
async fn poll(state: &AppState, run: &Arc<JobRun>) -> Option<Vec<LearnerStatus>> {
    if !may_ask(state, run.id, now_ms()) {
        return None;
    }
    match on_backend(state, run, |b, r| b.poll(r)).await {
        Ok(s) => {
            engine_answers(state, run.id).await;
            Some(s)
        }
        Err(e) => {
            engine_failed(state, run.id, "reading the learners' status", &e).await;
            None
        }
    }
}

/// Whether the engine may be asked about job `id` now.
fn may_ask(state: &AppState, id: i64, now: i64) -> bool {
    let t = state.engine_trouble.lock_or_recover();
    t.get(&id).is_none_or(|(_, next)| now >= *next)
}

/// A failed engine call: the first of a streak is an event of the job (later ones are
/// logged); the next call waits 1 s, 2 s, 4 s ... up to 30 s. The job keeps its state.
async fn engine_failed(state: &AppState, id: i64, what: &str, e: &BackendError) {
    // (failures in the streak, or None for a gang waiting for room; first of a streak)
    let (failures, first) = {
        let mut t = state.engine_trouble.lock_or_recover();
        let first = !t.contains_key(&id);
        let entry = t.entry(id).or_insert((0, 0));
        if e.waiting {
            // A gang waiting for room is asked again every 2 s (room may come any
            // time); waiting is not a failure.
            entry.1 = now_ms() + 2000;
            (None, first)
        } else {
            entry.0 += 1;
            let wait = pharos_engine::host::Backoff::seconds(30).after(entry.0);
            entry.1 = now_ms() + wait.as_millis() as i64;
            (Some(entry.0), first)
        }
    };
    match failures {
        None if first => event(state, id, "waiting", &format!("the gang waits: {e}")).await,
        None => {}
        Some(1) => {
            event(
                state,
                id,
                "engine-unavailable",
                &format!("{what} failed, retrying with back-off: {e}"),
            )
            .await
        }
        Some(n) => warn!(job = id, failures = n, error = %e, "{what} failed again"),
    }
}

/// The engine answered: ends a streak of failures (with an event). A gang waiting for
/// room keeps waiting (its entry goes when it starts: [`done_waiting`]).
async fn engine_answers(state: &AppState, id: i64) {
    let ended = {
        let mut t = state.engine_trouble.lock_or_recover();
        match t.get(&id) {
            Some((failures, _)) if *failures > 0 => t.remove(&id),
            _ => None,
        }
    };
    if let Some((failures, _)) = ended {
        event(
            state,
            id,
            "engine-available",
            &format!("the engine answers again after {failures} failed call(s)"),
        )
        .await;
    }
}

/// The gang started (or the attempt ended): it no longer waits for room (a streak of
/// failures is ended by [`engine_answers`]).
fn done_waiting(state: &AppState, id: i64) {
    let mut t = state.engine_trouble.lock_or_recover();
    if t.get(&id).is_some_and(|(failures, _)| *failures == 0) {
        t.remove(&id);
    }
}

/// Ends a job FAILED with `code`.
async fn fail(state: &AppState, id: i64, message: &str, code: ErrorCode) -> Result<(), StoreError> {
    state
        .store
        .transition(
            id,
            JobState::Failed,
            message,
            Some(code),
            &JobUpdate::default(),
        )
        .await
}

/// A port for the gang's rendezvous (learner 1 listens on it).
fn free_port() -> u16 {
    pharos_engine::host::free_port("127.0.0.1").unwrap_or(29500)
}

async fn supervise(state: &AppState, job: JobRow) -> Result<(), StoreError> {
    let id = job.id;
    let manifest = match state.manifest(&job) {
        Ok(m) => (*m).clone(),
        Err(e) => {
            if !job.state.is_terminal() {
                fail(
                    state,
                    id,
                    &format!("stored manifest unreadable: {e}"),
                    ErrorCode::C101,
                )
                .await?;
            }
            return Ok(());
        }
    };
    let mut run = job_run(state, &job, manifest);
    run.run_as = match state.run_as(&job.tenant).await {
        Ok(r) => r,
        Err(e) => {
            // Asked again at the next pass (the store may be back, an id freed).
            warn!(job = id, "sandbox user: {e}");
            return Ok(());
        }
    };
    let run = Arc::new(run);
    let now = now_ms();
    match job.state {
        s if s.is_terminal() && job.desired == Desired::Delete => {
            remove_deleted(state, &job, &run, now).await
        }
        JobState::Queued => settle_queued(state, &job).await,
        JobState::Pending if job.desired == Desired::Run => prepare(state, &job, &run, now).await,
        JobState::Downloading | JobState::Processing if job.desired == Desired::Run => {
            follow_learners(state, &job, run, now).await
        }
        JobState::Pending | JobState::Downloading | JobState::Processing => {
            stop_or_finish(state, &job, run, now).await
        }
        JobState::Storing => finish_storing(state, &job, run).await,
        _ => Ok(()),
    }
}

/// A state change with nothing else to record.
async fn transition(
    state: &AppState,
    id: i64,
    to: JobState,
    message: &str,
) -> Result<(), StoreError> {
    state
        .store
        .transition(id, to, message, None, &JobUpdate::default())
        .await
}

/// A deleted job that has ended: the engine lets go of it, then its record and (unless
/// another job uses it) its model archive go.
async fn remove_deleted(
    state: &AppState,
    job: &JobRow,
    run: &Arc<JobRun>,
    now: i64,
) -> Result<(), StoreError> {
    let (store, id) = (&state.store, job.id);
    if !may_ask(state, id, now) {
        return Ok(());
    }
    match on_backend(state, run, move |b, r| b.remove(r)).await {
        Ok(()) => {
            state.engine_trouble.lock_or_recover().remove(&id);
        }
        // The engine is away: what it runs for the job would be left behind, so
        // the job stays until it answers.
        Err(e) if e.transient => {
            engine_failed(state, id, "removing the job from the engine", &e).await;
            return Ok(());
        }
        Err(e) => {
            event(state, id, "delete", &format!("removing files failed: {e}")).await;
        }
    }
    store
        .update(
            id,
            &JobUpdate {
                deleted: Some(true),
                ..Default::default()
            },
        )
        .await?;
    // Its model archive too, unless another job uses the same one.
    if let Some(sha) = &job.model_sha256
        && !store.archive_in_use(sha).await?
    {
        let _ = std::fs::remove_file(crate::archive_path(&state.config.data_dir, sha));
    }
    event(state, id, "delete", "deleted").await;
    Ok(())
}

/// A queued job asked to halt (or be deleted) halts; one whose preemption came too
/// late (it was requeued first) runs again when scheduled.
async fn settle_queued(state: &AppState, job: &JobRow) -> Result<(), StoreError> {
    match job.desired {
        Desired::Halt | Desired::Delete => {
            transition(state, job.id, JobState::Halted, "halted while queued").await
        }
        Desired::Preempt => {
            state
                .store
                .update(
                    job.id,
                    &JobUpdate {
                        desired: Some(Desired::Run),
                        expect_desired: Some(Desired::Preempt),
                        ..Default::default()
                    },
                )
                .await
        }
        Desired::Run => Ok(()),
    }
}

/// A scheduled job's model and data made ready by the engine.
async fn prepare(
    state: &AppState,
    job: &JobRow,
    run: &Arc<JobRun>,
    now: i64,
) -> Result<(), StoreError> {
    let id = job.id;
    if !may_ask(state, id, now) {
        return Ok(());
    }
    match on_backend(state, run, move |b, r| b.prepare(r)).await {
        Err(e) if e.transient => {
            engine_failed(state, id, "preparing the job", &e).await;
            Ok(())
        }
        Ok(()) => {
            engine_answers(state, id).await;
            transition(state, id, JobState::Downloading, "model and data ready").await
        }
        Err(e) => {
            let code = if e.message.contains("archive") {
                ErrorCode::C102
            } else {
                ErrorCode::S300
            };
            fail(state, id, &format!("preparing the job failed: {e}"), code).await
        }
    }
}

/// A running attempt: a failed learner fails the gang (restart or FAILED), all
/// succeeded completes the job, learners not started yet are started.
async fn follow_learners(
    state: &AppState,
    job: &JobRow,
    run: Arc<JobRun>,
    now: i64,
) -> Result<(), StoreError> {
    let id = job.id;
    let Some(statuses) = poll(state, &run).await else {
        return Ok(());
    };
    let failed = statuses
        .iter()
        .enumerate()
        .find(|(_, s)| s.ended() && !s.succeeded());
    if let Some((i, s)) = failed {
        return learner_failed(state, job, run, &statuses, i, *s, now).await;
    }
    if statuses.iter().all(|s| s.succeeded()) {
        return finish(state, job, run, JobState::Completed, None).await;
    }
    if job.state == JobState::Downloading && !statuses.contains(&LearnerStatus::NotStarted) {
        // Started before a crash of the server, which did not record it.
        let message = format!("learners running (attempt {}, re-attached)", run.attempt);
        return transition(state, id, JobState::Processing, &message).await;
    }
    if statuses.contains(&LearnerStatus::NotStarted) && now >= job.not_before_ms {
        return start_learners(state, job, &run).await;
    }
    Ok(())
}

/// Starts the learners not running yet (starting is idempotent).
async fn start_learners(
    state: &AppState,
    job: &JobRow,
    run: &Arc<JobRun>,
) -> Result<(), StoreError> {
    let id = job.id;
    match on_backend(state, run, move |b, r| b.start(r)).await {
        Err(e) if e.transient => {
            // Whatever started stays: starting is idempotent, so the next try starts
            // only the rest.
            engine_failed(state, id, "starting the learners", &e).await;
            Ok(())
        }
        Ok(()) => {
            done_waiting(state, id);
            if job.state == JobState::Downloading {
                let message = format!(
                    "{} learner(s) running (attempt {})",
                    run.manifest.learners, run.attempt
                );
                transition(state, id, JobState::Processing, &message).await
            } else {
                let message = format!("learners of attempt {} started", run.attempt);
                event(state, id, "start", &message).await;
                Ok(())
            }
        }
        Err(e) => {
            // Leave nothing of a half-started gang running.
            signal(state, run, true).await;
            fail(
                state,
                id,
                &format!("starting the learners failed: {e}"),
                ErrorCode::S101,
            )
            .await
        }
    }
}

/// A crash during STORING: finish it the way the learners ended.
async fn finish_storing(
    state: &AppState,
    job: &JobRow,
    run: Arc<JobRun>,
) -> Result<(), StoreError> {
    if matches!(job.desired, Desired::Halt | Desired::Delete) {
        return finish(state, job, run, JobState::Halted, None).await;
    }
    let Some(statuses) = poll(state, &run).await else {
        return Ok(());
    };
    if !statuses.is_empty() && statuses.iter().all(|s| s.succeeded()) {
        finish(state, job, run, JobState::Completed, None).await
    } else {
        finish(state, job, run, JobState::Failed, Some(ErrorCode::C201)).await
    }
}

/// A learner ended badly: stop the others, then restart the gang from its checkpoint
/// after a backoff, or fail the job once `max_restarts` is spent.
async fn learner_failed(
    state: &AppState,
    job: &JobRow,
    run: Arc<JobRun>,
    statuses: &[LearnerStatus],
    index: usize,
    status: LearnerStatus,
    now: i64,
) -> Result<(), StoreError> {
    let id = job.id;
    // What the engine adds (a lost node), per failed learner.
    let details: Vec<Option<String>> = {
        let n = statuses.len() as u32;
        on_backend(state, &run, move |b, r| {
            Ok((1..=n).map(|l| b.failure_detail(r, l)).collect())
        })
        .await
        .unwrap_or_default()
    };
    let describe = |i: usize, s: &LearnerStatus| match details.get(i).cloned().flatten() {
        Some(d) => format!("learner {} {} ({d})", i + 1, s.describe()),
        None => format!("learner {} {}", i + 1, s.describe()),
    };
    if statuses.contains(&LearnerStatus::Running) {
        if job.stop_sent_ms.is_none() {
            event(
                state,
                id,
                "learner-failed",
                &format!(
                    "{} (attempt {}); stopping the others",
                    describe(index, &status),
                    run.attempt
                ),
            )
            .await;
            ask_to_stop(state, &run, now).await?;
        } else if now - job.stop_sent_ms.unwrap_or(now) > grace_ms(state) {
            signal(state, &run, true).await;
        }
        return Ok(());
    }
    // Every learner has ended: say how each failed one did (the first to fail and
    // those that failed because it did).
    let failures = statuses
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.succeeded())
        .map(|(i, s)| describe(i, s))
        .collect::<Vec<_>>()
        .join(", ");
    let max = run.manifest.max_restarts as i64;
    if job.restarts < max {
        let restarts = job.restarts + 1;
        let backoff_s = pharos_engine::host::Backoff {
            base: std::time::Duration::from_secs_f64(state.config.restart_backoff_s),
            max: std::time::Duration::from_secs_f64(state.config.restart_backoff_max_s),
        }
        .after(restarts as u32)
        .as_secs_f64();
        event(
            state,
            id,
            "restart",
            &format!(
                "{failures} (attempt {}); restart {restarts} of {max} in {backoff_s:.1} s from the latest checkpoint",
                run.attempt
            ),
        )
        .await;
        state
            .store
            .update(
                id,
                &JobUpdate {
                    restarts: Some(restarts),
                    attempt: Some(job.attempt + 1),
                    not_before_ms: Some(now + (backoff_s * 1000.0) as i64),
                    stop_sent_ms: Some(None),
                    master_port: Some(Some(free_port() as i64)),
                    ..Default::default()
                },
            )
            .await?;
        Ok(())
    } else {
        let msg = format!(
            "{failures} after {} restart(s) (max_restarts {max})",
            job.restarts
        );
        event(state, id, "learner-failed", &msg).await;
        finish_with(
            state,
            job,
            run,
            JobState::Failed,
            Some(ErrorCode::C201),
            &msg,
        )
        .await
    }
}

/// SIGTERM to the attempt's learners, and when it was sent (for the SIGKILL deadline).
async fn ask_to_stop(state: &AppState, run: &Arc<JobRun>, now: i64) -> Result<(), StoreError> {
    signal(state, run, false).await;
    state
        .store
        .update(
            run.id,
            &JobUpdate {
                stop_sent_ms: Some(Some(now)),
                ..Default::default()
            },
        )
        .await
}

fn grace_ms(state: &AppState) -> i64 {
    (state.config.halt_grace_s * 1000.0) as i64
}

async fn signal(state: &AppState, run: &Arc<JobRun>, kill: bool) {
    if let Err(e) = on_backend(state, run, move |b, r| b.signal(r, kill)).await {
        warn!(job = run.id, error = %e, "signalling learners failed");
    }
}

/// The job should stop (halt, preemption, delete): SIGTERM once, SIGKILL after the
/// grace period, and when every learner has ended, HALTED or back to QUEUED.
async fn stop_or_finish(
    state: &AppState,
    job: &JobRow,
    run: Arc<JobRun>,
    now: i64,
) -> Result<(), StoreError> {
    let id = job.id;
    let Some(statuses) = poll(state, &run).await else {
        return Ok(());
    };
    if statuses.contains(&LearnerStatus::Running) {
        match job.stop_sent_ms {
            None => {
                ask_to_stop(state, &run, now).await?;
                let what = match job.desired {
                    Desired::Preempt => "preempted: stopping the learners at their checkpoint",
                    _ => "halting: stopping the learners",
                };
                event(state, id, "stop", what).await;
            }
            Some(sent) if now - sent > grace_ms(state) => signal(state, &run, true).await,
            Some(_) => {}
        }
        return Ok(());
    }
    if job.desired == Desired::Preempt {
        state
            .store
            .transition(
                id,
                JobState::Queued,
                "preempted; resumes from its latest checkpoint",
                None,
                &JobUpdate {
                    desired: Some(Desired::Run),
                    stop_sent_ms: Some(None),
                    expect_desired: Some(Desired::Preempt),
                    ..Default::default()
                },
            )
            .await
    } else {
        finish(state, job, run, JobState::Halted, None).await
    }
}

async fn finish(
    state: &AppState,
    job: &JobRow,
    run: Arc<JobRun>,
    end: JobState,
    code: Option<ErrorCode>,
) -> Result<(), StoreError> {
    let msg = match end {
        JobState::Completed => "completed".to_string(),
        JobState::Halted => "halted".to_string(),
        _ => "failed".to_string(),
    };
    finish_with(state, job, run, end, code, &msg).await
}

/// STORING (logs and results), then the end state.
async fn finish_with(
    state: &AppState,
    job: &JobRow,
    run: Arc<JobRun>,
    end: JobState,
    code: Option<ErrorCode>,
    message: &str,
) -> Result<(), StoreError> {
    let id = job.id;
    done_waiting(state, id);
    if job.state != JobState::Storing {
        state
            .store
            .transition(
                id,
                JobState::Storing,
                "storing logs and results",
                None,
                &JobUpdate::default(),
            )
            .await?;
    }
    let outcome = end.name();
    match on_backend(state, &run, move |b, r| b.store_results(r, outcome)).await {
        // The engine is away: stay STORING; storing is tried again (with the back-off).
        Err(e) if e.transient => {
            engine_failed(state, id, "storing the results", &e).await;
            return Ok(());
        }
        Err(e) => {
            return fail(
                state,
                id,
                &format!("storing the results failed: {e}"),
                ErrorCode::S301,
            )
            .await;
        }
        Ok(()) => {}
    }
    state
        .store
        .transition(id, end, message, code, &JobUpdate::default())
        .await
}

fn per_learner(m: &Manifest) -> pharos_core::LearnerResources {
    m.per_learner()
}

/// One scheduling decision over the first waiting jobs of each queue
/// (`schedule_window`); placed jobs go PENDING. False when it was put off (preempted
/// jobs still stopping).
async fn schedule(state: &AppState, cache: &JobCache) -> Result<bool, StoreError> {
    let mut jobs: Vec<&JobRow> = cache.others().collect();
    jobs.extend(cache.first_waiting(state.config.schedule_window));
    let TrainingView {
        pending,
        mut running,
        rows,
    } = training_view(state, &jobs);
    // What training holds, for the services' autoscaler (before the replicas are added).
    state.services.set_training_cpus(
        running
            .iter()
            .map(|r| r.per_learner.cpus * r.placement.len() as f64)
            .sum(),
    );
    if pending.is_empty() {
        return Ok(true);
    }
    // While preempted jobs are still stopping, their resources are not free yet: decide
    // again once they have gone back to the queue (the decision then is the one the
    // simulator takes, where a preemption frees resources at once).
    if jobs
        .iter()
        .any(|j| j.desired == Desired::Preempt && holds_resources(j.state))
    {
        return Ok(false);
    }
    let mut queues = state.config.queues.clone();
    add_services(state, &mut running, &mut queues);
    // The configured machine, its vCPUs cut to what the engine's nodes have now.
    let mut node = state.config.node();
    node.cpus = state.services.capacity_cpus(state);
    let nodes = [node];
    let view = SchedView {
        now_s: now_ms() as f64 / 1000.0,
        nodes: &nodes,
        queues: &queues,
        pending: &pending,
        running: &running,
        explain: true,
    };
    let t0 = Instant::now();
    let decision = {
        let mut sched = state.scheduler.lock_or_recover();
        sched.decide(&view)
    };
    state.metrics.record_decision(t0.elapsed().as_secs_f64());
    preempt(state, &decision.preempt).await?;
    let mut free = free_devices(state, &jobs);
    state.metrics.waiting_jobs.store(
        cache.waiting_count() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    // A start that did not happen (no devices after all; halted or deleted since the
    // copy was read) leaves the decision to be taken again at the next pass.
    let mut all_placed = true;
    for (id, placement) in &decision.start {
        if let Some(job) = rows.get(id) {
            match place(state, job, placement, &mut free).await {
                Ok(placed) => all_placed &= placed,
                Err(StoreError::Transition { .. }) => all_placed = false,
                Err(e) => return Err(e),
            }
        }
    }
    let changed: Vec<(i64, String)> = decision
        .waiting
        .iter()
        .filter_map(|(id, reason)| {
            let job = rows.get(id)?;
            (job.wait_reason.as_deref() != Some(reason.as_str())).then(|| (job.id, reason.clone()))
        })
        .collect();
    state.store.set_wait_reasons(&changed).await?;
    if !decision.start.is_empty() {
        state.wake.notify_one();
    }
    Ok(all_placed)
}

/// Whether a job in this state holds its resources (placed, not yet back in a queue
/// or ended).
pub(crate) fn holds_resources(s: JobState) -> bool {
    matches!(
        s,
        JobState::Pending | JobState::Downloading | JobState::Processing | JobState::Storing
    )
}

/// The scheduler's view of the training jobs.
struct TrainingView<'a> {
    /// Queued jobs that want to run.
    pending: Vec<PendingJob>,
    /// Jobs holding resources.
    running: Vec<RunningJob>,
    /// Every job's row, by id.
    rows: std::collections::BTreeMap<u64, &'a JobRow>,
}

/// The scheduler's view of the training jobs: the queued ones that want to run, the
/// ones holding resources, and every row by id.
fn training_view<'a>(state: &AppState, jobs: &[&'a JobRow]) -> TrainingView<'a> {
    let mut pending = Vec::new();
    let mut running = Vec::new();
    let mut rows = std::collections::BTreeMap::new();
    for &job in jobs {
        let Ok(m) = state.manifest(job) else {
            continue;
        };
        match job.state {
            JobState::Queued if job.desired == Desired::Run => pending.push(PendingJob {
                id: job.id as u64,
                queue: job.queue.clone(),
                priority: job.priority as i32,
                submitted_s: job.submitted_ms as f64 / 1000.0,
                learners: m.learners,
                per_learner: per_learner(&m),
                duration_s: Default::default(),
                attained_gpu_s: 0.0,
            }),
            s if holds_resources(s) => running.push(RunningJob {
                id: job.id as u64,
                queue: job.queue.clone(),
                priority: job.priority as i32,
                // The current attempt's start: preemption halts the youngest first.
                started_s: job.placed_ms.or(job.started_ms).unwrap_or(job.submitted_ms) as f64
                    / 1000.0,
                per_learner: per_learner(&m),
                placement: placement_for(job, &m),
                preemptible: job.desired == Desired::Run && job.state == JobState::Processing,
                attained_gpu_s: 0.0,
            }),
            _ => {}
        }
        rows.insert(job.id as u64, job);
    }
    TrainingView {
        pending,
        running,
        rows,
    }
}

/// Inference replicas share the capacity: each service's replicas are shown as a
/// running gang the scheduler can neither move nor halt, in a queue of their own.
fn add_services(
    state: &AppState,
    running: &mut Vec<RunningJob>,
    queues: &mut Vec<pharos_core::QueueSpec>,
) {
    let services_queue = "(inference services)";
    for (i, (cpus, n)) in state.services.held().into_iter().enumerate() {
        running.push(RunningJob {
            id: u64::MAX - i as u64,
            queue: services_queue.into(),
            priority: i32::MAX,
            started_s: 0.0,
            per_learner: pharos_core::LearnerResources {
                cpus,
                memory_bytes: 0,
                gpus: 0,
                gpu_type: None,
            },
            placement: vec![(0, None); n as usize],
            preemptible: false,
            attained_gpu_s: 0.0,
        });
        if i == 0 {
            queues.push(pharos_core::QueueSpec {
                name: services_queue.into(),
                quota: Default::default(),
            });
        }
    }
}

/// Marks the scheduler's victims for preemption (those still running as they were).
async fn preempt(state: &AppState, victims: &[u64]) -> Result<(), StoreError> {
    for victim in victims {
        let set = state
            .store
            .set_desired_if(
                *victim as i64,
                Desired::Preempt,
                &[JobState::Processing],
                &[Desired::Run],
            )
            .await?;
        if set {
            event(
                state,
                *victim as i64,
                "preempt",
                "preempted for a job of higher priority",
            )
            .await;
        }
    }
    Ok(())
}

/// The GPU devices, by model, that no job holding resources holds.
fn free_devices(
    state: &AppState,
    jobs: &[&JobRow],
) -> std::collections::BTreeMap<String, Vec<u32>> {
    let mut free = state.config.capacity.devices();
    for job in jobs.iter().filter(|j| holds_resources(j.state)) {
        let held: Vec<Vec<u32>> = job
            .devices
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_default();
        for ids in free.values_mut() {
            ids.retain(|i| !held.iter().flatten().any(|h| h == i));
        }
    }
    free
}

/// Starts a new attempt of `job` on `placement`: each learner's devices taken from
/// `free`, the attempt recorded as PENDING (the engine is asked next pass).
/// Whether it was placed.
async fn place(
    state: &AppState,
    job: &JobRow,
    placement: &GangPlacement,
    free: &mut std::collections::BTreeMap<String, Vec<u32>>,
) -> Result<bool, StoreError> {
    let Ok(m) = state.manifest(job) else {
        return Ok(false);
    };
    // Each learner's devices, of the model it was placed on.
    let mut devices: Vec<Vec<u32>> = Vec::new();
    for (_, model) in placement {
        let ids = match model {
            Some(model) if m.gpus > 0 => {
                let free = free.entry(model.clone()).or_default();
                if free.len() < m.gpus as usize {
                    break;
                }
                free.drain(..m.gpus as usize).collect()
            }
            _ => Vec::new(),
        };
        devices.push(ids);
    }
    if devices.len() != placement.len() {
        warn!(
            job = job.id,
            "not enough free GPU devices for the placement; waiting"
        );
        return Ok(false);
    }
    let update = JobUpdate {
        // Only while it still wants to run (the API may have halted or deleted it since
        // the controller's copy was read).
        expect_desired: Some(Desired::Run),
        devices: Some(Some(serde_json::to_string(&devices).unwrap_or_default())),
        gpu_model: Some(placement.first().and_then(|(_, m)| m.clone())),
        attempt: Some(job.attempt + 1),
        started_ms: Some(Some(job.started_ms.unwrap_or_else(now_ms))),
        placed_ms: Some(Some(now_ms())),
        not_before_ms: Some(0),
        stop_sent_ms: Some(None),
        master_port: Some(Some(free_port() as i64)),
        wait_reason: Some(None),
        ..Default::default()
    };
    state
        .store
        .transition(
            job.id,
            JobState::Pending,
            &format!("placed (attempt {})", job.attempt + 1),
            None,
            &update,
        )
        .await?;
    Ok(true)
}
