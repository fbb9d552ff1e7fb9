//! `~/.stigmer/config.yaml`, in the layout of seed 003, with environment overrides.
//!
//! The keys other Stigmer documents use (`backend.local.db_path`, `backend.local.data_dir`,
//! `backend.cloud.organization`) are read as the keys they stand for, and
//! `backend.cloud.env_id`, which nothing here could honour, is refused: a user who follows
//! those documents must never get the default database or no org without a word (ADR 0036).
//! Any other key this client does not know is reported, not refused, so that a file shared
//! with a newer client still works.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ClientError;

/// Where local mode's daemon listens unless configured otherwise.
pub const DEFAULT_LOCAL_ENDPOINT: &str = "127.0.0.1:50051";

/// How long a unary call may take unless configured otherwise: long enough for any call a
/// healthy server answers, short enough that a stuck one does not hang a script.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How often an HTTP/2 ping checks a connection unless configured otherwise; a connection
/// whose ping goes unanswered is closed, which ends a watch over a dead network path.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);

/// The database file inside `backend.local.data_dir`, as the document that has the key says.
const DATA_DIR_DATABASE: &str = "stigmer.db";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    #[serde(default)]
    pub backend: BackendConfig,
    /// The deadline of each unary call; zero means none. Streams (watch, subscribe, export,
    /// backup) have none: they last as long as their data.
    #[serde(default = "default_call_timeout", with = "duration_text")]
    pub timeout: Duration,
    /// The interval of HTTP/2 keepalive pings on remote connections; zero turns them off.
    #[serde(default = "default_keepalive", with = "duration_text")]
    pub keepalive: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            backend: BackendConfig::default(),
            timeout: DEFAULT_CALL_TIMEOUT,
            keepalive: DEFAULT_KEEPALIVE,
        }
    }
}

fn default_call_timeout() -> Duration {
    DEFAULT_CALL_TIMEOUT
}

fn default_keepalive() -> Duration {
    DEFAULT_KEEPALIVE
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
#[serde(try_from = "LocalFile")]
pub struct LocalConfig {
    pub endpoint: String,
    /// `daemon` (default): talk to stigmer-server over the endpoint; `in-process`: run the
    /// server inside this process on the database, with no socket.
    pub transport: LocalTransport,
    /// The database of the in-process server and of an auto-started daemon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<PathBuf>,
}

/// `backend.local` as written, with the other documents' spellings of the database.
#[derive(Deserialize)]
struct LocalFile {
    #[serde(default = "default_endpoint")]
    endpoint: String,
    #[serde(default)]
    transport: LocalTransport,
    /// Seed 001 calls the database file `db_path`.
    #[serde(default, alias = "db_path")]
    database: Option<PathBuf>,
    /// Seed 003 names a folder; its database is `stigmer.db` inside it.
    #[serde(default)]
    data_dir: Option<PathBuf>,
}

impl TryFrom<LocalFile> for LocalConfig {
    type Error = String;

    fn try_from(file: LocalFile) -> Result<Self, String> {
        let database = match (file.database, file.data_dir) {
            (Some(database), Some(dir)) => {
                return Err(format!(
                    "backend.local.database ({}) and backend.local.data_dir ({}) both name the \
                     database; keep backend.local.database",
                    database.display(),
                    dir.display()
                ));
            }
            (database, None) => database,
            (None, Some(dir)) => Some(dir.join(DATA_DIR_DATABASE)),
        };
        Ok(Self {
            endpoint: file.endpoint,
            transport: file.transport,
            database,
        })
    }
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
#[serde(try_from = "CloudFile")]
pub struct CloudConfig {
    pub endpoint: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub org_id: String,
    /// PEM file of the certificate authority that signed the server's certificate, for a
    /// private CA; empty trusts the public web roots only.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ca_file: String,
}

/// `backend.cloud` as written, with the other documents' spellings.
#[derive(Deserialize)]
struct CloudFile {
    endpoint: String,
    #[serde(default)]
    token: String,
    /// Seed 001 calls the org `organization`.
    #[serde(default, alias = "organization")]
    org_id: String,
    #[serde(default)]
    ca_file: String,
    /// Seed 003's default environment: this backend has no such thing, and ignoring it would
    /// run executions without the secrets the user thinks they get.
    #[serde(default)]
    env_id: Option<String>,
}

impl TryFrom<CloudFile> for CloudConfig {
    type Error = String;

    fn try_from(file: CloudFile) -> Result<Self, String> {
        if let Some(env_id) = file.env_id {
            return Err(format!(
                "backend.cloud.env_id ({env_id}) is not supported: this backend has no default \
                 environment; remove the line and name the Environment where it is used (an \
                 instance's spec.environmentRefs, an execution's spec.runtimeEnv)"
            ));
        }
        Ok(Self {
            endpoint: file.endpoint,
            token: file.token,
            org_id: file.org_id,
            ca_file: file.ca_file,
        })
    }
}

/// Durations as people write them: `30s`, `2m`, `1h30m`, `500ms`, or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text).map_err(|err| {
        format!("{text:?} is not a duration ({err}): write 30s, 2m or 1h, or 0 for none")
    })
}

