//! The envelope every kind shares (api_version, kind, metadata, spec, status) and the fields the
//! server owns in it: id, slug, org, owner scope, revision and audit.

use std::time::SystemTime;

use prost_reflect::{DynamicMessage, Value};

use crate::catalog::KindInfo;
use crate::error::FieldViolation;
use crate::fields::{child, child_mut, clear, get_i32, get_str, set, set_str};
use crate::naming::{MAX_SLUG_LEN, is_valid_slug, new_id, slug_from_name};

pub use stigmer_core::API_VERSION;

/// Who is calling: the org their requests default to, and the identity recorded in audits.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub org: String,
    pub identity: String,
    /// With `--auth apikey`, the identity's roles; `None` in local mode, where every call is
    /// allowed.
    pub grants: Option<std::sync::Arc<crate::auth::grants::Grants>>,
}

/// Read-only view of the metadata fields the controller needs.
pub(crate) struct Meta {
    pub id: String,
    pub org: String,
    pub slug: String,
    pub name: String,
    pub revision: i64,
}

pub(crate) fn meta(resource: &DynamicMessage) -> Meta {
    // Borrowed, not copied: this runs several times per call.
    let field = resource.get_field_by_name("metadata");
    let metadata = field.as_deref().and_then(Value::as_message);
    let read = |field| metadata.map(|m| get_str(m, field)).unwrap_or_default();
    Meta {
        id: read("id"),
        org: read("org"),
        slug: read("slug"),
        name: read("name"),
        revision: metadata
            .map(|m| crate::fields::get_i64(m, "revision"))
            .unwrap_or_default(),
    }
}

/// The org a request addresses: the one it names, else the caller's.
pub(crate) fn org_of(resource: &DynamicMessage, caller: &Caller) -> String {
    let org = meta(resource).org;
    if org.is_empty() {
        caller.org.clone()
    } else {
        org
    }
}

fn metadata_mut(resource: &mut DynamicMessage) -> Option<&mut DynamicMessage> {
    child_mut(resource, "metadata")
}

/// Fills `api_version` and `kind` when omitted; a wrong value stays for validation to report.
pub(crate) fn fill_type_fields(kind: &KindInfo, resource: &mut DynamicMessage) {
    if get_str(resource, "api_version").is_empty() {
        set_str(resource, "api_version", kind.api_version());
    }
    if get_str(resource, "kind").is_empty() {
        set_str(resource, "kind", kind.name.clone());
    }
}

/// The slug a request asks for: the one given, else one derived from the name, else (for kinds
/// never addressed by reference) the id.
fn resolve_slug(kind: &KindInfo, meta: &Meta, id: &str) -> Result<String, FieldViolation> {
    if !meta.slug.is_empty() {
        return if is_valid_slug(&meta.slug) {
            Ok(meta.slug.clone())
        } else {
            Err(FieldViolation::new(
                "metadata.slug",
                format!(
                    "{:?} is not a valid slug: use 1-{MAX_SLUG_LEN} lowercase letters, digits or '-', starting and ending with a letter or digit",
                    meta.slug
                ),
            ))
        };
    }
    if meta.name.is_empty() {
        return if kind.named {
            Err(FieldViolation::new(
                "metadata.name",
                format!(
                    "is required: a {} is found by the slug derived from its name (or set metadata.slug)",
                    kind.name
                ),
            ))
        } else {
            Ok(id.to_string())
        };
    }
    let derived = slug_from_name(&meta.name);
    if derived.is_empty() {
        Err(FieldViolation::new(
            "metadata.name",
            format!(
                "{:?} has no letter or digit to derive a slug from; set metadata.slug",
                meta.name
            ),
        ))
    } else if derived.len() > MAX_SLUG_LEN {
        Err(FieldViolation::new(
            "metadata.name",
            format!(
                "derives a slug of {} characters, over the {MAX_SLUG_LEN} allowed; shorten the name or set metadata.slug",
                derived.len()
            ),
        ))
    } else {
        Ok(derived)
    }
}

/// The slug an apply addresses, before anything is stored.
pub(crate) fn requested_slug(
    kind: &KindInfo,
    resource: &DynamicMessage,
) -> Result<String, FieldViolation> {
    let meta = meta(resource);
    if meta.slug.is_empty() && meta.name.is_empty() {
        // apply finds its target by slug, so even unnamed kinds need one here.
        return Err(FieldViolation::new(
            "metadata.name",
            "is required by apply, which finds the resource by the slug derived from it (or set metadata.slug)",
        ));
    }
    resolve_slug(kind, &meta, "")
}

