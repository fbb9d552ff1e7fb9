//! A store in front of the real one that keeps a batch's writes to itself: reads see the real
//! store with the batch's writes on top, so that an item finds the items before it, and
//! nothing reaches the real store until [`Overlay::mutations`] are committed there in one
//! transaction. The real store then checks every write again (slugs, expected revisions), so a
//! concurrent writer makes the whole batch fail rather than half of it land. A transaction
//! (`txn`) also deletes through it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use stigmer_store::{
    AtRevision, CacheFill, Change, ChangeFilter, Compaction, FindPage, FindQuery, ListPage,
    ListQuery, LogBounds, Mutation, NewResource, ResourceVersion, Retention, Scope, Snapshot,
    Store, StoreError, StoreInfo, StoreResult, StoredResource, TokenRewrite, VersionSelector,
};
use tokio::sync::broadcast;

/// One resource as the batch left it.
#[derive(Clone)]
enum Written {
    Row(StoredResource),
    Deleted,
}

#[derive(Default)]
struct State {
    /// By id.
    written: HashMap<String, Written>,
    /// One mutation per resource, in the order each was first written; a later write of the
    /// same resource replaces its data in place, unless one of them is a delete.
    mutations: Vec<Mutation>,
    /// Where each resource's mutation is in `mutations`, by id.
    position: HashMap<String, usize>,
    /// Stand-in revisions, above the real store's, in write order.
    next_revision: i64,
}

pub(crate) struct Overlay {
    base: Arc<dyn Store>,
    state: Mutex<State>,
}

/// How a batch item ended, by its resource's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Created,
    Updated,
    Unchanged,
    Deleted,
}

