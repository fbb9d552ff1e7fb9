use std::str::FromStr;
use std::time::Duration;

use crate::errors::OpenError;

/// Everything needed to open a [`crate::PostgresStore`].
#[derive(Clone)]
pub struct PostgresConfig {
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE[?OPTION=VALUE…]` (or `postgresql://`). The
    /// database must exist; the store creates its tables in it. Never shown in errors or logs:
    /// only [`PostgresConfig::redacted_url`] is.
    pub url: String,
    /// Connections for reads (point reads, pages, the change log). The writer, the change feed
    /// and watch snapshots have connections of their own.
    pub pool_size: usize,
    /// How long connecting may take, at start-up and for every new pooled connection, and how
    /// long a call waits for a free connection before it fails as unavailable.
    pub connect_timeout: Duration,
    /// How long a write waits for a lock another session holds (another replica's batch, a
    /// psql session editing rows) before its callers get `Unavailable`, as SQLite's busy
    /// timeout does.
    pub lock_timeout: Duration,
    /// Most calls committed in one transaction, each in its own savepoint. PostgreSQL keeps the
    /// ids of up to 64 subtransactions per backend in shared memory; more make every other
    /// snapshot look them up on disk, so the default stays at 64.
    pub max_batch: usize,
    /// Calls that may wait for the writer before callers are slowed down.
    pub queue_depth: usize,
    /// Committed changes buffered for live watchers; a watcher further behind is ended.
    pub watch_buffer: usize,
    /// Watch snapshots that may be read at once, each holding a connection and a transaction.
    pub max_snapshots: usize,
    /// How often the change feed reads the log without being woken: the bound on how late a
    /// watcher hears of another replica's write when a notification is lost.
    pub poll_interval: Duration,
    /// Whether the change feed LISTENs for other replicas' notifications. Off for poolers
    /// that cannot hold a LISTEN (PgBouncer in transaction mode): their changes then reach
    /// this replica's watchers within `poll_interval`.
    pub listen: bool,
}

impl PostgresConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(5),
            max_batch: 64,
            queue_depth: 4096,
            watch_buffer: 8192,
            max_snapshots: 8,
            poll_interval: Duration::from_millis(500),
            listen: true,
        }
    }

    /// The URL without its password, for messages: `postgres://app@db.internal:5432/stigmer`.
    pub fn redacted_url(&self) -> String {
        match parse(&self.url) {
            Ok((_, target)) => target.to_string(),
            Err(_) => "postgres://(an invalid URL)".to_string(),
        }
    }

    /// The password in the URL, percent-decoded, if it has one.
    pub(crate) fn password(&self) -> Option<String> {
        let (pg, _) = parse(&self.url).ok()?;
        pg.get_password()
            .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
    }
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.redacted_url())
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("max_batch", &self.max_batch)
            .field("queue_depth", &self.queue_depth)
            .field("watch_buffer", &self.watch_buffer)
            .field("max_snapshots", &self.max_snapshots)
            .field("poll_interval", &self.poll_interval)
            .field("listen", &self.listen)
            .finish()
    }
}

/// Where a store connects, without credentials: what messages and `info` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) user: String,
    pub(crate) hosts: String,
    pub(crate) database: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "postgres://{}@{}/{}",
            self.user, self.hosts, self.database
        )
    }
}

/// Reads the URL. Only the URL forms are taken: a key=value string would be accepted by the
/// driver, but `--db` tells backends apart by the scheme.
pub(crate) fn parse(url: &str) -> Result<(tokio_postgres::Config, Target), OpenError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(OpenError::InvalidUrl {
            reason: "it must start with postgres:// or postgresql://".into(),
        });
    }
    let pg = tokio_postgres::Config::from_str(url).map_err(|err| OpenError::InvalidUrl {
        // The driver names the option it could not read, never its value.
        reason: crate::errors::chain(&err),
    })?;
    let user = pg
        .get_user()
        .map(str::to_string)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_default();
    if user.is_empty() {
        return Err(OpenError::InvalidUrl {
            reason: "it names no user".into(),
        });
    }
    let ports = pg.get_ports();
    let hosts = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports
                .get(i)
                .or_else(|| ports.first())
                .copied()
                .unwrap_or(5432);
            match host {
                tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                tokio_postgres::config::Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    if hosts.is_empty() {
        return Err(OpenError::InvalidUrl {
            reason: "it names no host".into(),
        });
    }
    let database = pg.get_dbname().map_or_else(|| user.clone(), str::to_string);
    Ok((
        pg,
        Target {
            user,
            hosts,
            database,
        },
    ))
}

/// The driver's settings for every connection the store makes.
pub(crate) fn connection_config(
    config: &PostgresConfig,
) -> Result<(tokio_postgres::Config, Target), OpenError> {
    let (mut pg, target) = parse(&config.url)?;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(config.connect_timeout);
    }
    if pg.get_application_name().is_none() {
        pg.application_name("stigmer-server");
    }
    // A server that vanished without closing its connections (a crash, a network partition)
    // is noticed within seconds instead of after the kernel's two hours.
    pg.keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3)
        .tcp_user_timeout(Duration::from_secs(30));
    Ok((pg, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_names_user_hosts_and_database_but_never_the_password() {
        let config = PostgresConfig::new("postgresql://app:s3cr%2Ft@db.internal:6543/stigmer");
        let (_, target) = parse(&config.url).expect("parse");
        assert_eq!(
            target.to_string(),
            "postgres://app@db.internal:6543/stigmer"
        );
        assert_eq!(config.password().as_deref(), Some("s3cr/t"));
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cr"), "{debug}");
    }

    #[test]
    fn only_postgres_urls_are_taken() {
        for url in [
            "host=localhost user=x",
            "sqlite:/tmp/x.db",
            "postgres://:5432/x",
        ] {
            assert!(
                matches!(parse(url), Err(OpenError::InvalidUrl { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn the_database_defaults_to_the_user_as_in_libpq() {
        let (_, target) = parse("postgres://alice@localhost").expect("parse");
        assert_eq!(target.to_string(), "postgres://alice@localhost:5432/alice");
    }
}
