//! What the server does beyond the generic verbs: default instances, sessions, executions
//! and the cascades that delete what belongs to a resource with it.

use serde_json::{Value, json};
use tonic::Code;

use crate::OTHER_ORG;
use crate::api::Api;
use crate::checks::{assert_id, assert_not_found};
use crate::common::expect_code;
use crate::json::{default_instance_of, id_of, label_of, revision_of, slug_of, spec_str};
use crate::kind_case::Lifecycle;
use crate::table::case;
use stigmer_core::relations::SESSION_AGENT_LABEL;

/// What the server derives when it creates a resource from the table's spec, checked on
/// `created` (made through create or apply by `api`'s caller).
pub async fn check_lifecycle_created(api: &Api<'_>, created: &Value) {
    let k = api.case.name;
    let org = api.org;
    let fixture = api.fixture;
    let id = id_of(created);
    match api.case.lifecycle {
        Lifecycle::None | Lifecycle::ExecutionContext => {}
        Lifecycle::DefaultInstance {
            instance,
            parent_key,
        } => {
            let instance_case = case(instance);
            let instances = api.of(&instance_case);
            let default_id = default_instance_of(created);
            assert_id(&instance_case, &default_id);
            let default = instances.get(&default_id).await.unwrap_or_else(|s| {
                panic!("{k}: the default {instance} {default_id} of {id} is missing: {s:?}")
            });
            assert_eq!(
                default["spec"][parent_key],
                json!(id),
                "{k}: the default {instance} belongs to its parent"
            );
            let default_slug = format!("{}-default", slug_of(created));
            assert_eq!(
                slug_of(&default),
                default_slug,
                "{k}: default instance slug"
            );
            assert_eq!(
                default["metadata"]["org"],
                json!(org),
                "{k}: default instance org"
            );
            assert_eq!(
                default["metadata"]["ownerScope"], "organization",
                "{k}: default instance owner scope"
            );
            // Written in the parent's transaction, right after it: the parent's revision is
            // the first of the two.
            assert_eq!(
                revision_of(&default),
                revision_of(created) + 1,
                "{k}: the default instance is written right after its parent"
            );
            let found = instances
                .get_by_reference(&json!({ "slug": default_slug }))
                .await
                .unwrap_or_else(|s| panic!("{k}: getByReference of the default instance: {s:?}"));
            assert_eq!(found, default, "{k}: the default instance by its slug");
        }
        Lifecycle::Session => {
            assert_eq!(
                label_of(created, SESSION_AGENT_LABEL),
                json!(fixture.id(org, "agent")),
                "{k}: a session is labelled with the agent of its instance: {created}"
            );
        }
        Lifecycle::AgentExecution => {
            assert_eq!(
                created["status"]["phase"], "EXECUTION_PENDING",
                "{k}: an execution starts pending"
            );
            // The table's spec names only the agent: the server started a new Session on the
            // agent's default instance, in the same transaction.
            let session_id = spec_str(created, "sessionId");
            assert_ne!(
                session_id,
                fixture.id(org, "session"),
                "{k}: a new session, not an existing one"
            );
            let sessions_case = case("Session");
            let session = api
                .of(&sessions_case)
                .get(&session_id)
                .await
                .unwrap_or_else(|s| panic!("{k}: the new session {session_id} is missing: {s:?}"));
            assert_id(&sessions_case, &session_id);
            assert_eq!(
                spec_str(&session, "agentInstanceId"),
                fixture.id(org, "agentInstance"),
                "{k}: the new session runs on the agent's default instance"
            );
            assert_eq!(
                label_of(&session, SESSION_AGENT_LABEL),
                json!(fixture.id(org, "agent")),
                "{k}: the new session is labelled with the agent"
            );
            assert_eq!(session["metadata"]["org"], json!(org), "{k}: session org");
            assert_eq!(
                (revision_of(created) - revision_of(&session)).abs(),
                1,
                "{k}: the session is written in the execution's transaction"
            );
            assert_eq!(
                spec_str(created, "agentId"),
                fixture.id(org, "agent"),
                "{k}: agent_id kept"
            );
        }
        Lifecycle::WorkflowExecution => {
            assert_eq!(
                created["status"]["phase"], "EXECUTION_PENDING",
                "{k}: an execution starts pending"
            );
            assert_eq!(
                spec_str(created, "workflowId"),
                fixture.id(org, "workflow"),
                "{k}: workflow_id filled in from the instance"
            );
            assert_eq!(
                spec_str(created, "workflowInstanceId"),
                fixture.id(org, "workflowInstance"),
                "{k}: workflow_instance_id kept"
            );
        }
    }
}

