//! Scope and evaluation order: compiling all policies once, picking the ones that apply to a workload
//! (its namespace plus the root namespace, narrowed by `selector`), and Istio's CUSTOM→DENY→ALLOW order.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::decision::{Decision, DryRun, PolicyName, PolicyRef};
use crate::error::AuthzError;
use crate::eval::Attributes;
use crate::model::{Action, AuthorizationPolicy, DRY_RUN_ANNOTATION, parse_bool};
use crate::request::Request;

/// Istio's default root namespace (meshConfig `rootNamespace`).
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// One AuthorizationPolicy object as stored: its metadata and the raw `spec`.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyObject {
    pub namespace: String,
    pub name: String,
    /// RFC 3339 creation timestamp; older policies are evaluated (and reported) first, then by name.
    pub creation_timestamp: Option<String>,
    /// `metadata.annotations`; `istio.io/dry-run: "true"` makes an ALLOW or DENY policy a dry run.
    pub annotations: BTreeMap<String, String>,
    pub spec: Value,
}

impl PolicyObject {
    /// Whether the policy is a dry run, as Istio's builder reads it (`isDryRun`): a Go boolean in the
    /// annotation; a value that is not one counts as `false` (Istio logs it and enforces the policy).
    /// Only ALLOW and DENY policies run dry (validation refuses the annotation elsewhere).
    fn dry_run(&self, action: Action) -> bool {
        matches!(action, Action::Allow | Action::Deny)
            && self
                .annotations
                .get(DRY_RUN_ANNOTATION)
                .and_then(|v| parse_bool(v))
                .unwrap_or(false)
    }
}

#[derive(Debug)]
struct IndexedPolicy {
    name: PolicyName,
    policy: AuthorizationPolicy,
    dry_run: bool,
}

impl IndexedPolicy {
    /// The first rule that matches, if any.
    fn first_match(&self, attributes: &Attributes<'_>) -> Option<usize> {
        let http_on_tcp = self.policy.action != Action::Allow;
        self.policy
            .rules
            .iter()
            .position(|rule| rule.matches(attributes, http_on_tcp))
    }

    fn reference(&self, rule: usize) -> PolicyRef {
        PolicyRef {
            namespace: self.name.namespace.clone(),
            name: self.name.name.clone(),
            action: self.policy.action,
            rule,
        }
    }
}

/// All policies of the mesh, parsed once. Cheap to query per workload with [`AuthzIndex::policies_for`].
#[derive(Debug, Clone)]
pub struct AuthzIndex {
    root_namespace: String,
    policies: Vec<Arc<IndexedPolicy>>,
}

impl AuthzIndex {
    /// Parses every policy; the first invalid one fails the whole index (nothing half-enforced), naming
    /// `namespace/name` and the field path. `root_namespace` is usually [`DEFAULT_ROOT_NAMESPACE`].
    pub fn new(
        policies: impl IntoIterator<Item = PolicyObject>,
        root_namespace: &str,
    ) -> Result<Self, AuthzError> {
        let (index, mut invalid) = Self::closing_invalid(policies, root_namespace);
        match invalid.is_empty() {
            true => Ok(index),
            false => Err(invalid.swap_remove(0)),
        }
    }

    /// Parses every policy and indexes it; each invalid one is returned with its error and indexed as a
    /// fail-closed stand-in ([`AuthorizationPolicy::fail_closed`]): an invalid DENY or CUSTOM policy denies
    /// every request in its scope, an invalid ALLOW policy allows none, an invalid AUDIT policy is left out.
    /// For the control plane: on Kubernetes an invalid policy can be stored (before the validating webhook
    /// is installed, or while it is down), and leaving it out would open what it was written to close.
    pub fn closing_invalid(
        policies: impl IntoIterator<Item = PolicyObject>,
        root_namespace: &str,
    ) -> (Self, Vec<AuthzError>) {
        let mut invalid = Vec::new();
        let mut parsed: Vec<_> = policies
            .into_iter()
            .filter_map(|object| {
                let (mut policy, dry_run) = match AuthorizationPolicy::from_spec(&object.spec) {
                    Ok(policy) => {
                        let dry_run = object.dry_run(policy.action);
                        (policy, dry_run)
                    }
                    Err(source) => {
                        invalid.push(AuthzError::InvalidPolicy {
                            namespace: object.namespace.clone(),
                            name: object.name.clone(),
                            source,
                        });
                        // A stand-in is never a dry run: the annotation of a policy that cannot be
                        // read is not trusted to open what the stand-in closes.
                        (AuthorizationPolicy::fail_closed(&object.spec)?, false)
                    }
                };
                policy.bind_namespace(&object.namespace);
                Some((
                    object.creation_timestamp,
                    object.namespace,
                    object.name,
                    (policy, dry_run),
                ))
            })
            .collect();
        // Deterministic order (Istio orders by creation time, then name): the same input in any order
        // yields the same decisions and explanations.
        parsed.sort_by(|a, b| {
            (a.0.is_none(), &a.0, &a.1, &a.2).cmp(&(b.0.is_none(), &b.0, &b.1, &b.2))
        });
        let policies = parsed
            .into_iter()
            .map(|(_, namespace, name, (policy, dry_run))| {
                Arc::new(IndexedPolicy {
                    name: PolicyName {
                        namespace: namespace.into(),
                        name: name.into(),
                    },
                    policy,
                    dry_run,
                })
            })
            .collect();
        let index = Self {
            root_namespace: root_namespace.to_owned(),
            policies,
        };
        (index, invalid)
    }

