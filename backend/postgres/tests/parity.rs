//! The PostgreSQL store answers as the SQLite store does: one script of calls (writes that
//! succeed and fail, every kind of filter on awkward documents, versions, settings, the log,
//! compaction, re-sealing, the read cache, watches) runs against both, and the two transcripts
//! must be the same, line by line. Documents are compared as JSON values: jsonb orders object
//! keys its own way.

mod common;

use std::sync::Arc;
use std::time::Duration;

use stigmer_sqlite::{SqliteConfig, SqliteStore};
use stigmer_store::{
    AtRevision, CacheFill, Change, ChangeFilter, FindQuery, JsonFilter, JsonPath, ListQuery,
    Mutation, NewResource, Retention, Scope, Store, StoreError, StoredResource, VersionSelector,
};

/// A JSON document with sorted keys and every number as a float, so that two spellings of
/// one value print the same.
fn norm_json(text: &str) -> String {
    fn numbers_as_floats(value: serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => serde_json::Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, numbers_as_floats(v)))
                    .collect(),
            ),
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(numbers_as_floats).collect())
            }
            serde_json::Value::Number(n) => {
                serde_json::Value::String(format!("num:{}", n.as_f64().expect("a number")))
            }
            other => other,
        }
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) => sorted(&numbers_as_floats(value)),
        Err(err) => format!("not JSON ({err}): {text}"),
    }
}

/// Prints a value with object keys in sorted order whatever the map type keeps.
fn sorted(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<_> = map.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{k:?}:{}", sorted(&map[k])))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        serde_json::Value::Array(items) => {
            format!(
                "[{}]",
                items.iter().map(sorted).collect::<Vec<_>>().join(",")
            )
        }
        other => other.to_string(),
    }
}

fn stored(row: &StoredResource) -> String {
    format!(
        "{} {}/{} slug={} rev={} proto={:?} data={}",
        row.id,
        row.scope.kind,
        row.scope.org,
        row.slug,
        row.revision,
        row.proto.as_deref().map(String::from_utf8_lossy),
        norm_json(&row.data)
    )
}

fn change(change: &Change) -> String {
    format!(
        "{} {:?} {}/{} {} {}",
        change.revision,
        change.change_type,
        change.scope.kind,
        change.scope.org,
        change.id,
        norm_json(&change.data)
    )
}

/// Errors as a caller can tell them apart; the wording of internal ones is each backend's.
fn error(err: &StoreError) -> String {
    match err {
        StoreError::Internal(_) => "Internal".into(),
        StoreError::Unavailable(_) => "Unavailable".into(),
        other => other.to_string(),
    }
}

fn outcome<T>(result: &Result<T, StoreError>, show: impl Fn(&T) -> String) -> String {
    match result {
        Ok(value) => format!("ok {}", show(value)),
        Err(err) => format!("err {}", error(err)),
    }
}

fn rows(rows: &[StoredResource]) -> String {
    rows.iter().map(stored).collect::<Vec<_>>().join(" | ")
}

fn doc(id: &str, slug: &str, data: &str, proto: Option<&str>) -> NewResource {
    NewResource {
        scope: Scope::new("Agent", "local"),
        id: id.into(),
        slug: slug.into(),
        data: data.into(),
        proto: proto.map(|p| p.as_bytes().to_vec()),
    }
}

