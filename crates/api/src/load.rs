//! Loading user files: multi-document YAML (`---`, empty documents skipped, `kind: List` expanded) or
//! JSON, every document parsed and validated, every problem reported as `file:line:col: path: message`.

use std::fmt;

use serde_json::Value;
use thiserror::Error;

use crate::object::Object;
use crate::validate::{FieldError, validate_value};
use crate::yaml::{YamlDocument, join_index, parse_documents};

/// One object read from a file, with the line its document (or list item) starts on.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    pub object: Object,
    /// 1-based line where the object starts.
    pub line: usize,
}

/// One problem at one place in the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub source: String,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub col: usize,
    /// Field path (`spec.trafficPolicy.tls.mode`); empty for syntax errors.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.source, self.line, self.col)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)
    }
}

/// Every problem found in a source; nothing from it should be applied.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{}", render(.problems))]
pub struct LoadError {
    pub problems: Vec<Problem>,
}

fn render(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses and validates every document of `text` (YAML or JSON). `source_name` is only used in
/// messages (`all-internal-traffic.yml`, `-` for stdin). All-or-nothing: any problem fails the load.
pub fn load_documents(source_name: &str, text: &str) -> Result<Vec<Loaded>, LoadError> {
    let documents = parse_documents(text).map_err(|e| LoadError {
        problems: vec![Problem {
            source: source_name.to_string(),
            line: e.position.line,
            col: e.position.col,
            path: String::new(),
            message: format!("invalid YAML: {}", e.message),
        }],
    })?;
    let mut loaded = Vec::new();
    let mut problems = Vec::new();
    for document in &documents {
        let is_list = document.value.get("kind").and_then(Value::as_str) == Some("List");
        if is_list {
            let Some(items) = document.value.get("items").and_then(Value::as_array) else {
                problems.push(problem_at(
                    source_name,
                    document,
                    "",
                    &FieldError::new("items", "missing, a List needs items"),
                ));
                continue;
            };
            for (index, item) in items.iter().enumerate() {
                let prefix = join_index("items", index);
                load_one(
                    source_name,
                    document,
                    &prefix,
                    item,
                    &mut loaded,
                    &mut problems,
                );
            }
        } else {
            load_one(
                source_name,
                document,
                "",
                &document.value,
                &mut loaded,
                &mut problems,
            );
        }
    }
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(LoadError { problems })
    }
}

fn load_one(
    source_name: &str,
    document: &YamlDocument,
    prefix: &str,
    value: &Value,
    loaded: &mut Vec<Loaded>,
    problems: &mut Vec<Problem>,
) {
    let errors = validate_value(value);
    if !errors.is_empty() {
        problems.extend(
            errors
                .iter()
                .map(|e| problem_at(source_name, document, prefix, e)),
        );
        return;
    }
    match serde_json::from_value::<Object>(value.clone()) {
        Ok(object) => loaded.push(Loaded {
            object,
            line: document.position_of(prefix, false).line,
        }),
        Err(e) => problems.push(problem_at(
            source_name,
            document,
            prefix,
            &FieldError::new("", format!("not a valid object: {e}")),
        )),
    }
}

fn problem_at(source: &str, document: &YamlDocument, prefix: &str, error: &FieldError) -> Problem {
    let full_path = match (prefix.is_empty(), error.path.is_empty()) {
        (true, _) => error.path.clone(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}.{}", error.path),
    };
    let at = document.position_of(&full_path, error.is_unknown_field);
    Problem {
        source: source.to_string(),
        line: at.line,
        col: at.col,
        path: full_path,
        message: error.message.clone(),
    }
}
