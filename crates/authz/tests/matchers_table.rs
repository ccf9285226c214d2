//! One table row per matcher: a single ALLOW policy with one rule, so "allowed" means "the rule matched".
//! Names cite the Istio rule checked: API-AP = istio/api `security/v1beta1/authorization_policy.proto`,
//! a lowercase anchor (`authz-identity:`) = that section of docs/SEMANTICS.md, SEC-2021-004 = Istio bulletin ISTIO-SECURITY-2021-004.

mod common;

use common::{decide, http_mut, mtls_from, plaintext, policy, tcp, with_path};
use ironmesh_authz::{Peer, Request};
use serde_json::{Value, json};

struct Case {
    name: &'static str,
    rule: Value,
    request: Request,
    matches: bool,
}

fn case(name: &'static str, rule: Value, request: Request, matches: bool) -> Case {
    Case {
        name,
        rule,
        request,
        matches,
    }
}

fn from_ip(ip: &str) -> Request {
    Request {
        source_ip: ip.parse().expect("ip"),
        ..mtls_from("foo")
    }
}

fn with_header(mut request: Request, name: &str, value: &str) -> Request {
    http_mut(&mut request)
        .headers
        .push((name.into(), value.into()));
    request
}

fn with_method(mut request: Request, method: &str) -> Request {
    http_mut(&mut request).method = method.into();
    request
}

fn with_host(mut request: Request, host: &str) -> Request {
    http_mut(&mut request).host = host.into();
    request
}

fn on_port(mut request: Request, port: u16) -> Request {
    request.destination_port = port;
    request
}

fn with_sni(mut request: Request, sni: &str) -> Request {
    request.sni = Some(sni.into());
    request
}

fn source(fields: Value) -> Value {
    json!({"from": [{"source": fields}]})
}

fn operation(fields: Value) -> Value {
    json!({"to": [{"operation": fields}]})
}

fn when(key: &str, values: &[&str], not_values: &[&str]) -> Value {
    let mut condition = json!({"key": key});
    if !values.is_empty() {
        condition["values"] = json!(values);
    }
    if !not_values.is_empty() {
        condition["notValues"] = json!(not_values);
    }
    json!({"when": [condition]})
}

