//! Case 3 (and the per-call part of case 6): the server over real gRPC, each call at every
//! concurrency, with ratios against the floors.

use anyhow::Result;
use stigmer_api::ai::stigmer::backend::v1::InfoRequest;
use stigmer_api::ai::stigmer::backend::v1::resource_service_client::ResourceServiceClient;

use crate::Settings;
use crate::calls::{Call, Target, measure};
use crate::grpc_floor::paired_floor;
use crate::preload::preload;
use crate::report::{Report, vs_grpc_floor};
use crate::server::{BenchServer, authorized};
use crate::stats::fmt_duration;

pub async fn run(settings: &Settings, report: &mut Report) -> Result<()> {
    report.section(&format!(
        "3. server over gRPC (stigmer-server process, loopback, {} preloaded)",
        settings.preload
    ));
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("server.db");
    preload(&db, settings.preload).await?;
    let server = BenchServer::start(&db).await?;
    report.note(&format!("the server says: {}", server.database().await?));
    let target = Target::server(&server, settings.preload)?;
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
            let commits_before = commits(target).await?;
            let run = measure(call, target, in_flight, settings.duration);
            let (summary, floor) = if call.compared_with_grpc_floor() {
                let (summary, floor) = paired_floor(
                    &target.channel,
                    &target.cpu,
                    in_flight,
                    settings.duration,
                    run,
                )
                .await?;
                (summary, Some(floor))
            } else {
                (run.await?, None)
            };
            let (writes, transactions) = commits(target).await?;
            let per_commit = match transactions.saturating_sub(commits_before.1) {
                0 => String::new(),
                done => format!(
                    "{:.1} writes per commit",
                    writes.saturating_sub(commits_before.0) as f64 / done as f64
                ),
            };
            let vs_floor = floor.as_ref().map(|floor| vs_grpc_floor(&summary, floor));
            let notes = match call {
                Call::Get | Call::GetByReference => vec![vs_floor.unwrap_or_default()],
                Call::Create => vec![
                    if target.store_floor {
                        report.vs_store_floor(&summary)
                    } else {
                        String::new()
                    },
                    vs_floor.unwrap_or_default(),
                    per_commit,
                ],
                Call::Update | Call::CreateAgent => vec![per_commit],
                Call::List => Vec::new(),
            };
            let database_cpu = summary
                .database_cpu_per_unit()
                .map(|cpu| format!("PostgreSQL CPU/op {}", fmt_duration(cpu)));
            let note = notes
                .into_iter()
                .chain(database_cpu)
                .filter(|note| !note.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            let label = format!("{}{label_suffix}", call.label());
            report.row(&label, in_flight, &summary, &note);
        }
    }
    Ok(())
}

/// The servers' committed writes and the transactions they took (ResourceService/info),
/// summed over every server of the target.
async fn commits(target: &Target) -> Result<(u64, u64)> {
    let (mut writes, mut transactions) = (0, 0);
    for channel in &target.servers {
        let info = ResourceServiceClient::new(channel.clone())
            .info(authorized(InfoRequest {}, target.auth.as_ref()))
            .await?
            .into_inner();
        writes += info.writes_committed;
        transactions += info.transactions_committed;
    }
    Ok((writes, transactions))
}
