//! The parts an EndpointSlice is made of: the labels and annotations svcnet reads and writes,
//! Pods turned into Endpoints (addresses, ports, conditions, target references), slice labels,
//! owner references and trigger times, and the equality checks that decide whether a slice
//! needs a write. Pure; [`super::desired`] packs these parts into slices.

use crate::hash;
use crate::views::{NodeInfo, PodInfo};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// `kubernetes.io/service-name`.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// `endpointslice.kubernetes.io/managed-by`.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// `service.kubernetes.io/headless`.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// `endpoints.kubernetes.io/last-change-trigger-time`.
pub const ANNOTATION_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// svcnet's managed-by value for EndpointSlices it computes from selectors.
///
/// Upstream's shape with svcnet's domain (upstream writes
/// `endpointslice-controller.k8s.io`). A `svcnet.io/...` value is impossible:
/// a label *value* may not contain `/` (the API server rejects such slices and
/// such label selectors).
pub const CONTROLLER_NAME: &str = "endpointslice-controller.svcnet.io";
/// Legacy Auto-hints annotation (wins over the new one when both are set).
pub const ANNOTATION_TOPOLOGY_AWARE_HINTS: &str = "service.kubernetes.io/topology-aware-hints";
/// Auto-hints annotation.
pub const ANNOTATION_TOPOLOGY_MODE: &str = "service.kubernetes.io/topology-mode";

/// Formats a time as Go's `time.RFC3339Nano` in UTC.
pub fn rfc3339_nano(t: DateTime<Utc>) -> String {
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos();
    if nanos == 0 {
        format!("{base}Z")
    } else {
        let frac = format!("{nanos:09}");
        format!("{base}.{}Z", frac.trim_end_matches('0'))
    }
}

/// ClusterIP is set and not `None` (`isServiceIPSet`).
pub fn is_service_ip_set(svc: &Service) -> bool {
    let ip = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .unwrap_or("");
    !ip.is_empty() && ip != "None"
}

/// Parses an IP like Go's `ParseIPSloppy` (IPv4 octets may carry leading
/// zeros) and returns its canonical string and whether it is IPv6.
/// IPv4-mapped IPv6 addresses count as IPv4, as in Go.
pub fn canonical_ip(s: &str) -> Option<(String, bool)> {
    let ip: IpAddr = match s.parse() {
        Ok(ip) => ip,
        Err(_) => {
            let parts: Vec<&str> = s.split('.').collect();
            if parts.len() != 4 {
                return None;
            }
            let mut oct = [0u8; 4];
            for (i, p) in parts.iter().enumerate() {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                oct[i] = p.parse().ok()?;
            }
            IpAddr::from(oct)
        }
    };
    match ip {
        IpAddr::V4(v4) => Some((v4.to_string(), false)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Some((v4.to_string(), false)),
            None => Some((v6.to_string(), true)),
        },
    }
}

/// Address types (`IPv4` / `IPv6`) a Service's slices use, from
/// `spec.ipFamilies`, falling back to the ClusterIP family, then both.
pub fn address_types_for_service(svc: &Service) -> Vec<&'static str> {
    let spec = svc.spec.as_ref();
    let mut out = Vec::new();
    for f in spec
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
    {
        let t = match f.as_str() {
            "IPv4" => "IPv4",
            "IPv6" => "IPv6",
            _ => continue,
        };
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if !out.is_empty() {
        return out;
    }
    if is_service_ip_set(svc) {
        let ip = spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
        let v6 = canonical_ip(ip).is_some_and(|(_, v6)| v6);
        return vec![if v6 { "IPv6" } else { "IPv4" }];
    }
    vec!["IPv4", "IPv6"]
}

