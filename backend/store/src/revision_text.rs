//! Setting `$.metadata.revision` in a resource's JSON text without parsing it into a tree: the
//! writer knows a row's revision before it inserts the row, so the document can be stored as
//! it is meant to read instead of being rewritten by the database (`json_set`) on every write.

/// `data` with `$.metadata.revision` set to `revision` as a proto3 JSON int64 (a string),
/// exactly as SQLite's `json_set(data, '$.metadata.revision', '<revision>')` writes it:
/// an existing member's value replaced in place, a missing one appended to `metadata`, a
/// missing `metadata` appended to the document.
///
/// Only for the documents the server writes: compact JSON (no whitespace outside strings), an
/// object whose first `metadata` member, if any, is an object, and no escape in the keys of
/// either. `None` for anything else (and for some malformed text, not all: the database still
/// validates what it stores), which the caller leaves to the database.
pub fn with_revision(data: &str, revision: i64) -> Option<String> {
    let bytes = data.as_bytes();
    if bytes.first() != Some(&b'{') || bytes.last() != Some(&b'}') {
        return None;
    }
    let value = format!("\"{revision}\"");
    let top = Object::at(bytes, 0)?;
    if top.end != bytes.len() {
        return None;
    }
    let Some(metadata) = top.member(bytes, "metadata")? else {
        return Some(append(
            data,
            top,
            &format!("\"metadata\":{{\"revision\":{value}}}"),
        ));
    };
    if bytes.get(metadata.start) != Some(&b'{') {
        return None;
    }
    let metadata = Object::at(bytes, metadata.start)?;
    Some(match metadata.member(bytes, "revision")? {
        Some(old) => {
            let mut out = String::with_capacity(data.len() + value.len());
            out.push_str(&data[..old.start]);
            out.push_str(&value);
            out.push_str(&data[old.end..]);
            out
        }
        None => append(data, metadata, &format!("\"revision\":{value}")),
    })
}

/// `member` added as the last member of `object`.
fn append(data: &str, object: Object, member: &str) -> String {
    let close = object.end - 1;
    let mut out = String::with_capacity(data.len() + member.len() + 1);
    out.push_str(&data[..close]);
    if !object.empty {
        out.push(',');
    }
    out.push_str(member);
    out.push_str(&data[close..]);
    out
}

/// A span of the text: `start..end`.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
}

/// An object of the text: from its `{` to just after its `}`.
#[derive(Debug, Clone, Copy)]
struct Object {
    start: usize,
    end: usize,
    empty: bool,
}

impl Object {
    fn at(bytes: &[u8], start: usize) -> Option<Self> {
        let end = skip_value(bytes, start)?;
        Some(Self {
            start,
            end,
            empty: end == start + 2,
        })
    }

    /// The value of the first member named `name` (`Ok(None)`: there is none); `None` when
    /// the object is not one this module handles.
    #[allow(clippy::option_option)]
    fn member(self, bytes: &[u8], name: &str) -> Option<Option<Span>> {
        if self.empty {
            return Some(None);
        }
        let mut at = self.start + 1;
        loop {
            if bytes.get(at) != Some(&b'"') {
                return None;
            }
            let key_end = skip_string(bytes, at)?;
            let key = &bytes[at + 1..key_end - 1];
            if key.contains(&b'\\') || bytes.get(key_end) != Some(&b':') {
                return None;
            }
            let value = Span {
                start: key_end + 1,
                end: skip_value(bytes, key_end + 1)?,
            };
            if key == name.as_bytes() {
                return Some(Some(value));
            }
            match bytes.get(value.end) {
                Some(b',') => at = value.end + 1,
                Some(b'}') if value.end + 1 == self.end => return Some(None),
                _ => return None,
            }
        }
    }
}

/// Just after the string that starts at `start` (its opening quote).
fn skip_string(bytes: &[u8], start: usize) -> Option<usize> {
    let mut at = start + 1;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            b'"' => return Some(at + 1),
            _ => at += 1,
        }
    }
    None
}

/// Just after the compact value that starts at `start`.
fn skip_value(bytes: &[u8], start: usize) -> Option<usize> {
    match bytes.get(start)? {
        b'"' => skip_string(bytes, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut at = start;
            while at < bytes.len() {
                match bytes[at] {
                    b'"' => {
                        at = skip_string(bytes, at)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(at + 1);
                        }
                    }
                    b' ' | b'\t' | b'\n' | b'\r' => return None,
                    _ => {}
                }
                at += 1;
            }
            None
        }
        _ => {
            let len = bytes[start..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']'))?;
            let scalar = &bytes[start..start + len];
            (len > 0 && !scalar.iter().any(u8::is_ascii_whitespace)).then_some(start + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_revision;

    #[test]
    fn sets_replaces_or_appends_the_revision() {
        let cases = [
            (
                r#"{"metadata":{"id":"a"}}"#,
                r#"{"metadata":{"id":"a","revision":"7"}}"#,
            ),
            (
                r#"{"metadata":{"revision":"3","id":"a"},"spec":{}}"#,
                r#"{"metadata":{"revision":"7","id":"a"},"spec":{}}"#,
            ),
            (r#"{"metadata":{}}"#, r#"{"metadata":{"revision":"7"}}"#),
            (r#"{}"#, r#"{"metadata":{"revision":"7"}}"#),
            (
                r#"{"spec":{"metadata":{"x":1}},"kind":"A"}"#,
                r#"{"spec":{"metadata":{"x":1}},"kind":"A","metadata":{"revision":"7"}}"#,
            ),
            (
                r#"{"a":"}\"{","metadata":{"l":{"revision":"x"},"n":[1,{"b":2}]}}"#,
                r#"{"a":"}\"{","metadata":{"l":{"revision":"x"},"n":[1,{"b":2}],"revision":"7"}}"#,
            ),
            (
                r#"{"metadata":{"revision":12},"x":true}"#,
                r#"{"metadata":{"revision":"7"},"x":true}"#,
            ),
        ];
        for (data, expected) in cases {
            assert_eq!(with_revision(data, 7).as_deref(), Some(expected), "{data}");
        }
    }

    #[test]
    fn leaves_what_it_does_not_handle_to_the_database() {
        for data in [
            r#"{ "metadata": {} }"#,
            r#"{"metadata":{"id": "a"}}"#,
            r#"{"metadata":[1]}"#,
            r#"{"meta\u0064ata":{}}"#,
            r#"[{"metadata":{}}]"#,
            r#"{"metadata":{"id":"a"}"#,
            r#"{"metadata":{"id":"a"}}}"#,
            r#"{"a":tr ue}"#,
            "",
        ] {
            assert_eq!(with_revision(data, 7), None, "{data}");
        }
    }
}
