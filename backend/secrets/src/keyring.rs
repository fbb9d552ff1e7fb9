use std::fmt;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead as _, Key, KeyInit as _, Nonce, Payload};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::key::is_key_id;
use crate::{MasterKey, SecretError, wipe};

/// Prefix of every sealed value. The version is part of it so that a future format can be told
/// apart without guessing.
pub const SEALED_PREFIX: &str = "stigmer-sealed:v1:";

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Whether `value` is meant to be a sealed secret.
///
/// Only the prefix is checked: a damaged sealed value must still count as sealed, so that it is
/// reported as damaged by [`Keyring::open`] instead of being mistaken for plain text (and, say,
/// sealed a second time).
#[must_use]
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(SEALED_PREFIX)
}

/// The key id a sealed value names, if it has the sealed shape. The id is not authenticated
/// until [`Keyring::open`] succeeds; use it to decide what to reseal or which key is missing.
#[must_use]
pub fn key_id_of(sealed: &str) -> Option<&str> {
    parse(sealed).ok().map(|(id, _)| id)
}

/// Splits a sealed value into its key id and base64url payload.
fn parse(sealed: &str) -> Result<(&str, &str), SecretError> {
    let rest = sealed
        .strip_prefix(SEALED_PREFIX)
        .ok_or(SecretError::NotSealed)?;
    let (id, payload) = rest.split_once(':').ok_or(SecretError::Malformed {
        reason: "the key id is not followed by ':' and a payload",
    })?;
    if !is_key_id(id) {
        return Err(SecretError::Malformed {
            reason: "the key id is not 16 lowercase hex characters",
        });
    }
    Ok((id, payload))
}

/// Associated data for a value sealed under `key_id`.
///
/// Authenticating the whole header (format version and key id) means a ciphertext copied under
/// another key id, or relabelled as another format version, fails to open instead of being
/// decrypted under assumptions it was not sealed with.
fn header(key_id: &str) -> String {
    format!("{SEALED_PREFIX}{key_id}")
}

fn cipher(key: &MasterKey) -> Aes256Gcm {
    let mut raw = Key::<Aes256Gcm>::from(*key.bytes());
    let cipher = Aes256Gcm::new(&raw);
    wipe(&mut raw);
    cipher
}

fn seal_with(key: &MasterKey, plaintext: &[u8]) -> Result<String, SecretError> {
    // Random 96-bit nonces are safe for far more values than a resource server will ever seal
    // under one key (the NIST bound is 2^32), and need no counter state persisted anywhere.
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(SecretError::Random)?;
    let header = header(key.id());
    let ciphertext = cipher(key)
        .encrypt(
            &Nonce::<Aes256Gcm>::from(nonce),
            Payload {
                msg: plaintext,
                aad: header.as_bytes(),
            },
        )
        .map_err(|_| SecretError::SealFailed)?;
    let mut payload = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    payload.extend_from_slice(&nonce);
    payload.extend_from_slice(&ciphertext);
    Ok(format!("{header}:{}", URL_SAFE_NO_PAD.encode(&payload)))
}

/// The keys a server holds: one current key that seals, plus older keys that are only used to
/// open values sealed before a rotation.
///
/// `Debug` shows key ids only.
#[derive(Clone)]
pub struct Keyring {
    current: MasterKey,
    old: Vec<MasterKey>,
}

impl Keyring {
    /// A keyring with a single key.
    #[must_use]
    pub fn new(current: MasterKey) -> Self {
        Self {
            current,
            old: Vec::new(),
        }
    }

    /// A keyring whose `current` key seals and whose `old` keys only open. Keys repeating an id
    /// already present are dropped.
    #[must_use]
    pub fn with_old_keys(current: MasterKey, old: impl IntoIterator<Item = MasterKey>) -> Self {
        let mut ring = Self::new(current);
        for key in old {
            if !ring.contains(key.id()) {
                ring.old.push(key);
            }
        }
        ring
    }

    /// The key that seals.
    #[must_use]
    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    /// Id of the key that seals.
    #[must_use]
    pub fn current_id(&self) -> &str {
        self.current.id()
    }

    /// Keys kept only to open older values.
    #[must_use]
    pub fn old_keys(&self) -> &[MasterKey] {
        &self.old
    }

    /// Every key, current first.
    pub fn keys(&self) -> impl Iterator<Item = &MasterKey> {
        std::iter::once(&self.current).chain(&self.old)
    }

    /// Whether a key with this id is in the keyring.
    #[must_use]
    pub fn contains(&self, id: &str) -> bool {
        self.find(id).is_some()
    }

