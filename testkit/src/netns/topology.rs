//! The topology: a LAN switch, nodes with pod bridges, pods, outside clients.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::bins;
use super::cleanup::{cleanup_stale, DEFAULT_PREFIX};
use super::error::{Error, Result};
use super::exec::{delete_netns, ip_batch, output, require_root, run, Netns};
use super::outcome::{parse_client_output, parse_http_line, ClientOpts, HttpOutcome, Outcome};
use super::plan::{self, Cidr, Names, Step};
use super::process::{Process, TcpSession};
use super::wire::{ClientLine, Proto, EXIT_ERROR, EXIT_REFUSED, EXIT_REPLIED, EXIT_TIMEOUT};

/// The port every pod's echo server listens on by default, for TCP, UDP and SCTP.
pub const DEFAULT_ECHO_PORT: u16 = 8080;

/// Topologies created by this process so far.
static TOPOLOGIES: AtomicU32 = AtomicU32::new(0);

/// How long an echo server may take to report that it is listening.
const ECHO_READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Ports an echo server listens on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EchoPorts {
    /// TCP ports.
    pub tcp: Vec<u16>,
    /// UDP ports.
    pub udp: Vec<u16>,
    /// SCTP ports (raw-socket SCTP, see [`super::sctp`]).
    pub sctp: Vec<u16>,
}

impl EchoPorts {
    /// The given TCP and UDP ports (no SCTP).
    pub fn new(tcp: &[u16], udp: &[u16]) -> Self {
        EchoPorts {
            tcp: tcp.to_vec(),
            udp: udp.to_vec(),
            sctp: Vec::new(),
        }
    }

    /// Adds SCTP ports.
    pub fn with_sctp(mut self, sctp: &[u16]) -> Self {
        self.sctp.extend_from_slice(sctp);
        self
    }

    /// No echo server at all.
    pub fn none() -> Self {
        EchoPorts::default()
    }

    /// Whether there is nothing to listen on.
    pub fn is_empty(&self) -> bool {
        self.tcp.is_empty() && self.udp.is_empty() && self.sctp.is_empty()
    }
}

/// Anything that lives in a namespace of the topology: a [`Node`], a [`Pod`], an [`Outside`]
/// client, or a bare [`Netns`].
pub trait Place {
    /// The namespace.
    fn netns(&self) -> &Netns;
    /// Its own addresses (what an echo server started there binds to); empty for a bare
    /// namespace, which makes the echo server bind the dual-stack wildcard.
    fn ips(&self) -> Vec<IpAddr>;
    /// A short label for log file names.
    fn label(&self) -> String;
}

impl Place for Netns {
    fn netns(&self) -> &Netns {
        self
    }
    fn ips(&self) -> Vec<IpAddr> {
        Vec::new()
    }
    fn label(&self) -> String {
        self.name().to_string()
    }
}

/// A node: eth0 on the LAN, `cbr0` holding the gateway of its pod CIDR, forwarding on.
#[derive(Clone, Debug)]
pub struct Node {
    index: u8,
    name: String,
    netns: Netns,
}

impl Node {
    /// 1-based position in the topology.
    pub fn index(&self) -> u8 {
        self.index
    }
    /// The Kubernetes node name, `node<index>` (use it for `--hostname-override` and Node objects).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The node's namespace (where svcnet-proxy runs).
    pub fn netns(&self) -> &Netns {
        &self.netns
    }
    /// LAN address (eth0), IPv4: the node's InternalIP.
    pub fn ipv4(&self) -> Ipv4Addr {
        plan::node_ipv4(self.index)
    }
    /// LAN address (eth0), IPv6.
    pub fn ipv6(&self) -> Ipv6Addr {
        plan::node_ipv6(self.index)
    }
    /// Pod CIDR, IPv4 (`spec.podCIDRs[0]`).
    pub fn pod_cidr_v4(&self) -> Cidr {
        plan::pod_cidr_v4(self.index)
    }
    /// Pod CIDR, IPv6 (`spec.podCIDRs[1]`).
    pub fn pod_cidr_v6(&self) -> Cidr {
        plan::pod_cidr_v6(self.index)
    }
}

