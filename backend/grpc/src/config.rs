//! Server settings: flags, each with an environment-variable twin and a documented default.
//! The database's flags are not here: the binary picks a store (stigmer-database) and hands
//! it to [`crate::run`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, ValueEnum};

/// The server's settings besides its database.
#[derive(Debug, Clone, Args)]
pub struct ServerConfig {
    /// Address (host:port) to serve gRPC on; the host may be a name ("localhost:50051"), which
    /// is resolved at start-up, IPv4 first. Port 0 picks a free port, reported in the log.
    #[arg(long, env = "STIGMER_LISTEN", default_value = "127.0.0.1:50051", value_parser = listen_address)]
    pub listen: SocketAddr,

    /// Serve on an address other than loopback without TLS and API keys (--tls-cert with
    /// --auth apikey): anyone who can reach the port may then read or change what the server
    /// lets them. Without it, such a --listen is refused at start-up. Only on a trusted network.
    #[arg(long, env = "STIGMER_ALLOW_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_insecure: bool,

    /// Who may call: "none" trusts every caller (one implicit local user, for a laptop);
    /// "apikey" needs `authorization: Bearer stk_…` on every call but health checks, and
    /// enforces each RPC's authorization rule and each caller's organizations and roles.
    #[arg(long, env = "STIGMER_AUTH", value_enum, default_value_t = AuthMode::None)]
    pub auth: AuthMode,

    /// PEM file with the server's certificate chain; with --tls-key, the server speaks TLS
    /// (rustls) instead of plaintext HTTP/2.
    #[arg(long, env = "STIGMER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM file with the private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "STIGMER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Milliseconds a new connection has to send the HTTP/2 client preface (its first 24
    /// bytes) before it is closed, so connections that never speak cannot hold on to file
    /// descriptors. Once talking, a connection that stops answering HTTP/2 pings (every 60 s,
    /// 20 s to answer) is closed too.
    #[arg(long, env = "STIGMER_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub handshake_timeout_ms: u64,

    /// Address (host:port) to serve Prometheus metrics on, at /metrics over plain HTTP
    /// (unset: no metrics). /metrics has no authentication: on an address other than
    /// loopback, whoever reaches the port reads call counts, latencies and resources per kind.
    #[arg(long, env = "STIGMER_METRICS_LISTEN", value_parser = listen_address)]
    pub metrics_listen: Option<SocketAddr>,

    /// Serve the web console at /console on the API's port (`--console=false` turns it off).
    /// It is static pages calling the same JSON API with the same keys, so it reaches exactly
    /// what the API does: on loopback by default; beyond loopback only where the API itself is
    /// allowed (TLS with --auth apikey, or --allow-insecure), and then it asks for an API key
    /// whenever keys are on.
    #[arg(long, env = "STIGMER_CONSOLE", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub console: bool,

    /// Log filter in tracing-subscriber's EnvFilter syntax, e.g. "info" or
    /// "info,stigmer_grpc=debug".
    #[arg(long = "log", env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,

    /// Log line format: "text" for people, "json" for log collectors.
    #[arg(long, env = "STIGMER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Change-log entries always kept (the last N revisions), whatever their age. Watches and
    /// getAtRevision can reach back this far at least.
    #[arg(long, env = "STIGMER_RETAIN_REVISIONS", default_value_t = 10_000)]
    pub retain_revisions: i64,

    /// Seconds of change-log history always kept, however many revisions that is.
    #[arg(long, env = "STIGMER_RETAIN_SECS", default_value_t = 3600)]
    pub retain_secs: u64,

    /// Seconds between background compactions of the change log (0 = never compact).
    #[arg(long, env = "STIGMER_COMPACT_EVERY_SECS", default_value_t = 60)]
    pub compact_every_secs: u64,

    /// Master key sealing secret values: base64 of 32 random bytes. Prefer the environment
    /// variable to the flag (flags show in process lists). Without it, the key file is used.
    #[arg(long, env = "STIGMER_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,

    /// Key file used when no master key is given; created (0600) on a database's first start.
    /// Default: next to a SQLite database, with the extension .key; a PostgreSQL database
    /// needs the key or the key file given, the same on every replica.
    #[arg(long, env = "STIGMER_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,

