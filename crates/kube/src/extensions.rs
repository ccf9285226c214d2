//! The seed's `extensions/v1beta1` Deployments, served as an aggregated API.
//!
//! Kubernetes removed `extensions/v1beta1` Deployments in 1.16, but the seed's samples still declare
//! them, and `kubectl apply -f samples/httpbin/httpbin.yaml` must work unchanged. ironmesh registers the
//! APIService `v1beta1.extensions` (`ironmesh install`), so the API server's aggregator proxies
//! `/apis/extensions/v1beta1/...` to this server, which:
//!
//! - accepts only the aggregator: TLS with a client certificate from the requestheader client CA and a
//!   common name among the allowed names, both read from the `kube-system/extension-apiserver-authentication`
//!   ConfigMap, as any aggregated API server does ([`FrontProxy`]); the user is in the `X-Remote-User`,
//!   `X-Remote-Group` and `X-Remote-Extra-*` headers the aggregator sets;
//! - authorizes the user with a SubjectAccessReview for the same verb on `apps/v1` deployments, which is
//!   what the request really does;
//! - stores the object as an `apps/v1` Deployment (with the selector defaulted from the template's labels,
//!   as `extensions/v1beta1` did) through the control plane's own client, and answers in
//!   `extensions/v1beta1` form.
//!
//! Served: discovery, get, list, create, update, patch (kubectl's strategic merge patch for a second
//! `apply` goes to `apps/v1` as it is: the two versions' fields are the same), delete and deletecollection.
//! Not served: watch (answered 405), subresources (`scale`, `status`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
use hyper::{Method, Request, Response, StatusCode};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::webhook::{ServeLimits, ServingCert};

/// The group and version served.
pub const GROUP: &str = "extensions";
pub const VERSION: &str = "v1beta1";
/// `extensions/v1beta1`.
pub const GROUP_VERSION: &str = "extensions/v1beta1";
/// The APIService that routes the group here.
pub const API_SERVICE: &str = "v1beta1.extensions";
/// The Service the APIService names (in `istio-system`).
pub const SERVICE: &str = "ironmesh-extensions";
/// The name the aggregator verifies our certificate against: `<service>.<namespace>.svc`.
pub const SERVICE_HOST: &str = "ironmesh-extensions.istio-system.svc";
/// Where the control plane serves it.
pub const PORT: u16 = 15018;
/// Kubernetes' own bound on an object (3 MiB) plus room for the envelope.
pub const MAX_BODY_BYTES: usize = 4 << 20;

const PREFIX: &str = "/apis/extensions/v1beta1";
const APPS_PREFIX: &str = "/apis/apps/v1";
const AUTHENTICATION_CONFIGMAP: &str = "extension-apiserver-authentication";

/// Why the aggregated API cannot be served; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ExtensionsError {
    #[error(
        "cannot read the ConfigMap kube-system/{AUTHENTICATION_CONFIGMAP}: {0}; the control plane's service \
         account needs the Role extension-apiserver-authentication-reader there (`ironmesh install` binds it)"
    )]
    ReadAuthentication(kube::Error),
    #[error(
        "the ConfigMap kube-system/{AUTHENTICATION_CONFIGMAP} has no requestheader-client-ca-file: the API \
         server runs without the aggregation layer; start it with --requestheader-client-ca-file and \
         --proxy-client-cert-file (docs/KUBERNETES.md)"
    )]
    NoAggregationLayer,
    #[error(
        "the requestheader client CA of kube-system/{AUTHENTICATION_CONFIGMAP} is unusable: {0}"
    )]
    BadClientCa(String),
    #[error("the aggregated API's TLS configuration is invalid: {0}")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    Certificate(#[from] crate::webhook::WebhookError),
}

