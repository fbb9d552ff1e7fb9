//! Skills: pushed as zip archives (see [`crate::SkillPackage`]) rather than applied, and
//! versioned by the archive's hash.

use std::sync::Arc;

use prost_reflect::{DynamicMessage, Value as Field};
use serde_json::Value;
use stigmer_core::catalog::KindInfo;
use stigmer_core::naming::slug_from_name;

use crate::resources::{manifest_slug, outcome, to_json};
use crate::{Applied, Client, ClientError, EXPORTED_VERSIONS, Outcome};

/// One pushed version of a Skill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkillVersion {
    /// Empty when pushed without a tag.
    pub tag: String,
    /// The archive's SHA-256, lowercase hex.
    pub version_hash: String,
    /// When it was pushed, RFC 3339 (empty if unknown).
    pub pushed_at: String,
}

impl SkillVersion {
    fn from_exported(version: &Value) -> Self {
        let text = |value: &Value| value.as_str().unwrap_or_default().to_string();
        let audit = &version["resource"]["status"]["audit"]["specAudit"];
        let pushed_at = match text(&audit["updatedAt"]) {
            at if at.is_empty() => text(&audit["createdAt"]),
            at => at,
        };
        Self {
            tag: text(&version["tag"]),
            version_hash: text(&version["versionHash"]),
            pushed_at,
        }
    }
}

impl Client {
    /// A manifest of a pushed kind (Skill) names no archive, so it cannot push; it is
    /// unchanged when it describes the version already current (as `get -o yaml` prints it).
    pub(crate) async fn apply_pushed(
        &self,
        kind: &KindInfo,
        manifest: &Value,
    ) -> Result<Applied, ClientError> {
        let hash = &manifest["status"]["versionHash"];
        let slug = manifest_slug(manifest);
        if hash.is_string() && !slug.is_empty() {
            let current = self.find_by_slug(kind, &slug).await?.filter(|stored| {
                stored["status"]["versionHash"] == *hash
                    && stored["spec"]["tag"] == manifest["spec"]["tag"]
            });
            if let Some(resource) = current {
                return Ok(Applied {
                    outcome: Outcome::Unchanged,
                    resource,
                });
            }
        }
        Err(ClientError::Usage(format!(
            "a {} is pushed from its folder: give spec.path (the folder with SKILL.md, relative to the manifest), apply the folder itself, or run `stigmer skill push DIR`",
            kind.name
        )))
    }

    /// Pushes a Skill's archive (see [`crate::SkillPackage`]) as its newest version; pushing
    /// the same archive and tag again changes nothing.
    pub async fn push_skill(
        &self,
        name: &str,
        tag: &str,
        archive: Vec<u8>,
    ) -> Result<Applied, ClientError> {
        let kind = Arc::clone(self.kind("Skill")?);
        let method = self.required(&kind, "Command", "push")?;
        let slug = slug_from_name(name);
        let before = match slug.is_empty() {
            true => None,
            false => self.find_by_slug(&kind, &slug).await?,
        };
        let mut request = DynamicMessage::new(method.input.clone());
        request.set_field_by_name("name", Field::String(name.to_string()));
        request.set_field_by_name("tag", Field::String(tag.to_string()));
        request.set_field_by_name("artifact", Field::Bytes(archive.into()));
        let resource = to_json(&self.invoke(method, request).await?);
        Ok(Applied {
            outcome: outcome(before.as_ref(), &resource),
            resource,
        })
    }

    /// Every version of a Skill, oldest first. Export is the one RPC that returns versions,
    /// so this reads the org's skills with their archives.
    pub async fn skill_versions(&self, skill_id: &str) -> Result<Vec<SkillVersion>, ClientError> {
        let export = self.export(&["Skill".to_string()]).await?;
        if export
            .omitted
            .iter()
            .any(|reason| reason.contains(skill_id))
        {
            return Err(ClientError::Usage(format!(
                "the versions of {skill_id} are too large to read in one message"
            )));
        }
        let versions = export
            .resources
            .iter()
            .find(|skill| skill["metadata"]["id"] == skill_id)
            .and_then(|skill| skill[EXPORTED_VERSIONS].as_array())
            .map(|versions| versions.iter().map(SkillVersion::from_exported).collect())
            .unwrap_or_default();
        Ok(versions)
    }
}
