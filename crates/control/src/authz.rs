//! What the control plane tells each sidecar about authorization and egress: the AuthorizationPolicies
//! whose scope covers its workload (ironmesh-authz's scope rules), and the `Sidecar` resource that limits
//! which services it sees and what it does with unknown destinations.

use std::collections::BTreeMap;

use ironmesh_api::Object;
use ironmesh_authz::{AuthzIndex, PolicyObject};
use ironmesh_proto::pb;
use serde_json::Value;

/// The stored AuthorizationPolicies, indexed by scope.
pub(crate) struct PolicyScope {
    index: AuthzIndex,
}

fn policy_object(object: &Object) -> PolicyObject {
    PolicyObject {
        namespace: object.metadata.namespace.clone().unwrap_or_default(),
        name: object.metadata.name.clone(),
        creation_timestamp: object.metadata.creation_timestamp.clone(),
        annotations: object.metadata.annotations.clone(),
        spec: object.spec().clone(),
    }
}

impl PolicyScope {
    /// Indexes the policies. A stored policy the engine refuses (apply and the Kubernetes webhook refuse it
    /// too, but a cluster can store one while the webhook is not installed or down) is logged by name and
    /// sent as its fail-closed stand-in ([`AuthzIndex::closing_invalid`]), so its error opens nothing.
    pub(crate) fn new(objects: &[Object], root_namespace: &str) -> Self {
        let policies = objects
            .iter()
            .filter(|o| o.kind == "AuthorizationPolicy")
            .map(policy_object);
        let (index, invalid) = AuthzIndex::closing_invalid(policies, root_namespace);
        for error in invalid {
            tracing::warn!(%error, "enforced fail-closed (an invalid DENY denies all in its scope, an invalid ALLOW allows nothing); fix or delete the policy");
        }
        Self { index }
    }

    /// The policies to send the sidecar of a workload in `namespace` with `labels`, in evaluation order.
    pub(crate) fn for_workload(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<pb::AuthorizationPolicy> {
        self.index
            .policies_for(namespace, labels)
            .entries()
            .map(|(name, policy, dry_run)| ironmesh_proto::policy_message(name, policy, dry_run))
            .collect()
    }
}

/// One `Sidecar` resource's egress settings.
#[derive(Debug, Clone, PartialEq)]
struct EgressRule {
    namespace: String,
    created: Option<String>,
    name: String,
    selector: Option<BTreeMap<String, String>>,
    /// `None` when the Sidecar does not set `outboundTrafficPolicy`: the mesh default applies.
    mode: Option<pb::OutboundTrafficPolicy>,
    /// `namespace/dnsName` hosts of every egress listener; `None` when no egress is given (all visible).
    hosts: Option<Vec<(String, String)>>,
}

impl EgressRule {
    fn of(object: &Object) -> Self {
        let spec = object.spec();
        let mode = match spec
            .pointer("/outboundTrafficPolicy/mode")
            .and_then(Value::as_str)
        {
            Some("REGISTRY_ONLY") => Some(pb::OutboundTrafficPolicy::RegistryOnly),
            Some("ALLOW_ANY") => Some(pb::OutboundTrafficPolicy::AllowAny),
            _ => None,
        };
        let hosts = spec
            .get("egress")
            .and_then(Value::as_array)
            .filter(|listeners| !listeners.is_empty())
            .map(|listeners| {
                listeners
                    .iter()
                    .filter_map(|listener| listener.get("hosts").and_then(Value::as_array))
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|host| match host.split_once('/') {
                        Some((ns, dns)) => (ns.to_owned(), dns.to_owned()),
                        None => ("*".to_owned(), host.to_owned()),
                    })
                    .collect()
            });
        let selector = spec
            .pointer("/workloadSelector/labels")
            .and_then(Value::as_object)
            .map(|labels| {
                labels
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            });
        Self {
            namespace: object.metadata.namespace.clone().unwrap_or_default(),
            created: object.metadata.creation_timestamp.clone(),
            name: object.metadata.name.clone(),
            selector,
            mode,
            hosts,
        }
    }

