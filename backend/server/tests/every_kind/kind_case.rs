//! What one row of the table says about a kind, and the paths and requests that follow
//! from it.

use serde_json::{Value, json};

/// RPCs that some kinds have and others do not (every kind has get and delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    Create,
    Update,
    Apply,
    GetByReference,
    List,
}

impl Rpc {
    pub const ALL: [Rpc; 5] = [
        Rpc::Create,
        Rpc::Update,
        Rpc::Apply,
        Rpc::GetByReference,
        Rpc::List,
    ];

    pub fn method(self) -> &'static str {
        match self {
            Rpc::Create => "create",
            Rpc::Update => "update",
            Rpc::Apply => "apply",
            Rpc::GetByReference => "getByReference",
            Rpc::List => "list",
        }
    }

    pub fn is_command(self) -> bool {
        matches!(self, Rpc::Create | Rpc::Update | Rpc::Apply)
    }
}

pub struct KindCase {
    /// "Agent".
    pub name: &'static str,
    /// "agent" in `ai.stigmer.agentic.agent.v1`.
    pub package: &'static str,
    pub prefix: &'static str,
    /// The `ApiResourceKind` value name, as a reference's `kind` in proto3 JSON.
    pub kind_enum: &'static str,
    pub rpcs: &'static [Rpc],
    /// The repeated field of the list response (`items` or `entries`); "" without list.
    pub list_field: &'static str,
    /// `metadata.ownerScope` after create when the client leaves it unspecified.
    pub owner_scope: Option<&'static str>,
    /// A minimal spec that satisfies the kind's rules.
    pub spec: Value,
    /// Another valid spec, for update and the second apply.
    pub changed_spec: Value,
    /// Status fields (besides `audit`) a client might forge on create; all must be discarded.
    pub forged_status: Value,
    /// Patches over a valid create request that break one rule each, with the field path the
    /// BadRequest must name. A `null` in a patch removes that key.
    pub invalid: Vec<(Value, &'static str)>,
    /// Resources the specs above name (as `"{placeholder}"`), created before each test.
    pub parents: &'static [Parent],
    /// Spec fields (proto3 JSON names) the server fills in on create when the client leaves
    /// them out; their values are checked by the kind's `Lifecycle`.
    pub derived: &'static [&'static str],
    /// Specs naming resources that do not exist (in the caller's org): refused with exactly
    /// this violation.
    pub refusals: Vec<Refusal>,
    /// What the server does beyond the generic verbs for this kind.
    pub lifecycle: Lifecycle,
}

/// Parents a kind's specs name. Each brings its placeholders (see `Fixture::build_in`):
/// Agent → `{agent}` and its default instance `{agentInstance}`; Session → `{session}` on
/// `{agentInstance}`; Workflow → `{workflow}`, `{workflowInstance}`; Environment → slug "prod"
/// (`{environment}`); AgentExecution → `{agentExecution}` (on `{agent}`); WorkflowExecution →
/// `{workflowExecution}` (on `{workflowInstance}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parent {
    Environment,
    Agent,
    Session,
    Workflow,
    AgentExecution,
    WorkflowExecution,
}

/// A write the server must refuse because of other resources (a parent or a reference).
#[derive(Clone)]
pub struct Refusal {
    /// Merged over a valid create request (or over the created resource, for update).
    pub patch: Value,
    pub field: &'static str,
    /// The violation's exact description (placeholders substituted), or None to check only
    /// the field.
    pub description: Option<String>,
    /// Also refused by update (the kinds whose update re-checks its parent).
    pub on_update: bool,
}

impl Refusal {
    pub fn new(
        patch: Value,
        field: &'static str,
        description: Option<&str>,
        on_update: bool,
    ) -> Self {
        Self {
            patch,
            field,
            description: description.map(str::to_string),
            on_update,
        }
    }

    /// A parent that is missing from the caller's org ("local"): a made-up id, and then the
    /// same kind of parent but from the other org (placeholder `{other:<name>}`).
    pub fn missing_parent(
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
pub enum Lifecycle {
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
    pub fn has(&self, rpc: Rpc) -> bool {
        self.rpcs.contains(&rpc)
    }

    /// Kinds with getByReference are addressed by slug and so need a name or a slug.
    pub fn named(&self) -> bool {
        self.has(Rpc::GetByReference)
    }

    pub fn service(&self, command: bool) -> String {
        format!(
            "ai.stigmer.agentic.{}.v1.{}{}Controller",
            self.package,
            self.name,
            if command { "Command" } else { "Query" }
        )
    }

    pub fn command(&self, method: &str) -> String {
        format!("/{}/{method}", self.service(true))
    }

    pub fn query(&self, method: &str) -> String {
        format!("/{}/{method}", self.service(false))
    }

    /// A create/apply request without type fields (the server fills them in).
    pub fn request(&self, name: Option<&str>, spec: &Value) -> Value {
        let mut request = json!({ "metadata": {}, "spec": spec });
        if let Some(name) = name {
            request["metadata"]["name"] = json!(name);
        }
        request
    }
}
