//! Shared helpers of the IPAM test binaries (`ipam_e2e`, `ipam_servicecidr`): the CRDs, an
//! in-process controller, Service builders, polling, and the ClusterIP ledger as the control
//! plane records it (IPAddress objects where the API serves them, ServiceIPClaims otherwise).

// Test helpers unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used, dead_code)]

use std::net::IpAddr;
use std::time::Duration;

use controllers::ipam::{Ipam, IpamConfig, IpamMetrics};
use crds::{LoadBalancerIPPool, NodePortClaim, ServiceIPClaim};
use k8s_openapi::api::core::v1::{Event, Service};
use k8s_openapi::api::networking::v1::IPAddress;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use runtime::admin::ReadyFlag;
use serde_json::json;
use testkit::harness::{wait_until, TestEnv};
use tokio::task::JoinHandle;

pub const WAIT: Duration = Duration::from_secs(60);

pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds::all() {
        match api.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("installing CRD: {e}"),
        }
    }
    let claims: Api<ServiceIPClaim> = Api::all(client.clone());
    let pools: Api<LoadBalancerIPPool> = Api::all(client.clone());
    let ports: Api<NodePortClaim> = Api::all(client.clone());
    wait_until("CRDs served", WAIT, || async {
        claims.list(&ListParams::default()).await.is_ok()
            && pools.list(&ListParams::default()).await.is_ok()
            && ports.list(&ListParams::default()).await.is_ok()
    })
    .await
    .expect("CRDs are served");
}

pub fn config(cidrs: &[&str]) -> IpamConfig {
    IpamConfig {
        service_cidrs: cidrs
            .iter()
            .map(|c| c.parse().expect("valid CIDR"))
            .collect(),
        default_lb_class: false,
        workers: 8,
        repair_interval: Duration::from_millis(300),
        leak_grace: Duration::from_secs(1),
        ..Default::default()
    }
}

/// A running in-process controller; aborted (like a crash) when dropped.
pub struct Controller(pub JoinHandle<()>);

impl Drop for Controller {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub fn start_controller(client: &Client, cfg: IpamConfig) -> Controller {
    let ipam = Ipam::new(client.clone(), cfg, IpamMetrics::default()).expect("valid config");
    let handle = tokio::spawn(async move {
        let _ = controllers::ipam::run(ipam, ReadyFlag::detached("ipam")).await;
    });
    Controller(handle)
}

pub async fn setup(cidrs: &[&str]) -> (TestEnv, testkit::harness::TestNamespace, Api<Service>) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let env = TestEnv::start().await.expect("test env");
    install_crds(&env.client()).await;
    let ns = env.namespace("ipam").await.expect("namespace");
    let api: Api<Service> = Api::namespaced(env.client(), ns.name());
    let _ = cidrs;
    (env, ns, api)
}

pub fn svc(name: &str, spec: serde_json::Value) -> Service {
    let mut spec = spec;
    if spec.get("ports").is_none() && spec.get("type") != Some(&json!("ExternalName")) {
        spec["ports"] = json!([{"name": "http", "port": 80, "protocol": "TCP"}]);
    }
    if spec.get("selector").is_none() {
        spec["selector"] = json!({"app": name});
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("valid service")
}

pub fn cluster_ips(s: &Service) -> Vec<String> {
    s.spec
        .as_ref()
        .and_then(|s| s.cluster_ips.clone())
        .unwrap_or_default()
}

pub fn node_ports(s: &Service) -> Vec<i32> {
    s.spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.node_port)
        .collect()
}

