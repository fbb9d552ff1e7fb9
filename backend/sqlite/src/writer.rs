//! The single writer: takes queued mutations, commits them in batches (group commit) and
//! answers each caller only once the batch holding its write is durable.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{
    Connection, OptionalExtension, ToSql, TransactionBehavior, params, params_from_iter,
};
pub(crate) use stigmer_store::{Applied, WriteOp};
use stigmer_store::{
    CacheFill, Change, ChangeType, CommitObserver, Compaction, Mutation, NewResource, Retention,
    Scope, StoreError, StoreResult, StoredResource, TokenRewrite, WriterCounters,
};
use stigmer_store::{expectation, rewrite_text, unix_millis_now, with_revision};
use tokio::sync::{broadcast, oneshot};

use crate::config::{AfterCommit, SqliteConfig};
use crate::errors::{OpenError, is_unique_violation, store_error};
use crate::queries::{current_revision, stored_from_row};
use crate::reserve::Space;

struct WriteJob {
    op: WriteOp,
    reply: oneshot::Sender<StoreResult<Applied>>,
}

/// Change-log entries removed per compaction step, so that one step never holds up writes for long.
const COMPACTION_STEP: i64 = 1000;

enum WriterMsg {
    Job(WriteJob),
    Shutdown(oneshot::Sender<StoreResult<()>>),
}

pub(crate) struct Writer {
    queue: flume::Sender<WriterMsg>,
    counters: Arc<WriterCounters>,
    /// Taken at shutdown, so that once the writer thread (which holds the other sender) has
    /// ended, live receivers, and the watches reading them, end too.
    changes: Mutex<Option<broadcast::Sender<Arc<Change>>>>,
}

impl Writer {
    pub(crate) fn spawn(
        conn: Connection,
        config: &SqliteConfig,
        space: Space,
        threads: &mut Vec<JoinHandle<()>>,
    ) -> Result<Self, OpenError> {
        let revision = last_revision(&conn).map_err(|error| OpenError::Sqlite {
            path: config.path.clone(),
            error,
        })?;
        let (queue, jobs) = flume::bounded(config.queue_depth);
        let max_batch = config.max_batch.max(1);
        let counters = Arc::new(WriterCounters::default());
        let (changes, _) = broadcast::channel(config.watch_buffer.max(1));
        let state = WriterState {
            revision,
            counters: Arc::clone(&counters),
            changes: changes.clone(),
            space,
            after_commit: config.after_commit.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run_writer(conn, jobs, state, max_batch))
            .map_err(OpenError::Thread)?;
        threads.push(handle);
        Ok(Self {
            queue,
            counters,
            changes: Mutex::new(Some(changes)),
        })
    }

    pub(crate) fn observe_commits(&self, observer: Arc<dyn CommitObserver>) {
        self.counters.observe(observer);
    }

    /// Live changes; after shutdown, a receiver that is already closed.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        match &*self.changes.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(changes) => changes.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    pub(crate) fn counters(&self) -> &WriterCounters {
        &self.counters
    }

    /// Writes waiting for the writer thread.
    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    pub(crate) async fn submit(&self, op: WriteOp) -> StoreResult<Applied> {
        let (reply, result) = oneshot::channel();
        self.queue
            .send_async(WriterMsg::Job(WriteJob { op, reply }))
            .await
            .map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues a shutdown behind every write already queued. Returns false if the writer is gone.
    pub(crate) async fn shutdown(&self, done: oneshot::Sender<StoreResult<()>>) -> bool {
        self.changes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.queue
            .send_async(WriterMsg::Shutdown(done))
            .await
            .is_ok()
    }
}

fn last_revision(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT value FROM store_meta WHERE key = 'revision'",
        [],
        |row| row.get(0),
    )
}

/// What the writer thread carries from batch to batch.
struct WriterState {
    /// The last revision handed out.
    revision: i64,
    counters: Arc<WriterCounters>,
    changes: broadcast::Sender<Arc<Change>>,
    space: Space,
    after_commit: Option<AfterCommit>,
}

