//! The writer: takes queued mutations, commits them in batches (group commit) and answers each
//! caller only once the batch holding its write has committed and its changes are published.
//!
//! Every batch first locks the `revision` row of `store_meta` and holds it to COMMIT, so that
//! writers of every replica take revisions one transaction after the other, in commit order
//! (docs/adr/0023-postgres-revision-order.md). Inside, each call runs in its own SAVEPOINT: a
//! failing one is rolled back alone and gets its own error.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use deadpool_postgres::{GenericClient, Object, Pool, Transaction};
pub(crate) use stigmer_store::{Applied, WriteOp};
use stigmer_store::{
    CacheFill, Change, ChangeType, CommitObserver, Compaction, Mutation, NewResource, Retention,
    Scope, StoreError, StoreResult, StoredResource, TokenRewrite, WriterCounters,
};
use stigmer_store::{expectation, rewrite_text, unix_millis_now};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::IsolationLevel;

use crate::errors::{is_slug_violation, pool_error, store_error};
use crate::feed::FeedHandle;
use crate::json::compact;
use crate::queries::current_revision;

struct WriteJob {
    op: WriteOp,
    reply: oneshot::Sender<StoreResult<Applied>>,
}

enum WriterMsg {
    Job(WriteJob),
    Shutdown(oneshot::Sender<()>),
}

/// Change-log entries removed per compaction step, so that one step never holds up writes for long.
const COMPACTION_STEP: i64 = 1000;

/// How long an answer waits for the feed to publish its changes. The feed publishes a local
/// batch at once unless it must first read other replicas' changes from the log; if the
/// database went away in between, the caller is answered anyway (its write committed) and
/// watchers hear of it once the feed can read again.
const PUBLISH_WAIT: Duration = Duration::from_secs(5);

pub(crate) struct Writer {
    queue: mpsc::Sender<WriterMsg>,
    counters: Arc<WriterCounters>,
}

impl Writer {
    pub(crate) fn spawn(
        pool: Pool,
        feed: FeedHandle,
        max_batch: usize,
        queue_depth: usize,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, jobs) = mpsc::channel(queue_depth.max(1));
        let counters = Arc::new(WriterCounters::default());
        let state = WriterState {
            pool,
            feed,
            counters: Arc::clone(&counters),
            max_batch: max_batch.max(1),
        };
        let task = tokio::spawn(run_writer(jobs, state));
        (Self { queue, counters }, task)
    }

    pub(crate) fn observe_commits(&self, observer: Arc<dyn CommitObserver>) {
        self.counters.observe(observer);
    }

    pub(crate) fn counters(&self) -> &WriterCounters {
        &self.counters
    }

    /// Writes waiting for the writer.
    pub(crate) fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    pub(crate) async fn submit(&self, op: WriteOp) -> StoreResult<Applied> {
        let (reply, result) = oneshot::channel();
        self.queue
            .send(WriterMsg::Job(WriteJob { op, reply }))
            .await
            .map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues a shutdown behind every write already queued and waits for the writer to reach
    /// it. Later submissions fail as closed.
    pub(crate) async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.queue.send(WriterMsg::Shutdown(done)).await.is_ok() {
            let _ = finished.await;
        }
    }
}

struct WriterState {
    pool: Pool,
    feed: FeedHandle,
    counters: Arc<WriterCounters>,
    max_batch: usize,
}

