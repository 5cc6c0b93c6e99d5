//! API conformance: every verb, selector form and error code svcnet relies on.
//!
//! Written against the harness only, so it runs unchanged on the embedded server (default),
//! on etcd + kube-apiserver (`KUBEBUILDER_ASSETS`) and on a cluster (`E2E_KUBECONFIG`). Where
//! the servers legitimately differ (who allocates ClusterIPs, whether a
//! garbage collector runs) the test asserts the contract and says so.
//! No root needed.
//!
//! One file (one test binary) on purpose: a real kube-apiserver takes 10–15 s to start and the
//! harness starts one per test binary, so the suite stays in one binary.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    Preconditions, WatchEvent, WatchParams,
};
use kube::core::GroupVersionKind;
use kube::{Api, Client};
use serde_json::json;
use testkit::harness::{self, TestEnv};

const T: Duration = Duration::from_secs(20);

fn api_err(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()},
        "data": {"k": "v"},
    }))
    .unwrap()
}

fn svc(name: &str, ports: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": ports},
    }))
    .unwrap()
}

/// Raw request returning (HTTP code, JSON body).
async fn raw(client: &Client, req: http::Request<Vec<u8>>) -> (u16, serde_json::Value) {
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .expect("transport");
    let code = resp.status().as_u16();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    (
        code,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn create_get_and_metadata() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("conf-create").await.unwrap();
    let svcs: Api<Service> = Api::namespaced(env.client(), ns.name());
    let mut s = svc("", json!([{"port": 80}]));
    s.metadata.generate_name = Some("gen-".into());
    let created = svcs.create(&PostParams::default(), &s).await.unwrap();
    let name = created.metadata.name.clone().unwrap();
    assert!(
        name.starts_with("gen-") && name.len() == 9,
        "generateName gives 5 random chars: {name}"
    );
    assert!(created
        .metadata
        .uid
        .as_deref()
        .is_some_and(|u| u.len() == 36));
    assert!(created.metadata.creation_timestamp.is_some());
    // Services carry no metadata.generation: their registry strategy never sets one.
    assert_eq!(created.metadata.generation, None);
    let rv: u64 = created
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv > 0);
    // Defaults as kube-apiserver applies them.
    let spec = created.spec.clone().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Cluster"));
    let port = &spec.ports.unwrap()[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(80))
    );

    let got = svcs.get(&name).await.unwrap();
    assert_eq!(got.metadata.uid, created.metadata.uid);

    // 409 AlreadyExists with details.
    let mut dup = svc(&name, json!([{"port": 80}]));
    dup.metadata.name = Some(name.clone());
    let e = api_err(svcs.create(&PostParams::default(), &dup).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));
    let d = e.details.unwrap();
    assert_eq!(
        (d.name.as_str(), d.kind.as_str()),
        (name.as_str(), "services")
    );

    // 404 NotFound with details.
    let e = api_err(svcs.get("missing").await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    assert_eq!(e.details.unwrap().name, "missing");

    // A Pod starts Pending (kube-apiserver's PrepareForCreate).
    let pods: Api<Pod> = Api::namespaced(env.client(), ns.name());
    let p = pods
        .create(&PostParams::default(), &harness::pod("p", "node-a", &[]))
        .await
        .unwrap();
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Pending"));
    let e = api_err(
        Api::<ConfigMap>::namespaced(env.client(), "no-such-namespace")
            .create(&PostParams::default(), &cm("x", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404, "creating into a missing namespace: {e:?}");
}

#[tokio::test]
async fn update_conflicts_generation_and_noop() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("conf-update").await.unwrap();
    let svcs: Api<Service> = Api::namespaced(env.client(), ns.name());
    let created = svcs
        .create(&PostParams::default(), &svc("web", json!([{"port": 80}])))
        .await
        .unwrap();

    // Label change: new resourceVersion, still no generation.
    let mut s = created.clone();
    s.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
    let s2 = svcs
        .replace("web", &PostParams::default(), &s)
        .await
        .unwrap();
    assert_ne!(
        s2.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(s2.metadata.generation, None);

    // Stale resourceVersion → 409 Conflict.
    let e = api_err(
        svcs.replace("web", &PostParams::default(), &s)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.contains("the object has been modified"),
        "{}",
        e.message
    );

    // Spec change bumps generation.
    let mut s3 = s2.clone();
    s3.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 81;
    let s3 = svcs
        .replace("web", &PostParams::default(), &s3)
        .await
        .unwrap();
    assert_eq!(
        s3.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
        81
    );
    assert_eq!(
        s3.metadata.generation, None,
        "a Service spec change sets none either"
    );

    // A no-op update keeps the resourceVersion.
    let s4 = svcs
        .replace("web", &PostParams::default(), &s3)
        .await
        .unwrap();
    assert_eq!(s4.metadata.resource_version, s3.metadata.resource_version);

    // Name mismatch → 400.
    let mut wrong = s4.clone();
    wrong.metadata.name = Some("other".into());
    let e = api_err(
        svcs.replace("web", &PostParams::default(), &wrong)
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));

    // A Pod's spec is immutable apart from a few fields (upstream ValidatePodUpdate).
    let pods: Api<Pod> = Api::namespaced(env.client(), ns.name());
    pods.create(&PostParams::default(), &harness::pod("imm", "node-a", &[]))
        .await
        .unwrap();
    let change_node = json!({"spec": {"nodeName": "node-b"}});
    let e = api_err(
        pods.patch("imm", &PatchParams::default(), &Patch::Merge(&change_node))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    let image = json!({"spec": {"containers": [{"name": "app", "image": "registry.invalid/svcnet/test:2"}]}});
    pods.patch("imm", &PatchParams::default(), &Patch::Strategic(&image))
        .await
        .unwrap();

    // Update of a missing Pod → 404.
    let mut p = harness::pod("ghost", "n", &[]);
    p.metadata.resource_version = Some("1".into());
    let e = api_err(
        pods.replace("ghost", &PostParams::default(), &p)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);
}

/// `metadata.generation` per kind: EndpointSlices count changes to anything but metadata, and
/// label changes too (a slice relabelled to another Service is a new generation for consumers);
/// Pods count spec changes.
#[tokio::test]
async fn generation_rules_per_kind() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("conf-generation").await.unwrap();
    let slices: Api<EndpointSlice> = Api::namespaced(env.client(), ns.name());
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "s", "labels": {"kubernetes.io/service-name": "a"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.1.0.1"]}],
        "ports": [{"port": 80, "protocol": "TCP"}],
    }))
    .unwrap();
    let s = slices.create(&PostParams::default(), &slice).await.unwrap();
    assert_eq!(s.metadata.generation, Some(1));
    let gen_after = |patch: serde_json::Value| {
        let slices = slices.clone();
        async move {
            slices
                .patch("s", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap()
                .metadata
                .generation
        }
    };
    assert_eq!(
        gen_after(json!({"metadata": {"annotations": {"x": "y"}}})).await,
        Some(1),
        "an annotation is metadata only"
    );
    assert_eq!(
        gen_after(json!({"endpoints": [{"addresses": ["10.1.0.2"]}]})).await,
        Some(2)
    );
    assert_eq!(
        gen_after(json!({"metadata": {"labels": {"kubernetes.io/service-name": "b"}}})).await,
        Some(3)
    );

    // Pods have carried a generation (1 on create, bumped by spec changes) since Kubernetes
    // 1.33; older servers leave it unset.
    if env.server_at_least(33).await {
        let pods: Api<Pod> = Api::namespaced(env.client(), ns.name());
        let p = pods
            .create(&PostParams::default(), &harness::pod("p", "node-a", &[]))
            .await
            .unwrap();
        assert_eq!(p.metadata.generation, Some(1));
        let label = json!({"metadata": {"labels": {"x": "y"}}});
        let p = pods
            .patch("p", &PatchParams::default(), &Patch::Merge(&label))
            .await
            .unwrap();
        assert_eq!(p.metadata.generation, Some(1));
        let image = json!({"spec": {"containers": [{"name": "app", "image": "registry.invalid/svcnet/test:2"}]}});
        let p = pods
            .patch("p", &PatchParams::default(), &Patch::Strategic(&image))
            .await
            .unwrap();
        assert_eq!(p.metadata.generation, Some(2));
    }
}

