//! What CONTRACT.md gives some kinds beyond the generic verbs: default instances created with
//! their parent, references that must point at existing resources, executions that start
//! PENDING with a session, and cascades on delete. Every extra write joins the same
//! transaction as the resource it belongs to.

use std::sync::Arc;
use std::time::SystemTime;

use prost_reflect::{DynamicMessage, Kind, Value};
use stigmer_store::{JsonFilter, JsonPath, ListQuery, Mutation, Scope};

use crate::catalog::KindInfo;
use crate::controller::{Controller, new_row};
use crate::error::{ApiError, FieldViolation};
use crate::fields::{child, child_mut, get_i32, get_str, set, set_str};
use crate::json::from_json;
use crate::resource::{Caller, meta, org_of, prepare_create};
use crate::validation::check;

/// Label set on every Session: the agent its instance belongs to, so listByAgent can filter.
pub(crate) const SESSION_AGENT_LABEL: &str = "stigmer.ai/agent-id";
/// `ExecutionPhase.EXECUTION_PENDING` in both execution packages.
pub(crate) const PHASE_PENDING: i32 = 1;
/// Children read per page when a cascade looks for them.
const CHILDREN_PAGE: usize = 1000;
const REFERENCE_TYPE: &str = "ai.stigmer.commons.apiresource.ApiResourceReference";

/// Reference fields whose target kind CONTRACT.md fixes but whose proto has no rule pinning it
/// (`environment_refs` and `skill_refs` carry CEL rules; upstream gave `env_refs` none).
/// `jit.rs` merges these references as Environments whatever kind they name, so a reference
/// there may leave `kind` unset and is checked as that kind; naming another kind is refused.
const UNPINNED_REFERENCE_KINDS: &[(&str, &str)] = &[("env_refs", "Environment")];

/// The kind every reference in field `field` must name, if the contract fixes one.
fn implied_kind(field: &str) -> Option<&'static str> {
    UNPINNED_REFERENCE_KINDS
        .iter()
        .find(|(name, _)| *name == field)
        .map(|(_, kind)| *kind)
}

/// Writes that go with a create, in the same transaction: `before` the resource (a new
/// session it runs in) and `after` it (its default instance, its execution context).
pub(crate) struct Related {
    pub before: Vec<Mutation>,
    pub after: Vec<Mutation>,
}

impl Controller {
    pub(crate) fn kind_named(&self, name: &str) -> Result<&Arc<KindInfo>, ApiError> {
        self.catalog
            .kind_by_name(name)
            .ok_or_else(|| ApiError::internal(format!("kind {name} is not served")))
    }

    /// The resource `id` of kind `kind` in `org`, if it exists.
    pub(crate) async fn find(
        &self,
        kind: &str,
        org: &str,
        id: &str,
    ) -> Result<Option<DynamicMessage>, ApiError> {
        if id.is_empty() {
            return Ok(None);
        }
        let info = self.kind_named(kind)?;
        match self
            .store
            .get(Scope::new(kind, org), id.to_string())
            .await?
        {
            Some(row) => Ok(Some(from_json(&info.message, &row.data)?)),
            None => Ok(None),
        }
    }

    /// Kind-specific checks and derived fields of a create, and the writes that go with it.
    pub(crate) async fn before_create(
        &self,
        kind: &KindInfo,
        caller: &Caller,
        resource: &mut DynamicMessage,
    ) -> Result<(Vec<FieldViolation>, Related), ApiError> {
        let org = org_of(resource, caller);
        let mut violations = self.missing_references(resource, &org).await?;
        violations.extend(self.kind_rules(kind, resource));
        let mut before = Vec::new();
        let mut after = Vec::new();
        // A parent whose own slug is refused gets no child: the create fails anyway, with the
        // parent's violation rather than a confusing one about the child.
        let parent_ok = crate::naming::is_valid_slug(&meta(resource).slug);
        match kind.name.as_str() {
            "Agent" if parent_ok => {
                after.push(self.default_instance(caller, resource, "AgentInstance", "agent_id")?)
            }
            "Workflow" if parent_ok => after.push(self.default_instance(
                caller,
                resource,
                "WorkflowInstance",
                "workflow_id",
            )?),
            "Agent" | "Workflow" => {}
            "AgentExecution" => {
                before.extend(
                    self.start_agent_execution(caller, resource, &org, &mut violations)
                        .await?,
                );
                after.push(self.context_for(caller, resource)?);
            }
            "WorkflowExecution" => {
                self.start_workflow_execution(resource, &org, &mut violations)
                    .await?;
                after.push(self.context_for(caller, resource)?);
            }
            _ => {
                self.check_parents(kind, resource, &org, &mut violations)
                    .await?
            }
        }
        Ok((violations, Related { before, after }))
    }

