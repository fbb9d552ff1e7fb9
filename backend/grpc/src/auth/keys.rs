//! API keys as upstream makes them (`stk_` and 32 random bytes in unpadded base64url) and as the
//! server keeps them: only the SHA-256 of the whole key (unpadded base64url, upstream's
//! `spec.key_hash`) and its last six characters.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every key starts with this, so that secret scanners and people recognise one.
pub const KEY_PREFIX: &str = "stk_";
const RANDOM_BYTES: usize = 32;
/// Characters of the key kept for display (`ApiKeySpec.fingerprint`).
const FINGERPRINT_LEN: usize = 6;
/// Unpadded base64url of [`RANDOM_BYTES`].
const ENCODED_LEN: usize = 43;
/// A slug holds at most 63 lowercase characters: "h" and 62 hex digits of the hash.
const SLUG_HASH_DIGITS: usize = 62;

/// A key just made: the raw key, shown once, and what is stored of it.
pub struct NewKey {
    pub raw: String,
    pub hash: String,
    pub fingerprint: String,
}

impl NewKey {
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; RANDOM_BYTES];
        getrandom::fill(&mut bytes)?;
        let raw = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
        Ok(Self {
            hash: hash(&raw),
            fingerprint: fingerprint(&raw),
            raw,
        })
    }
}

/// The stored form of a key: SHA-256 of the whole key, prefix included, in unpadded base64url.
pub fn hash(raw: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(raw.as_bytes()))
}

pub fn fingerprint(raw: &str) -> String {
    raw[raw.len().saturating_sub(FINGERPRINT_LEN)..].to_string()
}

/// The slug an ApiKey is stored under, so that the store's unique (kind, org, slug) index
/// finds a key by its hash in one lookup.
/// `None` for what is not a hash this module made.
pub fn lookup_slug(hash: &str) -> Option<String> {
    let digest = URL_SAFE_NO_PAD.decode(hash).ok()?;
    let hex = hex::encode(digest);
    Some(format!("h{}", hex.get(..SLUG_HASH_DIGITS)?))
}

/// Whether a stored hash is the hash of a presented key, in time that does not depend on
/// where they differ.
pub fn hashes_match(stored: &str, presented: &str) -> bool {
    stored.as_bytes().ct_eq(presented.as_bytes()).into()
}

/// The key in an `authorization` header value, if it is `Bearer stk_…` with a key of the
/// right shape. What is wrong with a refused header is never told to the caller.
pub fn bearer_key(header: &str) -> Option<&str> {
    let (scheme, key) = header.trim().split_once(' ')?;
    let key = key.trim();
    let well_formed = scheme.eq_ignore_ascii_case("bearer")
        && key.len() == KEY_PREFIX.len() + ENCODED_LEN
        && key.starts_with(KEY_PREFIX)
        && key[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_is_long_random_and_stored_only_as_hash_and_fingerprint() {
        let one = NewKey::generate().expect("random");
        let two = NewKey::generate().expect("random");
        assert_ne!(one.raw, two.raw);
        assert!(
            one.raw.starts_with("stk_") && one.raw.len() == 47,
            "{}",
            one.raw
        );
        assert_eq!(one.hash.len(), 43);
        assert!(!one.hash.contains(&one.raw[4..]));
        assert_eq!(one.fingerprint, one.raw[41..]);
        assert_eq!(hash(&one.raw), one.hash);
        assert_eq!(lookup_slug("not base64!"), None);
        let slug = lookup_slug(&one.hash).expect("a hash");
        assert!(
            crate::naming::is_valid_slug(&slug) && slug.len() == 63,
            "{slug}"
        );
    }

    #[test]
    fn only_a_well_formed_bearer_key_is_read() {
        let key = NewKey::generate().expect("random").raw;
        assert_eq!(bearer_key(&format!("Bearer {key}")), Some(key.as_str()));
        assert_eq!(bearer_key(&format!("bearer  {key} ")), Some(key.as_str()));
        for refused in [
            String::new(),
            key.clone(),
            format!("Basic {key}"),
            format!("Bearer {}", &key[..40]),
            format!("Bearer {}=", &key[..46]),
            format!("Bearer {}X", key),
            format!("Bearer sk_{}", &key[4..]),
        ] {
            assert_eq!(bearer_key(&refused), None, "{refused}");
        }
    }

    #[test]
    fn hashes_match_only_when_equal() {
        let stored = hash("stk_a");
        assert!(hashes_match(&stored, &hash("stk_a")));
        assert!(!hashes_match(&stored, &hash("stk_b")));
        assert!(!hashes_match(&stored, &stored[..10]));
    }
}
