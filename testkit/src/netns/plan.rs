//! The address plan and the setup steps of a topology, computed without touching the kernel.
//!
//! | what | IPv4 | IPv6 |
//! |---|---|---|
//! | LAN (nodes + outside clients) | `192.168.200.0/24`, gateway `.1` on the LAN bridge | `fd00:200::/64`, gateway `::1` |
//! | node *i* (1-based) | `192.168.200.(10+i)` | `fd00:200::(10+i)` |
//! | outside client *j* (1-based) | `192.168.200.(100+j)` | `fd00:200::(100+j)` |
//! | cluster CIDR | `10.244.0.0/16` | `fd00:244::/32` |
//! | pod CIDR of node *i* | `10.244.i.0/24`, gateway `.1` on `cbr0` | `fd00:244:i::/64`, gateway `::1` |
//! | pods of node *i* | `10.244.i.2`, `.3`, … in creation order | `fd00:244:i::2`, `::3`, … |
//! | Service CIDR (ClusterIPs) | `10.96.0.0/16` | `fd00:96::/112` |
//! | external CIDR (LoadBalancer IPs, externalIPs) | `10.97.0.0/16` | `fd00:97::/112` |
//!
//! IPv6 numbers are written with the same digits as their IPv4 counterparts (node 1 is
//! `192.168.200.11` and `fd00:200::11`), which keeps test output readable. Every address lives
//! only inside namespaces the topology created, so no traffic ever leaves them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use super::error::{Error, Result};

/// Most nodes a topology can have (node addresses must stay below the outside clients').
pub const MAX_NODES: u8 = 50;
/// Most outside clients a topology can have.
pub const MAX_OUTSIDE: u8 = 50;
/// Most pods one node can ever create (host numbers 2..=254 of its /24).
pub const MAX_PODS_PER_NODE: u16 = 253;

/// An IP network in CIDR notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// A network from its address and prefix length; host bits are cleared.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(Error::InvalidSpec(format!(
                "prefix /{prefix} too long for {addr}"
            )));
        }
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Ok(Cidr { addr, prefix })
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Cidr::new(ip, self.prefix).is_ok_and(|c| c.addr == self.addr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidSpec(format!("not a CIDR: {s:?}"));
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        Cidr::new(a.parse().map_err(|_| bad())?, p.parse().map_err(|_| bad())?)
    }
}

/// IPv6 groups that read like the decimal IPv4 octet: 11 → `0x11`.
fn dec_as_hex(n: u16) -> u16 {
    // Every decimal number below 10 000 is a valid hex literal that fits a u16.
    u16::from_str_radix(&n.to_string(), 16).unwrap_or(n)
}

/// The LAN gateway (the LAN bridge's own address), IPv4.
pub const LAN_GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 1);
/// The LAN gateway, IPv6.
pub const LAN_GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 1);
/// LAN network, IPv4.
pub const LAN_V4: &str = "192.168.200.0/24";
/// LAN network, IPv6.
pub const LAN_V6: &str = "fd00:200::/64";
/// Cluster (all pods) CIDR, IPv4: what svcnet-proxy's `--cluster-cidr` should be.
pub const CLUSTER_CIDR_V4: &str = "10.244.0.0/16";
/// Cluster CIDR, IPv6.
pub const CLUSTER_CIDR_V6: &str = "fd00:244::/32";
/// Service (ClusterIP) CIDR, IPv4: what `--service-cluster-ip-range` should be.
pub const SERVICE_CIDR_V4: &str = "10.96.0.0/16";
/// Service CIDR, IPv6.
pub const SERVICE_CIDR_V6: &str = "fd00:96::/112";
/// External CIDR for LoadBalancer ingress IPs and externalIPs, IPv4.
pub const EXTERNAL_CIDR_V4: &str = "10.97.0.0/16";
/// External CIDR, IPv6.
pub const EXTERNAL_CIDR_V6: &str = "fd00:97::/112";

/// A node's LAN address, IPv4 (`index` is 1-based).
pub fn node_ipv4(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 200, 10 + index)
}

/// A node's LAN address, IPv6.
pub fn node_ipv6(index: u8) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfd00,
        0x200,
        0,
        0,
        0,
        0,
        0,
        dec_as_hex(10 + u16::from(index)),
    )
}

/// An outside client's LAN address, IPv4 (`index` is 1-based).
pub fn outside_ipv4(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 200, 100 + index)
}

