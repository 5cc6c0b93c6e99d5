//! The ordered steps of one Service reconcile, and what to release at its end. Pure: computed
//! from the Service's plans and the allocation index, executed by the applier.
//!
//! The order carries the safety rules (each one is a test below):
//!
//! 1. Every ClusterIP and node port is claimed (a `ServiceIPClaim` / `NodePortClaim` exists
//!    naming the Service) before the Service is written with it, so no value is ever
//!    published that another Service could also be given.
//! 2. A freshly needed value first reuses a claim this Service already holds but no longer
//!    names (the earlier write of it did not land), so a failed write never leaks a value.
//! 3. LoadBalancer IPs are taken after the spec's values and before the status write; a
//!    failure there does not stop the spec write (the applier carries the error to the end).
//! 4. Nothing is released before the Service has been written, and the release step confirms
//!    against the API that the Service still uses exactly what was written: releasing on a
//!    stale view could free a value a newer version of the Service uses.

use std::collections::HashSet;
use std::net::IpAddr;

use crds::{IpPurpose, PortPurpose};

use crate::ipam::plan::cluster_ip::{ClusterIpPlan, IpSlot};
use crate::ipam::plan::node_port::{HealthSlot, NodePortPlan, PortSlot};
use crate::ipam::state::AllocState;
use crate::ipam::svc_view::{family_of, Family};

/// One step of a reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Claim the address the Service already names at `slot` of `spec.clusterIPs`.
    ClaimClusterIp {
        /// Index in `spec.clusterIPs`.
        slot: usize,
        /// The address.
        ip: IpAddr,
    },
    /// Give `slot` a new address of `family`: the first of `reuse` the API confirms is still
    /// this Service's, else a fresh allocation.
    AllocClusterIp {
        /// Index in `spec.clusterIPs`.
        slot: usize,
        /// Its family.
        family: Family,
        /// This Service's claims of that family that its spec does not name.
        reuse: Vec<IpAddr>,
    },
    /// Warn that these addresses the Service uses had lost their claim (now repaired).
    ReportLostIps(Vec<IpAddr>),
    /// `count` new node ports, reusing the listed claims first.
    AllocNodePorts {
        /// How many.
        count: usize,
        /// This Service's NodePort claims its spec does not name.
        reuse: Vec<u16>,
    },
    /// Claim the node port `spec.ports[index]` already names.
    ClaimNodePort {
        /// Index in `spec.ports`.
        index: usize,
        /// The port.
        port: u16,
    },
    /// Claim the named `spec.healthCheckNodePort`.
    ClaimHealthCheckPort(u16),
    /// A new health-check node port, reusing the listed claims first.
    AllocHealthCheckPort {
        /// This Service's health-check claims its spec does not name.
        reuse: Vec<u16>,
    },
    /// Warn that these ports the Service uses had lost their claim (now repaired).
    ReportLostPorts(Vec<u16>),
    /// Claim or keep the LoadBalancer IPs (Services svcnet serves as LoadBalancer).
    LoadBalancerIps,
    /// Write the planned `spec` fields when they differ.
    WriteSpec,
    /// Write `status.loadBalancer.ingress` when it differs.
    WriteLoadBalancerStatus,
    /// Confirm the Service is unchanged, then release what [`releases`] lists.
    ConfirmThenRelease,
}

/// Whether the Service gets LoadBalancer steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LbScope {
    /// svcnet allocates this Service's LoadBalancer IPs.
    pub handles: bool,
    /// Its status lists addresses claimed for it (they must be written out when it stops
    /// being served).
    pub has_ours_in_status: bool,
}

