//! `stigmer export [--all | KIND…]`: every resource exactly as stored, ids included, for
//! `import`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::Value;
use stigmer_client::Export;

use super::{Ctx, finish};
use crate::output::Format;
use crate::progress;

#[derive(Args)]
pub struct ExportArgs {
    /// Only these kinds; every kind when omitted.
    kinds: Vec<String>,
    /// Every kind: the same as naming none (the spelling of other Stigmer documents).
    #[arg(long, conflicts_with = "kinds")]
    all: bool,
    /// Output format: YAML documents, or a JSON array.
    #[arg(
        short,
        long,
        value_parser = Format::offered(&[Format::Yaml, Format::Json]),
        default_value = "yaml"
    )]
    output: Format,
    /// Write to this file instead of stdout.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
}

pub async fn run(ctx: &Ctx, args: ExportArgs) -> Result<ExitCode> {
    let client = ctx.client().await?;
    let result = async {
        let spinner = progress::spinner("exporting");
        // --all asks for what no kind asks for: everything.
        let kinds: &[String] = if args.all { &[] } else { &args.kinds };
        let resources = client.export(kinds).await.context("cannot export");
        spinner.finish_and_clear();
        let Export { resources, omitted } = resources?;
        let text = match args.output {
            Format::Json => {
                let mut text = serde_json::to_string_pretty(&Value::Array(resources.clone()))
                    .context("cannot write JSON")?;
                text.push('\n');
                text
            }
            // YAML is all else `-o` offers here.
            Format::Yaml | Format::Table | Format::Text => resources
                .iter()
                .map(|r| serde_yaml_ng::to_string(r).context("cannot write YAML"))
                .collect::<Result<Vec<_>>>()?
                .join("---\n"),
        };
        match &args.file {
            Some(path) => {
                std::fs::write(path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!(
                    "exported {} resources to {}",
                    resources.len(),
                    path.display()
                );
            }
            None => print!("{text}"),
        }
        if omitted.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        for reason in &omitted {
            eprintln!("left out: {reason}");
        }
        eprintln!(
            "error: the export is incomplete: {} resources were too large to export",
            omitted.len()
        );
        Ok(ExitCode::FAILURE)
    }
    .await;
    finish(client, result).await
}
