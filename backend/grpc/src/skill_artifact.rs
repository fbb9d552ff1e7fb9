//! Inspection of a Skill artifact (a zip archive holding `SKILL.md`) before the server stores
//! it. Everything here treats the archive as hostile: sizes, names and headers are checked
//! first, then every entry is actually unpacked, within a budget, to a sink.
//!
//! `SKILL.md` must be named exactly that. A root `skill.md` in another letter case is refused
//! with its own message rather than accepted: readers of stored skills look up `SKILL.md` on
//! case-sensitive file systems, so accepting variants would only move the failure later.
//!
//! No entry may be an archive or a compressed file, known by its name or by its first bytes:
//! its contents would pass none of these checks, and a skill is instructions and scripts, so
//! refusing is simpler and safer than inspecting archives inside archives.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Cursor, Read, Write};

use sha2::{Digest as _, Sha256};
use zip::{CompressionMethod, ZipArchive};

const MIB: u64 = 1024 * 1024;

/// The name the artifact must carry at its root.
const SKILL_MD: &str = "SKILL.md";

/// `S_IFMT` and `S_IFLNK`, as stored in the high half of a zip entry's external attributes.
const S_IFMT: u32 = 0o170_000;
const S_IFLNK: u32 = 0o120_000;

/// Entries up to this size are not held to the compression-ratio limit.
const RATIO_EXEMPT_BYTES: u64 = 256 * 1024;

/// How much of each entry is kept to recognise archives: tar's magic sits at offset 257.
const HEAD_BYTES: usize = 512;

/// Signatures of archive and compression formats: (offset, bytes, format with its article).
const ARCHIVE_MAGIC: &[(usize, &[u8], &str)] = &[
    (0, b"PK\x03\x04", "a zip"),
    (0, b"PK\x05\x06", "a zip"),
    (0, b"PK\x07\x08", "a zip"),
    (0, b"\x1f\x8b", "a gzip"),
    (0, b"\x1f\x9d", "a compress (.Z)"),
    (0, b"\xfd7zXZ\x00", "an xz"),
    (0, b"\x28\xb5\x2f\xfd", "a zstd"),
    (0, b"7z\xbc\xaf\x27\x1c", "a 7z"),
    (0, b"Rar!\x1a\x07", "a rar"),
    (0, b"LZIP", "an lzip"),
    (0, b"\x04\x22\x4d\x18", "an lz4"),
    (0, b"MSCF\x00\x00\x00\x00", "a cab"),
    (0, b"!<arch>\n", "an ar (.deb)"),
    (0, b"\xed\xab\xee\xdb", "an rpm"),
    (257, b"ustar", "a tar"),
];

/// File-name endings of archive and compression formats, lowercase, without the dot.
const ARCHIVE_EXTENSIONS: &[&str] = &[
    "zip", "jar", "war", "ear", "apk", "aar", "whl", "egg", "nupkg", "tar", "gz", "tgz", "bz2",
    "tbz", "tbz2", "xz", "txz", "zst", "tzst", "7z", "rar", "lz", "lzma", "lz4", "cab", "deb",
    "rpm",
];

pub(crate) struct ArtifactLimits {
    pub max_archive_bytes: usize,
    pub max_entries: usize,
    pub max_unpacked_bytes: u64,
    /// Largest accepted `uncompressed : compressed` ratio of any one entry.
    pub max_ratio: u64,
    pub max_skill_md_bytes: usize,
}

impl Default for ArtifactLimits {
    fn default() -> Self {
        Self {
            max_archive_bytes: 8 * 1024 * 1024,
            max_entries: 1000,
            max_unpacked_bytes: 64 * MIB,
            max_ratio: 100,
            max_skill_md_bytes: 1024 * 1024,
        }
    }
}

/// What an accepted artifact turned out to hold.
#[derive(Debug)]
pub(crate) struct SkillArtifact {
    /// Lowercase hex SHA-256 of the archive bytes as received: the content address.
    pub sha256: String,
    pub skill_md: String,
    /// Entries in the archive, folders included.
    pub entries: usize,
    /// Bytes actually unpacked, over all entries.
    pub unpacked_bytes: u64,
}

