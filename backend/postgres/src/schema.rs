//! Start-up: one direct connection that tells apart the ways a server can refuse us, applies
//! the migrations under an advisory lock, and reads the facts `info` reports.

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::config::Target;
use crate::errors::{OpenError, chain};

mod embedded {
    refinery::embed_migrations!("../../migrations/postgres");
}

/// The advisory lock key every replica takes around migrating ("STIGMER" in ASCII), so that
/// replicas starting at once apply each migration once, one after the other.
const MIGRATION_LOCK: i64 = 0x0053_5449_474d_4552;

/// Connects once, within `timeout` for everything (socket, TLS negotiation, authentication):
/// the driver's own connect timeout covers the socket only, and a server that accepts and
/// then says nothing would otherwise hold start-up for ever.
pub(crate) async fn connect(
    pg: &tokio_postgres::Config,
    target: &Target,
    timeout: Duration,
) -> Result<Client, OpenError> {
    let attempt = tokio::time::timeout(timeout, pg.connect(NoTls)).await;
    let (client, connection) = match attempt {
        Err(_) => {
            return Err(OpenError::Unreachable {
                target: target.to_string(),
                reason: format!(
                    "no answer within {} ms (is a PostgreSQL server listening there?)",
                    timeout.as_millis()
                ),
            });
        }
        Ok(Err(err)) => return Err(connect_error(&err, target)),
        Ok(Ok(pair)) => pair,
    };
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %chain(&err), "a start-up connection to PostgreSQL ended");
        }
    });
    Ok(client)
}

/// Says which of the operator's mistakes (or the server's states) a failed connect was.
pub(crate) fn connect_error(err: &tokio_postgres::Error, target: &Target) -> OpenError {
    let target_text = target.to_string();
    if let Some(db) = err.as_db_error() {
        let code = db.code();
        return if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            OpenError::Authentication {
                target: target_text,
                user: target.user.clone(),
                reason: db.message().to_string(),
            }
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            OpenError::MissingDatabase {
                target: target_text,
                database: target.database.clone(),
            }
        } else {
            OpenError::Refused {
                target: target_text,
                reason: format!("{} ({})", db.message(), code.code()),
            }
        };
    }
    let text = chain(err);
    if text.contains("password missing") || text.starts_with("authentication error") {
        return OpenError::Authentication {
            target: target_text,
            user: target.user.clone(),
            reason: text,
        };
    }
    OpenError::Unreachable {
        target: target_text,
        reason: text,
    }
}

/// Applies every migration the database has not seen yet, each in its own transaction, and
/// refuses a database with migrations this binary does not know (a newer server wrote it).
/// Replicas starting at once wait for each other on an advisory lock held by this session.
pub(crate) async fn migrate(client: &mut Client, target: &Target) -> Result<(), OpenError> {
    let failed = |reason: String| OpenError::Migration {
        target: target.to_string(),
        reason,
    };
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|err| failed(format!("taking the migration lock: {}", chain(&err))))?;
    let report = embedded::migrations::runner()
        .set_abort_divergent(true)
        .set_abort_missing(true)
        .run_async(client)
        .await;
    // The lock also goes with the session; unlocking now lets the next replica in at once.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let report = report.map_err(|err| failed(chain(&err)))?;
    unlocked.map_err(|err| failed(format!("releasing the migration lock: {}", chain(&err))))?;
    for migration in report.applied_migrations() {
        tracing::info!(
            version = migration.version(),
            name = migration.name(),
            "applied database migration"
        );
    }
    Ok(())
}

/// What `info` says the store runs on, read once at start-up.
pub(crate) async fn describe(client: &Client, target: &Target) -> Result<String, OpenError> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('synchronous_commit')",
            &[],
        )
        .await
        .map_err(|err| OpenError::Setup {
            target: target.to_string(),
            reason: chain(&err),
        })?;
    let version: String = row.get(0);
    let synchronous: String = row.get(1);
    Ok(format!(
        "PostgreSQL {version}, synchronous_commit={synchronous}"
    ))
}