#[tokio::test]
async fn status_subresource_isolation() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("conf-status").await.unwrap();
    let pods: Api<Pod> = Api::namespaced(env.client(), ns.name());
    pods.create(
        &PostParams::default(),
        &harness::pod("p", "node-a", &[("app", "x")]),
    )
    .await
    .unwrap();

    // A Pod status write changes status and metadata such as labels, never spec or owners
    // (kube-apiserver's Pod status strategy resets only those).
    let cms: Api<ConfigMap> = Api::namespaced(env.client(), ns.name());
    let owner = cms
        .create(&PostParams::default(), &cm("owner", &[]))
        .await
        .unwrap();
    let patch = json!({
        "metadata": {
            "labels": {"app": "changed"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}],
        },
        "spec": {"nodeName": "node-b"},
        "status": {"phase": "Running", "podIP": "10.1.0.1"},
    });
    let p = pods
        .patch_status("p", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(p.metadata.labels.as_ref().unwrap()["app"], "changed");
    assert_eq!(
        p.metadata.owner_references, None,
        "owners are kept as stored"
    );
    assert_eq!(
        p.spec.as_ref().unwrap().node_name.as_deref(),
        Some("node-a"),
        "spec is kept as stored"
    );

    // Main-resource write: status is ignored.
    let patch = json!({"metadata": {"labels": {"app": "y"}}, "status": {"phase": "Failed"}});
    let p = pods
        .patch("p", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(p.metadata.labels.as_ref().unwrap()["app"], "y");
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Running"));

    // Harness helpers go through /status too.
    let p = harness::set_pod_ready(&pods, "p", "10.1.0.1", true)
        .await
        .unwrap();
    assert!(harness::pod_is_ready(&p));
    let p = harness::set_pod_ready(&pods, "p", "10.1.0.1", false)
        .await
        .unwrap();
    assert!(!harness::pod_is_ready(&p));

    // Service status via PUT.
    let svcs: Api<Service> = Api::namespaced(env.client(), ns.name());
    let mut s = svcs
        .create(&PostParams::default(), &svc("lb", json!([{"port": 80}])))
        .await
        .unwrap();
    s.status = Some(
        serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}))
            .unwrap(),
    );
    s.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
    s.metadata.labels = Some([("via".to_string(), "status".to_string())].into());
    let s = svcs
        .replace_status("lb", &PostParams::default(), &s)
        .await
        .unwrap();
    assert_eq!(
        s.metadata.labels.as_ref().unwrap()["via"],
        "status",
        "the Service status strategy resets spec only"
    );
    assert_eq!(
        s.spec.as_ref().unwrap().session_affinity.as_deref(),
        Some("None"),
        "status writes never change spec"
    );
    assert_eq!(
        s.status.unwrap().load_balancer.unwrap().ingress.unwrap()[0]
            .ip
            .as_deref(),
        Some("192.0.2.10")
    );
}

