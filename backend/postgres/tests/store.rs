//! What is PostgreSQL's own in the store (the shared behaviour is in the conformance suite and
//! the parity test): group commit proven from the writer's counters, the schema as psql users
//! see and edit it, and connections given back clean.

mod common;

use std::sync::Arc;
use std::time::Duration;

use stigmer_postgres::PostgresStore;
use stigmer_store::{
    ChangeFilter, JsonFilter, JsonPath, ListQuery, Mutation, NewResource, Retention, Scope, Store,
    StoreError,
};

/// Waits, without sleeping long, until the writer holds `committing` writes and `queued` more wait.
async fn writer_reaches(store: &PostgresStore, committing: u64, queued: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = store.stats();
        if stats.committing == committing && stats.queued == queued {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never held {committing} with {queued} queued: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Written,
    SlugTaken,
    Stale,
}

/// Group commit, proven from the writer's counters: 199 writes queued behind a transaction
/// that waits for the revision lock (held by psql) share the next transactions, 64 at a time,
/// none is answered before its transaction commits, and the ones that fail (a taken slug, a
/// stale revision, a pair whose second half fails) sink none of the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_writes_in_a_shared_transaction_sink_none_of_the_others() {
    let db = common::fresh_database().await;
    let store = db.open().await;
    let old = store
        .create(common::resource("agt-old", "old"))
        .await
        .expect("create");
    let before = store.info("local".into()).await.expect("info");
    let writes: Vec<(Expect, Vec<Mutation>)> = (0..200)
        .map(|i| {
            let fresh = common::resource(&format!("agt-new-{i:03}"), &format!("new{i}"));
            match i % 4 {
                0 => (Expect::Written, vec![Mutation::Create(fresh)]),
                1 => (
                    Expect::SlugTaken,
                    vec![Mutation::Create(common::resource(
                        &format!("agt-dup-{i:03}"),
                        "old",
                    ))],
                ),
                2 => (
                    Expect::Stale,
                    vec![Mutation::Replace {
                        resource: common::resource("agt-old", "old"),
                        expected_revision: old.revision - 1,
                    }],
                ),
                _ => (
                    Expect::SlugTaken,
                    vec![
                        Mutation::Create(fresh),
                        Mutation::Create(common::resource(&format!("agt-dup-{i:03}"), "old")),
                    ],
                ),
            }
        })
        .collect();

    // psql holds the revision row: the writer's first transaction waits on it, and every
    // other write queues up behind that one.
    let mut outsider = db.client().await;
    let lock = outsider.transaction().await.expect("begin");
    lock.execute(
        "SELECT value FROM store_meta WHERE key = 'revision' FOR UPDATE",
        &[],
    )
    .await
    .expect("lock the revision row");
    let submit = |mutations: Vec<Mutation>| {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.transact(mutations).await })
    };
    let mut tasks = vec![submit(writes[0].1.clone())];
    writer_reaches(&store, 1, 0).await;
    tasks.extend(writes[1..].iter().map(|(_, m)| submit(m.clone())));
    writer_reaches(&store, 1, writes.len() - 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tasks.iter().all(|task| !task.is_finished()),
        "a write was answered while its transaction could not commit"
    );
    lock.commit().await.expect("release the lock");

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
        transactions,
        1 + 199_u64.div_ceil(64),
        "the 199 queued writes share transactions of 64: {written} writes took {transactions}"
    );
    revisions.sort_unstable();
    let first = before.bounds.current + 1;
    assert_eq!(
        revisions,
        (first..first + 50).collect::<Vec<_>>(),
        "each of the 50 written has its own revision; the failed took none"
    );
    let page = store
        .list(ListQuery {
            scope: Scope::new("Agent", "local"),
            after_id: None,
            limit: 1000,
            filters: vec![],
            proto_only: false,
        })
        .await
        .expect("list");
    assert_eq!(page.total, Some(51), "the old one and the 50 created");
    assert!(
        page.items.iter().all(|row| !row.id.starts_with("agt-dup")),
        "no half of a failed pair was kept"
    );
    store.close().await.expect("close");
}