/// An outside client's LAN address, IPv6.
pub fn outside_ipv6(index: u8) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfd00,
        0x200,
        0,
        0,
        0,
        0,
        0,
        dec_as_hex(100 + u16::from(index)),
    )
}

/// A node's pod CIDR, IPv4.
pub fn pod_cidr_v4(node: u8) -> Cidr {
    Cidr {
        addr: IpAddr::V4(Ipv4Addr::new(10, 244, node, 0)),
        prefix: 24,
    }
}

/// A node's pod CIDR, IPv6.
pub fn pod_cidr_v6(node: u8) -> Cidr {
    Cidr {
        addr: IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            0x244,
            dec_as_hex(node.into()),
            0,
            0,
            0,
            0,
            0,
        )),
        prefix: 64,
    }
}

/// Host `host` of a node's pod CIDR, IPv4 (1 is the gateway on `cbr0`).
pub fn pod_ipv4(node: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, node, host)
}

/// Host `host` of a node's pod CIDR, IPv6.
pub fn pod_ipv6(node: u8, host: u8) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfd00,
        0x244,
        dec_as_hex(node.into()),
        0,
        0,
        0,
        0,
        dec_as_hex(host.into()),
    )
}

/// Checks a pod name: a DNS-1123 label (it becomes part of a namespace name).
pub fn validate_pod_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSpec(format!(
            "pod name {name:?} must be a DNS-1123 label (lower-case letters, digits, '-', at most 63)"
        )))
    }
}

/// Namespace naming: `<prefix>-<pid>-<tag>-<role>`. The pid lets [`super::cleanup_stale`] tell
/// leftovers of dead processes from namespaces of tests that are still running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// The common prefix, `svn` by default.
    pub prefix: String,
    /// The creating process.
    pub pid: u32,
    /// A random tag distinguishing topologies of one process.
    pub tag: String,
}

impl Names {
    /// `<prefix>-<pid>-<tag>`, shared by every namespace of the topology.
    pub fn id(&self) -> String {
        format!("{}-{}-{}", self.prefix, self.pid, self.tag)
    }
    /// The LAN switch namespace.
    pub fn lan(&self) -> String {
        format!("{}-lan", self.id())
    }
    /// Node `index`'s namespace.
    pub fn node(&self, index: u8) -> String {
        format!("{}-node{index}", self.id())
    }
    /// Outside client `index`'s namespace.
    pub fn outside(&self, index: u8) -> String {
        format!("{}-out{index}", self.id())
    }
    /// A pod's namespace.
    pub fn pod(&self, name: &str) -> String {
        format!("{}-pod-{name}", self.id())
    }
}

/// Parses `<prefix>-<pid>-…` and returns the pid, if `name` has that shape.
pub fn owner_pid(prefix: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok()
}

/// One kernel-facing setup action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `ip netns add <name>`.
    AddNetns(String),
    /// `sysctl -w key=value …` inside a namespace.
    Sysctl {
        /// Target namespace.
        ns: String,
        /// `key=value` settings.
        settings: Vec<String>,
    },
    /// `ip -n <ns> -batch -` with these lines.
    Ip {
        /// Target namespace.
        ns: String,
        /// `ip` commands without the leading `ip`.
        lines: Vec<String>,
    },
}

fn sysctl_common() -> Vec<String> {
    // No duplicate address detection: addresses are usable at once, not after ~1 s.
    vec![
        "net.ipv6.conf.all.accept_dad=0".into(),
        "net.ipv6.conf.default.accept_dad=0".into(),
    ]
}

/// Steps that create the LAN switch namespace.
pub fn lan_steps(names: &Names) -> Vec<Step> {
    let ns = names.lan();
    let mut settings = sysctl_common();
    // The LAN is a plain switch: bridged frames must not traverse this namespace's netfilter.
    settings.extend([
        "net.bridge.bridge-nf-call-iptables=0".into(),
        "net.bridge.bridge-nf-call-ip6tables=0".into(),
        "net.bridge.bridge-nf-call-arptables=0".into(),
    ]);
    vec![
        Step::AddNetns(ns.clone()),
        Step::Sysctl {
            ns: ns.clone(),
            settings,
        },
        Step::Ip {
            ns,
            lines: vec![
                "link set lo up".into(),
                "link add br0 type bridge".into(),
                format!("addr add {LAN_GATEWAY_V4}/24 dev br0"),
                format!("addr add {LAN_GATEWAY_V6}/64 dev br0 nodad"),
                "link set br0 up".into(),
            ],
        },
    ]
}

