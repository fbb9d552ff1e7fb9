//! Every read. One statement per operation, the same for every kind; reads that need more than
//! one statement to agree (a page and its revision, a log page and the compaction point) run
//! in one REPEATABLE READ transaction.

use deadpool_postgres::{GenericClient, Object, Transaction};
use stigmer_store::{
    AtRevision, Change, ChangeFilter, ChangeType, FindCursor, FindPage, FindQuery, ListPage,
    ListQuery, LogBounds, ResourceVersion, Scope, StoreError, StoreResult, StoredResource,
    VersionSelector,
};
use tokio_postgres::{IsolationLevel, Row};

use crate::errors::store_error;
use crate::json::{Params, bind, compact, filter_sql, param_refs};

/// The columns of a [`StoredResource`], in the order `stored_from_row` reads them.
macro_rules! resource_columns {
    () => {
        "id, kind, org_id, slug, revision, data::text, proto"
    };
}

pub(crate) fn stored_from_row(row: &Row) -> StoreResult<StoredResource> {
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
            proto: row.try_get(6)?,
        })
    };
    let mut stored = read().map_err(store_error)?;
    stored.data = compact(stored.data)?;
    Ok(stored)
}

fn stored_rows(rows: &[Row]) -> StoreResult<Vec<StoredResource>> {
    rows.iter().map(stored_from_row).collect()
}

/// A read-only transaction whose statements all see one snapshot.
pub(crate) async fn consistent(client: &mut Object) -> StoreResult<Transaction<'_>> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(store_error)
}

pub(crate) async fn get_by_id(
    client: &impl GenericClient,
    scope: &Scope,
    id: &str,
) -> StoreResult<Option<StoredResource>> {
    const SQL: &str = concat!(
        "SELECT ",
        resource_columns!(),
        " FROM resources WHERE id = $1 AND kind = $2 AND org_id = $3"
    );
    let stmt = client.prepare_cached(SQL).await.map_err(store_error)?;
    client
        .query_opt(&stmt, &[&id, &scope.kind, &scope.org])
        .await
        .map_err(store_error)?
        .as_ref()
        .map(stored_from_row)
        .transpose()
}

pub(crate) async fn get_by_slug(
    client: &impl GenericClient,
    scope: &Scope,
    slug: &str,
) -> StoreResult<Option<StoredResource>> {
    const SQL: &str = concat!(
        "SELECT ",
        resource_columns!(),
        " FROM resources WHERE kind = $1 AND org_id = $2 AND slug = $3"
    );
    let stmt = client.prepare_cached(SQL).await.map_err(store_error)?;
    client
        .query_opt(&stmt, &[&scope.kind, &scope.org, &slug])
        .await
        .map_err(store_error)?
        .as_ref()
        .map(stored_from_row)
        .transpose()
}

