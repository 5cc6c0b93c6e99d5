//! Removal of stale UDP conntrack entries: UDP has no connection to end, so a flow pinned to an
//! endpoint that went away keeps being sent there until its entry is deleted. svcnet-proxy
//! reconciles the whole UDP table against the current endpoints at start-up, after every change
//! of a UDP Service's endpoints, and on every full sync.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::conntrack_socket::Conntrack;
use super::ctnetlink::{Flow, IPPROTO_UDP};
use crate::compute::endpoints::endpoints_for_port;
use crate::error::Result;
use crate::types::{Family, NodeConfig, Protocol, ProxyState};

/// Where UDP traffic for a Service port arrives.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UdpTarget {
    /// A service IP (ClusterIP, external IP, LB IP) and port.
    Vip(IpAddr, u16),
    /// A NodePort (any node address) in a family.
    NodePort(Family, u16),
}

/// Serving endpoint IPs of every UDP target (traffic policy and topology deliberately ignored).
pub type UdpEndpoints = BTreeMap<UdpTarget, BTreeSet<IpAddr>>;

/// Computes [`UdpEndpoints`] for a state.
pub fn udp_endpoints(state: &ProxyState, node: &NodeConfig) -> UdpEndpoints {
    let mut out = UdpEndpoints::new();
    for svc in state.services.values() {
        for port in svc.ports.iter().filter(|p| p.protocol == Protocol::Udp) {
            for &fam in &node.families {
                let Some(cip) = svc.cluster_ips.iter().find(|ip| Family::of(ip) == fam) else {
                    continue;
                };
                let eps: BTreeSet<IpAddr> =
                    endpoints_for_port(state.slices_for(&svc.key), port, fam, &node.node_name)
                        .into_iter()
                        .filter(|e| e.serving)
                        .map(|e| e.ip)
                        .collect();
                let vips = std::iter::once(cip)
                    .chain(svc.external_ips.iter())
                    .chain(svc.load_balancer_ips.iter())
                    .filter(|ip| Family::of(ip) == fam);
                for vip in vips {
                    out.insert(UdpTarget::Vip(*vip, port.port), eps.clone());
                }
                if let Some(np) = port.node_port {
                    out.insert(UdpTarget::NodePort(fam, np), eps.clone());
                }
            }
        }
    }
    out
}

/// The UDP flows to delete: those sent to a Service target (a ClusterIP, external or
/// LoadBalancer IP and port; or a NodePort on one of `node_addresses`) that go where the Service
/// no longer sends: answered by an endpoint that is not serving any more, or never translated at
/// all (created while the Service had no endpoint, they would stay black-holed) while it now has
/// some. Flows to anything else are never touched. Like kube-proxy's conntrack reconciler, this
/// looks at the whole table, so flows left behind while svcnet-proxy was not running are found
/// too.
pub fn stale_flows(
    flows: &[Flow],
    targets: &UdpEndpoints,
    node_addresses: &BTreeSet<IpAddr>,
) -> Vec<Flow> {
    let mut out = Vec::new();
    for f in flows.iter().filter(|f| f.proto == IPPROTO_UDP) {
        let vip = UdpTarget::Vip(f.orig.dst, f.orig.dport);
        let eps = match targets.get(&vip) {
            Some(eps) => eps,
            None if node_addresses.contains(&f.orig.dst) => {
                match targets.get(&UdpTarget::NodePort(Family::of(&f.orig.dst), f.orig.dport)) {
                    Some(eps) => eps,
                    None => continue,
                }
            }
            None => continue,
        };
        let translated = f.reply.src != f.orig.dst;
        let stale = if translated {
            !eps.contains(&f.reply.src)
        } else {
            !eps.is_empty()
        };
        if stale {
            out.push(*f);
        }
    }
    out.sort();
    out
}

/// What one reconciliation of a family did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconciled {
    /// The family.
    pub family: Family,
    /// UDP entries the dump returned.
    pub seen: usize,
    /// Entries deleted.
    pub deleted: usize,
    /// How long the dump, the comparison and the deletes took.
    pub took: std::time::Duration,
}

/// Dumps the UDP entries of each of `families`, and deletes the [`stale_flows`].
pub fn reconcile(
    ct: &mut Conntrack,
    families: &[Family],
    targets: &UdpEndpoints,
    node_addresses: &BTreeSet<IpAddr>,
) -> Result<Vec<Reconciled>> {
    let mut out = Vec::new();
    for &family in families {
        let started = std::time::Instant::now();
        let flows = ct.dump(family, &[IPPROTO_UDP])?;
        let stale = stale_flows(&flows, targets, node_addresses);
        let deleted = if stale.is_empty() {
            0
        } else {
            ct.delete(&stale)?
        };
        out.push(Reconciled {
            family,
            seen: flows.len(),
            deleted,
            took: started.elapsed(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::ctnetlink::Tuple;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn udp(orig_dst: &str, dport: u16, reply_src: &str) -> Flow {
        Flow {
            proto: IPPROTO_UDP,
            orig: Tuple {
                src: ip("192.168.0.50"),
                dst: ip(orig_dst),
                sport: 40000,
                dport,
            },
            reply: Tuple {
                src: ip(reply_src),
                dst: ip("192.168.0.50"),
                sport: dport,
                dport: 40000,
            },
            zone: 0,
        }
    }

    #[test]
    fn stale_flows_are_those_going_where_the_service_no_longer_sends() {
        let vip = UdpTarget::Vip(ip("10.96.0.10"), 53);
        let empty = UdpTarget::Vip(ip("10.96.0.11"), 53);
        let np = UdpTarget::NodePort(Family::Ipv4, 30053);
        let targets: UdpEndpoints = [
            (vip, [ip("10.244.1.1")].into()),
            (empty, BTreeSet::new()),
            (np, [ip("10.244.1.1")].into()),
        ]
        .into();
        let node: BTreeSet<IpAddr> = [ip("192.168.0.10")].into();
        let live = udp("10.96.0.10", 53, "10.244.1.1");
        let gone = udp("10.96.0.10", 53, "10.244.9.9");
        let blackholed = udp("10.96.0.10", 53, "10.96.0.10");
        let to_empty_old = udp("10.96.0.11", 53, "10.244.9.9");
        let to_empty_untranslated = udp("10.96.0.11", 53, "10.96.0.11");
        let np_gone = udp("192.168.0.10", 30053, "10.244.9.9");
        let np_elsewhere = udp("192.168.0.99", 30053, "10.244.9.9");
        let other_port = udp("10.96.0.10", 54, "10.244.9.9");
        let mut tcp = gone;
        tcp.proto = 6;
        let flows = [
            live,
            gone,
            blackholed,
            to_empty_old,
            to_empty_untranslated,
            np_gone,
            np_elsewhere,
            other_port,
            tcp,
        ];
        let mut want = vec![gone, blackholed, to_empty_old, np_gone];
        want.sort();
        assert_eq!(stale_flows(&flows, &targets, &node), want);
        assert!(stale_flows(&[live], &targets, &node).is_empty());
    }
}
