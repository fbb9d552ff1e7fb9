//! The master key that seals secrets: found (or made, on a database's first start) in
//! `STIGMER_MASTER_KEY`, the key file or the OS keychain, checked against the key id the
//! database records, and rotated.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use stigmer_secrets::{KeyFile, KeySource, KeyVault, Keyring, SEALED_PREFIX};
use stigmer_store::Store;

use crate::config::{MasterKeyStore, ServerConfig};
use crate::server::ServerError;

/// The OS keychain, when the program installed one ([`install_os_keychain`]).
static OS_KEYCHAIN: OnceLock<Arc<dyn KeyVault>> = OnceLock::new();

/// Makes `vault` (the platform's keychain, `stigmer_secrets::OsKeychain`) what
/// `--master-key-store keychain` uses. The binary does this in `main`, so that only it links the
/// platform's keychain code (a D-Bus client on Linux), not every program built on this crate.
pub fn install_os_keychain(vault: Arc<dyn KeyVault>) {
    // A second install keeps the first: one keychain per process.
    let _ = OS_KEYCHAIN.set(vault);
}

/// The setting naming the master key this database's secrets are sealed with (never the key).
pub const KEY_SETTING: &str = "master_key_id";

/// Loads the master key, creating it on a database's first start, and refuses a key that is
/// not the one the database's secrets were sealed with.
pub async fn load_keyring(
    config: &ServerConfig,
    store: &dyn Store,
) -> Result<Keyring, ServerError> {
    let recorded = store.setting(KEY_SETTING.into()).await?;
    let (keyring, source) = find(config, recorded.clone()).await?;
    let source_name = match source {
        KeySource::Environment => "STIGMER_MASTER_KEY",
        KeySource::File => "the key file",
        KeySource::Created => "a new key",
        KeySource::Keychain | KeySource::MovedToKeychain => "the OS keychain",
    };
    if source == KeySource::MovedToKeychain {
        tracing::warn!(key_file = %key_file(config)?.display(), key_id = keyring.current_id(), "copied the master key from the key file into the OS keychain; back the key up elsewhere, then delete the key file so that copies of this folder do not carry it");
    }
    match recorded {
        Some(recorded) if !keyring.contains(&recorded) => Err(ServerError::WrongKey {
            recorded,
            loaded: keyring.current_id().to_string(),
            origin: source_name,
        }),
        Some(_) => Ok(keyring),
        None => {
            store
                .put_setting(KEY_SETTING.into(), keyring.current_id().to_string())
                .await?;
            if source == KeySource::Created {
                match config.master_key_store {
                    MasterKeyStore::File => {
                        tracing::info!(key_file = %key_file(config)?.display(), key_id = keyring.current_id(), "created the master key file; back it up with the database")
                    }
                    MasterKeyStore::Keychain => {
                        tracing::info!(keychain_entry = %stigmer_secrets::keychain_entry(keyring.current_id()), key_id = keyring.current_id(), "created the master key in the OS keychain; back it up apart from the database")
                    }
                }
            }
            Ok(keyring)
        }
    }
}

/// The keys from wherever `config` says they live; a new key (file or keychain entry) only
/// for a database that has recorded none.
async fn find(
    config: &ServerConfig,
    recorded: Option<String>,
) -> Result<(Keyring, KeySource), ServerError> {
    if let Some(key) = &config.master_key {
        return Ok(stigmer_secrets::load_keyring(
            Some(key),
            Path::new(""),
            false,
        )?);
    }
    match config.master_key_store {
        MasterKeyStore::File => Ok(stigmer_secrets::load_keyring(
            None,
            key_file(config)?,
            recorded.is_none(),
        )?),
        MasterKeyStore::Keychain => {
            let file = config.master_key_file.clone();
            in_keychain(move |vault| {
                stigmer_secrets::load_from_vault(vault, recorded.as_deref(), file.as_deref())
            })
            .await
        }
    }
}

/// Runs `work` on the OS keychain off the async workers: the platform calls block.
async fn in_keychain<T: Send + 'static>(
    work: impl FnOnce(&dyn KeyVault) -> Result<T, stigmer_secrets::SecretError> + Send + 'static,
) -> Result<T, ServerError> {
    let vault = OS_KEYCHAIN.get().cloned().ok_or(ServerError::NoKeychain)?;
    Ok(tokio::task::spawn_blocking(move || work(vault.as_ref())).await??)
}

/// What a key rotation did.
#[derive(Debug)]
pub struct Rotation {
    pub resealed: u64,
    pub key_id: String,
    /// The new key, when it came from STIGMER_MASTER_KEY and so must be handed back.
    pub new_key: Option<String>,
}

/// The key file `config` names (the binary fills in the database's default).
fn key_file(config: &ServerConfig) -> Result<&Path, ServerError> {
    config
        .master_key_file
        .as_deref()
        .ok_or(ServerError::NoMasterKey)
}

/// Where a rotation keeps the keys, when it keeps them at all.
enum KeyHome {
    /// STIGMER_MASTER_KEY: the new key is handed back to the operator.
    Environment,
    File(PathBuf),
    Keychain,
}

impl KeyHome {
    fn of(config: &ServerConfig) -> Result<Self, ServerError> {
        Ok(match (&config.master_key, config.master_key_store) {
            (Some(_), _) => Self::Environment,
            (None, MasterKeyStore::File) => Self::File(key_file(config)?.to_path_buf()),
            (None, MasterKeyStore::Keychain) => Self::Keychain,
        })
    }

    async fn save(&self, ring: &Keyring) -> Result<(), ServerError> {
        match self {
            Self::Environment => Ok(()),
            Self::File(path) => Ok(KeyFile::write(path, ring)?),
            Self::Keychain => {
                let ring = ring.clone();
                in_keychain(move |vault| stigmer_secrets::save(vault, &ring)).await
            }
        }
    }

    /// Forgets the keys stored under `old_id` once nothing is sealed with them.
    async fn forget(&self, old_id: &str) -> Result<(), ServerError> {
        match self {
            Self::Keychain => {
                let account = stigmer_secrets::keychain_account(old_id);
                in_keychain(move |vault| vault.delete(&account)).await
            }
            Self::Environment | Self::File(_) => Ok(()),
        }
    }
}

/// Re-seals every secret of `store` under a new master key in one transaction, then closes
/// the store. The old key stays where the keys live until the database no longer needs it, so
/// a crash at any point loses nothing.
pub async fn rotate_master_key(
    config: &ServerConfig,
    store: Arc<dyn Store>,
) -> Result<Rotation, ServerError> {
    let keyring = load_keyring(config, store.as_ref()).await?;
    let (rotated, new_key) = keyring.rotated()?;
    let home = KeyHome::of(config)?;
    home.save(&rotated).await?;
    let ring = Arc::new(rotated.clone());
    let resealed = store
        .rewrite_tokens(
            SEALED_PREFIX.to_string(),
            Arc::new(move |token: &str| ring.reseal(token).map_err(|err| err.to_string())),
        )
        .await?;
    store
        .put_setting(KEY_SETTING.into(), rotated.current_id().to_string())
        .await?;
    home.save(&rotated.without_old_keys()).await?;
    home.forget(keyring.current_id()).await?;
    store.close().await?;
    Ok(Rotation {
        resealed,
        key_id: rotated.current_id().to_string(),
        new_key: matches!(home, KeyHome::Environment).then(|| new_key.to_base64()),
    })
}