pub async fn events_for(client: &Client, ns: &str, name: &str) -> Vec<(String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// Polls `f` every 50 ms until it yields a value, or panics after [`WAIT`].
pub async fn poll<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn wait_event(client: &Client, ns: &str, name: &str, reason: &str) -> String {
    poll(&format!("event {reason} on {name}"), || async {
        events_for(client, ns, name)
            .await
            .into_iter()
            .find(|(r, _)| r == reason)
            .map(|(_, m)| m)
    })
    .await
}

pub async fn all_allocated(api: &Api<Service>, n: usize) -> Vec<Service> {
    poll(&format!("{n} services allocated"), || async {
        let items = api.list(&ListParams::default()).await.ok()?.items;
        let done = items.len() == n
            && items.iter().all(|s| {
                let spec = s.spec.as_ref();
                !cluster_ips(s).is_empty()
                    && (spec.and_then(|s| s.type_.as_deref()) != Some("NodePort")
                        || node_ports(s).len()
                            == spec.and_then(|s| s.ports.as_ref()).map_or(0, Vec::len))
            });
        done.then_some(items)
    })
    .await
}

/// `addr` inside `cidr` ("a.b.c.d/n" or IPv6).
pub fn in_cidr(addr: IpAddr, cidr: &str) -> bool {
    let (net, len) = cidr.split_once('/').expect("CIDR");
    let net: IpAddr = net.parse().expect("network");
    let len: u32 = len.parse().expect("prefix");
    let bits = |ip: IpAddr| -> (u128, u32) {
        match ip {
            IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
            IpAddr::V6(v) => (u128::from(v), 128),
        }
    };
    let ((a, wa), (n, wn)) = (bits(addr), bits(net));
    if wa != wn {
        return false;
    }
    let shift = wa - len;
    shift >= 128 || (a >> shift) == (n >> shift)
}

/// A ClusterIP's holder as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub namespace: String,
    pub name: String,
    /// Empty where the record names the Service only by name (another allocator's IPAddress).
    pub uid: String,
}

/// Whether the control plane serves IPAddress / ServiceCIDR (the controller then records
/// ClusterIPs as IPAddress objects).
pub async fn serves_addresses(client: &Client) -> bool {
    controllers::ipam::addresses::api_serves_addresses(client)
        .await
        .expect("discovery answers")
}

/// The holder of ClusterIP `ip` in the ledger in use; `None` when nothing records it.
pub async fn cluster_ip_holder(client: &Client, ip: IpAddr) -> Option<Holder> {
    if serves_addresses(client).await {
        let api: Api<IPAddress> = Api::all(client.clone());
        let a = api.get_opt(&ip.to_string()).await.ok()??;
        let (_, info) = controllers::ipam::addresses::info_of(&a)?;
        let p = info.parents.first()?;
        return Some(Holder {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            uid: p.uid.clone(),
        });
    }
    let api: Api<ServiceIPClaim> = Api::all(client.clone());
    let c = api.get_opt(&ServiceIPClaim::name_for(ip)).await.ok()??;
    let p = c.spec.parent_refs.first()?;
    Some(Holder {
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        uid: p.uid.clone(),
    })
}

/// Deletes the ledger's record of ClusterIP `ip` (as an operator or another component might).
pub async fn delete_cluster_ip_record(client: &Client, ip: IpAddr) {
    if serves_addresses(client).await {
        let api: Api<IPAddress> = Api::all(client.clone());
        api.delete(&ip.to_string(), &DeleteParams::default())
            .await
            .unwrap();
    } else {
        let api: Api<ServiceIPClaim> = Api::all(client.clone());
        api.delete(&ServiceIPClaim::name_for(ip), &DeleteParams::default())
            .await
            .unwrap();
    }
}

/// Records of allocated addresses: (ClusterIPs and LoadBalancer IPs, node ports).
pub async fn claim_counts(client: &Client) -> (usize, usize) {
    let ips: Api<ServiceIPClaim> = Api::all(client.clone());
    let ports: Api<NodePortClaim> = Api::all(client.clone());
    let claims = ips.list(&ListParams::default()).await.map(|l| l.items);
    let Ok(claims) = claims else {
        return (usize::MAX, usize::MAX);
    };
    let mut n = claims.len();
    if serves_addresses(client).await {
        // ClusterIPs are IPAddresses there: a ClusterIP claim left beside its IPAddress counts
        // twice and fails the caller's count.
        let addrs: Api<IPAddress> = Api::all(client.clone());
        n += addrs
            .list(&ListParams::default())
            .await
            .map(|l| l.items.len())
            .unwrap_or(usize::MAX / 2);
    }
    (
        n,
        ports
            .list(&ListParams::default())
            .await
            .map(|l| l.items.len())
            .unwrap_or(usize::MAX),
    )
}
