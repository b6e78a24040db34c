//! The controller's copy of the jobs it looks after, loaded once and then kept up to
//! date from the store's change numbers (every write of a job stamps it with the next
//! one), so that a pass reads only what changed - not every queued job.
//!
//! The queued jobs are also kept in the order the scheduler considers them (rank, then
//! submission, then id; see [`GangScheduler::waiting_rank`]), per queue, so that a
//! decision is handed the first ones of each queue rather than all of them.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use pharos_core::JobState;
use pharos_policy::training::GangScheduler;

use crate::store::{Desired, JobRow, Store, StoreError};

/// Changed jobs read at most per refresh (the rest at the next pass).
const READ_AT_MOST: i64 = 5000;

/// A queued job's place in its queue: rank (higher first), submission, id.
type Key = (Reverse<i64>, i64, i64);

pub struct JobCache {
    /// The scheduler's order of waiting jobs.
    ranker: GangScheduler,
    loaded: bool,
    /// Every change up to this one is in the copy.
    mark: i64,
    /// The jobs the controller looks after, by id.
    jobs: BTreeMap<i64, JobRow>,
    /// Queued jobs that want to run, per queue, in the scheduler's order.
    waiting: BTreeMap<String, BTreeSet<Key>>,
    /// The other jobs (placed, running, stopping, or queued but halted or deleted):
    /// the ones a pass supervises.
    others: BTreeSet<i64>,
    /// Whether more changes were left for the next refresh.
    pub behind: bool,
    /// The first this many waiting jobs of each queue are the scheduler's.
    window: usize,
    /// Whether anything a decision looks at changed since [`Self::decided`]: a job
    /// that is not waiting, or a waiting one among the first `window` of its queue (a
    /// submission behind them changes nothing the scheduler is shown).
    pub dirty: bool,
    /// The services' replicas at the last decision, and when it was taken.
    pub decided_with: Option<(Vec<(f64, u32)>, std::time::Instant)>,
}

/// Whether the controller looks after a job in this state.
fn active(row: &JobRow) -> bool {
    !row.state.is_terminal() || row.desired == Desired::Delete
}

fn waits(row: &JobRow) -> bool {
    row.state == JobState::Queued && row.desired == Desired::Run
}

impl JobCache {
    /// Reads what changed since the last refresh (everything the first time); returns
    /// how many jobs changed.
    pub async fn refresh(&mut self, store: &Store) -> Result<usize, StoreError> {
        if !self.loaded {
            // The mark first: a job written after it is read again below, never missed.
            let mark = store.change_mark().await?;
            let rows = store.active_jobs().await?;
            let n = rows.len();
            for row in rows {
                self.put(row, false);
            }
            self.mark = mark;
            self.loaded = true;
            return Ok(n);
        }
        let changes = store.changed_jobs(self.mark, READ_AT_MOST).await?;
        self.behind = changes.len() as i64 == READ_AT_MOST;
        let n = changes.len();
        for c in changes {
            self.mark = self.mark.max(c.version);
            self.put(c.row, c.deleted);
        }
        Ok(n)
    }

    /// Forgets everything (read again at the next refresh): after this server stopped
    /// leading, what it knew may be stale.
    pub fn clear(&mut self) {
        *self = JobCache::new(self.ranker.clone(), self.window);
    }

    pub fn new(ranker: GangScheduler, window: usize) -> Self {
        JobCache {
            window,
            dirty: true,
            decided_with: None,
            ranker,
            loaded: false,
            mark: 0,
            jobs: BTreeMap::new(),
            waiting: BTreeMap::new(),
            others: BTreeSet::new(),
            behind: false,
        }
    }

    fn key(row: &JobRow, sched: &GangScheduler) -> Key {
        let priority = row.priority.clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        (
            Reverse(sched.waiting_rank(priority)),
            row.submitted_ms,
            row.id,
        )
    }

    /// Whether a waiting job with this key is among the first `window` of its queue.
    fn shown(&self, queue: &str, key: &Key) -> bool {
        self.waiting
            .get(queue)
            .and_then(|q| q.iter().nth(self.window.saturating_sub(1)))
            .is_none_or(|last| key <= last)
    }

    /// A decision was taken on what the copy holds now, with the services holding
    /// `services`.
    pub fn decided(&mut self, services: Vec<(f64, u32)>) {
        self.dirty = false;
        self.decided_with = Some((services, std::time::Instant::now()));
    }

    /// Whether a decision now could differ from the last: the copy changed where the
    /// scheduler looks, the services' replicas changed, or it is `every` old.
    pub fn worth_deciding(&self, services: &[(f64, u32)], every: std::time::Duration) -> bool {
        match &self.decided_with {
            Some((s, at)) => self.dirty || s != services || at.elapsed() >= every,
            None => true,
        }
    }

    fn put(&mut self, row: JobRow, deleted: bool) {
        let sched = &self.ranker;
        if let Some(old) = self.jobs.get(&row.id) {
            let shown = !waits(old) || self.shown(&old.queue, &Self::key(old, sched));
            self.dirty |= shown;
        }
        if waits(&row) && !deleted {
            let shown = self.shown(&row.queue, &Self::key(&row, sched));
            self.dirty |= shown;
        } else if active(&row) && !deleted {
            self.dirty = true;
        }
        if let Some(old) = self.jobs.remove(&row.id) {
            if waits(&old) {
                let key = Self::key(&old, sched);
                if let Some(q) = self.waiting.get_mut(&old.queue) {
                    q.remove(&key);
                    if q.is_empty() {
                        self.waiting.remove(&old.queue);
                    }
                }
            } else {
                self.others.remove(&old.id);
            }
        }
        if deleted || !active(&row) {
            return;
        }
        if waits(&row) {
            self.waiting
                .entry(row.queue.clone())
                .or_default()
                .insert(Self::key(&row, &self.ranker));
        } else {
            self.others.insert(row.id);
        }
        self.jobs.insert(row.id, row);
    }