/// Turns a create request into the resource to store. Returns the contract violations found.
pub(crate) fn prepare_create(
    kind: &KindInfo,
    resource: &mut DynamicMessage,
    caller: &Caller,
    now: SystemTime,
) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    fill_type_fields(kind, resource);
    let org = org_of(resource, caller);
    let id = new_id(&kind.id_prefix);
    let slug = resolve_slug(kind, &meta(resource), &id).unwrap_or_else(|violation| {
        violations.push(violation);
        String::new()
    });
    if let Some(metadata) = metadata_mut(resource) {
        set_str(metadata, "id", id);
        set_str(metadata, "org", org);
        set_str(metadata, "slug", slug);
        clear(metadata, "revision");
        if let Some(scope) = kind.default_owner_scope
            && get_i32(metadata, "owner_scope") == 0
        {
            set(metadata, "owner_scope", Value::EnumNumber(scope));
        }
    }
    clear(resource, "status");
    stamp_audit(
        resource,
        &["spec_audit", "status_audit"],
        true,
        caller,
        now,
        "created",
    );
    violations
}

/// Builds the updated resource from the stored one and the request: spec and metadata come from
/// the request, status and server-owned fields from what is stored.
pub(crate) fn prepare_update(
    kind: &KindInfo,
    stored: &DynamicMessage,
    resource: &mut DynamicMessage,
    caller: &Caller,
    now: SystemTime,
) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    fill_type_fields(kind, resource);
    let before = meta(stored);
    let mut requested = meta(resource);
    if requested.slug.is_empty() {
        requested.slug = before.slug.clone();
    }
    let slug = resolve_slug(kind, &requested, &before.id).unwrap_or_else(|violation| {
        violations.push(violation);
        before.slug.clone()
    });
    let stored_scope = child(stored, "metadata")
        .map(|m| get_i32(&m, "owner_scope"))
        .unwrap_or_default();
    if let Some(metadata) = metadata_mut(resource) {
        set_str(metadata, "id", before.id);
        set_str(metadata, "org", before.org);
        set_str(metadata, "slug", slug);
        clear(metadata, "revision");
        if get_i32(metadata, "owner_scope") == 0 && stored_scope != 0 {
            set(metadata, "owner_scope", Value::EnumNumber(stored_scope));
        }
    }
    match child(stored, "status") {
        Some(status) if stored.has_field_by_name("status") => {
            set(resource, "status", Value::Message(status))
        }
        _ => clear(resource, "status"),
    }
    stamp_audit(resource, &["spec_audit"], false, caller, now, "updated");
    violations
}

/// True when `a` and `b` differ only in what every write changes (revision, audit).
pub(crate) fn same_content(a: &DynamicMessage, b: &DynamicMessage) -> bool {
    let strip = |message: &DynamicMessage| {
        let mut copy = message.clone();
        if let Some(metadata) = metadata_mut(&mut copy) {
            clear(metadata, "revision");
        }
        if copy.has_field_by_name("status")
            && let Some(status) = child_mut(&mut copy, "status")
        {
            clear(status, "audit");
        }
        copy
    };
    strip(a) == strip(b)
}

pub(crate) fn set_revision(resource: &mut DynamicMessage, revision: i64) {
    if let Some(metadata) = metadata_mut(resource) {
        set(metadata, "revision", Value::I64(revision));
    }
}

/// Sets a `google.protobuf.Timestamp` message to `now`.
pub(crate) fn set_time(time: &mut DynamicMessage, now: SystemTime) {
    let (seconds, nanos) = match now.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => (
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            i32::try_from(since.subsec_nanos()).unwrap_or_default(),
        ),
        Err(_) => (0, 0),
    };
    set(time, "seconds", Value::I64(seconds));
    set(time, "nanos", Value::I32(nanos));
}

pub(crate) fn stamp_audit(
    resource: &mut DynamicMessage,
    which: &[&str],
    created: bool,
    caller: &Caller,
    now: SystemTime,
    event: &str,
) {
    let Some(audit) = child_mut(resource, "status").and_then(|status| child_mut(status, "audit"))
    else {
        return;
    };
    for name in which {
        let Some(info) = child_mut(audit, name) else {
            continue;
        };
        let mut stamp = |actor_field: &str, time_field: &str| {
            if let Some(actor) = child_mut(info, actor_field) {
                set_str(actor, "id", caller.identity.clone());
            }
            if let Some(time) = child_mut(info, time_field) {
                set_time(time, now);
            }
        };
        if created {
            stamp("created_by", "created_at");
        }
        stamp("updated_by", "updated_at");
        set_str(info, "event", event);
    }
}
