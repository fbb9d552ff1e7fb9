use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use sha2::{Digest as _, Sha256};

use crate::{SecretError, wipe};

/// Length of a master key in bytes (AES-256).
pub const KEY_LEN: usize = 32;

/// Length of a key id in hex characters.
pub const KEY_ID_LEN: usize = 16;

// Operators paste keys from many tools; accept either alphabet, with or without padding, rather
// than fail on a cosmetic difference.
const LENIENT_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const LENIENT_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A 256-bit master key.
///
/// `Debug` shows only the key id. The bytes are overwritten on drop (best effort, see the crate
/// docs).
#[derive(Clone)]
pub struct MasterKey {
    bytes: [u8; KEY_LEN],
    id: String,
}

impl MasterKey {
    /// Generates a new key from the operating system's random number generator.
    ///
    /// # Errors
    /// [`SecretError::Random`] if the random number generator fails.
    pub fn generate() -> Result<Self, SecretError> {
        let mut bytes = [0u8; KEY_LEN];
        getrandom::fill(&mut bytes).map_err(SecretError::Random)?;
        Ok(Self::from_bytes(bytes))
    }

    /// Wraps raw key bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let id = key_id(&bytes);
        Self { bytes, id }
    }

    /// Parses a key written as standard or URL-safe base64 (padding optional) of exactly 32
    /// bytes. Surrounding whitespace is ignored, so a trailing newline from a file or a shell
    /// does not matter.
    ///
    /// # Errors
    /// [`SecretError::BadKeyEncoding`] if the text is not base64, [`SecretError::BadKeyLength`]
    /// if it does not decode to 32 bytes. Neither message contains the text.
    pub fn from_base64(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        let mut decoded = LENIENT_STANDARD
            .decode(text)
            .or_else(|_| LENIENT_URL_SAFE.decode(text))
            .map_err(|_| SecretError::BadKeyEncoding)?;
        let result = match <[u8; KEY_LEN]>::try_from(decoded.as_slice()) {
            Ok(bytes) => Ok(Self::from_bytes(bytes)),
            Err(_) => Err(SecretError::BadKeyLength { got: decoded.len() }),
        };
        wipe(&mut decoded);
        result
    }

    /// The key encoded as standard base64 with padding, the form `from_base64` and the key file
    /// use. This is the secret itself: handle the result accordingly.
    #[must_use]
    pub fn to_base64(&self) -> String {
        general_purpose::STANDARD.encode(self.bytes)
    }

    /// The key id: the first 16 hex characters of SHA-256 of the key bytes. Not secret; it
    /// tells which key sealed a value.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        wipe(&mut self.bytes);
    }
}

fn key_id(bytes: &[u8; KEY_LEN]) -> String {
    let digest = Sha256::digest(bytes);
    let mut id = hex::encode(&digest[..KEY_ID_LEN / 2]);
    id.truncate(KEY_ID_LEN);
    id
}

/// Whether `id` has the shape of a key id (16 lowercase hex characters).
pub(crate) fn is_key_id(id: &str) -> bool {
    id.len() == KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_first_16_hex_of_sha256() {
        let key = MasterKey::from_bytes([0u8; KEY_LEN]);
        // sha256 of 32 zero bytes = 66687aadf862bd776c8fc18b8e9f8e20...
        assert_eq!(key.id(), "66687aadf862bd77");
        assert!(is_key_id(key.id()));
    }

    #[test]
    fn base64_round_trip_in_both_alphabets() {
        let key = MasterKey::generate().unwrap();
        let std_text = key.to_base64();
        assert_eq!(MasterKey::from_base64(&std_text).unwrap().id(), key.id());

        let url_text = general_purpose::URL_SAFE_NO_PAD.encode(key.bytes());
        assert_eq!(MasterKey::from_base64(&url_text).unwrap().id(), key.id());

        let with_newline = format!("  {std_text}\n");
        assert_eq!(
            MasterKey::from_base64(&with_newline).unwrap().id(),
            key.id()
        );
    }

    #[test]
    fn generated_keys_differ() {
        let a = MasterKey::generate().unwrap();
        let b = MasterKey::generate().unwrap();
        assert_ne!(a.id(), b.id());
        assert_ne!(a.to_base64(), b.to_base64());
    }

    #[test]
    fn from_base64_rejects_wrong_lengths() {
        for len in [0usize, 12, 31, 33, 64] {
            let text = general_purpose::STANDARD.encode(vec![7u8; len]);
            let err = MasterKey::from_base64(&text).unwrap_err();
            assert!(
                matches!(err, SecretError::BadKeyLength { got } if got == len),
                "{len}: {err:?}"
            );
            assert_eq!(
                err.to_string(),
                format!("STIGMER_MASTER_KEY must be 32 bytes of base64, got {len} bytes")
            );
        }
    }

    #[test]
    fn from_base64_rejects_non_base64_without_echoing_it() {
        let err = MasterKey::from_base64("not*base64!secretish").unwrap_err();
        assert!(matches!(err, SecretError::BadKeyEncoding), "{err:?}");
        assert!(!err.to_string().contains("secretish"));
        assert!(!format!("{err:?}").contains("secretish"));
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let key = MasterKey::generate().unwrap();
        let debug = format!("{key:?}");
        let alt_debug = format!("{key:#?}");
        for encoded in [
            key.to_base64(),
            general_purpose::STANDARD_NO_PAD.encode(key.bytes()),
            general_purpose::URL_SAFE_NO_PAD.encode(key.bytes()),
            hex::encode(key.bytes()),
            format!("{:?}", key.bytes()),
        ] {
            assert!(!debug.contains(&encoded), "{debug}");
            assert!(!alt_debug.contains(&encoded), "{alt_debug}");
        }
        assert!(debug.contains(key.id()), "{debug}");
    }
}
