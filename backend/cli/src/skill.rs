//! Skills from the CLI: a folder with SKILL.md, pushed as it is or named by a manifest
//! (`kind: Skill` with `spec.path`, relative to the manifest), and a skill's versions.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;
use stigmer_client::{Applied, Client, SkillInfo, SkillPackage, slug_from_name};

use crate::manifest::Document;
use crate::output;

/// A skill to push from a folder, with the name and tag it goes by.
pub struct SkillSource {
    pub name: String,
    pub tag: String,
    pub dir: PathBuf,
}

impl SkillSource {
    /// The slug the skill is stored under.
    pub fn slug(&self) -> String {
        slug_from_name(&self.name)
    }

    /// Name and tag as given, else as SKILL.md's front matter says, else the folder's name
    /// and no tag.
    pub fn new(dir: PathBuf, name: Option<String>, tag: Option<String>) -> Result<Self, String> {
        let info = SkillInfo::of_dir(&dir).map_err(|err| err.to_string())?;
        let name = name
            .or(info.name)
            .or_else(|| folder_name(&dir))
            .ok_or_else(|| format!("{}: cannot tell the skill's name; give one", dir.display()))?;
        Ok(Self {
            name,
            tag: tag.or(info.version).unwrap_or_default(),
            dir,
        })
    }
}

fn folder_name(dir: &Path) -> Option<String> {
    std::path::absolute(dir)
        .ok()?
        .file_name()?
        .to_str()
        .map(str::to_string)
}

/// A folder given to `apply -f` or `delete -f`, as the Skill manifest it stands for.
pub fn folder_document(dir: &Path) -> Document {
    let path = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    Document::standalone(
        dir.display().to_string(),
        1,
        Ok(serde_json::json!({
            "apiVersion": "agentic.stigmer.ai/v1",
            "kind": "Skill",
            "spec": {"path": path.display().to_string()},
        })),
    )
}

/// The skill a document pushes from a folder, if it is a `kind: Skill` manifest with
/// `spec.path`, or why that folder cannot be pushed.
pub fn source_of(document: &Document) -> Option<Result<SkillSource, String>> {
    let value = document.value.as_ref().ok()?;
    let is_skill = value["kind"]
        .as_str()
        .is_some_and(|kind| kind.eq_ignore_ascii_case("Skill"));
    if !is_skill || value["spec"].get("path").is_none() {
        return None;
    }
    Some(resolve(document, value))
}

fn resolve(document: &Document, value: &Value) -> Result<SkillSource, String> {
    let spec = &value["spec"];
    let path = spec["path"]
        .as_str()
        .filter(|path| !path.is_empty())
        .ok_or("spec.path: must be the folder with SKILL.md, such as ./my-skill")?;
    if let Some(other) = spec.as_object().and_then(|spec| {
        spec.keys()
            .find(|key| !matches!(key.as_str(), "path" | "tag"))
    }) {
        return Err(format!(
            "spec.{other}: a Skill pushed from a folder takes only spec.path and spec.tag; the rest comes from the folder"
        ));
    }
    let text = |value: &Value| value.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    // `./my-skill` next to the manifest reads better in messages as `dir/my-skill`.
    let dir: PathBuf = base_dir(document)
        .join(path)
        .components()
        .filter(|part| !matches!(part, std::path::Component::CurDir))
        .collect();
    let dir = match dir.as_os_str().is_empty() {
        true => PathBuf::from("."),
        false => dir,
    };
    SkillSource::new(dir, text(&value["metadata"]["name"]), text(&spec["tag"]))
}

/// Where a document's relative paths start: its file's folder, or the working folder for
/// stdin.
fn base_dir(document: &Document) -> PathBuf {
    if document.source == "<stdin>" {
        return PathBuf::from(".");
    }
    Path::new(&document.source)
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Zips and pushes a skill, or only zips it on a dry run; returns the line to print.
pub async fn apply(client: &Client, source: &SkillSource, dry_run: bool) -> Result<String> {
    let package = SkillPackage::from_dir(&source.dir)?;
    if dry_run {
        return Ok(format!(
            "skill/{} valid (dry run, {} files)",
            source.slug(),
            package.files
        ));
    }
    let applied = client
        .push_skill(&source.name, &source.tag, package.archive)
        .await?;
    Ok(pushed_line(client, &applied))
}

/// `skill/pdf-tools created (tag 1.0, sha256 …)`
fn pushed_line(client: &Client, applied: &Applied) -> String {
    let resource = &applied.resource;
    let hash = output::scalar(&resource["status"]["versionHash"]);
    let what = match resource["spec"]["tag"].as_str().filter(|t| !t.is_empty()) {
        Some(tag) => format!("tag {tag}, sha256 {hash}"),
        None => format!("sha256 {hash}"),
    };
    format!(
        "{} {} ({what})",
        output::reference(client, "Skill", resource, "-"),
        applied.outcome
    )
}

/// The versions of a Skill under its table: the current one marked, oldest first.
pub async fn print_versions(client: &Client, skill: &Value) -> Result<()> {
    let id = skill["metadata"]["id"].as_str().unwrap_or_default();
    let versions = client
        .skill_versions(id)
        .await
        .context("cannot read the skill's versions")?;
    let (hash, tag) = (&skill["status"]["versionHash"], &skill["spec"]["tag"]);
    let current_tag = tag.as_str().unwrap_or_default();
    let mut rows = vec![vec![
        "CURRENT".to_string(),
        "TAG".to_string(),
        "SHA256".to_string(),
        "PUSHED".to_string(),
    ]];
    for version in versions {
        let current = *hash == version.version_hash && current_tag == version.tag;
        rows.push(vec![
            if current { "*" } else { "" }.to_string(),
            if version.tag.is_empty() {
                "-".to_string()
            } else {
                version.tag
            },
            version.version_hash,
            output::since(&Value::String(version.pushed_at)),
        ]);
    }
    println!();
    print!("{}", output::align(&rows));
    Ok(())
}
