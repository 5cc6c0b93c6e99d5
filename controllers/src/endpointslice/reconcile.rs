//! The pure EndpointSlice reconciler: (Service, selected Pods, Nodes, existing
//! slices) → a [`SlicePlan`], with upstream's churn-minimising packing.
//!
//! Differences from upstream, where upstream's choice is arbitrary: Go picks
//! endpoints and slices in map order (random); we pick them in a fixed order
//! (endpoints sorted by address, slices by name) so that plans are
//! reproducible. Counts and placement rules are the same.

use super::topology::{self, Heuristic, SliceInfo, TopologyCache};
use crate::hash;
use crate::model::{NodeInfo, PodInfo};
use crate::plan::{EventSpec, SlicePlan};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::{BTreeMap, BTreeSet, HashMap};
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

/// Reconciler settings.
#[derive(Clone, Debug)]
pub struct ReconcilerConfig {
    /// `--max-endpoints-per-slice` (1..=1000, default 100).
    pub max_endpoints_per_slice: usize,
    /// managed-by label value.
    pub controller_name: String,
    /// Accept PreferSameZone / PreferSameNode (gate `PreferSameTrafficDistribution`).
    pub prefer_same_traffic_distribution: bool,
    /// Support the topology-mode Auto annotation (gate `TopologyAwareHints`).
    pub topology_aware_hints: bool,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        ReconcilerConfig {
            max_endpoints_per_slice: 100,
            controller_name: CONTROLLER_NAME.into(),
            prefer_same_traffic_distribution: true,
            topology_aware_hints: true,
        }
    }
}

/// Everything one reconcile of one Service reads.
pub struct ServiceInput<'a> {
    /// The Service (must have a selector; the caller skips the others).
    pub service: &'a Service,
    /// Pods its selector matches (any state; filtering happens here).
    pub pods: &'a [&'a PodInfo],
    /// Node cache by name.
    pub nodes: &'a HashMap<String, NodeInfo>,
    /// Slices that carry our managed-by and the Service's name.
    pub existing: &'a [EndpointSlice],
    /// From the trigger-time tracker.
    pub trigger_time: Option<DateTime<Utc>>,
}

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

fn placeholder_equal(a: &EndpointSlice, b: &EndpointSlice) -> bool {
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

/// Auto hints requested by annotation (`hintsEnabled`).
pub fn hints_enabled(svc: &Service) -> bool {
    let ann = svc.metadata.annotations.as_ref();
    let v = ann
        .and_then(|a| a.get(ANNOTATION_TOPOLOGY_AWARE_HINTS))
        .or_else(|| ann.and_then(|a| a.get(ANNOTATION_TOPOLOGY_MODE)));
    matches!(v.map(String::as_str), Some("Auto") | Some("auto"))
}

/// The Service's trafficDistribution, if this cluster accepts it.
pub fn valid_traffic_distribution<'a>(svc: &'a Service, cfg: &ReconcilerConfig) -> Option<&'a str> {
    let td = svc.spec.as_ref()?.traffic_distribution.as_deref()?;
    match td {
        "PreferClose" => Some(td),
        "PreferSameZone" | "PreferSameNode" if cfg.prefer_same_traffic_distribution => Some(td),
        _ => None,
    }
}

type EndpointSet = BTreeMap<String, Endpoint>;

/// `getSliceToFill`: the slice left closest to full after adding `n`.
fn slice_to_fill<'a>(
    candidates: impl Iterator<Item = &'a EndpointSlice>,
    n: usize,
    max: usize,
) -> Option<String> {
    let mut closest = max as i64;
    let mut best = None;
    for s in candidates {
        let diff = max as i64 - (n + s.endpoints.len()) as i64;
        if diff >= 0 && diff < closest {
            closest = diff;
            best = s.metadata.name.clone();
            if diff == 0 {
                break;
            }
        }
    }
    best
}

struct PortMapResult {
    creates: Vec<EndpointSlice>,
    updates: Vec<EndpointSlice>,
    deletes: Vec<EndpointSlice>,
    added: usize,
    removed: usize,
}

