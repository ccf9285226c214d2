//! Client side: which DestinationRule applies to a client namespace calling a host and port, and the
//! TLS it asks for (docs/SEMANTICS.md#destinationrule-precedence; docs/SEMANTICS.md#resources): rules in the client namespace, then the service
//! namespace's exported rules, then the root namespace's, then (Istio 1.0) any other namespace's
//! exported rules; most specific host within a namespace; port-level settings replace `tls`.

use std::collections::HashMap;

use super::resources::{Rule, Tls, Traffic, subset_of};
use super::{CLUSTER_DOMAIN, ClientDecision, ClientTlsMode, PolicyIndex};

/// Rules of one scope, arranged for host lookups. Vectors hold indexes into `RuleTables::rules`,
/// oldest first.
#[derive(Debug, Default)]
struct HostTable {
    exact: HashMap<String, Vec<usize>>,
    /// Wildcard hosts (`*`, `*.local`, ...), most specific (longest) first, grouped by host, then
    /// oldest first.
    wildcards: Vec<usize>,
}

/// All DestinationRules, by namespace and across the mesh.
#[derive(Debug, Default)]
pub(crate) struct RuleTables {
    rules: Vec<Rule>,
    by_namespace: HashMap<String, HostTable>,
    everywhere: HostTable,
}

/// Whether a rule host covers a concrete host: equal, `*`, or a `*.suffix` wildcard.
fn host_matches(rule_host: &str, needle: &str) -> bool {
    if rule_host == needle || rule_host == "*" {
        return true;
    }
    rule_host
        .strip_prefix('*')
        .is_some_and(|suffix| suffix.starts_with('.') && needle.ends_with(suffix))
}

impl HostTable {
    fn add(&mut self, rules: &[Rule], index: usize) {
        let host = &rules[index].host;
        if host.starts_with('*') {
            self.wildcards.push(index);
        } else {
            self.exact.entry(host.clone()).or_default().push(index);
        }
    }

    fn finish(&mut self, rules: &[Rule]) {
        let by_age = |a: &usize, b: &usize| rules[*a].meta.age_order(&rules[*b].meta);
        for list in self.exact.values_mut() {
            list.sort_by(by_age);
        }
        self.wildcards.sort_by(|a, b| {
            rules[*b]
                .host
                .len()
                .cmp(&rules[*a].host.len())
                .then_with(|| rules[*a].host.cmp(&rules[*b].host))
                .then_with(|| by_age(a, b))
        });
    }

    /// The visible rules for the most specific matching host, oldest first.
    fn lookup<'a>(
        &self,
        rules: &'a [Rule],
        needle: &str,
        visible: impl Fn(&Rule) -> bool,
    ) -> Vec<&'a Rule> {
        if let Some(list) = self.exact.get(needle) {
            let found: Vec<&Rule> = list
                .iter()
                .map(|i| &rules[*i])
                .filter(|r| visible(r))
                .collect();
            if !found.is_empty() {
                return found;
            }
        }
        let mut best: Option<&str> = None;
        let mut found = Vec::new();
        for rule in self.wildcards.iter().map(|i| &rules[*i]) {
            if let Some(host) = best
                && rule.host != host
            {
                break;
            }
            if host_matches(&rule.host, needle) && visible(rule) {
                best = Some(&rule.host);
                found.push(rule);
            }
        }
        found
    }
}

impl RuleTables {
    pub(crate) fn build(rules: Vec<Rule>) -> RuleTables {
        let mut tables = RuleTables {
            rules,
            ..RuleTables::default()
        };
        for index in 0..tables.rules.len() {
            let namespace = tables.rules[index].meta.namespace.clone();
            tables
                .by_namespace
                .entry(namespace)
                .or_default()
                .add(&tables.rules, index);
            tables.everywhere.add(&tables.rules, index);
        }
        for table in tables.by_namespace.values_mut() {
            table.finish(&tables.rules);
        }
        tables.everywhere.finish(&tables.rules);
        tables
    }
}

/// The rules that decide for (client namespace, host): the first scope with any match wins.
pub(crate) fn deciding_rules<'a>(
    tables: &'a RuleTables,
    root_namespace: &str,
    client_namespace: &str,
    host: &str,
) -> Vec<&'a Rule> {
    let service_namespace = service_namespace_of(host);
    let scope = |namespace: &str, exported_only: bool| -> Vec<&'a Rule> {
        tables
            .by_namespace
            .get(namespace)
            .map(|table| {
                table.lookup(&tables.rules, host, |rule| {
                    !rule.has_workload_selector
                        && (!exported_only || rule.visible_to(client_namespace))
                })
            })
            .unwrap_or_default()
    };
    let mut found = scope(client_namespace, false);
    if found.is_empty()
        && let Some(service_namespace) = service_namespace
        && service_namespace != client_namespace
    {
        found = scope(service_namespace, true);
    }
    if found.is_empty() && root_namespace != client_namespace {
        found = scope(root_namespace, true);
    }
    if found.is_empty() {
        found = tables.everywhere.lookup(&tables.rules, host, |rule| {
            let ns = rule.meta.namespace.as_str();
            !rule.has_workload_selector
                && ns != client_namespace
                && Some(ns) != service_namespace
                && ns != root_namespace
                && rule.visible_to(client_namespace)
        });
        // Across namespaces the most specific host wins; among equals, the oldest.
        found.sort_by(|a, b| a.meta.age_order(&b.meta));
    }
    found
}

