//! The one generic controller: every Command/Query RPC of every kind is
//! validate → default/derive server-owned fields → store → respond.

use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prost::Message;
use prost::bytes::{Bytes, BytesMut};
use prost_protovalidate::{Validator, ValidatorOption};
use prost_reflect::{DynamicMessage, Kind, ReflectMessage, Value};
use stigmer_store::{
    JsonFilter, ListPage, ListQuery, Mutation, NewResource, Scope, Store, StoreError,
    StoredResource,
};

use crate::catalog::{Catalog, KindInfo, Method, Verb};
use crate::codec::Reply;
use crate::error::ApiError;
use crate::feed::EventCache;
use crate::fields::{get_i32, get_i64, get_str, has, set, set_str};
use crate::json::{from_json, to_json};
use crate::resource::{
    self, API_VERSION, Caller, meta, org_of, prepare_create, prepare_update, requested_slug,
    same_content, set_revision,
};
use crate::secrets::SecretMap;
use crate::validation::check;
use stigmer_secrets::Keyring;

pub(crate) const DEFAULT_PAGE_SIZE: usize = 100;
pub(crate) const MAX_PAGE_SIZE: usize = 1000;
/// Read-modify-write attempts before an update without an expected revision gives up.
pub(crate) const MAX_ATTEMPTS: usize = 32;

/// Everything a request needs: the store, what is served, and the compiled rules.
pub struct App {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) catalog: Catalog,
    pub(crate) validator: Validator,
    pub(crate) keyring: Keyring,
    pub(crate) secrets: &'static SecretMap,
    /// Watch events encoded once for every watcher (`feed.rs`).
    pub(crate) events: EventCache,
}

