//! Writing and reading single resources: create, get, get_by_slug, replace, delete, transact,
//! slugs, compare-and-swap and revisions.

use serde_json::json;
use stigmer_store::{ChangeType, Mutation, Scope, StoreError};
use tokio::sync::broadcast::error::TryRecvError;

use crate::Harness;
use crate::support::{
    KIND, ORG, OTHER_KIND, OTHER_ORG, agent, assert_stored, cached, current_revision, get, hash,
    in_org, parse, resource_in, scope, with, within,
};

/// `create` stores the resource as written, with revision 1 in a new store, in the row and as
/// the string `"1"` at `$.metadata.revision`, and `proto` as given; `get` and `get_by_slug`
/// return exactly that row in its own kind and org, and nothing in any other. Ids are unique
/// in the whole store: a second create of an id fails, in any kind or org, and takes no
/// revision.
pub async fn create_then_read_by_id_and_slug(harness: &dyn Harness) {
    let store = harness.open().await;
    let written = cached(
        with(
            agent("agt-1", "one"),
            json!({"spec": {"instructions": "hi"}}),
        ),
        b"enc-1",
    );
    let created = store.create(written.clone()).await.expect("create");
    assert_stored(&created, &written, 1);
    assert_eq!(created.proto.as_deref(), Some(&b"enc-1"[..]));

    let by_id = get(store.as_ref(), scope(), "agt-1").await;
    assert_eq!(
        by_id.as_ref(),
        Some(&created),
        "get returns the row create returned"
    );
    let by_slug = store
        .get_by_slug(scope(), "one".into())
        .await
        .expect("get_by_slug");
    assert_eq!(by_slug.as_ref(), Some(&created), "get_by_slug too");

    for other in [Scope::new(KIND, OTHER_ORG), Scope::new(OTHER_KIND, ORG)] {
        assert_eq!(get(store.as_ref(), other.clone(), "agt-1").await, None);
        assert_eq!(
            store
                .get_by_slug(other.clone(), "one".into())
                .await
                .expect("get_by_slug"),
            None,
            "{other:?} does not see a resource of {:?}",
            scope()
        );
    }
    assert_eq!(get(store.as_ref(), scope(), "agt-2").await, None);
    assert_eq!(
        store
            .get_by_slug(scope(), "two".into())
            .await
            .expect("get_by_slug"),
        None
    );

    for elsewhere in [scope(), Scope::new(OTHER_KIND, OTHER_ORG)] {
        let again = store
            .create(resource_in(
                elsewhere.clone(),
                "agt-1",
                "another",
                json!({}),
            ))
            .await;
        assert!(
            again.is_err(),
            "a second resource with id agt-1 (in {elsewhere:?}) must be refused: {again:?}"
        );
        assert_eq!(
            store
                .get_by_slug(elsewhere, "another".into())
                .await
                .expect("get_by_slug"),
            None
        );
    }
    assert_eq!(
        current_revision(store.as_ref()).await,
        1,
        "refused creates take no revision"
    );
    assert_eq!(get(store.as_ref(), scope(), "agt-1").await, Some(created));
    store.close().await.expect("close");
}

