//! End-to-end tests of svcnet's EndpointSlice, Endpoints and mirroring controllers against the
//! harness's API server (embedded by default; a real control plane with `KUBEBUILDER_ASSETS` /
//! `E2E_KUBECONFIG`). The controllers run in-process; "restarting" one aborts its task.
//!
//! Services are headless with `ipFamilies: [IPv4]` so the tests need no ClusterIP allocator
//! and behave the same on every backend. No root needed.

use std::collections::BTreeMap;
use std::time::Duration;

use controllers::endpointslice::build::CONTROLLER_NAME;
use controllers::metrics::ControllerMetrics;
use controllers::mirroring::desired::MIRRORING_CONTROLLER_NAME;
use futures::{stream, FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use testkit::harness::{self, wait_until, TestEnv};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(60);
/// "Any number of slices" in [`wait_counts`]: how Pods that arrive one by one are packed
/// depends on their timing (upstream's packing is incremental, too).
const ANY: usize = usize::MAX;

struct Controllers {
    tasks: Vec<JoinHandle<()>>,
    slice_metrics: ControllerMetrics,
}

impl Drop for Controllers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Pods run on `node-a`; the controller leaves out Pods whose Node it cannot see (as upstream).
async fn ensure_node(client: &Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "zone-a"}},
    }))
    .expect("valid Node");
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating node: {e}"),
    }
}

/// The (name, resourceVersion) of every slice of `svc` in `ns` once they have stopped changing
/// for two seconds (longer than the one-second stale-cache retry): the objects a test waits for
/// can be in place while the controller still works off the last watch events (a real API
/// server delivers them later than the embedded one). A controller that never stops writing
/// fails here. Only this namespace counts: the controllers are cluster-wide, and on a real
/// control plane the namespace controller is still emptying earlier tests' namespaces.
async fn settled(client: &Client, ns: &str, svc: &str) -> Vec<(String, String)> {
    let mut last = slice_versions(client, ns, svc).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = slice_versions(client, ns, svc).await;
        if now == last {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the controller kept writing for {WAIT:?}"
        );
        last = now;
    }
}

/// Steady state: once `svc`'s slices have settled, 1.5 s pass without a write to them. On the
/// embedded server (one per test process, so the controller has nothing else to do) also
/// without any write of the EndpointSlice controller at all, which catches no-op updates an API
/// server would not give a new resourceVersion.
async fn assert_idle(env: &TestEnv, ctl: &Controllers, ns: &str, svc: &str, what: &str) {
    let client = env.client();
    let before = settled(&client, ns, svc).await;
    let writes = ctl.slice_metrics.total_changes();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(slice_versions(&client, ns, svc).await, before, "{what}");
    if env.is_embedded() {
        assert_eq!(ctl.slice_metrics.total_changes(), writes, "{what}");
    }
}

/// Sorted (name, resourceVersion) of our slices of `svc`: any write changes it.
async fn slice_versions(client: &Client, ns: &str, svc: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = our_slices(client, ns, svc)
        .await
        .into_iter()
        .map(|s| {
            (
                s.metadata.name.unwrap_or_default(),
                s.metadata.resource_version.unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

fn start(client: &Client) -> Controllers {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let slice_metrics = ControllerMetrics::unregistered();
    let m = slice_metrics.clone();
    let c1 = client.clone();
    let c2 = client.clone();
    let c3 = client.clone();
    let tasks = vec![
        tokio::spawn(async move {
            // Diagnostics warn after a short grace period (the default is 30 s).
            let cfg = controllers::endpointslice::Config {
                diagnostics_grace: Duration::from_secs(1),
                ..Default::default()
            };
            if let Err(e) = controllers::endpointslice::run(
                &controllers::watches::Watches::new(c1.clone()),
                c1,
                cfg,
                m,
                std::future::pending(),
            )
            .await
            {
                panic!("endpointslice controller: {e}");
            }
        }),
        tokio::spawn(async move {
            let cfg = controllers::endpoints::Config::default();
            if let Err(e) = controllers::endpoints::run(
                &controllers::watches::Watches::new(c2.clone()),
                c2,
                cfg,
                ControllerMetrics::unregistered(),
                std::future::pending(),
            )
            .await
            {
                panic!("endpoints controller: {e}");
            }
        }),
        tokio::spawn(async move {
            let cfg = controllers::mirroring::Config::default();
            if let Err(e) = controllers::mirroring::run(
                &controllers::watches::Watches::new(c3.clone()),
                c3,
                cfg,
                ControllerMetrics::unregistered(),
                std::future::pending(),
            )
            .await
            {
                panic!("mirroring controller: {e}");
            }
        }),
    ];
    Controllers {
        tasks,
        slice_metrics,
    }
}

fn service(name: &str, selector: Option<&[(&str, &str)]>, target: serde_json::Value) -> Service {
    let mut spec = json!({
        "clusterIP": "None",
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "ports": [{"name": "web", "port": 80, "protocol": "TCP", "targetPort": target}],
    });
    if let Some(sel) = selector {
        spec["selector"] = json!(sel
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect::<serde_json::Map<_, _>>());
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": {"team": "e2e"}},
        "spec": spec,
    }))
    .expect("valid Service")
}

async fn our_slices(client: &Client, ns: &str, svc: &str) -> Vec<EndpointSlice> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!(
        "kubernetes.io/service-name={svc},endpointslice.kubernetes.io/managed-by={CONTROLLER_NAME}"
    ));
    api.list(&lp).await.map(|l| l.items).unwrap_or_default()
}

