//! Declared sizes for the big shared maps, chosen at each full sync (pure).
//!
//! Without a declared size the kernel starts a set's hash table small and keeps re-hashing it while a
//! full sync inserts 10⁵ elements in one commit (`rhashtable_insert_slow` was ~10 % of a 10,000 × 10
//! load in `perf`). A declared `size` lets it allocate the table once. But `size` is also a hard cap
//! (inserting beyond it fails with ENFILE), so:
//!
//! * only maps expected to hold at least [`SIZE_THRESHOLD`] elements get one (small clusters keep the
//!   growable default and pay no fixed memory),
//! * the size is twice the estimate, rounded up to a power of two, leaving room for growth, and
//! * [`crate::compute::assembly::Assembly::over_capacity`] tells the proxier when a partial sync would outgrow a
//!   declared size, so it runs a full sync instead (which declares a bigger one).

use std::collections::HashMap;

use crate::compute::names::{BackendList, CLUSTER_IPS, SERVICE_IPS};
use crate::types::{Family, NodeConfig, ProxyState};

/// Maps expected to stay below this many elements keep the kernel's growable default.
pub const SIZE_THRESHOLD: usize = 8_192;

/// Element estimates per (family, set name).
#[derive(Clone, Debug, Default)]
pub struct Sizing {
    estimates: HashMap<(Family, &'static str), usize>,
}

impl Sizing {
    /// Upper-bound estimates for `state`: every endpoint of every slice counted for each port of its
    /// Service and each address the port is reachable on.
    pub fn estimate(state: &ProxyState, node: &NodeConfig) -> Sizing {
        let mut estimates: HashMap<(Family, &'static str), usize> = HashMap::new();
        for svc in state.services.values() {
            for &fam in &node.families {
                if !svc.cluster_ips.iter().any(|ip| Family::of(ip) == fam) {
                    continue;
                }
                *estimates.entry((fam, CLUSTER_IPS)).or_default() += 1;
                let vips = 1 + svc
                    .external_ips
                    .iter()
                    .chain(svc.load_balancer_ips.iter())
                    .filter(|ip| Family::of(ip) == fam)
                    .count();
                let (mut all, mut local) = (0usize, 0usize);
                for slice in state.slices_for(&svc.key).filter(|s| s.family == fam) {
                    all += slice.endpoints.len();
                    local += slice
                        .endpoints
                        .iter()
                        .filter(|e| e.node_name.as_deref() == Some(node.node_name.as_str()))
                        .count();
                }
                for port in &svc.ports {
                    *estimates.entry((fam, SERVICE_IPS)).or_default() += vips;
                    let p = port.protocol;
                    *estimates
                        .entry((fam, BackendList::Cluster.map(p)))
                        .or_default() += all * vips;
                    if svc.external_policy_local || svc.internal_policy_local {
                        *estimates
                            .entry((fam, BackendList::Local.map(p)))
                            .or_default() += local * vips;
                    }
                    if port.node_port.is_some() {
                        *estimates
                            .entry((fam, BackendList::NodePort.map(p)))
                            .or_default() += all;
                        if svc.external_policy_local {
                            *estimates
                                .entry((fam, BackendList::NodePortLocal.map(p)))
                                .or_default() += local;
                        }
                    }
                }
            }
        }
        Sizing { estimates }
    }

    /// Sum of the estimates of a family (a capacity hint for de-duplication tables).
    pub fn total(&self, fam: Family) -> usize {
        self.estimates
            .iter()
            .filter(|((f, _), _)| *f == fam)
            .map(|(_, n)| *n)
            .sum()
    }

    /// The size to declare for `set` in `fam`, if any.
    pub fn size_for(&self, fam: Family, set: &str) -> Option<u32> {
        let estimate = *self.estimates.get(&(fam, set))?;
        declared_size(estimate)
    }
}

/// The declared size for an estimate: none below [`SIZE_THRESHOLD`], else twice the estimate rounded
/// up to a power of two.
pub fn declared_size(estimate: usize) -> Option<u32> {
    if estimate < SIZE_THRESHOLD {
        return None;
    }
    let size = estimate.checked_mul(2)?.checked_next_power_of_two()?;
    u32::try_from(size).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::*;

    fn state(services: usize, endpoints: usize) -> ProxyState {
        let mut st = ProxyState::default();
        for i in 0..services {
            let name = format!("s{i}");
            st.upsert_service(ServiceInfo::cluster_ip(
                ServiceKey::new("ns", &name),
                vec![format!("10.96.{}.{}", i / 250, i % 250 + 1)
                    .parse()
                    .unwrap()],
                vec![ServicePort {
                    name: "p".into(),
                    protocol: Protocol::Tcp,
                    port: 80,
                    node_port: Some(30000),
                }],
            ));
            st.upsert_slice(EndpointSliceInfo {
                namespace: "ns".into(),
                name: format!("{name}-x"),
                service_name: name,
                family: Family::Ipv4,
                ports: vec![],
                endpoints: (0..endpoints)
                    .map(|j| EndpointInfo {
                        address: format!("10.244.0.{}", j + 1).parse().unwrap(),
                        ready: true,
                        serving: true,
                        terminating: false,
                        node_name: Some("n".into()),
                        zone_hints: vec![],
                        node_hints: vec![],
                    })
                    .collect(),
                trigger_time: None,
            });
        }
        st
    }

    #[test]
    fn small_clusters_declare_nothing_big_ones_get_headroom() {
        let node = NodeConfig {
            node_name: "n".into(),
            families: vec![Family::Ipv4],
            ..Default::default()
        };
        let small = Sizing::estimate(&state(100, 10), &node);
        assert_eq!(small.size_for(Family::Ipv4, "backends-tcp"), None);
        let big = Sizing::estimate(&state(2000, 10), &node);
        // 20,000 backends → 2× rounded up to a power of two.
        assert_eq!(big.size_for(Family::Ipv4, "backends-tcp"), Some(65_536));
        assert_eq!(
            big.size_for(Family::Ipv4, "nodeport-backends-tcp"),
            Some(65_536)
        );
        assert_eq!(big.size_for(Family::Ipv4, CLUSTER_IPS), None, "2,000 IPs");
        assert_eq!(big.size_for(Family::Ipv4, "backends-udp"), None);
        assert_eq!(big.size_for(Family::Ipv6, "backends-tcp"), None);
        assert_eq!(declared_size(SIZE_THRESHOLD), Some(16_384));
        assert_eq!(declared_size(usize::MAX), None);
    }
}
