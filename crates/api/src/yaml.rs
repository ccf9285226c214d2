//! A YAML (and JSON) reader that keeps positions: it turns saphyr's event stream into
//! `serde_json::Value` documents plus an index from field path (`spec.peers[0].mtls`) to line/column,
//! so validation errors can point at the exact place in the user's file.
//!
//! Guards against hostile input: nesting depth and total node count (including alias expansion) are
//! bounded, and nothing here panics on any input.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

/// 1-based line and column of a node in the source text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub col: usize,
}

/// Where a field's key and value start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FieldPosition {
    pub(crate) key: Option<Position>,
    pub(crate) value: Position,
}

/// One parsed document with its position index.
#[derive(Debug)]
pub(crate) struct YamlDocument {
    pub(crate) value: Value,
    pub(crate) start: Position,
    pub(crate) positions: HashMap<String, FieldPosition>,
}

/// A syntax error at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub(crate) position: Position,
    pub(crate) message: String,
}

const MAX_DEPTH: usize = 128;
const MAX_NODES: usize = 1_000_000;

impl YamlDocument {
    /// Position of `path`, or of its closest ancestor that has one; `prefer_key` picks the key's
    /// position (for "unknown field" errors) over the value's.
    pub(crate) fn position_of(&self, path: &str, prefer_key: bool) -> Position {
        let mut current = path.to_string();
        loop {
            if let Some(found) = self.positions.get(&current) {
                return match (prefer_key, found.key) {
                    (true, Some(key)) => key,
                    _ => found.value,
                };
            }
            match parent_path(&current) {
                Some(parent) => current = parent.to_string(),
                None => return self.start,
            }
        }
    }
}

/// `a.b[2].c` → `a.b[2]` → `a.b` → `a` → None.
pub(crate) fn parent_path(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

/// Appends a map key to a path.
pub(crate) fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Appends a list index to a path.
pub(crate) fn join_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

enum Frame {
    Seq {
        items: Vec<Value>,
        path: String,
        start: Position,
        anchor: usize,
        nodes: usize,
    },
    Map {
        entries: Map<String, Value>,
        path: String,
        start: Position,
        anchor: usize,
        nodes: usize,
        pending_key: Option<(String, Position)>,
        /// Keys that came from a `<<` merge; an explicit key may override them once.
        merged: Vec<String>,
    },
}

struct Builder {
    documents: Vec<YamlDocument>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Value, usize)>,
    positions: HashMap<String, FieldPosition>,
    root: Option<(Value, Position)>,
    total_nodes: usize,
}

fn position(span: &Span) -> Position {
    Position {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

/// Parses every document of `text`. Empty documents are skipped.
pub(crate) fn parse_documents(text: &str) -> Result<Vec<YamlDocument>, SyntaxError> {
    let mut builder = Builder {
        documents: Vec::new(),
        stack: Vec::new(),
        anchors: HashMap::new(),
        positions: HashMap::new(),
        root: None,
        total_nodes: 0,
    };
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| SyntaxError {
            position: Position {
                line: e.marker().line(),
                col: e.marker().col() + 1,
            },
            message: e.info().to_string(),
        })?;
        let at = position(&span);
        builder.on_event(event, at)?;
    }
    Ok(builder.documents)
}

