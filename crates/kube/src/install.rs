//! What `ironmesh install` puts into a cluster: Istio's CRDs, the `istio-system` namespace, the control
//! plane's ServiceAccount and RBAC, the validating webhook configuration, the control plane's
//! Deployment and Service (named `istiod`, with istiod's ports), and the APIService `v1beta1.extensions`
//! with its Service (the seed's `extensions/v1beta1` Deployments, [`crate::extensions`]). [`manifests`] builds them (pure);
//! [`to_yaml`] prints them for `--dry-run`; [`apply`] applies them server-side.

use std::net::SocketAddr;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

use crate::crds;
use crate::extensions;
use crate::webhook::{VALIDATE_PATH, WEBHOOK_NAME};

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
/// The field manager of server-side apply.
pub const FIELD_MANAGER: &str = "ironmesh-install";

/// How to install.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    /// The control plane's image.
    pub image: String,
    /// When the control plane runs outside the cluster (against a kubeconfig, as the tests run it): the
    /// URL the API server calls for reviews, e.g. `https://127.0.0.1:15017/validate`. Then no
    /// Deployment or Service is installed.
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
            image: "ironmesh/control-plane:latest".into(),
            webhook_url: None,
            aggregated_api_endpoint: None,
        }
    }
}

fn labels() -> Value {
    json!({"app": NAME, "app.kubernetes.io/part-of": "ironmesh"})
}

/// The RBAC rules the control plane needs: watch what [`crate::KubeSource`] reads, report status on
/// Istio's resources, verify proxies' tokens (TokenReview) and patch the webhook's `caBundle`.
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
            {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"],
             "resourceNames": [WEBHOOK_CONFIGURATION], "verbs": ["get", "list", "watch", "patch", "update"]},
        ],
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
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK_CONFIGURATION, "labels": labels()},
        "webhooks": [{
            "name": WEBHOOK_NAME,
            "clientConfig": client_config,
            "rules": rules,
            // Ignore until the control plane has patched in its CA and switched this to Fail (as
            // istiod does): an install must not block every Istio resource before the webhook serves.
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
        }],
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
        "RoleBinding" => ("rolebindings", true),
        "APIService" => ("apiservices", false),
        "Endpoints" => ("endpoints", true),
        "MeshPolicy" => ("meshpolicies", false),
        "ValidatingWebhookConfiguration" => ("validatingwebhookconfigurations", false),
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
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleBinding};
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
                "RoleBinding",
                "ValidatingWebhookConfiguration",
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
                    let webhook = &config.webhooks.unwrap()[0];
                    let service = webhook.client_config.service.as_ref().unwrap();
                    assert_eq!((service.name.as_str(), service.port), (NAME, Some(443)));
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
        assert!(allows(
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            "patch"
        ));
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
            "no secrets beyond what is needed"
        );
    }
}