/// How the API server's aggregator (the front proxy) proves itself and names the user, from
/// `kube-system/extension-apiserver-authentication`.
#[derive(Clone, Debug)]
pub struct FrontProxy {
    /// The CA of the aggregator's client certificate (PEM).
    pub client_ca_pem: String,
    /// Common names the client certificate may have; empty means any the CA signed.
    pub allowed_names: Vec<String>,
    pub username_headers: Vec<String>,
    pub group_headers: Vec<String>,
    pub extra_header_prefixes: Vec<String>,
}

impl FrontProxy {
    /// Reads the requestheader settings the API server publishes for aggregated servers.
    pub async fn load(client: &kube::Client) -> Result<FrontProxy, ExtensionsError> {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("", "v1", "ConfigMap"),
            "configmaps",
        );
        let configmap =
            Api::<DynamicObject>::namespaced_with(client.clone(), "kube-system", &resource)
                .get(AUTHENTICATION_CONFIGMAP)
                .await
                .map_err(ExtensionsError::ReadAuthentication)?;
        let data = &configmap.data["data"];
        let client_ca_pem = data["requestheader-client-ca-file"]
            .as_str()
            .filter(|pem| !pem.trim().is_empty())
            .ok_or(ExtensionsError::NoAggregationLayer)?
            .to_owned();
        // The lists are JSON arrays inside the ConfigMap's strings.
        let list = |key: &str, default: &[&str]| -> Vec<String> {
            data[key]
                .as_str()
                .and_then(|text| serde_json::from_str::<Vec<String>>(text).ok())
                .unwrap_or_else(|| default.iter().map(|s| (*s).to_owned()).collect())
        };
        Ok(FrontProxy {
            client_ca_pem,
            allowed_names: list("requestheader-allowed-names", &[]),
            username_headers: list("requestheader-username-headers", &["X-Remote-User"]),
            group_headers: list("requestheader-group-headers", &["X-Remote-Group"]),
            extra_header_prefixes: list("requestheader-extra-headers-prefix", &["X-Remote-Extra-"]),
        })
    }

    /// A rustls server configuration presenting `cert` and requiring a client certificate from the
    /// requestheader CA (TLS 1.2 and 1.3: the API server is the client).
    pub fn server_config(
        &self,
        cert: &ServingCert,
    ) -> Result<Arc<rustls::ServerConfig>, ExtensionsError> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(self.client_ca_pem.as_bytes()) {
            let ca = ca.map_err(|e| ExtensionsError::BadClientCa(e.to_string()))?;
            roots
                .add(ca)
                .map_err(|e| ExtensionsError::BadClientCa(e.to_string()))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| ExtensionsError::BadClientCa(e.to_string()))?;
        let (chain, key) = cert.chain_and_key()?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        Ok(Arc::new(config))
    }

    /// Whether the verified client certificate's common name is one the API server allows.
    fn allows(&self, certificate: &[u8]) -> bool {
        if self.allowed_names.is_empty() {
            return true;
        }
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(certificate) else {
            return false;
        };
        parsed
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .any(|cn| self.allowed_names.iter().any(|allowed| allowed == cn))
    }

    /// The user the aggregator vouches for, from its headers; `None` without a user name.
    fn user(&self, headers: &HeaderMap) -> Option<User> {
        let values = |name: &str| -> Vec<String> {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::to_owned)
                .collect()
        };
        let name = self
            .username_headers
            .iter()
            .flat_map(|h| values(h))
            .find(|name| !name.is_empty())?;
        let groups = self.group_headers.iter().flat_map(|h| values(h)).collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (header, value) in headers {
            let header = header.as_str();
            for prefix in &self.extra_header_prefixes {
                let prefix = prefix.to_ascii_lowercase();
                if let Some(key) = header.strip_prefix(&prefix)
                    && let Ok(value) = value.to_str()
                {
                    // The keys are percent-encoded (a key may hold `/`, which a header name may not).
                    extra
                        .entry(percent_decode(key).to_ascii_lowercase())
                        .or_default()
                        .push(value.to_owned());
                }
            }
        }
        Some(User {
            name,
            groups,
            extra,
        })
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if bytes[i] == b'%'
            && let Some(byte) = hex
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug)]
struct User {
    name: String,
    groups: Vec<String>,
    extra: BTreeMap<String, Vec<String>>,
}

