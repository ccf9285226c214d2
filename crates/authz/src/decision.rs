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
        Ok(())
    }
}
