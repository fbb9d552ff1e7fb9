//! `stigmer logout`: the cloud token forgotten, back to local mode.

use std::process::ExitCode;

use anyhow::Result;
use stigmer_client::BackendType;

use super::Ctx;

pub fn run(ctx: &Ctx) -> Result<ExitCode> {
    let mut config = ctx.stored_config()?;
    if let Some(cloud) = config.backend.cloud.as_mut() {
        cloud.token.clear();
    }
    config.backend.kind = BackendType::Local;
    ctx.save(&config)?;
    println!("logged out; backend set to local");
    Ok(ExitCode::SUCCESS)
}
