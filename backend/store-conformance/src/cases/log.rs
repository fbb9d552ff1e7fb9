//! The change log: `changes`, `log_bounds`, compaction and reads at past revisions.

use std::time::Duration;

use serde_json::json;
use stigmer_store::{
    AtRevision, ChangeFilter, ChangeType, LogBounds, Retention, Scope, StoreError, WatchItem,
};

use crate::Harness;
use crate::support::{
    KIND, ORG, OTHER_KIND, OTHER_ORG, agent, agents, in_org, next, next_change, parse, resource_in,
    scope, watch, with, within,
};

/// `changes` returns the log after `after`, in revision order, at most `limit` entries, of one
/// org and optionally one kind and one id: the type, scope, id and data of each change (a
/// delete's data as the resource was). An `after` at or past the current revision gives
/// nothing, not an error. `log_bounds` spans (0, current] in a store never compacted.
pub async fn change_log_filters_by_org_kind_and_id(harness: &dyn Harness) {
    let store = harness.open().await;
    assert!(
        store
            .changes(in_org(ORG), 0, 10)
            .await
            .expect("changes")
            .is_empty()
    );
    let skill = Scope::new(OTHER_KIND, ORG);
    let a = store.create(agent("agt-a", "a")).await.expect("create"); // 1
    let b = store
        .create(resource_in(skill.clone(), "skl-b", "b", json!({})))
        .await
        .expect("create"); // 2
    store
        .create(resource_in(
            Scope::new(KIND, OTHER_ORG),
            "agt-c",
            "c",
            json!({}),
        ))
        .await
        .expect("create"); // 3
    let a2 = store
        .replace(with(agent("agt-a", "a"), json!({"v": 2})), a.revision)
        .await
        .expect("replace"); // 4
    store
        .delete(skill.clone(), "skl-b".into(), None)
        .await
        .expect("delete"); // 5
    let d = store.create(agent("agt-d", "d")).await.expect("create"); // 6

    let log = store.changes(in_org(ORG), 0, 100).await.expect("changes");
    let summary: Vec<_> = log
        .iter()
        .map(|c| (c.revision, c.change_type, c.scope.clone(), c.id.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (1, ChangeType::Created, scope(), "agt-a"),
            (2, ChangeType::Created, skill.clone(), "skl-b"),
            (4, ChangeType::Updated, scope(), "agt-a"),
            (5, ChangeType::Deleted, skill.clone(), "skl-b"),
            (6, ChangeType::Created, scope(), "agt-d"),
        ]
    );
    for (change, row) in log.iter().zip([&a, &b, &a2, &b, &d]) {
        assert_eq!(
            parse(&change.data),
            parse(&row.data),
            "change {}: the resource after it (before it, for a delete)",
            change.revision
        );
    }

    let revisions = |filter: ChangeFilter, after: i64, limit: usize| {
        let store = store.clone();
        async move {
            store
                .changes(filter, after, limit)
                .await
                .expect("changes")
                .iter()
                .map(|change| change.revision)
                .collect::<Vec<_>>()
        }
    };
    let filter = |org: &str, kind: Option<&str>, id: Option<&str>| ChangeFilter {
        org: org.into(),
        kind: kind.map(Into::into),
        id: id.map(Into::into),
    };
    assert_eq!(revisions(agents(), 0, 100).await, [1, 4, 6]);
    assert_eq!(
        revisions(filter(ORG, Some(OTHER_KIND), None), 0, 100).await,
        [2, 5]
    );
    assert_eq!(
        revisions(filter(ORG, None, Some("agt-a")), 0, 100).await,
        [1, 4]
    );
    assert_eq!(
        revisions(filter(ORG, Some(OTHER_KIND), Some("agt-a")), 0, 100).await,
        Vec::<i64>::new()
    );
    assert_eq!(revisions(in_org(OTHER_ORG), 0, 100).await, [3]);
    assert_eq!(revisions(in_org("nobody"), 0, 100).await, Vec::<i64>::new());
    assert_eq!(revisions(in_org(ORG), 4, 100).await, [5, 6], "after 4");
    assert_eq!(revisions(in_org(ORG), 0, 2).await, [1, 2], "limit 2");
    assert_eq!(revisions(in_org(ORG), 2, 2).await, [4, 5]);
    assert_eq!(revisions(in_org(ORG), 6, 100).await, Vec::<i64>::new());
    assert_eq!(
        revisions(in_org(ORG), 100, 100).await,
        Vec::<i64>::new(),
        "a revision from the future is not an error"
    );
    assert_eq!(
        store.log_bounds().await.expect("log_bounds"),
        LogBounds {
            compacted: 0,
            current: 6
        }
    );
    store.close().await.expect("close");
}

