//! Semantic rules that a schema cannot express: Istio's own validation (MeshPolicy/Policy naming,
//! `portLevelMtls` needs a selector, MUTUAL needs certificates, ...) and the Kubernetes rules we rely on
//! (DNS-1123 names, Service ports, containers with names).

use serde_json::{Map, Value};

use super::FieldError;

/// Runs the semantic rules of `kind` on an object that already passed its schema.
pub(crate) fn check(kind: &str, object: &Map<String, Value>, errors: &mut Vec<FieldError>) {
    let spec = object.get("spec").unwrap_or(&Value::Null);
    let name = object
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    match kind {
        "MeshPolicy" => mesh_policy(name, spec, errors),
        "Policy" => policy(name, spec, errors),
        "PeerAuthentication" => peer_authentication(spec, errors),
        "DestinationRule" => destination_rule(spec, errors),
        "AuthorizationPolicy" => authorization_policy(object, spec, errors),
        "Sidecar" => sidecar(spec, errors),
        "Service" => service(spec, errors),
        "Deployment" => deployment(spec, errors),
        "Pod" => pod_spec("spec", spec, errors),
        _ => {}
    }
}

fn non_empty_list(value: Option<&Value>) -> bool {
    value
        .and_then(Value::as_array)
        .is_some_and(|items| !items.is_empty())
}

fn is_blank(value: Option<&Value>) -> bool {
    value
        .and_then(Value::as_str)
        .is_none_or(|s| s.trim().is_empty())
}

fn mesh_policy(name: &str, spec: &Value, errors: &mut Vec<FieldError>) {
    if name != "default" {
        errors.push(FieldError::new(
            "metadata.name",
            format!("found {name:?}, expected \"default\" (a MeshPolicy must be named default)"),
        ));
    }
    if non_empty_list(spec.get("targets")) {
        errors.push(FieldError::new(
            "spec.targets",
            "found targets, expected none (a MeshPolicy applies to the whole mesh; use a Policy to target services)",
        ));
    }
    legacy_targets(spec, errors);
}

fn policy(name: &str, spec: &Value, errors: &mut Vec<FieldError>) {
    let has_targets = non_empty_list(spec.get("targets"));
    if !has_targets && name != "default" {
        errors.push(FieldError::new(
            "metadata.name",
            format!(
                "found {name:?}, expected \"default\" (a Policy without targets is namespace-wide and must be named default; or add spec.targets)"
            ),
        ));
    }
    if has_targets && name == "default" {
        errors.push(FieldError::new(
            "metadata.name",
            "found \"default\", expected another name (a Policy with targets must not be named default)",
        ));
    }
    legacy_targets(spec, errors);
}

fn legacy_targets(spec: &Value, errors: &mut Vec<FieldError>) {
    let Some(targets) = spec.get("targets").and_then(Value::as_array) else {
        return;
    };
    for (index, target) in targets.iter().enumerate() {
        if is_blank(target.get("name")) {
            errors.push(FieldError::new(
                format!("spec.targets[{index}].name"),
                "missing, expected the short name of a service",
            ));
        }
        for (p, port) in target
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let has_number = port.get("number").is_some_and(|n| !n.is_null());
            let has_name = !is_blank(port.get("name"));
            if has_number == has_name {
                errors.push(FieldError::new(
                    format!("spec.targets[{index}].ports[{p}]"),
                    "expected exactly one of number or name",
                ));
            }
        }
    }
}

fn peer_authentication(spec: &Value, errors: &mut Vec<FieldError>) {
    let Some(port_level) = spec.get("portLevelMtls").and_then(Value::as_object) else {
        return;
    };
    let has_selector = spec
        .get("selector")
        .and_then(|s| s.get("matchLabels"))
        .and_then(Value::as_object)
        .is_some_and(|labels| !labels.is_empty());
    if !has_selector {
        errors.push(FieldError::new(
            "spec.portLevelMtls",
            "portLevelMtls requires a selector: add spec.selector.matchLabels for the workload",
        ));
    }
    if port_level.is_empty() {
        errors.push(FieldError::new(
            "spec.portLevelMtls",
            "found an empty map, expected at least one port",
        ));
    }
}

