//! Resources by kind name, as people and manifests name them ("agents", "Agent", "agt"), over
//! the generic RPCs every kind shares.

use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use prost_reflect::{DynamicMessage, Value as Field};
use serde_json::Value;
use stigmer_core::catalog::{KindInfo, Method};
use stigmer_core::codec::DynamicCodec;
use stigmer_core::naming::slug_from_name;
use tokio_stream::{Stream, StreamExt};

use crate::kinds::{KindNames, Operation, method_of, names_of};
use crate::{Client, ClientError};

/// What `apply` did to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Applied {
    pub outcome: Outcome,
    pub resource: Value,
}

/// Watch events as JSON: `{revision, type, kind, id, resource}`.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Value, tonic::Status>> + Send>>;

const WATCH: &str = "/ai.stigmer.backend.v1.ResourceService/watch";
const INFO: &str = "/ai.stigmer.backend.v1.ResourceService/info";

pub(crate) fn to_json(message: &DynamicMessage) -> Value {
    serde_json::to_value(message).unwrap_or(Value::Null)
}

/// The slug a manifest names: metadata.slug, else the slug of metadata.name, else empty.
pub(crate) fn manifest_slug(manifest: &Value) -> String {
    let metadata = manifest.get("metadata");
    metadata
        .and_then(|m| m.get("slug"))
        .and_then(Value::as_str)
        .filter(|slug| !slug.is_empty())
        .map(str::to_string)
        .or_else(|| {
            metadata
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .map(slug_from_name)
        })
        .unwrap_or_default()
}

/// Forgets what the server owns in a manifest for a resource that does not exist: an id and
/// revision copied from `get -o yaml` or an export belong to a deleted resource or another
/// server, and status is the server's to set.
fn drop_server_fields(message: &mut DynamicMessage) {
    message.clear_field_by_name("status");
    if let Some(Field::Message(metadata)) = message.get_field_by_name_mut("metadata") {
        metadata.clear_field_by_name("id");
        metadata.clear_field_by_name("revision");
    }
}

pub(crate) fn outcome(before: Option<&Value>, after: &Value) -> Outcome {
    match before {
        None => Outcome::Created,
        Some(before) if before["metadata"]["revision"] == after["metadata"]["revision"] => {
            Outcome::Unchanged
        }
        Some(_) => Outcome::Updated,
    }
}

