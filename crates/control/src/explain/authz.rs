//! `/v1/explain/authz` (`ironmesh authz check POD`): which AuthorizationPolicy allows or denies a request
//! to a pod, computed from the stored resources exactly as the control plane computes the pod's sidecar
//! configuration, and evaluated with the engine the sidecar enforces with (`ironmesh-authz`).

use ironmesh_api::Object;
use ironmesh_api::mesh::MeshOptions;
use ironmesh_authz::{Http, Peer, PolicyMatch, Request};
use ironmesh_proto::pb;
use ironmesh_store::wire::AuthzQuery;
use ironmesh_store::{Reason, RouteError};

use crate::objects::PodView;
use crate::proxy_config::ClusterSnapshot;

/// Splits `name.namespace` unless a namespace was given.
fn split_pod<'a>(pod: &'a str, namespace: Option<&'a str>, default: &'a str) -> (&'a str, &'a str) {
    match (namespace, pod.split_once('.')) {
        (Some(ns), _) => (pod, ns),
        (None, Some((name, ns))) => (name, ns),
        (None, None) => (pod, default),
    }
}

/// A missing pod reads as kubectl's NotFound (which does not name the namespace either).
fn find_pod(objects: &[Object], name: &str, namespace: &str) -> Result<PodView, RouteError> {
    objects
        .iter()
        .filter(|o| o.kind == "Pod")
        .map(PodView::of)
        .find(|p| p.name == name && p.namespace == namespace)
        .ok_or_else(|| RouteError::new(Reason::NotFound, format!("pods \"{name}\" not found")))
}

/// Who calls: identity (when mTLS applies), address, how it is described, and the pod whose sidecar
/// configuration decides the client side of the connection (`None`: no sidecar, always plaintext).
struct Caller {
    peer: Option<Peer>,
    ip: std::net::IpAddr,
    description: String,
    sidecar: Option<PodView>,
}

fn caller(
    objects: &[Object],
    trust_domain: &str,
    from: Option<&str>,
    from_namespace: Option<&str>,
    server: &PodView,
) -> Result<Caller, RouteError> {
    let server_namespace = server.namespace.as_str();
    let unspecified = std::net::IpAddr::from([0, 0, 0, 0]);
    let identity = |ns: &str, sa: &str| format!("{trust_domain}/ns/{ns}/sa/{sa}");
    Ok(match (from, from_namespace) {
        (Some(pod), namespace) => {
            let (name, ns) = split_pod(pod, namespace, server_namespace);
            let pod = find_pod(objects, name, ns)?;
            let principal = identity(&pod.namespace, &pod.service_account);
            Caller {
                peer: Some(Peer::from_principal(&principal)),
                ip: pod.pod_ip.map_or(unspecified, Into::into),
                description: format!("{}.{} ({principal})", pod.name, pod.namespace),
                sidecar: pod.has_sidecar().then_some(pod),
            }
        }
        (None, Some(ns)) => {
            let principal = identity(ns, "default");
            // A pod with a sidecar, no labels and service account `default` in `ns`: its DestinationRules
            // and Sidecar resources are those of the namespace.
            let mut pod = server.clone();
            pod.namespace = ns.to_owned();
            pod.name = String::new();
            pod.uid = String::new();
            pod.labels = Default::default();
            pod.service_account = "default".into();
            pod.pod_ip = None;
            Caller {
                peer: Some(Peer::from_principal(&principal)),
                ip: unspecified,
                description: format!("a pod with a sidecar in namespace {ns} ({principal})"),
                sidecar: Some(pod),
            }
        }
        (None, None) => Caller {
            peer: None,
            ip: unspecified,
            description: "a client without identity (no --from)".into(),
            sidecar: None,
        },
    })
}

fn explain_line(line: &PolicyMatch) -> String {
    let verdict = match line.matching_rule {
        Some(rule) => format!("rule {rule} matches"),
        None if line.rule_count == 0 => "no rules: matches nothing".to_owned(),
        None => "no rule matches".to_owned(),
    };
    let rules = if line.rule_count == 1 {
        "rule"
    } else {
        "rules"
    };
    let dry_run = if line.dry_run { " (dry-run)" } else { "" };
    format!(
        "  {:<6} {:<40} {} {rules:<6} {verdict}{dry_run}",
        line.action.to_string(),
        line.policy.to_string(),
        line.rule_count
    )
}

