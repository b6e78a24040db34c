//! The store: jobs, their status history and events, and API tokens, in SQLite (one
//! file under the data directory, WAL) or PostgreSQL - the same SQL through sqlx's `Any`
//! driver. Every change of a job is one transaction, so a crash of the server at any
//! point leaves each job in a state it was really in.

use pharos_core::{ErrorCode, JobState};
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// The schema, in order; each entry runs once, recorded in `schema_migrations`.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_placed.sql")),
    (3, include_str!("../migrations/0003_gpu_model.sql")),
    (4, include_str!("../migrations/0004_devices.sql")),
    (5, include_str!("../migrations/0005_services.sql")),
    (6, include_str!("../migrations/0006_sandbox.sql")),
    (7, include_str!("../migrations/0007_minutes.sql")),
    (8, include_str!("../migrations/0008_graphs.sql")),
    (9, include_str!("../migrations/0009_changes.sql")),
];

/// Events a job's or a service's list returns at most (the latest).
pub const MAX_EVENTS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store failed: {0}")]
    Db(#[from] sqlx::Error),
    #[error("job training-{0} not found")]
    NotFound(i64),
    #[error("job training-{id} is {from}; it cannot go to {to}")]
    Transition {
        id: i64,
        from: &'static str,
        to: &'static str,
    },
    #[error("corrupt row for job {0}: {1}")]
    Corrupt(i64, String),
    /// A write of the leader's work after this server stopped leading (another server
    /// holds a newer term): refused, nothing written.
    #[error("not the leader (term {0} is over)")]
    Fenced(i64),
}

/// What a job should be doing; the controller acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    Run,
    /// Stop the learners and end HALTED.
    Halt,
    /// Stop the learners and re-queue (preempted for another job).
    Preempt,
    /// Stop the learners, end HALTED, then hide the job and remove its files.
    Delete,
}

impl Desired {
    fn as_str(self) -> &'static str {
        match self {
            Desired::Run => "run",
            Desired::Halt => "halt",
            Desired::Preempt => "preempt",
            Desired::Delete => "delete",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "run" => Desired::Run,
            "halt" => Desired::Halt,
            "preempt" => Desired::Preempt,
            "delete" => Desired::Delete,
            _ => return None,
        })
    }
}

/// One job as stored.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    pub id: i64,
    pub tenant: String,
    pub name: String,
    /// The manifest as submitted (YAML or JSON text).
    pub manifest: String,
    pub state: JobState,
    pub error_code: Option<String>,
    pub message: String,
    pub queue: String,
    pub priority: i64,
    pub submitted_ms: i64,
    pub updated_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    /// Learner gang attempts started so far (0 before the first start).
    pub attempt: i64,
    /// Restarts after learner crashes (counted against `max_restarts`).
    pub restarts: i64,
    pub desired: Desired,
    /// The model archive's content hash, when one was uploaded.
    pub model_sha256: Option<String>,
    /// Not before this time may the learners (re)start (restart backoff).
    pub not_before_ms: i64,
    /// When the learners were asked to stop (SIGTERM), for the SIGKILL deadline.
    pub stop_sent_ms: Option<i64>,
    /// Why a queued job waits (the scheduler's explanation).
    pub wait_reason: Option<String>,
    /// The rendezvous port of the current attempt.
    pub master_port: Option<i64>,
    /// When the current attempt was placed.
    pub placed_ms: Option<i64>,
    /// The GPU model the scheduler chose for the current attempt.
    pub gpu_model: Option<String>,
    /// Each learner's GPU device indices in the current attempt (JSON).
    pub devices: Option<String>,
}

/// One status change.
#[derive(Debug, Clone, Serialize)]
pub struct StatusEntry {
    pub seq: i64,
    pub state: JobState,
    pub time_ms: i64,
    pub message: String,
    pub error_code: Option<String>,
}

/// One event (anything that happened to a job other than a status change).
#[derive(Debug, Clone, Serialize)]
pub struct EventEntry {
    pub seq: i64,
    pub time_ms: i64,
    pub kind: String,
    pub message: String,
}

/// A stored function graph.
#[derive(Debug, Clone)]
pub struct GraphRow {
    pub name: String,
    pub tenant: String,
    /// The spec as applied (JSON).
    pub spec: String,
    pub port: i64,
}

/// A stored inference service.
#[derive(Debug, Clone)]
pub struct ServiceRow {
    pub name: String,
    pub tenant: String,
    /// The spec as applied (JSON).
    pub spec: String,
    pub port: i64,
    pub target: Option<i64>,
    /// Where the days of its load history start (see [`Store::set_day_origin`]).
    pub day_origin: Option<i64>,
}

/// A new job.
pub struct NewJob<'a> {
    pub tenant: &'a str,
    pub name: &'a str,
    pub manifest: &'a str,
    pub queue: &'a str,
    pub priority: i64,
    pub model_sha256: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
}

/// A token's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub admin: bool,
}

#[derive(Clone)]
pub struct Store {
    /// Writes (and reads inside them). SQLite: one connection, so writers queue here
    /// rather than fail.
    pool: AnyPool,
    /// Reads outside a write: on SQLite (WAL) their own connections, so that a read
    /// (a controller pass, a page of jobs) does not wait behind a queue of writes.
    read: AnyPool,
    postgres: bool,
    /// The term this server leads in ([`UNFENCED`] without an election; -1 while it
    /// does not lead). Writes made inside [`as_leader`] check it against the store.
    term: Arc<AtomicI64>,
}

