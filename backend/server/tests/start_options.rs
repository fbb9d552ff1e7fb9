//! Start-up options as the documents write them: `--listen localhost:PORT` and `--db :memory:`.

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
    command
        .env("STIGMER_DB", ":memory:")
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
