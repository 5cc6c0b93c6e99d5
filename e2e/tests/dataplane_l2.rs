//! L2 announcement of LoadBalancer addresses by `svcnet-proxy run --l2-announce`, with real ARP
//! and NDP on the LAN of a three-node namespace cluster, against the test's Kubernetes API (the
//! embedded server, or the real control plane of `KUBEBUILDER_ASSETS`).
//!
//! The outside client has no route to any node for the LoadBalancer addresses: they lie inside
//! the LAN's own prefix, so the client resolves them with ARP / Neighbour Solicitations and
//! reaches the Service only through the node that answers. The checks:
//! - IPv4 and IPv6: the client reaches the Service; the MAC it learned is the one of the node
//!   the address's Lease names, and broadcast ARP / multicast NDP get answers from that node only;
//! - externalTrafficPolicy Local: only the node with the ready local endpoint announces; when
//!   that endpoint moves the address moves with it, and with no endpoint left nobody answers;
//! - the announcing node's proxy killed (SIGKILL, no goodbye): another node takes over, and the
//!   client's cache follows the take-over announcements without being flushed;
//! - split brain: during both moves the client broadcasts an ARP request every 50 ms, captured
//!   with tcpdump; no request is ever answered by two MACs.
//!
//! **Needs root** (network namespaces, nftables, packet sockets) and `arping`, `ndisc6` and
//! `tcpdump` (installed by `scripts/test.sh`). One test on purpose: its cluster-scoped objects
//! (the pool and the L2Announcement) and its Nodes would be seen by the proxies of any other
//! test running beside it on the same control plane.

#![allow(clippy::unwrap_used)]

mod common_dataplane;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common_dataplane::l2::{
    connect, create_lb, holder, mac_of, macs_in, neighbour, put_slice, replied, wait_holder, Lab,
    LB4, LB6, LOCAL4, SETTLE,
};
use common_dataplane::Cluster;
use common_dataplane::Ep;
use crds::L2Announcement;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::Client;
use serde_json::json;
use testkit::harness::TestEnv;
use testkit::netns::Process;

/// The MACs that answer broadcast ARP requests for `ip` from the outside client (3 requests).
fn arp_answers(c: &Cluster, ip: &str) -> BTreeSet<String> {
    let out = c
        .topo
        .outside()
        .unwrap()
        .netns()
        .exec("arping", ["-b", "-c", "3", "-w", "2", "-I", "eth0", ip])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .filter(|l| l.contains("reply from"))
        .flat_map(macs_in)
        .collect()
}

/// The link-layer addresses of every answer to a Neighbour Solicitation for `ip`.
fn ndp_answers(c: &Cluster, ip: &str) -> BTreeSet<String> {
    let out = c
        .topo
        .outside()
        .unwrap()
        .netns()
        .exec("ndisc6", ["-m", "-n", "-w", "700", ip, "eth0"])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .filter(|l| l.contains("link-layer address"))
        .flat_map(macs_in)
        .collect()
}

/// Every 50 ms one broadcast ARP request for `ip` from the outside client, captured there with
/// the answers, while `during` runs (and `after` longer): per request, the MACs that answered it.
struct ArpSampler {
    tcpdump: Process,
    arping: Process,
    client_mac: String,
}

impl ArpSampler {
    fn start(c: &Cluster, ip: &str, seconds: u32) -> ArpSampler {
        let out = c.topo.outside().unwrap();
        let mut tcpdump = c
            .topo
            .spawn(
                out,
                "tcpdump",
                ["-l", "-tt", "-n", "-e", "-i", "eth0", "arp"],
            )
            .unwrap();
        tcpdump
            .wait_for_output("listening on", Duration::from_secs(10))
            .unwrap();
        // arping's own interval is whole seconds: one single-request arping every 50 ms (each
        // exits at its first answer; tcpdump sees every answer).
        let script = format!(
            "for i in $(seq {}); do arping -b -c 1 -w 1 -I eth0 {ip} >/dev/null 2>&1 & sleep 0.05; done; wait",
            seconds * 20
        );
        let arping = c.topo.spawn(out, "sh", ["-c", &script]).unwrap();
        ArpSampler {
            tcpdump,
            arping,
            client_mac: mac_of(out.netns(), "eth0"),
        }
    }

