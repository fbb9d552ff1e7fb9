//! Secrets at rest and just in time: sealed in the database (rows, change log, WAL), redacted
//! in every read, opened only for a running execution's ExecutionContext, re-sealed by a key
//! rotation, and a wrong or missing master key refused at start-up.

mod common;

use std::path::Path;

use common::{TestServer, expect_code, to_json};
use serde_json::Value;
use tonic::Code;

const SECRET: &str = "s3cr3t-VALUE-7f1c9a";
const RUNTIME_SECRET: &str = "rt-only-secret-42d0";
const REDACTED: &str = "[redacted: secret]";

const ENV: &str = "/ai.stigmer.agentic.environment.v1.EnvironmentCommandController";
const ENV_Q: &str = "/ai.stigmer.agentic.environment.v1.EnvironmentQueryController";
const AGENT: &str = "/ai.stigmer.agentic.agent.v1.AgentCommandController/create";
const INSTANCE: &str = "/ai.stigmer.agentic.agentinstance.v1.AgentInstanceCommandController/create";
const SESSION: &str = "/ai.stigmer.agentic.session.v1.SessionCommandController/create";
const EXECUTION: &str = "/ai.stigmer.agentic.agentexecution.v1.AgentExecutionCommandController";
const CONTEXT_Q: &str = "/ai.stigmer.agentic.executioncontext.v1.ExecutionContextQueryController";

fn environment_json() -> String {
    format!(
        r#"{{"metadata":{{"name":"prod"}},"spec":{{"data":{{
            "API_TOKEN":{{"value":"{SECRET}","isSecret":true}},
            "REGION":{{"value":"eu-west-1"}}}}}}}}"#
    )
}

async fn call(server: &TestServer, path: &str, body: &str) -> Value {
    to_json(
        &server
            .call_json(path, body)
            .await
            .unwrap_or_else(|s| panic!("{path}: {s:?}")),
    )
}

/// Every byte of the database file and its WAL.
fn raw_bytes(db: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(db).expect("database file");
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    if let Ok(more) = std::fs::read(&wal) {
        bytes.extend(more);
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// An environment, an agent instance that uses it, a session and a running execution.
async fn running_execution(server: &TestServer) -> (Value, Value) {
    let env = call(server, &format!("{ENV}/create"), &environment_json()).await;
    let agent = call(
        server,
        AGENT,
        r#"{"metadata":{"name":"deployer"},"spec":{"instructions":"Deploy when asked to.",
            "envSpec":{"data":{"LOG_LEVEL":{"value":"debug"},"REGION":{"value":"us-east-1"}}}}}"#,
    )
    .await;
    let instance = call(
        server,
        INSTANCE,
        &format!(
            r#"{{"metadata":{{"name":"deployer prod"}},"spec":{{"agentId":"{}",
                "environmentRefs":[{{"kind":"environment","slug":"prod"}}]}}}}"#,
            agent["metadata"]["id"].as_str().expect("agent id")
        ),
    )
    .await;
    let session = call(
        server,
        SESSION,
        &format!(
            r#"{{"spec":{{"agentInstanceId":"{}"}}}}"#,
            instance["metadata"]["id"].as_str().expect("instance id")
        ),
    )
    .await;
    let execution = call(
        server,
        &format!("{EXECUTION}/create"),
        &format!(
            r#"{{"spec":{{"sessionId":"{}","message":"ship it",
                "runtimeEnv":{{"RUN_TOKEN":{{"value":"{RUNTIME_SECRET}","isSecret":true}}}}}}}}"#,
            session["metadata"]["id"].as_str().expect("session id")
        ),
    )
    .await;
    (env, execution)
}

