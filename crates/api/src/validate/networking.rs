//! Istio's validation of `DestinationRule` and `Sidecar` (networking.istio.io v1alpha3/v1beta1/v1), rule
//! for rule: istio/istio `pkg/config/validation/validation.go` (`ValidateDestinationRule`,
//! `validateTrafficPolicy`, `validateOutlierDetection`, `validateConnectionPool`, `validateLoadBalancer`,
//! `validatePortTrafficPolicies`, `validateTunnelSettings`, `validateExportTo`, `validateSubset`,
//! `ValidateSidecar`, `validateTLSOptions`, `validateSidecarOutboundTrafficPolicy`, ...) and
//! `pkg/config/validation/agent/validation.go` (`ValidateTLS`, `ValidateLocalityLbSetting`,
//! `ValidateZoneAwareLbSetting`, `ValidateNamespaceSlashWildcardHostname`). Every field is checked even
//! where ironmesh does not act on it (connection pools, outlier detection, load balancing are stored only).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::Value;

use super::names::{
    is_dns1123_label, is_http_protocol, is_ip_address, is_known_protocol, is_tls_protocol,
    split_host_port, validate_fqdn, validate_label_key, validate_label_value,
    validate_unix_address, validate_wildcard_domain,
};
use super::report::{Report, field, flag, int, is_set, list, strings, text, uint};
use crate::yaml::{join_index, join_key};

// --- DestinationRule --------------------------------------------------------------------------------

/// `ValidateDestinationRule`. `namespace` is the rule's own (for `exportTo: [.]` and `configmap://`).
pub(crate) fn destination_rule(namespace: &str, spec: &Value, r: &mut Report) {
    let host = text(spec, "host");
    if host.is_empty() {
        r.error(
            "spec.host",
            "missing, expected the service host (e.g. httpbin, httpbin.foo.svc.cluster.local or *.local)",
        );
    } else if let Err(why) = validate_wildcard_domain(host) {
        r.error(
            "spec.host",
            format!("found {host:?}, expected a host name, optionally with a leading wildcard label: {why}"),
        );
    }
    traffic_policy(
        namespace,
        "spec.trafficPolicy",
        field(spec, "trafficPolicy"),
        r,
    );
    let mut names = HashSet::new();
    for (index, subset) in list(spec, "subsets").iter().enumerate() {
        let path = join_index("spec.subsets", index);
        if subset.is_null() {
            r.error(
                path,
                "found null, expected a subset (subset may not be null)",
            );
            continue;
        }
        let name = text(subset, "name");
        if !names.insert(name) {
            r.error(
                join_key(&path, "name"),
                format!("found {name:?} again, expected unique subset names (duplicate subset names: {name})"),
            );
        }
        subset_name(&join_key(&path, "name"), name, r);
        if let Some(labels) = field(subset, "labels").and_then(Value::as_object) {
            for (key, value) in labels {
                let label_path = join_key(&join_key(&path, "labels"), key);
                if let Err(why) = validate_label_key(key) {
                    r.error(
                        &label_path,
                        format!("{why}: expected a Kubernetes label name"),
                    );
                }
                if let Err(why) = validate_label_value(value.as_str().unwrap_or_default()) {
                    r.error(
                        &label_path,
                        format!("{why}: expected a Kubernetes label value"),
                    );
                }
            }
        }
        traffic_policy(
            namespace,
            &join_key(&path, "trafficPolicy"),
            field(subset, "trafficPolicy"),
            r,
        );
    }
    let has_selector = field(spec, "workloadSelector").is_some();
    export_to(namespace, spec, has_selector, r);
    if workload_selector(
        "spec.workloadSelector",
        field(spec, "workloadSelector"),
        "matchLabels",
        r,
    ) {
        r.warn(
            "spec.workloadSelector",
            "workload selector specified without labels",
        );
    }
}

/// `validateSubsetName`: a DNS-1123 label.
fn subset_name(path: &str, name: &str, r: &mut Report) {
    if name.is_empty() {
        r.error(path, "missing, expected a subset name (a DNS-1123 label)");
    } else if !is_dns1123_label(name) {
        r.error(
            path,
            format!("found {name:?}, expected a DNS-1123 label: letters, digits and '-', starting and ending with a letter or digit"),
        );
    }
}

/// `validateWorkloadSelector` (security/type `matchLabels`) and `ValidateAlphaWorkloadSelector`
/// (networking `labels`): no empty keys, no wildcards, and a warning when no labels are given.
/// Returns whether the selector was present but empty.
pub(crate) fn workload_selector(
    path: &str,
    selector: Option<&Value>,
    labels_field: &str,
    r: &mut Report,
) -> bool {
    let Some(selector) = selector else {
        return false;
    };
    let labels = field(selector, labels_field).and_then(Value::as_object);
    for (key, value) in labels.into_iter().flatten() {
        let value = value.as_str().unwrap_or_default();
        let label_path = join_key(&join_key(path, labels_field), key);
        if key.is_empty() {
            r.error(
                &label_path,
                format!("found an empty key, expected a label name (empty key is not supported in selector: \"={value}\")"),
            );
        }
        if key.contains('*') || value.contains('*') {
            r.error(
                &label_path,
                format!("found {key}={value}, expected exact labels (wildcard is not supported in selector)"),
            );
        }
    }
    labels.is_none_or(|l| l.is_empty())
}

