//! Online backup and restore: `ResourceService/backup`, taken through the client library while
//! eight writers create, update and delete, gives a file that `stigmer-server restore` accepts
//! and a server then serves with exactly the resources and change log of the backup's
//! revision. Restore refuses a damaged file, a newer schema, an existing database without
//! --force and a database a server has open, and then leaves the target as it was.
//! PostgreSQL answers UNIMPLEMENTED and points to pg_dump.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::binary::BINARY;
use common::{TestServer, agent};
use serde_json::Value;
use sha2::{Digest, Sha256};
use stigmer_api::ai::stigmer::agentic::agent::v1::AgentId;
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_command_controller_client::AgentCommandControllerClient;
use stigmer_api::ai::stigmer::backend::v1::BackupRequest;
use stigmer_api::ai::stigmer::backend::v1::resource_service_client::ResourceServiceClient;
use stigmer_client::{
    BackendConfig, BackendType, Client, ClientConfig, LocalConfig, LocalTransport,
};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

const WRITERS: usize = 8;
/// Writes each writer makes before the backup starts, and at least as many after it ends.
const WRITES_AROUND: usize = 10;
const ENV_CREATE: &str = "/ai.stigmer.agentic.environment.v1.EnvironmentCommandController/create";
const MASTER_KEY: &str = "YmFja3VwLXRlc3QtbWFzdGVyLWtleS0zMi1ieXRlcyE=";

async fn client_of(server: &TestServer) -> Client {
    let config = ClientConfig {
        backend: BackendConfig {
            kind: BackendType::Local,
            local: LocalConfig {
                endpoint: server.addr.to_string(),
                transport: LocalTransport::Daemon,
                database: None,
            },
            cloud: None,
        },
        ..ClientConfig::default()
    };
    stigmer_client::connect(&config).await.expect("client")
}

/// A connection of its own, as a separate client would have.
async fn connection(server: &TestServer) -> Channel {
    Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

/// One writer: creates agents, updates every other one it made and deletes every third,
/// `WRITES_AROUND` times before it meets the others at `started`, then until `stop`, then
/// `WRITES_AROUND` times more.
async fn writer(
    channel: Channel,
    number: usize,
    started: Arc<Barrier>,
    stop: Arc<AtomicBool>,
) -> usize {
    let mut agents = AgentCommandControllerClient::new(channel);
    let mut writes = 0;
    let mut after_stop = 0;
    for n in 0.. {
        let created = agents
            .create(agent(&format!("writer {number} agent {n}")))
            .await
            .expect("create")
            .into_inner();
        writes += 1;
        if n % 2 == 0 {
            let mut update = created.clone();
            update.spec.as_mut().expect("spec").description = format!("updated by {number}");
            agents.update(update).await.expect("update");
            writes += 1;
        }
        if n % 3 == 0 {
            let id = created.metadata.expect("metadata").id;
            agents
                .delete(AgentId {
                    value: id,
                    ..Default::default()
                })
                .await
                .expect("delete");
            writes += 1;
        }
        if n + 1 == WRITES_AROUND {
            started.wait().await;
        }
        if n + 1 >= WRITES_AROUND && stop.load(Ordering::SeqCst) {
            after_stop += 1;
            if after_stop == WRITES_AROUND {
                break;
            }
        }
    }
    writes
}

/// Every row of `sql` (two text columns) as a map from the first to the second, parsed.
fn json_rows(db: &Path, sql: &str) -> BTreeMap<String, Value> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open");
    let mut stmt = conn.prepare(sql).expect("prepare");
    stmt.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })
    .expect("query")
    .map(|row| {
        let (key, data) = row.expect("row");
        (key, serde_json::from_str(&data).expect("JSON"))
    })
    .collect()
}

/// The resources the database at `db` held at `revision`, by id, rebuilt from its change log:
/// each id's last change at or before it, unless that was a delete.
fn resources_at(db: &Path, revision: i64) -> BTreeMap<String, Value> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open");
    let compacted: i64 = conn
        .query_row(
            "SELECT value FROM store_meta WHERE key = 'compacted'",
            [],
            |row| row.get(0),
        )
        .expect("compacted");
    assert_eq!(compacted, 0, "the log still starts at the beginning");
    let mut stmt = conn
        .prepare("SELECT id, type, data FROM changes WHERE revision <= ?1 ORDER BY revision")
        .expect("prepare");
    let mut resources = BTreeMap::new();
    let changes = stmt
        .query_map([revision], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })
        .expect("query");
    for change in changes {
        let (id, change_type, data) = change.expect("change");
        if change_type == "deleted" {
            resources.remove(&id);
        } else {
            resources.insert(id, serde_json::from_str(&data).expect("JSON"));
        }
    }
    resources
}