#[tokio::test]
async fn patch_types() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("conf-patch").await.unwrap();
    let svcs: Api<Service> = Api::namespaced(env.client(), ns.name());
    svcs.create(
        &PostParams::default(),
        &svc("dns", json!([{"name": "tcp", "port": 53, "protocol": "TCP"}, {"name": "udp", "port": 53, "protocol": "UDP"}, {"name": "metrics", "port": 9153}])),
    )
    .await
    .unwrap();

    // Strategic merge: ports merge by their patchMergeKey (`port`): the 9153 port is patched,
    // the others are left alone.
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let smp = json!({"spec": {"ports": [{"port": 9153, "targetPort": 9154}]}});
    let s = svcs
        .patch("dns", &PatchParams::default(), &Patch::Strategic(&smp))
        .await
        .unwrap();
    let ports = s.spec.unwrap().ports.unwrap();
    assert_eq!(ports.len(), 3);
    assert_eq!(ports[2].target_port, Some(IntOrString::Int(9154)));
    assert_eq!(ports[0].target_port, Some(IntOrString::Int(53)));
    assert_eq!(ports[1].target_port, Some(IntOrString::Int(53)));
    // `port` alone is the key, so a patch naming UDP/53 merges into the first port 53 (TCP),
    // which turns it into a second UDP/53: 422 Duplicate value.
    let smp = json!({"spec": {"ports": [{"port": 53, "protocol": "UDP", "targetPort": 5353}]}});
    let e = api_err(
        svcs.patch("dns", &PatchParams::default(), &Patch::Strategic(&smp))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"), "{e:?}");
    assert!(e.message.contains("Duplicate value"), "{}", e.message);

    // Merge patch replaces lists and deletes keys with null.
    let mp = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
    svcs.patch("dns", &PatchParams::default(), &Patch::Merge(&mp))
        .await
        .unwrap();
    let mp = json!({"metadata": {"labels": {"a": null}}});
    let s = svcs
        .patch("dns", &PatchParams::default(), &Patch::Merge(&mp))
        .await
        .unwrap();
    assert_eq!(
        s.metadata.labels.unwrap(),
        [("b".to_string(), "2".to_string())].into()
    );

    // JSON patch, including a failing test op (422).
    let jp: json_patch::Patch = serde_json::from_value(
        json!([{"op": "add", "path": "/metadata/annotations", "value": {"x": "y"}}]),
    )
    .unwrap();
    let s = svcs
        .patch("dns", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .unwrap();
    assert_eq!(s.metadata.annotations.unwrap()["x"], "y");
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/metadata/name", "value": "nope"}]))
            .unwrap();
    let e = api_err(
        svcs.patch("dns", &PatchParams::default(), &Patch::<()>::Json(jp))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422, "{e:?}");

    // A patch with a stale resourceVersion precondition → 409.
    let mp = json!({"metadata": {"resourceVersion": "1", "labels": {"c": "3"}}});
    let e = api_err(
        svcs.patch("dns", &PatchParams::default(), &Patch::Merge(&mp))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);

    // Unknown patch content type → 415.
    let req = http::Request::patch(format!("/api/v1/namespaces/{}/services/dns", ns.name()))
        .header("content-type", "application/x-unknown-patch")
        .body(b"{}".to_vec())
        .unwrap();
    let (code, body) = raw(&env.client(), req).await;
    assert_eq!(code, 415);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "UnsupportedMediaType");

    // Server-side apply of values the object already has: no conflict, the applier owns them
    // (apiserver_apply covers apply in depth).
    let apply = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dns"}, "spec": {"ports": [{"port": 53, "name": "tcp"}]}});
    let applied = svcs
        .patch(
            "dns",
            &PatchParams::apply("conformance"),
            &Patch::Apply(&apply),
        )
        .await
        .unwrap();
    assert!(applied
        .metadata
        .managed_fields
        .unwrap_or_default()
        .iter()
        .any(|e| e.manager.as_deref() == Some("conformance")
            && e.operation.as_deref() == Some("Apply")));
}

#[tokio::test]
async fn label_and_field_selectors() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("conf-select").await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(env.client(), ns.name());
    for (name, labels) in [
        ("a", vec![("app", "web"), ("tier", "fe")]),
        ("b", vec![("app", "web"), ("tier", "be")]),
        ("c", vec![("app", "db")]),
        ("d", vec![]),
    ] {
        cms.create(&PostParams::default(), &cm(name, &labels))
            .await
            .unwrap();
    }
    let names = |sel: &'static str| {
        let cms = cms.clone();
        async move {
            let mut n: Vec<String> = cms
                .list(&ListParams::default().labels(sel))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|c| c.metadata.name.unwrap())
                .collect();
            n.sort();
            n
        }
    };
    assert_eq!(names("app=web").await, ["a", "b"]);
    assert_eq!(names("app==web").await, ["a", "b"]);
    assert_eq!(names("app!=web").await, ["c", "d"]);
    assert_eq!(names("tier in (fe,xx)").await, ["a"]);
    assert_eq!(names("tier notin (fe)").await, ["b", "c", "d"]);
    assert_eq!(names("tier").await, ["a", "b"]);
    assert_eq!(names("!tier").await, ["c", "d"]);
    assert_eq!(names("app=web,tier=be").await, ["b"]);
    let e = api_err(
        cms.list(&ListParams::default().labels("app in web"))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
    // A filtered watch sees the same selection.
    let mut w = cms
        .watch(
            &WatchParams::default().labels("tier notin (fe)").timeout(5),
            "0",
        )
        .await
        .unwrap()
        .boxed();
    let mut watched = Vec::new();
    while watched.len() < 3 {
        match tokio::time::timeout(T, w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(c) => watched.push(c.metadata.name.unwrap()),
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    watched.sort();
    assert_eq!(watched, ["b", "c", "d"]);

    let fnames = |sel: &'static str| {
        let cms = cms.clone();
        async move {
            let mut n: Vec<String> = cms
                .list(&ListParams::default().fields(sel))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|c| c.metadata.name.unwrap())
                .collect();
            n.sort();
            n
        }
    };
    assert_eq!(fnames("metadata.name=c").await, ["c"]);
    assert_eq!(fnames("metadata.name!=c").await, ["a", "b", "d"]);
    let nsname = ns.name().to_string();
    let all: Api<ConfigMap> = Api::all(env.client());
    let in_ns = all
        .list(&ListParams::default().fields(&format!("metadata.namespace={nsname}")))
        .await
        .unwrap();
    assert_eq!(in_ns.items.len(), 4);

    // Pod-specific fields.
    let pods: Api<Pod> = Api::namespaced(env.client(), ns.name());
    pods.create(&PostParams::default(), &harness::pod("p1", "node-a", &[]))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &harness::pod("p2", "node-b", &[]))
        .await
        .unwrap();
    harness::set_pod_ready(&pods, "p2", "10.0.0.2", true)
        .await
        .unwrap();
    let on_a = pods
        .list(&ListParams::default().fields("spec.nodeName=node-a"))
        .await
        .unwrap();
    assert_eq!(on_a.items.len(), 1);
    let running = pods
        .list(&ListParams::default().fields("status.phase=Running"))
        .await
        .unwrap();
    assert_eq!(running.items[0].metadata.name.as_deref(), Some("p2"));
    let e = api_err(
        pods.list(&ListParams::default().fields("spec.bogus=1"))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 400);

    // deletecollection honours the selector.
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("app=web"),
    )
    .await
    .unwrap();
    harness::wait_until("web configmaps to be gone", T, || async {
        cms.list(&ListParams::default().labels("app=web"))
            .await
            .map(|l| l.items.is_empty())
            .unwrap_or(false)
    })
    .await
    .unwrap();
    assert_eq!(names("").await, ["c", "d"]);
}

