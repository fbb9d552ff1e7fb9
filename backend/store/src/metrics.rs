//! What a store tells the server's metrics (`--metrics-listen`): each committed batch as it
//! commits, and a few figures read when /metrics is scraped. Plain data and one callback: the
//! server owns the metrics library, the store knows none.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// One committed batch of writes (group commit), as the writer saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CommitStats {
    /// Writes (`transact` calls) the batch committed; batches of maintenance alone
    /// (compaction, settings, cache fills) are not reported.
    pub writes: usize,
    /// From the start of the batch's transaction to the end of its COMMIT: how long the
    /// batch's callers waited on the database once their turn came.
    pub transaction: Duration,
    /// The COMMIT statement alone. It waits for the log to be made durable (SQLite's WAL
    /// fsync with synchronous=FULL, PostgreSQL's WAL flush), so it is the closest a client of
    /// the database gets to fsync latency; with synchronous=NORMAL there is no fsync in it.
    pub commit: Duration,
}

/// Told of every batch a store commits, on the store's writer (a thread or a task): it must
/// return quickly, since the batch's callers are answered after it.
pub trait CommitObserver: Send + Sync + 'static {
    fn committed(&self, commit: &CommitStats);
}

/// Figures read when metrics are scraped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreGauges {
    /// The current revision (the last one committed).
    pub revision: i64,
    /// (kind, resources of that kind in every org, identity resources included), in kind
    /// order; kinds without one are left out.
    pub counts: Vec<(String, i64)>,
    /// Bytes in the write-ahead log file, where the store has one of its own (SQLite's
    /// `<db>-wal`); `None` otherwise.
    pub wal_bytes: Option<u64>,
}

/// What a group-committing writer has done so far, and who hears of each batch it commits:
/// shared between the writer and the store that reports its figures, the same in every
/// backend.
#[derive(Default)]
pub struct WriterCounters {
    /// Committed transactions that held resource writes, and those writes.
    pub batches: AtomicU64,
    pub writes: AtomicU64,
    /// Writes in the transaction being committed now.
    pub committing: AtomicU64,
    observer: Mutex<Option<Arc<dyn CommitObserver>>>,
}

impl WriterCounters {
    /// From now on, `observer` hears of every committed batch ([`crate::Store::observe_commits`]).
    pub fn observe(&self, observer: Arc<dyn CommitObserver>) {
        *self.observer.lock().unwrap_or_else(PoisonError::into_inner) = Some(observer);
    }

    /// Counts a committed batch and tells the observer. `writes` are its client writes:
    /// batches of maintenance alone are not counted, since the counters tell how well client
    /// writes share commits.
    pub fn committed(&self, writes: usize, transaction: Duration, commit: Duration) {
        if writes == 0 {
            return;
        }
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(writes as u64, Ordering::Relaxed);
        let observer = self
            .observer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(observer) = observer {
            observer.committed(&CommitStats {
                writes,
                transaction,
                commit,
            });
        }
    }
}
