//! Topology hints: `trafficDistribution` (PreferClose / PreferSameZone /
//! PreferSameNode) and the legacy `service.kubernetes.io/topology-mode: Auto`
//! allocation with its safeguards, as upstream's `trafficdist` and
//! `topologycache` packages do them.

use crate::views::NodeInfo;
use crate::writes::EventSpec;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointHints, EndpointSlice, ForNode, ForZone};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Maximum overload any one endpoint should see under Auto hints.
const OVERLOAD_THRESHOLD: f64 = 0.2;

/// Event messages, identical to upstream's.
pub mod messages {
    /// An endpoint has no zone.
    pub const NO_ZONE_SPECIFIED: &str = "One or more endpoints do not have a zone specified";
    /// Nothing could be allocated.
    pub const NO_ALLOCATED_HINTS_FOR_ZONES: &str = "No hints allocated for zones";
    /// Hints turned on.
    pub const TOPOLOGY_AWARE_HINTS_ENABLED: &str = "Topology Aware Hints has been enabled";
    /// Hints turned off.
    pub const TOPOLOGY_AWARE_HINTS_DISABLED: &str = "Topology Aware Hints has been disabled";
    /// A node lacks zone or CPU.
    pub const INSUFFICIENT_NODE_INFO: &str =
        "Insufficient Node information: allocatable CPU or zone not specified on one or more nodes";
    /// Single zone.
    pub const NODES_READY_IN_ONE_ZONE_ONLY: &str = "Nodes only ready in one zone";
    /// Fewer endpoints than zones.
    pub const INSUFFICIENT_NUMBER_OF_ENDPOINTS: &str = "Insufficient number of endpoints";
    /// Minimums impossible.
    pub const MIN_ALLOCATION_EXCEEDS_OVERLOAD_THRESHOLD: &str =
        "Unable to allocate minimum required endpoints to each zone without exceeding overload threshold";
}

/// `FormatWithAddressType`.
pub fn with_address_type(s: &str, address_type: &str) -> String {
    format!("{s}, addressType: {address_type}")
}

/// Slices of one Service and address type, split by what the reconciler
/// is about to do with them.
#[derive(Debug, Default)]
pub struct SliceInfo {
    /// `namespace/name`.
    pub service_key: String,
    /// `IPv4` / `IPv6`.
    pub address_type: String,
    /// Slices to create.
    pub to_create: Vec<EndpointSlice>,
    /// Slices to update.
    pub to_update: Vec<EndpointSlice>,
    /// Existing slices nothing touches (yet).
    pub unchanged: Vec<EndpointSlice>,
}

fn ready(ep: &Endpoint) -> bool {
    ep.conditions.as_ref().and_then(|c| c.ready) == Some(true)
}

fn has_hints(ep: &Endpoint) -> bool {
    ep.hints.is_some()
}

/// `RemoveHintsFromSlices`: strip hints from creates/updates, and move every
/// unchanged slice that carries a hint to the updates, stripped.
pub fn remove_hints_from_slices(si: &mut SliceInfo) {
    for s in si.to_create.iter_mut().chain(si.to_update.iter_mut()) {
        for ep in &mut s.endpoints {
            ep.hints = None;
        }
    }
    let unchanged = std::mem::take(&mut si.unchanged);
    for mut s in unchanged {
        if s.endpoints.iter().any(has_hints) {
            for ep in &mut s.endpoints {
                ep.hints = None;
            }
            si.to_update.push(s);
        } else {
            si.unchanged.push(s);
        }
    }
}

/// Which `trafficDistribution` heuristic applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heuristic {
    /// No (valid) value: strip every hint.
    Default,
    /// PreferClose / PreferSameZone (`node_hints = false`) or PreferSameNode.
    PreferClose {
        /// Also add `forNodes`.
        node_hints: bool,
    },
}

impl Heuristic {
    /// Heuristic for a `trafficDistribution` value.
    pub fn for_value(v: Option<&str>) -> Self {
        match v {
            Some("PreferClose") | Some("PreferSameZone") => {
                Heuristic::PreferClose { node_hints: false }
            }
            Some("PreferSameNode") => Heuristic::PreferClose { node_hints: true },
            _ => Heuristic::Default,
        }
    }

