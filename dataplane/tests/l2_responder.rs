//! The ARP/NDP responder with real packets: two network namespaces joined by a veth pair, the
//! responder running in the "node" one, the kernel of the "client" one resolving and connecting.
//! Needs root (network namespaces, raw sockets); CI runs as root.
//!
//! The node holds the announced addresses on its loopback (so a connection to them is accepted)
//! with `arp_ignore=1` on the veth, and IPv6 answers solicitations only for addresses on the
//! receiving interface: the kernel therefore never answers for them itself, and a client that
//! resolves them resolved them through the responder. Duplicate address detection is off in both
//! namespaces: until it completes, a fresh interface ignores neighbour advertisements.

// Test code unwraps; one unsafe call enters a network namespace (setns) in the node thread.
#![allow(clippy::unwrap_used, unsafe_code)]

use std::collections::BTreeSet;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use dataplane::announce::packet_socket::interfaces;
use dataplane::announce::responder::{Counters, Responder};
use tokio::sync::{mpsc, oneshot, watch};

const V4: &str = "192.168.77.100";
const V6: &str = "fd00:77::100";
const V4_MOVED: &str = "192.168.77.200";
const V6_MOVED: &str = "fd00:77::200";

fn sh(script: &str) -> (bool, String) {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn must(script: &str) -> String {
    let (ok, out) = sh(script);
    assert!(ok, "{script}: {out}");
    out
}

/// Both namespaces, deleted on drop.
struct Lan {
    node: String,
    client: String,
}

impl Lan {
    fn new() -> Lan {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = format!(
            "{}{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let lan = Lan {
            node: format!("svl2-{id}-node"),
            client: format!("svl2-{id}-cli"),
        };
        let (n, c) = (&lan.node, &lan.client);
        must(&format!(
            "set -e
             ip netns add {n}; ip netns add {c}
             for ns in {n} {c}; do
               ip netns exec $ns sysctl -qw net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.accept_dad=0
             done
             ip link add l2n{id} netns {n} type veth peer name l2c{id} netns {c}
             ip -n {n} link set lo up; ip -n {c} link set lo up
             ip -n {n} link set l2n{id} name eth0; ip -n {c} link set l2c{id} name eth0
             ip netns exec {n} sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.eth0.arp_ignore=1
             ip -n {n} addr add 192.168.77.2/24 dev eth0; ip -n {c} addr add 192.168.77.1/24 dev eth0
             ip -n {n} addr add fd00:77::2/64 dev eth0 nodad; ip -n {c} addr add fd00:77::1/64 dev eth0 nodad
             for a in {V4}/32 {V4_MOVED}/32; do ip -n {n} addr add $a dev lo; done
             for a in {V6}/128 {V6_MOVED}/128; do ip -n {n} addr add $a dev lo; done
             ip -n {n} link set eth0 up; ip -n {c} link set eth0 up"
        ));
        // The kernel brings a link's carrier up asynchronously (up to a second after `link set
        // up`); until then frames are dropped and the neighbour code is not running.
        for _ in 0..50 {
            let up = |ns: &str| {
                sh(&format!("ip -n {ns} link show eth0"))
                    .1
                    .contains("state UP")
            };
            if up(&lan.node) && up(&lan.client) {
                return lan;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("veth links of {} did not come up", lan.node);
    }

    /// Whether a TCP connection from the client to `ip` port 7 succeeds within two seconds.
    fn connects(&self, ip: &str) -> bool {
        sh(&format!(
            "ip netns exec {} timeout 2 bash -c 'exec 3<>/dev/tcp/{ip}/7'",
            self.client
        ))
        .0
    }

    /// The MAC the client's neighbour table has for `ip`, if any.
    fn neighbour(&self, ip: &str) -> Option<String> {
        let out = must(&format!("ip -n {} neigh show {ip} dev eth0", self.client));
        let words: Vec<&str> = out.split_whitespace().collect();
        let at = words.iter().position(|w| *w == "lladdr")?;
        words.get(at + 1).map(|s| s.to_string())
    }

    fn flush(&self) {
        must(&format!("ip -n {} neigh flush dev eth0", self.client));
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = sh(&format!(
            "ip netns del {}; ip netns del {}",
            self.node, self.client
        ));
    }
}

enum Cmd {
    Set(BTreeSet<IpAddr>),
    Announce(IpAddr, oneshot::Sender<()>),
}

/// Runs the responder (and a TCP listener on port 7) inside `netns` on a thread of its own.
/// Returns the command channel, the responder's counters and the node's MAC.
fn start_node(
    netns: &str,
) -> (
    mpsc::Sender<Cmd>,
    Arc<Counters>,
    String,
    watch::Sender<bool>,
) {
    let path = format!("/run/netns/{netns}");
    let (tx, mut rx) = mpsc::channel::<Cmd>(8);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let counters = Arc::new(Counters::default());
    let c = counters.clone();
    std::thread::spawn(move || {
        let f = File::open(path).unwrap();
        // SAFETY: setns on this thread only, with an open namespace file.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let eth0 = interfaces().unwrap().remove("eth0").unwrap();
            let mac = eth0.mac.to_string();
            let responder = Arc::new(Responder::open(eth0, c).unwrap());
            // Dual-stack: IPv4 connections arrive as v4-mapped addresses.
            let listener = tokio::net::TcpListener::bind("[::]:7").await.unwrap();
            tokio::spawn(async move {
                loop {
                    let _ = listener.accept().await;
                }
            });
            let r = responder.clone();
            tokio::spawn(async move { r.run(stop_rx).await });
            ready_tx.send(mac).unwrap();
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    Cmd::Set(addrs) => responder.set(addrs).unwrap(),
                    Cmd::Announce(ip, done) => {
                        responder.announce(ip, 3, Duration::from_millis(100)).await;
                        let _ = done.send(());
                    }
                }
            }
        });
    });
    let mac = ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    (tx, counters, mac, stop_tx)
}