    /// The root namespace whose policies apply mesh-wide.
    pub fn root_namespace(&self) -> &str {
        &self.root_namespace
    }

    /// Number of policies in the index.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// True when the index holds no policy (every request is allowed).
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The policies that apply to a workload in `namespace` with `labels`: those of its namespace and of
    /// the root namespace, each with no selector or a selector whose `matchLabels` all match. A root
    /// policy with a selector applies to matching workloads in every namespace (docs/SEMANTICS.md#authz-scope).
    /// A policy with `targetRef(s)` applies to no sidecar (Istio `ShouldAttachPolicy`: "if targetRef is
    /// specified, ignore the policy altogether" for non-gateway workloads).
    pub fn policies_for(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> AppliedPolicies {
        let mut applied = AppliedPolicies::default();
        for indexed in &self.policies {
            let policy_ns = &*indexed.name.namespace;
            if policy_ns != namespace && policy_ns != self.root_namespace {
                continue;
            }
            if indexed.policy.targeted {
                continue;
            }
            let selected = indexed.policy.selector.as_ref().is_none_or(|selector| {
                selector
                    .iter()
                    .all(|(key, value)| labels.get(key) == Some(value))
            });
            if !selected {
                continue;
            }
            applied.push(indexed.clone());
        }
        applied.finish()
    }
}

/// One line of [`AppliedPolicies::explain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyMatch {
    pub policy: PolicyName,
    pub action: Action,
    /// How many rules the policy has (0 for `spec: {}`).
    pub rule_count: usize,
    /// The first rule that matches the request, if any.
    pub matching_rule: Option<usize>,
    /// A dry-run policy (`istio.io/dry-run: "true"`): evaluated and reported, never enforced.
    pub dry_run: bool,
}

/// The policies that apply to one workload, ready to evaluate requests. Callers compute it once per
/// workload (and again when policies change) and share it; [`AppliedPolicies::default`] allows everything.
#[derive(Debug, Clone, Default)]
pub struct AppliedPolicies {
    custom: Vec<Arc<IndexedPolicy>>,
    deny: Vec<Arc<IndexedPolicy>>,
    allow: Vec<Arc<IndexedPolicy>>,
    audit: Vec<Arc<IndexedPolicy>>,
    dry_deny: Vec<Arc<IndexedPolicy>>,
    dry_allow: Vec<Arc<IndexedPolicy>>,
    allow_names: Arc<[PolicyName]>,
}

impl AppliedPolicies {
    /// The policies a control plane already scoped to one workload, in evaluation order (oldest first);
    /// `dry_run` counts for ALLOW and DENY only. `serviceAccounts` written without a namespace take the
    /// policy's, as in [`AuthzIndex::new`].
    pub fn from_scoped(
        policies: impl IntoIterator<Item = (PolicyName, AuthorizationPolicy, bool)>,
    ) -> Self {
        let mut applied = Self::default();
        for (name, mut policy, dry_run) in policies {
            policy.bind_namespace(&name.namespace);
            let dry_run = dry_run && matches!(policy.action, Action::Allow | Action::Deny);
            applied.push(Arc::new(IndexedPolicy {
                name,
                policy,
                dry_run,
            }));
        }
        applied.finish()
    }

    fn push(&mut self, indexed: Arc<IndexedPolicy>) {
        match (indexed.policy.action, indexed.dry_run) {
            (Action::Allow, false) => self.allow.push(indexed),
            (Action::Deny, false) => self.deny.push(indexed),
            (Action::Audit, _) => self.audit.push(indexed),
            (Action::Custom, _) => self.custom.push(indexed),
            (Action::Allow, true) => self.dry_allow.push(indexed),
            (Action::Deny, true) => self.dry_deny.push(indexed),
        }
    }

    /// Names the ALLOW policies once all are pushed (a decision reports them when none matches).
    fn finish(mut self) -> Self {
        self.allow_names = self.allow.iter().map(|p| p.name.clone()).collect();
        self
    }
}

