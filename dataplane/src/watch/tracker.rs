//! Change tracking: watch events are folded into the [`ProxyState`] and the set of Services to re-render.
//! Relists (`Init … InitDone`) replace the state and mark the difference, so deletions missed while
//! disconnected are applied.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::types::{EndpointSliceInfo, ProxyState, ServiceInfo, ServiceKey};
use crate::watch::convert::NodeInfo;
use crate::watch::service_cidrs::ServiceCidrSource;

/// Folded watch state.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Current Services and EndpointSlices.
    pub state: ProxyState,
    /// Services whose Service or slices changed since the last sync.
    pub changed: BTreeSet<ServiceKey>,
    /// Services initial list done.
    pub services_synced: bool,
    /// EndpointSlices initial list done.
    pub slices_synced: bool,
    /// Node initial list done.
    pub node_synced: bool,
    /// The proxy's Node, when it exists.
    pub node: Option<NodeInfo>,
    /// The Node changed since the last sync.
    pub node_changed: bool,
    /// Where the Service CIDRs come from (the flag, or ServiceCIDR objects).
    pub service_cidrs: ServiceCidrSource,
    /// The Service CIDRs may have changed since the last sync.
    pub service_cidrs_changed: bool,
    /// Trigger times (unix seconds) of EndpointSlice changes not yet programmed.
    pub triggers: Vec<f64>,
    slice_owner: HashMap<(String, String), ServiceKey>,
}

impl Tracker {
    /// An empty tracker whose Service CIDRs come from `source`.
    pub fn with_service_cidrs(source: ServiceCidrSource) -> Self {
        Tracker {
            service_cidrs: source,
            ..Tracker::default()
        }
    }

    /// Whether every initial list is done (no sync happens before).
    pub fn ready(&self) -> bool {
        self.services_synced && self.slices_synced && self.node_synced && self.service_cidrs.ready()
    }

    /// Applies a Service add/update (`Some`) or delete / ignored Service (`None`). Returns whether
    /// anything changed.
    pub fn apply_service(&mut self, key: ServiceKey, info: Option<ServiceInfo>) -> bool {
        let changed = match info {
            Some(info) => {
                if self.state.services.get(&key) == Some(&info) {
                    false
                } else {
                    self.state.services.insert(key.clone(), info);
                    true
                }
            }
            None => self.state.services.remove(&key).is_some(),
        };
        if changed {
            self.changed.insert(key);
        }
        changed
    }

    /// Replaces all Services after a relist.
    pub fn reset_services(&mut self, all: BTreeMap<ServiceKey, ServiceInfo>) -> bool {
        let mut any = false;
        let gone: Vec<ServiceKey> = self
            .state
            .services
            .keys()
            .filter(|k| !all.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            any |= self.apply_service(k, None);
        }
        for (k, v) in all {
            any |= self.apply_service(k, Some(v));
        }
        self.services_synced = true;
        any
    }

    /// Applies an EndpointSlice add/update (`Some`) or delete / ignored slice (`None`).
    pub fn apply_slice(
        &mut self,
        namespace: &str,
        name: &str,
        info: Option<EndpointSliceInfo>,
    ) -> bool {
        let id = (namespace.to_string(), name.to_string());
        let new_owner = info
            .as_ref()
            .map(|s| ServiceKey::new(&s.namespace, &s.service_name));
        let old_owner = self.slice_owner.get(&id).cloned();
        let old = old_owner
            .as_ref()
            .and_then(|o| self.state.slices.get(o))
            .and_then(|m| m.get(name))
            .cloned();
        if old.as_ref() == info.as_ref() {
            return false;
        }
        if let Some(o) = &old_owner {
            self.state.remove_slice(o, name);
            self.changed.insert(o.clone());
            self.slice_owner.remove(&id);
        }
        if let (Some(info), Some(owner)) = (info, new_owner) {
            if let Some(t) = info.trigger_time {
                self.triggers.push(t);
            }
            self.state.upsert_slice(info);
            self.slice_owner.insert(id, owner.clone());
            self.changed.insert(owner);
        }
        true
    }