/// `validateExportTo` for a non-ServiceEntry kind.
fn export_to(namespace: &str, spec: &Value, dr_with_selector: bool, r: &mut Report) {
    let entries: Vec<&str> = strings(spec, "exportTo").collect();
    if entries.is_empty() {
        return;
    }
    let mut seen = BTreeSet::new();
    for (index, entry) in entries.iter().enumerate() {
        let path = join_index("spec.exportTo", index);
        let key = if *entry == "." { namespace } else { entry };
        if seen.contains(key) {
            if key != *entry {
                r.error(
                    path,
                    format!("found \".\" and the current namespace {namespace}, expected each namespace once (duplicate entries in exportTo)"),
                );
            } else {
                r.error(
                    path,
                    format!("found {entry:?} again, expected each namespace once (duplicate entries in exportTo)"),
                );
            }
            continue;
        }
        match key {
            "." | "*" => {
                seen.insert(key);
            }
            "~" => r.error(
                path,
                "found \"~\", expected \".\", \"*\" or a namespace (exportTo ~ (none) is not allowed for Istio configuration objects)",
            ),
            _ if is_dns1123_label(key) => {
                seen.insert(key);
            }
            _ => r.error(
                path,
                format!("found {entry:?}, expected \".\", \"*\" or a namespace name (a DNS-1123 label)"),
            ),
        }
    }
    if dr_with_selector && !seen.is_empty() {
        if seen.contains(namespace) {
            if seen.len() > 1 {
                r.error(
                    "spec.exportTo",
                    "a destination rule with a workload selector cannot have multiple entries in exportTo: export it to its own namespace only",
                );
            }
        } else {
            r.error(
                "spec.exportTo",
                "a destination rule with a workload selector cannot have exportTo beyond the current namespace: use [\".\"] or remove exportTo",
            );
        }
    }
    if seen.contains("*") && entries.len() > 1 {
        r.error(
            "spec.exportTo",
            "cannot have both public (*) and non-public exportTo values for a resource: \"*\" already exports everywhere",
        );
    }
}

/// `validateTrafficPolicy`.
fn traffic_policy(namespace: &str, path: &str, policy: Option<&Value>, r: &mut Report) {
    let Some(policy) = policy else { return };
    let fields = [
        "outlierDetection",
        "connectionPool",
        "loadBalancer",
        "tls",
        "portLevelSettings",
        "tunnel",
        "proxyProtocol",
        "retryBudget",
    ];
    if !fields.iter().any(|f| is_set(policy, f)) {
        r.error(
            path,
            format!(
                "found an empty traffic policy, expected at least one of {} (traffic policy must have at least one field)",
                fields.join(", ")
            ),
        );
        return;
    }
    if is_set(policy, "tunnel") && is_set(policy, "proxyProtocol") {
        r.error(
            path,
            "found both tunnel and proxyProtocol, expected at most one (tunnel and proxyProtocol must not be set together)",
        );
        return;
    }
    shared_policy_fields(namespace, path, policy, r);
    for (index, setting) in list(policy, "portLevelSettings").iter().enumerate() {
        port_traffic_policy(
            namespace,
            &join_index(&join_key(path, "portLevelSettings"), index),
            setting,
            r,
        );
    }
    if let Some(tunnel) = field(policy, "tunnel") {
        tunnel_settings(&join_key(path, "tunnel"), tunnel, r);
    }
}

/// The fields a traffic policy and a port-level setting share: outlier detection, connection pool, load
/// balancer (which needs to know whether outlier detection is set) and client TLS.
fn shared_policy_fields(namespace: &str, path: &str, policy: &Value, r: &mut Report) {
    let outlier = field(policy, "outlierDetection");
    outlier_detection(&join_key(path, "outlierDetection"), outlier, r);
    connection_pool(
        &join_key(path, "connectionPool"),
        field(policy, "connectionPool"),
        r,
    );
    load_balancer(
        &join_key(path, "loadBalancer"),
        field(policy, "loadBalancer"),
        outlier.is_some(),
        r,
    );
    client_tls(namespace, &join_key(path, "tls"), field(policy, "tls"), r);
}

/// `validatePortTrafficPolicies`, one entry.
fn port_traffic_policy(namespace: &str, path: &str, setting: &Value, r: &mut Report) {
    if setting.is_null() {
        r.error(
            path,
            "found null, expected a port traffic policy (traffic policy may not be null)",
        );
        return;
    }
    if field(setting, "port")
        .and_then(|p| field(p, "number"))
        .is_none()
    {
        r.error(
            join_key(&join_key(path, "port"), "number"),
            "missing, expected the service port number this setting applies to (portTrafficPolicy must have valid port)",
        );
    }
    let fields = ["outlierDetection", "connectionPool", "loadBalancer", "tls"];
    if !fields.iter().any(|f| is_set(setting, f)) {
        r.error(
            path,
            "found only a port, expected at least one of outlierDetection, connectionPool, loadBalancer, tls (port traffic policy must have at least one field)",
        );
        return;
    }
    shared_policy_fields(namespace, path, setting, r);
}

/// `validateTunnelSettings`.
fn tunnel_settings(path: &str, tunnel: &Value, r: &mut Report) {
    let protocol = text(tunnel, "protocol");
    if !matches!(protocol, "" | "CONNECT" | "POST") {
        r.error(
            join_key(path, "protocol"),
            format!("found {protocol:?}, expected CONNECT or POST"),
        );
    }
    let host = text(tunnel, "targetHost");
    if let Err(why) = validate_fqdn(host)
        && !is_ip_address(host)
    {
        r.error(
            join_key(path, "targetHost"),
            format!("found {host:?}, expected a valid FQDN or IP address ({why})"),
        );
    }
    let port = uint(tunnel, "targetPort");
    if !(1..=65535).contains(&port) {
        r.error(
            join_key(path, "targetPort"),
            format!("found {port}, expected a port number 1-65535 (tunnel target port is invalid)"),
        );
    }
}

/// `ValidatePercent`.
fn percent(path: String, value: i64, r: &mut Report) {
    if !(0..=100).contains(&value) {
        r.error(path, format!("found {value}, expected a percentage 0-100"));
    }
}

/// `validateOutlierDetection`.
fn outlier_detection(path: &str, outlier: Option<&Value>, r: &mut Report) {
    let Some(outlier) = outlier else { return };
    r.duration(
        &join_key(path, "baseEjectionTime"),
        field(outlier, "baseEjectionTime"),
    );
    if int(outlier, "consecutiveErrors") != 0 {
        r.warn(
            join_key(path, "consecutiveErrors"),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
        );
    }
    if !flag(outlier, "splitExternalLocalOriginErrors")
        && uint(outlier, "consecutiveLocalOriginFailures") > 0
    {
        r.error(
            join_key(path, "consecutiveLocalOriginFailures"),
            "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false: set splitExternalLocalOriginErrors: true",
        );
    }
    r.duration(&join_key(path, "interval"), field(outlier, "interval"));
    percent(
        join_key(path, "maxEjectionPercent"),
        int(outlier, "maxEjectionPercent"),
        r,
    );
    percent(
        join_key(path, "minHealthPercent"),
        int(outlier, "minHealthPercent"),
        r,
    );
}

