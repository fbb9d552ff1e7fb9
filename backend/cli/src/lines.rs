//! Where each field of a manifest was written. serde's YAML values carry no positions, so the
//! text is read a second time, as YAML events with their spans, only when an error needs a
//! line: each node's path (`spec.tasks[0].agent`) maps to the line of its key or list item.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// One step of a path: a mapping key (a field or a map entry) or a list index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// `spec.data["A.B"].value` → [spec, data, A.B, value]; `tasks[2]` → [tasks, 2]. Server
/// violations and our own checks both write paths this way.
pub fn parse_path(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut chars = path.chars().peekable();
    let mut name = String::new();
    while let Some(c) = chars.next() {
        match c {
            '.' => push_key(&mut out, &mut name),
            '[' => {
                push_key(&mut out, &mut name);
                out.push(subscript(&mut chars));
            }
            _ => name.push(c),
        }
    }
    push_key(&mut out, &mut name);
    out
}

fn push_key(out: &mut Vec<Segment>, name: &mut String) {
    if !name.is_empty() {
        out.push(Segment::Key(std::mem::take(name)));
    }
}

/// The inside of `[…]` up to its `]`: a quoted key (JSON escapes) or an index.
fn subscript(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Segment {
    if chars.peek() != Some(&'"') {
        let raw: String = chars.by_ref().take_while(|c| *c != ']').collect();
        return match raw.parse() {
            Ok(index) => Segment::Index(index),
            Err(_) => Segment::Key(raw),
        };
    }
    let mut raw = String::new();
    let mut escaped = false;
    for c in chars.by_ref() {
        raw.push(c);
        if c == '"' && !escaped && raw.len() > 1 {
            break;
        }
        escaped = c == '\\' && !escaped;
    }
    chars.by_ref().take_while(|c| *c != ']').for_each(drop);
    Segment::Key(serde_json::from_str(&raw).unwrap_or(raw))
}

/// `path` with every key in lowerCamel: proto3 JSON takes `skill_refs` for `skillRefs`, and
/// the server names the field `skillRefs` whichever the manifest wrote.
fn spelled_alike(path: &[Segment]) -> Vec<Segment> {
    path.iter()
        .map(|segment| match segment {
            Segment::Key(key) if key.contains('_') => Segment::Key(lower_camel(key)),
            other => other.clone(),
        })
        .collect()
}

fn lower_camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

/// A key of a map field, as paths write it: `["LOG_LEVEL"]`.
pub fn map_key(key: &str) -> String {
    format!("[{}]", serde_json::Value::String(key.to_string()))
}

/// The positions of one document.
#[derive(Debug, Default)]
pub struct Lines {
    /// The line the document's content starts on.
    pub start: usize,
    nodes: HashMap<Vec<Segment>, Node>,
    /// Whether the document is a list (a JSON file's array of resources).
    root_is_list: bool,
}

#[derive(Debug, Clone)]
struct Node {
    line: usize,
    /// The text of an unquoted scalar as written (`1.0`, not the float it became).
    plain: Option<String>,
}

impl Lines {
    /// The line of `path`, or of the nearest enclosing node written in the document.
    pub fn line_of(&self, path: &[Segment]) -> usize {
        let path = spelled_alike(path);
        (0..=path.len())
            .rev()
            .find_map(|len| self.nodes.get(&path[..len]))
            .map_or(self.start, |node| node.line)
    }

    /// The text of the unquoted scalar at `path`, as written.
    pub fn plain_text(&self, path: &[Segment]) -> Option<&str> {
        self.nodes.get(&spelled_alike(path))?.plain.as_deref()
    }

    /// Item `index` of a list document, as a document of its own.
    fn item(&self, index: usize) -> Lines {
        let prefix = Segment::Index(index);
        let nodes: HashMap<Vec<Segment>, Node> = self
            .nodes
            .iter()
            .filter(|(path, _)| path.first() == Some(&prefix))
            .map(|(path, node)| (path[1..].to_vec(), node.clone()))
            .collect();
        let start = nodes.get(&Vec::new()).map_or(self.start, |node| node.line);
        Lines {
            start,
            nodes,
            root_is_list: false,
        }
    }
}

/// The positions of every document of a YAML text, in order (empty ones included, as the
/// manifest reader counts them), or of every item of a JSON array. Stops at a syntax error,
/// keeping the documents before it.
pub fn documents(text: &str, json: bool) -> Vec<Lines> {
    let mut walk = Walk::default();
    for event in Parser::new_from_str(text) {
        let Ok((event, span)) = event else {
            break;
        };
        walk.event(event, span);
    }
    let documents = walk.documents;
    match documents.first() {
        Some(array) if json && array.root_is_list => {
            let count = array.nodes.keys().filter(|path| path.len() == 1).count();
            (0..count).map(|index| array.item(index)).collect()
        }
        _ => documents,
    }
}

/// A mapping or list being read, with the path it sits at.
#[derive(Debug)]
enum Frame {
    Mapping {
        path: Vec<Segment>,
        key: Option<String>,
    },
    List {
        path: Vec<Segment>,
        next: usize,
    },
}

/// The name of a key that is itself a mapping or a list.
const COMPLEX_KEY: &str = "?";

#[derive(Default)]
struct Walk {
    documents: Vec<Lines>,
    frames: Vec<Frame>,
}

impl Walk {
    fn event(&mut self, event: Event<'_>, span: Span) {
        let line = span.start.line();
        match event {
            Event::DocumentStart(_) => self.documents.push(Lines {
                start: line,
                ..Lines::default()
            }),
            Event::MappingStart(..) => {
                let path = self.node(line, None);
                self.frames.push(Frame::Mapping { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.node(line, None);
                if path.is_empty()
                    && let Some(document) = self.documents.last_mut()
                {
                    document.root_is_list = true;
                }
                self.frames.push(Frame::List { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.frames.pop();
            }
            Event::Scalar(value, style, ..) => {
                let plain = (style == ScalarStyle::Plain).then(|| value.to_string());
                self.scalar(value.into_owned(), line, plain);
            }
            Event::Alias(_) => self.scalar(String::new(), line, None),
            _ => {}
        }
    }

    /// A scalar is a mapping's next key, or a value like any other node.
    fn scalar(&mut self, value: String, line: usize, plain: Option<String>) {
        if let Some(Frame::Mapping { path, key }) = self.frames.last_mut()
            && key.is_none()
        {
            let mut at = path.clone();
            at.push(Segment::Key(value.clone()));
            *key = Some(value);
            self.record(at, line, None);
            return;
        }
        self.node(line, plain);
    }

    /// Records a value node where the enclosing frame puts it, and returns its path.
    fn node(&mut self, line: usize, plain: Option<String>) -> Vec<Segment> {
        let path = match self.frames.last_mut() {
            None => Vec::new(),
            Some(Frame::List { path, next }) => {
                let mut at = path.clone();
                at.push(Segment::Index(*next));
                *next += 1;
                at
            }
            Some(Frame::Mapping { path, key }) => {
                // A mapping or list as a key (YAML allows it) gets a name no path can ask for,
                // and so does its value.
                let name = key.take().unwrap_or_else(|| {
                    *key = Some(COMPLEX_KEY.into());
                    COMPLEX_KEY.into()
                });
                let mut at = path.clone();
                at.push(Segment::Key(name));
                at
            }
        };
        self.record(path.clone(), line, plain);
        path
    }

    /// The first position wins: a key's line rather than its value's on the next line.
    fn record(&mut self, path: Vec<Segment>, line: usize, plain: Option<String>) {
        let Some(document) = self.documents.last_mut() else {
            return;
        };
        if path.is_empty() && !document.nodes.contains_key(&path) {
            document.start = line;
        }
        let node = document
            .nodes
            .entry(spelled_alike(&path))
            .or_insert(Node { line, plain: None });
        if plain.is_some() {
            node.plain = plain;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Segment {
        Segment::Key(k.into())
    }

    #[test]
    fn paths_parse_keys_indexes_and_quoted_map_keys() {
        assert_eq!(
            parse_path(r#"spec.data["A.B]\"c"].value"#),
            [key("spec"), key("data"), key("A.B]\"c"), key("value")]
        );
        assert_eq!(
            parse_path("spec.tasks[2].taskConfig"),
            [
                key("spec"),
                key("tasks"),
                Segment::Index(2),
                key("taskConfig")
            ]
        );
        assert_eq!(parse_path(""), []);
        assert_eq!(
            parse_path(&format!("data{}", map_key("x\"y"))),
            [key("data"), key("x\"y")]
        );
    }

    #[test]
    fn every_node_has_the_line_of_its_key_or_item() {
        let text = "kind: Agent\nspec:\n  tasks:\n    - name: a\n      agent: x\n    - {name: b, dsl: 1.0}\n---\n---\nkind: Skill\n";
        let docs = documents(text, false);
        assert_eq!(docs.len(), 3);
        let first = &docs[0];
        assert_eq!(first.line_of(&parse_path("spec")), 2);
        assert_eq!(first.line_of(&parse_path("spec.tasks[0].agent")), 5);
        assert_eq!(first.line_of(&parse_path("spec.tasks[1]")), 6);
        // Not written: the nearest enclosing node's line.
        assert_eq!(first.line_of(&parse_path("spec.tasks[1].missing")), 6);
        assert_eq!(first.line_of(&parse_path("metadata.name")), 1);
        assert_eq!(
            first.plain_text(&parse_path("spec.tasks[1].dsl")),
            Some("1.0")
        );
        assert_eq!(docs[2].line_of(&parse_path("kind")), 9);
        // A snake_case key is found by its JSON name, as the server names it.
        let snake = &documents("spec:\n  skill_refs:\n    - slug: x\n", false)[0];
        assert_eq!(snake.line_of(&parse_path("spec.skillRefs[0].slug")), 3);
    }

    #[test]
    fn a_json_array_is_one_document_per_item() {
        let text =
            "[\n  {\"kind\": \"Agent\"},\n  {\"kind\": \"Skill\",\n   \"spec\": {\"x\": 1}}\n]\n";
        let docs = documents(text, true);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].start, 3);
        assert_eq!(docs[1].line_of(&parse_path("spec.x")), 4);
        assert_eq!(documents("{\"kind\": \"Agent\"}", true).len(), 1);
    }
}
