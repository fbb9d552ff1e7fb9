//! ResourceService/find: a search across kinds in the caller's org (docs/adr/0037-search.md).
//! The store picks candidate rows by name, slug, labels and (when asked) JSON text; this file
//! checks each candidate again on the redacted resource, so that a match inside a sealed
//! secret is never reported, and answers with the resource as `get` would.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prost::bytes::Bytes;
use prost_reflect::{DynamicMessage, MessageDescriptor, Value};
use sha2::{Digest, Sha256};
use stigmer_store::{FindCursor, FindQuery, Scope, StoredResource};

use crate::catalog::KindInfo;
use crate::controller::{Controller, decode_row};
use crate::encode::encode_message;
use crate::error::{ApiError, FieldViolation};
use crate::fields::{child, get_i32, get_str, set, set_str};
use crate::limits::MAX_RESOURCE_SIZE;
use crate::listing::{DEFAULT_PAGE_SIZE, MAX_PAGE_BYTES, MAX_PAGE_SIZE, page_token};
use crate::resource::{Caller, meta};
use crate::validation::check;

/// What the request's rules and ours name the request in errors.
const WHAT: &str = "FindApiResourcesRequest";

/// `MatchedField` values (resource_service.proto).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Matched {
    Name = 1,
    Slug = 2,
    Label = 3,
    Text = 4,
}

/// A match as a response item, with its encoded size and its position.
struct Found {
    item: DynamicMessage,
    size: usize,
    cursor: FindCursor,
}

/// A request, checked.
struct Search {
    org: String,
    kinds: Vec<Arc<KindInfo>>,
    needle: String,
    in_text: bool,
    limit: usize,
    after: Option<FindCursor>,
    /// What a page token is bound to, so that one search's token cannot page another.
    token_scope: Scope,
}

impl Controller {
    pub(crate) async fn find_resources(
        &self,
        caller: &Caller,
        mut request: DynamicMessage,
        output: &MessageDescriptor,
    ) -> Result<DynamicMessage, ApiError> {
        if get_str(&request, "org").is_empty() {
            set_str(&mut request, "org", caller.org.clone());
        }
        let search = self.search_of(&request)?;
        let page = self
            .store
            .find(FindQuery {
                org: search.org.clone(),
                kinds: search.kinds.iter().map(|kind| kind.name.clone()).collect(),
                needle: search.needle.clone(),
                in_text: search.in_text,
                after: search.after.clone(),
                limit: search.limit,
            })
            .await?;
        let mut response = DynamicMessage::new(output.clone());
        set(&mut response, "revision", Value::I64(page.revision));
        let (items, next) = self.fitted(&search, &page.items, page.next_after, output)?;
        if let Some(after) = next {
            let token = format!("{}\n{}", after.kind, after.id);
            set_str(
                &mut response,
                "next_page_token",
                page_token::encode(&search.token_scope, &token),
            );
        }
        let items = items.into_iter().map(|found| Value::Message(found.item));
        set(&mut response, "items", Value::List(items.collect()));
        Ok(response)
    }

    /// The rows that still match once redacted, as items, ending the page early when they
    /// would not fit in one response; with where the next page starts.
    fn fitted(
        &self,
        search: &Search,
        rows: &[StoredResource],
        next: Option<FindCursor>,
        output: &MessageDescriptor,
    ) -> Result<(Vec<Found>, Option<FindCursor>), ApiError> {
        let mut items: Vec<Found> = Vec::new();
        let mut bytes = 0;
        for row in rows {
            let Some(found) = self.found(search, row, output)? else {
                continue;
            };
            bytes += found.size;
            if bytes > MAX_PAGE_BYTES && !items.is_empty() {
                // The rest waits for the next page, which starts after the last item kept.
                let last = items.last().map(|found| found.cursor.clone());
                return Ok((items, last));
            }
            items.push(found);
        }
        Ok((items, next))
    }

