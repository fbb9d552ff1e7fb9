//! Every kind, one table: the same create → get → getByReference → update → apply → list →
//! delete cycle and the same negative checks, run against the real server for each of the
//! eleven kinds of CONTRACT.md, through real gRPC calls with proto3 JSON requests.
//!
//! The table (`cases()`) says, per kind, its package, id prefix, which RPCs it has, the parents
//! it needs on the server, a minimal valid spec, a changed spec for update/apply, rule-breaking
//! patches with the field path the server must name, and references to missing resources with
//! the exact violation. `per_kind!` turns it into one test module per kind
//! (`cargo test --test every_kind agent::`).
//!
//! Specs name their parents by placeholder (`"{agent}"`); each test first creates the parents in
//! every org it uses (a `Fixture`) and substitutes their real ids.

#[path = "../common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::str::FromStr;

use common::{TestServer, expect_code, violated_fields};
use prost_reflect::DynamicMessage;
use serde_json::{Value, json};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use stigmer_grpc::{API_VERSION, ORG_HEADER};
const OTHER_ORG: &str = "other-org";
/// Crockford base32 as the server writes ULIDs: lowercase, no i l o u.
const ULID_ALPHABET: &str = "0123456789abcdefghjkmnpqrstvwxyz";
/// The label the server puts on every Session: the agent of its instance.
const SESSION_AGENT_LABEL: &str = "stigmer.ai/agent-id";

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

/// RPCs that some kinds have and others do not (every kind has get and delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    Create,
    Update,
    Apply,
    GetByReference,
    List,
}

impl Rpc {
    const ALL: [Rpc; 5] = [
        Rpc::Create,
        Rpc::Update,
        Rpc::Apply,
        Rpc::GetByReference,
        Rpc::List,
    ];

    fn method(self) -> &'static str {
        match self {
            Rpc::Create => "create",
            Rpc::Update => "update",
            Rpc::Apply => "apply",
            Rpc::GetByReference => "getByReference",
            Rpc::List => "list",
        }
    }

    fn is_command(self) -> bool {
        matches!(self, Rpc::Create | Rpc::Update | Rpc::Apply)
    }
}

const ALL_RPCS: &[Rpc] = &[
    Rpc::Create,
    Rpc::Update,
    Rpc::Apply,
    Rpc::GetByReference,
    Rpc::List,
];

struct KindCase {
    /// "Agent".
    name: &'static str,
    /// "agent" in `ai.stigmer.agentic.agent.v1`.
    package: &'static str,
    prefix: &'static str,
    /// The `ApiResourceKind` value name, as a reference's `kind` in proto3 JSON.
    kind_enum: &'static str,
    rpcs: &'static [Rpc],
    /// The repeated field of the list response (`items` or `entries`); "" without list.
    list_field: &'static str,
    /// `metadata.ownerScope` after create when the client leaves it unspecified.
    owner_scope: Option<&'static str>,
    /// A minimal spec that satisfies the kind's rules.
    spec: Value,
    /// Another valid spec, for update and the second apply.
    changed_spec: Value,
    /// Status fields (besides `audit`) a client might forge on create; all must be discarded.
    forged_status: Value,
    /// Patches over a valid create request that break one rule each, with the field path the
    /// BadRequest must name. A `null` in a patch removes that key.
    invalid: Vec<(Value, &'static str)>,
    /// Resources the specs above name (as `"{placeholder}"`), created before each test.
    parents: &'static [Parent],
    /// Spec fields (proto3 JSON names) the server fills in on create when the client leaves
    /// them out; their values are checked by the kind's `Lifecycle`.
    derived: &'static [&'static str],
    /// Specs naming resources that do not exist (in the caller's org): refused with exactly
    /// this violation.
    refusals: Vec<Refusal>,
    /// What the server does beyond the generic verbs for this kind.
    lifecycle: Lifecycle,
}

/// Parents a kind's specs name. Each brings its placeholders (see `Fixture::build_in`):
/// Agent → `{agent}` and its default instance `{agentInstance}`; Session → `{session}` on
/// `{agentInstance}`; Workflow → `{workflow}`, `{workflowInstance}`; Environment → slug "prod"
/// (`{environment}`); AgentExecution → `{agentExecution}` (on `{agent}`); WorkflowExecution →
/// `{workflowExecution}` (on `{workflowInstance}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parent {
    Environment,
    Agent,
    Session,
    Workflow,
    AgentExecution,
    WorkflowExecution,
}

/// A write the server must refuse because of other resources (a parent or a reference).
#[derive(Clone)]
struct Refusal {
    /// Merged over a valid create request (or over the created resource, for update).
    patch: Value,
    field: &'static str,
    /// The violation's exact description (placeholders substituted), or None to check only
    /// the field.
    description: Option<String>,
    /// Also refused by update (the kinds whose update re-checks its parent).
    on_update: bool,
}

impl Refusal {
    fn new(patch: Value, field: &'static str, description: Option<&str>, on_update: bool) -> Self {
        Self {
            patch,
            field,
            description: description.map(str::to_string),
            on_update,
        }
    }

    /// A parent that is missing from the caller's org ("local"): a made-up id, and then the
    /// same kind of parent but from the other org (placeholder `{other:<name>}`).
    fn missing_parent(
        key: &'static str,
        field: &'static str,
        kind: &str,
        made_up: &str,
        other: &str,
        on_update: bool,
    ) -> Vec<Self> {
        [made_up.to_string(), format!("{{other:{other}}}")]
            .into_iter()
            .map(|id| Self {
                patch: json!({ "spec": { key: id } }),
                field,
                description: Some(format!("{kind} \"{id}\" does not exist in org \"local\"")),
                on_update,
            })
            .collect()
    }
}

/// The server's behaviour beyond the generic verbs, checked by the full cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    None,
    /// Create also creates a default `instance` (whose `spec.<parent_key>` is the parent),
    /// delete deletes it, and refuses while another instance refers to the parent.
    DefaultInstance {
        instance: &'static str,
        parent_key: &'static str,
    },
    /// Labelled with the agent of its instance.
    Session,
    /// Starts PENDING, in a Session (a new one when only agent_id is given); its
    /// ExecutionContexts are deleted with it.
    AgentExecution,
    /// Starts PENDING on a workflow instance (the default one when only workflow_id is given);
    /// its ExecutionContexts are deleted with it.
    WorkflowExecution,
    /// Ends with its execution, whichever kind that is.
    ExecutionContext,
}

impl KindCase {
    fn has(&self, rpc: Rpc) -> bool {
        self.rpcs.contains(&rpc)
    }

    /// Kinds with getByReference are addressed by slug and so need a name or a slug.
    fn named(&self) -> bool {
        self.has(Rpc::GetByReference)
    }

    fn service(&self, command: bool) -> String {
        format!(
            "ai.stigmer.agentic.{}.v1.{}{}Controller",
            self.package,
            self.name,
            if command { "Command" } else { "Query" }
        )
    }

    fn command(&self, method: &str) -> String {
        format!("/{}/{method}", self.service(true))
    }

    fn query(&self, method: &str) -> String {
        format!("/{}/{method}", self.service(false))
    }

    /// A create/apply request without type fields (the server fills them in).
    fn request(&self, name: Option<&str>, spec: &Value) -> Value {
        let mut request = json!({ "metadata": {}, "spec": spec });
        if let Some(name) = name {
            request["metadata"]["name"] = json!(name);
        }
        request
    }
}