/// How a duration is written back: `30s`, `2m`, `0s`.
pub fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// Durations in the file as text (`30s`) or a number of seconds.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Seconds(u64),
        Text(String),
    }

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        match Written::deserialize(deserializer)? {
            Written::Seconds(seconds) => Ok(Duration::from_secs(seconds)),
            Written::Text(text) => super::parse_duration(&text).map_err(serde::de::Error::custom),
        }
    }
}

/// A configuration file as read: what it sets, and the keys it has that nothing reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    pub config: ClientConfig,
    /// Dotted paths (`backend.local.llm`) of keys this client ignores, for a warning.
    pub unknown_keys: Vec<String>,
}

impl ConfigFile {
    /// Parses the text of `path`; an error names the file.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ClientError> {
        let mut unknown_keys = Vec::new();
        let deserializer = serde_yaml_ng::Deserializer::from_str(text);
        let config = serde_ignored::deserialize(deserializer, |key| {
            unknown_keys.push(dotted(&key.to_string()));
        })
        .map_err(|err| {
            ClientError::Config(format!(
                "{} is not a valid configuration: {err}",
                path.display()
            ))
        })?;
        Ok(Self {
            config,
            unknown_keys,
        })
    }

    /// Reads `path`; `None` when there is no such file.
    pub fn read(path: &Path) -> Result<Option<Self>, ClientError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text).map(Some),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(ClientError::Config(format!(
                "cannot read {}: {err}",
                path.display()
            ))),
        }
    }
}

/// serde_ignored's path without the `?` it writes for an `Option` level.
fn dotted(path: &str) -> String {
    path.split('.')
        .filter(|part| *part != "?")
        .collect::<Vec<_>>()
        .join(".")
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

    /// Reads the file (a missing file is the default configuration; unknown keys are
    /// ignored: [`ConfigFile::read`] lists them), then applies the environment overrides.
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        let mut config = ConfigFile::read(path)?
            .map(|file| file.config)
            .unwrap_or_default();
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// Applies STIGMER_BACKEND, STIGMER_ENDPOINT, STIGMER_TOKEN, STIGMER_ORG,
    /// STIGMER_CA_FILE and STIGMER_TIMEOUT, read through `var`.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ClientError> {
        if let Some(timeout) = var("STIGMER_TIMEOUT") {
            self.timeout = parse_duration(&timeout)
                .map_err(|err| ClientError::Config(format!("STIGMER_TIMEOUT: {err}")))?;
        }
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
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        self.write(path, &options).map_err(|err| match err {
            // Not asked for, so not returned: `create` alone opens with create_new.
            WriteError::Exists => ClientError::Config(format!("{} exists", path.display())),
            WriteError::Failed(err) => err,
        })
    }

    /// Writes the file as [`Self::save`] does, but only when there is none: `false` when one
    /// exists (another process may have written it since this one looked), which is kept.
    pub fn create(&self, path: &Path) -> Result<bool, ClientError> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        match self.write(path, &options) {
            Ok(()) => Ok(true),
            Err(WriteError::Exists) => Ok(false),
            Err(WriteError::Failed(err)) => Err(err),
        }
    }

    fn write(&self, path: &Path, options: &std::fs::OpenOptions) -> Result<(), WriteError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let failed = |what: &str, at: &Path, err: std::io::Error| {
            WriteError::Failed(ClientError::Config(format!(
                "cannot {what} {}: {err}",
                at.display()
            )))
        };
        if let Some(dir) = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|err| failed("create", dir, err))?;
        }
        let text = serde_yaml_ng::to_string(self)
            .map_err(|err| WriteError::Failed(ClientError::Config(err.to_string())))?;
        let mut file = options
            .clone()
            .mode(0o600)
            .open(path)
            .map_err(|err| match err.kind() {
                std::io::ErrorKind::AlreadyExists => WriteError::Exists,
                _ => failed("write", path, err),
            })?;
        std::io::Write::write_all(&mut file, text.as_bytes())
            .map_err(|err| failed("write", path, err))
    }

    /// The deadline of unary calls, `None` for none.
    pub fn call_timeout(&self) -> Option<Duration> {
        (!self.timeout.is_zero()).then_some(self.timeout)
    }

    /// The org calls go to: the cloud org in cloud mode, else none (the server's "local").
    pub fn org(&self) -> Option<&str> {
        match (self.backend.kind, &self.backend.cloud) {
            (BackendType::Cloud, Some(cloud)) if !cloud.org_id.is_empty() => Some(&cloud.org_id),
            _ => None,
        }
    }
}

