//! What every PostgreSQL test needs: the server named by STIGMER_TEST_POSTGRES_URL (a
//! superuser URL, as scripts/with-postgres.sh exports it) and a fresh database per test, so
//! that tests run in parallel without seeing each other.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use stigmer_postgres::{PostgresConfig, PostgresStore};
// Each test file uses some of these.
#[allow(unused_imports)]
pub use stigmer_postgres::test_support::{URL_VAR, connect, server_url, with_database};
use stigmer_store::{NewResource, Scope};

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

/// Creates an empty database with a name no other test (or test process) uses.
pub async fn fresh_database() -> TestDatabase {
    let (name, url) = stigmer_postgres::test_support::fresh_database().await;
    TestDatabase { url, name }
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
