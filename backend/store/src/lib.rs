//! The storage contract every backend implements: resources are opaque JSON documents keyed by
//! id and addressed by (kind, org, slug). This crate knows nothing of gRPC, protobuf or SQL.
#![forbid(unsafe_code)]

mod backup;
mod error;
mod metrics;
mod queue;
mod revision_text;
mod types;
mod watch;

pub use backup::{BackupCopy, BackupInfo};
pub use error::{StoreError, StoreResult};
pub use metrics::{CommitObserver, CommitStats, StoreGauges, WriterCounters};
pub use queue::{Applied, WriteOp};
pub use revision_text::with_revision;
pub use types::{
    AtRevision, CacheFill, Change, ChangeFilter, ChangeType, Compaction, FindCursor, FindPage,
    FindQuery, JsonFilter, JsonPath, ListPage, ListQuery, LogBounds, Mutation, NewResource,
    ResourceVersion, Retention, Scope, StoreInfo, StoredResource, VersionSelector, unix_millis_now,
};
pub use watch::{WatchItem, WatchOptions, watch};

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;

/// Turns one stored token into its replacement; an `Err` aborts the whole rewrite.
pub type TokenRewrite = Arc<dyn Fn(&str) -> Result<String, String> + Send + Sync>;

/// A consistent read of many resources at one revision, page by page.
#[async_trait]
pub trait Snapshot: Send {
    /// The revision every page is read at.
    fn revision(&self) -> i64;

    /// Up to `limit` more resources in id order; empty when done.
    async fn next_page(&mut self, limit: usize) -> StoreResult<Vec<StoredResource>>;
}

