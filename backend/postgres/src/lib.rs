//! The PostgreSQL implementation of [`stigmer_store::Store`], for several server replicas on
//! one database.
//!
//! The schema is the SQLite store's, with `data` in jsonb (`migrations/postgres/`, applied at
//! start-up under an advisory lock). One writer task per store commits queued mutations in
//! batches, each call in its own savepoint; every batch holds the `store_meta` revision row
//! from its first statement to COMMIT, which puts the revisions of all replicas in one order,
//! the commit order, with no gaps (docs/adr/0023-postgres-revision-order.md). A feed task per
//! store publishes the change log to subscribers, woken by its own writer, by LISTEN/NOTIFY
//! and by a poll, so a watcher on any replica sees every replica's writes.
#![forbid(unsafe_code)]

mod config;
mod errors;
mod feed;
mod json;
mod options;
mod queries;
mod schema;
mod snapshot;
#[cfg(feature = "test-support")]
pub mod test_support;
mod writer;

pub use config::PostgresConfig;
pub use errors::OpenError;
pub use options::PostgresOptions;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use stigmer_store::{
    AtRevision, BackupCopy, CacheFill, Change, ChangeFilter, CommitObserver, Compaction, FindPage,
    FindQuery, ListPage, ListQuery, LogBounds, Mutation, ResourceVersion, Retention, Scope,
    Snapshot, Store, StoreError, StoreGauges, StoreInfo, StoreResult, StoredResource, TokenRewrite,
    VersionSelector,
};
use tokio::sync::{Semaphore, broadcast};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

use crate::config::Target;
use crate::errors::{chain, pool_error, store_error};
use crate::feed::{Feed, FeedConfig};
use crate::snapshot::PgSnapshot;
use crate::writer::{Applied, WriteOp, Writer};

/// See [`PostgresStore::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    pub batches: u64,
    pub writes: u64,
    pub queued: usize,
    pub committing: u64,
}

/// A store on one PostgreSQL database, which other stores (other server replicas) may share.
pub struct PostgresStore {
    reads: Pool,
    /// The writer's, and a snapshot's own, so that neither waits behind busy readers.
    writes: Pool,
    snapshots: Pool,
    feed_pool: Pool,
    snapshot_slots: Arc<Semaphore>,
    writer: Writer,
    writer_task: Mutex<Option<JoinHandle<()>>>,
    feed: Feed,
    closed: AtomicBool,
    /// What `info` says the store runs on: the server's version and commit durability.
    database: String,
    /// Where: the URL without its password.
    location: String,
}

impl PostgresStore {
    /// Connects, applies pending migrations and starts the writer and the change feed. Fails
    /// within about `connect_timeout` when the server cannot be reached, refuses the
    /// credentials or lacks the database, saying which; no error holds the password.
    pub async fn open(config: &PostgresConfig) -> Result<Self, OpenError> {
        let password = config.password();
        Self::open_checked(config)
            .await
            .map_err(|err| err.redacted(password.as_deref()))
    }

    async fn open_checked(config: &PostgresConfig) -> Result<Self, OpenError> {
        let (pg, target) = config::connection_config(config)?;
        let mut client = schema::connect(&pg, &target, config.connect_timeout).await?;
        schema::migrate(&mut client, &target).await?;
        let database = schema::describe(&client, &target).await?;
        let start: i64 = client
            .query_one("SELECT value FROM store_meta WHERE key = 'revision'", &[])
            .await
            .and_then(|row| row.try_get(0))
            .map_err(|err| setup(&target, &err))?;
        drop(client);
        let pool = |size: usize| build_pool(&pg, size, config.connect_timeout, &target, None);
        let reads = pool(config.pool_size)?;
        let writes = build_pool(
            &pg,
            1,
            config.connect_timeout,
            &target,
            Some(config.lock_timeout),
        )?;
        let snapshots = pool(config.max_snapshots)?;
        let feed_pool = pool(1)?;
        // One connection in each pool now, made side by side: the first calls (a watch's
        // snapshot among them) need not wait for a connection and its authentication, and a
        // server that refuses more connections says so at start-up.
        let warmed = tokio::join!(reads.get(), writes.get(), snapshots.get(), feed_pool.get());
        for result in [warmed.0, warmed.1, warmed.2, warmed.3] {
            // Dropped at once: back into its pool, open.
            drop(result.map_err(|err| OpenError::Setup {
                target: target.to_string(),
                reason: format!("opening the connection pools: {}", pool_error(err)),
            })?);
        }
        let feed = Feed::start(FeedConfig {
            pool: feed_pool.clone(),
            pg: pg.clone(),
            connect_timeout: config.connect_timeout,
            start,
            buffer: config.watch_buffer,
            poll_interval: config.poll_interval,
            listen: config.listen,
        });
        let (writer, writer_task) = Writer::spawn(
            writes.clone(),
            feed.handle(),
            config.max_batch,
            config.queue_depth,
        );
        tracing::debug!(location = %target, revision = start, "opened the PostgreSQL store");
        Ok(Self {
            reads,
            writes,
            snapshots,
            feed_pool,
            snapshot_slots: Arc::new(Semaphore::new(config.max_snapshots.max(1))),
            writer,
            writer_task: Mutex::new(Some(writer_task)),
            feed,
            closed: AtomicBool::new(false),
            database,
            location: target.to_string(),
        })
    }