    /// Istio's `namespace/dnsName` host match for a service seen from `client_namespace`: namespace `*`
    /// is any, `.` the client's own, `~` none; dnsName `*` is any, `*.suffix` a suffix, else exact.
    fn shows(&self, client_namespace: &str, service_namespace: &str, hostname: &str) -> bool {
        let Some(hosts) = &self.hosts else {
            return true;
        };
        hosts.iter().any(|(ns, dns)| {
            let namespace_ok = match ns.as_str() {
                "*" => true,
                "." => service_namespace == client_namespace,
                "~" => false,
                other => other == service_namespace,
            };
            let host_ok = match dns.strip_prefix('*') {
                Some("") => true,
                Some(suffix) => hostname.ends_with(suffix),
                None => dns == hostname,
            };
            namespace_ok && host_ok
        })
    }
}

/// The `Sidecar` resources: which one configures a workload's egress.
pub(crate) struct EgressScope {
    rules: Vec<EgressRule>,
    root_namespace: String,
    mesh_default: pb::OutboundTrafficPolicy,
}

/// The egress a workload's sidecar gets: its outbound mode and which services it sees.
pub(crate) struct Egress<'a> {
    rule: Option<&'a EgressRule>,
    client_namespace: &'a str,
    mesh_default: pb::OutboundTrafficPolicy,
}

impl Egress<'_> {
    pub(crate) fn mode(&self) -> pb::OutboundTrafficPolicy {
        self.rule.and_then(|r| r.mode).unwrap_or(self.mesh_default)
    }

    pub(crate) fn shows(&self, service_namespace: &str, hostname: &str) -> bool {
        self.rule
            .is_none_or(|r| r.shows(self.client_namespace, service_namespace, hostname))
    }
}

impl EgressScope {
    pub(crate) fn new(
        objects: &[Object],
        root_namespace: &str,
        mesh_default: pb::OutboundTrafficPolicy,
    ) -> Self {
        let mut rules: Vec<EgressRule> = objects
            .iter()
            .filter(|o| o.kind == "Sidecar")
            .map(EgressRule::of)
            .collect();
        // Oldest first, then by name: when several could apply, the first wins (as Istio picks the oldest).
        rules.sort_by(|a, b| {
            (a.created.is_none(), &a.created, &a.name).cmp(&(
                b.created.is_none(),
                &b.created,
                &b.name,
            ))
        });
        Self {
            rules,
            root_namespace: root_namespace.to_owned(),
            mesh_default,
        }
    }

