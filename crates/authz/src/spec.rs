//! A policy's rules as written: plain strings under Istio's field names, before validation. `spec.rules`
//! JSON is read into this form ([`read_rules`]), and the control plane sends a validated policy's rules to
//! its proxies in it, so apply time and the proxy validate and compile with the same code
//! ([`crate::AuthorizationPolicy::compile`]).

use serde_json::Value;

use crate::error::SpecError;
use crate::parse::{Result, known_fields, object, object_list, port_strings, string_list};

/// `rules[]`: a rule matches when one `from`, one `to` and every `when` match (empty lists match all).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleSpec {
    pub from: Vec<SourceSpec>,
    pub to: Vec<OperationSpec>,
    pub when: Vec<ConditionSpec>,
}

/// `rules[].from[].source`; an empty list is "any".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceSpec {
    pub principals: Vec<String>,
    pub not_principals: Vec<String>,
    pub request_principals: Vec<String>,
    pub not_request_principals: Vec<String>,
    pub namespaces: Vec<String>,
    pub not_namespaces: Vec<String>,
    pub service_accounts: Vec<String>,
    pub not_service_accounts: Vec<String>,
    pub trust_domains: Vec<String>,
    pub not_trust_domains: Vec<String>,
    pub ip_blocks: Vec<String>,
    pub not_ip_blocks: Vec<String>,
    pub remote_ip_blocks: Vec<String>,
    pub not_remote_ip_blocks: Vec<String>,
}

/// `rules[].to[].operation`; ports are decimal strings, as Istio writes them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OperationSpec {
    pub hosts: Vec<String>,
    pub not_hosts: Vec<String>,
    pub ports: Vec<String>,
    pub not_ports: Vec<String>,
    pub methods: Vec<String>,
    pub not_methods: Vec<String>,
    pub paths: Vec<String>,
    pub not_paths: Vec<String>,
}

/// `rules[].when[]`: one attribute `key`, any of `values`, none of `not_values`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConditionSpec {
    pub key: String,
    pub values: Vec<String>,
    pub not_values: Vec<String>,
}

impl SourceSpec {
    /// Every field under its spec name, in Istio's order.
    pub fn fields(&self) -> [(&'static str, &[String]); 14] {
        [
            ("principals", &self.principals),
            ("notPrincipals", &self.not_principals),
            ("requestPrincipals", &self.request_principals),
            ("notRequestPrincipals", &self.not_request_principals),
            ("namespaces", &self.namespaces),
            ("notNamespaces", &self.not_namespaces),
            ("serviceAccounts", &self.service_accounts),
            ("notServiceAccounts", &self.not_service_accounts),
            ("trustDomains", &self.trust_domains),
            ("notTrustDomains", &self.not_trust_domains),
            ("ipBlocks", &self.ip_blocks),
            ("notIpBlocks", &self.not_ip_blocks),
            ("remoteIpBlocks", &self.remote_ip_blocks),
            ("notRemoteIpBlocks", &self.not_remote_ip_blocks),
        ]
    }
}

impl OperationSpec {
    /// Every field under its spec name, in Istio's order.
    pub fn fields(&self) -> [(&'static str, &[String]); 8] {
        [
            ("hosts", &self.hosts),
            ("notHosts", &self.not_hosts),
            ("ports", &self.ports),
            ("notPorts", &self.not_ports),
            ("methods", &self.methods),
            ("notMethods", &self.not_methods),
            ("paths", &self.paths),
            ("notPaths", &self.not_paths),
        ]
    }
}

/// Reads `spec.rules` into their written form, refusing unknown fields and wrong types by path.
pub(crate) fn read_rules(rules: &[Value]) -> Result<Vec<RuleSpec>> {
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| read_rule(rule, &format!("spec.rules[{i}]")))
        .collect()
}

/// A `from`/`to` list: absent or `null` is "any"; an explicit empty list is refused, as Istio refuses
/// `From: []` ("`from` must not be empty").
fn explicit_list<'a>(value: Option<&'a Value>, path: &str, name: &str) -> Result<&'a [Value]> {
    match value {
        Some(Value::Array(items)) if items.is_empty() => Err(SpecError::new(
            path,
            format!("`{name}` must not be empty; omit it to match any {name}"),
        )),
        other => object_list(other, path),
    }
}

