//! Prometheus metrics, served at /metrics on their own listener (`--metrics-listen`, off by
//! default) in the Prometheus text format. What a call costs is kept small: the per-call
//! entries are made at start-up (`rpc.rs`); the store's figures (revision, resources per kind,
//! WAL size) are read when scraped, never per call. ADR 0028 says why it is built this way.

mod rpc;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use stigmer_store::{CommitObserver, CommitStats, Store, StoreGauges};
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;

use crate::catalog::Catalog;
pub(crate) use rpc::{CallMetrics, RpcMetrics};

/// Seconds a commit takes: an fsync on a disk, from ~50 µs (NVMe with a write cache) up.
const COMMIT_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128,
    0.256, 1.0,
];
/// Writes per commit: group commit holds up to 256 by default.
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
/// Revisions a watch event is behind.
const LAG_BUCKETS: [f64; 14] = [
    0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

/// How long open connections to /metrics may keep the server from closing once it stops.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Everything measured, and what reads the store's figures at each scrape.
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) rpc: Arc<RpcMetrics>,
    pub(crate) watch: Arc<WatchMetrics>,
    commits: Arc<CommitMetrics>,
    store: Arc<dyn Store>,
    gauges: Arc<StoreCollector>,
}

impl Metrics {
    pub(crate) fn new(catalog: &Catalog, store: Arc<dyn Store>) -> Self {
        let mut registry = Registry::default();
        let streams = Gauge::default();
        registry.register(
            "stigmer_watch_streams",
            "Open watch streams: ResourceService/watch and every subscribe call",
            streams.clone(),
        );
        let rpc = Arc::new(RpcMetrics::new(catalog, &streams));
        registry.register_collector(Box::new(rpc::RpcCollector(Arc::clone(&rpc))));
        let watch = Arc::new(WatchMetrics {
            head: AtomicI64::new(0),
            lag: Histogram::new(LAG_BUCKETS),
        });
        registry.register(
            "stigmer_watch_lag_revisions",
            "Revisions committed after a ResourceService/watch event's own when the event is \
             handed to its stream: 0 for a watcher that keeps up, growing while one falls behind \
             or replays the log",
            watch.lag.clone(),
        );
        let commits = Arc::new(CommitMetrics {
            writes: Histogram::new(BATCH_BUCKETS),
            transaction: Histogram::new(COMMIT_BUCKETS),
            commit: Histogram::new(COMMIT_BUCKETS),
        });
        registry.register(
            "stigmer_store_writes_per_commit",
            "Writes committed together in one transaction (group commit)",
            commits.writes.clone(),
        );
        registry.register(
            "stigmer_store_commit_seconds",
            "Seconds from the start of a batch's transaction to the end of its COMMIT",
            commits.transaction.clone(),
        );
        registry.register(
            "stigmer_store_fsync_seconds",
            "Seconds of a batch's COMMIT statement alone, which waits for the log's fsync: \
             no separate fsync timer exists, so this approximates fsync latency (SQLite's WAL \
             with synchronous=full, where the COMMIT is mostly the fsync; with \
             synchronous=normal it holds no fsync; PostgreSQL: the WAL flush)",
            commits.commit.clone(),
        );
        let kinds = catalog
            .kinds()
            .iter()
            .map(|kind| kind.name.clone())
            .collect();
        let gauges = Arc::new(StoreCollector {
            kinds,
            last: Mutex::new(StoreGauges::default()),
        });
        registry.register_collector(Box::new(Arc::clone(&gauges)));
        Self {
            registry,
            rpc,
            watch,
            commits,
            store,
            gauges,
        }
    }

    /// The store's batches, from now on, go to the commit histograms.
    pub(crate) fn observe_commits(&self) {
        self.store
            .observe_commits(Arc::clone(&self.commits) as Arc<dyn CommitObserver>);
    }

    /// Every metric in the Prometheus text format, the store's figures read now.
    async fn render(&self) -> Result<String, stigmer_store::StoreError> {
        let gauges = self.store.gauges().await?;
        *self.gauges.lock() = gauges;
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry).map_err(
            |_| stigmer_store::StoreError::Internal("encoding the metrics failed".into()),
        )?;
        Ok(text)
    }
}

