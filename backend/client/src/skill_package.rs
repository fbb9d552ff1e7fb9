//! A Skill's folder as the zip archive `push` takes. The archive depends on the files' names,
//! contents and executable bits only (entries sorted by name, one fixed time, fixed
//! permissions), so the same files give the same bytes and so the same SHA-256: pushing a
//! skill that did not change is then a no-op on the server.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value as Yaml;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, System, ZipWriter};

/// The file that makes a folder a skill.
pub const SKILL_MD: &str = "SKILL.md";

/// Folders of version control systems: history, not part of the skill.
const SKIPPED_DIRS: &[&str] = &[".git", ".hg", ".svn"];
/// Files operating systems leave behind.
const SKIPPED_FILES: &[&str] = &[".DS_Store", "Thumbs.db"];

/// Reading stops past this many bytes of files: the most a skill may unpack to (ADR 0013).
/// The server checks every limit itself; this only keeps a wrong folder (a home directory)
/// from being read whole.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// What SKILL.md's front matter says about the skill.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkillInfo {
    /// `name`, if given.
    pub name: Option<String>,
    /// `version`, else `metadata.version`, if given.
    pub version: Option<String>,
}

/// A skill folder, zipped.
#[derive(Debug, Clone)]
pub struct SkillPackage {
    pub info: SkillInfo,
    /// The zip archive, as `push` takes it.
    pub archive: Vec<u8>,
    /// Files in the archive.
    pub files: usize,
}

/// Why a folder could not be packed. Each message names the path and says what to change.
#[derive(Debug, thiserror::Error)]
pub enum SkillPackageError {
    #[error("{} is not a folder; give the folder that holds SKILL.md", .0.display())]
    NotAFolder(PathBuf),
    #[error("{} has no SKILL.md; a skill is a folder with SKILL.md at its top", .0.display())]
    NoSkillMd(PathBuf),
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} is a symbolic link; a skill may hold only regular files and folders: copy the file in",
        .0.display()
    )]
    Symlink(PathBuf),
    #[error("{} is not a regular file or folder", .0.display())]
    Special(PathBuf),
    #[error("{}: the name is not UTF-8, which zip entry names must be", .0.display())]
    NotUtf8(PathBuf),
    #[error("{}: the front matter (between the --- lines at the top) {reason}", .path.display())]
    FrontMatter { path: PathBuf, reason: String },
    #[error(
        "{} holds more than {} MiB of files, more than a skill may unpack to; is it the right folder?",
        .0.display(), MAX_FILE_BYTES >> 20
    )]
    TooLarge(PathBuf),
    #[error("cannot zip {}: {reason}", .path.display())]
    Zip { path: PathBuf, reason: String },
}

impl SkillPackage {
    /// Zips `dir`, which must hold SKILL.md at its top.
    pub fn from_dir(dir: &Path) -> Result<Self, SkillPackageError> {
        let info = SkillInfo::of_dir(dir)?;
        let files = files_of(dir)?;
        let archive = zip_files(dir, &files)?;
        Ok(Self {
            info,
            archive,
            files: files.len(),
        })
    }
}

impl SkillInfo {
    /// Reads SKILL.md's front matter in `dir`, checking that `dir` is a skill folder.
    pub fn of_dir(dir: &Path) -> Result<Self, SkillPackageError> {
        if !dir.is_dir() {
            return Err(SkillPackageError::NotAFolder(dir.to_path_buf()));
        }
        let path = dir.join(SKILL_MD);
        if !path.is_file() {
            return Err(SkillPackageError::NoSkillMd(dir.to_path_buf()));
        }
        let bytes = std::fs::read(&path).map_err(|source| SkillPackageError::Read {
            path: path.clone(),
            source,
        })?;
        // Text that is not UTF-8 has no front matter to read; the server says what is wrong.
        let Ok(text) = String::from_utf8(bytes) else {
            return Ok(Self::default());
        };
        Self::parse(&text).map_err(|reason| SkillPackageError::FrontMatter { path, reason })
    }

