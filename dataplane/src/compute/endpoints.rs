//! Per-ServicePort endpoint lists: merging slices, de-duplication, terminating fallback, traffic
//! policies and topology hints, following upstream `pkg/proxy/topology.go` (`CategorizeEndpoints`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::types::{EndpointSliceInfo, Family, NodeConfig, ServiceInfo, ServicePort};

/// One usable backend of a Service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// Endpoint IP.
    pub ip: IpAddr,
    /// Target port.
    pub port: u16,
    /// Ready condition.
    pub ready: bool,
    /// Serving condition.
    pub serving: bool,
    /// Terminating condition.
    pub terminating: bool,
    /// Whether the endpoint is on this node.
    pub local: bool,
    /// Whether nodeName was unset (the endpoint may be on this node).
    pub node_unknown: bool,
    /// Zone hints.
    pub zone_hints: Vec<String>,
    /// Node hints.
    pub node_hints: Vec<String>,
}

/// Collects the endpoints of one Service port in `fam` from its slices, de-duplicated by ip:port
/// (a local copy wins over a remote one, as upstream). Sorted by (ip, port).
pub fn endpoints_for_port<'a>(
    slices: impl Iterator<Item = &'a EndpointSliceInfo>,
    port: &ServicePort,
    fam: Family,
    node_name: &str,
) -> Vec<Endpoint> {
    let mut set: BTreeMap<(IpAddr, u16), Endpoint> = BTreeMap::new();
    for slice in slices {
        if slice.family != fam {
            continue;
        }
        for sp in &slice.ports {
            if sp.name != port.name || sp.protocol != port.protocol {
                continue;
            }
            for ep in &slice.endpoints {
                if Family::of(&ep.address) != fam {
                    continue;
                }
                let local = ep.node_name.as_deref() == Some(node_name);
                let e = Endpoint {
                    ip: ep.address,
                    port: sp.port,
                    ready: ep.ready,
                    serving: ep.serving,
                    terminating: ep.terminating,
                    local,
                    node_unknown: ep.node_name.is_none(),
                    zone_hints: ep.zone_hints.clone(),
                    node_hints: ep.node_hints.clone(),
                };
                let key = (ep.address, sp.port);
                if !set.contains_key(&key) || local {
                    set.insert(key, e);
                }
            }
        }
    }
    set.into_values().collect()
}

/// The lists a Service port's traffic is balanced over.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Categorized {
    /// Endpoints for Cluster traffic policy (after topology and terminating fallback).
    pub cluster: Vec<Endpoint>,
    /// Endpoints for Local traffic policy.
    pub local: Vec<Endpoint>,
    /// Whether any usable (ready, or serving+terminating) endpoint exists anywhere.
    pub has_any: bool,
}

/// Whether the cluster list is needed: ITP=Cluster, or the Service is externally accessible.
pub fn uses_cluster_endpoints(svc: &ServiceInfo, ext: bool) -> bool {
    !svc.internal_policy_local || ext
}

