//! How kinds relate to each other, as data: what a resource belongs to, what is made with it,
//! what is fixed once it exists, and what a delete takes along or is refused by. The server's
//! lifecycle code (`stigmer-grpc`'s `lifecycle.rs`) is generic over this table; adding a kind
//! with such relations is a row here plus tests. Every field named here is checked against the
//! kind's spec when the catalog is built, so a misspelt name stops the server from starting
//! instead of silently reading as "".

/// What happens to a resource when what it belongs to is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnParentDelete {
    /// It is deleted in the same transaction (however many there are).
    DeletedWithIt,
    /// The parent's delete is refused while it exists (a default instance excepted: that one
    /// is deleted with its parent).
    RefusesIt,
    /// It stays, pointing at nothing; what uses it later says so.
    Outlives,
}

/// The resource a kind belongs to, named by id in one of its spec fields.
#[derive(Debug, Clone, Copy)]
pub struct Parent {
    /// The spec field holding the parent's id ("agent_id").
    pub field: &'static str,
    /// The parent's kind; with several, the id's prefix tells which one it is.
    pub kinds: &'static [&'static str],
    pub on_delete: OnParentDelete,
    /// A label copied onto the child at creation: (label key, the parent's spec field whose
    /// value it takes), for lists by an ancestor the child does not name.
    pub label_from_parent: Option<(&'static str, &'static str)>,
}

/// Kind-specific behaviour that is code rather than data; the table says which kinds have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Starts PENDING, in the session named or a new one on the agent's default instance,
    /// with an ExecutionContext holding its runtime_env.
    StartAgentExecution,
    /// Starts PENDING on the instance named or the workflow's default one, with an
    /// ExecutionContext holding its runtime_env.
    StartWorkflowExecution,
    /// Rules of a workflow's tasks that field annotations cannot express.
    WorkflowSpecRules,
    /// Pushed artifacts no version refers to any more are removed with the skill.
    SkillArtifacts,
}

/// One kind's relations. Kinds without a row have none.
#[derive(Debug, Clone, Copy)]
pub struct Relations {
    pub kind: &'static str,
    pub parent: Option<Parent>,
    /// Spec fields, beyond the parent's, that cannot change after creation.
    pub fixed: &'static [&'static str],
    /// The kind of the instance created with this resource in one transaction, whose id goes
    /// in `status.default_instance_id`. The instance kind's parent names this kind.
    pub default_instance: Option<&'static str>,
    /// Reference fields whose target kind the protos leave open, and the kind they must name
    /// (a reference there may leave `kind` unset).
    pub reference_kinds: &'static [(&'static str, &'static str)],
    pub hooks: &'static [Hook],
}

impl Relations {
    /// A kind with no relations.
    pub const NONE: Relations = Relations::of("");

    const fn of(kind: &'static str) -> Self {
        Self {
            kind,
            parent: None,
            fixed: &[],
            default_instance: None,
            reference_kinds: &[],
            hooks: &[],
        }
    }

    pub fn has(&self, hook: Hook) -> bool {
        self.hooks.contains(&hook)
    }

    /// Every spec field fixed at creation: the parent's and the others.
    pub fn fixed_fields(&self) -> impl Iterator<Item = &'static str> {
        self.parent
            .map(|p| p.field)
            .into_iter()
            .chain(self.fixed.iter().copied())
    }

    /// The row of `kind`, or [`Relations::NONE`].
    pub fn of_kind(kind: &str) -> &'static Relations {
        RELATIONS
            .iter()
            .find(|row| row.kind == kind)
            .unwrap_or(&Relations::NONE)
    }
}

/// Where a parent records the id of the default instance made with it.
pub const DEFAULT_INSTANCE_FIELD: &str = "default_instance_id";

/// Label on every Session: the agent its instance belongs to, so that listByAgent can filter.
pub const SESSION_AGENT_LABEL: &str = "stigmer.ai/agent-id";

const EXECUTIONS: &[&str] = &["AgentExecution", "WorkflowExecution"];

/// The relations of CONTRACT.md's kinds.
pub const RELATIONS: &[Relations] = &[
    Relations {
        default_instance: Some("AgentInstance"),
        ..Relations::of("Agent")
    },
    Relations {
        parent: Some(Parent {
            field: "agent_id",
            kinds: &["Agent"],
            on_delete: OnParentDelete::RefusesIt,
            label_from_parent: None,
        }),
        ..Relations::of("AgentInstance")
    },
    Relations {
        parent: Some(Parent {
            field: "agent_instance_id",
            kinds: &["AgentInstance"],
            // A session's history stays readable after its instance is gone.
            on_delete: OnParentDelete::Outlives,
            label_from_parent: Some((SESSION_AGENT_LABEL, "agent_id")),
        }),
        ..Relations::of("Session")
    },
    Relations {
        fixed: &["session_id", "agent_id"],
        hooks: &[Hook::StartAgentExecution],
        ..Relations::of("AgentExecution")
    },
    Relations {
        default_instance: Some("WorkflowInstance"),
        hooks: &[Hook::WorkflowSpecRules],
        ..Relations::of("Workflow")
    },
    Relations {
        parent: Some(Parent {
            field: "workflow_id",
            kinds: &["Workflow"],
            on_delete: OnParentDelete::RefusesIt,
            label_from_parent: None,
        }),
        // Upstream gave `env_refs` no rule pinning its kind (environment_refs has one).
        reference_kinds: &[("env_refs", "Environment")],
        ..Relations::of("WorkflowInstance")
    },
    Relations {
        fixed: &["workflow_instance_id", "workflow_id"],
        hooks: &[Hook::StartWorkflowExecution],
        ..Relations::of("WorkflowExecution")
    },
    Relations {
        parent: Some(Parent {
            field: "execution_id",
            kinds: EXECUTIONS,
            on_delete: OnParentDelete::DeletedWithIt,
            label_from_parent: None,
        }),
        ..Relations::of("ExecutionContext")
    },
    Relations {
        hooks: &[Hook::SkillArtifacts],
        ..Relations::of("Skill")
    },
];

/// The kinds whose parent is `kind`, with their relation to it.
pub fn children_of(kind: &str) -> impl Iterator<Item = (&'static str, Parent)> + '_ {
    RELATIONS.iter().filter_map(move |row| {
        let parent = row.parent?;
        parent.kinds.contains(&kind).then_some((row.kind, parent))
    })
}

/// The kind whose default instance is of kind `instance`, if any.
pub fn default_instance_owner(instance: &str) -> Option<&'static str> {
    RELATIONS
        .iter()
        .find(|row| row.default_instance == Some(instance))
        .map(|row| row.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_at_most_one_row() {
        for (index, row) in RELATIONS.iter().enumerate() {
            assert!(
                RELATIONS[index + 1..]
                    .iter()
                    .all(|other| other.kind != row.kind),
                "{} has two rows",
                row.kind
            );
        }
    }

    #[test]
    fn a_default_instance_kind_names_its_owner_as_parent() {
        for row in RELATIONS {
            let Some(instance) = row.default_instance else {
                continue;
            };
            let parent = Relations::of_kind(instance)
                .parent
                .unwrap_or_else(|| panic!("{instance} has no parent"));
            assert_eq!(parent.kinds, [row.kind], "{instance}'s parent");
        }
    }
}
