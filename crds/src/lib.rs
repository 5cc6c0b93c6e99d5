//! svcnet's CustomResourceDefinitions (group `svcnet.io`, version `v1alpha1`).
//!
//! * [`LoadBalancerIPPool`] — cluster-scoped pool of addresses that svcnet hands out as
//!   `status.loadBalancer.ingress` to Services of type LoadBalancer (bare-metal LB IPAM, as
//!   MetalLB's `IPAddressPool` and Cilium's `CiliumLoadBalancerIPPool` do).
//! * [`ServiceIPClaim`] — one object per allocated Service address (ClusterIP or LoadBalancer IP),
//!   named by the canonical address ([`ServiceIPClaim::name_for`]). Like upstream's
//!   `networking.k8s.io/v1` `IPAddress`, uniqueness comes from the object name: a create that
//!   fails with `AlreadyExists` means the address is taken.
//! * [`NodePortClaim`] — one object per allocated node port (NodePort or health-check NodePort),
//!   named by the port number ([`NodePortClaim::name_for`]).
//! * [`L2Announcement`] — which LoadBalancer addresses svcnet-proxy announces on the nodes' LANs
//!   (ARP / Neighbour Discovery), from which nodes, on which interfaces ([`l2`]).
//!
//! The claims are what makes the IPAM controller durable: they live in the API (etcd), survive
//! controller restarts and leader fail-over, and two replicas racing for the same value cannot both
//! win the create. See `controllers::ipam` for the full story.
//!
//! [`all`] returns every CRD; the `svcnet-crdgen` binary writes them to `manifests/crds/`, and a
//! test in this crate fails when the committed YAML is stale.

// kube-derive's repeated `printcolumn(type_ = ..)` arguments trip this lint falsely.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;
use std::net::IpAddr;

