//! [`L2Announcement`]: which LoadBalancer addresses svcnet-proxy announces on the nodes' LANs
//! (ARP for IPv4, Neighbour Discovery for IPv6), from which nodes and on which interfaces.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Condition, LabelSelector, ServiceIPClaim};

/// Label on every Lease of L2 announcement: `node` (a node's heartbeat) or `address` (the node
/// answering for an address), so that one watch (or `kubectl get lease -l`) finds them all.
pub const LEASE_KIND_LABEL: &str = "svcnet.io/l2-lease";
/// Name prefix of the address Leases.
pub const ADDRESS_LEASE_PREFIX: &str = "svcnet-l2-";

/// The name of the Lease naming the node that answers for `ip` (`svcnet-l2-<address>`, the
/// address spelled as in [`ServiceIPClaim::name_for`]).
pub fn address_lease_name(ip: std::net::IpAddr) -> String {
    format!("{ADDRESS_LEASE_PREFIX}{}", ServiceIPClaim::name_for(ip))
}

/// Which LoadBalancer addresses are announced on the LAN, by which nodes, on which interfaces.
///
/// An address is announced when its Service matches `serviceSelector` and, if `ipPools` is set,
/// the address lies in one of those pools. Exactly one eligible node answers for each address at a
/// time: a node matching `nodeSelector`, not cordoned, with a healthy proxy, and for
/// `externalTrafficPolicy: Local` Services a ready endpoint of its own. Several objects may select
/// the same address; their node sets and interfaces add up.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "svcnet.io",
    version = "v1alpha1",
    kind = "L2Announcement",
    plural = "l2announcements",
    shortname = "l2ann",
    category = "svcnet",
    status = "L2AnnouncementStatus",
    doc = "Announces LoadBalancer addresses on the nodes' LANs (ARP and IPv6 Neighbour Discovery).",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct L2AnnouncementSpec {
    /// Services whose LoadBalancer addresses are announced (absent = every LoadBalancer Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<LabelSelector>,
    /// Only addresses from these `LoadBalancerIPPool`s (empty = addresses of any pool).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_pools: Vec<String>,
    /// Nodes that may announce (absent = every node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// Interfaces to answer on: exact names, or regular expressions between slashes
    /// (`/^eth[0-9]+$/`). Empty = the interface that holds the node's IP address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
}

/// Observed state of an [`L2Announcement`].
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct L2AnnouncementStatus {
    /// `Ready`: the spec is valid (selectors and interface patterns parse); per-node problems
    /// (an interface missing on a node) are Events on this object from that node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// An interface entry of [`L2AnnouncementSpec::interfaces`], parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfacePattern {
    /// Exactly this name.
    Name(String),
    /// A regular expression (the text between the slashes), matched against the whole name.
    Regex(String),
}

impl InterfacePattern {
    /// Parses an entry: `/…/` is a regular expression, anything else a name.
    pub fn parse(entry: &str) -> InterfacePattern {
        match entry
            .strip_prefix('/')
            .and_then(|rest| rest.strip_suffix('/'))
        {
            Some(re) if !re.is_empty() => InterfacePattern::Regex(re.to_string()),
            _ => InterfacePattern::Name(entry.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_entries() {
        assert_eq!(
            InterfacePattern::parse("eth0"),
            InterfacePattern::Name("eth0".into())
        );
        assert_eq!(
            InterfacePattern::parse("/^eth[0-9]+$/"),
            InterfacePattern::Regex("^eth[0-9]+$".into())
        );
        assert_eq!(
            InterfacePattern::parse("/"),
            InterfacePattern::Name("/".into())
        );
        assert_eq!(
            InterfacePattern::parse("//"),
            InterfacePattern::Name("//".into())
        );
    }
}
