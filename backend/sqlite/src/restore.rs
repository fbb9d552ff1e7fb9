//! Restoring a backup (`stigmer-server restore FILE --db PATH`). With the target's lock held,
//! so that no server has it open, the backup is copied next to the target, the copy is
//! checked (`PRAGMA integrity_check`, and a migration history this build can open and carry
//! on from) and only then renamed over the target. A refused restore leaves the target as
//! it was; a crash midway leaves it as it was too, plus a `<db>.restore-*.tmp` to delete.

use std::collections::BTreeMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use thiserror::Error;

use crate::errors::OpenError;
use crate::schema::{HistoryMismatch, known_version, lock, schema_version};

/// Why a restore was refused. Nothing was written to the target.
#[derive(Debug, Error)]
pub enum RestoreError {
    #[error("cannot read the backup {path}: {error}")]
    Read { path: PathBuf, error: io::Error },
    #[error("{path} is not an intact SQLite database ({detail}); it was not restored")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path} is not a stigmer-server database ({detail}); it was not restored")]
    NotStigmer { path: PathBuf, detail: String },
    #[error(
        "{path} was written by a newer stigmer-server (schema version {found}; this one knows up to {known}); restore it with that version or a newer one"
    )]
    Newer {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error(
        "{path} has a migration {version} that this stigmer-server does not have; it was not written by a release of this server"
    )]
    Divergent { path: PathBuf, version: i64 },
    #[error(
        "{path} already exists; restoring would replace that database: pass --force to overwrite it, or restore to another path"
    )]
    Exists { path: PathBuf },
    /// The target is locked by a running server, or its directory cannot be made.
    #[error(transparent)]
    Target(#[from] OpenError),
    #[error("cannot write {path}: {error}")]
    Write { path: PathBuf, error: io::Error },
}

/// What was restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The revision of the last change the database holds.
    pub revision: i64,
    /// Its schema version (the last migration applied to it); the server applies the later
    /// ones when it opens the database.
    pub schema_version: i64,
    /// This build's schema version.
    pub known_version: i64,
    /// Its size in bytes.
    pub size: u64,
    /// Whether a database was there before and has been replaced.
    pub replaced: bool,
    /// Its store-wide settings (`Store::setting`).
    pub settings: BTreeMap<String, String>,
}

/// Checks the database file `backup` and puts a copy of it at `target`, which must not exist
/// unless `force`, and must not be in use by a server. The target's `-wal` and `-shm` files,
/// which belong to the database replaced, go too.
pub fn restore(backup: &Path, target: &Path, force: bool) -> Result<Restored, RestoreError> {
    let mut source = File::open(backup).map_err(|error| RestoreError::Read {
        path: backup.to_path_buf(),
        error,
    })?;
    prepare_directory(target)?;
    let _lock = lock(target)?;
    let replaced = match std::fs::symlink_metadata(target) {
        Ok(_) if !force => {
            return Err(RestoreError::Exists {
                path: target.to_path_buf(),
            });
        }
        Ok(_) => true,
        Err(err) if err.kind() == ErrorKind::NotFound => false,
        Err(error) => {
            return Err(RestoreError::Write {
                path: target.to_path_buf(),
                error,
            });
        }
    };
    let temp = TempTarget::create(target)?;
    let write = |error| RestoreError::Write {
        path: temp.path.clone(),
        error,
    };
    let mut file = temp.open().map_err(write)?;
    let size = io::copy(&mut source, &mut file).map_err(|error| RestoreError::Read {
        path: backup.to_path_buf(),
        error,
    })?;
    file.sync_all().map_err(write)?;
    drop(file);
    let (revision, schema_version, settings) = inspect(&temp.path, backup)?;
    for suffix in ["-wal", "-shm"] {
        let mut companion = target.as_os_str().to_owned();
        companion.push(suffix);
        match std::fs::remove_file(PathBuf::from(companion)) {
            Ok(()) => {}
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(error) => {
                return Err(RestoreError::Write {
                    path: target.to_path_buf(),
                    error,
                });
            }
        }
    }
    temp.persist(target)?;
    Ok(Restored {
        revision,
        schema_version,
        known_version: known_version(),
        size,
        replaced,
        settings,
    })
}

