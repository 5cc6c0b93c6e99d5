//! The L2 announcement lab shared by `dataplane_l2` and the failover benchmark: a three-node
//! cluster whose LoadBalancer addresses lie inside the LAN prefix, so that the outside client
//! reaches them only through the node that answers ARP / NDP for them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crds::{L2Announcement, LoadBalancerIPPool};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;
use testkit::harness::TestEnv;
use testkit::netns::{EchoPorts, Outcome, Process, Proto};

use super::{
    builder, create_nodes, node_kubeconfig, sa, slice, start_proxy_run, typed, Cluster, Ep,
};

/// The dual-stack Service's addresses.
pub const LB4: &str = "192.168.200.200";
pub const LB6: &str = "fd00:200::200";
/// The externalTrafficPolicy Local Service's address.
pub const LOCAL4: &str = "192.168.200.201";
/// The echo port.
pub const TCP: &[(&str, u16, &str)] = &[("http", 8080, "TCP")];
/// Longest wait for a Lease or an answer to change (several lease durations).
pub const SETTLE: Duration = Duration::from_secs(20);

/// Installs svcnet's CRDs and waits until they are served.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds::all() {
        match api.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("installing CRD: {e}"),
        }
    }
    let pools: Api<LoadBalancerIPPool> = Api::all(client.clone());
    let l2: Api<L2Announcement> = Api::all(client.clone());
    let deadline = Instant::now() + SETTLE;
    while pools.list(&ListParams::default()).await.is_err()
        || l2.list(&ListParams::default()).await.is_err()
    {
        assert!(Instant::now() < deadline, "CRDs not served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A LoadBalancer Service `name` in the request's namespace, selected by the test's
/// L2Announcement (label `l2: announce`), with `status.loadBalancer.ingress` = `ingress` (set
/// directly: no controller runs here).
pub async fn create_lb(api: &Api<Service>, name: &str, spec: serde_json::Value, ingress: &[&str]) {
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": {"l2": "announce"}},
        "spec": spec,
    }))
    .unwrap();
    api.create(&PostParams::default(), &svc).await.unwrap();
    let ingress: Vec<_> = ingress.iter().map(|ip| json!({"ip": ip})).collect();
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": ingress}}})),
    )
    .await
    .unwrap();
}

/// Replaces (or creates) EndpointSlice `name` of Service `svc` with `eps`.
pub async fn put_slice(api: &Api<EndpointSlice>, name: &str, svc: &str, eps: &[Ep]) {
    let mut s: EndpointSlice = typed(&slice(name, svc, TCP, eps));
    s.metadata.namespace = None;
    match api.get_opt(name).await.unwrap() {
        None => {
            api.create(&PostParams::default(), &s).await.unwrap();
        }
        Some(cur) => {
            s.metadata.resource_version = cur.metadata.resource_version;
            api.replace(name, &PostParams::default(), &s).await.unwrap();
        }
    }
}

