//! Pure computation of a Service's legacy `core/v1` Endpoints object
//! (upstream `pkg/controller/endpoint` + `RepackSubsets`).

use crate::endpointslice::build::{
    canonical_ip, is_service_ip_set, rfc3339_nano, ANNOTATION_TRIGGER_TIME, LABEL_HEADLESS,
};
use crate::hash;
use crate::views::PodInfo;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::{BTreeMap, HashMap};

/// Maximum addresses (ready + not ready) in one Endpoints object.
pub const MAX_CAPACITY: usize = 1000;
/// `endpoints.kubernetes.io/over-capacity`.
pub const ANNOTATION_OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
/// Value of the over-capacity annotation.
pub const TRUNCATED: &str = "truncated";
/// Leader-election record annotation; such Endpoints are never touched.
pub const ANNOTATION_LEADER: &str = "control-plane.alpha.kubernetes.io/leader";

/// What to do with the Service's Endpoints object.
#[derive(Clone, Debug, PartialEq)]
pub enum EndpointsAction {
    /// Already correct.
    None,
    /// Create this object.
    Create(Endpoints),
    /// Replace the existing object with this one (resourceVersion kept).
    Update(Endpoints),
}

fn primary_family_is_v6(svc: &Service, pod: &PodInfo) -> bool {
    let spec = svc.spec.as_ref();
    if let Some(f) = spec
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first())
    {
        return f == "IPv6";
    }
    if is_service_ip_set(svc) {
        let ip = spec.and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
        return canonical_ip(ip).is_some_and(|(_, v6)| v6);
    }
    canonical_ip(&pod.pod_ip).is_some_and(|(_, v6)| v6)
}

/// `podToEndpointAddressForService`: the Pod's IP of the Service's primary
/// family (as written in the Pod status), or `None` if it has none.
pub fn pod_address(svc: &Service, pod: &PodInfo) -> Option<EndpointAddress> {
    let want_v6 = primary_family_is_v6(svc, pod);
    let ip = pod
        .pod_ips
        .iter()
        .find(|ip| canonical_ip(ip).is_some_and(|(_, v6)| v6 == want_v6))?;
    let svc_ns = svc.metadata.namespace.as_deref().unwrap_or("");
    let svc_name = svc.metadata.name.as_deref().unwrap_or("");
    Some(EndpointAddress {
        ip: ip.clone(),
        // Upstream always points at spec.nodeName; an empty name would fail
        // validation, so it is left out instead.
        node_name: (!pod.node_name.is_empty()).then(|| pod.node_name.clone()),
        hostname: pod
            .should_set_hostname(svc_ns, svc_name)
            .then(|| pod.hostname.clone()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(pod.namespace.clone()),
            name: Some(pod.name.clone()),
            uid: Some(pod.uid.clone()),
            ..Default::default()
        }),
    })
}

/// Subsets before packing: one per (pod, service port).
pub fn raw_subsets(svc: &Service, pods: &[&PodInfo]) -> Vec<EndpointSubset> {
    let spec = svc.spec.as_ref();
    let pnra = spec
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let ports = spec.and_then(|s| s.ports.clone()).unwrap_or_default();
    let headless_none = spec.and_then(|s| s.cluster_ip.as_deref()) == Some("None");
    let mut out = Vec::new();
    for pod in pods {
        if !pod.should_be_in_endpoints(pnra) {
            continue;
        }
        let Some(addr) = pod_address(svc, pod) else {
            continue;
        };
        let ready = pnra || pod.ready;
        let mk = |ports: Option<Vec<EndpointPort>>| {
            if ready {
                EndpointSubset {
                    addresses: Some(vec![addr.clone()]),
                    not_ready_addresses: None,
                    ports,
                }
            } else {
                EndpointSubset {
                    addresses: None,
                    not_ready_addresses: Some(vec![addr.clone()]),
                    ports,
                }
            }
        };
        if ports.is_empty() {
            if headless_none {
                out.push(mk(None));
            }
            continue;
        }
        for sp in &ports {
            let Some(num) = pod.find_port(sp) else {
                continue;
            };
            out.push(mk(Some(vec![EndpointPort {
                name: sp.name.clone().filter(|n| !n.is_empty()),
                port: num,
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            }])));
        }
    }
    out
}

type PortKey = (String, i32, String, Option<String>);

fn port_key(p: &EndpointPort) -> PortKey {
    (
        p.name.clone().unwrap_or_default(),
        p.port,
        p.protocol.clone().unwrap_or_default(),
        p.app_protocol.clone(),
    )
}

