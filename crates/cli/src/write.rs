//! Commands that change resources: `apply`, `create ns`, `label`, `delete`, and `kube-inject`'s output.

use std::collections::HashMap;
use std::io::Read;

use ironmesh_api::{Loaded, Object};
use ironmesh_store::client::{ApiClient, ClientError};
use ironmesh_store::{ApplyItem, ApplyOptions, ObjectKey, Reason, WriteMode};
use serde_json::{Value, json};

use crate::error::CliError;
use crate::get::{resolve_kind, scope};
use crate::inject::{inject_object, inject_objects, namespace_wants_injection};
use crate::yaml_out::to_yaml;

/// Reads `-f`: a path as given (so `<(...)` works) or `-` for stdin.
pub(crate) fn read_source(file: &str) -> Result<String, CliError> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::Usage(format!("cannot read stdin: {e}")))?;
        return Ok(text);
    }
    std::fs::read_to_string(file).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            CliError::Usage(format!("the path \"{file}\" does not exist"))
        }
        _ => CliError::Usage(format!("cannot read \"{file}\": {e}")),
    })
}

fn load(file: &str) -> Result<Vec<Loaded>, CliError> {
    let text = read_source(file)?;
    Ok(ironmesh_api::load_documents(file, &text)?)
}

/// [`load`] with Istio's validation warnings (`file:line:col: path: message`).
fn load_with_warnings(file: &str) -> Result<(Vec<Loaded>, Vec<ironmesh_api::Problem>), CliError> {
    let text = read_source(file)?;
    Ok(ironmesh_api::load_documents_with_warnings(file, &text)?)
}

/// Injects workloads bound for namespaces labelled for automatic injection (labels of namespaces in the
/// same file count too).
async fn auto_inject(
    client: &ApiClient,
    loaded: &mut [Loaded],
    namespace: Option<&str>,
) -> Result<(), CliError> {
    let is_workload = |o: &Object| matches!(o.kind.as_str(), "Deployment" | "Pod");
    if !loaded.iter().any(|l| is_workload(&l.object)) {
        return Ok(());
    }
    let mut labels: HashMap<String, Value> = HashMap::new();
    for ns in client.list(Some("namespaces"), None, None).await?.items {
        if let Some(name) = ironmesh_store::name_of(&ns) {
            labels.insert(name.to_string(), ns["metadata"]["labels"].clone());
        }
    }
    for l in loaded.iter().filter(|l| l.object.kind == "Namespace") {
        labels.insert(
            l.object.metadata.name.clone(),
            json!(l.object.metadata.labels),
        );
    }
    for l in loaded.iter_mut().filter(|l| is_workload(&l.object)) {
        let ns = l
            .object
            .metadata
            .namespace
            .clone()
            .or_else(|| namespace.map(str::to_string))
            .unwrap_or_else(|| "default".into());
        if namespace_wants_injection(labels.get(&ns)) {
            inject_object(&mut l.object);
        }
    }
    Ok(())
}

/// `apply -f FILE [--wait [--timeout T]]`: `wait` is the timeout when the sidecars are to be waited for.
pub(crate) async fn apply(
    client: &ApiClient,
    file: &str,
    namespace: Option<&str>,
    wait: Option<&str>,
) -> Result<(), CliError> {
    // A bad timeout is a usage error before anything is written.
    let wait = wait
        .map(crate::wait::parse_timeout)
        .transpose()
        .map_err(CliError::Usage)?;
    let (mut loaded, istio_warnings) = load_with_warnings(file)?;
    if loaded.is_empty() {
        return Err(CliError::Usage(format!(
            "no objects passed to apply: {file} holds no documents"
        )));
    }
    auto_inject(client, &mut loaded, namespace).await?;
    let mut warnings: Vec<String> = loaded
        .iter()
        .filter(|l| l.object.api_version == "extensions/v1beta1")
        .map(|l| {
            format!(
                "Warning: {file}:{}: extensions/v1beta1 {} is deprecated in v1.9+, unavailable in \
                 v1.16+; use apps/v1 {}",
                l.line, l.object.kind, l.object.kind
            )
        })
        .collect();
    // Istio's webhook warnings, as kubectl prints them. The control plane computes the same ones (they
    // come back in each result's `warnings`); the local copy carries the column too.
    warnings.extend(istio_warnings.iter().map(|w| format!("Warning: {w}")));
    let items = loaded
        .iter()
        .map(|l| ApplyItem {
            object: l.object.to_value(),
            origin: format!("{file}:{}", l.line),
        })
        .collect();
    let options = ApplyOptions {
        namespace: namespace.map(str::to_string),
        mode: WriteMode::Apply,
    };
    let results = client.apply(items, options).await?;
    // Like the API server's warnings, only for a request that went through.
    for warning in warnings {
        eprintln!("{warning}");
    }
    for result in &results {
        println!("{result}");
    }
    if let Some(timeout) = wait {
        // The oldest version among what was applied: an unchanged object keeps its earlier version, so
        // the sidecars its earlier change altered are waited for too.
        let since = results
            .iter()
            .map(|r| ironmesh_store::resource_version_of(&r.object))
            .min()
            .unwrap_or(0);
        crate::wait::until_synced(client, since, timeout).await?;
    }
    Ok(())
}

