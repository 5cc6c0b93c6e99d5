//! Tests of the network-namespace harness (`testkit::netns`) with real packets.
//!
//! **Every test here needs root** (it creates network namespaces, veths and bridges); CI runs as
//! root. All traffic stays inside namespaces the tests create, plus the host's loopback in the
//! relay test. The whole file runs in a few seconds: expected timeouts use a 300 ms client
//! timeout.
//!
//! One file: the tests share topology builders and helpers, and one binary keeps the
//! namespace-name sweep of stale runs in one place.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use testkit::netns::{
    cleanup_stale, list_netns, ClientOpts, EchoPorts, Error, HttpOutcome, Outcome, Proto,
    RefuseReason, Topology, TopologyBuilder, DEFAULT_ECHO_PORT,
};

const SHORT: Duration = Duration::from_millis(300);

fn builder() -> TopologyBuilder {
    Topology::builder().echo_binary(
        testkit::netns::bins::locate("svcnet-echo")
            .expect("svcnet-echo is built (cargo build --workspace --bins)"),
    )
}

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// Asserts a reply from `pod` that saw `peer_ip` as the source and `local` as the destination.
#[track_caller]
fn assert_reply(outcome: &Outcome, pod: &str, peer_ip: IpAddr, local: SocketAddr) {
    match outcome {
        Outcome::Replied {
            pod: p,
            peer,
            local: l,
        } => {
            assert_eq!(p, pod, "wrong server answered: {outcome:?}");
            assert_eq!(
                peer.ip(),
                peer_ip,
                "server saw the wrong source: {outcome:?}"
            );
            assert_eq!(*l, local, "server saw the wrong destination: {outcome:?}");
        }
        other => panic!("expected a reply from {pod}, got {other:?}"),
    }
}

