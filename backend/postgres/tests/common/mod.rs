//! What every PostgreSQL test needs: the server named by STIGMER_TEST_POSTGRES_URL (a
//! superuser URL, as scripts/with-postgres.sh exports it) and a fresh database per test, so
//! that tests run in parallel without seeing each other.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use stigmer_postgres::{PostgresConfig, PostgresStore};
use stigmer_store::{NewResource, Scope};

pub const URL_VAR: &str = "STIGMER_TEST_POSTGRES_URL";

/// The server's superuser URL. Panics, never skips, when it is missing: a test suite that
/// passes without running its PostgreSQL tests would hide a broken store.
pub fn server_url() -> String {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{URL_VAR} is not set, and these tests need a PostgreSQL server. Run them through \
             scripts/with-postgres.sh, which starts a throwaway cluster and sets it: \
             scripts/with-postgres.sh cargo test -p stigmer-postgres"
        ),
    }
}

/// `url` with its database replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |at| at + 3);
    let authority_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |at| after_scheme + at);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// `url` with its password replaced by `password`.
pub fn with_password(url: &str, password: &str) -> String {
    let after_scheme = url.find("://").expect("a URL") + 3;
    let at = url[after_scheme..]
        .find('@')
        .expect("credentials in the URL")
        + after_scheme;
    let userinfo = &url[after_scheme..at];
    let user = userinfo.split(':').next().expect("a user");
    format!("{}{user}:{password}{}", &url[..after_scheme], &url[at..])
}

/// The password in `url`.
pub fn password_of(url: &str) -> String {
    let after_scheme = url.find("://").expect("a URL") + 3;
    let at = url[after_scheme..]
        .find('@')
        .expect("credentials in the URL")
        + after_scheme;
    url[after_scheme..at]
        .split_once(':')
        .map(|(_, password)| password.to_string())
        .expect("a password in the URL")
}

/// A database of its own for one test.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub fn config(&self) -> PostgresConfig {
        PostgresConfig {
            // Short, so that tests of the poll itself (notifications lost) stay quick.
            poll_interval: Duration::from_millis(200),
            ..PostgresConfig::new(self.url.clone())
        }
    }

    pub async fn open(&self) -> Arc<PostgresStore> {
        Arc::new(
            PostgresStore::open(&self.config())
                .await
                .expect("open the store"),
        )
    }

    /// Runs SQL as someone with psql would, outside the store.
    pub async fn sql(&self, statements: &str) {
        let client = connect(&self.url).await;
        client
            .batch_execute(statements)
            .await
            .unwrap_or_else(|err| panic!("{statements}: {err:?}"));
    }

    /// A client of its own, for tests that hold locks or read rows directly.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|err| panic!("cannot connect to the test server ({URL_VAR}): {err}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Creates an empty database with a name no other test (or test process) uses.
pub async fn fresh_database() -> TestDatabase {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let server = server_url();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .subsec_nanos();
    let name = format!(
        "stigmer_test_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let client = connect(&server).await;
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|err| panic!("CREATE DATABASE {name}: {err:?}"));
    TestDatabase {
        url: with_database(&server, &name),
        name,
    }
}

pub fn resource(id: &str, slug: &str) -> NewResource {
    NewResource {
        scope: Scope::new("Agent", "local"),
        id: id.into(),
        slug: slug.into(),
        data: format!(r#"{{"metadata":{{"id":"{id}","slug":"{slug}","tags":["t-{slug}"]}}}}"#),
        proto: None,
    }
}
