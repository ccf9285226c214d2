//! The validating admission webhook: the API server asks it about every Istio resource before storing one,
//! and it answers with the same validation and field errors as `ironmesh apply`
//! ([`ironmesh_api::validate_object`]), so `kubectl apply` of an invalid policy fails the same way.
//!
//! [`review`] is the pure decision (an `admission.k8s.io/v1` AdmissionReview in, one out); [`serve`] puts
//! it on HTTPS (TLS 1.2 and 1.3: the API server is the client) at [`VALIDATE_PATH`], beside the sidecar
//! injector at [`crate::inject::INJECT_PATH`]; [`ServingCert`] makes the certificate whose CA goes into
//! both webhook configurations' `caBundle` ([`keep_ca_bundle`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::{Method, Request, Response, StatusCode};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admission;
use crate::crds::ISTIO_GROUPS;

/// Where the API server posts reviews (the webhook configuration's `path`).
pub const VALIDATE_PATH: &str = "/validate";
/// The webhook's name in the configuration, as kubectl prints it: `admission webhook "..." denied`.
/// Istio's name for the webhook of resources without an `istio.io/rev` label.
pub const WEBHOOK_NAME: &str = "validation.istio.io";
/// Istio's name for the same webhook for resources labelled `istio.io/rev: default` (the default
/// revision, which is the only one ironmesh serves). Both are in the configuration, as in Istio's, so
/// Istio's tooling finds what it looks for.
pub const REV_WEBHOOK_NAME: &str = "rev.validation.istio.io";
/// An UPDATE's review carries the object and its old version, each up to Kubernetes' 3 MiB object cap
/// (etcd's request limit is 1.5 MiB), plus the envelope: 8 MiB leaves room for both.
pub const MAX_REVIEW_BYTES: usize = 8 << 20;

/// Decides one AdmissionReview (as JSON) and returns the AdmissionReview answer. Objects of Istio's
/// groups are validated with our rules and refused with every field error; deletions and every other
/// kind are allowed. An unreadable review gets an answer that refuses it, naming what was wrong.
pub fn review(body: &Value) -> Value {
    admission::answer(body, WHO, decide)
}

/// [`review`] of a request body as the API server sends it, parsed once straight into the typed review.
pub fn review_bytes(body: &[u8]) -> Value {
    admission::answer_bytes(body, WHO, decide)
}

const WHO: &str = "webhook";

fn decide(request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let allowed = AdmissionResponse::from(request);
    if !ISTIO_GROUPS.contains(&request.kind.group.as_str())
        || !matches!(request.operation, Operation::Create | Operation::Update)
    {
        return allowed;
    }
    let Some(object) = &request.object else {
        return allowed;
    };
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    // The API server sends the object with its envelope; fill it from the request if a client left it out.
    if value.get("apiVersion").is_none() || value.get("kind").is_none() {
        let api_version = if request.kind.group.is_empty() {
            request.kind.version.clone()
        } else {
            format!("{}/{}", request.kind.group, request.kind.version)
        };
        value["apiVersion"] = Value::String(api_version);
        value["kind"] = Value::String(request.kind.kind.clone());
    }
    let object: ironmesh_api::Object = match serde_json::from_value(value) {
        Ok(object) => object,
        Err(error) => return allowed.deny(format!("{}: {error}", subject(request))),
    };
    // A kind of these groups that ironmesh does not serve (say Istio's own VirtualService, when both
    // are installed) is not ours to refuse.
    let Ok(info) = ironmesh_api::kind_for_type(&object.api_version, &object.kind) else {
        return allowed;
    };
    let subject = format!(
        "{}/{}{}",
        info.display_group(&object.api_version),
        if object.metadata.name.is_empty() {
            request.name.as_str()
        } else {
            object.metadata.name.as_str()
        },
        request
            .namespace
            .as_deref()
            .map(|ns| format!(" in namespace {ns}"))
            .unwrap_or_default()
    );
    match ironmesh_api::validate_object_with_warnings(&object) {
        Ok(warnings) => {
            let mut allowed = allowed;
            if !warnings.is_empty() {
                allowed.warnings =
                    Some(warnings.iter().map(|w| format!("{subject}: {w}")).collect());
            }
            allowed
        }
        Err(errors) => {
            let problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
            let mut denied = allowed;
            denied.allowed = false;
            // 400 Invalid, as the API server's own validation answers; kubectl prints the message.
            denied.result = kube::core::Status::failure(
                &format!("{subject}: {}", problems.join("; ")),
                "Invalid",
            )
            .with_code(400);
            denied
        }
    }
}

fn subject(request: &AdmissionRequest<DynamicObject>) -> String {
    format!("{} {}", request.kind.kind, request.name)
}

/// Installs ring as the process's rustls provider (kube-rs' client and our server both use it); an error
/// means one is installed already, which is what we want.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why the webhook's certificate or listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("cannot make the webhook's serving certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("the webhook's TLS configuration is invalid: {0}")]
    Tls(#[from] rustls::Error),
}