#[tokio::test]
async fn pagination_is_consistent() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("conf-page").await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(env.client(), ns.name());
    for i in 0..7 {
        cms.create(
            &PostParams::default(),
            &cm(&format!("cm-{i}"), &[("page", "yes")]),
        )
        .await
        .unwrap();
    }
    let lp = ListParams::default().labels("page=yes").limit(3);
    let first = cms.list(&lp).await.unwrap();
    assert_eq!(first.items.len(), 3);
    let token = first.metadata.continue_.clone().expect("more pages");
    // Changes after the first page are not visible in later pages (snapshot at its RV).
    cms.delete("cm-5", &DeleteParams::default()).await.unwrap();
    cms.create(&PostParams::default(), &cm("cm-9", &[("page", "yes")]))
        .await
        .unwrap();
    let mut names: Vec<String> = first
        .items
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    let mut cont = Some(token);
    while let Some(c) = cont {
        let page = cms.list(&lp.clone().continue_token(&c)).await.unwrap();
        assert_eq!(
            page.metadata.resource_version,
            first.metadata.resource_version
        );
        names.extend(page.items.iter().map(|c| c.metadata.name.clone().unwrap()));
        cont = page.metadata.continue_.filter(|c| !c.is_empty());
    }
    assert_eq!(names, (0..7).map(|i| format!("cm-{i}")).collect::<Vec<_>>());

    // A list at a resourceVersion the server has not reached → 504 Timeout. (With a client
    // that does not retry: kube-rs retries 504s by default.)
    let ahead = first
        .metadata
        .resource_version
        .as_deref()
        .unwrap()
        .parse::<u64>()
        .unwrap()
        + 1_000_000;
    let req = http::Request::get(format!(
        "/api/v1/namespaces/{}/configmaps?resourceVersion={ahead}&resourceVersionMatch=NotOlderThan",
        ns.name()
    ))
    .body(Vec::new())
    .unwrap();
    let kc = kube::config::Kubeconfig::read_from(env.kubeconfig_path()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    config.default_retry = false;
    let no_retry = Client::try_from(config).unwrap();
    let (code, body) = raw(&no_retry, req).await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (504, Some("Timeout")),
        "{body}"
    );
    // An exact list at an older revision is served from history (a consistent snapshot).
    let exact = cms
        .list(
            &ListParams::default()
                .labels("page=yes")
                .at(first.metadata.resource_version.as_deref().unwrap())
                .matching(kube::api::VersionMatch::Exact),
        )
        .await
        .unwrap();
    assert_eq!(
        exact.items.len(),
        7,
        "cm-5 still exists and cm-9 does not at that revision"
    );

    // An expired continue token → 410 Expired once the history behind it is compacted.
    let first = cms.list(&ListParams::default().limit(2)).await.unwrap();
    cms.create(&PostParams::default(), &cm("cm-10", &[]))
        .await
        .unwrap();
    if env.compact_history().await.unwrap() {
        let e = api_err(
            cms.list(
                &ListParams::default()
                    .limit(2)
                    .continue_token(first.metadata.continue_.as_deref().unwrap()),
            )
            .await
            .unwrap_err(),
        );
        assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
    }
}