pub mod l2;
pub use l2::{L2Announcement, L2AnnouncementSpec, L2AnnouncementStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every svcnet CRD.
pub const GROUP: &str = "svcnet.io";
/// API version of every svcnet CRD.
pub const VERSION: &str = "v1alpha1";

/// Label put on every claim object svcnet's IPAM controller creates.
pub const MANAGED_BY_LABEL: &str = "svcnet.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] on claims.
pub const MANAGED_BY_IPAM: &str = "svcnet-ipam-controller";
/// Label with the IP family (`IPv4` / `IPv6`) of a [`ServiceIPClaim`].
pub const IP_FAMILY_LABEL: &str = "svcnet.io/ip-family";
/// Label with the purpose of a claim (see [`IpPurpose`], [`PortPurpose`]).
pub const PURPOSE_LABEL: &str = "svcnet.io/purpose";

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Serialising a CRD to YAML failed.
    #[error("failed to serialise CRD {name} to YAML: {source}")]
    Yaml {
        /// CRD name.
        name: String,
        /// Cause.
        #[source]
        source: serde_yaml::Error,
    },
    /// A pool entry could not be parsed.
    #[error("invalid address range {value:?}: {reason}")]
    InvalidRange {
        /// The offending text.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

// === LoadBalancerIPPool ===

/// A pool of addresses that svcnet assigns to Services of type LoadBalancer.
///
/// Addresses come from `cidrs` (every address of the block is usable unless `avoidBuggyIPs`)
/// and from explicit inclusive `ranges`. A pool serves a Service when it is not `disabled`, both
/// selectors match (an absent selector matches everything) and it is `autoAssign` or the Service
/// asks for it; pools are tried by `priority`, then name. Problems (an entry that does not
/// parse, overlap with another pool) are reported in `status.conditions`, never by rejecting the
/// object.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "svcnet.io",
    version = "v1alpha1",
    kind = "LoadBalancerIPPool",
    plural = "loadbalancerippools",
    shortname = "lbpool",
    category = "svcnet",
    status = "LoadBalancerIPPoolStatus",
    doc = "A pool of IP addresses that svcnet assigns to Services of type LoadBalancer.",
    printcolumn(name = "Disabled", type_ = "boolean", json_path = ".spec.disabled"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".status.size"),
    printcolumn(name = "Used", type_ = "integer", json_path = ".status.used"),
    printcolumn(name = "Free", type_ = "integer", json_path = ".status.free"),
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
pub struct LoadBalancerIPPoolSpec {
    /// CIDR blocks, IPv4 or IPv6 (e.g. `192.0.2.0/28`, `2001:db8:1::/120`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidrs: Vec<String>,
    /// Explicit inclusive ranges (`start` ≤ `stop`, same family).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<AddressRange>,
    /// Only Services whose labels match get addresses from this pool (absent = all Services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<LabelSelector>,
    /// Only Services in namespaces whose labels match get addresses from this pool (absent = all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// A disabled pool hands out no new addresses; addresses already assigned stay assigned.
    #[serde(default)]
    pub disabled: bool,
    /// Skip IPv4 addresses ending in `.0` and `.255` (some client stacks mishandle them),
    /// as MetalLB's option of the same name does.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,
    /// Whether the pool hands out addresses to Services that do not ask for it (default `true`).
    /// With `false` it only serves Services that request one of its addresses
    /// (`svcnet.io/load-balancer-ips`, `spec.loadBalancerIP`) or name it (`svcnet.io/lb-pool`),
    /// or do so through the MetalLB annotations svcnet reads as aliases, as MetalLB's
    /// `autoAssign` does.
    #[serde(default = "default_true")]
    pub auto_assign: bool,
    /// The order in which pools are tried for a Service, as MetalLB's
    /// `serviceAllocation.priority`: the lowest value first. Pools without a priority (or with
    /// `0`) come after every pool with one, those with a selector before those without; ties go
    /// by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub priority: Option<i32>,
}

impl Default for LoadBalancerIPPoolSpec {
    /// An empty pool with the API defaults (enabled, `autoAssign: true`).
    fn default() -> Self {
        LoadBalancerIPPoolSpec {
            cidrs: Vec::new(),
            ranges: Vec::new(),
            service_selector: None,
            namespace_selector: None,
            disabled: false,
            avoid_buggy_ips: false,
            auto_assign: true,
            priority: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// An inclusive address range.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddressRange {
    /// First address of the range.
    pub start: String,
    /// Last address of the range (inclusive).
    pub stop: String,
}

/// Observed state of a [`LoadBalancerIPPool`], written by svcnet's IPAM controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerIPPoolStatus {
    /// Number of usable addresses (saturates at 2^63-1 for huge IPv6 pools).
    #[serde(default)]
    pub size: i64,
    /// Number of addresses currently assigned to Services.
    #[serde(default)]
    pub used: i64,
    /// `size - used`.
    #[serde(default)]
    pub free: i64,
    /// `metadata.generation` the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (the pool parses and can serve), `Overlap` (addresses shared with another pool or
    /// with the Service CIDR), `Exhausted` (no free address left).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A status condition (same shape as `metav1.Condition`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, CamelCase.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable CamelCase reason.
    #[serde(default)]
    pub reason: String,
    /// Human-readable explanation.
    #[serde(default)]
    pub message: String,
    /// RFC 3339 time of the last status change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A Kubernetes label selector (same shape and semantics as `metav1.LabelSelector`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must be present with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements; all must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One set-based requirement of a label selector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for `In` / `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl LabelSelector {
    /// Whether `labels` satisfy this selector. An unknown operator matches nothing (as the
    /// apiserver would have rejected it; we refuse to guess).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator.as_str() {
                    "In" => value.is_some_and(|v| r.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !r.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

// === ServiceIPClaim ===

/// What an IP claim is for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum IpPurpose {
    /// A ClusterIP from `--service-cluster-ip-range`.
    ClusterIP,
    /// A LoadBalancer ingress IP from a [`LoadBalancerIPPool`].
    LoadBalancer,
}

impl IpPurpose {
    /// Value used in labels and printer columns.
    pub fn as_str(self) -> &'static str {
        match self {
            IpPurpose::ClusterIP => "ClusterIP",
            IpPurpose::LoadBalancer => "LoadBalancer",
        }
    }
}

/// A reference to the Service that holds a claim.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRef {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// UID of the Service (a recreated Service with the same name is a different owner).
    #[serde(default)]
    pub uid: String,
}

/// One allocated Service address. The object's name is the address ([`ServiceIPClaim::name_for`]),
/// so the API server's name uniqueness is what keeps two Services (or two controller replicas)
/// from being handed the same address.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "svcnet.io",
    version = "v1alpha1",
    kind = "ServiceIPClaim",
    plural = "serviceipclaims",
    shortname = "sipc",
    category = "svcnet",
    doc = "One allocated Service address (ClusterIP or LoadBalancer IP), named by the address.",
    printcolumn(name = "IP", type_ = "string", json_path = ".spec.ip"),
    printcolumn(name = "Purpose", type_ = "string", json_path = ".spec.purpose"),
    printcolumn(
        name = "Namespace",
        type_ = "string",
        json_path = ".spec.parentRefs[0].namespace"
    ),
    printcolumn(
        name = "Service",
        type_ = "string",
        json_path = ".spec.parentRefs[0].name"
    ),
    printcolumn(
        name = "Pool",
        type_ = "string",
        json_path = ".spec.pool",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceIPClaimSpec {
    /// The address, in canonical text form.
    pub ip: String,
    /// What the address is used for.
    pub purpose: IpPurpose,
    /// The pool a LoadBalancer address came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// For LoadBalancer addresses shared between Services: the `svcnet.io/sharing-key` value all
    /// parents carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharing_key: Option<String>,
    /// The Services holding the address (exactly one, except for shared LoadBalancer IPs).
    pub parent_refs: Vec<ServiceRef>,
}

impl ServiceIPClaim {
    /// The object name for `ip`: the canonical IPv4 text (`10.96.0.10`), or the fully expanded
    /// IPv6 address with `-` for `:` (`2001-0db8-0000-0000-0000-0000-0000-000a`), because `:` is
    /// not allowed in object names. One address has exactly one name.
    pub fn name_for(ip: IpAddr) -> String {
        match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => v6
                .segments()
                .iter()
                .map(|s| format!("{s:04x}"))
                .collect::<Vec<_>>()
                .join("-"),
        }
    }

    /// Inverse of [`ServiceIPClaim::name_for`]; `None` for names it never produces.
    pub fn ip_from_name(name: &str) -> Option<IpAddr> {
        if let Ok(v4) = name.parse::<std::net::Ipv4Addr>() {
            return (v4.to_string() == name).then_some(IpAddr::V4(v4));
        }
        let parts: Vec<&str> = name.split('-').collect();
        if parts.len() != 8 {
            return None;
        }
        let mut segs = [0u16; 8];
        for (seg, part) in segs.iter_mut().zip(&parts) {
            if part.len() != 4 || part.chars().any(|c| c.is_ascii_uppercase()) {
                return None;
            }
            *seg = u16::from_str_radix(part, 16).ok()?;
        }
        Some(IpAddr::V6(std::net::Ipv6Addr::from(segs)))
    }
}

// === NodePortClaim ===

/// What a node-port claim is for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum PortPurpose {
    /// `spec.ports[*].nodePort` (one number may serve several protocols of one Service).
    NodePort,
    /// `spec.healthCheckNodePort`.
    HealthCheckNodePort,
}

impl PortPurpose {
    /// Value used in labels and printer columns.
    pub fn as_str(self) -> &'static str {
        match self {
            PortPurpose::NodePort => "NodePort",
            PortPurpose::HealthCheckNodePort => "HealthCheckNodePort",
        }
    }
}

