//! Snapshots and watches (`stigmer_store::watch` over the store's subscribe, changes and
//! snapshot): a snapshot then live changes, replays, no gap and no duplicate under concurrent
//! writers, and stopping.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::json;
use stigmer_store::{
    ChangeFilter, ChangeType, Mutation, Scope, Store, StoreError, StoredResource, WatchItem,
    WatchOptions,
};
use tokio::sync::mpsc;

use crate::Harness;
use crate::support::{
    KIND, ORG, OTHER_KIND, OTHER_ORG, agent, agents, cached, current_revision, get, ids, next,
    next_change, parse, resource_in, scope, watch, with, within,
};

/// A snapshot reads the current resources that match its filter as of `revision()` (the
/// current revision when it was taken), page by page in id order, whatever is written
/// meanwhile; an empty page ends it.
pub async fn snapshot_reads_at_one_revision(harness: &dyn Harness) {
    let store = harness.open().await;
    let mut before = Vec::new();
    for n in 1..=5 {
        before.push(
            store
                .create(agent(&format!("agt-{n}"), &format!("s{n}")))
                .await
                .expect("create"),
        );
    }
    for (scope, id) in [
        (Scope::new(KIND, OTHER_ORG), "agt-0"),
        (Scope::new(OTHER_KIND, ORG), "agt-00"),
    ] {
        store
            .create(resource_in(scope, id, "x", json!({})))
            .await
            .expect("create elsewhere");
    }
    let revision = current_revision(store.as_ref()).await;
    let mut snapshot = store.snapshot(agents()).await.expect("snapshot");
    assert_eq!(snapshot.revision(), revision);

    // Everything written from now on is after the snapshot's revision.
    store.create(agent("agt-6", "s6")).await.expect("create");
    store
        .delete(scope(), "agt-1".into(), None)
        .await
        .expect("delete");
    store
        .replace(with(agent("agt-2", "s2"), json!({"changed": true})), 2)
        .await
        .expect("replace");

    let mut read: Vec<StoredResource> = Vec::new();
    let mut pages = 0;
    loop {
        let page = snapshot.next_page(2).await.expect("next_page");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2, "at most the limit: {}", page.len());
        pages += 1;
        read.extend(page);
    }
    assert_eq!(pages, 3);
    assert_eq!(
        read, before,
        "the resources as they were at the snapshot's revision"
    );
    assert!(
        snapshot.next_page(2).await.expect("next_page").is_empty(),
        "a finished snapshot stays finished"
    );

    let one = ChangeFilter {
        id: Some("agt-3".into()),
        ..agents()
    };
    let mut snapshot = store.snapshot(one).await.expect("snapshot");
    assert_eq!(snapshot.revision(), revision + 3);
    let page = snapshot.next_page(10).await.expect("next_page");
    assert_eq!(ids(&page), ["agt-3"], "a snapshot of one id");
    store.close().await.expect("close");
}

