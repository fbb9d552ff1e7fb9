//! stigmer: the command line over stigmer-client.
#![forbid(unsafe_code)]

mod apply;
mod daemon;
mod lines;
mod manifest;
mod output;
mod progress;
mod schema;
mod skill;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::builder::{PossibleValue, PossibleValuesParser};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use serde_json::Value;
use stigmer_client::{
    BackendType, Client, ClientConfig, ClientError, CloudConfig, Export, Operation,
};
use tokio_stream::StreamExt;

use crate::output::Format;

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
    Apply(ApplyArgs),
    /// Show one resource, or list a kind when no name is given.
    Get(GetArgs),
    /// List the resources of a kind.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Delete a resource by name or id, or the resources manifests name.
    #[command(visible_alias = "rm")]
    Delete(DeleteArgs),
    /// Follow changes as they happen, until Ctrl-C.
    Watch(WatchArgs),
    /// Write every resource (or those of some kinds) exactly as stored, ids included.
    Export(ExportArgs),
    /// Write exported resources back, keeping their ids; importing twice changes nothing.
    Import(ImportArgs),
    /// Copy the whole database, consistently, while the server serves and writes go on.
    ///
    /// FILE is a SQLite database file, replaced only once the copy is complete and its size
    /// and SHA-256 check out. Restore it with `stigmer-server restore FILE --db PATH`, with
    /// the server stopped. Secrets in it stay sealed: keep the server's master key file (or
    /// STIGMER_MASTER_KEY) with it. The server refuses it on PostgreSQL (use pg_dump) and in
    /// cloud mode to every API key (it holds every org).
    Backup(BackupArgs),
    /// Push skills: folders with SKILL.md.
    Skill {
        #[command(subcommand)]
        command: SkillCommand,
    },
    /// Show or choose the backend (local or cloud).
    Backend {
        #[command(subcommand)]
        command: BackendCommand,
    },
    /// Use a cloud backend: checks the API key with the server (whoAmI), then saves the
    /// endpoint, key and org and switches to cloud mode.
    Login(LoginArgs),
    /// Show who the configured API key belongs to.
    Whoami,
    /// Choose what later commands work on.
    Context {
        #[command(subcommand)]
        command: ContextCommand,
    },
    /// Forget the cloud token and go back to local mode.
    Logout,
    /// Start, stop or check the local backend daemon (stigmer-server).
    Server {
        #[command(subcommand)]
        command: ServerCommand,
    },
    /// Print a shell completion script.
    Completion {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum ContextCommand {
    /// Work in this organization (sent as x-stigmer-org); needed when your key holds roles
    /// in several.
    Set {
        #[arg(long)]
        org: String,
    },
}

#[derive(Subcommand)]
enum SkillCommand {
    /// Zip a folder with SKILL.md and push it as the skill's newest version; prints its name,
    /// tag and sha256. The same files give the same archive: pushing them again is a no-op.
    Push(skill::PushArgs),
}

#[derive(Args)]
struct ApplyArgs {
    /// A manifest file, a directory of *.yaml/*.yml/*.json files, a skill folder (with
    /// SKILL.md), or - for stdin. Repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required = true
    )]
    files: Vec<PathBuf>,
    /// Parse and check every document without writing anything.
    #[arg(long)]
    dry_run: bool,
    /// Apply every document or none, in one transaction (ResourceService/applyBatch): for a
    /// set that only makes sense whole. Skills are pushed on their own, not in the batch.
    #[arg(long)]
    atomic: bool,
}

#[derive(Args)]
struct GetArgs {
    /// The kind: agent, agents, Agent, or an id prefix such as agt.
    // Explicit indexes: `command()` replaces the kind argument, which moves it last.
    #[arg(index = 1)]
    kind: String,
    /// A name, slug or id; without it, every resource of the kind.
    #[arg(index = 2)]
    name: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// Only resources whose labels match (`tier=web,env in (a,b),!legacy`), when listing.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    selector: Option<String>,
}