/// Rows without a read-cache encoding after `after_id`, through the partial index that holds
/// only those rows.
pub(crate) async fn uncached(
    client: &impl GenericClient,
    after_id: &str,
    limit: usize,
) -> StoreResult<Vec<StoredResource>> {
    const SQL: &str = concat!(
        "SELECT ",
        resource_columns!(),
        " FROM resources WHERE proto IS NULL AND id > $1 ORDER BY id LIMIT $2"
    );
    let stmt = client.prepare_cached(SQL).await.map_err(store_error)?;
    let rows = client
        .query(&stmt, &[&after_id, &limit_param(limit)])
        .await
        .map_err(store_error)?;
    stored_rows(&rows)
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Keyset pagination over the (kind, org_id, id) index: reads `limit + 1` rows to learn
/// whether another page follows, never an OFFSET scan.
pub(crate) async fn list(client: &mut Object, query: &ListQuery) -> StoreResult<ListPage> {
    let tx = consistent(client).await?;
    let revision = log_bounds(&tx).await?.current;
    let (sql, params) = list_statement(query)?;
    let stmt = tx.prepare_cached(&sql).await.map_err(store_error)?;
    let rows = tx
        .query(&stmt, &param_refs(&params))
        .await
        .map_err(store_error)?;
    let mut items = stored_rows(&rows)?;
    let next_after_id = if items.len() > query.limit {
        items.truncate(query.limit);
        items.last().map(|item| item.id.clone())
    } else {
        None
    };
    let total = if query.filters.is_empty() {
        Some(resource_count(&tx, &query.scope).await?)
    } else if query.after_id.is_none() && next_after_id.is_none() {
        Some(items.len() as u64)
    } else {
        None
    };
    tx.commit().await.map_err(store_error)?;
    Ok(ListPage {
        items,
        next_after_id,
        revision,
        total,
    })
}

/// One page of `query` after its `after_id`, in id order, `limit + 1` rows at most.
fn list_statement(query: &ListQuery) -> StoreResult<(String, Params)> {
    let columns = if query.proto_only {
        "id, kind, org_id, slug, revision, \
         CASE WHEN proto IS NULL THEN data::text ELSE '' END, proto"
    } else {
        resource_columns!()
    };
    let mut params = Params::new();
    let mut sql = format!(
        "SELECT {columns} FROM resources WHERE kind = {} AND org_id = {} AND id > {}",
        bind(&mut params, query.scope.kind.clone()),
        bind(&mut params, query.scope.org.clone()),
        bind(&mut params, query.after_id.clone().unwrap_or_default()),
    );
    for filter in &query.filters {
        sql.push_str(" AND ");
        sql.push_str(&filter_sql(filter, &mut params)?);
    }
    let limit = bind(&mut params, limit_param(query.limit.saturating_add(1)));
    sql.push_str(&format!(" ORDER BY id LIMIT {limit}"));
    Ok((sql, params))
}

/// A search page: the org's rows of the kinds asked for, in `(kind, id)` order after the
/// cursor, that match; `limit + 1` rows to learn whether another page follows.
pub(crate) async fn find(client: &mut Object, query: &FindQuery) -> StoreResult<FindPage> {
    let tx = consistent(client).await?;
    let revision = log_bounds(&tx).await?.current;
    let (sql, params) = find_statement(query);
    let stmt = tx.prepare_cached(&sql).await.map_err(store_error)?;
    let rows = tx
        .query(&stmt, &param_refs(&params))
        .await
        .map_err(store_error)?;
    let mut items = stored_rows(&rows)?;
    tx.commit().await.map_err(store_error)?;
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

/// The search as one statement. ILIKE ignores case (of every letter, where SQLite's LIKE
/// folds only ASCII); the needle's wildcards are escaped so that user input matches only as
/// itself. Labels that are not an object (a hand edit) match nothing instead of failing.
fn find_statement(query: &FindQuery) -> (String, Params) {
    let after = query.after.clone().unwrap_or(FindCursor {
        kind: String::new(),
        id: String::new(),
    });
    let mut params = Params::new();
    let org = bind(&mut params, query.org.clone());
    let kinds = bind(&mut params, query.kinds.clone());
    let after_kind = bind(&mut params, after.kind);
    let after_id = bind(&mut params, after.id);
    let pattern = bind(&mut params, like_pattern(&query.needle));
    let in_text = bind(&mut params, query.in_text);
    let limit = bind(&mut params, limit_param(query.limit.saturating_add(1)));
    let sql = format!(
        "SELECT {} FROM resources WHERE org_id = {org} AND kind = ANY({kinds}) \
         AND (kind > {after_kind} OR (kind = {after_kind} AND id > {after_id})) \
         AND (data->'metadata'->>'name' ILIKE {pattern} \
              OR slug ILIKE {pattern} \
              OR EXISTS (SELECT 1 FROM jsonb_each_text(CASE \
                           WHEN jsonb_typeof(data->'metadata'->'labels') = 'object' \
                           THEN data->'metadata'->'labels' ELSE '{{}}'::jsonb END) AS label \
                         WHERE label.key ILIKE {pattern} OR label.value ILIKE {pattern}) \
              OR ({in_text} AND data::text ILIKE {pattern})) \
         ORDER BY kind, id LIMIT {limit}",
        resource_columns!()
    );
    (sql, params)
}

/// `needle` as a LIKE pattern that matches it anywhere, its wildcards taken literally
/// (backslash is PostgreSQL's default LIKE escape).
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

/// The resources of one kind in one org, from the table the triggers keep.
async fn resource_count(client: &impl GenericClient, scope: &Scope) -> StoreResult<u64> {
    let stmt = client
        .prepare_cached("SELECT count FROM resource_counts WHERE kind = $1 AND org_id = $2")
        .await
        .map_err(store_error)?;
    let count: Option<i64> = client
        .query_opt(&stmt, &[&scope.kind, &scope.org])
        .await
        .map_err(store_error)?
        .map(|row| row.try_get(0))
        .transpose()
        .map_err(store_error)?;
    Ok(u64::try_from(count.unwrap_or(0)).unwrap_or(0))
}

/// The revision of a row, used to tell "not found" from "changed meanwhile".
pub(crate) async fn current_revision(
    client: &impl GenericClient,
    scope: &Scope,
    id: &str,
) -> StoreResult<Option<i64>> {
    let stmt = client
        .prepare_cached(
            "SELECT revision FROM resources WHERE id = $1 AND kind = $2 AND org_id = $3",
        )
        .await
        .map_err(store_error)?;
    client
        .query_opt(&stmt, &[&id, &scope.kind, &scope.org])
        .await
        .map_err(store_error)?
        .map(|row| row.try_get(0))
        .transpose()
        .map_err(store_error)
}

/// Both counters in one statement, so they are read at one instant.
/// The bytes of the whole database the store lives in (tables, indexes, TOAST), as PostgreSQL
/// counts them; any role that may connect may ask.
pub(crate) async fn database_bytes(client: &impl GenericClient) -> StoreResult<u64> {
    let row = client
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await
        .map_err(store_error)?;
    let bytes: i64 = row.try_get(0).map_err(store_error)?;
    Ok(u64::try_from(bytes).unwrap_or(0))
}

pub(crate) async fn log_bounds(client: &impl GenericClient) -> StoreResult<LogBounds> {
    let stmt = client
        .prepare_cached(
            "SELECT (SELECT value FROM store_meta WHERE key = 'compacted'), \
                    (SELECT value FROM store_meta WHERE key = 'revision')",
        )
        .await
        .map_err(store_error)?;
    let row = client.query_one(&stmt, &[]).await.map_err(store_error)?;
    let read = |i| row.try_get::<_, Option<i64>>(i).map_err(store_error);
    match (read(0)?, read(1)?) {
        (Some(compacted), Some(current)) => Ok(LogBounds { compacted, current }),
        _ => Err(StoreError::Internal(
            "store_meta lacks its 'revision' or 'compacted' row".into(),
        )),
    }
}

/// The columns of a [`Change`], in the order `change_from_row` reads them.
pub(crate) const CHANGE_COLUMNS: &str = "revision, type, kind, org_id, id, data::text, \
     (extract(epoch FROM committed_at) * 1000)::bigint, coalesce(txn, revision)";

pub(crate) fn change_from_row(row: &Row) -> StoreResult<Change> {
    let text: String = row.try_get(1).map_err(store_error)?;
    let change_type = ChangeType::parse(&text)
        .ok_or_else(|| StoreError::Internal(format!("unknown change type {text:?}")))?;
    let read = || -> Result<Change, tokio_postgres::Error> {
        Ok(Change {
            revision: row.try_get(0)?,
            change_type,
            scope: Scope {
                kind: row.try_get(2)?,
                org: row.try_get(3)?,
            },
            id: row.try_get(4)?,
            data: row.try_get(5)?,
            // The log keeps the JSON only.
            proto: None,
            committed_at_ms: row.try_get(6)?,
            txn: row.try_get(7)?,
        })
    };
    let mut change = read().map_err(store_error)?;
    change.data = compact(change.data)?;
    Ok(change)
}

/// Appends `AND column = $n` for each part of the filter that is set.
fn filter_scope(filter: &ChangeFilter, sql: &mut String, params: &mut Params) {
    sql.push_str(&format!(
        " AND org_id = {}",
        bind(params, filter.org.clone())
    ));
    if let Some(kind) = &filter.kind {
        sql.push_str(&format!(" AND kind = {}", bind(params, kind.clone())));
    }
    if let Some(id) = &filter.id {
        sql.push_str(&format!(" AND id = {}", bind(params, id.clone())));
    }
}

/// The log after `after`, filtered, in revision order.
pub(crate) async fn changes(
    client: &mut Object,
    filter: &ChangeFilter,
    after: i64,
    limit: usize,
) -> StoreResult<Vec<Change>> {
    let tx = consistent(client).await?;
    let bounds = log_bounds(&tx).await?;
    if after < bounds.compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted: bounds.compacted,
        });
    }
    let mut params = Params::new();
    let mut sql = format!(
        "SELECT {CHANGE_COLUMNS} FROM changes WHERE revision > {}",
        bind(&mut params, after)
    );
    filter_scope(filter, &mut sql, &mut params);
    sql.push_str(&format!(
        " ORDER BY revision LIMIT {}",
        bind(&mut params, limit_param(limit))
    ));
    let stmt = tx.prepare_cached(&sql).await.map_err(store_error)?;
    let rows = tx
        .query(&stmt, &param_refs(&params))
        .await
        .map_err(store_error)?;
    let changes = rows.iter().map(change_from_row).collect();
    tx.commit().await.map_err(store_error)?;
    changes
}

