//! IPAM on upstream's allocation API (`networking.k8s.io/v1` IPAddress and ServiceCIDR): the
//! ClusterIP ledger, ranges added and removed at run time with their lifecycle, the migration of
//! an older version's ServiceIPClaims, and another allocator's IPAddresses respected.
//!
//! Runs on the embedded server (which serves both types) and on a real control plane; a
//! kube-apiserver older than 1.33 serves neither, and there the tests check the fallback (claims
//! and the flag) and say the rest was skipped. No root needed.

// Test code: unwrap/expect failures are test failures.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use crds::{IpPurpose, ServiceIPClaim};
use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{IPAddress, ServiceCIDR};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use testkit::harness::{wait_until, TestEnv};

mod common_ipam;
use common_ipam::*;

const FINALIZER: &str = "networking.k8s.io/service-cidr-finalizer";

async fn skip_unless_served(env: &TestEnv, test: &str) -> bool {
    if serves_addresses(&env.client()).await {
        return false;
    }
    let version = env
        .client()
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .unwrap_or_default();
    eprintln!(
        "{test}: skipped: the API server ({version}) does not serve networking.k8s.io/v1 \
         servicecidrs / ipaddresses"
    );
    true
}

/// The test's control plane and namespace, when it serves the types (`None`: skipped, said).
async fn served_setup(
    cidrs: &[&str],
    test: &str,
) -> Option<(
    TestEnv,
    testkit::harness::TestNamespace,
    Api<Service>,
    Client,
)> {
    let (env, ns, api) = setup(cidrs).await;
    let client = env.client();
    if skip_unless_served(&env, test).await {
        return None;
    }
    Some((env, ns, api, client))
}

