//! Which store a server runs on. The binary (and the CLI's in-process server) hand the
//! `--db` value here and get back an open [`Store`]; the server library only ever sees the
//! trait. A path, or `sqlite:PATH`, is a SQLite file; a `postgres://` URL is PostgreSQL.
#![forbid(unsafe_code)]

mod location;

pub use location::{Location, LocationError, MEMORY, PostgresUrl};
pub use stigmer_postgres::PostgresOptions;
pub use stigmer_sqlite::{Durability, Restored, SqliteOptions};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, CommandFactory, FromArgMatches, Parser};
use stigmer_postgres::PostgresStore;
use stigmer_sqlite::SqliteStore;
use stigmer_store::Store;

/// Where the database lives when neither --db nor STIGMER_DB says otherwise.
pub const DEFAULT_DB: &str = "~/.stigmer/stigmer.db";

/// The database flags of stigmer-server.
#[derive(Debug, Clone, Args)]
pub struct DatabaseOptions {
    /// The database: a SQLite file path (its directory is created with mode 0700 and the file
    /// with 0600 when missing; a leading "~/" means the home directory), the same as
    /// "sqlite:PATH", or a PostgreSQL URL "postgres://USER:PASSWORD@HOST:PORT/DATABASE".
    /// ":memory:" is a database that lives as long as the server, for tests and demos: its
    /// files (and the master key's) stay in a private directory in /dev/shm (memory; the
    /// system's temporary directory where there is none), removed when the server stops.
    #[arg(long, env = "STIGMER_DB", default_value = DEFAULT_DB, hide_env_values = true)]
    pub db: String,

    /// Committed changes buffered for live watchers. A watcher that falls further behind is
    /// ended with RESOURCE_EXHAUSTED and told the revision to watch again from.
    #[arg(long, env = "STIGMER_WATCH_BUFFER", default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..))]
    pub watch_buffer: u32,

    #[command(flatten)]
    pub sqlite: SqliteOptions,

    #[command(flatten)]
    pub postgres: PostgresOptions,
}

/// Only to read [`DatabaseOptions`]' defaults in [`DatabaseOptions::new`].
#[derive(Parser)]
struct Defaults {
    #[command(flatten)]
    options: DatabaseOptions,
}

impl DatabaseOptions {
    /// Every default, storing in `db`. The environment is not read: a store opened in code
    /// (tests, the in-process transport) behaves as documented whatever `STIGMER_*`
    /// variables the shell holds; only the binary reads them.
    pub fn new(db: impl Into<String>) -> Self {
        let command = Defaults::command().mut_args(|arg| arg.env(None));
        let matches = command
            .try_get_matches_from(["stigmer-server"])
            .expect("every database flag has a default");
        let mut options = Defaults::from_arg_matches(&matches)
            .expect("the defaults form a configuration")
            .options;
        options.db = db.into();
        options
    }

    /// A SQLite database at `path`, with every other default.
    pub fn sqlite(path: impl Into<PathBuf>) -> Self {
        let path: PathBuf = path.into();
        Self::new(format!("sqlite:{}", path.display()))
    }

    /// Where `--db` points.
    pub fn location(&self) -> Result<Location, LocationError> {
        Location::parse(&self.db)
    }
}

