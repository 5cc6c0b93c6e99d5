//! Table-driven tests of the pure EndpointSlice reconciler, modelled on
//! upstream's `reconciler_test.go` scenarios.
//!
//! One table of scenarios with shared fixtures; long because upstream's scenario list is.

use super::build::*;
use super::desired::*;
use super::topology::TopologyCache;
use crate::views::{NamedPort, NodeInfo, PodInfo};
use crate::writes::{EventKind, SlicePlan};
use chrono::{TimeZone, Utc};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::{BTreeMap, HashMap};

const NS: &str = "default";

fn svc() -> Service {
    Service {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("foo".into()),
            namespace: Some(NS.into()),
            uid: Some("svc-uid".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([("foo".into(), "bar".into())])),
            cluster_ip: Some("10.0.0.10".into()),
            ip_families: Some(vec!["IPv4".into()]),
            ports: Some(vec![ServicePort {
                name: Some(String::new()),
                port: 80,
                target_port: Some(IntOrString::Int(80)),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod(i: usize) -> PodInfo {
    PodInfo {
        namespace: NS.into(),
        name: format!("pod{i}"),
        uid: format!("uid-{i}"),
        resource_version: "1".into(),
        labels: [("foo".to_string(), "bar".to_string())].into(),
        node_name: "node-1".into(),
        phase: "Running".into(),
        pod_ip: format!("1.2.{}.{}", i / 250, i % 250 + 1),
        pod_ips: vec![format!("1.2.{}.{}", i / 250, i % 250 + 1)],
        ready: true,
        ..Default::default()
    }
}

fn pods(n: usize) -> Vec<PodInfo> {
    (0..n).map(pod).collect()
}

fn nodes() -> HashMap<String, NodeInfo> {
    HashMap::from([(
        "node-1".to_string(),
        NodeInfo {
            name: "node-1".into(),
            zone: Some("zone-a".into()),
            ready: true,
            excluded: false,
            cpu_milli: 4000,
        },
    )])
}

struct Env {
    cfg: ReconcilerConfig,
    topo: TopologyCache,
    nodes: HashMap<String, NodeInfo>,
    slices: Vec<EndpointSlice>,
    counter: usize,
}

impl Env {
    fn new() -> Self {
        Env {
            cfg: ReconcilerConfig::default(),
            topo: TopologyCache::default(),
            nodes: nodes(),
            slices: Vec::new(),
            counter: 0,
        }
    }

    fn plan(&mut self, svc: &Service, pods: &[PodInfo]) -> SlicePlan {
        let refs: Vec<&PodInfo> = pods.iter().collect();
        let input = ServiceInput {
            service: svc,
            pods: &refs,
            nodes: &self.nodes,
            existing: &self.slices,
            trigger_time: None,
        };
        reconcile_service(&input, &self.cfg, &mut self.topo)
    }

    /// Applies a plan like an API server would (names generated, ports `[]`
    /// stored as nil as the real server does).
    fn apply(&mut self, plan: &SlicePlan) {
        for c in &plan.creates {
            let mut c = c.clone();
            assert!(c.metadata.name.is_none());
            self.counter += 1;
            c.metadata.name = Some(format!(
                "{}{:05}",
                c.metadata.generate_name.clone().unwrap_or_default(),
                self.counter
            ));
            c.metadata.uid = Some(format!("slice-uid-{}", self.counter));
            if c.ports.as_ref().is_some_and(|p| p.is_empty()) {
                c.ports = None;
            }
            self.slices.push(c);
        }
        for u in &plan.updates {
            let i = self
                .slices
                .iter()
                .position(|s| s.metadata.name == u.metadata.name)
                .expect("update of an existing slice");
            self.slices[i] = u.clone();
        }
        for d in &plan.deletes {
            self.slices.retain(|s| s.metadata.name != d.metadata.name);
        }
    }

    fn sync(&mut self, svc: &Service, pods: &[PodInfo]) -> SlicePlan {
        let p = self.plan(svc, pods);
        self.apply(&p);
        p
    }

    fn sizes(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.slices.iter().map(|s| s.endpoints.len()).collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        v
    }

    /// Existing slice built from pods, as a previous reconcile would.
    fn add_slice(&mut self, svc: &Service, pods: &[PodInfo], address_type: &str) {
        let mut ports = endpoint_ports(svc, &pods[0]);
        port_map_key(&mut ports);
        let mut s = new_slice(svc, ports, address_type, CONTROLLER_NAME);
        for p in pods {
            s.endpoints.push(pod_to_endpoint(
                p,
                self.nodes.get(&p.node_name),
                svc,
                "IPv4",
            ));
        }
        self.counter += 1;
        s.metadata.name = Some(format!("foo-pre{:03}", self.counter));
        self.slices.push(s);
    }
}

fn counts(p: &SlicePlan) -> (usize, usize, usize) {
    (p.creates.len(), p.updates.len(), p.deletes.len())
}

#[test]
fn reconcile_empty_creates_placeholder() {
    let mut env = Env::new();
    let p = env.sync(&svc(), &[]);
    assert_eq!(counts(&p), (1, 0, 0));
    let s = &p.creates[0];
    assert_eq!(s.metadata.generate_name.as_deref(), Some("foo-"));
    assert_eq!(s.ports.as_deref(), Some(&[][..]));
    assert!(s.endpoints.is_empty());
    assert_eq!(s.address_type, "IPv4");
    let labels = s.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(LABEL_SERVICE_NAME).map(String::as_str),
        Some("foo")
    );
    assert_eq!(
        labels.get(LABEL_MANAGED_BY).map(String::as_str),
        Some(CONTROLLER_NAME)
    );
    assert!(!labels.contains_key(LABEL_HEADLESS));
    let owner = &s.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.uid.as_str(),
            owner.api_version.as_str()
        ),
        ("Service", "svc-uid", "v1")
    );
    assert_eq!(
        (owner.controller, owner.block_owner_deletion),
        (Some(true), Some(true))
    );
    // The stored placeholder (ports come back nil) is kept: no writes.
    assert!(env.plan(&svc(), &[]).is_noop());
}

#[test]
fn reconcile_many_pods() {
    let mut env = Env::new();
    let p = env.sync(&svc(), &pods(250));
    assert_eq!(counts(&p), (3, 0, 0));
    assert_eq!(env.sizes(), vec![100, 100, 50]);
    assert!(env.plan(&svc(), &pods(250)).is_noop(), "idempotent");
}

#[test]
fn reconcile_some_preexisting() {
    let mut env = Env::new();
    let all = pods(250);
    let s1: Vec<PodInfo> = (1..246).step_by(4).map(|i| all[i].clone()).collect();
    let s2: Vec<PodInfo> = (3..246).step_by(4).map(|i| all[i].clone()).collect();
    assert_eq!((s1.len(), s2.len()), (62, 61));
    env.add_slice(&svc(), &s1, "IPv4");
    env.add_slice(&svc(), &s2, "IPv4");
    let p = env.sync(&svc(), &all);
    assert_eq!(counts(&p), (1, 1, 0));
    assert_eq!(p.creates[0].endpoints.len(), 100);
    assert_eq!(p.updates[0].endpoints.len(), 89);
    assert_eq!(env.sizes(), vec![100, 89, 61]);
}

#[test]
fn reconcile_some_preexisting_worse_allocation() {
    let mut env = Env::new();
    let all = pods(300);
    env.add_slice(&svc(), &all[0..74], "IPv4");
    env.add_slice(&svc(), &all[74..148], "IPv4");
    let p = env.sync(&svc(), &all);
    assert_eq!(counts(&p), (2, 0, 0));
    assert_eq!(env.sizes(), vec![100, 74, 74, 52]);
}

fn with_target_port(mut s: Service, tp: IntOrString) -> Service {
    if let Some(ports) = s.spec.as_mut().and_then(|sp| sp.ports.as_mut()) {
        ports[0].target_port = Some(tp);
    }
    s
}

#[test]
fn reconcile_updating_target_port_updates_in_place() {
    let mut env = Env::new();
    env.sync(&svc(), &pods(250));
    let changed = with_target_port(svc(), IntOrString::Int(81));
    let p = env.sync(&changed, &pods(250));
    assert_eq!(counts(&p), (0, 3, 0));
    assert_eq!(env.sizes(), vec![100, 100, 50]);
    for s in &env.slices {
        assert_eq!(s.ports.as_ref().and_then(|p| p[0].port), Some(81));
    }
    assert!(env.plan(&changed, &pods(250)).is_noop());
}

#[test]
fn reconcile_recycling() {
    let mut env = Env::new();
    let all = pods(300);
    for i in 0..10 {
        env.add_slice(&svc(), &all[i * 30..(i + 1) * 30], "IPv4");
    }
    let p = env.sync(&with_target_port(svc(), IntOrString::Int(8080)), &all);
    assert_eq!(counts(&p), (0, 3, 7));
    assert_eq!(env.sizes(), vec![100, 100, 100]);
}

#[test]
fn reconcile_update_packing_fills_fullest_first() {
    let mut env = Env::new();
    let mut all = pods(100);
    env.add_slice(&svc(), &all[0..80], "IPv4");
    env.add_slice(&svc(), &all[80..100], "IPv4");
    all[0].ready = false;
    all[80].ready = false;
    all.extend((200..215).map(pod));
    let p = env.sync(&svc(), &all);
    assert_eq!(counts(&p), (0, 2, 0));
    assert_eq!(env.sizes(), vec![95, 20]);
}

#[test]
fn reconcile_replace_deprecated_ip_address_type() {
    let mut env = Env::new();
    let all = pods(130);
    env.add_slice(&svc(), &all[0..80], "IP");
    env.add_slice(&svc(), &all[80..130], "IP");
    for s in &mut env.slices {
        s.address_type = "IP".into();
    }
    let p = env.sync(&svc(), &all);
    assert_eq!(counts(&p), (2, 0, 2));
    assert!(env.slices.iter().all(|s| s.address_type == "IPv4"));
    assert_eq!(env.sizes(), vec![100, 30]);
}

#[test]
fn reconcile_recreation_of_service_with_new_uid() {
    for (owner_uid, expect) in [("other-uid", (1, 0, 1)), ("svc-uid", (0, 0, 0))] {
        let mut env = Env::new();
        env.add_slice(&svc(), &pods(1), "IPv4");
        if let Some(o) = env.slices[0].metadata.owner_references.as_mut() {
            o[0].uid = owner_uid.into();
        }
        let p = env.sync(&svc(), &pods(1));
        assert_eq!(counts(&p), expect, "owner {owner_uid}");
    }
}

#[test]
fn reconcile_named_ports_split_slices() {
    let mut env = Env::new();
    let s = with_target_port(svc(), IntOrString::String("http".into()));
    let all: Vec<PodInfo> = (0..300)
        .map(|i| {
            let mut p = pod(i);
            p.named_ports = vec![NamedPort {
                name: "http".into(),
                protocol: "TCP".into(),
                port: 8080 + (i % 5) as i32,
            }];
            p
        })
        .collect();
    let p = env.sync(&s, &all);
    assert_eq!(counts(&p), (5, 0, 0));
    assert_eq!(env.sizes(), vec![60; 5]);
    let mut nums: Vec<i32> = env
        .slices
        .iter()
        .filter_map(|s| s.ports.as_ref().and_then(|p| p[0].port))
        .collect();
    nums.sort_unstable();
    assert_eq!(nums, vec![8080, 8081, 8082, 8083, 8084]);
    assert!(env.plan(&s, &all).is_noop());
}

#[test]
fn named_port_needs_same_protocol_and_sees_sidecars() {
    let s = with_target_port(svc(), IntOrString::String("dns".into()));
    let mut p = pod(0);
    p.named_ports = vec![
        NamedPort {
            name: "dns".into(),
            protocol: "UDP".into(),
            port: 53,
        },
        NamedPort {
            name: "dns".into(),
            protocol: "TCP".into(),
            port: 5353,
        },
    ];
    let ports = endpoint_ports(&s, &p);
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].port, Some(5353));
    p.named_ports.retain(|n| n.protocol == "UDP");
    assert!(endpoint_ports(&s, &p).is_empty(), "no TCP port named dns");
}