/// Whether the local list is needed: ITP=Local, or ETP=Local on an externally accessible Service.
pub fn uses_local_endpoints(svc: &ServiceInfo, ext: bool) -> bool {
    svc.internal_policy_local || (ext && svc.external_policy_local)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Topology {
    None,
    SameNode,
    SameZone,
}

fn topology_mode(endpoints: &[Endpoint], node: &NodeConfig) -> Topology {
    let ready: Vec<&Endpoint> = endpoints.iter().filter(|e| e.ready).collect();
    if ready.is_empty() {
        return Topology::None;
    }
    if ready.iter().all(|e| !e.node_hints.is_empty())
        && ready.iter().any(|e| e.node_hints.contains(&node.node_name))
    {
        return Topology::SameNode;
    }
    if let Some(zone) = node.zone() {
        if ready.iter().all(|e| !e.zone_hints.is_empty())
            && ready.iter().any(|e| e.zone_hints.iter().any(|z| z == zone))
        {
            return Topology::SameZone;
        }
    }
    Topology::None
}

fn available(ep: &Endpoint, mode: Topology, node: &NodeConfig) -> bool {
    match mode {
        Topology::None => true,
        Topology::SameNode => ep.node_hints.contains(&node.node_name),
        Topology::SameZone => match node.zone() {
            Some(z) => ep.zone_hints.iter().any(|h| h == z),
            None => true,
        },
    }
}

/// Sorts endpoints into the cluster and local lists (upstream `CategorizeEndpoints`).
pub fn categorize(
    endpoints: &[Endpoint],
    svc: &ServiceInfo,
    ext: bool,
    node: &NodeConfig,
) -> Categorized {
    let mut out = Categorized::default();
    if uses_cluster_endpoints(svc, ext) {
        let mode = topology_mode(endpoints, node);
        out.cluster = endpoints
            .iter()
            .filter(|e| e.ready && available(e, mode, node))
            .cloned()
            .collect();
        if out.cluster.is_empty() {
            out.cluster = endpoints
                .iter()
                .filter(|e| e.serving && e.terminating)
                .cloned()
                .collect();
        }
        out.has_any = !out.cluster.is_empty();
    }
    if !uses_local_endpoints(svc, ext) {
        return out;
    }
    let mut local_ready = false;
    let mut local_serving_terminating = false;
    for e in endpoints {
        if e.ready {
            out.has_any = true;
            local_ready |= e.local;
        } else if e.serving && e.terminating {
            out.has_any = true;
            local_serving_terminating |= e.local;
        }
    }
    if local_ready {
        out.local = endpoints
            .iter()
            .filter(|e| e.local && e.ready)
            .cloned()
            .collect();
    } else if local_serving_terminating {
        out.local = endpoints
            .iter()
            .filter(|e| e.local && e.serving && e.terminating)
            .cloned()
            .collect();
    }
    out
}

/// Number of local **ready** endpoints of a Service in any family (the health-check count).
pub fn local_ready_count(
    svc: &ServiceInfo,
    slices: &[&EndpointSliceInfo],
    node_name: &str,
) -> usize {
    let mut seen = std::collections::BTreeSet::new();
    for slice in slices {
        if slice.service_name != svc.key.name {
            continue;
        }
        for ep in &slice.endpoints {
            if ep.ready && ep.node_name.as_deref() == Some(node_name) {
                seen.insert(ep.address);
            }
        }
    }
    seen.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::*;

    fn ep(ip: &str, ready: bool, serving: bool, terminating: bool, node: &str) -> EndpointInfo {
        EndpointInfo {
            address: ip.parse().unwrap(),
            ready,
            serving,
            terminating,
            node_name: Some(node.to_string()),
            zone_hints: vec![],
            node_hints: vec![],
        }
    }

    fn slice(name: &str, eps: Vec<EndpointInfo>) -> EndpointSliceInfo {
        EndpointSliceInfo {
            namespace: "ns".into(),
            name: name.into(),
            service_name: "svc".into(),
            family: Family::Ipv4,
            ports: vec![EndpointPort {
                name: "p".into(),
                protocol: Protocol::Tcp,
                port: 8080,
            }],
            endpoints: eps,
            trigger_time: None,
        }
    }

    fn svc() -> ServiceInfo {
        ServiceInfo::cluster_ip(
            ServiceKey::new("ns", "svc"),
            vec!["10.0.0.1".parse().unwrap()],
            vec![port()],
        )
    }

    fn port() -> ServicePort {
        ServicePort {
            name: "p".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: None,
        }
    }

    fn node() -> NodeConfig {
        NodeConfig {
            node_name: "n1".into(),
            node_labels: [("topology.kubernetes.io/zone".to_string(), "z1".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn dedupes_across_slices_preferring_local() {
        let a = slice("a", vec![ep("10.1.0.1", true, true, false, "n2")]);
        let b = slice("b", vec![ep("10.1.0.1", true, true, false, "n1")]);
        let eps = endpoints_for_port([&a, &b].into_iter(), &port(), Family::Ipv4, "n1");
        assert_eq!(eps.len(), 1);
        assert!(eps[0].local);
    }

    #[test]
    fn ignores_other_port_names_and_protocols() {
        let mut a = slice("a", vec![ep("10.1.0.1", true, true, false, "n2")]);
        a.ports[0].protocol = Protocol::Udp;
        let eps = endpoints_for_port([&a].into_iter(), &port(), Family::Ipv4, "n1");
        assert!(eps.is_empty());
    }

    #[test]
    fn terminating_fallback() {
        let s = slice(
            "a",
            vec![
                ep("10.1.0.1", false, true, true, "n2"),
                ep("10.1.0.2", false, false, true, "n2"),
            ],
        );
        let eps = endpoints_for_port([&s].into_iter(), &port(), Family::Ipv4, "n1");
        let c = categorize(&eps, &svc(), false, &node());
        assert_eq!(c.cluster.len(), 1);
        assert_eq!(c.cluster[0].ip.to_string(), "10.1.0.1");
        assert!(c.has_any);

        // Ready endpoints win over serving+terminating ones.
        let s = slice(
            "a",
            vec![
                ep("10.1.0.1", false, true, true, "n2"),
                ep("10.1.0.3", true, true, false, "n2"),
            ],
        );
        let eps = endpoints_for_port([&s].into_iter(), &port(), Family::Ipv4, "n1");
        let c = categorize(&eps, &svc(), false, &node());
        assert_eq!(c.cluster.len(), 1);
        assert_eq!(c.cluster[0].ip.to_string(), "10.1.0.3");

        // Only not-serving endpoints: nothing usable.
        let s = slice("a", vec![ep("10.1.0.2", false, false, true, "n2")]);
        let eps = endpoints_for_port([&s].into_iter(), &port(), Family::Ipv4, "n1");
        let c = categorize(&eps, &svc(), false, &node());
        assert!(!c.has_any);
    }

    #[test]
    fn local_policy_lists() {
        let mut sv = svc();
        sv.internal_policy_local = true;
        let s = slice(
            "a",
            vec![
                ep("10.1.0.1", true, true, false, "n1"),
                ep("10.1.0.2", true, true, false, "n2"),
            ],
        );
        let eps = endpoints_for_port([&s].into_iter(), &port(), Family::Ipv4, "n1");
        let c = categorize(&eps, &sv, false, &node());
        assert!(c.cluster.is_empty(), "cluster list not needed");
        assert_eq!(c.local.len(), 1);
        assert!(c.has_any);
    }

    #[test]
    fn zone_hints() {
        let mut a = ep("10.1.0.1", true, true, false, "n2");
        a.zone_hints = vec!["z1".into()];
        let mut b = ep("10.1.0.2", true, true, false, "n3");
        b.zone_hints = vec!["z2".into()];
        let s = slice("a", vec![a.clone(), b.clone()]);
        let eps = endpoints_for_port([&s].into_iter(), &port(), Family::Ipv4, "n1");
        let c = categorize(&eps, &svc(), false, &node());
        assert_eq!(c.cluster.len(), 1);
        assert_eq!(c.cluster[0].ip.to_string(), "10.1.0.1");

        // One endpoint without hints: hints are ignored.
        b.zone_hints.clear();
        let s = slice("a", vec![a, b]);
        let eps = endpoints_for_port([&s].into_iter(), &port(), Family::Ipv4, "n1");
        let c = categorize(&eps, &svc(), false, &node());
        assert_eq!(c.cluster.len(), 2);
    }

    #[test]
    fn node_hints() {
        let mut a = ep("10.1.0.1", true, true, false, "n1");
        a.node_hints = vec!["n1".into()];
        let mut b = ep("10.1.0.2", true, true, false, "n3");
        b.node_hints = vec!["n3".into()];
        let s = slice("a", vec![a, b]);
        let eps = endpoints_for_port([&s].into_iter(), &port(), Family::Ipv4, "n1");
        let c = categorize(&eps, &svc(), false, &node());
        assert_eq!(c.cluster.len(), 1);
        assert_eq!(c.cluster[0].ip.to_string(), "10.1.0.1");
    }
}
