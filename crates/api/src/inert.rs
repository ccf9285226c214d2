//! Which stored fields ironmesh validates (as Istio does) but does not act on, so `describe` can say so.
//! The list follows what the engine and the proxies read: `policy::resources` (DestinationRule host,
//! exportTo, workloadSelector, subsets, `tls` mode/sni/subjectAltNames, port-level `tls`; the legacy
//! policies' targets and `peers[].mtls`) and the control plane's Sidecar egress rules (workloadSelector
//! labels, egress hosts, outboundTrafficPolicy mode). Everything else set in an object is listed here.

use serde_json::Value;

use crate::yaml::{join_index, join_key};

/// One field that is set in an object and has no effect in ironmesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InertField {
    /// Dotted path, e.g. `spec.trafficPolicy.connectionPool`.
    pub path: String,
    /// What Istio would do with it and what ironmesh does instead.
    pub why: &'static str,
}

const STORED: &str = "stored and validated; ironmesh's proxies do not implement it";
const CERTIFICATES: &str = "stored and validated; the local runtime mounts no user certificates, so SIMPLE and MUTUAL are sent as plaintext";

fn set(value: &Value, key: &str) -> bool {
    match value.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::Array(items)) => !items.is_empty(),
        Some(Value::Object(map)) => !map.is_empty() || key != "labels",
        Some(_) => true,
    }
}

fn collect(path: &str, value: &Value, keys: &[(&str, &'static str)], out: &mut Vec<InertField>) {
    for (key, why) in keys {
        if set(value, key) {
            out.push(InertField {
                path: join_key(path, key),
                why,
            });
        }
    }
}

fn traffic_policy(path: &str, policy: &Value, out: &mut Vec<InertField>) {
    let settings = [
        ("loadBalancer", STORED),
        ("connectionPool", STORED),
        ("outlierDetection", STORED),
        ("tunnel", STORED),
        ("proxyProtocol", STORED),
        ("retryBudget", STORED),
    ];
    collect(path, policy, &settings, out);
    let tls_fields = [
        ("clientCertificate", CERTIFICATES),
        ("privateKey", CERTIFICATES),
        ("caCertificates", CERTIFICATES),
        ("credentialName", CERTIFICATES),
        ("caCrl", CERTIFICATES),
        ("insecureSkipVerify", CERTIFICATES),
    ];
    if let Some(tls) = policy.get("tls") {
        collect(&join_key(path, "tls"), tls, &tls_fields, out);
    }
    let list = policy.get("portLevelSettings").and_then(Value::as_array);
    for (index, setting) in list.into_iter().flatten().enumerate() {
        let setting_path = join_index(&join_key(path, "portLevelSettings"), index);
        collect(&setting_path, setting, &settings[..3], out);
        if let Some(tls) = setting.get("tls") {
            collect(&join_key(&setting_path, "tls"), tls, &tls_fields, out);
        }
    }
}

/// The fields of `object` (a whole stored object) that are set and have no effect in ironmesh.
pub fn inert_fields(object: &Value) -> Vec<InertField> {
    let mut out = Vec::new();
    let spec = object.get("spec").unwrap_or(&Value::Null);
    match object.get("kind").and_then(Value::as_str) {
        Some("DestinationRule") => {
            if let Some(policy) = spec.get("trafficPolicy") {
                traffic_policy("spec.trafficPolicy", policy, &mut out);
            }
            let subsets = spec.get("subsets").and_then(Value::as_array);
            for (index, subset) in subsets.into_iter().flatten().enumerate() {
                let path = join_index("spec.subsets", index);
                collect(
                    &path,
                    subset,
                    &[(
                        "labels",
                        "stored and validated; ironmesh has no VirtualService routing to subsets, so their labels select nothing",
                    )],
                    &mut out,
                );
                if let Some(policy) = subset.get("trafficPolicy") {
                    traffic_policy(&join_key(&path, "trafficPolicy"), policy, &mut out);
                }
            }
        }
        Some("Sidecar") => {
            collect(
                "spec",
                spec,
                &[
                    (
                        "ingress",
                        "stored and validated; ironmesh's inbound listeners follow the pod's container ports",
                    ),
                    ("inboundConnectionPool", STORED),
                ],
                &mut out,
            );
            let egress = spec.get("egress").and_then(Value::as_array);
            for (index, listener) in egress.into_iter().flatten().enumerate() {
                collect(
                    &join_index("spec.egress", index),
                    listener,
                    &[
                        (
                            "port",
                            "stored and validated; ironmesh applies egress hosts to every port",
                        ),
                        ("bind", STORED),
                        ("captureMode", STORED),
                    ],
                    &mut out,
                );
            }
            if let Some(policy) = spec.get("outboundTrafficPolicy") {
                collect(
                    "spec.outboundTrafficPolicy",
                    policy,
                    &[("egressProxy", STORED)],
                    &mut out,
                );
            }
        }
        Some("MeshPolicy" | "Policy") => {
            let jwt =
                "stored and validated; ironmesh does not verify JWTs, so only mTLS peers count";
            collect(
                "spec",
                spec,
                &[
                    ("origins", jwt),
                    ("originIsOptional", jwt),
                    ("principalBinding", jwt),
                    ("peerIsOptional", STORED),
                ],
                &mut out,
            );
            let peers = spec.get("peers").and_then(Value::as_array);
            for (index, peer) in peers.into_iter().flatten().enumerate() {
                collect(
                    &join_index("spec.peers", index),
                    peer,
                    &[("jwt", jwt)],
                    &mut out,
                );
            }
            let targets = spec.get("targets").and_then(Value::as_array);
            for (index, target) in targets.into_iter().flatten().enumerate() {
                collect(
                    &join_index("spec.targets", index),
                    target,
                    &[(
                        "labels",
                        "stored and validated; targets select services by name",
                    )],
                    &mut out,
                );
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn traffic_settings_without_effect_are_listed_and_tls_mode_is_not() {
        let rule = json!({
            "kind": "DestinationRule",
            "spec": {
                "host": "a",
                "trafficPolicy": {
                    "tls": {"mode": "ISTIO_MUTUAL"},
                    "connectionPool": {"tcp": {"maxConnections": 1}},
                    "portLevelSettings": [{"port": {"number": 80}, "outlierDetection": {"interval": "1s"}}]
                },
                "subsets": [{"name": "v1", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}}]
            }
        });
        let paths: Vec<String> = inert_fields(&rule).into_iter().map(|f| f.path).collect();
        assert_eq!(
            paths,
            [
                "spec.trafficPolicy.connectionPool",
                "spec.trafficPolicy.portLevelSettings[0].outlierDetection",
                "spec.subsets[0].trafficPolicy.loadBalancer",
            ]
        );
    }

    #[test]
    fn peer_authentication_has_no_inert_fields() {
        let pa = json!({"kind": "PeerAuthentication", "spec": {"mtls": {"mode": "STRICT"}}});
        assert!(inert_fields(&pa).is_empty());
    }
}