    /// Waits for the requests to end; returns, per request of the client, the MACs that
    /// answered it (unicast replies to the client before its next request).
    fn finish(mut self) -> Vec<BTreeSet<String>> {
        let _ = self.arping.wait_timeout(Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(200));
        let _ = self.tcpdump.terminate(Duration::from_secs(5));
        let text = self.tcpdump.stdout();
        if !text.contains("Request who-has") {
            eprintln!(
                "tcpdump captured no request:\n{}\n{}\narping: {}\n{}",
                text,
                self.tcpdump.stderr(),
                self.arping.stdout(),
                self.arping.stderr()
            );
        }
        let mut per_request: Vec<BTreeSet<String>> = Vec::new();
        for line in text.lines() {
            let macs = macs_in(line);
            let (Some(src), Some(dst)) = (macs.first(), macs.get(1)) else {
                continue;
            };
            if line.contains("Request who-has") && *src == self.client_mac {
                per_request.push(BTreeSet::new());
            } else if line.contains("Reply") && *dst == self.client_mac {
                if let Some(last) = per_request.last_mut() {
                    last.insert(src.clone());
                }
            }
        }
        per_request
    }
}

/// Asserts that no sampled request got answers from two MACs; returns how many requests each
/// MAC answered and how many got no answer.
fn no_split_brain(samples: &[BTreeSet<String>], what: &str) -> (BTreeMap<String, usize>, usize) {
    assert!(
        samples.len() >= 20,
        "{what}: only {} requests captured",
        samples.len()
    );
    let mut by_mac = BTreeMap::new();
    let mut unanswered = 0;
    for (i, s) in samples.iter().enumerate() {
        assert!(
            s.len() <= 1,
            "{what}: request {i} of {} was answered by {s:?}",
            samples.len()
        );
        match s.iter().next() {
            Some(m) => *by_mac.entry(m.clone()).or_insert(0) += 1,
            None => unanswered += 1,
        }
    }
    eprintln!(
        "{what}: {} requests, answered per MAC {by_mac:?}, unanswered {unanswered}",
        samples.len()
    );
    (by_mac, unanswered)
}

async fn events_for(client: &Client, ns: &str, svc: &str, reason: &str) -> Vec<String> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.name.as_deref() == Some(svc) && e.reason.as_deref() == Some(reason)
        })
        .filter_map(|e| e.message)
        .collect()
}

