//! svcnet-proxy's `--detect-local-mode`s with real packets: which traffic counts as coming from
//! this node's pods decides whether ClusterIP traffic is masqueraded, and whether a
//! externalTrafficPolicy Local NodePort short-circuits to every endpoint.
//!
//! The nodes' pods hang off the bridge `cbr0` (ports `vp<N>`) with bridge netfilter on, as
//! kubenet does. What `iifname` the rules see for a pod's packet is the kernel's business, so it
//! is measured here: the IP layer reports the bridge, not the pod's port, so
//! `InterfaceNamePrefix=vp` recognises no pod while `InterfaceNamePrefix=cbr` does.
//!
//! `run` in NodeCIDR mode learns the podCIDRs from its Node object: it syncs nothing before the
//! Node has them, then recognises exactly that range.
//!
//! **Every test here needs root** (network namespaces, nftables); CI runs as root. Needs the
//! `svcnet-proxy` binary built (`cargo build -p svcnet-dataplane -p svcnet-testkit --bins`).

#![allow(clippy::unwrap_used)]

mod common_dataplane;

use std::collections::BTreeSet;
use std::time::Duration;

use common_dataplane::{
    answered, builder, names, node_kubeconfig, poll_until, sa, service, slice, typed, Cluster, Ep,
};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use testkit::harness::TestEnv;
use testkit::netns::{EchoPorts, Proto};

const TCP: &[(&str, u16, &str)] = &[("http", 8080, "TCP")];
const NODE_PORT: u16 = 30077;

/// web-0 and cli on node1, web-1 and cli2 on node2, an outside client via node1.
fn cluster() -> Cluster {
    Cluster::new(
        builder()
            .echo_ports(EchoPorts::new(&[8080], &[]))
            .outside_via(1)
            .pod("web-0", 1)
            .pod("cli", 1)
            .pod("web-1", 2)
            .pod("cli2", 2),
    )
}

/// `web`: ClusterIP 10.96.7.10; `local`: NodePort 30077, externalTrafficPolicy Local; both
/// served by web-0 (node1) and web-1 (node2).
fn services(c: &Cluster) -> String {
    let eps = [
        Ep::ready(c.topo.pod("web-0").unwrap().ipv4(), "node1"),
        Ep::ready(c.topo.pod("web-1").unwrap().ipv4(), "node2"),
    ];
    [
        service(
            "web",
            "{clusterIP: 10.96.7.10, clusterIPs: [10.96.7.10], \
             ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]}",
        ),
        slice("web-1", "web", TCP, &eps),
        service(
            "local",
            &format!(
                "{{type: NodePort, externalTrafficPolicy: Local, clusterIP: 10.96.7.11, \
                 clusterIPs: [10.96.7.11], ports: [{{name: http, port: 80, protocol: TCP, \
                 targetPort: 8080, nodePort: {NODE_PORT}}}]}}"
            ),
        ),
        slice("local-1", "local", TCP, &eps),
    ]
    .concat()
}

/// What one mode decided, observed with packets.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    /// cli (a pod of node1) → ClusterIP arrived masqueraded.
    pod_masqueraded: bool,
    /// The outside client → ClusterIP arrived masqueraded.
    outside_masqueraded: bool,
}

/// Programs every node with `flags` and observes node1's decisions.
fn observe(c: &Cluster, yaml: &str, flags: &[&str]) -> Observed {
    c.apply_with(yaml, flags);
    let vip = sa([10, 96, 7, 10], 80);
    let cli = c.topo.pod("cli").unwrap();
    let outs = c.attempts(cli, Proto::Tcp, vip, 8);
    assert_eq!(answered(&outs), names(&["web-0", "web-1"]), "{flags:?}");
    let pod_masq: BTreeSet<bool> = outs
        .iter()
        .map(|o| o.peer_ip() != Some(cli.ipv4().into()))
        .collect();
    assert_eq!(pod_masq.len(), 1, "{flags:?}: mixed decisions {outs:?}");
    let out = c.topo.outside().unwrap();
    let outs = c.attempts(out, Proto::Tcp, vip, 8);
    assert_eq!(answered(&outs), names(&["web-0", "web-1"]), "{flags:?}");
    let outside_masq = outs.iter().all(|o| o.peer_ip() != Some(out.ipv4().into()));
    Observed {
        pod_masqueraded: pod_masq.contains(&true),
        outside_masqueraded: outside_masq,
    }
}

