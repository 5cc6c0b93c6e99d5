//! Stale UDP conntrack entries are removed when an endpoint goes away, with real packets.
//!
//! UDP has no connection to tear down: once a flow's first packet has been DNATed to endpoint A,
//! the node's conntrack entry keeps sending every later packet of that flow (same source address
//! and port) to A, whatever the rules say now. So when A leaves the EndpointSlice, `svcnet-proxy
//! run` must delete the flows toward A (over ctnetlink), as upstream does.
//!
//! Each test: a UDP Service whose only endpoint is `web-a`; a client sends from a fixed source port
//! and is answered by `web-a` (the node holds a conntrack entry toward A); the EndpointSlice is
//! replaced so `web-b` is the only endpoint, while `web-a` keeps running and answering. Once the
//! rules are updated (a client on a fresh source port is answered by `web-b`), the client sends
//! again from the same source port: with cleanup it must reach `web-b` and no entry toward A may
//! remain; with `--conntrack-cleanup false` (the control) it still reaches `web-a` through the
//! stale entry, which shows the tests can tell the two outcomes apart.
//!
//! An endpoint removed while svcnet-proxy is down is cleaned at its next start (the start-up
//! reconciliation of the whole UDP table, over ctnetlink).
//!
//! The same runs over IPv6 (`conntrack -f ipv6`): a dual-stack Service where only the IPv6
//! EndpointSlice changes (and the IPv4 flow's entry toward A must survive, the cleanup being per
//! family), and an IPv6-only Service reached on node1's IPv6 address and NodePort.
//!
//! **Every test here needs root** (network namespaces, nftables, conntrack); CI runs as root.
//! The embedded API server listens on the host's loopback and is relayed into the node namespaces.
//! Only node1 runs svcnet-proxy: the client's traffic is NATed there (the other node only routes
//! pod traffic). Needs the binaries built (`cargo build -p svcnet-dataplane -p svcnet-testkit --bins`).

#![allow(clippy::unwrap_used)]

mod common_dataplane;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use apiserver::{ApiServer, ServerConfig};
use common_dataplane::{
    builder, create_nodes, node_kubeconfig_embedded, poll_until, proxy_metric, sa, service, slice,
    start_proxy_run, typed, udp_conntrack, Cluster, Ep,
};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use testkit::netns::{ClientOpts, EchoPorts, Outcome, Place, Proto};

const UDP: &[(&str, u16, &str)] = &[("dns", 8080, "UDP")];
/// The fixed client source port: every send from it belongs to one UDP flow.
const SOURCE_PORT: u16 = 40053;
/// Bound on how long the proxy may take to follow an API change.
const CONVERGE: Duration = Duration::from_secs(8);
const DELETED: &str = "svcnet_proxy_conntrack_deleted_total";

/// How the client reaches the Service.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// A pod on node1 → the ClusterIP.
    ClusterIp,
    /// The outside client → node1's address on the NodePort.
    NodePort,
}

/// The address family of the flow under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: IpAddr) -> Self {
        if ip.is_ipv6() {
            Family::V6
        } else {
            Family::V4
        }
    }

    /// A pod's address in this family.
    fn pod_ip(self, c: &Cluster, pod: &str) -> IpAddr {
        let p = c.topo.pod(pod).unwrap();
        match self {
            Family::V4 => p.ipv4().into(),
            Family::V6 => p.ipv6().into(),
        }
    }

    /// The EndpointSlice of this family (one per family, as the EndpointSlice controller makes).
    fn slice_name(self) -> &'static str {
        match self {
            Family::V4 => "dns-v4",
            Family::V6 => "dns-v6",
        }
    }
}

/// What the scenario saw, for the tests' assertions.
struct Seen {
    /// The fixed-port flow's answer after the rules moved to `web-b` (and cleanup had its chance).
    same_flow_after: Outcome,
    /// Entries toward A for the target after that send.
    toward_a_after: Vec<String>,
    /// The `conntrack_deleted` counter of node1's proxy at the end.
    deleted: Option<f64>,
    /// All entries for the target (for failure messages).
    table: Vec<String>,
    /// Dual-stack only: entries toward A (in the other family) of a fixed-port flow to the other
    /// family's ClusterIP, sent before the change, read at the end; that family's slice never
    /// changed, so the cleanup must leave them.
    other_family_toward_a: Option<Vec<String>>,
}

