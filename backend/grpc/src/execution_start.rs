//! What starting an execution means (`Hook::StartAgentExecution`, `Hook::StartWorkflowExecution`
//! in the relations table): it starts PENDING; an AgentExecution runs in the session it names
//! or in a new one on its agent's default instance; a WorkflowExecution runs the instance it
//! names or its workflow's default one; and either gets an ExecutionContext holding its
//! runtime_env. Reads and writes go through the generated structs.

use std::collections::HashMap;

use prost_reflect::DynamicMessage;
use stigmer_api::ai::stigmer::agentic::agentexecution::v1::{
    AgentExecutionSpec, AgentExecutionStatus, ExecutionPhase,
};
use stigmer_api::ai::stigmer::agentic::executioncontext::v1::ExecutionValue;
use stigmer_api::ai::stigmer::agentic::session::v1::{Session, SessionSpec};
use stigmer_api::ai::stigmer::agentic::workflowexecution::v1::{
    WorkflowExecutionSpec, WorkflowExecutionStatus,
};
use stigmer_api::ai::stigmer::agentic::workflowinstance::v1::{
    WorkflowInstance, WorkflowInstanceSpec,
};
use stigmer_core::relations::SESSION_AGENT_LABEL;

use crate::controller::Controller;
use crate::error::{ApiError, FieldViolation};
use crate::lifecycle::default_instance_id;
use crate::typed;

/// Characters of an execution's first message that become its new session's subject.
const SUBJECT_CHARS: usize = 80;

/// What a create starts besides the resource itself, made once the resource is valid.
#[derive(Default)]
pub(crate) struct Start {
    /// A session to create for an AgentExecution that named only its agent.
    pub session: Option<NewSession>,
    /// The runtime_env of a new execution, in plain text (read before sealing), for its
    /// ExecutionContext.
    pub context: Option<HashMap<String, ExecutionValue>>,
}

impl Start {
    pub(crate) fn is_empty(&self) -> bool {
        self.session.is_none() && self.context.is_none()
    }
}

pub(crate) struct NewSession {
    pub instance_id: String,
    pub agent_id: String,
    pub subject: String,
}