/// A watch from revision 0 first sends every current match, in id order, each tagged with the
/// snapshot's revision, then every later matching change live, in revision order, and nothing
/// that does not match its org and kind.
pub async fn watch_sends_a_snapshot_then_live_changes(harness: &dyn Harness) {
    let store = harness.open().await;
    for (id, slug) in [("agt-3", "c"), ("agt-1", "a"), ("agt-2", "b")] {
        store.create(agent(id, slug)).await.expect("create");
    }
    store
        .delete(scope(), "agt-2".into(), None)
        .await
        .expect("delete");
    let three = store
        .replace(with(agent("agt-3", "c"), json!({"v": 2})), 1)
        .await
        .expect("replace");
    for (scope, id) in [
        (Scope::new(KIND, OTHER_ORG), "agt-0"),
        (Scope::new(OTHER_KIND, ORG), "agt-00"),
    ] {
        store
            .create(resource_in(scope, id, "x", json!({})))
            .await
            .expect("create elsewhere");
    }
    let at = current_revision(store.as_ref()).await;

    let mut items = watch(&store, agents(), 0);
    for id in ["agt-1", "agt-3"] {
        match next(&mut items).await {
            Ok(WatchItem::Snapshot { revision, resource }) => {
                assert_eq!(revision, at, "snapshot items carry the snapshot's revision");
                assert_eq!(
                    Some(resource),
                    get(store.as_ref(), scope(), id).await,
                    "the snapshot item of {id} is its current row"
                );
            }
            other => panic!("expected the snapshot of {id}, got {other:?}"),
        }
    }

    let one = get(store.as_ref(), scope(), "agt-1").await.expect("agt-1");
    let one = store
        .replace(with(agent("agt-1", "a"), json!({"v": 2})), one.revision)
        .await
        .expect("replace");
    store
        .create(resource_in(
            Scope::new(KIND, OTHER_ORG),
            "agt-9",
            "y",
            json!({}),
        ))
        .await
        .expect("create elsewhere");
    store
        .create(resource_in(
            Scope::new(OTHER_KIND, ORG),
            "agt-99",
            "y",
            json!({}),
        ))
        .await
        .expect("create elsewhere");
    store
        .delete(scope(), "agt-3".into(), None)
        .await
        .expect("delete");
    let four = store.create(agent("agt-4", "d")).await.expect("create");

    match next(&mut items).await {
        Ok(WatchItem::Change(change)) => {
            assert_eq!(
                (change.revision, change.change_type, change.id.as_str()),
                (one.revision, ChangeType::Updated, "agt-1")
            );
            assert_eq!(change.scope, scope());
            assert_eq!(parse(&change.data), parse(&one.data));
        }
        other => panic!("expected the update of agt-1, got {other:?}"),
    }
    match next(&mut items).await {
        Ok(WatchItem::Change(change)) => {
            assert_eq!(
                (change.revision, change.change_type, change.id.as_str()),
                (one.revision + 3, ChangeType::Deleted, "agt-3"),
                "changes in other orgs and kinds are not sent"
            );
            assert_eq!(
                parse(&change.data),
                parse(&three.data),
                "a delete carries the resource as it was"
            );
        }
        other => panic!("expected the deletion of agt-3, got {other:?}"),
    }
    assert_eq!(
        next_change(&mut items).await,
        (four.revision, ChangeType::Created, "agt-4".to_string())
    );
    store.close().await.expect("close");
}

/// A watch from revision R sends no snapshot: first every matching change after R from the
/// log, then live ones, with none missed or repeated between the two. A filter on one id sees
/// only that resource.
pub async fn watch_replays_from_a_revision(harness: &dyn Harness) {
    let store = harness.open().await;
    store.create(agent("agt-1", "a")).await.expect("create"); // 1
    store.create(agent("agt-2", "b")).await.expect("create"); // 2
    store
        .replace(with(agent("agt-1", "a"), json!({"v": 2})), 1)
        .await
        .expect("replace"); // 3
    store
        .delete(scope(), "agt-2".into(), None)
        .await
        .expect("delete"); // 4
    store
        .create(resource_in(
            Scope::new(KIND, OTHER_ORG),
            "agt-x",
            "x",
            json!({}),
        ))
        .await
        .expect("create elsewhere"); // 5
    store.create(agent("agt-3", "c")).await.expect("create"); // 6

    let mut items = watch(&store, agents(), 2);
    let mut from_now = watch(&store, agents(), 6);
    let mut only_one = watch(
        &store,
        ChangeFilter {
            id: Some("agt-1".into()),
            ..agents()
        },
        0,
    );
    let change = |revision, change_type, id: &str| (revision, change_type, id.to_string());
    assert_eq!(
        next_change(&mut items).await,
        change(3, ChangeType::Updated, "agt-1")
    );
    assert_eq!(
        next_change(&mut items).await,
        change(4, ChangeType::Deleted, "agt-2")
    );
    assert_eq!(
        next_change(&mut items).await,
        change(6, ChangeType::Created, "agt-3")
    );
    match next(&mut only_one).await {
        Ok(WatchItem::Snapshot { revision, resource }) => {
            assert_eq!((revision, resource.id.as_str()), (6, "agt-1"));
        }
        other => panic!("expected the snapshot of agt-1, got {other:?}"),
    }

    store.create(agent("agt-4", "d")).await.expect("create"); // 7
    let one = get(store.as_ref(), scope(), "agt-1").await.expect("agt-1");
    store
        .replace(with(agent("agt-1", "a"), json!({"v": 3})), one.revision)
        .await
        .expect("replace"); // 8
    assert_eq!(
        next_change(&mut items).await,
        change(7, ChangeType::Created, "agt-4")
    );
    assert_eq!(
        next_change(&mut items).await,
        change(8, ChangeType::Updated, "agt-1")
    );
    assert_eq!(
        next_change(&mut from_now).await,
        change(7, ChangeType::Created, "agt-4"),
        "a watch from the current revision sends only what comes after"
    );
    assert_eq!(
        next_change(&mut only_one).await,
        change(8, ChangeType::Updated, "agt-1"),
        "a watch of one id skips the others"
    );
    store.close().await.expect("close");
}

