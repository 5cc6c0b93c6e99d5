//! PENDING (fails on the current dataplane): IPv6 TCP to a Service without endpoints must be
//! rejected at once. **Needs root.**

#![allow(clippy::unwrap_used)]

mod common_dataplane;

use common_dataplane::{builder, sa, service, slice, Cluster};
use testkit::netns::{EchoPorts, Outcome, Proto, RefuseReason};

/// Root only: TCP over IPv6 to a Service without endpoints is refused within the 300 ms timeout.
#[test]
fn ipv6_tcp_without_endpoints_is_rejected_at_once() {
    let c = Cluster::new(
        builder()
            .echo_ports(EchoPorts::new(&[8080], &[]))
            .pod("cli", 1),
    );
    c.apply(
        &[
            service(
                "empty6",
                "{ipFamilyPolicy: SingleStack, ipFamilies: [IPv6], \
                 clusterIP: \"fd00:96::11\", clusterIPs: [\"fd00:96::11\"], \
                 ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]}",
            ),
            slice("empty6-1", "empty6", &[("http", 8080, "TCP")], &[])
                .replace("addressType: IPv4", "addressType: IPv6"),
        ]
        .concat(),
    );
    let cli = c.topo.pod("cli").unwrap();
    let v6: std::net::Ipv6Addr = "fd00:96::11".parse().unwrap();
    for _ in 0..3 {
        let out = c.short(cli, Proto::Tcp, sa(v6, 80));
        assert!(
            matches!(
                out,
                Outcome::Refused {
                    reason: RefuseReason::ConnectionRefused
                }
            ),
            "{out:?}"
        );
    }
}
