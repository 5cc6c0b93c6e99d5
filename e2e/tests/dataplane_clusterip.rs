//! svcnet-proxy ClusterIP features with real packets: TCP balancing, several
//! ports per Service, only ready endpoints, rejects for Services without endpoints and for a
//! wrong port on a live ClusterIP.
//!
//! **Every test here needs root** (network namespaces, nftables); CI runs as root. Each test
//! builds a 2-node cluster (`testkit::netns`), runs `svcnet-proxy apply -f` in every node namespace
//! and asserts on what clients in pods observe. Needs the `svcnet-proxy` binary built
//! (`cargo build -p svcnet-dataplane -p svcnet-testkit --bins`).

#![allow(clippy::unwrap_used)]

mod common_dataplane;

use common_dataplane::{answered, builder, names, sa, service, slice, Cluster, Ep};
use testkit::netns::{EchoPorts, Outcome, Proto, RefuseReason};

/// Three backends (web-0, web-1 on node1/node2, web-2 not ready on node2) and a client pod.
fn cluster(ports: EchoPorts) -> Cluster {
    Cluster::new(
        builder()
            .echo_ports(ports)
            .pod("web-0", 1)
            .pod("cli", 1)
            .pod("web-1", 2)
            .pod("web-2", 2),
    )
}

fn web_endpoints(c: &Cluster) -> Vec<Ep> {
    let t = &c.topo;
    vec![
        Ep::ready(t.pod("web-0").unwrap().ipv4(), "node1"),
        Ep::ready(t.pod("web-1").unwrap().ipv4(), "node2"),
        Ep::not_ready(t.pod("web-2").unwrap().ipv4(), "node2"),
    ]
}

/// Root only: a ClusterIP Service balances new TCP connections across the ready endpoints on
/// both nodes, never to the not-ready one, and the pod sees the client pod's own address (no
/// masquerade for pod → ClusterIP).
#[test]
fn clusterip_tcp_balances_across_ready_endpoints() {
    let c = cluster(EchoPorts::new(&[8080], &[]));
    let yaml = [
        service(
            "web",
            "{clusterIP: 10.96.0.10, clusterIPs: [10.96.0.10], \
             ports: [{name: tcp, port: 80, protocol: TCP, targetPort: 8080}]}",
        ),
        slice("web-1", "web", &[("tcp", 8080, "TCP")], &web_endpoints(&c)),
    ]
    .concat();
    c.apply(&yaml);
    let cli = c.topo.pod("cli").unwrap();
    let outs = c.attempts(cli, Proto::Tcp, sa([10, 96, 0, 10], 80), 24);
    assert_eq!(answered(&outs), names(&["web-0", "web-1"]), "{outs:?}");
    for o in &outs {
        assert_eq!(o.peer_ip(), Some(cli.ipv4().into()), "{o:?}");
    }
}

/// Root only: a Service with two TCP ports maps each port to its own target port.
#[test]
fn clusterip_multiple_ports_map_to_their_target_ports() {
    let c = cluster(EchoPorts::new(&[8080, 9090], &[]));
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {namespace: default, name: web}\nspec:\n  \
               clusterIP: 10.96.0.11\n  clusterIPs: [10.96.0.11]\n  ports:\n  \
               - {name: http, port: 80, protocol: TCP, targetPort: 8080}\n  \
               - {name: admin, port: 81, protocol: TCP, targetPort: 9090}\n---\n";
    let yaml = format!(
        "{svc}{}",
        slice(
            "web-1",
            "web",
            &[("http", 8080, "TCP"), ("admin", 9090, "TCP")],
            &web_endpoints(&c)
        )
    );
    c.apply(&yaml);
    let cli = c.topo.pod("cli").unwrap();
    for (port, target) in [(80, 8080), (81, 9090)] {
        let outs = c.attempts(cli, Proto::Tcp, sa([10, 96, 0, 11], port), 16);
        assert_eq!(answered(&outs), names(&["web-0", "web-1"]), "{outs:?}");
        for o in &outs {
            let Outcome::Replied { local, .. } = o else {
                unreachable!()
            };
            assert_eq!(local.port(), target, "port {port}: {o:?}");
        }
    }
}