    fn find(&self, id: &str) -> Option<&MasterKey> {
        self.keys().find(|key| key.id() == id)
    }

    /// Seals `plaintext` under the current key with a fresh random nonce.
    ///
    /// # Errors
    /// [`SecretError::Random`] if no nonce can be drawn, [`SecretError::SealFailed`] for values
    /// too large for AES-GCM.
    pub fn seal(&self, plaintext: &str) -> Result<String, SecretError> {
        seal_with(&self.current, plaintext.as_bytes())
    }

    /// Opens a value sealed under any key of the keyring.
    ///
    /// # Errors
    /// [`SecretError::NotSealed`] without the sealed prefix, [`SecretError::Malformed`] if the
    /// body cannot be parsed, [`SecretError::UnknownKeyId`] if no loaded key has the value's id,
    /// [`SecretError::AuthenticationFailed`] if the value was altered (nothing is decrypted then),
    /// [`SecretError::NotUtf8`] if it does not hold text.
    pub fn open(&self, sealed: &str) -> Result<String, SecretError> {
        let (id, encoded) = parse(sealed)?;
        let key = self.find(id).ok_or_else(|| SecretError::UnknownKeyId {
            key_id: id.to_owned(),
            loaded: self
                .keys()
                .map(MasterKey::id)
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let payload = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| SecretError::Malformed {
                reason: "the payload is not unpadded base64url",
            })?;
        if payload.len() < NONCE_LEN + TAG_LEN {
            return Err(SecretError::Malformed {
                reason: "the payload is too short to hold a nonce and a tag",
            });
        }
        let (nonce, ciphertext) = payload.split_at(NONCE_LEN);
        let nonce = Nonce::<Aes256Gcm>::try_from(nonce).map_err(|_| SecretError::Malformed {
            reason: "the nonce has the wrong length",
        })?;
        let header = header(id);
        let plaintext = cipher(key)
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: header.as_bytes(),
                },
            )
            .map_err(|_| SecretError::AuthenticationFailed {
                key_id: id.to_owned(),
            })?;
        String::from_utf8(plaintext).map_err(|err| {
            wipe(&mut err.into_bytes());
            SecretError::NotUtf8 {
                key_id: id.to_owned(),
            }
        })
    }

    /// Opens a value with whichever key sealed it and seals it again under the current key,
    /// with a fresh nonce even when it already was under the current key.
    ///
    /// # Errors
    /// Those of [`Keyring::open`] and [`Keyring::seal`].
    pub fn reseal(&self, sealed: &str) -> Result<String, SecretError> {
        let mut plaintext = self.open(sealed)?.into_bytes();
        let resealed = seal_with(&self.current, &plaintext);
        wipe(&mut plaintext);
        resealed
    }

    /// A keyring whose current key is freshly generated and which keeps every key of this one
    /// for opening, so values can be resealed at leisure. Returns the new key as well so the
    /// caller can show or store it.
    ///
    /// # Errors
    /// [`SecretError::Random`] if the key cannot be generated.
    pub fn rotated(&self) -> Result<(Keyring, MasterKey), SecretError> {
        let new_key = MasterKey::generate()?;
        let ring = Self::with_old_keys(new_key.clone(), self.keys().cloned());
        Ok((ring, new_key))
    }

    /// A keyring with only the current key: once every value has been resealed, older keys
    /// no longer need to be kept anywhere.
    #[must_use]
    pub fn without_old_keys(&self) -> Keyring {
        Self::new(self.current.clone())
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.id())
            .field(
                "old",
                &self.old.iter().map(MasterKey::id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::new(MasterKey::generate().unwrap())
    }

    /// Applies `f` to the decoded payload of `sealed` and re-encodes it.
    fn with_payload(sealed: &str, f: impl FnOnce(&mut Vec<u8>)) -> String {
        let (id, encoded) = parse(sealed).unwrap();
        let mut payload = URL_SAFE_NO_PAD.decode(encoded).unwrap();
        f(&mut payload);
        format!("{SEALED_PREFIX}{id}:{}", URL_SAFE_NO_PAD.encode(&payload))
    }

    #[test]
    fn round_trip() {
        let ring = ring();
        for plaintext in [
            "hunter2",
            "",
            "päßwörd ✓ with spaces\nand lines",
            &"x".repeat(10_000),
        ] {
            let sealed = ring.seal(plaintext).unwrap();
            assert!(is_sealed(&sealed));
            assert!(!sealed.contains(plaintext) || plaintext.is_empty());
            assert_eq!(ring.open(&sealed).unwrap(), plaintext);
        }
    }

    #[test]
    fn sealed_format() {
        let ring = ring();
        let sealed = ring.seal("abc").unwrap();
        let rest = sealed.strip_prefix(SEALED_PREFIX).unwrap();
        let (id, encoded) = rest.split_once(':').unwrap();
        assert_eq!(id, ring.current_id());
        assert_eq!(key_id_of(&sealed), Some(ring.current_id()));
        assert!(
            encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{encoded}"
        );
        let payload = URL_SAFE_NO_PAD.decode(encoded).unwrap();
        assert_eq!(payload.len(), NONCE_LEN + 3 + TAG_LEN);
        // Fits a JSON string without escaping.
        assert!(!sealed.contains(['"', '\\']));
    }

    #[test]
    fn two_seals_of_the_same_plaintext_differ() {
        let ring = ring();
        let a = ring.seal("same").unwrap();
        let b = ring.seal("same").unwrap();
        assert_ne!(a, b);
        let nonce =
            |s: &str| URL_SAFE_NO_PAD.decode(parse(s).unwrap().1).unwrap()[..NONCE_LEN].to_vec();
        assert_ne!(nonce(&a), nonce(&b));
        assert_eq!(ring.open(&a).unwrap(), ring.open(&b).unwrap());
    }

    #[test]
    fn tampering_any_payload_byte_fails_authentication() {
        let ring = ring();
        let sealed = ring.seal("top secret").unwrap();
        let len = URL_SAFE_NO_PAD
            .decode(parse(&sealed).unwrap().1)
            .unwrap()
            .len();
        for i in 0..len {
            for bit in [0x01u8, 0x80] {
                let tampered = with_payload(&sealed, |p| p[i] ^= bit);
                let err = ring.open(&tampered).unwrap_err();
                assert!(
                    matches!(err, SecretError::AuthenticationFailed { .. }),
                    "byte {i}: {err:?}"
                );
                assert!(!err.to_string().contains("top secret"));
            }
        }
        // Truncation and extension are tampering too.
        let shorter = with_payload(&sealed, |p| {
            p.pop();
        });
        assert!(matches!(
            ring.open(&shorter).unwrap_err(),
            SecretError::AuthenticationFailed { .. }
        ));
        let longer = with_payload(&sealed, |p| p.push(0));
        assert!(matches!(
            ring.open(&longer).unwrap_err(),
            SecretError::AuthenticationFailed { .. }
        ));
    }

    #[test]
    fn tampering_any_character_of_the_text_never_opens() {
        let ring = ring();
        let sealed = ring.seal("top secret").unwrap();
        for i in 0..sealed.len() {
            let mut bytes = sealed.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert!(ring.open(&tampered).is_err(), "position {i}: {tampered}");
        }
    }

    #[test]
    fn short_payload_is_malformed() {
        let ring = ring();
        let sealed = format!(
            "{SEALED_PREFIX}{}:{}",
            ring.current_id(),
            URL_SAFE_NO_PAD.encode([0u8; 27])
        );
        assert!(matches!(
            ring.open(&sealed).unwrap_err(),
            SecretError::Malformed { .. }
        ));
    }

    #[test]
    fn a_different_key_fails_with_unknown_key_id() {
        let sealed = ring().seal("secret").unwrap();
        let other = ring();
        let err = other.open(&sealed).unwrap_err();
        assert!(matches!(err, SecretError::UnknownKeyId { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("unknown key id"), "{message}");
        assert!(message.contains(key_id_of(&sealed).unwrap()), "{message}");
        assert!(message.contains(other.current_id()), "{message}");
        assert!(message.contains("wrong or missing"), "{message}");
    }

    #[test]
    fn a_ciphertext_moved_under_another_key_id_fails() {
        let a = MasterKey::generate().unwrap();
        let b = MasterKey::generate().unwrap();
        let (a_id, b_id) = (a.id().to_owned(), b.id().to_owned());
        let ring = Keyring::with_old_keys(a, [b]);
        let sealed = ring.seal("secret").unwrap();
        let moved = sealed.replacen(&a_id, &b_id, 1);
        assert_ne!(moved, sealed);
        let err = ring.open(&moved).unwrap_err();
        assert!(
            matches!(&err, SecretError::AuthenticationFailed { key_id } if *key_id == b_id),
            "{err:?}"
        );
    }

    #[test]
    fn the_key_id_is_authenticated_as_associated_data() {
        // Ids are derived from keys, so a moved value also fails for using the wrong key; this
        // checks the binding itself: the right key with another id as AAD must not decrypt.
        let key = MasterKey::generate().unwrap();
        let other_id = MasterKey::generate().unwrap().id().to_owned();
        let sealed = Keyring::new(key.clone()).seal("bound").unwrap();
        let payload = URL_SAFE_NO_PAD.decode(parse(&sealed).unwrap().1).unwrap();
        let (nonce, ciphertext) = payload.split_at(NONCE_LEN);
        let nonce = Nonce::<Aes256Gcm>::try_from(nonce).unwrap();
        let decrypt = |aad: &str| {
            cipher(&key).decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
        };
        assert_eq!(decrypt(&header(key.id())).unwrap(), b"bound");
        assert!(decrypt(&header(&other_id)).is_err());
        assert!(decrypt("").is_err());
    }

    #[test]
    fn not_sealed_and_malformed_values() {
        let ring = ring();
        assert!(!is_sealed("hunter2"));
        assert!(matches!(
            ring.open("hunter2").unwrap_err(),
            SecretError::NotSealed
        ));
        assert_eq!(key_id_of("hunter2"), None);
        for damaged in [
            "stigmer-sealed:v1:",
            "stigmer-sealed:v1:0123456789abcdef",
            "stigmer-sealed:v1:XYZ:abcd",
            "stigmer-sealed:v1:0123456789ABCDEF:abcd",
        ] {
            assert!(is_sealed(damaged));
            assert_eq!(key_id_of(damaged), None);
            assert!(
                matches!(
                    ring.open(damaged).unwrap_err(),
                    SecretError::Malformed { .. }
                ),
                "{damaged}"
            );
        }
        let bad_base64 = format!("{SEALED_PREFIX}{}:not base64!", ring.current_id());
        assert!(matches!(
            ring.open(&bad_base64).unwrap_err(),
            SecretError::Malformed { .. }
        ));
    }

    #[test]
    fn rotation() {
        let old = ring();
        let old_id = old.current_id().to_owned();
        let sealed = old.seal("rotate me").unwrap();

        let (rotated, new_key) = old.rotated().unwrap();
        assert_eq!(rotated.current_id(), new_key.id());
        assert_ne!(rotated.current_id(), old_id);
        assert!(rotated.contains(&old_id));
        assert!(rotated.contains(new_key.id()));

        // Values sealed under the old key still open.
        assert_eq!(rotated.open(&sealed).unwrap(), "rotate me");
        // New values are sealed under the new key.
        assert_eq!(key_id_of(&rotated.seal("x").unwrap()), Some(new_key.id()));

        // Reseal moves the value to the new key.
        let resealed = rotated.reseal(&sealed).unwrap();
        assert_eq!(key_id_of(&resealed), Some(new_key.id()));
        assert_eq!(rotated.open(&resealed).unwrap(), "rotate me");
        // Resealing a current value still draws a fresh nonce.
        let again = rotated.reseal(&resealed).unwrap();
        assert_ne!(again, resealed);
        assert_eq!(rotated.open(&again).unwrap(), "rotate me");

        // Once old keys are dropped, old ciphertexts no longer open but resealed ones do.
        let trimmed = rotated.without_old_keys();
        assert_eq!(trimmed.current_id(), new_key.id());
        assert!(!trimmed.contains(&old_id));
        assert!(trimmed.old_keys().is_empty());
        assert!(matches!(
            trimmed.open(&sealed).unwrap_err(),
            SecretError::UnknownKeyId { .. }
        ));
        assert_eq!(trimmed.open(&resealed).unwrap(), "rotate me");

        // A second rotation keeps every earlier key.
        let (twice, _) = rotated.rotated().unwrap();
        assert_eq!(twice.keys().count(), 3);
        assert_eq!(twice.open(&sealed).unwrap(), "rotate me");
    }

    #[test]
    fn with_old_keys_drops_duplicates() {
        let a = MasterKey::generate().unwrap();
        let b = MasterKey::generate().unwrap();
        let ring = Keyring::with_old_keys(a.clone(), [b.clone(), a.clone(), b]);
        assert_eq!(ring.keys().count(), 2);
        assert_eq!(ring.current_id(), a.id());
    }

    #[test]
    fn debug_shows_ids_only() {
        let (ring, key) = ring().rotated().unwrap();
        let debug = format!("{ring:?}");
        assert!(debug.contains(key.id()), "{debug}");
        for k in ring.keys() {
            assert!(!debug.contains(&k.to_base64()), "{debug}");
        }
    }
}
