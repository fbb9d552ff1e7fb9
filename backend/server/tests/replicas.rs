//! Three real `stigmer-server` processes on one PostgreSQL database, as replicas behind a load
//! balancer: one slug space, one revision order every watcher sees the same, and no
//! acknowledged write lost when a replica is killed.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::binary::{BINARY, Binary, DEADLINE};
use common::postgres::fresh_database;
use stigmer_api::ai::stigmer::agentic::environment::v1::environment_command_controller_client::EnvironmentCommandControllerClient;
use stigmer_api::ai::stigmer::agentic::environment::v1::environment_query_controller_client::EnvironmentQueryControllerClient;
use stigmer_api::ai::stigmer::agentic::environment::v1::{Environment, EnvironmentSpec};
use stigmer_api::ai::stigmer::backend::v1::resource_service_client::ResourceServiceClient;
use stigmer_api::ai::stigmer::backend::v1::{InfoRequest, WatchEvent, WatchRequest};
use stigmer_api::ai::stigmer::commons::apiresource::{ApiResourceId, ApiResourceMetadata};
use tokio::process::Command;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

const MASTER_KEY: &str = "c3RpZ21lci1yZXBsaWNhLXRlc3Qta2V5LTMyLWJ5dGU=";

/// Environments have no parent and no children: each create is exactly one change.
fn environment(name: &str) -> Environment {
    Environment {
        metadata: Some(ApiResourceMetadata {
            name: name.to_string(),
            ..Default::default()
        }),
        spec: Some(EnvironmentSpec {
            description: "shared by replicas".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

struct Replica {
    binary: Binary,
    channel: Channel,
}

/// `count` servers on the database at `url`, each with its own home and the same master key.
async fn replicas(home: &Path, url: &str, count: usize) -> Vec<Replica> {
    let mut started = Vec::new();
    for n in 0..count {
        let home = home.join(format!("replica-{n}"));
        std::fs::create_dir_all(&home).expect("home");
        let mut command = Binary::configure(Command::new(BINARY), &home, None, "info");
        command
            .env("STIGMER_DB", url)
            .env("STIGMER_MASTER_KEY", MASTER_KEY);
        let binary = Binary::spawn(command).await;
        let channel = binary.channel().await;
        started.push(Replica { binary, channel });
    }
    started
}

fn commands(replica: &Replica) -> EnvironmentCommandControllerClient<Channel> {
    EnvironmentCommandControllerClient::new(replica.channel.clone())
}

async fn watch_from(replica: &Replica, since_revision: i64) -> Streaming<WatchEvent> {
    ResourceServiceClient::new(replica.channel.clone())
        .watch(WatchRequest {
            since_revision,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner()
}

async fn current_revision(replica: &Replica) -> i64 {
    let info = ResourceServiceClient::new(replica.channel.clone())
        .info(InfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.backend, "postgres");
    info.revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_of_one_slug_over_three_replicas_have_exactly_one_winner() {
    let home = tempfile::tempdir().expect("home");
    let url = fresh_database().await;
    let replicas = replicas(home.path(), &url, 3).await;
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..200 {
        let mut client = commands(&replicas[n % replicas.len()]);
        calls.spawn(async move { client.create(environment("contested")).await });
    }
    let (mut won, mut refused) = (0, 0);
    while let Some(result) = calls.join_next().await {
        match result.expect("task") {
            Ok(_) => won += 1,
            Err(status) if status.code() == Code::AlreadyExists => refused += 1,
            Err(status) => panic!("neither created nor ALREADY_EXISTS: {status:?}"),
        }
    }
    assert_eq!((won, refused), (1, 199));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watchers_on_every_replica_see_one_gap_free_sequence_while_all_three_write() {
    const PER_REPLICA: usize = 60;
    let home = tempfile::tempdir().expect("home");
    let url = fresh_database().await;
    let replicas = replicas(home.path(), &url, 3).await;
    // since_revision 0 would mean "a snapshot first", which would fold the first writes into
    // snapshot events: start after one write of our own.
    commands(&replicas[0])
        .create(environment("before-the-watch"))
        .await
        .expect("create");
    let start = current_revision(&replicas[0]).await;
    assert!(start > 0);
    let mut watches = Vec::new();
    for replica in &replicas {
        watches.push(watch_from(replica, start).await);
    }
    let mut writers = tokio::task::JoinSet::new();
    for (r, replica) in replicas.iter().enumerate() {
        for w in 0..4 {
            let mut client = commands(replica);
            writers.spawn(async move {
                for n in 0..PER_REPLICA / 4 {
                    client
                        .create(environment(&format!("env-{r}-{w}-{n}")))
                        .await
                        .expect("create");
                }
            });
        }
    }
    while let Some(done) = writers.join_next().await {
        done.expect("writer");
    }
    let total = PER_REPLICA * replicas.len();
    let mut sequences = Vec::new();
    for watch in &mut watches {
        let mut seen = Vec::new();
        while seen.len() < total {
            let event = tokio::time::timeout(DEADLINE, watch.message())
                .await
                .expect("the next event in time")
                .expect("a healthy watch")
                .expect("an open watch");
            seen.push((event.revision, event.id));
        }
        sequences.push(seen);
    }
    let first = &sequences[0];
    let revisions: Vec<i64> = first.iter().map(|(revision, _)| *revision).collect();
    let expected: Vec<i64> = (start + 1..=start + total as i64).collect();
    assert_eq!(revisions, expected, "one gap-free, duplicate-free order");
    let ids: BTreeSet<&String> = first.iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), total, "every create once");
    for (n, other) in sequences.iter().enumerate().skip(1) {
        assert_eq!(other, first, "replica {n} saw another sequence");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_dash_nine_of_a_replica_during_writes_loses_no_acknowledged_write() {
    let home = tempfile::tempdir().expect("home");
    let url = fresh_database().await;
    let mut replicas = replicas(home.path(), &url, 3).await;
    let (acknowledged_tx, mut acknowledged) = tokio::sync::mpsc::unbounded_channel();
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let mut client = commands(&replicas[0]);
        let acknowledged_tx = acknowledged_tx.clone();
        writers.spawn(async move {
            for n in 0.. {
                match client.create(environment(&format!("victim-{w}-{n}"))).await {
                    Ok(created) => {
                        let id = created.into_inner().metadata.expect("metadata").id;
                        let _ = acknowledged_tx.send(id);
                    }
                    Err(_) => return,
                }
            }
        });
    }
    drop(acknowledged_tx);
    // Kill once writes are flowing: after the 50th acknowledgement.
    let mut ids = Vec::new();
    while ids.len() < 50 {
        ids.push(acknowledged.recv().await.expect("writes acknowledged"));
    }
    replicas[0].binary.signal("-KILL");
    while let Some(done) = writers.join_next().await {
        done.expect("writer");
    }
    while let Some(id) = acknowledged.recv().await {
        ids.push(id);
    }
    let victim = replicas.remove(0);
    assert!(!Binary::wait_child(victim.binary.child).await.success());
    for replica in &replicas {
        let mut queries = EnvironmentQueryControllerClient::new(replica.channel.clone());
        for id in &ids {
            queries
                .get(ApiResourceId {
                    value: id.clone(),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|status| panic!("acknowledged {id} lost: {status:?}"));
        }
        commands(replica)
            .create(environment(&format!(
                "after-{}",
                current_revision(replica).await
            )))
            .await
            .expect("the survivors keep serving writes");
    }
}

/// What the binary says, and how fast, when it cannot use the database it was given.
async fn refused_start(url: &str, master_key: Option<&str>) -> String {
    let home = tempfile::tempdir().expect("home");
    let mut command = Binary::configure(Command::new(BINARY), home.path(), None, "info");
    command.env("STIGMER_DB", url);
    if let Some(key) = master_key {
        command.env("STIGMER_MASTER_KEY", key);
    }
    let started = std::time::Instant::now();
    let output = tokio::time::timeout(Duration::from_secs(15), command.output())
        .await
        .expect("the start failed within seconds")
        .expect("run stigmer-server");
    assert!(!output.status.success(), "started on {url}");
    assert!(started.elapsed() < Duration::from_secs(10));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn a_start_on_a_missing_database_a_wrong_password_or_without_a_key_fails_fast_and_clearly() {
    let url = fresh_database().await;
    let (base, _) = url.rsplit_once('/').expect("a database in the URL");
    let log = refused_start(&format!("{base}/no_such_db"), Some(MASTER_KEY)).await;
    assert!(
        log.contains("no_such_db") && log.contains("does not exist"),
        "{log}"
    );

    let (scheme_user, after_password) = base.rsplit_once('@').expect("credentials");
    let (user, password) = scheme_user
        .trim_start_matches("postgres://")
        .split_once(':')
        .expect("a password in the test URL");
    let wrong = format!("postgres://{user}:not-{password}@{after_password}/postgres");
    let log = refused_start(&wrong, Some(MASTER_KEY)).await;
    assert!(!log.contains(password), "the password leaked: {log}");
    assert!(log.to_lowercase().contains("password"), "{log}");

    let log = refused_start(&url, None).await;
    assert!(log.contains("STIGMER_MASTER_KEY"), "{log}");
    assert!(!log.contains(password), "the password leaked: {log}");
}
