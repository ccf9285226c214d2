//! Shared builders for the authz integration tests: policy objects, typical requests and one-shot decisions.
#![allow(dead_code)]

use std::collections::BTreeMap;

use ironmesh_authz::{
    AuthzIndex, DEFAULT_ROOT_NAMESPACE, Decision, Http, Peer, PolicyObject, Request,
};
use serde_json::Value;

pub fn policy(namespace: &str, name: &str, spec: Value) -> PolicyObject {
    PolicyObject {
        namespace: namespace.into(),
        name: name.into(),
        creation_timestamp: None,
        annotations: Default::default(),
        spec,
    }
}

/// An HTTP `GET /ip` to httpbin.foo:8000 from `sleep` in `namespace` over mTLS.
pub fn mtls_from(namespace: &str) -> Request {
    Request {
        peer: Some(Peer::from_principal(&format!(
            "cluster.local/ns/{namespace}/sa/sleep"
        ))),
        ..plaintext()
    }
}

/// The same request from a plaintext (legacy, no sidecar) client.
pub fn plaintext() -> Request {
    Request {
        peer: None,
        source_ip: "10.0.0.2".parse().expect("ip"),
        destination_ip: "10.0.0.3".parse().expect("ip"),
        destination_port: 8000,
        sni: None,
        http: Some(Http {
            method: "GET".into(),
            path: "/ip".into(),
            host: "httpbin.foo:8000".into(),
            headers: vec![("User-Agent".into(), "curl/8.5".into())],
        }),
    }
}

pub fn with_path(mut request: Request, path: &str) -> Request {
    request.http.as_mut().expect("an HTTP request").path = path.into();
    request
}

pub fn tcp(mut request: Request) -> Request {
    request.http = None;
    request
}

pub fn http_mut(request: &mut Request) -> &mut Http {
    request.http.as_mut().expect("an HTTP request")
}

/// Evaluates `request` for the workload `app=httpbin` in namespace `foo`.
pub fn decide(policies: Vec<PolicyObject>, request: &Request) -> Decision {
    decide_for(policies, "foo", &[("app", "httpbin")], request)
}

pub fn decide_for(
    policies: Vec<PolicyObject>,
    namespace: &str,
    labels: &[(&str, &str)],
    request: &Request,
) -> Decision {
    let index = AuthzIndex::new(policies, DEFAULT_ROOT_NAMESPACE).expect("test policies are valid");
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    index.policies_for(namespace, &labels).evaluate(request)
}

/// Fails listing every failing row of a table, so one run shows all that disagree.
pub fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
