//! The typed AuthorizationPolicy model (`security.istio.io/v1beta1` and `v1`, same schema), parsed from the
//! `spec` JSON with errors that name the field path. Parsing applies every rule of Istio's validator
//! (`ValidateAuthorizationPolicy` in pkg/config/validation/validation.go and the checks it calls in
//! pkg/config/security/security.go), so what parses is what Istio accepts; parsed values are already
//! compiled for evaluation.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::error::SpecError;
use crate::matcher::{Glob, IpNet, ServiceAccount, StringMatch, TrustDomain};
use crate::parse::{
    Result, check_ips, check_non_empty, check_ports, check_service_accounts, check_wildcards,
    is_set, known_fields, object, object_list, path_list,
};
use crate::spec::{ConditionSpec, OperationSpec, RuleSpec, SourceSpec, read_rules};

/// What a policy does when one of its rules matches (docs/SEMANTICS.md#authz-evaluation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// The default: once any ALLOW policy applies to a workload, only matching requests are allowed.
    Allow,
    /// A match denies the request, before any ALLOW policy is looked at.
    Deny,
    /// A match is reported in [`crate::Decision::audited`]; it never changes the decision.
    Audit,
    /// Delegates matching requests to an extension provider (external authorizer). ironmesh has none, so
    /// it does what Istio does when the provider is not found in meshConfig: every request a CUSTOM rule
    /// matches is denied (pilot/pkg/security/authz/builder/builder.go `getBadCustomDenyRules`), before
    /// DENY and ALLOW policies are looked at.
    Custom,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "ALLOW",
            Self::Deny => "DENY",
            Self::Audit => "AUDIT",
            Self::Custom => "CUSTOM",
        })
    }
}

/// One parsed and compiled AuthorizationPolicy spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationPolicy {
    /// `selector.matchLabels`; `None` when there is no selector (the policy covers the whole namespace).
    pub(crate) selector: Option<BTreeMap<String, String>>,
    pub(crate) action: Action,
    pub(crate) rules: Vec<Rule>,
    /// `rules` as written, before compiling: what the control plane sends to proxies.
    pub(crate) written: Vec<RuleSpec>,
    /// `provider.name` of a CUSTOM policy.
    pub(crate) provider: Option<String>,
    /// The policy names `targetRef`/`targetRefs` (gateways, services): Istio never attaches such a policy
    /// to a sidecar (pilot/pkg/model/policyattachment.go `ShouldAttachPolicy`), and ironmesh has only
    /// sidecars, so it is stored and applies to no workload.
    pub(crate) targeted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Rule {
    pub(crate) from: Vec<Source>,
    pub(crate) to: Vec<Operation>,
    pub(crate) when: Vec<Condition>,
}

/// `rules[].from[].source`. Each list is empty when omitted; an empty list means "any".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Source {
    pub(crate) principals: Vec<StringMatch>,
    pub(crate) not_principals: Vec<StringMatch>,
    pub(crate) request_principals: Vec<StringMatch>,
    pub(crate) not_request_principals: Vec<StringMatch>,
    pub(crate) namespaces: Vec<Glob>,
    pub(crate) not_namespaces: Vec<Glob>,
    pub(crate) service_accounts: Vec<ServiceAccount>,
    pub(crate) not_service_accounts: Vec<ServiceAccount>,
    pub(crate) trust_domains: Vec<TrustDomain>,
    pub(crate) not_trust_domains: Vec<TrustDomain>,
    pub(crate) ip_blocks: Vec<IpNet>,
    pub(crate) not_ip_blocks: Vec<IpNet>,
    pub(crate) remote_ip_blocks: Vec<IpNet>,
    pub(crate) not_remote_ip_blocks: Vec<IpNet>,
}

/// A `paths`/`notPaths` entry: an Istio string pattern or a `{*}`/`{**}` path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathMatch {
    Pattern(StringMatch),
    Template(crate::path::PathTemplate),
}

impl PathMatch {
    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            Self::Pattern(pattern) => pattern.matches(path),
            Self::Template(template) => template.matches(path),
        }
    }
}

