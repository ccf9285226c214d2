//! What `ironmesh install` puts into a cluster: Istio's CRDs, the `istio-system` namespace, the control
//! plane's ServiceAccount and RBAC, the validating and the mutating (sidecar injection) webhook
//! configurations, the control plane's Deployment and Service (named `istiod`, with istiod's ports), and
//! the APIService `v1beta1.extensions` with its Service (the seed's `extensions/v1beta1` Deployments,
//! [`crate::extensions`]). [`manifests`] builds them (pure);
//! [`to_yaml`] prints them for `--dry-run`; [`apply`] applies them server-side.

use std::net::SocketAddr;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

use crate::crds;
use crate::extensions;
use crate::inject::{INJECT_PATH, INJECTOR_CONFIGURATION, NAMESPACE_WEBHOOK, OBJECT_WEBHOOK};
use crate::webhook::{REV_WEBHOOK_NAME, VALIDATE_PATH, WEBHOOK_NAME};

/// Where the control plane runs.
pub const NAMESPACE: &str = "istio-system";
/// The control plane's Deployment, Service and ServiceAccount (Istio's names, so tools that look for
/// istiod find it).
pub const NAME: &str = "istiod";
/// The validating webhook configuration, named as Istio names its own.
pub const WEBHOOK_CONFIGURATION: &str = "istio-validator-istio-system";
/// The configuration stream and CA over TLS (istiod's port).
pub const XDS_TLS_PORT: u16 = 15012;
/// The webhooks' HTTPS port (istiod's; its Service exposes it as 443).
pub const WEBHOOK_PORT: u16 = 15017;
/// The control plane's image: the release's, as images/build.sh builds it (imported into the nodes,
/// never pulled: the Deployment says `IfNotPresent`).
pub const DEFAULT_IMAGE: &str = concat!("ironmesh/control-plane:", env!("CARGO_PKG_VERSION"));
/// The field manager of server-side apply.
pub const FIELD_MANAGER: &str = "ironmesh-install";

/// How to install.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    /// The control plane's image.
    pub image: String,
    /// When the control plane runs outside the cluster (against a kubeconfig, as the tests run it): the
    /// URL the API server calls for reviews, e.g. `https://127.0.0.1:15017/validate`; the injector is
    /// called at the same address with the path `/inject`. Then no Deployment or Service is installed.
    pub webhook_url: Option<String>,
    /// When the control plane runs outside the cluster: the address (not loopback: Kubernetes refuses
    /// it in Endpoints) where the API server's aggregator reaches its `extensions/v1beta1` API, e.g.
    /// the test cluster's host address `198.18.127.1:15018`. Without it (and outside), no APIService
    /// is installed.
    pub aggregated_api_endpoint: Option<SocketAddr>,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            image: DEFAULT_IMAGE.into(),
            webhook_url: None,
            aggregated_api_endpoint: None,
        }
    }
}

fn labels() -> Value {
    json!({"app": NAME, "app.kubernetes.io/part-of": "ironmesh"})
}