/// `LessEndpointAddress`: IP bytes, then targetRef UID (nil first).
fn less_address(a: &EndpointAddress, b: &EndpointAddress) -> std::cmp::Ordering {
    a.ip.as_bytes()
        .cmp(b.ip.as_bytes())
        .then_with(|| match (&a.target_ref, &b.target_ref) {
            (None, None) => std::cmp::Ordering::Equal,
            (None, Some(_)) => std::cmp::Ordering::Less,
            (Some(_), None) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => x
                .uid
                .as_deref()
                .unwrap_or("")
                .cmp(y.uid.as_deref().unwrap_or("")),
        })
}

/// `RepackSubsets`: merge every address set that shares a port list into
/// one subset; not-ready for any port makes an address not ready; sort
/// addresses by IP then UID, ports and subsets by their MD5 dump hash.
pub fn repack_subsets(subsets: &[EndpointSubset]) -> Vec<EndpointSubset> {
    let mut all: Vec<EndpointAddress> = Vec::new();
    let mut index: HashMap<(String, String), usize> = HashMap::new();
    // port -> (addr idx -> ready), in first-seen port order.
    let mut port_order: Vec<PortKey> = Vec::new();
    let mut port_obj: HashMap<PortKey, Option<EndpointPort>> = HashMap::new();
    let mut by_port: HashMap<PortKey, BTreeMap<usize, bool>> = HashMap::new();
    let sentinel: PortKey = (String::new(), -1, String::new(), None);

    let mut map_addr =
        |addr: &EndpointAddress,
         pk: &PortKey,
         ready: bool,
         by_port: &mut HashMap<PortKey, BTreeMap<usize, bool>>| {
            let key = (
                addr.ip.clone(),
                addr.target_ref
                    .as_ref()
                    .and_then(|r| r.uid.clone())
                    .unwrap_or_default(),
            );
            let idx = *index.entry(key).or_insert_with(|| {
                all.push(addr.clone());
                all.len() - 1
            });
            let set = by_port.entry(pk.clone()).or_default();
            match set.get(&idx) {
                Some(false) => {}
                _ => {
                    set.insert(idx, ready);
                }
            }
        };

    for s in subsets {
        let ports: Vec<(PortKey, Option<EndpointPort>)> =
            match s.ports.as_ref().filter(|p| !p.is_empty()) {
                None => vec![(sentinel.clone(), None)],
                Some(ps) => ps.iter().map(|p| (port_key(p), Some(p.clone()))).collect(),
            };
        for (pk, obj) in ports {
            if !port_obj.contains_key(&pk) {
                port_order.push(pk.clone());
                port_obj.insert(pk.clone(), obj);
            }
            for a in s.addresses.iter().flatten() {
                map_addr(a, &pk, true, &mut by_port);
            }
            for a in s.not_ready_addresses.iter().flatten() {
                map_addr(a, &pk, false, &mut by_port);
            }
        }
    }

    // Group ports by identical (address, ready) sets.
    let mut groups: Vec<(BTreeMap<usize, bool>, Vec<EndpointPort>)> = Vec::new();
    for pk in &port_order {
        let Some(set) = by_port.get(pk) else { continue };
        let pos = match groups.iter().position(|(g, _)| g == set) {
            Some(p) => p,
            None => {
                groups.push((set.clone(), Vec::new()));
                groups.len() - 1
            }
        };
        if pk.1 > 0 {
            if let Some(Some(p)) = port_obj.get(pk) {
                groups[pos].1.push(p.clone());
            }
        }
    }

    let mut out: Vec<EndpointSubset> = groups
        .into_iter()
        .map(|(set, ports)| {
            let mut ready: Vec<EndpointAddress> = Vec::new();
            let mut not_ready: Vec<EndpointAddress> = Vec::new();
            for (idx, r) in set {
                if r {
                    ready.push(all[idx].clone());
                } else {
                    not_ready.push(all[idx].clone());
                }
            }
            ready.sort_by(less_address);
            not_ready.sort_by(less_address);
            let mut ports = ports;
            ports.sort_by_cached_key(|p| hash::md5(hash::spew_core_port(p).as_bytes()));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect();
    out.sort_by_cached_key(|s| hash::md5(hash::spew_core_subset(s).as_bytes()));
    out
}

/// Truncates to [`MAX_CAPACITY`] addresses as upstream does; returns
/// whether anything was over capacity.
pub fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let total_ready: usize = subsets
        .iter()
        .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
        .sum();
    let total_not_ready: usize = subsets
        .iter()
        .map(|s| s.not_ready_addresses.as_ref().map_or(0, Vec::len))
        .sum();
    if total_ready + total_not_ready <= MAX_CAPACITY {
        return false;
    }
    let truncate_ready = total_ready > MAX_CAPACITY;
    let (max, num_total) = if truncate_ready {
        (MAX_CAPACITY, total_ready)
    } else {
        (MAX_CAPACITY - total_ready, total_not_ready)
    };
    let mut can_be_added = max;
    for s in subsets.iter_mut() {
        let in_subset = if truncate_ready {
            s.addresses.as_ref().map_or(0, Vec::len)
        } else {
            s.not_ready_addresses.as_ref().map_or(0, Vec::len)
        };
        let mut to_add = ((in_subset as f64 / num_total as f64) * max as f64).ceil() as usize;
        to_add = to_add.min(can_be_added);
        if truncate_ready {
            if let Some(a) = s.addresses.as_mut() {
                a.truncate(to_add);
                can_be_added -= a.len();
            }
            s.not_ready_addresses = None;
        } else if let Some(a) = s.not_ready_addresses.as_mut() {
            a.truncate(to_add);
            can_be_added -= a.len();
        }
    }
    true
}

fn norm_addr(a: &EndpointAddress) -> EndpointAddress {
    let mut a = a.clone();
    if a.hostname.as_deref() == Some("") {
        a.hostname = None;
    }
    if let Some(r) = a.target_ref.as_mut() {
        r.resource_version = None;
        for f in [
            &mut r.kind,
            &mut r.namespace,
            &mut r.name,
            &mut r.uid,
            &mut r.api_version,
            &mut r.field_path,
        ] {
            if f.as_deref() == Some("") {
                *f = None;
            }
        }
    }
    a
}

fn norm_subsets(
    s: Option<&Vec<EndpointSubset>>,
) -> Vec<(
    Vec<EndpointAddress>,
    Vec<EndpointAddress>,
    Vec<EndpointPort>,
)> {
    s.into_iter()
        .flatten()
        .map(|s| {
            (
                s.addresses.iter().flatten().map(norm_addr).collect(),
                s.not_ready_addresses
                    .iter()
                    .flatten()
                    .map(norm_addr)
                    .collect(),
                s.ports
                    .iter()
                    .flatten()
                    .map(|p| {
                        let mut p = p.clone();
                        if p.name.as_deref() == Some("") {
                            p.name = None;
                        }
                        p
                    })
                    .collect(),
            )
        })
        .collect()
}

/// Subsets equal, ignoring targetRef resourceVersion and nil-vs-empty.
pub fn subsets_equal(a: Option<&Vec<EndpointSubset>>, b: Option<&Vec<EndpointSubset>>) -> bool {
    norm_subsets(a) == norm_subsets(b)
}

fn capacity_annotation_correct(ep: &Endpoints) -> bool {
    let n: usize = ep
        .subsets
        .iter()
        .flatten()
        .map(|s| {
            s.addresses.as_ref().map_or(0, Vec::len)
                + s.not_ready_addresses.as_ref().map_or(0, Vec::len)
        })
        .sum();
    if n > MAX_CAPACITY {
        return false;
    }
    !ep.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_OVER_CAPACITY))
}