/// `validateConnectionPool`.
pub(crate) fn connection_pool(path: &str, pool: Option<&Value>, r: &mut Report) {
    let Some(pool) = pool else { return };
    let http = field(pool, "http");
    let tcp = field(pool, "tcp");
    if http.is_none() && tcp.is_none() {
        r.error(
            path,
            "found an empty connection pool, expected tcp or http settings (connection pool must have at least one field)",
        );
        return;
    }
    let non_negative = |r: &mut Report, settings: &Value, base: &str, key: &str| {
        let value = int(settings, key);
        if value < 0 {
            r.error(
                join_key(base, key),
                format!("found {value}, expected a non-negative number"),
            );
        }
    };
    if let Some(http) = http {
        let base = join_key(path, "http");
        for key in [
            "http1MaxPendingRequests",
            "http2MaxRequests",
            "maxRequestsPerConnection",
            "maxRetries",
            "maxConcurrentStreams",
        ] {
            non_negative(r, http, &base, key);
        }
        r.duration(&join_key(&base, "idleTimeout"), field(http, "idleTimeout"));
        if text(http, "h2UpgradePolicy") == "UPGRADE" && flag(http, "useClientProtocol") {
            r.error(
                join_key(&base, "useClientProtocol"),
                "found true with h2UpgradePolicy UPGRADE, expected false (use client protocol must not be true when H2UpgradePolicy is UPGRADE)",
            );
        }
        if let Some(keepalive) = field(http, "http2KeepAlive") {
            let base = join_key(&base, "http2KeepAlive");
            for key in ["interval", "timeout"] {
                match field(keepalive, key) {
                    None => r.error(
                        join_key(&base, key),
                        format!("missing, expected a duration (http2 keepalive {key} is required)"),
                    ),
                    Some(value) => r.duration(&join_key(&base, key), Some(value)),
                }
            }
        }
    }
    if let Some(tcp) = tcp {
        let base = join_key(path, "tcp");
        non_negative(r, tcp, &base, "maxConnections");
        r.duration(
            &join_key(&base, "connectTimeout"),
            field(tcp, "connectTimeout"),
        );
        r.duration(
            &join_key(&base, "maxConnectionDuration"),
            field(tcp, "maxConnectionDuration"),
        );
        // A zero idle timeout disables it, so it is exempt from the 1ms minimum.
        let idle = field(tcp, "idleTimeout");
        let idle_ms = idle
            .and_then(Value::as_str)
            .and_then(super::shape::parse_duration)
            .map(|ns| ns / 1_000_000);
        if idle_ms != Some(0) {
            r.duration(&join_key(&base, "idleTimeout"), idle);
        }
        if let Some(keepalive) = field(tcp, "tcpKeepalive") {
            let base = join_key(&base, "tcpKeepalive");
            r.duration(&join_key(&base, "time"), field(keepalive, "time"));
            r.duration(&join_key(&base, "interval"), field(keepalive, "interval"));
        }
    }
}

/// Envoy's primality test for Maglev table sizes (as Istio's `isPrime` copies it).
fn is_prime(x: u64) -> bool {
    if x != 0 && x < 4 {
        return true;
    }
    if x & 1 == 0 {
        return false;
    }
    let limit = (x as f64).sqrt() as u64;
    let mut factor = 3;
    while factor <= limit {
        if x.is_multiple_of(factor) {
            return false;
        }
        factor += 2;
    }
    true
}

/// At most one field of a protobuf `oneof` may be set; Istio's unmarshaller refuses the object otherwise.
fn one_of(path: &str, message: &Value, fields: &[&str], r: &mut Report) -> bool {
    let set: Vec<&str> = fields
        .iter()
        .copied()
        .filter(|f| field(message, f).is_some())
        .collect();
    if set.len() > 1 {
        r.error(
            path,
            format!(
                "found {}, expected at most one of {} (they are alternatives)",
                set.join(" and "),
                fields.join(", ")
            ),
        );
        return false;
    }
    true
}