fn reconcile_by_port_mapping(
    svc: &Service,
    cfg: &ReconcilerConfig,
    existing: &[EndpointSlice],
    mut desired: EndpointSet,
    ports: &[EndpointPort],
    address_type: &str,
) -> PortMapResult {
    let max = cfg.max_endpoints_per_slice.max(1);
    let mut by_name: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut unchanged: BTreeSet<String> = BTreeSet::new();
    let mut to_update: BTreeSet<String> = BTreeSet::new();
    let mut to_delete: BTreeSet<String> = BTreeSet::new();
    let mut removed = 0;

    // 1. Keep desired endpoints where they are (content refreshed), drop the rest.
    for s in existing {
        let name = s.metadata.name.clone().unwrap_or_default();
        let mut new_eps = Vec::with_capacity(s.endpoints.len());
        let mut ep_updated = false;
        for ep in &s.endpoints {
            let key = endpoint_key(ep);
            if let Some(got) = desired.remove(&key) {
                if !endpoints_equal_beyond_hash(&got, ep) {
                    ep_updated = true;
                }
                new_eps.push(got);
            }
        }
        let (labels, labels_changed) =
            slice_labels(s.metadata.labels.as_ref(), svc, &cfg.controller_name);
        if ep_updated || s.endpoints.len() != new_eps.len() {
            removed += s.endpoints.len().saturating_sub(new_eps.len());
            if new_eps.is_empty() {
                to_delete.insert(name.clone());
                by_name.insert(name, s.clone());
            } else {
                let mut c = s.clone();
                c.endpoints = new_eps;
                c.metadata.labels = Some(labels);
                to_update.insert(name.clone());
                by_name.insert(name, c);
            }
        } else if labels_changed {
            let mut c = s.clone();
            c.metadata.labels = Some(labels);
            to_update.insert(name.clone());
            by_name.insert(name, c);
        } else {
            unchanged.insert(name.clone());
            by_name.insert(name, s.clone());
        }
    }
    let added = desired.len();

    // 2. Fill the slices already being updated, fullest first.
    if !desired.is_empty() && !to_update.is_empty() {
        let mut order: Vec<&String> = to_update.iter().collect();
        order.sort_by_key(|n| std::cmp::Reverse(by_name[*n].endpoints.len()));
        let order: Vec<String> = order.into_iter().cloned().collect();
        for n in order {
            let Some(s) = by_name.get_mut(&n) else {
                continue;
            };
            while s.endpoints.len() < max {
                let Some((_, ep)) = desired.pop_first() else {
                    break;
                };
                s.endpoints.push(ep);
            }
        }
    }

    // 3. Leftovers: best-fit unchanged slice, else new slices.
    let mut creates = Vec::new();
    while !desired.is_empty() {
        let mut target: Option<String> = None;
        if desired.len() < max && !unchanged.is_empty() {
            target = slice_to_fill(unchanged.iter().map(|n| &by_name[n]), desired.len(), max);
        }
        match target {
            Some(n) => {
                if let Some(s) = by_name.get_mut(&n) {
                    while s.endpoints.len() < max {
                        let Some((_, ep)) = desired.pop_first() else {
                            break;
                        };
                        s.endpoints.push(ep);
                    }
                }
                unchanged.remove(&n);
                to_update.insert(n);
            }
            None => {
                let mut s = new_slice(svc, ports.to_vec(), address_type, &cfg.controller_name);
                while s.endpoints.len() < max {
                    let Some((_, ep)) = desired.pop_first() else {
                        break;
                    };
                    s.endpoints.push(ep);
                }
                creates.push(s);
            }
        }
    }

    PortMapResult {
        creates,
        updates: to_update.iter().map(|n| by_name[n].clone()).collect(),
        deletes: to_delete.iter().map(|n| by_name[n].clone()).collect(),
        added,
        removed,
    }
}

