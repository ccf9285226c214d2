//! Request path normalization before `paths` matching, as Istio's default (`pathNormalization: BASE`,
//! Envoy's RFC 3986 normalization): percent-encoded unreserved characters are decoded and `.`/`..`
//! segments removed, so `/./headers` or `/%68eaders` cannot slip past a DENY on `/headers`.

use std::borrow::Cow;

/// The normalized form of an absolute request path (without query). Borrows, without allocating, when the
/// path is already normal (the common case). The proxy should forward this same path upstream, as Envoy does.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    let decoded: Cow<'_, str> = if path.contains('%') {
        // Decode until nothing changes: `/%3%30` decodes to `/%30`, which an upstream would read as `/0`.
        // Each pass that changes something is shorter, so this ends.
        let mut current = decode_unreserved(path);
        loop {
            let next = decode_unreserved(&current);
            if next == current {
                break Cow::Owned(current);
            }
            current = next;
        }
    } else {
        Cow::Borrowed(path)
    };
    if !decoded
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return decoded;
    }
    Cow::Owned(remove_dot_segments(&decoded))
}

/// Decodes `%XX` only where XX is an unreserved character (ALPHA / DIGIT / `-` / `.` / `_` / `~`),
/// leaving every other escape (e.g. `%2F`) as written, as RFC 3986 §6.2.2.2 allows.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            let unreserved = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
            if let Some(byte) = unreserved {
                out.push(char::from(byte));
                i += 3;
                continue;
            }
        }
        // Copy one whole UTF-8 character.
        let len = path[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&path[i..i + len]);
        i += len;
    }
    out
}

/// RFC 3986 §5.2.4 on the segments of a path.
fn remove_dot_segments(path: &str) -> String {
    let absolute = path.starts_with('/');
    let segments: Vec<&str> = path.split('/').skip(usize::from(absolute)).collect();
    let last = segments.len().saturating_sub(1);
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {}
            ".." => {
                out.pop();
            }
            other => out.push(other),
        }
        // A trailing `.` or `..` leaves a directory path: keep its trailing slash.
        if i == last && matches!(*segment, "." | "..") {
            out.push("");
        }
    }
    let joined = out.join("/");
    if absolute {
        format!("/{joined}")
    } else {
        joined
    }
}

/// One piece of a compiled path template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplatePart {
    Literal(Box<str>),
    /// `{*}`: exactly one non-empty path segment.
    One,
    /// `{**}`: zero or more characters across segments (`/` included).
    Any,
}

/// An Istio path template (`/api/{*}/items`, `/static/{**}`), matched as Envoy's URI template matcher
/// that Istio configures for it (pilot/pkg/security/authz/matcher/template.go turns `{*}` into `*` and
/// `{**}` into `**`; envoy source/extensions/path/uri_template_lib/uri_template_internal.cc matches `*`
/// with `[pchar]+` and `**` with `[pchar/]*`, on the whole path without query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathTemplate {
    parts: Vec<TemplatePart>,
}

/// Envoy's literal characters for template operators (RFC 3986 pchar without `*` and `=`).
fn is_template_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@".contains(&byte)
}

impl PathTemplate {
    /// Compiles a template already checked by [`check_path_template`]; `None` when it has no `{*}`/`{**}`.
    pub(crate) fn parse(template: &str) -> Option<Self> {
        if !contains_path_template(template) {
            return None;
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let body = template.strip_prefix('/').unwrap_or(template);
        literal.push('/');
        for (i, glob) in body.split('/').enumerate() {
            if i > 0 {
                literal.push('/');
            }
            let operator = match glob {
                "{*}" => Some(TemplatePart::One),
                "{**}" => Some(TemplatePart::Any),
                _ => None,
            };
            match operator {
                Some(operator) => {
                    parts.push(TemplatePart::Literal(std::mem::take(&mut literal).into()));
                    parts.push(operator);
                }
                None => literal.push_str(glob),
            }
        }
        parts.push(TemplatePart::Literal(literal.into()));
        parts.retain(|part| !matches!(part, TemplatePart::Literal(l) if l.is_empty()));
        Some(Self { parts })
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        matches_parts(&self.parts, path.as_bytes())
    }
}

fn matches_parts(parts: &[TemplatePart], path: &[u8]) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return path.is_empty();
    };
    match first {
        TemplatePart::Literal(literal) => path
            .strip_prefix(literal.as_bytes())
            .is_some_and(|tail| matches_parts(rest, tail)),
        TemplatePart::One => {
            let run = path.iter().take_while(|b| is_template_char(**b)).count();
            (1..=run).rev().any(|n| matches_parts(rest, &path[n..]))
        }
        TemplatePart::Any => {
            let run = path
                .iter()
                .take_while(|b| **b == b'/' || is_template_char(**b))
                .count();
            (0..=run).rev().any(|n| matches_parts(rest, &path[n..]))
        }
    }
}

/// Istio's `ContainsPathTemplate`: the path uses `{*}` or `{**}`.
pub(crate) fn contains_path_template(path: &str) -> bool {
    path.contains("{*}") || path.contains("{**}")
}

