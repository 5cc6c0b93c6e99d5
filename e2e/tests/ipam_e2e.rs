//! End-to-end tests of svcnet's IPAM controller against the harness's API server (embedded by
//! default; a real control plane with `KUBEBUILDER_ASSETS` / `E2E_KUBECONFIG`). The controller runs
//! in-process; "killing" it aborts its task mid-flight, which is what a crash looks like to the API.
//!
//! Contracts asserted: every Service that needs an address has one, all are unique and in range,
//! every value has exactly one claim, conflicts and exhaustion are reported as Events. On a real
//! apiserver ClusterIPs and NodePorts are allocated by the apiserver and adopted by svcnet; the
//! assertions hold either way.
//!
//! No root needed.
//!
//! One file (one test binary) on purpose: the harness starts one control plane per test binary
//! and a real kube-apiserver takes 10–15 s to start.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use crds::{LoadBalancerIPPool, NodePortClaim, ServiceIPClaim};
use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::{Event, Service};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use testkit::harness::{wait_until, TestEnv};

mod common_ipam;
use common_ipam::*;

/// A value two Services use at once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Dup {
    Ip(IpAddr),
    Port(i32),
}

/// Checks that every value is in range and used by one Service only; returns the values used
/// twice (or more), each with the Services using it.
fn duplicates(items: &[Service], cidrs: &[&str]) -> BTreeMap<Dup, Vec<String>> {
    let mut users: BTreeMap<Dup, Vec<String>> = BTreeMap::new();
    for s in items {
        let who = format!(
            "{}/{}",
            s.metadata.namespace.as_deref().unwrap_or_default(),
            s.metadata.name.as_deref().unwrap_or_default()
        );
        for ip in cluster_ips(s) {
            let addr: IpAddr = ip.parse().expect("valid IP");
            assert!(cidrs.iter().any(|c| in_cidr(addr, c)), "{ip} out of range");
            users.entry(Dup::Ip(addr)).or_default().push(who.clone());
        }
        let mine: HashSet<i32> = node_ports(s).into_iter().collect();
        for p in mine {
            assert!((30000..=32767).contains(&p), "nodePort {p} out of range");
            users.entry(Dup::Port(p)).or_default().push(who.clone());
        }
    }
    users.retain(|_, v| v.len() > 1);
    users
}

/// Asserts every value is in range and unique. A duplicate fails with everything needed to explain it:
/// the Services using the value (UID, resourceVersion), the claim object that exists for it now
/// (holders with UIDs, whether each holder lives, creation time, resourceVersion), every Event
/// that mentions the value, and — on the embedded server with the audit on — every request on
/// the claim and on the Services involved, in arrival order.
async fn assert_unique_in_range_or_explain(env: &TestEnv, items: &[Service], cidrs: &[&str]) {
    let dups = duplicates(items, cidrs);
    if dups.is_empty() {
        return;
    }
    let mut report = String::new();
    for (value, users) in &dups {
        report.push_str(&explain_duplicate(env, items, value, users).await);
    }
    panic!("{} duplicate value(s):\n{report}", dups.len());
}

async fn explain_duplicate(
    env: &TestEnv,
    items: &[Service],
    value: &Dup,
    users: &[String],
) -> String {
    use std::fmt::Write as _;
    let client = env.client();
    let mut out = String::new();
    let (claim_name, text) = match value {
        Dup::Ip(ip) => (ServiceIPClaim::name_for(*ip), ip.to_string()),
        Dup::Port(p) => (NodePortClaim::name_for(*p as u16), p.to_string()),
    };
    let _ = writeln!(out, "== {text} used by {users:?}");
    if let Dup::Ip(ip) = value {
        let _ = writeln!(
            out,
            "  ledger record now: {:?}",
            cluster_ip_holder(&client, *ip).await
        );
    }
    let _ = writeln!(
        out,
        "  (embedded server: resourceVersions are one global write counter, so they order the \
         writes below; the audit names no object on a create, so a claim's creation shows as its \
         resourceVersion unless it was modified since)"
    );
    let by_uid: BTreeMap<String, &Service> = items
        .iter()
        .map(|s| (s.metadata.uid.clone().unwrap_or_default(), s))
        .collect();
    for s in items {
        let who = format!(
            "{}/{}",
            s.metadata.namespace.as_deref().unwrap_or_default(),
            s.metadata.name.as_deref().unwrap_or_default()
        );
        if users.contains(&who) {
            let _ = writeln!(
                out,
                "  service {who}: uid {} resourceVersion {} created {:?}",
                s.metadata.uid.as_deref().unwrap_or_default(),
                s.metadata.resource_version.as_deref().unwrap_or_default(),
                s.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string()),
            );
        }
    }
    let holder = |uid: &str| {
        by_uid.get(uid).map_or("GONE".to_string(), |s| {
            format!("live {}", s.metadata.name.as_deref().unwrap_or_default())
        })
    };
    match value {
        Dup::Ip(_) => {
            let api: Api<ServiceIPClaim> = Api::all(client.clone());
            match api.get_opt(&claim_name).await {
                Ok(Some(c)) => {
                    let _ =
                        writeln!(
                        out,
                        "  claim {claim_name}: uid {} resourceVersion {} created {:?} purpose {:?}",
                        c.metadata.uid.as_deref().unwrap_or_default(),
                        c.metadata.resource_version.as_deref().unwrap_or_default(),
                        c.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
                        c.spec.purpose,
                    );
                    for p in &c.spec.parent_refs {
                        let _ = writeln!(
                            out,
                            "    holder {}/{} uid {} ({})",
                            p.namespace,
                            p.name,
                            p.uid,
                            holder(&p.uid)
                        );
                    }
                }
                Ok(None) => {
                    let _ = writeln!(out, "  claim {claim_name}: NONE");
                }
                Err(e) => {
                    let _ = writeln!(out, "  claim {claim_name}: error {e}");
                }
            }
        }
        Dup::Port(_) => {
            let api: Api<NodePortClaim> = Api::all(client.clone());
            match api.get_opt(&claim_name).await {
                Ok(Some(c)) => {
                    let p = &c.spec.parent_ref;
                    let _ = writeln!(
                        out,
                        "  claim {claim_name}: uid {} resourceVersion {} created {:?} purpose {:?} holder {}/{} uid {} ({})",
                        c.metadata.uid.as_deref().unwrap_or_default(),
                        c.metadata.resource_version.as_deref().unwrap_or_default(),
                        c.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
                        c.spec.purpose,
                        p.namespace,
                        p.name,
                        p.uid,
                        holder(&p.uid)
                    );
                }
                Ok(None) => {
                    let _ = writeln!(out, "  claim {claim_name}: NONE");
                }
                Err(e) => {
                    let _ = writeln!(out, "  claim {claim_name}: error {e}");
                }
            }
        }
    }
    // Events anywhere that mention the value (ClaimLeaked names the holders it saw gone,
    // ClusterIPNotAllocated / ...AlreadyAllocated the Services involved).
    let events: Api<Event> = Api::all(client.clone());
    if let Ok(list) = events.list(&ListParams::default()).await {
        for e in list.items {
            let msg = e.message.clone().unwrap_or_default();
            if msg.contains(&text) {
                let _ = writeln!(
                    out,
                    "  event {} on {}/{}: {msg}",
                    e.reason.unwrap_or_default(),
                    e.involved_object.kind.unwrap_or_default(),
                    e.involved_object.name.unwrap_or_default()
                );
            }
        }
    }
    // The request history of the claim and of the Services using the value.
    if let Some(server) = env.server() {
        let names: Vec<&str> = users
            .iter()
            .filter_map(|u| u.split_once('/').map(|(_, n)| n))
            .collect();
        for (i, r) in server.audit_log().iter().enumerate() {
            let Some(name) = r.name.as_deref() else {
                continue;
            };
            let on_claim = name == claim_name && r.resource.ends_with("claims");
            let on_user = r.resource == "services" && names.contains(&name);
            if (on_claim || on_user) && r.verb != "watch" {
                let _ = writeln!(
                    out,
                    "  request #{i}: {} {}{} {name} -> {}",
                    r.verb,
                    r.resource,
                    r.subresource
                        .as_deref()
                        .map(|s| format!("/{s}"))
                        .unwrap_or_default(),
                    r.code
                );
            }
        }
    }
    out
}