/// The revision, schema version and settings of the database at `path` (a copy of `backup`,
/// named in errors), once it has passed `integrity_check` and its history fits this build.
fn inspect(
    path: &Path,
    backup: &Path,
) -> Result<(i64, i64, BTreeMap<String, String>), RestoreError> {
    let corrupt = |detail: String| RestoreError::Corrupt {
        path: backup.to_path_buf(),
        detail,
    };
    let not_ours = |detail: String| RestoreError::NotStigmer {
        path: backup.to_path_buf(),
        detail,
    };
    // Read-write: the copy is ours, and a database in WAL mode needs its -shm made.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|err| corrupt(err.to_string()))?;
    let problems = conn
        .prepare("PRAGMA integrity_check(20)")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(|err| corrupt(err.to_string()))?;
    if problems != ["ok"] {
        return Err(corrupt(format!("integrity_check: {}", problems.join("; "))));
    }
    let schema_version = schema_version(&conn).map_err(|mismatch| match mismatch {
        HistoryMismatch::Unreadable(err) => not_ours(format!("no migration history: {err}")),
        HistoryMismatch::Empty => not_ours("its migration history is empty".into()),
        HistoryMismatch::Newer { found, known } => RestoreError::Newer {
            path: backup.to_path_buf(),
            found,
            known,
        },
        HistoryMismatch::Divergent { version } => RestoreError::Divergent {
            path: backup.to_path_buf(),
            version,
        },
    })?;
    let revision = crate::queries::log_bounds(&conn)
        .map_err(|err| not_ours(format!("no revision: {err}")))?
        .current;
    let settings = conn
        .prepare("SELECT key, value FROM settings")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<BTreeMap<String, String>>>()
        })
        .map_err(|err| not_ours(format!("no settings: {err}")))?;
    conn.close().map_err(|(_, err)| corrupt(err.to_string()))?;
    Ok((revision, schema_version, settings))
}

/// Creates the target's directory (0700) when missing, as opening a store would.
fn prepare_directory(target: &Path) -> Result<(), RestoreError> {
    match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|error| RestoreError::Write {
                path: dir.to_path_buf(),
                error,
            }),
        _ => Ok(()),
    }
}

/// The copy being checked, next to the target (so that the rename is atomic), removed when
/// dropped unless it was put in place.
struct TempTarget {
    path: PathBuf,
    placed: bool,
}

impl TempTarget {
    fn create(target: &Path) -> Result<Self, RestoreError> {
        let mut path = target.as_os_str().to_owned();
        path.push(format!(".restore-{}.tmp", std::process::id()));
        let path = PathBuf::from(path);
        // A leftover of an earlier restore by a process with the same pid.
        let _ = std::fs::remove_file(&path);
        Ok(Self {
            path,
            placed: false,
        })
    }

    fn open(&self) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.path)
    }

    /// Renames the copy to `target` and makes the rename durable.
    fn persist(mut self, target: &Path) -> Result<(), RestoreError> {
        let write = |error| RestoreError::Write {
            path: target.to_path_buf(),
            error,
        };
        std::fs::rename(&self.path, target).map_err(write)?;
        self.placed = true;
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(write)?;
        Ok(())
    }
}

impl Drop for TempTarget {
    /// Removes the copy unless it was put in place, and whatever SQLite left beside it while
    /// checking it (its connection was closed, so nothing in them is needed).
    fn drop(&mut self) {
        let suffixes: &[&str] = if self.placed {
            &["-wal", "-shm", "-journal"]
        } else {
            &["", "-wal", "-shm", "-journal"]
        };
        for suffix in suffixes {
            let mut path = self.path.as_os_str().to_owned();
            path.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(path));
        }
    }
}
