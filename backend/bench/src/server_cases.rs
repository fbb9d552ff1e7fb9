//! Case 3 (and the per-call part of case 6): the server over real gRPC, each call at every
//! concurrency, with ratios against the floors.

use anyhow::Result;

use crate::Settings;
use crate::calls::{Call, Target, measure};
use crate::preload::preload;
use crate::report::Report;
use crate::server::BenchServer;

pub async fn run(settings: &Settings, report: &mut Report) -> Result<()> {
    report.section(&format!(
        "3. server over gRPC (stigmer-server process, loopback, synchronous FULL, {} preloaded)",
        settings.preload
    ));
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("server.db");
    preload(&db, settings.preload).await?;
    let server = BenchServer::start(&db).await?;
    let target = Target {
        channel: server.channel.clone(),
        cpu: server.cpu_clock()?,
        preloaded: settings.preload,
    };
    measure_calls(settings, report, &target, &Call::ALL, "").await?;
    server.stop().await
}

/// Each of `calls` at every concurrency of `settings`, one table line each.
pub async fn measure_calls(
    settings: &Settings,
    report: &mut Report,
    target: &Target,
    calls: &[Call],
    label_suffix: &str,
) -> Result<()> {
    for &call in calls.iter().filter(|call| settings.calls.contains(call)) {
        for &in_flight in &settings.concurrency {
            let summary = measure(call, target, in_flight, settings.duration).await?;
            let note = match call {
                Call::Get | Call::GetByReference => report.vs_grpc_floor(in_flight, &summary),
                Call::Create => report.vs_store_floor(&summary),
                Call::Update | Call::List => String::new(),
            };
            let label = format!("{}{label_suffix}", call.label());
            report.row(&label, in_flight, &summary, &note);
        }
    }
    Ok(())
}