impl Place for Node {
    fn netns(&self) -> &Netns {
        &self.netns
    }
    fn ips(&self) -> Vec<IpAddr> {
        vec![self.ipv4().into(), self.ipv6().into()]
    }
    fn label(&self) -> String {
        self.name.clone()
    }
}

/// A pod: its own namespace, eth0 bridged into its node's `cbr0`, default routes via the node.
#[derive(Clone, Debug)]
pub struct Pod {
    name: String,
    node: u8,
    host: u8,
    netns: Netns,
    host_veth: String,
}

impl Pod {
    /// The pod name (also the echo server's `--name`).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Index of the node it runs on.
    pub fn node_index(&self) -> u8 {
        self.node
    }
    /// Name of the node it runs on (`spec.nodeName`).
    pub fn node_name(&self) -> String {
        format!("node{}", self.node)
    }
    /// The pod's namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }
    /// Pod IP, IPv4.
    pub fn ipv4(&self) -> Ipv4Addr {
        plan::pod_ipv4(self.node, self.host)
    }
    /// Pod IP, IPv6.
    pub fn ipv6(&self) -> Ipv6Addr {
        plan::pod_ipv6(self.node, self.host)
    }
    /// Name of the host-side veth in the node namespace (enslaved to `cbr0`).
    pub fn host_veth(&self) -> &str {
        &self.host_veth
    }
}

impl Place for Pod {
    fn netns(&self) -> &Netns {
        &self.netns
    }
    fn ips(&self) -> Vec<IpAddr> {
        vec![self.ipv4().into(), self.ipv6().into()]
    }
    fn label(&self) -> String {
        format!("pod-{}", self.name)
    }
}

/// A client outside the cluster: on the LAN, not a node, routes Service and external CIDRs via
/// one node.
#[derive(Clone, Debug)]
pub struct Outside {
    index: u8,
    via: u8,
    netns: Netns,
}

impl Outside {
    /// 1-based position among outside clients.
    pub fn index(&self) -> u8 {
        self.index
    }
    /// The node its Service / external routes point to.
    pub fn via_node(&self) -> u8 {
        self.via
    }
    /// Its namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }
    /// Its address, IPv4.
    pub fn ipv4(&self) -> Ipv4Addr {
        plan::outside_ipv4(self.index)
    }
    /// Its address, IPv6.
    pub fn ipv6(&self) -> Ipv6Addr {
        plan::outside_ipv6(self.index)
    }
}

impl Place for Outside {
    fn netns(&self) -> &Netns {
        &self.netns
    }
    fn ips(&self) -> Vec<IpAddr> {
        vec![self.ipv4().into(), self.ipv6().into()]
    }
    fn label(&self) -> String {
        format!("out{}", self.index)
    }
}

/// Describes a topology; [`TopologyBuilder::build`] creates it.
#[derive(Clone, Debug)]
pub struct TopologyBuilder {
    nodes: u8,
    pods: Vec<(String, u8)>,
    outside: u8,
    outside_via: u8,
    echo: EchoPorts,
    echo_binary: Option<PathBuf>,
    prefix: String,
    client_timeout: Duration,
}

impl Default for TopologyBuilder {
    fn default() -> Self {
        TopologyBuilder {
            nodes: 2,
            pods: Vec::new(),
            outside: 1,
            outside_via: 1,
            echo: EchoPorts::new(&[DEFAULT_ECHO_PORT], &[DEFAULT_ECHO_PORT])
                .with_sctp(&[DEFAULT_ECHO_PORT]),
            echo_binary: None,
            prefix: DEFAULT_PREFIX.to_string(),
            client_timeout: Duration::from_millis(1000),
        }
    }
}

