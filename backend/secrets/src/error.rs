use std::io;
use std::path::PathBuf;

/// Everything that can go wrong sealing, opening, or finding the master key.
///
/// Messages are written for an operator reading a log. No variant ever carries plaintext or key
/// bytes (key ids are not secret), so both `Display` and `Debug` are safe to log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The value does not carry the `stigmer-sealed:v1:` prefix.
    #[error("value is not a sealed secret (it does not start with \"stigmer-sealed:v1:\")")]
    NotSealed,

    /// The value has the sealed prefix but its body cannot be parsed.
    #[error("sealed secret is damaged: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The value was sealed by a key that is not in the keyring.
    #[error(
        "unknown key id {key_id}: the secret was sealed with a master key that is not loaded \
         (loaded: {loaded}), so the master key is wrong or missing; set STIGMER_MASTER_KEY to the \
         key that sealed it or restore the key file that holds it"
    )]
    UnknownKeyId {
        /// Id found in the sealed value.
        key_id: String,
        /// Ids of the keys that are loaded, current first, comma separated.
        loaded: String,
    },

    /// The tag did not verify: the value was tampered with, corrupted, or moved under another
    /// key id. No plaintext is returned in that case.
    #[error(
        "sealed secret under master key id {key_id} failed authentication: it was tampered with \
         or corrupted"
    )]
    AuthenticationFailed {
        /// Id found in the sealed value.
        key_id: String,
    },

    /// The value authenticated but is not UTF-8, so it was not sealed by this crate.
    #[error("sealed secret under master key id {key_id} does not decrypt to UTF-8 text")]
    NotUtf8 {
        /// Id found in the sealed value.
        key_id: String,
    },

    /// AES-GCM refused to encrypt (only happens for values of tens of gigabytes).
    #[error("cannot seal the value: it is too large for AES-GCM")]
    SealFailed,

    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(#[source] getrandom::Error),

    /// A master key decoded to the wrong number of bytes.
    #[error("STIGMER_MASTER_KEY must be 32 bytes of base64, got {got} bytes")]
    BadKeyLength {
        /// Number of bytes the base64 decoded to.
        got: usize,
    },

    /// A master key is not base64 at all.
    #[error("STIGMER_MASTER_KEY must be 32 bytes of base64, but it is not valid base64")]
    BadKeyEncoding,

    /// Reading, writing or syncing the key file failed.
    #[error("cannot {action} key file {}: {source}", .path.display())]
    KeyFileIo {
        /// What was being done (e.g. "read", "write").
        action: &'static str,
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The key file can be read by group or others.
    #[error(
        "key file {} is accessible by group or others (mode {mode:03o}) but holds the master key; \
         run `chmod 600 {}`",
        .path.display(),
        .path.display()
    )]
    KeyFilePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// A line of the key file is not `<key id> <base64 key>` or its id does not match its key.
    #[error("key file {}, line {line}: {reason}", .path.display())]
    KeyFileLine {
        /// The key file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line (never the key itself).
        reason: String,
    },

    /// The key file holds no key line.
    #[error("key file {} holds no key", .path.display())]
    KeyFileEmpty {
        /// The key file.
        path: PathBuf,
    },

    /// The OS keychain could not be reached, or its entry is not a keyring.
    #[error(
        "the OS keychain entry {entry} cannot be used: {reason}; start with --master-key-store file \
         (a key file next to the database) where no keychain runs, e.g. over SSH or in a container"
    )]
    Keychain {
        /// `service/account`.
        entry: String,
        /// What the platform said (never the secret).
        reason: String,
    },

    /// The keychain has no entry for the database's key.
    #[error(
        "the database's secrets are sealed with a master key the OS keychain does not hold \
         (entry {entry}): run the server as the user whose keychain holds it, or set \
         STIGMER_MASTER_KEY to that key"
    )]
    MissingKeychainKey {
        /// `service/account`.
        entry: String,
    },

    /// Neither the environment nor the key file provides a master key.
    #[error(
        "the database holds sealed secrets but no master key was found: set STIGMER_MASTER_KEY \
         or restore {}",
        .path.display()
    )]
    MissingMasterKey {
        /// Where the key file was expected.
        path: PathBuf,
    },
}