/// How the client side of the connection is made, from the caller's own sidecar configuration with the
/// same decision its proxy takes ([`ironmesh_proto::client_uses_mtls`], [`ironmesh_proto::client_sni`]).
enum ClientSide {
    /// No sidecar on the caller: plaintext.
    NoSidecar,
    /// The caller's sidecar does not know the destination: REGISTRY_ONLY blocks it (502), ALLOW_ANY
    /// passes it through in plaintext.
    Unknown { registry_only: bool },
    /// The caller's sidecar routes to the pod through `service`.
    Routed {
        service: String,
        mtls: bool,
        sni: String,
        mode: String,
    },
}

fn client_side(
    caller: &Caller,
    snapshot: &ClusterSnapshot,
    server: &PodView,
    port: u16,
) -> ClientSide {
    let Some(pod) = &caller.sidecar else {
        return ClientSide::NoSidecar;
    };
    let config = snapshot.proxy_config(pod);
    let server_ip = server.pod_ip.map(|ip| ip.to_string()).unwrap_or_default();
    let route = config.services.iter().find_map(|service| {
        let endpoint = service.endpoints.iter().find(|e| e.ip == server_ip)?;
        let service_port = service
            .ports
            .iter()
            .find(|p| p.target_port == u32::from(port))?;
        Some((service, service_port, endpoint))
    });
    match route {
        Some((service, service_port, endpoint)) => ClientSide::Routed {
            service: format!("{}:{}", service.hostname, service_port.port),
            mtls: ironmesh_proto::client_uses_mtls(service_port, endpoint, config.auto_mtls),
            sni: ironmesh_proto::client_sni(service, service_port),
            mode: service_port
                .tls
                .as_ref()
                .map_or(pb::ClientTlsMode::Unspecified, |t| t.mode())
                .as_str_name()
                .to_owned(),
        },
        None => ClientSide::Unknown {
            registry_only: config.workload.as_ref().is_some_and(|w| {
                w.outbound_traffic_policy() == pb::OutboundTrafficPolicy::RegistryOnly
            }),
        },
    }
}

/// The service name and port a request to `pod_ip:port` would carry as its Host.
fn host_of(config: &pb::ProxyConfig, pod: &PodView, port: u16) -> String {
    let pod_ip = pod.pod_ip.map(|ip| ip.to_string()).unwrap_or_default();
    config
        .services
        .iter()
        .filter(|s| s.endpoints.iter().any(|e| e.ip == pod_ip))
        .find_map(|s| {
            let service_port = s.ports.iter().find(|p| p.target_port == u32::from(port))?;
            Some(format!("{}:{}", s.hostname, service_port.port))
        })
        .unwrap_or_else(|| format!("{pod_ip}:{port}"))
}

