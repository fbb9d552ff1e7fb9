//! What the server accepts it can always serve back (docs/adr/0018-resource-size.md): a write
//! too large to return is refused and stores nothing, one at the limit comes back through every
//! read, and a row too large to send (stored before the limit, or edited by hand) never blocks
//! the rest of its kind.

mod common;

use std::time::Duration;

use common::{TestServer, agent, expect_code};
use prost::Message;
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_command_controller_client::AgentCommandControllerClient;
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_query_controller_client::AgentQueryControllerClient;
use stigmer_api::ai::stigmer::agentic::agent::v1::{Agent, AgentId, ListAgentsRequest};
use stigmer_api::ai::stigmer::backend::v1::resource_service_client::ResourceServiceClient;
use stigmer_api::ai::stigmer::backend::v1::{ExportRequest, WatchEvent, WatchRequest};
use stigmer_api::ai::stigmer::commons::apiresource::ApiResourceReference;
use stigmer_grpc::MAX_MESSAGE_SIZE;
use stigmer_grpc::limits::{MAX_RESOURCE_SIZE, OMITTED_HEADER};
use tonic::Code;
use tonic::transport::Channel;

/// Clients that accept more than the server may send, so that the server's own bound is what
/// a test sees.
const CLIENT_LIMIT: usize = 4 * MAX_MESSAGE_SIZE;

fn commands(server: &TestServer) -> AgentCommandControllerClient<Channel> {
    AgentCommandControllerClient::new(server.channel.clone())
        .max_decoding_message_size(CLIENT_LIMIT)
        .max_encoding_message_size(CLIENT_LIMIT)
}

fn queries(server: &TestServer) -> AgentQueryControllerClient<Channel> {
    AgentQueryControllerClient::new(server.channel.clone()).max_decoding_message_size(CLIENT_LIMIT)
}

fn feed(server: &TestServer) -> ResourceServiceClient<Channel> {
    ResourceServiceClient::new(server.channel.clone()).max_decoding_message_size(CLIENT_LIMIT)
}

fn with_description(name: &str, bytes: usize) -> Agent {
    let mut agent = agent(name);
    agent.spec.as_mut().expect("spec").description = "d".repeat(bytes);
    agent
}

fn id_of(agent: &Agent) -> String {
    agent.metadata.as_ref().expect("metadata").id.clone()
}

