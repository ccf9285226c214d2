//! Read-only views of the Kubernetes objects the controllers work with (Pods, Services, Deployments), over
//! the JSON-shaped [`Object`]: the few fields the local runtime needs, with Kubernetes' defaults applied.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ironmesh_api::Object;
use serde_json::Value;

/// Label that marks a pod whose proxy terminates mesh mTLS (set by injection, read by auto mTLS).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// Name of the injected sidecar container.
pub const PROXY_CONTAINER: &str = "ironmesh-proxy";

/// `metadata.namespace`, `default` when absent (kubectl's default namespace).
pub fn namespace(object: &Object) -> &str {
    object.metadata.namespace.as_deref().unwrap_or("default")
}

/// `ns/name`, the key controllers use for an object.
pub fn key(object: &Object) -> String {
    format!("{}/{}", namespace(object), object.metadata.name)
}

/// A Kubernetes equality selector matches when every pair is among the labels; an empty selector matches
/// nothing for Services (Kubernetes gives such a Service no endpoints).
pub fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn spec(object: &Object) -> Option<&Value> {
    object.body.get("spec")
}

fn status(object: &Object) -> Option<&Value> {
    object.body.get("status")
}

/// How a Service port names its target: a number, or the name of a container port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

/// One Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub target_port: TargetPort,
    pub app_protocol: Option<String>,
}

/// A Service as the controllers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePort>,
    pub cluster_ip: Option<Ipv4Addr>,
}

impl ServiceView {
    pub fn of(object: &Object) -> ServiceView {
        let spec = spec(object);
        let ports = spec
            .and_then(|s| s.get("ports"))
            .and_then(Value::as_array)
            .map(|ports| ports.iter().filter_map(service_port).collect())
            .unwrap_or_default();
        ServiceView {
            namespace: namespace(object).to_owned(),
            name: object.metadata.name.clone(),
            selector: string_map(spec.and_then(|s| s.get("selector"))),
            ports,
            cluster_ip: spec
                .and_then(|s| s.get("clusterIP"))
                .and_then(Value::as_str)
                .and_then(|ip| ip.parse().ok()),
        }
    }

    /// `name.namespace.svc.cluster.local`.
    pub fn hostname(&self) -> String {
        format!(
            "{}.{}.svc.{}",
            self.name,
            self.namespace,
            ironmesh_api::policy::CLUSTER_DOMAIN
        )
    }
}

