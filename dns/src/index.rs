//! In-memory index of the cluster objects DNS answers from (pure: no I/O).
//!
//! The index holds only what DNS needs: Namespaces (by name), Services (type, ClusterIPs,
//! ports, ExternalName, headless, `publishNotReadyAddresses`), EndpointSlices grouped by the
//! `kubernetes.io/service-name` label, and — for `pods verified` — Pod IPs. Each kind has
//! `apply_*` (add or replace one object), `delete_*` and `reset_*` (replace every object of the
//! kind at once, after a full list). Reverse maps from IP to ClusterIP Services and to
//! EndpointSlices serve PTR queries.
//!
//! Keys are lowercase: Kubernetes object names are lowercase DNS labels, and DNS names compare
//! case-insensitively, so queries are lowercased before lookup.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

/// `(namespace, name)` of an object.
pub type Key = (String, String);

/// How a Service is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    /// A ClusterIP (or NodePort / LoadBalancer) Service: its ClusterIPs, primary first.
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: answered with the ready endpoints' addresses.
    Headless,
    /// `type: ExternalName`: a CNAME to this name.
    ExternalName(String),
}

/// One port of a Service or an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// The port's name (`""` when unnamed).
    pub name: String,
    /// `TCP`, `UDP` or `SCTP` (as in the API object).
    pub protocol: String,
    /// The port number.
    pub port: u16,
}

/// The parts of a Service DNS answers from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// ClusterIP, headless or ExternalName.
    pub kind: ServiceKind,
    /// `spec.ports`.
    pub ports: Vec<Port>,
    /// `spec.publishNotReadyAddresses`: every endpoint is published, ready or not.
    pub publish_not_ready: bool,
}

/// One endpoint of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `addresses` (the API allows several; all are served).
    pub addresses: Vec<IpAddr>,
    /// `conditions.ready`; `None` (unknown) counts as ready, as the API documents.
    pub ready: Option<bool>,
    /// `conditions.serving`.
    pub serving: Option<bool>,
    /// `conditions.terminating`.
    pub terminating: Option<bool>,
    /// `hostname` (set for Pods with `spec.hostname` + `spec.subdomain`).
    pub hostname: Option<String>,
    /// `nodeName`.
    pub node_name: Option<String>,
}

impl Endpoint {
    /// Whether DNS publishes this endpoint. The EndpointSlice controller already sets `ready`
    /// for every endpoint of a `publishNotReadyAddresses` Service (terminating ones included);
    /// `publish_not_ready` makes that hold for slices written by other controllers too.
    pub fn published(&self, publish_not_ready: bool) -> bool {
        publish_not_ready || self.ready.unwrap_or(true)
    }
}

/// The parts of an EndpointSlice DNS answers from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSlice {
    /// Namespace.
    pub namespace: String,
    /// The slice's own name.
    pub name: String,
    /// The `kubernetes.io/service-name` label: the Service it belongs to.
    pub service: String,
    /// `ports`.
    pub ports: Vec<Port>,
    /// `endpoints`.
    pub endpoints: Vec<Endpoint>,
}

/// A Pod's IPs (kept only for `pods verified`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `status.podIPs`.
    pub ips: Vec<IpAddr>,
}

/// One endpoint of a Service after merging all of its slices: one per address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedEndpoint {
    /// The address.
    pub address: IpAddr,
    /// `hostname`, if the endpoint has one.
    pub hostname: Option<String>,
    /// Whether DNS publishes it (see [`Endpoint::published`]).
    pub published: bool,
    /// The ports of the slice the address came from.
    pub ports: Vec<Port>,
    /// `nodeName`.
    pub node_name: Option<String>,
}

impl MergedEndpoint {
    /// The DNS label of this endpoint: its hostname, else its address with `.`/`:` as `-`
    /// (a trailing `-` of an IPv6 address gets a `0`, so that the label stays valid).
    pub fn label(&self) -> String {
        endpoint_label(self.hostname.as_deref(), self.address)
    }
}

/// See [`MergedEndpoint::label`].
pub fn endpoint_label(hostname: Option<&str>, address: IpAddr) -> String {
    if let Some(h) = hostname.filter(|h| !h.is_empty()) {
        return h.to_ascii_lowercase();
    }
    match address {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => {
            let mut s = v6.to_string().replace(':', "-");
            if s.ends_with('-') {
                s.push('0');
            }
            if s.starts_with('-') {
                s.insert(0, '0');
            }
            s
        }
    }
}

