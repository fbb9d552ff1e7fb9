//! Server settings: flags, each with an environment-variable twin and a documented default.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// Where the database lives when neither --db nor STIGMER_DB says otherwise.
pub const DEFAULT_DB: &str = "~/.stigmer/stigmer.db";

/// stigmer-server stores every Stigmer API resource in one SQLite file and serves them over gRPC
/// (with server reflection and grpc.health.v1). Every flag can also be set through the
/// environment variable shown with it.
#[derive(Debug, Clone, Parser)]
#[command(name = "stigmer-server", version, long_about = None)]
pub struct ServerConfig {
    /// Address (host:port) to serve gRPC on. Port 0 picks a free port, reported in the log.
    #[arg(long, env = "STIGMER_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Serve on an address other than loopback although this server has neither TLS nor
    /// authentication yet: anyone who can reach the port can read and change every resource.
    /// Without it, such a --listen is refused at start-up. Only on a trusted network.
    #[arg(long, env = "STIGMER_ALLOW_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_insecure: bool,

    /// Milliseconds a new connection has to send the HTTP/2 client preface (its first 24
    /// bytes) before it is closed, so connections that never speak cannot hold on to file
    /// descriptors. Once talking, a connection that stops answering HTTP/2 pings (every 60 s,
    /// 20 s to answer) is closed too.
    #[arg(long, env = "STIGMER_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub handshake_timeout_ms: u64,

    /// SQLite database file. Its directory is created with mode 0700 and the file with 0600
    /// when missing. A leading "~/" means the home directory.
    #[arg(long, env = "STIGMER_DB", default_value = DEFAULT_DB)]
    pub db: PathBuf,

    /// Log filter in tracing-subscriber's EnvFilter syntax, e.g. "info" or
    /// "info,stigmer_grpc=debug".
    #[arg(long = "log", env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,

    /// Log line format: "text" for people, "json" for log collectors.
    #[arg(long, env = "STIGMER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

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

    /// Change-log entries always kept (the last N revisions), whatever their age. Watches and
    /// getAtRevision can reach back this far at least.
    #[arg(long, env = "STIGMER_RETAIN_REVISIONS", default_value_t = 10_000)]
    pub retain_revisions: i64,

    /// Seconds of change-log history always kept, however many revisions that is.
    #[arg(long, env = "STIGMER_RETAIN_SECS", default_value_t = 3600)]
    pub retain_secs: u64,

    /// Seconds between background compactions of the change log (0 = never compact).
    #[arg(long, env = "STIGMER_COMPACT_EVERY_SECS", default_value_t = 60)]
    pub compact_every_secs: u64,

    /// Committed changes buffered for live watchers. A watcher that falls further behind is
    /// ended with RESOURCE_EXHAUSTED and told the revision to watch again from.
    #[arg(long, env = "STIGMER_WATCH_BUFFER", default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..))]
    pub watch_buffer: u32,

    /// MiB of disk set aside next to the database (<db>.reserve) and given back when the disk
    /// fills, so that deletes still commit and shutdown can still checkpoint (0 = none).
    #[arg(long, env = "STIGMER_DISK_RESERVE_MIB", default_value_t = 8)]
    pub disk_reserve_mib: u64,

    /// Master key sealing secret values: base64 of 32 random bytes. Prefer the environment
    /// variable to the flag (flags show in process lists). Without it, the key file is used.
    #[arg(long, env = "STIGMER_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,

    /// Key file used when no master key is given; created (0600) on a database's first start.
    /// Default: next to the database, with the extension .key.
    #[arg(long, env = "STIGMER_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,

    /// What to do; without a command, serve.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Seconds to let in-flight calls finish after SIGINT/SIGTERM before closing anyway.
    #[arg(long, env = "STIGMER_SHUTDOWN_GRACE", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Re-seal every secret (in resources and the change log) under a new master key, in one
    /// transaction, then retire the old key. Stop the server first. With STIGMER_MASTER_KEY
    /// set, the new key is printed once and must replace it before the next start.
    RotateMasterKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    Full,
    Normal,
}

impl ServerConfig {
    /// A configuration with every default, listening on `listen` and storing in `db`. The
    /// environment is not read: a server built in code (tests, the in-process transport) runs
    /// as documented whatever `STIGMER_*` variables the shell holds; only the binary reads them.
    pub fn new(listen: SocketAddr, db: impl Into<PathBuf>) -> Self {
        let matches = Self::defaults_command()
            .try_get_matches_from(["stigmer-server"])
            .expect("every flag has a default or is optional");
        let mut config =
            Self::from_arg_matches(&matches).expect("the defaults form a configuration");
        config.listen = listen;
        config.db = db.into();
        config
    }

    /// The command line with no environment variable behind any flag.
    fn defaults_command() -> clap::Command {
        Self::command().mut_args(|arg| arg.env(None))
    }

    /// Where the master key file is (or will be).
    pub fn key_file_path(&self) -> Result<PathBuf, std::io::Error> {
        match &self.master_key_file {
            Some(path) => Ok(path.clone()),
            None => Ok(self.db_path()?.with_extension("key")),
        }
    }

    /// The database path with a leading "~/" expanded.
    pub fn db_path(&self) -> Result<PathBuf, std::io::Error> {
        match self.db.strip_prefix("~") {
            Ok(rest) => std::env::home_dir()
                .map(|home| home.join(rest))
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "cannot expand ~: no home directory; pass --db or STIGMER_DB",
                    )
                }),
            Err(_) => Ok(self.db.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_built_in_code_read_no_environment_variable() {
        let with_env: Vec<String> = ServerConfig::command()
            .get_arguments()
            .filter(|arg| arg.get_env().is_some())
            .map(|arg| arg.get_id().to_string())
            .collect();
        assert!(
            with_env.len() > 10,
            "the binary reads the environment: {with_env:?}"
        );
        let still: Vec<String> = ServerConfig::defaults_command()
            .get_arguments()
            .filter(|arg| arg.get_env().is_some())
            .map(|arg| arg.get_id().to_string())
            .collect();
        assert!(still.is_empty(), "{still:?}");
        let config = ServerConfig::new(([127, 0, 0, 1], 0).into(), "x.db");
        assert_eq!(config.synchronous, Durability::Full);
        assert!(config.master_key.is_none());
    }
}