/// The RBAC rules the control plane needs: watch what [`crate::KubeSource`] reads, report status on
/// Istio's resources, verify proxies' tokens (TokenReview) and patch the webhooks' `caBundle`.
fn cluster_role() -> Value {
    let istio_resources: Vec<&str> = crds::istio_kinds().map(|k| k.plural).collect();
    let istio_status: Vec<String> = istio_resources
        .iter()
        .map(|r| format!("{r}/status"))
        .collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": format!("{NAME}-{NAMESPACE}"), "labels": labels()},
        "rules": [
            {"apiGroups": [""], "resources": ["namespaces", "pods", "services", "serviceaccounts"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": crds::ISTIO_GROUPS, "resources": istio_resources, "verbs": ["get", "list", "watch"]},
            {"apiGroups": crds::ISTIO_GROUPS, "resources": istio_status, "verbs": ["get", "update", "patch"]},
            {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
            // The extensions/v1beta1 Deployments: each request authorized for its user by a
            // SubjectAccessReview, then done on apps/v1 as the control plane.
            {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
            {"apiGroups": ["apps"], "resources": ["deployments"],
             "verbs": ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]},
            {"apiGroups": ["apiregistration.k8s.io"], "resources": ["apiservices"],
             "resourceNames": [extensions::API_SERVICE], "verbs": ["get", "patch", "update"]},
            // The mesh roots in every namespace (ConfigMap istio-ca-root-cert), as istiod writes them.
            {"apiGroups": [""], "resources": ["configmaps"],
             "verbs": ["get", "list", "watch", "create", "update", "patch"]},
            {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"],
             "resourceNames": [WEBHOOK_CONFIGURATION], "verbs": ["get", "list", "watch", "patch", "update"]},
            {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
             "resourceNames": [INJECTOR_CONFIGURATION], "verbs": ["get", "list", "watch", "patch", "update"]},
        ],
    })
}

/// The CA's Secrets in the control plane's namespace: `cacerts` (read and watched) and
/// `istio-ca-secret` (created once, then read and watched), as istiod's Role allows; and the Events
/// that say when a changed Secret was taken or refused.
fn ca_secrets_role() -> Vec<Value> {
    let name = format!("{NAME}-{NAMESPACE}");
    vec![
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels()},
            "rules": [{"apiGroups": [""], "resources": ["secrets"],
                       "verbs": ["get", "list", "watch", "create", "update", "patch"]},
                      {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        }),
    ]
}

/// Kubernetes' own role for delegated authentication (TokenReview), bound as istiod binds it.
fn auth_delegator_binding() -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{NAME}-auth-delegator-{NAMESPACE}"), "labels": labels()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
    })
}

fn webhook_configuration(options: &InstallOptions) -> Value {
    let client_config = match &options.webhook_url {
        Some(url) => json!({"url": url}),
        None => {
            json!({"service": {"name": NAME, "namespace": NAMESPACE, "path": VALIDATE_PATH, "port": 443}})
        }
    };
    let rules: Vec<Value> = crds::ISTIO_GROUPS
        .iter()
        .map(|group| {
            let resources: Vec<&str> = crds::istio_kinds()
                .filter(|k| k.group == *group)
                .map(|k| k.plural)
                .collect();
            json!({"operations": ["CREATE", "UPDATE"], "apiGroups": [group], "apiVersions": ["*"],
                   "resources": resources, "scope": "*"})
        })
        .collect();
    // Istio's two webhooks: resources of the default revision (`istio.io/rev: default`) and resources
    // of no revision. Another revision's resources are that revision's to validate.
    let webhook = |name: &str, revision: Value| {
        json!({
            "name": name,
            "clientConfig": client_config,
            "rules": rules,
            // Ignore until the control plane has patched in its CA and switched this to Fail (as
            // istiod does): an install must not block every Istio resource before the webhook serves.
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
            "objectSelector": {"matchExpressions": [revision]},
        })
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK_CONFIGURATION, "labels": labels()},
        "webhooks": [
            webhook(
                REV_WEBHOOK_NAME,
                json!({"key": "istio.io/rev", "operator": "In", "values": ["default"]}),
            ),
            webhook(
                WEBHOOK_NAME,
                json!({"key": "istio.io/rev", "operator": "DoesNotExist"}),
            ),
        ],
    })
}

/// The injector's client configuration: the validating webhook's address with [`INJECT_PATH`].
fn injector_client_config(options: &InstallOptions) -> Value {
    match &options.webhook_url {
        Some(url) => {
            let after_scheme = url.find("://").map_or(0, |i| i + 3);
            let origin = match url[after_scheme..].find('/') {
                Some(slash) => &url[..after_scheme + slash],
                None => url.as_str(),
            };
            json!({"url": format!("{origin}{INJECT_PATH}")})
        }
        None => {
            json!({"service": {"name": NAME, "namespace": NAMESPACE, "path": INJECT_PATH, "port": 443}})
        }
    }
}

