//! What only the SQLite store does, through its public API and the database file: group commit
//! isolates failures, the file is private and in WAL mode, the revision counter persists, and
//! hand edits with the sqlite3 CLI keep the cache and the counts honest. What every backend
//! does is in the conformance suite (`tests/conformance.rs`).

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use stigmer_sqlite::{SqliteConfig, SqliteStore};
use stigmer_store::{ListQuery, Mutation, NewResource, Scope, Store, StoreError, StoredResource};

fn resource(id: &str, slug: &str) -> NewResource {
    NewResource {
        scope: Scope::new("Agent", "local"),
        id: id.into(),
        slug: slug.into(),
        data: format!(r#"{{"metadata":{{"id":"{id}","slug":"{slug}","tags":["t-{slug}"]}}}}"#),
        proto: None,
    }
}

fn open(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
    let config = SqliteConfig::new(dir.path().join("nested/dir/test.db"));
    Arc::new(SqliteStore::open(&config).expect("open"))
}

/// How a write of the batch test must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Written,
    SlugTaken,
    Stale,
}

/// The writes of the batch test, `n` of them: fresh creates and replaces at the current
/// revision, mixed with creates of a taken slug, replaces at a stale revision, and pairs whose
/// second create takes a slug in use (the pair fails whole). `old` are the resources to
/// replace, two per five writes.
fn mixed_batch(n: usize, old: &[StoredResource]) -> Vec<(Expect, Vec<Mutation>)> {
    (0..n)
        .map(|i| {
            let fresh = || resource(&format!("agt-new-{i:03}"), &format!("new{i}"));
            let target = &old[(i / 5) * 2 + (i % 5 == 3) as usize];
            let replacement = || edited(&target.id, &target.slug, i);
            match i % 5 {
                0 => (Expect::Written, vec![Mutation::Create(fresh())]),
                1 => (
                    Expect::SlugTaken,
                    vec![Mutation::Create(resource(
                        &format!("agt-dup-{i:03}"),
                        &old[0].slug,
                    ))],
                ),
                2 => (
                    Expect::Written,
                    vec![Mutation::Replace {
                        resource: replacement(),
                        expected_revision: target.revision,
                    }],
                ),
                3 => (
                    Expect::Stale,
                    vec![Mutation::Replace {
                        resource: replacement(),
                        expected_revision: target.revision - 1,
                    }],
                ),
                _ => (
                    Expect::SlugTaken,
                    vec![
                        Mutation::Create(fresh()),
                        Mutation::Create(resource(&format!("agt-dup-{i:03}"), &old[1].slug)),
                    ],
                ),
            }
        })
        .collect()
}

fn edited(id: &str, slug: &str, by: usize) -> NewResource {
    NewResource {
        data: format!(r#"{{"metadata":{{"id":"{id}","slug":"{slug}"}},"editedBy":{by}}}"#),
        ..resource(id, slug)
    }
}

/// Waits, without sleeping, until the writer holds `committing` writes and `queued` more wait.
async fn writer_reaches(store: &SqliteStore, committing: u64, queued: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let stats = store.stats();
        if stats.committing == committing && stats.queued == queued {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never held {committing} with {queued} queued: {stats:?}"
        );
        tokio::task::yield_now().await;
    }
}

/// Group commit, proven from the writer's counters instead of inferred from the results: 199
/// writes queued behind a transaction stalled on another process's lock all share the next
/// one, and the 120 among them that fail (a taken slug, a stale revision, a pair whose second
/// half fails) sink none of the 79 others.
///
/// Fails when every write commits alone (`max_batch` forced to 1 in `Writer::spawn`):
/// "the 199 queued writes share one transaction: 200 writes took 200 transactions".
#[tokio::test]
async fn failing_writes_in_a_shared_transaction_sink_none_of_the_others() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(&dir);
    let mut old = Vec::new();
    for i in 0..80 {
        let created = store
            .create(resource(&format!("agt-old-{i:02}"), &format!("old{i}")))
            .await
            .expect("create");
        old.push(created);
    }
    let before = store.info("local".into()).await.expect("info");
    let writes = mixed_batch(200, &old);

    // Another process holds the write lock: the writer takes the first write and waits on
    // it, so every other write queues up behind that one transaction.
    let db = dir.path().join("nested/dir/test.db");
    let mut outsider = rusqlite::Connection::open(&db).expect("open");
    let lock = outsider
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .expect("lock");
    let submit = |mutations: Vec<Mutation>| {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.transact(mutations).await })
    };
    let mut tasks = vec![submit(writes[0].1.clone())];
    writer_reaches(&store, 1, 0).await;
    tasks.extend(writes[1..].iter().map(|(_, m)| submit(m.clone())));
    writer_reaches(&store, 1, writes.len() - 1).await;
    drop(lock);

    let mut revisions = Vec::new();
    for ((expect, mutations), task) in writes.iter().zip(tasks) {
        let result = task.await.expect("task");
        match (expect, &result) {
            (Expect::Written, Ok(stored)) => revisions.extend(stored.iter().map(|r| r.revision)),
            (Expect::SlugTaken, Err(StoreError::AlreadyExists { .. }))
            | (Expect::Stale, Err(StoreError::Conflict { .. })) => {}
            _ => panic!("{mutations:?}: expected {expect:?}, got {result:?}"),
        }
    }
    let after = store.info("local".into()).await.expect("info");
    let (written, transactions) = (
        after.writes_committed - before.writes_committed,
        after.transactions_committed - before.transactions_committed,
    );
    assert_eq!(written, 200, "every write, failed or not, was in a batch");
    assert_eq!(
        transactions, 2,
        "the 199 queued writes share one transaction: {written} writes took {transactions} \
         transactions"
    );
    revisions.sort_unstable();
    let first = before.bounds.current + 1;
    assert_eq!(
        revisions,
        (first..first + 80).collect::<Vec<_>>(),
        "each of the 80 written has its own revision; the failed took none"
    );
    for (expect, mutations) in &writes {
        assert_outcome(&store, *expect, mutations, &old).await;
    }
    store.close().await.expect("close");
}

