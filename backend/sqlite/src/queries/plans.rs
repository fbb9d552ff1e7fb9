//! The query plans of the statements the store runs, built by the same functions `list`,
//! `changes` and the watch snapshots call, with the values they bind: SQL written here would
//! prove nothing about the store's own.
//!
//! Fails when a list pages by OFFSET (`LIMIT -1 OFFSET 0` appended in `list_statement`):
//! "plain: a keyset page has no OFFSET: SELECT id, kind, ... ORDER BY id LIMIT -1 OFFSET 0";
//! when its order leaves the index (`ORDER BY revision`): "plain: no sort step: SEARCH
//! resources USING INDEX resources_kind_org_id (kind=? AND org_id=? AND id>?)\nUSE TEMP B-TREE
//! FOR ORDER BY"; and when the replay's does (`ORDER BY kind` in `changes_statement`): "replay
//! of ChangeFilter { .. }: no sort step: ... USE TEMP B-TREE FOR ORDER BY".

use rusqlite::types::Value;
use rusqlite::{Connection, params_from_iter};
use stigmer_store::{ChangeFilter, JsonFilter, JsonPath, ListQuery, Scope};

use super::{
    CHANGE_AFTER, CHANGE_AT_OR_BEFORE, GET_BY_ID, GET_BY_SLUG, Statement, changes_statement,
    list_statement, matching_statement,
};
use crate::config::SqliteConfig;
use crate::schema;
use crate::writer::{APPEND_CHANGE, DELETE_RESOURCE, INSERT_RESOURCE, REPLACE_RESOURCE};

/// A migrated database, as the store opens it.
fn database(dir: &tempfile::TempDir) -> Connection {
    let config = SqliteConfig::new(dir.path().join("plans.db"));
    schema::prepare_path(&config.path).expect("prepare");
    let mut conn = schema::open_writer_connection(&config).expect("open");
    schema::migrate(&mut conn, &config.path).expect("migrate");
    conn
}

/// `EXPLAIN QUERY PLAN` of the statement, with its own bound values, one detail per line.
fn plan(conn: &Connection, statement: &Statement) -> String {
    let sql = format!("EXPLAIN QUERY PLAN {}", statement.sql);
    let mut stmt = conn.prepare(&sql).expect("explain");
    let details: Vec<String> = stmt
        .query_map(params_from_iter(statement.values.iter()), |row| row.get(3))
        .expect("plan")
        .collect::<Result<_, _>>()
        .expect("plan rows");
    details.join("\n")
}

fn equals(path: JsonPath, value: &str) -> JsonFilter {
    JsonFilter::Equals {
        path,
        value: value.into(),
    }
}

fn label(key: &str) -> JsonPath {
    JsonPath::new(["metadata", "labels", key])
}

/// The filters the API builds (`listing.rs`, `selector.rs`, `kinds.rs`), one case for each
/// way a list request can ask, and one with them all.
fn list_cases() -> Vec<(&'static str, Vec<JsonFilter>)> {
    let selector = vec![
        equals(label("team"), "core"),
        JsonFilter::NotEquals {
            path: label("tier"),
            value: "gold".into(),
        },
        JsonFilter::In {
            path: label("env"),
            values: vec!["dev".into(), "prod".into()],
        },
        JsonFilter::NotIn {
            path: label("zone"),
            values: vec!["a".into(), "b".into()],
        },
        JsonFilter::Exists {
            path: label("owner"),
        },
        JsonFilter::Missing {
            path: label("legacy"),
        },
    ];
    let prefix = vec![JsonFilter::Prefix {
        path: JsonPath::fields("metadata.name"),
        prefix: "deploy".into(),
    }];
    let tags = vec![JsonFilter::Contains {
        path: JsonPath::fields("metadata.tags"),
        value: "nightly".into(),
    }];
    let by_session = vec![equals(
        JsonPath::fields("spec.sessionId"),
        "ses-01jz0000000000000000000000",
    )];
    let by_agent = vec![equals(
        label("stigmer.ai/agent-id"),
        "agt-01jz0000000000000000",
    )];
    let phase = vec![equals(
        JsonPath::fields("status.phase"),
        "EXECUTION_PENDING",
    )];
    let all: Vec<JsonFilter> = [&selector, &prefix, &tags, &by_session, &phase]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    vec![
        ("plain", Vec::new()),
        ("label selector", selector),
        ("name prefix", prefix),
        ("tags", tags),
        ("listBySession", by_session),
        ("listByAgent", by_agent),
        ("phase", phase),
        ("every filter at once", all),
    ]
}

