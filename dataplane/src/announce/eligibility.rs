//! Pure: which addresses must be announced, which nodes may announce each, and on which of this
//! node's interfaces — from the Services and EndpointSlices the proxy already tracks, the
//! `L2Announcement` policies, the Nodes and the LoadBalancer address pools.
//!
//! * An address is announced when its Service (type LoadBalancer, address in
//!   `status.loadBalancer.ingress`) matches a policy's Service selector and the address lies in a
//!   pool the policy names (any pool when it names none). Addresses in no pool at all are never
//!   announced (svcnet did not assign them; something else owns them) and are reported.
//! * A node is a candidate when a selecting policy's node selector matches it, it is neither
//!   cordoned nor being deleted, and — for `externalTrafficPolicy: Local` — it has a ready endpoint
//!   of the Service. When Services share an address, a node must qualify for all of them.
//! * This node answers on the interfaces its selecting policies name, or when none names any, on
//!   the interfaces holding its node IP.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crds::l2::InterfacePattern;
use crds::{L2Announcement, LabelSelector, LoadBalancerIPPool};
use ipnet::IpNet;

use crate::types::{ProxyState, ServiceKey};

/// A policy, parsed.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Object name.
    pub name: String,
    service_selector: Option<LabelSelector>,
    pools: BTreeSet<String>,
    node_selector: Option<LabelSelector>,
    interfaces: Vec<Matcher>,
}

/// One interface entry of a policy.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// An exact name.
    Name(String),
    /// A regular expression matched against the whole name.
    Regex(regex::Regex),
}

impl Matcher {
    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Matcher::Name(n) => n == name,
            Matcher::Regex(re) => re.is_match(name),
        }
    }

    /// The entry as written.
    pub fn text(&self) -> String {
        match self {
            Matcher::Name(n) => n.clone(),
            Matcher::Regex(re) => format!("/{}/", re.as_str()),
        }
    }
}

impl Policy {
    /// Parses a policy; an interface pattern that is not a valid regular expression is an error
    /// (reported in the object's status, the policy is then ignored).
    pub fn parse(obj: &L2Announcement) -> Result<Policy, String> {
        let mut interfaces = Vec::new();
        for entry in &obj.spec.interfaces {
            match InterfacePattern::parse(entry) {
                InterfacePattern::Name(n) => interfaces.push(Matcher::Name(n)),
                InterfacePattern::Regex(re) => {
                    // Anchored: a pattern names whole interfaces, as a name does.
                    let anchored = format!("^(?:{re})$");
                    let re = regex::Regex::new(&anchored)
                        .map_err(|e| format!("interface pattern {entry:?}: {e}"))?;
                    interfaces.push(Matcher::Regex(re));
                }
            }
        }
        Ok(Policy {
            name: obj.metadata.name.clone().unwrap_or_default(),
            service_selector: obj.spec.service_selector.clone(),
            pools: obj.spec.ip_pools.iter().cloned().collect(),
            node_selector: obj.spec.node_selector.clone(),
            interfaces,
        })
    }

    fn selects_node(&self, node: &NodeFacts) -> bool {
        self.node_selector
            .as_ref()
            .is_none_or(|s| s.matches(&node.labels))
    }
}

/// What the eligibility rules need of a Node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// Being deleted, or tainted for deletion by the cluster autoscaler.
    pub being_deleted: bool,
}

/// Address ranges of the LoadBalancer pools.
#[derive(Debug, Clone, Default)]
pub struct Pools {
    ranges: Vec<(String, IpAddr, IpAddr)>,
}

impl Pools {
    /// Parses the pools' CIDRs and ranges (entries that do not parse are skipped: the IPAM
    /// controller reports them on the pool).
    pub fn new<'a>(pools: impl IntoIterator<Item = &'a LoadBalancerIPPool>) -> Pools {
        let mut ranges = Vec::new();
        for p in pools {
            let name = p.metadata.name.clone().unwrap_or_default();
            for c in &p.spec.cidrs {
                if let Ok(net) = c.parse::<IpNet>() {
                    ranges.push((name.clone(), net.network(), net.broadcast()));
                }
            }
            for r in &p.spec.ranges {
                if let (Ok(a), Ok(b)) = (r.start.parse::<IpAddr>(), r.stop.parse::<IpAddr>()) {
                    ranges.push((name.clone(), a, b));
                }
            }
        }
        Pools { ranges }
    }

    /// Names of the pools containing `ip`.
    pub fn of(&self, ip: IpAddr) -> BTreeSet<&str> {
        self.ranges
            .iter()
            .filter(|(_, a, b)| a.is_ipv4() == ip.is_ipv4() && *a <= ip && ip <= *b)
            .map(|(n, _, _)| n.as_str())
            .collect()
    }
}