/// Why an artifact was refused. Every message is meant for the client as is: it says what is
/// wrong and what is expected, and never echoes zip-library internals.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ArtifactError {
    #[error("the artifact is empty; send a zip archive that contains SKILL.md")]
    Empty,
    #[error("the artifact is {}; the limit is {}", Size(*.size), Size(*.limit))]
    ArchiveTooLarge { size: u64, limit: u64 },
    #[error("the artifact is not a zip archive; send a .zip file that contains SKILL.md")]
    NotZip,
    #[error("the archive has {count} entries; the limit is {limit}")]
    TooManyEntries { count: usize, limit: usize },
    #[error(
        "the entry {name:?} has an absolute path; paths must be relative to the archive root, \
         like \"docs/guide.md\""
    )]
    AbsolutePath { name: String },
    #[error("the entry {name:?} has a \"..\" segment; paths must stay inside the archive")]
    ParentDir { name: String },
    #[error("the entry {name:?} contains a backslash; separate folders with \"/\"")]
    Backslash { name: String },
    #[error(
        "the entry {name:?} starts with a drive letter; paths must be relative to the archive root"
    )]
    DriveLetter { name: String },
    #[error("the entry {name:?} contains a NUL character; file names must not contain NUL")]
    NulInName { name: String },
    #[error(
        "the entry {name:?} has an empty or \".\" path segment; write paths like \"docs/guide.md\""
    )]
    NonCanonicalPath { name: String },
    #[error(
        "the entry {name:?} is a symbolic link; the archive may hold only regular files and folders"
    )]
    Symlink { name: String },
    #[error("the archive lists the same file name more than once; every path must be unique")]
    DuplicateNames,
    #[error(
        "the entries {first:?} and {second:?} differ only in letter case; rename one so they \
         cannot collide on case-insensitive file systems"
    )]
    CaseCollision { first: String, second: String },
    #[error("the entry {name:?} is encrypted; send an archive made without a password")]
    Encrypted { name: String },
    #[error(
        "the entry {name:?} uses compression method {method}; only Stored and Deflated are \
         supported"
    )]
    UnsupportedCompression { name: String, method: String },
    #[error(
        "the entry {name:?} claims to unpack {} from {}, more than {limit}:1; such archives \
         are refused as possible zip bombs",
        Size(*.size), Size(*.compressed)
    )]
    RatioTooHigh {
        name: String,
        size: u64,
        compressed: u64,
        limit: u64,
    },
    #[error("the archive unpacks to {}; the limit is {}", Size(*.size), Size(*.limit))]
    UnpackedTooLarge { size: u64, limit: u64 },
    #[error(
        "the entry {name:?} unpacks to more than the archive declares, past the {} limit; \
         re-create the archive",
        Size(*.limit)
    )]
    OverBudget { name: String, limit: u64 },
    #[error(
        "the entry {name:?} is damaged: its content does not match the size or checksum \
         recorded in the archive; re-create the archive"
    )]
    CorruptEntry { name: String },
    #[error(
        "the archive has no SKILL.md at its root; put SKILL.md next to the other files, not in \
         a folder"
    )]
    NoSkillMd,
    #[error(
        "the archive has no SKILL.md at its root, only {path:?}; zip the contents of that \
         folder, not the folder itself"
    )]
    SkillMdInFolder { path: String },
    #[error("the archive has {name:?}; the file must be named exactly \"SKILL.md\"")]
    SkillMdWrongCase { name: String },
    #[error("SKILL.md is {}; the limit is {}", Size(*.size), Size(*.limit))]
    SkillMdTooLarge { size: u64, limit: u64 },
    #[error("SKILL.md is not valid UTF-8 text; save it as UTF-8")]
    SkillMdNotUtf8,
    #[error("SKILL.md is empty; it must describe the skill")]
    SkillMdEmpty,
    #[error(
        "the entry {name:?} is {format} archive or compressed file; a skill may not contain \
         archives (zip-based files like .jar or .docx included), since their contents would \
         escape these checks: add the files themselves, unpacked"
    )]
    NestedArchive { name: String, format: String },
}

/// Checks `archive` against `limits` and returns its `SKILL.md`; nothing is written anywhere.
pub(crate) fn inspect(
    archive: &[u8],
    limits: &ArtifactLimits,
) -> Result<SkillArtifact, ArtifactError> {
    check_archive_size(archive, limits)?;
    let mut zip = ZipArchive::new(Cursor::new(archive)).map_err(|_| ArtifactError::NotZip)?;
    if zip.len() > limits.max_entries {
        return Err(ArtifactError::TooManyEntries {
            count: zip.len(),
            limit: limits.max_entries,
        });
    }
    let names = check_entries(&zip, limits)?;
    let skill_index = find_skill_md(&zip, &names, limits)?;
    let (skill_md, unpacked_bytes) = unpack_all(&mut zip, &names, skill_index, limits)?;
    Ok(SkillArtifact {
        sha256: hex::encode(&Sha256::digest(archive)[..]),
        skill_md: skill_md_text(skill_md)?,
        entries: names.len(),
        unpacked_bytes,
    })
}

fn check_archive_size(archive: &[u8], limits: &ArtifactLimits) -> Result<(), ArtifactError> {
    if archive.is_empty() {
        return Err(ArtifactError::Empty);
    }
    if archive.len() > limits.max_archive_bytes {
        return Err(ArtifactError::ArchiveTooLarge {
            size: to_u64(archive.len()),
            limit: to_u64(limits.max_archive_bytes),
        });
    }
    Ok(())
}

type Zip<'a> = ZipArchive<Cursor<&'a [u8]>>;

