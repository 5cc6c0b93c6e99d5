//! Shared helpers for the `dataplane_*` tests: a network-namespace cluster with `svcnet-proxy
//! apply` run in every node, and small builders for Service / EndpointSlice manifests.
//!
//! Everything here needs root (namespaces, veths, nftables); CI runs as root. All traffic stays
//! inside the namespaces the tests create. Build the binaries first when running a single test
//! binary: `cargo build -p svcnet-dataplane -p svcnet-testkit --bins`.

// Test helpers unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used, dead_code)]

pub mod l2;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use testkit::netns::{bins, plan, ClientOpts, Outcome, Place, Proto, Topology, TopologyBuilder};

/// Per-attempt client timeout where a reply is expected.
pub const REPLY_TIMEOUT: Duration = Duration::from_millis(1000);
/// Per-attempt client timeout where a timeout (drop) is the expected result.
pub const SHORT: Duration = Duration::from_millis(300);

/// A builder with the test binaries and a 1 s client timeout.
pub fn builder() -> TopologyBuilder {
    Topology::builder()
        .echo_binary(
            testkit::netns::bins::locate("svcnet-echo")
                .expect("svcnet-echo is built (cargo build --workspace --bins)"),
        )
        .client_timeout(REPLY_TIMEOUT)
}

/// A socket address.
pub fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// A topology plus a manifest directory, programmed with `svcnet-proxy apply` per node.
pub struct Cluster {
    /// The namespaces.
    pub topo: Topology,
    dir: tempfile::TempDir,
    proxy: PathBuf,
    applies: std::cell::Cell<u32>,
    zones: std::cell::RefCell<std::collections::BTreeMap<String, String>>,
}

impl Cluster {
    /// Builds the topology.
    pub fn new(builder: TopologyBuilder) -> Self {
        let topo = builder.build().expect("build the topology (needs root)");
        let proxy = bins::locate("svcnet-proxy").expect(
            "svcnet-proxy binary (run `cargo build -p svcnet-dataplane -p svcnet-testkit --bins`)",
        );
        Cluster {
            topo,
            dir: tempfile::tempdir().unwrap(),
            proxy,
            applies: std::cell::Cell::new(0),
            zones: Default::default(),
        }
    }

    /// Writes `yaml` (plus the Node objects) and runs `svcnet-proxy apply` in every node.
    pub fn apply(&self, yaml: &str) {
        self.apply_with(yaml, &[]);
    }

