//! `stigmer completion SHELL`: a completion script for the command line `command()` builds,
//! kinds included.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct CompletionArgs {
    /// The shell to complete for.
    shell: clap_complete::Shell,
}

pub fn run(args: CompletionArgs) -> Result<ExitCode> {
    clap_complete::generate(
        args.shell,
        &mut crate::command(),
        "stigmer",
        &mut std::io::stdout(),
    );
    Ok(ExitCode::SUCCESS)
}