/// Istio's sidecar injector configuration (its default revision's two webhooks): pods created in
/// namespaces labelled `istio-injection=enabled` unless labelled `sidecar.istio.io/inject=false`, and
/// pods labelled `sidecar.istio.io/inject=true` in namespaces without that label. Revisions
/// (`istio.io/rev`) are Istio's business: the object webhook leaves them alone as Istio's does. Neither
/// ever sees `istio-system` or `kube-system`: with `failurePolicy: Fail` (Istio's) a pod there would
/// wait for a control plane that is one of those pods.
fn injector_configuration(options: &InstallOptions) -> Value {
    let not_ours = json!({"key": "kubernetes.io/metadata.name", "operator": "NotIn",
        "values": [NAMESPACE, "kube-system"]});
    let webhook = |name: &str, namespace_selector: Value, object_selector: Value| {
        json!({
            "name": name,
            "clientConfig": injector_client_config(options),
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchExpressions": namespace_selector},
            "objectSelector": {"matchExpressions": object_selector},
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
        })
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": INJECTOR_CONFIGURATION, "labels": labels()},
        "webhooks": [
            webhook(
                NAMESPACE_WEBHOOK,
                json!([{"key": "istio-injection", "operator": "In", "values": ["enabled"]}, not_ours]),
                json!([{"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}]),
            ),
            webhook(
                OBJECT_WEBHOOK,
                json!([{"key": "istio-injection", "operator": "DoesNotExist"},
                       {"key": "istio.io/rev", "operator": "DoesNotExist"}, not_ours]),
                json!([{"key": "sidecar.istio.io/inject", "operator": "In", "values": ["true"]},
                       {"key": "istio.io/rev", "operator": "DoesNotExist"}]),
            ),
        ],
    })
}

fn deployment(options: &InstallOptions) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels()},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": NAME}},
            "template": {
                "metadata": {"labels": labels()},
                "spec": {
                    "serviceAccountName": NAME,
                    "containers": [{
                        "name": "discovery",
                        "image": options.image,
                        "imagePullPolicy": "IfNotPresent",
                        // In-cluster: the pod's service account; the CA's keys are in a Secret, so
                        // the home is scratch (an emptyDir).
                        "command": ["ironmesh-control-plane", "run"],
                        "env": [{"name": "IRONMESH_HOME", "value": "/var/lib/ironmesh"}],
                        "ports": [
                            {"name": "grpc-xds-tls", "containerPort": XDS_TLS_PORT, "protocol": "TCP"},
                            {"name": "https-webhook", "containerPort": WEBHOOK_PORT, "protocol": "TCP"},
                            {"name": "https-ext", "containerPort": extensions::PORT, "protocol": "TCP"},
                        ],
                        "readinessProbe": {"tcpSocket": {"port": WEBHOOK_PORT}, "periodSeconds": 3},
                        "volumeMounts": [{"name": "state", "mountPath": "/var/lib/ironmesh"}],
                        "securityContext": {"runAsNonRoot": true, "runAsUser": 1337, "runAsGroup": 1337,
                            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]}},
                    }],
                    "volumes": [{"name": "state", "emptyDir": {}}],
                },
            },
        },
    })
}

fn service() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels()},
        "spec": {
            "selector": {"app": NAME},
            "ports": [
                {"name": "grpc-xds-tls", "port": XDS_TLS_PORT, "targetPort": XDS_TLS_PORT, "protocol": "TCP"},
                {"name": "https-webhook", "port": 443, "targetPort": WEBHOOK_PORT, "protocol": "TCP"},
            ],
        },
    })
}

/// The mesh-wide PERMISSIVE MeshPolicy `default` that Istio 1.x's install created (the seed's `kubectl get
/// meshpolicies.authentication.istio.io` lists it, and `kubectl apply -f default-mesh-policy.yml` then
/// says `configured`). Created only when absent ([`apply`]): a second install keeps the user's policy.
fn default_mesh_policy() -> Value {
    json!({
        "apiVersion": "authentication.istio.io/v1alpha1",
        "kind": "MeshPolicy",
        "metadata": {"name": "default", "labels": labels()},
        "spec": {"peers": [{"mtls": {"mode": "PERMISSIVE"}}]},
    })
}