    /// Kind-specific checks and derived fields of an update.
    pub(crate) async fn before_update(
        &self,
        kind: &KindInfo,
        stored: &DynamicMessage,
        resource: &mut DynamicMessage,
    ) -> Result<Vec<FieldViolation>, ApiError> {
        let org = meta(resource).org;
        let mut violations = self.missing_references(resource, &org).await?;
        // What an instance, session or execution belongs to is fixed at its creation: moving
        // it would strand default instances, sessions and contexts.
        let fixed: &[&str] = match kind.name.as_str() {
            "AgentInstance" => &["agent_id"],
            "WorkflowInstance" => &["workflow_id"],
            "Session" => &["agent_instance_id"],
            "AgentExecution" => &["session_id", "agent_id"],
            "WorkflowExecution" => &["workflow_instance_id", "workflow_id"],
            "ExecutionContext" => &["execution_id"],
            _ => &[],
        };
        for field in fixed {
            let (before, after) = (spec_str(stored, field), spec_str(resource, field));
            if before != after {
                violations.push(FieldViolation::new(
                    format!("spec.{field}"),
                    format!(
                        "cannot change after creation (it is {before:?}); create a new {} instead",
                        kind.name
                    ),
                ));
            }
        }
        violations.extend(self.kind_rules(kind, resource));
        self.check_parents(kind, resource, &org, &mut violations)
            .await?;
        Ok(violations)
    }

    /// Rules of a kind's spec that field annotations cannot express.
    fn kind_rules(&self, kind: &KindInfo, resource: &DynamicMessage) -> Vec<FieldViolation> {
        match (kind.name.as_str(), child(resource, "spec")) {
            ("Workflow", Some(spec)) => {
                crate::workflow_rules::check_workflow_spec(&self.validator, &spec)
            }
            _ => Vec::new(),
        }
    }

    /// Refuses a delete that would strand dependents, and returns the cascading deletes.
    pub(crate) async fn before_delete(
        &self,
        kind: &KindInfo,
        stored: &DynamicMessage,
    ) -> Result<Vec<Mutation>, ApiError> {
        let meta = meta(stored);
        match kind.name.as_str() {
            "Agent" => {
                self.delete_default_instance(stored, &meta.org, "AgentInstance", "spec.agentId")
                    .await
            }
            "Workflow" => {
                self.delete_default_instance(
                    stored,
                    &meta.org,
                    "WorkflowInstance",
                    "spec.workflowId",
                )
                .await
            }
            "AgentExecution" | "WorkflowExecution" => {
                self.execution_contexts_of(&meta.org, &meta.id).await
            }
            "Skill" => Ok(self.skill_cleanup(stored)),
            "AgentInstance" => {
                self.refuse_default_instance(stored, "Agent", "agent_id")
                    .await
            }
            "WorkflowInstance" => {
                self.refuse_default_instance(stored, "Workflow", "workflow_id")
                    .await
            }
            _ => Ok(Vec::new()),
        }
    }

    /// A default instance lives and dies with its parent: deleting it alone would leave the
    /// parent unable to start sessions.
    async fn refuse_default_instance(
        &self,
        instance: &DynamicMessage,
        parent_kind: &str,
        parent_field: &str,
    ) -> Result<Vec<Mutation>, ApiError> {
        let meta = meta(instance);
        let parent_id = spec_str(instance, parent_field);
        if let Some(parent) = self.find(parent_kind, &meta.org, &parent_id).await? {
            let default = child(&parent, "status")
                .map(|status| get_str(&status, "default_instance_id"))
                .unwrap_or_default();
            if default == meta.id {
                return Err(ApiError::FailedPrecondition(format!(
                    "{} is the default instance of {parent_kind} {parent_id}; it is deleted with its {parent_kind}",
                    meta.id
                )));
            }
        }
        Ok(Vec::new())
    }

