//! The master keys kept in the OS keychain instead of a key file (Secret Service on Linux,
//! Keychain on macOS, Credential Manager on Windows), so that a copy of the database's folder
//! carries the sealed secrets without their key.
//!
//! One entry per database key: service [`SERVICE`], account `master-key-<key id>`, holding the
//! same text as a key file (the current key first, then older ones). The database records its
//! key id, so the entry is found from the database alone, and several databases keep apart.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use crate::keyfile::{parse, read, render};
use crate::{KeySource, Keyring, MasterKey, SecretError, wipe_string};

/// The keychain service name of every entry.
pub const SERVICE: &str = "stigmer-server";

/// A place that keeps named secrets: the OS keychain, or memory in tests.
pub trait KeyVault: Send + Sync {
    /// The text stored under `account`, `None` when there is no such entry.
    fn read(&self, account: &str) -> Result<Option<String>, SecretError>;
    /// Stores `text` under `account`, replacing what was there.
    fn write(&self, account: &str, text: &str) -> Result<(), SecretError>;
    /// Removes `account`; removing an absent entry succeeds.
    fn delete(&self, account: &str) -> Result<(), SecretError>;
}

/// The platform's keychain, through the `keyring` crate.
#[derive(Debug, Default)]
pub struct OsKeychain;

impl OsKeychain {
    fn entry(account: &str) -> Result<keyring::Entry, SecretError> {
        keyring::Entry::new(SERVICE, account).map_err(|err| keychain_error(account, &err))
    }
}

impl KeyVault for OsKeychain {
    fn read(&self, account: &str) -> Result<Option<String>, SecretError> {
        match Self::entry(account)?.get_password() {
            Ok(text) => Ok(Some(text)),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(err) => Err(keychain_error(account, &err)),
        }
    }

    fn write(&self, account: &str, text: &str) -> Result<(), SecretError> {
        Self::entry(account)?
            .set_password(text)
            .map_err(|err| keychain_error(account, &err))
    }

    fn delete(&self, account: &str) -> Result<(), SecretError> {
        match Self::entry(account)?.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(err) => Err(keychain_error(account, &err)),
        }
    }
}

/// The `keyring` crate's errors name the platform's failure, never the secret.
fn keychain_error(account: &str, err: &keyring::Error) -> SecretError {
    SecretError::Keychain {
        entry: entry_name(account),
        reason: err.to_string(),
    }
}

/// A vault in memory, for tests: what the OS keychain does, without one.
#[derive(Debug, Default)]
pub struct MemoryVault {
    entries: Mutex<HashMap<String, String>>,
}

impl MemoryVault {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl KeyVault for MemoryVault {
    fn read(&self, account: &str) -> Result<Option<String>, SecretError> {
        Ok(self.entries().get(account).cloned())
    }

    fn write(&self, account: &str, text: &str) -> Result<(), SecretError> {
        self.entries().insert(account.to_string(), text.to_string());
        Ok(())
    }

