//! Server side: the mTLS mode a workload enforces on a container port (docs/SEMANTICS.md#legacy-precedence, #legacy-and-peerauthentication,
//! #peerauthentication-scope, #peerauthentication-mode): PeerAuthentication (workload > namespace > root namespace, UNSET inherits, port-level
//! keys are container ports) when any applies, else the legacy Policy/MeshPolicy chain.

use super::resources::{
    LegacyPolicy, PeerAuthn, PeerMode, PortSelector, Service, Target, TargetPort, subset_of,
};
use super::{PolicyIndex, ServerDecision, ServerMode, Workload};

impl PolicyIndex {
    /// The mode `workload` enforces on `container_port`, and the resource that decided it.
    pub fn server_mode(&self, workload: &Workload, container_port: u16) -> ServerDecision {
        if let Some(decision) = self.peer_authentication_mode(workload, container_port) {
            return decision;
        }
        self.legacy_mode(workload, container_port)
    }

    /// docs/SEMANTICS.md#peerauthentication-mode `ComposePeerAuthentication`; `None` when no PeerAuthentication applies (docs/SEMANTICS.md#legacy-and-peerauthentication: then and only
    /// then the legacy policies count).
    fn peer_authentication_mode(&self, workload: &Workload, port: u16) -> Option<ServerDecision> {
        let root = &self.mesh.root_namespace;
        let no_selector = |pa: &&PeerAuthn| pa.selector.is_empty();
        let in_namespace = |ns: &str| {
            self.index
                .peer_authns
                .get(ns)
                .map(Vec::as_slice)
                .unwrap_or(&[])
        };
        // Lists are sorted oldest first, so `find` implements "the oldest wins within a level".
        let mesh = in_namespace(root).iter().find(no_selector);
        let (namespace, workload_level) = if &workload.namespace == root {
            // Root-namespace policies with a selector are ignored (docs/SEMANTICS.md#peerauthentication-scope), and the root namespace's own
            // un-selected policy is the mesh-wide one.
            (None, None)
        } else {
            let policies = in_namespace(&workload.namespace);
            (
                policies.iter().find(no_selector),
                policies.iter().find(|pa| {
                    !pa.selector.is_empty() && subset_of(&pa.selector, &workload.labels)
                }),
            )
        };
        if mesh.is_none() && namespace.is_none() && workload_level.is_none() {
            return None;
        }
        // Broadest first: the first applying policy is the decider when every level is UNSET.
        let levels = [mesh, namespace, workload_level];
        let mut decision = ServerDecision {
            mode: ServerMode::Permissive,
            decided_by: levels.iter().flatten().next().map(|pa| pa.meta.to_ref()),
        };
        for pa in levels.iter().flatten() {
            if let PeerMode::Set(mode) = pa.mode {
                decision = ServerDecision {
                    mode,
                    decided_by: Some(pa.meta.to_ref()),
                };
            }
        }
        if let Some(pa) = workload_level
            && let Some(PeerMode::Set(mode)) = pa.port_modes.get(&port)
        {
            decision = ServerDecision {
                mode: *mode,
                decided_by: Some(pa.meta.to_ref()),
            };
        }
        Some(decision)
    }

    /// docs/SEMANTICS.md#legacy-precedence: service-specific Policy (oldest port match, else oldest portless) > namespace Policy >
    /// MeshPolicy `default` > DISABLE.
    fn legacy_mode(&self, workload: &Workload, container_port: u16) -> ServerDecision {
        let services = self
            .index
            .services
            .get(&workload.namespace)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        for service in services.iter().filter(|s| s.selects(&workload.labels)) {
            for service_port in &service.ports {
                if !self.targets_container_port(
                    service,
                    &service_port.target,
                    workload,
                    container_port,
                ) {
                    continue;
                }
                if let Some(policy) =
                    self.service_policy(service, service_port.port, &service_port.name)
                {
                    return decided(policy);
                }
            }
        }
        if let Some(policy) = self.index.namespace_policy.get(&workload.namespace) {
            return decided(policy);
        }
        if let Some(policy) = &self.index.mesh_policy {
            return decided(policy);
        }
        ServerDecision {
            mode: ServerMode::Disable,
            decided_by: None,
        }
    }

    /// Whether a Service port's targetPort lands on `container_port` of this workload (named target
    /// ports are looked up in the containers of the workload's templates).
    fn targets_container_port(
        &self,
        service: &Service,
        target: &TargetPort,
        workload: &Workload,
        container_port: u16,
    ) -> bool {
        match target {
            TargetPort::Number(n) => *n == container_port,
            TargetPort::Name(name) => self
                .index
                .workloads
                .get(&service.meta.namespace)
                .into_iter()
                .flatten()
                .filter(|w| {
                    subset_of(&w.labels, &workload.labels) || subset_of(&workload.labels, &w.labels)
                })
                .flat_map(|w| &w.container_ports)
                .any(|(port_name, port)| port_name == name && *port == container_port),
        }
    }

    /// The service-specific legacy policy for one service port (docs/SEMANTICS.md#legacy-precedence step 1).
    pub(crate) fn service_policy(
        &self,
        service: &Service,
        port: u16,
        port_name: &str,
    ) -> Option<&LegacyPolicy> {
        let candidates = self
            .index
            .targeted
            .get(&(service.meta.namespace.clone(), service.meta.name.clone()))?;
        let service_name = &service.meta.name;
        let has_target = |policy: &LegacyPolicy, wanted: &dyn Fn(&Target) -> bool| {
            policy
                .targets
                .iter()
                .any(|t| &t.service == service_name && wanted(t))
        };
        let port_matches = |selector: &PortSelector| match selector {
            PortSelector::Number(n) => *n == port,
            PortSelector::Name(name) => !port_name.is_empty() && name == port_name,
        };
        candidates
            .iter()
            .find(|policy| has_target(policy, &|t| t.ports.iter().any(port_matches)))
            .or_else(|| {
                candidates
                    .iter()
                    .find(|policy| has_target(policy, &|t| t.ports.is_empty()))
            })
            .map(|policy| policy.as_ref())
    }
}

fn decided(policy: &LegacyPolicy) -> ServerDecision {
    ServerDecision {
        mode: policy.mode,
        decided_by: Some(policy.meta.to_ref()),
    }
}
