//! What a semantic rule reports into (errors and warnings), and small readers of JSON-shaped protobuf
//! messages with protobuf's defaults: an absent or `null` field reads as its zero value, and an empty
//! list counts as unset (protobuf cannot tell `[]` from absent).

use serde_json::Value;

use super::shape::{as_uint, parse_duration};
use super::{FieldError, Warning};

/// Collects a rule's errors (the object is refused) and warnings (stored, with a `Warning:` line).
pub(crate) struct Report<'a> {
    pub(crate) errors: &'a mut Vec<FieldError>,
    pub(crate) warnings: &'a mut Vec<Warning>,
}

impl Report<'_> {
    pub(crate) fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(path, message));
    }

    pub(crate) fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Warning {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Istio's `ValidateDuration`: at least 1ms and a whole number of milliseconds. A string that is
    /// not a duration at all was already reported by the schema.
    pub(crate) fn duration(&mut self, path: &str, value: Option<&Value>) {
        let Some(text) = value.and_then(Value::as_str) else {
            return;
        };
        let Some(nanos) = parse_duration(text) else {
            return;
        };
        if nanos < 1_000_000 {
            self.error(
                path,
                format!("found {text:?}, expected a duration of at least 1ms"),
            );
        } else if nanos % 1_000_000 != 0 {
            self.error(
                path,
                format!(
                    "found {text:?}, expected a whole number of milliseconds (only durations to ms precision are supported)"
                ),
            );
        }
    }
}

/// The field, unless absent or `null`.
pub(crate) fn field<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value.get(key).filter(|v| !v.is_null())
}

/// Whether a message field is set: present and not `null`; for lists and maps, also not empty.
pub(crate) fn is_set(value: &Value, key: &str) -> bool {
    match field(value, key) {
        Some(Value::Array(items)) => !items.is_empty(),
        Some(_) => true,
        None => false,
    }
}

pub(crate) fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    field(value, key).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn int(value: &Value, key: &str) -> i64 {
    field(value, key).and_then(Value::as_i64).unwrap_or(0)
}

pub(crate) fn uint(value: &Value, key: &str) -> u64 {
    field(value, key).and_then(as_uint).unwrap_or(0)
}

pub(crate) fn flag(value: &Value, key: &str) -> bool {
    field(value, key).and_then(Value::as_bool).unwrap_or(false)
}

pub(crate) fn list<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    field(value, key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub(crate) fn strings<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a str> {
    list(value, key).iter().filter_map(Value::as_str)
}
