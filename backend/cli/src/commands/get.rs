//! `stigmer get KIND [NAME]`: one resource, or the kind's list without a name.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::{Ctx, finish, list};
use crate::output::{self, Format, OutputArgs};
use crate::skill;

#[derive(Args)]
pub struct GetArgs {
    /// The kind: agent, agents, Agent, or an id prefix such as agt.
    // Explicit indexes: `command()` replaces the kind argument, which moves it last.
    #[arg(index = 1)]
    kind: String,
    /// A name, slug or id; without it, every resource of the kind.
    #[arg(index = 2)]
    name: Option<String>,
    #[command(flatten)]
    format: OutputArgs,
    /// Only resources whose labels match (`tier=web,env in (a,b),!legacy`), when listing.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    selector: Option<String>,
}

pub async fn run(ctx: &Ctx, args: GetArgs) -> Result<ExitCode> {
    let format = args.format.output;
    let Some(name) = args.name else {
        return list::list(ctx, &args.kind, args.selector.as_deref(), format).await;
    };
    let kind = args.kind;
    let client = ctx.client().await?;
    let result = async {
        let kind_name = client.kind(&kind)?.name.to_lowercase();
        let resource = client
            .get(&kind, &name)
            .await
            .with_context(|| format!("cannot get {kind_name} {name:?}"))?;
        output::print_one(&resource, format)?;
        if format == Format::Table && kind_name == "skill" {
            skill::print_versions(&client, &resource).await?;
        }
        Ok(ExitCode::SUCCESS)
    }
    .await;
    finish(client, result).await
}
