//! Stale UDP conntrack entries are removed when an endpoint goes away, with real packets.
//!
//! UDP has no connection to tear down: once a flow's first packet has been DNATed to endpoint A,
//! the node's conntrack entry keeps sending every later packet of that flow (same source address
//! and port) to A, whatever the rules say now. So when A leaves the EndpointSlice, `svcnet-proxy
//! run` must delete the flows toward A (`conntrack -D … --reply-src A`), as upstream does.
//!
//! Each test: a UDP Service whose only endpoint is `web-a`; a client sends from a fixed source port
//! and is answered by `web-a` (the node holds a conntrack entry toward A); the EndpointSlice is
//! replaced so `web-b` is the only endpoint, while `web-a` keeps running and answering. Once the
//! rules are updated (a client on a fresh source port is answered by `web-b`), the client sends
//! again from the same source port: with cleanup it must reach `web-b` and no entry toward A may
//! remain; with `--conntrack-cleanup false` (the control) it still reaches `web-a` through the
//! stale entry, which shows the tests can tell the two outcomes apart.
//!
//! **Every test here needs root** (network namespaces, nftables, conntrack); CI runs as root.
//! The embedded API server listens on the host's loopback and is relayed into the node namespaces.
//! Only node1 runs svcnet-proxy: the client's traffic is NATed there (the other node only routes
//! pod traffic). Needs the binaries built (`cargo build -p svcnet-dataplane -p svcnet-e2e --bins`).

#![allow(clippy::unwrap_used)]

mod common_dataplane;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common_dataplane::{
    builder, poll_until, proxy_metric, sa, service, slice, start_proxy_run, typed, udp_conntrack,
    Cluster, Ep,
};
use e2e::apiserver::{kubeconfig_yaml, ApiServer, ServerConfig};
use e2e::netns::{ClientOpts, EchoPorts, Outcome, Place, Proto};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};

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
}

/// Runs the scenario described in the module docs; `extra` are svcnet-proxy flags; after the rules
/// have moved to web-b, the old flow is re-sent until web-b answers or `old_flow_wait` has passed.
async fn scenario(
    via: Via,
    svc_ip: [u8; 4],
    node_port: u16,
    extra: &[&str],
    old_flow_wait: Duration,
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
    let a: IpAddr = c.topo.pod("web-a").unwrap().ipv4().into();
    let b: IpAddr = c.topo.pod("web-b").unwrap().ipv4().into();
    let pp = PostParams::default();
    let nodes: Api<Node> = Api::all(client.clone());
    for n in c.topo.k8s_nodes().unwrap() {
        nodes.create(&pp, &n).await.unwrap();
    }
    let ip = IpAddr::from(svc_ip);
    let svc: Service = typed(&service(
        "dns",
        &format!(
            "{{type: NodePort, clusterIP: {ip}, clusterIPs: [{ip}], ports: \
             [{{name: dns, port: 53, protocol: UDP, targetPort: 8080, nodePort: {node_port}}}]}}"
        ),
    ));
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&pp, &svc)
        .await
        .unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    slices
        .create(
            &pp,
            &typed(&slice("dns-1", "dns", UDP, &[Ep::ready(a, "node2")])),
        )
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("proxy.kubeconfig");
    let api_addr = server.addr();
    let node1 = c.topo.node(1).unwrap();
    let proxy = tokio::task::block_in_place(|| {
        let addr = c.topo.forward_from_host_to_nodes(6443, api_addr).unwrap();
        std::fs::write(&kubeconfig, kubeconfig_yaml(&format!("http://{addr}"))).unwrap();
        start_proxy_run(&c, node1, &kubeconfig, extra)
    });

    let target: SocketAddr = match via {
        Via::ClusterIp => sa(ip, 53),
        Via::NodePort => sa(node1.ipv4(), node_port),
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
        udp_conntrack(&c, 1, target, None)
    });

    let mut moved = slices.get("dns-1").await.unwrap();
    moved.endpoints =
        typed::<EndpointSlice>(&slice("dns-1", "dns", UDP, &[Ep::ready(b, "node1")])).endpoints;
    slices.replace("dns-1", &pp, &moved).await.unwrap();

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
            same_flow_after,
        }
    });
    drop(proxy);
    drop(c);
    server.shutdown().await;
    seen
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
    let seen = scenario(Via::ClusterIp, [10, 96, 11, 10], 30161, &[], CONVERGE).await;
    assert_cleaned(&seen, "ClusterIP");
}

/// Root only: the outside client's UDP flow (fixed source port) to node1's NodePort pinned to
/// web-a (on node2, masqueraded) moves to web-b once web-a leaves the EndpointSlice, and node1's
/// conntrack table keeps no entry toward web-a for the NodePort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_nodeport_stale_flow_removed_when_endpoint_goes_away() {
    let seen = scenario(Via::NodePort, [10, 96, 11, 11], 30162, &[], CONVERGE).await;
    assert_cleaned(&seen, "NodePort");
}

/// Root only, control: with `--conntrack-cleanup false` the same scenario keeps the stale entry:
/// although new flows reach web-b, the fixed-source-port flow is still answered by the removed
/// endpoint web-a, and its entry toward web-a remains. (So the cleanup tests above fail when
/// the cleanup does not happen.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_cleanup_stale_udp_flow_keeps_reaching_removed_endpoint() {
    let seen = scenario(
        Via::ClusterIp,
        [10, 96, 11, 12],
        30163,
        &["--conntrack-cleanup", "false"],
        // The sync that programmed web-b would have cleaned up right after; give it ample time.
        Duration::from_secs(3),
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
