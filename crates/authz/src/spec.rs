//! A policy's rules as written: plain strings under Istio's field names, before validation. `spec.rules`
//! JSON is read into this form ([`read_rules`]), and the control plane sends a validated policy's rules to
//! its proxies in it, so apply time and the proxy validate and compile with the same code
//! ([`crate::AuthorizationPolicy::compile`]).
//!
//! The fields of a `source` and an `operation` are listed once, in [`source_fields!`](crate::source_fields)
//! and [`operation_fields!`](crate::operation_fields); the structs here, their JSON reading, the protobuf
//! conversion (ironmesh-proto) and the apply-time schema (ironmesh-api) are all expanded from those lists.

use serde_json::{Map, Value};

use crate::error::SpecError;
use crate::parse::{Result, known_fields, object, object_list, port_strings, string_list};

/// The fields of Istio's `Source` (`rules[].from[].source`), in Istio's order, each once as
/// `rust_name "specName" kind` (`kind` is `strings`, or `ports` for decimal port strings). Calls
/// `$then! { ... }` with the list, so each place that needs the fields writes how to use one, not the list:
///
/// ```
/// macro_rules! spec_names {
///     ($($field:ident $name:literal $kind:ident),*) => { [$($name),*] };
/// }
/// assert_eq!(ironmesh_authz::source_fields!(spec_names)[1], "notPrincipals");
/// ```
#[macro_export]
macro_rules! source_fields {
    ($then:ident) => {
        $then! {
            principals "principals" strings,
            not_principals "notPrincipals" strings,
            request_principals "requestPrincipals" strings,
            not_request_principals "notRequestPrincipals" strings,
            namespaces "namespaces" strings,
            not_namespaces "notNamespaces" strings,
            service_accounts "serviceAccounts" strings,
            not_service_accounts "notServiceAccounts" strings,
            trust_domains "trustDomains" strings,
            not_trust_domains "notTrustDomains" strings,
            ip_blocks "ipBlocks" strings,
            not_ip_blocks "notIpBlocks" strings,
            remote_ip_blocks "remoteIpBlocks" strings,
            not_remote_ip_blocks "notRemoteIpBlocks" strings
        }
    };
}

/// The fields of Istio's `Operation` (`rules[].to[].operation`), as [`source_fields!`](crate::source_fields)
/// lists a source's.
#[macro_export]
macro_rules! operation_fields {
    ($then:ident) => {
        $then! {
            hosts "hosts" strings,
            not_hosts "notHosts" strings,
            ports "ports" ports,
            not_ports "notPorts" ports,
            methods "methods" strings,
            not_methods "notMethods" strings,
            paths "paths" strings,
            not_paths "notPaths" strings
        }
    };
}

/// Reads a field of `kind` (see [`source_fields!`](crate::source_fields)) at its path.
macro_rules! read_field {
    ($map:expr, $path:expr, $name:literal, strings) => {
        string_list($map.get($name), &format!("{}.{}", $path, $name))
    };
    ($map:expr, $path:expr, $name:literal, ports) => {
        port_strings($map.get($name), &format!("{}.{}", $path, $name))
    };
}

/// A written `source`/`operation` struct from its field list: the fields, their spec names and the reading
/// of a JSON object that refuses unknown fields by path.
macro_rules! written_form {
    ($(#[$doc:meta])* $type:ident, $($field:ident $name:literal $kind:ident),*) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $type {
            $(pub $field: Vec<String>,)*
        }

        impl $type {
            /// The spec names of the fields, in Istio's order.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// Every field under its spec name, in Istio's order.
            pub fn fields(&self) -> impl Iterator<Item = (&'static str, &[String])> {
                [$(($name, self.$field.as_slice())),*].into_iter()
            }

            fn read(map: &Map<String, Value>, path: &str) -> Result<Self> {
                known_fields(map, path, Self::NAMES)?;
                Ok(Self {
                    $($field: read_field!(map, path, $name, $kind)?,)*
                })
            }
        }
    };
}

macro_rules! source_spec {
    ($($fields:tt)*) => {
        written_form!(
            /// `rules[].from[].source`; an empty list is "any".
            SourceSpec, $($fields)*
        );
    };
}
source_fields!(source_spec);

macro_rules! operation_spec {
    ($($fields:tt)*) => {
        written_form!(
            /// `rules[].to[].operation`; ports are decimal strings, as Istio writes them.
            OperationSpec, $($fields)*
        );
    };
}
operation_fields!(operation_spec);

/// `rules[]`: a rule matches when one `from`, one `to` and every `when` match (empty lists match all).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleSpec {
    pub from: Vec<SourceSpec>,
    pub to: Vec<OperationSpec>,
    pub when: Vec<ConditionSpec>,
}

/// `rules[].when[]`: one attribute `key`, any of `values`, none of `not_values`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConditionSpec {
    pub key: String,
    pub values: Vec<String>,
    pub not_values: Vec<String>,
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
    SourceSpec::read(map, path)
}

fn read_operation(operation: &Value, path: &str) -> Result<OperationSpec> {
    let map = object(operation, path).map_err(|_| {
        SpecError::new(
            path,
            "`to.operation` must not be nil: expected an operation object with at least one field",
        )
    })?;
    OperationSpec::read(map, path)
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
