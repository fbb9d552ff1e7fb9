//! Listing: keyset pages of one kind in one org, with filters, answered from the cached
//! encodings (docs/adr/0011-listing.md, docs/adr/0017-protobuf-read-cache.md).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use prost::bytes::Bytes;
use prost_reflect::{DynamicMessage, Kind, ReflectMessage, Value};
use stigmer_store::{JsonFilter, JsonPath, ListPage, ListQuery, Scope, StoredResource};

use crate::catalog::{KindInfo, Method};
use crate::codec::Reply;
use crate::controller::{Controller, decode_row};
use crate::encode::{put_message, put_message_field};
use crate::error::ApiError;
use crate::fields::{get_i32, get_str, has, set, set_str};
use crate::limits::{note_omitted, row_size, servable};
use crate::resource::{API_VERSION, Caller};
use crate::validation::check;

/// Page size when a request names none, and the most one page may hold.
pub(crate) const DEFAULT_PAGE_SIZE: usize = 100;
pub(crate) const MAX_PAGE_SIZE: usize = 1000;

impl Controller {
    pub(crate) async fn list(
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
                path: JsonPath::new(by.path.iter().copied()),
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
        let total = page.total;
        let Fitted {
            rows,
            next_after_id,
            omitted,
        } = fit_in_response(page);
        for row in &omitted {
            note_omitted(&row.scope.kind, &row.id, row_size(row));
        }
        let mut response = DynamicMessage::new(method.output.clone());
        if let Some(total) = total {
            set_totals(&mut response, total, limit);
        }
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
        let patcher = kind.patcher;
        let rows_len: usize = rows.iter().map(served_len).sum();
        let mut out = Vec::with_capacity(256 + rows_len + 16 * rows.len());
        put_message(response, &mut out);
        for row in rows {
            if let (Some(patcher), Some(cached)) = (patcher, crate::cached_rows::cached_row(row)) {
                patcher.put_item(field, cached, &mut out);
                continue;
            }
            self.note_uncached(row);
            let mut resource = decode_row(kind, row)?;
            self.secrets.redact(&mut resource);
            put_message_field(field, &resource, &mut out);
        }
        Ok(Bytes::from(out))
    }
}

/// Upstream's `total_count` (AgentInstanceList) or `total_pages` (the other lists), when the
/// store knows the listing's size; otherwise they stay 0. Pages are counted at `page_size`;
/// one cut short by the response size limit can make a listing one page longer.
fn set_totals(response: &mut DynamicMessage, total: u64, page_size: usize) {
    let descriptor = response.descriptor();
    let clamp = |n: u64| Value::I32(i32::try_from(n).unwrap_or(i32::MAX));
    if descriptor.get_field_by_name("total_count").is_some() {
        set(response, "total_count", clamp(total));
    }
    if descriptor.get_field_by_name("total_pages").is_some() {
        let pages = total.div_ceil(page_size.max(1) as u64);
        set(response, "total_pages", clamp(pages));
    }
}

/// About how many bytes a row takes in a response.
fn served_len(row: &StoredResource) -> usize {
    row.proto.as_ref().map_or(row.data.len(), Vec::len)
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
pub(crate) const MAX_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// A page as one response carries it.
struct Fitted {
    rows: Vec<StoredResource>,
    next_after_id: Option<String>,
    /// Rows skipped because no response could carry them (`limits.rs`).
    omitted: Vec<StoredResource>,
}

/// Ends a page early when its resources would not fit in one response; the next page starts
/// after the last resource kept. Any resource written through the API fits alone; a row too
/// large to send at all is skipped, so that it never blocks the listing.
fn fit_in_response(page: ListPage) -> Fitted {
    let mut fitted = Fitted {
        rows: Vec::new(),
        next_after_id: page.next_after_id,
        omitted: Vec::new(),
    };
    let mut bytes = 0;
    let mut last_consumed = None;
    for row in page.items {
        if !servable(&row) {
            last_consumed = Some(row.id.clone());
            fitted.omitted.push(row);
            continue;
        }
        bytes += served_len(&row);
        if bytes > MAX_PAGE_BYTES && !fitted.rows.is_empty() {
            fitted.next_after_id = last_consumed;
            return fitted;
        }
        last_consumed = Some(row.id.clone());
        fitted.rows.push(row);
    }
    fitted
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
                    path: JsonPath::fields("metadata.tags"),
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
                path: JsonPath::fields("status.phase"),
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
            path: JsonPath::fields("metadata.name"),
            prefix,
        });
    }
    Ok(filters)
}

