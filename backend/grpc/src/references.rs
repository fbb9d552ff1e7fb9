//! References between resources: every ApiResourceReference in a resource must name an
//! existing resource of its kind in the same org, and an id given where a slug was meant (or
//! the other way round) is named as such.

use prost_reflect::{DynamicMessage, Kind, Value};
use stigmer_store::Scope;

use crate::catalog::KindInfo;
use crate::controller::Controller;
use crate::error::{ApiError, FieldViolation};
use crate::fields::{child, get_i32, get_str};

const REFERENCE_TYPE: &str = "ai.stigmer.commons.apiresource.ApiResourceReference";

impl Controller {
    /// Every ApiResourceReference in the resource must name an existing resource of its kind.
    pub(crate) async fn missing_references(
        &self,
        kind: &KindInfo,
        resource: &DynamicMessage,
        org: &str,
    ) -> Result<Vec<FieldViolation>, ApiError> {
        let mut references = Vec::new();
        if let Some(spec) = child(resource, "spec") {
            collect_references(&spec, "spec", &mut references);
        }
        let mut violations = Vec::new();
        for Reference {
            path,
            field,
            reference,
        } in references
        {
            let number = get_i32(&reference, "kind");
            let named = self.catalog.kinds().iter().find(|k| k.number == number);
            let implied = kind
                .relations
                .reference_kinds
                .iter()
                .find(|(name, _)| *name == field)
                .map(|(_, kind)| *kind);
            let target = match (implied, named) {
                (None, Some(named)) => named,
                (None, None) => continue, // unknown or unset kinds are the field rules' business
                (Some(implied), Some(named)) if named.name != implied => {
                    let implied = self.kind_named(implied)?;
                    violations.push(FieldViolation::new(
                        path,
                        format!(
                            "must reference {} (kind {}), not {}",
                            implied.name, implied.number, named.name
                        ),
                    ));
                    continue;
                }
                (Some(implied), _) if number != 0 && named.is_none() => {
                    violations.push(FieldViolation::new(
                        format!("{path}.kind"),
                        format!(
                            "{number} is not a kind this server serves; it must reference {implied}"
                        ),
                    ));
                    continue;
                }
                (Some(implied), _) => self.kind_named(implied)?,
            };
            let slug = get_str(&reference, "slug");
            if slug.is_empty() {
                violations.push(FieldViolation::new(format!("{path}.slug"), "is required"));
                continue;
            }
            let ref_org = match get_str(&reference, "org") {
                o if o.is_empty() => org.to_string(),
                o => o,
            };
            if ref_org != org {
                // Orgs are kept apart: nothing (above all no secret) is reached across them.
                violations.push(FieldViolation::new(
                    format!("{path}.org"),
                    format!(
                        "is {ref_org:?}; a resource may only reference resources of its own org \
                         ({org:?})"
                    ),
                ));
                continue;
            }
            let scope = Scope::new(target.name.clone(), ref_org.clone());
            if self.store.get_by_slug(scope, slug.clone()).await?.is_none() {
                violations.push(FieldViolation::new(
                    path,
                    format!("{} {slug:?} does not exist in org {ref_org:?}", target.name),
                ));
            }
        }
        Ok(violations)
    }
}

/// An ApiResourceReference found in a resource: where, in which field, and what it says.
struct Reference {
    path: String,
    field: String,
    reference: DynamicMessage,
}

/// Every ApiResourceReference under `message`.
fn collect_references(message: &DynamicMessage, path: &str, out: &mut Vec<Reference>) {
    for (field, value) in message.fields() {
        let Kind::Message(descriptor) = field.kind() else {
            continue;
        };
        let is_reference = descriptor.full_name() == REFERENCE_TYPE;
        let here = format!("{path}.{}", field.name());
        let mut visit = |path: String, item: &DynamicMessage| {
            if is_reference {
                out.push(Reference {
                    path,
                    field: field.name().to_string(),
                    reference: item.clone(),
                });
            } else {
                collect_references(item, &path, out);
            }
        };
        match value {
            Value::Message(item) => visit(here, item),
            Value::List(items) => {
                for (index, item) in items.iter().enumerate() {
                    if let Some(item) = item.as_message() {
                        visit(format!("{here}[{index}]"), item);
                    }
                }
            }
            Value::Map(entries) => {
                for (key, item) in entries {
                    if let (Some(item), prost_reflect::MapKey::String(key)) =
                        (item.as_message(), key)
                    {
                        visit(format!("{here}[{key:?}]"), item);
                    }
                }
            }
            _ => {}
        }
    }
}

impl Controller {
    /// Why `spec.<field>` names no `kind`: no such id, or, when the value is not an id of that
    /// kind at all, that an id is expected, naming the id of the resource with that slug if
    /// there is one (`agentId: pr-reviewer` is a slug given where an id belongs).
    pub(crate) async fn missing(
        &self,
        field: &str,
        kind: &str,
        id: &str,
        org: &str,
    ) -> Result<FieldViolation, ApiError> {
        let path = format!("spec.{field}");
        let prefix = &self.kind_named(kind)?.id_prefix;
        if id.starts_with(&format!("{prefix}-")) {
            return Ok(FieldViolation::new(
                path,
                format!("{kind} {id:?} does not exist in org {org:?}"),
            ));
        }
        let scope = Scope::new(kind, org);
        let hint = match self.store.get_by_slug(scope, id.to_string()).await? {
            Some(row) => format!("; the {kind} with slug {id:?} has id {:?}", row.id),
            None => format!("; no {kind} has slug {id:?} in org {org:?} either"),
        };
        Ok(FieldViolation::new(
            path,
            format!(
                "is {id:?}, but {} {kind} id ({prefix}-…) is expected here{hint}",
                article(kind)
            ),
        ))
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['A', 'E', 'I', 'O', 'U']) {
        "an"
    } else {
        "a"
    }
}
