//! `stigmer context set --org ORG`: the org later commands work in.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Subcommand;

use super::Ctx;

#[derive(Subcommand)]
pub enum ContextCommand {
    /// Work in this organization (sent as x-stigmer-org); needed when your key holds roles
    /// in several.
    Set {
        #[arg(long)]
        org: String,
    },
}

pub fn run(ctx: &Ctx, command: ContextCommand) -> Result<ExitCode> {
    match command {
        ContextCommand::Set { org } => set(ctx, org),
    }
}

fn set(ctx: &Ctx, org: String) -> Result<ExitCode> {
    if !stigmer_client::is_valid_slug(&org) {
        bail!("--org {org:?} is not an org slug: 1-63 lowercase letters, digits or '-'");
    }
    let mut config = ctx.stored_config()?;
    let Some(cloud) = config.backend.cloud.as_mut() else {
        bail!("no cloud backend to set the org of: run `stigmer login` first");
    };
    cloud.org_id = org.clone();
    ctx.save(&config)?;
    println!("working in org {org}");
    Ok(ExitCode::SUCCESS)
}
