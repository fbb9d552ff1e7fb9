//! `stigmer whoami`: who the configured API key belongs to.

use std::process::ExitCode;

use anyhow::{Context, Result};
use stigmer_client::BackendType;

use super::Ctx;

pub async fn run(ctx: &Ctx) -> Result<ExitCode> {
    let config = ctx.config()?;
    if config.backend.kind == BackendType::Local {
        println!("local backend: every call runs as the local user (org local)");
        return Ok(ExitCode::SUCCESS);
    }
    let client = ctx.connect(&config).await?;
    let account = client.whoami().await.context("cannot tell who you are")?;
    println!("{}", account_label(&account, config.org()));
    Ok(ExitCode::SUCCESS)
}

/// "NAME (ida-…), org ORG" for people.
pub fn account_label(account: &serde_json::Value, org: Option<&str>) -> String {
    let name = account["metadata"]["name"].as_str().unwrap_or("-");
    let id = account["metadata"]["id"].as_str().unwrap_or("-");
    match org {
        Some(org) => format!("{name} ({id}), org {org}"),
        None => format!("{name} ({id})"),
    }
}
