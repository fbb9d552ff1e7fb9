//! The SQL every connection runs. One statement per operation, the same for every kind.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use stigmer_store::{
    AtRevision, Change, ChangeFilter, ChangeType, FindCursor, FindPage, FindQuery, JsonFilter,
    JsonPath, ListPage, ListQuery, LogBounds, ResourceVersion, Scope, StoreError, StoreResult,
    StoredResource, VersionSelector,
};

use crate::errors::store_error;

#[cfg(test)]
mod plans;

/// The columns of a [`StoredResource`], in the order `stored_from_row` reads them. A macro so
/// that point reads can be `concat!`-ed into constants: a statement built per call would cost
/// a formatting and a hash of its text on every read.
macro_rules! resource_columns {
    () => {
        "id, kind, org_id, slug, revision, data, proto"
    };
}
const COLUMNS: &str = resource_columns!();

pub(crate) fn stored_from_row(row: &Row<'_>) -> rusqlite::Result<StoredResource> {
    Ok(StoredResource {
        id: row.get(0)?,
        scope: Scope {
            kind: row.get(1)?,
            org: row.get(2)?,
        },
        slug: row.get(3)?,
        revision: row.get(4)?,
        data: row.get(5)?,
        proto: row.get(6)?,
    })
}

/// A point read by id: the primary key's index (docs/indexes.md).
pub(crate) const GET_BY_ID: &str = concat!(
    "SELECT ",
    resource_columns!(),
    " FROM resources WHERE id = ?1 AND kind = ?2 AND org_id = ?3"
);

/// A point read by slug: the unique `(kind, org_id, slug)` index.
pub(crate) const GET_BY_SLUG: &str = concat!(
    "SELECT ",
    resource_columns!(),
    " FROM resources WHERE kind = ?1 AND org_id = ?2 AND slug = ?3"
);

pub(crate) fn get_by_id(
    conn: &Connection,
    scope: &Scope,
    id: &str,
) -> StoreResult<Option<StoredResource>> {
    conn.prepare_cached(GET_BY_ID)
        .and_then(|mut stmt| {
            stmt.query_row(params![id, scope.kind, scope.org], stored_from_row)
                .optional()
        })
        .map_err(store_error)
}

pub(crate) fn get_by_slug(
    conn: &Connection,
    scope: &Scope,
    slug: &str,
) -> StoreResult<Option<StoredResource>> {
    conn.prepare_cached(GET_BY_SLUG)
        .and_then(|mut stmt| {
            stmt.query_row(params![scope.kind, scope.org, slug], stored_from_row)
                .optional()
        })
        .map_err(store_error)
}

/// Rows without a read-cache encoding after `after_id`, through the partial index that holds
/// only those rows (migration V6), so finding them never scans the table.
pub(crate) fn uncached(
    conn: &Connection,
    after_id: &str,
    limit: usize,
) -> StoreResult<Vec<StoredResource>> {
    const SQL: &str = concat!(
        "SELECT ",
        resource_columns!(),
        " FROM resources INDEXED BY resources_uncached WHERE proto IS NULL AND id > ?1 ORDER BY id"
    );
    first_rows(
        conn,
        SQL,
        &[Value::Text(after_id.to_string())],
        limit,
        stored_from_row,
    )
}

/// A statement as the store runs it: its SQL and the values bound to it. The statements whose
/// plan depends on the request (lists, the change log, snapshots) are built apart from their
/// execution so that tests can check the plan of exactly what runs (`queries/plans.rs`).
pub(crate) struct Statement {
    pub(crate) sql: String,
    pub(crate) values: Vec<Value>,
}

/// Keyset pagination over the (kind, org_id, id) index: reads `limit + 1` rows to learn
/// whether another page follows, never an OFFSET scan.
pub(crate) fn list(conn: &Connection, query: &ListQuery) -> StoreResult<ListPage> {
    // One read transaction: the page and its revision come from the same snapshot.
    let tx = conn.unchecked_transaction().map_err(store_error)?;
    let revision = log_bounds(&tx)?.current;
    let Statement { sql, values } = list_statement(query)?;
    let mut items = first_rows(
        conn,
        &sql,
        &values,
        query.limit.saturating_add(1),
        stored_from_row,
    )?;
    let next_after_id = if items.len() > query.limit {
        items.truncate(query.limit);
        items.last().map(|item| item.id.clone())
    } else {
        None
    };
    let total = if query.filters.is_empty() {
        Some(resource_count(&tx, &query.scope)?)
    } else if query.after_id.is_none() && next_after_id.is_none() {
        Some(items.len() as u64)
    } else {
        None
    };
    Ok(ListPage {
        items,
        next_after_id,
        revision,
        total,
    })
}

