//! Start-up and shutdown: open the store, build the routes, serve until told to stop, drain,
//! close the store cleanly.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use stigmer_secrets::Keyring;
use stigmer_store::{Retention, Store};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::rules::RuleError;
use crate::auth::{Auth, KeyRequired};
use crate::cache_fill::refill_read_cache;
use crate::catalog::{Catalog, CatalogError};
use crate::config::{AuthMode, ServerConfig};
use crate::controller::Controller;
use crate::incoming::Incoming;
use crate::kinds::KINDS;
use crate::logging::RpcLogLayer;
use crate::master_key::load_keyring;
use crate::metrics::Metrics;
use crate::service::{MAX_MESSAGE_SIZE, ResourceRpc};
use crate::shutdown::Shutdown;

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "refusing to serve {0} without {1}: anyone who can reach it could read and change every resource; listen on a loopback address (127.0.0.1, [::1]), serve TLS with API keys (--tls-cert, --tls-key, --auth apikey), or pass --allow-insecure (STIGMER_ALLOW_INSECURE=true) on a trusted network"
    )]
    InsecureListen(SocketAddr, &'static str),
    #[error("{flag} {}: {why}", .path.display())]
    TlsFile {
        flag: &'static str,
        path: std::path::PathBuf,
        why: String,
    },
    #[error("the address of the listening socket: {0}")]
    ListenAddress(std::io::Error),
    #[error("cannot serve metrics on --metrics-listen {address}: {source}")]
    MetricsListen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "no master key: this database has no default key file; set STIGMER_MASTER_KEY or pass --master-key-file, the same on every server sharing the database"
    )]
    NoMasterKey,
    #[error(
        "--master-key-store keychain: this program offers no OS keychain; use --master-key-store file"
    )]
    NoKeychain,
    #[error("the API descriptors are inconsistent: {0}")]
    Catalog(#[from] CatalogError),
    #[error("the authorization rules in the API descriptors: {0}")]
    Rules(#[from] RuleError),
    #[error("server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("the health service's descriptors: {0}")]
    HealthDescriptors(#[from] prost_reflect::DescriptorError),
    #[error("serving gRPC: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("the database: {0}")]
    Store(#[from] stigmer_store::StoreError),
    #[error("a start-up task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("master key: {0}")]
    Secrets(#[from] stigmer_secrets::SecretError),
    #[error(
        "the master key is wrong: this database's secrets are sealed with key {recorded}, but the key loaded (from {origin}) is {loaded}; set STIGMER_MASTER_KEY or restore the key file that holds key {recorded}"
    )]
    WrongKey {
        recorded: String,
        loaded: String,
        origin: &'static str,
    },
}

/// The controller over `store`, with the catalog and the authorization rules read from the
/// descriptors.
pub(crate) fn new_app(
    config: &ServerConfig,
    store: Arc<dyn Store>,
    keyring: Keyring,
) -> Result<Controller, ServerError> {
    let catalog = Catalog::build(&stigmer_api::DESCRIPTOR_POOL, KINDS)?;
    let auth = Auth::new(
        config.auth,
        Arc::clone(&store),
        &stigmer_api::DESCRIPTOR_POOL,
        catalog.services(),
    )?;
    Ok(Controller::new(store, catalog, keyring, auth))
}

/// Everything a server needs besides its transport: the open store and its background
/// tasks, the routes, and health.
struct Parts {
    store: Arc<dyn Store>,
    routes: Routes,
    /// What the per-call layer counts, with metrics.
    rpc_metrics: Option<Arc<crate::metrics::RpcMetrics>>,
    reporter: HealthReporter,
    service_names: Vec<String>,
    background: Background,
    shutdown: Shutdown,
}

impl Parts {
    /// Builds the parts over `store`, serving metrics on `metrics` when given; on failure,
    /// closes the store (letting another process open the database) before saying why.
    async fn start(
        config: &ServerConfig,
        store: Arc<dyn Store>,
        metrics: Option<TcpListener>,
    ) -> Result<Self, ServerError> {
        let keyring = match load_keyring(config, store.as_ref()).await {
            Ok(keyring) => keyring,
            Err(err) => {
                if let Err(close) = store.close().await {
                    tracing::warn!(error = %close, "closing the database after a failed start");
                }
                return Err(err);
            }
        };
        let mut app = new_app(config, Arc::clone(&store), keyring)?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        let mut rpc_metrics = None;
        if let Some(listener) = metrics {
            let metrics = Arc::new(Metrics::new(&app.catalog, Arc::clone(&store)));
            metrics.observe_commits();
            app.watch_metrics = Some(Arc::clone(&metrics.watch));
            rpc_metrics = Some(Arc::clone(&metrics.rpc));
            if let Ok(address) = listener.local_addr() {
                // Not `address`, which names where gRPC is served (scripts look for it).
                tracing::info!(metrics_address = %address, "serving metrics at /metrics");
                if !is_loopback(address) {
                    tracing::warn!(metrics_address = %address, "serving /metrics beyond loopback: it has no authentication, so whoever reaches the port reads it");
                }
            }
            tasks.push(tokio::spawn(crate::metrics::follow_revisions(
                Arc::clone(&store),
                Arc::clone(&metrics.watch),
                stopped.clone(),
            )));
            tasks.push(tokio::spawn(crate::metrics::serve(
                listener,
                metrics,
                stopped.clone(),
            )));
        }
        let app = Arc::new(app);
        let service_names = app.catalog.services().to_vec();
        let shutdown = app.shutdown.clone();
        tasks.push(tokio::spawn(compact_periodically(
            Arc::clone(&store),
            config.clone(),
            stopped.clone(),
        )));
        tasks.push(tokio::spawn(refill_read_cache(Arc::clone(&app), stopped)));
        let background = Background { stop, tasks };
        let (reporter, health) = tonic_health::server::health_reporter();
        let routes = routes(app, health, config.console)?;
        set_health(&reporter, &service_names, ServingStatus::Serving).await;
        Ok(Self {
            store,
            routes,
            rpc_metrics,
            reporter,
            service_names,
            background,
            shutdown,
        })
    }

    async fn close(store: Arc<dyn Store>, background: Background) -> Result<(), ServerError> {
        let _ = background.stop.send(true);
        for task in background.tasks {
            task.await?;
        }
        store.close().await?;
        tracing::info!("database closed");
        Ok(())
    }
}

/// Work the server does on its own (compaction, refilling the read cache, serving metrics),
/// stopped before the store closes.
struct Background {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Seconds between HTTP/2 pings on an open connection, and seconds the peer has to answer one
/// before the connection is closed: a peer that vanished without a FIN (or stopped reading)
/// frees its descriptor within a minute and a half.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves `store` on `listener` until `shutdown` resolves, then drains in-flight calls (for at
/// most the configured grace period) and closes the store. Refuses a listener on an address
/// other than loopback unless `config.allow_insecure`. Serves metrics on
/// `config.metrics_listen` when set ([`run_with_metrics`] takes a listener already bound).
pub async fn run(
    config: &ServerConfig,
    store: Arc<dyn Store>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let metrics = match bind_metrics(config).await {
        Ok(metrics) => metrics,
        Err(refused) => {
            if let Err(close) = store.close().await {
                tracing::warn!(error = %close, "closing the database after a refused start");
            }
            return Err(refused);
        }
    };
    run_with_metrics(config, store, listener, metrics, shutdown).await
}

/// Binds `config.metrics_listen`, if set; an address in use (or not this machine's) is an
/// error naming the flag. The binary binds it before it opens the database, so that such a
/// start changes nothing.
pub async fn bind_metrics(config: &ServerConfig) -> Result<Option<TcpListener>, ServerError> {
    match config.metrics_listen {
        Some(address) => crate::metrics::bind(address).await.map(Some),
        None => Ok(None),
    }
}

/// [`run`], serving Prometheus metrics at /metrics on `metrics` when given (whatever
/// `config.metrics_listen` says), until the store closes.
pub async fn run_with_metrics(
    config: &ServerConfig,
    store: Arc<dyn Store>,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let address = listener.local_addr().map_err(ServerError::ListenAddress)?;
    let tls = match check_listen(config, address).and_then(|()| crate::tls::server_tls(config)) {
        Ok(tls) => tls,
        Err(refused) => {
            if let Err(close) = store.close().await {
                tracing::warn!(error = %close, "closing the database after a refused start");
            }
            return Err(refused);
        }
    };
    let Parts {
        store,
        routes,
        rpc_metrics,
        reporter,
        service_names,
        background,
        shutdown: stopping,
    } = Parts::start(config, store, metrics).await?;
    let draining = Arc::new(Notify::new());
    let signal = {
        let draining = Arc::clone(&draining);
        async move {
            shutdown.await;
            stopping.begin();
            tracing::info!(
                "shutting down: draining calls in flight, ending watches, refusing new calls"
            );
            set_health(&reporter, &service_names, ServingStatus::NotServing).await;
            draining.notify_one();
            // Connections stay open meanwhile, so that a call arriving now gets UNAVAILABLE
            // from us, not a reset or a GOAWAY its client may report as something else.
            stopping.drained().await;
        }
    };
    tracing::info!(%address, tls = tls.is_some(), "serving gRPC");
    if let Some(missing) = missing_protection(config).filter(|_| !is_loopback(address)) {
        tracing::warn!(%address, missing, "serving on an address other than loopback without TLS and API keys, as --allow-insecure says");
    }
    let incoming = Incoming::new(listener, Duration::from_millis(config.handshake_timeout_ms));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    // HTTP/1.1 too, for JSON calls from curl and browsers (`connect.rs`); gRPC stays HTTP/2.
    let server = builder
        .accept_http1(true)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .layer(RpcLogLayer::new(rpc_metrics))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, signal);
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    tokio::select! {
        served = server => served?,
        () = async { draining.notified().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_secs = grace.as_secs(), "calls still running after the grace period; closing anyway");
        }
    }
    Parts::close(store, background).await
}

/// The tower service of an in-process server: every route behind the same logging layer as
/// over TCP, called directly, with no socket and no port.
pub type InProcessService = crate::logging::RpcLog<axum::Router>;

/// A server in this process, reached by calling its service (see [`InProcessService`]).
pub struct InProcessServer {
    service: InProcessService,
    store: Arc<dyn Store>,
    background: Background,
    shutdown: Shutdown,
}

impl InProcessServer {
    /// Builds every route over `store`; `config.listen` is not used.
    pub async fn start(config: &ServerConfig, store: Arc<dyn Store>) -> Result<Self, ServerError> {
        let parts = Parts::start(config, store, None).await?;
        let router = parts.routes.prepare().into_axum_router();
        Ok(Self {
            service: tower_layer::Layer::layer(&RpcLogLayer::default(), router),
            store: parts.store,
            background: parts.background,
            shutdown: parts.shutdown,
        })
    }

    pub fn service(&self) -> InProcessService {
        self.service.clone()
    }

    /// Ends open watches, stops background work and closes the database cleanly.
    pub async fn close(self) -> Result<(), ServerError> {
        self.shutdown.begin();
        Parts::close(self.store, self.background).await
    }
}

/// Trims the change log to the configured retention every `compact_every_secs`, in small
/// steps queued between writes, until told to stop.
async fn compact_periodically(
    store: Arc<dyn Store>,
    config: ServerConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    if config.compact_every_secs == 0 {
        return;
    }
    let retention = Retention {
        revisions: config.retain_revisions,
        age: Duration::from_secs(config.retain_secs),
    };
    let mut every = tokio::time::interval(Duration::from_secs(config.compact_every_secs));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = every.tick() => {}
        }
        match store.compact(retention).await {
            Ok(done) if done.removed > 0 => tracing::info!(
                removed = done.removed,
                compacted = done.compacted,
                "compacted the change log"
            ),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "compacting the change log failed"),
        }
    }
}

