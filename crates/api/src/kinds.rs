//! The kinds ironmesh serves, their API groups and versions, and every kubectl spelling of them.

use thiserror::Error;

use crate::object::split_api_version;

/// What we know about one kind: where it lives and how users may spell it.
#[derive(Debug, PartialEq, Eq)]
pub struct KindInfo {
    pub kind: &'static str,
    /// `""` for the core group.
    pub group: &'static str,
    /// Versions served under `group`.
    pub versions: &'static [&'static str],
    /// Other groups that serve the same kind (e.g. `extensions` for Deployment).
    pub extra_groups: &'static [&'static str],
    /// Versions served under `extra_groups`.
    pub extra_versions: &'static [&'static str],
    /// Unique key of the kind (used in storage keys and `plural.group` spellings).
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
}

/// Why an `apiVersion`/`kind` pair is not served.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KindError {
    #[error(
        "unknown kind {kind:?}: ironmesh serves {known}; check the spelling of `kind` (it is case-sensitive)"
    )]
    UnknownKind { kind: String, known: String },
    #[error("kind {kind} is not served in apiVersion {api_version:?}; use one of {allowed}")]
    WrongApiVersion {
        kind: String,
        api_version: String,
        allowed: String,
    },
}

const NONE: &[&str] = &[];

static KINDS: &[KindInfo] = &[
    KindInfo {
        kind: "Namespace",
        group: "",
        versions: &["v1"],
        extra_groups: NONE,
        extra_versions: NONE,
        plural: "namespaces",
        singular: "namespace",
        short_names: &["ns"],
        namespaced: false,
    },
    KindInfo {
        kind: "Service",
        group: "",
        versions: &["v1"],
        extra_groups: NONE,
        extra_versions: NONE,
        plural: "services",
        singular: "service",
        short_names: &["svc"],
        namespaced: true,
    },
    KindInfo {
        kind: "Pod",
        group: "",
        versions: &["v1"],
        extra_groups: NONE,
        extra_versions: NONE,
        plural: "pods",
        singular: "pod",
        short_names: &["po"],
        namespaced: true,
    },
    KindInfo {
        kind: "ServiceAccount",
        group: "",
        versions: &["v1"],
        extra_groups: NONE,
        extra_versions: NONE,
        plural: "serviceaccounts",
        singular: "serviceaccount",
        short_names: &["sa"],
        namespaced: true,
    },
    KindInfo {
        kind: "Deployment",
        group: "apps",
        versions: &["v1"],
        extra_groups: &["extensions"],
        extra_versions: &["v1beta1"],
        plural: "deployments",
        singular: "deployment",
        short_names: &["deploy"],
        namespaced: true,
    },
    KindInfo {
        kind: "MeshPolicy",
        group: "authentication.istio.io",
        versions: &["v1alpha1"],
        extra_groups: NONE,
        extra_versions: NONE,
        plural: "meshpolicies",
        singular: "meshpolicy",
        short_names: NONE,
        namespaced: false,
    },
    KindInfo {
        kind: "Policy",
        group: "authentication.istio.io",
        versions: &["v1alpha1"],
        extra_groups: NONE,
        extra_versions: NONE,
        plural: "policies",
        singular: "policy",
        short_names: NONE,
        namespaced: true,
    },
    KindInfo {
        kind: "PeerAuthentication",
        group: "security.istio.io",
        versions: &["v1beta1", "v1"],
        extra_groups: NONE,
        extra_versions: NONE,
        plural: "peerauthentications",
        singular: "peerauthentication",
        short_names: &["pa"],
        namespaced: true,
    },
    KindInfo {
        kind: "AuthorizationPolicy",
        group: "security.istio.io",
        versions: &["v1beta1", "v1"],
        extra_groups: NONE,
        extra_versions: NONE,
        plural: "authorizationpolicies",
        singular: "authorizationpolicy",
        short_names: &["ap"],
        namespaced: true,
    },
    KindInfo {
        kind: "DestinationRule",
        group: "networking.istio.io",
        versions: &["v1alpha3", "v1beta1", "v1"],
        extra_groups: NONE,
        extra_versions: NONE,
        plural: "destinationrules",
        singular: "destinationrule",
        short_names: &["dr"],
        namespaced: true,
    },
    KindInfo {
        kind: "Sidecar",
        group: "networking.istio.io",
        versions: &["v1alpha3", "v1beta1", "v1"],
        extra_groups: NONE,
        extra_versions: NONE,
        plural: "sidecars",
        singular: "sidecar",
        short_names: NONE,
        namespaced: true,
    },
];

/// Every kind ironmesh serves.
pub fn all_kinds() -> &'static [KindInfo] {
    KINDS
}

/// Resolves what a user typed after `get`/`delete` (`po`, `pods`, `Pod`, `svc`, `dr`,
/// `meshpolicies.authentication.istio.io`, `deployments.extensions`, ...), case-insensitively.
pub fn kind_for_spelling(spelling: &str) -> Option<&'static KindInfo> {
    let wanted = spelling.trim().to_ascii_lowercase();
    let (name, qualifier) = match wanted.split_once('.') {
        Some((name, qualifier)) => (name, Some(qualifier)),
        None => (wanted.as_str(), None),
    };
    KINDS.iter().find(|info| {
        let name_matches = info.plural == name
            || info.singular == name
            || info.kind.eq_ignore_ascii_case(name)
            || info.short_names.contains(&name);
        name_matches && qualifier.is_none_or(|q| info.accepts_qualifier(q))
    })
}

