//! Server streams over plain HTTP: server-sent events for curl and browsers, Connect server
//! streams, and gRPC-Web, each the same stream gRPC clients get.

mod common;

use common::TestServer;
use common::http_client::{Reader, envelope, envelopes, events, post};
use prost::Message;
use serde_json::{Value, json};
use stigmer_api::ai::stigmer::agentic::agent::v1::AgentId;
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_query_controller_client::AgentQueryControllerClient;

const CREATE_AGENT: &str = "/ai.stigmer.agentic.agent.v1.AgentCommandController/create";
const GET_AGENT: &str = "/ai.stigmer.agentic.agent.v1.AgentQueryController/get";
const WATCH: &str = "/ai.stigmer.backend.v1.ResourceService/watch";
const EXPORT: &str = "/ai.stigmer.backend.v1.ResourceService/export";
const JSON: (&str, &str) = ("content-type", "application/json");

async fn create_agent(server: &TestServer, name: &str) -> Value {
    let body = json!({
        "metadata": { "name": name },
        "spec": { "instructions": "Review every pull request." }
    });
    let response = post(server.addr, CREATE_AGENT, &[JSON], body.to_string()).await;
    assert_eq!(response.status(), 200);
    serde_json::from_slice(&Reader::new(response).read_to_end().await).expect("JSON")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

#[tokio::test]
async fn a_watch_is_a_live_event_stream() {
    let server = TestServer::start().await;
    let watch = json!({ "kind": "Agent" }).to_string();
    let response = post(server.addr, WATCH, &[JSON], watch).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut reader = Reader::new(response);
    // The stream is open before anything is written: the create below must arrive live.
    let created = create_agent(&server, "Live one").await;
    let id = created["metadata"]["id"].as_str().expect("id").to_string();
    reader.until(|received| text(received).contains(&id)).await;
    let (name, event) = events(&text(&reader.received))
        .into_iter()
        .find(|(_, event)| event["id"] == id.as_str())
        .expect("the create's event");
    assert_eq!(name, "message");
    assert_eq!(event["type"], "EVENT_TYPE_CREATED");
    assert_eq!(event["kind"], "Agent");
    assert_eq!(
        event["resource"]["@type"],
        "type.googleapis.com/ai.stigmer.agentic.agent.v1.Agent"
    );
    assert_eq!(event["resource"]["metadata"]["name"], "Live one");
    let revision: i64 = event["revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .expect("a revision");
    assert!(revision > 0, "{event}");
}

#[tokio::test]
async fn a_refused_stream_answers_like_a_unary_call() {
    let server = TestServer::start().await;
    let bad = json!({ "kind": "Agent", "sinceRevision": "-1" }).to_string();
    let response = post(server.addr, WATCH, &[JSON], bad).await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["content-type"], "application/json");
    let error: Value =
        serde_json::from_slice(&Reader::new(response).read_to_end().await).expect("JSON");
    assert_eq!(error["code"], "invalid_argument");
    assert_eq!(
        error["details"][0]["debug"]["fieldViolations"][0]["field"],
        "sinceRevision"
    );

    let unknown = json!({ "kind": "Agnet" }).to_string();
    let response = post(server.addr, WATCH, &[JSON], unknown).await;
    let status = response.status();
    let error: Value =
        serde_json::from_slice(&Reader::new(response).read_to_end().await).expect("JSON");
    assert_eq!(status, 400, "{error}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("Agnet")),
        "{error}"
    );
}

#[tokio::test]
async fn a_finite_stream_ends_with_an_end_event() {
    let server = TestServer::start().await;
    for name in ["First", "Second"] {
        create_agent(&server, name).await;
    }
    let export = json!({ "kinds": ["Agent"] }).to_string();
    let response = post(server.addr, EXPORT, &[JSON], export).await;
    assert_eq!(response.status(), 200);
    let received = text(&Reader::new(response).read_to_end().await);
    let events = events(&received);
    let (last, rest) = events.split_last().expect("events");
    assert_eq!(last.0, "end", "{received}");
    let exported: Vec<&Value> = rest.iter().map(|(_, event)| &event["kind"]).collect();
    assert_eq!(exported, [&json!("Agent"), &json!("Agent")], "{received}");
}

#[tokio::test]
async fn a_connect_stream_carries_enveloped_json_and_an_end_of_stream() {
    let server = TestServer::start().await;
    let created = create_agent(&server, "Exported").await;
    let connect = [("content-type", "application/connect+json")];
    let request = envelope(0, json!({ "kinds": ["Agent"] }).to_string().as_bytes());
    let response = post(server.addr, EXPORT, &connect, request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/connect+json"
    );
    let received = envelopes(&Reader::new(response).read_to_end().await);
    assert_eq!(received.len(), 2, "{received:?}");
    let message: Value = serde_json::from_slice(&received[0].1).expect("JSON");
    assert_eq!(
        (received[0].0, &message["id"]),
        (0, &created["metadata"]["id"])
    );
    assert_eq!(received[1], (0b10, b"{}".to_vec()));

    // Refused: still 200, the error in the end-of-stream envelope, as Connect streams do.
    let bad = envelope(
        0,
        json!({ "kind": "Agent", "sinceRevision": "-1" })
            .to_string()
            .as_bytes(),
    );
    let response = post(server.addr, WATCH, &connect, bad).await;
    assert_eq!(response.status(), 200);
    let received = envelopes(&Reader::new(response).read_to_end().await);
    let [(flags, end)] = received.as_slice() else {
        panic!("one envelope: {received:?}");
    };
    assert_eq!(*flags, 0b10);
    let end: Value = serde_json::from_slice(end).expect("JSON");
    assert_eq!(end["error"]["code"], "invalid_argument");

    // A unary method is not a stream.
    let response = post(server.addr, GET_AGENT, &connect, envelope(0, b"{}")).await;
    assert_eq!(response.status(), 501);
}

#[tokio::test]
async fn grpc_web_calls_get_what_grpc_calls_get() {
    let server = TestServer::start().await;
    let created = create_agent(&server, "Over gRPC-Web").await;
    let id = created["metadata"]["id"].as_str().expect("id").to_string();
    let request = AgentId {
        value: id.clone(),
        ..Default::default()
    };
    let web = [("content-type", "application/grpc-web+proto")];
    let response = post(
        server.addr,
        GET_AGENT,
        &web,
        envelope(0, &request.encode_to_vec()),
    )
    .await;
    assert_eq!(response.status(), 200);
    let received = envelopes(&Reader::new(response).read_to_end().await);
    let [(0, message), (0x80, trailers)] = received.as_slice() else {
        panic!("a message, then trailers: {received:?}");
    };
    assert!(
        text(trailers).contains("grpc-status:0"),
        "{}",
        text(trailers)
    );
    let over_grpc = AgentQueryControllerClient::new(server.channel.clone())
        .get(request)
        .await
        .expect("the agent over gRPC")
        .into_inner();
    let over_web = stigmer_api::ai::stigmer::agentic::agent::v1::Agent::decode(message.as_slice())
        .expect("an Agent");
    assert_eq!(over_web, over_grpc);

    let missing = AgentId {
        value: "agt-nope".into(),
        ..Default::default()
    };
    let response = post(
        server.addr,
        GET_AGENT,
        &web,
        envelope(0, &missing.encode_to_vec()),
    )
    .await;
    // A refusal is a trailers-only answer: gRPC-Web carries its status in the headers.
    assert_eq!(
        response.headers()["grpc-status"],
        "5",
        "{:?}",
        response.headers()
    );
    assert!(Reader::new(response).read_to_end().await.is_empty());
}

#[tokio::test]
async fn health_answers_json_calls_and_streams_too() {
    let server = TestServer::start().await;
    let check = post(server.addr, "/grpc.health.v1.Health/Check", &[JSON], "{}").await;
    assert_eq!(check.status(), 200);
    let answer: Value =
        serde_json::from_slice(&Reader::new(check).read_to_end().await).expect("JSON");
    assert_eq!(answer, json!({ "status": "SERVING" }));

    let unknown = json!({ "service": "no.such.Service" }).to_string();
    let missing = post(
        server.addr,
        "/grpc.health.v1.Health/Check",
        &[JSON],
        unknown,
    )
    .await;
    assert_eq!(missing.status(), 404);

    let watch = post(server.addr, "/grpc.health.v1.Health/Watch", &[JSON], "{}").await;
    assert_eq!(watch.headers()["content-type"], "text/event-stream");
    let mut reader = Reader::new(watch);
    reader
        .until(|received| text(received).contains("\n\n"))
        .await;
    assert_eq!(
        events(&text(&reader.received)),
        [("message".to_string(), json!({ "status": "SERVING" }))]
    );
}
