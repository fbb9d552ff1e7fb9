//! stigmer-server: flags and logging, then `stigmer_grpc::run` until SIGINT or SIGTERM.
#![forbid(unsafe_code)]

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use stigmer_grpc::{Command, LogFormat, ServerConfig};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ServerConfig::parse();
    init_logging(&config)?;
    if let Some(Command::RotateMasterKey) = config.command {
        let rotation = stigmer_grpc::rotate_master_key(&config).await?;
        println!(
            "re-sealed {} secret values under master key {}",
            rotation.resealed, rotation.key_id
        );
        if let Some(key) = rotation.new_key {
            println!(
                "set STIGMER_MASTER_KEY={key} before the next start; the old key no longer opens them"
            );
        }
        return Ok(());
    }
    let shutdown = shutdown_signal()?;
    raise_open_files_limit();
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    stigmer_grpc::run(&config, listener, shutdown).await?;
    Ok(())
}

/// Raises the soft limit on open files to the hard limit. Every connection holds a descriptor,
/// and the usual soft limit (1024) is a few hundred idle clients away; the hard limit is the
/// one the operator chose.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open files limit"),
        Err(err) => tracing::warn!(error = %err, "cannot raise the open files limit; keeping it"),
    }
}

fn init_logging(config: &ServerConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&config.log_filter)
        .with_context(|| format!("invalid log filter {:?}", config.log_filter))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// A future that resolves on the first SIGINT or SIGTERM. The handlers are installed here,
/// not when the future is first polled (once the server is serving): until installed, a signal
/// kills the process outright instead of stopping it cleanly.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
