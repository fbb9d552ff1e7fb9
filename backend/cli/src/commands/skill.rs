//! `stigmer skill push DIR`: a folder with SKILL.md zipped and pushed as the skill's newest
//! version.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use stigmer_client::Client;

use super::{Ctx, finish};
use crate::skill::{self, SkillSource};

#[derive(Subcommand)]
pub enum SkillCommand {
    /// Zip a folder with SKILL.md and push it as the skill's newest version; prints its name,
    /// tag and sha256. The same files give the same archive: pushing them again is a no-op.
    Push(PushArgs),
}

#[derive(Args)]
pub struct PushArgs {
    /// The folder: SKILL.md at its top, with the scripts and references it uses beside it.
    dir: PathBuf,
    /// The skill's name; default: `name` in SKILL.md's front matter, else the folder's name.
    #[arg(long)]
    name: Option<String>,
    /// The version tag; default: `version` (or `metadata.version`) in SKILL.md's front
    /// matter, else none.
    #[arg(long)]
    tag: Option<String>,
}

pub async fn run(ctx: &Ctx, command: SkillCommand) -> Result<ExitCode> {
    let SkillCommand::Push(args) = command;
    let client = ctx.client().await?;
    let pushed = push(&client, args).await;
    let line = finish(client, pushed).await?;
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}

/// Returns the line to print.
async fn push(client: &Client, args: PushArgs) -> Result<String> {
    let source = SkillSource::new(args.dir, args.name, args.tag).map_err(anyhow::Error::msg)?;
    skill::apply(client, &source, false)
        .await
        .with_context(|| format!("cannot push skill {:?}", source.name))
}
