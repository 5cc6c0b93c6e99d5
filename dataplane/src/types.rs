//! Small internal structs that the renderer works on. They hold only what the dataplane needs; the
//! `convert` module builds them from Kubernetes objects, tests build them directly.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

/// An IP family; one nftables table per family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4 (`ip` table).
    Ipv4,
    /// IPv6 (`ip6` table).
    Ipv6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// The family of a network.
    pub fn of_net(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::Ipv4,
            IpNet::V6(_) => Family::Ipv6,
        }
    }

    /// nftables family keyword (`ip` / `ip6`).
    pub fn nft(self) -> &'static str {
        match self {
            Family::Ipv4 => "ip",
            Family::Ipv6 => "ip6",
        }
    }

    /// nftables address data type.
    pub fn addr_type(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4_addr",
            Family::Ipv6 => "ipv6_addr",
        }
    }
}

/// L4 protocol of a Service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Every protocol a Service port can use.
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// Parses a Kubernetes protocol name (`TCP`, `UDP`, `SCTP`); `None` (unset) means TCP.
    pub fn from_k8s(p: Option<&str>) -> Option<Protocol> {
        match p.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// nftables keyword.
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// Namespace + name of a Service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ServiceKey {
    /// Builds a key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Port name ("" when unnamed).
    pub name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Service port.
    pub port: u16,
    /// NodePort, if allocated.
    pub node_port: Option<u16>,
}

