//! Reads served from the `proto` cache column (docs/adr/0017-protobuf-read-cache.md), through
//! the kind's [`stigmer_core::cached_encoding::EncodingPatcher`].

use stigmer_core::cached_encoding::CachedRow;
use stigmer_store::StoredResource;

/// The row's cached encoding with the columns that override it; `None` without a cache.
pub(crate) fn cached_row(row: &StoredResource) -> Option<CachedRow<'_>> {
    Some(CachedRow {
        cached: row.proto.as_deref()?,
        id: &row.id,
        revision: row.revision,
    })
}
