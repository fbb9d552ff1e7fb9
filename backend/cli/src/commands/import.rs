//! `stigmer import [-f FILE]` (stdin without `-f`): exported resources written back with their
//! ids, in chunks of one transaction each. A failed chunk leaves the chunks before it in place,
//! so a failure says how far the import got and how to finish it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;
use serde_json::Value;
use stigmer_client::ImportSummary;

use super::{Ctx, finish};
use crate::{manifest, progress};

#[derive(Args)]
pub struct ImportArgs {
    /// An export file, a directory of them, or - for stdin (the default). Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    files: Vec<PathBuf>,
}

pub async fn run(ctx: &Ctx, args: ImportArgs) -> Result<ExitCode> {
    let (resources, locations) = read_resources(&args.files)?;
    let client = ctx.client().await?;
    let result = async {
        let bar = progress::bar(resources.len(), "importing");
        let mut summary = ImportSummary::default();
        let mut imported = 0;
        for (chunk, chunk_locations) in resources
            .chunks(progress::IMPORT_CHUNK)
            .zip(locations.chunks(progress::IMPORT_CHUNK))
        {
            let done = match client.import(chunk).await {
                Ok(done) => done,
                Err(err) => {
                    bar.abandon();
                    print_summary(imported, &summary);
                    let first = Unimported {
                        resource: &chunk[0],
                        location: &chunk_locations[0],
                    };
                    return Err(anyhow::Error::new(err).context(stopped_at(
                        imported,
                        resources.len(),
                        &first,
                    )));
                }
            };
            imported += chunk.len();
            summary.created += done.created;
            summary.updated += done.updated;
            summary.unchanged += done.unchanged;
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        print_summary(imported, &summary);
        Ok(ExitCode::SUCCESS)
    }
    .await;
    finish(client, result).await
}

/// The documents of `files` (stdin when none), each checked to be a resource before anything
/// is written, and where each is (file and document).
fn read_resources(files: &[PathBuf]) -> Result<(Vec<Value>, Vec<String>)> {
    let stdin = [PathBuf::from("-")];
    let files = if files.is_empty() {
        if std::io::stdin().is_terminal() {
            bail!("import reads an export from stdin: `stigmer import < backup.yaml`, or -f FILE");
        }
        &stdin[..]
    } else {
        files
    };
    let documents = manifest::read_all(files)?;
    let mut resources = Vec::new();
    let mut locations = Vec::new();
    let mut failed = 0;
    for document in &documents {
        match document
            .value
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|v| manifest::check_shape(v).map(|()| v))
        {
            Ok(value) => {
                resources.push(value.clone());
                locations.push(document.location());
            }
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
    Ok((resources, locations))
}

fn print_summary(imported: usize, summary: &ImportSummary) {
    println!(
        "imported {imported} resources: {} created, {} updated, {} unchanged",
        summary.created, summary.updated, summary.unchanged
    );
}

/// The first resource a failed import did not write.
struct Unimported<'a> {
    resource: &'a Value,
    location: &'a str,
}

/// Where a failed import stopped: what is in, the first resource that is not, and how to go
/// on. Every resource of the failed chunk is out: a chunk is one transaction.
fn stopped_at(imported: usize, total: usize, first: &Unimported) -> String {
    let kind = first.resource["kind"].as_str().unwrap_or("resource");
    let metadata = &first.resource["metadata"];
    let name = metadata["slug"]
        .as_str()
        .or_else(|| metadata["name"].as_str())
        .unwrap_or("?");
    let id = metadata["id"].as_str().unwrap_or("no id");
    format!(
        "the import stopped after {imported} of {total} resources: {kind}/{name} ({id}, {}) \
         and the {} after it were not imported; fix the cause and run the same import again: \
         it is idempotent, and the {imported} already imported come back unchanged",
        first.location,
        total - imported - 1
    )
}
