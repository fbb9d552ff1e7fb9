//! Content-addressed artifacts, versions of versioned resources, and settings: none of them
//! takes a revision.

use serde_json::json;
use stigmer_store::{Mutation, NewResource, ResourceVersion, Scope, VersionSelector};

use crate::Harness;
use crate::support::{
    ORG, OTHER_KIND, current_revision, hash, in_org, parse, resource_in, stored_as, with,
};

/// `PutArtifact` stores bytes under their hash once: `artifact` returns them byte for byte,
/// a second put of the same hash succeeds and keeps the first bytes, and neither takes a
/// revision or a change-log entry.
pub async fn artifacts_are_stored_once_by_hash(harness: &dyn Harness) {
    let store = harness.open().await;
    assert_eq!(store.artifact(hash(1)).await.expect("artifact"), None);
    // Every byte value, and more than a page or two of any database.
    let bytes: Vec<u8> = (0..300_000u32).map(|n| (n % 251) as u8).collect();
    let put = |hash: String, bytes: Vec<u8>| vec![Mutation::PutArtifact { hash, bytes }];
    let written = store
        .transact(put(hash(1), bytes.clone()))
        .await
        .expect("put");
    assert!(
        written.is_empty(),
        "an artifact is not a resource: {written:?}"
    );
    store
        .transact(put(hash(2), b"small".to_vec()))
        .await
        .expect("put");
    store
        .transact(put(hash(1), b"other bytes".to_vec()))
        .await
        .expect("a second put of a hash succeeds");
    assert_eq!(
        store.artifact(hash(1)).await.expect("artifact"),
        Some(bytes),
        "stored once: the first bytes stay"
    );
    assert_eq!(
        store.artifact(hash(2)).await.expect("artifact").as_deref(),
        Some(&b"small"[..])
    );
    assert_eq!(store.artifact(hash(3)).await.expect("artifact"), None);
    assert_eq!(
        current_revision(store.as_ref()).await,
        0,
        "no revision taken"
    );
    assert!(
        store
            .changes(in_org(ORG), 0, 10)
            .await
            .expect("changes")
            .is_empty()
    );
    store.close().await.expect("close");
}

