//! The boundary with Kubernetes types: converts k8s-openapi objects into the small internal structs of
//! [`crate::types`]. Nothing else in the crate imports k8s-openapi.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::ServiceCIDR;

use crate::types::{
    EndpointInfo, EndpointPort, EndpointSliceInfo, Family, Protocol, ServiceInfo, ServiceKey,
    ServicePort,
};

/// Label that hands a Service to another proxy.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Label on EndpointSlices of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Annotation with the time of the change that triggered the EndpointSlice update.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// Default ClientIP affinity timeout (3h).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;
/// Maximum ClientIP affinity timeout (1 day).
pub const MAX_AFFINITY_TIMEOUT: u32 = 86400;

/// Label selector used by the watchers (upstream kube-proxy's).
pub const WATCH_LABEL_SELECTOR: &str =
    "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

fn parse_ips(
    values: impl IntoIterator<Item = String>,
    what: &str,
    key: &ServiceKey,
) -> Vec<IpAddr> {
    let mut out = vec![];
    for v in values {
        match v.trim().parse::<IpAddr>() {
            Ok(ip) => {
                if !out.contains(&ip) {
                    out.push(ip)
                }
            }
            Err(_) => tracing::warn!(service = %key, value = %v, "ignoring unparsable {what}"),
        }
    }
    out
}

/// Converts a Service. Returns `None` for Services the proxy ignores: ExternalName, headless (clusterIP
/// `None` or empty), and those labelled `service.kubernetes.io/service-proxy-name`.
pub fn service(svc: &Service) -> Option<ServiceInfo> {
    let meta = &svc.metadata;
    let key = ServiceKey::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone()?,
    );
    if meta
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL))
    {
        return None;
    }
    let spec = svc.spec.as_ref()?;
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    if ty == "ExternalName" {
        return None;
    }
    let raw_ips: Vec<String> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.clone(),
        _ => spec.cluster_ip.iter().cloned().collect(),
    };
    if raw_ips.is_empty() || raw_ips.iter().any(|ip| ip == "None" || ip.is_empty()) {
        return None;
    }
    let cluster_ips = parse_ips(raw_ips, "clusterIP", &key);
    if cluster_ips.is_empty() {
        return None;
    }
    let mut ports = vec![];
    for p in spec.ports.iter().flatten() {
        let Some(protocol) = Protocol::from_k8s(p.protocol.as_deref()) else {
            tracing::warn!(service = %key, protocol = ?p.protocol, "ignoring port with unknown protocol");
            continue;
        };
        let Ok(port) = u16::try_from(p.port) else {
            continue;
        };
        if port == 0 {
            continue;
        }
        let node_port = p
            .node_port
            .and_then(|np| u16::try_from(np).ok())
            .filter(|np| *np != 0 && ty != "ClusterIP");
        ports.push(ServicePort {
            name: p.name.clone().unwrap_or_default(),
            protocol,
            port,
            node_port,
        });
    }
    let external_ips = parse_ips(
        spec.external_ips.clone().unwrap_or_default(),
        "externalIP",
        &key,
    );
    let load_balancer_ips = parse_ips(
        svc.status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
            .filter_map(|i| i.ip.clone()),
        "load balancer ingress IP",
        &key,
    );
    let mut load_balancer_source_ranges = vec![];
    for r in spec.load_balancer_source_ranges.iter().flatten() {
        let r = r.trim();
        match r.parse::<ipnet::IpNet>() {
            Ok(n) => load_balancer_source_ranges.push(n),
            Err(_) => match r.parse::<IpAddr>() {
                Ok(ip) => load_balancer_source_ranges.push(ipnet::IpNet::from(ip)),
                Err(_) => {
                    tracing::warn!(service = %key, range = %r, "ignoring bad loadBalancerSourceRange")
                }
            },
        }
    }
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .map(|t| t.min(MAX_AFFINITY_TIMEOUT))
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });
    let external_type = ty == "NodePort" || ty == "LoadBalancer";
    let lb_labels = if ty == "LoadBalancer" && !load_balancer_ips.is_empty() {
        meta.labels.clone().unwrap_or_default()
    } else {
        Default::default()
    };
    Some(ServiceInfo {
        key,
        cluster_ips,
        ports,
        external_ips,
        load_balancer_ips: if ty == "LoadBalancer" {
            load_balancer_ips
        } else {
            vec![]
        },
        load_balancer_source_ranges,
        affinity_timeout,
        external_policy_local: external_type
            && spec.external_traffic_policy.as_deref() == Some("Local"),
        internal_policy_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
        health_check_node_port: spec
            .health_check_node_port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0),
        lb_labels,
    })
}