/// Checks every entry's name, kind and declared sizes, from the central directory alone, and
/// returns the names in archive order.
fn check_entries(zip: &Zip<'_>, limits: &ArtifactLimits) -> Result<Vec<String>, ArtifactError> {
    // The zip crate indexes entries by name, so a repeated name is only visible here.
    if zip.has_duplicate_names() {
        return Err(ArtifactError::DuplicateNames);
    }
    let mut names: Vec<String> = Vec::with_capacity(zip.len());
    let mut by_folded_name: HashMap<String, usize> = HashMap::with_capacity(zip.len());
    let mut declared_total = 0u64;
    for index in 0..zip.len() {
        let entry = zip
            .by_index_data(index)
            .map_err(|_| ArtifactError::NotZip)?;
        let name = entry
            .name()
            .map_err(|_| ArtifactError::NotZip)?
            .into_owned();
        check_path(&name)?;
        check_kind(&entry, &name)?;
        check_archive_name(&name)?;
        declared_total = declared_total.saturating_add(declared_size(&entry, &name, limits)?);
        let folded = name.trim_end_matches('/').to_lowercase();
        if let Some(&first) = by_folded_name.get(&folded) {
            let first = names[first].clone();
            return Err(ArtifactError::CaseCollision {
                first,
                second: name,
            });
        }
        by_folded_name.insert(folded, index);
        names.push(name);
    }
    if declared_total > limits.max_unpacked_bytes {
        return Err(ArtifactError::UnpackedTooLarge {
            size: declared_total,
            limit: limits.max_unpacked_bytes,
        });
    }
    Ok(names)
}

/// Refuses names that could land outside the folder the archive is unpacked into, or that
/// unpack differently on different systems.
fn check_path(name: &str) -> Result<(), ArtifactError> {
    let owned = || name.to_owned();
    let bytes = name.as_bytes();
    if name.contains('\0') {
        return Err(ArtifactError::NulInName { name: owned() });
    }
    if name.contains('\\') {
        return Err(ArtifactError::Backslash { name: owned() });
    }
    if name.starts_with('/') {
        return Err(ArtifactError::AbsolutePath { name: owned() });
    }
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err(ArtifactError::DriveLetter { name: owned() });
    }
    // A trailing `/` marks a folder entry; any other empty segment is a trick or a mistake.
    let segments = name.strip_suffix('/').unwrap_or(name).split('/');
    let mut non_canonical = false;
    for segment in segments {
        if segment == ".." {
            return Err(ArtifactError::ParentDir { name: owned() });
        }
        non_canonical |= segment.is_empty() || segment == ".";
    }
    if non_canonical {
        return Err(ArtifactError::NonCanonicalPath { name: owned() });
    }
    Ok(())
}

fn check_kind(entry: &zip::read::ZipFileEntry<'_>, name: &str) -> Result<(), ArtifactError> {
    // The mode bits are checked whatever host the archive claims to come from: Unix unzip
    // tools honour them and that is where a link would do harm.
    if (entry.external_attributes() >> 16) & S_IFMT == S_IFLNK {
        return Err(ArtifactError::Symlink {
            name: name.to_owned(),
        });
    }
    if entry.encrypted() {
        return Err(ArtifactError::Encrypted {
            name: name.to_owned(),
        });
    }
    let method = entry.compression();
    if !matches!(
        method,
        CompressionMethod::Stored | CompressionMethod::Deflated
    ) {
        return Err(ArtifactError::UnsupportedCompression {
            name: name.to_owned(),
            method: method_label(method),
        });
    }
    Ok(())
}

/// Refuses a file named like an archive, before any content is read: the name alone promises
/// an archive to whoever unpacks the skill.
fn check_archive_name(name: &str) -> Result<(), ArtifactError> {
    if name.ends_with('/') {
        return Ok(());
    }
    let file = name.rsplit_once('/').map_or(name, |(_, file)| file);
    let Some((_, extension)) = file.rsplit_once('.') else {
        return Ok(());
    };
    let extension = extension.to_ascii_lowercase();
    if ARCHIVE_EXTENSIONS.contains(&extension.as_str()) {
        return Err(ArtifactError::NestedArchive {
            name: name.to_owned(),
            format: format!("a .{extension}"),
        });
    }
    Ok(())
}

/// Refuses an entry whose first bytes are an archive's signature, whatever its name.
fn check_archive_content(name: &str, head: &[u8]) -> Result<(), ArtifactError> {
    let found = ARCHIVE_MAGIC.iter().find(|(offset, magic, _)| {
        head.get(*offset..offset.saturating_add(magic.len())) == Some(*magic)
    });
    let bzip2 = head.len() >= 4 && head.starts_with(b"BZh") && matches!(head[3], b'1'..=b'9');
    let format = match (found, bzip2) {
        (Some((_, _, format)), _) => *format,
        (None, true) => "a bzip2",
        (None, false) => return Ok(()),
    };
    Err(ArtifactError::NestedArchive {
        name: name.to_owned(),
        format: format.to_owned(),
    })
}

/// `12 (Bzip2)`: the number is what a client can look up when the name is `Unknown`.
fn method_label(method: CompressionMethod) -> String {
    #[allow(
        deprecated,
        reason = "the only public way to read the raw method number"
    )]
    let number = method.to_u16();
    format!("{number} ({method})")
}