/// `replace` stores the new data, slug and proto under the next revision; `delete` returns the
/// resource as it was (its last revision and data) and takes a revision of its own.
pub async fn replace_then_delete(harness: &dyn Harness) {
    let store = harness.open().await;
    let created = store
        .create(cached(agent("agt-1", "one"), b"enc-1"))
        .await
        .expect("create");
    let written = with(agent("agt-1", "renamed"), json!({"spec": {"version": 2}}));
    let replaced = store
        .replace(written.clone(), created.revision)
        .await
        .expect("replace");
    assert_stored(&replaced, &written, 2);
    assert_eq!(
        replaced.proto, None,
        "the proto of the last write (none), not the one before"
    );
    assert_eq!(
        get(store.as_ref(), scope(), "agt-1").await.as_ref(),
        Some(&replaced)
    );
    assert_eq!(
        store
            .get_by_slug(scope(), "one".into())
            .await
            .expect("get_by_slug"),
        None,
        "the old slug no longer names it"
    );
    assert_eq!(
        store
            .get_by_slug(scope(), "renamed".into())
            .await
            .expect("get_by_slug")
            .as_ref(),
        Some(&replaced)
    );

    let deleted = store
        .delete(scope(), "agt-1".into(), Some(replaced.revision))
        .await
        .expect("delete");
    assert_eq!(deleted, replaced, "delete returns the resource as it was");
    assert_eq!(get(store.as_ref(), scope(), "agt-1").await, None);
    assert_eq!(
        store
            .get_by_slug(scope(), "renamed".into())
            .await
            .expect("get_by_slug"),
        None
    );
    assert_eq!(
        current_revision(store.as_ref()).await,
        3,
        "the delete took a revision"
    );

    let later = store.create(agent("agt-2", "two")).await.expect("create");
    assert_eq!(
        later.revision, 4,
        "revisions are never reused after a delete"
    );
    let gone = store
        .delete(scope(), "agt-2".into(), None)
        .await
        .expect("delete without a revision check");
    assert_eq!(gone.revision, 4);
    assert_eq!(current_revision(store.as_ref()).await, 5);
    store.close().await.expect("close");
}

/// A slug names one resource per kind and org: a second create or a replace onto a taken slug
/// fails with `AlreadyExists` naming kind, org and slug; the same slug is free in another kind
/// or org, and again once its holder is renamed or deleted.
pub async fn slugs_are_unique_per_kind_and_org(harness: &dyn Harness) {
    let store = harness.open().await;
    store
        .create(agent("agt-1", "shared"))
        .await
        .expect("create");
    match store.create(agent("agt-2", "shared")).await {
        Err(StoreError::AlreadyExists { kind, org, slug }) => {
            assert_eq!(
                (kind.as_str(), org.as_str(), slug.as_str()),
                (KIND, ORG, "shared")
            );
        }
        other => panic!("a taken slug must give AlreadyExists, got {other:?}"),
    }
    assert_eq!(get(store.as_ref(), scope(), "agt-2").await, None);

    for (other, id) in [
        (Scope::new(KIND, OTHER_ORG), "agt-3"),
        (Scope::new(OTHER_KIND, ORG), "agt-4"),
    ] {
        store
            .create(resource_in(other.clone(), id, "shared", json!({})))
            .await
            .unwrap_or_else(|err| panic!("the slug is free in {other:?}: {err}"));
        let found = store
            .get_by_slug(other.clone(), "shared".into())
            .await
            .expect("get_by_slug")
            .expect("found in its own scope");
        assert_eq!(found.id, id);
    }
    assert_eq!(
        store
            .get_by_slug(scope(), "shared".into())
            .await
            .expect("get_by_slug")
            .map(|row| row.id),
        Some("agt-1".to_string())
    );

    let five = store.create(agent("agt-5", "five")).await.expect("create");
    match store.replace(agent("agt-5", "shared"), five.revision).await {
        Err(StoreError::AlreadyExists { slug, .. }) => assert_eq!(slug, "shared"),
        other => panic!("a replace onto a taken slug must give AlreadyExists, got {other:?}"),
    }
    assert_eq!(get(store.as_ref(), scope(), "agt-5").await, Some(five));

    let one = get(store.as_ref(), scope(), "agt-1").await.expect("agt-1");
    store
        .replace(agent("agt-1", "moved"), one.revision)
        .await
        .expect("rename");
    store
        .create(agent("agt-6", "shared"))
        .await
        .expect("a renamed resource's old slug is free");
    store
        .delete(scope(), "agt-6".into(), None)
        .await
        .expect("delete");
    store
        .create(agent("agt-7", "shared"))
        .await
        .expect("a deleted resource's slug is free");
    assert_eq!(
        current_revision(store.as_ref()).await,
        8,
        "eight writes succeeded; the two refused took no revision"
    );
    store.close().await.expect("close");
}

