//! The SQLite store through its public API: group commit isolates failures, revisions grow,
//! compare-and-swap refuses stale writes, listing pages by id, and the file is private.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use stigmer_sqlite::{SqliteConfig, SqliteStore};
use stigmer_store::{
    CacheFill, JsonFilter, JsonPath, ListQuery, Mutation, NewResource, Scope, Store, StoreError,
    StoredResource,
};

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
async fn revision_is_mirrored_in_the_json_and_compare_and_swap_refuses_stale_writes() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(&dir);
    let first = store
        .create(resource("agt-1", "one"))
        .await
        .expect("create");
    assert!(
        first
            .data
            .contains(&format!(r#""revision":"{}""#, first.revision)),
        "{}",
        first.data
    );

    let second = store
        .replace(resource("agt-1", "one"), first.revision)
        .await
        .expect("replace");
    assert!(second.revision > first.revision);
    match store
        .replace(resource("agt-1", "one"), first.revision)
        .await
    {
        Err(StoreError::Conflict {
            expected, current, ..
        }) => {
            assert_eq!((expected, current), (first.revision, second.revision));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    match store.replace(resource("agt-missing", "x"), 1).await {
        Err(StoreError::NotFound { .. }) => {}
        other => panic!("expected not found, got {other:?}"),
    }
    let scope = Scope::new("Agent", "local");
    match store
        .delete(scope.clone(), "agt-1".into(), Some(first.revision))
        .await
    {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    let deleted = store
        .delete(scope.clone(), "agt-1".into(), None)
        .await
        .expect("delete");
    assert_eq!(
        deleted.revision, second.revision,
        "delete returns the resource as it was"
    );
    assert!(
        store
            .get(scope, "agt-1".into())
            .await
            .expect("get")
            .is_none()
    );

    // A delete consumed a revision, and the counter survives a reopen.
    store.close().await.expect("close");
    let store = open(&dir);
    let after = store
        .create(resource("agt-2", "two"))
        .await
        .expect("create");
    assert_eq!(after.revision, second.revision + 2);
    store.close().await.expect("close");
}

#[tokio::test]
async fn listing_pages_by_id_and_filters_on_json() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(&dir);
    for n in 0..7 {
        store
            .create(resource(&format!("agt-{n}"), &format!("s{n}")))
            .await
            .expect("create");
    }
    let scope = Scope::new("Agent", "local");
    let mut after_id = None;
    let mut seen = Vec::new();
    loop {
        let page = store
            .list(ListQuery {
                scope: scope.clone(),
                after_id: after_id.clone(),
                limit: 3,
                filters: Vec::new(),
                proto_only: false,
            })
            .await
            .expect("list");
        seen.extend(page.items.iter().map(|r| r.id.clone()));
        match page.next_after_id {
            Some(next) => after_id = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, (0..7).map(|n| format!("agt-{n}")).collect::<Vec<_>>());

    let tagged = store
        .list(ListQuery {
            scope: scope.clone(),
            after_id: None,
            limit: 10,
            filters: vec![JsonFilter::Contains {
                path: JsonPath::fields("metadata.tags"),
                value: "t-s3".into(),
            }],
            proto_only: false,
        })
        .await
        .expect("list");
    assert_eq!(tagged.items.len(), 1);
    let by_slug = store
        .list(ListQuery {
            scope,
            after_id: None,
            limit: 10,
            filters: vec![JsonFilter::Equals {
                path: JsonPath::fields("metadata.slug"),
                value: "s5".into(),
            }],
            proto_only: false,
        })
        .await
        .expect("list");
    assert_eq!(
        by_slug
            .items
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["agt-5"]
    );
    store.close().await.expect("close");
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
async fn calls_after_close_fail_as_closed() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(&dir);
    store.close().await.expect("close");
    assert!(matches!(
        store.create(resource("agt-x", "x")).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        store
            .get(Scope::new("Agent", "local"), "agt-x".into())
            .await,
        Err(StoreError::Closed)
    ));
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

#[tokio::test]
async fn the_log_answers_past_revisions_and_compaction_keeps_a_prefix_invariant() {
    use stigmer_store::{AtRevision, ChangeFilter, ChangeType, Retention};
    let dir = tempfile::tempdir().expect("dir");
    let store = open(&dir);
    let scope = Scope::new("Agent", "local");
    let old = store
        .create(resource("agt-old", "old"))
        .await
        .expect("create");
    let churn = store
        .create(resource("agt-churn", "churn"))
        .await
        .expect("create");
    let mut last = churn.clone();
    for _ in 0..20 {
        last = store
            .replace(resource("agt-churn", "churn"), last.revision)
            .await
            .expect("replace");
    }
    let all = ChangeFilter {
        org: "local".into(),
        kind: None,
        id: None,
    };
    let log = store.changes(all.clone(), 0, 100).await.expect("changes");
    assert_eq!(log.len(), 22);
    assert!(log.windows(2).all(|w| w[1].revision == w[0].revision + 1));
    assert_eq!(log[0].change_type, ChangeType::Created);
    assert_eq!(log[21].change_type, ChangeType::Updated);

    let done = store
        .compact(Retention {
            revisions: 5,
            age: std::time::Duration::ZERO,
        })
        .await
        .expect("compact");
    assert_eq!(done.compacted, last.revision - 5);
    assert_eq!(done.removed, (last.revision - 5) as u64);
    let bounds = store.log_bounds().await.expect("bounds");
    assert_eq!(
        (bounds.compacted, bounds.current),
        (last.revision - 5, last.revision)
    );
    match store.changes(all.clone(), 1, 100).await {
        Err(StoreError::Compacted { compacted, .. }) => assert_eq!(compacted, bounds.compacted),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert_eq!(
        store
            .changes(all, bounds.compacted, 100)
            .await
            .expect("kept")
            .len(),
        5
    );

    // "old" has not changed since before the compaction point: its current row still answers.
    match store
        .at_revision(scope.clone(), "agt-old".into(), bounds.current)
        .await
        .expect("at")
    {
        AtRevision::Existed { revision, .. } => assert_eq!(revision, old.revision),
        other => panic!("expected the unchanged row, got {other:?}"),
    }
    // "churn" changed at every retained revision: the log answers with that version.
    match store
        .at_revision(scope.clone(), "agt-churn".into(), bounds.compacted + 1)
        .await
        .expect("at")
    {
        AtRevision::Existed { revision, .. } => assert_eq!(revision, bounds.compacted + 1),
        other => panic!("expected a retained version, got {other:?}"),
    }
    // At the compaction point itself its state is gone.
    assert!(matches!(
        store
            .at_revision(scope.clone(), "agt-churn".into(), bounds.compacted)
            .await
            .expect("at"),
        AtRevision::OutOfRange(_)
    ));
    assert!(matches!(
        store
            .at_revision(scope, "agt-never".into(), bounds.current)
            .await
            .expect("at"),
        AtRevision::Absent
    ));
    // A second compaction with nothing to do removes nothing.
    let again = store
        .compact(Retention {
            revisions: 5,
            age: std::time::Duration::ZERO,
        })
        .await
        .expect("compact");
    assert_eq!(again.removed, 0);
    store.close().await.expect("close");
}

#[tokio::test]
async fn age_based_retention_keeps_recent_changes_whatever_their_number() {
    use stigmer_store::Retention;
    let dir = tempfile::tempdir().expect("dir");
    let store = open(&dir);
    for n in 0..10 {
        store
            .create(resource(&format!("agt-{n}"), &format!("s{n}")))
            .await
            .expect("create");
    }
    let done = store
        .compact(Retention {
            revisions: 0,
            age: std::time::Duration::from_secs(3600),
        })
        .await
        .expect("compact");
    assert_eq!(done.removed, 0, "everything is younger than an hour");
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

#[tokio::test]
async fn a_transaction_applies_all_of_its_mutations_or_none() {
    use stigmer_store::Mutation;
    let dir = tempfile::tempdir().expect("dir");
    let store = open(&dir);
    store
        .create(resource("agt-taken", "taken"))
        .await
        .expect("create");
    let failed = store
        .transact(vec![
            Mutation::Create(resource("agt-a", "a")),
            Mutation::Create(resource("agt-b", "taken")),
        ])
        .await;
    assert!(
        matches!(failed, Err(StoreError::AlreadyExists { .. })),
        "{failed:?}"
    );
    let scope = Scope::new("Agent", "local");
    assert!(
        store
            .get(scope.clone(), "agt-a".into())
            .await
            .expect("get")
            .is_none(),
        "rolled back"
    );
    assert_eq!(
        store.log_bounds().await.expect("bounds").current,
        1,
        "no revision consumed"
    );

    let done = store
        .transact(vec![
            Mutation::Create(resource("agt-a", "a")),
            Mutation::Delete {
                scope: scope.clone(),
                id: "agt-taken".into(),
                expected_revision: Some(1),
            },
        ])
        .await
        .expect("both");
    assert_eq!(done.iter().map(|r| r.revision).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(
        store.log_bounds().await.expect("bounds").current,
        3,
        "one revision each"
    );
    store.close().await.expect("close");
}

#[tokio::test]
async fn the_cached_encoding_is_kept_by_writes_and_dropped_by_hand_edits() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(&dir);
    let scope = Scope::new("Agent", "local");
    let with_proto = |id: &str, slug: &str, bytes: &[u8]| NewResource {
        proto: Some(bytes.to_vec()),
        ..resource(id, slug)
    };
    let created = store
        .create(with_proto("agt-1", "one", b"first"))
        .await
        .expect("create");
    assert_eq!(created.proto.as_deref(), Some(&b"first"[..]));
    store
        .create(with_proto("agt-2", "two", b"second"))
        .await
        .expect("create");
    let replaced = store
        .replace(with_proto("agt-1", "one", b"third"), created.revision)
        .await
        .expect("replace");
    let read = store
        .get(scope.clone(), "agt-1".into())
        .await
        .expect("get")
        .expect("found");
    assert_eq!(read.proto.as_deref(), Some(&b"third"[..]));
    assert_eq!(read.revision, replaced.revision);

    // Someone repairs rows with the sqlite3 CLI: data on one, revision on the other.
    let db = dir.path().join("nested/dir/test.db");
    let conn = rusqlite::Connection::open(&db).expect("open");
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
        "UPDATE resources SET updated_at = 'now' WHERE id = 'agt-1'",
        [],
    )
    .expect("an edit of another column");
    for id in ["agt-1", "agt-2"] {
        let row = store
            .get(scope.clone(), id.into())
            .await
            .expect("get")
            .expect("found");
        assert_eq!(
            row.proto, None,
            "{id}: a hand edit must drop the cached encoding"
        );
    }
    // The next write through the store caches again.
    let current = store
        .get(scope.clone(), "agt-2".into())
        .await
        .expect("get")
        .expect("found");
    let rewritten = store
        .replace(with_proto("agt-2", "two", b"fourth"), current.revision)
        .await
        .expect("replace");
    assert_eq!(rewritten.proto.as_deref(), Some(&b"fourth"[..]));
    store.close().await.expect("close");
}

#[tokio::test]
async fn uncached_rows_are_found_in_order_and_filled_only_while_unchanged() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(&dir);
    let scope = Scope::new("Agent", "local");
    for (id, slug) in [("agt-3", "c"), ("agt-1", "a"), ("agt-2", "b")] {
        store.create(resource(id, slug)).await.expect("create");
    }
    store
        .create(NewResource {
            proto: Some(b"cached".to_vec()),
            ..resource("agt-0", "z")
        })
        .await
        .expect("create with an encoding");
    let ids = |rows: Vec<stigmer_store::StoredResource>| {
        rows.into_iter().map(|row| row.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(store.uncached(String::new(), 10).await.expect("uncached")),
        ["agt-1", "agt-2", "agt-3"],
        "every row without an encoding, in id order, and no other"
    );
    assert_eq!(
        ids(store.uncached("agt-1".into(), 1).await.expect("uncached")),
        ["agt-2"],
        "a page after an id, at most limit rows"
    );

    let rows = store.uncached(String::new(), 10).await.expect("uncached");
    // agt-2 changes after its fill was computed: that fill must not land on the new data.
    let current = store
        .get(scope.clone(), "agt-2".into())
        .await
        .expect("get")
        .expect("found");
    store
        .replace(
            NewResource {
                data: r#"{"metadata":{"id":"agt-2","slug":"b","name":"new"}}"#.into(),
                ..resource("agt-2", "b")
            },
            current.revision,
        )
        .await
        .expect("replace");
    let fills = rows
        .iter()
        .map(|row| CacheFill {
            id: row.id.clone(),
            data: row.data.clone(),
            proto: format!("enc-{}", row.id).into_bytes(),
        })
        .collect();
    let revision_before = store.info("local".into()).await.expect("info").bounds;
    assert_eq!(store.fill_read_cache(fills).await.expect("fill"), 2);
    for (id, expected) in [
        ("agt-1", Some(&b"enc-agt-1"[..])),
        ("agt-2", None),
        ("agt-3", Some(&b"enc-agt-3"[..])),
        ("agt-0", Some(&b"cached"[..])),
    ] {
        let row = store
            .get(scope.clone(), id.into())
            .await
            .expect("get")
            .expect("found");
        assert_eq!(row.proto.as_deref(), expected, "{id}");
    }
    assert_eq!(
        store.info("local".into()).await.expect("info").bounds,
        revision_before,
        "a fill is not a change: no revision, no change-log entry"
    );
    assert_eq!(
        ids(store.uncached(String::new(), 10).await.expect("uncached")),
        ["agt-2"]
    );
    store.close().await.expect("close");
}

#[tokio::test]
async fn listings_know_their_total_without_counting_rows_even_after_hand_edits() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(&dir);
    for n in 0..5 {
        store
            .create(resource(&format!("agt-{n}"), &format!("s{n}")))
            .await
            .expect("create");
    }
    store
        .create(NewResource {
            scope: Scope::new("Agent", "other"),
            ..resource("agt-x", "x")
        })
        .await
        .expect("create in another org");
    let deleted = store
        .delete(Scope::new("Agent", "local"), "agt-4".into(), None)
        .await
        .expect("delete");
    assert_eq!(deleted.id, "agt-4");
    let page = |after_id: Option<&str>, limit: usize, filters: Vec<JsonFilter>| {
        let store = Arc::clone(&store);
        let after_id = after_id.map(str::to_string);
        async move {
            store
                .list(ListQuery {
                    scope: Scope::new("Agent", "local"),
                    after_id,
                    limit,
                    filters,
                    proto_only: false,
                })
                .await
                .expect("list")
        }
    };
    assert_eq!(page(None, 2, vec![]).await.total, Some(4));
    assert_eq!(page(Some("agt-1"), 2, vec![]).await.total, Some(4));
    let slug_is = |slug: &str| {
        vec![JsonFilter::Equals {
            path: JsonPath::fields("metadata.slug"),
            value: slug.into(),
        }]
    };
    assert_eq!(
        page(None, 10, slug_is("s1")).await.total,
        Some(1),
        "a filtered listing on one page knows its size"
    );
    assert_eq!(
        page(Some("agt-0"), 10, slug_is("s1")).await.total,
        None,
        "a later page of a filtered listing does not"
    );
    let two_slugs = vec![JsonFilter::In {
        path: JsonPath::fields("metadata.slug"),
        values: vec!["s1".into(), "s2".into()],
    }];
    assert_eq!(
        page(None, 1, two_slugs).await.total,
        None,
        "nor a first page that is not the last"
    );

    // Moves and deletes made with the sqlite3 CLI keep the totals exact.
    let conn = rusqlite::Connection::open(dir.path().join("nested/dir/test.db")).expect("open");
    conn.execute(
        "UPDATE resources SET org_id = 'other' WHERE id = 'agt-0'",
        [],
    )
    .expect("move by hand");
    conn.execute("DELETE FROM resources WHERE id = 'agt-1'", [])
        .expect("delete by hand");
    assert_eq!(page(None, 2, vec![]).await.total, Some(2));
    let counts = |org: &str| {
        let store = Arc::clone(&store);
        let org = org.to_string();
        async move { store.info(org).await.expect("info").counts }
    };
    assert_eq!(counts("local").await, vec![("Agent".to_string(), 2)]);
    assert_eq!(counts("other").await, vec![("Agent".to_string(), 2)]);
    assert_eq!(counts("nobody").await, vec![]);
    store.close().await.expect("close");
}
