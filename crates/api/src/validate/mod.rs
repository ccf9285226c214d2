//! Validation of objects: the envelope (apiVersion, kind, names), the per-kind field schemas and the
//! semantic rules. Errors carry field paths; [`crate::load`] adds file positions.

mod names;
mod networking;
mod report;
mod rules;
mod schemas;
mod security;
mod shape;

use std::fmt;

use serde_json::Value;

use crate::kinds::kind_for_type;
use crate::object::Object;

/// One problem in one object: the field path (`spec.trafficPolicy.tls.mode`) and what is wrong there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path with list indices, e.g. `spec.peers[0].mtls.mode`; empty for the whole object.
    pub path: String,
    /// What was found and what is allowed.
    pub message: String,
    /// `true` when the field itself should not be there (its key position is the useful one).
    pub is_unknown_field: bool,
}

impl FieldError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            path: path.into(),
            message: message.into(),
            is_unknown_field: false,
        }
    }

    pub(crate) fn unknown(path: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            is_unknown_field: true,
            ..FieldError::new(path, message)
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Istio's validation warning: the object is valid and stored, but something in it is suspect
/// (deprecated, ignored, or probably not what the author meant). kubectl prints these as
/// `Warning: <message>`; Istio's webhook returns them in its admission response.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Warning {
    /// Dotted field path, as in [`FieldError::path`]; empty for the whole object.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Validates an object that arrived as JSON (e.g. over the API): the same rules as
/// [`crate::load::load_documents`], without positions.
pub fn validate_object(obj: &Object) -> Result<(), Vec<FieldError>> {
    validate_object_with_warnings(obj).map(|_| ())
}

/// Like [`validate_object`], and on success Istio's warnings for the object (possibly none).
pub fn validate_object_with_warnings(obj: &Object) -> Result<Vec<Warning>, Vec<FieldError>> {
    let (errors, warnings) = validate_value(&obj.to_value());
    if errors.is_empty() {
        Ok(warnings)
    } else {
        Err(errors)
    }
}

/// Every problem and every warning of one JSON-shaped object.
pub(crate) fn validate_value(value: &Value) -> (Vec<FieldError>, Vec<Warning>) {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let Some(map) = value.as_object() else {
        errors.push(FieldError::new(
            "",
            "expected a map with apiVersion, kind and metadata",
        ));
        return (errors, warnings);
    };
    let api_version = map.get("apiVersion").and_then(Value::as_str);
    let kind = map.get("kind").and_then(Value::as_str);
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        for field in ["apiVersion", "kind"] {
            if !map.get(field).is_some_and(Value::is_string) {
                errors.push(FieldError::new(field, "missing, expected a string"));
            }
        }
        return (errors, warnings);
    };
    let info = match kind_for_type(api_version, kind) {
        Ok(info) => info,
        Err(err) => {
            let path = if matches!(err, crate::kinds::KindError::UnknownKind { .. }) {
                "kind"
            } else {
                "apiVersion"
            };
            errors.push(FieldError::new(path, err.to_string()));
            return (errors, warnings);
        }
    };
    let metadata = map.get("metadata");
    if !metadata.is_some_and(Value::is_object) {
        errors.push(FieldError::new(
            "metadata",
            "missing, expected a map with name",
        ));
        return (errors, warnings);
    }
    schemas::object_shape(kind).check("", value, &mut errors);
    let shape_errors: Vec<String> = errors.iter().map(|e| e.path.clone()).collect();
    let name = metadata.and_then(|m| m.get("name")).and_then(Value::as_str);
    let name_check = match (kind, name) {
        (_, None) => Err("missing, expected the object's name".to_string()),
        ("Namespace" | "Service", Some(name)) => rules::dns1123_label(name),
        (_, Some(name)) => rules::dns1123_subdomain(name),
    };
    if let Err(why) = name_check {
        errors.push(FieldError::new("metadata.name", why));
    }
    if let Some(namespace) = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        && info.namespaced
        && let Err(why) = rules::dns1123_label(namespace)
    {
        errors.push(FieldError::new("metadata.namespace", why));
    }
    // Semantic rules read fields by their schema types (a mistyped value reads as unset): where the
    // schema already refused a value, what a rule says at or below it would only repeat that.
    let mut rule_errors = Vec::new();
    rules::check(kind, map, &mut rule_errors, &mut warnings);
    errors.extend(
        rule_errors
            .into_iter()
            .filter(|e| !shape_errors.iter().any(|bad| is_within(&e.path, bad))),
    );
    (errors, warnings)
}

/// `path` is `parent` or a field or item below it.
fn is_within(path: &str, parent: &str) -> bool {
    path.strip_prefix(parent)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}
