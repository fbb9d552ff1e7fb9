//! Export and import: every resource of an org as stored (ids, audit fields, sealed secrets),
//! read at one revision, and written back idempotently. Revisions are left out: they belong to
//! the database that assigns them.

use std::sync::Arc;

use prost_reflect::{DynamicMessage, MessageDescriptor, Value};
use stigmer_secrets::{is_sealed, key_id_of};
use stigmer_store::{ChangeFilter, Mutation, NewResource, Scope};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::controller::Controller;
use crate::error::{ApiError, FieldViolation};
use crate::feed::EventStream;
use crate::fields::{get_str, set, set_str};
use crate::limits::{Footprint, MAX_RESOURCE_SIZE, row_size, servable, unservable_reason};
use crate::resource::{Caller, meta};
use crate::validation::check;

const PAGE: usize = 256;

/// The stored JSON without `metadata.revision`.
fn without_revision(data: &str) -> Result<serde_json::Value, ApiError> {
    let mut json: serde_json::Value = serde_json::from_str(data).map_err(ApiError::internal)?;
    if let Some(metadata) = json
        .get_mut("metadata")
        .and_then(serde_json::Value::as_object_mut)
    {
        metadata.remove("revision");
    }
    Ok(json)
}

/// An export item that says why its resource was left out, so that one resource too large to
/// send never blocks a backup of the rest.
fn omitted(
    mut item: DynamicMessage,
    row: &stigmer_store::StoredResource,
    size: usize,
) -> DynamicMessage {
    let reason = unservable_reason(&row.scope.kind, &row.id, size);
    tracing::warn!(kind = %row.scope.kind, id = %row.id, size, "{reason}");
    set_str(&mut item, "omitted", reason);
    item
}