/// The kind for an object's `apiVersion` and `kind`; a clear error when either is not served.
pub fn kind_for_type(api_version: &str, kind: &str) -> Result<&'static KindInfo, KindError> {
    let Some(info) = KINDS.iter().find(|info| info.kind == kind) else {
        return Err(KindError::UnknownKind {
            kind: kind.to_string(),
            known: KINDS.iter().map(|k| k.kind).collect::<Vec<_>>().join(", "),
        });
    };
    if info.api_versions().iter().any(|v| v == api_version) {
        Ok(info)
    } else {
        Err(KindError::WrongApiVersion {
            kind: kind.to_string(),
            api_version: api_version.to_string(),
            allowed: info.api_versions().join(", "),
        })
    }
}

impl KindInfo {
    /// Every `apiVersion` this kind is served under, preferred first.
    pub fn api_versions(&self) -> Vec<String> {
        let qualify = |group: &str, version: &str| {
            if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            }
        };
        let mut out: Vec<String> = self
            .versions
            .iter()
            .rev()
            .map(|v| qualify(self.group, v))
            .collect();
        for group in self.extra_groups {
            out.extend(self.extra_versions.iter().map(|v| qualify(group, v)));
        }
        out
    }

    /// kubectl's `singular.group` as printed in `configured`/`created` messages, with the group taken
    /// from the object's own `apiVersion` (`deployment.extensions`, `meshpolicy.authentication.istio.io`,
    /// `service`).
    pub fn display_group(&self, api_version: &str) -> String {
        let group = if api_version.is_empty() {
            self.group
        } else {
            split_api_version(api_version).0
        };
        if group.is_empty() {
            self.singular.to_string()
        } else {
            format!("{}.{group}", self.singular)
        }
    }

    /// `true` for `group`, `version.group` and the extra groups.
    fn accepts_qualifier(&self, qualifier: &str) -> bool {
        let group_ok = |group: &str| {
            !group.is_empty()
                && (qualifier == group
                    || qualifier.split_once('.').is_some_and(|(version, rest)| {
                        rest == group
                            && (self.versions.contains(&version)
                                || self.extra_versions.contains(&version))
                    }))
        };
        group_ok(self.group) || self.extra_groups.iter().any(|g| group_ok(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_spellings_resolve() {
        for (spelling, kind) in [
            ("po", "Pod"),
            ("pods", "Pod"),
            ("pod", "Pod"),
            ("Pod", "Pod"),
            ("svc", "Service"),
            ("ns", "Namespace"),
            ("dr", "DestinationRule"),
            ("pa", "PeerAuthentication"),
            ("deploy", "Deployment"),
            ("deployments.extensions", "Deployment"),
            ("deployments.apps", "Deployment"),
            ("meshpolicies.authentication.istio.io", "MeshPolicy"),
            ("MeshPolicy.v1alpha1.authentication.istio.io", "MeshPolicy"),
            ("destinationrules.networking.istio.io", "DestinationRule"),
            ("POLICIES", "Policy"),
        ] {
            assert_eq!(
                kind_for_spelling(spelling).map(|k| k.kind),
                Some(kind),
                "{spelling}"
            );
        }
        assert!(kind_for_spelling("pods.networking.istio.io").is_none());
        assert!(kind_for_spelling("virtualservices").is_none());
    }

    #[test]
    fn plurals_are_unique() {
        let mut plurals: Vec<_> = all_kinds().iter().map(|k| k.plural).collect();
        plurals.sort_unstable();
        plurals.dedup();
        assert_eq!(plurals.len(), all_kinds().len());
    }

    #[test]
    fn types_resolve_and_bad_versions_say_what_is_allowed() {
        assert_eq!(
            kind_for_type("extensions/v1beta1", "Deployment")
                .unwrap()
                .plural,
            "deployments"
        );
        assert_eq!(
            kind_for_type("apps/v1", "Deployment").unwrap().plural,
            "deployments"
        );
        assert_eq!(kind_for_type("v1", "Service").unwrap().plural, "services");
        let err = kind_for_type("networking.istio.io/v1alpha1", "DestinationRule").unwrap_err();
        assert!(
            err.to_string().contains("networking.istio.io/v1alpha3"),
            "{err}"
        );
        let err = kind_for_type("v1", "VirtualService").unwrap_err();
        assert!(matches!(err, KindError::UnknownKind { .. }));
    }

    #[test]
    fn display_group_follows_the_object_api_version() {
        let dep = kind_for_spelling("deploy").unwrap();
        assert_eq!(
            dep.display_group("extensions/v1beta1"),
            "deployment.extensions"
        );
        assert_eq!(dep.display_group("apps/v1"), "deployment.apps");
        let mp = kind_for_spelling("meshpolicy").unwrap();
        assert_eq!(
            mp.display_group("authentication.istio.io/v1alpha1"),
            "meshpolicy.authentication.istio.io"
        );
        assert_eq!(
            kind_for_spelling("svc").unwrap().display_group("v1"),
            "service"
        );
    }
}