/// cli2 (a pod of node2) → node1's externalTrafficPolicy Local NodePort, 8 attempts: the pods
/// that answered, and whether every attempt was answered. A pod not local to node1 gets node1's
/// own endpoint only; one counted as local short-circuits to every endpoint, and web-1's reply
/// then comes straight from node2's bridge, which the client does not accept.
fn node2_pod_to_node1_local_nodeport(c: &Cluster) -> (BTreeSet<String>, bool) {
    let node1 = c.topo.node(1).unwrap().ipv4();
    let outs = c.attempts(
        c.topo.pod("cli2").unwrap(),
        Proto::Tcp,
        sa(node1, NODE_PORT),
        8,
    );
    let pods = outs
        .iter()
        .filter_map(|o| o.pod().map(str::to_string))
        .collect();
    (pods, outs.iter().all(|o| o.is_replied()))
}

/// Root only: each mode recognises node1's pods by what it should — the Node's podCIDRs, the
/// bridge, an interface-name prefix — and everything else is masqueraded / not short-circuited.
#[test]
fn detect_local_modes_decide_masquerade_and_the_local_short_circuit() {
    let c = cluster();
    let yaml = services(&c);
    let local = Observed {
        pod_masqueraded: false,
        outside_masqueraded: true,
    };
    let not_local = Observed {
        pod_masqueraded: true,
        outside_masqueraded: true,
    };
    let only_web0 = (names(&["web-0"]), true);

    // ClusterCIDR (the default; the cluster CIDR holds every node's pods): node2's pod counts
    // as local on node1 too, so the NodePort short-circuits to web-1 as well.
    assert_eq!(observe(&c, &yaml, &[]), local);
    let (pods, all_replied) = node2_pod_to_node1_local_nodeport(&c);
    assert!(
        pods.contains("web-1") || !all_replied,
        "ClusterCIDR: node2's pod is local everywhere: {pods:?}"
    );

    // NodeCIDR: node1's podCIDR (10.244.1.0/24) only, whatever --cluster-cidr says.
    assert_eq!(
        observe(&c, &yaml, &["--detect-local-mode=NodeCIDR"]),
        local,
        "NodeCIDR\n{}",
        c.ruleset(1)
    );
    assert!(c.ruleset(1).contains("10.244.1.0/24"), "{}", c.ruleset(1));
    assert_eq!(node2_pod_to_node1_local_nodeport(&c), only_web0, "NodeCIDR");

    // BridgeInterface: arrived on cbr0.
    let bridge = [
        "--detect-local-mode=BridgeInterface",
        "--pod-bridge-interface=cbr0",
    ];
    assert_eq!(observe(&c, &yaml, &bridge), local, "{}", c.ruleset(1));
    assert!(
        c.ruleset(1).contains("iifname != \"cbr0\""),
        "{}",
        c.ruleset(1)
    );
    assert_eq!(
        node2_pod_to_node1_local_nodeport(&c),
        only_web0,
        "BridgeInterface"
    );
    // Another bridge's name: node1's pods are not recognised.
    let other = [
        "--detect-local-mode=BridgeInterface",
        "--pod-bridge-interface=cni0",
    ];
    assert_eq!(observe(&c, &yaml, &other), not_local);

    // InterfaceNamePrefix: the IP layer sees the bridge as the input interface (bridge
    // netfilter hands it the bridge, not the port), so the bridge's prefix matches the pods
    // and their ports' prefix does not.
    let prefix = |p: &str| {
        vec![
            "--detect-local-mode=InterfaceNamePrefix".to_string(),
            format!("--pod-interface-name-prefix={p}"),
        ]
    };
    let cbr = prefix("cbr");
    let cbr: Vec<&str> = cbr.iter().map(String::as_str).collect();
    assert_eq!(observe(&c, &yaml, &cbr), local, "{}", c.ruleset(1));
    assert!(
        c.ruleset(1).contains("iifname != \"cbr*\""),
        "{}",
        c.ruleset(1)
    );
    assert_eq!(
        node2_pod_to_node1_local_nodeport(&c),
        only_web0,
        "InterfaceNamePrefix"
    );
    let vp = prefix("vp");
    let vp: Vec<&str> = vp.iter().map(String::as_str).collect();
    let seen = observe(&c, &yaml, &vp);
    println!(
        "InterfaceNamePrefix=vp (the pods' bridge ports) on a bridge-netfilter node: {seen:?}"
    );
    assert_eq!(
        seen, not_local,
        "the ports' names are not what iifname sees"
    );
}

