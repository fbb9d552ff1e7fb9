//! Just-in-time secrets: an execution's ExecutionContext is created with the execution (its
//! runtime_env, sealed) and resolved only when read, while the execution runs: the agent's or
//! workflow's env_spec defaults, then each referenced Environment in order, then the context's
//! own values, with every secret opened. Once the execution ends the context is deleted.

use std::time::SystemTime;

use prost_reflect::{DynamicMessage, MapKey, Value};
use stigmer_store::Mutation;

use crate::controller::{Controller, new_row};
use crate::error::ApiError;
use crate::executions::phase_of;
use crate::fields::{child, child_mut, get_str, set, set_str};
use crate::lifecycle::spec_str;
use crate::resource::{Caller, meta, prepare_create};

const PENDING: i32 = 1;
const IN_PROGRESS: i32 = 2;

impl Controller {
    /// The ExecutionContext written with a new execution, holding its runtime_env.
    pub(crate) fn context_for(
        &self,
        caller: &Caller,
        execution: &DynamicMessage,
    ) -> Result<Mutation, ApiError> {
        let info = self.kind_named("ExecutionContext")?;
        let execution_id = meta(execution).id;
        let mut context = DynamicMessage::new(info.message.clone());
        if let Some(metadata) = child_mut(&mut context, "metadata") {
            set_str(metadata, "name", execution_id.clone());
            set_str(metadata, "org", meta(execution).org);
        }
        let runtime_env = child(execution, "spec").and_then(|spec| {
            spec.get_field_by_name("runtime_env")
                .map(|v| v.into_owned())
        });
        if let Some(spec) = child_mut(&mut context, "spec") {
            set_str(spec, "execution_id", execution_id);
            if let Some(env) = runtime_env {
                set(spec, "data", env);
            }
        }
        // Its values are the execution's runtime_env, checked by the same rules as part of the
        // execution; a broken one is reported there, not as a fault of this context.
        let _ = prepare_create(info, &mut context, caller, SystemTime::now());
        let _ = self.secrets.seal(&self.keyring, &mut context, None)?;
        Ok(Mutation::Create(new_row(info, &context)?))
    }

    /// The context with every value resolved and opened, if its execution still runs.
    pub(crate) async fn resolve_context(
        &self,
        mut context: DynamicMessage,
    ) -> Result<DynamicMessage, ApiError> {
        let org = meta(&context).org;
        let execution_id = spec_str(&context, "execution_id");
        let execution_kind = if execution_id.starts_with("wex-") {
            "WorkflowExecution"
        } else {
            "AgentExecution"
        };
        let unavailable = |why: String| ApiError::NotFound {
            kind: "ExecutionContext".into(),
            id: format!(
                "{} ({why}; secrets are served only while the execution runs)",
                meta(&context).id
            ),
        };
        let Some(execution) = self.find(execution_kind, &org, &execution_id).await? else {
            return Err(unavailable(format!("execution {execution_id} is gone")));
        };
        if !matches!(phase_of(&execution), PENDING | IN_PROGRESS) {
            return Err(unavailable(format!("execution {execution_id} has ended")));
        }
        let mut merged = self.defaults_of(&execution, execution_kind, &org).await?;
        if let Some(Value::Map(own)) = child(&context, "spec")
            .and_then(|spec| spec.get_field_by_name("data").map(|v| v.into_owned()))
        {
            merged.extend(own);
        }
        if let Some(spec) = child_mut(&mut context, "spec") {
            set(spec, "data", Value::Map(merged));
        }
        self.secrets.open(&self.keyring, &mut context)?;
        Ok(context)
    }

    /// env_spec of the agent or workflow, then each Environment its instance refers to, as
    /// ExecutionValue entries, later ones winning.
    async fn defaults_of(
        &self,
        execution: &DynamicMessage,
        execution_kind: &str,
        org: &str,
    ) -> Result<std::collections::HashMap<MapKey, Value>, ApiError> {
        let (parent_kind, parent_id, instance_kind, instance_id, refs_field) =
            if execution_kind == "AgentExecution" {
                let session = self
                    .find("Session", org, &spec_str(execution, "session_id"))
                    .await?;
                let instance_id = session
                    .map(|s| spec_str(&s, "agent_instance_id"))
                    .unwrap_or_default();
                (
                    "Agent",
                    spec_str(execution, "agent_id"),
                    "AgentInstance",
                    instance_id,
                    "environment_refs",
                )
            } else {
                (
                    "Workflow",
                    spec_str(execution, "workflow_id"),
                    "WorkflowInstance",
                    spec_str(execution, "workflow_instance_id"),
                    "env_refs",
                )
            };
        let mut merged = std::collections::HashMap::new();
        if let Some(parent) = self.find(parent_kind, org, &parent_id).await? {
            let env = child(&parent, "spec").and_then(|spec| child(&spec, "env_spec"));
            merge_environment(&mut merged, env.as_ref());
        }
        let Some(instance) = self.find(instance_kind, org, &instance_id).await? else {
            return Ok(merged);
        };
        let refs = child(&instance, "spec")
            .and_then(|spec| spec.get_field_by_name(refs_field).map(|v| v.into_owned()));
        for reference in refs
            .iter()
            .filter_map(Value::as_list)
            .flatten()
            .filter_map(Value::as_message)
        {
            let ref_org = get_str(reference, "org");
            if !ref_org.is_empty() && ref_org != org {
                // Writes refuse such references now; one stored earlier opens nothing.
                tracing::warn!(
                    org,
                    ref_org,
                    "skipped an environment reference to another org"
                );
                continue;
            }
            let scope = stigmer_store::Scope::new("Environment", org.to_string());
            if let Some(row) = self
                .store
                .get_by_slug(scope, get_str(reference, "slug"))
                .await?
            {
                let environment =
                    crate::json::from_json(&self.kind_named("Environment")?.message, &row.data)?;
                merge_environment(&mut merged, child(&environment, "spec").as_ref());
            }
        }
        Ok(merged)
    }
}

/// Adds an EnvironmentSpec's values as ExecutionValue map entries.
fn merge_environment(
    merged: &mut std::collections::HashMap<MapKey, Value>,
    env: Option<&DynamicMessage>,
) {
    let Some(Value::Map(data)) =
        env.and_then(|env| env.get_field_by_name("data").map(|v| v.into_owned()))
    else {
        return;
    };
    let Some(value_type) = stigmer_api::DESCRIPTOR_POOL
        .get_message_by_name("ai.stigmer.agentic.executioncontext.v1.ExecutionValue")
    else {
        return;
    };
    for (key, value) in data {
        let Some(source) = value.as_message() else {
            continue;
        };
        let mut entry = DynamicMessage::new(value_type.clone());
        set_str(&mut entry, "value", get_str(source, "value"));
        if let Some(secret) = source.get_field_by_name("is_secret") {
            set(&mut entry, "is_secret", secret.into_owned());
        }
        merged.insert(key, Value::Message(entry));
    }
}
