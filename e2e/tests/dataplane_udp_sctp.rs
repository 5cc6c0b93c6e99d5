//! UDP and SCTP through ClusterIP and NodePort, balanced over endpoints on both nodes.
//!
//! **Needs root** (network namespaces, nftables); CI runs as root.

#![allow(clippy::unwrap_used)]

mod common_dataplane;

use common_dataplane::{answered, builder, names, sa, service, slice, Cluster, Ep};
use testkit::netns::{EchoPorts, Proto};

/// Root only: UDP and SCTP ClusterIP and NodePort balance across both nodes' endpoints.
#[test]
fn udp_and_sctp_clusterip_and_nodeport_balance() {
    let c = Cluster::new(
        builder()
            .echo_ports(EchoPorts::new(&[8080], &[8080]).with_sctp(&[8080]))
            .pod("web-0", 1)
            .pod("cli", 1)
            .pod("web-1", 2),
    );
    let t = &c.topo;
    let eps = [
        Ep::ready(t.pod("web-0").unwrap().ipv4(), "node1"),
        Ep::ready(t.pod("web-1").unwrap().ipv4(), "node2"),
    ];
    c.apply(
        &[
            service(
                "multi",
                "{type: NodePort, clusterIP: 10.96.7.10, clusterIPs: [10.96.7.10], ports: [\
                 {name: udp, port: 53, protocol: UDP, targetPort: 8080, nodePort: 30053}, \
                 {name: sctp, port: 53, protocol: SCTP, targetPort: 8080, nodePort: 30054}]}",
            ),
            slice(
                "multi-1",
                "multi",
                &[("udp", 8080, "UDP"), ("sctp", 8080, "SCTP")],
                &eps,
            ),
        ]
        .concat(),
    );
    let cli = t.pod("cli").unwrap();
    let out = t.outside().unwrap();
    let node1 = t.node(1).unwrap().ipv4();
    // 24 attempts per path: with two endpoints picked at random, all of them landing on one
    // endpoint (a false "not balanced") has probability 2^-23.
    let mut failures = Vec::new();
    for (what, from_out, proto, to) in [
        ("UDP ClusterIP", false, Proto::Udp, sa([10, 96, 7, 10], 53)),
        (
            "SCTP ClusterIP",
            false,
            Proto::Sctp,
            sa([10, 96, 7, 10], 53),
        ),
        ("UDP NodePort", true, Proto::Udp, sa(node1, 30053)),
        ("SCTP NodePort", true, Proto::Sctp, sa(node1, 30054)),
    ] {
        let outs = if from_out {
            c.attempts(out, proto, to, 24)
        } else {
            c.attempts(cli, proto, to, 24)
        };
        if !outs.iter().all(|o| o.is_replied()) {
            failures.push(format!("{what} {to}: {outs:?}"));
        } else if answered(&outs) != names(&["web-0", "web-1"]) {
            failures.push(format!("{what} {to}: not balanced {outs:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
