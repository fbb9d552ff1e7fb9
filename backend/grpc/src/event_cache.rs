//! Encoded WatchEvents of the most recent changes, shared by every watcher
//! (ResourceService/watch in `feed.rs`, held by the controller's `Controller`).

use std::sync::{Mutex, MutexGuard, PoisonError};

use prost::bytes::Bytes;

use crate::error::ApiError;

/// Encoded WatchEvents of the most recent changes, by revision. A revision names one change of
/// one resource, so its event is the same for every watcher of ResourceService/watch.
pub(crate) struct EventCache {
    slots: Mutex<Vec<Option<(i64, Bytes)>>>,
}

/// Changes whose events are kept: enough for every watcher to pass a burst of writes.
const CACHED_EVENTS: usize = 4096;

impl EventCache {
    pub(crate) fn new() -> Self {
        Self {
            slots: Mutex::new(vec![None; CACHED_EVENTS]),
        }
    }

    /// The cached event of `revision`, or `encode`'s, which is then cached. Two watchers may
    /// encode the same event at once; both results are equal.
    pub(crate) fn get_or_encode(
        &self,
        revision: i64,
        encode: impl FnOnce() -> Result<Bytes, ApiError>,
    ) -> Result<Bytes, ApiError> {
        let slot = usize::try_from(revision.rem_euclid(CACHED_EVENTS as i64)).unwrap_or(0);
        if let Some((cached, bytes)) = &self.lock()[slot]
            && *cached == revision
        {
            return Ok(bytes.clone());
        }
        let bytes = encode()?;
        self.lock()[slot] = Some((revision, bytes.clone()));
        Ok(bytes)
    }

    /// Slots are replaced whole, so a panic elsewhere cannot leave one half-written.
    fn lock(&self) -> MutexGuard<'_, Vec<Option<(i64, Bytes)>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
