//! `stigmer find QUERY`: resources of every kind whose name, slug or labels (with --text, any
//! text) contain QUERY.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::Value;

use super::{Ctx, finish};
use crate::output::{self, Format, OutputArgs, scalar};

#[derive(Args)]
pub struct FindArgs {
    /// What to look for: 2 to 256 characters, matched as plain text, ignoring case.
    query: String,
    /// Only this kind (agent, agents, Agent, or an id prefix such as agt); repeatable.
    #[arg(short, long = "kind", value_name = "KIND")]
    kinds: Vec<String>,
    /// Also match anywhere in the resources' JSON (field names and values; never secrets).
    #[arg(long)]
    text: bool,
    /// At most this many results.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[command(flatten)]
    format: OutputArgs,
}

pub async fn run(ctx: &Ctx, args: FindArgs) -> Result<ExitCode> {
    let client = ctx.client().await?;
    let result = async {
        let found = client
            .find(&args.query, &args.kinds, args.text, args.limit)
            .await
            .with_context(|| format!("cannot search for {:?}", args.query))?;
        match args.format.output {
            Format::Table | Format::Text if found.is_empty() => eprintln!("nothing found"),
            Format::Table | Format::Text => print!("{}", table(&found)),
            format => {
                let resources: Vec<Value> =
                    found.iter().map(|item| item["resource"].clone()).collect();
                output::print_many(&resources, format)?;
            }
        }
        Ok(ExitCode::SUCCESS)
    }
    .await;
    finish(client, result).await
}

/// KIND, NAME, ID and what matched (`NAME`, `SLUG`, `LABEL`, `TEXT`).
fn table(found: &[Value]) -> String {
    let mut rows = vec![["KIND", "NAME", "ID", "MATCHED"].map(String::from).to_vec()];
    for item in found {
        let matched = scalar(&item["matched"]);
        rows.push(vec![
            scalar(&item["kind"]).to_lowercase(),
            scalar(&item["name"]),
            scalar(&item["id"]),
            matched
                .strip_prefix("MATCHED_FIELD_")
                .unwrap_or(&matched)
                .to_lowercase(),
        ]);
    }
    output::align(&rows)
}
