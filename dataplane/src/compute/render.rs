//! The pure renderer: (Services, EndpointSlices, node configuration) → nftables [`Model`].
//!
//! # Layout
//!
//! Per-Service state is *elements* of a few shared maps, never per-Service chains or sets (except for the
//! rare ClientIP-affinity Services, see below): on nft 1.0.6 the cost of a load grows super-linearly with
//! the number of chains-with-sets and sets, but only linearly (and cheaply) with elements.
//!
//! * `service-ips` / `service-nodeports` verdict maps send a new connection to a *shared entry chain*
//!   selected by protocol and endpoint count: `cip-<p>-N` (ClusterIP, masquerade rule), `ext-<p>-N`
//!   (external VIP, ETP=Cluster), `ext-local-<p>-N-M` (ETP=Local), `np-ext-*` for NodePorts; or straight
//!   to `lb-<p>-N`.
//! * `lb-<p>-N` does `dnat to daddr . dport . (numgen random mod N)` through the `backends-<p>` map, whose
//!   elements are `(VIP . port . slot) : (endpoint IP . port)` for slots `0..N`. `local-lb-*`, `np-lb-*`,
//!   `np-local-lb-*` use `local-backends-<p>`, `nodeport-backends-<p>` (keyed by nodePort and slot) and
//!   `nodeport-local-backends-<p>`. One shared chain exists per (protocol, endpoint count) in use, and a
//!   backend map is declared only while some Service uses it (see [`names::BackendList`]).
//! * Hairpin: `masquerading` marks `ct status dnat` packets whose `(saddr . daddr)` is in the `hairpin` set
//!   (one element per endpoint that is on this node or whose node is unknown — only those can hairpin).
//! * loadBalancerSourceRanges: `firewall-ips` (protected VIP . proto . port) plus a concatenated interval set
//!   `firewall-allow` of (VIP . proto . port . source range); no per-Service chain.
//! * ClientIP affinity needs per-endpoint dynamic state, so such a Service port gets its own chains
//!   (`aff-H-c`, `aff-H-l`, `aff-H-cip`, `aff-H-ext`) and one dynamic timeout set per endpoint
//!   (`aff-<hash>`), like upstream. The random pick uses a sequence of `numgen random mod (N-i) == 0` rules,
//!   which is uniform and needs no anonymous map.
//!
//! Base chains, hooks, priorities, no-endpoint verdict maps, `cluster-ips-check` and the masquerade mark
//! follow upstream kube-proxy's nftables mode ([`skeleton`]); ClientIP affinity is in [`affinity`].

mod affinity;
mod skeleton;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::compute::endpoints::{categorize, endpoints_for_port, Categorized, Endpoint};
use crate::compute::model::{BaseChain, Chain, Model, Set, SetSpec, Table};
use crate::compute::names::*;
use crate::types::{
    DetectLocal, Family, NodeConfig, Protocol, ProxyState, ServiceInfo, ServicePort,
};

/// Renders the complete desired model for every configured family, straight from the
/// Services: each family's [`skeleton`] plus every Service's [`service_fragment`]. This is the
/// definition of the desired state. [`crate::compute::assembly::Assembly`] computes the same model
/// incrementally (reference-counting what Services share, and turning changes into
/// transactions), and its tests compare the two.
pub fn render(state: &ProxyState, node: &NodeConfig) -> Model {
    let mut m = Model::default();
    for fam in &node.families {
        let mut t = skeleton(*fam, node);
        let fragments: Vec<Fragment> = state
            .services
            .values()
            .filter_map(|svc| service_fragment(*fam, node, state, svc))
            .collect();
        for f in &fragments {
            for (name, chain) in &f.chains {
                // Shared chains are the same in every fragment; a per-Service chain is in one.
                t.chains.insert(name.clone(), chain.clone());
            }
            for (name, spec) in &f.sets {
                t.sets.entry(name.clone()).or_insert_with(|| Set {
                    spec: spec.clone(),
                    elements: BTreeMap::new(),
                });
            }
        }
        for f in &fragments {
            for (set, key, value) in &f.elements {
                if let Some(s) = t.sets.get_mut(*set) {
                    s.elements
                        .entry(key.clone())
                        .or_insert_with(|| value.clone());
                }
            }
        }
        m.tables.insert(*fam, t);
    }
    m
}

