//! The change feed behind `subscribe()`: one task per store publishes every committed change
//! of the whole database, whichever replica made it, once and in revision order.
//!
//! The change log is the truth. The task reads `changes WHERE revision > last ORDER BY
//! revision` when woken: by this store's writer (its own commits, handed over in memory when
//! they follow on directly), by a LISTEN connection (every writer NOTIFYs in its
//! transaction), or by a timer that bounds how late a lost notification can make it. Since
//! revisions become visible in order and none is ever skipped (ADR 0023), reading "after the
//! last one published" never misses one that commits later.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::Pool;
use stigmer_store::{Change, StoreResult};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::errors::{chain, pool_error, store_error};
use crate::queries::{CHANGE_COLUMNS, change_from_row};

/// The channel writers notify and feeds listen on.
pub(crate) const CHANNEL: &str = "stigmer_changes";

/// Rows read per step when catching up from the log.
const PAGE: i64 = 1000;

/// The broadcast every subscriber reads; swapped for a new one (ending every subscription)
/// when the feed finds changes it can no longer read.
type Subscribers = Arc<Mutex<Option<broadcast::Sender<Arc<Change>>>>>;

/// What the writer needs from the feed: a way to hand over its committed changes, and to
/// learn when they are published.
#[derive(Clone)]
pub(crate) struct FeedHandle {
    local: mpsc::UnboundedSender<Vec<Arc<Change>>>,
    published: watch::Receiver<i64>,
    /// The last revision the writer handed over.
    handed_over: Arc<AtomicI64>,
}

impl FeedHandle {
    /// Hands over the changes of a committed batch, in revision order.
    pub(crate) fn publish_local(&self, changes: Vec<Arc<Change>>) {
        if let Some(last) = changes.last() {
            self.handed_over.fetch_max(last.revision, Ordering::AcqRel);
        }
        let _ = self.local.send(changes);
    }

    pub(crate) fn last_handed_over(&self) -> i64 {
        self.handed_over.load(Ordering::Acquire)
    }

    /// Waits until everything up to `revision` is published; false after `timeout`.
    pub(crate) async fn wait_published(&mut self, revision: i64, timeout: Duration) -> bool {
        matches!(
            tokio::time::timeout(timeout, self.published.wait_for(|last| *last >= revision)).await,
            Ok(Ok(_))
        )
    }
}

