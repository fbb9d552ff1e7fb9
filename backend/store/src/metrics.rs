//! What a store tells the server's metrics (`--metrics-listen`): each committed batch as it
//! commits, and a few figures read when /metrics is scraped. Plain data and one callback: the
//! server owns the metrics library, the store knows none.

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
