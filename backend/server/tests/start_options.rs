//! Start-up options as the documents write them: `--listen localhost:PORT`, `--db :memory:` and
//! `--master-key-store keychain`.

mod common;

use common::agent;
use common::binary::{BINARY, Binary};
use stigmer_api::ai::stigmer::agentic::agent::v1::AgentId;
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_command_controller_client::AgentCommandControllerClient;
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_query_controller_client::AgentQueryControllerClient;
use tokio::process::Command;

#[tokio::test]
async fn an_in_memory_database_serves_and_leaves_no_file_behind() {
    let home = tempfile::tempdir().expect("home");
    let cwd = tempfile::tempdir().expect("working directory");
    let mut command = Binary::configure(Command::new(BINARY), home.path(), None, "info");
    // Its key dies with it, so it never goes to a keychain (none answers here anyway).
    command
        .env("STIGMER_DB", ":memory:")
        .env("STIGMER_MASTER_KEY_STORE", "keychain")
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .current_dir(cwd.path());
    let mut server = Binary::spawn(command).await;
    let files = server
        .before_serving
        .iter()
        .find_map(|line| line["fields"]["files"].as_str().map(str::to_string))
        .expect("the server says where the in-memory database's files are");
    assert!(std::path::Path::new(&files).is_dir(), "{files}");

    let channel = server.channel().await;
    let created = AgentCommandControllerClient::new(channel.clone())
        .create(agent("Kept in memory"))
        .await
        .expect("create")
        .into_inner();
    let id = created.metadata.expect("metadata").id;
    let read = AgentQueryControllerClient::new(channel)
        .get(AgentId {
            value: id,
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(read.metadata.expect("metadata").name, "Kept in memory");

    server.signal("-TERM");
    server
        .log_line(|line| line["fields"]["message"] == "database closed")
        .await;
    assert!(server.wait().await.success());
    let left: Vec<_> = std::fs::read_dir(cwd.path())
        .expect("read the working directory")
        .collect();
    assert!(
        left.is_empty(),
        "files left in the working directory: {left:?}"
    );
    assert!(
        !home.path().join(".stigmer").exists(),
        "nothing is written under HOME"
    );
    assert!(
        !std::path::Path::new(&files).exists(),
        "{files} is removed at exit"
    );
}

#[tokio::test]
async fn listen_takes_a_host_name() {
    let home = tempfile::tempdir().expect("home");
    let db = home.path().join("named.db");
    let mut command = Binary::configure(Command::new(BINARY), home.path(), Some(&db), "info");
    command.env("STIGMER_LISTEN", "localhost:0");
    let server = Binary::spawn(command).await;
    assert!(
        server.address.starts_with("127.0.0.1:"),
        "localhost is served on 127.0.0.1: {}",
        server.address
    );
    let channel = server.channel().await;
    AgentCommandControllerClient::new(channel)
        .create(agent("Named host"))
        .await
        .expect("a call through localhost");
}

#[tokio::test]
async fn a_listen_address_that_is_not_host_and_port_is_refused_naming_it() {
    let output = std::process::Command::new(BINARY)
        .env_clear()
        .args(["--listen", "localhost"])
        .output()
        .expect("run the binary");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--listen") && stderr.contains("is not host:port"),
        "{stderr}"
    );
}

/// A private D-Bus session bus with a Secret Service (gnome-keyring, unlocked) whose keyrings
/// live under `home`, as on a desktop; ended, with its keyring daemon, on drop.
struct SecretService {
    bus: String,
    bus_pid: String,
    runtime: tempfile::TempDir,
}

impl SecretService {
    fn start(home: &std::path::Path) -> Self {
        let runtime = tempfile::tempdir().expect("runtime dir");
        let started = std::process::Command::new("dbus-daemon")
            .args(["--session", "--fork", "--print-address=1", "--print-pid=1"])
            .env("HOME", home)
            .output()
            .expect("dbus-daemon runs (Debian's dbus-daemon; `make test` installs it)");
        assert!(started.status.success(), "dbus-daemon: {started:?}");
        let printed = String::from_utf8(started.stdout).expect("UTF-8");
        let mut lines = printed.lines();
        let (bus, bus_pid) = (
            lines.next().expect("address").to_string(),
            lines.next().expect("pid").to_string(),
        );
        let service = Self {
            bus,
            bus_pid,
            runtime,
        };
        // --daemonize returns once the daemon serves; the password unlocks (or creates) the
        // login keyring under HOME, so a later session over the same HOME finds its entries.
        let mut keyring = std::process::Command::new("gnome-keyring-daemon")
            .args(["--unlock", "--components=secrets", "--daemonize"])
            .env_clear()
            .env("HOME", home)
            .env("XDG_RUNTIME_DIR", service.runtime.path())
            .env("DBUS_SESSION_BUS_ADDRESS", &service.bus)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("gnome-keyring-daemon runs (Debian's gnome-keyring; `make test` installs it)");
        use std::io::Write as _;
        keyring
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"test password")
            .expect("unlock");
        assert!(
            keyring.wait().expect("wait").success(),
            "gnome-keyring-daemon"
        );
        service
    }

    /// The server binary, set up as [`Binary::configure`] does, in this session, keeping its
    /// master key in the keychain.
    fn server(&self, home: &std::path::Path, db: &std::path::Path) -> Command {
        let mut command = Binary::configure(Command::new(BINARY), home, Some(db), "info");
        command
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
            .env("XDG_RUNTIME_DIR", self.runtime.path())
            .env("STIGMER_MASTER_KEY_STORE", "keychain");
        command
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        // The keyring daemon exits with its bus.
        let _ = std::process::Command::new("kill")
            .arg(&self.bus_pid)
            .status();
    }
}

