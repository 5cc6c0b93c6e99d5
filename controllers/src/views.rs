//! Compact, stripped views of Pods and Nodes: the only fields the endpoint
//! controllers read. Watches convert objects into these before caching them,
//! so a 100,000-Pod cluster costs a few hundred bytes per Pod, not kilobytes.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Container, Node, Pod, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// A named container port, as `FindPort` searches them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedPort {
    /// `ports[].name`.
    pub name: String,
    /// `ports[].protocol`, defaulted to `TCP`.
    pub protocol: String,
    /// `ports[].containerPort`.
    pub port: i32,
}

/// A Pod's labels as a key-sorted vector: a `BTreeMap` leaf costs about half
/// a KiB even for one label, which adds up at 100,000 cached Pods.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&String> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| &self.0[i].1)
    }
    /// Whether `key` is set.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
    /// `(key, value)` pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
    /// Keys in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }
    /// Every term of a map selector is set to the same value.
    pub fn matches(&self, selector: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| self.get(k) == Some(v))
    }
}

impl FromIterator<(String, String)> for Labels {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let m: BTreeMap<String, String> = iter.into_iter().collect();
        let mut v: Vec<(String, String)> = m.into_iter().collect();
        v.shrink_to_fit();
        Labels(v)
    }
}

impl From<BTreeMap<String, String>> for Labels {
    fn from(m: BTreeMap<String, String>) -> Self {
        m.into_iter().collect()
    }
}

impl<const N: usize> From<[(String, String); N]> for Labels {
    fn from(a: [(String, String); N]) -> Self {
        a.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a String, &'a String);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, String)>,
        fn(&'a (String, String)) -> (&'a String, &'a String),
    >;
    fn into_iter(self) -> Self::IntoIter {
        fn pair(p: &(String, String)) -> (&String, &String) {
            (&p.0, &p.1)
        }
        self.0
            .iter()
            .map(pair as fn(&'a (String, String)) -> (&'a String, &'a String))
    }
}

/// The fields of a Pod that decide its endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// `metadata.labels`.
    pub labels: Labels,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
    /// `spec.nodeName` ("" when unscheduled).
    pub node_name: String,
    /// `spec.hostname`.
    pub hostname: String,
    /// `spec.subdomain`.
    pub subdomain: String,
    /// `status.phase`.
    pub phase: String,
    /// `status.podIP`.
    pub pod_ip: String,
    /// `status.podIPs[].ip`.
    pub pod_ips: Vec<String>,
    /// The Ready condition is `True`.
    pub ready: bool,
    /// `lastTransitionTime` of the Ready condition, if any.
    pub ready_transition: Option<DateTime<Utc>>,
    /// Named ports of `containers`, then of restartable init (sidecar) containers.
    pub named_ports: Vec<NamedPort>,
}

fn named_ports_of(containers: &[Container], out: &mut Vec<NamedPort>) {
    for c in containers {
        for p in c.ports.iter().flatten() {
            if let Some(name) = &p.name {
                out.push(NamedPort {
                    name: name.clone(),
                    protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    port: p.container_port,
                });
            }
        }
    }
}

impl PodInfo {
    /// Strips a Pod down to what the endpoint controllers need.
    pub fn from_pod(pod: &Pod) -> Self {
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let ready_cond = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
        let mut named_ports = Vec::new();
        if let Some(spec) = spec {
            named_ports_of(&spec.containers, &mut named_ports);
            let sidecars: Vec<Container> = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"))
                .cloned()
                .collect();
            named_ports_of(&sidecars, &mut named_ports);
        }
        PodInfo {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default().into(),
            terminating: meta.deletion_timestamp.is_some(),
            node_name: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            hostname: spec.and_then(|s| s.hostname.clone()).unwrap_or_default(),
            subdomain: spec.and_then(|s| s.subdomain.clone()).unwrap_or_default(),
            phase: status.and_then(|s| s.phase.clone()).unwrap_or_default(),
            pod_ip: status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
            pod_ips: status
                .and_then(|s| s.pod_ips.as_ref())
                .map(|ips| ips.iter().map(|i| i.ip.clone()).collect())
                .unwrap_or_default(),
            ready: ready_cond.is_some_and(|c| c.status == "True"),
            ready_transition: ready_cond
                .and_then(|c| c.last_transition_time.as_ref().and_then(to_chrono)),
            named_ports,
        }
    }

    /// `ShouldPodBeInEndpoints`: not terminal, has an IP, and (unless
    /// `include_terminating`) not being deleted.
    pub fn should_be_in_endpoints(&self, include_terminating: bool) -> bool {
        if self.phase == "Succeeded" || self.phase == "Failed" {
            return false;
        }
        if self.pod_ip.is_empty() && self.pod_ips.is_empty() {
            return false;
        }
        include_terminating || !self.terminating
    }

    /// `FindPort`: the container port a Service port targets on this Pod.
    /// A numeric (or absent, which the API server defaults to `port`)
    /// targetPort is used as is; a named one must match a container port by
    /// name AND protocol, first in `containers`, then in sidecars.
    pub fn find_port(&self, sp: &ServicePort) -> Option<i32> {
        match &sp.target_port {
            None => Some(sp.port),
            Some(IntOrString::Int(n)) => Some(*n),
            Some(IntOrString::String(name)) => {
                let proto = sp.protocol.as_deref().unwrap_or("TCP");
                self.named_ports
                    .iter()
                    .find(|p| &p.name == name && p.protocol == proto)
                    .map(|p| p.port)
            }
        }
    }

    /// `ShouldSetHostname`.
    pub fn should_set_hostname(&self, svc_namespace: &str, svc_name: &str) -> bool {
        !self.hostname.is_empty() && self.subdomain == svc_name && self.namespace == svc_namespace
    }
}

/// Converts an API timestamp to chrono.
pub fn to_chrono(
    t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(t.0.subsec_nanosecond()).ok()?;
    DateTime::from_timestamp(t.0.as_second(), nanos)
}

/// The fields of a Node the endpoint controllers read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// `metadata.name`.
    pub name: String,
    /// `topology.kubernetes.io/zone` label.
    pub zone: Option<String>,
    /// The Ready condition is `True`.
    pub ready: bool,
    /// Carries a control-plane/master role label (excluded from topology).
    pub excluded: bool,
    /// `status.allocatable.cpu` in millicores (0 when absent/unparseable).
    pub cpu_milli: i64,
}

/// Label holding a Node's zone.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

impl NodeInfo {
    /// Strips a Node.
    pub fn from_node(node: &Node) -> Self {
        let labels = node.metadata.labels.clone().unwrap_or_default();
        let status = node.status.as_ref();
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            zone: labels.get(LABEL_ZONE).cloned(),
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|c| c.status == "True"),
            excluded: labels.contains_key("node-role.kubernetes.io/control-plane")
                || labels.contains_key("node-role.kubernetes.io/master"),
            cpu_milli: status
                .and_then(|s| s.allocatable.as_ref())
                .and_then(|a| a.get("cpu"))
                .and_then(|q| parse_cpu_milli(&q.0))
                .unwrap_or(0),
        }
    }
}

