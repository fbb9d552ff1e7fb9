//! Several stores on one database, as server replicas: watchers on one see the writes made
//! through the others exactly once and in order, the database alone decides which of two
//! creates of a slug wins, all replicas share one gap-free revision order, and start-up
//! migrations and compactions may run on all of them at once.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use stigmer_postgres::{PostgresConfig, PostgresStore};
use stigmer_store::{
    ChangeFilter, ChangeType, NewResource, Retention, Scope, Store, StoreError, WatchItem,
    WatchOptions, watch,
};
use tokio::sync::broadcast::error::TryRecvError;

const DEADLINE: Duration = Duration::from_secs(15);

fn all_of(org: &str) -> ChangeFilter {
    ChangeFilter {
        org: org.into(),
        kind: None,
        id: None,
    }
}

async fn open_with(config: PostgresConfig) -> Arc<PostgresStore> {
    Arc::new(PostgresStore::open(&config).await.expect("open"))
}

/// Writes through `store`: creates, replaces and deletes, one after the other.
async fn churn(store: &PostgresStore, prefix: &str, n: usize) {
    let scope = Scope::new("Agent", "local");
    for i in 0..n {
        let id = format!("agt-{prefix}-{i:03}");
        let created = store
            .create(common::resource(&id, &format!("{prefix}-{i}")))
            .await
            .expect("create");
        if i % 3 == 0 {
            store
                .replace(
                    NewResource {
                        data: format!(r#"{{"metadata":{{"id":"{id}"}},"spec":{{"i":{i}}}}}"#),
                        ..common::resource(&id, &format!("{prefix}-{i}"))
                    },
                    created.revision,
                )
                .await
                .expect("replace");
        }
        if i % 5 == 0 {
            store
                .delete(scope.clone(), id.clone(), None)
                .await
                .expect("delete");
        }
    }
}

/// Reads a watch until it has delivered `last`, failing on anything out of order or repeated.
async fn watch_until(
    items: &mut tokio::sync::mpsc::Receiver<stigmer_store::StoreResult<WatchItem>>,
    last: i64,
) -> Vec<(i64, ChangeType, String)> {
    let mut seen = Vec::new();
    let mut previous = 0;
    while previous < last {
        let item = tokio::time::timeout(DEADLINE, items.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no change after revision {previous} within {DEADLINE:?}; waiting for {last}"
                )
            })
            .expect("the watch ended")
            .expect("a watch item");
        let WatchItem::Change(change) = item else {
            panic!("a snapshot item after the snapshot: {item:?}");
        };
        assert!(
            change.revision > previous,
            "revision {} after {previous}: out of order or repeated",
            change.revision
        );
        previous = change.revision;
        seen.push((change.revision, change.change_type, change.id.clone()));
    }
    seen
}

/// The watcher's replica hears of the other replica's writes by notification: its own poll is
/// set to a minute, longer than the test may take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_one_replica_sees_writes_through_another_once_and_in_order() {
    let db = common::fresh_database().await;
    let watcher = open_with(PostgresConfig {
        poll_interval: Duration::from_secs(60),
        ..db.config()
    })
    .await;
    let writer = db.open().await;
    let mut items = watch(
        Arc::clone(&watcher) as Arc<dyn Store>,
        WatchOptions {
            filter: all_of("local"),
            since_revision: 0,
            until_revision: None,
            page_size: 50,
            queued_per_watcher: 4096,
            stop: None,
        },
    );
    // The snapshot is empty: nothing arrives until the first write.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), items.recv())
            .await
            .is_err()
    );
    churn(&writer, "b", 60).await;
    let last = writer.log_bounds().await.expect("bounds").current;
    assert_eq!(last, 60 + 20 + 12);
    let seen = watch_until(&mut items, last).await;
    let seen_revisions: Vec<i64> = seen.iter().map(|(revision, _, _)| *revision).collect();
    assert_eq!(
        seen_revisions,
        (1..=last).collect::<Vec<_>>(),
        "every write of the other replica, once, in order"
    );
    let log = writer.changes(all_of("local"), 0, 1000).await.expect("log");
    assert_eq!(
        seen,
        log.iter()
            .map(|c| (c.revision, c.change_type, c.id.clone()))
            .collect::<Vec<_>>(),
        "the watch delivered exactly the log"
    );
    // Nothing more arrives: no repeats after the end either.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), items.recv())
            .await
            .is_err()
    );
    writer.close().await.expect("close");
    watcher.close().await.expect("close");
}

