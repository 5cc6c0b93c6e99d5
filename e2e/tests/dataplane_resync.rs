//! svcnet-proxy re-programming with real packets: running `apply` again with changed endpoints
//! keeps an established TCP connection through a ClusterIP alive and switches new connections to
//! the new endpoint set.
//!
//! **Needs root** (network namespaces, nftables); CI runs as root. Needs the `svcnet-proxy`
//! binary built (`cargo build -p svcnet-dataplane -p svcnet-testkit --bins`).

#![allow(clippy::unwrap_used)]

mod common_dataplane;

use common_dataplane::{answered, builder, names, sa, service, slice, Cluster, Ep};
use testkit::netns::{EchoPorts, Proto};

const TCP: &[(&str, u16, &str)] = &[("http", 8080, "TCP")];

/// Root only: an established session survives a second full `apply` in which the other endpoint
/// is removed and a new one added; afterwards new connections reach exactly the new set.
#[test]
fn reapply_with_changed_endpoints_keeps_established_session() {
    let c = Cluster::new(
        builder()
            .echo_ports(EchoPorts::new(&[8080], &[]))
            .pod("web-0", 1)
            .pod("cli", 1)
            .pod("web-1", 2)
            .pod("web-2", 2),
    );
    let t = &c.topo;
    let ip = |p: &str| t.pod(p).unwrap().ipv4();
    let node = |p: &str| format!("node{}", t.pod(p).unwrap().node_index());
    let svc = service(
        "web",
        "{clusterIP: 10.96.4.10, clusterIPs: [10.96.4.10], \
         ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]}",
    );
    let eps =
        |pods: &[&str]| -> Vec<Ep> { pods.iter().map(|p| Ep::ready(ip(p), &node(p))).collect() };
    c.apply(
        &[
            svc.clone(),
            slice("web-1", "web", TCP, &eps(&["web-0", "web-1"])),
        ]
        .concat(),
    );
    let cli = t.pod("cli").unwrap();
    let vip = sa([10, 96, 4, 10], 80);
    let mut session = t.session(cli, vip).unwrap();
    let serving = session
        .greeting()
        .pod()
        .expect("session connected")
        .to_string();
    let other = if serving == "web-0" { "web-1" } else { "web-0" };
    assert!(session.send("before").unwrap().is_replied());

    c.apply(&[svc, slice("web-1", "web", TCP, &eps(&[&serving, "web-2"]))].concat());
    let after = session.send("after re-apply").unwrap();
    assert_eq!(
        after.pod(),
        Some(serving.as_str()),
        "session broken: {after:?}"
    );

    let outs = c.attempts(cli, Proto::Tcp, vip, 20);
    let got = answered(&outs);
    assert_eq!(got, names(&[&serving, "web-2"]), "{outs:?}");
    assert!(!got.contains(other));
    assert!(session.send("still there").unwrap().is_replied());
    session.close().unwrap();
}
