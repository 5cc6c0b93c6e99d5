//! `svcnet-proxy run` against the test's Kubernetes API (the embedded server, or the real
//! control plane of `KUBEBUILDER_ASSETS`), with real packets: the
//! externalTrafficPolicy Local health-check server on healthCheckNodePort answers by local
//! endpoint count (200 / 503, JSON body) and follows EndpointSlice updates, and NodePort traffic
//! follows the same updates; restarting svcnet-proxy keeps established connections.
//!
//! **Needs root** (network namespaces, nftables); CI runs as root. The API server listens on the
//! host's loopback and is relayed into each node namespace (`forward_from_host_to_nodes`). Needs
//! the `svcnet-proxy` binary built (`cargo build -p svcnet-dataplane -p svcnet-testkit --bins`).

#![allow(clippy::unwrap_used)]

mod common_dataplane;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common_dataplane::{
    answered, builder, create_nodes, names, node_kubeconfig, sa, service, slice, typed, Cluster, Ep,
};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use testkit::harness::TestEnv;
use testkit::netns::{EchoPorts, HttpOutcome, Outcome, Process, Proto, RefuseReason};

const TCP: &[(&str, u16, &str)] = &[("http", 8080, "TCP")];
/// kube-proxy's gauge of externalTrafficPolicy Local Services without a local endpoint.
const NO_LOCAL: &str = r#"kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv4",traffic_policy="external"}"#;

fn start_proxies(c: &Cluster, kubeconfig: &std::path::Path) -> Vec<Process> {
    c.topo
        .nodes()
        .iter()
        .map(|n| start_proxy(c, n, kubeconfig))
        .collect()
}

/// Starts `svcnet-proxy run` in `node` and waits for its first sync.
fn start_proxy(c: &Cluster, node: &testkit::netns::Node, kubeconfig: &std::path::Path) -> Process {
    common_dataplane::start_proxy_run(c, node, kubeconfig, &[])
}

/// A manifest as an API object for the test's namespace (the one the request names).
fn api_object<K: serde::de::DeserializeOwned + kube::Resource>(manifest: &str) -> K {
    let mut o: K = typed(manifest);
    o.meta_mut().namespace = None;
    o
}

/// Polls `probe` every 100 ms for up to 10 s; returns the last value.
fn eventually<T: std::fmt::Debug>(mut probe: impl FnMut() -> T, ok: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = probe();
        if ok(&v) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Creates the cluster's Nodes, an externalTrafficPolicy Local LoadBalancer Service `name` (one TCP
/// port 80 → 8080 on `node_port`, health check on `hc_port`, ClusterIP `cip`) and its EndpointSlice
/// `<name>-1` with `eps`, through the API.
#[allow(clippy::too_many_arguments)]
async fn create_local_lb(
    c: &Cluster,
    client: &kube::Client,
    ns: &str,
    name: &str,
    cip: &str,
    hc_port: u16,
    node_port: u16,
    eps: &[Ep],
) {
    let pp = PostParams::default();
    create_nodes(c, client).await;
    let svc: Service = api_object(&service(
            name,
            &format!(
                "{{type: LoadBalancer, externalTrafficPolicy: Local, healthCheckNodePort: {hc_port}, \
                 clusterIP: {cip}, clusterIPs: [{cip}], \
                 ports: [{{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: {node_port}}}]}}"
            ),
        ));
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&pp, &svc)
        .await
        .unwrap();
    let slice: EndpointSlice = api_object(&slice(&format!("{name}-1"), name, TCP, eps));
    Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .create(&pp, &slice)
        .await
        .unwrap();
}