/// `rules[].to[].operation`. `hosts`, `methods` and `paths` (and their `not` forms) are HTTP-only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Operation {
    pub(crate) hosts: Vec<StringMatch>,
    pub(crate) not_hosts: Vec<StringMatch>,
    pub(crate) ports: Vec<u16>,
    pub(crate) not_ports: Vec<u16>,
    pub(crate) methods: Vec<StringMatch>,
    pub(crate) not_methods: Vec<StringMatch>,
    pub(crate) paths: Vec<PathMatch>,
    pub(crate) not_paths: Vec<PathMatch>,
}

/// `rules[].when[]`: `values` (any of) and `notValues` (none of) on one attribute, both must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Condition {
    pub(crate) attribute: Attribute,
    pub(crate) values: Values,
    pub(crate) not_values: Values,
}

/// The request attribute a `when` condition reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attribute {
    SourceNamespace,
    SourcePrincipal,
    SourceServiceAccount,
    SourceTrustDomain,
    SourceIp,
    RemoteIp,
    /// `request.headers[name]`, the name lowercased (HTTP header names are case-insensitive).
    RequestHeader(Box<str>),
    DestinationPort,
    DestinationIp,
    ConnectionSni,
    /// `request.auth.*`: needs a validated JWT, which ironmesh never has, so the attribute is always absent.
    /// HTTP-only in Istio (the generator refuses it on TCP filter chains).
    RequestAuth,
    /// `experimental.envoy.filters.*[...]`: Envoy filter metadata; ironmesh runs no such filter, so the
    /// metadata is always absent (values never match, notValues always do).
    EnvoyFilterMetadata,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Values {
    Strings(Vec<StringMatch>),
    Namespaces(Vec<Glob>),
    ServiceAccounts(Vec<ServiceAccount>),
    TrustDomains(Vec<TrustDomain>),
    Ips(Vec<IpNet>),
    Ports(Vec<u16>),
}

impl Values {
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Self::Strings(v) => v.is_empty(),
            Self::Namespaces(v) => v.is_empty(),
            Self::ServiceAccounts(v) => v.is_empty(),
            Self::TrustDomains(v) => v.is_empty(),
            Self::Ips(v) => v.is_empty(),
            Self::Ports(v) => v.is_empty(),
        }
    }
}

const SPEC_FIELDS: &[&str] = &[
    "selector",
    "action",
    "rules",
    "provider",
    "targetRef",
    "targetRefs",
];
const CONDITION_KEYS: &str = "source.namespace, source.principal, source.serviceAccount, \
    source.trustDomain, source.ip, remote.ip, request.headers[<name>], destination.port, destination.ip, \
    connection.sni, request.auth.principal, request.auth.audiences, request.auth.presenter, \
    request.auth.claims[<name>], experimental.envoy.filters.<filter>[<key>]";

/// Source fields Istio counts as "TCP attributes" when it warns about a DENY rule made only of HTTP ones.
const TCP_SOURCE_FIELDS: &[&str] = &[
    "principals",
    "notPrincipals",
    "ipBlocks",
    "notIpBlocks",
    "namespaces",
    "notNamespaces",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
    "serviceAccounts",
    "notServiceAccounts",
];

/// The annotation that turns an ALLOW or DENY policy into a dry run (evaluated and reported, never
/// enforced).
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// Go's `strconv.ParseBool`, which Istio uses for `istio.io/dry-run`.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