/// `replace` and `delete` at a revision that is no longer current fail with `Conflict`
/// (the expected and the current revision); on a resource that does not exist in that kind
/// and org, with `NotFound`. Neither changes anything or takes a revision.
pub async fn stale_or_missing_compare_and_swap_fails(harness: &dyn Harness) {
    let store = harness.open().await;
    let first = store.create(agent("agt-1", "one")).await.expect("create");
    let second = store
        .replace(agent("agt-1", "one"), first.revision)
        .await
        .expect("replace");
    match store.replace(agent("agt-1", "one"), first.revision).await {
        Err(StoreError::Conflict {
            kind,
            id,
            expected,
            current,
        }) => assert_eq!(
            (kind.as_str(), id.as_str(), expected, current),
            (KIND, "agt-1", first.revision, second.revision)
        ),
        other => panic!("a stale replace must give Conflict, got {other:?}"),
    }
    match store
        .delete(scope(), "agt-1".into(), Some(first.revision))
        .await
    {
        Err(StoreError::Conflict {
            expected, current, ..
        }) => assert_eq!((expected, current), (first.revision, second.revision)),
        other => panic!("a stale delete must give Conflict, got {other:?}"),
    }
    match store
        .replace(agent("agt-1", "one"), second.revision + 5)
        .await
    {
        Err(StoreError::Conflict { current, .. }) => assert_eq!(current, second.revision),
        other => panic!("a revision from the future is stale too, got {other:?}"),
    }

    let missing = [
        store.replace(agent("agt-missing", "x"), 1).await,
        store.delete(scope(), "agt-missing".into(), None).await,
        store.delete(scope(), "agt-missing".into(), Some(1)).await,
        // The resource exists, but not in this kind or org.
        store
            .replace(
                resource_in(Scope::new(KIND, OTHER_ORG), "agt-1", "one", json!({})),
                second.revision,
            )
            .await,
        store
            .delete(Scope::new(OTHER_KIND, ORG), "agt-1".into(), None)
            .await,
        store
            .delete(
                Scope::new(KIND, OTHER_ORG),
                "agt-1".into(),
                Some(second.revision),
            )
            .await,
    ];
    for result in missing {
        match result {
            Err(StoreError::NotFound { id, .. }) => {
                assert!(id == "agt-missing" || id == "agt-1", "{id}")
            }
            other => panic!("a missing resource must give NotFound, got {other:?}"),
        }
    }
    assert_eq!(
        get(store.as_ref(), scope(), "agt-1").await,
        Some(second),
        "refused writes change nothing"
    );
    assert_eq!(
        current_revision(store.as_ref()).await,
        2,
        "refused writes take no revision"
    );
    assert_eq!(
        store
            .changes(in_org(ORG), 0, 100)
            .await
            .expect("changes")
            .len(),
        2,
        "refused writes leave nothing in the change log"
    );
    store.close().await.expect("close");
}