/// The certificate the aggregator verifies (named [`SERVICE_HOST`]).
pub fn serving_cert() -> Result<ServingCert, ExtensionsError> {
    Ok(ServingCert::generate(&[SERVICE_HOST.to_owned()])?)
}

fn api_services(client: &kube::Client) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService"),
        "apiservices",
    );
    Api::all_with(client.clone(), &resource)
}

/// Keeps `ca_pem` in the APIService's `caBundle` until `shutdown`: checks every `period` and patches it
/// when the APIService appears (an install after the control plane started) or holds another CA (a
/// second install, or an earlier control plane's).
pub async fn keep_ca_bundle(
    client: kube::Client,
    ca_pem: String,
    period: Duration,
    shutdown: CancellationToken,
) {
    use base64::Engine as _;
    let ca_base64 = base64::engine::general_purpose::STANDARD.encode(&ca_pem);
    let api = api_services(&client);
    let mut published = false;
    loop {
        match api.get_opt(API_SERVICE).await {
            Ok(Some(service)) if service.data["spec"]["caBundle"] == ca_base64.as_str() => {
                published = true;
            }
            Ok(Some(_)) => {
                let patch = json!({"spec": {"caBundle": ca_base64}});
                match api
                    .patch(API_SERVICE, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        published = true;
                        tracing::info!(
                            apiservice = API_SERVICE,
                            "aggregated API's CA published; extensions/v1beta1 Deployments are served"
                        );
                    }
                    Err(error) => tracing::warn!(
                        %error,
                        "cannot publish the aggregated API's CA in APIService {API_SERVICE}; check the RBAC"
                    ),
                }
            }
            Ok(None) => {
                if published {
                    tracing::warn!(
                        "APIService {API_SERVICE} is gone; extensions/v1beta1 is no longer served"
                    );
                }
                published = false;
            }
            Err(error) => tracing::warn!(%error, "cannot read APIService {API_SERVICE}"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

/// Serves the aggregated API on `listener` until `shutdown`: TLS with `tls` (from
/// [`FrontProxy::server_config`]), only to the aggregator, requests done with `client`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    front: FrontProxy,
    client: kube::Client,
    shutdown: CancellationToken,
) {
    let limits = ServeLimits {
        max_body_bytes: MAX_BODY_BYTES,
        ..ServeLimits::default()
    };
    let context = Arc::new(Context {
        front,
        client,
        limits: limits.clone(),
    });
    crate::https::serve_https(
        listener,
        tls,
        &limits,
        "aggregated API",
        shutdown,
        move |peer| {
            // The verifier checked the chain; the name is checked here, once per connection.
            let front_proxy = peer
                .certificate
                .is_some_and(|leaf| context.front.allows(leaf));
            let context = context.clone();
            move |request| handle(request, context.clone(), front_proxy)
        },
    )
    .await;
}

struct Context {
    front: FrontProxy,
    client: kube::Client,
    limits: ServeLimits,
}

fn json_reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(body).unwrap_or_default(),
        )))
        .unwrap_or_default()
}

/// A `metav1.Status` failure, as kubectl prints it (`Error from server (Reason): message`).
fn failure(code: StatusCode, reason: &str, message: String) -> Response<Full<Bytes>> {
    json_reply(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

/// The discovery documents of the group.
fn resource_list() -> Value {
    json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION,
        "resources": [{
            "name": "deployments", "singularName": "deployment", "namespaced": true, "kind": "Deployment",
            // No `watch`: the garbage collector and quota controllers then leave this copy of the apps/v1
            // Deployments alone.
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update"],
        }],
    })
}