#[test]
fn every_list_page_is_a_keyset_range_of_the_kind_org_id_index() {
    let dir = tempfile::tempdir().expect("dir");
    let conn = database(&dir);
    for (case, filters) in list_cases() {
        for after_id in [None, Some("agt-01jz0000000000000000000000".to_string())] {
            for proto_only in [false, true] {
                let statement = list_statement(&ListQuery {
                    scope: Scope::new("AgentExecution", "local"),
                    after_id: after_id.clone(),
                    limit: 100,
                    filters: filters.clone(),
                    proto_only,
                })
                .expect("statement");
                let sql = statement.sql.to_uppercase();
                assert!(
                    !sql.contains("OFFSET"),
                    "{case}: a keyset page has no OFFSET: {}",
                    statement.sql
                );
                let plan = plan(&conn, &statement);
                assert!(
                    plan.contains(
                        "SEARCH resources USING INDEX resources_kind_org_id \
                         (kind=? AND org_id=? AND id>?)"
                    ),
                    "{case}: a range of the (kind, org_id, id) index: {plan}"
                );
                assert!(!plan.contains("SCAN resources"), "{case}: no scan: {plan}");
                assert!(
                    !plan.contains("TEMP B-TREE"),
                    "{case}: no sort step: {plan}"
                );
            }
        }
    }
}

/// The watch's replay (`changes`) and snapshot pages are keyset ranges too: of the log's
/// revisions, and of ids.
#[test]
fn watch_replay_and_snapshot_pages_are_keyset_ranges() {
    let dir = tempfile::tempdir().expect("dir");
    let conn = database(&dir);
    let filters = [
        (None, None),
        (Some("Agent"), None),
        (Some("Agent"), Some("agt-01jz0000000000000000000000")),
    ];
    for (kind, id) in filters {
        let filter = ChangeFilter {
            org: "local".into(),
            kind: kind.map(Into::into),
            id: id.map(Into::into),
        };
        // The keyset column's range as the plan names it: a log revision is the rowid.
        for (what, statement, table, ranges) in [
            (
                "replay",
                changes_statement(&filter, 41),
                "changes",
                &["rowid>?", "revision>?"][..],
            ),
            (
                "snapshot",
                matching_statement(&filter, "agt-0"),
                "resources",
                &["id>?", "id=?"][..],
            ),
        ] {
            let case = format!("{what} of {filter:?}");
            assert!(
                !statement.sql.to_uppercase().contains("OFFSET"),
                "{case}: {}",
                statement.sql
            );
            let plan = plan(&conn, &statement);
            assert!(
                plan.starts_with(&format!("SEARCH {table} USING "))
                    && ranges.iter().any(|range| plan.contains(range)),
                "{case}: a range of {ranges:?}, not a scan: {plan}"
            );
            assert!(!plan.contains("SCAN "), "{case}: no scan: {plan}");
            assert!(
                !plan.contains("TEMP B-TREE"),
                "{case}: no sort step: {plan}"
            );
        }
    }
}