async fn create_many(api: &Api<Service>, names: Vec<String>, node_port_every: usize) {
    stream::iter(names.into_iter().enumerate())
        .for_each_concurrent(32, |(i, name)| {
            let api = api.clone();
            async move {
                let spec = if node_port_every > 0 && i % node_port_every == 0 {
                    json!({"type": "NodePort"})
                } else {
                    json!({})
                };
                api.create(&PostParams::default(), &svc(&name, spec))
                    .await
                    .expect("create service");
            }
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_concurrent_services_get_unique_in_range_values() {
    let cidrs = ["10.96.0.0/12"];
    let (env, _ns, api) = setup(&cidrs).await;
    let _ctl = start_controller(&env.client(), config(&cidrs));
    let names: Vec<String> = (0..500).map(|i| format!("svc-{i}")).collect();
    create_many(&api, names, 5).await;
    let items = all_allocated(&api, 500).await;
    assert_unique_in_range_or_explain(&env, &items, &cidrs).await;
    if env.is_embedded() {
        // One claim per value, nothing more.
        let (ips, ports) = claim_counts(&env.client()).await;
        assert_eq!(ips, 500);
        assert_eq!(ports, 100);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_recreate_releases_and_reallocates() {
    let cidrs = ["10.96.0.0/12"];
    let (env, ns, api) = setup(&cidrs).await;
    let _ctl = start_controller(&env.client(), config(&cidrs));
    api.create(
        &PostParams::default(),
        &svc("web", json!({"type": "NodePort"})),
    )
    .await
    .unwrap();
    let first = all_allocated(&api, 1).await.remove(0);
    let ip: IpAddr = cluster_ips(&first)[0].parse().unwrap();
    let np = node_ports(&first)[0];
    api.delete("web", &DeleteParams::default()).await.unwrap();
    let client = env.client();
    let ports: Api<NodePortClaim> = Api::all(env.client());
    wait_until("claims released", WAIT, || async {
        cluster_ip_holder(&client, ip).await.is_none()
            && ports
                .get_opt(&NodePortClaim::name_for(np as u16))
                .await
                .ok()
                .flatten()
                .is_none()
    })
    .await
    .expect("released after delete");
    // Recreate with the same name and explicitly the same values: they are free again.
    api.create(
        &PostParams::default(),
        &svc(
            "web",
            json!({"type": "NodePort", "clusterIP": ip.to_string(),
                   "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": np}]}),
        ),
    )
    .await
    .unwrap();
    let again = all_allocated(&api, 1).await.remove(0);
    assert_eq!(cluster_ips(&again), vec![ip.to_string()]);
    assert_eq!(node_ports(&again), vec![np]);
    wait_until("claims re-created for the new Service", WAIT, || async {
        cluster_ip_holder(&client, ip)
            .await
            .is_some_and(|h| h.uid == again.metadata.uid.clone().unwrap_or_default())
    })
    .await
    .expect("claim owned by the new incarnation");
    let _ = ns;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_ip_conflicts_are_reported_never_substituted() {
    let cidrs = ["10.96.0.0/12"];
    let (env, ns, api) = setup(&cidrs).await;
    let _ctl = start_controller(&env.client(), config(&cidrs));
    let client = env.client();
    api.create(
        &PostParams::default(),
        &svc("a", json!({"clusterIP": "10.96.5.5"})),
    )
    .await
    .unwrap();
    let requested: IpAddr = "10.96.5.5".parse().unwrap();
    wait_until("a claims 10.96.5.5", WAIT, || async {
        cluster_ip_holder(&client, requested).await.is_some()
    })
    .await
    .unwrap();
    // b asks for the same address: an apiserver that allocates rejects it; ours keeps b as the
    // user wrote it and reports why.
    match api
        .create(
            &PostParams::default(),
            &svc("b", json!({"clusterIP": "10.96.5.5"})),
        )
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert!(s.message.contains("already allocated"), "{}", s.message)
        }
        Ok(_) => {
            let msg = wait_event(&client, ns.name(), "b", "ClusterIPAlreadyAllocated").await;
            assert!(
                msg.contains("10.96.5.5") && msg.contains("already allocated"),
                "{msg}"
            );
            let b = api.get("b").await.unwrap();
            assert_eq!(cluster_ips(&b), vec!["10.96.5.5".to_string()]);
            let holder = cluster_ip_holder(&client, requested).await.unwrap();
            assert_eq!(holder.name, "a");
        }
        Err(e) => panic!("{e}"),
    }
    // Out of range.
    match api
        .create(
            &PostParams::default(),
            &svc("c", json!({"clusterIP": "10.200.0.1"})),
        )
        .await
    {
        Err(kube::Error::Api(s)) => assert!(s.message.contains("range"), "{}", s.message),
        Ok(_) => {
            let msg = wait_event(&client, ns.name(), "c", "ClusterIPOutOfRange").await;
            assert!(msg.contains("10.200.0.1"), "{msg}");
        }
        Err(e) => panic!("{e}"),
    }
    // A requested nodePort that another Service holds.
    api.create(
        &PostParams::default(),
        &svc(
            "np1",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30555}]}),
        ),
    )
    .await
    .unwrap();
    // a and np1, plus b and c where the server accepted them as written.
    let existing = api.list(&Default::default()).await.unwrap().items.len();
    all_allocated(&api, existing).await;
    match api
        .create(
            &PostParams::default(),
            &svc(
                "np2",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30555}]}),
            ),
        )
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert!(s.message.contains("already allocated"), "{}", s.message)
        }
        Ok(_) => {
            let msg = wait_event(&client, ns.name(), "np2", "PortAlreadyAllocated").await;
            assert!(msg.contains("30555"), "{msg}");
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dual_stack_policy() {
    let cidrs = ["10.96.0.0/12", "fd00:10:96::/112"];
    let (env, ns, api) = setup(&cidrs).await;
    let client = env.client();
    let _ctl = start_controller(&client, config(&cidrs));
    let cases: Vec<(&str, serde_json::Value, Vec<&str>, usize)> = vec![
        ("single", json!({}), vec!["IPv4"], 1),
        ("single6", json!({"ipFamilies": ["IPv6"]}), vec!["IPv6"], 1),
        (
            "prefer",
            json!({"ipFamilyPolicy": "PreferDualStack"}),
            vec!["IPv4", "IPv6"],
            2,
        ),
        (
            "require6",
            json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6", "IPv4"]}),
            vec!["IPv6", "IPv4"],
            2,
        ),
        (
            "headless",
            json!({"clusterIP": "None", "selector": {}}),
            vec!["IPv4", "IPv6"],
            0,
        ),
    ];
    for (name, spec, _, _) in &cases {
        let mut s = svc(name, spec.clone());
        if *name == "headless" {
            s.spec.as_mut().unwrap().selector = None;
        }
        api.create(&PostParams::default(), &s).await.unwrap();
    }
    for (name, _, fams, n_ips) in &cases {
        let n_ips = *n_ips;
        let got = testkit::harness::wait_for(&api, name, WAIT, |s: Option<&Service>| {
            s.and_then(|s| s.spec.as_ref()).is_some_and(|s| {
                s.ip_family_policy.is_some()
                    && s.cluster_ips
                        .iter()
                        .flatten()
                        .filter(|ip| *ip != "None")
                        .count()
                        == n_ips
            })
        })
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .unwrap();
        let spec = got.spec.unwrap();
        assert_eq!(spec.ip_families.unwrap(), *fams, "{name}");
        let ips: Vec<String> = spec
            .cluster_ips
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s != "None")
            .collect();
        assert_eq!(ips.len(), n_ips, "{name}: {ips:?}");
        for (ip, fam) in ips.iter().zip(fams) {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(addr.is_ipv6(), *fam == "IPv6", "{name}: {ip}");
        }
    }
    // The rest needs a single-stack cluster: a control plane started by the harness is
    // dual-stack, so only the embedded server (where svcnet's ranges are the cluster's) has one.
    if !env.is_embedded() {
        return;
    }
    // RequireDualStack on a single-stack cluster: a clear error as an Event.
    drop(_ctl);
    let v4only = ["10.97.0.0/16"];
    let _ctl = start_controller(&client, config(&v4only));
    api.create(
        &PostParams::default(),
        &svc("needs-dual", json!({"ipFamilyPolicy": "RequireDualStack"})),
    )
    .await
    .unwrap();
    let msg = wait_event(&client, ns.name(), "needs-dual", "InvalidSpec").await;
    assert!(
        msg.contains("this cluster is not configured for dual-stack services"),
        "{msg}"
    );
    // PreferDualStack on a single-stack cluster: one family, no error.
    api.create(
        &PostParams::default(),
        &svc(
            "prefer-single",
            json!({"ipFamilyPolicy": "PreferDualStack"}),
        ),
    )
    .await
    .unwrap();
    let got = testkit::harness::wait_for(&api, "prefer-single", WAIT, |s: Option<&Service>| {
        s.is_some_and(|s| !cluster_ips(s).is_empty())
    })
    .await
    .unwrap()
    .unwrap();
    let spec = got.spec.unwrap();
    assert_eq!(spec.ip_families.unwrap(), vec!["IPv4".to_string()]);
    assert_eq!(spec.ip_family_policy.as_deref(), Some("PreferDualStack"));
    // The flag gives the ranges only where the API has no ServiceCIDRs; with them it seeds the
    // default ServiceCIDR once (made by the first controller, from the dual-stack flag), which
    // later flags do not change.
    let range = if serves_addresses(&client).await {
        cidrs[0]
    } else {
        v4only[0]
    };
    assert!(in_cidr(
        spec.cluster_ips.unwrap()[0].parse().unwrap(),
        range
    ));
}