/// The reported case: a create just under the message limit whose reply, with the fields the
/// server adds, would be over it. Before the bound it was stored and then unreadable.
#[tokio::test]
async fn a_create_whose_reply_would_not_fit_is_refused_and_stores_nothing() {
    let server = TestServer::start().await;
    let huge = with_description("Huge", MAX_MESSAGE_SIZE - 100);
    assert!(
        huge.encoded_len() < MAX_MESSAGE_SIZE,
        "the request itself fits"
    );
    let status = expect_code(
        commands(&server).create(huge).await,
        Code::ResourceExhausted,
    );
    assert!(
        status.message().contains(&MAX_RESOURCE_SIZE.to_string()),
        "names the limit: {}",
        status.message()
    );
    assert!(status.message().contains("nothing was stored"));
    assert_eq!(server.rows_of_kind("Agent"), 0);
    assert_eq!(server.rows_of_kind("AgentInstance"), 0, "nor its instance");
    // An update that would grow a resource past the bound is refused the same way.
    let small = commands(&server)
        .create(agent("Small"))
        .await
        .expect("small agent")
        .into_inner();
    let mut grown = with_description("Small", MAX_RESOURCE_SIZE);
    grown.metadata.as_mut().expect("metadata").id = id_of(&small);
    expect_code(
        commands(&server).update(grown).await,
        Code::ResourceExhausted,
    );
    let kept = queries(&server)
        .get(AgentId {
            value: id_of(&small),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(kept, small, "the refused update changed nothing");
}

#[tokio::test]
async fn a_resource_at_the_limit_comes_back_through_every_read() {
    let server = TestServer::start().await;
    // The description takes nearly all of the bound; the rest of the agent under 2 KiB.
    let created = commands(&server)
        .create(with_description("Big", MAX_RESOURCE_SIZE - 2048))
        .await
        .expect("a resource within the bound is stored")
        .into_inner();
    let id = id_of(&created);
    let got = queries(&server)
        .get(AgentId {
            value: id.clone(),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got, created);
    queries(&server)
        .get_by_reference(ApiResourceReference {
            slug: "big".into(),
            ..Default::default()
        })
        .await
        .expect("getByReference");
    let page = queries(&server)
        .list(ListAgentsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.items, vec![created.clone()]);
    let mut watch = feed(&server)
        .watch(WatchRequest {
            kind: "Agent".into(),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let event = next_event(&mut watch).await;
    assert_eq!(unpack(&event).expect("resource"), created);
    let exported = export(&server).await;
    assert!(
        exported
            .iter()
            .any(|item| item.id == id && !item.json.is_empty())
    );
    let deleted = commands(&server)
        .delete(AgentId {
            value: id,
            ..Default::default()
        })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(
        deleted.spec.expect("spec").description.len(),
        MAX_RESOURCE_SIZE - 2048
    );
}

/// A row made too large by hand, as an older server could have stored it: point reads say so,
/// list, watch and export skip it with a note, and delete still removes it.
#[tokio::test]
async fn a_row_too_large_to_send_never_blocks_its_kind() {
    let server = TestServer::start().await;
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        let created = commands(&server)
            .create(agent(name))
            .await
            .expect("create")
            .into_inner();
        ids.push(id_of(&created));
    }
    let poisoned = ids[1].clone();
    poison(&server, &poisoned, MAX_MESSAGE_SIZE);

    let status = expect_code(
        queries(&server)
            .get(AgentId {
                value: poisoned.clone(),
                ..Default::default()
            })
            .await,
        Code::ResourceExhausted,
    );
    assert!(status.message().contains(&poisoned), "{}", status.message());

    // Paging one at a time passes the row and names it in the page that skipped it.
    let mut listed = Vec::new();
    let mut omitted = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let response = queries(&server)
            .list(ListAgentsRequest {
                page_size: 1,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("every page is served");
        omitted.extend(
            response
                .metadata()
                .get_all(OMITTED_HEADER)
                .iter()
                .map(|v| v.to_str().expect("ascii").to_string()),
        );
        let page = response.into_inner();
        listed.extend(page.items.iter().map(id_of));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(listed, vec![ids[0].clone(), ids[2].clone()]);
    assert_eq!(omitted.len(), 1, "{omitted:?}");
    assert!(omitted[0].starts_with(&poisoned), "{omitted:?}");

    // A watch snapshot carries the row's event without the resource, and goes on.
    let mut watch = feed(&server)
        .watch(WatchRequest {
            kind: "Agent".into(),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = next_event(&mut watch).await;
        seen.push((event.id.clone(), event.resource_omitted.is_empty()));
    }
    let expected: Vec<(String, bool)> =
        ids.iter().map(|id| (id.clone(), id != &poisoned)).collect();
    assert_eq!(seen, expected);
    let live = commands(&server)
        .create(agent("d"))
        .await
        .expect("create while watching")
        .into_inner();
    assert_eq!(unpack(&next_event(&mut watch).await), Some(live));

    // Export holds everything else and says what it left out.
    let exported = export(&server).await;
    let left_out: Vec<_> = exported
        .iter()
        .filter(|item| !item.omitted.is_empty())
        .collect();
    assert_eq!(left_out.len(), 1);
    assert_eq!(left_out[0].id, poisoned);
    assert!(left_out[0].json.is_empty());
    assert!(
        exported
            .iter()
            .any(|item| item.id == ids[2] && !item.json.is_empty())
    );

    // Delete works and answers with the metadata.
    let deleted = commands(&server)
        .delete(AgentId {
            value: poisoned.clone(),
            ..Default::default()
        })
        .await
        .expect("a row too large to send can still be deleted")
        .into_inner();
    assert_eq!(id_of(&deleted), poisoned);
    assert!(deleted.spec.is_none());
    expect_code(
        queries(&server)
            .get(AgentId {
                value: poisoned,
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
}

/// Grows a stored row's description by hand, past anything the API accepts.
fn poison(server: &TestServer, id: &str, bytes: usize) {
    let conn = rusqlite::Connection::open(&server.db).expect("open db");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    let changed = conn
        .execute(
            "UPDATE resources SET data = json_set(data, '$.spec.description', ?1) WHERE id = ?2",
            rusqlite::params!["p".repeat(bytes), id],
        )
        .expect("hand edit");
    assert_eq!(changed, 1);
}

async fn next_event(stream: &mut tonic::Streaming<WatchEvent>) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("an event in time")
        .expect("the watch goes on")
        .expect("the watch is open")
}

fn unpack(event: &WatchEvent) -> Option<Agent> {
    let any = event.resource.as_ref()?;
    Some(Agent::decode(any.value.as_slice()).expect("an Agent"))
}

async fn export(
    server: &TestServer,
) -> Vec<stigmer_api::ai::stigmer::backend::v1::ExportedResource> {
    let mut stream = feed(server)
        .export(ExportRequest::default())
        .await
        .expect("export")
        .into_inner();
    let mut items = Vec::new();
    while let Some(item) = stream.message().await.expect("every export item is served") {
        items.push(item);
    }
    items
}