    /// [`Cluster::apply`] with extra svcnet-proxy flags.
    pub fn apply_with(&self, yaml: &str, extra: &[&str]) {
        let n = self.applies.get() + 1;
        self.applies.set(n);
        let services = self.dir.path().join(format!("services-{n}.yaml"));
        std::fs::write(&services, yaml).unwrap();
        let nodes = self.dir.path().join("nodes.yaml");
        let docs: Vec<String> = self
            .topo
            .k8s_nodes()
            .unwrap()
            .iter()
            .map(|n| {
                let mut n = n.clone();
                let name = n.metadata.name.clone().unwrap_or_default();
                if let Some(zone) = self.zones.borrow().get(&name) {
                    n.metadata
                        .labels
                        .get_or_insert_with(Default::default)
                        .insert("topology.kubernetes.io/zone".into(), zone.clone());
                }
                serde_yaml::to_string(&n).unwrap()
            })
            .collect();
        std::fs::write(&nodes, docs.join("---\n")).unwrap();
        let cluster_cidr = format!("{},{}", plan::CLUSTER_CIDR_V4, plan::CLUSTER_CIDR_V6);
        let service_cidr = format!("{},{}", plan::SERVICE_CIDR_V4, plan::SERVICE_CIDR_V6);
        for node in self.topo.nodes() {
            let node_ip = format!("{},{}", node.ipv4(), node.ipv6());
            let mut args: Vec<String> = vec![
                "apply".into(),
                "-f".into(),
                nodes.display().to_string(),
                "-f".into(),
                services.display().to_string(),
                "--node-name".into(),
                node.name().into(),
                "--node-ip".into(),
                node_ip,
                "--cluster-cidr".into(),
                cluster_cidr.clone(),
                "--service-cluster-ip-range".into(),
                service_cidr.clone(),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            if let Err(e) = node.netns().run(&self.proxy, &args) {
                panic!("svcnet-proxy apply on {} failed: {e}", node.name());
            }
        }
    }

    /// Labels Node `node` (e.g. "node1") with `topology.kubernetes.io/zone=<zone>` from the next
    /// [`Cluster::apply`] on.
    pub fn set_zone(&self, node: &str, zone: &str) {
        self.zones.borrow_mut().insert(node.into(), zone.into());
    }

    /// The ruleset currently loaded in node `index` (for failure messages).
    pub fn ruleset(&self, index: u8) -> String {
        self.topo
            .node(index)
            .unwrap()
            .netns()
            .run("nft", ["list", "ruleset"])
            .unwrap_or_else(|e| format!("<nft list ruleset failed: {e}>"))
    }

    /// `count` attempts from `from` to `to`.
    pub fn attempts(
        &self,
        from: &impl Place,
        proto: Proto,
        to: SocketAddr,
        count: u32,
    ) -> Vec<Outcome> {
        self.topo
            .clients(from, proto, to, &ClientOpts::count(count))
            .unwrap()
    }

    /// One attempt with a short timeout (for expected drops / rejects).
    pub fn short(&self, from: &impl Place, proto: Proto, to: SocketAddr) -> Outcome {
        self.topo
            .clients(from, proto, to, &ClientOpts::count(1).timeout(SHORT))
            .unwrap()
            .pop()
            .unwrap()
    }
}

/// The set of pods that answered; panics (with the outcomes) if any attempt got no reply.
#[track_caller]
pub fn answered(outs: &[Outcome]) -> BTreeSet<String> {
    for o in outs {
        assert!(o.is_replied(), "an attempt got no reply: {outs:?}");
    }
    outs.iter()
        .filter_map(|o| o.pod().map(str::to_string))
        .collect()
}

/// A set of pod names.
pub fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// One endpoint of an EndpointSlice.
#[derive(Clone, Debug)]
pub struct Ep {
    /// Address.
    pub ip: IpAddr,
    /// `nodeName`.
    pub node: String,
    /// `conditions.ready`.
    pub ready: bool,
    /// `conditions.serving`.
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
    /// `zone`.
    pub zone: Option<String>,
    /// `hints.forZones` (one zone).
    pub hint: Option<String>,
}

impl Ep {
    /// A ready endpoint.
    pub fn ready(ip: impl Into<IpAddr>, node: &str) -> Self {
        Ep {
            ip: ip.into(),
            node: node.to_string(),
            ready: true,
            serving: true,
            terminating: false,
            zone: None,
            hint: None,
        }
    }

    /// This endpoint in `zone` with a topology hint for `hint`.
    pub fn zoned(mut self, zone: &str, hint: Option<&str>) -> Self {
        self.zone = Some(zone.into());
        self.hint = hint.map(str::to_string);
        self
    }

    /// An endpoint that is neither ready nor serving (e.g. failing its readiness probe).
    pub fn not_ready(ip: impl Into<IpAddr>, node: &str) -> Self {
        Ep {
            ready: false,
            serving: false,
            ..Ep::ready(ip, node)
        }
    }

    /// A terminating endpoint that is still serving.
    pub fn serving_terminating(ip: impl Into<IpAddr>, node: &str) -> Self {
        Ep {
            ready: false,
            serving: true,
            terminating: true,
            ..Ep::ready(ip, node)
        }
    }
}

/// An EndpointSlice in namespace `default` for Service `svc`; `ports` are (name, port, protocol);
/// the address type follows the first endpoint (IPv4 when empty).
pub fn slice(name: &str, svc: &str, ports: &[(&str, u16, &str)], eps: &[Ep]) -> String {
    let v6 = eps.first().is_some_and(|e| e.ip.is_ipv6());
    let mut y = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  namespace: default\n  \
         name: {name}\n  labels: {{kubernetes.io/service-name: {svc}}}\naddressType: {}\nports:\n",
        if v6 { "IPv6" } else { "IPv4" }
    );
    for (pname, port, proto) in ports {
        writeln!(
            y,
            "- {{name: \"{pname}\", port: {port}, protocol: {proto}}}"
        )
        .unwrap();
    }
    if eps.is_empty() {
        y.push_str("endpoints: []\n");
    } else {
        y.push_str("endpoints:\n");
    }
    for e in eps {
        writeln!(
            y,
            "- addresses: [\"{}\"]\n  nodeName: {}\n  conditions: {{ready: {}, serving: {}, terminating: {}}}",
            e.ip, e.node, e.ready, e.serving, e.terminating
        )
        .unwrap();
        if let Some(zone) = &e.zone {
            writeln!(y, "  zone: {zone}").unwrap();
        }
        if let Some(hint) = &e.hint {
            writeln!(y, "  hints: {{forZones: [{{name: {hint}}}]}}").unwrap();
        }
    }
    y.push_str("---\n");
    y
}