#[test]
fn json_paths_quote_every_key_and_refuse_what_sqlite_cannot_quote() {
    let path = super::sqlite_path(&label("app.kubernetes.io/name")).expect("path");
    assert_eq!(path, r#"$."metadata"."labels"."app.kubernetes.io/name""#);
    let conn = Connection::open_in_memory().expect("memory");
    let found: String = conn
        .query_row(
            "SELECT json_extract(?1, ?2)",
            [
                r#"{"metadata":{"labels":{"app.kubernetes.io/name":"web"}}}"#,
                path.as_str(),
            ],
            |row| row.get(0),
        )
        .expect("extract");
    assert_eq!(found, "web");
    assert!(super::sqlite_path(&JsonPath::new(["a\"b"])).is_err());
}

fn statement(sql: &str, values: &[&str]) -> Statement {
    Statement {
        sql: sql.to_string(),
        values: values.iter().map(|v| Value::Text(v.to_string())).collect(),
    }
}

fn page(filters: Vec<JsonFilter>) -> Statement {
    list_statement(&ListQuery {
        scope: Scope::new("Environment", "local"),
        after_id: Some("env-01jz0000000000000000000000".into()),
        limit: 100,
        filters,
        proto_only: true,
    })
    .expect("statement")
}

/// The statements every call runs, with the plan each must have: a search of the index that
/// docs/indexes.md names for it, never a scan of the table, never a sort. A migration that
/// drops (or a change that stops using) an index one of them needs fails here. The plans of
/// a write (`INSERT ... VALUES`) are empty: nothing to search; its cost is the indexes it
/// maintains, which `every_index_is_documented_with_its_statements` keeps in view.
fn hot_statements() -> Vec<(&'static str, Statement, &'static str)> {
    let id = "env-01jz0000000000000000000000";
    let one_org = ChangeFilter {
        org: "local".into(),
        kind: None,
        id: None,
    };
    let one_resource = ChangeFilter {
        org: "local".into(),
        kind: Some("Environment".into()),
        id: Some(id.into()),
    };
    let by_label = vec![equals(label("team"), "core")];
    vec![
        (
            "get by id",
            statement(GET_BY_ID, &[id, "Environment", "local"]),
            "SEARCH resources USING INDEX sqlite_autoindex_resources_1 (id=?)",
        ),
        (
            "get by slug",
            statement(GET_BY_SLUG, &["Environment", "local", "prod"]),
            "SEARCH resources USING INDEX resources_kind_org_slug (kind=? AND org_id=? AND slug=?)",
        ),
        (
            "list page",
            page(Vec::new()),
            "SEARCH resources USING INDEX resources_kind_org_id (kind=? AND org_id=? AND id>?)",
        ),
        (
            "list page with a JSON filter",
            page(by_label),
            "SEARCH resources USING INDEX resources_kind_org_id (kind=? AND org_id=? AND id>?)",
        ),
        (
            "change-log replay",
            changes_statement(&one_org, 41),
            "SEARCH changes USING INTEGER PRIMARY KEY (rowid>?)",
        ),
        (
            "change-log replay of one resource",
            changes_statement(&one_resource, 41),
            "SEARCH changes USING INDEX changes_id_revision (id=? AND revision>?)",
        ),
        (
            "getAtRevision, at or before",
            statement(CHANGE_AT_OR_BEFORE, &[id, "Environment", "local", "41"]),
            "SEARCH changes USING INDEX changes_id_revision (id=? AND revision<?)",
        ),
        (
            "getAtRevision, after",
            statement(CHANGE_AFTER, &[id, "Environment", "local", "41"]),
            "SEARCH changes USING INDEX changes_id_revision (id=? AND revision>?)",
        ),
        (
            "insert",
            statement(
                INSERT_RESOURCE,
                &[id, "Environment", "local", "prod", "1", "{}", ""],
            ),
            "",
        ),
        (
            "change-log append",
            statement(
                APPEND_CHANGE,
                &["1", "created", "Environment", "local", id, "0", "{}", "1"],
            ),
            "",
        ),
        (
            "replace",
            statement(
                REPLACE_RESOURCE,
                &[id, "Environment", "local", "prod", "2", "{}", "", "1"],
            ),
            "SEARCH resources USING INDEX sqlite_autoindex_resources_1 (id=?)",
        ),
        (
            "delete",
            statement(DELETE_RESOURCE, &[id, "Environment", "local", "1"]),
            "SEARCH resources USING INDEX sqlite_autoindex_resources_1 (id=?)",
        ),
    ]
}

#[test]
fn hot_statements_search_the_index_they_need() {
    let dir = tempfile::tempdir().expect("dir");
    let conn = database(&dir);
    let mut wrong = Vec::new();
    for (what, statement, expected) in hot_statements() {
        let plan = plan(&conn, &statement);
        if plan != expected {
            wrong.push(format!("{what}: expected {expected:?}, got {plan:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// docs/indexes.md shows every index with the statements that use it: an index added or
/// dropped by a migration without a word there fails here, as does a hot statement's plan
/// that the document no longer shows.
#[test]
fn every_index_is_documented_with_its_statements() {
    let doc = include_str!("../../../../docs/indexes.md");
    let dir = tempfile::tempdir().expect("dir");
    let conn = database(&dir);
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name")
        .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
        .expect("indexes");
    for index in &indexes {
        assert!(
            doc.contains(&format!("`{index}`")),
            "docs/indexes.md says nothing of {index}"
        );
    }
    for (what, _, expected) in hot_statements() {
        assert!(
            doc.contains(expected),
            "docs/indexes.md does not show the plan of {what}: {expected}"
        );
    }
}
