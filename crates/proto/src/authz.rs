//! The AuthorizationPolicies a workload's configuration carries: compiling them with `ironmesh-authz`
//! into the policies the proxy evaluates, and the conversion the control plane uses to send them.

use std::collections::BTreeMap;

use ironmesh_authz::{AppliedPolicies, AuthzIndex, DEFAULT_ROOT_NAMESPACE, PolicyObject};

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
    fn a_bad_policy_is_refused_by_name() {
        let rejection =
            applied_policies(&workload(&[("custom", r#"{"action":"CUSTOM"}"#)])).unwrap_err();
        assert_eq!(rejection.resource, "authorizationpolicy/foo/custom");
        let rejection = applied_policies(&workload(&[("broken", "{not json")])).unwrap_err();
        assert_eq!(rejection.resource, "authorizationpolicy/foo/broken");
    }
}
