//! Listing: keyset pages in id order, JSON filters, `proto_only` and totals.

use serde_json::{Value, json};
use stigmer_store::{JsonFilter, JsonPath, ListQuery, Scope};

use crate::Harness;
use crate::support::{
    KIND, ORG, OTHER_KIND, OTHER_ORG, agent, cached, current_revision, get, ids, list, resource_in,
    scope, with,
};

/// Pages hold the resources of one kind and org with an id greater than `after_id` (which
/// need not exist), in ascending byte order of id, at most `limit` of them; `next_after_id`
/// is the last id of a page when more follow and `None` on the last page. Each page carries
/// the revision it was read at.
pub async fn list_pages_in_ascending_id_order(harness: &dyn Harness) {
    let store = harness.open().await;
    // Byte order, not a locale's: "Z" < "_" < "a", and punctuation counts.
    let mut expected = vec![
        "agt-3", "agt-0", "agt-a1", "agt-6", "agt-_1", "agt-1", "agt-Z1", "agt-2", "agt-5",
    ];
    for (n, id) in expected.iter().enumerate() {
        store
            .create(cached(agent(id, &format!("s{n}")), id.as_bytes()))
            .await
            .expect("create");
    }
    // Neighbours by id in other scopes, which a page must skip.
    for (scope, id) in [
        (Scope::new(KIND, OTHER_ORG), "agt-2a"),
        (Scope::new(OTHER_KIND, ORG), "agt-0a"),
        (Scope::new(KIND, OTHER_ORG), "agt-9"),
    ] {
        store
            .create(resource_in(scope, id, id, json!({})))
            .await
            .expect("create elsewhere");
    }
    expected.sort_unstable();
    let revision = current_revision(store.as_ref()).await;

    let mut after_id: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let page = list(store.as_ref(), after_id.as_deref(), 4, Vec::new()).await;
        assert_eq!(
            page.revision, revision,
            "a page is read at the current revision"
        );
        for row in &page.items {
            assert_eq!(
                get(store.as_ref(), scope(), &row.id).await.as_ref(),
                Some(row),
                "a listed row is the row get returns"
            );
        }
        let page_ids: Vec<String> = page.items.iter().map(|row| row.id.clone()).collect();
        assert_eq!(
            page.next_after_id.as_ref(),
            if pages.len() < 2 {
                page_ids.last()
            } else {
                None
            },
            "page {}: next_after_id is the page's last id while more follow",
            pages.len()
        );
        pages.push(page_ids);
        match page.next_after_id {
            Some(next) => after_id = Some(next),
            None => break,
        }
    }
    assert_eq!(
        pages,
        [&expected[0..4], &expected[4..8], &expected[8..]],
        "pages of 4 in byte order of id"
    );

    let whole = list(store.as_ref(), None, expected.len(), Vec::new()).await;
    assert_eq!(ids(&whole.items), expected);
    assert_eq!(
        whole.next_after_id, None,
        "a page that ends exactly at the last resource is the last"
    );
    let from_gap = list(store.as_ref(), Some("agt-2a"), 2, Vec::new()).await;
    assert_eq!(
        ids(&from_gap.items),
        ["agt-3", "agt-5"],
        "after_id need not be an id in the listing"
    );
    let past_end = list(store.as_ref(), Some("agt-a1"), 10, Vec::new()).await;
    assert!(past_end.items.is_empty() && past_end.next_after_id.is_none());
    let nobody = store
        .list(ListQuery {
            scope: Scope::new(KIND, "nobody"),
            after_id: None,
            limit: 10,
            filters: Vec::new(),
            proto_only: false,
        })
        .await
        .expect("list");
    assert!(nobody.items.is_empty() && nobody.next_after_id.is_none());
    assert_eq!(nobody.total, Some(0));
    store.close().await.expect("close");
}