#[test]
fn reconcile_max_endpoints_per_slice() {
    for (max, want) in [
        (50, vec![50, 50, 50, 50, 50]),
        (80, vec![80, 80, 80, 10]),
        (150, vec![150, 100]),
        (250, vec![250]),
        (500, vec![250]),
    ] {
        let mut env = Env::new();
        env.cfg.max_endpoints_per_slice = max;
        env.sync(&svc(), &pods(250));
        assert_eq!(env.sizes(), want, "max {max}");
    }
}

#[test]
fn reconcile_service_with_deletion_timestamp_skips_creates() {
    let mut env = Env::new();
    env.add_slice(&svc(), &pods(10), "IPv4");
    let mut s = svc();
    s.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    // A changed endpoint marks the slice for update; it is then filled to 100
    // and the remaining 110 endpoints' creates are dropped.
    let mut all = pods(210);
    all[0].ready = false;
    let p = env.plan(&s, &all);
    assert_eq!(counts(&p), (0, 1, 0));
    assert_eq!(p.updates[0].endpoints.len(), 100);
}

#[test]
fn reconcile_pod_missing_node() {
    for (pnra, want_eps, want_err) in [(false, 1, true), (true, 2, false)] {
        let mut env = Env::new();
        let mut s = svc();
        if let Some(sp) = s.spec.as_mut() {
            sp.publish_not_ready_addresses = Some(pnra);
        }
        let mut all = pods(2);
        all[1].node_name = "node-missing".into();
        let p = env.sync(&s, &all);
        assert_eq!(!p.errors.is_empty(), want_err, "pnra {pnra}");
        assert_eq!(env.slices[0].endpoints.len(), want_eps);
        let missing = env.slices[0]
            .endpoints
            .iter()
            .find(|e| e.node_name.as_deref() == Some("node-missing"));
        if pnra {
            assert_eq!(
                missing.and_then(|e| e.zone.clone()),
                None,
                "included without zone"
            );
        }
    }
}

