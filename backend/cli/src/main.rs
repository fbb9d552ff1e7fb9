//! stigmer: the command line over stigmer-client.
#![forbid(unsafe_code)]

mod commands;
mod daemon;
mod lines;
mod manifest;
mod output;
mod progress;
mod project;
mod report;
mod schema;
mod skill;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::builder::{PossibleValue, PossibleValuesParser};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use stigmer_client::{ClientConfig, Operation};

use crate::commands::Ctx;

/// Manage Stigmer resources (agents, skills, MCP servers, workflows, environments, …) on a
/// local or cloud backend.
#[derive(Parser)]
#[command(name = "stigmer", version, propagate_version = true)]
struct Cli {
    /// Show error chains and details.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// The configuration file.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "STIGMER_CONFIG",
        default_value_os_t = default_config_path()
    )]
    config: PathBuf,
    /// The deadline of each call but streams (watch, export, backup): 30s, 2m, 1h, or
    /// seconds; 0 waits without limit. Default: `timeout` in the configuration file, else 30s.
    #[arg(long, global = true, value_name = "DURATION", value_parser = stigmer_client::parse_duration)]
    timeout: Option<Duration>,
    #[command(subcommand)]
    command: Command,
}

fn default_config_path() -> PathBuf {
    ClientConfig::default_path().unwrap_or_else(|_| PathBuf::from(".stigmer/config.yaml"))
}

#[derive(Subcommand)]
enum Command {
    /// Create or update the resources manifests describe, and push skills.
    ///
    /// Each document is applied after the documents it references (skills and environments by
    /// name, parents by id), otherwise in the order given. A folder with SKILL.md, or a
    /// `kind: Skill` manifest whose spec.path names one (relative to the manifest), is pushed
    /// as that skill.
    ///
    /// Server-owned fields (metadata.id, metadata.revision, status) count only when a resource
    /// of that kind and name exists: metadata.revision is then the revision you expect it at,
    /// and a resource changed since fails instead of being overwritten (remove the line to
    /// overwrite it). When none exists they are ignored, so `get -o yaml` output applies after
    /// a delete or on another server.
    ///
    /// Without -f, the project in the working folder (or --project PATH) is applied: its
    /// Stigmer.yaml names the runtime (go, python, typescript) and main, the entry point. main
    /// runs there with STIGMER_OUT_DIR set to the project's .stigmer folder, where a Stigmer
    /// SDK writes one skill-N.pb, agent-N.pb, mcpserver-N.pb or workflow-N.pb per resource and
    /// dependencies.json; those are applied as above, each after what it needs.
    Apply(commands::apply::ApplyArgs),
    /// Show one resource, or list a kind when no name is given.
    Get(commands::get::GetArgs),
    /// List the resources of a kind.
    #[command(visible_alias = "ls")]
    List(commands::list::ListArgs),
    /// Delete a resource by name or id, or the resources manifests name.
    #[command(visible_alias = "rm")]
    Delete(commands::delete::DeleteArgs),
    /// Follow changes as they happen, until Ctrl-C.
    Watch(commands::watch::WatchArgs),
    /// Search every kind (or those given with -k) for resources whose name, slug or labels
    /// contain QUERY, ignoring case; with --text, anywhere in the resource.
    Find(commands::find::FindArgs),
    /// Write every resource (or those of some kinds) exactly as stored, ids included.
    Export(commands::export::ExportArgs),
    /// Write exported resources back, keeping their ids; importing twice changes nothing.
    Import(commands::import::ImportArgs),
    /// Copy the whole database, consistently, while the server serves and writes go on.
    ///
    /// FILE is a SQLite database file, replaced only once the copy is complete and its size
    /// and SHA-256 check out. Restore it with `stigmer-server restore FILE --db PATH`, with
    /// the server stopped. Secrets in it stay sealed: keep the server's master key file (or
    /// STIGMER_MASTER_KEY) with it. The server refuses it on PostgreSQL (use pg_dump) and in
    /// cloud mode to every API key (it holds every org).
    Backup(commands::backup::BackupArgs),
    /// Push skills: folders with SKILL.md.
    Skill {
        #[command(subcommand)]
        command: commands::skill::SkillCommand,
    },
    /// Show or choose the backend (local or cloud).
    Backend {
        #[command(subcommand)]
        command: commands::backend::BackendCommand,
    },
    /// Use a cloud backend: checks the API key with the server (whoAmI), then saves the
    /// endpoint, key and org and switches to cloud mode.
    Login(commands::login::LoginArgs),
    /// Show who the configured API key belongs to.
    Whoami,
    /// Choose what later commands work on.
    Context {
        #[command(subcommand)]
        command: commands::context::ContextCommand,
    },
    /// Forget the cloud token and go back to local mode.
    Logout,
    /// Start, stop or check the local backend daemon (stigmer-server).
    Server {
        #[command(subcommand)]
        command: commands::server::ServerCommand,
    },
    /// Print a shell completion script.
    Completion(commands::completion::CompletionArgs),
}

