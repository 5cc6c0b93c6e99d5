//! The parts of a Service the IPAM controller reads and writes, converted at the boundary.
//!
//! [`SvcView::from_service`] turns a `core/v1` Service into a plain struct with only the fields
//! allocation depends on; the planners in [`super::plan`] work on this struct, never on the API
//! type, so they are plain functions tested without any API server.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;

/// Annotation listing the LoadBalancer IPs a Service asks for (comma-separated, one per family
/// at most). Takes precedence over `spec.loadBalancerIP`.
pub const LB_IPS_ANNOTATION: &str = "svcnet.io/load-balancer-ips";
/// Annotation whose value lets several Services share LoadBalancer IPs (MetalLB semantics: same
/// key, no two Services using the same port/protocol, compatible traffic policies).
pub const SHARING_KEY_ANNOTATION: &str = "svcnet.io/sharing-key";
/// Annotation naming the pool a Service wants its LoadBalancer IPs from (optional).
pub const LB_POOL_ANNOTATION: &str = "svcnet.io/lb-pool";

// Charts written for MetalLB set its annotations; svcnet reads them as aliases of its own. Each
// list is in precedence order: svcnet's own annotation, then MetalLB's current `metallb.io/`
// name, then its older `metallb.universe.tf/` one (MetalLB itself prefers the newer name too).
// The first one with a non-blank value is used; a blank value counts as unset.

/// Annotations read for the requested LoadBalancer IPs, in precedence order.
pub const LB_IPS_ANNOTATIONS: [&str; 3] = [
    LB_IPS_ANNOTATION,
    "metallb.io/loadBalancerIPs",
    "metallb.universe.tf/loadBalancerIPs",
];
/// Annotations read for the sharing key, in precedence order.
pub const SHARING_KEY_ANNOTATIONS: [&str; 3] = [
    SHARING_KEY_ANNOTATION,
    "metallb.io/allow-shared-ip",
    "metallb.universe.tf/allow-shared-ip",
];
/// Annotations read for the pool name, in precedence order.
pub const LB_POOL_ANNOTATIONS: [&str; 3] = [
    LB_POOL_ANNOTATION,
    "metallb.io/address-pool",
    "metallb.universe.tf/address-pool",
];
/// svcnet's LoadBalancer class.
pub const LB_CLASS: &str = "svcnet.io/lb";

/// An IP family (`IPv4` / `IPv6`).
pub use ipam::IpFamily as Family;

/// Parses a Kubernetes `IPFamily` string.
pub fn parse_family(s: &str) -> Option<Family> {
    match s {
        "IPv4" => Some(Family::V4),
        "IPv6" => Some(Family::V6),
        _ => None,
    }
}

/// The family of an address.
pub fn family_of(ip: IpAddr) -> Family {
    match ip {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

/// The other family.
pub fn other_family(f: Family) -> Family {
    match f {
        Family::V4 => Family::V6,
        Family::V6 => Family::V4,
    }
}

/// `spec.ipFamilyPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// One family.
    SingleStack,
    /// Two families when the cluster has them, else one.
    PreferDualStack,
    /// Two families or an error.
    RequireDualStack,
}

impl Policy {
    /// Parses the API string.
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "SingleStack" => Some(Policy::SingleStack),
            "PreferDualStack" => Some(Policy::PreferDualStack),
            "RequireDualStack" => Some(Policy::RequireDualStack),
            _ => None,
        }
    }

    /// The API string.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::SingleStack => "SingleStack",
            Policy::PreferDualStack => "PreferDualStack",
            Policy::RequireDualStack => "RequireDualStack",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `spec.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvcType {
    /// `ClusterIP` (also the default when unset).
    ClusterIP,
    /// `NodePort`.
    NodePort,
    /// `LoadBalancer`.
    LoadBalancer,
    /// `ExternalName`.
    ExternalName,
}

impl SvcType {
    /// Parses the API string; unset means ClusterIP, unknown strings are `None`.
    pub fn parse(s: Option<&str>) -> Option<SvcType> {
        match s {
            None | Some("") | Some("ClusterIP") => Some(SvcType::ClusterIP),
            Some("NodePort") => Some(SvcType::NodePort),
            Some("LoadBalancer") => Some(SvcType::LoadBalancer),
            Some("ExternalName") => Some(SvcType::ExternalName),
            Some(_) => None,
        }
    }

    /// Whether Services of this type have node ports.
    pub fn has_node_ports(self) -> bool {
        matches!(self, SvcType::NodePort | SvcType::LoadBalancer)
    }
}

/// One entry of `spec.ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortView {
    /// Port name.
    pub name: String,
    /// `port`.
    pub port: i32,
    /// `protocol` (default `TCP`).
    pub protocol: String,
    /// `nodePort`, 0 when unset.
    pub node_port: i32,
}