/// `validateLoadBalancer`.
fn load_balancer(path: &str, lb: Option<&Value>, has_outlier: bool, r: &mut Report) {
    let Some(lb) = lb else { return };
    one_of(path, lb, &["simple", "consistentHash"], r);
    if let Some(hash) = field(lb, "consistentHash") {
        let base = join_key(path, "consistentHash");
        one_of(
            &base,
            hash,
            &[
                "httpHeaderName",
                "httpCookie",
                "useSourceIp",
                "httpQueryParameterName",
            ],
            r,
        );
        let algorithm_ok = one_of(&base, hash, &["ringHash", "maglev"], r);
        if let Some(cookie) = field(hash, "httpCookie") {
            let cookie_path = join_key(&base, "httpCookie");
            if text(cookie, "name").is_empty() {
                r.error(
                    join_key(&cookie_path, "name"),
                    "missing, expected the cookie name (name required for HttpCookie)",
                );
            }
            let mut names = HashSet::new();
            for (index, attribute) in list(cookie, "attributes").iter().enumerate() {
                let attr_path = join_key(
                    &join_index(&join_key(&cookie_path, "attributes"), index),
                    "name",
                );
                let name = text(attribute, "name");
                if name.is_empty() {
                    r.error(attr_path, "missing, expected an attribute name (cookie attribute name cannot be empty)");
                } else if !names.insert(name) {
                    r.error(
                        attr_path,
                        format!("found {name:?} again, expected unique names (duplicate cookie attribute name)"),
                    );
                }
            }
        }
        let has_algorithm = is_set(hash, "ringHash") || is_set(hash, "maglev");
        if uint(hash, "minimumRingSize") != 0 {
            r.warn(
                join_key(&base, "minimumRingSize"),
                "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead",
            );
            if has_algorithm && algorithm_ok {
                r.error(
                    join_key(&base, "minimumRingSize"),
                    "found minimumRingSize with ringHash or maglev, expected only one (only one of MinimumRingSize or Maglev/Ringhash can be specified)",
                );
            }
        }
        if let Some(maglev) = field(hash, "maglev") {
            let size = uint(maglev, "tableSize");
            let size_path = join_key(&join_key(&base, "maglev"), "tableSize");
            if size == 0 {
                r.error(
                    &size_path,
                    "missing, expected a prime table size (tableSize must be set for maglev)",
                );
            }
            if size >= 5_000_011 {
                r.error(
                    &size_path,
                    format!("found {size}, expected less than 5000011"),
                );
            }
            if !is_prime(size) {
                r.error(&size_path, format!("found {size}, expected a prime number (tableSize must be a prime number for maglev)"));
            }
        }
    }
    let locality = field(lb, "localityLbSetting");
    let zone_aware = field(lb, "zoneAwareLbSetting");
    if locality.is_some() && zone_aware.is_some() {
        r.error(
            path,
            "found localityLbSetting and zoneAwareLbSetting, expected only one of them",
        );
    }
    if let Some(locality) = locality {
        locality_lb_setting(
            &join_key(path, "localityLbSetting"),
            locality,
            has_outlier,
            r,
        );
    }
    if let Some(zone_aware) = zone_aware {
        zone_aware_lb_setting(
            &join_key(path, "zoneAwareLbSetting"),
            zone_aware,
            has_outlier,
            r,
        );
    }
    if let Some(warmup) = field(lb, "warmup") {
        let base = join_key(path, "warmup");
        match field(warmup, "duration") {
            None => r.error(
                join_key(&base, "duration"),
                "missing, expected a duration (duration is required)",
            ),
            Some(value) => r.duration(&join_key(&base, "duration"), Some(value)),
        }
        let minimum = field(warmup, "minimumPercent")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        if minimum > 100.0 {
            r.error(
                join_key(&base, "minimumPercent"),
                format!("found {minimum}, expected at most 100"),
            );
        }
        if let Some(aggression) = field(warmup, "aggression").and_then(Value::as_f64)
            && aggression <= 0.0
        {
            r.error(
                join_key(&base, "aggression"),
                format!("found {aggression}, expected a number greater than 0"),
            );
        }
    }
}

const TOPOLOGY_LABELS: [&str; 3] = [
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

/// `ValidateLocalityLbSetting` (it stops at the first problem of several kinds, as Istio's does).
fn locality_lb_setting(path: &str, lb: &Value, has_outlier: bool, r: &mut Report) {
    let distribute = list(lb, "distribute");
    let failover = list(lb, "failover");
    let priority: Vec<&str> = strings(lb, "failoverPriority").collect();
    if !distribute.is_empty() && !failover.is_empty() {
        r.error(path, "found distribute and failover, expected only one (can not simultaneously specify 'distribute' and 'failover')");
        return;
    }
    if !failover.is_empty()
        && let Some(label) = priority.iter().find(|p| TOPOLOGY_LABELS.contains(p))
    {
        r.error(
            join_key(path, "failoverPriority"),
            format!("found topology label {label:?} with failover, expected other labels (can not simultaneously set 'failover' and topology label '{label}' in 'failover_priority')"),
        );
        return;
    }
    let mut sources = Vec::new();
    for (index, entry) in distribute.iter().enumerate() {
        let entry_path = join_index(&join_key(path, "distribute"), index);
        sources.push(text(entry, "from").to_string());
        let mut total: u64 = 0;
        let mut destinations = Vec::new();
        for (locality, weight) in field(entry, "to")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            destinations.push(locality.clone());
            let weight = super::shape::as_uint(weight).unwrap_or(0);
            if !(1..=100).contains(&weight) {
                r.error(
                    join_key(&join_key(&entry_path, "to"), locality),
                    format!("found {weight}, expected a locality weight 1-100"),
                );
                return;
            }
            total += weight;
        }
        if total != 100 {
            r.error(
                join_key(&entry_path, "to"),
                format!("found weights adding up to {total}, expected 100 (total locality weight {total} != 100)"),
            );
            return;
        }
        if let Err(why) = localities(&destinations) {
            r.error(join_key(&entry_path, "to"), why);
        }
    }
    if let Err(why) = localities(&sources) {
        r.error(join_key(path, "distribute"), why);
    }
    if (!failover.is_empty() || !priority.is_empty()) && !has_outlier {
        r.warn(
            path,
            "outlier detection policy must be provided for failover",
        );
    }
    for (index, entry) in failover.iter().enumerate() {
        let entry_path = join_index(&join_key(path, "failover"), index);
        let (from, to) = (text(entry, "from"), text(entry, "to"));
        if from == to {
            r.error(&entry_path, format!("found from and to both {from:?}, expected different regions (locality lb failover settings must specify different regions)"));
        }
        if from.contains('/') || to.contains('/') {
            r.error(&entry_path, "found a zone or subzone, expected regions only (locality lb failover only specify region)");
        }
        if from.contains('*') || to.contains('*') {
            r.error(&entry_path, "found '*', expected region names (locality lb failover region should not contain '*' wildcard)");
        }
    }
}

/// `ValidateZoneAwareLbSetting`.
fn zone_aware_lb_setting(path: &str, lb: &Value, has_outlier: bool, r: &mut Report) {
    let priority: Vec<&str> = strings(lb, "failoverPriority").collect();
    for label in priority.iter().filter(|p| TOPOLOGY_LABELS.contains(p)) {
        r.error(
            join_key(path, "failoverPriority"),
            format!("found topology label {label:?}, expected other labels ('failover_priority' for zone aware lb must not use topology label '{label}'; region- and zone-level routing are handled automatically)"),
        );
    }
    let failover = list(lb, "failover");
    if (!failover.is_empty() || !priority.is_empty()) && !has_outlier {
        r.warn(
            path,
            "outlier detection policy must be provided for failover",
        );
    }
    for (index, entry) in failover.iter().enumerate() {
        let entry_path = join_index(&join_key(path, "failover"), index);
        let (from, to) = (text(entry, "from"), text(entry, "to"));
        if from == to {
            r.error(
                &entry_path,
                format!("found from and to both {from:?}, expected different regions"),
            );
        }
        if from.contains('/') || to.contains('/') {
            r.error(&entry_path, "found a zone or subzone, expected regions only (zone and subzone failover are handled automatically)");
        }
        if from.contains('*') || to.contains('*') {
            r.error(&entry_path, "found '*', expected region names (zone aware lb failover region should not contain '*' wildcard)");
        }
    }
}

