//! The typed AuthorizationPolicy model (`security.istio.io/v1beta1` and `v1`, same schema), parsed from the
//! `spec` JSON with errors that name the field path. Parsed values are already compiled for evaluation.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::error::SpecError;
use crate::matcher::{IpNet, StringMatch};
use crate::parse::{
    Result, compile_patterns, ip_list, known_fields, object, object_list, path_list, pattern_list,
    port_list, string_list,
};

/// What a policy does when one of its rules matches (API-AP `Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// The default: once any ALLOW policy applies to a workload, only matching requests are allowed.
    Allow,
    /// A match denies the request, before any ALLOW policy is looked at.
    Deny,
    /// A match is reported in [`crate::Decision::audited`]; it never changes the decision.
    Audit,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Allow => "ALLOW",
            Self::Deny => "DENY",
            Self::Audit => "AUDIT",
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
    pub(crate) namespaces: Vec<StringMatch>,
    pub(crate) not_namespaces: Vec<StringMatch>,
    pub(crate) ip_blocks: Vec<IpNet>,
    pub(crate) not_ip_blocks: Vec<IpNet>,
    pub(crate) remote_ip_blocks: Vec<IpNet>,
    pub(crate) not_remote_ip_blocks: Vec<IpNet>,
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
    pub(crate) paths: Vec<StringMatch>,
    pub(crate) not_paths: Vec<StringMatch>,
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
    SourceIp,
    RemoteIp,
    /// `request.headers[name]`, the name lowercased (HTTP header names are case-insensitive).
    RequestHeader(Box<str>),
    DestinationPort,
    DestinationIp,
    ConnectionSni,
    /// `request.auth.*`: needs a validated JWT, which ironmesh never has, so the attribute is always absent.
    RequestAuth,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Values {
    Strings(Vec<StringMatch>),
    Ips(Vec<IpNet>),
    Ports(Vec<u16>),
}

