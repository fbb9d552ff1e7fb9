//! Case 11: get by id as JSON over HTTP/1.1 (curl's and a browser's way, `connect.rs` in the
//! server) against the same get over gRPC, on one server, in alternating rounds so that drift
//! in the machine hits both alike. Each HTTP worker keeps one connection open and sends its
//! next request when the previous answer is read in full, as the gRPC workers do. Issue 19's
//! target: the HTTP/JSON throughput ≥ 0.7× the gRPC one.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::Mutex;

use crate::Settings;
use crate::calls::{Call, Target, measure};
use crate::drive::drive;
use crate::preload::preload;
use crate::report::{Report, ratio, verdict};
use crate::resources::preload_id;
use crate::server::BenchServer;
use crate::stats::{Summary, fmt_duration, fmt_rate, median_cpu, median_rate};

const ROUNDS: usize = 3;
const TARGET: f64 = 0.7;
const GET: &str = "/ai.stigmer.agentic.environment.v1.EnvironmentQueryController/get";

pub async fn run(settings: &Settings, report: &mut Report) -> Result<()> {
    report.section(&format!(
        "11. get by id as JSON over HTTP/1.1 against gRPC (one stigmer-server, loopback, {} \
         preloaded, {ROUNDS} alternating rounds; one keep-alive connection per HTTP worker)",
        settings.preload
    ));
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("server.db");
    preload(&db, settings.preload).await?;
    let server = BenchServer::start(&db).await?;
    let target = Target::server(&server, settings.preload)?;
    for &in_flight in &settings.concurrency {
        let (mut grpc, mut json) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            for json_first in [round % 2 == 0, round % 2 == 1] {
                if json_first {
                    let summary = measure_json(&target, server.addr, in_flight, settings).await?;
                    report.row("get by id, HTTP/JSON", in_flight, &summary, "");
                    json.push(summary);
                } else {
                    let summary = measure(Call::Get, &target, in_flight, settings.duration).await?;
                    report.row("get by id, gRPC", in_flight, &summary, "");
                    grpc.push(summary);
                }
            }
        }
        compare(report, in_flight, &grpc, &json);
    }
    server.stop().await
}

fn compare(report: &mut Report, in_flight: usize, grpc: &[Summary], json: &[Summary]) {
    let (over_grpc, over_json) = (median_rate(grpc), median_rate(json));
    let r = ratio(over_json, over_grpc);
    let cpu = |runs: &[Summary]| median_cpu(runs).map_or_else(|| "-".to_string(), fmt_duration);
    report.note(&format!(
        "{in_flight} in flight: median {}/s over HTTP/JSON, {}/s over gRPC: {r:.2}×; server CPU \
         per get {} over HTTP/JSON, {} over gRPC; target ≥ {TARGET}×: {}",
        fmt_rate(over_json),
        fmt_rate(over_grpc),
        cpu(json),
        cpu(grpc),
        verdict(r >= TARGET)
    ));
}

/// Gets of random preloaded resources as JSON calls, `in_flight` connections at once.
async fn measure_json(
    target: &Target,
    address: SocketAddr,
    in_flight: usize,
    settings: &Settings,
) -> Result<Summary> {
    let mut connections = Vec::with_capacity(in_flight);
    for _ in 0..in_flight {
        connections.push(Arc::new(Mutex::new(connect(address).await?)));
    }
    let cpu_before = target.cpu.used()?;
    let preloaded = target.preloaded.max(1);
    let mut summary = drive(in_flight, settings.duration, 1, |worker| {
        let connection = Arc::clone(&connections[worker]);
        move |sequence| {
            let index = spread(worker, sequence) % preloaded;
            let connection = Arc::clone(&connection);
            async move { get(&mut *connection.lock().await, address, index).await }
        }
    })
    .await?;
    summary.server_cpu = Some(target.cpu.used()?.saturating_sub(cpu_before));
    Ok(summary)
}

async fn connect(address: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One get; the whole answer is read, and anything but 200 fails the run.
async fn get(
    sender: &mut SendRequest<Full<Bytes>>,
    address: SocketAddr,
    index: usize,
) -> Result<()> {
    let body = format!("{{\"value\":\"{}\"}}", preload_id(index));
    let request = http::Request::post(GET)
        .header(http::header::HOST, address.to_string())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let answer = response.into_body().collect().await?.to_bytes();
    if status != http::StatusCode::OK {
        bail!(
            "a JSON get answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    Ok(())
}

/// Spreads workers' gets over the preload (a multiplicative hash of worker and sequence).
fn spread(worker: usize, sequence: u64) -> usize {
    let mixed = (sequence ^ ((worker as u64) << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 16) as usize
}
