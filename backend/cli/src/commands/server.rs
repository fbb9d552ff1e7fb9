//! `stigmer server start|stop|status`: the local daemon, whatever mode the configuration is
//! in.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

use super::Ctx;
use crate::daemon;

#[derive(Subcommand)]
pub enum ServerCommand {
    /// Start the local daemon in the background (no-op if it answers already).
    Start,
    /// Stop the local daemon (SIGTERM, then wait until it is gone).
    Stop,
    /// Whether the local daemon runs, with its pid and endpoint.
    Status,
}

pub async fn run(ctx: &Ctx, command: ServerCommand) -> Result<ExitCode> {
    let config = daemon::local_daemon_config(&ctx.config()?);
    let client = ctx.connect(&config).await?;
    let endpoint = config.backend.local.endpoint.clone();
    match command {
        ServerCommand::Start => {
            match daemon::ensure_running(&config, &client)
                .await
                .context("cannot start the local backend daemon")?
            {
                Some(pid) => println!("started (pid {pid}, endpoint {endpoint})"),
                None => match daemon::read_pid()?.filter(|p| daemon::is_alive(*p)) {
                    Some(pid) => println!("already running (pid {pid}, endpoint {endpoint})"),
                    None => {
                        println!("already running (endpoint {endpoint}; not started by stigmer)")
                    }
                },
            }
        }
        ServerCommand::Stop => match daemon::stop(&client)
            .await
            .context("cannot stop the local backend daemon")?
        {
            daemon::Stopped::Stopped(pid) => println!("stopped (pid {pid})"),
            daemon::Stopped::NotRunning { stale_pid: None } => println!("not running"),
            daemon::Stopped::NotRunning {
                stale_pid: Some(pid),
            } => println!("not running (removed the stale pid file of pid {pid})"),
        },
        ServerCommand::Status => {
            let pid = daemon::read_pid()?;
            let alive = pid.filter(|p| daemon::is_alive(*p));
            let serving = client.is_serving().await;
            match (alive, serving) {
                (Some(pid), true) => println!("running (pid {pid}, endpoint {endpoint})"),
                (None, true) => {
                    println!("running (endpoint {endpoint}; not started by stigmer, no pid file)")
                }
                (Some(pid), false) => println!(
                    "not running: pid {pid} is alive but {endpoint} does not answer (starting, or stuck; see {})",
                    daemon::log_path()?.display()
                ),
                (None, false) => println!("not running (endpoint {endpoint})"),
            }
            if !serving {
                return Ok(not_running());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `server status` when nothing serves: 3, as `systemctl status` and LSB init scripts say
/// "not running", so scripts can test it.
fn not_running() -> ExitCode {
    ExitCode::from(3)
}