fn api_group() -> Value {
    let version = json!({"groupVersion": GROUP_VERSION, "version": VERSION});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": GROUP, "versions": [version],
           "preferredVersion": version})
}

/// What a path under [`PREFIX`] names.
#[derive(Debug, PartialEq)]
enum Target<'a> {
    Discovery,
    /// All namespaces' Deployments.
    All,
    Collection(&'a str),
    Item(&'a str, &'a str),
}

fn target(path: &str) -> Option<Target<'_>> {
    let rest = path.strip_prefix(PREFIX)?;
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [] => Some(Target::Discovery),
        ["deployments"] => Some(Target::All),
        ["namespaces", namespace, "deployments"] => Some(Target::Collection(namespace)),
        ["namespaces", namespace, "deployments", name] => Some(Target::Item(namespace, name)),
        _ => None,
    }
}

fn is_watch(query: Option<&str>) -> bool {
    query.unwrap_or_default().split('&').any(|pair| {
        matches!(
            pair.split_once('='),
            Some(("watch", "true" | "1")) | Some(("watch", ""))
        ) || pair == "watch"
    })
}

async fn handle(
    request: Request<hyper::body::Incoming>,
    context: Arc<Context>,
    front_proxy: bool,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if !front_proxy {
        return Ok(failure(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "only the API server's aggregator may call this server".into(),
        ));
    }
    let path = request.uri().path().to_owned();
    // Health and discovery need no user: the aggregator's availability check asks for them.
    if request.method() == Method::GET {
        match path.as_str() {
            "/healthz" | "/readyz" | "/livez" => {
                return Ok(Response::new(Full::new(Bytes::from_static(b"ok"))));
            }
            "/apis" => {
                // The aggregated discovery format (apidiscovery.k8s.io/v2) is not served: 406 makes the
                // aggregator read the group's legacy documents below instead.
                let accept = header(request.headers(), ACCEPT);
                if accept.contains("as=APIGroupDiscoveryList") && !accepts_plain_json(&accept) {
                    return Ok(failure(
                        StatusCode::NOT_ACCEPTABLE,
                        "NotAcceptable",
                        "aggregated discovery is not served; read /apis/extensions/v1beta1".into(),
                    ));
                }
                return Ok(json_reply(
                    StatusCode::OK,
                    &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group()]}),
                ));
            }
            "/apis/extensions" | "/apis/extensions/" => {
                return Ok(json_reply(StatusCode::OK, &api_group()));
            }
            _ => {}
        }
    }
    let Some(target) = target(&path) else {
        return Ok(failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "the server could not find the requested resource ({path}): only extensions/v1beta1 \
                 deployments are served here"
            ),
        ));
    };
    if target == Target::Discovery {
        return Ok(if request.method() == Method::GET {
            json_reply(StatusCode::OK, &resource_list())
        } else {
            method_not_allowed(request.method())
        });
    }
    let Some(user) = context.front.user(request.headers()) else {
        return Ok(failure(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "the request carries no user; call through the API server".into(),
        ));
    };
    let query = request.uri().query().map(str::to_owned);
    let verb = match (request.method(), &target) {
        (&Method::GET, Target::Item(..)) => "get",
        (&Method::GET, _) if is_watch(query.as_deref()) => {
            return Ok(failure(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "watch is not served for extensions/v1beta1 deployments; watch deployments.apps"
                    .into(),
            ));
        }
        (&Method::GET, _) => "list",
        (&Method::POST, Target::Collection(_)) => "create",
        (&Method::PUT, Target::Item(..)) => "update",
        (&Method::PATCH, Target::Item(..)) => "patch",
        (&Method::DELETE, Target::Item(..)) => "delete",
        (&Method::DELETE, Target::Collection(_)) => "deletecollection",
        (method, _) => return Ok(method_not_allowed(method)),
    };
    let (namespace, name) = match target {
        Target::Item(namespace, name) => (Some(namespace), Some(name)),
        Target::Collection(namespace) => (Some(namespace), None),
        _ => (None, None),
    };
    match authorize(&context.client, &user, verb, namespace, name).await {
        Ok(None) => {}
        Ok(Some(reason)) => {
            let object = name.map_or(String::new(), |name| format!(" \"{name}\""));
            let place = namespace.map_or("at the cluster scope".to_owned(), |ns| {
                format!("in the namespace \"{ns}\"")
            });
            return Ok(failure(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "deployments.extensions{object} is forbidden: User \"{}\" cannot {verb} resource \
                     \"deployments\" in API group \"apps\" {place}{}: extensions/v1beta1 deployments are \
                     stored as apps/v1, so the apps/v1 permission is needed",
                    user.name,
                    if reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({reason})")
                    }
                ),
            ));
        }
        Err(error) => {
            return Ok(failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!(
                    "cannot check the user's permission with a SubjectAccessReview: {error}; the control \
                     plane's service account needs `create` on subjectaccessreviews (ironmesh install grants it)"
                ),
            ));
        }
    }
    Ok(forward(request, &context, verb, &path, query.as_deref()).await)
}