/// One `EndpointPort` per Service port the Pod serves (`getEndpointPorts`).
pub fn endpoint_ports(svc: &Service, pod: &PodInfo) -> Vec<EndpointPort> {
    let spec = svc.spec.as_ref();
    let ports = spec.and_then(|s| s.ports.as_ref());
    let cluster_ip = spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
    let mut out = Vec::new();
    if ports.is_none_or(|p| p.is_empty()) && cluster_ip == "None" {
        return out;
    }
    for sp in ports.into_iter().flatten() {
        let Some(num) = pod.find_port(sp) else {
            tracing::debug!(pod = %pod.name, port = ?sp.name, "no suitable port for service port");
            continue;
        };
        out.push(EndpointPort {
            name: Some(sp.name.clone().unwrap_or_default()),
            port: Some(num),
            protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
            app_protocol: sp.app_protocol.clone(),
        });
    }
    out
}

/// The Pod's addresses of one family, canonicalised.
pub fn endpoint_addresses(pod: &PodInfo, address_type: &str) -> Vec<String> {
    let want_v6 = address_type == "IPv6";
    pod.pod_ips
        .iter()
        .filter_map(|ip| canonical_ip(ip))
        .filter(|(_, v6)| *v6 == want_v6)
        .map(|(s, _)| s)
        .collect()
}

/// `podToEndpoint`.
pub fn pod_to_endpoint(
    pod: &PodInfo,
    node: Option<&NodeInfo>,
    svc: &Service,
    address_type: &str,
) -> Endpoint {
    let pnra = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let serving = pod.ready;
    let terminating = pod.terminating;
    let ready = pnra || (serving && !terminating);
    let svc_ns = svc.metadata.namespace.as_deref().unwrap_or("");
    let svc_name = svc.metadata.name.as_deref().unwrap_or("");
    let mut addresses = endpoint_addresses(pod, address_type);
    addresses.sort();
    Endpoint {
        addresses,
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(pod.namespace.clone()),
            name: Some(pod.name.clone()),
            uid: Some(pod.uid.clone()),
            ..Default::default()
        }),
        node_name: (!pod.node_name.is_empty()).then(|| pod.node_name.clone()),
        zone: node.and_then(|n| n.zone.clone()).filter(|z| !z.is_empty()),
        hostname: pod
            .should_set_hostname(svc_ns, svc_name)
            .then(|| pod.hostname.clone()),
        ..Default::default()
    }
}

/// Identity of an endpoint: sorted addresses, hostname, targetRef ns/name.
pub fn endpoint_key(ep: &Endpoint) -> String {
    let mut addrs = ep.addresses.clone();
    addrs.sort();
    let (ns, name) = ep
        .target_ref
        .as_ref()
        .map(|r| {
            (
                r.namespace.as_deref().unwrap_or(""),
                r.name.as_deref().unwrap_or(""),
            )
        })
        .unwrap_or(("", ""));
    format!(
        "{}|{}|{}/{}",
        addrs.join(","),
        ep.hostname.as_deref().unwrap_or(""),
        ns,
        name
    )
}

fn target_ref_eq_ignoring_rv(a: &Option<ObjectReference>, b: &Option<ObjectReference>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            let mut a = a.clone();
            let mut b = b.clone();
            a.resource_version = None;
            b.resource_version = None;
            let norm = |o: &mut ObjectReference| {
                for f in [
                    &mut o.kind,
                    &mut o.namespace,
                    &mut o.name,
                    &mut o.uid,
                    &mut o.api_version,
                    &mut o.field_path,
                ] {
                    if f.as_deref() == Some("") {
                        *f = None;
                    }
                }
            };
            norm(&mut a);
            norm(&mut b);
            a == b
        }
        _ => false,
    }
}

/// `EndpointsEqualBeyondHash`: nodeName, zone, conditions and targetRef
/// (resourceVersion ignored). Hints are deliberately not compared.
pub fn endpoints_equal_beyond_hash(a: &Endpoint, b: &Endpoint) -> bool {
    let ca = a.conditions.clone().unwrap_or_default();
    let cb = b.conditions.clone().unwrap_or_default();
    a.node_name == b.node_name
        && a.zone == b.zone
        && ca.ready == cb.ready
        && ca.serving == cb.serving
        && ca.terminating == cb.terminating
        && target_ref_eq_ignoring_rv(&a.target_ref, &b.target_ref)
}

fn is_reserved_label(k: &str) -> bool {
    k == LABEL_SERVICE_NAME || k == LABEL_MANAGED_BY || k == LABEL_HEADLESS
}

