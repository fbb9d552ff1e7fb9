//! Assertions on what the server returns, shared by the cycle and the negative cases.

use serde_json::{Value, json};
use stigmer_grpc::{API_VERSION, LOCAL};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::common::{self, expect_code};
use crate::json::{id_of, instant, revision_of};
use crate::kind_case::KindCase;

/// Crockford base32 as the server writes ULIDs: lowercase, no i l o u.
const ULID_ALPHABET: &str = "0123456789abcdefghjkmnpqrstvwxyz";

/// The spec a write stored equals the one sent, but for the derived fields the client left
/// out, which the server must have filled in.
pub fn assert_spec(case: &KindCase, stored: &Value, sent: &Value, what: &str) {
    let k = case.name;
    let mut stored_spec = stored["spec"].clone();
    for key in case.derived {
        if sent.get(*key).is_none() {
            let derived = stored_spec
                .as_object_mut()
                .and_then(|spec| spec.remove(*key))
                .unwrap_or(Value::Null);
            assert!(
                derived.as_str().is_some_and(|v| !v.is_empty()),
                "{k}: {what}: the server fills in spec.{key}: {stored}"
            );
        }
    }
    assert_eq!(&stored_spec, sent, "{k}: {what}: spec stored as sent");
}

pub fn assert_id(case: &KindCase, id: &str) {
    let k = case.name;
    let ulid = id
        .strip_prefix(&format!("{}-", case.prefix))
        .unwrap_or_else(|| panic!("{k}: id {id:?} lacks prefix {}-", case.prefix));
    assert_eq!(
        ulid.len(),
        26,
        "{k}: id {id:?} is not prefix + 26-char ULID"
    );
    assert!(
        ulid.chars().all(|c| ULID_ALPHABET.contains(c)),
        "{k}: id {id:?} is not a lowercase ULID"
    );
}

pub fn assert_not_found(case: &KindCase, result: Result<Value, Status>, id: &str, what: &str) {
    let k = case.name;
    let status = expect_code(result, Code::NotFound);
    assert!(
        status.message().contains(k) && status.message().contains(id),
        "{k}: {what}: NOT_FOUND message should name the kind and {id:?}: {:?}",
        status.message()
    );
}

/// INVALID_ARGUMENT with a violation at `field`, whatever its description.
pub fn assert_invalid(case: &KindCase, result: Result<Value, Status>, field: &str, what: &str) {
    assert_refused(case, result, field, None, what);
}

/// INVALID_ARGUMENT with a violation at `field` whose description is exactly `description`
/// (or any, when None).
pub fn assert_refused(
    case: &KindCase,
    result: Result<Value, Status>,
    field: &str,
    description: Option<&str>,
    what: &str,
) {
    let k = case.name;
    let status = match result {
        Ok(value) => panic!("{k}: {what}: expected INVALID_ARGUMENT naming {field}, got {value}"),
        Err(status) => status,
    };
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "{k}: {what}: expected INVALID_ARGUMENT naming {field}, got {status:?}"
    );
    common::assert_no_leak(&status);
    let violations = common::violations(&status);
    let found = violations
        .iter()
        .any(|(f, d)| f == field && description.is_none_or(|want| d == want));
    assert!(
        found,
        "{k}: {what}: no violation ({field:?}, {description:?}) among {violations:?}"
    );
}

pub fn assert_aborted(case: &KindCase, result: Result<Value, Status>, current: i64, what: &str) {
    let k = case.name;
    let status = match result {
        Ok(value) => panic!("{k}: {what}: expected ABORTED, got {value}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::Aborted, "{k}: {what}: {status:?}");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("{k}: {what}: ABORTED without ErrorInfo: {status:?}"));
    assert_eq!(
        info.metadata.get("current_revision"),
        Some(&current.to_string()),
        "{k}: {what}: ABORTED should carry the current revision"
    );
}

/// Everything the server owns on a freshly created (or applied-into-existence) resource.
pub fn check_created(case: &KindCase, created: &Value, name: Option<&str>, slug: Option<&str>) {
    let k = case.name;
    assert_eq!(
        created["apiVersion"], API_VERSION,
        "{k}: apiVersion: {created}"
    );
    assert_eq!(created["kind"], k, "{k}: kind: {created}");
    let meta = &created["metadata"];
    let id = id_of(created);
    assert_id(case, &id);
    match name {
        Some(name) => assert_eq!(meta["name"], name, "{k}: metadata.name kept"),
        None => assert!(meta.get("name").is_none(), "{k}: no name was sent: {meta}"),
    }
    match slug {
        Some(slug) => assert_eq!(meta["slug"], slug, "{k}: slug derived from {name:?}"),
        None => assert_eq!(
            meta["slug"],
            json!(id),
            "{k}: an unnamed resource's slug is its id"
        ),
    }
    assert_eq!(meta["org"], LOCAL, "{k}: org defaults to {LOCAL}: {meta}");
    match case.owner_scope {
        Some(scope) => assert_eq!(meta["ownerScope"], scope, "{k}: owner scope default"),
        None => assert!(
            meta.get("ownerScope").is_none(),
            "{k}: owner scope must stay unspecified: {meta}"
        ),
    }
    assert!(revision_of(created) > 0, "{k}: revision is positive");
    let audit = &created["status"]["audit"];
    for which in ["specAudit", "statusAudit"] {
        let info = &audit[which];
        let what = format!("{k}: status.audit.{which}");
        assert_eq!(info["createdBy"]["id"], LOCAL, "{what}.createdBy: {audit}");
        assert_eq!(info["updatedBy"]["id"], LOCAL, "{what}.updatedBy: {audit}");
        assert_eq!(info["event"], "created", "{what}.event: {audit}");
        let created_at = instant(&info["createdAt"], &format!("{what}.createdAt"));
        let updated_at = instant(&info["updatedAt"], &format!("{what}.updatedAt"));
        assert!(
            created_at.as_str() > "2024",
            "{what}.createdAt {created_at} is not the server's clock"
        );
        assert!(
            updated_at >= created_at,
            "{what}: updatedAt before createdAt"
        );
    }
}