/// Creates a pool that serves only Services in namespace `ns`: pools are cluster-scoped, and on
/// a shared control plane the other tests' pools must not hand out addresses to this test's
/// Services (nor this one's to theirs).
async fn create_pool(client: &Client, ns: &str, name: &str, mut spec: serde_json::Value) {
    if spec.get("namespaceSelector").is_none() {
        spec["namespaceSelector"] = json!({"matchLabels": {"kubernetes.io/metadata.name": ns}});
    }
    let api: Api<LoadBalancerIPPool> = Api::all(client.clone());
    let pool: LoadBalancerIPPool = serde_json::from_value(json!({
        "apiVersion": "svcnet.io/v1alpha1", "kind": "LoadBalancerIPPool",
        "metadata": {"name": name}, "spec": spec
    }))
    .expect("valid pool");
    api.create(&PostParams::default(), &pool)
        .await
        .expect("create pool");
}

fn ingress(s: &Service) -> Vec<String> {
    s.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.ip)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_pools_sharing_and_exhaustion() {
    let cidrs = ["10.96.0.0/12"];
    let (env, ns, api) = setup(&cidrs).await;
    let client = env.client();
    let pool_name = format!("pool-{}", ns.name());
    create_pool(
        &client,
        ns.name(),
        &pool_name,
        json!({"ranges": [{"start": "192.0.2.10", "stop": "192.0.2.11"}]}),
    )
    .await;
    let _ctl = start_controller(&client, config(&cidrs));
    let lb = |extra: serde_json::Value| {
        let mut spec = json!({"type": "LoadBalancer", "loadBalancerClass": "svcnet.io/lb"});
        if let Some(o) = extra.as_object() {
            for (k, v) in o {
                spec[k] = v.clone();
            }
        }
        spec
    };
    // Two Services sharing one address (same key, different ports).
    let mut a = svc("share-a", lb(json!({"ports": [{"port": 80}]})));
    a.metadata.annotations = Some(BTreeMap::from([(
        "svcnet.io/sharing-key".into(),
        "k".into(),
    )]));
    let mut b = svc("share-b", lb(json!({"ports": [{"port": 443}]})));
    b.metadata.annotations = Some(BTreeMap::from([(
        "svcnet.io/sharing-key".into(),
        "k".into(),
    )]));
    api.create(&PostParams::default(), &a).await.unwrap();
    let got_a = testkit::harness::wait_for(&api, "share-a", WAIT, |s: Option<&Service>| {
        s.is_some_and(|s| !ingress(s).is_empty())
    })
    .await
    .unwrap()
    .unwrap();
    api.create(&PostParams::default(), &b).await.unwrap();
    let got_b = testkit::harness::wait_for(&api, "share-b", WAIT, |s: Option<&Service>| {
        s.is_some_and(|s| !ingress(s).is_empty())
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(ingress(&got_a), ingress(&got_b), "shared address");
    // A third one gets the second address, a fourth finds the pool exhausted.
    api.create(&PostParams::default(), &svc("c", lb(json!({}))))
        .await
        .unwrap();
    let got_c = testkit::harness::wait_for(&api, "c", WAIT, |s: Option<&Service>| {
        s.is_some_and(|s| !ingress(s).is_empty())
    })
    .await
    .unwrap()
    .unwrap();
    assert_ne!(ingress(&got_c), ingress(&got_a));
    api.create(&PostParams::default(), &svc("d", lb(json!({}))))
        .await
        .unwrap();
    let msg = wait_event(&client, ns.name(), "d", "LoadBalancerIPAllocationFailed").await;
    assert!(
        msg.contains("no free address") && msg.contains(&pool_name),
        "{msg}"
    );
    // Pool status counts.
    let pools: Api<LoadBalancerIPPool> = Api::all(client.clone());
    wait_until("pool status", WAIT, || async {
        pools
            .get(&pool_name)
            .await
            .ok()
            .and_then(|p| p.status)
            .is_some_and(|s| s.size == 2 && s.used == 2 && s.free == 0)
    })
    .await
    .expect("pool status shows 2/2 used");
    // Releasing c frees an address for d.
    api.delete("c", &DeleteParams::default()).await.unwrap();
    testkit::harness::wait_for(&api, "d", WAIT, |s: Option<&Service>| {
        s.is_some_and(|s| !ingress(s).is_empty())
    })
    .await
    .expect("d gets the freed address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn controller_killed_mid_burst_leaves_no_duplicates_and_no_leaks() {
    let cidrs = ["10.96.0.0/12"];
    let (env, _ns, api) = setup(&cidrs).await;
    let client = env.client();
    // Request history for the diagnostics of a duplicate.
    if let Some(server) = env.server() {
        server.enable_audit();
    }
    // A claim leaked by an earlier crash: its Service never existed.
    let claims: Api<ServiceIPClaim> = Api::all(client.clone());
    let leaked = ip_claim("10.96.250.250", ("gone", "gone", "no-such-uid"));
    claims
        .create(&PostParams::default(), &leaked)
        .await
        .unwrap();

    let names: Vec<String> = (0..300).map(|i| format!("burst-{i}")).collect();
    let ctl = start_controller(&client, config(&cidrs));
    let creator = {
        let api = api.clone();
        tokio::spawn(async move { create_many(&api, names, 3).await })
    };
    // Kill the controller once it has allocated some, while Services are still arriving.
    let allocated_at_kill = poll("first allocations", || async {
        let n = api
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .iter()
            .filter(|s| !cluster_ips(s).is_empty())
            .count();
        (n >= 30).then_some(n)
    })
    .await;
    drop(ctl);
    let created_at_kill = api.list(&ListParams::default()).await.unwrap().items.len();
    eprintln!("killed with {allocated_at_kill} allocated, {created_at_kill} created of 300");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ctl = start_controller(&client, config(&cidrs));
    creator.await.unwrap();
    let items = all_allocated(&api, 300).await;
    assert_unique_in_range_or_explain(&env, &items, &cidrs).await;
    if env.is_embedded() {
        let want_ports: usize = items.iter().map(|s| node_ports(s).len()).sum();
        wait_until("repair removes leaked claims", WAIT, || async {
            claim_counts(&client).await == (300, want_ports)
        })
        .await
        .expect("no leaked claims after repair");
        // Every ClusterIP is recorded for the Service that uses it (with the count above:
        // nothing else is recorded).
        for s in &items {
            for ip in cluster_ips(s) {
                let holder = cluster_ip_holder(&client, ip.parse().unwrap()).await;
                assert_eq!(
                    holder.map(|h| h.uid),
                    s.metadata.uid.clone(),
                    "ClusterIP {ip} not recorded for its Service"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_controllers_at_once_never_duplicate() {
    let (env, _ns, api) = setup(&[]).await;
    // A small range (254 addresses, 16 in the static band) makes collisions likely where svcnet
    // allocates; on a real control plane the apiserver allocates from its own range and the two
    // controllers race to adopt the values.
    let cidrs = if env.is_embedded() {
        ["10.96.0.0/24"]
    } else {
        ["10.96.0.0/12"]
    };
    let client = env.client();
    // Request history for the diagnostics of a duplicate.
    if let Some(server) = env.server() {
        server.enable_audit();
    }
    let _one = start_controller(&client, config(&cidrs));
    let _two = start_controller(&client, config(&cidrs));
    let names: Vec<String> = (0..200).map(|i| format!("dup-{i}")).collect();
    create_many(&api, names, 4).await;
    let items = all_allocated(&api, 200).await;
    assert_unique_in_range_or_explain(&env, &items, &cidrs).await;
    if env.is_embedded() {
        let want_ports: usize = items.iter().map(|s| node_ports(s).len()).sum();
        wait_until("one claim per value", WAIT, || async {
            claim_counts(&client).await == (200, want_ports)
        })
        .await
        .expect("exactly one claim per allocated value");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_port_protocol_sharing_create_vs_update_and_health_check() {
    let cidrs = ["10.96.0.0/12"];
    let (env, _ns, api) = setup(&cidrs).await;
    let _ctl = start_controller(&env.client(), config(&cidrs));
    // Create: 53/TCP + 53/UDP share one nodePort.
    api.create(
        &PostParams::default(),
        &svc(
            "dns",
            json!({"type": "NodePort", "ports": [
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                {"name": "dns-udp", "port": 53, "protocol": "UDP"}]}),
        ),
    )
    .await
    .unwrap();
    let dns = testkit::harness::wait_for(&api, "dns", WAIT, |s: Option<&Service>| {
        s.is_some_and(|s| node_ports(s).len() == 2)
    })
    .await
    .unwrap()
    .unwrap();
    let np = node_ports(&dns);
    assert_eq!(np[0], np[1], "create shares one nodePort across protocols");
    // Same with a requested ClusterIP (still a create on our side).
    api.create(
        &PostParams::default(),
        &svc(
            "dns2",
            json!({"type": "NodePort", "clusterIP": "10.96.53.53", "ports": [
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                {"name": "dns-udp", "port": 53, "protocol": "UDP"}]}),
        ),
    )
    .await
    .unwrap();
    let dns2 = testkit::harness::wait_for(&api, "dns2", WAIT, |s: Option<&Service>| {
        s.is_some_and(|s| node_ports(s).len() == 2)
    })
    .await
    .unwrap()
    .unwrap();
    let np2 = node_ports(&dns2);
    assert_eq!(np2[0], np2[1], "requested ClusterIP: nodePort still shared");
    assert_ne!(np2[0], np[0]);

    // Update: ClusterIP 80/TCP → NodePort 80/TCP + 80/UDP gets two nodePorts (upstream e2e).
    api.create(&PostParams::default(), &svc("web", json!({})))
        .await
        .unwrap();
    let web = testkit::harness::wait_for(&api, "web", WAIT, |s: Option<&Service>| {
        s.is_some_and(|s| !cluster_ips(s).is_empty())
    })
    .await
    .unwrap()
    .unwrap();
    let mut web = web;
    {
        let spec = web.spec.as_mut().unwrap();
        spec.type_ = Some("NodePort".into());
        let mut udp = spec.ports.as_ref().unwrap()[0].clone();
        udp.name = Some("http-udp".into());
        udp.protocol = Some("UDP".into());
        spec.ports.as_mut().unwrap().push(udp);
    }
    api.replace("web", &PostParams::default(), &web)
        .await
        .unwrap();
    let web = testkit::harness::wait_for(&api, "web", WAIT, |s: Option<&Service>| {
        s.is_some_and(|s| node_ports(s).len() == 2)
    })
    .await
    .unwrap()
    .unwrap();
    let np = node_ports(&web);
    if env.is_embedded() {
        assert_ne!(
            np[0], np[1],
            "update allocates each unset nodePort separately"
        );
    }

    // LoadBalancer + externalTrafficPolicy Local gets a healthCheckNodePort.
    api.create(
        &PostParams::default(),
        &svc(
            "local",
            json!({"type": "LoadBalancer", "loadBalancerClass": "svcnet.io/lb",
                   "externalTrafficPolicy": "Local"}),
        ),
    )
    .await
    .unwrap();
    let local = testkit::harness::wait_for(&api, "local", WAIT, |s: Option<&Service>| {
        s.and_then(|s| s.spec.as_ref())
            .and_then(|s| s.health_check_node_port)
            .is_some()
    })
    .await
    .unwrap()
    .unwrap();
    let hc = local.spec.as_ref().unwrap().health_check_node_port.unwrap();
    assert!((30000..=32767).contains(&hc));
    assert!(!node_ports(&local).contains(&hc));
    if env.is_embedded() {
        let ports: Api<NodePortClaim> = Api::all(env.client());
        let claim = ports.get(&hc.to_string()).await.unwrap();
        assert_eq!(claim.spec.purpose, crds::PortPurpose::HealthCheckNodePort);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_election_hands_over_after_expiry() {
    use k8s_openapi::api::coordination::v1::Lease;
    use runtime::leader::{try_acquire_or_renew, LeaderConfig};
    let env = TestEnv::start().await.expect("test env");
    let ns = env.namespace("lease").await.expect("namespace");
    let api: Api<Lease> = Api::namespaced(env.client(), ns.name());
    let cfg = |id: &str| LeaderConfig {
        namespace: ns.name().to_string(),
        name: "svcnet-controller".into(),
        identity: id.into(),
        lease_duration: Duration::from_secs(1),
        retry_period: Duration::from_millis(100),
    };
    assert!(try_acquire_or_renew(&api, &cfg("a")).await.unwrap());
    assert!(!try_acquire_or_renew(&api, &cfg("b")).await.unwrap());
    assert!(
        try_acquire_or_renew(&api, &cfg("a")).await.unwrap(),
        "renew"
    );
    // a stops renewing; after the lease duration b takes over.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(try_acquire_or_renew(&api, &cfg("b")).await.unwrap());
    assert!(!try_acquire_or_renew(&api, &cfg("a")).await.unwrap());
    let lease = api.get("svcnet-controller").await.unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_problems_are_reported_as_conditions() {
    let cidrs = ["10.96.0.0/12"];
    let (env, ns, api) = setup(&cidrs).await;
    let client = env.client();
    let (bad, a, b) = (
        format!("bad-{}", ns.name()),
        format!("a-{}", ns.name()),
        format!("b-{}", ns.name()),
    );
    create_pool(
        &client,
        ns.name(),
        &bad,
        json!({"cidrs": ["not-a-cidr"], "ranges": [{"start": "198.51.100.9", "stop": "198.51.100.1"}]}),
    )
    .await;
    create_pool(&client, ns.name(), &a, json!({"cidrs": ["203.0.113.0/29"]})).await;
    create_pool(
        &client,
        ns.name(),
        &b,
        json!({"ranges": [{"start": "203.0.113.6", "stop": "203.0.113.9"}], "disabled": true}),
    )
    .await;
    let _ctl = start_controller(&client, config(&cidrs));
    let pools: Api<LoadBalancerIPPool> = Api::all(client.clone());
    let cond = |p: &LoadBalancerIPPool, t: &str| -> Option<(String, String, String)> {
        p.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let got = poll("bad pool not ready", || async {
        let p = pools.get(&bad).await.ok()?;
        cond(&p, "Ready").filter(|c| c.0 == "False")
    })
    .await;
    assert_eq!(got.1, "InvalidRange");
    assert!(
        got.2.contains("not-a-cidr") && got.2.contains("start is after stop"),
        "{}",
        got.2
    );
    let got = poll("overlap reported on a", || async {
        let p = pools.get(&a).await.ok()?;
        cond(&p, "Overlap").filter(|c| c.0 == "True")
    })
    .await;
    assert!(got.2.contains(&b), "{}", got.2);
    let got = poll("disabled pool not ready", || async {
        let p = pools.get(&b).await.ok()?;
        cond(&p, "Ready").filter(|c| c.0 == "False")
    })
    .await;
    assert_eq!(got.1, "Disabled");
    // A Service asking for an address of the disabled pool only is refused with an Event.
    let mut s = svc(
        "wants-b",
        json!({"type": "LoadBalancer", "loadBalancerClass": "svcnet.io/lb"}),
    );
    s.metadata.annotations = Some(BTreeMap::from([(
        "svcnet.io/lb-pool".to_string(),
        b.clone(),
    )]));
    api.create(&PostParams::default(), &s).await.unwrap();
    let msg = wait_event(
        &client,
        ns.name(),
        "wants-b",
        "LoadBalancerIPAllocationFailed",
    )
    .await;
    assert!(
        msg.contains("no LoadBalancerIPPool serves this Service"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_load_balancer_ips_and_shared_release() {
    let cidrs = ["10.96.0.0/12"];
    let (env, ns, api) = setup(&cidrs).await;
    let client = env.client();
    let pool = format!("req-{}", ns.name());
    create_pool(
        &client,
        ns.name(),
        &pool,
        json!({"cidrs": ["198.51.100.0/29"]}),
    )
    .await;
    let _ctl = start_controller(&client, config(&cidrs));
    let lb = |name: &str, ann: &[(&str, &str)], port: i32| {
        let mut s = svc(
            name,
            json!({"type": "LoadBalancer", "loadBalancerClass": "svcnet.io/lb",
                   "ports": [{"port": port}]}),
        );
        s.metadata.annotations = Some(
            ann.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        s
    };
    let has_ingress = |s: Option<&Service>| s.is_some_and(|s| !ingress(s).is_empty());
    // Requested through our annotation.
    api.create(
        &PostParams::default(),
        &lb("r1", &[("svcnet.io/load-balancer-ips", "198.51.100.5")], 80),
    )
    .await
    .unwrap();
    let r1 = testkit::harness::wait_for(&api, "r1", WAIT, has_ingress)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ingress(&r1), vec!["198.51.100.5".to_string()]);
    // Same address, no sharing key: refused with an Event, never substituted.
    api.create(
        &PostParams::default(),
        &lb(
            "r2",
            &[("svcnet.io/load-balancer-ips", "198.51.100.5")],
            443,
        ),
    )
    .await
    .unwrap();
    let msg = wait_event(&client, ns.name(), "r2", "LoadBalancerIPAlreadyAllocated").await;
    assert!(msg.contains("198.51.100.5"), "{msg}");
    assert!(ingress(&api.get("r2").await.unwrap()).is_empty());
    // Outside every pool.
    api.create(
        &PostParams::default(),
        &lb("r3", &[("svcnet.io/load-balancer-ips", "203.0.113.77")], 80),
    )
    .await
    .unwrap();
    let msg = wait_event(&client, ns.name(), "r3", "LoadBalancerIPNotAllowed").await;
    assert!(msg.contains("203.0.113.77"), "{msg}");

    // Shared address: releasing one holder keeps it for the other.
    let key = [("svcnet.io/sharing-key", "team")];
    api.create(&PostParams::default(), &lb("s1", &key, 80))
        .await
        .unwrap();
    let s1 = testkit::harness::wait_for(&api, "s1", WAIT, has_ingress)
        .await
        .unwrap()
        .unwrap();
    api.create(&PostParams::default(), &lb("s2", &key, 8080))
        .await
        .unwrap();
    let s2 = testkit::harness::wait_for(&api, "s2", WAIT, has_ingress)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ingress(&s1), ingress(&s2));
    // A third with a clashing port gets its own address.
    api.create(&PostParams::default(), &lb("s3", &key, 80))
        .await
        .unwrap();
    let s3 = testkit::harness::wait_for(&api, "s3", WAIT, has_ingress)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(ingress(&s3), ingress(&s1));
    let shared: IpAddr = ingress(&s1)[0].parse().unwrap();
    api.delete("s1", &DeleteParams::default()).await.unwrap();
    let claims: Api<ServiceIPClaim> = Api::all(client.clone());
    let name = ServiceIPClaim::name_for(shared);
    poll("s1 removed from the shared claim", || async {
        let c = claims.get_opt(&name).await.ok()??;
        (c.spec.parent_refs.len() == 1 && c.spec.parent_refs[0].name == "s2").then_some(())
    })
    .await;
    assert_eq!(
        ingress(&api.get("s2").await.unwrap()),
        vec![shared.to_string()]
    );
    api.delete("s2", &DeleteParams::default()).await.unwrap();
    poll("shared claim deleted with its last holder", || async {
        claims
            .get_opt(&name)
            .await
            .ok()
            .and_then(|c| c.is_none().then_some(()))
    })
    .await;
}

/// Charts written for MetalLB: its annotations request addresses and share them as svcnet's own
/// do, with MetalLB's rule that `externalTrafficPolicy: Local` never shares with `Cluster`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metallb_annotations_request_and_share_addresses() {
    let cidrs = ["10.96.0.0/12"];
    let (env, ns, api) = setup(&cidrs).await;
    let client = env.client();
    let pool = format!("mlb-{}", ns.name());
    create_pool(
        &client,
        ns.name(),
        &pool,
        json!({"cidrs": ["198.18.0.0/29"]}),
    )
    .await;
    let _ctl = start_controller(&client, config(&cidrs));
    let lb = |name: &str, ann: &[(&str, &str)], port: i32, etp: &str| {
        let mut s = svc(
            name,
            json!({"type": "LoadBalancer", "loadBalancerClass": "svcnet.io/lb",
                   "externalTrafficPolicy": etp, "ports": [{"port": port}]}),
        );
        s.metadata.annotations = Some(
            ann.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        s
    };
    let has_ingress = |s: Option<&Service>| s.is_some_and(|s| !ingress(s).is_empty());
    // A requested address through MetalLB's annotation.
    api.create(
        &PostParams::default(),
        &lb(
            "m1",
            &[("metallb.io/loadBalancerIPs", "198.18.0.5")],
            80,
            "Cluster",
        ),
    )
    .await
    .unwrap();
    let m1 = testkit::harness::wait_for(&api, "m1", WAIT, has_ingress)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ingress(&m1), vec!["198.18.0.5".to_string()]);
    // Same MetalLB sharing key, both Cluster, disjoint ports: one address.
    let key = [("metallb.io/allow-shared-ip", "team")];
    api.create(&PostParams::default(), &lb("m2", &key, 80, "Cluster"))
        .await
        .unwrap();
    let m2 = testkit::harness::wait_for(&api, "m2", WAIT, has_ingress)
        .await
        .unwrap()
        .unwrap();
    api.create(&PostParams::default(), &lb("m3", &key, 443, "Cluster"))
        .await
        .unwrap();
    let m3 = testkit::harness::wait_for(&api, "m3", WAIT, has_ingress)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ingress(&m2), ingress(&m3), "shared address");
    assert_ne!(ingress(&m2), ingress(&m1));
    let claims: Api<ServiceIPClaim> = Api::all(client.clone());
    let shared: IpAddr = ingress(&m2)[0].parse().unwrap();
    let claim = claims.get(&ServiceIPClaim::name_for(shared)).await.unwrap();
    assert_eq!(claim.spec.parent_refs.len(), 2);
    assert_eq!(claim.spec.sharing_key.as_deref(), Some("team"));
    // Same key and free ports, but Local: an address of its own.
    api.create(&PostParams::default(), &lb("m4", &key, 8080, "Local"))
        .await
        .unwrap();
    let m4 = testkit::harness::wait_for(&api, "m4", WAIT, has_ingress)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(ingress(&m4), ingress(&m2));
    // A bad value is reported under the annotation that carried it.
    api.create(
        &PostParams::default(),
        &lb(
            "m5",
            &[("metallb.universe.tf/loadBalancerIPs", "not-an-ip")],
            80,
            "Cluster",
        ),
    )
    .await
    .unwrap();
    let msg = wait_event(&client, ns.name(), "m5", "LoadBalancerIPNotValid").await;
    assert!(msg.contains("metallb.universe.tf/loadBalancerIPs"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_claims_are_repaired_with_an_event() {
    let cidrs = ["10.96.0.0/12"];
    let (env, ns, api) = setup(&cidrs).await;
    if !env.is_embedded() {
        return;
    }
    let client = env.client();
    let _ctl = start_controller(&client, config(&cidrs));
    api.create(
        &PostParams::default(),
        &svc("web", json!({"type": "NodePort"})),
    )
    .await
    .unwrap();
    let web = all_allocated(&api, 1).await.remove(0);
    let ip: IpAddr = cluster_ips(&web)[0].parse().unwrap();
    let port = u16::try_from(node_ports(&web)[0]).unwrap();
    // Someone deletes the records behind our back.
    let ports: Api<NodePortClaim> = Api::all(client.clone());
    delete_cluster_ip_record(&client, ip).await;
    ports
        .delete(&NodePortClaim::name_for(port), &DeleteParams::default())
        .await
        .unwrap();
    let msg = wait_event(&client, ns.name(), "web", "ClusterIPNotAllocated").await;
    assert!(msg.contains(&ip.to_string()), "{msg}");
    let msg = wait_event(&client, ns.name(), "web", "PortNotAllocated").await;
    assert!(msg.contains(&port.to_string()), "{msg}");
    poll("claims recreated for the Service", || async {
        let c = cluster_ip_holder(&client, ip).await?;
        let p = ports.get_opt(&NodePortClaim::name_for(port)).await.ok()??;
        (c.name == "web" && p.spec.parent_ref.name == "web").then_some(())
    })
    .await;
    // The Service kept its values.
    let again = api.get("web").await.unwrap();
    assert_eq!(cluster_ips(&again), cluster_ips(&web));
    assert_eq!(node_ports(&again), node_ports(&web));
}

/// A ClusterIP claim on `ip` held by `holder` (namespace, name, UID), as a replica writes it
/// before it writes the Service.
fn ip_claim(ip: &str, holder: (&str, &str, &str)) -> ServiceIPClaim {
    serde_json::from_value(json!({
        "apiVersion": "svcnet.io/v1alpha1", "kind": "ServiceIPClaim",
        "metadata": {"name": ip, "labels": {"svcnet.io/managed-by": "svcnet-ipam-controller"}},
        "spec": {"ip": ip, "purpose": "ClusterIP",
                 "parentRefs": [{"namespace": holder.0, "name": holder.1, "uid": holder.2}]}
    }))
    .expect("valid claim")
}

/// Creates a claim held by a Service that never existed and waits until repair releases it:
/// when this returns, repair has completed a pass that released claims of that age.
async fn repair_pass_completed(claims: &Api<ServiceIPClaim>, ip: &str) {
    claims
        .create(
            &PostParams::default(),
            &ip_claim(ip, ("gone", "gone", "no-such-uid")),
        )
        .await
        .expect("create marker claim");
    wait_until("repair releases the marker claim", WAIT, || async {
        claims.get_opt(ip).await.is_ok_and(|c| c.is_none())
    })
    .await
    .expect("marker claim released");
}

/// Regression test for the duplicate ClusterIP seen once in
/// `two_controllers_at_once_never_duplicate`. A reconcile — in this replica, or in another one
/// during a leader hand-over — creates a claim and then writes the Service. Repair used to treat
/// a claim whose holder lives but does not reference the value as leaked; when the Service write
/// was slow (load, conflict retries, a restarted replica reusing the claim), repair read the
/// Service, deleted the claim, the write landed, and the address — now without a claim — was
/// handed to another Service.
///
/// Here the test plays the replica whose write has not landed: it claims 10.96.7.7 for a live
/// Service whose own reconcile cannot finish (RequireDualStack on a single-stack range keeps it
/// from writing anything), waits until repair has released claims of the same age twice over
/// (held by a Service that never existed), then writes the Service. The claim must survive as
/// the same object throughout. Embedded server only (a real apiserver allocates ClusterIPs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_never_releases_a_claim_whose_holder_lives() {
    let cidrs = ["10.96.0.0/12"];
    let (env, ns, api) = setup(&cidrs).await;
    if !env.is_embedded() {
        return;
    }
    let client = env.client();
    let _ctl = start_controller(&client, config(&cidrs));
    api.create(
        &PostParams::default(),
        &svc("pending", json!({"ipFamilyPolicy": "RequireDualStack"})),
    )
    .await
    .unwrap();
    wait_event(&client, ns.name(), "pending", "InvalidSpec").await;
    let uid = api.get("pending").await.unwrap().metadata.uid.expect("uid");
    let claims: Api<ServiceIPClaim> = Api::all(client.clone());
    let held = claims
        .create(
            &PostParams::default(),
            &ip_claim("10.96.7.7", (ns.name(), "pending", &uid)),
        )
        .await
        .unwrap();
    // Two complete repair passes over claims at least as old and as often seen as this one.
    repair_pass_completed(&claims, "10.96.7.8").await;
    repair_pass_completed(&claims, "10.96.7.9").await;
    let still = claims
        .get_opt("10.96.7.7")
        .await
        .unwrap()
        .expect("repair must not release a claim whose holder lives");
    assert_eq!(
        still.metadata.uid, held.metadata.uid,
        "the same claim object"
    );
    assert_eq!(still.spec.parent_refs[0].uid, uid);

    // The slow write lands.
    let mut pending = api.get("pending").await.unwrap();
    let spec = pending.spec.as_mut().expect("spec");
    spec.ip_family_policy = Some("SingleStack".into());
    spec.ip_families = Some(vec!["IPv4".into()]);
    spec.cluster_ip = Some("10.96.7.7".into());
    spec.cluster_ips = Some(vec!["10.96.7.7".into()]);
    api.replace("pending", &PostParams::default(), &pending)
        .await
        .unwrap();
    repair_pass_completed(&claims, "10.96.7.10").await;
    let after = claims.get("10.96.7.7").await.unwrap();
    assert_eq!(
        after.metadata.uid, held.metadata.uid,
        "the same claim object"
    );
    assert_eq!(after.spec.parent_refs.len(), 1);
    assert_eq!(after.spec.parent_refs[0].uid, uid);
    let events = events_for(&client, ns.name(), "pending").await;
    assert!(
        !events.iter().any(|(r, _)| r == "ClusterIPAlreadyAllocated"),
        "{events:?}"
    );
}