fn addrs(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

#[test]
fn clients_resolve_and_reach_announced_addresses_only_while_announced() {
    assert!(
        nix_is_root(),
        "this test needs root (network namespaces, raw sockets)"
    );
    let lan = Lan::new();
    let (cmd, counters, mac, _stop) = start_node(&lan.node);

    // Not announced yet: nobody answers for the addresses, so the client cannot reach them.
    assert!(!lan.connects(V4), "reached {V4} before it was announced");
    assert!(!lan.connects(V6), "reached {V6} before it was announced");

    cmd.blocking_send(Cmd::Set(addrs(&[V4, V6]))).unwrap();
    lan.flush();
    assert!(lan.connects(V4), "{V4} not reachable once announced");
    assert!(lan.connects(V6), "{V6} not reachable once announced");
    assert_eq!(lan.neighbour(V4).as_deref(), Some(mac.as_str()));
    assert_eq!(lan.neighbour(V6).as_deref(), Some(mac.as_str()));
    let c = &counters;
    assert!(c.arp_replies.get() >= 1);
    assert!(c.nd_replies.get() >= 1);

    // Withdrawn: fresh resolutions go unanswered again.
    cmd.blocking_send(Cmd::Set(BTreeSet::new())).unwrap();
    lan.flush();
    assert!(!lan.connects(V4), "{V4} still answered after withdrawal");
    assert!(!lan.connects(V6), "{V6} still answered after withdrawal");
}

#[test]
fn takeover_announcements_update_clients_that_cached_another_mac() {
    assert!(
        nix_is_root(),
        "this test needs root (network namespaces, raw sockets)"
    );
    let lan = Lan::new();
    let (cmd, counters, mac, _stop) = start_node(&lan.node);
    // The client believes the addresses live at another node's MAC (the previous announcer).
    for ip in [V4_MOVED, V6_MOVED] {
        must(&format!(
            "ip -n {} neigh replace {ip} lladdr 02:00:00:00:00:99 dev eth0 nud stale",
            lan.client
        ));
    }
    cmd.blocking_send(Cmd::Set(addrs(&[V4_MOVED, V6_MOVED])))
        .unwrap();
    for ip in [V4_MOVED, V6_MOVED] {
        let (done, wait) = oneshot::channel();
        cmd.blocking_send(Cmd::Announce(ip.parse().unwrap(), done))
            .unwrap();
        wait.blocking_recv().unwrap();
    }
    for ip in [V4_MOVED, V6_MOVED] {
        assert_eq!(
            lan.neighbour(ip).as_deref(),
            Some(mac.as_str()),
            "{ip}: the client did not learn the new MAC from the announcements"
        );
    }
    assert_eq!(counters.announcements.get(), 6);
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
