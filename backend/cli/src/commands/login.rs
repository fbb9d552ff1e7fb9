//! `stigmer login`: the API key checked with the server (whoAmI) before the endpoint, key and
//! org are saved and cloud mode is on.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use stigmer_client::{BackendType, CloudConfig};

use super::Ctx;
use super::whoami::account_label;

#[derive(Args)]
pub struct LoginArgs {
    /// The cloud endpoint, HOST:PORT or a URL.
    #[arg(long)]
    endpoint: String,
    /// Read the API key from the first line of standard input (`stigmer login … --token-stdin
    /// < key.txt`), so that it shows in no process list or shell history.
    #[arg(long, conflicts_with = "token")]
    token_stdin: bool,
    /// The API key. Prefer --token-stdin or STIGMER_TOKEN: a flag's value shows in process
    /// lists.
    #[arg(
        long,
        env = "STIGMER_TOKEN",
        hide_env_values = true,
        required_unless_present = "token_stdin"
    )]
    token: Option<String>,
    /// The organization to work in; without it, the server picks the only one the key has
    /// a role in.
    #[arg(long)]
    org: Option<String>,
    /// PEM file of a private certificate authority that signed the server's certificate.
    #[arg(long, env = "STIGMER_CA_FILE")]
    ca_file: Option<PathBuf>,
}

pub async fn run(ctx: &Ctx, args: LoginArgs) -> Result<ExitCode> {
    if args.endpoint.trim().is_empty() {
        bail!("cannot log in: --endpoint is empty");
    }
    let token = match (args.token_stdin, args.token) {
        (true, _) => token_from_stdin()?,
        (false, Some(token)) => token,
        (false, None) => bail!("cannot log in: give the API key with --token-stdin"),
    };
    let mut config = ctx.stored_config()?;
    config.backend.kind = BackendType::Cloud;
    config.backend.cloud = Some(CloudConfig {
        endpoint: args.endpoint.trim().to_string(),
        token,
        org_id: args.org.unwrap_or_default(),
        ca_file: match args.ca_file {
            Some(path) => std::path::absolute(&path)
                .with_context(|| format!("the CA file {}", path.display()))?
                .display()
                .to_string(),
            None => String::new(),
        },
    });
    // Nothing is saved until the server has accepted the key.
    let client = ctx.connect(&config).await?;
    let account = client
        .whoami()
        .await
        .context("cannot log in: the server did not accept the API key")?;
    ctx.save(&config)?;
    println!(
        "logged in to {} as {}; backend set to cloud",
        args.endpoint.trim(),
        account_label(&account, config.org())
    );
    Ok(ExitCode::SUCCESS)
}

/// The first line of standard input, trimmed; an empty one is refused.
fn token_from_stdin() -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the API key from standard input")?;
    let token = line.trim();
    if token.is_empty() {
        bail!("cannot log in: --token-stdin read no API key (standard input was empty)");
    }
    Ok(token.to_string())
}
