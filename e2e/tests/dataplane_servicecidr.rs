//! `svcnet-proxy run` takes its Service CIDRs (where traffic to an unallocated IP is dropped)
//! from the API's `networking.k8s.io/v1` ServiceCIDR objects when the API serves them, and from
//! `--service-cluster-ip-range` when it does not, with real packets.
//!
//! Where ServiceCIDRs are served (the embedded server, Kubernetes 1.33+), a ServiceCIDR created
//! at run time makes an unallocated IP inside it dropped, as one in a Service CIDR is; it stays
//! dropped while the object is being deleted (held by a finalizer), and is forwarded again once
//! the object is gone. Against an API server that does not serve them (e.g. the v1.24 control
//! plane of `KUBEBUILDER_ASSETS`) the flag's range must be the one dropped; the ServiceCIDR part
//! is skipped and says so, with the server's version.
//!
//! A packet dropped by the node's filter rules leaves no conntrack entry, while one the node
//! forwards (to the LAN, which black-holes it) leaves one: that tells "dropped by svcnet-proxy"
//! from "lost further away" (see [`common_dataplane::conntrack_entries`]).
//!
//! **Needs root** (network namespaces, nftables); CI runs as root. Needs the `svcnet-proxy`
//! binary built (`cargo build -p svcnet-dataplane -p svcnet-testkit --bins`).

#![allow(clippy::unwrap_used)]

mod common_dataplane;

use std::net::Ipv4Addr;
use std::time::Duration;

use common_dataplane::{
    builder, conntrack_entries, create_nodes, node_kubeconfig, poll_until, sa, Cluster,
};
use k8s_openapi::api::networking::v1::{ServiceCIDR, ServiceCIDRSpec};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use testkit::harness::TestEnv;
use testkit::netns::{EchoPorts, Proto};

/// The ServiceCIDR this test creates (outside the flag's 10.96.0.0/16 and every test range).
const EXTRA_CIDR: &str = "10.99.0.0/24";
/// An unallocated address inside it.
const EXTRA_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 77);
/// An unallocated address inside the flag's range (`plan::SERVICE_CIDR_V4`).
const FLAG_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 6, 99);
/// A finalizer of this test's own, holding the ServiceCIDR in "being deleted".
const HOLD: &str = "svcnet.io/e2e-hold";

/// What node2 did with a new TCP connection from the pod `cli` to `ip`.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    /// Dropped by the node's rules (no reply, no conntrack entry).
    Dropped,
    /// Forwarded on (no reply, a conntrack entry).
    Forwarded,
    /// Anything else (a reply or a reject): never expected here.
    Other(String),
}

fn fate(c: &Cluster, ip: Ipv4Addr) -> Fate {
    let node2 = c.topo.node(2).unwrap().netns();
    // Entries of earlier attempts would hide a drop; `-D` fails when there is none.
    let _ = node2.exec("conntrack", ["-D", "-d", &ip.to_string()]);
    let out = c.short(c.topo.pod("cli").unwrap(), Proto::Tcp, sa(ip, 80));
    if !out.is_timeout() {
        return Fate::Other(format!("{out:?}"));
    }
    match conntrack_entries(c, 2, ip.into()) {
        0 => Fate::Dropped,
        _ => Fate::Forwarded,
    }
}

/// Polls `fate` for up to 10 s until it is `want`; panics with the ruleset otherwise.
#[track_caller]
fn expect_fate(c: &Cluster, ip: Ipv4Addr, want: Fate, what: &str) {
    let got = poll_until(Duration::from_secs(10), || fate(c, ip), |f| *f == want);
    assert_eq!(got, want, "{what} ({ip})\nnode2 ruleset:\n{}", c.ruleset(2));
}

/// Whether the API serves `networking.k8s.io/v1` servicecidrs (its discovery document).
async fn serves_service_cidrs(client: &kube::Client) -> bool {
    match client
        .list_api_group_resources("networking.k8s.io/v1")
        .await
    {
        Ok(list) => list.resources.iter().any(|r| r.name == "servicecidrs"),
        Err(kube::Error::Api(s)) if s.code == 404 => false,
        Err(e) => panic!("discovery of networking.k8s.io/v1: {e}"),
    }
}

/// Whether an existing ServiceCIDR covers `ip`.
fn covered(objects: &[ServiceCIDR], ip: Ipv4Addr) -> bool {
    objects
        .iter()
        .flat_map(|o| o.spec.iter().flat_map(|s| s.cidrs.iter().flatten()))
        .any(|c| v4_cidr_contains(c, ip))
}

/// Whether the IPv4 CIDR `cidr` (`a.b.c.d/n`) contains `ip`; false for IPv6 or bad text.
fn v4_cidr_contains(cidr: &str, ip: Ipv4Addr) -> bool {
    let Some((net, len)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(len)) = (net.parse::<Ipv4Addr>(), len.parse::<u32>()) else {
        return false;
    };
    if len > 32 {
        return false;
    }
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(net) & mask == u32::from(ip) & mask
}