fn declared_size(
    entry: &zip::read::ZipFileEntry<'_>,
    name: &str,
    limits: &ArtifactLimits,
) -> Result<u64, ArtifactError> {
    let (size, compressed) = (entry.size(), entry.compressed_size());
    // Small files of repeated lines compress past any ratio and are harmless; the ratio only
    // guards against entries large enough to matter (the total budget covers the rest).
    if size > RATIO_EXEMPT_BYTES && size > compressed.saturating_mul(limits.max_ratio) {
        return Err(ArtifactError::RatioTooHigh {
            name: name.to_owned(),
            size,
            compressed,
            limit: limits.max_ratio,
        });
    }
    Ok(size)
}

/// Index of the root `SKILL.md`, or the most helpful refusal when there is none.
fn find_skill_md(
    zip: &Zip<'_>,
    names: &[String],
    limits: &ArtifactLimits,
) -> Result<usize, ArtifactError> {
    let Some(index) = names.iter().position(|name| name == SKILL_MD) else {
        return Err(missing_skill_md(names));
    };
    let size = zip
        .by_index_data(index)
        .map_err(|_| ArtifactError::NotZip)?
        .size();
    if size > to_u64(limits.max_skill_md_bytes) {
        return Err(ArtifactError::SkillMdTooLarge {
            size,
            limit: to_u64(limits.max_skill_md_bytes),
        });
    }
    Ok(index)
}

fn missing_skill_md(names: &[String]) -> ArtifactError {
    let is_skill_md = |file: &str| file.eq_ignore_ascii_case(SKILL_MD);
    if let Some(name) = names.iter().find(|name| is_skill_md(name)) {
        return ArtifactError::SkillMdWrongCase { name: name.clone() };
    }
    let nested = names.iter().find(|name| {
        name.rsplit_once('/')
            .is_some_and(|(_, file)| is_skill_md(file))
    });
    match nested {
        Some(path) => ArtifactError::SkillMdInFolder { path: path.clone() },
        None => ArtifactError::NoSkillMd,
    }
}

/// Unpacks every entry, keeping only `SKILL.md`. Declared sizes were checked already, but they
/// are the archive's word: the real output is what is counted against the budget. Reading to
/// the end also makes the zip crate verify each entry's CRC.
fn unpack_all(
    zip: &mut Zip<'_>,
    names: &[String],
    skill_index: usize,
    limits: &ArtifactLimits,
) -> Result<(Vec<u8>, u64), ArtifactError> {
    let mut skill_md = Vec::new();
    let mut unpacked = 0u64;
    for (index, name) in names.iter().enumerate() {
        let corrupt = || ArtifactError::CorruptEntry { name: name.clone() };
        let budget = limits.max_unpacked_bytes.saturating_sub(unpacked);
        let mut entry = zip.by_index(index).map_err(|_| corrupt())?;
        let mut head = Head::default();
        let read = if index == skill_index {
            let cap = budget.min(to_u64(limits.max_skill_md_bytes));
            copy_capped(&mut entry, cap, &mut skill_md)
        } else {
            copy_capped(&mut entry, budget, &mut head)
        };
        let read = match read {
            Ok(read) => read,
            Err(Capped::Io) => return Err(corrupt()),
            Err(Capped::Over(read))
                if index == skill_index && budget > to_u64(limits.max_skill_md_bytes) =>
            {
                return Err(ArtifactError::SkillMdTooLarge {
                    size: read,
                    limit: to_u64(limits.max_skill_md_bytes),
                });
            }
            Err(Capped::Over(_)) => {
                return Err(ArtifactError::OverBudget {
                    name: name.clone(),
                    limit: limits.max_unpacked_bytes,
                });
            }
        };
        // SKILL.md is checked too: it must be text, and an archive under that name is not.
        let head = if index == skill_index {
            &skill_md
        } else {
            &head.0
        };
        check_archive_content(name, head)?;
        unpacked += read;
    }
    Ok((skill_md, unpacked))
}

/// A sink that keeps the first `HEAD_BYTES` written to it.
#[derive(Default)]
struct Head(Vec<u8>);