/// Runs the scenario described in the module docs over `family`; the Service's `clusterIPs` are
/// `cluster_ips` (two = dual-stack, each family with its own EndpointSlice, and only `family`'s
/// slice changes); `extra` are svcnet-proxy flags; after the rules have moved to web-b, the old
/// flow is re-sent until web-b answers or `old_flow_wait` has passed. With `down_during_change`
/// the proxy is killed before the EndpointSlice changes and started again after it: the stale
/// entry must then be found by the start-up reconciliation, which has no "before" to compare.
async fn scenario(
    via: Via,
    family: Family,
    cluster_ips: &[IpAddr],
    node_port: u16,
    extra: &[&str],
    old_flow_wait: Duration,
    down_during_change: bool,
) -> Seen {
    let server = ApiServer::start(ServerConfig::default()).await.unwrap();
    let client = server.client().unwrap();
    let c = tokio::task::block_in_place(|| {
        Cluster::new(
            builder()
                .echo_ports(EchoPorts::new(&[], &[8080]))
                .pod("cli", 1)
                .pod("web-a", 2)
                .pod("web-b", 1),
        )
    });
    let a = family.pod_ip(&c, "web-a");
    let b = family.pod_ip(&c, "web-b");
    let pp = PostParams::default();
    create_nodes(&c, &client).await;
    let ip = *cluster_ips
        .iter()
        .find(|ip| Family::of(**ip) == family)
        .expect("a cluster IP of the family under test");
    let families: Vec<Family> = cluster_ips.iter().map(|ip| Family::of(*ip)).collect();
    let svc: Service = typed(&service(
        "dns",
        &format!(
            "{{type: NodePort, ipFamilyPolicy: {}, ipFamilies: [{}], clusterIP: \"{}\", \
             clusterIPs: [{}], ports: \
             [{{name: dns, port: 53, protocol: UDP, targetPort: 8080, nodePort: {node_port}}}]}}",
            if cluster_ips.len() > 1 {
                "RequireDualStack"
            } else {
                "SingleStack"
            },
            families
                .iter()
                .map(|f| if *f == Family::V6 { "IPv6" } else { "IPv4" })
                .collect::<Vec<_>>()
                .join(", "),
            cluster_ips[0],
            cluster_ips
                .iter()
                .map(|ip| format!("\"{ip}\""))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ));
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&pp, &svc)
        .await
        .unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    for f in &families {
        let ep = Ep::ready(f.pod_ip(&c, "web-a"), "node2");
        slices
            .create(&pp, &typed(&slice(f.slice_name(), "dns", UDP, &[ep])))
            .await
            .unwrap();
    }
    // Dual-stack: the other family's ClusterIP and web-a's address in it.
    let other = cluster_ips
        .iter()
        .find(|ip| Family::of(**ip) != family)
        .map(|ip| (sa(*ip, 53), Family::of(*ip).pod_ip(&c, "web-a")));

    let dir = tempfile::tempdir().unwrap();
    let node1 = c.topo.node(1).unwrap();
    let kubeconfig =
        tokio::task::block_in_place(|| node_kubeconfig_embedded(&c, &server, dir.path()));
    let mut proxy = tokio::task::block_in_place(|| start_proxy_run(&c, node1, &kubeconfig, extra));

    let node1_ip: IpAddr = match family {
        Family::V4 => node1.ipv4().into(),
        Family::V6 => node1.ipv6().into(),
    };
    let target: SocketAddr = match via {
        Via::ClusterIp => sa(ip, 53),
        Via::NodePort => sa(node1_ip, node_port),
    };
    let from: &dyn Fn(&ClientOpts) -> Outcome = &|opts| match via {
        Via::ClusterIp => send(&c, c.topo.pod("cli").unwrap(), target, opts),
        Via::NodePort => send(&c, c.topo.outside().unwrap(), target, opts),
    };
    let same_flow = || from(&ClientOpts::count(1).source_port(SOURCE_PORT));
    let fresh_flow = || from(&ClientOpts::count(1));

    let before = tokio::task::block_in_place(|| {
        let first = poll_until(CONVERGE, same_flow, Outcome::is_replied);
        assert_eq!(
            first.pod(),
            Some("web-a"),
            "{via:?} {target} before: {first:?}"
        );
        // The control for the final check: the entry toward A exists before the change, so its
        // later absence is the cleanup's doing.
        let toward_a = udp_conntrack(&c, 1, target, Some(a));
        assert_eq!(
            toward_a.len(),
            1,
            "{via:?}: one entry toward web-a {a} for {target} before the change: {toward_a:?}\n\
             all: {:?}",
            udp_conntrack(&c, 1, target, None)
        );
        assert!(
            toward_a[0].contains(&format!("sport={SOURCE_PORT}")),
            "{toward_a:?}"
        );
        if let Some((other_target, other_a)) = other {
            // The same source port toward the other family's ClusterIP: a flow pinned to web-a
            // whose slice does not change.
            let o = send(
                &c,
                c.topo.pod("cli").unwrap(),
                other_target,
                &ClientOpts::count(1).source_port(SOURCE_PORT),
            );
            assert_eq!(o.pod(), Some("web-a"), "{other_target}: {o:?}");
            let toward_a = udp_conntrack(&c, 1, other_target, Some(other_a));
            assert_eq!(toward_a.len(), 1, "{other_target}: {toward_a:?}");
        }
        udp_conntrack(&c, 1, target, None)
    });

    if down_during_change {
        // SIGKILL: the rules stay programmed (toward A) and nothing cleans up on the way out.
        proxy.kill().unwrap();
    }
    let name = family.slice_name();
    let mut moved = slices.get(name).await.unwrap();
    moved.endpoints =
        typed::<EndpointSlice>(&slice(name, "dns", UDP, &[Ep::ready(b, "node1")])).endpoints;
    slices.replace(name, &pp, &moved).await.unwrap();
    if down_during_change {
        tokio::task::block_in_place(|| {
            // While the proxy is down the old flow still reaches A (the entry and the old rules).
            let o = same_flow();
            assert_eq!(o.pod(), Some("web-a"), "while the proxy is down: {o:?}");
            proxy = start_proxy_run(&c, node1, &kubeconfig, extra);
        });
    }

    let seen = tokio::task::block_in_place(|| {
        // The rules now send new flows to B (the sync that programs them is the one that
        // cleans up).
        let fresh = poll_until(CONVERGE, fresh_flow, |o| o.pod() == Some("web-b"));
        assert_eq!(
            fresh.pod(),
            Some("web-b"),
            "{via:?} {target}: a new flow after the change: {fresh:?}\nbefore: {before:?}\n{}",
            c.ruleset(1)
        );
        // The old flow: B once its stale entry is gone; A as long as it stays.
        let same_flow_after = poll_until(old_flow_wait, same_flow, |o| o.pod() == Some("web-b"));
        Seen {
            toward_a_after: udp_conntrack(&c, 1, target, Some(a)),
            table: udp_conntrack(&c, 1, target, None),
            deleted: proxy_metric(&c, 1, DELETED),
            other_family_toward_a: other.map(|(t, other_a)| udp_conntrack(&c, 1, t, Some(other_a))),
            same_flow_after,
        }
    });
    drop(proxy);
    drop(c);
    server.shutdown().await;
    seen
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::from([a, b, c, d])
}