/// A name a PTR query answers with, before the zone is appended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ReverseName {
    /// `<svc>.<ns>.svc.<zone>` of a ClusterIP.
    Service {
        /// Namespace.
        namespace: String,
        /// Service name.
        name: String,
    },
    /// `<label>.<svc>.<ns>.svc.<zone>` of an endpoint.
    Endpoint {
        /// Namespace.
        namespace: String,
        /// Service name.
        service: String,
        /// The endpoint's label ([`endpoint_label`]).
        label: String,
    },
}

/// The index. Cloneable so that a complete replacement can be built aside.
#[derive(Debug, Clone, Default)]
pub struct Index {
    namespaces: HashSet<String>,
    services: HashMap<Key, Service>,
    slices: HashMap<Key, EndpointSlice>,
    /// `(ns, service)` → names of its slices.
    slices_by_service: HashMap<Key, BTreeSet<String>>,
    pods: HashMap<Key, Pod>,
    /// ClusterIP → Services that have it.
    service_ips: HashMap<IpAddr, BTreeSet<Key>>,
    /// Endpoint address → slices that list it.
    endpoint_ips: HashMap<IpAddr, BTreeSet<Key>>,
    /// Pod IP → Pods that have it.
    pod_ips: HashMap<IpAddr, BTreeSet<Key>>,
    /// Bumped on every change; the SOA serial.
    generation: u64,
}

fn lower_key(namespace: &str, name: &str) -> Key {
    (namespace.to_ascii_lowercase(), name.to_ascii_lowercase())
}

