//! YAML output in kubectl's style (Go yaml.v2): block mappings, sequences flush with their key, keys
//! sorted, strings quoted only where a plain scalar would read back as something else.

use serde_json::Value;

/// The value as YAML. `sort_keys` sorts mapping keys as kubectl does for `-o yaml`.
pub fn to_yaml(value: &Value, sort_keys: bool) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, value, 0, sort_keys),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0, sort_keys),
        scalar => {
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
    out
}

fn entries(value: &Value, sort_keys: bool) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = value
        .as_object()
        .map(|m| m.iter().collect())
        .unwrap_or_default();
    if sort_keys {
        entries.sort_by(|a, b| a.0.cmp(b.0));
    }
    entries
}

fn is_block(value: &Value) -> bool {
    match value {
        Value::Object(map) => !map.is_empty(),
        Value::Array(items) => !items.is_empty(),
        _ => false,
    }
}

fn write_map(out: &mut String, value: &Value, indent: usize, sort_keys: bool) {
    for (i, (key, child)) in entries(value, sort_keys).into_iter().enumerate() {
        if i > 0 {
            out.push_str(&" ".repeat(indent));
        }
        write_entry(out, key, child, indent, sort_keys);
    }
}

/// One `key: value` whose first character goes where the cursor is; continuation lines at `indent`.
fn write_entry(out: &mut String, key: &str, child: &Value, indent: usize, sort_keys: bool) {
    out.push_str(&string_text(key));
    out.push(':');
    match child {
        Value::Object(_) if is_block(child) => {
            out.push('\n');
            out.push_str(&" ".repeat(indent + 2));
            write_map(out, child, indent + 2, sort_keys);
        }
        Value::Array(items) if is_block(child) => {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            write_seq(out, items, indent, sort_keys);
        }
        scalar => {
            out.push(' ');
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
}

fn write_seq(out: &mut String, items: &[Value], indent: usize, sort_keys: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str("- ");
        match item {
            Value::Object(_) if is_block(item) => write_map(out, item, indent + 2, sort_keys),
            Value::Array(inner) if is_block(item) => write_seq(out, inner, indent + 2, sort_keys),
            scalar => {
                out.push_str(&scalar_text(scalar));
                out.push('\n');
            }
        }
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string_text(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

/// Would a plain scalar with this text read back as something other than a string (YAML 1.1)?
fn resolves_to_non_string(s: &str) -> bool {
    const SPECIAL: &[&str] = &[
        "", "~", "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE", "yes",
        "Yes", "YES", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF", "y", "Y", "n", "N",
        ".inf", ".Inf", ".INF", "-.inf", "-.Inf", "-.INF", "+.inf", ".nan", ".NaN", ".NAN", "<<",
    ];
    if SPECIAL.contains(&s) {
        return true;
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    let numeric = !digits.is_empty()
        && digits
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '.')
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '_' | 'e' | 'E' | '-' | '+' | ':'))
        && digits.chars().filter(|c| *c == '.').count() <= 1;
    let hex = digits
        .strip_prefix("0x")
        .is_some_and(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit() || c == '_'));
    numeric && !s.contains('T') || hex
}

/// Can the emitter write this string plain in block context?
fn plain_allowed(s: &str) -> bool {
    let first = s.chars().next().unwrap_or(' ');
    let leading_indicator = "-?:,[]{}#&*!|>'\"%@`".contains(first);
    let indicator_ok = match first {
        '-' | '?' | ':' => s.len() > 1 && !s[1..].starts_with(' '),
        _ => !leading_indicator,
    };
    indicator_ok
        && !s.starts_with(' ')
        && !s.ends_with(' ')
        && !s.ends_with(':')
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.chars().any(|c| c.is_control())
}

fn string_text(s: &str) -> String {
    if resolves_to_non_string(s) || s.chars().any(|c| c.is_control()) {
        // Double quotes, with JSON's escapes (valid YAML double-quoted escapes).
        return serde_json::to_string(s).unwrap_or_default();
    }
    if plain_allowed(s) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_render_as_kubectl_prints_them() {
        let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "resourceVersion": "",
            "selfLink": "", "items": [{"kind": "DestinationRule", "apiVersion": "networking.istio.io/v1alpha3",
            "metadata": {"name": "default", "resourceVersion": "22419", "generation": 1,
            "creationTimestamp": "2019-01-30T04:46:58Z"},
            "spec": {"host": "*.local", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}}]});
        let expected = "\
apiVersion: v1
items:
- apiVersion: networking.istio.io/v1alpha3
  kind: DestinationRule
  metadata:
    creationTimestamp: 2019-01-30T04:46:58Z
    generation: 1
    name: default
    resourceVersion: \"22419\"
  spec:
    host: '*.local'
    trafficPolicy:
      tls:
        mode: ISTIO_MUTUAL
kind: List
metadata: {}
resourceVersion: \"\"
selfLink: \"\"
";
        assert_eq!(to_yaml(&list, true), expected);
    }

    #[test]
    fn scalars_are_quoted_only_when_needed() {
        let cases = [
            ("plain", "plain"),
            ("true", "\"true\""),
            ("8000", "\"8000\""),
            ("1.5", "\"1.5\""),
            ("", "\"\""),
            ("*.local", "'*.local'"),
            ("a: b", "'a: b'"),
            ("{\"x\":1}", "'{\"x\":1}'"),
            ("/bin/sleep", "/bin/sleep"),
            ("3650d", "3650d"),
            (
                "docker.io/citizenstig/httpbin",
                "docker.io/citizenstig/httpbin",
            ),
            ("--apply", "--apply"),
            ("- x", "'- x'"),
            ("line\nbreak", "\"line\\nbreak\""),
            ("2019-01-30T04:46:58Z", "2019-01-30T04:46:58Z"),
        ];
        for (input, expected) in cases {
            assert_eq!(string_text(input), expected, "{input:?}");
        }
    }

    #[test]
    fn nested_sequences_and_empty_collections() {
        let value = json!({"command": ["/bin/sleep", "3650d"], "env": [], "m": {}, "x": null,
            "nested": [["a"], {"k": [1]}]});
        let expected = "\
command:
- /bin/sleep
- 3650d
env: []
m: {}
x: null
nested:
- - a
- k:
  - 1
";
        assert_eq!(to_yaml(&value, false), expected);
    }
}