/// The `source`/`operation` objects of a `from`/`to` list, each read by `read` at its path.
fn wrapped<T>(
    list: &[Value],
    path: &str,
    inner: &str,
    read: impl Fn(&Value, &str) -> Result<T>,
) -> Result<Vec<T>> {
    list.iter()
        .enumerate()
        .map(|(i, item)| {
            let item_path = format!("{path}[{i}]");
            let wrapper = object(item, &item_path)?;
            known_fields(wrapper, &item_path, &[inner])?;
            read(
                wrapper.get(inner).unwrap_or(&Value::Null),
                &format!("{item_path}.{inner}"),
            )
        })
        .collect()
}

fn read_rule(rule: &Value, path: &str) -> Result<RuleSpec> {
    if rule.is_null() {
        return Err(SpecError::new(
            path,
            "`rule` must not be nil; write `{}` to match every request",
        ));
    }
    let map = object(rule, path)?;
    known_fields(map, path, &["from", "to", "when"])?;
    let from_path = format!("{path}.from");
    let to_path = format!("{path}.to");
    let from = explicit_list(map.get("from"), &from_path, "from")?;
    let to = explicit_list(map.get("to"), &to_path, "to")?;
    Ok(RuleSpec {
        from: wrapped(from, &from_path, "source", read_source)?,
        to: wrapped(to, &to_path, "operation", read_operation)?,
        when: object_list(map.get("when"), &format!("{path}.when"))?
            .iter()
            .enumerate()
            .map(|(i, condition)| read_condition(condition, &format!("{path}.when[{i}]")))
            .collect::<Result<Vec<_>>>()?,
    })
}

/// Istio's validation refuses a missing `source`: "match any source" is written by omitting `from`.
fn read_source(source: &Value, path: &str) -> Result<SourceSpec> {
    let map = object(source, path).map_err(|_| {
        SpecError::new(
            path,
            "`from.source` must not be nil: expected a source object with at least one field",
        )
    })?;
    known_fields(
        map,
        path,
        &SourceSpec::default().fields().map(|(name, _)| name),
    )?;
    let list = |name: &str| string_list(map.get(name), &format!("{path}.{name}"));
    Ok(SourceSpec {
        principals: list("principals")?,
        not_principals: list("notPrincipals")?,
        request_principals: list("requestPrincipals")?,
        not_request_principals: list("notRequestPrincipals")?,
        namespaces: list("namespaces")?,
        not_namespaces: list("notNamespaces")?,
        service_accounts: list("serviceAccounts")?,
        not_service_accounts: list("notServiceAccounts")?,
        trust_domains: list("trustDomains")?,
        not_trust_domains: list("notTrustDomains")?,
        ip_blocks: list("ipBlocks")?,
        not_ip_blocks: list("notIpBlocks")?,
        remote_ip_blocks: list("remoteIpBlocks")?,
        not_remote_ip_blocks: list("notRemoteIpBlocks")?,
    })
}

fn read_operation(operation: &Value, path: &str) -> Result<OperationSpec> {
    let map = object(operation, path).map_err(|_| {
        SpecError::new(
            path,
            "`to.operation` must not be nil: expected an operation object with at least one field",
        )
    })?;
    known_fields(
        map,
        path,
        &OperationSpec::default().fields().map(|(name, _)| name),
    )?;
    let list = |name: &str| string_list(map.get(name), &format!("{path}.{name}"));
    let ports = |name: &str| port_strings(map.get(name), &format!("{path}.{name}"));
    Ok(OperationSpec {
        hosts: list("hosts")?,
        not_hosts: list("notHosts")?,
        ports: ports("ports")?,
        not_ports: ports("notPorts")?,
        methods: list("methods")?,
        not_methods: list("notMethods")?,
        paths: list("paths")?,
        not_paths: list("notPaths")?,
    })
}

fn read_condition(condition: &Value, path: &str) -> Result<ConditionSpec> {
    if condition.is_null() {
        return Err(SpecError::new(path, "when field cannot be nil"));
    }
    let map = object(condition, path)?;
    known_fields(map, path, &["key", "values", "notValues"])?;
    let key = match map.get("key") {
        Some(Value::String(key)) => key.clone(),
        None | Some(Value::Null) => String::new(),
        Some(_) => return Err(SpecError::new(format!("{path}.key"), "expected a string")),
    };
    Ok(ConditionSpec {
        key,
        values: string_list(map.get("values"), &format!("{path}.values"))?,
        not_values: string_list(map.get("notValues"), &format!("{path}.notValues"))?,
    })
}