/// One address to announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The address.
    pub ip: IpAddr,
    /// The Services it belongs to.
    pub services: BTreeSet<ServiceKey>,
    /// Nodes that may announce it.
    pub candidates: BTreeSet<String>,
    /// Names of the policies selecting it that also select this node.
    pub policies_here: BTreeSet<String>,
}

/// A finding worth an Event.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    /// A Service's LoadBalancer address lies in no pool; it is not announced.
    NotInPool {
        /// The Service.
        service: ServiceKey,
        /// The address.
        ip: IpAddr,
    },
}

/// Nodes with a ready endpoint of `key`.
fn nodes_with_ready_endpoints(state: &ProxyState, key: &ServiceKey) -> BTreeSet<String> {
    state
        .slices_for(key)
        .filter(|s| s.service_name == key.name)
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.ready)
        .filter_map(|e| e.node_name.clone())
        .collect()
}

/// The addresses to announce (by address) and the problems found.
pub fn targets(
    state: &ProxyState,
    policies: &[Policy],
    nodes: &BTreeMap<String, NodeFacts>,
    pools: &Pools,
    me: &str,
) -> (BTreeMap<IpAddr, Target>, BTreeSet<Problem>) {
    let mut out: BTreeMap<IpAddr, Target> = BTreeMap::new();
    let mut problems = BTreeSet::new();
    let usable: BTreeMap<&String, &NodeFacts> = nodes
        .iter()
        .filter(|(_, n)| !n.unschedulable && !n.being_deleted)
        .collect();
    for svc in state.services.values() {
        if svc.load_balancer_ips.is_empty() {
            continue;
        }
        let selecting: Vec<&Policy> = policies
            .iter()
            .filter(|p| {
                p.service_selector
                    .as_ref()
                    .is_none_or(|s| s.matches(&svc.lb_labels))
            })
            .collect();
        if selecting.is_empty() {
            continue;
        }
        let local = svc
            .external_policy_local
            .then(|| nodes_with_ready_endpoints(state, &svc.key));
        for ip in &svc.load_balancer_ips {
            let in_pools = pools.of(*ip);
            if in_pools.is_empty() {
                problems.insert(Problem::NotInPool {
                    service: svc.key.clone(),
                    ip: *ip,
                });
                continue;
            }
            let here: Vec<&&Policy> = selecting
                .iter()
                .filter(|p| p.pools.is_empty() || in_pools.iter().any(|n| p.pools.contains(*n)))
                .collect();
            if here.is_empty() {
                continue;
            }
            let candidates: BTreeSet<String> = usable
                .iter()
                .filter(|(_, facts)| here.iter().any(|p| p.selects_node(facts)))
                .filter(|(name, _)| local.as_ref().is_none_or(|l| l.contains(**name)))
                .map(|(name, _)| (*name).clone())
                .collect();
            let policies_here: BTreeSet<String> = match nodes.get(me) {
                Some(facts) => here
                    .iter()
                    .filter(|p| p.selects_node(facts))
                    .map(|p| p.name.clone())
                    .collect(),
                None => BTreeSet::new(),
            };
            match out.get_mut(ip) {
                // A shared address: a node must qualify for every Service on it.
                Some(t) => {
                    t.services.insert(svc.key.clone());
                    t.candidates = t.candidates.intersection(&candidates).cloned().collect();
                    t.policies_here.extend(policies_here);
                }
                None => {
                    out.insert(
                        *ip,
                        Target {
                            ip: *ip,
                            services: [svc.key.clone()].into(),
                            candidates,
                            policies_here,
                        },
                    );
                }
            }
        }
    }
    (out, problems)
}