/// A valid Workflow spec.
fn workflow_spec(description: &str, value: &str) -> Value {
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

fn cases() -> Vec<KindCase> {
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
            rpcs: ALL_RPCS,
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
            rpcs: ALL_RPCS,
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
            rpcs: ALL_RPCS,
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
            rpcs: ALL_RPCS,
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
            rpcs: ALL_RPCS,
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
            rpcs: ALL_RPCS,
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

fn case(name: &str) -> KindCase {
    cases()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case for kind {name}"))
}

// ---------------------------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------------------------

/// Parents created on the server before a test, in every org the test uses, with everything
/// their creation wrote (default instances, sessions).
struct Fixture {
    /// (org, placeholder name) → id (or slug, for `agentSlug`).
    ids: HashMap<(String, String), String>,
    /// (kind, org, id) of every resource on the server once the fixture was built: the
    /// parents and whatever the server wrote with them (default instances, sessions, ...).
    made: Vec<(String, String, String)>,
}

impl Fixture {
    fn empty() -> Self {
        Self {
            ids: HashMap::new(),
            made: Vec::new(),
        }
    }

    /// The case's parents in "local" and in OTHER_ORG.
    async fn build(server: &TestServer, parents: &[Parent]) -> Self {
        let mut fixture = Self::empty();
        if parents.is_empty() {
            // Nothing to make (and the server may not have opened its database yet).
            return fixture;
        }
        for org in [None, Some(OTHER_ORG)] {
            fixture.build_in(server, org, parents).await;
        }
        let db = server.sqlite();
        let mut query = db
            .prepare("SELECT kind, org_id, id FROM resources")
            .expect("prepare");
        fixture.made = query
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .expect("query rows")
            .collect::<Result<_, _>>()
            .expect("read rows");
        fixture
    }

    async fn build_in(
        &mut self,
        server: &TestServer,
        org: Option<&'static str>,
        parents: &[Parent],
    ) {
        let org_name = org.unwrap_or("local");
        let needs = |parent: Parent| parents.contains(&parent);
        if needs(Parent::Environment) {
            let environment = self
                .make(
                    server,
                    org,
                    "Environment",
                    json!({ "metadata": { "name": "prod" }, "spec": { "data": { "REGION": { "value": "eu" } } } }),
                )
                .await;
            self.put(org_name, "environment", id_of(&environment));
        }
        if needs(Parent::Agent) || needs(Parent::Session) || needs(Parent::AgentExecution) {
            let agent = self
                .make(
                    server,
                    org,
                    "Agent",
                    json!({
                        "metadata": { "name": "Parent Agent" },
                        "spec": { "instructions": "You are the parent of the resources under test." }
                    }),
                )
                .await;
            let instance = default_instance_of(&agent);
            self.put(org_name, "agent", id_of(&agent));
            self.put(org_name, "agentSlug", slug_of(&agent));
            self.put(org_name, "agentInstance", instance);
        }
        if needs(Parent::Session) {
            let instance = self.id(org_name, "agentInstance").to_string();
            let session = self
                .make(
                    server,
                    org,
                    "Session",
                    json!({ "metadata": { "name": "Parent Session" }, "spec": { "agentInstanceId": instance } }),
                )
                .await;
            self.put(org_name, "session", id_of(&session));
        }
        if needs(Parent::Workflow) || needs(Parent::WorkflowExecution) {
            let workflow = self
                .make(
                    server,
                    org,
                    "Workflow",
                    json!({ "metadata": { "name": "Parent Workflow" }, "spec": workflow_spec("parent", "0") }),
                )
                .await;
            let instance = default_instance_of(&workflow);
            self.put(org_name, "workflow", id_of(&workflow));
            self.put(org_name, "workflowInstance", instance);
        }
        if needs(Parent::AgentExecution) {
            let agent = self.id(org_name, "agent").to_string();
            let execution = self
                .make(
                    server,
                    org,
                    "AgentExecution",
                    json!({ "metadata": {}, "spec": { "message": "parent", "agentId": agent } }),
                )
                .await;
            self.put(org_name, "agentExecution", id_of(&execution));
        }
        if needs(Parent::WorkflowExecution) {
            let instance = self.id(org_name, "workflowInstance").to_string();
            let execution = self
                .make(
                    server,
                    org,
                    "WorkflowExecution",
                    json!({ "metadata": {}, "spec": { "workflowInstanceId": instance, "triggerMessage": "parent" } }),
                )
                .await;
            self.put(org_name, "workflowExecution", id_of(&execution));
        }
    }

    async fn make(
        &self,
        server: &TestServer,
        org: Option<&'static str>,
        kind: &str,
        request: Value,
    ) -> Value {
        let path = case(kind).command("create");
        call(server, org, &path, &request)
            .await
            .unwrap_or_else(|s| panic!("fixture: create {kind} in {org:?} failed: {s:?}"))
    }

    fn put(&mut self, org: &str, name: &str, id: String) {
        self.ids.insert((org.to_string(), name.to_string()), id);
    }

    fn id(&self, org: &str, name: &str) -> &str {
        self.ids
            .get(&(org.to_string(), name.to_string()))
            .unwrap_or_else(|| {
                panic!("the fixture has no {{{name}}} in org {org:?}; add its Parent")
            })
    }

    /// `value` with every `"{name}"` string replaced by the id of that parent in `org`, and
    /// every `"{other:name}"` by the one in OTHER_ORG.
    fn resolve(&self, value: &Value, org: &str) -> Value {
        match value {
            Value::String(text) => match placeholder(text) {
                Some(name) => match name.strip_prefix("other:") {
                    Some(name) => json!(self.id(OTHER_ORG, name)),
                    None => json!(self.id(org, name)),
                },
                None => value.clone(),
            },
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.resolve(v, org)).collect())
            }
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), self.resolve(v, org)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// `text` with the placeholders in it replaced as `resolve` does.
    fn resolve_text(&self, text: &str, org: &str) -> String {
        let mut text = text.to_string();
        for ((owner, name), id) in &self.ids {
            if owner == org {
                text = text.replace(&format!("{{{name}}}"), id);
            }
            if owner == OTHER_ORG {
                text = text.replace(&format!("{{other:{name}}}"), id);
            }
        }
        text
    }

    /// Ids of the fixture's resources of `kind` in `org`, ascending.
    fn ids_of(&self, kind: &str, org: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .made
            .iter()
            .filter(|(k, o, _)| k == kind && o == org)
            .map(|(_, _, id)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    fn contains(&self, id: &str) -> bool {
        self.made.iter().any(|(_, _, made)| made == id)
    }
}

/// "name" of a `"{name}"` placeholder.
fn placeholder(text: &str) -> Option<&str> {
    let name = text.strip_prefix('{')?.strip_suffix('}')?;
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == ':'))
        .then_some(name)
}

/// One kind's RPCs on one server, as the caller in `org` (None = no header = "local"), with
/// the parents of `fixture`.
struct Api<'a> {
    server: &'a TestServer,
    case: &'a KindCase,
    org: Option<&'static str>,
    fixture: &'a Fixture,
}

impl<'a> Api<'a> {
    fn new(server: &'a TestServer, case: &'a KindCase, fixture: &'a Fixture) -> Self {
        Self {
            server,
            case,
            org: None,
            fixture,
        }
    }

    fn as_org(&self, org: &'static str) -> Api<'a> {
        Api {
            server: self.server,
            case: self.case,
            org: Some(org),
            fixture: self.fixture,
        }
    }

    /// Another kind's RPCs, as the same caller.
    fn of<'b>(&self, case: &'b KindCase) -> Api<'b>
    where
        'a: 'b,
    {
        Api {
            server: self.server,
            case,
            org: self.org,
            fixture: self.fixture,
        }
    }

    fn org_name(&self) -> &'static str {
        self.org.unwrap_or("local")
    }

    /// A value of the table with this org's parents substituted.
    fn resolve(&self, value: &Value) -> Value {
        self.fixture.resolve(value, self.org_name())
    }

    fn spec(&self) -> Value {
        self.resolve(&self.case.spec)
    }

    fn changed_spec(&self) -> Value {
        self.resolve(&self.case.changed_spec)
    }

    /// `case.request` with this org's parents substituted in `spec`.
    fn request(&self, name: Option<&str>, spec: &Value) -> Value {
        self.case.request(name, &self.resolve(spec))
    }

    /// Resources of this kind the fixture wrote in this org (they come first in a listing).
    fn preexisting(&self) -> Vec<String> {
        self.fixture.ids_of(self.case.name, self.org_name())
    }

    async fn call(&self, path: &str, body: &Value) -> Result<Value, Status> {
        call(self.server, self.org, path, body).await
    }

    async fn create(&self, request: &Value) -> Result<Value, Status> {
        self.call(&self.case.command("create"), request).await
    }

    async fn update(&self, request: &Value) -> Result<Value, Status> {
        self.call(&self.case.command("update"), request).await
    }

    async fn apply(&self, request: &Value) -> Result<Value, Status> {
        self.call(&self.case.command("apply"), request).await
    }

    async fn get(&self, id: &str) -> Result<Value, Status> {
        self.call(&self.case.query("get"), &json!({ "value": id }))
            .await
    }

    async fn get_by_reference(&self, reference: &Value) -> Result<Value, Status> {
        self.call(&self.case.query("getByReference"), reference)
            .await
    }

    async fn delete(&self, id: &str, expected_revision: i64) -> Result<Value, Status> {
        let path = self.case.command("delete");
        let (input, _) = common::method_types(&path);
        let id_field = if input.get_field_by_name("resource_id").is_some() {
            "resourceId"
        } else {
            "value"
        };
        let mut body = json!({ id_field: id });
        if expected_revision != 0 {
            body["expectedRevision"] = json!(expected_revision.to_string());
        }
        self.call(&path, &body).await
    }

    async fn list(&self, page_size: i32, page_token: &str) -> Result<Value, Status> {
        self.call(
            &self.case.query("list"),
            &json!({ "pageSize": page_size, "pageToken": page_token }),
        )
        .await
    }

    /// Every page of a listing: the ids in order and the size of each page.
    async fn list_all(&self, page_size: i32) -> (Vec<String>, Vec<usize>) {
        let k = self.case.name;
        let mut ids = Vec::new();
        let mut pages = Vec::new();
        let mut token = String::new();
        for _ in 0..100 {
            let page = self
                .list(page_size, &token)
                .await
                .unwrap_or_else(|s| panic!("{k}: list(page_size {page_size}) failed: {s:?}"));
            let items = items_of(self.case, &page);
            pages.push(items.len());
            ids.extend(items.iter().map(id_of));
            token = page["nextPageToken"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if token.is_empty() {
                return (ids, pages);
            }
            assert_eq!(
                items.len(),
                usize::try_from(page_size).expect("positive page size"),
                "{k}: a page followed by another must be full; pages so far {pages:?}"
            );
        }
        panic!("{k}: listing never ended (100 pages of size {page_size})");
    }

    /// Rows of this kind (in any org) besides the fixture's.
    fn rows(&self) -> i64 {
        self.ids_where("kind = ?1", &[self.case.name])
    }

    /// Rows of this kind in `org` besides the fixture's.
    fn rows_in(&self, org: &str) -> i64 {
        self.ids_where("kind = ?1 AND org_id = ?2", &[self.case.name, org])
    }

    /// Rows of every kind (in any org) besides the fixture's.
    fn all_rows(&self) -> i64 {
        self.ids_where("1 = 1", &[])
    }

    fn ids_where(&self, condition: &str, parameters: &[&str]) -> i64 {
        let db = self.server.sqlite();
        let mut query = db
            .prepare(&format!("SELECT id FROM resources WHERE {condition}"))
            .expect("prepare");
        let ids = query
            .query_map(rusqlite::params_from_iter(parameters), |row| {
                row.get::<_, String>(0)
            })
            .expect("query ids")
            .collect::<Result<Vec<_>, _>>()
            .expect("read ids");
        let count = ids.iter().filter(|id| !self.fixture.contains(id)).count();
        i64::try_from(count).expect("row count")
    }

    fn row_exists(&self, id: &str) -> bool {
        let count: i64 = self
            .server
            .sqlite()
            .query_row(
                "SELECT COUNT(*) FROM resources WHERE id = ?1",
                [id],
                |row| row.get(0),
            )
            .expect("count rows");
        count == 1
    }
}