/// Root only: a Service without endpoints (empty slice, or only not-ready endpoints) is rejected
/// at once for TCP and UDP (reset / ICMP port unreachable), and a port the live ClusterIP does not
/// serve is rejected too (not dropped).
#[test]
fn clusterip_without_endpoints_and_wrong_port_are_rejected() {
    let c = cluster(EchoPorts::new(&[8080], &[8080]));
    let t = &c.topo;
    let svc = |name: &str, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{namespace: default, name: {name}}}\nspec:\n  \
             clusterIP: {ip}\n  clusterIPs: [{ip}]\n  ports:\n  \
             - {{name: tcp, port: 80, protocol: TCP, targetPort: 8080}}\n  \
             - {{name: udp, port: 80, protocol: UDP, targetPort: 8080}}\n---\n"
        )
    };
    let ports = [("tcp", 8080, "TCP"), ("udp", 8080, "UDP")];
    let yaml = [
        svc("empty", "10.96.0.20"),
        slice("empty-1", "empty", &ports, &[]),
        svc("unready", "10.96.0.21"),
        slice(
            "unready-1",
            "unready",
            &ports,
            &[Ep::not_ready(t.pod("web-1").unwrap().ipv4(), "node2")],
        ),
        svc("live", "10.96.0.22"),
        slice(
            "live-1",
            "live",
            &ports,
            &[Ep::ready(t.pod("web-1").unwrap().ipv4(), "node2")],
        ),
    ]
    .concat();
    c.apply(&yaml);
    let cli = t.pod("cli").unwrap();
    for (ip, port) in [
        ([10, 96, 0, 20], 80),
        ([10, 96, 0, 21], 80),
        ([10, 96, 0, 22], 81),
    ] {
        for proto in [Proto::Tcp, Proto::Udp] {
            let out = c.short(cli, proto, sa(ip, port));
            assert!(
                matches!(
                    out,
                    Outcome::Refused {
                        reason: RefuseReason::ConnectionRefused
                    }
                ),
                "{proto:?} {ip:?}:{port}: expected connection refused, got {out:?}\n{}",
                c.ruleset(1)
            );
        }
    }
    // The live port itself works (the rejects above are not a broken cluster).
    let out = c
        .topo
        .client(cli, Proto::Tcp, sa([10, 96, 0, 22], 80))
        .unwrap();
    assert_eq!(out.pod(), Some("web-1"), "{out:?}");
}

/// Root only: a hostNetwork endpoint (an echo server on node2's own address) behind a ClusterIP
/// is reached from a pod on node1.
#[test]
fn clusterip_reaches_host_network_endpoint() {
    let c = cluster(EchoPorts::new(&[8080], &[]));
    let node2 = c.topo.node(2).unwrap();
    let _host = c
        .topo
        .echo_server(node2, "host-node2", &EchoPorts::new(&[9100], &[]))
        .unwrap();
    let yaml = [
        service(
            "hostnet",
            "{clusterIP: 10.96.0.30, clusterIPs: [10.96.0.30], \
             ports: [{name: metrics, port: 9100, protocol: TCP, targetPort: 9100}]}",
        ),
        slice(
            "hostnet-1",
            "hostnet",
            &[("metrics", 9100, "TCP")],
            &[Ep::ready(node2.ipv4(), "node2")],
        ),
    ]
    .concat();
    c.apply(&yaml);
    let cli = c.topo.pod("cli").unwrap();
    let outs = c.attempts(cli, Proto::Tcp, sa([10, 96, 0, 30], 9100), 4);
    assert_eq!(answered(&outs), names(&["host-node2"]), "{outs:?}");
}

/// Root only: endpoints are merged across several EndpointSlices of one Service (a duplicate
/// address counted once), and a Service labelled `service.kubernetes.io/service-proxy-name` (owned
/// by another proxy) is not programmed: its ClusterIP is dropped like an unallocated one.
#[test]
fn slices_merge_and_foreign_proxy_services_are_ignored() {
    let c = cluster(EchoPorts::new(&[8080], &[]));
    let t = &c.topo;
    let (w0, w1) = (
        t.pod("web-0").unwrap().ipv4(),
        t.pod("web-1").unwrap().ipv4(),
    );
    let port = &[("http", 8080, "TCP")];
    let spec = |ip: &str| {
        format!(
            "{{clusterIP: {ip}, clusterIPs: [{ip}], \
             ports: [{{name: http, port: 80, protocol: TCP, targetPort: 8080}}]}}"
        )
    };
    let foreign = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{namespace: default, name: foreign, labels: \
         {{service.kubernetes.io/service-proxy-name: other-proxy}}}}\nspec: {}\n---\n",
        spec("10.96.0.41")
    );
    let yaml = [
        service("merged", &spec("10.96.0.40")),
        slice("merged-a", "merged", port, &[Ep::ready(w0, "node1")]),
        slice(
            "merged-b",
            "merged",
            port,
            &[Ep::ready(w1, "node2"), Ep::ready(w0, "node1")],
        ),
        foreign,
        slice("foreign-1", "foreign", port, &[Ep::ready(w0, "node1")]),
    ]
    .concat();
    c.apply(&yaml);
    let cli = t.pod("cli").unwrap();
    let outs = c.attempts(cli, Proto::Tcp, sa([10, 96, 0, 40], 80), 20);
    assert_eq!(answered(&outs), names(&["web-0", "web-1"]), "{outs:?}");
    let out = c.short(cli, Proto::Tcp, sa([10, 96, 0, 41], 80));
    assert!(
        out.is_timeout(),
        "foreign Service must not be served: {out:?}"
    );
}
