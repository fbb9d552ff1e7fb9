/// Which resources a call may see: one kind in one org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub kind: String,
    pub org: String,
}

impl Scope {
    pub fn new(kind: impl Into<String>, org: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            org: org.into(),
        }
    }
}

/// A resource to write. `data` is the whole resource as proto3 JSON; the store fills in
/// `$.metadata.revision`.
#[derive(Debug, Clone)]
pub struct NewResource {
    pub scope: Scope,
    pub id: String,
    pub slug: String,
    pub data: String,
    /// The resource's protobuf encoding as reads serve it, kept beside `data` so reads need
    /// not re-encode; opaque to the store. `None` makes readers decode `data`.
    pub proto: Option<Vec<u8>>,
}

/// A read-cache encoding computed from a row's `data` by the layer that owns the encoding,
/// stored only while the row still holds exactly that `data` (see
/// [`crate::Store::fill_read_cache`]).
#[derive(Debug, Clone)]
pub struct CacheFill {
    pub id: String,
    /// The `data` the encoding was made from.
    pub data: String,
    pub proto: Vec<u8>,
}

/// One change to make as part of a transaction (see [`crate::Store::transact`]).
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Insert a new resource; its slug must be free in its kind and org.
    Create(NewResource),
    /// Replace `resource.id`, only if it is still at `expected_revision`.
    Replace {
        resource: NewResource,
        expected_revision: i64,
    },
    /// Delete a resource; `expected_revision` of `None` skips the check.
    Delete {
        scope: Scope,
        id: String,
        expected_revision: Option<i64>,
    },
    /// Store an artifact under its SHA-256 (hex), once: a put of a hash already stored keeps
    /// the stored bytes. Takes no revision.
    PutArtifact { hash: String, bytes: Vec<u8> },
    /// Record a version of the resource written just before in the same transaction; `data`
    /// gets that write's revision (or `revision`, when given) at `$.metadata.revision`, as the
    /// resource does. Takes no revision of its own.
    PutVersion {
        resource_id: String,
        version_hash: String,
        tag: String,
        data: String,
        /// The version's place among its resource's versions; `None` = the revision of the
        /// transaction's latest resource write (a push).
        revision: Option<i64>,
    },
    /// Forget every version of a resource, and every artifact no version needs any more (a
    /// version needs the artifact whose hash is its `version_hash`).
    DeleteVersions { resource_id: String },
    /// A condition of the transaction, checked where it stands among the mutations: the
    /// resource `id` is at `revision`, or (`None`) does not exist. Writes nothing; a failed
    /// one fails the transaction with [`crate::StoreError::ExpectationFailed`].
    Expect {
        scope: Scope,
        id: String,
        revision: Option<i64>,
    },
}

/// One stored version of a versioned resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceVersion {
    pub version_hash: String,
    pub tag: String,
    pub revision: i64,
    pub data: String,
}

/// Which version of a versioned resource to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSelector {
    /// The 64-hex content hash.
    Hash(String),
    /// The newest version (highest revision) pushed with this tag.
    Tag(String),
}

/// A resource as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResource {
    pub scope: Scope,
    pub id: String,
    pub slug: String,
    pub revision: i64,
    pub data: String,
    /// What the last write (or cache fill) stored as [`NewResource::proto`], unless `data`,
    /// `id` or `revision` changed since without it (a hand edit, a token rewrite): then `None`.
    pub proto: Option<Vec<u8>>,
}

/// One page of a listing, in ascending id order (ids compared as bytes, not by a collation).
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub scope: Scope,
    /// Return only ids greater than this one, which need not exist (keyset pagination).
    pub after_id: Option<String>,
    pub limit: usize,
    /// Every filter must hold.
    pub filters: Vec<JsonFilter>,
    /// Leave `data` empty in rows that have `proto`, for callers that serve `proto` as it is
    /// and would otherwise copy every document twice.
    pub proto_only: bool,
}

/// What one committed mutation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Created,
    Updated,
    Deleted,
}

impl ChangeType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "created" => Some(Self::Created),
            "updated" => Some(Self::Updated),
            "deleted" => Some(Self::Deleted),
            _ => None,
        }
    }
}