/// Root only: health-check node port of an externalTrafficPolicy Local Service served by `run`:
/// node1 (one local ready endpoint) answers 200 with `localEndpoints: 1`, node2 (none) answers
/// 503 with `localEndpoints: 0`; after an endpoint on node2 is added to the EndpointSlice, node2
/// answers 200 and its NodePort serves node2's endpoint to outside clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_health_check_node_port_and_follows_endpoint_updates() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("run-hc").await.unwrap();
    let ns = ns.name();
    let client = env.client();
    let c = tokio::task::block_in_place(|| {
        Cluster::new(
            builder()
                .echo_ports(EchoPorts::new(&[8080], &[]))
                .pod("web-0", 1)
                .pod("web-1", 2),
        )
    });
    let (w0, w1) = (
        c.topo.pod("web-0").unwrap().ipv4(),
        c.topo.pod("web-1").unwrap().ipv4(),
    );
    create_local_lb(
        &c,
        &client,
        ns,
        "local",
        "10.96.9.10",
        32020,
        30120,
        &[Ep::ready(w0, "node1")],
    )
    .await;
    let pp = PostParams::default();
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);

    let dir = tempfile::tempdir().unwrap();
    let _proxies = tokio::task::block_in_place(|| {
        let kubeconfig = node_kubeconfig(&c, &env, dir.path());
        start_proxies(&c, &kubeconfig)
    });

    let hc = |node: u8| -> SocketAddr { sa(c.topo.node(node).unwrap().ipv4(), 32020) };
    let get = |node: u8| -> HttpOutcome {
        c.topo
            .http_get(c.topo.outside().unwrap(), hc(node), "/")
            .unwrap()
    };
    tokio::task::block_in_place(|| {
        let r1 = eventually(|| get(1), |r| r.status() == Some(200));
        assert_eq!(r1.status(), Some(200), "node1: {r1:?}");
        let body = r1.json().expect("JSON body");
        assert_eq!(body["localEndpoints"], 1, "{body}");
        assert_eq!(body["service"]["name"], "local", "{body}");
        assert_eq!(body["service"]["namespace"], ns, "{body}");
        let resp = r1.response().unwrap();
        assert_eq!(
            resp.header("content-type"),
            Some("application/json"),
            "{resp:?}"
        );
        assert_eq!(
            resp.header("x-content-type-options"),
            Some("nosniff"),
            "{resp:?}"
        );
        let node1 = c.topo.node(1).unwrap();
        let hz = c
            .topo
            .http_get(node1, sa([127, 0, 0, 1], 10256), "/healthz")
            .unwrap();
        assert_eq!(hz.status(), Some(200), "proxy /healthz: {hz:?}");
        let hz = hz.json().expect("JSON /healthz body");
        assert_eq!(hz["nodeEligible"], true, "{hz}");
        assert!(
            hz.get("lastUpdated").is_some() && hz.get("currentTime").is_some(),
            "{hz}"
        );
        let r2 = get(2);
        assert_eq!(r2.status(), Some(503), "node2: {r2:?}");
        assert_eq!(r2.json().expect("JSON body")["localEndpoints"], 0);
        // kube-proxy's metric names, for dashboards written for kube-proxy. The no-local-endpoints
        // gauge counts every namespace (on a shared control plane, earlier tests' Services too):
        // node2 counts this test's Local Service among them, until it gets an endpoint below.
        let metric = |node: u8, name: &str| common_dataplane::proxy_metric(&c, node, name);
        assert!(
            metric(2, NO_LOCAL).is_some_and(|n| n >= 1.0),
            "{:?}",
            metric(2, NO_LOCAL)
        );
        let last = metric(
            1,
            r#"kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"}"#,
        );
        assert!(
            last.is_some_and(|t| t > 1.0e9),
            "last sync timestamp {last:?}"
        );
        let full = metric(
            1,
            r#"kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family="IPv6"}"#,
        );
        assert!(full.is_some_and(|n| n >= 1.0), "full syncs {full:?}");
        assert!(metric(1, r#"kubeproxy_proxy_healthz_total{code="200"}"#).is_some_and(|n| n >= 1.0));
    });
    let endpoint_changes = |node: u8| {
        common_dataplane::proxy_metric(
            &c,
            node,
            "kubeproxy_sync_proxy_rules_endpoint_changes_total",
        )
        .unwrap_or(0.0)
    };
    let (changes_before, no_local_before) = tokio::task::block_in_place(|| {
        (
            endpoint_changes(2),
            common_dataplane::proxy_metric(&c, 2, NO_LOCAL).unwrap_or(0.0),
        )
    });

    let mut two = slices.get("local-1").await.unwrap();
    two.endpoints = typed::<EndpointSlice>(&slice(
        "local-1",
        "local",
        TCP,
        &[Ep::ready(w0, "node1"), Ep::ready(w1, "node2")],
    ))
    .endpoints;
    two.metadata.resource_version = None;
    slices.replace("local-1", &pp, &two).await.unwrap();

    tokio::task::block_in_place(|| {
        let r2 = eventually(|| get(2), |r| r.status() == Some(200));
        assert_eq!(r2.status(), Some(200), "node2 after update: {r2:?}");
        assert_eq!(r2.json().expect("JSON body")["localEndpoints"], 1);
        let out = c.topo.outside().unwrap();
        let np = sa(c.topo.node(2).unwrap().ipv4(), 30120);
        let outs = eventually(
            || c.attempts(out, Proto::Tcp, np, 6),
            |o| o.iter().all(|x| x.is_replied()),
        );
        assert_eq!(answered(&outs), names(&["web-1"]), "{outs:?}");
        // The slice update is one endpoint change, and node2's Local Service now has one.
        assert!(
            endpoint_changes(2) > changes_before,
            "endpoint changes counted"
        );
        assert_eq!(
            common_dataplane::proxy_metric(&c, 2, NO_LOCAL),
            Some(no_local_before - 1.0),
            "node2's Local Service has a local endpoint now"
        );
    });
    drop(c);
}

/// Root only: restarting `svcnet-proxy run` (SIGTERM, then a new process) keeps an established
/// TCP connection through a ClusterIP alive, and new connections work after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_run_keeps_established_connections() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("run-restart").await.unwrap();
    let ns = ns.name();
    let client = env.client();
    let c = tokio::task::block_in_place(|| {
        Cluster::new(
            builder()
                .echo_ports(EchoPorts::new(&[8080], &[]))
                .pod("web-0", 1)
                .pod("cli", 1)
                .pod("web-1", 2),
        )
    });
    let pp = PostParams::default();
    create_nodes(&c, &client).await;
    let svc: Service = api_object(&service(
        "web",
        "{clusterIP: 10.96.9.20, clusterIPs: [10.96.9.20], \
             ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]}",
    ));
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&pp, &svc)
        .await
        .unwrap();
    let eps = [
        Ep::ready(c.topo.pod("web-0").unwrap().ipv4(), "node1"),
        Ep::ready(c.topo.pod("web-1").unwrap().ipv4(), "node2"),
    ];
    let s: EndpointSlice = api_object(&slice("web-1", "web", TCP, &eps));
    Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .create(&pp, &s)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    tokio::task::block_in_place(|| {
        let kubeconfig = node_kubeconfig(&c, &env, dir.path());
        let mut proxies = start_proxies(&c, &kubeconfig);
        let cli = c.topo.pod("cli").unwrap();
        let vip = sa([10, 96, 9, 20], 80);
        let mut session = eventually(
            || c.topo.session(cli, vip).unwrap(),
            |s| s.greeting().is_replied(),
        );
        let pod = session.greeting().pod().expect("connected").to_string();
        proxies[0].terminate(Duration::from_secs(5)).unwrap();
        let mid = session.send("proxy stopped").unwrap();
        assert_eq!(mid.pod(), Some(pod.as_str()), "while stopped: {mid:?}");
        // The programmed rules outlive the process (like kube-proxy): new connections still work.
        let fresh = c.attempts(cli, Proto::Tcp, vip, 4);
        assert!(
            fresh.iter().all(|o| o.is_replied()),
            "while stopped: {fresh:?}"
        );
        let restarted = start_proxy(&c, c.topo.node(1).unwrap(), &kubeconfig);
        let after = session.send("proxy restarted").unwrap();
        assert_eq!(after.pod(), Some(pod.as_str()), "after restart: {after:?}");
        let outs = c.attempts(cli, Proto::Tcp, vip, 16);
        assert_eq!(answered(&outs), names(&["web-0", "web-1"]), "{outs:?}");
        session.close().unwrap();
        drop(restarted);
    });
    drop(c);
}

