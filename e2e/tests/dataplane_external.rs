//! svcnet-proxy external traffic with real packets: NodePort with externalTrafficPolicy Cluster
//! (masqueraded) and Local (client source preserved, only local endpoints, no answer from a node
//! without one), LoadBalancer ingress IPs and externalIPs, loadBalancerSourceRanges.
//!
//! **Every test here needs root** (network namespaces, nftables); CI runs as root. Each test
//! builds a 2-node cluster with outside clients on the LAN (`testkit::netns`), runs
//! `svcnet-proxy apply -f` in every node namespace and asserts on what the clients observe.
//! Needs the `svcnet-proxy` binary built (`cargo build -p svcnet-dataplane -p svcnet-testkit --bins`).

#![allow(clippy::unwrap_used)]

mod common_dataplane;

use std::net::IpAddr;

use common_dataplane::{
    answered, builder, conntrack_entries, names, sa, service, service_with_status, slice, Cluster,
    Ep,
};
use testkit::netns::{EchoPorts, Proto};

/// web-0 on node1, web-1 on node2; two outside clients routed via node1.
fn cluster() -> Cluster {
    Cluster::new(
        builder()
            .echo_ports(EchoPorts::new(&[8080], &[]))
            .outside_clients(2)
            .outside_via(1)
            .pod("web-0", 1)
            .pod("web-1", 2),
    )
}

fn both(c: &Cluster) -> Vec<Ep> {
    vec![
        Ep::ready(c.topo.pod("web-0").unwrap().ipv4(), "node1"),
        Ep::ready(c.topo.pod("web-1").unwrap().ipv4(), "node2"),
    ]
}

const TCP: &[(&str, u16, &str)] = &[("http", 8080, "TCP")];

/// Root only: NodePort with externalTrafficPolicy Cluster from outside reaches endpoints on both
/// nodes through node1, and the endpoints see a masqueraded source (a node1 address, never the
/// client's).
#[test]
fn nodeport_etp_cluster_balances_and_masquerades() {
    let c = cluster();
    let yaml = [
        service(
            "np",
            "{type: NodePort, clusterIP: 10.96.1.10, clusterIPs: [10.96.1.10], \
             ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30080}]}",
        ),
        slice("np-1", "np", TCP, &both(&c)),
    ]
    .concat();
    c.apply(&yaml);
    let out = c.topo.outside().unwrap();
    let node1 = c.topo.node(1).unwrap();
    let outs = c.attempts(out, Proto::Tcp, sa(node1.ipv4(), 30080), 20);
    assert_eq!(answered(&outs), names(&["web-0", "web-1"]), "{outs:?}");
    let node1_ips: [IpAddr; 2] = [node1.ipv4().into(), gateway(node1).into()];
    for o in &outs {
        let peer = o.peer_ip().unwrap();
        assert_ne!(peer, IpAddr::from(out.ipv4()), "not masqueraded: {o:?}");
        if o.pod() == Some("web-1") {
            assert_eq!(peer, IpAddr::from(node1.ipv4()), "{o:?}");
        } else {
            assert!(node1_ips.contains(&peer), "{o:?}");
        }
    }
}

/// node1's address on its pod bridge (the gateway of its pod CIDR).
fn gateway(node: &testkit::netns::Node) -> std::net::Ipv4Addr {
    let IpAddr::V4(net) = node.pod_cidr_v4().addr() else {
        unreachable!("an IPv4 CIDR")
    };
    let [a, b, c, d] = net.octets();
    std::net::Ipv4Addr::new(a, b, c, d + 1)
}

