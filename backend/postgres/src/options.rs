//! The PostgreSQL backend's command-line flags, flattened into stigmer-server's own.

use std::time::Duration;

use clap::Args;

use crate::config::PostgresConfig;

/// PostgreSQL settings; ignored when the database is a SQLite file.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "PostgreSQL")]
pub struct PostgresOptions {
    /// Connections each server keeps for reads; the writer, the change feed and watch
    /// snapshots have a few more of their own.
    #[arg(long, env = "STIGMER_PG_POOL_SIZE", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub pg_pool_size: u16,

    /// Milliseconds connecting may take (at start-up and for each new connection), and that a
    /// call waits for a free connection before it fails with UNAVAILABLE.
    #[arg(long, env = "STIGMER_PG_CONNECT_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub pg_connect_timeout_ms: u64,

    /// Milliseconds a write waits for a row lock held by another session (say, a psql
    /// transaction) before it fails with UNAVAILABLE.
    #[arg(long, env = "STIGMER_PG_LOCK_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub pg_lock_timeout_ms: u64,

    /// Milliseconds between reads of the change log when no notification arrives: the bound
    /// on how late a watcher hears of another replica's write if a NOTIFY is lost.
    #[arg(long, env = "STIGMER_PG_POLL_INTERVAL_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..))]
    pub pg_poll_interval_ms: u64,
}

impl PostgresOptions {
    /// The store configuration for `url`, with `watch_buffer` committed changes kept for
    /// live watchers.
    pub fn config(&self, url: String, watch_buffer: usize) -> PostgresConfig {
        let mut config = PostgresConfig::new(url);
        config.pool_size = usize::from(self.pg_pool_size);
        config.connect_timeout = Duration::from_millis(self.pg_connect_timeout_ms);
        config.lock_timeout = Duration::from_millis(self.pg_lock_timeout_ms);
        config.poll_interval = Duration::from_millis(self.pg_poll_interval_ms);
        config.watch_buffer = watch_buffer;
        config
    }
}
