//! The SQL every connection runs. One statement per operation, the same for every kind.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use stigmer_store::{JsonFilter, ListPage, ListQuery, Scope, StoreResult, StoredResource};

use crate::errors::store_error;

const COLUMNS: &str = "id, kind, org_id, slug, revision, data";

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
    })
}

pub(crate) fn get_by_id(
    conn: &Connection,
    scope: &Scope,
    id: &str,
) -> StoreResult<Option<StoredResource>> {
    let sql =
        format!("SELECT {COLUMNS} FROM resources WHERE id = ?1 AND kind = ?2 AND org_id = ?3");
    conn.prepare_cached(&sql)
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
    let sql =
        format!("SELECT {COLUMNS} FROM resources WHERE kind = ?1 AND org_id = ?2 AND slug = ?3");
    conn.prepare_cached(&sql)
        .and_then(|mut stmt| {
            stmt.query_row(params![scope.kind, scope.org, slug], stored_from_row)
                .optional()
        })
        .map_err(store_error)
}

/// Keyset pagination over the (kind, org_id, id) index: reads `limit + 1` rows to learn
/// whether another page follows, never an OFFSET scan.
pub(crate) fn list(conn: &Connection, query: &ListQuery) -> StoreResult<ListPage> {
    let mut sql =
        format!("SELECT {COLUMNS} FROM resources WHERE kind = ?1 AND org_id = ?2 AND id > ?3");
    let after = query.after_id.clone().unwrap_or_default();
    let fetch = i64::try_from(query.limit.saturating_add(1)).unwrap_or(i64::MAX);
    let mut values: Vec<Value> = vec![
        query.scope.kind.clone().into(),
        query.scope.org.clone().into(),
        after.into(),
        fetch.into(),
    ];
    for filter in &query.filters {
        let (path, value, condition) = match filter {
            JsonFilter::Equals { path, value } => (path, value, "json_extract(data, ?{p}) = ?{v}"),
            JsonFilter::Contains { path, value } => (
                path,
                value,
                "EXISTS (SELECT 1 FROM json_each(data, ?{p}) WHERE json_each.value = ?{v})",
            ),
        };
        values.push(path.clone().into());
        let p = values.len();
        values.push(value.clone().into());
        let v = values.len();
        sql.push_str(" AND ");
        sql.push_str(
            &condition
                .replace("{p}", &p.to_string())
                .replace("{v}", &v.to_string()),
        );
    }
    sql.push_str(" ORDER BY id LIMIT ?4");
    let mut items = conn
        .prepare_cached(&sql)
        .and_then(|mut stmt| {
            stmt.query_map(params_from_iter(values.iter()), stored_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(store_error)?;
    let next_after_id = if items.len() > query.limit {
        items.truncate(query.limit);
        items.last().map(|item| item.id.clone())
    } else {
        None
    };
    Ok(ListPage {
        items,
        next_after_id,
    })
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