/// The parts of a Service the proxy uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Namespace/name.
    pub key: ServiceKey,
    /// `spec.clusterIPs` (parsed; at most one per family).
    pub cluster_ips: Vec<IpAddr>,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip` with ipMode VIP (or unset).
    pub load_balancer_ips: Vec<IpAddr>,
    /// `spec.loadBalancerSourceRanges` (only meaningful for LB IPs).
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// ClientIP affinity timeout in seconds, when sessionAffinity is ClientIP.
    pub affinity_timeout: Option<u32>,
    /// externalTrafficPolicy Local (only set for NodePort/LoadBalancer Services).
    pub external_policy_local: bool,
    /// internalTrafficPolicy Local.
    pub internal_policy_local: bool,
    /// healthCheckNodePort (ETP=Local LoadBalancer Services).
    pub health_check_node_port: Option<u16>,
    /// Labels of a LoadBalancer Service with addresses (what `L2Announcement` Service selectors
    /// match); empty for every other Service, which keeps them small.
    pub lb_labels: BTreeMap<String, String>,
}

impl ServiceInfo {
    /// A ClusterIP-only Service: no external, LoadBalancer or source-range addresses, no
    /// affinity, cluster traffic policies, no health-check NodePort (set fields after for more).
    pub fn cluster_ip(key: ServiceKey, cluster_ips: Vec<IpAddr>, ports: Vec<ServicePort>) -> Self {
        ServiceInfo {
            key,
            cluster_ips,
            ports,
            external_ips: vec![],
            load_balancer_ips: vec![],
            load_balancer_source_ranges: vec![],
            affinity_timeout: None,
            external_policy_local: false,
            internal_policy_local: false,
            health_check_node_port: None,
            lb_labels: BTreeMap::new(),
        }
    }

    /// True when the Service can be reached from outside the cluster (NodePort, LB IP or external IP) in `fam`.
    pub fn externally_accessible(&self, port: &ServicePort, fam: Family) -> bool {
        port.node_port.is_some()
            || self.external_ips.iter().any(|ip| Family::of(ip) == fam)
            || self
                .load_balancer_ips
                .iter()
                .any(|ip| Family::of(ip) == fam)
    }
}

/// Conditions and placement of one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    /// `addresses[0]`.
    pub address: IpAddr,
    /// `conditions.ready` (nil = true).
    pub ready: bool,
    /// `conditions.serving` (nil = ready).
    pub serving: bool,
    /// `conditions.terminating` (nil = false).
    pub terminating: bool,
    /// `nodeName`.
    pub node_name: Option<String>,
    /// `hints.forZones[].name`.
    pub zone_hints: Vec<String>,
    /// `hints.forNodes[].name`.
    pub node_hints: Vec<String>,
}

/// A named port of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointPort {
    /// Port name ("" when unset).
    pub name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Port number (never 0).
    pub port: u16,
}

/// The parts of an EndpointSlice the proxy uses.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointSliceInfo {
    /// Namespace.
    pub namespace: String,
    /// Slice name.
    pub name: String,
    /// Owning Service (label `kubernetes.io/service-name`).
    pub service_name: String,
    /// Address family (slices of type FQDN are dropped at conversion).
    pub family: Family,
    /// Ports.
    pub ports: Vec<EndpointPort>,
    /// Endpoints.
    pub endpoints: Vec<EndpointInfo>,
    /// `endpoints.kubernetes.io/last-change-trigger-time`, seconds since the epoch.
    pub trigger_time: Option<f64>,
}

/// Which node addresses accept NodePort traffic.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum NodePortAddresses {
    /// Every local address except loopback (`fib daddr type local`).
    #[default]
    All,
    /// Local addresses inside these CIDRs.
    Cidrs(Vec<IpNet>),
}

/// How the rules recognise traffic from this node's pods (the "local traffic detector").
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum DetectLocal {
    /// Source address inside [`NodeConfig::cluster_cidrs`] (modes ClusterCIDR and NodeCIDR); no
    /// CIDR of a family means no pod traffic is recognised in it.
    #[default]
    Cidrs,
    /// Arrived on this interface (`iifname`), mode BridgeInterface.
    BridgeInterface(String),
    /// Arrived on an interface whose name starts with this, mode InterfaceNamePrefix.
    InterfaceNamePrefix(String),
}

/// Node-level configuration of the renderer.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct NodeConfig {
    /// This node's name (endpoints with this nodeName are local).
    pub node_name: String,
    /// The node's primary IPs (one per family usually).
    pub node_ips: Vec<IpAddr>,
    /// All addresses configured on the node's interfaces (used with [`NodePortAddresses::Cidrs`]).
    pub local_addresses: Vec<IpAddr>,
    /// The node's labels (`topology.kubernetes.io/zone` is used for topology hints).
    pub node_labels: BTreeMap<String, String>,
    /// Pod networks for [`DetectLocal::Cidrs`]: `--cluster-cidr`, or the Node's podCIDRs.
    pub cluster_cidrs: Vec<IpNet>,
    /// The local traffic detector.
    pub detect_local: DetectLocal,
    /// `--masquerade-all`.
    pub masquerade_all: bool,
    /// `--nodeport-addresses`, resolved.
    pub nodeport_addresses: NodePortAddresses,
    /// Service CIDRs: traffic to an unallocated IP inside them is dropped.
    pub service_cidrs: Vec<IpNet>,
    /// Families to program.
    pub families: Vec<Family>,
}

impl NodeConfig {
    /// The node's zone label, if any.
    pub fn zone(&self) -> Option<&str> {
        self.node_labels
            .get("topology.kubernetes.io/zone")
            .map(String::as_str)
    }
}

/// Everything the renderer needs besides the node configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProxyState {
    /// Services by key.
    pub services: BTreeMap<ServiceKey, ServiceInfo>,
    /// EndpointSlices grouped by owning Service, then by slice name.
    pub slices: BTreeMap<ServiceKey, BTreeMap<String, EndpointSliceInfo>>,
}

impl ProxyState {
    /// Adds or replaces a Service.
    pub fn upsert_service(&mut self, svc: ServiceInfo) {
        self.services.insert(svc.key.clone(), svc);
    }

    /// Adds or replaces an EndpointSlice (a slice whose service label changed must be removed first).
    pub fn upsert_slice(&mut self, slice: EndpointSliceInfo) {
        let key = ServiceKey::new(&slice.namespace, &slice.service_name);
        self.slices
            .entry(key)
            .or_default()
            .insert(slice.name.clone(), slice);
    }

    /// Removes an EndpointSlice; returns it when it existed.
    pub fn remove_slice(&mut self, service: &ServiceKey, name: &str) -> Option<EndpointSliceInfo> {
        let slices = self.slices.get_mut(service)?;
        let removed = slices.remove(name);
        if slices.is_empty() {
            self.slices.remove(service);
        }
        removed
    }

    /// Makes the entries of `keys` (Services and their slices) equal to `source`'s: after a
    /// whole copy, applying every changed key keeps a copy identical to `source` at the cost
    /// of the changes alone.
    pub fn copy_keys_from(&mut self, source: &ProxyState, keys: &BTreeSet<ServiceKey>) {
        for key in keys {
            match source.services.get(key) {
                Some(svc) => {
                    self.services.insert(key.clone(), svc.clone());
                }
                None => {
                    self.services.remove(key);
                }
            }
            match source.slices.get(key) {
                Some(slices) => {
                    self.slices.insert(key.clone(), slices.clone());
                }
                None => {
                    self.slices.remove(key);
                }
            }
        }
    }

    /// Slices of one Service, in slice-name order.
    pub fn slices_for<'a>(
        &'a self,
        key: &ServiceKey,
    ) -> impl Iterator<Item = &'a EndpointSliceInfo> + 'a {
        self.slices.get(key).into_iter().flat_map(|m| m.values())
    }
}