impl AuthorizationPolicy {
    /// Parses the `spec` of an AuthorizationPolicy (v1beta1 or v1) with Istio's validation rules; the first
    /// problem is returned with its field path.
    pub fn from_spec(spec: &Value) -> std::result::Result<Self, SpecError> {
        let empty = Map::new();
        let map = match spec {
            Value::Null => &empty,
            other => object(other, "spec")?,
        };
        known_fields(map, "spec", SPEC_FIELDS)?;
        let action = parse_action(map.get("action"))?;
        let selector = match map.get("selector") {
            None | Some(Value::Null) => None,
            Some(selector) => Some(parse_selector(selector)?),
        };
        let target_ref = map.get("targetRef").filter(|v| !v.is_null());
        let target_refs = object_list(map.get("targetRefs"), "spec.targetRefs")?;
        // validateOneOfSelectorType: a selector, a targetRef and a non-empty targetRefs exclude each other.
        let set = usize::from(selector.is_some())
            + usize::from(target_ref.is_some())
            + usize::from(!target_refs.is_empty());
        if set > 1 {
            return Err(SpecError::new(
                "spec",
                "only one of targetRefs or workloadSelector can be set (selector, targetRef and targetRefs exclude each other)",
            ));
        }
        if let Some(target) = target_ref {
            check_target_ref(target, "spec.targetRef")?;
        }
        for (i, target) in target_refs.iter().enumerate() {
            check_target_ref(target, &format!("spec.targetRefs[{i}]"))?;
        }
        let provider = match map.get("provider") {
            None | Some(Value::Null) => None,
            Some(provider) => {
                let provider_map = object(provider, "spec.provider")?;
                known_fields(provider_map, "spec.provider", &["name"])?;
                Some(match provider_map.get("name") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(name)) => name.clone(),
                    Some(_) => {
                        return Err(SpecError::new("spec.provider.name", "expected a string"));
                    }
                })
            }
        };
        let rules_value = map.get("rules").filter(|v| !v.is_null());
        // Istio reads `rules: []` as no rules at all (the list decodes to nil).
        let rules = read_rules(object_list(rules_value, "spec.rules")?)?;
        if action == Action::Custom {
            check_has_rules(action, &rules)?;
            if provider.as_deref().is_none_or(str::is_empty) {
                return Err(SpecError::new(
                    "spec.provider.name",
                    "`provider.name` must not be empty for a CUSTOM policy",
                ));
            }
        } else if provider.is_some() {
            return Err(SpecError::new(
                "spec.provider",
                format!("`provider` must not be with non CUSTOM action, found {action}"),
            ));
        }
        Ok(Self {
            selector,
            provider: provider.filter(|_| action == Action::Custom),
            targeted: target_ref.is_some() || !target_refs.is_empty(),
            ..Self::compile(action, rules)?
        })
    }

    /// Validates and compiles rules as written (what [`AuthorizationPolicy::from_spec`] reads from
    /// `spec.rules`, and what a proxy receives from the control plane) with Istio's rules for `action`:
    /// CUSTOM and DENY need a rule, CUSTOM refuses identity fields. Errors name the path from `spec`. The
    /// result has no selector (the control plane resolved it) and no extension provider.
    pub fn compile(action: Action, rules: Vec<RuleSpec>) -> std::result::Result<Self, SpecError> {
        check_has_rules(action, &rules)?;
        if action == Action::Custom {
            check_custom_rules(&rules)?;
        }
        let compiled = rules
            .iter()
            .enumerate()
            .map(|(i, rule)| compile_rule(rule, &format!("spec.rules[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            selector: None,
            action,
            rules: compiled,
            written: rules,
            provider: None,
            targeted: false,
        })
    }

    /// What an invalid stored policy is enforced as, so that its error never opens anything: DENY and
    /// CUSTOM (and an action that cannot be read as ALLOW or AUDIT) become one rule that matches every
    /// request, ALLOW becomes a policy without rules (allows nothing), AUDIT is `None` (it never changes a
    /// decision). The scope is kept when `selector.matchLabels` reads as labels; otherwise the stand-in
    /// covers the whole namespace, the wider and therefore closed choice.
    pub fn fail_closed(spec: &Value) -> Option<Self> {
        let (action, rules) = match spec.get("action").and_then(Value::as_str) {
            None | Some("ALLOW") => (Action::Allow, vec![]),
            Some("AUDIT") => return None,
            Some(_) => (Action::Deny, vec![RuleSpec::default()]),
        };
        let selector = spec
            .pointer("/selector/matchLabels")
            .and_then(|labels| {
                serde_json::from_value::<BTreeMap<String, String>>(labels.clone()).ok()
            })
            .filter(|labels| !labels.is_empty());
        let mut policy = Self::compile(action, rules).ok()?;
        policy.selector = selector;
        Some(policy)
    }

    /// The rules as written, for sending the validated policy on (the proxy compiles them again with
    /// [`AuthorizationPolicy::compile`]).
    pub fn written_rules(&self) -> &[RuleSpec] {
        &self.written
    }

    /// The policy's action.
    pub fn action(&self) -> Action {
        self.action
    }

    /// How many rules the policy has (`spec: {}` has none and, as ALLOW, allows nothing).
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The extension provider a CUSTOM policy names.
    pub fn provider(&self) -> Option<&str> {
        self.provider.as_deref()
    }

    /// True when the policy names `targetRef`/`targetRefs`: it never applies to a sidecar.
    pub fn is_targeted(&self) -> bool {
        self.targeted
    }

    /// Istio's check of the `istio.io/dry-run` annotation (pkg/config/validation/validation.go
    /// `checkDryRunAnnotation`): only ALLOW and DENY policies may carry it, and its value must be a Go
    /// boolean (`true`, `false`, `1`, `0`, `t`, `f`, `TRUE`, `True`, ...). Returns whether the policy is a
    /// dry run.
    pub fn check_dry_run(&self, annotation: Option<&str>) -> std::result::Result<bool, SpecError> {
        let Some(value) = annotation else {
            return Ok(false);
        };
        let path = format!("metadata.annotations.{DRY_RUN_ANNOTATION}");
        if !matches!(self.action, Action::Allow | Action::Deny) {
            return Err(SpecError::new(
                path,
                format!(
                    "the annotation {DRY_RUN_ANNOTATION} currently only supports action ALLOW/DENY, found action {}",
                    self.action
                ),
            ));
        }
        parse_bool(value).ok_or_else(|| {
            SpecError::new(
                path,
                format!("invalid value {value:?}: expected a boolean (\"true\" or \"false\")"),
            )
        })
    }

    /// Fills the policy namespace into `serviceAccounts` entries written without one (Istio defaults them
    /// to the policy's namespace).
    pub(crate) fn bind_namespace(&mut self, namespace: &str) {
        let bind_all = |accounts: &mut Vec<ServiceAccount>| {
            accounts.iter_mut().for_each(|sa| sa.bind(namespace));
        };
        for rule in &mut self.rules {
            for source in &mut rule.from {
                bind_all(&mut source.service_accounts);
                bind_all(&mut source.not_service_accounts);
            }
            for condition in &mut rule.when {
                for values in [&mut condition.values, &mut condition.not_values] {
                    if let Values::ServiceAccounts(accounts) = values {
                        bind_all(accounts);
                    }
                }
            }
        }
    }
}

