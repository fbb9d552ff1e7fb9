//! The disk reserve ("ballast"): a file of real zeros next to the database, `<db>.reserve`.
//!
//! SQLite needs room to commit anything, a delete included: WAL frames, then a checkpoint that
//! copies them into the database file, which grows by the pages the WAL added. On a full disk
//! that room is gone, and with it the API's only way to free space. The reserve is that room,
//! set aside while there is plenty and given back the moment a write finds the disk full.
//!
//! While the reserve is released the writer caps the database at its current size (`PRAGMA
//! max_page_count`), so that the space given back goes to deletes and checkpoints, never to new
//! data: writes that fit in pages freed by deletes still commit, writes that would grow the file
//! fail as full. The cap is lifted once the reserve can be written again with as much free space
//! to spare. A reserve of 0 bytes turns all of this off.

use std::fs::OpenOptions;
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// How often a released reserve checks whether the disk has room again: one statvfs call, and
/// the reserve's writes once it has.
const RECHECK: Duration = Duration::from_secs(1);

/// A released reserve lets deletes grow the database by this fraction of it (at least
/// `MIN_FOR_DELETES`); the rest is for WAL frames and checkpoints.
const DELETES_SHARE: u64 = 8;
const MIN_FOR_DELETES: u64 = 256 * 1024;

/// Zeros written per call while filling the reserve.
const CHUNK: usize = 64 * 1024;

/// The reserve file.
pub(crate) struct Reserve {
    path: PathBuf,
    bytes: u64,
}

impl Reserve {
    pub(crate) fn new(db: &Path, bytes: u64) -> Self {
        let mut path = db.as_os_str().to_owned();
        path.push(".reserve");
        Self {
            path: PathBuf::from(path),
            bytes,
        }
    }

    /// Bytes free for this user on the database's file system.
    fn available(&self) -> io::Result<u64> {
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let stats = rustix::fs::statvfs(dir)?;
        Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
    }

    /// Free space asked for before the reserve is written: itself and as much again, so that
    /// writing it never leaves the disk on the edge of full.
    fn needed(&self) -> u64 {
        self.bytes.saturating_mul(2)
    }

    /// Before SQLite opens the database: on a disk too full to hold what recovering the WAL or
    /// running a migration may write, the reserve is given back first.
    pub(crate) fn make_room_to_open(&self) {
        let short = self.available().is_ok_and(|free| free < self.bytes);
        if short && self.release().unwrap_or(false) {
            tracing::warn!(
                "the disk is nearly full: released the {} disk reserve before opening the database",
                mib(self.bytes)
            );
        }
    }

    /// Gives the space back. Returns whether there was a reserve to give.
    pub(crate) fn release(&self) -> io::Result<bool> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Makes sure the reserve is in place, writing it when the disk has room for it and as
    /// much again. Returns false when it has not.
    pub(crate) fn fill(&self) -> io::Result<bool> {
        if std::fs::metadata(&self.path).is_ok_and(|meta| meta.len() == self.bytes) {
            return Ok(true);
        }
        // A partial file, from a crash or an earlier size, counts as free space.
        self.release()?;
        if self.available()? < self.needed() {
            return Ok(false);
        }
        let Err(err) = self.write_zeros() else {
            return Ok(true);
        };
        self.release()?;
        match err.kind() {
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => Ok(false),
            _ => Err(err),
        }
    }

    /// Real zeros, not a sparse file or a size set with `set_len`: a hole holds no space.
    fn write_zeros(&self) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.path)?;
        let zeros = [0u8; CHUNK];
        let mut left = self.bytes;
        while left > 0 {
            let n = usize::try_from(left).map_or(CHUNK, |left| left.min(CHUNK));
            file.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        file.sync_all()
    }
}

/// The reserve, and whether the writer may grow the database.
pub(crate) struct Space {
    reserve: Reserve,
    low: Option<Low>,
}

/// The state of a writer whose reserve is released.
struct Low {
    /// `max_page_count` before the cap, restored when it is lifted.
    uncapped: i64,
    /// Pages deletes may grow the database to. A delete frees pages but first needs some: its
    /// change-log entry holds the deleted resource, and B-tree pages split.
    for_deletes: i64,
    checked: Instant,
}

