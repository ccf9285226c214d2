//! The AuthorizationPolicies a workload's configuration carries: the typed message the control plane
//! builds from a policy ironmesh-authz validated, and the one compile step that turns the received
//! messages back into the policies the proxy evaluates. Also the client TLS decisions both sides share.

use ironmesh_authz::{
    Action, AppliedPolicies, AuthorizationPolicy, ConditionSpec, OperationSpec, PolicyName,
    RuleSpec, SourceSpec,
};

use crate::pb;
use crate::pb::authorization_policy as wire;
use crate::validate::ConfigRejection;

/// Builds `$target` from `$value`, cloning the fields both name alike; each field list is written once,
/// for both directions.
macro_rules! same_fields {
    ($value:expr, $($target:ident)::+, [$($field:ident),*]) => {
        $($target)::+ { $($field: $value.$field.clone()),* }
    };
}

macro_rules! source {
    ($value:expr, $($target:ident)::+) => {
        same_fields!($value, $($target)::+, [
            principals, not_principals, request_principals, not_request_principals, namespaces,
            not_namespaces, service_accounts, not_service_accounts, trust_domains, not_trust_domains,
            ip_blocks, not_ip_blocks, remote_ip_blocks, not_remote_ip_blocks
        ])
    };
}

macro_rules! operation {
    ($value:expr, $($target:ident)::+) => {
        same_fields!($value, $($target)::+, [
            hosts, not_hosts, ports, not_ports, methods, not_methods, paths, not_paths
        ])
    };
}

macro_rules! condition {
    ($value:expr, $($target:ident)::+) => {
        same_fields!($value, $($target)::+, [key, values, not_values])
    };
}

/// The message for a policy the control plane validated and scoped to a workload.
pub fn policy_message(
    name: &PolicyName,
    policy: &AuthorizationPolicy,
    dry_run: bool,
) -> pb::AuthorizationPolicy {
    let action = match policy.action() {
        Action::Allow => wire::Action::Allow,
        Action::Deny => wire::Action::Deny,
        Action::Audit => wire::Action::Audit,
        Action::Custom => wire::Action::Custom,
    };
    let rules = policy
        .written_rules()
        .iter()
        .map(|rule| wire::Rule {
            from: rule.from.iter().map(|s| source!(s, wire::Source)).collect(),
            to: rule
                .to
                .iter()
                .map(|o| operation!(o, wire::Operation))
                .collect(),
            when: rule
                .when
                .iter()
                .map(|c| condition!(c, wire::Condition))
                .collect(),
        })
        .collect();
    pb::AuthorizationPolicy {
        namespace: name.namespace.to_string(),
        name: name.name.to_string(),
        action: action as i32,
        rules,
        dry_run,
    }
}

/// The resource name a NACK uses for a refused policy: `authorizationpolicy/<namespace>/<name>`.
pub fn policy_resource(policy: &pb::AuthorizationPolicy) -> String {
    format!("authorizationpolicy/{}/{}", policy.namespace, policy.name)
}

/// Validates and compiles one received policy with Istio's rules (ironmesh-authz, as apply does).
fn compile_policy(
    policy: &pb::AuthorizationPolicy,
) -> Result<(PolicyName, AuthorizationPolicy, bool), ConfigRejection> {
    let refuse = |reason: String| ConfigRejection {
        resource: policy_resource(policy),
        reason,
    };
    if policy.namespace.is_empty() || policy.name.is_empty() {
        return Err(refuse("namespace and name are required".into()));
    }
    let action = match wire::Action::try_from(policy.action) {
        Ok(wire::Action::Allow) => Action::Allow,
        Ok(wire::Action::Deny) => Action::Deny,
        Ok(wire::Action::Audit) => Action::Audit,
        Ok(wire::Action::Custom) => Action::Custom,
        Err(_) => {
            return Err(refuse(format!(
                "unknown action {}; expected ALLOW, DENY, AUDIT or CUSTOM",
                policy.action
            )));
        }
    };
    let rules = policy
        .rules
        .iter()
        .map(|rule| RuleSpec {
            from: rule.from.iter().map(|s| source!(s, SourceSpec)).collect(),
            to: rule
                .to
                .iter()
                .map(|o| operation!(o, OperationSpec))
                .collect(),
            when: rule
                .when
                .iter()
                .map(|c| condition!(c, ConditionSpec))
                .collect(),
        })
        .collect();
    let compiled =
        AuthorizationPolicy::compile(action, rules).map_err(|e| refuse(e.to_string()))?;
    let name = PolicyName {
        namespace: policy.namespace.as_str().into(),
        name: policy.name.as_str().into(),
    };
    Ok((name, compiled, policy.dry_run))
}

/// Compiles the workload's received policies, in the order received, into what the proxy evaluates. A
/// policy that does not compile fails the whole configuration, named in the NACK, so the proxy keeps
/// enforcing the last good set instead of a partial one.
pub fn compile_policies(workload: &pb::Workload) -> Result<AppliedPolicies, ConfigRejection> {
    let policies = workload
        .authorization_policies
        .iter()
        .map(compile_policy)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AppliedPolicies::from_scoped(policies))
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
}