/// Computes the write (if any) for a selector Service's Endpoints object.
pub fn reconcile_endpoints(
    svc: &Service,
    pods: &[&PodInfo],
    existing: Option<&Endpoints>,
    trigger_time: Option<DateTime<Utc>>,
) -> EndpointsAction {
    let subsets = repack_subsets(&raw_subsets(svc, pods));
    let svc_labels = svc.metadata.labels.clone().unwrap_or_default();
    if let Some(cur) = existing {
        let mut cmp_labels = cur.metadata.labels.clone().unwrap_or_default();
        cmp_labels.remove(LABEL_HEADLESS);
        if subsets_equal(cur.subsets.as_ref(), Some(&subsets))
            && cmp_labels == svc_labels
            && capacity_annotation_correct(cur)
        {
            return EndpointsAction::None;
        }
    }
    let mut new = match existing {
        Some(cur) => cur.clone(),
        None => Endpoints {
            metadata: ObjectMeta {
                name: svc.metadata.name.clone(),
                namespace: svc.metadata.namespace.clone(),
                ..Default::default()
            },
            subsets: None,
        },
    };
    let mut subsets = subsets;
    let mut ann = new.metadata.annotations.take().unwrap_or_default();
    match trigger_time {
        Some(t) => {
            ann.insert(ANNOTATION_TRIGGER_TIME.into(), rfc3339_nano(t));
        }
        None => {
            ann.remove(ANNOTATION_TRIGGER_TIME);
        }
    }
    if truncate(&mut subsets) {
        ann.insert(ANNOTATION_OVER_CAPACITY.into(), TRUNCATED.into());
    } else {
        ann.remove(ANNOTATION_OVER_CAPACITY);
    }
    new.metadata.annotations = (!ann.is_empty()).then_some(ann);
    let mut labels = svc_labels;
    if is_service_ip_set(svc) {
        labels.remove(LABEL_HEADLESS);
    } else {
        labels.insert(LABEL_HEADLESS.into(), String::new());
    }
    new.metadata.labels = (!labels.is_empty()).then_some(labels);
    new.subsets = (!subsets.is_empty()).then_some(subsets);
    if existing.is_some() {
        EndpointsAction::Update(new)
    } else {
        EndpointsAction::Create(new)
    }
}
