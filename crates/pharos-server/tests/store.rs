//! The store's contract, on SQLite and - when `PHAROS_TEST_POSTGRES_URL` names a
//! server (`.ci/run` starts one) - on PostgreSQL, with the same test bodies.

use pharos_core::{ErrorCode, JobState};
use pharos_server::store::{Desired, JobUpdate, NewJob, Store, StoreError};

/// A fresh, empty database for each test: a SQLite file in a temporary directory, or a
/// new PostgreSQL database.
async fn databases() -> Vec<(String, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = vec![(
        format!("sqlite://{}", dir.path().join("t.db").display()),
        Some(dir),
    )];
    if let Ok(base) = std::env::var("PHAROS_TEST_POSTGRES_URL") {
        sqlx::any::install_default_drivers();
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "pharos_test_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            pharos_server::store::now_ms()
        );
        let pool = sqlx::AnyPool::connect(&base)
            .await
            .expect("PostgreSQL reachable");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let url = match base.rfind('/') {
            Some(i) if i > "postgres://".len() => format!("{}/{name}", &base[..i]),
            _ => format!("{base}/{name}"),
        };
        out.push((url, None));
    } else {
        // CI starts a PostgreSQL server (.ci/run); there, running without it is a failure.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but PHAROS_TEST_POSTGRES_URL is not set"
        );
        eprintln!("PHAROS_TEST_POSTGRES_URL not set: SQLite only");
    }
    out
}

fn job<'a>(tenant: &'a str, key: Option<&'a str>) -> NewJob<'a> {
    NewJob {
        tenant,
        name: "j",
        manifest: "name: j\nframework: {name: custom, command: 'true'}\n",
        queue: "default",
        priority: 0,
        model_sha256: None,
        idempotency_key: key,
    }
}

#[tokio::test]
async fn lifecycle_history_and_persistence() {
    for (url, _dir) in databases().await {
        let store = Store::open(&url).await.unwrap();
        let (id, created) = store.insert_job(&job("a", None)).await.unwrap();
        assert!(created);
        assert_eq!(id, 1);
        let (id2, _) = store.insert_job(&job("b", None)).await.unwrap();
        assert_eq!(id2, 2, "{url}");
        // The lifecycle is enforced.
        let err = store
            .transition(id, JobState::Processing, "x", None, &JobUpdate::default())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Transition { .. }), "{url}: {err}");
        store
            .transition(
                id,
                JobState::Pending,
                "placed",
                None,
                &JobUpdate {
                    attempt: Some(1),
                    master_port: Some(Some(29500)),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        store
            .transition(
                id,
                JobState::Failed,
                "boom",
                Some(ErrorCode::C201),
                &JobUpdate::default(),
            )
            .await
            .unwrap();
        // Terminal states are sticky.
        assert!(
            store
                .transition(id, JobState::Queued, "again", None, &JobUpdate::default())
                .await
                .is_err()
        );
        let j = store.job(id, Some("a")).await.unwrap();
        assert_eq!(j.state, JobState::Failed);
        assert_eq!(j.error_code.as_deref(), Some("C201"));
        assert_eq!(j.attempt, 1);
        assert_eq!(j.master_port, Some(29500));
        assert!(j.finished_ms.is_some());
        // Another tenant does not see it.
        assert!(matches!(
            store.job(id, Some("b")).await,
            Err(StoreError::NotFound(_))
        ));
        let h = store.status_history(id).await.unwrap();
        let states: Vec<JobState> = h.iter().map(|e| e.state).collect();
        assert_eq!(
            states,
            vec![JobState::Queued, JobState::Pending, JobState::Failed]
        );
        assert_eq!(h[2].error_code.as_deref(), Some("C201"));
        store.add_event(id, "restart", "one").await.unwrap();
        store.add_event(id, "restart", "two").await.unwrap();
        store.close().await;

        // Everything is still there after reopening.
        let store = Store::open(&url).await.unwrap();
        assert_eq!(store.jobs(None).await.unwrap().len(), 2);
        assert_eq!(store.jobs(Some("a")).await.unwrap().len(), 1);
        let ev = store.events(id).await.unwrap();
        assert_eq!(
            ev.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
            vec!["one", "two"]
        );
        // Only the live job is active.
        let active: Vec<i64> = store
            .active_jobs()
            .await
            .unwrap()
            .iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(active, vec![id2]);
        // New ids continue after the old ones.
        let (id3, _) = store.insert_job(&job("a", None)).await.unwrap();
        assert_eq!(id3, 3);
        store.close().await;
    }
}