/// A watch with an upper bound delivers the matching changes up to it and then ends, without
/// an error: from the log when the bound is committed already (even when the last matching
/// change is older), live when it is not yet, and right after a snapshot read at or past it.
pub async fn watch_ends_at_its_until_revision(harness: &dyn Harness) {
    let store = harness.open().await;
    store.create(agent("agt-1", "a")).await.expect("create"); // 1
    store.create(agent("agt-2", "b")).await.expect("create"); // 2
    create_elsewhere(store.as_ref(), "agt-x").await; // 3
    store.create(agent("agt-3", "c")).await.expect("create"); // 4

    let bounded = |since_revision, until_revision| {
        stigmer_store::watch(
            Arc::clone(&store),
            WatchOptions {
                filter: agents(),
                since_revision,
                until_revision: Some(until_revision),
                page_size: 1,
                queued_per_watcher: 1,
                stop: None,
            },
        )
    };
    let revisions = |mut items: mpsc::Receiver<_>| async move {
        let mut seen = Vec::new();
        while let Some(item) = within("the bounded watch's next item", items.recv()).await {
            match item {
                Ok(WatchItem::Change(change)) => seen.push(change.revision),
                Ok(WatchItem::Snapshot { revision, .. }) => seen.push(-revision),
                Err(err) => panic!("a bounded watch ends without an error: {err}"),
            }
        }
        seen
    };
    assert_eq!(revisions(bounded(0, 4)).await, [-4, -4, -4]);
    assert_eq!(revisions(bounded(1, 2)).await, [2]);
    assert_eq!(
        revisions(bounded(1, 3)).await,
        [2],
        "ends at a committed bound whose change is not watched"
    );

    let live = bounded(4, 6);
    store.create(agent("agt-4", "d")).await.expect("create"); // 5
    create_elsewhere(store.as_ref(), "agt-y").await; // 6
    assert_eq!(
        revisions(live).await,
        [5],
        "a live watch ends at its bound even when that change is not watched"
    );
    store.create(agent("agt-5", "e")).await.expect("create"); // 7
    store.close().await.expect("close");
}

/// A resource the watches of these cases do not watch: an Agent in the other org.
async fn create_elsewhere(store: &dyn Store, id: &str) {
    store
        .create(resource_in(Scope::new(KIND, OTHER_ORG), id, id, json!({})))
        .await
        .expect("create elsewhere");
}

