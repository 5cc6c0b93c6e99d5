//! Behaviour tests of the renderer (through the packet tracer) and of diff/apply (through the fake).
//!
//! One module because its tests share the fixtures (Services, slices, node configs) and the two
//! oracles (the packet tracer and the fake nft); each test is short.

use std::collections::BTreeSet;

use crate::apply::fake_nft::FakeNft;
use crate::apply::nft::Nft;
use crate::compute::diff::diff;
use crate::compute::model::Op;
use crate::compute::render::render;
use crate::sync::proxier::Proxier;
use crate::tracer::{pkt, trace, Packet, Verdict};
use crate::types::*;

// === fixtures ===

struct Svc(ServiceInfo);

fn svc(ns: &str, name: &str, cip: &str) -> Svc {
    Svc(ServiceInfo::cluster_ip(
        ServiceKey::new(ns, name),
        vec![cip.parse().unwrap()],
        vec![],
    ))
}

impl Svc {
    fn port(mut self, name: &str, proto: Protocol, port: u16, node_port: Option<u16>) -> Self {
        self.0.ports.push(ServicePort {
            name: name.into(),
            protocol: proto,
            port,
            node_port,
        });
        self
    }
    fn tcp(self, port: u16) -> Self {
        self.port("", Protocol::Tcp, port, None)
    }
    fn cip(mut self, ip: &str) -> Self {
        self.0.cluster_ips.push(ip.parse().unwrap());
        self
    }
    fn external_ip(mut self, ip: &str) -> Self {
        self.0.external_ips.push(ip.parse().unwrap());
        self
    }
    fn lb(mut self, ip: &str) -> Self {
        self.0.load_balancer_ips.push(ip.parse().unwrap());
        self
    }
    fn source_range(mut self, r: &str) -> Self {
        self.0.load_balancer_source_ranges.push(r.parse().unwrap());
        self
    }
    fn etp_local(mut self) -> Self {
        self.0.external_policy_local = true;
        self
    }
    fn itp_local(mut self) -> Self {
        self.0.internal_policy_local = true;
        self
    }
    fn affinity(mut self, t: u32) -> Self {
        self.0.affinity_timeout = Some(t);
        self
    }
}

struct Slice(EndpointSliceInfo);

fn slice(ns: &str, svc: &str, name: &str) -> Slice {
    Slice(EndpointSliceInfo {
        namespace: ns.into(),
        name: name.into(),
        service_name: svc.into(),
        family: Family::Ipv4,
        ports: vec![],
        endpoints: vec![],
        trigger_time: None,
    })
}

impl Slice {
    fn v6(mut self) -> Self {
        self.0.family = Family::Ipv6;
        self
    }
    fn port(mut self, name: &str, proto: Protocol, port: u16) -> Self {
        self.0.ports.push(EndpointPort {
            name: name.into(),
            protocol: proto,
            port,
        });
        self
    }
    fn tcp(self, port: u16) -> Self {
        self.port("", Protocol::Tcp, port)
    }
    fn ep_full(
        mut self,
        ip: &str,
        node: &str,
        ready: bool,
        serving: bool,
        terminating: bool,
    ) -> Self {
        self.0.endpoints.push(EndpointInfo {
            address: ip.parse().unwrap(),
            ready,
            serving,
            terminating,
            node_name: Some(node.into()),
            zone_hints: vec![],
            node_hints: vec![],
        });
        self
    }
    fn ep(self, ip: &str, node: &str) -> Self {
        self.ep_full(ip, node, true, true, false)
    }
}

fn state(svcs: Vec<Svc>, slices: Vec<Slice>) -> ProxyState {
    let mut st = ProxyState::default();
    for s in svcs {
        st.upsert_service(s.0);
    }
    for s in slices {
        st.upsert_slice(s.0);
    }
    st
}

const NODE_IP: &str = "192.168.0.10";
const OTHER_NODE_IP: &str = "192.168.0.11";
const POD: &str = "10.244.1.100";
const EXTERNAL: &str = "203.0.113.7";

fn node() -> NodeConfig {
    NodeConfig {
        node_name: "node-a".into(),
        node_ips: vec![NODE_IP.parse().unwrap()],
        local_addresses: vec![NODE_IP.parse().unwrap(), "172.16.0.10".parse().unwrap()],
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        nodeport_addresses: NodePortAddresses::Cidrs(vec!["192.168.0.10/32".parse().unwrap()]),
        service_cidrs: vec!["10.96.0.0/16".parse().unwrap()],
        families: Family::ALL.to_vec(),
        ..Default::default()
    }
}