#[tokio::test]
async fn idempotency_desired_and_deletes() {
    for (url, _dir) in databases().await {
        let store = Store::open(&url).await.unwrap();
        let (a, created) = store.insert_job(&job("t", Some("k1"))).await.unwrap();
        let (b, again) = store.insert_job(&job("t", Some("k1"))).await.unwrap();
        assert!(created && !again);
        assert_eq!(a, b);
        // The same key of another tenant is another job.
        let (c, created_c) = store.insert_job(&job("u", Some("k1"))).await.unwrap();
        assert!(created_c && c != a);
        assert_eq!(store.jobs(None).await.unwrap().len(), 2);
        // A halt only lands in the states asked for.
        assert!(
            !store
                .set_desired_if(a, Desired::Halt, &[JobState::Processing], &[Desired::Run])
                .await
                .unwrap()
        );
        assert!(
            store
                .set_desired_if(a, Desired::Halt, &[JobState::Queued], &[Desired::Run])
                .await
                .unwrap()
        );
        assert_eq!(store.job(a, None).await.unwrap().desired, Desired::Halt);
        // A preemption does not overwrite a halt.
        assert!(
            !store
                .set_desired_if(a, Desired::Preempt, &[JobState::Queued], &[Desired::Run])
                .await
                .unwrap()
        );
        // An update that expects another `desired` is refused and changes nothing.
        let refused = store
            .update(
                a,
                &JobUpdate {
                    desired: Some(Desired::Run),
                    expect_desired: Some(Desired::Preempt),
                    ..Default::default()
                },
            )
            .await;
        assert!(matches!(refused, Err(StoreError::Transition { .. })));
        assert_eq!(store.job(a, None).await.unwrap().desired, Desired::Halt);
        store
            .update(
                a,
                &JobUpdate {
                    deleted: Some(true),
                    wait_reason: Some(Some("why".into())),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(store.job(a, None).await.is_err());
        assert_eq!(store.jobs(None).await.unwrap().len(), 1);
        let counts = store.state_counts().await.unwrap();
        assert_eq!(counts, vec![("QUEUED".to_string(), 1)]);
        store.close().await;
    }
}

#[tokio::test]
async fn tokens_are_stored_hashed() {
    for (url, _dir) in databases().await {
        let store = Store::open(&url).await.unwrap();
        let token = pharos_server::auth::generate_token();
        let hash = pharos_server::auth::hash_token(&token);
        assert_ne!(hash, token);
        store.add_token(&hash, "team-a", false, "t").await.unwrap();
        let p = store.principal(&hash).await.unwrap().unwrap();
        assert_eq!(p.tenant, "team-a");
        assert!(!p.admin);
        assert!(store.principal(&token).await.unwrap().is_none());
        assert_eq!(store.count_admin_tokens().await.unwrap(), 0);
        store.close().await;
    }
}

/// Many writers at once: every job gets its own id, and none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_inserts_get_distinct_ids() {
    for (url, _dir) in databases().await {
        let store = Store::open(&url).await.unwrap();
        let mut tasks = Vec::new();
        for t in 0..20 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..10 {
                    let tenant = format!("t{t}");
                    ids.push(s.insert_job(&job(&tenant, None)).await.unwrap().0);
                }
                ids
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.extend(t.await.unwrap());
        }
        ids.sort();
        assert_eq!(ids, (1..=200).collect::<Vec<i64>>(), "{url}");
        store.close().await;
    }
}

