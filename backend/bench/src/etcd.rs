//! Case 7, the etcd peer: if an `etcd` binary is on PATH, a single-member etcd on loopback with a
//! temporary data dir, driven through its native gRPC API (`etcdserverpb.KV/Put` and `Range`)
//! by the same load generator and tonic client stack as stigmer-server: one HTTP/2 connection,
//! every worker a clone of it. The messages below carry only the fields the bench uses; protobuf
//! skips the others when decoding.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use http::uri::PathAndQuery;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

use crate::Settings;
use crate::drive::drive;
use crate::report::Report;
use crate::server::{CpuClock, connect};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The label of etcd's put rows, which other cases' ratios look up.
pub const PUT: &str = "etcd put (durable)";

pub async fn run(settings: &Settings, report: &mut Report) -> Result<()> {
    report.section("7. etcd peer (etcd on loopback, native gRPC KV API)");
    measure(settings, report, &[Op::Put, Op::Range]).await
}

/// etcd puts alone at every concurrency, for a case that compares with them when case 7 does
/// not run.
pub async fn puts(settings: &Settings, report: &mut Report) -> Result<()> {
    measure(settings, report, &[Op::Put]).await
}

/// Whether an etcd binary is on PATH.
pub fn installed() -> bool {
    find_on_path("etcd").is_some()
}

async fn measure(settings: &Settings, report: &mut Report, ops: &[Op]) -> Result<()> {
    let Some(binary) = find_on_path("etcd") else {
        report.note("etcd: skipped (no etcd binary on PATH)");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let (mut child, kv) = start(&binary, dir.path()).await?;
    let cpu = CpuClock::of(child.id().context("etcd has exited")?);
    let result = measure_on(settings, report, &kv, &cpu, ops).await;
    child.kill().await?;
    result
}

async fn measure_on(
    settings: &Settings,
    report: &mut Report,
    kv: &Kv,
    cpu: &CpuClock,
    ops: &[Op],
) -> Result<()> {
    for &in_flight in &settings.concurrency {
        for &op in ops {
            let summary = run_op(settings, kv, cpu, in_flight, op).await?;
            let label = match op {
                Op::Put => PUT,
                Op::Range => "etcd range (1 key)",
            };
            report.row(label, in_flight, &summary, "");
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Put,
    Range,
}

/// `op` with `in_flight` workers sharing one connection. Puts write 100-byte values under keys
/// of their own; ranges read one key (linearizable, etcd's default).
async fn run_op(
    settings: &Settings,
    kv: &Kv,
    cpu: &CpuClock,
    in_flight: usize,
    op: Op,
) -> Result<crate::stats::Summary> {
    for worker in 0..in_flight {
        kv.put(format!("bench/{worker}/seed")).await?;
    }
    let cpu_before = cpu.used()?;
    let mut summary = drive(in_flight, settings.duration, 1, |worker| {
        let kv = kv.clone();
        move |sequence| {
            let kv = kv.clone();
            async move {
                match op {
                    Op::Put => kv.put(format!("bench/{worker}/{sequence}")).await,
                    Op::Range => kv.range(format!("bench/{worker}/seed")).await,
                }
            }
        }
    })
    .await?;
    summary.server_cpu = Some(cpu.used()?.saturating_sub(cpu_before));
    Ok(summary)
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

/// Starts a one-member etcd in `dir` and waits until its KV service answers.
async fn start(binary: &Path, dir: &Path) -> Result<(Child, Kv)> {
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
        if let Ok(channel) = connect(client).await {
            let kv = Kv { channel };
            if kv.range("bench/ready".into()).await.is_ok() {
                return Ok((child, kv));
            }
        }
        if started.elapsed() > READY_TIMEOUT {
            bail!("etcd did not answer within {READY_TIMEOUT:?}");
        }
        tokio::task::yield_now().await;
    }
}

/// etcd's KV service over one HTTP/2 connection.
#[derive(Clone)]
struct Kv {
    channel: Channel,
}

impl Kv {
    async fn put(&self, key: String) -> Result<()> {
        let request = PutRequest {
            key: key.into_bytes(),
            value: vec![b'x'; 100],
        };
        self.call::<_, PutResponse>("/etcdserverpb.KV/Put", request)
            .await
            .map(|_| ())
    }

    async fn range(&self, key: String) -> Result<()> {
        let request = RangeRequest {
            key: key.into_bytes(),
        };
        self.call::<_, RangeResponse>("/etcdserverpb.KV/Range", request)
            .await
            .map(|_| ())
    }

    async fn call<Req, Resp>(&self, path: &'static str, request: Req) -> Result<Resp>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await?;
        let response = grpc
            .unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(path),
                ProstCodec::<Req, Resp>::default(),
            )
            .await?;
        Ok(response.into_inner())
    }
}

// The fields of etcd's rpc.proto (etcdserverpb) this bench sends or reads.

#[derive(Clone, PartialEq, prost::Message)]
struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PutResponse {}

#[derive(Clone, PartialEq, prost::Message)]
struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RangeResponse {
    #[prost(message, repeated, tag = "2")]
    kvs: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    value: Vec<u8>,
}