/// One allocated node port, named by the port number ([`NodePortClaim::name_for`]).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "svcnet.io",
    version = "v1alpha1",
    kind = "NodePortClaim",
    plural = "nodeportclaims",
    shortname = "npc",
    category = "svcnet",
    doc = "One allocated node port (NodePort or health-check NodePort), named by the port number.",
    printcolumn(name = "Port", type_ = "integer", json_path = ".spec.port"),
    printcolumn(name = "Purpose", type_ = "string", json_path = ".spec.purpose"),
    printcolumn(
        name = "Namespace",
        type_ = "string",
        json_path = ".spec.parentRef.namespace"
    ),
    printcolumn(name = "Service", type_ = "string", json_path = ".spec.parentRef.name"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NodePortClaimSpec {
    /// The port number.
    pub port: i32,
    /// What the port is used for.
    pub purpose: PortPurpose,
    /// The Service holding the port.
    pub parent_ref: ServiceRef,
}

impl NodePortClaim {
    /// The object name for `port`: its decimal number.
    pub fn name_for(port: u16) -> String {
        port.to_string()
    }

    /// Inverse of [`NodePortClaim::name_for`].
    pub fn port_from_name(name: &str) -> Option<u16> {
        let port: u16 = name.parse().ok()?;
        (port.to_string() == name).then_some(port)
    }
}

// === generation ===

/// Every svcnet CRD, in a stable order.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        LoadBalancerIPPool::crd(),
        ServiceIPClaim::crd(),
        NodePortClaim::crd(),
        L2Announcement::crd(),
    ]
}