/// The steps for a Service `uid` with these plans, given the index. `reconciled_before`: this
/// process reconciled the Service already, so a named value without any claim was lost (and
/// is reported as repaired) rather than never claimed.
pub fn steps(
    cip: &ClusterIpPlan,
    npp: &NodePortPlan,
    state: &AllocState,
    uid: &str,
    reconciled_before: bool,
    lb: LbScope,
) -> Vec<Step> {
    let mut out = Vec::new();

    // ClusterIPs.
    let kept: HashSet<IpAddr> = cip
        .slots
        .iter()
        .filter_map(|s| match s {
            IpSlot::Keep(ip) => Some(*ip),
            IpSlot::Alloc(_) => None,
        })
        .collect();
    let mut orphans: Vec<IpAddr> = state
        .ips_of(uid)
        .into_iter()
        .filter(|(ip, i)| i.purpose == IpPurpose::ClusterIP && !kept.contains(ip))
        .map(|(ip, _)| ip)
        .collect();
    for (slot, s) in cip.slots.iter().enumerate() {
        out.push(match *s {
            IpSlot::Keep(ip) => Step::ClaimClusterIp { slot, ip },
            IpSlot::Alloc(family) => {
                // Each orphan is offered to the first slot of its family (a Service has at
                // most one slot per family).
                let (reuse, rest) = orphans.into_iter().partition(|ip| family_of(*ip) == family);
                orphans = rest;
                Step::AllocClusterIp {
                    slot,
                    family,
                    reuse,
                }
            }
        });
    }
    if reconciled_before {
        let mut lost: Vec<IpAddr> = cip
            .slots
            .iter()
            .filter_map(|s| match s {
                IpSlot::Keep(ip) if state.ip(*ip).is_none() => Some(*ip),
                _ => None,
            })
            .collect();
        lost.dedup();
        if !lost.is_empty() {
            out.push(Step::ReportLostIps(lost));
        }
    }

    // Node ports.
    let fixed: HashSet<u16> = npp
        .ports
        .iter()
        .filter_map(|s| match s {
            PortSlot::Fixed(p) => Some(*p),
            _ => None,
        })
        .chain(match npp.health_check {
            HealthSlot::Fixed(p) => Some(p),
            _ => None,
        })
        .collect();
    let held_ports = state.ports_of(uid);
    let port_orphans = |purpose: PortPurpose| -> Vec<u16> {
        held_ports
            .iter()
            .filter(|(p, i)| i.purpose == purpose && !fixed.contains(p))
            .map(|(p, _)| *p)
            .collect()
    };
    if npp.fresh > 0 {
        out.push(Step::AllocNodePorts {
            count: npp.fresh,
            reuse: port_orphans(PortPurpose::NodePort),
        });
    }
    for (index, s) in npp.ports.iter().enumerate() {
        if let PortSlot::Fixed(port) = *s {
            out.push(Step::ClaimNodePort { index, port });
        }
    }
    match npp.health_check {
        HealthSlot::Zero => {}
        HealthSlot::Fixed(p) => out.push(Step::ClaimHealthCheckPort(p)),
        HealthSlot::New => out.push(Step::AllocHealthCheckPort {
            reuse: port_orphans(PortPurpose::HealthCheckNodePort),
        }),
    }
    if reconciled_before {
        let mut lost: Vec<u16> = fixed
            .iter()
            .copied()
            .filter(|p| state.port(*p).is_none())
            .collect();
        lost.sort_unstable();
        if !lost.is_empty() {
            out.push(Step::ReportLostPorts(lost));
        }
    }

    // LoadBalancer, the writes, the releases.
    if lb.handles {
        out.push(Step::LoadBalancerIps);
    }
    out.push(Step::WriteSpec);
    if lb.handles || lb.has_ours_in_status {
        out.push(Step::WriteLoadBalancerStatus);
    }
    out.push(Step::ConfirmThenRelease);
    out
}

/// Claims to release: addresses and node ports, each with its purpose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Releases {
    /// ServiceIPClaims.
    pub ips: Vec<(IpAddr, IpPurpose)>,
    /// NodePortClaims.
    pub ports: Vec<(u16, PortPurpose)>,
}

impl Releases {
    /// Nothing to release.
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty() && self.ports.is_empty()
    }
}