    /// The request's search, or every mistake in it as one INVALID_ARGUMENT.
    fn search_of(&self, request: &DynamicMessage) -> Result<Search, ApiError> {
        let mut violations = Vec::new();
        let page = child(request, "page");
        let number = page.as_ref().map(|p| get_i32(p, "num")).unwrap_or_default();
        for (field, value) in [
            ("page.num", number),
            ("page_number", get_i32(request, "page_number")),
        ] {
            if value > 1 {
                violations.push(FieldViolation::new(
                    field,
                    "numbered pages are not served: pass next_page_token as page_token",
                ));
            }
        }
        let kinds = self.kinds_of(request, &mut violations);
        check(&self.validator, request, violations)?;
        let size = match page
            .as_ref()
            .map(|p| get_i32(p, "size"))
            .unwrap_or_default()
        {
            0 => get_i32(request, "page_size"),
            size => size,
        };
        let limit = match usize::try_from(size) {
            Ok(0) | Err(_) => DEFAULT_PAGE_SIZE,
            Ok(size) => size.min(MAX_PAGE_SIZE),
        };
        let org = get_str(request, "org");
        let needle = get_str(request, "query");
        let in_text = matches!(
            request.get_field_by_name("match_text").as_deref(),
            Some(Value::Bool(true))
        );
        let token_scope = Scope::new(fingerprint(&kinds, &needle, in_text), org.clone());
        let after = page_token::decode_for(WHAT, &get_str(request, "page_token"), &token_scope)?
            .map(|after| cursor(&after))
            .transpose()?;
        Ok(Search {
            org,
            kinds,
            needle,
            in_text,
            limit,
            after,
            token_scope,
        })
    }

    /// The kinds named by `kind` and `kinds`, sorted and once each; every kind of an org when
    /// none is named. An unknown name (or an identity kind, which no org holds) is a violation.
    fn kinds_of(
        &self,
        request: &DynamicMessage,
        violations: &mut Vec<FieldViolation>,
    ) -> Vec<Arc<KindInfo>> {
        let mut named: Vec<(&str, String)> = Vec::new();
        let one = get_str(request, "kind");
        if !one.is_empty() {
            named.push(("kind", one));
        }
        if let Some(Value::List(list)) = request.get_field_by_name("kinds").as_deref() {
            named.extend(
                list.iter()
                    .filter_map(Value::as_str)
                    .map(|name| ("kinds", name.to_string())),
            );
        }
        let mut kinds: Vec<Arc<KindInfo>> = if named.is_empty() {
            self.catalog
                .kinds()
                .iter()
                .filter(|k| !k.is_iam())
                .cloned()
                .collect()
        } else {
            named
                .iter()
                .filter_map(|(field, name)| {
                    let kind = self.catalog.org_kind_by_name(name).cloned();
                    if kind.is_none() {
                        violations.push(FieldViolation::new(
                            *field,
                            format!("{name:?} is not a kind an org holds"),
                        ));
                    }
                    kind
                })
                .collect()
        };
        kinds.sort_by(|a, b| a.name.cmp(&b.name));
        kinds.dedup_by(|a, b| a.name == b.name);
        kinds
    }

    /// A candidate row as an item, with its size in the response and its cursor, or `None`
    /// when it matches only where the API shows nothing (a sealed secret).
    fn found(
        &self,
        search: &Search,
        row: &StoredResource,
        output: &MessageDescriptor,
    ) -> Result<Option<Found>, ApiError> {
        let Some(kind) = search.kinds.iter().find(|k| k.name == row.scope.kind) else {
            return Ok(None);
        };
        let mut resource = decode_row(kind, row)?;
        self.secrets.redact(&mut resource);
        let Some(matched) = matched(&resource, search)? else {
            return Ok(None);
        };
        let item_type = output
            .get_field_by_name("items")
            .and_then(|field| field.kind().as_message().cloned())
            .ok_or_else(|| ApiError::internal("FindApiResourcesResponse has no items"))?;
        let mut item = DynamicMessage::new(item_type);
        let fields = meta(&resource);
        set_str(&mut item, "kind", kind.name.clone());
        set_str(&mut item, "id", row.id.clone());
        set_str(&mut item, "name", fields.name);
        set_str(&mut item, "slug", fields.slug);
        set_str(&mut item, "org", row.scope.org.clone());
        set(&mut item, "matched", Value::EnumNumber(matched as i32));
        let encoded = Bytes::from(encode_message(&resource));
        let size = encoded.len();
        if size > MAX_RESOURCE_SIZE {
            // One such row (a hand edit, an older server) must not end the search (`limits.rs`).
            let reason = crate::limits::unservable_reason(&kind.name, &row.id, size);
            set_str(&mut item, "resource_omitted", reason);
        } else {
            set(
                &mut item,
                "resource",
                Value::Message(packed(kind, encoded)?),
            );
        }
        let cursor = FindCursor {
            kind: kind.name.clone(),
            id: row.id.clone(),
        };
        Ok(Some(Found { item, size, cursor }))
    }
}

