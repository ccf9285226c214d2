//! The AuthorizationPolicies a workload's configuration carries: compiling them with `ironmesh-authz`
//! into the policies the proxy evaluates, and the conversion the control plane uses to send them.

use std::collections::BTreeMap;

use ironmesh_authz::{
    AppliedPolicies, AuthzIndex, DEFAULT_ROOT_NAMESPACE, DRY_RUN_ANNOTATION, PolicyObject,
};

use crate::pb;
use crate::validate::ConfigRejection;

/// The resource name a NACK uses for a refused policy: `authorizationpolicy/<namespace>/<name>`.
pub fn policy_resource(policy: &pb::AuthorizationPolicy) -> String {
    format!("authorizationpolicy/{}/{}", policy.namespace, policy.name)
}

impl From<&PolicyObject> for pb::AuthorizationPolicy {
    fn from(object: &PolicyObject) -> Self {
        pb::AuthorizationPolicy {
            namespace: object.namespace.clone(),
            name: object.name.clone(),
            creation_timestamp: object.creation_timestamp.clone().unwrap_or_default(),
            spec_json: object.spec.to_string(),
            annotations: object
                .annotations
                .iter()
                .filter(|(key, _)| key.as_str() == DRY_RUN_ANNOTATION)
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        }
    }
}

/// The stored form of a pushed policy; fails when `spec_json` is not JSON.
pub fn policy_object(policy: &pb::AuthorizationPolicy) -> Result<PolicyObject, ConfigRejection> {
    let spec = serde_json::from_str(&policy.spec_json).map_err(|error| ConfigRejection {
        resource: policy_resource(policy),
        reason: format!("spec is not JSON: {error}"),
    })?;
    Ok(PolicyObject {
        namespace: policy.namespace.clone(),
        name: policy.name.clone(),
        creation_timestamp: (!policy.creation_timestamp.is_empty())
            .then(|| policy.creation_timestamp.clone()),
        annotations: policy
            .annotations
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
        spec,
    })
}

/// Compiles the workload's pushed policies and keeps those whose scope covers it (namespace or root
/// namespace, selector). A policy the engine refuses fails the whole configuration, named in the NACK, so
/// the proxy keeps enforcing the last good set instead of a partial one.
pub fn applied_policies(workload: &pb::Workload) -> Result<AppliedPolicies, ConfigRejection> {
    if workload.authorization_policies.is_empty() {
        return Ok(AppliedPolicies::default());
    }
    let objects = workload
        .authorization_policies
        .iter()
        .map(policy_object)
        .collect::<Result<Vec<_>, _>>()?;
    let root = if workload.root_namespace.is_empty() {
        DEFAULT_ROOT_NAMESPACE
    } else {
        &workload.root_namespace
    };
    let index = AuthzIndex::new(objects, root).map_err(|error| {
        let ironmesh_authz::AuthzError::InvalidPolicy {
            namespace, name, ..
        } = &error;
        let resource = format!("authorizationpolicy/{namespace}/{name}");
        ConfigRejection {
            resource,
            reason: error.to_string(),
        }
    })?;
    let labels: BTreeMap<String, String> = workload
        .labels
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    Ok(index.policies_for(&workload.namespace, &labels))
}

/// Whether a client sidecar opens mTLS to `endpoint` for `port`, as the data path decides it: ISTIO_MUTUAL
/// always, AUTO (no DestinationRule TLS) when auto mTLS is on and the endpoint's sidecar accepts mTLS,
/// never otherwise. The proxy's dialer and `ironmesh authz check` both call this.
pub fn client_uses_mtls(port: &pb::ServicePort, endpoint: &pb::Endpoint, auto_mtls: bool) -> bool {
    let mode = port.tls.as_ref().map_or(0, |tls| tls.mode);
    match pb::ClientTlsMode::try_from(mode) {
        Ok(pb::ClientTlsMode::IstioMutual) => true,
        Ok(pb::ClientTlsMode::Auto) => auto_mtls && endpoint.mtls_ready,
        _ => false,
    }
}

/// The SNI a client sidecar sends with mTLS on `port`: the DestinationRule's `tls.sni`, else Envoy's
/// cluster name `outbound_.<port>_._.<service FQDN>` (as Istio sets it for ISTIO_MUTUAL and auto mTLS).
pub fn client_sni(service: &pb::Service, port: &pb::ServicePort) -> String {
    port.tls
        .as_ref()
        .map(|tls| tls.sni.clone())
        .filter(|sni| !sni.is_empty())
        .unwrap_or_else(|| format!("outbound_.{}_._.{}", port.port, service.hostname))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(specs: &[(&str, &str)]) -> pb::Workload {
        pb::Workload {
            name: "httpbin-1".into(),
            namespace: "foo".into(),
            labels: [("app".to_owned(), "httpbin".to_owned())].into(),
            authorization_policies: specs
                .iter()
                .map(|(name, spec)| pb::AuthorizationPolicy {
                    namespace: "foo".into(),
                    name: (*name).into(),
                    creation_timestamp: String::new(),
                    spec_json: (*spec).into(),
                    annotations: Default::default(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn pushed_policies_compile_for_the_workload() {
        let applied = applied_policies(&workload(&[(
            "allow-foo",
            r#"{"action":"ALLOW","rules":[{"from":[{"source":{"namespaces":["foo"]}}]}]}"#,
        )]))
        .unwrap();
        let names: Vec<String> = applied.policies().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, ["foo/allow-foo"]);
    }

    #[test]
    fn the_dry_run_annotation_travels_with_the_policy() {
        let object = PolicyObject {
            namespace: "foo".into(),
            name: "p".into(),
            creation_timestamp: None,
            annotations: [
                (DRY_RUN_ANNOTATION.to_owned(), "true".to_owned()),
                (
                    "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
                    "{}".to_owned(),
                ),
            ]
            .into(),
            spec: serde_json::json!({"action": "DENY", "rules": [{}]}),
        };
        let pushed = pb::AuthorizationPolicy::from(&object);
        assert_eq!(pushed.annotations.len(), 1);
        let back = policy_object(&pushed).unwrap();
        assert_eq!(
            back.annotations.get(DRY_RUN_ANNOTATION).map(String::as_str),
            Some("true")
        );
    }

    #[test]
    fn the_client_sni_is_envoys_cluster_name_unless_the_rule_sets_one() {
        let service = pb::Service {
            hostname: "httpbin.foo.svc.cluster.local".into(),
            ..Default::default()
        };
        let mut port = pb::ServicePort {
            port: 8000,
            tls: Some(pb::ClientTls::default()),
            ..Default::default()
        };
        assert_eq!(
            client_sni(&service, &port),
            "outbound_.8000_._.httpbin.foo.svc.cluster.local"
        );
        port.tls.as_mut().unwrap().sni = "custom.example".into();
        assert_eq!(client_sni(&service, &port), "custom.example");
    }

    #[test]
    fn a_bad_policy_is_refused_by_name() {
        let rejection =
            applied_policies(&workload(&[("custom", r#"{"action":"CUSTOM"}"#)])).unwrap_err();
        assert_eq!(rejection.resource, "authorizationpolicy/foo/custom");
        assert!(
            rejection.reason.contains("CUSTOM action without `rules`"),
            "{}",
            rejection.reason
        );
        let rejection = applied_policies(&workload(&[("broken", "{not json")])).unwrap_err();
        assert_eq!(rejection.resource, "authorizationpolicy/foo/broken");
    }
}