#[test]
fn reconcile_traffic_distribution_prefer_close() {
    let mut env = Env::new();
    let mut s = svc();
    if let Some(sp) = s.spec.as_mut() {
        sp.traffic_distribution = Some("PreferClose".into());
    }
    let mut all = pods(3);
    all[2].ready = false;
    env.sync(&s, &all);
    let eps = &env.slices[0].endpoints;
    let hinted = eps
        .iter()
        .filter(|e| {
            e.hints
                .as_ref()
                .and_then(|h| h.for_zones.as_ref())
                .is_some_and(|z| z.len() == 1 && z[0].name == "zone-a")
        })
        .count();
    assert_eq!(hinted, 2, "only ready endpoints are hinted");
    assert!(eps
        .iter()
        .all(|e| e.hints.as_ref().is_none_or(|h| h.for_nodes.is_none())));
    assert!(env.plan(&s, &all).is_noop());
    // Removing the field strips the hints, even from an otherwise unchanged slice.
    let p = env.sync(&svc(), &all);
    assert_eq!(counts(&p), (0, 1, 0));
    assert!(env.slices[0].endpoints.iter().all(|e| e.hints.is_none()));
    // PreferSameNode also adds node hints.
    if let Some(sp) = s.spec.as_mut() {
        sp.traffic_distribution = Some("PreferSameNode".into());
    }
    env.sync(&s, &all);
    let with_node = env.slices[0]
        .endpoints
        .iter()
        .filter(|e| {
            e.hints
                .as_ref()
                .and_then(|h| h.for_nodes.as_ref())
                .is_some()
        })
        .count();
    assert_eq!(with_node, 2);
}

