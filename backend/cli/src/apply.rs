//! `stigmer apply`: every document in the order given, skills pushed from their folders.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use serde_json::Value;
use stigmer_client::{Client, ClientError, SKILL_MD};

use crate::manifest::{self, Document};
use crate::skill;
use crate::{ApplyArgs, Ctx, finish, reference, server_message};

/// Every document of every `-f` argument, in order; a folder with SKILL.md is one Skill.
pub fn read_documents(args: &[PathBuf]) -> Result<Vec<Document>> {
    let mut documents = Vec::new();
    for arg in args {
        if arg.is_dir() && arg.join(SKILL_MD).is_file() {
            documents.push(skill::folder_document(arg));
        } else {
            documents.extend(manifest::read_all(std::slice::from_ref(arg))?);
        }
    }
    Ok(documents)
}

pub async fn run(ctx: &Ctx, args: ApplyArgs) -> Result<ExitCode> {
    let documents = read_documents(&args.files)?;
    if documents.is_empty() {
        bail!("no manifests found in the files given");
    }
    let client = if args.dry_run {
        // Checking shapes needs no server.
        ctx.connect(&ctx.config()?).await?
    } else {
        ctx.client().await?
    };
    let mut failed = 0;
    for document in &documents {
        match apply_document(&client, document, args.dry_run).await {
            Ok(line) => println!("{line}"),
            Err(err) => {
                failed += 1;
                eprintln!("error: {}: {err}", document.location());
            }
        }
    }
    if failed > 0 {
        eprintln!(
            "error: {failed} of {} documents failed{}",
            documents.len(),
            if args.dry_run { " the check" } else { "" }
        );
        return finish(client, Ok(ExitCode::FAILURE)).await;
    }
    finish(client, Ok(ExitCode::SUCCESS)).await
}

async fn apply_document(
    client: &Client,
    document: &Document,
    dry_run: bool,
) -> Result<String, String> {
    let value = document.value.as_ref().map_err(Clone::clone)?;
    manifest::check_shape(value)?;
    match skill::source_of(document) {
        Some(source) => skill::apply(client, &source?, dry_run)
            .await
            .map_err(|err| match err.downcast_ref::<ClientError>() {
                Some(err) => server_message(err),
                None => format!("{err:#}"),
            }),
        None => apply_manifest(client, value, dry_run).await,
    }
}

async fn apply_manifest(client: &Client, value: &Value, dry_run: bool) -> Result<String, String> {
    let kind = value["kind"].as_str().unwrap_or_default();
    if dry_run {
        client.parse_manifest(value).map_err(|e| e.to_string())?;
        let slug = manifest::manifest_slug(value);
        let mut shown = value.clone();
        shown["metadata"]["slug"] = Value::String(slug);
        return Ok(format!(
            "{} valid (dry run)",
            reference(client, kind, &shown, "<unnamed>")
        ));
    }
    let applied = client.apply(value).await.map_err(|e| server_message(&e))?;
    Ok(format!(
        "{} {}",
        reference(client, kind, &applied.resource, "<unnamed>"),
        applied.outcome
    ))
}
