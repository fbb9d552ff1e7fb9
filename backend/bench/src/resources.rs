//! The Environment resources every case writes and reads, and their stored form for preloading
//! through the store.

use stigmer_api::ai::stigmer::agentic::environment::v1::{Environment, EnvironmentSpec};
use stigmer_api::ai::stigmer::commons::apiresource::ApiResourceMetadata;
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

/// The id of preloaded resource `index`: the kind's prefix and 26 Crockford base-32 digits,
/// like the server's ULIDs.
pub fn preload_id(index: usize) -> String {
    format!("env-00000000000000{index:012}")
}

/// The slug (and name) of preloaded resource `index`.
pub fn preload_slug(index: usize) -> String {
    format!("pre-{index}")
}

/// Preloaded resource `index` as the store keeps it: proto3 JSON of a whole Environment.
pub fn preload_row(index: usize) -> NewResource {
    let id = preload_id(index);
    let slug = preload_slug(index);
    let data = serde_json::json!({
        "apiVersion": "agentic.stigmer.ai/v1",
        "kind": KIND,
        "metadata": {
            "name": slug,
            "slug": slug,
            "id": id,
            "org": ORG,
            "ownerScope": "organization",
        },
        "spec": {
            "description": format!("preloaded environment {index}"),
            "data": { "REGION": { "value": "eu-west-1" } },
        },
    });
    NewResource {
        scope: Scope::new(KIND, ORG),
        id,
        slug,
        data: data.to_string(),
    }
}