enum WriteError {
    Exists,
    Failed(ClientError),
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

    fn parse(text: &str) -> Result<ConfigFile, ClientError> {
        ConfigFile::parse(Path::new("/home/u/.stigmer/config.yaml"), text)
    }

    #[test]
    fn the_other_documents_keys_mean_ours() {
        let file = parse(
            "backend:\n  type: cloud\n  local:\n    db_path: ~/.stigmer/local.db\n  cloud:\n    endpoint: api.example.test:443\n    organization: acme\n",
        )
        .expect("parse");
        assert!(file.unknown_keys.is_empty(), "{:?}", file.unknown_keys);
        assert_eq!(
            file.config.backend.local.database,
            Some(PathBuf::from("~/.stigmer/local.db"))
        );
        assert_eq!(file.config.org(), Some("acme"));

        let file = parse("backend:\n  local:\n    data_dir: /srv/stigmer\n").expect("parse");
        assert_eq!(
            file.config.backend.local.database,
            Some(PathBuf::from("/srv/stigmer/stigmer.db"))
        );
    }

    #[test]
    fn keys_that_cannot_be_honoured_are_refused_by_name() {
        for (text, names) in [
            (
                "backend:\n  cloud:\n    endpoint: e:443\n    env_id: env-prod\n",
                ["backend.cloud.env_id", "config.yaml"],
            ),
            (
                "backend:\n  local:\n    database: /a.db\n    data_dir: /b\n",
                ["backend.local.data_dir", "keep backend.local.database"],
            ),
            (
                "timeout: soon\n",
                ["\"soon\" is not a duration", "config.yaml"],
            ),
        ] {
            let err = parse(text).expect_err(text).to_string();
            for name in names {
                assert!(err.contains(name), "{err} lacks {name}");
            }
        }
    }

    #[test]
    fn unknown_keys_are_named_with_their_path_and_do_not_fail() {
        let file = parse(
            "backend:\n  type: local\n  local:\n    endpoint: localhost:1\n    llm:\n      provider: ollama\n  cloud:\n    endpoint: e:443\n    region: eu\ncolour: blue\n",
        )
        .expect("parse");
        assert_eq!(
            file.unknown_keys,
            ["backend.local.llm", "backend.cloud.region", "colour"]
        );
        assert_eq!(file.config.backend.local.endpoint, "localhost:1");
    }

    #[test]
    fn durations_are_read_as_people_write_them_and_zero_means_none() {
        for (text, seconds) in [("30s", 30), ("2m", 120), ("1h", 3600), ("45", 45), ("0", 0)] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(seconds)),
                "{text}"
            );
        }
        assert!(parse_duration("-1s").is_err());
        let file = parse("timeout: 0\nkeepalive: 10s\n").expect("parse");
        assert_eq!(file.config.call_timeout(), None);
        assert_eq!(file.config.keepalive, Duration::from_secs(10));
        let default = parse("{}").expect("parse").config;
        assert_eq!(default.call_timeout(), Some(DEFAULT_CALL_TIMEOUT));
        let mut config = default;
        config
            .apply_env(|n| (n == "STIGMER_TIMEOUT").then(|| "2m".into()))
            .expect("env");
        assert_eq!(config.call_timeout(), Some(Duration::from_secs(120)));
    }

    #[test]
    fn the_defaults_are_written_once_and_never_over_a_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("home").join(".stigmer").join("config.yaml");
        assert!(ClientConfig::default().create(&path).expect("create"));
        let mode = std::fs::metadata(&path)
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let written = std::fs::read_to_string(&path).expect("read");
        for key in ["type: local", "endpoint: 127.0.0.1:50051", "timeout: 30s"] {
            assert!(written.contains(key), "{written}");
        }
        assert_eq!(
            ConfigFile::parse(&path, &written).expect("parse").config,
            ClientConfig::default()
        );
        std::fs::write(&path, "backend:\n  type: cloud\n").expect("edit");
        assert!(!ClientConfig::default().create(&path).expect("create"));
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "backend:\n  type: cloud\n"
        );
    }
}