fn destination_rule(spec: &Value, errors: &mut Vec<FieldError>) {
    if is_blank(spec.get("host")) {
        errors.push(FieldError::new(
            "spec.host",
            "missing, expected the service host (e.g. httpbin, httpbin.foo.svc.cluster.local or *.local)",
        ));
    }
    traffic_policy("spec.trafficPolicy", spec.get("trafficPolicy"), errors);
    for (index, subset) in spec
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if is_blank(subset.get("name")) {
            errors.push(FieldError::new(
                format!("spec.subsets[{index}].name"),
                "missing, expected a subset name",
            ));
        }
        traffic_policy(
            &format!("spec.subsets[{index}].trafficPolicy"),
            subset.get("trafficPolicy"),
            errors,
        );
    }
}

fn traffic_policy(path: &str, policy: Option<&Value>, errors: &mut Vec<FieldError>) {
    let Some(policy) = policy else { return };
    client_tls(&format!("{path}.tls"), policy.get("tls"), errors);
    for (index, setting) in policy
        .get("portLevelSettings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let setting_path = format!("{path}.portLevelSettings[{index}]");
        if setting
            .get("port")
            .and_then(|p| p.get("number"))
            .is_none_or(Value::is_null)
        {
            errors.push(FieldError::new(
                format!("{setting_path}.port.number"),
                "missing, expected the service port number this setting applies to",
            ));
        }
        client_tls(&format!("{setting_path}.tls"), setting.get("tls"), errors);
    }
}

fn client_tls(path: &str, tls: Option<&Value>, errors: &mut Vec<FieldError>) {
    let Some(tls) = tls else { return };
    if tls.get("mode").and_then(Value::as_str) != Some("MUTUAL") {
        return;
    }
    if !is_blank(tls.get("credentialName")) {
        return;
    }
    for field in ["clientCertificate", "privateKey"] {
        if is_blank(tls.get(field)) {
            errors.push(FieldError::new(
                format!("{path}.{field}"),
                format!(
                    "missing, MUTUAL requires {field} (or use ISTIO_MUTUAL for mesh certificates)"
                ),
            ));
        }
    }
}

/// The engine the proxies enforce with is the judge: it applies Istio's `ValidateAuthorizationPolicy`
/// rules, and what it refuses would be NACKed by every proxy. The `istio.io/dry-run` annotation is checked
/// as Istio's `checkDryRunAnnotation` does (ALLOW/DENY only, a boolean value).
fn authorization_policy(object: &Map<String, Value>, spec: &Value, errors: &mut Vec<FieldError>) {
    match ironmesh_authz::AuthorizationPolicy::from_spec(spec) {
        Err(error) => errors.push(FieldError::new(error.path, error.message)),
        Ok(policy) => {
            let dry_run = object
                .get("metadata")
                .and_then(|m| m.get("annotations"))
                .and_then(|a| a.get(ironmesh_authz::DRY_RUN_ANNOTATION))
                .and_then(Value::as_str);
            if let Err(error) = policy.check_dry_run(dry_run) {
                errors.push(FieldError::new(error.path, error.message));
            }
        }
    }
}

/// A `Sidecar`: the outbound mode and Istio's `namespace/dnsName` egress hosts.
fn sidecar(spec: &Value, errors: &mut Vec<FieldError>) {
    if let Some(mode) = spec.pointer("/outboundTrafficPolicy/mode")
        && !matches!(mode.as_str(), Some("ALLOW_ANY" | "REGISTRY_ONLY"))
    {
        errors.push(FieldError::new(
            "spec.outboundTrafficPolicy.mode",
            format!("found {mode}, expected ALLOW_ANY or REGISTRY_ONLY"),
        ));
    }
    let listeners = spec.get("egress").and_then(Value::as_array);
    for (index, listener) in listeners.into_iter().flatten().enumerate() {
        let hosts = listener.get("hosts").and_then(Value::as_array);
        if hosts.is_none_or(|hosts| hosts.is_empty()) {
            errors.push(FieldError::new(
                format!("spec.egress[{index}].hosts"),
                "missing, expected a list of namespace/dnsName hosts such as \"./*\" or \"istio-system/*\"",
            ));
        }
        for (h, host) in hosts.into_iter().flatten().enumerate() {
            let well_formed = host
                .as_str()
                .and_then(|host| host.split_once('/'))
                .is_some_and(|(ns, dns)| !ns.is_empty() && !dns.is_empty() && !dns.contains('/'));
            if !well_formed {
                errors.push(FieldError::new(
                    format!("spec.egress[{index}].hosts[{h}]"),
                    format!(
                        "found {host}, expected namespace/dnsName (namespace `*`, `.` or a name; dnsName `*`, `*.suffix` or a FQDN)"
                    ),
                ));
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
