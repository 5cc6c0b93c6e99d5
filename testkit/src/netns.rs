//! Nodes, pods and clients built from Linux network namespaces, for dataplane tests and the demo.
//!
//! Everything here needs root (tests that use it say so in their doc comment; CI runs as root).
//! The API is synchronous: it drives `ip`, `nft`, `sysctl` and the `svcnet-echo` binary as
//! child processes. Call it from `#[test]` functions, or from async code via `spawn_blocking`.
//!
//! # Quick start
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use testkit::netns::{Outcome, Proto, Topology, DEFAULT_ECHO_PORT};
//!
//! # fn main() -> testkit::netns::Result<()> {
//! let topo = Topology::builder()
//!     .nodes(2)                       // node1, node2 (the default)
//!     .pod("web-0", 1)                // pod "web-0" on node1: 10.244.1.2 / fd00:244:1::2
//!     .pod("web-1", 2)                // pod "web-1" on node2: 10.244.2.2 / fd00:244:2::2
//!     // Tests of this crate pass env!("CARGO_BIN_EXE_svcnet-echo"); the default is bins::locate.
//!     .echo_binary(testkit::netns::bins::locate("svcnet-echo")?)
//!     .build()?;                      // every pod runs svcnet-echo on TCP, UDP, SCTP 8080
//!
//! let web1 = topo.pod("web-1")?;
//! let to = SocketAddr::new(web1.ipv6().into(), DEFAULT_ECHO_PORT);
//! match topo.client(topo.pod("web-0")?, Proto::Tcp, to)? {
//!     Outcome::Replied { pod, peer, .. } => {
//!         assert_eq!(pod, "web-1");
//!         assert_eq!(peer.ip(), std::net::IpAddr::from(topo.pod("web-0")?.ipv6()));
//!     }
//!     other => panic!("expected a reply, got {other:?}"),
//! }
//! # Ok(())
//! # }   // dropping `topo` kills its processes and deletes its namespaces
//! ```
//!
//! # The topology
//!
//! ```text
//!               outside client "out1" (192.168.200.101, fd00:200::101)
//!               routes 10.96/16, 10.97/16, fd00:96::/112, fd00:97::/112 via node <outside_via>
//!                        │ eth0
//!   LAN namespace:  br0 (192.168.200.1, fd00:200::1)  ── a plain switch, no netfilter
//!                 │ eth0                        │ eth0
//!   node1 (192.168.200.11)             node2 (192.168.200.12)     ip_forward on (v4 + v6),
//!     cbr0 10.244.1.1/24                 cbr0 10.244.2.1/24       routes to the other nodes'
//!          fd00:244:1::1/64                   fd00:244:2::1/64    pod CIDRs via their LAN IPs,
//!     │ vpN (hairpin on)                 │                        default via 192.168.200.1
//!   pod ns: eth0 10.244.1.2, default via 10.244.1.1
//! ```
//!
//! Address plan: see [`plan`] (nodes `192.168.200.0/24` + `fd00:200::/64`, pods
//! `10.244.<node>.0/24` + `fd00:244:<node>::/64`, cluster CIDR `10.244.0.0/16` +
//! `fd00:244::/32`, Services `10.96.0.0/16` + `fd00:96::/112`, LoadBalancer / external IPs
//! `10.97.0.0/16` + `fd00:97::/112`). Nodes and pods are kubenet-like: cbr0 lets bridged traffic
//! traverse netfilter and its ports are in hairpin mode, so same-node and hairpin Service traffic
//! is un-NATed correctly (`tests/netns_harness.rs` proves it with a throwaway nft table).
//! Namespaces are named `svn-<pid>-<tag>-{lan,node<i>,out<j>,pod-<name>}`; all links live
//! inside them, so nothing touches the host's network. Every `build()` first calls
//! [`cleanup_stale`], which deletes namespaces (and kills the processes in them) left by test
//! processes that died without running `Drop`. A program that must clean up on Ctrl-C (the
//! demo) catches the signal and drops its `Topology`: `Drop` does not run on an uncaught signal.
//!
//! # Outcomes
//!
//! [`Topology::client`] runs `svcnet-echo client` in the source namespace and returns an
//! [`Outcome`]: `Replied { pod, peer, local }` (which pod answered, the source address it saw,
//! the address it received on), `Refused { reason }` (TCP reset or ICMP unreachable: a
//! `reject`), `Timeout` (a `drop`), or `Error`. The timeout is the builder's
//! [`TopologyBuilder::client_timeout`] (default 1 s) or [`ClientOpts::timeout`]; keep it small
//! (~300 ms) where a timeout is the expected result. [`Topology::clients`] makes several
//! attempts, each from a new source port, in one process (for load-balancing and affinity
//! checks; [`ClientOpts::source`] / [`ClientOpts::source_port`] pin the source address / port,
//! e.g. to reuse one UDP conntrack entry); [`Topology::clients_timed`] adds each attempt's
//! duration measured inside the namespace (for latency benchmarks, free of process start-up);
//! [`Topology::session`] keeps one TCP connection open and echoes line by line (to prove an
//! established connection survives a dataplane restart); [`Topology::http_get`] probes an HTTP
//! endpoint such as a health-check node port ([`HttpOutcome`]: status, headers, JSON body).
//!
//! The topology can change while a test runs: [`Topology::add_pod`] / [`Topology::remove_pod`],
//! [`Topology::start_echo`] / [`Topology::stop_echo`] (endpoints appearing and going away),
//! [`Topology::set_outside_via`] (send external traffic to another node), and
//! [`Topology::echo_server`] for servers on nodes (hostNetwork endpoints).
//!
//! # Processes
//!
//! [`Topology::spawn`] runs any binary inside a node (or any [`Place`]) as a [`Process`]: output
//! goes to files in [`Topology::log_dir`], [`Process::wait_for_output`] waits for a log line,
//! [`Process::terminate`] sends SIGTERM then SIGKILL, and dropping it kills it. When a test panics,
//! the log directory is kept and its path printed. [`Netns::command`] gives a raw
//! `std::process::Command` prefixed with `ip netns exec <ns>`; [`Netns::run`], [`Netns::sh`]
//! and [`Netns::nft`] run one-shot commands.
//!
//! # Kubernetes objects for the topology
//!
//! [`Topology::k8s_nodes`] and [`Topology::k8s_pod`] build Node and Pod objects whose names,
//! InternalIPs, pod CIDRs, pod IPs, `nodeName` and container ports match the namespaces, so
//! the objects given to the API server describe the cluster the packets actually flow through.
//!
//! # Reaching the host's API server from a node
//!
//! svcnet-proxy in a node namespace cannot see the host's loopback, where the embedded API
//! server listens. [`Topology::forward_from_host_to_nodes`]`(6443, api_addr)` makes it reachable
//! at `127.0.0.1:6443` inside every node (two byte relays joined by a Unix socket; nothing is
//! added to the host's network namespace), so the proxy's kubeconfig points there.
//!
//! # Finding binaries
//!
//! Tests of this crate use `env!("CARGO_BIN_EXE_svcnet-echo")`. Everything else uses
//! [`bins::locate`]`("svcnet-proxy")`, which looks for `SVCNET_E2E_BIN_SVCNET_PROXY`, then next to
//! the running executable and in `target/<profile>/` above a test's `deps/` directory. A
//! workspace-wide `cargo test` / `cargo nextest run` builds every binary first; otherwise run
//! `cargo build --bins --workspace` before the tests.
//!
//! # Writing a dataplane test
//!
//! A feature test builds the cluster, starts svcnet-proxy in every node namespace, and asserts
//! on what clients observe. svcnet-proxy's flags below are illustrative; use its real CLI.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use std::time::Duration;
//! use testkit::netns::{bins, plan, ClientOpts, Outcome, Proto, RefuseReason, Topology};
//!
//! /// Root only: ClusterIP balancing, masquerade for outside traffic, reject without endpoints.
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let topo = Topology::builder()
//!     .nodes(2)
//!     .pod("web-0", 1)
//!     .pod("web-1", 2)
//!     .outside_via(1) // LB / external IPs are routed to node1
//!     .client_timeout(Duration::from_millis(500))
//!     .build()?;
//! let proxy = bins::locate("svcnet-proxy")?;
//! let manifests = "tests/data/web.yaml"; // Service 10.96.0.10:80 → pods web-0, web-1 :8080
//! let mut proxies = Vec::new();
//! for node in topo.nodes() {
//!     // Either a one-shot programming from manifests …
//!     let mut p = topo.spawn(node, &proxy, [
//!         "apply", "-f", manifests,
//!         "--hostname-override", node.name(),
//!         "--cluster-cidr", &format!("{},{}", plan::CLUSTER_CIDR_V4, plan::CLUSTER_CIDR_V6),
//!     ])?;
//!     p.wait_timeout(Duration::from_secs(10))?;
//!     // … or a long-running `svcnet-proxy run --kubeconfig …` against the embedded API
//!     // server (made reachable in the node with `topo.forward_from_host_to_nodes(6443,
//!     // api_addr)?`), followed by `p.wait_for_output("synced", Duration::from_secs(10))?`.
//!     proxies.push(p);
//! }
//! let vip: SocketAddr = "10.96.0.10:80".parse()?;
//!
//! // Balancing: both endpoints answer over 20 new connections.
//! let outs = topo.clients(topo.pod("web-0")?, Proto::Tcp, vip, &ClientOpts::count(20))?;
//! let answered: std::collections::BTreeSet<_> = outs.iter().filter_map(|o| o.pod()).collect();
//! assert_eq!(answered.len(), 2, "{outs:?}");
//!
//! // externalTrafficPolicy Cluster from outside: masqueraded to node1's LAN address.
//! let out = topo.client(topo.outside()?, Proto::Tcp, "10.97.0.1:80".parse()?)?;
//! assert_eq!(out.peer_ip(), Some(topo.node(1)?.ipv4().into()));
//!
//! // A Service without endpoints is rejected at once, not timed out.
//! let out = topo.client(topo.pod("web-0")?, Proto::Tcp, "10.96.0.99:80".parse()?)?;
//! assert!(matches!(out, Outcome::Refused { reason: RefuseReason::ConnectionRefused }));
//!
//! // Established connections survive a proxy restart.
//! let mut session = topo.session(topo.pod("web-0")?, vip)?;
//! proxies[0].terminate(Duration::from_secs(2))?;
//! // … start the proxy again, then:
//! assert!(session.send("still there?")?.is_replied());
//! # Ok(())
//! # }
//! ```
//!
//! # SCTP
//!
//! The CI kernel is built without `CONFIG_IP_SCTP` (an SCTP socket fails with
//! `EPROTONOSUPPORT`, and there are no loadable modules), but SCTP conntrack and NAT
//! (`CONFIG_NF_CT_PROTO_SCTP`) are built in. `svcnet-echo` therefore speaks SCTP over raw IP
//! sockets ([`sctp`]): the client sends a real INIT, the server answers with an INIT-ACK whose
//! State Cookie carries the JSON reply, or an ABORT for a port it does not serve. Conntrack
//! tracks and NATs these like any SCTP association attempt, so ClusterIP / NodePort DNAT,
//! reject and drop are observable for SCTP too: `Replied`, `Refused` (ABORT → connection
//! refused, ICMP → unreachable; a namespace without any SCTP server answers with ICMP
//! protocol-unreachable → [`RefuseReason::ProtocolUnreachable`]), `Timeout`. There is no
//! long-lived SCTP session (the association is never completed).

pub mod bins;
mod cleanup;
mod error;
mod exec;
pub mod k8s;
mod outcome;
pub mod plan;
mod process;
pub mod sctp;
mod topology;
pub mod wire;

pub use cleanup::{cleanup_stale, stale_names, DEFAULT_PREFIX};
pub use error::{Error, Result};
pub use exec::{list_netns, require_root, Netns};
pub use outcome::{ClientOpts, HttpOutcome, Outcome};
pub use plan::Cidr;
pub use process::{Process, TcpSession};
pub use topology::{
    EchoPorts, Node, Outside, Place, Pod, Topology, TopologyBuilder, DEFAULT_ECHO_PORT,
};
pub use wire::{HttpResponse, Proto, RefuseReason};