fn eps(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn dnat(list: &[&str], masq: bool) -> Verdict {
    Verdict::Dnat {
        endpoints: eps(list),
        masq,
    }
}

fn external(dst: &str, port: u16) -> Packet {
    pkt(EXTERNAL, dst, Protocol::Tcp, port)
}

fn to_node(src: &str, port: u16) -> Packet {
    Packet {
        dst_local: true,
        ..pkt(src, NODE_IP, Protocol::Tcp, port)
    }
}

fn from_host(dst: &str, port: u16) -> Packet {
    Packet {
        src_local: true,
        ..pkt(NODE_IP, dst, Protocol::Tcp, port)
    }
}

// === ClusterIP ===

#[test]
fn cluster_ip_protocols_and_masquerade() {
    let st = state(
        vec![svc("ns", "dns", "10.96.0.10")
            .port("udp", Protocol::Udp, 53, None)
            .port("tcp", Protocol::Tcp, 53, None)
            .port("sctp", Protocol::Sctp, 53, None)],
        vec![slice("ns", "dns", "dns-1")
            .port("udp", Protocol::Udp, 1053)
            .port("tcp", Protocol::Tcp, 2053)
            .port("sctp", Protocol::Sctp, 3053)
            .ep("10.244.1.5", "node-a")
            .ep("10.244.2.5", "node-b")],
    );
    let m = render(&st, &node());
    for (proto, port) in [
        (Protocol::Udp, 1053),
        (Protocol::Tcp, 2053),
        (Protocol::Sctp, 3053),
    ] {
        let v = trace(&m, &pkt(POD, "10.96.0.10", proto, 53));
        assert_eq!(
            v,
            dnat(
                &[&format!("10.244.1.5:{port}"), &format!("10.244.2.5:{port}")],
                false
            ),
            "{proto:?}"
        );
    }
    // Off-cluster source → masquerade (cluster-cidr detector).
    assert_eq!(
        trace(&m, &pkt(EXTERNAL, "10.96.0.10", Protocol::Tcp, 53)),
        dnat(&["10.244.1.5:2053", "10.244.2.5:2053"], true)
    );
    // Hairpin: a pod reaching itself through the Service is masqueraded.
    assert_eq!(
        trace(&m, &pkt("10.244.1.5", "10.96.0.10", Protocol::Tcp, 53)),
        dnat(&["10.244.1.5:2053", "10.244.2.5:2053"], true)
    );
    // Wrong port on a live ClusterIP → reject; unallocated IP in the Service CIDR → drop.
    assert_eq!(
        trace(&m, &pkt(POD, "10.96.0.10", Protocol::Tcp, 54)),
        Verdict::Reject
    );
    assert_eq!(
        trace(&m, &pkt(POD, "10.96.0.99", Protocol::Tcp, 80)),
        Verdict::Drop
    );
    assert_eq!(
        trace(&m, &pkt(POD, "10.97.0.1", Protocol::Tcp, 80)),
        Verdict::Accept
    );
}

#[test]
fn masquerade_all_and_no_detector() {
    let st = state(
        vec![svc("ns", "a", "10.96.0.1").tcp(80)],
        vec![slice("ns", "a", "a-1").tcp(8080).ep("10.244.2.5", "node-b")],
    );
    let mut n = node();
    n.masquerade_all = true;
    let m = render(&st, &n);
    assert_eq!(
        trace(&m, &pkt(POD, "10.96.0.1", Protocol::Tcp, 80)),
        dnat(&["10.244.2.5:8080"], true)
    );
    n.masquerade_all = false;
    n.cluster_cidrs.clear();
    let m = render(&st, &n);
    assert_eq!(
        trace(&m, &pkt(EXTERNAL, "10.96.0.1", Protocol::Tcp, 80)),
        dnat(&["10.244.2.5:8080"], false)
    );
}

// === No endpoints, terminating endpoints ===

#[test]
fn no_endpoints_reject_everywhere() {
    let st = state(
        vec![svc("ns", "lb", "10.96.0.2")
            .port("", Protocol::Tcp, 80, Some(30080))
            .external_ip("192.0.2.9")
            .lb("198.51.100.1")],
        vec![],
    );
    let m = render(&st, &node());
    assert_eq!(
        trace(&m, &pkt(POD, "10.96.0.2", Protocol::Tcp, 80)),
        Verdict::Reject
    );
    assert_eq!(trace(&m, &external("192.0.2.9", 80)), Verdict::Reject);
    assert_eq!(trace(&m, &external("198.51.100.1", 80)), Verdict::Reject);
    assert_eq!(trace(&m, &to_node(EXTERNAL, 30080)), Verdict::Reject);
    assert_eq!(trace(&m, &to_node(POD, 30080)), Verdict::Reject);
}

#[test]
fn terminating_endpoints_fallback() {
    let mk = |eps: Slice| {
        render(
            &state(vec![svc("ns", "a", "10.96.0.1").tcp(80)], vec![eps]),
            &node(),
        )
    };
    let m = mk(slice("ns", "a", "a-1")
        .tcp(80)
        .ep_full("10.244.2.1", "node-b", true, true, false)
        .ep_full("10.244.2.2", "node-b", false, true, true));
    assert_eq!(
        trace(&m, &pkt(POD, "10.96.0.1", Protocol::Tcp, 80)),
        dnat(&["10.244.2.1:80"], false)
    );
    let m = mk(slice("ns", "a", "a-1")
        .tcp(80)
        .ep_full("10.244.2.2", "node-b", false, true, true));
    assert_eq!(
        trace(&m, &pkt(POD, "10.96.0.1", Protocol::Tcp, 80)),
        dnat(&["10.244.2.2:80"], false)
    );
    let m = mk(slice("ns", "a", "a-1")
        .tcp(80)
        .ep_full("10.244.2.3", "node-b", false, false, true));
    assert_eq!(
        trace(&m, &pkt(POD, "10.96.0.1", Protocol::Tcp, 80)),
        Verdict::Reject
    );
}

// === External traffic ===

fn lb_service(local: bool) -> ProxyState {
    let mut s = svc("ns", "web", "10.96.0.5")
        .port("http", Protocol::Tcp, 80, Some(30080))
        .external_ip("192.0.2.50")
        .lb("198.51.100.1");
    if local {
        s = s.etp_local();
    }
    state(
        vec![s],
        vec![slice("ns", "web", "web-1")
            .port("http", Protocol::Tcp, 8080)
            .ep("10.244.1.7", "node-a")
            .ep("10.244.2.8", "node-b")],
    )
}

#[test]
fn external_traffic_policy_cluster_masquerades() {
    let m = render(&lb_service(false), &node());
    let all = ["10.244.1.7:8080", "10.244.2.8:8080"];
    for p in [
        external("192.0.2.50", 80),
        external("198.51.100.1", 80),
        to_node(EXTERNAL, 30080),
        pkt(POD, "198.51.100.1", Protocol::Tcp, 80),
    ] {
        assert_eq!(trace(&m, &p), dnat(&all, true), "{p:?}");
    }
    assert_eq!(
        trace(&m, &pkt(POD, "10.96.0.5", Protocol::Tcp, 80)),
        dnat(&all, false)
    );
}

#[test]
fn external_traffic_policy_local() {
    let m = render(&lb_service(true), &node());
    let all = ["10.244.1.7:8080", "10.244.2.8:8080"];
    // Outside clients: only the local endpoint, source preserved.
    for p in [
        external("192.0.2.50", 80),
        external("198.51.100.1", 80),
        to_node(EXTERNAL, 30080),
    ] {
        assert_eq!(trace(&m, &p), dnat(&["10.244.1.7:8080"], false), "{p:?}");
    }
    // Pods short-circuit to every endpoint, unmasqueraded.
    for p in [
        pkt(POD, "198.51.100.1", Protocol::Tcp, 80),
        to_node(POD, 30080),
    ] {
        assert_eq!(trace(&m, &p), dnat(&all, false), "{p:?}");
    }
    // The host itself: every endpoint, masqueraded.
    assert_eq!(trace(&m, &from_host("198.51.100.1", 80)), dnat(&all, true));
}

#[test]
fn external_traffic_policy_local_without_local_endpoints_drops_outside_traffic() {
    let st = state(
        vec![svc("ns", "web", "10.96.0.5")
            .port("", Protocol::Tcp, 80, Some(30080))
            .lb("198.51.100.1")
            .etp_local()],
        vec![slice("ns", "web", "web-1")
            .tcp(8080)
            .ep("10.244.2.8", "node-b")],
    );
    let m = render(&st, &node());
    assert_eq!(trace(&m, &external("198.51.100.1", 80)), Verdict::Drop);
    assert_eq!(trace(&m, &to_node(EXTERNAL, 30080)), Verdict::Drop);
    assert_eq!(
        trace(&m, &pkt(POD, "198.51.100.1", Protocol::Tcp, 80)),
        dnat(&["10.244.2.8:8080"], false)
    );
    assert_eq!(
        trace(&m, &pkt(POD, "10.96.0.5", Protocol::Tcp, 80)),
        dnat(&["10.244.2.8:8080"], false)
    );
}

#[test]
fn load_balancer_source_ranges() {
    let st = state(
        vec![svc("ns", "web", "10.96.0.5")
            .port("", Protocol::Tcp, 80, Some(30080))
            .lb("198.51.100.1")
            .source_range("203.0.113.0/25")
            .source_range("192.168.0.0/24")],
        vec![slice("ns", "web", "web-1")
            .tcp(8080)
            .ep("10.244.2.8", "node-b")],
    );
    let m = render(&st, &node());
    let ok = dnat(&["10.244.2.8:8080"], true);
    assert_eq!(
        trace(&m, &pkt("203.0.113.7", "198.51.100.1", Protocol::Tcp, 80)),
        ok
    );
    assert_eq!(
        trace(&m, &pkt("203.0.113.200", "198.51.100.1", Protocol::Tcp, 80)),
        Verdict::Drop
    );
    // NodePorts ignore the ranges.
    assert_eq!(trace(&m, &to_node("203.0.113.200", 30080)), ok);
    // Pods outside the ranges are blocked too.
    assert_eq!(
        trace(&m, &pkt(POD, "198.51.100.1", Protocol::Tcp, 80)),
        Verdict::Drop
    );
    // The node IP is in a range, so the LB IP itself (SNATed traffic) is allowed.
    assert_eq!(
        trace(&m, &pkt("198.51.100.1", "198.51.100.1", Protocol::Tcp, 80)),
        ok
    );
    assert_eq!(
        trace(&m, &pkt(NODE_IP, "198.51.100.1", Protocol::Tcp, 80)),
        ok
    );
}

#[test]
fn nodeport_addresses_filter() {
    let st = lb_service(false);
    let m = render(&st, &node());
    let secondary = Packet {
        dst_local: true,
        ..pkt(EXTERNAL, "172.16.0.10", Protocol::Tcp, 30080)
    };
    assert_eq!(trace(&m, &secondary), Verdict::Accept);
    let mut n = node();
    n.nodeport_addresses = NodePortAddresses::Cidrs(vec!["172.16.0.0/16".parse().unwrap()]);
    let m = render(&st, &n);
    assert!(matches!(trace(&m, &secondary), Verdict::Dnat { .. }));
    assert_eq!(trace(&m, &to_node(EXTERNAL, 30080)), Verdict::Accept);
    n.nodeport_addresses = NodePortAddresses::All;
    let m = render(&st, &n);
    assert!(matches!(trace(&m, &secondary), Verdict::Dnat { .. }));
    let lo = Packet {
        dst_local: true,
        ..pkt("127.0.0.1", "127.0.0.1", Protocol::Tcp, 30080)
    };
    assert_eq!(trace(&m, &lo), Verdict::Accept);
    let _ = OTHER_NODE_IP;
}

// === internalTrafficPolicy ===

#[test]
fn internal_traffic_policy_local() {
    let st = state(
        vec![svc("ns", "a", "10.96.0.1")
            .port("", Protocol::Tcp, 80, Some(30080))
            .itp_local()],
        vec![slice("ns", "a", "a-1")
            .tcp(80)
            .ep("10.244.1.1", "node-a")
            .ep("10.244.2.1", "node-b")],
    );
    let m = render(&st, &node());
    assert_eq!(
        trace(&m, &pkt(POD, "10.96.0.1", Protocol::Tcp, 80)),
        dnat(&["10.244.1.1:80"], false)
    );
    // Still masqueraded from outside the cluster.
    assert_eq!(
        trace(&m, &pkt(EXTERNAL, "10.96.0.1", Protocol::Tcp, 80)),
        dnat(&["10.244.1.1:80"], true)
    );
    // NodePort ignores ITP.
    assert_eq!(
        trace(&m, &to_node(EXTERNAL, 30080)),
        dnat(&["10.244.1.1:80", "10.244.2.1:80"], true)
    );
    // No local endpoint → ClusterIP traffic dropped.
    let st = state(
        vec![svc("ns", "a", "10.96.0.1").tcp(80).itp_local()],
        vec![slice("ns", "a", "a-1").tcp(80).ep("10.244.2.1", "node-b")],
    );
    assert_eq!(
        trace(
            &render(&st, &node()),
            &pkt(POD, "10.96.0.1", Protocol::Tcp, 80)
        ),
        Verdict::Drop
    );
}

// === affinity ===

#[test]
fn session_affinity_client_ip() {
    let st = state(
        vec![svc("ns", "a", "10.96.0.1")
            .port("", Protocol::Tcp, 80, Some(30080))
            .affinity(600)],
        vec![slice("ns", "a", "a-1")
            .tcp(80)
            .ep("10.244.1.1", "node-a")
            .ep("10.244.2.1", "node-b")],
    );
    let m = render(&st, &node());
    let both = ["10.244.1.1:80", "10.244.2.1:80"];
    assert_eq!(
        trace(&m, &pkt(POD, "10.96.0.1", Protocol::Tcp, 80)),
        dnat(&both, false)
    );
    assert_eq!(trace(&m, &to_node(EXTERNAL, 30080)), dnat(&both, true));
    let t = &m.tables[&Family::Ipv4];
    let aff: Vec<_> = t.sets.iter().filter(|(_, s)| s.spec.is_dynamic()).collect();
    assert_eq!(aff.len(), 2, "one affinity set per endpoint");
    assert!(aff.iter().all(|(_, s)| s.spec.timeout == Some(600)));
    // Nothing of this Service is in the shared backends map.
    assert!(!t.sets.contains_key("backends-tcp"));
}

// === dual stack ===

#[test]
fn dual_stack() {
    let st = state(
        vec![svc("ns", "a", "10.96.0.1").cip("fd00:96::1").tcp(80)],
        vec![
            slice("ns", "a", "a-4").tcp(80).ep("10.244.1.1", "node-a"),
            slice("ns", "a", "a-6")
                .v6()
                .tcp(80)
                .ep("fd00:244::1", "node-a"),
        ],
    );
    let m = render(&st, &node());
    assert_eq!(
        trace(&m, &pkt(POD, "10.96.0.1", Protocol::Tcp, 80)),
        dnat(&["10.244.1.1:80"], false)
    );
    assert_eq!(
        trace(&m, &pkt("fd00:244::9", "fd00:96::1", Protocol::Tcp, 80)),
        dnat(&["fd00:244::1:80"], false)
    );
}

// === diff / apply ===

fn big_state(n: usize, eps: usize) -> ProxyState {
    let mut svcs = vec![];
    let mut slices = vec![];
    for i in 0..n {
        let name = format!("s{i}");
        svcs.push(svc("ns", &name, &format!("10.96.{}.{}", i / 256, i % 256)).tcp(80));
        let mut sl = slice("ns", &name, &format!("{name}-1")).tcp(8080);
        for j in 0..eps {
            sl = sl.ep(
                &format!("10.{}.{}.{}", 128 + i / 256, i % 256, j + 1),
                "node-b",
            );
        }
        slices.push(sl);
    }
    state(svcs, slices)
}

#[test]
fn partial_sync_is_minimal() {
    let fake = FakeNft::new();
    let mut p = Proxier::new(fake.clone(), node());
    let mut st = big_state(50, 3);
    let out = p.sync(&st, None, false).unwrap();
    assert!(out.full);
    assert_eq!(fake.model(), render(&st, &node()));

    // No change → empty transaction.
    let out = p.sync(&st, None, false).unwrap();
    assert!(!out.full);
    assert_eq!(out.ops, 0);

    // Replace one endpoint: only elements of that Service change.
    let key = ServiceKey::new("ns", "s7");
    let mut s = st.slices[&key]["s7-1"].clone();
    s.endpoints[2].address = "10.200.0.1".parse().unwrap();
    st.upsert_slice(s);
    let out = p.sync(&st, Some(&[key.clone()].into()), false).unwrap();
    assert_eq!(out.ops, 2, "one element deleted, one added");
    assert!(!out.full);
    let tx = fake.last_transaction().unwrap();
    assert!(
        tx.ops()
            .iter()
            .all(|op| matches!(op, Op::AddElements { .. } | Op::DeleteElements { .. })),
        "{}",
        tx.render()
    );
    assert_eq!(fake.model(), render(&st, &node()));

    // Scale one Service from 3 to 2 endpoints: its verdict moves to the shared 2-endpoint chain,
    // which is created; removing the last 3-endpoint Service would delete `lb-3`.
    let mut s = st.slices[&key]["s7-1"].clone();
    s.endpoints.pop();
    st.upsert_slice(s);
    p.sync(&st, None, false).unwrap();
    assert_eq!(fake.model(), render(&st, &node()));
    assert!(fake.model().tables[&Family::Ipv4]
        .chains
        .contains_key("cip-tcp-2"));

    // Delete every Service: shared chains become stale and are removed.
    let empty = ProxyState::default();
    p.sync(&empty, None, false).unwrap();
    let m = fake.model();
    assert_eq!(m, render(&empty, &node()));
    assert!(!m.tables[&Family::Ipv4].chains.contains_key("lb-tcp-3"));
}

#[test]
fn failure_forces_full_sync_and_resync_repairs_drift() {
    let fake = FakeNft::new();
    let mut p = Proxier::new(fake.clone(), node());
    let st = big_state(5, 2);
    p.sync(&st, None, false).unwrap();
    fake.fail_next("injected");
    assert!(p.sync(&big_state(6, 2), None, false).is_err());
    assert!(p.needs_full_sync());
    let out = p.sync(&big_state(6, 2), None, false).unwrap();
    assert!(out.full);
    assert_eq!(fake.model(), render(&big_state(6, 2), &node()));

    // Drift: someone deletes elements and adds a chain; a forced full sync repairs it without
    // deleting the table, and keeps dynamic (affinity) sets.
    fake.tamper(|m| {
        let t = m.tables.get_mut(&Family::Ipv4).unwrap();
        t.sets.get_mut("backends-tcp").unwrap().elements.clear();
        t.chains.insert("intruder".into(), Default::default());
    });
    let out = p.sync(&big_state(6, 2), None, true).unwrap();
    assert!(out.full);
    assert_eq!(fake.model(), render(&big_state(6, 2), &node()));
    let tx = fake.last_transaction().unwrap();
    assert!(!tx.render().contains("delete table"));
}

#[test]
fn full_sync_keeps_affinity_sets() {
    let fake = FakeNft::new();
    let mut p = Proxier::new(fake.clone(), node());
    let st = state(
        vec![svc("ns", "a", "10.96.0.1").tcp(80).affinity(100)],
        vec![slice("ns", "a", "a-1").tcp(80).ep("10.244.2.1", "node-b")],
    );
    p.sync(&st, None, false).unwrap();
    let tx = {
        p.sync(&st, None, true).unwrap();
        fake.last_transaction().unwrap()
    };
    let text = tx.render();
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("delete set ip svcnet aff-")),
        "{text}"
    );
    assert!(text.contains("delete map ip svcnet service-ips"), "{text}");
}