/// Current resources matching `filter` after `after_id`, in id order (one snapshot page).
pub(crate) async fn matching_resources(
    client: &impl GenericClient,
    filter: &ChangeFilter,
    after_id: &str,
    limit: usize,
) -> StoreResult<Vec<StoredResource>> {
    let mut params = Params::new();
    let mut sql = format!(
        "SELECT {} FROM resources WHERE id > {}",
        resource_columns!(),
        bind(&mut params, after_id.to_string())
    );
    filter_scope(filter, &mut sql, &mut params);
    sql.push_str(&format!(
        " ORDER BY id LIMIT {}",
        bind(&mut params, limit_param(limit))
    ));
    let stmt = client.prepare_cached(&sql).await.map_err(store_error)?;
    let rows = client
        .query(&stmt, &param_refs(&params))
        .await
        .map_err(store_error)?;
    stored_rows(&rows)
}

/// A resource as it was at `revision`, from the log and, when the log has nothing on it since
/// its compaction point, from the current row.
pub(crate) async fn at_revision(
    client: &mut Object,
    scope: &Scope,
    id: &str,
    revision: i64,
) -> StoreResult<AtRevision> {
    let tx = consistent(client).await?;
    let bounds = log_bounds(&tx).await?;
    if revision <= bounds.compacted || revision > bounds.current {
        return Ok(AtRevision::OutOfRange(bounds));
    }
    let entry = async |sql: &str| -> StoreResult<Option<(i64, String, String)>> {
        let stmt = tx.prepare_cached(sql).await.map_err(store_error)?;
        let row = tx
            .query_opt(&stmt, &[&id, &scope.kind, &scope.org, &revision])
            .await
            .map_err(store_error)?;
        row.map(|row| -> StoreResult<(i64, String, String)> {
            let read = || -> Result<(i64, String, String), tokio_postgres::Error> {
                Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
            };
            let (revision, change_type, data) = read().map_err(store_error)?;
            Ok((revision, change_type, compact(data)?))
        })
        .transpose()
    };
    let at_or_before = entry(
        "SELECT revision, type, data::text FROM changes \
         WHERE id = $1 AND kind = $2 AND org_id = $3 AND revision <= $4 \
         ORDER BY revision DESC LIMIT 1",
    )
    .await?;
    if let Some((changed_at, change_type, data)) = at_or_before {
        return Ok(AtRevision::from_last_change(changed_at, &change_type, data));
    }
    // No change between the compaction point and `revision`: the next change (if any) says
    // whether it existed then; without one, the current row is still that version.
    let next = entry(
        "SELECT revision, type, data::text FROM changes \
         WHERE id = $1 AND kind = $2 AND org_id = $3 AND revision > $4 \
         ORDER BY revision LIMIT 1",
    )
    .await?;
    let next_type = next.map(|(_, change_type, _)| change_type);
    if let Some(answer) = AtRevision::from_next_change(next_type.as_deref(), bounds) {
        return Ok(answer);
    }
    Ok(match get_by_id(&tx, scope, id).await? {
        Some(row) => AtRevision::Existed {
            revision: row.revision,
            data: row.data,
        },
        None => AtRevision::Absent,
    })
}