#[derive(Args)]
struct ListArgs {
    /// The kind: agent, agents, Agent, or an id prefix such as agt.
    kind: String,
    /// Only resources whose labels match (`tier=web,env in (a,b),!legacy`).
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    selector: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

#[derive(Args)]
struct DeleteArgs {
    /// The kind (with NAME), e.g. agent.
    #[arg(index = 1, required_unless_present = "files", conflicts_with = "files")]
    kind: Option<String>,
    /// A name, slug or id.
    #[arg(index = 2, required_unless_present = "files")]
    name: Option<String>,
    /// Delete what these manifests name (files, directories or -). Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    files: Vec<PathBuf>,
}

#[derive(Args)]
struct WatchArgs {
    /// Only this kind; every kind when omitted.
    kind: Option<String>,
    /// Start after this revision; 0 (default) shows the current state first.
    #[arg(long, value_name = "REV", default_value_t = 0)]
    since: i64,
    /// Output: text lines, or one JSON event per line.
    #[arg(short, long, value_enum, default_value_t = WatchFormat::Text)]
    output: WatchFormat,
}

#[derive(Args)]
struct ExportArgs {
    /// Only these kinds; every kind when omitted.
    kinds: Vec<String>,
    /// Output format: YAML documents, or a JSON array.
    #[arg(short, long, value_enum, default_value_t = ExportFormat::Yaml)]
    output: ExportFormat,
    /// Write to this file instead of stdout.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    Yaml,
    Json,
}

#[derive(Args)]
struct ImportArgs {
    /// An export file, a directory of them, or - for stdin. Repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required = true
    )]
    files: Vec<PathBuf>,
}

