//! `ironmesh-authz`: the pure Istio AuthorizationPolicy engine (no I/O, no clock, no async).
//!
//! It owns three things:
//! 1. the typed model of `security.istio.io/v1beta1` and `v1` AuthorizationPolicy specs, parsed from the
//!    `spec` JSON with errors naming the field path ([`AuthorizationPolicy::from_spec`], [`SpecError`]),
//!    through the rules as written ([`RuleSpec`]), which [`AuthorizationPolicy::compile`] validates and
//!    compiles wherever they come from (JSON at apply time, the configuration stream in the proxy);
//! 2. scope: which policies apply to a workload ([`AuthzIndex::policies_for`]): its namespace's policies
//!    and the root namespace's (mesh-wide), each narrowed by `selector.matchLabels`; a root policy with a
//!    selector applies to matching workloads in every namespace;
//! 3. evaluation with an explanation ([`AppliedPolicies::evaluate`] → [`Decision`]), in Istio's order:
//!    a CUSTOM match denies (no extension provider); any DENY match denies; if no ALLOW policy applies the request is allowed; otherwise it is allowed
//!    iff some ALLOW rule matches. AUDIT matches are reported, never decisive.
//!
//! Semantics worth knowing (docs/SEMANTICS.md#authz-evaluation and the Istio docs cited in the tests):
//! - `spec: {}` is ALLOW with no rules: it applies and matches nothing, so it denies everything.
//!   `rules: [{}]` matches every request.
//! - Identity fields (`principals`, `namespaces`, `source.principal`, `source.namespace`) need an mTLS
//!   peer and never match plaintext; their `not` forms do match plaintext ("not in the list", Istio
//!   security bulletin ISTIO-SECURITY-2021-004). `requestPrincipals` and `request.auth.*` need a JWT,
//!   which ironmesh never validates: positive forms never match, while `notRequestPrincipals` and
//!   `notValues` on `request.auth.*` always match (no request principal is "in the list"), so a DENY
//!   `notRequestPrincipals: ["*"]` ("require a JWT") denies everything instead of silently allowing.
//! - HTTP-only fields (`hosts`, `methods`, `paths`, `request.headers[...]`) on a TCP connection
//!   (`Request::http == None`): an ALLOW rule using them does not match; in DENY and AUDIT rules they
//!   count as matching, so the whole TCP port is denied (Istio docs, authz-tcp task).
//! - `paths` match the path without query, normalized as Istio's default `BASE` normalization
//!   ([`normalize_path`]: unreserved `%XX` decoded, `.`/`..` removed); `hosts` ignore case and `:port`.
//! - Parsing applies Istio's validator (`ValidateAuthorizationPolicy`, pkg/config/validation): what parses
//!   is what Istio accepts; [`validation_warnings`] gives Istio's warnings as (field path, message) and
//!   [`AuthorizationPolicy::check_dry_run`] checks the `istio.io/dry-run` annotation.
//! - `serviceAccounts`/`notServiceAccounts` (`sa` = the policy's namespace), `trustDomains`, path
//!   templates `{*}`/`{**}` and every documented `when` key match as Istio's generator compiles them.
//! - `CUSTOM`: ironmesh has no extension provider, so a CUSTOM rule that matches denies the request, as
//!   Istio does when the provider is not found. `targetRef(s)` policies are valid and apply to no sidecar.
//! - Dry-run policies (`istio.io/dry-run: "true"`, ALLOW/DENY) are evaluated into [`Decision::dry_run`]
//!   (Envoy's shadow rules) and never enforced.
//!
//! Wiring, by caller (as built):
//! - API: `ironmesh apply` refuses what [`AuthorizationPolicy::from_spec`] refuses, with its field path
//!   (`crates/api/src/validate/rules.rs`).
//! - control plane: `crates/control/src/authz.rs` builds an [`AuthzIndex`] per snapshot (a stored policy
//!   the engine refuses is logged by name and enforced fail-closed: [`AuthzIndex::closing_invalid`]) and sends each
//!   sidecar the policies in its scope ([`AppliedPolicies::entries`]) as typed messages
//!   (`ironmesh_proto::policy_message`, `Workload.authorization_policies`).
//! - proxy (inbound only): `ironmesh_proto::compile_config` compiles the received policies once per
//!   configuration ([`AuthorizationPolicy::compile`], [`AppliedPolicies::from_scoped`]), refusing (NACK)
//!   the configuration if one does not compile; [`AppliedPolicies::evaluate`] runs per HTTP request (denied →
//!   403 `RBAC: access denied`) or per TCP connection with `http: None` (denied → closed, and re-checked
//!   on every policy change). [`Request::peer`] comes from [`Peer::from_principal`] of the verified
//!   SPIFFE ID.
//! - CLI `ironmesh authz check`: prints [`AppliedPolicies::explain`] and the [`Decision`] (its `Display`
//!   is the explanation).
//!
//! Tests: `cargo test -p ironmesh-authz`; bench: `cargo bench -p ironmesh-authz --bench authz`.
//!
//! ```
//! use std::collections::BTreeMap;
//! use ironmesh_authz::{AuthzIndex, Http, Peer, PolicyObject, Request, DEFAULT_ROOT_NAMESPACE};
//!
//! let policy = PolicyObject {
//!     namespace: "foo".into(),
//!     name: "allow-foo".into(),
//!     creation_timestamp: None,
//!     annotations: Default::default(),
//!     spec: serde_json::json!({"action": "ALLOW", "rules": [{"from": [{"source": {"namespaces": ["foo"]}}]}]}),
//! };
//! let index = AuthzIndex::new([policy], DEFAULT_ROOT_NAMESPACE)?;
//! // Once per workload (and again when policies change):
//! let applied = index.policies_for("foo", &BTreeMap::from([("app".into(), "httpbin".into())]));
//!
//! let mut request = Request {
//!     peer: Some(Peer::from_principal("cluster.local/ns/bar/sa/sleep")),
//!     source_ip: "10.0.0.2".parse().unwrap(),
//!     destination_ip: "10.0.0.3".parse().unwrap(),
//!     destination_port: 8000,
//!     sni: None,
//!     http: Some(Http { method: "GET".into(), path: "/ip".into(), host: "httpbin.foo:8000".into(), headers: vec![] }),
//! };
//! let decision = applied.evaluate(&request);
//! assert!(!decision.allowed);
//! assert_eq!(decision.to_string(), "denied: ALLOW policies apply (foo/allow-foo) but none matches");
//!
//! request.peer = Some(Peer::from_principal("spiffe://cluster.local/ns/foo/sa/sleep"));
//! assert_eq!(applied.evaluate(&request).to_string(), "allowed by ALLOW policy foo/allow-foo rule 0");
//! # Ok::<(), ironmesh_authz::AuthzError>(())
//! ```

mod decision;
mod error;
mod eval;
mod index;
mod matcher;
mod model;
mod parse;
mod path;
mod request;
mod spec;

pub use decision::{Decision, DryRun, PolicyName, PolicyRef};
pub use error::{AuthzError, SpecError};
pub use index::{AppliedPolicies, AuthzIndex, DEFAULT_ROOT_NAMESPACE, PolicyMatch, PolicyObject};
pub use model::{Action, AuthorizationPolicy, DRY_RUN_ANNOTATION, parse_bool, validation_warnings};
pub use path::normalize_path;
pub use request::{Http, Peer, Request};
pub use spec::{ConditionSpec, OperationSpec, RuleSpec, SourceSpec};

#[cfg(test)]
mod tests {
    /// The proxy shares indexes and applied policies across tasks and threads.
    #[test]
    fn shared_types_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<crate::AuthzIndex>();
        assert_send_sync::<crate::AppliedPolicies>();
        assert_send_sync::<crate::Decision>();
    }
}
