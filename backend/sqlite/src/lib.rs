//! The SQLite implementation of [`stigmer_store::Store`].
//!
//! One writer thread owns the only read-write connection and commits queued mutations in
//! batches (group commit: one fsync for many callers, each in its own savepoint so one failing
//! write never sinks the others). Reads run on a few reader threads with read-only connections,
//! which WAL mode lets proceed while the writer commits. Nothing here blocks the async runtime.
#![forbid(unsafe_code)]

mod config;
mod errors;
mod queries;
mod reader;
mod schema;
mod writer;

pub use config::{SqliteConfig, Synchronous};
pub use errors::OpenError;

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use async_trait::async_trait;
use stigmer_store::{
    ListPage, ListQuery, NewResource, Scope, Store, StoreError, StoreResult, StoredResource,
};
use tokio::sync::oneshot;

use crate::reader::ReaderPool;
use crate::writer::{WriteOp, Writer};

/// See [`SqliteStore::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    pub batches: u64,
    pub writes: u64,
    pub queued: usize,
    pub committing: u64,
}

/// A store backed by one SQLite database file.
pub struct SqliteStore {
    writer: Writer,
    readers: ReaderPool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database, applies pending migrations and starts the
    /// writer and reader threads.
    pub fn open(config: &SqliteConfig) -> Result<Self, OpenError> {
        schema::prepare_path(&config.path)?;
        let mut conn = schema::open_writer_connection(config)?;
        schema::migrate(&mut conn)?;
        let mut threads = Vec::new();
        let writer = Writer::spawn(conn, config, &mut threads)?;
        let readers = ReaderPool::spawn(config, &mut threads)?;
        Ok(Self {
            writer,
            readers,
            threads: Mutex::new(threads),
        })
    }

    /// Counters of the writer: committed transactions (batches), the writes they held, the
    /// writes waiting now and those in the transaction being committed. writes / batches is the group-commit factor.
    pub fn stats(&self) -> WriterStats {
        let counters = self.writer.counters();
        WriterStats {
            batches: counters.batches.load(Ordering::Relaxed),
            writes: counters.writes.load(Ordering::Relaxed),
            queued: self.writer.queued(),
            committing: counters.committing.load(Ordering::Relaxed),
        }
    }

    async fn write(&self, op: WriteOp) -> StoreResult<StoredResource> {
        self.writer.submit(op).await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create(&self, resource: NewResource) -> StoreResult<StoredResource> {
        self.write(WriteOp::Insert(resource)).await
    }

    async fn replace(
        &self,
        resource: NewResource,
        expected_revision: i64,
    ) -> StoreResult<StoredResource> {
        self.write(WriteOp::Replace {
            resource,
            expected_revision,
        })
        .await
    }

    async fn delete(
        &self,
        scope: Scope,
        id: String,
        expected_revision: Option<i64>,
    ) -> StoreResult<StoredResource> {
        self.write(WriteOp::Delete {
            scope,
            id,
            expected_revision,
        })
        .await
    }

    async fn get(&self, scope: Scope, id: String) -> StoreResult<Option<StoredResource>> {
        self.readers
            .run(move |conn| queries::get_by_id(conn, &scope, &id))
            .await
    }

    async fn get_by_slug(&self, scope: Scope, slug: String) -> StoreResult<Option<StoredResource>> {
        self.readers
            .run(move |conn| queries::get_by_slug(conn, &scope, &slug))
            .await
    }

    async fn list(&self, query: ListQuery) -> StoreResult<ListPage> {
        self.readers
            .run(move |conn| queries::list(conn, &query))
            .await
    }

    async fn close(&self) -> StoreResult<()> {
        self.readers.shutdown().await;
        let (done_tx, done_rx) = oneshot::channel();
        if self.writer.shutdown(done_tx).await {
            done_rx.await.map_err(|_| StoreError::Closed)??;
        }
        let threads = match self.threads.lock() {
            Ok(mut threads) => std::mem::take(&mut *threads),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("a storage thread panicked before shutdown");
                }
            }
        })
        .await
        .map_err(|err| StoreError::Internal(format!("joining storage threads: {err}")))
    }
}