fn source_cases() -> Vec<Case> {
    vec![
        case(
            "API-AP principals: exact principal matches",
            source(json!({"principals": ["cluster.local/ns/foo/sa/sleep"]})),
            mtls_from("foo"),
            true,
        ),
        case(
            "API-AP principals: another principal does not match",
            source(json!({"principals": ["cluster.local/ns/foo/sa/sleep"]})),
            mtls_from("bar"),
            false,
        ),
        case(
            "API-AP principals: prefix `ns/foo/*` matches",
            source(json!({"principals": ["cluster.local/ns/foo/*"]})),
            mtls_from("foo"),
            true,
        ),
        case(
            "API-AP principals: suffix `*/sa/sleep` matches",
            source(json!({"principals": ["*/sa/sleep"]})),
            mtls_from("bar"),
            true,
        ),
        case(
            "authz-identity: principals [\"*\"]: any authenticated peer matches",
            source(json!({"principals": ["*"]})),
            mtls_from("bar"),
            true,
        ),
        case(
            "authz-identity: principals require mTLS: `*` never matches plaintext",
            source(json!({"principals": ["*"]})),
            plaintext(),
            false,
        ),
        case(
            "API-AP notPrincipals: a listed peer does not match",
            source(json!({"notPrincipals": ["cluster.local/ns/bar/sa/sleep"]})),
            mtls_from("bar"),
            false,
        ),
        case(
            "API-AP notPrincipals: an unlisted peer matches",
            source(json!({"notPrincipals": ["cluster.local/ns/bar/sa/sleep"]})),
            mtls_from("foo"),
            true,
        ),
        case(
            "SEC-2021-004 notPrincipals [\"*\"] matches plaintext (the require-mTLS DENY form)",
            source(json!({"notPrincipals": ["*"]})),
            plaintext(),
            true,
        ),
        case(
            "API-AP requestPrincipals need a JWT: never match without one",
            source(json!({"requestPrincipals": ["*"]})),
            mtls_from("foo"),
            false,
        ),
        case(
            "absent-attribute rule as SEC-2021-004: notRequestPrincipals [\"*\"] matches a request without JWT",
            source(json!({"notRequestPrincipals": ["*"]})),
            mtls_from("foo"),
            true,
        ),
        case(
            "authz-identity: namespaces: the peer's namespace matches",
            source(json!({"namespaces": ["foo"]})),
            mtls_from("foo"),
            true,
        ),
        case(
            "authz-identity: namespaces: another namespace does not match",
            source(json!({"namespaces": ["foo"]})),
            mtls_from("bar"),
            false,
        ),
        case(
            "authz-identity: namespaces require mTLS: plaintext never matches",
            source(json!({"namespaces": ["*"]})),
            plaintext(),
            false,
        ),
        case(
            "API-AP namespaces: prefix pattern `f*` matches foo",
            source(json!({"namespaces": ["f*"]})),
            mtls_from("foo"),
            true,
        ),
        case(
            "API-AP notNamespaces: a listed namespace does not match",
            source(json!({"notNamespaces": ["bar"]})),
            mtls_from("bar"),
            false,
        ),
        case(
            "SEC-2021-004 notNamespaces: plaintext is compared to an empty value and matches",
            source(json!({"notNamespaces": ["foo"]})),
            plaintext(),
            true,
        ),
        case(
            "API-AP ipBlocks: CIDR contains the source IP",
            source(json!({"ipBlocks": ["10.0.0.0/24"]})),
            from_ip("10.0.0.9"),
            true,
        ),
        case(
            "API-AP ipBlocks: CIDR does not contain the source IP",
            source(json!({"ipBlocks": ["10.0.0.0/24"]})),
            from_ip("10.0.1.9"),
            false,
        ),
        case(
            "API-AP ipBlocks: a bare IP is a single address",
            source(json!({"ipBlocks": ["10.0.1.9"]})),
            from_ip("10.0.1.9"),
            true,
        ),
        case(
            "API-AP notIpBlocks: a listed source does not match",
            source(json!({"notIpBlocks": ["10.0.0.0/8"]})),
            from_ip("10.3.0.1"),
            false,
        ),
        case(
            "API-AP notIpBlocks: an unlisted source matches",
            source(json!({"notIpBlocks": ["10.0.0.0/8"]})),
            from_ip("192.168.0.1"),
            true,
        ),
        case(
            "API-AP remoteIpBlocks: without X-Forwarded-For the remote IP is the source IP",
            source(json!({"remoteIpBlocks": ["192.168.0.0/16"]})),
            from_ip("192.168.3.4"),
            true,
        ),
        case(
            "API-AP notRemoteIpBlocks: a listed remote does not match",
            source(json!({"notRemoteIpBlocks": ["192.168.0.0/16"]})),
            from_ip("192.168.3.4"),
            false,
        ),
        case(
            "API-AP source fields are AND-ed: namespace right, IP wrong",
            source(json!({"namespaces": ["foo"], "ipBlocks": ["192.168.0.0/16"]})),
            mtls_from("foo"),
            false,
        ),
        case(
            "API-AP from entries are OR-ed: the second source matches",
            json!({"from": [{"source": {"namespaces": ["bar"]}}, {"source": {"namespaces": ["foo"]}}]}),
            mtls_from("foo"),
            true,
        ),
    ]
}