/// `target` with every field `changes` gives: objects merge key by key, anything else is
/// replaced.
fn merge(target: &mut Value, changes: &Value) {
    match (target, changes) {
        (Value::Object(target), Value::Object(changes)) => {
            for (key, value) in changes {
                match target.get_mut(key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, changes) => *target = changes.clone(),
    }
}

impl Client {
    /// A kind by name, case-insensitive, singular or plural, or by id prefix.
    pub fn kind(&self, name: &str) -> Result<&Arc<KindInfo>, ClientError> {
        let wanted = name.to_lowercase();
        self.catalog()
            .kinds()
            .iter()
            .find(|kind| {
                let lower = kind.name.to_lowercase();
                wanted == lower || wanted == format!("{lower}s") || wanted == kind.id_prefix
            })
            .ok_or_else(|| {
                let known: Vec<String> = self
                    .catalog()
                    .kinds()
                    .iter()
                    .map(|k| k.name.to_lowercase())
                    .collect();
                ClientError::Usage(format!(
                    "unknown kind {name:?}; use one of {}",
                    known.join(", ")
                ))
            })
    }

    pub(crate) fn method(&self, kind: &KindInfo, role: &str, name: &str) -> Option<&Arc<Method>> {
        method_of(self.catalog(), kind, role, name)
    }

    pub(crate) fn required(
        &self,
        kind: &KindInfo,
        role: &str,
        name: &str,
    ) -> Result<&Arc<Method>, ClientError> {
        self.method(kind, role, name)
            .ok_or_else(|| ClientError::Usage(format!("{} has no {name} operation", kind.name)))
    }

    pub(crate) async fn invoke(
        &self,
        method: &Method,
        request: DynamicMessage,
    ) -> Result<DynamicMessage, ClientError> {
        Ok(self
            .call(&method.path, request, method.output.clone())
            .await?)
    }

    /// Parses a manifest (apiVersion/kind/metadata/spec) into its kind's message.
    pub fn parse_manifest(
        &self,
        manifest: &Value,
    ) -> Result<(Arc<KindInfo>, DynamicMessage), ClientError> {
        let name = manifest
            .get("kind")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ClientError::Usage(
                    "kind: missing; every document needs a kind, such as Agent (apiVersion may be \
                     left out)"
                        .into(),
                )
            })?;
        let kind = Arc::clone(self.kind(name)?);
        let message = DynamicMessage::deserialize(kind.message.clone(), manifest)
            .map_err(|err| ClientError::Usage(format!("not a valid {}: {err}", kind.name)))?;
        Ok((kind, message))
    }

    /// Creates or updates the resource a manifest describes, and says which it was.
    ///
    /// Server-owned fields (metadata.id and revision, status) count only when a resource of
    /// that kind and slug exists: then the revision is the one expected, and a resource
    /// changed since is not overwritten. For a resource that does not exist they are
    /// dropped, so that `get -o yaml` output applies after a delete or on another server.
    pub async fn apply(&self, manifest: &Value) -> Result<Applied, ClientError> {
        if manifest.get(EXPORTED_VERSIONS).is_some() {
            return Err(ClientError::Usage(format!(
                "{EXPORTED_VERSIONS}: this is an export, with versions apply cannot write: write it back with `stigmer import -f FILE`"
            )));
        }
        let (kind, mut message) = self.parse_manifest(manifest)?;
        if self.method(&kind, "Command", "push").is_some() {
            return self.apply_pushed(&kind, manifest).await;
        }
        let slug = manifest_slug(manifest);
        let before = match slug.is_empty() {
            true => None,
            false => self.find_by_slug(&kind, &slug).await?,
        };
        if before.is_none() {
            drop_server_fields(&mut message);
        }
        let resource = match (self.method(&kind, "Command", "apply"), &before) {
            (Some(method), _) => to_json(&self.invoke(method, message).await?),
            (None, Some(stored)) => return self.reapply(&kind, &slug, message, stored).await,
            (None, None) => {
                let method = self.required(&kind, "Command", "create")?;
                to_json(&self.invoke(method, message).await?)
            }
        };
        Ok(Applied {
            outcome: outcome(before.as_ref(), &resource),
            resource,
        })
    }

    /// Applies every manifest or none, in one transaction (ResourceService/applyBatch), in
    /// the order given: each sees the ones before it. Kinds without an apply RPC (Skills,
    /// executions) are refused before anything is sent. Server-owned fields count as in
    /// [`Client::apply`]. A failure names each mistake `resources[i].<field>`, `i` being the
    /// manifest's place in `manifests`.
    pub async fn apply_batch(&self, manifests: &[Value]) -> Result<Vec<Applied>, ClientError> {
        let method = backend_method("applyBatch")?;
        let any_type = method
            .input()
            .get_field_by_name("resources")
            .and_then(|field| field.kind().as_message().cloned())
            .ok_or_else(|| ClientError::Config("ApplyBatchRequest lacks resources".into()))?;
        let mut anys = Vec::with_capacity(manifests.len());
        for manifest in manifests {
            let (kind, mut message) = self.parse_manifest(manifest)?;
            if self.method(&kind, "Command", "apply").is_none() {
                return Err(ClientError::Usage(format!(
                    "{} cannot be applied atomically: it has no apply (push skills and create executions on their own)",
                    kind.name
                )));
            }
            let slug = manifest_slug(manifest);
            if slug.is_empty() || self.find_by_slug(&kind, &slug).await?.is_none() {
                drop_server_fields(&mut message);
            }
            let mut any = DynamicMessage::new(any_type.clone());
            any.set_field_by_name(
                "type_url",
                Field::String(format!("type.googleapis.com/{}", kind.message.full_name())),
            );
            any.set_field_by_name(
                "value",
                Field::Bytes(prost::Message::encode_to_vec(&message).into()),
            );
            anys.push(Field::Message(any));
        }
        let mut request = DynamicMessage::new(method.input());
        request.set_field_by_name("resources", Field::List(anys));
        let response = self.call(APPLY_BATCH, request, method.output()).await?;
        let results = match response.get_field_by_name("results").as_deref() {
            Some(Field::List(results)) => results.clone(),
            _ => Vec::new(),
        };
        results
            .iter()
            .filter_map(Field::as_message)
            .map(|result| self.applied_result(result))
            .collect()
    }

    /// One AppliedResource of a batch as JSON.
    fn applied_result(&self, result: &DynamicMessage) -> Result<Applied, ClientError> {
        let unreadable =
            || ClientError::Config("an applyBatch result the client cannot read".into());
        let any = result
            .get_field_by_name("resource")
            .and_then(|any| any.as_message().cloned())
            .ok_or_else(unreadable)?;
        let type_url = any
            .get_field_by_name("type_url")
            .and_then(|url| url.as_str().map(str::to_string))
            .unwrap_or_default();
        let name = type_url.rsplit('/').next().unwrap_or_default();
        let kind = self
            .catalog
            .kinds()
            .iter()
            .find(|kind| kind.message.full_name() == name)
            .ok_or_else(unreadable)?;
        let bytes = any
            .get_field_by_name("value")
            .and_then(|value| value.as_bytes().cloned())
            .unwrap_or_default();
        let resource = DynamicMessage::decode(kind.message.clone(), bytes.as_ref())
            .map_err(|_| unreadable())?;
        let outcome = match result
            .get_field_by_name("outcome")
            .as_deref()
            .and_then(Field::as_str)
        {
            Some("created") => Outcome::Created,
            Some("updated") => Outcome::Updated,
            _ => Outcome::Unchanged,
        };
        Ok(Applied {
            outcome,
            resource: to_json(&resource),
        })
    }

    /// Applies a manifest to an existing resource of a kind without an apply RPC (the
    /// executions): unchanged when the manifest gives nothing the resource does not hold
    /// already, otherwise an update of what it gives. What it leaves out stays, such as the
    /// session the server started an execution in.
    async fn reapply(
        &self,
        kind: &KindInfo,
        slug: &str,
        message: DynamicMessage,
        stored: &Value,
    ) -> Result<Applied, ClientError> {
        let mut changes = to_json(&message);
        let given_id = changes["metadata"]["id"].as_str().unwrap_or_default();
        let stored_id = stored["metadata"]["id"].as_str().unwrap_or_default();
        if !given_id.is_empty() && given_id != stored_id {
            return Err(ClientError::Usage(format!(
                "metadata.id is {given_id:?} but {} {slug:?} is {stored_id}; remove metadata.id to apply this manifest to it",
                kind.name
            )));
        }
        // The revision the manifest carries, else the one just read: either way a change made
        // in between fails instead of being overwritten.
        let revision = match &changes["metadata"]["revision"] {
            Value::Null => stored["metadata"]["revision"].clone(),
            given => given.clone(),
        };
        if let Some(object) = changes.as_object_mut() {
            object.remove("status");
        }
        if let Some(metadata) = changes["metadata"].as_object_mut() {
            metadata.remove("id");
            metadata.remove("revision");
        }
        let mut merged = stored.clone();
        merge(&mut merged, &changes);
        if merged == *stored {
            return Ok(Applied {
                outcome: Outcome::Unchanged,
                resource: stored.clone(),
            });
        }
        let method = self.method(kind, "Command", "update").ok_or_else(|| {
            ClientError::Usage(format!(
                "{} {slug:?} exists and cannot be changed; delete it first",
                kind.name
            ))
        })?;
        merged["metadata"]["revision"] = revision;
        let request = DynamicMessage::deserialize(kind.message.clone(), &merged)
            .map_err(|err| ClientError::Usage(format!("not a valid {}: {err}", kind.name)))?;
        let resource = to_json(&self.invoke(method, request).await?);
        Ok(Applied {
            outcome: outcome(Some(stored), &resource),
            resource,
        })
    }

    /// The resource of `kind` whose slug is `slug`: by getByReference, or through the list for
    /// kinds without it (executions, sessions), so that every kind is found by the name shown.
    pub(crate) async fn find_by_slug(
        &self,
        kind: &KindInfo,
        slug: &str,
    ) -> Result<Option<Value>, ClientError> {
        let Some(method) = self.method(kind, "Query", "getByReference") else {
            return self.find_in_list(kind, slug).await;
        };
        let mut request = DynamicMessage::new(method.input.clone());
        request.set_field_by_name("slug", Field::String(slug.to_string()));
        match self.invoke(method, request).await {
            Ok(found) => Ok(Some(to_json(&found))),
            Err(ClientError::Status(status)) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    async fn find_in_list(
        &self,
        kind: &KindInfo,
        slug: &str,
    ) -> Result<Option<Value>, ClientError> {
        let mut found = None;
        self.each_page(kind, "", |items| {
            found = items
                .into_iter()
                .find(|item| item["metadata"]["slug"] == slug);
            found.is_none()
        })
        .await?;
        Ok(found)
    }

    /// Calls `on_page` with every page of a kind's list until it returns false.
    async fn each_page(
        &self,
        kind: &KindInfo,
        label_selector: &str,
        mut on_page: impl FnMut(Vec<Value>) -> bool,
    ) -> Result<(), ClientError> {
        let method = self.method(kind, "Query", "list").ok_or_else(|| {
            let KindNames { name, plural, .. } = names_of(kind);
            ClientError::Usage(format!(
                "{plural} cannot be found by name: the server offers no list of them; use the id (`stigmer get {name} ID`)"
            ))
        })?;
        let mut token = String::new();
        loop {
            let mut request = DynamicMessage::new(method.input.clone());
            request.set_field_by_name("page_size", Field::I32(1000));
            request.set_field_by_name("page_token", Field::String(token.clone()));
            if !label_selector.is_empty() {
                request
                    .set_field_by_name("label_selector", Field::String(label_selector.to_string()));
            }
            let page = to_json(&self.invoke(method, request).await?);
            let mut items = Vec::new();
            for field in ["items", "entries"] {
                if let Some(Value::Array(page_items)) = page.get(field) {
                    items.extend(page_items.iter().cloned());
                }
            }
            if !on_page(items) {
                return Ok(());
            }
            match page.get("nextPageToken").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => token = next.to_string(),
                _ => return Ok(()),
            }
        }
    }

    /// One resource by id (`agt-…`) or by name/slug.
    pub async fn get(&self, kind: &str, name_or_id: &str) -> Result<Value, ClientError> {
        let kind = Arc::clone(self.kind_for(kind, Operation::Get)?);
        if name_or_id.starts_with(&format!("{}-", kind.id_prefix)) {
            let method = self.required(&kind, "Query", "get")?;
            let mut request = DynamicMessage::new(method.input.clone());
            request.set_field_by_name("value", Field::String(name_or_id.to_string()));
            return Ok(to_json(&self.invoke(method, request).await?));
        }
        self.find_by_slug(&kind, &slug_from_name(name_or_id))
            .await?
            .ok_or_else(|| {
                ClientError::Status(tonic::Status::not_found(format!(
                    "{} {name_or_id:?} not found",
                    kind.name
                )))
            })
    }

    /// Every resource of a kind in the org, all pages, optionally filtered by labels.
    pub async fn list(&self, kind: &str, label_selector: &str) -> Result<Vec<Value>, ClientError> {
        let kind = Arc::clone(self.kind_for(kind, Operation::List)?);
        let mut items = Vec::new();
        self.each_page(&kind, label_selector, |page| {
            items.extend(page);
            true
        })
        .await?;
        Ok(items)
    }

    /// Deletes a resource by id or name; returns it as it was.
    pub async fn delete(&self, kind: &str, name_or_id: &str) -> Result<Value, ClientError> {
        let kind = Arc::clone(self.kind_for(kind, Operation::Delete)?);
        let found = self.get(&kind.name, name_or_id).await?;
        let id = found["metadata"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let method = self.required(&kind, "Command", "delete")?;
        let mut request = DynamicMessage::new(method.input.clone());
        let field = if method.input.get_field_by_name("value").is_some() {
            "value"
        } else {
            "resource_id"
        };
        request.set_field_by_name(field, Field::String(id));
        Ok(to_json(&self.invoke(method, request).await?))
    }

    /// Changes of one kind (or all), from `since_revision` (0: the current state first).
    pub async fn watch(
        &self,
        kind: Option<&str>,
        since_revision: i64,
    ) -> Result<WatchStream, ClientError> {
        let kind_name = kind
            .map(|k| self.kind(k).map(|k| k.name.clone()))
            .transpose()?;
        let method = backend_method("watch")?;
        let (input, output) = (method.input(), method.output());
        let mut request = DynamicMessage::new(input);
        request.set_field_by_name("kind", Field::String(kind_name.unwrap_or_default()));
        request.set_field_by_name("since_revision", Field::I64(since_revision));
        let mut grpc = tonic::client::Grpc::new(self.transport())
            .max_decoding_message_size(stigmer_core::MAX_MESSAGE_SIZE);
        grpc.ready()
            .await
            .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
        let path = http::uri::PathAndQuery::from_str(WATCH)
            .map_err(|err| ClientError::Config(err.to_string()))?;
        let stream = grpc
            .server_streaming(
                tonic::Request::new(request),
                path,
                DynamicCodec::new(output),
            )
            .await?
            .into_inner();
        let catalog = self.catalog.clone();
        Ok(Box::pin(stream.map(move |event| {
            event.map(|event| event_json(&catalog, &event))
        })))
    }

    /// The identity account the client's API key belongs to (IdentityAccountQueryController
    /// whoAmI). A server without authentication answers FAILED_PRECONDITION.
    pub async fn whoami(&self) -> Result<Value, ClientError> {
        let method = stigmer_api::DESCRIPTOR_POOL
            .get_service_by_name(IDENTITY_QUERIES)
            .and_then(|service| service.methods().find(|m| m.name() == "whoAmI"))
            .ok_or_else(|| {
                ClientError::Config(format!("the API lacks {IDENTITY_QUERIES}.whoAmI"))
            })?;
        let path = format!("/{IDENTITY_QUERIES}/whoAmI");
        let request = DynamicMessage::new(method.input());
        Ok(to_json(&self.call(&path, request, method.output()).await?))
    }

    /// The server's version, revision, backend and counts.
    pub async fn info(&self) -> Result<Value, ClientError> {
        let method = backend_method("info")?;
        let (input, output) = (method.input(), method.output());
        Ok(to_json(
            &self.call(INFO, DynamicMessage::new(input), output).await?,
        ))
    }
}

/// A watch event with its resource unpacked from `Any`.
fn event_json(catalog: &stigmer_core::catalog::Catalog, event: &DynamicMessage) -> Value {
    let mut json = to_json(event);
    let resource = event.get_field_by_name("resource").and_then(|any| {
        let any = any.as_message()?.clone();
        let type_url = any.get_field_by_name("type_url")?.as_str()?.to_string();
        let bytes = any.get_field_by_name("value")?.as_bytes()?.clone();
        let name = type_url.rsplit('/').next()?.to_string();
        let kind = catalog
            .kinds()
            .iter()
            .find(|k| k.message.full_name() == name)?;
        let message = DynamicMessage::decode(kind.message.clone(), bytes.as_ref()).ok()?;
        Some(to_json(&message))
    });
    if let (Some(resource), Some(object)) = (resource, json.as_object_mut()) {
        object.insert("resource".into(), resource);
    }
    json
}

const IDENTITY_QUERIES: &str = "ai.stigmer.iam.identityaccount.v1.IdentityAccountQueryController";
const EXPORT: &str = "/ai.stigmer.backend.v1.ResourceService/export";
const APPLY_BATCH: &str = "/ai.stigmer.backend.v1.ResourceService/applyBatch";
const IMPORT: &str = "/ai.stigmer.backend.v1.ResourceService/import";
/// Resources per import call, well under the request size limit for ordinary resources.
const IMPORT_BATCH: usize = 200;

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub created: i64,
    pub updated: i64,
    pub unchanged: i64,
}

pub(crate) fn backend_method(name: &str) -> Result<prost_reflect::MethodDescriptor, ClientError> {
    stigmer_api::DESCRIPTOR_POOL
        .get_service_by_name("ai.stigmer.backend.v1.ResourceService")
        .and_then(|service| service.methods().find(|m| m.name() == name))
        .ok_or_else(|| ClientError::Config(format!("the API lacks ResourceService.{name}")))
}

impl Client {
    /// Every resource of the org (or of `kinds`) exactly as stored, without revisions, read at
    /// one revision, in id order.
    pub async fn export(&self, kinds: &[String]) -> Result<Export, ClientError> {
        let method = backend_method("export")?;
        let mut request = DynamicMessage::new(method.input());
        let names = kinds
            .iter()
            .map(|k| self.kind(k).map(|k| Field::String(k.name.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        request.set_field_by_name("kinds", Field::List(names));
        let mut grpc = tonic::client::Grpc::new(self.transport())
            .max_decoding_message_size(stigmer_core::MAX_MESSAGE_SIZE);
        grpc.ready()
            .await
            .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
        let path = http::uri::PathAndQuery::from_str(EXPORT)
            .map_err(|err| ClientError::Config(err.to_string()))?;
        let mut stream = grpc
            .server_streaming(
                tonic::Request::new(request),
                path,
                DynamicCodec::new(method.output()),
            )
            .await?
            .into_inner();
        let mut export = Export::default();
        while let Some(item) = stream.message().await? {
            match item.get_field_by_name("omitted").as_deref() {
                Some(Field::String(reason)) if !reason.is_empty() => {
                    export.omitted.push(reason.clone());
                }
                _ => export.resources.push(exported_document(&item)?),
            }
        }
        Ok(export)
    }

    /// Writes exported resources back, keeping ids; resources already stored as exported are
    /// left alone, so importing twice changes nothing the second time. Each 200 resources are
    /// one call and one transaction: when a call fails, the ones before it stay imported, and
    /// importing the same resources again finishes the job.
    pub async fn import(&self, resources: &[Value]) -> Result<ImportSummary, ClientError> {
        let method = backend_method("import")?;
        let item_type = method
            .input()
            .get_field_by_name("resources")
            .and_then(|f| f.kind().as_message().cloned())
            .ok_or_else(|| ClientError::Config("ImportRequest lacks resources".into()))?;
        let mut summary = ImportSummary::default();
        for batch in resources.chunks(IMPORT_BATCH) {
            let mut items = Vec::with_capacity(batch.len());
            for resource in batch {
                let mut item = DynamicMessage::new(item_type.clone());
                let kind = resource
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let id = resource["metadata"]["id"].as_str().unwrap_or_default();
                item.set_field_by_name("kind", Field::String(kind.to_string()));
                item.set_field_by_name("id", Field::String(id.to_string()));
                let (document, versions) = split_versions(resource, &item_type)?;
                item.set_field_by_name("json", Field::String(document.to_string()));
                item.set_field_by_name("versions", Field::List(versions));
                items.push(Field::Message(item));
            }
            let mut request = DynamicMessage::new(method.input());
            request.set_field_by_name("resources", Field::List(items));
            let done = to_json(&self.call(IMPORT, request, method.output()).await?);
            let count = |field: &str| done.get(field).and_then(Value::as_i64).unwrap_or_default();
            summary.created += count("created");
            summary.updated += count("updated");
            summary.unchanged += count("unchanged");
        }
        Ok(summary)
    }
}

/// What an export returned.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Export {
    /// One document per resource, as [`Client::import`] takes them.
    pub resources: Vec<Value>,
    /// Why each resource the server could not send was left out (too large for one message:
    /// stored before the size limit, or edited by hand).
    pub omitted: Vec<String>,
}

/// Where an export document keeps the versions (and artifacts) of a versioned resource.
pub const EXPORTED_VERSIONS: &str = "exportedVersions";

/// An exported resource as one JSON document: the resource, plus its versions under
/// [`EXPORTED_VERSIONS`] (artifacts base64-encoded) for versioned kinds.
fn exported_document(item: &DynamicMessage) -> Result<Value, ClientError> {
    let text = |message: &DynamicMessage, field: &str| {
        message
            .get_field_by_name(field)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let bad = |err: serde_json::Error| {
        ClientError::Config(format!("the server exported bad JSON: {err}"))
    };
    let mut document: Value = serde_json::from_str(&text(item, "json")).map_err(bad)?;
    if let Some(Field::List(versions)) = item.get_field_by_name("versions").map(|v| v.into_owned())
        && !versions.is_empty()
    {
        let mut list = Vec::new();
        for version in versions.iter().filter_map(Field::as_message) {
            let artifact = match version.get_field_by_name("artifact").as_deref() {
                Some(Field::Bytes(bytes)) => encode_base64(bytes),
                _ => String::new(),
            };
            list.push(serde_json::json!({
                "versionHash": text(version, "version_hash"),
                "tag": text(version, "tag"),
                "resource": serde_json::from_str::<Value>(&text(version, "json")).map_err(bad)?,
                "artifact": artifact,
            }));
        }
        if let Some(object) = document.as_object_mut() {
            object.insert(EXPORTED_VERSIONS.into(), Value::Array(list));
        }
    }
    Ok(document)
}

/// The resource document without its exported versions, and those versions as messages.
fn split_versions(
    resource: &Value,
    item_type: &prost_reflect::MessageDescriptor,
) -> Result<(Value, Vec<Field>), ClientError> {
    let mut document = resource.clone();
    let versions = document
        .as_object_mut()
        .and_then(|object| object.remove(EXPORTED_VERSIONS))
        .unwrap_or(Value::Null);
    let Some(version_type) = item_type
        .get_field_by_name("versions")
        .and_then(|f| f.kind().as_message().cloned())
    else {
        return Ok((document, Vec::new()));
    };
    let mut messages = Vec::new();
    for version in versions.as_array().into_iter().flatten() {
        let mut message = DynamicMessage::new(version_type.clone());
        let text = |field: &str| {
            version
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        message.set_field_by_name("version_hash", Field::String(text("versionHash")));
        message.set_field_by_name("tag", Field::String(text("tag")));
        message.set_field_by_name(
            "json",
            Field::String(
                version
                    .get("resource")
                    .cloned()
                    .unwrap_or(Value::Null)
                    .to_string(),
            ),
        );
        let artifact = decode_base64(&text("artifact")).ok_or_else(|| {
            ClientError::Usage(format!("{EXPORTED_VERSIONS}: an artifact is not base64"))
        })?;
        message.set_field_by_name("artifact", Field::Bytes(artifact.into()));
        messages.push(Field::Message(message));
    }
    Ok((document, messages))
}

/// Standard base64, as proto3 JSON writes bytes.
fn encode_base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
}
