//! kubectl's `-o jsonpath` template language: literal text, `{.path}` expressions (fields, `..`
//! recursive descent, `[*]`, `[n]`, `[a:b]`, `['key']`, `[?(@.f=="v")]`), `{"\n"}` literals and
//! `{range EXPR}...{end}`. Missing keys print nothing, as kubectl's `get` does.

use serde_json::Value;

/// Why a template could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "error parsing jsonpath {template}: {reason}; write it as kubectl does, e.g. {{.items[*].metadata.name}}"
)]
pub struct JsonPathError {
    template: String,
    reason: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Expr(Vec<Step>),
    Range(Vec<Step>, Vec<Node>),
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Recursive,
    Wildcard,
    Index(i64),
    Slice(Option<i64>, Option<i64>),
    Filter(Filter),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    path: Vec<Step>,
    /// `None` for an existence test `[?(@.x)]`.
    comparison: Option<(String, Value)>,
}

/// A parsed template, ready to run against many values.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    nodes: Vec<Node>,
}

impl Template {
    /// Parses `{.items[*].metadata.name}`; surrounding single quotes (as typed in `jsonpath='...'`
    /// without a shell) are removed.
    pub fn parse(template: &str) -> Result<Template, JsonPathError> {
        let text = template
            .strip_prefix('\'')
            .and_then(|t| t.strip_suffix('\''))
            .unwrap_or(template);
        let fail = |reason: String| JsonPathError {
            template: template.to_string(),
            reason,
        };
        let mut stack: Vec<(Vec<Step>, Vec<Node>)> = Vec::new();
        let mut nodes = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let Some(open) = rest.find('{') else {
                nodes.push(Node::Text(rest.to_string()));
                break;
            };
            if open > 0 {
                nodes.push(Node::Text(rest[..open].to_string()));
            }
            let close = matching_close(&rest[open..])
                .ok_or_else(|| fail("unclosed action: a '{' has no matching '}'".into()))?;
            let action = rest[open + 1..open + close].trim();
            rest = &rest[open + close + 1..];
            if action == "end" {
                let (path, outer) = stack
                    .pop()
                    .ok_or_else(|| fail("{end} without a {range}".into()))?;
                let body = std::mem::replace(&mut nodes, outer);
                nodes.push(Node::Range(path, body));
            } else if let Some(expr) = action.strip_prefix("range ") {
                let path = parse_path(expr.trim()).map_err(fail)?;
                stack.push((path, std::mem::take(&mut nodes)));
            } else if action.starts_with('"') {
                let literal: String = serde_json::from_str(action)
                    .map_err(|e| fail(format!("bad string literal {action}: {e}")))?;
                nodes.push(Node::Text(literal));
            } else {
                nodes.push(Node::Expr(parse_path(action).map_err(fail)?));
            }
        }
        if !stack.is_empty() {
            return Err(fail("a {range} has no {end}".into()));
        }
        Ok(Template { nodes })
    }

    /// Runs the template against `root`.
    pub fn render(&self, root: &Value) -> String {
        let mut out = String::new();
        render_nodes(&self.nodes, root, &mut out);
        out
    }
}

fn matching_close(text: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(1) {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '}' => return Some(i),
            None => {}
        }
    }
    None
}

fn parse_path(expr: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    if matches!(chars.first(), Some('$') | Some('@')) {
        i = 1;
    }
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                if chars.get(i) == Some(&'.') {
                    steps.push(Step::Recursive);
                    i += 1;
                }
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                match name.as_str() {
                    "" => {}
                    "*" => steps.push(Step::Wildcard),
                    _ => steps.push(Step::Field(name)),
                }
            }
            '[' => {
                let mut depth = 0;
                let mut quote: Option<char> = None;
                let start = i + 1;
                let mut end = None;
                for (j, &c) in chars.iter().enumerate().skip(i) {
                    match quote {
                        Some(q) if c == q => quote = None,
                        Some(_) => {}
                        None if c == '"' || c == '\'' => quote = Some(c),
                        None if c == '[' => depth += 1,
                        None if c == ']' => {
                            depth -= 1;
                            if depth == 0 {
                                end = Some(j);
                                break;
                            }
                        }
                        None => {}
                    }
                }
                let end = end.ok_or_else(|| format!("unclosed '[' in {expr}"))?;
                let inner: String = chars[start..end].iter().collect();
                steps.push(parse_bracket(inner.trim())?);
                i = end + 1;
            }
            c => return Err(format!("unexpected {c:?} in {expr}; paths start with '.'")),
        }
    }
    Ok(steps)
}

