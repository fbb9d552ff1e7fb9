use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

use crate::key::is_key_id;
use crate::{KEY_ID_LEN, KEY_LEN};
use crate::{Keyring, MasterKey, SecretError, wipe_string};

const HEADER: &str = "\
# Stigmer master keys. Keep this file secret (mode 0600) and back it up together with the
# database: without it the sealed secrets in the database cannot be read.
# One key per line, \"<key id> <base64 key>\". The first key seals new values; the others only
# open values sealed before a key rotation.
";

/// Where [`load_keyring`] found the master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// From `STIGMER_MASTER_KEY`; the key file was not consulted.
    Environment,
    /// From an existing key file.
    File,
    /// A new key was generated and a new key file (or keychain entry) written.
    Created,
    /// From the OS keychain.
    Keychain,
    /// From the key file, now copied into the OS keychain: the file can go.
    MovedToKeychain,
}

/// The key file kept next to the database.
///
/// Format: UTF-8 text, one key per line as `<key id> <base64 key>` (the id is 16 lowercase hex
/// characters, the key standard base64 of 32 bytes); the first key line is the current key, the
/// following ones are older keys kept to open values sealed before a rotation. Blank lines and
/// lines starting with `#` are ignored.
#[derive(Debug)]
pub struct KeyFile;

impl KeyFile {
    /// Reads a keyring from `path`.
    ///
    /// # Errors
    /// [`SecretError::KeyFileIo`] if it cannot be read (including when it does not exist),
    /// [`SecretError::KeyFilePermissions`] if group or others have any access to it,
    /// [`SecretError::KeyFileLine`] for a line that does not parse or whose id does not match
    /// its key, [`SecretError::KeyFileEmpty`] if it holds no key.
    pub fn load(path: impl AsRef<Path>) -> Result<Keyring, SecretError> {
        let path = path.as_ref();
        read(path)?.ok_or_else(|| SecretError::KeyFileIo {
            action: "open",
            path: path.to_owned(),
            source: io::ErrorKind::NotFound.into(),
        })
    }

    /// Writes `keyring` to `path` atomically with mode 0600, replacing any existing file: a
    /// crash leaves either the old file or the new one, never a partial key.
    ///
    /// # Errors
    /// [`SecretError::KeyFileIo`] if the file cannot be written, synced or renamed into place.
    pub fn write(path: impl AsRef<Path>, keyring: &Keyring) -> Result<(), SecretError> {
        let path = path.as_ref();
        let temp = write_temp(path, keyring)?;
        if let Err(source) = fs::rename(&temp, path) {
            // Best effort: the temp file holds keys, but the rename error is the one to report.
            let _ = fs::remove_file(&temp);
            return Err(io_error("replace", path, source));
        }
        sync_dir(path)
    }
}

/// Finds the master keys for a server.
///
/// `env_key` (the value of `STIGMER_MASTER_KEY`), when given, is the only key and the key file is
/// not consulted. Otherwise the key file is loaded; if it does not exist, a new key is generated
/// and written to it when `create_if_missing` is set (pass `false` when the database already
/// holds sealed values, as a new key could never open them).
///
/// # Errors
/// Those of [`MasterKey::from_base64`] for a bad `env_key`, of [`KeyFile::load`] and
/// [`KeyFile::write`], and [`SecretError::MissingMasterKey`] when there is no key and
/// `create_if_missing` is false.
pub fn load_keyring(
    env_key: Option<&str>,
    key_file: &Path,
    create_if_missing: bool,
) -> Result<(Keyring, KeySource), SecretError> {
    if let Some(text) = env_key {
        let key = MasterKey::from_base64(text)?;
        return Ok((Keyring::new(key), KeySource::Environment));
    }
    if let Some(ring) = read(key_file)? {
        return Ok((ring, KeySource::File));
    }
    if !create_if_missing {
        return Err(SecretError::MissingMasterKey {
            path: key_file.to_owned(),
        });
    }
    let ring = Keyring::new(MasterKey::generate()?);
    if create_new(key_file, &ring)? {
        Ok((ring, KeySource::Created))
    } else {
        // Another process created the file first; its key may already seal values, so use it.
        Ok((KeyFile::load(key_file)?, KeySource::File))
    }
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> SecretError {
    SecretError::KeyFileIo {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Reads the key file, or `None` if it does not exist.
pub(crate) fn read(path: &Path) -> Result<Option<Keyring>, SecretError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(io_error("open", path, err)),
    };
    // Checked on the open handle so the file inspected is the file read.
    let metadata = file
        .metadata()
        .map_err(|err| io_error("inspect", path, err))?;
    check_permissions(path, &metadata)?;
    // Sized up front so the buffer holding the keys is not reallocated, leaving copies behind.
    let capacity = usize::try_from(metadata.len())
        .unwrap_or(0)
        .saturating_add(1);
    let mut text = String::with_capacity(capacity);
    let result = file
        .read_to_string(&mut text)
        .map_err(|err| io_error("read", path, err))
        .and_then(|_| parse(path, &text));
    wipe_string(text);
    result.map(Some)
}

#[cfg(unix)]
fn check_permissions(path: &Path, metadata: &fs::Metadata) -> Result<(), SecretError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError::KeyFilePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_path: &Path, _metadata: &fs::Metadata) -> Result<(), SecretError> {
    Ok(())
}