/// Everything one Service contributes to one family's table: elements of the shared sets and maps, the
/// (shared or per-Service) chains it jumps to with their full definition, and its dynamic sets.
/// Shared chains are reference-counted by [`crate::compute::assembly::Assembly`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fragment {
    /// (set or map, key, value).
    pub elements: Vec<(&'static str, String, Option<String>)>,
    /// Chains by name.
    pub chains: BTreeMap<String, Chain>,
    /// Sets and maps declared only while some Service uses them (backend maps, affinity sets), by name.
    pub sets: BTreeMap<String, SetSpec>,
}

/// The fixed part of a family's table: base chains, shared sets and maps, static elements.
pub fn skeleton(fam: Family, node: &NodeConfig) -> Table {
    let mut r = FamilyRenderer::new(fam, node);
    r.skeleton();
    r.t
}

/// Renders one Service's [`Fragment`] for `fam`; `None` when the Service has no ClusterIP of that family.
pub fn service_fragment(
    fam: Family,
    node: &NodeConfig,
    state: &ProxyState,
    svc: &ServiceInfo,
) -> Option<Fragment> {
    let cip = svc
        .cluster_ips
        .iter()
        .find(|ip| Family::of(ip) == fam)
        .copied()?;
    let mut r = FamilyRenderer::new(fam, node);
    for port in &svc.ports {
        let eps = endpoints_for_port(state.slices_for(&svc.key), port, fam, &node.node_name);
        r.service_port(svc, port, cip, &eps);
    }
    let hairpin = std::mem::take(&mut r.hairpin);
    for ip in hairpin {
        r.elem(HAIRPIN, format!("{ip} . {ip}"), None);
    }
    Some(r.frag)
}

struct FamilyRenderer<'a> {
    fam: Family,
    node: &'a NodeConfig,
    /// Skeleton output.
    t: Table,
    /// Per-Service output.
    frag: Fragment,
    /// `ip daddr` / `ip6 daddr`.
    daddr: &'static str,
    /// `ip saddr` / `ip6 saddr`.
    saddr: &'static str,
    /// Rule that marks ClusterIP traffic for masquerade, if any.
    masq_rule: Option<String>,
    /// The `@cluster-cidrs` set is declared (CIDR detector with a CIDR of this family).
    has_cluster_cidrs: bool,
    /// The local-traffic detector's match for "from a local pod", if it recognises any.
    local_match: Option<String>,
    hairpin: BTreeSet<IpAddr>,
}

impl<'a> FamilyRenderer<'a> {
    fn new(fam: Family, node: &'a NodeConfig) -> Self {
        let (daddr, saddr) = match fam {
            Family::Ipv4 => ("ip daddr", "ip saddr"),
            Family::Ipv6 => ("ip6 daddr", "ip6 saddr"),
        };
        let has_cluster_cidrs = node.detect_local == DetectLocal::Cidrs
            && node.cluster_cidrs.iter().any(|c| Family::of_net(c) == fam);
        // (local, not local), as upstream's detectors: source CIDRs, or the input interface.
        let detector = match &node.detect_local {
            DetectLocal::Cidrs => has_cluster_cidrs.then(|| {
                (
                    format!("{saddr} @{CLUSTER_CIDRS}"),
                    format!("{saddr} != @{CLUSTER_CIDRS}"),
                )
            }),
            DetectLocal::BridgeInterface(i) => {
                Some((format!("iifname \"{i}\""), format!("iifname != \"{i}\"")))
            }
            DetectLocal::InterfaceNamePrefix(p) => {
                Some((format!("iifname \"{p}*\""), format!("iifname != \"{p}*\"")))
            }
        };
        let masq_rule = if node.masquerade_all {
            Some(format!("jump {MARK_FOR_MASQUERADE}"))
        } else {
            detector
                .as_ref()
                .map(|(_, not_local)| format!("{not_local} jump {MARK_FOR_MASQUERADE}"))
        };
        FamilyRenderer {
            fam,
            node,
            t: Table::new(fam),
            frag: Fragment::default(),
            daddr,
            saddr,
            masq_rule,
            has_cluster_cidrs,
            local_match: detector.map(|(local, _)| local),
            hairpin: BTreeSet::new(),
        }
    }

