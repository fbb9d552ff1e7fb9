//! The storage contract every backend implements: resources are opaque JSON documents keyed by
//! id and addressed by (kind, org, slug). This crate knows nothing of gRPC, protobuf or SQL.
#![forbid(unsafe_code)]

mod error;
mod types;

pub use error::{StoreError, StoreResult};
pub use types::{JsonFilter, ListPage, ListQuery, NewResource, Scope, StoredResource};

use async_trait::async_trait;

/// A resource store. Every mutation is atomic and durable once its future resolves `Ok`.
///
/// Each successful mutation is assigned the next value of one store-wide, strictly increasing
/// revision; the store writes it into the row and into `data` at `$.metadata.revision`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a new resource. Fails with [`StoreError::AlreadyExists`] when another resource
    /// of the same kind and org already uses the slug.
    async fn create(&self, resource: NewResource) -> StoreResult<StoredResource>;

    /// Replaces the resource with `resource.id`, only if its revision is still `expected_revision`
    /// (otherwise [`StoreError::Conflict`]).
    async fn replace(
        &self,
        resource: NewResource,
        expected_revision: i64,
    ) -> StoreResult<StoredResource>;

    /// Deletes a resource and returns it as it was. `expected_revision` of `None` skips the check.
    async fn delete(
        &self,
        scope: Scope,
        id: String,
        expected_revision: Option<i64>,
    ) -> StoreResult<StoredResource>;

    /// Reads one resource by id.
    async fn get(&self, scope: Scope, id: String) -> StoreResult<Option<StoredResource>>;

    /// Reads one resource by slug.
    async fn get_by_slug(&self, scope: Scope, slug: String) -> StoreResult<Option<StoredResource>>;

    /// Reads one page of resources in id order.
    async fn list(&self, query: ListQuery) -> StoreResult<ListPage>;

    /// Flushes and closes the store. Calls made afterwards fail with [`StoreError::Closed`].
    async fn close(&self) -> StoreResult<()>;
}