pub(crate) fn parse(path: &Path, text: &str) -> Result<Keyring, SecretError> {
    let mut keys = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Reasons never quote the key field, and quote the id field only once it is known to
        // be an id: a key pasted into the wrong column must not end up in a log.
        let bad = |reason: String| SecretError::KeyFileLine {
            path: path.to_owned(),
            line: index + 1,
            reason,
        };
        let mut fields = line.split_whitespace();
        let (Some(id), Some(encoded), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad("expected \"<key id> <base64 key>\"".to_owned()));
        };
        if !is_key_id(id) {
            return Err(bad(
                "the first field is not a key id (16 lowercase hex characters)".to_owned(),
            ));
        }
        let key = MasterKey::from_base64(encoded).map_err(|err| {
            bad(match err {
                SecretError::BadKeyLength { got } => {
                    format!("the key must be 32 bytes of base64, got {got} bytes")
                }
                _ => "the key is not valid base64".to_owned(),
            })
        })?;
        if key.id() != id {
            return Err(bad(format!(
                "key id {id} does not match its key (whose id is {}): the file is corrupted",
                key.id()
            )));
        }
        keys.push(key);
    }
    let mut keys = keys.into_iter();
    let current = keys.next().ok_or_else(|| SecretError::KeyFileEmpty {
        path: path.to_owned(),
    })?;
    Ok(Keyring::with_old_keys(current, keys))
}

pub(crate) fn render(keyring: &Keyring) -> String {
    // Sized up front so growing the string does not leave copies of keys in freed memory.
    let line_len = KEY_ID_LEN + 1 + KEY_LEN.div_ceil(3) * 4 + 1;
    let mut text = String::with_capacity(HEADER.len() + line_len * keyring.keys().count());
    text.push_str(HEADER);
    for key in keyring.keys() {
        let encoded = key.to_base64();
        text.push_str(key.id());
        text.push(' ');
        text.push_str(&encoded);
        text.push('\n');
        wipe_string(encoded);
    }
    text
}

/// Writes `keyring` to a new mode-0600 temp file in the directory of `path` and syncs it, so
/// that a rename or link can put it in place atomically.
fn write_temp(path: &Path, keyring: &Keyring) -> Result<PathBuf, SecretError> {
    let file_name = path
        .file_name()
        .ok_or_else(|| {
            io_error(
                "write",
                path,
                io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"),
            )
        })?
        .to_string_lossy();
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).map_err(SecretError::Random)?;
    let temp = path.with_file_name(format!(
        ".{file_name}.tmp-{}-{}",
        std::process::id(),
        hex::encode(suffix)
    ));

    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // Created 0600 rather than chmod-ed afterwards, so the keys are never readable by
        // others, not even for an instant.
        options.mode(0o600);
    }
    let mut file = options
        .open(&temp)
        .map_err(|err| io_error("create", path, err))?;

    let text = render(keyring);
    let written = write_and_sync(&mut file, &text);
    wipe_string(text);
    drop(file);
    if let Err(err) = written {
        let _ = fs::remove_file(&temp);
        return Err(io_error("write", path, err));
    }
    Ok(temp)
}