fn parse_bracket(inner: &str) -> Result<Step, String> {
    if inner == "*" {
        return Ok(Step::Wildcard);
    }
    if let Some(filter) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
        return parse_filter(filter.trim());
    }
    if (inner.starts_with('\'') && inner.ends_with('\'')
        || inner.starts_with('"') && inner.ends_with('"'))
        && inner.len() >= 2
    {
        return Ok(Step::Field(inner[1..inner.len() - 1].to_string()));
    }
    let number = |s: &str| -> Result<Option<i64>, String> {
        let s = s.trim();
        if s.is_empty() {
            Ok(None)
        } else {
            s.parse().map(Some).map_err(|_| format!("bad index {s:?}"))
        }
    };
    if let Some((from, to)) = inner.split_once(':') {
        let to = to.split(':').next().unwrap_or_default();
        return Ok(Step::Slice(number(from)?, number(to)?));
    }
    number(inner)?
        .map(Step::Index)
        .ok_or_else(|| "empty brackets".to_string())
}

fn parse_filter(filter: &str) -> Result<Step, String> {
    for op in ["==", "!=", "<=", ">=", "<", ">"] {
        if let Some((left, right)) = filter.split_once(op) {
            let right = right.trim();
            let literal = if right.starts_with('\'') && right.ends_with('\'') && right.len() >= 2 {
                Value::from(&right[1..right.len() - 1])
            } else {
                serde_json::from_str(right).map_err(|_| format!("bad filter value {right}"))?
            };
            return Ok(Step::Filter(Filter {
                path: parse_path(left.trim())?,
                comparison: Some((op.to_string(), literal)),
            }));
        }
    }
    Ok(Step::Filter(Filter {
        path: parse_path(filter)?,
        comparison: None,
    }))
}

fn evaluate<'a>(steps: &[Step], root: &'a Value) -> Vec<&'a Value> {
    let mut current = vec![root];
    for step in steps {
        let mut next = Vec::new();
        for value in current {
            match step {
                Step::Field(name) => next.extend(value.get(name.as_str())),
                Step::Recursive => descend(value, &mut next),
                Step::Wildcard => match value {
                    Value::Object(map) => next.extend(map.values()),
                    Value::Array(items) => next.extend(items.iter()),
                    _ => {}
                },
                Step::Index(index) => {
                    if let Value::Array(items) = value {
                        let len = items.len() as i64;
                        let at = if *index < 0 { len + index } else { *index };
                        next.extend(usize::try_from(at).ok().and_then(|at| items.get(at)));
                    }
                }
                Step::Slice(from, to) => {
                    if let Value::Array(items) = value {
                        let len = items.len() as i64;
                        let clamp =
                            |v: i64| (if v < 0 { len + v } else { v }).clamp(0, len) as usize;
                        let (from, to) = (clamp(from.unwrap_or(0)), clamp(to.unwrap_or(len)));
                        if from < to {
                            next.extend(items[from..to].iter());
                        }
                    }
                }
                Step::Filter(filter) => {
                    if let Value::Array(items) = value {
                        next.extend(items.iter().filter(|item| filter_matches(filter, item)));
                    }
                }
            }
        }
        current = next;
    }
    current
}

/// The value and every value below it, parents first (kubectl's recursive descent).
fn descend<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            out.push(value);
            map.values().for_each(|child| descend(child, out));
        }
        Value::Array(items) => {
            out.push(value);
            items.iter().for_each(|child| descend(child, out));
        }
        _ => {}
    }
}