/// Whether a process is gone (or a zombie waiting for a reaper that is not us).
fn pid_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// Waits until process `pid` runs inside namespace `ns` (`ip netns exec` takes a moment).
fn wait_in_netns(ns: &str, pid: u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let out = std::process::Command::new("ip")
            .args(["netns", "pids", ns])
            .output()
            .unwrap();
        let pids = String::from_utf8_lossy(&out.stdout).to_string();
        if pids.split_whitespace().any(|p| p == pid.to_string()) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{pid} never entered {ns}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// PIDs whose command line mentions `needle`.
fn pids_mentioning(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// Root only. Pod to pod on one node and across nodes, IPv4 and IPv6, TCP, UDP and (raw-socket)
/// SCTP: the right
/// pod answers and reports the client pod's own address as the peer (no NAT anywhere).
#[test]
fn pod_to_pod_same_node_and_across_nodes_dual_stack() {
    let topo = builder()
        .pod("a", 1)
        .pod("b", 1)
        .pod("c", 2)
        .build()
        .unwrap();
    let (a, b, c) = (
        topo.pod("a").unwrap(),
        topo.pod("b").unwrap(),
        topo.pod("c").unwrap(),
    );
    assert_eq!(a.ipv4().to_string(), "10.244.1.2");
    assert_eq!(b.ipv6().to_string(), "fd00:244:1::3");
    assert_eq!(c.ipv4().to_string(), "10.244.2.2");
    assert_eq!(c.node_name(), "node2");

    for target in [b, c] {
        for (src, dst) in [
            (IpAddr::from(a.ipv4()), IpAddr::from(target.ipv4())),
            (a.ipv6().into(), target.ipv6().into()),
        ] {
            let to = sa(dst, DEFAULT_ECHO_PORT);
            for proto in [Proto::Tcp, Proto::Udp, Proto::Sctp] {
                let out = topo.client(a, proto, to).unwrap();
                assert_reply(&out, target.name(), src, to);
            }
        }
    }
}

/// Root only. An outside client reaches an echo server on a node's LAN addresses (v4 and v6)
/// and is seen with its own address; it has no route to pod IPs.
#[test]
fn outside_reaches_node_ips_but_not_pods() {
    let topo = builder().pod("a", 2).build().unwrap();
    let node = topo.node(2).unwrap();
    let outside = topo.outside().unwrap();
    let _server = topo
        .echo_server(node, "node2-host", &EchoPorts::new(&[9000], &[9000]))
        .unwrap();
    for (src, dst) in [
        (IpAddr::from(outside.ipv4()), IpAddr::from(node.ipv4())),
        (outside.ipv6().into(), node.ipv6().into()),
    ] {
        for proto in [Proto::Tcp, Proto::Udp] {
            let out = topo.client(outside, proto, sa(dst, 9000)).unwrap();
            assert_reply(&out, "node2-host", src, sa(dst, 9000));
        }
    }
    // Nothing listens on the node's port 10256: the HTTP probe is refused, not timed out.
    let probe = topo
        .http_get(outside, sa(node.ipv4(), 10256), "/healthz")
        .unwrap();
    assert_eq!(
        probe,
        HttpOutcome::Refused {
            reason: RefuseReason::ConnectionRefused
        }
    );
    let pod = topo.pod("a").unwrap();
    let out = topo
        .client(outside, Proto::Tcp, sa(pod.ipv4(), DEFAULT_ECHO_PORT))
        .unwrap();
    assert_eq!(
        out,
        Outcome::Refused {
            reason: RefuseReason::NetworkUnreachable
        }
    );
}

/// Root only. Outcome detection: a closed port is refused (TCP reset, ICMP port unreachable),
/// an nft drop and a black-hole route time out, and removing them restores replies.
#[test]
fn refused_and_timeout_are_told_apart() {
    let topo = builder()
        .pod("a", 1)
        .pod("c", 2)
        .client_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let (a, c) = (topo.pod("a").unwrap(), topo.pod("c").unwrap());
    let short = ClientOpts::default().timeout(SHORT);

    // Closed ports (SCTP: the echo server answers ABORT like an SCTP stack).
    for proto in [Proto::Tcp, Proto::Udp, Proto::Sctp] {
        for dst in [IpAddr::from(c.ipv4()), c.ipv6().into()] {
            let out = topo.clients(a, proto, sa(dst, 9), &short).unwrap();
            assert_eq!(
                out,
                vec![Outcome::Refused {
                    reason: RefuseReason::ConnectionRefused
                }],
                "{proto} to {dst}"
            );
        }
    }

    // An nft drop in a throwaway table on node 2 (forward hook, towards pod c).
    let node2 = topo.node(2).unwrap();
    let rules = format!(
        "table inet svntest {{\n chain blocker {{\n type filter hook forward priority 0; policy accept;\n \
         ip daddr {} drop\n ip6 daddr {} drop\n }}\n}}\n",
        c.ipv4(),
        c.ipv6()
    );
    node2.netns().nft(&rules).unwrap();
    for proto in [Proto::Tcp, Proto::Udp, Proto::Sctp] {
        for dst in [IpAddr::from(c.ipv4()), c.ipv6().into()] {
            let out = topo
                .clients(a, proto, sa(dst, DEFAULT_ECHO_PORT), &short)
                .unwrap();
            assert_eq!(out, vec![Outcome::Timeout], "{proto} to {dst}");
        }
    }
    node2.netns().nft("delete table inet svntest").unwrap();

    // No SCTP endpoint at all in the target namespace: ICMP protocol unreachable.
    for dst in [IpAddr::from(node2.ipv4()), node2.ipv6().into()] {
        let out = topo.clients(a, Proto::Sctp, sa(dst, 80), &short).unwrap();
        assert_eq!(
            out,
            vec![Outcome::Refused {
                reason: RefuseReason::ProtocolUnreachable
            }],
            "sctp to {dst}"
        );
    }
    let out = topo
        .client(a, Proto::Tcp, sa(c.ipv4(), DEFAULT_ECHO_PORT))
        .unwrap();
    assert_eq!(out.pod(), Some("c"));

    // A black-hole route on node 1 for pod c's IPv4 address.
    let node1 = topo.node(1).unwrap();
    let route = format!("{}/32", c.ipv4());
    topo.exec(node1, "ip", ["route", "add", "blackhole", &route])
        .unwrap();
    let out = topo
        .clients(a, Proto::Udp, sa(c.ipv4(), DEFAULT_ECHO_PORT), &short)
        .unwrap();
    assert_eq!(out, vec![Outcome::Timeout]);
    topo.exec(node1, "ip", ["route", "del", "blackhole", &route])
        .unwrap();
    let out = topo
        .client(a, Proto::Udp, sa(c.ipv4(), DEFAULT_ECHO_PORT))
        .unwrap();
    assert_eq!(out.pod(), Some("c"));
}

/// Root only. Several attempts use new source ports; `--source` picks the source address.
#[test]
fn repeated_attempts_and_source_address() {
    let topo = builder().nodes(1).pod("a", 1).pod("b", 1).build().unwrap();
    let (a, b) = (topo.pod("a").unwrap(), topo.pod("b").unwrap());
    let outs = topo
        .clients(
            a,
            Proto::Udp,
            sa(b.ipv4(), DEFAULT_ECHO_PORT),
            &ClientOpts::count(4),
        )
        .unwrap();
    assert_eq!(outs.len(), 4);
    let ports: std::collections::BTreeSet<u16> = outs
        .iter()
        .map(|o| match o {
            Outcome::Replied { peer, .. } => peer.port(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        ports.len(),
        4,
        "every attempt needs its own source port: {outs:?}"
    );

    let outs = topo
        .clients(
            a,
            Proto::Tcp,
            sa(b.ipv6(), DEFAULT_ECHO_PORT),
            &ClientOpts::default().source(a.ipv6().into()),
        )
        .unwrap();
    assert_eq!(outs[0].peer_ip(), Some(a.ipv6().into()));
    // Timed attempts: the client measures each one inside the namespace.
    let timed = topo
        .clients_timed(
            a,
            Proto::Tcp,
            sa(b.ipv4(), DEFAULT_ECHO_PORT),
            &ClientOpts::count(5),
        )
        .unwrap();
    assert_eq!(timed.len(), 5);
    for (outcome, rtt) in &timed {
        assert!(outcome.is_replied(), "{timed:?}");
        let rtt = rtt.expect("a replied attempt carries its duration");
        assert!(
            rtt > Duration::ZERO && rtt <= topo.client_timeout(),
            "{rtt:?}"
        );
    }
    // A fixed source port: every attempt reuses it (UDP and SCTP).
    for (proto, port) in [(Proto::Udp, 40000), (Proto::Sctp, 40001)] {
        let outs = topo
            .clients(
                a,
                proto,
                sa(b.ipv4(), DEFAULT_ECHO_PORT),
                &ClientOpts::count(3).source_port(port),
            )
            .unwrap();
        for o in &outs {
            assert!(
                matches!(o, Outcome::Replied { peer, .. } if peer.port() == port),
                "{proto}: {outs:?}"
            );
        }
    }
    // A source address the client does not own is a local error, not a network outcome.
    let err = topo
        .clients(
            a,
            Proto::Tcp,
            sa(b.ipv4(), DEFAULT_ECHO_PORT),
            &ClientOpts::default().source(b.ipv4().into()),
        )
        .unwrap();
    assert!(
        matches!(&err[0], Outcome::Error { error } if error.contains("bind")),
        "{err:?}"
    );
}

/// Root only. A long-lived session keeps one connection: every echo comes back over the same
/// source port with an increasing sequence number; stopping the server ends the session.
#[test]
fn long_lived_tcp_session() {
    let mut topo = builder().pod("a", 1).pod("c", 2).build().unwrap();
    let a = topo.pod("a").unwrap().clone();
    let c_ip = topo.pod("c").unwrap().ipv6();
    let mut session = topo.session(&a, sa(c_ip, DEFAULT_ECHO_PORT)).unwrap();
    let Outcome::Replied { peer: first, .. } = session.greeting().clone() else {
        panic!("no greeting: {:?}", session.greeting());
    };
    assert_eq!(first.ip(), IpAddr::from(a.ipv6()));
    for i in 0..3 {
        match session.send(&format!("hello {i}")).unwrap() {
            Outcome::Replied { pod, peer, .. } => {
                assert_eq!(pod, "c");
                assert_eq!(peer, first, "the echo must come over the same connection");
            }
            other => panic!("{other:?}"),
        }
    }
    topo.stop_echo("c").unwrap();
    let after = session.send("anyone there?").unwrap();
    assert!(!after.is_replied(), "server is gone, yet: {after:?}");

    // A fresh session to a restarted server works, and close() ends the client cleanly.
    topo.start_echo("c", &EchoPorts::new(&[DEFAULT_ECHO_PORT], &[]))
        .unwrap();
    let mut session = topo.session(&a, sa(c_ip, DEFAULT_ECHO_PORT)).unwrap();
    assert!(session.send("x").unwrap().is_replied());
    assert!(session.close().unwrap().success());
}

/// Root only. Pods can be added and removed on a live topology.
#[test]
fn add_and_remove_pods() {
    let mut topo = builder().pod("a", 1).build().unwrap();
    let late_ip = topo.add_pod("late", 2).unwrap().ipv4();
    let a = topo.pod("a").unwrap().clone();
    let to = sa(late_ip, DEFAULT_ECHO_PORT);
    assert_eq!(topo.client(&a, Proto::Tcp, to).unwrap().pod(), Some("late"));
    let ns = topo.pod("late").unwrap().netns().name().to_string();
    topo.remove_pod("late").unwrap();
    assert!(!list_netns().unwrap().contains(&ns));
    assert!(topo.pod("late").is_err());
    assert!(
        topo.add_pod("a", 1).is_err(),
        "duplicate names are rejected"
    );
    assert!(topo.add_pod("Bad_Name", 1).is_err());
    assert!(topo.add_pod("x", 9).is_err(), "unknown node");
    let out = topo
        .clients(&a, Proto::Tcp, to, &ClientOpts::default().timeout(SHORT))
        .unwrap();
    assert!(!out[0].is_replied(), "{out:?}");
}

/// Root only. Dropping the topology kills every process started in it (managed ones, stray
/// ones, and the relays it runs on the host) and deletes every namespace.
#[test]
fn drop_leaves_no_namespaces_or_processes() {
    let topo = builder().pod("a", 1).pod("b", 2).build().unwrap();
    let namespaces = topo.namespaces().to_vec();
    assert_eq!(namespaces.len(), 1 + 2 + 1 + 2, "{namespaces:?}");
    let listed = list_netns().unwrap();
    for ns in &namespaces {
        assert!(listed.contains(ns), "{ns} missing from {listed:?}");
    }
    let node = topo.node(1).unwrap();
    let mut managed = topo.spawn(node, "sleep", ["300"]).unwrap();
    assert!(managed.is_running());
    wait_in_netns(node.netns().name(), managed.pid());
    // A process that escapes management (daemonised): only namespace cleanup catches it.
    topo.exec(node, "sh", ["-c", "sleep 301 >/dev/null 2>&1 &"])
        .unwrap();
    let mut pids = vec![managed.pid()];
    for ns in &namespaces {
        let out = std::process::Command::new("ip")
            .args(["netns", "pids", ns])
            .output()
            .unwrap();
        pids.extend(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(|p| p.parse::<u32>().unwrap()),
        );
    }
    // sleep 300, sleep 301, and one echo server per pod.
    assert!(pids.len() >= 4, "{pids:?}");
    let log_dir = topo.log_dir().to_path_buf();
    // Relays: one on the host and one in the node, per node; found by their socket path.
    topo.forward_from_host_to_nodes(6443, "127.0.0.1:9".parse().unwrap())
        .unwrap();
    let relays = pids_mentioning(&log_dir.to_string_lossy());
    assert_eq!(relays.len(), 4, "{relays:?}");
    pids.extend(relays);
    drop(topo);
    // The managed process is dead even before its handle is dropped.
    assert!(managed.wait_timeout(Duration::from_secs(2)).is_ok());
    drop(managed);
    let listed = list_netns().unwrap();
    for ns in &namespaces {
        assert!(!listed.contains(ns), "{ns} still exists");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while pids.iter().any(|&p| !pid_dead(p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let alive: Vec<u32> = pids.iter().copied().filter(|&p| !pid_dead(p)).collect();
    assert!(alive.is_empty(), "still running: {alive:?}");
    assert!(!Path::new(&log_dir).exists());
}

/// Root only. `cleanup_stale` removes namespaces (and their processes) whose creating pid is
/// dead, and leaves those of live processes alone.
#[test]
fn cleanup_stale_removes_only_dead_owners() {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = format!("svntest-{dead}-beef-lan");
    let live = "svntest-1-beef-lan".to_string(); // pid 1 is always alive
    for ns in [&stale, &live] {
        let st = std::process::Command::new("ip")
            .args(["netns", "add", ns])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let mut orphan = std::process::Command::new("ip")
        .args(["netns", "exec", &stale, "sleep", "30"])
        .spawn()
        .unwrap();
    // `ip netns exec` needs a moment before the orphan is inside the namespace.
    wait_in_netns(&stale, orphan.id());
    let removed = cleanup_stale("svntest").unwrap();
    let listed = list_netns().unwrap();
    let _ = std::process::Command::new("ip")
        .args(["netns", "delete", &live])
        .status();
    assert_eq!(removed, vec![stale.clone()]);
    assert!(!listed.contains(&stale));
    assert!(listed.contains(&live));
    // The orphan inside the stale namespace was killed.
    let status = orphan.wait().unwrap();
    assert!(!status.success());
}

/// Root only. Bad topology descriptions are errors, not panics, and builds that fail half-way
/// remove what they created.
#[test]
fn invalid_specs_are_rejected_cleanly() {
    let b = || builder().prefix("svninv");
    assert!(matches!(b().nodes(0).build(), Err(Error::InvalidSpec(_))));
    assert!(matches!(b().nodes(51).build(), Err(Error::InvalidSpec(_))));
    assert!(matches!(
        b().outside_via(3).build(),
        Err(Error::InvalidSpec(_))
    ));
    assert!(matches!(
        builder().prefix("bad-prefix").build(),
        Err(Error::InvalidSpec(_))
    ));
    // These two fail after the LAN and the nodes exist.
    assert!(matches!(
        b().pod("a", 1).pod("a", 2).build(),
        Err(Error::InvalidSpec(_))
    ));
    assert!(matches!(b().pod("a", 3).build(), Err(Error::NotFound(_))));
    let leaked: Vec<String> = list_netns()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("svninv-"))
        .collect();
    assert!(leaked.is_empty(), "failed builds leaked {leaked:?}");
}

/// Root only. The topology carries Service-style NAT the way a node agent needs: a throwaway
/// nft table on node 1 (not svcnet-proxy) DNATs fake Service IPs, and replies are un-NATed for a
/// same-node backend (bridged reply, needs bridge netfilter on cbr0), a cross-node backend, a
/// hairpin (pod → its own Service → itself, masqueraded), and an outside client reaching an
/// external IP via node 1 (masqueraded to node 1's LAN address).
#[test]
fn service_style_nat_works_through_the_topology() {
    let topo = builder()
        .pod("a", 1)
        .pod("b", 1)
        .pod("c", 2)
        .build()
        .unwrap();
    let (a, b, c) = (
        topo.pod("a").unwrap(),
        topo.pod("b").unwrap(),
        topo.pod("c").unwrap(),
    );
    let node1 = topo.node(1).unwrap();
    let node1_ip = node1.ipv4();
    let p = DEFAULT_ECHO_PORT;
    let rules = format!(
        "table inet svntest {{
  chain pre {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr 10.96.0.10 tcp dport 80 dnat ip to {b4}:{p}
    ip6 daddr fd00:96::10 tcp dport 80 dnat ip6 to [{b6}]:{p}
    ip daddr 10.96.0.11 udp dport 53 dnat ip to {c4}:{p}
    ip daddr 10.96.0.12 tcp dport 80 dnat ip to {a4}:{p}
    ip daddr 10.97.0.1 tcp dport 80 dnat ip to {c4}:{p}
    ip6 daddr fd00:97::1 udp dport 80 dnat ip6 to [{c6}]:{p}
    ip daddr 10.96.0.13 sctp dport 80 dnat ip to {c4}:{p}
    ip6 daddr fd00:96::13 sctp dport 80 dnat ip6 to [{c6}]:{p}
  }}
  chain filter {{
    type filter hook prerouting priority dstnat - 10; policy accept;
    ip daddr 10.96.0.99 reject
  }}
  chain post {{
    type nat hook postrouting priority srcnat; policy accept;
    ct status dnat ip saddr {a4} ip daddr {a4} masquerade
    ct status dnat ip saddr != 10.244.0.0/16 masquerade
    ct status dnat ip6 saddr != fd00:244::/32 masquerade
  }}
}}
",
        a4 = a.ipv4(),
        b4 = b.ipv4(),
        b6 = b.ipv6(),
        c4 = c.ipv4(),
        c6 = c.ipv6(),
    );
    node1.netns().nft(&rules).unwrap();

    let same_node = topo.client(a, Proto::Tcp, sa([10, 96, 0, 10], 80)).unwrap();
    assert_reply(&same_node, "b", a.ipv4().into(), sa(b.ipv4(), p));
    let vip6: IpAddr = "fd00:96::10".parse().unwrap();
    let same_node6 = topo.client(a, Proto::Tcp, sa(vip6, 80)).unwrap();
    assert_reply(&same_node6, "b", a.ipv6().into(), sa(b.ipv6(), p));
    let cross = topo.client(a, Proto::Udp, sa([10, 96, 0, 11], 53)).unwrap();
    assert_reply(&cross, "c", a.ipv4().into(), sa(c.ipv4(), p));
    let hairpin = topo.client(a, Proto::Tcp, sa([10, 96, 0, 12], 80)).unwrap();
    assert_reply(&hairpin, "a", [10, 244, 1, 1].into(), sa(a.ipv4(), p));
    let outside = topo.outside().unwrap();
    let external = topo
        .client(outside, Proto::Tcp, sa([10, 97, 0, 1], 80))
        .unwrap();
    assert_reply(&external, "c", node1.ipv4().into(), sa(c.ipv4(), p));
    let ext6: IpAddr = "fd00:97::1".parse().unwrap();
    let external6 = topo.client(outside, Proto::Udp, sa(ext6, 80)).unwrap();
    assert_reply(&external6, "c", node1.ipv6().into(), sa(c.ipv6(), p));
    // Routed via node 2, which has no such rule, the external IP does not answer.
    let mut topo = topo;
    topo.set_outside_via(2).unwrap();
    let outside = topo.outside().unwrap();
    assert_eq!(outside.via_node(), 2);
    let elsewhere = topo
        .clients(
            outside,
            Proto::Tcp,
            sa([10, 97, 0, 1], 80),
            &ClientOpts::default().timeout(SHORT),
        )
        .unwrap();
    assert!(!elsewhere[0].is_replied(), "{elsewhere:?}");
    topo.set_outside_via(1).unwrap();
    let (a, c) = (topo.pod("a").unwrap(), topo.pod("c").unwrap());
    let back = topo
        .client(topo.outside().unwrap(), Proto::Tcp, sa([10, 97, 0, 1], 80))
        .unwrap();
    assert_reply(&back, "c", node1_ip.into(), sa(c.ipv4(), p));

    // SCTP is tracked and NATed like TCP/UDP.
    let sctp4 = topo
        .client(a, Proto::Sctp, sa([10, 96, 0, 13], 80))
        .unwrap();
    assert_reply(&sctp4, "c", a.ipv4().into(), sa(c.ipv4(), p));
    let vip6: IpAddr = "fd00:96::13".parse().unwrap();
    let sctp6 = topo.client(a, Proto::Sctp, sa(vip6, 80)).unwrap();
    assert_reply(&sctp6, "c", a.ipv6().into(), sa(c.ipv6(), p));
    // An nft `reject` (what a Service without endpoints gets) is "refused" for every protocol.
    for proto in [Proto::Tcp, Proto::Udp, Proto::Sctp] {
        let out = topo.client(a, proto, sa([10, 96, 0, 99], 80)).unwrap();
        assert_eq!(
            out,
            Outcome::Refused {
                reason: RefuseReason::ConnectionRefused
            },
            "{proto}"
        );
    }
}

/// A one-shot HTTP server on the host's loopback answering `count` requests with their path.
fn loopback_http_server(count: usize) -> (SocketAddr, std::thread::JoinHandle<()>) {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        for _ in 0..count {
            let (mut conn, _) = listener.accept().unwrap();
            let mut first = String::new();
            let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
            reader.read_line(&mut first).unwrap();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
            }
            let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}",
                path.len()
            )
            .unwrap();
        }
    });
    (addr, handle)
}

