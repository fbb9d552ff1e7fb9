//! What an operator relies on: reflection for grpcurl, health, restarts that keep everything,
//! the binary's defaults, its per-call log lines, and clean exits on SIGTERM (a full disk
//! included) and survival of kill -9.

mod common;

use std::io::{ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use common::binary::{BINARY, Binary, DEADLINE, Log};
use common::{TestServer, agent};
use prost::Message;
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_command_controller_client::AgentCommandControllerClient;
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_query_controller_client::AgentQueryControllerClient;
use stigmer_api::ai::stigmer::agentic::agent::v1::{AgentId, ListAgentsRequest};
use stigmer_api::ai::stigmer::backend::v1::InfoRequest;
use stigmer_api::ai::stigmer::backend::v1::resource_service_client::ResourceServiceClient;
use stigmer_database::{DatabaseOptions, Durability};
use stigmer_grpc::ServerConfig;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1 as reflection;

async fn reflect(
    channel: &Channel,
    request: reflection::server_reflection_request::MessageRequest,
) -> reflection::server_reflection_response::MessageResponse {
    let mut client =
        reflection::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = reflection::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection call")
        .into_inner();
    responses
        .message()
        .await
        .expect("reflection response")
        .expect("one response")
        .message_response
        .expect("a message response")
}

#[tokio::test]
async fn reflection_lists_every_service_and_describes_messages() {
    let server = TestServer::start().await;
    use reflection::server_reflection_request::MessageRequest;
    use reflection::server_reflection_response::MessageResponse;

    let MessageResponse::ListServicesResponse(list) =
        reflect(&server.channel, MessageRequest::ListServices(String::new())).await
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    let kinds = [
        "agent.v1.Agent",
        "agentexecution.v1.AgentExecution",
        "session.v1.Session",
        "skill.v1.Skill",
        "mcpserver.v1.McpServer",
        "agentinstance.v1.AgentInstance",
        "workflow.v1.Workflow",
        "workflowinstance.v1.WorkflowInstance",
        "workflowexecution.v1.WorkflowExecution",
        "environment.v1.Environment",
        "executioncontext.v1.ExecutionContext",
    ];
    for kind in kinds {
        for role in ["CommandController", "QueryController"] {
            let service = format!("ai.stigmer.agentic.{kind}{role}");
            assert!(names.contains(&service), "{service} missing from {names:?}");
        }
    }
    for service in [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(names.iter().any(|n| n == service), "{service} missing");
    }

    for symbol in [
        "ai.stigmer.agentic.agent.v1.Agent",
        "ai.stigmer.agentic.agent.v1.AgentQueryController",
        "google.rpc.BadRequest",
        "grpc.health.v1.Health",
    ] {
        let MessageResponse::FileDescriptorResponse(files) = reflect(
            &server.channel,
            MessageRequest::FileContainingSymbol(symbol.into()),
        )
        .await
        else {
            panic!("expected descriptors for {symbol}");
        };
        let package = symbol.rsplit_once('.').map(|(p, _)| p).unwrap_or_default();
        let found = files.file_descriptor_proto.iter().any(|bytes| {
            prost_types::FileDescriptorProto::decode(bytes.as_slice())
                .map(|file| file.package() == package)
                .unwrap_or(false)
        });
        assert!(found, "no file of package {package} for {symbol}");
    }

    // grpcurl 1.8 asks the older v1alpha service.
    let mut client =
        tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient::new(
            server.channel.clone(),
        );
    let request = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let response = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("v1alpha call")
        .into_inner()
        .message()
        .await
        .expect("v1alpha response")
        .expect("one response");
    let text = format!("{response:?}");
    assert!(text.contains("ai.stigmer.agentic.agent.v1.AgentCommandController"));
}

#[tokio::test]
async fn health_answers_serving_for_the_server_and_each_service() {
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel.clone());
    for service in ["", "ai.stigmer.agentic.workflow.v1.WorkflowQueryController"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(
            response.status(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }
}

#[tokio::test]
async fn a_restart_on_the_same_file_keeps_everything() {
    let server = TestServer::start().await;
    let db = server.db.clone();
    let mut command = AgentCommandControllerClient::new(server.channel.clone());
    let mut created = Vec::new();
    for n in 0..20 {
        created.push(
            command
                .create(agent(&format!("keeper {n}")))
                .await
                .expect("create")
                .into_inner(),
        );
    }
    let dir = server.stop().await;

    let again = TestServer::start_at(&db).await;
    let mut query = AgentQueryControllerClient::new(again.channel.clone());
    let listed = query
        .list(ListAgentsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .items;
    assert_eq!(listed, created);
    // Revisions keep growing after a restart.
    let mut command = AgentCommandControllerClient::new(again.channel.clone());
    let newer = command
        .create(agent("after restart"))
        .await
        .expect("create")
        .into_inner();
    let last = created
        .last()
        .and_then(|a| a.metadata.as_ref())
        .map(|m| m.revision);
    assert!(newer.metadata.as_ref().map(|m| m.revision) > last);
    again.stop().await;
    drop(dir);
}

#[tokio::test]
#[should_panic(expected = "log line is not JSON: thread 'main' panicked at src/main.rs")]
async fn a_log_line_that_is_not_json_fails_the_test_reading_it() {
    let stderr: &[u8] =
        b"{\"level\":\"INFO\"}\nthread 'main' panicked at src/main.rs\n{\"level\":\"INFO\"}\n";
    Log::read(stderr).drain().await;
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn the_binary_defaults_to_a_private_home_database_logs_each_call_and_exits_cleanly_on_sigterm()
 {
    let home = tempfile::tempdir().expect("home");
    // Successful calls log at debug; failed ones at info (checked below).
    let mut binary = Binary::start_logging(home.path(), None, "info,stigmer_grpc=debug").await;
    let mut command = AgentCommandControllerClient::new(binary.channel().await);
    let created = command
        .create(agent("Logged"))
        .await
        .expect("create")
        .into_inner();
    let id = created.metadata.as_ref().expect("metadata").id.clone();

    let line = binary
        .log_line(|line| line["fields"]["message"] == "rpc" && line["span"]["id"] == id.as_str())
        .await;
    assert_eq!(
        line["span"]["method"],
        "/ai.stigmer.agentic.agent.v1.AgentCommandController/create"
    );
    assert_eq!(line["span"]["kind"], "Agent");
    assert_eq!(line["fields"]["code"], "Ok");
    assert!(line["fields"]["duration_ms"].as_f64().is_some());

    let status = command
        .create(agent("Logged"))
        .await
        .expect_err("duplicate");
    assert_eq!(status.code(), tonic::Code::AlreadyExists);
    let line = binary
        .log_line(|line| line["fields"]["message"] == "rpc" && line["fields"]["code"] != "Ok")
        .await;
    assert_eq!(line["fields"]["code"], "AlreadyExists");

    binary.signal("-TERM");
    let exit = binary.wait().await;
    assert!(exit.success(), "exit status {exit:?}");

    let dir = home.path().join(".stigmer");
    let db = dir.join("stigmer.db");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&db), 0o600);
    let wal = dir.join("stigmer.db-wal");
    assert!(
        !wal.exists() || std::fs::metadata(&wal).expect("wal").len() == 0,
        "the WAL was checkpointed into the database"
    );
    let stored: i64 = rusqlite::Connection::open(&db)
        .expect("open")
        .query_row(
            "SELECT count(*) FROM resources WHERE id = ?1",
            [&id],
            |row| row.get(0),
        )
        .expect("count");
    assert_eq!(stored, 1);
}

/// A client's huge value is echoed clipped, with its length, in the status and in the log: a
/// whole 1 MiB id once made trailers too large for gRPC clients to read, which showed them
/// RESOURCE_EXHAUSTED instead of the real code, and filled the log.
#[tokio::test]
async fn huge_inputs_are_clipped_in_errors_and_log_lines() {
    let home = tempfile::tempdir().expect("home");
    // NotFound logs at debug (an answer, not a failure).
    let mut binary = Binary::start_logging(home.path(), None, "info,stigmer_grpc=debug").await;
    let mut query = AgentQueryControllerClient::new(binary.channel().await);
    let huge = format!("agt-{}", "x".repeat(1 << 20));
    let status = query
        .get(AgentId {
            value: huge.clone(),
            ..Default::default()
        })
        .await
        .expect_err("no such agent");
    assert_eq!(status.code(), tonic::Code::NotFound, "{}", status.message());
    assert!(status.message().len() < 1024, "{}", status.message().len());
    assert!(
        status
            .message()
            .contains(&format!("({} bytes)", huge.len())),
        "{}",
        status.message()
    );
    let line = binary
        .log_line(|line| line["fields"]["message"] == "rpc" && line["fields"]["code"] == "NotFound")
        .await;
    let logged = line["span"]["id"].as_str().expect("the id is logged");
    assert!(logged.len() < 1024, "{}", logged.len());
    assert!(logged.starts_with("agt-xxx"));
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_dash_nine() {
    let home = tempfile::tempdir().expect("home");
    let db = home.path().join("crash.db");
    let binary = Binary::start(home.path(), Some(&db)).await;
    let channel = binary.channel().await;
    let tasks: Vec<_> = (0..64)
        .map(|n| {
            let mut command = AgentCommandControllerClient::new(channel.clone());
            tokio::spawn(async move {
                command
                    .create(agent(&format!("durable {n}")))
                    .await
                    .expect("create")
                    .into_inner()
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.push(task.await.expect("task"));
    }
    binary.signal("-KILL");
    let exit = binary.wait().await;
    assert!(!exit.success());

    let binary = Binary::start(home.path(), Some(&db)).await;
    let mut query = AgentQueryControllerClient::new(binary.channel().await);
    for agent in &acknowledged {
        let id = agent.metadata.as_ref().expect("metadata").id.clone();
        let found = query
            .get(AgentId {
                value: id,
                ..Default::default()
            })
            .await
            .expect("acknowledged agent survived")
            .into_inner();
        assert_eq!(&found, agent);
    }
    binary.signal("-TERM");
    assert!(binary.wait().await.success());
}

/// ServerInfo.database names the level SQLite reports for the writer connection after it was
/// set, so this fails when a value of --synchronous or STIGMER_SYNCHRONOUS stops reaching the
/// connection. Fails when `stigmer_database::open` ignores the setting: "synchronous=FULL" for `normal`;
/// and when the pragma is not set, or info formats the config instead of reading it back.
#[tokio::test]
async fn the_writer_commits_at_the_synchronous_level_the_flag_or_the_variable_asks_for() {
    let home = tempfile::tempdir().expect("home");
    let db = home.path().join("sync.db");
    let names: Vec<String> = Durability::value_variants()
        .iter()
        .map(|value| {
            value
                .to_possible_value()
                .expect("a listed value")
                .get_name()
                .to_string()
        })
        .collect();
    assert!(names.len() >= 2, "{names:?}");
    // (flag, variable, expected level): the default, each value through the variable alone,
    // and each through the flag over a variable that says otherwise.
    let mut cases = vec![(None, None, "FULL".to_string())];
    for (n, name) in names.iter().enumerate() {
        let other = &names[(n + 1) % names.len()];
        cases.push((None, Some(name), name.to_uppercase()));
        cases.push((Some(name), Some(other), name.to_uppercase()));
    }
    for (flag, variable, expected) in cases {
        let mut command = Binary::configure(Command::new(BINARY), home.path(), Some(&db), "info");
        if let Some(flag) = flag {
            command.args(["--synchronous", flag]);
        }
        if let Some(variable) = variable {
            command.env("STIGMER_SYNCHRONOUS", variable);
        }
        let binary = Binary::spawn(command).await;
        let info = ResourceServiceClient::new(binary.channel().await)
            .info(InfoRequest {})
            .await
            .expect("info")
            .into_inner();
        assert!(
            info.database
                .ends_with(&format!(", synchronous={expected}")),
            "--synchronous {flag:?}, STIGMER_SYNCHRONOUS={variable:?}: {}",
            info.database
        );
        binary.signal("-TERM");
        assert!(binary.wait().await.success());
    }
}

/// The database and WAL files byte for byte, the rows and the revision.
fn database_state(db: &Path) -> (Vec<u8>, Vec<u8>, i64, i64) {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open read-only");
    let rows = conn
        .query_row("SELECT count(*) FROM resources", [], |row| row.get(0))
        .expect("count");
    let revision = conn
        .query_row(
            "SELECT value FROM store_meta WHERE key = 'revision'",
            [],
            |row| row.get(0),
        )
        .expect("revision");
    drop(conn);
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    (
        std::fs::read(db).expect("db"),
        std::fs::read(wal).unwrap_or_default(),
        rows,
        revision,
    )
}

/// "One process owns a database file at a time": a second server, the binary or one in this
/// process, is refused with the lock file and the owner's pid, and writes nothing. Fails when
/// `schema::lock` takes no lock: "a second server started on a database in use"; and without
/// the pid in the lock file: "... (or a key rotation), pid unknown, which holds the lock ...".
#[tokio::test]
async fn a_second_server_on_a_database_in_use_is_refused_naming_the_lock_and_the_owner() {
    let home = tempfile::tempdir().expect("home");
    let db = home.path().join("owned.db");
    let lock = format!("{}.lock", db.display());
    let start = || {
        let mut command = Binary::configure(Command::new(BINARY), home.path(), Some(&db), "info");
        // Nothing of its own to write while the other one tries.
        command.env("STIGMER_COMPACT_EVERY_SECS", "0");
        command
    };
    let owner = Binary::spawn(start()).await;
    let pid = owner.child.id().expect("running");
    let created = AgentCommandControllerClient::new(owner.channel().await)
        .create(agent("Owned"))
        .await
        .expect("create")
        .into_inner();
    let before = database_state(&db);

    let logged = match Binary::try_spawn(start()).await {
        Ok(_) => panic!("a second server started on a database in use"),
        Err(logged) => logged,
    };
    let refusal = logged
        .iter()
        .find(|line| line["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no error logged: {logged:#?}"));
    let message = refusal["fields"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&lock) && message.contains(&format!("pid {pid},")),
        "{message}"
    );

    let options = stigmer_database::DatabaseOptions::sqlite(&db);
    let message = match stigmer_database::open(&options).await {
        Ok(_) => panic!("a server in this process started on a database in use"),
        Err(err) => err.to_string(),
    };
    assert!(
        message.contains(&lock) && message.contains(&format!("pid {pid},")),
        "{message}"
    );

    assert!(
        database_state(&db) == before,
        "a refused server changed the database"
    );
    let recorded = std::fs::read_to_string(&lock).expect("lock file");
    assert_eq!(
        recorded.trim(),
        pid.to_string(),
        "the lock still names the owner"
    );
    let id = created.metadata.expect("metadata").id;
    AgentQueryControllerClient::new(owner.channel().await)
        .get(AgentId {
            value: id,
            ..Default::default()
        })
        .await
        .expect("the owner serves on");
    owner.signal("-TERM");
    assert!(owner.wait().await.success());
}

/// The correlation id a client was given for an internal error.
fn correlation_id(status: &tonic::Status) -> String {
    status
        .message()
        .split("correlation id ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no correlation id in {:?}", status.message()))
        .to_string()
}

/// A panic while serving a call, in its handler or while its response body is made, reaches
/// the client as INTERNAL with a correlation id and nothing of the panic, is logged at error
/// with the same id in the call's span, keeps the log JSON, and leaves the server serving.
/// The panics come from the `test-faults` header. Fails without `Caught` around the handler:
/// "call: Status { code: Cancelled, message: \"h2 protocol error: http2 error\" ..."; without
/// `CaughtBody`: "body: Status { code: Cancelled, message: \"h2 protocol error: error reading
/// a body from connection\" ..."; without the server's panic hook: "log line is not JSON: "
/// (the default hook's plain text).
#[tokio::test]
async fn a_panic_in_a_call_is_internal_with_a_correlation_id_that_the_log_shares() {
    let home = tempfile::tempdir().expect("home");
    let mut binary = Binary::start(home.path(), None).await;
    let feed = ResourceServiceClient::new(binary.channel().await);
    for fault in ["call", "body"] {
        let mut request = tonic::Request::new(InfoRequest {});
        request.metadata_mut().insert(
            "x-stigmer-test-panic",
            fault.parse().expect("a header value"),
        );
        let status = feed.clone().info(request).await.expect_err("it panicked");
        assert_eq!(status.code(), tonic::Code::Internal, "{fault}: {status:?}");
        assert!(
            !status.message().contains("panic") && !status.message().contains("test asked"),
            "{fault}: {}",
            status.message()
        );
        let id = correlation_id(&status);
        let logged = binary
            .log_line(|line| line["fields"]["correlation_id"] == id.as_str())
            .await;
        assert_eq!(logged["level"], "ERROR", "{logged}");
        assert_eq!(
            logged["span"]["method"], "/ai.stigmer.backend.v1.ResourceService/info",
            "{logged}"
        );
        let detail = logged["fields"]["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("a test asked this"), "{fault}: {detail}");
    }
    let info = feed
        .clone()
        .info(InfoRequest {})
        .await
        .expect("the server serves on");
    assert_eq!(info.into_inner().backend, "sqlite");
    binary.signal("-TERM");
    assert!(binary.wait().await.success());
}

/// A tmpfs on a fresh temporary directory, unmounted when dropped. Mounting needs root: where
/// it is refused the test says so and passes, except under CI, which runs as root and where a
/// disk-full test that silently skips would test nothing.
struct SmallDisk {
    dir: tempfile::TempDir,
    fillers: Vec<PathBuf>,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("dir");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        let why = match mounted {
            Ok(out) if out.status.success() => {
                return Some(Self {
                    dir,
                    fillers: Vec::new(),
                });
            }
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
            Err(err) => err.to_string(),
        };
        let ci = std::env::var("CI").is_ok_and(|ci| !matches!(ci.as_str(), "" | "0" | "false"));
        assert!(!ci, "CI must be able to mount a tmpfs (run as root): {why}");
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root): {why}");
        None
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file until the file system refuses another byte.
    fn fill(&mut self) {
        let path = self.path(&format!("filler-{}", self.fillers.len()));
        let mut file = std::fs::File::create_new(&path).expect("filler");
        self.fillers.push(path);
        let chunk = vec![7u8; 64 * 1024];
        loop {
            match file.write_all(&chunk) {
                Ok(()) => {}
                Err(err) if err.kind() == ErrorKind::StorageFull => return,
                Err(err) => panic!("filling the disk: {err}"),
            }
        }
    }

    fn free(&mut self) {
        for filler in self.fillers.drain(..) {
            std::fs::remove_file(filler).expect("remove filler");
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy, so a failed test with files still open leaves no mount behind.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The final checkpoint cannot be written on a full disk. That loses nothing, since every
/// acknowledged write is in the WAL, so the server says so and exits 0, and the next start
/// replays the WAL.
#[tokio::test]
async fn sigterm_on_a_full_disk_exits_cleanly_and_loses_nothing() {
    let Some(mut disk) = SmallDisk::mount("32m") else {
        return;
    };
    let home = tempfile::tempdir().expect("home");
    let db = disk.path("stigmer.db");
    let binary = Binary::start(home.path(), Some(&db)).await;
    let mut command = AgentCommandControllerClient::new(binary.channel().await);
    let mut acknowledged = vec![command.create(agent("Kept")).await.expect("create")];
    disk.fill();
    let refused = loop {
        assert!(acknowledged.len() < 100, "the disk never filled up");
        match command
            .create(agent(&format!("More {}", acknowledged.len())))
            .await
        {
            Ok(created) => acknowledged.push(created),
            Err(status) => break status,
        }
    };
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    // The disk reserve the server gave back goes too: now the checkpoint has no room at all.
    disk.fill();

    binary.signal("-TERM");
    let Binary { child, log, .. } = binary;
    let exit = Binary::wait_child(child).await;
    assert!(exit.success(), "exit status {exit:?}");
    let logged = log.drain().await;
    let checkpoint = logged
        .iter()
        .find(|line| {
            line["fields"]["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("could not checkpoint the WAL"))
        })
        .unwrap_or_else(|| panic!("no checkpoint message in {logged:#?}"));
    assert_eq!(checkpoint["level"], "ERROR");
    assert_eq!(
        checkpoint["fields"]["message"],
        "could not checkpoint the WAL: the disk is full; the WAL is kept and replayed at the \
         next start, nothing is lost"
    );

    disk.free();
    let binary = Binary::start(home.path(), Some(&db)).await;
    let mut query = AgentQueryControllerClient::new(binary.channel().await);
    for created in acknowledged {
        let created = created.into_inner();
        let id = created.metadata.as_ref().expect("metadata").id.clone();
        let found = query
            .get(AgentId {
                value: id,
                ..Default::default()
            })
            .await
            .expect("an acknowledged agent survived")
            .into_inner();
        assert_eq!(found, created);
    }
    binary.signal("-TERM");
    assert!(binary.wait().await.success());
    let wal = disk.path("stigmer.db-wal");
    assert_eq!(std::fs::metadata(&wal).map_or(0, |meta| meta.len()), 0);
}

/// Every flag of `ServerConfig`, as clap knows them, not a list kept by hand: each with an
/// environment variable, and --help shows both (and the default, when there is one). Fails
/// when a flag loses its variable: "--watch-buffer has no environment variable".
#[test]
fn help_documents_every_flag_with_its_environment_variable() {
    let output = std::process::Command::new(BINARY)
        .env_clear()
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(output.status.success());
    // As one line: clap wraps the help to the terminal's width, inside "[env: …]" too.
    let help = String::from_utf8(output.stdout)
        .expect("utf-8")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    // It opens by saying what the binary is (not the description of the library crate).
    assert!(
        help.starts_with("stigmer-server stores every Stigmer API resource"),
        "{help}"
    );
    let command = DatabaseOptions::augment_args(ServerConfig::augment_args(clap::Command::new(
        "stigmer-server",
    )));
    let flags: Vec<_> = command
        .get_arguments()
        .filter(|arg| !matches!(arg.get_id().as_str(), "help" | "version"))
        .collect();
    assert!(flags.len() >= 17, "only {} flags", flags.len());
    for arg in flags {
        let long = arg
            .get_long()
            .unwrap_or_else(|| panic!("{} has no --flag", arg.get_id()));
        let flag = format!("--{long}");
        assert!(
            help.contains(&format!("{flag} ")),
            "--help lacks {flag}:\n{help}"
        );
        let env = arg
            .get_env()
            .unwrap_or_else(|| panic!("{flag} has no environment variable"))
            .to_string_lossy()
            .into_owned();
        assert!(
            help.contains(&format!("[env: {env}")),
            "--help lacks {env} for {flag}:\n{help}"
        );
        for default in arg.get_default_values() {
            let default = default.to_string_lossy();
            assert!(
                help.contains(&format!("[default: {default}]")),
                "--help lacks the default {default} of {flag}:\n{help}"
            );
        }
    }
}

/// The descriptor limit, soft and hard, of the server in the exhaustion test: well under the
/// idle connections it is sent.
const FD_LIMIT: usize = 128;

#[tokio::test]
async fn idle_connections_past_the_descriptor_limit_are_closed_and_calls_still_get_through() {
    let home = tempfile::tempdir().expect("home");
    // Plain `ulimit -n` lowers the hard limit too, which the server cannot raise back.
    let mut shell = Command::new("/bin/sh");
    shell.args([
        "-c",
        &format!("ulimit -n {FD_LIMIT} && exec \"$0\" \"$@\""),
        BINARY,
    ]);
    let mut command = Binary::configure(shell, home.path(), None, "info");
    // The variable rather than the flag, so a server without the setting still starts.
    command.env("STIGMER_HANDSHAKE_TIMEOUT_MS", "1000");
    let mut binary = Binary::spawn(command).await;

    let mut idle = Vec::new();
    for _ in 0..FD_LIMIT + 72 {
        let stream = tokio::net::TcpStream::connect(&binary.address)
            .await
            .expect("the kernel queues the connection");
        idle.push(stream);
    }

    let status = tokio::time::timeout(DEADLINE, async {
        let mut health = HealthClient::new(binary.channel().await);
        health.check(HealthCheckRequest::default()).await
    })
    .await
    .expect("a real call got through in time")
    .expect("health check")
    .into_inner()
    .status();
    assert_eq!(status, ServingStatus::Serving);

    let deadline = tokio::time::Instant::now() + DEADLINE;
    for (n, stream) in idle.iter_mut().enumerate() {
        tokio::time::timeout_at(deadline, closed_by_peer(stream))
            .await
            .unwrap_or_else(|_| panic!("idle connection {n} is still open"));
    }

    let warning = binary
        .log_line(|line| {
            line["fields"]["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("accept failed"))
        })
        .await;
    assert_eq!(warning["level"], "WARN");
    let message = warning["fields"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("backing off"), "{message}");

    binary.signal("-TERM");
    let exit = binary.wait().await;
    assert!(exit.success(), "exit status {exit:?}");
}

/// Reads until the server closes the connection (it may send its SETTINGS frame first).
async fn closed_by_peer(stream: &mut tokio::net::TcpStream) {
    let mut buf = [0u8; 256];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

#[test]
fn a_non_loopback_listen_is_refused_without_allow_insecure() {
    for (listen, allow) in [
        ("0.0.0.0:0", None),
        ("[::]:0", None),
        ("0.0.0.0:0", Some("false")),
    ] {
        let home = tempfile::tempdir().expect("home");
        let mut command = std::process::Command::new(BINARY);
        command
            .env_clear()
            .env("HOME", home.path())
            .args(["--listen", listen]);
        if let Some(allow) = allow {
            command.env("STIGMER_ALLOW_INSECURE", allow);
        }
        let output = command.output().expect("run stigmer-server");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{listen} was served:\n{stderr}");
        let (host, _) = listen.rsplit_once(':').expect("host:port");
        assert!(
            stderr.contains("--allow-insecure") && stderr.contains(&format!("{host}:")),
            "the refusal names neither the address nor the flag:\n{stderr}"
        );
        assert!(
            !home.path().join(".stigmer").exists(),
            "refused before touching the database"
        );
    }
}

#[tokio::test]
async fn allow_insecure_serves_a_non_loopback_listen_and_warns() {
    let home = tempfile::tempdir().expect("home");
    let mut command = Binary::configure(Command::new(BINARY), home.path(), None, "info");
    command
        .env("STIGMER_LISTEN", "0.0.0.0:0")
        .arg("--allow-insecure");
    let mut binary = Binary::spawn(command).await;
    let port = binary
        .address
        .strip_prefix("0.0.0.0:")
        .unwrap_or_else(|| panic!("served on {}", binary.address))
        .to_string();
    let warning = binary.log_line(|line| line["level"] == "WARN").await;
    let message = warning["fields"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("--allow-insecure"), "{message}");

    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .expect("health check")
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);

    binary.signal("-TERM");
    let exit = binary.wait().await;
    assert!(exit.success(), "exit status {exit:?}");
}

/// A healthy session reads as one: migrations logged once each (refinery's own lines are
/// filtered), a lookup that finds nothing (NotFound, as the CLI's before every create) is not
/// logged above debug, and durations are milliseconds to the microsecond.
#[tokio::test]
async fn a_healthy_session_logs_migrations_once_no_lookups_and_readable_durations() {
    let home = tempfile::tempdir().expect("home");
    let mut binary = Binary::start(home.path(), None).await;
    let migrations = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../migrations/sqlite"
    ))
    .expect("migrations")
    .count();
    let applied = binary
        .before_serving
        .iter()
        .filter(|line| line["fields"]["message"] == "applied database migration")
        .count();
    assert_eq!(applied, migrations, "{:#?}", binary.before_serving);
    assert!(
        binary.before_serving.iter().all(|line| !line["target"]
            .as_str()
            .unwrap_or_default()
            .contains("refinery")),
        "{:#?}",
        binary.before_serving
    );

    let channel = binary.channel().await;
    let missing = AgentQueryControllerClient::new(channel.clone())
        .get(AgentId {
            value: "agt-01jz0000000000000000000000".into(),
            ..Default::default()
        })
        .await
        .expect_err("no such agent");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let mut bad = agent("Too short");
    bad.spec.as_mut().expect("spec").instructions = "short".into();
    let invalid = AgentCommandControllerClient::new(channel)
        .create(bad)
        .await
        .expect_err("invalid");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    // The first call logged at info is the invalid create: the lookup before it was not.
    let line = binary
        .log_line(|line| line["fields"]["message"] == "rpc")
        .await;
    assert_eq!(line["fields"]["code"], "InvalidArgument", "{line}");
    let duration = line["fields"]["duration_ms"].as_f64().expect("a number");
    assert_eq!((duration * 1000.0).round() / 1000.0, duration, "{line}");
}

/// A user error at start-up (the port is taken) is one log line and exit status 1, never a
/// backtrace, even with RUST_BACKTRACE set.
#[tokio::test]
async fn a_start_up_error_is_one_line_without_a_backtrace() {
    let home = tempfile::tempdir().expect("home");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let mut command = Binary::configure(Command::new(BINARY), home.path(), None, "info");
    command
        .env("STIGMER_LISTEN", &address)
        .env("RUST_BACKTRACE", "1");
    let out = tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("exits in time")
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("backtrace") && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(stderr.contains(&address), "{stderr}");
}