impl Builder {
    fn on_event(&mut self, event: Event<'_>, at: Position) -> Result<(), SyntaxError> {
        let fail = |message: String| SyntaxError {
            position: at,
            message,
        };
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) => {}
            Event::DocumentEnd => {
                self.anchors.clear();
                let positions = std::mem::take(&mut self.positions);
                if let Some((value, start)) = self.root.take()
                    && !value.is_null()
                {
                    self.documents.push(YamlDocument {
                        value,
                        start,
                        positions,
                    });
                }
            }
            Event::Alias(id) => {
                let (value, nodes) = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| fail("alias refers to an unknown anchor".to_string()))?;
                self.count(nodes, at)?;
                self.attach(value, at, 0, nodes)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, at)?;
                let is_key = matches!(
                    self.stack.last(),
                    Some(Frame::Map {
                        pending_key: None,
                        ..
                    })
                );
                let force_string = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let value = if is_key || force_string || style != ScalarStyle::Plain {
                    Value::String(text.into_owned())
                } else {
                    resolve_plain(&text)
                };
                self.attach(value, at, anchor, 1)?;
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                self.count(1, at)?;
                if self.stack.len() >= MAX_DEPTH {
                    return Err(fail(format!(
                        "nesting deeper than {MAX_DEPTH} levels; flatten the document"
                    )));
                }
                if let Some(Frame::Map {
                    pending_key: None, ..
                }) = self.stack.last()
                {
                    return Err(fail(
                        "a list or map cannot be used as a map key; use a plain string key".into(),
                    ));
                }
                let path = self.child_path();
                let frame = if matches!(event, Event::SequenceStart(..)) {
                    Frame::Seq {
                        items: Vec::new(),
                        path,
                        start: at,
                        anchor,
                        nodes: 1,
                    }
                } else {
                    Frame::Map {
                        entries: Map::new(),
                        path,
                        start: at,
                        anchor,
                        nodes: 1,
                        pending_key: None,
                        merged: Vec::new(),
                    }
                };
                self.stack.push(frame);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (value, start, anchor, nodes) = match self.stack.pop() {
                    Some(Frame::Seq {
                        items,
                        start,
                        anchor,
                        nodes,
                        ..
                    }) => (Value::Array(items), start, anchor, nodes),
                    Some(Frame::Map {
                        entries,
                        start,
                        anchor,
                        nodes,
                        ..
                    }) => (Value::Object(entries), start, anchor, nodes),
                    None => return Err(fail("unbalanced end of collection".into())),
                };
                self.attach(value, start, anchor, nodes)?;
            }
        }
        Ok(())
    }

    fn count(&mut self, nodes: usize, at: Position) -> Result<(), SyntaxError> {
        self.total_nodes = self.total_nodes.saturating_add(nodes);
        if self.total_nodes > MAX_NODES {
            return Err(SyntaxError {
                position: at,
                message: format!(
                    "document expands to more than {MAX_NODES} nodes (alias bomb?); split it up"
                ),
            });
        }
        Ok(())
    }

    /// Path of the node about to start under the current top frame.
    fn child_path(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(Frame::Seq { items, path, .. }) => join_index(path, items.len()),
            Some(Frame::Map {
                path, pending_key, ..
            }) => pending_key
                .as_ref()
                .map(|(key, _)| join_key(path, key))
                .unwrap_or_else(|| path.clone()),
        }
    }

    /// Puts a finished node into its parent (or makes it the document root).
    fn attach(
        &mut self,
        value: Value,
        at: Position,
        anchor: usize,
        nodes: usize,
    ) -> Result<(), SyntaxError> {
        if anchor != 0 {
            self.anchors.insert(anchor, (value.clone(), nodes));
        }
        match self.stack.last_mut() {
            None => {
                self.positions.insert(
                    String::new(),
                    FieldPosition {
                        key: None,
                        value: at,
                    },
                );
                self.root = Some((value, at));
            }
            Some(Frame::Seq {
                items,
                path,
                nodes: parent_nodes,
                ..
            }) => {
                let child = join_index(path, items.len());
                self.positions.insert(
                    child,
                    FieldPosition {
                        key: None,
                        value: at,
                    },
                );
                items.push(value);
                *parent_nodes += nodes;
            }
            Some(Frame::Map {
                entries,
                path,
                pending_key,
                nodes: parent_nodes,
                merged,
                ..
            }) => match pending_key.take() {
                None => {
                    let key = match value {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    if let Some(i) = merged.iter().position(|m| *m == key) {
                        merged.swap_remove(i);
                    } else if entries.contains_key(&key) {
                        return Err(SyntaxError {
                            position: at,
                            message: format!(
                                "duplicate key {key:?} in the same map; remove one of them"
                            ),
                        });
                    }
                    *pending_key = Some((key, at));
                }
                Some((key, _)) if key == "<<" => {
                    // YAML merge key: copy the entries of the aliased map(s) that are not set here.
                    let sources = match value {
                        Value::Array(items) => items,
                        other => vec![other],
                    };
                    for source in sources {
                        let Value::Object(source) = source else {
                            return Err(SyntaxError {
                                position: at,
                                message: "a `<<` merge needs a map or a list of maps".into(),
                            });
                        };
                        for (k, v) in source {
                            if !entries.contains_key(&k) {
                                merged.push(k.clone());
                                entries.insert(k, v);
                            }
                        }
                    }
                    *parent_nodes += nodes;
                }
                Some((key, key_at)) => {
                    self.positions.insert(
                        join_key(path, &key),
                        FieldPosition {
                            key: Some(key_at),
                            value: at,
                        },
                    );
                    entries.insert(key, value);
                    *parent_nodes += nodes;
                }
            },
        }
        Ok(())
    }
}