/// Root only: the proxy follows ServiceCIDRs created and deleted at run time where the API
/// serves them, and uses `--service-cluster-ip-range` where it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_follows_service_cidrs_or_uses_the_flag() {
    let env = TestEnv::start().await.unwrap();
    let client = env.client();
    let (major, minor) = env.server_version().await.unwrap();
    let served = serves_service_cidrs(&client).await;
    let c = tokio::task::block_in_place(|| {
        Cluster::new(
            builder()
                .echo_ports(EchoPorts::new(&[8080], &[]))
                .pod("cli", 2),
        )
    });
    create_nodes(&c, &client).await;
    let api: Api<ServiceCIDR> = Api::all(client.clone());
    let existing = if served {
        api.list(&Default::default()).await.unwrap().items
    } else {
        vec![]
    };
    let dir = tempfile::tempdir().unwrap();
    let proxy = tokio::task::block_in_place(|| {
        let kubeconfig = node_kubeconfig(&c, &env, dir.path());
        let node2 = c.topo.node(2).unwrap();
        common_dataplane::start_proxy_run(&c, node2, &kubeconfig, &[])
    });

    if !served {
        assert!(
            proxy
                .stderr()
                .contains("Service CIDRs from --service-cluster-ip-range"),
            "the proxy says it uses the flag:\n{}",
            proxy.stderr()
        );
        tokio::task::block_in_place(|| {
            expect_fate(
                &c,
                FLAG_IP,
                Fate::Dropped,
                "unallocated IP in the flag's range",
            );
            expect_fate(&c, EXTRA_IP, Fate::Forwarded, "outside the flag's range");
        });
        println!(
            "ServiceCIDR part skipped: the API server (v{major}.{minor}) does not serve \
             networking.k8s.io/v1 servicecidrs; checked that --service-cluster-ip-range is used"
        );
        drop(proxy);
        return;
    }

    assert!(
        proxy
            .stderr()
            .contains("Service CIDRs from the API's ServiceCIDR objects"),
        "the proxy says it follows ServiceCIDRs:\n{}",
        proxy.stderr()
    );
    assert!(
        !covered(&existing, EXTRA_IP),
        "{EXTRA_CIDR} must be free for this test: {existing:?}"
    );
    // The flag's range counts only as far as ServiceCIDR objects cover it.
    let flag_covered = covered(&existing, FLAG_IP);
    println!(
        "v{major}.{minor} serves ServiceCIDRs; existing objects {:?}; {FLAG_IP} covered: {flag_covered}",
        existing
            .iter()
            .map(|o| (o.metadata.name.clone(), o.spec.clone()))
            .collect::<Vec<_>>()
    );
    tokio::task::block_in_place(|| {
        let flag_fate = if flag_covered {
            Fate::Dropped
        } else {
            Fate::Forwarded
        };
        expect_fate(
            &c,
            FLAG_IP,
            flag_fate,
            "the flag's range follows the objects",
        );
        expect_fate(
            &c,
            EXTRA_IP,
            Fate::Forwarded,
            "before the ServiceCIDR exists",
        );
    });

    let name = format!("e2e-extra-{}", std::process::id());
    let mut obj = ServiceCIDR {
        spec: Some(ServiceCIDRSpec {
            cidrs: Some(vec![EXTRA_CIDR.into()]),
        }),
        ..Default::default()
    };
    obj.metadata.name = Some(name.clone());
    obj.metadata.finalizers = Some(vec![HOLD.into()]);
    api.create(&PostParams::default(), &obj).await.unwrap();
    tokio::task::block_in_place(|| {
        expect_fate(&c, EXTRA_IP, Fate::Dropped, "inside the new ServiceCIDR");
    });

    api.delete(&name, &DeleteParams::default()).await.unwrap();
    let held = api.get(&name).await.unwrap();
    assert!(
        held.metadata.deletion_timestamp.is_some(),
        "held by {HOLD}: {held:?}"
    );
    // A few syncs (min-sync-period 100ms) later it still counts: addresses inside it may still
    // be allocated while its deletion waits.
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| {
        assert_eq!(
            fate(&c, EXTRA_IP),
            Fate::Dropped,
            "a ServiceCIDR being deleted still counts"
        );
    });

    let release = serde_json::json!({"metadata": {"finalizers": null}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&release))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while api.get_opt(&name).await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the ServiceCIDR is deleted once released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::task::block_in_place(|| {
        expect_fate(
            &c,
            EXTRA_IP,
            Fate::Forwarded,
            "after the ServiceCIDR is gone",
        );
    });
    assert!(
        proxy.stderr().contains("Service CIDRs changed"),
        "{}",
        proxy.stderr()
    );
    drop(proxy);
}
