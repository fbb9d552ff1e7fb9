//! Unary calls with JSON bodies over plain HTTP/1.1, as curl makes them (Connect's unary
//! protocol): the same answers, errors and field violations as gRPC, on the same port.

mod common;

use std::net::SocketAddr;

use common::TestServer;
use serde_json::{Value, json};
use stigmer_api::ai::stigmer::agentic::agent::v1::AgentId;
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_query_controller_client::AgentQueryControllerClient;

const AGENTS: &str = "/ai.stigmer.agentic.agent.v1.AgentCommandController";
const AGENT_QUERIES: &str = "/ai.stigmer.agentic.agent.v1.AgentQueryController";

/// POSTs `body` to `path` as `application/json` over HTTP/1.1 and returns the status and the
/// JSON answer.
async fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, head, body) = common::http1(addr, &request).await;
    assert!(head.contains("content-type: application/json"), "{head}");
    (status, serde_json::from_str(&body).expect("JSON body"))
}

#[tokio::test]
async fn a_json_create_is_the_grpc_create() {
    let server = TestServer::start().await;
    let body = json!({
        "metadata": { "name": "PR reviewer" },
        "spec": { "instructions": "Review every pull request." }
    });
    let (status, created) = post(server.addr, &format!("{AGENTS}/create"), &body.to_string()).await;
    assert_eq!(status, 200, "{created}");
    let id = created["metadata"]["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("agt-"), "{id}");
    assert_eq!(created["metadata"]["slug"], "pr-reviewer");
    let over_grpc = AgentQueryControllerClient::new(server.channel.clone())
        .get(AgentId {
            value: id.clone(),
            ..Default::default()
        })
        .await
        .expect("the agent over gRPC")
        .into_inner();
    assert_eq!(common::typed_to_json(&over_grpc), created);
    let (status, read) = post(
        server.addr,
        &format!("{AGENT_QUERIES}/get"),
        &json!({ "value": id }).to_string(),
    )
    .await;
    assert_eq!((status, read), (200, created));
}

#[tokio::test]
async fn errors_are_connect_errors_with_the_grpc_code_and_field_violations() {
    let server = TestServer::start().await;
    let short = json!({ "metadata": { "name": "x" }, "spec": { "instructions": "short" } });
    let (status, error) = post(server.addr, &format!("{AGENTS}/create"), &short.to_string()).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["code"], "invalid_argument");
    let violation = &error["details"][0];
    assert_eq!(violation["type"], "google.rpc.BadRequest");
    assert_eq!(
        violation["debug"]["fieldViolations"][0]["field"],
        "spec.instructions"
    );
    assert!(violation["value"].as_str().is_some_and(|v| !v.is_empty()));

    let (status, error) = post(
        server.addr,
        &format!("{AGENT_QUERIES}/get"),
        r#"{"value":"agt-nope"}"#,
    )
    .await;
    assert_eq!(
        (status, &error["code"]),
        (404, &json!("not_found")),
        "{error}"
    );

    let (status, error) = post(
        server.addr,
        &format!("{AGENT_QUERIES}/get"),
        r#"{"bogus":1}"#,
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("bogus")),
        "{error}"
    );

    let (status, error) = post(server.addr, &format!("{AGENT_QUERIES}/get"), "{not json").await;
    assert_eq!(
        (status, &error["code"]),
        (400, &json!("invalid_argument")),
        "{error}"
    );

    let (status, error) = post(
        server.addr,
        "/ai.stigmer.backend.v1.ResourceService/noSuchMethod",
        "{}",
    )
    .await;
    assert_eq!(
        (status, &error["code"]),
        (501, &json!("unimplemented")),
        "{error}"
    );
    assert_eq!(server.rows_of_kind("Agent"), 0, "nothing was stored");
}
