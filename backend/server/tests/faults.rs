//! Fault suites (issue 17), against the real binary: kill -9 under 64 writers, cycle after
//! cycle; a full disk seen through the API; a sqlite3 session holding the database's lock; a
//! corrupt or truncated database and a read-only database directory at start.
//!
//! Elsewhere: a clean stop when even the final checkpoint finds the disk full is
//! `operations.rs::sigterm_on_a_full_disk_exits_cleanly_and_loses_nothing`.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::binary::{BINARY, Binary, DEADLINE};
use common::disk::{ReadOnlyMount, SmallDisk, without_root_overrides};
use common::random::Random;
use common::{agent, expect_code};
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_command_controller_client::AgentCommandControllerClient;
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_query_controller_client::AgentQueryControllerClient;
use stigmer_api::ai::stigmer::agentic::agent::v1::{Agent, AgentId, ListAgentsRequest};
use stigmer_api::ai::stigmer::agentic::environment::v1::environment_command_controller_client::EnvironmentCommandControllerClient;
use stigmer_api::ai::stigmer::agentic::environment::v1::environment_query_controller_client::EnvironmentQueryControllerClient;
use stigmer_api::ai::stigmer::agentic::environment::v1::{
    Environment, EnvironmentSpec, EnvironmentValue, ListEnvironmentsRequest,
};
use stigmer_api::ai::stigmer::backend::v1::InfoRequest;
use stigmer_api::ai::stigmer::backend::v1::resource_service_client::ResourceServiceClient;
use stigmer_api::ai::stigmer::commons::apiresource::ApiResourceMetadata;
use tokio::process::Command;
use tokio::sync::mpsc;
use tonic::Code;
use tonic::transport::Channel;

// ---------------------------------------------------------------------------------------------
// kill -9
// ---------------------------------------------------------------------------------------------

const CYCLES: usize = 20;
const WRITERS: usize = 64;

/// An Environment whose description and one value carry `step`, the writer's counter.
fn environment(name: &str, step: u64) -> Environment {
    Environment {
        metadata: Some(ApiResourceMetadata {
            name: name.to_string(),
            ..Default::default()
        }),
        spec: Some(EnvironmentSpec {
            description: format!("step {step}"),
            data: [(
                "STEP".to_string(),
                EnvironmentValue {
                    value: step.to_string(),
                    ..Default::default()
                },
            )]
            .into(),
        }),
        ..Default::default()
    }
}

fn step_of(environment: &Environment) -> u64 {
    environment
        .spec
        .as_ref()
        .and_then(|spec| spec.description.strip_prefix("step "))
        .and_then(|step| step.parse().ok())
        .expect("a step in the description")
}

fn revision_of(environment: &Environment) -> i64 {
    environment.metadata.as_ref().expect("metadata").revision
}

fn id_of(environment: &Environment) -> String {
    environment.metadata.as_ref().expect("metadata").id.clone()
}

/// What one writer saw: the writes the server acknowledged, in order, and the first error.
struct Written {
    acknowledged: Vec<Environment>,
    error: Option<(Instant, tonic::Status)>,
}

/// Creates an Environment, updates it a few times, creates the next, ... until a call fails.
/// Each acknowledgement goes out on `acks` as it arrives, so that the test knows when writes
/// are flowing.
async fn writer(channel: Channel, name: String, acks: mpsc::UnboundedSender<()>) -> Written {
    let mut command = EnvironmentCommandControllerClient::new(channel);
    let mut written = Written {
        acknowledged: Vec::new(),
        error: None,
    };
    let mut current: Option<Environment> = None;
    for step in 1.. {
        let result = match current.take() {
            Some(mut updated) if step % 4 != 0 => {
                updated.spec = environment("", step).spec;
                command.update(updated).await
            }
            _ => {
                command
                    .create(environment(&format!("{name} {step}"), step))
                    .await
            }
        };
        match result {
            Ok(reply) => {
                let reply = reply.into_inner();
                written.acknowledged.push(reply.clone());
                current = Some(reply);
                let _ = acks.send(());
            }
            Err(status) => {
                written.error = Some((Instant::now(), status));
                break;
            }
        }
    }
    written
}

