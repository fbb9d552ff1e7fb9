//! Read-only connections shared by every read. Point reads (one row by key) run inline on the
//! calling task: a hop to another thread and back costs two futex wake-ups, more than the read
//! itself (measured: about a quarter of the server's CPU on `get`). Reads that may take longer
//! (pages, logs, artifacts) run on tokio's blocking pool so they never hold up a runtime worker.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rusqlite::Connection;
use stigmer_store::{StoreError, StoreResult};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::SqliteConfig;
use crate::errors::OpenError;
use crate::schema::open_reader_connection;

pub(crate) struct ReaderPool {
    idle: Arc<Mutex<Vec<Connection>>>,
    /// One permit per connection, so a permit holder always finds an idle connection.
    permits: Arc<Semaphore>,
    size: u32,
}

impl ReaderPool {
    pub(crate) fn open(config: &SqliteConfig) -> Result<Self, OpenError> {
        let size = config.read_connections.max(1);
        let idle = (0..size)
            .map(|_| open_reader_connection(config))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            idle: Arc::new(Mutex::new(idle)),
            permits: Arc::new(Semaphore::new(size)),
            size: u32::try_from(size).unwrap_or(u32::MAX),
        })
    }

    /// Runs a short `query` (a point read) on the calling thread.
    pub(crate) async fn run_inline<T>(
        &self,
        query: impl FnOnce(&Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let lease = self.lease().await?;
        query(lease.conn()?)
    }

    /// Runs `query`, which may take a while, on tokio's blocking pool. The connection goes back
    /// to the pool when the query ends, even if the caller has stopped waiting.
    pub(crate) async fn run<T, F>(&self, query: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let lease = self.lease().await?;
        tokio::task::spawn_blocking(move || query(lease.conn()?))
            .await
            .map_err(|err| StoreError::Internal(format!("a read task failed: {err}")))?
    }

    /// Waits for the reads under way, then closes every connection; later reads get `Closed`.
    pub(crate) async fn shutdown(&self) {
        let Ok(all) = self.permits.acquire_many(self.size).await else {
            return;
        };
        self.permits.close();
        drop(all);
        let connections = std::mem::take(&mut *lock_idle(&self.idle));
        for conn in connections {
            if let Err((_, err)) = conn.close() {
                tracing::warn!(error = %err, "closing a reader connection failed");
            }
        }
    }

    async fn lease(&self) -> StoreResult<Lease> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let conn = lock_idle(&self.idle).pop();
        Ok(Lease {
            conn,
            idle: Arc::clone(&self.idle),
            _permit: permit,
        })
    }
}

/// One connection taken from the pool; dropping it puts the connection back before the permit
/// is released, so permits and idle connections always match.
struct Lease {
    conn: Option<Connection>,
    idle: Arc<Mutex<Vec<Connection>>>,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    fn conn(&self) -> StoreResult<&Connection> {
        self.conn.as_ref().ok_or_else(|| {
            StoreError::Internal("a reader permit without an idle connection".into())
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            lock_idle(&self.idle).push(conn);
        }
    }
}

/// The idle list. Push and pop are single steps, so a panic elsewhere while it was held cannot
/// leave it half-changed, and a poisoned lock is still safe to use.
fn lock_idle(idle: &Mutex<Vec<Connection>>) -> MutexGuard<'_, Vec<Connection>> {
    idle.lock().unwrap_or_else(PoisonError::into_inner)
}