fn v6(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One client attempt from `at` (a fresh client process each time).
fn send(c: &Cluster, at: &impl Place, target: SocketAddr, opts: &ClientOpts) -> Outcome {
    c.topo
        .clients(at, Proto::Udp, target, opts)
        .unwrap()
        .pop()
        .unwrap()
}

#[track_caller]
fn assert_cleaned(seen: &Seen, what: &str) {
    assert_eq!(
        seen.same_flow_after.pod(),
        Some("web-b"),
        "{what}: the same UDP flow must reach the new endpoint once the stale entry is deleted: \
         {:?}\nentries: {:#?}",
        seen.same_flow_after,
        seen.table
    );
    assert!(
        seen.toward_a_after.is_empty(),
        "{what}: entries toward the removed endpoint remain: {:#?}",
        seen.toward_a_after
    );
    assert!(
        seen.deleted.is_some_and(|n| n >= 1.0),
        "{what}: {DELETED} = {:?}",
        seen.deleted
    );
}

/// Root only: a pod's UDP flow (fixed source port) to a ClusterIP pinned to web-a moves to web-b
/// once web-a leaves the EndpointSlice, and node1's conntrack table keeps no entry toward web-a.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_clusterip_stale_flow_removed_when_endpoint_goes_away() {
    let seen = scenario(
        Via::ClusterIp,
        Family::V4,
        &[v4(10, 96, 11, 10)],
        30161,
        &[],
        CONVERGE,
        false,
    )
    .await;
    assert_cleaned(&seen, "ClusterIP");
}

