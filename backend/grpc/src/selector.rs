//! Kubernetes-style label selectors (`app=web,tier!=db,env in (a,b),!legacy`) turned into
//! store filters on `metadata.labels`.

use stigmer_store::{JsonFilter, JsonPath};

/// Parses `selector`; the error says what is wrong and where.
pub(crate) fn parse(selector: &str) -> Result<Vec<JsonFilter>, String> {
    split_terms(selector)?
        .into_iter()
        .map(|term| parse_term(term.trim()))
        .collect()
}

/// Splits on commas outside parentheses.
fn split_terms(selector: &str) -> Result<Vec<&str>, String> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (at, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("unbalanced ')' at character {}", at + 1))?;
            }
            ',' if depth == 0 => {
                terms.push(&selector[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '(': a set must end with ')'".into());
    }
    terms.push(&selector[start..]);
    if terms.len() == 1 && terms[0].trim().is_empty() {
        return Ok(Vec::new());
    }
    Ok(terms)
}

fn parse_term(term: &str) -> Result<JsonFilter, String> {
    if term.is_empty() {
        return Err("empty term (two commas in a row, or a trailing comma)".into());
    }
    if let Some(key) = term.strip_prefix('!') {
        return Ok(JsonFilter::Missing {
            path: label_path(key.trim())?,
        });
    }
    for (operator, negated) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((key, value)) = term.split_once(operator) {
            let path = label_path(key.trim())?;
            let value = label_value(value.trim())?;
            return Ok(if negated {
                JsonFilter::NotEquals { path, value }
            } else {
                JsonFilter::Equals { path, value }
            });
        }
    }
    let words: Vec<&str> = term.splitn(2, char::is_whitespace).collect();
    if let [key, rest] = words[..] {
        let rest = rest.trim_start();
        for (operator, negated) in [("notin", true), ("in", false)] {
            if let Some(set) = rest.strip_prefix(operator) {
                let path = label_path(key)?;
                let values = parse_set(set.trim())?;
                return Ok(if negated {
                    JsonFilter::NotIn { path, values }
                } else {
                    JsonFilter::In { path, values }
                });
            }
        }
        return Err(format!(
            "{term:?}: expected key=value, key!=value, key in (a,b), key notin (a,b), key or !key"
        ));
    }
    Ok(JsonFilter::Exists {
        path: label_path(term)?,
    })
}

fn parse_set(set: &str) -> Result<Vec<String>, String> {
    let inner = set
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("{set:?}: a set is written (a,b,c)"))?;
    let values = inner
        .split(',')
        .map(|v| label_value(v.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    if values.iter().all(String::is_empty) {
        return Err("a set needs at least one value".into());
    }
    Ok(values)
}

/// `[prefix/]name`, the label key grammar of Kubernetes, as a JSON path.
fn label_path(key: &str) -> Result<JsonPath, String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if !is_label_word(name) || name.is_empty() {
        return Err(format!(
            "{key:?} is not a label key: 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, optionally after a DNS prefix and '/'"
        ));
    }
    if let Some(prefix) = prefix {
        let valid = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !valid {
            return Err(format!(
                "{prefix:?} is not a DNS subdomain prefix of a label key"
            ));
        }
    }
    Ok(JsonPath::new(["metadata", "labels", key]))
}

fn label_value(value: &str) -> Result<String, String> {
    if value.is_empty() || is_label_word(value) {
        Ok(value.to_string())
    } else {
        Err(format!(
            "{value:?} is not a label value: up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

fn is_label_word(word: &str) -> bool {
    let bytes = word.as_bytes();
    let alnum = |b: &u8| b.is_ascii_alphanumeric();
    bytes.len() <= 63
        && bytes.first().is_none_or(alnum)
        && bytes.last().is_none_or(alnum)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(key: &str) -> JsonPath {
        JsonPath::new(["metadata", "labels", key])
    }

    #[test]
    fn parses_every_operator() {
        let filters =
            parse("app=web, tier!=db,env in (prod, staging),zone notin (x),canary,!legacy,a==b")
                .expect("valid");
        assert_eq!(
            filters,
            vec![
                JsonFilter::Equals {
                    path: path("app"),
                    value: "web".into()
                },
                JsonFilter::NotEquals {
                    path: path("tier"),
                    value: "db".into()
                },
                JsonFilter::In {
                    path: path("env"),
                    values: vec!["prod".into(), "staging".into()]
                },
                JsonFilter::NotIn {
                    path: path("zone"),
                    values: vec!["x".into()]
                },
                JsonFilter::Exists {
                    path: path("canary")
                },
                JsonFilter::Missing {
                    path: path("legacy")
                },
                JsonFilter::Equals {
                    path: path("a"),
                    value: "b".into()
                },
            ]
        );
        assert_eq!(parse("").expect("empty"), Vec::new());
        assert_eq!(
            parse("app.kubernetes.io/name=web").expect("prefixed key"),
            vec![JsonFilter::Equals {
                path: path("app.kubernetes.io/name"),
                value: "web".into()
            }]
        );
    }

    #[test]
    fn refuses_what_is_not_a_selector() {
        for bad in [
            "app=",
            "=web",
            "app==web==x",
            "app in web",
            "app in (a,b",
            "app)",
            "a,,b",
            "a,",
            "app\"=x",
            "app=we b",
            "Bad_Prefix/x=y",
            "key with spaces=1",
            "app in ()",
        ] {
            let parsed = parse(bad);
            if bad == "app=" {
                // An empty value is a valid label value (the label is set to "").
                assert!(parsed.is_ok(), "{bad:?}");
            } else {
                assert!(parsed.is_err(), "{bad:?} parsed as {parsed:?}");
            }
        }
    }
}
