//! stigmer-server: flags and logging, the database the flags name, then `stigmer_grpc::run`
//! until SIGINT or SIGTERM.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use stigmer_database::DatabaseOptions;
use stigmer_grpc::{LogFormat, ServerConfig};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// stigmer-server stores every Stigmer API resource in one database (a SQLite file by default,
/// or PostgreSQL) and serves them over gRPC (with server reflection and grpc.health.v1). Every
/// flag can also be set through the environment variable shown with it.
#[derive(Debug, Parser)]
#[command(name = "stigmer-server", version, long_about = None)]
struct Cli {
    #[command(flatten)]
    server: ServerConfig,

    #[command(flatten)]
    database: DatabaseOptions,

    /// What to do; without a command, serve.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Subcommand)]
enum Command {
    /// Re-seal every secret (in resources and the change log) under a new master key, in one
    /// transaction, then retire the old key. Stop the server first. With STIGMER_MASTER_KEY
    /// set, the new key is printed once and must replace it before the next start.
    RotateMasterKey,
    /// API keys, made, listed and revoked straight in the database, for cloud mode
    /// (--auth apikey): how an organization gets its first owner. With SQLite, stop the
    /// server first.
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// Put a backup (made by `stigmer backup FILE`) in place as the SQLite database --db
    /// names. The file must pass PRAGMA integrity_check and hold a schema this server knows
    /// (an older one is migrated at the next start; a newer one is refused). An existing
    /// database is replaced only with --force, and never while a server has it open. The
    /// master key its secrets are sealed under must come with it: the command says which.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// The database to create: a SQLite file path or sqlite:PATH. Default: the --db (or
        /// STIGMER_DB) given before the command.
        #[arg(long, value_name = "PATH")]
        db: Option<String>,
        /// Replace the database at --db if there is one.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Clone, Subcommand)]
enum ApikeyCommand {
    /// Create an identity account with a role on an organization, and an API key for it.
    /// The key is printed alone on standard output, once: store it now.
    Create {
        /// The organization (its slug) the account gets a role on.
        #[arg(long)]
        org: String,
        /// The account's role on the organization.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Names the account and its key (default: "ROLE of ORG").
        #[arg(long)]
        name: Option<String>,
        /// When the key stops working: "never", or an RFC 3339 time (2027-01-31T00:00:00Z).
        #[arg(long, default_value = "never", value_parser = parse_expiry)]
        expires: Expiry,
    },
    /// List every API key: id, name, fingerprint (its last six characters), account,
    /// expiry and last use. Never the key itself: the server does not keep it.
    List,
    /// Revoke (delete) an API key by id; calls with it fail from then on.
    Revoke { id: String },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Owner,
    Admin,
    Member,
    Viewer,
}

#[derive(Debug, Clone, Copy)]
struct Expiry(Option<std::time::SystemTime>);

fn parse_expiry(text: &str) -> Result<Expiry, String> {
    if text == "never" {
        return Ok(Expiry(None));
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|at| Expiry(Some(at.into())))
        .map_err(|err| {
            format!("expected \"never\" or an RFC 3339 time like 2027-01-31T00:00:00Z: {err}")
        })
}

#[tokio::main]
async fn main() -> ExitCode {
    stigmer_grpc::install_os_keychain(std::sync::Arc::new(stigmer_grpc::OsKeychain));
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    // An offline command's output is its answer: start-up chatter only when asked for.
    let log_by_default =
        matches.value_source("log_filter") == Some(clap::parser::ValueSource::DefaultValue);
    if log_by_default
        && matches!(
            cli.command,
            Some(Command::Apikey { .. } | Command::Restore { .. })
        )
    {
        cli.server.log_filter = "warn".into();
    }
    if let Err(err) = init_logging(&cli.server) {
        eprintln!("stigmer-server: {err:#}");
        return ExitCode::FAILURE;
    }
    log_panics();
    match serve(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        // One log line like any other, in the configured format: the chain of causes says
        // what went wrong, and a backtrace would tell an operator nothing more. Plain stderr
        // when the log filter would drop it, since the reason for an exit must show.
        Err(err) if tracing::enabled!(tracing::Level::ERROR) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("stigmer-server: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let Cli {
        server: mut config,
        database,
        command,
    } = cli;
    if let Some(Command::RotateMasterKey) = command {
        let database = stigmer_database::open(&database).await?;
        config.master_key_file = config.master_key_file.or(database.default_key_file());
        let rotation = stigmer_grpc::rotate_master_key(&config, database.store).await?;
        println!(
            "re-sealed {} secret values under master key {}",
            rotation.resealed, rotation.key_id
        );
        if let Some(key) = rotation.new_key {
            println!(
                "set STIGMER_MASTER_KEY={key} before the next start; the old key no longer opens them"
            );
        }
        return Ok(());
    }
    if let Some(Command::Restore { file, db, force }) = command {
        let db = db.unwrap_or(database.db);
        return restore(&config, &file, &db, force).await;
    }
    if let Some(Command::Apikey { command }) = command {
        let database = stigmer_database::open(&database).await?;
        config.master_key_file = config.master_key_file.or(database.default_key_file());
        return apikey(&config, database.store, command).await;
    }
    let shutdown = shutdown_signal()?;
    raise_open_files_limit();
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    stigmer_grpc::check_listen(&config, listener.local_addr()?)?;
    let metrics = stigmer_grpc::bind_metrics(&config).await?;
    let database = stigmer_database::open(&database).await?;
    config.master_key_file = config.master_key_file.or(database.default_key_file());
    if database.is_scratch() && config.master_key_store == stigmer_grpc::MasterKeyStore::Keychain {
        // Its key dies with it; an entry in the keychain would outlive both.
        tracing::info!(
            "a --db :memory: database keeps its master key in its own folder, not in the keychain"
        );
        config.master_key_store = stigmer_grpc::MasterKeyStore::File;
    }
    stigmer_grpc::run_with_metrics(&config, database.store, listener, metrics, shutdown).await?;
    Ok(())
}

async fn apikey(
    config: &ServerConfig,
    store: std::sync::Arc<dyn stigmer_grpc::Store>,
    command: ApikeyCommand,
) -> anyhow::Result<()> {
    use stigmer_grpc::bootstrap;
    let result = match command {
        ApikeyCommand::Create {
            org,
            role,
            name,
            expires,
        } => {
            let role = format!("{role:?}").to_lowercase();
            let request = bootstrap::KeyRequest {
                org: org.clone(),
                role: role.clone(),
                name,
                expires_at: expires.0,
            };
            bootstrap::create_key(config, store.clone(), request)
                .await
                .map(|created| {
                    eprintln!(
                        "created API key {} for identity account {} ({role} of {org}); it is shown once:",
                        created.key_id, created.identity_account_id
                    );
                    println!("{}", created.key);
                })
        }
        ApikeyCommand::List => bootstrap::list_keys(config, store.clone())
            .await
            .map(|keys| {
                println!("ID\tNAME\tFINGERPRINT\tACCOUNT\tEXPIRES\tLAST USED");
                for key in keys {
                    println!(
                        "{}\t{}\t…{}\t{}\t{}\t{}",
                        key.id,
                        key.name,
                        key.fingerprint,
                        key.identity_account_id,
                        key.expires,
                        if key.last_used.is_empty() {
                            "-"
                        } else {
                            &key.last_used
                        }
                    );
                }
            }),
        ApikeyCommand::Revoke { id } => bootstrap::revoke_key(config, store.clone(), &id)
            .await
            .map(|()| eprintln!("revoked API key {id}")),
    };
    let closed = store.close().await;
    result?;
    closed.context("closing the database")?;
    Ok(())
}

async fn restore(config: &ServerConfig, file: &Path, db: &str, force: bool) -> anyhow::Result<()> {
    let (path, restored) = stigmer_database::restore(file, db, force).await?;
    println!(
        "restored {} to {}: revision {}, schema version {}, {} bytes{}",
        file.display(),
        path.display(),
        restored.revision,
        restored.schema_version,
        restored.size,
        if restored.replaced {
            ", replacing the database that was there"
        } else {
            ""
        }
    );
    if restored.schema_version < restored.known_version {
        println!(
            "the server migrates it from schema version {} to {} when it next opens it",
            restored.schema_version, restored.known_version
        );
    }
    let Some(key_id) = restored.settings.get(stigmer_grpc::MASTER_KEY_SETTING) else {
        return Ok(());
    };
    if config.master_key.is_some() {
        println!(
            "its secrets are sealed under master key {key_id}: the STIGMER_MASTER_KEY the server starts with must be that key"
        );
        return Ok(());
    }
    if config.master_key_store == stigmer_grpc::MasterKeyStore::Keychain {
        println!(
            "its secrets are sealed under master key {key_id}: the OS keychain of the user who starts the server must hold {}",
            stigmer_grpc::keychain_entry(key_id)
        );
        return Ok(());
    }
    let key_file = config
        .master_key_file
        .clone()
        .unwrap_or_else(|| path.with_extension("key"));
    if key_file.exists() {
        println!(
            "its secrets are sealed under master key {key_id}: {} must hold it (the server checks when it starts)",
            key_file.display()
        );
    } else {
        println!(
            "its secrets are sealed under master key {key_id}: copy the key file that holds it to {} (or set STIGMER_MASTER_KEY) before starting the server",
            key_file.display()
        );
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard limit. Every connection holds a descriptor,
/// and the usual soft limit (1024) is a few hundred idle clients away; the hard limit is the
/// one the operator chose.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open files limit"),
        Err(err) => tracing::warn!(error = %err, "cannot raise the open files limit; keeping it"),
    }
}

fn init_logging(config: &ServerConfig) -> anyhow::Result<()> {
    let mut filter = EnvFilter::try_new(&config.log_filter)
        .with_context(|| format!("invalid log filter {:?}", config.log_filter))?;
    if !config.log_filter.contains("refinery") {
        // refinery announces each migration too; the store logs them once, with their names.
        filter = filter.add_directive(
            "refinery_core=warn"
                .parse()
                .context("the refinery log directive")?,
        );
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// Reports a panic as a log line like any other (so still JSON when the log is), in the span
/// of the call that panicked, where the default hook would print plain text to stderr. The
/// call itself is answered INTERNAL with a correlation id (stigmer_grpc).
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        // Only when RUST_BACKTRACE asks for one, as the default hook does.
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = (backtrace.status() == std::backtrace::BacktraceStatus::Captured)
            .then(|| backtrace.to_string());
        if tracing::enabled!(tracing::Level::ERROR) {
            tracing::error!(thread, backtrace, "{info}");
        } else {
            eprintln!("stigmer-server: thread '{thread}' {info}");
        }
    }));
}

/// Resolves on the first SIGINT or SIGTERM. The handlers are installed now rather than when
/// the server first polls the future, which on a busy machine can be after it has answered
/// calls: a signal in between would kill the process instead of stopping it cleanly.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
