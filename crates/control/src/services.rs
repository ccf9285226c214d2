//! kube-proxy's and cluster DNS's job on the local runtime: every Service gets a virtual IP (kept in
//! `spec.clusterIP`), its ports are forwarded by NAT in the node namespace to the running pods it selects,
//! and its names resolve in every pod.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ironmesh_api::Object;
use ironmesh_runtime::{Ipam, Protocol, ServiceName, ServiceNat};
use serde_json::{Value, json};

use crate::objects::{PodView, ServiceView, selector_matches};

/// The node-namespace rules and names for a set of objects.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub nat: Vec<ServiceNat>,
    pub names: Vec<ServiceName>,
}

/// Services in `objects` that still need a virtual IP, with the address each should get. Addresses already
/// in use are kept; new ones come from 198.19.0.0/16.
pub fn allocate_vips(objects: &[Object]) -> Vec<(Object, Ipv4Addr)> {
    let mut ipam = Ipam::services();
    let services: Vec<(&Object, ServiceView)> = objects
        .iter()
        .filter(|o| o.kind == "Service")
        .map(|o| (o, ServiceView::of(o)))
        .collect();
    for (_, service) in &services {
        if let Some(ip) = service.cluster_ip {
            let _ = ipam.reserve(ip, &format!("{}/{}", service.namespace, service.name));
        }
    }
    services
        .into_iter()
        .filter(|(object, service)| service.cluster_ip.is_none() && !is_headless(object))
        .filter_map(|(object, service)| {
            let ip = ipam
                .allocate(&format!("{}/{}", service.namespace, service.name))
                .ok()?;
            let mut object = object.clone();
            if let Some(spec) = object.body.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("clusterIP".into(), json!(ip.to_string()));
                spec.insert("clusterIPs".into(), json!([ip.to_string()]));
            }
            Some((object, ip))
        })
        .collect()
}

fn is_headless(object: &Object) -> bool {
    object.spec().get("clusterIP").and_then(Value::as_str) == Some("None")
}

/// NAT rules and names for every Service with a virtual IP.
pub fn desired(objects: &[Object]) -> Desired {
    let pods: Vec<PodView> = objects
        .iter()
        .filter(|o| o.kind == "Pod")
        .map(PodView::of)
        .filter(|p| p.pod_ip.is_some() && p.phase.as_deref() == Some("Running"))
        .collect();
    let mut desired = Desired::default();
    let mut seen = BTreeSet::new();
    for service in objects
        .iter()
        .filter(|o| o.kind == "Service")
        .map(ServiceView::of)
    {
        let Some(vip) = service.cluster_ip else {
            continue;
        };
        if !seen.insert(vip) {
            continue;
        }
        desired.names.push(ServiceName {
            namespace: service.namespace.clone(),
            name: service.name.clone(),
            vip,
        });
        for port in &service.ports {
            let endpoints = pods
                .iter()
                .filter(|pod| {
                    pod.namespace == service.namespace
                        && selector_matches(&service.selector, &pod.labels)
                })
                .filter_map(|pod| Some((pod.pod_ip?, pod.resolve_target_port(&port.target_port)?)))
                .collect();
            desired.nat.push(ServiceNat {
                vip,
                port: port.port,
                protocol: Protocol::Tcp,
                endpoints,
            });
        }
    }
    desired
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(yaml: &str) -> Vec<Object> {
        ironmesh_api::load_documents("t.yaml", yaml)
            .unwrap()
            .into_iter()
            .map(|l| l.object)
            .collect()
    }

    const HTTPBIN: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: httpbin, namespace: foo}\nspec:\n  selector: {app: httpbin}\n  ports: [{name: http, port: 8000}]\n";

    fn pod(name: &str, ip: &str, phase: &str) -> Object {
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: foo, labels: {{app: httpbin}}}}\nspec:\n  containers: [{{name: httpbin, image: citizenstig/httpbin}}]\n"
        );
        let mut pod = objects(&yaml).remove(0);
        pod.body
            .insert("status".into(), json!({"podIP": ip, "phase": phase}));
        pod
    }

    #[test]
    fn services_get_distinct_addresses_from_the_service_range() {
        let all = objects(&format!(
            "{HTTPBIN}---\n{}",
            HTTPBIN.replace("httpbin, namespace: foo", "httpbin, namespace: bar")
        ));
        let vips: Vec<Ipv4Addr> = allocate_vips(&all).into_iter().map(|(_, ip)| ip).collect();
        assert_eq!(vips.len(), 2);
        assert_ne!(vips[0], vips[1]);
        assert!(vips.iter().all(|ip| ip.octets()[..2] == [198, 19]));
    }

    #[test]
    fn an_assigned_address_is_kept_and_not_reused() {
        let mut all = objects(HTTPBIN);
        let (first, ip) = allocate_vips(&all).remove(0);
        all[0] = first;
        assert!(allocate_vips(&all).is_empty());
        all.extend(objects(&HTTPBIN.replace(
            "name: httpbin, namespace: foo",
            "name: other, namespace: foo",
        )));
        let (_, other) = allocate_vips(&all).remove(0);
        assert_ne!(other, ip);
    }

    #[test]
    fn only_running_selected_pods_are_endpoints() {
        let mut all = objects(HTTPBIN);
        all[0] = allocate_vips(&all).remove(0).0;
        all.push(pod("a", "198.18.0.5", "Running"));
        all.push(pod("b", "198.18.0.6", "Pending"));
        let desired = desired(&all);
        assert_eq!(desired.nat.len(), 1);
        assert_eq!(desired.nat[0].port, 8000);
        assert_eq!(
            desired.nat[0].endpoints,
            vec![("198.18.0.5".parse().unwrap(), 8000)]
        );
        assert_eq!(desired.names[0].name, "httpbin");
    }
}