/// Opaque page tokens: the listing they belong to and the last id returned, base64url-encoded.
pub(crate) mod page_token {
    use super::*;

    const VERSION: &str = "v1";

    pub(crate) fn encode(scope: &Scope, after_id: &str) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{VERSION}\n{}\n{}\n{after_id}",
            scope.kind, scope.org
        ))
    }

    pub(crate) fn decode(token: &str, scope: &Scope) -> Result<Option<String>, ApiError> {
        decode_for("list request", token, scope)
    }

    /// `decode` for a request other than a list's, named `what` in the error.
    pub(crate) fn decode_for(
        what: &str,
        token: &str,
        scope: &Scope,
    ) -> Result<Option<String>, ApiError> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = |why: &str| {
            ApiError::invalid_field(
                what,
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

    fn page(items: Vec<StoredResource>, next: Option<&str>) -> ListPage {
        ListPage {
            items,
            next_after_id: next.map(str::to_string),
            revision: 1,
            total: None,
        }
    }

    #[test]
    fn a_page_ends_early_when_it_would_not_fit_in_one_response() {
        let mib = 1024 * 1024;
        let ids = |fitted: &Fitted| fitted.rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
        let fitted = fit_in_response(page(
            vec![
                row("a", 3 * mib),
                row("b", 3 * mib),
                row("c", 3 * mib),
                row("d", 1),
            ],
            None,
        ));
        assert_eq!(ids(&fitted), ["a", "b"]);
        assert_eq!(fitted.next_after_id.as_deref(), Some("b"));

        let small = fit_in_response(page(vec![row("a", 10), row("b", 10)], Some("b")));
        assert_eq!(small.rows.len(), 2);
        assert_eq!(small.next_after_id.as_deref(), Some("b"));

        let huge_first = fit_in_response(page(vec![row("a", 9 * mib), row("b", 1)], None));
        assert_eq!(ids(&huge_first), ["a"], "one resource always fits");
        assert_eq!(huge_first.next_after_id.as_deref(), Some("a"));
    }

    #[test]
    fn a_row_too_large_to_send_is_skipped_and_never_blocks_the_listing() {
        let too_large = crate::limits::MAX_RESOURCE_SIZE + 1;
        let fitted = fit_in_response(page(
            vec![row("a", 10), row("b", too_large), row("c", 10)],
            Some("c"),
        ));
        assert_eq!(fitted.rows.len(), 2);
        assert_eq!(fitted.omitted.len(), 1);
        assert_eq!(fitted.omitted[0].id, "b");
        assert_eq!(fitted.next_after_id.as_deref(), Some("c"));

        // Alone on its page, or last on a page cut short, it is still passed.
        let alone = fit_in_response(page(vec![row("b", too_large)], Some("b")));
        assert!(alone.rows.is_empty());
        assert_eq!(alone.next_after_id.as_deref(), Some("b"));
        let mib = 1024 * 1024;
        let cut = fit_in_response(page(
            vec![row("a", 5 * mib), row("b", too_large), row("c", 5 * mib)],
            None,
        ));
        assert_eq!(cut.rows.len(), 1);
        assert_eq!(
            cut.next_after_id.as_deref(),
            Some("b"),
            "the next page starts after b"
        );
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
