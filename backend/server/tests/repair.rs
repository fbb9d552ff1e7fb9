//! What happens when someone else touches the database: a sqlite3 session holding the write lock,
//! a hand edit that breaks a document, a hand fix that repairs it, rows left without their
//! cached encoding.

mod common;

use common::{TestServer, agent, assert_no_leak, eventually, expect_code};
use prost::Message;
use stigmer_api::ai::stigmer::agentic::agent::v1::Agent;
use stigmer_api::ai::stigmer::agentic::agent::v1::AgentId;
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_command_controller_client::AgentCommandControllerClient;
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_query_controller_client::AgentQueryControllerClient;
use tonic::Code;
use tonic::transport::Channel;

/// A server holding one agent named `name`, a query client, and the agent's id.
async fn server_with_agent(
    name: &str,
) -> (TestServer, AgentQueryControllerClient<Channel>, String) {
    let server = TestServer::start().await;
    let created = AgentCommandControllerClient::new(server.channel.clone())
        .create(agent(name))
        .await
        .expect("create")
        .into_inner();
    let id = created.metadata.expect("metadata").id;
    let query = AgentQueryControllerClient::new(server.channel.clone());
    (server, query, id)
}

fn agent_id(id: &str) -> AgentId {
    AgentId {
        value: id.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_write_blocked_by_another_process_is_unavailable_with_a_retry_hint_and_loses_nothing() {
    let server =
        TestServer::start_with(|settings| settings.database.sqlite.busy_timeout_ms = 100).await;
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
    let (server, mut query, id) = server_with_agent("Edited").await;
    let get = || agent_id(&id);

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

#[tokio::test]
async fn a_hand_edited_row_is_read_from_its_data_and_gets_its_cached_encoding_back() {
    let (server, mut query, id) = server_with_agent("Cached").await;
    let get = || agent_id(&id);
    let written = server
        .cached_encoding(&id)
        .expect("a write stores its encoding");

    let conn = rusqlite::Connection::open(&server.db).expect("open");
    conn.execute(
        "UPDATE resources SET data = json_set(data, '$.spec.description', 'edited by hand') \
         WHERE id = ?1",
        [&id],
    )
    .expect("hand edit");
    assert_eq!(
        server.cached_encoding(&id),
        None,
        "the edit drops the stale encoding"
    );
    let decoded = query.get(get()).await.expect("get").into_inner();
    assert_eq!(
        decoded.spec.as_ref().expect("spec").description,
        "edited by hand"
    );

    // That read found no encoding, so the server makes one from the edited data.
    eventually("the row's encoding is refilled", || {
        server.cached_encoding(&id).is_some()
    })
    .await;
    let refilled = Agent::decode(server.cached_encoding(&id).expect("refilled").as_slice())
        .expect("the refilled encoding is an Agent");
    let mut expected = Agent::decode(written.as_slice()).expect("written encoding");
    expected.spec.as_mut().expect("spec").description = "edited by hand".into();
    assert_eq!(
        refilled, expected,
        "the same encoding a write of the edited resource stores"
    );
    let served = query.get(get()).await.expect("get").into_inner();
    assert_eq!(
        served, decoded,
        "a read from the refilled encoding equals the decoded one"
    );
}

#[tokio::test]
async fn rows_without_a_cached_encoding_get_one_at_start_without_being_read() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("stigmer.db");
    let server = TestServer::start_at(&db).await;
    let mut command = AgentCommandControllerClient::new(server.channel.clone());
    let mut ids = Vec::new();
    for n in 0..300 {
        let created = command
            .create(agent(&format!("Old {n}")))
            .await
            .expect("create")
            .into_inner();
        ids.push(created.metadata.expect("metadata").id);
    }
    server.stop().await;
    // As in a database written before the cache existed.
    let conn = rusqlite::Connection::open(&db).expect("open");
    let cleared = conn
        .execute("UPDATE resources SET proto = NULL", [])
        .expect("drop every encoding");
    // Each agent comes with its default instance.
    assert_eq!(cleared, 600);
    drop(conn);

    let server = TestServer::start_at(&db).await;
    let uncached = || -> i64 {
        server
            .sqlite()
            .query_row(
                "SELECT count(*) FROM resources WHERE proto IS NULL",
                [],
                |row| row.get(0),
            )
            .expect("count")
    };
    eventually("every row is refilled", || uncached() == 0).await;
    let mut query = AgentQueryControllerClient::new(server.channel.clone());
    for id in [&ids[0], &ids[299]] {
        let agent = query.get(agent_id(id)).await.expect("get").into_inner();
        assert_eq!(&agent.metadata.expect("metadata").id, id);
    }
    server.stop().await;
}

/// ADR 0017: an `id` changed by hand without `proto` clears the cached encoding (trigger
/// `resources_proto_stale`), so no encoding made for another identity stays on the row. Fails
/// when the trigger does not watch `id` (`AFTER UPDATE OF data, revision`): "the id change
/// left the cached encoding in place".
#[tokio::test]
async fn a_hand_changed_id_clears_the_cached_encoding_and_reads_serve_the_new_id() {
    let (server, mut query, id) = server_with_agent("Moved").await;
    let before = query.get(agent_id(&id)).await.expect("get").into_inner();
    assert!(
        server.cached_encoding(&id).is_some(),
        "a write stores its encoding"
    );
    let last = if id.ends_with('0') { "1" } else { "0" };
    let moved = format!("{}{last}", &id[..id.len() - 1]);

    let conn = rusqlite::Connection::open(&server.db).expect("open");
    let changed = conn
        .execute(
            "UPDATE resources SET id = ?2 WHERE id = ?1",
            [id.as_str(), moved.as_str()],
        )
        .expect("change the id by hand");
    assert_eq!(changed, 1);
    assert_eq!(
        server.cached_encoding(&moved),
        None,
        "the id change left the cached encoding in place"
    );

    let served = query.get(agent_id(&moved)).await.expect("get").into_inner();
    let mut expected = before;
    expected.metadata.as_mut().expect("metadata").id = moved.clone();
    assert_eq!(served, expected);
    expect_code(query.get(agent_id(&id)).await, Code::NotFound);
}