/// Resource counts per kind in one org.
pub(crate) async fn counts(
    client: &impl GenericClient,
    org: &str,
) -> StoreResult<Vec<(String, i64)>> {
    let stmt = client
        .prepare_cached(
            "SELECT kind, count FROM resource_counts WHERE org_id = $1 AND count > 0 ORDER BY kind",
        )
        .await
        .map_err(store_error)?;
    client
        .query(&stmt, &[&org])
        .await
        .map_err(store_error)?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()
        .map_err(store_error)
}

/// Resources per kind in every org (identity resources included), in kind order.
pub(crate) async fn counts_in_every_org(
    client: &impl GenericClient,
) -> StoreResult<Vec<(String, i64)>> {
    let stmt = client
        .prepare_cached(
            "SELECT kind, sum(count)::bigint FROM resource_counts GROUP BY kind \
             HAVING sum(count) > 0 ORDER BY kind",
        )
        .await
        .map_err(store_error)?;
    client
        .query(&stmt, &[])
        .await
        .map_err(store_error)?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(store_error)
}

pub(crate) async fn setting(client: &impl GenericClient, key: &str) -> StoreResult<Option<String>> {
    let stmt = client
        .prepare_cached("SELECT value FROM settings WHERE key = $1")
        .await
        .map_err(store_error)?;
    client
        .query_opt(&stmt, &[&key])
        .await
        .map_err(store_error)?
        .map(|row| row.try_get(0))
        .transpose()
        .map_err(store_error)
}