    fn elem(&mut self, set: &'static str, key: String, value: Option<String>) {
        self.frag.elements.push((set, key, value));
    }

    fn skel_elem(&mut self, set: &str, key: String, value: Option<String>) {
        if let Some(s) = self.t.sets.get_mut(set) {
            s.elements.insert(key, value);
        }
    }

    fn declare_set(&mut self, name: &str, spec: SetSpec) {
        self.t.sets.insert(
            name.to_string(),
            Set {
                spec,
                elements: BTreeMap::new(),
            },
        );
    }

    fn chain(&mut self, name: &str, base: Option<BaseChain>, rules: Vec<String>) {
        self.t
            .chains
            .insert(name.to_string(), Chain { base, rules });
    }

    fn frag_chain(&mut self, name: &str, rules: Vec<String>) {
        self.frag
            .chains
            .insert(name.to_string(), Chain { base: None, rules });
    }

    fn ensure_chain(&mut self, name: String, rules: impl FnOnce(&Self) -> Vec<String>) -> String {
        if !self.frag.chains.contains_key(&name) {
            let rules = rules(self);
            self.frag_chain(&name, rules);
        }
        name
    }

    /// Declares (in this fragment) the backend map of `list` for `proto` and returns its name.
    ///
    /// `tcp dport` / `udp dport` rather than `th dport` in the declarations: nft 1.0.6 cannot rebuild a
    /// `th dport` typeof from the kernel ("conflicting protocols specified: ip vs. th") when a later
    /// transaction adds a rule using the map. For the key only the data type matters; the value type
    /// becomes the DNAT's protocol check, hence one map per protocol.
    fn backend_map(&mut self, list: BackendList, proto: Protocol) -> &'static str {
        let name = list.map(proto);
        if !self.frag.sets.contains_key(name) {
            let p = proto.nft();
            let key = if list.is_nodeport() {
                format!("typeof {p} dport . numgen random mod 1")
            } else {
                format!("typeof {} . {p} dport . numgen random mod 1", self.daddr)
            };
            let value = format!("{} . {p} dport", self.daddr);
            self.frag
                .sets
                .insert(name.to_string(), SetSpec::map(key, value));
        }
        name
    }

    fn lb_chain(&mut self, proto: Protocol, n: usize, local: bool, nodeport: bool) -> String {
        let (name, list) = match (local, nodeport) {
            (false, false) => (lb(proto, n), BackendList::Cluster),
            (true, false) => (local_lb(proto, n), BackendList::Local),
            (false, true) => (np_lb(proto, n), BackendList::NodePort),
            (true, true) => (np_local_lb(proto, n), BackendList::NodePortLocal),
        };
        let map = self.backend_map(list, proto);
        let prefix = if nodeport {
            String::new()
        } else {
            format!("{} . ", self.daddr)
        };
        self.ensure_chain(name, |r| {
            vec![format!(
                "meta l4proto {} dnat {} to {prefix}th dport . numgen random mod {n} map @{map}",
                proto.nft(),
                r.fam.nft(),
            )]
        })
    }

    /// Rules of an ETP=Local external entry chain: pods and the host go to the cluster list, everything
    /// else to the local list (if any).
    fn external_local_rules(
        &self,
        cluster_target: &str,
        local_target: Option<&str>,
    ) -> Vec<String> {
        let mut rules = vec![];
        if let Some(local) = &self.local_match {
            rules.push(format!("{local} goto {cluster_target}"));
        }
        rules.push(format!("fib saddr type local jump {MARK_FOR_MASQUERADE}"));
        rules.push(format!("fib saddr type local goto {cluster_target}"));
        if let Some(l) = local_target {
            rules.push(format!("goto {l}"));
        }
        rules
    }

    fn note_hairpin(&mut self, eps: &[Endpoint]) {
        for e in eps {
            if e.local || e.node_unknown {
                self.hairpin.insert(e.ip);
            }
        }
    }

    fn fill_backends(
        &mut self,
        list: BackendList,
        proto: Protocol,
        key_prefix: &str,
        eps: &[Endpoint],
    ) {
        if eps.is_empty() {
            return;
        }
        let map = self.backend_map(list, proto);
        for (i, e) in eps.iter().enumerate() {
            self.elem(
                map,
                format!("{key_prefix} . {i}"),
                Some(format!("{} . {}", e.ip, e.port)),
            );
        }
    }

    fn service_port(
        &mut self,
        svc: &ServiceInfo,
        port: &ServicePort,
        cip: IpAddr,
        eps: &[Endpoint],
    ) {
        let fam = self.fam;
        let proto = port.protocol.nft();
        let external = svc.externally_accessible(port, fam);
        let cats: Categorized = categorize(eps, svc, external, self.node);
        let has_endpoints = cats.has_any;
        let internal_list: &[Endpoint] = if svc.internal_policy_local {
            &cats.local
        } else {
            &cats.cluster
        };
        let has_internal = has_endpoints && !internal_list.is_empty();
        let has_external = has_endpoints && (!svc.external_policy_local || !cats.local.is_empty());
        let reject = format!("goto {REJECT_CHAIN}");
        let internal_filter = if !has_endpoints {
            reject.clone()
        } else {
            "drop".to_string()
        };
        let external_filter = internal_filter.clone();

        self.elem(CLUSTER_IPS, cip.to_string(), None);
        let vip_key = |ip: &IpAddr| format!("{ip} . {proto} . {}", port.port);
        // Backend maps are per protocol: their keys leave the protocol out.
        let backend_key = |ip: &IpAddr| format!("{ip} . {}", port.port);
        let np_key = port.node_port.map(|np| format!("{proto} . {np}"));
        let p = port.protocol;

        if has_internal {
            self.note_hairpin(internal_list);
        }
        if has_endpoints && external {
            self.note_hairpin(&cats.cluster);
            if svc.external_policy_local {
                self.note_hairpin(&cats.local);
            }
        }

        // Entry chains.
        let (internal_entry, external_entry, np_entry) = match svc.affinity_timeout {
            Some(timeout) => self.affinity_chains(
                svc,
                port,
                &cats,
                external && has_endpoints,
                has_internal,
                timeout,
            ),
            None => {
                let internal_entry = if has_internal {
                    // The ClusterIP's key in `backends` holds the internal list (local for ITP=Local).
                    let n = internal_list.len();
                    let lb = self.lb_chain(p, n, false, false);
                    Some(match self.masq_rule.clone() {
                        Some(rule) => self.ensure_chain(cluster_ip_entry(p, n), |_| {
                            vec![rule, format!("goto {lb}")]
                        }),
                        None => lb,
                    })
                } else {
                    None
                };
                let (mut ext_entry, mut np_entry) = (None, None);
                if has_endpoints && external {
                    let n = cats.cluster.len();
                    let m = cats.local.len();
                    if svc.external_policy_local {
                        let c = self.lb_chain(p, n, false, false);
                        let l = (m > 0).then(|| self.lb_chain(p, m, true, false));
                        ext_entry = Some(self.ensure_chain(ext_local(p, n, m), |r| {
                            r.external_local_rules(&c, l.as_deref())
                        }));
                        if port.node_port.is_some() {
                            let c = self.lb_chain(p, n, false, true);
                            let l = (m > 0).then(|| self.lb_chain(p, m, true, true));
                            np_entry = Some(self.ensure_chain(np_ext_local(p, n, m), |r| {
                                r.external_local_rules(&c, l.as_deref())
                            }));
                        }
                    } else {
                        let c = self.lb_chain(p, n, false, false);
                        ext_entry = Some(self.ensure_chain(ext(p, n), |_| {
                            vec![format!("jump {MARK_FOR_MASQUERADE}"), format!("goto {c}")]
                        }));
                        if port.node_port.is_some() {
                            let c = self.lb_chain(p, n, false, true);
                            np_entry = Some(self.ensure_chain(np_ext(p, n), |_| {
                                vec![format!("jump {MARK_FOR_MASQUERADE}"), format!("goto {c}")]
                            }));
                        }
                    }
                }
                (internal_entry, ext_entry, np_entry)
            }
        };
        let affinity = svc.affinity_timeout.is_some();

        // ClusterIP.
        match internal_entry {
            Some(entry) if has_internal => {
                self.elem(SERVICE_IPS, vip_key(&cip), Some(format!("goto {entry}")));
                if !affinity {
                    let list = internal_list.to_vec();
                    self.fill_backends(BackendList::Cluster, p, &backend_key(&cip), &list);
                }
            }
            _ => {
                self.elem(NO_ENDPOINT_SERVICES, vip_key(&cip), Some(internal_filter));
            }
        }

        // External IPs and LoadBalancer IPs.
        let ext_ips: Vec<IpAddr> = svc
            .external_ips
            .iter()
            .filter(|ip| Family::of(ip) == fam)
            .copied()
            .collect();
        let lb_ips: Vec<IpAddr> = svc
            .load_balancer_ips
            .iter()
            .filter(|ip| Family::of(ip) == fam)
            .copied()
            .collect();
        for ip in ext_ips.iter().chain(lb_ips.iter()) {
            let key = vip_key(ip);
            if let Some(entry) = &external_entry {
                self.elem(SERVICE_IPS, key.clone(), Some(format!("goto {entry}")));
                if !affinity {
                    let bkey = backend_key(ip);
                    let cluster = cats.cluster.clone();
                    self.fill_backends(BackendList::Cluster, p, &bkey, &cluster);
                    if svc.external_policy_local {
                        let local = cats.local.clone();
                        self.fill_backends(BackendList::Local, p, &bkey, &local);
                    }
                }
            }
            if !has_external {
                self.elem(NO_ENDPOINT_SERVICES, key, Some(external_filter.clone()));
            }
        }

        // loadBalancerSourceRanges.
        let ranges: Vec<ipnet::IpNet> = svc
            .load_balancer_source_ranges
            .iter()
            .filter(|r| Family::of_net(r) == fam)
            .map(|r| r.trunc())
            .collect();
        if !ranges.is_empty() && !lb_ips.is_empty() {
            let node_in_range = self
                .node
                .node_ips
                .iter()
                .any(|ip| ranges.iter().any(|r| r.contains(ip)));
            let mut allowed: Vec<String> = ranges.iter().map(|r| r.to_string()).collect();
            if node_in_range {
                let host = if fam == Family::Ipv4 { 32 } else { 128 };
                allowed.extend(lb_ips.iter().map(|ip| format!("{ip}/{host}")));
            }
            for ip in &lb_ips {
                let key = vip_key(ip);
                self.elem(FIREWALL_IPS, key.clone(), None);
                for a in &allowed {
                    self.elem(FIREWALL_ALLOW, format!("{key} . {a}"), None);
                }
            }
        }

        // NodePort.
        if let Some(key) = np_key {
            if let Some(entry) = &np_entry {
                self.elem(
                    SERVICE_NODEPORTS,
                    key.clone(),
                    Some(format!("goto {entry}")),
                );
                if !affinity {
                    let bkey = port.node_port.map(|np| np.to_string()).unwrap_or_default();
                    let cluster = cats.cluster.clone();
                    self.fill_backends(BackendList::NodePort, p, &bkey, &cluster);
                    if svc.external_policy_local {
                        let local = cats.local.clone();
                        self.fill_backends(BackendList::NodePortLocal, p, &bkey, &local);
                    }
                }
            }
            if !has_external {
                self.elem(NO_ENDPOINT_NODEPORTS, key, Some(external_filter));
            }
        }
    }
}