/// No election: one server owns the store, nothing is fenced.
pub const UNFENCED: i64 = i64::MIN;

tokio::task_local! {
    static LEADER_WORK: ();
}

/// Runs `work` as the leader's (the controller, the autoscalers): the store refuses its
/// writes ([`StoreError::Fenced`]) unless this server holds the current term, so a
/// leader paused past its lease cannot act once another has taken over. API requests
/// run outside it: what a user asks is written by whichever server answers.
pub async fn as_leader<F: std::future::Future>(work: F) -> F::Output {
    LEADER_WORK.scope((), work).await
}

fn in_leader_work() -> bool {
    LEADER_WORK.try_with(|_| ()).is_ok()
}

/// SQL for the database's clock in Unix milliseconds (PostgreSQL): leases are judged by
/// one clock, not by each server's.
const DB_NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// Who leads (see [`Store::leader`]).
#[derive(Debug, Clone, Serialize)]
pub struct LeaderRow {
    pub term: i64,
    pub holder: String,
    pub url: String,
    /// Whether the holder's lease runs (by the database's clock).
    pub live: bool,
}

/// One changed job, from [`Store::changed_jobs`].
pub struct JobChange {
    pub row: JobRow,
    /// Deleted for good (hidden, its files removed).
    pub deleted: bool,
    pub version: i64,
}

const JOB_COLUMNS: &str = "id, tenant, name, manifest, state, error_code, message, queue, priority, \
     submitted_ms, updated_ms, started_ms, finished_ms, attempt, restarts, desired, model_sha256, \
     not_before_ms, stop_sent_ms, wait_reason, master_port, placed_ms, gpu_model, devices";

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn parse_state(id: i64, s: &str) -> Result<JobState, StoreError> {
    JobState::ALL
        .into_iter()
        .find(|st| st.name() == s)
        .ok_or_else(|| StoreError::Corrupt(id, format!("unknown state {s:?}")))
}