/// One page of `query` after its `after_id`, in id order, without a limit (see `first_rows`).
pub(crate) fn list_statement(query: &ListQuery) -> StoreResult<Statement> {
    let columns = if query.proto_only {
        "id, kind, org_id, slug, revision, \
         CASE WHEN proto IS NULL THEN data ELSE '' END, proto"
    } else {
        COLUMNS
    };
    let mut sql =
        format!("SELECT {columns} FROM resources WHERE kind = ?1 AND org_id = ?2 AND id > ?3");
    let after = query.after_id.clone().unwrap_or_default();
    let mut values: Vec<Value> = vec![
        query.scope.kind.clone().into(),
        query.scope.org.clone().into(),
        after.into(),
    ];
    for filter in &query.filters {
        sql.push_str(" AND ");
        sql.push_str(&filter_sql(filter, &mut values)?);
    }
    sql.push_str(" ORDER BY id");
    Ok(Statement { sql, values })
}

/// A search page: the org's rows of the kinds asked for, in `(kind, id)` order after the
/// cursor, that match. It reads `limit + 1` rows to learn whether another page follows.
pub(crate) fn find(conn: &Connection, query: &FindQuery) -> StoreResult<FindPage> {
    let tx = conn.unchecked_transaction().map_err(store_error)?;
    let revision = log_bounds(&tx)?.current;
    if query.kinds.is_empty() {
        return Ok(FindPage {
            items: Vec::new(),
            next_after: None,
            revision,
        });
    }
    let Statement { sql, values } = find_statement(query);
    let mut items = first_rows(
        conn,
        &sql,
        &values,
        query.limit.saturating_add(1),
        stored_from_row,
    )?;
    let next_after = if items.len() > query.limit {
        items.truncate(query.limit);
        items.last().map(|row| FindCursor {
            kind: row.scope.kind.clone(),
            id: row.id.clone(),
        })
    } else {
        None
    };
    Ok(FindPage {
        items,
        next_after,
        revision,
    })
}

/// The search as one statement. SQLite's LIKE ignores the case of ASCII letters; the needle's
/// wildcards are escaped so that user input matches only as itself.
pub(crate) fn find_statement(query: &FindQuery) -> Statement {
    let after = query.after.clone().unwrap_or(FindCursor {
        kind: String::new(),
        id: String::new(),
    });
    let mut values: Vec<Value> = vec![
        query.org.clone().into(),
        after.kind.into(),
        after.id.into(),
        like_pattern(&query.needle).into(),
        i64::from(query.in_text).into(),
    ];
    let kinds: Vec<String> = query
        .kinds
        .iter()
        .map(|kind| {
            values.push(kind.clone().into());
            format!("?{}", values.len())
        })
        .collect();
    let sql = format!(
        "SELECT {COLUMNS} FROM resources WHERE org_id = ?1 AND kind IN ({}) \
         AND (kind > ?2 OR (kind = ?2 AND id > ?3)) \
         AND (json_extract(data, '$.metadata.name') LIKE ?4 ESCAPE '\\' \
              OR slug LIKE ?4 ESCAPE '\\' \
              OR EXISTS (SELECT 1 FROM json_each(data, '$.metadata.labels') \
                         WHERE key LIKE ?4 ESCAPE '\\' OR value LIKE ?4 ESCAPE '\\') \
              OR (?5 AND data LIKE ?4 ESCAPE '\\')) \
         ORDER BY kind, id",
        kinds.join(", ")
    );
    Statement { sql, values }
}

