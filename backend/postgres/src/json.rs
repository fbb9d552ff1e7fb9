//! The JSON side of the schema: documents come back from jsonb as compact text, and list
//! filters become SQL with the semantics of the SQLite store's `json_extract` filters.

use stigmer_store::{JsonFilter, JsonPath, StoreError, StoreResult};
use tokio_postgres::types::ToSql;

/// Values bound to a statement built at run time, in `$n` order.
pub(crate) type Params = Vec<Box<dyn ToSql + Sync + Send>>;

pub(crate) fn param_refs(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|param| param.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// Binds `value` and returns its placeholder.
pub(crate) fn bind(params: &mut Params, value: impl ToSql + Sync + Send + 'static) -> String {
    params.push(Box::new(value));
    format!("${}", params.len())
}

/// jsonb's text form (`{"a": 1, "b": [1, 2]}`) without the blanks it puts after `:` and `,`:
/// the same document, as compact as what callers wrote and what the SQLite store returns, so
/// that sizes checked on write (ADR 0018) hold on read. jsonb reorders object keys (shorter
/// first); the value is the same, and every reader parses it.
pub(crate) fn compact(text: String) -> StoreResult<String> {
    if !text.contains([' ', '\n', '\t', '\r']) {
        return Ok(text);
    }
    let mut out = Vec::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    // Byte by byte is safe for UTF-8: every byte of a multi-byte character is >= 0x80, never
    // a quote, a backslash or a blank.
    for &byte in text.as_bytes() {
        if in_string {
            out.push(byte);
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else if byte == b'"' {
            in_string = true;
            out.push(byte);
        } else if !byte.is_ascii_whitespace() {
            out.push(byte);
        }
    }
    String::from_utf8(out).map_err(|err| StoreError::Internal(format!("compacting JSON: {err}")))
}

/// The jsonb value at `path` in `data`, NULL where the path leads nowhere. Each step is `->`
/// with a text key, which, like SQLite's quoted keys, only ever looks into objects: a key "0"
/// is not an array index. Keys are bound parameters, never spliced into the SQL.
fn value_at(path: &JsonPath, params: &mut Params) -> String {
    let mut sql = String::from("(data");
    for key in path.keys() {
        sql.push_str(" -> ");
        sql.push_str(&bind(params, key.clone()));
        sql.push_str("::text");
    }
    sql.push(')');
    sql
}

/// One filter as SQL, its parameters appended to `params`. Comparisons follow what the SQLite
/// store's `json_extract(...) = ?` does with a text value: only a JSON string equal to it
/// matches, never a number or a boolean that prints the same.
pub(crate) fn filter_sql(filter: &JsonFilter, params: &mut Params) -> StoreResult<String> {
    Ok(match filter {
        JsonFilter::Equals { path, value } => {
            let at = value_at(path, params);
            format!("({at} = to_jsonb({}::text))", bind(params, value.clone()))
        }
        JsonFilter::NotEquals { path, value } => {
            let at = value_at(path, params);
            format!(
                "({at} IS DISTINCT FROM to_jsonb({}::text))",
                bind(params, value.clone())
            )
        }
        JsonFilter::In { path, values } => {
            let at = value_at(path, params);
            let list = bind(params, values.clone());
            format!("(jsonb_typeof({at}) = 'string' AND {at} #>> '{{}}' = ANY({list}::text[]))")
        }
        JsonFilter::NotIn { path, values } => {
            let at = value_at(path, params);
            let list = bind(params, values.clone());
            format!(
                "(NOT coalesce(jsonb_typeof({at}) = 'string' AND {at} #>> '{{}}' = ANY({list}::text[]), false))"
            )
        }
        JsonFilter::Exists { path } => format!("({} IS NOT NULL)", value_at(path, params)),
        JsonFilter::Missing { path } => format!("({} IS NULL)", value_at(path, params)),
        JsonFilter::Prefix { path, prefix } => {
            let at = value_at(path, params);
            format!(
                "starts_with({at} #>> '{{}}', {}::text)",
                bind(params, prefix.clone())
            )
        }
        // SQLite's json_each walks an array's elements, an object's values, or the one value of
        // a scalar: the value matches when any of those is the string.
        JsonFilter::Contains { path, value } => {
            let at = value_at(path, params);
            let wanted = format!("to_jsonb({}::text)", bind(params, value.clone()));
            format!(
                "(CASE jsonb_typeof({at}) \
                   WHEN 'array' THEN {at} @> jsonb_build_array({wanted}) \
                   WHEN 'object' THEN EXISTS (SELECT 1 FROM jsonb_each({at}) AS member \
                                              WHERE member.value = {wanted}) \
                   ELSE {at} = {wanted} END)"
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_drops_blanks_outside_strings_only() {
        let text = r#"{"a": "x y, z: \"q\" \\", "b": [1, 2.50, {"c": null}], "é": "ü "}"#;
        assert_eq!(
            compact(text.to_string()).expect("compact"),
            r#"{"a":"x y, z: \"q\" \\","b":[1,2.50,{"c":null}],"é":"ü "}"#
        );
        assert_eq!(compact("[]".into()).expect("compact"), "[]");
    }

    #[test]
    fn filters_bind_keys_and_values_instead_of_splicing_them() {
        let mut params = Params::new();
        let sql = filter_sql(
            &JsonFilter::Equals {
                path: JsonPath::new(["metadata", "labels", "it's.a/key"]),
                value: "v'1".into(),
            },
            &mut params,
        )
        .expect("sql");
        assert_eq!(
            sql,
            "((data -> $1::text -> $2::text -> $3::text) = to_jsonb($4::text))"
        );
        assert_eq!(params.len(), 4);
    }
}
