//! A fresh PostgreSQL database for a test, on the cluster `scripts/with-postgres.sh` started
//! (`make test` runs the suites through it). A test that needs PostgreSQL fails, never skips,
//! when there is none.

/// Creates an empty database of its own for one test and returns its URL.
pub async fn fresh_database() -> String {
    stigmer_postgres::test_support::fresh_database().await.1
}
