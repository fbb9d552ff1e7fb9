//! Case 10: what `--metrics-listen` costs. Two servers on two copies of one preload, one
//! serving /metrics (scraped every second while it is measured, far more often than
//! Prometheus's usual 15 s or more), the other not; get by id runs on each in turn, several
//! rounds in alternating order so that drift in the machine hits both alike. Reported: the
//! medians of each side, and their ratio.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Settings;
use crate::calls::{Call, Target, measure};
use crate::preload::preload;
use crate::report::{Report, ratio};
use crate::server::BenchServer;
use crate::stats::{Summary, fmt_duration, fmt_rate, median_cpu, median_rate};

/// Measurements of each side at each concurrency.
const ROUNDS: usize = 5;
/// How often the server with metrics is scraped while it is measured.
const SCRAPE_EVERY: Duration = Duration::from_secs(1);

pub async fn run(settings: &Settings, report: &mut Report) -> Result<()> {
    report.section(&format!(
        "10. metrics cost: get by id with and without --metrics-listen ({} preloaded, {ROUNDS} \
         alternating rounds, /metrics scraped every {} s while measured)",
        settings.preload,
        SCRAPE_EVERY.as_secs()
    ));
    let dir = tempfile::tempdir()?;
    let (plain, plain_target) = start(dir.path(), "plain", settings.preload, None).await?;
    let address = free_loopback_port()?;
    let (measured, measured_target) =
        start(dir.path(), "metrics", settings.preload, Some(address)).await?;
    scrape(address)
        .await
        .context("the server started with --metrics-listen serves no /metrics")?;
    let mut gets = 0;
    for &in_flight in &settings.concurrency {
        let (mut without, mut with) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            // Off first in even rounds, on first in odd ones.
            for metrics_on in [round % 2 == 1, round % 2 == 0] {
                if metrics_on {
                    let summary =
                        measure_scraped(&measured_target, address, in_flight, settings).await?;
                    gets += summary.units;
                    report.row("get by id, --metrics-listen", in_flight, &summary, "");
                    with.push(summary);
                } else {
                    let summary =
                        measure(Call::Get, &plain_target, in_flight, settings.duration).await?;
                    report.row("get by id, no metrics", in_flight, &summary, "");
                    without.push(summary);
                }
            }
        }
        let (off, on) = (median_rate(&without), median_rate(&with));
        let cpu = |runs: &[Summary]| median_cpu(runs).map_or_else(|| "-".to_string(), fmt_duration);
        report.note(&format!(
            "{in_flight} in flight: median {}/s without metrics, {}/s with: {:.3}× ({:+.1} %); \
             server CPU per get {} without, {} with",
            fmt_rate(off),
            fmt_rate(on),
            ratio(on, off),
            (ratio(on, off) - 1.0) * 100.0,
            cpu(&without),
            cpu(&with),
        ));
    }
    let counted = counted_gets(&scrape(address).await?);
    if counted < gets as f64 {
        report.fail(&format!(
            "/metrics counts {counted} gets, the bench made {gets}: the layer missed calls"
        ));
    }
    plain.stop().await?;
    measured.stop().await
}

/// A server on its own preloaded database in `dir`, serving metrics on `metrics` if given.
async fn start(
    dir: &std::path::Path,
    name: &str,
    preloaded: usize,
    metrics: Option<SocketAddr>,
) -> Result<(BenchServer, Target)> {
    let home = dir.join(name);
    std::fs::create_dir_all(&home)?;
    let db = home.join("server.db");
    preload(&db, preloaded).await?;
    let key_file = home.join("master.key");
    let listen = metrics.map(|address| address.to_string());
    let mut env = vec![("STIGMER_MASTER_KEY_FILE", key_file.as_os_str())];
    if let Some(listen) = &listen {
        env.push(("STIGMER_METRICS_LISTEN", listen.as_ref()));
    }
    let server = BenchServer::start_on(db.as_os_str(), &home, &env).await?;
    let target = Target::server(&server, preloaded)?;
    Ok((server, target))
}

/// Gets on `target` while /metrics is scraped every [`SCRAPE_EVERY`].
async fn measure_scraped(
    target: &Target,
    address: SocketAddr,
    in_flight: usize,
    settings: &Settings,
) -> Result<Summary> {
    let scraper = tokio::spawn(scrape_every_second(address));
    let summary = measure(Call::Get, target, in_flight, settings.duration).await;
    let scraped = if scraper.is_finished() {
        scraper.await?
    } else {
        scraper.abort();
        Ok(())
    };
    scraped.context("scraping /metrics during the run")?;
    summary
}

/// Scrapes every [`SCRAPE_EVERY`] until aborted, or the first failure.
async fn scrape_every_second(address: SocketAddr) -> Result<()> {
    let mut every = tokio::time::interval(SCRAPE_EVERY);
    loop {
        every.tick().await;
        scrape(address).await?;
    }
}

/// A free port on 127.0.0.1 for the server's --metrics-listen (the bench reads no log to
/// learn one the server picked).
fn free_loopback_port() -> Result<SocketAddr> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(probe.local_addr()?)
}

/// GET /metrics, as a scraper sends it; the body.
async fn scrape(address: SocketAddr) -> Result<String> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8(response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("an HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("/metrics answered {}", head.lines().next().unwrap_or(head));
    }
    Ok(body.to_string())
}

/// Successful gets by id that /metrics counts.
fn counted_gets(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("grpc_server_handled_total{")
                && line.contains("EnvironmentQueryController\"")
                && line.contains("grpc_method=\"get\"")
                && line.contains("grpc_code=\"OK\"")
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}