/// Root only: the health-check node port counts local *ready* endpoints only: a node whose only
/// local endpoint is serving-terminating answers 503 with `localEndpoints: 0`, while its NodePort
/// (externalTrafficPolicy Local) still forwards outside traffic to that terminating endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_counts_ready_endpoints_only() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("run-ready").await.unwrap();
    let ns = ns.name();
    let client = env.client();
    let c = tokio::task::block_in_place(|| {
        Cluster::new(
            builder()
                .echo_ports(EchoPorts::new(&[8080], &[]))
                .pod("web-0", 1),
        )
    });
    let pp = PostParams::default();
    create_nodes(&c, &client).await;
    let svc: Service = api_object(&service(
        "term",
        "{type: LoadBalancer, externalTrafficPolicy: Local, healthCheckNodePort: 32021, \
             clusterIP: 10.96.9.30, clusterIPs: [10.96.9.30], \
             ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30121}]}",
    ));
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&pp, &svc)
        .await
        .unwrap();
    let w0 = c.topo.pod("web-0").unwrap().ipv4();
    let s: EndpointSlice = api_object(&slice(
        "term-1",
        "term",
        TCP,
        &[Ep::serving_terminating(w0, "node1")],
    ));
    Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .create(&pp, &s)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    tokio::task::block_in_place(|| {
        let kubeconfig = node_kubeconfig(&c, &env, dir.path());
        let _proxies = start_proxies(&c, &kubeconfig);
        let out = c.topo.outside().unwrap();
        let node1 = c.topo.node(1).unwrap().ipv4();
        let r = eventually(
            || c.topo.http_get(out, sa(node1, 32021), "/").unwrap(),
            |r| r.status().is_some(),
        );
        assert_eq!(r.status(), Some(503), "{r:?}");
        assert_eq!(r.json().expect("JSON body")["localEndpoints"], 0);
        let outs = c.attempts(out, Proto::Tcp, sa(node1, 30121), 4);
        assert_eq!(answered(&outs), names(&["web-0"]), "{outs:?}");
        for o in &outs {
            assert_eq!(o.peer_ip(), Some(out.ipv4().into()), "{o:?}");
        }
    });
    drop(c);
}

