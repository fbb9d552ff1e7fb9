//! Server-owned names: ids and slugs. Clients use the slug rules to find what they apply.

use std::sync::Mutex;

use ulid::{Generator, Ulid};

/// Ids of one process sort in creation order even within a millisecond, so a listing in id
/// order is a listing in creation order.
static ULIDS: Mutex<Generator> = Mutex::new(Generator::new());

/// `<prefix>-<ULID in lowercase>`, e.g. `agt-01arz3ndektsv4rrffq69g5fav`.
pub fn new_id(prefix: &str) -> String {
    let ulid = match ULIDS.lock() {
        Ok(mut generator) => generator.generate().unwrap_or_else(|_| Ulid::generate()),
        Err(_) => Ulid::generate(),
    };
    format!("{prefix}-{}", ulid.to_string().to_lowercase())
}

/// The contract's slug of a name: lowercase; spaces become `-`; anything but a-z, 0-9 and `-`
/// is dropped; runs of `-` collapse; leading and trailing `-` go.
pub fn slug_from_name(name: &str) -> String {
    slug_of_ascii(&transliterated(name))
}

/// Letters of other scripts spelled in ASCII (`Ü` → `U`, `日本` → `Ri Ben`), so that a name in
/// any language keeps its words in the slug; symbols and emoji are left to be dropped.
fn transliterated(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match deunicode::deunicode_char(c) {
            Some(ascii) if !c.is_ascii() && c.is_alphanumeric() => {
                out.push_str(ascii.trim());
                // Scripts without letters cases (CJK) spell each character as a word.
                if ascii.ends_with(' ') {
                    out.push(' ');
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The slug rule of ADR 0009 before transliteration (non-ASCII letters dropped), which
/// resources named before it still carry: apply looks them up by it too.
pub fn legacy_slug_from_name(name: &str) -> String {
    slug_of_ascii(name)
}

fn slug_of_ascii(name: &str) -> String {
    let mut slug = String::with_capacity(name.len());
    for c in name.chars().flat_map(char::to_lowercase) {
        let c = if c == ' ' { '-' } else { c };
        match c {
            'a'..='z' | '0'..='9' => slug.push(c),
            '-' if !slug.is_empty() && !slug.ends_with('-') => slug.push('-'),
            _ => {}
        }
    }
    while slug.ends_with('-') {
        slug.pop();
    }
    slug
}

/// Longest slug the contract allows (a DNS label).
pub const MAX_SLUG_LEN: usize = 63;

/// `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`
pub fn is_valid_slug(slug: &str) -> bool {
    let bytes = slug.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= MAX_SLUG_LEN
                && alnum(first)
                && alnum(last)
                && bytes.iter().all(|b| alnum(b) || *b == b'-')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_the_contract() {
        let cases = [
            ("My Cool Agent", "my-cool-agent"),
            ("  leading and trailing  ", "leading-and-trailing"),
            ("a -- b", "a-b"),
            ("Ünïcode_and_under_scores!", "unicodeandunderscores"),
            ("---", ""),
            ("v1.2 Release", "v12-release"),
            // Letters of any script are spelled in ASCII; symbols and emoji are dropped.
            ("Überprüfer 🚀", "uberprufer"),
            ("Crème brûlée", "creme-brulee"),
            ("Straße", "strasse"),
            ("日本語 Agent", "ri-ben-yu-agent"),
            ("Ωmega", "omega"),
        ];
        for (name, slug) in cases {
            assert_eq!(slug_from_name(name), slug, "name {name:?}");
        }
    }

    #[test]
    fn the_legacy_rule_dropped_non_ascii_letters() {
        assert_eq!(legacy_slug_from_name("Überprüfer 🚀"), "berprfer");
        assert_eq!(
            legacy_slug_from_name("My Agent"),
            slug_from_name("My Agent")
        );
    }

    #[test]
    fn slug_validity_matches_the_pattern() {
        assert!(is_valid_slug("a"));
        assert!(is_valid_slug("my-agent-2"));
        assert!(is_valid_slug(&"a".repeat(63)));
        assert!(!is_valid_slug(&"a".repeat(64)));
        assert!(!is_valid_slug(""));
        assert!(!is_valid_slug("-a"));
        assert!(!is_valid_slug("a-"));
        assert!(!is_valid_slug("A"));
        assert!(!is_valid_slug("a_b"));
    }

    #[test]
    fn ids_have_the_prefix_and_sort_in_creation_order() {
        let ids: Vec<String> = (0..1000).map(|_| new_id("agt")).collect();
        assert!(
            ids.iter()
                .all(|id| id.starts_with("agt-") && id.len() == 30)
        );
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(ids.iter().all(|id| is_valid_slug(id)));
    }
}
