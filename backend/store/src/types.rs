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
}

/// A resource as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResource {
    pub scope: Scope,
    pub id: String,
    pub slug: String,
    pub revision: i64,
    pub data: String,
}

/// One page of a listing, in ascending id order.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub scope: Scope,
    /// Return only ids greater than this one (keyset pagination).
    pub after_id: Option<String>,
    pub limit: usize,
    /// Every filter must hold.
    pub filters: Vec<JsonFilter>,
}

/// A condition on the JSON document. Paths are SQLite/PostgreSQL JSON paths such as
/// `$.status.phase`; they come from server code, never from clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonFilter {
    /// The scalar at `path` equals `value`.
    Equals { path: String, value: String },
    /// The array at `path` has an element equal to `value`.
    Contains { path: String, value: String },
}

/// What a listing returns: the items and, when more remain, the id to continue after.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub items: Vec<StoredResource>,
    pub next_after_id: Option<String>,
}