/// Compaction with `Retention { revisions: n, age: 0 }` removes every change but the last `n`
/// revisions, as a prefix, and moves `log_bounds().compacted` there; `changes` and watches
/// from before the bound fail with `Compacted`, from the bound on they work. Compacting again
/// removes nothing; writes go on with the next revision.
pub async fn compaction_keeps_the_retained_revisions(harness: &dyn Harness) {
    let store = harness.open().await;
    store.create(agent("agt-old", "old")).await.expect("create");
    let mut last = store
        .create(agent("agt-churn", "churn"))
        .await
        .expect("create");
    for n in 0..20 {
        last = store
            .replace(
                with(agent("agt-churn", "churn"), json!({ "n": n })),
                last.revision,
            )
            .await
            .expect("replace");
    }
    assert_eq!(last.revision, 22);
    let log = store.changes(in_org(ORG), 0, 100).await.expect("changes");
    assert_eq!(log.len(), 22);
    assert!(log.windows(2).all(|w| w[1].revision == w[0].revision + 1));

    let keep = |revisions| Retention {
        revisions,
        age: Duration::ZERO,
    };
    let none = store.compact(keep(30)).await.expect("compact");
    assert_eq!(
        (none.removed, none.compacted),
        (0, 0),
        "fewer revisions than retained"
    );
    // A change goes only once it is older than `age`; with an age of zero that is as soon as
    // the clock has moved on from its commit, which it has after this.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let done = store.compact(keep(5)).await.expect("compact");
    assert_eq!((done.removed, done.compacted), (17, 17));
    assert_eq!(
        store.log_bounds().await.expect("log_bounds"),
        LogBounds {
            compacted: 17,
            current: 22
        }
    );
    for after in [0, 1, 16] {
        match store.changes(in_org(ORG), after, 100).await {
            Err(StoreError::Compacted {
                requested,
                compacted,
            }) => assert_eq!((requested, compacted), (after, 17)),
            other => panic!("changes after {after} must be Compacted, got {other:?}"),
        }
    }
    let kept = store.changes(in_org(ORG), 17, 100).await.expect("changes");
    assert_eq!(
        kept.iter().map(|c| c.revision).collect::<Vec<_>>(),
        [18, 19, 20, 21, 22]
    );
    let again = store.compact(keep(5)).await.expect("compact");
    assert_eq!((again.removed, again.compacted), (0, 17));
    assert_eq!(
        store.info(ORG.into()).await.expect("info").bounds,
        LogBounds {
            compacted: 17,
            current: 22
        }
    );

    let mut compacted = watch(&store, agents(), 10);
    match next(&mut compacted).await {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => assert_eq!((requested, compacted), (10, 17)),
        other => panic!("a watch from before the bound must end Compacted, got {other:?}"),
    }
    assert!(
        within("the end of a failed watch", compacted.recv())
            .await
            .is_none(),
        "the error is the last item"
    );
    let mut from_bound = watch(&store, agents(), 17);
    assert_eq!(next_change(&mut from_bound).await.0, 18);
    let mut from_snapshot = watch(&store, agents(), 0);
    for id in ["agt-churn", "agt-old"] {
        match next(&mut from_snapshot).await {
            Ok(WatchItem::Snapshot { revision, resource }) => {
                assert_eq!((revision, resource.id.as_str()), (22, id));
            }
            other => panic!("expected the snapshot of {id}, got {other:?}"),
        }
    }

    tokio::time::sleep(Duration::from_millis(20)).await;
    let all = store.compact(keep(0)).await.expect("compact");
    assert_eq!((all.removed, all.compacted), (5, 22));
    assert!(
        store
            .changes(in_org(ORG), 22, 100)
            .await
            .expect("changes after the bound")
            .is_empty()
    );
    let next_write = store.create(agent("agt-new", "new")).await.expect("create");
    assert_eq!(next_write.revision, 23);
    assert_eq!(
        store
            .changes(in_org(ORG), 22, 100)
            .await
            .expect("changes")
            .iter()
            .map(|c| c.revision)
            .collect::<Vec<_>>(),
        [23]
    );
    let (revision, change_type, id) = next_change(&mut from_snapshot).await;
    assert_eq!(
        (revision, change_type, id.as_str()),
        (23, ChangeType::Created, "agt-new"),
        "a watch goes on across compactions"
    );
    store.close().await.expect("close");
}

/// A change stays while it is younger than `age`, however many revisions came after it.
pub async fn age_retention_keeps_recent_changes(harness: &dyn Harness) {
    let store = harness.open().await;
    for n in 0..10 {
        store
            .create(agent(&format!("agt-{n}"), &format!("s{n}")))
            .await
            .expect("create");
    }
    let done = store
        .compact(Retention {
            revisions: 0,
            age: Duration::from_secs(3600),
        })
        .await
        .expect("compact");
    assert_eq!(
        (done.removed, done.compacted),
        (0, 0),
        "everything is younger than an hour"
    );
    assert_eq!(
        store
            .changes(in_org(ORG), 0, 100)
            .await
            .expect("changes")
            .len(),
        10
    );
    store.close().await.expect("close");
}

