//! kubectl's table output: the columns of each kind, `AGE` as kubectl rounds it, and a tab writer with
//! the walkthrough's layout (cells padded by 3, columns at least 10 wide, the last column unpadded).

use chrono::{DateTime, Utc};
use serde_json::Value;

const MIN_WIDTH: usize = 10;
const PADDING: usize = 3;

/// Lays out rows as Go's tabwriter does for kubectl.
pub(crate) fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![MIN_WIDTH; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count() + PADDING);
        }
    }
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                out.push_str(&" ".repeat(widths[i] - cell.chars().count()));
            }
        }
        out.push('\n');
    }
    out
}

/// kubectl's human duration (`45s`, `3m20s`, `12h`, `5d`).
pub(crate) fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let seconds = seconds.max(0);
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        let d = hours / 24;
        return if h == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{h}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    let years = hours / 24 / 365;
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{dy}d")
        };
    }
    format!("{years}y")
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(value, |v, key| v.get(key))?.as_str()
}

fn age(object: &Value, now: DateTime<Utc>) -> String {
    str_at(object, &["metadata", "creationTimestamp"])
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| human_duration((now - t.with_timezone(&Utc)).num_seconds()))
        .unwrap_or_else(|| "<unknown>".into())
}

fn map_text(value: Option<&Value>) -> String {
    let Some(map) = value.and_then(Value::as_object).filter(|m| !m.is_empty()) else {
        return "<none>".into();
    };
    let mut pairs: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    pairs.sort();
    pairs.join(",")
}

fn count(value: Option<&Value>) -> i64 {
    value.and_then(Value::as_i64).unwrap_or(0)
}

/// How a table for one kind is laid out.
pub(crate) struct TableOptions {
    pub wide: bool,
    pub with_namespace: bool,
    pub now: DateTime<Utc>,
}

type RowFn<'a> = Box<dyn Fn(&Value) -> Vec<String> + 'a>;

/// Header and row cells of `plural` (kubectl's columns for the kinds it knows, `NAME AGE` otherwise).
pub(crate) fn table(plural: &str, objects: &[Value], options: &TableOptions) -> String {
    let (mut header, row): (Vec<&str>, RowFn<'_>) = match plural {
        "pods" => {
            let mut header = vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"];
            if options.wide {
                header.extend(["IP", "NODE"]);
            }
            (header, Box::new(|o| pod_row(o, options)))
        }
        "services" => {
            let mut header = vec![
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE",
            ];
            if options.wide {
                header.push("SELECTOR");
            }
            (header, Box::new(|o| service_row(o, options)))
        }
        "namespaces" => (
            vec!["NAME", "STATUS", "AGE"],
            Box::new(|o| {
                let phase = str_at(o, &["status", "phase"]).unwrap_or("Active");
                vec![name(o), phase.into(), age(o, options.now)]
            }),
        ),
        "deployments" => {
            let mut header = vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"];
            if options.wide {
                header.extend(["CONTAINERS", "IMAGES", "SELECTOR"]);
            }
            (header, Box::new(|o| deployment_row(o, options)))
        }
        "serviceaccounts" => (
            vec!["NAME", "SECRETS", "AGE"],
            Box::new(|o| {
                let secrets = o
                    .get("secrets")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                vec![name(o), secrets.to_string(), age(o, options.now)]
            }),
        ),
        "meshpolicies" => (
            vec!["NAME", "KIND"],
            Box::new(|o| {
                let api_version = o
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let (group, version) = ironmesh_api::split_api_version(api_version);
                let kind = o.get("kind").and_then(Value::as_str).unwrap_or_default();
                vec![name(o), format!("{kind}.{version}.{group}")]
            }),
        ),
        _ => (
            vec!["NAME", "AGE"],
            Box::new(|o| vec![name(o), age(o, options.now)]),
        ),
    };
    let mut rows = Vec::with_capacity(objects.len() + 1);
    if options.with_namespace {
        header.insert(0, "NAMESPACE");
    }
    rows.push(header.iter().map(|h| h.to_string()).collect());
    for object in objects {
        let mut cells = row(object);
        if options.with_namespace {
            let ns = str_at(object, &["metadata", "namespace"]).unwrap_or_default();
            cells.insert(0, ns.to_string());
        }
        rows.push(cells);
    }
    render(&rows)
}

fn name(object: &Value) -> String {
    str_at(object, &["metadata", "name"])
        .unwrap_or_default()
        .to_string()
}