/// A transaction applies all of its mutations or none: when any fails, the call fails with
/// that mutation's error and nothing of it is stored, logged, published or given a revision.
/// When all succeed, each resource mutation takes the next revision in order, the result holds
/// one row per resource mutation (a deleted one as it was), and artifacts and versions take
/// no revision.
pub async fn transact_applies_all_or_none(harness: &dyn Harness) {
    let store = harness.open().await;
    let taken = store
        .create(agent("agt-taken", "taken"))
        .await
        .expect("create");
    let old = store.create(agent("agt-old", "old")).await.expect("create");
    let mut live = store.subscribe();

    let failed = store
        .transact(vec![
            Mutation::Create(agent("agt-a", "a")),
            Mutation::PutArtifact {
                hash: hash(1),
                bytes: b"artifact".to_vec(),
            },
            Mutation::Replace {
                resource: with(agent("agt-taken", "taken"), json!({"edited": true})),
                expected_revision: taken.revision,
            },
            Mutation::Create(agent("agt-b", "taken")),
        ])
        .await;
    assert!(
        matches!(failed, Err(StoreError::AlreadyExists { .. })),
        "the last mutation's slug is taken: {failed:?}"
    );
    let stale_first = store
        .transact(vec![
            Mutation::Delete {
                scope: scope(),
                id: "agt-old".into(),
                expected_revision: Some(old.revision + 1),
            },
            Mutation::Create(agent("agt-c", "c")),
        ])
        .await;
    assert!(
        matches!(stale_first, Err(StoreError::Conflict { .. })),
        "the first mutation is stale: {stale_first:?}"
    );
    for id in ["agt-a", "agt-b", "agt-c"] {
        assert_eq!(
            get(store.as_ref(), scope(), id).await,
            None,
            "{id} rolled back"
        );
    }
    assert_eq!(
        get(store.as_ref(), scope(), "agt-taken").await.as_ref(),
        Some(&taken),
        "the replace rolled back"
    );
    assert_eq!(
        get(store.as_ref(), scope(), "agt-old").await.as_ref(),
        Some(&old)
    );
    assert_eq!(
        store.artifact(hash(1)).await.expect("artifact"),
        None,
        "the artifact rolled back"
    );
    assert_eq!(
        current_revision(store.as_ref()).await,
        2,
        "no revision taken"
    );
    assert_eq!(
        store
            .changes(in_org(ORG), 0, 100)
            .await
            .expect("changes")
            .len(),
        2,
        "nothing logged"
    );
    assert!(
        matches!(live.try_recv(), Err(TryRecvError::Empty)),
        "nothing published"
    );

    let done = store
        .transact(vec![
            Mutation::Create(agent("agt-a", "a")),
            Mutation::PutArtifact {
                hash: hash(1),
                bytes: b"artifact".to_vec(),
            },
            Mutation::Replace {
                resource: with(agent("agt-taken", "taken"), json!({"edited": true})),
                expected_revision: taken.revision,
            },
            Mutation::Delete {
                scope: scope(),
                id: "agt-old".into(),
                expected_revision: Some(old.revision),
            },
        ])
        .await
        .expect("every mutation holds");
    assert_eq!(
        done.iter()
            .map(|row| (row.id.as_str(), row.revision))
            .collect::<Vec<_>>(),
        [("agt-a", 3), ("agt-taken", 4), ("agt-old", old.revision)],
        "one row per resource mutation, in order; the deleted one as it was"
    );
    assert_eq!(done[2], old);
    assert_eq!(
        store.artifact(hash(1)).await.expect("artifact").as_deref(),
        Some(&b"artifact"[..])
    );
    assert_eq!(
        current_revision(store.as_ref()).await,
        5,
        "one revision per resource mutation"
    );
    let logged: Vec<_> = store
        .changes(in_org(ORG), 2, 100)
        .await
        .expect("changes")
        .into_iter()
        .map(|change| (change.revision, change.change_type, change.id))
        .collect();
    let expected = vec![
        (3, ChangeType::Created, "agt-a".to_string()),
        (4, ChangeType::Updated, "agt-taken".to_string()),
        (5, ChangeType::Deleted, "agt-old".to_string()),
    ];
    assert_eq!(logged, expected);
    let mut published = Vec::new();
    for _ in 0..3 {
        let change = within("a published change", live.recv())
            .await
            .expect("published");
        published.push((change.revision, change.change_type, change.id.clone()));
    }
    assert_eq!(published, expected, "published in revision order");
    store.close().await.expect("close");
}