fn run_writer(
    mut conn: Connection,
    queue: flume::Receiver<WriterMsg>,
    mut state: WriterState,
    max_batch: usize,
) {
    let mut shutdown = None;
    while shutdown.is_none() {
        let Ok(first) = queue.recv() else { break };
        let mut batch = Vec::new();
        match first {
            WriterMsg::Job(job) => batch.push(job),
            WriterMsg::Shutdown(done) => shutdown = Some(done),
        }
        // Whatever queued up while the previous batch was being made durable goes in this one.
        while shutdown.is_none() && batch.len() < max_batch {
            match queue.try_recv() {
                Ok(WriterMsg::Job(job)) => batch.push(job),
                Ok(WriterMsg::Shutdown(done)) => shutdown = Some(done),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            state.space.recheck(&conn);
            commit_batch(&mut conn, batch, &mut state);
        }
    }
    let closed = close_cleanly(conn, &mut state.space);
    if let Some(done) = shutdown {
        let _ = done.send(closed);
    }
}

/// Checkpoints the WAL into the main file and truncates it, so the database is one
/// self-contained file after a clean stop. A checkpoint that fails loses nothing: every commit
/// is already durable in the WAL, which the next start replays. So it is reported, and only a
/// connection that will not close fails the close.
fn close_cleanly(conn: Connection, space: &mut Space) -> StoreResult<()> {
    let mut checkpoint = checkpoint_truncate(&conn);
    if matches!(checkpoint, Err(StoreError::Full)) && space.release_for_close() {
        tracing::warn!("the disk is full: released the disk reserve for the final checkpoint");
        checkpoint = checkpoint_truncate(&conn);
    }
    match checkpoint {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "could not checkpoint the WAL: a reader still uses it; the WAL is kept and replayed \
             at the next start, nothing is lost"
        ),
        Err(StoreError::Full) => tracing::error!(
            "could not checkpoint the WAL: the disk is full; the WAL is kept and replayed at \
             the next start, nothing is lost"
        ),
        Err(err) => tracing::error!(
            error = %err,
            "could not checkpoint the WAL; the WAL is kept and replayed at the next start, \
             nothing is lost"
        ),
    }
    conn.close().map_err(|(_, err)| store_error(err))
}

/// Whether the WAL was checkpointed whole (false: a reader held part of it back).
fn checkpoint_truncate(conn: &Connection) -> StoreResult<bool> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
        row.get::<_, i64>(0)
    })
    .map(|busy| busy == 0)
    .map_err(store_error)
}

/// Commits one batch, publishes its changes, then answers its callers. When any of them was
/// refused for want of space, the disk reserve is released first, so that a caller told the
/// disk is full can delete at once.
fn commit_batch(conn: &mut Connection, batch: Vec<WriteJob>, state: &mut WriterState) {
    let began = Instant::now();
    let counters = Arc::clone(&state.counters);
    counters
        .committing
        .store(batch.len() as u64, Ordering::Relaxed);
    let mut dropped = vec![None; batch.len()];
    let outcome = loop {
        match attempt(conn, &batch, &dropped, state) {
            Ok(Attempt::Committed(committed)) => break Ok(committed),
            Ok(Attempt::RolledBack { index, err }) => dropped[index] = Some(err),
            Err(err) => break Err(err),
        }
    };
    counters.committing.store(0, Ordering::Relaxed);
    match outcome {
        Ok(committed) => {
            let full = committed
                .results
                .iter()
                .any(|result| matches!(result, Err(StoreError::Full)));
            if full {
                state.space.on_full(conn);
            }
            answer_committed(batch, committed, began.elapsed(), state);
        }
        Err(err) => {
            let err = store_error(err);
            if matches!(err, StoreError::Full) {
                tracing::warn!(
                    writes = batch.len(),
                    "a batch did not commit: the disk is full"
                );
                state.space.on_full(conn);
            } else {
                tracing::error!(error = %err, writes = batch.len(), "committing a batch failed");
            }
            for job in batch {
                let _ = job.reply.send(Err(err.clone()));
            }
        }
    }
}