/// The command line, with each kind argument offering only the kinds its command serves.
fn command() -> clap::Command {
    let kinds = |operation| {
        move |arg: clap::Arg| match stigmer_client::kinds_for(operation) {
            Ok(kinds) => arg
                .ignore_case(true)
                .value_parser(PossibleValuesParser::new(
                    kinds
                        .into_iter()
                        .map(|k| PossibleValue::new(k.name).aliases([k.plural, k.id_prefix])),
                )),
            // The catalog is built from descriptors compiled in; the server would fail too.
            Err(_) => arg,
        }
    };
    Cli::command()
        .mut_subcommand("get", |c| c.mut_arg("kind", kinds(Operation::Get)))
        .mut_subcommand("list", |c| c.mut_arg("kind", kinds(Operation::List)))
        .mut_subcommand("delete", |c| c.mut_arg("kind", kinds(Operation::Delete)))
        .mut_subcommand("watch", |c| c.mut_arg("kind", kinds(Operation::Watch)))
        .mut_subcommand("export", |c| c.mut_arg("kinds", kinds(Operation::Watch)))
}

fn main() -> ExitCode {
    // A closed stdout (`stigmer get agents | head -1`) ends the process quietly, as it does
    // every Unix tool, instead of a panic on the failed write.
    sigpipe::reset();
    let cli = Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|err| err.exit());
    let verbose = cli.verbose;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            report::report(&err, verbose);
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let ctx = Ctx {
        config_path: cli.config,
        timeout: cli.timeout,
    };
    match cli.command {
        Command::Apply(args) => commands::apply::run(&ctx, args).await,
        Command::Get(args) => commands::get::run(&ctx, args).await,
        Command::List(args) => commands::list::run(&ctx, args).await,
        Command::Delete(args) => commands::delete::run(&ctx, args).await,
        Command::Watch(args) => commands::watch::run(&ctx, args).await,
        Command::Find(args) => commands::find::run(&ctx, args).await,
        Command::Export(args) => commands::export::run(&ctx, args).await,
        Command::Import(args) => commands::import::run(&ctx, args).await,
        Command::Backup(args) => commands::backup::run(&ctx, args).await,
        Command::Skill { command } => commands::skill::run(&ctx, command).await,
        Command::Backend { command } => commands::backend::run(&ctx, command).await,
        Command::Login(args) => commands::login::run(&ctx, args).await,
        Command::Whoami => commands::whoami::run(&ctx).await,
        Command::Context { command } => commands::context::run(&ctx, command),
        Command::Logout => commands::logout::run(&ctx),
        Command::Server { command } => commands::server::run(&ctx, command).await,
        Command::Completion(args) => commands::completion::run(args),
    }
}

#[cfg(test)]
mod tests {
    /// clap checks a command line only when it parses one; this checks the one `command()`
    /// builds (the kind arguments it replaces keep their positions).
    #[test]
    fn the_command_line_is_consistent() {
        super::command().debug_assert();
    }

    /// One `Format` serves every `-o`; each command accepts only the formats it prints.
    #[test]
    fn each_command_offers_only_the_formats_it_prints() {
        for (line, accepted) in [
            ("get agent -o yaml", true),
            ("get agent -o text", false),
            ("list agent -o table", true),
            ("list agent -o text", false),
            ("watch -o text", true),
            ("watch -o yaml", false),
            ("export -o json", true),
            ("export -o table", false),
        ] {
            let args = std::iter::once("stigmer").chain(line.split(' '));
            let parsed = super::command().try_get_matches_from(args);
            assert_eq!(parsed.is_ok(), accepted, "{line}");
        }
    }
}
