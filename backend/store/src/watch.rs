//! The change feed's guarantees, built once for every backend from three primitives:
//! live changes (`subscribe`), the change log (`changes`) and consistent reads (`snapshot`).
//!
//! A watcher subscribes before it reads anything, so every change committed after that is in
//! its live queue; whatever committed before is in the snapshot or the log. It then delivers
//! in revision order and drops any live change at or below the last revision it delivered, so
//! nothing is lost and nothing is repeated, even for changes that commit during the replay.

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::{Change, ChangeFilter, Store, StoreError, StoreResult, StoredResource};

/// Where a watch starts and what it follows.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub filter: ChangeFilter,
    /// Replay changes after this revision; 0 starts with a snapshot of the current matches.
    pub since_revision: i64,
    /// End the watch once every change up to this revision has been delivered (`None`: follow
    /// changes for ever). After a snapshot read at or past it, the watch ends with the
    /// snapshot.
    pub until_revision: Option<i64>,
    /// Rows read per step of the snapshot and the replay.
    pub page_size: usize,
    /// Items queued for one slow watcher before its feeder waits (not `--watch-buffer`, the
    /// committed changes a store keeps for all live watchers together).
    pub queued_per_watcher: usize,
    /// Once this holds true (the server is shutting down), the watch ends with
    /// [`StoreError::WatchStopped`], saying where to resume, instead of following changes for
    /// ever and holding up the shutdown.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
}

/// One item of a watch, in delivery order.
#[derive(Debug, Clone)]
pub enum WatchItem {
    /// A current resource, read at `revision`.
    Snapshot {
        revision: i64,
        resource: StoredResource,
    },
    Change(Arc<Change>),
}

/// Starts a watch. Items arrive on the returned channel until the consumer drops it, or an
/// error ends it as the last item: a compacted start, lagging behind, a stop, or the store
/// closing ([`StoreError::Closed`]).
pub fn watch(
    store: Arc<dyn Store>,
    options: WatchOptions,
) -> mpsc::Receiver<StoreResult<WatchItem>> {
    let (tx, rx) = mpsc::channel(options.queued_per_watcher.max(1));
    tokio::spawn(async move {
        let mut resume_after = None;
        // `None` when stopped: `run` is dropped wherever it was waiting.
        let failed = tokio::select! {
            ran = run(store.as_ref(), &options, &tx, &mut resume_after) => match ran {
                Ok(()) => return,
                Err(err) => Some(err),
            },
            () = stopped(options.stop.clone()) => None,
        };
        let err = failed.unwrap_or(StoreError::WatchStopped { resume_after });
        let _ = tx.send(Err(err)).await;
    });
    rx
}

/// Resolves once `stop` holds true; never without one, or once its sender is gone.
async fn stopped(stop: Option<tokio::sync::watch::Receiver<bool>>) {
    if let Some(mut stop) = stop
        && stop.wait_for(|stop| *stop).await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

/// The consumer went away: stop quietly.
struct Gone;

async fn send(tx: &mpsc::Sender<StoreResult<WatchItem>>, item: WatchItem) -> Result<(), Gone> {
    tx.send(Ok(item)).await.map_err(|_| Gone)
}

/// Runs the watch, keeping `resume_after` at the revision a watcher stopped now would resume
/// from: the last one handed to `tx`, once the snapshot (if any) is complete.
async fn run(
    store: &dyn Store,
    options: &WatchOptions,
    tx: &mpsc::Sender<StoreResult<WatchItem>>,
    resume_after: &mut Option<i64>,
) -> StoreResult<()> {
    let mut live = store.subscribe();
    let mut last = if options.since_revision == 0 {
        match send_snapshot(store, options, tx).await {
            Ok(revision) => revision,
            Err(SnapshotError::Gone) => return Ok(()),
            Err(SnapshotError::Store(err)) => return Err(err),
        }
    } else {
        options.since_revision
    };
    *resume_after = Some(last);
    let until = options.until_revision;
    if until.is_some_and(|until| last >= until) {
        return Ok(());
    }
    // Catch up from the log: everything committed before (or while) we subscribed.
    if catch_up(store, options, tx, &mut last, resume_after).await? == Flow::Ended {
        return Ok(());
    }
    if let Some(until) = until
        && store.log_bounds().await?.current >= until
    {
        // Everything up to `until` is committed: what committed since the catch-up read is
        // in the log too.
        catch_up(store, options, tx, &mut last, resume_after).await?;
        return Ok(());
    }
    loop {
        let change = match live.recv().await {
            Ok(change) => change,
            Err(RecvError::Lagged(_)) => {
                return Err(StoreError::WatchLagged {
                    last_revision: last,
                });
            }
            Err(RecvError::Closed) => return Err(StoreError::Closed),
        };
        let revision = change.revision;
        if until.is_some_and(|until| revision > until) {
            return Ok(());
        }
        if revision > last && options.filter.matches(&change) {
            if send(tx, WatchItem::Change(change)).await.is_err() {
                return Ok(());
            }
            last = revision;
            *resume_after = Some(last);
        }
        if until == Some(revision) {
            return Ok(());
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    /// The consumer went away, or the watch reached its `until_revision`.
    Ended,
}

/// Sends the logged changes after `last` (up to `until_revision`), page by page.
async fn catch_up(
    store: &dyn Store,
    options: &WatchOptions,
    tx: &mpsc::Sender<StoreResult<WatchItem>>,
    last: &mut i64,
    resume_after: &mut Option<i64>,
) -> StoreResult<Flow> {
    let page = options.page_size.max(1);
    loop {
        let changes = store.changes(options.filter.clone(), *last, page).await?;
        let done = changes.len() < page;
        for change in changes {
            let revision = change.revision;
            if options.until_revision.is_some_and(|until| revision > until) {
                return Ok(Flow::Ended);
            }
            if send(tx, WatchItem::Change(Arc::new(change))).await.is_err() {
                return Ok(Flow::Ended);
            }
            *last = revision;
            *resume_after = Some(revision);
        }
        if done {
            return Ok(Flow::Continue);
        }
    }
}

enum SnapshotError {
    Gone,
    Store(StoreError),
}

impl From<StoreError> for SnapshotError {
    fn from(err: StoreError) -> Self {
        Self::Store(err)
    }
}

/// Sends the current matches, all read at one revision, and returns that revision.
async fn send_snapshot(
    store: &dyn Store,
    options: &WatchOptions,
    tx: &mpsc::Sender<StoreResult<WatchItem>>,
) -> Result<i64, SnapshotError> {
    let mut snapshot = store.snapshot(options.filter.clone()).await?;
    let revision = snapshot.revision();
    loop {
        let resources = snapshot.next_page(options.page_size.max(1)).await?;
        if resources.is_empty() {
            return Ok(revision);
        }
        for resource in resources {
            send(tx, WatchItem::Snapshot { revision, resource })
                .await
                .map_err(|Gone| SnapshotError::Gone)?;
        }
    }
}
