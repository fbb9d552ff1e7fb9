use thiserror::Error;

/// Result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// What can go wrong in a store. Messages are safe to show to a client except for
/// [`StoreError::Internal`], whose detail belongs in the server log only.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// No resource of this kind and org has this id.
    #[error("{kind} {id} not found")]
    NotFound { kind: String, id: String },

    /// The slug is already used by another resource of the same kind and org.
    #[error("{kind} with slug {slug:?} already exists in org {org:?}")]
    AlreadyExists {
        kind: String,
        org: String,
        slug: String,
    },

    /// The resource changed since the revision the caller expected.
    #[error("{kind} {id} is at revision {current}, not the expected {expected}")]
    Conflict {
        kind: String,
        id: String,
        expected: i64,
        current: i64,
    },

    /// The database cannot take the call now (locked by another process, I/O hiccup); retrying may work.
    #[error("storage is temporarily unavailable: {0}")]
    Unavailable(String),

    /// The disk or database is full.
    #[error("storage is full")]
    Full,

    /// The store is shutting down or closed.
    #[error("storage is closed")]
    Closed,

    /// Anything else; the detail is for operators, not clients.
    #[error("internal storage error: {0}")]
    Internal(String),
}