#[test]
fn backend_maps_exist_only_while_used() {
    let fake = FakeNft::new();
    let mut p = Proxier::new(fake.clone(), node());
    let maps = |m: &crate::compute::model::Model| -> Vec<String> {
        m.tables[&Family::Ipv4]
            .sets
            .keys()
            .filter(|n| n.contains("backends"))
            .cloned()
            .collect()
    };
    let tcp_only = state(
        vec![svc("ns", "a", "10.96.0.1").tcp(80)],
        vec![slice("ns", "a", "a-1").tcp(80).ep("10.244.2.1", "node-b")],
    );
    p.sync(&tcp_only, None, false).unwrap();
    assert_eq!(maps(&fake.model()), vec!["backends-tcp".to_string()]);
    assert!(fake.model().tables[&Family::Ipv4]
        .chains
        .contains_key(&crate::compute::names::lb(Protocol::Tcp, 1)));

    // A UDP Service brings its own map and chain; removing it takes them away again.
    let both = state(
        vec![
            svc("ns", "a", "10.96.0.1").tcp(80),
            svc("ns", "dns", "10.96.0.10").port("dns", Protocol::Udp, 53, None),
        ],
        vec![
            slice("ns", "a", "a-1").tcp(80).ep("10.244.2.1", "node-b"),
            slice("ns", "dns", "dns-1")
                .port("dns", Protocol::Udp, 53)
                .ep("10.244.2.2", "node-b"),
        ],
    );
    p.sync(&both, None, false).unwrap();
    assert_eq!(
        maps(&fake.model()),
        vec!["backends-tcp".to_string(), "backends-udp".to_string()]
    );
    assert_eq!(fake.model(), render(&both, &node()));
    p.sync(&tcp_only, None, false).unwrap();
    assert_eq!(maps(&fake.model()), vec!["backends-tcp".to_string()]);
    assert_eq!(fake.model(), render(&tcp_only, &node()));
    let text = fake.last_transaction().unwrap().render();
    assert!(text.contains("delete map ip svcnet backends-udp"), "{text}");
}