/// Revisions start at 1 and go up by one per successful mutation, store-wide, whatever the
/// kind or org. The store writes each into `data` at `$.metadata.revision` as a string,
/// replacing whatever the caller put there, and the change log's entries carry the same
/// data; a delete's entry holds the resource as it was, with its last revision.
pub async fn revisions_are_consecutive_and_mirrored_in_data(harness: &dyn Harness) {
    let store = harness.open().await;
    let bounds = store.log_bounds().await.expect("log_bounds");
    assert_eq!(
        (bounds.compacted, bounds.current),
        (0, 0),
        "a new store is at revision 0"
    );
    let scopes = [
        scope(),
        Scope::new(OTHER_KIND, ORG),
        Scope::new(KIND, OTHER_ORG),
    ];
    for n in 0..6 {
        let written = with(
            resource_in(
                scopes[n % 3].clone(),
                &format!("res-{n}"),
                &format!("s{n}"),
                json!({}),
            ),
            // A revision the caller made up: the store's own replaces it.
            json!({"metadata": {"revision": "999"}}),
        );
        let created = store.create(written.clone()).await.expect("create");
        assert_stored(&created, &written, n as i64 + 1);
    }
    let written = agent("res-0", "s0");
    let replaced = store.replace(written.clone(), 1).await.expect("replace");
    assert_stored(&replaced, &written, 7);
    let deleted = store
        .delete(scope(), "res-0".into(), None)
        .await
        .expect("delete");
    assert_eq!(deleted.revision, 7);
    let created = store.create(agent("res-9", "s9")).await.expect("create");
    assert_eq!(created.revision, 9, "the delete took revision 8");

    let log = store.changes(in_org(ORG), 0, 100).await.expect("changes");
    let revisions: Vec<i64> = log.iter().map(|change| change.revision).collect();
    assert_eq!(revisions, [1, 2, 4, 5, 7, 8, 9]);
    for change in &log {
        let mirrored = parse(&change.data)["metadata"]["revision"].clone();
        let expected = match change.change_type {
            ChangeType::Deleted => json!("7"),
            _ => json!(change.revision.to_string()),
        };
        assert_eq!(mirrored, expected, "{change:?}");
    }
    assert_eq!(
        parse(&log[5].data),
        parse(&deleted.data),
        "a delete's entry is the resource as it was"
    );
    store.close().await.expect("close");
}

/// An `Expect` writes nothing and takes no revision; one that does not hold (a resource at
/// another revision, one expected absent that exists, one expected present that does not)
/// fails the whole transaction with `ExpectationFailed`, naming what it found.
pub async fn expectations_guard_the_whole_transaction(harness: &dyn Harness) {
    let store = harness.open().await;
    let held = store
        .create(agent("agt-held", "held"))
        .await
        .expect("create");
    let expect = |id: &str, revision: Option<i64>| Mutation::Expect {
        scope: scope(),
        id: id.into(),
        revision,
    };

    let failures = [
        (
            expect("agt-held", Some(held.revision + 1)),
            Some(held.revision),
        ),
        (expect("agt-held", None), Some(held.revision)),
        (expect("agt-missing", Some(1)), None),
        (
            Mutation::Expect {
                scope: Scope::new(KIND, OTHER_ORG),
                id: "agt-held".into(),
                revision: Some(held.revision),
            },
            None,
        ),
    ];
    for (failing, found_then) in failures {
        let failed = store
            .transact(vec![
                Mutation::Create(agent("agt-new", "new")),
                failing.clone(),
            ])
            .await;
        match failed {
            Err(StoreError::ExpectationFailed {
                found, expected, ..
            }) => {
                assert_eq!(found, found_then, "{failing:?} names what it found");
                let Mutation::Expect { revision, .. } = failing else {
                    unreachable!()
                };
                assert_eq!(expected, revision);
            }
            other => panic!("{failing:?} must fail the transaction: {other:?}"),
        }
        assert_eq!(
            get(store.as_ref(), scope(), "agt-new").await,
            None,
            "the create before {failing:?} rolled back"
        );
    }
    assert_eq!(current_revision(store.as_ref()).await, held.revision);

    let done = store
        .transact(vec![
            expect("agt-held", Some(held.revision)),
            expect("agt-new", None),
            Mutation::Create(agent("agt-new", "new")),
        ])
        .await
        .expect("every expectation holds");
    assert_eq!(done.len(), 1, "only the create returns a row");
    assert_eq!(
        done[0].revision,
        held.revision + 1,
        "expectations take no revision"
    );
    let deleted = store
        .transact(vec![
            expect("agt-new", Some(done[0].revision)),
            Mutation::Delete {
                scope: scope(),
                id: "agt-new".into(),
                expected_revision: None,
            },
            expect("agt-new", None),
        ])
        .await
        .expect("an expectation sees the writes before it");
    assert_eq!(deleted.len(), 1);
}