#[test]
fn reconcile_headless_service_without_ports_is_stable() {
    let mut env = Env::new();
    let mut s = svc();
    if let Some(sp) = s.spec.as_mut() {
        sp.cluster_ip = Some("None".into());
        sp.ports = None;
    }
    let p = env.sync(&s, &pods(3));
    assert_eq!(counts(&p), (1, 0, 0));
    assert_eq!(p.creates[0].ports.as_deref(), Some(&[][..]));
    assert_eq!(p.creates[0].endpoints.len(), 3);
    let labels = p.creates[0].metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get(LABEL_HEADLESS).map(String::as_str), Some(""));
    // The API server returned ports as nil: still no writes.
    assert!(env.slices[0].ports.is_none());
    assert!(env.plan(&s, &pods(3)).is_noop());
}

#[test]
fn reconcile_service_labels_updating() {
    let mut env = Env::new();
    env.sync(&svc(), &pods(250));
    let mut s = svc();
    s.metadata.labels = Some(BTreeMap::from([
        ("app".to_string(), "web".to_string()),
        (LABEL_MANAGED_BY.to_string(), "someone-else".to_string()),
    ]));
    let p = env.sync(&s, &pods(250));
    assert_eq!(counts(&p), (0, 3, 0));
    for sl in &env.slices {
        let l = sl.metadata.labels.clone().unwrap_or_default();
        assert_eq!(l.get("app").map(String::as_str), Some("web"));
        assert_eq!(
            l.get(LABEL_MANAGED_BY).map(String::as_str),
            Some(CONTROLLER_NAME),
            "reserved key ignored"
        );
    }
    assert!(env.plan(&s, &pods(250)).is_noop());
}

