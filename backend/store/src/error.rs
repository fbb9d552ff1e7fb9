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

    /// A transaction's [`crate::Mutation::Expect`] did not hold (`None` = absent).
    #[error("{kind} {id} is {}, not {}", revision_state(*.found), revision_state(*.expected))]
    ExpectationFailed {
        kind: String,
        id: String,
        expected: Option<i64>,
        found: Option<i64>,
    },

    /// The changes asked for were removed from the log by compaction.
    #[error(
        "revision {requested} is older than the retained change log (it starts after revision {compacted}); list again and watch from the list's revision"
    )]
    Compacted { requested: i64, compacted: i64 },

    /// A watcher fell too far behind the writers and was ended.
    #[error(
        "the watch fell too far behind the writers and was ended; watch again from revision {last_revision}, the last one it received"
    )]
    WatchLagged { last_revision: i64 },

    /// The watch was ended because the server is shutting down (`WatchOptions::stop`).
    #[error("{}", stopped_message(*.resume_after))]
    WatchStopped {
        /// The revision to watch again from (since_revision), the last one the watch
        /// delivered; `None` while its snapshot was still incomplete.
        resume_after: Option<i64>,
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

    /// The store does not do this (a backup on a backend that leaves it to its own tools);
    /// the message says what to use instead.
    #[error("{0}")]
    Unsupported(String),

    /// Anything else; the detail is for operators, not clients.
    #[error("internal storage error: {0}")]
    Internal(String),
}

fn revision_state(revision: Option<i64>) -> String {
    match revision {
        Some(revision) => format!("at revision {revision}"),
        None => "absent".to_string(),
    }
}

fn stopped_message(resume_after: Option<i64>) -> String {
    match resume_after {
        Some(revision) => format!(
            "the server is shutting down; watch again from revision {revision}, the last one this watch received, on a running server"
        ),
        None => "the server is shutting down before this watch's snapshot was complete; watch again from the start on a running server".to_string(),
    }
}
