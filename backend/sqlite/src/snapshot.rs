//! Watch snapshots: a consistent read of many resources at one revision, page by page, on a
//! read-only connection of its own that holds one read transaction until the snapshot is done.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::Connection;
use stigmer_store::{ChangeFilter, Snapshot, StoreError, StoreResult, StoredResource};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::SqliteConfig;
use crate::errors::store_error;
use crate::queries::{log_bounds, matching_resources};
use crate::schema::open_reader_connection;

pub(crate) struct SqliteSnapshot {
    /// `None` only while a page is being read on a blocking thread.
    conn: Option<Connection>,
    revision: i64,
    filter: ChangeFilter,
    after_id: String,
    _permit: OwnedSemaphorePermit,
}

impl SqliteSnapshot {
    /// Opens a snapshot once one of the `slots` is free.
    pub(crate) async fn open(
        config: &SqliteConfig,
        slots: &Arc<Semaphore>,
        filter: ChangeFilter,
    ) -> StoreResult<Self> {
        let permit = Arc::clone(slots)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let config = config.clone();
        let (conn, revision) = tokio::task::spawn_blocking(move || {
            let conn = open_reader_connection(&config)
                .map_err(|err| StoreError::Internal(err.to_string()))?;
            // The first read inside the transaction fixes the snapshot every page sees.
            conn.execute_batch("BEGIN").map_err(store_error)?;
            let revision = log_bounds(&conn)?.current;
            Ok::<_, StoreError>((conn, revision))
        })
        .await
        .map_err(|err| StoreError::Internal(format!("snapshot task: {err}")))??;
        Ok(Self {
            conn: Some(conn),
            revision,
            filter,
            after_id: String::new(),
            _permit: permit,
        })
    }
}

#[async_trait]
impl Snapshot for SqliteSnapshot {
    fn revision(&self) -> i64 {
        self.revision
    }

    async fn next_page(&mut self, limit: usize) -> StoreResult<Vec<StoredResource>> {
        let conn = self.conn.take().ok_or(StoreError::Closed)?;
        let filter = self.filter.clone();
        let after_id = self.after_id.clone();
        let (conn, page) = tokio::task::spawn_blocking(move || {
            let page = matching_resources(&conn, &filter, &after_id, limit);
            (conn, page)
        })
        .await
        .map_err(|err| StoreError::Internal(format!("snapshot task: {err}")))?;
        self.conn = Some(conn);
        let page = page?;
        if let Some(last) = page.last() {
            self.after_id.clone_from(&last.id);
        }
        Ok(page)
    }
}
