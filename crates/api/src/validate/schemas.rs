//! The field schemas of every kind: strict for the Istio kinds (unknown fields are errors), open for the
//! Kubernetes kinds (we check what we use and keep the rest).

use super::shape::Shape::{
    self, Any, Bool, Enum, Int, IntOrStr, List, Open, Port, PortMap, Str, StrMap, Strict,
};

const STRINGS: Shape = List(&Str);

const METADATA: Shape = Open(&[
    ("name", Str),
    ("namespace", Str),
    ("labels", StrMap),
    ("annotations", StrMap),
    ("uid", Str),
    ("resourceVersion", Str),
    ("generation", Int),
    ("creationTimestamp", Str),
]);

const WORKLOAD_SELECTOR: Shape = Strict(&[("matchLabels", StrMap)]);

// --- authentication.istio.io/v1alpha1 (MeshPolicy, Policy) -----------------------------------------
pub(crate) static LEGACY_MTLS_MODES: &[&str] = &["STRICT", "PERMISSIVE"];
const LEGACY_POLICY_SPEC: Shape = Strict(&[
    (
        "targets",
        List(&Strict(&[
            ("name", Str),
            ("labels", StrMap),
            ("ports", List(&Strict(&[("number", Port), ("name", Str)]))),
        ])),
    ),
    (
        "peers",
        List(&Strict(&[
            (
                "mtls",
                Strict(&[("mode", Enum(LEGACY_MTLS_MODES)), ("allowTls", Bool)]),
            ),
            ("jwt", Any),
        ])),
    ),
    ("peerIsOptional", Bool),
    ("origins", List(&Strict(&[("jwt", Any)]))),
    ("originIsOptional", Bool),
    ("principalBinding", Enum(&["USE_PEER", "USE_ORIGIN"])),
]);

// --- security.istio.io (PeerAuthentication, AuthorizationPolicy) -----------------------------------
pub(crate) static PEER_MTLS_MODES: &[&str] = &["UNSET", "DISABLE", "PERMISSIVE", "STRICT"];
const PEER_MTLS: Shape = Strict(&[("mode", Enum(PEER_MTLS_MODES))]);
const PEER_AUTHENTICATION_SPEC: Shape = Strict(&[
    ("selector", WORKLOAD_SELECTOR),
    ("mtls", Strict(&[("mode", Enum(PEER_MTLS_MODES))])),
    ("portLevelMtls", PortMap(&PEER_MTLS)),
]);

pub(crate) static AUTHZ_ACTIONS: &[&str] = &["ALLOW", "DENY", "AUDIT", "CUSTOM"];
const AUTHORIZATION_POLICY_SPEC: Shape = Strict(&[
    ("selector", WORKLOAD_SELECTOR),
    ("targetRef", Any),
    ("targetRefs", Any),
    (
        "rules",
        List(&Strict(&[
            (
                "from",
                List(&Strict(&[(
                    "source",
                    Strict(&[
                        ("principals", STRINGS),
                        ("notPrincipals", STRINGS),
                        ("requestPrincipals", STRINGS),
                        ("notRequestPrincipals", STRINGS),
                        ("namespaces", STRINGS),
                        ("notNamespaces", STRINGS),
                        ("ipBlocks", STRINGS),
                        ("notIpBlocks", STRINGS),
                        ("remoteIpBlocks", STRINGS),
                        ("notRemoteIpBlocks", STRINGS),
                        ("serviceAccounts", STRINGS),
                        ("notServiceAccounts", STRINGS),
                        ("trustDomains", STRINGS),
                        ("notTrustDomains", STRINGS),
                    ]),
                )])),
            ),
            (
                "to",
                List(&Strict(&[(
                    "operation",
                    Strict(&[
                        ("hosts", STRINGS),
                        ("notHosts", STRINGS),
                        ("ports", STRINGS),
                        ("notPorts", STRINGS),
                        ("methods", STRINGS),
                        ("notMethods", STRINGS),
                        ("paths", STRINGS),
                        ("notPaths", STRINGS),
                    ]),
                )])),
            ),
            (
                "when",
                List(&Strict(&[
                    ("key", Str),
                    ("values", STRINGS),
                    ("notValues", STRINGS),
                ])),
            ),
        ])),
    ),
    ("action", Enum(AUTHZ_ACTIONS)),
    ("provider", Strict(&[("name", Str)])),
]);

