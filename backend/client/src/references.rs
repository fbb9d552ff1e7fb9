//! References by name between resources (`spec.skillRefs[0]` names a Skill), read from a
//! manifest the way the server reads them, for ordering documents and explaining failures.

use prost_reflect::{DynamicMessage, Kind, MapKey, Value as Field};
use serde_json::Value;
use stigmer_core::catalog::Catalog;

use crate::{Client, ClientError};

/// A reference by name from one resource to another: `spec.skillRefs[0]` names Skill "x".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Where, in the manifest's JSON names.
    pub path: String,
    /// The kind it names ("Skill").
    pub kind: String,
    pub slug: String,
}

const REFERENCE_TYPE: &str = "ai.stigmer.commons.apiresource.ApiResourceReference";

/// Every reference under `message` that names a served kind.
fn collect_references(
    catalog: &Catalog,
    message: &DynamicMessage,
    path: &str,
    out: &mut Vec<Reference>,
) {
    for (field, value) in message.fields() {
        let Kind::Message(descriptor) = field.kind() else {
            continue;
        };
        let here = format!("{path}.{}", field.json_name());
        let mut visit = |path: String, item: &DynamicMessage| {
            if descriptor.full_name() != REFERENCE_TYPE {
                return collect_references(catalog, item, &path, out);
            }
            let number = match item.get_field_by_name("kind").as_deref() {
                Some(Field::EnumNumber(number)) => *number,
                _ => 0,
            };
            let slug = match item.get_field_by_name("slug").as_deref() {
                Some(Field::String(slug)) => slug.clone(),
                _ => String::new(),
            };
            // An unset kind is the server's to judge; nothing here can say what it names.
            if let Some(kind) = catalog.kinds().iter().find(|k| k.number == number)
                && !slug.is_empty()
            {
                out.push(Reference {
                    path,
                    kind: kind.name.clone(),
                    slug,
                });
            }
        };
        match value {
            Field::Message(item) => visit(here, item),
            Field::List(items) => {
                for (index, item) in items.iter().enumerate() {
                    if let Some(item) = item.as_message() {
                        visit(format!("{here}[{index}]"), item);
                    }
                }
            }
            Field::Map(entries) => {
                for (key, item) in entries {
                    if let (Some(item), MapKey::String(key)) = (item.as_message(), key) {
                        visit(format!("{here}[{key:?}]"), item);
                    }
                }
            }
            _ => {}
        }
    }
}

impl Client {
    /// The references by name a manifest makes to other resources.
    pub fn references(&self, manifest: &Value) -> Result<Vec<Reference>, ClientError> {
        let (_, message) = self.parse_manifest(manifest)?;
        let mut references = Vec::new();
        if let Some(Field::Message(spec)) = message.get_field_by_name("spec").as_deref() {
            collect_references(self.catalog(), spec, "spec", &mut references);
        }
        Ok(references)
    }
}
