//! `stigmer delete KIND NAME`, or `-f` for what manifests name (skill folders included).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::{Ctx, apply, finish, server_message};
use crate::output::reference;
use crate::{manifest, skill};

#[derive(Args)]
pub struct DeleteArgs {
    /// The kind (with NAME), e.g. agent.
    #[arg(index = 1, required_unless_present = "files", conflicts_with = "files")]
    kind: Option<String>,
    /// A name, slug or id.
    #[arg(index = 2, required_unless_present = "files")]
    name: Option<String>,
    /// Delete what these manifests name (files, directories or -). Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    files: Vec<PathBuf>,
}

pub async fn run(ctx: &Ctx, args: DeleteArgs) -> Result<ExitCode> {
    if args.files.is_empty() {
        let (Some(kind), Some(name)) = (args.kind, args.name) else {
            bail!("say what to delete: `stigmer delete KIND NAME` or `stigmer delete -f FILE`");
        };
        let client = ctx.client().await?;
        let result = async {
            let kind_name = client.kind(&kind)?.name.to_lowercase();
            let deleted = client
                .delete(&kind, &name)
                .await
                .with_context(|| format!("cannot delete {kind_name} {name:?}"))?;
            println!("{} deleted", reference(&client, &kind, &deleted, &name));
            Ok(ExitCode::SUCCESS)
        }
        .await;
        return finish(client, result).await;
    }
    let documents = apply::read_documents(&args.files)?;
    let client = ctx.client().await?;
    let mut failed = 0;
    for document in &documents {
        let result = async {
            let value = document.value.as_ref().map_err(Clone::clone)?;
            manifest::check_shape(value)?;
            let kind = value["kind"].as_str().unwrap_or_default();
            client.kind(kind).map_err(|e| e.to_string())?;
            let id = value["metadata"]["id"].as_str().filter(|s| !s.is_empty());
            let name = match (id, skill::source_of(document)) {
                (Some(id), _) => id.to_string(),
                (None, Some(source)) => source?.slug(),
                (None, None) => manifest::manifest_slug(value),
            };
            if name.is_empty() {
                return Err("metadata: needs a name, slug or id to delete".to_string());
            }
            let deleted = client
                .delete(kind, &name)
                .await
                .map_err(|e| server_message(&e))?;
            Ok(format!(
                "{} deleted",
                reference(&client, kind, &deleted, &name)
            ))
        }
        .await;
        match result {
            Ok(line) => println!("{line}"),
            Err(err) => {
                failed += 1;
                eprintln!("error: {}: {err}", document.location());
            }
        }
    }
    let code = if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    };
    finish(client, Ok(code)).await
}