impl TopologyBuilder {
    /// Number of nodes, 1..=50 (default 2).
    pub fn nodes(mut self, n: u8) -> Self {
        self.nodes = n;
        self
    }
    /// Adds a pod named `name` on node `node` (1-based).
    pub fn pod(mut self, name: impl Into<String>, node: u8) -> Self {
        self.pods.push((name.into(), node));
        self
    }
    /// Number of outside clients, 0..=50 (default 1).
    pub fn outside_clients(mut self, n: u8) -> Self {
        self.outside = n;
        self
    }
    /// The node outside clients send Service / external traffic to (default node 1).
    pub fn outside_via(mut self, node: u8) -> Self {
        self.outside_via = node;
        self
    }
    /// Echo ports started in every pod (default TCP, UDP and SCTP 8080; [`EchoPorts::none`] for
    /// none).
    pub fn echo_ports(mut self, ports: EchoPorts) -> Self {
        self.echo = ports;
        self
    }
    /// Path of `svcnet-echo` (default: [`bins::locate`]). In this crate's tests pass
    /// `env!("CARGO_BIN_EXE_svcnet-echo")`.
    pub fn echo_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.echo_binary = Some(path.into());
        self
    }
    /// Namespace name prefix (default `svn`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }
    /// Default per-attempt client timeout (default 1 s). Timeouts are how drops are detected,
    /// so keep it small in tests that expect them.
    pub fn client_timeout(mut self, timeout: Duration) -> Self {
        self.client_timeout = timeout;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.nodes == 0 || self.nodes > plan::MAX_NODES {
            return Err(Error::InvalidSpec(format!(
                "{} nodes; between 1 and {} are supported",
                self.nodes,
                plan::MAX_NODES
            )));
        }
        if self.outside > plan::MAX_OUTSIDE {
            return Err(Error::InvalidSpec(format!(
                "{} outside clients; at most {} are supported",
                self.outside,
                plan::MAX_OUTSIDE
            )));
        }
        if self.outside > 0 && !(1..=self.nodes).contains(&self.outside_via) {
            return Err(Error::InvalidSpec(format!(
                "outside_via({}) is not a node (1..={})",
                self.outside_via, self.nodes
            )));
        }
        let ok_prefix = !self.prefix.is_empty()
            && self.prefix.len() <= 16
            && self.prefix.bytes().all(|b| b.is_ascii_alphanumeric());
        if !ok_prefix {
            return Err(Error::InvalidSpec(format!(
                "prefix {:?} must be 1-16 ASCII letters/digits",
                self.prefix
            )));
        }
        Ok(())
    }

    /// Creates every namespace, link, address and route, and starts the pods' echo servers.
    /// On error, whatever was created is removed again.
    pub fn build(self) -> Result<Topology> {
        require_root()?;
        self.validate()?;
        let echo_binary = match self.echo_binary {
            Some(p) => p,
            None => bins::locate("svcnet-echo")?,
        };
        match cleanup_stale(&self.prefix) {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(?removed, "removed leftovers of crashed runs")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot clean up stale namespaces"),
        }
        let names = Names {
            prefix: self.prefix.clone(),
            pid: std::process::id(),
            // A per-process counter makes tags unique within the process; the random part
            // avoids leftovers of an earlier process that had the same pid.
            tag: format!(
                "{:x}{:04x}",
                TOPOLOGIES.fetch_add(1, Ordering::Relaxed),
                rand::random::<u16>()
            ),
        };
        let log_dir = std::env::temp_dir().join(names.id());
        std::fs::create_dir_all(&log_dir)
            .map_err(|e| Error::io(format!("creating {}", log_dir.display()), e))?;
        let mut topo = Topology {
            lan: Netns::new(names.lan()),
            names,
            nodes: Vec::new(),
            pods: Vec::new(),
            outside: Vec::new(),
            created: Vec::new(),
            echo_servers: BTreeMap::new(),
            next_host: vec![2; usize::from(self.nodes) + 1],
            next_veth: 0,
            spawned: AtomicU32::new(0),
            relays: Mutex::new(Vec::new()),
            resolv_confs: Mutex::new(Vec::new()),
            echo_binary,
            echo_ports: self.echo.clone(),
            client_timeout: self.client_timeout,
            log_dir,
        };
        // From here on, an early return drops `topo`, which removes what was created.
        let steps = plan::lan_steps(&topo.names);
        topo.apply(&steps)?;
        for index in 1..=self.nodes {
            let steps = plan::node_steps(&topo.names, index, self.nodes);
            topo.apply(&steps)?;
            topo.nodes.push(Node {
                index,
                name: format!("node{index}"),
                netns: Netns::new(topo.names.node(index)),
            });
        }
        for index in 1..=self.outside {
            let steps = plan::outside_steps(&topo.names, index, self.outside_via);
            topo.apply(&steps)?;
            topo.outside.push(Outside {
                index,
                via: self.outside_via,
                netns: Netns::new(topo.names.outside(index)),
            });
        }
        for (name, node) in &self.pods {
            topo.add_pod(name, *node)?;
        }
        tracing::info!(id = %topo.id(), nodes = self.nodes, pods = topo.pods.len(), "topology ready");
        Ok(topo)
    }
}