impl Controller {
    pub(crate) async fn export(
        self: &Arc<Self>,
        caller: &Caller,
        request: DynamicMessage,
        output: MessageDescriptor,
    ) -> Result<EventStream, ApiError> {
        let mut kinds = Vec::new();
        if let Some(Value::List(names)) = request.get_field_by_name("kinds").as_deref() {
            for name in names.iter().filter_map(Value::as_str) {
                let kind = self.catalog.org_kind_by_name(name).ok_or_else(|| {
                    ApiError::invalid_field(
                        "ExportRequest",
                        "kinds",
                        format!("{name:?} is not a kind"),
                    )
                })?;
                kinds.push(kind.name.clone());
            }
        }
        let mut snapshot = self
            .store
            .snapshot(ChangeFilter {
                org: caller.org.clone(),
                kind: None,
                id: None,
            })
            .await?;
        let (tx, rx) = mpsc::channel(64);
        let app = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let page = match snapshot.next_page(PAGE).await {
                    Ok(page) if page.is_empty() => return,
                    Ok(page) => page,
                    Err(err) => {
                        let _ = tx.send(Err(ApiError::from(err).into())).await;
                        return;
                    }
                };
                for row in page {
                    if !kinds.is_empty() && !kinds.contains(&row.scope.kind) {
                        continue;
                    }
                    let item = app.exported(&row, &output).await;
                    if tx.send(item.map_err(Into::into)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Box::pin(
            ReceiverStream::new(rx).map(|item| item.map(crate::codec::Reply::from)),
        ))
    }

    /// One stored resource as an ExportedResource, with its versions and their artifacts.
    async fn exported(
        &self,
        row: &stigmer_store::StoredResource,
        output: &MessageDescriptor,
    ) -> Result<DynamicMessage, ApiError> {
        let mut item = DynamicMessage::new(output.clone());
        set_str(&mut item, "kind", row.scope.kind.clone());
        set_str(&mut item, "id", row.id.clone());
        if !servable(row) {
            return Ok(omitted(item, row, row_size(row)));
        }
        set_str(&mut item, "json", without_revision(&row.data)?.to_string());
        let versioned = self
            .catalog
            .org_kind_by_name(&row.scope.kind)
            .is_some_and(|k| k.versioned);
        let version_type = output
            .get_field_by_name("versions")
            .and_then(|f| f.kind().as_message().cloned());
        if let (true, Some(version_type)) = (versioned, version_type) {
            let mut versions = Vec::new();
            for version in self.store.versions(row.id.clone()).await? {
                let artifact = self
                    .store
                    .artifact(version.version_hash.clone())
                    .await?
                    .unwrap_or_default();
                let mut exported = DynamicMessage::new(version_type.clone());
                set_str(&mut exported, "version_hash", version.version_hash);
                set_str(&mut exported, "tag", version.tag);
                set_str(
                    &mut exported,
                    "json",
                    without_revision(&version.data)?.to_string(),
                );
                set(&mut exported, "artifact", Value::Bytes(artifact.into()));
                versions.push(Value::Message(exported));
            }
            set(&mut item, "versions", Value::List(versions));
        }
        let size = prost::Message::encoded_len(&item);
        if size > MAX_RESOURCE_SIZE {
            // A Skill with many large versions: every version is bounded, their sum is not.
            let mut item = DynamicMessage::new(output.clone());
            set_str(&mut item, "kind", row.scope.kind.clone());
            set_str(&mut item, "id", row.id.clone());
            return Ok(omitted(item, row, size));
        }
        Ok(item)
    }

    pub(crate) async fn import(
        &self,
        caller: &Caller,
        request: DynamicMessage,
        output: &MessageDescriptor,
    ) -> Result<DynamicMessage, ApiError> {
        check(&self.validator, &request, Vec::new())?;
        let items = match request.get_field_by_name("resources").as_deref() {
            Some(Value::List(items)) => items
                .iter()
                .filter_map(Value::as_message)
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        let (mut created, mut updated, mut unchanged) = (0, 0, 0);
        let mut mutations = Vec::new();
        let mut violations = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let path = format!("resources[{index}]");
            match self.import_one(caller, item, &path).await {
                Ok(Some((mutation, is_new))) => {
                    if is_new {
                        created += 1
                    } else {
                        updated += 1
                    }
                    mutations.push(mutation);
                }
                Ok(None) => unchanged += 1,
                Err(violation) => violations.push(violation),
            }
            match imported_versions(item, &path) {
                Ok(versions) => mutations.extend(versions),
                Err(violation) => violations.push(violation),
            }
        }
        if !violations.is_empty() {
            return Err(ApiError::invalid("ImportRequest", violations));
        }
        if !mutations.is_empty() {
            self.store.transact(mutations).await?;
        }
        let mut response = DynamicMessage::new(output.clone());
        set(&mut response, "created", Value::I32(created));
        set(&mut response, "updated", Value::I32(updated));
        set(&mut response, "unchanged", Value::I32(unchanged));
        Ok(response)
    }

    /// The write one exported resource needs (with whether it creates), or none if it is
    /// already stored as exported.
    async fn import_one(
        &self,
        caller: &Caller,
        item: &DynamicMessage,
        path: &str,
    ) -> Result<Option<(Mutation, bool)>, FieldViolation> {
        let bad = |field: &str, why: String| FieldViolation::new(format!("{path}.{field}"), why);
        let kind_name = get_str(item, "kind");
        let kind = self
            .catalog
            .org_kind_by_name(&kind_name)
            .ok_or_else(|| bad("kind", format!("{kind_name:?} is not a kind")))?;
        let omitted = get_str(item, "omitted");
        if !omitted.is_empty() {
            return Err(bad(
                "omitted",
                format!("the export left this resource out, so it cannot be imported: {omitted}"),
            ));
        }
        let json = get_str(item, "json");
        let resource = crate::json::from_json(&kind.message, &json)
            .map_err(|_| bad("json", format!("is not a valid {}", kind.name)))?;
        let meta = meta(&resource);
        if meta.id != get_str(item, "id") || !meta.id.starts_with(&format!("{}-", kind.id_prefix)) {
            return Err(bad(
                "id",
                format!("must be the {} id in its json", kind.name),
            ));
        }
        if meta.org != caller.org {
            return Err(bad(
                "json",
                format!("belongs to org {:?}; import it into that org", meta.org),
            ));
        }
        self.check_sealed_keys(&json)
            .map_err(|why| bad("json", format!("{} {:?} {why}", kind.name, meta.name)))?;
        let scope = Scope::new(kind.name.clone(), meta.org.clone());
        let proto = self.secrets.public_encoding(&resource);
        Footprint::of(self.secrets, &resource, &json, &proto)
            .check(&kind.name)
            .map_err(|err| bad("json", err.to_string()))?;
        let row = NewResource {
            scope: scope.clone(),
            id: meta.id.clone(),
            slug: meta.slug.clone(),
            data: json.clone(),
            proto: Some(proto),
        };
        match self.store.get(scope, meta.id.clone()).await {
            Ok(None) => Ok(Some((Mutation::Create(row), true))),
            Ok(Some(stored)) => {
                let same = without_revision(&stored.data)
                    .ok()
                    .zip(serde_json::from_str::<serde_json::Value>(&json).ok())
                    .is_some_and(|(a, b)| a == b);
                Ok((!same).then_some((
                    Mutation::Replace {
                        resource: row,
                        expected_revision: stored.revision,
                    },
                    false,
                )))
            }
            Err(err) => Err(bad("id", format!("cannot be read: {err}"))),
        }
    }

    /// Every sealed value must be openable by this server's keys.
    fn check_sealed_keys(&self, json: &str) -> Result<(), String> {
        for token in json.split('"').filter(|part| is_sealed(part)) {
            let id = key_id_of(token).unwrap_or_default();
            if !self.keyring.contains(id) {
                return Err(format!(
                    "holds a secret sealed under master key {id}, which this server does not \
                     have: restart the server with the key of the server that exported it \
                     (STIGMER_MASTER_KEY, or a copy of its key file such as \
                     ~/.stigmer/stigmer.key given to --master-key-file), then import again"
                ));
            }
        }
        Ok(())
    }
}

/// The artifact and version writes of an exported resource's versions, each artifact checked
/// against its hash. Versions keep their order; upserts make a second import a no-op.
fn imported_versions(item: &DynamicMessage, path: &str) -> Result<Vec<Mutation>, FieldViolation> {
    use sha2::Digest;
    let Some(Value::List(versions)) = item.get_field_by_name("versions").map(|v| v.into_owned())
    else {
        return Ok(Vec::new());
    };
    let resource_id = get_str(item, "id");
    let mut mutations = Vec::new();
    for (index, version) in versions.iter().filter_map(Value::as_message).enumerate() {
        let hash = get_str(version, "version_hash");
        let artifact = match version.get_field_by_name("artifact").as_deref() {
            Some(Value::Bytes(bytes)) => bytes.to_vec(),
            _ => Vec::new(),
        };
        if hex::encode(sha2::Sha256::digest(&artifact)) != hash {
            return Err(FieldViolation::new(
                format!("{path}.versions[{index}].artifact"),
                "does not match its version_hash; the export is damaged",
            ));
        }
        mutations.push(Mutation::PutArtifact {
            hash: hash.clone(),
            bytes: artifact,
        });
        mutations.push(Mutation::PutVersion {
            resource_id: resource_id.clone(),
            version_hash: hash,
            tag: get_str(version, "tag"),
            data: get_str(version, "json"),
            revision: Some(i64::try_from(index).unwrap_or(i64::MAX) + 1),
        });
    }
    Ok(mutations)
}
