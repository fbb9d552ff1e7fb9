//! ai.stigmer.backend.v1.ResourceService: the change feed (watch), reads at past revisions and
//! facts about the server. The guarantees of watch live in `stigmer_store::watch`; this module
//! turns its items into WatchEvent messages.

use std::pin::Pin;
use std::sync::Arc;

use prost::bytes::Bytes;
use prost_reflect::{DynamicMessage, MessageDescriptor, Value};
use stigmer_core::cached_encoding::CachedRow;
use stigmer_store::{AtRevision, Change, ChangeFilter, ChangeType, Scope, WatchItem, WatchOptions};
use tokio_stream::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::catalog::{Catalog, KindInfo};
use crate::codec::Reply;
use crate::controller::Controller;
use crate::encode::encode_message;
use crate::error::{ApiError, FieldViolation};
use crate::fields::{get_i64, get_str, set, set_str};
use crate::json::from_json;
use crate::limits::{MAX_RESOURCE_SIZE, unservable_reason};
use crate::resource::Caller;
use crate::secrets::SecretMap;
use crate::validation::check;

/// Rows per step of a watch's snapshot and replay.
const WATCH_PAGE: usize = 256;
/// Events buffered per watcher for a client that reads slowly.
const QUEUED_PER_WATCHER: usize = 256;

pub(crate) type EventStream = Pin<Box<dyn Stream<Item = Result<Reply, tonic::Status>> + Send>>;

// WatchEvent.type values.
const SNAPSHOT: i32 = 1;
const CREATED: i32 = 2;
const UPDATED: i32 = 3;
const DELETED: i32 = 4;

impl Controller {
    pub(crate) async fn watch(
        self: &Arc<Self>,
        caller: &Caller,
        request: DynamicMessage,
        event: MessageDescriptor,
    ) -> Result<EventStream, ApiError> {
        let kind = optional_kind(self, &get_str(&request, "kind"), Vec::new(), &request)?;
        let org = match get_str(&request, "org") {
            org if org.is_empty() => caller.org.clone(),
            org => org,
        };
        let id = get_str(&request, "id");
        let since_revision = get_i64(&request, "since_revision");
        let until_revision = match get_i64(&request, "until_revision") {
            0 => None,
            until if until < since_revision => {
                return Err(ApiError::invalid_field(
                    "watch request",
                    "until_revision",
                    format!("must be 0 (no end) or at least since_revision ({since_revision})"),
                ));
            }
            until => Some(until),
        };
        let options = WatchOptions {
            filter: ChangeFilter {
                org,
                kind: kind.map(|k| k.name.clone()),
                id: (!id.is_empty()).then_some(id),
            },
            since_revision,
            until_revision,
            page_size: WATCH_PAGE,
            queued_per_watcher: QUEUED_PER_WATCHER,
            stop: Some(self.shutdown.signal()),
        };
        let items = stigmer_store::watch(Arc::clone(&self.store), options);
        let app = Arc::clone(self);
        let events = ReceiverStream::new(items).map(move |item| {
            item.map_err(ApiError::from)
                .and_then(|item| app.watch_reply(&event, item))
                .map_err(tonic::Status::from)
        });
        Ok(Box::pin(events))
    }

    /// A live or replayed change is the same event for every watcher, so it is encoded once
    /// and shared (`EventCache`); snapshot items are the watcher's own.
    fn watch_reply(
        &self,
        descriptor: &MessageDescriptor,
        item: WatchItem,
    ) -> Result<Reply, ApiError> {
        let events = Events {
            catalog: &self.catalog,
            secrets: self.secrets,
            descriptor,
        };
        match item {
            WatchItem::Change(change) => {
                let revision = change.revision;
                if let Some(metrics) = &self.watch_metrics {
                    metrics.delivered(revision);
                }
                self.events
                    .get_or_encode(revision, || {
                        Ok(encode_message(&events.change(&change)?).into())
                    })
                    .map(Reply::Encoded)
            }
            WatchItem::Snapshot { revision, resource } => events
                .event(
                    revision,
                    SNAPSHOT,
                    &resource.scope.kind,
                    &resource.id,
                    Resource::Json(&resource.data),
                )
                .map(Reply::Message),
        }
    }

