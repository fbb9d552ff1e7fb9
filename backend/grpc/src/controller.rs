//! The one generic controller: every Command/Query RPC of every kind is
//! validate → default/derive server-owned fields → store → respond.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::Notify;

use prost_protovalidate::{Validator, ValidatorOption};
use prost_reflect::{DynamicMessage, Value};
use stigmer_store::{Mutation, NewResource, Scope, Store, StoreError, StoredResource};

use crate::auth::Auth;
use crate::catalog::{Catalog, KindInfo, Method, Verb};
use crate::codec::Reply;
use crate::error::ApiError;
use crate::event_cache::EventCache;
use crate::fields::{get_i32, get_i64, get_str, set};
use crate::json::{from_json, to_json};
use crate::key_locks::{KeyLocks, id_key, slug_key};
use crate::limits::{Footprint, servable, too_large_to_serve};
use crate::resource::{
    self, Caller, meta, org_of, prepare_update, requested_slug, same_content, set_revision,
};
use crate::secrets::SecretMap;
use crate::shutdown::Shutdown;
use crate::validation::check;
use stigmer_secrets::Keyring;

/// Read-modify-write attempts before an update without an expected revision gives up.
pub(crate) const MAX_ATTEMPTS: usize = 32;

/// Everything a request needs: the store, what is served, and the compiled rules.
pub struct Controller {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) validator: Arc<Validator>,
    pub(crate) keyring: Keyring,
    pub(crate) secrets: &'static SecretMap,
    /// Watch events encoded once for every watcher (`feed.rs`).
    pub(crate) events: EventCache,
    /// Woken when a read had to decode a row without a cached encoding (`cache_fill.rs`).
    pub(crate) cache_misses: Notify,
    /// Read-modify-write calls on one resource wait for each other (`key_locks.rs`).
    pub(crate) key_locks: KeyLocks,
    /// Ends watches and subscriptions when the server shuts down (`shutdown.rs`).
    pub(crate) shutdown: Shutdown,
    /// Who calls and what they may do (`auth/`).
    pub(crate) auth: Arc<Auth>,
    /// Watch lag, with `--metrics-listen` (`metrics.rs`).
    pub(crate) watch_metrics: Option<Arc<crate::metrics::WatchMetrics>>,
}

