//! One file per command: its clap arguments and its `run`, over what they all share here: the
//! configuration file (`Ctx`) and how a client is opened and closed.

pub mod apply;
pub mod backend;
pub mod backup;
pub mod completion;
pub mod context;
pub mod delete;
pub mod export;
pub mod find;
pub mod get;
pub mod import;
pub mod list;
pub mod login;
pub mod logout;
pub mod server;
pub mod skill;
pub mod watch;
pub mod whoami;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use stigmer_client::{BackendType, Client, ClientConfig, ClientError, ConfigFile};

use crate::{daemon, report};

/// What every command starts from: the configuration file `--config` names, and the global
/// flags that override it.
pub struct Ctx {
    pub config_path: PathBuf,
    /// `--timeout`: the deadline of each unary call (zero: none), over the file's.
    pub timeout: Option<Duration>,
}

impl Ctx {
    /// The configuration with environment overrides and flags, for talking to the backend.
    /// Without a file, this is the first use: the defaults are written for the user to see
    /// and edit, and the backend is named once.
    pub fn config(&self) -> Result<ClientConfig> {
        let (mut config, first_use) = match self.read()? {
            Some(config) => (config, false),
            None => (ClientConfig::default(), self.write_defaults()),
        };
        config
            .apply_env(|name| std::env::var(name).ok())
            .context("cannot load the configuration")?;
        if let Some(timeout) = self.timeout {
            config.timeout = timeout;
        }
        if first_use {
            // What this command uses, environment included; on stderr, as stdout is data.
            eprintln!("Using {}", backend_in_use(&config));
        }
        report::deadline(config.call_timeout(), self.config_path.clone());
        Ok(config)
    }

    /// Writes the defaults where the configuration belongs, unless a file appeared there
    /// meanwhile (another stigmer's first use: its file wins and it said the line). Whether
    /// this call wrote them.
    fn write_defaults(&self) -> bool {
        match ClientConfig::default().create(&self.config_path) {
            Ok(true) => {
                eprintln!(
                    "Wrote the default configuration to {}",
                    self.config_path.display()
                );
                true
            }
            Ok(false) => false,
            // The defaults still work; a home that cannot be written is worth a word, not a
            // failed command.
            Err(err) => {
                eprintln!("warning: {err}");
                false
            }
        }
    }

    /// The file alone, without environment overrides, for editing it.
    pub fn stored_config(&self) -> Result<ClientConfig> {
        Ok(self.read()?.unwrap_or_default())
    }

    /// The file, `None` when there is none; each key it has that nothing reads is named on
    /// stderr.
    fn read(&self) -> Result<Option<ClientConfig>> {
        let Some(file) =
            ConfigFile::read(&self.config_path).context("cannot load the configuration")?
        else {
            return Ok(None);
        };
        for key in &file.unknown_keys {
            eprintln!(
                "warning: {}: unknown key {key} is ignored",
                self.config_path.display()
            );
        }
        Ok(Some(file.config))
    }

    pub fn save(&self, config: &ClientConfig) -> Result<()> {
        config
            .save(&self.config_path)
            .context("cannot save the configuration")
    }

    /// A client that does not start anything.
    pub async fn connect(&self, config: &ClientConfig) -> Result<Client> {
        stigmer_client::connect(config)
            .await
            .context("cannot connect to the backend")
    }

    /// A client to a backend that answers: in local daemon mode, the daemon is started first
    /// if it is not running.
    pub async fn client(&self) -> Result<Client> {
        self.client_from(self.config()?).await
    }

    /// [`Self::client`] with a configuration the command changed (`apply --org`).
    pub async fn client_from(&self, config: ClientConfig) -> Result<Client> {
        let client = self.connect(&config).await?;
        report::talking_to(
            config.backend.kind == BackendType::Cloud,
            client.endpoint().to_string(),
        );
        if daemon::uses_daemon(&config) {
            daemon::ensure_running(&config, &client).await?;
        }
        Ok(client)
    }
}

/// `local backend (organization: local)`, as seed 003 words it.
fn backend_in_use(config: &ClientConfig) -> String {
    match config.backend.kind {
        BackendType::Local => "local backend (organization: local)".to_string(),
        BackendType::Cloud => format!(
            "cloud backend (organization: {})",
            config.org().unwrap_or("none set")
        ),
    }
}

/// A server message without its `invalid Agent: ` prefix: the location already says which.
pub fn server_message(err: &ClientError) -> String {
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
pub async fn finish<T>(client: Client, result: Result<T>) -> Result<T> {
    let closed = client.close().await;
    let value = result?;
    closed.context("cannot close the in-process server")?;
    Ok(value)
}
