//! Root only: AuthorizationPolicy and Sidecar egress end to end, with the real binaries (`ironmesh`,
//! `ironmesh-proxy`, `ironmesh-httpbin`), real network namespaces, iptables and `curl`: the walkthrough's
//! namespaces under STRICT + ISTIO_MUTUAL, namespace isolation of foo (200 / 403 / reset), a DENY on
//! `/headers` in bar (403 only there), REGISTRY_ONLY egress in bar (502), and `ironmesh authz check`.
//! Helpers are copied from `root_mesh.rs` (each integration test file is its own crate).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

impl Cluster {
    /// Writes `yaml` to the cluster's home and applies it.
    fn apply(&self, name: &str, yaml: &str) {
        let path = self.home.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        self.ok(&["apply", "-f", path.to_str().unwrap()]);
    }

    /// Applies `yaml` with the sidecar injected, in `namespace`.
    fn apply_injected_text(&self, name: &str, yaml: &str, namespace: &str) {
        let raw = self.home.path().join(format!("raw-{name}"));
        std::fs::write(&raw, yaml).unwrap();
        let injected = self.ok(&["kube-inject", "-f", raw.to_str().unwrap()]);
        let path = self.home.path().join(name);
        std::fs::write(&path, injected).unwrap();
        self.ok(&["apply", "-f", path.to_str().unwrap(), "-n", namespace]);
    }