    /// The front matter of SKILL.md's text: a YAML mapping between `---` lines at the top.
    fn parse(text: &str) -> Result<Self, String> {
        let Some(yaml) = front_matter(text)? else {
            return Ok(Self::default());
        };
        let value: Yaml =
            serde_yaml_ng::from_str(yaml).map_err(|err| format!("is not valid YAML: {err}"))?;
        if value.is_null() {
            return Ok(Self::default());
        }
        if !value.is_mapping() {
            return Err("must be a mapping such as `name: my-skill`".into());
        }
        let version = scalar(&value, "version").or_else(|| {
            value
                .get("metadata")
                .and_then(|metadata| scalar(metadata, "version"))
        });
        Ok(Self {
            name: scalar(&value, "name"),
            version,
        })
    }
}

/// The YAML between a first line `---` and the next `---` (or `...`) line, if the text
/// starts with one.
fn front_matter(text: &str) -> Result<Option<&str>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    if lines.next().map(str::trim_end) != Some("---") {
        return Ok(None);
    }
    let start = text.find('\n').map_or(text.len(), |i| i + 1);
    let mut end = start;
    for line in lines {
        if matches!(line.trim_end(), "---" | "...") {
            return Ok(Some(&text[start..end]));
        }
        end += line.len();
    }
    Err("has no closing --- line".into())
}

