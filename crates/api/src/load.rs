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

/// Everything a dry check of one source finds: the valid objects, the errors (any of them makes the
/// source invalid) and Istio's warnings, all with positions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Analysis {
    pub loaded: Vec<Loaded>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

/// Parses and validates every document of `text` (YAML or JSON). `source_name` is only used in
/// messages (`all-internal-traffic.yml`, `-` for stdin). All-or-nothing: any problem fails the load.
pub fn load_documents(source_name: &str, text: &str) -> Result<Vec<Loaded>, LoadError> {
    load_documents_with_warnings(source_name, text).map(|(loaded, _)| loaded)
}

/// [`load_documents`], and on success Istio's warnings for the loaded objects (`Warning:` lines).
pub fn load_documents_with_warnings(
    source_name: &str,
    text: &str,
) -> Result<(Vec<Loaded>, Vec<Problem>), LoadError> {
    let analysis = analyze_documents(source_name, text);
    if analysis.problems.is_empty() {
        Ok((analysis.loaded, analysis.warnings))
    } else {
        Err(LoadError {
            problems: analysis.problems,
        })
    }
}

/// Parses and validates every document of `text`, collecting errors and warnings of all documents
/// (`ironmesh analyze`); nothing is decided here.
pub fn analyze_documents(source_name: &str, text: &str) -> Analysis {
    let documents = match parse_documents(text) {
        Ok(documents) => documents,
        Err(e) => {
            return Analysis {
                problems: vec![Problem {
                    source: source_name.to_string(),
                    line: e.position.line,
                    col: e.position.col,
                    path: String::new(),
                    message: format!("invalid YAML: {}", e.message),
                }],
                ..Analysis::default()
            };
        }
    };
    let mut loaded = Vec::new();
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
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
                    &mut warnings,
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
                &mut warnings,
            );
        }
    }
    Analysis {
        loaded,
        problems,
        warnings,
    }
}

#[allow(clippy::too_many_arguments)]
fn load_one(
    source_name: &str,
    document: &YamlDocument,
    prefix: &str,
    value: &Value,
    loaded: &mut Vec<Loaded>,
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) {
    let (errors, found_warnings) = validate_value(value);
    warnings.extend(found_warnings.iter().map(|w| {
        problem_at(
            source_name,
            document,
            prefix,
            &FieldError::new(w.path.clone(), w.message.clone()),
        )
    }));
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
