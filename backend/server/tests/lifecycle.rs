//! Execution lifecycle over gRPC: default instances, sessions made on demand, phases that only
//! move forward, concurrent status updates, subscribe from several clients, lists by parent.

mod common;

use std::time::Duration;

use common::{TestServer, agent, expect_code, violated_fields};
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_command_controller_client::AgentCommandControllerClient;
use stigmer_api::ai::stigmer::agentic::agent::v1::{Agent, AgentId};
use stigmer_api::ai::stigmer::agentic::agentexecution::v1::agent_execution_command_controller_client::AgentExecutionCommandControllerClient;
use stigmer_api::ai::stigmer::agentic::agentexecution::v1::agent_execution_query_controller_client::AgentExecutionQueryControllerClient;
use stigmer_api::ai::stigmer::agentic::agentexecution::v1::{
    AgentExecution, AgentExecutionId, AgentExecutionSpec, AgentExecutionStatus,
    AgentExecutionUpdateStatusInput, AgentMessage, ExecutionPhase,
    ListAgentExecutionsBySessionRequest,
};
use stigmer_api::ai::stigmer::agentic::agentinstance::v1::agent_instance_command_controller_client::AgentInstanceCommandControllerClient;
use stigmer_api::ai::stigmer::agentic::agentinstance::v1::agent_instance_query_controller_client::AgentInstanceQueryControllerClient;
use stigmer_api::ai::stigmer::agentic::agentinstance::v1::{AgentInstance, AgentInstanceSpec};
use stigmer_api::ai::stigmer::commons::apiresource::ApiResourceMetadata;
use stigmer_api::ai::stigmer::agentic::agentinstance::v1::{AgentInstanceId, GetAgentInstancesByAgentRequest};
use stigmer_api::ai::stigmer::agentic::session::v1::session_query_controller_client::SessionQueryControllerClient;
use stigmer_api::ai::stigmer::agentic::session::v1::{ListSessionsByAgentRequest, SessionId};
use stigmer_api::ai::stigmer::backend::v1::resource_service_client::ResourceServiceClient;
use stigmer_api::ai::stigmer::backend::v1::{InfoRequest, ServerInfo};
use tonic::Code;
use tonic::transport::Channel;

const DEADLINE: Duration = Duration::from_secs(30);

type Executions = AgentExecutionCommandControllerClient<Channel>;

fn id(agent: &Agent) -> String {
    agent.metadata.as_ref().expect("metadata").id.clone()
}

fn exec_id(execution: &AgentExecution) -> String {
    execution.metadata.as_ref().expect("metadata").id.clone()
}

fn phase(execution: &AgentExecution) -> ExecutionPhase {
    execution.status.as_ref().expect("status").phase()
}