#[test]
fn diff_transactions_apply_cleanly_across_random_changes() {
    // Walk through a sequence of states; every diff must apply to the fake (no dangling references,
    // no missing elements) and leave exactly the rendered model.
    let fake = FakeNft::new();
    let mut p = Proxier::new(fake.clone(), node());
    let mut st = ProxyState::default();
    for step in 0..40usize {
        let i = step % 7;
        let name = format!("s{i}");
        let mut s = svc("ns", &name, &format!("10.96.0.{}", i + 1)).port(
            "p",
            Protocol::Tcp,
            80,
            Some(30000 + i as u16),
        );
        if step % 3 == 0 {
            s = s.affinity(60 + step as u32);
        }
        if step % 4 == 0 {
            s = s.etp_local().lb(&format!("198.51.100.{}", i + 1));
        }
        if step % 5 == 0 {
            s = s.itp_local();
        }
        st.upsert_service(s.0);
        let mut sl = slice("ns", &name, &format!("{name}-x")).port("p", Protocol::Tcp, 8080);
        for j in 0..(step % 4) {
            sl = sl.ep(
                &format!("10.244.{}.{}", i, j + 1),
                if j % 2 == 0 { "node-a" } else { "node-b" },
            );
        }
        st.upsert_slice(sl.0);
        if step % 6 == 5 {
            st.services
                .remove(&ServiceKey::new("ns", format!("s{}", (i + 3) % 7)));
        }
        p.sync(&st, None, false)
            .unwrap_or_else(|e| panic!("step {step}: {e}"));
        assert_eq!(fake.model(), render(&st, &node()), "step {step}");
    }
}

