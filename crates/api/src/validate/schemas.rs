//! The field schemas of every kind: strict for the Istio kinds (unknown fields are errors), open for the
//! Kubernetes kinds (we check what we use and keep the rest).

use super::shape::Shape::{
    self, Any, Bool, Duration, Enum, Int, IntOrStr, List, Num, Open, Port, PortMap, Str, StrMap,
    Strict, UInt, Values,
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
// istio/api authentication/v1alpha1/policy.proto (Istio 1.1-1.5): `StringMatch` and `Jwt`.
const LEGACY_STRING_MATCH: Shape = Strict(&[
    ("exact", Str),
    ("prefix", Str),
    ("suffix", Str),
    ("regex", Str),
]);
const LEGACY_JWT: Shape = Strict(&[
    ("issuer", Str),
    ("audiences", STRINGS),
    ("jwksUri", Str),
    ("jwks", Str),
    ("jwtHeaders", STRINGS),
    ("jwtParams", STRINGS),
    (
        "triggerRules",
        List(&Strict(&[
            ("excludedPaths", List(&LEGACY_STRING_MATCH)),
            ("includedPaths", List(&LEGACY_STRING_MATCH)),
        ])),
    ),
]);
const LEGACY_POLICY_SPEC: Shape = Strict(&[
    (
        "targets",
        List(&Strict(&[
            ("name", Str),
            ("labels", StrMap),
            // A port number of 0 means "unset" in protobuf: the rule then looks at the name.
            ("ports", List(&Strict(&[("number", UInt), ("name", Str)]))),
        ])),
    ),
    (
        "peers",
        List(&Strict(&[
            (
                "mtls",
                Strict(&[("mode", Enum(LEGACY_MTLS_MODES)), ("allowTls", Bool)]),
            ),
            ("jwt", LEGACY_JWT),
        ])),
    ),
    ("peerIsOptional", Bool),
    ("origins", List(&Strict(&[("jwt", LEGACY_JWT)]))),
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

/// A `source` or `operation` from ironmesh-authz's list of its fields: every field is a list of strings,
/// ports too (Istio's schema types them as strings).
macro_rules! strings_map {
    ($($field:ident $name:literal $kind:ident),*) => {
        Strict(&[$(($name, STRINGS)),*])
    };
}

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
                    ironmesh_authz::source_fields!(strings_map),
                )])),
            ),
            (
                "to",
                List(&Strict(&[(
                    "operation",
                    ironmesh_authz::operation_fields!(strings_map),
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
// Every field of istio/api networking/v1alpha3/destination_rule.proto and sidecar.proto (the v1beta1 and
// v1 APIs are the same messages). Durations are Go-style strings, see [`Shape::Duration`].
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
const LOCALITY_FAILOVER: Shape = Strict(&[("from", Str), ("to", Str)]);
const LOAD_BALANCER: Shape = Strict(&[
    (
        "simple",
        Enum(&[
            "UNSPECIFIED",
            "LEAST_CONN",
            "RANDOM",
            "PASSTHROUGH",
            "ROUND_ROBIN",
            "LEAST_REQUEST",
        ]),
    ),
    (
        "consistentHash",
        Strict(&[
            ("httpHeaderName", Str),
            (
                "httpCookie",
                Strict(&[
                    ("name", Str),
                    ("path", Str),
                    ("ttl", Duration),
                    (
                        "attributes",
                        List(&Strict(&[("name", Str), ("value", Str)])),
                    ),
                ]),
            ),
            ("useSourceIp", Bool),
            ("httpQueryParameterName", Str),
            ("ringHash", Strict(&[("minimumRingSize", UInt)])),
            ("maglev", Strict(&[("tableSize", UInt)])),
            ("minimumRingSize", UInt),
        ]),
    ),
    (
        "localityLbSetting",
        Strict(&[
            (
                "distribute",
                List(&Strict(&[("from", Str), ("to", Values(&UInt))])),
            ),
            ("failover", List(&LOCALITY_FAILOVER)),
            ("failoverPriority", STRINGS),
            ("enabled", Bool),
        ]),
    ),
    (
        "zoneAwareLbSetting",
        Strict(&[
            ("enabled", Bool),
            ("failover", List(&LOCALITY_FAILOVER)),
            ("failoverPriority", STRINGS),
            ("minClusterSize", UInt),
        ]),
    ),
    ("warmupDurationSecs", Duration),
    (
        "warmup",
        Strict(&[
            ("duration", Duration),
            ("minimumPercent", Num),
            ("aggression", Num),
        ]),
    ),
]);
pub(crate) const CONNECTION_POOL: Shape = Strict(&[
    (
        "tcp",
        Strict(&[
            ("maxConnections", Int),
            ("connectTimeout", Duration),
            (
                "tcpKeepalive",
                Strict(&[("probes", UInt), ("time", Duration), ("interval", Duration)]),
            ),
            ("maxConnectionDuration", Duration),
            ("idleTimeout", Duration),
        ]),
    ),
    (
        "http",
        Strict(&[
            ("http1MaxPendingRequests", Int),
            ("http2MaxRequests", Int),
            ("maxRequestsPerConnection", Int),
            ("maxRetries", Int),
            ("idleTimeout", Duration),
            (
                "h2UpgradePolicy",
                Enum(&["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"]),
            ),
            ("useClientProtocol", Bool),
            ("maxConcurrentStreams", Int),
            (
                "http2KeepAlive",
                Strict(&[("interval", Duration), ("timeout", Duration)]),
            ),
        ]),
    ),
]);
const OUTLIER_DETECTION: Shape = Strict(&[
    ("consecutiveErrors", Int),
    ("splitExternalLocalOriginErrors", Bool),
    ("consecutiveLocalOriginFailures", UInt),
    ("consecutiveGatewayErrors", UInt),
    ("consecutive5xxErrors", UInt),
    ("interval", Duration),
    ("baseEjectionTime", Duration),
    ("maxEjectionPercent", Int),
    ("minHealthPercent", Int),
    ("outlierDetectionHttpErrorCodes", List(&UInt)),
]);
const TRAFFIC_POLICY: Shape = Strict(&[
    ("loadBalancer", LOAD_BALANCER),
    ("connectionPool", CONNECTION_POOL),
    ("outlierDetection", OUTLIER_DETECTION),
    ("tls", CLIENT_TLS),
    (
        "portLevelSettings",
        List(&Strict(&[
            ("port", Strict(&[("number", Port)])),
            ("loadBalancer", LOAD_BALANCER),
            ("connectionPool", CONNECTION_POOL),
            ("outlierDetection", OUTLIER_DETECTION),
            ("tls", CLIENT_TLS),
        ])),
    ),
    (
        "tunnel",
        Strict(&[("protocol", Str), ("targetHost", Str), ("targetPort", UInt)]),
    ),
    ("proxyProtocol", Strict(&[("version", Enum(&["V1", "V2"]))])),
    (
        "retryBudget",
        Strict(&[
            ("percent", Num),
            ("minRetryConcurrency", UInt),
            ("budgetInterval", Duration),
        ]),
    ),
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
static CAPTURE_MODES: &[&str] = &["DEFAULT", "IPTABLES", "NONE"];
const SIDECAR_PORT: Shape = Strict(&[
    ("number", UInt),
    ("protocol", Str),
    ("name", Str),
    ("targetPort", UInt),
]);
const SERVER_TLS: Shape = Strict(&[
    ("httpsRedirect", Bool),
    (
        "mode",
        Enum(&[
            "PASSTHROUGH",
            "SIMPLE",
            "MUTUAL",
            "AUTO_PASSTHROUGH",
            "ISTIO_MUTUAL",
            "OPTIONAL_MUTUAL",
        ]),
    ),
    ("serverCertificate", Str),
    ("privateKey", Str),
    ("caCertificates", Str),
    ("caCrl", Str),
    ("credentialName", Str),
    ("credentialNames", STRINGS),
    ("caCertCredentialName", Str),
    (
        "tlsCertificates",
        List(&Strict(&[
            ("serverCertificate", Str),
            ("privateKey", Str),
            ("caCertificates", Str),
        ])),
    ),
    ("subjectAltNames", STRINGS),
    ("verifyCertificateSpki", STRINGS),
    ("verifyCertificateHash", STRINGS),
    ("minProtocolVersion", Enum(TLS_PROTOCOLS)),
    ("maxProtocolVersion", Enum(TLS_PROTOCOLS)),
    ("cipherSuites", STRINGS),
    ("insecureSkipVerify", Bool),
]);
static TLS_PROTOCOLS: &[&str] = &["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"];
const SIDECAR_SPEC: Shape = Strict(&[
    // networking.v1alpha3.WorkloadSelector: `labels`, not `matchLabels`.
    ("workloadSelector", Strict(&[("labels", StrMap)])),
    (
        "ingress",
        List(&Strict(&[
            ("port", SIDECAR_PORT),
            ("bind", Str),
            ("captureMode", Enum(CAPTURE_MODES)),
            ("defaultEndpoint", Str),
            ("tls", SERVER_TLS),
            ("connectionPool", CONNECTION_POOL),
        ])),
    ),
    (
        "egress",
        List(&Strict(&[
            ("port", SIDECAR_PORT),
            ("bind", Str),
            ("captureMode", Enum(CAPTURE_MODES)),
            ("hosts", STRINGS),
        ])),
    ),
    ("inboundConnectionPool", CONNECTION_POOL),
    (
        "outboundTrafficPolicy",
        Strict(&[
            ("mode", Enum(&["REGISTRY_ONLY", "ALLOW_ANY"])),
            (
                "egressProxy",
                Strict(&[
                    ("host", Str),
                    ("subset", Str),
                    ("port", Strict(&[("number", UInt)])),
                ]),
            ),
        ]),
    ),
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