async fn context_of(server: &TestServer, execution: &Value) -> Result<Value, tonic::Status> {
    let id = execution["metadata"]["id"].as_str().expect("execution id");
    server
        .call_json(
            &format!("{CONTEXT_Q}/getByReference"),
            &format!(r#"{{"slug":"{id}"}}"#),
        )
        .await
        .map(|context| to_json(&context))
}

async fn move_to(server: &TestServer, execution: &Value, phase: &str) {
    let id = execution["metadata"]["id"].as_str().expect("execution id");
    call(
        server,
        &format!("{EXECUTION}/updateStatus"),
        &format!(r#"{{"executionId":"{id}","status":{{"phase":"{phase}"}}}}"#),
    )
    .await;
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_and_redacted_in_every_read() {
    let server = TestServer::start().await;
    let created = call(&server, &format!("{ENV}/create"), &environment_json()).await;
    let data = &created["spec"]["data"];
    assert_eq!(data["API_TOKEN"]["value"], REDACTED, "{created}");
    assert_eq!(
        data["REGION"]["value"], "eu-west-1",
        "plain values stay readable"
    );
    let id = created["metadata"]["id"].as_str().expect("id").to_string();

    let got = call(
        &server,
        &format!("{ENV_Q}/get"),
        &format!(r#"{{"value":"{id}"}}"#),
    )
    .await;
    assert_eq!(got["spec"]["data"]["API_TOKEN"]["value"], REDACTED);
    let listed = call(&server, &format!("{ENV_Q}/list"), "{}").await;
    assert_eq!(
        listed["items"][0]["spec"]["data"]["API_TOKEN"]["value"],
        REDACTED
    );

    // Sending the redacted value back keeps the secret; the update is then a no-op.
    let again = call(&server, &format!("{ENV}/update"), &got.to_string()).await;
    assert_eq!(
        again["metadata"]["revision"], got["metadata"]["revision"],
        "nothing changed"
    );

    // The stored JSON holds a sealed value, not the secret.
    let stored = server.stored_json(&id);
    let sealed = stored["spec"]["data"]["API_TOKEN"]["value"]
        .as_str()
        .expect("value");
    assert!(sealed.starts_with("stigmer-sealed:v1:"), "{sealed}");
    assert!(
        !contains(&raw_bytes(&server.db), SECRET),
        "no plaintext in the database or WAL"
    );

    let status = expect_code(
        server
            .call_json(
                &format!("{ENV}/create"),
                &format!(r#"{{"metadata":{{"name":"copy"}},"spec":{{"data":{{"K":{{"value":"{REDACTED}","isSecret":true}}}}}}}}"#),
            )
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        common::violated_fields(&status),
        vec![r#"spec.data["K"].value"#.to_string()]
    );

    let db = server.db.clone();
    let dir = server.stop().await;
    assert!(
        !contains(&raw_bytes(&db), SECRET),
        "nor after the final checkpoint"
    );
    drop(dir);
}

#[tokio::test]
async fn the_execution_context_resolves_secrets_just_in_time_and_only_while_running() {
    let server = TestServer::start().await;
    let (_, execution) = running_execution(&server).await;
    assert_eq!(
        execution["spec"]["runtimeEnv"]["RUN_TOKEN"]["value"], REDACTED,
        "the execution itself never shows its runtime secret"
    );

    let context = context_of(&server, &execution)
        .await
        .expect("context while pending");
    let data = &context["spec"]["data"];
    assert_eq!(data["API_TOKEN"]["value"], SECRET, "{context}");
    assert_eq!(data["RUN_TOKEN"]["value"], RUNTIME_SECRET);
    assert_eq!(data["LOG_LEVEL"]["value"], "debug", "agent defaults");
    assert_eq!(
        data["REGION"]["value"], "eu-west-1",
        "the environment overrides the agent default"
    );

    move_to(&server, &execution, "EXECUTION_IN_PROGRESS").await;
    assert!(
        context_of(&server, &execution).await.is_ok(),
        "still running"
    );
    assert!(!contains(&raw_bytes(&server.db), RUNTIME_SECRET));

    move_to(&server, &execution, "EXECUTION_COMPLETED").await;
    expect_code(context_of(&server, &execution).await, Code::NotFound);
}

#[tokio::test]
async fn key_rotation_reseals_everything_and_keeps_it_readable() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("stigmer.db");
    let server = TestServer::start_at(&db).await;
    let (_, execution) = running_execution(&server).await;
    let before_stored = raw_bytes(&db);
    server.stop().await;
    let key_file = db.with_extension("key");
    let old_key = std::fs::read_to_string(&key_file).expect("key file");

    let config = stigmer_grpc::ServerConfig::new("127.0.0.1:0".parse().expect("addr"), &db);
    let rotation = stigmer_grpc::rotate_master_key(&config)
        .await
        .expect("rotate");
    assert!(rotation.resealed >= 2, "{rotation:?}");
    assert!(rotation.new_key.is_none(), "the key file holds the new key");
    let new_key = std::fs::read_to_string(&key_file).expect("key file");
    assert_ne!(old_key, new_key);
    assert!(new_key.contains(&rotation.key_id));
    let old_id = old_key
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .and_then(|l| l.split(' ').next())
        .expect("old id");
    assert!(!new_key.contains(old_id), "the old key is retired");
    assert_ne!(before_stored, raw_bytes(&db));
    assert!(!contains(&raw_bytes(&db), SECRET));

    let server = TestServer::start_at(&db).await;
    let context = context_of(&server, &execution)
        .await
        .expect("context after rotation");
    assert_eq!(context["spec"]["data"]["API_TOKEN"]["value"], SECRET);
    assert_eq!(
        context["spec"]["data"]["RUN_TOKEN"]["value"],
        RUNTIME_SECRET
    );
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_or_missing_master_key_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("stigmer.db");
    let server = TestServer::start_at(&db).await;
    call(&server, &format!("{ENV}/create"), &environment_json()).await;
    server.stop().await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut config = stigmer_grpc::ServerConfig::new(listener.local_addr().expect("addr"), &db);
    config.master_key = Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into());
    let err = stigmer_grpc::run(&config, listener, async {})
        .await
        .expect_err("a wrong key is refused");
    assert!(err.to_string().contains("master key is wrong"), "{err}");

    std::fs::remove_file(db.with_extension("key")).expect("remove key file");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let config = stigmer_grpc::ServerConfig::new(listener.local_addr().expect("addr"), &db);
    let err = stigmer_grpc::run(&config, listener, async {})
        .await
        .expect_err("a missing key is refused");
    assert!(err.to_string().contains("no master key was found"), "{err}");
}

/// The reported attack: a caller working in another org named this one in the request body
/// and got its secrets in plain text. A body may only name the call's own org (the
/// `x-stigmer-org` header's), for reads and writes alike.
#[tokio::test]
async fn a_request_body_cannot_reach_another_orgs_resources_or_secrets() {
    let server = TestServer::start().await;
    let (env, execution) = running_execution(&server).await;
    let execution_id = execution["metadata"]["id"].as_str().expect("execution id");
    let env_id = env["metadata"]["id"].as_str().expect("env id");
    let intruder = "team-b";
    let denied = |result: Result<prost_reflect::DynamicMessage, tonic::Status>, what: &str| {
        let status = expect_code(result, Code::PermissionDenied);
        assert!(
            !status.message().contains(SECRET) && !status.message().contains(RUNTIME_SECRET),
            "{what}: {status:?}"
        );
        assert!(
            status.message().contains("x-stigmer-org"),
            "{what}: {status:?}"
        );
        assert_eq!(
            common::violated_fields(&status).len(),
            1,
            "{what}: {status:?}"
        );
    };

    denied(
        server
            .call_json_as(
                intruder,
                &format!("{CONTEXT_Q}/getByReference"),
                &format!(r#"{{"slug":"{execution_id}","org":"local"}}"#),
            )
            .await,
        "ExecutionContext/getByReference",
    );
    denied(
        server
            .call_json_as(
                intruder,
                &format!("{ENV_Q}/getByReference"),
                r#"{"slug":"prod","org":"local"}"#,
            )
            .await,
        "Environment/getByReference",
    );
    denied(
        server
            .call_json_as(
                intruder,
                &format!("{ENV}/update"),
                &format!(
                    r#"{{"metadata":{{"id":"{env_id}","name":"prod","org":"local"}},
                        "spec":{{"data":{{"API_TOKEN":{{"value":"stolen"}}}}}}}}"#
                ),
            )
            .await,
        "Environment/update",
    );
    denied(
        server
            .call_json_as(
                intruder,
                &format!("{ENV}/create"),
                r#"{"metadata":{"name":"planted","org":"local"},"spec":{}}"#,
            )
            .await,
        "Environment/create",
    );
    let mut watch = tonic::Request::new(stigmer_api::ai::stigmer::backend::v1::WatchRequest {
        org: "local".into(),
        ..Default::default()
    });
    watch
        .metadata_mut()
        .insert(stigmer_grpc::ORG_HEADER, intruder.parse().expect("header"));
    let refused =
        stigmer_api::ai::stigmer::backend::v1::resource_service_client::ResourceServiceClient::new(
            server.channel.clone(),
        )
        .watch(watch)
        .await;
    expect_code(refused.map(|_| ()), Code::PermissionDenied);

    // Without the body naming it, the other org is simply not there; in its own org the call
    // may name it.
    expect_code(
        server
            .call_json_as(
                intruder,
                &format!("{ENV_Q}/getByReference"),
                r#"{"slug":"prod"}"#,
            )
            .await,
        Code::NotFound,
    );
    let own = server
        .call_json(
            &format!("{CONTEXT_Q}/getByReference"),
            &format!(r#"{{"slug":"{execution_id}","org":"local"}}"#),
        )
        .await
        .expect("the context in its own org");
    assert_eq!(to_json(&own)["spec"]["data"]["API_TOKEN"]["value"], SECRET);
    let stored = call(
        &server,
        &format!("{ENV_Q}/get"),
        &format!(r#"{{"value":"{env_id}"}}"#),
    )
    .await;
    assert_eq!(
        stored["metadata"]["revision"], env["metadata"]["revision"],
        "unchanged"
    );
}