fn ready_of(c: &ServiceCIDR) -> Option<(String, String)> {
    c.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

async fn service_cidr(client: &Client, name: &str, cidrs: &[&str]) {
    let api: Api<ServiceCIDR> = Api::all(client.clone());
    let obj: ServiceCIDR = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
        "metadata": {"name": name}, "spec": {"cidrs": cidrs},
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
}

async fn allocated_ip(api: &Api<Service>, name: &str) -> IpAddr {
    let s = testkit::harness::wait_for(api, name, WAIT, |s: Option<&Service>| {
        s.is_some_and(|s| !cluster_ips(s).is_empty())
    })
    .await
    .unwrap()
    .unwrap();
    cluster_ips(&s)[0].parse().unwrap()
}

/// ClusterIPs recorded as IPAddresses for their Service; ranges from ServiceCIDRs — the default
/// one made from the flag, another added at run time (a requested address in it, refused
/// before, is then given), deleted while an address in it is held (kept, `Ready=False`
/// `Terminating`, nothing new allocated from it), gone once the address is released. On a
/// control plane without the types: ServiceIPClaims and the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ips_are_ipaddresses_and_service_cidrs_give_the_ranges() {
    // The harness's real control plane allocates from 10.96.0.0/12.
    let cidrs = ["10.96.0.0/12"];
    let (env, ns, api) = setup(&cidrs).await;
    let client = env.client();
    let _ctl = start_controller(&client, config(&cidrs));
    api.create(&PostParams::default(), &svc("a", json!({})))
        .await
        .unwrap();
    let ip_a = allocated_ip(&api, "a").await;
    let uid_a = api.get("a").await.unwrap().metadata.uid.unwrap();
    if skip_unless_served(&env, "ServiceCIDR ranges").await {
        // The fallback: a claim records the address, for this Service.
        wait_until("a claim for a's ClusterIP", WAIT, || async {
            cluster_ip_holder(&client, ip_a)
                .await
                .is_some_and(|h| h.uid == uid_a)
        })
        .await
        .unwrap();
        return;
    }
    let addrs: Api<IPAddress> = Api::all(client.clone());
    let cidr_api: Api<ServiceCIDR> = Api::all(client.clone());
    // The default ServiceCIDR, from the flag, with the finalizer and Ready.
    wait_until("the default ServiceCIDR, ready", WAIT, || async {
        cidr_api
            .get_opt("kubernetes")
            .await
            .ok()
            .flatten()
            .is_some_and(|c| {
                c.spec.as_ref().and_then(|s| s.cidrs.clone()) == Some(vec!["10.96.0.0/12".into()])
                    && c.finalizers().iter().any(|f| f == FINALIZER)
                    && ready_of(&c) == Some(("True".into(), String::new()))
            })
    })
    .await
    .expect("default ServiceCIDR created from --service-cluster-ip-range");
    // a's address: an IPAddress of ours naming a, and no claim.
    let a = addrs.get(&ip_a.to_string()).await.unwrap();
    assert_eq!(
        a.labels()
            .get("ipaddress.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("ipam.svcnet.io")
    );
    assert_eq!(
        a.labels()
            .get("ipaddress.kubernetes.io/ip-family")
            .map(String::as_str),
        Some("IPv4")
    );
    let parent = &a.spec.as_ref().unwrap().parent_ref;
    assert_eq!(parent.resource, "services");
    assert_eq!(parent.namespace.as_deref(), Some(ns.name()));
    assert_eq!(parent.name, "a");
    let claims: Api<ServiceIPClaim> = Api::all(client.clone());
    assert!(claims
        .get_opt(&ServiceIPClaim::name_for(ip_a))
        .await
        .unwrap()
        .is_none());

    // An address outside every ServiceCIDR is refused ...
    api.create(
        &PostParams::default(),
        &svc("b", json!({"clusterIP": "10.200.0.10"})),
    )
    .await
    .unwrap();
    let msg = wait_event(&client, ns.name(), "b", "ClusterIPOutOfRange").await;
    assert!(msg.contains("10.96.0.0/12"), "{msg}");
    // ... until an admin adds a range holding it.
    service_cidr(&client, "extra", &["10.200.0.0/24"]).await;
    wait_until("b's IPAddress", WAIT, || async {
        cluster_ip_holder(&client, "10.200.0.10".parse().unwrap())
            .await
            .is_some_and(|h| h.name == "b")
    })
    .await
    .expect("the added range serves b");
    wait_until("extra gets the finalizer and Ready", WAIT, || async {
        cidr_api
            .get_opt("extra")
            .await
            .ok()
            .flatten()
            .is_some_and(|c| {
                c.finalizers().iter().any(|f| f == FINALIZER)
                    && ready_of(&c) == Some(("True".into(), String::new()))
            })
    })
    .await
    .unwrap();

    // Deleted while b holds an address only it contains: kept, Terminating.
    cidr_api
        .delete("extra", &DeleteParams::default())
        .await
        .unwrap();
    wait_until("extra Terminating", WAIT, || async {
        cidr_api
            .get_opt("extra")
            .await
            .ok()
            .flatten()
            .is_some_and(|c| {
                c.metadata.deletion_timestamp.is_some()
                    && ready_of(&c) == Some(("False".into(), "Terminating".into()))
            })
    })
    .await
    .expect("a ServiceCIDR with held addresses stays, Ready=False/Terminating");
    // Nothing new comes from a terminating range.
    api.create(
        &PostParams::default(),
        &svc("c", json!({"clusterIP": "10.200.0.11"})),
    )
    .await
    .unwrap();
    wait_event(&client, ns.name(), "c", "ClusterIPOutOfRange").await;
    api.delete("c", &DeleteParams::default()).await.unwrap();
    assert!(cluster_ip_holder(&client, "10.200.0.11".parse().unwrap())
        .await
        .is_none());
    // b goes: its IPAddress goes, and then the ServiceCIDR (after the deletion grace).
    api.delete("b", &DeleteParams::default()).await.unwrap();
    wait_until("b's IPAddress released", WAIT, || async {
        cluster_ip_holder(&client, "10.200.0.10".parse().unwrap())
            .await
            .is_none()
    })
    .await
    .unwrap();
    wait_until("extra gone", WAIT, || async {
        cidr_api.get_opt("extra").await.is_ok_and(|c| c.is_none())
    })
    .await
    .expect("an empty deleted ServiceCIDR goes");
    // a is untouched; deleting it releases its IPAddress.
    assert_eq!(cluster_ip_holder(&client, ip_a).await.unwrap().uid, uid_a);
    api.delete("a", &DeleteParams::default()).await.unwrap();
    wait_until("a's IPAddress released", WAIT, || async {
        cluster_ip_holder(&client, ip_a).await.is_none()
    })
    .await
    .unwrap();
}

/// A ClusterIP claim as an older svcnet wrote it.
fn old_claim(ip: &str, ns: &str, name: &str, uid: &str) -> ServiceIPClaim {
    serde_json::from_value(json!({
        "apiVersion": "svcnet.io/v1alpha1", "kind": "ServiceIPClaim",
        "metadata": {"name": ip, "labels": {"svcnet.io/managed-by": "svcnet-ipam-controller",
            "svcnet.io/purpose": "ClusterIP", "svcnet.io/ip-family": "IPv4"}},
        "spec": {"ip": ip, "purpose": "ClusterIP",
                 "parentRefs": [{"namespace": ns, "name": name, "uid": uid}]}
    }))
    .unwrap()
}

/// An older version's ledger: 120 Services holding ClusterIPs through ServiceIPClaims in a
/// /24. The new controller starts while 130 more Services arrive, competing for the same 254
/// addresses: every claim becomes an IPAddress for the same Service, no claim is left, and no
/// address is given twice — a gap (a claim deleted before its IPAddress exists, or an allocation
/// before the migration ended) would hand an old address to a new Service.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_of_an_older_version_migrate_without_a_gap() {
    let cidrs = ["10.96.0.0/24"];
    let Some((_env, ns, api, client)) = served_setup(&cidrs, "claim migration").await else {
        return;
    };
    let claims: Api<ServiceIPClaim> = Api::all(client.clone());
    // Every other address of the range, so new picks land between them.
    let old: Vec<String> = (0..120).map(|i| format!("10.96.0.{}", 2 + 2 * i)).collect();
    stream::iter(old.iter().enumerate())
        .for_each_concurrent(16, |(i, ip)| {
            let (api, claims, ns) = (api.clone(), claims.clone(), ns.name().to_string());
            async move {
                let name = format!("old-{i}");
                let s = api
                    .create(
                        &PostParams::default(),
                        &svc(&name, json!({"clusterIP": ip})),
                    )
                    .await
                    .unwrap();
                let uid = s.metadata.uid.unwrap();
                claims
                    .create(&PostParams::default(), &old_claim(ip, &ns, &name, &uid))
                    .await
                    .unwrap();
            }
        })
        .await;
    let _ctl = start_controller(&client, config(&cidrs));
    let names: Vec<String> = (0..130).map(|i| format!("new-{i}")).collect();
    stream::iter(names)
        .for_each_concurrent(16, |name| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &svc(&name, json!({})))
                    .await
                    .unwrap();
            }
        })
        .await;
    let items = poll("250 Services with a ClusterIP", || async {
        let items = api.list(&ListParams::default()).await.ok()?.items;
        (items.len() == 250 && items.iter().all(|s| !cluster_ips(s).is_empty())).then_some(items)
    })
    .await;
    let mut seen = HashSet::new();
    for s in &items {
        for ip in cluster_ips(s) {
            assert!(seen.insert(ip.clone()), "{ip} given twice");
        }
    }
    // Old Services kept their addresses.
    for (i, ip) in old.iter().enumerate() {
        let s = items
            .iter()
            .find(|s| s.name_any() == format!("old-{i}"))
            .unwrap();
        assert_eq!(cluster_ips(s), std::slice::from_ref(ip));
    }
    wait_until("no ClusterIP claim left", WAIT, || async {
        claims.list(&ListParams::default()).await.is_ok_and(|l| {
            !l.items
                .iter()
                .any(|c| c.spec.purpose == IpPurpose::ClusterIP)
        })
    })
    .await
    .expect("every ClusterIP claim migrated");
    for s in &items {
        let ip: IpAddr = cluster_ips(s)[0].parse().unwrap();
        let holder = cluster_ip_holder(&client, ip).await;
        assert_eq!(
            holder.map(|h| h.uid),
            s.metadata.uid.clone(),
            "{ip}: one IPAddress, for the Service using it"
        );
    }
    let addrs: Api<IPAddress> = Api::all(client.clone());
    assert_eq!(
        addrs
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        250
    );
}

