//! Pod credentials: short-lived JWT-shaped tokens (HS256) that prove a pod's namespace, service account and
//! name to the CA, like a projected ServiceAccount token with the audience `ironmesh-ca`.
//!
//! Like Kubernetes' pod-bound tokens, a credential names the pod's uid and dies with the pod: whoever
//! verifies it asks a [`PodLookup`] whether a pod of that namespace, name and uid still exists
//! ([`check_pod_binding`]), the rule of Kubernetes' token validator (`pkg/serviceaccount/claims.go`,
//! `Validate`: the pod must exist and its uid must equal the claim's).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;

/// The audience the CA demands (Istio uses `istio-ca`).
pub const CA_AUDIENCE: &str = "ironmesh-ca";
const TOKEN_KEY: &str = "token-key";
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// The id a pod's proxy subscribes to the configuration stream under: `<pod>.<namespace>`, the pod part of
/// Istio's node id (`sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`, pilot/pkg/model/context.go).
/// The proxy builds it from its downward-API variables; whoever authenticates a subscription compares it
/// with [`PodClaims::proxy_id`].
pub fn proxy_id(pod: &str, namespace: &str) -> String {
    format!("{pod}.{namespace}")
}

/// Who a pod is, as its credential states it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodClaims {
    pub namespace: String,
    pub service_account: String,
    pub pod: String,
    /// `metadata.uid` of the pod the credential was issued for: a pod recreated under the same name
    /// gets a new uid, so the old pod's credential does not pass for the new one.
    pub pod_uid: String,
}

impl PodClaims {
    /// The only proxy id this credential may subscribe under (see [`proxy_id`]).
    pub fn proxy_id(&self) -> String {
        proxy_id(&self.pod, &self.namespace)
    }
}

#[derive(Serialize, Deserialize)]
struct WireClaims {
    namespace: String,
    service_account: String,
    pod: String,
    /// Absent in credentials of ironmesh versions before pod binding; those are refused as unbound.
    #[serde(default)]
    pod_uid: String,
    aud: String,
    iat: u64,
    exp: u64,
}

/// Why a credential was refused; each case says what the caller should do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("no credential was presented; send the pod token as `authorization: Bearer <token>`")]
    Missing,
    #[error(
        "the credential is not a well-formed token ({0}); send the content of the pod's token file unchanged"
    )]
    Malformed(String),
    #[error(
        "the credential's signature does not match this control plane's key (forged, or issued by another control plane); restart the pod to get a fresh token"
    )]
    Forged,
    #[error("the credential expired {seconds_ago} s ago; the pod needs a refreshed token")]
    Expired { seconds_ago: u64 },
    #[error(
        "the credential is for audience `{got}`, not `{expected}`; request a token for `{expected}`"
    )]
    WrongAudience { expected: String, got: String },
    #[error("cannot {action} the credential key {path}: {reason}")]
    Key {
        action: &'static str,
        path: String,
        reason: String,
    },
}

/// Issues and verifies pod credentials with an HMAC-SHA256 key kept in the CA directory (0600).
pub struct CredentialAuthority {
    key: hmac::Key,
}

impl std::fmt::Debug for CredentialAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialAuthority { key: <secret> }")
    }
}