#[tokio::test]
async fn watch_semantics() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("conf-watch").await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(env.client(), ns.name());
    let c0 = cms
        .create(&PostParams::default(), &cm("w0", &[("sel", "in")]))
        .await
        .unwrap();
    let start = c0.metadata.resource_version.clone().unwrap();

    let all = cms
        .watch(&WatchParams::default().timeout(10), &start)
        .await
        .unwrap()
        .boxed();
    let selected = cms
        .watch(&WatchParams::default().labels("sel=in").timeout(10), &start)
        .await
        .unwrap()
        .boxed();
    cms.create(&PostParams::default(), &cm("w1", &[("sel", "in")]))
        .await
        .unwrap();
    cms.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    cms.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"sel": "out"}}})),
    )
    .await
    .unwrap();
    cms.delete("w1", &DeleteParams::default()).await.unwrap();

    let kinds = |s: futures::stream::BoxStream<'static, kube::Result<WatchEvent<ConfigMap>>>,
                 n: usize| async move {
        let evs: Vec<WatchEvent<ConfigMap>> = tokio::time::timeout(
            T,
            s.try_filter(|e| futures::future::ready(!matches!(e, WatchEvent::Bookmark(_))))
                .take(n)
                .try_collect(),
        )
        .await
        .unwrap()
        .unwrap();
        let mut last_rv = 0u64;
        evs.iter()
            .map(|e| {
                let (k, o) = match e {
                    WatchEvent::Added(o) => ("ADDED", o),
                    WatchEvent::Modified(o) => ("MODIFIED", o),
                    WatchEvent::Deleted(o) => ("DELETED", o),
                    other => panic!("unexpected {other:?}"),
                };
                let rv: u64 = o
                    .metadata
                    .resource_version
                    .clone()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(rv > last_rv, "resourceVersions increase");
                last_rv = rv;
                k
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        kinds(all, 4).await,
        ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]
    );
    // Leaving the selector is a DELETED for a filtered watch.
    assert_eq!(kinds(selected, 3).await, ["ADDED", "MODIFIED", "DELETED"]);

    // Bookmarks: a watch that asks for them gets one 2 s before it times out, carrying a
    // resourceVersion at least as new as the last event it was sent. One that does not ask
    // gets none.
    for bookmarks in [true, false] {
        let rv_now = cms
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        let params = WatchParams::default().timeout(5);
        let params = if bookmarks {
            params
        } else {
            params.disable_bookmarks()
        };
        let mut s = cms.watch(&params, &rv_now).await.unwrap().boxed();
        let name = format!("zz-bookmark-{bookmarks}");
        let added: u64 = cms
            .create(&PostParams::default(), &cm(&name, &[]))
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap()
            .parse()
            .unwrap();
        let mut seen = Vec::new();
        while let Ok(Some(ev)) = tokio::time::timeout(T, s.next()).await {
            match ev.unwrap() {
                WatchEvent::Added(o) => seen.push(format!("ADDED {}", o.metadata.name.unwrap())),
                WatchEvent::Bookmark(b) => {
                    let rv: u64 = b.metadata.resource_version.parse().unwrap();
                    assert!(
                        rv >= added,
                        "bookmark {rv} is older than the event at {added}"
                    );
                    seen.push("BOOKMARK".into());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // kube-apiserver may repeat the pre-timeout bookmark; what counts is that one came.
        seen.dedup();
        let mut want = vec![format!("ADDED {name}")];
        if bookmarks {
            want.push("BOOKMARK".into());
        }
        assert_eq!(seen, want, "allowWatchBookmarks={bookmarks}");
    }

    // A resourceVersion older than the retained history → ERROR event with 410 Expired. Leases
    // are watched here: the harness's control plane serves them without a watch cache, so the
    // compaction reaches their watches there as on the embedded server.
    let leases: Api<Lease> = Api::namespaced(env.client(), ns.name());
    let lease = |name: &str| -> Lease {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "spec": {"holderIdentity": "conformance"}}),
        )
        .unwrap()
    };
    let old = leases
        .create(&PostParams::default(), &lease("l0"))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    leases
        .create(&PostParams::default(), &lease("l1"))
        .await
        .unwrap();
    if env.compact_history().await.unwrap() {
        let mut s = leases
            .watch(&WatchParams::default().timeout(10), &old)
            .await
            .unwrap()
            .boxed();
        match tokio::time::timeout(T, s.next()).await.unwrap() {
            Some(Ok(WatchEvent::Error(e))) => {
                assert_eq!((e.code, e.reason.as_str()), (410, "Expired"))
            }
            Some(Err(kube::Error::Api(e))) => assert_eq!(e.code, 410),
            other => panic!("expected 410, got {other:?}"),
        }
    }

    // Watching from "0" starts with the current state as ADDED events.
    let mut s = cms
        .watch(&WatchParams::default().timeout(5), "0")
        .await
        .unwrap()
        .boxed();
    // The order of those initial events is unspecified (kube-apiserver's watch cache is a map).
    let mut names = Vec::new();
    while names.len() < 3 {
        match tokio::time::timeout(T, s.next()).await.unwrap() {
            Some(Ok(WatchEvent::Added(o))) => names.push(o.metadata.name.unwrap()),
            Some(Ok(WatchEvent::Bookmark(_))) => {}
            other => panic!("expected ADDED events for the current state, got {other:?}"),
        }
    }
    names.sort();
    assert_eq!(names, ["w0", "zz-bookmark-false", "zz-bookmark-true"]);
}

#[tokio::test]
async fn delete_preconditions_finalizers_and_grace() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("conf-delete").await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(env.client(), ns.name());
    let c = cms
        .create(&PostParams::default(), &cm("pre", &[]))
        .await
        .unwrap();
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("00000000-0000-0000-0000-000000000000".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let e = api_err(cms.delete("pre", &dp).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: None,
            resource_version: Some("1".into()),
        }),
        ..Default::default()
    };
    assert_eq!(api_err(cms.delete("pre", &dp).await.unwrap_err()).code, 409);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: c.metadata.uid.clone(),
            resource_version: c.metadata.resource_version.clone(),
        }),
        ..Default::default()
    };
    cms.delete("pre", &dp).await.unwrap();
    assert!(cms.get_opt("pre").await.unwrap().is_none());
    assert_eq!(
        api_err(
            cms.delete("pre", &DeleteParams::default())
                .await
                .unwrap_err()
        )
        .code,
        404
    );

    // Finalizers hold the object; removing the last one completes the deletion.
    let mut f = cm("fin", &[]);
    f.metadata.finalizers = Some(vec!["svcnet.io/test".into()]);
    cms.create(&PostParams::default(), &f).await.unwrap();
    cms.delete("fin", &DeleteParams::default()).await.unwrap();
    let held = cms.get("fin").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    // No new finalizers while deleting.
    let add = json!({"metadata": {"finalizers": ["svcnet.io/test", "svcnet.io/other"]}});
    assert_eq!(
        api_err(
            cms.patch("fin", &PatchParams::default(), &Patch::Merge(&add))
                .await
                .unwrap_err()
        )
        .code,
        422
    );
    let rm = json!({"metadata": {"finalizers": null}});
    cms.patch("fin", &PatchParams::default(), &Patch::Merge(&rm))
        .await
        .unwrap();
    harness::wait_for(&cms, "fin", T, |o: Option<&ConfigMap>| o.is_none())
        .await
        .unwrap();

    // Graceful Pod deletion: stays with deletionTimestamp until a delete with grace 0.
    let pods: Api<Pod> = Api::namespaced(env.client(), ns.name());
    pods.create(&PostParams::default(), &harness::pod("g", "node-a", &[]))
        .await
        .unwrap();
    harness::terminate_pod(&pods, "g", 60).await.unwrap();
    let p = pods.get("g").await.unwrap();
    assert!(p.metadata.deletion_timestamp.is_some());
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(60));
    pods.delete(
        "g",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    harness::wait_for(&pods, "g", T, |o: Option<&Pod>| o.is_none())
        .await
        .unwrap();
    // An unscheduled Pod is deleted at once.
    let mut u = harness::pod("u", "", &[]);
    u.spec.as_mut().unwrap().node_name = None;
    pods.create(&PostParams::default(), &u).await.unwrap();
    pods.delete("u", &DeleteParams::default()).await.unwrap();
    assert!(pods.get_opt("u").await.unwrap().is_none());
    // The embedded server removes a Pod once its grace period elapses (standing in for the kubelet).
    if env.is_embedded() {
        pods.create(
            &PostParams::default(),
            &harness::pod("short", "node-a", &[]),
        )
        .await
        .unwrap();
        harness::terminate_pod(&pods, "short", 1).await.unwrap();
        assert!(
            pods.get_opt("short").await.unwrap().is_some(),
            "kept during its grace period"
        );
        harness::wait_for(&pods, "short", T, |o: Option<&Pod>| o.is_none())
            .await
            .unwrap();
    }
}

