//! A fresh PostgreSQL database for a test, on the cluster `scripts/with-postgres.sh` started
//! (`make test` runs the suites through it). A test that needs PostgreSQL fails, never skips,
//! when there is none.

/// The superuser URL of the throwaway cluster.
fn cluster_url() -> String {
    std::env::var("STIGMER_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "STIGMER_TEST_POSTGRES_URL is not set: run this test through `make test` or \
             `scripts/with-postgres.sh cargo test …`, which start a throwaway PostgreSQL cluster"
        )
    })
}

/// Creates an empty database of its own for one test and returns its URL.
pub async fn fresh_database(test: &str) -> String {
    let url = cluster_url();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test cluster");
    tokio::spawn(connection);
    let name = format!(
        "t_{}_{}",
        test.chars().take(40).collect::<String>(),
        std::process::id()
    );
    // One statement per call: neither may run inside the implicit transaction of a batch.
    for statement in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        client
            .batch_execute(&statement)
            .await
            .unwrap_or_else(|err| panic!("{statement}: {err:?}"));
    }
    let (base, _) = url.rsplit_once('/').expect("a database in the URL");
    format!("{base}/{name}")
}
