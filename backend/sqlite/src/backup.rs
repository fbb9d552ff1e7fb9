//! Online backups: `VACUUM INTO` a temporary file next to the database, on a read-only
//! connection of its own. The copy is made in one read transaction, so it is the database at
//! one revision, while the writer goes on committing (WAL mode: readers never block it). The
//! copy is then read back in chunks. Its file is unlinked as soon as it is open for reading,
//! so that nothing is left behind whatever becomes of the call; a crash before that leaves a
//! `<db>.backup-*.tmp`, which the next open of the store removes.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use stigmer_store::{BackupCopy, BackupInfo, StoreError, StoreResult};
use tokio::sync::Semaphore;

use crate::config::SqliteConfig;
use crate::errors::store_error;
use crate::queries::log_bounds;
use crate::schema::{open_reader_connection, schema_version};

/// What the copy's bytes are.
pub(crate) const FORMAT: &str = "sqlite";

/// Backups taken by this process so far, to name their files apart.
static TAKEN: AtomicU64 = AtomicU64::new(0);

pub(crate) struct SqliteBackup {
    /// `None` only while a chunk is being read on a blocking thread.
    file: Option<File>,
    info: BackupInfo,
}

impl SqliteBackup {
    /// Copies the database once `slot` (one backup at a time: each needs the database's size
    /// in free disk space) is free.
    pub(crate) async fn take(config: &SqliteConfig, slot: &Arc<Semaphore>) -> StoreResult<Self> {
        let _permit = Arc::clone(slot)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let config = config.clone();
        tokio::task::spawn_blocking(move || copy(&config))
            .await
            .map_err(|err| StoreError::Internal(format!("backup task: {err}")))?
    }
}

#[async_trait]
impl BackupCopy for SqliteBackup {
    fn info(&self) -> &BackupInfo {
        &self.info
    }

    async fn read(&mut self, max: usize) -> StoreResult<Vec<u8>> {
        let mut file = self.file.take().ok_or(StoreError::Closed)?;
        let (file, chunk) = tokio::task::spawn_blocking(move || {
            let mut chunk = Vec::with_capacity(max);
            let read = (&mut file).take(max as u64).read_to_end(&mut chunk);
            (file, read.map(|_| chunk))
        })
        .await
        .map_err(|err| StoreError::Internal(format!("backup task: {err}")))?;
        self.file = Some(file);
        chunk.map_err(|err| StoreError::Internal(format!("reading the backup copy: {err}")))
    }
}

fn copy(config: &SqliteConfig) -> StoreResult<SqliteBackup> {
    let conn =
        open_reader_connection(config).map_err(|err| StoreError::Internal(err.to_string()))?;
    check_room(config, &conn)?;
    let temp = TempCopy::create(&config.path)?;
    let target = temp.path.to_str().ok_or_else(|| {
        StoreError::Internal(format!(
            "the backup path {} is not UTF-8",
            temp.path.display()
        ))
    })?;
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(store_error)?;
    drop(conn);
    // VACUUM INTO writes a database in rollback-journal mode: one self-contained file, which
    // this read-only connection reads without creating anything next to it.
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let copy = Connection::open_with_flags(&temp.path, flags).map_err(store_error)?;
    let revision = log_bounds(&copy)?.current;
    let schema_version = schema_version(&copy).map_err(|problem| {
        StoreError::Internal(format!("the backup copy's schema history: {problem:?}"))
    })?;
    copy.close().map_err(|(_, err)| store_error(err))?;
    let file = File::open(&temp.path)
        .map_err(|err| StoreError::Internal(format!("opening the backup copy: {err}")))?;
    let size = file
        .metadata()
        .map_err(|err| StoreError::Internal(format!("inspecting the backup copy: {err}")))?
        .len();
    // The open handle keeps the bytes; the name goes now.
    drop(temp);
    tracing::info!(revision, size, "took a backup copy");
    Ok(SqliteBackup {
        file: Some(file),
        info: BackupInfo {
            revision,
            schema_version,
            size,
            format: FORMAT,
        },
    })
}

/// Refuses a copy that would leave the disk with less free space than the reserve: the
/// writer needs it more than the backup does.
fn check_room(config: &SqliteConfig, conn: &Connection) -> StoreResult<()> {
    let bytes: i64 = conn
        .query_row(
            "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size",
            [],
            |row| row.get(0),
        )
        .map_err(store_error)?;
    let dir = directory(&config.path);
    let Ok(stats) = rustix::fs::statvfs(dir) else {
        return Ok(());
    };
    let free = stats.f_bavail.saturating_mul(stats.f_frsize);
    let needed = u64::try_from(bytes)
        .unwrap_or(0)
        .saturating_add(config.reserve_bytes);
    if free < needed {
        tracing::warn!(
            needed,
            free,
            "refused a backup: its copy of the database would leave too little free disk space"
        );
        return Err(StoreError::Full);
    }
    Ok(())
}

fn directory(db: &Path) -> &Path {
    match db.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// `<db file name>.backup-`: how every backup copy's name starts.
fn copy_prefix(db: &Path) -> String {
    let name = db
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{name}.backup-")
}

/// The copy's file, created empty (0600, as it holds everything the database does) for
/// VACUUM INTO to fill, and removed when dropped.
struct TempCopy {
    path: PathBuf,
}

impl TempCopy {
    fn create(db: &Path) -> StoreResult<Self> {
        let name = format!(
            "{}{}-{}.tmp",
            copy_prefix(db),
            std::process::id(),
            TAKEN.fetch_add(1, Ordering::Relaxed)
        );
        let path = directory(db).join(name);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|err| match err.kind() {
                ErrorKind::StorageFull | ErrorKind::QuotaExceeded => StoreError::Full,
                _ => StoreError::Internal(format!("creating {}: {err}", path.display())),
            })?;
        Ok(Self { path })
    }
}

impl Drop for TempCopy {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_file(&self.path)
            && err.kind() != ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %err, "cannot remove a backup copy");
        }
    }
}

/// Removes the copies a process that crashed mid-backup left next to `db`. Called with the
/// database's lock held, so no other process is taking one.
pub(crate) fn remove_stale_copies(db: &Path) {
    let prefix = copy_prefix(db);
    let Ok(entries) = std::fs::read_dir(directory(db)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".tmp") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(path = %entry.path().display(), "removed a backup copy left by a crash")
                }
                Err(err) => {
                    tracing::warn!(path = %entry.path().display(), error = %err, "cannot remove a stale backup copy")
                }
            }
        }
    }
}
