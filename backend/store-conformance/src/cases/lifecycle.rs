//! What a store says about itself (`info`) and how it ends (`close`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use stigmer_store::{
    CacheFill, ChangeFilter, CommitObserver, CommitStats, ListQuery, LogBounds, Mutation,
    Retention, Scope, StoreError, VersionSelector,
};

use crate::Harness;
use crate::support::{
    KIND, ORG, OTHER_KIND, OTHER_ORG, agent, agents, in_org, next, resource_in, scope, watch,
    within,
};

/// `info` names the backend, reports the log's bounds and the resource count of each kind in
/// the org (kinds in name order, those with no resource left out), and counts the writes
/// (transact calls; create, replace and delete are one each) and transactions committed since
/// the store opened. Writes awaited one after another take one transaction each; maintenance
/// (settings, compaction) is not a write.
pub async fn info_counts_resources_and_writes(harness: &dyn Harness) {
    let store = harness.open().await;
    let fresh = store.info(ORG.into()).await.expect("info");
    assert!(!fresh.backend.is_empty(), "info names its backend");
    assert!(
        fresh.database_bytes.is_some_and(|bytes| bytes > 0),
        "info tells the database's size: {:?}",
        fresh.database_bytes
    );
    assert_eq!(
        (
            fresh.bounds,
            fresh.counts.clone(),
            fresh.writes_committed,
            fresh.transactions_committed,
            fresh.writes_pending
        ),
        (
            LogBounds {
                compacted: 0,
                current: 0
            },
            vec![],
            0,
            0,
            0
        )
    );
    let skill = Scope::new(OTHER_KIND, ORG);
    for n in 0..3 {
        store
            .create(resource_in(
                skill.clone(),
                &format!("skl-{n}"),
                &format!("s{n}"),
                json!({}),
            ))
            .await
            .expect("create");
    }
    store.create(agent("agt-1", "a")).await.expect("create");
    store.create(agent("agt-2", "b")).await.expect("create");
    store
        .create(resource_in(
            Scope::new(KIND, OTHER_ORG),
            "agt-3",
            "c",
            json!({}),
        ))
        .await
        .expect("create");
    store
        .delete(skill.clone(), "skl-0".into(), None)
        .await
        .expect("delete");
    store
        .transact(vec![
            Mutation::Create(agent("agt-4", "d")),
            Mutation::Create(agent("agt-5", "e")),
        ])
        .await
        .expect("two creates in one write");
    store
        .put_setting("key".into(), "value".into())
        .await
        .expect("put_setting");
    store
        .compact(Retention {
            revisions: 1000,
            age: Duration::ZERO,
        })
        .await
        .expect("compact");

    let info = store.info(ORG.into()).await.expect("info");
    assert_eq!(
        info.counts,
        [("Agent".to_string(), 4), ("Skill".to_string(), 2)]
    );
    assert_eq!(
        store.info(OTHER_ORG.into()).await.expect("info").counts,
        [("Agent".to_string(), 1)]
    );
    assert!(
        store
            .info("nobody".into())
            .await
            .expect("info")
            .counts
            .is_empty()
    );
    assert_eq!(info.bounds, store.log_bounds().await.expect("log_bounds"));
    assert_eq!(info.bounds.current, 9);
    assert_eq!(
        (
            info.writes_committed,
            info.transactions_committed,
            info.writes_pending
        ),
        (8, 8, 0),
        "eight writes, awaited one by one"
    );

    for n in 1..3 {
        store
            .delete(skill.clone(), format!("skl-{n}"), None)
            .await
            .expect("delete");
    }
    assert_eq!(
        store.info(ORG.into()).await.expect("info").counts,
        [("Agent".to_string(), 4)],
        "a kind with no resource left is left out"
    );
    store.close().await.expect("close");
}

/// `gauges` reports the current revision and the resources of each kind in every org; from
/// `observe_commits` on, every committed write is reported with the writes its batch held
/// (maintenance is not), and its COMMIT took no longer than its whole transaction.
pub async fn gauges_count_every_org_and_commits_are_observed(harness: &dyn Harness) {
    let store = harness.open().await;
    let fresh = store.gauges().await.expect("gauges");
    assert_eq!((fresh.revision, fresh.counts), (0, vec![]));
    store
        .create(agent("agt-0", "before"))
        .await
        .expect("create");
    let heard = Arc::new(Heard::default());
    store.observe_commits(Arc::clone(&heard) as Arc<dyn CommitObserver>);

    store.create(agent("agt-1", "a")).await.expect("create");
    store
        .create(resource_in(
            Scope::new(KIND, OTHER_ORG),
            "agt-2",
            "b",
            json!({}),
        ))
        .await
        .expect("create");
    store
        .transact(vec![
            Mutation::Create(resource_in(
                Scope::new(OTHER_KIND, ORG),
                "skl-1",
                "s",
                json!({}),
            )),
            Mutation::Create(agent("agt-3", "c")),
        ])
        .await
        .expect("two creates in one write");
    store
        .put_setting("key".into(), "value".into())
        .await
        .expect("put_setting");
    store
        .delete(scope(), "agt-0".into(), None)
        .await
        .expect("delete");

    let gauges = store.gauges().await.expect("gauges");
    assert_eq!(gauges.revision, 6);
    assert_eq!(
        gauges.revision,
        store.log_bounds().await.expect("bounds").current
    );
    assert_eq!(
        gauges.counts,
        [("Agent".to_string(), 3), ("Skill".to_string(), 1)],
        "agents in both orgs"
    );
    let heard = heard.0.lock().expect("heard").clone();
    assert_eq!(
        heard.iter().map(|commit| commit.writes).collect::<Vec<_>>(),
        [1, 1, 1, 1],
        "four writes awaited one by one, the setting not among them"
    );
    for commit in heard {
        assert!(commit.commit <= commit.transaction, "{commit:?}");
    }
    store.close().await.expect("close");
}