/// Root only: see the module documentation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcement_follows_leases_endpoints_and_failures() {
    let env = TestEnv::start().await.unwrap();
    let tns = env.namespace("l2").await.unwrap();
    let ns = tns.name().to_string();
    let client = env.client();
    let mut lab = Lab::start(&env, &ns, &[]).await;
    lab.create_shared().await;
    // externalTrafficPolicy Local with one endpoint, on node2.
    create_lb(
        &lab.services,
        "local",
        json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
               "healthCheckNodePort": 32281, "clusterIP": "10.96.9.22", "clusterIPs": ["10.96.9.22"],
               "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30282}]}),
        &[LOCAL4],
    )
    .await;
    let (w2, w3) = (lab.web(2).ipv4(), lab.web(3).ipv4());
    put_slice(&lab.slices, "local-1", "local", &[Ep::ready(w2, "node2")]).await;
    let c = &lab.c;
    let leases = &lab.leases;
    // The policy's status, and a broken one's: Ready False with the reason.
    let policies: Api<L2Announcement> = Api::all(client.clone());
    let broken = format!("{}-broken", lab.name);
    let bad: L2Announcement = serde_json::from_value(json!({
        "apiVersion": "svcnet.io/v1alpha1", "kind": "L2Announcement",
        "metadata": {"name": broken},
        "spec": {"serviceSelector": {"matchLabels": {"l2": "nothing"}}, "interfaces": ["/(/"]},
    }))
    .unwrap();
    policies.create(&PostParams::default(), &bad).await.unwrap();
    for (name, want) in [
        (&lab.name, ("True", "Valid")),
        (&broken, ("False", "InvalidSpec")),
    ] {
        let deadline = Instant::now() + SETTLE;
        loop {
            let p = policies.get(name).await.unwrap();
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
            if ready
                .as_ref()
                .is_some_and(|(s, r, _)| (s.as_str(), r.as_str()) == want)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: Ready is {ready:?}, want {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // 1. Reach through the announcing node, IPv4 and IPv6.
    let h4 = wait_holder(leases, LB4, "IPv4 address elected", Option::is_some)
        .await
        .unwrap();
    let h6 = wait_holder(leases, LB6, "IPv6 address elected", Option::is_some)
        .await
        .unwrap();
    eprintln!("{LB4} held by {h4}, {LB6} held by {h6}");
    tokio::task::block_in_place(|| {
        for (ip, h) in [(LB4, &h4), (LB6, &h6)] {
            let deadline = Instant::now() + SETTLE;
            let out = loop {
                let o = connect(c, ip);
                if replied(&o).is_some() || Instant::now() > deadline {
                    break o;
                }
                std::thread::sleep(Duration::from_millis(200));
            };
            assert!(replied(&out).is_some(), "{ip} unreachable: {out:?}");
            let learned = neighbour(c, ip).expect("a neighbour entry");
            assert_eq!(&lab.node_of_mac(&learned), h, "{ip}: the client's cache");
        }
        let arp = arp_answers(c, LB4);
        assert_eq!(
            arp.iter().map(|m| lab.node_of_mac(m)).collect::<Vec<_>>(),
            vec![h4.clone()],
            "ARP answers for {LB4}"
        );
        let ndp = ndp_answers(c, LB6);
        assert_eq!(
            ndp.iter().map(|m| lab.node_of_mac(m)).collect::<Vec<_>>(),
            vec![h6.clone()],
            "NDP answers for {LB6}"
        );
        // An address nobody holds (inside the pool, on no Service) gets no answer.
        assert!(arp_answers(c, "192.168.200.203").is_empty());
    });
    let deadline = Instant::now() + SETTLE;
    while events_for(&client, &ns, "shared", "L2Announced")
        .await
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "no L2Announced Event on Service shared"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let msgs = events_for(&client, &ns, "shared", "L2Announced").await;
    assert!(
        msgs.iter().any(|m| m.contains(LB4) && m.contains(&h4)),
        "{msgs:?}"
    );

    // 2. externalTrafficPolicy Local: the node with the endpoint, and the address follows it.
    wait_holder(leases, LOCAL4, "Local Service on node2", |h| {
        h.as_deref() == Some("node2")
    })
    .await;
    tokio::task::block_in_place(|| {
        let arp = arp_answers(c, LOCAL4);
        assert_eq!(
            arp.iter().map(|m| lab.node_of_mac(m)).collect::<Vec<_>>(),
            vec!["node2"],
            "ARP answers for {LOCAL4}"
        );
        let o = connect(c, LOCAL4);
        assert_eq!(replied(&o), Some("web-2"), "{o:?}");
    });
    // A second endpoint on node3 does not move the address (no churn).
    put_slice(
        &lab.slices,
        "local-1",
        "local",
        &[Ep::ready(w2, "node2"), Ep::ready(w3, "node3")],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(holder(leases, LOCAL4).await.as_deref(), Some("node2"));
    // node2's last local endpoint goes: node2 releases, node3 takes over; sampled throughout.
    let sampler = tokio::task::block_in_place(|| ArpSampler::start(c, LOCAL4, 6));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let moved_at = Instant::now();
    put_slice(&lab.slices, "local-1", "local", &[Ep::ready(w3, "node3")]).await;
    wait_holder(leases, LOCAL4, "Local Service follows its endpoint", |h| {
        h.as_deref() == Some("node3")
    })
    .await;
    eprintln!(
        "{LOCAL4}: Lease moved to node3 {:?} after the endpoint did",
        moved_at.elapsed()
    );
    let samples = tokio::task::block_in_place(|| sampler.finish());
    let (by_mac, _) = no_split_brain(&samples, "endpoint move node2 → node3");
    let answered: BTreeSet<String> = by_mac.keys().map(|m| lab.node_of_mac(m)).collect();
    assert!(
        answered.contains("node3"),
        "node3 never answered: {by_mac:?}"
    );
    tokio::task::block_in_place(|| {
        let o = connect(c, LOCAL4);
        assert_eq!(replied(&o), Some("web-3"), "{o:?}");
    });
    // No local endpoint anywhere: released, and nobody answers.
    put_slice(&lab.slices, "local-1", "local", &[]).await;
    wait_holder(leases, LOCAL4, "Local Service without endpoints", |h| {
        h.is_none()
    })
    .await;
    tokio::task::block_in_place(|| {
        let deadline = Instant::now() + SETTLE;
        let mut arp = arp_answers(c, LOCAL4);
        while !arp.is_empty() && Instant::now() < deadline {
            arp = arp_answers(c, LOCAL4);
        }
        assert!(arp.is_empty(), "{LOCAL4} still answered by {arp:?}");
    });

    // 3. The holder's proxy is killed: another node takes over; the client's cache follows
    //    the take-over announcements (no flush), and no request is answered twice.
    let old = holder(leases, LB4).await.unwrap();
    let old_mac = lab.mac_of_node(&old);
    let sampler = tokio::task::block_in_place(|| ArpSampler::start(&lab.c, LB4, 6));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed_at = Instant::now();
    lab.proxies.get_mut(&old).unwrap().kill().unwrap();
    let new = wait_holder(&lab.leases, LB4, "take-over after SIGKILL", |h| {
        h.as_ref().is_some_and(|h| *h != old)
    })
    .await
    .unwrap();
    let lease_moved = killed_at.elapsed();
    let samples = tokio::task::block_in_place(|| sampler.finish());
    let (by_mac, _) = no_split_brain(&samples, &format!("{old} killed"));
    assert!(
        by_mac.keys().any(|m| lab.node_of_mac(m) == new),
        "{new} never answered: {by_mac:?}"
    );
    tokio::task::block_in_place(|| {
        let learned = neighbour(&lab.c, LB4);
        assert_ne!(
            learned.as_ref(),
            Some(&old_mac),
            "client still points at {old}"
        );
        let o = connect(&lab.c, LB4);
        assert!(replied(&o).is_some(), "{LB4} after the take-over: {o:?}");
        assert_eq!(
            neighbour(&lab.c, LB4).map(|m| lab.node_of_mac(&m)),
            Some(new.clone())
        );
    });
    eprintln!("{LB4}: {old} killed; Lease moved to {new} after {lease_moved:?}");
    let msgs = events_for(&client, &ns, "shared", "L2Announced").await;
    assert!(
        msgs.iter()
            .any(|m| m.contains(&new) && m.contains(&format!("taken over from node {old}"))),
        "{msgs:?}"
    );
    // The new holder's /metrics count what it did.
    tokio::task::block_in_place(|| {
        let index: u8 = new.trim_start_matches("node").parse().unwrap();
        let metric = |n: &str| common_dataplane::proxy_metric(&lab.c, index, n).unwrap_or(0.0);
        assert!(
            metric("svcnet_l2_takeovers_total") >= 1.0,
            "takeovers on {new}"
        );
        assert!(
            metric("svcnet_l2_announcements_total") >= 1.0,
            "announcements on {new}"
        );
        assert!(
            metric("svcnet_l2_arp_replies_total") >= 1.0,
            "ARP replies on {new}"
        );
        assert!(
            metric("svcnet_l2_announced_addresses") >= 1.0,
            "addresses on {new}"
        );
    });
    let _ = policies.delete(&broken, &Default::default()).await;
    lab.cleanup().await;
}