/// Refuses to serve beyond this machine without TLS and API keys unless told to. The check
/// lives here rather than in the binary so that every server started through the library (the
/// CLI's daemon, tests, embedders) obeys it, and it looks at the socket actually bound rather
/// than at the flag. The binary calls it before it opens the database, so that a refused start
/// changes nothing; [`run`] calls it again for every other caller.
pub fn check_listen(config: &ServerConfig, address: SocketAddr) -> Result<(), ServerError> {
    if is_loopback(address) || config.allow_insecure {
        return Ok(());
    }
    match missing_protection(config) {
        None => Ok(()),
        Some(missing) => Err(ServerError::InsecureListen(address, missing)),
    }
}

/// What a server beyond loopback lacks, if anything: both TLS and API keys are needed.
fn missing_protection(config: &ServerConfig) -> Option<&'static str> {
    let tls = config.tls_cert.is_some() && config.tls_key.is_some();
    let keys = config.auth == AuthMode::ApiKey;
    match (tls, keys) {
        (true, true) => None,
        (true, false) => Some("API keys (--auth apikey)"),
        (false, true) => Some("TLS (--tls-cert, --tls-key)"),
        (false, false) => Some("TLS and API keys"),
    }
}

/// 127.0.0.0/8 and ::1, including IPv4 loopback written as an IPv4-mapped IPv6 address.
fn is_loopback(address: SocketAddr) -> bool {
    address.ip().to_canonical().is_loopback()
}