#[test]
fn diff_of_identical_models_is_empty() {
    let m = render(&big_state(20, 4), &node());
    assert!(diff(&m, &m).unwrap().is_empty());
}

// === hostile input ===

#[test]
fn hostile_names_never_reach_the_script() {
    let hostile = "x\"; flush ruleset; #\n}{ \u{202e}ü";
    let mut s = svc(hostile, hostile, "10.96.0.1").affinity(30);
    s.0.ports.push(ServicePort {
        name: hostile.into(),
        protocol: Protocol::Tcp,
        port: 80,
        node_port: Some(30001),
    });
    let mut sl = slice(hostile, hostile, hostile).port(hostile, Protocol::Tcp, 80);
    sl.0.endpoints.push(EndpointInfo {
        address: "10.244.1.1".parse().unwrap(),
        ready: true,
        serving: true,
        terminating: false,
        node_name: Some(hostile.into()),
        zone_hints: vec![hostile.into()],
        node_hints: vec![hostile.into()],
    });
    let st = state(
        vec![
            s,
            svc("ns", "plain", "10.96.0.2").port(hostile, Protocol::Udp, 53, None),
        ],
        vec![sl],
    );
    let mut n = node();
    n.node_name = hostile.into();
    n.node_labels
        .insert("topology.kubernetes.io/zone".into(), hostile.into());
    let m = render(&st, &n);
    let tx = m.create_transaction();
    tx.check().unwrap();
    let text = tx.render();
    for bad in ["flush ruleset", "\"; ", "#", "ü", "\u{202e}"] {
        assert!(!text.contains(bad), "{bad:?} leaked");
    }
    // The fake accepts it and the hashed chains work.
    FakeNft::new().run(&tx).unwrap();
    assert_eq!(
        trace(&m, &pkt(POD, "10.96.0.1", Protocol::Tcp, 80)),
        dnat(&["10.244.1.1:80"], false)
    );
}