fn operation_cases() -> Vec<Case> {
    vec![
        case(
            "API-AP hosts: exact host matches ignoring case and port",
            operation(json!({"hosts": ["HTTPBIN.foo"]})),
            mtls_from("foo"),
            true,
        ),
        case(
            "API-AP hosts: host:port written in full matches",
            operation(json!({"hosts": ["httpbin.foo:8000"]})),
            mtls_from("foo"),
            true,
        ),
        case(
            "API-AP hosts: suffix `*.example.com` matches a subdomain",
            operation(json!({"hosts": ["*.example.com"]})),
            with_host(mtls_from("foo"), "api.example.com"),
            true,
        ),
        case(
            "API-AP hosts: suffix `*.example.com` does not match another domain",
            operation(json!({"hosts": ["*.example.com"]})),
            with_host(mtls_from("foo"), "example.org"),
            false,
        ),
        case(
            "API-AP notHosts: a listed host does not match",
            operation(json!({"notHosts": ["httpbin.foo"]})),
            mtls_from("foo"),
            false,
        ),
        case(
            "API-AP ports: numeric port matches",
            operation(json!({"ports": [8000]})),
            mtls_from("foo"),
            true,
        ),
        case(
            "API-AP ports: string port matches",
            operation(json!({"ports": ["8000"]})),
            mtls_from("foo"),
            true,
        ),
        case(
            "API-AP ports: another port does not match",
            operation(json!({"ports": ["9000"]})),
            mtls_from("foo"),
            false,
        ),
        case(
            "API-AP notPorts: a listed port does not match",
            operation(json!({"notPorts": ["8000"]})),
            mtls_from("foo"),
            false,
        ),
        case(
            "API-AP notPorts: an unlisted port matches",
            operation(json!({"notPorts": ["8000"]})),
            on_port(mtls_from("foo"), 9000),
            true,
        ),
        case(
            "API-AP methods: exact method matches",
            operation(json!({"methods": ["GET", "HEAD"]})),
            mtls_from("foo"),
            true,
        ),
        case(
            "API-AP methods: another method does not match",
            operation(json!({"methods": ["GET"]})),
            with_method(mtls_from("foo"), "POST"),
            false,
        ),
        case(
            "API-AP notMethods: a listed method does not match",
            operation(json!({"notMethods": ["POST"]})),
            with_method(mtls_from("foo"), "POST"),
            false,
        ),
        case(
            "API-AP paths: exact path matches, query ignored",
            operation(json!({"paths": ["/headers"]})),
            with_path(mtls_from("foo"), "/headers?x=1"),
            true,
        ),
        case(
            "API-AP paths: exact path does not match a longer path",
            operation(json!({"paths": ["/headers"]})),
            with_path(mtls_from("foo"), "/headers/x"),
            false,
        ),
        case(
            "API-AP paths: prefix `/api/*` matches",
            operation(json!({"paths": ["/api/*"]})),
            with_path(mtls_from("foo"), "/api/v1/x"),
            true,
        ),
        case(
            "API-AP paths: suffix `*/info` matches",
            operation(json!({"paths": ["*/info"]})),
            with_path(mtls_from("foo"), "/v2/info"),
            true,
        ),
        case(
            "API-AP paths: `*` matches any path",
            operation(json!({"paths": ["*"]})),
            mtls_from("foo"),
            true,
        ),
        case(
            "API-AP notPaths: a listed path does not match",
            operation(json!({"notPaths": ["/ip"]})),
            mtls_from("foo"),
            false,
        ),
        case(
            "API-AP notPaths: an unlisted path matches",
            operation(json!({"notPaths": ["/admin*"]})),
            mtls_from("foo"),
            true,
        ),
        case(
            "API-AP operation fields are AND-ed: method right, path wrong",
            operation(json!({"methods": ["GET"], "paths": ["/admin"]})),
            mtls_from("foo"),
            false,
        ),
        case(
            "API-AP to entries are OR-ed: the second operation matches",
            json!({"to": [{"operation": {"paths": ["/admin"]}}, {"operation": {"paths": ["/ip"]}}]}),
            mtls_from("foo"),
            true,
        ),
        case(
            "authz-tcp: HTTP-only fields on TCP: an ALLOW rule with paths is ignored",
            operation(json!({"paths": ["*"]})),
            tcp(mtls_from("foo")),
            false,
        ),
        case(
            "authz-tcp: HTTP-only fields on TCP: an ALLOW rule with notMethods is ignored too",
            operation(json!({"notMethods": ["POST"]})),
            tcp(mtls_from("foo")),
            false,
        ),
        case(
            "authz-tcp: TCP fields on TCP: an ALLOW rule with only ports matches",
            operation(json!({"ports": [8000]})),
            tcp(mtls_from("foo")),
            true,
        ),
    ]
}