    fn delete(&self, account: &str) -> Result<(), SecretError> {
        self.entries().remove(account);
        Ok(())
    }
}

/// How messages name an account's entry: `service/account`.
fn entry_name(account: &str) -> String {
    format!("{SERVICE}/{account}")
}

/// The entry (`service/account`) holding the keyring whose current key is `key_id`.
pub fn keychain_entry(key_id: &str) -> String {
    entry_name(&keychain_account(key_id))
}

/// The account of the entry holding the keyring whose current key is `key_id`.
pub fn keychain_account(key_id: &str) -> String {
    format!("master-key-{key_id}")
}

/// Finds the master keys in `vault` for a database that recorded `recorded` (its key id), or
/// makes a new key there for a database that recorded none. A key file left at `key_file`
/// from before the keychain was used is copied into the keychain once (it must hold the
/// recorded key); the file is left for the operator to delete, which the caller says.
///
/// # Errors
/// [`SecretError::Keychain`] when the keychain cannot be reached or its entry is not a
/// keyring, [`SecretError::MissingKeychainKey`] when neither it nor the key file holds the
/// recorded key, and those of reading the key file.
pub fn load_from_vault(
    vault: &dyn KeyVault,
    recorded: Option<&str>,
    key_file: Option<&Path>,
) -> Result<(Keyring, KeySource), SecretError> {
    let Some(recorded) = recorded else {
        let ring = Keyring::new(MasterKey::generate()?);
        save(vault, &ring)?;
        return Ok((ring, KeySource::Created));
    };
    let account = keychain_account(recorded);
    if let Some(text) = vault.read(&account)? {
        let parsed = parse(Path::new(&account), &text);
        wipe_string(text);
        let ring = parsed.map_err(|err| SecretError::Keychain {
            entry: entry_name(&account),
            reason: format!("it holds no valid keyring: {err}"),
        })?;
        return Ok((ring, KeySource::Keychain));
    }
    if let Some(ring) = key_file.map(read).transpose()?.flatten()
        && ring.contains(recorded)
    {
        save(vault, &ring)?;
        return Ok((ring, KeySource::MovedToKeychain));
    }
    Err(SecretError::MissingKeychainKey {
        entry: entry_name(&account),
    })
}

/// Stores `ring` under its current key's account.
pub fn save(vault: &dyn KeyVault, ring: &Keyring) -> Result<(), SecretError> {
    let text = render(ring);
    let written = vault.write(&keychain_account(ring.current_id()), &text);
    wipe_string(text);
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyFile;

    #[test]
    fn a_new_database_gets_a_key_the_next_start_finds_by_its_id() {
        let vault = MemoryVault::default();
        let (made, source) = load_from_vault(&vault, None, None).expect("a new key");
        assert_eq!(source, KeySource::Created);
        let id = made.current_id().to_string();
        let (found, source) = load_from_vault(&vault, Some(&id), None).expect("found");
        assert_eq!(source, KeySource::Keychain);
        assert_eq!(found.current_id(), id);
        let sealed = made.seal("hunter2").expect("seal");
        assert_eq!(found.open(&sealed).expect("open"), "hunter2");
    }

    #[test]
    fn a_missing_entry_names_it_and_never_makes_a_new_key() {
        let vault = MemoryVault::default();
        let err = load_from_vault(&vault, Some("0123456789abcdef"), None).expect_err("missing");
        assert!(
            err.to_string()
                .contains("stigmer-server/master-key-0123456789abcdef"),
            "{err}"
        );
        assert!(vault.entries().is_empty(), "nothing was written");
    }

    #[test]
    fn a_key_file_holding_the_recorded_key_is_copied_in_once() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("stigmer.key");
        let ring = Keyring::new(MasterKey::generate().expect("key"));
        KeyFile::write(&file, &ring).expect("key file");
        let id = ring.current_id().to_string();

        let (moved, source) =
            load_from_vault(&MemoryVault::default(), Some(&id), Some(&file)).expect("moved");
        assert_eq!(source, KeySource::MovedToKeychain);
        assert_eq!(moved.current_id(), id);

        let other = Keyring::new(MasterKey::generate().expect("key"));
        let vault = MemoryVault::default();
        let refused = load_from_vault(&vault, Some(other.current_id()), Some(&file));
        assert!(
            matches!(refused, Err(SecretError::MissingKeychainKey { .. })),
            "a key file of another key is not taken: {refused:?}"
        );
    }

    #[test]
    fn a_corrupt_entry_is_an_error_that_quotes_no_key() {
        let vault = MemoryVault::default();
        vault
            .write(
                &keychain_account("0123456789abcdef"),
                "0123456789abcdef c2VjcmV0",
            )
            .expect("write");
        let err = load_from_vault(&vault, Some("0123456789abcdef"), None).expect_err("corrupt");
        let text = err.to_string();
        assert!(text.contains("no valid keyring"), "{text}");
        assert!(
            !text.contains("c2VjcmV0"),
            "the key is never quoted: {text}"
        );
    }
}