/// One entry of the change log: the resource after the change, or before it for a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub revision: i64,
    pub change_type: ChangeType,
    pub scope: Scope,
    pub id: String,
    pub data: String,
    /// The row's read-cache encoding ([`StoredResource::proto`]) as the write stored it, so
    /// that whoever serves the change need not encode `data` again: set on the changes a
    /// writer publishes for a create or an update, whose resource is at `revision`. `None` for
    /// a delete (its resource has the revision of the change before), for a row written
    /// without one, and for every change read back from the log, which keeps only `data`.
    pub proto: Option<Vec<u8>>,
    /// When its transaction committed, in Unix milliseconds (the writer's clock as it wrote
    /// the change; changes of one write share it).
    pub committed_at_ms: i64,
    /// The write it belongs to: the revision of that write's first change. A write (one call,
    /// in its own savepoint even when group commit shares the database transaction) is all
    /// or nothing, so the changes that share `txn` are seen together or not at all; an Agent
    /// and the default instance made with it share one. Changes logged before the log kept
    /// this have their own revision.
    pub txn: i64,
}

impl Change {
    /// The change a write made: `row` after a create or an update, before a delete; `txn`
    /// and `committed_at_ms` as on [`Change`].
    pub fn written(
        revision: i64,
        change_type: ChangeType,
        row: &StoredResource,
        txn: i64,
        committed_at_ms: i64,
    ) -> Self {
        let proto = match change_type {
            ChangeType::Created | ChangeType::Updated => row.proto.clone(),
            ChangeType::Deleted => None,
        };
        Self {
            revision,
            change_type,
            scope: row.scope.clone(),
            id: row.id.clone(),
            data: row.data.clone(),
            proto,
            committed_at_ms,
            txn,
        }
    }
}

/// Now, in Unix milliseconds, as the change log records commit times.
pub fn unix_millis_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Which changes (or current resources) a watcher wants: one org, optionally one kind and one id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeFilter {
    pub org: String,
    pub kind: Option<String>,
    pub id: Option<String>,
}

impl ChangeFilter {
    pub fn matches(&self, change: &Change) -> bool {
        change.scope.org == self.org
            && self
                .kind
                .as_ref()
                .is_none_or(|kind| *kind == change.scope.kind)
            && self.id.as_ref().is_none_or(|id| *id == change.id)
    }
}

/// The span of the change log: changes with a revision in `(compacted, current]` are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    pub compacted: i64,
    pub current: i64,
}

/// What a resource was at some revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtRevision {
    /// It existed; `revision` is the revision of its last change at or before the one asked.
    Existed { revision: i64, data: String },
    /// It did not exist then (not yet created, deleted, or never in this kind and org).
    Absent,
    /// The revision is at or below the log's `compacted` bound or above `current`, or
    /// compaction removed the version that was current then.
    OutOfRange(LogBounds),
}

impl AtRevision {
    /// The answer when the log's last change of the resource at or before the revision asked
    /// took it to `revision` as `change_type` ("created", "updated", "deleted").
    pub fn from_last_change(revision: i64, change_type: &str, data: String) -> Self {
        if change_type == ChangeType::Deleted.as_str() {
            Self::Absent
        } else {
            Self::Existed { revision, data }
        }
    }

    /// The answer when the log holds no change of the resource between the compaction point
    /// and the revision asked, from the type of its next change: created later means it did
    /// not exist then; changed later means the log no longer says. `None` when there is no
    /// later change either: the current row (or its absence) is the answer.
    pub fn from_next_change(next_type: Option<&str>, bounds: LogBounds) -> Option<Self> {
        match next_type {
            Some(change_type) if change_type == ChangeType::Created.as_str() => Some(Self::Absent),
            Some(_) => Some(Self::OutOfRange(bounds)),
            None => None,
        }
    }
}

/// How much of the change log to keep: a change goes only once it is both older than the
/// last `revisions` revisions and older than `age`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub revisions: i64,
    pub age: std::time::Duration,
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Compaction {
    pub removed: u64,
    pub compacted: i64,
}