    /// Where the master key lives when STIGMER_MASTER_KEY is not set: `file` (the key file) or
    /// `keychain` (the OS keychain: Secret Service on Linux, Keychain on macOS, Credential
    /// Manager on Windows), so a copy of the database's folder does not carry its key. A key
    /// file left from before is copied into the keychain on the first start with `keychain`.
    #[arg(long, env = "STIGMER_MASTER_KEY_STORE", value_enum, default_value_t = MasterKeyStore::File)]
    pub master_key_store: MasterKeyStore,

    /// Seconds to let in-flight calls finish after SIGINT/SIGTERM before closing anyway.
    #[arg(long, env = "STIGMER_SHUTDOWN_GRACE", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
}

/// How callers are authenticated (`--auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Every caller is the local user; `x-stigmer-org` picks any org.
    None,
    /// Every call carries an API key; organizations and roles come from IAM policies.
    #[value(name = "apikey")]
    ApiKey,
}

/// Where the master key lives (`--master-key-store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MasterKeyStore {
    File,
    Keychain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Only to read [`ServerConfig`]'s defaults in [`ServerConfig::new`].
#[derive(Parser)]
struct Defaults {
    #[command(flatten)]
    config: ServerConfig,
}

impl ServerConfig {
    /// A configuration with every default, listening on `listen`. The environment is not
    /// read: a server built in code (tests, the in-process transport) runs as documented
    /// whatever `STIGMER_*` variables the shell holds; only the binary reads them.
    pub fn new(listen: SocketAddr) -> Self {
        let matches = Self::defaults_command()
            .try_get_matches_from(["stigmer-server"])
            .expect("every flag has a default or is optional");
        let mut config = Defaults::from_arg_matches(&matches)
            .expect("the defaults form a configuration")
            .config;
        config.listen = listen;
        config
    }

    /// The command line with no environment variable behind any flag.
    fn defaults_command() -> clap::Command {
        Defaults::command().mut_args(|arg| arg.env(None))
    }
}

/// A `host:port` to listen on, the host an address or a name. A name is resolved now, and its
/// first IPv4 address taken when it has one: "localhost" is 127.0.0.1, which every client's
/// "localhost" reaches, where ::1 alone would leave IPv4-only clients out.
pub fn listen_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "{text:?} is not host:port (e.g. 127.0.0.1:50051 or localhost:50051)"
        ));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} in {text:?} is not a port number (0 to 65535)"))?;
    let resolved: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|err| format!("cannot resolve the host {host:?} of {text:?}: {err}"))?
        .collect();
    resolved
        .iter()
        .find(|address| address.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| format!("the host {host:?} of {text:?} has no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_built_in_code_read_no_environment_variable() {
        let with_env: Vec<String> = Defaults::command()
            .get_arguments()
            .filter(|arg| arg.get_env().is_some())
            .map(|arg| arg.get_id().to_string())
            .collect();
        assert!(
            with_env.len() > 8,
            "the binary reads the environment: {with_env:?}"
        );
        let still: Vec<String> = ServerConfig::defaults_command()
            .get_arguments()
            .filter(|arg| arg.get_env().is_some())
            .map(|arg| arg.get_id().to_string())
            .collect();
        assert!(still.is_empty(), "{still:?}");
        let config = ServerConfig::new(([127, 0, 0, 1], 0).into());
        assert_eq!(config.shutdown_grace_secs, 30);
        assert!(config.master_key.is_none());
        assert!(config.console, "the console is on unless turned off");
    }

    #[test]
    fn the_console_flag_takes_a_value_or_none() {
        let parse = |args: &[&str]| {
            let matches = ServerConfig::defaults_command()
                .try_get_matches_from(args)
                .expect("parse");
            Defaults::from_arg_matches(&matches)
                .expect("config")
                .config
                .console
        };
        assert!(parse(&["stigmer-server"]));
        assert!(parse(&["stigmer-server", "--console"]));
        assert!(!parse(&["stigmer-server", "--console=false"]));
        assert!(parse(&["stigmer-server", "--console=true"]));
    }

    #[test]
    fn listen_addresses_may_name_their_host() {
        assert_eq!(
            listen_address("localhost:50051"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 50051)))
        );
        assert_eq!(
            listen_address("[::1]:7"),
            Ok(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 7)))
        );
        for (bad, says) in [
            ("localhost", "is not host:port"),
            ("localhost:http", "is not a port number"),
            ("localhost:70000", "is not a port number"),
            ("no-such-host.invalid:1", "cannot resolve the host"),
        ] {
            let err = listen_address(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
