//! The AuthorizationPolicy messages the tests push, built as the control plane builds them.

/// The typed message the control plane sends for policy `foo/<name>` with the JSON `spec`, validated as
/// apply validates it.
pub fn pushed_policy(
    name: &str,
    spec: &str,
    dry_run: bool,
) -> ironmesh_proto::pb::AuthorizationPolicy {
    let spec: serde_json::Value = serde_json::from_str(spec).unwrap();
    let policy = ironmesh_authz::AuthorizationPolicy::from_spec(&spec).unwrap();
    let name = ironmesh_authz::PolicyName {
        namespace: "foo".into(),
        name: name.into(),
    };
    ironmesh_proto::policy_message(&name, &policy, dry_run)
}