/// `name.ns.svc.cluster.local` → `ns`.
pub(crate) fn service_namespace_of(host: &str) -> Option<&str> {
    let rest = host.strip_suffix(CLUSTER_DOMAIN)?.strip_suffix(".svc.")?;
    let (_, namespace) = rest.split_once('.')?;
    (!namespace.is_empty() && !namespace.contains('.')).then_some(namespace)
}

/// TLS of a traffic policy for a port: a matching port-level setting replaces the top-level `tls`
/// (`Some(None)` = the setting has no `tls`); `None` when the policy has no word on it.
fn tls_of(traffic: Option<&Traffic>, port: u16) -> Option<Option<&Tls>> {
    let traffic = traffic?;
    if let Some((_, tls)) = traffic.port_level.iter().find(|(p, _)| *p == port) {
        return Some(tls.as_ref());
    }
    traffic.tls.as_ref().map(Some)
}

impl PolicyIndex {
    /// The TLS a sidecar client in `client_namespace` originates to `host_fqdn:service_port`.
    pub fn client_tls(
        &self,
        client_namespace: &str,
        host_fqdn: &str,
        service_port: u16,
    ) -> ClientDecision {
        self.client_tls_for_subset(client_namespace, host_fqdn, service_port, None)
    }

    /// Like [`PolicyIndex::client_tls`], for traffic routed to a DestinationRule subset (docs/SEMANTICS.md#destinationrule-ports-subsets: subset
    /// port-level → subset top-level → rule port-level → rule top-level).
    pub fn client_tls_for_subset(
        &self,
        client_namespace: &str,
        host_fqdn: &str,
        service_port: u16,
        subset: Option<&str>,
    ) -> ClientDecision {
        let rules = deciding_rules(
            &self.index.rules,
            &self.mesh.root_namespace,
            client_namespace,
            host_fqdn,
        );
        // Same-host rules in one namespace merge: the oldest rule with a trafficPolicy provides it.
        let Some(decider) = rules
            .iter()
            .find(|r| r.traffic.is_some())
            .or_else(|| rules.first())
        else {
            return ClientDecision {
                mode: ClientTlsMode::Unset,
                decided_by: None,
                sni: None,
                subject_alt_names: Vec::new(),
            };
        };
        let subset_traffic = subset.and_then(|name| {
            rules
                .iter()
                .flat_map(|r| &r.subsets)
                .find(|s| s.name == name)
                .and_then(|s| s.traffic.as_ref())
        });
        let tls = tls_of(subset_traffic, service_port)
            .filter(Option::is_some)
            .or_else(|| tls_of(decider.traffic.as_ref(), service_port))
            .flatten();
        let mode = tls.map_or(ClientTlsMode::Unset, |t| t.mode);
        let user_sni = tls.and_then(|t| t.sni.clone());
        let user_sans = tls.map(|t| t.subject_alt_names.clone()).unwrap_or_default();
        let (sni, subject_alt_names) = if mode == ClientTlsMode::IstioMutual {
            (
                user_sni.or_else(|| {
                    Some(format!(
                        "outbound_.{service_port}_.{}_.{host_fqdn}",
                        subset.unwrap_or("")
                    ))
                }),
                if user_sans.is_empty() {
                    self.service_identities(host_fqdn)
                } else {
                    user_sans
                },
            )
        } else {
            (user_sni, user_sans)
        };
        ClientDecision {
            mode,
            decided_by: Some(decider.meta.to_ref()),
            sni,
            subject_alt_names,
        }
    }

    /// The subset names the deciding rules define for a host (for `tls-check`'s `host|subset` rows).
    pub(crate) fn subsets_for(&self, client_namespace: &str, host_fqdn: &str) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for rule in deciding_rules(
            &self.index.rules,
            &self.mesh.root_namespace,
            client_namespace,
            host_fqdn,
        ) {
            for subset in &rule.subsets {
                if !names.contains(&subset.name) {
                    names.push(subset.name.clone());
                }
            }
        }
        names
    }

    /// SPIFFE IDs of the service accounts behind a cluster service (secure naming).
    fn service_identities(&self, host_fqdn: &str) -> Vec<String> {
        let Some(namespace) = service_namespace_of(host_fqdn) else {
            return Vec::new();
        };
        let Some(service) = self
            .index
            .services
            .get(namespace)
            .into_iter()
            .flatten()
            .find(|s| s.fqdn() == host_fqdn)
        else {
            return Vec::new();
        };
        let mut ids: Vec<String> = self
            .index
            .workloads
            .get(namespace)
            .into_iter()
            .flatten()
            .filter(|w| !service.selector.is_empty() && subset_of(&service.selector, &w.labels))
            .map(|w| {
                format!(
                    "spiffe://{}/ns/{namespace}/sa/{}",
                    self.mesh.trust_domain, w.service_account
                )
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}
