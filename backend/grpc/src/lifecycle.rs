//! What the relations table (`stigmer_core::relations`) gives kinds beyond the generic verbs,
//! for any kind with a row: parents that must exist, default instances made with their parent,
//! fields fixed at creation, and deletes that take children along or are refused by them.
//! Every extra write joins the transaction of the resource it belongs to. Behaviour that is
//! code rather than data (starting an execution, a workflow's task rules, a skill's artifacts)
//! is named by the table's hooks and lives in its own module.

use std::sync::Arc;

use prost_reflect::{DynamicMessage, Value};
use stigmer_api::ai::stigmer::agentic::executioncontext::v1::{
    ExecutionContext, ExecutionContextSpec,
};
use stigmer_api::ai::stigmer::commons::apiresource::ApiResourceMetadata;
use stigmer_core::relations::{
    DEFAULT_INSTANCE_FIELD, Hook, OnParentDelete, Parent, children_of, default_instance_owner,
};
use stigmer_store::{JsonFilter, JsonPath, ListQuery, Mutation, Scope};

use crate::catalog::KindInfo;
use crate::controller::Controller;
use crate::error::{ApiError, FieldViolation};
use crate::execution_start::Start;
use crate::fields::{child, child_mut, get_str, set_str};
use crate::json::from_json;
use crate::json_names::json_path;
use crate::resource::{Caller, meta};

/// Children read per page when a cascade looks for them.
const CHILDREN_PAGE: usize = 1000;