/// A running topology. Dropping it (also while panicking) kills every process inside its
/// namespaces and deletes the namespaces, which removes all links, routes and nft tables.
#[derive(Debug)]
pub struct Topology {
    names: Names,
    lan: Netns,
    nodes: Vec<Node>,
    pods: Vec<Pod>,
    outside: Vec<Outside>,
    created: Vec<String>,
    echo_servers: BTreeMap<String, (EchoPorts, Process)>,
    next_host: Vec<u8>,
    next_veth: u32,
    spawned: AtomicU32,
    relays: Mutex<Vec<Process>>,
    resolv_confs: Mutex<Vec<PathBuf>>,
    echo_binary: PathBuf,
    echo_ports: EchoPorts,
    client_timeout: Duration,
    log_dir: PathBuf,
}

impl Topology {
    /// A builder with the defaults: 2 nodes, 1 outside client routed via node 1, no pods, echo
    /// servers on TCP/UDP/SCTP 8080.
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder::default()
    }

    fn apply(&mut self, steps: &[Step]) -> Result<()> {
        for step in steps {
            match step {
                Step::AddNetns(ns) => {
                    run(Command::new("ip").args(["netns", "add", ns]))?;
                    self.created.push(ns.clone());
                }
                Step::Sysctl { ns, settings } => {
                    // -e: the bridge-netfilter keys only exist when br_netfilter is available.
                    Netns::new(ns.as_str()).run(
                        "sysctl",
                        ["-q", "-e", "-w"]
                            .into_iter()
                            .map(str::to_string)
                            .chain(settings.iter().cloned()),
                    )?;
                }
                Step::Ip { ns, lines } => ip_batch(ns, lines)?,
            }
        }
        Ok(())
    }

    /// `<prefix>-<pid>-<tag>`: the common part of every namespace name of this topology.
    pub fn id(&self) -> String {
        self.names.id()
    }

    /// The LAN switch namespace (bridge `br0`, gateway addresses).
    pub fn lan(&self) -> &Netns {
        &self.lan
    }

    /// All nodes, in order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `index` (1-based).
    pub fn node(&self, index: u8) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.index == index)
            .ok_or_else(|| Error::NotFound(format!("node {index}")))
    }

    /// All pods, in creation order.
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// The pod called `name`.
    pub fn pod(&self, name: &str) -> Result<&Pod> {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::NotFound(format!("pod {name:?}")))
    }

    /// The first outside client.
    pub fn outside(&self) -> Result<&Outside> {
        self.outside_n(1)
    }

    /// Outside client `index` (1-based).
    pub fn outside_n(&self, index: u8) -> Result<&Outside> {
        self.outside
            .iter()
            .find(|o| o.index == index)
            .ok_or_else(|| Error::NotFound(format!("outside client {index}")))
    }

    /// Re-routes every outside client's Service and external CIDRs via node `node` (e.g. to
    /// send LoadBalancer traffic to a node without local endpoints).
    pub fn set_outside_via(&mut self, node: u8) -> Result<()> {
        self.node(node)?;
        for out in &mut self.outside {
            let lines = plan::outside_routes(node)
                .into_iter()
                .map(|r| format!("route replace {r}"))
                .collect::<Vec<_>>();
            ip_batch(out.netns.name(), &lines)?;
            out.via = node;
        }
        Ok(())
    }

    /// Kubernetes Node objects for every node (see [`super::k8s::node`]).
    pub fn k8s_nodes(&self) -> Result<Vec<k8s_openapi::api::core::v1::Node>> {
        self.nodes.iter().map(super::k8s::node).collect()
    }

    /// A Kubernetes Pod object for pod `name` in `namespace` with `labels`, declaring the ports
    /// its echo server currently listens on (see [`super::k8s::pod`]).
    pub fn k8s_pod(
        &self,
        name: &str,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<k8s_openapi::api::core::v1::Pod> {
        let pod = self.pod(name)?;
        let node = self.node(pod.node_index())?;
        let none = EchoPorts::none();
        let ports = self.echo_servers.get(name).map_or(&none, |(p, _)| p);
        super::k8s::pod(pod, node, namespace, labels, ports)
    }

    /// Names of every namespace this topology created (and will delete).
    pub fn namespaces(&self) -> &[String] {
        &self.created
    }

    /// Where process output is written.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The `svcnet-echo` binary in use.
    pub fn echo_binary(&self) -> &Path {
        &self.echo_binary
    }

    /// The default per-attempt client timeout.
    pub fn client_timeout(&self) -> Duration {
        self.client_timeout
    }

    /// Creates a pod on node `node` and starts its echo server (if the topology has echo ports).
    pub fn add_pod(&mut self, name: &str, node: u8) -> Result<&Pod> {
        plan::validate_pod_name(name)?;
        if self.pods.iter().any(|p| p.name == name) {
            return Err(Error::InvalidSpec(format!("pod {name:?} exists already")));
        }
        self.node(node)?;
        let slot = usize::from(node);
        let host = self.next_host.get(slot).copied().unwrap_or(255);
        if host == 255 {
            return Err(Error::InvalidSpec(format!(
                "node {node} has no pod addresses left ({} created)",
                plan::MAX_PODS_PER_NODE
            )));
        }
        if let Some(h) = self.next_host.get_mut(slot) {
            *h += 1;
        }
        self.next_veth += 1;
        let veth = format!("vp{}", self.next_veth);
        let steps = plan::pod_steps(&self.names, name, node, host, &veth);
        self.apply(&steps)?;
        self.pods.push(Pod {
            name: name.to_string(),
            node,
            host,
            netns: Netns::new(self.names.pod(name)),
            host_veth: veth,
        });
        if !self.echo_ports.is_empty() {
            self.start_echo(name, &self.echo_ports.clone())?;
        }
        self.pod(name)
    }

    /// Deletes a pod: stops its echo server and removes its namespace (and so its veth).
    pub fn remove_pod(&mut self, name: &str) -> Result<()> {
        let pos = self
            .pods
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| Error::NotFound(format!("pod {name:?}")))?;
        self.echo_servers.remove(name);
        let pod = self.pods.remove(pos);
        delete_netns(pod.netns.name())?;
        self.created.retain(|n| n != pod.netns.name());
        Ok(())
    }

    /// (Re)starts the echo server of pod `name` on `ports`, bound to the pod IPs.
    pub fn start_echo(&mut self, name: &str, ports: &EchoPorts) -> Result<()> {
        self.echo_servers.remove(name);
        let pod = self.pod(name)?.clone();
        let server = self.echo_server(&pod, name, ports)?;
        self.echo_servers
            .insert(name.to_string(), (ports.clone(), server));
        Ok(())
    }

    /// Stops the echo server of pod `name` (the pod stays; its ports become closed).
    pub fn stop_echo(&mut self, name: &str) -> Result<()> {
        match self.echo_servers.remove(name) {
            Some((_, mut server)) => server.kill().map(|_| ()),
            None => Err(Error::NotFound(format!("echo server of pod {name:?}"))),
        }
    }

    /// Starts an echo server answering as `name` anywhere (e.g. on a node, for hostNetwork
    /// endpoints), bound to the place's addresses, and waits until it listens. The caller owns it.
    pub fn echo_server(&self, at: &impl Place, name: &str, ports: &EchoPorts) -> Result<Process> {
        if ports.is_empty() {
            return Err(Error::InvalidSpec(
                "an echo server needs at least one port".into(),
            ));
        }
        let mut cmd = at.netns().command(&self.echo_binary);
        cmd.args(["serve", "--name", name]);
        for p in &ports.tcp {
            cmd.arg("--tcp").arg(p.to_string());
        }
        for p in &ports.udp {
            cmd.arg("--udp").arg(p.to_string());
        }
        for p in &ports.sctp {
            cmd.arg("--sctp").arg(p.to_string());
        }
        for ip in at.ips() {
            cmd.arg("--bind").arg(ip.to_string());
        }
        let mut server = self.spawn_command(&format!("{}-echo", at.label()), cmd)?;
        server.wait_for_output("\"ready\":true", ECHO_READY_TIMEOUT)?;
        Ok(server)
    }

    /// Starts `program args…` inside `at`'s namespace as a managed child process (killed when
    /// the returned [`Process`] or the topology is dropped). Use it for svcnet-proxy.
    pub fn spawn<I, S>(
        &self,
        at: &impl Place,
        program: impl AsRef<OsStr>,
        args: I,
    ) -> Result<Process>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = program.as_ref();
        let short = Path::new(program)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut cmd = at.netns().command(program);
        cmd.args(args);
        self.spawn_command(&format!("{}-{short}", at.label()), cmd)
    }

    /// Starts a prepared command (e.g. from [`Netns::command`], with extra environment) as a
    /// managed child process whose output goes to the topology's log directory.
    pub fn spawn_command(&self, label: &str, cmd: Command) -> Result<Process> {
        let n = self.spawned.fetch_add(1, Ordering::Relaxed);
        Process::spawn(&format!("{label}-{n}"), cmd, &self.log_dir)
    }

    /// Runs `program args…` in `at`'s namespace; fails unless it exits 0; returns stdout.
    pub fn exec<I, S>(&self, at: &impl Place, program: impl AsRef<OsStr>, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        at.netns().run(program, args)
    }

    /// One client attempt from `from` to `target` with the default timeout.
    pub fn client(&self, from: &impl Place, proto: Proto, target: SocketAddr) -> Result<Outcome> {
        let mut v = self.clients(from, proto, target, &ClientOpts::default())?;
        v.pop()
            .ok_or_else(|| Error::Session("the echo client printed nothing".into()))
    }

    /// `opts.count` client attempts (each on a new socket) in one client process.
    pub fn clients(
        &self,
        from: &impl Place,
        proto: Proto,
        target: SocketAddr,
        opts: &ClientOpts,
    ) -> Result<Vec<Outcome>> {
        let lines = self.client_lines(from, proto, target, opts)?;
        Ok(lines.into_iter().map(Outcome::from).collect())
    }

    fn client_lines(
        &self,
        from: &impl Place,
        proto: Proto,
        target: SocketAddr,
        opts: &ClientOpts,
    ) -> Result<Vec<ClientLine>> {
        let flag = match proto {
            Proto::Tcp => "--tcp",
            Proto::Udp => "--udp",
            Proto::Sctp => "--sctp",
        };
        let timeout = opts.timeout.unwrap_or(self.client_timeout);
        let mut cmd = from.netns().command(&self.echo_binary);
        cmd.args(["client", flag, &target.to_string()])
            .arg("--timeout-ms")
            .arg(timeout.as_millis().to_string())
            .arg("--count")
            .arg(opts.count.max(1).to_string());
        if let Some(src) = opts.source {
            cmd.arg("--source").arg(src.to_string());
        }
        if let Some(port) = opts.source_port {
            cmd.arg("--source-port").arg(port.to_string());
        }
        let out = output(&mut cmd)?;
        let code = out.status.code();
        let expected = [EXIT_REPLIED, EXIT_REFUSED, EXIT_TIMEOUT, EXIT_ERROR];
        if !code.is_some_and(|c| expected.contains(&c)) {
            return Err(Error::Command {
                cmd: super::exec::describe(&cmd),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let outcomes = parse_client_output(&String::from_utf8_lossy(&out.stdout))?;
        if outcomes.len() != opts.count.max(1) as usize {
            return Err(Error::Command {
                cmd: super::exec::describe(&cmd),
                status: format!(
                    "printed {} outcomes, expected {}",
                    outcomes.len(),
                    opts.count.max(1)
                ),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(outcomes)
    }

    /// Like [`Topology::clients`], with each attempt's duration as the client measured it inside
    /// the namespace (socket + connect / send → reply; no process start-up). For latency
    /// benchmarks; attempts that got no reply carry `None`.
    pub fn clients_timed(
        &self,
        from: &impl Place,
        proto: Proto,
        target: SocketAddr,
        opts: &ClientOpts,
    ) -> Result<Vec<(Outcome, Option<Duration>)>> {
        let lines = self.client_lines(from, proto, target, opts)?;
        Ok(lines
            .into_iter()
            .map(|line| {
                let rtt = match &line {
                    ClientLine::Replied(r) => r.rtt_us.map(Duration::from_micros),
                    _ => None,
                };
                (Outcome::from(line), rtt)
            })
            .collect())
    }

    /// One HTTP GET of `path` from `from` to `target` (e.g. svcnet-proxy's health-check node
    /// port), with the default client timeout.
    pub fn http_get(
        &self,
        from: &impl Place,
        target: SocketAddr,
        path: &str,
    ) -> Result<HttpOutcome> {
        let mut cmd = from.netns().command(&self.echo_binary);
        cmd.args(["http-get", &target.to_string(), "--path", path])
            .arg("--timeout-ms")
            .arg(self.client_timeout.as_millis().to_string());
        let out = output(&mut cmd)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        match stdout.lines().find(|l| !l.trim().is_empty()) {
            Some(line) => parse_http_line(line),
            None => Err(Error::Command {
                cmd: super::exec::describe(&cmd),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }),
        }
    }

    /// Makes `host_target`, a TCP service on the host's loopback (e.g. the embedded API server),
    /// reachable at `127.0.0.1:<port>` inside `at`'s namespace, and returns that address (use it
    /// in the kubeconfig of a svcnet-proxy running there). Two `svcnet-echo relay` processes carry
    /// the bytes through a Unix socket in [`Topology::log_dir`] (a file, so visible from every
    /// namespace); no link or address is added to the host's network namespace. TLS passes
    /// through untouched. The relays live as long as the topology.
    pub fn forward_from_host(
        &self,
        at: &impl Place,
        port: u16,
        host_target: SocketAddr,
    ) -> Result<SocketAddr> {
        let n = self.spawned.fetch_add(1, Ordering::Relaxed);
        let sock = self.log_dir.join(format!("relay-{n}.sock"));
        let unix = format!("unix:{}", sock.display());
        let mut host_side = Command::new(&self.echo_binary);
        host_side.args(["relay", "--listen", &unix, "--connect"]);
        host_side.arg(format!("tcp:{host_target}"));
        let mut host_relay = self.spawn_command("host-relay", host_side)?;
        host_relay.wait_for_output("\"ready\":true", ECHO_READY_TIMEOUT)?;
        let listen = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
        let mut ns_side = at.netns().command(&self.echo_binary);
        ns_side.args(["relay", "--connect", &unix, "--listen"]);
        ns_side.arg(format!("tcp:{listen}"));
        let mut ns_relay = self.spawn_command(&format!("{}-relay", at.label()), ns_side)?;
        ns_relay.wait_for_output("\"ready\":true", ECHO_READY_TIMEOUT)?;
        let mut relays = self
            .relays
            .lock()
            .map_err(|_| Error::Session("relay list poisoned by a panic".into()))?;
        relays.push(host_relay);
        relays.push(ns_relay);
        Ok(listen)
    }

    /// [`Topology::forward_from_host`] into every node: `host_target` becomes reachable at
    /// `127.0.0.1:<port>` in each node namespace (where svcnet-proxy runs).
    pub fn forward_from_host_to_nodes(
        &self,
        port: u16,
        host_target: SocketAddr,
    ) -> Result<SocketAddr> {
        let mut listen = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
        for node in &self.nodes {
            listen = self.forward_from_host(node, port, host_target)?;
        }
        Ok(listen)
    }

    /// Gives `at`'s namespace its own resolver configuration: writes
    /// `/etc/netns/<namespace>/resolv.conf`, which `ip netns exec` (every command this harness
    /// runs there) bind-mounts over `/etc/resolv.conf`. Removed when the topology is dropped
    /// (and the directory too when nothing else is left in it).
    pub fn set_resolv_conf(&self, at: &impl Place, text: &str) -> Result<PathBuf> {
        let dir = Path::new(super::cleanup::NETNS_ETC).join(at.netns().name());
        let io = |context: String| move |source| Error::Io { context, source };
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let path = dir.join("resolv.conf");
        std::fs::write(&path, text).map_err(io(format!("writing {}", path.display())))?;
        self.resolv_confs
            .lock()
            .map_err(|_| Error::Session("resolv.conf list poisoned by a panic".into()))?
            .push(path.clone());
        Ok(path)
    }

    /// Opens a long-lived TCP connection from `from` to `target` (see [`TcpSession`]).
    pub fn session(&self, from: &impl Place, target: SocketAddr) -> Result<TcpSession> {
        let mut cmd = from.netns().command(&self.echo_binary);
        cmd.args(["client", "--tcp", &target.to_string(), "--interactive"])
            .arg("--timeout-ms")
            .arg(self.client_timeout.as_millis().to_string());
        TcpSession::start(cmd, self.client_timeout + Duration::from_secs(2))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        self.echo_servers.clear();
        match self.relays.get_mut() {
            Ok(relays) => relays.clear(),
            Err(poisoned) => poisoned.into_inner().clear(),
        }
        let confs = match self.resolv_confs.get_mut() {
            Ok(c) => std::mem::take(c),
            Err(poisoned) => std::mem::take(poisoned.into_inner()),
        };
        for path in confs {
            if let Err(e) = std::fs::remove_file(&path) {
                eprintln!("netns harness: cannot remove {}: {e}", path.display());
            }
            // The directory only when nothing else is in it.
            if let Some(dir) = path.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
        for ns in self.created.iter().rev() {
            if let Err(e) = delete_netns(ns) {
                eprintln!("netns harness: cannot delete namespace {ns}: {e}");
            }
        }
        self.created.clear();
        if panicking {
            eprintln!(
                "netns harness: process logs kept in {}",
                self.log_dir.display()
            );
        } else if let Err(e) = std::fs::remove_dir_all(&self.log_dir) {
            tracing::warn!(dir = %self.log_dir.display(), error = %e, "cannot remove log dir");
        }
    }
}
