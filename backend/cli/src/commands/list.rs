//! `stigmer list KIND`: the resources of a kind, optionally only those a label selector
//! matches.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use stigmer_client::Operation;

use super::{Ctx, finish};
use crate::output::{self, Format, OutputArgs};

#[derive(Args)]
pub struct ListArgs {
    /// The kind: agent, agents, Agent, or an id prefix such as agt.
    kind: String,
    /// Only resources whose labels match (`tier=web,env in (a,b),!legacy`).
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    selector: Option<String>,
    #[command(flatten)]
    format: OutputArgs,
}

pub async fn run(ctx: &Ctx, args: ListArgs) -> Result<ExitCode> {
    list(
        ctx,
        &args.kind,
        args.selector.as_deref(),
        args.format.output,
    )
    .await
}

/// Also `stigmer get KIND` without a name.
pub async fn list(
    ctx: &Ctx,
    kind: &str,
    selector: Option<&str>,
    format: Format,
) -> Result<ExitCode> {
    let client = ctx.client().await?;
    let result = async {
        // A kind without a list says so and what works instead, with no "cannot list" before.
        let kind_name = client.kind_for(kind, Operation::List)?.name.to_lowercase();
        let items = client
            .list(kind, selector.unwrap_or_default())
            .await
            .with_context(|| format!("cannot list {kind_name}s"))?;
        output::print_many(&items, format)?;
        Ok(ExitCode::SUCCESS)
    }
    .await;
    finish(client, result).await
}
