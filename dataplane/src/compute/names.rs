//! Constant nftables names and the safe derivation of names and comments from object data.
//!
//! Every name that is built from Kubernetes data is a fixed prefix plus a hex SHA-256 digest, so no
//! character of a namespace, Service name, port name or annotation ever reaches an nft script through a
//! name. Comments are sanitised to a small character set by [`comment`].

use crate::types::Protocol;

use sha2::{Digest, Sha256};

/// Table name (one table per family: `ip svcnet`, `ip6 svcnet`).
pub const TABLE: &str = "svcnet";
/// Table comment.
pub const TABLE_COMMENT: &str = "rules for svcnet-proxy";

/// Verdict map: (service IP . proto . port) → entry chain.
pub const SERVICE_IPS: &str = "service-ips";
/// Verdict map: (proto . nodePort) → entry chain.
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
/// Verdict map: (service IP . proto . port) → reject/drop for Services without usable endpoints.
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
/// Verdict map: (proto . nodePort) → reject/drop.
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
/// Set of active ClusterIPs.
pub const CLUSTER_IPS: &str = "cluster-ips";
/// Set of node addresses that accept NodePorts (only with CIDR `--nodeport-addresses`).
pub const NODEPORT_IPS: &str = "nodeport-ips";
/// Set of (LB IP . proto . port) protected by loadBalancerSourceRanges.
pub const FIREWALL_IPS: &str = "firewall-ips";
/// Interval set of (LB IP . proto . port . allowed source range).
pub const FIREWALL_ALLOW: &str = "firewall-allow";
/// The four backend lists. Each is one map per transport protocol (`backends-tcp`, `backends-udp`,
/// `backends-sctp`, …): nft 1.0.6 derives the DNAT's transport-protocol check from the map's
/// declared value type (`ip daddr . tcp dport` → "TCP only"), and a `th dport` value type cannot be
/// read back by a later transaction ("conflicting protocols specified: ip vs. th"). So each
/// protocol gets its own map whose value type names that protocol, keyed without the protocol
/// (the map already implies it), and reached from its own per-protocol shared chains (`lb-tcp-N`, …).
/// A map is declared only while some Service uses it: on nft 1.0.6 every declared set adds to the
/// cost of a full load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendList {
    /// Map (VIP . port . slot) → (endpoint IP . port), the primary list of each VIP.
    Cluster,
    /// Map (VIP . port . slot) → (endpoint IP . port), node-local list for ETP=Local VIPs.
    Local,
    /// Map (nodePort . slot) → endpoint, cluster list.
    NodePort,
    /// Map (nodePort . slot) → endpoint, local list.
    NodePortLocal,
}

impl BackendList {
    /// Every list.
    pub const ALL: [BackendList; 4] = [
        BackendList::Cluster,
        BackendList::Local,
        BackendList::NodePort,
        BackendList::NodePortLocal,
    ];

    /// Whether the map is keyed by nodePort (no VIP in the key).
    pub fn is_nodeport(self) -> bool {
        matches!(self, BackendList::NodePort | BackendList::NodePortLocal)
    }

    /// Name of this list's map for `proto`.
    pub fn map(self, proto: Protocol) -> &'static str {
        use BackendList::*;
        use Protocol::*;
        match (self, proto) {
            (Cluster, Tcp) => "backends-tcp",
            (Cluster, Udp) => "backends-udp",
            (Cluster, Sctp) => "backends-sctp",
            (Local, Tcp) => "local-backends-tcp",
            (Local, Udp) => "local-backends-udp",
            (Local, Sctp) => "local-backends-sctp",
            (NodePort, Tcp) => "nodeport-backends-tcp",
            (NodePort, Udp) => "nodeport-backends-udp",
            (NodePort, Sctp) => "nodeport-backends-sctp",
            (NodePortLocal, Tcp) => "nodeport-local-backends-tcp",
            (NodePortLocal, Udp) => "nodeport-local-backends-udp",
            (NodePortLocal, Sctp) => "nodeport-local-backends-sctp",
        }
    }
}
/// Set of (endpoint IP . endpoint IP) pairs for hairpin masquerade.
pub const HAIRPIN: &str = "hairpin";
/// Interval set of pod CIDRs (`--cluster-cidr`).
pub const CLUSTER_CIDRS: &str = "cluster-cidrs";
/// Interval set of Service CIDRs.
pub const SERVICE_CIDRS: &str = "service-cidrs";

/// Regular chains.
pub const SERVICES: &str = "services";
/// Masquerade marking chain.
pub const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
/// Postrouting masquerade chain.
pub const MASQUERADING: &str = "masquerading";
/// Source-range check.
pub const FIREWALL_CHECK: &str = "firewall-check";
/// No-endpoint check for service IPs.
pub const SERVICE_ENDPOINTS_CHECK: &str = "service-endpoints-check";
/// No-endpoint check for NodePorts.
pub const NODEPORT_ENDPOINTS_CHECK: &str = "nodeport-endpoints-check";
/// Wrong-port / unallocated ClusterIP check.
pub const CLUSTER_IPS_CHECK: &str = "cluster-ips-check";
/// Holds a single `reject`.
pub const REJECT_CHAIN: &str = "reject-chain";

/// The masquerade mark bit (upstream default bit 14).
pub const MASQ_MARK: &str = "0x00004000";

