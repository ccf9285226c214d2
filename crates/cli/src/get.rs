//! `get` and `describe`: reading resources and printing them as kubectl does (tables, `-o yaml|json|
//! wide|name|jsonpath=...`).

use chrono::Utc;
use ironmesh_api::KindInfo;
use ironmesh_store::ObjectKey;
use ironmesh_store::client::ApiClient;
use serde_json::{Map, Value, json};

use crate::cli::GetArgs;
use crate::error::CliError;
use crate::jsonpath::Template;
use crate::table::{TableOptions, table};
use crate::yaml_out::to_yaml;

/// Resolves what the user typed for a kind (`po`, `svc`, `meshpolicies.authentication.istio.io`).
pub(crate) fn resolve_kind(spelling: &str) -> Result<&'static KindInfo, CliError> {
    ironmesh_api::kind_for_spelling(spelling).ok_or_else(|| {
        CliError::Usage(format!(
            "the server doesn't have a resource type \"{spelling}\""
        ))
    })
}

/// The namespace a command acts in: `-n`, else `default`; none for cluster-scoped kinds.
pub(crate) fn scope(info: &KindInfo, namespace: Option<&str>) -> Option<String> {
    info.namespaced
        .then(|| namespace.unwrap_or("default").to_string())
}

/// A copy with every mapping's keys sorted (Go's map order, which kubectl's output has).
pub(crate) fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for key in keys {
                out.insert(key.clone(), sorted(&map[key]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// kubectl's `-o json`: four-space indentation, sorted keys.
pub(crate) fn to_json(value: &Value) -> String {
    use serde::Serialize;
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    let _ = sorted(value).serialize(&mut serializer);
    String::from_utf8(out).unwrap_or_default() + "\n"
}

fn list_of(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "items": items, "kind": "List", "metadata": {},
           "resourceVersion": "", "selfLink": ""})
}

/// `kind.group/name` as `-o name` prints it.
fn reference(info: &KindInfo, object: &Value) -> String {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = ironmesh_store::name_of(object).unwrap_or_default();
    format!("{}/{name}", info.display_group(api_version))
}

enum Format {
    Table { wide: bool },
    Yaml,
    Json,
    Name,
    JsonPath(Template),
}

fn parse_format(output: Option<&str>) -> Result<Format, CliError> {
    Ok(match output {
        None => Format::Table { wide: false },
        Some("wide") => Format::Table { wide: true },
        Some("yaml") => Format::Yaml,
        Some("json") => Format::Json,
        Some("name") => Format::Name,
        Some(other) => match other.strip_prefix("jsonpath=") {
            Some(template) => Format::JsonPath(
                Template::parse(template).map_err(|e| CliError::Usage(e.to_string()))?,
            ),
            None => {
                return Err(CliError::Usage(format!(
                    "unable to match a printer suitable for the output format \"{other}\", allowed \
                     formats are: json,jsonpath,name,wide,yaml"
                )));
            }
        },
    })
}

/// kubectl's `KIND/NAME` spelling (`pod/sleep-1`) or `KIND NAME`.
pub(crate) fn kind_and_name<'a>(
    kind: &'a str,
    name: Option<&'a str>,
) -> (&'a str, Option<&'a str>) {
    match (kind.split_once('/'), name) {
        (Some((kind, name)), None) if !name.is_empty() => (kind, Some(name)),
        _ => (kind, name),
    }
}

pub(crate) async fn get(client: &ApiClient, args: &GetArgs) -> Result<(), CliError> {
    let (kind, mut name) = kind_and_name(&args.kind, args.name.as_deref());
    let mut output = args.output.clone();
    // `-o jsonpath= {.items..metadata.name}`: the shell split the template off as a second word.
    if output.as_deref() == Some("jsonpath=")
        && let Some(template) = name.filter(|n| n.starts_with('{') || n.starts_with('\''))
    {
        output = Some(format!("jsonpath={template}"));
        name = None;
    }
    let info = resolve_kind(kind)?;
    let format = parse_format(output.as_deref())?;
    let namespace = if args.all_namespaces {
        None
    } else {
        scope(info, args.namespace.as_deref())
    };
    let options = |wide| TableOptions {
        wide,
        with_namespace: args.all_namespaces && info.namespaced,
        now: Utc::now(),
    };
    if let Some(name) = name {
        let key = ObjectKey::new(info.plural, namespace.as_deref(), name);
        let object = client.get(&key).await?;
        let text = match format {
            Format::Table { wide } => table(info.plural, &[object], &options(wide)),
            Format::Yaml => to_yaml(&sorted(&object), true),
            Format::Json => to_json(&object),
            Format::Name => format!("{}\n", reference(info, &object)),
            Format::JsonPath(template) => template.render(&object),
        };
        print!("{text}");
        return Ok(());
    }
    let list = client
        .list(
            Some(info.plural),
            namespace.as_deref(),
            args.selector.as_deref(),
        )
        .await?;
    let text = match format {
        Format::Table { wide } => {
            if list.items.is_empty() {
                eprintln!("No resources found.");
                return Ok(());
            }
            table(info.plural, &list.items, &options(wide))
        }
        Format::Yaml => to_yaml(&sorted(&list_of(list.items)), true),
        Format::Json => to_json(&list_of(list.items)),
        Format::Name => list
            .items
            .iter()
            .map(|o| reference(info, o) + "\n")
            .collect(),
        Format::JsonPath(template) => template.render(&list_of(list.items)),
    };
    print!("{text}");
    Ok(())
}