/// A parent that another (non-default) instance refers to cannot be deleted: FAILED_PRECONDITION
/// naming that instance, and nothing is deleted. The instance is deleted again afterwards.
pub async fn a_parent_in_use_is_not_deleted(api: &Api<'_>, parent: &Value) {
    let Lifecycle::DefaultInstance {
        instance,
        parent_key,
    } = api.case.lifecycle
    else {
        return;
    };
    let k = api.case.name;
    let id = id_of(parent);
    let instance_case = case(instance);
    let instances = api.of(&instance_case);
    let extra = instances
        .create(&json!({ "metadata": { "name": "Extra Instance" }, "spec": { parent_key: id } }))
        .await
        .unwrap_or_else(|s| panic!("{k}: create of another {instance} failed: {s:?}"));
    let extra_id = id_of(&extra);
    let status = expect_code(
        api.delete(&id, revision_of(parent)).await,
        Code::FailedPrecondition,
    );
    assert!(
        status.message().contains(&extra_id),
        "{k}: FAILED_PRECONDITION should name the instance in the way: {:?}",
        status.message()
    );
    assert!(
        api.row_exists(&id),
        "{k}: the refused delete kept the parent"
    );
    assert!(
        api.row_exists(&default_instance_of(parent)),
        "{k}: the refused delete kept the default instance"
    );
    assert_eq!(
        api.get(&id).await.expect("get"),
        *parent,
        "{k}: the refused delete changed nothing"
    );
    instances
        .delete(&extra_id, 0)
        .await
        .unwrap_or_else(|s| panic!("{k}: delete of the other {instance} failed: {s:?}"));
}