#[test]
fn conditions_terminating_and_publish_not_ready() {
    let s = svc();
    let mut p = pod(0);
    p.terminating = true;
    let ep = pod_to_endpoint(&p, None, &s, "IPv4");
    let c = ep.conditions.clone().unwrap_or_default();
    assert_eq!(
        (c.ready, c.serving, c.terminating),
        (Some(false), Some(true), Some(true))
    );
    let mut pnra = svc();
    if let Some(sp) = pnra.spec.as_mut() {
        sp.publish_not_ready_addresses = Some(true);
    }
    p.ready = false;
    let c = pod_to_endpoint(&p, None, &pnra, "IPv4")
        .conditions
        .unwrap_or_default();
    assert_eq!(
        (c.ready, c.serving, c.terminating),
        (Some(true), Some(false), Some(true))
    );
}

#[test]
fn excluded_pods_terminal_or_without_ip() {
    let mut env = Env::new();
    let mut all = pods(4);
    all[0].phase = "Succeeded".into();
    all[1].phase = "Failed".into();
    all[2].pod_ip.clear();
    all[2].pod_ips.clear();
    env.sync(&svc(), &all);
    assert_eq!(env.sizes(), vec![1]);
}

#[test]
fn hostname_only_with_matching_subdomain() {
    let s = svc();
    let mut p = pod(0);
    p.hostname = "h".into();
    p.subdomain = "other".into();
    assert_eq!(pod_to_endpoint(&p, None, &s, "IPv4").hostname, None);
    p.subdomain = "foo".into();
    assert_eq!(
        pod_to_endpoint(&p, None, &s, "IPv4").hostname.as_deref(),
        Some("h")
    );
}

#[test]
fn dual_stack_gets_one_set_of_slices_per_family() {
    let mut env = Env::new();
    let mut s = svc();
    if let Some(sp) = s.spec.as_mut() {
        sp.ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
    }
    let all: Vec<PodInfo> = (0..3)
        .map(|i| {
            let mut p = pod(i);
            p.pod_ips.push(format!("fd00::{:04x}", i + 1));
            p
        })
        .collect();
    env.sync(&s, &all);
    let v6: Vec<&EndpointSlice> = env
        .slices
        .iter()
        .filter(|s| s.address_type == "IPv6")
        .collect();
    assert_eq!(v6.len(), 1);
    assert_eq!(v6[0].endpoints.len(), 3);
    assert!(v6[0]
        .endpoints
        .iter()
        .any(|e| e.addresses == vec!["fd00::1".to_string()]));
    // Back to single stack: the IPv6 slice is deleted.
    let p = env.sync(&svc(), &all);
    assert_eq!(counts(&p), (0, 0, 1));
    assert!(env.slices.iter().all(|s| s.address_type == "IPv4"));
}