/// A replica that does not LISTEN (behind a pooler that cannot) still hears of the other
/// replica's writes, by polling the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notifications_the_poll_delivers_other_replicas_writes() {
    let db = common::fresh_database().await;
    let watcher = open_with(PostgresConfig {
        listen: false,
        poll_interval: Duration::from_millis(200),
        ..db.config()
    })
    .await;
    let writer = db.open().await;
    let mut live = watcher.subscribe();
    let created = writer
        .create(common::resource("agt-1", "one"))
        .await
        .expect("create");
    let started = std::time::Instant::now();
    let change = tokio::time::timeout(Duration::from_secs(3), live.recv())
        .await
        .expect("the poll delivered the change")
        .expect("a change");
    assert_eq!(
        (change.revision, change.id.as_str()),
        (created.revision, "agt-1")
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    writer.close().await.expect("close");
    watcher.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_creates_of_one_slug_over_two_replicas_have_one_winner() {
    let db = common::fresh_database().await;
    let replicas = [db.open().await, db.open().await];
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = Arc::clone(&replicas[i % 2]);
            tokio::spawn(async move {
                store
                    .create(common::resource(&format!("agt-{i:03}"), "contested"))
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut refused = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(row) => winners.push(row.id),
            Err(StoreError::AlreadyExists { slug, .. }) => {
                assert_eq!(slug, "contested");
                refused += 1;
            }
            Err(other) => panic!("neither a win nor AlreadyExists: {other:?}"),
        }
    }
    assert_eq!((winners.len(), refused), (1, 199), "winners: {winners:?}");
    let client = db.client().await;
    let rows: i64 = client
        .query_one(
            "SELECT count(*) FROM resources WHERE slug = 'contested'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 1);
    for store in &replicas {
        let bounds = store.log_bounds().await.expect("bounds");
        assert_eq!(
            bounds.current, 1,
            "the 199 refused creates took no revision"
        );
        store.close().await.expect("close");
    }
}

/// Writers on two replicas at once: every subscriber, on either replica, sees revisions
/// 1, 2, 3, … with none missing and none repeated, and each caller got one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_two_replicas_share_one_gap_free_revision_order() {
    let db = common::fresh_database().await;
    let replicas = [db.open().await, db.open().await];
    let mut subscribers = [
        replicas[0].subscribe(),
        replicas[1].subscribe(),
        replicas[0].subscribe(),
    ];
    let writers_per_replica = 8;
    let writes_per_writer = 25;
    let tasks: Vec<_> = (0..writers_per_replica * 2)
        .map(|w| {
            let store = Arc::clone(&replicas[w % 2]);
            tokio::spawn(async move {
                let mut revisions = Vec::new();
                for i in 0..writes_per_writer {
                    let id = format!("agt-w{w:02}-{i:02}");
                    let created = store
                        .create(common::resource(&id, &format!("w{w}-{i}")))
                        .await
                        .expect("create");
                    revisions.push(created.revision);
                    if i % 4 == 0 {
                        let replaced = store
                            .replace(
                                common::resource(&id, &format!("w{w}-{i}")),
                                created.revision,
                            )
                            .await
                            .expect("replace");
                        revisions.push(replaced.revision);
                    }
                }
                revisions
            })
        })
        .collect();
    let mut answered = Vec::new();
    for task in tasks {
        answered.extend(task.await.expect("writer"));
    }
    let total = i64::try_from(answered.len()).expect("count");
    let unique: BTreeSet<i64> = answered.iter().copied().collect();
    assert_eq!(
        unique,
        (1..=total).collect::<BTreeSet<_>>(),
        "every write took its own revision, with no gaps"
    );
    for (n, subscriber) in subscribers.iter_mut().enumerate() {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while seen.last().copied().unwrap_or(0) < total {
            match subscriber.try_recv() {
                Ok(change) => seen.push(change.revision),
                Err(TryRecvError::Empty) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "subscriber {n} stopped at {:?} of {total}",
                        seen.last()
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(other) => panic!("subscriber {n}: {other:?}"),
            }
        }
        assert_eq!(
            seen,
            (1..=total).collect::<Vec<_>>(),
            "subscriber {n} saw a gap, a repeat or a reordering"
        );
    }
    let stats: Vec<_> = replicas.iter().map(|store| store.stats()).collect();
    for store in &replicas {
        store.close().await.expect("close");
    }
    let writes: u64 = stats.iter().map(|s| s.writes).sum();
    assert_eq!(writes, answered.len() as u64, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_at_once_apply_each_migration_once() {
    let db = common::fresh_database().await;
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let config = db.config();
            tokio::spawn(async move { PostgresStore::open(&config).await })
        })
        .collect();
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await.expect("task").expect("every replica starts"));
    }
    let client = db.client().await;
    let applied: Vec<i32> = client
        .query(
            "SELECT version FROM refinery_schema_history ORDER BY version",
            &[],
        )
        .await
        .expect("history")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let unique: BTreeSet<i32> = applied.iter().copied().collect();
    assert_eq!(
        applied.len(),
        unique.len(),
        "a migration ran twice: {applied:?}"
    );
    assert!(applied.contains(&1));
    for store in stores {
        store.close().await.expect("close");
    }
}

/// Compactions on two replicas at once remove the same prefix once between them, and the
/// compaction point never moves backwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_compactions_on_two_replicas_remove_a_prefix_once() {
    let db = common::fresh_database().await;
    let replicas = [db.open().await, db.open().await];
    for i in 0..2500 {
        replicas[i % 2]
            .create(common::resource(&format!("agt-{i:04}"), &format!("s{i}")))
            .await
            .expect("create");
    }
    let retention = Retention {
        revisions: 100,
        age: Duration::ZERO,
    };
    let (a, b) = tokio::join!(
        replicas[0].compact(retention),
        replicas[1].compact(retention)
    );
    let (a, b) = (a.expect("compact"), b.expect("compact"));
    assert_eq!(a.removed + b.removed, 2400, "{a:?} {b:?}");
    assert_eq!((a.compacted, b.compacted), (2400, 2400));
    for store in &replicas {
        let bounds = store.log_bounds().await.expect("bounds");
        assert_eq!((bounds.compacted, bounds.current), (2400, 2500));
        let kept = store
            .changes(all_of("local"), 2400, 1000)
            .await
            .expect("kept");
        assert_eq!(kept.len(), 100);
        assert!(matches!(
            store.changes(all_of("local"), 2399, 10).await,
            Err(StoreError::Compacted {
                compacted: 2400,
                ..
            })
        ));
    }
    for store in &replicas {
        store.close().await.expect("close");
    }
}
