//! The Environment resources every case writes and reads, and their stored form for preloading
//! through the store.

use prost::Message;
use prost_reflect::ReflectMessage;
use stigmer_api::ai::stigmer::agentic::agent::v1::{Agent, AgentSpec};
use stigmer_api::ai::stigmer::agentic::environment::v1::{
    Environment, EnvironmentSpec, EnvironmentValue,
};
use stigmer_api::ai::stigmer::commons::apiresource::{
    ApiResourceAudit, ApiResourceAuditActor, ApiResourceAuditInfo, ApiResourceAuditStatus,
    ApiResourceMetadata, ApiResourceOwnerScope,
};
use stigmer_store::{NewResource, Scope};

pub const KIND: &str = "Environment";
pub const ORG: &str = "local";

/// An Environment to create: the server fills in id, slug, org and audit.
pub fn environment(name: String, description: String) -> Environment {
    Environment {
        metadata: Some(ApiResourceMetadata {
            name,
            ..Default::default()
        }),
        spec: Some(EnvironmentSpec {
            description,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Characters of instructions in the Agent the Agent-create case writes.
const AGENT_INSTRUCTIONS: usize = 1024;

/// An Agent with 1 KiB of instructions, as a user's manifest would carry.
pub fn agent(name: String) -> Agent {
    let line = "Review the pull request for correctness, tests and naming. ";
    Agent {
        metadata: Some(ApiResourceMetadata {
            name,
            ..Default::default()
        }),
        spec: Some(AgentSpec {
            description: "benchmark agent".into(),
            instructions: line.repeat(AGENT_INSTRUCTIONS / line.len() + 1)[..AGENT_INSTRUCTIONS]
                .to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The id of preloaded resource `index`: the kind's prefix and 26 Crockford base-32 digits,
/// like the server's ULIDs.
pub fn preload_id(index: usize) -> String {
    format!("env-00000000000000{index:012}")
}

/// The slug (and name) of preloaded resource `index`.
pub fn preload_slug(index: usize) -> String {
    format!("pre-{index}")
}

/// Preloaded resource `index` as the store keeps it: proto3 JSON of a whole Environment, and
/// its protobuf encoding for the read cache, both from the same message.
pub fn preload_row(index: usize) -> anyhow::Result<NewResource> {
    let id = preload_id(index);
    let slug = preload_slug(index);
    let resource = Environment {
        api_version: "agentic.stigmer.ai/v1".into(),
        kind: KIND.into(),
        metadata: Some(ApiResourceMetadata {
            name: slug.clone(),
            slug: slug.clone(),
            id: id.clone(),
            org: ORG.into(),
            owner_scope: ApiResourceOwnerScope::Organization as i32,
            ..Default::default()
        }),
        spec: Some(EnvironmentSpec {
            description: format!("preloaded environment {index}"),
            data: [(
                "REGION".to_string(),
                EnvironmentValue {
                    value: "eu-west-1".into(),
                    ..Default::default()
                },
            )]
            .into(),
        }),
        status: Some(created_audit()),
    };
    Ok(NewResource {
        scope: Scope::new(KIND, ORG),
        id,
        slug,
        data: serde_json::to_string(&resource.transcode_to_dynamic())?,
        proto: Some(resource.encode_to_vec()),
    })
}

/// The audit a create through the API stamps (spec and status, by "local", event "created"),
/// so that preloaded rows are as large as the rows the server writes.
fn created_audit() -> ApiResourceAuditStatus {
    let now = prost_types::Timestamp::from(std::time::SystemTime::now());
    let local = || {
        Some(ApiResourceAuditActor {
            id: "local".into(),
            ..Default::default()
        })
    };
    let info = ApiResourceAuditInfo {
        created_by: local(),
        created_at: Some(now),
        updated_by: local(),
        updated_at: Some(now),
        event: "created".into(),
    };
    ApiResourceAuditStatus {
        audit: Some(ApiResourceAudit {
            spec_audit: Some(info.clone()),
            status_audit: Some(info),
        }),
    }
}
