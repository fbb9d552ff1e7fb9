//! Case 7, the etcd peer: if an `etcd` binary is on PATH, a single-member etcd on loopback with a
//! temporary data dir, driven through its HTTP/JSON gateway (`/v3/kv/put`, `/v3/kv/range`) with
//! a minimal HTTP/1.1 keep-alive client, one connection per in-flight worker. Without etcd's
//! protos its gRPC API is out of reach; the gateway adds JSON and HTTP/1.1 on etcd's side, so
//! these figures flatter the server slightly less than a gRPC comparison would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use crate::Settings;
use crate::drive::drive;
use crate::report::Report;

const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(settings: &Settings, report: &mut Report) -> Result<()> {
    report.section("7. etcd peer (etcd on loopback, HTTP/JSON gateway)");
    let Some(binary) = find_on_path("etcd") else {
        report.note("etcd: skipped (no etcd binary on PATH)");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let (mut child, addr) = start(&binary, dir.path()).await?;
    let result = measure(settings, report, addr).await;
    child.kill().await?;
    result
}

async fn measure(settings: &Settings, report: &mut Report, addr: SocketAddr) -> Result<()> {
    for &in_flight in &settings.concurrency {
        let put = run_op(settings, addr, in_flight, Op::Put).await?;
        report.row("etcd put (durable)", in_flight, &put, "");
        let range = run_op(settings, addr, in_flight, Op::Range).await?;
        report.row("etcd range (1 key)", in_flight, &range, "");
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Put,
    Range,
}

/// `op` with `in_flight` workers, each on a keep-alive connection of its own.
async fn run_op(
    settings: &Settings,
    addr: SocketAddr,
    in_flight: usize,
    op: Op,
) -> Result<crate::stats::Summary> {
    let mut connections = Vec::with_capacity(in_flight);
    for worker in 0..in_flight {
        let mut gateway = Gateway::connect(addr).await?;
        gateway.put(&format!("bench/{worker}/seed")).await?;
        connections.push(Arc::new(Mutex::new(gateway)));
    }
    drive(in_flight, settings.duration, 1, |worker| {
        let connection = Arc::clone(&connections[worker]);
        move |sequence| {
            let connection = Arc::clone(&connection);
            async move {
                let mut gateway = connection.lock().await;
                match op {
                    Op::Put => gateway.put(&format!("bench/{worker}/{sequence}")).await,
                    Op::Range => gateway.range(&format!("bench/{worker}/seed")).await,
                }
            }
        }
    })
    .await
}

/// The first executable file named `name` in a directory of PATH.
fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// A free loopback port (bound, then released for etcd to take).
async fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port())
}

/// Starts a one-member etcd in `dir` and waits until its gateway answers.
async fn start(binary: &Path, dir: &Path) -> Result<(Child, SocketAddr)> {
    let client = SocketAddr::from(([127, 0, 0, 1], free_port().await?));
    let peer = format!("http://127.0.0.1:{}", free_port().await?);
    let child = Command::new(binary)
        .arg("--data-dir")
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &format!("http://{client}")])
        .args(["--advertise-client-urls", &format!("http://{client}")])
        .args(["--listen-peer-urls", &peer])
        .args(["--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("default={peer}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let started = Instant::now();
    loop {
        if let Ok(mut gateway) = Gateway::connect(client).await
            && gateway.range("bench/ready").await.is_ok()
        {
            return Ok((child, client));
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!("etcd did not answer within {READY_TIMEOUT:?}");
        }
        tokio::task::yield_now().await;
    }
}

/// One HTTP/1.1 keep-alive connection to etcd's JSON gateway.
struct Gateway {
    stream: BufReader<TcpStream>,
}

impl Gateway {
    async fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
        })
    }

    /// Puts a 100-byte value at `key`.
    async fn put(&mut self, key: &str) -> Result<()> {
        let body = serde_json::json!({
            "key": STANDARD.encode(key),
            "value": STANDARD.encode([b'x'; 100]),
        });
        self.post("/v3/kv/put", &body.to_string()).await
    }

    /// Reads `key` (linearizable, etcd's default).
    async fn range(&mut self, key: &str) -> Result<()> {
        let body = serde_json::json!({ "key": STANDARD.encode(key) });
        self.post("/v3/kv/range", &body.to_string()).await
    }

    async fn post(&mut self, path: &str, body: &str) -> Result<()> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        self.read_response().await
    }

    /// Reads one response (Content-Length or chunked) and fails unless it is 200.
    async fn read_response(&mut self) -> Result<()> {
        let mut status = String::new();
        self.stream.read_line(&mut status).await?;
        let mut length = None;
        let mut chunked = false;
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line).await? == 0 {
                bail!("etcd closed the connection");
            }
            let line = line.trim_end().to_ascii_lowercase();
            if line.is_empty() {
                break;
            }
            if let Some(value) = line.strip_prefix("content-length:") {
                length = Some(value.trim().parse::<usize>()?);
            }
            if line.starts_with("transfer-encoding:") && line.contains("chunked") {
                chunked = true;
            }
        }
        if chunked {
            self.skip_chunks().await?;
        } else {
            let mut body = vec![0; length.unwrap_or(0)];
            self.stream.read_exact(&mut body).await?;
        }
        if status.split_whitespace().nth(1) != Some("200") {
            bail!("etcd answered {}", status.trim_end());
        }
        Ok(())
    }

    async fn skip_chunks(&mut self) -> Result<()> {
        loop {
            let mut size = String::new();
            self.stream.read_line(&mut size).await?;
            let size = usize::from_str_radix(size.trim(), 16)?;
            let mut chunk = vec![0; size + 2];
            self.stream.read_exact(&mut chunk).await?;
            if size == 0 {
                return Ok(());
            }
        }
    }
}
