//! Whole-database backups ([`crate::Store::backup`]): a consistent copy, read front to back.

use async_trait::async_trait;

use crate::StoreResult;

/// What a backup copy holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// The revision of the last change the copy holds: every change up to it, none after.
    pub revision: i64,
    /// The schema version of the copy (the last migration applied to it).
    pub schema_version: i64,
    /// The copy's size in bytes.
    pub size: u64,
    /// What its bytes are: "sqlite" for a SQLite database file.
    pub format: &'static str,
}

/// A consistent copy of the whole database taken by [`crate::Store::backup`]. Dropping it
/// removes whatever the store kept for it (a temporary file).
#[async_trait]
pub trait BackupCopy: Send {
    fn info(&self) -> &BackupInfo;

    /// Up to `max` more bytes of the copy, in order; empty once every byte has been read.
    async fn read(&mut self, max: usize) -> StoreResult<Vec<u8>>;
}