/// `(file name, YAML text)` for every CRD, as written to `manifests/crds/`.
pub fn render_all() -> Result<Vec<(String, String)>> {
    all()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let body = serde_yaml::to_string(&crd).map_err(|source| Error::Yaml {
                name: name.clone(),
                source,
            })?;
            let text = format!(
                "# Generated by `cargo run -p svcnet-crds --bin svcnet-crdgen`; do not edit.\n{body}"
            );
            Ok((format!("{name}.yaml"), text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_names_round_trip_and_are_valid_object_names() {
        for text in [
            "10.96.0.10",
            "0.0.0.0",
            "2001:db8::a",
            "::1",
            "fe80::1:2:3:4",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            let name = ServiceIPClaim::name_for(ip);
            assert_eq!(ServiceIPClaim::ip_from_name(&name), Some(ip), "{name}");
            assert!(name
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase() || c == '-' || c == '.'));
            assert!(name.starts_with(|c: char| c.is_ascii_alphanumeric()));
            assert!(name.ends_with(|c: char| c.is_ascii_alphanumeric()));
        }
        assert_eq!(
            ServiceIPClaim::name_for("2001:db8::a".parse().unwrap()),
            "2001-0db8-0000-0000-0000-0000-0000-000a"
        );
        assert_eq!(ServiceIPClaim::ip_from_name("010.1.2.3"), None);
        assert_eq!(ServiceIPClaim::ip_from_name("2001-db8-0-0-0-0-0-a"), None);
        assert_eq!(ServiceIPClaim::ip_from_name("web"), None);
    }

    #[test]
    fn port_names_round_trip() {
        assert_eq!(NodePortClaim::name_for(30080), "30080");
        assert_eq!(NodePortClaim::port_from_name("30080"), Some(30080));
        assert_eq!(NodePortClaim::port_from_name("030080"), None);
        assert_eq!(NodePortClaim::port_from_name("70000"), None);
    }

    #[test]
    fn label_selector_semantics() {
        let labels: BTreeMap<String, String> = [("app", "web"), ("tier", "fe")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let sel = |ml: &[(&str, &str)], ex: &[(&str, &str, &[&str])]| LabelSelector {
            match_labels: ml
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            match_expressions: ex
                .iter()
                .map(|(k, op, vs)| LabelSelectorRequirement {
                    key: k.to_string(),
                    operator: op.to_string(),
                    values: vs.iter().map(|v| v.to_string()).collect(),
                })
                .collect(),
        };
        assert!(sel(&[], &[]).matches(&labels));
        assert!(sel(&[("app", "web")], &[]).matches(&labels));
        assert!(!sel(&[("app", "db")], &[]).matches(&labels));
        assert!(sel(&[], &[("tier", "In", &["fe", "be"])]).matches(&labels));
        assert!(!sel(&[], &[("tier", "NotIn", &["fe"])]).matches(&labels));
        assert!(sel(&[], &[("zone", "NotIn", &["a"])]).matches(&labels));
        assert!(sel(&[], &[("app", "Exists", &[])]).matches(&labels));
        assert!(sel(&[], &[("zone", "DoesNotExist", &[])]).matches(&labels));
        assert!(!sel(&[], &[("app", "Bogus", &[])]).matches(&labels));
    }

    #[test]
    fn crds_are_cluster_scoped_with_expected_names() {
        let crds = all();
        let names: Vec<_> = crds
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "loadbalancerippools.svcnet.io",
                "serviceipclaims.svcnet.io",
                "nodeportclaims.svcnet.io",
                "l2announcements.svcnet.io"
            ]
        );
        for crd in &crds {
            assert_eq!(crd.spec.scope, "Cluster");
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.versions[0].name, VERSION);
        }
        let pool = &crds[0].spec.versions[0];
        assert!(pool.subresources.as_ref().unwrap().status.is_some());
        assert_eq!(pool.additional_printer_columns.as_ref().unwrap().len(), 6);
    }
}