impl CredentialAuthority {
    /// Loads `ca_dir/token-key`, creating a random 256-bit key on first use.
    pub fn load_or_create(ca_dir: &Path) -> Result<Self, CredentialError> {
        let path = ca_dir.join(TOKEN_KEY);
        let key_error = |action, reason: String| CredentialError::Key {
            action,
            path: path.display().to_string(),
            reason,
        };
        let secret = match std::fs::read(&path) {
            Ok(bytes) if bytes.len() >= 32 => bytes,
            Ok(_) => return Err(key_error("use", "it is shorter than 32 bytes".into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret: [u8; 32] = rand::random();
                write_atomic(&path, &secret, 0o600)
                    .map_err(|e| key_error("write", e.to_string()))?;
                secret.to_vec()
            }
            Err(e) => return Err(key_error("read", e.to_string())),
        };
        Ok(Self::from_secret(&secret))
    }

    /// A credential authority from raw key bytes (tests, or a key managed elsewhere).
    pub fn from_secret(secret: &[u8]) -> Self {
        CredentialAuthority {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// A token for `claims` with audience `ironmesh-ca`, valid for `ttl` from now.
    pub fn issue(&self, claims: &PodClaims, ttl: Duration) -> String {
        self.issue_at(claims, CA_AUDIENCE, SystemTime::now(), ttl)
    }

    /// A token with an explicit audience and issue time (for tests of refusals and for other audiences).
    pub fn issue_at(
        &self,
        claims: &PodClaims,
        audience: &str,
        issued_at: SystemTime,
        ttl: Duration,
    ) -> String {
        let iat = unix(issued_at);
        let wire = WireClaims {
            namespace: claims.namespace.clone(),
            service_account: claims.service_account.clone(),
            pod: claims.pod.clone(),
            pod_uid: claims.pod_uid.clone(),
            aud: audience.to_owned(),
            iat,
            exp: iat + ttl.as_secs(),
        };
        let payload = serde_json::to_vec(&wire).expect("claims always serialise");
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let tag = hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Checks signature, audience and expiry (in that order, so a forged token never reveals more).
    pub fn verify(
        &self,
        token: &str,
        audience: &str,
        now: SystemTime,
    ) -> Result<PodClaims, CredentialError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(CredentialError::Missing);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CredentialError::Malformed(
                "expected three dot-separated parts".into(),
            ));
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| CredentialError::Malformed("the signature is not base64url".into()))?;
        let signing_input = &token[..header.len() + 1 + payload.len()];
        hmac::verify(&self.key, signing_input.as_bytes(), &signature)
            .map_err(|_| CredentialError::Forged)?;
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| CredentialError::Malformed("the header is not base64url".into()))?;
        let header: serde_json::Value = serde_json::from_slice(&header)
            .map_err(|_| CredentialError::Malformed("the header is not JSON".into()))?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(CredentialError::Malformed(
                "the algorithm is not HS256".into(),
            ));
        }
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| CredentialError::Malformed("the payload is not base64url".into()))?;
        let claims: WireClaims = serde_json::from_slice(&payload)
            .map_err(|e| CredentialError::Malformed(format!("the claims do not parse: {e}")))?;
        if claims.aud != audience {
            return Err(CredentialError::WrongAudience {
                expected: audience.to_owned(),
                got: claims.aud,
            });
        }
        let now = unix(now);
        if now >= claims.exp {
            return Err(CredentialError::Expired {
                seconds_ago: now - claims.exp,
            });
        }
        Ok(PodClaims {
            namespace: claims.namespace,
            service_account: claims.service_account,
            pod: claims.pod,
            pod_uid: claims.pod_uid,
        })
    }
}

/// Where a verifier learns whether the pod a credential is bound to still exists (the control plane
/// answers from its store); the identity crate itself knows no store.
pub trait PodLookup: Send + Sync {
    /// The uid of the pod `namespace/name` as it exists now; `Ok(None)` when there is no such pod, `Err`
    /// (a reason) when that cannot be told now.
    fn pod_uid(&self, namespace: &str, name: &str) -> Result<Option<String>, String>;
}

/// Why a verified credential is refused for the pod it names; each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    #[error(
        "the credential is bound to pod {namespace}/{pod}, which no longer exists; a deleted pod's credential is invalid (as Kubernetes' bound tokens are): use the token of a running pod"
    )]
    PodGone { namespace: String, pod: String },
    #[error(
        "the credential is bound to pod {namespace}/{pod} with uid {claimed}, but that pod now has uid {current} (it was deleted and recreated); use the new pod's token"
    )]
    PodReplaced {
        namespace: String,
        pod: String,
        claimed: String,
        current: String,
    },
    #[error(
        "the credential for pod {namespace}/{pod} names no pod uid (issued by an older control plane); restart the pod to get a bound token"
    )]
    Unbound { namespace: String, pod: String },
    #[error("cannot check that pod {namespace}/{pod} exists: {reason}; retry")]
    Lookup {
        namespace: String,
        pod: String,
        reason: String,
    },
}

/// Checks that the pod `claims` is bound to still exists with the same uid.
pub fn check_pod_binding(claims: &PodClaims, pods: &dyn PodLookup) -> Result<(), BindingError> {
    let (namespace, pod) = (claims.namespace.clone(), claims.pod.clone());
    if claims.pod_uid.is_empty() {
        return Err(BindingError::Unbound { namespace, pod });
    }
    match pods.pod_uid(&claims.namespace, &claims.pod) {
        Ok(Some(current)) if current == claims.pod_uid => Ok(()),
        Ok(Some(current)) => Err(BindingError::PodReplaced {
            namespace,
            pod,
            claimed: claims.pod_uid.clone(),
            current,
        }),
        Ok(None) => Err(BindingError::PodGone { namespace, pod }),
        Err(reason) => Err(BindingError::Lookup {
            namespace,
            pod,
            reason,
        }),
    }
}