/// `needle` as a LIKE pattern that matches it anywhere, its wildcards taken literally.
fn like_pattern(needle: &str) -> String {
    let mut pattern = String::with_capacity(needle.len() + 2);
    pattern.push('%');
    for c in needle.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// The resources of one kind in one org, from the table the triggers of migration V7 keep.
fn resource_count(conn: &Connection, scope: &Scope) -> StoreResult<u64> {
    conn.prepare_cached("SELECT count FROM resource_counts WHERE kind = ?1 AND org_id = ?2")
        .and_then(|mut stmt| {
            stmt.query_row(params![scope.kind, scope.org], |row| row.get::<_, i64>(0))
                .optional()
        })
        .map(|count| u64::try_from(count.unwrap_or(0)).unwrap_or(0))
        .map_err(store_error)
}

/// One filter as SQL, its parameters appended to `values`. Paths and values are always bound
/// parameters, never spliced into the SQL text.
fn filter_sql(filter: &JsonFilter, values: &mut Vec<Value>) -> StoreResult<String> {
    let mut bind = |value: String| {
        values.push(value.into());
        format!("?{}", values.len())
    };
    Ok(match filter {
        JsonFilter::Equals { path, value } => {
            format!(
                "json_extract(data, {}) = {}",
                bind(sqlite_path(path)?),
                bind(value.clone())
            )
        }
        JsonFilter::NotEquals { path, value } => {
            let path = bind(sqlite_path(path)?);
            format!(
                "(json_extract(data, {path}) IS NULL OR json_extract(data, {path}) != {})",
                bind(value.clone())
            )
        }
        JsonFilter::In { path, values: list } | JsonFilter::NotIn { path, values: list } => {
            let path = bind(sqlite_path(path)?);
            let list: Vec<String> = list.iter().map(|v| bind(v.clone())).collect();
            let test = format!("json_extract(data, {path}) IN ({})", list.join(", "));
            if matches!(filter, JsonFilter::In { .. }) {
                test
            } else {
                format!("(json_extract(data, {path}) IS NULL OR NOT {test})")
            }
        }
        JsonFilter::Exists { path } => {
            format!("json_type(data, {}) IS NOT NULL", bind(sqlite_path(path)?))
        }
        JsonFilter::Missing { path } => {
            format!("json_type(data, {}) IS NULL", bind(sqlite_path(path)?))
        }
        JsonFilter::Prefix { path, prefix } => {
            let path = bind(sqlite_path(path)?);
            let prefix = bind(prefix.clone());
            format!("substr(json_extract(data, {path}), 1, length({prefix})) = {prefix}")
        }
        JsonFilter::Contains { path, value } => format!(
            "EXISTS (SELECT 1 FROM json_each(data, {}) WHERE json_each.value = {})",
            bind(sqlite_path(path)?),
            bind(value.clone())
        ),
    })
}

/// `path` in SQLite's JSON path syntax, every key quoted so that dots and slashes in label
/// keys stay part of the key: `$."metadata"."labels"."app.kubernetes.io/name"`. SQLite's
/// quoted keys have no escape, so a key holding a double quote cannot be written; the server
/// never builds one (label keys are validated before they become paths).
pub(crate) fn sqlite_path(path: &JsonPath) -> StoreResult<String> {
    let mut rendered = String::from("$");
    for key in path.keys() {
        if key.contains('"') {
            return Err(StoreError::Internal(format!(
                "JSON path key {key:?} holds a double quote, which SQLite paths cannot express"
            )));
        }
        rendered.push_str(".\"");
        rendered.push_str(key);
        rendered.push('"');
    }
    Ok(rendered)
}

/// The revision of a row, used to tell "not found" from "changed meanwhile".
pub(crate) fn current_revision(
    conn: &Connection,
    scope: &Scope,
    id: &str,
) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(
        "SELECT revision FROM resources WHERE id = ?1 AND kind = ?2 AND org_id = ?3",
    )?
    .query_row(params![id, scope.kind, scope.org], |row| row.get(0))
    .optional()
}

pub(crate) fn log_bounds(conn: &Connection) -> StoreResult<LogBounds> {
    let read = |key: &str| {
        conn.prepare_cached("SELECT value FROM store_meta WHERE key = ?1")?
            .query_row([key], |row| row.get::<_, i64>(0))
    };
    Ok(LogBounds {
        compacted: read("compacted").map_err(store_error)?,
        current: read("revision").map_err(store_error)?,
    })
}

/// The database file's bytes (pages in use and free), its -wal left out.
pub(crate) fn file_bytes(conn: &Connection) -> StoreResult<u64> {
    let bytes: i64 = conn
        .prepare_cached(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        )
        .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
        .map_err(store_error)?;
    Ok(u64::try_from(bytes).unwrap_or(0))
}

fn change_from_row(row: &Row<'_>) -> rusqlite::Result<Change> {
    let text: String = row.get(1)?;
    let change_type = ChangeType::parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Text,
            format!("unknown change type {text:?}").into(),
        )
    })?;
    Ok(Change {
        revision: row.get(0)?,
        change_type,
        scope: Scope {
            kind: row.get(2)?,
            org: row.get(3)?,
        },
        id: row.get(4)?,
        data: row.get(5)?,
        // The log keeps the JSON only.
        proto: None,
        committed_at_ms: row.get(6)?,
        txn: row.get(7)?,
    })
}