fn owned_by(name: &str, owner: &ConfigMap) -> ConfigMap {
    let mut c = cm(name, &[]);
    c.metadata.owner_references = Some(vec![serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "name": owner.metadata.name, "uid": owner.metadata.uid, "blockOwnerDeletion": true,
    }))
    .unwrap()]);
    c
}

#[tokio::test]
async fn propagation_and_garbage_collection() {
    let env = TestEnv::start().await.unwrap();
    if !env.has_controllers() {
        eprintln!("skipping: this backend runs no garbage collector");
        return;
    }
    let ns = env.namespace("conf-gc").await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(env.client(), ns.name());
    let gone = |n: &'static str| {
        let cms = cms.clone();
        async move {
            harness::wait_for(&cms, n, Duration::from_secs(60), |o: Option<&ConfigMap>| {
                o.is_none()
            })
            .await
            .unwrap()
        }
    };

    // Background: owner goes at once, dependent is collected.
    let o = cms
        .create(&PostParams::default(), &cm("bg-owner", &[]))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &owned_by("bg-dep", &o))
        .await
        .unwrap();
    cms.delete("bg-owner", &DeleteParams::background())
        .await
        .unwrap();
    gone("bg-dep").await;

    // Foreground: owner waits (deletionTimestamp + foregroundDeletion) until dependents are gone.
    let o = cms
        .create(&PostParams::default(), &cm("fg-owner", &[]))
        .await
        .unwrap();
    let mut dep = owned_by("fg-dep", &o);
    dep.metadata.finalizers = Some(vec!["svcnet.io/hold".into()]);
    cms.create(&PostParams::default(), &dep).await.unwrap();
    cms.delete("fg-owner", &DeleteParams::foreground())
        .await
        .unwrap();
    let owner = cms.get("fg-owner").await.unwrap();
    assert!(owner.metadata.deletion_timestamp.is_some());
    assert!(owner
        .metadata
        .finalizers
        .unwrap()
        .contains(&"foregroundDeletion".to_string()));
    harness::wait_for(&cms, "fg-dep", T, |o: Option<&ConfigMap>| {
        o.is_some_and(|c| c.metadata.deletion_timestamp.is_some())
    })
    .await
    .unwrap();
    cms.patch(
        "fg-dep",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    gone("fg-dep").await;
    gone("fg-owner").await;

    // Orphan: dependent stays, its ownerReference is removed.
    let o = cms
        .create(&PostParams::default(), &cm("or-owner", &[]))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &owned_by("or-dep", &o))
        .await
        .unwrap();
    cms.delete("or-owner", &DeleteParams::orphan())
        .await
        .unwrap();
    gone("or-owner").await;
    let d = cms.get("or-dep").await.unwrap();
    assert!(d.metadata.owner_references.unwrap_or_default().is_empty());

    // Namespace deletion removes its contents, then the namespace. A finalizer on one object
    // keeps the namespace Terminating until it is removed.
    let mut hold = cm("hold", &[]);
    hold.metadata.finalizers = Some(vec!["svcnet.io/hold".into()]);
    cms.create(&PostParams::default(), &hold).await.unwrap();
    let nss: Api<Namespace> = Api::all(env.client());
    let name = ns.name().to_string();
    nss.delete(&name, &DeleteParams::default()).await.unwrap();
    let n = nss.get(&name).await.unwrap();
    assert_eq!(n.status.unwrap().phase.as_deref(), Some("Terminating"));
    let e = api_err(
        cms.create(&PostParams::default(), &cm("late", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 403, "no new content in a terminating namespace");
    gone("or-dep").await;
    harness::wait_for(
        &cms,
        "hold",
        Duration::from_secs(60),
        |o: Option<&ConfigMap>| o.is_some_and(|c| c.metadata.deletion_timestamp.is_some()),
    )
    .await
    .unwrap();
    assert!(
        nss.get_opt(&name).await.unwrap().is_some(),
        "held by the finalizer"
    );
    cms.patch(
        "hold",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    harness::wait_for(
        &nss,
        &name,
        Duration::from_secs(90),
        |o: Option<&Namespace>| o.is_none(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn error_bodies_and_validation() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("conf-errors").await.unwrap();
    let svcs: Api<Service> = Api::namespaced(env.client(), ns.name());

    // 422 Invalid with causes.
    let bad = svc(
        "bad",
        json!([{"name": "a", "port": 0}, {"name": "a", "port": 70000, "protocol": "FOO"}]),
    );
    let e = api_err(svcs.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    let d = e.details.unwrap();
    assert_eq!((d.name.as_str(), d.kind.as_str()), ("bad", "Service"));
    let fields: Vec<&str> = d.causes.iter().map(|c| c.field.as_str()).collect();
    for f in [
        "spec.ports[0].port",
        "spec.ports[1].port",
        "spec.ports[1].protocol",
        "spec.ports[1].name",
    ] {
        assert!(fields.contains(&f), "missing cause {f} in {fields:?}");
    }
    let e = api_err(
        svcs.create(&PostParams::default(), &svc("noports", json!([])))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    let dup = svc(
        "dup",
        json!([{"name": "a", "port": 80}, {"name": "b", "port": 80}]),
    );
    assert_eq!(
        api_err(svcs.create(&PostParams::default(), &dup).await.unwrap_err()).code,
        422
    );
    let en: Service = serde_json::from_value(
        json!({"metadata": {"name": "en"}, "spec": {"type": "ExternalName"}}),
    )
    .unwrap();
    assert_eq!(
        api_err(svcs.create(&PostParams::default(), &en).await.unwrap_err()).code,
        422
    );
    let np = svc("np", json!([{"port": 80, "nodePort": 30080}]));
    assert_eq!(
        api_err(svcs.create(&PostParams::default(), &np).await.unwrap_err()).code,
        422,
        "nodePort needs type NodePort"
    );
    let bad_name = svc("Bad_Name", json!([{"port": 80}]));
    assert_eq!(
        api_err(
            svcs.create(&PostParams::default(), &bad_name)
                .await
                .unwrap_err()
        )
        .code,
        422
    );

    // Events with an eventTime need a reporter, an action and a reason; old-style ones do not.
    let events: Api<Event> = Api::namespaced(env.client(), ns.name());
    let event = |instance: &str, with_time: bool| -> Event {
        let mut v = json!({
            "metadata": {"generateName": "web."},
            "involvedObject": {"kind": "Service", "name": "web", "namespace": ns.name()},
            "reason": "Test",
            "message": "m",
            "type": "Normal",
            "reportingComponent": "svcnet-test",
            "reportingInstance": instance,
            "action": "Test",
        });
        if with_time {
            v["eventTime"] = json!("2026-01-01T00:00:00.000000Z");
        }
        serde_json::from_value(v).unwrap()
    };
    let e = api_err(
        events
            .create(&PostParams::default(), &event("", true))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422, "{e:?}");
    let fields: Vec<String> = e
        .details
        .unwrap()
        .causes
        .into_iter()
        .map(|c| c.field)
        .collect();
    assert_eq!(fields, vec!["reportingInstance".to_string()]);
    events
        .create(&PostParams::default(), &event("node-a", true))
        .await
        .expect("complete new-style event");
    events
        .create(&PostParams::default(), &event("", false))
        .await
        .expect("old-style event needs no reporting instance");

    // clusterIP is immutable once set. The embedded server leaves it empty for the IPAM
    // controller to fill (we play that role here); a real apiserver allocated it at create.
    let created = svcs
        .create(&PostParams::default(), &svc("ip", json!([{"port": 80}])))
        .await
        .unwrap();
    let mut s = created.clone();
    if env.is_embedded() {
        assert_eq!(
            created.spec.as_ref().unwrap().cluster_ip,
            None,
            "the embedded server never allocates"
        );
        s.spec.as_mut().unwrap().cluster_ip = Some("10.96.0.10".into());
        s = svcs
            .replace("ip", &PostParams::default(), &s)
            .await
            .unwrap();
        assert_eq!(
            s.spec.as_ref().unwrap().cluster_ips,
            Some(vec!["10.96.0.10".to_string()])
        );
    }
    let ip = s.spec.as_ref().unwrap().cluster_ip.clone().unwrap();
    let other = if ip.ends_with(".10") {
        ip.replace(".10", ".11")
    } else {
        format!("{}.10", ip.rsplit_once('.').unwrap().0)
    };
    s.spec.as_mut().unwrap().cluster_ip = Some(other);
    s.spec.as_mut().unwrap().cluster_ips = None;
    let e = api_err(
        svcs.replace("ip", &PostParams::default(), &s)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422, "{e:?}");
    // Omitting clusterIP on update keeps it.
    let mut s = svcs.get("ip").await.unwrap();
    s.spec.as_mut().unwrap().cluster_ip = None;
    s.spec.as_mut().unwrap().cluster_ips = None;
    let s = svcs
        .replace("ip", &PostParams::default(), &s)
        .await
        .unwrap();
    assert_eq!(s.spec.unwrap().cluster_ip.as_deref(), Some(ip.as_str()));

    // 405: POST to a named object.
    let req = http::Request::post(format!("/api/v1/namespaces/{}/services/ip", ns.name()))
        .header("content-type", "application/json")
        .body(b"{}".to_vec())
        .unwrap();
    let (code, body) = raw(&env.client(), req).await;
    assert_eq!(code, 405);
    assert_eq!(
        (
            body["kind"].as_str(),
            body["status"].as_str(),
            body["reason"].as_str()
        ),
        (Some("Status"), Some("Failure"), Some("MethodNotAllowed"))
    );

    // 404 for an unknown resource.
    let (code, body) = raw(
        &env.client(),
        http::Request::get("/api/v1/nonexistents")
            .body(Vec::new())
            .unwrap(),
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(body["reason"], "NotFound");

    // 400 on a bad body.
    let req = http::Request::post(format!("/api/v1/namespaces/{}/configmaps", ns.name()))
        .header("content-type", "application/json")
        .body(b"{not json".to_vec())
        .unwrap();
    let (code, body) = raw(&env.client(), req).await;
    assert_eq!(code, 400);
    assert_eq!(body["reason"], "BadRequest");
}

#[tokio::test]
async fn custom_resources_and_discovery() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("conf-crd").await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(env.client());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "widgets.conformance.svcnet.io"},
        "spec": {
            "group": "conformance.svcnet.io",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            }],
        },
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    harness::wait_for(
        &crds,
        "widgets.conformance.svcnet.io",
        T,
        |c: Option<&CustomResourceDefinition>| {
            c.and_then(|c| c.status.as_ref())
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        },
    )
    .await
    .unwrap();
    let gvk = GroupVersionKind::gvk("conformance.svcnet.io", "v1", "Widget");
    // Discovery sees the new kind (kube-rs discovery, as controllers use it).
    let ar = harness_discover(&env.client(), &gvk).await;
    let widgets: Api<DynamicObject> = Api::namespaced_with(env.client(), ns.name(), &ar);
    let w =
        DynamicObject::new("w1", &ar).data(json!({"spec": {"size": 1}, "status": {"ready": true}}));
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert!(
        created.data.get("status").is_none(),
        "status is dropped on create when the subresource exists"
    );
    let patched = widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}, "spec": {"size": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["ready"], true);
    assert_eq!(patched.data["spec"]["size"], 1);
    let listed = widgets.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    // Strategic merge patch is not available for custom resources (415), as upstream.
    let e = api_err(
        widgets
            .patch(
                "w1",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"size": 2}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 415);
    // A cluster-scoped kind without a status subresource.
    let gadget: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": "gadgets.conformance.svcnet.io"},
        "spec": {
            "group": "conformance.svcnet.io",
            "scope": "Cluster",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "listKind": "GadgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                          "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
        },
    }))
    .unwrap();
    crds.create(&PostParams::default(), &gadget).await.unwrap();
    let gar = harness_discover(
        &env.client(),
        &GroupVersionKind::gvk("conformance.svcnet.io", "v1", "Gadget"),
    )
    .await;
    let gadgets: Api<DynamicObject> = Api::all_with(env.client(), &gar);
    let g =
        DynamicObject::new("g1", &gar).data(json!({"spec": {"x": 1}, "status": {"kept": true}}));
    let g = gadgets.create(&PostParams::default(), &g).await.unwrap();
    assert_eq!(
        g.data["status"]["kept"], true,
        "without the subresource, status is ordinary data"
    );
    assert!(g.metadata.namespace.is_none());
    crds.delete("gadgets.conformance.svcnet.io", &DeleteParams::default())
        .await
        .unwrap();

    crds.delete("widgets.conformance.svcnet.io", &DeleteParams::default())
        .await
        .unwrap();
    harness::wait_for(
        &crds,
        "widgets.conformance.svcnet.io",
        Duration::from_secs(60),
        |c: Option<&CustomResourceDefinition>| c.is_none(),
    )
    .await
    .unwrap();
}