fn run(agent_id: &str, message: &str) -> AgentExecution {
    AgentExecution {
        spec: Some(AgentExecutionSpec {
            agent_id: agent_id.into(),
            message: message.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn to_phase(execution_id: &str, phase: ExecutionPhase) -> AgentExecutionUpdateStatusInput {
    AgentExecutionUpdateStatusInput {
        execution_id: execution_id.into(),
        status: Some(AgentExecutionStatus {
            phase: phase as i32,
            ..Default::default()
        }),
    }
}

/// A (non-default) AgentInstance of `agent_id` named `name`.
fn instance_of(agent_id: String, name: &str) -> AgentInstance {
    AgentInstance {
        metadata: Some(ApiResourceMetadata {
            name: name.into(),
            ..Default::default()
        }),
        spec: Some(AgentInstanceSpec {
            agent_id,
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn started(server: &TestServer) -> (Agent, AgentExecution) {
    let mut agents = AgentCommandControllerClient::new(server.channel.clone());
    let created = agents
        .create(agent("Runner"))
        .await
        .expect("agent")
        .into_inner();
    let mut executions = Executions::new(server.channel.clone());
    let execution = executions
        .create(run(&id(&created), "Summarise the open incidents."))
        .await
        .expect("execution")
        .into_inner();
    (created, execution)
}

#[tokio::test]
async fn an_agent_brings_its_default_instance_and_takes_it_away() {
    let server = TestServer::start().await;
    let mut agents = AgentCommandControllerClient::new(server.channel.clone());
    let created = agents
        .create(agent("Parent"))
        .await
        .expect("agent")
        .into_inner();
    let instance_id = created
        .status
        .as_ref()
        .expect("status")
        .default_instance_id
        .clone();
    let mut instances = AgentInstanceQueryControllerClient::new(server.channel.clone());
    let instance = instances
        .get(AgentInstanceId {
            value: instance_id.clone(),
            ..Default::default()
        })
        .await
        .expect("default instance")
        .into_inner();
    assert_eq!(instance.spec.as_ref().expect("spec").agent_id, id(&created));
    assert_eq!(
        instance.metadata.as_ref().expect("metadata").slug,
        "parent-default"
    );
    let listed = instances
        .get_by_agent(GetAgentInstancesByAgentRequest {
            agent_id: id(&created),
            ..Default::default()
        })
        .await
        .expect("getByAgent")
        .into_inner();
    assert_eq!(listed.items, vec![instance]);

    let mut instance_commands = AgentInstanceCommandControllerClient::new(server.channel.clone());
    let status = expect_code(
        instance_commands
            .delete(AgentInstanceId {
                value: instance_id.clone(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        status.message().contains("default instance"),
        "{}",
        status.message()
    );

    agents
        .delete(AgentId {
            value: id(&created),
            ..Default::default()
        })
        .await
        .expect("delete");
    expect_code(
        instances
            .get(AgentInstanceId {
                value: instance_id,
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn references_to_missing_resources_are_refused() {
    let server = TestServer::start().await;
    let mut executions = Executions::new(server.channel.clone());
    let status = expect_code(
        executions
            .create(run("agt-01jz0000000000000000000000", "hello"))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), vec!["spec.agentId".to_string()]);
    assert!(
        status.message().contains("does not exist"),
        "{}",
        status.message()
    );
    let status = expect_code(
        executions
            .create(AgentExecution {
                spec: Some(AgentExecutionSpec {
                    message: "no target".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), vec!["spec.sessionId".to_string()]);
}

/// A slug where an id belongs (`agentId: pr-reviewer`) is told so, with the id to use.
#[tokio::test]
async fn a_slug_given_for_an_id_is_named_with_the_id_it_stands_for() {
    let server = TestServer::start().await;
    let reviewer = AgentCommandControllerClient::new(server.channel.clone())
        .create(agent("PR Reviewer"))
        .await
        .expect("agent")
        .into_inner();
    let mut instances = AgentInstanceCommandControllerClient::new(server.channel.clone());
    let status = expect_code(
        instances
            .create(instance_of("pr-reviewer".into(), "by slug"))
            .await,
        Code::InvalidArgument,
    );
    let message = status.message();
    assert!(
        message.contains("an Agent id (agt-…) is expected") && message.contains(&id(&reviewer)),
        "{message}"
    );
    let status = expect_code(
        instances
            .create(instance_of("no-such-agent".into(), "unknown"))
            .await,
        Code::InvalidArgument,
    );
    assert!(
        status
            .message()
            .contains("no Agent has slug \"no-such-agent\""),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn an_execution_starts_pending_in_a_new_session_and_lists_by_it() {
    let server = TestServer::start().await;
    let (agent, execution) = started(&server).await;
    assert_eq!(phase(&execution), ExecutionPhase::ExecutionPending);
    let session_id = execution.spec.as_ref().expect("spec").session_id.clone();
    assert!(session_id.starts_with("ses-"), "{session_id}");

    let mut sessions = SessionQueryControllerClient::new(server.channel.clone());
    let session = sessions
        .get(SessionId {
            value: session_id.clone(),
            ..Default::default()
        })
        .await
        .expect("the new session")
        .into_inner();
    assert_eq!(
        session.spec.as_ref().expect("spec").agent_instance_id,
        agent.status.as_ref().expect("status").default_instance_id
    );
    let by_agent = sessions
        .list_by_agent(ListSessionsByAgentRequest {
            agent_id: id(&agent),
            ..Default::default()
        })
        .await
        .expect("listByAgent")
        .into_inner();
    assert_eq!(by_agent.entries, vec![session]);

    // A second execution in the same session, then list the session's executions.
    let mut executions = Executions::new(server.channel.clone());
    let second = executions
        .create(AgentExecution {
            spec: Some(AgentExecutionSpec {
                session_id: session_id.clone(),
                message: "And the closed ones?".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("second")
        .into_inner();
    assert_eq!(
        second.spec.as_ref().expect("spec").agent_id,
        id(&agent),
        "derived from the session"
    );
    let mut query = AgentExecutionQueryControllerClient::new(server.channel.clone());
    let listed = query
        .list_by_session(ListAgentExecutionsBySessionRequest {
            session_id,
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("listBySession")
        .into_inner();
    assert_eq!(listed.entries.len(), 1);
    assert_eq!(exec_id(&listed.entries[0]), exec_id(&execution));
    assert!(
        !listed.next_page_token.is_empty(),
        "the page holds one of two"
    );
}

#[tokio::test]
async fn phases_only_move_forward_and_a_final_phase_never_changes() {
    let server = TestServer::start().await;
    let (_, execution) = started(&server).await;
    let id = exec_id(&execution);
    let mut executions = Executions::new(server.channel.clone());

    let status = expect_code(
        executions
            .update_status(to_phase(&id, ExecutionPhase::ExecutionCompleted))
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        status.message().contains("EXECUTION_PENDING")
            && status.message().contains("EXECUTION_COMPLETED"),
        "names both phases: {}",
        status.message()
    );
    let running = executions
        .update_status(to_phase(&id, ExecutionPhase::ExecutionInProgress))
        .await
        .expect("start")
        .into_inner();
    let running_status = running.status.as_ref().expect("status");
    assert_eq!(running_status.phase(), ExecutionPhase::ExecutionInProgress);
    assert!(!running_status.started_at.is_empty(), "started_at is set");

    // A progress report keeps the phase.
    let mut progress = to_phase(&id, ExecutionPhase::Unspecified);
    progress.status.as_mut().expect("status").messages = vec![AgentMessage {
        content: "Looking at the incidents…".into(),
        ..Default::default()
    }];
    let reported = executions
        .update_status(progress)
        .await
        .expect("progress")
        .into_inner();
    assert_eq!(phase(&reported), ExecutionPhase::ExecutionInProgress);
    assert_eq!(reported.status.as_ref().expect("status").messages.len(), 1);
    assert_eq!(
        reported.status.as_ref().expect("status").started_at,
        running_status.started_at
    );

    let done = executions
        .update_status(to_phase(&id, ExecutionPhase::ExecutionCompleted))
        .await
        .expect("complete")
        .into_inner();
    assert!(
        !done
            .status
            .as_ref()
            .expect("status")
            .completed_at
            .is_empty()
    );
    for next in [
        ExecutionPhase::ExecutionInProgress,
        ExecutionPhase::ExecutionCancelled,
        ExecutionPhase::ExecutionCompleted,
    ] {
        let status = expect_code(
            executions.update_status(to_phase(&id, next)).await,
            Code::FailedPrecondition,
        );
        assert!(
            status.message().contains("never changes"),
            "{}",
            status.message()
        );
    }
    expect_code(
        executions
            .update_status(to_phase(
                "aex-01jz0000000000000000000000",
                ExecutionPhase::ExecutionCancelled,
            ))
            .await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn concurrent_status_updates_end_in_exactly_one_final_phase() {
    let server = TestServer::start().await;
    let (_, execution) = started(&server).await;
    let id = exec_id(&execution);
    let mut executions = Executions::new(server.channel.clone());
    executions
        .update_status(to_phase(&id, ExecutionPhase::ExecutionInProgress))
        .await
        .expect("start");
    let finals = [
        ExecutionPhase::ExecutionCompleted,
        ExecutionPhase::ExecutionFailed,
        ExecutionPhase::ExecutionCancelled,
    ];
    let tasks: Vec<_> = (0..24)
        .map(|n| {
            let mut client = Executions::new(server.channel.clone());
            let target = finals[n % finals.len()];
            let id = id.clone();
            tokio::spawn(async move {
                client
                    .update_status(to_phase(&id, target))
                    .await
                    .map(|r| r.into_inner())
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok(execution) => winners.push(phase(&execution)),
            Err(status) => assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one update reaches a final phase: {winners:?}"
    );
    let mut query = AgentExecutionQueryControllerClient::new(server.channel.clone());
    let stored = query
        .get(AgentExecutionId { value: id })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(phase(&stored), winners[0]);
}

#[tokio::test]
async fn subscribers_all_see_the_same_sequence_and_the_stream_ends_when_the_execution_does() {
    let server = TestServer::start().await;
    let (_, execution) = started(&server).await;
    let id = exec_id(&execution);
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let mut query = AgentExecutionQueryControllerClient::new(server.channel.clone());
        subscribers.push(
            query
                .subscribe(AgentExecutionId { value: id.clone() })
                .await
                .expect("subscribe")
                .into_inner(),
        );
    }
    // Each subscriber has seen the current state before the updates start.
    for stream in &mut subscribers {
        let first = tokio::time::timeout(DEADLINE, stream.message())
            .await
            .expect("in time")
            .expect("ok")
            .expect("an item");
        assert_eq!(phase(&first), ExecutionPhase::ExecutionPending);
    }
    let mut executions = Executions::new(server.channel.clone());
    for target in [
        ExecutionPhase::ExecutionInProgress,
        ExecutionPhase::ExecutionInProgress,
        ExecutionPhase::ExecutionFailed,
    ] {
        let mut input = to_phase(&id, target);
        input.status.as_mut().expect("status").error = format!("{target:?}");
        executions.update_status(input).await.expect("update");
    }
    let mut sequences = Vec::new();
    for mut stream in subscribers {
        let mut seen = Vec::new();
        while let Some(item) = tokio::time::timeout(DEADLINE, stream.message())
            .await
            .expect("in time")
            .expect("ok")
        {
            seen.push((
                item.metadata.as_ref().expect("metadata").revision,
                phase(&item),
            ));
        }
        sequences.push(seen);
    }
    assert_eq!(sequences[0].len(), 3, "{:?}", sequences[0]);
    assert_eq!(
        sequences[0].last().map(|s| s.1),
        Some(ExecutionPhase::ExecutionFailed)
    );
    assert!(
        sequences.iter().all(|s| *s == sequences[0]),
        "{sequences:?}"
    );

    // Subscribing to a finished execution returns it once and ends.
    let mut query = AgentExecutionQueryControllerClient::new(server.channel.clone());
    let mut late = query
        .subscribe(AgentExecutionId { value: id })
        .await
        .expect("subscribe")
        .into_inner();
    let only = late.message().await.expect("ok").expect("the execution");
    assert_eq!(phase(&only), ExecutionPhase::ExecutionFailed);
    assert!(
        late.message().await.expect("ok").is_none(),
        "then the stream ends"
    );

    let status = match query
        .subscribe(AgentExecutionId {
            value: "aex-01jz0000000000000000000000".into(),
        })
        .await
    {
        Ok(response) => response
            .into_inner()
            .message()
            .await
            .expect_err("missing execution"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn workflow_tasks_are_checked_beyond_field_rules_with_exact_paths() {
    let server = TestServer::start().await;
    let path = "/ai.stigmer.agentic.workflow.v1.WorkflowCommandController/create";
    let workflow = r#"{"metadata":{"name":"deploy"},"spec":{
        "document":{"dsl":"1.0.0","namespace":"ops","name":"deploy","version":"1"},
        "tasks":[
          {"name":"fetch","kind":"WORKFLOW_TASK_KIND_HTTP_CALL",
           "taskConfig":{"method":"FETCH","endpoint":{"uri":"https://example.test"},"timeoutSeconds":10},
           "flow":{"then":"nowhere"}},
          {"name":"fetch","kind":"WORKFLOW_TASK_KIND_WAIT","taskConfig":{"seconds":5}},
          {"name":"loop","kind":"WORKFLOW_TASK_KIND_FOR","taskConfig":{"each":"x","in":"${.items}",
            "do":[{"name":"inner","kind":"WORKFLOW_TASK_KIND_WAIT","taskConfig":{"secnds":1}}]}}
        ]}}"#;
    let status = expect_code(
        server.call_json(path, workflow).await,
        Code::InvalidArgument,
    );
    let fields = violated_fields(&status);
    for expected in [
        "spec.tasks[0].taskConfig.method",
        "spec.tasks[0].flow.then",
        "spec.tasks[1].name",
        "spec.tasks[2].taskConfig.do[0].taskConfig.secnds",
    ] {
        assert!(
            fields.iter().any(|f| f == expected),
            "{expected} not in {fields:?}"
        );
    }
    let count: i64 = server
        .sqlite()
        .query_row("SELECT count(*) FROM resources", [], |row| row.get(0))
        .expect("count");
    assert_eq!(count, 0, "nothing stored, not even a default instance");
}

#[tokio::test]
async fn what_a_resource_belongs_to_cannot_change_after_creation() {
    let server = TestServer::start().await;
    let (agent, execution) = started(&server).await;
    let mut moved = common::to_json(
        &server
            .call_json(
                "/ai.stigmer.agentic.session.v1.SessionQueryController/get",
                &format!(
                    r#"{{"value":"{}"}}"#,
                    execution.spec.as_ref().expect("spec").session_id
                ),
            )
            .await
            .expect("session"),
    );
    moved["spec"]["agentInstanceId"] = serde_json::Value::String(
        agent
            .status
            .as_ref()
            .expect("status")
            .default_instance_id
            .clone()
            + "x",
    );
    let status = expect_code(
        server
            .call_json(
                "/ai.stigmer.agentic.session.v1.SessionCommandController/update",
                &moved.to_string(),
            )
            .await,
        Code::InvalidArgument,
    );
    assert!(
        violated_fields(&status).contains(&"spec.agentInstanceId".to_string()),
        "{status:?}"
    );
    assert!(
        status.message().contains("cannot change"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn deleting_an_execution_takes_all_its_contexts_beyond_one_page() {
    use stigmer_api::ai::stigmer::agentic::executioncontext::v1::execution_context_command_controller_client::ExecutionContextCommandControllerClient;
    use stigmer_api::ai::stigmer::agentic::executioncontext::v1::{
        ExecutionContext, ExecutionContextSpec,
    };
    use stigmer_api::ai::stigmer::commons::apiresource::ApiResourceId;

    let server = TestServer::start().await;
    let (_, execution) = started(&server).await;
    let execution_id = exec_id(&execution);
    // More contexts than the cascade reads in one page (1,000), written 16 at a time.
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..16 {
        let channel = server.channel.clone();
        let execution_id = execution_id.clone();
        writers.spawn(async move {
            let mut contexts = ExecutionContextCommandControllerClient::new(channel);
            for n in 0..66 {
                contexts
                    .create(ExecutionContext {
                        metadata: Some(ApiResourceMetadata {
                            name: format!("context {writer}-{n}"),
                            ..Default::default()
                        }),
                        spec: Some(ExecutionContextSpec {
                            execution_id: execution_id.clone(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await
                    .expect("create context");
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("writer");
    }
    let contexts_of_execution = || -> i64 {
        server
            .sqlite()
            .query_row(
                "SELECT count(*) FROM resources WHERE kind = 'ExecutionContext' \
                 AND json_extract(data, '$.spec.executionId') = ?1",
                [&execution_id],
                |row| row.get(0),
            )
            .expect("count")
    };
    // The execution's own context, made when it started, plus 16 × 66.
    assert_eq!(contexts_of_execution(), 1 + 16 * 66);

    Executions::new(server.channel.clone())
        .delete(ApiResourceId {
            value: execution_id.clone(),
            ..Default::default()
        })
        .await
        .expect("delete the execution");
    assert_eq!(
        contexts_of_execution(),
        0,
        "every context ends with its execution"
    );
}

#[tokio::test]
async fn upstream_list_totals_count_the_whole_listing() {
    use stigmer_api::ai::stigmer::agentic::agentinstance::v1::ListAgentInstancesRequest;
    use stigmer_api::ai::stigmer::agentic::session::v1::ListSessionsRequest;

    let server = TestServer::start().await;
    let mut agents = AgentCommandControllerClient::new(server.channel.clone());
    let mut agent_ids = Vec::new();
    for n in 0..5 {
        let created = agents
            .create(agent(&format!("Counted {n}")))
            .await
            .expect("agent")
            .into_inner();
        agent_ids.push(id(&created));
    }
    let mut instances = AgentInstanceQueryControllerClient::new(server.channel.clone());
    let mut page = async |page_size: i32, page_token: String, name_prefix: &str| {
        instances
            .list(ListAgentInstancesRequest {
                page_size,
                page_token,
                name_prefix: name_prefix.into(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
    };
    // Every page of an unfiltered listing carries the listing's size (five default instances).
    let first = page(2, String::new(), "").await;
    assert_eq!((first.items.len(), first.total_count), (2, 5));
    let second = page(2, first.next_page_token, "").await;
    assert_eq!((second.items.len(), second.total_count), (2, 5));
    // A filtered listing knows its size only when its first page is its last.
    let whole = page(10, String::new(), "Counted 1").await;
    assert_eq!((whole.items.len(), whole.total_count), (1, 1), "{whole:?}");
    let partial = page(2, String::new(), "Counted").await;
    assert_eq!((partial.items.len(), partial.total_count), (2, 0));

    // Lists with upstream's total_pages count pages at the request's page size.
    let mut executions = Executions::new(server.channel.clone());
    for agent_id in &agent_ids[..3] {
        executions
            .create(run(agent_id, "Count me."))
            .await
            .expect("execution");
    }
    let sessions = SessionQueryControllerClient::new(server.channel.clone())
        .list(ListSessionsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .expect("list sessions")
        .into_inner();
    assert_eq!((sessions.entries.len(), sessions.total_pages), (2, 2));
}

/// The Agent is not stored when its default instance cannot be: both are one transaction.
///
/// Fails when a create commits each of its writes alone (one `transact` per mutation in
/// `Controller::create`): the refused create leaves the Agent behind, which the apply then updates:
/// "expected FailedPrecondition, got success".
#[tokio::test]
async fn a_default_instance_slug_taken_by_another_instance_fails_clearly_on_create_and_apply() {
    let server = TestServer::start().await;
    let mut agents = AgentCommandControllerClient::new(server.channel.clone());
    let other = agents
        .create(agent("Other"))
        .await
        .expect("agent")
        .into_inner();
    // An instance of another agent that happens to hold the slug "clash-default".
    AgentInstanceCommandControllerClient::new(server.channel.clone())
        .create(instance_of(id(&other), "Clash Default"))
        .await
        .expect("instance");

    for (verb, result) in [
        ("create", agents.create(agent("Clash")).await),
        ("apply", agents.apply(agent("Clash")).await),
    ] {
        let status = expect_code(result, Code::FailedPrecondition);
        for needle in ["default instance", "clash-default", "AgentInstance"] {
            assert!(
                status.message().contains(needle),
                "{verb}: {needle:?} missing from {:?}",
                status.message()
            );
        }
    }
    let count: i64 = server
        .sqlite()
        .query_row(
            "SELECT count(*) FROM resources WHERE kind = 'Agent' AND slug = 'clash'",
            [],
            |row| row.get(0),
        )
        .expect("count");
    assert_eq!(count, 0, "the refused agent was not stored");
}

#[tokio::test]
async fn an_execution_cannot_run_on_a_session_whose_instance_is_gone() {
    use stigmer_api::ai::stigmer::agentic::session::v1::session_command_controller_client::SessionCommandControllerClient;
    use stigmer_api::ai::stigmer::agentic::session::v1::{Session, SessionSpec};

    let server = TestServer::start().await;
    let created = AgentCommandControllerClient::new(server.channel.clone())
        .create(agent("Orphaned"))
        .await
        .expect("agent")
        .into_inner();
    let mut instances = AgentInstanceCommandControllerClient::new(server.channel.clone());
    let instance = instances
        .create(instance_of(id(&created), "Short lived"))
        .await
        .expect("instance")
        .into_inner();
    let instance_id = instance.metadata.expect("metadata").id;
    let session = SessionCommandControllerClient::new(server.channel.clone())
        .create(Session {
            metadata: Some(ApiResourceMetadata {
                name: "Left behind".into(),
                ..Default::default()
            }),
            spec: Some(SessionSpec {
                agent_instance_id: instance_id.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("session")
        .into_inner();
    let session_id = session.metadata.expect("metadata").id;
    let on_session = || AgentExecution {
        spec: Some(AgentExecutionSpec {
            session_id: session_id.clone(),
            message: "Still there?".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut executions = Executions::new(server.channel.clone());
    executions
        .create(on_session())
        .await
        .expect("runs while the instance exists");

    instances
        .delete(AgentInstanceId {
            value: instance_id.clone(),
            ..Default::default()
        })
        .await
        .expect("delete the instance");
    let status = expect_code(
        executions.create(on_session()).await,
        Code::FailedPrecondition,
    );
    for needle in [session_id.as_str(), instance_id.as_str(), "new session"] {
        assert!(
            status.message().contains(needle),
            "{needle:?} missing from {:?}",
            status.message()
        );
    }
}

/// What one call committed, from ResourceService/info read around it on a server with no
/// other writer: transactions, the writes they held, revisions taken, and rows per kind.
struct Committed {
    transactions: u64,
    writes: u64,
    revisions: i64,
    before: ServerInfo,
    after: ServerInfo,
}

impl Committed {
    fn rows_added(&self, kind: &str) -> i64 {
        let count = |info: &ServerInfo| info.counts.get(kind).copied().unwrap_or(0);
        count(&self.after) - count(&self.before)
    }
}

async fn info(server: &TestServer) -> ServerInfo {
    ResourceServiceClient::new(server.channel.clone())
        .info(InfoRequest {})
        .await
        .expect("info")
        .into_inner()
}

async fn committed_by<T>(server: &TestServer, call: impl Future<Output = T>) -> (T, Committed) {
    let before = info(server).await;
    let result = call.await;
    let after = info(server).await;
    let committed = Committed {
        transactions: after.transactions_committed - before.transactions_committed,
        writes: after.writes_committed - before.writes_committed,
        revisions: after.revision - before.revision,
        before,
        after,
    };
    (result, committed)
}

/// An Agent and its default instance commit in one transaction, read from the writer's
/// counters: adjacent revisions prove nothing, two commits in a row take them too. That the
/// Agent is not stored when its instance cannot be is
/// `a_default_instance_slug_taken_by_another_instance_fails_clearly_on_create_and_apply`.
///
/// Fails when a create commits each of its writes alone (one `transact` per mutation in
/// `Controller::create`): "one transaction wrote the agent and its default instance:
/// 2 transactions, 2 writes, 2 revisions".
#[tokio::test]
async fn an_agent_and_its_default_instance_commit_in_one_transaction() {
    let server = TestServer::start().await;
    let mut agents = AgentCommandControllerClient::new(server.channel.clone());
    let (created, committed) = committed_by(&server, agents.create(agent("Atomic"))).await;
    created.expect("agent");
    let Committed {
        transactions,
        writes,
        revisions,
        ..
    } = committed;
    assert_eq!(
        (transactions, writes, revisions),
        (1, 1, 2),
        "one transaction wrote the agent and its default instance: {transactions} \
         transactions, {writes} writes, {revisions} revisions"
    );
    assert_eq!(committed.rows_added("Agent"), 1);
    assert_eq!(committed.rows_added("AgentInstance"), 1);
}

/// An execution started on an agent commits with its new Session and its ExecutionContext in
/// one transaction, or not at all: when the execution's own write fails (its name's slug is
/// taken), the session written before it in the transaction is not stored either.
///
/// Fails when a create commits each of its writes alone (one `transact` per mutation in
/// `Controller::create`): "one transaction wrote the session, the execution and its context:
/// 3 transactions, 3 writes, 3 revisions"; and "the refused execution left no session: 1".
#[tokio::test]
async fn an_execution_and_its_new_session_commit_in_one_transaction_or_not_at_all() {
    let server = TestServer::start().await;
    let (agent, _) = started(&server).await;
    let named = |name: &str| {
        let mut execution = run(&id(&agent), "Rotate the keys.");
        execution.metadata = Some(ApiResourceMetadata {
            name: name.into(),
            ..Default::default()
        });
        execution
    };
    let mut executions = Executions::new(server.channel.clone());
    let (created, committed) = committed_by(&server, executions.create(named("Nightly"))).await;
    let created = created.expect("execution").into_inner();
    assert_eq!(created.metadata.as_ref().expect("metadata").slug, "nightly");
    let Committed {
        transactions,
        writes,
        revisions,
        ..
    } = committed;
    assert_eq!(
        (transactions, writes, revisions),
        (1, 1, 3),
        "one transaction wrote the session, the execution and its context: {transactions} \
         transactions, {writes} writes, {revisions} revisions"
    );
    for kind in ["Session", "AgentExecution", "ExecutionContext"] {
        assert_eq!(committed.rows_added(kind), 1, "{kind}");
    }

    let (refused, committed) = committed_by(&server, executions.create(named("Nightly"))).await;
    expect_code(refused, Code::AlreadyExists);
    assert_eq!(
        committed.rows_added("Session"),
        0,
        "the refused execution left no session: {}",
        committed.rows_added("Session")
    );
    assert_eq!(committed.revisions, 0, "nothing was committed");
    let sessions = SessionQueryControllerClient::new(server.channel.clone())
        .list_by_agent(ListSessionsByAgentRequest {
            agent_id: id(&agent),
            ..Default::default()
        })
        .await
        .expect("listByAgent")
        .into_inner();
    assert_eq!(sessions.entries.len(), 2, "the two executions that ran");
}