async fn set_health(reporter: &HealthReporter, services: &[String], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for service in services {
        reporter.set_service_status(service, status).await;
    }
}

/// Every gRPC route: the resource controllers, health, and reflection (v1 and v1alpha, since
/// grpcurl 1.8 still asks v1alpha); and the web console when `console` says so.
fn routes(
    app: Arc<Controller>,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    console: bool,
) -> Result<Routes, ServerError> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(stigmer_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let services = app.catalog.services().to_vec();
    let console = match console {
        true => crate::console::router(&app.catalog),
        false => crate::console::turned_off(),
    };
    let reflection_v1 = KeyRequired::new(reflection().build_v1()?, Arc::clone(&app));
    let reflection_v1alpha = KeyRequired::new(reflection().build_v1alpha()?, Arc::clone(&app));
    let rpc = ResourceRpc::new(app);
    let health = crate::connect::JsonCalls::new(
        health.max_decoding_message_size(MAX_MESSAGE_SIZE),
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    )?;
    // Routes::default answers unknown paths as gRPC's UNIMPLEMENTED does.
    let mut router = Routes::default()
        .into_axum_router()
        .route_service("/grpc.health.v1.Health/{*method}", health)
        .route_service(
            "/grpc.reflection.v1.ServerReflection/{*method}",
            reflection_v1,
        )
        .route_service(
            "/grpc.reflection.v1alpha.ServerReflection/{*method}",
            reflection_v1alpha,
        );
    for service in services {
        router = router.route_service(&format!("/{service}/{{*method}}"), rpc.clone());
    }
    Ok(Routes::from(router.merge(console)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_served_without_allow_insecure() {
        let mut config = ServerConfig::new(([127, 0, 0, 1], 0).into());
        for served in [
            "127.0.0.1:1",
            "127.9.9.9:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            let address = served.parse().expect("address");
            assert!(check_listen(&config, address).is_ok(), "{served}");
        }
        for refused in [
            "0.0.0.0:1",
            "[::]:1",
            "192.168.1.10:1",
            "[::ffff:10.0.0.1]:1",
        ] {
            let address = refused.parse().expect("address");
            let err = check_listen(&config, address).expect_err(refused);
            assert!(err.to_string().contains("--allow-insecure"), "{err}");
        }
        let anywhere = "0.0.0.0:1".parse().expect("address");
        config.tls_cert = Some("cert.pem".into());
        config.tls_key = Some("key.pem".into());
        let err = check_listen(&config, anywhere).expect_err("TLS alone");
        assert!(err.to_string().contains("--auth apikey"), "{err}");
        config.auth = AuthMode::ApiKey;
        assert!(check_listen(&config, anywhere).is_ok(), "TLS and API keys");
        config.tls_cert = None;
        let err = check_listen(&config, anywhere).expect_err("API keys alone");
        assert!(err.to_string().contains("--tls-cert"), "{err}");
        config.allow_insecure = true;
        assert!(check_listen(&config, anywhere).is_ok());
    }
}