/// Istio's warnings for a valid AuthorizationPolicy spec (pkg/config/validation/validation.go
/// `ValidateAuthorizationPolicy` and `validateWorkloadSelector`), as (field path, message) pairs in the
/// order Istio reports them. Returns nothing for a spec that is invalid (the error is what matters then).
pub fn validation_warnings(spec: &Value) -> Vec<(String, String)> {
    if AuthorizationPolicy::from_spec(spec).is_err() {
        return Vec::new();
    }
    let mut warnings = Vec::new();
    if let Some(selector) = spec.get("selector").filter(|s| !s.is_null()) {
        let labels = selector.get("matchLabels").and_then(Value::as_object);
        if labels.is_none_or(Map::is_empty) {
            warnings.push((
                "spec.selector".to_owned(),
                "workload selector specified without labels".to_owned(),
            ));
        }
    }
    if spec.get("action").and_then(Value::as_str) != Some("DENY") {
        return warnings;
    }
    let rules = spec.get("rules").and_then(Value::as_array);
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        let sources: Vec<&Value> = rule
            .get("from")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|from| from.get("source").filter(|s| !s.is_null()))
            .collect();
        let operations: Vec<&Value> = rule
            .get("to")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|to| to.get("operation").filter(|o| !o.is_null()))
            .collect();
        let tcp_in_from = sources
            .iter()
            .any(|source| TCP_SOURCE_FIELDS.iter().any(|f| is_set(source.get(*f))));
        let tcp_in_to = operations
            .iter()
            .any(|op| is_set(op.get("ports")) || is_set(op.get("notPorts")));
        let from_exists = !sources.is_empty();
        let to_exists = !operations.is_empty();
        if (from_exists && !to_exists && !tcp_in_from) || (to_exists && !tcp_in_to) {
            warnings.push((
                format!("spec.rules[{i}]"),
                "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port".to_owned(),
            ));
        }
    }
    warnings
}