/// Istio's `CheckValidPathTemplate` (pkg/config/security/security.go) on one `paths`/`notPaths` value:
/// `{*}` and `{**}` only as whole segments, nothing after `{**}` but literals, no other `{`/`}`, and in a
/// template every literal segment made of RFC 3986 pchar characters. `Err` says what is wrong.
pub(crate) fn check_path_template(path: &str) -> Result<(), String> {
    let is_template = contains_path_template(path);
    let mut seen_any = false;
    for glob in path.trim_matches('/').split('/') {
        match glob {
            "{*}" | "{**}" if seen_any => {
                return Err(format!(
                    "invalid or unsupported path {path}: {{**}} is not the last operator"
                ));
            }
            "{*}" => continue,
            "{**}" => {
                seen_any = true;
                continue;
            }
            _ => {}
        }
        if glob.contains(['{', '}']) {
            return Err(format!(
                "invalid or unsupported path {path}: contains '{{' or '}}' beyond a supported path template ({{*}} or {{**}} as a whole segment)"
            ));
        }
        let valid_literal = !glob.is_empty()
            && glob
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&b));
        if is_template && !valid_literal {
            return Err(format!(
                "invalid or unsupported path {path}: segment `{glob}` is not a valid literal (letters, digits and -._~%!$&'()+,;:@= only)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_templates_validate_as_istio() {
        // Rows of pkg/config/security/security_test.go TestCheckValidPathTemplate.
        for (path, valid) in [
            ("/{*}/foo", true),
            ("/{*}/foo/", true),
            ("/foo/{**}/bar", true),
            ("/foo/bar/{**}", true),
            ("/foo/{**}buzz/bar", false),
            ("/{*}/foo/{}/bar", false),
            ("/foo/{*}/bar/*", false),
            ("/foo/{*}/bar/**/buzz", false),
            ("/foo/{buzz}/bar", false),
            ("/{buzz}", false),
            ("/foo/{buzz}/bar/{**}", false),
            ("/foo/{buzz=*}/bar/{**}", false),
            ("/{*}/foo/{buzz=**}/bar", false),
            ("/{*}/foo/{**}bar", false),
            ("/{*}/foo/{*}.txt", false),
            ("/{*}/foo/{temp", false),
            ("/{*}/foo/temp}/bar", false),
            ("/{*}/foo/temp}/*", false),
            ("/{**}/foo/temp/{*}/bar", false),
            ("/{**}/{**}", false),
            ("/{**}/foo/temp/{**}/bar", false),
            ("/{*}/foo/?abc", false),
            // Not templates: `*` keeps its prefix/suffix meaning.
            ("/foo/*", true),
            ("*/foo", true),
        ] {
            assert_eq!(check_path_template(path).is_ok(), valid, "{path}");
        }
    }

    #[test]
    fn path_templates_match_as_envoys_uri_template() {
        let t = |p: &str| PathTemplate::parse(p).expect("a template");
        for (template, path, want) in [
            ("/foo/{*}", "/foo/bar", true),
            ("/foo/{*}", "/foo/", false),
            ("/foo/{*}", "/foo/bar/baz", false),
            ("/{*}/foo", "/x/foo", true),
            ("/{*}/foo/", "/x/foo/", true),
            ("/{*}/foo/", "/x/foo", false),
            ("/foo/{**}", "/foo/", true),
            ("/foo/{**}", "/foo/a/b/c", true),
            ("/foo/{**}", "/foo", false),
            ("/foo/{**}/bar", "/foo/a/b/bar", true),
            ("/foo/{**}/bar", "/foo/bar", false),
            ("/foo/{**}/bar", "/foo/a/bar/x", false),
            ("/{*}/{*}/foo/{**}/bar", "/a/b/foo/c/d/bar", true),
            ("/api/{*}/items", "/api/v1/items", true),
            ("/api/{*}/items", "/api/v1/v2/items", false),
        ] {
            assert_eq!(t(template).matches(path), want, "{template} vs {path}");
        }
    }

    #[test]
    fn normal_paths_are_borrowed() {
        assert!(matches!(normalize_path("/api/v1/items"), Cow::Borrowed(_)));
        assert!(matches!(normalize_path("/a..b/c."), Cow::Borrowed(_)));
    }

    #[test]
    fn dot_segments_and_unreserved_escapes_are_normalized() {
        let cases = [
            ("/./headers", "/headers"),
            ("/ip/../headers", "/headers"),
            ("/../../headers", "/headers"),
            ("/a/b/.", "/a/b/"),
            ("/a/..", "/"),
            ("/%68eaders", "/headers"),
            ("/%2e/headers", "/headers"),
            ("/a%2Fb", "/a%2Fb"),
            ("/100%", "/100%"),
            ("/caf%C3%A9/é", "/caf%C3%A9/é"),
            ("/%3%30", "/0"),
            ("/%2530", "/%2530"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_path(input), want, "{input}");
        }
    }
}