/// The documents every filter runs over: strings, numbers, booleans, null, arrays, nested
/// arrays, objects, missing fields, non-ASCII text, a document without metadata, one whose
/// metadata is not an object, and one that is not an object at all.
fn documents() -> Vec<NewResource> {
    vec![
        doc(
            "agt-1",
            "alpha-one",
            r#"{"metadata":{"id":"agt-1","name":"Alpha one","labels":{"app":"web","tier":"1","app.kubernetes.io/name":"x"},"tags":["x","y"]},"spec":{"n":5,"flag":true,"nul":null,"s":"5","arr":["a",["b"],{"c":"d"}],"obj":{"k":"v"},"f":2.5}}"#,
            Some("enc-1"),
        ),
        doc(
            "agt-2",
            "alpha-two",
            r#"{"metadata":{"id":"agt-2","name":"alpha two","labels":{"app":"api"},"tags":["y"]},"spec":{"n":"5","s":5,"arr":"a","obj":"k","flag":"true"}}"#,
            None,
        ),
        doc(
            "agt-3",
            "beta",
            r#"{"metadata":{"id":"agt-3","name":"Beta","revision":"999"},"spec":{}}"#,
            Some("enc-3"),
        ),
        doc("agt-4", "nometa", r#"{"spec":{"x":1}}"#, None),
        doc(
            "agt-5",
            "weird",
            r#"{"metadata":"weird","spec":{"n":-0.5}}"#,
            None,
        ),
        doc("agt-6", "array", r#"[1,2,{"a":"b"}]"#, None),
        doc(
            "agt-7",
            "unicode",
            r#"{"metadata":{"id":"agt-7","name":"Émile \u00e9 \"q\" \\ /"},"spec":{"u":"ünïcode 日本","esc":"tab\there\nnl"}}"#,
            Some("enc-7"),
        ),
    ]
}

fn filters() -> Vec<(&'static str, Vec<JsonFilter>)> {
    let p = JsonPath::fields;
    let eq = |path: &str, value: &str| JsonFilter::Equals {
        path: p(path),
        value: value.into(),
    };
    vec![
        ("none", vec![]),
        ("name=Beta", vec![eq("metadata.name", "Beta")]),
        ("n=5 (a number never equals text)", vec![eq("spec.n", "5")]),
        ("flag=true", vec![eq("spec.flag", "true")]),
        ("flag=1", vec![eq("spec.flag", "1")]),
        ("nul=null", vec![eq("spec.nul", "null")]),
        (
            "n!=5",
            vec![JsonFilter::NotEquals {
                path: p("spec.n"),
                value: "5".into(),
            }],
        ),
        (
            "app in (web, api)",
            vec![JsonFilter::In {
                path: p("metadata.labels.app"),
                values: vec!["web".into(), "api".into()],
            }],
        ),
        (
            "n in (5)",
            vec![JsonFilter::In {
                path: p("spec.n"),
                values: vec!["5".into()],
            }],
        ),
        (
            "app in ()",
            vec![JsonFilter::In {
                path: p("metadata.labels.app"),
                values: vec![],
            }],
        ),
        (
            "app notin (web)",
            vec![JsonFilter::NotIn {
                path: p("metadata.labels.app"),
                values: vec!["web".into()],
            }],
        ),
        (
            "n notin (5)",
            vec![JsonFilter::NotIn {
                path: p("spec.n"),
                values: vec!["5".into()],
            }],
        ),
        (
            "app notin ()",
            vec![JsonFilter::NotIn {
                path: p("metadata.labels.app"),
                values: vec![],
            }],
        ),
        (
            "exists nul",
            vec![JsonFilter::Exists {
                path: p("spec.nul"),
            }],
        ),
        (
            "missing nul",
            vec![JsonFilter::Missing {
                path: p("spec.nul"),
            }],
        ),
        (
            "exists dotted label",
            vec![JsonFilter::Exists {
                path: JsonPath::new(["metadata", "labels", "app.kubernetes.io/name"]),
            }],
        ),
        (
            "exists arr.0 (a key, not an index)",
            vec![JsonFilter::Exists {
                path: JsonPath::new(["spec", "arr", "0"]),
            }],
        ),
        (
            "exists metadata (any type)",
            vec![JsonFilter::Exists {
                path: p("metadata"),
            }],
        ),
        (
            "prefix alpha",
            vec![JsonFilter::Prefix {
                path: p("metadata.name"),
                prefix: "alpha".into(),
            }],
        ),
        (
            "prefix empty",
            vec![JsonFilter::Prefix {
                path: p("metadata.name"),
                prefix: String::new(),
            }],
        ),
        (
            "prefix É",
            vec![JsonFilter::Prefix {
                path: p("metadata.name"),
                prefix: "Ém".into(),
            }],
        ),
        (
            "prefix of a number",
            vec![JsonFilter::Prefix {
                path: p("spec.f"),
                prefix: "2.".into(),
            }],
        ),
        (
            "tags contain x",
            vec![JsonFilter::Contains {
                path: p("metadata.tags"),
                value: "x".into(),
            }],
        ),
        (
            "arr contains a (array or scalar)",
            vec![JsonFilter::Contains {
                path: p("spec.arr"),
                value: "a".into(),
            }],
        ),
        (
            "arr contains b (only nested)",
            vec![JsonFilter::Contains {
                path: p("spec.arr"),
                value: "b".into(),
            }],
        ),
        (
            "obj contains v (an object's values)",
            vec![JsonFilter::Contains {
                path: p("spec.obj"),
                value: "v".into(),
            }],
        ),
        (
            "obj contains k",
            vec![JsonFilter::Contains {
                path: p("spec.obj"),
                value: "k".into(),
            }],
        ),
        (
            "two filters",
            vec![
                JsonFilter::Contains {
                    path: p("metadata.tags"),
                    value: "y".into(),
                },
                JsonFilter::NotEquals {
                    path: p("metadata.labels.app"),
                    value: "web".into(),
                },
            ],
        ),
    ]
}

async fn script(store: Arc<dyn Store>) -> Vec<String> {
    let mut t: Vec<String> = Vec::new();
    let scope = Scope::new("Agent", "local");
    let mut live = store.subscribe();

    for resource in documents() {
        let created = store.create(resource).await;
        t.push(format!("create {}", outcome(&created, stored)));
    }
    t.push(format!(
        "create taken slug: {}",
        outcome(
            &store
                .create(doc("agt-9", "beta", r#"{"metadata":{}}"#, None))
                .await,
            stored
        )
    ));
    t.push(format!(
        "create taken id: {}",
        outcome(
            &store
                .create(doc("agt-1", "fresh", r#"{"metadata":{}}"#, None))
                .await,
            stored
        )
    ));
    for (kind, org, id) in [("Agent", "other", "agt-o1"), ("Workflow", "local", "wfl-1")] {
        let created = store
            .create(NewResource {
                scope: Scope::new(kind, org),
                ..doc(id, "beta", r#"{"metadata":{"name":"Beta"}}"#, None)
            })
            .await;
        t.push(format!("create elsewhere {}", outcome(&created, stored)));
    }
    t.push(format!(
        "create bad JSON: {}",
        outcome(
            &store.create(doc("agt-x", "x", "{nope", None)).await,
            stored
        )
    ));

    for id in ["agt-1", "agt-4", "agt-missing", "wfl-1"] {
        let got = store.get(scope.clone(), id.into()).await;
        t.push(format!(
            "get {id}: {}",
            outcome(&got, |row| row.as_ref().map_or("none".into(), stored))
        ));
    }
    for slug in ["beta", "nope"] {
        let got = store.get_by_slug(scope.clone(), slug.into()).await;
        t.push(format!(
            "get slug {slug}: {}",
            outcome(&got, |row| row.as_ref().map_or("none".into(), stored))
        ));
    }

    // Every filter, on one page and on pages of two.
    for (name, filters) in filters() {
        for limit in [100, 2] {
            let mut after_id = None;
            loop {
                let page = store
                    .list(ListQuery {
                        scope: scope.clone(),
                        after_id: after_id.clone(),
                        limit,
                        filters: filters.clone(),
                        proto_only: false,
                    })
                    .await;
                let Ok(page) = page else {
                    t.push(format!(
                        "list {name}: {}",
                        outcome(&page, |_| String::new())
                    ));
                    break;
                };
                t.push(format!(
                    "list {name} limit {limit} after {after_id:?}: [{}] next={:?} rev={} total={:?}",
                    page.items
                        .iter()
                        .map(|row| row.id.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                    page.next_after_id,
                    page.revision,
                    page.total
                ));
                match page.next_after_id {
                    Some(next) => after_id = Some(next),
                    None => break,
                }
            }
        }
    }
    let proto_only = store
        .list(ListQuery {
            scope: scope.clone(),
            after_id: None,
            limit: 100,
            filters: vec![],
            proto_only: true,
        })
        .await
        .expect("list");
    t.push(format!(
        "list proto_only: {}",
        proto_only
            .items
            .iter()
            .map(|row| format!("{}:{}:{}", row.id, row.data.is_empty(), row.proto.is_some()))
            .collect::<Vec<_>>()
            .join(",")
    ));

    // Searches over the same odd documents (metadata not an object, an array), on pages of
    // two. Needles stay within one JSON value: the two backends keep different text forms.
    for (needle, in_text) in [
        ("ALPHA", false),
        ("app", false),
        ("kubernetes", false),
        ("WEB", false),
        ("weird", false),
        ("weird", true),
        ("ünïcode 日本", true),
        ("%", true),
        ("nowhere", true),
    ] {
        let mut after = None;
        loop {
            let page = store
                .find(FindQuery {
                    org: "local".into(),
                    kinds: vec!["Agent".into()],
                    needle: needle.into(),
                    in_text,
                    after: after.clone(),
                    limit: 2,
                })
                .await
                .expect("find");
            t.push(format!(
                "find {needle:?} text={in_text} after {after:?}: [{}] next={:?}",
                page.items
                    .iter()
                    .map(|row| row.id.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                page.next_after
            ));
            match page.next_after {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }

    // Replaces: fine, stale, missing, onto a taken slug, renamed, and with the same encoding
    // bytes as before (which the trigger treats as not replaced).
    let one = store
        .get(scope.clone(), "agt-1".into())
        .await
        .expect("get")
        .expect("agt-1");
    let replaced = store
        .replace(
            doc(
                "agt-1",
                "alpha-one",
                r#"{"metadata":{"id":"agt-1","name":"Alpha one"},"spec":{"v":2}}"#,
                Some("enc-1b"),
            ),
            one.revision,
        )
        .await;
    t.push(format!("replace: {}", outcome(&replaced, stored)));
    let stale = store
        .replace(doc("agt-1", "alpha-one", "{}", None), one.revision)
        .await;
    t.push(format!("replace stale: {}", outcome(&stale, stored)));
    let missing = store.replace(doc("agt-nope", "x", "{}", None), 1).await;
    t.push(format!("replace missing: {}", outcome(&missing, stored)));
    let current = store
        .get(scope.clone(), "agt-2".into())
        .await
        .expect("get")
        .expect("agt-2");
    let onto_taken = store
        .replace(doc("agt-2", "beta", "{}", None), current.revision)
        .await;
    t.push(format!(
        "replace onto a taken slug: {}",
        outcome(&onto_taken, stored)
    ));
    let renamed = store
        .replace(
            doc(
                "agt-2",
                "renamed",
                r#"{"metadata":{"name":"renamed"}}"#,
                None,
            ),
            current.revision,
        )
        .await;
    t.push(format!("replace renamed: {}", outcome(&renamed, stored)));
    let seven = store
        .get(scope.clone(), "agt-7".into())
        .await
        .expect("get")
        .expect("agt-7");
    let same_bytes = store
        .replace(
            doc(
                "agt-7",
                "unicode",
                r#"{"metadata":{"id":"agt-7"},"spec":{"changed":true}}"#,
                Some("enc-7"),
            ),
            seven.revision,
        )
        .await;
    t.push(format!(
        "replace same encoding: {}",
        outcome(&same_bytes, stored)
    ));
    let reread = store.get(scope.clone(), "agt-7".into()).await;
    t.push(format!(
        "read after same encoding: {}",
        outcome(&reread, |row| row.as_ref().map_or("none".into(), stored))
    ));

    // Deletes: stale, fine, missing, unchecked.
    let three = store
        .get(scope.clone(), "agt-3".into())
        .await
        .expect("get")
        .expect("agt-3");
    for (id, expected) in [
        ("agt-3", Some(three.revision - 1)),
        ("agt-3", Some(three.revision)),
        ("agt-3", None),
        ("agt-5", Some(12345)),
        ("agt-5", None),
    ] {
        let deleted = store.delete(scope.clone(), id.into(), expected).await;
        t.push(format!(
            "delete {id} expecting {expected:?}: {}",
            outcome(&deleted, stored)
        ));
    }

    // Transactions: all or nothing, revisions in order.
    let bounds = store.log_bounds().await.expect("bounds");
    t.push(format!("bounds: {bounds:?}"));
    let failed = store
        .transact(vec![
            Mutation::Create(doc("agt-10", "ten", r#"{"metadata":{}}"#, None)),
            Mutation::Create(doc("agt-11", "alpha-one", r#"{"metadata":{}}"#, None)),
        ])
        .await;
    t.push(format!(
        "transact failing: {}",
        outcome(&failed, |r| rows(r))
    ));
    t.push(format!(
        "bounds after: {:?}",
        store.log_bounds().await.expect("bounds")
    ));
    let both = store
        .transact(vec![
            Mutation::Create(doc("agt-10", "ten", r#"{"metadata":{}}"#, None)),
            Mutation::Delete {
                scope: scope.clone(),
                id: "agt-4".into(),
                expected_revision: None,
            },
            Mutation::Replace {
                resource: doc("agt-10", "ten", r#"{"metadata":{"v":1}}"#, None),
                expected_revision: bounds.current + 1,
            },
        ])
        .await;
    t.push(format!("transact: {}", outcome(&both, |r| rows(r))));

    // Versions and artifacts.
    let hash = |c: char| std::iter::repeat_n(c, 64).collect::<String>();
    let pushed = store
        .transact(vec![
            Mutation::Replace {
                resource: doc("agt-10", "ten", r#"{"metadata":{"v":2}}"#, None),
                expected_revision: bounds.current + 3,
            },
            Mutation::PutArtifact {
                hash: hash('a'),
                bytes: b"zip-a".to_vec(),
            },
            Mutation::PutVersion {
                resource_id: "agt-10".into(),
                version_hash: hash('a'),
                tag: "latest".into(),
                data: r#"{"metadata":{"v":2}}"#.into(),
                revision: None,
            },
            Mutation::PutArtifact {
                hash: hash('b'),
                bytes: b"zip-b".to_vec(),
            },
            Mutation::PutVersion {
                resource_id: "agt-10".into(),
                version_hash: hash('b'),
                tag: "latest".into(),
                data: r#"{"metadata":{"v":3}}"#.into(),
                revision: Some(3),
            },
            Mutation::PutArtifact {
                hash: hash('a'),
                bytes: b"ignored, already there".to_vec(),
            },
        ])
        .await;
    t.push(format!("push: {}", outcome(&pushed, |r| rows(r))));
    let bad_hash = store
        .transact(vec![Mutation::PutArtifact {
            hash: "short".into(),
            bytes: vec![1],
        }])
        .await;
    t.push(format!(
        "bad artifact hash: {}",
        outcome(&bad_hash, |r| rows(r))
    ));
    for h in [hash('a'), hash('b'), hash('c')] {
        let bytes = store.artifact(h.clone()).await;
        t.push(format!(
            "artifact {}: {}",
            &h[..1],
            outcome(&bytes, |b| format!(
                "{:?}",
                b.as_deref().map(String::from_utf8_lossy)
            ))
        ));
    }
    for selector in [
        VersionSelector::Hash(hash('a')),
        VersionSelector::Hash(hash('c')),
        VersionSelector::Tag("latest".into()),
        VersionSelector::Tag("nope".into()),
    ] {
        let version = store.version("agt-10".into(), selector.clone()).await;
        t.push(format!(
            "version {selector:?}: {}",
            outcome(&version, |row| row.as_ref().map_or("none".into(), stored))
        ));
    }
    let versions = store.versions("agt-10".into()).await;
    t.push(format!(
        "versions: {}",
        outcome(&versions, |list| list
            .iter()
            .map(|v| format!(
                "{} {} {} {}",
                &v.version_hash[..1],
                v.tag,
                v.revision,
                norm_json(&v.data)
            ))
            .collect::<Vec<_>>()
            .join(" | "))
    ));
    let forgotten = store
        .transact(vec![Mutation::DeleteVersions {
            resource_id: "agt-10".into(),
        }])
        .await;
    t.push(format!(
        "delete versions: {}",
        outcome(&forgotten, |r| rows(r))
    ));
    t.push(format!(
        "after: versions {:?}, artifact a {:?}",
        store.versions("agt-10".into()).await.map(|v| v.len()).ok(),
        store.artifact(hash('a')).await.map(|a| a.is_some()).ok()
    ));

    // Settings.
    t.push(format!(
        "setting: {:?}",
        store.setting("k".into()).await.ok()
    ));
    store
        .put_setting("k".into(), "v1".into())
        .await
        .expect("put");
    store
        .put_setting("k".into(), "v2".into())
        .await
        .expect("put");
    t.push(format!(
        "setting: {:?}",
        store.setting("k".into()).await.ok()
    ));

    // The read cache: rows without an encoding, filled only while unchanged.
    let uncached = store.uncached(String::new(), 100).await.expect("uncached");
    t.push(format!("uncached: {}", rows(&uncached)));
    t.push(format!(
        "uncached after agt-2 limit 1: {}",
        rows(&store.uncached("agt-2".into(), 1).await.expect("uncached"))
    ));
    let mut fills: Vec<CacheFill> = uncached
        .iter()
        .map(|row| CacheFill {
            id: row.id.clone(),
            data: row.data.clone(),
            proto: format!("fill-{}", row.id).into_bytes(),
        })
        .collect();
    fills.push(CacheFill {
        id: "agt-1".into(),
        data: "{}".into(),
        proto: b"stale fill".to_vec(),
    });
    let filled = store.fill_read_cache(fills).await;
    t.push(format!("filled: {}", outcome(&filled, u64::to_string)));
    t.push(format!(
        "uncached after: {}",
        rows(&store.uncached(String::new(), 100).await.expect("uncached"))
    ));

    // Re-sealing tokens everywhere resource data is kept.
    let sealed = store
        .create(doc(
            "agt-20",
            "sealed",
            r#"{"metadata":{"id":"agt-20"},"spec":{"data":{"a":{"value":"sealed:k1:AAA"},"b":{"value":"sealed:k1:BBB"}}}}"#,
            Some("enc-20"),
        ))
        .await;
    t.push(format!("sealed: {}", outcome(&sealed, stored)));
    let rewritten = store
        .rewrite_tokens(
            "sealed:k1:".into(),
            Arc::new(|token: &str| Ok(token.replace("k1", "k2"))),
        )
        .await;
    t.push(format!(
        "rewritten: {}",
        outcome(&rewritten, u64::to_string)
    ));
    let refused = store
        .rewrite_tokens(
            "sealed:k2:".into(),
            Arc::new(|_: &str| Err("no key".to_string())),
        )
        .await;
    t.push(format!(
        "rewrite refused: {}",
        outcome(&refused, u64::to_string)
    ));
    t.push(format!(
        "after re-seal: {}",
        outcome(&store.get(scope.clone(), "agt-20".into()).await, |row| row
            .as_ref()
            .map_or("none".into(), stored))
    ));

    // The log, filtered, and resources at past revisions.
    let bounds = store.log_bounds().await.expect("bounds");
    t.push(format!("bounds: {bounds:?}"));
    for filter in [
        ChangeFilter {
            org: "local".into(),
            kind: None,
            id: None,
        },
        ChangeFilter {
            org: "local".into(),
            kind: Some("Workflow".into()),
            id: None,
        },
        ChangeFilter {
            org: "local".into(),
            kind: Some("Agent".into()),
            id: Some("agt-1".into()),
        },
        ChangeFilter {
            org: "other".into(),
            kind: None,
            id: None,
        },
    ] {
        for (after, limit) in [
            (0, 100),
            (5, 3),
            (bounds.current, 10),
            (bounds.current + 5, 10),
        ] {
            let log = store.changes(filter.clone(), after, limit).await;
            t.push(format!(
                "changes {filter:?} after {after} limit {limit}: {}",
                outcome(&log, |changes| changes
                    .iter()
                    .map(change)
                    .collect::<Vec<_>>()
                    .join(" | "))
            ));
        }
    }
    for id in ["agt-1", "agt-3", "agt-10", "agt-never"] {
        for revision in [-1, 0, 1, 2, 9, 12, bounds.current, bounds.current + 1] {
            let at = store.at_revision(scope.clone(), id.into(), revision).await;
            t.push(format!(
                "at {id}@{revision}: {}",
                outcome(&at, |at| match at {
                    AtRevision::Existed { revision, data } =>
                        format!("existed {revision} {}", norm_json(data)),
                    other => format!("{other:?}"),
                })
            ));
        }
    }

    // Snapshots, page by page.
    for filter in [
        ChangeFilter {
            org: "local".into(),
            kind: None,
            id: None,
        },
        ChangeFilter {
            org: "local".into(),
            kind: Some("Agent".into()),
            id: Some("agt-2".into()),
        },
    ] {
        let mut snapshot = store.snapshot(filter.clone()).await.expect("snapshot");
        let mut pages = Vec::new();
        loop {
            let page = snapshot.next_page(3).await.expect("page");
            if page.is_empty() {
                break;
            }
            pages.push(
                page.iter()
                    .map(|r| r.id.clone())
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        t.push(format!(
            "snapshot {filter:?} at {}: {}",
            snapshot.revision(),
            pages.join(" / ")
        ));
    }

    for org in ["local", "other", "nobody"] {
        let info = store.info(org.into()).await.expect("info");
        t.push(format!(
            "info {org}: {:?} {:?} writes={} transactions={} pending={}",
            info.bounds,
            info.counts,
            info.writes_committed,
            info.transactions_committed,
            info.writes_pending
        ));
    }

    // Compaction: by count, then nothing more to do; what it removed is out of range.
    let compacted = store
        .compact(Retention {
            revisions: 4,
            age: Duration::ZERO,
        })
        .await;
    t.push(format!(
        "compact: {}",
        outcome(&compacted, |c| format!("{c:?}"))
    ));
    let again = store
        .compact(Retention {
            revisions: 4,
            age: Duration::ZERO,
        })
        .await;
    t.push(format!(
        "compact again: {}",
        outcome(&again, |c| format!("{c:?}"))
    ));
    let young = store
        .compact(Retention {
            revisions: 0,
            age: Duration::from_secs(3600),
        })
        .await;
    t.push(format!(
        "compact young: {}",
        outcome(&young, |c| format!("{c:?}"))
    ));
    let bounds = store.log_bounds().await.expect("bounds");
    t.push(format!("bounds: {bounds:?}"));
    let all = ChangeFilter {
        org: "local".into(),
        kind: None,
        id: None,
    };
    for after in [0, bounds.compacted - 1, bounds.compacted] {
        let log = store.changes(all.clone(), after, 100).await;
        t.push(format!(
            "changes after {after}: {}",
            outcome(&log, |changes| changes
                .iter()
                .map(|c| c.revision.to_string())
                .collect::<Vec<_>>()
                .join(","))
        ));
    }
    for (id, revision) in [
        ("agt-1", bounds.compacted),
        ("agt-1", bounds.compacted + 1),
        ("agt-7", bounds.current),
        ("agt-3", bounds.compacted + 1),
    ] {
        let at = store.at_revision(scope.clone(), id.into(), revision).await;
        t.push(format!(
            "at {id}@{revision}: {}",
            outcome(&at, |at| match at {
                AtRevision::Existed { revision, data } =>
                    format!("existed {revision} {}", norm_json(data)),
                other => format!("{other:?}"),
            })
        ));
    }

    // Everything published live, in order.
    let mut heard = Vec::new();
    while let Ok(item) = live.try_recv() {
        heard.push(change(&item));
    }
    t.push(format!("live: {}", heard.join(" | ")));

    store.close().await.expect("close");
    t.push(format!(
        "after close: {} / {}",
        outcome(&store.create(doc("agt-z", "z", "{}", None)).await, stored),
        outcome(&store.get(scope.clone(), "agt-1".into()).await, |_| {
            String::new()
        })
    ));
    t.push(format!(
        "close again: {}",
        outcome(&store.close().await, |()| String::new())
    ));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_answers_every_call_as_sqlite_does() {
    let db = common::fresh_database().await;
    let dir = tempfile::tempdir().expect("dir");
    let sqlite: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&SqliteConfig::new(dir.path().join("parity.db"))).expect("sqlite"),
    );
    let postgres: Arc<dyn Store> = db.open().await;
    let expected = script(sqlite).await;
    let actual = script(postgres).await;
    // PARITY_DUMP=FILE keeps the transcript, to read what the script covers.
    if let Ok(path) = std::env::var("PARITY_DUMP") {
        std::fs::write(path, actual.join("\n")).expect("write the transcript");
    }
    let mut differences = Vec::new();
    for (i, (want, got)) in expected.iter().zip(&actual).enumerate() {
        if want != got {
            differences.push(format!("line {i}:\n  sqlite:   {want}\n  postgres: {got}"));
        }
    }
    assert_eq!(
        expected.len(),
        actual.len(),
        "transcripts of different lengths"
    );
    assert!(
        differences.is_empty(),
        "{} of {} lines differ:\n{}",
        differences.len(),
        expected.len(),
        differences.join("\n")
    );
}