/// The webhook's serving certificate and the CA that signed it (the configuration's `caBundle`).
pub struct ServingCert {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl ServingCert {
    /// A fresh CA and a certificate for `names` (DNS names, or IP addresses such as 127.0.0.1), for a
    /// webhook server that runs without the mesh CA (the tests of this crate). The control plane serves
    /// its webhooks with a certificate of the mesh CA instead, so that every replica publishes the same
    /// `caBundle`.
    pub fn generate(names: &[String]) -> Result<ServingCert, WebhookError> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "ironmesh webhook CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem = ca.self_signed(&ca_key)?.pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut leaf = CertificateParams::new(names.to_vec())?;
        leaf.distinguished_name.push(
            DnType::CommonName,
            names.first().map_or("istiod", String::as_str),
        );
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert_pem = leaf.signed_by(&key, &issuer)?.pem();
        Ok(ServingCert {
            ca_pem,
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// The certificate chain and key in the form rustls takes them.
    pub fn chain_and_key(
        &self,
    ) -> Result<
        (
            Vec<rustls_pki_types::CertificateDer<'static>>,
            rustls_pki_types::PrivateKeyDer<'static>,
        ),
        WebhookError,
    > {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let pem_error = |e: rustls_pki_types::pem::Error| rustls::Error::General(e.to_string());
        let chain =
            vec![CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).map_err(pem_error)?];
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(pem_error)?;
        Ok((chain, key))
    }

    /// A rustls server configuration (TLS 1.2 and 1.3, ring) presenting this certificate.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, WebhookError> {
        let (chain, key) = self.chain_and_key()?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        Ok(Arc::new(config))
    }
}

/// A webhook configuration whose `caBundle` the control plane keeps: the validating one (Istio's
/// resources) and the mutating one (sidecar injection). Both are served by the same HTTPS server, so
/// both trust the same CA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Configuration {
    /// [`crate::install::WEBHOOK_CONFIGURATION`]: [`REV_WEBHOOK_NAME`] and [`WEBHOOK_NAME`], switched
    /// to `Fail` once published.
    Validating,
    /// [`crate::inject::INJECTOR_CONFIGURATION`]: its two webhooks, `Fail` from the install on (Istio's).
    Mutating,
}

impl Configuration {
    pub const ALL: [Configuration; 2] = [Configuration::Validating, Configuration::Mutating];

    /// The configuration's name.
    pub fn name(self) -> &'static str {
        match self {
            Configuration::Validating => crate::install::WEBHOOK_CONFIGURATION,
            Configuration::Mutating => crate::inject::INJECTOR_CONFIGURATION,
        }
    }

    /// Our webhooks in it.
    pub fn webhooks(self) -> &'static [&'static str] {
        match self {
            Configuration::Validating => &[REV_WEBHOOK_NAME, WEBHOOK_NAME],
            Configuration::Mutating => &[
                crate::inject::NAMESPACE_WEBHOOK,
                crate::inject::OBJECT_WEBHOOK,
            ],
        }
    }

    fn api(self, client: &kube::Client) -> kube::Api<DynamicObject> {
        use kube::api::{ApiResource, GroupVersionKind};
        let (kind, plural) = match self {
            Configuration::Validating => (
                "ValidatingWebhookConfiguration",
                "validatingwebhookconfigurations",
            ),
            Configuration::Mutating => (
                "MutatingWebhookConfiguration",
                "mutatingwebhookconfigurations",
            ),
        };
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind),
            plural,
        );
        kube::Api::all_with(client.clone(), &resource)
    }

    /// The strategic merge patch that publishes `ca_base64` (`webhooks` is a list merged by `name`,
    /// so only ours change) and, for the validating webhook, turns on `Fail`.
    fn patch(self, ca_base64: &str) -> Value {
        let webhooks: Vec<Value> = self
            .webhooks()
            .iter()
            .map(|name| {
                let mut webhook = serde_json::json!({
                    "name": name,
                    "clientConfig": {"caBundle": ca_base64},
                });
                if self == Configuration::Validating {
                    webhook["failurePolicy"] = "Fail".into();
                }
                webhook
            })
            .collect();
        serde_json::json!({ "webhooks": webhooks })
    }

    /// Whether every one of our webhooks in `configuration` trusts `ca_base64` (and the validating one
    /// refuses when unreachable).
    fn is_published(self, configuration: &DynamicObject, ca_base64: &str) -> bool {
        let webhooks = configuration.data["webhooks"].as_array();
        self.webhooks().iter().all(|name| {
            webhooks.into_iter().flatten().any(|webhook| {
                webhook["name"] == *name
                    && webhook["clientConfig"]["caBundle"] == ca_base64
                    && (self == Configuration::Mutating || webhook["failurePolicy"] == "Fail")
            })
        })
    }
}