fn parse_action(value: Option<&Value>) -> Result<Action> {
    match value {
        None | Some(Value::Null) => Ok(Action::Allow),
        Some(Value::String(s)) => match s.as_str() {
            "ALLOW" => Ok(Action::Allow),
            "DENY" => Ok(Action::Deny),
            "AUDIT" => Ok(Action::Audit),
            "CUSTOM" => Ok(Action::Custom),
            other => Err(SpecError::new(
                "spec.action",
                format!("unknown action `{other}`; expected ALLOW, DENY, AUDIT or CUSTOM"),
            )),
        },
        Some(_) => Err(SpecError::new(
            "spec.action",
            "expected a string: ALLOW, DENY, AUDIT or CUSTOM",
        )),
    }
}

/// validateWorkloadSelector: no empty key, no `*` in keys or values.
fn parse_selector(selector: &Value) -> Result<BTreeMap<String, String>> {
    let map = object(selector, "spec.selector")?;
    known_fields(map, "spec.selector", &["matchLabels"])?;
    let labels = match map.get("matchLabels") {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(labels) => object(labels, "spec.selector.matchLabels")?,
    };
    labels
        .iter()
        .map(|(key, value)| {
            let path = format!("spec.selector.matchLabels.{key}");
            let Value::String(value) = value else {
                return Err(SpecError::new(
                    path,
                    "expected a string label value (quote numbers and booleans in YAML)",
                ));
            };
            if key.is_empty() {
                return Err(SpecError::new(
                    "spec.selector.matchLabels",
                    format!("empty key is not supported in selector: \"={value}\""),
                ));
            }
            if key.contains('*') || value.contains('*') {
                return Err(SpecError::new(
                    path,
                    format!("wildcard is not supported in selector: \"{key}={value}\""),
                ));
            }
            Ok((key.clone(), value.clone()))
        })
        .collect()
}

/// validatePolicyTargetReference: a name, no namespace (no cross-namespace references), and a kind
/// among Service, ServiceEntry, Gateway and GatewayClass in its group.
fn check_target_ref(target: &Value, path: &str) -> Result<()> {
    let map = object(target, path)?;
    known_fields(map, path, &["group", "kind", "name", "namespace"])?;
    let field = |name: &str| -> Result<&str> {
        match map.get(name) {
            None | Some(Value::Null) => Ok(""),
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(SpecError::new(
                format!("{path}.{name}"),
                "expected a string",
            )),
        }
    };
    let (group, kind, name, namespace) = (
        field("group")?,
        field("kind")?,
        field("name")?,
        field("namespace")?,
    );
    if name.is_empty() {
        return Err(SpecError::new(
            format!("{path}.name"),
            "targetRef name must be set",
        ));
    }
    if !namespace.is_empty() {
        return Err(SpecError::new(
            format!("{path}.namespace"),
            "targetRef namespace must not be set; cross namespace referencing is not supported",
        ));
    }
    let group = if group.is_empty() { "core" } else { group };
    let allowed = matches!(
        (group, kind),
        ("core", "Service")
            | ("networking.istio.io", "ServiceEntry")
            | ("gateway.networking.k8s.io", "Gateway" | "GatewayClass")
    );
    if !allowed {
        return Err(SpecError::new(
            path,
            format!(
                "targetRef must be to one of Service (group \"\"), ServiceEntry (networking.istio.io), Gateway or GatewayClass (gateway.networking.k8s.io) but was {group}/{kind}"
            ),
        ));
    }
    Ok(())
}

