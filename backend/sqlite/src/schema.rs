use std::fs::{DirBuilder, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::config::SqliteConfig;
use crate::errors::OpenError;

mod embedded {
    refinery::embed_migrations!("../../migrations/sqlite");
}

/// Creates the database's directory (0700) and file (0600) when missing, so that neither the
/// database nor its -wal/-shm companions (which copy the file's mode) are ever world-readable.
pub(crate) fn prepare_path(path: &Path) -> Result<(), OpenError> {
    let wrap = |error| OpenError::Path {
        path: path.to_path_buf(),
        error,
    };
    if let Some(parent) = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(wrap)?;
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(wrap(err)),
    }
}

pub(crate) fn open_writer_connection(config: &SqliteConfig) -> Result<Connection, OpenError> {
    let wrap = |error: rusqlite::Error| match error.sqlite_error() {
        // "attempt to write a readonly database" would send the operator to the file's mode.
        Some(failure) if failure.extended_code == SQLITE_READONLY_DIRECTORY => {
            OpenError::ReadOnlyDirectory {
                path: config.path.clone(),
            }
        }
        _ => OpenError::Sqlite {
            path: config.path.clone(),
            error,
        },
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&config.path, flags).map_err(wrap)?;
    conn.busy_timeout(config.busy_timeout).map_err(wrap)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(wrap)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NotWal {
            path: config.path.clone(),
            mode,
        });
    }
    conn.pragma_update(None, "synchronous", config.synchronous.pragma_value())
        .map_err(wrap)?;
    // SQLite ignores a value it does not understand without a word, which would leave commits
    // less durable than the operator asked for: read the level back and insist.
    let effective = synchronous_level(&conn).map_err(wrap)?;
    if effective != config.synchronous.pragma_value() {
        return Err(OpenError::Synchronous {
            path: config.path.clone(),
            asked: config.synchronous.pragma_value(),
            effective,
        });
    }
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(wrap)?;
    // A WAL that grew past this (a long reader held checkpoints back, a big batch) is cut back
    // to it when it is next reset, instead of keeping that disk space for good.
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
        .map_err(wrap)?;
    // Each call of a group commit runs in its own savepoint, so every page a call touches is
    // first copied to the sub-journal. Past 64 KiB SQLite spills that journal to a temporary
    // file: a pwrite per page, 14 % of the server's CPU for Agent creates at 64 in flight.
    // In memory it costs a copy; it lives only until the batch commits.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(wrap)?;
    Ok(conn)
}

/// The `synchronous` level `conn` commits with, as SQLite reports it.
pub(crate) fn synchronous_level(conn: &Connection) -> rusqlite::Result<&'static str> {
    let level: i64 = conn.pragma_query_value(None, "synchronous", |row| row.get(0))?;
    Ok(match level {
        0 => "OFF",
        1 => "NORMAL",
        2 => "FULL",
        3 => "EXTRA",
        _ => "UNKNOWN",
    })
}

/// SQLITE_READONLY_DIRECTORY: the database could be written, but not the files SQLite must
/// create beside it.
const SQLITE_READONLY_DIRECTORY: std::ffi::c_int = 1544;

/// Four times what the WAL reaches between automatic checkpoints (1000 pages of 4 KiB).
const WAL_SIZE_LIMIT: i64 = 16 * 1024 * 1024;

pub(crate) fn open_reader_connection(config: &SqliteConfig) -> Result<Connection, OpenError> {
    let wrap = |error| OpenError::Sqlite {
        path: config.path.clone(),
        error,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&config.path, flags).map_err(wrap)?;
    conn.busy_timeout(config.busy_timeout).map_err(wrap)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(wrap)?;
    Ok(conn)
}

/// Applies every migration the database has not seen yet, each in its own transaction, and
/// refuses a database that has migrations this binary does not know (a newer server wrote it).
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), OpenError> {
    let report = embedded::migrations::runner()
        .set_abort_divergent(true)
        .set_abort_missing(true)
        .run(conn)
        .map_err(|error| OpenError::Migration {
            path: path.to_path_buf(),
            error,
        })?;
    for migration in report.applied_migrations() {
        tracing::info!(
            version = migration.version(),
            name = migration.name(),
            "applied database migration"
        );
    }
    Ok(())
}

/// Takes the database's lock file for as long as the returned handle lives, so that two servers
/// (or a server and a key rotation) never share one database: its single-writer design and
/// in-memory state assume they are alone. The file holds the owner's pid, so that whoever is
/// refused can be told which process to stop.
pub(crate) fn lock(path: &Path) -> Result<std::fs::File, OpenError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = std::path::PathBuf::from(lock_path);
    let wrap = |error| OpenError::Path {
        path: lock_path.clone(),
        error,
    };
    // Not truncated on open: until the lock is ours, the pid in it is the owner's.
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(wrap)?;
    match file.try_lock() {
        Ok(()) => {
            record_owner(&mut file).map_err(wrap)?;
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::InUse {
            path: path.to_path_buf(),
            owner: read_owner(&mut file),
            lock: lock_path,
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(wrap(source)),
    }
}

fn record_owner(file: &mut std::fs::File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    writeln!(file, "{}", std::process::id())?;
    file.sync_data()
}

/// The pid the owner wrote; `None` if it has not written it yet (it just took the lock) or the
/// file was written by a server older than this rule.
fn read_owner(file: &mut std::fs::File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Why a database's migration history does not fit this build.
#[derive(Debug)]
pub(crate) enum HistoryMismatch {
    /// No readable `refinery_schema_history`: not a stigmer-server database.
    Unreadable(rusqlite::Error),
    /// No migration applied at all.
    Empty,
    /// A newer server wrote it: it has every migration this build has, and more.
    Newer { found: i64, known: i64 },
    /// Migration `version` differs from this build's (or this build has none by that number).
    Divergent { version: i64 },
}

/// The last migration this build has.
pub(crate) fn known_version() -> i64 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|migration| i64::from(migration.version()))
        .max()
        .unwrap_or(0)
}

/// The schema version of the database on `conn`: its last applied migration, after checking
/// that its applied migrations are this build's first ones (same versions, names and
/// checksums), so that this build can open it and migrate it further.
pub(crate) fn schema_version(conn: &Connection) -> Result<i64, HistoryMismatch> {
    let applied = conn
        .prepare("SELECT version, name, checksum FROM refinery_schema_history ORDER BY version")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(HistoryMismatch::Unreadable)?;
    let runner = embedded::migrations::runner();
    let mut known: Vec<_> = runner.get_migrations().iter().collect();
    known.sort_by_key(|migration| migration.version());
    let Some((last, _, _)) = applied.last() else {
        return Err(HistoryMismatch::Empty);
    };
    if applied.len() > known.len() {
        return Err(HistoryMismatch::Newer {
            found: *last,
            known: known_version(),
        });
    }
    for ((version, name, checksum), ours) in applied.iter().zip(&known) {
        let same = *version == i64::from(ours.version())
            && *name == ours.name()
            && *checksum == ours.checksum().to_string();
        if !same {
            return Err(if *version > i64::from(ours.version()) {
                HistoryMismatch::Newer {
                    found: *last,
                    known: known_version(),
                }
            } else {
                HistoryMismatch::Divergent { version: *version }
            });
        }
    }
    Ok(*last)
}