    /// Istio's precedence: a Sidecar selecting the workload in its namespace, else its namespace's Sidecar
    /// without selector, else the root namespace's Sidecar without selector.
    pub(crate) fn for_workload<'a>(
        &'a self,
        namespace: &'a str,
        labels: &BTreeMap<String, String>,
    ) -> Egress<'a> {
        let rules = &self.rules;
        let in_namespace = |ns: &'a str| rules.iter().filter(move |r| r.namespace == ns);
        let rule = in_namespace(namespace)
            .find(|r| {
                r.selector.as_ref().is_some_and(|selector| {
                    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                })
            })
            .or_else(|| in_namespace(namespace).find(|r| r.selector.is_none()))
            .or_else(|| in_namespace(self.root_namespace.as_str()).find(|r| r.selector.is_none()));
        Egress {
            rule,
            client_namespace: namespace,
            mesh_default: self.mesh_default,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::objects::PodView;
    use crate::options::MeshOptions;
    use crate::proxy_config::ClusterSnapshot;
    use crate::test_objects::load;
    use ironmesh_api::Object;
    use ironmesh_proto::pb;
    use serde_json::json;

    fn pod(ns: &str, app: &str, ip: &str) -> Object {
        let mut pod = load(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {app}-x, namespace: {ns}, labels: {{app: {app}}}}}\nspec:\n  containers:\n  - {{name: {app}, image: img, ports: [{{containerPort: 8000}}]}}\n  - {{name: ironmesh-proxy, image: ironmesh/proxy}}\n"
        ))
        .remove(0);
        pod.body
            .insert("status".into(), json!({"podIP": ip, "phase": "Running"}));
        pod
    }

    fn service(ns: &str, vip: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: httpbin, namespace: {ns}}}\nspec:\n  clusterIP: {vip}\n  selector: {{app: httpbin}}\n  ports: [{{name: http, port: 8000}}]\n---\n"
        )
    }

    fn policy(ns: &str, name: &str, spec: &str) -> String {
        format!(
            "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n---\n"
        )
    }

    /// httpbin and sleep in foo and bar, the three services, plus `extra`.
    fn cluster(extra: &str) -> Vec<Object> {
        let mut objects = load(&format!(
            "{}{}{}{extra}",
            service("foo", "198.19.0.1"),
            service("bar", "198.19.0.2"),
            service("legacy", "198.19.0.3")
        ));
        objects.push(pod("foo", "httpbin", "198.18.0.2"));
        objects.push(pod("foo", "sleep", "198.18.0.3"));
        objects.push(pod("bar", "httpbin", "198.18.0.4"));
        objects.push(pod("bar", "sleep", "198.18.0.5"));
        objects
    }

    fn config(objects: &[Object], ns: &str, app: &str) -> pb::ProxyConfig {
        config_in(&MeshOptions::default(), objects, ns, app)
    }

    fn config_in(mesh: &MeshOptions, objects: &[Object], ns: &str, app: &str) -> pb::ProxyConfig {
        let pod = objects
            .iter()
            .filter(|o| o.kind == "Pod")
            .map(PodView::of)
            .find(|p| p.namespace == ns && p.labels.get("app").map(String::as_str) == Some(app))
            .unwrap();
        ClusterSnapshot::new(objects, mesh).proxy_config(&pod)
    }

    fn policies_of(objects: &[Object], ns: &str, app: &str) -> Vec<String> {
        config(objects, ns, app)
            .workload
            .unwrap()
            .authorization_policies
            .iter()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect()
    }

    #[test]
    fn policies_reach_the_workloads_in_their_scope() {
        let objects = cluster(&format!(
            "{}{}{}{}",
            policy(
                "foo",
                "allow-foo",
                "{action: ALLOW, rules: [{from: [{source: {namespaces: [foo]}}]}]}"
            ),
            policy(
                "bar",
                "deny-headers",
                "{selector: {matchLabels: {app: httpbin}}, action: DENY, rules: [{to: [{operation: {paths: [/headers]}}]}]}"
            ),
            policy("istio-system", "mesh-audit", "{action: AUDIT, rules: [{}]}"),
            policy(
                "istio-system",
                "mesh-sleep",
                "{selector: {matchLabels: {app: sleep}}, action: DENY, rules: [{to: [{operation: {ports: [\"9\"]}}]}]}"
            ),
        ));
        // (pod, expected policies in evaluation order, DENY before ALLOW before AUDIT): namespace-wide,
        // selector-narrowed, root (mesh-wide) with and without selector.
        let table: [(&str, &str, &[&str]); 4] = [
            (
                "foo",
                "httpbin",
                &["foo/allow-foo", "istio-system/mesh-audit"],
            ),
            (
                "foo",
                "sleep",
                &[
                    "istio-system/mesh-sleep",
                    "foo/allow-foo",
                    "istio-system/mesh-audit",
                ],
            ),
            (
                "bar",
                "httpbin",
                &["bar/deny-headers", "istio-system/mesh-audit"],
            ),
            (
                "bar",
                "sleep",
                &["istio-system/mesh-sleep", "istio-system/mesh-audit"],
            ),
        ];
        for (ns, app, expected) in table {
            assert_eq!(policies_of(&objects, ns, app), expected, "{app} in {ns}");
        }
        let workload = config(&objects, "foo", "httpbin").workload.unwrap();
        let sent = &workload.authorization_policies[0];
        assert_eq!(sent.rules[0].from[0].namespaces, ["foo"]);
    }

    #[test]
    fn an_invalid_stored_policy_is_sent_fail_closed() {
        // Stored while nothing validated it (e.g. on Kubernetes before the webhook was installed): sent as
        // its stand-in, an ALLOW without rules, so it allows nothing instead of disappearing.
        let mut objects = cluster(&format!(
            "{}{}",
            policy("foo", "templated", "{rules: [{}]}"),
            policy("foo", "allow-all", "{rules: [{}]}")
        ));
        let stored = objects
            .iter_mut()
            .find(|o| o.kind == "AuthorizationPolicy")
            .unwrap();
        stored.body.insert(
            "spec".into(),
            json!({"rules": [{"to": [{"operation": {"paths": ["/a/{id}"]}}]}]}),
        );
        let sent = config(&objects, "foo", "httpbin")
            .workload
            .unwrap()
            .authorization_policies;
        let templated = sent
            .iter()
            .find(|p| p.name == "templated")
            .expect("the stand-in is sent");
        assert_eq!(templated.action(), pb::authorization_policy::Action::Allow);
        assert!(templated.rules.is_empty(), "{templated:?}");
        assert_eq!(
            policies_of(&objects, "foo", "httpbin"),
            ["foo/allow-all", "foo/templated"]
        );
    }

    fn visible(config: &pb::ProxyConfig) -> Vec<&str> {
        config
            .services
            .iter()
            .map(|s| s.namespace.as_str())
            .collect()
    }

    fn mode(config: &pb::ProxyConfig) -> pb::OutboundTrafficPolicy {
        config.workload.as_ref().unwrap().outbound_traffic_policy()
    }

    const SIDECAR_BAR: &str = "apiVersion: networking.istio.io/v1beta1\nkind: Sidecar\nmetadata: {name: default, namespace: bar}\nspec:\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n  egress: [{hosts: [\"./*\", \"legacy/httpbin.legacy.svc.cluster.local\"]}]\n---\n";

    #[test]
    fn a_namespace_sidecar_limits_egress_of_its_namespace_only() {
        let objects = cluster(SIDECAR_BAR);
        let bar = config(&objects, "bar", "sleep");
        assert_eq!(mode(&bar), pb::OutboundTrafficPolicy::RegistryOnly);
        assert_eq!(
            visible(&bar),
            ["bar", "legacy"],
            "`./*` is bar itself, plus the named host"
        );
        let foo = config(&objects, "foo", "sleep");
        assert_eq!(mode(&foo), pb::OutboundTrafficPolicy::AllowAny);
        assert_eq!(visible(&foo), ["foo", "bar", "legacy"]);
    }

    #[test]
    fn the_root_namespace_sidecar_is_the_default_and_a_namespace_one_overrides_it() {
        let root = "apiVersion: networking.istio.io/v1beta1\nkind: Sidecar\nmetadata: {name: default, namespace: istio-system}\nspec:\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n---\n";
        let objects = cluster(&format!("{root}{SIDECAR_BAR}"));
        let foo = config(&objects, "foo", "sleep");
        assert_eq!(mode(&foo), pb::OutboundTrafficPolicy::RegistryOnly);
        assert_eq!(
            visible(&foo),
            ["foo", "bar", "legacy"],
            "no egress: every service is visible"
        );
        assert_eq!(
            visible(&config(&objects, "bar", "sleep")),
            ["bar", "legacy"]
        );
        let any_ns = "apiVersion: networking.istio.io/v1beta1\nkind: Sidecar\nmetadata: {name: default, namespace: foo}\nspec:\n  egress: [{hosts: [\"*/httpbin.bar.svc.cluster.local\"]}]\n---\n";
        let objects = cluster(&format!("{root}{any_ns}"));
        let foo = config(&objects, "foo", "sleep");
        assert_eq!(
            mode(&foo),
            pb::OutboundTrafficPolicy::AllowAny,
            "foo's own Sidecar wins"
        );
        assert_eq!(visible(&foo), ["bar"]);
    }

    #[test]
    fn the_mesh_option_is_the_default_and_a_sidecar_mode_overrides_it() {
        // Istio: `meshConfig.outboundTrafficPolicy` applies unless a Sidecar sets its own; a Sidecar without
        // `outboundTrafficPolicy` inherits the mesh's.
        let mesh = MeshOptions {
            outbound_traffic_policy: crate::OutboundTrafficPolicy::RegistryOnly,
            ..MeshOptions::default()
        };
        let allow_bar = "apiVersion: networking.istio.io/v1beta1\nkind: Sidecar\nmetadata: {name: default, namespace: bar}\nspec:\n  outboundTrafficPolicy: {mode: ALLOW_ANY}\n---\n";
        let hosts_only_legacy = "apiVersion: networking.istio.io/v1beta1\nkind: Sidecar\nmetadata: {name: default, namespace: legacy}\nspec:\n  egress: [{hosts: [\"./*\"]}]\n---\n";
        let objects = cluster(&format!("{allow_bar}{hosts_only_legacy}"));
        assert_eq!(
            mode(&config_in(&mesh, &objects, "foo", "sleep")),
            pb::OutboundTrafficPolicy::RegistryOnly
        );
        assert_eq!(
            mode(&config_in(&mesh, &objects, "bar", "sleep")),
            pb::OutboundTrafficPolicy::AllowAny
        );
        let objects = cluster("");
        assert_eq!(
            mode(&config(&objects, "foo", "sleep")),
            pb::OutboundTrafficPolicy::AllowAny,
            "ALLOW_ANY by default"
        );
    }
}
