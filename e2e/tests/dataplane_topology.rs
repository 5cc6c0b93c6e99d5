//! svcnet-proxy topology-aware routing with real packets: when every ready endpoint carries a
//! zone hint and one names this node's zone, pods get only the endpoints hinted for their zone;
//! when any endpoint lacks a hint, every endpoint is used.
//!
//! **Needs root** (network namespaces, nftables); CI runs as root. Needs the `svcnet-proxy`
//! binary built (`cargo build -p svcnet-dataplane -p svcnet-testkit --bins`).

#![allow(clippy::unwrap_used)]

mod common_dataplane;

use common_dataplane::{answered, builder, names, sa, service, slice, Cluster, Ep};
use testkit::netns::{EchoPorts, Proto};

const TCP: &[(&str, u16, &str)] = &[("http", 8080, "TCP")];

fn clusterip(name: &str, ip: &str) -> String {
    service(
        name,
        &format!(
            "{{clusterIP: {ip}, clusterIPs: [{ip}], \
             ports: [{{name: http, port: 80, protocol: TCP, targetPort: 8080}}]}}"
        ),
    )
}

/// Root only: node1 in zone-a, node2 in zone-b. A hinted Service sends each node's pods to the
/// endpoint hinted for its zone only; the same endpoints with one hint missing are all used.
#[test]
fn topology_hints_keep_traffic_in_zone() {
    let c = Cluster::new(
        builder()
            .echo_ports(EchoPorts::new(&[8080], &[]))
            .pod("web-0", 1)
            .pod("cli1", 1)
            .pod("web-1", 2)
            .pod("cli2", 2),
    );
    c.set_zone("node1", "zone-a");
    c.set_zone("node2", "zone-b");
    let t = &c.topo;
    let (w0, w1) = (
        t.pod("web-0").unwrap().ipv4(),
        t.pod("web-1").unwrap().ipv4(),
    );
    let hinted = [
        Ep::ready(w0, "node1").zoned("zone-a", Some("zone-a")),
        Ep::ready(w1, "node2").zoned("zone-b", Some("zone-b")),
    ];
    let partly = [
        Ep::ready(w0, "node1").zoned("zone-a", Some("zone-a")),
        Ep::ready(w1, "node2").zoned("zone-b", None),
    ];
    c.apply(
        &[
            clusterip("hinted", "10.96.8.10"),
            slice("hinted-1", "hinted", TCP, &hinted),
            clusterip("partly", "10.96.8.11"),
            slice("partly-1", "partly", TCP, &partly),
        ]
        .concat(),
    );
    for (cli, pod) in [("cli1", "web-0"), ("cli2", "web-1")] {
        let from = t.pod(cli).unwrap();
        let outs = c.attempts(from, Proto::Tcp, sa([10, 96, 8, 10], 80), 12);
        assert_eq!(answered(&outs), names(&[pod]), "{cli}: {outs:?}");
    }
    let from = t.pod("cli1").unwrap();
    let outs = c.attempts(from, Proto::Tcp, sa([10, 96, 8, 11], 80), 20);
    assert_eq!(answered(&outs), names(&["web-0", "web-1"]), "{outs:?}");
}