/// Parses a CPU quantity ("4", "3500m", "0.5", "1k") into millicores.
pub fn parse_cpu_milli(q: &str) -> Option<i64> {
    let q = q.trim();
    if let Some(m) = q.strip_suffix('m') {
        return m.parse::<f64>().ok().map(|v| v.ceil() as i64);
    }
    let (num, mult) = if let Some(n) = q.strip_suffix('k') {
        (n, 1e3)
    } else if let Some(n) = q.strip_suffix('M') {
        (n, 1e6)
    } else if let Some(n) = q.strip_suffix('G') {
        (n, 1e9)
    } else {
        (q, 1.0)
    };
    num.parse::<f64>()
        .ok()
        .map(|v| (v * mult * 1000.0).ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_lookup_and_match() {
        let l: Labels = [
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), "1".to_string()),
        ]
        .into();
        assert_eq!(l.get("a").map(String::as_str), Some("1"));
        assert_eq!(
            l.keys().cloned().collect::<Vec<_>>(),
            vec!["a".to_string(), "b".to_string()]
        );
        assert!(l.matches(&BTreeMap::from([("b".to_string(), "2".to_string())])));
        assert!(!l.matches(&BTreeMap::from([("b".to_string(), "3".to_string())])));
        assert!(!l.contains_key("c"));
    }

    #[test]
    fn cpu_quantities() {
        assert_eq!(parse_cpu_milli("4"), Some(4000));
        assert_eq!(parse_cpu_milli("3500m"), Some(3500));
        assert_eq!(parse_cpu_milli("0.5"), Some(500));
        assert_eq!(parse_cpu_milli("x"), None);
    }
}
