//! ai.stigmer.backend.v1.ResourceService: the change feed (watch), reads at past revisions and
//! facts about the server. The guarantees of watch live in `stigmer_store::watch`; this module
//! turns its items into WatchEvent messages.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prost::bytes::Bytes;
use prost_reflect::{DynamicMessage, MessageDescriptor, Value};
use stigmer_store::{AtRevision, ChangeFilter, ChangeType, Scope, WatchItem, WatchOptions};
use tokio_stream::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::catalog::KindInfo;
use crate::codec::Reply;
use crate::controller::Controller;
use crate::encode::encode_message;
use crate::error::{ApiError, FieldViolation};
use crate::fields::{get_i64, get_str, set, set_str};
use crate::json::from_json;
use crate::limits::{MAX_RESOURCE_SIZE, unservable_reason};
use crate::resource::Caller;
use crate::validation::check;

/// Rows per step of a watch's snapshot and replay.
const WATCH_PAGE: usize = 256;
/// Events buffered per watcher for a client that reads slowly.
const WATCH_BUFFER: usize = 256;

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
        let options = WatchOptions {
            filter: ChangeFilter {
                org,
                kind: kind.map(|k| k.name.clone()),
                id: (!id.is_empty()).then_some(id),
            },
            since_revision: get_i64(&request, "since_revision"),
            page_size: WATCH_PAGE,
            buffer: WATCH_BUFFER,
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
        match &item {
            WatchItem::Change(change) => {
                let revision = change.revision;
                if let Some(metrics) = &self.watch_metrics {
                    metrics.delivered(revision);
                }
                self.events
                    .get_or_encode(revision, || {
                        Ok(encode_message(&self.watch_event(descriptor, item)?).into())
                    })
                    .map(Reply::Encoded)
            }
            WatchItem::Snapshot { .. } => self.watch_event(descriptor, item).map(Reply::Message),
        }
    }

    fn watch_event(
        &self,
        descriptor: &MessageDescriptor,
        item: WatchItem,
    ) -> Result<DynamicMessage, ApiError> {
        match item {
            WatchItem::Snapshot { revision, resource } => self.event(
                descriptor,
                revision,
                SNAPSHOT,
                &resource.scope.kind,
                &resource.id,
                &resource.data,
            ),
            WatchItem::Change(change) => {
                let event_type = match change.change_type {
                    ChangeType::Created => CREATED,
                    ChangeType::Updated => UPDATED,
                    ChangeType::Deleted => DELETED,
                };
                self.event(
                    descriptor,
                    change.revision,
                    event_type,
                    &change.scope.kind,
                    &change.id,
                    &change.data,
                )
            }
        }
    }

    fn event(
        &self,
        descriptor: &MessageDescriptor,
        revision: i64,
        event_type: i32,
        kind: &str,
        id: &str,
        data: &str,
    ) -> Result<DynamicMessage, ApiError> {
        let info = self.catalog.org_kind_by_name(kind).ok_or_else(|| {
            ApiError::internal(format!("the change log names an unknown kind {kind:?}"))
        })?;
        let mut event = DynamicMessage::new(descriptor.clone());
        set(&mut event, "revision", Value::I64(revision));
        set(&mut event, "type", Value::EnumNumber(event_type));
        set_str(&mut event, "kind", kind);
        set_str(&mut event, "id", id);
        match self.any(info, data)? {
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
    fn any(&self, kind: &KindInfo, data: &str) -> Result<Result<DynamicMessage, usize>, ApiError> {
        if data.len() > MAX_RESOURCE_SIZE {
            return Ok(Err(data.len()));
        }
        let mut resource = from_json(&kind.message, data)?;
        self.secrets.redact(&mut resource);
        let value = encode_message(&resource);
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
        set(&mut any, "value", Value::Bytes(value.into()));
        Ok(Ok(any))
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
            } => self.event(event, changed_at, SNAPSHOT, &kind.name, &id, &data),
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
            let known: Vec<&str> = app
                .catalog
                .kinds()
                .iter()
                .filter(|k| !k.is_iam())
                .map(|k| k.name.as_str())
                .collect();
            violations.push(FieldViolation::new(
                "kind",
                format!("{name:?} is not a kind; use one of {}", known.join(", ")),
            ));
        }
        found
    };
    check(&app.validator, request, violations)?;
    Ok(kind)
}

/// Encoded WatchEvents of the most recent changes, by revision. A revision names one change of
/// one resource, so its event is the same for every watcher of ResourceService/watch.
pub(crate) struct EventCache {
    slots: Mutex<Vec<Option<(i64, Bytes)>>>,
}

/// Changes whose events are kept: enough for every watcher to pass a burst of writes.
const CACHED_EVENTS: usize = 4096;

impl EventCache {
    pub(crate) fn new() -> Self {
        Self {
            slots: Mutex::new(vec![None; CACHED_EVENTS]),
        }
    }

    /// The cached event of `revision`, or `encode`'s, which is then cached. Two watchers may
    /// encode the same event at once; both results are equal.
    fn get_or_encode(
        &self,
        revision: i64,
        encode: impl FnOnce() -> Result<Bytes, ApiError>,
    ) -> Result<Bytes, ApiError> {
        let slot = usize::try_from(revision.rem_euclid(CACHED_EVENTS as i64)).unwrap_or(0);
        if let Some((cached, bytes)) = &self.lock()[slot]
            && *cached == revision
        {
            return Ok(bytes.clone());
        }
        let bytes = encode()?;
        self.lock()[slot] = Some((revision, bytes.clone()));
        Ok(bytes)
    }

    /// Slots are replaced whole, so a panic elsewhere cannot leave one half-written.
    fn lock(&self) -> MutexGuard<'_, Vec<Option<(i64, Bytes)>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
