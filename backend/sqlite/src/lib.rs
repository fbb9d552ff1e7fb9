//! The SQLite implementation of [`stigmer_store::Store`].
//!
//! One writer thread owns the only read-write connection and commits queued mutations in
//! batches (group commit: one fsync for many callers, each in its own savepoint so one failing
//! write never sinks the others). Reads run on a few reader threads with read-only connections,
//! which WAL mode lets proceed while the writer commits. Nothing here blocks the async runtime.
#![forbid(unsafe_code)]

mod backup;
mod config;
mod errors;
mod options;
mod queries;
mod reader;
mod reserve;
mod restore;
mod schema;
mod snapshot;
mod writer;

pub use config::{AfterCommit, DEFAULT_RESERVE_BYTES, SqliteConfig, Synchronous};
pub use errors::OpenError;
pub use options::{Durability, SqliteOptions};
pub use restore::{RestoreError, Restored, restore};

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use stigmer_store::{
    AtRevision, BackupCopy, CacheFill, Change, ChangeFilter, CommitObserver, Compaction, FindPage,
    FindQuery, ListPage, ListQuery, LogBounds, Mutation, ResourceVersion, Retention, Scope,
    Snapshot, Store, StoreError, StoreGauges, StoreInfo, StoreResult, StoredResource, TokenRewrite,
    VersionSelector,
};
use tokio::sync::{Semaphore, broadcast, oneshot};

