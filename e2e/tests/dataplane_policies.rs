//! svcnet-proxy per-Service policies with real packets: sessionAffinity ClientIP,
//! internalTrafficPolicy Local, hairpin (pod → its own Service → itself), terminating-endpoint
//! fallback.
//!
//! **Every test here needs root** (network namespaces, nftables); CI runs as root. Each test
//! builds a 2-node cluster (`testkit::netns`), runs `svcnet-proxy apply -f` in every node namespace
//! and asserts on what clients in pods observe. Needs the `svcnet-proxy` binary built
//! (`cargo build -p svcnet-dataplane -p svcnet-testkit --bins`).

#![allow(clippy::unwrap_used)]

mod common_dataplane;

use std::net::IpAddr;

use common_dataplane::{answered, builder, names, sa, service, slice, Cluster, Ep};
use testkit::netns::{EchoPorts, Outcome, Proto, RefuseReason};

const TCP: &[(&str, u16, &str)] = &[("http", 8080, "TCP")];

/// web-0 on node1, web-1 on node2, and a client pod on each node.
fn cluster() -> Cluster {
    Cluster::new(
        builder()
            .echo_ports(EchoPorts::new(&[8080], &[]))
            .pod("web-0", 1)
            .pod("cli1", 1)
            .pod("web-1", 2)
            .pod("cli2", 2),
    )
}

fn both(c: &Cluster) -> Vec<Ep> {
    vec![
        Ep::ready(c.topo.pod("web-0").unwrap().ipv4(), "node1"),
        Ep::ready(c.topo.pod("web-1").unwrap().ipv4(), "node2"),
    ]
}

fn clusterip(name: &str, ip: &str, extra: &str) -> String {
    service(
        name,
        &format!(
            "{{clusterIP: {ip}, clusterIPs: [{ip}], {extra} \
             ports: [{{name: http, port: 80, protocol: TCP, targetPort: 8080}}]}}"
        ),
    )
}

/// Root only: with sessionAffinity ClientIP every new connection from one client goes to the same
/// endpoint, while a Service without affinity over the same endpoints reaches both.
#[test]
fn session_affinity_client_ip_sticks_to_one_endpoint() {
    let c = cluster();
    let yaml = [
        clusterip(
            "sticky",
            "10.96.2.10",
            "sessionAffinity: ClientIP, \
             sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}},",
        ),
        slice("sticky-1", "sticky", TCP, &both(&c)),
        clusterip("plain", "10.96.2.11", ""),
        slice("plain-1", "plain", TCP, &both(&c)),
    ]
    .concat();
    c.apply(&yaml);
    for cli in ["cli1", "cli2"] {
        let from = c.topo.pod(cli).unwrap();
        let outs = c.attempts(from, Proto::Tcp, sa([10, 96, 2, 10], 80), 20);
        assert_eq!(answered(&outs).len(), 1, "{cli}: affinity broken: {outs:?}");
    }
    let from = c.topo.pod("cli1").unwrap();
    let outs = c.attempts(from, Proto::Tcp, sa([10, 96, 2, 11], 80), 20);
    assert_eq!(answered(&outs), names(&["web-0", "web-1"]), "{outs:?}");
}

/// Root only: with internalTrafficPolicy Local a pod reaches only the endpoint on its own node.
#[test]
fn internal_traffic_policy_local_uses_the_local_endpoint_only() {
    let c = cluster();
    let yaml = [
        clusterip("itp", "10.96.2.12", "internalTrafficPolicy: Local,"),
        slice("itp-1", "itp", TCP, &both(&c)),
    ]
    .concat();
    c.apply(&yaml);
    for (cli, pod) in [("cli1", "web-0"), ("cli2", "web-1")] {
        let from = c.topo.pod(cli).unwrap();
        let outs = c.attempts(from, Proto::Tcp, sa([10, 96, 2, 12], 80), 12);
        assert_eq!(answered(&outs), names(&[pod]), "{cli}: {outs:?}");
        for o in &outs {
            assert_eq!(o.peer_ip(), Some(from.ipv4().into()), "{o:?}");
        }
    }
}