impl Space {
    /// Called with the writer connection open: fills the reserve, or starts capped when the
    /// disk has no room for it.
    pub(crate) fn start(reserve: Reserve, conn: &Connection) -> Self {
        let mut space = Self { reserve, low: None };
        if space.reserve.bytes == 0 {
            // Turned off: a reserve left by an earlier configuration is space to give back.
            let _ = space.reserve.release();
            return space;
        }
        match space.reserve.fill() {
            Ok(true) => {}
            Ok(false) => space.cap(
                conn,
                "the disk is nearly full: starting without the disk reserve",
            ),
            Err(err) => tracing::warn!(
                error = %err,
                path = %space.reserve.path.display(),
                "cannot write the disk reserve; running without it, so a full disk will also refuse deletes"
            ),
        }
        space
    }

    /// Before a batch: lifts the cap when the disk has room again.
    pub(crate) fn recheck(&mut self, conn: &Connection) {
        let Some(low) = &mut self.low else { return };
        if low.checked.elapsed() < RECHECK {
            return;
        }
        low.checked = Instant::now();
        let uncapped = low.uncapped;
        match self.reserve.fill() {
            Ok(true) => match set_max_page_count(conn, uncapped) {
                Ok(_) => {
                    self.low = None;
                    tracing::info!(
                        "the disk has room again: the {} disk reserve is back and writes may grow the database",
                        mib(self.reserve.bytes)
                    );
                }
                Err(err) => tracing::warn!(error = %err, "cannot lift the database size cap"),
            },
            Ok(false) => {}
            // Already warned of when the reserve was released; said again every second, it
            // would drown the log.
            Err(err) => tracing::debug!(error = %err, "cannot write the disk reserve"),
        }
    }

    /// After a write found the disk full: gives the reserve back and caps the database.
    pub(crate) fn on_full(&mut self, conn: &Connection) {
        if self.low.is_some() || self.reserve.bytes == 0 {
            return;
        }
        match self.reserve.release() {
            Ok(true) => self.cap(
                conn,
                &format!(
                    "the disk is full: released the {} disk reserve so that deletes can commit",
                    mib(self.reserve.bytes)
                ),
            ),
            Ok(false) => self.cap(
                conn,
                "the disk is full and there is no disk reserve to release",
            ),
            Err(err) => {
                tracing::warn!(error = %err, path = %self.reserve.path.display(), "cannot release the disk reserve");
                self.cap(conn, "the disk is full");
            }
        }
    }

    /// After the final checkpoint failed for want of space: gives the reserve back so that a
    /// second attempt can succeed. Returns whether there was one to give.
    pub(crate) fn release_for_close(&mut self) -> bool {
        self.reserve.release().unwrap_or(false)
    }

    /// Before each write while the reserve is released: a write that only removes data may
    /// grow the database by a little, any other write not at all (it may still reuse the pages
    /// deletes freed).
    pub(crate) fn limit(&self, conn: &Connection, frees_space: bool) {
        let Some(low) = &self.low else { return };
        // SQLite never sets the limit below the database's current size, so 1 means "as is".
        let pages = if frees_space { low.for_deletes } else { 1 };
        if let Err(err) = set_max_page_count(conn, pages) {
            tracing::warn!(error = %err, "cannot limit the database size");
        }
    }

    /// Caps the database at its current size, pages the WAL added included.
    fn cap(&mut self, conn: &Connection, why: &str) {
        match self.low_at_current_size(conn) {
            Ok(low) => {
                tracing::warn!(
                    "{why}; writes that would grow the database fail as full until {} are free",
                    mib(self.reserve.needed())
                );
                self.low = Some(low);
            }
            Err(err) => tracing::warn!(error = %err, "{why}; cannot cap the database size"),
        }
    }

    fn low_at_current_size(&self, conn: &Connection) -> rusqlite::Result<Low> {
        let uncapped = pragma_i64(conn, "max_page_count")?;
        let pages = pragma_i64(conn, "page_count")?;
        let page_size = pragma_i64(conn, "page_size")?.max(512);
        let for_deletes = (self.reserve.bytes / DELETES_SHARE).max(MIN_FOR_DELETES);
        set_max_page_count(conn, pages)?;
        Ok(Low {
            uncapped,
            for_deletes: pages.saturating_add(i64::try_from(for_deletes).unwrap_or(0) / page_size),
            checked: Instant::now(),
        })
    }
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes.div_ceil(1024 * 1024))
}

fn pragma_i64(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, name, |row| row.get(0))
}

/// Returns the limit SQLite settled on: never below the database's current size.
fn set_max_page_count(conn: &Connection, pages: i64) -> rusqlite::Result<i64> {
    conn.pragma_update_and_check(None, "max_page_count", pages, |row| row.get(0))
}
