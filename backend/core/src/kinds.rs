//! The kinds this server serves. Adding a kind = its .proto files + one line here.

/// What `metadata.owner_scope` becomes when a client leaves it unspecified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerScopeDefault {
    /// `organization`, for kinds whose rules allow it.
    Organization,
    /// Left unspecified: the kind's rules require it to stay so.
    Unspecified,
}

/// One served kind and its contract-specific settings.
#[derive(Debug, Clone, Copy)]
pub struct KindRegistration {
    /// The kind name as in `ApiResourceKindMeta.name` ("Agent").
    pub name: &'static str,
    pub owner_scope: OwnerScopeDefault,
}

const fn kind(name: &'static str) -> KindRegistration {
    KindRegistration {
        name,
        owner_scope: OwnerScopeDefault::Organization,
    }
}

const fn kind_without_owner_scope(name: &'static str) -> KindRegistration {
    KindRegistration {
        name,
        owner_scope: OwnerScopeDefault::Unspecified,
    }
}

/// Every kind of CONTRACT.md. The id prefix, message type, services and rules all come from
/// the .proto files; only what the protos cannot say lives here.
pub const KINDS: &[KindRegistration] = &[
    kind("Agent"),
    kind_without_owner_scope("AgentExecution"),
    kind("Session"),
    kind("Skill"),
    kind("McpServer"),
    kind("AgentInstance"),
    kind("Workflow"),
    kind("WorkflowInstance"),
    kind("WorkflowExecution"),
    kind("Environment"),
    kind_without_owner_scope("ExecutionContext"),
    // Identity kinds (group iam): kept out of every org, served by their own handlers.
    kind_without_owner_scope("IdentityAccount"),
    kind_without_owner_scope("ApiKey"),
    kind_without_owner_scope("IamPolicy"),
];

/// A list of one kind's resources that belong to one parent: the request field naming the
/// parent, and where that parent's id sits in the child's JSON.
#[derive(Debug, Clone, Copy)]
pub struct ListBy {
    pub kind: &'static str,
    pub method: &'static str,
    pub field: &'static str,
    /// Object keys from the document's root to the parent id.
    pub path: &'static [&'static str],
}

/// Every listBy*/getBy* RPC of CONTRACT.md. Sessions do not name their agent, so the server
/// labels each Session with it (see `relations::SESSION_AGENT_LABEL`).
pub const LIST_BY: &[ListBy] = &[
    ListBy {
        kind: "AgentExecution",
        method: "listBySession",
        field: "session_id",
        path: &["spec", "sessionId"],
    },
    ListBy {
        kind: "Session",
        method: "listByAgent",
        field: "agent_id",
        path: &["metadata", "labels", crate::relations::SESSION_AGENT_LABEL],
    },
    ListBy {
        kind: "AgentInstance",
        method: "getByAgent",
        field: "agent_id",
        path: &["spec", "agentId"],
    },
    ListBy {
        kind: "WorkflowInstance",
        method: "getByWorkflow",
        field: "workflow_id",
        path: &["spec", "workflowId"],
    },
    ListBy {
        kind: "WorkflowExecution",
        method: "listByWorkflow",
        field: "workflow_id",
        path: &["spec", "workflowId"],
    },
];
