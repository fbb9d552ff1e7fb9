//! Just-in-time secrets: an execution's ExecutionContext is created with the execution (its
//! runtime_env, sealed; `lifecycle.rs`) and resolved only when read, while the execution runs:
//! the agent's or workflow's env_spec defaults, then each referenced Environment in order, then
//! the context's own values, with every secret opened. Once the execution ends the context is
//! deleted. Reads go through the generated structs.

use std::collections::HashMap;

use prost_reflect::{DynamicMessage, ReflectMessage};
use stigmer_api::ai::stigmer::agentic::agent::v1::Agent;
use stigmer_api::ai::stigmer::agentic::agentexecution::v1::{AgentExecution, ExecutionPhase};
use stigmer_api::ai::stigmer::agentic::agentinstance::v1::AgentInstance;
use stigmer_api::ai::stigmer::agentic::environment::v1::{Environment, EnvironmentSpec};
use stigmer_api::ai::stigmer::agentic::executioncontext::v1::{ExecutionContext, ExecutionValue};
use stigmer_api::ai::stigmer::agentic::session::v1::Session;
use stigmer_api::ai::stigmer::agentic::workflow::v1::Workflow;
use stigmer_api::ai::stigmer::agentic::workflowexecution::v1::WorkflowExecution;
use stigmer_api::ai::stigmer::agentic::workflowinstance::v1::WorkflowInstance;
use stigmer_api::ai::stigmer::commons::apiresource::ApiResourceReference;

use crate::controller::Controller;
use crate::error::ApiError;
use crate::typed;

/// What a context's values are merged from, read off its execution.
struct Sources {
    phase: i32,
    /// The agent's or workflow's env_spec.
    defaults: Option<EnvironmentSpec>,
    /// The Environments its instance refers to, in order.
    environments: Vec<ApiResourceReference>,
}

impl Controller {
    /// The context with every value resolved and opened, if its execution still runs.
    pub(crate) async fn resolve_context(
        &self,
        context: DynamicMessage,
    ) -> Result<DynamicMessage, ApiError> {
        let mut context: ExecutionContext = typed::resource(&context)?;
        let metadata = context.metadata.clone().unwrap_or_default();
        let (org, context_id) = (metadata.org, metadata.id);
        let own = context.spec.take().unwrap_or_default();
        let execution_id = own.execution_id.clone();
        let unavailable = |why: String| ApiError::NotFound {
            kind: "ExecutionContext".into(),
            id: format!("{context_id} ({why}; secrets are served only while the execution runs)"),
        };
        let Some(sources) = self.sources_of(&org, &execution_id).await? else {
            return Err(unavailable(format!("execution {execution_id} is gone")));
        };
        let running = [
            ExecutionPhase::ExecutionPending,
            ExecutionPhase::ExecutionInProgress,
        ];
        if !running.iter().any(|phase| *phase as i32 == sources.phase) {
            return Err(unavailable(format!("execution {execution_id} has ended")));
        }
        let mut merged = HashMap::new();
        merge_environment(&mut merged, sources.defaults);
        for reference in sources.environments {
            if !reference.org.is_empty() && reference.org != org {
                // Writes refuse such references now; one stored earlier opens nothing.
                tracing::warn!(
                    org,
                    ref_org = reference.org,
                    "skipped an environment reference to another org"
                );
                continue;
            }
            let environment = self
                .find_by_slug::<Environment>("Environment", &org, &reference.slug)
                .await?;
            merge_environment(&mut merged, environment.and_then(|e| e.spec));
        }
        merged.extend(own.data);
        context.spec = Some(
            stigmer_api::ai::stigmer::agentic::executioncontext::v1::ExecutionContextSpec {
                execution_id,
                data: merged,
            },
        );
        let mut context = context.transcode_to_dynamic();
        self.secrets.open(&self.keyring, &mut context)?;
        Ok(context)
    }

    /// The phase of execution `id` and what its context merges, if it exists. The id's prefix
    /// tells an agent's execution from a workflow's.
    async fn sources_of(&self, org: &str, id: &str) -> Result<Option<Sources>, ApiError> {
        let workflow_prefix = format!("{}-", self.kind_named("WorkflowExecution")?.id_prefix);
        if id.starts_with(&workflow_prefix) {
            let Some(execution) = self
                .find_typed::<WorkflowExecution>("WorkflowExecution", org, id)
                .await?
            else {
                return Ok(None);
            };
            let spec = execution.spec.unwrap_or_default();
            let workflow = self
                .find_typed::<Workflow>("Workflow", org, &spec.workflow_id)
                .await?;
            let instance = self
                .find_typed::<WorkflowInstance>("WorkflowInstance", org, &spec.workflow_instance_id)
                .await?;
            return Ok(Some(Sources {
                phase: execution.status.unwrap_or_default().phase,
                defaults: workflow.and_then(|w| w.spec).and_then(|s| s.env_spec),
                environments: instance
                    .and_then(|i| i.spec)
                    .map(|s| s.env_refs)
                    .unwrap_or_default(),
            }));
        }
        let Some(execution) = self
            .find_typed::<AgentExecution>("AgentExecution", org, id)
            .await?
        else {
            return Ok(None);
        };
        let spec = execution.spec.unwrap_or_default();
        let session = self
            .find_typed::<Session>("Session", org, &spec.session_id)
            .await?;
        let instance_id = session
            .and_then(|s| s.spec)
            .map(|s| s.agent_instance_id)
            .unwrap_or_default();
        let agent = self
            .find_typed::<Agent>("Agent", org, &spec.agent_id)
            .await?;
        let instance = self
            .find_typed::<AgentInstance>("AgentInstance", org, &instance_id)
            .await?;
        Ok(Some(Sources {
            phase: execution.status.unwrap_or_default().phase,
            defaults: agent.and_then(|a| a.spec).and_then(|s| s.env_spec),
            environments: instance
                .and_then(|i| i.spec)
                .map(|s| s.environment_refs)
                .unwrap_or_default(),
        }))
    }
}

/// Adds an EnvironmentSpec's values as ExecutionValue entries, later ones winning.
fn merge_environment(merged: &mut HashMap<String, ExecutionValue>, env: Option<EnvironmentSpec>) {
    for (key, value) in env.map(|env| env.data).unwrap_or_default() {
        merged.insert(
            key,
            ExecutionValue {
                value: value.value,
                is_secret: value.is_secret,
            },
        );
    }
}