/// The explanation `authz check` prints, from the stored `objects`.
pub(crate) fn check(
    objects: &[Object],
    mesh: &MeshOptions,
    query: &AuthzQuery,
) -> Result<String, RouteError> {
    use std::fmt::Write;
    let AuthzQuery {
        pod,
        namespace,
        from,
        from_namespace,
        path,
        method,
        port,
    } = query;
    let port = *port;
    let mut out = String::new();
    let (name, ns) = split_pod(pod, namespace.as_deref(), "default");
    let server = find_pod(objects, name, ns)?;
    let caller = caller(
        objects,
        &mesh.trust_domain,
        from.as_deref(),
        from_namespace.as_deref(),
        &server,
    )?;
    let snapshot = ClusterSnapshot::new(objects, mesh);
    let config = snapshot.proxy_config(&server);
    let workload = config.workload.clone().unwrap_or_default();
    let inbound = match port {
        Some(port) => workload.ports.iter().find(|p| p.port == u32::from(port)),
        None => workload.ports.first(),
    };
    let port = port.or(inbound.map(|p| p.port as u16)).ok_or_else(|| {
        RouteError::new(
            Reason::BadRequest,
            format!("pod {name}.{ns} has no ports; pass --port"),
        )
    })?;
    let protocol = inbound.map_or(pb::Protocol::Tcp, |p| p.protocol());
    let mode = inbound.map_or(workload.default_mode(), |p| p.mode());
    let http = matches!(
        protocol,
        pb::Protocol::Http | pb::Protocol::Http2 | pb::Protocol::Grpc
    );

    let _ = writeln!(
        out,
        "Pod {}.{} ({}), port {port} ({}, mTLS mode {})",
        server.name,
        server.namespace,
        workload.spiffe_id,
        if http { "HTTP" } else { "TCP" },
        mode.as_str_name(),
    );
    if !server.has_sidecar() {
        let _ = writeln!(
            out,
            "The pod has no sidecar: nothing enforces AuthorizationPolicies on it."
        );
        return Ok(out);
    }
    let client = client_side(&caller, &snapshot, &server, port);
    let (mtls, sni) = match &client {
        ClientSide::NoSidecar => {
            let _ = writeln!(
                out,
                "From {} in plaintext (no sidecar): identity fields never match",
                caller.description
            );
            (false, None)
        }
        ClientSide::Unknown {
            registry_only: true,
        } => {
            let _ = writeln!(
                out,
                "From {}: its sidecar does not know this destination and its outbound policy is REGISTRY_ONLY",
                caller.description
            );
            let _ = writeln!(
                out,
                "Decision: blocked by the client's sidecar (502 for HTTP, closed for TCP), before any policy"
            );
            return Ok(out);
        }
        ClientSide::Unknown {
            registry_only: false,
        } => {
            let _ = writeln!(
                out,
                "From {} in plaintext (its sidecar does not know this destination and passes it through): identity fields never match",
                caller.description
            );
            (false, None)
        }
        ClientSide::Routed {
            service,
            mtls: true,
            sni,
            mode: client_mode,
        } => {
            let _ = writeln!(
                out,
                "From {} over mTLS (client TLS {client_mode} for {service}, SNI {sni})",
                caller.description
            );
            (true, Some(sni.clone()))
        }
        ClientSide::Routed {
            service,
            mtls: false,
            mode: client_mode,
            ..
        } => {
            let _ = writeln!(
                out,
                "From {} in plaintext (client TLS {client_mode} for {service}): identity fields never match",
                caller.description
            );
            (false, None)
        }
    };
    if !mtls && mode == pb::ServerMode::Strict {
        let _ = writeln!(
            out,
            "Decision: connection reset (plaintext to a STRICT port), before any policy"
        );
        return Ok(out);
    }
    if mtls && mode == pb::ServerMode::Disable {
        let _ = writeln!(
            out,
            "Decision: connection fails (mTLS to a DISABLE port: the server does not terminate it), before any policy"
        );
        return Ok(out);
    }
    let applied = ironmesh_proto::compile_policies(&workload)
        .map_err(|rejection| RouteError::new(Reason::BadRequest, rejection.to_string()))?;
    let request = Request {
        peer: if mtls { caller.peer } else { None },
        source_ip: caller.ip,
        destination_ip: server.pod_ip.map_or([0, 0, 0, 0].into(), Into::into),
        destination_port: port,
        sni,
        http: http.then(|| Http {
            method: method.clone(),
            path: path.clone(),
            host: host_of(&config, &server, port),
            headers: vec![],
        }),
    };
    let _ = match &request.http {
        Some(http) => writeln!(
            out,
            "Request: {} {} (host {})",
            http.method, http.path, http.host
        ),
        None => writeln!(
            out,
            "Request: a TCP connection (HTTP fields of policies do not apply)"
        ),
    };
    let explanation = applied.explain(&request);
    if explanation.is_empty() {
        let _ = writeln!(out, "Policies: none apply to this pod");
    } else {
        let _ = writeln!(out, "Policies (evaluation order):");
        for line in &explanation {
            let _ = writeln!(out, "{}", explain_line(line));
        }
    }
    let decision = applied.evaluate(&request);
    let outcome = match (decision.allowed, http) {
        (true, _) => "",
        (false, true) => " -> 403 RBAC: access denied",
        (false, false) => " -> connection closed",
    };
    let _ = writeln!(out, "Decision: {decision}{outcome}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_objects::load;

    /// The walkthrough's pods (sidecars in foo and bar, none in legacy), STRICT, and the policies in `extra`.
    fn cluster(extra: &str) -> Vec<Object> {
        let mut yaml = String::from(
            "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n---\n",
        );
        for ns in ["foo", "bar", "legacy"] {
            yaml.push_str(&format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: httpbin, namespace: {ns}}}\nspec:\n  clusterIP: 198.19.0.{}\n  selector: {{app: httpbin}}\n  ports: [{{name: http, port: 8000, targetPort: 80}}]\n---\n",
                ns.len()
            ));
        }
        yaml.push_str(extra);
        let mut objects = load(&yaml);
        for (ns, app, sidecar) in [
            ("foo", "httpbin", true),
            ("foo", "sleep", true),
            ("bar", "sleep", true),
            ("legacy", "sleep", false),
        ] {
            let proxy = if sidecar {
                "\n  - {name: ironmesh-proxy, image: ironmesh/proxy}"
            } else {
                ""
            };
            let mut pod = load(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {app}, namespace: {ns}, labels: {{app: {app}}}}}\nspec:\n  serviceAccountName: {app}\n  containers:\n  - {{name: {app}, image: img, ports: [{{containerPort: 80}}]}}{proxy}\n"
            ))
            .remove(0);
            pod.body.insert(
                "status".into(),
                serde_json::json!({"podIP": "198.18.0.9", "phase": "Running"}),
            );
            objects.push(pod);
        }
        objects
    }

    fn run_check(objects: &[Object], from: Option<&str>, path: &str) -> String {
        let command = AuthzQuery {
            pod: "httpbin.foo".into(),
            namespace: None,
            from: from.map(str::to_owned),
            from_namespace: None,
            path: path.into(),
            method: "GET".into(),
            port: None,
        };
        let mesh = MeshOptions {
            auto_mtls: true,
            ..MeshOptions::default()
        };
        check(objects, &mesh, &command).unwrap()
    }

    const ALLOW_FOO: &str = "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: allow-foo, namespace: foo}\nspec: {action: ALLOW, rules: [{from: [{source: {namespaces: [foo]}}]}]}\n---\n";
    const DENY_HEADERS: &str = "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: deny-headers, namespace: foo}\nspec: {action: DENY, rules: [{to: [{operation: {paths: [/headers]}}]}]}\n---\n";

    #[test]
    fn check_names_the_policy_that_allows_or_denies() {
        let objects = cluster(&format!("{ALLOW_FOO}{DENY_HEADERS}"));
        let foo = run_check(&objects, Some("sleep.foo"), "/ip");
        assert!(
            foo.contains("From sleep.foo (cluster.local/ns/foo/sa/sleep) over mTLS"),
            "{foo}"
        );
        assert!(
            foo.contains("Request: GET /ip (host httpbin.foo.svc.cluster.local:8000)"),
            "{foo}"
        );
        assert!(
            foo.ends_with("Decision: allowed by ALLOW policy foo/allow-foo rule 0\n"),
            "{foo}"
        );
        let bar = run_check(&objects, Some("sleep.bar"), "/ip");
        assert!(
            bar.ends_with("Decision: denied: ALLOW policies apply (foo/allow-foo) but none matches -> 403 RBAC: access denied\n"),
            "{bar}"
        );
        let headers = run_check(&objects, Some("sleep.foo"), "/headers");
        assert!(headers.contains("DENY   foo/deny-headers"), "{headers}");
        assert!(
            headers.ends_with("Decision: denied by DENY policy foo/deny-headers rule 0 -> 403 RBAC: access denied\n"),
            "{headers}"
        );
        let legacy = run_check(&objects, Some("sleep.legacy"), "/ip");
        assert!(
            legacy.contains("connection reset (plaintext to a STRICT port)"),
            "{legacy}"
        );
    }

    const ALLOW_BAR_SLEEP: &str = "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: allow-bar, namespace: foo}\nspec: {rules: [{from: [{source: {principals: [cluster.local/ns/bar/sa/sleep]}}]}]}\n---\n";
    const PERMISSIVE_FOO: &str = "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: foo}\nspec: {mtls: {mode: PERMISSIVE}}\n---\n";
    const BAR_DISABLES_TLS: &str = "apiVersion: networking.istio.io/v1beta1\nkind: DestinationRule\nmetadata: {name: no-tls, namespace: bar}\nspec: {host: httpbin.foo.svc.cluster.local, trafficPolicy: {tls: {mode: DISABLE}}}\n---\n";

    /// The client side comes from the caller's DestinationRule, as the data path decides it: a plaintext
    /// client gets the 403 (PERMISSIVE) or the reset (STRICT) the real request gets.
    #[test]
    fn check_takes_the_clients_tls_from_its_destination_rule() {
        let objects = cluster(&format!("{ALLOW_BAR_SLEEP}{PERMISSIVE_FOO}"));
        let mtls = run_check(&objects, Some("sleep.bar"), "/ip");
        assert!(
            mtls.contains("over mTLS (client TLS AUTO for httpbin.foo.svc.cluster.local:8000, SNI outbound_.8000_._.httpbin.foo.svc.cluster.local)"),
            "{mtls}"
        );
        assert!(
            mtls.ends_with("Decision: allowed by ALLOW policy foo/allow-bar rule 0\n"),
            "{mtls}"
        );
        let objects = cluster(&format!(
            "{ALLOW_BAR_SLEEP}{PERMISSIVE_FOO}{BAR_DISABLES_TLS}"
        ));
        let plaintext = run_check(&objects, Some("sleep.bar"), "/ip");
        assert!(
            plaintext.contains(
                "in plaintext (client TLS CLIENT_DISABLE for httpbin.foo.svc.cluster.local:8000)"
            ),
            "{plaintext}"
        );
        assert!(
            plaintext.ends_with("Decision: denied: ALLOW policies apply (foo/allow-bar) but none matches -> 403 RBAC: access denied\n"),
            "{plaintext}"
        );
        let objects = cluster(&format!("{ALLOW_BAR_SLEEP}{BAR_DISABLES_TLS}"));
        let strict = run_check(&objects, Some("sleep.bar"), "/ip");
        assert!(
            strict.ends_with(
                "Decision: connection reset (plaintext to a STRICT port), before any policy\n"
            ),
            "{strict}"
        );
        // Without a DestinationRule and with auto mTLS off (`ironmesh up` without --auto-mtls), the
        // client sidecar sends plaintext too.
        let objects = cluster(&format!("{ALLOW_BAR_SLEEP}{PERMISSIVE_FOO}"));
        let command = AuthzQuery {
            pod: "httpbin.foo".into(),
            namespace: None,
            from: Some("sleep.bar".into()),
            from_namespace: None,
            path: "/ip".into(),
            method: "GET".into(),
            port: None,
        };
        let no_auto = check(&objects, &MeshOptions::default(), &command).unwrap();
        assert!(
            no_auto.contains("in plaintext (client TLS CLIENT_DISABLE"),
            "{no_auto}"
        );
        assert!(no_auto.contains("-> 403 RBAC: access denied"), "{no_auto}");
    }

    #[test]
    fn check_shows_custom_and_dry_run_policies() {
        let custom = "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: ext, namespace: foo}\nspec: {action: CUSTOM, provider: {name: opa}, rules: [{to: [{operation: {paths: [/admin]}}]}]}\n---\n";
        let dry = "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all, namespace: foo, annotations: {istio.io/dry-run: \"true\"}}\nspec: {action: DENY, rules: [{}]}\n---\n";
        let objects = cluster(&format!("{custom}{dry}"));
        let admin = run_check(&objects, Some("sleep.foo"), "/admin");
        assert!(
            admin.ends_with(
                "Decision: denied by CUSTOM policy foo/ext rule 0 -> 403 RBAC: access denied\n"
            ),
            "{admin}"
        );
        let ip = run_check(&objects, Some("sleep.foo"), "/ip");
        assert!(ip.contains("DENY   foo/deny-all"), "{ip}");
        assert!(ip.contains("rule 0 matches (dry-run)"), "{ip}");
        assert!(
            ip.ends_with("Decision: allowed: no ALLOW policy applies; dry-run DENY policies would deny (matched foo/deny-all rule 0)\n"),
            "{ip}"
        );
    }

    #[test]
    fn check_without_policies_says_none_apply() {
        let out = run_check(&cluster(""), Some("sleep.bar"), "/ip");
        assert!(out.contains("Policies: none apply to this pod"), "{out}");
        assert!(
            out.ends_with("Decision: allowed: no ALLOW policy applies\n"),
            "{out}"
        );
    }

    #[test]
    fn pods_are_spelled_like_istioctl() {
        assert_eq!(split_pod("sleep.bar", None, "foo"), ("sleep", "bar"));
        assert_eq!(split_pod("sleep", None, "foo"), ("sleep", "foo"));
        assert_eq!(
            split_pod("sleep", Some("legacy"), "foo"),
            ("sleep", "legacy")
        );
    }
}