#[tokio::test]
async fn service_minute_history_is_upserted_read_pruned_and_deleted() {
    use pharos_server::minutes::{Minute, decode, encode};
    for (url, _dir) in databases().await {
        let s = Store::open(&url).await.unwrap();
        s.insert_service("a", "t", "{}", 9000).await.unwrap();
        s.insert_service("b", "t", "{}", 9001).await.unwrap();
        let hour = |n: u64| {
            encode(&[
                Some(Minute::imported(n)),
                None,
                Some(Minute::imported(n + 1)),
            ])
        };
        s.put_minute_chunks(&[
            ("a".into(), 100, hour(1)),
            ("a".into(), 101, hour(2)),
            ("b".into(), 100, hour(3)),
        ])
        .await
        .unwrap();
        // Replaced, not added.
        s.put_minute_chunks(&[("a".into(), 101, hour(7))])
            .await
            .unwrap();
        let got = s.minute_chunks("a", 0, 1000).await.unwrap();
        assert_eq!(
            got.iter().map(|c| c.0).collect::<Vec<_>>(),
            vec![100, 101],
            "{url}"
        );
        assert_eq!(
            decode(&got[1].1).unwrap()[2],
            Some(Minute::imported(8)),
            "{url}"
        );
        assert_eq!(s.minute_chunks("a", 101, 101).await.unwrap().len(), 1);
        // The day origin goes with the service's row.
        s.set_day_origin("a", 1234).await.unwrap();
        let rows = s.services().await.unwrap();
        assert_eq!(rows[0].day_origin, Some(1234), "{url}");
        assert_eq!(rows[1].day_origin, None, "{url}");
        // Retention, then the service's deletion takes its history.
        assert_eq!(s.prune_minutes(101).await.unwrap(), 2, "{url}");
        assert_eq!(s.minute_chunks("a", 0, 1000).await.unwrap().len(), 1);
        s.delete_service("a").await.unwrap();
        assert!(
            s.minute_chunks("a", 0, 1000).await.unwrap().is_empty(),
            "{url}"
        );
        s.close().await;
    }
}

/// Every write of a job is a change the controller reads after its mark, in order and
/// once; concurrent writers never commit a lower change number after a higher one was
/// read (the counter's row is held to the commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_job_write_is_a_change_read_once_in_order() {
    for (url, _dir) in databases().await {
        let store = Store::open(&url).await.unwrap();
        let mark = store.change_mark().await.unwrap();
        let (a, _) = store.insert_job(&job("t", None)).await.unwrap();
        let (b, _) = store.insert_job(&job("t", None)).await.unwrap();
        store
            .transition(a, JobState::Pending, "placed", None, &JobUpdate::default())
            .await
            .unwrap();
        store
            .set_wait_reasons(&[(b, "no room".into())])
            .await
            .unwrap();
        let got = store.changed_jobs(mark, 100).await.unwrap();
        let seen: Vec<(i64, JobState)> = got.iter().map(|c| (c.row.id, c.row.state)).collect();
        // One row per job, each as last written (a's insert is overwritten by its move).
        assert_eq!(
            seen,
            vec![(a, JobState::Pending), (b, JobState::Queued)],
            "{url}"
        );
        assert_eq!(got[1].row.wait_reason.as_deref(), Some("no room"), "{url}");
        let after = got.last().unwrap().version;
        assert!(store.changed_jobs(after, 100).await.unwrap().is_empty());
        // A refused move is no change; a set desired is one; a deletion is seen as one.
        assert!(
            !store
                .set_desired_if(b, Desired::Halt, &[JobState::Processing], &[Desired::Run])
                .await
                .unwrap()
        );
        assert!(store.changed_jobs(after, 100).await.unwrap().is_empty());
        store
            .update(
                b,
                &JobUpdate {
                    deleted: Some(true),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let got = store.changed_jobs(after, 100).await.unwrap();
        assert_eq!(got.len(), 1, "{url}");
        assert!(got[0].deleted, "{url}");

        // Concurrent writers, a reader following along: every job's every write is
        // read, none skipped, whatever the commit order.
        let mut mark = store.change_mark().await.unwrap();
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let s = store.clone();
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for _ in 0..25 {
                        ids.push(s.insert_job(&job("t", None)).await.unwrap().0);
                    }
                    ids
                })
            })
            .collect();
        let mut read = std::collections::BTreeSet::new();
        let mut done = false;
        while !done {
            done = writers.iter().all(|w| w.is_finished());
            for c in store.changed_jobs(mark, 7).await.unwrap() {
                assert!(c.version > mark);
                mark = c.version;
                read.insert(c.row.id);
            }
        }
        loop {
            let more = store.changed_jobs(mark, 1000).await.unwrap();
            if more.is_empty() {
                break;
            }
            mark = more.last().unwrap().version;
            read.extend(more.iter().map(|c| c.row.id));
        }
        let mut written = std::collections::BTreeSet::new();
        for w in writers {
            written.extend(w.await.unwrap());
        }
        assert_eq!(read, written, "{url}");
        store.close().await;
    }
}