/// What to release once the Service has been written: every claim of `uid` not among
/// `keep_ips` / `keep_ports`, except LoadBalancer claims while the LoadBalancer step failed
/// (they may be addresses the user asked for, which a retry must find still held).
pub fn releases(
    state: &AllocState,
    uid: &str,
    keep_ips: &HashSet<IpAddr>,
    keep_ports: &HashSet<u16>,
    lb_failed: bool,
) -> Releases {
    let ips = state
        .ips_of(uid)
        .into_iter()
        .filter(|(ip, i)| {
            let keep_lb = lb_failed && i.purpose == IpPurpose::LoadBalancer;
            !keep_ips.contains(ip) && !keep_lb
        })
        .map(|(ip, i)| (ip, i.purpose))
        .collect();
    let ports = state
        .ports_of(uid)
        .into_iter()
        .filter(|(p, _)| !keep_ports.contains(p))
        .map(|(p, i)| (p, i.purpose))
        .collect();
    Releases { ips, ports }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::config::IpamConfig;
    use crate::ipam::state::{IpClaimInfo, PortClaimInfo};
    use crate::ipam::svc_view::Policy;
    use crds::ServiceRef;

    const UID: &str = "u1";

    fn state() -> AllocState {
        AllocState::new(&IpamConfig {
            service_cidrs: vec![
                "10.0.0.0/24".parse().unwrap(),
                "fd00::/120".parse().unwrap(),
            ],
            node_port_range: "30000-30100".into(),
            ..Default::default()
        })
        .unwrap()
    }

    fn parent(uid: &str) -> ServiceRef {
        ServiceRef {
            namespace: "ns".into(),
            name: uid.into(),
            uid: uid.into(),
        }
    }

    fn hold_ip(st: &mut AllocState, ip: &str, purpose: IpPurpose, uid: &str) -> IpAddr {
        let ip: IpAddr = ip.parse().unwrap();
        st.set_ip(
            ip,
            IpClaimInfo {
                purpose,
                pool: None,
                sharing_key: None,
                parents: vec![parent(uid)],
                created: None,
                ledger: Default::default(),
            },
        );
        ip
    }

    fn hold_port(st: &mut AllocState, port: u16, purpose: PortPurpose, uid: &str) {
        st.set_port(
            port,
            PortClaimInfo {
                purpose,
                parent: parent(uid),
                created: None,
            },
        );
    }

    fn dual_alloc() -> ClusterIpPlan {
        ClusterIpPlan {
            policy: Some(Policy::RequireDualStack),
            families: vec![Family::V4, Family::V6],
            slots: vec![IpSlot::Alloc(Family::V4), IpSlot::Alloc(Family::V6)],
            headless: false,
        }
    }

    fn node_ports(ports: Vec<PortSlot>, fresh: usize, health: HealthSlot) -> NodePortPlan {
        NodePortPlan {
            ports,
            fresh,
            health_check: health,
        }
    }

    const LB: LbScope = LbScope {
        handles: true,
        has_ours_in_status: false,
    };
    const NO_LB: LbScope = LbScope {
        handles: false,
        has_ours_in_status: false,
    };

    fn pos(steps: &[Step], pred: impl Fn(&Step) -> bool) -> Vec<usize> {
        steps
            .iter()
            .enumerate()
            .filter(|(_, s)| pred(s))
            .map(|(i, _)| i)
            .collect()
    }

    fn is_claim(s: &Step) -> bool {
        matches!(
            s,
            Step::ClaimClusterIp { .. }
                | Step::AllocClusterIp { .. }
                | Step::AllocNodePorts { .. }
                | Step::ClaimNodePort { .. }
                | Step::ClaimHealthCheckPort(_)
                | Step::AllocHealthCheckPort { .. }
        )
    }

    #[test]
    fn claims_precede_the_spec_write_which_precedes_status_and_release() {
        let st = state();
        let npp = node_ports(
            vec![PortSlot::Fixed(30005), PortSlot::New(0), PortSlot::Zero],
            1,
            HealthSlot::New,
        );
        let s = steps(&dual_alloc(), &npp, &st, UID, false, LB);
        let claims = pos(&s, is_claim);
        let [spec] = pos(&s, |s| *s == Step::WriteSpec)[..] else {
            panic!("one spec write: {s:?}")
        };
        let [status] = pos(&s, |s| *s == Step::WriteLoadBalancerStatus)[..] else {
            panic!("one status write: {s:?}")
        };
        let [lb] = pos(&s, |s| *s == Step::LoadBalancerIps)[..] else {
            panic!("one LB step: {s:?}")
        };
        assert_eq!(claims.len(), 2 + 1 + 1 + 1, "{s:?}");
        assert!(claims.iter().all(|c| *c < lb && *c < spec));
        assert!(lb < spec && spec < status);
        assert_eq!(s.last(), Some(&Step::ConfirmThenRelease), "release is last");
        assert_eq!(pos(&s, |s| *s == Step::ConfirmThenRelease).len(), 1);
    }

    #[test]
    fn fresh_values_reuse_unnamed_claims_of_their_own_family_and_purpose() {
        let mut st = state();
        let v4 = hold_ip(&mut st, "10.0.0.7", IpPurpose::ClusterIP, UID);
        let v6 = hold_ip(&mut st, "fd00::7", IpPurpose::ClusterIP, UID);
        hold_ip(&mut st, "10.0.0.8", IpPurpose::LoadBalancer, UID);
        hold_ip(&mut st, "10.0.0.9", IpPurpose::ClusterIP, "someone-else");
        hold_port(&mut st, 30007, PortPurpose::NodePort, UID);
        hold_port(&mut st, 30008, PortPurpose::HealthCheckNodePort, UID);
        hold_port(&mut st, 30009, PortPurpose::NodePort, "someone-else");
        let npp = node_ports(vec![PortSlot::New(0)], 1, HealthSlot::New);
        let s = steps(&dual_alloc(), &npp, &st, UID, false, NO_LB);
        assert!(s.contains(&Step::AllocClusterIp {
            slot: 0,
            family: Family::V4,
            reuse: vec![v4]
        }));
        assert!(s.contains(&Step::AllocClusterIp {
            slot: 1,
            family: Family::V6,
            reuse: vec![v6]
        }));
        assert!(s.contains(&Step::AllocNodePorts {
            count: 1,
            reuse: vec![30007]
        }));
        assert!(s.contains(&Step::AllocHealthCheckPort { reuse: vec![30008] }));
    }

    #[test]
    fn named_values_are_claimed_and_lost_ones_reported_only_when_seen_before() {
        let st = state();
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let cip = ClusterIpPlan {
            policy: Some(Policy::SingleStack),
            families: vec![Family::V4],
            slots: vec![IpSlot::Keep(ip)],
            headless: false,
        };
        let npp = node_ports(vec![PortSlot::Fixed(30001)], 0, HealthSlot::Fixed(30002));
        let first = steps(&cip, &npp, &st, UID, false, NO_LB);
        assert!(first.contains(&Step::ClaimClusterIp { slot: 0, ip }));
        assert!(first.contains(&Step::ClaimNodePort {
            index: 0,
            port: 30001
        }));
        assert!(first.contains(&Step::ClaimHealthCheckPort(30002)));
        assert!(!first
            .iter()
            .any(|s| matches!(s, Step::ReportLostIps(_) | Step::ReportLostPorts(_))));
        let again = steps(&cip, &npp, &st, UID, true, NO_LB);
        let claim = pos(&again, |s| *s == Step::ClaimClusterIp { slot: 0, ip })[0];
        let report = pos(&again, |s| *s == Step::ReportLostIps(vec![ip]))[0];
        assert!(claim < report, "reported after the repair");
        assert!(again.contains(&Step::ReportLostPorts(vec![30001, 30002])));
        assert!(!again
            .iter()
            .any(|s| matches!(s, Step::AllocNodePorts { .. })));
    }

    #[test]
    fn load_balancer_steps_only_when_served_or_when_our_addresses_must_be_removed() {
        let st = state();
        let cip = dual_alloc();
        let npp = node_ports(vec![], 0, HealthSlot::Zero);
        let none = steps(&cip, &npp, &st, UID, false, NO_LB);
        assert!(!none
            .iter()
            .any(|s| matches!(s, Step::LoadBalancerIps | Step::WriteLoadBalancerStatus)));
        let leaving = LbScope {
            handles: false,
            has_ours_in_status: true,
        };
        let s = steps(&cip, &npp, &st, UID, false, leaving);
        assert!(!s.contains(&Step::LoadBalancerIps));
        assert!(s.contains(&Step::WriteLoadBalancerStatus));
    }

    #[test]
    fn releases_spare_what_is_kept_and_lb_claims_while_the_lb_step_fails() {
        let mut st = state();
        let keep = hold_ip(&mut st, "10.0.0.1", IpPurpose::ClusterIP, UID);
        let old = hold_ip(&mut st, "10.0.0.2", IpPurpose::ClusterIP, UID);
        let lb = hold_ip(&mut st, "10.0.0.3", IpPurpose::LoadBalancer, UID);
        hold_ip(&mut st, "10.0.0.4", IpPurpose::ClusterIP, "someone-else");
        hold_port(&mut st, 30001, PortPurpose::NodePort, UID);
        hold_port(&mut st, 30002, PortPurpose::HealthCheckNodePort, UID);
        let keep_ips = HashSet::from([keep]);
        let keep_ports = HashSet::from([30001]);
        let r = releases(&st, UID, &keep_ips, &keep_ports, false);
        let mut ips: Vec<IpAddr> = r.ips.iter().map(|(ip, _)| *ip).collect();
        ips.sort();
        assert_eq!(ips, vec![old, lb]);
        assert_eq!(r.ports, vec![(30002, PortPurpose::HealthCheckNodePort)]);
        let r = releases(&st, UID, &keep_ips, &keep_ports, true);
        assert_eq!(r.ips, vec![(old, IpPurpose::ClusterIP)], "LB claims kept");
        assert!(releases(
            &st,
            UID,
            &HashSet::from([keep, old, lb]),
            &HashSet::from([30001, 30002]),
            false
        )
        .is_empty());
    }
}