/// Shared chain: pick one of `n` entries of the [`BackendList::Cluster`] map of `proto`.
pub fn lb(proto: Protocol, n: usize) -> String {
    format!("lb-{}-{n}", proto.nft())
}
/// Shared chain: pick one of `n` entries of the [`BackendList::Local`] map of `proto`.
pub fn local_lb(proto: Protocol, n: usize) -> String {
    format!("local-lb-{}-{n}", proto.nft())
}
/// Shared chain: pick one of `n` entries of the [`BackendList::NodePort`] map of `proto`.
pub fn np_lb(proto: Protocol, n: usize) -> String {
    format!("np-lb-{}-{n}", proto.nft())
}
/// Shared chain: pick one of `n` entries of the [`BackendList::NodePortLocal`] map of `proto`.
pub fn np_local_lb(proto: Protocol, n: usize) -> String {
    format!("np-local-lb-{}-{n}", proto.nft())
}
/// Shared ClusterIP entry chain (masquerade rule, then [`lb`]).
pub fn cluster_ip_entry(proto: Protocol, n: usize) -> String {
    format!("cip-{}-{n}", proto.nft())
}
/// Shared external entry chain, ETP=Cluster.
pub fn ext(proto: Protocol, n: usize) -> String {
    format!("ext-{}-{n}", proto.nft())
}
/// Shared external entry chain, ETP=Local.
pub fn ext_local(proto: Protocol, n: usize, m: usize) -> String {
    format!("ext-local-{}-{n}-{m}", proto.nft())
}
/// Shared NodePort entry chain, ETP=Cluster.
pub fn np_ext(proto: Protocol, n: usize) -> String {
    format!("np-ext-{}-{n}", proto.nft())
}
/// Shared NodePort entry chain, ETP=Local.
pub fn np_ext_local(proto: Protocol, n: usize, m: usize) -> String {
    format!("np-ext-local-{}-{n}-{m}", proto.nft())
}

/// First 16 hex digits of SHA-256 over `parts` joined with NUL (NUL cannot occur in Kubernetes names).
pub fn hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h.update([0u8]);
        }
        h.update(p.as_bytes());
    }
    let digest = h.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes a string safe to place inside a double-quoted nft comment: keeps `[A-Za-z0-9._/:-]`,
/// replaces everything else with `_`, and truncates to nft's 128-byte comment limit.
pub fn comment(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | ':' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(120)
        .collect()
}

/// True when `s` is a name our model may emit: ASCII letter first, then `[A-Za-z0-9_.-]`, at most 200 bytes.
pub fn is_valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && s.len() <= 200
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// True when `s` may appear as a rule / element fragment: printable ASCII only, no `;`, `#`,
/// single quotes, backslashes or newlines, and double quotes only around an interface name
/// (see [`quoted_interface_names_ok`]); comments are added by the model, not inside fragments.
pub fn is_valid_fragment(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| (' '..='~').contains(&c) && !matches!(c, ';' | '#' | '\'' | '\\' | '`' | '$'))
        && quoted_interface_names_ok(s)
}

/// Double quotes may only enclose the interface name of an `iifname` match (`iifname "cbr0"`,
/// `iifname != "veth*"`), because an unquoted name that is also an nft keyword (`tcp`, `meta`)
/// does not parse. The name is 1 to 15 of `[A-Za-z0-9_.-]`, optionally followed by `*` (a
/// prefix match), so nothing inside the quotes is nft syntax.
pub fn quoted_interface_names_ok(s: &str) -> bool {
    let parts: Vec<&str> = s.split('"').collect();
    if parts.len().is_multiple_of(2) {
        return false;
    }
    parts
        .iter()
        .enumerate()
        .skip(1)
        .step_by(2)
        .all(|(i, inside)| {
            let before = parts[i - 1];
            let name = inside.strip_suffix('*').unwrap_or(inside);
            (before.ends_with("iifname ") || before.ends_with("iifname != "))
                && (1..=15).contains(&name.len())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_comment_is_sanitised() {
        let hostile = "ns\"; flush ruleset; #\n}{ ünïcødé $(rm -rf /)";
        let c = comment(hostile);
        assert!(c
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/:-".contains(c)));
        assert!(is_valid_fragment(&c));
    }

    #[test]
    fn hashes_are_stable_and_distinct() {
        assert_eq!(hash(&["a", "b"]), hash(&["a", "b"]));
        assert_ne!(hash(&["a", "b"]), hash(&["ab"]));
        assert_eq!(hash(&["x"]).len(), 16);
        assert!(is_valid_name(&format!("aff-{}", hash(&["ns", "\"; drop"]))));
    }

    #[test]
    fn names_and_fragments_validation() {
        assert!(is_valid_name(&lb(Protocol::Tcp, 10)));
        assert!(!is_valid_name("a b"));
        assert!(!is_valid_name("a;b"));
        assert!(!is_valid_name("1abc"));
        assert!(is_valid_fragment(
            "ip daddr . meta l4proto . th dport vmap @service-ips"
        ));
        assert!(!is_valid_fragment("accept; flush ruleset"));
        assert!(!is_valid_fragment("accept\nflush ruleset"));
        assert!(!is_valid_fragment("comment \"x\""));
        assert!(is_valid_fragment(
            "iifname != \"cbr0\" jump mark-for-masquerade"
        ));
        assert!(is_valid_fragment("iifname \"veth*\" goto x"));
        for bad in [
            "iifname \"a b\"",
            "iifname \"cbr0",
            "iifname \"\"",
            "iifname \"*\"",
            "iifname \"v*x\"",
            "iifname \"sixteen-chars-xx\"",
            "iifname \"cbr0\" comment \"x\"",
        ] {
            assert!(!is_valid_fragment(bad), "{bad}");
        }
    }
}
