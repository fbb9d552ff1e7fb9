//! One kind's RPCs as proto3 JSON calls, and the rows they leave in the database.

use serde_json::{Value, json};
use stigmer_grpc::LOCAL;
use tonic::Status;

use crate::common::{self, TestServer};
use crate::fixture::Fixture;
use crate::json::{id_of, items_of};
use crate::kind_case::KindCase;

/// One kind's RPCs on one server, as the caller in `org`, with the parents of `fixture`.
pub struct Api<'a> {
    pub server: &'a TestServer,
    pub case: &'a KindCase,
    pub org: &'static str,
    pub fixture: &'a Fixture,
}

impl<'a> Api<'a> {
    pub fn new(server: &'a TestServer, case: &'a KindCase, fixture: &'a Fixture) -> Self {
        Self {
            server,
            case,
            org: LOCAL,
            fixture,
        }
    }

    pub fn as_org(&self, org: &'static str) -> Api<'a> {
        Api {
            server: self.server,
            case: self.case,
            org,
            fixture: self.fixture,
        }
    }

    /// Another kind's RPCs, as the same caller.
    pub fn of<'b>(&self, case: &'b KindCase) -> Api<'b>
    where
        'a: 'b,
    {
        Api {
            server: self.server,
            case,
            org: self.org,
            fixture: self.fixture,
        }
    }

    /// A value of the table with this org's parents substituted.
    pub fn resolve(&self, value: &Value) -> Value {
        self.fixture.resolve(value, self.org)
    }

    pub fn spec(&self) -> Value {
        self.resolve(&self.case.spec)
    }

    pub fn changed_spec(&self) -> Value {
        self.resolve(&self.case.changed_spec)
    }

    /// `case.request` with this org's parents substituted in `spec`.
    pub fn request(&self, name: Option<&str>, spec: &Value) -> Value {
        self.case.request(name, &self.resolve(spec))
    }

    /// Resources of this kind the fixture wrote in this org (they come first in a listing).
    pub fn preexisting(&self) -> Vec<String> {
        self.fixture.ids_of(self.case.name, self.org)
    }

    async fn call(&self, path: &str, body: &Value) -> Result<Value, Status> {
        call(self.server, self.org, path, body).await
    }

    pub async fn create(&self, request: &Value) -> Result<Value, Status> {
        self.call(&self.case.command("create"), request).await
    }

    pub async fn update(&self, request: &Value) -> Result<Value, Status> {
        self.call(&self.case.command("update"), request).await
    }

    pub async fn apply(&self, request: &Value) -> Result<Value, Status> {
        self.call(&self.case.command("apply"), request).await
    }

    pub async fn get(&self, id: &str) -> Result<Value, Status> {
        self.call(&self.case.query("get"), &json!({ "value": id }))
            .await
    }

    pub async fn get_by_reference(&self, reference: &Value) -> Result<Value, Status> {
        self.call(&self.case.query("getByReference"), reference)
            .await
    }

    pub async fn delete(&self, id: &str, expected_revision: i64) -> Result<Value, Status> {
        let path = self.case.command("delete");
        let (input, _) = common::method_types(&path);
        let id_field = if input.get_field_by_name("resource_id").is_some() {
            "resourceId"
        } else {
            "value"
        };
        let mut body = json!({ id_field: id });
        if expected_revision != 0 {
            body["expectedRevision"] = json!(expected_revision.to_string());
        }
        self.call(&path, &body).await
    }

    pub async fn list(&self, page_size: i32, page_token: &str) -> Result<Value, Status> {
        self.call(
            &self.case.query("list"),
            &json!({ "pageSize": page_size, "pageToken": page_token }),
        )
        .await
    }

    /// Every page of a listing: the ids in order and the size of each page.
    pub async fn list_all(&self, page_size: i32) -> (Vec<String>, Vec<usize>) {
        let k = self.case.name;
        let mut ids = Vec::new();
        let mut pages = Vec::new();
        let mut token = String::new();
        for _ in 0..100 {
            let page = self
                .list(page_size, &token)
                .await
                .unwrap_or_else(|s| panic!("{k}: list(page_size {page_size}) failed: {s:?}"));
            let items = items_of(self.case, &page);
            pages.push(items.len());
            ids.extend(items.iter().map(id_of));
            token = page["nextPageToken"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if token.is_empty() {
                return (ids, pages);
            }
            assert_eq!(
                items.len(),
                usize::try_from(page_size).expect("positive page size"),
                "{k}: a page followed by another must be full; pages so far {pages:?}"
            );
        }
        panic!("{k}: listing never ended (100 pages of size {page_size})");
    }

    /// Rows of this kind (in any org) besides the fixture's.
    pub fn rows(&self) -> i64 {
        self.ids_where("kind = ?1", &[self.case.name])
    }

    /// Rows of this kind in `org` besides the fixture's.
    pub fn rows_in(&self, org: &str) -> i64 {
        self.ids_where("kind = ?1 AND org_id = ?2", &[self.case.name, org])
    }

    /// Rows of every kind (in any org) besides the fixture's.
    pub fn all_rows(&self) -> i64 {
        self.ids_where("1 = 1", &[])
    }

    fn ids_where(&self, condition: &str, parameters: &[&str]) -> i64 {
        let db = self.server.sqlite();
        let mut query = db
            .prepare(&format!("SELECT id FROM resources WHERE {condition}"))
            .expect("prepare");
        let ids = query
            .query_map(rusqlite::params_from_iter(parameters), |row| {
                row.get::<_, String>(0)
            })
            .expect("query ids")
            .collect::<Result<Vec<_>, _>>()
            .expect("read ids");
        let count = ids.iter().filter(|id| !self.fixture.contains(id)).count();
        i64::try_from(count).expect("row count")
    }

    pub fn row_exists(&self, id: &str) -> bool {
        let count: i64 = self
            .server
            .sqlite()
            .query_row(
                "SELECT COUNT(*) FROM resources WHERE id = ?1",
                [id],
                |row| row.get(0),
            )
            .expect("count rows");
        count == 1
    }
}

/// A call as the caller in `org`, with a request and a response in proto3 JSON.
pub async fn call(
    server: &TestServer,
    org: &str,
    path: &str,
    body: &Value,
) -> Result<Value, Status> {
    server
        .call_json_as(org, path, &body.to_string())
        .await
        .map(|message| common::to_json(&message))
}