/// The node the address Lease of `ip` names (`None`: no Lease, or released).
pub async fn holder(leases: &Api<Lease>, ip: &str) -> Option<String> {
    let ip: IpAddr = ip.parse().unwrap();
    leases
        .get_opt(&crds::l2::address_lease_name(ip))
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

/// Polls the address Lease of `ip` until `ok` accepts its holder; returns it.
pub async fn wait_holder(
    leases: &Api<Lease>,
    ip: &str,
    what: &str,
    ok: impl Fn(&Option<String>) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let h = holder(leases, ip).await;
        if ok(&h) {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the Lease of {ip} names {h:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The MAC of `dev` in `ns`, lower-case.
pub fn mac_of(ns: &testkit::netns::Netns, dev: &str) -> String {
    ns.run("cat", [format!("/sys/class/net/{dev}/address")])
        .unwrap()
        .trim()
        .to_lowercase()
}

/// MACs found in `text` (`aa:bb:cc:dd:ee:ff`, any case), lower-cased, in order.
pub fn macs_in(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == ':'))
        .filter(|w| w.len() == 17 && w.matches(':').count() == 5)
        .map(str::to_lowercase)
        .collect()
}

/// The MAC the outside client's neighbour table holds for `ip` (`None` without a usable entry).
pub fn neighbour(c: &Cluster, ip: &str) -> Option<String> {
    let out = c
        .topo
        .outside()
        .unwrap()
        .netns()
        .run("ip", ["neigh", "show", "to", ip, "dev", "eth0"])
        .unwrap();
    if out.contains("FAILED") || out.contains("INCOMPLETE") {
        return None;
    }
    macs_in(&out).into_iter().next()
}

/// One TCP attempt from the outside client to `ip`:80.
pub fn connect(c: &Cluster, ip: &str) -> Outcome {
    let ip: IpAddr = ip.parse().unwrap();
    c.topo
        .client(c.topo.outside().unwrap(), Proto::Tcp, sa(ip, 80))
        .unwrap()
}

/// The answering pod of a reply.
pub fn replied(o: &Outcome) -> Option<&str> {
    match o {
        Outcome::Replied { pod, .. } => Some(pod),
        _ => None,
    }
}

/// The lab: three nodes with one echo pod each (`web-1`..`web-3`), one outside client on the
/// LAN, a pool holding `192.168.200.200/30` and `fd00:200::200/126`, an L2Announcement of the
/// Services labelled `l2: announce` from that pool, and `svcnet-proxy run --l2-announce` on every
/// node with its Leases in the test namespace.
pub struct Lab {
    /// The namespaces.
    pub c: Cluster,
    /// `svcnet-proxy run` per node name.
    pub proxies: BTreeMap<String, Process>,
    /// Node name per LAN MAC.
    pub macs: BTreeMap<String, String>,
    /// Services of the test namespace.
    pub services: Api<Service>,
    /// EndpointSlices of the test namespace.
    pub slices: Api<EndpointSlice>,
    /// Leases of the test namespace (where the proxies keep theirs).
    pub leases: Api<Lease>,
    /// The name of the pool and of the L2Announcement.
    pub name: String,
    client: Client,
    kubeconfig: PathBuf,
    proxy_flags: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Lab {
    /// Builds the lab in namespace `ns` of `env`; `extra` flags go to every proxy (e.g. a
    /// shorter `--l2-lease-duration`).
    pub async fn start(env: &TestEnv, ns: &str, extra: &[&str]) -> Lab {
        let client = env.client();
        install_crds(&client).await;
        let c = tokio::task::block_in_place(|| {
            Cluster::new(
                builder()
                    .nodes(3)
                    .outside_clients(1)
                    .echo_ports(EchoPorts::new(&[8080], &[]))
                    .pod("web-1", 1)
                    .pod("web-2", 2)
                    .pod("web-3", 3),
            )
        });
        create_nodes(&c, &client).await;
        let macs = c
            .topo
            .nodes()
            .iter()
            .map(|n| (mac_of(n.netns(), "eth0"), n.name().to_string()))
            .collect();
        // The policy announces on the default interface: the one holding the node IP (eth0).
        let name = format!("l2-{ns}");
        let pool: LoadBalancerIPPool = serde_json::from_value(json!({
            "apiVersion": "svcnet.io/v1alpha1", "kind": "LoadBalancerIPPool",
            "metadata": {"name": name},
            "spec": {"cidrs": ["192.168.200.200/30", "fd00:200::200/126"]},
        }))
        .unwrap();
        Api::<LoadBalancerIPPool>::all(client.clone())
            .create(&PostParams::default(), &pool)
            .await
            .unwrap();
        let policy: L2Announcement = serde_json::from_value(json!({
            "apiVersion": "svcnet.io/v1alpha1", "kind": "L2Announcement",
            "metadata": {"name": name},
            "spec": {"serviceSelector": {"matchLabels": {"l2": "announce"}}, "ipPools": [name]},
        }))
        .unwrap();
        Api::<L2Announcement>::all(client.clone())
            .create(&PostParams::default(), &policy)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = tokio::task::block_in_place(|| node_kubeconfig(&c, env, dir.path()));
        let mut proxy_flags: Vec<String> = vec![
            "--l2-announce".into(),
            "--l2-lease-namespace".into(),
            ns.into(),
        ];
        proxy_flags.extend(extra.iter().map(|s| s.to_string()));
        let mut lab = Lab {
            c,
            proxies: BTreeMap::new(),
            macs,
            services: Api::namespaced(client.clone(), ns),
            slices: Api::namespaced(client.clone(), ns),
            leases: Api::namespaced(client.clone(), ns),
            name,
            client,
            kubeconfig,
            proxy_flags,
            _dir: dir,
        };
        let nodes: Vec<String> = lab
            .c
            .topo
            .nodes()
            .iter()
            .map(|n| n.name().to_string())
            .collect();
        for n in nodes {
            lab.start_proxy(&n);
        }
        lab
    }

    /// (Re)starts the proxy of `node` and waits for its first sync.
    pub fn start_proxy(&mut self, node: &str) {
        let flags: Vec<&str> = self.proxy_flags.iter().map(String::as_str).collect();
        let p = tokio::task::block_in_place(|| {
            let n = self
                .c
                .topo
                .nodes()
                .iter()
                .find(|n| n.name() == node)
                .unwrap();
            start_proxy_run(&self.c, n, &self.kubeconfig, &flags)
        });
        self.proxies.insert(node.to_string(), p);
    }

    /// The test pod on node `i`.
    pub fn web(&self, i: u8) -> &testkit::netns::Pod {
        self.c.topo.pod(&format!("web-{i}")).unwrap()
    }

    /// The node whose LAN interface has `mac` (`?<mac>` for a stranger).
    pub fn node_of_mac(&self, mac: &str) -> String {
        self.macs
            .get(mac)
            .cloned()
            .unwrap_or_else(|| format!("?{mac}"))
    }

    /// The LAN MAC of `node`.
    pub fn mac_of_node(&self, node: &str) -> String {
        self.macs
            .iter()
            .find(|(_, n)| *n == node)
            .map(|(m, _)| m.clone())
            .unwrap()
    }

    /// The dual-stack externalTrafficPolicy Cluster Service `shared` ([`LB4`], [`LB6`]) with
    /// one endpoint on every node.
    pub async fn create_shared(&self) {
        create_lb(
            &self.services,
            "shared",
            json!({"type": "LoadBalancer", "ipFamilyPolicy": "RequireDualStack",
                   "ipFamilies": ["IPv4", "IPv6"],
                   "clusterIP": "10.96.9.21", "clusterIPs": ["10.96.9.21", "fd00:10:96::21"],
                   "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30281}]}),
            &[LB4, LB6],
        )
        .await;
        let v4: Vec<Ep> = (1..=3)
            .map(|i| Ep::ready(self.web(i).ipv4(), &format!("node{i}")))
            .collect();
        let v6: Vec<Ep> = (1..=3)
            .map(|i| Ep::ready(self.web(i).ipv6(), &format!("node{i}")))
            .collect();
        put_slice(&self.slices, "shared-4", "shared", &v4).await;
        put_slice(&self.slices, "shared-6", "shared", &v6).await;
    }

    /// Deletes the cluster-scoped objects (the proxies and namespaces go with the lab).
    pub async fn cleanup(self) {
        drop(self.proxies);
        let _ = Api::<L2Announcement>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await;
        let _ = Api::<LoadBalancerIPPool>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await;
    }
}
