//! stigmer-bench: the benchmark harness of stigmer-server. Every case runs for a fixed duration
//! and prints a line of figures (ops/s, p50, p99, p99.9) as soon as it is measured. See
//! BENCHMARKS.md at the repository root.
#![forbid(unsafe_code)]

mod calls;
mod cloud;
mod drive;
mod etcd;
mod grpc_floor;
mod http_json;
mod metrics;
mod postgres;
mod preload;
mod report;
mod resources;
mod scale;
mod server;
mod server_cases;
mod stats;
mod store_floor;
mod watch;

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Parser, ValueEnum};

use crate::calls::Call;
use crate::report::Report;

/// Benchmarks stigmer-server: store floors, gRPC floor, every call over gRPC, PostgreSQL (one
/// replica and three), watch lag, scale, an etcd peer and cloud mode (API key + TLS).
#[derive(Debug, Parser)]
#[command(name = "stigmer-bench", version, about)]
struct Args {
    /// A quick run: 0.3 s per case, one concurrency level, small preloads.
    #[arg(long)]
    smoke: bool,
    /// Run only this case (the floors it compares against are skipped too).
    #[arg(long, value_enum)]
    only: Option<Case>,
    /// Seconds per case and concurrency (default 3, or 0.3 with --smoke).
    #[arg(long)]
    secs: Option<f64>,
    /// Resource counts of the scale case, e.g. 10000,100000,1000000.
    #[arg(long, value_delimiter = ',')]
    scale: Option<Vec<usize>>,
    /// Watcher counts of the watch case, e.g. 100,1000.
    #[arg(long, value_delimiter = ',')]
    watchers: Option<Vec<usize>>,
    /// Only these calls in the server and scale cases, e.g. get,list (for profiling).
    #[arg(long, value_enum, value_delimiter = ',')]
    calls: Option<Vec<Call>>,
    /// Requests in flight, e.g. 1,16,64 (the default) or 64 alone.
    #[arg(long, value_delimiter = ',')]
    in_flight: Option<Vec<usize>>,
    /// Where to write every figure as JSON.
    #[arg(long, default_value = "bench/results/latest.json")]
    json: std::path::PathBuf,
    /// Creates per second of the watch case's writer, one run each (0 = as fast as it can);
    /// default 0,100, or 0 with --smoke.
    #[arg(long, value_delimiter = ',')]
    watch_rate: Option<Vec<u32>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Case {
    Store,
    GrpcFloor,
    Server,
    Postgres,
    Watch,
    Scale,
    Etcd,
    /// Cloud mode: get and create with API key and TLS against the same calls without.
    Auth,
    /// Get by id with and without --metrics-listen, in alternating rounds.
    Metrics,
    /// Get by id as JSON over HTTP/1.1 against gRPC, in alternating rounds.
    HttpJson,
}

/// How long and how hard each case runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub duration: Duration,
    pub concurrency: Vec<usize>,
    /// Resources preloaded for case 3.
    pub preload: usize,
    pub scale: Vec<usize>,
    pub watchers: Vec<usize>,
    pub watch_rates: Vec<u32>,
    pub calls: Vec<Call>,
}

impl Settings {
    fn from_args(args: &Args) -> Self {
        let base = if args.smoke {
            Self {
                duration: Duration::from_millis(300),
                concurrency: vec![16],
                preload: 500,
                scale: vec![10_000],
                watchers: vec![100],
                watch_rates: vec![0],
                calls: Call::ALL.to_vec(),
            }
        } else {
            Self {
                duration: Duration::from_secs(3),
                concurrency: vec![1, 16, 64],
                preload: 1_000,
                scale: vec![10_000, 1_000_000],
                watchers: vec![100, 1_000],
                watch_rates: vec![0, 100],
                calls: Call::ALL.to_vec(),
            }
        };
        Self {
            duration: args.secs.map_or(base.duration, Duration::from_secs_f64),
            scale: args.scale.clone().unwrap_or(base.scale),
            watchers: args.watchers.clone().unwrap_or(base.watchers),
            watch_rates: args.watch_rate.clone().unwrap_or(base.watch_rates),
            calls: args.calls.clone().unwrap_or(base.calls),
            concurrency: args.in_flight.clone().unwrap_or(base.concurrency),
            ..base
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let settings = Settings::from_args(&args);
    let started = Instant::now();
    println!(
        "## stigmer-bench: {:?} per case and concurrency, in flight {:?}, {} CPUs",
        settings.duration,
        settings.concurrency,
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    let mut report = Report::default();
    let wanted = |case: Case| args.only.is_none_or(|only| only == case);
    if wanted(Case::Store) {
        store_floor::run(&settings, &mut report).await?;
    }
    if wanted(Case::GrpcFloor) {
        grpc_floor::run(&settings, &mut report).await?;
    }
    if wanted(Case::Server) {
        server_cases::run(&settings, &mut report).await?;
    }
    if wanted(Case::Postgres) {
        // Alone, the case measures the SQLite and etcd figures its ratios need itself.
        let baselines = args.only == Some(Case::Postgres);
        postgres::run(&settings, &mut report, baselines).await?;
    }
    if wanted(Case::Watch) {
        watch::run(&settings, &mut report).await?;
    }
    if wanted(Case::Scale) {
        scale::run(&settings, &mut report).await?;
    }
    if wanted(Case::Etcd) {
        etcd::run(&settings, &mut report).await?;
    }
    if wanted(Case::Auth) {
        cloud::run(&settings, &mut report).await?;
    }
    if wanted(Case::Metrics) {
        metrics::run(&settings, &mut report).await?;
    }
    if wanted(Case::HttpJson) {
        http_json::run(&settings, &mut report).await?;
    }
    if wanted(Case::Postgres) {
        postgres::compare(&settings, &mut report);
    }
    println!();
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    report.write_json(
        &args.json,
        serde_json::json!({
            "smoke": args.smoke,
            "cpus": std::thread::available_parallelism().map_or(1, usize::from),
            "secs_per_case": settings.duration.as_secs_f64(),
            "in_flight": settings.concurrency,
            "total_secs": started.elapsed().as_secs_f64(),
        }),
    )?;
    println!("figures written to {}", args.json.display());
    match report.failures() {
        [] => Ok(()),
        failures => anyhow::bail!(
            "{} cases gave wrong results: {}",
            failures.len(),
            failures.join("; ")
        ),
    }
}
