//! A small schema language for the fields we check, and the walker that reports every mismatch with
//! its path, what was found, what is allowed and (for typos) the closest valid name.

use serde_json::Value;

use super::FieldError;
use crate::yaml::{join_index, join_key};

/// The expected shape of a JSON value. `null` is accepted everywhere (it means "absent", as in
/// Kubernetes and protobuf JSON), which is what makes `mtls:` and `mtls: null` valid.
pub(crate) enum Shape {
    /// Not checked (fields we store but do not model).
    Any,
    Str,
    Bool,
    Int,
    /// A non-negative integer (protobuf `uint32`/`uint64`, and the wrapper `UInt32Value`). A string of
    /// digits is accepted too: protobuf's JSON form writes 64-bit integers as strings
    /// (`tableSize: "65537"`), and Istio's unmarshaller reads both.
    UInt,
    /// Any number (protobuf `double`, `DoubleValue`).
    Num,
    /// A protobuf `Duration` as Istio's YAML spells it: Go's `time.ParseDuration` syntax (`5s`, `100ms`,
    /// `1h30m`), which is what Istio's JSON unmarshaller accepts.
    Duration,
    /// An integer 1–65535.
    Port,
    /// A port number or a port name (Kubernetes `targetPort`).
    IntOrStr,
    Enum(&'static [&'static str]),
    /// A map with known fields; any other field is an error.
    Strict(&'static [(&'static str, Shape)]),
    /// A map with known fields checked and all other fields kept (Kubernetes objects).
    Open(&'static [(&'static str, Shape)]),
    List(&'static Shape),
    /// Any keys, values of the given shape (protobuf `map<string, T>`).
    Values(&'static Shape),
    /// String keys to string values (labels, annotations, selectors).
    StrMap,
    /// Keys are port numbers 1–65535, values of the given shape (`portLevelMtls`).
    PortMap(&'static Shape),
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a map".into(),
    }
}

/// The closest of `candidates` to `found`, if it is close enough to be a plausible typo.
pub(crate) fn closest<'a>(
    found: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let found_lower = found.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            let distance = strsim::levenshtein(&found_lower, &c.to_ascii_lowercase());
            (distance, c)
        })
        .filter(|(distance, c)| *distance <= (c.len().max(found.len()) / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion
        .map(|s| format!(" (did you mean {s}?)"))
        .unwrap_or_default()
}

impl Shape {
    /// Checks `value` at `path`, appending every problem to `errors`.
    pub(crate) fn check(&self, path: &str, value: &Value, errors: &mut Vec<FieldError>) {
        if value.is_null() {
            return;
        }
        let mut mismatch = |expected: &str| {
            errors.push(FieldError::new(
                path,
                format!("found {}, expected {expected}", describe(value)),
            ))
        };
        match self {
            Shape::Any => {}
            Shape::Str if !value.is_string() => mismatch("a string"),
            Shape::Bool if !value.is_boolean() => mismatch("true or false"),
            Shape::Int if !(value.is_i64() || value.is_u64()) => mismatch("an integer"),
            Shape::UInt if as_uint(value).is_none() => mismatch("a non-negative integer"),
            Shape::Num if !value.is_number() => mismatch("a number"),
            Shape::Duration => {
                if value.as_str().and_then(parse_duration).is_none() {
                    mismatch("a duration such as 5s, 100ms or 1h30m")
                }
            }
            Shape::Port => {
                if !value.as_u64().is_some_and(|p| (1..=65535).contains(&p)) {
                    mismatch("a port number 1-65535")
                }
            }
            Shape::IntOrStr => match value {
                Value::String(_) => {}
                v if v.as_u64().is_some_and(|p| (1..=65535).contains(&p)) => {}
                _ => mismatch("a port number 1-65535 or a port name"),
            },
            Shape::Enum(allowed) => match value.as_str() {
                Some(s) if allowed.contains(&s) => {}
                Some(s) => errors.push(FieldError::new(
                    path,
                    format!(
                        "found {s:?}, expected one of {}{}",
                        allowed.join(", "),
                        did_you_mean(closest(s, allowed.iter().copied()))
                    ),
                )),
                None => mismatch(&format!("one of {}", allowed.join(", "))),
            },
            Shape::Strict(fields) | Shape::Open(fields) => {
                let Some(map) = value.as_object() else {
                    return mismatch("a map");
                };
                for (key, child) in map {
                    let child_path = join_key(path, key);
                    match fields.iter().find(|(name, _)| name == key) {
                        Some((_, shape)) => shape.check(&child_path, child, errors),
                        None if matches!(self, Shape::Strict(_)) => {
                            errors.push(FieldError::unknown(
                                child_path,
                                format!(
                                    "unknown field {key:?}, expected one of {}{}",
                                    fields
                                        .iter()
                                        .map(|(n, _)| *n)
                                        .collect::<Vec<_>>()
                                        .join(", "),
                                    did_you_mean(closest(key, fields.iter().map(|(n, _)| *n)))
                                ),
                            ))
                        }
                        None => {}
                    }
                }
            }
            Shape::List(item) => {
                let Some(items) = value.as_array() else {
                    return mismatch("a list");
                };
                for (index, child) in items.iter().enumerate() {
                    item.check(&join_index(path, index), child, errors);
                }
            }
            Shape::StrMap => {
                let Some(map) = value.as_object() else {
                    return mismatch("a map of strings");
                };
                for (key, child) in map {
                    if !child.is_string() {
                        errors.push(FieldError::new(
                            join_key(path, key),
                            format!("found {}, expected a string (quote it)", describe(child)),
                        ));
                    }
                }
            }
            Shape::Values(item) => {
                let Some(map) = value.as_object() else {
                    return mismatch("a map");
                };
                for (key, child) in map {
                    item.check(&join_key(path, key), child, errors);
                }
            }
            Shape::PortMap(item) => {
                let Some(map) = value.as_object() else {
                    return mismatch("a map keyed by port number");
                };
                for (key, child) in map {
                    let child_path = join_key(path, key);
                    if !key.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p)) {
                        errors.push(FieldError::unknown(
                            child_path.clone(),
                            format!("found key {key:?}, expected a port number 1-65535"),
                        ));
                    }
                    item.check(&child_path, child, errors);
                }
            }
            Shape::Str | Shape::Bool | Shape::Int | Shape::UInt | Shape::Num => {}
        }
    }
}

