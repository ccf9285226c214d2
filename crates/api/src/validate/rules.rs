//! Semantic rules that a schema cannot express: Istio's own validation (MeshPolicy/Policy naming,
//! `portLevelMtls` needs a selector, MUTUAL needs certificates, ...) and the Kubernetes rules we rely on
//! (DNS-1123 names, Service ports, containers with names).

use serde_json::{Map, Value};

use super::report::Report;
use super::{FieldError, Warning, networking, security};

/// Runs the semantic rules of `kind` on an object that already passed its schema: errors refuse the
/// object, warnings are Istio's for valid but suspect input.
pub(crate) fn check(
    kind: &str,
    object: &Map<String, Value>,
    errors: &mut Vec<FieldError>,
    warnings: &mut Vec<Warning>,
) {
    let spec = object.get("spec").unwrap_or(&Value::Null);
    let metadata = object.get("metadata");
    let name = metadata
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    // Objects without a namespace land in `default` (the store's rule), which is what `exportTo: [.]`
    // and `configmap://` credentials are compared with.
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let mut report = Report { errors, warnings };
    let r = &mut report;
    if matches!(kind, "PeerAuthentication" | "DestinationRule" | "Sidecar") {
        security::metadata_annotations(kind, &Value::Object(object.clone()), r);
    }
    match kind {
        "MeshPolicy" => security::legacy_policy(true, name, spec, r),
        "Policy" => security::legacy_policy(false, name, spec, r),
        "PeerAuthentication" => security::peer_authentication(spec, r),
        "DestinationRule" => networking::destination_rule(namespace, spec, r),
        "Sidecar" => networking::sidecar(namespace, spec, r),
        "AuthorizationPolicy" => authorization_policy(object, spec, r),
        "Service" => service(spec, r.errors),
        "Deployment" => deployment(spec, r.errors),
        "Pod" => pod_spec("spec", spec, r.errors),
        _ => {}
    }
}

fn is_blank(value: Option<&Value>) -> bool {
    value
        .and_then(Value::as_str)
        .is_none_or(|s| s.trim().is_empty())
}

/// The engine the proxies enforce with is the judge: it applies Istio's `ValidateAuthorizationPolicy`
/// rules, and what it refuses would be NACKed by every proxy. The `istio.io/dry-run` annotation is checked
/// as Istio's `checkDryRunAnnotation` does (ALLOW/DENY only, a boolean value); Istio's warnings for a
/// valid policy come from the engine too.
fn authorization_policy(object: &Map<String, Value>, spec: &Value, r: &mut Report) {
    match ironmesh_authz::AuthorizationPolicy::from_spec(spec) {
        Err(error) => r.error(error.path, error.message),
        Ok(policy) => {
            let dry_run = object
                .get("metadata")
                .and_then(|m| m.get("annotations"))
                .and_then(|a| a.get(ironmesh_authz::DRY_RUN_ANNOTATION))
                .and_then(Value::as_str);
            if let Err(error) = policy.check_dry_run(dry_run) {
                r.error(error.path, error.message);
            }
            for (path, message) in ironmesh_authz::validation_warnings(spec) {
                r.warn(path, message);
            }
        }
    }
}

fn service(spec: &Value, errors: &mut Vec<FieldError>) {
    let ports = spec.get("ports").and_then(Value::as_array);
    let several = ports.is_some_and(|p| p.len() > 1);
    for (index, port) in ports.into_iter().flatten().enumerate() {
        if port.get("port").is_none_or(Value::is_null) {
            errors.push(FieldError::new(
                format!("spec.ports[{index}].port"),
                "missing, expected a port number 1-65535",
            ));
        }
        if several && is_blank(port.get("name")) {
            errors.push(FieldError::new(
                format!("spec.ports[{index}].name"),
                "missing, a Service with several ports must name each of them",
            ));
        }
    }
}

fn deployment(spec: &Value, errors: &mut Vec<FieldError>) {
    let Some(template) = spec.get("template").filter(|t| t.is_object()) else {
        errors.push(FieldError::new(
            "spec.template",
            "missing, expected a pod template (metadata.labels and spec.containers)",
        ));
        return;
    };
    pod_spec(
        "spec.template.spec",
        template.get("spec").unwrap_or(&Value::Null),
        errors,
    );
    let template_labels = template
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object);
    if let Some(wanted) = spec
        .get("selector")
        .and_then(|s| s.get("matchLabels"))
        .and_then(Value::as_object)
    {
        let matches = wanted
            .iter()
            .all(|(k, v)| template_labels.and_then(|l| l.get(k)) == Some(v));
        if !matches {
            errors.push(FieldError::new(
                "spec.selector.matchLabels",
                "does not match spec.template.metadata.labels; make the template carry every selector label",
            ));
        }
    }
}

