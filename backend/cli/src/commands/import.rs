//! `stigmer import -f FILE`: exported resources written back with their ids, in chunks of one
//! transaction each.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::{Ctx, finish};
use crate::{manifest, progress};

#[derive(Args)]
pub struct ImportArgs {
    /// An export file, a directory of them, or - for stdin. Repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required = true
    )]
    files: Vec<PathBuf>,
}

pub async fn run(ctx: &Ctx, args: ImportArgs) -> Result<ExitCode> {
    let documents = manifest::read_all(&args.files)?;
    let mut resources = Vec::new();
    let mut failed = 0;
    for document in &documents {
        match document
            .value
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|v| manifest::check_shape(v).map(|()| v))
        {
            Ok(value) => resources.push(value.clone()),
            Err(err) => {
                failed += 1;
                eprintln!("error: {}: {err}", document.location());
            }
        }
    }
    if failed > 0 {
        bail!(
            "nothing imported: {failed} of {} documents are not resources",
            documents.len()
        );
    }
    let client = ctx.client().await?;
    let result = async {
        let bar = progress::bar(resources.len(), "importing");
        let mut summary = stigmer_client::ImportSummary::default();
        for chunk in resources.chunks(progress::IMPORT_CHUNK) {
            let done = client.import(chunk).await.context("cannot import");
            let done = match done {
                Ok(done) => done,
                Err(err) => {
                    bar.abandon();
                    return Err(err);
                }
            };
            summary.created += done.created;
            summary.updated += done.updated;
            summary.unchanged += done.unchanged;
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        println!(
            "imported {} resources: {} created, {} updated, {} unchanged",
            resources.len(),
            summary.created,
            summary.updated,
            summary.unchanged
        );
        Ok(ExitCode::SUCCESS)
    }
    .await;
    finish(client, result).await
}
