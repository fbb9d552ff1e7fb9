//! One file per command: its clap arguments and its `run`, over what they all share here: the
//! configuration file (`Ctx`) and how a client is opened and closed.

pub mod apply;
pub mod backend;
pub mod backup;
pub mod completion;
pub mod context;
pub mod delete;
pub mod export;
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

use anyhow::{Context, Result};
use stigmer_client::{BackendType, Client, ClientConfig, ClientError};

use crate::{daemon, report};

/// What every command starts from: the configuration file `--config` names.
pub struct Ctx {
    pub config_path: PathBuf,
}

impl Ctx {
    /// The configuration with environment overrides, for talking to the backend.
    pub fn config(&self) -> Result<ClientConfig> {
        ClientConfig::load(&self.config_path).context("cannot load the configuration")
    }

    /// The file alone, without environment overrides, for editing it.
    pub fn stored_config(&self) -> Result<ClientConfig> {
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
        let config = self.config()?;
        let client = self.connect(&config).await?;
        report::talking_to(
            config.backend.kind == BackendType::Cloud,
            client.endpoint().to_string(),
        );
        if daemon::uses_daemon(&config) {
            daemon::ensure_running(&config, &client)
                .await
                .context("cannot start the local backend daemon")?;
        }
        Ok(client)
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