/// `setEndpointSliceLabels`: the Service's labels (reserved keys ignored),
/// headless label, service-name and managed-by; plus whether the
/// non-reserved labels differ from the slice's.
pub fn slice_labels(
    current: Option<&BTreeMap<String, String>>,
    svc: &Service,
    controller_name: &str,
) -> (BTreeMap<String, String>, bool) {
    let ep: BTreeMap<&String, &String> = current
        .into_iter()
        .flatten()
        .filter(|(k, _)| !is_reserved_label(k))
        .collect();
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in svc.metadata.labels.iter().flatten() {
        if is_reserved_label(k) {
            tracing::info!(service = ?svc.metadata.name, label = %k, "Service uses a reserved EndpointSlice label; skipping");
            continue;
        }
        out.insert(k.clone(), v.clone());
    }
    let mut changed = ep.len() != out.len() || ep.iter().any(|(k, v)| out.get(*k) != Some(*v));
    let headless = !is_service_ip_set(svc);
    if headless {
        out.insert(LABEL_HEADLESS.into(), String::new());
    } else {
        out.remove(LABEL_HEADLESS);
    }
    // Upstream compares only the non-reserved labels, because on kube-apiserver a Service's
    // ClusterIP is set when it is created and never changes. On API servers that leave
    // spec.clusterIP empty until svcnet's IPAM fills it (our embedded server, generic control
    // planes) the first slices are written while the Service still looks headless, so a
    // headless-label mismatch must count as a change too, or proxies would ignore the slices
    // forever. On kube-apiserver this never differs from upstream's behaviour.
    if let Some(current) = current {
        if current.contains_key(LABEL_HEADLESS) != headless {
            changed = true;
        }
    }
    out.insert(
        LABEL_SERVICE_NAME.into(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    out.insert(LABEL_MANAGED_BY.into(), controller_name.into());
    (out, changed)
}

/// Controller ownerReference to the Service.
pub fn service_owner_ref(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// `newEndpointSlice`: an empty slice to be created with `generateName`.
pub fn new_slice(
    svc: &Service,
    ports: Vec<EndpointPort>,
    address_type: &str,
    controller_name: &str,
) -> EndpointSlice {
    let (labels, _) = slice_labels(None, svc, controller_name);
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", svc.metadata.name.as_deref().unwrap_or(""))),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![service_owner_ref(svc)]),
            ..Default::default()
        },
        address_type: address_type.into(),
        endpoints: Vec::new(),
        ports: Some(ports),
    }
}

/// The slice's owner is this Service (UID, Kind `Service`, APIVersion `v1`).
pub fn owned_by(slice: &EndpointSlice, svc: &Service) -> bool {
    let uid = svc.metadata.uid.as_deref().unwrap_or("");
    slice
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.kind == "Service" && o.api_version == "v1")
}

/// Port-map key of a port list (nil and empty hash the same); sorts the
/// ports in upstream's order as a side effect.
pub fn port_map_key(ports: &mut [EndpointPort]) -> String {
    hash::sort_ports_and_key(ports)
}

pub(super) fn placeholder_equal(a: &EndpointSlice, b: &EndpointSlice) -> bool {
    a.metadata.namespace == b.metadata.namespace
        && a.metadata.labels.clone().unwrap_or_default()
            == b.metadata.labels.clone().unwrap_or_default()
        && a.address_type == b.address_type
        && a.endpoints == b.endpoints
        && a.ports.clone().unwrap_or_default() == b.ports.clone().unwrap_or_default()
}

/// `addTriggerTimeAnnotation`.
pub fn set_trigger_time(slice: &mut EndpointSlice, t: Option<DateTime<Utc>>) {
    let mut ann = slice.metadata.annotations.take().unwrap_or_default();
    match t {
        Some(t) => {
            ann.insert(ANNOTATION_TRIGGER_TIME.into(), rfc3339_nano(t));
        }
        None => {
            ann.remove(ANNOTATION_TRIGGER_TIME);
        }
    }
    slice.metadata.annotations = (!ann.is_empty()).then_some(ann);
}