async fn stop(mut server: Binary) {
    server.signal("-TERM");
    server
        .log_line(|line| line["fields"]["message"] == "database closed")
        .await;
    assert!(server.wait().await.success());
}

/// With `--master-key-store keychain` the key lives in the Secret Service, never beside the
/// database: the next start finds it there, and a copy of the database's folder started by
/// a user whose keychain lacks it is refused, naming the entry.
#[tokio::test]
async fn the_master_key_can_live_in_the_os_keychain() {
    let home = tempfile::tempdir().expect("home");
    let data = tempfile::tempdir().expect("data");
    let db = data.path().join("stigmer.db");
    let session = SecretService::start(home.path());
    let server = Binary::spawn(session.server(home.path(), &db)).await;
    let created = server
        .before_serving
        .iter()
        .find(|line| line["fields"]["keychain_entry"].is_string())
        .expect("the server says which keychain entry it made")
        .clone();
    let entry = created["fields"]["keychain_entry"].as_str().expect("entry");
    assert!(entry.starts_with("stigmer-server/master-key-"), "{entry}");
    stop(server).await;
    let beside: Vec<String> = std::fs::read_dir(data.path())
        .expect("data dir")
        .map(|file| {
            file.expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert!(
        !beside.iter().any(|name| name.ends_with(".key")),
        "no key file beside the database: {beside:?}"
    );
    drop(session);

    // A new session over the same keyrings: the key is found, not made again.
    let session = SecretService::start(home.path());
    let server = Binary::spawn(session.server(home.path(), &db)).await;
    assert!(
        !server
            .before_serving
            .iter()
            .any(|line| line["fields"]["keychain_entry"].is_string()),
        "no second key"
    );
    stop(server).await;

    // A rotation keeps the new key in the keychain too; the next start finds that one.
    let mut rotate = session.server(home.path(), &db);
    rotate
        .arg("rotate-master-key")
        .stdout(std::process::Stdio::piped());
    let rotated = rotate.output().await.expect("rotate");
    assert!(rotated.status.success(), "rotate: {rotated:?}");
    let said = String::from_utf8_lossy(&rotated.stdout).into_owned();
    let new_id = said
        .split_whitespace()
        .last()
        .expect("the new key id")
        .to_string();
    assert!(!entry.ends_with(&new_id), "a new key: {said}");
    let server = Binary::spawn(session.server(home.path(), &db)).await;
    stop(server).await;
    drop(session);

    // Another user's keychain (another HOME) does not hold it.
    let stranger = tempfile::tempdir().expect("another home");
    let session = SecretService::start(stranger.path());
    let refused = Binary::try_spawn(session.server(stranger.path(), &db))
        .await
        .err()
        .expect("refused without the key");
    let said = format!("{refused:?}");
    assert!(
        said.contains(&new_id),
        "names the entry of {new_id}: {said}"
    );
    assert!(said.contains("keychain does not hold"), "{said}");
}

/// Where no keychain runs (no session bus, as over SSH or in a container) the server stops
/// with a message that names the way out, and writes no key anywhere.
#[tokio::test]
async fn without_a_keychain_the_keychain_store_is_refused_clearly() {
    let home = tempfile::tempdir().expect("home");
    let data = tempfile::tempdir().expect("data");
    let db = data.path().join("stigmer.db");
    let mut command = Binary::configure(Command::new(BINARY), home.path(), Some(&db), "info");
    command
        .env("STIGMER_MASTER_KEY_STORE", "keychain")
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus");
    let refused = Binary::try_spawn(command)
        .await
        .err()
        .expect("refused without a keychain");
    let said = format!("{refused:?}");
    assert!(said.contains("--master-key-store file"), "{said}");
    let left: Vec<_> = std::fs::read_dir(data.path())
        .expect("data dir")
        .filter_map(Result::ok)
        .filter(|file| file.file_name().to_string_lossy().ends_with(".key"))
        .collect();
    assert!(left.is_empty(), "no key file: {left:?}");
}