    fn needs_update(self, s: &EndpointSlice) -> bool {
        match self {
            Heuristic::Default => s.endpoints.iter().any(has_hints),
            Heuristic::PreferClose { node_hints } => {
                s.endpoints.iter().filter(|e| ready(e)).any(|ep| {
                    let zones = ep.hints.as_ref().and_then(|h| h.for_zones.as_ref());
                    let nodes = ep.hints.as_ref().and_then(|h| h.for_nodes.as_ref());
                    let zone_bad = match &ep.zone {
                        Some(z) => !matches!(zones, Some(v) if v.len() == 1 && &v[0].name == z),
                        None => zones.is_some_and(|v| !v.is_empty()),
                    };
                    let node_bad = match (&ep.node_name, node_hints) {
                        (Some(n), true) => {
                            !matches!(nodes, Some(v) if v.len() == 1 && &v[0].name == n)
                        }
                        _ => nodes.is_some_and(|v| !v.is_empty()),
                    };
                    zone_bad || node_bad
                })
            }
        }
    }

    fn update(self, s: &mut EndpointSlice) {
        for ep in &mut s.endpoints {
            match self {
                Heuristic::Default => ep.hints = None,
                Heuristic::PreferClose { node_hints } => {
                    if !ready(ep) {
                        continue;
                    }
                    let for_zones = ep.zone.as_ref().map(|z| vec![ForZone { name: z.clone() }]);
                    let for_nodes = if node_hints {
                        ep.node_name
                            .as_ref()
                            .map(|n| vec![ForNode { name: n.clone() }])
                    } else {
                        None
                    };
                    ep.hints = if for_zones.is_some() || for_nodes.is_some() {
                        Some(EndpointHints {
                            for_zones,
                            for_nodes,
                        })
                    } else {
                        None
                    };
                }
            }
        }
    }
}

/// `trafficdist.ReconcileHints`: unchanged slices with missing or wrong hints
/// move to the updates; every create and update gets its hints set.
pub fn reconcile_traffic_distribution(h: Heuristic, si: &mut SliceInfo) {
    let unchanged = std::mem::take(&mut si.unchanged);
    for s in unchanged {
        if h.needs_update(&s) {
            si.to_update.push(s);
        } else {
            si.unchanged.push(s);
        }
    }
    for s in si.to_create.iter_mut().chain(si.to_update.iter_mut()) {
        h.update(s);
    }
}

#[derive(Clone, Copy, Debug)]
struct Allocation {
    minimum: i64,
    maximum: i64,
    desired: f64,
}

/// Cluster-wide zone/CPU distribution and the per-Service hint state of
/// the Auto topology mode (upstream's `TopologyCache`).
#[derive(Debug, Default)]
pub struct TopologyCache {
    cpu_ratios_by_zone: Option<BTreeMap<String, f64>>,
    endpoints_by_service: HashMap<String, HashMap<String, BTreeMap<String, i64>>>,
    hints_populated: BTreeSet<String>,
}

