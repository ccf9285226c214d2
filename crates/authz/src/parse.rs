//! JSON helpers for reading a policy spec: each one reports the exact field path on a type mismatch.

use serde_json::{Map, Value};

use crate::error::SpecError;
use crate::matcher::{IpNet, StringMatch};
use crate::model::PathMatch;
use crate::path::{PathTemplate, check_path_template};

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

/// True when a list field is present with at least one item (Istio's `len(x) > 0` / non-nil list).
pub(crate) fn is_set(value: Option<&Value>) -> bool {
    value
        .and_then(Value::as_array)
        .is_some_and(|items| !items.is_empty())
}

/// A list of strings without empty ones (Istio's `CheckEmptyValues`).
pub(crate) fn check_non_empty(values: &[String], path: &str) -> Result<()> {
    match values.iter().position(String::is_empty) {
        Some(i) => Err(SpecError::new(
            format!("{path}[{i}]"),
            "empty value not allowed",
        )),
        None => Ok(()),
    }
}

/// `paths`/`notPaths`: no empty value, path templates valid as Istio's `CheckValidPathTemplate`;
/// `{*}`/`{**}` templates compile to Envoy's URI template matcher, other values to string patterns.
pub(crate) fn path_list(values: &[String], path: &str) -> Result<Vec<PathMatch>> {
    check_non_empty(values, path)?;
    values
        .iter()
        .enumerate()
        .map(|(i, pattern)| {
            check_path_template(pattern)
                .map_err(|message| SpecError::new(format!("{path}[{i}]"), message))?;
            Ok(match PathTemplate::parse(pattern) {
                Some(template) => PathMatch::Template(template),
                None => PathMatch::Pattern(StringMatch::parse(pattern)),
            })
        })
        .collect()
}

/// Istio's `CheckWildcardValues`: non-empty, at most one `*`, only at the start or the end.
pub(crate) fn check_wildcards(values: &[String], path: &str) -> Result<()> {
    for (i, value) in values.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if value.is_empty() {
            return Err(SpecError::new(at, "empty value not allowed"));
        }
        let stars = value.matches('*').count();
        if stars > 1 {
            return Err(SpecError::new(
                at,
                format!("at most one wildcard is allowed, found {value:?}"),
            ));
        }
        if stars == 1 && value != "*" && !value.starts_with('*') && !value.ends_with('*') {
            return Err(SpecError::new(
                at,
                format!("wildcard is only allowed at the start or end, found {value:?}"),
            ));
        }
    }
    Ok(())
}

/// Istio's `CheckServiceAccount`: at most 16 values, each `sa` or `namespace/sa` without wildcards,
/// non-empty parts, at most 320 characters.
pub(crate) fn check_service_accounts(values: &[String], path: &str) -> Result<()> {
    if values.len() > 16 {
        return Err(SpecError::new(path, "may not have more than 16 values"));
    }
    for (i, value) in values.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let expected = "expected format 'serviceAccount' or 'namespace/serviceAccount'";
        if value.is_empty() {
            return Err(SpecError::new(at, "empty value not allowed"));
        }
        if value.contains('*') {
            return Err(SpecError::new(
                at,
                format!("wildcard not allowed, found {value:?}"),
            ));
        }
        if value.matches('/').count() > 1 {
            return Err(SpecError::new(at, format!("{expected}, found {value:?}")));
        }
        if value.len() > 320 {
            return Err(SpecError::new(
                at,
                format!("value cannot exceed 320 characters, found {value:?}"),
            ));
        }
        if let Some((namespace, account)) = value.split_once('/') {
            if namespace.is_empty() {
                return Err(SpecError::new(
                    at,
                    format!("{expected}, found empty namespace {value:?}"),
                ));
            }
            if account.is_empty() {
                return Err(SpecError::new(
                    at,
                    format!("{expected}, found empty serviceAccount {value:?}"),
                ));
            }
        }
    }
    Ok(())
}

/// Ports written as numbers or strings (`ports: ["8080"]`, `ports: [8080]`), read as the strings Istio
/// has (a number as its decimal text) and checked when compiled ([`check_ports`]).
pub(crate) fn port_strings(value: Option<&Value>, path: &str) -> Result<Vec<String>> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(SpecError::new(path, "expected a list of ports")),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Number(n) => Ok(n.to_string()),
            Value::String(s) => Ok(s.clone()),
            _ => Err(SpecError::new(
                format!("{path}[{i}]"),
                "expected a port (a string such as \"8080\")",
            )),
        })
        .collect()
}

/// Ports as strings, checked as Istio's `ValidatePorts` (decimal digits, 0-65535).
pub(crate) fn check_ports(values: &[String], path: &str) -> Result<Vec<u16>> {
    values
        .iter()
        .enumerate()
        .map(|(i, value)| port(value, &format!("{path}[{i}]")))
        .collect()
}

fn port(text: &str, path: &str) -> Result<u16> {
    let valid = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    valid
        .then(|| text.parse::<u64>().ok())
        .flatten()
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(|| SpecError::new(path, format!("bad port ({text}): expected 0-65535")))
}

/// CIDR blocks or bare addresses (Istio's `ValidateIPs`: `netip.ParsePrefix` with a `/`, else
/// `netip.ParseAddr`).
pub(crate) fn check_ips(texts: &[String], path: &str) -> Result<Vec<IpNet>> {
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let at = format!("{path}[{i}]");
            if text.is_empty() {
                return Err(SpecError::new(at, "empty value not allowed"));
            }
            IpNet::parse(text).ok_or_else(|| {
                let what = if text.contains('/') {
                    "bad CIDR range"
                } else {
                    "bad IP address"
                };
                SpecError::new(
                    at,
                    format!(
                        "{what} ({text}): expected an IP address or CIDR block (e.g. 10.0.0.0/8)"
                    ),
                )
            })
        })
        .collect()
}