    /// The jobs a pass supervises (all but the queued ones waiting to run).
    pub fn others(&self) -> impl Iterator<Item = &JobRow> {
        self.others.iter().filter_map(|id| self.jobs.get(id))
    }

    /// How many queued jobs wait to run.
    pub fn waiting_count(&self) -> usize {
        self.waiting.values().map(BTreeSet::len).sum()
    }

    /// The first `per_queue` waiting jobs of every queue, in the scheduler's order
    /// across queues: every job among the first `per_queue` overall is there.
    pub fn first_waiting(&self, per_queue: usize) -> Vec<&JobRow> {
        let mut keys: Vec<&Key> = self
            .waiting
            .values()
            .flat_map(|q| q.iter().take(per_queue))
            .collect();
        keys.sort();
        keys.into_iter()
            .filter_map(|(_, _, id)| self.jobs.get(id))
            .collect()
    }

    /// The job, as of the last refresh.
    pub fn get(&self, id: i64) -> Option<&JobRow> {
        self.jobs.get(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pharos_policy::training::{GangParams, Order};

    fn row(id: i64, queue: &str, priority: i64, state: JobState) -> JobRow {
        JobRow {
            id,
            tenant: "t".into(),
            name: format!("j{id}"),
            manifest: String::new(),
            state,
            error_code: None,
            message: String::new(),
            queue: queue.into(),
            priority,
            submitted_ms: 1000 + id,
            updated_ms: 0,
            started_ms: None,
            finished_ms: None,
            attempt: 0,
            restarts: 0,
            desired: Desired::Run,
            model_sha256: None,
            not_before_ms: 0,
            stop_sent_ms: None,
            wait_reason: None,
            master_port: None,
            placed_ms: None,
            gpu_model: None,
            devices: None,
        }
    }

    fn cache(order: Order, window: usize) -> JobCache {
        let params = GangParams {
            order,
            ..Default::default()
        };
        JobCache::new(GangScheduler::new(params), window)
    }

    fn ids(rows: Vec<&JobRow>) -> Vec<i64> {
        rows.into_iter().map(|r| r.id).collect()
    }

    #[test]
    fn the_first_waiting_jobs_of_each_queue_in_the_schedulers_order() {
        let mut c = cache(Order::Priority, 2);
        for (id, q, p) in [
            (1, "a", 0),
            (2, "a", 5),
            (3, "b", 1),
            (4, "a", 5),
            (5, "b", 0),
        ] {
            c.put(row(id, q, p, JobState::Queued), false);
        }
        // By priority, then submission: a's first two are 2 and 4, b's 3 and 5.
        assert_eq!(ids(c.first_waiting(2)), vec![2, 4, 3, 5]);
        assert_eq!(ids(c.first_waiting(1)), vec![2, 3]);
        assert_eq!(c.waiting_count(), 5);
        // Placed: it leaves the waiting jobs for the supervised ones; ended: gone.
        c.put(row(2, "a", 5, JobState::Pending), false);
        assert_eq!(ids(c.first_waiting(2)), vec![4, 3, 1, 5]);
        assert_eq!(c.others().map(|r| r.id).collect::<Vec<_>>(), vec![2]);
        c.put(row(2, "a", 5, JobState::Completed), false);
        assert_eq!(c.others().count(), 0);
        assert!(c.get(2).is_none());
        // Deleted for good.
        c.put(row(4, "a", 5, JobState::Queued), true);
        assert_eq!(ids(c.first_waiting(9)), vec![3, 1, 5]);
        // Submission order alone under FIFO, whatever the priority.
        let mut f = cache(Order::Fifo, 10);
        f.put(row(1, "a", 0, JobState::Queued), false);
        f.put(row(2, "a", 9, JobState::Queued), false);
        assert_eq!(ids(f.first_waiting(10)), vec![1, 2]);
    }

    #[test]
    fn only_a_change_the_scheduler_is_shown_calls_for_a_decision() {
        let mut c = cache(Order::Priority, 2);
        for id in 1..=3 {
            c.put(row(id, "a", 0, JobState::Queued), false);
        }
        let services = vec![(1.0, 2)];
        assert!(c.worth_deciding(&services, std::time::Duration::from_secs(10)));
        c.decided(services.clone());
        assert!(!c.worth_deciding(&services, std::time::Duration::from_secs(10)));
        // Behind the first two of its queue: nothing the scheduler sees changed.
        c.put(row(4, "a", 0, JobState::Queued), false);
        assert!(!c.dirty);
        // Ahead of them (a higher priority), or in a queue not yet full: a change.
        c.put(row(5, "a", 3, JobState::Queued), false);
        assert!(c.dirty);
        c.decided(services.clone());
        c.put(row(6, "b", 0, JobState::Queued), false);
        assert!(c.dirty);
        c.decided(services.clone());
        // A job the scheduler sees leaving (placed), or a running one changing.
        c.put(row(5, "a", 3, JobState::Pending), false);
        assert!(c.dirty);
        c.decided(services.clone());
        c.put(row(5, "a", 3, JobState::Processing), false);
        assert!(c.dirty);
        c.decided(services.clone());
        // The services' replicas changed; or time passed.
        assert!(c.worth_deciding(&[(1.0, 3)], std::time::Duration::from_secs(10)));
        assert!(c.worth_deciding(&services, std::time::Duration::ZERO));
    }
}