// --- networking.istio.io (DestinationRule, Sidecar) -------------------------------------------------
pub(crate) static TLS_MODES: &[&str] = &["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"];
const CLIENT_TLS: Shape = Strict(&[
    ("mode", Enum(TLS_MODES)),
    ("clientCertificate", Str),
    ("privateKey", Str),
    ("caCertificates", Str),
    ("credentialName", Str),
    ("subjectAltNames", STRINGS),
    ("sni", Str),
    ("insecureSkipVerify", Bool),
    ("caCrl", Str),
]);
const TRAFFIC_POLICY: Shape = Strict(&[
    ("loadBalancer", Any),
    ("connectionPool", Any),
    ("outlierDetection", Any),
    ("tls", CLIENT_TLS),
    (
        "portLevelSettings",
        List(&Strict(&[
            ("port", Strict(&[("number", Port)])),
            ("loadBalancer", Any),
            ("connectionPool", Any),
            ("outlierDetection", Any),
            ("tls", CLIENT_TLS),
        ])),
    ),
    ("tunnel", Any),
    ("proxyProtocol", Any),
]);
const DESTINATION_RULE_SPEC: Shape = Strict(&[
    ("host", Str),
    ("trafficPolicy", TRAFFIC_POLICY),
    (
        "subsets",
        List(&Strict(&[
            ("name", Str),
            ("labels", StrMap),
            ("trafficPolicy", TRAFFIC_POLICY),
        ])),
    ),
    ("exportTo", STRINGS),
    ("workloadSelector", WORKLOAD_SELECTOR),
]);
const SIDECAR_SPEC: Shape = Strict(&[
    ("workloadSelector", WORKLOAD_SELECTOR),
    ("ingress", List(&Any)),
    ("egress", List(&Any)),
    ("outboundTrafficPolicy", Any),
    ("inboundConnectionPool", Any),
]);

// --- Kubernetes kinds -------------------------------------------------------------------------------
static PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
const CONTAINER: Shape = Open(&[
    ("name", Str),
    ("image", Str),
    ("command", STRINGS),
    ("args", STRINGS),
    (
        "ports",
        List(&Open(&[
            ("containerPort", Port),
            ("name", Str),
            ("protocol", Enum(PROTOCOLS)),
        ])),
    ),
]);
const POD_SPEC: Shape = Open(&[
    ("serviceAccountName", Str),
    ("serviceAccount", Str),
    ("containers", List(&CONTAINER)),
    ("initContainers", List(&CONTAINER)),
]);
const LABEL_SELECTOR: Shape = Open(&[("matchLabels", StrMap)]);
const SERVICE_SPEC: Shape = Open(&[
    ("selector", StrMap),
    (
        "ports",
        List(&Open(&[
            ("name", Str),
            ("port", Port),
            ("targetPort", IntOrStr),
            ("nodePort", Port),
            ("protocol", Enum(PROTOCOLS)),
        ])),
    ),
    (
        "type",
        Enum(&["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]),
    ),
]);
const DEPLOYMENT_SPEC: Shape = Open(&[
    ("replicas", Int),
    ("selector", LABEL_SELECTOR),
    (
        "template",
        Open(&[("metadata", METADATA), ("spec", POD_SPEC)]),
    ),
]);

macro_rules! istio_object {
    ($spec:expr) => {
        Strict(&[
            ("apiVersion", Str),
            ("kind", Str),
            ("metadata", METADATA),
            ("spec", $spec),
            ("status", Any),
        ])
    };
}

const MESH_POLICY: Shape = istio_object!(LEGACY_POLICY_SPEC);
const PEER_AUTHENTICATION: Shape = istio_object!(PEER_AUTHENTICATION_SPEC);
const AUTHORIZATION_POLICY: Shape = istio_object!(AUTHORIZATION_POLICY_SPEC);
const DESTINATION_RULE: Shape = istio_object!(DESTINATION_RULE_SPEC);
const SIDECAR: Shape = istio_object!(SIDECAR_SPEC);
const SERVICE: Shape = Open(&[("metadata", METADATA), ("spec", SERVICE_SPEC)]);
const DEPLOYMENT: Shape = Open(&[("metadata", METADATA), ("spec", DEPLOYMENT_SPEC)]);
const POD: Shape = Open(&[("metadata", METADATA), ("spec", POD_SPEC)]);
static PLAIN_K8S: Shape = Open(&[("metadata", METADATA)]);

/// The schema of a whole object of `kind`.
pub(crate) fn object_shape(kind: &str) -> &'static Shape {
    match kind {
        "MeshPolicy" | "Policy" => &MESH_POLICY,
        "PeerAuthentication" => &PEER_AUTHENTICATION,
        "AuthorizationPolicy" => &AUTHORIZATION_POLICY,
        "DestinationRule" => &DESTINATION_RULE,
        "Sidecar" => &SIDECAR,
        "Service" => &SERVICE,
        "Deployment" => &DEPLOYMENT,
        "Pod" => &POD,
        _ => &PLAIN_K8S,
    }
}
