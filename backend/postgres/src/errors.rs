use deadpool_postgres::{HookError, PoolError};
use stigmer_store::StoreError;
use thiserror::Error;
use tokio_postgres::error::SqlState;

/// Why the store could not be opened. Shown to the operator at start-up, never to a client.
/// No variant holds the URL or its password: each names the server as
/// `postgres://USER@HOST:PORT/DATABASE`.
#[derive(Debug, Error)]
pub enum OpenError {
    #[error(
        "invalid PostgreSQL URL: {reason} (expected postgres://USER:PASSWORD@HOST:PORT/DATABASE)"
    )]
    InvalidUrl { reason: String },
    #[error("cannot reach PostgreSQL at {target}: {reason}")]
    Unreachable { target: String, reason: String },
    #[error(
        "PostgreSQL at {target} refused the credentials of user {user:?}: {reason}; check the user and password in the URL"
    )]
    Authentication {
        target: String,
        user: String,
        reason: String,
    },
    #[error(
        "database {database:?} does not exist on PostgreSQL at {target}; create it first (CREATE DATABASE {database})"
    )]
    MissingDatabase { target: String, database: String },
    #[error("PostgreSQL at {target} refused the connection: {reason}")]
    Refused { target: String, reason: String },
    #[error("cannot migrate the database schema of {target}: {reason}")]
    Migration { target: String, reason: String },
    #[error("cannot start the store on {target}: {reason}")]
    Setup { target: String, reason: String },
}

impl OpenError {
    /// The same error with every occurrence of `secret` masked: a last line of defence for
    /// text that came from the driver or the server.
    pub(crate) fn redacted(self, secret: Option<&str>) -> Self {
        let Some(secret) = secret.filter(|s| s.len() >= 3) else {
            return self;
        };
        let clean = |text: String| text.replace(secret, "***");
        match self {
            Self::InvalidUrl { reason } => Self::InvalidUrl {
                reason: clean(reason),
            },
            Self::Unreachable { target, reason } => Self::Unreachable {
                target,
                reason: clean(reason),
            },
            Self::Authentication {
                target,
                user,
                reason,
            } => Self::Authentication {
                target,
                user,
                reason: clean(reason),
            },
            Self::MissingDatabase { target, database } => {
                Self::MissingDatabase { target, database }
            }
            Self::Refused { target, reason } => Self::Refused {
                target,
                reason: clean(reason),
            },
            Self::Migration { target, reason } => Self::Migration {
                target,
                reason: clean(reason),
            },
            Self::Setup { target, reason } => Self::Setup {
                target,
                reason: clean(reason),
            },
        }
    }
}

/// An error and its sources, one after the other: the driver's own message says only which
/// step failed ("error connecting to server"), its source says why.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// SQLSTATEs after which the same call may well work a moment later: the server is going
/// away or coming back, has no connection to spare, or picked this transaction as a victim.
fn transient(code: &SqlState) -> bool {
    let text = code.code();
    text.starts_with("08")
        || [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::QUERY_CANCELED,
            SqlState::OUT_OF_MEMORY,
            SqlState::READ_ONLY_SQL_TRANSACTION,
        ]
        .contains(code)
}

/// Maps a PostgreSQL failure that has no more specific meaning to the store's error.
pub(crate) fn store_error(err: tokio_postgres::Error) -> StoreError {
    if let Some(db) = err.as_db_error() {
        let code = db.code();
        if *code == SqlState::DISK_FULL {
            return StoreError::Full;
        }
        if transient(code) {
            return StoreError::Unavailable(format!(
                "PostgreSQL: {} ({}); retry shortly",
                db.message(),
                code.code()
            ));
        }
        return StoreError::Internal(format!(
            "PostgreSQL: {} ({}){}",
            db.message(),
            code.code(),
            db.detail().map(|d| format!(": {d}")).unwrap_or_default()
        ));
    }
    if err.is_closed() || io_source(&err) {
        return StoreError::Unavailable(format!(
            "the connection to PostgreSQL was lost ({}); retry shortly",
            chain(&err)
        ));
    }
    StoreError::Internal(format!("PostgreSQL: {}", chain(&err)))
}

fn io_source(err: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    // "timeout waiting for server" and "error communicating with the server" carry no source.
    let text = err.to_string();
    text.starts_with("timeout") || text.starts_with("error communicating")
}

/// Maps a failure to get a pooled connection.
pub(crate) fn pool_error(err: PoolError) -> StoreError {
    match err {
        PoolError::Timeout(_) => StoreError::Unavailable(
            "no connection to PostgreSQL could be had in time; retry shortly".into(),
        ),
        PoolError::Backend(err) | PoolError::PostCreateHook(HookError::Backend(err)) => {
            store_error(err)
        }
        PoolError::Closed => StoreError::Closed,
        other => StoreError::Internal(format!("PostgreSQL connection pool: {other}")),
    }
}

/// True when the error is the unique index on (kind, org_id, slug), not the primary key.
pub(crate) fn is_slug_violation(err: &tokio_postgres::Error) -> bool {
    err.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::UNIQUE_VIOLATION
            && db.constraint() == Some("resources_kind_org_slug")
    })
}