/// Resource counts per kind at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreInfo {
    pub backend: &'static str,
    pub database: String,
    /// Where the data lives, for operators: the database file, or the server's address.
    pub location: String,
    pub bounds: LogBounds,
    /// (kind, resources of that kind in the org), in kind order; kinds without one are left out.
    pub counts: Vec<(String, i64)>,
    /// Writes committed since the store opened, and the transactions they took. A write is a
    /// `transact` call (create, replace and delete are one each, whatever it holds); settings,
    /// compaction, rewrites and cache fills are not writes. A failed call may count when it
    /// shared a committed transaction with others.
    pub writes_committed: u64,
    pub transactions_committed: u64,
    /// Writes waiting to be committed or being committed now.
    pub writes_pending: u64,
    /// Bytes the database takes on disk (data and write-ahead log), when the backend can tell.
    pub database_bytes: Option<u64>,
}

/// A place in a resource's JSON document, as the object keys leading to it from the root
/// (`["spec", "agentId"]`, `["metadata", "labels", "stigmer.ai/agent-id"]`). Each backend
/// renders it in its own SQL; paths come from server code and validated label keys, never
/// verbatim from clients.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JsonPath(Vec<String>);

impl JsonPath {
    pub fn new<S: Into<String>>(keys: impl IntoIterator<Item = S>) -> Self {
        Self(keys.into_iter().map(Into::into).collect())
    }

    /// A path of field names, which never hold a dot: `"spec.agentId"`.
    pub fn fields(dotted: &str) -> Self {
        Self::new(dotted.split('.'))
    }

    /// This path with `key` appended.
    pub fn child(&self, key: impl Into<String>) -> Self {
        let mut keys = self.0.clone();
        keys.push(key.into());
        Self(keys)
    }

    pub fn keys(&self) -> &[String] {
        &self.0
    }
}

impl std::fmt::Display for JsonPath {
    /// Dotted, for messages: `spec.agentId`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// A condition on the JSON document. Every key of the path is one object key, dots and
/// slashes included (`app.kubernetes.io/name`). Values are compared with JSON strings; the
/// server filters on nothing else, and what other JSON types match is unspecified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonFilter {
    /// The scalar at `path` equals `value`.
    Equals { path: JsonPath, value: String },
    /// The value at `path` is missing or differs from `value`.
    NotEquals { path: JsonPath, value: String },
    /// The scalar at `path` is one of `values`.
    In { path: JsonPath, values: Vec<String> },
    /// The value at `path` is missing or none of `values`.
    NotIn { path: JsonPath, values: Vec<String> },
    /// Something is at `path`.
    Exists { path: JsonPath },
    /// Nothing is at `path`.
    Missing { path: JsonPath },
    /// The string at `path` starts with `prefix` (case-sensitive; `%` and `_` are plain
    /// characters).
    Prefix { path: JsonPath, prefix: String },
    /// The array at `path` has an element equal to `value`.
    Contains { path: JsonPath, value: String },
}

/// What a listing returns: the items, the revision they were read at and, when more remain,
/// the id to continue after.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub items: Vec<StoredResource>,
    pub next_after_id: Option<String>,
    pub revision: i64,
    /// How many resources the whole listing holds (every page), at `revision`, when the store
    /// knows without counting them: always without filters, and with filters when this first
    /// page is also the last; `None` otherwise.
    pub total: Option<u64>,
}

/// A search across kinds in one org ([`crate::Store::find`]). Rows come in ascending
/// `(kind, id)` byte order, so a page can resume after the last row of the one before.
#[derive(Debug, Clone)]
pub struct FindQuery {
    pub org: String,
    /// Only these kinds: the caller names them, so that rows outside every org's kinds (the
    /// identity kinds) are never reached. An empty list finds nothing.
    pub kinds: Vec<String>,
    /// Found, case-insensitively for ASCII letters, as a plain substring (`%`, `_` and `\`
    /// are characters like any other) of `metadata.name`, the slug, a label key or value, or,
    /// with `in_text`, of the stored JSON document anywhere.
    pub needle: String,
    pub in_text: bool,
    /// Return only rows after this position.
    pub after: Option<FindCursor>,
    pub limit: usize,
}

/// Where a search page ends: its last row's kind and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindCursor {
    pub kind: String,
    pub id: String,
}

/// A page of a search: the rows, the revision they were read at and, when more may follow,
/// where the next page starts.
#[derive(Debug, Clone)]
pub struct FindPage {
    pub items: Vec<StoredResource>,
    pub next_after: Option<FindCursor>,
    pub revision: i64,
}