/// Every Environment of the org, by id.
async fn every_environment(channel: &Channel) -> HashMap<String, Environment> {
    let mut query = EnvironmentQueryControllerClient::new(channel.clone());
    let mut all = HashMap::new();
    let mut token = String::new();
    loop {
        let page = query
            .list(ListEnvironmentsRequest {
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        for item in page.items {
            all.insert(id_of(&item), item);
        }
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

/// `PRAGMA integrity_check` through a read-only connection, as a sqlite3 user would run it
/// beside the server.
fn integrity_check(db: &Path) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open read-only");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    let mut statement = conn
        .prepare("PRAGMA integrity_check")
        .expect("integrity_check");
    statement
        .query_map([], |row| row.get(0))
        .expect("run integrity_check")
        .collect::<Result<_, _>>()
        .expect("integrity_check rows")
}

async fn current_revision(channel: &Channel) -> i64 {
    ResourceServiceClient::new(channel.clone())
        .info(InfoRequest {})
        .await
        .expect("info")
        .into_inner()
        .revision
}

/// Checks the database the binary just started on against every write acknowledged before:
/// each is there at its acknowledged revision (with what was acknowledged) or at a later one
/// (a write in flight at the kill committed without an answer). Returns the revision the
/// server starts from.
async fn check_after_restart(
    channel: &Channel,
    db: &Path,
    acknowledged: &HashMap<String, Environment>,
    cycle: usize,
) -> i64 {
    let stored = every_environment(channel).await;
    for (id, acked) in acknowledged {
        let found = stored
            .get(id)
            .unwrap_or_else(|| panic!("cycle {cycle}: acknowledged {id} is gone"));
        let (found_revision, acked_revision) = (revision_of(found), revision_of(acked));
        assert!(
            found_revision >= acked_revision,
            "cycle {cycle}: {id} went back from revision {acked_revision} to {found_revision}"
        );
        if found_revision == acked_revision {
            assert_eq!(
                found, acked,
                "cycle {cycle}: {id} at its acknowledged revision"
            );
        } else {
            assert!(
                step_of(found) > step_of(acked),
                "cycle {cycle}: {id} has a later revision but an older step"
            );
        }
    }
    assert_eq!(
        integrity_check(db),
        ["ok"],
        "cycle {cycle}: integrity_check"
    );
    let revision = current_revision(channel).await;
    let highest_stored = stored.values().map(revision_of).max().unwrap_or(0);
    assert!(
        revision >= highest_stored,
        "cycle {cycle}: the server starts at revision {revision} below a stored {highest_stored}"
    );
    revision
}

/// 64 writers create and update Environments on the binary, which is killed with SIGKILL at a
/// random moment, 20 times over on one database. After each restart: every acknowledged write
/// is there, at its revision or a later one; `PRAGMA integrity_check` says ok; and every write
/// of the next cycle gets a revision above anything stored before, none given twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_under_64_writers_for_20_cycles_keeps_every_acknowledged_write() {
    let started = Instant::now();
    let mut random = Random::seeded("kill -9");
    let home = tempfile::tempdir().expect("home");
    let db = home.path().join("crash.db");
    // id → the last acknowledged state; every revision ever acknowledged.
    let mut acknowledged: HashMap<String, Environment> = HashMap::new();
    let mut revisions: HashSet<i64> = HashSet::new();
    let mut total = 0;
    for cycle in 0..CYCLES {
        let binary = Binary::start(home.path(), Some(&db)).await;
        let channel = binary.channel().await;
        let floor = check_after_restart(&channel, &db, &acknowledged, cycle).await;

        let (acks, mut acked) = mpsc::unbounded_channel();
        let writers: Vec<_> = (0..WRITERS)
            .map(|n| {
                let writer = writer(channel.clone(), format!("c{cycle} w{n}"), acks.clone());
                tokio::spawn(writer)
            })
            .collect();
        drop(acks);
        // Writes are flowing: wait for some, then kill at a random moment within the next
        // quarter second.
        let want = 1 + random.below(WRITERS as u64 * 2);
        tokio::time::timeout(DEADLINE, async {
            for _ in 0..want {
                acked.recv().await.expect("a writer acknowledged a write");
            }
        })
        .await
        .expect("writes acknowledged in time");
        tokio::time::sleep(Duration::from_millis(random.below(250))).await;
        let killed_at = Instant::now();
        binary.signal("-KILL");
        let exit = binary.wait().await;
        assert!(!exit.success(), "cycle {cycle}: {exit:?}");

        for (n, writer) in writers.into_iter().enumerate() {
            let written = tokio::time::timeout(DEADLINE, writer)
                .await
                .expect("a writer stops once the server is gone")
                .expect("writer task");
            let (failed_at, status) = written.error.expect("only a failure stops a writer");
            assert!(
                failed_at >= killed_at,
                "cycle {cycle}, writer {n} failed before the kill: {status:?}"
            );
            for environment in written.acknowledged {
                let revision = revision_of(&environment);
                assert!(
                    revision > floor,
                    "cycle {cycle}: revision {revision} reused (the server started at {floor})"
                );
                assert!(
                    revisions.insert(revision),
                    "cycle {cycle}: revision {revision} acknowledged twice"
                );
                total += 1;
                acknowledged.insert(id_of(&environment), environment);
            }
        }
    }

    let binary = Binary::start(home.path(), Some(&db)).await;
    let channel = binary.channel().await;
    let floor = check_after_restart(&channel, &db, &acknowledged, CYCLES).await;
    let highest = revisions.iter().max().copied().unwrap_or(0);
    assert!(floor >= highest);
    let next = EnvironmentCommandControllerClient::new(channel)
        .create(environment("after the last kill", 1))
        .await
        .expect("create")
        .into_inner();
    assert!(
        revision_of(&next) > floor,
        "the first write after the last restart reused a revision"
    );
    binary.signal("-TERM");
    assert!(binary.wait().await.success());
    assert_eq!(integrity_check(&db), ["ok"]);
    eprintln!(
        "{CYCLES} kills, {total} acknowledged writes on {} environments, {:?}",
        acknowledged.len(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// A full disk
// ---------------------------------------------------------------------------------------------

fn agent_id(agent: &Agent) -> String {
    agent.metadata.as_ref().expect("metadata").id.clone()
}

/// An agent whose instructions take `bytes`.
fn big_agent(name: &str, bytes: usize) -> Agent {
    let mut agent = agent(name);
    agent.spec.as_mut().expect("spec").instructions = format!("Be careful. {}", "x".repeat(bytes));
    agent
}

/// The disk the database is on fills up while the binary serves. Through the API: writes are
/// refused with RESOURCE_EXHAUSTED (never INTERNAL), reads go on, deletes go on (an Agent's,
/// with its default instance), a write that would grow the database is still refused after
/// them, SIGTERM exits 0, and after a restart on a freed disk the deletes and every other
/// acknowledged write are there.
#[tokio::test]
async fn on_a_full_disk_writes_are_refused_but_reads_deletes_and_a_clean_stop_work() {
    let Some(mut disk) = SmallDisk::mount("32m") else {
        return;
    };
    let home = tempfile::tempdir().expect("home");
    let db = disk.path("stigmer.db");
    let binary = Binary::start(home.path(), Some(&db)).await;
    let channel = binary.channel().await;
    let mut command = AgentCommandControllerClient::new(channel.clone());
    let mut query = AgentQueryControllerClient::new(channel.clone());
    let mut acknowledged = Vec::new();
    for n in 0..12 {
        let created = command
            .create(big_agent(&format!("Before {n}"), 16 * 1024))
            .await
            .expect("create");
        acknowledged.push(created.into_inner());
    }
    disk.fill();
    let refused = loop {
        assert!(acknowledged.len() < 1000, "the disk never filled up");
        let name = format!("More {}", acknowledged.len());
        match command.create(big_agent(&name, 16 * 1024)).await {
            Ok(created) => acknowledged.push(created.into_inner()),
            Err(status) => break status,
        }
    };
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    common::assert_no_leak(&refused);

    // Reads: each agent, the list, info.
    for agent in &acknowledged {
        let id = agent_id(agent);
        let found = query
            .get(AgentId {
                value: id,
                ..Default::default()
            })
            .await
            .expect("a get on a full disk")
            .into_inner();
        assert_eq!(&found, agent);
    }
    let listed = query
        .list(ListAgentsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("a list on a full disk")
        .into_inner()
        .items;
    assert_eq!(listed.len(), acknowledged.len());
    ResourceServiceClient::new(channel.clone())
        .info(InfoRequest {})
        .await
        .expect("info on a full disk");

    // Deletes: each takes its default instance with it, in the same transaction.
    let deleted: Vec<Agent> = acknowledged.drain(..6).collect();
    for agent in &deleted {
        command
            .delete(AgentId {
                value: agent_id(agent),
                ..Default::default()
            })
            .await
            .expect("a delete on a full disk");
    }
    // What the deletes freed is not room for a write that grows the database.
    let status = command.create(big_agent("Too big", 512 * 1024)).await;
    expect_code(status, Code::ResourceExhausted);
    for agent in &deleted {
        let status = query
            .get(AgentId {
                value: agent_id(agent),
                ..Default::default()
            })
            .await;
        expect_code(status, Code::NotFound);
    }

    binary.signal("-TERM");
    let exit = binary.wait().await;
    assert!(exit.success(), "SIGTERM on a full disk: {exit:?}");

    disk.free();
    let binary = Binary::start(home.path(), Some(&db)).await;
    let channel = binary.channel().await;
    let mut query = AgentQueryControllerClient::new(channel.clone());
    let listed = query
        .list(ListAgentsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .items;
    let mut expected = acknowledged.clone();
    expected.sort_by_key(agent_id);
    let mut listed = listed;
    listed.sort_by_key(agent_id);
    assert_eq!(listed, expected, "after the restart");
    AgentCommandControllerClient::new(channel)
        .create(big_agent("After", 512 * 1024))
        .await
        .expect("writes resume on a freed disk");
    binary.signal("-TERM");
    assert!(binary.wait().await.success());
    assert_eq!(integrity_check(&db), ["ok"]);
}

// ---------------------------------------------------------------------------------------------
// A sqlite3 session holding the lock
// ---------------------------------------------------------------------------------------------

/// A sqlite3 CLI session (a process of its own) on `db` that has run `script`: returned once it
/// prints `ready` (selected after the script), so a statement that failed (`.bail on`: the
/// session exits) fails the test rather than leaving nothing locked. Ends when its input
/// closes.
async fn sqlite3_session(db: &Path, script: &str) -> Option<tokio::process::Child> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let spawned = Command::new("sqlite3")
        .arg(db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut session = match spawned {
        Ok(session) => session,
        Err(err) => {
            // `make deps` installs it.
            assert!(
                !common::disk::in_ci(),
                "CI must have the sqlite3 CLI: {err}"
            );
            eprintln!("SKIPPED: no sqlite3 CLI here: {err}");
            return None;
        }
    };
    let mut input = session.stdin.take().expect("stdin");
    input
        .write_all(format!(".bail on\n.timeout 10000\n{script}\nSELECT 'ready';\n").as_bytes())
        .await
        .expect("write to sqlite3");
    input.flush().await.expect("flush");
    // Kept open (in the child's handle) until the test closes it.
    session.stdin = Some(input);
    let mut lines = BufReader::new(session.stdout.take().expect("stdout")).lines();
    tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("read sqlite3") {
            if line == "ready" {
                return;
            }
        }
        panic!("sqlite3 ended before it held the lock");
    })
    .await
    .expect("sqlite3 holds the lock in time");
    Some(session)
}

/// Ends a session started by [`sqlite3_session`]: closes its input, which rolls its
/// transaction back, and waits for it to exit.
async fn end_session(mut session: tokio::process::Child) {
    drop(session.stdin.take());
    let exit = tokio::time::timeout(DEADLINE, session.wait())
        .await
        .expect("sqlite3 exits")
        .expect("wait");
    assert!(exit.success(), "{exit:?}");
}

/// The binary with --busy-timeout-ms 300 and a sqlite3 session, another process, in a write
/// transaction: a write waits out the busy timeout and gets UNAVAILABLE with a retry hint,
/// reads are served meanwhile (WAL), and the write goes through once the session ends. (No
/// session can lock readers out while the server has the database open in WAL mode: sqlite3's
/// locking_mode=EXCLUSIVE then fails with "database is locked".)
#[tokio::test]
async fn a_database_locked_by_a_sqlite3_session_past_the_busy_timeout_is_unavailable() {
    let home = tempfile::tempdir().expect("home");
    let db = home.path().join("locked.db");
    let mut command = Binary::configure(Command::new(BINARY), home.path(), Some(&db), "info");
    command.args(["--busy-timeout-ms", "300"]);
    let binary = Binary::spawn(command).await;
    let channel = binary.channel().await;
    let mut agents = AgentCommandControllerClient::new(channel.clone());
    let mut query = AgentQueryControllerClient::new(channel.clone());
    let kept = agents
        .create(agent("Before the lock"))
        .await
        .expect("create")
        .into_inner();
    let get = || AgentId {
        value: agent_id(&kept),
        ..Default::default()
    };

    let Some(session) = sqlite3_session(&db, "BEGIN IMMEDIATE;").await else {
        return;
    };
    let asked = Instant::now();
    let status = expect_code(agents.create(agent("Blocked")).await, Code::Unavailable);
    assert!(
        asked.elapsed() >= Duration::from_millis(300),
        "answered before the busy timeout: {:?}",
        asked.elapsed()
    );
    assert!(status.message().contains("retry"), "{}", status.message());
    use tonic_types::StatusExt;
    assert!(status.get_details_retry_info().is_some(), "{status:?}");
    let read = query.get(get()).await.expect("reads are served meanwhile");
    assert_eq!(read.into_inner(), kept);
    end_session(session).await;
    agents
        .create(agent("Blocked"))
        .await
        .expect("the write goes through once the session ends");

    query.get(get()).await.expect("reads after the session");
    binary.signal("-TERM");
    assert!(binary.wait().await.success());
}

// ---------------------------------------------------------------------------------------------
// Damaged or read-only databases at start
// ---------------------------------------------------------------------------------------------

/// A database a real server wrote and stopped cleanly, in a directory of its own, as an
/// operator has it: the database, its lock file, disk reserve and key file.
async fn served_database(home: &Path) -> PathBuf {
    let dir = home.join("data");
    let db = dir.join("stigmer.db");
    let binary = Binary::start(home, Some(&db)).await;
    let channel = binary.channel().await;
    let mut agents = AgentCommandControllerClient::new(channel.clone());
    let mut environments = EnvironmentCommandControllerClient::new(channel);
    for n in 0..40 {
        agents
            .create(big_agent(&format!("Agent {n}"), 2048))
            .await
            .expect("create");
        environments
            .create(environment(&format!("Environment {n}"), n))
            .await
            .expect("create");
    }
    binary.signal("-TERM");
    assert!(binary.wait().await.success());
    db
}

/// Every file in `dir` with its bytes (compared as they are: hashing them in a debug build
/// takes longer than the rest of the test).
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("read"))
        })
        .collect()
}

/// Runs `command` (the binary, set up by `Binary::configure`) to its exit: it must exit
/// non-zero, with one error naming `db` (or its lock file), and leave every file beside
/// the database as it was (the lock file aside: whoever takes it writes its pid there).
async fn assert_refused(what: &str, command: Command, db: &Path) {
    let dir = db.parent().expect("dir");
    let lock_name = format!("{}.lock", db.file_name().expect("name").to_string_lossy());
    let before = files(dir);
    let mut command = command;
    let out = tokio::time::timeout(DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("{what}: the server neither served nor exited"))
        .expect("run stigmer-server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
    assert!(!stderr.contains("serving gRPC"), "{what}: served: {stderr}");
    let errors: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["level"] == "ERROR")
        .collect();
    assert_eq!(errors.len(), 1, "{what}: one error line: {stderr}");
    let message = errors[0]["fields"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&db.display().to_string()),
        "{what}: the error does not name {}: {message}",
        db.display()
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{what}: {stderr}"
    );
    let mut after = files(dir);
    let mut before = before;
    assert_eq!(
        after.remove(&lock_name).is_some(),
        before.remove(&lock_name).is_some(),
        "{what}: the lock file"
    );
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "{what}: files beside the database"
    );
    for (name, bytes) in &before {
        assert!(after[name] == *bytes, "{what}: {name} changed");
    }
    eprintln!("{what}: {message}");
}