/// The allocation-relevant parts of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvcView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// `spec.type`.
    pub type_: SvcType,
    /// `spec.clusterIPs`, normalised: if empty but `spec.clusterIP` is set, `[clusterIP]`.
    pub cluster_ips: Vec<String>,
    /// `spec.ipFamilies` (unknown strings kept verbatim so validation can name them).
    pub ip_families: Vec<String>,
    /// `spec.ipFamilyPolicy` as given (unknown strings kept verbatim).
    pub ip_family_policy: Option<String>,
    /// `spec.selector` (empty when unset). Kept whole because two Services with
    /// `externalTrafficPolicy: Local` may share a LoadBalancer IP only with identical selectors.
    pub selector: BTreeMap<String, String>,
    /// `spec.ports`.
    pub ports: Vec<PortView>,
    /// `spec.allocateLoadBalancerNodePorts` (unset = true).
    pub allocate_lb_node_ports: bool,
    /// `spec.externalTrafficPolicy == Local`.
    pub etp_local: bool,
    /// `spec.healthCheckNodePort`, 0 when unset.
    pub health_check_node_port: i32,
    /// `spec.loadBalancerClass`.
    pub lb_class: Option<String>,
    /// `spec.loadBalancerIP` (deprecated upstream, still honoured).
    pub load_balancer_ip: Option<String>,
    /// Service labels (for pool selectors).
    pub labels: BTreeMap<String, String>,
    /// Service annotations.
    pub annotations: BTreeMap<String, String>,
    /// `status.loadBalancer.ingress[*].ip`.
    pub lb_ingress_ips: Vec<String>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
}

/// `"None"`: the headless marker in `spec.clusterIP`.
pub const CLUSTER_IP_NONE: &str = "None";