    /// The body `curl` prints for `http://httpbin.DST:8000PATH` from the sleep pod of `src`.
    fn body(&self, src: &str, dst: &str, path: &str) -> String {
        let pod = self.pod("sleep", src);
        let url = format!("http://httpbin.{dst}:8000{path}");
        let output = self
            .command(&[
                "exec", &pod, "-n", src, "-c", "sleep", "--", "curl", "-s", "-m", "5", &url,
            ])
            .stderr(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The Prometheus text of the sidecar of `app` in `namespace` (port 15020 inside its network namespace).
    fn proxy_metrics(&self, app: &str, namespace: &str) -> String {
        let netns = self.pod_netns(namespace, &self.pod(app, namespace));
        let output = Command::new("ip")
            .args(["netns", "exec", &netns, "curl", "-s", "-m", "5"])
            .arg("http://127.0.0.1:15020/stats/prometheus")
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// The walkthrough's STRICT mesh: every sidecar server takes only mTLS.
const MESH_STRICT: &str = "apiVersion: authentication.istio.io/v1alpha1\nkind: MeshPolicy\nmetadata:\n  name: default\nspec:\n  peers:\n  - mtls: {}\n";

/// Namespace isolation of foo (Istio's security-policy example).
const ALLOW_FROM_FOO: &str = "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata:\n  name: allow-foo\n  namespace: foo\nspec:\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        namespaces: [\"foo\"]\n";

/// bar's httpbin refuses `/headers` to everyone; everything else stays open.
const DENY_HEADERS_IN_BAR: &str = "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-headers\n  namespace: bar\nspec:\n  selector:\n    matchLabels:\n      app: httpbin\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"/headers\"]\n";

/// bar's sidecars only see bar's own services and block the rest.
const BAR_REGISTRY_ONLY: &str = "apiVersion: networking.istio.io/v1beta1\nkind: Sidecar\nmetadata:\n  name: default\n  namespace: bar\nspec:\n  outboundTrafficPolicy:\n    mode: REGISTRY_ONLY\n  egress:\n  - hosts: [\"./*\"]\n";

/// In namespace `tcp`, bar may not connect (a DENY without HTTP fields, checked once per connection).
const DENY_BAR_IN_TCP: &str = "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-bar\n  namespace: tcp\nspec:\n  action: DENY\n  rules:\n  - from:\n    - source:\n        namespaces: [\"bar\"]\n";

const READY: Duration = Duration::from_secs(90);
/// Policy updates reach proxies within a second; curl and pod lookups add their own time.
const SETTLE: Duration = Duration::from_secs(5);

#[test]
fn root_namespace_isolation_path_deny_and_registry_only_egress() {
    let c = Cluster::up();
    for ns in ["foo", "bar"] {
        c.ok(&["create", "ns", ns]);
        c.apply_injected("httpbin/httpbin.yaml", ns);
        c.apply_injected("sleep/sleep.yaml", ns);
    }
    // httpbin again in namespace `tcp`, behind a Service that declares its port as TCP: the sidecars copy
    // bytes and authorize once per connection.
    c.ok(&["create", "ns", "tcp"]);
    let httpbin = std::fs::read_to_string(samples().join("httpbin/httpbin.yaml")).unwrap();
    assert!(
        httpbin.contains("- name: http\n"),
        "the sample names its port http"
    );
    let tcp_httpbin = httpbin.replacen("- name: http\n", "- name: tcp\n", 1);
    c.apply_injected_text("tcp-httpbin.yaml", &tcp_httpbin, "tcp");
    c.ok(&["create", "ns", "legacy"]);
    for file in ["httpbin/httpbin.yaml", "sleep/sleep.yaml"] {
        let path = samples().join(file);
        c.ok(&["apply", "-f", path.to_str().unwrap(), "-n", "legacy"]);
    }
    c.apply("mesh.yaml", MESH_STRICT);
    c.apply("rule.yaml", ISTIO_MUTUAL_EVERYWHERE);
    for src in ["foo", "bar"] {
        c.wait_for(src, "foo", "200/0", READY);
        c.wait_for(src, "bar", "200/0", READY);
    }
    c.wait_for("legacy", "foo", "000/56", READY);
    c.wait_for("bar", "tcp", "200/0", READY);

    // A TCP port: bar's connection is closed (curl gets no HTTP reply at all), foo's goes through.
    c.apply("deny-bar.yaml", DENY_BAR_IN_TCP);
    let deadline = Instant::now() + SETTLE;
    let closed = loop {
        let got = c.call("bar", "tcp");
        if got == "000/52" || got == "000/56" || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        closed == "000/52" || closed == "000/56",
        "bar -> tcp: want a closed connection (curl 52 or 56), got {closed}"
    );
    assert_eq!(c.call("foo", "tcp"), "200/0");
    let metrics = c.proxy_metrics("httpbin", "tcp");
    assert!(
        metrics.lines().any(|line| line.starts_with(
            "ironmesh_authz_denied_total{policy=\"tcp/deny-bar\",action=\"DENY\",protocol=\"tcp\"}"
        )),
        "TCP denials counted by policy:\n{metrics}"
    );

    // Namespace isolation: foo lets foo in, keeps bar out with Envoy's 403, legacy is still reset.
    c.apply("allow-foo.yaml", ALLOW_FROM_FOO);
    c.wait_for("bar", "foo", "403/0", SETTLE);
    assert_eq!(c.call("foo", "foo"), "200/0");
    assert_eq!(c.call("legacy", "foo"), "000/56");
    assert_eq!(c.body("bar", "foo", "/ip"), "RBAC: access denied");
    assert_eq!(c.call("foo", "bar"), "200/0", "bar has no policy");
    let metrics = c.proxy_metrics("httpbin", "foo");
    assert!(
        metrics.lines().any(|line| line.starts_with(
            "ironmesh_authz_denied_total{policy=\"foo/allow-foo\",action=\"ALLOW\",protocol=\"http\"}"
        )),
        "denials counted by policy:\n{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("istio_requests_total{")
                && line.contains("response_code=\"403\"")),
        "Istio's request metric has the 403:\n{metrics}"
    );
    let explained = c.ok(&[
        "authz",
        "check",
        &c.pod("httpbin", "foo"),
        "-n",
        "foo",
        "--from",
        &c.pod("sleep", "bar"),
        "--from-namespace",
        "bar",
    ]);
    assert!(
        explained.contains(
            "Decision: denied: ALLOW policies apply (foo/allow-foo) but none matches -> 403 RBAC: access denied"
        ),
        "{explained}"
    );
    let explained = c.ok(&[
        "authz",
        "check",
        &c.pod("httpbin", "foo"),
        "-n",
        "foo",
        "--from",
        &c.pod("sleep", "foo"),
    ]);
    assert!(
        explained.contains("Decision: allowed by ALLOW policy foo/allow-foo rule 0"),
        "{explained}"
    );

    // A DENY on /headers in bar: 403 only there, for every caller; other paths and namespaces unaffected.
    c.apply("deny-headers.yaml", DENY_HEADERS_IN_BAR);
    c.wait_for_path("bar", "bar", "/headers", "403/0", SETTLE);
    assert_eq!(c.call_path("foo", "bar", "/headers"), "403/0");
    assert_eq!(c.call("bar", "bar"), "200/0");
    assert_eq!(c.call("foo", "bar"), "200/0");
    assert_eq!(c.call_path("foo", "foo", "/headers"), "200/0");

    // REGISTRY_ONLY egress in bar with only `./*` visible: foo's service is unknown to bar -> 502.
    c.apply("sidecar.yaml", BAR_REGISTRY_ONLY);
    c.wait_for("bar", "foo", "502/0", SETTLE);
    assert_eq!(
        c.call("bar", "bar"),
        "200/0",
        "bar's own services stay visible"
    );
    assert_eq!(c.call("foo", "foo"), "200/0", "foo's egress is untouched");
}

fn policy_yaml(name: &str, namespace: &str, annotations: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: {namespace}\n{annotations}spec:\n{spec}"
    )
}

const DRY_RUN: &str = "  annotations:\n    istio.io/dry-run: \"true\"\n";
const ENFORCED: &str = "  annotations:\n    istio.io/dry-run: \"false\"\n";
const DENY_ALL: &str = "  action: DENY\n  rules:\n  - {}\n";

/// foo's httpbin denies every connection opened with the SNI its clients' sidecars send for port 8000.
const DENY_SNI: &str = "  action: DENY\n  rules:\n  - when:\n    - key: connection.sni\n      values: [\"outbound_.8000_._.httpbin.foo.svc.cluster.local\"]\n";

/// bar's httpbin: only foo's `default` service account, and never `/status/<one segment>`.
const ALLOW_FOO_DEFAULT_SA: &str = "  action: ALLOW\n  rules:\n  - from:\n    - source:\n        serviceAccounts: [\"foo/default\"]\n";
const DENY_STATUS_TEMPLATE: &str =
    "  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"/status/{*}\"]\n";

/// foo's sidecars call bar's httpbin in plaintext.
const FOO_TO_BAR_PLAINTEXT: &str = "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata:\n  name: bar-plaintext\n  namespace: foo\nspec:\n  host: httpbin.bar.svc.cluster.local\n  trafficPolicy:\n    tls:\n      mode: DISABLE\n";

impl Cluster {
    /// Calls `src -> dst` until the sidecar of `dst`'s httpbin has a metric line with all `needles`, and
    /// checks that every call in the meantime got `want`; fails if the line never appears.
    fn calls_until_metric(&self, src: &str, dst: &str, want: &str, needles: &[&str]) -> String {
        let deadline = Instant::now() + SETTLE;
        loop {
            assert_eq!(self.call(src, dst), want, "{src} -> {dst}");
            let metrics = self.proxy_metrics("httpbin", dst);
            if let Some(line) = metrics
                .lines()
                .find(|line| needles.iter().all(|n| line.contains(n)))
            {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no metric line with {needles:?} after {SETTLE:?}:\n{metrics}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Issue 12: dry-run policies are evaluated and counted but never enforced; sidecars send Envoy's SNI and
/// `connection.sni` matches it; path templates and serviceAccounts are enforced; `authz check` computes a
/// plaintext client (no sidecar, or a DestinationRule with `tls.mode: DISABLE`) as the data path does.
#[test]
fn root_dry_run_sni_templates_service_accounts_and_plaintext_check() {
    let c = Cluster::up();
    for ns in ["foo", "bar"] {
        c.ok(&["create", "ns", ns]);
        c.apply_injected("httpbin/httpbin.yaml", ns);
        c.apply_injected("sleep/sleep.yaml", ns);
    }
    c.ok(&["create", "ns", "legacy"]);
    let sleep = samples().join("sleep/sleep.yaml");
    c.ok(&["apply", "-f", sleep.to_str().unwrap(), "-n", "legacy"]);
    // PERMISSIVE servers (no mesh policy), ISTIO_MUTUAL clients.
    c.apply("rule.yaml", ISTIO_MUTUAL_EVERYWHERE);
    for src in ["foo", "bar", "legacy"] {
        c.wait_for(src, "foo", "200/0", READY);
        c.wait_for(src, "bar", "200/0", READY);
    }

    // A dry-run DENY-all: every call still succeeds, and the sidecar counts what it would have denied.
    c.apply(
        "deny-all.yaml",
        &policy_yaml("deny-all", "foo", DRY_RUN, DENY_ALL),
    );
    let line = c.calls_until_metric(
        "bar",
        "foo",
        "200/0",
        &[
            "ironmesh_authz_dry_run_total{",
            "action=\"DENY\"",
            "result=\"denied\"",
            "policy=\"foo/deny-all\"",
        ],
    );
    assert!(line.contains("protocol=\"http\""), "{line}");
    assert_eq!(c.call("legacy", "foo"), "200/0");
    assert!(
        !c.proxy_metrics("httpbin", "foo")
            .contains("ironmesh_authz_denied_total{"),
        "a dry run denies nothing"
    );
    let explained = c.ok(&[
        "authz",
        "check",
        &c.pod("httpbin", "foo"),
        "-n",
        "foo",
        "--from",
        &format!("{}.bar", c.pod("sleep", "bar")),
    ]);
    assert!(
        explained.contains("dry-run DENY policies would deny (matched foo/deny-all rule 0)"),
        "{explained}"
    );
    // `istio.io/dry-run: "false"` enforces the same policy.
    c.apply(
        "deny-all.yaml",
        &policy_yaml("deny-all", "foo", ENFORCED, DENY_ALL),
    );
    c.wait_for("bar", "foo", "403/0", SETTLE);
    c.ok(&["delete", "authorizationpolicy", "deny-all", "-n", "foo"]);
    c.wait_for("bar", "foo", "200/0", SETTLE);

    // connection.sni: the client sidecars' SNI for httpbin.foo:8000 is denied; plaintext has no SNI.
    let clusters = c.ok(&[
        "proxy-config",
        "cluster",
        &c.pod("sleep", "bar"),
        "-n",
        "bar",
    ]);
    assert!(
        clusters
            .lines()
            .any(|l| l.contains("httpbin.foo.svc.cluster.local")
                && l.contains("ISTIO_MUTUAL")
                && l.contains("outbound_.8000_._.httpbin.foo.svc.cluster.local")),
        "{clusters}"
    );
    c.apply(
        "deny-sni.yaml",
        &policy_yaml("deny-sni", "foo", "", DENY_SNI),
    );
    c.wait_for("bar", "foo", "403/0", SETTLE);
    assert_eq!(c.call("foo", "foo"), "403/0");
    assert_eq!(c.call("legacy", "foo"), "200/0", "plaintext sends no SNI");
    assert_eq!(c.call("bar", "bar"), "200/0", "bar's SNI names bar");
    c.ok(&["delete", "authorizationpolicy", "deny-sni", "-n", "foo"]);

    // serviceAccounts and a `{*}` path template on bar's httpbin.
    c.apply(
        "allow-sa.yaml",
        &policy_yaml("allow-foo-default", "bar", "", ALLOW_FOO_DEFAULT_SA),
    );
    c.apply(
        "deny-status.yaml",
        &policy_yaml("deny-status", "bar", "", DENY_STATUS_TEMPLATE),
    );
    c.wait_for("bar", "bar", "403/0", SETTLE);
    c.wait_for_path("foo", "bar", "/status/200", "403/0", SETTLE);
    assert_eq!(c.call("foo", "bar"), "200/0", "foo/default is allowed");
    assert_eq!(
        c.call_path("foo", "bar", "/status/200/x"),
        "404/0",
        "{{*}} is one segment: allowed, and httpbin has no such page"
    );
    assert_eq!(
        c.call("legacy", "bar"),
        "403/0",
        "plaintext has no service account"
    );

    // authz check for the plaintext caller without a sidecar: the same 403 as the real request.
    let explained = c.ok(&[
        "authz",
        "check",
        &c.pod("httpbin", "bar"),
        "-n",
        "bar",
        "--from",
        &format!("{}.legacy", c.pod("sleep", "legacy")),
    ]);
    assert!(
        explained.contains("in plaintext (no sidecar)"),
        "{explained}"
    );
    assert!(
        explained.contains(
            "Decision: denied: ALLOW policies apply (bar/allow-foo-default) but none matches -> 403"
        ),
        "{explained}"
    );
    // foo's sidecar told by a DestinationRule to send plaintext to bar: the real request and the check
    // agree on 403 (identity lost), where mTLS was allowed.
    c.apply("bar-plaintext.yaml", FOO_TO_BAR_PLAINTEXT);
    c.wait_for("foo", "bar", "403/0", SETTLE);
    let explained = c.ok(&[
        "authz",
        "check",
        &c.pod("httpbin", "bar"),
        "-n",
        "bar",
        "--from",
        &format!("{}.foo", c.pod("sleep", "foo")),
    ]);
    assert!(
        explained.contains(
            "in plaintext (client TLS CLIENT_DISABLE for httpbin.bar.svc.cluster.local:8000)"
        ),
        "{explained}"
    );
    assert!(
        explained.contains(
            "Decision: denied: ALLOW policies apply (bar/allow-foo-default) but none matches -> 403"
        ),
        "{explained}"
    );
}
