//! Secrets at rest and just in time: sealed in the database (rows, change log, WAL), absent
//! from the bytes of every response (unary reads and write replies, watch, getAtRevision,
//! subscribe; export keeps them sealed), opened only for a running execution's
//! ExecutionContext, re-sealed by a key rotation, and a wrong or missing master key refused at
//! start-up.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use common::{TestServer, expect_code, open_database, to_json};
use prost::Message;
use prost::bytes::Buf;
use prost_reflect::DynamicMessage;
use serde_json::Value;
use stigmer_api::ai::stigmer::backend::v1::{ExportedResource, WatchEvent};
use stigmer_grpc::codec::DynamicEncoder;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::{Code, Status, Streaming};

const SECRET: &str = "s3cr3t-VALUE-7f1c9a";
const RUNTIME_SECRET: &str = "rt-only-secret-42d0";
const AGENT_SECRET: &str = "agent-default-secret-9b3e";
const PLAINTEXTS: [&str; 3] = [SECRET, RUNTIME_SECRET, AGENT_SECRET];
const REDACTED: &str = "[redacted: secret]";
/// What a sealed value starts with: the ciphertext leaves the server only in an export.
const SEALED: &str = "stigmer-sealed:";

const ENV: &str = "/ai.stigmer.agentic.environment.v1.EnvironmentCommandController";
const ENV_Q: &str = "/ai.stigmer.agentic.environment.v1.EnvironmentQueryController";
const AGENT: &str = "/ai.stigmer.agentic.agent.v1.AgentCommandController";
const AGENT_Q: &str = "/ai.stigmer.agentic.agent.v1.AgentQueryController";
const INSTANCE_C: &str = "/ai.stigmer.agentic.agentinstance.v1.AgentInstanceCommandController";
const INSTANCE_Q: &str = "/ai.stigmer.agentic.agentinstance.v1.AgentInstanceQueryController";
const SESSION: &str = "/ai.stigmer.agentic.session.v1.SessionCommandController/create";
const EXECUTION: &str = "/ai.stigmer.agentic.agentexecution.v1.AgentExecutionCommandController";
const EXECUTION_Q: &str = "/ai.stigmer.agentic.agentexecution.v1.AgentExecutionQueryController";
const CONTEXT_Q: &str = "/ai.stigmer.agentic.executioncontext.v1.ExecutionContextQueryController";
const FEED: &str = "/ai.stigmer.backend.v1.ResourceService";
const DEADLINE: Duration = Duration::from_secs(30);

fn environment_json() -> String {
    format!(
        r#"{{"metadata":{{"name":"prod"}},"spec":{{"data":{{
            "API_TOKEN":{{"value":"{SECRET}","isSecret":true}},
            "REGION":{{"value":"eu-west-1"}}}}}}}}"#
    )
}

/// A call off the just-in-time path, which every test here makes through this: the response,
/// as sent, holds no secret in plain text nor sealed.
async fn call(server: &TestServer, path: &str, body: &str) -> Value {
    let bytes = raw_call(server, path, body)
        .await
        .unwrap_or_else(|s| panic!("{path}: {s:?}"));
    assert_nothing_secret(path, &bytes);
    decode(path, &bytes)
}

/// Hands over each response message exactly as the server sent it. A byte scan of that is
/// harder to fool than a look at fields: nothing nested, unknown or misplaced escapes it.
#[derive(Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = DynamicMessage;
    type Decode = Vec<u8>;
    type Encoder = DynamicEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> DynamicEncoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// A request built from JSON, as grpcurl -d would send it, in the local org.
fn request(path: &str, body: &str) -> tonic::Request<DynamicMessage> {
    let (input, _) = common::method_types(path);
    let mut json = serde_json::Deserializer::from_str(body);
    let message = DynamicMessage::deserialize(input, &mut json).expect("request JSON");
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        stigmer_grpc::ORG_HEADER,
        stigmer_grpc::LOCAL.parse().expect("org header"),
    );
    request
}