/// Appends `AND column = ?` for each part of the filter that is set.
fn filter_scope(filter: &ChangeFilter, sql: &mut String, values: &mut Vec<Value>) {
    values.push(filter.org.clone().into());
    sql.push_str(&format!(" AND org_id = ?{}", values.len()));
    if let Some(kind) = &filter.kind {
        values.push(kind.clone().into());
        sql.push_str(&format!(" AND kind = ?{}", values.len()));
    }
    if let Some(id) = &filter.id {
        values.push(id.clone().into());
        sql.push_str(&format!(" AND id = ?{}", values.len()));
    }
}

/// The log after `after`, filtered, in revision order.
pub(crate) fn changes(
    conn: &Connection,
    filter: &ChangeFilter,
    after: i64,
    limit: usize,
) -> StoreResult<Vec<Change>> {
    let tx = conn.unchecked_transaction().map_err(store_error)?;
    let bounds = log_bounds(&tx)?;
    if after < bounds.compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted: bounds.compacted,
        });
    }
    let Statement { sql, values } = changes_statement(filter, after);
    first_rows(&tx, &sql, &values, limit, change_from_row)
}

/// The log after revision `after`, filtered, in revision order, without a limit.
pub(crate) fn changes_statement(filter: &ChangeFilter, after: i64) -> Statement {
    let mut values: Vec<Value> = vec![after.into()];
    let mut sql = String::from(
        "SELECT revision, type, kind, org_id, id, data, committed_at, coalesce(txn, revision) \
         FROM changes WHERE revision > ?1",
    );
    filter_scope(filter, &mut sql, &mut values);
    sql.push_str(" ORDER BY revision");
    Statement { sql, values }
}

/// Current resources matching `filter` after `after_id`, in id order (one snapshot page).
pub(crate) fn matching_resources(
    conn: &Connection,
    filter: &ChangeFilter,
    after_id: &str,
    limit: usize,
) -> StoreResult<Vec<StoredResource>> {
    let Statement { sql, values } = matching_statement(filter, after_id);
    first_rows(conn, &sql, &values, limit, stored_from_row)
}

/// Current resources matching `filter` after `after_id`, in id order, without a limit.
pub(crate) fn matching_statement(filter: &ChangeFilter, after_id: &str) -> Statement {
    let mut values: Vec<Value> = vec![after_id.to_string().into()];
    let mut sql = format!("SELECT {COLUMNS} FROM resources WHERE id > ?1");
    filter_scope(filter, &mut sql, &mut values);
    sql.push_str(" ORDER BY id");
    Statement { sql, values }
}