/// `at_revision` answers what a resource was at a revision: `Existed` with the revision of
/// its last change at or before it and its data then, `Absent` before its creation, after its
/// deletion, or in another kind or org, and `OutOfRange` with the log's bounds for a revision
/// at or below `compacted` or above `current`, or when compaction removed the version that was
/// current then. A resource unchanged since before the compaction point still answers from
/// its current row.
pub async fn at_revision_answers_from_the_log(harness: &dyn Harness) {
    let store = harness.open().await;
    let u = store.create(agent("agt-u", "u")).await.expect("create"); // 1
    let a1 = store.create(agent("agt-a", "a")).await.expect("create"); // 2
    let b = store.create(agent("agt-b", "b")).await.expect("create"); // 3
    let a4 = store
        .replace(with(agent("agt-a", "a"), json!({"v": 4})), 2)
        .await
        .expect("replace"); // 4
    store
        .create(resource_in(
            Scope::new(KIND, OTHER_ORG),
            "agt-c",
            "c",
            json!({}),
        ))
        .await
        .expect("create"); // 5
    store
        .delete(scope(), "agt-b".into(), None)
        .await
        .expect("delete"); // 6
    let a7 = store
        .replace(with(agent("agt-a", "a"), json!({"v": 7})), 4)
        .await
        .expect("replace"); // 7
    let x = store.create(agent("agt-x", "x")).await.expect("create"); // 8

    let at = |id: &'static str, revision: i64| {
        let store = store.clone();
        async move {
            store
                .at_revision(scope(), id.into(), revision)
                .await
                .expect("at_revision")
        }
    };
    let existed = |row: &stigmer_store::StoredResource| (row.revision, parse(&row.data));
    let expect_existed = |answer: AtRevision, what: &str| match answer {
        AtRevision::Existed { revision, data } => (revision, parse(&data)),
        other => panic!("{what}: expected Existed, got {other:?}"),
    };
    for (id, revision, row) in [
        ("agt-a", 2, &a1),
        ("agt-a", 3, &a1),
        ("agt-a", 4, &a4),
        ("agt-a", 6, &a4),
        ("agt-a", 7, &a7),
        ("agt-a", 8, &a7),
        ("agt-b", 3, &b),
        ("agt-b", 5, &b),
        ("agt-u", 8, &u),
        ("agt-x", 8, &x),
    ] {
        let what = format!("{id} at {revision}");
        assert_eq!(
            expect_existed(at(id, revision).await, &what),
            existed(row),
            "{what}"
        );
    }
    for (id, revision) in [
        ("agt-a", 1),
        ("agt-b", 2),
        ("agt-b", 6),
        ("agt-b", 8),
        ("agt-x", 7),
        ("agt-never", 4),
    ] {
        assert_eq!(
            at(id, revision).await,
            AtRevision::Absent,
            "{id} at {revision}"
        );
    }
    assert_eq!(
        store
            .at_revision(Scope::new(KIND, OTHER_ORG), "agt-a".into(), 4)
            .await
            .expect("at_revision"),
        AtRevision::Absent,
        "another org's resource is absent"
    );
    let bounds = LogBounds {
        compacted: 0,
        current: 8,
    };
    for revision in [0, 9, 100] {
        assert_eq!(
            at("agt-a", revision).await,
            AtRevision::OutOfRange(bounds),
            "agt-a at {revision}"
        );
    }

    tokio::time::sleep(Duration::from_millis(20)).await;
    let done = store
        .compact(Retention {
            revisions: 3,
            age: Duration::ZERO,
        })
        .await
        .expect("compact");
    assert_eq!(done.compacted, 5);
    let bounds = LogBounds {
        compacted: 5,
        current: 8,
    };
    for (id, revision) in [("agt-a", 4), ("agt-a", 5), ("agt-u", 5), ("agt-a", 6)] {
        assert_eq!(
            at(id, revision).await,
            AtRevision::OutOfRange(bounds),
            "{id} at {revision}: at or below the bound, or its version then is compacted"
        );
    }
    for (id, revision, row) in [
        ("agt-a", 7, &a7),
        ("agt-a", 8, &a7),
        ("agt-u", 6, &u),
        ("agt-x", 8, &x),
    ] {
        let what = format!("{id} at {revision} after compaction");
        assert_eq!(
            expect_existed(at(id, revision).await, &what),
            existed(row),
            "{what}"
        );
    }
    for (id, revision) in [("agt-b", 6), ("agt-b", 7), ("agt-x", 6), ("agt-x", 7)] {
        assert_eq!(
            at(id, revision).await,
            AtRevision::Absent,
            "{id} at {revision} after compaction"
        );
    }
    store.close().await.expect("close");
}
