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

#[cfg(test)]
mod tests {
    use super::*;

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