/// The interfaces of this node to answer on for policies `names`: the ones their entries match,
/// or the interfaces holding a node IP when no policy names any. Entries that match no interface
/// are returned as `(policy, entry)`.
pub fn interfaces<'a>(
    names: &BTreeSet<String>,
    policies: &[Policy],
    available: impl Iterator<Item = (&'a str, &'a [IpAddr])> + Clone,
    node_ips: &[IpAddr],
) -> (BTreeSet<String>, Vec<(String, String)>) {
    let mut out = BTreeSet::new();
    let mut missing = Vec::new();
    let mut any_named = false;
    for p in policies.iter().filter(|p| names.contains(&p.name)) {
        for m in &p.interfaces {
            any_named = true;
            let hits: Vec<&str> = available
                .clone()
                .map(|(n, _)| n)
                .filter(|n| m.matches(n))
                .collect();
            if hits.is_empty() {
                missing.push((p.name.clone(), m.text()));
            }
            out.extend(hits.into_iter().map(str::to_string));
        }
    }
    if !any_named && !names.is_empty() {
        out.extend(
            available
                .filter(|(_, addrs)| addrs.iter().any(|a| node_ips.contains(a)))
                .map(|(n, _)| n.to_string()),
        );
    }
    (out, missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{EndpointInfo, EndpointSliceInfo, Family, ServiceInfo};
    use crds::{AddressRange, L2AnnouncementSpec, LoadBalancerIPPoolSpec};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn policy(name: &str, spec: L2AnnouncementSpec) -> Policy {
        Policy::parse(&L2Announcement::new(name, spec)).unwrap()
    }

    fn lb(name: &str, ips: &[&str], local: bool, lbls: &[(&str, &str)]) -> ServiceInfo {
        let mut s = ServiceInfo::cluster_ip(
            ServiceKey::new("default", name),
            vec![ip("10.96.0.10")],
            vec![],
        );
        s.load_balancer_ips = ips.iter().map(|i| ip(i)).collect();
        s.external_policy_local = local;
        s.lb_labels = labels(lbls);
        s
    }

    fn slice(svc: &str, eps: &[(&str, &str, bool)]) -> EndpointSliceInfo {
        EndpointSliceInfo {
            namespace: "default".into(),
            name: format!("{svc}-x"),
            service_name: svc.into(),
            family: Family::Ipv4,
            ports: vec![],
            endpoints: eps
                .iter()
                .map(|(a, node, ready)| EndpointInfo {
                    address: ip(a),
                    ready: *ready,
                    serving: *ready,
                    terminating: false,
                    node_name: Some(node.to_string()),
                    zone_hints: vec![],
                    node_hints: vec![],
                })
                .collect(),
            trigger_time: None,
        }
    }

    fn pools() -> Pools {
        let mk = |name: &str, cidr: &str, range: Option<(&str, &str)>| {
            LoadBalancerIPPool::new(
                name,
                LoadBalancerIPPoolSpec {
                    cidrs: vec![cidr.into()],
                    ranges: range
                        .map(|(a, b)| AddressRange {
                            start: a.into(),
                            stop: b.into(),
                        })
                        .into_iter()
                        .collect(),
                    ..Default::default()
                },
            )
        };
        let v = [
            mk(
                "lan",
                "192.0.2.0/28",
                Some(("2001:db8::10", "2001:db8::20")),
            ),
            mk("dmz", "198.51.100.0/28", None),
        ];
        Pools::new(v.iter())
    }

    fn nodes() -> BTreeMap<String, NodeFacts> {
        let mut m = BTreeMap::new();
        m.insert(
            "a".to_string(),
            NodeFacts {
                labels: labels(&[("l2", "yes")]),
                ..Default::default()
            },
        );
        m.insert(
            "b".to_string(),
            NodeFacts {
                labels: labels(&[("l2", "yes")]),
                ..Default::default()
            },
        );
        m.insert(
            "c".to_string(),
            NodeFacts {
                labels: labels(&[("l2", "no")]),
                ..Default::default()
            },
        );
        m.insert(
            "cordoned".to_string(),
            NodeFacts {
                labels: labels(&[("l2", "yes")]),
                unschedulable: true,
                ..Default::default()
            },
        );
        m
    }

    fn state(services: Vec<ServiceInfo>, slices: Vec<EndpointSliceInfo>) -> ProxyState {
        let mut st = ProxyState::default();
        for s in services {
            st.upsert_service(s);
        }
        for sl in slices {
            st.slices
                .entry(ServiceKey::new("default", sl.service_name.clone()))
                .or_default()
                .insert(sl.name.clone(), sl);
        }
        st
    }

    fn sel(kv: &[(&str, &str)]) -> Option<LabelSelector> {
        Some(LabelSelector {
            match_labels: labels(kv),
            ..Default::default()
        })
    }

    #[test]
    fn node_selector_cordon_and_pool_rules() {
        let p = policy(
            "lan-only",
            L2AnnouncementSpec {
                ip_pools: vec!["lan".into()],
                node_selector: sel(&[("l2", "yes")]),
                ..Default::default()
            },
        );
        let st = state(
            vec![
                lb("web", &["192.0.2.5", "2001:db8::15"], false, &[]),
                lb("dmz", &["198.51.100.3"], false, &[]),
                lb("foreign", &["203.0.113.9"], false, &[]),
            ],
            vec![],
        );
        let (t, problems) = targets(&st, &[p], &nodes(), &pools(), "a");
        assert_eq!(
            t.keys().copied().collect::<Vec<_>>(),
            [ip("192.0.2.5"), ip("2001:db8::15")]
        );
        let web = &t[&ip("192.0.2.5")];
        assert_eq!(web.candidates, ["a", "b"].map(String::from).into());
        assert_eq!(web.policies_here, ["lan-only".to_string()].into());
        assert_eq!(
            problems,
            [Problem::NotInPool {
                service: ServiceKey::new("default", "foreign"),
                ip: ip("203.0.113.9")
            }]
            .into()
        );
        // Node c is not selected: it is no candidate and no policy applies to it.
        let (t, _) = targets(
            &st,
            &[policy("all", Default::default())],
            &nodes(),
            &pools(),
            "c",
        );
        assert!(t[&ip("198.51.100.3")].candidates.contains("c"));
    }

    #[test]
    fn local_policy_needs_a_ready_local_endpoint_and_shared_addresses_intersect() {
        let all = policy("all", Default::default());
        let st = state(
            vec![
                lb("local", &["192.0.2.7"], true, &[]),
                lb("shared-a", &["192.0.2.8"], true, &[]),
                lb("shared-b", &["192.0.2.8"], true, &[]),
            ],
            vec![
                slice(
                    "local",
                    &[("10.0.1.5", "b", true), ("10.0.0.5", "a", false)],
                ),
                slice(
                    "shared-a",
                    &[("10.0.0.6", "a", true), ("10.0.1.6", "b", true)],
                ),
                slice("shared-b", &[("10.0.0.7", "a", true)]),
            ],
        );
        let (t, _) = targets(&st, &[all], &nodes(), &pools(), "a");
        assert_eq!(t[&ip("192.0.2.7")].candidates, ["b".to_string()].into());
        assert_eq!(t[&ip("192.0.2.8")].candidates, ["a".to_string()].into());
        assert_eq!(t[&ip("192.0.2.8")].services.len(), 2);
    }

    #[test]
    fn service_selector_filters_services() {
        let p = policy(
            "tier",
            L2AnnouncementSpec {
                service_selector: sel(&[("expose", "lan")]),
                ..Default::default()
            },
        );
        let st = state(
            vec![
                lb("yes", &["192.0.2.1"], false, &[("expose", "lan")]),
                lb("no", &["192.0.2.2"], false, &[]),
            ],
            vec![],
        );
        let (t, _) = targets(&st, &[p], &nodes(), &pools(), "a");
        assert_eq!(t.keys().copied().collect::<Vec<_>>(), [ip("192.0.2.1")]);
    }

    #[test]
    fn interfaces_by_name_regex_or_node_ip() {
        let named = policy(
            "named",
            L2AnnouncementSpec {
                interfaces: vec!["eth1".into(), "/^bond[0-9]+$/".into(), "wlan9".into()],
                ..Default::default()
            },
        );
        let default = policy("default", Default::default());
        let node_ip = [ip("192.168.1.10")];
        let eth0 = [ip("192.168.1.10")];
        let none: [IpAddr; 0] = [];
        let avail = [
            ("eth0", &eth0[..]),
            ("eth1", &none[..]),
            ("bond0", &none[..]),
            ("bond0x", &none[..]),
        ];
        let policies = [named, default];
        let (got, missing) = interfaces(
            &["named".to_string()].into(),
            &policies,
            avail.iter().map(|(n, a)| (*n, *a)),
            &node_ip,
        );
        assert_eq!(got, ["bond0", "eth1"].map(String::from).into());
        assert_eq!(missing, [("named".to_string(), "wlan9".to_string())]);
        let (got, missing) = interfaces(
            &["default".to_string()].into(),
            &policies,
            avail.iter().map(|(n, a)| (*n, *a)),
            &node_ip,
        );
        assert_eq!(got, ["eth0".to_string()].into());
        assert!(missing.is_empty());
    }

    #[test]
    fn a_bad_regex_is_an_error() {
        let obj = L2Announcement::new(
            "bad",
            L2AnnouncementSpec {
                interfaces: vec!["/eth[/".into()],
                ..Default::default()
            },
        );
        assert!(Policy::parse(&obj).unwrap_err().contains("eth["));
    }
}
