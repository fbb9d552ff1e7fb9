//! Refills the protobuf read cache (docs/adr/0017-protobuf-read-cache.md) in the background.
//! Rows without an encoding (written before the cache existed, edited by hand, re-sealed by a
//! key rotation) are correct but decoded from JSON on every read. This task finds them through
//! a partial index, encodes each as a write would have, and stores the encoding only if the row
//! still holds the data it was made from. It runs once at start, then again whenever a read
//! had to decode a row.

use std::sync::Arc;

use stigmer_store::{CacheFill, StoreError, StoredResource};
use tokio::sync::watch;

use crate::controller::{Controller, cached_encoding};

/// Rows read, encoded and filled per step: small enough that a step never holds up client
/// writes for long in the writer's queue.
const STEP: usize = 256;

/// Runs until `stop` turns true.
pub(crate) async fn refill_read_cache(app: Arc<Controller>, mut stop: watch::Receiver<bool>) {
    loop {
        match fill_all(&app, &stop).await {
            Ok(0) => {}
            Ok(filled) => tracing::info!(filled, "refilled the read cache of rows without one"),
            Err(StoreError::Closed) => return,
            Err(err) => tracing::warn!(error = %err, "refilling the read cache failed"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = app.cache_misses.notified() => {}
        }
    }
}

/// One pass over every row without an encoding; returns how many took one.
async fn fill_all(app: &Controller, stop: &watch::Receiver<bool>) -> Result<u64, StoreError> {
    let mut after_id = String::new();
    let mut filled = 0;
    while !*stop.borrow() {
        let rows = app.store.uncached(after_id.clone(), STEP).await?;
        let Some(last) = rows.last() else { break };
        after_id = last.id.clone();
        let fills: Vec<CacheFill> = rows.iter().filter_map(|row| fill_for(app, row)).collect();
        if !fills.is_empty() {
            filled += app.store.fill_read_cache(fills).await?;
        }
    }
    Ok(filled)
}

/// The row's encoding, or `None` (logged) when it cannot be made: a kind this server does not
/// serve, or data that no longer decodes. Reads of such a row report the problem themselves.
fn fill_for(app: &Controller, row: &StoredResource) -> Option<CacheFill> {
    let kind = app.catalog.kind_by_name(&row.scope.kind)?;
    match cached_encoding(kind, &row.data) {
        Ok(proto) => Some(CacheFill {
            id: row.id.clone(),
            data: row.data.clone(),
            proto,
        }),
        Err(err) => {
            tracing::debug!(id = %row.id, error = %err, "row left without a cached encoding");
            None
        }
    }
}