/// Writers in several tasks, in two orgs, while watches start midway: one from the current
/// revision, one from a snapshot. Each must deliver every matching revision after its start
/// exactly once, in order (the snapshot exactly the resources that existed at its revision),
/// however the replay and the live changes interleave.
pub async fn watch_misses_nothing_and_repeats_nothing_under_concurrent_writers(
    harness: &dyn Harness,
) {
    const WRITERS: usize = 4;
    const WRITES: usize = 60;
    let store = harness.open().await;
    let (done_tx, mut done) = mpsc::unbounded_channel::<(i64, String, String)>();
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        let done_tx = done_tx.clone();
        tasks.push(tokio::spawn(async move {
            // Every third write goes to another org, which the watches must skip.
            let mut mine: Vec<StoredResource> = Vec::new();
            for n in 0..WRITES {
                let org = if n % 3 == 2 { OTHER_ORG } else { ORG };
                let id = format!("agt-{writer}-{n:03}");
                let written = if n % 2 == 1 && mine.last().is_some_and(|r| r.scope.org == ORG) {
                    let last = mine.pop().expect("the last write");
                    let resource = with(
                        resource_in(last.scope.clone(), &last.id, &last.slug, json!({})),
                        json!({ "n": n }),
                    );
                    store.replace(resource, last.revision).await
                } else {
                    store
                        .create(resource_in(Scope::new(KIND, org), &id, &id, json!({})))
                        .await
                }
                .expect("write");
                let _ = done_tx.send((
                    written.revision,
                    written.scope.org.clone(),
                    written.id.clone(),
                ));
                mine.push(written);
            }
        }));
    }
    drop(done_tx);

    let mut writes: Vec<(i64, String, String)> = Vec::new();
    while writes.len() < WRITERS * WRITES / 3 {
        writes.push(within("a write", done.recv()).await.expect("writers go on"));
    }
    let since = current_revision(store.as_ref()).await;
    let mut replaying = watch(&store, agents(), since);
    let mut snapshotting = watch(&store, agents(), 0);

    for task in tasks {
        within("the writers", task).await.expect("writer task");
    }
    while let Some(write) = done.recv().await {
        writes.push(write);
    }
    writes.sort();
    let ours: Vec<i64> = writes
        .iter()
        .filter(|(_, org, _)| org == ORG)
        .map(|(revision, _, _)| *revision)
        .collect();
    let all: Vec<i64> = writes.iter().map(|(revision, _, _)| *revision).collect();
    assert_eq!(
        all,
        (1..=(WRITERS * WRITES) as i64).collect::<Vec<_>>(),
        "every write took its own revision, none skipped"
    );
    let last = *ours.last().expect("writes in org local");

    let mut delivered = Vec::new();
    while delivered.last() != Some(&last) {
        delivered.push(next_change(&mut replaying).await.0);
    }
    let expected: Vec<i64> = ours.iter().copied().filter(|r| *r > since).collect();
    assert_eq!(delivered, expected, "from revision {since}");

    let existed_at = |at: i64| -> BTreeSet<String> {
        writes
            .iter()
            .filter(|(revision, org, _)| org == ORG && *revision <= at)
            .map(|(_, _, id)| id.clone())
            .collect()
    };
    let mut snapshot_revision: Option<i64> = None;
    let mut snapshot_ids = BTreeSet::new();
    let mut delivered = Vec::new();
    loop {
        // Done at the last write's change, or, when the snapshot was read after the writers
        // finished (a slow start), once it holds everything: no change follows it then.
        let snapshot_has_all = snapshot_revision
            .is_some_and(|at| at >= last && snapshot_ids.len() == existed_at(at).len());
        if delivered.last() == Some(&last) || (delivered.is_empty() && snapshot_has_all) {
            break;
        }
        match next(&mut snapshotting).await {
            Ok(WatchItem::Snapshot { revision, resource }) => {
                assert!(delivered.is_empty(), "a snapshot item after a change");
                assert_eq!(*snapshot_revision.get_or_insert(revision), revision);
                assert!(
                    snapshot_ids.insert(resource.id.clone()),
                    "{} twice",
                    resource.id
                );
            }
            Ok(WatchItem::Change(change)) => delivered.push(change.revision),
            Err(err) => panic!("the watch failed: {err}"),
        }
    }
    let at = snapshot_revision.expect("resources of org local existed when the watch began");
    assert_eq!(
        snapshot_ids,
        existed_at(at),
        "the snapshot at revision {at}"
    );
    let expected: Vec<i64> = ours.iter().copied().filter(|r| *r > at).collect();
    assert_eq!(delivered, expected, "after the snapshot at revision {at}");
    store.close().await.expect("close");
}

/// A watch told to stop (the server shuts down) ends with `WatchStopped` naming the revision
/// to watch again from: none while its snapshot is incomplete (resuming from the snapshot's
/// revision would skip what it had not sent), then the last revision it delivered.
pub async fn stopped_watch_names_the_revision_to_resume_from(harness: &dyn Harness) {
    let store = harness.open().await;
    for n in 0..3 {
        store
            .create(agent(&format!("agt-{n}"), &format!("s{n}")))
            .await
            .expect("create");
    }
    let watch_from =
        |store: &Arc<dyn Store>, since_revision, stop: &tokio::sync::watch::Sender<bool>| {
            stigmer_store::watch(
                Arc::clone(store),
                WatchOptions {
                    filter: agents(),
                    since_revision,
                    until_revision: None,
                    // One row a step and one item of room: the snapshot is still being read
                    // when the watch is stopped.
                    page_size: 1,
                    queued_per_watcher: 1,
                    stop: Some(stop.subscribe()),
                },
            )
        };

    let (stop, _) = tokio::sync::watch::channel(false);
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
    store.create(agent("agt-3", "s3")).await.expect("create");
    let (stop, _) = tokio::sync::watch::channel(false);
    let mut items = watch_from(&store, 3, &stop);
    assert_eq!(next_change(&mut items).await.0, 4);
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
        within("the end of a stopped watch", items.recv())
            .await
            .is_none(),
        "the error is the last item"
    );
    store.close().await.expect("close");
}