/// Resources (kind, id) that must be deleted with a resource, and some that must survive it.
pub struct Cascade {
    gone: Vec<(&'static str, String)>,
    kept: Vec<(&'static str, String)>,
}

/// What deleting `resource` must take with it: an Agent's or Workflow's default instance, an
/// execution's ExecutionContexts (made here). `sibling` is another resource of the kind whose
/// dependents must stay.
pub async fn cascade_of(api: &Api<'_>, resource: &Value, sibling: Option<&str>) -> Cascade {
    let mut cascade = Cascade {
        gone: Vec::new(),
        kept: Vec::new(),
    };
    match api.case.lifecycle {
        Lifecycle::DefaultInstance { instance, .. } => {
            cascade.gone.push((instance, default_instance_of(resource)));
            if let Some(sibling) = sibling {
                let sibling = api.get(sibling).await.expect("get sibling");
                cascade.kept.push((instance, default_instance_of(&sibling)));
            }
        }
        Lifecycle::AgentExecution | Lifecycle::WorkflowExecution => {
            let context = context_of(api, &id_of(resource), "Own Context").await;
            cascade.gone.push(("ExecutionContext", context));
            if let Some(sibling) = sibling {
                let context = context_of(api, sibling, "Sibling Context").await;
                cascade.kept.push(("ExecutionContext", context));
            }
        }
        Lifecycle::None | Lifecycle::Session | Lifecycle::ExecutionContext => {}
    }
    cascade
}

/// A new ExecutionContext of `execution_id` in `api`'s org.
async fn context_of(api: &Api<'_>, execution_id: &str, name: &str) -> String {
    let contexts_case = case("ExecutionContext");
    let made = api
        .of(&contexts_case)
        .create(&json!({
            "metadata": { "name": name },
            "spec": { "executionId": execution_id, "data": { "K": { "value": "v" } } }
        }))
        .await
        .unwrap_or_else(|s| panic!("create of a context of {execution_id} failed: {s:?}"));
    id_of(&made)
}

pub async fn check_cascade(api: &Api<'_>, cascade: &Cascade, what: &str) {
    let k = api.case.name;
    for (kind, id) in &cascade.gone {
        assert!(
            !api.row_exists(id),
            "{k}: {what}: {kind} {id} must be deleted with it"
        );
        let kind_case = case(kind);
        let result = api.of(&kind_case).get(id).await;
        assert_not_found(&kind_case, result, id, &format!("{k}: {what}: get"));
    }
    for (kind, id) in &cascade.kept {
        let kind_case = case(kind);
        assert!(
            api.of(&kind_case).get(id).await.is_ok(),
            "{k}: {what}: {kind} {id} of another resource must survive"
        );
    }
}

/// The kind's other ways to be created (an execution from a session, or from a workflow
/// alone), the Session label the server owns, and the cascades the cycle does not reach.
pub async fn what_the_kind_does_beyond_the_cycle(api: &Api<'_>) {
    let k = api.case.name;
    let org = api.org;
    let fixture = api.fixture;
    match api.case.lifecycle {
        Lifecycle::None | Lifecycle::DefaultInstance { .. } => {}
        Lifecycle::AgentExecution => {
            let sessions_case = case("Session");
            let sessions = api.of(&sessions_case);
            let before = sessions.rows();
            // In an existing session: no new one, and the agent is the session's.
            create_pending_execution(
                api,
                json!({ "message": "go on", "sessionId": "{session}" }),
                &[
                    ("sessionId", "session", "runs in the session named"),
                    ("agentId", "agent", "agent_id filled in from the session"),
                ],
            )
            .await;
            assert_eq!(sessions.rows(), before, "{k}: no new session");
            // With only an agent, a new session every time.
            let made = api
                .create(&api.request(None, &json!({ "message": "start", "agentId": "{agent}" })))
                .await
                .unwrap_or_else(|s| panic!("{k}: create with an agent failed: {s:?}"));
            check_lifecycle_created(api, &made).await;
            assert_eq!(sessions.rows(), before + 1, "{k}: one new session");
        }
        Lifecycle::WorkflowExecution => {
            // With only a workflow: its default instance runs.
            create_pending_execution(
                api,
                json!({ "workflowId": "{workflow}", "triggerMessage": "by workflow" }),
                &[
                    (
                        "workflowInstanceId",
                        "workflowInstance",
                        "the workflow's default instance",
                    ),
                    ("workflowId", "workflow", "workflow_id kept"),
                ],
            )
            .await;
        }
        Lifecycle::Session => {
            // The agent label is the server's: a client's value is replaced, on create and on
            // update; other labels are the client's.
            let agent = json!(fixture.id(org, "agent"));
            let mut request = api.request(Some("Forged Label"), &api.case.spec);
            request["metadata"]["labels"] =
                json!({ SESSION_AGENT_LABEL: "agt-forged", "team": "qa" });
            let made = api
                .create(&request)
                .await
                .unwrap_or_else(|s| panic!("{k}: create with labels failed: {s:?}"));
            assert_eq!(label_of(&made, SESSION_AGENT_LABEL), agent, "{k}: create");
            assert_eq!(
                label_of(&made, "team"),
                json!("qa"),
                "{k}: other labels kept"
            );
            let mut forged = made.clone();
            forged["metadata"]["labels"][SESSION_AGENT_LABEL] = json!("agt-forged");
            let updated = api
                .update(&forged)
                .await
                .unwrap_or_else(|s| panic!("{k}: update with a forged label failed: {s:?}"));
            assert_eq!(
                label_of(&updated, SESSION_AGENT_LABEL),
                agent,
                "{k}: update"
            );
        }
        Lifecycle::ExecutionContext => {
            // A context of a WorkflowExecution ("wex-…") is accepted too, and ends with it.
            let made = api
                .create(&api.request(
                    Some("Workflow Context"),
                    &json!({ "executionId": "{workflowExecution}", "data": { "K": { "value": "v" } } }),
                ))
                .await
                .unwrap_or_else(|s| panic!("{k}: create for a workflow execution failed: {s:?}"));
            let workflow_executions = case("WorkflowExecution");
            api.of(&workflow_executions)
                .delete(fixture.id(org, "workflowExecution"), 0)
                .await
                .unwrap_or_else(|s| panic!("{k}: delete of the workflow execution failed: {s:?}"));
            assert!(
                !api.row_exists(&id_of(&made)),
                "{k}: deleted with its workflow execution"
            );
            // Every context the cycle left in this org belongs to one AgentExecution: they all
            // go with it. The other org's (of its own execution) stay.
            let others = api.rows_in(OTHER_ORG);
            assert!(api.rows_in(org) > 0, "{k}: the cycle left contexts");
            let agent_executions = case("AgentExecution");
            api.of(&agent_executions)
                .delete(fixture.id(org, "agentExecution"), 0)
                .await
                .unwrap_or_else(|s| panic!("{k}: delete of the agent execution failed: {s:?}"));
            assert_eq!(api.rows_in(org), 0, "{k}: deleted with their execution");
            assert_eq!(api.rows_in(OTHER_ORG), others, "{k}: the other org's stay");
        }
    }
}

/// Creates an execution of `spec` and checks that it starts pending, each spec field of
/// `expected` (field, placeholder, why) set to the id of that parent.
async fn create_pending_execution(api: &Api<'_>, spec: Value, expected: &[(&str, &str, &str)]) {
    let k = api.case.name;
    let made = api
        .create(&api.request(None, &spec))
        .await
        .unwrap_or_else(|s| panic!("{k}: create of {spec} failed: {s:?}"));
    for (field, parent, why) in expected {
        assert_eq!(
            spec_str(&made, field),
            api.fixture.id(api.org, parent),
            "{k}: {why}"
        );
    }
    assert_eq!(made["status"]["phase"], "EXECUTION_PENDING", "{k}: pending");
}