/// Steps that create node `index` (of `count`), plugged into the LAN.
pub fn node_steps(names: &Names, index: u8, count: u8) -> Vec<Step> {
    let ns = names.node(index);
    let mut settings = sysctl_common();
    settings.extend([
        "net.ipv4.ip_forward=1".into(),
        "net.ipv6.conf.all.forwarding=1".into(),
        "net.ipv4.conf.all.send_redirects=0".into(),
        "net.ipv4.conf.default.send_redirects=0".into(),
        // Pods share cbr0, so a reply from one local pod to another is bridged, not routed:
        // like kubenet, let bridged traffic traverse netfilter so conntrack can undo DNAT.
        "net.bridge.bridge-nf-call-iptables=1".into(),
        "net.bridge.bridge-nf-call-ip6tables=1".into(),
    ]);
    let mut lines = vec![
        "link set lo up".into(),
        "link set eth0 up".into(),
        format!("addr add {}/24 dev eth0", node_ipv4(index)),
        format!("addr add {}/64 dev eth0 nodad", node_ipv6(index)),
        "link add cbr0 type bridge nf_call_iptables 1 nf_call_ip6tables 1".into(),
        format!("addr add {}/24 dev cbr0", pod_ipv4(index, 1)),
        format!("addr add {}/64 dev cbr0 nodad", pod_ipv6(index, 1)),
        "link set cbr0 up".into(),
        format!("route add 0.0.0.0/0 via {LAN_GATEWAY_V4}"),
        format!("route add ::/0 via {LAN_GATEWAY_V6}"),
    ];
    for other in (1..=count).filter(|&o| o != index) {
        lines.push(format!(
            "route add {} via {}",
            pod_cidr_v4(other),
            node_ipv4(other)
        ));
        lines.push(format!(
            "route add {} via {}",
            pod_cidr_v6(other),
            node_ipv6(other)
        ));
    }
    vec![
        Step::AddNetns(ns.clone()),
        Step::Sysctl {
            ns: ns.clone(),
            settings,
        },
        Step::Ip {
            ns: names.lan(),
            lines: vec![
                format!("link add n{index} type veth peer name eth0 netns {ns}"),
                format!("link set n{index} master br0"),
                format!("link set n{index} up"),
            ],
        },
        Step::Ip { ns, lines },
    ]
}

/// Steps that create a pod on node `node` with host number `host` and host-side veth `veth`.
pub fn pod_steps(names: &Names, name: &str, node: u8, host: u8, veth: &str) -> Vec<Step> {
    let ns = names.pod(name);
    vec![
        Step::AddNetns(ns.clone()),
        Step::Sysctl {
            ns: ns.clone(),
            settings: sysctl_common(),
        },
        Step::Ip {
            ns: names.node(node),
            lines: vec![
                format!("link add {veth} type veth peer name eth0 netns {ns}"),
                format!("link set {veth} master cbr0"),
                // With bridge netfilter, DNAT back to the sending pod (hairpin) is forwarded by
                // the bridge out of the port it came in on, which needs hairpin mode (as kubenet).
                format!("link set {veth} type bridge_slave hairpin on"),
                format!("link set {veth} up"),
            ],
        },
        Step::Ip {
            ns,
            lines: vec![
                "link set lo up".into(),
                "link set eth0 up".into(),
                format!("addr add {}/24 dev eth0", pod_ipv4(node, host)),
                format!("addr add {}/64 dev eth0 nodad", pod_ipv6(node, host)),
                format!("route add 0.0.0.0/0 via {}", pod_ipv4(node, 1)),
                format!("route add ::/0 via {}", pod_ipv6(node, 1)),
            ],
        },
    ]
}

/// Routes (`<cidr> via <node ip>`) that send Service and external CIDRs to node `via`.
pub fn outside_routes(via: u8) -> Vec<String> {
    vec![
        format!("{SERVICE_CIDR_V4} via {}", node_ipv4(via)),
        format!("{EXTERNAL_CIDR_V4} via {}", node_ipv4(via)),
        format!("{SERVICE_CIDR_V6} via {}", node_ipv6(via)),
        format!("{EXTERNAL_CIDR_V6} via {}", node_ipv6(via)),
    ]
}

