//! Istio's own validation tables, case by case, rewritten as our YAML: istio/istio
//! `pkg/config/validation/validation_test.go` (TestValidateDestinationRule, TestValidateTrafficPolicy,
//! TestValidateConnectionPool, TestValidateLoadBalancer, TestValidateOutlierDetection, TestValidateSidecar,
//! TestValidatePeerAuthentication, Test_validateExportTo), `pkg/config/validation/agent/validation_test.go`
//! (TestValidateTLS, TestValidateLocalityLbSetting) and the v1alpha1 TestValidateAuthenticationPolicy /
//! TestValidateAuthenticationMeshPolicy of Istio 1.5. Each case names the Istio test case and the rule
//! (function) it checks; the verdict (valid, valid with a warning, or invalid at a field) is Istio's.

mod common;

use ironmesh_api::{analyze_documents, load_documents_with_warnings};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    Valid,
    /// Valid, and Istio warns at this path.
    Warns(&'static str),
    /// Invalid; one of the errors is at this path.
    Invalid(&'static str),
}
use Verdict::*;

/// (Istio case and rule, YAML document, Istio's verdict).
type Case = (&'static str, String, Verdict);

/// One document, `spec: ` followed by the case's text (flow or block).
fn object(
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    spec: &str,
) -> String {
    common::doc(api_version, kind, namespace, name, &format!(" {spec}"))
}

/// A DestinationRule in namespace `ns5` (Istio's tests use a fixed namespace too).
fn dr(spec: &str) -> String {
    object(
        "networking.istio.io/v1",
        "DestinationRule",
        Some("ns5"),
        "r",
        spec,
    )
}

/// A DestinationRule whose top-level traffic policy is `policy`.
fn tp(policy: &str) -> String {
    dr(&format!("{{host: reviews, trafficPolicy: {policy}}}"))
}

fn pool(pool: &str) -> String {
    tp(&format!("{{connectionPool: {pool}}}"))
}

fn lb(lb: &str) -> String {
    tp(&format!("{{loadBalancer: {lb}}}"))
}

fn outlier(outlier: &str) -> String {
    tp(&format!("{{outlierDetection: {outlier}}}"))
}

fn client_tls(tls: &str) -> String {
    tp(&format!("{{tls: {tls}}}"))
}

/// A Sidecar named foo in namespace bar, as in TestValidateSidecar.
fn sidecar(spec: &str) -> String {
    object(
        "networking.istio.io/v1beta1",
        "Sidecar",
        Some("bar"),
        "foo",
        spec,
    )
}

fn egress_hosts(hosts: &str) -> String {
    sidecar(&format!("{{egress: [{{hosts: {hosts}}}]}}"))
}

fn ingress(listener: &str) -> String {
    sidecar(&format!(
        "{{ingress: [{listener}], egress: [{{hosts: [\"*/*\"]}}]}}"
    ))
}

fn peer_authn(name: &str, spec: &str) -> String {
    object(
        "security.istio.io/v1beta1",
        "PeerAuthentication",
        Some("ns5"),
        name,
        spec,
    )
}

fn legacy_policy(name: &str, spec: &str) -> String {
    object(
        "authentication.istio.io/v1alpha1",
        "Policy",
        Some("ns5"),
        name,
        spec,
    )
}

fn mesh_policy(name: &str, spec: &str) -> String {
    object(
        "authentication.istio.io/v1alpha1",
        "MeshPolicy",
        None,
        name,
        spec,
    )
}

const JWT: &str = "{issuer: istio.io, jwksUri: \"https://secure.istio.io/oauth/v1/certs\", jwtHeaders: [x-goog-iap-jwt-assertion]}";

fn verdict_of(yaml: &str) -> (Vec<String>, Vec<String>) {
    let analysis = analyze_documents("case.yaml", yaml);
    (
        analysis.problems.iter().map(|p| p.path.clone()).collect(),
        analysis.warnings.iter().map(|p| p.path.clone()).collect(),
    )
}

fn run(table: &[Case]) {
    let mut failures = Vec::new();
    for (name, yaml, want) in table {
        let (errors, warnings) = verdict_of(yaml);
        let ok = match want {
            Valid => errors.is_empty() && warnings.is_empty(),
            Warns(path) => errors.is_empty() && warnings.iter().any(|w| w == path),
            Invalid(path) => errors.iter().any(|e| e == path),
        };
        if !ok {
            failures.push(format!(
                "{name}: want {want:?}, got errors {errors:?}, warnings {warnings:?}\n{yaml}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases disagree with Istio:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
}

#[test]
fn destination_rule_as_istio_validates_it() {
    let subsets = "[{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]";
    let good_policy = "{loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {tcp: {maxConnections: 7}, http: {http2MaxRequests: 11}}, outlierDetection: {minHealthPercent: 20}}";
    let bad_policy = "{loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {}, outlierDetection: {minHealthPercent: 20}}";
    let table: Vec<Case> = vec![
        (
            "simple destination rule (ValidateDestinationRule)",
            dr(&format!("{{host: reviews, subsets: {subsets}}}")),
            Valid,
        ),
        (
            "simple destination rule with empty selector labels (validateWorkloadSelector warns)",
            dr(&format!(
                "{{host: reviews, subsets: {subsets}, workloadSelector: {{}}}}"
            )),
            Warns("spec.workloadSelector"),
        ),
        (
            "missing destination name (ValidateWildcardDomain)",
            dr(&format!("{{host: \"\", subsets: {subsets}}}")),
            Invalid("spec.host"),
        ),
        (
            "host with a bad label (ValidateWildcardDomain)",
            dr("{host: \"foo..bar\"}"),
            Invalid("spec.host"),
        ),
        (
            "host wildcard only in the first label (ValidateWildcardDomain)",
            dr("{host: \"foo.*.com\"}"),
            Invalid("spec.host"),
        ),
        (
            "host *.svc.cluster.local (ValidateWildcardDomain)",
            dr("{host: \"*.svc.cluster.local\", trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}"),
            Valid,
        ),
        (
            "missing subset name (validateSubsetName)",
            dr(
                "{host: reviews, subsets: [{name: \"\", labels: {version: v1}}, {name: v2, labels: {version: v2}}]}",
            ),
            Invalid("spec.subsets[0].name"),
        ),
        (
            "subset name is a DNS-1123 label (validateSubsetName)",
            dr("{host: reviews, subsets: [{name: v1.0}]}"),
            Invalid("spec.subsets[0].name"),
        ),
        (
            "duplicate subset names (ValidateDestinationRule)",
            dr(
                "{host: reviews, subsets: [{name: foo, labels: {version: v1}}, {name: foo, labels: {version: v2}}]}",
            ),
            Invalid("spec.subsets[1].name"),
        ),
        (
            "subset label keys are Kubernetes label names (labels.Instance.Validate)",
            dr("{host: reviews, subsets: [{name: v1, labels: {\"-version\": v1}}]}"),
            Invalid("spec.subsets[0].labels.-version"),
        ),
        (
            "subset label values are Kubernetes label values (labels.Instance.Validate)",
            dr("{host: reviews, subsets: [{name: v1, labels: {version: \"v1*\"}}]}"),
            Invalid("spec.subsets[0].labels.version"),
        ),
        (
            "valid traffic policy, top level (validateTrafficPolicy)",
            dr(&format!(
                "{{host: reviews, trafficPolicy: {good_policy}, subsets: {subsets}}}"
            )),
            Valid,
        ),
        (
            "invalid traffic policy, top level (validateConnectionPool: at least one field)",
            dr(&format!(
                "{{host: reviews, trafficPolicy: {bad_policy}, subsets: {subsets}}}"
            )),
            Invalid("spec.trafficPolicy.connectionPool"),
        ),
        (
            "valid traffic policy, subset level (validateSubset)",
            dr(&format!(
                "{{host: reviews, subsets: [{{name: v1, labels: {{version: v1}}, trafficPolicy: {good_policy}}}, {{name: v2, labels: {{version: v2}}}}]}}"
            )),
            Valid,
        ),
        (
            "invalid traffic policy, subset level (validateSubset)",
            dr(&format!(
                "{{host: reviews, subsets: [{{name: v1, labels: {{version: v1}}, trafficPolicy: {bad_policy}}}, {{name: v2}}]}}"
            )),
            Invalid("spec.subsets[0].trafficPolicy.connectionPool"),
        ),
        (
            "valid traffic policy, both levels",
            dr(&format!(
                "{{host: reviews, trafficPolicy: {good_policy}, subsets: [{{name: v1, labels: {{version: v1}}, trafficPolicy: {{loadBalancer: {{simple: ROUND_ROBIN}}, outlierDetection: {{minHealthPercent: 30}}}}}}, {{name: v2}}]}}"
            )),
            Valid,
        ),
        (
            "InsecureSkipVerify not specified, SIMPLE with CaCertificates (ValidateTLS)",
            client_tls(
                "{mode: SIMPLE, caCertificates: test, subjectAltNames: [reviews.default.svc]}",
            ),
            Valid,
        ),
        (
            "InsecureSkipVerify not specified, SIMPLE with CredentialName (ValidateTLS)",
            client_tls(
                "{mode: SIMPLE, credentialName: test, subjectAltNames: [reviews.default.svc]}",
            ),
            Valid,
        ),
        (
            "InsecureSkipVerify false, SIMPLE with CaCertificates (ValidateTLS)",
            client_tls(
                "{mode: SIMPLE, caCertificates: test, subjectAltNames: [reviews.default.svc], insecureSkipVerify: false}",
            ),
            Valid,
        ),
        (
            "InsecureSkipVerify false, SIMPLE with CredentialName (ValidateTLS)",
            client_tls(
                "{mode: SIMPLE, credentialName: test, subjectAltNames: [reviews.default.svc], insecureSkipVerify: false}",
            ),
            Valid,
        ),
        (
            "InsecureSkipVerify true, SIMPLE with CredentialName (ValidateTLS)",
            client_tls("{mode: SIMPLE, credentialName: test, insecureSkipVerify: true}"),
            Invalid("spec.trafficPolicy.tls.insecureSkipVerify"),
        ),
        (
            "InsecureSkipVerify true, SIMPLE with CaCertificates (ValidateTLS)",
            client_tls("{mode: SIMPLE, caCertificates: test, insecureSkipVerify: true}"),
            Invalid("spec.trafficPolicy.tls.insecureSkipVerify"),
        ),
        (
            "InsecureSkipVerify true, SIMPLE with SANs (ValidateTLS)",
            client_tls(
                "{mode: SIMPLE, subjectAltNames: [reviews.default.svc], insecureSkipVerify: true}",
            ),
            Invalid("spec.trafficPolicy.tls.insecureSkipVerify"),
        ),
        (
            "InsecureSkipVerify not specified, MUTUAL with CaCertificates (ValidateTLS)",
            client_tls(
                "{mode: MUTUAL, caCertificates: test, privateKey: key, clientCertificate: cert, subjectAltNames: [reviews.default.svc]}",
            ),
            Valid,
        ),
        (
            "InsecureSkipVerify not specified, MUTUAL with CredentialName (ValidateTLS)",
            client_tls(
                "{mode: MUTUAL, credentialName: test, subjectAltNames: [reviews.default.svc]}",
            ),
            Valid,
        ),
        (
            "InsecureSkipVerify false, MUTUAL with CaCertificates (ValidateTLS)",
            client_tls(
                "{mode: MUTUAL, caCertificates: test, privateKey: key, clientCertificate: cert, subjectAltNames: [reviews.default.svc], insecureSkipVerify: false}",
            ),
            Valid,
        ),
        (
            "InsecureSkipVerify true, MUTUAL with CaCertificates (ValidateTLS)",
            client_tls(
                "{mode: MUTUAL, caCertificates: test, privateKey: key, clientCertificate: cert, insecureSkipVerify: true}",
            ),
            Invalid("spec.trafficPolicy.tls.insecureSkipVerify"),
        ),
        (
            "InsecureSkipVerify true, MUTUAL with CredentialName (ValidateTLS)",
            client_tls("{mode: MUTUAL, credentialName: test, insecureSkipVerify: true}"),
            Valid,
        ),
        (
            "InsecureSkipVerify true, MUTUAL without CA (ValidateTLS)",
            client_tls(
                "{mode: MUTUAL, privateKey: key, clientCertificate: cert, insecureSkipVerify: true}",
            ),
            Valid,
        ),
        (
            "InsecureSkipVerify true, MUTUAL with SANs (ValidateTLS)",
            client_tls(
                "{mode: MUTUAL, privateKey: key, clientCertificate: cert, subjectAltNames: [reviews.default.svc], insecureSkipVerify: true}",
            ),
            Invalid("spec.trafficPolicy.tls.insecureSkipVerify"),
        ),
        (
            "istio.io/dry-run is for AuthorizationPolicy only (validateMetadata)",
            dr("{host: reviews}").replace(
                "  namespace: ns5\n",
                "  namespace: ns5\n  annotations:\n    istio.io/dry-run: \"true\"\n",
            ),
            Invalid("metadata.annotations"),
        ),
        (
            "reserved internal annotation (validateMetadata)",
            dr("{host: reviews}").replace(
                "  namespace: ns5\n",
                "  namespace: ns5\n  annotations:\n    internal.istio.io/parents: x\n",
            ),
            Invalid("metadata.annotations"),
        ),
    ];
    run(&table);
}

#[test]
fn client_tls_as_istio_validates_it() {
    let table: Vec<Case> = vec![
        (
            "SIMPLE: Credential Name set correctly (ValidateTLS)",
            client_tls("{mode: SIMPLE, credentialName: some-credential}"),
            Valid,
        ),
        (
            "SIMPLE CredentialName set with ClientCertificate specified",
            client_tls("{mode: SIMPLE, credentialName: credential, clientCertificate: cert}"),
            Invalid("spec.trafficPolicy.tls.clientCertificate"),
        ),
        (
            "SIMPLE: CredentialName set with PrivateKey specified",
            client_tls("{mode: SIMPLE, credentialName: credential, privateKey: key}"),
            Invalid("spec.trafficPolicy.tls.privateKey"),
        ),
        (
            "SIMPLE: CredentialName set with CACertficiates specified",
            client_tls("{mode: SIMPLE, credentialName: credential, caCertificates: ca}"),
            Invalid("spec.trafficPolicy.tls.caCertificates"),
        ),
        (
            "MUTUAL: Credential Name set correctly",
            client_tls("{mode: MUTUAL, credentialName: some-credential}"),
            Valid,
        ),
        (
            "MUTUAL CredentialName set with ClientCertificate specified",
            client_tls("{mode: MUTUAL, credentialName: credential, clientCertificate: cert}"),
            Invalid("spec.trafficPolicy.tls.clientCertificate"),
        ),
        (
            "MUTUAL: CredentialName set with PrivateKey specified",
            client_tls("{mode: MUTUAL, credentialName: credential, privateKey: key}"),
            Invalid("spec.trafficPolicy.tls.privateKey"),
        ),
        (
            "MUTUAL: CredentialName set with CACertficiates specified",
            client_tls("{mode: MUTUAL, credentialName: credential, caCertificates: ca}"),
            Invalid("spec.trafficPolicy.tls.caCertificates"),
        ),
        (
            "MUTUAL: CredentialName set with CACRL specified",
            client_tls("{mode: MUTUAL, credentialName: credential, caCrl: ca}"),
            Invalid("spec.trafficPolicy.tls.caCrl"),
        ),
        (
            "MUTUAL: CredentialName not set with ClientCertificate and Key specified",
            client_tls("{mode: MUTUAL, clientCertificate: cert, privateKey: key}"),
            Valid,
        ),
        (
            "MUTUAL: ClientCertificate specified and Key missing",
            client_tls("{mode: MUTUAL, clientCertificate: cert}"),
            Invalid("spec.trafficPolicy.tls.privateKey"),
        ),
        (
            "MUTUAL: ClientCertificate missing and Key specified",
            client_tls("{mode: MUTUAL, privateKey: key}"),
            Invalid("spec.trafficPolicy.tls.clientCertificate"),
        ),
        (
            "configmap:// credentials must be in the rule's namespace (ValidateTLS)",
            client_tls("{mode: SIMPLE, credentialName: \"configmap://other/ca\"}"),
            Invalid("spec.trafficPolicy.tls.credentialName"),
        ),
        (
            "configmap:// credentials in the rule's namespace (ValidateTLS)",
            client_tls("{mode: SIMPLE, credentialName: \"configmap://ca\"}"),
            Valid,
        ),
    ];
    run(&table);
}

#[test]
fn traffic_policy_as_istio_validates_it() {
    let table: Vec<Case> = vec![
        (
            "valid traffic policy (validateTrafficPolicy)",
            tp(
                "{loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {tcp: {maxConnections: 7}, http: {http2MaxRequests: 11}}, outlierDetection: {minHealthPercent: 20}}",
            ),
            Valid,
        ),
        (
            "invalid traffic policy, nil entries (at least one field)",
            tp("{}"),
            Invalid("spec.trafficPolicy"),
        ),
        (
            "invalid traffic policy, missing port in port level settings (validatePortTrafficPolicies)",
            tp(
                "{portLevelSettings: [{loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {tcp: {maxConnections: 7}}, outlierDetection: {minHealthPercent: 20}}]}",
            ),
            Invalid("spec.trafficPolicy.portLevelSettings[0].port.number"),
        ),
        (
            "port traffic policy must have at least one field (validatePortTrafficPolicies)",
            tp("{portLevelSettings: [{port: {number: 80}}]}"),
            Invalid("spec.trafficPolicy.portLevelSettings[0]"),
        ),
        (
            "port-level settings are validated like the top level",
            tp(
                "{portLevelSettings: [{port: {number: 80}, outlierDetection: {maxEjectionPercent: 105}}]}",
            ),
            Invalid("spec.trafficPolicy.portLevelSettings[0].outlierDetection.maxEjectionPercent"),
        ),
        (
            "invalid traffic policy, bad connection pool",
            tp(
                "{loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {}, outlierDetection: {minHealthPercent: 20}}",
            ),
            Invalid("spec.trafficPolicy.connectionPool"),
        ),
        (
            "invalid traffic policy, bad max connection duration (ValidateDuration)",
            tp(
                "{loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {tcp: {maxConnectionDuration: 500ns}}}",
            ),
            Invalid("spec.trafficPolicy.connectionPool.tcp.maxConnectionDuration"),
        ),
        (
            "invalid traffic policy, panic threshold too low (ValidatePercent)",
            tp("{outlierDetection: {minHealthPercent: -1}}"),
            Invalid("spec.trafficPolicy.outlierDetection.minHealthPercent"),
        ),
        (
            "invalid traffic policy, both upgrade and use client protocol set",
            tp("{connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}}"),
            Invalid("spec.trafficPolicy.connectionPool.http.useClientProtocol"),
        ),
        (
            "tunnel and proxyProtocol must not be set together",
            tp(
                "{tunnel: {targetHost: example.com, targetPort: 443}, proxyProtocol: {version: V2}}",
            ),
            Invalid("spec.trafficPolicy"),
        ),
        (
            "tunnel with CONNECT to an FQDN (validateTunnelSettings)",
            tp("{tunnel: {protocol: CONNECT, targetHost: example.com, targetPort: 443}}"),
            Valid,
        ),
        (
            "tunnel to an IP over POST (validateTunnelSettings)",
            tp("{tunnel: {protocol: POST, targetHost: 192.168.1.2, targetPort: 8443}}"),
            Valid,
        ),
        (
            "tunnel protocol must be CONNECT or POST (validateTunnelSettings)",
            tp("{tunnel: {protocol: GET, targetHost: example.com, targetPort: 443}}"),
            Invalid("spec.trafficPolicy.tunnel.protocol"),
        ),
        (
            "tunnel target host must be an FQDN or IP (validateTunnelSettings)",
            tp("{tunnel: {targetHost: \"example..com\", targetPort: 443}}"),
            Invalid("spec.trafficPolicy.tunnel.targetHost"),
        ),
        (
            "tunnel target port is required (validateTunnelSettings)",
            tp("{tunnel: {targetHost: example.com}}"),
            Invalid("spec.trafficPolicy.tunnel.targetPort"),
        ),
        (
            "proxyProtocol version is V1 or V2 (validateProxyProtocol)",
            tp("{proxyProtocol: {version: V3}}"),
            Invalid("spec.trafficPolicy.proxyProtocol.version"),
        ),
        (
            "proxyProtocol alone is a valid policy",
            tp("{proxyProtocol: {version: V1}}"),
            Valid,
        ),
        (
            "retryBudget alone is a valid policy",
            tp("{retryBudget: {percent: 20, minRetryConcurrency: 3}}"),
            Valid,
        ),
    ];
    run(&table);
}

#[test]
fn connection_pool_as_istio_validates_it() {
    let table: Vec<Case> = vec![
        (
            "valid connection pool, tcp and http (validateConnectionPool)",
            pool(
                "{tcp: {maxConnections: 7, connectTimeout: 2s}, http: {http1MaxPendingRequests: 2, http2MaxRequests: 11, maxRequestsPerConnection: 5, maxRetries: 4, idleTimeout: 30s, maxConcurrentStreams: 5}}",
            ),
            Valid,
        ),
        (
            "valid connection pool, tcp only",
            pool("{tcp: {maxConnections: 7, connectTimeout: 2s}}"),
            Valid,
        ),
        (
            "valid connection pool, http only",
            pool(
                "{http: {http1MaxPendingRequests: 2, http2MaxRequests: 11, maxRequestsPerConnection: 5, maxRetries: 4, idleTimeout: 30s, maxConcurrentStreams: 5}}",
            ),
            Valid,
        ),
        (
            "valid connection pool, http only with empty idle timeout",
            pool(
                "{http: {http1MaxPendingRequests: 2, http2MaxRequests: 11, maxRequestsPerConnection: 5, maxRetries: 4, maxConcurrentStreams: 5}}",
            ),
            Valid,
        ),
        (
            "valid connection pool, http2 keepalive",
            pool("{http: {http2KeepAlive: {interval: 15s, timeout: 5s}}}"),
            Valid,
        ),
        (
            "invalid connection pool, empty",
            pool("{}"),
            Invalid("spec.trafficPolicy.connectionPool"),
        ),
        (
            "invalid connection pool, bad max connections",
            pool("{tcp: {maxConnections: -1}}"),
            Invalid("spec.trafficPolicy.connectionPool.tcp.maxConnections"),
        ),
        (
            "invalid connection pool, bad connect timeout (ms precision)",
            pool("{tcp: {connectTimeout: 2.000000005s}}"),
            Invalid("spec.trafficPolicy.connectionPool.tcp.connectTimeout"),
        ),
        (
            "invalid connection pool, bad max pending requests",
            pool("{http: {http1MaxPendingRequests: -1}}"),
            Invalid("spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests"),
        ),
        (
            "invalid connection pool, bad max requests",
            pool("{http: {http2MaxRequests: -1}}"),
            Invalid("spec.trafficPolicy.connectionPool.http.http2MaxRequests"),
        ),
        (
            "invalid connection pool, bad max requests per connection",
            pool("{http: {maxRequestsPerConnection: -1}}"),
            Invalid("spec.trafficPolicy.connectionPool.http.maxRequestsPerConnection"),
        ),
        (
            "invalid connection pool, bad max retries",
            pool("{http: {maxRetries: -1}}"),
            Invalid("spec.trafficPolicy.connectionPool.http.maxRetries"),
        ),
        (
            "invalid connection pool, bad idle timeout",
            pool("{http: {idleTimeout: 30.000000005s}}"),
            Invalid("spec.trafficPolicy.connectionPool.http.idleTimeout"),
        ),
        (
            "valid connection pool, tcp timeout disabled (0s exempt)",
            pool("{tcp: {idleTimeout: 0s}}"),
            Valid,
        ),
        (
            "invalid connection pool, bad max concurrent streams",
            pool("{http: {maxConcurrentStreams: -1}}"),
            Invalid("spec.trafficPolicy.connectionPool.http.maxConcurrentStreams"),
        ),
        (
            "invalid connection pool, http2 keepalive without interval",
            pool("{http: {http2KeepAlive: {timeout: 5s}}}"),
            Invalid("spec.trafficPolicy.connectionPool.http.http2KeepAlive.interval"),
        ),
        (
            "invalid connection pool, http2 keepalive without timeout",
            pool("{http: {http2KeepAlive: {interval: 15s}}}"),
            Invalid("spec.trafficPolicy.connectionPool.http.http2KeepAlive.timeout"),
        ),
        (
            "invalid connection pool, bad http2 keepalive interval",
            pool("{http: {http2KeepAlive: {interval: 15.000000005s, timeout: 5s}}}"),
            Invalid("spec.trafficPolicy.connectionPool.http.http2KeepAlive.interval"),
        ),
        (
            "tcp keepalive durations are at least 1ms (ValidateDuration)",
            pool("{tcp: {tcpKeepalive: {probes: 3, time: 100us}}}"),
            Invalid("spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time"),
        ),
        (
            "durations use Go's syntax, as Istio's docs write them",
            pool("{tcp: {connectTimeout: 30ms, tcpKeepalive: {time: 7200s, interval: 75s}}}"),
            Valid,
        ),
        (
            "a duration must be a duration string",
            pool("{tcp: {connectTimeout: 30}}"),
            Invalid("spec.trafficPolicy.connectionPool.tcp.connectTimeout"),
        ),
    ];
    run(&table);
}

#[test]
fn load_balancer_as_istio_validates_it() {
    let table: Vec<Case> = vec![
        (
            "valid load balancer with simple load balancing (validateLoadBalancer)",
            lb("{simple: ROUND_ROBIN}"),
            Valid,
        ),
        (
            "valid load balancer with consistentHash load balancing (MinimumRingSize warns: deprecated)",
            lb("{consistentHash: {minimumRingSize: 1024, httpCookie: {name: test, ttl: 1h}}}"),
            Warns("spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize"),
        ),
        (
            "invalid consistentHash, missing cookie name",
            lb("{consistentHash: {minimumRingSize: 1024, httpCookie: {ttl: 1h}}}"),
            Invalid("spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name"),
        ),
        (
            "invalid consistentHash, maglev not prime",
            lb("{consistentHash: {maglev: {tableSize: 1000}}}"),
            Invalid("spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize"),
        ),
        (
            "maglev with a prime table size",
            lb("{consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}}"),
            Valid,
        ),
        (
            "maglev table size must be set",
            lb("{consistentHash: {maglev: {}}}"),
            Invalid("spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize"),
        ),
        (
            "maglev table size below 5000011",
            lb("{consistentHash: {maglev: {tableSize: 5000011}}}"),
            Invalid("spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize"),
        ),
        (
            "only one of MinimumRingSize or Maglev/Ringhash",
            lb("{consistentHash: {minimumRingSize: 1024, ringHash: {minimumRingSize: 1024}}}"),
            Invalid("spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize"),
        ),
        (
            "valid consistentHash with unique cookie attributes",
            lb(
                "{consistentHash: {httpCookie: {name: test-cookie, ttl: 1h, attributes: [{name: SameSite, value: Strict}, {name: Secure, value: \"true\"}, {name: HttpOnly, value: \"true\"}]}}}",
            ),
            Valid,
        ),
        (
            "invalid consistentHash with duplicate cookie attribute names",
            lb(
                "{consistentHash: {httpCookie: {name: test-cookie, ttl: 1h, attributes: [{name: SameSite, value: Strict}, {name: SameSite, value: Lax}, {name: Secure, value: \"true\"}]}}}",
            ),
            Invalid("spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[1].name"),
        ),
        (
            "invalid consistentHash with empty cookie attribute name",
            lb(
                "{consistentHash: {httpCookie: {name: test-cookie, ttl: 1h, attributes: [{name: SameSite, value: Strict}, {name: \"\", value: some-value}]}}}",
            ),
            Invalid("spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[1].name"),
        ),
        (
            "invalid: localityLbSetting and zoneAwareLbSetting both set",
            lb("{localityLbSetting: {}, zoneAwareLbSetting: {}}"),
            Invalid("spec.trafficPolicy.loadBalancer"),
        ),
        (
            "valid: zoneAwareLbSetting only (failover without outlier detection warns)",
            lb("{zoneAwareLbSetting: {failover: [{from: us-east, to: eu-west}]}}"),
            Warns("spec.trafficPolicy.loadBalancer.zoneAwareLbSetting"),
        ),
        (
            "zone aware failover_priority must not use topology labels",
            lb("{zoneAwareLbSetting: {failoverPriority: [topology.kubernetes.io/zone]}}"),
            Invalid("spec.trafficPolicy.loadBalancer.zoneAwareLbSetting.failoverPriority"),
        ),
        (
            "simple and consistentHash are a protobuf oneof",
            lb("{simple: ROUND_ROBIN, consistentHash: {useSourceIp: true}}"),
            Invalid("spec.trafficPolicy.loadBalancer"),
        ),
        (
            "hash keys are a protobuf oneof",
            lb("{consistentHash: {useSourceIp: true, httpHeaderName: x-user}}"),
            Invalid("spec.trafficPolicy.loadBalancer.consistentHash"),
        ),
        (
            "simple is one of Istio's algorithms",
            lb("{simple: LEAST_CONNECTIONS}"),
            Invalid("spec.trafficPolicy.loadBalancer.simple"),
        ),
        (
            "warmup needs a duration",
            lb("{simple: ROUND_ROBIN, warmup: {minimumPercent: 10}}"),
            Invalid("spec.trafficPolicy.loadBalancer.warmup.duration"),
        ),
        (
            "warmup minimumPercent at most 100",
            lb("{warmup: {duration: 60s, minimumPercent: 101}}"),
            Invalid("spec.trafficPolicy.loadBalancer.warmup.minimumPercent"),
        ),
        (
            "warmup aggression above 0",
            lb("{warmup: {duration: 60s, aggression: 0}}"),
            Invalid("spec.trafficPolicy.loadBalancer.warmup.aggression"),
        ),
        (
            "valid warmup",
            lb(
                "{simple: LEAST_REQUEST, warmup: {duration: 60s, minimumPercent: 10, aggression: 1.5}}",
            ),
            Valid,
        ),
    ];
    run(&table);
}

#[test]
fn locality_lb_setting_as_istio_validates_it() {
    let with_outlier = |setting: &str| {
        tp(&format!(
            "{{loadBalancer: {{localityLbSetting: {setting}}}, outlierDetection: {{consecutive5xxErrors: 5}}}}"
        ))
    };
    let path = "spec.trafficPolicy.loadBalancer.localityLbSetting";
    let table: Vec<Case> = vec![
        (
            "valid distribute (ValidateLocalityLbSetting)",
            with_outlier("{distribute: [{from: a/b/c, to: {a/b/c: 80, a/b1: 20}}]}"),
            Valid,
        ),
        (
            "weights must total 100",
            with_outlier("{distribute: [{from: a/b/c, to: {a/b/c: 80, a/b1: 30}}]}"),
            Invalid("spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to"),
        ),
        (
            "weight 0 is out of range",
            with_outlier("{distribute: [{from: a/b/c, to: {a/b/c: 0, a/b1: 100}}]}"),
            Invalid("spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to.a/b/c"),
        ),
        (
            "distribute and failover together",
            with_outlier("{distribute: [{from: a, to: {b: 100}}], failover: [{from: a, to: b}]}"),
            Invalid(path),
        ),
        (
            "failover to the same region",
            with_outlier("{failover: [{from: region1, to: region1}]}"),
            Invalid("spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]"),
        ),
        (
            "failover names regions only",
            with_outlier("{failover: [{from: region1/zone1, to: region2}]}"),
            Invalid("spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]"),
        ),
        (
            "failover without wildcards",
            with_outlier("{failover: [{from: \"region1*\", to: region2}]}"),
            Invalid("spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]"),
        ),
        (
            "valid failover",
            with_outlier("{failover: [{from: region1, to: region2}]}"),
            Valid,
        ),
        (
            "failover without outlier detection warns",
            lb("{localityLbSetting: {failover: [{from: region1, to: region2}]}}"),
            Warns(path),
        ),
        (
            "failover with a topology label in failoverPriority",
            with_outlier(
                "{failover: [{from: region1, to: region2}], failoverPriority: [topology.kubernetes.io/region]}",
            ),
            Invalid("spec.trafficPolicy.loadBalancer.localityLbSetting.failoverPriority"),
        ),
        (
            "wildcard only at the end (validateLocalities)",
            with_outlier("{distribute: [{from: \"*/b\", to: {a: 100}}]}"),
            Invalid("spec.trafficPolicy.loadBalancer.localityLbSetting.distribute"),
        ),
        (
            "overlapping sources (validateLocalities)",
            with_outlier("{distribute: [{from: a/b, to: {a: 100}}, {from: a/b, to: {a: 100}}]}"),
            Invalid("spec.trafficPolicy.loadBalancer.localityLbSetting.distribute"),
        ),
        (
            "empty region in a locality (validateLocalities)",
            with_outlier("{distribute: [{from: a//c, to: {a: 100}}]}"),
            Invalid("spec.trafficPolicy.loadBalancer.localityLbSetting.distribute"),
        ),
    ];
    run(&table);
}

#[test]
fn outlier_detection_as_istio_validates_it() {
    let table: Vec<Case> = vec![
        (
            "valid outlier detection (validateOutlierDetection)",
            outlier("{interval: 2s, baseEjectionTime: 2s, maxEjectionPercent: 50}"),
            Valid,
        ),
        (
            "invalid outlier detection, bad interval",
            outlier("{interval: 2.000000005s}"),
            Invalid("spec.trafficPolicy.outlierDetection.interval"),
        ),
        (
            "invalid outlier detection, bad base ejection time",
            outlier("{baseEjectionTime: 2.000000005s}"),
            Invalid("spec.trafficPolicy.outlierDetection.baseEjectionTime"),
        ),
        (
            "invalid outlier detection, bad max ejection percent",
            outlier("{maxEjectionPercent: 105}"),
            Invalid("spec.trafficPolicy.outlierDetection.maxEjectionPercent"),
        ),
        (
            "invalid outlier detection, panic threshold too low",
            outlier("{minHealthPercent: -1}"),
            Invalid("spec.trafficPolicy.outlierDetection.minHealthPercent"),
        ),
        (
            "invalid outlier detection, panic threshold too high",
            outlier("{minHealthPercent: 101}"),
            Invalid("spec.trafficPolicy.outlierDetection.minHealthPercent"),
        ),
        (
            "deprecated outlier detection, ConsecutiveErrors (warning)",
            outlier("{consecutiveErrors: 101}"),
            Warns("spec.trafficPolicy.outlierDetection.consecutiveErrors"),
        ),
        (
            "consecutive local origin failures without split local origin errors",
            outlier("{consecutiveLocalOriginFailures: 10}"),
            Invalid("spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures"),
        ),
        (
            "consecutive local origin failures with split local origin errors",
            outlier("{consecutiveLocalOriginFailures: 10, splitExternalLocalOriginErrors: true}"),
            Valid,
        ),
        (
            "consecutive5xxErrors is a UInt32Value",
            outlier("{consecutive5xxErrors: -1}"),
            Invalid("spec.trafficPolicy.outlierDetection.consecutive5xxErrors"),
        ),
    ];
    run(&table);
}

#[test]
fn export_to_as_istio_validates_it() {
    let with = |export: &str| dr(&format!("{{host: reviews, exportTo: {export}}}"));
    let with_selector = |export: &str| {
        dr(&format!(
            "{{host: reviews, exportTo: {export}, workloadSelector: {{matchLabels: {{app: a}}}}}}"
        ))
    };
    let table: Vec<Case> = vec![
        ("* is allowed (validateExportTo)", with("[\"*\"]"), Valid),
        (". and ns1 are allowed", with("[., ns1]"), Valid),
        (
            "bunch of namespaces in exportTo is okay",
            with("[ns1, ns2, ns5]"),
            Valid,
        ),
        (
            "~ not allowed for non service entry configs",
            with("[\"~\", ns1]"),
            Invalid("spec.exportTo[0]"),
        ),
        (
            ". and * together are not allowed",
            with("[., \"*\"]"),
            Invalid("spec.exportTo"),
        ),
        (
            "* and ns1 together are not allowed",
            with("[\"*\", ns1]"),
            Invalid("spec.exportTo"),
        ),
        (
            ". and same namespace in exportTo is not okay",
            with("[., ns5]"),
            Invalid("spec.exportTo[1]"),
        ),
        (
            "duplicate namespaces in exportTo is not okay",
            with("[ns1, ns2, ns1]"),
            Invalid("spec.exportTo[2]"),
        ),
        (
            "invalid namespace names are not okay",
            with("[ns1_]"),
            Invalid("spec.exportTo[0]"),
        ),
        (
            "destination rule with workloadselector cannot have exportTo (*)",
            with_selector("[\"*\"]"),
            Invalid("spec.exportTo"),
        ),
        (
            "destination rule with workloadselector can have only exportTo (.)",
            with_selector("[.]"),
            Valid,
        ),
        (
            "destination rule with workloadselector cannot have another ns in exportTo",
            with_selector("[somens]"),
            Invalid("spec.exportTo"),
        ),
        (
            "destination rule with workloadselector cannot have another ns in addition to own ns",
            with_selector("[., somens]"),
            Invalid("spec.exportTo"),
        ),
        (
            "selector labels: empty key (validateWorkloadSelector)",
            dr("{host: reviews, workloadSelector: {matchLabels: {\"\": v1}}}"),
            Invalid("spec.workloadSelector.matchLabels."),
        ),
        (
            "selector labels: no wildcards (validateWorkloadSelector)",
            dr("{host: reviews, workloadSelector: {matchLabels: {app: \"httpbin-*\"}}}"),
            Invalid("spec.workloadSelector.matchLabels.app"),
        ),
    ];
    run(&table);
}

#[test]
fn sidecar_as_istio_validates_it() {
    let http90 = "port: {protocol: http, number: 90, name: foo}";
    let tcp90 = "port: {protocol: tcp, number: 90, name: foo}";
    let http_pool = "connectionPool: {http: {http1MaxPendingRequests: 1024, http2MaxRequests: 1024, maxRequestsPerConnection: 1024, maxRetries: 1024}}";
    let table: Vec<Case> = vec![
        (
            "empty ingress and egress (ValidateSidecar: empty configuration)",
            sidecar("{}"),
            Invalid("spec"),
        ),
        ("default", egress_hosts("[\"*/*\"]"), Valid),
        (
            "workload selector without labels (warning)",
            sidecar("{egress: [{hosts: [\"*/*\"]}], workloadSelector: {}}"),
            Warns("spec.workloadSelector"),
        ),
        (
            "workload selector with a wildcard (ValidateAlphaWorkloadSelector)",
            sidecar("{egress: [{hosts: [\"*/*\"]}], workloadSelector: {labels: {app: \"a*\"}}}"),
            Invalid("spec.workloadSelector.labels.app"),
        ),
        (
            "import local namespace with wildcard",
            egress_hosts("[\"./*\"]"),
            Valid,
        ),
        (
            "import local namespace with fqdn",
            egress_hosts("[./foo.com]"),
            Valid,
        ),
        ("import nothing", egress_hosts("[\"~/*\"]"), Valid),
        (
            "import all except a namespace",
            egress_hosts("[\"*/*\", \"~ns1/*\"]"),
            Valid,
        ),
        (
            "import all except an exact host",
            egress_hosts("[\"*/*\", \"~/foo.com\"]"),
            Valid,
        ),
        (
            "exclude with invalid namespace (ValidateNamespaceSlashWildcardHostname)",
            egress_hosts("[\"*/*\", \"~Invalid_NS/*\"]"),
            Invalid("spec.egress[0].hosts[1]"),
        ),
        (
            "bad egress host 1 (namespace/dnsName form)",
            egress_hosts("[\"*\"]"),
            Invalid("spec.egress[0].hosts[0]"),
        ),
        (
            "bad egress host 2",
            egress_hosts("[/]"),
            Invalid("spec.egress[0].hosts[0]"),
        ),
        (
            "empty egress host",
            egress_hosts("[]"),
            Invalid("spec.egress[0].hosts"),
        ),
        (
            "short names are not allowed",
            egress_hosts("[ns1/httpbin]"),
            Invalid("spec.egress[0].hosts[0]"),
        ),
        (
            "multiple wildcard egress (one listener with empty port)",
            sidecar("{egress: [{hosts: [\"*/foo.com\"]}, {hosts: [ns1/bar.com]}]}"),
            Invalid("spec.egress[0].port"),
        ),
        (
            "wildcard egress not in end",
            sidecar(
                "{egress: [{hosts: [\"*/foo.com\"]}, {port: {protocol: http, number: 8080, name: h8080}, hosts: [ns1/bar.com]}]}",
            ),
            Invalid("spec.egress[0].port"),
        ),
        (
            "invalid Port (protocol and number)",
            sidecar(
                "{egress: [{port: {protocol: http1, number: 1000000, name: \"\"}, hosts: [ns1/bar.com]}]}",
            ),
            Invalid("spec.egress[0].port.protocol"),
        ),
        (
            "invalid Port number",
            sidecar("{egress: [{port: {protocol: http, number: 1000000}, hosts: [ns1/bar.com]}]}"),
            Invalid("spec.egress[0].port.number"),
        ),
        (
            "Port without name",
            sidecar("{egress: [{port: {protocol: http, number: 8080}, hosts: [ns1/bar.com]}]}"),
            Valid,
        ),
        (
            "port name is a DNS-1123 label (ValidatePortName)",
            sidecar(
                "{egress: [{port: {protocol: http, number: 8080, name: http_8080}, hosts: [ns1/bar.com]}]}",
            ),
            Invalid("spec.egress[0].port.name"),
        ),
        (
            "UDS bind in outbound",
            sidecar(
                "{egress: [{port: {protocol: http, number: 0, name: uds}, hosts: [ns1/bar.com], bind: \"unix:///@foo/bar/com\"}]}",
            ),
            Valid,
        ),
        (
            "UDS bind in inbound",
            sidecar(
                "{ingress: [{port: {protocol: http, number: 0, name: uds}, bind: \"unix:///@foo/bar/com\", defaultEndpoint: \"127.0.0.1:9999\"}]}",
            ),
            Invalid("spec.ingress[0].port.number"),
        ),
        (
            "UDS bind in outbound 2",
            sidecar(
                "{egress: [{port: {protocol: http, number: 0, name: uds}, hosts: [ns1/bar.com], bind: \"unix:///foo/bar/com\"}]}",
            ),
            Valid,
        ),
        (
            "invalid bind (port 0 needs a unix socket)",
            sidecar(
                "{egress: [{port: {protocol: http, number: 0, name: uds}, hosts: [ns1/bar.com], bind: \"foobar:///@foo/bar/com\"}]}",
            ),
            Invalid("spec.egress[0].bind"),
        ),
        (
            "invalid capture mode with uds bind",
            sidecar(
                "{egress: [{port: {protocol: http, number: 0, name: uds}, hosts: [ns1/bar.com], bind: \"unix:///@foo/bar/com\", captureMode: IPTABLES}]}",
            ),
            Invalid("spec.egress[0].captureMode"),
        ),
        (
            "capture mode is DEFAULT, IPTABLES or NONE",
            sidecar(
                "{egress: [{port: {protocol: http, number: 80}, hosts: [ns1/bar.com], captureMode: TPROXY}]}",
            ),
            Invalid("spec.egress[0].captureMode"),
        ),
        (
            "duplicate UDS bind",
            sidecar(
                "{egress: [{port: {protocol: http, number: 0, name: uds}, hosts: [ns1/bar.com], bind: \"unix:///@foo/bar/com\"}, {port: {protocol: http, number: 0, name: uds}, hosts: [ns1/bar.com], bind: \"unix:///@foo/bar/com\"}]}",
            ),
            Invalid("spec.egress[1].bind"),
        ),
        (
            "duplicate ports",
            sidecar(
                "{egress: [{port: {protocol: http, number: 90, name: foo}, hosts: [ns1/bar.com]}, {port: {protocol: tcp, number: 90, name: tcp}, hosts: [ns2/bar.com]}]}",
            ),
            Invalid("spec.egress[1].port.number"),
        ),
        (
            "egress bind must be an IP (ValidateIPAddress)",
            sidecar(
                "{egress: [{port: {protocol: http, number: 90}, bind: localhost, hosts: [ns1/bar.com]}]}",
            ),
            Invalid("spec.egress[0].bind"),
        ),
        (
            "targetPort has no impact on Sidecars",
            sidecar(
                "{egress: [{port: {protocol: http, number: 90, targetPort: 9090}, hosts: [ns1/bar.com]}]}",
            ),
            Invalid("spec.egress[0].port.targetPort"),
        ),
        (
            "ingress without port",
            sidecar(
                "{ingress: [{defaultEndpoint: \"127.0.0.1:110\"}], egress: [{hosts: [\"*/*\"]}]}",
            ),
            Invalid("spec.ingress[0].port"),
        ),
        (
            "ingress without port and with IPv6 endpoint",
            sidecar("{ingress: [{defaultEndpoint: \"[::1]:110\"}], egress: [{hosts: [\"*/*\"]}]}"),
            Invalid("spec.ingress[0].port"),
        ),
        (
            "ingress with duplicate ports",
            sidecar(
                "{ingress: [{port: {protocol: http, number: 90, name: foo}, defaultEndpoint: \"127.0.0.1:110\"}, {port: {protocol: tcp, number: 90, name: bar}, defaultEndpoint: \"127.0.0.1:110\"}], egress: [{hosts: [\"*/*\"]}]}",
            ),
            Invalid("spec.ingress[1].port.number"),
        ),
        (
            "ingress without default endpoint",
            ingress(&format!("{{{http90}}}")),
            Valid,
        ),
        (
            "ingress with invalid default endpoint in IPv4",
            ingress(&format!("{{{http90}, defaultEndpoint: \"1.1.1.1:90\"}}")),
            Invalid("spec.ingress[0].defaultEndpoint"),
        ),
        (
            "ingress with invalid default endpoint in IPv6",
            ingress(&format!(
                "{{{http90}, defaultEndpoint: \"[1:1:1:1:1:1:1:1]:90\"}}"
            )),
            Invalid("spec.ingress[0].defaultEndpoint"),
        ),
        (
            "ingress with invalid default endpoint uds",
            ingress(&format!("{{{http90}, defaultEndpoint: \"unix:///\"}}")),
            Invalid("spec.ingress[0].defaultEndpoint"),
        ),
        (
            "ingress with invalid default endpoint port in IPv4",
            ingress(&format!("{{{http90}, defaultEndpoint: \"127.0.0.1:hi\"}}")),
            Invalid("spec.ingress[0].defaultEndpoint"),
        ),
        (
            "ingress with invalid default endpoint port in IPv6",
            ingress(&format!("{{{http90}, defaultEndpoint: \"[::1]:hi\"}}")),
            Invalid("spec.ingress[0].defaultEndpoint"),
        ),
        (
            "valid ingress and egress in IPv4",
            ingress(&format!(
                "{{{http90}, defaultEndpoint: \"127.0.0.1:9999\"}}"
            )),
            Valid,
        ),
        (
            "valid ingress and egress in IPv6",
            ingress(&format!("{{{http90}, defaultEndpoint: \"[::1]:9999\"}}")),
            Valid,
        ),
        (
            "valid ingress with a unix default endpoint",
            ingress(&format!(
                "{{{http90}, defaultEndpoint: \"unix:///var/run/app.sock\"}}"
            )),
            Valid,
        ),
        (
            "valid ingress and empty egress",
            sidecar(&format!(
                "{{ingress: [{{{http90}, defaultEndpoint: \"127.0.0.1:9999\"}}]}}"
            )),
            Valid,
        ),
        (
            "ingress bind must be an IP",
            ingress(&format!("{{{http90}, bind: \"0.0.0.0:90\"}}")),
            Invalid("spec.ingress[0].bind"),
        ),
        (
            "just outbound traffic policy",
            sidecar("{outboundTrafficPolicy: {mode: ALLOW_ANY}}"),
            Valid,
        ),
        (
            "empty protocol",
            ingress("{port: {number: 90, name: foo}, defaultEndpoint: \"127.0.0.1:9999\"}"),
            Valid,
        ),
        (
            "ALLOW_ANY sidecar egress policy with no egress proxy",
            sidecar("{outboundTrafficPolicy: {mode: ALLOW_ANY}, egress: [{hosts: [\"*/*\"]}]}"),
            Valid,
        ),
        (
            "sidecar egress proxy with REGISTRY_ONLY (default)",
            sidecar(
                "{outboundTrafficPolicy: {egressProxy: {host: foo.bar, subset: shiny, port: {number: 5000}}}, egress: [{hosts: [\"*/*\"]}]}",
            ),
            Invalid("spec.outboundTrafficPolicy.egressProxy"),
        ),
        (
            "sidecar egress proxy with ALLOW_ANY",
            sidecar(
                "{outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: foo.bar, subset: shiny, port: {number: 5000}}}, egress: [{hosts: [\"*/*\"]}]}",
            ),
            Valid,
        ),
        (
            "sidecar egress proxy with ALLOW_ANY, service hostname invalid fqdn",
            sidecar(
                "{outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: \"foobar*123\", port: {number: 5000}}}, egress: [{hosts: [\"*/*\"]}]}",
            ),
            Invalid("spec.outboundTrafficPolicy.egressProxy.host"),
        ),
        (
            "sidecar egress proxy (without Port) with ALLOW_ANY",
            sidecar(
                "{outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: foo.bar}}, egress: [{hosts: [\"*/*\"]}]}",
            ),
            Invalid("spec.outboundTrafficPolicy.egressProxy.port"),
        ),
        (
            "ALLOW_ANY_DYNAMIC_DNS rejected in sidecar",
            sidecar(
                "{outboundTrafficPolicy: {mode: ALLOW_ANY_DYNAMIC_DNS}, egress: [{hosts: [\"*/*\"]}]}",
            ),
            Invalid("spec.outboundTrafficPolicy.mode"),
        ),
        (
            "sidecar egress only one wildcarded (warning)",
            egress_hosts("[\"*/*\", test/a.com]"),
            Warns("spec.egress[0].hosts"),
        ),
        (
            "sidecar egress wildcarded ns",
            egress_hosts("[\"*/b.com\", test/a.com]"),
            Valid,
        ),
        (
            "sidecar egress duplicated with wildcarded same namespace (warning)",
            egress_hosts("[\"test/*\", test/a.com]"),
            Warns("spec.egress[0].hosts[1]"),
        ),
        (
            "invalid partial wildcard",
            egress_hosts("[\"test/*a.com\"]"),
            Invalid("spec.egress[0].hosts[0]"),
        ),
        (
            "sidecar egress duplicated with wildcarded same namespace . (warning)",
            egress_hosts("[\"./*\", bar/a.com]"),
            Warns("spec.egress[0].hosts[1]"),
        ),
        (
            "ingress tls mode set to ISTIO_MUTUAL",
            ingress(&format!(
                "{{{http90}, defaultEndpoint: \"127.0.0.1:9999\", tls: {{mode: ISTIO_MUTUAL}}}}"
            )),
            Invalid("spec.ingress[0].tls.mode"),
        ),
        (
            "ingress tls mode set to AUTO_PASSTHROUGH",
            ingress(&format!(
                "{{{http90}, defaultEndpoint: \"[::1]:9999\", tls: {{mode: AUTO_PASSTHROUGH}}}}"
            )),
            Invalid("spec.ingress[0].tls.mode"),
        ),
        (
            "ingress tls invalid protocol",
            ingress(&format!(
                "{{{tcp90}, defaultEndpoint: \"127.0.0.1:9999\", tls: {{mode: SIMPLE, serverCertificate: /c, privateKey: /k}}}}"
            )),
            Invalid("spec.ingress[0].tls"),
        ),
        (
            "ingress tls httpRedirect is not supported",
            ingress(&format!(
                "{{{tcp90}, defaultEndpoint: \"127.0.0.1:9999\", tls: {{mode: SIMPLE, httpsRedirect: true}}}}"
            )),
            Invalid("spec.ingress[0].tls.httpsRedirect"),
        ),
        (
            "ingress tls SAN entries are not supported",
            ingress(&format!(
                "{{{tcp90}, defaultEndpoint: \"127.0.0.1:9999\", tls: {{mode: SIMPLE, subjectAltNames: [httpbin.com]}}}}"
            )),
            Invalid("spec.ingress[0].tls.subjectAltNames"),
        ),
        (
            "ingress tls credentialName is not supported",
            ingress(&format!(
                "{{{tcp90}, defaultEndpoint: \"127.0.0.1:9999\", tls: {{mode: SIMPLE, credentialName: secret-name}}}}"
            )),
            Invalid("spec.ingress[0].tls.credentialName"),
        ),
        (
            "ingress tls credentialNames is not supported",
            ingress(&format!(
                "{{{tcp90}, defaultEndpoint: \"[::1]:9999\", tls: {{mode: SIMPLE, credentialNames: [a, b]}}}}"
            )),
            Invalid("spec.ingress[0].tls.credentialNames"),
        ),
        (
            "ingress tls tlsCertificates is not supported",
            ingress(&format!(
                "{{{tcp90}, defaultEndpoint: \"[::1]:9999\", tls: {{mode: SIMPLE, tlsCertificates: [{{serverCertificate: /a.crt, privateKey: /a.key}}, {{serverCertificate: /b.crt, privateKey: /b.key}}]}}}}"
            )),
            Invalid("spec.ingress[0].tls.tlsCertificates"),
        ),
        (
            "valid ingress SIMPLE tls on an HTTPS port (validateTLSOptions)",
            ingress(
                "{port: {protocol: HTTPS, number: 8443, name: https}, tls: {mode: SIMPLE, serverCertificate: /etc/certs/c.pem, privateKey: /etc/certs/k.pem}}",
            ),
            Valid,
        ),
        (
            "SIMPLE TLS requires a server certificate (validateTLSOptions)",
            ingress(
                "{port: {protocol: HTTPS, number: 8443, name: https}, tls: {mode: SIMPLE, privateKey: /etc/certs/k.pem}}",
            ),
            Invalid("spec.ingress[0].tls.serverCertificate"),
        ),
        (
            "MUTUAL TLS requires a client CA bundle (validateTLSOptions)",
            ingress(
                "{port: {protocol: HTTPS, number: 8443, name: https}, tls: {mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}}",
            ),
            Invalid("spec.ingress[0].tls.caCertificates"),
        ),
        (
            "CRL is not supported with SIMPLE TLS (validateTLSOptions)",
            ingress(
                "{port: {protocol: HTTPS, number: 8443, name: https}, tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem, caCrl: /crl.pem}}",
            ),
            Invalid("spec.ingress[0].tls.caCrl"),
        ),
        (
            "PASSTHROUGH ignores certificates (validateTLSOptions warning)",
            ingress(
                "{port: {protocol: TLS, number: 8443, name: tls}, tls: {mode: PASSTHROUGH, serverCertificate: /c.pem}}",
            ),
            Warns("spec.ingress[0].tls"),
        ),
        (
            "TLS 1.0 without ciphers (validateTLSOptions warning)",
            ingress(
                "{port: {protocol: HTTPS, number: 8443, name: https}, tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem, minProtocolVersion: TLSV1_0}}",
            ),
            Warns("spec.ingress[0].tls.minProtocolVersion"),
        ),
        (
            "valid inbound connection pool",
            sidecar(
                "{inboundConnectionPool: {http: {http1MaxPendingRequests: 1024, http2MaxRequests: 1024, maxRequestsPerConnection: 1024, maxRetries: 1024}}}",
            ),
            Valid,
        ),
        (
            "valid port-level connection pool with top level default",
            sidecar(&format!(
                "{{ingress: [{{{http90}, {http_pool}}}], inboundConnectionPool: {{http: {{http1MaxPendingRequests: 1024}}}}}}"
            )),
            Valid,
        ),
        (
            "valid port-level connection pool without a top level default",
            sidecar(&format!("{{ingress: [{{{http90}, {http_pool}}}]}}")),
            Valid,
        ),
        (
            "warn http connection settings on tcp port",
            sidecar(&format!("{{ingress: [{{{tcp90}, {http_pool}}}]}}")),
            Warns("spec.ingress[0].connectionPool.http"),
        ),
        (
            "invalid top level connection pool",
            sidecar("{inboundConnectionPool: {}}"),
            Invalid("spec.inboundConnectionPool"),
        ),
        (
            "invalid port-level connection pool",
            sidecar(&format!("{{ingress: [{{{tcp90}, connectionPool: {{}}}}]}}")),
            Invalid("spec.ingress[0].connectionPool"),
        ),
        (
            "networking WorkloadSelector has labels, not matchLabels (sidecar.proto)",
            sidecar("{egress: [{hosts: [\"*/*\"]}], workloadSelector: {matchLabels: {app: a}}}"),
            Invalid("spec.workloadSelector.matchLabels"),
        ),
    ];
    run(&table);
}

#[test]
fn peer_authentication_as_istio_validates_it() {
    let table: Vec<Case> = vec![
        (
            "empty spec (ValidatePeerAuthentication)",
            peer_authn("default", "{}"),
            Valid,
        ),
        (
            "empty mtls with selector of empty labels (warning)",
            peer_authn("default", "{selector: {}}"),
            Warns("spec.selector"),
        ),
        (
            "empty spec with non default name",
            peer_authn("some-name", "{}"),
            Valid,
        ),
        (
            "default name with non empty selector",
            peer_authn("default", "{selector: {matchLabels: {app: httpbin}}}"),
            Valid,
        ),
        (
            "empty port level mtls",
            peer_authn(
                "foo",
                "{selector: {matchLabels: {app: httpbin}}, portLevelMtls: {}}",
            ),
            Invalid("spec.portLevelMtls"),
        ),
        (
            "empty selector with port level mtls",
            peer_authn("default", "{portLevelMtls: {8080: {mode: UNSET}}}"),
            Invalid("spec.portLevelMtls"),
        ),
        (
            "port 0",
            peer_authn("foo", "{portLevelMtls: {0: {mode: UNSET}}}"),
            Invalid("spec.portLevelMtls.0"),
        ),
        (
            "unset mode",
            peer_authn("default", "{mtls: {mode: UNSET}}"),
            Valid,
        ),
        (
            "port level",
            peer_authn(
                "port-level",
                "{selector: {matchLabels: {app: httpbin}}, portLevelMtls: {8080: {mode: UNSET}}}",
            ),
            Valid,
        ),
        (
            "selector with an empty key (validateWorkloadSelector)",
            peer_authn("foo", "{selector: {matchLabels: {\"\": httpbin}}}"),
            Invalid("spec.selector.matchLabels."),
        ),
        (
            "selector with a wildcard value (validateWorkloadSelector)",
            peer_authn("foo", "{selector: {matchLabels: {app: \"httpbin-*\"}}}"),
            Invalid("spec.selector.matchLabels.app"),
        ),
        (
            "istio.io/dry-run is refused on PeerAuthentication (validateMetadata)",
            peer_authn("foo", "{}").replace(
                "  namespace: ns5\n",
                "  namespace: ns5\n  annotations: {istio.io/dry-run: \"true\"}\n",
            ),
            Invalid("metadata.annotations"),
        ),
    ];
    run(&table);
}

#[test]
fn v1alpha1_policies_as_istio_1_5_validated_them() {
    let table: Vec<Case> = vec![
        (
            "empty policy with namespace-wide policy name (ValidateAuthenticationPolicy)",
            legacy_policy("default", "{}"),
            Valid,
        ),
        (
            "empty policy with non-default name",
            legacy_policy("some-name", "{}"),
            Invalid("metadata.name"),
        ),
        (
            "service-specific policy with namespace-wide name",
            legacy_policy("default", "{targets: [{name: foo}]}"),
            Invalid("metadata.name"),
        ),
        (
            "Targets only policy",
            legacy_policy("some-name", "{targets: [{name: foo}]}"),
            Valid,
        ),
        (
            "Source mTLS",
            legacy_policy("default", "{peers: [{mtls: {}}]}"),
            Valid,
        ),
        (
            "Source JWT",
            legacy_policy("default", &format!("{{peers: [{{jwt: {JWT}}}]}}")),
            Valid,
        ),
        (
            "Origin",
            legacy_policy("default", &format!("{{origins: [{{jwt: {JWT}}}]}}")),
            Valid,
        ),
        (
            "Bad JkwsURI (ParseJwksURI: no scheme)",
            legacy_policy(
                "default",
                "{origins: [{jwt: {issuer: istio.io, jwksUri: secure.istio.io/oauth/v1/certs}}]}",
            ),
            Invalid("spec.origins[0].jwt.jwksUri"),
        ),
        (
            "Bad JkwsURI Port",
            legacy_policy(
                "default",
                "{origins: [{jwt: {issuer: istio.io, jwksUri: \"https://secure.istio.io:not-a-number/oauth/v1/certs\"}}]}",
            ),
            Invalid("spec.origins[0].jwt.jwksUri"),
        ),
        (
            "Duplicate Jwt issuers",
            legacy_policy(
                "default",
                &format!("{{peers: [{{jwt: {JWT}}}], origins: [{{jwt: {JWT}}}]}}"),
            ),
            Invalid("spec.origins[0].jwt.issuer"),
        ),
        (
            "Just binding",
            legacy_policy("default", "{principalBinding: USE_ORIGIN}"),
            Valid,
        ),
        (
            "Bad target name (a DNS-1123 label)",
            legacy_policy("some-name", "{targets: [{name: foo.bar}]}"),
            Invalid("spec.targets[0].name"),
        ),
        (
            "Good target name",
            legacy_policy("some-name", "{targets: [{name: good-service-name}]}"),
            Valid,
        ),
        (
            "jwt issuer must be set (validateJwt)",
            legacy_policy(
                "default",
                "{origins: [{jwt: {jwksUri: \"https://example.com/keys\"}}]}",
            ),
            Invalid("spec.origins[0].jwt.issuer"),
        ),
        (
            "jwt audiences are non-empty strings (validateJwt)",
            legacy_policy(
                "default",
                "{origins: [{jwt: {issuer: a, audiences: [\"\"]}}]}",
            ),
            Invalid("spec.origins[0].jwt.audiences[0]"),
        ),
        (
            "jwt headers are non-empty strings (validateJwt)",
            legacy_policy(
                "default",
                "{origins: [{jwt: {issuer: a, jwtHeaders: [\"\"]}}]}",
            ),
            Invalid("spec.origins[0].jwt.jwtHeaders[0]"),
        ),
        (
            "jwt params are non-empty strings (validateJwt)",
            legacy_policy(
                "default",
                "{origins: [{jwt: {issuer: a, jwtParams: [\"\"]}}]}",
            ),
            Invalid("spec.origins[0].jwt.jwtParams[0]"),
        ),
        (
            "a port selector is a number or a name (validateAuthNPortSelector)",
            legacy_policy("p", "{targets: [{name: a, ports: [{}]}]}"),
            Invalid("spec.targets[0].ports[0]"),
        ),
        (
            "a port number wins over a name (validateAuthNPortSelector)",
            legacy_policy(
                "p",
                "{targets: [{name: a, ports: [{number: 8000, name: http}]}]}",
            ),
            Valid,
        ),
        (
            "a port name is a DNS-1123 label (validateAuthNPortSelector)",
            legacy_policy("p", "{targets: [{name: a, ports: [{name: http_web}]}]}"),
            Invalid("spec.targets[0].ports[0].name"),
        ),
        (
            "a peer method is mtls or jwt (protobuf oneof)",
            legacy_policy(
                "default",
                &format!("{{peers: [{{mtls: {{}}, jwt: {JWT}}}]}}"),
            ),
            Invalid("spec.peers[0]"),
        ),
        (
            "MeshPolicy: good name (TestValidateAuthenticationMeshPolicy)",
            mesh_policy("default", "{}"),
            Valid,
        ),
        (
            "MeshPolicy: bad-name",
            mesh_policy("some-name", "{}"),
            Invalid("metadata.name"),
        ),
        (
            "MeshPolicy: has targets",
            mesh_policy("default", "{targets: [{name: foo}]}"),
            Invalid("spec.targets"),
        ),
        (
            "MeshPolicy: good",
            mesh_policy("default", "{peers: [{mtls: {}}]}"),
            Valid,
        ),
        (
            "MeshPolicy: empty origin (jwt cannot be empty)",
            mesh_policy("default", "{origins: [{}]}"),
            Invalid("spec.origins[0].jwt"),
        ),
        (
            "MeshPolicy: nil origin",
            mesh_policy("default", "{origins: [null]}"),
            Invalid("spec.origins[0]"),
        ),
    ];
    run(&table);
}

#[test]
fn warnings_keep_positions_and_do_not_block_loading() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: r\n  namespace: foo\nspec:\n  host: reviews\n  trafficPolicy:\n    outlierDetection:\n      consecutiveErrors: 5\n";
    let (loaded, warnings) = load_documents_with_warnings("dr.yaml", yaml).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(
        warnings[0].to_string(),
        "dr.yaml:10:26: spec.trafficPolicy.outlierDetection.consecutiveErrors: outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead"
    );
}

#[test]
fn validate_object_reports_warnings_for_objects_from_the_api() {
    let yaml = peer_authn("p", "{selector: {}}");
    let (loaded, _) = load_documents_with_warnings("pa.yaml", &yaml).unwrap();
    let warnings = ironmesh_api::validate_object_with_warnings(&loaded[0].object).unwrap();
    assert_eq!(warnings.len(), 1);
    assert_eq!(
        warnings[0].to_string(),
        "spec.selector: workload selector specified without labels"
    );
}