/// A push writes a resource, its artifact and a version in one transaction; the version takes
/// the revision of that resource write (or the one it names), and its data gets that revision
/// at `$.metadata.revision`. `versions` lists them oldest first, `version` finds one by hash or
/// the newest with a tag, with the resource's scope and slug. `DeleteVersions` forgets a
/// resource's versions and every artifact whose hash no remaining version has. None of it
/// takes a revision of its own.
pub async fn versions_by_hash_and_tag(harness: &dyn Harness) {
    let store = harness.open().await;
    let skill = Scope::new(OTHER_KIND, ORG);
    let resource = |id: &str, v: u32| {
        with(
            resource_in(skill.clone(), id, id, json!({})),
            json!({"spec": {"v": v}}),
        )
    };
    let push = |resource: NewResource, expected: Option<i64>, n: u32, tag: &str| {
        let version = Mutation::PutVersion {
            resource_id: resource.id.clone(),
            version_hash: hash(n),
            tag: tag.into(),
            data: resource.data.clone(),
            revision: None,
        };
        let write = match expected {
            None => Mutation::Create(resource),
            Some(expected_revision) => Mutation::Replace {
                resource,
                expected_revision,
            },
        };
        vec![
            write,
            Mutation::PutArtifact {
                hash: hash(n),
                bytes: format!("zip {n}").into_bytes(),
            },
            version,
        ]
    };
    let v1 = resource("skl-1", 1);
    let written = store
        .transact(push(v1.clone(), None, 1, "latest"))
        .await
        .expect("push 1");
    assert_eq!(
        written.iter().map(|r| r.revision).collect::<Vec<_>>(),
        [1],
        "one row: the resource's"
    );
    let v2 = resource("skl-1", 2);
    store
        .transact(push(v2.clone(), Some(1), 2, "latest"))
        .await
        .expect("push 2");
    let v3 = resource("skl-1", 3);
    store
        .transact(push(v3.clone(), Some(2), 3, "stable"))
        .await
        .expect("push 3");

    let versions = store.versions("skl-1".into()).await.expect("versions");
    let summary: Vec<_> = versions
        .iter()
        .map(|v: &ResourceVersion| (v.version_hash.clone(), v.tag.as_str(), v.revision))
        .collect();
    assert_eq!(
        summary,
        [
            (hash(1), "latest", 1),
            (hash(2), "latest", 2),
            (hash(3), "stable", 3)
        ],
        "oldest first"
    );
    for (version, (written, revision)) in versions.iter().zip([(&v1, 1), (&v2, 2), (&v3, 3)]) {
        assert_eq!(parse(&version.data), stored_as(written, revision));
    }

    let found = |selector: VersionSelector| {
        let store = store.clone();
        async move {
            store
                .version("skl-1".into(), selector)
                .await
                .expect("version")
        }
    };
    let by_hash = found(VersionSelector::Hash(hash(1)))
        .await
        .expect("version 1 by hash");
    assert_eq!(
        (
            &by_hash.scope,
            by_hash.id.as_str(),
            by_hash.slug.as_str(),
            by_hash.revision
        ),
        (&skill, "skl-1", "skl-1", 1)
    );
    assert_eq!(parse(&by_hash.data), stored_as(&v1, 1));
    let latest = found(VersionSelector::Tag("latest".into()))
        .await
        .expect("latest");
    assert_eq!(latest.revision, 2, "the newest version with the tag");
    assert_eq!(parse(&latest.data), stored_as(&v2, 2));
    assert_eq!(
        found(VersionSelector::Tag("stable".into()))
            .await
            .map(|v| v.revision),
        Some(3)
    );
    assert_eq!(found(VersionSelector::Hash(hash(9))).await, None);
    assert_eq!(found(VersionSelector::Tag("nope".into())).await, None);
    assert!(
        store
            .versions("skl-none".into())
            .await
            .expect("versions")
            .is_empty()
    );

    // An import places an older version by its own revision and shares an artifact.
    let other = resource("skl-2", 1);
    store
        .transact(vec![
            Mutation::Create(other.clone()),
            Mutation::PutVersion {
                resource_id: "skl-2".into(),
                version_hash: hash(1),
                tag: "old".into(),
                data: other.data.clone(),
                revision: Some(1),
            },
            Mutation::PutArtifact {
                hash: hash(4),
                bytes: b"zip 4".to_vec(),
            },
            Mutation::PutVersion {
                resource_id: "skl-2".into(),
                version_hash: hash(4),
                tag: "new".into(),
                data: other.data.clone(),
                revision: None,
            },
        ])
        .await
        .expect("import");
    let imported: Vec<_> = store
        .versions("skl-2".into())
        .await
        .expect("versions")
        .into_iter()
        .map(|v| (v.version_hash, v.revision, parse(&v.data)))
        .collect();
    assert_eq!(
        imported,
        [
            (hash(1), 1, stored_as(&other, 1)),
            (hash(4), 4, stored_as(&other, 4))
        ]
    );
    assert_eq!(
        current_revision(store.as_ref()).await,
        4,
        "versions and artifacts take no revision"
    );

    store
        .transact(vec![Mutation::DeleteVersions {
            resource_id: "skl-1".into(),
        }])
        .await
        .expect("delete versions");
    assert!(
        store
            .versions("skl-1".into())
            .await
            .expect("versions")
            .is_empty()
    );
    assert_eq!(found(VersionSelector::Hash(hash(1))).await, None);
    assert_eq!(
        store
            .versions("skl-2".into())
            .await
            .expect("versions")
            .len(),
        2
    );
    let kept = |n: u32| {
        let store = store.clone();
        async move { store.artifact(hash(n)).await.expect("artifact").is_some() }
    };
    assert!(kept(1).await, "skl-2 still needs artifact 1");
    assert!(!kept(2).await && !kept(3).await, "no version needs 2 or 3");
    assert!(kept(4).await);

    // An artifact that no version names is not needed either.
    store
        .transact(vec![Mutation::PutArtifact {
            hash: hash(5),
            bytes: b"zip 5".to_vec(),
        }])
        .await
        .expect("put");
    store
        .transact(vec![Mutation::DeleteVersions {
            resource_id: "skl-2".into(),
        }])
        .await
        .expect("delete versions");
    for n in [1, 4, 5] {
        assert!(!kept(n).await, "artifact {n} is needed by no version");
    }
    assert_eq!(current_revision(store.as_ref()).await, 4);
    store.close().await.expect("close");
}

/// Settings are store-wide text values: absent until put, the last put wins, and putting one
/// takes no revision.
pub async fn settings_round_trip(harness: &dyn Harness) {
    let store = harness.open().await;
    let setting = |key: &str| {
        let store = store.clone();
        let key = key.to_string();
        async move { store.setting(key).await.expect("setting") }
    };
    assert_eq!(setting("master_key_id").await, None);
    store
        .put_setting("master_key_id".into(), "key-1".into())
        .await
        .expect("put");
    assert_eq!(setting("master_key_id").await.as_deref(), Some("key-1"));
    store
        .put_setting("master_key_id".into(), "key-2".into())
        .await
        .expect("put again");
    store
        .put_setting("note".into(), "ünïcode \"quoted\" ✓".into())
        .await
        .expect("put");
    store
        .put_setting("empty".into(), String::new())
        .await
        .expect("put");
    assert_eq!(setting("master_key_id").await.as_deref(), Some("key-2"));
    assert_eq!(
        setting("note").await.as_deref(),
        Some("ünïcode \"quoted\" ✓")
    );
    assert_eq!(setting("empty").await.as_deref(), Some(""));
    assert_eq!(setting("other").await, None);
    assert_eq!(
        current_revision(store.as_ref()).await,
        0,
        "no revision taken"
    );
    store.close().await.expect("close");
}