/// A batch's transaction, committed: each job's result and the changes to publish.
struct Committed {
    results: Vec<StoreResult<Applied>>,
    changes: Vec<Arc<Change>>,
    revision: i64,
    /// How long the COMMIT statement took.
    commit: Duration,
}

enum Attempt {
    Committed(Committed),
    /// SQLite rolled the whole transaction back when job `index` failed, as it may for some
    /// errors (SQLITE_FULL among them) instead of undoing just the statement. The batch is
    /// tried again without that job, so that it still sinks no other.
    RolledBack {
        index: usize,
        err: StoreError,
    },
}

/// Applies every job not yet `dropped`, each in its own savepoint, and commits.
fn attempt(
    conn: &mut Connection,
    batch: &[WriteJob],
    dropped: &[Option<StoreError>],
    state: &WriterState,
) -> rusqlite::Result<Attempt> {
    let mut next = state.revision;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(batch.len());
    let mut changes = Vec::new();
    for (index, job) in batch.iter().enumerate() {
        if let Some(err) = &dropped[index] {
            results.push(Err(err.clone()));
            continue;
        }
        state.space.limit(&tx, frees_space(&job.op));
        run(&tx, "SAVEPOINT job")?;
        match apply(&tx, &job.op, next) {
            Ok((applied, applied_changes)) => {
                run(&tx, "RELEASE job")?;
                if let Some(last) = applied_changes.last() {
                    next = last.revision;
                }
                changes.extend(applied_changes.into_iter().map(Arc::new));
                results.push(Ok(applied));
            }
            Err(err) if tx.is_autocommit() => {
                return Ok(Attempt::RolledBack { index, err });
            }
            Err(err) => {
                run(&tx, "ROLLBACK TO job")?;
                run(&tx, "RELEASE job")?;
                results.push(Err(err));
            }
        }
    }
    if next != state.revision {
        tx.execute(
            "UPDATE store_meta SET value = ?1 WHERE key = 'revision'",
            params![next],
        )?;
    }
    let committing = Instant::now();
    tx.commit()?;
    Ok(Attempt::Committed(Committed {
        results,
        changes,
        revision: next,
        commit: committing.elapsed(),
    }))
}

/// Runs a statement without parameters or rows (a savepoint's), prepared once: rusqlite's
/// `Savepoint` prepares its SAVEPOINT and RELEASE anew for every job.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Whether an operation only removes data: it may use some of a released disk reserve.
fn frees_space(op: &WriteOp) -> bool {
    match op {
        WriteOp::Transact(mutations) => mutations.iter().all(|mutation| {
            matches!(
                mutation,
                Mutation::Delete { .. } | Mutation::DeleteVersions { .. } | Mutation::Expect { .. }
            )
        }),
        WriteOp::Compact(_) => true,
        WriteOp::PutSetting { .. } | WriteOp::RewriteTokens { .. } | WriteOp::FillReadCache(_) => {
            false
        }
    }
}

/// `transaction`: from the first try at the batch to the end of its COMMIT.
fn answer_committed(
    batch: Vec<WriteJob>,
    committed: Committed,
    transaction: Duration,
    state: &mut WriterState,
) {
    let Committed {
        results,
        changes,
        revision,
        commit,
    } = committed;
    tracing::debug!(writes = batch.len(), revision, "committed a batch");
    state.revision = revision;
    let writes = batch
        .iter()
        .filter(|job| matches!(job.op, WriteOp::Transact(_)))
        .count();
    state.counters.committed(writes, transaction, commit);
    if let Some(after_commit) = &state.after_commit {
        after_commit.call(batch.len());
    }
    // Watchers hear of a change before its writer is answered.
    for change in changes {
        let _ = state.changes.send(change);
    }
    for (job, result) in batch.into_iter().zip(results) {
        let _ = job.reply.send(result);
    }
}

