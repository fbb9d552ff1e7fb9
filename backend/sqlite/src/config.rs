use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How hard SQLite works to make a commit survive power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// fsync the WAL at every commit: an acknowledged write survives power loss.
    Full,
    /// fsync only at checkpoints: survives a process crash, may lose the last commits on power loss.
    Normal,
}

impl Synchronous {
    pub fn pragma_value(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Normal => "NORMAL",
        }
    }
}

/// Twice what the WAL reaches between automatic checkpoints (1000 pages of 4 KiB): room for
/// the checkpoint to copy a full WAL into the database file and for deletes to append more.
pub const DEFAULT_RESERVE_BYTES: u64 = 8 * 1024 * 1024;

/// Everything needed to open a [`crate::SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The database file. Its directory is created (0700) and the file too (0600) when missing.
    pub path: PathBuf,
    pub synchronous: Synchronous,
    /// Number of read-only connections, so also the most reads at once.
    pub read_connections: usize,
    /// How long a statement waits for a lock held by another process before failing.
    pub busy_timeout: Duration,
    /// Most mutations committed in one transaction.
    pub max_batch: usize,
    /// Calls that may wait for the writer or for a reader before callers are slowed down.
    pub queue_depth: usize,
    /// Committed changes buffered for live watchers; a watcher further behind is ended.
    pub watch_buffer: usize,
    /// Watch snapshots that may be read at once, each on its own read-only connection.
    pub max_snapshots: usize,
    /// Size of the disk reserve kept next to the database (`<db>.reserve`) and given back
    /// when the disk fills, so that deletes can still commit. 0 keeps none.
    pub reserve_bytes: u64,
    /// Called on the writer thread once a batch's transaction has committed and before any of
    /// its callers is answered, with the number of calls in the batch. `None` in the server;
    /// tests hold the writer there to prove that no call is answered before its commit.
    pub after_commit: Option<AfterCommit>,
}

/// See [`SqliteConfig::after_commit`].
#[derive(Clone)]
pub struct AfterCommit(Arc<dyn Fn(usize) + Send + Sync>);

impl AfterCommit {
    pub fn new(observer: impl Fn(usize) + Send + Sync + 'static) -> Self {
        Self(Arc::new(observer))
    }

    pub(crate) fn call(&self, calls: usize) {
        (self.0)(calls);
    }
}

impl std::fmt::Debug for AfterCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AfterCommit(..)")
    }
}

impl SqliteConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            synchronous: Synchronous::Full,
            read_connections: 4,
            busy_timeout: Duration::from_secs(5),
            max_batch: 256,
            queue_depth: 4096,
            watch_buffer: 8192,
            max_snapshots: 32,
            reserve_bytes: DEFAULT_RESERVE_BYTES,
            after_commit: None,
        }
    }
}
