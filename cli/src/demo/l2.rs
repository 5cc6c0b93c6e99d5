//! The demo's L2 announcement step: the LoadBalancer address of `web-lb` lies inside the LAN's
//! own prefix, so the outside client has no route for it and finds it with ARP. The step shows
//! which node answered (the client's neighbour entry against the nodes' MACs and the address's
//! Lease), kills that node's svcnet-proxy and shows another node taking the address over.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use testkit::netns::{Outcome, Process, Proto, Topology};

use super::control::NAMESPACE;
use super::report::Report;

async fn holder(leases: &Api<Lease>, ip: IpAddr) -> Option<String> {
    leases
        .get_opt(&crds::l2::address_lease_name(ip))
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

/// The node whose LAN interface (`eth0`) has `mac`.
fn node_with_mac(topo: &Topology, mac: &str) -> Option<String> {
    topo.nodes().iter().find_map(|n| {
        let m = n.netns().run("cat", ["/sys/class/net/eth0/address"]).ok()?;
        (m.trim().eq_ignore_ascii_case(mac)).then(|| n.name().to_string())
    })
}

/// The MAC the outside client's neighbour table holds for `ip`, if resolved.
fn neighbour(topo: &Topology, ip: IpAddr) -> Option<String> {
    let out = topo.outside().ok()?;
    let text = out
        .netns()
        .run(
            "ip",
            ["neigh", "show", "to", &ip.to_string(), "dev", "eth0"],
        )
        .ok()?;
    if text.contains("FAILED") || text.contains("INCOMPLETE") {
        return None;
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "lladdr")
        .map(|w| w[1].to_lowercase())
}

/// One new TCP connection from the outside client; the pod that answered.
fn connect(topo: &Topology, target: SocketAddr) -> Option<String> {
    let out = topo.outside().ok()?;
    match topo.client(out, Proto::Tcp, target) {
        Ok(Outcome::Replied { pod, .. }) => Some(pod),
        _ => None,
    }
}

/// Who answers for `web-lb`'s address now, seen from the outside client: the answering pod and
/// the node whose MAC the client resolved the address to.
fn through(topo: &Topology, target: SocketAddr) -> Option<(String, String)> {
    let pod = connect(topo, target)?;
    let mac = neighbour(topo, target.ip())?;
    Some((pod, node_with_mac(topo, &mac).unwrap_or(mac)))
}

/// Runs the step; `proxies` are the nodes' svcnet-proxy processes in node order.
pub async fn takeover(
    topo: &Topology,
    proxies: &mut [Process],
    client: &Client,
    report: &mut Report,
    wait: Duration,
) {
    const STEP: &str = "L2 announcement of web-lb";
    let Some((ip, port)) = report.service("web-lb").and_then(|s| {
        let ip = s.lb_ips.iter().find_map(|ip| ip.parse::<IpAddr>().ok())?;
        let port = s.ports.first()?.port;
        Some((ip, u16::try_from(port).ok()?))
    }) else {
        report.step(STEP, false, "web-lb has no LoadBalancer IP");
        return;
    };
    let target = SocketAddr::new(ip, port);
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let deadline = Instant::now() + wait;
    let mut first = None;
    while Instant::now() < deadline {
        let h = holder(&leases, ip).await;
        let seen = tokio::task::block_in_place(|| through(topo, target));
        if let (Some(h), Some((pod, node))) = (h, seen) {
            if h == node {
                first = Some((h, pod));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let Some((old, pod)) = first else {
        report.step(
            STEP,
            false,
            format!("the outside client never reached {ip} through the node its Lease names"),
        );
        return;
    };
    report.step(
        STEP,
        true,
        format!(
            "{ip} (in the LAN prefix, no route to any node): the outside client resolved it by \
             ARP to {old}, the holder of Lease {}/{}; a new connection reached pod {pod}",
            NAMESPACE,
            crds::l2::address_lease_name(ip)
        ),
    );

    const TAKEOVER: &str = "L2 take-over after killing the announcing node's svcnet-proxy";
    let index = topo.nodes().iter().position(|n| n.name() == old);
    let Some(proxy) = index.and_then(|i| proxies.get_mut(i)) else {
        report.step(
            TAKEOVER,
            false,
            format!("no svcnet-proxy process for {old}"),
        );
        return;
    };
    let killed = Instant::now();
    if let Err(e) = proxy.kill() {
        report.step(
            TAKEOVER,
            false,
            format!("killing {old}'s svcnet-proxy: {e}"),
        );
        return;
    }
    let deadline = killed + wait;
    let mut lease_moved = None;
    let mut outcome = None;
    while Instant::now() < deadline {
        if lease_moved.is_none() {
            if let Some(h) = holder(&leases, ip).await.filter(|h| *h != old) {
                lease_moved = Some((h, killed.elapsed()));
            }
        }
        if let Some((new, _)) = &lease_moved {
            let seen = tokio::task::block_in_place(|| through(topo, target));
            if let Some((pod, node)) = seen.filter(|(_, node)| node == new) {
                outcome = Some((node, pod, killed.elapsed()));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match (lease_moved, outcome) {
        (Some((_, lease_after)), Some((new, pod, after))) => report.step(
            TAKEOVER,
            true,
            format!(
                "killed {old}'s svcnet-proxy (SIGKILL): the Lease named {new} after {} ms; \
                 the client's neighbour entry followed {new}'s gratuitous ARP and a new \
                 connection through {new} reached pod {pod} {} ms after the kill",
                lease_after.as_millis(),
                after.as_millis()
            ),
        ),
        (moved, _) => report.step(
            TAKEOVER,
            false,
            format!(
                "after killing {old}'s svcnet-proxy: Lease moved: {moved:?}; no connection \
                 through another node within {wait:?}"
            ),
        ),
    }
}
