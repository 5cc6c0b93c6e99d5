//! networking.k8s.io/v1 ServiceCIDR and IPAddress: discovery, CRUD, watch, validation (422s
//! with kube-apiserver's field paths), immutability and the ServiceCIDR status subresource.
//!
//! Runs on the embedded server (default) and on `KUBEBUILDER_ASSETS` / `E2E_KUBECONFIG`
//! backends. Both kinds are GA from Kubernetes 1.33; a server that does not serve them (the
//! v1.24 control plane of the dev machines) makes every test print why it is skipped and
//! return. Both kinds are cluster-scoped, so every object gets a name of its own run (the
//! control plane is shared by all tests of the binary, and possibly by earlier runs).
//! No root needed.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::networking::v1::{IPAddress, ServiceCIDR};
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::GroupVersionKind;
use kube::Api;
use serde_json::json;
use testkit::harness::{self, TestEnv};

const T: Duration = Duration::from_secs(20);
const GV: &str = "networking.k8s.io/v1";

/// A number unique to this run and call, for names of cluster-scoped objects.
fn unique() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    (nanos ^ std::process::id().rotate_left(16)).wrapping_add(N.fetch_add(7919, Ordering::Relaxed))
}

/// An IPv6 address in the documentation range, canonical (no zero groups besides the `::` run).
fn fresh_v6() -> String {
    let u = unique();
    format!("2001:db8:{:x}:{:x}::1", (u >> 16) | 1, (u & 0xffff) | 1)
}

/// A /112 IPv6 range in the documentation range, canonical.
fn fresh_v6_cidr() -> String {
    let u = unique();
    format!("2001:db8:{:x}:{:x}::/112", (u >> 16) | 1, (u & 0xffff) | 1)
}

/// An IPv4 address in the benchmarking range 198.18.0.0/15, no octet zero.
fn fresh_v4() -> String {
    let u = unique();
    format!(
        "198.{}.{}.{}",
        18 + (u & 1),
        (u >> 1) % 254 + 1,
        (u >> 9) % 254 + 1
    )
}

/// Does the server serve ServiceCIDRs and IPAddresses? Prints why the test is skipped if not.
async fn serves_networking(env: &TestEnv, test: &str) -> bool {
    let served = match env.client().list_api_group_resources(GV).await {
        Ok(list) => ["servicecidrs", "ipaddresses"]
            .iter()
            .all(|r| list.resources.iter().any(|x| x.name == *r)),
        Err(_) => false,
    };
    if !served {
        let version = env
            .client()
            .apiserver_version()
            .await
            .map(|v| v.git_version)
            .unwrap_or_else(|e| format!("unknown version ({e})"));
        eprintln!(
            "skipping {test}: the server ({version}) does not serve networking.k8s.io/v1 servicecidrs and ipaddresses (GA from Kubernetes 1.33)"
        );
    }
    served
}

/// Whether main-resource writes drop `.status` on this server: kube-apiserver does from 1.36
/// (earlier releases stored whatever the request sent); the embedded server always does.
async fn wipes_status(env: &TestEnv) -> bool {
    env.is_embedded() || env.server_at_least(36).await
}

fn api_err(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The causes of a 422 Invalid, as (field, message).
fn invalid(e: kube::Error) -> Vec<(String, String)> {
    let s = api_err(e);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"), "{s:?}");
    s.details
        .map(|d| d.causes.into_iter().map(|c| (c.field, c.message)).collect())
        .unwrap_or_default()
}

/// Assert that exactly one cause names `field` and that its message contains `text`.
fn has_cause(causes: &[(String, String)], field: &str, text: &str) {
    let hits: Vec<_> = causes.iter().filter(|(f, _)| f == field).collect();
    assert!(
        hits.len() == 1 && hits[0].1.contains(text),
        "expected one cause at {field} containing {text:?}, got {causes:?}"
    );
}

fn service_cidr(name: &str, cidrs: &[&str]) -> ServiceCIDR {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"svcnet.io/e2e": "networking"}},
        "spec": {"cidrs": cidrs},
    }))
    .unwrap()
}