/// Root only: live (partial) syncs of `run` follow API changes with real packets: emptying the
/// EndpointSlice turns the ClusterIP into a reject, deleting the Service makes its IP an
/// unallocated (dropped) one, and re-creating it serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_follows_endpoint_removal_and_service_deletion() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("run-removal").await.unwrap();
    let ns = ns.name();
    let client = env.client();
    let c = tokio::task::block_in_place(|| {
        Cluster::new(
            builder()
                .echo_ports(EchoPorts::new(&[8080], &[]))
                .pod("web-0", 1)
                .pod("cli", 2),
        )
    });
    let pp = PostParams::default();
    create_nodes(&c, &client).await;
    let svc: Service = api_object(&service(
        "web",
        "{clusterIP: 10.96.9.40, clusterIPs: [10.96.9.40], \
             ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]}",
    ));
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    services.create(&pp, &svc).await.unwrap();
    let w0 = c.topo.pod("web-0").unwrap().ipv4();
    let full: EndpointSlice = api_object(&slice("web-1", "web", TCP, &[Ep::ready(w0, "node1")]));
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    slices.create(&pp, &full).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxies = tokio::task::block_in_place(|| {
        let kubeconfig = node_kubeconfig(&c, &env, dir.path());
        start_proxies(&c, &kubeconfig)
    });
    let cli = c.topo.pod("cli").unwrap();
    let vip = sa([10, 96, 9, 40], 80);
    let probe = || c.short(cli, Proto::Tcp, vip);
    let first = tokio::task::block_in_place(|| eventually(probe, |o| o.is_replied()));
    assert_eq!(first.pod(), Some("web-0"), "{first:?}");

    let mut empty = slices.get("web-1").await.unwrap();
    empty.endpoints = Vec::new();
    slices.replace("web-1", &pp, &empty).await.unwrap();
    let out = tokio::task::block_in_place(|| eventually(probe, |o| !o.is_replied()));
    assert!(
        matches!(
            out,
            Outcome::Refused {
                reason: RefuseReason::ConnectionRefused
            }
        ),
        "no endpoints: {out:?}"
    );

    slices.delete("web-1", &Default::default()).await.unwrap();
    services.delete("web", &Default::default()).await.unwrap();
    let out = tokio::task::block_in_place(|| eventually(probe, |o| o.is_timeout()));
    assert!(
        out.is_timeout(),
        "deleted Service: expected a drop, got {out:?}"
    );

    services.create(&pp, &svc).await.unwrap();
    slices.create(&pp, &full).await.unwrap();
    let back = tokio::task::block_in_place(|| eventually(probe, |o| o.is_replied()));
    assert_eq!(back.pod(), Some("web-0"), "re-created: {back:?}");
    drop(proxies);
    drop(c);
}

