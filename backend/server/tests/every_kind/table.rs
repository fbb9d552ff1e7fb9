//! The table: one row per kind, what it is and what the server must do with it.

use serde_json::{Value, json};

use crate::OTHER_ORG;
use crate::kind_case::{KindCase, Lifecycle, Parent, Refusal, Rpc};

/// A valid Workflow spec.
pub fn workflow_spec(description: &str, value: &str) -> Value {
    json!({
        "description": description,
        "document": {
            "dsl": "1.0.0",
            "namespace": "tests",
            "name": "every-kind",
            "version": "1.0.0"
        },
        "tasks": [{
            "name": "init",
            "kind": "WORKFLOW_TASK_KIND_SET",
            "taskConfig": { "variables": { "x": value } }
        }]
    })
}

pub fn cases() -> Vec<KindCase> {
    use Rpc::*;
    let missing_ref = |patch: Value, field: &'static str, description: &str| {
        Refusal::new(patch, field, Some(description), true)
    };
    vec![
        KindCase {
            name: "Agent",
            package: "agent",
            prefix: "agt",
            kind_enum: "agent",
            rpcs: &Rpc::ALL,
            list_field: "items",
            owner_scope: Some("organization"),
            spec: json!({ "description": "first", "instructions": "You are a careful test agent." }),
            changed_spec: json!({
                "description": "second",
                "instructions": "You are an updated test agent.",
                "mcpServers": [{ "name": "files", "stdio": { "command": "npx" } }]
            }),
            forged_status: json!({ "defaultInstanceId": "ain-forged" }),
            invalid: vec![
                (
                    json!({ "spec": { "instructions": "too short" } }),
                    "spec.instructions",
                ),
                (
                    json!({ "spec": { "skillRefs": [{ "kind": "agent", "slug": "x" }] } }),
                    "spec.skillRefs[0]",
                ),
                (
                    json!({ "metadata": { "ownerScope": "identity_account" } }),
                    "metadata",
                ),
            ],
            parents: &[],
            derived: &[],
            refusals: vec![
                missing_ref(
                    json!({ "spec": { "skillRefs": [{ "kind": "skill", "slug": "no-such-skill" }] } }),
                    "spec.skillRefs[0]",
                    r#"Skill "no-such-skill" does not exist in org "local""#,
                ),
                missing_ref(
                    json!({ "spec": { "subAgents": [{
                        "name": "helper",
                        "instructions": "You help the main agent.",
                        "skillRefs": [{ "kind": "skill", "slug": "ghost", "org": OTHER_ORG }]
                    }] } }),
                    "spec.subAgents[0].skillRefs[0].org",
                    r#"is "other-org"; a resource may only reference resources of its own org ("local")"#,
                ),
            ],
            lifecycle: Lifecycle::DefaultInstance {
                instance: "AgentInstance",
                parent_key: "agentId",
            },
        },
        KindCase {
            name: "AgentExecution",
            package: "agentexecution",
            prefix: "aex",
            kind_enum: "agent_execution",
            rpcs: &[Create, Update, List],
            list_field: "entries",
            owner_scope: None,
            spec: json!({ "message": "hello", "agentId": "{agent}" }),
            changed_spec: json!({ "message": "hello again", "agentId": "{agent}" }),
            forged_status: json!({ "phase": "EXECUTION_COMPLETED", "error": "forged" }),
            invalid: vec![
                (json!({ "spec": { "message": null } }), "spec.message"),
                (
                    json!({ "metadata": { "ownerScope": "organization" } }),
                    "metadata",
                ),
            ],
            parents: &[Parent::Agent, Parent::Session],
            derived: &["sessionId"],
            // Checked on create only: update does not re-check an execution's session or agent.
            refusals: [
                Refusal::missing_parent(
                    "agentId",
                    "spec.agentId",
                    "Agent",
                    "agt-00000000000000000000000000",
                    "agent",
                    false,
                ),
                Refusal::missing_parent(
                    "sessionId",
                    "spec.sessionId",
                    "Session",
                    "ses-00000000000000000000000000",
                    "session",
                    false,
                ),
                vec![Refusal::new(
                    json!({ "spec": { "agentId": null } }),
                    "spec.sessionId",
                    None,
                    false,
                )],
            ]
            .concat(),
            lifecycle: Lifecycle::AgentExecution,
        },
        KindCase {
            name: "Session",
            package: "session",
            prefix: "ses",
            kind_enum: "session",
            rpcs: &[Create, Update, Apply, List],
            list_field: "entries",
            owner_scope: Some("organization"),
            spec: json!({ "agentInstanceId": "{agentInstance}", "subject": "first" }),
            changed_spec: json!({ "agentInstanceId": "{agentInstance}", "subject": "second" }),
            forged_status: json!({}),
            invalid: vec![
                (
                    json!({ "spec": { "agentInstanceId": null } }),
                    "spec.agentInstanceId",
                ),
                (
                    json!({ "metadata": { "ownerScope": "platform" } }),
                    "metadata",
                ),
            ],
            parents: &[Parent::Agent],
            derived: &[],
            refusals: Refusal::missing_parent(
                "agentInstanceId",
                "spec.agentInstanceId",
                "AgentInstance",
                "ain-00000000000000000000000000",
                "agentInstance",
                true,
            ),
            lifecycle: Lifecycle::Session,
        },
        KindCase {
            name: "Skill",
            package: "skill",
            prefix: "skl",
            kind_enum: "skill",
            rpcs: &[GetByReference, List],
            list_field: "items",
            owner_scope: Some("organization"),
            spec: Value::Null,
            changed_spec: Value::Null,
            forged_status: json!({}),
            invalid: vec![],
            parents: &[],
            derived: &[],
            refusals: vec![],
            lifecycle: Lifecycle::None,
        },
        KindCase {
            name: "McpServer",
            package: "mcpserver",
            prefix: "mcp",
            kind_enum: "mcp_server",
            rpcs: &Rpc::ALL,
            list_field: "items",
            owner_scope: Some("organization"),
            spec: json!({ "description": "first", "stdio": { "command": "npx", "args": ["-y", "server"] } }),
            changed_spec: json!({ "description": "second", "http": { "url": "https://example.com/mcp" } }),
            forged_status: json!({ "validationState": "VALIDATION_STATE_VALID", "validationMessage": "forged" }),
            invalid: vec![
                (json!({ "spec": { "stdio": null } }), "spec"),
                (
                    json!({ "spec": { "stdio": { "command": null } } }),
                    "spec.stdio.command",
                ),
            ],
            parents: &[],
            derived: &[],
            refusals: vec![],
            lifecycle: Lifecycle::None,
        },
        KindCase {
            name: "AgentInstance",
            package: "agentinstance",
            prefix: "ain",
            kind_enum: "agent_instance",
            rpcs: &Rpc::ALL,
            list_field: "items",
            owner_scope: Some("organization"),
            spec: json!({ "agentId": "{agent}" }),
            changed_spec: json!({
                "agentId": "{agent}",
                "description": "second",
                "environmentRefs": [{ "kind": "environment", "slug": "prod" }]
            }),
            forged_status: json!({}),
            invalid: vec![
                (json!({ "spec": { "agentId": null } }), "spec.agentId"),
                (
                    json!({ "spec": { "environmentRefs": [{ "kind": "workflow_execution", "slug": "prod" }] } }),
                    "spec.environmentRefs[0]",
                ),
            ],
            parents: &[Parent::Agent, Parent::Environment],
            derived: &[],
            refusals: [
                Refusal::missing_parent(
                    "agentId",
                    "spec.agentId",
                    "Agent",
                    "agt-00000000000000000000000000",
                    "agent",
                    true,
                ),
                vec![
                    missing_ref(
                        json!({ "spec": { "environmentRefs": [
                            { "kind": "environment", "slug": "prod" },
                            { "kind": "environment", "slug": "nope" }
                        ] } }),
                        "spec.environmentRefs[1]",
                        r#"Environment "nope" does not exist in org "local""#,
                    ),
                    missing_ref(
                        json!({ "spec": { "environmentRefs": [
                            { "kind": "environment", "slug": "prod", "org": "no-such-org" }
                        ] } }),
                        "spec.environmentRefs[0].org",
                        r#"is "no-such-org"; a resource may only reference resources of its own org ("local")"#,
                    ),
                    // A reference of the wrong kind gets the kind rule's violation, whether or
                    // not something of that kind happens to exist.
                    Refusal::new(
                        json!({ "spec": { "environmentRefs": [{ "kind": "agent", "slug": "{agentSlug}" }] } }),
                        "spec.environmentRefs[0]",
                        Some("environmentRefs must reference environments (kind environment = 53)"),
                        true,
                    ),
                ],
            ]
            .concat(),
            lifecycle: Lifecycle::None,
        },
        KindCase {
            name: "Workflow",
            package: "workflow",
            prefix: "wfl",
            kind_enum: "workflow",
            rpcs: &Rpc::ALL,
            list_field: "items",
            owner_scope: Some("organization"),
            spec: workflow_spec("first", "1"),
            changed_spec: workflow_spec("second", "2"),
            forged_status: json!({ "defaultInstanceId": "win-forged" }),
            invalid: vec![
                (json!({ "spec": { "tasks": [] } }), "spec.tasks"),
                (
                    json!({ "spec": { "document": { "dsl": "2.0.0" } } }),
                    "spec.document.dsl",
                ),
                (json!({ "spec": { "document": null } }), "spec.document"),
            ],
            parents: &[],
            derived: &[],
            refusals: vec![],
            lifecycle: Lifecycle::DefaultInstance {
                instance: "WorkflowInstance",
                parent_key: "workflowId",
            },
        },
        KindCase {
            name: "WorkflowInstance",
            package: "workflowinstance",
            prefix: "win",
            kind_enum: "workflow_instance",
            rpcs: &Rpc::ALL,
            list_field: "entries",
            owner_scope: Some("organization"),
            spec: json!({ "workflowId": "{workflow}" }),
            changed_spec: json!({
                "workflowId": "{workflow}",
                "description": "second",
                "envRefs": [{ "kind": "environment", "slug": "prod" }]
            }),
            forged_status: json!({}),
            invalid: vec![(
                json!({ "spec": { "workflowId": null } }),
                "spec.workflowId",
            )],
            // The Agent is there to be referenced by mistake (env_refs of the wrong kind).
            parents: &[Parent::Workflow, Parent::Environment, Parent::Agent],
            derived: &[],
            refusals: [
                Refusal::missing_parent(
                    "workflowId",
                    "spec.workflowId",
                    "Workflow",
                    "wfl-00000000000000000000000000",
                    "workflow",
                    true,
                ),
                vec![
                    missing_ref(
                        json!({ "spec": { "envRefs": [{ "kind": "environment", "slug": "nope" }] } }),
                        "spec.envRefs[0]",
                        r#"Environment "nope" does not exist in org "local""#,
                    ),
                    // Upstream gave env_refs no kind rule; the server merges them as
                    // Environments, so an unset kind is checked as one...
                    missing_ref(
                        json!({ "spec": { "envRefs": [
                            { "kind": "environment", "slug": "prod" },
                            { "slug": "ghost" }
                        ] } }),
                        "spec.envRefs[1]",
                        r#"Environment "ghost" does not exist in org "local""#,
                    ),
                    // ...and another kind is refused, even when that resource exists.
                    Refusal::new(
                        json!({ "spec": { "envRefs": [{ "kind": "agent", "slug": "{agentSlug}" }] } }),
                        "spec.envRefs[0]",
                        Some("must reference Environment (kind 53), not Agent"),
                        true,
                    ),
                    Refusal::new(
                        json!({ "spec": { "envRefs": [{ "kind": 99, "slug": "prod" }] } }),
                        "spec.envRefs[0].kind",
                        Some("99 is not a kind this server serves; it must reference Environment"),
                        true,
                    ),
                ],
            ]
            .concat(),
            lifecycle: Lifecycle::None,
        },
        KindCase {
            name: "WorkflowExecution",
            package: "workflowexecution",
            prefix: "wex",
            kind_enum: "workflow_execution",
            rpcs: &[Create, Update, List],
            list_field: "entries",
            owner_scope: Some("organization"),
            spec: json!({ "workflowInstanceId": "{workflowInstance}", "triggerMessage": "go" }),
            changed_spec: json!({ "workflowInstanceId": "{workflowInstance}", "triggerMessage": "go again" }),
            forged_status: json!({ "phase": "EXECUTION_COMPLETED", "error": "forged" }),
            invalid: vec![(
                json!({ "metadata": { "ownerScope": "platform" } }),
                "metadata",
            )],
            parents: &[Parent::Workflow],
            derived: &["workflowId"],
            // Checked on create only: update does not re-check an execution's instance or workflow.
            refusals: [
                Refusal::missing_parent(
                    "workflowInstanceId",
                    "spec.workflowInstanceId",
                    "WorkflowInstance",
                    "win-00000000000000000000000000",
                    "workflowInstance",
                    false,
                ),
                Refusal::missing_parent(
                    "workflowId",
                    "spec.workflowId",
                    "Workflow",
                    "wfl-00000000000000000000000000",
                    "workflow",
                    false,
                )
                .into_iter()
                .map(|mut refusal| {
                    refusal.patch["spec"]["workflowInstanceId"] = Value::Null;
                    refusal
                })
                .collect(),
                vec![Refusal::new(
                    json!({ "spec": { "workflowInstanceId": null } }),
                    "spec.workflowInstanceId",
                    None,
                    false,
                )],
            ]
            .concat(),
            lifecycle: Lifecycle::WorkflowExecution,
        },
        KindCase {
            name: "Environment",
            package: "environment",
            prefix: "env",
            kind_enum: "environment",
            rpcs: &Rpc::ALL,
            list_field: "items",
            owner_scope: Some("organization"),
            spec: json!({ "description": "first", "data": { "LOG_LEVEL": { "value": "debug" } } }),
            changed_spec: json!({
                "description": "second",
                "data": { "LOG_LEVEL": { "value": "info" }, "REGION": { "value": "eu" } }
            }),
            forged_status: json!({}),
            invalid: vec![(
                json!({ "metadata": { "ownerScope": "platform" } }),
                "metadata",
            )],
            parents: &[],
            derived: &[],
            refusals: vec![],
            lifecycle: Lifecycle::None,
        },
        KindCase {
            name: "ExecutionContext",
            package: "executioncontext",
            prefix: "exec",
            kind_enum: "execution_context",
            rpcs: &[Create, Apply, GetByReference],
            list_field: "",
            owner_scope: None,
            spec: json!({ "executionId": "{agentExecution}", "data": { "K": { "value": "v" } } }),
            changed_spec: json!({ "executionId": "{agentExecution}", "data": { "K": { "value": "w" } } }),
            forged_status: json!({}),
            invalid: vec![
                (
                    json!({ "spec": { "executionId": null } }),
                    "spec.executionId",
                ),
                (
                    json!({ "metadata": { "ownerScope": "organization" } }),
                    "metadata",
                ),
            ],
            parents: &[Parent::AgentExecution, Parent::WorkflowExecution],
            derived: &[],
            // The parent's kind follows from the id: "wex-…" is a WorkflowExecution.
            refusals: [
                Refusal::missing_parent(
                    "executionId",
                    "spec.executionId",
                    "AgentExecution",
                    "aex-00000000000000000000000000",
                    "agentExecution",
                    true,
                ),
                Refusal::missing_parent(
                    "executionId",
                    "spec.executionId",
                    "WorkflowExecution",
                    "wex-00000000000000000000000000",
                    "workflowExecution",
                    true,
                ),
            ]
            .concat(),
            lifecycle: Lifecycle::ExecutionContext,
        },
    ]
}

pub fn case(name: &str) -> KindCase {
    cases()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case for kind {name}"))
}

// ---------------------------------------------------------------------------------------------
// Calls