/// `validateLocalities`: `region[/zone[/subzone]]`, a single trailing `*` at most, no overlaps.
fn localities(localities: &[String]) -> Result<(), String> {
    // region -> zone -> subzones; "*" marks "everything below".
    let mut seen: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let overlap = |l: &str| format!("locality {l} overlap with previous specified ones");
    for locality in localities {
        let stars = locality.matches('*').count();
        if stars > 1 || (stars == 1 && !locality.ends_with('*')) {
            return Err(format!(
                "locality {locality} wildcard '*' number can not exceed 1 and must be in the end"
            ));
        }
        if seen.contains_key("*") {
            return Err(overlap(locality));
        }
        let items: Vec<&str> = locality.splitn(3, '/').collect();
        if items.iter().any(|i| i.is_empty()) {
            return Err(format!(
                "locality {locality} must not contain empty region/zone/subzone info"
            ));
        }
        let region = items[0].to_string();
        match items.len() {
            1 => {
                if seen.contains_key(&region) {
                    return Err(overlap(locality));
                }
                seen.insert(
                    region,
                    BTreeMap::from([("*".to_string(), BTreeSet::from(["*".to_string()]))]),
                );
            }
            2 => {
                let zone = items[1].to_string();
                let zones = seen.entry(region).or_default();
                if zones.contains_key("*") || zones.contains_key(&zone) {
                    return Err(overlap(locality));
                }
                zones.insert(zone, BTreeSet::from(["*".to_string()]));
            }
            _ => {
                let (zone, subzone) = (items[1].to_string(), items[2].to_string());
                let zones = seen.entry(region).or_default();
                if zones.contains_key("*") {
                    return Err(overlap(locality));
                }
                let subzones = zones.entry(zone).or_default();
                if subzones.contains("*") || subzones.contains(&subzone) {
                    return Err(overlap(locality));
                }
                subzones.insert(subzone);
            }
        }
    }
    Ok(())
}

/// `ValidateTLS` (client side: DestinationRule `tls`).
fn client_tls(namespace: &str, path: &str, tls: Option<&Value>, r: &mut Report) {
    let Some(tls) = tls else { return };
    let mode = match text(tls, "mode") {
        "" => "DISABLE",
        mode => mode,
    };
    let credential = text(tls, "credentialName");
    if let Some(rest) = credential.strip_prefix("configmap://") {
        let (ns, name) = match rest.split_once('/') {
            Some((ns, name)) => (ns, name),
            None => (namespace, rest),
        };
        if name.is_empty() || name.contains('/') || ns.is_empty() {
            r.error(
                join_key(path, "credentialName"),
                format!(
                    "found {credential:?}, expected configmap://NAME or configmap://NAMESPACE/NAME"
                ),
            );
        } else if ns != namespace {
            r.error(
                join_key(path, "credentialName"),
                format!("found {credential:?}, expected a ConfigMap in the rule's own namespace {namespace:?} (invalid configmap:// credentialName)"),
            );
        }
    }
    let has = |key: &str| !text(tls, key).is_empty();
    let has_sans = !list(tls, "subjectAltNames").is_empty();
    if flag(tls, "insecureSkipVerify") {
        if mode == "SIMPLE" && (has("caCertificates") || has("credentialName") || has_sans) {
            r.error(
                join_key(path, "insecureSkipVerify"),
                "found insecureSkipVerify: true with caCertificates, credentialName or subjectAltNames, expected none of them (cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true)",
            );
        }
        if mode == "MUTUAL" && (has("caCertificates") || has_sans) {
            r.error(
                join_key(path, "insecureSkipVerify"),
                "found insecureSkipVerify: true with caCertificates or subjectAltNames, expected neither (cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true)",
            );
        }
    }
    if matches!(mode, "SIMPLE" | "MUTUAL") && !credential.is_empty() {
        for key in ["clientCertificate", "caCertificates", "privateKey", "caCrl"] {
            if has(key) {
                r.error(
                    join_key(path, key),
                    format!("found {key} with credentialName, expected only one source of certificates (cannot specify client certificates or CA certificate or CA CRL If credentialName is set)"),
                );
            }
        }
        return;
    }
    if mode == "MUTUAL" {
        for key in ["clientCertificate", "privateKey"] {
            if !has(key) {
                r.error(
                    join_key(path, key),
                    format!(
                        "missing, MUTUAL requires {key} (or use ISTIO_MUTUAL for mesh certificates)"
                    ),
                );
            }
        }
    }
}

// --- Sidecar ----------------------------------------------------------------------------------------