/// A lock held elsewhere for longer than `lock_timeout` (a psql session left open on the
/// revision row) fails the waiting writes as Unavailable instead of hanging them; once it is
/// released, writes go through again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_elsewhere_fails_writes_as_unavailable_after_the_lock_timeout() {
    let db = common::fresh_database().await;
    let store = Arc::new(
        PostgresStore::open(&stigmer_postgres::PostgresConfig {
            lock_timeout: Duration::from_millis(300),
            ..db.config()
        })
        .await
        .expect("open"),
    );
    let mut outsider = db.client().await;
    let lock = outsider.transaction().await.expect("begin");
    lock.execute(
        "SELECT value FROM store_meta WHERE key = 'revision' FOR UPDATE",
        &[],
    )
    .await
    .expect("lock the revision row");
    let started = std::time::Instant::now();
    match store.create(common::resource("agt-1", "one")).await {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains("lock timeout"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    lock.rollback().await.expect("release");
    let created = store
        .create(common::resource("agt-1", "one"))
        .await
        .expect("create once the lock is gone");
    assert_eq!(created.revision, 1);
    store.close().await.expect("close");
}

/// The table as psql users see it: jsonb documents they can query by path, with the revision
/// mirrored as a string, and constraints the database enforces whoever writes.
#[tokio::test]
async fn psql_users_query_documents_as_jsonb_and_meet_the_same_constraints() {
    let db = common::fresh_database().await;
    let store = db.open().await;
    store
        .create(NewResource {
            data: r#"{"metadata":{"id":"agt-1","name":"Alpha","labels":{"app":"web"}},"spec":{"n":1}}"#.into(),
            ..common::resource("agt-1", "alpha")
        })
        .await
        .expect("create");
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT data->'metadata'->>'name', data->'metadata'->>'revision', \
                    data #>> '{metadata,labels,app}', pg_typeof(data)::text, pg_typeof(proto)::text \
             FROM resources WHERE id = 'agt-1'",
            &[],
        )
        .await
        .expect("query");
    let columns: (String, String, String, String, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert_eq!(
        columns,
        (
            "Alpha".into(),
            "1".into(),
            "web".into(),
            "jsonb".into(),
            "bytea".into()
        )
    );
    let duplicate = client
        .execute(
            "INSERT INTO resources (id, kind, org_id, slug, revision, data) \
             VALUES ('agt-2', 'Agent', 'local', 'alpha', 9, '{}')",
            &[],
        )
        .await;
    let err = duplicate.expect_err("a second slug in one kind and org");
    assert_eq!(
        err.as_db_error().and_then(|db| db.constraint()),
        Some("resources_kind_org_slug")
    );
    store.close().await.expect("close");
}

/// Edits made in psql behind the store's back: a change to data, id or revision drops the
/// cached encoding (reads then decode `data`), other columns keep it; moves, deletes and
/// inserts keep the counts lists and info report exact.
#[tokio::test]
async fn hand_edits_drop_the_cached_encoding_and_keep_the_counts() {
    let db = common::fresh_database().await;
    let store = db.open().await;
    let scope = Scope::new("Agent", "local");
    for (id, slug) in [("agt-1", "one"), ("agt-2", "two"), ("agt-3", "three")] {
        store
            .create(NewResource {
                proto: Some(format!("enc-{id}").into_bytes()),
                ..common::resource(id, slug)
            })
            .await
            .expect("create");
    }
    db.sql(
        "UPDATE resources SET data = jsonb_set(data, '{metadata,name}', '\"fixed\"') WHERE id = 'agt-1'; \
         UPDATE resources SET revision = revision + 100 WHERE id = 'agt-2'; \
         UPDATE resources SET updated_at = now() WHERE id = 'agt-3';",
    )
    .await;
    for (id, cached) in [("agt-1", false), ("agt-2", false), ("agt-3", true)] {
        let row = store
            .get(scope.clone(), id.into())
            .await
            .expect("get")
            .expect("found");
        assert_eq!(row.proto.is_some(), cached, "{id}");
    }
    let uncached = store.uncached(String::new(), 10).await.expect("uncached");
    assert_eq!(
        uncached.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["agt-1", "agt-2"]
    );

    db.sql(
        "UPDATE resources SET org_id = 'other' WHERE id = 'agt-1'; \
         DELETE FROM resources WHERE id = 'agt-2'; \
         INSERT INTO resources (id, kind, org_id, slug, revision, data) \
         VALUES ('wfl-9', 'Workflow', 'local', 'nine', 3, '{\"metadata\":{}}');",
    )
    .await;
    let total = store
        .list(ListQuery {
            scope: scope.clone(),
            after_id: None,
            limit: 1,
            filters: vec![],
            proto_only: false,
        })
        .await
        .expect("list")
        .total;
    assert_eq!(total, Some(1));
    let counts = |org: &str| {
        let store = Arc::clone(&store);
        let org = org.to_string();
        async move { store.info(org).await.expect("info").counts }
    };
    assert_eq!(
        counts("local").await,
        vec![("Agent".to_string(), 1), ("Workflow".to_string(), 1)]
    );
    assert_eq!(counts("other").await, vec![("Agent".to_string(), 1)]);
    store.close().await.expect("close");
}

/// Age removes as well as keeps: changes older than the age go, a prefix at a time (their
/// commit times are moved back by hand, as a clock would).
#[tokio::test]
async fn age_based_retention_removes_old_changes_as_a_prefix() {
    let db = common::fresh_database().await;
    let store = db.open().await;
    for n in 0..10 {
        store
            .create(common::resource(&format!("agt-{n}"), &format!("s{n}")))
            .await
            .expect("create");
    }
    // Revisions 1-6 are old; so is 8, but 7 is recent, so the prefix ends at 6.
    db.sql(
        "UPDATE changes SET committed_at = now() - interval '2 hours' \
         WHERE revision <= 6 OR revision = 8",
    )
    .await;
    let hour = Retention {
        revisions: 0,
        age: Duration::from_secs(3600),
    };
    let done = store.compact(hour).await.expect("compact");
    assert_eq!((done.removed, done.compacted), (6, 6));
    assert_eq!(store.log_bounds().await.expect("bounds").compacted, 6);
    assert_eq!(store.compact(hour).await.expect("compact").removed, 0);
    store.close().await.expect("close");
}

/// A watch whose client went away mid-snapshot drops its snapshot unfinished: the connection
/// goes back to the pool outside any transaction (an open one would hold back vacuum), and the
/// next snapshot works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_snapshot_ends_its_transaction() {
    let db = common::fresh_database().await;
    let store = db.open().await;
    for n in 0..5 {
        store
            .create(common::resource(&format!("agt-{n}"), &format!("s{n}")))
            .await
            .expect("create");
    }
    let all = ChangeFilter {
        org: "local".into(),
        kind: None,
        id: None,
    };
    let client = db.client().await;
    let in_transaction = async || -> i64 {
        client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
                &[],
            )
            .await
            .expect("activity")
            .get(0)
    };
    let mut snapshot = store.snapshot(all.clone()).await.expect("snapshot");
    assert_eq!(snapshot.next_page(2).await.expect("page").len(), 2);
    assert_eq!(
        in_transaction().await,
        1,
        "the snapshot holds its transaction"
    );
    drop(snapshot);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while in_transaction().await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned snapshot's transaction is still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = store.snapshot(all).await.expect("snapshot");
    assert_eq!(again.next_page(10).await.expect("page").len(), 5);
    assert!(again.next_page(10).await.expect("page").is_empty());
    assert_eq!(
        in_transaction().await,
        0,
        "a finished snapshot ends its transaction"
    );
    store.close().await.expect("close");
}

/// Filters bind label keys and values as parameters: quotes and SQL in them are data.
#[tokio::test]
async fn filter_keys_and_values_are_data_not_sql() {
    let db = common::fresh_database().await;
    let store = db.open().await;
    store
        .create(NewResource {
            data: r#"{"metadata":{"labels":{"it's":"a'); DROP TABLE resources; --"}}}"#.into(),
            ..common::resource("agt-1", "one")
        })
        .await
        .expect("create");
    let page = store
        .list(ListQuery {
            scope: Scope::new("Agent", "local"),
            after_id: None,
            limit: 10,
            filters: vec![JsonFilter::Equals {
                path: JsonPath::new(["metadata", "labels", "it's"]),
                value: "a'); DROP TABLE resources; --".into(),
            }],
            proto_only: false,
        })
        .await
        .expect("list");
    assert_eq!(page.items.len(), 1);
    store.close().await.expect("close");
}