/// Every `JsonFilter` variant on string values, objects and arrays, with label keys that
/// hold dots and slashes (a key is one key, never a path), missing values, case-sensitive
/// prefixes with LIKE wildcards taken literally, filters combined (all must hold), and
/// paging through a filtered listing.
pub async fn list_filters_on_json_values(harness: &dyn Harness) {
    let store = harness.open().await;
    let rows: [(&str, Value); 6] = [
        (
            "agt-1",
            json!({"metadata": {"name": "alpha-one", "tags": ["blue", "green"],
                "labels": {"app.kubernetes.io/name": "web", "tier": "front"}},
                "status": {"phase": "RUNNING"}}),
        ),
        (
            "agt-2",
            json!({"metadata": {"name": "alpha-two", "tags": ["green"],
                "labels": {"app.kubernetes.io/name": "api", "tier": "back"}},
                "status": {"phase": "DONE"}}),
        ),
        (
            "agt-3",
            json!({"metadata": {"name": "beta", "tags": [], "labels": {"tier": "front"}},
                "status": {"phase": "RUNNING"}}),
        ),
        ("agt-4", json!({"metadata": {"name": "Alpha%_x"}})),
        (
            "agt-5",
            json!({"metadata": {"name": "alpha_1",
                "labels": {"app.kubernetes.io/name": "web.v2/x"}}}),
        ),
        (
            // The same words as nested keys: a backend that splits label keys at dots or
            // slashes would take this for app.kubernetes.io/name = web.
            "agt-6",
            json!({"metadata": {"name": "gamma",
                "labels": {"app": {"kubernetes": {"io/name": "web", "io": {"name": "web"}}}}}}),
        ),
    ];
    for (id, extra) in &rows {
        store
            .create(with(agent(id, id), extra.clone()))
            .await
            .expect("create");
    }
    // The same labels in another org: never listed.
    store
        .create(with(
            resource_in(Scope::new(KIND, OTHER_ORG), "agt-0", "x", json!({})),
            rows[0].1.clone(),
        ))
        .await
        .expect("create elsewhere");

    let labels = JsonPath::fields("metadata.labels");
    let app = labels.child("app.kubernetes.io/name");
    let tier = labels.child("tier");
    let name = JsonPath::fields("metadata.name");
    let tags = JsonPath::fields("metadata.tags");
    let phase = JsonPath::fields("status.phase");
    let strings = |values: &[&str]| values.iter().map(|v| v.to_string()).collect::<Vec<_>>();
    let cases: Vec<(&str, Vec<JsonFilter>, Vec<&str>)> = vec![
        (
            "Equals on a key with dots and a slash",
            vec![JsonFilter::Equals {
                path: app.clone(),
                value: "web".into(),
            }],
            vec!["agt-1"],
        ),
        (
            "Equals",
            vec![JsonFilter::Equals {
                path: tier.clone(),
                value: "front".into(),
            }],
            vec!["agt-1", "agt-3"],
        ),
        (
            "Equals on a value with dots and slashes",
            vec![JsonFilter::Equals {
                path: app.clone(),
                value: "web.v2/x".into(),
            }],
            vec!["agt-5"],
        ),
        (
            "NotEquals, missing values included",
            vec![JsonFilter::NotEquals {
                path: app.clone(),
                value: "web".into(),
            }],
            vec!["agt-2", "agt-3", "agt-4", "agt-5", "agt-6"],
        ),
        (
            "In",
            vec![JsonFilter::In {
                path: app.clone(),
                values: strings(&["web", "api", "nothing"]),
            }],
            vec!["agt-1", "agt-2"],
        ),
        (
            "NotIn, missing values included",
            vec![JsonFilter::NotIn {
                path: app.clone(),
                values: strings(&["web", "api"]),
            }],
            vec!["agt-3", "agt-4", "agt-5", "agt-6"],
        ),
        (
            "Exists",
            vec![JsonFilter::Exists { path: app.clone() }],
            vec!["agt-1", "agt-2", "agt-5"],
        ),
        (
            "Missing",
            vec![JsonFilter::Missing { path: app.clone() }],
            vec!["agt-3", "agt-4", "agt-6"],
        ),
        (
            "Exists on an object",
            vec![JsonFilter::Exists {
                path: labels.clone(),
            }],
            vec!["agt-1", "agt-2", "agt-3", "agt-5", "agt-6"],
        ),
        (
            "Missing on an object",
            vec![JsonFilter::Missing {
                path: labels.clone(),
            }],
            vec!["agt-4"],
        ),
        (
            "Prefix is case-sensitive",
            vec![JsonFilter::Prefix {
                path: name.clone(),
                prefix: "alpha".into(),
            }],
            vec!["agt-1", "agt-2", "agt-5"],
        ),
        (
            "Prefix takes _ literally",
            vec![JsonFilter::Prefix {
                path: name.clone(),
                prefix: "alpha_".into(),
            }],
            vec!["agt-5"],
        ),
        (
            "Prefix takes % literally",
            vec![JsonFilter::Prefix {
                path: name.clone(),
                prefix: "Alpha%".into(),
            }],
            vec!["agt-4"],
        ),
        (
            "Prefix % alone",
            vec![JsonFilter::Prefix {
                path: name.clone(),
                prefix: "%".into(),
            }],
            vec![],
        ),
        (
            "Prefix on a path some lack",
            vec![JsonFilter::Prefix {
                path: phase.clone(),
                prefix: "RUN".into(),
            }],
            vec!["agt-1", "agt-3"],
        ),
        (
            "Contains",
            vec![JsonFilter::Contains {
                path: tags.clone(),
                value: "green".into(),
            }],
            vec!["agt-1", "agt-2"],
        ),
        (
            "Contains compares whole elements",
            vec![JsonFilter::Contains {
                path: tags.clone(),
                value: "gre".into(),
            }],
            vec![],
        ),
        (
            "every filter must hold",
            vec![
                JsonFilter::Contains {
                    path: tags.clone(),
                    value: "green".into(),
                },
                JsonFilter::Equals {
                    path: tier.clone(),
                    value: "front".into(),
                },
            ],
            vec!["agt-1"],
        ),
        (
            "every filter must hold, with missing values",
            vec![
                JsonFilter::Exists { path: app.clone() },
                JsonFilter::NotEquals {
                    path: phase.clone(),
                    value: "RUNNING".into(),
                },
            ],
            vec!["agt-2", "agt-5"],
        ),
    ];
    for (what, filters, expected) in cases {
        let page = list(store.as_ref(), None, 100, filters.clone()).await;
        assert_eq!(ids(&page.items), expected, "{what}: {filters:?}");
        assert_eq!(page.next_after_id, None, "{what}");
    }

    let both = vec![JsonFilter::In {
        path: app,
        values: strings(&["web", "api"]),
    }];
    let first = list(store.as_ref(), None, 1, both.clone()).await;
    assert_eq!(ids(&first.items), ["agt-1"]);
    assert_eq!(first.next_after_id.as_deref(), Some("agt-1"));
    let second = list(store.as_ref(), Some("agt-1"), 1, both.clone()).await;
    assert_eq!(ids(&second.items), ["agt-2"]);
    let rest = list(
        store.as_ref(),
        second.next_after_id.as_deref().or(Some("agt-2")),
        1,
        both,
    )
    .await;
    assert!(
        rest.items.is_empty() && rest.next_after_id.is_none(),
        "no third match: {rest:?}"
    );
    store.close().await.expect("close");
}