/// Root only. A service on the host's loopback (standing in for the embedded API server) is
/// reachable at 127.0.0.1:6443 inside every node after `forward_from_host_to_nodes`, and not
/// from namespaces that were not given a relay.
#[test]
fn host_loopback_service_reaches_nodes_through_relays() {
    let topo = builder().pod("a", 1).build().unwrap();
    let (api, server) = loopback_http_server(2);
    let inside = topo.forward_from_host_to_nodes(6443, api).unwrap();
    assert_eq!(inside.to_string(), "127.0.0.1:6443");
    for (i, node) in topo.nodes().iter().enumerate() {
        let path = format!("/version/{i}");
        let got = topo.http_get(node, inside, &path).unwrap();
        assert_eq!(got.status(), Some(200), "{got:?}");
        assert_eq!(got.response().unwrap().body, path);
    }
    server.join().unwrap();
    let pod = topo.pod("a").unwrap();
    let got = topo.http_get(pod, inside, "/").unwrap();
    assert_eq!(
        got,
        HttpOutcome::Refused {
            reason: RefuseReason::ConnectionRefused
        }
    );
}

/// Root only. Node and Pod objects describe the namespaces: names, InternalIPs, pod CIDRs, pod
/// IPs (IPv4 first), nodeName, Ready, and the ports the echo server listens on.
#[test]
fn kubernetes_objects_match_the_topology() {
    let mut topo = builder().pod("web-0", 2).build().unwrap();
    let nodes = topo.k8s_nodes().unwrap();
    assert_eq!(nodes.len(), 2);
    let n2 = &nodes[1];
    assert_eq!(n2.metadata.name.as_deref(), Some("node2"));
    let spec = n2.spec.as_ref().unwrap();
    assert_eq!(
        spec.pod_cidrs.as_deref().unwrap(),
        ["10.244.2.0/24", "fd00:244:2::/64"]
    );
    let addrs: Vec<(String, String)> = n2
        .status
        .as_ref()
        .unwrap()
        .addresses
        .as_ref()
        .unwrap()
        .iter()
        .map(|a| (a.type_.clone(), a.address.clone()))
        .collect();
    assert_eq!(addrs[0], ("InternalIP".into(), "192.168.200.12".into()));
    assert_eq!(addrs[1], ("InternalIP".into(), "fd00:200::12".into()));

    let labels = [("app".to_string(), "web".to_string())].into();
    let pod = topo.k8s_pod("web-0", "default", &labels).unwrap();
    assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(pod.metadata.labels.as_ref(), Some(&labels));
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some("node2")
    );
    let status = pod.status.as_ref().unwrap();
    let ips: Vec<&str> = status
        .pod_ips
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| p.ip.as_str())
        .collect();
    assert_eq!(ips, ["10.244.2.2", "fd00:244:2::2"]);
    assert!(status
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True"));
    let ports: Vec<(String, i32, String)> = pod.spec.as_ref().unwrap().containers[0]
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap(),
                p.container_port,
                p.protocol.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("tcp-8080".into(), 8080, "TCP".into()),
            ("udp-8080".into(), 8080, "UDP".into()),
            ("sctp-8080".into(), 8080, "SCTP".into())
        ]
    );
    // Restarting the echo server on other ports changes the declared ports.
    topo.start_echo("web-0", &EchoPorts::new(&[9090], &[]))
        .unwrap();
    let pod = topo.k8s_pod("web-0", "default", &labels).unwrap();
    let declared = pod.spec.unwrap().containers[0].ports.clone().unwrap();
    assert_eq!(declared.len(), 1);
    assert_eq!(declared[0].container_port, 9090);
    assert!(topo.k8s_pod("nope", "default", &labels).is_err());
}
