//! Search across kinds: what matches, the org boundary, paging and literal wildcards.

use serde_json::json;
use stigmer_store::{FindCursor, FindQuery, Scope, Store};

use crate::Harness;
use crate::support::{KIND, ORG, OTHER_KIND, OTHER_ORG, resource_in};

fn query(needle: &str, in_text: bool, after: Option<FindCursor>, limit: usize) -> FindQuery {
    FindQuery {
        org: ORG.into(),
        kinds: vec![KIND.into(), OTHER_KIND.into()],
        needle: needle.into(),
        in_text,
        after,
        limit,
    }
}

/// Every `(kind, id)` the search finds, page by page.
async fn found(
    store: &dyn Store,
    needle: &str,
    in_text: bool,
    limit: usize,
) -> Vec<(String, String)> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .find(query(needle, in_text, after, limit))
            .await
            .expect("find");
        assert!(page.items.len() <= limit, "a page holds at most its limit");
        all.extend(
            page.items
                .iter()
                .map(|row| (row.scope.kind.clone(), row.id.clone())),
        );
        match page.next_after {
            Some(next) => after = Some(next),
            None => return all,
        }
    }
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(kind, id)| (kind.to_string(), id.to_string()))
        .collect()
}

/// A search finds, case-insensitively, the rows of the org and kinds asked for whose name,
/// slug, label key or label value contains the needle, or (when asked) whose JSON does
/// anywhere; in `(kind, id)` byte order, each once across pages; `%`, `_` and `\` match only
/// themselves; other orgs and other kinds never appear.
pub async fn find_matches_names_slugs_labels_and_text_within_one_org(harness: &dyn Harness) {
    let store = harness.open().await;
    let writes = [
        (
            Scope::new(KIND, ORG),
            "agt-2",
            "reviewer",
            json!({"metadata": {"name": "Code Reviewer"}}),
        ),
        (
            Scope::new(KIND, ORG),
            "agt-1",
            "blue-fox",
            json!({"metadata": {"name": "plain"}}),
        ),
        (
            Scope::new(KIND, ORG),
            "agt-3",
            "labelled",
            json!({"metadata": {"labels": {"team": "Payments"}}}),
        ),
        (
            Scope::new(KIND, ORG),
            "agt-4",
            "keyed",
            json!({"metadata": {"labels": {"payments-owner": "x"}}}),
        ),
        (
            Scope::new(KIND, ORG),
            "agt-5",
            "texty",
            json!({"spec": {"instructions": "Handle PAYMENTS refunds"}}),
        ),
        (
            Scope::new(KIND, ORG),
            "agt-6",
            "percent",
            json!({"metadata": {"name": "100% sure_thing\\x"}}),
        ),
        (
            Scope::new(OTHER_KIND, ORG),
            "skl-1",
            "payments-skill",
            json!({}),
        ),
        (
            Scope::new(KIND, OTHER_ORG),
            "agt-9",
            "payments-elsewhere",
            json!({"metadata": {"name": "Reviewer"}}),
        ),
        (
            Scope::new("Workflow", ORG),
            "wfl-1",
            "payments-flow",
            json!({}),
        ),
    ];
    for (scope, id, slug, extra) in writes {
        store
            .create(resource_in(scope, id, slug, extra))
            .await
            .expect("create");
    }

    assert_eq!(
        found(store.as_ref(), "REVIEW", false, 10).await,
        pairs(&[("Agent", "agt-2")]),
        "name and slug, any case; the other org's reviewer stays out"
    );
    assert_eq!(
        found(store.as_ref(), "fox", false, 10).await,
        pairs(&[("Agent", "agt-1")]),
        "slug"
    );
    assert_eq!(
        found(store.as_ref(), "payments", false, 1).await,
        pairs(&[("Agent", "agt-3"), ("Agent", "agt-4"), ("Skill", "skl-1")]),
        "label value, label key, slug of another kind asked for, one per page, in (kind, id) \
         order; neither the text match (not asked for) nor a kind not asked for"
    );
    assert_eq!(
        found(store.as_ref(), "payments", true, 2).await,
        pairs(&[
            ("Agent", "agt-3"),
            ("Agent", "agt-4"),
            ("Agent", "agt-5"),
            ("Skill", "skl-1"),
        ]),
        "with the text asked for, anywhere in the document too"
    );
    assert_eq!(
        found(store.as_ref(), "0%", false, 10).await,
        pairs(&[("Agent", "agt-6")])
    );
    assert_eq!(
        found(store.as_ref(), "%", false, 10).await,
        pairs(&[("Agent", "agt-6")]),
        "% is literal"
    );
    assert_eq!(
        found(store.as_ref(), "e_t", false, 10).await,
        pairs(&[("Agent", "agt-6")]),
        "_ is literal: no other row has the three characters in a row"
    );
    assert_eq!(
        found(store.as_ref(), "g\\x", false, 10).await,
        pairs(&[("Agent", "agt-6")]),
        "\\ is literal"
    );
    assert!(found(store.as_ref(), "nowhere", true, 10).await.is_empty());

    let none = store
        .find(FindQuery {
            kinds: Vec::new(),
            ..query("payments", true, None, 10)
        })
        .await
        .expect("find with no kinds");
    assert!(none.items.is_empty() && none.next_after.is_none());
    let page = store
        .find(query("payments", false, None, 10))
        .await
        .expect("find");
    assert_eq!(
        page.revision,
        store.log_bounds().await.expect("bounds").current,
        "a page says the revision it was read at"
    );
    store.close().await.expect("close");
}