/// A call as the caller in `org` (None = no header).
async fn call(
    server: &TestServer,
    org: Option<&str>,
    path: &str,
    body: &Value,
) -> Result<Value, Status> {
    match org {
        None => server
            .call_json(path, &body.to_string())
            .await
            .map(|message| common::to_json(&message)),
        Some(org) => call_as_org(server, org, path, body).await,
    }
}

/// A call with the org header set, as a client working in another org sends it.
async fn call_as_org(
    server: &TestServer,
    org: &str,
    path: &str,
    body: &Value,
) -> Result<Value, Status> {
    let (input, output) = common::method_types(path);
    let message = DynamicMessage::deserialize(input, body.clone())
        .unwrap_or_else(|e| panic!("request for {path} does not fit its type: {e}: {body}"));
    let mut client = tonic::client::Grpc::new(server.channel.clone());
    client
        .ready()
        .await
        .map_err(|err| Status::unavailable(err.to_string()))?;
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(ORG_HEADER, org.parse().expect("ascii org"));
    client
        .unary(
            request,
            http::uri::PathAndQuery::from_str(path).expect("path"),
            stigmer_grpc::codec::DynamicCodec::new(output),
        )
        .await
        .map(|response| common::to_json(&response.into_inner()))
}

// ---------------------------------------------------------------------------------------------
// Small helpers over proto3 JSON
// ---------------------------------------------------------------------------------------------

fn id_of(resource: &Value) -> String {
    resource["metadata"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no metadata.id in {resource}"))
        .to_string()
}

fn slug_of(resource: &Value) -> String {
    resource["metadata"]["slug"]
        .as_str()
        .unwrap_or_else(|| panic!("no metadata.slug in {resource}"))
        .to_string()
}

/// `status.defaultInstanceId` of an Agent or a Workflow.
fn default_instance_of(resource: &Value) -> String {
    resource["status"]["defaultInstanceId"]
        .as_str()
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| panic!("no status.defaultInstanceId in {resource}"))
        .to_string()
}

/// A string field of the spec ("" when unset).
fn spec_str(resource: &Value, key: &str) -> String {
    resource["spec"][key]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn label_of(resource: &Value, key: &str) -> Value {
    resource["metadata"]["labels"][key].clone()
}

/// `spec` with the derived fields of `from` (a stored resource) added where `spec` lacks them,
/// as a client sends back what it read.
fn with_derived(case: &KindCase, spec: &Value, from: &Value) -> Value {
    let mut spec = spec.clone();
    for key in case.derived {
        if spec.get(*key).is_none() {
            spec[*key] = from["spec"][*key].clone();
        }
    }
    spec
}

/// The spec a write stored equals the one sent, but for the derived fields the client left
/// out, which the server must have filled in.
fn assert_spec(case: &KindCase, stored: &Value, sent: &Value, what: &str) {
    let k = case.name;
    let mut stored_spec = stored["spec"].clone();
    for key in case.derived {
        if sent.get(*key).is_none() {
            let derived = stored_spec
                .as_object_mut()
                .and_then(|spec| spec.remove(*key))
                .unwrap_or(Value::Null);
            assert!(
                derived.as_str().is_some_and(|v| !v.is_empty()),
                "{k}: {what}: the server fills in spec.{key}: {stored}"
            );
        }
    }
    assert_eq!(&stored_spec, sent, "{k}: {what}: spec stored as sent");
}

/// `metadata.revision`, an int64 and so a JSON string.
fn revision_of(resource: &Value) -> i64 {
    let revision = &resource["metadata"]["revision"];
    revision
        .as_str()
        .and_then(|r| r.parse::<i64>().ok())
        .unwrap_or_else(|| panic!("metadata.revision {revision} is not an int64 string"))
}

fn items_of(case: &KindCase, page: &Value) -> Vec<Value> {
    match &page[case.list_field] {
        Value::Null => Vec::new(),
        Value::Array(items) => items.clone(),
        other => panic!("{}: list field {} is {other}", case.name, case.list_field),
    }
}

/// Deep merge; a `null` in `patch` removes the key.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

fn patched(base: &Value, patch: &Value) -> Value {
    let mut value = base.clone();
    merge(&mut value, patch);
    value
}

/// An RFC 3339 UTC timestamp as a string that sorts in time order (fraction padded to 9).
fn instant(value: &Value, what: &str) -> String {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a timestamp string: {value}"));
    let body = text
        .strip_suffix('Z')
        .unwrap_or_else(|| panic!("{what} {text:?} is not UTC RFC 3339"));
    let (seconds, fraction) = body.split_once('.').unwrap_or((body, ""));
    let shape_ok = seconds.len() == 19
        && seconds.char_indices().all(|(i, c)| match i {
            4 | 7 => c == '-',
            10 => c == 'T',
            13 | 16 => c == ':',
            _ => c.is_ascii_digit(),
        })
        && fraction.len() <= 9
        && fraction.chars().all(|c| c.is_ascii_digit());
    assert!(shape_ok, "{what} {text:?} is not RFC 3339");
    format!("{seconds}.{fraction:0<9}")
}

fn assert_id(case: &KindCase, id: &str) {
    let k = case.name;
    let ulid = id
        .strip_prefix(&format!("{}-", case.prefix))
        .unwrap_or_else(|| panic!("{k}: id {id:?} lacks prefix {}-", case.prefix));
    assert_eq!(
        ulid.len(),
        26,
        "{k}: id {id:?} is not prefix + 26-char ULID"
    );
    assert!(
        ulid.chars().all(|c| ULID_ALPHABET.contains(c)),
        "{k}: id {id:?} is not a lowercase ULID"
    );
}

fn assert_not_found(case: &KindCase, result: Result<Value, Status>, id: &str, what: &str) {
    let k = case.name;
    let status = expect_code(result, Code::NotFound);
    assert!(
        status.message().contains(k) && status.message().contains(id),
        "{k}: {what}: NOT_FOUND message should name the kind and {id:?}: {:?}",
        status.message()
    );
}

fn assert_invalid(case: &KindCase, result: Result<Value, Status>, field: &str, what: &str) {
    let k = case.name;
    let status = match result {
        Ok(value) => panic!("{k}: {what}: expected INVALID_ARGUMENT naming {field}, got {value}"),
        Err(status) => status,
    };
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "{k}: {what}: expected INVALID_ARGUMENT naming {field}, got {status:?}"
    );
    common::assert_no_leak(&status);
    let fields = violated_fields(&status);
    assert!(
        fields.iter().any(|f| f == field),
        "{k}: {what}: violations {fields:?} do not name {field:?} (message {:?})",
        status.message()
    );
}