impl App {
    pub fn new(store: Arc<dyn Store>, catalog: Catalog, keyring: Keyring) -> Self {
        Self {
            store,
            catalog,
            keyring,
            secrets: SecretMap::api(),
            events: EventCache::new(),
            // The validator reads rules from descriptors it is given; without our descriptor
            // set it would see no rules at all and accept everything.
            validator: Validator::with_options(&[ValidatorOption::AdditionalDescriptorSetBytes(
                stigmer_api::FILE_DESCRIPTOR_SET.to_vec(),
            )]),
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
            Verb::Subscribe | Verb::NotYet => Err(ApiError::Unimplemented(format!(
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
        mut resource: DynamicMessage,
    ) -> Result<Reply, ApiError> {
        let mut violations = prepare_create(kind, &mut resource, caller, SystemTime::now());
        let (more, related) = self.before_create(kind, caller, &mut resource).await?;
        violations.extend(more);
        violations.extend(self.secrets.seal(&self.keyring, &mut resource, None)?);
        check(&self.validator, &resource, violations)?;
        let id = meta(&resource).id;
        let mut mutations = related.before;
        mutations.push(Mutation::Create(new_row(kind, &resource)?));
        mutations.extend(related.after);
        let stored = self.store.transact(mutations).await?;
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
        for _ in 0..MAX_ATTEMPTS {
            match self.store.get_by_slug(scope.clone(), slug.clone()).await? {
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
        for _ in 0..MAX_ATTEMPTS {
            let (row, stored) = self.load(kind, &scope, &id, expected).await?;
            let mut mutations = vec![Mutation::Delete {
                scope: scope.clone(),
                id: id.clone(),
                expected_revision: Some(row.revision),
            }];
            mutations.extend(self.before_delete(kind, &stored).await?);
            match self.store.transact(mutations).await {
                Ok(_) => return Ok(stored),
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
                record_id(&row);
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
        if is_just_in_time(kind) {
            return self
                .resolve_context(decode_row(kind, &row)?)
                .await
                .map(Reply::Message);
        }
        if let Some(reply) = served(kind, &row) {
            return Ok(reply);
        }
        decode_row(kind, &row).map(Reply::Message)
    }

    async fn list(
        &self,
        method: &Method,
        caller: &Caller,
        request: DynamicMessage,
    ) -> Result<Reply, ApiError> {
        check(&self.validator, &request, Vec::new())?;
        let kind = &method.kind;
        let scope = Scope::new(kind.name.clone(), caller.org.clone());
        let limit = page_size(&request);
        let after_id = page_token::decode(&get_str(&request, "page_token"), &scope)?;
        let mut filters = list_filters(&request)?;
        if let Some(by) = &method.list_by {
            // The parent id is a required field of these requests; its rule ran above.
            filters.push(JsonFilter::Equals {
                path: by.path.into(),
                value: get_str(&request, by.field),
            });
        }
        let page = self
            .store
            .list(ListQuery {
                scope: scope.clone(),
                after_id,
                limit,
                filters,
                proto_only: true,
            })
            .await?;
        let revision = page.revision;
        let (rows, next_after_id) = fit_in_response(page);
        let mut response = DynamicMessage::new(method.output.clone());
        if let Some(after) = next_after_id {
            set_str(
                &mut response,
                "next_page_token",
                page_token::encode(&scope, &after),
            );
        }
        set_str(&mut response, "api_version", API_VERSION);
        set_str(&mut response, "kind", format!("{}List", kind.name));
        set(&mut response, "revision", Value::I64(revision));
        self.with_items(kind, &response, &rows).map(Reply::Encoded)
    }

    /// `response` with `rows` as its repeated resource field: each row's cached encoding when
    /// it has one, else the row decoded, redacted and encoded. Field order does not matter on
    /// the wire, so the items can follow the other fields.
    fn with_items(
        &self,
        kind: &KindInfo,
        response: &DynamicMessage,
        rows: &[StoredResource],
    ) -> Result<Bytes, ApiError> {
        let descriptor = response.descriptor();
        let items_field = descriptor
            .fields()
            .find(|f| f.is_list() && matches!(f.kind(), Kind::Message(m) if m == kind.message))
            .ok_or_else(|| {
                ApiError::internal(format!(
                    "{} has no list of {}",
                    descriptor.full_name(),
                    kind.name
                ))
            })?;
        let field = items_field.number();
        let envelope = kind.envelope;
        let rows_len: usize = rows.iter().map(served_len).sum();
        let mut out = BytesMut::with_capacity(response.encoded_len() + rows_len + 16 * rows.len());
        response
            .encode(&mut out)
            .map_err(|err| ApiError::internal(format!("encoding a list response: {err}")))?;
        for row in rows {
            if envelope.is_some_and(|e| e.put_item(field, row, &mut out)) {
                continue;
            }
            let mut resource = decode_row(kind, row)?;
            self.secrets.redact(&mut resource);
            prost::encoding::message::encode(field, &resource, &mut out);
        }
        Ok(out.freeze())
    }
}

/// The answer to a write: the stored row's cached encoding (the resource as written, redacted),
/// or, when the row has none, `resource` with the row's revision.
fn written(kind: &KindInfo, mut resource: DynamicMessage, row: &StoredResource) -> Reply {
    match served(kind, row) {
        Some(reply) => {
            // The request of a create has no id, and the log line cannot read it from bytes.
            record_id(row);
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
    kind.envelope?.served(row).map(Reply::Encoded)
}

/// Names the resource in the call's log line.
fn record_id(row: &StoredResource) {
    tracing::Span::current().record("id", row.id.as_str());
}

/// About how many bytes a row takes in a response.
fn served_len(row: &StoredResource) -> usize {
    row.proto.as_ref().map_or(row.data.len(), Vec::len)
}

/// ExecutionContext reads open its secrets for a running execution (`jit.rs`).
fn is_just_in_time(kind: &KindInfo) -> bool {
    kind.name == "ExecutionContext"
}

/// `page_size`, else the deprecated `page_info.size` some upstream requests still carry, else
/// the default; never more than the maximum.
fn page_size(request: &DynamicMessage) -> usize {
    let from_page_info = || {
        crate::fields::child(request, "page_info")
            .map(|info| get_i32(&info, "size"))
            .unwrap_or_default()
    };
    let size = match get_i32(request, "page_size") {
        0 => from_page_info(),
        size => size,
    };
    match usize::try_from(size) {
        Ok(0) | Err(_) => DEFAULT_PAGE_SIZE,
        Ok(size) => size.min(MAX_PAGE_SIZE),
    }
}

/// Most resource bytes one list response carries, leaving room under the 10 MiB message limit.
const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// Ends a page early when its resources would not fit in one response; the next page starts
/// after the last resource kept. A single resource always fits (the write limit is the same).
fn fit_in_response(page: ListPage) -> (Vec<StoredResource>, Option<String>) {
    let mut bytes = 0;
    let keep = page
        .items
        .iter()
        .position(|row| {
            bytes += served_len(row);
            bytes > MAX_PAGE_BYTES
        })
        .map_or(page.items.len(), |overflow| overflow.max(1));
    if keep == page.items.len() {
        return (page.items, page.next_after_id);
    }
    let mut items = page.items;
    items.truncate(keep);
    let next = items.last().map(|row| row.id.clone());
    (items, next)
}

/// Filters a list request asks for: upstream's `tags` (all must be present) and `phase` (an
/// execution's status phase), and our `label_selector` and `name_prefix`.
fn list_filters(request: &DynamicMessage) -> Result<Vec<JsonFilter>, ApiError> {
    let mut filters = Vec::new();
    if let Some(Value::List(tags)) = request.get_field_by_name("tags").as_deref() {
        filters.extend(
            tags.iter()
                .filter_map(Value::as_str)
                .map(|tag| JsonFilter::Contains {
                    path: "$.metadata.tags".into(),
                    value: tag.to_string(),
                }),
        );
    }
    if has(request, "phase") {
        let number = get_i32(request, "phase");
        let name = request
            .descriptor()
            .get_field_by_name("phase")
            .and_then(|f| f.kind().as_enum().and_then(|e| e.get_value(number)))
            .map(|v| v.name().to_string());
        if let Some(name) = name {
            filters.push(JsonFilter::Equals {
                path: "$.status.phase".into(),
                value: name,
            });
        }
    }
    let selector = get_str(request, "label_selector");
    filters.extend(
        crate::selector::parse(&selector)
            .map_err(|why| ApiError::invalid_field("list request", "label_selector", why))?,
    );
    let prefix = get_str(request, "name_prefix");
    if !prefix.is_empty() {
        filters.push(JsonFilter::Prefix {
            path: "$.metadata.name".into(),
            prefix,
        });
    }
    Ok(filters)
}

/// The resource id an id-style request carries (`value` in the *Id messages,
/// `resource_id` in ApiResourceDeleteInput).
fn id_of(request: &DynamicMessage) -> String {
    ["value", "resource_id"]
        .iter()
        .map(|field| get_str(request, field))
        .find(|id| !id.is_empty())
        .unwrap_or_default()
}

fn not_found(kind: &KindInfo, id: &str) -> ApiError {
    ApiError::NotFound {
        kind: kind.name.clone(),
        id: id.to_string(),
    }
}

pub(crate) fn new_row(kind: &KindInfo, resource: &DynamicMessage) -> Result<NewResource, ApiError> {
    let meta = resource::meta(resource);
    Ok(NewResource {
        scope: Scope::new(kind.name.clone(), meta.org),
        id: meta.id,
        slug: meta.slug,
        data: to_json(resource)?,
        proto: Some(SecretMap::api().public_encoding(resource)),
    })
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

/// Opaque page tokens: the listing they belong to and the last id returned, base64url-encoded.
mod page_token {
    use super::*;

    const VERSION: &str = "v1";

    pub(super) fn encode(scope: &Scope, after_id: &str) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{VERSION}\n{}\n{}\n{after_id}",
            scope.kind, scope.org
        ))
    }

    pub(super) fn decode(token: &str, scope: &Scope) -> Result<Option<String>, ApiError> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = |why: &str| {
            ApiError::invalid_field(
                "list request",
                "page_token",
                format!(
                    "{why}; pass the next_page_token of the previous page unchanged, or empty to start over"
                ),
            )
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| invalid("is not a token this server issued"))?;
        let text =
            String::from_utf8(bytes).map_err(|_| invalid("is not a token this server issued"))?;
        let mut parts = text.splitn(4, '\n');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(VERSION), Some(kind), Some(org), Some(after)) => {
                if kind != scope.kind || org != scope.org {
                    Err(invalid("belongs to a different listing"))
                } else {
                    Ok(Some(after.to_string()))
                }
            }
            _ => Err(invalid("is not a token this server issued")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, bytes: usize) -> StoredResource {
        StoredResource {
            scope: Scope::new("Agent", "local"),
            id: id.into(),
            slug: id.into(),
            revision: 1,
            data: "x".repeat(bytes),
            proto: None,
        }
    }

    #[test]
    fn a_page_ends_early_when_it_would_not_fit_in_one_response() {
        let mib = 1024 * 1024;
        let page = ListPage {
            items: vec![
                row("a", 3 * mib),
                row("b", 3 * mib),
                row("c", 3 * mib),
                row("d", 1),
            ],
            next_after_id: None,
            revision: 1,
        };
        let (items, next) = fit_in_response(page);
        assert_eq!(
            items.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(next.as_deref(), Some("b"));

        let small = ListPage {
            items: vec![row("a", 10), row("b", 10)],
            next_after_id: Some("b".into()),
            revision: 1,
        };
        let (items, next) = fit_in_response(small);
        assert_eq!(items.len(), 2);
        assert_eq!(next.as_deref(), Some("b"));

        let huge_first = ListPage {
            items: vec![row("a", 9 * mib), row("b", 1)],
            next_after_id: None,
            revision: 1,
        };
        let (items, next) = fit_in_response(huge_first);
        assert_eq!(items.len(), 1, "one resource always fits");
        assert_eq!(next.as_deref(), Some("a"));
    }

    #[test]
    fn page_tokens_round_trip_and_refuse_other_listings() {
        let scope = Scope::new("Agent", "local");
        let token = page_token::encode(&scope, "agt-123");
        assert_eq!(
            page_token::decode(&token, &scope).expect("valid"),
            Some("agt-123".to_string())
        );
        assert_eq!(page_token::decode("", &scope).expect("empty"), None);
        assert!(page_token::decode(&token, &Scope::new("Workflow", "local")).is_err());
        assert!(page_token::decode(&token, &Scope::new("Agent", "team")).is_err());
        assert!(page_token::decode("%%%", &scope).is_err());
    }
}