fn ip_address(name: &str, parent: serde_json::Value) -> IPAddress {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"parentRef": parent},
    }))
    .unwrap()
}

fn svc_parent(name: &str) -> serde_json::Value {
    json!({"group": "", "resource": "services", "namespace": "default", "name": name})
}

fn cidrs_of(c: &ServiceCIDR) -> Vec<String> {
    c.spec
        .as_ref()
        .and_then(|s| s.cidrs.clone())
        .unwrap_or_default()
}

fn condition_types(c: &ServiceCIDR) -> Vec<String> {
    c.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|cs| cs.iter().map(|c| c.type_.clone()).collect())
        .unwrap_or_default()
}

/// Run kubectl (asynchronously: the embedded server answers on this test's runtime).
async fn kubectl(env: &TestEnv, args: &[&str]) -> String {
    let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_string());
    let out = tokio::process::Command::new(&bin)
        .arg("--kubeconfig")
        .arg(env.kubeconfig_path())
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {bin:?} (set KUBECTL or install kubectl): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn discovery_lists_service_cidrs_and_ip_addresses() {
    let env = TestEnv::start().await.unwrap();
    if !serves_networking(&env, "discovery_lists_service_cidrs_and_ip_addresses").await {
        return;
    }
    let client = env.client();
    let groups = client.list_api_groups().await.unwrap();
    let group = groups
        .groups
        .iter()
        .find(|g| g.name == "networking.k8s.io")
        .expect("/apis lists networking.k8s.io");
    assert!(group.versions.iter().any(|v| v.group_version == GV));
    let list = client.list_api_group_resources(GV).await.unwrap();
    let find = |name: &str| list.resources.iter().find(|r| r.name == name);
    let cidrs = find("servicecidrs").unwrap();
    assert_eq!(
        (cidrs.kind.as_str(), cidrs.namespaced),
        ("ServiceCIDR", false)
    );
    for verb in [
        "create", "delete", "get", "list", "patch", "update", "watch",
    ] {
        assert!(cidrs.verbs.iter().any(|v| v == verb), "servicecidrs {verb}");
    }
    let status = find("servicecidrs/status").expect("servicecidrs/status is served");
    assert!(status.verbs.iter().any(|v| v == "update"));
    let ips = find("ipaddresses").unwrap();
    assert_eq!((ips.kind.as_str(), ips.namespaced), ("IPAddress", false));
    assert!(
        find("ipaddresses/status").is_none(),
        "IPAddress has no status subresource"
    );

    // kube-rs discovery, as controllers resolve kinds.
    for kind in ["ServiceCIDR", "IPAddress"] {
        let gvk = GroupVersionKind::gvk("networking.k8s.io", "v1", kind);
        let (ar, caps) = kube::discovery::pinned_kind(&client, &gvk).await.unwrap();
        assert_eq!(ar.kind, kind);
        assert_eq!(caps.scope, kube::discovery::Scope::Cluster);
    }
    let discovery = kube::Discovery::new(client.clone())
        .filter(&["networking.k8s.io"])
        .run()
        .await
        .unwrap();
    let kinds: Vec<String> = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .map(|(ar, _)| ar.plural)
        .collect();
    assert!(
        kinds.iter().any(|k| k == "servicecidrs") && kinds.iter().any(|k| k == "ipaddresses"),
        "{kinds:?}"
    );

    // kubectl sees them too, and prints upstream's columns.
    let resources = kubectl(&env, &["api-resources", "--api-group=networking.k8s.io"]).await;
    for line in ["servicecidrs", "ipaddresses"] {
        let row = resources
            .lines()
            .find(|l| l.split_whitespace().next() == Some(line))
            .unwrap_or_else(|| panic!("kubectl api-resources lacks {line}:\n{resources}"));
        assert!(
            row.contains("networking.k8s.io/v1") && row.contains("false"),
            "{row}"
        );
    }
    let name = format!("e2e-kubectl-{}", unique());
    let api: Api<ServiceCIDR> = Api::all(client);
    api.create(
        &PostParams::default(),
        &service_cidr(&name, &["198.51.100.0/24"]),
    )
    .await
    .unwrap();
    let table = kubectl(&env, &["get", "servicecidrs", &name]).await;
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.contains("CIDRS") && header.contains("AGE"),
        "{table}"
    );
    assert!(table.contains("198.51.100.0/24"), "{table}");
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn service_cidr_lifecycle_and_status() {
    let env = TestEnv::start().await.unwrap();
    if !serves_networking(&env, "service_cidr_lifecycle_and_status").await {
        return;
    }
    let api: Api<ServiceCIDR> = Api::all(env.client());
    let name = format!("e2e-cidr-{}", unique());
    let mut obj = service_cidr(&name, &["198.51.100.0/24"]);
    obj.metadata.labels = Some([("svcnet.io/run".to_string(), name.clone())].into());
    obj.status = serde_json::from_value(json!({"conditions": [{
        "type": "Sent", "status": "True", "reason": "ByClient", "message": "",
        "lastTransitionTime": "2024-01-01T00:00:00Z"}]}))
    .unwrap();
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(created.metadata.name.as_deref(), Some(name.as_str()));
    assert_eq!(created.metadata.namespace, None);
    assert_eq!(created.metadata.generation, None, "the strategy sets none");
    assert_eq!(cidrs_of(&created), ["198.51.100.0/24"]);
    if wipes_status(&env).await {
        assert!(
            !condition_types(&created).contains(&"Sent".to_string()),
            "create drops the status it was sent: {:?}",
            created.status
        );
    }

    // get and list by label.
    let got = api.get(&name).await.unwrap();
    assert_eq!(got.metadata.uid, created.metadata.uid);
    let sel = format!("svcnet.io/run={name}");
    let listed = api.list(&ListParams::default().labels(&sel)).await.unwrap();
    assert_eq!(listed.items.len(), 1);

    // The existing CIDR is immutable; removing it or replacing the list is refused.
    let mut changed = got.clone();
    changed.spec.as_mut().unwrap().cidrs = Some(vec!["198.51.101.0/24".into()]);
    let causes = invalid(
        api.replace(&name, &PostParams::default(), &changed)
            .await
            .unwrap_err(),
    );
    has_cause(&causes, "spec.cidrs[0]", "field is immutable");
    let causes = invalid(
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"cidrs": []}})),
        )
        .await
        .unwrap_err(),
    );
    has_cause(&causes, "spec.cidrs", "field is immutable");

    // A second family may be added (single- to dual-stack), but it must be valid.
    let causes = invalid(
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"cidrs": ["198.51.100.0/24", "198.18.0.0/15"]}})),
        )
        .await
        .unwrap_err(),
    );
    has_cause(
        &causes,
        "spec.cidrs",
        "no more than one IP for each IP family",
    );
    let v6 = fresh_v6_cidr();
    let mut dual = api.get(&name).await.unwrap();
    dual.spec.as_mut().unwrap().cidrs = Some(vec!["198.51.100.0/24".into(), v6.clone()]);
    let dual = api
        .replace(&name, &PostParams::default(), &dual)
        .await
        .unwrap();
    assert_eq!(cidrs_of(&dual), ["198.51.100.0/24".to_string(), v6.clone()]);
    assert_eq!(dual.metadata.generation, None);
    let causes = invalid(
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"cidrs": ["198.51.100.0/24"]}})),
        )
        .await
        .unwrap_err(),
    );
    has_cause(&causes, "spec.cidrs", "field is immutable");

    // Status goes through /status: spec and labels sent there are not taken.
    let status = json!({
        "metadata": {"labels": {"svcnet.io/run": name, "added-by": "status"}},
        "spec": {"cidrs": ["203.0.113.0/24"]},
        "status": {"conditions": [{
            "type": "Tested", "status": "True", "reason": "E2E", "message": "set through /status",
            "lastTransitionTime": "2024-01-01T00:00:00Z"}]},
    });
    let after = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert!(condition_types(&after).contains(&"Tested".to_string()));
    assert_eq!(
        cidrs_of(&after),
        cidrs_of(&dual),
        "status writes keep the spec"
    );
    let labels = after.metadata.labels.clone().unwrap_or_default();
    assert!(
        !labels.contains_key("added-by"),
        "status writes keep labels: {labels:?}"
    );
    // Upstream does not validate conditions: any type and status string is stored.
    let odd = json!({"status": {"conditions": [{
        "type": "Tested", "status": "Perhaps", "reason": "E2E", "message": "",
        "lastTransitionTime": "2024-01-01T00:00:00Z"}]}});
    let odd = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&odd))
        .await
        .unwrap();
    let tested = odd
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Tested"))
        .map(|c| c.status.clone());
    assert_eq!(tested.as_deref(), Some("Perhaps"));
    let from_status = api.get_status(&name).await.unwrap();
    assert_eq!(from_status.metadata.uid, created.metadata.uid);

    // Main-resource writes do not change status.
    if wipes_status(&env).await {
        let wiped = api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"labels": {"x": "y"}}, "status": {"conditions": []}}),
                ),
            )
            .await
            .unwrap();
        assert!(condition_types(&wiped).contains(&"Tested".to_string()));
        assert_eq!(
            wiped.metadata.labels.unwrap().get("x").map(String::as_str),
            Some("y")
        );
    }

    // Server-side apply: a manager of its own owns the labels it applied; a conflicting
    // apply of the immutable CIDRs is refused like any update.
    let applied = api
        .patch(
            &name,
            &PatchParams::apply("e2e-networking").force(),
            &Patch::Apply(json!({
                "apiVersion": GV, "kind": "ServiceCIDR",
                "metadata": {"name": name, "labels": {"applied": "yes"}},
            })),
        )
        .await
        .unwrap();
    assert_eq!(
        applied
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .get("applied")
            .map(String::as_str),
        Some("yes")
    );
    let managers: Vec<(String, String)> = applied
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            (
                m.manager.unwrap_or_default(),
                m.operation.unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("e2e-networking".into(), "Apply".into())),
        "{managers:?}"
    );
    let causes = invalid(
        api.patch(
            &name,
            &PatchParams::apply("e2e-networking").force(),
            &Patch::Apply(json!({
                "apiVersion": GV, "kind": "ServiceCIDR",
                "metadata": {"name": name},
                "spec": {"cidrs": ["203.0.113.0/24"]},
            })),
        )
        .await
        .unwrap_err(),
    );
    has_cause(&causes, "spec.cidrs", "field is immutable");

    // Finalizers hold deletion as for any kind.
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["svcnet.io/e2e-hold"]}})),
    )
    .await
    .unwrap();
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    let held = api.get(&name).await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    let fins = held.metadata.finalizers.clone().unwrap_or_default();
    let keep: Vec<&String> = fins.iter().filter(|f| *f != "svcnet.io/e2e-hold").collect();
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": keep}})),
    )
    .await
    .unwrap();
    harness::wait_for(
        &api,
        &name,
        Duration::from_secs(60),
        |c: Option<&ServiceCIDR>| c.is_none(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn service_cidr_validation() {
    let env = TestEnv::start().await.unwrap();
    if !serves_networking(&env, "service_cidr_validation").await {
        return;
    }
    let api: Api<ServiceCIDR> = Api::all(env.client());
    let pp = PostParams::default();
    let name = format!("e2e-bad-{}", unique());
    let create = |cidrs: &'static [&'static str]| {
        let api = api.clone();
        let obj = service_cidr(&name, cidrs);
        async move { api.create(&PostParams::default(), &obj).await.unwrap_err() }
    };
    has_cause(
        &invalid(create(&[]).await),
        "spec.cidrs",
        "at least one CIDR required",
    );
    has_cause(
        &invalid(create(&["10.0.0.0/8", "fd00::/64", "192.168.0.0/16"]).await),
        "spec.cidrs",
        "may only hold up to 2 values",
    );
    has_cause(
        &invalid(create(&["198.51.100.1/24"]).await),
        "spec.cidrs[0]",
        "must not have bits set beyond the prefix length",
    );
    has_cause(
        &invalid(create(&["2001:DB8::/64"]).await),
        "spec.cidrs[0]",
        r#"must be in canonical form ("2001:db8::/64")"#,
    );
    has_cause(
        &invalid(create(&["010.0.0.0/8"]).await),
        "spec.cidrs[0]",
        "must not have leading 0s",
    );
    has_cause(
        &invalid(create(&["::ffff:10.0.0.0/104"]).await),
        "spec.cidrs[0]",
        "must not have an IPv4-mapped IPv6 address",
    );
    has_cause(
        &invalid(create(&["not-a-cidr"]).await),
        "spec.cidrs[0]",
        "must be a valid CIDR value",
    );
    has_cause(
        &invalid(create(&["fd00::/64", "2001:db8::/64"]).await),
        "spec.cidrs",
        "may specify no more than one IP for each IP family",
    );
    let causes = invalid(
        api.create(&pp, &service_cidr("Not_A_Name", &["10.0.0.0/8"]))
            .await
            .unwrap_err(),
    );
    assert!(
        causes.iter().any(|(f, _)| f == "metadata.name"),
        "{causes:?}"
    );
    // Nothing was stored by the refused creates.
    let e = api_err(api.get(&name).await.unwrap_err());
    assert_eq!(e.code, 404);
}

#[tokio::test]
async fn ip_address_lifecycle_and_watch() {
    let env = TestEnv::start().await.unwrap();
    if !serves_networking(&env, "ip_address_lifecycle_and_watch").await {
        return;
    }
    let api: Api<IPAddress> = Api::all(env.client());
    let run = format!("ip-{}", unique());
    let sel = format!("svcnet.io/run={run}");
    let rv = api
        .list(&ListParams::default().labels(&sel))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut watch = api
        .watch(&WatchParams::default().labels(&sel).timeout(30), &rv)
        .await
        .unwrap()
        .boxed();

    let name = fresh_v6();
    let mut obj = ip_address(&name, svc_parent("web"));
    obj.metadata.labels = Some([("svcnet.io/run".to_string(), run.clone())].into());
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(created.metadata.name.as_deref(), Some(name.as_str()));
    assert_eq!(created.metadata.namespace, None);
    assert_eq!(created.metadata.generation, None);
    let parent = &created.spec.as_ref().unwrap().parent_ref;
    assert_eq!(
        (
            parent.resource.as_str(),
            parent.name.as_str(),
            parent.namespace.as_deref()
        ),
        ("services", "web", Some("default"))
    );

    // A dotted-quad name, and a name taken verbatim from generateName (no random suffix: the
    // name is the address).
    let v4 = fresh_v4();
    let mut gen = ip_address("", svc_parent("gen"));
    gen.metadata.name = None;
    gen.metadata.generate_name = Some(v4.clone());
    gen.metadata.labels = Some([("svcnet.io/run".to_string(), run.clone())].into());
    let gen = api.create(&PostParams::default(), &gen).await.unwrap();
    assert_eq!(gen.metadata.name.as_deref(), Some(v4.as_str()));

    let listed = api.list(&ListParams::default().labels(&sel)).await.unwrap();
    let mut names: Vec<String> = listed
        .items
        .iter()
        .filter_map(|i| i.metadata.name.clone())
        .collect();
    names.sort();
    let mut want = vec![name.clone(), v4.clone()];
    want.sort();
    assert_eq!(names, want);

    // Labels may change; the parent may not.
    let relabelled = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "a"}}})),
        )
        .await
        .unwrap();
    assert_eq!(relabelled.metadata.generation, None);
    let mut moved = relabelled.clone();
    moved.spec.as_mut().unwrap().parent_ref.name = "other".into();
    let causes = invalid(
        api.replace(&name, &PostParams::default(), &moved)
            .await
            .unwrap_err(),
    );
    has_cause(&causes, "spec.parentRef", "field is immutable");
    // The same parent spelled with an explicit empty group is no change.
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"parentRef": {"group": ""}}})),
    )
    .await
    .unwrap();

    // There is no status subresource.
    let e = api_err(
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 404);

    api.delete(&name, &DeleteParams::default()).await.unwrap();
    let gone = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&sel),
        )
        .await
        .unwrap();
    let gone: Vec<String> = gone
        .left()
        .map(|l| {
            l.items
                .into_iter()
                .filter_map(|i| i.metadata.name)
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(gone, std::slice::from_ref(&v4), "deletecollection by label");

    // The watch saw it all, in order.
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + T;
    while seen.iter().filter(|(t, _)| *t == "DELETED").count() < 2 {
        let next = tokio::time::timeout_at(deadline, watch.try_next())
            .await
            .expect("watch events in time")
            .unwrap()
            .expect("watch open");
        match next {
            WatchEvent::Added(i) => seen.push(("ADDED", i.metadata.name.unwrap())),
            WatchEvent::Modified(i) => seen.push(("MODIFIED", i.metadata.name.unwrap())),
            WatchEvent::Deleted(i) => seen.push(("DELETED", i.metadata.name.unwrap())),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        }
    }
    let of = |n: &str| -> Vec<&str> {
        seen.iter()
            .filter(|(_, x)| x == n)
            .map(|(t, _)| *t)
            .collect()
    };
    assert_eq!(of(&name), ["ADDED", "MODIFIED", "DELETED"], "{seen:?}");
    assert_eq!(of(&v4), ["ADDED", "DELETED"], "{seen:?}");
}

#[tokio::test]
async fn ip_address_validation() {
    let env = TestEnv::start().await.unwrap();
    if !serves_networking(&env, "ip_address_validation").await {
        return;
    }
    let api: Api<IPAddress> = Api::all(env.client());
    let pp = PostParams::default();
    for (name, text) in [
        ("010.0.0.1", "must not have leading 0s"),
        (
            "2001:DB8::1",
            r#"must be in canonical form ("2001:db8::1")"#,
        ),
        (
            "2001:db8:0::1",
            r#"must be in canonical form ("2001:db8::1")"#,
        ),
        ("::ffff:10.0.0.1", "must not be an IPv4-mapped IPv6 address"),
        ("not-an-ip", "must be a valid IP address"),
        ("10.0.0.0.1", "must be a valid IP address"),
    ] {
        let causes = invalid(
            api.create(&pp, &ip_address(name, svc_parent("web")))
                .await
                .unwrap_err(),
        );
        has_cause(&causes, "metadata.name", text);
    }
    let name = fresh_v6();
    // parentRef is required, and so are its resource and name.
    let bare: IPAddress = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    has_cause(
        &invalid(api.create(&pp, &bare).await.unwrap_err()),
        "spec.parentRef",
        "Required value",
    );
    let causes = invalid(
        api.create(&pp, &ip_address(&name, json!({"resource": "", "name": ""})))
            .await
            .unwrap_err(),
    );
    has_cause(&causes, "spec.parentRef.resource", "Required value");
    has_cause(&causes, "spec.parentRef.name", "Required value");
    let causes = invalid(
        api.create(
            &pp,
            &ip_address(
                &name,
                json!({"group": "Not_DNS", "resource": "a/b", "namespace": "..", "name": "x%y"}),
            ),
        )
        .await
        .unwrap_err(),
    );
    has_cause(&causes, "spec.parentRef.group", "RFC 1123 subdomain");
    has_cause(&causes, "spec.parentRef.resource", "may not contain '/'");
    has_cause(&causes, "spec.parentRef.namespace", "may not be '..'");
    has_cause(&causes, "spec.parentRef.name", "may not contain '%'");
    let e = api_err(api.get(&name).await.unwrap_err());
    assert_eq!(e.code, 404, "refused creates store nothing");
}
