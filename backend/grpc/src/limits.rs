//! What the server accepts it can always serve back (docs/adr/0018-resource-size.md).
//!
//! Every response that carries a resource (get, a list item, a watch event, an export item, the
//! reply to a write) wraps it in a few more fields, and every response must fit in one gRPC
//! message. A write is therefore refused when the resource, in any form the server stores or
//! serves, would leave less than [`ENVELOPE_ROOM`] for that wrapping. Rows that break the bound
//! anyway (written before it existed, or edited by hand) are refused by point reads with a
//! message saying so, and skipped with a per-item note by list, watch and export, so that one
//! such row never blocks the rest of its kind.

use std::cell::RefCell;
use std::future::Future;

use prost_reflect::DynamicMessage;
use stigmer_store::StoredResource;

use crate::error::ApiError;
use crate::secrets::SecretMap;
use crate::service::MAX_MESSAGE_SIZE;

/// Room left in a message for what wraps a resource: a list page's fields and item framing,
/// a watch event's revision, kind, id and `Any` type URL, an export item's kind and id, and the
/// `metadata { id, revision }` reads add from the row's columns. All of these together take
/// well under a kilobyte.
pub const ENVELOPE_ROOM: usize = 64 * 1024;

/// Largest resource the server stores, in bytes of its stored JSON and of its protobuf
/// encoding, whichever is larger: 10 MiB − 64 KiB = 10,420,224 bytes.
pub const MAX_RESOURCE_SIZE: usize = MAX_MESSAGE_SIZE - ENVELOPE_ROOM;

/// The sizes of one resource that must each stay within [`MAX_RESOURCE_SIZE`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Footprint {
    /// The proto3 JSON in `data` (what export sends).
    pub json: usize,
    /// The protobuf encoding served to readers (secrets redacted).
    pub public: usize,
    /// The protobuf encoding with secrets sealed (what the just-in-time read opens).
    pub sealed: usize,
}

impl Footprint {
    /// The sizes of `resource` stored as `json` and served as `public`. The sealed encoding
    /// differs from the public one only where a secret is, so it is measured only then: the
    /// write path pays no second walk of a resource without secrets.
    pub(crate) fn of(
        secrets: &SecretMap,
        resource: &DynamicMessage,
        json: &str,
        public: &[u8],
    ) -> Self {
        let sealed = if secrets.has_secret(resource) {
            prost::Message::encoded_len(resource)
        } else {
            public.len()
        };
        Self {
            json: json.len(),
            public: public.len(),
            sealed,
        }
    }

    fn largest(&self) -> usize {
        self.json.max(self.public).max(self.sealed)
    }

    /// RESOURCE_EXHAUSTED, nothing stored, when a write would make a resource too large to
    /// serve.
    pub(crate) fn check(&self, kind: &str) -> Result<(), ApiError> {
        let size = self.largest();
        if size <= MAX_RESOURCE_SIZE {
            return Ok(());
        }
        Err(ApiError::ResourceExhausted(format!(
            "{kind} is too large to store: it takes {size} bytes (stored JSON {}, protobuf {}), \
             and a resource may take at most {MAX_RESOURCE_SIZE} bytes so that every read can \
             return it within the {MAX_MESSAGE_SIZE}-byte message limit; nothing was stored. \
             Keep large content (documents, data sets) outside the resource and reference it",
            self.json,
            self.public.max(self.sealed)
        )))
    }
}

/// The larger of a stored row's JSON and cached encoding.
pub(crate) fn row_size(row: &StoredResource) -> usize {
    row.data.len().max(row.proto.as_ref().map_or(0, Vec::len))
}

/// Whether a stored row can be sent back. Every row written through the API can.
pub(crate) fn servable(row: &StoredResource) -> bool {
    row_size(row) <= MAX_RESOURCE_SIZE
}

/// Why a row cannot be sent back, for point reads and per-item notes.
pub(crate) fn unservable_reason(kind: &str, id: &str, size: usize) -> String {
    format!(
        "{kind} {id} takes {size} bytes, more than the {MAX_RESOURCE_SIZE} a response may carry \
         (it was stored before this limit existed or edited by hand); delete it, or shrink it \
         in the database by hand"
    )
}

/// RESOURCE_EXHAUSTED for a point read of a row that cannot be sent back.
pub(crate) fn too_large_to_serve(row: &StoredResource) -> ApiError {
    ApiError::ResourceExhausted(unservable_reason(&row.scope.kind, &row.id, row_size(row)))
}

/// Response header naming each list item left out because no response could carry it.
pub const OMITTED_HEADER: &str = "x-stigmer-omitted";

tokio::task_local! {
    /// Items the current call left out, as `<id> (<bytes> bytes)`, for [`OMITTED_HEADER`].
    static OMITTED: RefCell<Vec<String>>;
}

/// Runs a call, collecting what it leaves out.
pub(crate) async fn collecting_omitted<T>(call: impl Future<Output = T>) -> (T, Vec<String>) {
    OMITTED
        .scope(RefCell::new(Vec::new()), async {
            let result = call.await;
            let omitted = OMITTED.with(|omitted| omitted.take());
            (result, omitted)
        })
        .await
}

/// Records a row a listing skipped: in the log, and in the call's [`OMITTED_HEADER`].
pub(crate) fn note_omitted(kind: &str, id: &str, size: usize) {
    tracing::warn!(kind, id, size, "{}", unservable_reason(kind, id, size));
    let _ = OMITTED.try_with(|omitted| omitted.borrow_mut().push(format!("{id} ({size} bytes)")));
}

#[cfg(test)]
mod tests {
    use super::*;
    use stigmer_store::Scope;

    fn row(json: usize, proto: Option<usize>) -> StoredResource {
        StoredResource {
            scope: Scope::new("Agent", "local"),
            id: "agt-1".into(),
            slug: "a".into(),
            revision: 1,
            data: "x".repeat(json),
            proto: proto.map(|n| vec![0; n]),
        }
    }

    #[test]
    fn the_bound_leaves_room_for_every_wrapper_under_the_message_limit() {
        assert_eq!(MAX_RESOURCE_SIZE, 10_420_224);
        let at_limit = Footprint {
            json: MAX_RESOURCE_SIZE,
            public: 10,
            sealed: 10,
        };
        assert!(at_limit.check("Agent").is_ok());
        for over in [
            Footprint {
                json: MAX_RESOURCE_SIZE + 1,
                ..at_limit
            },
            Footprint {
                json: 10,
                public: MAX_RESOURCE_SIZE + 1,
                sealed: 10,
            },
            Footprint {
                json: 10,
                public: 10,
                sealed: MAX_RESOURCE_SIZE + 1,
            },
        ] {
            let err = over.check("Agent").expect_err("over the limit");
            assert!(matches!(err, ApiError::ResourceExhausted(ref m) if m.contains("10420224")));
        }
    }

    #[test]
    fn a_row_is_servable_when_both_its_json_and_its_encoding_fit() {
        assert!(servable(&row(MAX_RESOURCE_SIZE, None)));
        assert!(servable(&row(0, Some(MAX_RESOURCE_SIZE))));
        assert!(!servable(&row(MAX_RESOURCE_SIZE + 1, Some(10))));
        assert!(!servable(&row(10, Some(MAX_RESOURCE_SIZE + 1))));
        let err = too_large_to_serve(&row(MAX_RESOURCE_SIZE + 1, None));
        assert!(err.to_string().contains("agt-1"), "{err}");
    }
}