/// A Service `default/<name>` whose `spec` is the given YAML flow mapping (e.g.
/// `{clusterIP: 10.96.0.10, ports: [{name: tcp, port: 80, targetPort: 8080}]}`).
pub fn service(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{namespace: default, name: {name}}}\nspec: {spec}\n---\n"
    )
}

/// [`service`] with a `status` flow mapping (LoadBalancer ingress).
pub fn service_with_status(name: &str, spec: &str, status: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{namespace: default, name: {name}}}\nspec: {spec}\nstatus: {status}\n---\n"
    )
}

/// Number of conntrack entries in node `index` whose original destination is `dst`. A packet
/// dropped by the node's filter rules leaves none (its entry is never confirmed), while one the
/// node forwarded on leaves an entry: this tells a drop by svcnet-proxy from a black hole further
/// away.
pub fn conntrack_entries(c: &Cluster, index: u8, dst: IpAddr) -> usize {
    let family = if dst.is_ipv6() { "ipv6" } else { "ipv4" };
    let out = c
        .topo
        .node(index)
        .unwrap()
        .netns()
        .exec("conntrack", ["-L", "-f", family, "-d", &dst.to_string()])
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// Creates the cluster's Node objects through the API (`svcnet-proxy run` reads its own Node).
/// A control plane shared by several tests may hold Nodes of the same names from an earlier
/// topology: those are replaced.
pub async fn create_nodes(c: &Cluster, client: &kube::Client) {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    for mut n in c.topo.k8s_nodes().unwrap() {
        match nodes.create(&Default::default(), &n).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let name = n.metadata.name.clone().unwrap();
                let current = nodes.get(&name).await.unwrap();
                n.metadata.resource_version = current.metadata.resource_version;
                nodes.replace(&name, &Default::default(), &n).await.unwrap();
            }
            Err(e) => panic!("creating Node: {e}"),
        }
    }
}

/// Relays port 6443 inside every node to the API server of `host_kubeconfig` (YAML) and writes
/// the same kubeconfig with the relayed address into `dir`; returns its path. The relay listens
/// on 127.0.0.1 in each node, so a serving certificate for 127.0.0.1 stays valid.
fn relay_kubeconfig(c: &Cluster, host_kubeconfig: &str, dir: &std::path::Path) -> PathBuf {
    let server = host_kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .map(str::trim)
        .expect("kubeconfig has a server");
    let (scheme, authority) = server.split_once("://").expect("server URL has a scheme");
    let target: SocketAddr = authority
        .trim_end_matches('/')
        .parse()
        .expect("the test API server listens on an IP address");
    let addr = c.topo.forward_from_host_to_nodes(6443, target).unwrap();
    let kubeconfig = dir.join("proxy.kubeconfig");
    std::fs::write(
        &kubeconfig,
        host_kubeconfig.replace(server, &format!("{scheme}://{addr}")),
    )
    .unwrap();
    kubeconfig
}

/// [`relay_kubeconfig`] for the embedded server `server`.
pub fn node_kubeconfig_embedded(
    c: &Cluster,
    server: &apiserver::ApiServer,
    dir: &std::path::Path,
) -> PathBuf {
    let yaml = apiserver::kubeconfig_yaml(&format!("http://{}", server.addr()));
    relay_kubeconfig(c, &yaml, dir)
}