/// Applies one operation after revision `last`; writes return their change-log entries,
/// already appended, with the revisions they took.
fn apply(conn: &Connection, op: &WriteOp, last: i64) -> StoreResult<(Applied, Vec<Change>)> {
    let mutations = match op {
        WriteOp::Transact(mutations) => mutations,
        WriteOp::Compact(retention) => {
            return Ok((
                Applied::Compacted(compact_step(conn, *retention, last)?),
                Vec::new(),
            ));
        }
        WriteOp::PutSetting { key, value } => {
            conn.prepare_cached(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut stmt| stmt.execute(params![key, value]))
            .map_err(store_error)?;
            return Ok((Applied::Touched(1), Vec::new()));
        }
        WriteOp::RewriteTokens { prefix, rewrite } => {
            let count = rewrite_tokens(conn, prefix, rewrite)?;
            return Ok((Applied::Touched(count), Vec::new()));
        }
        WriteOp::FillReadCache(fills) => {
            let count = fill_read_cache(conn, fills).map_err(store_error)?;
            return Ok((Applied::Touched(count), Vec::new()));
        }
    };
    let mut stored = Vec::with_capacity(mutations.len());
    let mut changes = Vec::with_capacity(mutations.len());
    let mut revision = last;
    let (txn, committed_at) = (last + 1, unix_millis_now());
    for mutation in mutations {
        let Some((row, change_type)) = apply_mutation(conn, mutation, revision + 1, revision)?
        else {
            continue;
        };
        revision += 1;
        let change = Change::written(revision, change_type, &row, txn, committed_at);
        append_change(conn, &change).map_err(store_error)?;
        stored.push(row);
        changes.push(change);
    }
    Ok((Applied::Written(stored), changes))
}

/// Applies one mutation. Resource writes take `revision` and return the row and its change;
/// the others (artifacts, versions) take none and return `None`. `last` is the revision of the
/// transaction's latest resource write, which a version records.
fn apply_mutation(
    conn: &Connection,
    mutation: &Mutation,
    revision: i64,
    last: i64,
) -> StoreResult<Option<(StoredResource, ChangeType)>> {
    Ok(Some(match mutation {
        Mutation::Create(resource) => (insert(conn, resource, revision)?, ChangeType::Created),
        Mutation::Replace {
            resource,
            expected_revision,
        } => (
            replace(conn, resource, *expected_revision, revision)?,
            ChangeType::Updated,
        ),
        Mutation::Delete {
            scope,
            id,
            expected_revision,
        } => (
            delete(conn, scope, id, *expected_revision)?,
            ChangeType::Deleted,
        ),
        Mutation::PutArtifact { hash, bytes } => {
            conn.prepare_cached(
                "INSERT INTO artifacts (hash, size, data) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (hash) DO NOTHING",
            )
            .and_then(|mut stmt| stmt.execute(params![hash, bytes.len() as i64, bytes]))
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
            conn.prepare_cached(
                "INSERT INTO resource_versions (resource_id, version_hash, tag, revision, data) \
                 VALUES (?1, ?2, ?3, ?4, json_set(?5, '$.metadata.revision', ?6)) \
                 ON CONFLICT (resource_id, version_hash) DO UPDATE SET \
                   tag = excluded.tag, revision = excluded.revision, data = excluded.data",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    resource_id,
                    version_hash,
                    tag,
                    last,
                    data,
                    last.to_string()
                ])
            })
            .map_err(store_error)?;
            return Ok(None);
        }
        Mutation::Expect {
            scope,
            id,
            revision: expected,
        } => {
            let found = current_revision(conn, scope, id).map_err(store_error)?;
            return expectation(scope, id, *expected, found).map(|()| None);
        }
        Mutation::DeleteVersions { resource_id } => {
            conn.prepare_cached("DELETE FROM resource_versions WHERE resource_id = ?1")
                .and_then(|mut stmt| stmt.execute([resource_id]))
                .and_then(|_| {
                    conn.execute(
                        "DELETE FROM artifacts WHERE hash NOT IN \
                         (SELECT version_hash FROM resource_versions)",
                        [],
                    )
                })
                .map_err(store_error)?;
            return Ok(None);
        }
    }))
}

