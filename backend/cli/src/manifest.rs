//! Reading manifests: files, directories and stdin, YAML (several documents separated by
//! `---`) or JSON (one object, or an array of them).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::Value;
use stigmer_client::API_VERSION;

/// One document of one source, numbered from 1 within its file.
pub struct Document {
    /// The file as the user named it (`<stdin>` for `-`).
    pub source: String,
    pub number: usize,
    /// The parsed document, or why it could not be parsed.
    pub value: Result<Value, String>,
}

impl Document {
    /// `agents.yaml, document 2`
    pub fn location(&self) -> String {
        format!("{}, document {}", self.source, self.number)
    }
}

/// Every document of every `-f` argument, in order. A directory means each *.yaml, *.yml and
/// *.json file in it, sorted by name. Files that cannot be read are errors.
pub fn read_all(args: &[PathBuf]) -> Result<Vec<Document>> {
    let mut documents = Vec::new();
    for arg in args {
        if arg.as_os_str() == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("cannot read manifests from stdin")?;
            documents.extend(parse("<stdin>", &text, false));
        } else if arg.is_dir() {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(arg)
                .with_context(|| format!("cannot read directory {}", arg.display()))?
            {
                let path = entry
                    .with_context(|| format!("cannot read directory {}", arg.display()))?
                    .path();
                let manifest = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
                if manifest && path.is_file() {
                    files.push(path);
                }
            }
            files.sort();
            if files.is_empty() {
                bail!(
                    "{} holds no *.yaml, *.yml or *.json manifests",
                    arg.display()
                );
            }
            for file in files {
                documents.extend(read_file(&file)?);
            }
        } else {
            documents.extend(read_file(arg)?);
        }
    }
    Ok(documents)
}

fn read_file(path: &Path) -> Result<Vec<Document>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let json = path.extension().and_then(|e| e.to_str()) == Some("json");
    Ok(parse(&path.display().to_string(), &text, json))
}

/// The documents of one file's text. Empty YAML documents are skipped (but counted).
pub fn parse(source: &str, text: &str, json: bool) -> Vec<Document> {
    let doc = |number: usize, value: Result<Value, String>| Document {
        source: source.to_string(),
        number,
        value,
    };
    if json {
        return match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| doc(i + 1, Ok(v)))
                .collect(),
            Ok(value) => vec![doc(1, Ok(value))],
            Err(err) => vec![doc(1, Err(format!("not valid JSON: {err}")))],
        };
    }
    let mut documents = Vec::new();
    for (i, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        match Value::deserialize(document) {
            Ok(Value::Null) => {}
            Ok(value) => documents.push(doc(i + 1, Ok(value))),
            Err(err) => {
                // The parser cannot resynchronise after a syntax error: stop at this file.
                documents.push(doc(i + 1, Err(format!("not valid YAML: {err}"))));
                break;
            }
        }
    }
    documents
}

/// Checks what every manifest needs before it goes to the client: a mapping with a kind, and
/// no apiVersion but ours. The rule, as the README states it: `kind` is required; `apiVersion`
/// may be left out (the server fills it in), and when given must be [`API_VERSION`].
pub fn check_shape(value: &Value) -> Result<(), String> {
    let Some(object) = value.as_object() else {
        return Err(format!(
            "a manifest must be a mapping with kind, metadata and spec, not {}",
            type_name(value)
        ));
    };
    check_api_version(object.get("apiVersion"))?;
    match object.get("kind") {
        None => Err(format!(
            "kind: missing; every document needs a kind, such as Agent (apiVersion may be left \
             out, and is {API_VERSION} when given)"
        )),
        Some(Value::String(kind)) if !kind.is_empty() => Ok(()),
        Some(_) => Err("kind: must be a non-empty string such as Agent".into()),
    }
}

fn check_api_version(api_version: Option<&Value>) -> Result<(), String> {
    match api_version {
        None => Ok(()),
        Some(Value::String(version)) if version == API_VERSION => Ok(()),
        Some(Value::String(version)) => Err(format!(
            "apiVersion: {version:?} is not supported; use {API_VERSION}, or leave apiVersion out"
        )),
        Some(other) => Err(format!(
            "apiVersion: must be the string {API_VERSION} (or left out), not {}",
            type_name(other)
        )),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// The slug a manifest names: metadata.slug, else the slug of metadata.name (as the server
/// derives it), else empty.
pub fn manifest_slug(value: &Value) -> String {
    let metadata = value.get("metadata");
    if let Some(slug) = metadata
        .and_then(|m| m.get("slug"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        return slug.to_string();
    }
    metadata
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(slug_from_name)
        .unwrap_or_default()
}

/// The server's own slug rule, so the CLI names resources exactly as the server will.
pub use stigmer_client::slug_from_name;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_documents_are_numbered_and_empty_ones_skipped() {
        let docs = parse(
            "a.yaml",
            "kind: Agent\n---\n---\nkind: Skill\n---\n- 1\n",
            false,
        );
        let numbers: Vec<usize> = docs.iter().map(|d| d.number).collect();
        assert_eq!(numbers, vec![1, 3, 4]);
        assert!(check_shape(docs[0].value.as_ref().unwrap()).is_ok());
        let err = check_shape(docs[2].value.as_ref().unwrap()).unwrap_err();
        assert!(err.contains("mapping"), "{err}");
        assert_eq!(docs[1].location(), "a.yaml, document 3");
    }

    #[test]
    fn api_version_may_be_left_out_but_not_wrong() {
        let shape = |v: serde_json::Value| check_shape(&v);
        assert!(shape(serde_json::json!({"kind": "Agent"})).is_ok());
        assert!(shape(serde_json::json!({"apiVersion": API_VERSION, "kind": "Agent"})).is_ok());
        let err = shape(serde_json::json!({"apiVersion": "v1", "kind": "Agent"})).unwrap_err();
        assert!(
            err.starts_with("apiVersion: \"v1\" is not supported"),
            "{err}"
        );
        let err = shape(serde_json::json!({"apiVersion": 1, "kind": "Agent"})).unwrap_err();
        assert!(err.contains("not a number"), "{err}");
    }

    #[test]
    fn json_arrays_are_several_documents() {
        let docs = parse("a.json", r#"[{"kind":"Agent"},{"x":1}]"#, true);
        assert_eq!(docs.len(), 2);
        assert!(check_shape(docs[1].value.as_ref().unwrap()).is_err());
        assert!(parse("b.json", "{", true)[0].value.is_err());
    }

    #[test]
    fn slugs_follow_the_server() {
        assert_eq!(slug_from_name("Code Reviewer!"), "code-reviewer");
        assert_eq!(
            manifest_slug(&serde_json::json!({"metadata":{"name":"A b","slug":"x"}})),
            "x"
        );
    }
}