/// Root only: NodePort with externalTrafficPolicy Local: each node sends outside traffic only to
/// its local endpoint and the endpoint sees the client's own address; a node without a local
/// endpoint does not answer the NodePort (dropped, not forwarded elsewhere).
#[test]
fn nodeport_etp_local_preserves_source_and_uses_local_endpoints_only() {
    let c = cluster();
    let t = &c.topo;
    let yaml = [
        service(
            "local",
            "{type: NodePort, externalTrafficPolicy: Local, \
             clusterIP: 10.96.1.11, clusterIPs: [10.96.1.11], \
             ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30081}]}",
        ),
        slice("local-1", "local", TCP, &both(&c)),
        service(
            "only1",
            "{type: NodePort, externalTrafficPolicy: Local, \
             clusterIP: 10.96.1.12, clusterIPs: [10.96.1.12], \
             ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30082}]}",
        ),
        slice(
            "only1-1",
            "only1",
            TCP,
            &[Ep::ready(t.pod("web-0").unwrap().ipv4(), "node1")],
        ),
    ]
    .concat();
    c.apply(&yaml);
    let out = t.outside().unwrap();
    for (node, pod) in [(1, "web-0"), (2, "web-1")] {
        let ip = t.node(node).unwrap().ipv4();
        let outs = c.attempts(out, Proto::Tcp, sa(ip, 30081), 12);
        assert_eq!(answered(&outs), names(&[pod]), "node{node}: {outs:?}");
        for o in &outs {
            assert_eq!(
                o.peer_ip(),
                Some(out.ipv4().into()),
                "source not preserved: {o:?}"
            );
        }
    }
    let ok = c
        .topo
        .client(out, Proto::Tcp, sa(t.node(1).unwrap().ipv4(), 30082))
        .unwrap();
    assert_eq!(ok.pod(), Some("web-0"), "{ok:?}");
    let none = c.short(out, Proto::Tcp, sa(t.node(2).unwrap().ipv4(), 30082));
    assert!(
        none.is_timeout(),
        "node2 has no local endpoint: expected a drop, got {none:?}"
    );
}

/// Root only: a LoadBalancer Service answers on its ingress IP and on its externalIP from outside
/// (routed via node1), balancing over both nodes' endpoints, masqueraded (ETP Cluster).
#[test]
fn loadbalancer_ingress_and_external_ips_from_outside() {
    let c = cluster();
    let yaml = [
        service_with_status(
            "lb",
            "{type: LoadBalancer, clusterIP: 10.96.1.13, clusterIPs: [10.96.1.13], \
             externalIPs: [10.97.0.2], \
             ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30083}]}",
            "{loadBalancer: {ingress: [{ip: 10.97.0.1}]}}",
        ),
        slice("lb-1", "lb", TCP, &both(&c)),
    ]
    .concat();
    c.apply(&yaml);
    let out = c.topo.outside().unwrap();
    for ip in [[10, 97, 0, 1], [10, 97, 0, 2]] {
        let outs = c.attempts(out, Proto::Tcp, sa(ip, 80), 20);
        assert_eq!(
            answered(&outs),
            names(&["web-0", "web-1"]),
            "{ip:?}: {outs:?}"
        );
        for o in &outs {
            assert_ne!(
                o.peer_ip(),
                Some(out.ipv4().into()),
                "not masqueraded: {o:?}"
            );
        }
    }
}

/// Root only: loadBalancerSourceRanges admit the listed client and drop the other one on the LB
/// IP, while the Service's NodePort stays reachable for both (ranges apply to LB IPs only).
#[test]
fn loadbalancer_source_ranges_are_enforced() {
    let c = cluster();
    let allowed = c.topo.outside_n(1).unwrap();
    let blocked = c.topo.outside_n(2).unwrap();
    let spec = format!(
        "{{type: LoadBalancer, clusterIP: 10.96.1.14, clusterIPs: [10.96.1.14], \
         loadBalancerSourceRanges: [\"{}/32\"], \
         ports: [{{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30084}}]}}",
        allowed.ipv4()
    );
    let yaml = [
        service_with_status("fw", &spec, "{loadBalancer: {ingress: [{ip: 10.97.0.3}]}}"),
        slice("fw-1", "fw", TCP, &both(&c)),
    ]
    .concat();
    c.apply(&yaml);
    let lb = sa([10, 97, 0, 3], 80);
    let ok = c.attempts(allowed, Proto::Tcp, lb, 4);
    assert!(ok.iter().all(|o| o.is_replied()), "allowed source: {ok:?}");
    let no = c.short(blocked, Proto::Tcp, lb);
    assert!(
        no.is_timeout(),
        "blocked source: expected a drop, got {no:?}"
    );
    let np = sa(c.topo.node(1).unwrap().ipv4(), 30084);
    let via_np = c.topo.client(blocked, Proto::Tcp, np).unwrap();
    assert!(
        via_np.is_replied(),
        "NodePort ignores source ranges: {via_np:?}"
    );
}

