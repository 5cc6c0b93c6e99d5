//! The pure EndpointSlice reconciler: (Service, selected Pods, Nodes, existing
//! slices) → a [`SlicePlan`], with upstream's churn-minimising packing.
//!
//! Differences from upstream, where upstream's choice is arbitrary: Go picks
//! endpoints and slices in map order (random); we pick them in a fixed order
//! (endpoints sorted by address, slices by name) so that plans are
//! reproducible. Counts and placement rules are the same.

use super::build::{
    address_types_for_service, endpoint_key, endpoint_ports, endpoints_equal_beyond_hash,
    new_slice, owned_by, placeholder_equal, pod_to_endpoint, port_map_key, set_trigger_time,
    slice_labels, ANNOTATION_TOPOLOGY_AWARE_HINTS, ANNOTATION_TOPOLOGY_MODE, CONTROLLER_NAME,
};
use super::topology::{self, Heuristic, SliceInfo, TopologyCache};
use crate::views::{NodeInfo, PodInfo};
use crate::writes::{EventSpec, SlicePlan};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort, EndpointSlice};
use std::collections::{BTreeMap, BTreeSet, HashMap};

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
