//! The request's authority, settled before routing and authorization as Envoy's HTTP connection manager
//! does: the application must see the same host the policies were evaluated on.

use http::HeaderValue;
use http::header::HOST;

/// Why a request's authority is refused (answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HostError {
    /// RFC 9112 section 3.2: "A server MUST respond with a 400 (Bad Request) status code to any
    /// HTTP/1.1 request message that lacks a Host header field and to any request message that contains
    /// more than one Host header field line or a Host header field with an invalid field value."
    #[error("more than one Host header")]
    Duplicate,
    /// RFC 9110 section 4.2.4: userinfo in an http(s) URI is to be treated as an error.
    #[error("userinfo in the request target")]
    UserInfo,
}

/// Makes the `Host` header say what the request target says. An absolute-form target
/// (`GET http://host/path`, or HTTP/2's `:authority`) wins over any `Host` header: RFC 9112 section 3.2.2
/// ("the proxy MUST ignore the received Host header field ... and instead replace it with the host
/// information of the request-target"), and Envoy normalises it so (absolute URL to origin form plus
/// `:authority`). Without this the policies read one host and the application another.
pub(crate) fn normalize_host<B>(request: &mut http::Request<B>) -> Result<(), HostError> {
    if request.headers().get_all(HOST).iter().nth(1).is_some() {
        return Err(HostError::Duplicate);
    }
    let Some(authority) = request.uri().authority() else {
        return Ok(());
    };
    if authority.as_str().contains('@') {
        return Err(HostError::UserInfo);
    }
    // An authority that parsed as part of a URI is a valid header value.
    if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
        request.headers_mut().insert(HOST, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, hosts: &[&str]) -> http::Request<()> {
        let mut builder = http::Request::builder().uri(target);
        for host in hosts {
            builder = builder.header(HOST, *host);
        }
        builder.body(()).unwrap()
    }

    /// (target, Host headers, outcome, Host afterwards)
    type Case = (
        &'static str,
        &'static [&'static str],
        Result<(), HostError>,
        Option<&'static str>,
    );

    #[test]
    fn table() {
        let cases: [Case; 7] = [
            ("/get", &["httpbin.foo"], Ok(()), Some("httpbin.foo")),
            ("/get", &[], Ok(()), None),
            ("/get", &["a", "b"], Err(HostError::Duplicate), None),
            ("/get", &["a", "a"], Err(HostError::Duplicate), None),
            (
                "http://httpbin.foo:8000/get",
                &["other"],
                Ok(()),
                Some("httpbin.foo:8000"),
            ),
            ("http://httpbin.foo/get", &[], Ok(()), Some("httpbin.foo")),
            (
                "http://user@httpbin.foo/get",
                &[],
                Err(HostError::UserInfo),
                None,
            ),
        ];
        for (target, hosts, outcome, after) in cases {
            let mut request = request(target, hosts);
            assert_eq!(normalize_host(&mut request), outcome, "{target} {hosts:?}");
            if outcome.is_ok() {
                assert_eq!(
                    request.headers().get(HOST).map(|h| h.to_str().unwrap()),
                    after,
                    "{target} {hosts:?}"
                );
            }
        }
    }
}