/// Writes a pod's token file atomically with mode 0600 (the runtime puts it in the pod's state dir).
pub fn write_token_file(path: &Path, token: &str) -> std::io::Result<()> {
    write_atomic(path, token.as_bytes(), 0o600)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> PodClaims {
        PodClaims {
            namespace: "foo".into(),
            service_account: "sleep".into(),
            pod: "sleep-1".into(),
            pod_uid: "6f1c".into(),
        }
    }

    #[test]
    fn issued_token_verifies_and_returns_its_claims() {
        let ca = CredentialAuthority::from_secret(&[7; 32]);
        let token = ca.issue(&claims(), Duration::from_secs(60));
        assert_eq!(
            ca.verify(&token, CA_AUDIENCE, SystemTime::now()),
            Ok(claims())
        );
    }

    #[test]
    fn refusals_are_distinct() {
        let ca = CredentialAuthority::from_secret(&[7; 32]);
        let other = CredentialAuthority::from_secret(&[8; 32]);
        let now = SystemTime::now();
        let token = ca.issue(&claims(), Duration::from_secs(60));
        assert_eq!(
            ca.verify("", CA_AUDIENCE, now),
            Err(CredentialError::Missing)
        );
        assert!(matches!(
            ca.verify("abc", CA_AUDIENCE, now),
            Err(CredentialError::Malformed(_))
        ));
        assert_eq!(
            other.verify(&token, CA_AUDIENCE, now),
            Err(CredentialError::Forged)
        );
        assert!(matches!(
            ca.verify(&token, CA_AUDIENCE, now + Duration::from_secs(61)),
            Err(CredentialError::Expired { .. })
        ));
        let wrong_aud = ca.issue_at(&claims(), "istio-ca", now, Duration::from_secs(60));
        assert!(matches!(
            ca.verify(&wrong_aud, CA_AUDIENCE, now),
            Err(CredentialError::WrongAudience { .. })
        ));
        // Changing one claim without the key breaks the signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        parts[1] = URL_SAFE_NO_PAD.encode(payload.replace("sleep", "admin"));
        assert_eq!(
            ca.verify(&parts.join("."), CA_AUDIENCE, now),
            Err(CredentialError::Forged)
        );
    }

    #[test]
    fn key_file_is_created_0600_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = CredentialAuthority::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(TOKEN_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let token = first.issue(&claims(), Duration::from_secs(60));
        let second = CredentialAuthority::load_or_create(dir.path()).unwrap();
        assert_eq!(
            second.verify(&token, CA_AUDIENCE, SystemTime::now()),
            Ok(claims())
        );
    }
}

#[cfg(test)]
mod binding_tests {
    use std::collections::HashMap;

    use super::*;

    struct Pods(Result<HashMap<(String, String), String>, String>);

    impl PodLookup for Pods {
        fn pod_uid(&self, namespace: &str, name: &str) -> Result<Option<String>, String> {
            self.0
                .clone()
                .map(|pods| pods.get(&(namespace.into(), name.into())).cloned())
        }
    }

    fn claims(uid: &str) -> PodClaims {
        PodClaims {
            namespace: "foo".into(),
            service_account: "sleep".into(),
            pod: "sleep-1".into(),
            pod_uid: uid.into(),
        }
    }

    fn pods(entries: &[(&str, &str, &str)]) -> Pods {
        Pods(Ok(entries
            .iter()
            .map(|(ns, name, uid)| ((ns.to_string(), name.to_string()), uid.to_string()))
            .collect()))
    }

    #[test]
    fn a_credential_is_valid_only_while_its_pod_exists_with_the_same_uid() {
        let live = pods(&[("foo", "sleep-1", "u1")]);
        assert_eq!(check_pod_binding(&claims("u1"), &live), Ok(()));
        // Deleted: no pod of that name.
        let err = check_pod_binding(&claims("u1"), &pods(&[("bar", "sleep-1", "u1")])).unwrap_err();
        assert!(matches!(err, BindingError::PodGone { .. }), "{err}");
        assert!(err.to_string().contains("foo/sleep-1"), "{err}");
        // Recreated under the same name: a new uid.
        let err = check_pod_binding(&claims("u1"), &pods(&[("foo", "sleep-1", "u2")])).unwrap_err();
        assert!(matches!(err, BindingError::PodReplaced { .. }), "{err}");
        assert!(err.to_string().contains("u2"), "{err}");
        // No uid at all (an older token) never matches a pod.
        let err = check_pod_binding(&claims(""), &live).unwrap_err();
        assert!(matches!(err, BindingError::Unbound { .. }), "{err}");
        // The store cannot answer: refused, not waved through.
        let err = check_pod_binding(&claims("u1"), &Pods(Err("disk full".into()))).unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
    }

    #[test]
    fn the_uid_survives_the_token_round_trip() {
        let ca = CredentialAuthority::from_secret(&[7; 32]);
        let token = ca.issue(&claims("u-42"), Duration::from_secs(60));
        let verified = ca.verify(&token, CA_AUDIENCE, SystemTime::now()).unwrap();
        assert_eq!(verified.pod_uid, "u-42");
    }
}
