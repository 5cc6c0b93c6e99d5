//! Tests of the pure Endpoints computation (upstream `endpoints_controller_test.go` scenarios).

use super::desired::*;
use crate::views::{NamedPort, PodInfo};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointSubset, Endpoints, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

fn svc(ports: Vec<ServicePort>) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some("foo".into()),
            namespace: Some("default".into()),
            uid: Some("svc-uid".into()),
            labels: Some(BTreeMap::from([("app".into(), "foo".into())])),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([("foo".into(), "bar".into())])),
            cluster_ip: Some("10.0.0.10".into()),
            ip_families: Some(vec!["IPv4".into()]),
            ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn port(name: &str, port: i32, target: IntOrString) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(target),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn pod(i: usize, ready: bool) -> PodInfo {
    PodInfo {
        namespace: "default".into(),
        name: format!("pod{i}"),
        uid: format!("uid-{i}"),
        node_name: "node-1".into(),
        phase: "Running".into(),
        pod_ip: format!("1.2.{}.{}", i / 250, i % 250 + 1),
        pod_ips: vec![format!("1.2.{}.{}", i / 250, i % 250 + 1)],
        ready,
        ..Default::default()
    }
}

fn created(a: EndpointsAction) -> Endpoints {
    match a {
        EndpointsAction::Create(e) => e,
        other => panic!("expected create, got {other:?}"),
    }
}

fn count(e: &Endpoints) -> (usize, usize) {
    let s = e.subsets.clone().unwrap_or_default();
    (
        s.iter()
            .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
            .sum(),
        s.iter()
            .map(|s| s.not_ready_addresses.as_ref().map_or(0, Vec::len))
            .sum(),
    )
}

#[test]
fn ready_and_not_ready_share_one_subset() {
    let s = svc(vec![port("http", 80, IntOrString::Int(8080))]);
    let pods = [pod(0, true), pod(1, false)];
    let refs: Vec<&PodInfo> = pods.iter().collect();
    let e = created(reconcile_endpoints(&s, &refs, None, None));
    let subsets = e.subsets.clone().unwrap_or_default();
    assert_eq!(subsets.len(), 1);
    assert_eq!(count(&e), (1, 1));
    assert_eq!(subsets[0].ports.as_ref().map(|p| p[0].port), Some(8080));
    assert_eq!(e.metadata.name.as_deref(), Some("foo"));
    assert_eq!(
        e.metadata
            .labels
            .clone()
            .unwrap_or_default()
            .get("app")
            .map(String::as_str),
        Some("foo")
    );
    assert!(
        e.metadata.owner_references.is_none(),
        "upstream sets no ownerRef"
    );
    // Idempotent.
    assert_eq!(
        reconcile_endpoints(&s, &refs, Some(&e), None),
        EndpointsAction::None
    );
}

#[test]
fn headless_without_ports_has_portless_subset() {
    let mut s = svc(vec![]);
    if let Some(sp) = s.spec.as_mut() {
        sp.cluster_ip = Some("None".into());
    }
    let pods = [pod(0, true), pod(1, true)];
    let refs: Vec<&PodInfo> = pods.iter().collect();
    let e = created(reconcile_endpoints(&s, &refs, None, None));
    let subsets = e.subsets.clone().unwrap_or_default();
    assert_eq!(subsets.len(), 1);
    assert_eq!(subsets[0].ports, None);
    assert_eq!(count(&e), (2, 0));
    assert_eq!(
        e.metadata
            .labels
            .clone()
            .unwrap_or_default()
            .get("service.kubernetes.io/headless")
            .map(String::as_str),
        Some("")
    );
    // Not headless and no ports: nothing.
    let s2 = svc(vec![]);
    assert_eq!(
        created(reconcile_endpoints(&s2, &refs, None, None)).subsets,
        None
    );
}

#[test]
fn sync_service_over_capacity() {
    let s = svc(vec![port("", 80, IntOrString::Int(80))]);
    let pods: Vec<PodInfo> = (0..1001).map(|i| pod(i, true)).collect();
    let refs: Vec<&PodInfo> = pods.iter().collect();
    let e = created(reconcile_endpoints(&s, &refs, None, None));
    assert_eq!(count(&e), (1000, 0));
    assert_eq!(
        e.metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .get(ANNOTATION_OVER_CAPACITY)
            .map(String::as_str),
        Some(TRUNCATED)
    );
    // Back under capacity: annotation removed.
    let EndpointsAction::Update(e2) = reconcile_endpoints(&s, &refs[..999], Some(&e), None) else {
        panic!("expected update");
    };
    assert!(!e2
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .contains_key(ANNOTATION_OVER_CAPACITY));
}

#[test]
fn truncate_ready_over_not_ready() {
    let addrs = |n: usize, off: usize| -> Option<Vec<EndpointAddress>> {
        Some(
            (0..n)
                .map(|i| EndpointAddress {
                    ip: format!("10.0.{}.{}", (i + off) / 250, (i + off) % 250),
                    ..Default::default()
                })
                .collect(),
        )
    };
    // 600 ready + 600 not ready: all ready kept, 400 not ready kept.
    let mut s = vec![EndpointSubset {
        addresses: addrs(600, 0),
        not_ready_addresses: addrs(600, 1000),
        ports: None,
    }];
    assert!(truncate(&mut s));
    assert_eq!(s[0].addresses.as_ref().map(Vec::len), Some(600));
    assert_eq!(s[0].not_ready_addresses.as_ref().map(Vec::len), Some(400));
    // 2 subsets of 600 ready: proportional 500 + 500, not ready dropped.
    let mut s = vec![
        EndpointSubset {
            addresses: addrs(600, 0),
            not_ready_addresses: addrs(5, 5000),
            ports: None,
        },
        EndpointSubset {
            addresses: addrs(600, 2000),
            not_ready_addresses: None,
            ports: None,
        },
    ];
    assert!(truncate(&mut s));
    assert_eq!(
        s.iter()
            .map(|x| x.addresses.as_ref().map_or(0, Vec::len))
            .sum::<usize>(),
        1000
    );
    assert!(s.iter().all(|x| x.not_ready_addresses.is_none()));
}

