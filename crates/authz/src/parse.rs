//! JSON helpers for reading a policy spec: each one reports the exact field path on a type mismatch.

use serde_json::{Map, Value};

use crate::error::SpecError;
use crate::matcher::{IpNet, StringMatch};

pub(crate) type Result<T> = std::result::Result<T, SpecError>;

pub(crate) fn object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>> {
    value
        .as_object()
        .ok_or_else(|| SpecError::new(path, "expected an object (a YAML mapping)"))
}

/// Refuses fields we do not know, so a typo (`namespace:` for `namespaces:`) is not silently ignored.
pub(crate) fn known_fields(map: &Map<String, Value>, path: &str, known: &[&str]) -> Result<()> {
    for key in map.keys() {
        if !known.contains(&key.as_str()) {
            return Err(SpecError::new(
                format!("{path}.{key}"),
                format!("unknown field; expected one of: {}", known.join(", ")),
            ));
        }
    }
    Ok(())
}

/// A list of objects (`rules`, `from`, `to`, `when`); `null` or absent is an empty list.
pub(crate) fn object_list<'a>(value: Option<&'a Value>, path: &str) -> Result<&'a [Value]> {
    match value {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(SpecError::new(path, "expected a list")),
    }
}

pub(crate) fn string_list(value: Option<&Value>, path: &str) -> Result<Vec<String>> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(SpecError::new(path, "expected a list of strings")),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_str().map(str::to_owned).ok_or_else(|| {
                SpecError::new(
                    format!("{path}[{i}]"),
                    "expected a string (quote it in YAML)",
                )
            })
        })
        .collect()
}

pub(crate) fn pattern_list(value: Option<&Value>, path: &str) -> Result<Vec<StringMatch>> {
    compile_patterns(string_list(value, path)?, path, false)
}

/// Path patterns; Istio's `{*}`/`{**}` path templates are refused rather than matched literally.
pub(crate) fn path_list(value: Option<&Value>, path: &str) -> Result<Vec<StringMatch>> {
    compile_patterns(string_list(value, path)?, path, true)
}

pub(crate) fn compile_patterns(
    patterns: Vec<String>,
    path: &str,
    refuse_templates: bool,
) -> Result<Vec<StringMatch>> {
    patterns
        .iter()
        .enumerate()
        .map(|(i, pattern)| {
            if refuse_templates && pattern.contains('{') {
                return Err(SpecError::new(
                    format!("{path}[{i}]"),
                    "path templates ({*}, {**}) are not supported; use a prefix `/a/*` or suffix `*/b`",
                ));
            }
            StringMatch::parse(pattern).ok_or_else(|| {
                SpecError::new(
                    format!("{path}[{i}]"),
                    format!("`{pattern}`: `*` is only allowed alone, at the start or at the end"),
                )
            })
        })
        .collect()
}

/// Ports written as numbers or strings (`ports: ["8080"]`, `ports: [8080]`).
pub(crate) fn port_list(value: Option<&Value>, path: &str) -> Result<Vec<u16>> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(SpecError::new(path, "expected a list of ports")),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| port(item, &format!("{path}[{i}]")))
        .collect()
}

fn port(value: &Value, path: &str) -> Result<u16> {
    let number = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    number
        .filter(|n| (1..=65535).contains(n))
        .map(|n| n as u16)
        .ok_or_else(|| SpecError::new(path, format!("`{value}` is not a port (1-65535)")))
}

/// CIDR blocks or bare addresses.
pub(crate) fn ip_list(value: Option<&Value>, path: &str) -> Result<Vec<IpNet>> {
    let texts = string_list(value, path)?;
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| ip_block(text, &format!("{path}[{i}]")))
        .collect()
}

fn ip_block(text: &str, path: &str) -> Result<IpNet> {
    IpNet::parse(text).ok_or_else(|| {
        SpecError::new(
            path,
            format!("`{text}` is not an IP address or CIDR block (e.g. 10.0.0.0/8)"),
        )
    })
}