impl TopologyCache {
    /// Recomputes the zone CPU ratios from the Nodes (`SetNodes`).
    pub fn set_nodes<'a>(&mut self, nodes: impl IntoIterator<Item = &'a NodeInfo>) {
        let mut cpu: BTreeMap<String, i64> = BTreeMap::new();
        let mut total = 0i64;
        let mut sufficient = true;
        for n in nodes {
            if n.excluded || !n.ready {
                continue;
            }
            match &n.zone {
                Some(z) if !z.is_empty() && n.cpu_milli > 0 => {
                    total += n.cpu_milli;
                    *cpu.entry(z.clone()).or_default() += n.cpu_milli;
                }
                _ => {
                    sufficient = false;
                    break;
                }
            }
        }
        if total == 0 || !sufficient || cpu.len() < 2 {
            self.cpu_ratios_by_zone = None;
        } else {
            self.cpu_ratios_by_zone = Some(
                cpu.into_iter()
                    .map(|(z, c)| (z, c as f64 / total as f64))
                    .collect(),
            );
        }
    }

    /// The Service had hints populated by Auto mode.
    pub fn has_populated_hints(&self, key: &str) -> bool {
        self.hints_populated.contains(key)
    }

    /// Forgets hints of a Service and address type.
    pub fn remove_hints(&mut self, key: &str, address_type: &str) {
        if let Some(m) = self.endpoints_by_service.get_mut(key) {
            m.remove(address_type);
            if m.is_empty() {
                self.endpoints_by_service.remove(key);
            }
        }
        self.hints_populated.remove(key);
    }

    /// Forgets a deleted Service.
    pub fn delete_service(&mut self, key: &str) {
        self.endpoints_by_service.remove(key);
        self.hints_populated.remove(key);
    }

    fn set_hints(&mut self, key: &str, address_type: &str, by_zone: BTreeMap<String, i64>) {
        self.endpoints_by_service
            .entry(key.to_string())
            .or_default()
            .insert(address_type.to_string(), by_zone);
        self.hints_populated.insert(key.to_string());
    }

    /// Services whose current hints leave some zone under its minimum
    /// (`GetOverloadedServices`); requeued when Nodes change.
    pub fn overloaded_services(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (key, by_type) in &self.endpoints_by_service {
            if by_type.values().any(|ezi| self.service_overloaded(ezi)) {
                out.push(key.clone());
            }
        }
        out.sort();
        out
    }

    fn service_overloaded(&self, ezi: &BTreeMap<String, i64>) -> bool {
        if ezi.is_empty() {
            return false;
        }
        let Some(ratios) = &self.cpu_ratios_by_zone else {
            return true;
        };
        let total: f64 = ezi.values().map(|v| *v as f64).sum();
        for (zone, ratio) in ratios {
            let Some(n) = ezi.get(zone) else { return true };
            let min = (total * ratio * (1.0 / (1.0 + OVERLOAD_THRESHOLD))).ceil();
            if (*n as f64) < min {
                return true;
            }
        }
        false
    }

    fn allocations(&self, n: i64) -> Result<BTreeMap<String, Allocation>, String> {
        let Some(ratios) = &self.cpu_ratios_by_zone else {
            return Err(messages::INSUFFICIENT_NODE_INFO.to_string());
        };
        if ratios.len() < 2 {
            return Err(messages::NODES_READY_IN_ONE_ZONE_ONLY.to_string());
        }
        if ratios.len() as i64 > n {
            return Err(format!(
                "{} ({} endpoints, {} zones)",
                messages::INSUFFICIENT_NUMBER_OF_ENDPOINTS,
                n,
                ratios.len()
            ));
        }
        let mut remaining = n;
        let mut min_total = 0;
        let mut out = BTreeMap::new();
        for (zone, ratio) in ratios {
            let desired = ratio * n as f64;
            let minimum = (desired * (1.0 / (1.0 + OVERLOAD_THRESHOLD))).ceil() as i64;
            out.insert(
                zone.clone(),
                Allocation {
                    minimum,
                    maximum: 0,
                    desired: desired.max(minimum as f64),
                },
            );
            min_total += minimum;
            remaining -= minimum;
            if remaining < 0 {
                return Err(format!(
                    "{} ({} endpoints, {} zones)",
                    messages::MIN_ALLOCATION_EXCEEDS_OVERLOAD_THRESHOLD,
                    n,
                    ratios.len()
                ));
            }
        }
        for a in out.values_mut() {
            a.maximum = a.minimum + n - min_total;
        }
        Ok(out)
    }

    /// `AddHints`: allocate zone hints across the Service's ready endpoints,
    /// or remove them all and explain why in an event.
    pub fn add_hints(&mut self, si: &mut SliceInfo) -> Vec<EventSpec> {
        let total: i64 = si
            .to_create
            .iter()
            .chain(si.to_update.iter())
            .chain(si.unchanged.iter())
            .map(|s| s.endpoints.iter().filter(|e| ready(e)).count() as i64)
            .sum();
        let disabled = |msg: &str, at: &str| {
            EventSpec::warning("TopologyAwareHintsDisabled", with_address_type(msg, at))
        };
        let allocations = match self.allocations(total) {
            Ok(a) => a,
            Err(msg) => {
                self.remove_hints(&si.service_key, &si.address_type);
                remove_hints_from_slices(si);
                return vec![disabled(&msg, &si.address_type)];
            }
        };

        // Hints already allocated in unchanged slices; invalid ones go to updates.
        let mut allocated: BTreeMap<String, i64> = BTreeMap::new();
        let unchanged = std::mem::take(&mut si.unchanged);
        for s in unchanged {
            match hints_by_zone(&s, &allocated, &allocations) {
                None => si.to_update.push(s),
                Some(h) => {
                    for (z, n) in h {
                        *allocated.entry(z).or_default() += n;
                    }
                    si.unchanged.push(s);
                }
            }
        }

        // Step 1: same-zone hints.
        for s in si.to_create.iter_mut().chain(si.to_update.iter_mut()) {
            for ep in &mut s.endpoints {
                if !ready(ep) {
                    ep.hints = None;
                    continue;
                }
                let zone = match &ep.zone {
                    Some(z) if !z.is_empty() => z.clone(),
                    _ => {
                        self.remove_hints(&si.service_key, &si.address_type);
                        remove_hints_from_slices(si);
                        return vec![disabled(messages::NO_ZONE_SPECIFIED, &si.address_type)];
                    }
                };
                *allocated.entry(zone.clone()).or_default() += 1;
                ep.hints = Some(EndpointHints {
                    for_zones: Some(vec![ForZone { name: zone }]),
                    for_nodes: None,
                });
            }
        }

        // Steps 2 and 3: move hints from over- to under-allocated zones.
        let (mut giving, mut receiving) = giving_and_receiving(&allocations, &allocated);
        let mut redistributions: BTreeMap<String, i64> = BTreeMap::new();
        'outer: for s in si.to_create.iter_mut().chain(si.to_update.iter_mut()) {
            for ep in &mut s.endpoints {
                if !ready(ep) {
                    continue;
                }
                if giving.is_empty() || receiving.is_empty() {
                    break 'outer;
                }
                let Some(zone) = ep.zone.clone().filter(|z| !z.is_empty()) else {
                    continue;
                };
                if giving.get(&zone).copied().unwrap_or(0) > 0 {
                    let target = receiving
                        .iter()
                        .find(|(_, n)| **n > 0)
                        .map(|(z, _)| z.clone());
                    if let Some(rz) = target {
                        ep.hints = Some(EndpointHints {
                            for_zones: Some(vec![ForZone { name: rz.clone() }]),
                            for_nodes: None,
                        });
                        dec_or_remove(&mut giving, &zone);
                        dec_or_remove(&mut receiving, &rz);
                        *redistributions.entry(rz).or_default() += 1;
                        *redistributions.entry(zone).or_default() -= 1;
                    }
                }
            }
        }
        for (z, d) in redistributions {
            *allocated.entry(z).or_default() += d;
        }
        if allocated.is_empty() {
            self.remove_hints(&si.service_key, &si.address_type);
            remove_hints_from_slices(si);
            return vec![disabled(
                messages::NO_ALLOCATED_HINTS_FOR_ZONES,
                &si.address_type,
            )];
        }
        let was_enabled = self.has_populated_hints(&si.service_key);
        self.set_hints(&si.service_key.clone(), &si.address_type.clone(), allocated);
        if was_enabled {
            Vec::new()
        } else {
            vec![EventSpec::normal(
                "TopologyAwareHintsEnabled",
                with_address_type(messages::TOPOLOGY_AWARE_HINTS_ENABLED, &si.address_type),
            )]
        }
    }
}