impl Write for Head {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = HEAD_BYTES.saturating_sub(self.0.len());
        self.0.extend_from_slice(&buf[..room.min(buf.len())]);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Capped {
    /// The reader produced more than the cap; the value is what was read before stopping.
    Over(u64),
    /// The reader failed: bad deflate data, a CRC mismatch, or more than the declared size.
    Io,
}

/// Copies `reader` to `out` but reads at most one byte past `cap`, so an entry that lies about
/// its size costs no more than the budget before it is refused.
fn copy_capped(reader: impl Read, cap: u64, out: &mut impl Write) -> Result<u64, Capped> {
    let read = io::copy(&mut reader.take(cap.saturating_add(1)), out).map_err(|_| Capped::Io)?;
    if read > cap {
        return Err(Capped::Over(read));
    }
    Ok(read)
}

fn skill_md_text(bytes: Vec<u8>) -> Result<String, ArtifactError> {
    let text = String::from_utf8(bytes).map_err(|_| ArtifactError::SkillMdNotUtf8)?;
    // A byte-order mark alone is no content either.
    if text
        .trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}')
        .is_empty()
    {
        return Err(ArtifactError::SkillMdEmpty);
    }
    Ok(text)
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// A byte count for people: `512 bytes`, `3.2 KiB`, `9.5 MiB`. Rounds up, so a size just over
/// a limit never prints as equal to it.
struct Size(u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (unit, scale) = match self.0 {
            n if n >= MIB => ("MiB", MIB),
            n if n >= 1024 => ("KiB", 1024),
            n => return write!(f, "{n} bytes"),
        };
        let tenths = self.0.saturating_mul(10).div_ceil(scale);
        match tenths % 10 {
            0 => write!(f, "{} {unit}", tenths / 10),
            rest => write!(f, "{}.{rest} {unit}", tenths / 10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::ZipWriter;
    use zip::write::SimpleFileOptions;

    const SKILL: &[u8] = b"---\nname: greet\n---\nSay hello.\n";

    fn options(method: CompressionMethod) -> SimpleFileOptions {
        SimpleFileOptions::default().compression_method(method)
    }

    /// An archive of `(name, content, method)` files, in order.
    fn zip_of(files: &[(&str, &[u8], CompressionMethod)]) -> Vec<u8> {
        let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
        for (name, content, method) in files {
            writer.start_file(*name, options(*method)).unwrap();
            writer.write_all(content).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    /// A valid skill plus one more file.
    fn skill_with(name: &str, content: &[u8], method: CompressionMethod) -> Vec<u8> {
        zip_of(&[
            (SKILL_MD, SKILL, CompressionMethod::Stored),
            (name, content, method),
        ])
    }

    fn check(archive: &[u8]) -> Result<SkillArtifact, ArtifactError> {
        inspect(archive, &ArtifactLimits::default())
    }

    /// Offsets of the local (`PK\3\4`) and central (`PK\1\2`) headers of `name`.
    fn headers_of(bytes: &[u8], name: &str) -> (Vec<usize>, Vec<usize>) {
        let u16_at = |at: usize| usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]));
        let named = |at: usize, len_at: usize, name_at: usize| {
            bytes.len() > at + name_at
                && u16_at(at + len_at) == name.len()
                && bytes.get(at + name_at..at + name_at + name.len()) == Some(name.as_bytes())
        };
        let starts = |sig: &[u8]| -> Vec<usize> {
            (0..bytes.len().saturating_sub(4))
                .filter(|&at| &bytes[at..at + 4] == sig)
                .collect()
        };
        let local = starts(b"PK\x03\x04")
            .into_iter()
            .filter(|&at| named(at, 26, 30))
            .collect();
        let central = starts(b"PK\x01\x02")
            .into_iter()
            .filter(|&at| named(at, 28, 46))
            .collect();
        (local, central)
    }

    /// Overwrites one field of `name` in both its local and its central header, so the two
    /// agree and only the content can give the lie away.
    fn patch(bytes: &mut [u8], name: &str, local_field: usize, central_field: usize, value: &[u8]) {
        let (local, central) = headers_of(bytes, name);
        assert_eq!((local.len(), central.len()), (1, 1), "headers of {name}");
        let at = local[0] + local_field;
        bytes[at..at + value.len()].copy_from_slice(value);
        let at = central[0] + central_field;
        bytes[at..at + value.len()].copy_from_slice(value);
    }

    fn replace_all(bytes: &mut [u8], from: &[u8], to: &[u8]) {
        assert_eq!(from.len(), to.len());
        let mut found = 0;
        for at in 0..=bytes.len() - from.len() {
            if &bytes[at..at + from.len()] == from {
                bytes[at..at + to.len()].copy_from_slice(to);
                found += 1;
            }
        }
        assert!(found > 0, "pattern not found");
    }

    #[test]
    fn valid_skill_is_accepted() {
        let guide = "# Guide\n".repeat(200);
        let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
        writer
            .start_file(SKILL_MD, options(CompressionMethod::Stored))
            .unwrap();
        writer.write_all(SKILL).unwrap();
        writer
            .add_directory("docs/", SimpleFileOptions::default())
            .unwrap();
        writer
            .start_file("docs/guide.md", options(CompressionMethod::Deflated))
            .unwrap();
        writer.write_all(guide.as_bytes()).unwrap();
        let archive = writer.finish().unwrap().into_inner();

        let artifact = check(&archive).unwrap();
        assert_eq!(artifact.sha256, hex::encode(&Sha256::digest(&archive)[..]));
        assert_eq!(artifact.sha256.len(), 64);
        assert!(
            artifact
                .sha256
                .chars()
                .all(|c| matches!(c, '0'..='9' | 'a'..='f'))
        );
        assert_eq!(artifact.skill_md.as_bytes(), SKILL);
        assert_eq!(artifact.entries, 3);
        assert_eq!(artifact.unpacked_bytes, to_u64(SKILL.len() + guide.len()));
    }

    #[test]
    fn empty_input_is_refused() {
        assert_eq!(check(b"").unwrap_err(), ArtifactError::Empty);
    }

    #[test]
    fn oversized_archive_is_refused_before_parsing() {
        let archive = vec![0u8; 9 * 1024 * 1024 + 512 * 1024];
        let err = check(&archive).unwrap_err();
        assert_eq!(
            err,
            ArtifactError::ArchiveTooLarge {
                size: 9_961_472,
                limit: 8 * MIB
            }
        );
        assert_eq!(
            err.to_string(),
            "the artifact is 9.5 MiB; the limit is 8 MiB"
        );
    }

    #[test]
    fn non_zip_is_refused_plainly() {
        let err = check(b"just some text, not an archive").unwrap_err();
        assert_eq!(err, ArtifactError::NotZip);
        assert_eq!(
            err.to_string(),
            "the artifact is not a zip archive; send a .zip file that contains SKILL.md"
        );
    }

    #[test]
    fn too_many_entries_are_refused() {
        let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
        writer
            .start_file(SKILL_MD, options(CompressionMethod::Stored))
            .unwrap();
        writer.write_all(SKILL).unwrap();
        for i in 1..10_000 {
            writer
                .start_file(format!("f/{i}"), options(CompressionMethod::Stored))
                .unwrap();
        }
        let archive = writer.finish().unwrap().into_inner();
        let err = check(&archive).unwrap_err();
        assert_eq!(
            err,
            ArtifactError::TooManyEntries {
                count: 10_000,
                limit: 1000
            }
        );
        assert_eq!(
            err.to_string(),
            "the archive has 10000 entries; the limit is 1000"
        );
    }

    #[test]
    fn path_tricks_are_refused() {
        type Make = fn(String) -> ArtifactError;
        let cases: [(&str, Make); 10] = [
            ("/etc/passwd", |name| ArtifactError::AbsolutePath { name }),
            ("../evil.sh", |name| ArtifactError::ParentDir { name }),
            ("docs/../../evil.sh", |name| ArtifactError::ParentDir {
                name,
            }),
            ("docs\\guide.md", |name| ArtifactError::Backslash { name }),
            ("C:/Windows/evil.dll", |name| ArtifactError::DriveLetter {
                name,
            }),
            ("c:evil", |name| ArtifactError::DriveLetter { name }),
            ("evil\0.md", |name| ArtifactError::NulInName { name }),
            ("./SKILL.md", |name| ArtifactError::NonCanonicalPath {
                name,
            }),
            ("docs//guide.md", |name| ArtifactError::NonCanonicalPath {
                name,
            }),
            ("", |name| ArtifactError::NonCanonicalPath { name }),
        ];
        for (name, expected) in cases {
            let archive = skill_with(name, b"x", CompressionMethod::Stored);
            assert_eq!(
                check(&archive).unwrap_err(),
                expected(name.to_owned()),
                "{name:?}"
            );
        }
    }

    #[test]
    fn path_messages_say_what_is_expected() {
        let archive = skill_with("../evil.sh", b"x", CompressionMethod::Stored);
        assert_eq!(
            check(&archive).unwrap_err().to_string(),
            "the entry \"../evil.sh\" has a \"..\" segment; paths must stay inside the archive"
        );
    }

    #[test]
    fn symlinks_are_refused() {
        let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
        writer
            .start_file(SKILL_MD, options(CompressionMethod::Stored))
            .unwrap();
        writer.write_all(SKILL).unwrap();
        writer
            .add_symlink("passwd", "/etc/passwd", SimpleFileOptions::default())
            .unwrap();
        let archive = writer.finish().unwrap().into_inner();
        assert_eq!(
            check(&archive).unwrap_err(),
            ArtifactError::Symlink {
                name: "passwd".into()
            }
        );

        // The same mode bits on a Deflated entry written as an ordinary file.
        let link_mode = options(CompressionMethod::Deflated).external_attributes(0o120_777 << 16);
        let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
        writer
            .start_file(SKILL_MD, options(CompressionMethod::Stored))
            .unwrap();
        writer.write_all(SKILL).unwrap();
        writer.start_file("link", link_mode).unwrap();
        writer.write_all(b"../../etc/shadow").unwrap();
        let archive = writer.finish().unwrap().into_inner();
        assert_eq!(
            check(&archive).unwrap_err(),
            ArtifactError::Symlink {
                name: "link".into()
            }
        );
    }

    #[test]
    fn duplicate_names_are_refused() {
        // ZipWriter refuses duplicates, so rename the second entry in place.
        let mut archive = zip_of(&[
            (SKILL_MD, SKILL, CompressionMethod::Stored),
            ("a.txt", b"first", CompressionMethod::Stored),
            ("b.txt", b"second", CompressionMethod::Stored),
        ]);
        replace_all(&mut archive, b"b.txt", b"a.txt");
        assert_eq!(check(&archive).unwrap_err(), ArtifactError::DuplicateNames);
    }

    #[test]
    fn names_differing_only_in_case_are_refused() {
        let archive = zip_of(&[
            (SKILL_MD, SKILL, CompressionMethod::Stored),
            ("README.md", b"one", CompressionMethod::Stored),
            ("readme.md", b"two", CompressionMethod::Stored),
        ]);
        assert_eq!(
            check(&archive).unwrap_err(),
            ArtifactError::CaseCollision {
                first: "README.md".into(),
                second: "readme.md".into()
            }
        );
    }

    #[test]
    fn encrypted_entries_are_refused() {
        let mut archive = skill_with("secret.txt", b"hidden", CompressionMethod::Stored);
        // General-purpose flag bit 0: "encrypted".
        patch(&mut archive, "secret.txt", 6, 8, &[0x01]);
        assert_eq!(
            check(&archive).unwrap_err(),
            ArtifactError::Encrypted {
                name: "secret.txt".into()
            }
        );
    }

    #[test]
    fn unsupported_compression_is_named() {
        let mut archive = skill_with("data.bin", b"data", CompressionMethod::Stored);
        patch(&mut archive, "data.bin", 8, 10, &12u16.to_le_bytes());
        let err = check(&archive).unwrap_err();
        assert_eq!(
            err,
            ArtifactError::UnsupportedCompression {
                name: "data.bin".into(),
                method: "12 (Bzip2)".into()
            }
        );
        assert!(
            err.to_string().contains("compression method 12 (Bzip2)"),
            "{err}"
        );
    }

    #[test]
    fn declared_total_over_the_limit_is_refused() {
        let archive = zip_of(&[
            (SKILL_MD, SKILL, CompressionMethod::Stored),
            ("a.bin", &[7u8; 600], CompressionMethod::Stored),
            ("b.bin", &[7u8; 600], CompressionMethod::Stored),
        ]);
        let limits = ArtifactLimits {
            max_unpacked_bytes: 1000,
            ..ArtifactLimits::default()
        };
        assert_eq!(
            inspect(&archive, &limits).unwrap_err(),
            ArtifactError::UnpackedTooLarge {
                size: to_u64(SKILL.len()) + 1200,
                limit: 1000
            }
        );
    }

    #[test]
    fn high_ratio_entry_is_refused() {
        let archive = skill_with(
            "zeros.bin",
            &vec![0u8; 1024 * 1024],
            CompressionMethod::Deflated,
        );
        match check(&archive).unwrap_err() {
            ArtifactError::RatioTooHigh {
                name,
                size,
                compressed,
                limit,
            } => {
                assert_eq!(
                    (name.as_str(), size, limit),
                    ("zeros.bin", 1024 * 1024, 100)
                );
                assert!(size > compressed * 100);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A bomb whose headers lie: 16 MiB of zeros deflate to ~16 KiB, and both headers are
    /// patched to claim 1 KiB, so every declared check (total, ratio) passes. Only reading the
    /// data exposes it. zip 9 itself stops a read once it passes the declared size, which is
    /// why this surfaces as a damaged entry rather than `OverBudget`; `copy_capped_stops_*`
    /// shows our own cap on its own, for a zip reader that would not stop.
    #[test]
    fn bomb_with_lying_sizes_is_refused_on_read() {
        let mut archive = skill_with(
            "zeros.bin",
            &vec![0u8; 16 * 1024 * 1024],
            CompressionMethod::Deflated,
        );
        patch(&mut archive, "zeros.bin", 22, 24, &1024u32.to_le_bytes());
        let limits = ArtifactLimits {
            max_unpacked_bytes: MIB,
            ..ArtifactLimits::default()
        };
        assert_eq!(
            inspect(&archive, &limits).unwrap_err(),
            ArtifactError::CorruptEntry {
                name: "zeros.bin".into()
            }
        );
    }

    #[test]
    fn copy_capped_stops_one_byte_past_the_cap() {
        let mut source = io::repeat(0).take(10 * MIB);
        let err = copy_capped(&mut source, 1000, &mut io::sink()).unwrap_err();
        assert_eq!(err, Capped::Over(1001));
        assert_eq!(source.limit(), 10 * MIB - 1001, "read past the cap");

        let mut out = Vec::new();
        assert_eq!(copy_capped(&b"abc"[..], 3, &mut out), Ok(3));
        assert_eq!(out, b"abc");
    }

    #[test]
    fn crc_mismatch_is_refused() {
        let mut archive = skill_with("notes.txt", b"original text", CompressionMethod::Stored);
        replace_all(&mut archive, b"original text", b"tampered text");
        assert_eq!(
            check(&archive).unwrap_err(),
            ArtifactError::CorruptEntry {
                name: "notes.txt".into()
            }
        );
    }

    #[test]
    fn missing_skill_md_is_explained() {
        let archive = zip_of(&[("README.md", b"hi", CompressionMethod::Stored)]);
        let err = check(&archive).unwrap_err();
        assert_eq!(err, ArtifactError::NoSkillMd);
        assert_eq!(
            err.to_string(),
            "the archive has no SKILL.md at its root; put SKILL.md next to the other files, not \
             in a folder"
        );

        let archive = zip_of(&[("greet/SKILL.md", SKILL, CompressionMethod::Stored)]);
        assert_eq!(
            check(&archive).unwrap_err(),
            ArtifactError::SkillMdInFolder {
                path: "greet/SKILL.md".into()
            }
        );

        let archive = zip_of(&[("skill.md", SKILL, CompressionMethod::Stored)]);
        assert_eq!(
            check(&archive).unwrap_err(),
            ArtifactError::SkillMdWrongCase {
                name: "skill.md".into()
            }
        );
    }

    #[test]
    fn skill_md_must_be_utf8_text() {
        let archive = zip_of(&[(SKILL_MD, b"caf\xe9", CompressionMethod::Deflated)]);
        assert_eq!(check(&archive).unwrap_err(), ArtifactError::SkillMdNotUtf8);

        let archive = zip_of(&[(SKILL_MD, b" \n\t\r\n", CompressionMethod::Stored)]);
        assert_eq!(check(&archive).unwrap_err(), ArtifactError::SkillMdEmpty);
    }

    #[test]
    fn skill_md_over_its_limit_is_refused() {
        let archive = zip_of(&[(SKILL_MD, SKILL, CompressionMethod::Deflated)]);
        let limits = ArtifactLimits {
            max_skill_md_bytes: 10,
            ..ArtifactLimits::default()
        };
        let err = inspect(&archive, &limits).unwrap_err();
        assert_eq!(
            err,
            ArtifactError::SkillMdTooLarge {
                size: to_u64(SKILL.len()),
                limit: 10
            }
        );
        assert_eq!(
            err.to_string(),
            "SKILL.md is 31 bytes; the limit is 10 bytes"
        );
    }

    #[test]
    fn archive_named_entries_are_refused() {
        let inner = zip_of(&[(SKILL_MD, SKILL, CompressionMethod::Stored)]);
        for name in [
            "tools.zip",
            "lib/helper.JAR",
            "data/dump.tar.gz",
            "x.tgz",
            "a.7z",
        ] {
            let archive = skill_with(name, &inner, CompressionMethod::Deflated);
            match check(&archive).unwrap_err() {
                ArtifactError::NestedArchive { name: named, .. } => assert_eq!(named, name),
                other => panic!("{name}: unexpected {other:?}"),
            }
        }
        let err = check(&skill_with("tools.zip", &inner, CompressionMethod::Stored)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the entry \"tools.zip\" is a .zip archive or compressed file; a skill may not \
             contain archives (zip-based files like .jar or .docx included), since their \
             contents would escape these checks: add the files themselves, unpacked"
        );
    }

    /// A renamed archive is known by its first bytes; the content here only needs the
    /// signature, since nothing tries to unpack it.
    #[test]
    fn archives_under_other_names_are_refused_by_content() {
        let inner_zip = zip_of(&[("evil.sh", b"rm -rf ~", CompressionMethod::Deflated)]);
        let mut tar = vec![0u8; 1024];
        tar[..7].copy_from_slice(b"evil.sh");
        tar[257..263].copy_from_slice(b"ustar\0");
        let cases: [(&[u8], &str); 8] = [
            (&inner_zip, "a zip"),
            (b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", "a zip"),
            (b"\x1f\x8b\x08\0\0\0\0\0\0\x03", "a gzip"),
            (b"BZh91AY&SY", "a bzip2"),
            (b"\xfd7zXZ\0\0\x04", "an xz"),
            (b"7z\xbc\xaf\x27\x1c\0\x04", "a 7z"),
            (b"Rar!\x1a\x07\x01\0", "a rar"),
            (&tar, "a tar"),
        ];
        for (content, format) in cases {
            for method in [CompressionMethod::Stored, CompressionMethod::Deflated] {
                let archive = skill_with("notes.txt", content, method);
                assert_eq!(
                    check(&archive).unwrap_err(),
                    ArtifactError::NestedArchive {
                        name: "notes.txt".into(),
                        format: format.into()
                    },
                    "{format} {method:?}"
                );
            }
        }
    }

    #[test]
    fn skill_md_holding_an_archive_is_refused() {
        let inner = zip_of(&[("a.txt", b"a", CompressionMethod::Stored)]);
        let archive = zip_of(&[(SKILL_MD, &inner, CompressionMethod::Stored)]);
        assert_eq!(
            check(&archive).unwrap_err(),
            ArtifactError::NestedArchive {
                name: SKILL_MD.into(),
                format: "a zip".into()
            }
        );
    }

    #[test]
    fn lookalike_names_and_contents_are_accepted() {
        let archive = zip_of(&[
            (SKILL_MD, SKILL, CompressionMethod::Stored),
            (
                "zip.md",
                b"PK is how the zip format starts",
                CompressionMethod::Stored,
            ),
            (
                "gzip/notes",
                b"BZh is bzip2, BZh9 with a digit",
                CompressionMethod::Stored,
            ),
            ("archive.zip/", b"", CompressionMethod::Stored),
            (
                "scripts/unpack.sh",
                b"tar xzf \"$1\"\n",
                CompressionMethod::Deflated,
            ),
            ("Makefile", b"", CompressionMethod::Stored),
        ]);
        assert_eq!(check(&archive).unwrap().entries, 6);
    }

    #[test]
    fn sizes_read_well_and_round_up() {
        assert_eq!(Size(512).to_string(), "512 bytes");
        assert_eq!(Size(1024).to_string(), "1 KiB");
        assert_eq!(Size(3 * 1024 + 200).to_string(), "3.2 KiB");
        assert_eq!(Size(8 * MIB).to_string(), "8 MiB");
        assert_eq!(Size(8 * MIB + 1).to_string(), "8.1 MiB");
    }
}
