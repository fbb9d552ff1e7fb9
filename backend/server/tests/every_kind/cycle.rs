//! The full cycle of one kind: create → get → getByReference → update → apply → list →
//! delete, one function per phase, each named for what it checks. The phases run in order on
//! one server and build on each other's resources (a `Cycle`).

mod update;

use serde_json::{Value, json};
use stigmer_grpc::{API_VERSION, LOCAL};

use crate::OTHER_ORG;
use crate::api::Api;
use crate::checks::{assert_aborted, assert_not_found, assert_spec, check_created};
use crate::common::TestServer;
use crate::fixture::Fixture;
use crate::json::{id_of, items_of, merge, revision_of, slug_of};
use crate::kind_case::{KindCase, Rpc};
use crate::lifecycle::{
    a_parent_in_use_is_not_deleted, cascade_of, check_cascade, check_lifecycle_created,
    what_the_kind_does_beyond_the_cycle,
};

pub async fn full_cycle(case: &KindCase) {
    let server = TestServer::start().await;
    let fixture = Fixture::build(&server, case.parents).await;
    let mut cycle = Cycle::create_fills_in_what_the_server_owns(&server, case, &fixture).await;
    cycle.get_returns_what_create_stored().await;
    if case.has(Rpc::GetByReference) {
        cycle.get_by_reference_finds_the_slug().await;
    }
    if case.has(Rpc::Update) {
        cycle.update_replaces_the_spec_and_keeps_the_status().await;
        cycle.a_stale_update_is_aborted().await;
        cycle.an_update_that_changes_nothing_stores_nothing().await;
        cycle.an_update_without_a_revision_goes_through().await;
        cycle.an_update_needs_an_existing_id().await;
    }
    if case.has(Rpc::Apply) {
        let first = cycle.apply_creates_by_the_slug_of_the_name().await;
        let second = cycle.apply_again_updates_the_same_resource(&first).await;
        cycle.a_stale_apply_is_aborted(&first, &second).await;
    }
    cycle.ids_ascend_in_creation_order().await;
    let foreign_id = cycle.another_orgs_resource_is_out_of_sight().await;
    if case.has(Rpc::List) {
        cycle.list_pages_over_this_orgs_ids(&foreign_id).await;
    }
    cycle.a_stale_delete_is_aborted().await;
    a_parent_in_use_is_not_deleted(&cycle.api, &cycle.current).await;
    cycle.delete_removes_the_resource_and_its_dependents().await;
    cycle
        .another_orgs_resource_cannot_be_deleted(&foreign_id)
        .await;
    cycle.the_slug_is_free_again_after_delete().await;
    what_the_kind_does_beyond_the_cycle(&cycle.api).await;
}

/// What the phases share.
struct Cycle<'a> {
    api: Api<'a>,
    spec: Value,
    changed_spec: Value,
    /// The revision of the last write: every write must go past it.
    last_revision: i64,
    /// The first resource's name and the slug derived from it.
    name: String,
    slug: String,
    /// The first resource as last written.
    current: Value,
    /// Its revision on create, stale once it is updated.
    created_revision: i64,
    /// Ids of this org's resources the cycle made, in creation order.
    alive: Vec<String>,
}