fn restore(file: &Path, db: &Path, force: bool) -> std::process::Output {
    let home = file.parent().expect("dir");
    let mut command = std::process::Command::new(BINARY);
    command
        .env_clear()
        .env("HOME", home)
        .arg("restore")
        .arg(file)
        .arg("--db")
        .arg(db);
    if force {
        command.arg("--force");
    }
    command.output().expect("run stigmer-server restore")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).expect("read")))
}

/// Files in `dir` whose names contain `part`.
fn files_named(dir: &Path, part: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.to_string_lossy().contains(part))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_under_load_restores_to_exactly_the_resources_of_its_revision() {
    let dir = tempfile::tempdir().expect("dir");
    let original = dir.path().join("original").join("stigmer.db");
    let server = TestServer::start_at(&original).await;
    // A sealed secret, which the restored server can open only with the original's key.
    server
        .call_json(
            ENV_CREATE,
            r#"{"metadata":{"name":"prod"},"spec":{"data":{"TOKEN":{"value":"s3cret","isSecret":true}}}}"#,
        )
        .await
        .expect("create an environment");
    let client = client_of(&server).await;

    let started = Arc::new(Barrier::new(WRITERS + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = JoinSet::new();
    for number in 0..WRITERS {
        let channel = connection(&server).await;
        writers.spawn(writer(
            channel,
            number,
            Arc::clone(&started),
            Arc::clone(&stop),
        ));
    }
    started.wait().await;
    let before = client.info().await.expect("info")["revision"]
        .as_str()
        .and_then(|r| r.parse::<i64>().ok())
        .expect("revision");
    let file = dir.path().join("backup.db");
    let backup = client.backup(&file).await.expect("backup");
    stop.store(true, Ordering::SeqCst);
    let mut writes = 0;
    while let Some(done) = writers.join_next().await {
        writes += done.expect("writer");
    }
    let after = client.info().await.expect("info")["revision"]
        .as_str()
        .and_then(|r| r.parse::<i64>().ok())
        .expect("revision");
    client.close().await.expect("close client");
    server.stop().await;
    assert!(writes >= WRITERS * 2 * WRITES_AROUND, "{writes} writes");
    assert!(
        before <= backup.revision && backup.revision < after,
        "backup at {}, writes from before {before} to {after}",
        backup.revision
    );
    assert_eq!(backup.format, "sqlite");
    assert!(!backup.master_key_id.is_empty());
    assert_eq!(std::fs::metadata(&file).expect("file").len(), backup.size);
    assert_eq!(sha256_of(&file), backup.sha256);
    assert!(
        files_named(&dir.path().join("original"), ".backup-").is_empty(),
        "the server's temporary copy is gone"
    );

    let restored = dir.path().join("restored").join("stigmer.db");
    let output = restore(&file, &restored, false);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}{stdout}", text(&output.stderr));
    assert!(
        stdout.contains(&format!("revision {}", backup.revision)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&backup.master_key_id)
            && stdout.contains(&format!(
                "copy the key file that holds it to {}",
                restored.with_extension("key").display()
            )),
        "the restore says which key to bring and where: {stdout}"
    );

    // Exactly the resources, and the change log, of the backup's revision.
    let expected = resources_at(&original, backup.revision);
    assert!(
        expected.len() > WRITERS * WRITES_AROUND,
        "{} resources",
        expected.len()
    );
    assert_eq!(
        json_rows(&restored, "SELECT id, data FROM resources"),
        expected,
        "the restored resources are the original's at revision {}",
        backup.revision
    );
    let log = |db: &Path| {
        json_rows(
            db,
            &format!(
                "SELECT format('%020d', revision), json_object('type', type, 'id', id, 'data', json(data)) FROM changes WHERE revision <= {}",
                backup.revision
            ),
        )
    };
    let restored_log = log(&restored);
    assert_eq!(restored_log.len() as i64, backup.revision);
    assert_eq!(restored_log, log(&original));

    // The key travels beside the database; then a server serves the copy and goes on from
    // its revision.
    std::fs::copy(
        original.with_extension("key"),
        restored.with_extension("key"),
    )
    .expect("copy the key file");
    let server = TestServer::start_at(&restored).await;
    let client = client_of(&server).await;
    let info = client.info().await.expect("info");
    assert_eq!(info["revision"], backup.revision.to_string());
    let exported = client.export(&[]).await.expect("export");
    assert!(exported.omitted.is_empty());
    let served: BTreeMap<String, Value> = exported
        .resources
        .into_iter()
        .map(|resource| {
            let id = resource["metadata"]["id"].as_str().expect("id").to_string();
            (id, resource)
        })
        .collect();
    let without_revisions: BTreeMap<String, Value> = expected
        .into_iter()
        .map(|(id, mut resource)| {
            resource["metadata"]
                .as_object_mut()
                .expect("metadata")
                .remove("revision");
            (id, resource)
        })
        .collect();
    assert_eq!(served, without_revisions);
    let created = AgentCommandControllerClient::new(server.channel.clone())
        .create(agent("after the restore"))
        .await
        .expect("a write after the restore")
        .into_inner();
    assert_eq!(
        created.metadata.expect("metadata").revision,
        backup.revision + 1,
        "revisions go on from the backup's"
    );
    client.close().await.expect("close client");
    server.stop().await;
}

#[tokio::test]
async fn restore_refuses_a_damaged_file_a_newer_schema_an_existing_database_and_one_in_use() {
    let dir = tempfile::tempdir().expect("dir");
    let server = TestServer::start_at(&dir.path().join("source.db")).await;
    AgentCommandControllerClient::new(server.channel.clone())
        .create(agent("kept"))
        .await
        .expect("create");
    let client = client_of(&server).await;
    let good = dir.path().join("good.db");
    let backup = client.backup(&good).await.expect("backup");
    client.close().await.expect("close client");
    server.stop().await;

    let target = dir.path().join("target").join("stigmer.db");
    let refused = |output: std::process::Output, says: &str| {
        let stderr = text(&output.stderr);
        assert!(
            !output.status.success(),
            "restored: {}",
            text(&output.stdout)
        );
        assert!(stderr.contains(says), "{stderr:?} does not say {says:?}");
    };
    let nothing_left = |dir: &Path| {
        assert!(
            files_named(dir, ".restore-").is_empty(),
            "a temporary copy was left behind"
        );
    };

    // Damaged: cut in half, a byte overwritten in every page, not a database at all.
    let bytes = std::fs::read(&good).expect("read");
    let truncated = dir.path().join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let scribbled = dir.path().join("scribbled.db");
    let mut damaged = bytes.clone();
    for page in damaged.chunks_mut(4096).skip(1) {
        page[..64].fill(0xA5);
    }
    std::fs::write(&scribbled, &damaged).expect("write");
    let text_file = dir.path().join("notes.txt");
    std::fs::write(&text_file, "not a database\n".repeat(200)).expect("write");
    for file in [&truncated, &scribbled, &text_file] {
        refused(
            restore(file, &target, false),
            "is not an intact SQLite database",
        );
        assert!(!target.exists(), "{} was restored", file.display());
        nothing_left(target.parent().expect("dir"));
    }

    // Written by a newer server: a migration this one does not have.
    let newer = dir.path().join("newer.db");
    std::fs::copy(&good, &newer).expect("copy");
    rusqlite::Connection::open(&newer)
        .expect("open")
        .execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES (9999, 'from_the_future', '2030-01-01T00:00:00Z', '1')",
            [],
        )
        .expect("add a migration");
    refused(
        restore(&newer, &target, false),
        "newer stigmer-server (schema version 9999",
    );
    assert!(!target.exists());

    // Not a stigmer database: intact, but without our tables.
    let foreign = dir.path().join("foreign.db");
    rusqlite::Connection::open(&foreign)
        .expect("open")
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .expect("make a database");
    refused(
        restore(&foreign, &target, false),
        "is not a stigmer-server database",
    );
    assert!(!target.exists());

    // The good one; then again only with --force.
    let output = restore(&good, &target, false);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let restored = sha256_of(&target);
    assert_eq!(restored, backup.sha256, "the file restored is the backup");
    refused(restore(&good, &target, false), "--force");
    assert_eq!(sha256_of(&target), restored);
    refused(
        restore(&scribbled, &target, true),
        "is not an intact SQLite database",
    );
    assert_eq!(
        sha256_of(&target),
        restored,
        "a refused --force changes nothing"
    );
    nothing_left(target.parent().expect("dir"));
    let output = restore(&good, &target, true);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("replacing the database that was there"));

    // Never under a running server, --force or not.
    std::fs::copy(dir.path().join("source.key"), target.with_extension("key"))
        .expect("copy the key file");
    let server = TestServer::start_at(&target).await;
    refused(
        restore(&good, &target, true),
        "in use by another stigmer-server",
    );
    server.stop().await;
    nothing_left(target.parent().expect("dir"));
}

#[tokio::test]
async fn postgres_answers_backup_with_unimplemented_and_points_to_pg_dump() {
    let url = common::postgres::fresh_database().await;
    let server = TestServer::start_with(|settings| {
        settings.database = stigmer_database::DatabaseOptions::new(url);
        settings.server.master_key = Some(MASTER_KEY.into());
    })
    .await;
    let status = ResourceServiceClient::new(server.channel.clone())
        .backup(BackupRequest {})
        .await
        .expect_err("no backup through the API on PostgreSQL");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert!(status.message().contains("pg_dump"), "{status:?}");
    server.stop().await;
}