    /// Counters of the writer: committed transactions (batches), the writes they held, the
    /// writes waiting now and those in the transaction being committed. writes / batches is
    /// the group-commit factor.
    pub fn stats(&self) -> WriterStats {
        let counters = self.writer.counters();
        WriterStats {
            batches: counters.batches.load(Ordering::Relaxed),
            writes: counters.writes.load(Ordering::Relaxed),
            queued: self.writer.queued(),
            committing: counters.committing.load(Ordering::Relaxed),
        }
    }

    /// A pooled connection for a read.
    async fn read(&self) -> StoreResult<Object> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        self.reads.get().await.map_err(pool_error)
    }

    async fn write(&self, op: WriteOp) -> StoreResult<Applied> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        self.writer.submit(op).await
    }
}

fn setup(target: &Target, err: &tokio_postgres::Error) -> OpenError {
    OpenError::Setup {
        target: target.to_string(),
        reason: chain(err),
    }
}

/// A pool whose connections are made lazily: a server that goes away and comes back costs
/// the calls made meanwhile an `Unavailable`, and the next ones a fresh connection.
fn build_pool(
    pg: &tokio_postgres::Config,
    size: usize,
    timeout: Duration,
    target: &Target,
    lock_timeout: Option<Duration>,
) -> Result<Pool, OpenError> {
    let manager = Manager::from_config(
        pg.clone(),
        NoTls,
        ManagerConfig {
            // A connection the server closed is noticed without a query; one that died
            // silently fails its next statement, which the caller sees as Unavailable.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let mut builder = Pool::builder(manager);
    if let Some(lock_timeout) = lock_timeout {
        // Set once per connection, for the session: every batch then waits at most this long
        // for a lock, and its callers hear Unavailable instead of hanging.
        let set = format!("SET lock_timeout = {}", lock_timeout.as_millis().max(1));
        builder = builder.post_create(Hook::async_fn(move |client, _| {
            let set = set.clone();
            Box::pin(async move { client.batch_execute(&set).await.map_err(HookError::Backend) })
        }));
    }
    builder
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .map_err(|err| OpenError::Setup {
            target: target.to_string(),
            reason: format!("building a connection pool: {err}"),
        })
}

fn unexpected(what: &str) -> StoreError {
    StoreError::Internal(format!("{what} was answered as something else"))
}

#[async_trait]
impl Store for PostgresStore {
    async fn transact(&self, mutations: Vec<Mutation>) -> StoreResult<Vec<StoredResource>> {
        match self.write(WriteOp::Transact(mutations)).await? {
            Applied::Written(stored) => Ok(stored),
            _ => Err(unexpected("a write")),
        }
    }

    async fn get(&self, scope: Scope, id: String) -> StoreResult<Option<StoredResource>> {
        let client = self.read().await?;
        queries::get_by_id(&client, &scope, &id).await
    }

    async fn get_by_slug(&self, scope: Scope, slug: String) -> StoreResult<Option<StoredResource>> {
        let client = self.read().await?;
        queries::get_by_slug(&client, &scope, &slug).await
    }

    async fn list(&self, query: ListQuery) -> StoreResult<ListPage> {
        let mut client = self.read().await?;
        queries::list(&mut client, &query).await
    }

    async fn find(&self, query: FindQuery) -> StoreResult<FindPage> {
        let mut client = self.read().await?;
        queries::find(&mut client, &query).await
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.feed.subscribe()
    }

    async fn changes(
        &self,
        filter: ChangeFilter,
        after: i64,
        limit: usize,
    ) -> StoreResult<Vec<Change>> {
        let mut client = self.read().await?;
        queries::changes(&mut client, &filter, after, limit).await
    }

    async fn snapshot(&self, filter: ChangeFilter) -> StoreResult<Box<dyn Snapshot>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let snapshot = PgSnapshot::open(&self.snapshots, &self.snapshot_slots, filter).await?;
        Ok(Box::new(snapshot))
    }

    async fn log_bounds(&self) -> StoreResult<LogBounds> {
        let client = self.read().await?;
        queries::log_bounds(&client).await
    }

    async fn at_revision(
        &self,
        scope: Scope,
        id: String,
        revision: i64,
    ) -> StoreResult<AtRevision> {
        let mut client = self.read().await?;
        queries::at_revision(&mut client, &scope, &id, revision).await
    }

    async fn compact(&self, retention: Retention) -> StoreResult<Compaction> {
        let mut total = Compaction::default();
        loop {
            let Applied::Compacted(step) = self.write(WriteOp::Compact(retention)).await? else {
                return Err(unexpected("a compaction"));
            };
            total.removed += step.removed;
            total.compacted = step.compacted;
            if step.removed == 0 {
                return Ok(total);
            }
        }
    }

    async fn info(&self, org: String) -> StoreResult<StoreInfo> {
        let stats = self.stats();
        let mut client = self.read().await?;
        let tx = queries::consistent(&mut client).await?;
        let bounds = queries::log_bounds(&tx).await?;
        let counts = queries::counts(&tx, &org).await?;
        let database_bytes = queries::database_bytes(&tx).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(StoreInfo {
            database_bytes: Some(database_bytes),
            backend: "postgres",
            database: self.database.clone(),
            location: self.location.clone(),
            bounds,
            counts,
            writes_committed: stats.writes,
            transactions_committed: stats.batches,
            writes_pending: stats.queued as u64 + stats.committing,
        })
    }

    /// No WAL size: PostgreSQL's WAL is the cluster's, shared with every database on it, and
    /// reading its size needs privileges a store's role should not hold.
    async fn gauges(&self) -> StoreResult<StoreGauges> {
        let mut client = self.read().await?;
        let tx = queries::consistent(&mut client).await?;
        let revision = queries::log_bounds(&tx).await?.current;
        let counts = queries::counts_in_every_org(&tx).await?;
        tx.commit().await.map_err(store_error)?;
        Ok(StoreGauges {
            revision,
            counts,
            wal_bytes: None,
        })
    }

    fn observe_commits(&self, observer: Arc<dyn CommitObserver>) {
        self.writer.observe_commits(observer);
    }

    async fn artifact(&self, hash: String) -> StoreResult<Option<Vec<u8>>> {
        let client = self.read().await?;
        queries::artifact(&client, &hash).await
    }

    async fn version(
        &self,
        resource_id: String,
        selector: VersionSelector,
    ) -> StoreResult<Option<StoredResource>> {
        let client = self.read().await?;
        queries::version(&client, &resource_id, &selector).await
    }

    async fn versions(&self, resource_id: String) -> StoreResult<Vec<ResourceVersion>> {
        let client = self.read().await?;
        queries::versions(&client, &resource_id).await
    }

    async fn setting(&self, key: String) -> StoreResult<Option<String>> {
        let client = self.read().await?;
        queries::setting(&client, &key).await
    }

    async fn put_setting(&self, key: String, value: String) -> StoreResult<()> {
        self.write(WriteOp::PutSetting { key, value })
            .await
            .map(|_| ())
    }

    async fn rewrite_tokens(&self, prefix: String, rewrite: TokenRewrite) -> StoreResult<u64> {
        match self
            .write(WriteOp::RewriteTokens { prefix, rewrite })
            .await?
        {
            Applied::Touched(count) => Ok(count),
            _ => Err(unexpected("a rewrite")),
        }
    }

    async fn uncached(&self, after_id: String, limit: usize) -> StoreResult<Vec<StoredResource>> {
        let client = self.read().await?;
        queries::uncached(&client, &after_id, limit).await
    }

    async fn fill_read_cache(&self, fills: Vec<CacheFill>) -> StoreResult<u64> {
        match self.write(WriteOp::FillReadCache(fills)).await? {
            Applied::Touched(count) => Ok(count),
            _ => Err(unexpected("a cache fill")),
        }
    }

    /// Commits what is queued, lets the feed publish it, then stops the feed (ending every
    /// subscription) and closes the pools. Reads under way finish; later calls fail as closed.
    /// PostgreSQL has its own tools for this, which see every replica's writes.
    async fn backup(&self) -> StoreResult<Box<dyn BackupCopy>> {
        Err(StoreError::Unsupported(
            "the PostgreSQL backend takes no backups through the API: back the database up with pg_dump and restore it with pg_restore (docs/deploy.md)".into(),
        ))
    }

    async fn close(&self) -> StoreResult<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.writer.shutdown().await;
        let task = self
            .writer_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task
            && task.await.is_err()
        {
            tracing::error!("the PostgreSQL writer task panicked before shutdown");
        }
        let mut feed = self.feed.handle();
        let last = feed.last_handed_over();
        feed.wait_published(last, Duration::from_secs(5)).await;
        self.feed.stop().await;
        for pool in [&self.reads, &self.writes, &self.snapshots, &self.feed_pool] {
            pool.close();
        }
        Ok(())
    }
}
