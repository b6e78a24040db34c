//! Leader election among servers sharing one PostgreSQL. Every server answers the API
//! (jobs are read and written in the store by whichever answers); one leader at a time
//! runs the controller, the services' and graphs' autoscalers and engines. The lease is
//! a row in the store, judged by the database's clock; every write of the leader's work
//! carries its term and the store refuses it once another server holds a newer one
//! ([`crate::store::as_leader`]), so a leader paused past its lease cannot act when it
//! wakes up. With SQLite there is one server and no election.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::AppState;

/// This server's name in the lease row: host, pid and a random part, so that a
/// restarted server is a new candidate.
pub fn candidate_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    use rand::RngExt;
    let r: u32 = rand::rng().random();
    format!("{host}/{}/{r:08x}", std::process::id())
}

/// A leader that lost its term ends its process, as Kubernetes' controllers do: what
/// it held in memory (services, routers' mirrors, the jobs' copy) belongs to a term
/// that is over, and whatever restarts it (systemd, a Deployment) brings it back as a
/// follower. Learners, replicas and router processes are not its children's children to
/// lose: they run on, and the leader adopts them. (Its writes were refused already.)
fn lost(term: i64, why: &str) -> ! {
    tracing::error!(
        term,
        "this server no longer leads ({why}); it stops so that a restart rejoins as a follower"
    );
    std::process::exit(3);
}

/// Campaigns every third of the lease until the process ends; wakes the leader's work
/// when this server starts leading. This server acts as the leader only while the
/// store says it holds the term and its last renewal, sent less than 80% of the lease
/// ago, succeeded ([`AppState::leads`]): past that another may lead.
pub async fn run(state: Arc<AppState>) {
    let lease = Duration::from_secs_f64(state.config.election.lease_s);
    let every = lease / 3;
    let me = &state.candidate;
    let url = state.advertise_url();
    let mut leading: Option<i64> = None;
    loop {
        let asked = Instant::now();
        // A renewal that does not answer within a third of the lease counts as failed.
        let result = tokio::time::timeout(
            every,
            state.store.campaign(me, &url, lease.as_millis() as i64),
        )
        .await
        .unwrap_or_else(|_| {
            state.store.step_down();
            Err(crate::store::StoreError::Db(sqlx::Error::PoolTimedOut))
        });
        match result {
            Ok(term) => {
                if let Some(was) = leading
                    && term != Some(was)
                {
                    lost(was, "another server holds the lease");
                }
                if term.is_some() {
                    state.renewed(asked + lease.mul_f64(0.8));
                }
                if term != leading {
                    if let Some(t) = term {
                        info!(term = t, "this server leads");
                    }
                    leading = term;
                }
                // Wake the leader's work whenever it may act (again): after a failed
                // renewal the same term comes back without a change of holder.
                if state.leads() {
                    state.leader_changed.notify_waiters();
                }
            }
            Err(e) => {
                warn!(error = %e, "the leader's lease could not be renewed");
                if let Some(was) = leading
                    && state.lease_over()
                {
                    lost(was, "its lease could not be renewed in time");
                }
            }
        }
        tokio::time::sleep(every.saturating_sub(asked.elapsed())).await;
    }
}
