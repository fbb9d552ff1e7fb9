//! The cycle's update and apply phases: rewrites of the resources create made.

use serde_json::{Value, json};
use stigmer_grpc::LOCAL;

use super::Cycle;
use crate::checks::{assert_aborted, assert_invalid, assert_not_found, assert_spec, check_created};
use crate::json::{id_of, instant, patched, revision_of, slug_of, with_derived};
use crate::kind_case::Rpc;
use crate::lifecycle::check_lifecycle_created;

impl Cycle<'_> {
    /// An update sent back with its current revision (the expected one) replaces the spec,
    /// keeps id, slug, org and status, and records itself in the spec audit only.
    pub(super) async fn update_replaces_the_spec_and_keeps_the_status(&mut self) {
        let (k, case, api) = (self.k(), self.api.case, &self.api);
        let id = self.id();
        let current = &self.current;
        let mut request = patched(
            current,
            &json!({ "status": { "audit": { "statusAudit": { "event": "forged" } } } }),
        );
        // A client sends back the fields the server derived on create (an execution's
        // session or workflow), as it read them.
        let changed = with_derived(case, &self.changed_spec, current);
        request["spec"] = changed.clone();
        let updated = api
            .update(&request)
            .await
            .unwrap_or_else(|s| panic!("{k}: update failed: {s:?}"));
        assert_eq!(id_of(&updated), id, "{k}: update keeps the id");
        assert_eq!(updated["spec"], changed, "{k}: update replaces spec");
        assert_eq!(
            updated["metadata"]["slug"], self.slug,
            "{k}: update keeps the slug"
        );
        assert_eq!(
            updated["metadata"]["org"], LOCAL,
            "{k}: update keeps the org"
        );
        let strip_spec_audit = |resource: &Value| {
            let mut status = resource["status"].clone();
            if let Some(audit) = status.get_mut("audit").and_then(Value::as_object_mut) {
                audit.remove("specAudit");
            }
            status
        };
        assert_eq!(
            strip_spec_audit(&updated),
            strip_spec_audit(current),
            "{k}: update must keep status (a status sent with update is ignored)"
        );
        let before = &current["status"]["audit"]["specAudit"];
        let after = &updated["status"]["audit"]["specAudit"];
        assert_eq!(
            after["createdAt"], before["createdAt"],
            "{k}: createdAt kept"
        );
        assert_eq!(
            after["createdBy"], before["createdBy"],
            "{k}: createdBy kept"
        );
        assert_eq!(after["updatedBy"]["id"], LOCAL, "{k}: updatedBy");
        assert_eq!(
            after["event"], "updated",
            "{k}: spec audit event after update"
        );
        assert!(
            instant(&after["updatedAt"], "updatedAt") >= instant(&before["updatedAt"], "updatedAt"),
            "{k}: updatedAt must not go back"
        );
        self.reads_back(&updated, "update").await;
        self.grows(&updated, "update");
        self.current = updated;
    }

    /// An update whose expected revision is no longer current is ABORTED and changes nothing.
    pub(super) async fn a_stale_update_is_aborted(&self) {
        let (k, case, api) = (self.k(), self.api.case, &self.api);
        let updated = &self.current;
        let mut stale = updated.clone();
        stale["spec"] = with_derived(case, &self.spec, updated);
        stale["metadata"]["revision"] = json!(self.created_revision.to_string());
        let result = api.update(&stale).await;
        assert_aborted(
            case,
            result,
            revision_of(updated),
            "update with a stale revision",
        );
        assert_eq!(
            api.get(&self.id()).await.expect("get"),
            *updated,
            "{k}: ABORTED changed nothing"
        );
    }

    /// An update that changes nothing returns the stored resource, at the same revision.
    pub(super) async fn an_update_that_changes_nothing_stores_nothing(&self) {
        let (k, api) = (self.k(), &self.api);
        let same = api
            .update(&self.current)
            .await
            .unwrap_or_else(|s| panic!("{k}: no-op update failed: {s:?}"));
        assert_eq!(
            same, self.current,
            "{k}: a no-op update returns the stored resource"
        );
        assert_eq!(
            api.get(&self.id()).await.expect("get"),
            self.current,
            "{k}: no-op stored nothing"
        );
    }

    /// Without an expected revision (0 = don't check) an update goes through.
    pub(super) async fn an_update_without_a_revision_goes_through(&mut self) {
        let (k, case) = (self.k(), self.api.case);
        let id = self.id();
        let mut unchecked = self.current.clone();
        let first_spec = with_derived(case, &self.spec, &self.current);
        unchecked["spec"] = first_spec.clone();
        unchecked["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("revision");
        let back = self
            .api
            .update(&unchecked)
            .await
            .unwrap_or_else(|s| panic!("{k}: update without revision failed: {s:?}"));
        assert_eq!(back["spec"], first_spec, "{k}: spec back to the first one");
        assert_eq!(id_of(&back), id, "{k}: same id");
        self.grows(&back, "update without revision");
        self.current = back;
    }

    /// An update without an id is INVALID_ARGUMENT; one with an unknown id NOT_FOUND.
    pub(super) async fn an_update_needs_an_existing_id(&self) {
        let (case, api) = (self.api.case, &self.api);
        let mut no_id = self.current.clone();
        no_id["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("id");
        assert_invalid(
            case,
            api.update(&no_id).await,
            "metadata.id",
            "update without id",
        );
        let ghost = format!("{}-00000000000000000000000000", case.prefix);
        let mut unknown = self.current.clone();
        unknown["metadata"]["id"] = json!(ghost);
        unknown["metadata"]["slug"] = json!("ghost");
        unknown["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("revision");
        assert_not_found(
            case,
            api.update(&unknown).await,
            &ghost,
            "update of a missing id",
        );
    }

    /// Apply is create-or-update by the slug derived from the name: a new name creates.
    pub(super) async fn apply_creates_by_the_slug_of_the_name(&mut self) -> Value {
        let (k, case) = (self.k(), self.api.case);
        let apply_name = format!("Applied {k}");
        let apply_slug = format!("applied-{}", k.to_lowercase());
        let first = self
            .api
            .apply(&self.api.request(Some(&apply_name), &self.spec))
            .await
            .unwrap_or_else(|s| panic!("{k}: first apply failed: {s:?}"));
        check_created(case, &first, Some(&apply_name), Some(&apply_slug));
        assert_spec(case, &first, &self.spec, "first apply");
        self.grows(&first, "first apply");
        check_lifecycle_created(&self.api, &first).await;
        let applied_id = id_of(&first);
        assert_ne!(
            applied_id,
            self.id(),
            "{k}: apply of a new name creates a new resource"
        );
        assert_eq!(
            self.api.get(&applied_id).await.expect("get"),
            first,
            "{k}: get after apply"
        );
        self.alive.push(applied_id);
        first
    }

    /// Applying the same name again updates the resource the first apply made, and an apply
    /// that changes nothing returns it as stored.
    pub(super) async fn apply_again_updates_the_same_resource(&mut self, first: &Value) -> Value {
        let k = self.k();
        let apply_name = first["metadata"]["name"].as_str().expect("name");
        let applied_id = id_of(first);
        let changed = with_derived(self.api.case, &self.changed_spec, first);
        let second = self
            .api
            .apply(&self.api.request(Some(apply_name), &changed))
            .await
            .unwrap_or_else(|s| panic!("{k}: second apply failed: {s:?}"));
        assert_eq!(
            id_of(&second),
            applied_id,
            "{k}: second apply updates the same id"
        );
        assert_eq!(second["spec"], changed, "{k}: second apply changes spec");
        assert_eq!(
            second["status"]["audit"]["specAudit"]["createdAt"],
            first["status"]["audit"]["specAudit"]["createdAt"],
            "{k}: second apply keeps createdAt"
        );
        assert_eq!(
            second["status"]["audit"]["specAudit"]["event"], "updated",
            "{k}: second apply is an update"
        );
        self.grows(&second, "second apply");
        self.reads_back(&second, "second apply").await;
        let third = self
            .api
            .apply(&self.api.request(Some(apply_name), &changed))
            .await
            .unwrap_or_else(|s| panic!("{k}: third apply failed: {s:?}"));
        assert_eq!(
            third, second,
            "{k}: an unchanged apply returns the stored resource"
        );
        second
    }

    /// An apply whose expected revision is no longer current is ABORTED; the slug still finds
    /// what the last apply stored.
    pub(super) async fn a_stale_apply_is_aborted(&self, first: &Value, second: &Value) {
        let (k, case, api) = (self.k(), self.api.case, &self.api);
        let apply_name = first["metadata"]["name"].as_str().expect("name");
        let mut stale = api.request(Some(apply_name), &self.spec);
        stale["metadata"]["revision"] = json!(revision_of(first).to_string());
        let result = api.apply(&stale).await;
        assert_aborted(
            case,
            result,
            revision_of(second),
            "apply with a stale revision",
        );
        if case.has(Rpc::GetByReference) {
            let found = api
                .get_by_reference(&json!({ "slug": slug_of(first) }))
                .await
                .expect("getByReference of applied");
            assert_eq!(
                found, *second,
                "{k}: getByReference finds the applied resource"
            );
        }
    }
}