/// The aggregated API's Service (and, for a control plane outside the cluster, its Endpoints) and the
/// APIService that routes `extensions/v1beta1` to it. Its group priority is low, so `deployments`
/// without a group still means `apps`.
fn aggregated_api(options: &InstallOptions) -> Vec<Value> {
    let outside = options.webhook_url.is_some();
    let port = json!({"name": "https", "port": 443, "protocol": "TCP",
        "targetPort": options.aggregated_api_endpoint.map_or(extensions::PORT, |a| a.port())});
    let mut service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": extensions::SERVICE, "namespace": NAMESPACE, "labels": labels()},
        "spec": {"ports": [port]},
    });
    let mut out = Vec::new();
    match (outside, options.aggregated_api_endpoint) {
        (false, _) => {
            service["spec"]["selector"] = json!({"app": NAME});
            out.push(service);
        }
        (true, Some(endpoint)) => {
            out.push(service);
            // A Service without a selector and its one endpoint: the aggregator (routing to endpoints)
            // dials the control plane there; EndpointSlice mirroring copies it.
            out.push(json!({
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": extensions::SERVICE, "namespace": NAMESPACE, "labels": labels()},
                "subsets": [{"addresses": [{"ip": endpoint.ip().to_string()}],
                             "ports": [{"name": "https", "port": endpoint.port(), "protocol": "TCP"}]}],
            }));
        }
        (true, None) => return out,
    }
    out.push(json!({
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": extensions::API_SERVICE, "labels": labels()},
        "spec": {
            "group": extensions::GROUP,
            "version": extensions::VERSION,
            "groupPriorityMinimum": 100,
            "versionPriority": 100,
            "service": {"namespace": NAMESPACE, "name": extensions::SERVICE, "port": 443},
        },
    }));
    out
}

/// Every manifest, in the order they are applied (CRDs and the namespace first).
pub fn manifests(options: &InstallOptions) -> Vec<Value> {
    let mut out = crds::crds();
    out.push(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {"istio-injection": "disabled"}}}));
    out.push(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels()}}));
    out.push(cluster_role());
    out.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{NAME}-{NAMESPACE}"), "labels": labels()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{NAME}-{NAMESPACE}")},
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
    }));
    out.push(auth_delegator_binding());
    out.extend(ca_secrets_role());
    // The aggregated API reads the aggregator's requestheader settings (kube-system's
    // extension-apiserver-authentication ConfigMap) with the Role Kubernetes keeps for that.
    out.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": format!("{NAME}-{NAMESPACE}-extension-apiserver-authentication-reader"),
                     "namespace": "kube-system", "labels": labels()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "extension-apiserver-authentication-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
    }));
    out.push(webhook_configuration(options));
    out.push(injector_configuration(options));
    out.push(default_mesh_policy());
    if options.webhook_url.is_none() {
        out.push(deployment(options));
        out.push(service());
    }
    out.extend(aggregated_api(options));
    out
}

/// The manifests as YAML documents separated by `---`, as `kubectl apply -f` reads them.
pub fn to_yaml(manifests: &[Value]) -> Result<String, InstallError> {
    let mut out = String::new();
    for manifest in manifests {
        out.push_str("---\n");
        out.push_str(
            &serde_saphyr::to_string(manifest).map_err(|e| InstallError::Yaml(e.to_string()))?,
        );
    }
    Ok(out)
}

/// Why an install failed; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot write the manifests as YAML: {0}")]
    Yaml(String),
    #[error("manifest {0} has no apiVersion, kind or name")]
    Incomplete(String),
    #[error("kind {0} is not one install knows the resource of")]
    UnknownKind(String),
    #[error(
        "the API server refused {object}: {source}; check that the kubeconfig's user may create it (cluster-admin)"
    )]
    Apply { object: String, source: kube::Error },
    #[error("CRD {0} did not become Established within 30 s; see `kubectl describe crd {0}`")]
    NotEstablished(String),
}