/// An encoded resource as `google.protobuf.Any`, so grpcurl and typed clients can unpack it.
fn packed(kind: &KindInfo, encoded: Bytes) -> Result<DynamicMessage, ApiError> {
    let descriptor = kind
        .message
        .parent_pool()
        .get_message_by_name("google.protobuf.Any")
        .ok_or_else(|| ApiError::internal("google.protobuf.Any is not in the descriptor pool"))?;
    let mut any = DynamicMessage::new(descriptor);
    set_str(
        &mut any,
        "type_url",
        format!("type.googleapis.com/{}", kind.message.full_name()),
    );
    set(&mut any, "value", Value::Bytes(encoded));
    Ok(any)
}

/// What the redacted resource matches first, ignoring case; `None` when the store's match
/// was inside something redaction hides.
fn matched(resource: &DynamicMessage, search: &Search) -> Result<Option<Matched>, ApiError> {
    let needle = search.needle.to_lowercase();
    let contains = |text: &str| text.to_lowercase().contains(&needle);
    let fields = meta(resource);
    if contains(&fields.name) {
        return Ok(Some(Matched::Name));
    }
    if contains(&fields.slug) {
        return Ok(Some(Matched::Slug));
    }
    if labels(resource)
        .iter()
        .any(|(k, v)| contains(k) || contains(v))
    {
        return Ok(Some(Matched::Label));
    }
    if search.in_text && contains(&crate::json::to_json(resource)?) {
        return Ok(Some(Matched::Text));
    }
    Ok(None)
}

/// `metadata.labels` as pairs.
fn labels(resource: &DynamicMessage) -> Vec<(String, String)> {
    let Some(metadata) = child(resource, "metadata") else {
        return Vec::new();
    };
    match metadata.get_field_by_name("labels").as_deref() {
        Some(Value::Map(map)) => map
            .iter()
            .filter_map(|(key, value)| {
                let key = match key {
                    prost_reflect::MapKey::String(key) => key.clone(),
                    _ => return None,
                };
                Some((key, value.as_str()?.to_string()))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A digest of what a search asks for, bound into its page tokens.
fn fingerprint(kinds: &[Arc<KindInfo>], needle: &str, in_text: bool) -> String {
    let mut hasher = Sha256::new();
    for kind in kinds {
        hasher.update(kind.name.as_bytes());
        hasher.update([0]);
    }
    hasher.update([u8::from(in_text)]);
    hasher.update(needle.as_bytes());
    let digest = hasher.finalize();
    format!("find:{}", URL_SAFE_NO_PAD.encode(&digest[..12]))
}

/// The `(kind, id)` a token's position holds.
fn cursor(after: &str) -> Result<FindCursor, ApiError> {
    match after.split_once('\n') {
        Some((kind, id)) => Ok(FindCursor {
            kind: kind.to_string(),
            id: id.to_string(),
        }),
        None => Err(ApiError::invalid_field(
            WHAT,
            "page_token",
            "is not a token this server issued; pass the next_page_token of the previous page unchanged, or empty to start over",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_what_was_searched() {
        let catalog =
            crate::catalog::Catalog::build(&stigmer_api::DESCRIPTOR_POOL, crate::kinds::KINDS)
                .expect("catalog");
        let agent = vec![Arc::clone(catalog.kind_by_name("Agent").expect("Agent"))];
        let a = fingerprint(&agent, "review", false);
        assert_eq!(a, fingerprint(&agent, "review", false));
        assert_ne!(a, fingerprint(&agent, "review", true));
        assert_ne!(a, fingerprint(&agent, "reviews", false));
        assert_ne!(a, fingerprint(&[], "review", false));
        assert_eq!(
            cursor("Agent\nagt-1").expect("cursor"),
            FindCursor {
                kind: "Agent".into(),
                id: "agt-1".into()
            }
        );
        assert!(cursor("agt-1").is_err());
    }
}