/// The changes of one write (a `transact` of several mutations) share its transaction, the
/// revision of its first change, and its commit time; a write alone is its own transaction.
/// The log says the same when they are replayed as the live changes did.
pub async fn changes_of_one_write_share_its_transaction_and_commit_time(harness: &dyn Harness) {
    let store = harness.open().await;
    let mut live = store.subscribe();
    let before = stigmer_store::unix_millis_now();
    store.create(agent("agt-0", "s0")).await.expect("create"); // 1
    store
        .transact(vec![
            Mutation::Create(agent("agt-1", "s1")),
            Mutation::Create(agent("agt-2", "s2")),
            Mutation::Delete {
                scope: scope(),
                id: "agt-0".into(),
                expected_revision: None,
            },
        ])
        .await
        .expect("transact"); // 2, 3, 4
    store.create(agent("agt-3", "s3")).await.expect("create"); // 5
    let after = stigmer_store::unix_millis_now();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let change = within("a live change", live.recv())
            .await
            .expect("live change");
        assert!(
            (before..=after).contains(&change.committed_at_ms),
            "{} outside [{before}, {after}]",
            change.committed_at_ms
        );
        seen.push((change.revision, change.txn, change.committed_at_ms));
    }
    let transactions: Vec<(i64, i64)> = seen.iter().map(|(r, t, _)| (*r, *t)).collect();
    assert_eq!(transactions, [(1, 1), (2, 2), (3, 2), (4, 2), (5, 5)]);
    assert!(
        seen[1].2 == seen[2].2 && seen[2].2 == seen[3].2,
        "one write, one commit time: {seen:?}"
    );
    let logged: Vec<(i64, i64, i64)> = store
        .changes(agents(), 0, 10)
        .await
        .expect("the log")
        .iter()
        .map(|change| (change.revision, change.txn, change.committed_at_ms))
        .collect();
    assert_eq!(logged, seen, "the log replays what was seen live");
    store.close().await.expect("close");
}

/// A live change may carry the encoding its write stored (`Change::proto`), so that watchers
/// need not encode its JSON again: when it does, it is exactly those bytes, and only for a
/// create or an update. A delete, a write without an encoding, and every change read back
/// from the log carry none.
pub async fn live_changes_carry_only_the_encoding_their_write_stored(harness: &dyn Harness) {
    let store = harness.open().await;
    let mut live = store.subscribe();
    let created = store
        .create(cached(agent("agt-1", "s1"), b"enc-1"))
        .await
        .expect("create");
    let replaced = store
        .replace(
            cached(with(agent("agt-1", "s1"), json!({"v": 2})), b"enc-2"),
            created.revision,
        )
        .await
        .expect("replace");
    store
        .replace(
            with(agent("agt-1", "s1"), json!({"v": 3})),
            replaced.revision,
        )
        .await
        .expect("replace without an encoding");
    store
        .delete(scope(), "agt-1".into(), None)
        .await
        .expect("delete");
    let written: [(ChangeType, Option<&[u8]>); 4] = [
        (ChangeType::Created, Some(b"enc-1")),
        (ChangeType::Updated, Some(b"enc-2")),
        (ChangeType::Updated, None),
        (ChangeType::Deleted, None),
    ];
    for (change_type, stored) in written {
        let change = within("a live change", live.recv())
            .await
            .expect("live change");
        assert_eq!(change.change_type, change_type);
        if let Some(proto) = &change.proto {
            assert_eq!(Some(proto.as_slice()), stored, "{change:?}");
        }
    }
    let logged = store.changes(agents(), 0, 10).await.expect("the log");
    assert_eq!(logged.len(), 4);
    assert!(
        logged.iter().all(|change| change.proto.is_none()),
        "{logged:?}"
    );
    store.close().await.expect("close");
}