pub(crate) async fn create(client: &ApiClient, kind: &str, name: &str) -> Result<(), CliError> {
    let info = resolve_kind(kind)?;
    if info.plural != "namespaces" {
        return Err(CliError::Usage(format!(
            "ironmesh create makes namespaces only (`ironmesh create ns NAME`); write a {} in YAML and \
             use `ironmesh apply -f`",
            info.kind
        )));
    }
    let item = ApplyItem {
        object: json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        origin: "create".into(),
    };
    let options = ApplyOptions {
        namespace: None,
        mode: WriteMode::Create,
    };
    for result in client.apply(vec![item], options).await? {
        println!("{result}");
    }
    Ok(())
}

pub(crate) async fn label(
    client: &ApiClient,
    kind: &str,
    name: &str,
    changes: &[String],
    overwrite: bool,
    namespace: Option<&str>,
) -> Result<(), CliError> {
    let info = resolve_kind(kind)?;
    let key = ObjectKey::new(info.plural, scope(info, namespace).as_deref(), name);
    let mut object = client.get(&key).await?;
    let api_version = object["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let reference = format!("{}/{name}", info.display_group(&api_version));
    let before = object["metadata"]["labels"].clone();
    let mut labels = before.as_object().cloned().unwrap_or_default();
    for change in changes {
        if let Some(key) = change.strip_suffix('-') {
            labels.remove(key);
            continue;
        }
        let Some((key, value)) = change.split_once('=') else {
            return Err(CliError::Usage(format!(
                "invalid label {change:?}: write key=value to set it or key- to remove it"
            )));
        };
        if let Some(existing) = labels.get(key).and_then(Value::as_str)
            && existing != value
            && !overwrite
        {
            return Err(CliError::Usage(format!(
                "'{key}' already has a value ({existing}), and --overwrite is false"
            )));
        }
        labels.insert(key.to_string(), Value::from(value));
    }
    if Value::Object(labels.clone()) == before || (labels.is_empty() && before.is_null()) {
        println!("{reference} not labeled");
        return Ok(());
    }
    // Send back only what the user owns; the store keeps uid, timestamps and status.
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
        let meta = json!({
            "name": name,
            "namespace": key.namespace,
            "labels": labels,
            "annotations": map["metadata"]["annotations"].clone(),
        });
        map.insert("metadata".into(), meta);
        if let Some(meta) = map["metadata"].as_object_mut() {
            meta.retain(|_, v| !v.is_null() && v != "");
        }
    }
    let item = ApplyItem {
        object,
        origin: reference.clone(),
    };
    client.apply(vec![item], ApplyOptions::default()).await?;
    println!("{reference} labeled");
    Ok(())
}

pub(crate) async fn delete(
    client: &ApiClient,
    file: Option<&str>,
    kind: Option<&str>,
    name: Option<&str>,
    namespace: Option<&str>,
) -> Result<(), CliError> {
    match (file, kind, name) {
        (Some(file), None, None) => delete_file(client, file, namespace).await,
        (None, Some(kind), Some(name)) => {
            let info = resolve_kind(kind)?;
            let key = ObjectKey::new(info.plural, scope(info, namespace).as_deref(), name);
            let object = client.delete(&key).await?;
            let api_version = object["apiVersion"].as_str().unwrap_or_default();
            println!("{} \"{name}\" deleted", info.display_group(api_version));
            Ok(())
        }
        _ => Err(CliError::Usage(
            "say what to delete: `ironmesh delete -f FILE` or `ironmesh delete KIND NAME`".into(),
        )),
    }
}

async fn delete_file(
    client: &ApiClient,
    file: &str,
    namespace: Option<&str>,
) -> Result<(), CliError> {
    let mut failed = false;
    for loaded in load(file)? {
        let object = &loaded.object;
        let info = ironmesh_api::kind_for_type(&object.api_version, &object.kind)
            .map_err(|e| CliError::Usage(format!("{file}:{}: {e}", loaded.line)))?;
        let ns = info.namespaced.then(|| {
            object
                .metadata
                .namespace
                .clone()
                .or_else(|| namespace.map(str::to_string))
                .unwrap_or_else(|| "default".into())
        });
        let key = ObjectKey::new(info.plural, ns.as_deref(), &object.metadata.name);
        match client.delete(&key).await {
            Ok(_) => println!(
                "{} \"{}\" deleted",
                info.display_group(&object.api_version),
                object.metadata.name
            ),
            Err(ClientError::Server {
                reason: Reason::NotFound,
                message,
            }) => {
                failed = true;
                eprintln!(
                    "Error from server (NotFound): error when deleting \"{file}\": {message}"
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    if failed {
        Err(CliError::Reported)
    } else {
        Ok(())
    }
}

/// `kube-inject -f FILE`: every document, workloads with the sidecar, as YAML separated by `---`.
pub(crate) fn kube_inject(file: &str, apps_v1: bool) -> Result<(), CliError> {
    let mut objects = inject_objects(load(file)?.into_iter().map(|l| l.object).collect());
    if apps_v1 {
        for object in &mut objects {
            if let Some(old) = ironmesh_api::inject::to_apps_v1(object) {
                eprintln!(
                    "warning: {file}: Deployment {} written as apps/v1 instead of {old} (removed in Kubernetes \
                     1.16); its selector is the template's labels, as {old} defaulted it",
                    object.metadata.name
                );
            }
        }
    }
    let documents: Vec<String> = objects
        .iter()
        .map(|o| to_yaml(&o.to_value(), false))
        .collect();
    print!("{}", documents.join("---\n"));
    Ok(())
}