/// `ValidateSidecar`.
pub(crate) fn sidecar(namespace: &str, spec: &Value, r: &mut Report) {
    let errors_before = r.errors.len();
    let empty_selector = workload_selector(
        "spec.workloadSelector",
        field(spec, "workloadSelector"),
        "labels",
        r,
    );
    // Istio returns at once when the selector is wrong.
    if r.errors.len() > errors_before {
        return;
    }
    if empty_selector {
        r.warn(
            "spec.workloadSelector",
            "sidecar: workload selector specified without labels, will be applied to all services in namespace",
        );
    }
    if !is_set(spec, "egress")
        && !is_set(spec, "ingress")
        && !is_set(spec, "outboundTrafficPolicy")
        && !is_set(spec, "inboundConnectionPool")
    {
        r.error(
            "spec",
            "found an empty Sidecar, expected at least one of egress, ingress, outboundTrafficPolicy, inboundConnectionPool (sidecar: empty configuration provided)",
        );
        return;
    }
    let mut ports = HashSet::new();
    for (index, listener) in list(spec, "ingress").iter().enumerate() {
        ingress_listener(&join_index("spec.ingress", index), listener, &mut ports, r);
    }
    connection_pool(
        "spec.inboundConnectionPool",
        field(spec, "inboundConnectionPool"),
        r,
    );

    let egress = list(spec, "egress");
    let mut ports = HashSet::new();
    let mut sockets = HashSet::new();
    let mut catch_all = false;
    for (index, listener) in egress.iter().enumerate() {
        let path = join_index("spec.egress", index);
        if listener.is_null() {
            r.error(
                path,
                "found null, expected an egress listener (egress listener may not be null)",
            );
            continue;
        }
        match field(listener, "port") {
            None => {
                if catch_all {
                    r.error(
                        join_key(&path, "port"),
                        "missing, expected a port: egress can have only one listener with empty port",
                    );
                    continue;
                }
                if index == egress.len() - 1 {
                    catch_all = true;
                } else {
                    r.error(
                        join_key(&path, "port"),
                        "missing, expected a port: the egress listener with empty port should be the last listener in the list",
                    );
                }
            }
            Some(port) => {
                let port_path = join_key(&path, "port");
                if uint(port, "targetPort") > 0 {
                    r.error(
                        join_key(&port_path, "targetPort"),
                        "found targetPort, expected none (targetPort has no impact on Sidecars)",
                    );
                }
                let bind = text(listener, "bind");
                egress_port_bind_capture(&path, port, bind, text(listener, "captureMode"), r);
                let number = uint(port, "number");
                if number == 0 {
                    if !sockets.insert(bind.to_string()) {
                        r.error(
                            join_key(&path, "bind"),
                            format!("found {bind:?} again, expected unique unix domain socket values for listeners"),
                        );
                    }
                } else if !ports.insert(number) {
                    r.error(
                        join_key(&port_path, "number"),
                        format!("found {number} again, expected unique ports (ports on IP bound listeners must be unique)"),
                    );
                }
            }
        }
        egress_hosts(namespace, &path, listener, r);
    }
    outbound_traffic_policy(field(spec, "outboundTrafficPolicy"), r);
}

fn ingress_listener(path: &str, listener: &Value, ports: &mut HashSet<u64>, r: &mut Report) {
    if listener.is_null() {
        r.error(
            path,
            "found null, expected an ingress listener (sidecar: ingress may not be null)",
        );
        return;
    }
    let Some(port) = field(listener, "port") else {
        r.error(
            join_key(path, "port"),
            "missing, expected the port the workload listens on (sidecar: port is required for ingress listeners)",
        );
        return;
    };
    let port_path = join_key(path, "port");
    if uint(port, "targetPort") > 0 {
        r.error(
            join_key(&port_path, "targetPort"),
            "found targetPort, expected none (targetPort has no impact on Sidecars)",
        );
    }
    port_name_protocol(&port_path, port, r);
    let number = uint(port, "number");
    port_number(&join_key(&port_path, "number"), number, r);
    bind_address(&join_key(path, "bind"), text(listener, "bind"), r);
    if !ports.insert(number) {
        r.error(
            join_key(&port_path, "number"),
            format!("found {number} again, expected unique ports (sidecar: ports on IP bound listeners must be unique)"),
        );
    }
    let endpoint = text(listener, "defaultEndpoint");
    if !endpoint.is_empty() {
        default_endpoint(&join_key(path, "defaultEndpoint"), endpoint, r);
    }
    if let Some(tls) = field(listener, "tls") {
        ingress_tls(&join_key(path, "tls"), tls, text(port, "protocol"), r);
    }
    let pool = field(listener, "connectionPool");
    connection_pool(&join_key(path, "connectionPool"), pool, r);
    if pool.is_some_and(|p| field(p, "http").is_some()) && !is_http_protocol(text(port, "protocol"))
    {
        r.warn(
            join_key(&join_key(path, "connectionPool"), "http"),
            format!(
                "sidecar: HTTP connection pool settings are configured for port {number} ({:?}) but its protocol is not HTTP ({}); only TCP settings will apply",
                text(port, "name"),
                text(port, "protocol")
            ),
        );
    }
}

/// `defaultEndpoint`: `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT`, `[::]:PORT`, `:PORT` or `unix://PATH`.
fn default_endpoint(path: &str, endpoint: &str, r: &mut Report) {
    if let Some(socket) = endpoint.strip_prefix("unix://") {
        if let Err(why) = validate_unix_address(socket) {
            r.error(
                path,
                format!("found {endpoint:?}, expected unix://ABSOLUTE_PATH ({why})"),
            );
        }
        return;
    }
    let forms = "expected 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port>, [::]:<port>, unix://<path> or unset";
    let (host, port) = match split_host_port(endpoint) {
        Ok(parts) => parts,
        Err(why) => {
            r.error(path, format!("found {endpoint:?}, {forms} ({why})"));
            return;
        }
    };
    if !matches!(host, "" | "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
        r.error(path, format!("found host {host:?}, {forms}"));
    }
    match port.parse::<i64>() {
        Ok(number) if (1..=65535).contains(&number) => {}
        Ok(number) => r.error(path, format!("found port {number}, expected a port number 1-65535")),
        Err(_) => r.error(path, format!("found port {port:?}, expected a number (sidecar: defaultEndpoint port is not a number)")),
    }
}

