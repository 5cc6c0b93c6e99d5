//! What lives in a topology: nodes, pods, outside clients (each a [`Place`] to run things in),
//! and the ports an echo server listens on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::netns::exec::Netns;
use crate::netns::plan::{self, Cidr};

/// Ports an echo server listens on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EchoPorts {
    /// TCP ports.
    pub tcp: Vec<u16>,
    /// UDP ports.
    pub udp: Vec<u16>,
    /// SCTP ports (raw-socket SCTP, see [`crate::netns::sctp`]).
    pub sctp: Vec<u16>,
}

impl EchoPorts {
    /// The given TCP and UDP ports (no SCTP).
    pub fn new(tcp: &[u16], udp: &[u16]) -> Self {
        EchoPorts {
            tcp: tcp.to_vec(),
            udp: udp.to_vec(),
            sctp: Vec::new(),
        }
    }

    /// Adds SCTP ports.
    pub fn with_sctp(mut self, sctp: &[u16]) -> Self {
        self.sctp.extend_from_slice(sctp);
        self
    }

    /// No echo server at all.
    pub fn none() -> Self {
        EchoPorts::default()
    }

    /// Whether there is nothing to listen on.
    pub fn is_empty(&self) -> bool {
        self.tcp.is_empty() && self.udp.is_empty() && self.sctp.is_empty()
    }
}

/// Anything that lives in a namespace of the topology: a [`Node`], a [`Pod`], an [`Outside`]
/// client, or a bare [`Netns`].
pub trait Place {
    /// The namespace.
    fn netns(&self) -> &Netns;
    /// Its own addresses (what an echo server started there binds to); empty for a bare
    /// namespace, which makes the echo server bind the dual-stack wildcard.
    fn ips(&self) -> Vec<IpAddr>;
    /// A short label for log file names.
    fn label(&self) -> String;
}

impl Place for Netns {
    fn netns(&self) -> &Netns {
        self
    }
    fn ips(&self) -> Vec<IpAddr> {
        Vec::new()
    }
    fn label(&self) -> String {
        self.name().to_string()
    }
}

/// A node: eth0 on the LAN, `cbr0` holding the gateway of its pod CIDR, forwarding on.
#[derive(Clone, Debug)]
pub struct Node {
    pub(super) index: u8,
    pub(super) name: String,
    pub(super) netns: Netns,
}

impl Node {
    /// 1-based position in the topology.
    pub fn index(&self) -> u8 {
        self.index
    }
    /// The Kubernetes node name, `node<index>` (use it for `--hostname-override` and Node objects).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The node's namespace (where svcnet-proxy runs).
    pub fn netns(&self) -> &Netns {
        &self.netns
    }
    /// LAN address (eth0), IPv4: the node's InternalIP.
    pub fn ipv4(&self) -> Ipv4Addr {
        plan::node_ipv4(self.index)
    }
    /// LAN address (eth0), IPv6.
    pub fn ipv6(&self) -> Ipv6Addr {
        plan::node_ipv6(self.index)
    }
    /// Pod CIDR, IPv4 (`spec.podCIDRs[0]`).
    pub fn pod_cidr_v4(&self) -> Cidr {
        plan::pod_cidr_v4(self.index)
    }
    /// Pod CIDR, IPv6 (`spec.podCIDRs[1]`).
    pub fn pod_cidr_v6(&self) -> Cidr {
        plan::pod_cidr_v6(self.index)
    }
}

impl Place for Node {
    fn netns(&self) -> &Netns {
        &self.netns
    }
    fn ips(&self) -> Vec<IpAddr> {
        vec![self.ipv4().into(), self.ipv6().into()]
    }
    fn label(&self) -> String {
        self.name.clone()
    }
}

/// A pod: its own namespace, eth0 bridged into its node's `cbr0`, default routes via the node.
#[derive(Clone, Debug)]
pub struct Pod {
    pub(super) name: String,
    pub(super) node: u8,
    pub(super) host: u8,
    pub(super) netns: Netns,
    pub(super) host_veth: String,
}

impl Pod {
    /// The pod name (also the echo server's `--name`).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Index of the node it runs on.
    pub fn node_index(&self) -> u8 {
        self.node
    }
    /// Name of the node it runs on (`spec.nodeName`).
    pub fn node_name(&self) -> String {
        format!("node{}", self.node)
    }
    /// The pod's namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }
    /// Pod IP, IPv4.
    pub fn ipv4(&self) -> Ipv4Addr {
        plan::pod_ipv4(self.node, self.host)
    }
    /// Pod IP, IPv6.
    pub fn ipv6(&self) -> Ipv6Addr {
        plan::pod_ipv6(self.node, self.host)
    }
    /// Name of the host-side veth in the node namespace (enslaved to `cbr0`).
    pub fn host_veth(&self) -> &str {
        &self.host_veth
    }
}

impl Place for Pod {
    fn netns(&self) -> &Netns {
        &self.netns
    }
    fn ips(&self) -> Vec<IpAddr> {
        vec![self.ipv4().into(), self.ipv6().into()]
    }
    fn label(&self) -> String {
        format!("pod-{}", self.name)
    }
}

/// A client outside the cluster: on the LAN, not a node, routes Service and external CIDRs via
/// one node.
#[derive(Clone, Debug)]
pub struct Outside {
    pub(super) index: u8,
    pub(super) via: u8,
    pub(super) netns: Netns,
}

impl Outside {
    /// 1-based position among outside clients.
    pub fn index(&self) -> u8 {
        self.index
    }
    /// The node its Service / external routes point to.
    pub fn via_node(&self) -> u8 {
        self.via
    }
    /// Its namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }
    /// Its address, IPv4.
    pub fn ipv4(&self) -> Ipv4Addr {
        plan::outside_ipv4(self.index)
    }
    /// Its address, IPv6.
    pub fn ipv6(&self) -> Ipv6Addr {
        plan::outside_ipv6(self.index)
    }
}

impl Place for Outside {
    fn netns(&self) -> &Netns {
        &self.netns
    }
    fn ips(&self) -> Vec<IpAddr> {
        vec![self.ipv4().into(), self.ipv6().into()]
    }
    fn label(&self) -> String {
        format!("out{}", self.index)
    }
}