/// kube-apiserver (1.33+) records the ClusterIPs it allocates as IPAddresses of its own. Such an
/// object is a hold like any other — the Service using it is adopted without a conflict, a
/// second Service asking for the address is refused — and it is never changed or deleted
/// here, not even when its Service is gone (kube-apiserver's own repair owns it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_allocators_ipaddresses_are_respected() {
    let cidrs = ["10.96.0.0/16"];
    let Some((_env, ns, api, client)) = served_setup(&cidrs, "foreign IPAddresses").await else {
        return;
    };
    let addrs: Api<IPAddress> = Api::all(client.clone());
    api.create(
        &PostParams::default(),
        &svc("theirs", json!({"clusterIP": "10.96.9.9"})),
    )
    .await
    .unwrap();
    let foreign: IPAddress = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IPAddress",
        "metadata": {"name": "10.96.9.9", "labels": {
            "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io",
            "ipaddress.kubernetes.io/ip-family": "IPv4"}},
        "spec": {"parentRef": {"group": "", "resource": "services",
            "namespace": ns.name(), "name": "theirs"}},
    }))
    .unwrap();
    let created = addrs
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let _ctl = start_controller(&client, config(&cidrs));
    api.create(
        &PostParams::default(),
        &svc("rival", json!({"clusterIP": "10.96.9.9"})),
    )
    .await
    .unwrap();
    let msg = wait_event(&client, ns.name(), "rival", "ClusterIPAlreadyAllocated").await;
    assert!(msg.contains(&format!("{}/theirs", ns.name())), "{msg}");
    // A Service allocated meanwhile proves the controller has processed the queue.
    api.create(&PostParams::default(), &svc("probe", json!({})))
        .await
        .unwrap();
    allocated_ip(&api, "probe").await;
    let events = events_for(&client, ns.name(), "theirs").await;
    assert!(
        !events.iter().any(|(r, _)| r.starts_with("ClusterIP")),
        "the Service holding the foreign IPAddress is adopted quietly: {events:?}"
    );
    api.delete("theirs", &DeleteParams::default())
        .await
        .unwrap();
    api.delete("rival", &DeleteParams::default()).await.unwrap();
    // Several repair passes (300 ms apart, leaks released after 1 s): still there, unchanged.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now = addrs.get("10.96.9.9").await.unwrap();
    assert_eq!(now.metadata.uid, created.metadata.uid);
    assert_eq!(
        now.metadata.resource_version,
        created.metadata.resource_version
    );
}