fn condition_cases() -> Vec<Case> {
    vec![
        case(
            "API-AP when source.namespace: values match the peer",
            when("source.namespace", &["foo"], &[]),
            mtls_from("foo"),
            true,
        ),
        case(
            "API-AP when source.namespace: notValues exclude the peer",
            when("source.namespace", &[], &["foo"]),
            mtls_from("foo"),
            false,
        ),
        case(
            "SEC-2021-004 when source.namespace requires mTLS: plaintext never matches values",
            when("source.namespace", &["*"], &[]),
            plaintext(),
            false,
        ),
        case(
            "API-AP when source.principal: values match the peer",
            when("source.principal", &["cluster.local/ns/bar/sa/sleep"], &[]),
            mtls_from("bar"),
            true,
        ),
        case(
            "API-AP when source.ip: CIDR values",
            when("source.ip", &["10.0.0.0/16"], &[]),
            mtls_from("foo"),
            true,
        ),
        case(
            "API-AP when remote.ip: notValues exclude the source",
            when("remote.ip", &[], &["10.0.0.2"]),
            mtls_from("foo"),
            false,
        ),
        case(
            "API-AP when destination.ip: values",
            when("destination.ip", &["10.0.0.3"], &[]),
            mtls_from("foo"),
            true,
        ),
        case(
            "API-AP when destination.port: values as strings",
            when("destination.port", &["8000"], &[]),
            mtls_from("foo"),
            true,
        ),
        case(
            "API-AP when destination.port: notValues",
            when("destination.port", &[], &["8000"]),
            mtls_from("foo"),
            false,
        ),
        case(
            "API-AP when connection.sni: values match the SNI",
            when("connection.sni", &["*.foo.svc.cluster.local"], &[]),
            with_sni(mtls_from("foo"), "httpbin.foo.svc.cluster.local"),
            true,
        ),
        case(
            "API-AP when connection.sni: no SNI never matches values",
            when("connection.sni", &["*"], &[]),
            mtls_from("foo"),
            false,
        ),
        case(
            "API-AP when request.headers: value matches, name case-insensitive",
            when("request.headers[X-Tenant]", &["blue"], &[]),
            with_header(mtls_from("foo"), "x-tenant", "blue"),
            true,
        ),
        case(
            "API-AP when request.headers: `*` is presence, absent header does not match",
            when("request.headers[x-tenant]", &["*"], &[]),
            mtls_from("foo"),
            false,
        ),
        case(
            "API-AP when request.headers: notValues match an absent header",
            when("request.headers[x-tenant]", &[], &["red"]),
            mtls_from("foo"),
            true,
        ),
        case(
            "API-AP when request.headers: notValues exclude a listed value",
            when("request.headers[x-tenant]", &[], &["red"]),
            with_header(mtls_from("foo"), "X-Tenant", "red"),
            false,
        ),
        case(
            "authz-tcp: HTTP-only when on TCP: an ALLOW rule with request.headers is ignored",
            when("request.headers[x-tenant]", &[], &["red"]),
            tcp(mtls_from("foo")),
            false,
        ),
        case(
            "API-AP when request.auth.claims needs a JWT: values never match",
            when("request.auth.claims[iss]", &["*"], &[]),
            mtls_from("foo"),
            false,
        ),
        case(
            "API-AP when request.auth.principal without JWT: notValues match",
            when("request.auth.principal", &[], &["a/b"]),
            mtls_from("foo"),
            true,
        ),
        case(
            "API-AP all when conditions must match",
            json!({"when": [{"key": "source.namespace", "values": ["foo"]}, {"key": "destination.port", "values": ["9000"]}]}),
            mtls_from("foo"),
            false,
        ),
        case(
            "API-AP values and notValues in one condition are AND-ed",
            json!({"when": [{"key": "source.namespace", "values": ["f*"], "notValues": ["foo"]}]}),
            mtls_from("foo"),
            false,
        ),
        case(
            "API-AP rule: from, to and when together all match",
            json!({"from": [{"source": {"namespaces": ["foo"]}}], "to": [{"operation": {"methods": ["GET"]}}], "when": [{"key": "destination.port", "values": ["8000"]}]}),
            mtls_from("foo"),
            true,
        ),
        case(
            "API-AP rule: from matches but to does not",
            json!({"from": [{"source": {"namespaces": ["foo"]}}], "to": [{"operation": {"methods": ["PUT"]}}]}),
            mtls_from("foo"),
            false,
        ),
    ]
}

fn run(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for case in cases {
        let spec = json!({"action": "ALLOW", "rules": [case.rule]});
        let decision = decide(vec![policy("foo", "p", spec)], &case.request);
        if decision.allowed != case.matches {
            failures.push(format!(
                "{}: expected match={}, got `{decision}`",
                case.name, case.matches
            ));
        }
    }
    common::assert_no_failures(&failures);
}

#[test]
fn source_matchers() {
    run(source_cases());
}

#[test]
fn operation_matchers() {
    run(operation_cases());
}

#[test]
fn condition_matchers() {
    run(condition_cases());
}

#[test]
fn peer_from_spiffe_id_derives_namespace() {
    let peer = Peer::from_principal("spiffe://cluster.local/ns/foo/sa/sleep");
    assert_eq!(peer.principal, "cluster.local/ns/foo/sa/sleep");
    assert_eq!(peer.namespace, "foo");
    assert_eq!(Peer::from_principal("weird-identity").namespace, "");
}
