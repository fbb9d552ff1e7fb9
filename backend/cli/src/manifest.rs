//! Reading manifests: files, directories and stdin, YAML (several documents separated by
//! `---`) or JSON (one object, or an array of them), and finding every mistake in them, each
//! reported with its file, document, line and path.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result, bail};
use prost_reflect::MessageDescriptor;
use serde::Deserialize;
use serde_json::Value;
use stigmer_client::{API_VERSION, Client, ClientError};

use crate::lines::{Lines, parse_path};
pub use crate::schema::Problem;
use crate::schema::type_name;

/// One document of one source, numbered from 1 within its file.
pub struct Document {
    /// The file as the user named it (`<stdin>` for `-`).
    pub source: String,
    pub number: usize,
    /// The parsed document, or why it could not be parsed.
    pub value: Result<Value, String>,
    text: Arc<Text>,
}

/// A file's text, kept to find lines in when a document of it has a mistake.
struct Text {
    text: String,
    json: bool,
    /// Read on the first mistake, once for all the file's documents.
    lines: OnceLock<Vec<Lines>>,
}

impl Document {
    /// A document not read from a file (a skill folder given to `-f`): no lines to name.
    pub fn standalone(
        source: impl Into<String>,
        number: usize,
        value: Result<Value, String>,
    ) -> Self {
        Self {
            source: source.into(),
            number,
            value,
            text: Arc::new(Text {
                text: String::new(),
                json: true,
                lines: OnceLock::new(),
            }),
        }
    }

    /// `agents.yaml, document 2`
    pub fn location(&self) -> String {
        format!("{}, document {}", self.source, self.number)
    }

    /// The line `path` (or the nearest field around it that the document has) is written on.
    fn line_of(&self, path: &str) -> Option<usize> {
        Some(self.lines()?.line_of(&parse_path(path)))
    }

    fn lines(&self) -> Option<&Lines> {
        let text = &self.text;
        text.lines
            .get_or_init(|| crate::lines::documents(&text.text, text.json))
            .get(self.number.checked_sub(1)?)
    }

    /// Prints every problem on its own line, `agents.yaml, document 2, line 7: path: what`,
    /// in the order they are written.
    pub fn report(&self, problems: &[Problem]) {
        let mut located: Vec<(Option<usize>, &Problem)> = problems
            .iter()
            .map(|problem| (self.line_of(&problem.path), problem))
            .collect();
        located.sort_by_key(|(line, _)| *line);
        for (line, problem) in located {
            match line {
                Some(line) => eprintln!("error: {}, line {line}: {problem}", self.location()),
                None => eprintln!("error: {}: {problem}", self.location()),
            }
        }
    }

    /// Every mistake of `value` as a `descriptor` message.
    fn check_fields(&self, descriptor: &MessageDescriptor, value: &Value) -> Vec<Problem> {
        let source = |path: &str| {
            self.lines()
                .and_then(|lines| lines.plain_text(&parse_path(path)))
                .map(str::to_string)
        };
        crate::schema::check(descriptor, value, &source)
    }
}

/// Every mistake a document shows before it is sent: its envelope, its kind, then each of its
/// fields against the kind's message.
pub fn check(client: &Client, document: &Document, value: &Value) -> Result<(), Vec<Problem>> {
    if let Some(problem) = shape_problem(value) {
        return Err(vec![problem]);
    }
    let kind = value["kind"].as_str().unwrap_or_default();
    let kind = client
        .kind(kind)
        .map_err(|err| vec![Problem::new("kind", err.to_string())])?;
    let problems = document.check_fields(&kind.message, value);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// A server's refusal as problems: one per field it names (in the JSON names a manifest uses,
/// so each finds its line), or else `message` alone.
pub fn server_problems(err: &ClientError, message: String) -> Vec<Problem> {
    let violations = err.field_violations();
    if violations.is_empty() {
        return vec![Problem::from(message)];
    }
    violations
        .into_iter()
        .map(|(field, description)| Problem::new(field, description))
        .collect()
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
            documents.extend(parse("<stdin>", text, false));
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
    Ok(parse(&path.display().to_string(), text, json))
}

/// The documents of one file's text. Empty YAML documents are skipped (but counted).
pub fn parse(source: &str, text: String, json: bool) -> Vec<Document> {
    let text = Arc::new(Text {
        text,
        json,
        lines: OnceLock::new(),
    });
    let doc = |number: usize, value: Result<Value, String>| Document {
        source: source.to_string(),
        number,
        value,
        text: Arc::clone(&text),
    };
    if json {
        return match serde_json::from_str::<Value>(&text.text) {
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
    for (i, document) in serde_yaml_ng::Deserializer::from_str(&text.text).enumerate() {
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
    shape_problem(value).map_or(Ok(()), |problem| Err(problem.to_string()))
}

fn shape_problem(value: &Value) -> Option<Problem> {
    let Some(object) = value.as_object() else {
        return Some(Problem::from(format!(
            "a manifest must be a mapping with kind, metadata and spec, not {}",
            type_name(value)
        )));
    };
    if let Some(message) = api_version_problem(object.get("apiVersion")) {
        return Some(Problem::new("apiVersion", message));
    }
    let message = match object.get("kind") {
        None => format!(
            "missing; every document needs a kind, such as Agent (apiVersion may be left out, \
             and is {API_VERSION} when given)"
        ),
        Some(Value::String(kind)) if !kind.is_empty() => return None,
        Some(_) => "must be a non-empty string such as Agent".into(),
    };
    Some(Problem::new("kind", message))
}

fn api_version_problem(api_version: Option<&Value>) -> Option<String> {
    match api_version? {
        Value::String(version) if version == API_VERSION => None,
        Value::String(version) => Some(format!(
            "{version:?} is not supported; use {API_VERSION}, or leave apiVersion out"
        )),
        other => Some(format!(
            "must be the string {API_VERSION} (or left out), not {}",
            type_name(other)
        )),
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
            "kind: Agent\n---\n---\nkind: Skill\n---\n- 1\n".into(),
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
        let docs = parse("a.json", r#"[{"kind":"Agent"},{"x":1}]"#.into(), true);
        assert_eq!(docs.len(), 2);
        assert!(check_shape(docs[1].value.as_ref().unwrap()).is_err());
        assert!(parse("b.json", "{".into(), true)[0].value.is_err());
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