fn map_lines(label: &str, value: Option<&Value>) -> String {
    let pad = |s: &str| format!("{s:<14}");
    let Some(map) = value.and_then(Value::as_object).filter(|m| !m.is_empty()) else {
        return format!("{}<none>\n", pad(label));
    };
    let mut pairs: Vec<String> = map
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.as_str().map_or_else(|| v.to_string(), str::to_string)
            )
        })
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, pair) in pairs.iter().enumerate() {
        let head = if i == 0 { pad(label) } else { pad("") };
        out.push_str(&format!("{head}{pair}\n"));
    }
    out
}

fn capitalised(key: &str) -> String {
    let mut chars = key.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().collect::<String>() + chars.as_str())
        .unwrap_or_default()
}

/// `describe KIND NAME`: the header kubectl shows, every other field as indented YAML, then events.
pub(crate) async fn describe(
    client: &ApiClient,
    kind: &str,
    name: Option<&str>,
    namespace: Option<&str>,
) -> Result<(), CliError> {
    let (kind, name) = kind_and_name(kind, name);
    let Some(name) = name else {
        return Err(CliError::Usage(
            "say which object to describe: `ironmesh describe KIND NAME` or `KIND/NAME`".into(),
        ));
    };
    let info = resolve_kind(kind)?;
    let key = ObjectKey::new(info.plural, scope(info, namespace).as_deref(), name);
    let object = client.get(&key).await?;
    let meta = object.get("metadata").cloned().unwrap_or(Value::Null);
    let text_at = |key: &str| {
        meta.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut out = format!("{:<14}{}\n", "Name:", text_at("name"));
    if info.namespaced {
        out.push_str(&format!("{:<14}{}\n", "Namespace:", text_at("namespace")));
    }
    out.push_str(&map_lines("Labels:", meta.get("labels")));
    out.push_str(&map_lines("Annotations:", meta.get("annotations")));
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    out.push_str(&format!("{:<14}{api_version}\n", "API Version:"));
    out.push_str(&format!("{:<14}{}\n", "Kind:", info.kind));
    out.push_str(&format!(
        "{:<14}{}\n",
        "Created:",
        text_at("creationTimestamp")
    ));
    out.push_str(&format!("{:<14}{}\n", "UID:", text_at("uid")));
    let mut events = None;
    if let Some(map) = object.as_object() {
        for (key, value) in map {
            if matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            let mut value = value.clone();
            if key == "status"
                && let Some(status) = value.as_object_mut()
            {
                events = status.remove("events");
                if status.is_empty() {
                    continue;
                }
            }
            out.push_str(&format!("{}:\n", capitalised(key)));
            for line in to_yaml(&value, false).lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
    }
    out.push_str(&inert_text(&object));
    out.push_str(&events_text(events.as_ref()));
    print!("{out}");
    Ok(())
}

/// The fields set in `object` that ironmesh stores and validates but does not act on.
fn inert_text(object: &Value) -> String {
    let inert = ironmesh_api::inert::inert_fields(object);
    if inert.is_empty() {
        return String::new();
    }
    let mut out = "No effect in ironmesh:\n".to_string();
    for field in inert {
        out.push_str(&format!("  {}: {}\n", field.path, field.why));
    }
    out
}

fn events_text(events: Option<&Value>) -> String {
    let Some(events) = events.and_then(Value::as_array).filter(|e| !e.is_empty()) else {
        return format!("{:<14}<none>\n", "Events:");
    };
    let field = |e: &Value, k: &str| {
        e.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let now = Utc::now();
    let mut rows = vec![
        vec!["Type", "Reason", "Age", "From", "Message"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>(),
    ];
    rows.push(
        ["----", "------", "----", "----", "-------"]
            .map(String::from)
            .to_vec(),
    );
    for event in events {
        let age = event
            .get("lastTimestamp")
            .or_else(|| event.get("timestamp"))
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| crate::table::human_duration((now - t.with_timezone(&Utc)).num_seconds()))
            .unwrap_or_else(|| "<unknown>".into());
        rows.push(vec![
            field(event, "type"),
            field(event, "reason"),
            age,
            event
                .get("from")
                .or_else(|| event.pointer("/source/component"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| {
                    // The local runtime's pod events come from its scheduler or its kubelet.
                    if field(event, "reason") == "Scheduled" {
                        "default-scheduler".into()
                    } else {
                        "kubelet".into()
                    }
                }),
            field(event, "message"),
        ]);
    }
    let mut out = "Events:\n".to_string();
    for line in crate::table::render(&rows).lines() {
        out.push_str(&format!("  {line}\n"));
    }
    out
}