/// Only a row that still has no encoding and still holds the exact data the encoding was made
/// from takes it: a write or a hand edit since the fill was computed leaves the row alone.
/// Updating `proto` alone does not fire the trigger that clears stale encodings.
fn fill_read_cache(conn: &Connection, fills: &[CacheFill]) -> rusqlite::Result<u64> {
    let mut stmt = conn.prepare_cached(
        "UPDATE resources SET proto = ?3 WHERE id = ?1 AND data = ?2 AND proto IS NULL",
    )?;
    let mut filled = 0;
    for fill in fills {
        filled += stmt.execute(params![fill.id, fill.data, fill.proto])? as u64;
    }
    Ok(filled)
}

/// A change-log entry (docs/indexes.md).
pub(crate) const APPEND_CHANGE: &str = "INSERT INTO changes \
     (revision, type, kind, org_id, id, committed_at, data, txn) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

fn append_change(conn: &Connection, change: &Change) -> rusqlite::Result<()> {
    conn.prepare_cached(APPEND_CHANGE)?.execute(params![
        change.revision,
        change.change_type.as_str(),
        change.scope.kind,
        change.scope.org,
        change.id,
        change.committed_at_ms,
        change.data,
        change.txn,
    ])?;
    Ok(())
}

/// Removes the oldest log entries that are both outside the last `retention.revisions`
/// revisions and older than `retention.age`, at most one step's worth, always a prefix of the
/// log so that "everything at or below `compacted` is gone" stays true.
fn compact_step(conn: &Connection, retention: Retention, current: i64) -> StoreResult<Compaction> {
    let run = || -> rusqlite::Result<Compaction> {
        let compacted: i64 = conn.query_row(
            "SELECT value FROM store_meta WHERE key = 'compacted'",
            [],
            |row| row.get(0),
        )?;
        let through = current.saturating_sub(retention.revisions.max(0));
        let cutoff = unix_millis_now()
            .saturating_sub(i64::try_from(retention.age.as_millis()).unwrap_or(i64::MAX));
        let mut stmt = conn.prepare_cached(
            "SELECT revision, committed_at FROM changes WHERE revision > ?1 \
             ORDER BY revision LIMIT ?2",
        )?;
        let mut last = compacted;
        let mut rows = stmt.query(params![compacted, COMPACTION_STEP])?;
        while let Some(row) = rows.next()? {
            let (revision, committed_at): (i64, i64) = (row.get(0)?, row.get(1)?);
            if revision > through || committed_at >= cutoff {
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
        let removed = conn
            .prepare_cached("DELETE FROM changes WHERE revision > ?1 AND revision <= ?2")?
            .execute(params![compacted, last])?;
        conn.execute(
            "UPDATE store_meta SET value = ?1 WHERE key = 'compacted'",
            params![last],
        )?;
        Ok(Compaction {
            removed: removed as u64,
            compacted: last,
        })
    };
    run().map_err(store_error)
}

/// A create (docs/indexes.md). `data` already holds its revision, set by [`revised`].
pub(crate) const INSERT_RESOURCE: &str = "INSERT INTO resources \
     (id, kind, org_id, slug, revision, data, proto) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// An update that checks the expected revision, by primary key.
pub(crate) const REPLACE_RESOURCE: &str = "UPDATE resources SET slug = ?4, revision = ?5, \
       data = ?6, proto = ?7, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
     WHERE id = ?1 AND kind = ?2 AND org_id = ?3 AND revision = ?8";

/// A delete, by primary key.
pub(crate) const DELETE_RESOURCE: &str = "DELETE FROM resources \
     WHERE id = ?1 AND kind = ?2 AND org_id = ?3 AND (?4 IS NULL OR revision = ?4) \
     RETURNING id, kind, org_id, slug, revision, data, proto";

fn insert(conn: &Connection, resource: &NewResource, revision: i64) -> StoreResult<StoredResource> {
    write_row(conn, INSERT_RESOURCE, resource, revision, None).map(|(_, row)| row)
}

fn replace(
    conn: &Connection,
    resource: &NewResource,
    expected: i64,
    revision: i64,
) -> StoreResult<StoredResource> {
    match write_row(conn, REPLACE_RESOURCE, resource, revision, Some(expected))? {
        (0, _) => Err(missing_or_moved(
            conn,
            &resource.scope,
            &resource.id,
            expected,
        )),
        (_, row) => Ok(row),
    }
}

/// Runs a row write (`INSERT_RESOURCE`, `REPLACE_RESOURCE`): ?1..?7 are the row's columns,
/// `data` with its revision; ?8 the expected revision, if any. Returns the rows changed and
/// the row as written.
fn write_row(
    conn: &Connection,
    sql: &str,
    resource: &NewResource,
    revision: i64,
    expected: Option<i64>,
) -> StoreResult<(usize, StoredResource)> {
    let data = revised(conn, &resource.data, revision)?;
    let mut values: Vec<&dyn ToSql> = vec![
        &resource.id,
        &resource.scope.kind,
        &resource.scope.org,
        &resource.slug,
        &revision,
        &data,
        &resource.proto,
    ];
    if let Some(expected) = &expected {
        values.push(expected);
    }
    let changed = conn
        .prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute(params_from_iter(values)))
        .map_err(|err| write_error(err, resource))?;
    // What the writer bound, `proto` included: as RETURNING would report it, even when the
    // trigger then cleared the column (the same bytes as before with new data); reads will
    // say so.
    let row = StoredResource {
        scope: resource.scope.clone(),
        id: resource.id.clone(),
        slug: resource.slug.clone(),
        revision,
        data,
        proto: resource.proto.clone(),
    };
    Ok((changed, row))
}

/// `data` with `$.metadata.revision` set to `revision`: spliced into the text when it is JSON
/// as the server writes it, by SQLite's `json_set` otherwise, with the same result either way
/// (docs/adr/0030-revision-set-before-the-write.md).
fn revised(conn: &Connection, data: &str, revision: i64) -> StoreResult<String> {
    if let Some(revised) = with_revision(data, revision) {
        return Ok(revised);
    }
    conn.prepare_cached("SELECT json_set(?1, '$.metadata.revision', ?2)")
        .and_then(|mut stmt| stmt.query_row(params![data, revision.to_string()], |row| row.get(0)))
        .map_err(store_error)
}

fn write_error(err: rusqlite::Error, resource: &NewResource) -> StoreError {
    if is_unique_violation(&err) {
        StoreError::AlreadyExists {
            kind: resource.scope.kind.clone(),
            org: resource.scope.org.clone(),
            slug: resource.slug.clone(),
        }
    } else {
        store_error(err)
    }
}

fn delete(
    conn: &Connection,
    scope: &Scope,
    id: &str,
    expected: Option<i64>,
) -> StoreResult<StoredResource> {
    let deleted = conn
        .prepare_cached(DELETE_RESOURCE)
        .and_then(|mut stmt| {
            stmt.query_row(
                params![id, scope.kind, scope.org, expected],
                stored_from_row,
            )
            .optional()
        })
        .map_err(store_error)?;
    match (deleted, expected) {
        (Some(stored), _) => Ok(stored),
        (None, Some(expected)) => Err(missing_or_moved(conn, scope, id, expected)),
        (None, None) => Err(not_found(scope, id)),
    }
}

fn not_found(scope: &Scope, id: &str) -> StoreError {
    StoreError::NotFound {
        kind: scope.kind.clone(),
        id: id.to_string(),
    }
}

fn missing_or_moved(conn: &Connection, scope: &Scope, id: &str, expected: i64) -> StoreError {
    match current_revision(conn, scope, id) {
        Ok(Some(current)) => StoreError::Conflict {
            kind: scope.kind.clone(),
            id: id.to_string(),
            expected,
            current,
        },
        Ok(None) => not_found(scope, id),
        Err(err) => store_error(err),
    }
}

/// Tables and columns that hold resource JSON.
const DATA_COLUMNS: &[(&str, &str)] = &[
    ("resources", "id"),
    ("changes", "revision"),
    ("resource_versions", "rowid"),
];

fn rewrite_tokens(conn: &Connection, prefix: &str, rewrite: &TokenRewrite) -> StoreResult<u64> {
    let mut count = 0;
    for (table, key) in DATA_COLUMNS {
        let rows: Vec<(rusqlite::types::Value, String)> = conn
            .prepare(&format!(
                "SELECT {key}, data FROM {table} WHERE instr(data, ?1) > 0"
            ))
            .and_then(|mut stmt| {
                stmt.query_map([prefix], |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect()
            })
            .map_err(store_error)?;
        for (row_key, data) in rows {
            let (rewritten, n) = rewrite_text(&data, prefix, rewrite)?;
            conn.execute(
                &format!("UPDATE {table} SET data = ?1 WHERE {key} = ?2"),
                params![rewritten, row_key],
            )
            .map_err(store_error)?;
            count += n;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reserve::Reserve;
    use crate::schema;

    fn create(id: &str) -> WriteOp {
        WriteOp::Transact(vec![Mutation::Create(NewResource {
            scope: Scope::new("Agent", "local"),
            id: id.into(),
            slug: id.into(),
            data: format!(r#"{{"metadata":{{"id":"{id}"}}}}"#),
            proto: None,
        })])
    }

    fn job(op: WriteOp) -> (WriteJob, oneshot::Receiver<StoreResult<Applied>>) {
        let (reply, answer) = oneshot::channel();
        (WriteJob { op, reply }, answer)
    }

    fn written(answer: &mut oneshot::Receiver<StoreResult<Applied>>) -> StoreResult<i64> {
        match answer.try_recv().expect("answered")? {
            Applied::Written(rows) => Ok(rows[0].revision),
            _ => panic!("not a write"),
        }
    }

    /// A migrated database's writer connection and the writer's state, with room for
    /// `pages` more pages if given, and the receiver of the changes it publishes.
    fn writer(
        dir: &tempfile::TempDir,
        pages: Option<i64>,
    ) -> (Connection, WriterState, broadcast::Receiver<Arc<Change>>) {
        let config = SqliteConfig::new(dir.path().join("writer.db"));
        schema::prepare_path(&config.path).expect("path");
        let mut conn = schema::open_writer_connection(&config).expect("open");
        schema::migrate(&mut conn, &config.path).expect("migrate");
        if let Some(more) = pages {
            let pages: i64 = conn
                .pragma_query_value(None, "page_count", |row| row.get(0))
                .expect("page_count");
            conn.pragma_update(None, "max_page_count", pages + more)
                .expect("cap");
        }
        let space = Space::start(Reserve::new(&config.path, 0), &conn);
        let (changes, published) = broadcast::channel(16);
        let state = WriterState {
            revision: 0,
            counters: Arc::default(),
            changes,
            space,
            after_commit: None,
        };
        (conn, state, published)
    }

    /// SQLite answers some errors, SQLITE_FULL among them, by rolling back the whole
    /// transaction rather than the statement: the other writes of the batch must still commit.
    #[test]
    fn a_write_that_rolls_back_the_whole_transaction_sinks_no_other() {
        let dir = tempfile::tempdir().expect("dir");
        // Room for a few small rows, not for a 1 MiB artifact.
        let (mut conn, mut state, _) = writer(&dir, Some(20));
        let (first, mut first_answer) = job(create("agt-1"));
        let (artifact, mut artifact_answer) = job(WriteOp::Transact(vec![Mutation::PutArtifact {
            hash: "a".repeat(64),
            bytes: vec![7; 1024 * 1024],
        }]));
        let (last, mut last_answer) = job(create("agt-2"));

        commit_batch(&mut conn, vec![first, artifact, last], &mut state);

        assert_eq!(written(&mut first_answer).expect("first"), 1);
        assert_eq!(written(&mut last_answer).expect("last"), 2);
        assert!(matches!(
            artifact_answer.try_recv().expect("answered"),
            Err(StoreError::Full)
        ));
        let stored: i64 = conn
            .query_row("SELECT count(*) FROM resources", [], |row| row.get(0))
            .expect("count");
        assert_eq!(stored, 2);
    }

    /// The changes the writer publishes carry the encoding a create or an update stored, so
    /// that watchers need not encode the JSON again.
    #[test]
    fn published_changes_carry_the_written_encoding() {
        let dir = tempfile::tempdir().expect("dir");
        let (mut conn, mut state, mut published) = writer(&dir, None);
        let WriteOp::Transact(mut mutations) = create("agt-1") else {
            unreachable!()
        };
        if let Mutation::Create(resource) = &mut mutations[0] {
            resource.proto = Some(b"enc".to_vec());
        }
        let (first, mut answer) = job(WriteOp::Transact(mutations));
        let (second, _) = job(WriteOp::Transact(vec![Mutation::Delete {
            scope: Scope::new("Agent", "local"),
            id: "agt-1".into(),
            expected_revision: None,
        }]));

        commit_batch(&mut conn, vec![first, second], &mut state);

        assert_eq!(written(&mut answer).expect("created"), 1);
        let created = published.try_recv().expect("the create");
        assert_eq!(created.proto.as_deref(), Some(&b"enc"[..]));
        let deleted = published.try_recv().expect("the delete");
        assert_eq!(deleted.change_type, ChangeType::Deleted);
        assert_eq!(
            deleted.proto, None,
            "a delete's resource is at an older revision"
        );
    }

    /// The revision the writer splices into a document is what SQLite's `json_set` would have
    /// written, byte for byte, for the documents the server writes and for odd ones alike.
    #[test]
    fn the_spliced_revision_is_what_json_set_writes() {
        let conn = Connection::open_in_memory().expect("memory");
        let docs = [
            r#"{"metadata":{"id":"a","name":"n"},"spec":{}}"#,
            r#"{"apiVersion":"agentic.stigmer.ai/v1","metadata":{"id":"a","revision":"41","labels":{"revision":"x"}},"spec":{"metadata":{}}}"#,
            r#"{"metadata":{}}"#,
            r#"{}"#,
            r#"{"kind":"A","metadata":{"n":[1,{"b":"}"}],"s":"\"{\u00e9"}}"#,
            r#"{"metadata":{"revision":7}}"#,
            r#"{ "metadata" : { "id" : "a" } }"#,
            r#"{"metadata":"text"}"#,
            r#"[1]"#,
        ];
        for doc in docs {
            let expected: String = conn
                .query_row(
                    "SELECT json_set(?1, '$.metadata.revision', '42')",
                    [doc],
                    |row| row.get(0),
                )
                .expect("json_set");
            assert_eq!(revised(&conn, doc, 42).expect("revised"), expected, "{doc}");
            if let Some(spliced) = with_revision(doc, 42) {
                assert_eq!(spliced, expected, "spliced {doc}");
            }
        }
    }
}