pub(crate) struct Feed {
    handle: FeedHandle,
    subscribers: Subscribers,
    buffer: usize,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Everything the feed needs to run.
pub(crate) struct FeedConfig {
    /// A pool of its own, so that busy readers never hold up live watchers.
    pub(crate) pool: Pool,
    /// For the LISTEN connection, which lives outside any pool.
    pub(crate) pg: tokio_postgres::Config,
    pub(crate) connect_timeout: Duration,
    /// The last revision committed when the store opened: subscribers hear of later ones.
    pub(crate) start: i64,
    pub(crate) buffer: usize,
    pub(crate) poll_interval: Duration,
    pub(crate) listen: bool,
}

impl Feed {
    pub(crate) fn start(config: FeedConfig) -> Self {
        let (local_tx, local_rx) = mpsc::unbounded_channel();
        let (published_tx, published_rx) = watch::channel(config.start);
        let (stop, stop_rx) = watch::channel(false);
        let (wake_tx, wake_rx) = mpsc::channel(1);
        let buffer = config.buffer.max(1);
        let (sender, _) = broadcast::channel(buffer);
        let subscribers: Subscribers = Arc::new(Mutex::new(Some(sender)));
        let mut tasks = Vec::new();
        if config.listen {
            tasks.push(tokio::spawn(listen(
                config.pg,
                config.connect_timeout,
                wake_tx,
                stop_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(
            FeedTask {
                pool: config.pool,
                last: config.start,
                subscribers: Arc::clone(&subscribers),
                buffer,
                published: published_tx,
                failing: false,
            }
            .run(local_rx, wake_rx, stop_rx, config.poll_interval),
        ));
        Self {
            handle: FeedHandle {
                local: local_tx,
                published: published_rx,
                handed_over: Arc::new(AtomicI64::new(config.start)),
            },
            subscribers,
            buffer,
            stop,
            tasks: Mutex::new(tasks),
        }
    }

    pub(crate) fn handle(&self) -> FeedHandle {
        self.handle.clone()
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        let subscribers = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match subscribers.as_ref() {
            Some(sender) => sender.subscribe(),
            // Closed: a receiver whose sender is already gone says so at once.
            None => broadcast::channel(self.buffer).1,
        }
    }

    /// Stops the tasks and ends every subscription (receivers see `Closed` once they have
    /// read what was published).
    pub(crate) async fn stop(&self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            let _ = task.await;
        }
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

struct FeedTask {
    pool: Pool,
    /// The last revision published.
    last: i64,
    subscribers: Subscribers,
    buffer: usize,
    published: watch::Sender<i64>,
    /// Whether the last read of the log failed, so that an outage is logged once, not at
    /// every poll.
    failing: bool,
}

impl FeedTask {
    async fn run(
        mut self,
        mut local: mpsc::UnboundedReceiver<Vec<Arc<Change>>>,
        mut wake: mpsc::Receiver<()>,
        mut stop: watch::Receiver<bool>,
        poll_interval: Duration,
    ) {
        let mut poll = tokio::time::interval(poll_interval.max(Duration::from_millis(10)));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut local_open = true;
        // Closed when the store does not LISTEN.
        let mut wake_open = true;
        loop {
            tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                batch = local.recv(), if local_open => match batch {
                    Some(mut changes) => {
                        while let Ok(more) = local.try_recv() {
                            changes.extend(more);
                        }
                        self.local(changes).await;
                    }
                    None => local_open = false,
                },
                woken = wake.recv(), if wake_open => match woken {
                    Some(()) => self.catch_up().await,
                    None => wake_open = false,
                },
                _ = poll.tick() => self.catch_up().await,
            }
        }
    }

    /// This store's own commits: published from memory when they follow on from the last
    /// change published, read from the log (with whatever other replicas committed first)
    /// otherwise.
    async fn local(&mut self, changes: Vec<Arc<Change>>) {
        let Some(first) = changes.first().map(|change| change.revision) else {
            return;
        };
        if first <= self.last + 1 {
            let fresh: Vec<_> = changes
                .into_iter()
                .filter(|change| change.revision > self.last)
                .collect();
            self.publish(fresh);
        } else {
            self.catch_up().await;
        }
    }

    async fn catch_up(&mut self) {
        match self.read_log().await {
            Ok(()) => {
                if self.failing {
                    tracing::info!(revision = self.last, "the change feed reads the log again");
                    self.failing = false;
                }
            }
            Err(err) => {
                if !self.failing {
                    tracing::warn!(
                        error = %err,
                        revision = self.last,
                        "the change feed cannot read the log; watchers hear of new changes once it can"
                    );
                    self.failing = true;
                }
            }
        }
    }

    async fn read_log(&mut self) -> StoreResult<()> {
        let client = self.pool.get().await.map_err(pool_error)?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {CHANGE_COLUMNS} FROM changes WHERE revision > $1 ORDER BY revision LIMIT $2"
            ))
            .await
            .map_err(store_error)?;
        loop {
            let rows = client
                .query(&stmt, &[&self.last, &PAGE])
                .await
                .map_err(store_error)?;
            let changes = rows
                .iter()
                .map(|row| change_from_row(row).map(Arc::new))
                .collect::<StoreResult<Vec<_>>>()?;
            let full = changes.len() as i64 == PAGE;
            if let Some(first) = changes.first()
                && first.revision != self.last + 1
            {
                self.end_subscriptions(first.revision);
            }
            self.publish(changes);
            if !full {
                return Ok(());
            }
        }
    }

    fn publish(&mut self, changes: Vec<Arc<Change>>) {
        let Some(last) = changes.last().map(|change| change.revision) else {
            return;
        };
        {
            let subscribers = self
                .subscribers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(sender) = subscribers.as_ref() {
                for change in changes {
                    // No receiver is not an error: nobody watches right now.
                    let _ = sender.send(change);
                }
            }
        }
        self.last = last;
        self.published.send_replace(last);
    }

    /// The log no longer holds the changes after the last one published (compaction removed
    /// them while this feed could not read, or someone deleted them by hand): live watchers
    /// would miss them, so every subscription ends and watchers start again from the log,
    /// which tells them to list again if they must.
    fn end_subscriptions(&mut self, next: i64) {
        tracing::warn!(
            published = self.last,
            next,
            "changes after the last one published are gone from the log; ending every watch"
        );
        let mut subscribers = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if subscribers.is_some() {
            *subscribers = Some(broadcast::channel(self.buffer).0);
        }
    }
}

/// Keeps a LISTEN connection open, waking the feed at each notification and after each
/// (re)connection, which may have missed some.
async fn listen(
    pg: tokio_postgres::Config,
    connect_timeout: Duration,
    wake: mpsc::Sender<()>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failing = false;
    loop {
        let ended = tokio::select! {
            () = stopped(&mut stop) => Stopped::Yes,
            ended = listen_once(&pg, connect_timeout, &wake, &mut failing) => ended,
        };
        if matches!(ended, Stopped::Yes) {
            return;
        }
        // A stop (or a store dropped without closing) ends the pause early.
        if tokio::time::timeout(Duration::from_secs(1), stopped(&mut stop))
            .await
            .is_ok()
        {
            return;
        }
    }
}

/// Resolves once the store stops, or once the store is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard wait_for returns is not Send: it must not outlive this function.
    let _ = stop.wait_for(|stop| *stop).await.map(|_| ());
}

enum Stopped {
    Yes,
    No,
}

/// One LISTEN connection, until it ends. `failing` says whether the last attempt failed,
/// so that an outage is logged once.
async fn listen_once(
    pg: &tokio_postgres::Config,
    connect_timeout: Duration,
    wake: &mpsc::Sender<()>,
    failing: &mut bool,
) -> Stopped {
    let connected = match tokio::time::timeout(connect_timeout, pg.connect(NoTls)).await {
        Err(_) => Err("no answer in time".to_string()),
        Ok(result) => result.map_err(|err| chain(&err)),
    };
    let (client, mut connection) = match connected {
        Ok(pair) => pair,
        Err(err) => {
            if !*failing {
                tracing::warn!(
                    error = %err,
                    "cannot LISTEN for other replicas' changes; polling the log meanwhile"
                );
                *failing = true;
            }
            return Stopped::No;
        }
    };
    let notify = wake.clone();
    let mut driver = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    // A full channel already holds a wake-up the feed has not taken yet.
                    let _ = notify.try_send(());
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::debug!(error = %chain(&err), "the LISTEN connection failed");
                    return;
                }
            }
        }
    });
    if let Err(err) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
        driver.abort();
        if !*failing {
            tracing::warn!(error = %chain(&err), "cannot LISTEN for other replicas' changes");
            *failing = true;
        }
        return Stopped::No;
    }
    if *failing {
        tracing::info!("listening for other replicas' changes again");
        *failing = false;
    }
    // Changes committed while nobody listened are in the log.
    let _ = wake.try_send(());
    // Dropping this future (the store stops) drops the client; the driver then ends.
    let _ = (&mut driver).await;
    drop(client);
    Stopped::No
}
