//! The SQLite backend's command-line flags, flattened into stigmer-server's own. They live
//! here, beside what they configure, so that the server library knows nothing of SQLite.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::config::{SqliteConfig, Synchronous};

/// SQLite settings; ignored when the database is PostgreSQL.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "SQLite")]
pub struct SqliteOptions {
    /// Durability of each commit. "full" fsyncs every commit, so an acknowledged write survives
    /// power loss; "normal" survives a crash of the server process but may lose the last
    /// commits on power loss, in exchange for faster writes.
    #[arg(long, env = "STIGMER_SYNCHRONOUS", value_enum, default_value_t = Durability::Full)]
    pub synchronous: Durability,

    /// Read-only database connections, each on its own thread, serving get and list calls.
    #[arg(long, env = "STIGMER_READ_CONNECTIONS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub read_connections: u16,

    /// Milliseconds a write waits for a lock held by another process (say, a sqlite3 session
    /// in a transaction) before the call fails with UNAVAILABLE.
    #[arg(long, env = "STIGMER_BUSY_TIMEOUT_MS", default_value_t = 5000)]
    pub busy_timeout_ms: u64,

    /// MiB of disk set aside next to the database (`<db>.reserve`) and given back when the disk
    /// fills, so that deletes still commit and shutdown can still checkpoint (0 = none).
    #[arg(long, env = "STIGMER_DISK_RESERVE_MIB", default_value_t = 8)]
    pub disk_reserve_mib: u64,
}

/// `--synchronous`, as the flag spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    Full,
    Normal,
}

impl SqliteOptions {
    /// The store configuration for the database at `path`, with `watch_buffer` committed
    /// changes kept for live watchers.
    pub fn config(&self, path: PathBuf, watch_buffer: usize) -> SqliteConfig {
        let mut config = SqliteConfig::new(path);
        config.synchronous = match self.synchronous {
            Durability::Full => Synchronous::Full,
            Durability::Normal => Synchronous::Normal,
        };
        config.read_connections = usize::from(self.read_connections);
        config.busy_timeout = Duration::from_millis(self.busy_timeout_ms);
        config.watch_buffer = watch_buffer;
        config.reserve_bytes = self.disk_reserve_mib.saturating_mul(1024 * 1024);
        config
    }
}
