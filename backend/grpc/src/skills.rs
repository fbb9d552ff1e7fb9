//! Skills: push takes a zip artifact, stores it once per SHA-256 inside the database, and makes
//! it the Skill's newest version; earlier versions stay reachable by tag or hash.

use std::time::SystemTime;

use prost_reflect::{DynamicMessage, Value};
use stigmer_store::{Mutation, Scope, StoreError, VersionSelector};

use crate::catalog::{KindInfo, Method};
use crate::controller::{Controller, MAX_ATTEMPTS, decode_row, new_row};
use crate::error::{ApiError, FieldViolation};
use crate::fields::{child_mut, get_i32, get_str, set, set_str};
use crate::json::to_json;
use crate::naming::{is_valid_slug, slug_from_name};
use crate::resource::{Caller, meta, prepare_create, same_content, set_revision, stamp_audit};
use crate::skill_artifact::{ArtifactLimits, inspect};
use crate::validation::check;

/// `SkillState.SKILL_STATE_READY`.
const READY: i32 = 2;

/// The artifact storage key of a hash, as upstream's local mode names it.
fn storage_key(hash: &str) -> String {
    format!("{hash}.zip")
}

fn is_hash(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Controller {
    pub(crate) async fn push_skill(
        &self,
        kind: &KindInfo,
        caller: &Caller,
        request: DynamicMessage,
    ) -> Result<DynamicMessage, ApiError> {
        let artifact = match request.get_field_by_name("artifact").as_deref() {
            Some(Value::Bytes(bytes)) => bytes.to_vec(),
            _ => Vec::new(),
        };
        let mut violations = Vec::new();
        let inspected = match inspect(&artifact, &ArtifactLimits::default()) {
            Ok(inspected) => Some(inspected),
            Err(err) => {
                violations.push(FieldViolation::new("artifact", err.to_string()));
                None
            }
        };
        let name = get_str(&request, "name");
        let slug = slug_from_name(&name);
        if !name.is_empty() && !is_valid_slug(&slug) {
            violations.push(FieldViolation::new(
                "name",
                format!("{name:?} does not make a valid slug: use 1-63 letters, digits or '-'"),
            ));
        }
        check(&self.validator, &request, violations)?;
        let Some(inspected) = inspected else {
            return Err(ApiError::internal("an artifact passed without inspection"));
        };
        let org = match get_str(&request, "org") {
            org if org.is_empty() => caller.org.clone(),
            org => org,
        };
        let tag = get_str(&request, "tag");
        tracing::debug!(
            hash = %inspected.sha256,
            entries = inspected.entries,
            unpacked_bytes = inspected.unpacked_bytes,
            "skill artifact accepted"
        );
        let scope = Scope::new(kind.name.clone(), org.clone());
        let _key = self
            .key_locks
            .lock(crate::key_locks::slug_key(&kind.name, &org, &slug))
            .await;
        for _ in 0..MAX_ATTEMPTS {
            let existing = self.store.get_by_slug(scope.clone(), slug.clone()).await?;
            let (skill, write) = match &existing {
                Some(row) => {
                    let stored = decode_row(kind, row)?;
                    let mut skill = stored.clone();
                    describe_version(&mut skill, &inspected.sha256, &inspected.skill_md, &tag);
                    stamp_audit(
                        &mut skill,
                        &["spec_audit", "status_audit"],
                        false,
                        caller,
                        SystemTime::now(),
                        "pushed",
                    );
                    if same_content(&stored, &skill) {
                        return Ok(stored);
                    }
                    let write = Mutation::Replace {
                        resource: new_row(kind, &skill)?,
                        expected_revision: row.revision,
                    };
                    (skill, write)
                }
                None => {
                    let mut skill = DynamicMessage::new(kind.message.clone());
                    if let Some(metadata) = child_mut(&mut skill, "metadata") {
                        set_str(metadata, "name", name.clone());
                        set_str(metadata, "slug", slug.clone());
                        set_str(metadata, "org", org.clone());
                        set(
                            metadata,
                            "owner_scope",
                            Value::EnumNumber(get_i32(&request, "scope")),
                        );
                    }
                    let violations = prepare_create(kind, &mut skill, caller, SystemTime::now());
                    describe_version(&mut skill, &inspected.sha256, &inspected.skill_md, &tag);
                    check(&self.validator, &skill, violations)?;
                    let write = Mutation::Create(new_row(kind, &skill)?);
                    (skill, write)
                }
            };
            let mutations = vec![
                Mutation::PutArtifact {
                    hash: inspected.sha256.clone(),
                    bytes: artifact.clone(),
                },
                write,
                Mutation::PutVersion {
                    resource_id: meta(&skill).id,
                    version_hash: inspected.sha256.clone(),
                    tag: tag.clone(),
                    data: to_json(&skill)?,
                    revision: None,
                },
            ];
            match self.store.transact(mutations).await {
                Ok(rows) => {
                    let mut skill = skill;
                    if let Some(row) = rows.first() {
                        set_revision(&mut skill, row.revision);
                    }
                    return Ok(skill);
                }
                // A concurrent push of the same skill: judge again against what it wrote.
                Err(StoreError::Conflict { .. } | StoreError::AlreadyExists { .. }) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(ApiError::Unavailable(format!(
            "skill {slug:?} is being pushed by many clients at once; retry"
        )))
    }

    pub(crate) async fn get_artifact(
        &self,
        method: &Method,
        request: DynamicMessage,
    ) -> Result<DynamicMessage, ApiError> {
        check(&self.validator, &request, Vec::new())?;
        let key = get_str(&request, "artifact_storage_key");
        let hash = key.strip_suffix(".zip").unwrap_or(&key);
        if !is_hash(hash) {
            return Err(ApiError::invalid_field(
                "GetArtifactRequest",
                "artifact_storage_key",
                "is not an artifact key: expected <64 hex digits>.zip, as in a Skill's status.artifactStorageKey",
            ));
        }
        let Some(bytes) = self.store.artifact(hash.to_string()).await? else {
            return Err(ApiError::NotFound {
                kind: "artifact".into(),
                id: key,
            });
        };
        let mut response = DynamicMessage::new(method.output.clone());
        set(&mut response, "artifact", Value::Bytes(bytes.into()));
        Ok(response)
    }

    /// A stored version of a versioned resource: `version` is a content hash or a tag.
    pub(crate) async fn version_of(
        &self,
        kind: &KindInfo,
        current: &DynamicMessage,
        version: &str,
    ) -> Result<DynamicMessage, ApiError> {
        let selector = if is_hash(version) {
            VersionSelector::Hash(version.to_string())
        } else {
            VersionSelector::Tag(version.to_string())
        };
        let id = meta(current).id;
        match self.store.version(id.clone(), selector).await? {
            Some(row) => decode_row(kind, &row),
            None => Err(ApiError::NotFound {
                kind: kind.name.clone(),
                id: format!("{id} version {version}"),
            }),
        }
    }

    /// A Skill takes its versions with it; artifacts no version needs go too.
    pub(crate) fn skill_cleanup(&self, stored: &DynamicMessage) -> Vec<Mutation> {
        vec![Mutation::DeleteVersions {
            resource_id: meta(stored).id,
        }]
    }
}

/// Spec and status of the version described by an artifact.
fn describe_version(skill: &mut DynamicMessage, hash: &str, skill_md: &str, tag: &str) {
    if let Some(spec) = child_mut(skill, "spec") {
        set_str(spec, "skill_md", skill_md);
        set_str(spec, "tag", tag);
    }
    if let Some(status) = child_mut(skill, "status") {
        set_str(status, "version_hash", hash);
        set_str(status, "artifact_storage_key", storage_key(hash));
        set(status, "state", Value::EnumNumber(READY));
    }
}