/// INVALID_ARGUMENT with a violation at `field` whose description is exactly `description`
/// (or any, when None).
fn assert_refused(
    case: &KindCase,
    result: Result<Value, Status>,
    field: &str,
    description: Option<&str>,
    what: &str,
) {
    let k = case.name;
    let status = match result {
        Ok(value) => panic!("{k}: {what}: expected INVALID_ARGUMENT naming {field}, got {value}"),
        Err(status) => status,
    };
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "{k}: {what}: expected INVALID_ARGUMENT naming {field}, got {status:?}"
    );
    common::assert_no_leak(&status);
    let violations: Vec<(String, String)> = status
        .get_details_bad_request()
        .map(|bad| {
            bad.field_violations
                .into_iter()
                .map(|v| (v.field, v.description))
                .collect()
        })
        .unwrap_or_default();
    let found = violations
        .iter()
        .any(|(f, d)| f == field && description.is_none_or(|want| d == want));
    assert!(
        found,
        "{k}: {what}: no violation ({field:?}, {description:?}) among {violations:?}"
    );
}

fn assert_aborted(case: &KindCase, result: Result<Value, Status>, current: i64, what: &str) {
    let k = case.name;
    let status = match result {
        Ok(value) => panic!("{k}: {what}: expected ABORTED, got {value}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::Aborted, "{k}: {what}: {status:?}");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("{k}: {what}: ABORTED without ErrorInfo: {status:?}"));
    assert_eq!(
        info.metadata.get("current_revision"),
        Some(&current.to_string()),
        "{k}: {what}: ABORTED should carry the current revision"
    );
}

/// Everything the server owns on a freshly created (or applied-into-existence) resource.
fn check_created(case: &KindCase, created: &Value, name: Option<&str>, slug: Option<&str>) {
    let k = case.name;
    assert_eq!(
        created["apiVersion"], API_VERSION,
        "{k}: apiVersion: {created}"
    );
    assert_eq!(created["kind"], k, "{k}: kind: {created}");
    let meta = &created["metadata"];
    let id = id_of(created);
    assert_id(case, &id);
    match name {
        Some(name) => assert_eq!(meta["name"], name, "{k}: metadata.name kept"),
        None => assert!(meta.get("name").is_none(), "{k}: no name was sent: {meta}"),
    }
    match slug {
        Some(slug) => assert_eq!(meta["slug"], slug, "{k}: slug derived from {name:?}"),
        None => assert_eq!(
            meta["slug"],
            json!(id),
            "{k}: an unnamed resource's slug is its id"
        ),
    }
    assert_eq!(meta["org"], "local", "{k}: org defaults to local: {meta}");
    match case.owner_scope {
        Some(scope) => assert_eq!(meta["ownerScope"], scope, "{k}: owner scope default"),
        None => assert!(
            meta.get("ownerScope").is_none(),
            "{k}: owner scope must stay unspecified: {meta}"
        ),
    }
    assert!(revision_of(created) > 0, "{k}: revision is positive");
    let audit = &created["status"]["audit"];
    for which in ["specAudit", "statusAudit"] {
        let info = &audit[which];
        let what = format!("{k}: status.audit.{which}");
        assert_eq!(
            info["createdBy"]["id"], "local",
            "{what}.createdBy: {audit}"
        );
        assert_eq!(
            info["updatedBy"]["id"], "local",
            "{what}.updatedBy: {audit}"
        );
        assert_eq!(info["event"], "created", "{what}.event: {audit}");
        let created_at = instant(&info["createdAt"], &format!("{what}.createdAt"));
        let updated_at = instant(&info["updatedAt"], &format!("{what}.updatedAt"));
        assert!(
            created_at.as_str() > "2024",
            "{what}.createdAt {created_at} is not the server's clock"
        );
        assert!(
            updated_at >= created_at,
            "{what}: updatedAt before createdAt"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The full cycle
// ---------------------------------------------------------------------------------------------

/// Checks a write's revision against the last one seen on this server, and remembers it.
fn grows(case: &KindCase, last: &mut i64, resource: &Value, what: &str) {
    let revision = revision_of(resource);
    assert!(
        revision > *last,
        "{}: {what}: revision {revision} does not grow past {last}",
        case.name
    );
    *last = revision;
}

async fn full_cycle(case: &KindCase) {
    let k = case.name;
    let server = TestServer::start().await;
    let fixture = Fixture::build(&server, case.parents).await;
    let api = Api::new(&server, case, &fixture);
    let spec = api.spec();
    let changed_spec = api.changed_spec();
    let mut last_revision = 0;

    // --- create: server-owned fields are filled in, client-sent ones ignored ---
    let name = format!(" My  First {k}_v2! ");
    let slug = format!("my-first-{}v2", k.to_lowercase());
    let mut forged_status = json!({
        "audit": {
            "specAudit": {
                "createdBy": { "id": "mallory" },
                "createdAt": "2000-01-01T00:00:00Z",
                "event": "forged"
            },
            "statusAudit": { "createdBy": { "id": "mallory" }, "event": "forged" }
        }
    });
    merge(&mut forged_status, &case.forged_status);
    let forged_id = format!("{}-01aaaaaaaaaaaaaaaaaaaaaaaa", case.prefix);
    let request = json!({
        "apiVersion": API_VERSION,
        "kind": k,
        "metadata": { "name": name, "id": forged_id },
        "spec": spec,
        "status": forged_status,
    });
    let created = api
        .create(&request)
        .await
        .unwrap_or_else(|s| panic!("{k}: create failed: {s:?}"));
    check_created(case, &created, Some(&name), Some(&slug));
    let id = id_of(&created);
    assert_ne!(
        id, forged_id,
        "{k}: a client-sent id must be ignored on create"
    );
    // Stored as sent, except the parent fields the server derives (case.derived).
    assert_spec(case, &created, &spec, "create");
    if let Some(fields) = case.forged_status.as_object() {
        for (field, forged) in fields {
            assert_ne!(
                &created["status"][field], forged,
                "{k}: status.{field} sent on create must be discarded"
            );
        }
    }
    grows(case, &mut last_revision, &created, "create");
    let created_revision = revision_of(&created);
    check_lifecycle_created(&api, &created).await;

    // --- get returns exactly what create returned; the data column is the same JSON ---
    let got = api
        .get(&id)
        .await
        .unwrap_or_else(|s| panic!("{k}: get failed: {s:?}"));
    assert_eq!(got, created, "{k}: get must return what create returned");
    assert_eq!(
        server.stored_json(&id),
        got,
        "{k}: data column must equal get"
    );
    // That get was served from the cached encoding; without it, a get decodes `data` and must
    // return the same (and lists below then mix both kinds of rows).
    assert!(
        server.drop_cached_encoding(&id),
        "{k}: create must store the encoding reads serve"
    );
    let decoded = api
        .get(&id)
        .await
        .unwrap_or_else(|s| panic!("{k}: get without the cached encoding failed: {s:?}"));
    assert_eq!(
        decoded, got,
        "{k}: a get decoded from data must equal the cached one"
    );

    // --- getByReference ---
    if case.has(Rpc::GetByReference) {
        for reference in [
            json!({ "slug": slug }),
            json!({ "slug": slug, "org": "local", "kind": case.kind_enum }),
        ] {
            let found = api
                .get_by_reference(&reference)
                .await
                .unwrap_or_else(|s| panic!("{k}: getByReference {reference} failed: {s:?}"));
            assert_eq!(found, got, "{k}: getByReference {reference}");
        }
        let missing = api
            .get_by_reference(&json!({ "slug": "no-such-slug" }))
            .await;
        assert_not_found(
            case,
            missing,
            "no-such-slug",
            "getByReference of a missing slug",
        );
    }

    // --- update ---
    let mut current = got.clone();
    if case.has(Rpc::Update) {
        // Sent back with its current revision (the expected one): accepted.
        let mut request = patched(
            &current,
            &json!({ "status": { "audit": { "statusAudit": { "event": "forged" } } } }),
        );
        // A client sends back the fields the server derived on create (an execution's
        // session or workflow), as it read them.
        let changed = with_derived(case, &changed_spec, &current);
        request["spec"] = changed.clone();
        let updated = api
            .update(&request)
            .await
            .unwrap_or_else(|s| panic!("{k}: update failed: {s:?}"));
        assert_eq!(id_of(&updated), id, "{k}: update keeps the id");
        assert_eq!(updated["spec"], changed, "{k}: update replaces spec");
        assert_eq!(
            updated["metadata"]["slug"], slug,
            "{k}: update keeps the slug"
        );
        assert_eq!(
            updated["metadata"]["org"], "local",
            "{k}: update keeps the org"
        );
        grows(case, &mut last_revision, &updated, "update");
        // Status is kept: only the spec audit records the update.
        let strip_spec_audit = |resource: &Value| {
            let mut status = resource["status"].clone();
            if let Some(audit) = status.get_mut("audit").and_then(Value::as_object_mut) {
                audit.remove("specAudit");
            }
            status
        };
        assert_eq!(
            strip_spec_audit(&updated),
            strip_spec_audit(&current),
            "{k}: update must keep status (a status sent with update is ignored)"
        );
        let before = &current["status"]["audit"]["specAudit"];
        let after = &updated["status"]["audit"]["specAudit"];
        assert_eq!(
            after["createdAt"], before["createdAt"],
            "{k}: createdAt kept"
        );
        assert_eq!(
            after["createdBy"], before["createdBy"],
            "{k}: createdBy kept"
        );
        assert_eq!(after["updatedBy"]["id"], "local", "{k}: updatedBy");
        assert_eq!(
            after["event"], "updated",
            "{k}: spec audit event after update"
        );
        assert!(
            instant(&after["updatedAt"], "updatedAt") >= instant(&before["updatedAt"], "updatedAt"),
            "{k}: updatedAt must not go back"
        );
        let got = api.get(&id).await.expect("get after update");
        assert_eq!(
            got, updated,
            "{k}: get after update returns the update's result"
        );
        assert_eq!(
            server.stored_json(&id),
            got,
            "{k}: data column after update"
        );

        // A stale expected revision is refused and changes nothing.
        let mut stale = updated.clone();
        stale["spec"] = with_derived(case, &spec, &current);
        stale["metadata"]["revision"] = json!(created_revision.to_string());
        let result = api.update(&stale).await;
        assert_aborted(
            case,
            result,
            revision_of(&updated),
            "update with a stale revision",
        );
        assert_eq!(
            api.get(&id).await.expect("get"),
            updated,
            "{k}: ABORTED changed nothing"
        );

        // An update that changes nothing returns the stored resource, same revision.
        let same = api
            .update(&updated)
            .await
            .unwrap_or_else(|s| panic!("{k}: no-op update failed: {s:?}"));
        assert_eq!(
            same, updated,
            "{k}: a no-op update returns the stored resource"
        );
        assert_eq!(
            api.get(&id).await.expect("get"),
            updated,
            "{k}: no-op stored nothing"
        );

        // Without an expected revision (0 = don't check) an update goes through.
        let mut unchecked = updated.clone();
        let first_spec = with_derived(case, &spec, &current);
        unchecked["spec"] = first_spec.clone();
        unchecked["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("revision");
        let back = api
            .update(&unchecked)
            .await
            .unwrap_or_else(|s| panic!("{k}: update without revision failed: {s:?}"));
        assert_eq!(back["spec"], first_spec, "{k}: spec back to the first one");
        assert_eq!(id_of(&back), id, "{k}: same id");
        grows(case, &mut last_revision, &back, "update without revision");

        // Missing id; unknown id.
        let mut no_id = back.clone();
        no_id["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("id");
        assert_invalid(
            case,
            api.update(&no_id).await,
            "metadata.id",
            "update without id",
        );
        let ghost = format!("{}-00000000000000000000000000", case.prefix);
        let mut unknown = back.clone();
        unknown["metadata"]["id"] = json!(ghost);
        unknown["metadata"]["slug"] = json!("ghost");
        unknown["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("revision");
        assert_not_found(
            case,
            api.update(&unknown).await,
            &ghost,
            "update of a missing id",
        );
        current = back;
    }

    // --- apply: create-or-update by the slug derived from the name ---
    let mut alive = vec![id.clone()];
    if case.has(Rpc::Apply) {
        let apply_name = format!("Applied {k}");
        let apply_slug = format!("applied-{}", k.to_lowercase());
        let first = api
            .apply(&api.request(Some(&apply_name), &spec))
            .await
            .unwrap_or_else(|s| panic!("{k}: first apply failed: {s:?}"));
        check_created(case, &first, Some(&apply_name), Some(&apply_slug));
        assert_spec(case, &first, &spec, "first apply");
        grows(case, &mut last_revision, &first, "first apply");
        check_lifecycle_created(&api, &first).await;
        let applied_id = id_of(&first);
        assert_ne!(
            applied_id, id,
            "{k}: apply of a new name creates a new resource"
        );
        assert_eq!(
            api.get(&applied_id).await.expect("get"),
            first,
            "{k}: get after apply"
        );

        let changed = with_derived(case, &changed_spec, &first);
        let second = api
            .apply(&api.request(Some(&apply_name), &changed))
            .await
            .unwrap_or_else(|s| panic!("{k}: second apply failed: {s:?}"));
        assert_eq!(
            id_of(&second),
            applied_id,
            "{k}: second apply updates the same id"
        );
        assert_eq!(second["spec"], changed, "{k}: second apply changes spec");
        assert_eq!(
            second["status"]["audit"]["specAudit"]["createdAt"],
            first["status"]["audit"]["specAudit"]["createdAt"],
            "{k}: second apply keeps createdAt"
        );
        assert_eq!(
            second["status"]["audit"]["specAudit"]["event"], "updated",
            "{k}: second apply is an update"
        );
        grows(case, &mut last_revision, &second, "second apply");
        assert_eq!(api.get(&applied_id).await.expect("get"), second, "{k}: get");
        assert_eq!(
            server.stored_json(&applied_id),
            second,
            "{k}: data after apply"
        );

        // Applying the same thing again changes nothing.
        let third = api
            .apply(&api.request(Some(&apply_name), &changed))
            .await
            .unwrap_or_else(|s| panic!("{k}: third apply failed: {s:?}"));
        assert_eq!(
            third, second,
            "{k}: an unchanged apply returns the stored resource"
        );

        // A stale expected revision is refused.
        let mut stale = api.request(Some(&apply_name), &spec);
        stale["metadata"]["revision"] = json!(revision_of(&first).to_string());
        let result = api.apply(&stale).await;
        assert_aborted(
            case,
            result,
            revision_of(&second),
            "apply with a stale revision",
        );

        if case.has(Rpc::GetByReference) {
            let found = api
                .get_by_reference(&json!({ "slug": apply_slug }))
                .await
                .expect("getByReference of applied");
            assert_eq!(
                found, second,
                "{k}: getByReference finds the applied resource"
            );
        }
        alive.push(applied_id);
    }

    // --- list: paging over at least 5 resources, ascending id = creation order ---
    for i in 0..5 {
        // Unnamed kinds get slug = id; named kinds need a name.
        let name = case.named().then(|| format!("List {k} {i}"));
        let made = api
            .create(&api.request(name.as_deref(), &spec))
            .await
            .unwrap_or_else(|s| panic!("{k}: create #{i} for list failed: {s:?}"));
        let slug = name
            .as_ref()
            .map(|_| format!("list-{}-{i}", k.to_lowercase()));
        check_created(case, &made, name.as_deref(), slug.as_deref());
        grows(case, &mut last_revision, &made, "create for list");
        check_lifecycle_created(&api, &made).await;
        alive.push(id_of(&made));
    }
    let mut sorted = alive.clone();
    sorted.sort();
    assert_eq!(sorted, alive, "{k}: ids must ascend in creation order");
    // A resource of another org must not show up.
    let other = api.as_org(OTHER_ORG);
    let foreign = other
        .create(&other.request(Some(&format!("Foreign {k}")), &case.spec))
        .await
        .unwrap_or_else(|s| panic!("{k}: create in {OTHER_ORG} failed: {s:?}"));
    let foreign_id = id_of(&foreign);
    assert_eq!(
        foreign["metadata"]["org"], OTHER_ORG,
        "{k}: org from the caller"
    );
    check_lifecycle_created(&other, &foreign).await;
    assert_not_found(
        case,
        api.get(&foreign_id).await,
        &foreign_id,
        "get of another org's id",
    );
    assert_eq!(
        other.get(&foreign_id).await.expect("get in its own org"),
        foreign,
        "{k}: the other org sees its own resource"
    );

    // The fixture's resources of this kind (an Agent's default instance) were made first.
    let listed = |alive: &[String]| [api.preexisting(), alive.to_vec()].concat();
    if case.has(Rpc::List) {
        let (ids, pages) = api.list_all(2).await;
        assert_eq!(
            ids,
            listed(&alive),
            "{k}: list (page_size 2) = this org's ids ascending"
        );
        let n = ids.len();
        assert_eq!(
            pages.len(),
            n.div_ceil(2),
            "{k}: pages of 2 over {n}: {pages:?}"
        );
        let (ids, pages) = api.list_all(0).await;
        assert_eq!(
            ids,
            listed(&alive),
            "{k}: page_size 0 lists everything (default 100)"
        );
        assert_eq!(pages, vec![n], "{k}: page_size 0 → one page");
        let (ids, _) = other.list_all(2).await;
        assert_eq!(
            ids,
            [other.preexisting(), vec![foreign_id.clone()]].concat(),
            "{k}: the other org lists only its own"
        );
        // Items are the same resources get returns.
        let page = api.list(0, "").await.expect("list");
        for item in items_of(case, &page) {
            let got = api.get(&id_of(&item)).await.expect("get listed");
            assert_eq!(item, got, "{k}: a listed item equals get");
        }
    }

    // --- delete ---
    let current_revision = revision_of(&current);
    let stale = if case.has(Rpc::Update) {
        created_revision
    } else {
        current_revision + 1000
    };
    let result = api.delete(&id, stale).await;
    assert_aborted(
        case,
        result,
        current_revision,
        "delete with a stale expected revision",
    );
    assert!(api.row_exists(&id), "{k}: ABORTED delete removed the row");
    refuse_delete_while_referred(&api, &current).await;
    let cascade = cascade_of(&api, &current, alive.get(1).map(String::as_str)).await;
    let deleted = api
        .delete(&id, current_revision)
        .await
        .unwrap_or_else(|s| panic!("{k}: delete failed: {s:?}"));
    assert_eq!(deleted, current, "{k}: delete returns the deleted resource");
    assert!(!api.row_exists(&id), "{k}: the row is gone after delete");
    check_cascade(&api, &cascade, "delete").await;
    assert_not_found(case, api.get(&id).await, &id, "get after delete");
    assert_not_found(case, api.delete(&id, 0).await, &id, "delete after delete");
    if case.has(Rpc::GetByReference) {
        let result = api.get_by_reference(&json!({ "slug": slug })).await;
        assert_not_found(case, result, &slug, "getByReference after delete");
    }
    if case.has(Rpc::List) {
        let (ids, _) = api.list_all(2).await;
        assert_eq!(
            ids,
            listed(&alive[1..]),
            "{k}: the deleted resource left the list"
        );
    }
    // Another org cannot delete ours, nor we theirs.
    let theirs = api.delete(&foreign_id, 0).await;
    assert_not_found(case, theirs, &foreign_id, "delete of another org's id");
    assert!(
        api.row_exists(&foreign_id),
        "{k}: another org's resource survived"
    );
    // The slug is free again.
    let again = api
        .create(&api.request(Some(&name), &spec))
        .await
        .unwrap_or_else(|s| panic!("{k}: re-create after delete failed: {s:?}"));
    check_lifecycle_created(&api, &again).await;
    assert_eq!(
        slug_of(&again),
        slug,
        "{k}: the slug can be reused after delete"
    );
    assert_ne!(
        id_of(&again),
        id,
        "{k}: a re-created resource gets a new id"
    );
    grows(case, &mut last_revision, &again, "create after delete");
    // Zero = don't check the revision.
    let cascade = cascade_of(&api, &again, None).await;
    let gone = api
        .delete(&id_of(&again), 0)
        .await
        .unwrap_or_else(|s| panic!("{k}: delete without expected revision failed: {s:?}"));
    assert_eq!(gone, again, "{k}: delete(expected 0) returns the resource");
    assert!(!api.row_exists(&id_of(&again)), "{k}: row gone");
    check_cascade(&api, &cascade, "delete without expected revision").await;

    lifecycle_scenarios(&api).await;
}

// ---------------------------------------------------------------------------------------------
// Lifecycle: what the server does beyond the generic verbs
// ---------------------------------------------------------------------------------------------

/// What the server derives when it creates a resource from the table's spec, checked on
/// `created` (made through create or apply by `api`'s caller).
async fn check_lifecycle_created(api: &Api<'_>, created: &Value) {
    let k = api.case.name;
    let org = api.org_name();
    let fixture = api.fixture;
    let id = id_of(created);
    match api.case.lifecycle {
        Lifecycle::None | Lifecycle::ExecutionContext => {}
        Lifecycle::DefaultInstance {
            instance,
            parent_key,
        } => {
            let instance_case = crate::case(instance);
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
            let sessions_case = crate::case("Session");
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
async fn refuse_delete_while_referred(api: &Api<'_>, parent: &Value) {
    let Lifecycle::DefaultInstance {
        instance,
        parent_key,
    } = api.case.lifecycle
    else {
        return;
    };
    let k = api.case.name;
    let id = id_of(parent);
    let instance_case = crate::case(instance);
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
struct Cascade {
    gone: Vec<(&'static str, String)>,
    kept: Vec<(&'static str, String)>,
}

/// What deleting `resource` must take with it: an Agent's or Workflow's default instance, an
/// execution's ExecutionContexts (made here). `sibling` is another resource of the kind whose
/// dependents must stay.
async fn cascade_of(api: &Api<'_>, resource: &Value, sibling: Option<&str>) -> Cascade {
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
    let contexts_case = crate::case("ExecutionContext");
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

async fn check_cascade(api: &Api<'_>, cascade: &Cascade, what: &str) {
    let k = api.case.name;
    for (kind, id) in &cascade.gone {
        assert!(
            !api.row_exists(id),
            "{k}: {what}: {kind} {id} must be deleted with it"
        );
        let kind_case = crate::case(kind);
        let result = api.of(&kind_case).get(id).await;
        assert_not_found(&kind_case, result, id, &format!("{k}: {what}: get"));
    }
    for (kind, id) in &cascade.kept {
        let kind_case = crate::case(kind);
        assert!(
            api.of(&kind_case).get(id).await.is_ok(),
            "{k}: {what}: {kind} {id} of another resource must survive"
        );
    }
}

/// The kind's other ways to be created, and the cascades the cycle does not reach.
async fn lifecycle_scenarios(api: &Api<'_>) {
    let k = api.case.name;
    let org = api.org_name();
    let fixture = api.fixture;
    match api.case.lifecycle {
        Lifecycle::None | Lifecycle::DefaultInstance { .. } => {}
        Lifecycle::AgentExecution => {
            let sessions_case = crate::case("Session");
            let sessions = api.of(&sessions_case);
            let before = sessions.rows();
            // In an existing session: no new one, and the agent is the session's.
            let made = api
                .create(&api.request(
                    None,
                    &json!({ "message": "go on", "sessionId": "{session}" }),
                ))
                .await
                .unwrap_or_else(|s| panic!("{k}: create in a session failed: {s:?}"));
            assert_eq!(
                spec_str(&made, "sessionId"),
                fixture.id(org, "session"),
                "{k}: runs in the session named"
            );
            assert_eq!(
                spec_str(&made, "agentId"),
                fixture.id(org, "agent"),
                "{k}: agent_id filled in from the session"
            );
            assert_eq!(made["status"]["phase"], "EXECUTION_PENDING", "{k}: pending");
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
            let made = api
                .create(&api.request(
                    None,
                    &json!({ "workflowId": "{workflow}", "triggerMessage": "by workflow" }),
                ))
                .await
                .unwrap_or_else(|s| panic!("{k}: create with a workflow failed: {s:?}"));
            assert_eq!(
                spec_str(&made, "workflowInstanceId"),
                fixture.id(org, "workflowInstance"),
                "{k}: the workflow's default instance"
            );
            assert_eq!(
                spec_str(&made, "workflowId"),
                fixture.id(org, "workflow"),
                "{k}: workflow_id kept"
            );
            assert_eq!(made["status"]["phase"], "EXECUTION_PENDING", "{k}: pending");
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
            let workflow_executions = crate::case("WorkflowExecution");
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
            let agent_executions = crate::case("AgentExecution");
            api.of(&agent_executions)
                .delete(fixture.id(org, "agentExecution"), 0)
                .await
                .unwrap_or_else(|s| panic!("{k}: delete of the agent execution failed: {s:?}"));
            assert_eq!(api.rows_in(org), 0, "{k}: deleted with their execution");
            assert_eq!(api.rows_in(OTHER_ORG), others, "{k}: the other org's stay");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Negative checks
// ---------------------------------------------------------------------------------------------

async fn rejects_invalid(case: &KindCase) {
    let k = case.name;
    let server = TestServer::start().await;
    let fixture = Fixture::build(&server, case.parents).await;
    let api = Api::new(&server, case, &fixture);
    let valid = api.request(Some(&format!("Invalid {k}")), &case.spec);

    let other_kind = if k == "Agent" { "Workflow" } else { "Agent" };
    let mut patches: Vec<(Value, &str, String)> = case
        .invalid
        .iter()
        .map(|(patch, field)| (patch.clone(), *field, format!("rule-breaking {patch}")))
        .collect();
    patches.extend([
        (
            json!({ "apiVersion": "agentic.stigmer.ai/v2" }),
            "apiVersion",
            "wrong apiVersion".to_string(),
        ),
        (
            json!({ "kind": other_kind }),
            "kind",
            format!("kind {other_kind}"),
        ),
        (
            json!({ "metadata": { "slug": "Not_A_Slug" } }),
            "metadata.slug",
            "invalid slug".to_string(),
        ),
    ]);
    if case.named() {
        patches.push((
            json!({ "metadata": { "name": null } }),
            "metadata.name",
            "no name or slug".to_string(),
        ));
        patches.push((
            json!({ "metadata": { "name": "!!! ???" } }),
            "metadata.name",
            "a name without letters or digits".to_string(),
        ));
    }
    patches.push((
        json!({ "metadata": { "name": "a".repeat(64) } }),
        "metadata.name",
        "a name whose slug is over 63 characters".to_string(),
    ));
    for (patch, field, what) in &patches {
        let request = patched(&valid, patch);
        assert_invalid(
            case,
            api.create(&request).await,
            field,
            &format!("create, {what}"),
        );
        if case.has(Rpc::Apply) {
            assert_invalid(
                case,
                api.apply(&request).await,
                field,
                &format!("apply, {what}"),
            );
        }
    }
    // Parents and references that do not exist (in this org): the exact violation.
    for refusal in &case.refusals {
        let request = patched(&valid, &api.resolve(&refusal.patch));
        let description = refusal
            .description
            .as_ref()
            .map(|d| fixture.resolve_text(d, "local"));
        let what = format!("refused {}", refusal.patch);
        let result = api.create(&request).await;
        assert_refused(
            case,
            result,
            refusal.field,
            description.as_deref(),
            &format!("create, {what}"),
        );
        if case.has(Rpc::Apply) {
            let result = api.apply(&request).await;
            assert_refused(
                case,
                result,
                refusal.field,
                description.as_deref(),
                &format!("apply, {what}"),
            );
        }
    }
    assert_eq!(
        api.rows(),
        0,
        "{k}: nothing may be stored by rejected writes"
    );
    assert_eq!(
        api.all_rows(),
        0,
        "{k}: rejected writes store nothing of another kind either (default instance, session)"
    );

    // The valid request itself is accepted (so the rejections above were about the patch).
    let created = api
        .create(&valid)
        .await
        .unwrap_or_else(|s| panic!("{k}: valid create failed: {s:?}"));

    if !case.named() {
        // Kinds never addressed by reference accept a resource without a name: slug = id.
        let unnamed = api
            .create(&api.request(None, &case.spec))
            .await
            .unwrap_or_else(|s| panic!("{k}: unnamed create failed: {s:?}"));
        check_created(case, &unnamed, None, None);
        // apply finds its target by the name's slug, so it needs one even here.
        if case.has(Rpc::Apply) {
            let result = api.apply(&api.request(None, &case.spec)).await;
            assert_invalid(case, result, "metadata.name", "apply without a name");
        }
    }
    // A slug alone is enough, and a given slug wins over the name.
    let slug_only = patched(
        &api.request(None, &case.spec),
        &json!({ "metadata": { "slug": "only-a-slug" } }),
    );
    let created_slug_only = api
        .create(&slug_only)
        .await
        .unwrap_or_else(|s| panic!("{k}: create with only a slug failed: {s:?}"));
    check_created(case, &created_slug_only, None, Some("only-a-slug"));
    let both = patched(
        &api.request(Some("Some Name"), &case.spec),
        &json!({ "metadata": { "slug": "chosen-slug" } }),
    );
    let created_both = api
        .create(&both)
        .await
        .unwrap_or_else(|s| panic!("{k}: create with name and slug failed: {s:?}"));
    check_created(case, &created_both, Some("Some Name"), Some("chosen-slug"));

    if case.has(Rpc::Update) {
        for (patch, field, what) in &patches {
            if *field == "metadata.name" {
                continue; // update keeps the stored slug; a name is not needed there
            }
            let request = patched(&created, patch);
            assert_invalid(
                case,
                api.update(&request).await,
                field,
                &format!("update, {what}"),
            );
        }
        for refusal in case.refusals.iter().filter(|r| r.on_update) {
            let request = patched(&created, &api.resolve(&refusal.patch));
            let description = refusal
                .description
                .as_ref()
                .map(|d| fixture.resolve_text(d, "local"));
            let result = api.update(&request).await;
            assert_refused(
                case,
                result,
                refusal.field,
                description.as_deref(),
                &format!("update, refused {}", refusal.patch),
            );
        }
        assert_eq!(
            api.get(&id_of(&created)).await.expect("get"),
            created,
            "{k}: rejected updates changed nothing"
        );
    }

    // Id and list requests are checked too.
    assert_invalid(case, api.get("").await, "value", "get with an empty id");
    if case.has(Rpc::GetByReference) {
        let result = api.get_by_reference(&json!({})).await;
        assert_invalid(case, result, "slug", "getByReference without slug");
        let wrong = if k == "Agent" { "workflow" } else { "agent" };
        let result = api
            .get_by_reference(&json!({ "slug": slug_of(&created), "kind": wrong }))
            .await;
        assert_invalid(case, result, "kind", "getByReference with another kind");
    }
    if case.has(Rpc::List) {
        assert_invalid(case, api.list(1001, "").await, "pageSize", "page_size 1001");
        assert_invalid(case, api.list(-1, "").await, "pageSize", "page_size -1");
        let result = api.list(2, "not-a-token!").await;
        assert_invalid(case, result, "pageToken", "a garbage page_token");
        // A token of the same listing but another org is not accepted either.
        let other = api.as_org(OTHER_ORG);
        for i in 0..3 {
            other
                .create(&other.request(Some(&format!("Other {k} {i}")), &case.spec))
                .await
                .unwrap_or_else(|s| panic!("{k}: create in {OTHER_ORG} failed: {s:?}"));
        }
        let page = other.list(1, "").await.expect("other org list");
        let token = page["nextPageToken"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            !token.is_empty(),
            "{k}: 3 resources in pages of 1 must continue"
        );
        let result = api.list(1, &token).await;
        assert_invalid(case, result, "pageToken", "another org's page_token");
        assert!(
            api.list(1000, "").await.is_ok(),
            "{k}: page_size 1000 is allowed"
        );
    }
}

/// Skill resources only come from push (tests/skills.rs covers it): an archive without
/// SKILL.md is refused on its artifact field, and stores nothing.
async fn an_empty_push_is_refused(case: &KindCase) {
    let server = TestServer::start().await;
    let path = format!(
        "/ai.stigmer.agentic.{}.v1.SkillCommandController/push",
        case.package
    );
    let result = server
        .call_json(
            &path,
            r#"{"name":"my-skill","artifact":"UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="}"#,
        )
        .await;
    let status = expect_code(result, Code::InvalidArgument);
    assert_eq!(violated_fields(&status), vec!["artifact".to_string()]);
    assert!(
        status.message().contains("SKILL.md"),
        "{}",
        status.message()
    );
}

async fn duplicate_slug(case: &KindCase) {
    let k = case.name;
    let server = TestServer::start().await;
    let fixture = Fixture::build(&server, case.parents).await;
    let api = Api::new(&server, case, &fixture);
    let name = format!("Dup {k}");
    let slug = format!("dup-{}", k.to_lowercase());
    let first = api
        .create(&api.request(Some(&name), &case.spec))
        .await
        .unwrap_or_else(|s| panic!("{k}: create failed: {s:?}"));
    // With its default instance or its session, when the kind makes one.
    let stored = api.all_rows();
    assert_eq!(slug_of(&first), slug, "{k}: slug");

    let same_slug = [
        api.request(Some(&name), &case.changed_spec),
        api.request(Some(&format!("  dup   {}  ", k.to_uppercase())), &case.spec),
        patched(
            &api.request(Some("Something Else"), &case.spec),
            &json!({ "metadata": { "slug": slug } }),
        ),
    ];
    for request in &same_slug {
        let result = api.create(request).await;
        let status = expect_code(result, Code::AlreadyExists);
        let info = status
            .get_details_resource_info()
            .unwrap_or_else(|| panic!("{k}: ALREADY_EXISTS without ResourceInfo: {status:?}"));
        assert_eq!(info.resource_type, k, "{k}: ResourceInfo.resource_type");
        assert_eq!(info.resource_name, slug, "{k}: ResourceInfo.resource_name");
    }
    assert_eq!(api.rows(), 1, "{k}: duplicates stored nothing");
    assert_eq!(
        api.all_rows(),
        stored,
        "{k}: a refused create leaves nothing of another kind behind (default instance, session)"
    );
    assert_eq!(
        api.get(&id_of(&first)).await.expect("get"),
        first,
        "{k}: the first resource is unchanged"
    );

    // The same slug in another org is fine.
    let other = api.as_org(OTHER_ORG);
    let foreign = other
        .create(&other.request(Some(&name), &case.spec))
        .await
        .unwrap_or_else(|s| panic!("{k}: same slug in another org failed: {s:?}"));
    assert_eq!(slug_of(&foreign), slug, "{k}: same slug in {OTHER_ORG}");
    assert_ne!(id_of(&foreign), id_of(&first), "{k}: a different resource");

    // Renaming another resource onto the taken slug is refused as well.
    if case.has(Rpc::Update) {
        let second = api
            .create(&api.request(Some(&format!("Second {k}")), &case.spec))
            .await
            .unwrap_or_else(|s| panic!("{k}: second create failed: {s:?}"));
        let onto = patched(&second, &json!({ "metadata": { "slug": slug } }));
        expect_code(api.update(&onto).await, Code::AlreadyExists);
        assert_eq!(
            api.get(&id_of(&second)).await.expect("get"),
            second,
            "{k}: the refused rename changed nothing"
        );
    }
}

/// Skill is pushed, not created (push arrives later): only the read paths are there.
async fn skill_reads(case: &KindCase) {
    let k = case.name;
    let server = TestServer::start().await;
    let fixture = Fixture::empty();
    let api = Api::new(&server, case, &fixture);
    let ghost = format!("{}-00000000000000000000000000", case.prefix);
    assert_not_found(
        case,
        api.get(&ghost).await,
        &ghost,
        "get of a missing skill",
    );
    let result = api
        .get_by_reference(&json!({ "slug": "no-such-skill" }))
        .await;
    assert_not_found(
        case,
        result,
        "no-such-skill",
        "getByReference of a missing skill",
    );
    assert_not_found(
        case,
        api.delete(&ghost, 0).await,
        &ghost,
        "delete of a missing skill",
    );
    let page = api.list(0, "").await.expect("list skills");
    assert!(
        items_of(case, &page).is_empty(),
        "{k}: no skills yet: {page}"
    );
    assert_eq!(
        page["nextPageToken"].as_str().unwrap_or_default(),
        "",
        "{k}: an empty list has no next page"
    );
}

/// Skill's read paths check their requests like every other kind's.
async fn skill_rejects_invalid_requests(case: &KindCase) {
    let server = TestServer::start().await;
    let fixture = Fixture::empty();
    let api = Api::new(&server, case, &fixture);
    assert_invalid(case, api.list(1001, "").await, "pageSize", "page_size 1001");
    assert_invalid(
        case,
        api.list(2, "garbage").await,
        "pageToken",
        "garbage token",
    );
    assert_invalid(case, api.get("").await, "value", "get with an empty id");
    let result = api.get_by_reference(&json!({})).await;
    assert_invalid(case, result, "slug", "getByReference without slug");
    let result = api
        .get_by_reference(&json!({ "slug": "x", "kind": "agent" }))
        .await;
    assert_invalid(case, result, "kind", "getByReference with another kind");
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

macro_rules! per_kind {
    ($($module:ident => $kind:literal),* $(,)?) => {
        $(
            mod $module {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn full_cycle() {
                    let case = case($kind);
                    if case.has(Rpc::Create) {
                        super::full_cycle(&case).await;
                    } else {
                        skill_reads(&case).await;
                    }
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn invalid_resources_are_rejected() {
                    let case = case($kind);
                    if case.has(Rpc::Create) {
                        rejects_invalid(&case).await;
                    } else {
                        skill_rejects_invalid_requests(&case).await;
                    }
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn a_taken_slug_or_an_empty_push_is_refused() {
                    let case = case($kind);
                    if case.has(Rpc::Create) {
                        duplicate_slug(&case).await;
                    } else {
                        an_empty_push_is_refused(&case).await;
                    }
                }
            }
        )*

        /// Every kind of the table has its tests.
        const TESTED: &[&str] = &[$($kind),*];
    };
}

per_kind! {
    agent => "Agent",
    agent_execution => "AgentExecution",
    session => "Session",
    skill => "Skill",
    mcp_server => "McpServer",
    agent_instance => "AgentInstance",
    workflow => "Workflow",
    workflow_instance => "WorkflowInstance",
    workflow_execution => "WorkflowExecution",
    environment => "Environment",
    execution_context => "ExecutionContext",
}

/// The table agrees with the protos: all eleven kinds, each with exactly the RPCs its
/// controllers have, the right list field, and valid JSON for its messages.
#[test]
fn the_table_matches_the_protos() {
    let pool = &*stigmer_api::DESCRIPTOR_POOL;
    let cases = cases();
    let names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), 11, "eleven kinds");
    assert_eq!(names, TESTED, "every kind of the table has a test module");
    let kind_enum = pool
        .get_enum_by_name("ai.stigmer.commons.apiresource.apiresourcekind.ApiResourceKind")
        .expect("ApiResourceKind");
    for case in &cases {
        let k = case.name;
        assert!(
            kind_enum.get_value_by_name(case.kind_enum).is_some(),
            "{k}: kind enum"
        );
        for rpc in Rpc::ALL {
            let service_name = case.service(rpc.is_command());
            let service = pool
                .get_service_by_name(&service_name)
                .unwrap_or_else(|| panic!("{k}: no service {service_name}"));
            let present = service.methods().any(|m| m.name() == rpc.method());
            assert_eq!(present, case.has(rpc), "{k}: has {}?", rpc.method());
        }
        for service in [case.service(true), case.service(false)] {
            let service = pool.get_service_by_name(&service).expect("service");
            assert!(
                service
                    .methods()
                    .any(|m| m.name() == "get" || m.name() == "delete")
            );
        }
        if case.has(Rpc::List) {
            let (_, output) = common::method_types(&case.query("list"));
            let field = output
                .get_field_by_name(case.list_field)
                .unwrap_or_else(|| panic!("{k}: list response has no {}", case.list_field));
            assert!(field.is_list(), "{k}: {} is repeated", case.list_field);
        }
        if case.has(Rpc::Create) {
            let (input, _) = common::method_types(&case.command("create"));
            for spec in [&case.spec, &case.changed_spec] {
                DynamicMessage::deserialize(input.clone(), case.request(Some("x"), spec))
                    .unwrap_or_else(|e| panic!("{k}: spec does not fit {}: {e}", input.name()));
            }
            // Unknown JSON names would be refused for the wrong reason.
            let valid = case.request(Some("x"), &case.spec);
            for refusal in &case.refusals {
                DynamicMessage::deserialize(input.clone(), patched(&valid, &refusal.patch))
                    .unwrap_or_else(|e| panic!("{k}: {} does not fit: {e}", refusal.patch));
            }
            let spec_type = input
                .get_field_by_name("spec")
                .and_then(|f| f.kind().as_message().cloned())
                .expect("spec message");
            for key in case.derived {
                assert!(
                    spec_type.fields().any(|f| f.json_name() == *key),
                    "{k}: derived field {key} is not in {}",
                    spec_type.name()
                );
            }
        }
    }
}

/// Slugs are unique per (org, kind), not across kinds: one name in every kind works, and
/// every listing shows only its own kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_slug_in_every_kind() {
    let server = TestServer::start().await;
    let all_parents = [
        Parent::Environment,
        Parent::Agent,
        Parent::Session,
        Parent::Workflow,
        Parent::AgentExecution,
        Parent::WorkflowExecution,
    ];
    let fixture = Fixture::build(&server, &all_parents).await;
    let cases = cases();
    let mut ids = Vec::new();
    // What the server created along with them (default instances, sessions): listed with
    // their kind, but under other slugs.
    let mut made_along: Vec<(&str, String)> = Vec::new();
    for case in cases.iter().filter(|c| c.has(Rpc::Create)) {
        let api = Api::new(&server, case, &fixture);
        let created = api
            .create(&api.request(Some("Shared Name"), &case.spec))
            .await
            .unwrap_or_else(|s| panic!("{}: create of a shared slug failed: {s:?}", case.name));
        assert_eq!(slug_of(&created), "shared-name", "{}", case.name);
        ids.push((case.name, id_of(&created)));
        match case.lifecycle {
            Lifecycle::DefaultInstance { instance, .. } => {
                made_along.push((instance, default_instance_of(&created)));
            }
            Lifecycle::AgentExecution => {
                made_along.push(("Session", spec_str(&created, "sessionId")));
            }
            _ => {}
        }
    }
    for case in &cases {
        let k = case.name;
        let api = Api::new(&server, case, &fixture);
        let own: Vec<String> = ids
            .iter()
            .filter(|(kind, _)| *kind == k)
            .map(|(_, id)| id.clone())
            .collect();
        if case.has(Rpc::List) {
            // The fixture's parents of this kind, ours, and those made along: nothing else.
            let mut expected: Vec<String> = api.preexisting();
            expected.extend(own.iter().cloned());
            expected.extend(
                made_along
                    .iter()
                    .filter(|(kind, _)| *kind == k)
                    .map(|(_, id)| id.clone()),
            );
            expected.sort();
            let (listed, _) = api.list_all(2).await;
            assert_eq!(listed, expected, "{k}: the list shows only this kind");
        }
        if case.has(Rpc::GetByReference) {
            let result = api
                .get_by_reference(&json!({ "slug": "shared-name" }))
                .await;
            match own.first() {
                Some(id) => {
                    let found = result.unwrap_or_else(|s| panic!("{k}: getByReference: {s:?}"));
                    assert_eq!(&id_of(&found), id, "{k}: getByReference finds its own kind");
                }
                None => assert_not_found(case, result, "shared-name", "no such kind yet"),
            }
        }
        // An id of another kind is not found through this kind's get.
        // Nor updated or deleted through it.
        for (kind, id) in ids
            .iter()
            .chain(made_along.iter())
            .filter(|(kind, _)| *kind != k)
        {
            let result = api.get(id).await;
            assert_not_found(case, result, id, &format!("get of a {kind} id"));
            if case.has(Rpc::Update) {
                let mut request = api.request(Some("Shared Name"), &case.spec);
                request["metadata"]["id"] = json!(id);
                let result = api.update(&request).await;
                assert_not_found(case, result, id, &format!("update of a {kind} id"));
            }
            let result = api.delete(id, 0).await;
            assert_not_found(case, result, id, &format!("delete of a {kind} id"));
        }
    }
}