async fn harness_discover(client: &Client, gvk: &GroupVersionKind) -> ApiResource {
    let mut last = None;
    for _ in 0..50 {
        match kube::discovery::pinned_kind(client, gvk).await {
            Ok((ar, _caps)) => return ar,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("kind {gvk:?} never discovered: {last:?}");
}

#[tokio::test]
async fn watcher_list_strategies() {
    use kube::runtime::watcher;
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("conf-strategies").await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(env.client(), ns.name());
    for i in 0..7 {
        cms.create(&PostParams::default(), &cm(&format!("s{i}"), &[]))
            .await
            .unwrap();
    }
    let mut strategies = vec![(
        "paginated list+watch",
        watcher::Config::default().page_size(2),
    )];
    // Streaming lists (a watch with sendInitialEvents=true) are served by default since
    // Kubernetes 1.34 (the WatchList feature); older servers reject or ignore the parameters.
    if env.server_at_least(34).await {
        strategies.push((
            "streaming list",
            watcher::Config::default().streaming_lists(),
        ));
    }
    for (what, config) in strategies {
        let mut s = watcher(cms.clone(), config).boxed();
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout(T, s.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
            {
                watcher::Event::Init => {}
                watcher::Event::InitApply(o) => seen.push(o.metadata.name.unwrap()),
                watcher::Event::InitDone => break,
                other => panic!("{what}: unexpected {other:?}"),
            }
        }
        seen.sort();
        assert_eq!(
            seen,
            (0..7).map(|i| format!("s{i}")).collect::<Vec<_>>(),
            "{what}"
        );
        cms.create(
            &PostParams::default(),
            &cm(&format!("after-{}", what.len()), &[]),
        )
        .await
        .unwrap();
        match tokio::time::timeout(T, s.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            watcher::Event::Apply(o) => assert!(o.metadata.name.unwrap().starts_with("after-")),
            other => panic!("{what}: expected Apply, got {other:?}"),
        }
        cms.delete(&format!("after-{}", what.len()), &DeleteParams::default())
            .await
            .unwrap();
    }
}

/// Extreme list and delete parameters: `limit=0` and negative limits mean "no limit", a limit
/// larger than the collection returns everything without a continue token, an unparsable limit
/// is a 400, and a grace period too large for the server's clock arithmetic is answered with an
/// HTTP status (a 4xx, or a graceful deletion) instead of a dropped connection.
#[tokio::test]
async fn extreme_limits_and_grace_periods() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("conf-extremes").await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(env.client(), ns.name());
    for i in 0..3 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), &[]))
            .await
            .unwrap();
    }
    let list = |limit: &str| {
        let client = env.client();
        let uri = format!("/api/v1/namespaces/{}/configmaps?limit={limit}", ns.name());
        async move {
            let req = http::Request::get(uri).body(Vec::new()).unwrap();
            raw(&client, req).await
        }
    };
    for limit in ["0", "-1", "3", "9223372036854775807"] {
        let (code, body) = list(limit).await;
        assert_eq!(code, 200, "limit={limit}: {body}");
        assert_eq!(
            body["items"].as_array().map(Vec::len),
            Some(3),
            "limit={limit}"
        );
        assert!(
            body["metadata"]["continue"]
                .as_str()
                .is_none_or(str::is_empty),
            "limit={limit}: nothing is left to continue: {body}"
        );
    }
    let (code, body) = list("2").await;
    assert_eq!(
        (code, body["items"].as_array().map(Vec::len)),
        (200, Some(2))
    );
    assert!(body["metadata"]["continue"]
        .as_str()
        .is_some_and(|c| !c.is_empty()));
    for bad in ["x", "99999999999999999999999"] {
        let (code, body) = list(bad).await;
        assert_eq!(code, 400, "limit={bad}: {body}");
        assert_eq!(body["kind"], "Status");
    }

    // A grace period whose deadline cannot be represented.
    let pods: Api<Pod> = Api::namespaced(env.client(), ns.name());
    pods.create(&PostParams::default(), &harness::pod("g", "node-a", &[]))
        .await
        .unwrap();
    let req = http::Request::delete(format!(
        "/api/v1/namespaces/{}/pods/g?gracePeriodSeconds=9223372036854775807",
        ns.name()
    ))
    .body(Vec::new())
    .unwrap();
    let (code, body) = raw(&env.client(), req).await;
    match code {
        200 | 202 => {
            // Accepted as a graceful deletion: the Pod is terminating, not gone.
            let p = pods.get("g").await.unwrap();
            assert!(p.metadata.deletion_timestamp.is_some(), "{body}");
        }
        400..=499 => {
            assert_eq!(body["kind"], "Status", "{body}");
            assert!(pods
                .get("g")
                .await
                .unwrap()
                .metadata
                .deletion_timestamp
                .is_none());
        }
        other => panic!("gracePeriodSeconds=i64::MAX: HTTP {other}: {body}"),
    }
    // The server still answers.
    assert_eq!(
        cms.list(&ListParams::default()).await.unwrap().items.len(),
        3
    );
}