fn pod_spec(path: &str, spec: &Value, errors: &mut Vec<FieldError>) {
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(|c| c.is_empty()) {
        errors.push(FieldError::new(
            format!("{path}.containers"),
            "missing, expected at least one container",
        ));
    }
    for list in ["containers", "initContainers"] {
        for (index, container) in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let name = container.get("name").and_then(Value::as_str).unwrap_or("");
            if let Err(why) = dns1123_label(name) {
                errors.push(FieldError::new(format!("{path}.{list}[{index}].name"), why));
            }
        }
    }
}

/// A DNS-1123 label: 1–63 characters of `a-z0-9-`, starting and ending alphanumeric.
pub(crate) fn dns1123_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(
            "missing, expected a DNS-1123 label (lower-case letters, digits and '-')".into(),
        );
    }
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if name.len() > 63 || !ok_chars || !ok_ends {
        return Err(format!(
            "found {name:?}, expected a DNS-1123 label: at most 63 lower-case letters, digits or '-', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub(crate) fn dns1123_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("missing, expected a name".into());
    }
    if name.len() > 253 || name.split('.').any(|label| dns1123_label(label).is_err()) {
        return Err(format!(
            "found {name:?}, expected a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod authz_and_sidecar_tests {
    fn problems(yaml: &str) -> Vec<String> {
        match crate::load_documents("t.yaml", yaml) {
            Ok(_) => vec![],
            Err(error) => error
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect(),
        }
    }

    #[test]
    fn authorization_policies_the_engine_refuses_are_refused_at_apply_time() {
        let policy = |spec: &str| {
            format!(
                "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: foo}}\nspec: {spec}\n"
            )
        };
        assert!(
            problems(&policy(
                "{action: ALLOW, rules: [{from: [{source: {namespaces: [foo]}}]}]}"
            ))
            .is_empty()
        );
        // Istio accepts path templates, CUSTOM with a provider and targetRefs (pkg/config/validation).
        for accepted in [
            "{rules: [{to: [{operation: {paths: [\"/a/{*}\"]}}]}]}",
            "{action: CUSTOM, provider: {name: ext}, rules: [{}]}",
            "{action: DENY, targetRefs: [{kind: Service, group: \"\", name: httpbin}], rules: [{}]}",
            "{rules: [{from: [{source: {serviceAccounts: [foo/sleep]}}]}]}",
            "{rules: [{from: [{source: {trustDomains: [cluster.local]}}]}]}",
        ] {
            assert_eq!(
                problems(&policy(accepted)),
                Vec::<String>::new(),
                "{accepted}"
            );
        }
        let refused = problems(&policy(
            "{rules: [{to: [{operation: {paths: [\"/a/{**}/{*}\"]}}]}]}",
        ));
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].starts_with("spec.rules[0].to[0].operation.paths[0]"),
            "{refused:?}"
        );
        let refused = problems(&policy("{action: CUSTOM, rules: [{}]}"));
        assert!(refused[0].starts_with("spec.provider.name"), "{refused:?}");
    }

    #[test]
    fn the_dry_run_annotation_is_checked_as_istio_does() {
        let policy = |value: &str, action: &str| {
            format!(
                "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: foo, annotations: {{istio.io/dry-run: \"{value}\"}}}}\nspec: {{action: {action}, rules: [{{}}]}}\n"
            )
        };
        // pkg/config/validation TestValidateAuthorizationPolicy dry-run-* rows.
        assert!(problems(&policy("true", "ALLOW")).is_empty());
        assert!(problems(&policy("false", "DENY")).is_empty());
        let invalid = problems(&policy("foo", "ALLOW"));
        assert!(
            invalid[0].starts_with("metadata.annotations.istio.io/dry-run"),
            "{invalid:?}"
        );
        assert_eq!(problems(&policy("true", "AUDIT")).len(), 1);
        assert_eq!(
            problems(&policy("true", "CUSTOM, provider: {name: ext}")).len(),
            1
        );
    }

    #[test]
    fn sidecar_egress_hosts_need_istios_namespace_slash_host_form() {
        let sidecar = |spec: &str| {
            format!(
                "apiVersion: networking.istio.io/v1beta1\nkind: Sidecar\nmetadata: {{name: default, namespace: bar}}\nspec: {spec}\n"
            )
        };
        assert!(
            problems(&sidecar("{outboundTrafficPolicy: {mode: REGISTRY_ONLY}, egress: [{hosts: [\"./*\", \"istio-system/*\"]}]}"))
                .is_empty()
        );
        let refused = problems(&sidecar(
            "{outboundTrafficPolicy: {mode: BLOCK}, egress: [{hosts: [httpbin.foo]}]}",
        ));
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(
            refused[0].starts_with("spec.outboundTrafficPolicy.mode"),
            "{refused:?}"
        );
        assert!(
            refused[1].starts_with("spec.egress[0].hosts[0]"),
            "{refused:?}"
        );
    }
}