/// How the database file is damaged.
enum Damage {
    /// Cut to this many bytes.
    TruncateTo(fn(u64) -> u64),
    /// These bytes written at this offset.
    Overwrite(u64, &'static [u8]),
}

/// A database cut short or overwritten is refused at start: exit 1, one error line naming
/// the file, nothing beside it written (the database and its companions byte for byte the
/// same). SQLite itself notices each damage below at the first read: a header that is not
/// SQLite's, a file shorter than its header says (any truncation of a database that was
/// checkpointed), a schema page of garbage.
#[tokio::test]
async fn a_corrupt_or_truncated_database_is_refused_at_start_naming_the_file_and_writing_nothing() {
    let page = 4096;
    let cases: Vec<(&str, Damage)> = vec![
        ("truncated to half", Damage::TruncateTo(|len| len / 2)),
        (
            "truncated by one page",
            Damage::TruncateTo(|len| len - 4096),
        ),
        (
            "truncated mid-page",
            Damage::TruncateTo(|len| len / 2 + 1000),
        ),
        ("truncated to its header", Damage::TruncateTo(|_| 100)),
        ("truncated inside its header", Damage::TruncateTo(|_| 60)),
        (
            "a header that is not SQLite's",
            Damage::Overwrite(0, b"not a database!\0"),
        ),
        (
            "a schema page of garbage",
            Damage::Overwrite(100, &[0xa5; 3996]),
        ),
        ("a garbage page 2", Damage::Overwrite(page, &[0x5a; 4096])),
    ];
    let home = tempfile::tempdir().expect("home");
    let served = served_database(home.path()).await;
    let len = std::fs::metadata(&served).expect("db").len();
    assert!(len > 16 * page, "a database of many pages: {len} bytes");
    for (what, damage) in cases {
        let copy = tempfile::tempdir().expect("copy");
        for (name, _) in files(served.parent().expect("dir")) {
            std::fs::copy(
                served.parent().expect("dir").join(&name),
                copy.path().join(&name),
            )
            .expect("copy");
        }
        let db = copy.path().join("stigmer.db");
        match damage {
            Damage::TruncateTo(to) => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&db)
                    .expect("open");
                file.set_len(to(len)).expect("truncate");
            }
            Damage::Overwrite(offset, bytes) => {
                use std::os::unix::fs::FileExt;
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&db)
                    .expect("open");
                file.write_all_at(bytes, offset).expect("overwrite");
            }
        }
        let command = Binary::configure(Command::new(BINARY), home.path(), Some(&db), "info");
        assert_refused(what, command, &db).await;
    }
}