/// What a write of `mixed_batch` left in the store: all of it, or none of it.
async fn assert_outcome(
    store: &SqliteStore,
    expect: Expect,
    mutations: &[Mutation],
    old: &[StoredResource],
) {
    for mutation in mutations {
        let (Mutation::Create(resource) | Mutation::Replace { resource, .. }) = mutation else {
            panic!("not in the batch: {mutation:?}");
        };
        let stored = store
            .get(resource.scope.clone(), resource.id.clone())
            .await
            .expect("get");
        let before = old.iter().find(|row| row.id == resource.id);
        match (expect, before, stored) {
            (Expect::Written, None, Some(_)) => {}
            (Expect::Written, Some(before), Some(row)) => assert!(
                row.revision > before.revision && row.data.contains("editedBy"),
                "{mutation:?} left {row:?}"
            ),
            (Expect::SlugTaken, None, None) => {}
            (Expect::Stale, Some(before), Some(row)) => {
                assert_eq!(&row, before, "a stale replace changed nothing")
            }
            (expect, _, row) => panic!("{expect:?}: {mutation:?} left {row:?}"),
        }
    }
}

#[tokio::test]
async fn the_database_is_private_and_in_wal_mode() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(&dir);
    store.close().await.expect("close");
    let db = dir.path().join("nested/dir/test.db");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&db), 0o600);
    assert_eq!(mode(&dir.path().join("nested/dir")), 0o700);

    // The plans of the statements the store runs are checked in `src/queries/plans.rs`.
    let conn = rusqlite::Connection::open(&db).expect("open");
    let (journal, applied): (String, i64) = (
        conn.query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .expect("journal"),
        conn.query_row("SELECT count(*) FROM refinery_schema_history", [], |row| {
            row.get(0)
        })
        .expect("migrations are recorded"),
    );
    assert_eq!(journal, "wal");
    assert!(applied >= 1);
}

#[tokio::test]
async fn writes_that_queue_up_behind_a_commit_share_one_transaction() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(&dir);
    let db = dir.path().join("nested/dir/test.db");
    // Another process holds the write lock, so the writer's first transaction waits on it
    // while the other writes queue up behind it.
    let mut outsider = rusqlite::Connection::open(&db).expect("open");
    let lock = outsider
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .expect("lock");
    let writes = 50;
    let tasks: Vec<_> = (0..writes)
        .map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .create(resource(&format!("agt-{n:03}"), &format!("s{n}")))
                    .await
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
    let waiting = |s: stigmer_sqlite::WriterStats| s.queued as u64 + s.committing;
    while waiting(store.stats()) < writes as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "writes did not queue: {:?}",
            store.stats()
        );
        tokio::task::yield_now().await;
    }
    drop(lock);
    for task in tasks {
        task.await.expect("task").expect("create");
    }
    let stats = store.stats();
    assert_eq!(stats.writes, writes as u64);
    // The blocked transaction holds the first write (or every write, if the writer thread only
    // got to the queue once all were there); everything else shares the next one.
    assert!(
        (1..=2).contains(&stats.batches),
        "50 writes in at most two transactions: {stats:?}"
    );
    store.close().await.expect("close");
}