/// Why the database could not be opened. Shown to the operator; never holds a password.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Location(#[from] LocationError),
    #[error(transparent)]
    Sqlite(#[from] stigmer_sqlite::OpenError),
    #[error(transparent)]
    Postgres(#[from] stigmer_postgres::OpenError),
    #[error("opening the database: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("cannot make a private directory for the --db :memory: database: {0}")]
    Scratch(std::io::Error),
}

/// An open store and where it is.
pub struct Database {
    pub store: Arc<dyn Store>,
    pub location: Location,
    /// Where a `:memory:` database keeps its files; removed when dropped, so it must outlive
    /// the store (fields drop in order: the store first).
    scratch: Option<tempfile::TempDir>,
}

impl Database {
    /// Whether the database lives only as long as this process (`:memory:`).
    pub fn is_scratch(&self) -> bool {
        self.scratch.is_some()
    }

    /// Where the master key file goes when none is named: beside a SQLite file. A PostgreSQL
    /// database has no such place, and replicas must share one key, so it must be given.
    pub fn default_key_file(&self) -> Option<PathBuf> {
        match &self.scratch {
            Some(scratch) => Some(scratch.path().join("stigmer.key")),
            None => self.location.default_key_file(),
        }
    }
}

/// A private directory for a `:memory:` database: in /dev/shm, which is memory, when the
/// system has it.
fn scratch_dir() -> std::io::Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    let builder = || {
        let mut builder = tempfile::Builder::new();
        builder.prefix("stigmer-memory-");
        builder
    };
    match builder().tempdir_in(shm) {
        Ok(dir) => Ok(dir),
        Err(_) => builder().tempdir(),
    }
}

/// Opens (creating and migrating when needed) the database `options` names.
pub async fn open(options: &DatabaseOptions) -> Result<Database, OpenError> {
    let location = options.location()?;
    let mut scratch = None;
    let store: Arc<dyn Store> = match &location {
        Location::Sqlite(path) => open_sqlite(options, path.clone()).await?,
        Location::Memory => {
            let dir = scratch_dir().map_err(OpenError::Scratch)?;
            let store = open_sqlite(options, dir.path().join("stigmer.db")).await?;
            tracing::info!(
                files = %dir.path().display(),
                "the database lives in memory: its files are removed when the server stops"
            );
            scratch = Some(dir);
            store
        }
        Location::Postgres(url) => {
            let config = options
                .postgres
                .config(url.expose().to_string(), options.watch_buffer as usize);
            Arc::new(PostgresStore::open(&config).await?)
        }
    };
    tracing::info!(db = %location, "database open");
    Ok(Database {
        store,
        location,
        scratch,
    })
}

async fn open_sqlite(
    options: &DatabaseOptions,
    path: PathBuf,
) -> Result<Arc<dyn Store>, OpenError> {
    let config = options.sqlite.config(path, options.watch_buffer as usize);
    Ok(Arc::new(
        tokio::task::spawn_blocking(move || SqliteStore::open(&config)).await??,
    ))
}

/// Why a backup was not restored. The target is as it was.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Location(#[from] LocationError),
    #[error(
        "--db names a PostgreSQL database ({0}): restore it from a pg_dump archive with pg_restore (docs/deploy.md); stigmer-server restore writes SQLite files"
    )]
    Postgres(PostgresUrl),
    #[error(
        "--db :memory: is a database that lives only as long as its server: restore into a file (--db PATH)"
    )]
    Memory,
    #[error(transparent)]
    Sqlite(#[from] stigmer_sqlite::RestoreError),
    #[error("the restore task failed")]
    Join(#[from] tokio::task::JoinError),
}

/// Puts the backup `file` (what `ResourceService/backup` streams) in place as the database
/// `db` names, once it has passed its checks (see [`stigmer_sqlite::restore`]). Refuses to
/// replace a database unless `force`, and always while a server has it open. Returns the
/// database's path and what it holds.
pub async fn restore(
    file: &Path,
    db: &str,
    force: bool,
) -> Result<(PathBuf, Restored), RestoreError> {
    let path = match Location::parse(db)? {
        Location::Sqlite(path) => path,
        Location::Postgres(url) => return Err(RestoreError::Postgres(url)),
        Location::Memory => return Err(RestoreError::Memory),
    };
    let file = file.to_path_buf();
    let target = path.clone();
    let restored =
        tokio::task::spawn_blocking(move || stigmer_sqlite::restore(&file, &target, force))
            .await??;
    tracing::info!(db = %path.display(), revision = restored.revision, "database restored");
    Ok((path, restored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_built_in_code_read_no_environment_variable() {
        let options = DatabaseOptions::new("x.db");
        assert_eq!(options.db, "x.db");
        assert_eq!(options.watch_buffer, 8192);
        assert_eq!(options.sqlite.busy_timeout_ms, 5000);
    }
}