fn service_port(port: &Value) -> Option<ServicePort> {
    let number = u16::try_from(port.get("port")?.as_u64()?).ok()?;
    let target_port = match port.get("targetPort") {
        Some(Value::Number(n)) => {
            TargetPort::Number(n.as_u64().and_then(|n| u16::try_from(n).ok())?)
        }
        Some(Value::String(s)) => match s.parse::<u16>() {
            Ok(n) => TargetPort::Number(n),
            Err(_) => TargetPort::Name(s.clone()),
        },
        _ => TargetPort::Number(number),
    };
    Some(ServicePort {
        name: port
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        port: number,
        target_port,
        app_protocol: port
            .get("appProtocol")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// The application protocol of a service port, by Istio's rules: `appProtocol` first, else the port name's
/// prefix before the first `-` (`http`, `http-web`, `http2`, `grpc-api`, `tcp`, ...); unknown means TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppProtocol {
    Http,
    Http2,
    Grpc,
    Tcp,
}

pub fn app_protocol(port: &ServicePort) -> AppProtocol {
    let declared = port
        .app_protocol
        .clone()
        .unwrap_or_else(|| port.name.split('-').next().unwrap_or_default().to_owned())
        .to_ascii_lowercase();
    match declared.as_str() {
        "http" => AppProtocol::Http,
        "http2" | "h2c" => AppProtocol::Http2,
        "grpc" | "grpc-web" => AppProtocol::Grpc,
        _ => AppProtocol::Tcp,
    }
}

/// One container of a pod.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Variables from the downward API: `(name, fieldRef.fieldPath)`, resolved by the kubelet. Variables
    /// of other `valueFrom` sources are in neither list.
    pub field_env: Vec<(String, String)>,
    /// `(name, containerPort)`.
    pub ports: Vec<(String, u16)>,
    /// `securityContext` as written (null when absent).
    pub security: Value,
    /// `volumeMounts`: `(volume name, mountPath, readOnly)`.
    pub volume_mounts: Vec<(String, String, bool)>,
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn container(value: &Value) -> ContainerView {
    let vars = value.get("env").and_then(Value::as_array);
    let field_env = vars
        .into_iter()
        .flatten()
        .filter_map(|var| {
            let name = var.get("name")?.as_str()?.to_owned();
            let path = var.pointer("/valueFrom/fieldRef/fieldPath")?.as_str()?;
            Some((name, path.to_owned()))
        })
        .collect();
    let env = value
        .get("env")
        .and_then(Value::as_array)
        .map(|vars| {
            vars.iter()
                // Downward-API variables are `field_env`'s; other sources (Secrets, ConfigMaps,
                // resources) the local runtime does not have: left unset rather than set empty.
                .filter(|var| var.get("valueFrom").is_none())
                .filter_map(|var| {
                    let name = var.get("name")?.as_str()?.to_owned();
                    let value = match var.get("value") {
                        Some(Value::String(s)) => s.clone(),
                        Some(other) if !other.is_null() => other.to_string(),
                        _ => String::new(),
                    };
                    Some((name, value))
                })
                .collect()
        })
        .unwrap_or_default();
    let ports = value
        .get("ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| {
                    let number = u16::try_from(p.get("containerPort")?.as_u64()?).ok()?;
                    let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
                    Some((name.to_owned(), number))
                })
                .collect()
        })
        .unwrap_or_default();
    ContainerView {
        field_env,
        name: value
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        image: value
            .get("image")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        command: strings(value.get("command")),
        args: strings(value.get("args")),
        env,
        ports,
        security: value.get("securityContext").cloned().unwrap_or(Value::Null),
        volume_mounts: value
            .get("volumeMounts")
            .and_then(Value::as_array)
            .map(|mounts| {
                mounts
                    .iter()
                    .filter_map(|m| {
                        Some((
                            m.get("name")?.as_str()?.to_owned(),
                            m.get("mountPath")?.as_str()?.to_owned(),
                            m.get("readOnly").and_then(Value::as_bool).unwrap_or(false),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// A Pod as the controllers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub init_containers: Vec<ContainerView>,
    pub containers: Vec<ContainerView>,
    pub pod_ip: Option<Ipv4Addr>,
    pub phase: Option<String>,
    pub ready: bool,
    pub termination_grace_seconds: u64,
    /// The pod's `securityContext` (null when absent).
    pub security: Value,
    /// `volumes` as written.
    pub volumes: Vec<Value>,
}

impl PodView {
    pub fn of(object: &Object) -> PodView {
        let spec = spec(object);
        let list = |field: &str| {
            spec.and_then(|s| s.get(field))
                .and_then(Value::as_array)
                .map(|cs| cs.iter().map(container).collect())
                .unwrap_or_default()
        };
        let status = status(object);
        let ready = status
            .and_then(|s| s.get("conditions"))
            .and_then(Value::as_array)
            .is_some_and(|conditions| {
                conditions.iter().any(|c| {
                    c.get("type").and_then(Value::as_str) == Some("Ready")
                        && c.get("status").and_then(Value::as_str) == Some("True")
                })
            });
        PodView {
            namespace: namespace(object).to_owned(),
            name: object.metadata.name.clone(),
            uid: object.metadata.uid.clone().unwrap_or_default(),
            labels: object.metadata.labels.clone(),
            service_account: spec
                .and_then(|s| {
                    s.get("serviceAccountName")
                        .or_else(|| s.get("serviceAccount"))
                })
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or("default")
                .to_owned(),
            init_containers: list("initContainers"),
            containers: list("containers"),
            pod_ip: status
                .and_then(|s| s.get("podIP"))
                .and_then(Value::as_str)
                .and_then(|ip| ip.parse().ok()),
            phase: status
                .and_then(|s| s.get("phase"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            ready,
            termination_grace_seconds: spec
                .and_then(|s| s.get("terminationGracePeriodSeconds"))
                .and_then(Value::as_u64)
                .unwrap_or(5)
                .min(30),
            security: spec
                .and_then(|s| s.get("securityContext"))
                .cloned()
                .unwrap_or(Value::Null),
            volumes: spec
                .and_then(|s| s.get("volumes"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// Whether the pod runs the mesh proxy.
    pub fn has_sidecar(&self) -> bool {
        self.containers.iter().any(|c| c.name == PROXY_CONTAINER)
    }

    /// The container port a Service target port points at.
    pub fn resolve_target_port(&self, target: &TargetPort) -> Option<u16> {
        match target {
            TargetPort::Number(n) => Some(*n),
            TargetPort::Name(name) => self
                .containers
                .iter()
                .flat_map(|c| c.ports.iter())
                .find(|(port_name, _)| port_name == name)
                .map(|(_, number)| *number),
        }
    }

    /// `ns/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(yaml: &str) -> Object {
        ironmesh_api::load_documents("test.yaml", yaml)
            .unwrap()
            .remove(0)
            .object
    }

    #[test]
    fn service_ports_default_target_port_to_port() {
        let svc = ServiceView::of(&object(
            "apiVersion: v1\nkind: Service\nmetadata: {name: httpbin, namespace: foo}\nspec:\n  selector: {app: httpbin}\n  ports:\n  - {name: http, port: 8000}\n  - {name: grpc-api, port: 9000, targetPort: grpc}\n",
        ));
        assert_eq!(svc.ports[0].target_port, TargetPort::Number(8000));
        assert_eq!(svc.ports[1].target_port, TargetPort::Name("grpc".into()));
        assert_eq!(svc.hostname(), "httpbin.foo.svc.cluster.local");
        assert_eq!(app_protocol(&svc.ports[0]), AppProtocol::Http);
        assert_eq!(app_protocol(&svc.ports[1]), AppProtocol::Grpc);
    }

    #[test]
    fn protocol_follows_istio_port_naming() {
        let port = |name: &str, app: Option<&str>| ServicePort {
            name: name.into(),
            port: 80,
            target_port: TargetPort::Number(80),
            app_protocol: app.map(str::to_owned),
        };
        for (name, app, want) in [
            ("http", None, AppProtocol::Http),
            ("http-web", None, AppProtocol::Http),
            ("HTTP", None, AppProtocol::Http),
            ("http2", None, AppProtocol::Http2),
            ("grpc", None, AppProtocol::Grpc),
            ("tcp-db", None, AppProtocol::Tcp),
            ("https", None, AppProtocol::Tcp),
            ("", None, AppProtocol::Tcp),
            ("web", Some("http"), AppProtocol::Http),
            ("http", Some("tcp"), AppProtocol::Tcp),
        ] {
            assert_eq!(app_protocol(&port(name, app)), want, "{name} {app:?}");
        }
    }

    #[test]
    fn empty_selector_selects_nothing() {
        let labels = BTreeMap::from([("app".to_owned(), "sleep".to_owned())]);
        assert!(!selector_matches(&BTreeMap::new(), &labels));
        assert!(selector_matches(&labels.clone(), &labels));
    }

    #[test]
    fn pod_defaults_service_account_and_finds_named_ports() {
        let pod = PodView::of(&object(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: foo}\nspec:\n  containers:\n  - name: app\n    image: x\n    ports: [{name: grpc, containerPort: 9090}]\n  - name: ironmesh-proxy\n    image: ironmesh/proxy\n",
        ));
        assert_eq!(pod.service_account, "default");
        assert!(pod.has_sidecar());
        assert_eq!(
            pod.resolve_target_port(&TargetPort::Name("grpc".into())),
            Some(9090)
        );
        assert_eq!(
            pod.resolve_target_port(&TargetPort::Name("nope".into())),
            None
        );
    }
}