fn filter_matches(filter: &Filter, item: &Value) -> bool {
    let found = evaluate(&filter.path, item);
    let Some((op, literal)) = &filter.comparison else {
        return !found.is_empty();
    };
    found.iter().any(|value| {
        let ordering = match (value.as_f64(), literal.as_f64()) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => match (value.as_str(), literal.as_str()) {
                (Some(a), Some(b)) => Some(a.cmp(b)),
                _ => None,
            },
        };
        use std::cmp::Ordering::*;
        match (op.as_str(), ordering) {
            ("==", _) => *value == literal,
            ("!=", _) => *value != literal,
            ("<", Some(o)) => o == Less,
            (">", Some(o)) => o == Greater,
            ("<=", Some(o)) => o != Greater,
            (">=", Some(o)) => o != Less,
            _ => false,
        }
    })
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn render_nodes(nodes: &[Node], root: &Value, out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Expr(steps) => {
                let values: Vec<String> = evaluate(steps, root).into_iter().map(text_of).collect();
                out.push_str(&values.join(" "));
            }
            Node::Range(steps, body) => {
                for value in evaluate(steps, root) {
                    render_nodes(body, value, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pods() -> Value {
        json!({"apiVersion": "v1", "kind": "List", "items": [
            {"metadata": {"name": "sleep-7dc47f96b6-7dfld", "labels": {"app": "sleep"}},
             "spec": {"containers": [{"name": "sleep", "ports": [{"containerPort": 80}]},
                                     {"name": "ironmesh-proxy"}]},
             "status": {"podIP": "198.18.0.5", "ready": true}},
            {"metadata": {"name": "httpbin-1", "labels": {"app": "httpbin"}},
             "spec": {"containers": [{"name": "httpbin"}]},
             "status": {"podIP": "198.18.0.6", "ready": false}}
        ]})
    }

    #[test]
    fn templates_render_as_kubectl() {
        let list = pods();
        let pod = list["items"][0].clone();
        let cases: &[(&str, &Value, &str)] = &[
            (
                "{.items..metadata.name}",
                &list,
                "sleep-7dc47f96b6-7dfld httpbin-1",
            ),
            (
                "{.items[*].metadata.name}",
                &list,
                "sleep-7dc47f96b6-7dfld httpbin-1",
            ),
            (
                "'{.items[*].metadata.name}'",
                &list,
                "sleep-7dc47f96b6-7dfld httpbin-1",
            ),
            ("{.spec.containers[*].name}", &pod, "sleep ironmesh-proxy"),
            ("{$.spec.containers[0].name}", &pod, "sleep"),
            ("{.spec.containers[-1].name}", &pod, "ironmesh-proxy"),
            (
                "{.items[0:1].metadata.name}",
                &list,
                "sleep-7dc47f96b6-7dfld",
            ),
            ("{.metadata.labels['app']}", &pod, "sleep"),
            ("{.spec.containers[0].ports[0].containerPort}", &pod, "80"),
            ("{.status.ready}", &pod, "true"),
            ("{.metadata.labels}", &pod, "{\"app\":\"sleep\"}"),
            ("{.metadata.missing}", &pod, ""),
            (
                "name: {.metadata.name}!",
                &pod,
                "name: sleep-7dc47f96b6-7dfld!",
            ),
            (
                "{range .items[*]}{.metadata.name}{\"\\t\"}{.status.podIP}{\"\\n\"}{end}",
                &list,
                "sleep-7dc47f96b6-7dfld\t198.18.0.5\nhttpbin-1\t198.18.0.6\n",
            ),
            (
                "{.items[?(@.metadata.labels.app==\"httpbin\")].status.podIP}",
                &list,
                "198.18.0.6",
            ),
            (
                "{.items[?(@.status.ready==true)].metadata.name}",
                &list,
                "sleep-7dc47f96b6-7dfld",
            ),
            (
                "{.items[?(@.spec.containers[1])].metadata.name}",
                &list,
                "sleep-7dc47f96b6-7dfld",
            ),
            (
                "{range .items[*]}[{range .spec.containers[*]}{.name},{end}]{end}",
                &list,
                "[sleep,ironmesh-proxy,][httpbin,]",
            ),
        ];
        for (template, input, expected) in cases {
            let parsed = Template::parse(template).unwrap_or_else(|e| panic!("{template}: {e}"));
            assert_eq!(parsed.render(input), *expected, "template {template}");
        }
    }

    #[test]
    fn malformed_templates_are_errors() {
        for bad in [
            "{.items",
            "{range .items[*]}{.x}",
            "{end}",
            "{.items[}",
            "{\"unterminated}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad} should not parse");
        }
    }
}