#[test]
fn address_types_fallbacks() {
    let mut s = svc();
    if let Some(sp) = s.spec.as_mut() {
        sp.ip_families = None;
        sp.cluster_ip = Some("fd00::10".into());
    }
    assert_eq!(address_types_for_service(&s), vec!["IPv6"]);
    if let Some(sp) = s.spec.as_mut() {
        sp.cluster_ip = Some("None".into());
    }
    assert_eq!(address_types_for_service(&s), vec!["IPv4", "IPv6"]);
}

#[test]
fn canonical_ip_forms() {
    assert_eq!(
        canonical_ip("010.001.002.003"),
        Some(("10.1.2.3".into(), false))
    );
    assert_eq!(canonical_ip("FD00:0::1"), Some(("fd00::1".into(), true)));
    assert_eq!(
        canonical_ip("::ffff:1.2.3.4"),
        Some(("1.2.3.4".into(), false))
    );
    assert_eq!(canonical_ip("nope"), None);
}

#[test]
fn trigger_time_annotation_format() {
    let t = Utc
        .with_ymd_and_hms(2024, 1, 2, 3, 4, 5)
        .single()
        .expect("valid time");
    assert_eq!(rfc3339_nano(t), "2024-01-02T03:04:05Z");
    let t2 = t + chrono::Duration::milliseconds(120);
    assert_eq!(rfc3339_nano(t2), "2024-01-02T03:04:05.12Z");
    let mut env = Env::new();
    let s = svc();
    let refs: Vec<&PodInfo> = Vec::new();
    let input = ServiceInput {
        service: &s,
        pods: &refs,
        nodes: &env.nodes,
        existing: &[],
        trigger_time: Some(t2),
    };
    let p = reconcile_service(&input, &env.cfg, &mut env.topo);
    let ann = p.creates[0]
        .metadata
        .annotations
        .clone()
        .unwrap_or_default();
    assert_eq!(
        ann.get(ANNOTATION_TRIGGER_TIME).map(String::as_str),
        Some("2024-01-02T03:04:05.12Z")
    );
}

#[test]
fn multi_port_order_is_stable_and_grouped() {
    let mut s = svc();
    if let Some(sp) = s.spec.as_mut() {
        sp.ports = Some(vec![
            ServicePort {
                name: Some("https".into()),
                port: 443,
                target_port: Some(IntOrString::Int(8443)),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::Int(8080)),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]);
    }
    let mut a = endpoint_ports(&s, &pod(0));
    let mut b = a.clone();
    b.reverse();
    assert_eq!(port_map_key(&mut a), port_map_key(&mut b));
    assert_eq!(a, b, "sorted into one canonical order");
}

fn zone_node(name: &str, zone: &str, cpu: i64) -> (String, NodeInfo) {
    (
        name.to_string(),
        NodeInfo {
            name: name.into(),
            zone: Some(zone.into()),
            ready: true,
            excluded: false,
            cpu_milli: cpu,
        },
    )
}

