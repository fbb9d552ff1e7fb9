//! The Agent API through the generated tonic clients: server-owned fields, every error code of
//! the contract, concurrency, and that the `data` column is exactly what `get` returns.

mod common;

use std::collections::HashMap;

use common::{TestServer, agent, expect_code, typed_to_json, violated_fields, violations};
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_command_controller_client::AgentCommandControllerClient;
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_query_controller_client::AgentQueryControllerClient;
use stigmer_api::ai::stigmer::agentic::agent::v1::{
    Agent, AgentId, AgentStatus, ListAgentsRequest,
};
use stigmer_api::ai::stigmer::commons::apiresource::{ApiResourceMetadata, ApiResourceReference};
use tonic::transport::Channel;
use tonic::{Code, Request};

fn clients(
    server: &TestServer,
) -> (
    AgentCommandControllerClient<Channel>,
    AgentQueryControllerClient<Channel>,
) {
    (
        AgentCommandControllerClient::new(server.channel.clone()),
        AgentQueryControllerClient::new(server.channel.clone()),
    )
}

fn meta(agent: &Agent) -> &ApiResourceMetadata {
    agent.metadata.as_ref().expect("metadata")
}

fn in_org<T>(message: T, org: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-stigmer-org", org.parse().expect("header value"));
    request
}