/// The checks of a Sidecar ingress `tls` (`ServerTLSSettings`): what a sidecar cannot do, then
/// `validateTLSOptions`.
fn ingress_tls(path: &str, tls: &Value, protocol: &str, r: &mut Report) {
    let refused = [
        (
            "subjectAltNames",
            "subjectAltNames is not supported in ingress tls",
        ),
        (
            "credentialName",
            "credentialName is not currently supported",
        ),
        (
            "credentialNames",
            "credentialNames is not currently supported",
        ),
        (
            "tlsCertificates",
            "tls_certificates is not currently supported",
        ),
    ];
    for (key, why) in refused {
        if is_set(tls, key) && field(tls, key).and_then(Value::as_str) != Some("") {
            r.error(
                join_key(path, key),
                format!("found {key}, expected none (sidecar: {why})"),
            );
        }
    }
    if flag(tls, "httpsRedirect") {
        r.error(
            join_key(path, "httpsRedirect"),
            "found true, expected false (sidecar: httpsRedirect is not supported)",
        );
    }
    let mode = match text(tls, "mode") {
        "" => "PASSTHROUGH",
        mode => mode,
    };
    if matches!(mode, "ISTIO_MUTUAL" | "AUTO_PASSTHROUGH") {
        r.error(
            join_key(path, "mode"),
            format!("found {mode}, expected SIMPLE, MUTUAL, OPTIONAL_MUTUAL or PASSTHROUGH (cannot set mode to {mode} in sidecar ingress tls)"),
        );
    }
    if !is_tls_protocol(protocol) {
        r.error(
            path,
            format!("found tls on a port with protocol {protocol:?}, expected protocol HTTPS or TLS (server cannot have TLS settings for non HTTPS/TLS ports)"),
        );
    }
    server_tls_options(path, tls, mode, r);
}

/// `validateTLSOptions` (server side). Cipher suite names are not checked against Envoy's list.
fn server_tls_options(path: &str, tls: &Value, mode: &str, r: &mut Report) {
    if matches!(text(tls, "minProtocolVersion"), "TLSV1_0" | "TLSV1_1")
        && list(tls, "cipherSuites").is_empty()
    {
        r.warn(
            join_key(path, "minProtocolVersion"),
            "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers.",
        );
    }
    let mut ciphers = HashSet::new();
    let duplicates: BTreeSet<&str> = strings(tls, "cipherSuites")
        .filter(|c| !ciphers.insert(*c))
        .collect();
    if !duplicates.is_empty() {
        r.warn(
            join_key(path, "cipherSuites"),
            format!("ignoring duplicate cipher suites: {duplicates:?}"),
        );
    }
    let has = |key: &str| is_set(tls, key) && field(tls, key).and_then(Value::as_str) != Some("");
    if mode == "ISTIO_MUTUAL" {
        for key in [
            "serverCertificate",
            "privateKey",
            "caCertificates",
            "tlsCertificates",
            "credentialName",
            "credentialNames",
        ] {
            if has(key) {
                r.error(
                    join_key(path, key),
                    format!(
                        "found {key}, expected none (ISTIO_MUTUAL TLS cannot have associated {key})"
                    ),
                );
            }
        }
        return;
    }
    let certificates = [
        "caCrl",
        "serverCertificate",
        "privateKey",
        "caCertificates",
        "tlsCertificates",
        "credentialName",
        "credentialNames",
    ];
    if matches!(mode, "PASSTHROUGH" | "AUTO_PASSTHROUGH") && certificates.iter().any(|k| has(k)) {
        r.warn(
            path,
            format!("{mode} mode does not use certificates, they will be ignored"),
        );
    }
    let sources = [
        has("serverCertificate") && has("privateKey"),
        has("credentialName"),
        has("credentialNames"),
        has("tlsCertificates"),
    ];
    if sources.iter().filter(|s| **s).count() > 1 {
        r.error(
            path,
            "found several certificate sources, expected one of credentialName, credentialNames, serverCertificate/privateKey, tlsCertificates",
        );
    }
    let terminates = matches!(mode, "SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL");
    if terminates && (has("credentialName") || has("credentialNames")) {
        return;
    }
    if terminates {
        let prefix = if mode == "SIMPLE" {
            "SIMPLE TLS"
        } else {
            "MUTUAL TLS"
        };
        if mode != "SIMPLE" && !has("caCertificates") {
            r.error(
                join_key(path, "caCertificates"),
                format!("missing, {prefix} requires a client CA bundle"),
            );
        }
        let certs = list(tls, "tlsCertificates");
        if certs.len() > 2 {
            r.warn(
                join_key(path, "tlsCertificates"),
                format!("{prefix} can support up to 2 server certificates"),
            );
        }
        let pairs: Vec<(String, &Value)> = if certs.is_empty() {
            vec![(path.to_string(), tls)]
        } else {
            certs
                .iter()
                .enumerate()
                .map(|(i, c)| (join_index(&join_key(path, "tlsCertificates"), i), c))
                .collect()
        };
        for (cert_path, cert) in pairs {
            if text(cert, "serverCertificate").is_empty() {
                r.error(
                    join_key(&cert_path, "serverCertificate"),
                    format!("missing, {prefix} requires a server certificate"),
                );
            }
            if text(cert, "privateKey").is_empty() {
                r.error(
                    join_key(&cert_path, "privateKey"),
                    format!("missing, {prefix} requires a private key"),
                );
            }
        }
    }
    if has("caCrl") {
        if has("credentialName") {
            r.error(join_key(path, "caCrl"), "found caCrl with credentialName, expected the CRL inside the credential (CRL is not supported with credentialName)");
        }
        if mode == "SIMPLE" {
            r.error(
                join_key(path, "caCrl"),
                "found caCrl with SIMPLE, expected MUTUAL (CRL is not supported with SIMPLE TLS)",
            );
        }
    }
}

/// `ValidatePortName` and `ValidateProtocol` of a `SidecarPort`.
fn port_name_protocol(port_path: &str, port: &Value, r: &mut Report) {
    let name = text(port, "name");
    if !name.is_empty() && !is_dns1123_label(name) {
        r.error(
            join_key(port_path, "name"),
            format!("found {name:?}, expected a DNS-1123 label (invalid port name)"),
        );
    }
    let protocol = text(port, "protocol");
    if !is_known_protocol(protocol) {
        r.error(
            join_key(port_path, "protocol"),
            format!("found {protocol:?}, expected one of HTTP, HTTPS, HTTP2, GRPC, GRPC-Web, TCP, TLS, UDP, Mongo, Redis, MySQL, HTTP_PROXY (unsupported protocol)"),
        );
    }
}

