//! Case 2, the gRPC floor: grpc.health.v1.Health/Check over loopback, through the same server
//! stack (tonic server, logging layer) and client stack (tonic Channel) as every other call.

use anyhow::Result;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::Settings;
use crate::drive::drive;
use crate::report::Report;
use crate::server::BenchServer;

pub async fn run(settings: &Settings, report: &mut Report) -> Result<()> {
    report.section("2. gRPC floor (grpc.health.v1.Health/Check over loopback)");
    let dir = tempfile::tempdir()?;
    let server = BenchServer::start(&dir.path().join("floor.db")).await?;
    let cpu = server.cpu_clock()?;
    for &in_flight in &settings.concurrency {
        let cpu_before = cpu.used()?;
        let mut summary = drive(in_flight, settings.duration, 1, |_| {
            let client = HealthClient::new(server.channel.clone());
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
        report.row("Health/Check", in_flight, &summary, "");
        report.floors.grpc.insert(in_flight, summary);
    }
    server.stop().await
}
