//! `~/.stigmer/config.yaml`, in the layout of seed 003, with environment overrides.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ClientError;

/// Where local mode's daemon listens unless configured otherwise.
pub const DEFAULT_LOCAL_ENDPOINT: &str = "127.0.0.1:50051";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    #[serde(default)]
    pub backend: BackendConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendConfig {
    #[serde(rename = "type", default)]
    pub kind: BackendType,
    #[serde(default)]
    pub local: LocalConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud: Option<CloudConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendType {
    /// This machine: a daemon on a loopback port, or the server inside this process.
    #[default]
    Local,
    /// A remote server, with a token.
    Cloud,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalConfig {
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// `daemon` (default): talk to stigmer-server over the endpoint; `in-process`: run the
    /// server inside this process on the database, with no socket.
    #[serde(default)]
    pub transport: LocalTransport,
    /// The database of the in-process server and of an auto-started daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<PathBuf>,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            endpoint: default_endpoint(),
            transport: LocalTransport::default(),
            database: None,
        }
    }
}

fn default_endpoint() -> String {
    DEFAULT_LOCAL_ENDPOINT.to_string()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LocalTransport {
    #[default]
    Daemon,
    InProcess,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudConfig {
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub org_id: String,
    /// PEM file of the certificate authority that signed the server's certificate, for a
    /// private CA; empty trusts the public web roots only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_file: String,
}

/// `~/.stigmer`: the configuration, and the local daemon's pid, lock and log files. `None`
/// without a home directory; each caller says which of its files that leaves nowhere to go.
/// (The server's default database, `stigmer_database::DEFAULT_DB`, names it on the server's
/// side, which links no client.)
pub fn stigmer_home() -> Option<PathBuf> {
    std::env::home_dir().map(|home| home.join(".stigmer"))
}

impl ClientConfig {
    /// `~/.stigmer/config.yaml`.
    pub fn default_path() -> Result<PathBuf, ClientError> {
        stigmer_home()
            .map(|dir| dir.join("config.yaml"))
            .ok_or_else(|| {
                ClientError::Config("no home directory to find ~/.stigmer/config.yaml in".into())
            })
    }

    /// Reads the file (a missing file is the default configuration), then applies
    /// STIGMER_BACKEND, STIGMER_ENDPOINT, STIGMER_TOKEN, STIGMER_ORG and STIGMER_CA_FILE.
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        let mut config = match std::fs::read_to_string(path) {
            Ok(text) => serde_yaml_ng::from_str(&text).map_err(|err| {
                ClientError::Config(format!(
                    "{} is not a valid configuration: {err}",
                    path.display()
                ))
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Self::default(),
            Err(err) => {
                return Err(ClientError::Config(format!(
                    "cannot read {}: {err}",
                    path.display()
                )));
            }
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// Applies the environment overrides, read through `var`.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ClientError> {
        if let Some(kind) = var("STIGMER_BACKEND") {
            self.backend.kind = match kind.to_lowercase().as_str() {
                "local" => BackendType::Local,
                "cloud" => BackendType::Cloud,
                other => {
                    return Err(ClientError::Config(format!(
                        "STIGMER_BACKEND is {other:?}; use local or cloud"
                    )));
                }
            };
        }
        let cloud = self.backend.cloud.get_or_insert_with(CloudConfig::default);
        if let Some(token) = var("STIGMER_TOKEN") {
            cloud.token = token;
        }
        if let Some(org) = var("STIGMER_ORG") {
            cloud.org_id = org;
        }
        if let Some(ca_file) = var("STIGMER_CA_FILE") {
            cloud.ca_file = ca_file;
        }
        if let Some(endpoint) = var("STIGMER_ENDPOINT") {
            match self.backend.kind {
                BackendType::Local => self.backend.local.endpoint = endpoint,
                BackendType::Cloud => cloud.endpoint = endpoint,
            }
        }
        if self.backend.cloud.as_ref() == Some(&CloudConfig::default()) {
            self.backend.cloud = None;
        }
        Ok(())
    }

    /// Writes the file (0600: it may hold a token), creating ~/.stigmer (0700) if needed.
    pub fn save(&self, path: &Path) -> Result<(), ClientError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if let Some(dir) = path.parent().filter(|d| !d.exists()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|err| {
                    ClientError::Config(format!("cannot create {}: {err}", dir.display()))
                })?;
        }
        let text =
            serde_yaml_ng::to_string(self).map_err(|err| ClientError::Config(err.to_string()))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(|err| {
                ClientError::Config(format!("cannot write {}: {err}", path.display()))
            })?;
        std::io::Write::write_all(&mut file, text.as_bytes())
            .map_err(|err| ClientError::Config(format!("cannot write {}: {err}", path.display())))
    }

    /// The org calls go to: the cloud org in cloud mode, else none (the server's "local").
    pub fn org(&self) -> Option<&str> {
        match (self.backend.kind, &self.backend.cloud) {
            (BackendType::Cloud, Some(cloud)) if !cloud.org_id.is_empty() => Some(&cloud.org_id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_layout_parses_and_the_environment_overrides_it() {
        let mut config: ClientConfig = serde_yaml_ng::from_str(
            "backend:\n  type: cloud\n  local:\n    endpoint: localhost:7777\n  cloud:\n    endpoint: api.example.test:443\n    token: t0k\n    org_id: acme\n",
        )
        .expect("parse");
        assert_eq!(config.backend.kind, BackendType::Cloud);
        assert_eq!(config.backend.local.endpoint, "localhost:7777");
        assert_eq!(config.org(), Some("acme"));
        config
            .apply_env(|name| match name {
                "STIGMER_BACKEND" => Some("local".into()),
                "STIGMER_ENDPOINT" => Some("127.0.0.1:9".into()),
                _ => None,
            })
            .expect("env");
        assert_eq!(config.backend.kind, BackendType::Local);
        assert_eq!(config.backend.local.endpoint, "127.0.0.1:9");
        assert!(
            config
                .apply_env(|n| (n == "STIGMER_BACKEND").then(|| "mars".into()))
                .is_err()
        );
        let default: ClientConfig = serde_yaml_ng::from_str("{}").expect("empty");
        assert_eq!(default.backend.local.endpoint, DEFAULT_LOCAL_ENDPOINT);
        assert_eq!(default.backend.local.transport, LocalTransport::Daemon);
    }
}