use crate::backup::SqliteBackup;
use crate::reader::ReaderPool;
use crate::reserve::{Reserve, Space};
use crate::snapshot::SqliteSnapshot;
use crate::writer::{Applied, WriteOp, Writer};

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
    config: SqliteConfig,
    writer: Writer,
    readers: ReaderPool,
    snapshots: Arc<Semaphore>,
    /// One backup copy at a time (`backup.rs`).
    backups: Arc<Semaphore>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// What `info` says the store runs on, with the writer connection's `synchronous` level
    /// as SQLite reported it after it was set, not as configured.
    database: String,
    /// Held until the store closes (see `schema::lock`).
    lock: Mutex<Option<std::fs::File>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database, applies pending migrations and starts the
    /// writer and reader threads.
    pub fn open(config: &SqliteConfig) -> Result<Self, OpenError> {
        schema::prepare_path(&config.path)?;
        let lock = schema::lock(&config.path)?;
        backup::remove_stale_copies(&config.path);
        let reserve = Reserve::new(&config.path, config.reserve_bytes);
        reserve.make_room_to_open();
        let mut conn = schema::open_writer_connection(config)?;
        schema::migrate(&mut conn, &config.path)?;
        let database = format!(
            "SQLite {}, WAL, synchronous={}",
            rusqlite::version(),
            schema::synchronous_level(&conn).map_err(|error| OpenError::Sqlite {
                path: config.path.clone(),
                error,
            })?
        );
        let space = Space::start(reserve, &conn);
        let mut threads = Vec::new();
        let writer = Writer::spawn(conn, config, space, &mut threads)?;
        let readers = ReaderPool::open(config)?;
        Ok(Self {
            config: config.clone(),
            writer,
            readers,
            database,
            snapshots: Arc::new(Semaphore::new(config.max_snapshots.max(1))),
            backups: Arc::new(Semaphore::new(1)),
            threads: Mutex::new(threads),
            lock: Mutex::new(Some(lock)),
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

    /// Waits for the storage threads, then lets another process take the database.
    async fn join_and_unlock(&self) -> StoreResult<()> {
        let threads = match self.threads.lock() {
            Ok(mut threads) => std::mem::take(&mut *threads),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        let lock = match self.lock.lock() {
            Ok(mut lock) => lock.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("a storage thread panicked before shutdown");
                }
            }
            // Only once every connection is closed may another process take the database.
            drop(lock);
        })
        .await
        .map_err(|err| StoreError::Internal(format!("joining storage threads: {err}")))
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn transact(&self, mutations: Vec<Mutation>) -> StoreResult<Vec<StoredResource>> {
        match self.writer.submit(WriteOp::Transact(mutations)).await? {
            Applied::Written(stored) => Ok(stored),
            _ => Err(StoreError::Internal(
                "a write was answered as something else".into(),
            )),
        }
    }

    async fn get(&self, scope: Scope, id: String) -> StoreResult<Option<StoredResource>> {
        self.readers
            .run_inline(|conn| queries::get_by_id(conn, &scope, &id))
            .await
    }

    async fn get_by_slug(&self, scope: Scope, slug: String) -> StoreResult<Option<StoredResource>> {
        self.readers
            .run_inline(|conn| queries::get_by_slug(conn, &scope, &slug))
            .await
    }

    async fn list(&self, query: ListQuery) -> StoreResult<ListPage> {
        self.readers
            .run(move |conn| queries::list(conn, &query))
            .await
    }

    async fn find(&self, query: FindQuery) -> StoreResult<FindPage> {
        self.readers
            .run(move |conn| queries::find(conn, &query))
            .await
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.writer.subscribe()
    }

    async fn changes(
        &self,
        filter: ChangeFilter,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<Change>> {
        self.readers
            .run(move |conn| queries::changes(conn, &filter, after, limit))
            .await
    }

    async fn snapshot(&self, filter: ChangeFilter) -> StoreResult<Box<dyn Snapshot>> {
        let snapshot = SqliteSnapshot::open(&self.config, &self.snapshots, filter).await?;
        Ok(Box::new(snapshot))
    }

    async fn log_bounds(&self) -> StoreResult<LogBounds> {
        self.readers.run(queries::log_bounds).await
    }

    async fn at_revision(
        &self,
        scope: Scope,
        id: String,
        revision: i64,
    ) -> StoreResult<AtRevision> {
        self.readers
            .run(move |conn| queries::at_revision(conn, &scope, &id, revision))
            .await
    }

    async fn compact(&self, retention: Retention) -> StoreResult<Compaction> {
        let mut total = Compaction::default();
        loop {
            let Applied::Compacted(step) = self.writer.submit(WriteOp::Compact(retention)).await?
            else {
                return Err(StoreError::Internal(
                    "a compaction was answered as a write".into(),
                ));
            };
            total.removed += step.removed;
            total.compacted = step.compacted;
            if step.removed == 0 {
                return Ok(total);
            }
        }
    }

    async fn info(&self, org: String) -> StoreResult<StoreInfo> {
        let database = self.database.clone();
        let stats = self.stats();
        let location = self.config.path.display().to_string();
        let wal = wal_path(&self.config.path);
        self.readers
            .run(move |conn| {
                let tx = conn.unchecked_transaction().map_err(errors::store_error)?;
                let wal_bytes = std::fs::metadata(&wal).map_or(0, |meta| meta.len());
                Ok(StoreInfo {
                    database_bytes: Some(queries::file_bytes(&tx)? + wal_bytes),
                    backend: "sqlite",
                    database,
                    location,
                    bounds: queries::log_bounds(&tx)?,
                    counts: queries::counts(&tx, &org)?,
                    writes_committed: stats.writes,
                    transactions_committed: stats.batches,
                    writes_pending: stats.queued as u64 + stats.committing,
                })
            })
            .await
    }

    async fn gauges(&self) -> StoreResult<StoreGauges> {
        let wal = wal_path(&self.config.path);
        self.readers
            .run(move |conn| {
                let tx = conn.unchecked_transaction().map_err(errors::store_error)?;
                let revision = queries::log_bounds(&tx)?.current;
                let counts = queries::counts_in_every_org(&tx)?;
                drop(tx);
                // No WAL file (between a clean close and the next write) is an empty one.
                let wal_bytes = std::fs::metadata(&wal).map_or(0, |meta| meta.len());
                Ok(StoreGauges {
                    revision,
                    counts,
                    wal_bytes: Some(wal_bytes),
                })
            })
            .await
    }

    fn observe_commits(&self, observer: Arc<dyn CommitObserver>) {
        self.writer.observe_commits(observer);
    }

    async fn artifact(&self, hash: String) -> StoreResult<Option<Vec<u8>>> {
        self.readers
            .run(move |conn| queries::artifact(conn, &hash))
            .await
    }

    async fn version(
        &self,
        resource_id: String,
        selector: VersionSelector,
    ) -> StoreResult<Option<StoredResource>> {
        self.readers
            .run(move |conn| queries::version(conn, &resource_id, &selector))
            .await
    }

    async fn versions(&self, resource_id: String) -> StoreResult<Vec<ResourceVersion>> {
        self.readers
            .run(move |conn| queries::versions(conn, &resource_id))
            .await
    }

    async fn setting(&self, key: String) -> StoreResult<Option<String>> {
        self.readers
            .run_inline(|conn| queries::setting(conn, &key))
            .await
    }

    async fn put_setting(&self, key: String, value: String) -> StoreResult<()> {
        self.writer
            .submit(WriteOp::PutSetting { key, value })
            .await
            .map(|_| ())
    }

    async fn rewrite_tokens(&self, prefix: String, rewrite: TokenRewrite) -> StoreResult<u64> {
        match self
            .writer
            .submit(WriteOp::RewriteTokens { prefix, rewrite })
            .await?
        {
            Applied::Touched(count) => Ok(count),
            _ => Err(StoreError::Internal(
                "a rewrite was answered as something else".into(),
            )),
        }
    }

    async fn uncached(&self, after_id: String, limit: usize) -> StoreResult<Vec<StoredResource>> {
        self.readers
            .run(move |conn| queries::uncached(conn, &after_id, limit))
            .await
    }

    async fn fill_read_cache(&self, fills: Vec<CacheFill>) -> StoreResult<u64> {
        match self.writer.submit(WriteOp::FillReadCache(fills)).await? {
            Applied::Touched(count) => Ok(count),
            _ => Err(StoreError::Internal(
                "a cache fill was answered as something else".into(),
            )),
        }
    }

    async fn backup(&self) -> StoreResult<Box<dyn BackupCopy>> {
        let backup = SqliteBackup::take(&self.config, &self.backups).await?;
        Ok(Box::new(backup))
    }

    async fn close(&self) -> StoreResult<()> {
        // Snapshots and backups open connections of their own: refuse new ones like every
        // other call.
        self.snapshots.close();
        self.backups.close();
        self.readers.shutdown().await;
        let (done_tx, done_rx) = oneshot::channel();
        let closed = if self.writer.shutdown(done_tx).await {
            done_rx.await.unwrap_or(Err(StoreError::Closed))
        } else {
            Ok(())
        };
        // Whatever the writer answered, its thread has ended: release the file either way.
        self.join_and_unlock().await?;
        closed
    }
}

/// SQLite's write-ahead log beside the database: `<db>-wal`.
fn wal_path(db: &std::path::Path) -> std::path::PathBuf {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    wal.into()
}
