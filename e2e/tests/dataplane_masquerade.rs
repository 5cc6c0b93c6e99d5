//! svcnet-proxy masquerading decisions with real packets: off-cluster sources to a ClusterIP
//! (cluster-CIDR detector), `--masquerade-all`, and pods reaching an externalTrafficPolicy Local
//! NodePort (short-circuited to every endpoint, unmasqueraded), plus `--nodeport-addresses`.
//!
//! **Every test here needs root** (network namespaces, nftables); CI runs as root. Needs the
//! `svcnet-proxy` binary built (`cargo build -p svcnet-dataplane -p svcnet-testkit --bins`).

#![allow(clippy::unwrap_used)]

mod common_dataplane;

use std::net::{IpAddr, Ipv4Addr};

use common_dataplane::{answered, builder, names, sa, service, slice, Cluster, Ep};
use testkit::netns::{EchoPorts, Proto};

const TCP: &[(&str, u16, &str)] = &[("http", 8080, "TCP")];

/// web-0 on node1, web-1 on node2, a client pod on node1, an outside client via node1.
fn cluster() -> Cluster {
    Cluster::new(
        builder()
            .echo_ports(EchoPorts::new(&[8080], &[]))
            .outside_via(1)
            .pod("web-0", 1)
            .pod("cli", 1)
            .pod("web-1", 2),
    )
}

fn both(c: &Cluster) -> Vec<Ep> {
    vec![
        Ep::ready(c.topo.pod("web-0").unwrap().ipv4(), "node1"),
        Ep::ready(c.topo.pod("web-1").unwrap().ipv4(), "node2"),
    ]
}

fn web(c: &Cluster, spec: &str) -> String {
    [service("web", spec), slice("web-1", "web", TCP, &both(c))].concat()
}

/// node1's address on its pod bridge.
fn node1_bridge_ip() -> IpAddr {
    Ipv4Addr::new(10, 244, 1, 1).into()
}

/// Root only: an outside client (not in the cluster CIDR) reaching a ClusterIP through node1 is
/// masqueraded, while a pod reaching the same ClusterIP keeps its own source address.
#[test]
fn off_cluster_source_to_clusterip_is_masqueraded() {
    let c = cluster();
    c.apply(&web(
        &c,
        "{clusterIP: 10.96.5.10, clusterIPs: [10.96.5.10], \
         ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]}",
    ));
    let vip = sa([10, 96, 5, 10], 80);
    let out = c.topo.outside().unwrap();
    let outs = c.attempts(out, Proto::Tcp, vip, 16);
    assert_eq!(answered(&outs), names(&["web-0", "web-1"]), "{outs:?}");
    for o in &outs {
        assert_ne!(
            o.peer_ip(),
            Some(out.ipv4().into()),
            "not masqueraded: {o:?}"
        );
    }
    let cli = c.topo.pod("cli").unwrap();
    for o in c.attempts(cli, Proto::Tcp, vip, 8) {
        assert_eq!(
            o.peer_ip(),
            Some(cli.ipv4().into()),
            "pod source changed: {o:?}"
        );
    }
}

/// Root only: with `--masquerade-all` even pod → ClusterIP traffic is masqueraded.
#[test]
fn masquerade_all_masquerades_pod_traffic() {
    let c = cluster();
    c.apply_with(
        &web(
            &c,
            "{clusterIP: 10.96.5.11, clusterIPs: [10.96.5.11], \
             ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]}",
        ),
        &["--masquerade-all"],
    );
    let cli = c.topo.pod("cli").unwrap();
    let outs = c.attempts(cli, Proto::Tcp, sa([10, 96, 5, 11], 80), 16);
    assert_eq!(answered(&outs), names(&["web-0", "web-1"]), "{outs:?}");
    for o in &outs {
        assert_ne!(
            o.peer_ip(),
            Some(cli.ipv4().into()),
            "not masqueraded: {o:?}"
        );
    }
}

/// Root only: a pod reaching an externalTrafficPolicy Local NodePort on its own node is
/// short-circuited to every endpoint (not only the local one) and not masqueraded, as upstream.
#[test]
fn pod_to_etp_local_nodeport_reaches_every_endpoint_unmasqueraded() {
    let c = cluster();
    c.apply(&web(
        &c,
        "{type: NodePort, externalTrafficPolicy: Local, \
         clusterIP: 10.96.5.12, clusterIPs: [10.96.5.12], \
         ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30095}]}",
    ));
    let cli = c.topo.pod("cli").unwrap();
    let node1 = c.topo.node(1).unwrap().ipv4();
    let outs = c.attempts(cli, Proto::Tcp, sa(node1, 30095), 20);
    assert_eq!(answered(&outs), names(&["web-0", "web-1"]), "{outs:?}");
    for o in &outs {
        assert_eq!(o.peer_ip(), Some(cli.ipv4().into()), "masqueraded: {o:?}");
    }
}

/// Root only: `--nodeport-addresses` — by default (`primary`) a NodePort is not served on a
/// secondary node address (node1's pod-bridge IP), and once that address's CIDR is listed it is.
#[test]
fn nodeport_addresses_filter_selects_node_ips() {
    let c = cluster();
    let yaml = web(
        &c,
        "{type: NodePort, clusterIP: 10.96.5.13, clusterIPs: [10.96.5.13], \
         ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30096}]}",
    );
    c.apply(&yaml);
    let cli = c.topo.pod("cli").unwrap();
    let secondary = sa(node1_bridge_ip(), 30096);
    let primary = sa(c.topo.node(1).unwrap().ipv4(), 30096);
    assert!(c
        .topo
        .client(cli, Proto::Tcp, primary)
        .unwrap()
        .is_replied());
    let out = c.short(cli, Proto::Tcp, secondary);
    assert!(
        !out.is_replied(),
        "primary only: NodePort on {secondary} must not be served: {out:?}"
    );

    c.apply_with(
        &yaml,
        &["--nodeport-addresses", "10.244.1.0/24,192.168.200.0/24"],
    );
    let out = c.topo.client(cli, Proto::Tcp, secondary).unwrap();
    assert!(
        out.is_replied(),
        "listed CIDR: NodePort on {secondary}: {out:?}"
    );
}

/// Root only: internalTrafficPolicy Local applies to an outside client reaching the ClusterIP
/// through node1 too: only node1's endpoint answers, and the source is still masqueraded.
#[test]
fn itp_local_from_outside_uses_local_endpoint_masqueraded() {
    let c = cluster();
    c.apply(&web(
        &c,
        "{clusterIP: 10.96.5.14, clusterIPs: [10.96.5.14], internalTrafficPolicy: Local, \
         ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]}",
    ));
    let out = c.topo.outside().unwrap();
    let outs = c.attempts(out, Proto::Tcp, sa([10, 96, 5, 14], 80), 12);
    assert_eq!(answered(&outs), names(&["web-0"]), "{outs:?}");
    for o in &outs {
        assert_ne!(
            o.peer_ip(),
            Some(out.ipv4().into()),
            "not masqueraded: {o:?}"
        );
    }
}
