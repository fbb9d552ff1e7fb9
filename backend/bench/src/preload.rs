//! Filling a database with resources through the store directly, before a server opens it.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use stigmer_sqlite::Synchronous;
use stigmer_store::{Mutation, Store};

use crate::resources::preload_row;
use crate::store_floor::open;

/// Rows per preload transaction.
const BATCH: usize = 1000;

/// Writes `count` Environments (see [`preload_row`]) into the SQLite database at `path` in
/// transactions of 1,000, then closes it. Returns how long that took.
pub async fn preload(path: &Path, count: usize) -> Result<Duration> {
    let started = Instant::now();
    let store = open(path, Synchronous::Normal).await?;
    fill(store.as_ref(), count).await?;
    store.close().await?;
    Ok(started.elapsed())
}

/// Writes `count` Environments (see [`preload_row`]) into `store`, whichever backend, in
/// transactions of 1,000.
pub async fn fill(store: &dyn Store, count: usize) -> Result<()> {
    let mut next = 0;
    while next < count {
        let end = (next + BATCH).min(count);
        let rows = (next..end)
            .map(|index| preload_row(index).map(Mutation::Create))
            .collect::<Result<_>>()?;
        store.transact(rows).await?;
        next = end;
    }
    Ok(())
}
