//! Searching the caller's org across kinds (ResourceService/find).

use prost_reflect::{DynamicMessage, Value as Field};
use serde_json::Value;

use crate::resources::{backend_method, to_json};
use crate::{Client, ClientError};

const FIND: &str = "/ai.stigmer.backend.v1.ResourceService/find";

impl Client {
    /// The resources of the caller's org (of `kinds`, or every kind) whose name, slug, a label
    /// key or value (with `match_text`, also any JSON text) contains `query`, ignoring case,
    /// in (kind, id) order: the first `limit`, reading pages until then. Each item holds kind,
    /// id, name, slug, org, what matched first and the resource as get returns it.
    pub async fn find(
        &self,
        query: &str,
        kinds: &[String],
        match_text: bool,
        limit: usize,
    ) -> Result<Vec<Value>, ClientError> {
        let method = backend_method("find")?;
        let names = kinds
            .iter()
            .map(|kind| self.kind(kind).map(|k| Field::String(k.name.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let mut found = Vec::new();
        let mut token = String::new();
        loop {
            let mut request = DynamicMessage::new(method.input());
            request.set_field_by_name("query", Field::String(query.to_string()));
            request.set_field_by_name("kinds", Field::List(names.clone()));
            request.set_field_by_name("match_text", Field::Bool(match_text));
            request.set_field_by_name("page_token", Field::String(token));
            let page = to_json(&self.call(FIND, request, method.output()).await?);
            if let Some(items) = page["items"].as_array() {
                found.extend(items.iter().take(limit - found.len()).cloned());
            }
            token = page["nextPageToken"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if token.is_empty() || found.len() >= limit {
                return Ok(found);
            }
        }
    }
}
