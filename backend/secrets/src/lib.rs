//! Secret values at rest for the resource server.
//!
//! This crate owns everything needed so that the SQLite file never holds a secret in plain text:
//!
//! * [`MasterKey`]: a 256-bit key and its public key id;
//! * [`Keyring`]: the current key (which seals) plus older keys (which only open), so a key can be
//!   rotated without first re-encrypting every row;
//! * the sealed text format, `stigmer-sealed:v1:<key id>:<base64url(nonce || ciphertext+tag)>`,
//!   a single string that fits in a JSON string field ([`Keyring::seal`], [`Keyring::open`],
//!   [`is_sealed`], [`key_id_of`]);
//! * the key file next to the database ([`KeyFile`]) and the choice between it and the
//!   `STIGMER_MASTER_KEY` environment variable ([`load_keyring`]), or the OS keychain instead
//!   of the file ([`load_from_vault`]).
//!
//! It knows nothing about gRPC, SQL or which fields are secret: callers hand it strings.
//!
//! Key material is wiped from memory on drop on a best-effort basis only: the workspace forbids
//! `unsafe`, so neither volatile writes nor the AES key schedule inside `aes-gcm` can be wiped
//! reliably. The guarantee this crate does make is that no error message and no `Debug` output
//! ever contains plaintext or key bytes.
#![forbid(unsafe_code)]

mod error;
mod key;
mod keychain;
mod keyfile;
mod keyring;

pub use error::SecretError;
pub use key::{KEY_ID_LEN, KEY_LEN, MasterKey};
pub use keychain::{
    KeyVault, MemoryVault, OsKeychain, SERVICE, keychain_account, keychain_entry, load_from_vault,
    save,
};
pub use keyfile::{KeyFile, KeySource, load_keyring};
pub use keyring::{Keyring, SEALED_PREFIX, is_sealed, key_id_of};

/// Overwrites a buffer that held key material or plaintext.
///
/// Without `unsafe` there is no volatile write, so `black_box` is what keeps the optimiser from
/// dropping the stores as dead; good enough to avoid leaving secrets in freed memory by default.
pub(crate) fn wipe(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        *b = 0;
    }
    std::hint::black_box(buf);
}

/// Overwrites the bytes of a string that is no longer needed.
pub(crate) fn wipe_string(text: String) {
    wipe(&mut text.into_bytes());
}