/// Age removes as well as keeps: changes older than the age go, a prefix at a time, without
/// waiting an hour (their commit times are moved back by hand, as a clock would).
#[tokio::test]
async fn age_based_retention_removes_old_changes_as_a_prefix() {
    use stigmer_store::Retention;
    let dir = tempfile::tempdir().expect("dir");
    let store = open(&dir);
    for n in 0..10 {
        store
            .create(resource(&format!("agt-{n}"), &format!("s{n}")))
            .await
            .expect("create");
    }
    let two_hours_ago = std::time::SystemTime::now()
        .checked_sub(std::time::Duration::from_secs(7200))
        .expect("time")
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis() as i64;
    let conn = rusqlite::Connection::open(dir.path().join("nested/dir/test.db")).expect("open");
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy timeout");
    // Revisions 1-6 are old; so is 8, but 7 is recent, so the prefix ends at 6.
    let aged = conn
        .execute(
            "UPDATE changes SET committed_at = ?1 WHERE revision <= 6 OR revision = 8",
            [two_hours_ago],
        )
        .expect("age the first changes");
    assert_eq!(aged, 7);
    drop(conn);
    let hour = Retention {
        revisions: 0,
        age: std::time::Duration::from_secs(3600),
    };
    let done = store.compact(hour).await.expect("compact");
    assert_eq!((done.removed, done.compacted), (6, 6));
    assert_eq!(store.log_bounds().await.expect("bounds").compacted, 6);
    // Nothing else is old enough: a second pass removes nothing.
    assert_eq!(store.compact(hour).await.expect("compact").removed, 0);
    store.close().await.expect("close");
}

/// The last revision handed out is stored, not derived from the rows: after a delete and a
/// reopen the next write still takes the next revision.
#[tokio::test]
async fn the_revision_counter_survives_a_delete_and_a_reopen() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(&dir);
    let created = store
        .create(resource("agt-1", "one"))
        .await
        .expect("create");
    store
        .delete(Scope::new("Agent", "local"), "agt-1".into(), None)
        .await
        .expect("delete");
    store.close().await.expect("close");
    let store = open(&dir);
    let after = store
        .create(resource("agt-2", "two"))
        .await
        .expect("create");
    assert_eq!(after.revision, created.revision + 2);
    store.close().await.expect("close");
}

/// The trigger of migration V5: an edit with the sqlite3 CLI of `data` or `revision` drops the
/// cached encoding (the conformance suite checks `data` through its harness); an edit of any
/// other column keeps it, and the next write through the store caches again.
#[tokio::test]
async fn hand_edits_of_data_or_revision_drop_the_cached_encoding() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(&dir);
    let scope = Scope::new("Agent", "local");
    for (id, slug) in [("agt-1", "one"), ("agt-2", "two"), ("agt-3", "three")] {
        store
            .create(NewResource {
                proto: Some(id.as_bytes().to_vec()),
                ..resource(id, slug)
            })
            .await
            .expect("create");
    }
    let conn = rusqlite::Connection::open(dir.path().join("nested/dir/test.db")).expect("open");
    conn.execute(
        "UPDATE resources SET data = json_set(data, '$.metadata.name', 'fixed') WHERE id = 'agt-1'",
        [],
    )
    .expect("hand edit of data");
    conn.execute(
        "UPDATE resources SET revision = revision + 100 WHERE id = 'agt-2'",
        [],
    )
    .expect("hand edit of revision");
    conn.execute(
        "UPDATE resources SET updated_at = 'now' WHERE id = 'agt-3'",
        [],
    )
    .expect("an edit of another column");
    for (id, expected) in [
        ("agt-1", None),
        ("agt-2", None),
        ("agt-3", Some(&b"agt-3"[..])),
    ] {
        let row = store
            .get(scope.clone(), id.into())
            .await
            .expect("get")
            .expect("found");
        assert_eq!(row.proto.as_deref(), expected, "{id}");
    }
    let current = store
        .get(scope.clone(), "agt-2".into())
        .await
        .expect("get")
        .expect("found");
    let rewritten = store
        .replace(
            NewResource {
                proto: Some(b"again".to_vec()),
                ..resource("agt-2", "two")
            },
            current.revision,
        )
        .await
        .expect("replace");
    assert_eq!(rewritten.proto.as_deref(), Some(&b"again"[..]));
    store.close().await.expect("close");
}

/// The triggers of migration V7: moves and deletes made with the sqlite3 CLI keep listing
/// totals and `info` counts exact.
#[tokio::test]
async fn totals_stay_exact_after_hand_edits() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(&dir);
    for n in 0..4 {
        store
            .create(resource(&format!("agt-{n}"), &format!("s{n}")))
            .await
            .expect("create");
    }
    let conn = rusqlite::Connection::open(dir.path().join("nested/dir/test.db")).expect("open");
    conn.execute(
        "UPDATE resources SET org_id = 'other' WHERE id = 'agt-0'",
        [],
    )
    .expect("move by hand");
    conn.execute("DELETE FROM resources WHERE id = 'agt-1'", [])
        .expect("delete by hand");
    let page = store
        .list(ListQuery {
            scope: Scope::new("Agent", "local"),
            after_id: None,
            limit: 1,
            filters: Vec::new(),
            proto_only: false,
        })
        .await
        .expect("list");
    assert_eq!(page.total, Some(2));
    let counts = |org: &str| {
        let store = Arc::clone(&store);
        let org = org.to_string();
        async move { store.info(org).await.expect("info").counts }
    };
    assert_eq!(counts("local").await, vec![("Agent".to_string(), 2)]);
    assert_eq!(counts("other").await, vec![("Agent".to_string(), 1)]);
    store.close().await.expect("close");
}
