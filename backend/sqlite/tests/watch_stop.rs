//! A watch told to stop (the server is shutting down) ends with `WatchStopped` naming the
//! revision to watch again from: the last one it handed over, or none while its snapshot was
//! incomplete, since resuming from the snapshot's revision would skip what it had not sent.

mod common;

use common::create;

use std::sync::Arc;
use std::time::Duration;

use stigmer_sqlite::{SqliteConfig, SqliteStore};
use stigmer_store::{ChangeFilter, Store, StoreError, StoreResult, WatchItem, WatchOptions};
use tokio::sync::{mpsc, watch};

const DEADLINE: Duration = Duration::from_secs(20);

async fn next(items: &mut mpsc::Receiver<StoreResult<WatchItem>>) -> StoreResult<WatchItem> {
    tokio::time::timeout(DEADLINE, items.recv())
        .await
        .expect("an item in time")
        .expect("an item")
}

fn watch_from(
    store: &Arc<dyn Store>,
    since_revision: i64,
    stop: &watch::Sender<bool>,
) -> mpsc::Receiver<StoreResult<WatchItem>> {
    stigmer_store::watch(
        Arc::clone(store),
        WatchOptions {
            filter: ChangeFilter {
                org: "local".into(),
                kind: Some("Agent".into()),
                id: None,
            },
            since_revision,
            // One row a step and one item of room: the snapshot is still being read when
            // the watch is stopped.
            page_size: 1,
            buffer: 1,
            stop: Some(stop.subscribe()),
        },
    )
}

/// Fails when a watch from a snapshot resumes from anything while the snapshot is incomplete
/// (`resume_after` starting at `Some(since_revision)`: "WatchStopped { resume_after: Some(0) }"),
/// or when it is not kept up to date as the log's changes go out ("Some(3)").
#[tokio::test]
async fn a_stopped_watch_names_the_revision_to_resume_from() {
    let dir = tempfile::tempdir().expect("dir");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&SqliteConfig::new(dir.path().join("w.db"))).expect("open"));
    for n in 0..3 {
        store.transact(create(n)).await.expect("write");
    }

    let (stop, _) = watch::channel(false);
    let mut items = watch_from(&store, 0, &stop);
    assert!(matches!(
        next(&mut items).await,
        Ok(WatchItem::Snapshot { .. })
    ));
    stop.send_replace(true);
    let ended = loop {
        match next(&mut items).await {
            Ok(WatchItem::Snapshot { .. }) => {}
            other => break other,
        }
    };
    assert!(
        matches!(ended, Err(StoreError::WatchStopped { resume_after: None })),
        "{ended:?}"
    );

    // Written before the watch starts, so that it comes from the log, not live.
    store.transact(create(3)).await.expect("write");
    let (stop, _) = watch::channel(false);
    let mut items = watch_from(&store, 3, &stop);
    match next(&mut items).await {
        Ok(WatchItem::Change(change)) => assert_eq!(change.revision, 4),
        other => panic!("{other:?}"),
    }
    stop.send_replace(true);
    let ended = next(&mut items).await;
    assert!(
        matches!(
            ended,
            Err(StoreError::WatchStopped {
                resume_after: Some(4)
            })
        ),
        "{ended:?}"
    );
    assert!(
        ended
            .expect_err("stopped")
            .to_string()
            .contains("watch again from revision 4")
    );
    store.close().await.expect("close");
}
