//! The mutating admission webhook that injects the sidecar into pods as the API server creates them
//! (Istio's sidecar injector, at [`INJECT_PATH`] on the same HTTPS server as the validating webhook).
//!
//! Which pods reach it is the webhook configuration's business, with Istio's selectors
//! ([`crate::install`]): pods of namespaces labelled `istio-injection=enabled` unless the pod is labelled
//! `sidecar.istio.io/inject=false`, and pods labelled `sidecar.istio.io/inject=true` in namespaces without
//! the `istio-injection` label; never `istio-system` or `kube-system`. Revisions (`istio.io/rev`) are not
//! served: a namespace or pod that names one is left to the Istio of that revision.
//!
//! What it does to a pod that arrives is [`review`]: Istio's `injectRequired` (host-network pods and
//! Kubernetes' own namespaces are skipped; the pod's `sidecar.istio.io/inject` label, else annotation,
//! overrides) and then [`ironmesh_api::inject::inject_pod_json`], the function `ironmesh kube-inject`
//! calls, so a pod gets the same containers either way. The answer is the difference as an RFC 6902
//! JSON patch; a pod injected already (by kube-inject, or by a Deployment's template) passes unchanged.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde_json::Value;

use crate::admission;

/// Where the API server posts pods for injection (Istio's path).
pub const INJECT_PATH: &str = "/inject";
/// The mutating webhook configuration, named as Istio names its own.
pub const INJECTOR_CONFIGURATION: &str = "istio-sidecar-injector";
/// The webhook for namespaces labelled `istio-injection=enabled` (Istio's name).
pub const NAMESPACE_WEBHOOK: &str = "namespace.sidecar-injector.istio.io";
/// The webhook for pods labelled `sidecar.istio.io/inject=true` elsewhere (Istio's name).
pub const OBJECT_WEBHOOK: &str = "object.sidecar-injector.istio.io";
/// Kubernetes' own namespaces, never injected (Istio's list), and the control plane's.
pub const IGNORED_NAMESPACES: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "istio-system",
];

/// Decides one AdmissionReview (as JSON) for a pod and returns the answer: always allowed, with a JSON
/// patch when the sidecar is to be added. An unreadable review is refused, saying what was wrong (the
/// configuration's `failurePolicy: Fail` would refuse the pod anyway).
pub fn review(body: &Value) -> Value {
    admission::answer(body, WHO, decide)
}

/// [`review`] of a request body as the API server sends it.
pub fn review_bytes(body: &[u8]) -> Value {
    admission::answer_bytes(body, WHO, decide)
}

const WHO: &str = "injector";

fn decide(request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let allowed = AdmissionResponse::from(request);
    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    if !is_pod || !matches!(request.operation, Operation::Create) {
        return allowed;
    }
    let Some(object) = &request.object else {
        return allowed;
    };
    let namespace = request
        .namespace
        .as_deref()
        .or(object.metadata.namespace.as_deref())
        .unwrap_or_default();
    let pod = match serde_json::to_value(object) {
        Ok(pod) => pod,
        Err(error) => return allowed.deny(format!("cannot read pod {}: {error}", request.name)),
    };
    if !injection_required(namespace, &pod) {
        return allowed;
    }
    let mut injected = pod.clone();
    if !ironmesh_api::inject::inject_pod_json(&mut injected) {
        return allowed;
    }
    let name = object
        .metadata
        .name
        .clone()
        .or_else(|| {
            object
                .metadata
                .generate_name
                .clone()
                .map(|g| format!("{g}*"))
        })
        .unwrap_or_default();
    match allowed.with_patch(json_patch::diff(&pod, &injected)) {
        Ok(patched) => {
            tracing::info!(pod = %name, %namespace, "sidecar injected");
            patched
        }
        Err(error) => AdmissionResponse::from(request).deny(format!(
            "cannot write the injection patch for pod {name}: {error}"
        )),
    }
}

/// Istio's `injectRequired` with its default policy (`enabled`): a pod that reached the webhook is
/// injected unless it runs on the host's network (the interception rules would change the node's), it
/// lives in one of [`IGNORED_NAMESPACES`], or it says `sidecar.istio.io/inject: "false"` (label, else
/// annotation). Already injected pods are left to [`ironmesh_api::inject::inject_pod_json`].
pub fn injection_required(namespace: &str, pod: &Value) -> bool {
    if pod["spec"]["hostNetwork"].as_bool() == Some(true) || IGNORED_NAMESPACES.contains(&namespace)
    {
        return false;
    }
    let metadata = pod["metadata"].as_object().cloned().unwrap_or_default();
    ironmesh_api::inject::pod_injection_choice(&metadata) != Some(false)
}