/// The API resource of a manifest's kind (install's kinds only) and whether it is namespaced.
fn resource_of(api_version: &str, kind: &str) -> Option<(ApiResource, bool)> {
    let (plural, namespaced) = match kind {
        "CustomResourceDefinition" => ("customresourcedefinitions", false),
        "Namespace" => ("namespaces", false),
        "ServiceAccount" => ("serviceaccounts", true),
        "ClusterRole" => ("clusterroles", false),
        "ClusterRoleBinding" => ("clusterrolebindings", false),
        "Role" => ("roles", true),
        "RoleBinding" => ("rolebindings", true),
        "APIService" => ("apiservices", false),
        "Endpoints" => ("endpoints", true),
        "MeshPolicy" => ("meshpolicies", false),
        "ValidatingWebhookConfiguration" => ("validatingwebhookconfigurations", false),
        "MutatingWebhookConfiguration" => ("mutatingwebhookconfigurations", false),
        "Deployment" => ("deployments", true),
        "Service" => ("services", true),
        _ => return None,
    };
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Some((ApiResource::from_gvk_with_plural(&gvk, plural), namespaced))
}

/// Applies `manifests` server-side (field manager [`FIELD_MANAGER`], taking over conflicting fields), in
/// order, and waits for the CRDs to be Established so Istio resources can be created right after.
pub async fn apply(
    client: &kube::Client,
    manifests: &[Value],
) -> Result<Vec<String>, InstallError> {
    let mut applied = Vec::new();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for manifest in manifests {
        let field = |path: &str| manifest.pointer(path).and_then(Value::as_str);
        let (Some(api_version), Some(kind), Some(name)) = (
            field("/apiVersion"),
            field("/kind"),
            field("/metadata/name"),
        ) else {
            return Err(InstallError::Incomplete(manifest.to_string()));
        };
        let (resource, namespaced) =
            resource_of(api_version, kind).ok_or_else(|| InstallError::UnknownKind(kind.into()))?;
        let api: Api<DynamicObject> = match (namespaced, field("/metadata/namespace")) {
            (true, Some(namespace)) => Api::namespaced_with(client.clone(), namespace, &resource),
            _ => Api::all_with(client.clone(), &resource),
        };
        let object = format!("{}/{name}", resource.plural);
        let error = |source| InstallError::Apply {
            object: object.clone(),
            source,
        };
        if kind == "MeshPolicy" {
            // Created when absent, never overwritten: it may be the user's STRICT one by now.
            let create = kube::api::PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            let typed: DynamicObject = serde_json::from_value(manifest.clone())
                .map_err(|e| error(kube::Error::SerdeError(e)))?;
            match api.create(&create, &typed).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(source) => return Err(error(source)),
            }
        } else {
            api.patch(name, &params, &Patch::Apply(manifest))
                .await
                .map_err(error)?;
        }
        if kind == "CustomResourceDefinition" {
            wait_established(&api, name).await?;
        }
        applied.push(object);
    }
    Ok(applied)
}