#[test]
fn terminating_pods_only_with_publish_not_ready() {
    let s = svc(vec![port("", 80, IntOrString::Int(80))]);
    let mut p = pod(0, true);
    p.terminating = true;
    let refs = [&p];
    assert_eq!(
        created(reconcile_endpoints(&s, &refs, None, None)).subsets,
        None
    );
    let mut s2 = s.clone();
    if let Some(sp) = s2.spec.as_mut() {
        sp.publish_not_ready_addresses = Some(true);
    }
    assert_eq!(
        count(&created(reconcile_endpoints(&s2, &refs, None, None))),
        (1, 0)
    );
}

#[test]
fn dual_stack_publishes_primary_family_only() {
    let mut s = svc(vec![port("", 80, IntOrString::Int(80))]);
    if let Some(sp) = s.spec.as_mut() {
        sp.ip_families = Some(vec!["IPv6".into(), "IPv4".into()]);
    }
    let mut p = pod(0, true);
    p.pod_ips.push("fd00::1".into());
    let mut v4only = pod(1, true);
    v4only.name = "v4only".into();
    let refs = [&p, &v4only];
    let e = created(reconcile_endpoints(&s, &refs, None, None));
    let subsets = e.subsets.unwrap_or_default();
    let ips: Vec<String> = subsets[0]
        .addresses
        .iter()
        .flatten()
        .map(|a| a.ip.clone())
        .collect();
    assert_eq!(ips, vec!["fd00::1".to_string()]);
}

#[test]
fn named_ports_resolving_differently_make_two_subsets() {
    let s = svc(vec![port("http", 80, IntOrString::String("web".into()))]);
    let mut a = pod(0, true);
    a.named_ports = vec![NamedPort {
        name: "web".into(),
        protocol: "TCP".into(),
        port: 8080,
    }];
    let mut b = pod(1, true);
    b.named_ports = vec![NamedPort {
        name: "web".into(),
        protocol: "TCP".into(),
        port: 9090,
    }];
    let c = pod(2, true); // declares no such port: left out
    let refs = [&a, &b, &c];
    let e = created(reconcile_endpoints(&s, &refs, None, None));
    let subsets = e.subsets.clone().unwrap_or_default();
    assert_eq!(subsets.len(), 2);
    assert_eq!(count(&e), (2, 0));
    assert_eq!(
        reconcile_endpoints(&s, &refs, Some(&e), None),
        EndpointsAction::None
    );
}

#[test]
fn addresses_sorted_by_ip_bytes() {
    let s = svc(vec![port("", 80, IntOrString::Int(80))]);
    let pods: Vec<PodInfo> = (0..12).map(|i| pod(i, true)).collect();
    let refs: Vec<&PodInfo> = pods.iter().rev().collect();
    let e = created(reconcile_endpoints(&s, &refs, None, None));
    let ips: Vec<String> = e.subsets.unwrap_or_default()[0]
        .addresses
        .iter()
        .flatten()
        .map(|a| a.ip.clone())
        .collect();
    let mut sorted = ips.clone();
    sorted.sort();
    assert_eq!(ips, sorted);
    assert_eq!(ips[0], "1.2.0.1");
    assert_eq!(ips[1], "1.2.0.10", "string order, not numeric");
}

#[test]
fn multi_port_subset_ports_in_md5_order() {
    let s = svc(vec![
        port("http", 80, IntOrString::Int(8080)),
        port("https", 443, IntOrString::Int(8443)),
    ]);
    let pods = [pod(0, true)];
    let refs: Vec<&PodInfo> = pods.iter().collect();
    let e = created(reconcile_endpoints(&s, &refs, None, None));
    let subsets = e.subsets.unwrap_or_default();
    assert_eq!(subsets.len(), 1);
    let ports = subsets[0].ports.clone().unwrap_or_default();
    assert_eq!(ports.len(), 2);
    let h: Vec<[u8; 16]> = ports
        .iter()
        .map(|p| crate::hash::md5(crate::hash::spew_core_port(p).as_bytes()))
        .collect();
    assert!(h[0] < h[1]);
}

#[test]
fn label_change_updates_and_headless_label_ignored_in_compare() {
    let s = svc(vec![port("", 80, IntOrString::Int(80))]);
    let pods = [pod(0, true)];
    let refs: Vec<&PodInfo> = pods.iter().collect();
    let e = created(reconcile_endpoints(&s, &refs, None, None));
    let mut s2 = s.clone();
    s2.metadata.labels = Some(BTreeMap::from([("app".into(), "bar".into())]));
    assert!(matches!(
        reconcile_endpoints(&s2, &refs, Some(&e), None),
        EndpointsAction::Update(_)
    ));
}
