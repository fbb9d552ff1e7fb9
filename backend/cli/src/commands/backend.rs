//! `stigmer backend status|set`: which backend commands talk to, and whether it answers.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Subcommand, ValueEnum};
use stigmer_client::{BackendType, ClientError};

use super::Ctx;
use crate::{daemon, output};

#[derive(Subcommand)]
pub enum BackendCommand {
    /// Mode, endpoint, reachability, server version, revision and counts.
    Status,
    /// Switch between the local daemon and the cloud backend.
    Set {
        #[arg(value_enum)]
        mode: Mode,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Mode {
    Local,
    Cloud,
}

pub async fn run(ctx: &Ctx, command: BackendCommand) -> Result<ExitCode> {
    match command {
        BackendCommand::Status => status(ctx).await,
        BackendCommand::Set { mode } => set(ctx, mode),
    }
}

async fn status(ctx: &Ctx) -> Result<ExitCode> {
    let config = ctx.config()?;
    let backend = &config.backend;
    println!("config:     {}", ctx.config_path.display());
    match backend.kind {
        BackendType::Local => {
            println!("mode:       local");
            let transport = match backend.local.transport {
                stigmer_client::LocalTransport::Daemon => "daemon",
                stigmer_client::LocalTransport::InProcess => "in-process",
            };
            println!("transport:  {transport}");
            if daemon::uses_daemon(&config) {
                println!("endpoint:   {}", backend.local.endpoint);
            }
            if daemon::uses_daemon(&config) {
                let pid = daemon::read_pid()
                    .ok()
                    .flatten()
                    .filter(|p| daemon::is_alive(*p));
                match pid {
                    Some(pid) => println!("daemon:     pid {pid}"),
                    None => println!("daemon:     not started by stigmer"),
                }
            }
        }
        BackendType::Cloud => {
            let cloud = backend.cloud.clone().unwrap_or_default();
            println!("mode:       cloud");
            println!(
                "endpoint:   {}",
                if cloud.endpoint.is_empty() {
                    "(not set: run `stigmer login`)"
                } else {
                    &cloud.endpoint
                }
            );
            println!(
                "org:        {}",
                if cloud.org_id.is_empty() {
                    "(not set)"
                } else {
                    &cloud.org_id
                }
            );
            println!(
                "token:      {}",
                if cloud.token.is_empty() {
                    "(not set)"
                } else {
                    "set"
                }
            );
        }
    }
    let timeout = config
        .call_timeout()
        .map_or_else(|| "none".to_string(), stigmer_client::format_duration);
    println!("timeout:    {timeout}");
    let info = match stigmer_client::connect(&config).await {
        Err(err) => Err(err),
        Ok(client) => {
            let info = if client.is_serving().await || client.transport().is_in_process() {
                client.info().await
            } else {
                Err(ClientError::Connect {
                    endpoint: client.endpoint().to_string(),
                    reason: "no answer to health checks".into(),
                })
            };
            let _ = client.close().await;
            info
        }
    };
    match info {
        Err(err) => println!("reachable:  no ({err})"),
        Ok(info) => {
            println!("reachable:  yes");
            let field = |name: &str| output::scalar(&info[name]);
            println!("version:    {}", field("version"));
            println!("backend:    {} ({})", field("backend"), field("database"));
            // The server's own answer: a daemon may run on another file than the config says.
            println!("database:   {}", field("location"));
            println!("revision:   {}", field("revision"));
            println!("compacted:  {}", field("compactedRevision"));
            println!("counts:");
            match info["counts"].as_object() {
                Some(counts) if !counts.is_empty() => {
                    let mut counts: Vec<_> = counts.iter().collect();
                    counts.sort_by(|a, b| a.0.cmp(b.0));
                    for (kind, count) in counts {
                        println!("  {kind}: {}", output::scalar(count));
                    }
                }
                _ => println!("  (none)"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn set(ctx: &Ctx, mode: Mode) -> Result<ExitCode> {
    let mut config = ctx.stored_config()?;
    config.backend.kind = match mode {
        Mode::Local => BackendType::Local,
        Mode::Cloud => BackendType::Cloud,
    };
    ctx.save(&config)?;
    match mode {
        Mode::Local => println!("backend set to local ({})", config.backend.local.endpoint),
        Mode::Cloud => match config
            .backend
            .cloud
            .as_ref()
            .filter(|c| !c.endpoint.is_empty())
        {
            Some(cloud) => println!("backend set to cloud ({})", cloud.endpoint),
            None => println!(
                "backend set to cloud; no endpoint yet: run `stigmer login --endpoint HOST:PORT --token TOKEN --org ORG`"
            ),
        },
    }
    Ok(ExitCode::SUCCESS)
}