/// A database whose directory cannot be written is refused at start the same way. Both the
/// way an operator meets it (a directory of mode 0555; as root, the binary runs without the
/// capabilities that let root ignore it, so the test means the same for root and anyone
/// else) and a read-only file system (a read-only bind mount, root only): SQLite needs to
/// create the -wal and -shm files beside the database, the server its lock file.
#[tokio::test]
async fn a_read_only_database_directory_is_refused_at_start_naming_the_file_and_writing_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().expect("home");
    let served = served_database(home.path()).await;
    let dir = served.parent().expect("dir").to_path_buf();
    let lock = dir.join("stigmer.db.lock");

    // Mode 0555, with its lock file there from the last run, and without.
    for with_lock in [true, false] {
        if !with_lock {
            std::fs::remove_file(&lock).expect("remove the lock file");
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).expect("chmod");
        let Some(program) = without_root_overrides(Path::new(BINARY)) else {
            return;
        };
        let command = Binary::configure(program, home.path(), Some(&served), "info");
        let what = format!("a directory of mode 0555 (lock file there: {with_lock})");
        assert_refused(&what, command, &served).await;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }

    let Some(_mount) = ReadOnlyMount::bind(&dir) else {
        return;
    };
    let command = Binary::configure(Command::new(BINARY), home.path(), Some(&served), "info");
    assert_refused("a read-only file system", command, &served).await;
}
