//! `stigmer watch [KIND]`: changes as they happen, until Ctrl-C or the server ends the watch.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use stigmer_client::ClientError;
use tokio_stream::StreamExt;

use super::Ctx;
use crate::output::{self, Format};

#[derive(Args)]
pub struct WatchArgs {
    /// Only this kind; every kind when omitted.
    kind: Option<String>,
    /// Start after this revision; 0 (default) shows the current state first.
    #[arg(long, value_name = "REV", default_value_t = 0)]
    since: i64,
    /// Output: text lines, or one JSON event per line.
    #[arg(
        short,
        long,
        value_parser = Format::offered(&[Format::Text, Format::Json]),
        default_value = "text"
    )]
    output: Format,
}

pub async fn run(ctx: &Ctx, args: WatchArgs) -> Result<ExitCode> {
    let client = ctx.client().await?;
    let mut stream = client
        .watch(args.kind.as_deref(), args.since)
        .await
        .context("cannot watch")?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            event = stream.next() => match event {
                None => return Ok(ExitCode::SUCCESS),
                Some(Err(status)) => {
                    return Err(anyhow::Error::new(ClientError::Status(status)))
                        .context("the watch ended");
                }
                Some(Ok(event)) => match args.output {
                    Format::Json => println!("{event}"),
                    // Text is all else `-o` offers here.
                    Format::Text | Format::Table | Format::Yaml => {
                        println!("{}", output::event_line(&event))
                    }
                },
            },
        }
    }
}