/// Root only: `svcnet-proxy run --detect-local-mode=NodeCIDR` against the API (embedded, or the
/// control plane of `KUBEBUILDER_ASSETS`): while its Node has no podCIDRs it programs nothing
/// and says it is waiting; once they are set it syncs, node1's pod keeps its source address on
/// a ClusterIP and node2's pod gets only node1's endpoint of an externalTrafficPolicy Local
/// NodePort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_node_cidr_waits_for_and_uses_the_nodes_pod_cidrs() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("detect-local").await.unwrap();
    let ns = ns.name();
    let client = env.client();
    let c = tokio::task::block_in_place(cluster);
    // The Nodes, without their podCIDRs for now (a shared control plane may hold older ones).
    let nodes: Api<Node> = Api::all(client.clone());
    let mut with_cidrs = vec![];
    for n in c.topo.k8s_nodes().unwrap() {
        let name = n.metadata.name.clone().unwrap();
        let _ = nodes.delete(&name, &Default::default()).await;
        poll_gone(&nodes, &name).await;
        let mut bare = n.clone();
        if let Some(spec) = bare.spec.as_mut() {
            spec.pod_cidr = None;
            spec.pod_cidrs = None;
        }
        nodes.create(&PostParams::default(), &bare).await.unwrap();
        with_cidrs.push(n);
    }
    let pp = PostParams::default();
    for doc in services(&c).split("---\n").filter(|d| !d.trim().is_empty()) {
        if doc.contains("kind: Service\n") {
            let mut svc: Service = typed(doc);
            svc.metadata.namespace = None;
            Api::<Service>::namespaced(client.clone(), ns)
                .create(&pp, &svc)
                .await
                .unwrap();
        } else {
            let mut es: EndpointSlice = typed(doc);
            es.metadata.namespace = None;
            Api::<EndpointSlice>::namespaced(client.clone(), ns)
                .create(&pp, &es)
                .await
                .unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = tokio::task::block_in_place(|| node_kubeconfig(&c, &env, dir.path()));
    let kubeconfig = kubeconfig.display().to_string();
    let proxy_bin = testkit::netns::bins::locate("svcnet-proxy").unwrap();
    let node1 = c.topo.node(1).unwrap();
    let mut proxy = c
        .topo
        .spawn(
            node1,
            &proxy_bin,
            [
                "run",
                "--kubeconfig",
                &kubeconfig,
                "--node-name",
                node1.name(),
                "--detect-local-mode=NodeCIDR",
                "--healthz-bind-address",
                "127.0.0.1:10256",
                "--metrics-bind-address",
                "127.0.0.1:10249",
                "--min-sync-period",
                "100ms",
            ],
        )
        .unwrap();
    tokio::task::block_in_place(|| {
        proxy
            .wait_for_output(
                "waiting for the Node's spec.podCIDRs",
                Duration::from_secs(15),
            )
            .unwrap_or_else(|e| panic!("{e}\n{}", proxy.stderr()));
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !proxy.stderr().contains("synced"),
        "no sync before the podCIDRs:\n{}",
        proxy.stderr()
    );
    assert!(!c.ruleset(1).contains("svcnet"), "{}", c.ruleset(1));

    let node1_cidrs = with_cidrs[0].spec.clone().unwrap();
    let patch = serde_json::json!({"spec": {
        "podCIDR": node1_cidrs.pod_cidr, "podCIDRs": node1_cidrs.pod_cidrs,
    }});
    nodes
        .patch(node1.name(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    tokio::task::block_in_place(|| {
        proxy
            .wait_for_output("synced", Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("{e}\n{}", proxy.stderr()));
        let vip = sa([10, 96, 7, 10], 80);
        let cli = c.topo.pod("cli").unwrap();
        let outs = poll_until(
            Duration::from_secs(10),
            || c.attempts(cli, Proto::Tcp, vip, 8),
            |o| o.iter().all(|o| o.is_replied()),
        );
        assert_eq!(answered(&outs), names(&["web-0", "web-1"]));
        for o in &outs {
            assert_eq!(o.peer_ip(), Some(cli.ipv4().into()), "masqueraded: {o:?}");
        }
        assert!(c.ruleset(1).contains("10.244.1.0/24"), "{}", c.ruleset(1));
        assert_eq!(
            node2_pod_to_node1_local_nodeport(&c),
            (names(&["web-0"]), true)
        );
    });
    drop(proxy);
}

/// Waits up to 10 s until Node `name` no longer exists.
async fn poll_gone(nodes: &Api<Node>, name: &str) {
    for _ in 0..100 {
        if nodes.get_opt(name).await.unwrap().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("Node {name} was not deleted");
}