/// Reconciles one address type of a Service; appends to `plan`.
#[allow(clippy::too_many_arguments)]
fn reconcile_address_type(
    input: &ServiceInput<'_>,
    cfg: &ReconcilerConfig,
    topo: &mut TopologyCache,
    existing: &[EndpointSlice],
    address_type: &str,
    plan: &mut SlicePlan,
) {
    let svc = input.service;
    let pnra = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let svc_key = format!(
        "{}/{}",
        svc.metadata.namespace.as_deref().unwrap_or(""),
        svc.metadata.name.as_deref().unwrap_or("")
    );

    let mut creates: Vec<EndpointSlice> = Vec::new();
    let mut updates: Vec<EndpointSlice> = Vec::new();
    let mut deletes: Vec<EndpointSlice> = Vec::new();

    let mut existing_by_pm: BTreeMap<String, Vec<EndpointSlice>> = BTreeMap::new();
    for s in existing {
        if owned_by(s, svc) {
            let mut ports = s.ports.clone().unwrap_or_default();
            let key = port_map_key(&mut ports);
            existing_by_pm.entry(key).or_default().push(s.clone());
        } else {
            deletes.push(s.clone());
        }
    }

    let mut desired_by_pm: BTreeMap<String, (Vec<EndpointPort>, EndpointSet)> = BTreeMap::new();
    for pod in input.pods {
        if !pod.should_be_in_endpoints(true) {
            continue;
        }
        let mut ports = endpoint_ports(svc, pod);
        let key = port_map_key(&mut ports);
        let entry = desired_by_pm
            .entry(key)
            .or_insert_with(|| (ports, EndpointSet::new()));
        let node = input.nodes.get(&pod.node_name);
        if node.is_none() && !pnra {
            let msg = format!(
                "skipping Pod {} for Service {}: Node {} Not Found",
                pod.name, svc_key, pod.node_name
            );
            if !plan.errors.contains(&msg) {
                plan.errors.push(msg);
            }
            continue;
        }
        let ep = pod_to_endpoint(pod, node, svc, address_type);
        if !ep.addresses.is_empty() {
            entry.1.insert(endpoint_key(&ep), ep);
        }
    }

    for (key, (ports, set)) in desired_by_pm.iter() {
        plan.endpoints_desired += set.len();
        let ex = existing_by_pm.get(key).map(Vec::as_slice).unwrap_or(&[]);
        let r = reconcile_by_port_mapping(svc, cfg, ex, set.clone(), ports, address_type);
        plan.endpoints_added += r.added;
        plan.endpoints_removed += r.removed;
        plan.slices_desired +=
            ex.len() + r.creates.len() - r.deletes.len().min(ex.len() + r.creates.len());
        creates.extend(r.creates);
        updates.extend(r.updates);
        deletes.extend(r.deletes);
    }
    for (key, slices) in existing_by_pm {
        if !desired_by_pm.contains_key(&key) {
            deletes.extend(slices);
        }
    }

    // Placeholder when the Service would otherwise have no slice of this type.
    if existing.len() == deletes.len() && creates.is_empty() {
        let placeholder = new_slice(svc, Vec::new(), address_type, &cfg.controller_name);
        if deletes.len() == 1 && placeholder_equal(&deletes[0], &placeholder) {
            deletes.clear();
        } else {
            creates.push(placeholder);
        }
        plan.slices_desired += 1;
    }

    // Topology hints / trafficDistribution.
    let changed: BTreeSet<Option<String>> = updates
        .iter()
        .chain(deletes.iter())
        .map(|s| s.metadata.name.clone())
        .collect();
    let unchanged: Vec<EndpointSlice> = existing
        .iter()
        .filter(|s| !changed.contains(&s.metadata.name))
        .cloned()
        .collect();
    let mut si = SliceInfo {
        service_key: svc_key.clone(),
        address_type: address_type.into(),
        to_create: creates,
        to_update: updates,
        unchanged,
    };
    let auto = cfg.topology_aware_hints && hints_enabled(svc);
    let td = if hints_enabled(svc) {
        None
    } else {
        valid_traffic_distribution(svc, cfg)
    };
    if auto {
        plan.events.extend(topo.add_hints(&mut si));
    } else {
        if cfg.topology_aware_hints {
            if topo.has_populated_hints(&svc_key) {
                plan.events.push(EventSpec::warning(
                    "TopologyAwareHintsDisabled",
                    topology::with_address_type(
                        topology::messages::TOPOLOGY_AWARE_HINTS_DISABLED,
                        address_type,
                    ),
                ));
            }
            topo.remove_hints(&svc_key, address_type);
        }
        if td.is_none() {
            topology::remove_hints_from_slices(&mut si);
        }
    }
    if let Some(td) = td {
        // Unchanged = existing minus what is now updated or deleted.
        let changed: BTreeSet<Option<String>> = si
            .to_update
            .iter()
            .chain(deletes.iter())
            .map(|s| s.metadata.name.clone())
            .collect();
        si.unchanged = existing
            .iter()
            .filter(|s| !changed.contains(&s.metadata.name))
            .cloned()
            .collect();
        topology::reconcile_traffic_distribution(Heuristic::for_value(Some(td)), &mut si);
    }
    let mut creates = si.to_create;
    let mut updates = si.to_update;

    // Recycle creates into deletes of owned slices of the same address type.
    let mut i = 0;
    while i < deletes.len() && !creates.is_empty() {
        if deletes[i].address_type == address_type && owned_by(&deletes[i], svc) {
            let old = deletes.remove(i);
            let Some(mut s) = creates.pop() else { break };
            s.metadata.name = old.metadata.name.clone();
            s.metadata.resource_version = old.metadata.resource_version.clone();
            s.metadata.uid = old.metadata.uid.clone();
            updates.push(s);
        } else {
            i += 1;
        }
    }

    if svc.metadata.deletion_timestamp.is_some() {
        creates.clear();
    }
    for s in creates.iter_mut().chain(updates.iter_mut()) {
        set_trigger_time(s, input.trigger_time);
    }
    plan.creates.extend(creates);
    plan.updates.extend(updates);
    plan.deletes.extend(deletes);
}

/// Computes every write that brings a selector Service's EndpointSlices to
/// the desired state. `topo` carries the Auto-hints state between calls.
pub fn reconcile_service(
    input: &ServiceInput<'_>,
    cfg: &ReconcilerConfig,
    topo: &mut TopologyCache,
) -> SlicePlan {
    let mut plan = SlicePlan::default();
    let types = address_types_for_service(input.service);
    let mut by_type: BTreeMap<&str, Vec<EndpointSlice>> = BTreeMap::new();
    let mut unsupported = Vec::new();
    for s in input.existing {
        match types.iter().find(|t| **t == s.address_type) {
            Some(t) => by_type.entry(t).or_default().push(s.clone()),
            None => unsupported.push(s.clone()),
        }
    }
    if !unsupported.is_empty() {
        let key = format!(
            "{}/{}",
            input.service.metadata.namespace.as_deref().unwrap_or(""),
            input.service.metadata.name.as_deref().unwrap_or("")
        );
        for s in &unsupported {
            topo.remove_hints(&key, &s.address_type);
        }
    }
    for t in &types {
        let existing = by_type.remove(t).unwrap_or_default();
        reconcile_address_type(input, cfg, topo, &existing, t, &mut plan);
    }
    plan.deletes.extend(unsupported);
    plan
}
