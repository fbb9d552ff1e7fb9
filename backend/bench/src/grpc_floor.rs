//! Case 2, the gRPC floor: grpc.health.v1.Health/Check over loopback, through the same server
//! stack (tonic server, logging layer) and client stack (tonic Channel) as every other call.
//! Ratios are taken against a floor measured on the same server around each call's run
//! ([`paired_floor`]), so that both sides of a ratio see the same machine at the same moment.

use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::Settings;
use crate::drive::drive;
use crate::report::Report;
use crate::server::{BenchServer, CpuClock};
use crate::stats::Summary;

pub async fn run(settings: &Settings, report: &mut Report) -> Result<()> {
    report.section("2. gRPC floor (grpc.health.v1.Health/Check over loopback)");
    let dir = tempfile::tempdir()?;
    let server = BenchServer::start(&dir.path().join("floor.db")).await?;
    let cpu = server.cpu_clock()?;
    for &in_flight in &settings.concurrency {
        let summary = health_checks(&server.channel, &cpu, in_flight, settings.duration).await?;
        report.row("Health/Check", in_flight, &summary, "");
    }
    server.stop().await
}

/// Health/Check calls for `duration` with `in_flight` workers.
pub async fn health_checks(
    channel: &Channel,
    cpu: &CpuClock,
    in_flight: usize,
    duration: Duration,
) -> Result<Summary> {
    let cpu_before = cpu.used()?;
    let mut summary = drive(in_flight, duration, 1, |_| {
        let client = HealthClient::new(channel.clone());
        move |_| {
            let mut client = client.clone();
            async move {
                client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await?;
                Ok(())
            }
        }
    })
    .await?;
    summary.server_cpu = Some(cpu.used()?.saturating_sub(cpu_before));
    Ok(summary)
}

/// Runs `measured` bracketed by half a run of Health/Check before and half after, on the same
/// server and at the same concurrency; returns the measured run and the pooled floor. Drift
/// of the machine during the run (other load, frequency, a noisy neighbour) then moves both
/// sides of the ratio alike.
pub async fn paired_floor<F>(
    channel: &Channel,
    cpu: &CpuClock,
    in_flight: usize,
    duration: Duration,
    measured: F,
) -> Result<(Summary, Summary)>
where
    F: Future<Output = Result<Summary>>,
{
    let before = health_checks(channel, cpu, in_flight, duration / 2).await?;
    let summary = measured.await?;
    let after = health_checks(channel, cpu, in_flight, duration / 2).await?;
    Ok((summary, Summary::pooled(&before, &after)))
}
