//! Case 1, the store floors: SqliteStore on a temporary file with synchronous FULL (as the
//! store reports it in the output), no gRPC.
//! Single-row inserts (one create, so one transaction and one fsync, at a time) and batches of
//! 64 creates in one transact.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use stigmer_sqlite::{SqliteConfig, SqliteStore, Synchronous};
use stigmer_store::{Mutation, Store};

use crate::Settings;
use crate::drive::drive;
use crate::report::Report;
use crate::resources::{self, preload_row};

pub const BATCH: usize = 64;

pub async fn run(settings: &Settings, report: &mut Report) -> Result<()> {
    report.section("1. store floors (SqliteStore, no gRPC) — rows/s");
    let dir = tempfile::tempdir()?;
    let store = open(&dir.path().join("floor.db"), Synchronous::Full).await?;
    let info = store.info(resources::ORG.into()).await?;
    report.note(&format!("the store says: {}", info.database));
    let single = drive(1, settings.duration, 1, |_| {
        let store = Arc::clone(&store);
        move |sequence| {
            let store = Arc::clone(&store);
            async move {
                store.create(preload_row(unique(0, sequence))?).await?;
                Ok(())
            }
        }
    })
    .await?;
    report.row(
        "insert 1 row per transaction",
        1,
        &single,
        "rows/s, sequential",
    );
    let batch = drive(1, settings.duration, BATCH as u64, |_| {
        let store = Arc::clone(&store);
        move |sequence| {
            let store = Arc::clone(&store);
            async move {
                let rows = (0..BATCH)
                    .map(|row| preload_row(unique(1 + row, sequence)).map(Mutation::Create))
                    .collect::<anyhow::Result<_>>()?;
                store.transact(rows).await?;
                Ok(())
            }
        }
    })
    .await?;
    report.row(
        "insert batch of 64 per transaction",
        1,
        &batch,
        "rows/s; latency is per batch",
    );
    report.floors.store_batch = Some(batch);
    store.close().await?;
    Ok(())
}

/// Opens a store at `path` off the async runtime's threads.
pub async fn open(path: &Path, synchronous: Synchronous) -> Result<Arc<SqliteStore>> {
    let mut config = SqliteConfig::new(path);
    config.synchronous = synchronous;
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&config)).await??;
    Ok(Arc::new(store))
}

/// A row index no other call of this case uses: lane `lane` of call `sequence`.
fn unique(lane: usize, sequence: u64) -> usize {
    usize::try_from(sequence).unwrap_or(usize::MAX / 128) * 128 + lane
}