/// Open watch streams are counted per call (`rpc.rs`); this is their lag.
pub(crate) struct WatchMetrics {
    /// The newest revision the server has heard of (see [`follow_revisions`]).
    head: AtomicI64,
    lag: Histogram,
}

impl WatchMetrics {
    /// A change of `revision` is being handed to a watch stream now.
    pub(crate) fn delivered(&self, revision: i64) {
        let behind = (self.head.load(Ordering::Relaxed) - revision).max(0);
        self.lag.observe(behind as f64);
    }
}

/// Keeps [`WatchMetrics::delivered`]'s idea of the newest revision current, from the store's
/// live changes (every replica's, on PostgreSQL), until told to stop or the store closes.
pub(crate) async fn follow_revisions(
    store: Arc<dyn Store>,
    watch: Arc<WatchMetrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut live = store.subscribe();
    if let Ok(bounds) = store.log_bounds().await {
        watch.head.fetch_max(bounds.current, Ordering::Relaxed);
    }
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            received = live.recv() => match received {
                Ok(change) => {
                    watch.head.fetch_max(change.revision, Ordering::Relaxed);
                }
                // Only the newest matters, and the next one received is newer.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
        }
    }
}

struct CommitMetrics {
    writes: Histogram,
    transaction: Histogram,
    commit: Histogram,
}

impl CommitObserver for CommitMetrics {
    fn committed(&self, commit: &CommitStats) {
        self.writes.observe(commit.writes as f64);
        self.transaction.observe(commit.transaction.as_secs_f64());
        self.commit.observe(commit.commit.as_secs_f64());
    }
}

/// The store's figures as last read, written at each scrape; every served kind appears,
/// with 0 when it has no resource.
#[derive(Debug)]
struct StoreCollector {
    kinds: Vec<String>,
    last: Mutex<StoreGauges>,
}

impl StoreCollector {
    fn lock(&self) -> std::sync::MutexGuard<'_, StoreGauges> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let last = self.lock().clone();
        ConstGauge::new(last.revision).encode(encoder.encode_descriptor(
            "stigmer_store_revision",
            "The current revision: the last one committed",
            None,
            MetricType::Gauge,
        )?)?;
        if let Some(bytes) = last.wal_bytes {
            ConstGauge::new(bytes as i64).encode(encoder.encode_descriptor(
                "stigmer_store_wal_bytes",
                "Bytes in SQLite's write-ahead log file (<db>-wal), emptied by checkpoints",
                None,
                MetricType::Gauge,
            )?)?;
        }
        let mut resources = encoder.encode_descriptor(
            "stigmer_resources",
            "Resources of each kind, in every organization",
            None,
            MetricType::Gauge,
        )?;
        let count_of = |kind: &str| {
            last.counts
                .iter()
                .find(|(counted, _)| counted == kind)
                .map_or(0, |(_, count)| *count)
        };
        for kind in &self.kinds {
            let labels = [("kind", kind.as_str())];
            ConstGauge::new(count_of(kind)).encode(resources.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Serves /metrics on `listener` until `stop` holds true, then gives open connections
/// [`CLOSE_GRACE`] to finish.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let router = axum::Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(metrics);
    let stopping = {
        let mut stop = stop.clone();
        async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }
    };
    let server = axum::serve(listener, router).with_graceful_shutdown(stopping);
    tokio::select! {
        served = server => {
            if let Err(err) = served {
                tracing::warn!(error = %err, "serving /metrics failed");
            }
        }
        () = async {
            let _ = stop.wait_for(|stop| *stop).await;
            tokio::time::sleep(CLOSE_GRACE).await;
        } => {}
    }
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.render().await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "reading the database's figures for /metrics failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database's figures could not be read; see the server log\n",
            )
                .into_response()
        }
    }
}

/// Binds `--metrics-listen`; the error names the flag.
pub(crate) async fn bind(address: SocketAddr) -> Result<TcpListener, crate::ServerError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| crate::ServerError::MetricsListen { address, source })
}