/// Writes that go with a create, in the same transaction: `before` the resource (a new
/// session it runs in) and `after` it (its default instance, its execution context).
#[derive(Default)]
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

    /// [`Controller::find`] as the kind's generated struct.
    pub(crate) async fn find_typed<T: prost::Message + Default>(
        &self,
        kind: &str,
        org: &str,
        id: &str,
    ) -> Result<Option<T>, ApiError> {
        match self.find(kind, org, id).await? {
            Some(found) => crate::typed::resource(&found).map(Some),
            None => Ok(None),
        }
    }

    /// The resource with `slug` of kind `kind` in `org`, as the kind's generated struct.
    pub(crate) async fn find_by_slug<T: prost::Message + Default>(
        &self,
        kind: &str,
        org: &str,
        slug: &str,
    ) -> Result<Option<T>, ApiError> {
        if slug.is_empty() {
            return Ok(None);
        }
        let info = self.kind_named(kind)?;
        match self
            .store
            .get_by_slug(Scope::new(kind, org), slug.to_string())
            .await?
        {
            Some(row) => crate::typed::resource(&from_json(&info.message, &row.data)?).map(Some),
            None => Ok(None),
        }
    }

    /// Checks of a create beyond field rules (references, the parent, the kind's hooks), and
    /// what the create starts once it is valid.
    pub(crate) async fn create_checks(
        &self,
        kind: &KindInfo,
        resource: &mut DynamicMessage,
        alongside: &[&DynamicMessage],
    ) -> Result<(Vec<FieldViolation>, Start), ApiError> {
        let org = meta(resource).org;
        let mut violations = self.missing_references(kind, resource, &org).await?;
        violations.extend(self.kind_rules(kind, resource));
        let relations = kind.relations;
        let start = if relations.has(Hook::StartAgentExecution) {
            self.start_agent_execution(resource, &org, &mut violations)
                .await?
        } else if relations.has(Hook::StartWorkflowExecution) {
            self.start_workflow_execution(resource, &org, &mut violations)
                .await?
        } else {
            Start::default()
        };
        self.check_parent(kind, resource, &org, alongside, &mut violations)
            .await?;
        Ok((violations, start))
    }

    /// The resources a valid create makes with it: its default instance, the session and
    /// context an execution starts with. Each takes [`Controller::derived_create`].
    pub(crate) async fn related_writes(
        &self,
        kind: &KindInfo,
        caller: &Caller,
        resource: &mut DynamicMessage,
        start: Start,
    ) -> Result<Related, ApiError> {
        let mut related = Related::default();
        let org = meta(resource).org;
        if let Some(instance_kind) = kind.relations.default_instance {
            related.after.push(
                self.default_instance(caller, resource, instance_kind)
                    .await?,
            );
        }
        if let Some(session) = start.session {
            let (made, write) = self
                .derived_create(
                    "Session",
                    caller,
                    to_dynamic(&session.request(&org)),
                    &[],
                    |_| Ok(()),
                )
                .await?;
            set_spec_str(resource, "session_id", &meta(&made).id);
            related.before.push(write);
        }
        if let Some(data) = start.context {
            related
                .after
                .push(self.execution_context(caller, resource, data).await?);
        }
        Ok(related)
    }

    /// Kind-specific checks and derived fields of an update.
    pub(crate) async fn before_update(
        &self,
        kind: &KindInfo,
        stored: &DynamicMessage,
        resource: &mut DynamicMessage,
    ) -> Result<Vec<FieldViolation>, ApiError> {
        let org = meta(resource).org;
        let mut violations = self.missing_references(kind, resource, &org).await?;
        // What a resource belongs to is fixed at its creation: moving it would strand
        // default instances, sessions and contexts.
        for field in kind.relations.fixed_fields() {
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
        self.check_parent(kind, resource, &org, &[], &mut violations)
            .await?;
        Ok(violations)
    }

    /// Rules of a kind's spec that field annotations cannot express.
    fn kind_rules(&self, kind: &KindInfo, resource: &DynamicMessage) -> Vec<FieldViolation> {
        match child(resource, "spec") {
            Some(spec) if kind.relations.has(Hook::WorkflowSpecRules) => {
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
        self.refuse_default_instance(kind, stored).await?;
        let meta = meta(stored);
        let default_id = default_instance_id(stored);
        let mut deletes = Vec::new();
        for (child_kind, parent) in children_of(&kind.name) {
            let is_default = kind.relations.default_instance == Some(child_kind);
            let at_most = match parent.on_delete {
                OnParentDelete::Outlives => continue,
                OnParentDelete::DeletedWithIt => usize::MAX,
                // The default instance and one more are enough to know.
                OnParentDelete::RefusesIt => 2,
            };
            let path = json_path(
                &self.kind_named(child_kind)?.message,
                &format!("spec.{}", parent.field),
            );
            let children = self
                .children(child_kind, &meta.org, &path, &meta.id, at_most)
                .await?;
            for id in children {
                let goes_along = parent.on_delete == OnParentDelete::DeletedWithIt
                    || (is_default && id == default_id);
                if !goes_along {
                    return Err(ApiError::FailedPrecondition(format!(
                        "{child_kind} {id} still refers to {}; delete it first{}",
                        meta.id,
                        if is_default {
                            format!(
                                " (the default instance {default_id} is deleted with its parent)"
                            )
                        } else {
                            String::new()
                        }
                    )));
                }
                deletes.push(Mutation::Delete {
                    scope: Scope::new(child_kind, meta.org.clone()),
                    id,
                    expected_revision: None,
                });
            }
        }
        if kind.relations.has(Hook::SkillArtifacts) {
            deletes.extend(self.skill_cleanup(stored));
        }
        Ok(deletes)
    }

    /// A default instance lives and dies with its parent: deleting it alone would leave the
    /// parent unable to start sessions.
    async fn refuse_default_instance(
        &self,
        kind: &KindInfo,
        instance: &DynamicMessage,
    ) -> Result<(), ApiError> {
        let (Some(owner), Some(parent)) =
            (default_instance_owner(&kind.name), kind.relations.parent)
        else {
            return Ok(());
        };
        let meta = meta(instance);
        let parent_id = spec_str(instance, parent.field);
        if let Some(parent) = self.find(owner, &meta.org, &parent_id).await?
            && default_instance_id(&parent) == meta.id
        {
            return Err(ApiError::FailedPrecondition(format!(
                "{} is the default instance of {owner} {parent_id}; it is deleted with its {owner}",
                meta.id
            )));
        }
        Ok(())
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

    /// Deletes of every `child_kind` resource whose parent is `parent_id`, however many.
    pub(crate) async fn children_deleted_with(
        &self,
        parent_kind: &str,
        org: &str,
        parent_id: &str,
    ) -> Result<Vec<Mutation>, ApiError> {
        let mut deletes = Vec::new();
        for (child_kind, parent) in children_of(parent_kind) {
            if parent.on_delete != OnParentDelete::DeletedWithIt {
                continue;
            }
            let path = json_path(
                &self.kind_named(child_kind)?.message,
                &format!("spec.{}", parent.field),
            );
            for id in self
                .children(child_kind, org, &path, parent_id, usize::MAX)
                .await?
            {
                deletes.push(Mutation::Delete {
                    scope: Scope::new(child_kind, org),
                    id,
                    expected_revision: None,
                });
            }
        }
        Ok(deletes)
    }

    /// The default instance created with its parent, and the parent's pointer to it. Its slug
    /// is the parent's with "-default", or, when that would be too long, made from the
    /// parent's id.
    async fn default_instance(
        &self,
        caller: &Caller,
        parent: &mut DynamicMessage,
        instance_kind: &str,
    ) -> Result<Mutation, ApiError> {
        let info = self.kind_named(instance_kind)?;
        let field = info
            .relations
            .parent
            .map(|parent| parent.field)
            .ok_or_else(|| ApiError::internal(format!("{instance_kind} names no parent")))?;
        let parent_meta = meta(parent);
        let slug = format!("{}-default", parent_meta.slug);
        let slug = if slug.len() <= crate::naming::MAX_SLUG_LEN {
            slug
        } else {
            format!("default-{}", parent_meta.id)
        };
        let mut instance = DynamicMessage::new(info.message.clone());
        if let Some(metadata) = child_mut(&mut instance, "metadata") {
            set_str(metadata, "name", format!("{} (default)", parent_meta.name));
            set_str(metadata, "slug", slug);
            set_str(metadata, "org", parent_meta.org.clone());
        }
        set_spec_str(&mut instance, field, &parent_meta.id);
        set_spec_str(
            &mut instance,
            "description",
            "Created with its parent; deleted with it.",
        );
        let (instance, write) = self
            .derived_create(instance_kind, caller, instance, &[&*parent], |_| Ok(()))
            .await?;
        if let Some(status) = child_mut(parent, "status") {
            set_str(status, DEFAULT_INSTANCE_FIELD, meta(&instance).id);
        }
        Ok(write)
    }

    /// The ExecutionContext written with a new execution, holding its runtime_env (read in
    /// plain text before the execution was sealed; sealed again here, as any create is).
    async fn execution_context(
        &self,
        caller: &Caller,
        execution: &DynamicMessage,
        data: std::collections::HashMap<
            String,
            stigmer_api::ai::stigmer::agentic::executioncontext::v1::ExecutionValue,
        >,
    ) -> Result<Mutation, ApiError> {
        let execution_meta = meta(execution);
        let context = ExecutionContext {
            metadata: Some(ApiResourceMetadata {
                name: execution_meta.id.clone(),
                org: execution_meta.org,
                ..Default::default()
            }),
            spec: Some(ExecutionContextSpec {
                execution_id: execution_meta.id,
                data,
            }),
            ..Default::default()
        };
        let (_, write) = self
            .derived_create(
                "ExecutionContext",
                caller,
                to_dynamic(&context),
                &[execution],
                |_| Ok(()),
            )
            .await?;
        Ok(write)
    }

    /// The parent a spec names by id must exist in the same org (or be created in the same
    /// transaction); labels the child takes from it are copied.
    async fn check_parent(
        &self,
        kind: &KindInfo,
        resource: &mut DynamicMessage,
        org: &str,
        alongside: &[&DynamicMessage],
        violations: &mut Vec<FieldViolation>,
    ) -> Result<(), ApiError> {
        let Some(parent) = kind.relations.parent else {
            return Ok(());
        };
        let id = spec_str(resource, parent.field);
        if id.is_empty() {
            return Ok(()); // the field's own rule reports it
        }
        let parent_kind = self.parent_kind_of(&parent, &id)?;
        let found = match alongside.iter().find(|other| meta(other).id == id) {
            Some(created) => Some((*created).clone()),
            None => self.find(parent_kind, org, &id).await?,
        };
        match found {
            None => violations.push(self.missing(parent.field, parent_kind, &id, org).await?),
            Some(found) => {
                if let Some((label, from)) = parent.label_from_parent {
                    let value = spec_str(&found, from);
                    if let Some(metadata) = child_mut(resource, "metadata") {
                        set_label(metadata, label, &value);
                    }
                }
            }
        }
        Ok(())
    }

    /// Which of a parent's kinds `id` names, by its prefix; the first when none matches (the
    /// violation then says which id was expected).
    fn parent_kind_of(&self, parent: &Parent, id: &str) -> Result<&'static str, ApiError> {
        for kind in parent.kinds {
            if id.starts_with(&format!("{}-", self.kind_named(kind)?.id_prefix)) {
                return Ok(kind);
            }
        }
        parent
            .kinds
            .first()
            .copied()
            .ok_or_else(|| ApiError::internal("a parent relation names no kind"))
    }
}

pub(crate) fn default_instance_id(parent: &DynamicMessage) -> String {
    child(parent, "status")
        .map(|status| get_str(&status, DEFAULT_INSTANCE_FIELD))
        .unwrap_or_default()
}

fn to_dynamic<T: prost_reflect::ReflectMessage>(message: &T) -> DynamicMessage {
    message.transcode_to_dynamic()
}

pub(crate) fn spec_str(resource: &DynamicMessage, field: &str) -> String {
    child(resource, "spec")
        .map(|spec| get_str(&spec, field))
        .unwrap_or_default()
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