#[tokio::test]
async fn create_fills_server_owned_fields_and_get_returns_exactly_the_stored_data() {
    let server = TestServer::start().await;
    let (mut command, mut query) = clients(&server);
    let mut request = agent("My Cool Agent");
    request.metadata.as_mut().expect("metadata").id = "agt-chosen-by-client".into();
    request.status = Some(AgentStatus {
        default_instance_id: "ain-forged".into(),
        ..Default::default()
    });

    let created = command.create(request).await.expect("create").into_inner();
    let m = meta(&created);
    assert!(m.id.starts_with("agt-") && m.id.len() == 30, "id {}", m.id);
    assert_eq!(m.id, m.id.to_lowercase());
    assert_eq!(m.slug, "my-cool-agent");
    assert_eq!(m.org, "local");
    assert_eq!(m.owner_scope, 2, "owner_scope defaults to organization");
    assert!(m.revision > 0);
    assert_eq!(created.api_version, "agentic.stigmer.ai/v1");
    assert_eq!(created.kind, "Agent");
    let status = created.status.as_ref().expect("status");
    assert!(
        status.default_instance_id.starts_with("ain-"),
        "client-sent status is discarded; the server names the default instance: {}",
        status.default_instance_id
    );
    let audit = status
        .audit
        .as_ref()
        .and_then(|a| a.spec_audit.as_ref())
        .expect("spec audit");
    assert_eq!(
        audit.created_by.as_ref().map(|a| a.id.as_str()),
        Some("local")
    );
    assert!(audit.created_at.is_some() && audit.updated_at.is_some());
    assert_eq!(audit.event, "created");

    let fetched = query
        .get(AgentId {
            value: m.id.clone(),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(fetched, created);
    assert_eq!(server.stored_json(&m.id), typed_to_json(&fetched));
    let (kind, org, name): (String, String, String) = server
        .sqlite()
        .query_row(
            "SELECT kind, org_id, json_extract(data, '$.metadata.name') FROM resources WHERE id = ?1",
            [&m.id],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .expect("row");
    assert_eq!(
        (kind.as_str(), org.as_str(), name.as_str()),
        ("Agent", "local", "My Cool Agent")
    );
}

#[tokio::test]
async fn invalid_agent_gets_every_violation_with_its_field_path() {
    let server = TestServer::start().await;
    let (mut command, _) = clients(&server);
    let mut request = agent("");
    request.api_version = "agentic.stigmer.ai/v2".into();
    request.spec.as_mut().expect("spec").instructions = "short".into();

    let status = expect_code(command.create(request).await, Code::InvalidArgument);
    let fields = violated_fields(&status);
    for field in ["metadata.name", "spec.instructions", "apiVersion"] {
        assert!(
            fields.iter().any(|f| f == field),
            "{field} not in {fields:?}"
        );
    }
    assert!(
        status.message().contains("spec.instructions"),
        "{}",
        status.message()
    );
    let count: i64 = server
        .sqlite()
        .query_row("SELECT count(*) FROM resources", [], |row| row.get(0))
        .expect("count");
    assert_eq!(count, 0, "nothing stored");
}

#[tokio::test]
async fn a_bad_slug_or_a_nameless_slug_is_refused() {
    let server = TestServer::start().await;
    let (mut command, _) = clients(&server);
    let mut request = agent("whatever");
    request.metadata.as_mut().expect("metadata").slug = "Not A Slug".into();
    let status = expect_code(command.create(request).await, Code::InvalidArgument);
    assert_eq!(violated_fields(&status), vec!["metadata.slug".to_string()]);

    let status = expect_code(command.create(agent("!!!")).await, Code::InvalidArgument);
    assert_eq!(violated_fields(&status), vec!["metadata.name".to_string()]);

    let status = expect_code(
        command.create(agent(&"x".repeat(64))).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), vec!["metadata.name".to_string()]);
}

#[tokio::test]
async fn duplicate_slug_in_one_org_is_already_exists_but_another_org_is_free() {
    let server = TestServer::start().await;
    let (mut command, mut query) = clients(&server);
    command.create(agent("Reviewer")).await.expect("first");
    let status = expect_code(command.create(agent("reviewer")).await, Code::AlreadyExists);
    assert!(
        status.message().contains("reviewer"),
        "{}",
        status.message()
    );

    let other = command
        .create(in_org(agent("Reviewer"), "team-a"))
        .await
        .expect("same slug in another org")
        .into_inner();
    assert_eq!(meta(&other).org, "team-a");
    // The other org's resource is invisible from the local org.
    expect_code(
        query
            .get(AgentId {
                value: meta(&other).id.clone(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
    let found = query
        .get(in_org(
            AgentId {
                value: meta(&other).id.clone(),
                ..Default::default()
            },
            "team-a",
        ))
        .await
        .expect("visible in its org");
    assert_eq!(found.into_inner(), other);
    expect_code(
        command.create(in_org(agent("x"), "Bad Org")).await,
        Code::InvalidArgument,
    );
}

#[tokio::test]
async fn missing_ids_and_references_are_not_found() {
    let server = TestServer::start().await;
    let (mut command, mut query) = clients(&server);
    let missing = "agt-01jz0000000000000000000000";
    let status = expect_code(
        query
            .get(AgentId {
                value: missing.into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
    assert!(status.message().contains(missing) && status.message().contains("Agent"));
    expect_code(
        query
            .get_by_reference(ApiResourceReference {
                slug: "nobody".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
    let mut update = agent("ghost");
    update.metadata.as_mut().expect("metadata").id = missing.into();
    expect_code(command.update(update).await, Code::NotFound);
    expect_code(
        command
            .delete(AgentId {
                value: missing.into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
    let status = expect_code(
        command.delete(AgentId::default()).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), vec!["value".to_string()]);
    // A reference to another kind is a client mistake, not a miss.
    expect_code(
        query
            .get_by_reference(ApiResourceReference {
                slug: "x".into(),
                kind: 50,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
}

#[tokio::test]
async fn update_with_a_stale_revision_is_aborted_and_changes_nothing() {
    let server = TestServer::start().await;
    let (mut command, mut query) = clients(&server);
    let created = command
        .create(agent("Stale"))
        .await
        .expect("create")
        .into_inner();
    let mut first = created.clone();
    first.spec.as_mut().expect("spec").description = "first".into();
    let updated = command.update(first).await.expect("update").into_inner();
    assert!(meta(&updated).revision > meta(&created).revision);

    let mut stale = created.clone();
    stale.spec.as_mut().expect("spec").description = "second".into();
    let status = expect_code(command.update(stale).await, Code::Aborted);
    assert!(
        status
            .message()
            .contains(&meta(&updated).revision.to_string()),
        "says the current revision: {}",
        status.message()
    );
    let now = query
        .get(AgentId {
            value: meta(&created).id.clone(),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(now, updated);

    expect_code(
        command
            .delete(AgentId {
                value: meta(&created).id.clone(),
                expected_revision: meta(&created).revision,
            })
            .await,
        Code::Aborted,
    );
    let deleted = command
        .delete(AgentId {
            value: meta(&created).id.clone(),
            expected_revision: meta(&updated).revision,
        })
        .await
        .expect("delete at the current revision")
        .into_inner();
    assert_eq!(deleted, updated);
}

#[tokio::test]
async fn update_keeps_status_created_audit_and_slug_and_skips_no_op_writes() {
    let server = TestServer::start().await;
    let (mut command, _) = clients(&server);
    let created = command
        .create(agent("Keeper"))
        .await
        .expect("create")
        .into_inner();
    let mut request = agent("Keeper renamed");
    request.metadata.as_mut().expect("metadata").id = meta(&created).id.clone();
    request.spec.as_mut().expect("spec").description = "now described".into();
    request.status = Some(AgentStatus {
        default_instance_id: "ain-forged".into(),
        ..Default::default()
    });
    let updated = command
        .update(request.clone())
        .await
        .expect("update")
        .into_inner();
    assert_eq!(
        meta(&updated).slug,
        "keeper",
        "the slug does not follow a rename"
    );
    assert_eq!(meta(&updated).name, "Keeper renamed");
    let created_audit = created
        .status
        .as_ref()
        .and_then(|s| s.audit.clone())
        .expect("audit");
    let updated_audit = updated
        .status
        .as_ref()
        .and_then(|s| s.audit.clone())
        .expect("audit");
    let (before, after) = (
        created_audit.spec_audit.expect("spec audit"),
        updated_audit.spec_audit.expect("spec audit"),
    );
    assert_eq!(before.created_at, after.created_at);
    assert_eq!(after.event, "updated");
    assert_eq!(
        created_audit.status_audit, updated_audit.status_audit,
        "status untouched"
    );
    assert_eq!(
        updated.status.as_ref().map(|s| &s.default_instance_id),
        created.status.as_ref().map(|s| &s.default_instance_id),
        "the stored status survives an update that sends another"
    );

    let again = command
        .update(request)
        .await
        .expect("same update")
        .into_inner();
    assert_eq!(
        meta(&again).revision,
        meta(&updated).revision,
        "no-op writes nothing"
    );
}

#[tokio::test]
async fn apply_creates_then_updates_the_same_resource_by_slug() {
    let server = TestServer::start().await;
    let (mut command, _) = clients(&server);
    let first = command
        .apply(agent("Applied"))
        .await
        .expect("apply creates")
        .into_inner();
    let mut changed = agent("Applied");
    changed.spec.as_mut().expect("spec").description = "v2".into();
    let second = command
        .apply(changed.clone())
        .await
        .expect("apply updates")
        .into_inner();
    assert_eq!(meta(&second).id, meta(&first).id);
    assert!(meta(&second).revision > meta(&first).revision);
    assert_eq!(
        second.spec.as_ref().map(|s| s.description.as_str()),
        Some("v2")
    );
    let third = command
        .apply(changed)
        .await
        .expect("apply unchanged")
        .into_inner();
    assert_eq!(meta(&third).revision, meta(&second).revision);

    let mut wrong_id = agent("Applied");
    wrong_id.metadata.as_mut().expect("metadata").id = "agt-01jz0000000000000000000000".into();
    let status = expect_code(command.apply(wrong_id).await, Code::InvalidArgument);
    assert_eq!(violated_fields(&status), vec!["metadata.id".to_string()]);
}

#[tokio::test]
async fn concurrent_creates_of_one_slug_let_exactly_one_win() {
    let server = TestServer::start().await;
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let mut command = AgentCommandControllerClient::new(server.channel.clone());
            tokio::spawn(async move {
                command
                    .create(agent("Contended"))
                    .await
                    .map(|r| r.into_inner())
            })
        })
        .collect();
    let mut codes: HashMap<Code, usize> = HashMap::new();
    for task in tasks {
        let code = match task.await.expect("task") {
            Ok(_) => Code::Ok,
            Err(status) => status.code(),
        };
        *codes.entry(code).or_default() += 1;
    }
    assert_eq!(codes.get(&Code::Ok), Some(&1), "{codes:?}");
    assert_eq!(codes.get(&Code::AlreadyExists), Some(&31), "{codes:?}");
}

#[tokio::test]
async fn concurrent_read_modify_write_with_revisions_loses_no_increment() {
    let server = TestServer::start().await;
    let (mut command, _) = clients(&server);
    let mut counter = agent("Counter");
    counter.spec.as_mut().expect("spec").description = "0".into();
    let id = meta(&command.create(counter).await.expect("create").into_inner())
        .id
        .clone();
    let (writers, increments) = (8, 10);
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (mut command, mut query) = clients(&server);
            let id = id.clone();
            tokio::spawn(async move {
                let mut aborted = 0;
                for _ in 0..increments {
                    loop {
                        let mut current = query
                            .get(AgentId {
                                value: id.clone(),
                                ..Default::default()
                            })
                            .await
                            .expect("get")
                            .into_inner();
                        let spec = current.spec.as_mut().expect("spec");
                        let value: u32 = spec.description.parse().expect("number");
                        spec.description = (value + 1).to_string();
                        match command.update(current).await {
                            Ok(_) => break,
                            Err(status) if status.code() == Code::Aborted => aborted += 1,
                            Err(status) => panic!("unexpected {status:?}"),
                        }
                    }
                }
                aborted
            })
        })
        .collect();
    let mut aborted = 0;
    for task in tasks {
        aborted += task.await.expect("task");
    }
    let (_, mut query) = clients(&server);
    let last = query
        .get(AgentId {
            value: id,
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        last.spec.expect("spec").description,
        (writers * increments).to_string()
    );
    println!("{aborted} stale writes were told to retry");
}

#[tokio::test]
async fn list_pages_through_the_orgs_agents_in_creation_order() {
    let server = TestServer::start().await;
    let (mut command, mut query) = clients(&server);
    let mut ids = Vec::new();
    for n in 0..25 {
        let created = command
            .create(agent(&format!("agent {n}")))
            .await
            .expect("create");
        ids.push(meta(&created.into_inner()).id.clone());
    }
    command
        .create(in_org(agent("elsewhere"), "team-b"))
        .await
        .expect("other org");

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = query
            .list(ListAgentsRequest {
                page_size: 10,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        assert!(page.items.len() <= 10);
        assert_eq!(page.kind, "AgentList");
        seen.extend(page.items.iter().map(|a| meta(a).id.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ids);

    let all = query
        .list(ListAgentsRequest::default())
        .await
        .expect("default page")
        .into_inner();
    assert_eq!(all.items.len(), 25);
    assert!(all.next_page_token.is_empty());

    let status = expect_code(
        query
            .list(ListAgentsRequest {
                page_size: 1001,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), vec!["pageSize".to_string()]);
    let status = expect_code(
        query
            .list(ListAgentsRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), vec!["pageToken".to_string()]);
}

#[tokio::test]
async fn a_message_over_ten_mib_is_resource_exhausted() {
    let server = TestServer::start().await;
    let (mut command, _) = clients(&server);
    let mut huge = agent("Huge");
    huge.spec.as_mut().expect("spec").instructions = "x".repeat(11 * 1024 * 1024);
    expect_code(command.create(huge).await, Code::ResourceExhausted);
    // Just under the limit is fine, both ways.
    let mut command = command.max_decoding_message_size(16 * 1024 * 1024);
    let mut large = agent("Large");
    large.spec.as_mut().expect("spec").instructions = "x".repeat(9 * 1024 * 1024);
    let created = command
        .create(large)
        .await
        .expect("9 MiB agent")
        .into_inner();
    assert_eq!(
        created.spec.expect("spec").instructions.len(),
        9 * 1024 * 1024
    );
}

/// Violations name fields as users write them in JSON and YAML (lowerCamel), in the details
/// and the message alike, whichever rule was broken: a buf.validate rule, a contract rule, a
/// reference, a list request's own field, a map entry (whose key stays as given).
#[tokio::test]
async fn violations_name_fields_in_their_json_names() {
    let server = TestServer::start().await;
    const AGENT: &str = "/ai.stigmer.agentic.agent.v1.AgentCommandController/create";
    let status = expect_code(
        server
            .call_json(
                AGENT,
                r#"{"apiVersion":"v2","metadata":{"name":"a"},
                    "spec":{"instructions":"Review everything carefully.",
                            "skillRefs":[{"kind":"skill","slug":"missing"}]}}"#,
            )
            .await,
        Code::InvalidArgument,
    );
    let fields = violated_fields(&status);
    assert_eq!(fields, ["spec.skillRefs[0]", "apiVersion"], "{status:?}");
    assert!(
        status
            .message()
            .contains("spec.skillRefs[0]: Skill \"missing\" does not exist"),
        "{}",
        status.message()
    );
    assert!(!status.message().contains('_'), "{}", status.message());

    let status = expect_code(
        server
            .call_json(
                "/ai.stigmer.agentic.agentexecution.v1.AgentExecutionCommandController/create",
                r#"{"spec":{"message":"hello"}}"#,
            )
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violations(&status),
        [(
            "spec.sessionId".to_string(),
            "set sessionId to continue a session, or agentId to start a new one".to_string()
        )]
    );

    let status = expect_code(
        server
            .call_json(
                "/ai.stigmer.agentic.mcpserver.v1.McpServerCommandController/create",
                r#"{"metadata":{"name":"m"},"spec":{"description":"no way to run it"}}"#,
            )
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violations(&status),
        [(
            "spec".to_string(),
            "set one of spec.stdio, spec.http, spec.docker".to_string()
        )]
    );

    let status = expect_code(
        server
            .call_json(
                "/ai.stigmer.agentic.mcpserver.v1.McpServerCommandController/create",
                r#"{"metadata":{"name":"m"},"spec":{"http":{"url":"https://x.test",
                    "timeoutSeconds":301}}}"#,
            )
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["spec.http.timeoutSeconds"]);

    let status = expect_code(
        server
            .call_json(
                "/ai.stigmer.agentic.agent.v1.AgentQueryController/list",
                r#"{"pageSize":1001}"#,
            )
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), ["pageSize"]);

    let status = expect_code(
        server
            .call_json(
                "/ai.stigmer.agentic.environment.v1.EnvironmentCommandController/create",
                r#"{"metadata":{"name":"e"},"spec":{"data":{"my_key":{"value":"[redacted: secret]","isSecret":true}}}}"#,
            )
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), [r#"spec.data["my_key"].value"#]);
}