fn method_not_allowed(method: &Method) -> Response<Full<Bytes>> {
    failure(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("{method} is not served here"),
    )
}

fn header(headers: &HeaderMap, name: hyper::header::HeaderName) -> String {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",")
}

fn accepts_plain_json(accept: &str) -> bool {
    accept.split(',').any(|item| {
        let item = item.trim();
        item == "application/json" || item == "*/*" || item.starts_with("application/json;q=")
    })
}

/// `None` when the user may do `verb` on apps/v1 deployments there, else the authorizer's reason.
async fn authorize(
    client: &kube::Client,
    user: &User,
    verb: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<Option<String>, kube::Error> {
    let review = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user.name,
            "groups": user.groups,
            "extra": user.extra,
            "resourceAttributes": {
                "namespace": namespace.unwrap_or_default(),
                "verb": verb,
                "group": "apps",
                "version": "v1",
                "resource": "deployments",
                "name": name.unwrap_or_default(),
            },
        },
    });
    let request = hyper::Request::post("/apis/authorization.k8s.io/v1/subjectaccessreviews")
        .header(CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&review).unwrap_or_default())
        .map_err(kube::Error::HttpError)?;
    let answer: Value = client.request(request).await?;
    let status = &answer["status"];
    if status["allowed"].as_bool() == Some(true) && status["denied"].as_bool() != Some(true) {
        return Ok(None);
    }
    Ok(Some(
        status["reason"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// An `extensions/v1beta1` Deployment (or a patch of one) as `apps/v1` stores it.
fn to_apps(mut value: Value) -> Value {
    let Some(object) = value.as_object_mut() else {
        return value;
    };
    if object.contains_key("apiVersion") {
        object.insert("apiVersion".into(), json!("apps/v1"));
    }
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        // Fields apps/v1 dropped.
        spec.remove("rollbackTo");
        spec.remove("templateGeneration");
        // extensions/v1beta1 defaulted the selector to the template's labels; apps/v1 requires it.
        let labels = spec
            .get("template")
            .and_then(|t| t.pointer("/metadata/labels"))
            .cloned();
        if !spec.contains_key("selector")
            && let Some(labels) = labels
        {
            spec.insert("selector".into(), json!({"matchLabels": labels}));
        }
    }
    value
}

/// An `apps/v1` answer as `extensions/v1beta1` gives it.
fn to_extensions(value: &mut Value) {
    match value["kind"].as_str() {
        Some("Deployment") | Some("DeploymentList") => {
            value["apiVersion"] = json!(GROUP_VERSION);
            // `get_mut`, not `value["items"]`: indexing mutably would add `"items": null` to a single
            // Deployment, and Go's decoders take any object with an `items` key for a list (kubectl:
            // "object does not implement the Object interfaces").
            if let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) {
                for item in items {
                    if item.get("apiVersion").is_some() {
                        item["apiVersion"] = json!(GROUP_VERSION);
                    }
                }
            }
        }
        Some("Status") => {
            if let Some(message) = value["message"].as_str() {
                value["message"] =
                    json!(message.replace("deployments.apps", "deployments.extensions"));
            }
            if value["details"]["group"] == "apps" {
                value["details"]["group"] = json!(GROUP);
            }
        }
        _ => {}
    }
}

/// Does the request on `apps/v1` with the control plane's client and returns the answer converted.
async fn forward(
    request: Request<hyper::body::Incoming>,
    context: &Context,
    verb: &str,
    path: &str,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = Limited::new(body, context.limits.max_body_bytes).collect();
    let body = match tokio::time::timeout(context.limits.request_timeout, body).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(error)) if error.is::<LengthLimitError>() => {
            return failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                format!(
                    "the request is larger than {} bytes",
                    context.limits.max_body_bytes
                ),
            );
        }
        Ok(Err(error)) => {
            return failure(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("cannot read the request: {error}"),
            );
        }
        Err(_elapsed) => {
            return failure(
                StatusCode::REQUEST_TIMEOUT,
                "Timeout",
                "the request's body did not arrive in time".into(),
            );
        }
    };
    let content_type = header(&parts.headers, CONTENT_TYPE);
    let body = if body.is_empty() {
        Vec::new()
    } else {
        if content_type.contains("protobuf") {
            return failure(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                "send JSON: protobuf is not served for extensions/v1beta1".into(),
            );
        }
        match serde_json::from_slice::<Value>(&body) {
            // JSON patches (a list of operations) and delete options go as they are.
            Ok(value) if value.is_object() && matches!(verb, "create" | "update" | "patch") => {
                serde_json::to_vec(&to_apps(value)).unwrap_or_default()
            }
            Ok(_) => body.to_vec(),
            Err(error) => {
                return failure(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("the request's body is not JSON: {error}"),
                );
            }
        }
    };
    let mut uri = format!("{APPS_PREFIX}{}", &path[PREFIX.len()..]);
    if let Some(query) = query {
        uri.push('?');
        uri.push_str(query);
    }
    // JSON only: the answer is rewritten, which protobuf would not allow.
    let accept = header(&parts.headers, ACCEPT);
    let accept: Vec<&str> = accept
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty() && !item.contains("protobuf"))
        .collect();
    let accept = if accept.is_empty() {
        "application/json".to_owned()
    } else {
        accept.join(",")
    };
    let mut forwarded = hyper::Request::builder()
        .method(parts.method.clone())
        .uri(uri)
        .header(ACCEPT, accept);
    if !content_type.is_empty() {
        forwarded = forwarded.header(CONTENT_TYPE, content_type);
    }
    let forwarded = match forwarded.body(kube::client::Body::from(body)) {
        Ok(forwarded) => forwarded,
        Err(error) => {
            return failure(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("cannot forward the request: {error}"),
            );
        }
    };
    let answer = match context.client.send(forwarded).await {
        Ok(answer) => answer,
        Err(error) => {
            return failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!("cannot reach the API server for apps/v1: {error}"),
            );
        }
    };
    let (answer_parts, answer_body) = answer.into_parts();
    let answer_body = match answer_body.collect_bytes().await {
        Ok(bytes) => bytes,
        Err(error) => {
            return failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!("cannot read the API server's answer: {error}"),
            );
        }
    };
    let answer_type = header(&answer_parts.headers, CONTENT_TYPE);
    let answer_body = match serde_json::from_slice::<Value>(&answer_body) {
        Ok(mut value) if answer_type.starts_with("application/json") => {
            to_extensions(&mut value);
            Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
        }
        _ => answer_body,
    };
    let mut reply = Response::builder().status(answer_parts.status);
    if !answer_type.is_empty() {
        reply = reply.header(CONTENT_TYPE, answer_type);
    }
    reply.body(Full::new(answer_body)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_deployment_gets_its_selector_from_the_template_labels() {
        let seed = json!({
            "apiVersion": "extensions/v1beta1", "kind": "Deployment",
            "metadata": {"name": "httpbin"},
            "spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": "httpbin", "version": "v1"}},
                     "spec": {"containers": [{"name": "httpbin", "image": "docker.io/citizenstig/httpbin"}]}}},
        });
        let apps = to_apps(seed);
        assert_eq!(apps["apiVersion"], "apps/v1");
        assert_eq!(
            apps["spec"]["selector"],
            json!({"matchLabels": {"app": "httpbin", "version": "v1"}})
        );
        let given = to_apps(
            json!({"apiVersion": "extensions/v1beta1", "kind": "Deployment",
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "rollbackTo": {"revision": 1},
                     "template": {"metadata": {"labels": {"app": "x", "v": "1"}}}}}),
        );
        assert_eq!(
            given["spec"]["selector"],
            json!({"matchLabels": {"app": "x"}})
        );
        assert!(given["spec"].get("rollbackTo").is_none());
        // A patch without apiVersion stays without one.
        assert!(
            to_apps(json!({"spec": {"replicas": 2}}))
                .get("apiVersion")
                .is_none()
        );
    }

    #[test]
    fn answers_come_back_as_extensions_v1beta1() {
        let mut list = json!({"kind": "DeploymentList", "apiVersion": "apps/v1",
            "items": [{"apiVersion": "apps/v1", "kind": "Deployment"}, {"metadata": {}}]});
        to_extensions(&mut list);
        assert_eq!(list["apiVersion"], GROUP_VERSION);
        assert_eq!(list["items"][0]["apiVersion"], GROUP_VERSION);
        assert!(list["items"][1].get("apiVersion").is_none());
        let mut single = json!({"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {}});
        to_extensions(&mut single);
        assert_eq!(
            single,
            json!({"kind": "Deployment", "apiVersion": GROUP_VERSION, "metadata": {}}),
            "nothing added: an `items` key makes kubectl read a list"
        );
        let mut missing = json!({"kind": "Status", "message": "deployments.apps \"httpbin\" not found",
            "reason": "NotFound", "details": {"name": "httpbin", "group": "apps", "kind": "deployments"}});
        to_extensions(&mut missing);
        assert_eq!(
            missing["message"],
            "deployments.extensions \"httpbin\" not found"
        );
        assert_eq!(missing["details"]["group"], "extensions");
    }

    #[test]
    fn paths_name_what_kubectl_asks_for() {
        assert_eq!(target("/apis/extensions/v1beta1"), Some(Target::Discovery));
        assert_eq!(
            target("/apis/extensions/v1beta1/deployments"),
            Some(Target::All)
        );
        assert_eq!(
            target("/apis/extensions/v1beta1/namespaces/foo/deployments"),
            Some(Target::Collection("foo"))
        );
        assert_eq!(
            target("/apis/extensions/v1beta1/namespaces/foo/deployments/httpbin"),
            Some(Target::Item("foo", "httpbin"))
        );
        assert_eq!(
            target("/apis/extensions/v1beta1/namespaces/foo/deployments/httpbin/scale"),
            None
        );
        assert_eq!(
            target("/apis/extensions/v1beta1/namespaces/foo/ingresses"),
            None
        );
        assert!(is_watch(Some("labelSelector=a&watch=true")));
        assert!(!is_watch(Some("limit=500")));
    }

    #[test]
    fn extra_keys_are_percent_decoded() {
        assert_eq!(percent_decode("example.com%2fteam"), "example.com/team");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%2"), "bad%2");
    }
}