/// A non-negative integer, also from a string of digits (protobuf JSON's 64-bit integers).
pub(crate) fn as_uint(value: &Value) -> Option<u64> {
    match value {
        Value::String(text) => text.parse().ok(),
        other => other.as_u64(),
    }
}

/// Parses a duration in Go's `time.ParseDuration` syntax into nanoseconds: an optional sign, then one or
/// more decimal numbers each followed by a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`); `0` alone is
/// allowed. Istio's YAML goes through a JSON unmarshaller that parses `Duration` strings this way
/// (golang/protobuf `jsonpb`), which is why `connectTimeout: 30ms` is valid Istio.
pub(crate) fn parse_duration(text: &str) -> Option<i128> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..digits_end];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        rest = &rest[digits_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale: i128 = match &rest[..unit_end] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_end..];
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        let whole: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let mut value = whole.checked_mul(scale)?;
        let mut place = scale;
        for digit in fraction.bytes() {
            place /= 10;
            value += i128::from(digit - b'0') * place;
        }
        total = total.checked_add(value)?;
    }
    Some(if negative { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    static TLS: Shape = Shape::Strict(&[
        (
            "mode",
            Shape::Enum(&["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]),
        ),
        ("sni", Shape::Str),
    ]);

    #[test]
    fn enum_typo_suggests_the_closest_value() {
        let mut errors = Vec::new();
        TLS.check("tls", &json!({"mode": "ISTIO_MUTAL"}), &mut errors);
        assert_eq!(
            errors[0].to_string(),
            "tls.mode: found \"ISTIO_MUTAL\", expected one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL (did you mean ISTIO_MUTUAL?)"
        );
    }

    #[test]
    fn unknown_field_suggests_and_null_is_accepted() {
        let mut errors = Vec::new();
        TLS.check("tls", &json!({"mdoe": "SIMPLE", "sni": null}), &mut errors);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].to_string().contains("(did you mean mode?)"),
            "{}",
            errors[0]
        );
        assert!(errors[0].is_unknown_field);
    }

    #[test]
    fn durations_parse_as_go_does() {
        assert_eq!(parse_duration("30ms"), Some(30_000_000));
        assert_eq!(parse_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("-2s"), Some(-2_000_000_000));
        assert_eq!(parse_duration("100"), None);
        assert_eq!(parse_duration("5 s"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn no_suggestion_for_unrelated_names() {
        assert_eq!(closest("zzzzzzzz", ["mode", "sni"]), None);
        assert_eq!(
            closest("portlevelmtls", ["portLevelMtls", "mtls"]),
            Some("portLevelMtls")
        );
    }
}