impl SvcView {
    /// Converts a Service; `None` for an unknown `spec.type` (nothing of ours applies to it).
    pub fn from_service(svc: &Service) -> Option<SvcView> {
        let spec = svc.spec.clone().unwrap_or_default();
        let type_ = SvcType::parse(spec.type_.as_deref())?;
        let mut cluster_ips: Vec<String> = spec
            .cluster_ips
            .unwrap_or_default()
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        if cluster_ips.is_empty() {
            if let Some(ip) = spec.cluster_ip.filter(|s| !s.is_empty()) {
                cluster_ips.push(ip);
            }
        }
        let ports = spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| PortView {
                name: p.name.unwrap_or_default(),
                port: p.port,
                protocol: p.protocol.unwrap_or_else(|| "TCP".to_string()),
                node_port: p.node_port.unwrap_or(0),
            })
            .collect();
        let lb_ingress_ips = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|ing| ing.iter().filter_map(|i| i.ip.clone()).collect())
            .unwrap_or_default();
        Some(SvcView {
            namespace: svc.metadata.namespace.clone().unwrap_or_default(),
            name: svc.metadata.name.clone().unwrap_or_default(),
            uid: svc.metadata.uid.clone().unwrap_or_default(),
            type_,
            cluster_ips,
            ip_families: spec.ip_families.unwrap_or_default(),
            ip_family_policy: spec.ip_family_policy.filter(|s| !s.is_empty()),
            selector: spec.selector.unwrap_or_default(),
            ports,
            allocate_lb_node_ports: spec.allocate_load_balancer_node_ports.unwrap_or(true),
            etp_local: spec.external_traffic_policy.as_deref() == Some("Local"),
            health_check_node_port: spec.health_check_node_port.unwrap_or(0),
            lb_class: spec.load_balancer_class.filter(|s| !s.is_empty()),
            load_balancer_ip: spec.load_balancer_ip.filter(|s| !s.is_empty()),
            labels: svc.metadata.labels.clone().unwrap_or_default(),
            annotations: svc.metadata.annotations.clone().unwrap_or_default(),
            lb_ingress_ips,
            deleting: svc.metadata.deletion_timestamp.is_some(),
        })
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether `spec.selector` is non-empty.
    pub fn has_selector(&self) -> bool {
        !self.selector.is_empty()
    }

    /// The first of `names` (in precedence order) set to a non-blank value: which annotation was
    /// used, and its value as written (sharing keys compare exactly, as MetalLB compares them).
    pub fn annotation<'a>(&'a self, names: &[&'static str]) -> Option<(&'static str, &'a str)> {
        names.iter().find_map(|name| {
            self.annotations
                .get(*name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (*name, v.as_str()))
        })
    }

    /// Headless: `clusterIP: None`.
    pub fn is_headless(&self) -> bool {
        self.cluster_ips.first().map(String::as_str) == Some(CLUSTER_IP_NONE)
    }

    /// Upstream's `NeedsHealthCheck`: type LoadBalancer with `externalTrafficPolicy: Local`.
    pub fn needs_health_check(&self) -> bool {
        self.type_ == SvcType::LoadBalancer && self.etp_local
    }

    /// Upstream's `shouldAllocateNodePorts`.
    pub fn should_allocate_node_ports(&self) -> bool {
        match self.type_ {
            SvcType::NodePort => true,
            SvcType::LoadBalancer => self.allocate_lb_node_ports,
            _ => false,
        }
    }

    /// Distinct non-zero node ports in `spec.ports` (upstream's `collectServiceNodePorts`).
    pub fn node_port_numbers(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self
            .ports
            .iter()
            .map(|p| p.node_port)
            .filter(|&n| n != 0)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_service_keeps_the_selector_and_traffic_policy() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "namespace": "n",
                         "annotations": {"metallb.io/allow-shared-ip": "k", "svcnet.io/lb-pool": " "}},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                     "selector": {"app": "web", "tier": "fe"}, "ports": [{"port": 80}]}
        }))
        .unwrap();
        let v = SvcView::from_service(&svc).unwrap();
        assert!(v.etp_local && v.has_selector());
        assert_eq!(v.selector.get("tier").map(String::as_str), Some("fe"));
        assert_eq!(
            v.annotation(&SHARING_KEY_ANNOTATIONS),
            Some(("metallb.io/allow-shared-ip", "k"))
        );
        assert_eq!(v.annotation(&LB_POOL_ANNOTATIONS), None, "blank is unset");
        let bare: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "b"}, "spec": {"type": "LoadBalancer"}
        }))
        .unwrap();
        let v = SvcView::from_service(&bare).unwrap();
        assert!(!v.etp_local && !v.has_selector());
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Fluent builders for Service views used across the planner tests.
    use super::*;

    /// A ClusterIP Service `ns/name` with the selector `app=test` and no ports.
    pub fn svc(name: &str) -> SvcView {
        SvcView {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            type_: SvcType::ClusterIP,
            cluster_ips: vec![],
            ip_families: vec![],
            ip_family_policy: None,
            selector: [("app".to_string(), "test".to_string())].into(),
            ports: vec![],
            allocate_lb_node_ports: true,
            etp_local: false,
            health_check_node_port: 0,
            lb_class: None,
            load_balancer_ip: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            lb_ingress_ips: vec![],
            deleting: false,
        }
    }

    impl SvcView {
        pub fn typ(mut self, t: SvcType) -> Self {
            self.type_ = t;
            self
        }
        pub fn ips(mut self, ips: &[&str]) -> Self {
            self.cluster_ips = ips.iter().map(|s| s.to_string()).collect();
            self
        }
        pub fn fams(mut self, f: &[&str]) -> Self {
            self.ip_families = f.iter().map(|s| s.to_string()).collect();
            self
        }
        pub fn policy(mut self, p: &str) -> Self {
            self.ip_family_policy = Some(p.into());
            self
        }
        pub fn headless(self) -> Self {
            self.ips(&[CLUSTER_IP_NONE])
        }
        pub fn selectorless(mut self) -> Self {
            self.selector.clear();
            self
        }
        pub fn selector(mut self, k: &str, v: &str) -> Self {
            self.selector = [(k.to_string(), v.to_string())].into();
            self
        }
        pub fn port(mut self, port: i32, proto: &str, node_port: i32) -> Self {
            self.ports.push(PortView {
                name: format!("p{}", self.ports.len()),
                port,
                protocol: proto.into(),
                node_port,
            });
            self
        }
        pub fn etp_local(mut self) -> Self {
            self.etp_local = true;
            self
        }
        pub fn hc(mut self, port: i32) -> Self {
            self.health_check_node_port = port;
            self
        }
        pub fn no_lb_node_ports(mut self) -> Self {
            self.allocate_lb_node_ports = false;
            self
        }
        pub fn annotate(mut self, k: &str, v: &str) -> Self {
            self.annotations.insert(k.into(), v.into());
            self
        }
        pub fn label(mut self, k: &str, v: &str) -> Self {
            self.labels.insert(k.into(), v.into());
            self
        }
        pub fn class(mut self, c: &str) -> Self {
            self.lb_class = Some(c.into());
            self
        }
        pub fn lb_ip(mut self, ip: &str) -> Self {
            self.load_balancer_ip = Some(ip.into());
            self
        }
    }
}
