//! The AdmissionReview envelope both admission webhooks share: read an `admission.k8s.io/v1` review,
//! hand its request to the webhook's decision ([`crate::webhook`]'s validation, [`crate::inject`]'s
//! injection), and write the answer as the API server reads it. An unreadable review is refused, saying
//! which webhook could not read it and what it expects.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use serde::Deserialize as _;
use serde_json::Value;

/// A webhook's decision on one request.
pub type Decide = fn(&AdmissionRequest<DynamicObject>) -> AdmissionResponse;

/// Answers one review (as JSON) with `decide`; `who` names the webhook in the refusal of an unreadable
/// review ("the {who} could not read the AdmissionReview").
pub fn answer(review: &Value, who: &str, decide: Decide) -> Value {
    // `&Value` is a deserializer itself: no copy of the (possibly multi-megabyte) review.
    respond(
        AdmissionReview::<DynamicObject>::deserialize(review).map_err(|e| e.to_string()),
        who,
        decide,
    )
}

/// [`answer`] of a request body as the API server sends it, parsed once straight into the typed review.
pub fn answer_bytes(body: &[u8], who: &str, decide: Decide) -> Value {
    respond(
        serde_json::from_slice::<AdmissionReview<DynamicObject>>(body).map_err(|e| e.to_string()),
        who,
        decide,
    )
}

fn respond(
    review: Result<AdmissionReview<DynamicObject>, String>,
    who: &str,
    decide: Decide,
) -> Value {
    let response = match review.and_then(|review| {
        TryInto::<AdmissionRequest<DynamicObject>>::try_into(review).map_err(|e| e.to_string())
    }) {
        Ok(request) => decide(&request),
        Err(error) => AdmissionResponse::invalid(format!(
            "the {who} could not read the AdmissionReview ({error}); it expects admission.k8s.io/v1 with a request"
        )),
    };
    let mut answer = serde_json::to_value(response.into_review()).unwrap_or(Value::Null);
    // kube-rs writes a patch's bytes as a JSON array of numbers; the API's type is `[]byte`, which
    // Kubernetes' own clients write as base64 (what its documentation shows): write it so.
    if let Some(patch) = answer.pointer_mut("/response/patch") {
        let bytes: Option<Vec<u8>> = patch.as_array().map(|items| {
            items
                .iter()
                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect()
        });
        if let Some(bytes) = bytes {
            use base64::Engine as _;
            *patch = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
    }
    answer
}