/// Resolves an unquoted scalar the way kubectl (YAML 1.1 booleans, core-schema numbers) does.
fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => {
            return Value::Bool(true);
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
            return Value::Bool(false);
        }
        _ => {}
    }
    if let Some(number) = parse_int(text) {
        return Value::Number(number);
    }
    if looks_like_float(text)
        && let Ok(f) = text.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(text.to_string())
}

fn parse_int(text: &str) -> Option<Number> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, digits) = if let Some(hex) = digits.strip_prefix("0x") {
        (16, hex)
    } else if let Some(oct) = digits.strip_prefix("0o") {
        (8, oct)
    } else {
        (10, digits)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if negative {
        let signed = i64::try_from(magnitude).ok()?;
        Some(Number::from(-signed))
    } else {
        Some(Number::from(magnitude))
    }
}

fn looks_like_float(text: &str) -> bool {
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let mut seen_digit = false;
    let mut seen_exp = false;
    let mut prev = ' ';
    for c in body.chars() {
        match c {
            '0'..='9' => seen_digit = true,
            '.' if !seen_exp => {}
            'e' | 'E' if seen_digit && !seen_exp => seen_exp = true,
            '-' | '+' if prev == 'e' || prev == 'E' => {}
            _ => return false,
        }
        prev = c;
    }
    seen_digit && body.chars().filter(|&c| c == '.').count() <= 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn multi_document_with_positions() {
        let text =
            "a: 1\n---\n---\nkind: X\nspec:\n  peers:\n  - mtls:\n  - mtls: {}\n  name: \"no\"\n";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 2, "empty document skipped");
        assert_eq!(docs[0].value, json!({"a": 1}));
        let doc = &docs[1];
        assert_eq!(
            doc.value,
            json!({"kind": "X", "spec": {"peers": [{"mtls": null}, {"mtls": {}}], "name": "no"}})
        );
        assert_eq!(doc.start.line, 4);
        assert_eq!(
            doc.position_of("spec.name", false),
            Position { line: 9, col: 9 }
        );
        assert_eq!(
            doc.position_of("spec.name", true),
            Position { line: 9, col: 3 }
        );
        assert_eq!(doc.position_of("spec.peers[1].mtls", true).line, 8);
        assert_eq!(doc.position_of("spec.peers[1].mtls.nothing", true).line, 8);
    }

    #[test]
    fn merge_keys_copy_entries_and_explicit_keys_win() {
        let text = "base: &b {a: 1, b: 2}\nx:\n  <<: *b\n  b: 3\n  c: 4\n";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs[0].value["x"], json!({"a": 1, "b": 3, "c": 4}));
        let err = parse_documents("x:\n  <<: 5\n").unwrap_err();
        assert!(err.message.contains("merge"));
    }

    #[test]
    fn scalars_resolve_like_kubectl() {
        let docs =
            parse_documents("a: yes\nb: 0x10\nc: -3\nd: 1.5\ne: '8000'\nf: ~\ng: 1.2.3\n").unwrap();
        assert_eq!(
            docs[0].value,
            json!({"a": true, "b": 16, "c": -3, "d": 1.5, "e": "8000", "f": null, "g": "1.2.3"})
        );
    }

    #[test]
    fn json_and_anchors_work_and_bombs_and_duplicates_fail() {
        let docs = parse_documents("{\"a\": [1, 2], \"b\": {\"c\": null}}").unwrap();
        assert_eq!(docs[0].value, json!({"a": [1, 2], "b": {"c": null}}));
        let docs = parse_documents("a: &x {b: 1}\nc: *x\n").unwrap();
        assert_eq!(docs[0].value, json!({"a": {"b": 1}, "c": {"b": 1}}));
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        assert!(
            parse_documents(&bomb)
                .unwrap_err()
                .message
                .contains("nodes")
        );
        let err = parse_documents("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.position.line, 3);
        assert!(err.message.contains("duplicate"));
        let err = parse_documents("a: [1, 2\n").unwrap_err();
        assert!(err.position.line >= 1);
    }
}
