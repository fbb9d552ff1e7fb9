//! The database goes away while a store serves: calls fail at once as `Unavailable` (never
//! hanging, never showing the password), and when the server comes back the store serves
//! again by itself, its change feed included. The server is a cluster of this test's own
//! (scripts/postgres.sh), since stopping the shared one would fail every other test; one
//! more test cuts every connection of the shared one instead.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stigmer_postgres::{PostgresConfig, PostgresStore};
use stigmer_store::{Scope, Store, StoreError};

/// A cluster in a temporary directory, stopped when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    url: String,
}

impl Cluster {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres.sh")
    }

    fn run(&self, verb: &str) -> String {
        let output = Command::new(Self::script())
            .arg(verb)
            .arg(self.dir.path())
            .env("STIGMER_POSTGRES_THROWAWAY", "1")
            .output()
            .expect("run scripts/postgres.sh");
        assert!(
            output.status.success(),
            "scripts/postgres.sh {verb} failed (it runs PostgreSQL as the postgres user, which \
             needs root, as scripts/with-postgres.sh does): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("stigmer-outage.")
            .tempdir_in("/tmp")
            .expect("temporary directory");
        let mut cluster = Self {
            dir,
            url: String::new(),
        };
        cluster.url = cluster.run("start");
        cluster
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(Self::script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

fn unavailable<T: std::fmt::Debug>(result: Result<T, StoreError>, password: &str) {
    match result {
        Err(StoreError::Unavailable(message)) => {
            assert!(!message.contains(password), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_away_gives_unavailable_and_the_store_recovers_when_it_returns() {
    // Checked first so that a run outside scripts/with-postgres.sh says so, as every other
    // PostgreSQL test does, instead of failing on the cluster.
    common::server_url();
    let cluster = Cluster::start();
    let admin = common::connect(&cluster.url).await;
    admin
        .batch_execute("CREATE DATABASE outage")
        .await
        .expect("create database");
    drop(admin);
    let url = common::with_database(&cluster.url, "outage");
    let password = common::password_of(&url);
    let config = PostgresConfig {
        connect_timeout: Duration::from_secs(2),
        poll_interval: Duration::from_millis(200),
        ..PostgresConfig::new(url.clone())
    };
    let store = Arc::new(PostgresStore::open(&config).await.expect("open"));
    let other = Arc::new(
        PostgresStore::open(&config)
            .await
            .expect("open a second replica"),
    );
    let scope = Scope::new("Agent", "local");
    store
        .create(common::resource("agt-1", "one"))
        .await
        .expect("create");
    let mut live = store.subscribe();

    cluster.run("stop");
    let started = Instant::now();
    unavailable(
        store.create(common::resource("agt-2", "two")).await,
        &password,
    );
    unavailable(store.get(scope.clone(), "agt-1".into()).await, &password);
    unavailable(
        store
            .list(stigmer_store::ListQuery {
                scope: scope.clone(),
                after_id: None,
                limit: 10,
                filters: vec![],
                proto_only: false,
            })
            .await,
        &password,
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "calls during the outage took {:?}",
        started.elapsed()
    );

    cluster.run("start");
    let deadline = Instant::now() + Duration::from_secs(20);
    let created = loop {
        match store.create(common::resource("agt-2", "two")).await {
            Ok(row) => break row,
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("the store did not recover: {other:?}"),
        }
    };
    assert_eq!(created.revision, 2, "the failed create took no revision");
    assert!(
        store
            .get(scope.clone(), "agt-1".into())
            .await
            .expect("reads work again")
            .is_some()
    );
    // The feed works again: this store's write, and the other replica's.
    let heard = tokio::time::timeout(Duration::from_secs(10), live.recv())
        .await
        .expect("the change feed published again")
        .expect("a change");
    assert_eq!((heard.revision, heard.id.as_str()), (2, "agt-2"));
    let written = loop {
        match other.create(common::resource("agt-3", "three")).await {
            Ok(row) => break row,
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("the second replica did not recover: {other:?}"),
        }
    };
    let heard = tokio::time::timeout(Duration::from_secs(10), live.recv())
        .await
        .expect("the other replica's write arrived")
        .expect("a change");
    assert_eq!(
        (heard.revision, heard.id.as_str()),
        (written.revision, "agt-3")
    );
    store.close().await.expect("close");
    other.close().await.expect("close");
}

/// Every connection of the store cut at once (a failover, an administrator's
/// pg_terminate_backend): a call may fail as Unavailable, the next ones work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_by_the_server_are_replaced() {
    let db = common::fresh_database().await;
    let store = db.open().await;
    let scope = Scope::new("Agent", "local");
    store
        .create(common::resource("agt-1", "one"))
        .await
        .expect("create");
    let mut live = store.subscribe();
    let admin = common::connect(&common::server_url()).await;
    let cut: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
            &[&db.name],
        )
        .await
        .expect("terminate")
        .get(0);
    assert!(cut >= 4, "the store held {cut} connections");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut failures = 0;
    let created = loop {
        match store.create(common::resource("agt-2", "two")).await {
            Ok(row) => break row,
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => failures += 1,
            other => panic!("{other:?}"),
        }
    };
    assert!(failures <= 2, "{failures} failed writes before one worked");
    loop {
        match store.get(scope.clone(), "agt-2".into()).await {
            Ok(row) => {
                assert_eq!(row.expect("agt-2").revision, created.revision);
                break;
            }
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {}
            other => panic!("{other:?}"),
        }
    }
    let heard = tokio::time::timeout(Duration::from_secs(10), live.recv())
        .await
        .expect("the change feed works again")
        .expect("a change");
    assert_eq!(heard.revision, created.revision);
    store.close().await.expect("close");
}
