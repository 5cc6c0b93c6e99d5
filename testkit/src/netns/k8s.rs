//! Kubernetes objects that describe a topology: Nodes and Pods whose names, addresses, pod CIDRs
//! and ports match the namespaces, for the API server the dataplane watches.
//!
//! The API server ignores `status` on create: create the object, then write its status (for
//! Pods, `replace_status` / a status patch with the returned object's `status`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node as K8sNode, Pod as K8sPod};
use serde_json::json;

use super::error::{Error, Result};
use super::topology::{EchoPorts, Node, Pod, Topology};

fn convert<T: serde::de::DeserializeOwned>(value: serde_json::Value, what: &str) -> Result<T> {
    serde_json::from_value(value)
        .map_err(|e| Error::InvalidSpec(format!("cannot build the {what} object: {e}")))
}

/// A Ready Node named like the topology node, with its LAN addresses as InternalIPs (IPv4
/// first) and its pod CIDRs. Add labels (e.g. `topology.kubernetes.io/zone`) as needed.
pub fn node(node: &Node) -> Result<K8sNode> {
    let cidrs = [
        node.pod_cidr_v4().to_string(),
        node.pod_cidr_v6().to_string(),
    ];
    convert(
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": node.name(),
                "labels": {"kubernetes.io/hostname": node.name(), "kubernetes.io/os": "linux"},
            },
            "spec": {"podCIDR": cidrs[0], "podCIDRs": cidrs},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": node.ipv4().to_string()},
                    {"type": "InternalIP", "address": node.ipv6().to_string()},
                    {"type": "Hostname", "address": node.name()},
                ],
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            },
        }),
        "Node",
    )
}

/// A Running, Ready Pod matching a topology pod: `spec.nodeName`, one container `echo` declaring
/// the echo ports (named `tcp-8080`, `udp-8080`, `sctp-8080`, …), and a status with both pod
/// IPs (IPv4 first) and the node's IPs as host IPs.
pub fn pod(
    pod: &Pod,
    node: &Node,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    ports: &EchoPorts,
) -> Result<K8sPod> {
    let mut container_ports = Vec::new();
    for (proto, list) in [
        ("TCP", &ports.tcp),
        ("UDP", &ports.udp),
        ("SCTP", &ports.sctp),
    ] {
        for port in list {
            container_ports.push(json!({
                "name": format!("{}-{port}", proto.to_ascii_lowercase()),
                "containerPort": port,
                "protocol": proto,
            }));
        }
    }
    let condition = |kind: &str| json!({"type": kind, "status": "True"});
    convert(
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod.name(), "namespace": namespace, "labels": labels},
            "spec": {
                "nodeName": node.name(),
                "containers": [{"name": "echo", "image": "svcnet-echo", "ports": container_ports}],
            },
            "status": {
                "phase": "Running",
                "hostIP": node.ipv4().to_string(),
                "hostIPs": [{"ip": node.ipv4().to_string()}, {"ip": node.ipv6().to_string()}],
                "podIP": pod.ipv4().to_string(),
                "podIPs": [{"ip": pod.ipv4().to_string()}, {"ip": pod.ipv6().to_string()}],
                "conditions": [
                    condition("PodScheduled"),
                    condition("Initialized"),
                    condition("ContainersReady"),
                    condition("Ready"),
                ],
                "containerStatuses": [{
                    "name": "echo", "image": "svcnet-echo", "imageID": "", "ready": true,
                    "restartCount": 0, "started": true,
                    "state": {"running": {}},
                }],
            },
        }),
        "Pod",
    )
}

/// The topology's nodes and pods as Kubernetes objects.
impl Topology {
    /// Kubernetes Node objects for every node (see [`node`]).
    pub fn k8s_nodes(&self) -> Result<Vec<K8sNode>> {
        self.nodes().iter().map(node).collect()
    }

    /// A Kubernetes Pod object for pod `name` in `namespace` with `labels`, declaring the ports
    /// its echo server currently listens on (see [`pod`]).
    pub fn k8s_pod(
        &self,
        name: &str,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<K8sPod> {
        let p = self.pod(name)?;
        let n = self.node(p.node_index())?;
        pod(p, n, namespace, labels, &self.echo_ports(name))
    }
}