    pub(crate) async fn get_at_revision(
        &self,
        caller: &Caller,
        request: DynamicMessage,
        event: &MessageDescriptor,
    ) -> Result<DynamicMessage, ApiError> {
        let name = get_str(&request, "kind");
        let kind = optional_kind(self, &name, Vec::new(), &request)?.ok_or_else(|| {
            ApiError::invalid_field("GetAtRevisionRequest", "kind", "is required")
        })?;
        let id = get_str(&request, "id");
        let revision = get_i64(&request, "revision");
        let scope = Scope::new(kind.name.clone(), caller.org.clone());
        match self.store.at_revision(scope, id.clone(), revision).await? {
            AtRevision::Existed {
                revision: changed_at,
                data,
            } => Events {
                catalog: &self.catalog,
                secrets: self.secrets,
                descriptor: event,
            }
            .event(changed_at, SNAPSHOT, &kind.name, &id, Resource::Json(&data)),
            AtRevision::Absent => Err(ApiError::NotFound {
                kind: kind.name.clone(),
                id: format!("{id} at revision {revision}"),
            }),
            AtRevision::OutOfRange(bounds) => Err(ApiError::OutOfRange(format!(
                "revision {revision} is outside the retained change log, which holds revisions {} to {}",
                bounds.compacted + 1,
                bounds.current
            ))),
        }
    }

    pub(crate) async fn info(
        &self,
        caller: &Caller,
        output: &MessageDescriptor,
    ) -> Result<DynamicMessage, ApiError> {
        let info = self.store.info(caller.org.clone()).await?;
        let mut response = DynamicMessage::new(output.clone());
        set_str(&mut response, "version", env!("CARGO_PKG_VERSION"));
        set(&mut response, "revision", Value::I64(info.bounds.current));
        set_str(&mut response, "backend", info.backend);
        set_str(&mut response, "database", info.database);
        set_str(&mut response, "location", info.location);
        set(
            &mut response,
            "compacted_revision",
            Value::I64(info.bounds.compacted),
        );
        let counts = info
            .counts
            .into_iter()
            .map(|(kind, count)| (prost_reflect::MapKey::String(kind), Value::I64(count)))
            .collect();
        set(&mut response, "counts", Value::Map(counts));
        set(
            &mut response,
            "writes_committed",
            Value::U64(info.writes_committed),
        );
        set(
            &mut response,
            "transactions_committed",
            Value::U64(info.transactions_committed),
        );
        set(
            &mut response,
            "writes_pending",
            Value::U64(info.writes_pending),
        );
        let bytes = info.database_bytes.unwrap_or(0);
        set(
            &mut response,
            "database_bytes",
            Value::I64(i64::try_from(bytes).unwrap_or(i64::MAX)),
        );
        Ok(response)
    }
}

/// The kind a request names, if any; an unknown name is a field violation.
fn optional_kind<'a>(
    app: &'a Controller,
    name: &str,
    mut violations: Vec<FieldViolation>,
    request: &DynamicMessage,
) -> Result<Option<&'a Arc<KindInfo>>, ApiError> {
    let kind = if name.is_empty() {
        None
    } else {
        let found = app.catalog.org_kind_by_name(name);
        if found.is_none() {
            violations.push(FieldViolation::new(
                "kind",
                app.catalog.not_an_org_kind(name),
            ));
        }
        found
    };
    check(&app.validator, request, violations)?;
    Ok(kind)
}

/// What a WatchEvent's resource is made from.
enum Resource<'a> {
    /// A stored document: decoded, redacted and encoded.
    Json(&'a str),
    /// The encoding the write stored (already redacted), with the row's id and revision
    /// patched in as reads do (`stigmer_core::cached_encoding`).
    Encoded(Bytes),
}

/// Builds WatchEvent messages.
struct Events<'a> {
    catalog: &'a Catalog,
    secrets: &'a SecretMap,
    descriptor: &'a MessageDescriptor,
}

