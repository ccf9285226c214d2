//! The outcome of one evaluation and why: which policy and rule decided, which AUDIT rules matched, and
//! which ALLOW policies applied when none matched. Printed as-is by `ironmesh authz check`.

use std::fmt;
use std::sync::Arc;

use crate::model::Action;

/// A policy by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyName {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One rule of one policy that matched a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyRef {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub action: Action,
    /// Index into the policy's `spec.rules`.
    pub rule: usize,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} policy {}/{} rule {}",
            self.action, self.namespace, self.name, self.rule
        )
    }
}

/// What the dry-run policies of one action (annotation `istio.io/dry-run: "true"`) would have decided,
/// as Envoy's RBAC shadow rules report it (`shadow_engine_result`, `shadow_effective_policy_id`, stats
/// `istio_dry_run_allow_shadow_allowed/denied` and `istio_dry_run_deny_shadow_allowed/denied`). Never
/// enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DryRun {
    /// ALLOW or DENY: which shadow engine this is.
    pub action: Action,
    /// The shadow engine's result: a dry-run DENY rule matched (`false`), or for ALLOW, whether one of
    /// the dry-run ALLOW rules matched.
    pub allowed: bool,
    /// The dry-run rule that matched (the shadow effective policy), if any.
    pub by: Option<PolicyRef>,
}

impl fmt::Display for DryRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed { "allow" } else { "deny" };
        write!(f, "dry-run {} policies would {verdict}", self.action)?;
        match &self.by {
            Some(by) => write!(
                f,
                " (matched {}/{} rule {})",
                by.namespace, by.name, by.rule
            ),
            None => f.write_str(" (no rule matches)"),
        }
    }
}

/// The result of [`crate::AppliedPolicies::evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The DENY rule that denied, or the ALLOW rule that allowed; `None` when the default decided
    /// (allowed because no ALLOW policy applies, or denied because none of them matched).
    pub by: Option<PolicyRef>,
    /// Every AUDIT rule that matched (the first matching rule of each AUDIT policy).
    pub audited: Vec<PolicyRef>,
    /// The ALLOW policies that apply to the workload, to explain a default deny.
    pub allow_policies: Arc<[PolicyName]>,
    /// The shadow (dry-run) results, DENY first then ALLOW, for the actions that have dry-run policies
    /// and were reached (a request denied before the ALLOW stage never reaches the ALLOW shadow engine).
    pub dry_run: Vec<DryRun>,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed { "allowed" } else { "denied" };
        match &self.by {
            Some(by) => write!(f, "{verdict} by {by}")?,
            None if self.allowed => write!(f, "{verdict}: no ALLOW policy applies")?,
            None => {
                write!(f, "{verdict}: ALLOW policies apply (")?;
                for (i, name) in self.allow_policies.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{name}")?;
                }
                f.write_str(") but none matches")?;
            }
        }
        for (i, audit) in self.audited.iter().enumerate() {
            f.write_str(if i == 0 { "; audited by " } else { ", " })?;
            write!(f, "{}/{} rule {}", audit.namespace, audit.name, audit.rule)?;
        }
        for dry_run in &self.dry_run {
            write!(f, "; {dry_run}")?;
        }
        Ok(())
    }
}
