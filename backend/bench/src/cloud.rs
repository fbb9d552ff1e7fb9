//! Case 9, cloud mode: get and create on a server with API keys and TLS (`--auth apikey`, a
//! self-signed certificate) beside the same calls on a plain server, each on its own fresh
//! database with the same preload. The two servers run side by side and each workload runs on
//! one right after the other, so both sides of a ratio see the same machine; the ratios
//! (cloud / plain) are issue 16's target, ≥ 0.8×.

use anyhow::{Result, bail};
use stigmer_api::ai::stigmer::agentic::environment::v1::environment_query_controller_client::EnvironmentQueryControllerClient;
use stigmer_api::ai::stigmer::commons::apiresource::ApiResourceId;
use tonic::Code;

use crate::Settings;
use crate::calls::{Call, Target};
use crate::preload::preload;
use crate::report::{Report, ratio, verdict};
use crate::resources::preload_id;
use crate::server::BenchServer;
use crate::server_cases::measure_calls;
use crate::stats::{fmt_duration, fmt_rate};

const CALLS: [Call; 2] = [Call::Create, Call::Get];
const PLAIN: &str = " (plain)";
const CLOUD: &str = " (apikey+TLS)";
/// Cloud throughput over plain throughput that issue 16 asks for.
const TARGET: f64 = 0.8;

pub async fn run(settings: &Settings, report: &mut Report) -> Result<()> {
    report.section(&format!(
        "9. cloud mode: API key + TLS against plain (two stigmer-server processes, loopback, \
         {} preloaded each)",
        settings.preload
    ));
    let (plain_dir, cloud_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (plain_db, cloud_db) = (
        plain_dir.path().join("plain.db"),
        cloud_dir.path().join("cloud.db"),
    );
    preload(&plain_db, settings.preload).await?;
    preload(&cloud_db, settings.preload).await?;
    let plain = BenchServer::start(&plain_db).await?;
    let cloud = BenchServer::start_cloud(&cloud_db).await?;
    refuses_calls_without_key(&cloud).await?;
    report.note(&format!(
        "plain: {}; apikey+TLS: {} (rustls, self-signed certificate; every call carries \
         `authorization: Bearer stk_…` of an owner of org local; a call without it is refused)",
        plain.database().await?,
        cloud.database().await?
    ));
    let targets = [
        (Target::server(&plain, settings.preload)?, PLAIN),
        (Target::server(&cloud, settings.preload)?, CLOUD),
    ];
    for call in CALLS {
        for &in_flight in &settings.concurrency {
            let one_level = Settings {
                concurrency: vec![in_flight],
                ..settings.clone()
            };
            for (target, suffix) in &targets {
                measure_calls(&one_level, report, target, &[call], suffix).await?;
            }
        }
    }
    plain.stop().await?;
    cloud.stop().await?;
    compare(settings, report);
    Ok(())
}

/// Fails unless the cloud server refuses a call without a key: otherwise the figures would
/// not be those of authenticated calls.
async fn refuses_calls_without_key(server: &BenchServer) -> Result<()> {
    let answer = EnvironmentQueryControllerClient::new(server.channel.clone())
        .get(ApiResourceId {
            value: preload_id(0),
            ..Default::default()
        })
        .await;
    match answer {
        Err(status) if status.code() == Code::Unauthenticated => Ok(()),
        Err(status) => {
            bail!("a get without an API key failed, but not as unauthenticated: {status}")
        }
        Ok(_) => bail!("the server in cloud mode answered a get without an API key"),
    }
}

/// One note per call and concurrency: cloud against plain, throughput and p99.
fn compare(settings: &Settings, report: &mut Report) {
    for call in CALLS.iter().filter(|call| settings.calls.contains(call)) {
        let label = call.label();
        for &in_flight in &settings.concurrency {
            let plain = report.figure(&format!("{label}{PLAIN}"), in_flight);
            let cloud = report.figure(&format!("{label}{CLOUD}"), in_flight);
            let line = match (plain, cloud) {
                (Some(plain), Some(cloud)) => {
                    let r = ratio(cloud.rate, plain.rate);
                    format!(
                        "{label} at {in_flight} in flight: API key + TLS {}/s ({}) = {r:.2}× \
                         plain {}/s ({}), p99 {} vs {}; target ≥ {TARGET}×: {}",
                        fmt_rate(cloud.rate),
                        cloud.cpu(),
                        fmt_rate(plain.rate),
                        plain.cpu(),
                        fmt_duration(cloud.p99),
                        fmt_duration(plain.p99),
                        verdict(r >= TARGET)
                    )
                }
                _ => format!("{label} at {in_flight} in flight: no figure"),
            };
            report.note(&line);
        }
    }
}