fn pod_row(pod: &Value, options: &TableOptions) -> Vec<String> {
    let total = pod
        .get("spec")
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let statuses = pod
        .get("status")
        .and_then(|s| s.get("containerStatuses"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = statuses
        .iter()
        .filter(|s| s.get("ready") == Some(&Value::Bool(true)))
        .count();
    let restarts: i64 = statuses.iter().map(|s| count(s.get("restartCount"))).sum();
    let status = str_at(pod, &["status", "reason"])
        .or_else(|| str_at(pod, &["status", "phase"]))
        .unwrap_or("Pending");
    let mut row = vec![
        name(pod),
        format!("{ready}/{total}"),
        status.to_string(),
        restarts.to_string(),
        age(pod, options.now),
    ];
    if options.wide {
        row.push(str_at(pod, &["status", "podIP"]).unwrap_or("<none>").into());
        row.push(
            str_at(pod, &["spec", "nodeName"])
                .unwrap_or("<none>")
                .into(),
        );
    }
    row
}

fn service_row(service: &Value, options: &TableOptions) -> Vec<String> {
    let spec = service.get("spec").cloned().unwrap_or(Value::Null);
    let ports: Vec<String> = spec
        .get("ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .map(|p| {
                    let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    let port = count(p.get("port"));
                    match p.get("nodePort").and_then(Value::as_i64) {
                        Some(node_port) => format!("{port}:{node_port}/{protocol}"),
                        None => format!("{port}/{protocol}"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let mut row = vec![
        name(service),
        str_at(&spec, &["type"]).unwrap_or("ClusterIP").into(),
        str_at(&spec, &["clusterIP"]).unwrap_or("<none>").into(),
        "<none>".into(),
        if ports.is_empty() {
            "<none>".into()
        } else {
            ports.join(",")
        },
        age(service, options.now),
    ];
    if options.wide {
        row.push(map_text(spec.get("selector")));
    }
    row
}

fn deployment_row(deployment: &Value, options: &TableOptions) -> Vec<String> {
    let status = deployment.get("status");
    let field = |key: &str| count(status.and_then(|s| s.get(key)));
    let desired = deployment
        .get("spec")
        .and_then(|s| s.get("replicas"))
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let mut row = vec![
        name(deployment),
        format!("{}/{desired}", field("readyReplicas")),
        field("updatedReplicas").to_string(),
        field("availableReplicas").to_string(),
        age(deployment, options.now),
    ];
    if options.wide {
        let containers = deployment
            .pointer("/spec/template/spec/containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let pick = |key: &str| {
            containers
                .iter()
                .filter_map(|c| c.get(key).and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(",")
        };
        row.push(pick("name"));
        row.push(pick("image"));
        let selector = deployment
            .pointer("/spec/selector/matchLabels")
            .or_else(|| deployment.pointer("/spec/template/metadata/labels"));
        row.push(map_text(selector));
    }
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_round_as_kubectl() {
        let cases = [
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 600, "3h10m"),
            (12 * 3600, "12h"),
            (50 * 3600, "2d2h"),
            (10 * 86400, "10d"),
            (800 * 86400, "2y70d"),
        ];
        for (seconds, expected) in cases {
            assert_eq!(human_duration(seconds), expected, "{seconds}s");
        }
    }

    #[test]
    fn mesh_policies_print_as_the_walkthrough() {
        let objects = [
            json!({"apiVersion": "authentication.istio.io/v1alpha1", "kind": "MeshPolicy",
            "metadata": {"name": "default"}}),
        ];
        let options = TableOptions {
            wide: false,
            with_namespace: false,
            now: Utc::now(),
        };
        assert_eq!(
            table("meshpolicies", &objects, &options),
            "NAME      KIND\ndefault   MeshPolicy.v1alpha1.authentication.istio.io\n"
        );
    }

    #[test]
    fn services_wide_line_up_as_kubectl() {
        let now = Utc::now();
        let created = (now - chrono::Duration::hours(12)).to_rfc3339();
        let objects = [json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "httpbin", "namespace": "foo", "creationTimestamp": created},
            "spec": {"clusterIP": "10.0.103.141", "ports": [{"port": 8000}], "selector": {"app": "httpbin"}}})];
        let options = TableOptions {
            wide: true,
            with_namespace: false,
            now,
        };
        assert_eq!(
            table("services", &objects, &options),
            "NAME      TYPE        CLUSTER-IP     EXTERNAL-IP   PORT(S)    AGE       SELECTOR\n\
             httpbin   ClusterIP   10.0.103.141   <none>        8000/TCP   12h       app=httpbin\n"
        );
    }
}