/// Root only: hairpin — a pod connecting to its own Service is load-balanced to itself and the
/// connection works because the source is masqueraded (the pod does not see its own address).
#[test]
fn hairpin_pod_reaches_itself_through_its_service() {
    let c = cluster();
    let web0 = c.topo.pod("web-0").unwrap();
    let yaml = [
        clusterip("self", "10.96.2.13", ""),
        slice("self-1", "self", TCP, &[Ep::ready(web0.ipv4(), "node1")]),
    ]
    .concat();
    c.apply(&yaml);
    let outs = c.attempts(web0, Proto::Tcp, sa([10, 96, 2, 13], 80), 4);
    assert_eq!(answered(&outs), names(&["web-0"]), "{outs:?}");
    for o in &outs {
        let peer = o.peer_ip().unwrap();
        assert_ne!(
            peer,
            IpAddr::from(web0.ipv4()),
            "hairpin not masqueraded: {o:?}"
        );
    }
}

/// Root only: terminating endpoints — with ready and serving-terminating endpoints only the ready
/// ones are used; with only serving-terminating endpoints those are used (fallback); endpoints
/// that are terminating and not serving are never used (rejected when nothing else exists).
#[test]
fn terminating_endpoints_fallback() {
    let c = cluster();
    let t = &c.topo;
    let w0 = t.pod("web-0").unwrap().ipv4();
    let w1 = t.pod("web-1").unwrap().ipv4();
    let gone = |ip, node| Ep {
        serving: false,
        ..Ep::serving_terminating(ip, node)
    };
    let yaml = [
        clusterip("mixed", "10.96.2.14", ""),
        slice(
            "mixed-1",
            "mixed",
            TCP,
            &[Ep::ready(w0, "node1"), Ep::serving_terminating(w1, "node2")],
        ),
        clusterip("term", "10.96.2.15", ""),
        slice(
            "term-1",
            "term",
            TCP,
            &[
                Ep::serving_terminating(w0, "node1"),
                Ep::serving_terminating(w1, "node2"),
            ],
        ),
        clusterip("dead", "10.96.2.16", ""),
        slice(
            "dead-1",
            "dead",
            TCP,
            &[gone(w0, "node1"), gone(w1, "node2")],
        ),
    ]
    .concat();
    c.apply(&yaml);
    let cli = t.pod("cli1").unwrap();
    let outs = c.attempts(cli, Proto::Tcp, sa([10, 96, 2, 14], 80), 16);
    assert_eq!(answered(&outs), names(&["web-0"]), "{outs:?}");
    let outs = c.attempts(cli, Proto::Tcp, sa([10, 96, 2, 15], 80), 20);
    assert_eq!(answered(&outs), names(&["web-0", "web-1"]), "{outs:?}");
    let out = c.short(cli, Proto::Tcp, sa([10, 96, 2, 16], 80));
    assert!(
        matches!(
            out,
            Outcome::Refused {
                reason: RefuseReason::ConnectionRefused
            }
        ),
        "no serving endpoint: expected a reject, got {out:?}"
    );
}

/// Root only: ClientIP affinity is per client and Service port, whichever Service address is
/// used: a pod sticks to the same endpoint over the ClusterIP, the NodePort and the LB IP.
#[test]
fn session_affinity_spans_clusterip_nodeport_and_lb_ip() {
    let c = cluster();
    let yaml = [
        common_dataplane::service_with_status(
            "stickylb",
            "{type: LoadBalancer, clusterIP: 10.96.2.20, clusterIPs: [10.96.2.20], \
             sessionAffinity: ClientIP, \
             ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30087}]}",
            "{loadBalancer: {ingress: [{ip: 10.97.2.20}]}}",
        ),
        slice("stickylb-1", "stickylb", TCP, &both(&c)),
    ]
    .concat();
    c.apply(&yaml);
    let cli = c.topo.pod("cli1").unwrap();
    let node1 = c.topo.node(1).unwrap().ipv4();
    let mut outs = c.attempts(cli, Proto::Tcp, sa([10, 96, 2, 20], 80), 8);
    outs.extend(c.attempts(cli, Proto::Tcp, sa(node1, 30087), 8));
    outs.extend(c.attempts(cli, Proto::Tcp, sa([10, 97, 2, 20], 80), 8));
    assert_eq!(answered(&outs).len(), 1, "affinity not shared: {outs:?}");
}