#[test]
fn outgrowing_a_declared_size_falls_back_to_a_full_sync() {
    let fake = FakeNft::new();
    let mut p = Proxier::new(fake.clone(), node());
    // 20,000 backends: the map is declared with room for 65,536.
    assert!(p.sync(&big_state(2000, 10), None, false).unwrap().full);
    let decl = |fake: &FakeNft| {
        fake.last_transaction()
            .unwrap()
            .render()
            .lines()
            .find(|l| l.starts_with("add map ip svcnet backends-tcp "))
            .map(str::to_string)
    };
    assert!(
        decl(&fake).is_some_and(|l| l.ends_with("size 65536 ; }")),
        "{:?}",
        decl(&fake)
    );
    // Growth within the size stays partial.
    assert!(!p.sync(&big_state(2000, 12), None, false).unwrap().full);
    // Growth beyond it (80,000 backends) is a full sync that declares a bigger map.
    assert!(p.sync(&big_state(2000, 40), None, false).unwrap().full);
    assert!(
        decl(&fake).is_some_and(|l| l.ends_with("size 262144 ; }")),
        "{:?}",
        decl(&fake)
    );
}

#[test]
fn full_sync_writes_each_shared_element_once_first_contribution_wins() {
    // Two Services claim the same external IP and port (bad input): one `service-ips` element, one
    // set of backends (the first Service's, in key order), and the model equals the rendered one.
    let st = state(
        vec![
            svc("ns", "a", "10.96.0.1")
                .tcp(80)
                .external_ip("203.0.113.9"),
            svc("ns", "b", "10.96.0.2")
                .tcp(80)
                .external_ip("203.0.113.9"),
        ],
        vec![
            slice("ns", "a", "a-1").tcp(80).ep("10.244.1.1", "node-b"),
            slice("ns", "b", "b-1").tcp(80).ep("10.244.1.2", "node-b"),
        ],
    );
    let fake = FakeNft::new();
    let mut p = Proxier::new(fake.clone(), node());
    assert!(p.sync(&st, None, true).unwrap().full);
    let text = fake.last_transaction().unwrap().render();
    assert_eq!(
        text.matches("203.0.113.9 . tcp . 80 :").count(),
        1,
        "{text}"
    );
    assert_eq!(text.matches("203.0.113.9 . 80 . 0 :").count(), 1, "{text}");
    assert!(
        text.contains("203.0.113.9 . 80 . 0 : 10.244.1.1 . 80"),
        "{text}"
    );
    assert_eq!(fake.model(), render(&st, &node()));
}