impl<'a> Cycle<'a> {
    fn k(&self) -> &'static str {
        self.api.case.name
    }

    fn id(&self) -> String {
        id_of(&self.current)
    }

    /// Checks a write's revision against the last one seen on this server, and remembers it.
    fn grows(&mut self, resource: &Value, what: &str) {
        let revision = revision_of(resource);
        assert!(
            revision > self.last_revision,
            "{}: {what}: revision {revision} does not grow past {}",
            self.k(),
            self.last_revision
        );
        self.last_revision = revision;
    }

    /// Get and the data column both hold `expected`, the result of `what`.
    async fn reads_back(&self, expected: &Value, what: &str) {
        let (k, id) = (self.k(), id_of(expected));
        let got = self
            .api
            .get(&id)
            .await
            .unwrap_or_else(|s| panic!("{k}: get after {what} failed: {s:?}"));
        assert_eq!(&got, expected, "{k}: get after {what} returns its result");
        assert_eq!(
            &self.api.server.stored_json(&id),
            expected,
            "{k}: data column after {what}"
        );
    }

    /// The ids a listing of this org shows: the fixture's resources of this kind (an Agent's
    /// default instance) were made first.
    fn listed(&self, alive: &[String]) -> Vec<String> {
        [self.api.preexisting(), alive.to_vec()].concat()
    }

    /// Create fills in the server-owned fields and ignores the client-sent ones (id, audit,
    /// status).
    async fn create_fills_in_what_the_server_owns(
        server: &'a TestServer,
        case: &'a KindCase,
        fixture: &'a Fixture,
    ) -> Self {
        let k = case.name;
        let api = Api::new(server, case, fixture);
        let spec = api.spec();
        let name = format!(" My  First {k}_v2! ");
        let slug = format!("my-first-{}v2", k.to_lowercase());
        let mut forged_status = json!({
            "audit": {
                "specAudit": {
                    "createdBy": { "id": "mallory" },
                    "createdAt": "2000-01-01T00:00:00Z",
                    "event": "forged"
                },
                "statusAudit": { "createdBy": { "id": "mallory" }, "event": "forged" }
            }
        });
        merge(&mut forged_status, &case.forged_status);
        let forged_id = format!("{}-01aaaaaaaaaaaaaaaaaaaaaaaa", case.prefix);
        let request = json!({
            "apiVersion": API_VERSION,
            "kind": k,
            "metadata": { "name": name, "id": forged_id },
            "spec": spec,
            "status": forged_status,
        });
        let created = api
            .create(&request)
            .await
            .unwrap_or_else(|s| panic!("{k}: create failed: {s:?}"));
        check_created(case, &created, Some(&name), Some(&slug));
        let id = id_of(&created);
        assert_ne!(
            id, forged_id,
            "{k}: a client-sent id must be ignored on create"
        );
        // Stored as sent, except the parent fields the server derives (case.derived).
        assert_spec(case, &created, &spec, "create");
        if let Some(fields) = case.forged_status.as_object() {
            for (field, forged) in fields {
                assert_ne!(
                    &created["status"][field], forged,
                    "{k}: status.{field} sent on create must be discarded"
                );
            }
        }
        check_lifecycle_created(&api, &created).await;
        Self {
            changed_spec: api.changed_spec(),
            api,
            spec,
            last_revision: revision_of(&created),
            name,
            slug,
            created_revision: revision_of(&created),
            alive: vec![id],
            current: created,
        }
    }

    /// Get returns exactly what create returned, from the cached encoding and without it; the
    /// data column is the same JSON.
    async fn get_returns_what_create_stored(&self) {
        let k = self.k();
        let id = self.id();
        self.reads_back(&self.current, "create").await;
        // Without its cached encoding a get decodes `data`, and the lists below mix both
        // kinds of rows.
        assert!(
            self.api.server.drop_cached_encoding(&id),
            "{k}: create must store the encoding reads serve"
        );
        let decoded = self
            .api
            .get(&id)
            .await
            .unwrap_or_else(|s| panic!("{k}: get without the cached encoding failed: {s:?}"));
        assert_eq!(
            decoded, self.current,
            "{k}: a get decoded from data must equal the cached one"
        );
    }

    async fn get_by_reference_finds_the_slug(&self) {
        let (k, case, slug) = (self.k(), self.api.case, &self.slug);
        for reference in [
            json!({ "slug": slug }),
            json!({ "slug": slug, "org": LOCAL, "kind": case.kind_enum }),
        ] {
            let found = self
                .api
                .get_by_reference(&reference)
                .await
                .unwrap_or_else(|s| panic!("{k}: getByReference {reference} failed: {s:?}"));
            assert_eq!(found, self.current, "{k}: getByReference {reference}");
        }
        let missing = self
            .api
            .get_by_reference(&json!({ "slug": "no-such-slug" }))
            .await;
        assert_not_found(
            case,
            missing,
            "no-such-slug",
            "getByReference of a missing slug",
        );
    }

    /// Five more creates, for the listing: ids ascend in creation order.
    async fn ids_ascend_in_creation_order(&mut self) {
        let (k, case) = (self.k(), self.api.case);
        for i in 0..5 {
            // Unnamed kinds get slug = id; named kinds need a name.
            let name = case.named().then(|| format!("List {k} {i}"));
            let made = self
                .api
                .create(&self.api.request(name.as_deref(), &self.spec))
                .await
                .unwrap_or_else(|s| panic!("{k}: create #{i} for list failed: {s:?}"));
            let slug = name
                .as_ref()
                .map(|_| format!("list-{}-{i}", k.to_lowercase()));
            check_created(case, &made, name.as_deref(), slug.as_deref());
            self.grows(&made, "create for list");
            check_lifecycle_created(&self.api, &made).await;
            self.alive.push(id_of(&made));
        }
        let mut sorted = self.alive.clone();
        sorted.sort();
        assert_eq!(sorted, self.alive, "{k}: ids must ascend in creation order");
    }

    /// A resource created in another org takes its org from the caller, and only that org
    /// sees it. Returns its id.
    async fn another_orgs_resource_is_out_of_sight(&self) -> String {
        let (k, case, api) = (self.k(), self.api.case, &self.api);
        let other = api.as_org(OTHER_ORG);
        let foreign = other
            .create(&other.request(Some(&format!("Foreign {k}")), &case.spec))
            .await
            .unwrap_or_else(|s| panic!("{k}: create in {OTHER_ORG} failed: {s:?}"));
        let foreign_id = id_of(&foreign);
        assert_eq!(
            foreign["metadata"]["org"], OTHER_ORG,
            "{k}: org from the caller"
        );
        check_lifecycle_created(&other, &foreign).await;
        assert_not_found(
            case,
            api.get(&foreign_id).await,
            &foreign_id,
            "get of another org's id",
        );
        assert_eq!(
            other.get(&foreign_id).await.expect("get in its own org"),
            foreign,
            "{k}: the other org sees its own resource"
        );
        foreign_id
    }

    /// List pages over this org's ids ascending (full pages but the last; page_size 0 = one
    /// page), each item as get returns it; the other org lists only its own.
    async fn list_pages_over_this_orgs_ids(&self, foreign_id: &str) {
        let (k, case, api) = (self.k(), self.api.case, &self.api);
        let (ids, pages) = api.list_all(2).await;
        assert_eq!(
            ids,
            self.listed(&self.alive),
            "{k}: list (page_size 2) = this org's ids ascending"
        );
        let n = ids.len();
        assert_eq!(
            pages.len(),
            n.div_ceil(2),
            "{k}: pages of 2 over {n}: {pages:?}"
        );
        let (ids, pages) = api.list_all(0).await;
        assert_eq!(
            ids,
            self.listed(&self.alive),
            "{k}: page_size 0 lists everything (default 100)"
        );
        assert_eq!(pages, vec![n], "{k}: page_size 0 → one page");
        let other = api.as_org(OTHER_ORG);
        let (ids, _) = other.list_all(2).await;
        assert_eq!(
            ids,
            [other.preexisting(), vec![foreign_id.to_string()]].concat(),
            "{k}: the other org lists only its own"
        );
        let page = api.list(0, "").await.expect("list");
        for item in items_of(case, &page) {
            let got = api.get(&id_of(&item)).await.expect("get listed");
            assert_eq!(item, got, "{k}: a listed item equals get");
        }
    }

    /// A delete whose expected revision is not current is ABORTED and keeps the row.
    async fn a_stale_delete_is_aborted(&self) {
        let (k, case, api) = (self.k(), self.api.case, &self.api);
        let id = self.id();
        let current_revision = revision_of(&self.current);
        // A kind without update keeps its create revision; any other one is a mismatch.
        let stale = if case.has(Rpc::Update) {
            self.created_revision
        } else {
            current_revision + 1000
        };
        let result = api.delete(&id, stale).await;
        assert_aborted(
            case,
            result,
            current_revision,
            "delete with a stale expected revision",
        );
        assert!(api.row_exists(&id), "{k}: ABORTED delete removed the row");
    }

    /// Delete at the current revision returns the resource, removes its row and its
    /// dependents (not a sibling's), and every read after it is NOT_FOUND.
    async fn delete_removes_the_resource_and_its_dependents(&self) {
        let (k, case, api) = (self.k(), self.api.case, &self.api);
        let (id, slug) = (self.id(), &self.slug);
        let sibling = self.alive.get(1).map(String::as_str);
        let cascade = cascade_of(api, &self.current, sibling).await;
        let deleted = api
            .delete(&id, revision_of(&self.current))
            .await
            .unwrap_or_else(|s| panic!("{k}: delete failed: {s:?}"));
        assert_eq!(
            deleted, self.current,
            "{k}: delete returns the deleted resource"
        );
        assert!(!api.row_exists(&id), "{k}: the row is gone after delete");
        check_cascade(api, &cascade, "delete").await;
        assert_not_found(case, api.get(&id).await, &id, "get after delete");
        assert_not_found(case, api.delete(&id, 0).await, &id, "delete after delete");
        if case.has(Rpc::GetByReference) {
            let result = api.get_by_reference(&json!({ "slug": slug })).await;
            assert_not_found(case, result, slug, "getByReference after delete");
        }
        if case.has(Rpc::List) {
            let (ids, _) = api.list_all(2).await;
            assert_eq!(
                ids,
                self.listed(&self.alive[1..]),
                "{k}: the deleted resource left the list"
            );
        }
    }

    async fn another_orgs_resource_cannot_be_deleted(&self, foreign_id: &str) {
        let (k, api) = (self.k(), &self.api);
        let theirs = api.delete(foreign_id, 0).await;
        assert_not_found(api.case, theirs, foreign_id, "delete of another org's id");
        assert!(
            api.row_exists(foreign_id),
            "{k}: another org's resource survived"
        );
    }

    /// The deleted resource's slug can be taken again, by a new id; and a delete without an
    /// expected revision (0 = don't check) goes through.
    async fn the_slug_is_free_again_after_delete(&mut self) {
        let k = self.k();
        let again = self
            .api
            .create(&self.api.request(Some(&self.name), &self.spec))
            .await
            .unwrap_or_else(|s| panic!("{k}: re-create after delete failed: {s:?}"));
        check_lifecycle_created(&self.api, &again).await;
        assert_eq!(
            slug_of(&again),
            self.slug,
            "{k}: the slug can be reused after delete"
        );
        assert_ne!(
            id_of(&again),
            self.id(),
            "{k}: a re-created resource gets a new id"
        );
        self.grows(&again, "create after delete");
        let api = &self.api;
        let cascade = cascade_of(api, &again, None).await;
        let gone = api
            .delete(&id_of(&again), 0)
            .await
            .unwrap_or_else(|s| panic!("{k}: delete without expected revision failed: {s:?}"));
        assert_eq!(gone, again, "{k}: delete(expected 0) returns the resource");
        assert!(!api.row_exists(&id_of(&again)), "{k}: row gone");
        check_cascade(api, &cascade, "delete without expected revision").await;
    }
}