impl NewSession {
    /// The session as a client would send it.
    pub(crate) fn request(&self, org: &str) -> Session {
        Session {
            metadata: Some(
                stigmer_api::ai::stigmer::commons::apiresource::ApiResourceMetadata {
                    org: org.to_string(),
                    labels: HashMap::from([(
                        SESSION_AGENT_LABEL.to_string(),
                        self.agent_id.clone(),
                    )]),
                    ..Default::default()
                },
            ),
            spec: Some(SessionSpec {
                agent_instance_id: self.instance_id.clone(),
                subject: self.subject.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

impl Controller {
    /// An AgentExecution runs in a session: the one named, or a new one on the agent's
    /// default instance.
    pub(crate) async fn start_agent_execution(
        &self,
        execution: &mut DynamicMessage,
        org: &str,
        violations: &mut Vec<FieldViolation>,
    ) -> Result<Start, ApiError> {
        let mut spec: AgentExecutionSpec = typed::spec(execution)?;
        let mut status: AgentExecutionStatus = typed::status(execution)?;
        status.phase = ExecutionPhase::ExecutionPending as i32;
        status.callback_token = spec.callback_token.clone();
        typed::set_status(execution, &status);
        let mut start = Start {
            context: Some(spec.runtime_env.clone()),
            session: None,
        };
        if !spec.session_id.is_empty() {
            let Some(session) = self
                .find_typed::<Session>("Session", org, &spec.session_id)
                .await?
            else {
                violations.push(
                    self.missing("session_id", "Session", &spec.session_id, org)
                        .await?,
                );
                return Ok(start);
            };
            // A session outlives a deleted instance; running on it would silently drop the
            // instance's environments.
            let instance_id = session.spec.unwrap_or_default().agent_instance_id;
            if self
                .find("AgentInstance", org, &instance_id)
                .await?
                .is_none()
            {
                return Err(ApiError::FailedPrecondition(format!(
                    "Session {} runs on AgentInstance {instance_id}, which no longer exists; \
                     start a new session (set agent_id instead of session_id)",
                    spec.session_id
                )));
            }
            if spec.agent_id.is_empty() {
                let labels = session.metadata.unwrap_or_default().labels;
                spec.agent_id = labels.get(SESSION_AGENT_LABEL).cloned().unwrap_or_default();
                typed::set_spec(execution, &spec);
            }
            return Ok(start);
        }
        if spec.agent_id.is_empty() {
            violations.push(FieldViolation::new(
                "spec.session_id",
                "set sessionId to continue a session, or agentId to start a new one",
            ));
            return Ok(start);
        }
        let no_instance = "has no default instance to start a session on; create an \
                           AgentInstance and pass its session";
        let Some(instance_id) = self
            .live_default_instance("Agent", org, &spec.agent_id, no_instance, violations)
            .await?
        else {
            return Ok(start);
        };
        start.session = Some(NewSession {
            instance_id,
            agent_id: spec.agent_id.clone(),
            subject: spec.message.chars().take(SUBJECT_CHARS).collect(),
        });
        Ok(start)
    }

    /// The default instance of the `owner_kind` resource `owner_id`, which must still exist;
    /// `None` (with a violation naming the owner's field) when the owner does not exist.
    async fn live_default_instance(
        &self,
        owner_kind: &str,
        org: &str,
        owner_id: &str,
        no_instance: &str,
        violations: &mut Vec<FieldViolation>,
    ) -> Result<Option<String>, ApiError> {
        let Some(owner) = self.find(owner_kind, org, owner_id).await? else {
            let field = format!("{}_id", owner_kind.to_lowercase());
            violations.push(self.missing(&field, owner_kind, owner_id, org).await?);
            return Ok(None);
        };
        let instance_id = default_instance_id(&owner);
        let instance_kind = self
            .kind_named(owner_kind)?
            .relations
            .default_instance
            .ok_or_else(|| ApiError::internal(format!("{owner_kind} has no default instance")))?;
        if self.find(instance_kind, org, &instance_id).await?.is_none() {
            return Err(ApiError::FailedPrecondition(format!(
                "{owner_kind} {owner_id} {no_instance}"
            )));
        }
        Ok(Some(instance_id))
    }

    /// A WorkflowExecution runs a workflow instance: the one named, or the workflow's default.
    pub(crate) async fn start_workflow_execution(
        &self,
        execution: &mut DynamicMessage,
        org: &str,
        violations: &mut Vec<FieldViolation>,
    ) -> Result<Start, ApiError> {
        let mut spec: WorkflowExecutionSpec = typed::spec(execution)?;
        let mut status: WorkflowExecutionStatus = typed::status(execution)?;
        status.phase = ExecutionPhase::ExecutionPending as i32;
        typed::set_status(execution, &status);
        let start = Start {
            context: Some(spec.runtime_env.clone()),
            session: None,
        };
        if !spec.workflow_instance_id.is_empty() {
            let instance_id = spec.workflow_instance_id.clone();
            match self
                .find_typed::<WorkflowInstance>("WorkflowInstance", org, &instance_id)
                .await?
            {
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
                    let owner = instance
                        .spec
                        .unwrap_or(WorkflowInstanceSpec::default())
                        .workflow_id;
                    if !spec.workflow_id.is_empty() && spec.workflow_id != owner {
                        violations.push(FieldViolation::new(
                            "spec.workflow_id",
                            format!(
                                "is {} but instance {instance_id} belongs to {owner}",
                                spec.workflow_id
                            ),
                        ));
                    }
                    spec.workflow_id = owner;
                    typed::set_spec(execution, &spec);
                }
            }
            return Ok(start);
        }
        if spec.workflow_id.is_empty() {
            violations.push(FieldViolation::new(
                "spec.workflow_instance_id",
                "set workflowInstanceId, or workflowId to run its default instance",
            ));
            return Ok(start);
        }
        let no_instance = "has no default instance; pass a workflow_instance_id";
        let Some(default) = self
            .live_default_instance("Workflow", org, &spec.workflow_id, no_instance, violations)
            .await?
        else {
            return Ok(start);
        };
        spec.workflow_instance_id = default;
        typed::set_spec(execution, &spec);
        Ok(start)
    }
}