/// Steps that create outside client `index`, routing Service and external CIDRs via node `via`.
pub fn outside_steps(names: &Names, index: u8, via: u8) -> Vec<Step> {
    let ns = names.outside(index);
    let mut lines = vec![
        "link set lo up".to_string(),
        "link set eth0 up".into(),
        format!("addr add {}/24 dev eth0", outside_ipv4(index)),
        format!("addr add {}/64 dev eth0 nodad", outside_ipv6(index)),
    ];
    lines.extend(
        outside_routes(via)
            .into_iter()
            .map(|r| format!("route add {r}")),
    );
    vec![
        Step::AddNetns(ns.clone()),
        Step::Sysctl {
            ns: ns.clone(),
            settings: sysctl_common(),
        },
        Step::Ip {
            ns: names.lan(),
            lines: vec![
                format!("link add o{index} type veth peer name eth0 netns {ns}"),
                format!("link set o{index} master br0"),
                format!("link set o{index} up"),
            ],
        },
        Step::Ip { ns, lines },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            prefix: "svn".into(),
            pid: 42,
            tag: "ab12".into(),
        }
    }

    #[test]
    fn addresses_follow_the_documented_plan() {
        assert_eq!(node_ipv4(1).to_string(), "192.168.200.11");
        assert_eq!(node_ipv6(1).to_string(), "fd00:200::11");
        assert_eq!(outside_ipv6(1).to_string(), "fd00:200::101");
        assert_eq!(pod_cidr_v4(2).to_string(), "10.244.2.0/24");
        assert_eq!(pod_cidr_v6(12).to_string(), "fd00:244:12::/64");
        assert_eq!(pod_ipv6(3, 17).to_string(), "fd00:244:3::17");
        let cluster: Cidr = CLUSTER_CIDR_V6.parse().unwrap();
        assert!(cluster.contains(pod_ipv6(MAX_NODES, 254).into()));
        assert!(CLUSTER_CIDR_V4
            .parse::<Cidr>()
            .unwrap()
            .contains(pod_ipv4(MAX_NODES, 254).into()));
        let lan: Cidr = LAN_V4.parse().unwrap();
        assert!(lan.contains(node_ipv4(MAX_NODES).into()));
        assert!(lan.contains(outside_ipv4(MAX_OUTSIDE).into()));
        assert!(node_ipv4(MAX_NODES) < outside_ipv4(1));
    }

    #[test]
    fn cidr_parsing_masks_host_bits_and_rejects_garbage() {
        let c: Cidr = "10.244.1.7/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.244.1.0/24");
        assert!(c.contains("10.244.1.200".parse().unwrap()));
        assert!(!c.contains("10.244.2.1".parse().unwrap()));
        assert!(!c.contains("fd00::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        assert_eq!("::/0".parse::<Cidr>().unwrap().prefix(), 0);
    }

    #[test]
    fn names_carry_the_owner_pid() {
        let n = names();
        assert_eq!(n.node(2), "svn-42-ab12-node2");
        assert_eq!(n.pod("web-0"), "svn-42-ab12-pod-web-0");
        assert_eq!(owner_pid("svn", &n.lan()), Some(42));
        assert_eq!(owner_pid("svn", "svnx-42-a-lan"), None);
        assert_eq!(owner_pid("svn", "svn-abc-a-lan"), None);
        assert_eq!(owner_pid("other", &n.lan()), None);
    }

    #[test]
    fn pod_names_are_dns_labels() {
        assert!(validate_pod_name("web-0").is_ok());
        for bad in ["", "Web", "a_b", "-a", "a-", "a/b", &"x".repeat(64)] {
            assert!(validate_pod_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nodes_route_other_pod_cidrs_via_their_lan_ips() {
        let steps = node_steps(&names(), 1, 3);
        let Some(Step::Ip { ns, lines }) = steps.last() else {
            panic!("last step must configure the node: {steps:?}");
        };
        assert_eq!(ns, "svn-42-ab12-node1");
        assert!(lines.contains(&"route add 10.244.2.0/24 via 192.168.200.12".to_string()));
        assert!(lines.contains(&"route add fd00:244:3::/64 via fd00:200::13".to_string()));
        assert!(!lines.iter().any(|l| l.contains("10.244.1.0/24 via")));
    }

    #[test]
    fn outside_routes_services_and_externals_via_the_chosen_node() {
        let steps = outside_steps(&names(), 1, 2);
        let Some(Step::Ip { lines, .. }) = steps.last() else {
            panic!("{steps:?}");
        };
        assert!(lines.contains(&"route add 10.96.0.0/16 via 192.168.200.12".to_string()));
        assert!(lines.contains(&"route add fd00:97::/112 via fd00:200::12".to_string()));
        // No route to pod CIDRs: the outside world cannot reach pods directly.
        assert!(!lines.iter().any(|l| l.contains("10.244.")));
    }
}
