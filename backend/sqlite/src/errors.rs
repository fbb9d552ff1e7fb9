use std::path::PathBuf;

use rusqlite::ErrorCode;
use stigmer_store::StoreError;
use thiserror::Error;

/// Why the store could not be opened. Shown to the operator at start-up, never to a client.
///
/// Each message names the file and says why in full, so the cause is not a `source()` as
/// well: printed with its chain (`{:#}`, as the binary does) it would appear two or three
/// times ("malformed: malformed: Error code 11: malformed").
#[derive(Debug, Error)]
pub enum OpenError {
    #[error("cannot prepare {path}: {error}")]
    Path {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("cannot open SQLite database {path}: {error}")]
    Sqlite {
        path: PathBuf,
        error: rusqlite::Error,
    },
    #[error(
        "cannot open SQLite database {path}: its directory is not writable, and SQLite must create the database's -wal and -shm files there"
    )]
    ReadOnlyDirectory { path: PathBuf },
    #[error("{path} could not be switched to WAL mode (it reports journal_mode={mode})")]
    NotWal { path: PathBuf, mode: String },
    #[error(
        "{path}: SQLite kept synchronous={effective} when asked for synchronous={asked}; commits would not be as durable as configured"
    )]
    Synchronous {
        path: PathBuf,
        asked: &'static str,
        effective: &'static str,
    },
    #[error("cannot migrate the database schema of {path}: {error}")]
    Migration {
        path: PathBuf,
        error: refinery::Error,
    },
    #[error(
        "{path} is in use by another stigmer-server (or a key rotation), {}, which holds the lock {lock}; stop it first, or point this one at another database",
        owner_text(*.owner)
    )]
    InUse {
        path: PathBuf,
        lock: PathBuf,
        /// The owner's pid, as it wrote it in the lock file.
        owner: Option<u32>,
    },
    #[error("cannot start a storage thread: {0}")]
    Thread(std::io::Error),
}

fn owner_text(owner: Option<u32>) -> String {
    match owner {
        Some(pid) => format!("pid {pid}"),
        None => "pid unknown".to_string(),
    }
}

/// Maps a SQLite failure that has no more specific meaning to the store's error.
pub(crate) fn store_error(err: rusqlite::Error) -> StoreError {
    match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Unavailable(
            "the database is locked by another connection; retry shortly".into(),
        ),
        Some(ErrorCode::DiskFull) => StoreError::Full,
        _ => StoreError::Internal(err.to_string()),
    }
}

/// True when the error is a UNIQUE constraint on a secondary index (the slug), not the key.
pub(crate) fn is_unique_violation(err: &rusqlite::Error) -> bool {
    const SQLITE_CONSTRAINT_UNIQUE: std::ffi::c_int = 2067;
    matches!(err, rusqlite::Error::SqliteFailure(e, _) if e.extended_code == SQLITE_CONSTRAINT_UNIQUE)
}