/// Root only: a LoadBalancer with externalTrafficPolicy Local: outside traffic to its ingress IP
/// and its externalIP reaches only the endpoint on the node it arrives at, with the client's
/// source preserved; re-routing the outside client to node2 switches to node2's endpoint.
#[test]
fn loadbalancer_etp_local_uses_the_receiving_nodes_endpoint() {
    let mut c = cluster();
    let yaml = [
        service_with_status(
            "lblocal",
            "{type: LoadBalancer, externalTrafficPolicy: Local, healthCheckNodePort: 32010, \
             clusterIP: 10.96.1.15, clusterIPs: [10.96.1.15], externalIPs: [10.97.0.6], \
             ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30085}]}",
            "{loadBalancer: {ingress: [{ip: 10.97.0.5}]}}",
        ),
        slice("lblocal-1", "lblocal", TCP, &both(&c)),
    ]
    .concat();
    c.apply(&yaml);
    for (via, pod) in [(1, "web-0"), (2, "web-1")] {
        c.topo.set_outside_via(via).unwrap();
        let out = c.topo.outside().unwrap();
        for ip in [[10, 97, 0, 5], [10, 97, 0, 6]] {
            let outs = c.attempts(out, Proto::Tcp, sa(ip, 80), 12);
            assert_eq!(
                answered(&outs),
                names(&[pod]),
                "via node{via} {ip:?}: {outs:?}"
            );
            for o in &outs {
                assert_eq!(
                    o.peer_ip(),
                    Some(out.ipv4().into()),
                    "source not preserved: {o:?}"
                );
            }
        }
    }
}

/// Root only: pods reaching an externalTrafficPolicy Cluster LoadBalancer IP are DNATed in their
/// own node and masqueraded (upstream: every external destination is masqueraded for ETP
/// Cluster), while the same pod's ClusterIP traffic keeps its source.
#[test]
fn pod_to_loadbalancer_ip_is_masqueraded() {
    let c = Cluster::new(
        builder()
            .echo_ports(EchoPorts::new(&[8080], &[]))
            .pod("web-0", 1)
            .pod("web-1", 2)
            .pod("cli", 2),
    );
    let yaml = [
        service_with_status(
            "lbpod",
            "{type: LoadBalancer, clusterIP: 10.96.1.16, clusterIPs: [10.96.1.16], \
             ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30086}]}",
            "{loadBalancer: {ingress: [{ip: 10.97.0.7}]}}",
        ),
        slice("lbpod-1", "lbpod", TCP, &both(&c)),
    ]
    .concat();
    c.apply(&yaml);
    let cli = c.topo.pod("cli").unwrap();
    let outs = c.attempts(cli, Proto::Tcp, sa([10, 97, 0, 7], 80), 16);
    assert_eq!(answered(&outs), names(&["web-0", "web-1"]), "{outs:?}");
    for o in &outs {
        assert_ne!(
            o.peer_ip(),
            Some(cli.ipv4().into()),
            "not masqueraded: {o:?}"
        );
    }
    for o in c.attempts(cli, Proto::Tcp, sa([10, 96, 1, 16], 80), 6) {
        assert_eq!(
            o.peer_ip(),
            Some(cli.ipv4().into()),
            "ClusterIP masqueraded: {o:?}"
        );
    }
}

/// Root only: externalTrafficPolicy Local with only a remote serving-terminating endpoint: pods
/// still reach it through the ClusterIP (Cluster list falls back to terminating endpoints), while
/// outside traffic to the LB IP on node1 (no local endpoint) is dropped in node1.
#[test]
fn etp_local_with_only_remote_terminating_endpoint() {
    let c = cluster();
    let w1 = c.topo.pod("web-1").unwrap().ipv4();
    let yaml = [
        service_with_status(
            "term",
            "{type: LoadBalancer, externalTrafficPolicy: Local, healthCheckNodePort: 32011, \
             clusterIP: 10.96.1.17, clusterIPs: [10.96.1.17], \
             ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30088}]}",
            "{loadBalancer: {ingress: [{ip: 10.97.0.8}]}}",
        ),
        slice(
            "term-1",
            "term",
            TCP,
            &[Ep::serving_terminating(w1, "node2")],
        ),
    ]
    .concat();
    c.apply(&yaml);
    let pod = c.topo.pod("web-0").unwrap();
    let outs = c.attempts(pod, Proto::Tcp, sa([10, 96, 1, 17], 80), 4);
    assert_eq!(answered(&outs), names(&["web-1"]), "{outs:?}");
    let out = c.topo.outside().unwrap();
    let lb = c.short(out, Proto::Tcp, sa([10, 97, 0, 8], 80));
    assert!(
        lb.is_timeout(),
        "no local endpoint on node1: expected a drop, got {lb:?}"
    );
    assert_eq!(
        conntrack_entries(&c, 1, [10, 97, 0, 8].into()),
        0,
        "not dropped in node1"
    );
}
