//! What happens when someone else touches the database: a sqlite3 session holding the write lock,
//! a hand edit that breaks a document, a hand fix that repairs it.

mod common;

use common::{TestServer, agent, assert_no_leak, expect_code};
use stigmer_api::ai::stigmer::agentic::agent::v1::AgentId;
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_command_controller_client::AgentCommandControllerClient;
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_query_controller_client::AgentQueryControllerClient;
use tonic::Code;

#[tokio::test]
async fn a_write_blocked_by_another_process_is_unavailable_with_a_retry_hint_and_loses_nothing() {
    let server = TestServer::start_with(|config| config.busy_timeout_ms = 100).await;
    let mut command = AgentCommandControllerClient::new(server.channel.clone());
    let mut query = AgentQueryControllerClient::new(server.channel.clone());
    let before = command
        .create(agent("Before"))
        .await
        .expect("create")
        .into_inner();

    // A sqlite3 user starts a write transaction and walks away.
    let mut outsider = rusqlite::Connection::open(&server.db).expect("open");
    let lock = outsider
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .expect("take the write lock");
    let status = expect_code(command.create(agent("Blocked")).await, Code::Unavailable);
    assert!(status.message().contains("retry"), "{}", status.message());
    use tonic_types::StatusExt;
    assert!(
        status.get_details_retry_info().is_some(),
        "carries RetryInfo"
    );
    // Reads go on meanwhile (WAL).
    let id = before.metadata.as_ref().expect("metadata").id.clone();
    query
        .get(AgentId {
            value: id.clone(),
            ..Default::default()
        })
        .await
        .expect("reads are not blocked");
    drop(lock);

    let retried = command
        .create(agent("Blocked"))
        .await
        .expect("retry succeeds")
        .into_inner();
    assert_eq!(retried.metadata.expect("metadata").slug, "blocked");
}

#[tokio::test]
async fn a_broken_hand_edit_is_internal_with_a_correlation_id_and_a_fix_repairs_it() {
    let server = TestServer::start().await;
    let mut command = AgentCommandControllerClient::new(server.channel.clone());
    let mut query = AgentQueryControllerClient::new(server.channel.clone());
    let created = command
        .create(agent("Edited"))
        .await
        .expect("create")
        .into_inner();
    let id = created.metadata.as_ref().expect("metadata").id.clone();
    let get = || AgentId {
        value: id.clone(),
        ..Default::default()
    };

    let conn = rusqlite::Connection::open(&server.db).expect("open");
    conn.execute(
        "UPDATE resources SET data = json_set(data, '$.spec', 42) WHERE id = ?1",
        [&id],
    )
    .expect("break the document");
    let status = expect_code(query.get(get()).await, Code::Internal);
    assert!(
        status.message().contains("correlation id"),
        "{}",
        status.message()
    );
    assert_no_leak(&status);
    assert!(
        !status.message().contains("spec"),
        "no detail leaks: {}",
        status.message()
    );

    conn.execute(
        "UPDATE resources SET data = json_set(data, '$.spec', \
         json_object('instructions', 'Fixed by hand in sqlite3.')) WHERE id = ?1",
        [&id],
    )
    .expect("repair the document");
    let repaired = query.get(get()).await.expect("readable again").into_inner();
    assert_eq!(
        repaired.spec.expect("spec").instructions,
        "Fixed by hand in sqlite3."
    );

    // The database refuses what is not JSON at all.
    let refused = conn.execute(
        "UPDATE resources SET data = 'not json' WHERE id = ?1",
        [&id],
    );
    assert!(refused.is_err(), "CHECK (json_valid(data)) holds");
}