#[test]
fn large_full_sync_equals_the_model_and_streams_in_key_order() {
    // 3,000 Services: the streamed full sync builds the same model as the incremental renderer, and
    // lists Services in key order.
    let st = big_state(3000, 2);
    let fake = FakeNft::new();
    let mut p = Proxier::new(fake.clone(), node());
    assert!(p.sync(&st, None, true).unwrap().full);
    assert_eq!(fake.model(), render(&st, &node()));
    let text = fake.last_transaction().unwrap().render();
    let order: Vec<usize> = text
        .lines()
        .filter(|l| l.starts_with("add element ip svcnet cluster-ips"))
        .flat_map(|l| {
            l.split(['{', ',', '}'])
                .skip(1)
                .map(str::trim)
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .map(|ip| {
            let o: Vec<usize> = ip.split('.').map(|x| x.parse().unwrap()).collect();
            o[2] * 256 + o[3]
        })
        .collect();
    assert_eq!(order.len(), 3000);
    let names: Vec<String> = (0..3000).map(|i| format!("s{i}")).collect();
    let mut sorted = names.clone();
    sorted.sort();
    let expected: Vec<usize> = sorted
        .iter()
        .map(|n| n[1..].parse::<usize>().unwrap())
        .collect();
    assert_eq!(order, expected, "streamed in Service key order");
}

#[test]
fn kube_proxy_no_local_endpoints_counts_per_family_and_policy() {
    use crate::node::kube_proxy_metrics::{no_local_endpoints, Policy};
    let st = state(
        vec![
            // ETP Local, reachable from outside, endpoint only on node-b.
            svc("ns", "etp", "10.96.0.5")
                .cip("fd00::5")
                .port("http", Protocol::Tcp, 80, Some(30080))
                .etp_local(),
            // ITP Local with a local endpoint in IPv4 only.
            svc("ns", "itp", "10.96.0.6")
                .cip("fd00::6")
                .tcp(80)
                .itp_local(),
            // ETP Local but not reachable from outside: never counted as external.
            svc("ns", "inner", "10.96.0.7").tcp(80).etp_local(),
            // Cluster policies: never counted.
            svc("ns", "plain", "10.96.0.8").tcp(80),
        ],
        vec![
            slice("ns", "etp", "etp-1")
                .tcp(8080)
                .ep("10.244.2.8", "node-b"),
            slice("ns", "itp", "itp-1")
                .tcp(8080)
                .ep("10.244.1.9", "node-a"),
            slice("ns", "itp", "itp-2")
                .v6()
                .tcp(8080)
                .ep("fd00:244:2::9", "node-b"),
        ],
    );
    let on_a = no_local_endpoints(&st, "node-a");
    assert_eq!(on_a.get(&(Family::Ipv4, Policy::External)), Some(&1));
    assert_eq!(on_a.get(&(Family::Ipv6, Policy::External)), Some(&1));
    assert_eq!(on_a.get(&(Family::Ipv4, Policy::Internal)), None);
    assert_eq!(on_a.get(&(Family::Ipv6, Policy::Internal)), Some(&1));
    let on_b = no_local_endpoints(&st, "node-b");
    // node-b has etp's endpoint (IPv4 only: the IPv6 family has none) and itp's IPv6 one.
    assert_eq!(on_b.get(&(Family::Ipv4, Policy::External)), None);
    assert_eq!(on_b.get(&(Family::Ipv6, Policy::External)), Some(&1));
    assert_eq!(on_b.get(&(Family::Ipv4, Policy::Internal)), Some(&1));
    assert_eq!(on_b.get(&(Family::Ipv6, Policy::Internal)), None);
}

mod detect_local;
mod service_cidrs;
