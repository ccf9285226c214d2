//! The one place the store asks `ironmesh-api` about kinds: plural (the storage key), scope, the kubectl
//! `singular.group` spelling of apply messages, and the API path used in `selfLink`.

use ironmesh_api::kinds::kind_for_type;
use serde_json::Value;

use crate::error::StoreError;

/// What the store needs to know about an object's kind.
#[derive(Debug, Clone)]
pub(crate) struct KindFacts {
    pub plural: &'static str,
    pub namespaced: bool,
    /// `deployment.extensions`, `service`, `meshpolicy.authentication.istio.io`.
    pub display: String,
    pub api_version: String,
    /// Istio's validation warnings for the object, as `origin: path: message`: it is stored anyway,
    /// and the answer carries them (kubectl prints them as `Warning: ...`).
    pub warnings: Vec<String>,
}

impl KindFacts {
    pub(crate) fn self_link(&self, namespace: Option<&str>, name: &str) -> String {
        let root = if self.api_version.contains('/') {
            format!("/apis/{}", self.api_version)
        } else {
            format!("/api/{}", self.api_version)
        };
        match namespace {
            Some(ns) => format!("{root}/namespaces/{ns}/{}/{name}", self.plural),
            None => format!("{root}/{}/{name}", self.plural),
        }
    }
}

/// Resolves `apiVersion`/`kind` of a JSON object; `origin` (file:line) prefixes the error.
pub(crate) fn facts_for(object: &Value, origin: &str) -> Result<KindFacts, StoreError> {
    let field = |name: &str| object.get(name).and_then(Value::as_str).unwrap_or_default();
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if api_version.is_empty() || kind.is_empty() {
        return Err(StoreError::Invalid(format!(
            "{origin}: the object has no apiVersion or kind; every document needs both \
             (for example `apiVersion: v1` and `kind: Service`)"
        )));
    }
    let info = kind_for_type(api_version, kind)
        .map_err(|e| StoreError::Invalid(format!("{origin}: {e}")))?;
    let typed: ironmesh_api::Object = serde_json::from_value(object.clone())
        .map_err(|e| StoreError::Invalid(format!("{origin}: {e}")))?;
    let warnings = match ironmesh_api::validate_object_with_warnings(&typed) {
        Ok(warnings) => warnings,
        Err(problems) => {
            return Err(StoreError::Invalid(invalid_text(origin, &problems)));
        }
    };
    Ok(KindFacts {
        plural: info.plural,
        namespaced: info.namespaced,
        display: info.display_group(api_version),
        api_version: api_version.to_string(),
        warnings: warnings.iter().map(|w| format!("{origin}: {w}")).collect(),
    })
}

fn invalid_text(origin: &str, problems: &[ironmesh_api::FieldError]) -> String {
    problems
        .iter()
        .map(|p| {
            if p.path.is_empty() {
                format!("{origin}: {}", p.message)
            } else {
                format!("{origin}: {}: {}", p.path, p.message)
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether objects stored under `plural` are namespaced (unknown plurals count as namespaced).
pub(crate) fn plural_is_namespaced(plural: &str) -> bool {
    ironmesh_api::kinds::all_kinds()
        .iter()
        .find(|k| k.plural == plural)
        .is_none_or(|k| k.namespaced)
}

/// The plural (storage key prefix) of a stored object, from its `apiVersion` and `kind`.
pub(crate) fn plural_of(object: &Value) -> Option<String> {
    let field = |name: &str| object.get(name).and_then(Value::as_str);
    kind_for_type(field("apiVersion")?, field("kind")?)
        .ok()
        .map(|info| info.plural.to_string())
}