/// Root only: the outside client's UDP flow (fixed source port) to node1's NodePort pinned to
/// web-a (on node2, masqueraded) moves to web-b once web-a leaves the EndpointSlice, and node1's
/// conntrack table keeps no entry toward web-a for the NodePort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_nodeport_stale_flow_removed_when_endpoint_goes_away() {
    let seen = scenario(
        Via::NodePort,
        Family::V4,
        &[v4(10, 96, 11, 11)],
        30162,
        &[],
        CONVERGE,
        false,
    )
    .await;
    assert_cleaned(&seen, "NodePort");
}

/// Root only: web-a leaves the EndpointSlice while node1's proxy is down (SIGKILL). At its next
/// start the proxy has no earlier endpoints to compare with; it reconciles the whole UDP table
/// against the current endpoints, so the stale flow toward web-a is deleted and moves to web-b.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_flow_left_while_the_proxy_was_down_is_removed_at_start() {
    let seen = scenario(
        Via::ClusterIp,
        Family::V4,
        &[v4(10, 96, 11, 14)],
        30166,
        &[],
        CONVERGE,
        true,
    )
    .await;
    assert_cleaned(&seen, "after a restart");
}

/// Root only, control: with `--conntrack-cleanup false` the same scenario keeps the stale entry:
/// although new flows reach web-b, the fixed-source-port flow is still answered by the removed
/// endpoint web-a, and its entry toward web-a remains. (So the cleanup tests above fail when
/// the cleanup does not happen.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cleanup_stale_udp_flow_keeps_reaching_removed_endpoint() {
    let seen = scenario(
        Via::ClusterIp,
        Family::V4,
        &[v4(10, 96, 11, 12)],
        30163,
        &["--conntrack-cleanup", "false"],
        // The sync that programmed web-b would have cleaned up right after; give it ample time.
        Duration::from_secs(3),
        false,
    )
    .await;
    assert_eq!(
        seen.same_flow_after.pod(),
        Some("web-a"),
        "without cleanup the stale entry keeps the flow on web-a: {:?}\nentries: {:#?}",
        seen.same_flow_after,
        seen.table
    );
    // Fresh-port probes sent before the rules moved also left entries toward web-a; the one that
    // matters is the fixed-port flow's.
    let stale = format!("sport={SOURCE_PORT} ");
    assert!(
        seen.toward_a_after.iter().any(|l| l.contains(&stale)),
        "the stale entry toward web-a (source port {SOURCE_PORT}) remains: {:#?}",
        seen.table
    );
    assert_eq!(seen.deleted, Some(0.0), "{DELETED}");
}

/// Root only: on a dual-stack UDP Service, a pod's IPv6 flow (fixed source port) to the IPv6
/// ClusterIP pinned to web-a moves to web-b once web-a leaves the IPv6 EndpointSlice, and node1's
/// IPv6 conntrack table keeps no entry toward web-a's IPv6 address; the same pod's IPv4 flow to
/// the IPv4 ClusterIP (whose slice did not change) keeps its entry toward web-a.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_ipv6_clusterip_stale_flow_removed_when_endpoint_goes_away() {
    let seen = scenario(
        Via::ClusterIp,
        Family::V6,
        &[v4(10, 96, 11, 13), v6("fd00:96::1113")],
        30164,
        &[],
        CONVERGE,
        false,
    )
    .await;
    assert_cleaned(&seen, "IPv6 ClusterIP");
    let kept = seen.other_family_toward_a.expect("dual-stack");
    assert_eq!(
        kept.len(),
        1,
        "the IPv4 flow toward web-a (its slice unchanged) must keep its entry: {kept:#?}"
    );
}

/// Root only: the outside client's IPv6 UDP flow (fixed source port) to node1's IPv6 address on
/// the NodePort, pinned to web-a (on node2, masqueraded), moves to web-b once web-a leaves the
/// IPv6 EndpointSlice of an IPv6-only Service, and no IPv6 entry toward web-a remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_ipv6_nodeport_stale_flow_removed_when_endpoint_goes_away() {
    let seen = scenario(
        Via::NodePort,
        Family::V6,
        &[v6("fd00:96::1114")],
        30165,
        &[],
        CONVERGE,
        false,
    )
    .await;
    assert_cleaned(&seen, "IPv6 NodePort");
}
