//! svcnet-proxy drop and reject verdicts with real packets, as upstream's nftables mode: an
//! unallocated IP inside the Service CIDR is dropped, a protocol the ClusterIP does not serve is
//! rejected, internalTrafficPolicy Local without a local endpoint is dropped, and pods outside
//! loadBalancerSourceRanges are dropped on the LB IP.
//!
//! **Every test here needs root** (network namespaces, nftables); CI runs as root. Needs the
//! `svcnet-proxy` binary built (`cargo build -p svcnet-dataplane -p svcnet-testkit --bins`).

#![allow(clippy::unwrap_used)]

mod common_dataplane;

use common_dataplane::{
    builder, conntrack_entries, sa, service, service_with_status, slice, Cluster, Ep,
};
use testkit::netns::{EchoPorts, Outcome, Proto, RefuseReason};

const TCP: &[(&str, u16, &str)] = &[("http", 8080, "TCP")];

/// web-0 on node1, client pods on both nodes.
fn cluster() -> Cluster {
    Cluster::new(
        builder()
            .echo_ports(EchoPorts::new(&[8080], &[8080]))
            .pod("web-0", 1)
            .pod("cli1", 1)
            .pod("cli2", 2),
    )
}

#[track_caller]
fn assert_refused(out: &Outcome, what: &str) {
    assert!(
        matches!(
            out,
            Outcome::Refused {
                reason: RefuseReason::ConnectionRefused
            }
        ),
        "{what}: expected a reject, got {out:?}"
    );
}

/// Root only: inside the Service CIDR, an unallocated IP is dropped (timeout) while UDP to a
/// TCP-only ClusterIP port is rejected; the TCP port itself works.
#[test]
fn unallocated_service_ip_dropped_and_unserved_protocol_rejected() {
    let c = cluster();
    let web0 = c.topo.pod("web-0").unwrap().ipv4();
    c.apply(
        &[
            service(
                "web",
                "{clusterIP: 10.96.6.10, clusterIPs: [10.96.6.10], \
                 ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]}",
            ),
            slice("web-1", "web", TCP, &[Ep::ready(web0, "node1")]),
        ]
        .concat(),
    );
    let cli = c.topo.pod("cli2").unwrap();
    let vip = sa([10, 96, 6, 10], 80);
    assert_eq!(
        c.topo.client(cli, Proto::Tcp, vip).unwrap().pod(),
        Some("web-0")
    );
    assert_refused(
        &c.short(cli, Proto::Udp, vip),
        "UDP to a TCP-only ClusterIP port",
    );
    let out = c.short(cli, Proto::Tcp, sa([10, 96, 6, 99], 80));
    assert!(
        out.is_timeout(),
        "unallocated Service IP: expected a drop, got {out:?}"
    );
    assert_eq!(
        conntrack_entries(&c, 2, [10, 96, 6, 99].into()),
        0,
        "forwarded, not dropped at node2"
    );
    // Control for that check: outside the Service CIDR the node forwards the packet to the LAN
    // (which black-holes it), leaving a conntrack entry.
    let elsewhere = c.short(cli, Proto::Tcp, sa([10, 98, 0, 1], 80));
    assert!(elsewhere.is_timeout(), "{elsewhere:?}");
    assert!(
        conntrack_entries(&c, 2, [10, 98, 0, 1].into()) > 0,
        "control"
    );
}

/// Root only: internalTrafficPolicy Local — a pod on a node without a local endpoint is dropped
/// (not rejected, not sent to the remote endpoint), while a pod on the endpoint's node is served.
#[test]
fn internal_traffic_policy_local_without_local_endpoint_drops() {
    let c = cluster();
    let web0 = c.topo.pod("web-0").unwrap().ipv4();
    c.apply(
        &[
            service(
                "itp",
                "{clusterIP: 10.96.6.11, clusterIPs: [10.96.6.11], internalTrafficPolicy: Local, \
                 ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]}",
            ),
            slice("itp-1", "itp", TCP, &[Ep::ready(web0, "node1")]),
        ]
        .concat(),
    );
    let vip = sa([10, 96, 6, 11], 80);
    let local = c
        .topo
        .client(c.topo.pod("cli1").unwrap(), Proto::Tcp, vip)
        .unwrap();
    assert_eq!(local.pod(), Some("web-0"), "{local:?}");
    let remote = c.short(c.topo.pod("cli2").unwrap(), Proto::Tcp, vip);
    assert!(
        remote.is_timeout(),
        "no local endpoint on node2: expected a drop, got {remote:?}"
    );
    assert_eq!(
        conntrack_entries(&c, 2, [10, 96, 6, 11].into()),
        0,
        "forwarded, not dropped at node2"
    );
}

/// Root only: loadBalancerSourceRanges also apply to pods: a pod outside the ranges is dropped on
/// the LB IP (dropped in its own node), while it can still use the ClusterIP, and an LB IP whose
/// ranges include the pod CIDR admits it.
#[test]
fn pod_outside_source_ranges_is_dropped_on_lb_ip() {
    let c = cluster();
    let web0 = c.topo.pod("web-0").unwrap().ipv4();
    c.apply(
        &[
            service_with_status(
                "fw",
                "{type: LoadBalancer, clusterIP: 10.96.6.12, clusterIPs: [10.96.6.12], \
                 loadBalancerSourceRanges: [203.0.113.0/25], \
                 ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30097}]}",
                "{loadBalancer: {ingress: [{ip: 10.97.6.12}]}}",
            ),
            slice("fw-1", "fw", TCP, &[Ep::ready(web0, "node1")]),
            service_with_status(
                "open",
                "{type: LoadBalancer, clusterIP: 10.96.6.13, clusterIPs: [10.96.6.13], \
                 loadBalancerSourceRanges: [10.244.0.0/16], \
                 ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30098}]}",
                "{loadBalancer: {ingress: [{ip: 10.97.6.13}]}}",
            ),
            slice("open-1", "open", TCP, &[Ep::ready(web0, "node1")]),
        ]
        .concat(),
    );
    let cli = c.topo.pod("cli2").unwrap();
    let ok = c
        .topo
        .client(cli, Proto::Tcp, sa([10, 96, 6, 12], 80))
        .unwrap();
    assert_eq!(ok.pod(), Some("web-0"), "ClusterIP: {ok:?}");
    let out = c.short(cli, Proto::Tcp, sa([10, 97, 6, 12], 80));
    assert!(
        out.is_timeout(),
        "pod outside the ranges → LB IP: expected a drop, got {out:?}"
    );
    assert_eq!(
        conntrack_entries(&c, 2, [10, 97, 6, 12].into()),
        0,
        "forwarded, not dropped at node2"
    );
    let open = c
        .topo
        .client(cli, Proto::Tcp, sa([10, 97, 6, 13], 80))
        .unwrap();
    assert_eq!(
        open.pod(),
        Some("web-0"),
        "LB IP whose ranges include the pod: {open:?}"
    );
}