#[test]
fn topology_mode_auto_allocates_and_reports() {
    let mut env = Env::new();
    env.nodes = HashMap::from([
        zone_node("n-a", "zone-a", 4000),
        zone_node("n-b", "zone-b", 4000),
    ]);
    env.topo.set_nodes(env.nodes.values());
    let mut s = svc();
    s.metadata.annotations = Some(BTreeMap::from([(
        ANNOTATION_TOPOLOGY_MODE.to_string(),
        "Auto".to_string(),
    )]));
    let all: Vec<PodInfo> = (0..4)
        .map(|i| {
            let mut p = pod(i);
            p.node_name = if i < 3 { "n-a".into() } else { "n-b".into() };
            p
        })
        .collect();
    let p = env.sync(&s, &all);
    assert_eq!(p.events.len(), 1);
    assert_eq!(p.events[0].kind, EventKind::Normal);
    assert_eq!(
        p.events[0].message,
        "Topology Aware Hints has been enabled, addressType: IPv4"
    );
    let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
    for e in &env.slices[0].endpoints {
        let z = e
            .hints
            .as_ref()
            .and_then(|h| h.for_zones.as_ref())
            .map(|z| z[0].name.clone())
            .unwrap_or_default();
        *per_zone.entry(z).or_default() += 1;
    }
    assert_eq!(
        per_zone,
        BTreeMap::from([("zone-a".to_string(), 2), ("zone-b".to_string(), 2)])
    );
    let again = env.plan(&s, &all);
    assert!(again.is_noop() && again.events.is_empty());

    // One endpoint per zone is too few for three zones.
    env.nodes.extend([zone_node("n-c", "zone-c", 4000)]);
    env.topo.set_nodes(env.nodes.values());
    let p = env.sync(&s, &all[..2]);
    assert_eq!(p.events[0].reason, "TopologyAwareHintsDisabled");
    assert_eq!(
        p.events[0].message,
        "Insufficient number of endpoints (2 endpoints, 3 zones), addressType: IPv4"
    );
    assert!(env.slices[0].endpoints.iter().all(|e| e.hints.is_none()));
}

#[test]
fn topology_mode_auto_needs_zone_info() {
    let mut env = Env::new();
    env.nodes = HashMap::from([zone_node("n-a", "zone-a", 4000)]);
    env.topo.set_nodes(env.nodes.values());
    let mut s = svc();
    s.metadata.annotations = Some(BTreeMap::from([(
        ANNOTATION_TOPOLOGY_MODE.to_string(),
        "auto".to_string(),
    )]));
    let mut p0 = pod(0);
    p0.node_name = "n-a".into();
    let p = env.sync(&s, &[p0]);
    assert_eq!(
        p.events[0].message,
        "Insufficient Node information: allocatable CPU or zone not specified on one or more nodes, addressType: IPv4"
    );
}

#[test]
fn foreign_owner_placeholder_is_kept_like_upstream() {
    // Upstream's placeholder comparison ignores ownerReferences.
    let mut env = Env::new();
    env.sync(&svc(), &[]);
    let mut s = svc();
    s.metadata.uid = Some("new-uid".into());
    assert!(env.plan(&s, &[]).is_noop());
}

/// On an API server that fills spec.clusterIP after creation (svcnet's embedded server), the
/// first slices are written while the Service still looks headless; once IPAM sets the IP the
/// headless label must go, or proxies (which skip headless slices) never see the endpoints.
#[test]
fn reconcile_clears_headless_label_once_cluster_ip_is_set() {
    let mut env = Env::new();
    let mut s = svc();
    if let Some(sp) = s.spec.as_mut() {
        sp.cluster_ip = None;
        sp.cluster_ips = None;
    }
    let p = env.sync(&s, &pods(3));
    assert_eq!(counts(&p), (1, 0, 0));
    let labels = p.creates[0].metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get(LABEL_HEADLESS).map(String::as_str), Some(""));

    let allocated = svc();
    assert!(allocated
        .spec
        .as_ref()
        .and_then(|sp| sp.cluster_ip.as_deref())
        .is_some_and(|ip| ip != "None" && !ip.is_empty()));
    let p = env.sync(&allocated, &pods(3));
    assert_eq!(counts(&p), (0, 1, 0), "only the labels changed: one update");
    let labels = env.slices[0].metadata.labels.clone().unwrap_or_default();
    assert!(!labels.contains_key(LABEL_HEADLESS));
    assert!(env.plan(&allocated, &pods(3)).is_noop());
}
