//! What the cases share: resources to write, JSON checks that do not depend on how a backend
//! formats JSON, and deadlines so that a case that waits for something fails instead of hanging.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use stigmer_store::{
    ChangeFilter, JsonFilter, ListPage, ListQuery, NewResource, Scope, Store, StoreResult,
    StoredResource, WatchItem, WatchOptions,
};
use tokio::sync::mpsc;

pub(crate) const ORG: &str = "local";
pub(crate) const OTHER_ORG: &str = "other";
pub(crate) const KIND: &str = "Agent";
pub(crate) const OTHER_KIND: &str = "Skill";

/// Long enough for a loaded CI machine; a case that waits this long has failed.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

pub(crate) fn scope() -> Scope {
    Scope::new(KIND, ORG)
}

/// An Agent of org `local`.
pub(crate) fn agent(id: &str, slug: &str) -> NewResource {
    resource_in(scope(), id, slug, json!({}))
}

/// A resource whose data is `{"metadata": {"id", "slug", "name": slug}}` with `extra` merged in.
pub(crate) fn resource_in(scope: Scope, id: &str, slug: &str, extra: Value) -> NewResource {
    let mut data = json!({"metadata": {"id": id, "slug": slug, "name": slug}});
    merge(&mut data, extra);
    NewResource {
        scope,
        id: id.into(),
        slug: slug.into(),
        data: data.to_string(),
        proto: None,
    }
}

/// `resource` with `extra` merged into its data.
pub(crate) fn with(mut resource: NewResource, extra: Value) -> NewResource {
    let mut data = parse(&resource.data);
    merge(&mut data, extra);
    resource.data = data.to_string();
    resource
}

/// `resource` with a read-cache encoding.
pub(crate) fn cached(resource: NewResource, proto: &[u8]) -> NewResource {
    NewResource {
        proto: Some(proto.to_vec()),
        ..resource
    }
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                merge(into.entry(key).or_insert(Value::Null), value);
            }
        }
        (slot, value) => *slot = value,
    }
}

pub(crate) fn parse(data: &str) -> Value {
    serde_json::from_str(data)
        .unwrap_or_else(|err| panic!("stored data is not JSON ({err}): {data}"))
}

/// What a store must keep of `written` once it took `revision`: the same JSON document with
/// `$.metadata.revision` set to the revision as a string, as proto3 JSON writes an int64.
pub(crate) fn stored_as(written: &NewResource, revision: i64) -> Value {
    let mut data = parse(&written.data);
    merge(
        &mut data,
        json!({"metadata": {"revision": revision.to_string()}}),
    );
    data
}

/// Checks that `stored` is `written` as the store must keep it after taking `revision`.
pub(crate) fn assert_stored(stored: &StoredResource, written: &NewResource, revision: i64) {
    assert_eq!(
        (&stored.scope, stored.id.as_str(), stored.slug.as_str()),
        (&written.scope, written.id.as_str(), written.slug.as_str()),
        "the row's scope, id and slug are those written"
    );
    assert_eq!(stored.revision, revision, "the row's revision: {stored:?}");
    assert_eq!(
        parse(&stored.data),
        stored_as(written, revision),
        "data is the written JSON with $.metadata.revision = \"{revision}\""
    );
}

pub(crate) fn ids(rows: &[StoredResource]) -> Vec<&str> {
    rows.iter().map(|row| row.id.as_str()).collect()
}

/// Every change (or current resource) of `org`.
pub(crate) fn in_org(org: &str) -> ChangeFilter {
    ChangeFilter {
        org: org.into(),
        kind: None,
        id: None,
    }
}

/// The Agents of org `local`.
pub(crate) fn agents() -> ChangeFilter {
    ChangeFilter {
        org: ORG.into(),
        kind: Some(KIND.into()),
        id: None,
    }
}

/// A 64-hex content hash, different for each `n`.
pub(crate) fn hash(n: u32) -> String {
    format!("{n:064x}")
}

/// Awaits `future`, failing the case when it takes longer than [`DEADLINE`].
pub(crate) async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: nothing within {DEADLINE:?}"),
    }
}

pub(crate) async fn current_revision(store: &dyn Store) -> i64 {
    store.log_bounds().await.expect("log_bounds").current
}

pub(crate) async fn get(store: &dyn Store, scope: Scope, id: &str) -> Option<StoredResource> {
    store.get(scope, id.into()).await.expect("get")
}

/// One page of the Agents of `local`.
pub(crate) async fn list(
    store: &dyn Store,
    after_id: Option<&str>,
    limit: usize,
    filters: Vec<JsonFilter>,
) -> ListPage {
    store
        .list(ListQuery {
            scope: scope(),
            after_id: after_id.map(str::to_string),
            limit,
            filters,
            proto_only: false,
        })
        .await
        .expect("list")
}

pub(crate) type Items = mpsc::Receiver<StoreResult<WatchItem>>;

/// A watch of `filter` from `since_revision`, a row per step and one item of room, so that a
/// slow consumer holds the watch mid-snapshot and mid-replay.
pub(crate) fn watch(store: &Arc<dyn Store>, filter: ChangeFilter, since_revision: i64) -> Items {
    stigmer_store::watch(
        Arc::clone(store),
        WatchOptions {
            filter,
            since_revision,
            until_revision: None,
            page_size: 1,
            queued_per_watcher: 1,
            stop: None,
        },
    )
}

/// The next item of a watch; the channel must not end.
pub(crate) async fn next(items: &mut Items) -> StoreResult<WatchItem> {
    within("the next watch item", items.recv())
        .await
        .expect("the watch ended without an error item")
}

/// The next item, which must be a change: returns (revision, type, id).
pub(crate) async fn next_change(items: &mut Items) -> (i64, stigmer_store::ChangeType, String) {
    match next(items).await {
        Ok(WatchItem::Change(change)) => (change.revision, change.change_type, change.id.clone()),
        other => panic!("expected a change, got {other:?}"),
    }
}