/// A string or number under `key`, as text (`version: 1.2` is as good as `version: "1.2"`).
fn scalar(value: &Yaml, key: &str) -> Option<String> {
    match value.get(key)? {
        Yaml::String(text) if !text.trim().is_empty() => Some(text.trim().to_string()),
        Yaml::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// One file of a skill: its archive name and whether it is executable.
struct Entry {
    name: String,
    path: PathBuf,
    executable: bool,
}

/// Every regular file under `dir`, sorted by archive name.
fn files_of(dir: &Path) -> Result<Vec<Entry>, SkillPackageError> {
    let mut files = Vec::new();
    let mut total = 0;
    walk(dir, "", &mut files, &mut total)?;
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

fn walk(
    dir: &Path,
    prefix: &str,
    files: &mut Vec<Entry>,
    total: &mut u64,
) -> Result<(), SkillPackageError> {
    let read = |source| SkillPackageError::Read {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(read)? {
        let path = entry.map_err(read)?.path();
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            return Err(SkillPackageError::NotUtf8(path));
        };
        let metadata =
            std::fs::symlink_metadata(&path).map_err(|source| SkillPackageError::Read {
                path: path.clone(),
                source,
            })?;
        let name = format!("{prefix}{file_name}");
        if metadata.is_symlink() {
            return Err(SkillPackageError::Symlink(path));
        } else if metadata.is_dir() {
            if !SKIPPED_DIRS.contains(&file_name.as_str()) {
                walk(&path, &format!("{name}/"), files, total)?;
            }
        } else if !metadata.is_file() {
            return Err(SkillPackageError::Special(path));
        } else if !SKIPPED_FILES.contains(&file_name.as_str()) {
            *total += metadata.len();
            if *total > MAX_FILE_BYTES {
                return Err(SkillPackageError::TooLarge(dir.to_path_buf()));
            }
            files.push(Entry {
                name,
                executable: is_executable(&metadata),
                path,
            });
        }
    }
    Ok(())
}

#[cfg(unix)]
fn is_executable(metadata: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    metadata.permissions().mode() & 0o100 != 0
}

#[cfg(not(unix))]
fn is_executable(_: &std::fs::Metadata) -> bool {
    false
}

fn zip_files(dir: &Path, files: &[Entry]) -> Result<Vec<u8>, SkillPackageError> {
    let failed = |err: &dyn std::fmt::Display| SkillPackageError::Zip {
        path: dir.to_path_buf(),
        reason: err.to_string(),
    };
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    for file in files {
        // Only what the skill is made of goes in: times, owners and the host system would
        // make the same files hash differently on another machine or after a checkout.
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .compression_level(Some(6))
            .last_modified_time(DateTime::DEFAULT)
            .system(System::Unix)
            .unix_permissions(if file.executable { 0o755 } else { 0o644 });
        let bytes = std::fs::read(&file.path).map_err(|source| SkillPackageError::Read {
            path: file.path.clone(),
            source,
        })?;
        writer
            .start_file(file.name.as_str(), options)
            .map_err(|err| failed(&err))?;
        writer.write_all(&bytes).map_err(|err| failed(&err))?;
    }
    Ok(writer.finish().map_err(|err| failed(&err))?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn skill(dir: &Path) {
        std::fs::write(
            dir.join(SKILL_MD),
            "---\nname: demo\nmetadata:\n  version: 2\n---\n# Demo\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("scripts")).unwrap();
        std::fs::write(dir.join("scripts/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
        std::fs::write(dir.join("b.md"), "b").unwrap();
        std::fs::write(dir.join("a.md"), "a").unwrap();
        std::fs::create_dir_all(dir.join(".git")).unwrap();
        std::fs::write(dir.join(".git/HEAD"), "ref: main").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("scripts/run.sh"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
    }

    #[test]
    fn the_same_files_give_the_same_archive_whatever_their_times() {
        let dir = tempfile::tempdir().unwrap();
        skill(dir.path());
        let first = SkillPackage::from_dir(dir.path()).unwrap();
        let later = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30);
        for file in ["SKILL.md", "a.md", "b.md", "scripts/run.sh"] {
            std::fs::File::options()
                .write(true)
                .open(dir.path().join(file))
                .unwrap()
                .set_modified(later)
                .unwrap();
        }
        let second = SkillPackage::from_dir(dir.path()).unwrap();
        assert_eq!(first.archive, second.archive);
        assert_eq!(
            first.info,
            SkillInfo {
                name: Some("demo".into()),
                version: Some("2".into())
            }
        );

        std::fs::write(dir.path().join("a.md"), "A").unwrap();
        let changed = SkillPackage::from_dir(dir.path()).unwrap();
        assert_ne!(first.archive, changed.archive);
    }

    #[test]
    fn entries_are_sorted_with_fixed_modes_and_no_history() {
        let dir = tempfile::tempdir().unwrap();
        skill(dir.path());
        let package = SkillPackage::from_dir(dir.path()).unwrap();
        assert_eq!(package.files, 4);
        let mut zip = zip::ZipArchive::new(Cursor::new(package.archive)).unwrap();
        let mut in_order = Vec::new();
        for index in 0..zip.len() {
            let mut entry = zip.by_index(index).unwrap();
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            in_order.push((
                entry.name().unwrap().into_owned(),
                entry.unix_mode().map(|m| m & 0o777),
                entry.last_modified().map(|t| t.year()),
            ));
        }
        assert_eq!(
            in_order,
            vec![
                ("SKILL.md".into(), Some(0o644), Some(1980)),
                ("a.md".into(), Some(0o644), Some(1980)),
                ("b.md".into(), Some(0o644), Some(1980)),
                ("scripts/run.sh".into(), Some(0o755), Some(1980)),
            ]
        );
    }

    #[test]
    fn folders_without_skill_md_and_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = SkillPackage::from_dir(dir.path()).unwrap_err();
        assert!(matches!(err, SkillPackageError::NoSkillMd(_)), "{err}");
        assert!(err.to_string().contains("has no SKILL.md"), "{err}");

        skill(dir.path());
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("passwd")).unwrap();
        let err = SkillPackage::from_dir(dir.path()).unwrap_err();
        assert!(matches!(err, SkillPackageError::Symlink(_)), "{err}");
    }

    #[test]
    fn front_matter_is_optional_but_must_be_closed_and_valid() {
        assert_eq!(SkillInfo::parse("# Title\n").unwrap(), SkillInfo::default());
        assert_eq!(
            SkillInfo::parse("\u{feff}---\r\nname: x\r\nversion: 1.0.1\r\n---\r\nbody").unwrap(),
            SkillInfo {
                name: Some("x".into()),
                version: Some("1.0.1".into())
            }
        );
        assert!(
            SkillInfo::parse("---\nname: x\n")
                .unwrap_err()
                .contains("no closing")
        );
        assert!(
            SkillInfo::parse("---\nname: [x\n---\n")
                .unwrap_err()
                .contains("not valid YAML")
        );
        assert!(
            SkillInfo::parse("---\n- x\n---\n")
                .unwrap_err()
                .contains("mapping")
        );
    }
}