fn dec_or_remove(m: &mut BTreeMap<String, i64>, k: &str) {
    if let Some(v) = m.get_mut(k) {
        if *v <= 1 {
            m.remove(k);
        } else {
            *v -= 1;
        }
    }
}

fn hints_by_zone(
    s: &EndpointSlice,
    allocated: &BTreeMap<String, i64>,
    allocations: &BTreeMap<String, Allocation>,
) -> Option<BTreeMap<String, i64>> {
    let mut by_zone: BTreeMap<String, i64> = BTreeMap::new();
    for ep in s.endpoints.iter().filter(|e| ready(e)) {
        let zones = ep.hints.as_ref().and_then(|h| h.for_zones.as_ref())?;
        if zones.is_empty() {
            return None;
        }
        for z in zones {
            if !allocations.contains_key(&z.name) {
                return None;
            }
            *by_zone.entry(z.name.clone()).or_default() += 1;
        }
    }
    for (zone, n) in &by_zone {
        let already = allocated.get(zone).copied().unwrap_or(0);
        match allocations.get(zone) {
            Some(a) if n + already <= a.maximum => {}
            _ => return None,
        }
    }
    Some(by_zone)
}

fn most(m: &BTreeMap<String, f64>) -> (Option<String>, f64) {
    let mut zone = None;
    let mut num = 0.0;
    for (z, n) in m {
        if *n > num {
            zone = Some(z.clone());
            num = *n;
        }
    }
    (zone, num)
}

fn giving_and_receiving(
    allocations: &BTreeMap<String, Allocation>,
    allocated: &BTreeMap<String, i64>,
) -> (BTreeMap<String, i64>, BTreeMap<String, i64>) {
    let mut giving_d: BTreeMap<String, f64> = BTreeMap::new();
    let mut receiving_d: BTreeMap<String, f64> = BTreeMap::new();
    for (zone, a) in allocations {
        let have = allocated.get(zone).copied().unwrap_or(0) as f64;
        if have > a.desired {
            giving_d.insert(zone.clone(), have - a.desired);
        } else if have < a.desired {
            receiving_d.insert(zone.clone(), a.desired - have);
        }
    }
    let mut giving = BTreeMap::new();
    let mut receiving = BTreeMap::new();
    loop {
        let (gz, ng) = most(&giving_d);
        let (rz, nr) = most(&receiving_d);
        let (Some(gz), Some(rz)) = (gz, rz) else {
            break;
        };
        if (ng < 1.0 && nr < 1.0) || ng < 0.5 || nr < 0.5 {
            break;
        }
        *giving.entry(gz.clone()).or_insert(0) += 1;
        *giving_d.entry(gz).or_insert(0.0) -= 1.0;
        *receiving.entry(rz.clone()).or_insert(0) += 1;
        *receiving_d.entry(rz).or_insert(0.0) -= 1.0;
    }
    (giving, receiving)
}