/// Root only: when a healthCheckNodePort is already taken on a node, svcnet-proxy records upstream's
/// `FailedToStartServiceHealthcheck` Event (events.k8s.io/v1) on the Service, naming the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_port_in_use_is_reported_as_an_event() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("run-busy").await.unwrap();
    let ns = ns.name();
    let client = env.client();
    let c = tokio::task::block_in_place(|| {
        Cluster::new(
            builder()
                .echo_ports(EchoPorts::new(&[8080], &[]))
                .pod("web-0", 1),
        )
    });
    let w0 = c.topo.pod("web-0").unwrap().ipv4();
    // Something else already listens on the port in node1 (both families).
    let node1 = c.topo.node(1).unwrap();
    let mut squatter = c
        .topo
        .spawn(
            node1,
            "python3",
            [
                "-c",
                "import socket,time\n\
                 s=socket.socket(socket.AF_INET6)\n\
                 s.bind(('::',32031))\n\
                 s.listen()\n\
                 print('listening',flush=True)\n\
                 time.sleep(120)",
            ],
        )
        .unwrap();
    tokio::task::block_in_place(|| {
        squatter
            .wait_for_output("listening", Duration::from_secs(10))
            .unwrap()
    });
    create_local_lb(
        &c,
        &client,
        ns,
        "busy",
        "10.96.9.31",
        32031,
        30131,
        &[Ep::ready(w0, "node1")],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let _proxy = tokio::task::block_in_place(|| {
        let kubeconfig = node_kubeconfig(&c, &env, dir.path());
        start_proxy(&c, node1, &kubeconfig)
    });

    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(10);
    let found = loop {
        let list = events.list(&Default::default()).await.unwrap();
        let hit = list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("FailedToStartServiceHealthcheck")
                && e.involved_object.name.as_deref() == Some("busy")
        });
        if hit.is_some() || Instant::now() > deadline {
            break hit;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ev = found.expect("a FailedToStartServiceHealthcheck Event on Service busy");
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_eq!(ev.action.as_deref(), Some("Listen"));
    let note = ev.message.unwrap_or_default();
    assert!(
        note.starts_with(&format!(
            "node node1 failed to start healthcheck \"{ns}/busy\" on port 32031"
        )),
        "{note}"
    );
    drop(squatter);
}