/// A resource store. Every mutation is atomic and durable once its future resolves `Ok`.
///
/// Each successful mutation is assigned the next value of one store-wide, strictly increasing
/// revision; the store writes it into the row and into `data` at `$.metadata.revision`, as a
/// JSON string (proto3 JSON's int64), replacing whatever the caller put there. Revisions start
/// at 1 in a new store and have no gaps: a call that fails takes none, and none is ever reused
/// (deletes take one too).
///
/// Ids are unique in the whole store, not only in their kind and org: a create of an id in use
/// fails whatever its kind or org (versions, `uncached` and `fill_read_cache` name a resource
/// by id alone). Ids compare as bytes wherever they are ordered.
///
/// `backend/store-conformance` checks every behaviour stated here; each backend runs it.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies every mutation or none, atomically and durably. Each resource mutation (create,
    /// replace, delete) takes the next revision, in order; the result holds one row for each,
    /// in order (a deleted one as it was). Artifact and version mutations take no revision and
    /// have no row. The first failing mutation fails the whole call with its error, and then
    /// nothing of the call is stored, logged or published.
    async fn transact(&self, mutations: Vec<Mutation>) -> StoreResult<Vec<StoredResource>>;

    /// Inserts a new resource. Fails with [`StoreError::AlreadyExists`] when another resource
    /// of the same kind and org already uses the slug.
    async fn create(&self, resource: NewResource) -> StoreResult<StoredResource> {
        single(self.transact(vec![Mutation::Create(resource)]).await)
    }

    /// Replaces the resource with `resource.id`, only if its revision is still `expected_revision`
    /// (otherwise [`StoreError::Conflict`] with the current revision). The slug may change, to
    /// one free in the kind and org ([`StoreError::AlreadyExists`] otherwise). Fails with
    /// [`StoreError::NotFound`] when the kind and org hold no resource with that id.
    async fn replace(
        &self,
        resource: NewResource,
        expected_revision: i64,
    ) -> StoreResult<StoredResource> {
        single(
            self.transact(vec![Mutation::Replace {
                resource,
                expected_revision,
            }])
            .await,
        )
    }

    /// Deletes a resource and returns it as it was. `expected_revision` of `None` skips the check;
    /// a stale one fails with [`StoreError::Conflict`], a missing resource with
    /// [`StoreError::NotFound`]. The delete takes a revision; its change holds the resource as it
    /// was.
    async fn delete(
        &self,
        scope: Scope,
        id: String,
        expected_revision: Option<i64>,
    ) -> StoreResult<StoredResource> {
        single(
            self.transact(vec![Mutation::Delete {
                scope,
                id,
                expected_revision,
            }])
            .await,
        )
    }

    /// Reads one resource by id.
    async fn get(&self, scope: Scope, id: String) -> StoreResult<Option<StoredResource>>;

    /// Reads one resource by slug.
    async fn get_by_slug(&self, scope: Scope, slug: String) -> StoreResult<Option<StoredResource>>;

    /// Reads one page of resources in ascending id order (see [`ListQuery`], [`ListPage`]).
    async fn list(&self, query: ListQuery) -> StoreResult<ListPage>;

    /// Reads one page of a search across kinds in one org (see [`FindQuery`], [`FindPage`]):
    /// at most `limit` matching rows in `(kind, id)` order. It reads the org's rows of those
    /// kinds one by one until the page is full, so a rare match costs a scan of the org.
    async fn find(&self, query: FindQuery) -> StoreResult<FindPage>;

    /// Live changes, published after they commit, in revision order. A receiver that falls
    /// behind by more than the store's buffer gets `RecvError::Lagged`. Closing the store ends
    /// every receiver (`RecvError::Closed`, once it has what was published before), so that
    /// watches end too.
    fn subscribe(&self) -> broadcast::Receiver<Arc<Change>>;

    /// Changes with a revision greater than `after` that match `filter`, in revision order, at
    /// most `limit`. Fails with [`StoreError::Compacted`] when `after` is older than the log
    /// (below `log_bounds().compacted`); an `after` at or past the current revision gives none.
    async fn changes(
        &self,
        filter: ChangeFilter,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<Change>>;

    /// Starts a consistent read of the current resources matching `filter`, at the current
    /// revision: writes committed after it starts are not seen.
    async fn snapshot(&self, filter: ChangeFilter) -> StoreResult<Box<dyn Snapshot>>;

    /// What the change log spans now; `(0, 0)` in a new store.
    async fn log_bounds(&self) -> StoreResult<LogBounds>;

    /// A resource as it was at `revision` (see [`AtRevision`]). A resource unchanged since
    /// before the compaction point still answers `Existed`: its current row is that version.
    async fn at_revision(&self, scope: Scope, id: String, revision: i64)
    -> StoreResult<AtRevision>;

    /// Removes changes the retention no longer requires, in small steps between writes, always
    /// a prefix of the log; returns how many went and the new `compacted` bound. Takes no
    /// revision.
    async fn compact(&self, retention: Retention) -> StoreResult<Compaction>;

    /// Backend facts and resource counts per kind in `org`.
    async fn info(&self, org: String) -> StoreResult<StoreInfo>;

    /// Figures for metrics, read at each scrape (see [`StoreGauges`]). The default knows the
    /// revision only; both backends say more.
    async fn gauges(&self) -> StoreResult<StoreGauges> {
        Ok(StoreGauges {
            revision: self.log_bounds().await?.current,
            ..StoreGauges::default()
        })
    }

    /// From now on, tells `observer` of every batch of writes committed, replacing any
    /// observer set before. The default tells it nothing.
    fn observe_commits(&self, observer: Arc<dyn CommitObserver>) {
        let _ = observer;
    }

    /// The bytes of an artifact, by SHA-256 (hex).
    async fn artifact(&self, hash: String) -> StoreResult<Option<Vec<u8>>>;

    /// One version of a versioned resource, as it was when written: its revision and data, with
    /// the resource's current scope and slug, and no `proto`.
    async fn version(
        &self,
        resource_id: String,
        selector: VersionSelector,
    ) -> StoreResult<Option<StoredResource>>;

    /// Every version of a versioned resource, oldest (lowest revision) first.
    async fn versions(&self, resource_id: String) -> StoreResult<Vec<ResourceVersion>>;

    /// A store-wide text setting.
    async fn setting(&self, key: String) -> StoreResult<Option<String>>;

    /// Sets a store-wide text setting, durably. Takes no revision.
    async fn put_setting(&self, key: String, value: String) -> StoreResult<()>;

    /// Rewrites, in one transaction, every stored token that starts with `prefix` (in current
    /// resources, the change log and anything else that keeps resource data) with what
    /// `rewrite` makes of it. Tokens end at the next `"`. Returns how many were rewritten.
    /// Used to re-seal secrets under a new key. Takes no revision; a rewritten resource loses
    /// its `proto` (it is then [`Store::uncached`]), and an `Err` leaves everything as it was.
    async fn rewrite_tokens(&self, prefix: String, rewrite: TokenRewrite) -> StoreResult<u64>;

    /// Up to `limit` resources without a read-cache encoding (`proto` is `None`: written without
    /// one, written before the cache existed, edited by hand, or re-sealed), in id order after
    /// `after_id` (`""` for the first).
    async fn uncached(&self, after_id: String, limit: usize) -> StoreResult<Vec<StoredResource>>;

    /// Stores each fill's encoding on its row if the row still has no encoding and still holds
    /// the fill's `data`, durably, without a new revision or change-log entry. Returns how many
    /// rows took their encoding.
    async fn fill_read_cache(&self, fills: Vec<CacheFill>) -> StoreResult<u64>;

    /// A consistent copy of the whole database, at one revision, taken while writes go on (they
    /// are neither stopped nor slowed beyond the reads the copy makes). A backend that leaves
    /// backups to its own tools answers [`StoreError::Unsupported`] naming them.
    async fn backup(&self) -> StoreResult<Box<dyn BackupCopy>> {
        Err(StoreError::Unsupported(
            "this store takes no backups through the API; use its own backup tools".into(),
        ))
    }

    /// Flushes and closes the store. Calls made afterwards fail with [`StoreError::Closed`]
    /// (so watches started afterwards do too), and live receivers end (see [`Store::subscribe`]).
    async fn close(&self) -> StoreResult<()>;
}

/// Replaces each `prefix…` token (up to the closing quote of its JSON string) in `text` with
/// what `rewrite` makes of it; returns the new text and how many tokens it replaced. What
/// every backend's [`Store::rewrite_tokens`] does to each stored document.
pub fn rewrite_text(
    text: &str,
    prefix: &str,
    rewrite: &TokenRewrite,
) -> StoreResult<(String, u64)> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut count = 0;
    while let Some(at) = rest.find(prefix) {
        out.push_str(&rest[..at]);
        let token_len = rest[at..].find('"').unwrap_or(rest.len() - at);
        let token = &rest[at..at + token_len];
        out.push_str(&rewrite(token).map_err(StoreError::Internal)?);
        rest = &rest[at + token_len..];
        count += 1;
    }
    out.push_str(rest);
    Ok((out, count))
}

/// Whether a [`Mutation::Expect`] holds, given the revision the resource was `found` at: what
/// every backend's writer answers for one.
pub fn expectation(
    scope: &Scope,
    id: &str,
    expected: Option<i64>,
    found: Option<i64>,
) -> StoreResult<()> {
    if expected == found {
        return Ok(());
    }
    Err(StoreError::ExpectationFailed {
        kind: scope.kind.clone(),
        id: id.to_string(),
        expected,
        found,
    })
}

fn single(result: StoreResult<Vec<StoredResource>>) -> StoreResult<StoredResource> {
    result?
        .pop()
        .ok_or_else(|| StoreError::Internal("a one-mutation transaction returned nothing".into()))
}