async fn client(server: &TestServer) -> tonic::client::Grpc<tonic::transport::Channel> {
    let mut client = tonic::client::Grpc::new(server.channel.clone());
    client.ready().await.expect("ready");
    client
}

fn method(path: &str) -> http::uri::PathAndQuery {
    http::uri::PathAndQuery::from_str(path).expect("path")
}

/// A unary call's response, as sent.
async fn raw_call(server: &TestServer, path: &str, body: &str) -> Result<Vec<u8>, Status> {
    client(server)
        .await
        .unary(request(path, body), method(path), RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// A server stream whose messages arrive as sent.
async fn raw_stream(server: &TestServer, path: &str, body: &str) -> Streaming<Vec<u8>> {
    client(server)
        .await
        .server_streaming(request(path, body), method(path), RawCodec)
        .await
        .unwrap_or_else(|s| panic!("{path}: {s:?}"))
        .into_inner()
}

/// The stream's next message; `None` once it ended.
async fn next_raw(stream: &mut Streaming<Vec<u8>>) -> Option<Vec<u8>> {
    tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("a message in time")
        .expect("a healthy stream")
}

/// A response of `path`'s method as proto3 JSON.
fn decode(path: &str, bytes: &[u8]) -> Value {
    let (_, output) = common::method_types(path);
    to_json(&DynamicMessage::decode(output, bytes).expect("a response"))
}

fn assert_no_plaintext(what: &str, bytes: &[u8]) {
    for secret in PLAINTEXTS {
        assert!(!contains(bytes, secret), "{what} sent {secret:?}");
    }
}

fn assert_nothing_secret(what: &str, bytes: &[u8]) {
    assert_no_plaintext(what, bytes);
    assert!(!contains(bytes, SEALED), "{what} sent a sealed value");
}

/// How many values in `json` read as a redacted secret.
fn redactions(json: &Value) -> usize {
    match json {
        Value::String(text) => usize::from(text == REDACTED),
        Value::Array(items) => items.iter().map(redactions).sum(),
        Value::Object(fields) => fields.values().map(redactions).sum(),
        _ => 0,
    }
}

/// An agent whose defaults hold a secret of its own.
fn agent_json() -> String {
    format!(
        r#"{{"metadata":{{"name":"deployer"}},"spec":{{"instructions":"Deploy when asked to.",
            "envSpec":{{"data":{{"LOG_LEVEL":{{"value":"debug"}},"REGION":{{"value":"us-east-1"}},
            "AGENT_TOKEN":{{"value":"{AGENT_SECRET}","isSecret":true}}}}}}}}}}"#
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
    let agent = call(server, &format!("{AGENT}/create"), &agent_json()).await;
    let instance = call(
        server,
        &format!("{INSTANCE_C}/create"),
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
    assert_eq!(data["AGENT_TOKEN"]["value"], AGENT_SECRET);
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

    let (config, store) = open_database(&db, "127.0.0.1:0".parse().expect("addr")).await;
    let rotation = stigmer_grpc::rotate_master_key(&config, store)
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
    let (mut config, store) = open_database(&db, listener.local_addr().expect("addr")).await;
    config.master_key = Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into());
    let err = stigmer_grpc::run(&config, store, listener, async {})
        .await
        .expect_err("a wrong key is refused");
    assert!(err.to_string().contains("master key is wrong"), "{err}");

    std::fs::remove_file(db.with_extension("key")).expect("remove key file");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (config, store) = open_database(&db, listener.local_addr().expect("addr")).await;
    let err = stigmer_grpc::run(&config, store, listener, async {})
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

/// The resources of `running_execution` that hold a secret, each as the server returned it.
struct Holders {
    env: Value,
    agent: Value,
    execution: Value,
    /// Read through the just-in-time path: for its id and revision only.
    context: Value,
}

impl Holders {
    async fn read(server: &TestServer, env: Value, execution: Value) -> Self {
        let agent = call(
            server,
            &format!("{AGENT_Q}/getByReference"),
            r#"{"slug":"deployer"}"#,
        )
        .await;
        let context = context_of(server, &execution).await.expect("context");
        Self {
            env,
            agent,
            execution,
            context,
        }
    }