/// [`relay_kubeconfig`] for the test environment `env` (embedded or real control plane).
pub fn node_kubeconfig(
    c: &Cluster,
    env: &testkit::harness::TestEnv,
    dir: &std::path::Path,
) -> PathBuf {
    let yaml = std::fs::read_to_string(env.kubeconfig_path()).expect("the test kubeconfig");
    relay_kubeconfig(c, &yaml, dir)
}

/// Starts `svcnet-proxy run` in `node` against the API server of `kubeconfig` (with extra flags
/// `extra`, e.g. `["--conntrack-cleanup", "false"]`) and waits for its first sync. Its `/metrics`
/// listens on 127.0.0.1:10249 and `/healthz` on 127.0.0.1:10256 inside the node's namespace. The
/// process is killed when the returned [`testkit::netns::Process`] (or the topology) is dropped.
pub fn start_proxy_run(
    c: &Cluster,
    node: &testkit::netns::Node,
    kubeconfig: &std::path::Path,
    extra: &[&str],
) -> testkit::netns::Process {
    let cluster_cidr = format!("{},{}", plan::CLUSTER_CIDR_V4, plan::CLUSTER_CIDR_V6);
    let service_cidr = format!("{},{}", plan::SERVICE_CIDR_V4, plan::SERVICE_CIDR_V6);
    let kubeconfig = kubeconfig.display().to_string();
    let mut args: Vec<&str> = vec![
        "run",
        "--kubeconfig",
        &kubeconfig,
        "--node-name",
        node.name(),
        "--cluster-cidr",
        &cluster_cidr,
        "--service-cluster-ip-range",
        &service_cidr,
        "--healthz-bind-address",
        "127.0.0.1:10256",
        "--metrics-bind-address",
        "127.0.0.1:10249",
        "--min-sync-period",
        "100ms",
    ];
    args.extend_from_slice(extra);
    let mut p = c.topo.spawn(node, &c.proxy, &args).unwrap();
    p.wait_for_output("synced", Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", node.name(), p.stderr()));
    p
}

/// Calls `probe` every 100 ms until `ok` accepts its value or `within` has passed; returns the
/// last value (the caller asserts on it).
pub fn poll_until<T>(within: Duration, mut probe: impl FnMut() -> T, ok: impl Fn(&T) -> bool) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        let v = probe();
        if ok(&v) || std::time::Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// UDP conntrack entries of node `index` whose original destination is `dst` (address and
/// port), only those answered by `reply_src` when given (after DNAT, the endpoint the flow is
/// pinned to). One `conntrack -L` line per entry.
pub fn udp_conntrack(
    c: &Cluster,
    index: u8,
    dst: SocketAddr,
    reply_src: Option<IpAddr>,
) -> Vec<String> {
    let mut args: Vec<String> = vec!["-L".into()];
    if dst.is_ipv6() {
        args.extend(["-f".into(), "ipv6".into()]);
    }
    args.extend([
        "-p".into(),
        "udp".into(),
        "--orig-dst".into(),
        dst.ip().to_string(),
        "--orig-port-dst".into(),
        dst.port().to_string(),
    ]);
    if let Some(ep) = reply_src {
        args.extend(["--reply-src".into(), ep.to_string()]);
    }
    let out = c
        .topo
        .node(index)
        .unwrap()
        .netns()
        .exec("conntrack", &args)
        .unwrap();
    assert!(
        out.status.success(),
        "conntrack {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// The value of the unlabelled metric `name` (e.g. `svcnet_proxy_conntrack_deleted_total`) as
/// served by the `svcnet-proxy run` of node `index` on 127.0.0.1:10249; `None` when absent.
pub fn proxy_metric(c: &Cluster, index: u8, name: &str) -> Option<f64> {
    let node = c.topo.node(index).unwrap();
    let r = c
        .topo
        .http_get(node, sa([127, 0, 0, 1], 10249), "/metrics")
        .unwrap();
    let body = &r
        .response()
        .unwrap_or_else(|| panic!("/metrics on {}: {r:?}", node.name()))
        .body;
    body.lines().find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Parses one manifest made by [`service`] / [`slice`] into its typed object (to create it
/// through the API server).
pub fn typed<K: serde::de::DeserializeOwned>(manifest: &str) -> K {
    serde_yaml::from_str(manifest.trim_end_matches("---\n")).unwrap()
}
