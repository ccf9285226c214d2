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

/// The conversions between the written `source`/`operation` (ironmesh-authz) and their messages, from the
/// engine's one list of each one's fields ([`ironmesh_authz::source_fields!`]).
macro_rules! conversions {
    ($spec:ident, $message:ident, $to_message:ident, $to_spec:ident;
     $($field:ident $name:literal $kind:ident),*) => {
        fn $to_message(value: &$spec) -> wire::$message {
            wire::$message { $($field: value.$field.clone()),* }
        }

        fn $to_spec(value: &wire::$message) -> $spec {
            $spec { $($field: value.$field.clone()),* }
        }
    };
}

macro_rules! source_conversions {
    ($($fields:tt)*) => {
        conversions!(SourceSpec, Source, source_message, source_spec; $($fields)*);
    };
}
ironmesh_authz::source_fields!(source_conversions);

macro_rules! operation_conversions {
    ($($fields:tt)*) => {
        conversions!(OperationSpec, Operation, operation_message, operation_spec; $($fields)*);
    };
}
ironmesh_authz::operation_fields!(operation_conversions);

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
            from: rule.from.iter().map(source_message).collect(),
            to: rule.to.iter().map(operation_message).collect(),
            when: rule
                .when
                .iter()
                .map(|c| wire::Condition {
                    key: c.key.clone(),
                    values: c.values.clone(),
                    not_values: c.not_values.clone(),
                })
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
            from: rule.from.iter().map(source_spec).collect(),
            to: rule.to.iter().map(operation_spec).collect(),
            when: rule
                .when
                .iter()
                .map(|c| ConditionSpec {
                    key: c.key.clone(),
                    values: c.values.clone(),
                    not_values: c.not_values.clone(),
                })
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

    /// A valid value of its own for the `n`th field, named `name`, so a field carried into another shows.
    fn value(name: &str, n: usize) -> Vec<String> {
        let lower = name.to_ascii_lowercase();
        vec![match lower.as_str() {
            _ if lower.ends_with("ipblocks") => format!("10.0.0.{n}/32"),
            _ if lower.ends_with("ports") => format!("{}", 8000 + n),
            _ if lower.ends_with("serviceaccounts") => format!("ns{n}/sa"),
            _ if lower.ends_with("paths") => format!("/path{n}"),
            _ => format!("value{n}"),
        }]
    }

    /// Every field of a source, an operation and a condition set, each to a value of its own, crosses the
    /// wire and the proxy's compile unchanged: the conversions cover the engine's whole field lists.
    #[test]
    fn every_written_field_crosses_the_wire() {
        let mut n = 0;
        let mut next = |name: &str| {
            n += 1;
            value(name, n)
        };
        macro_rules! filled {
            ($type:ident, $($field:ident $name:literal $kind:ident),*) => {
                $type { $($field: next($name),)* }
            };
        }
        macro_rules! source {
            ($($fields:tt)*) => { filled!(SourceSpec, $($fields)*) };
        }
        macro_rules! operation {
            ($($fields:tt)*) => { filled!(OperationSpec, $($fields)*) };
        }
        // Istio refuses serviceAccounts beside namespaces or principals: two sources carry them all.
        let mut by_account = ironmesh_authz::source_fields!(source);
        let mut by_name = by_account.clone();
        by_account.principals.clear();
        by_account.not_principals.clear();
        by_account.namespaces.clear();
        by_account.not_namespaces.clear();
        by_name.service_accounts.clear();
        by_name.not_service_accounts.clear();
        let rules = vec![RuleSpec {
            from: vec![by_name, by_account],
            to: vec![ironmesh_authz::operation_fields!(operation)],
            when: vec![ConditionSpec {
                key: "request.headers[x-token]".into(),
                values: next("values"),
                not_values: next("notValues"),
            }],
        }];
        let policy =
            AuthorizationPolicy::compile(Action::Deny, rules.clone()).expect("valid rules");
        let name = PolicyName {
            namespace: "foo".into(),
            name: "all-fields".into(),
        };
        let message = policy_message(&name, &policy, true);
        assert_eq!(
            message.rules[0].from[1].not_remote_ip_blocks,
            rules[0].from[1].not_remote_ip_blocks
        );
        assert_eq!(message.rules[0].to[0].not_paths, rules[0].to[0].not_paths);
        let (received, compiled, dry_run) = compile_policy(&message).expect("compiles");
        assert_eq!((received, dry_run), (name, true));
        assert_eq!(compiled.action(), Action::Deny);
        assert_eq!(compiled.written_rules(), rules.as_slice());
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
}