    /// Replaces all EndpointSlices after a relist.
    pub fn reset_slices(&mut self, all: Vec<EndpointSliceInfo>) -> bool {
        let mut any = false;
        let wanted: BTreeSet<(String, String)> = all
            .iter()
            .map(|s| (s.namespace.clone(), s.name.clone()))
            .collect();
        let gone: Vec<(String, String)> = self
            .slice_owner
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for (ns, name) in gone {
            any |= self.apply_slice(&ns, &name, None);
        }
        for s in all {
            let (ns, name) = (s.namespace.clone(), s.name.clone());
            any |= self.apply_slice(&ns, &name, Some(s));
        }
        self.slices_synced = true;
        any
    }

    /// Records the Node (or its absence).
    pub fn apply_node(&mut self, node: Option<NodeInfo>) -> bool {
        if self.node == node {
            return false;
        }
        self.node = node;
        self.node_changed = true;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::*;

    fn info(name: &str) -> ServiceInfo {
        ServiceInfo::cluster_ip(
            ServiceKey::new("ns", name),
            vec!["10.96.0.1".parse().unwrap()],
            vec![],
        )
    }

    fn slice(name: &str, svc: &str) -> EndpointSliceInfo {
        EndpointSliceInfo {
            namespace: "ns".into(),
            name: name.into(),
            service_name: svc.into(),
            family: Family::Ipv4,
            ports: vec![],
            endpoints: vec![],
            trigger_time: Some(5.0),
        }
    }

    #[test]
    fn tracks_changes_and_relists() {
        let mut t = Tracker::default();
        assert!(!t.ready());
        assert!(t.apply_service(ServiceKey::new("ns", "a"), Some(info("a"))));
        assert!(
            !t.apply_service(ServiceKey::new("ns", "a"), Some(info("a"))),
            "no-op update"
        );
        assert!(t.apply_slice("ns", "a-1", Some(slice("a-1", "a"))));
        assert_eq!(t.triggers, vec![5.0]);
        // The slice moves to another Service: both are marked.
        t.changed.clear();
        assert!(t.apply_slice("ns", "a-1", Some(slice("a-1", "b"))));
        assert_eq!(
            t.changed,
            [ServiceKey::new("ns", "a"), ServiceKey::new("ns", "b")].into()
        );
        assert!(t
            .state
            .slices_for(&ServiceKey::new("ns", "a"))
            .next()
            .is_none());
        // A relist without the Service and the slice deletes both.
        t.changed.clear();
        assert!(t.reset_services(BTreeMap::new()));
        assert!(t.reset_slices(vec![]));
        assert!(t.state.services.is_empty() && t.state.slices.is_empty());
        assert!(t.changed.contains(&ServiceKey::new("ns", "a")));
        assert!(t.services_synced && t.slices_synced && !t.ready());
        t.node_synced = true;
        assert!(t.ready());
    }

    /// The sync loop's private copy, fed only the changed keys, stays equal to the tracker's
    /// state through adds, updates, slice moves, deletes and relists.
    #[test]
    fn a_copy_fed_the_changed_keys_stays_equal() {
        let mut t = Tracker::default();
        let mut copy = t.state.clone();
        let sync = |t: &mut Tracker, copy: &mut ProxyState| {
            let changed = std::mem::take(&mut t.changed);
            copy.copy_keys_from(&t.state, &changed);
            assert_eq!(*copy, t.state);
        };
        let names = ["a", "b", "c", "d"];
        for round in 0..40usize {
            let n = names[round % names.len()];
            let other = names[(round * 7 + 1) % names.len()];
            match round % 5 {
                0 => {
                    t.apply_service(ServiceKey::new("ns", n), Some(info(n)));
                }
                1 => {
                    t.apply_slice("ns", &format!("{n}-1"), Some(slice(&format!("{n}-1"), n)));
                }
                2 => {
                    // Moves a slice to another Service.
                    t.apply_slice(
                        "ns",
                        &format!("{n}-1"),
                        Some(slice(&format!("{n}-1"), other)),
                    );
                }
                3 => {
                    t.apply_service(ServiceKey::new("ns", other), None);
                    t.apply_slice("ns", &format!("{other}-1"), None);
                }
                _ => {
                    let keep: BTreeMap<ServiceKey, ServiceInfo> =
                        [(ServiceKey::new("ns", n), info(n))].into();
                    t.reset_services(keep);
                }
            }
            sync(&mut t, &mut copy);
        }
    }
}
