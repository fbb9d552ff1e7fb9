//! For tests of any crate that need PostgreSQL (feature `test-support`): the throwaway cluster
//! `scripts/with-postgres.sh` started, and an empty database of a test's own on it.

use std::sync::atomic::{AtomicU64, Ordering};

/// The variable `scripts/with-postgres.sh` sets to the cluster's superuser URL.
pub const URL_VAR: &str = "STIGMER_TEST_POSTGRES_URL";

/// The cluster's superuser URL. Panics, never skips, when it is missing: a suite that passes
/// without running its PostgreSQL tests would hide a broken backend.
pub fn server_url() -> String {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{URL_VAR} is not set, and this test needs a PostgreSQL server. Run it through \
             `make test` or scripts/with-postgres.sh, which start a throwaway cluster and set it: \
             scripts/with-postgres.sh cargo test …"
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

/// A connection to `url`, driven by a task of its own.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|err| panic!("cannot connect to the test server ({URL_VAR}): {err}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Creates an empty database with a name no other test (or test process) uses; returns its
/// name and URL.
pub async fn fresh_database() -> (String, String) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let server = server_url();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.subsec_nanos())
        .unwrap_or_default();
    let name = format!(
        "stigmer_test_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    connect(&server)
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|err| panic!("CREATE DATABASE {name}: {err:?}"));
    let url = with_database(&server, &name);
    (name, url)
}