impl Store {
    /// Opens (creating when needed) the store at `url`: `sqlite://PATH` or
    /// `postgres://...`, and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        install_default_drivers();
        let postgres = url.starts_with("postgres");
        let url = if postgres || url.contains('?') {
            url.to_string()
        } else {
            format!("{url}?mode=rwc")
        };
        // SQLite allows one writer at a time; one connection serialises writers inside
        // the process instead of failing them with SQLITE_BUSY.
        let mut options = AnyPoolOptions::new().max_connections(if postgres { 8 } else { 1 });
        if postgres {
            // A server paused inside a transaction (SIGSTOP, a frozen machine) must
            // not hold its locks - the leader row's, the change counter's - for ever:
            // PostgreSQL ends such a session, and a wait for a lock is bounded.
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("SET idle_in_transaction_session_timeout = '2s'")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("SET lock_timeout = '10s'")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(&url).await?;
        let store = Store {
            read: pool.clone(),
            pool,
            postgres,
            term: Arc::new(AtomicI64::new(UNFENCED)),
        };
        if !postgres {
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&store.pool)
                .await?;
        }
        store.migrate().await?;
        if postgres {
            return Ok(store);
        }
        let read = AnyPoolOptions::new()
            .max_connections(4)
            .connect(&url.replace("mode=rwc", "mode=ro"))
            .await?;
        Ok(Store { read, ..store })
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    /// A transaction for a write. Inside [`as_leader`] (with an election) it first
    /// holds the leader row shared and checks the term, so a new leader's takeover
    /// waits for it and it fails after one.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let term = self.term.load(Ordering::SeqCst);
        if term != UNFENCED && in_leader_work() {
            if term < 0 {
                return Err(StoreError::Fenced(term));
            }
            let held: i64 = sqlx::query(&format!(
                "SELECT term FROM leader WHERE id = 1{}",
                if self.postgres { " FOR SHARE" } else { "" }
            ))
            .fetch_one(&mut *tx)
            .await?
            .try_get("term")?;
            if held != term {
                // Only the term read above is over (a newer one may have been won since).
                let _ = self
                    .term
                    .compare_exchange(term, -1, Ordering::SeqCst, Ordering::SeqCst);
                return Err(StoreError::Fenced(term));
            }
        }
        Ok(tx)
    }

    /// One write statement, in a transaction of its own when fenced (see [`Self::begin`]).
    async fn exec<'q>(
        &self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> Result<sqlx::any::AnyQueryResult, StoreError> {
        if self.term.load(Ordering::SeqCst) == UNFENCED || !in_leader_work() {
            return Ok(q.execute(&self.pool).await?);
        }
        let mut tx = self.begin().await?;
        let done = q.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done)
    }

    /// Stamps jobs `ids` with the next change numbers, in order. It must be the last
    /// write of its transaction, after every job row it locks: the counter's row stays
    /// locked until the commit, so change numbers commit in order (a reader of
    /// everything above its mark misses nothing), and taking it last keeps one lock
    /// order everywhere (job rows, then the counter).
    async fn stamp(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        ids: &[i64],
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let last: i64 = sqlx::query(
            "UPDATE counters SET value = value + $1 WHERE name = 'change' RETURNING value",
        )
        .bind(ids.len() as i64)
        .fetch_one(&mut **tx)
        .await?
        .try_get("value")?;
        let first = last - ids.len() as i64 + 1;
        for (k, id) in ids.iter().enumerate() {
            sqlx::query("UPDATE jobs SET version = $1 WHERE id = $2")
                .bind(first + k as i64)
                .bind(*id)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// The latest change number: every job written since has a higher one.
    pub async fn change_mark(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query("SELECT value FROM counters WHERE name = 'change'")
                .fetch_one(&self.read)
                .await?
                .try_get("value")?,
        )
    }

    /// Jobs written after change `after`, in change order, at most `limit`.
    pub async fn changed_jobs(&self, after: i64, limit: i64) -> Result<Vec<JobChange>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS}, deleted, version FROM jobs WHERE version > $1 ORDER BY version LIMIT $2"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(JobChange {
                    row: Self::job_from_row(r)?,
                    deleted: r.try_get::<i64, _>("deleted")? != 0,
                    version: r.try_get("version")?,
                })
            })
            .collect()
    }

    // ----- leader election (PostgreSQL) -------------------------------------------------

    /// Takes part in elections from now on: writes inside [`as_leader`] are refused
    /// until [`Self::campaign`] wins a term.
    pub fn enable_election(&self) {
        let _ = self
            .term
            .compare_exchange(UNFENCED, -1, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Whether this store takes part in elections (PostgreSQL shared by servers).
    pub fn elects(&self) -> bool {
        self.term.load(Ordering::SeqCst) != UNFENCED
    }

    /// The term this server leads in, if it does (it may have lost it since the last
    /// [`Self::campaign`]; its writes then fail).
    pub fn term(&self) -> Option<i64> {
        let t = self.term.load(Ordering::SeqCst);
        (t >= 0).then_some(t)
    }

    /// Becomes or stays the leader for `lease_ms` (by the database's clock) when the
    /// lease is free, expired or already ours: a new holder raises the term. Returns
    /// the term held, or None (another server leads; ours, if any, is over).
    pub async fn campaign(
        &self,
        me: &str,
        url: &str,
        lease_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(&format!(
            "UPDATE leader SET \
               term = CASE WHEN holder = $1 AND expires_ms >= {DB_NOW_MS} THEN term ELSE term + 1 END, \
               holder = $1, url = $2, expires_ms = {DB_NOW_MS} + $3 \
             WHERE id = 1 AND (holder = $1 OR expires_ms < {DB_NOW_MS}) RETURNING term"
        ))
        .bind(me)
        .bind(url)
        .bind(lease_ms)
        .fetch_optional(&self.pool)
        .await;
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                // Unknown whether it is still ours: act no more until it is known.
                self.term.store(-1, Ordering::SeqCst);
                return Err(e.into());
            }
        };
        let term = match row {
            Some(r) => Some(r.try_get::<i64, _>("term")?),
            None => None,
        };
        self.term.store(term.unwrap_or(-1), Ordering::SeqCst);
        Ok(term)
    }

    /// Gives the lease up (a clean shutdown), so that another server leads at once.
    pub async fn resign(&self, me: &str) -> Result<(), StoreError> {
        self.term.store(-1, Ordering::SeqCst);
        sqlx::query("UPDATE leader SET expires_ms = 0 WHERE id = 1 AND holder = $1")
            .bind(me)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stops leading at once (a lease that could not be renewed in time).
    pub fn step_down(&self) {
        if self.term.load(Ordering::SeqCst) != UNFENCED {
            self.term.store(-1, Ordering::SeqCst);
        }
    }

    /// Who leads, as the store says.
    pub async fn leader(&self) -> Result<LeaderRow, StoreError> {
        let now = if self.postgres {
            DB_NOW_MS.to_string()
        } else {
            now_ms().to_string()
        };
        let r = sqlx::query(&format!(
            "SELECT term, holder, url, CAST(CASE WHEN expires_ms >= {now} THEN 1 ELSE 0 END AS BIGINT) AS live \
             FROM leader WHERE id = 1"
        ))
        .fetch_one(&self.read)
        .await?;
        Ok(LeaderRow {
            term: r.try_get("term")?,
            holder: r.try_get("holder")?,
            url: r.try_get("url")?,
            live: r.try_get::<i64, _>("live")? != 0,
        })
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        // Servers starting together on one PostgreSQL migrate one after the other (a
        // session lock, held on a connection of its own while the others work).
        let mut guard = None;
        if self.postgres {
            let mut conn = self.pool.acquire().await?;
            sqlx::query("SELECT pg_advisory_lock(7068617273)")
                .execute(&mut *conn)
                .await?;
            guard = Some(conn);
        }
        let done = self.migrate_locked().await;
        if let Some(mut conn) = guard {
            let _ = sqlx::query("SELECT pg_advisory_unlock(7068617273)")
                .execute(&mut *conn)
                .await;
        }
        done
    }

    async fn migrate_locked(&self) -> Result<(), StoreError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)")
            .execute(&self.pool)
            .await?;
        for &(version, sql) in MIGRATIONS {
            let mut tx = self.pool.begin().await?;
            let done: i64 =
                sqlx::query("SELECT COUNT(*) AS n FROM schema_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("n")?;
            if done > 0 {
                continue;
            }
            for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                sqlx::query(stmt).execute(&mut *tx).await?;
            }
            sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
                .bind(version)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    // ----- tokens ------------------------------------------------------------------

    pub async fn add_token(
        &self,
        hash: &str,
        tenant: &str,
        admin: bool,
        label: &str,
    ) -> Result<(), StoreError> {
        self.exec(sqlx::query(
            "INSERT INTO tokens (token_hash, tenant, admin, label, created_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(hash)
        .bind(tenant)
        .bind(admin as i64)
        .bind(label)
        .bind(now_ms()))
        .await?;
        Ok(())
    }

    pub async fn principal(&self, hash: &str) -> Result<Option<Principal>, StoreError> {
        let row = sqlx::query("SELECT tenant, admin FROM tokens WHERE token_hash = $1")
            .bind(hash)
            .fetch_optional(&self.read)
            .await?;
        Ok(match row {
            Some(r) => Some(Principal {
                tenant: r.try_get("tenant")?,
                admin: r.try_get::<i64, _>("admin")? != 0,
            }),
            None => None,
        })
    }

    /// Removes a token; whether it existed.
    pub async fn remove_token(&self, hash: &str) -> Result<bool, StoreError> {
        let done = self
            .exec(sqlx::query("DELETE FROM tokens WHERE token_hash = $1").bind(hash))
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn count_admin_tokens(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query("SELECT COUNT(*) AS n FROM tokens WHERE admin = 1")
                .fetch_one(&self.read)
                .await?
                .try_get("n")?,
        )
    }

    // ----- sandbox users -----------------------------------------------------------

    /// The user id `tenant` runs as: its own, or the next free one from `base` (at most
    /// `count` tenants; None when they are all taken).
    pub async fn tenant_uid(
        &self,
        tenant: &str,
        base: u32,
        count: u32,
    ) -> Result<Option<u32>, StoreError> {
        for _ in 0..5 {
            if let Some(r) = sqlx::query("SELECT uid FROM tenant_uids WHERE tenant = $1")
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await?
            {
                return Ok(Some(r.try_get::<i64, _>("uid")? as u32));
            }
            let next: i64 = sqlx::query("SELECT COALESCE(MAX(uid) + 1, $1) AS n FROM tenant_uids")
                .bind(base as i64)
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?;
            if next >= base as i64 + count as i64 {
                return Ok(None);
            }
            // Two servers' inserts at once: the loser reads the winner's row or tries
            // the next id.
            let _ = self
                .exec(
                    sqlx::query("INSERT INTO tenant_uids (tenant, uid) VALUES ($1, $2)")
                        .bind(tenant)
                        .bind(next.max(base as i64)),
                )
                .await;
        }
        Err(StoreError::Db(sqlx::Error::Protocol(
            "no user id could be recorded for the tenant".into(),
        )))
    }

    // ----- jobs --------------------------------------------------------------------

    /// Stores a new QUEUED job with its first status entry, in one transaction. With an
    /// idempotency key that this tenant used before, returns that job instead (and
    /// `false`).
    pub async fn insert_job(&self, job: &NewJob<'_>) -> Result<(i64, bool), StoreError> {
        match self.try_insert_job(job).await {
            // Two submissions with one key at once (PostgreSQL): the loser finds the
            // winner's job.
            Err(StoreError::Db(sqlx::Error::Database(e)))
                if e.is_unique_violation() && job.idempotency_key.is_some() =>
            {
                self.try_insert_job(job).await
            }
            other => other,
        }
    }

    async fn try_insert_job(&self, job: &NewJob<'_>) -> Result<(i64, bool), StoreError> {
        let mut tx = self.begin().await?;
        if let Some(key) = job.idempotency_key {
            let existing = sqlx::query("SELECT id FROM jobs WHERE tenant = $1 AND idem_key = $2")
                .bind(job.tenant)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(r) = existing {
                return Ok((r.try_get("id")?, false));
            }
        }
        let id: i64 =
            sqlx::query("UPDATE counters SET value = value + 1 WHERE name = 'job' RETURNING value")
                .fetch_one(&mut *tx)
                .await?
                .try_get("value")?;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO jobs (id, tenant, name, manifest, state, message, queue, priority, \
             submitted_ms, updated_ms, attempt, restarts, desired, model_sha256, not_before_ms, \
             idem_key, deleted) \
             VALUES ($1, $2, $3, $4, 'QUEUED', 'queued', $5, $6, $7, $7, 0, 0, 'run', $8, 0, $9, 0)",
        )
        .bind(id)
        .bind(job.tenant)
        .bind(job.name)
        .bind(job.manifest)
        .bind(job.queue)
        .bind(job.priority)
        .bind(now)
        .bind(job.model_sha256)
        .bind(job.idempotency_key)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO job_status (job_id, seq, state, time_ms, message, error_code) \
             VALUES ($1, 1, 'QUEUED', $2, 'submitted', NULL)",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        Self::stamp(&mut tx, &[id]).await?;
        tx.commit().await?;
        Ok((id, true))
    }

    fn job_from_row(r: &sqlx::any::AnyRow) -> Result<JobRow, StoreError> {
        let id: i64 = r.try_get("id")?;
        let state: String = r.try_get("state")?;
        let desired: String = r.try_get("desired")?;
        Ok(JobRow {
            id,
            tenant: r.try_get("tenant")?,
            name: r.try_get("name")?,
            manifest: r.try_get("manifest")?,
            state: parse_state(id, &state)?,
            error_code: r.try_get("error_code")?,
            message: r.try_get("message")?,
            queue: r.try_get("queue")?,
            priority: r.try_get("priority")?,
            submitted_ms: r.try_get("submitted_ms")?,
            updated_ms: r.try_get("updated_ms")?,
            started_ms: r.try_get("started_ms")?,
            finished_ms: r.try_get("finished_ms")?,
            attempt: r.try_get("attempt")?,
            restarts: r.try_get("restarts")?,
            desired: Desired::parse(&desired)
                .ok_or_else(|| StoreError::Corrupt(id, format!("unknown desired {desired:?}")))?,
            model_sha256: r.try_get("model_sha256")?,
            not_before_ms: r.try_get("not_before_ms")?,
            stop_sent_ms: r.try_get("stop_sent_ms")?,
            wait_reason: r.try_get("wait_reason")?,
            master_port: r.try_get("master_port")?,
            placed_ms: r.try_get("placed_ms")?,
            gpu_model: r.try_get("gpu_model")?,
            devices: r.try_get("devices")?,
        })
    }

    /// A job that is not deleted; `tenant` (when given) must own it.
    pub async fn job(&self, id: i64, tenant: Option<&str>) -> Result<JobRow, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND deleted = 0"
        ))
        .bind(id)
        .fetch_optional(&self.read)
        .await?
        .ok_or(StoreError::NotFound(id))?;
        let job = Self::job_from_row(&row)?;
        match tenant {
            Some(t) if t != job.tenant => Err(StoreError::NotFound(id)),
            _ => Ok(job),
        }
    }

    /// Jobs (not deleted), oldest first; of one tenant when given.
    pub async fn jobs(&self, tenant: Option<&str>) -> Result<Vec<JobRow>, StoreError> {
        let rows =
            match tenant {
                Some(t) => sqlx::query(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE deleted = 0 AND tenant = $1 ORDER BY id"
                ))
                .bind(t)
                .fetch_all(&self.read)
                .await?,
                None => {
                    sqlx::query(&format!(
                        "SELECT {JOB_COLUMNS} FROM jobs WHERE deleted = 0 ORDER BY id"
                    ))
                    .fetch_all(&self.read)
                    .await?
                }
            };
        rows.iter().map(Self::job_from_row).collect()
    }

    /// Jobs the controller must look after: not terminal, or terminal but with a
    /// pending delete.
    pub async fn active_jobs(&self) -> Result<Vec<JobRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE deleted = 0 AND \
             (state NOT IN ('COMPLETED', 'FAILED', 'HALTED') OR desired = 'delete') ORDER BY id"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(Self::job_from_row).collect()
    }

    /// One page of jobs (not deleted, not being deleted), by id after `after`: of one
    /// tenant and in one state when given. At most `limit` rows are read.
    pub async fn jobs_page(
        &self,
        tenant: Option<&str>,
        state: Option<JobState>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        let mut sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE deleted = 0 AND desired <> 'delete' AND id > $1"
        );
        let mut n = 1;
        if tenant.is_some() {
            n += 1;
            sql.push_str(&format!(" AND tenant = ${n}"));
        }
        if state.is_some() {
            n += 1;
            sql.push_str(&format!(" AND state = ${n}"));
        }
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", n + 1));
        let mut q = sqlx::query(&sql).bind(after);
        if let Some(t) = tenant {
            q = q.bind(t);
        }
        if let Some(st) = state {
            q = q.bind(st.name());
        }
        let rows = q.bind(limit).fetch_all(&self.read).await?;
        rows.iter().map(Self::job_from_row).collect()
    }

    /// A queued job's 1-based position among the queued jobs of its queue.
    pub async fn queue_position(&self, id: i64, queue: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM jobs WHERE deleted = 0 AND state = 'QUEUED' \
             AND desired = 'run' AND queue = $1 AND id <= $2",
        )
        .bind(queue)
        .bind(id)
        .fetch_one(&self.read)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Jobs holding resources (placed, running, stopping, storing), oldest first.
    pub async fn holding_jobs(&self) -> Result<Vec<JobRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE deleted = 0 AND \
             state IN ('PENDING', 'DOWNLOADING', 'PROCESSING', 'STORING') ORDER BY id"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(Self::job_from_row).collect()
    }

    /// Queued jobs that want to run, of one tenant when given.
    pub async fn waiting_count(&self, tenant: Option<&str>) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) AS n FROM jobs WHERE deleted = 0 AND state = 'QUEUED' \
                   AND desired = 'run'";
        let row = match tenant {
            Some(t) => {
                sqlx::query(&format!("{sql} AND tenant = $1"))
                    .bind(t)
                    .fetch_one(&self.read)
                    .await?
            }
            None => sqlx::query(sql).fetch_one(&self.read).await?,
        };
        Ok(row.try_get("n")?)
    }

    /// Queued jobs that want to run in `queue` with ids in `(after, upto]`.
    pub async fn queued_between(
        &self,
        queue: &str,
        after: i64,
        upto: i64,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM jobs WHERE deleted = 0 AND state = 'QUEUED' \
             AND desired = 'run' AND queue = $1 AND id > $2 AND id <= $3",
        )
        .bind(queue)
        .bind(after)
        .bind(upto)
        .fetch_one(&self.read)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Jobs of `tenant` not ended (queued, waiting or running).
    pub async fn unfinished_jobs(&self, tenant: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM jobs WHERE deleted = 0 AND tenant = $1 \
             AND state NOT IN ('COMPLETED', 'FAILED', 'HALTED')",
        )
        .bind(tenant)
        .fetch_one(&self.read)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Counts of jobs by state (for /metrics).
    pub async fn state_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM jobs WHERE deleted = 0 GROUP BY state ORDER BY state",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }

    /// Moves a job to `to` (checked against the lifecycle), recording the status entry,
    /// and applies `update` to the row in the same transaction.
    pub async fn transition(
        &self,
        id: i64,
        to: JobState,
        message: &str,
        code: Option<ErrorCode>,
        update: &JobUpdate,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let (from, desired) = self.lock_job(&mut tx, id).await?;
        if !from.can_go_to(to) {
            return Err(StoreError::Transition {
                id,
                from: from.name(),
                to: to.name(),
            });
        }
        if update.expect_desired.is_some_and(|e| e != desired) {
            // The API asked for something else meanwhile (a halt, a delete): the
            // caller looks again.
            return Err(StoreError::Transition {
                id,
                from: from.name(),
                to: to.name(),
            });
        }
        let now = now_ms();
        let code_str = code.map(|c| format!("{c:?}"));
        sqlx::query(
            "UPDATE jobs SET state = $1, message = $2, error_code = $3, updated_ms = $4 WHERE id = $5",
        )
        .bind(to.name())
        .bind(message)
        .bind(code_str.clone())
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if to.is_terminal() {
            sqlx::query("UPDATE jobs SET finished_ms = $1, wait_reason = NULL WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        Self::apply_update(&mut tx, id, update).await?;
        let seq = Self::next_seq(&mut tx, "job_status", id).await?;
        sqlx::query(
            "INSERT INTO job_status (job_id, seq, state, time_ms, message, error_code) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(seq)
        .bind(to.name())
        .bind(now)
        .bind(message)
        .bind(code_str)
        .execute(&mut *tx)
        .await?;
        Self::stamp(&mut tx, &[id]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A job's state and what it should do, with its row locked for the transaction
    /// (PostgreSQL; SQLite has one writer), so that sequence numbers taken after it
    /// never collide and checks hold until the commit.
    async fn lock_job(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        id: i64,
    ) -> Result<(JobState, Desired), StoreError> {
        let row = sqlx::query(&format!(
            "SELECT state, desired FROM jobs WHERE id = $1{}",
            if self.postgres { " FOR UPDATE" } else { "" }
        ))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound(id))?;
        let state = parse_state(id, &row.try_get::<String, _>("state")?)?;
        let desired: String = row.try_get("desired")?;
        let desired = Desired::parse(&desired)
            .ok_or_else(|| StoreError::Corrupt(id, format!("unknown desired {desired:?}")))?;
        Ok((state, desired))
    }

    /// The next sequence number of a job's entries in `table` (its row locked first).
    async fn next_seq(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        table: &str,
        id: i64,
    ) -> Result<i64, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT COALESCE(MAX(seq), 0) + 1 AS s FROM {table} WHERE job_id = $1"
        ))
        .bind(id)
        .fetch_one(&mut **tx)
        .await?
        .try_get("s")?)
    }

    /// Applies `update` to a job without a status change.
    pub async fn update(&self, id: i64, update: &JobUpdate) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        if let Some(expected) = update.expect_desired {
            let (state, desired) = self.lock_job(&mut tx, id).await?;
            if desired != expected {
                return Err(StoreError::Transition {
                    id,
                    from: state.name(),
                    to: state.name(),
                });
            }
        }
        Self::apply_update(&mut tx, id, update).await?;
        Self::stamp(&mut tx, &[id]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn apply_update(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        id: i64,
        u: &JobUpdate,
    ) -> Result<(), StoreError> {
        let mut sets: Vec<String> = Vec::new();
        let mut ints: Vec<Option<i64>> = Vec::new();
        let mut texts: Vec<Option<String>> = Vec::new();
        // Integers first, then texts, each with its own placeholder numbers.
        let int_fields: [(&str, Option<Option<i64>>); 8] = [
            ("started_ms", u.started_ms),
            ("attempt", u.attempt.map(Some)),
            ("restarts", u.restarts.map(Some)),
            ("not_before_ms", u.not_before_ms.map(Some)),
            ("stop_sent_ms", u.stop_sent_ms),
            ("master_port", u.master_port),
            ("placed_ms", u.placed_ms),
            ("deleted", u.deleted.map(|d| Some(d as i64))),
        ];
        for (name, v) in int_fields {
            if let Some(v) = v {
                ints.push(v);
                sets.push(format!("{name} = ${}", ints.len()));
            }
        }
        let text_fields: [(&str, Option<Option<String>>); 4] = [
            ("desired", u.desired.map(|d| Some(d.as_str().to_string()))),
            ("wait_reason", u.wait_reason.clone()),
            ("gpu_model", u.gpu_model.clone()),
            ("devices", u.devices.clone()),
        ];
        for (name, v) in text_fields {
            if let Some(v) = v {
                texts.push(v);
                sets.push(format!("{name} = ${}", ints.len() + texts.len()));
            }
        }
        if sets.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE jobs SET {} WHERE id = ${}",
            sets.join(", "),
            ints.len() + texts.len() + 1
        );
        let mut q = sqlx::query(&sql);
        for v in ints {
            q = q.bind(v);
        }
        for v in texts {
            q = q.bind(v);
        }
        q.bind(id).execute(&mut **tx).await?;
        Ok(())
    }

    /// Whether a job that is not deleted uses this model archive.
    pub async fn archive_in_use(&self, sha256: &str) -> Result<bool, StoreError> {
        let n: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM jobs WHERE model_sha256 = $1 AND deleted = 0")
                .bind(sha256)
                .fetch_one(&self.read)
                .await?
                .try_get("n")?;
        Ok(n > 0)
    }

    /// Records why each of these queued jobs waits, in one transaction.
    pub async fn set_wait_reasons(&self, reasons: &[(i64, String)]) -> Result<(), StoreError> {
        if reasons.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        let mut written = Vec::new();
        for (id, reason) in reasons {
            let done =
                sqlx::query("UPDATE jobs SET wait_reason = $1 WHERE id = $2 AND state = 'QUEUED'")
                    .bind(reason.as_str())
                    .bind(*id)
                    .execute(&mut *tx)
                    .await?;
            if done.rows_affected() > 0 {
                written.push(*id);
            }
        }
        Self::stamp(&mut tx, &written).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets what a job should do, only when it is in one of `states` and wants one of
    /// `from` (so a halt cannot race a completion, nor a preemption undo a delete).
    /// Returns whether it was set.
    pub async fn set_desired_if(
        &self,
        id: i64,
        desired: Desired,
        states: &[JobState],
        from: &[Desired],
    ) -> Result<bool, StoreError> {
        let list = states
            .iter()
            .map(|s| format!("'{}'", s.name()))
            .collect::<Vec<_>>()
            .join(", ");
        let from = from
            .iter()
            .map(|d| format!("'{}'", d.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let mut tx = self.begin().await?;
        let done = sqlx::query(&format!(
            "UPDATE jobs SET desired = $1, updated_ms = $2 WHERE id = $3 AND deleted = 0 \
             AND state IN ({list}) AND desired IN ({from})"
        ))
        .bind(desired.as_str())
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let set = done.rows_affected() > 0;
        if set {
            Self::stamp(&mut tx, &[id]).await?;
        }
        tx.commit().await?;
        Ok(set)
    }

    pub async fn status_history(&self, id: i64) -> Result<Vec<StatusEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, state, time_ms, message, error_code FROM job_status WHERE job_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StatusEntry {
                    seq: r.try_get("seq")?,
                    state: parse_state(id, &r.try_get::<String, _>("state")?)?,
                    time_ms: r.try_get("time_ms")?,
                    message: r.try_get("message")?,
                    error_code: r.try_get("error_code")?,
                })
            })
            .collect()
    }

    pub async fn add_event(&self, id: i64, kind: &str, message: &str) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        self.lock_job(&mut tx, id).await?;
        let seq = Self::next_seq(&mut tx, "job_events", id).await?;
        sqlx::query(
            "INSERT INTO job_events (job_id, seq, time_ms, kind, message) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(seq)
        .bind(now_ms())
        .bind(kind)
        .bind(message)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn events(&self, id: i64) -> Result<Vec<EventEntry>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT seq, time_ms, kind, message FROM (SELECT seq, time_ms, kind, message \
             FROM job_events WHERE job_id = $1 ORDER BY seq DESC LIMIT {MAX_EVENTS}) AS latest ORDER BY seq",
        ))
        .bind(id)
        .fetch_all(&self.read)
        .await?;
        event_entries(&rows)
    }

    // ----- function graphs ------------------------------------------------------------

    /// Fails (a unique-key error) when the name is taken.
    pub async fn insert_graph(
        &self,
        name: &str,
        tenant: &str,
        spec: &str,
        port: i64,
    ) -> Result<(), StoreError> {
        self.exec(sqlx::query(
            "INSERT INTO graphs (name, tenant, spec, port, created_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(name)
        .bind(tenant)
        .bind(spec)
        .bind(port)
        .bind(now_ms()))
        .await?;
        Ok(())
    }

    pub async fn update_graph(&self, name: &str, spec: &str) -> Result<(), StoreError> {
        self.exec(
            sqlx::query("UPDATE graphs SET spec = $1 WHERE name = $2")
                .bind(spec)
                .bind(name),
        )
        .await?;
        Ok(())
    }

    pub async fn delete_graph(&self, name: &str) -> Result<(), StoreError> {
        self.exec(sqlx::query("DELETE FROM graphs WHERE name = $1").bind(name))
            .await?;
        Ok(())
    }

    pub async fn graphs(&self) -> Result<Vec<GraphRow>, StoreError> {
        let rows = sqlx::query("SELECT name, tenant, spec, port FROM graphs ORDER BY name")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(GraphRow {
                    name: r.try_get("name")?,
                    tenant: r.try_get("tenant")?,
                    spec: r.try_get("spec")?,
                    port: r.try_get("port")?,
                })
            })
            .collect()
    }

    // ----- services ----------------------------------------------------------------

    /// Fails (a unique-key error) when the name is taken.
    pub async fn insert_service(
        &self,
        name: &str,
        tenant: &str,
        spec: &str,
        port: i64,
    ) -> Result<(), StoreError> {
        self.exec(sqlx::query(
            "INSERT INTO services (name, tenant, spec, port, target, created_ms) VALUES ($1, $2, $3, $4, NULL, $5)",
        )
        .bind(name)
        .bind(tenant)
        .bind(spec)
        .bind(port)
        .bind(now_ms()))
        .await?;
        Ok(())
    }

    pub async fn update_service(&self, name: &str, spec: &str) -> Result<(), StoreError> {
        self.exec(
            sqlx::query("UPDATE services SET spec = $1 WHERE name = $2")
                .bind(spec)
                .bind(name),
        )
        .await?;
        Ok(())
    }

    pub async fn set_service_target(&self, name: &str, target: i64) -> Result<(), StoreError> {
        self.exec(
            sqlx::query("UPDATE services SET target = $1 WHERE name = $2")
                .bind(target)
                .bind(name),
        )
        .await?;
        Ok(())
    }

    /// The service and its events, in one transaction.
    pub async fn delete_service(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        for sql in [
            "DELETE FROM service_events WHERE service = $1",
            "DELETE FROM service_minutes WHERE service = $1",
            "DELETE FROM services WHERE name = $1",
        ] {
            sqlx::query(sql).bind(name).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn services(&self) -> Result<Vec<ServiceRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, tenant, spec, port, target, day_origin FROM services ORDER BY name",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ServiceRow {
                    name: r.try_get("name")?,
                    tenant: r.try_get("tenant")?,
                    spec: r.try_get("spec")?,
                    port: r.try_get("port")?,
                    target: r.try_get("target")?,
                    day_origin: r.try_get("day_origin")?,
                })
            })
            .collect()
    }

    /// The unix minute a day of the service's load history starts at (any such minute:
    /// only its remainder by the day's length matters).
    pub async fn set_day_origin(&self, name: &str, minute: i64) -> Result<(), StoreError> {
        self.exec(
            sqlx::query("UPDATE services SET day_origin = $1 WHERE name = $2")
                .bind(minute)
                .bind(name),
        )
        .await?;
        Ok(())
    }

    /// Writes (or replaces) chunks of services' minute history, in one transaction.
    pub async fn put_minute_chunks(
        &self,
        chunks: &[(String, i64, Vec<u8>)],
    ) -> Result<(), StoreError> {
        if chunks.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for (service, hour, data) in chunks {
            sqlx::query(
                "INSERT INTO service_minutes (service, hour, data) VALUES ($1, $2, $3) \
                 ON CONFLICT (service, hour) DO UPDATE SET data = excluded.data",
            )
            .bind(service)
            .bind(*hour)
            .bind(data.clone())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A service's history chunks for hours `from..=to`, oldest first.
    pub async fn minute_chunks(
        &self,
        service: &str,
        from_hour: i64,
        to_hour: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT hour, data FROM service_minutes WHERE service = $1 AND hour >= $2 AND hour <= $3 ORDER BY hour",
        )
        .bind(service)
        .bind(from_hour)
        .bind(to_hour)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("hour")?, r.try_get("data")?)))
            .collect()
    }

    /// Drops history chunks older than `before_hour`; how many went.
    pub async fn prune_minutes(&self, before_hour: i64) -> Result<u64, StoreError> {
        Ok(self
            .exec(sqlx::query("DELETE FROM service_minutes WHERE hour < $1").bind(before_hour))
            .await?
            .rows_affected())
    }

    /// `seq` comes from the caller (one writer per service: the server).
    pub async fn add_service_event(
        &self,
        name: &str,
        seq: i64,
        kind: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        self.exec(sqlx::query(
            "INSERT INTO service_events (service, seq, time_ms, kind, message) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(name)
        .bind(seq)
        .bind(now_ms())
        .bind(kind)
        .bind(message))
        .await?;
        Ok(())
    }

    pub async fn last_service_event(&self, name: &str) -> Result<i64, StoreError> {
        let n: Option<i64> =
            sqlx::query("SELECT MAX(seq) AS n FROM service_events WHERE service = $1")
                .bind(name)
                .fetch_one(&self.read)
                .await?
                .try_get("n")?;
        Ok(n.unwrap_or(0))
    }

    pub async fn service_events(&self, name: &str) -> Result<Vec<EventEntry>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT seq, time_ms, kind, message FROM (SELECT seq, time_ms, kind, message \
             FROM service_events WHERE service = $1 ORDER BY seq DESC LIMIT {MAX_EVENTS}) AS latest ORDER BY seq",
        ))
        .bind(name)
        .fetch_all(&self.read)
        .await?;
        event_entries(&rows)
    }

    /// The database's own consistency check (SQLite's `PRAGMA integrity_check`; on
    /// PostgreSQL, that the store answers): the problems found, none when sound.
    pub async fn integrity_check(&self) -> Result<Vec<String>, StoreError> {
        if self.postgres {
            sqlx::query("SELECT 1 AS one").fetch_one(&self.pool).await?;
            return Ok(Vec::new());
        }
        let rows = sqlx::query("PRAGMA integrity_check")
            .fetch_all(&self.pool)
            .await?;
        let mut problems = Vec::new();
        for r in &rows {
            let line: String = r.try_get(0)?;
            if line != "ok" {
                problems.push(line);
            }
        }
        Ok(problems)
    }

    /// Closes the pool (tests reopen the same database).
    pub async fn close(&self) {
        self.read.close().await;
        self.pool.close().await;
    }
}

/// Rows of `seq, time_ms, kind, message` (job or service events).
fn event_entries(rows: &[sqlx::any::AnyRow]) -> Result<Vec<EventEntry>, StoreError> {
    rows.iter()
        .map(|r| {
            Ok(EventEntry {
                seq: r.try_get("seq")?,
                time_ms: r.try_get("time_ms")?,
                kind: r.try_get("kind")?,
                message: r.try_get("message")?,
            })
        })
        .collect()
}

/// Columns to change with a status change (or alone); `None` leaves one as it is.
#[derive(Debug, Clone, Default)]
pub struct JobUpdate {
    pub started_ms: Option<Option<i64>>,
    pub attempt: Option<i64>,
    pub restarts: Option<i64>,
    pub not_before_ms: Option<i64>,
    pub stop_sent_ms: Option<Option<i64>>,
    pub master_port: Option<Option<i64>>,
    pub placed_ms: Option<Option<i64>>,
    pub deleted: Option<bool>,
    pub desired: Option<Desired>,
    /// Apply only while the job's `desired` is still this (else a Transition error).
    pub expect_desired: Option<Desired>,
    pub wait_reason: Option<Option<String>>,
    pub gpu_model: Option<Option<String>>,
    pub devices: Option<Option<String>>,
}