async fn wait_established(api: &Api<DynamicObject>, name: &str) -> Result<(), InstallError> {
    for _ in 0..300 {
        if let Ok(crd) = api.get(name).await {
            let established = crd.data["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Established" && c["status"] == "True");
            if established {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(InstallError::NotEstablished(name.into()))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::admissionregistration::v1::{
        MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
    };
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;

    use super::*;

    /// Deserialises a document into its k8s-openapi type; unknown fields are an error, so a misspelt
    /// field cannot hide behind serde's leniency.
    fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> T {
        let object: T =
            serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{e}: {doc:#}"));
        let back = serde_json::to_value(&object).unwrap();
        assert_eq!(
            strip_nulls(doc),
            strip_nulls(&back),
            "a field the type does not know"
        );
        object
    }

    fn strip_nulls(value: &Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), strip_nulls(v)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(strip_nulls).collect()),
            other => other.clone(),
        }
    }

    #[test]
    fn the_dry_run_yaml_parses_back_into_valid_kubernetes_objects() {
        let yaml = to_yaml(&manifests(&InstallOptions::default())).unwrap();
        let docs: Vec<Value> = yaml
            .split("\n---\n")
            .map(|doc| doc.trim_start_matches("---\n"))
            .map(|doc| serde_saphyr::from_str(doc).unwrap())
            .collect();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "CustomResourceDefinition",
                "CustomResourceDefinition",
                "CustomResourceDefinition",
                "CustomResourceDefinition",
                "CustomResourceDefinition",
                "CustomResourceDefinition",
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "RoleBinding",
                "ValidatingWebhookConfiguration",
                "MutatingWebhookConfiguration",
                "MeshPolicy",
                "Deployment",
                "Service",
                "Service",
                "APIService",
            ]
        );
        for doc in &docs {
            match doc["kind"].as_str().unwrap() {
                "CustomResourceDefinition" => {
                    let crd: CustomResourceDefinition = typed(doc);
                    for version in &crd.spec.versions {
                        let schema = serde_json::to_value(&version.schema).unwrap();
                        assert_eq!(
                            crds::structural_problem(&schema["openAPIV3Schema"], "schema"),
                            None
                        );
                    }
                }
                "Namespace" => drop(typed::<Namespace>(doc)),
                "ServiceAccount" => drop(typed::<ServiceAccount>(doc)),
                "ClusterRole" => drop(typed::<ClusterRole>(doc)),
                "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(doc)),
                "Role" => drop(typed::<Role>(doc)),
                "RoleBinding" => drop(typed::<RoleBinding>(doc)),
                "MeshPolicy" => {
                    let policy: ironmesh_api::Object = serde_json::from_value(doc.clone()).unwrap();
                    ironmesh_api::validate_object(&policy).unwrap();
                }
                "APIService" => {
                    let service: APIService = typed(doc);
                    let spec = service.spec.unwrap();
                    assert_eq!(
                        (spec.group.as_deref(), spec.version.as_deref()),
                        (Some("extensions"), Some("v1beta1"))
                    );
                    assert!(spec.group_priority_minimum < 17800, "below apps");
                }
                "ValidatingWebhookConfiguration" => {
                    let config: ValidatingWebhookConfiguration = typed(doc);
                    let webhooks = config.webhooks.unwrap();
                    let names: Vec<&str> = webhooks.iter().map(|w| w.name.as_str()).collect();
                    assert_eq!(names, ["rev.validation.istio.io", "validation.istio.io"]);
                    for webhook in &webhooks {
                        let service = webhook.client_config.service.as_ref().unwrap();
                        assert_eq!((service.name.as_str(), service.port), (NAME, Some(443)));
                        assert_eq!(service.path.as_deref(), Some(VALIDATE_PATH));
                    }
                }
                "MutatingWebhookConfiguration" => {
                    let config: MutatingWebhookConfiguration = typed(doc);
                    let webhooks = config.webhooks.unwrap();
                    let names: Vec<&str> = webhooks.iter().map(|w| w.name.as_str()).collect();
                    assert_eq!(names, [NAMESPACE_WEBHOOK, OBJECT_WEBHOOK]);
                    for webhook in &webhooks {
                        let service = webhook.client_config.service.as_ref().unwrap();
                        assert_eq!(service.path.as_deref(), Some(INJECT_PATH));
                        assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"));
                    }
                }
                "Deployment" => {
                    let deployment: Deployment = typed(doc);
                    let pod = deployment.spec.unwrap().template.spec.unwrap();
                    assert_eq!(pod.service_account_name.as_deref(), Some(NAME));
                }
                "Service" if doc["metadata"]["name"] == extensions::SERVICE => {
                    let service: Service = typed(doc);
                    let spec = service.spec.unwrap();
                    assert_eq!(spec.ports.unwrap()[0].port, 443);
                    assert!(spec.selector.is_some(), "in the cluster it selects istiod");
                }
                "Service" => {
                    let service: Service = typed(doc);
                    let ports: Vec<i32> = service
                        .spec
                        .unwrap()
                        .ports
                        .unwrap()
                        .iter()
                        .map(|p| p.port)
                        .collect();
                    assert_eq!(ports, [15012, 443]);
                }
                other => panic!("unexpected kind {other}"),
            }
        }
    }

    #[test]
    fn a_control_plane_outside_the_cluster_gets_a_webhook_url_and_no_deployment() {
        let manifests = manifests(&InstallOptions {
            webhook_url: Some("https://127.0.0.1:15017/validate".into()),
            ..InstallOptions::default()
        });
        assert!(
            manifests
                .iter()
                .all(|m| m["kind"] != "Deployment" && m["kind"] != "Service")
        );
        let config = manifests
            .iter()
            .find(|m| m["kind"] == "ValidatingWebhookConfiguration")
            .unwrap();
        assert_eq!(
            config["webhooks"][0]["clientConfig"],
            json!({"url": "https://127.0.0.1:15017/validate"})
        );
        let injector = manifests
            .iter()
            .find(|m| m["kind"] == "MutatingWebhookConfiguration")
            .unwrap();
        for webhook in injector["webhooks"].as_array().unwrap() {
            assert_eq!(
                webhook["clientConfig"],
                json!({"url": "https://127.0.0.1:15017/inject"})
            );
        }
    }

    /// Which webhook of the injector a pod's CREATE reaches, evaluating the selectors as the API server
    /// does (matchExpressions with In, NotIn, DoesNotExist over the labels).
    fn reached(namespace_labels: Value, pod_labels: Value) -> Vec<String> {
        fn matches(expressions: &Value, labels: &Value) -> bool {
            expressions.as_array().unwrap().iter().all(|e| {
                let value = labels
                    .get(e["key"].as_str().unwrap())
                    .and_then(Value::as_str);
                let values: Vec<&str> = e["values"]
                    .as_array()
                    .map(|v| v.iter().map(|v| v.as_str().unwrap()).collect())
                    .unwrap_or_default();
                match e["operator"].as_str().unwrap() {
                    "In" => value.is_some_and(|v| values.contains(&v)),
                    "NotIn" => value.is_none_or(|v| !values.contains(&v)),
                    "DoesNotExist" => value.is_none(),
                    other => panic!("operator {other} not evaluated here"),
                }
            })
        }
        let config = injector_configuration(&InstallOptions::default());
        config["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| {
                matches(
                    &w["namespaceSelector"]["matchExpressions"],
                    &namespace_labels,
                ) && matches(&w["objectSelector"]["matchExpressions"], &pod_labels)
            })
            .map(|w| w["name"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_injector_selects_pods_as_istios_does() {
        let ns = |name: &str, extra: Value| {
            let mut labels = json!({"kubernetes.io/metadata.name": name});
            labels
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            labels
        };
        let enabled = json!({"istio-injection": "enabled"});
        // (namespace labels, pod labels, the webhooks reached)
        let table = [
            (
                ns("foo", enabled.clone()),
                json!({}),
                vec![NAMESPACE_WEBHOOK],
            ),
            (
                ns("foo", enabled.clone()),
                json!({"sidecar.istio.io/inject": "false"}),
                vec![],
            ),
            (
                ns("foo", enabled.clone()),
                json!({"sidecar.istio.io/inject": "true"}),
                vec![NAMESPACE_WEBHOOK],
            ),
            (ns("bar", json!({})), json!({}), vec![]),
            (
                ns("bar", json!({})),
                json!({"sidecar.istio.io/inject": "true"}),
                vec![OBJECT_WEBHOOK],
            ),
            (
                ns("bar", json!({"istio-injection": "disabled"})),
                json!({"sidecar.istio.io/inject": "true"}),
                vec![],
            ),
            (
                ns("bar", json!({"istio.io/rev": "canary"})),
                json!({"sidecar.istio.io/inject": "true"}),
                vec![],
            ),
            (
                ns("bar", json!({})),
                json!({"sidecar.istio.io/inject": "true", "istio.io/rev": "canary"}),
                vec![],
            ),
            (ns("istio-system", enabled.clone()), json!({}), vec![]),
            (
                ns("istio-system", json!({})),
                json!({"sidecar.istio.io/inject": "true"}),
                vec![],
            ),
            (
                ns("kube-system", json!({})),
                json!({"sidecar.istio.io/inject": "true"}),
                vec![],
            ),
        ];
        for (namespace, pod, expected) in table {
            assert_eq!(
                reached(namespace.clone(), pod.clone()),
                expected,
                "namespace {namespace}, pod {pod}"
            );
        }
    }

    #[test]
    fn outside_the_cluster_the_aggregated_api_is_a_service_without_selector_and_its_endpoint() {
        let manifests = manifests(&InstallOptions {
            webhook_url: Some("https://127.0.0.1:15017/validate".into()),
            aggregated_api_endpoint: Some("198.18.127.1:15018".parse().unwrap()),
            ..InstallOptions::default()
        });
        let find = |kind: &str| manifests.iter().find(|m| m["kind"] == kind).unwrap();
        assert!(find("Service")["spec"].get("selector").is_none());
        assert_eq!(
            find("Endpoints")["subsets"][0],
            json!({"addresses": [{"ip": "198.18.127.1"}],
                   "ports": [{"name": "https", "port": 15018, "protocol": "TCP"}]})
        );
        assert_eq!(find("APIService")["metadata"]["name"], "v1beta1.extensions");
        // Outside without an address: no APIService that would point nowhere.
        let without = super::manifests(&InstallOptions {
            webhook_url: Some("https://127.0.0.1:15017/validate".into()),
            ..InstallOptions::default()
        });
        assert!(without.iter().all(|m| m["kind"] != "APIService"));
    }

    #[test]
    fn the_role_lets_the_control_plane_watch_review_tokens_and_patch_its_webhook() {
        let role: ClusterRole = typed(&cluster_role());
        let allows = |group: &str, resource: &str, verb: &str| {
            role.rules.as_ref().unwrap().iter().any(|rule| {
                rule.api_groups.as_ref().unwrap().iter().any(|g| g == group)
                    && rule
                        .resources
                        .as_ref()
                        .unwrap()
                        .iter()
                        .any(|r| r == resource)
                    && rule.verbs.iter().any(|v| v == verb)
            })
        };
        for resource in crate::source::watched_resources() {
            assert!(
                allows(&resource.group, &resource.plural, "watch"),
                "{}",
                resource.plural
            );
            assert!(
                allows(&resource.group, &resource.plural, "list"),
                "{}",
                resource.plural
            );
        }
        assert!(allows("authentication.k8s.io", "tokenreviews", "create"));
        for configurations in [
            "validatingwebhookconfigurations",
            "mutatingwebhookconfigurations",
        ] {
            assert!(allows(
                "admissionregistration.k8s.io",
                configurations,
                "patch"
            ));
        }
        assert!(allows("", "configmaps", "create"));
        assert!(allows("", "configmaps", "patch"));
        assert!(allows(
            "authorization.k8s.io",
            "subjectaccessreviews",
            "create"
        ));
        for verb in ["get", "list", "create", "patch", "delete"] {
            assert!(allows("apps", "deployments", verb), "{verb}");
        }
        assert!(
            !allows("", "secrets", "get"),
            "no secrets beyond what is needed: the CA's are in istio-system only (a Role)"
        );
    }

    #[test]
    fn the_control_plane_may_review_tokens_and_keep_the_ca_in_its_own_namespace_only() {
        let all = manifests(&InstallOptions::default());
        let delegator = all
            .iter()
            .find(|m| m["roleRef"]["name"] == "system:auth-delegator")
            .expect("a binding to system:auth-delegator");
        assert_eq!(delegator["kind"], "ClusterRoleBinding");
        assert_eq!(delegator["subjects"][0]["name"], NAME);
        let role: Role = typed(all.iter().find(|m| m["kind"] == "Role").unwrap());
        assert_eq!(role.metadata.namespace.as_deref(), Some(NAMESPACE));
        let rule = &role.rules.unwrap()[0];
        assert_eq!(rule.resources.as_deref(), Some(&["secrets".to_owned()][..]));
        assert!(rule.verbs.iter().any(|v| v == "create"));
        let binding: RoleBinding = typed(all.iter().find(|m| m["kind"] == "RoleBinding").unwrap());
        assert_eq!(binding.role_ref.name, role.metadata.name.unwrap());
    }
}