impl Controller {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        catalog: Catalog,
        keyring: Keyring,
        auth: Auth,
    ) -> Self {
        Self {
            auth: Arc::new(auth),
            store,
            catalog: Arc::new(catalog),
            keyring,
            secrets: SecretMap::api(),
            events: EventCache::new(),
            cache_misses: Notify::new(),
            key_locks: KeyLocks::default(),
            shutdown: Shutdown::new(),
            watch_metrics: None,
            // The validator reads rules from descriptors it is given; without our descriptor
            // set it would see no rules at all and accept everything.
            validator: Arc::new(Validator::with_options(&[
                ValidatorOption::AdditionalDescriptorSetBytes(
                    stigmer_api::FILE_DESCRIPTOR_SET.to_vec(),
                ),
            ])),
        }
    }

    /// The same controller over another store, for work that must not reach the real one
    /// until it commits (`batch.rs`): rules, keys and authorization shared; locks, the event
    /// cache and cache-miss signals its own.
    pub(crate) fn with_store(&self, store: Arc<dyn Store>) -> Controller {
        Controller {
            store,
            catalog: Arc::clone(&self.catalog),
            validator: Arc::clone(&self.validator),
            keyring: self.keyring.clone(),
            secrets: self.secrets,
            events: EventCache::new(),
            cache_misses: Notify::new(),
            key_locks: KeyLocks::default(),
            shutdown: self.shutdown.clone(),
            auth: Arc::clone(&self.auth),
            watch_metrics: self.watch_metrics.clone(),
        }
    }

    pub(crate) async fn handle(
        &self,
        method: &Method,
        caller: &Caller,
        request: DynamicMessage,
    ) -> Result<Reply, ApiError> {
        let kind = &method.kind;
        match self.dispatch(method, caller, request).await? {
            Reply::Message(mut response) => {
                // Secrets leave the server only on the just-in-time path (ExecutionContext reads).
                let just_in_time = is_just_in_time(kind)
                    && matches!(method.verb, Verb::Get | Verb::GetByReference);
                if !just_in_time {
                    self.secrets.redact(&mut response);
                }
                Ok(Reply::Message(response))
            }
            // Built from encodings stored redacted (`SecretMap::public_encoding`).
            encoded @ Reply::Encoded(_) => Ok(encoded),
        }
    }

    async fn dispatch(
        &self,
        method: &Method,
        caller: &Caller,
        request: DynamicMessage,
    ) -> Result<Reply, ApiError> {
        let kind = &method.kind;
        if kind.is_iam() {
            return self
                .serve_iam(method, caller, request)
                .await
                .map(Reply::Message);
        }
        let message = match method.verb {
            Verb::Get => return self.get(kind, caller, request).await,
            Verb::GetByReference => return self.get_by_reference(kind, caller, request).await,
            Verb::List | Verb::ListBy => return self.list(method, caller, request).await,
            Verb::Create => return self.create(kind, caller, request).await,
            Verb::Update => return self.update(kind, caller, request).await,
            Verb::Apply => return self.apply(kind, caller, request).await,
            Verb::Delete => self.delete(kind, caller, request).await,
            Verb::UpdateStatus => self.update_status(kind, caller, request).await,
            Verb::Push => self.push_skill(kind, caller, request).await,
            Verb::GetArtifact => self.get_artifact(method, request).await,
            Verb::Subscribe | Verb::Unserved => Err(ApiError::Unimplemented(format!(
                "{} is not offered by this server yet",
                method.path
            ))),
        };
        message.map(Reply::Message)
    }

    async fn create(
        &self,
        kind: &KindInfo,
        caller: &Caller,
        resource: DynamicMessage,
    ) -> Result<Reply, ApiError> {
        let (mut resource, start) = self
            .checked_new(kind, caller, resource, &[], |_| Ok(()))
            .await?;
        let related = self
            .related_writes(kind, caller, &mut resource, start)
            .await?;
        let id = meta(&resource).id;
        let mut mutations = related.before;
        mutations.push(Mutation::Create(new_row(kind, &resource)?));
        mutations.extend(related.after);
        let stored = self
            .store
            .transact(mutations)
            .await
            .map_err(|err| related_slug_taken(kind, &resource, err))?;
        let row = stored.iter().find(|row| row.id == id).ok_or_else(|| {
            ApiError::internal("the created resource is missing from its transaction")
        })?;
        Ok(written(kind, resource, row))
    }

    async fn update(
        &self,
        kind: &KindInfo,
        caller: &Caller,
        resource: DynamicMessage,
    ) -> Result<Reply, ApiError> {
        let id = meta(&resource).id;
        if id.is_empty() {
            return Err(ApiError::invalid_field(
                kind.name.clone(),
                "metadata.id",
                "is required by update (use apply to create-or-update by name)",
            ));
        }
        let scope = Scope::new(kind.name.clone(), org_of(&resource, caller));
        self.update_existing(kind, caller, scope, id, resource)
            .await
    }

    /// Read-modify-write with compare-and-swap on the revision. A caller that sent its expected
    /// revision is told when it is stale; one that did not gets last-writer-wins, retried here.
    async fn update_existing(
        &self,
        kind: &KindInfo,
        caller: &Caller,
        scope: Scope,
        id: String,
        request: DynamicMessage,
    ) -> Result<Reply, ApiError> {
        let expected = meta(&request).revision;
        let _key = self
            .key_locks
            .lock(id_key(&kind.name, &scope.org, &id))
            .await;
        for _ in 0..MAX_ATTEMPTS {
            let (stored_row, stored) = self.load(kind, &scope, &id, expected).await?;
            let mut updated = request.clone();
            let mut violations =
                prepare_update(kind, &stored, &mut updated, caller, SystemTime::now());
            violations.extend(self.before_update(kind, &stored, &mut updated).await?);
            violations.extend(
                self.secrets
                    .seal(&self.keyring, &mut updated, Some(&stored))?,
            );
            check(&self.validator, &updated, violations)?;
            if same_content(&stored, &updated) {
                return Ok(written(kind, stored, &stored_row));
            }
            match self
                .store
                .replace(new_row(kind, &updated)?, stored_row.revision)
                .await
            {
                Ok(row) => return Ok(written(kind, updated, &row)),
                Err(StoreError::Conflict { .. }) if expected == 0 => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(ApiError::Unavailable(format!(
            "{} {id} is being changed by many writers at once; retry",
            kind.name
        )))
    }

    /// The stored row and resource `id`, refused as ABORTED when `expected` (non-zero) is not
    /// its revision.
    pub(crate) async fn load(
        &self,
        kind: &KindInfo,
        scope: &Scope,
        id: &str,
        expected: i64,
    ) -> Result<(StoredResource, DynamicMessage), ApiError> {
        let row = self
            .store
            .get(scope.clone(), id.to_string())
            .await?
            .ok_or_else(|| not_found(kind, id))?;
        if expected != 0 && row.revision != expected {
            return Err(ApiError::Aborted {
                kind: kind.name.clone(),
                id: id.to_string(),
                expected,
                current: row.revision,
            });
        }
        let resource = decode_row(kind, &row)?;
        Ok((row, resource))
    }

    async fn apply(
        &self,
        kind: &KindInfo,
        caller: &Caller,
        resource: DynamicMessage,
    ) -> Result<Reply, ApiError> {
        let slug = requested_slug(kind, &resource)
            .map_err(|violation| ApiError::invalid(kind.name.clone(), vec![violation]))?;
        let scope = Scope::new(kind.name.clone(), org_of(&resource, caller));
        let given_id = meta(&resource).id;
        let _key = self
            .key_locks
            .lock(slug_key(&kind.name, &scope.org, &slug))
            .await;
        for _ in 0..MAX_ATTEMPTS {
            match self.applied_to(&scope, &resource, &slug).await? {
                Some(existing) => {
                    if !given_id.is_empty() && given_id != existing.id {
                        return Err(ApiError::invalid_field(
                            kind.name.clone(),
                            "metadata.id",
                            format!(
                                "is {given_id:?} but slug {slug:?} belongs to {}",
                                existing.id
                            ),
                        ));
                    }
                    return self
                        .update_existing(kind, caller, scope, existing.id, resource)
                        .await;
                }
                None if meta(&resource).revision != 0 => {
                    // The caller expected a resource at some revision; it is gone.
                    return Err(ApiError::NotFound {
                        kind: kind.name.clone(),
                        id: format!("{}/{slug}", scope.org),
                    });
                }
                None => match self.create(kind, caller, resource.clone()).await {
                    // Someone created it between our lookup and our insert: update theirs.
                    Err(ApiError::AlreadyExists { .. }) => continue,
                    other => return other,
                },
            }
        }
        Err(ApiError::Unavailable(format!(
            "{} {slug:?} is being created and deleted by many writers at once; retry",
            kind.name
        )))
    }

    /// The resource an apply updates: the one with `slug`, else, for a slug derived from a
    /// name with letters outside ASCII, the one named so before slugs transliterated them
    /// (ADR 0009), so that re-applying an old manifest updates rather than duplicates.
    async fn applied_to(
        &self,
        scope: &Scope,
        resource: &DynamicMessage,
        slug: &str,
    ) -> Result<Option<StoredResource>, ApiError> {
        if let Some(found) = self
            .store
            .get_by_slug(scope.clone(), slug.to_string())
            .await?
        {
            return Ok(Some(found));
        }
        let meta = meta(resource);
        let legacy = crate::naming::legacy_slug_from_name(&meta.name);
        if !meta.slug.is_empty() || legacy == slug || legacy.is_empty() {
            return Ok(None);
        }
        let found = self.store.get_by_slug(scope.clone(), legacy).await?;
        Ok(found.filter(|row| decode_row_name(row).as_deref() == Some(meta.name.as_str())))
    }

    async fn delete(
        &self,
        kind: &KindInfo,
        caller: &Caller,
        request: DynamicMessage,
    ) -> Result<DynamicMessage, ApiError> {
        check(&self.validator, &request, Vec::new())?;
        let id = id_of(&request);
        let expected = get_i64(&request, "expected_revision");
        let scope = Scope::new(kind.name.clone(), caller.org.clone());
        let _key = self
            .key_locks
            .lock(id_key(&kind.name, &scope.org, &id))
            .await;
        for _ in 0..MAX_ATTEMPTS {
            let (row, stored) = self.load(kind, &scope, &id, expected).await?;
            let mut mutations = vec![Mutation::Delete {
                scope: scope.clone(),
                id: id.clone(),
                expected_revision: Some(row.revision),
            }];
            mutations.extend(self.before_delete(kind, &stored).await?);
            match self.store.transact(mutations).await {
                Ok(_) if servable(&row) => return Ok(stored),
                Ok(_) => return Ok(envelope_only(stored)),
                Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) if expected == 0 => {
                    continue;
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(ApiError::Unavailable(format!(
            "{} {id} is being changed by many writers at once; retry",
            kind.name
        )))
    }

    async fn get(
        &self,
        kind: &KindInfo,
        caller: &Caller,
        request: DynamicMessage,
    ) -> Result<Reply, ApiError> {
        check(&self.validator, &request, Vec::new())?;
        let id = id_of(&request);
        let scope = Scope::new(kind.name.clone(), caller.org.clone());
        match self.store.get(scope, id.clone()).await? {
            Some(row) => self.readable(kind, row).await,
            None => Err(not_found(kind, &id)),
        }
    }

    async fn get_by_reference(
        &self,
        kind: &KindInfo,
        caller: &Caller,
        reference: DynamicMessage,
    ) -> Result<Reply, ApiError> {
        let mut violations = Vec::new();
        let ref_kind = get_i32(&reference, "kind");
        if ref_kind != 0 && ref_kind != kind.number {
            violations.push(crate::error::FieldViolation::new(
                "kind",
                format!(
                    "is {ref_kind} but this service serves {} ({})",
                    kind.name, kind.number
                ),
            ));
        }
        let slug = get_str(&reference, "slug");
        if slug.is_empty() {
            violations.push(crate::error::FieldViolation::new("slug", "is required"));
        }
        let version = get_str(&reference, "version");
        if !kind.versioned && !version.is_empty() && version != "latest" {
            violations.push(crate::error::FieldViolation::new(
                "version",
                format!(
                    "{} is not versioned; leave version empty or \"latest\"",
                    kind.name
                ),
            ));
        }
        check(&self.validator, &reference, violations)?;
        let org = match get_str(&reference, "org") {
            org if org.is_empty() => caller.org.clone(),
            org => org,
        };
        let scope = Scope::new(kind.name.clone(), org.clone());
        match self.store.get_by_slug(scope, slug.clone()).await? {
            Some(row) if kind.versioned && !version.is_empty() && version != "latest" => self
                .version_of(kind, &decode_row(kind, &row)?, &version)
                .await
                .map(Reply::Message),
            Some(row) => {
                // The reference names a slug; the log line names the id it resolved to.
                record_row_id(&row);
                self.readable(kind, row).await
            }
            None => Err(ApiError::NotFound {
                kind: kind.name.clone(),
                id: format!("{org}/{slug}"),
            }),
        }
    }

    /// What a read returns: the resource itself, from its cached encoding when the row has
    /// one, except an ExecutionContext, whose secrets are resolved just in time.
    async fn readable(&self, kind: &KindInfo, row: StoredResource) -> Result<Reply, ApiError> {
        if !servable(&row) {
            return Err(too_large_to_serve(&row));
        }
        if is_just_in_time(kind) {
            return self
                .resolve_context(decode_row(kind, &row)?)
                .await
                .map(Reply::Message);
        }
        if let Some(reply) = served(kind, &row) {
            return Ok(reply);
        }
        self.note_uncached(&row);
        decode_row(kind, &row).map(Reply::Message)
    }
}

/// A create whose own slug is free but whose related resource's is not (an Agent named "x"
/// when an AgentInstance "x-default" exists) cannot succeed until the user changes something:
/// FAILED_PRECONDITION naming both, not ALREADY_EXISTS for a resource the caller never named
/// (which `apply` would also take for a lost race and retry).
fn related_slug_taken(kind: &KindInfo, resource: &DynamicMessage, err: StoreError) -> ApiError {
    match err {
        StoreError::AlreadyExists {
            kind: other_kind,
            org,
            slug: other_slug,
        } if other_kind != kind.name => {
            let slug = meta(resource).slug;
            let related = if other_kind.ends_with("Instance") {
                format!("its default instance ({other_kind})")
            } else {
                format!("the {other_kind} created with it")
            };
            ApiError::FailedPrecondition(format!(
                "{} {slug:?} cannot be created: {related} would take slug {other_slug:?}, which \
                 another {other_kind} in org {org:?} already uses; rename or delete that \
                 {other_kind}, or give the {} another name",
                kind.name, kind.name
            ))
        }
        other => other.into(),
    }
}

impl Controller {
    /// Wakes the refill (`cache_fill.rs`) when a read had to decode a row for want of its
    /// cached encoding; rows that have one never need it.
    pub(crate) fn note_uncached(&self, row: &StoredResource) {
        if row.proto.is_none() {
            self.cache_misses.notify_one();
        }
    }
}

/// The answer to a write: the stored row's cached encoding (the resource as written, redacted),
/// or, when the row has none, `resource` with the row's revision.
fn written(kind: &KindInfo, mut resource: DynamicMessage, row: &StoredResource) -> Reply {
    match served(kind, row) {
        Some(reply) => {
            // The request of a create has no id, and the log line cannot read it from bytes.
            record_row_id(row);
            reply
        }
        None => {
            set_revision(&mut resource, row.revision);
            Reply::Message(resource)
        }
    }
}

/// The row's cached encoding as the answer, if it has one.
fn served(kind: &KindInfo, row: &StoredResource) -> Option<Reply> {
    let row = crate::cached_rows::cached_row(row)?;
    Some(Reply::Encoded(kind.patcher?.served(row)))
}

/// The reply to a delete of a row too large to send back whole (`limits.rs`): the resource
/// without its spec and status, so that such a row can still be deleted through the API.
fn envelope_only(mut resource: DynamicMessage) -> DynamicMessage {
    for field in ["spec", "status"] {
        crate::fields::clear(&mut resource, field);
    }
    tracing::warn!(
        id = %meta(&resource).id,
        "deleted a resource too large to return; the reply carries its metadata only"
    );
    resource
}

/// Names the resource in the call's log line.
fn record_row_id(row: &StoredResource) {
    tracing::Span::current().record("id", row.id.as_str());
}

/// ExecutionContext reads open its secrets for a running execution (`jit.rs`).
fn is_just_in_time(kind: &KindInfo) -> bool {
    kind.name == "ExecutionContext"
}

/// The fields an id-style request carries its resource id in: `value` in the *Id messages,
/// `resource_id` in ApiResourceDeleteInput.
pub(crate) const ID_FIELDS: [&str; 2] = ["value", "resource_id"];

/// The resource id an id-style request carries (see [`ID_FIELDS`]).
pub(crate) fn id_of(request: &DynamicMessage) -> String {
    ID_FIELDS
        .iter()
        .map(|field| get_str(request, field))
        .find(|id| !id.is_empty())
        .unwrap_or_default()
}

pub(crate) fn not_found(kind: &KindInfo, id: &str) -> ApiError {
    ApiError::NotFound {
        kind: kind.name.clone(),
        id: id.to_string(),
    }
}

/// The row a write stores for `resource`; RESOURCE_EXHAUSTED when it would be too large to
/// serve back (`limits.rs`).
pub(crate) fn new_row(kind: &KindInfo, resource: &DynamicMessage) -> Result<NewResource, ApiError> {
    let meta = resource::meta(resource);
    let data = to_json(resource)?;
    let secrets = SecretMap::api();
    let proto = secrets.public_encoding(resource);
    Footprint::of(secrets, resource, &data, &proto).check(&kind.name)?;
    Ok(NewResource {
        scope: Scope::new(kind.name.clone(), meta.org),
        id: meta.id,
        slug: meta.slug,
        data,
        proto: Some(proto),
    })
}

/// The encoding a write of the resource in `data` stores for reads: what [`new_row`] stores,
/// made from the JSON instead of the written message.
pub(crate) fn cached_encoding(kind: &KindInfo, data: &str) -> Result<Vec<u8>, ApiError> {
    let mut resource = from_json(&kind.message, data)?;
    // A write encodes before its revision is known; reads add the row's revision to the bytes.
    if let Some(metadata) = crate::fields::child_mut(&mut resource, "metadata") {
        crate::fields::clear(metadata, "revision");
    }
    Ok(SecretMap::api().public_encoding(&resource))
}

/// `metadata.name` of a stored row, read from its JSON.
fn decode_row_name(row: &StoredResource) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(&row.data).ok()?;
    json.pointer("/metadata/name")?.as_str().map(str::to_string)
}

pub(crate) fn decode_row(
    kind: &KindInfo,
    row: &StoredResource,
) -> Result<DynamicMessage, ApiError> {
    let mut resource = from_json(&kind.message, &row.data)?;
    // The column is authoritative should a hand edit have touched only the JSON.
    set_revision(&mut resource, row.revision);
    if let Some(metadata) = crate::fields::child_mut(&mut resource, "metadata") {
        set(metadata, "id", Value::String(row.id.clone()));
    }
    Ok(resource)
}