/// The first matching rule among `policies`, in order.
fn first_match_in(
    policies: &[Arc<IndexedPolicy>],
    attributes: &Attributes<'_>,
) -> Option<PolicyRef> {
    policies.iter().find_map(|policy| {
        policy
            .first_match(attributes)
            .map(|rule| policy.reference(rule))
    })
}

/// One shadow engine (dry-run ALLOW or DENY), when it has policies.
fn shadow(
    action: Action,
    policies: &[Arc<IndexedPolicy>],
    attributes: &Attributes<'_>,
) -> Option<DryRun> {
    if policies.is_empty() {
        return None;
    }
    let by = first_match_in(policies, attributes);
    Some(DryRun {
        action,
        allowed: (action == Action::Allow) == by.is_some(),
        by,
    })
}

impl AppliedPolicies {
    /// Istio's order (docs/SEMANTICS.md#authz-evaluation; Envoy filter order CUSTOM, AUDIT, DENY, ALLOW): a CUSTOM match denies
    /// (no extension provider exists in ironmesh, see [`Action::Custom`]); any DENY match denies; else with
    /// no ALLOW policy the request is allowed; else it is allowed iff some ALLOW rule matches. AUDIT matches
    /// are only reported, and dry-run policies only evaluated into [`Decision::dry_run`]. Allocates nothing
    /// unless an AUDIT or dry-run rule is evaluated or the path needs normalizing.
    pub fn evaluate(&self, request: &Request) -> Decision {
        let attributes = Attributes::new(request);
        let request = &attributes;
        let mut dry_run = Vec::new();
        let decide = |allowed, by, dry_run: Vec<DryRun>| {
            let mut audited = Vec::new();
            for policy in &self.audit {
                if let Some(rule) = policy.first_match(request) {
                    audited.push(policy.reference(rule));
                }
            }
            Decision {
                allowed,
                by,
                audited,
                allow_policies: self.allow_names.clone(),
                dry_run,
            }
        };
        if let Some(by) = first_match_in(&self.custom, request) {
            return decide(false, Some(by), dry_run);
        }
        dry_run.extend(shadow(Action::Deny, &self.dry_deny, request));
        if let Some(by) = first_match_in(&self.deny, request) {
            return decide(false, Some(by), dry_run);
        }
        dry_run.extend(shadow(Action::Allow, &self.dry_allow, request));
        if self.allow.is_empty() {
            return decide(true, None, dry_run);
        }
        match first_match_in(&self.allow, request) {
            Some(by) => decide(true, Some(by), dry_run),
            None => decide(false, None, dry_run),
        }
    }

    fn all(&self) -> impl Iterator<Item = &Arc<IndexedPolicy>> {
        self.custom
            .iter()
            .chain(&self.deny)
            .chain(&self.allow)
            .chain(&self.audit)
            .chain(&self.dry_deny)
            .chain(&self.dry_allow)
    }

    /// Every applied policy, in evaluation order (CUSTOM, DENY, ALLOW, AUDIT, then the dry-run DENY and
    /// ALLOW ones), with the first of its rules that matches `request` (`None`: no rule matches). For
    /// `ironmesh authz check` to show the whole picture behind a [`Decision`]; allocates, so not for the
    /// data path.
    pub fn explain(&self, request: &Request) -> Vec<PolicyMatch> {
        let attributes = Attributes::new(request);
        self.all()
            .map(|indexed| PolicyMatch {
                policy: indexed.name.clone(),
                action: indexed.policy.action,
                rule_count: indexed.policy.rules.len(),
                matching_rule: indexed.first_match(&attributes),
                dry_run: indexed.dry_run,
            })
            .collect()
    }

    /// The applied policies with their actions, in the order of [`AppliedPolicies::explain`].
    pub fn policies(&self) -> impl Iterator<Item = (&PolicyName, Action)> {
        self.all()
            .map(|indexed| (&indexed.name, indexed.policy.action))
    }

    /// The applied policies with whether each runs dry, in the order of [`AppliedPolicies::explain`]: what
    /// a control plane sends the workload's proxy ([`AppliedPolicies::from_scoped`] rebuilds the same set).
    pub fn entries(&self) -> impl Iterator<Item = (&PolicyName, &AuthorizationPolicy, bool)> {
        self.all()
            .map(|indexed| (&indexed.name, &indexed.policy, indexed.dry_run))
    }

    /// True when no policy applies (every request is allowed, and nothing is audited or dry-run).
    pub fn is_empty(&self) -> bool {
        self.all().next().is_none()
    }

    /// True when only dry-run or AUDIT policies apply: nothing can deny a request.
    pub fn never_denies(&self) -> bool {
        self.custom.is_empty() && self.deny.is_empty() && self.allow.is_empty()
    }
}
