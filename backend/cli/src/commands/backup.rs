//! `stigmer backup FILE`: a consistent copy of the whole database, taken while the server
//! serves.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::{Ctx, finish};
use crate::progress;

#[derive(Args)]
pub struct BackupArgs {
    /// Where to write the backup.
    file: PathBuf,
}

pub async fn run(ctx: &Ctx, args: BackupArgs) -> Result<ExitCode> {
    let client = ctx.client().await?;
    let result = async {
        let spinner = progress::spinner("backing up");
        let backup = client.backup(&args.file).await.context("cannot back up");
        spinner.finish_and_clear();
        let backup = backup?;
        println!(
            "backed up the database at revision {} to {}: {} bytes, schema version {}, sha256 {}",
            backup.revision,
            backup.path.display(),
            backup.size,
            backup.schema_version,
            backup.sha256
        );
        if !backup.master_key_id.is_empty() {
            println!(
                "its secrets are sealed under master key {}: keep the server's master key with it (the key file beside its database, stigmer.key for stigmer.db, or STIGMER_MASTER_KEY)",
                backup.master_key_id
            );
        }
        println!(
            "restore it with the server stopped: stigmer-server restore {} --db PATH",
            backup.path.display()
        );
        Ok(ExitCode::SUCCESS)
    }
    .await;
    finish(client, result).await
}
