//! The real server, started in this process through `stigmer_grpc::run` on 127.0.0.1:0, and the
//! facts about it the cases report (start to SERVING, RSS).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use stigmer_grpc::{ServerConfig, ServerError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Longest wait for a starting server to answer SERVING.
const START_TIMEOUT: Duration = Duration::from_secs(120);

pub struct BenchServer {
    pub addr: SocketAddr,
    /// One connection; every worker clones it.
    pub channel: Channel,
    /// From calling `stigmer_grpc::run` to the first health check answered SERVING.
    pub start_to_serving: Duration,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl BenchServer {
    /// Starts a server on the database at `db` (created when missing) with every default
    /// setting, so commits are fsynced (synchronous FULL).
    pub async fn start(db: &Path) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut config = ServerConfig::new(addr, db);
        config.shutdown_grace_secs = 5;
        let (stop, stopped) = oneshot::channel::<()>();
        let started = Instant::now();
        let task = tokio::spawn(async move {
            stigmer_grpc::run(&config, listener, async {
                let _ = stopped.await;
            })
            .await
        });
        let channel = connect(addr).await?;
        wait_serving(&channel, started).await?;
        Ok(Self {
            addr,
            channel,
            start_to_serving: started.elapsed(),
            stop: Some(stop),
            task,
        })
    }

    /// Stops the server the way SIGTERM does and waits until its database is closed.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await??;
        Ok(())
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A new HTTP/2 connection to `addr`.
pub async fn connect(addr: SocketAddr) -> Result<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// Asks grpc.health.v1 until it answers SERVING. The listener is bound before the server
/// starts, so the first call simply waits for the server to accept it.
async fn wait_serving(channel: &Channel, started: Instant) -> Result<()> {
    let mut health = HealthClient::new(channel.clone());
    loop {
        let answer = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        if let Ok(response) = answer
            && response.get_ref().status == ServingStatus::Serving as i32
        {
            return Ok(());
        }
        if started.elapsed() > START_TIMEOUT {
            bail!("the server did not answer SERVING within {START_TIMEOUT:?}");
        }
        tokio::task::yield_now().await;
    }
}

/// This process's resident set size and its peak, in KiB, from /proc/self/status.
pub fn rss_kib() -> Result<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .with_context(|| format!("no {name} in /proc/self/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// "41.2 MiB".
pub fn fmt_kib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