/// CUSTOM and DENY policies need a rule (`{}` matches every request): without one they never trigger.
fn check_has_rules(action: Action, rules: &[RuleSpec]) -> Result<()> {
    if rules.is_empty() && matches!(action, Action::Custom | Action::Deny) {
        return Err(SpecError::new(
            "spec.rules",
            format!(
                "{action} action without `rules` is meaningless as it will never be triggered, add an empty rule `{{}}` if you want it be triggered for every request"
            ),
        ));
    }
    Ok(())
}

/// The source fields and `when` keys Istio does not support with CUSTOM (identity and JWT attributes).
fn check_custom_rules(rules: &[RuleSpec]) -> Result<()> {
    const IDENTITY_FIELDS: [&str; 10] = [
        "namespaces",
        "notNamespaces",
        "serviceAccounts",
        "notServiceAccounts",
        "trustDomains",
        "notTrustDomains",
        "principals",
        "notPrincipals",
        "requestPrincipals",
        "notRequestPrincipals",
    ];
    for (i, rule) in rules.iter().enumerate() {
        for (f, source) in rule.from.iter().enumerate() {
            let set = source
                .fields()
                .find(|(name, values)| IDENTITY_FIELDS.contains(name) && !values.is_empty());
            if let Some((field, _)) = set {
                return Err(SpecError::new(
                    format!("spec.rules[{i}].from[{f}].source.{field}"),
                    format!("{field} is currently not supported with CUSTOM action"),
                ));
            }
        }
        for (w, when) in rule.when.iter().enumerate() {
            let key = when.key.as_str();
            if matches!(
                key,
                "source.namespace"
                    | "source.serviceAccount"
                    | "source.trustDomain"
                    | "source.principal"
            ) || key.starts_with("request.auth.")
            {
                return Err(SpecError::new(
                    format!("spec.rules[{i}].when[{w}].key"),
                    format!("{key} is currently not supported with CUSTOM action"),
                ));
            }
        }
    }
    Ok(())
}