/// Puts `ca_pem` into the installed webhook configuration's `caBundle` and, for the validating one,
/// makes it refuse when the webhook cannot be reached (`failurePolicy: Fail`): from now on the API
/// server calls us and trusts only this CA. `Ok(false)` when `ironmesh install` has not created the
/// configuration.
pub async fn publish_ca_bundle(
    client: &kube::Client,
    configuration: Configuration,
    ca_pem: &str,
) -> Result<bool, kube::Error> {
    use base64::Engine as _;
    use kube::api::{Patch, PatchParams};
    let patch = configuration.patch(&base64::engine::general_purpose::STANDARD.encode(ca_pem));
    match configuration
        .api(client)
        .patch(
            configuration.name(),
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(error),
    }
}

/// Keeps `ca_pem` published ([`publish_ca_bundle`]) in both configurations until `shutdown`: watches
/// each and patches it whenever it appears (an install after the control plane started) or loses our
/// CA or `Fail` (a second install resets the validating `failurePolicy` to `Ignore`), as istiod does
/// with its own. A failed patch is retried with backoff (1 s doubling to 60 s) until it succeeds.
pub async fn keep_ca_bundle(client: kube::Client, ca_pem: String, shutdown: CancellationToken) {
    let keep = |configuration| keep_one(&client, configuration, &ca_pem, &shutdown);
    futures::future::join_all(Configuration::ALL.map(keep)).await;
}

async fn keep_one(
    client: &kube::Client,
    configuration: Configuration,
    ca_pem: &str,
    shutdown: &CancellationToken,
) {
    use base64::Engine as _;
    use futures::StreamExt as _;
    use kube::runtime::{WatchStreamExt as _, watcher};
    let ca_base64 = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let config =
        watcher::Config::default().fields(&format!("metadata.name={}", configuration.name()));
    let events = watcher(configuration.api(client), config)
        .default_backoff()
        .applied_objects();
    let mut events = std::pin::pin!(events);
    loop {
        let object = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.next() => match event {
                Some(Ok(object)) => object,
                Some(Err(error)) => {
                    tracing::warn!(%error, configuration = configuration.name(),
                        "cannot watch the webhook configuration; retrying");
                    continue;
                }
                None => return,
            },
        };
        if configuration.is_published(&object, &ca_base64) {
            continue;
        }
        // Retried until it succeeds: the configuration may not change again for days, so waiting for
        // its next event would leave the API server distrusting us (or ignoring us) until then.
        let mut delay = Duration::from_secs(1);
        loop {
            match publish_ca_bundle(client, configuration, ca_pem).await {
                Ok(_) => {
                    tracing::info!(
                        configuration = configuration.name(),
                        "webhook CA published; the API server now calls the control plane's webhooks"
                    );
                    break;
                }
                Err(error) => tracing::warn!(
                    %error,
                    configuration = configuration.name(),
                    retry_in = ?delay,
                    "cannot publish the webhook's CA; check the RBAC"
                ),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(60));
        }
    }
}

pub use crate::https::ServeLimits;

/// Serves [`review`] at [`VALIDATE_PATH`] and the injector at [`crate::inject::INJECT_PATH`] over HTTPS on
/// `listener` until `shutdown`, with the default
/// [`ServeLimits`].
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) {
    serve_with(listener, tls, ServeLimits::default(), shutdown).await;
}

/// [`serve`] with the given limits.
pub async fn serve_with(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: ServeLimits,
    shutdown: CancellationToken,
) {
    let body_limits = Arc::new(limits.clone());
    crate::https::serve_https(listener, tls, &limits, "webhook", shutdown, move |_peer| {
        let limits = body_limits.clone();
        move |request| handle(request, limits.clone())
    })
    .await;
}

fn reply(status: StatusCode, body: Vec<u8>, content_type: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn text(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    reply(status, format!("{message}\n").into_bytes(), "text/plain")
}

async fn handle(
    request: Request<hyper::body::Incoming>,
    limits: Arc<ServeLimits>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let post = request.method() == Method::POST;
    let review: fn(&[u8]) -> Value = match request.uri().path() {
        VALIDATE_PATH if post => review_bytes,
        crate::inject::INJECT_PATH if post => crate::inject::review_bytes,
        _ => {
            return Ok(text(
                StatusCode::NOT_FOUND,
                format!(
                    "POST AdmissionReviews to {VALIDATE_PATH} (validation) or {} (injection)",
                    crate::inject::INJECT_PATH
                ),
            ));
        }
    };
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the review is larger than the webhook's limit of {} bytes",
                limits.max_body_bytes
            ),
        )
    };
    // A declared length over the limit is refused before a byte of the body is read.
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limits.max_body_bytes as u64) {
        return Ok(too_large());
    }
    let body = Limited::new(request.into_body(), limits.max_body_bytes).collect();
    let body = match tokio::time::timeout(limits.request_timeout, body).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(error)) if error.is::<LengthLimitError>() => return Ok(too_large()),
        Ok(Err(error)) => {
            return Ok(text(
                StatusCode::BAD_REQUEST,
                format!("cannot read the review: {error}"),
            ));
        }
        Err(_elapsed) => {
            return Ok(text(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the review's body did not arrive within {:?}",
                    limits.request_timeout
                ),
            ));
        }
    };
    Ok(reply(
        StatusCode::OK,
        serde_json::to_vec(&review(&body)).unwrap_or_default(),
        "application/json",
    ))
}