/// `proto_only` leaves `data` empty in the rows that have a cached encoding, and keeps it in
/// those that have none (the caller must decode them).
pub async fn list_proto_only_leaves_data_out_of_cached_rows(harness: &dyn Harness) {
    let store = harness.open().await;
    let with_proto = store
        .create(cached(agent("agt-1", "one"), b"enc-1"))
        .await
        .expect("create");
    let without = store.create(agent("agt-2", "two")).await.expect("create");
    let page = store
        .list(ListQuery {
            scope: scope(),
            after_id: None,
            limit: 10,
            filters: Vec::new(),
            proto_only: true,
        })
        .await
        .expect("list");
    assert_eq!(ids(&page.items), ["agt-1", "agt-2"]);
    let (first, second) = (&page.items[0], &page.items[1]);
    assert_eq!(first.data, "", "a cached row comes without data");
    assert_eq!(first.proto.as_deref(), Some(&b"enc-1"[..]));
    assert_eq!(first.revision, with_proto.revision);
    assert_eq!(second, &without, "a row without an encoding comes whole");
    let full = list(store.as_ref(), None, 10, Vec::new()).await;
    assert_eq!(
        full.items,
        [with_proto, without],
        "without proto_only, rows come whole"
    );
    store.close().await.expect("close");
}

/// `total` counts the whole listing (every page) at the page's revision: always for an
/// unfiltered listing, on every page; for a filtered one only when its first page is also its
/// last, and `None` otherwise.
pub async fn list_totals(harness: &dyn Harness) {
    let store = harness.open().await;
    for n in 0..5 {
        store
            .create(agent(&format!("agt-{n}"), &format!("s{n}")))
            .await
            .expect("create");
    }
    store
        .create(resource_in(
            Scope::new(KIND, OTHER_ORG),
            "agt-x",
            "x",
            json!({}),
        ))
        .await
        .expect("create in another org");
    store
        .create(resource_in(
            Scope::new(OTHER_KIND, ORG),
            "skl-x",
            "x",
            json!({}),
        ))
        .await
        .expect("create of another kind");
    store
        .delete(scope(), "agt-4".into(), None)
        .await
        .expect("delete");

    assert_eq!(list(store.as_ref(), None, 2, vec![]).await.total, Some(4));
    assert_eq!(
        list(store.as_ref(), Some("agt-1"), 2, vec![]).await.total,
        Some(4),
        "every page of an unfiltered listing"
    );
    assert_eq!(
        list(store.as_ref(), Some("agt-9"), 2, vec![]).await.total,
        Some(4),
        "even an empty one"
    );
    let slug_is = |slugs: &[&str]| {
        vec![JsonFilter::In {
            path: JsonPath::fields("metadata.slug"),
            values: slugs.iter().map(|s| s.to_string()).collect(),
        }]
    };
    assert_eq!(
        list(store.as_ref(), None, 10, slug_is(&["s1"])).await.total,
        Some(1),
        "a filtered listing whose first page is its last"
    );
    assert_eq!(
        list(store.as_ref(), None, 10, slug_is(&["nothing"]))
            .await
            .total,
        Some(0),
        "a filtered listing with no match"
    );
    assert_eq!(
        list(store.as_ref(), Some("agt-0"), 10, slug_is(&["s1"]))
            .await
            .total,
        None,
        "a later page of a filtered listing"
    );
    assert_eq!(
        list(store.as_ref(), None, 1, slug_is(&["s1", "s2"]))
            .await
            .total,
        None,
        "a filtered first page that is not the last"
    );
    store.close().await.expect("close");
}