    fn all(&self) -> [&Value; 4] {
        [&self.env, &self.agent, &self.execution, &self.context]
    }

    fn ids(&self) -> HashSet<String> {
        self.all().iter().map(|r| id_of(r)).collect()
    }
}

fn id_of(resource: &Value) -> String {
    resource["metadata"]["id"]
        .as_str()
        .expect("metadata.id")
        .to_string()
}

/// Every unary read of the kinds that hold secrets, served from the read cache and decoded
/// from `data`: the response's bytes hold no secret, plain or sealed, and the secret reads
/// redacted. The ExecutionContext of a running execution alone holds them in plain text,
/// which also shows that the byte scan finds a secret where there is one.
///
/// Fails when a list stops redacting the rows it decodes (`self.secrets.redact(&mut
/// resource)` removed from `Controller::with_items`): ".../EnvironmentQueryController/list sent a
/// sealed value"; when `Controller::handle` stops redacting: ".../EnvironmentQueryController/get sent
/// a sealed value".
#[tokio::test]
async fn unary_reads_send_secrets_only_through_the_execution_context() {
    let server = TestServer::start().await;
    let (env, execution) = running_execution(&server).await;
    let holders = Holders::read(&server, env, execution).await;
    let session = holders.execution["spec"]["sessionId"]
        .as_str()
        .expect("session");
    let reads = [
        (
            "get",
            ENV_Q,
            format!(r#"{{"value":"{}"}}"#, id_of(&holders.env)),
        ),
        ("getByReference", ENV_Q, r#"{"slug":"prod"}"#.into()),
        ("list", ENV_Q, "{}".into()),
        (
            "get",
            AGENT_Q,
            format!(r#"{{"value":"{}"}}"#, id_of(&holders.agent)),
        ),
        ("getByReference", AGENT_Q, r#"{"slug":"deployer"}"#.into()),
        ("list", AGENT_Q, "{}".into()),
        (
            "get",
            EXECUTION_Q,
            format!(r#"{{"value":"{}"}}"#, id_of(&holders.execution)),
        ),
        ("list", EXECUTION_Q, "{}".into()),
        (
            "listBySession",
            EXECUTION_Q,
            format!(r#"{{"sessionId":"{session}"}}"#),
        ),
    ];
    let read_all = || async {
        for (verb, service, body) in &reads {
            let read = call(&server, &format!("{service}/{verb}"), body).await;
            assert_eq!(redactions(&read), 1, "{service}/{verb}: {read}");
        }
    };
    read_all().await;

    // The same reads decoded from `data`: the cached encodings dropped, and the writer held off
    // by another connection's write lock so that the background refill cannot put them back.
    let ids = holders.ids();
    for id in &ids {
        server.drop_cached_encoding(id);
    }
    let mut outsider = rusqlite::Connection::open(&server.db).expect("open");
    let lock = outsider
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .expect("write lock");
    read_all().await;
    for id in &ids {
        assert_eq!(server.cached_encoding(id), None, "{id} was read decoded");
    }
    drop(lock);

    let context_id = id_of(&holders.context);
    for (verb, body) in [
        ("get", format!(r#"{{"value":"{context_id}"}}"#)),
        (
            "getByReference",
            format!(r#"{{"slug":"{}"}}"#, id_of(&holders.execution)),
        ),
    ] {
        let bytes = raw_call(&server, &format!("{CONTEXT_Q}/{verb}"), &body)
            .await
            .expect("the context of a running execution");
        for secret in PLAINTEXTS {
            assert!(contains(&bytes, secret), "{verb} opens {secret:?}");
        }
        assert!(!contains(&bytes, SEALED), "{verb} opens every secret");
    }
}

/// The replies of create (in `running_execution`), update, apply, updateStatus and delete of
/// each kind that holds a secret: no secret in their bytes, and the secret reads redacted,
/// even when the request itself carried it in plain text.
///
/// Fails when `Controller::handle` stops redacting: ".../AgentExecutionCommandController/updateStatus
/// sent a sealed value"; when the cached encoding is no longer redacted
/// (`SecretMap::public_encoding`): ".../EnvironmentCommandController/create sent a sealed
/// value".
#[tokio::test]
async fn write_replies_never_send_a_secret() {
    let server = TestServer::start().await;
    let (env, execution) = running_execution(&server).await;
    let holders = Holders::read(&server, env, execution).await;
    let mut writes = Vec::new();
    for (service, resource, applied) in [
        (ENV, &holders.env, environment_json()),
        (AGENT, &holders.agent, agent_json()),
    ] {
        let mut edited = resource.clone();
        edited["spec"]["description"] = "Edited.".into();
        writes.push((format!("{service}/update"), edited.to_string()));
        writes.push((format!("{service}/apply"), applied));
    }
    let mut execution = holders.execution.clone();
    execution["spec"]["message"] = "ship it, carefully".into();
    writes.push((format!("{EXECUTION}/update"), execution.to_string()));
    let execution_id = id_of(&holders.execution);
    writes.push((
        format!("{EXECUTION}/updateStatus"),
        format!(
            r#"{{"executionId":"{execution_id}","status":{{"phase":"EXECUTION_IN_PROGRESS"}}}}"#
        ),
    ));
    writes.push((
        format!("{EXECUTION}/delete"),
        format!(r#"{{"value":"{execution_id}"}}"#),
    ));
    // The agent goes once the instance that refers to it is gone.
    let instance = call(
        &server,
        &format!("{INSTANCE_Q}/getByReference"),
        r#"{"slug":"deployer-prod"}"#,
    )
    .await;
    let unrelated = call(
        &server,
        &format!("{INSTANCE_C}/delete"),
        &format!(r#"{{"value":"{}"}}"#, id_of(&instance)),
    )
    .await;
    assert_eq!(redactions(&unrelated), 0, "holds no secret: {unrelated}");
    writes.push((
        format!("{AGENT}/delete"),
        format!(r#"{{"value":"{}"}}"#, id_of(&holders.agent)),
    ));
    writes.push((
        format!("{ENV}/delete"),
        format!(r#"{{"resourceId":"{}"}}"#, id_of(&holders.env)),
    ));
    for (path, body) in writes {
        let reply = call(&server, &path, &body).await;
        assert!(redactions(&reply) >= 1, "{path}: {reply}");
    }
}

/// A watch event's bytes hold no secret, plain or sealed; its resource, unpacked from the
/// Any, is returned for the checks only a decoded one allows.
fn unpacked(what: &str, bytes: &[u8]) -> (WatchEvent, Value) {
    assert_nothing_secret(what, bytes);
    let event = WatchEvent::decode(bytes).expect("a WatchEvent");
    let any = event.resource.as_ref().expect("a resource");
    let name = any
        .type_url
        .strip_prefix("type.googleapis.com/")
        .expect("a type URL");
    let descriptor = stigmer_api::DESCRIPTOR_POOL
        .get_message_by_name(name)
        .expect("a known type");
    let resource = DynamicMessage::decode(descriptor, any.value.as_slice()).expect("the resource");
    (event, to_json(&resource))
}

/// Checks every event and that each holder of a secret came, with the secret redacted.
fn check_events(what: &str, events: &[Vec<u8>], holders: &HashSet<String>) {
    let mut seen = HashSet::new();
    for bytes in events {
        let (event, resource) = unpacked(what, bytes);
        if holders.contains(&event.id) {
            assert_eq!(redactions(&resource), 1, "{what}: {event:?} {resource}");
            seen.insert(event.id);
        }
    }
    assert_eq!(&seen, holders, "{what}: every holder of a secret came");
}

async fn watch_from(server: &TestServer, since_revision: i64) -> Streaming<Vec<u8>> {
    raw_stream(
        server,
        &format!("{FEED}/watch"),
        &format!(r#"{{"sinceRevision":"{since_revision}"}}"#),
    )
    .await
}

/// Events until one for which `last` holds, that one included.
async fn events_until(
    stream: &mut Streaming<Vec<u8>>,
    last: impl Fn(&WatchEvent) -> bool,
) -> Vec<Vec<u8>> {
    let mut events = Vec::new();
    loop {
        let bytes = next_raw(stream).await.expect("the watch goes on");
        let event = WatchEvent::decode(bytes.as_slice()).expect("a WatchEvent");
        events.push(bytes);
        if last(&event) {
            return events;
        }
    }
}

async fn server_info(server: &TestServer) -> Value {
    call(server, &format!("{FEED}/info"), "{}").await
}

fn revision_of(json: &Value) -> i64 {
    let revision = &json["metadata"]["revision"];
    revision
        .as_str()
        .and_then(|r| r.parse().ok())
        .or_else(|| revision.as_i64())
        .expect("a revision")
}

/// ResourceService/watch from a snapshot (since_revision 0), replaying the log (since an
/// earlier revision) and live: no event's bytes hold a secret, plain or sealed, and every
/// resource that holds one shows it redacted in the event's Any, deletes included.
///
/// Fails when `feed.rs` stops redacting (`self.secrets.redact(&mut resource)` removed from
/// `Controller::any`): "snapshot sent a sealed value".
#[tokio::test]
async fn watch_snapshot_replay_and_live_events_never_send_a_secret() {
    let server = TestServer::start().await;
    let warm_up = call(
        &server,
        &format!("{ENV}/create"),
        r#"{"metadata":{"name":"warm up"},"spec":{}}"#,
    )
    .await;
    let (env, execution) = running_execution(&server).await;
    let holders = Holders::read(&server, env, execution).await;
    let info = server_info(&server).await;
    let rows: i64 = info["counts"]
        .as_object()
        .expect("counts")
        .values()
        .map(|n| {
            n.as_str()
                .and_then(|n| n.parse::<i64>().ok())
                .expect("count")
        })
        .sum();

    let mut snapshot = watch_from(&server, 0).await;
    let mut events = Vec::new();
    for _ in 0..rows {
        events.push(next_raw(&mut snapshot).await.expect("a snapshot event"));
    }
    check_events("snapshot", &events, &holders.ids());

    let current: i64 = info["revision"]
        .as_str()
        .expect("revision")
        .parse()
        .expect("revision");
    let mut replay = watch_from(&server, revision_of(&warm_up)).await;
    let events = events_until(&mut replay, |event| event.revision == current).await;
    check_events("replay", &events, &holders.ids());

    let live = live_events(&server, &holders, current).await;
    let mut ids = holders.ids();
    ids.remove(&id_of(&holders.context));
    ids.remove(&id_of(&holders.env));
    check_events("live", &live.1, &ids.into_iter().chain([live.0]).collect());
}

/// Changes to resources holding secrets, made once the watch from `current` is live: its
/// first event (a new Environment's) shows it has replayed the log, so every later change
/// reaches it from the live feed. Returns that Environment's id and the later events, up to
/// its delete.
async fn live_events(
    server: &TestServer,
    holders: &Holders,
    current: i64,
) -> (String, Vec<Vec<u8>>) {
    let mut live = watch_from(server, current).await;
    let staging = call(
        server,
        &format!("{ENV}/create"),
        &environment_json().replace(r#""prod""#, r#""staging""#),
    )
    .await;
    let staging_id = id_of(&staging);
    let first = next_raw(&mut live).await.expect("the create");
    assert_eq!(unpacked("live create", &first).0.id, staging_id);

    let mut agent = holders.agent.clone();
    agent["spec"]["description"] = "Live.".into();
    call(server, &format!("{AGENT}/update"), &agent.to_string()).await;
    move_to(server, &holders.execution, "EXECUTION_IN_PROGRESS").await;
    call(
        server,
        &format!("{ENV}/delete"),
        &format!(r#"{{"resourceId":"{staging_id}"}}"#),
    )
    .await;
    let events = events_until(&mut live, |event| event.id == staging_id).await;
    (staging_id, events)
}

/// ResourceService/getAtRevision of each holder of a secret, at the revision a read returned
/// and, for the Environment, at one an update has since left behind.
///
/// Fails when `feed.rs` stops redacting (`Controller::any`): "{"kind":"Environment",...} sent a
/// sealed value".
#[tokio::test]
async fn get_at_revision_never_sends_a_secret() {
    let server = TestServer::start().await;
    let (env, execution) = running_execution(&server).await;
    let holders = Holders::read(&server, env, execution).await;
    let mut edited = holders.env.clone();
    edited["spec"]["description"] = "Edited.".into();
    let current = call(&server, &format!("{ENV}/update"), &edited.to_string()).await;
    let mut versions: Vec<(&str, &Value)> = vec![("Environment", &current)];
    versions.extend(
        ["Environment", "Agent", "AgentExecution", "ExecutionContext"]
            .into_iter()
            .zip(holders.all()),
    );
    for (kind, resource) in versions {
        let body = format!(
            r#"{{"kind":"{kind}","id":"{}","revision":"{}"}}"#,
            id_of(resource),
            revision_of(resource)
        );
        let bytes = raw_call(&server, &format!("{FEED}/getAtRevision"), &body)
            .await
            .unwrap_or_else(|s| panic!("{body}: {s:?}"));
        let (_, at_revision) = unpacked(&body, &bytes);
        assert_eq!(redactions(&at_revision), 1, "{body}: {at_revision}");
    }
}

/// ResourceService/export: every secret stays sealed, none in plain text, so that a backup
/// restores them without ever having held them.
#[tokio::test]
async fn export_sends_secrets_sealed_never_in_plain_text() {
    let server = TestServer::start().await;
    let (env, execution) = running_execution(&server).await;
    let holders = Holders::read(&server, env, execution).await;
    let mut export = raw_stream(&server, &format!("{FEED}/export"), "{}").await;
    let mut sealed = HashSet::new();
    while let Some(bytes) = next_raw(&mut export).await {
        assert_no_plaintext("export", &bytes);
        let item = ExportedResource::decode(bytes.as_slice()).expect("an ExportedResource");
        assert!(
            !item.json.contains(REDACTED),
            "exported as stored: {}",
            item.json
        );
        if item.json.contains(SEALED) {
            sealed.insert(item.id);
        }
    }
    assert_eq!(
        sealed,
        holders.ids(),
        "each holder exported its secret sealed"
    );
}

/// AgentExecution/subscribe: the execution as it is, then each change until it ends, none
/// with its runtime secret in its bytes.
///
/// Fails when `executions.rs` stops redacting (`forward_until_final`): "subscribe sent a
/// sealed value".
#[tokio::test]
async fn subscribe_never_sends_a_secret() {
    let server = TestServer::start().await;
    let (_, execution) = running_execution(&server).await;
    let path = format!("{EXECUTION_Q}/subscribe");
    let mut updates = raw_stream(
        &server,
        &path,
        &format!(r#"{{"value":"{}"}}"#, id_of(&execution)),
    )
    .await;
    let mut items = vec![
        next_raw(&mut updates)
            .await
            .expect("the execution as it is"),
    ];
    move_to(&server, &execution, "EXECUTION_IN_PROGRESS").await;
    move_to(&server, &execution, "EXECUTION_COMPLETED").await;
    while let Some(bytes) = next_raw(&mut updates).await {
        items.push(bytes);
    }
    assert_eq!(items.len(), 3, "pending, in progress, completed");
    for bytes in items {
        assert_nothing_secret("subscribe", &bytes);
        let item = decode(&path, &bytes);
        assert_eq!(redactions(&item), 1, "{item}");
    }
}

/// The key file is the database's path with `.key` for its extension, as the README says:
/// `data.sqlite3` → `data.key` (not `data.sqlite3.key`).
#[tokio::test]
async fn the_master_key_file_takes_the_database_stem() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("data.sqlite3");
    let server = TestServer::start_at(&db).await;
    call(&server, &format!("{ENV}/create"), &environment_json()).await;
    server.stop().await;
    assert!(dir.path().join("data.key").is_file());
    assert!(!dir.path().join("data.sqlite3.key").exists());
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README");
    assert!(
        readme.contains("`stigmer.db` → `stigmer.key`"),
        "the README says so"
    );
}