/// Every commit reported to [`CommitObserver`].
#[derive(Default)]
struct Heard(std::sync::Mutex<Vec<CommitStats>>);

impl CommitObserver for Heard {
    fn committed(&self, commit: &CommitStats) {
        self.0.lock().expect("heard").push(*commit);
    }
}

/// Once `close` has returned, every call fails with `Closed`, and a watch that was running
/// ends with `Closed` as its last item.
pub async fn calls_after_close_fail_as_closed(harness: &dyn Harness) {
    let store = harness.open().await;
    store.create(agent("agt-1", "one")).await.expect("create");
    let mut running = watch(&store, agents(), 0);
    assert!(
        matches!(
            next(&mut running).await,
            Ok(stigmer_store::WatchItem::Snapshot { .. })
        ),
        "the watch is running"
    );
    // Changes written one at a time and received before the next: by the last, the watch
    // has left its replay of the log and waits for live changes.
    for n in 2..5 {
        let written = store
            .create(agent(&format!("agt-{n}"), &format!("s{n}")))
            .await
            .expect("create");
        match next(&mut running).await {
            Ok(stigmer_store::WatchItem::Change(change)) => {
                assert_eq!(change.revision, written.revision)
            }
            other => panic!("expected the change of agt-{n}, got {other:?}"),
        }
    }
    store.close().await.expect("close");

    // Every call is made, and every one that did not fail as Closed is reported at once.
    let mut answered = Vec::new();
    let mut closed = |what: &str, result: Result<(), StoreError>| {
        if !matches!(result, Err(StoreError::Closed)) {
            answered.push(format!("{what}: {result:?}"));
        }
    };
    let s = Arc::clone(&store);
    closed("create", s.create(agent("agt-2", "two")).await.map(drop));
    closed(
        "replace",
        s.replace(agent("agt-1", "one"), 1).await.map(drop),
    );
    closed(
        "delete",
        s.delete(scope(), "agt-1".into(), None).await.map(drop),
    );
    closed(
        "transact",
        s.transact(vec![Mutation::PutArtifact {
            hash: crate::support::hash(1),
            bytes: vec![1],
        }])
        .await
        .map(drop),
    );
    closed("get", s.get(scope(), "agt-1".into()).await.map(drop));
    closed(
        "get_by_slug",
        s.get_by_slug(scope(), "one".into()).await.map(drop),
    );
    closed(
        "list",
        s.list(ListQuery {
            scope: scope(),
            after_id: None,
            limit: 10,
            filters: Vec::new(),
            proto_only: false,
        })
        .await
        .map(drop),
    );
    closed("changes", s.changes(in_org(ORG), 0, 10).await.map(drop));
    closed("snapshot", s.snapshot(agents()).await.map(drop));
    closed("log_bounds", s.log_bounds().await.map(drop));
    closed(
        "at_revision",
        s.at_revision(scope(), "agt-1".into(), 1).await.map(drop),
    );
    closed(
        "compact",
        s.compact(Retention {
            revisions: 0,
            age: Duration::ZERO,
        })
        .await
        .map(drop),
    );
    closed("info", s.info(ORG.into()).await.map(drop));
    closed(
        "artifact",
        s.artifact(crate::support::hash(1)).await.map(drop),
    );
    closed(
        "version",
        s.version("agt-1".into(), VersionSelector::Tag("latest".into()))
            .await
            .map(drop),
    );
    closed("versions", s.versions("agt-1".into()).await.map(drop));
    closed("setting", s.setting("key".into()).await.map(drop));
    closed("put_setting", s.put_setting("key".into(), "v".into()).await);
    closed(
        "rewrite_tokens",
        s.rewrite_tokens("x".into(), Arc::new(|t: &str| Ok(t.to_string())))
            .await
            .map(drop),
    );
    closed("uncached", s.uncached(String::new(), 10).await.map(drop));
    closed(
        "fill_read_cache",
        s.fill_read_cache(vec![CacheFill {
            id: "agt-1".into(),
            data: "{}".into(),
            proto: vec![1],
        }])
        .await
        .map(drop),
    );
    assert!(
        answered.is_empty(),
        "calls after close must fail as Closed; these did not: {answered:#?}"
    );

    let ended = loop {
        match within("the end of a watch on a closed store", running.recv()).await {
            Some(Ok(_)) => {}
            other => break other,
        }
    };
    assert!(
        matches!(ended, Some(Err(StoreError::Closed))),
        "a running watch ends with Closed: {ended:?}"
    );
    let mut late = watch(&store, agents(), 0);
    assert!(
        matches!(next(&mut late).await, Err(StoreError::Closed)),
        "a watch started after close fails with Closed"
    );
    let mut late = watch(
        &store,
        ChangeFilter {
            id: Some("agt-1".into()),
            ..agents()
        },
        1,
    );
    assert!(
        matches!(next(&mut late).await, Err(StoreError::Closed)),
        "a replay started after close fails with Closed"
    );
}
