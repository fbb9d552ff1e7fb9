//! Watch snapshots: a consistent read of many resources at one revision, page by page, in one
//! REPEATABLE READ transaction on a connection held until the snapshot is done.

use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Object, Pool};
use stigmer_store::{ChangeFilter, Snapshot, StoreError, StoreResult, StoredResource};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::errors::{pool_error, store_error};
use crate::queries::{log_bounds, matching_resources};

pub(crate) struct PgSnapshot {
    /// `None` once the snapshot is done and its connection back in the pool.
    client: Option<Object>,
    revision: i64,
    filter: ChangeFilter,
    after_id: String,
    _permit: OwnedSemaphorePermit,
}

impl PgSnapshot {
    /// Opens a snapshot once one of the `slots` is free.
    pub(crate) async fn open(
        pool: &Pool,
        slots: &Arc<Semaphore>,
        filter: ChangeFilter,
    ) -> StoreResult<Self> {
        let permit = Arc::clone(slots)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let client = pool.get().await.map_err(pool_error)?;
        let mut snapshot = Self {
            client: Some(client),
            revision: 0,
            filter,
            after_id: String::new(),
            _permit: permit,
        };
        let client = snapshot.client()?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(store_error)?;
        // The first read inside the transaction fixes the snapshot every page sees.
        let revision = log_bounds(client).await?.current;
        snapshot.revision = revision;
        Ok(snapshot)
    }

    fn client(&self) -> StoreResult<&Object> {
        self.client.as_ref().ok_or(StoreError::Closed)
    }
}

#[async_trait]
impl Snapshot for PgSnapshot {
    fn revision(&self) -> i64 {
        self.revision
    }

    async fn next_page(&mut self, limit: usize) -> StoreResult<Vec<StoredResource>> {
        let Some(client) = self.client.as_ref() else {
            return Ok(Vec::new());
        };
        let page = matching_resources(client, &self.filter, &self.after_id, limit).await?;
        match page.last() {
            Some(last) => self.after_id.clone_from(&last.id),
            None => {
                // Done: end the transaction and give the connection back.
                if let Some(client) = self.client.take() {
                    client.batch_execute("COMMIT").await.map_err(store_error)?;
                }
            }
        }
        Ok(page)
    }
}

impl Drop for PgSnapshot {
    /// A snapshot left unfinished (the watcher went away) must not hand a connection still
    /// inside its transaction back to the pool: it is rolled back first, or, outside a
    /// runtime or on failure, closed instead of reused.
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if client.batch_execute("ROLLBACK").await.is_err() {
                        drop(Object::take(client));
                    }
                });
            }
            Err(_) => drop(Object::take(client)),
        }
    }
}
