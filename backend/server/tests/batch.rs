//! ResourceService/applyBatch: all or none, each item through its kind's apply, references to
//! earlier items resolved, one revision per resource in item order.

mod common;

use common::{TestServer, call, method_types, to_json};
use prost::Message;
use prost_reflect::{DynamicMessage, Value};
use serde_json::{Value as Json, json};
use tonic::Code;

const APPLY_BATCH: &str = "/ai.stigmer.backend.v1.ResourceService/applyBatch";

/// A resource of `message` (full name) from its JSON, packed as an Any.
fn packed(message: &str, resource: Json) -> Json {
    let descriptor = stigmer_api::DESCRIPTOR_POOL
        .get_message_by_name(message)
        .expect("message");
    let resource = DynamicMessage::deserialize(descriptor, resource).expect("resource JSON");
    json!({"@type": format!("type.googleapis.com/{message}"), "value": resource.encode_to_vec()})
}

async fn apply_batch(server: &TestServer, items: Vec<Json>) -> Result<Json, tonic::Status> {
    let (input, output) = method_types(APPLY_BATCH);
    let mut request = DynamicMessage::new(input.clone());
    let any_type = input
        .get_field_by_name("resources")
        .and_then(|f| f.kind().as_message().cloned())
        .expect("Any");
    let anys = items
        .into_iter()
        .map(|item| {
            let mut any = DynamicMessage::new(any_type.clone());
            any.set_field_by_name(
                "type_url",
                Value::String(item["@type"].as_str().expect("type").into()),
            );
            let bytes: Vec<u8> = serde_json::from_value(item["value"].clone()).expect("bytes");
            any.set_field_by_name("value", Value::Bytes(bytes.into()));
            Value::Message(any)
        })
        .collect();
    request.set_field_by_name("resources", Value::List(anys));
    let response = call(&server.channel, APPLY_BATCH, request, output).await?;
    // Unpack each result's resource for the assertions.
    let results = response
        .get_field_by_name("results")
        .and_then(|v| v.as_list().map(<[Value]>::to_vec))
        .unwrap_or_default();
    let mut unpacked = Vec::new();
    for result in results {
        let result = result.as_message().expect("result").clone();
        let any = result
            .get_field_by_name("resource")
            .expect("any")
            .as_message()
            .expect("any")
            .clone();
        let type_url = any
            .get_field_by_name("type_url")
            .expect("url")
            .as_str()
            .expect("url")
            .to_string();
        let name = type_url.trim_start_matches("type.googleapis.com/");
        let descriptor = stigmer_api::DESCRIPTOR_POOL
            .get_message_by_name(name)
            .expect("kind");
        let bytes = any
            .get_field_by_name("value")
            .expect("bytes")
            .as_bytes()
            .expect("bytes")
            .clone();
        let resource = DynamicMessage::decode(descriptor, bytes).expect("decode");
        unpacked.push(json!({
            "resource": to_json(&resource),
            "outcome": result.get_field_by_name("outcome").expect("outcome").as_str().expect("outcome"),
        }));
    }
    let revision = to_json(&response)["revision"].clone();
    Ok(json!({"results": unpacked, "revision": revision}))
}

const AGENT: &str = "ai.stigmer.agentic.agent.v1.Agent";
const ENVIRONMENT: &str = "ai.stigmer.agentic.environment.v1.Environment";
const INSTANCE: &str = "ai.stigmer.agentic.agentinstance.v1.AgentInstance";

fn agent(name: &str, instructions: &str) -> Json {
    packed(
        AGENT,
        json!({"metadata": {"name": name}, "spec": {"instructions": instructions}}),
    )
}

fn count(server: &TestServer, kind: &str) -> i64 {
    server
        .sqlite()
        .query_row(
            "SELECT count(*) FROM resources WHERE kind = ?1",
            [kind],
            |row| row.get(0),
        )
        .expect("count")
}