/// (endpoints, ready endpoints, slices) over our slices of `svc`.
async fn slice_counts(client: &Client, ns: &str, svc: &str) -> (usize, usize, usize) {
    let s = our_slices(client, ns, svc).await;
    let eps: Vec<_> = s.iter().flat_map(|s| s.endpoints.iter()).collect();
    let ready = eps
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .count();
    (eps.len(), ready, s.len())
}

async fn endpoints_counts(client: &Client, ns: &str, svc: &str) -> Option<(usize, usize)> {
    let api: Api<Endpoints> = Api::namespaced(client.clone(), ns);
    let e = api.get_opt(svc).await.ok()??;
    let s = e.subsets.unwrap_or_default();
    Some((
        s.iter()
            .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
            .sum(),
        s.iter()
            .map(|s| s.not_ready_addresses.as_ref().map_or(0, Vec::len))
            .sum(),
    ))
}

fn ip(i: usize) -> String {
    format!("10.1.{}.{}", i / 250, i % 250 + 1)
}

async fn create_pods(
    pods: &Api<Pod>,
    range: std::ops::Range<usize>,
    labels: &[(&str, &str)],
    ready: bool,
) {
    stream::iter(range)
        .for_each_concurrent(16, |i| async move {
            let name = format!("web-{i}");
            pods.create(
                &PostParams::default(),
                &harness::pod(&name, "node-a", labels),
            )
            .await
            .expect("create pod");
            harness::set_pod_ready(pods, &name, &ip(i), ready)
                .await
                .expect("pod status");
        })
        .await;
}