    /// Deletes of every ExecutionContext of an execution (they end with it), however many.
    pub(crate) async fn execution_contexts_of(
        &self,
        org: &str,
        execution_id: &str,
    ) -> Result<Vec<Mutation>, ApiError> {
        let rows = self
            .children(
                "ExecutionContext",
                org,
                "spec.executionId",
                execution_id,
                usize::MAX,
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|id| Mutation::Delete {
                scope: Scope::new("ExecutionContext", org),
                id,
                expected_revision: None,
            })
            .collect())
    }

    /// Ids of up to `at_most` `kind` resources in `org` whose JSON `path` equals `value`, read
    /// page by page.
    async fn children(
        &self,
        kind: &str,
        org: &str,
        path: &str,
        value: &str,
        at_most: usize,
    ) -> Result<Vec<String>, ApiError> {
        let mut ids = Vec::new();
        let mut after_id = None;
        while ids.len() < at_most {
            let page = self
                .store
                .list(ListQuery {
                    scope: Scope::new(kind, org),
                    after_id,
                    limit: (at_most - ids.len()).min(CHILDREN_PAGE),
                    filters: vec![JsonFilter::Equals {
                        path: JsonPath::fields(path),
                        value: value.into(),
                    }],
                    proto_only: true,
                })
                .await?;
            ids.extend(page.items.into_iter().map(|row| row.id));
            after_id = page.next_after_id;
            if after_id.is_none() {
                break;
            }
        }
        Ok(ids)
    }

    async fn delete_default_instance(
        &self,
        parent: &DynamicMessage,
        org: &str,
        instance_kind: &str,
        parent_path: &str,
    ) -> Result<Vec<Mutation>, ApiError> {
        let parent_id = meta(parent).id;
        let default_id = child(parent, "status")
            .map(|status| get_str(&status, "default_instance_id"))
            .unwrap_or_default();
        let instances = self
            .children(instance_kind, org, parent_path, &parent_id, 2)
            .await?;
        if let Some(other) = instances.iter().find(|id| **id != default_id) {
            return Err(ApiError::FailedPrecondition(format!(
                "{instance_kind} {other} still refers to {parent_id}; delete it first (the default instance {default_id} is deleted with its parent)"
            )));
        }
        Ok(instances
            .into_iter()
            .map(|id| Mutation::Delete {
                scope: Scope::new(instance_kind, org),
                id,
                expected_revision: None,
            })
            .collect())
    }

    /// The default instance created with an Agent or a Workflow, and the parent's pointer to it.
    fn default_instance(
        &self,
        caller: &Caller,
        parent: &mut DynamicMessage,
        instance_kind: &str,
        parent_field: &str,
    ) -> Result<Mutation, ApiError> {
        let info = self.kind_named(instance_kind)?;
        let parent_meta = meta(parent);
        let mut instance = DynamicMessage::new(info.message.clone());
        let slug = format!("{}-default", parent_meta.slug);
        let slug = if slug.len() <= crate::naming::MAX_SLUG_LEN {
            slug
        } else {
            format!("default-{}", parent_meta.id)
        };
        if let Some(metadata) = child_mut(&mut instance, "metadata") {
            set_str(metadata, "name", format!("{} (default)", parent_meta.name));
            set_str(metadata, "slug", slug);
            set_str(metadata, "org", parent_meta.org.clone());
        }
        if let Some(spec) = child_mut(&mut instance, "spec") {
            set_str(spec, parent_field, parent_meta.id.clone());
            set_str(
                spec,
                "description",
                "Created with its parent; deleted with it.",
            );
        }
        let violations = prepare_create(info, &mut instance, caller, SystemTime::now());
        check(&self.validator, &instance, violations).map_err(|err| {
            ApiError::internal(format!("default {instance_kind} is invalid: {err}"))
        })?;
        if let Some(status) = child_mut(parent, "status") {
            set_str(status, "default_instance_id", meta(&instance).id);
        }
        Ok(Mutation::Create(new_row(info, &instance)?))
    }

    /// Parents named by id in a spec must exist in the same org.
    async fn check_parents(
        &self,
        kind: &KindInfo,
        resource: &mut DynamicMessage,
        org: &str,
        violations: &mut Vec<FieldViolation>,
    ) -> Result<(), ApiError> {
        let (field, parent_kind) = match kind.name.as_str() {
            "AgentInstance" => ("agent_id", "Agent"),
            "WorkflowInstance" => ("workflow_id", "Workflow"),
            "Session" => ("agent_instance_id", "AgentInstance"),
            "ExecutionContext" => ("execution_id", ""),
            _ => return Ok(()),
        };
        let id = spec_str(resource, field);
        if id.is_empty() {
            return Ok(()); // the field's own rule reports it
        }
        let parent_kind = match parent_kind {
            "" if id.starts_with("wex-") => "WorkflowExecution",
            "" => "AgentExecution",
            other => other,
        };
        match self.find(parent_kind, org, &id).await? {
            None => violations.push(self.missing(field, parent_kind, &id, org).await?),
            Some(parent) if kind.name == "Session" => {
                let agent_id = spec_str(&parent, "agent_id");
                if let Some(metadata) = child_mut(resource, "metadata") {
                    set_label(metadata, SESSION_AGENT_LABEL, &agent_id);
                }
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// An AgentExecution runs in a session: the one named, or a new one on the agent's
    /// default instance. Returns the session to create first, if any.
    async fn start_agent_execution(
        &self,
        caller: &Caller,
        execution: &mut DynamicMessage,
        org: &str,
        violations: &mut Vec<FieldViolation>,
    ) -> Result<Option<Mutation>, ApiError> {
        start_pending(execution);
        let token = spec_bytes(execution, "callback_token");
        if let Some(status) = child_mut(execution, "status") {
            set(status, "callback_token", token);
        }
        let (session_id, agent_id) = (
            spec_str(execution, "session_id"),
            spec_str(execution, "agent_id"),
        );
        if !session_id.is_empty() {
            let Some(session) = self.find("Session", org, &session_id).await? else {
                violations.push(
                    self.missing("session_id", "Session", &session_id, org)
                        .await?,
                );
                return Ok(None);
            };
            // A session outlives a deleted instance; running on it would silently drop the
            // instance's environments.
            let instance_id = spec_str(&session, "agent_instance_id");
            if self
                .find("AgentInstance", org, &instance_id)
                .await?
                .is_none()
            {
                return Err(ApiError::FailedPrecondition(format!(
                    "Session {session_id} runs on AgentInstance {instance_id}, which no longer \
                     exists; start a new session (set agent_id instead of session_id)"
                )));
            }
            if agent_id.is_empty() {
                let agent = label_of(&session, SESSION_AGENT_LABEL);
                set_spec_str(execution, "agent_id", &agent);
            }
            return Ok(None);
        }
        if agent_id.is_empty() {
            violations.push(FieldViolation::new(
                "spec.session_id",
                "set sessionId to continue a session, or agentId to start a new one",
            ));
            return Ok(None);
        }
        let Some(agent) = self.find("Agent", org, &agent_id).await? else {
            violations.push(self.missing("agent_id", "Agent", &agent_id, org).await?);
            return Ok(None);
        };
        let instance_id = child(&agent, "status")
            .map(|s| get_str(&s, "default_instance_id"))
            .unwrap_or_default();
        if self
            .find("AgentInstance", org, &instance_id)
            .await?
            .is_none()
        {
            return Err(ApiError::FailedPrecondition(format!(
                "Agent {agent_id} has no default instance to start a session on; create an AgentInstance and pass its session"
            )));
        }
        let session = self.new_session(caller, org, &instance_id, &agent_id, execution)?;
        set_spec_str(execution, "session_id", &meta(&session).id);
        Ok(Some(Mutation::Create(new_row(
            self.kind_named("Session")?,
            &session,
        )?)))
    }

    fn new_session(
        &self,
        caller: &Caller,
        org: &str,
        instance_id: &str,
        agent_id: &str,
        execution: &DynamicMessage,
    ) -> Result<DynamicMessage, ApiError> {
        let info = self.kind_named("Session")?;
        let mut session = DynamicMessage::new(info.message.clone());
        if let Some(metadata) = child_mut(&mut session, "metadata") {
            set_str(metadata, "org", org);
            set_label(metadata, SESSION_AGENT_LABEL, agent_id);
        }
        let subject: String = spec_str(execution, "message").chars().take(80).collect();
        if let Some(spec) = child_mut(&mut session, "spec") {
            set_str(spec, "agent_instance_id", instance_id);
            set_str(spec, "subject", subject);
        }
        let violations = prepare_create(info, &mut session, caller, SystemTime::now());
        check(&self.validator, &session, violations)
            .map_err(|err| ApiError::internal(format!("new session is invalid: {err}")))?;
        Ok(session)
    }

    /// A WorkflowExecution runs a workflow instance: the one named, or the workflow's default.
    async fn start_workflow_execution(
        &self,
        execution: &mut DynamicMessage,
        org: &str,
        violations: &mut Vec<FieldViolation>,
    ) -> Result<(), ApiError> {
        start_pending(execution);
        let (instance_id, workflow_id) = (
            spec_str(execution, "workflow_instance_id"),
            spec_str(execution, "workflow_id"),
        );
        if !instance_id.is_empty() {
            match self.find("WorkflowInstance", org, &instance_id).await? {
                None => violations.push(
                    self.missing(
                        "workflow_instance_id",
                        "WorkflowInstance",
                        &instance_id,
                        org,
                    )
                    .await?,
                ),
                Some(instance) => {
                    let owner = spec_str(&instance, "workflow_id");
                    if !workflow_id.is_empty() && workflow_id != owner {
                        violations.push(FieldViolation::new(
                            "spec.workflow_id",
                            format!(
                                "is {workflow_id} but instance {instance_id} belongs to {owner}"
                            ),
                        ));
                    }
                    set_spec_str(execution, "workflow_id", &owner);
                }
            }
            return Ok(());
        }
        if workflow_id.is_empty() {
            violations.push(FieldViolation::new(
                "spec.workflow_instance_id",
                "set workflowInstanceId, or workflowId to run its default instance",
            ));
            return Ok(());
        }
        let Some(workflow) = self.find("Workflow", org, &workflow_id).await? else {
            violations.push(
                self.missing("workflow_id", "Workflow", &workflow_id, org)
                    .await?,
            );
            return Ok(());
        };
        let default = child(&workflow, "status")
            .map(|s| get_str(&s, "default_instance_id"))
            .unwrap_or_default();
        if self
            .find("WorkflowInstance", org, &default)
            .await?
            .is_none()
        {
            return Err(ApiError::FailedPrecondition(format!(
                "Workflow {workflow_id} has no default instance; pass a workflow_instance_id"
            )));
        }
        set_spec_str(execution, "workflow_instance_id", &default);
        Ok(())
    }

    /// Every ApiResourceReference in the resource must name an existing resource of its kind.
    async fn missing_references(
        &self,
        resource: &DynamicMessage,
        org: &str,
    ) -> Result<Vec<FieldViolation>, ApiError> {
        let mut references = Vec::new();
        if let Some(spec) = child(resource, "spec") {
            collect_references(&spec, "spec", &mut references);
        }
        let mut violations = Vec::new();
        for Reference {
            path,
            field,
            reference,
        } in references
        {
            let number = get_i32(&reference, "kind");
            let named = self.catalog.kinds().iter().find(|k| k.number == number);
            let kind = match (implied_kind(&field), named) {
                (None, Some(kind)) => kind,
                (None, None) => continue, // unknown or unset kinds are the field rules' business
                (Some(implied), Some(kind)) if kind.name != implied => {
                    let implied = self.kind_named(implied)?;
                    violations.push(FieldViolation::new(
                        path,
                        format!(
                            "must reference {} (kind {}), not {}",
                            implied.name, implied.number, kind.name
                        ),
                    ));
                    continue;
                }
                (Some(implied), _) if number != 0 && named.is_none() => {
                    violations.push(FieldViolation::new(
                        format!("{path}.kind"),
                        format!(
                            "{number} is not a kind this server serves; it must reference {implied}"
                        ),
                    ));
                    continue;
                }
                (Some(implied), _) => self.kind_named(implied)?,
            };
            let slug = get_str(&reference, "slug");
            if slug.is_empty() {
                violations.push(FieldViolation::new(format!("{path}.slug"), "is required"));
                continue;
            }
            let ref_org = match get_str(&reference, "org") {
                o if o.is_empty() => org.to_string(),
                o => o,
            };
            if ref_org != org {
                // Orgs are kept apart: nothing (above all no secret) is reached across them.
                violations.push(FieldViolation::new(
                    format!("{path}.org"),
                    format!(
                        "is {ref_org:?}; a resource may only reference resources of its own org \
                         ({org:?})"
                    ),
                ));
                continue;
            }
            let scope = Scope::new(kind.name.clone(), ref_org.clone());
            if self.store.get_by_slug(scope, slug.clone()).await?.is_none() {
                violations.push(FieldViolation::new(
                    path,
                    format!("{} {slug:?} does not exist in org {ref_org:?}", kind.name),
                ));
            }
        }
        Ok(violations)
    }
}

/// An ApiResourceReference found in a resource: where, in which field, and what it says.
struct Reference {
    path: String,
    field: String,
    reference: DynamicMessage,
}

/// Every ApiResourceReference under `message`.
fn collect_references(message: &DynamicMessage, path: &str, out: &mut Vec<Reference>) {
    for (field, value) in message.fields() {
        let Kind::Message(descriptor) = field.kind() else {
            continue;
        };
        let is_reference = descriptor.full_name() == REFERENCE_TYPE;
        let here = format!("{path}.{}", field.name());
        let mut visit = |path: String, item: &DynamicMessage| {
            if is_reference {
                out.push(Reference {
                    path,
                    field: field.name().to_string(),
                    reference: item.clone(),
                });
            } else {
                collect_references(item, &path, out);
            }
        };
        match value {
            Value::Message(item) => visit(here, item),
            Value::List(items) => {
                for (index, item) in items.iter().enumerate() {
                    if let Some(item) = item.as_message() {
                        visit(format!("{here}[{index}]"), item);
                    }
                }
            }
            Value::Map(entries) => {
                for (key, item) in entries {
                    if let (Some(item), prost_reflect::MapKey::String(key)) =
                        (item.as_message(), key)
                    {
                        visit(format!("{here}[{key:?}]"), item);
                    }
                }
            }
            _ => {}
        }
    }
}

impl Controller {
    /// Why `spec.<field>` names no `kind`: no such id, or, when the value is not an id of that
    /// kind at all, that an id is expected, naming the id of the resource with that slug if
    /// there is one (`agentId: pr-reviewer` is a slug given where an id belongs).
    async fn missing(
        &self,
        field: &str,
        kind: &str,
        id: &str,
        org: &str,
    ) -> Result<FieldViolation, ApiError> {
        let path = format!("spec.{field}");
        let prefix = &self.kind_named(kind)?.id_prefix;
        if id.starts_with(&format!("{prefix}-")) {
            return Ok(FieldViolation::new(
                path,
                format!("{kind} {id:?} does not exist in org {org:?}"),
            ));
        }
        let scope = Scope::new(kind, org);
        let hint = match self.store.get_by_slug(scope, id.to_string()).await? {
            Some(row) => format!("; the {kind} with slug {id:?} has id {:?}", row.id),
            None => format!("; no {kind} has slug {id:?} in org {org:?} either"),
        };
        Ok(FieldViolation::new(
            path,
            format!(
                "is {id:?}, but {} {kind} id ({prefix}-…) is expected here{hint}",
                article(kind)
            ),
        ))
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['A', 'E', 'I', 'O', 'U']) {
        "an"
    } else {
        "a"
    }
}

fn start_pending(execution: &mut DynamicMessage) {
    if let Some(status) = child_mut(execution, "status") {
        set(status, "phase", Value::EnumNumber(PHASE_PENDING));
    }
}

pub(crate) fn spec_str(resource: &DynamicMessage, field: &str) -> String {
    child(resource, "spec")
        .map(|spec| get_str(&spec, field))
        .unwrap_or_default()
}

fn spec_bytes(resource: &DynamicMessage, field: &str) -> Value {
    child(resource, "spec")
        .and_then(|spec| spec.get_field_by_name(field).map(|v| v.into_owned()))
        .unwrap_or(Value::Bytes(Default::default()))
}

fn set_spec_str(resource: &mut DynamicMessage, field: &str, value: &str) {
    if let Some(spec) = child_mut(resource, "spec") {
        set_str(spec, field, value);
    }
}

fn set_label(metadata: &mut DynamicMessage, key: &str, value: &str) {
    if let Some(Value::Map(labels)) = metadata.get_field_by_name_mut("labels") {
        labels.insert(
            prost_reflect::MapKey::String(key.into()),
            Value::String(value.into()),
        );
    }
}

fn label_of(resource: &DynamicMessage, key: &str) -> String {
    child(resource, "metadata")
        .and_then(
            |metadata| match metadata.get_field_by_name("labels").as_deref() {
                Some(Value::Map(labels)) => labels
                    .get(&prost_reflect::MapKey::String(key.into()))
                    .and_then(|v| v.as_str().map(str::to_string)),
                _ => None,
            },
        )
        .unwrap_or_default()
}