fn compile_rule(rule: &RuleSpec, path: &str) -> Result<Rule> {
    let from = rule
        .from
        .iter()
        .enumerate()
        .map(|(i, source)| compile_source(source, &format!("{path}.from[{i}].source")))
        .collect::<Result<Vec<_>>>()?;
    let to = rule
        .to
        .iter()
        .enumerate()
        .map(|(i, operation)| compile_operation(operation, &format!("{path}.to[{i}].operation")))
        .collect::<Result<Vec<_>>>()?;
    let when = rule
        .when
        .iter()
        .enumerate()
        .map(|(i, condition)| compile_condition(condition, &format!("{path}.when[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    Ok(Rule { from, to, when })
}

/// Istio's validation refuses an empty `source`/`operation`: it is almost always a mistake, and "match
/// anything" is written by omitting `from`/`to`.
fn compile_source(source: &SourceSpec, path: &str) -> Result<Source> {
    if *source == SourceSpec::default() {
        return Err(SpecError::new(
            path,
            "`from.source` must not be empty: set at least one field, or omit `from` to match any source",
        ));
    }
    let field = |name: &str| format!("{path}.{name}");
    let is_set = |names: &[&str]| {
        source
            .fields()
            .any(|(name, values)| names.contains(&name) && !values.is_empty())
    };
    if is_set(&["principals", "notPrincipals", "namespaces", "notNamespaces"])
        && is_set(&["serviceAccounts", "notServiceAccounts"])
    {
        return Err(SpecError::new(
            path,
            "cannot set serviceAccounts with namespaces or principals",
        ));
    }
    let patterns = |values: &[String], name: &str| -> Result<Vec<StringMatch>> {
        check_non_empty(values, &field(name))?;
        Ok(values.iter().map(|p| StringMatch::parse(p)).collect())
    };
    let globs = |values: &[String], name: &str| -> Result<Vec<Glob>> {
        check_non_empty(values, &field(name))?;
        Ok(values.iter().map(|p| Glob::parse(p)).collect())
    };
    let accounts = |values: &[String], name: &str| -> Result<Vec<ServiceAccount>> {
        check_service_accounts(values, &field(name))?;
        Ok(values.iter().map(|v| ServiceAccount::parse(v)).collect())
    };
    let trust_domains = |values: &[String], name: &str| -> Result<Vec<TrustDomain>> {
        check_wildcards(values, &field(name))?;
        if let Some((i, value)) = values.iter().enumerate().find(|(_, v)| v.contains('/')) {
            return Err(SpecError::new(
                format!("{}[{i}]", field(name)),
                format!(
                    "trust domain must not contain '/', found {value:?} (write `cluster.local`, not a SPIFFE ID)"
                ),
            ));
        }
        Ok(values.iter().map(|v| TrustDomain::parse(v)).collect())
    };
    let ips = |values: &[String], name: &str| check_ips(values, &field(name));
    Ok(Source {
        principals: patterns(&source.principals, "principals")?,
        not_principals: patterns(&source.not_principals, "notPrincipals")?,
        request_principals: patterns(&source.request_principals, "requestPrincipals")?,
        not_request_principals: patterns(&source.not_request_principals, "notRequestPrincipals")?,
        namespaces: globs(&source.namespaces, "namespaces")?,
        not_namespaces: globs(&source.not_namespaces, "notNamespaces")?,
        service_accounts: accounts(&source.service_accounts, "serviceAccounts")?,
        not_service_accounts: accounts(&source.not_service_accounts, "notServiceAccounts")?,
        trust_domains: trust_domains(&source.trust_domains, "trustDomains")?,
        not_trust_domains: trust_domains(&source.not_trust_domains, "notTrustDomains")?,
        ip_blocks: ips(&source.ip_blocks, "ipBlocks")?,
        not_ip_blocks: ips(&source.not_ip_blocks, "notIpBlocks")?,
        remote_ip_blocks: ips(&source.remote_ip_blocks, "remoteIpBlocks")?,
        not_remote_ip_blocks: ips(&source.not_remote_ip_blocks, "notRemoteIpBlocks")?,
    })
}

fn compile_operation(operation: &OperationSpec, path: &str) -> Result<Operation> {
    if *operation == OperationSpec::default() {
        return Err(SpecError::new(
            path,
            "`to.operation` must not be empty: set at least one field, or omit `to` to match any operation",
        ));
    }
    let field = |name: &str| format!("{path}.{name}");
    let patterns = |values: &[String], name: &str| -> Result<Vec<StringMatch>> {
        check_non_empty(values, &field(name))?;
        Ok(values.iter().map(|p| StringMatch::parse(p)).collect())
    };
    Ok(Operation {
        hosts: patterns(&operation.hosts, "hosts")?,
        not_hosts: patterns(&operation.not_hosts, "notHosts")?,
        ports: check_ports(&operation.ports, &field("ports"))?,
        not_ports: check_ports(&operation.not_ports, &field("notPorts"))?,
        methods: patterns(&operation.methods, "methods")?,
        not_methods: patterns(&operation.not_methods, "notMethods")?,
        paths: path_list(&operation.paths, &field("paths"))?,
        not_paths: path_list(&operation.not_paths, &field("notPaths"))?,
    })
}

fn compile_condition(condition: &ConditionSpec, path: &str) -> Result<Condition> {
    let key_path = format!("{path}.key");
    let key = condition.key.as_str();
    if key.is_empty() {
        return Err(SpecError::new(
            key_path,
            format!("`key` must not be empty; one of: {CONDITION_KEYS}"),
        ));
    }
    if condition.values.is_empty() && condition.not_values.is_empty() {
        return Err(SpecError::new(
            path,
            format!("at least one of `values` or `notValues` must be set for key {key}"),
        ));
    }
    let attribute = parse_attribute(key).map_err(|message| SpecError::new(&key_path, message))?;
    Ok(Condition {
        values: parse_values(
            &attribute,
            key,
            &condition.values,
            &format!("{path}.values"),
        )?,
        not_values: parse_values(
            &attribute,
            key,
            &condition.not_values,
            &format!("{path}.notValues"),
        )?,
        attribute,
    })
}

/// Istio's `validateMapKey`: `a[b]` with a non-empty `b`.
fn map_key_ok(key: &str) -> bool {
    match key.find('[') {
        Some(open) => key.ends_with(']') && open > 0 && open < key.len() - 2,
        None => false,
    }
}

/// Istio's `ValidateAttribute` key rules (pkg/config/security/security.go), in its order.
fn parse_attribute(key: &str) -> std::result::Result<Attribute, String> {
    let bad_map_key = || format!("bad key ({key}): should have format a[b]");
    if key.starts_with("request.headers") {
        if !map_key_ok(key) {
            return Err(bad_map_key());
        }
        let open = key.find('[').unwrap_or_default();
        let name = &key[open + 1..key.len() - 1];
        return Ok(Attribute::RequestHeader(name.to_ascii_lowercase().into()));
    }
    Ok(match key {
        "source.ip" => Attribute::SourceIp,
        "remote.ip" => Attribute::RemoteIp,
        "source.namespace" => Attribute::SourceNamespace,
        "source.serviceAccount" => Attribute::SourceServiceAccount,
        "source.principal" => Attribute::SourcePrincipal,
        "source.trustDomain" => Attribute::SourceTrustDomain,
        "request.auth.principal" | "request.auth.audiences" | "request.auth.presenter" => {
            Attribute::RequestAuth
        }
        "destination.ip" => Attribute::DestinationIp,
        "destination.port" => Attribute::DestinationPort,
        "connection.sni" => Attribute::ConnectionSni,
        "destination.namespace" => {
            return Err(format!(
                "attribute {key} is replaced by the metadata.namespace"
            ));
        }
        "destination.name" | "destination.user" => {
            return Err(format!(
                "deprecated attribute {key}: only supported in v1alpha1"
            ));
        }
        _ if key.starts_with("request.auth.claims") => {
            if !map_key_ok(key) {
                return Err(bad_map_key());
            }
            Attribute::RequestAuth
        }
        _ if key.starts_with("experimental.envoy.filters.") => {
            if !map_key_ok(key) {
                return Err(bad_map_key());
            }
            Attribute::EnvoyFilterMetadata
        }
        _ if key.starts_with("destination.labels") => {
            return Err(format!(
                "attribute {key} is replaced by the workload selector"
            ));
        }
        _ => {
            return Err(format!(
                "unknown attribute: {key}; supported keys: {CONDITION_KEYS}"
            ));
        }
    })
}

fn parse_values(attribute: &Attribute, key: &str, values: &[String], path: &str) -> Result<Values> {
    if let Some(i) = values.iter().position(String::is_empty) {
        return Err(SpecError::new(
            format!("{path}[{i}]"),
            format!("empty value not allowed, found in {key}"),
        ));
    }
    Ok(match attribute {
        Attribute::SourceIp | Attribute::RemoteIp | Attribute::DestinationIp => {
            Values::Ips(check_ips(values, path)?)
        }
        Attribute::DestinationPort => Values::Ports(check_ports(values, path)?),
        Attribute::SourceNamespace => {
            Values::Namespaces(values.iter().map(|v| Glob::parse(v)).collect())
        }
        Attribute::SourceServiceAccount => {
            check_service_accounts(values, path)?;
            Values::ServiceAccounts(values.iter().map(|v| ServiceAccount::parse(v)).collect())
        }
        Attribute::SourceTrustDomain => {
            check_wildcards(values, path)?;
            Values::TrustDomains(values.iter().map(|v| TrustDomain::parse(v)).collect())
        }
        _ => Values::Strings(values.iter().map(|v| StringMatch::parse(v)).collect()),
    })
}