#[tokio::test]
async fn a_batch_applies_everything_in_order_and_resolves_references_to_its_own_items() {
    let server = TestServer::start().await;
    let before = apply_batch(
        &server,
        vec![agent("existing", "Answer every question politely.")],
    )
    .await
    .expect("one agent");
    let agent_id = before["results"][0]["resource"]["metadata"]["id"]
        .as_str()
        .expect("id")
        .to_string();

    let batch = vec![
        packed(
            ENVIRONMENT,
            json!({"metadata": {"name": "prod"}, "spec": {"description": "production"}}),
        ),
        agent("reviewer", "Review every pull request carefully."),
        packed(
            INSTANCE,
            json!({
                "metadata": {"name": "prod-instance"},
                "spec": {"agentId": agent_id, "environmentRefs": [{"kind": "environment", "slug": "prod"}]},
            }),
        ),
    ];
    let applied = apply_batch(&server, batch.clone())
        .await
        .expect("the batch");
    let results = applied["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    let outcomes: Vec<&str> = results
        .iter()
        .map(|r| r["outcome"].as_str().expect("outcome"))
        .collect();
    assert_eq!(outcomes, ["created", "created", "created"]);
    let revisions: Vec<i64> = results
        .iter()
        .map(|r| {
            r["resource"]["metadata"]["revision"]
                .as_str()
                .expect("revision")
                .parse()
                .expect("int")
        })
        .collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "in item order: {revisions:?}"
    );
    let last: i64 = applied["revision"]
        .as_str()
        .expect("revision")
        .parse()
        .expect("int");
    assert!(last >= revisions[2], "{last} vs {revisions:?}");
    assert_eq!(
        results[2]["resource"]["spec"]["environmentRefs"][0]["slug"],
        "prod"
    );
    // The Agent's default instance came with it, in the same transaction.
    assert_eq!(count(&server, "AgentInstance"), 3);

    // The same batch again changes nothing.
    let again = apply_batch(&server, batch).await.expect("again");
    let outcomes: Vec<&str> = again["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["outcome"].as_str().expect("outcome"))
        .collect();
    assert_eq!(outcomes, ["unchanged", "unchanged", "unchanged"]);
    assert_eq!(again["revision"].as_str().unwrap_or("0"), "0");
    server.stop().await;
}

#[tokio::test]
async fn a_batch_with_any_bad_item_applies_nothing_and_names_every_mistake() {
    let server = TestServer::start().await;
    let failed = apply_batch(
        &server,
        vec![
            agent("fine", "Answer every question politely."),
            agent("short", "short"),
            packed(ENVIRONMENT, json!({"metadata": {"name": "!!!"}})),
        ],
    )
    .await
    .expect_err("a bad item");
    assert_eq!(failed.code(), Code::InvalidArgument);
    let fields = common::violated_fields(&failed);
    assert!(
        fields.contains(&"resources[1].spec.instructions".to_string()),
        "{fields:?}"
    );
    assert!(
        fields
            .iter()
            .any(|f| f.starts_with("resources[2].metadata")),
        "{fields:?}"
    );
    assert_eq!(
        count(&server, "Agent"),
        0,
        "the good item was not applied either"
    );

    // A reference to nothing fails the whole batch too.
    let dangling = apply_batch(
        &server,
        vec![
            agent("fine", "Answer every question politely."),
            packed(INSTANCE, json!({"metadata": {"name": "orphan"}, "spec": {"agentId": "agt-01j00000000000000000000000"}})),
        ],
    )
    .await
    .expect_err("a dangling parent");
    assert_ne!(dangling.code(), Code::Ok);
    assert_eq!(count(&server, "Agent"), 0);

    // Kinds without an apply, and what is not a kind, are refused before anything runs.
    let refused = apply_batch(
        &server,
        vec![
            packed(
                "ai.stigmer.agentic.agentexecution.v1.AgentExecution",
                json!({"spec": {"message": "hi"}}),
            ),
            json!({"@type": "type.googleapis.com/google.protobuf.Empty", "value": []}),
        ],
    )
    .await
    .expect_err("no apply");
    assert_eq!(
        common::violated_fields(&refused),
        ["resources[0]", "resources[1]"]
    );
    server.stop().await;
}