impl Values {
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            Self::Strings(v) => v.is_empty(),
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
const RULE_FIELDS: &[&str] = &["from", "to", "when"];
const SOURCE_FIELDS: &[&str] = &[
    "principals",
    "notPrincipals",
    "requestPrincipals",
    "notRequestPrincipals",
    "namespaces",
    "notNamespaces",
    "ipBlocks",
    "notIpBlocks",
    "remoteIpBlocks",
    "notRemoteIpBlocks",
];
const OPERATION_FIELDS: &[&str] = &[
    "hosts",
    "notHosts",
    "ports",
    "notPorts",
    "methods",
    "notMethods",
    "paths",
    "notPaths",
];
const CONDITION_KEYS: &str = "source.namespace, source.principal, source.ip, remote.ip, \
    request.headers[<name>], destination.port, destination.ip, connection.sni, request.auth.*";

impl AuthorizationPolicy {
    /// Parses the `spec` of an AuthorizationPolicy (v1beta1 or v1). `CUSTOM`, `targetRef(s)` and unknown
    /// fields are refused with an error naming the field path.
    pub fn from_spec(spec: &Value) -> std::result::Result<Self, SpecError> {
        let map = match spec {
            Value::Null => {
                return Ok(Self {
                    selector: None,
                    action: Action::Allow,
                    rules: Vec::new(),
                });
            }
            other => object(other, "spec")?,
        };
        known_fields(map, "spec", SPEC_FIELDS)?;
        for field in ["targetRef", "targetRefs"] {
            if map.contains_key(field) {
                return Err(SpecError::new(
                    format!("spec.{field}"),
                    "targeting gateways or services is not supported; use spec.selector.matchLabels",
                ));
            }
        }
        let action = parse_action(map.get("action"))?;
        let selector = match map.get("selector") {
            None | Some(Value::Null) => None,
            Some(selector) => Some(parse_selector(selector)?),
        };
        let rules = object_list(map.get("rules"), "spec.rules")?
            .iter()
            .enumerate()
            .map(|(i, rule)| parse_rule(rule, &format!("spec.rules[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            selector,
            action,
            rules,
        })
    }

    /// The policy's action.
    pub fn action(&self) -> Action {
        self.action
    }

    /// How many rules the policy has (`spec: {}` has none and, as ALLOW, allows nothing).
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }
}

fn parse_action(value: Option<&Value>) -> Result<Action> {
    match value {
        None | Some(Value::Null) => Ok(Action::Allow),
        Some(Value::String(s)) => match s.as_str() {
            "ALLOW" => Ok(Action::Allow),
            "DENY" => Ok(Action::Deny),
            "AUDIT" => Ok(Action::Audit),
            "CUSTOM" => Err(SpecError::new(
                "spec.action",
                "CUSTOM is not supported: ironmesh has no external authorization provider; use ALLOW, DENY or AUDIT",
            )),
            other => Err(SpecError::new(
                "spec.action",
                format!("unknown action `{other}`; expected ALLOW, DENY or AUDIT"),
            )),
        },
        Some(_) => Err(SpecError::new(
            "spec.action",
            "expected a string: ALLOW, DENY or AUDIT",
        )),
    }
}

fn parse_selector(selector: &Value) -> Result<BTreeMap<String, String>> {
    let map = object(selector, "spec.selector")?;
    known_fields(map, "spec.selector", &["matchLabels"])?;
    let labels = match map.get("matchLabels") {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(labels) => object(labels, "spec.selector.matchLabels")?,
    };
    labels
        .iter()
        .map(|(key, value)| match value {
            Value::String(s) => Ok((key.clone(), s.clone())),
            _ => Err(SpecError::new(
                format!("spec.selector.matchLabels.{key}"),
                "expected a string label value (quote numbers and booleans in YAML)",
            )),
        })
        .collect()
}

fn parse_rule(rule: &Value, path: &str) -> Result<Rule> {
    let map = object(rule, path)?;
    known_fields(map, path, RULE_FIELDS)?;
    let from = object_list(map.get("from"), &format!("{path}.from"))?
        .iter()
        .enumerate()
        .map(|(i, from)| {
            let from_path = format!("{path}.from[{i}]");
            let wrapper = object(from, &from_path)?;
            known_fields(wrapper, &from_path, &["source"])?;
            parse_source(
                wrapper.get("source").unwrap_or(&Value::Null),
                &format!("{from_path}.source"),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let to = object_list(map.get("to"), &format!("{path}.to"))?
        .iter()
        .enumerate()
        .map(|(i, to)| {
            let to_path = format!("{path}.to[{i}]");
            let wrapper = object(to, &to_path)?;
            known_fields(wrapper, &to_path, &["operation"])?;
            parse_operation(
                wrapper.get("operation").unwrap_or(&Value::Null),
                &format!("{to_path}.operation"),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let when = object_list(map.get("when"), &format!("{path}.when"))?
        .iter()
        .enumerate()
        .map(|(i, condition)| parse_condition(condition, &format!("{path}.when[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    Ok(Rule { from, to, when })
}

/// Istio's validation refuses an empty `source`/`operation`: it is almost always a mistake, and "match
/// anything" is written by omitting `from`/`to`.
fn parse_source(source: &Value, path: &str) -> Result<Source> {
    let map = object(source, path)
        .map_err(|_| SpecError::new(path, "expected a source object with at least one field"))?;
    known_fields(map, path, SOURCE_FIELDS)?;
    let field = |name: &str| format!("{path}.{name}");
    let parsed = Source {
        principals: pattern_list(map.get("principals"), &field("principals"))?,
        not_principals: pattern_list(map.get("notPrincipals"), &field("notPrincipals"))?,
        request_principals: pattern_list(
            map.get("requestPrincipals"),
            &field("requestPrincipals"),
        )?,
        not_request_principals: pattern_list(
            map.get("notRequestPrincipals"),
            &field("notRequestPrincipals"),
        )?,
        namespaces: pattern_list(map.get("namespaces"), &field("namespaces"))?,
        not_namespaces: pattern_list(map.get("notNamespaces"), &field("notNamespaces"))?,
        ip_blocks: ip_list(map.get("ipBlocks"), &field("ipBlocks"))?,
        not_ip_blocks: ip_list(map.get("notIpBlocks"), &field("notIpBlocks"))?,
        remote_ip_blocks: ip_list(map.get("remoteIpBlocks"), &field("remoteIpBlocks"))?,
        not_remote_ip_blocks: ip_list(map.get("notRemoteIpBlocks"), &field("notRemoteIpBlocks"))?,
    };
    if parsed == Source::default() {
        return Err(SpecError::new(
            path,
            "a source must set at least one field; omit `from` to match any source",
        ));
    }
    Ok(parsed)
}

fn parse_operation(operation: &Value, path: &str) -> Result<Operation> {
    let map = object(operation, path).map_err(|_| {
        SpecError::new(path, "expected an operation object with at least one field")
    })?;
    known_fields(map, path, OPERATION_FIELDS)?;
    let field = |name: &str| format!("{path}.{name}");
    let parsed = Operation {
        hosts: pattern_list(map.get("hosts"), &field("hosts"))?,
        not_hosts: pattern_list(map.get("notHosts"), &field("notHosts"))?,
        ports: port_list(map.get("ports"), &field("ports"))?,
        not_ports: port_list(map.get("notPorts"), &field("notPorts"))?,
        methods: pattern_list(map.get("methods"), &field("methods"))?,
        not_methods: pattern_list(map.get("notMethods"), &field("notMethods"))?,
        paths: path_list(map.get("paths"), &field("paths"))?,
        not_paths: path_list(map.get("notPaths"), &field("notPaths"))?,
    };
    if parsed == Operation::default() {
        return Err(SpecError::new(
            path,
            "an operation must set at least one field; omit `to` to match any operation",
        ));
    }
    Ok(parsed)
}

fn parse_condition(condition: &Value, path: &str) -> Result<Condition> {
    let map = object(condition, path)?;
    known_fields(map, path, &["key", "values", "notValues"])?;
    let key_path = format!("{path}.key");
    let key = match map.get("key") {
        Some(Value::String(key)) => key.as_str(),
        Some(_) => return Err(SpecError::new(key_path, "expected a string")),
        None => {
            return Err(SpecError::new(
                key_path,
                format!("required; one of: {CONDITION_KEYS}"),
            ));
        }
    };
    let attribute = parse_attribute(key).ok_or_else(|| {
        SpecError::new(
            &key_path,
            format!("unknown key `{key}`; supported keys: {CONDITION_KEYS}"),
        )
    })?;
    let values_path = format!("{path}.values");
    let not_values_path = format!("{path}.notValues");
    let values = parse_values(&attribute, map.get("values"), &values_path)?;
    let not_values = parse_values(&attribute, map.get("notValues"), &not_values_path)?;
    if values.is_empty() && not_values.is_empty() {
        return Err(SpecError::new(
            path,
            "a condition needs `values` or `notValues`",
        ));
    }
    Ok(Condition {
        attribute,
        values,
        not_values,
    })
}

fn parse_attribute(key: &str) -> Option<Attribute> {
    Some(match key {
        "source.namespace" => Attribute::SourceNamespace,
        "source.principal" => Attribute::SourcePrincipal,
        "source.ip" => Attribute::SourceIp,
        "remote.ip" => Attribute::RemoteIp,
        "destination.port" => Attribute::DestinationPort,
        "destination.ip" => Attribute::DestinationIp,
        "connection.sni" => Attribute::ConnectionSni,
        "request.auth.principal" | "request.auth.audiences" | "request.auth.presenter" => {
            Attribute::RequestAuth
        }
        _ => {
            if let Some(claim) = key.strip_prefix("request.auth.claims[") {
                return (claim.len() > 1 && claim.ends_with(']')).then_some(Attribute::RequestAuth);
            }
            let name = key.strip_prefix("request.headers[")?.strip_suffix(']')?;
            if name.is_empty() || name.contains(['[', ']']) {
                return None;
            }
            Attribute::RequestHeader(name.to_ascii_lowercase().into())
        }
    })
}

fn parse_values(attribute: &Attribute, value: Option<&Value>, path: &str) -> Result<Values> {
    Ok(match attribute {
        Attribute::SourceIp | Attribute::RemoteIp | Attribute::DestinationIp => {
            Values::Ips(ip_list(value, path)?)
        }
        Attribute::DestinationPort => Values::Ports(port_list(value, path)?),
        _ => Values::Strings(compile_patterns(string_list(value, path)?, path, false)?),
    })
}