impl Events<'_> {
    /// A change's event, from the encoding its write stored when it carries one (a live
    /// create or update), from its JSON otherwise (replayed from the log, a delete, another
    /// replica's change on PostgreSQL, a kind without the envelope fields).
    fn change(&self, change: &Change) -> Result<DynamicMessage, ApiError> {
        let event_type = match change.change_type {
            ChangeType::Created => CREATED,
            ChangeType::Updated => UPDATED,
            ChangeType::Deleted => DELETED,
        };
        let envelope = self
            .catalog
            .org_kind_by_name(&change.scope.kind)
            .and_then(|kind| kind.patcher);
        let resource = match (envelope, &change.proto) {
            (Some(envelope), Some(cached)) => Resource::Encoded(envelope.served(CachedRow {
                cached,
                id: &change.id,
                revision: change.revision,
            })),
            _ => Resource::Json(&change.data),
        };
        let mut event = self.event(
            change.revision,
            event_type,
            &change.scope.kind,
            &change.id,
            resource,
        )?;
        set(&mut event, "transaction", Value::I64(change.txn));
        let commit_time = self
            .descriptor
            .get_field_by_name("commit_time")
            .and_then(|field| field.kind().as_message().cloned())
            .ok_or_else(|| ApiError::internal("WatchEvent lacks commit_time"))?;
        let mut timestamp = DynamicMessage::new(commit_time);
        set(
            &mut timestamp,
            "seconds",
            Value::I64(change.committed_at_ms.div_euclid(1000)),
        );
        let nanos = i32::try_from(change.committed_at_ms.rem_euclid(1000) * 1_000_000).unwrap_or(0);
        set(&mut timestamp, "nanos", Value::I32(nanos));
        set(&mut event, "commit_time", Value::Message(timestamp));
        Ok(event)
    }

    fn event(
        &self,
        revision: i64,
        event_type: i32,
        kind: &str,
        id: &str,
        resource: Resource<'_>,
    ) -> Result<DynamicMessage, ApiError> {
        let info = self.catalog.org_kind_by_name(kind).ok_or_else(|| {
            ApiError::internal(format!("the change log names an unknown kind {kind:?}"))
        })?;
        let mut event = DynamicMessage::new(self.descriptor.clone());
        set(&mut event, "revision", Value::I64(revision));
        set(&mut event, "type", Value::EnumNumber(event_type));
        set_str(&mut event, "kind", kind);
        set_str(&mut event, "id", id);
        match self.any(info, resource)? {
            Ok(any) => set(&mut event, "resource", Value::Message(any)),
            Err(size) => {
                // One such row must not end every watch of its kind (`limits.rs`).
                let reason = unservable_reason(kind, id, size);
                tracing::warn!(kind, id, size, revision, "{reason}");
                set_str(&mut event, "resource_omitted", reason);
            }
        }
        Ok(event)
    }

    /// A stored resource, its secrets redacted, as `google.protobuf.Any`, so grpcurl and typed
    /// clients can unpack it; `Err(size)` when it is too large to send.
    fn any(
        &self,
        kind: &KindInfo,
        resource: Resource<'_>,
    ) -> Result<Result<DynamicMessage, usize>, ApiError> {
        let value = match resource {
            Resource::Json(data) if data.len() > MAX_RESOURCE_SIZE => return Ok(Err(data.len())),
            Resource::Json(data) => {
                let mut resource = from_json(&kind.message, data)?;
                self.secrets.redact(&mut resource);
                Bytes::from(encode_message(&resource))
            }
            Resource::Encoded(bytes) => bytes,
        };
        if value.len() > MAX_RESOURCE_SIZE {
            return Ok(Err(value.len()));
        }
        let descriptor = kind
            .message
            .parent_pool()
            .get_message_by_name("google.protobuf.Any")
            .ok_or_else(|| {
                ApiError::internal("google.protobuf.Any is not in the descriptor pool")
            })?;
        let mut any = DynamicMessage::new(descriptor);
        set_str(
            &mut any,
            "type_url",
            format!("type.googleapis.com/{}", kind.message.full_name()),
        );
        set(&mut any, "value", Value::Bytes(value));
        Ok(Ok(any))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stigmer_store::StoredResource;

    fn catalog() -> Catalog {
        Catalog::build(&stigmer_api::DESCRIPTOR_POOL, crate::kinds::KINDS).expect("catalog")
    }

    fn watch_event() -> MessageDescriptor {
        stigmer_api::DESCRIPTOR_POOL
            .get_message_by_name("ai.stigmer.backend.v1.WatchEvent")
            .expect("WatchEvent")
    }

    /// An Environment as a write stores it: the JSON with its revision, a secret sealed.
    const STORED: &str = r#"{"apiVersion":"agentic.stigmer.ai/v1","kind":"Environment",
        "metadata":{"id":"env-01jz0000000000000000000000","name":"prod","slug":"prod",
        "org":"local","ownerScope":"organization","labels":{"team":"core"},"revision":"7"},
        "spec":{"description":"production","data":{
            "REGION":{"value":"eu-west-1"},
            "TOKEN":{"value":"stigmer:sealed:v1:abc","isSecret":true}}}}"#;

    /// The event's fields, its resource decoded: equal events, however their bytes differ
    /// (a cached encoding carries its id and revision in a second `metadata`).
    fn decoded(kind: &KindInfo, event: &DynamicMessage) -> (DynamicMessage, DynamicMessage) {
        let mut event = event.clone();
        let Some(Value::Message(any)) = event.get_field_by_name("resource").as_deref().cloned()
        else {
            panic!("no resource in {event:?}");
        };
        event.clear_field_by_name("resource");
        let Some(Value::Bytes(value)) = any.get_field_by_name("value").as_deref().cloned() else {
            panic!("no value in {any:?}");
        };
        let resource = DynamicMessage::decode(kind.message.clone(), value).expect("a resource");
        (event, resource)
    }

    #[test]
    fn an_event_from_the_writers_encoding_equals_the_one_from_the_json() {
        let catalog = catalog();
        let kind = catalog
            .org_kind_by_name("Environment")
            .expect("Environment");
        let descriptor = watch_event();
        let events = Events {
            catalog: &catalog,
            secrets: SecretMap::api(),
            descriptor: &descriptor,
        };
        let row = StoredResource {
            scope: Scope::new("Environment", "local"),
            id: "env-01jz0000000000000000000000".into(),
            slug: "prod".into(),
            revision: 7,
            data: STORED.into(),
            proto: Some(crate::controller::cached_encoding(kind, STORED).expect("encoding")),
        };
        for change_type in [ChangeType::Created, ChangeType::Updated] {
            let written = Change::written(7, change_type, &row, 6, 1_764_300_000_123);
            assert!(
                written.proto.is_some(),
                "{change_type:?} carries the encoding"
            );
            let replayed = Change {
                proto: None,
                ..written.clone()
            };
            let event = events.change(&written).expect("from bytes");
            assert_eq!(
                event.get_field_by_name("transaction").as_deref(),
                Some(&Value::I64(6))
            );
            let committed = event.get_field_by_name("commit_time").expect("commit_time");
            let committed = committed.as_message().expect("a Timestamp");
            assert_eq!(
                (
                    committed.get_field_by_name("seconds").as_deref().cloned(),
                    committed.get_field_by_name("nanos").as_deref().cloned()
                ),
                (
                    Some(Value::I64(1_764_300_000)),
                    Some(Value::I32(123_000_000))
                )
            );
            let from_bytes = decoded(kind, &event);
            let from_json = decoded(kind, &events.change(&replayed).expect("from JSON"));
            assert_eq!(from_bytes, from_json, "{change_type:?}");
            let meta = from_bytes
                .1
                .get_field_by_name("metadata")
                .expect("metadata");
            let meta = meta.as_message().expect("a message");
            assert_eq!(
                meta.get_field_by_name("revision").as_deref(),
                Some(&Value::I64(7))
            );
            let redacted = format!("{:?}", from_bytes.1);
            assert!(!redacted.contains("sealed"), "secrets redacted: {redacted}");
        }
        // A delete's resource is the one before it, at an older revision than the event's:
        // only its JSON says which.
        assert!(
            Change::written(8, ChangeType::Deleted, &row, 8, 1_764_300_000_456)
                .proto
                .is_none()
        );
    }
}