async fn run_writer(mut queue: mpsc::Receiver<WriterMsg>, state: WriterState) {
    let mut shutdown = None;
    while shutdown.is_none() {
        let Some(first) = queue.recv().await else {
            break;
        };
        let mut batch = Vec::new();
        match first {
            WriterMsg::Job(job) => batch.push(job),
            WriterMsg::Shutdown(done) => shutdown = Some(done),
        }
        // Whatever queued up while the previous batch was committing goes in this one.
        while shutdown.is_none() && batch.len() < state.max_batch {
            match queue.try_recv() {
                Ok(WriterMsg::Job(job)) => batch.push(job),
                Ok(WriterMsg::Shutdown(done)) => shutdown = Some(done),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit_batch(batch, &state).await;
        }
    }
    // Nothing queued after the shutdown runs: those callers hear that the store closed.
    queue.close();
    while let Ok(msg) = queue.try_recv() {
        match msg {
            WriterMsg::Job(job) => {
                let _ = job.reply.send(Err(StoreError::Closed));
            }
            WriterMsg::Shutdown(done) => {
                let _ = done.send(());
            }
        }
    }
    if let Some(done) = shutdown {
        let _ = done.send(());
    }
}

/// A batch's transaction, committed: each job's result and the changes to publish.
struct Committed {
    results: Vec<StoreResult<Applied>>,
    changes: Vec<Arc<Change>>,
    /// From BEGIN to the end of COMMIT (the wait for the revision lock included), and the
    /// COMMIT alone.
    transaction: Duration,
    commit: Duration,
}

/// Commits one batch, hands its changes to the feed, then answers its callers once the feed
/// has published them (without holding up the next batch).
async fn commit_batch(batch: Vec<WriteJob>, state: &WriterState) {
    state
        .counters
        .committing
        .store(batch.len() as u64, Ordering::Relaxed);
    let outcome = match state.pool.get().await {
        Ok(mut client) => attempt(&mut client, &batch).await,
        Err(err) => Err(pool_error(err)),
    };
    state.counters.committing.store(0, Ordering::Relaxed);
    match outcome {
        Ok(committed) => answer_committed(batch, committed, state),
        Err(err) => {
            if matches!(err, StoreError::Unavailable(_)) {
                tracing::warn!(error = %err, writes = batch.len(), "a batch did not commit");
            } else {
                tracing::error!(error = %err, writes = batch.len(), "committing a batch failed");
            }
            for job in batch {
                let _ = job.reply.send(Err(err.clone()));
            }
        }
    }
}

/// Applies every job, each in its own savepoint, and commits. An error here fails the whole
/// batch (the connection broke, or COMMIT failed): nothing of it was acknowledged.
async fn attempt(client: &mut Object, batch: &[WriteJob]) -> StoreResult<Committed> {
    let began = Instant::now();
    // READ COMMITTED whatever the database's default: the revision lock's waiter must read
    // the row as its holder committed it, where REPEATABLE READ would fail it instead.
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await
        .map_err(store_error)?;
    // The row lock that orders this transaction's revisions after every other writer's,
    // taken outside any savepoint so that no rollback of one can release it before COMMIT.
    let lock = tx
        .prepare_cached("SELECT value FROM store_meta WHERE key = 'revision' FOR UPDATE")
        .await
        .map_err(store_error)?;
    let current: i64 = tx
        .query_one(&lock, &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(store_error)?;
    let mut next = current;
    let mut results = Vec::with_capacity(batch.len());
    let mut changes = Vec::new();
    for job in batch {
        tx.batch_execute("SAVEPOINT job")
            .await
            .map_err(store_error)?;
        match apply(&tx, &job.op, next).await {
            Ok((applied, applied_changes)) => {
                tx.batch_execute("RELEASE SAVEPOINT job")
                    .await
                    .map_err(store_error)?;
                if let Some(last) = applied_changes.last() {
                    next = last.revision;
                }
                changes.extend(applied_changes.into_iter().map(Arc::new));
                results.push(Ok(applied));
            }
            Err(err) => {
                // Fails only when the connection is gone: then the whole batch is.
                tx.batch_execute("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job")
                    .await
                    .map_err(store_error)?;
                results.push(Err(err));
            }
        }
    }
    if next != current {
        // The new revision, and a wake-up for every replica's change feed, delivered by
        // PostgreSQL only if and when this transaction commits.
        let advance = tx
            .prepare_cached(
                "WITH advanced AS (UPDATE store_meta SET value = $1 WHERE key = 'revision') \
                 SELECT pg_notify('stigmer_changes', $1::text)",
            )
            .await
            .map_err(store_error)?;
        tx.execute(&advance, &[&next]).await.map_err(store_error)?;
    }
    let committing = Instant::now();
    tx.commit().await.map_err(store_error)?;
    Ok(Committed {
        results,
        changes,
        transaction: began.elapsed(),
        commit: committing.elapsed(),
    })
}

fn answer_committed(batch: Vec<WriteJob>, committed: Committed, state: &WriterState) {
    let Committed {
        results,
        changes,
        transaction,
        commit,
    } = committed;
    tracing::debug!(
        writes = batch.len(),
        revision = changes.last().map(|change| change.revision),
        "committed a batch"
    );
    let writes = batch
        .iter()
        .filter(|job| matches!(job.op, WriteOp::Transact(_)))
        .count();
    state.counters.committed(writes, transaction, commit);
    let published = changes.last().map(|change| change.revision);
    if !changes.is_empty() {
        state.feed.publish_local(changes);
    }
    // Watchers hear of a change before its writer is answered, as with SQLite.
    let mut feed = state.feed.clone();
    tokio::spawn(async move {
        if let Some(revision) = published
            && !feed.wait_published(revision, PUBLISH_WAIT).await
        {
            tracing::warn!(
                revision,
                "answering writes before the change feed published them; watchers will hear \
                 of them once it can read the log again"
            );
        }
        for (job, result) in batch.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    });
}

/// What every change of one write records besides itself (see [`Change`]).
#[derive(Clone, Copy)]
struct Logged {
    txn: i64,
    committed_at_ms: i64,
}

/// Applies one operation after revision `last`; writes return their change-log entries,
/// already appended, with the revisions they took.
async fn apply(
    tx: &Transaction<'_>,
    op: &WriteOp,
    last: i64,
) -> StoreResult<(Applied, Vec<Change>)> {
    let mutations = match op {
        WriteOp::Transact(mutations) => mutations,
        WriteOp::Compact(retention) => {
            return Ok((
                Applied::Compacted(compact_step(tx, *retention, last).await?),
                Vec::new(),
            ));
        }
        WriteOp::PutSetting { key, value } => {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO settings (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .await
                .map_err(store_error)?;
            tx.execute(&stmt, &[key, value])
                .await
                .map_err(store_error)?;
            return Ok((Applied::Touched(1), Vec::new()));
        }
        WriteOp::RewriteTokens { prefix, rewrite } => {
            let count = rewrite_tokens(tx, prefix, rewrite).await?;
            return Ok((Applied::Touched(count), Vec::new()));
        }
        WriteOp::FillReadCache(fills) => {
            let count = fill_read_cache(tx, fills).await?;
            return Ok((Applied::Touched(count), Vec::new()));
        }
    };
    let mut stored = Vec::with_capacity(mutations.len());
    let mut changes = Vec::with_capacity(mutations.len());
    let mut revision = last;
    let logged = Logged {
        txn: last + 1,
        committed_at_ms: unix_millis_now(),
    };
    for mutation in mutations {
        let Some((row, change_type)) =
            apply_mutation(tx, mutation, revision + 1, revision, logged).await?
        else {
            continue;
        };
        revision += 1;
        changes.push(Change::written(
            revision,
            change_type,
            &row,
            logged.txn,
            logged.committed_at_ms,
        ));
        stored.push(row);
    }
    Ok((Applied::Written(stored), changes))
}

/// Applies one mutation. Resource writes take `revision`, append their change-log entry in
/// the same statement, and return the row and its change type; the others (artifacts,
/// versions) take none and return `None`. `last` is the revision of the transaction's latest
/// resource write, which a version records.
async fn apply_mutation(
    tx: &Transaction<'_>,
    mutation: &Mutation,
    revision: i64,
    last: i64,
    logged: Logged,
) -> StoreResult<Option<(StoredResource, ChangeType)>> {
    Ok(Some(match mutation {
        Mutation::Create(resource) => (
            insert(tx, resource, revision, logged).await?,
            ChangeType::Created,
        ),
        Mutation::Replace {
            resource,
            expected_revision,
        } => (
            replace(tx, resource, *expected_revision, revision, logged).await?,
            ChangeType::Updated,
        ),
        Mutation::Delete {
            scope,
            id,
            expected_revision,
        } => (
            delete(tx, scope, id, *expected_revision, revision, logged).await?,
            ChangeType::Deleted,
        ),
        Mutation::PutArtifact { hash, bytes } => {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO artifacts (hash, size, data) VALUES ($1, $2, $3) \
                     ON CONFLICT (hash) DO NOTHING",
                )
                .await
                .map_err(store_error)?;
            let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
            tx.execute(&stmt, &[hash, &size, bytes])
                .await
                .map_err(store_error)?;
            return Ok(None);
        }
        Mutation::PutVersion {
            resource_id,
            version_hash,
            tag,
            data,
            revision: placed,
        } => {
            let last = placed.unwrap_or(last);
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO resource_versions (resource_id, version_hash, tag, revision, data) \
                     VALUES ($1, $2, $3, $4, with_revision($5::text::jsonb, $4)) \
                     ON CONFLICT (resource_id, version_hash) DO UPDATE SET \
                       tag = excluded.tag, revision = excluded.revision, data = excluded.data",
                )
                .await
                .map_err(store_error)?;
            tx.execute(&stmt, &[resource_id, version_hash, tag, &last, data])
                .await
                .map_err(store_error)?;
            return Ok(None);
        }
        Mutation::Expect {
            scope,
            id,
            revision: expected,
        } => {
            let found = current_revision(tx, scope, id).await?;
            return expectation(scope, id, *expected, found).map(|()| None);
        }
        Mutation::DeleteVersions { resource_id } => {
            let stmt = tx
                .prepare_cached(
                    "WITH gone AS (DELETE FROM resource_versions WHERE resource_id = $1) \
                     DELETE FROM artifacts WHERE hash NOT IN \
                       (SELECT version_hash FROM resource_versions WHERE resource_id <> $1)",
                )
                .await
                .map_err(store_error)?;
            tx.execute(&stmt, &[resource_id])
                .await
                .map_err(store_error)?;
            return Ok(None);
        }
    }))
}

/// Reads the row a write statement returned: the columns of `resource_columns!` without
/// `proto`, which the caller knows better (see `replace`).
fn written_row(row: &tokio_postgres::Row, proto: Option<Vec<u8>>) -> StoreResult<StoredResource> {
    let read = || -> Result<StoredResource, tokio_postgres::Error> {
        Ok(StoredResource {
            id: row.try_get(0)?,
            scope: Scope {
                kind: row.try_get(1)?,
                org: row.try_get(2)?,
            },
            slug: row.try_get(3)?,
            revision: row.try_get(4)?,
            data: row.try_get(5)?,
            proto,
        })
    };
    let mut stored = read().map_err(store_error)?;
    stored.data = compact(stored.data)?;
    Ok(stored)
}

async fn insert(
    tx: &Transaction<'_>,
    resource: &NewResource,
    revision: i64,
    logged: Logged,
) -> StoreResult<StoredResource> {
    let stmt = tx
        .prepare_cached(
            "WITH written AS ( \
               INSERT INTO resources (id, kind, org_id, slug, revision, data, proto) \
               VALUES ($1, $2, $3, $4, $5, with_revision($6::text::jsonb, $5), $7) \
               RETURNING id, kind, org_id, slug, revision, data \
             ), logged AS ( \
               INSERT INTO changes (revision, type, kind, org_id, id, data, txn, committed_at) \
               SELECT revision, 'created', kind, org_id, id, data, $8, \
                 to_timestamp($9::bigint::double precision / 1000) FROM written \
             ) \
             SELECT id, kind, org_id, slug, revision, data::text FROM written",
        )
        .await
        .map_err(store_error)?;
    let row = tx
        .query_one(
            &stmt,
            &[
                &resource.id,
                &resource.scope.kind,
                &resource.scope.org,
                &resource.slug,
                &revision,
                &resource.data,
                &resource.proto,
                &logged.txn,
                &logged.committed_at_ms,
            ],
        )
        .await
        .map_err(|err| write_error(err, resource))?;
    written_row(&row, resource.proto.clone())
}

async fn replace(
    tx: &Transaction<'_>,
    resource: &NewResource,
    expected: i64,
    revision: i64,
    logged: Logged,
) -> StoreResult<StoredResource> {
    let stmt = tx
        .prepare_cached(
            "WITH written AS ( \
               UPDATE resources SET slug = $4, revision = $5, \
                 data = with_revision($6::text::jsonb, $5), proto = $7, updated_at = now() \
               WHERE id = $1 AND kind = $2 AND org_id = $3 AND revision = $8 \
               RETURNING id, kind, org_id, slug, revision, data \
             ), logged AS ( \
               INSERT INTO changes (revision, type, kind, org_id, id, data, txn, committed_at) \
               SELECT revision, 'updated', kind, org_id, id, data, $9, \
                 to_timestamp($10::bigint::double precision / 1000) FROM written \
             ) \
             SELECT id, kind, org_id, slug, revision, data::text FROM written",
        )
        .await
        .map_err(store_error)?;
    let row = tx
        .query_opt(
            &stmt,
            &[
                &resource.id,
                &resource.scope.kind,
                &resource.scope.org,
                &resource.slug,
                &revision,
                &resource.data,
                &resource.proto,
                &expected,
                &logged.txn,
                &logged.committed_at_ms,
            ],
        )
        .await
        .map_err(|err| write_error(err, resource))?;
    match row {
        // The encoding as given, as SQLite's RETURNING reports it: should the trigger have
        // cleared the column (the same bytes as before with new data), reads will say so.
        Some(row) => written_row(&row, resource.proto.clone()),
        None => Err(missing_or_moved(tx, &resource.scope, &resource.id, expected).await),
    }
}

fn write_error(err: tokio_postgres::Error, resource: &NewResource) -> StoreError {
    if is_slug_violation(&err) {
        StoreError::AlreadyExists {
            kind: resource.scope.kind.clone(),
            org: resource.scope.org.clone(),
            slug: resource.slug.clone(),
        }
    } else {
        store_error(err)
    }
}

async fn delete(
    tx: &Transaction<'_>,
    scope: &Scope,
    id: &str,
    expected: Option<i64>,
    revision: i64,
    logged: Logged,
) -> StoreResult<StoredResource> {
    let stmt = tx
        .prepare_cached(
            "WITH gone AS ( \
               DELETE FROM resources \
               WHERE id = $1 AND kind = $2 AND org_id = $3 AND ($4::bigint IS NULL OR revision = $4) \
               RETURNING id, kind, org_id, slug, revision, data, proto \
             ), logged AS ( \
               INSERT INTO changes (revision, type, kind, org_id, id, data, txn, committed_at) \
               SELECT $5, 'deleted', kind, org_id, id, data, $6, \
                 to_timestamp($7::bigint::double precision / 1000) FROM gone \
             ) \
             SELECT id, kind, org_id, slug, revision, data::text, proto FROM gone",
        )
        .await
        .map_err(store_error)?;
    let row = tx
        .query_opt(
            &stmt,
            &[
                &id,
                &scope.kind,
                &scope.org,
                &expected,
                &revision,
                &logged.txn,
                &logged.committed_at_ms,
            ],
        )
        .await
        .map_err(store_error)?;
    match (row, expected) {
        (Some(row), _) => crate::queries::stored_from_row(&row),
        (None, Some(expected)) => Err(missing_or_moved(tx, scope, id, expected).await),
        (None, None) => Err(not_found(scope, id)),
    }
}

fn not_found(scope: &Scope, id: &str) -> StoreError {
    StoreError::NotFound {
        kind: scope.kind.clone(),
        id: id.to_string(),
    }
}

async fn missing_or_moved(
    tx: &Transaction<'_>,
    scope: &Scope,
    id: &str,
    expected: i64,
) -> StoreError {
    match current_revision(tx, scope, id).await {
        Ok(Some(current)) => StoreError::Conflict {
            kind: scope.kind.clone(),
            id: id.to_string(),
            expected,
            current,
        },
        Ok(None) => not_found(scope, id),
        Err(err) => err,
    }
}

/// Only a row that still has no encoding and still holds the data the encoding was made from
/// takes it (jsonb equality: the same document, whatever its spacing or key order). Setting
/// `proto` alone does not fire the trigger that clears stale encodings.
async fn fill_read_cache(tx: &Transaction<'_>, fills: &[CacheFill]) -> StoreResult<u64> {
    let stmt = tx
        .prepare_cached(
            "UPDATE resources SET proto = $3 \
             WHERE id = $1 AND data = $2::text::jsonb AND proto IS NULL",
        )
        .await
        .map_err(store_error)?;
    let mut filled = 0;
    for fill in fills {
        filled += tx
            .execute(&stmt, &[&fill.id, &fill.data, &fill.proto])
            .await
            .map_err(store_error)?;
    }
    Ok(filled)
}

/// Removes the oldest log entries that are both outside the last `retention.revisions`
/// revisions and older than `retention.age` (by the database's clock, the same for every
/// replica), at most one step's worth, always a prefix of the log so that "everything at or
/// below `compacted` is gone" stays true. The `compacted` row is locked first, so that steps
/// of several replicas never move it backwards.
async fn compact_step(
    tx: &Transaction<'_>,
    retention: Retention,
    current: i64,
) -> StoreResult<Compaction> {
    let lock = tx
        .prepare_cached("SELECT value FROM store_meta WHERE key = 'compacted' FOR UPDATE")
        .await
        .map_err(store_error)?;
    let compacted: i64 = tx
        .query_one(&lock, &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(store_error)?;
    let through = current.saturating_sub(retention.revisions.max(0));
    let age = retention.age.as_secs_f64();
    let candidates = tx
        .prepare_cached(
            "SELECT revision, committed_at < now() - make_interval(secs => $3) FROM changes \
             WHERE revision > $1 ORDER BY revision LIMIT $2",
        )
        .await
        .map_err(store_error)?;
    let rows = tx
        .query(&candidates, &[&compacted, &COMPACTION_STEP, &age])
        .await
        .map_err(store_error)?;
    let mut last = compacted;
    for row in rows {
        let (revision, old): (i64, bool) = (
            row.try_get(0).map_err(store_error)?,
            row.try_get(1).map_err(store_error)?,
        );
        if revision > through || !old {
            break;
        }
        last = revision;
    }
    if last == compacted {
        return Ok(Compaction {
            removed: 0,
            compacted,
        });
    }
    let remove = tx
        .prepare_cached(
            "WITH moved AS (UPDATE store_meta SET value = $2 WHERE key = 'compacted') \
             DELETE FROM changes WHERE revision > $1 AND revision <= $2",
        )
        .await
        .map_err(store_error)?;
    let removed = tx
        .execute(&remove, &[&compacted, &last])
        .await
        .map_err(store_error)?;
    Ok(Compaction {
        removed,
        compacted: last,
    })
}

/// Tables that hold resource JSON.
const DATA_TABLES: &[&str] = &["resources", "changes", "resource_versions"];

/// Rewrites tokens in the JSON text of every row that holds one. The text is jsonb's, made
/// compact, so tokens end at the next `"` exactly as in SQLite's rows.
async fn rewrite_tokens(
    tx: &Transaction<'_>,
    prefix: &str,
    rewrite: &TokenRewrite,
) -> StoreResult<u64> {
    let mut count = 0;
    for table in DATA_TABLES {
        // A row's ctid finds it again directly; no row is updated twice, so none moves
        // before its turn.
        let rows = tx
            .query(
                &format!(
                    "SELECT ctid::text, data::text FROM {table} WHERE strpos(data::text, $1) > 0"
                ),
                &[&prefix],
            )
            .await
            .map_err(store_error)?;
        for row in rows {
            let (row_key, data): (String, String) = (
                row.try_get(0).map_err(store_error)?,
                row.try_get(1).map_err(store_error)?,
            );
            let (rewritten, n) = rewrite_text(&compact(data)?, prefix, rewrite)?;
            tx.execute(
                &format!("UPDATE {table} SET data = $1::text::jsonb WHERE ctid = $2::text::tid"),
                &[&rewritten, &row_key],
            )
            .await
            .map_err(store_error)?;
            count += n;
        }
    }
    Ok(count)
}
