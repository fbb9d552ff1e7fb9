//! The work a group-committing backend queues for its one writer: both backends commit many
//! callers' operations in one transaction, each in its own savepoint, and answer each with
//! what its operation produced.

use crate::{CacheFill, Compaction, Mutation, Retention, StoredResource, TokenRewrite};

/// One caller's work, applied inside its own savepoint.
pub enum WriteOp {
    /// Mutations that succeed or fail together.
    Transact(Vec<Mutation>),
    /// Removes one step of the change log's oldest entries that `retention` no longer keeps.
    /// Consumes no revision.
    Compact(Retention),
    /// Sets a text setting. Consumes no revision.
    PutSetting { key: String, value: String },
    /// Rewrites stored tokens (re-sealing secrets). Consumes no revision.
    RewriteTokens {
        prefix: String,
        rewrite: TokenRewrite,
    },
    /// Stores read-cache encodings on rows that still lack one and still hold the data they
    /// were made from. Consumes no revision: the resources do not change.
    FillReadCache(Vec<CacheFill>),
}

/// What an applied operation produced.
pub enum Applied {
    Written(Vec<StoredResource>),
    Compacted(Compaction),
    /// A maintenance operation, with how many rows or tokens it touched.
    Touched(u64),
}
