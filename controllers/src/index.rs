//! Typed in-memory indexes fed by watches, shared by the endpoint controllers:
//! Pods (stripped to [`PodInfo`], indexed by label), Services (indexed by
//! selector term, for Pod → Service mapping), and the [`Change`]s the shared
//! watches (`crate::watches`) deliver to them.

use crate::views::{Labels, PodInfo};
use k8s_openapi::api::core::v1::Service;
use kube::Resource;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;

/// `namespace/name` of an object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjKey {
    /// Builds a key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Key of an object's metadata.
    pub fn of<K: Resource>(obj: &K) -> Self {
        ObjKey::new(
            obj.meta().namespace.clone().unwrap_or_default(),
            obj.meta().name.clone().unwrap_or_default(),
        )
    }
}

impl std::fmt::Display for ObjKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A change from a watch, already converted to the cached type `T`.
#[derive(Debug)]
pub enum Change<T> {
    /// Added or modified.
    Apply(T),
    /// Deleted (last known state).
    Delete(T),
    /// A complete (re)list: everything that exists now.
    Relist(Vec<T>),
}

/// Aborts its tasks when dropped, so that dropping a controller's `run`
/// future (shutdown, or a test "killing" it) also stops its workers,
/// timers and watches.
#[derive(Default)]
pub struct TaskGuard(pub Vec<tokio::task::JoinHandle<()>>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Pods by key, by namespace and by label.
#[derive(Debug, Default)]
pub struct PodIndex {
    pods: HashMap<ObjKey, Arc<PodInfo>>,
    by_ns: HashMap<String, HashSet<String>>,
    by_label: HashMap<(String, String, String), HashSet<String>>,
}

impl PodIndex {
    fn unindex(&mut self, p: &PodInfo) {
        if let Some(s) = self.by_ns.get_mut(&p.namespace) {
            s.remove(&p.name);
            if s.is_empty() {
                self.by_ns.remove(&p.namespace);
            }
        }
        for (k, v) in &p.labels {
            let key = (p.namespace.clone(), k.clone(), v.clone());
            if let Some(s) = self.by_label.get_mut(&key) {
                s.remove(&p.name);
                if s.is_empty() {
                    self.by_label.remove(&key);
                }
            }
        }
    }

    /// Inserts or replaces a Pod; returns the previous version.
    pub fn apply(&mut self, p: PodInfo) -> Option<Arc<PodInfo>> {
        let key = ObjKey::new(p.namespace.clone(), p.name.clone());
        let old = self.pods.remove(&key);
        if let Some(o) = &old {
            self.unindex(o);
        }
        self.by_ns
            .entry(p.namespace.clone())
            .or_default()
            .insert(p.name.clone());
        for (k, v) in &p.labels {
            self.by_label
                .entry((p.namespace.clone(), k.clone(), v.clone()))
                .or_default()
                .insert(p.name.clone());
        }
        self.pods.insert(key, Arc::new(p));
        old
    }

    /// Removes a Pod; returns it.
    pub fn delete(&mut self, key: &ObjKey) -> Option<Arc<PodInfo>> {
        let old = self.pods.remove(key)?;
        self.unindex(&old);
        Some(old)
    }

    /// Keys of every cached Pod.
    pub fn keys(&self) -> Vec<ObjKey> {
        self.pods.keys().cloned().collect()
    }

    /// Number of cached Pods.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Pods of `namespace` matching a (map) selector; `{}` matches all.
    pub fn select(
        &self,
        namespace: &str,
        selector: &BTreeMap<String, String>,
    ) -> Vec<Arc<PodInfo>> {
        let candidates: Option<&HashSet<String>> = if selector.is_empty() {
            self.by_ns.get(namespace)
        } else {
            let mut best: Option<&HashSet<String>> = None;
            for (k, v) in selector {
                match self
                    .by_label
                    .get(&(namespace.to_string(), k.clone(), v.clone()))
                {
                    None => return Vec::new(),
                    Some(s) if best.is_none_or(|b| s.len() < b.len()) => best = Some(s),
                    Some(_) => {}
                }
            }
            best
        };
        let mut out: Vec<Arc<PodInfo>> = candidates
            .into_iter()
            .flatten()
            .filter_map(|n| self.pods.get(&ObjKey::new(namespace, n.clone())))
            .filter(|p| p.labels.matches(selector))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Every Pod of a namespace.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<PodInfo>> {
        self.select(namespace, &BTreeMap::new())
    }
}

/// Services by key, indexed by selector term.
#[derive(Debug, Default)]
pub struct ServiceIndex {
    services: HashMap<ObjKey, Arc<Service>>,
    by_term: HashMap<(String, String, String), HashSet<String>>,
    match_all: HashMap<String, HashSet<String>>,
}

fn selector_of(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec.as_ref().and_then(|s| s.selector.as_ref())
}

impl ServiceIndex {
    fn unindex(&mut self, key: &ObjKey, svc: &Service) {
        match selector_of(svc) {
            None => {}
            Some(sel) if sel.is_empty() => {
                if let Some(s) = self.match_all.get_mut(&key.namespace) {
                    s.remove(&key.name);
                }
            }
            Some(sel) => {
                for (k, v) in sel {
                    let t = (key.namespace.clone(), k.clone(), v.clone());
                    if let Some(s) = self.by_term.get_mut(&t) {
                        s.remove(&key.name);
                        if s.is_empty() {
                            self.by_term.remove(&t);
                        }
                    }
                }
            }
        }
    }

    /// Inserts or replaces a Service (managedFields dropped); returns the previous version.
    pub fn apply(&mut self, mut svc: Service) -> Option<Arc<Service>> {
        svc.metadata.managed_fields = None;
        let key = ObjKey::of(&svc);
        let old = self.services.remove(&key);
        if let Some(o) = &old {
            self.unindex(&key, o);
        }
        match selector_of(&svc) {
            None => {}
            Some(sel) if sel.is_empty() => {
                self.match_all
                    .entry(key.namespace.clone())
                    .or_default()
                    .insert(key.name.clone());
            }
            Some(sel) => {
                for (k, v) in sel {
                    self.by_term
                        .entry((key.namespace.clone(), k.clone(), v.clone()))
                        .or_default()
                        .insert(key.name.clone());
                }
            }
        }
        self.services.insert(key, Arc::new(svc));
        old
    }

    /// Removes a Service.
    pub fn delete(&mut self, key: &ObjKey) -> Option<Arc<Service>> {
        let old = self.services.remove(key)?;
        self.unindex(key, &old);
        Some(old)
    }

    /// Folds one watch change into the index and returns the keys of every Service it touched
    /// (applied, deleted, or removed because a relist no longer lists it).
    pub fn fold(&mut self, c: Change<Service>) -> Vec<ObjKey> {
        let mut keys = Vec::new();
        match c {
            Change::Apply(s) => {
                keys.push(ObjKey::of(&s));
                self.apply(s);
            }
            Change::Delete(s) => {
                let k = ObjKey::of(&s);
                self.delete(&k);
                keys.push(k);
            }
            Change::Relist(list) => {
                let live: HashSet<ObjKey> = list.iter().map(ObjKey::of).collect();
                for k in self.keys() {
                    if !live.contains(&k) {
                        self.delete(&k);
                        keys.push(k);
                    }
                }
                for s in list {
                    keys.push(ObjKey::of(&s));
                    self.apply(s);
                }
            }
        }
        keys
    }

    /// A Service by key.
    pub fn get(&self, key: &ObjKey) -> Option<Arc<Service>> {
        self.services.get(key).cloned()
    }

    /// Every key.
    pub fn keys(&self) -> Vec<ObjKey> {
        self.services.keys().cloned().collect()
    }

    /// Services (with a selector) whose selector matches these Pod labels.
    pub fn matching(&self, namespace: &str, labels: &Labels) -> HashSet<ObjKey> {
        let mut out = HashSet::new();
        for n in self.match_all.get(namespace).into_iter().flatten() {
            out.insert(ObjKey::new(namespace, n.clone()));
        }
        let mut cands: HashSet<&String> = HashSet::new();
        for (k, v) in labels {
            if let Some(s) = self
                .by_term
                .get(&(namespace.to_string(), k.clone(), v.clone()))
            {
                cands.extend(s.iter());
            }
        }
        for n in cands {
            let key = ObjKey::new(namespace, n.clone());
            if let Some(sel) = self
                .services
                .get(&key)
                .and_then(|s| selector_of(s).cloned())
            {
                if sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                    out.insert(key);
                }
            }
        }
        out
    }
}

/// Folds one Pod watch change into `pods` and returns the Services (from `services`) whose
/// membership or endpoints it may have changed.
pub fn fold_pod_change(
    pods: &mut PodIndex,
    services: &ServiceIndex,
    c: Change<PodInfo>,
) -> HashSet<ObjKey> {
    let mut keys = HashSet::new();
    match c {
        Change::Apply(p) => {
            let old = pods.apply(p.clone());
            keys.extend(services_for_pod_change(services, old.as_deref(), Some(&p)));
        }
        Change::Delete(p) => {
            let old = pods.delete(&ObjKey::new(p.namespace.clone(), p.name.clone()));
            keys.extend(services_for_pod_change(
                services,
                old.as_deref().or(Some(&p)),
                None,
            ));
        }
        Change::Relist(list) => {
            let live: HashSet<ObjKey> = list
                .iter()
                .map(|p| ObjKey::new(p.namespace.clone(), p.name.clone()))
                .collect();
            for k in pods.keys() {
                if !live.contains(&k) {
                    if let Some(old) = pods.delete(&k) {
                        keys.extend(services_for_pod_change(services, Some(&old), None));
                    }
                }
            }
            for p in list {
                let old = pods.apply(p.clone());
                keys.extend(services_for_pod_change(services, old.as_deref(), Some(&p)));
            }
        }
    }
    keys
}

/// Services to resync after a Pod change (a superset of upstream's
/// `GetPodUpdateProjectionKey`: any relevant change queues the union of the
/// Services matching the old and the new labels).
pub fn services_for_pod_change(
    services: &ServiceIndex,
    old: Option<&PodInfo>,
    new: Option<&PodInfo>,
) -> HashSet<ObjKey> {
    match (old, new) {
        (None, None) => HashSet::new(),
        (Some(p), None) | (None, Some(p)) => services.matching(&p.namespace, &p.labels),
        (Some(o), Some(n)) => {
            let mut o2 = o.clone();
            o2.resource_version = n.resource_version.clone();
            if o2 == *n {
                return HashSet::new();
            }
            let mut out = services.matching(&n.namespace, &n.labels);
            if o.labels != n.labels {
                out.extend(services.matching(&o.namespace, &o.labels));
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, labels: &[(&str, &str)]) -> PodInfo {
        PodInfo {
            namespace: "ns".into(),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    fn svc(name: &str, sel: Option<&[(&str, &str)]>) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("ns".into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: sel.map(|s| {
                    s.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn select_and_reverse_mapping() {
        let mut pods = PodIndex::default();
        pods.apply(pod("a", &[("app", "web"), ("tier", "fe")]));
        pods.apply(pod("b", &[("app", "web")]));
        pods.apply(pod("c", &[("app", "db")]));
        let sel: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        assert_eq!(pods.select("ns", &sel).len(), 2);
        assert_eq!(pods.select("ns", &BTreeMap::new()).len(), 3);
        assert!(pods.select("other", &sel).is_empty());
        pods.apply(pod("b", &[("app", "db")]));
        assert_eq!(pods.select("ns", &sel).len(), 1);

        let mut svcs = ServiceIndex::default();
        svcs.apply(svc("web", Some(&[("app", "web")])));
        svcs.apply(svc("all", Some(&[])));
        svcs.apply(svc("none", None));
        let a = pod("a", &[("app", "web")]);
        let m = svcs.matching("ns", &a.labels);
        assert_eq!(m.len(), 2);
        let mut moved = a.clone();
        moved.labels = [("app".to_string(), "db".to_string())].into();
        let keys = services_for_pod_change(&svcs, Some(&a), Some(&moved));
        assert!(
            keys.contains(&ObjKey::new("ns", "web")),
            "old membership queued"
        );
        let mut rv_only = a.clone();
        rv_only.resource_version = "9".into();
        assert!(services_for_pod_change(&svcs, Some(&a), Some(&rv_only)).is_empty());
    }
}