async fn wait_counts(client: &Client, ns: &str, svc: &str, want: (usize, usize, usize)) {
    let mut last = (0, 0, 0);
    let res = wait_until(&format!("slices of {svc} reach {want:?}"), WAIT, || {
        let c = client.clone();
        async move {
            let got = slice_counts(&c, ns, svc).await;
            got.0 == want.0 && got.1 == want.1 && (want.2 == ANY || got.2 == want.2)
        }
    })
    .await;
    if res.is_err() {
        last = slice_counts(client, ns, svc).await;
    }
    assert!(res.is_ok(), "slices of {svc}: want {want:?}, last {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_flip_terminate_and_delete() {
    let env = TestEnv::start().await.expect("test env");
    let client = env.client();
    let ns = env.namespace("es-scale").await.expect("namespace");
    ensure_node(&client).await;
    let ctl = start(&client);
    let svcs: Api<Service> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    svcs.create(
        &PostParams::default(),
        &service("web", Some(&[("app", "web")]), json!("http")),
    )
    .await
    .expect("create service");

    // 0 pods: one placeholder slice.
    wait_counts(&client, ns.name(), "web", (0, 0, 1)).await;
    let placeholder = our_slices(&client, ns.name(), "web").await;
    let labels = placeholder[0].metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("team").map(String::as_str),
        Some("e2e"),
        "service labels copied"
    );
    assert_eq!(
        labels
            .get("service.kubernetes.io/headless")
            .map(String::as_str),
        Some("")
    );

    // 0 → 250 ready pods: 100 + 100 + 50.
    create_pods(&pods, 0..250, &[("app", "web")], true).await;
    wait_counts(&client, ns.name(), "web", (250, 250, ANY)).await;
    let sizes: Vec<usize> = our_slices(&client, ns.name(), "web")
        .await
        .iter()
        .map(|s| s.endpoints.len())
        .collect();
    assert!(
        sizes.iter().all(|n| *n <= 100) && sizes.len() >= 3,
        "{sizes:?}"
    );
    let slice = &our_slices(&client, ns.name(), "web").await[0];
    let port = slice
        .ports
        .as_ref()
        .and_then(|p| p.first())
        .and_then(|p| p.port);
    assert_eq!(
        port,
        Some(8080),
        "named targetPort resolved to the container port"
    );
    wait_until("Endpoints has 250 addresses", WAIT, || async {
        endpoints_counts(&client, ns.name(), "web").await == Some((250, 0))
    })
    .await
    .expect("endpoints");

    // Flip readiness of 10 pods.
    for i in 0..10 {
        harness::set_pod_ready(&pods, &format!("web-{i}"), &ip(i), false)
            .await
            .expect("unready");
    }
    wait_counts(&client, ns.name(), "web", (250, 240, ANY)).await;
    wait_until("Endpoints moves 10 to notReady", WAIT, || async {
        endpoints_counts(&client, ns.name(), "web").await == Some((240, 10))
    })
    .await
    .expect("endpoints notReady");

    // Terminate 5 ready pods with a long grace period: terminating, serving, not ready.
    for i in 10..15 {
        harness::terminate_pod(&pods, &format!("web-{i}"), 300)
            .await
            .expect("terminate");
    }
    wait_counts(&client, ns.name(), "web", (250, 235, ANY)).await;
    let terminating: usize = our_slices(&client, ns.name(), "web")
        .await
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            c.terminating == Some(true) && c.serving == Some(true) && c.ready == Some(false)
        })
        .count();
    assert_eq!(terminating, 5);

    // Scale back to 0: every pod deleted at once.
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    stream::iter(0..250)
        .for_each_concurrent(16, |i| {
            let pods = pods.clone();
            let dp = dp.clone();
            async move {
                let _ = pods.delete(&format!("web-{i}"), &dp).await;
            }
        })
        .await;
    wait_counts(&client, ns.name(), "web", (0, 0, 1)).await;
    wait_until("Endpoints emptied", WAIT, || async {
        endpoints_counts(&client, ns.name(), "web").await == Some((0, 0))
    })
    .await
    .expect("endpoints emptied");

    // Idle: once the last events are worked off, no more writes happen.
    assert_idle(&env, &ctl, ns.name(), "web", "steady state makes no writes").await;

    // Deleting the Service removes its slices and its Endpoints.
    svcs.delete("web", &DeleteParams::default())
        .await
        .expect("delete service");
    wait_counts(&client, ns.name(), "web", (0, 0, 0)).await;
    wait_until("Endpoints deleted", WAIT, || async {
        endpoints_counts(&client, ns.name(), "web").await.is_none()
    })
    .await
    .expect("endpoints deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn selector_and_port_changes_with_diagnostics() {
    let env = TestEnv::start().await.expect("test env");
    let client = env.client();
    let ns = env.namespace("es-change").await.expect("namespace");
    ensure_node(&client).await;
    let _ctl = start(&client);
    let svcs: Api<Service> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    create_pods(&pods, 0..3, &[("app", "nginx")], true).await;
    svcs.create(
        &PostParams::default(),
        &service("web", Some(&[("app", "web")]), json!(8080)),
    )
    .await
    .expect("create service");
    wait_counts(&client, ns.name(), "web", (0, 0, 1)).await;

    // The diagnostics Event names the near miss.
    let events: Api<Event> = Api::namespaced(client.clone(), ns.name());
    let want = format!(
        "selector app=web matches no pods in namespace {}; 3 pods carry app=nginx",
        ns.name()
    );
    wait_until("diagnostic event", WAIT, || async {
        events
            .list(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .any(|e| e.message.as_deref() == Some(want.as_str()))
            })
            .unwrap_or(false)
    })
    .await
    .expect("SelectorMatchesNoPods event");

    // Fix the selector.
    let patch = json!({"spec": {"selector": {"app": "nginx"}}});
    svcs.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch selector");
    wait_counts(&client, ns.name(), "web", (3, 3, 1)).await;

    // Change the port: the slice is updated in place (same name).
    let names_before: Vec<_> = our_slices(&client, ns.name(), "web")
        .await
        .into_iter()
        .map(|s| s.metadata.name)
        .collect();
    let patch = json!({"spec": {"ports": [{"name": "web", "port": 80, "protocol": "TCP", "targetPort": 9090}]}});
    svcs.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch ports");
    wait_until("port 9090", WAIT, || async {
        let s = our_slices(&client, ns.name(), "web").await;
        s.len() == 1
            && s[0]
                .ports
                .as_ref()
                .and_then(|p| p.first())
                .and_then(|p| p.port)
                == Some(9090)
    })
    .await
    .expect("port updated");
    let names_after: Vec<_> = our_slices(&client, ns.name(), "web")
        .await
        .into_iter()
        .map(|s| s.metadata.name)
        .collect();
    assert_eq!(names_before, names_after, "updated in place, not recreated");

    // A slice with another managed-by is never touched.
    let foreign: EndpointSlice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-foreign", "labels": {
            "kubernetes.io/service-name": "web",
            "endpointslice.kubernetes.io/managed-by": "someone-else"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.9.9.9"]}],
        "ports": [],
    }))
    .expect("valid slice");
    let es: Api<EndpointSlice> = Api::namespaced(client.clone(), ns.name());
    es.create(&PostParams::default(), &foreign)
        .await
        .expect("foreign slice");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still = es.get("web-foreign").await.expect("foreign slice kept");
    assert_eq!(still.endpoints.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_mid_way_converges_without_duplicates() {
    let env = TestEnv::start().await.expect("test env");
    let client = env.client();
    let ns = env.namespace("es-restart").await.expect("namespace");
    ensure_node(&client).await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    svcs.create(
        &PostParams::default(),
        &service("web", Some(&[("app", "web")]), json!(8080)),
    )
    .await
    .expect("create service");
    let ctl = start(&client);
    create_pods(&pods, 0..120, &[("app", "web")], true).await;
    wait_counts(&client, ns.name(), "web", (120, 120, ANY)).await;
    drop(ctl);

    // While the controller is down: 30 more pods, 20 unready.
    create_pods(&pods, 120..150, &[("app", "web")], true).await;
    for i in 0..20 {
        harness::set_pod_ready(&pods, &format!("web-{i}"), &ip(i), false)
            .await
            .expect("unready");
    }
    let ctl = start(&client);
    wait_counts(&client, ns.name(), "web", (150, 130, ANY)).await;
    assert_idle(&env, &ctl, ns.name(), "web", "converged: no further writes").await;
    // No endpoint appears twice.
    let mut all: Vec<String> = our_slices(&client, ns.name(), "web")
        .await
        .iter()
        .flat_map(|s| s.endpoints.iter().flat_map(|e| e.addresses.clone()))
        .collect();
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!(all.len(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirrors_custom_endpoints_through_create_update_delete() {
    let env = TestEnv::start().await.expect("test env");
    let client = env.client();
    let ns = env.namespace("es-mirror").await.expect("namespace");
    let _ctl = start(&client);
    let svcs: Api<Service> = Api::namespaced(client.clone(), ns.name());
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), ns.name());
    let es: Api<EndpointSlice> = Api::namespaced(client.clone(), ns.name());
    svcs.create(&PostParams::default(), &service("ext", None, json!(80)))
        .await
        .expect("svc");
    let ep: Endpoints = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "ext", "labels": {"team": "e2e"}},
        "subsets": [{"addresses": [{"ip": "10.2.0.1"}], "ports": [{"name": "web", "port": 80, "protocol": "TCP"}]}],
    }))
    .expect("valid Endpoints");
    eps.create(&PostParams::default(), &ep)
        .await
        .expect("endpoints");
    let lp = ListParams::default().labels(&format!(
        "kubernetes.io/service-name=ext,endpointslice.kubernetes.io/managed-by={MIRRORING_CONTROLLER_NAME}"
    ));
    let addrs = |es: Api<EndpointSlice>, lp: ListParams| async move {
        let mut v: Vec<String> = es
            .list(&lp)
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .iter()
            .flat_map(|s| s.endpoints.iter().flat_map(|e| e.addresses.clone()))
            .collect();
        v.sort();
        v
    };
    wait_until("mirrored", WAIT, || {
        addrs(es.clone(), lp.clone()).then(|v| async move { v == vec!["10.2.0.1".to_string()] })
    })
    .await
    .expect("mirrored slice");
    let mirrored = es.list(&lp).await.expect("list").items;
    let l: BTreeMap<String, String> = mirrored[0].metadata.labels.clone().unwrap_or_default();
    assert_eq!(l.get("team").map(String::as_str), Some("e2e"));

    let patch = json!({"subsets": [{"addresses": [{"ip": "10.2.0.1"}, {"ip": "10.2.0.2"}], "ports": [{"name": "web", "port": 80, "protocol": "TCP"}]}]});
    eps.patch("ext", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("update endpoints");
    wait_until("mirror follows update", WAIT, || {
        addrs(es.clone(), lp.clone())
            .then(|v| async move { v == vec!["10.2.0.1".to_string(), "10.2.0.2".to_string()] })
    })
    .await
    .expect("mirror updated");

    eps.delete("ext", &DeleteParams::default())
        .await
        .expect("delete endpoints");
    wait_until("mirror removed", WAIT, || {
        addrs(es.clone(), lp.clone()).then(|v| async move { v.is_empty() })
    })
    .await
    .expect("mirror removed");
}
