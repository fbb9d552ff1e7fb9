//! ResourceService/applyBatch: all or none, each item through its kind's apply, references to
//! earlier items resolved, one revision per resource in item order. ResourceService/txn: the
//! same under conditions on revisions, with deletes.

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

const TXN: &str = "/ai.stigmer.backend.v1.ResourceService/txn";

/// A txn from its JSON (puts as `{"put": {"@type": ..., ...}}`), answered as JSON.
async fn txn(server: &TestServer, request: Json) -> Result<Json, tonic::Status> {
    server
        .call_json(TXN, &request.to_string())
        .await
        .map(|response| to_json(&response))
}

fn put_agent(name: &str, instructions: &str) -> Json {
    json!({"put": {
        "@type": format!("type.googleapis.com/{AGENT}"),
        "metadata": {"name": name},
        "spec": {"instructions": instructions},
    }})
}

fn revision_of(json: &Json) -> i64 {
    json.as_str().unwrap_or("0").parse().expect("an int64")
}

#[tokio::test]
async fn a_txn_writes_only_when_every_condition_holds() {
    let server = TestServer::start().await;
    let created = txn(
        &server,
        json!({"operations": [put_agent("alpha", "Answer every question politely.")]}),
    )
    .await
    .expect("a txn without conditions");
    assert_eq!(created["succeeded"], true);
    assert_eq!(created["results"][0]["outcome"], "created");
    let alpha = created["results"][0]["resource"]["metadata"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let at = revision_of(&created["results"][0]["resource"]["metadata"]["revision"]);

    // A stale revision: nothing runs, and the answer says which condition and what it found.
    let stale = txn(
        &server,
        json!({
            "conditions": [
                {"kind": "Agent", "id": "agt-absent", "revision": "0"},
                {"kind": "Agent", "id": alpha, "revision": (at - 1).to_string()},
            ],
            "operations": [put_agent("beta", "Review every pull request carefully.")],
        }),
    )
    .await
    .expect("a failed condition is an answer");
    assert_eq!(stale["succeeded"], false, "{stale}");
    assert_eq!(stale["failedCondition"], 1);
    assert_eq!(revision_of(&stale["foundRevision"]), at);
    assert_eq!(stale["results"], Json::Null);
    assert_eq!(count(&server, "Agent"), 1, "beta was not created");

    // Expected absent but present.
    let present = txn(
        &server,
        json!({
            "conditions": [{"kind": "Agent", "id": alpha, "revision": "0"}],
            "operations": [put_agent("beta", "Review every pull request carefully.")],
        }),
    )
    .await
    .expect("an answer");
    assert_eq!(present["failedCondition"], 0, "{present}");
    assert_eq!(revision_of(&present["foundRevision"]), at);
    assert_eq!(count(&server, "Agent"), 1);

    // Every condition holds: an update and a create, each with its revision, in order.
    let done = txn(
        &server,
        json!({
            "conditions": [
                {"kind": "Agent", "id": alpha, "revision": at.to_string()},
                {"kind": "Environment", "id": "env-absent", "revision": "0"},
            ],
            "operations": [
                put_agent("alpha", "Answer every question briefly."),
                put_agent("beta", "Review every pull request carefully."),
            ],
        }),
    )
    .await
    .expect("the txn");
    assert_eq!(done["succeeded"], true, "{done}");
    let outcomes: Vec<&Json> = (0..2).map(|i| &done["results"][i]["outcome"]).collect();
    assert_eq!(outcomes, [&json!("updated"), &json!("created")]);
    let updated = revision_of(&done["results"][0]["resource"]["metadata"]["revision"]);
    assert!(updated > at);
    assert_eq!(
        done["results"][0]["resource"]["spec"]["instructions"],
        "Answer every question briefly."
    );
    assert_eq!(count(&server, "Agent"), 2);

    // A delete guarded by the revision just written; the default instance goes with it.
    let deleted = txn(
        &server,
        json!({
            "conditions": [{"kind": "Agent", "id": alpha, "revision": updated.to_string()}],
            "operations": [{"delete": {"kind": "Agent", "id": alpha}}],
        }),
    )
    .await
    .expect("the delete");
    assert_eq!(deleted["succeeded"], true, "{deleted}");
    assert_eq!(deleted["results"][0]["outcome"], "deleted");
    assert_eq!(deleted["results"][0]["resource"]["metadata"]["id"], alpha);
    assert!(revision_of(&deleted["revision"]) > updated, "{deleted}");
    assert_eq!(count(&server, "Agent"), 1);
    assert_eq!(
        count(&server, "AgentInstance"),
        1,
        "beta's default instance is left"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_txn_with_a_bad_operation_writes_nothing_and_names_the_field() {
    let server = TestServer::start().await;
    let refused = txn(
        &server,
        json!({
            "conditions": [{"kind": "Gadget", "id": "gdg-1", "revision": "0"}],
            "operations": [
                put_agent("fine", "Answer every question politely."),
                {"delete": {"kind": "Widget", "id": "wdg-1"}},
                {},
            ],
        }),
    )
    .await;
    let status = common::expect_code(refused, Code::InvalidArgument);
    let fields = common::violated_fields(&status);
    for field in ["conditions[0].kind", "operations[1].delete.kind"] {
        assert!(fields.contains(&field.to_string()), "{field} in {fields:?}");
    }
    assert!(
        fields.iter().any(|f| f.starts_with("operations[2]")),
        "an empty operation: {fields:?}"
    );

    let invalid = txn(
        &server,
        json!({"operations": [
            put_agent("fine", "Answer every question politely."),
            put_agent("short", "short"),
        ]}),
    )
    .await;
    let status = common::expect_code(invalid, Code::InvalidArgument);
    assert_eq!(
        common::violated_fields(&status),
        ["operations[1].put.spec.instructions"]
    );

    let missing = txn(
        &server,
        json!({"operations": [
            put_agent("fine", "Answer every question politely."),
            {"delete": {"kind": "Agent", "id": "agt-01j00000000000000000000000"}},
        ]}),
    )
    .await;
    common::expect_code(missing, Code::NotFound);

    // A resource put and then deleted in one txn is refused: its delete would miss what the
    // put made with it (the default instance).
    let created = txn(
        &server,
        json!({"operations": [put_agent("twice", "Answer every question politely.")]}),
    )
    .await
    .expect("create");
    let id = created["results"][0]["resource"]["metadata"]["id"].clone();
    let twice = txn(
        &server,
        json!({"operations": [
            put_agent("twice", "Answer every question briefly."),
            {"delete": {"kind": "Agent", "id": id}},
        ]}),
    )
    .await;
    let status = common::expect_code(twice, Code::InvalidArgument);
    assert_eq!(common::violated_fields(&status), ["operations[1].delete"]);
    let removed = txn(
        &server,
        json!({"operations": [{"delete": {"kind": "Agent", "id": id}}]}),
    )
    .await
    .expect("a delete alone");
    assert_eq!(removed["results"][0]["outcome"], "deleted");
    assert_eq!(
        count(&server, "Agent"),
        0,
        "nothing of any of them was written"
    );
    server.stop().await;
}

/// Many txns guarded by the same revision race to update one Agent: exactly one wins, and
/// every other learns the winner's revision, whether it lost when reading its conditions or
/// when committing.
#[tokio::test]
async fn racing_txns_on_one_revision_have_one_winner() {
    let server = TestServer::start().await;
    let created = txn(
        &server,
        json!({"operations": [put_agent("contested", "Answer every question politely.")]}),
    )
    .await
    .expect("create");
    let id = created["results"][0]["resource"]["metadata"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let at = created["results"][0]["resource"]["metadata"]["revision"].clone();
    let (input, output) = method_types(TXN);
    let mut racers = tokio::task::JoinSet::new();
    for n in 0..16 {
        let request = json!({
            "conditions": [{"kind": "Agent", "id": id, "revision": at}],
            "operations": [put_agent("contested", &format!("Answer every question, racer {n}."))],
        });
        let request = DynamicMessage::deserialize(input.clone(), request).expect("a TxnRequest");
        let (channel, output) = (server.channel.clone(), output.clone());
        racers.spawn(async move { call(&channel, TXN, request, output).await });
    }
    let mut answers = Vec::new();
    while let Some(answer) = racers.join_next().await {
        answers.push(to_json(&answer.expect("joined").expect("an answer")));
    }
    let winners: Vec<&Json> = answers.iter().filter(|a| a["succeeded"] == true).collect();
    assert!(
        answers.iter().all(|a| a["succeeded"].is_boolean()),
        "{answers:?}"
    );
    assert_eq!(winners.len(), 1, "{answers:?}");
    let won_at = &winners[0]["results"][0]["resource"]["metadata"]["revision"];
    for lost in answers.iter().filter(|a| a["succeeded"] == false) {
        assert_eq!(&lost["foundRevision"], won_at, "{lost}");
    }
    let stored: String = server
        .sqlite()
        .query_row(
            "SELECT json_extract(data, '$.spec.instructions') FROM resources WHERE id = ?1",
            [&id],
            |row| row.get(0),
        )
        .expect("row");
    assert_eq!(
        json!(stored),
        winners[0]["results"][0]["resource"]["spec"]["instructions"]
    );
    server.stop().await;
}