impl Overlay {
    pub(crate) async fn over(base: Arc<dyn Store>) -> StoreResult<Self> {
        let current = base.log_bounds().await?.current;
        Ok(Self {
            base,
            state: Mutex::new(State {
                next_revision: current + 1,
                ..State::default()
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every write of the batch, one per resource, for the real store.
    pub(crate) fn mutations(&self) -> Vec<Mutation> {
        self.state().mutations.clone()
    }

    /// What the batch did to the resource `id`.
    pub(crate) fn outcome(&self, id: &str) -> Outcome {
        let state = self.state();
        match state.position.get(id).map(|at| &state.mutations[*at]) {
            Some(Mutation::Create(_)) => Outcome::Created,
            Some(Mutation::Delete { .. }) => Outcome::Deleted,
            Some(_) => Outcome::Updated,
            None => Outcome::Unchanged,
        }
    }

    /// Checks one mutation against what the batch and the real store hold, and records it.
    async fn apply(&self, mutation: Mutation) -> StoreResult<Option<StoredResource>> {
        match mutation {
            Mutation::Create(resource) => {
                if self
                    .get_by_slug(resource.scope.clone(), resource.slug.clone())
                    .await?
                    .is_some()
                {
                    return Err(StoreError::AlreadyExists {
                        kind: resource.scope.kind,
                        org: resource.scope.org,
                        slug: resource.slug,
                    });
                }
                Ok(Some(self.record(resource, None)))
            }
            Mutation::Replace {
                resource,
                expected_revision,
            } => {
                let current = self
                    .get(resource.scope.clone(), resource.id.clone())
                    .await?
                    .ok_or_else(|| StoreError::NotFound {
                        kind: resource.scope.kind.clone(),
                        id: resource.id.clone(),
                    })?;
                if current.revision != expected_revision {
                    return Err(StoreError::Conflict {
                        kind: resource.scope.kind,
                        id: resource.id,
                        expected: expected_revision,
                        current: current.revision,
                    });
                }
                Ok(Some(self.record(resource, Some(current.revision))))
            }
            Mutation::Delete {
                scope,
                id,
                expected_revision,
            } => {
                let current = self.get(scope.clone(), id.clone()).await?;
                match (current, expected_revision) {
                    (Some(current), Some(expected)) if current.revision != expected => {
                        Err(StoreError::Conflict {
                            kind: scope.kind,
                            id,
                            expected,
                            current: current.revision,
                        })
                    }
                    (Some(current), _) => {
                        self.record_delete(scope, id, current.revision);
                        Ok(None)
                    }
                    // A cascade reaching what the transaction deleted already.
                    (None, None) if matches!(self.written(&id), Some(Written::Deleted)) => Ok(None),
                    (None, _) => Err(StoreError::NotFound {
                        kind: scope.kind,
                        id,
                    }),
                }
            }
            Mutation::DeleteVersions { resource_id } => {
                self.state()
                    .mutations
                    .push(Mutation::DeleteVersions { resource_id });
                Ok(None)
            }
            Mutation::PutArtifact { .. } | Mutation::PutVersion { .. } => Err(
                StoreError::Internal("a batch applies and deletes; it stores no artifacts".into()),
            ),
            other => Err(StoreError::Internal(format!(
                "a batch cannot hold {other:?}"
            ))),
        }
    }

    /// Records a create (`replaced` = None) or a replace of a row at `replaced`.
    fn record(&self, resource: NewResource, replaced: Option<i64>) -> StoredResource {
        let mut state = self.state();
        let revision = state.next_revision;
        state.next_revision += 1;
        let row = StoredResource {
            scope: resource.scope.clone(),
            id: resource.id.clone(),
            slug: resource.slug.clone(),
            revision,
            data: resource.data.clone(),
            proto: resource.proto.clone(),
        };
        state
            .written
            .insert(resource.id.clone(), Written::Row(row.clone()));
        match state.position.get(&resource.id).copied() {
            // Written earlier in the batch: one mutation still, with the latest data and the
            // revision the real store must find.
            Some(at) if !matches!(state.mutations[at], Mutation::Delete { .. }) => {
                let mutation = &mut state.mutations[at];
                match mutation {
                    Mutation::Create(first) => *first = resource,
                    Mutation::Replace {
                        resource: first, ..
                    } => *first = resource,
                    _ => {}
                }
            }
            _ => {
                let at = state.mutations.len();
                state.position.insert(resource.id.clone(), at);
                state.mutations.push(match replaced {
                    None => Mutation::Create(resource),
                    Some(expected_revision) => Mutation::Replace {
                        resource,
                        expected_revision,
                    },
                });
            }
        }
        row
    }

    /// Records the delete of a resource found at `revision`: the real store must find it there
    /// too, unless the batch wrote it first (that write's own check then stands).
    fn record_delete(&self, scope: Scope, id: String, revision: i64) {
        let mut state = self.state();
        let earlier = state.written.insert(id.clone(), Written::Deleted);
        let at = state.mutations.len();
        state.position.insert(id.clone(), at);
        state.mutations.push(Mutation::Delete {
            scope,
            id,
            expected_revision: earlier.is_none().then_some(revision),
        });
    }

    /// Whether the batch created or replaced the resource `id` (and has not deleted it since).
    pub(crate) fn holds_write_of(&self, id: &str) -> bool {
        matches!(self.written(id), Some(Written::Row(_)))
    }

    fn written(&self, id: &str) -> Option<Written> {
        self.state().written.get(id).cloned()
    }
}

fn unsupported(what: &str) -> StoreError {
    StoreError::Internal(format!("{what} is not done inside a batch"))
}

#[async_trait]
impl Store for Overlay {
    async fn transact(&self, mutations: Vec<Mutation>) -> StoreResult<Vec<StoredResource>> {
        // All or none here too: a failing mutation leaves the batch as it was.
        let saved = {
            let state = self.state();
            (
                state.written.clone(),
                state.mutations.clone(),
                state.position.clone(),
                state.next_revision,
            )
        };
        let mut rows = Vec::new();
        for mutation in mutations {
            match self.apply(mutation).await {
                Ok(row) => rows.extend(row),
                Err(err) => {
                    let mut state = self.state();
                    (
                        state.written,
                        state.mutations,
                        state.position,
                        state.next_revision,
                    ) = saved;
                    return Err(err);
                }
            }
        }
        Ok(rows)
    }

    async fn get(&self, scope: Scope, id: String) -> StoreResult<Option<StoredResource>> {
        match self.written(&id) {
            Some(Written::Row(row)) => Ok((row.scope == scope).then_some(row)),
            Some(Written::Deleted) => Ok(None),
            None => self.base.get(scope, id).await,
        }
    }

    async fn get_by_slug(&self, scope: Scope, slug: String) -> StoreResult<Option<StoredResource>> {
        let mine = {
            let state = self.state();
            state.written.values().find_map(|written| match written {
                Written::Row(row) if row.scope == scope && row.slug == slug => Some(row.clone()),
                Written::Row(_) | Written::Deleted => None,
            })
        };
        if mine.is_some() {
            return Ok(mine);
        }
        // A real row the batch has since renamed or deleted no longer answers to its slug.
        match self.base.get_by_slug(scope, slug).await? {
            Some(row) if self.written(&row.id).is_some() => Ok(None),
            other => Ok(other),
        }
    }

    /// The real store's page without the rows the batch changed; rows the batch created are
    /// not listed (an apply never lists what it creates).
    async fn list(&self, query: ListQuery) -> StoreResult<ListPage> {
        let mut page = self.base.list(query).await?;
        page.items.retain(|row| self.written(&row.id).is_none());
        Ok(page)
    }

    /// A batch never searches; what it has written stays out, as in `list`.
    async fn find(&self, query: FindQuery) -> StoreResult<FindPage> {
        let mut page = self.base.find(query).await?;
        page.items.retain(|row| self.written(&row.id).is_none());
        Ok(page)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.base.subscribe()
    }

    async fn changes(&self, _: ChangeFilter, _: i64, _: usize) -> StoreResult<Vec<Change>> {
        Err(unsupported("reading the change log"))
    }

    async fn snapshot(&self, _: ChangeFilter) -> StoreResult<Box<dyn Snapshot>> {
        Err(unsupported("a snapshot"))
    }

    async fn log_bounds(&self) -> StoreResult<LogBounds> {
        self.base.log_bounds().await
    }

    async fn at_revision(&self, _: Scope, _: String, _: i64) -> StoreResult<AtRevision> {
        Err(unsupported("reading past revisions"))
    }

    async fn compact(&self, _: Retention) -> StoreResult<Compaction> {
        Err(unsupported("compaction"))
    }

    async fn info(&self, org: String) -> StoreResult<StoreInfo> {
        self.base.info(org).await
    }

    async fn artifact(&self, hash: String) -> StoreResult<Option<Vec<u8>>> {
        self.base.artifact(hash).await
    }

    async fn version(
        &self,
        resource_id: String,
        selector: VersionSelector,
    ) -> StoreResult<Option<StoredResource>> {
        self.base.version(resource_id, selector).await
    }

    async fn versions(&self, resource_id: String) -> StoreResult<Vec<ResourceVersion>> {
        self.base.versions(resource_id).await
    }

    async fn setting(&self, key: String) -> StoreResult<Option<String>> {
        self.base.setting(key).await
    }

    async fn put_setting(&self, _: String, _: String) -> StoreResult<()> {
        Err(unsupported("changing a setting"))
    }

    async fn rewrite_tokens(&self, _: String, _: TokenRewrite) -> StoreResult<u64> {
        Err(unsupported("rewriting tokens"))
    }

    async fn uncached(&self, _: String, _: usize) -> StoreResult<Vec<StoredResource>> {
        Ok(Vec::new())
    }

    async fn fill_read_cache(&self, _: Vec<CacheFill>) -> StoreResult<u64> {
        Ok(0)
    }

    async fn close(&self) -> StoreResult<()> {
        Ok(())
    }
}