fn port_number(path: &str, number: u64, r: &mut Report) {
    if !(1..=65535).contains(&number) {
        r.error(
            path,
            format!("found {number}, expected a port number 1-65535"),
        );
    }
}

fn bind_address(path: &str, bind: &str, r: &mut Report) {
    if !bind.is_empty() && !is_ip_address(bind) {
        r.error(
            path,
            format!("found {bind:?}, expected an IP address ({bind} is not a valid IP)"),
        );
    }
}

/// `validateSidecarEgressPortBindAndCaptureMode`: port 0 means a Unix domain socket listener.
fn egress_port_bind_capture(path: &str, port: &Value, bind: &str, capture: &str, r: &mut Report) {
    let port_path = join_key(path, "port");
    port_name_protocol(&port_path, port, r);
    if uint(port, "number") == 0 {
        match bind.strip_prefix("unix://") {
            None => r.error(
                join_key(path, "bind"),
                format!("found {bind:?}, expected unix://PATH: a listener on port 0 is a unix domain socket (sidecar: ports with 0 value must have a unix domain socket bind address)"),
            ),
            Some(socket) => {
                if let Err(why) = validate_unix_address(socket) {
                    r.error(join_key(path, "bind"), format!("found {bind:?}, expected unix://ABSOLUTE_PATH ({why})"));
                }
            }
        }
        if !matches!(capture, "" | "DEFAULT" | "NONE") {
            r.error(
                join_key(path, "captureMode"),
                format!("found {capture}, expected DEFAULT or NONE (sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners)"),
            );
        }
    } else {
        port_number(&join_key(&port_path, "number"), uint(port, "number"), r);
        bind_address(&join_key(path, "bind"), bind, r);
    }
}

/// The `hosts` of an egress listener: `namespace/dnsName` each (`ValidateNamespaceSlashWildcardHostname`),
/// with Istio's warnings for hosts another entry already selects.
fn egress_hosts(namespace: &str, path: &str, listener: &Value, r: &mut Report) {
    let hosts: Vec<&str> = strings(listener, "hosts").collect();
    if hosts.is_empty() {
        r.error(
            join_key(path, "hosts"),
            "missing, expected a list of namespace/dnsName hosts such as \"./*\" or \"istio-system/*\" (sidecar: egress listener must contain at least one host)",
        );
        return;
    }
    let mut by_namespace: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (index, host) in hosts.iter().enumerate() {
        let host_path = join_index(&join_key(path, "hosts"), index);
        if let Some((ns, dns)) = host.split_once('/')
            && !ns.starts_with('~')
        {
            let ns = if ns == "." { namespace } else { ns };
            let selected = by_namespace.entry(ns.to_string()).or_default();
            let duplicate = if dns == "*" {
                !selected.is_empty()
            } else {
                selected.contains(dns) || selected.contains("*")
            };
            if duplicate {
                r.warn(&host_path, format!("duplicated egress host: {host}"));
            }
            selected.insert(dns.to_string());
        }
        if let Err(why) = namespace_slash_host(host) {
            r.error(
                &host_path,
                format!("found {host:?}, expected namespace/dnsName (namespace `*`, `.`, `~ns` or a name; dnsName `*`, `*.suffix` or a FQDN): {why}"),
            );
        }
    }
    if by_namespace.get("*").is_some_and(|s| s.contains("*")) && by_namespace.len() != 1 {
        r.warn(
            join_key(path, "hosts"),
            "`*/*` host select all resources, no other hosts can be added",
        );
    }
}

/// `ValidateNamespaceSlashWildcardHostname` for a Sidecar (not a Gateway).
fn namespace_slash_host(host: &str) -> Result<(), String> {
    let Some((ns, dns)) = host.split_once('/') else {
        return Err("host must be of form namespace/dnsName".into());
    };
    let mut problems = Vec::new();
    if ns.is_empty() || dns.is_empty() {
        problems.push("config namespace and dnsName in host entry cannot be empty".to_string());
    }
    let bare = ns.strip_prefix('~').unwrap_or(ns);
    if !bare.is_empty() && bare != "*" && bare != "." && !is_dns1123_label(bare) {
        problems.push(format!("invalid namespace value {ns:?} in sidecar"));
    }
    if dns != "*" && !dns.contains('.') {
        problems.push("short names (non FQDN) are not allowed".into());
    }
    if let Err(why) = validate_wildcard_domain(dns) {
        problems.push(why);
    }
    if dns.contains('*') && dns.len() != 1 && !dns.starts_with("*.") {
        problems.push(format!("partial wildcard {dns:?} not allowed"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// `validateSidecarOutboundTrafficPolicy`.
fn outbound_traffic_policy(policy: Option<&Value>, r: &mut Report) {
    let Some(policy) = policy else { return };
    let path = "spec.outboundTrafficPolicy";
    let Some(proxy) = field(policy, "egressProxy") else {
        return;
    };
    let proxy_path = join_key(path, "egressProxy");
    if text(policy, "mode") != "ALLOW_ANY" {
        r.error(
            &proxy_path,
            "found egressProxy without mode ALLOW_ANY, expected mode: ALLOW_ANY (sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode)",
        );
        return;
    }
    let host = text(proxy, "host");
    if let Err(why) = validate_fqdn(host) {
        r.error(
            join_key(&proxy_path, "host"),
            format!("found {host:?}, expected a fully qualified host name ({why})"),
        );
    }
    let Some(port) = field(proxy, "port") else {
        r.error(join_key(&proxy_path, "port"), "missing, expected the egress proxy's port (sidecar: egress_proxy port must be non-nil)");
        return;
    };
    // validateDestination
    if host == "*" {
        r.error(
            join_key(&proxy_path, "host"),
            "found \"*\", expected a host (invalid destination host *)",
        );
    } else if let Err(why) = validate_wildcard_domain(host) {
        r.error(join_key(&proxy_path, "host"), why);
    }
    let subset = text(proxy, "subset");
    if !subset.is_empty() {
        subset_name(&join_key(&proxy_path, "subset"), subset, r);
    }
    port_number(
        &join_key(&join_key(&proxy_path, "port"), "number"),
        uint(port, "number"),
        r,
    );
}
