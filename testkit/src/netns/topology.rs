//! The topology: a LAN switch, nodes with pod bridges, pods, outside clients.
//!
//! * [`places`] — nodes, pods, outside clients and echo ports.
//! * [`builder`] — [`TopologyBuilder`].
//! * [`traffic`] — clients and relays (more `impl Topology`).
//! * here — the running [`Topology`]: its namespaces, pods, echo servers, teardown.

mod builder;
mod places;
mod traffic;

pub use builder::TopologyBuilder;
pub use places::{EchoPorts, Node, Outside, Place, Pod};

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::error::{Error, Result};
use super::exec::{delete_netns, ip_batch, run, Netns};
use super::plan::{self, Names, Step};
use super::process::{Process, TcpSession};

/// The port every pod's echo server listens on by default, for TCP, UDP and SCTP.
pub const DEFAULT_ECHO_PORT: u16 = 8080;

/// Topologies created by this process so far.
static TOPOLOGIES: AtomicU32 = AtomicU32::new(0);

/// How long an echo server may take to report that it is listening.
const ECHO_READY_TIMEOUT: Duration = Duration::from_secs(5);

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

    /// The ports pod `name`'s echo server currently listens on (none if it runs no server).
    pub(super) fn echo_ports(&self, name: &str) -> EchoPorts {
        self.echo_servers
            .get(name)
            .map_or_else(EchoPorts::none, |(p, _)| p.clone())
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