pub(crate) async fn artifact(
    client: &impl GenericClient,
    hash: &str,
) -> StoreResult<Option<Vec<u8>>> {
    let stmt = client
        .prepare_cached("SELECT data FROM artifacts WHERE hash = $1")
        .await
        .map_err(store_error)?;
    client
        .query_opt(&stmt, &[&hash])
        .await
        .map_err(store_error)?
        .map(|row| row.try_get(0))
        .transpose()
        .map_err(store_error)
}

/// A version row as a stored resource (scope and slug from the current row).
pub(crate) async fn version(
    client: &impl GenericClient,
    resource_id: &str,
    selector: &VersionSelector,
) -> StoreResult<Option<StoredResource>> {
    let (sql, key) = match selector {
        VersionSelector::Hash(hash) => (
            "SELECT v.revision, v.data::text, r.kind, r.org_id, r.slug FROM resource_versions v \
             JOIN resources r ON r.id = v.resource_id \
             WHERE v.resource_id = $1 AND v.version_hash = $2",
            hash,
        ),
        VersionSelector::Tag(tag) => (
            "SELECT v.revision, v.data::text, r.kind, r.org_id, r.slug FROM resource_versions v \
             JOIN resources r ON r.id = v.resource_id \
             WHERE v.resource_id = $1 AND v.tag = $2 ORDER BY v.revision DESC LIMIT 1",
            tag,
        ),
    };
    let stmt = client.prepare_cached(sql).await.map_err(store_error)?;
    let Some(row) = client
        .query_opt(&stmt, &[&resource_id, key])
        .await
        .map_err(store_error)?
    else {
        return Ok(None);
    };
    let read = || -> Result<StoredResource, tokio_postgres::Error> {
        Ok(StoredResource {
            id: resource_id.to_string(),
            revision: row.try_get(0)?,
            data: row.try_get(1)?,
            scope: Scope {
                kind: row.try_get(2)?,
                org: row.try_get(3)?,
            },
            slug: row.try_get(4)?,
            proto: None,
        })
    };
    let mut stored = read().map_err(store_error)?;
    stored.data = compact(stored.data)?;
    Ok(Some(stored))
}

pub(crate) async fn versions(
    client: &impl GenericClient,
    resource_id: &str,
) -> StoreResult<Vec<ResourceVersion>> {
    let stmt = client
        .prepare_cached(
            "SELECT version_hash, tag, revision, data::text FROM resource_versions \
             WHERE resource_id = $1 ORDER BY revision, version_hash",
        )
        .await
        .map_err(store_error)?;
    let rows = client
        .query(&stmt, &[&resource_id])
        .await
        .map_err(store_error)?;
    rows.iter()
        .map(|row| {
            let read = || -> Result<ResourceVersion, tokio_postgres::Error> {
                Ok(ResourceVersion {
                    version_hash: row.try_get(0)?,
                    tag: row.try_get(1)?,
                    revision: row.try_get(2)?,
                    data: row.try_get(3)?,
                })
            };
            let mut version = read().map_err(store_error)?;
            version.data = compact(version.data)?;
            Ok(version)
        })
        .collect()
}