fn remove_from<K: Ord>(map: &mut HashMap<IpAddr, BTreeSet<K>>, ip: &IpAddr, key: &K) {
    if let Some(set) = map.get_mut(ip) {
        set.remove(key);
        if set.is_empty() {
            map.remove(ip);
        }
    }
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes so far (wraps); used as the SOA serial.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn bump(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    // ----- Namespaces -----

    /// Adds a Namespace.
    pub fn apply_namespace(&mut self, name: &str) {
        self.namespaces.insert(name.to_ascii_lowercase());
        self.bump();
    }

    /// Removes a Namespace.
    pub fn delete_namespace(&mut self, name: &str) {
        self.namespaces.remove(&name.to_ascii_lowercase());
        self.bump();
    }

    /// Replaces every Namespace.
    pub fn reset_namespaces<I: IntoIterator<Item = String>>(&mut self, names: I) {
        self.namespaces = names.into_iter().map(|n| n.to_ascii_lowercase()).collect();
        self.bump();
    }

    /// Whether the Namespace exists (`name` lowercase).
    pub fn has_namespace(&self, name: &str) -> bool {
        self.namespaces.contains(name)
    }

    // ----- Services -----

    /// Adds or replaces a Service.
    pub fn apply_service(&mut self, svc: Service) {
        let key = lower_key(&svc.namespace, &svc.name);
        self.unindex_service(&key);
        if let ServiceKind::ClusterIp(ips) = &svc.kind {
            for ip in ips {
                self.service_ips.entry(*ip).or_default().insert(key.clone());
            }
        }
        self.services.insert(key, svc);
        self.bump();
    }

    fn unindex_service(&mut self, key: &Key) {
        if let Some(old) = self.services.remove(key) {
            if let ServiceKind::ClusterIp(ips) = &old.kind {
                for ip in ips {
                    remove_from(&mut self.service_ips, ip, key);
                }
            }
        }
    }

    /// Removes a Service (its slices stay until they are deleted, as in the API).
    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        self.unindex_service(&lower_key(namespace, name));
        self.bump();
    }

    /// Replaces every Service.
    pub fn reset_services<I: IntoIterator<Item = Service>>(&mut self, services: I) {
        self.services.clear();
        self.service_ips.clear();
        for s in services {
            self.apply_service(s);
        }
        self.bump();
    }

    /// The Service `namespace/name` (both lowercase).
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// Number of Services.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    // ----- EndpointSlices -----

    /// Adds or replaces an EndpointSlice.
    pub fn apply_slice(&mut self, slice: EndpointSlice) {
        let key = lower_key(&slice.namespace, &slice.name);
        self.unindex_slice(&key);
        let svc_key = lower_key(&slice.namespace, &slice.service);
        self.slices_by_service
            .entry(svc_key)
            .or_default()
            .insert(key.1.clone());
        for ep in &slice.endpoints {
            for ip in &ep.addresses {
                self.endpoint_ips
                    .entry(*ip)
                    .or_default()
                    .insert(key.clone());
            }
        }
        self.slices.insert(key, slice);
        self.bump();
    }

    fn unindex_slice(&mut self, key: &Key) {
        if let Some(old) = self.slices.remove(key) {
            let svc_key = lower_key(&old.namespace, &old.service);
            if let Some(set) = self.slices_by_service.get_mut(&svc_key) {
                set.remove(&key.1);
                if set.is_empty() {
                    self.slices_by_service.remove(&svc_key);
                }
            }
            for ep in &old.endpoints {
                for ip in &ep.addresses {
                    remove_from(&mut self.endpoint_ips, ip, key);
                }
            }
        }
    }

    /// Removes an EndpointSlice.
    pub fn delete_slice(&mut self, namespace: &str, name: &str) {
        self.unindex_slice(&lower_key(namespace, name));
        self.bump();
    }

    /// Replaces every EndpointSlice.
    pub fn reset_slices<I: IntoIterator<Item = EndpointSlice>>(&mut self, slices: I) {
        self.slices.clear();
        self.slices_by_service.clear();
        self.endpoint_ips.clear();
        for s in slices {
            self.apply_slice(s);
        }
        self.bump();
    }

    /// Every endpoint of the Service `namespace/name` (lowercase) across all of its slices, one
    /// per address, ordered by address. An address listed by several slices (as happens while
    /// the controller moves endpoints between slices) appears once; it counts as published
    /// when any of its listings is.
    pub fn endpoints(&self, namespace: &str, name: &str) -> Vec<MergedEndpoint> {
        let publish_not_ready = self
            .service(namespace, name)
            .is_some_and(|s| s.publish_not_ready);
        let mut merged: BTreeMap<IpAddr, MergedEndpoint> = BTreeMap::new();
        let key = (namespace.to_string(), name.to_string());
        let Some(slice_names) = self.slices_by_service.get(&key) else {
            return Vec::new();
        };
        for slice_name in slice_names {
            let Some(slice) = self
                .slices
                .get(&(namespace.to_string(), slice_name.clone()))
            else {
                continue;
            };
            for ep in &slice.endpoints {
                let published = ep.published(publish_not_ready);
                for ip in &ep.addresses {
                    let entry = merged.entry(*ip).or_insert_with(|| MergedEndpoint {
                        address: *ip,
                        hostname: ep.hostname.clone(),
                        published,
                        ports: slice.ports.clone(),
                        node_name: ep.node_name.clone(),
                    });
                    if published && !entry.published {
                        *entry = MergedEndpoint {
                            address: *ip,
                            hostname: ep.hostname.clone(),
                            published,
                            ports: slice.ports.clone(),
                            node_name: ep.node_name.clone(),
                        };
                    }
                }
            }
        }
        merged.into_values().collect()
    }

    /// Only the published endpoints of a Service.
    pub fn published_endpoints(&self, namespace: &str, name: &str) -> Vec<MergedEndpoint> {
        let mut eps = self.endpoints(namespace, name);
        eps.retain(|e| e.published);
        eps
    }

    // ----- Pods -----

    /// Adds or replaces a Pod.
    pub fn apply_pod(&mut self, pod: Pod) {
        let key = lower_key(&pod.namespace, &pod.name);
        self.unindex_pod(&key);
        for ip in &pod.ips {
            self.pod_ips.entry(*ip).or_default().insert(key.clone());
        }
        self.pods.insert(key, pod);
        self.bump();
    }

    fn unindex_pod(&mut self, key: &Key) {
        if let Some(old) = self.pods.remove(key) {
            for ip in &old.ips {
                remove_from(&mut self.pod_ips, ip, key);
            }
        }
    }

    /// Removes a Pod.
    pub fn delete_pod(&mut self, namespace: &str, name: &str) {
        self.unindex_pod(&lower_key(namespace, name));
        self.bump();
    }

    /// Replaces every Pod.
    pub fn reset_pods<I: IntoIterator<Item = Pod>>(&mut self, pods: I) {
        self.pods.clear();
        self.pod_ips.clear();
        for p in pods {
            self.apply_pod(p);
        }
        self.bump();
    }

    /// Whether a Pod in `namespace` (lowercase) has `ip`.
    pub fn has_pod_ip(&self, namespace: &str, ip: IpAddr) -> bool {
        self.pod_ips
            .get(&ip)
            .is_some_and(|keys| keys.iter().any(|(ns, _)| ns == namespace))
    }

    // ----- Reverse -----

    /// The names of `ip`, for PTR. A ClusterIP answers with its Services' names (and only
    /// those); otherwise every published endpoint with that address answers with its
    /// endpoint name.
    pub fn reverse(&self, ip: IpAddr) -> Vec<ReverseName> {
        if let Some(keys) = self.service_ips.get(&ip) {
            let names: Vec<ReverseName> = keys
                .iter()
                .map(|(ns, name)| ReverseName::Service {
                    namespace: ns.clone(),
                    name: name.clone(),
                })
                .collect();
            if !names.is_empty() {
                return names;
            }
        }
        let mut out = BTreeSet::new();
        if let Some(slice_keys) = self.endpoint_ips.get(&ip) {
            for key in slice_keys {
                let Some(slice) = self.slices.get(key) else {
                    continue;
                };
                let publish_not_ready = self
                    .service(&key.0, &slice.service.to_ascii_lowercase())
                    .is_some_and(|s| s.publish_not_ready);
                for ep in &slice.endpoints {
                    if ep.addresses.contains(&ip) && ep.published(publish_not_ready) {
                        out.insert(ReverseName::Endpoint {
                            namespace: key.0.clone(),
                            service: slice.service.to_ascii_lowercase(),
                            label: endpoint_label(ep.hostname.as_deref(), ip),
                        });
                    }
                }
            }
        }
        out.into_iter().collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn ip(s: &str) -> IpAddr {
        s.parse().expect("test IP")
    }

    pub(crate) fn port(name: &str, proto: &str, port: u16) -> Port {
        Port {
            name: name.into(),
            protocol: proto.into(),
            port,
        }
    }

    pub(crate) fn cluster_ip(ns: &str, name: &str, ips: &[&str], ports: Vec<Port>) -> Service {
        Service {
            namespace: ns.into(),
            name: name.into(),
            kind: ServiceKind::ClusterIp(ips.iter().map(|s| ip(s)).collect()),
            ports,
            publish_not_ready: false,
        }
    }

    pub(crate) fn headless(ns: &str, name: &str, ports: Vec<Port>) -> Service {
        Service {
            namespace: ns.into(),
            name: name.into(),
            kind: ServiceKind::Headless,
            ports,
            publish_not_ready: false,
        }
    }

    pub(crate) fn ep(addr: &str, ready: Option<bool>, hostname: Option<&str>) -> Endpoint {
        Endpoint {
            addresses: vec![ip(addr)],
            ready,
            serving: ready,
            terminating: Some(false),
            hostname: hostname.map(str::to_string),
            node_name: Some("node-a".into()),
        }
    }

    pub(crate) fn slice(
        ns: &str,
        name: &str,
        svc: &str,
        ports: Vec<Port>,
        endpoints: Vec<Endpoint>,
    ) -> EndpointSlice {
        EndpointSlice {
            namespace: ns.into(),
            name: name.into(),
            service: svc.into(),
            ports,
            endpoints,
        }
    }

    #[test]
    fn services_apply_replace_delete_and_reverse() {
        let mut idx = Index::new();
        idx.apply_service(cluster_ip("ns", "web", &["10.96.0.10"], vec![]));
        assert!(idx.service("ns", "web").is_some());
        assert_eq!(
            idx.reverse(ip("10.96.0.10")),
            vec![ReverseName::Service {
                namespace: "ns".into(),
                name: "web".into()
            }]
        );
        // Replacing moves the reverse entry.
        idx.apply_service(cluster_ip("ns", "web", &["10.96.0.11"], vec![]));
        assert!(idx.reverse(ip("10.96.0.10")).is_empty());
        assert_eq!(idx.reverse(ip("10.96.0.11")).len(), 1);
        idx.delete_service("ns", "web");
        assert!(idx.service("ns", "web").is_none());
        assert!(idx.reverse(ip("10.96.0.11")).is_empty());
        assert_eq!(idx.service_count(), 0);
    }

    #[test]
    fn slices_merge_and_deduplicate_by_address() {
        let mut idx = Index::new();
        idx.apply_service(headless("ns", "db", vec![]));
        let ports = vec![port("pg", "TCP", 5432)];
        idx.apply_slice(slice(
            "ns",
            "db-a",
            "db",
            ports.clone(),
            vec![
                ep("10.1.0.1", Some(true), Some("db-0")),
                ep("10.1.0.2", Some(false), None),
            ],
        ));
        // The second slice lists 10.1.0.2 again (ready there) and a new address.
        idx.apply_slice(slice(
            "ns",
            "db-b",
            "db",
            ports,
            vec![ep("10.1.0.2", Some(true), None), ep("10.1.0.3", None, None)],
        ));
        let eps = idx.endpoints("ns", "db");
        assert_eq!(eps.len(), 3);
        assert!(eps.iter().all(|e| e.published), "{eps:?}");
        assert_eq!(eps[0].label(), "db-0");
        assert_eq!(eps[1].label(), "10-1-0-2");
        // Deleting one slice removes only its addresses.
        idx.delete_slice("ns", "db-b");
        let eps = idx.endpoints("ns", "db");
        assert_eq!(eps.len(), 2);
        assert_eq!(idx.published_endpoints("ns", "db").len(), 1);
        assert!(idx.reverse(ip("10.1.0.3")).is_empty());
    }

    #[test]
    fn not_ready_endpoints_are_unpublished_unless_publish_not_ready() {
        let mut idx = Index::new();
        let mut svc = headless("ns", "db", vec![]);
        idx.apply_service(svc.clone());
        idx.apply_slice(slice(
            "ns",
            "db-a",
            "db",
            vec![],
            vec![ep("10.1.0.1", Some(false), None)],
        ));
        assert!(idx.published_endpoints("ns", "db").is_empty());
        assert!(idx.reverse(ip("10.1.0.1")).is_empty());
        svc.publish_not_ready = true;
        idx.apply_service(svc);
        assert_eq!(idx.published_endpoints("ns", "db").len(), 1);
        assert_eq!(
            idx.reverse(ip("10.1.0.1")),
            vec![ReverseName::Endpoint {
                namespace: "ns".into(),
                service: "db".into(),
                label: "10-1-0-1".into()
            }]
        );
    }

    #[test]
    fn reset_replaces_a_kind_whole() {
        let mut idx = Index::new();
        idx.apply_service(cluster_ip("ns", "a", &["10.96.0.1"], vec![]));
        idx.apply_slice(slice(
            "ns",
            "a-1",
            "a",
            vec![],
            vec![ep("10.1.0.1", None, None)],
        ));
        idx.reset_services(vec![cluster_ip("ns", "b", &["10.96.0.2"], vec![])]);
        assert!(idx.service("ns", "a").is_none());
        assert!(idx.service("ns", "b").is_some());
        assert!(idx.reverse(ip("10.96.0.1")).is_empty());
        idx.reset_slices(vec![]);
        assert!(idx.endpoints("ns", "a").is_empty());
        idx.reset_namespaces(vec!["NS".to_string()]);
        assert!(idx.has_namespace("ns"));
        idx.reset_pods(vec![Pod {
            namespace: "ns".into(),
            name: "p".into(),
            ips: vec![ip("10.1.0.9")],
        }]);
        assert!(idx.has_pod_ip("ns", ip("10.1.0.9")));
        assert!(!idx.has_pod_ip("other", ip("10.1.0.9")));
        idx.delete_pod("ns", "p");
        assert!(!idx.has_pod_ip("ns", ip("10.1.0.9")));
    }

    #[test]
    fn ipv6_endpoint_labels_are_valid() {
        assert_eq!(endpoint_label(None, ip("fd00::1")), "fd00--1");
        assert_eq!(endpoint_label(None, ip("fd00::")), "fd00--0");
        assert_eq!(endpoint_label(None, ip("::1")), "0--1");
        assert_eq!(endpoint_label(Some("Web-0"), ip("::1")), "web-0");
    }
}