/// Two servers' stores on one PostgreSQL: the one that holds the lease leads; when it
/// lapses another takes over with a higher term, and from then on the old leader's
/// writes of leader's work are refused - nothing of them lands - while what its API
/// writes for users still does. (Without the term check the stale write would land:
/// the assertion on the job's state fails.)
#[tokio::test]
async fn a_leader_whose_lease_was_taken_over_cannot_write() {
    use pharos_server::store::as_leader;
    for (url, _dir) in databases().await {
        if !url.starts_with("postgres") {
            continue;
        }
        let a = Store::open(&url).await.unwrap();
        let b = Store::open(&url).await.unwrap();
        a.enable_election();
        b.enable_election();
        let (id, _) = a.insert_job(&job("t", None)).await.unwrap();
        // Not leading yet: the leader's work is refused.
        let place = |s: &Store| {
            let s = s.clone();
            as_leader(async move {
                s.transition(id, JobState::Pending, "placed", None, &JobUpdate::default())
                    .await
            })
        };
        assert!(matches!(place(&a).await, Err(StoreError::Fenced(_))));
        let ta = a.campaign("a", "http://a", 400).await.unwrap().unwrap();
        assert_eq!(b.campaign("b", "http://b", 400).await.unwrap(), None);
        assert_eq!(a.campaign("a", "http://a", 400).await.unwrap(), Some(ta));
        let who = b.leader().await.unwrap();
        assert_eq!(
            (who.holder.as_str(), who.url.as_str(), who.live),
            ("a", "http://a", true)
        );
        // a is paused past its lease (no renewal); b takes over.
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        let tb = b.campaign("b", "http://b", 5000).await.unwrap().unwrap();
        assert!(tb > ta);
        // a still believes it leads (it has not campaigned since), and writes: refused.
        assert_eq!(a.term(), Some(ta));
        let stale = place(&a).await;
        assert!(
            matches!(stale, Err(StoreError::Fenced(t)) if t == ta),
            "{stale:?}"
        );
        assert_eq!(a.term(), None, "a knows it no longer leads");
        let row = b.job(id, None).await.unwrap();
        assert_eq!(
            row.state,
            JobState::Queued,
            "the stale leader's write landed"
        );
        // Its other kinds of writes too.
        let s = a.clone();
        let ev = as_leader(async move { s.add_event(id, "x", "stale").await }).await;
        assert!(matches!(ev, Err(StoreError::Fenced(_))));
        assert!(b.events(id).await.unwrap().is_empty());
        // A user's request answered by a is still written.
        assert!(a.insert_job(&job("t", None)).await.is_ok());
        // The new leader's work lands; a campaigns again and learns it does not lead.
        assert!(place(&b).await.is_ok());
        assert_eq!(a.campaign("a", "http://a", 400).await.unwrap(), None);
        // A clean shutdown gives the lease up at once.
        b.resign("b").await.unwrap();
        assert!(a.campaign("a", "http://a", 400).await.unwrap().unwrap() > tb);
        a.close().await;
        b.close().await;
    }
}