/// Converts an EndpointSlice. Returns `None` for slices without a service-name label, FQDN slices, and
/// slices labelled headless or service-proxy-name.
pub fn endpoint_slice(es: &EndpointSlice) -> Option<EndpointSliceInfo> {
    let meta = &es.metadata;
    let labels = meta.labels.as_ref()?;
    if labels.contains_key(SERVICE_PROXY_NAME_LABEL) || labels.contains_key(HEADLESS_LABEL) {
        return None;
    }
    let service_name = labels.get(SERVICE_NAME_LABEL)?.clone();
    let family = match es.address_type.as_str() {
        "IPv4" => Family::Ipv4,
        "IPv6" => Family::Ipv6,
        _ => return None,
    };
    let ports = es
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let port = u16::try_from(p.port?).ok().filter(|p| *p != 0)?;
            Some(EndpointPort {
                name: p.name.clone().unwrap_or_default(),
                protocol: Protocol::from_k8s(p.protocol.as_deref())?,
                port,
            })
        })
        .collect();
    let endpoints = es
        .endpoints
        .iter()
        .filter_map(|e| {
            let address: IpAddr = e.addresses.first()?.parse().ok()?;
            if Family::of(&address) != family {
                return None;
            }
            let c = e.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            Some(EndpointInfo {
                address,
                ready,
                serving: c.and_then(|c| c.serving).unwrap_or(ready),
                terminating: c.and_then(|c| c.terminating).unwrap_or(false),
                node_name: e.node_name.clone(),
                zone_hints: e
                    .hints
                    .as_ref()
                    .and_then(|h| h.for_zones.as_ref())
                    .map(|z| z.iter().map(|z| z.name.clone()).collect())
                    .unwrap_or_default(),
                node_hints: e
                    .hints
                    .as_ref()
                    .and_then(|h| h.for_nodes.as_ref())
                    .map(|z| z.iter().map(|z| z.name.clone()).collect())
                    .unwrap_or_default(),
            })
        })
        .collect();
    let trigger_time = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(TRIGGER_TIME_ANNOTATION))
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis() as f64 / 1000.0);
    Some(EndpointSliceInfo {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone()?,
        service_name,
        family,
        ports,
        endpoints,
        trigger_time,
    })
}

/// Converts a ServiceCIDR into its name and `spec.cidrs` (unparsable entries are skipped with a
/// warning: the API server validates them, so one means a server this proxy does not understand).
pub fn service_cidr(sc: &ServiceCIDR) -> Option<(String, Vec<ipnet::IpNet>)> {
    let name = sc.metadata.name.clone()?;
    let mut cidrs = vec![];
    for c in sc
        .spec
        .as_ref()
        .and_then(|s| s.cidrs.as_ref())
        .into_iter()
        .flatten()
    {
        match c.trim().parse::<ipnet::IpNet>() {
            Ok(n) => cidrs.push(n),
            Err(_) => tracing::warn!(servicecidr = %name, cidr = %c, "ignoring unparsable CIDR"),
        }
    }
    Some((name, cidrs))
}

/// What the proxy takes from its own Node object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// InternalIP addresses (then ExternalIP if no InternalIP).
    pub addresses: Vec<IpAddr>,
    /// Whether the Node is being deleted or is tainted `ToBeDeletedByClusterAutoscaler`.
    pub being_deleted: bool,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// `spec.podCIDRs` (or `spec.podCIDR`): this node's pod networks.
    pub pod_cidrs: Vec<ipnet::IpNet>,
}

/// Converts a Node.
pub fn node(n: &Node) -> NodeInfo {
    let labels = n.metadata.labels.clone().unwrap_or_default();
    let addrs = n
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .cloned()
        .unwrap_or_default();
    let pick = |ty: &str| -> Vec<IpAddr> {
        addrs
            .iter()
            .filter(|a| a.type_ == ty)
            .filter_map(|a| a.address.parse().ok())
            .collect()
    };
    let mut addresses = pick("InternalIP");
    if addresses.is_empty() {
        addresses = pick("ExternalIP");
    }
    let tainted = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == "ToBeDeletedByClusterAutoscaler"));
    let spec = n.spec.as_ref();
    let raw_pod_cidrs: Vec<String> = match spec.and_then(|s| s.pod_cidrs.clone()) {
        Some(c) if !c.is_empty() => c,
        _ => spec.and_then(|s| s.pod_cidr.clone()).into_iter().collect(),
    };
    let pod_cidrs = raw_pod_cidrs
        .iter()
        .filter_map(|c| c.trim().parse::<ipnet::IpNet>().ok())
        .map(|c| c.trunc())
        .collect();
    NodeInfo {
        labels: labels.into_iter().collect(),
        addresses,
        being_deleted: n.metadata.deletion_timestamp.is_some() || tainted,
        unschedulable: n
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        pod_cidrs,
    }
}