fn write_and_sync(file: &mut File, text: &str) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // A umask can only remove bits; this makes the mode exactly 0600 whatever it is.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Puts a fresh key file at `path` unless one already exists. Returns whether it did.
///
/// A hard link, unlike a rename, fails when the target exists, so two servers starting at once
/// cannot overwrite each other's new key (one of which may already have sealed values).
fn create_new(path: &Path, keyring: &Keyring) -> Result<bool, SecretError> {
    let temp = write_temp(path, keyring)?;
    let created = match fs::hard_link(&temp, path) {
        Ok(()) => true,
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => false,
        // Some filesystems have no hard links; fall back to a rename there.
        Err(_) => {
            if let Err(err) = fs::rename(&temp, path) {
                let _ = fs::remove_file(&temp);
                return Err(io_error("create", path, err));
            }
            return sync_dir(path).map(|()| true);
        }
    };
    // Ignored on failure: the key file itself is in place (or not needed), and a leftover temp
    // file is 0600 like the key file.
    let _ = fs::remove_file(&temp);
    if created {
        sync_dir(path)?;
    }
    Ok(created)
}

/// Makes a rename or link in the directory of `path` durable.
fn sync_dir(path: &Path) -> Result<(), SecretError> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|err| io_error("sync the directory of", path, err))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[cfg(unix)]
    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Writes `text` as a key file with safe permissions.
    fn write_raw(path: &Path, text: &str) {
        fs::write(path, text).unwrap();
        #[cfg(unix)]
        chmod(path, 0o600);
    }

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[cfg(unix)]
    #[test]
    fn created_with_mode_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stigmer.key");
        let (ring, source) = load_keyring(None, &path, true).unwrap();
        assert_eq!(source, KeySource::Created);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(dir_entries(dir.path()), ["stigmer.key"]);

        let (again, source) = load_keyring(None, &path, true).unwrap();
        assert_eq!(source, KeySource::File);
        assert_eq!(again.current_id(), ring.current_id());
        let sealed = ring.seal("db password").unwrap();
        assert_eq!(again.open(&sealed).unwrap(), "db password");

        let text = fs::read_to_string(&path).unwrap();
        let key_lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            key_lines,
            [format!(
                "{} {}",
                ring.current_id(),
                ring.current().to_base64()
            )]
        );
    }

    #[test]
    fn write_and_load_round_trip_keeps_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stigmer.key");
        let ring = Keyring::new(MasterKey::generate().unwrap());
        let sealed_old = ring.seal("old").unwrap();
        let (ring, _) = ring.rotated().unwrap();
        let (ring, _) = ring.rotated().unwrap();
        KeyFile::write(&path, &ring).unwrap();
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);

        let loaded = KeyFile::load(&path).unwrap();
        let ids = |r: &Keyring| r.keys().map(|k| k.id().to_owned()).collect::<Vec<_>>();
        assert_eq!(ids(&loaded), ids(&ring));
        assert_eq!(loaded.current_id(), ring.current_id());
        assert_eq!(loaded.open(&sealed_old).unwrap(), "old");
        let sealed_new = loaded.seal("new").unwrap();
        assert_eq!(ring.open(&sealed_new).unwrap(), "new");

        // Replacing the file (as after dropping old keys) leaves no temp file behind.
        KeyFile::write(&path, &ring.without_old_keys()).unwrap();
        assert_eq!(KeyFile::load(&path).unwrap().keys().count(), 1);
        assert_eq!(dir_entries(dir.path()), ["stigmer.key"]);
    }

    #[cfg(unix)]
    #[test]
    fn rejects_a_key_file_readable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stigmer.key");
        KeyFile::write(&path, &Keyring::new(MasterKey::generate().unwrap())).unwrap();
        for bad_mode in [0o644, 0o640, 0o604, 0o660] {
            chmod(&path, bad_mode);
            let err = KeyFile::load(&path).unwrap_err();
            assert!(
                matches!(err, SecretError::KeyFilePermissions { mode, .. } if mode == bad_mode),
                "{bad_mode:o}: {err:?}"
            );
            let message = err.to_string();
            assert!(
                message.contains(&format!("chmod 600 {}", path.display())),
                "{message}"
            );
            assert!(message.contains(&format!("{bad_mode:o}")), "{message}");
            assert!(load_keyring(None, &path, true).is_err());
        }
        chmod(&path, 0o400);
        assert!(KeyFile::load(&path).is_ok());
    }

    #[test]
    fn rejects_a_line_whose_id_does_not_match_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stigmer.key");
        let a = MasterKey::generate().unwrap();
        let b = MasterKey::generate().unwrap();
        write_raw(
            &path,
            &format!(
                "# comment\n\n{} {}\n  # indented comment\n{} {}\n",
                a.id(),
                a.to_base64(),
                a.id(),
                b.to_base64()
            ),
        );
        let err = KeyFile::load(&path).unwrap_err();
        assert!(
            matches!(err, SecretError::KeyFileLine { line: 5, .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("line 5"), "{message}");
        assert!(message.contains("does not match"), "{message}");
        assert!(!message.contains(&b.to_base64()), "{message}");
    }

    #[test]
    fn rejects_malformed_lines_without_echoing_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stigmer.key");
        let key = MasterKey::generate().unwrap();
        let encoded = key.to_base64();
        let short = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [1u8; 12]);
        for line in [
            encoded.clone(),
            format!("{encoded} {encoded}"),
            format!("{} {encoded} extra", key.id()),
            format!("{} not-base64!", key.id()),
            format!("{} {short}", key.id()),
        ] {
            write_raw(&path, &format!("# header\n{line}\n"));
            let err = KeyFile::load(&path).unwrap_err();
            assert!(
                matches!(err, SecretError::KeyFileLine { line: 2, .. }),
                "{line}: {err:?}"
            );
            assert!(!err.to_string().contains(&encoded), "{err}");
            assert!(!format!("{err:?}").contains(&encoded), "{err:?}");
        }
    }

    #[test]
    fn a_file_without_keys_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stigmer.key");
        write_raw(&path, "# only a comment\n\n");
        assert!(matches!(
            KeyFile::load(&path).unwrap_err(),
            SecretError::KeyFileEmpty { .. }
        ));
    }

    #[test]
    fn missing_file_without_create_gives_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stigmer.key");
        let err = load_keyring(None, &path, false).unwrap_err();
        assert!(
            matches!(err, SecretError::MissingMasterKey { .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "the database holds sealed secrets but no master key was found: set \
                 STIGMER_MASTER_KEY or restore {}",
                path.display()
            )
        );
        assert!(!path.exists());
        assert!(matches!(
            KeyFile::load(&path).unwrap_err(),
            SecretError::KeyFileIo { .. }
        ));
    }

    #[test]
    fn environment_key_is_the_only_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stigmer.key");
        let (file_ring, _) = load_keyring(None, &path, true).unwrap();

        let env = MasterKey::generate().unwrap();
        let (ring, source) = load_keyring(Some(&env.to_base64()), &path, true).unwrap();
        assert_eq!(source, KeySource::Environment);
        assert_eq!(ring.current_id(), env.id());
        assert!(!ring.contains(file_ring.current_id()));
        assert_eq!(ring.keys().count(), 1);

        let missing = dir.path().join("absent.key");
        let (_, source) = load_keyring(Some(&env.to_base64()), &missing, true).unwrap();
        assert_eq!(source, KeySource::Environment);
        assert!(!missing.exists());

        let err = load_keyring(Some("c2hvcnQ="), &path, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "STIGMER_MASTER_KEY must be 32 bytes of base64, got 5 bytes"
        );
    }

    #[test]
    fn create_does_not_clobber_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stigmer.key");
        let first = Keyring::new(MasterKey::generate().unwrap());
        let second = Keyring::new(MasterKey::generate().unwrap());
        assert!(create_new(&path, &first).unwrap());
        assert!(!create_new(&path, &second).unwrap());
        assert_eq!(
            KeyFile::load(&path).unwrap().current_id(),
            first.current_id()
        );
        assert_eq!(dir_entries(dir.path()), ["stigmer.key"]);
    }
}