/// The first `limit` rows of an ordered query. The limit is applied by reading no further
/// rather than by a bound `LIMIT ?`: SQLite recompiles a statement whose LIMIT parameter was
/// rebound on every execution (measured: a sixth of a list page's CPU).
fn first_rows<T>(
    conn: &Connection,
    sql: &str,
    values: &[Value],
    limit: usize,
    from_row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Vec<T>> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| {
            stmt.query_map(params_from_iter(values.iter()), from_row)?
                .take(limit)
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(store_error)
}

/// getAtRevision: a resource's last change at or before a revision, through the log's
/// `(id, revision)` index.
pub(crate) const CHANGE_AT_OR_BEFORE: &str = "SELECT revision, type, data FROM changes \
     WHERE id = ?1 AND kind = ?2 AND org_id = ?3 AND revision <= ?4 \
     ORDER BY revision DESC LIMIT 1";

/// getAtRevision: a resource's first change after a revision.
pub(crate) const CHANGE_AFTER: &str = "SELECT revision, type, data FROM changes \
     WHERE id = ?1 AND kind = ?2 AND org_id = ?3 AND revision > ?4 \
     ORDER BY revision LIMIT 1";

/// A resource as it was at `revision`, from the log and, when the log has nothing on it since
/// its compaction point, from the current row.
pub(crate) fn at_revision(
    conn: &Connection,
    scope: &Scope,
    id: &str,
    revision: i64,
) -> StoreResult<AtRevision> {
    let tx = conn.unchecked_transaction().map_err(store_error)?;
    let bounds = log_bounds(&tx)?;
    if revision <= bounds.compacted || revision > bounds.current {
        return Ok(AtRevision::OutOfRange(bounds));
    }
    let entry = |sql: &str| {
        tx.prepare_cached(sql)?
            .query_row(params![id, scope.kind, scope.org, revision], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .optional()
    };
    let at_or_before = entry(CHANGE_AT_OR_BEFORE).map_err(store_error)?;
    if let Some((changed_at, change_type, data)) = at_or_before {
        return Ok(AtRevision::from_last_change(changed_at, &change_type, data));
    }
    // No change between the compaction point and `revision`: the next change (if any) says
    // whether it existed then; without one, the current row is still that version.
    let next = entry(CHANGE_AFTER).map_err(store_error)?;
    let next_type = next.map(|(_, change_type, _)| change_type);
    if let Some(answer) = AtRevision::from_next_change(next_type.as_deref(), bounds) {
        return Ok(answer);
    }
    Ok(match get_by_id(&tx, scope, id)? {
        Some(row) => AtRevision::Existed {
            revision: row.revision,
            data: row.data,
        },
        None => AtRevision::Absent,
    })
}

/// Resource counts per kind in one org.
pub(crate) fn counts(conn: &Connection, org: &str) -> StoreResult<Vec<(String, i64)>> {
    conn.prepare_cached(
        "SELECT kind, count FROM resource_counts WHERE org_id = ?1 AND count > 0 ORDER BY kind",
    )
    .and_then(|mut stmt| {
        stmt.query_map([org], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()
    })
    .map_err(store_error)
}

/// Resources per kind in every org (identity resources included), in kind order.
pub(crate) fn counts_in_every_org(conn: &Connection) -> StoreResult<Vec<(String, i64)>> {
    conn.prepare_cached(
        "SELECT kind, sum(count) FROM resource_counts GROUP BY kind HAVING sum(count) > 0 \
         ORDER BY kind",
    )
    .and_then(|mut stmt| {
        stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()
    })
    .map_err(store_error)
}

pub(crate) fn setting(conn: &Connection, key: &str) -> StoreResult<Option<String>> {
    conn.prepare_cached("SELECT value FROM settings WHERE key = ?1")
        .and_then(|mut stmt| stmt.query_row([key], |row| row.get(0)).optional())
        .map_err(store_error)
}

pub(crate) fn artifact(conn: &Connection, hash: &str) -> StoreResult<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT data FROM artifacts WHERE hash = ?1")
        .and_then(|mut stmt| stmt.query_row([hash], |row| row.get(0)).optional())
        .map_err(store_error)
}

/// A version row as a stored resource (scope and slug from the current row).
pub(crate) fn version(
    conn: &Connection,
    resource_id: &str,
    selector: &VersionSelector,
) -> StoreResult<Option<StoredResource>> {
    let (sql, key) = match selector {
        VersionSelector::Hash(hash) => (
            "SELECT v.revision, v.data, r.kind, r.org_id, r.slug FROM resource_versions v \
             JOIN resources r ON r.id = v.resource_id \
             WHERE v.resource_id = ?1 AND v.version_hash = ?2",
            hash,
        ),
        VersionSelector::Tag(tag) => (
            "SELECT v.revision, v.data, r.kind, r.org_id, r.slug FROM resource_versions v \
             JOIN resources r ON r.id = v.resource_id \
             WHERE v.resource_id = ?1 AND v.tag = ?2 ORDER BY v.revision DESC LIMIT 1",
            tag,
        ),
    };
    conn.prepare_cached(sql)
        .and_then(|mut stmt| {
            stmt.query_row(params![resource_id, key], |row| {
                Ok(StoredResource {
                    id: resource_id.to_string(),
                    revision: row.get(0)?,
                    data: row.get(1)?,
                    scope: Scope {
                        kind: row.get(2)?,
                        org: row.get(3)?,
                    },
                    slug: row.get(4)?,
                    proto: None,
                })
            })
            .optional()
        })
        .map_err(store_error)
}

pub(crate) fn versions(conn: &Connection, resource_id: &str) -> StoreResult<Vec<ResourceVersion>> {
    conn.prepare_cached(
        "SELECT version_hash, tag, revision, data FROM resource_versions \
         WHERE resource_id = ?1 ORDER BY revision, version_hash",
    )
    .and_then(|mut stmt| {
        stmt.query_map([resource_id], |row| {
            Ok(ResourceVersion {
                version_hash: row.get(0)?,
                tag: row.get(1)?,
                revision: row.get(2)?,
                data: row.get(3)?,
            })
        })?
        .collect()
    })
    .map_err(store_error)
}