#[derive(Args)]
struct BackupArgs {
    /// Where to write the backup.
    file: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum WatchFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum BackendCommand {
    /// Mode, endpoint, reachability, server version, revision and counts.
    Status,
    /// Switch between the local daemon and the cloud backend.
    Set {
        #[arg(value_enum)]
        mode: Mode,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Local,
    Cloud,
}

#[derive(Args)]
struct LoginArgs {
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

#[derive(Subcommand)]
enum ServerCommand {
    /// Start the local daemon in the background (no-op if it answers already).
    Start,
    /// Stop the local daemon (SIGTERM, then wait until it is gone).
    Stop,
    /// Whether the local daemon runs, with its pid and endpoint.
    Status,
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
            report(&err, verbose);
            ExitCode::FAILURE
        }
    }
}

/// `error: what failed: why`, with a hint for connection failures; -v adds the chain.
fn report(err: &anyhow::Error, verbose: bool) {
    // The chain down to the client's error: its own sources repeat it in gRPC's words.
    let mut parts = Vec::new();
    for cause in err.chain() {
        parts.push(cause.to_string());
        if cause.downcast_ref::<ClientError>().is_some() {
            break;
        }
    }
    eprintln!("error: {}{}", parts.join(": "), hint(err));
    if verbose {
        for (depth, cause) in err.chain().enumerate().skip(1) {
            eprintln!("  {depth}: {cause}");
        }
        if let Some(ClientError::Status(status)) = client_error(err) {
            eprintln!("  code: {:?}", status.code());
            if !status.details().is_empty() {
                eprintln!(
                    "  details: {} bytes of google.rpc details",
                    status.details().len()
                );
            }
        }
    }
}

fn client_error(err: &anyhow::Error) -> Option<&ClientError> {
    err.chain().find_map(|e| e.downcast_ref::<ClientError>())
}

/// Where the failed command was talking to: (cloud mode, endpoint), for hints.
static TALKING_TO: std::sync::OnceLock<(bool, String)> = std::sync::OnceLock::new();

fn hint(err: &anyhow::Error) -> String {
    let (cloud, endpoint) = TALKING_TO.get().cloned().unwrap_or((false, String::new()));
    let unreachable = match client_error(err) {
        Some(ClientError::Connect { .. }) => true,
        Some(ClientError::Status(status)) => match status.code() {
            tonic::Code::Unavailable => true,
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                return " (check the token: `stigmer login --endpoint E --token T --org O`)".into();
            }
            _ => false,
        },
        _ => false,
    };
    match (unreachable, cloud) {
        (false, _) => String::new(),
        (true, false) => {
            format!(" (cannot reach {endpoint}: is the server running? try `stigmer server start`)")
        }
        (true, true) => format!(
            " (cannot reach the cloud backend {endpoint}: check it with `stigmer backend status`)"
        ),
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let ctx = Ctx {
        config_path: cli.config,
    };
    match cli.command {
        Command::Apply(args) => apply::run(&ctx, args).await,
        Command::Get(args) => match args.name {
            Some(name) => get(&ctx, &args.kind, &name, args.output).await,
            None => list(&ctx, &args.kind, args.selector.as_deref(), args.output).await,
        },
        Command::List(args) => list(&ctx, &args.kind, args.selector.as_deref(), args.output).await,
        Command::Delete(args) => delete(&ctx, args).await,
        Command::Watch(args) => watch(&ctx, args).await,
        Command::Export(args) => export(&ctx, args).await,
        Command::Import(args) => import(&ctx, args).await,
        Command::Backup(args) => backup(&ctx, args).await,
        Command::Skill {
            command: SkillCommand::Push(args),
        } => {
            let client = ctx.client().await?;
            let pushed = skill::push(&client, args).await;
            let line = finish(client, pushed).await?;
            println!("{line}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Backend { command } => match command {
            BackendCommand::Status => backend_status(&ctx).await,
            BackendCommand::Set { mode } => backend_set(&ctx, mode),
        },
        Command::Login(args) => login(&ctx, args).await,
        Command::Whoami => whoami(&ctx).await,
        Command::Context {
            command: ContextCommand::Set { org },
        } => context_set(&ctx, org),
        Command::Logout => logout(&ctx),
        Command::Server { command } => server(&ctx, command).await,
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut command(), "stigmer", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}

struct Ctx {
    config_path: PathBuf,
}

impl Ctx {
    /// The configuration with environment overrides, for talking to the backend.
    fn config(&self) -> Result<ClientConfig> {
        ClientConfig::load(&self.config_path).context("cannot load the configuration")
    }

    /// The file alone, without environment overrides, for editing it.
    fn stored_config(&self) -> Result<ClientConfig> {
        match std::fs::read_to_string(&self.config_path) {
            Ok(text) => serde_yaml_ng::from_str(&text).with_context(|| {
                format!(
                    "{} is not a valid configuration",
                    self.config_path.display()
                )
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(ClientConfig::default()),
            Err(err) => {
                Err(err).with_context(|| format!("cannot read {}", self.config_path.display()))
            }
        }
    }

    fn save(&self, config: &ClientConfig) -> Result<()> {
        config
            .save(&self.config_path)
            .context("cannot save the configuration")
    }

    /// A client that does not start anything.
    async fn connect(&self, config: &ClientConfig) -> Result<Client> {
        stigmer_client::connect(config)
            .await
            .context("cannot connect to the backend")
    }

    /// A client to a backend that answers: in local daemon mode, the daemon is started first
    /// if it is not running.
    async fn client(&self) -> Result<Client> {
        let config = self.config()?;
        let client = self.connect(&config).await?;
        let _ = TALKING_TO.set((
            config.backend.kind == BackendType::Cloud,
            client.endpoint().to_string(),
        ));
        if daemon::uses_daemon(&config) {
            daemon::ensure_running(&config, &client)
                .await
                .context("cannot start the local backend daemon")?;
        }
        Ok(client)
    }
}

/// `agent/code-reviewer`
fn reference(client: &Client, kind: &str, resource: &Value, fallback: &str) -> String {
    let kind = client
        .kind(kind)
        .map(|k| k.name.to_lowercase())
        .unwrap_or_else(|_| kind.to_lowercase());
    let metadata = &resource["metadata"];
    let name = [&metadata["slug"], &metadata["name"], &metadata["id"]]
        .into_iter()
        .filter_map(Value::as_str)
        .find(|s| !s.is_empty())
        .unwrap_or(fallback);
    format!("{kind}/{name}")
}

/// A server message without its `invalid Agent: ` prefix: the location already says which.
fn server_message(err: &ClientError) -> String {
    let message = err.to_string();
    if let ClientError::Status(status) = err
        && status.code() == tonic::Code::InvalidArgument
        && let Some(rest) = message.strip_prefix("invalid ")
        && let Some((kind, detail)) = rest.split_once(": ")
        && !kind.contains(' ')
    {
        return detail.to_string();
    }
    message
}

/// Closes the client (the in-process server, if any), keeping the command's own error first.
async fn finish<T>(client: Client, result: Result<T>) -> Result<T> {
    let closed = client.close().await;
    let value = result?;
    closed.context("cannot close the in-process server")?;
    Ok(value)
}

async fn get(ctx: &Ctx, kind: &str, name: &str, format: Format) -> Result<ExitCode> {
    let client = ctx.client().await?;
    let result = async {
        let kind_name = client.kind(kind)?.name.to_lowercase();
        let resource = client
            .get(kind, name)
            .await
            .with_context(|| format!("cannot get {kind_name} {name:?}"))?;
        output::print_one(&resource, format)?;
        if matches!(format, Format::Table) && kind_name == "skill" {
            skill::print_versions(&client, &resource).await?;
        }
        Ok(ExitCode::SUCCESS)
    }
    .await;
    finish(client, result).await
}

async fn list(ctx: &Ctx, kind: &str, selector: Option<&str>, format: Format) -> Result<ExitCode> {
    let client = ctx.client().await?;
    let result = async {
        // A kind without a list says so and what works instead, with no "cannot list" before.
        let kind_name = client.kind_for(kind, Operation::List)?.name.to_lowercase();
        let items = client
            .list(kind, selector.unwrap_or_default())
            .await
            .with_context(|| format!("cannot list {kind_name}s"))?;
        output::print_many(&items, format)?;
        Ok(ExitCode::SUCCESS)
    }
    .await;
    finish(client, result).await
}

async fn delete(ctx: &Ctx, args: DeleteArgs) -> Result<ExitCode> {
    if args.files.is_empty() {
        let (Some(kind), Some(name)) = (args.kind, args.name) else {
            bail!("say what to delete: `stigmer delete KIND NAME` or `stigmer delete -f FILE`");
        };
        let client = ctx.client().await?;
        let result = async {
            let kind_name = client.kind(&kind)?.name.to_lowercase();
            let deleted = client
                .delete(&kind, &name)
                .await
                .with_context(|| format!("cannot delete {kind_name} {name:?}"))?;
            println!("{} deleted", reference(&client, &kind, &deleted, &name));
            Ok(ExitCode::SUCCESS)
        }
        .await;
        return finish(client, result).await;
    }
    let documents = apply::read_documents(&args.files)?;
    let client = ctx.client().await?;
    let mut failed = 0;
    for document in &documents {
        let result = async {
            let value = document.value.as_ref().map_err(Clone::clone)?;
            manifest::check_shape(value)?;
            let kind = value["kind"].as_str().unwrap_or_default();
            client.kind(kind).map_err(|e| e.to_string())?;
            let id = value["metadata"]["id"].as_str().filter(|s| !s.is_empty());
            let name = match (id, skill::source_of(document)) {
                (Some(id), _) => id.to_string(),
                (None, Some(source)) => source?.slug(),
                (None, None) => manifest::manifest_slug(value),
            };
            if name.is_empty() {
                return Err("metadata: needs a name, slug or id to delete".to_string());
            }
            let deleted = client
                .delete(kind, &name)
                .await
                .map_err(|e| server_message(&e))?;
            Ok(format!(
                "{} deleted",
                reference(&client, kind, &deleted, &name)
            ))
        }
        .await;
        match result {
            Ok(line) => println!("{line}"),
            Err(err) => {
                failed += 1;
                eprintln!("error: {}: {err}", document.location());
            }
        }
    }
    let code = if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    };
    finish(client, Ok(code)).await
}

async fn watch(ctx: &Ctx, args: WatchArgs) -> Result<ExitCode> {
    let client = ctx.client().await?;
    let mut stream = client
        .watch(args.kind.as_deref(), args.since)
        .await
        .context("cannot watch")?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            event = stream.next() => match event {
                None => return Ok(ExitCode::SUCCESS),
                Some(Err(status)) => {
                    return Err(anyhow::Error::new(ClientError::Status(status)))
                        .context("the watch ended");
                }
                Some(Ok(event)) => match args.output {
                    WatchFormat::Json => println!("{event}"),
                    WatchFormat::Text => println!("{}", output::event_line(&event)),
                },
            },
        }
    }
}

async fn export(ctx: &Ctx, args: ExportArgs) -> Result<ExitCode> {
    let client = ctx.client().await?;
    let result = async {
        let spinner = progress::spinner("exporting");
        let resources = client.export(&args.kinds).await.context("cannot export");
        spinner.finish_and_clear();
        let Export { resources, omitted } = resources?;
        let text = match args.output {
            ExportFormat::Json => {
                let mut text = serde_json::to_string_pretty(&Value::Array(resources.clone()))
                    .context("cannot write JSON")?;
                text.push('\n');
                text
            }
            ExportFormat::Yaml => resources
                .iter()
                .map(|r| serde_yaml_ng::to_string(r).context("cannot write YAML"))
                .collect::<Result<Vec<_>>>()?
                .join("---\n"),
        };
        match &args.file {
            Some(path) => {
                std::fs::write(path, text)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!(
                    "exported {} resources to {}",
                    resources.len(),
                    path.display()
                );
            }
            None => print!("{text}"),
        }
        if omitted.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        for reason in &omitted {
            eprintln!("left out: {reason}");
        }
        eprintln!(
            "error: the export is incomplete: {} resources were too large to export",
            omitted.len()
        );
        Ok(ExitCode::FAILURE)
    }
    .await;
    finish(client, result).await
}

async fn import(ctx: &Ctx, args: ImportArgs) -> Result<ExitCode> {
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

async fn backup(ctx: &Ctx, args: BackupArgs) -> Result<ExitCode> {
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

async fn backend_status(ctx: &Ctx) -> Result<ExitCode> {
    let config = ctx.config()?;
    let backend = &config.backend;
    println!("config:     {}", ctx.config_path.display());
    match backend.kind {
        BackendType::Local => {
            println!("mode:       local");
            let transport = match backend.local.transport {
                stigmer_client::LocalTransport::Daemon => "daemon",
                stigmer_client::LocalTransport::InProcess => "in-process",
            };
            println!("transport:  {transport}");
            if daemon::uses_daemon(&config) {
                println!("endpoint:   {}", backend.local.endpoint);
            }
            if daemon::uses_daemon(&config) {
                let pid = daemon::read_pid()
                    .ok()
                    .flatten()
                    .filter(|p| daemon::is_alive(*p));
                match pid {
                    Some(pid) => println!("daemon:     pid {pid}"),
                    None => println!("daemon:     not started by stigmer"),
                }
            }
        }
        BackendType::Cloud => {
            let cloud = backend.cloud.clone().unwrap_or_default();
            println!("mode:       cloud");
            println!(
                "endpoint:   {}",
                if cloud.endpoint.is_empty() {
                    "(not set: run `stigmer login`)"
                } else {
                    &cloud.endpoint
                }
            );
            println!(
                "org:        {}",
                if cloud.org_id.is_empty() {
                    "(not set)"
                } else {
                    &cloud.org_id
                }
            );
            println!(
                "token:      {}",
                if cloud.token.is_empty() {
                    "(not set)"
                } else {
                    "set"
                }
            );
        }
    }
    let info = match stigmer_client::connect(&config).await {
        Err(err) => Err(err),
        Ok(client) => {
            let info = if client.is_serving().await || client.transport().is_in_process() {
                client.info().await
            } else {
                Err(ClientError::Connect {
                    endpoint: client.endpoint().to_string(),
                    reason: "no answer to health checks".into(),
                })
            };
            let _ = client.close().await;
            info
        }
    };
    match info {
        Err(err) => println!("reachable:  no ({err})"),
        Ok(info) => {
            println!("reachable:  yes");
            let field = |name: &str| output::scalar(&info[name]);
            println!("version:    {}", field("version"));
            println!("backend:    {} ({})", field("backend"), field("database"));
            // The server's own answer: a daemon may run on another file than the config says.
            println!("database:   {}", field("location"));
            println!("revision:   {}", field("revision"));
            println!("compacted:  {}", field("compactedRevision"));
            println!("counts:");
            match info["counts"].as_object() {
                Some(counts) if !counts.is_empty() => {
                    let mut counts: Vec<_> = counts.iter().collect();
                    counts.sort_by(|a, b| a.0.cmp(b.0));
                    for (kind, count) in counts {
                        println!("  {kind}: {}", output::scalar(count));
                    }
                }
                _ => println!("  (none)"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn backend_set(ctx: &Ctx, mode: Mode) -> Result<ExitCode> {
    let mut config = ctx.stored_config()?;
    config.backend.kind = match mode {
        Mode::Local => BackendType::Local,
        Mode::Cloud => BackendType::Cloud,
    };
    ctx.save(&config)?;
    match mode {
        Mode::Local => println!("backend set to local ({})", config.backend.local.endpoint),
        Mode::Cloud => match config
            .backend
            .cloud
            .as_ref()
            .filter(|c| !c.endpoint.is_empty())
        {
            Some(cloud) => println!("backend set to cloud ({})", cloud.endpoint),
            None => println!(
                "backend set to cloud; no endpoint yet: run `stigmer login --endpoint HOST:PORT --token TOKEN --org ORG`"
            ),
        },
    }
    Ok(ExitCode::SUCCESS)
}

async fn login(ctx: &Ctx, args: LoginArgs) -> Result<ExitCode> {
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

/// "NAME (ida-…), org ORG" for people.
fn account_label(account: &serde_json::Value, org: Option<&str>) -> String {
    let name = account["metadata"]["name"].as_str().unwrap_or("-");
    let id = account["metadata"]["id"].as_str().unwrap_or("-");
    match org {
        Some(org) => format!("{name} ({id}), org {org}"),
        None => format!("{name} ({id})"),
    }
}

async fn whoami(ctx: &Ctx) -> Result<ExitCode> {
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

fn context_set(ctx: &Ctx, org: String) -> Result<ExitCode> {
    if !stigmer_client::is_valid_slug(&org) {
        bail!("--org {org:?} is not an org slug: 1-63 lowercase letters, digits or '-'");
    }
    let mut config = ctx.stored_config()?;
    let Some(cloud) = config.backend.cloud.as_mut() else {
        bail!("no cloud backend to set the org of: run `stigmer login` first");
    };
    cloud.org_id = org.clone();
    ctx.save(&config)?;
    println!("working in org {org}");
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

fn logout(ctx: &Ctx) -> Result<ExitCode> {
    let mut config = ctx.stored_config()?;
    if let Some(cloud) = config.backend.cloud.as_mut() {
        cloud.token.clear();
    }
    config.backend.kind = BackendType::Local;
    ctx.save(&config)?;
    println!("logged out; backend set to local");
    Ok(ExitCode::SUCCESS)
}

async fn server(ctx: &Ctx, command: ServerCommand) -> Result<ExitCode> {
    let config = daemon::local_daemon_config(&ctx.config()?);
    let client = ctx.connect(&config).await?;
    let endpoint = config.backend.local.endpoint.clone();
    match command {
        ServerCommand::Start => {
            match daemon::ensure_running(&config, &client)
                .await
                .context("cannot start the local backend daemon")?
            {
                Some(pid) => println!("started (pid {pid}, endpoint {endpoint})"),
                None => match daemon::read_pid()?.filter(|p| daemon::is_alive(*p)) {
                    Some(pid) => println!("already running (pid {pid}, endpoint {endpoint})"),
                    None => {
                        println!("already running (endpoint {endpoint}; not started by stigmer)")
                    }
                },
            }
        }
        ServerCommand::Stop => match daemon::stop(&client)
            .await
            .context("cannot stop the local backend daemon")?
        {
            daemon::Stopped::Stopped(pid) => println!("stopped (pid {pid})"),
            daemon::Stopped::NotRunning { stale_pid: None } => println!("not running"),
            daemon::Stopped::NotRunning {
                stale_pid: Some(pid),
            } => println!("not running (removed the stale pid file of pid {pid})"),
        },
        ServerCommand::Status => {
            let pid = daemon::read_pid()?;
            let alive = pid.filter(|p| daemon::is_alive(*p));
            let serving = client.is_serving().await;
            match (alive, serving) {
                (Some(pid), true) => println!("running (pid {pid}, endpoint {endpoint})"),
                (None, true) => {
                    println!("running (endpoint {endpoint}; not started by stigmer, no pid file)")
                }
                (Some(pid), false) => println!(
                    "not running: pid {pid} is alive but {endpoint} does not answer (starting, or stuck; see {})",
                    daemon::log_path()?.display()
                ),
                (None, false) => println!("not running (endpoint {endpoint})"),
            }
            if !serving {
                return Ok(not_running());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `server status` when nothing serves: 3, as `systemctl status` and LSB init scripts say
/// "not running", so scripts can test it.
fn not_running() -> ExitCode {
    ExitCode::from(3)
}

#[cfg(test)]
mod tests {
    /// clap checks a command line only when it parses one; this checks the one `command()`
    /// builds (the kind arguments it replaces keep their positions).
    #[test]
    fn the_command_line_is_consistent() {
        super::command().debug_assert();
    }
}
