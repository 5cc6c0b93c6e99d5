//! svcnet-proxy and upstream kube-proxy on the same objects at scale (prints JSON).
//!
//! Per shape (`PROXY_SCALE_SHAPES`, default `5000x50,100000x10`: Services × endpoints each):
//! a fresh embedded API server gets one Node and S ClusterIP Services with one EndpointSlice of
//! E ready endpoints each (not timed). Then each proxy runs alone in a fresh node namespace of
//! its own, reaching the API server through the topology's relay:
//!
//! * `svcnet-proxy run`: time from start until its first full sync is programmed (its
//!   `kubeproxy_sync_full_proxy_rules_duration_seconds_count` turns 1; the list and watch of every
//!   object included), the duration of that sync as it reports it, its peak resident size
//!   (`VmHWM`), then `PROXY_SCALE_CHANGES` (default 10) single-endpoint changes through the API,
//!   each timed from the write until the next partial sync is reported (polled every 10 ms);
//! * `kube-proxy --proxy-mode=iptables` (the binary of `KUBE_PROXY`, else
//!   `$KUBEBUILDER_ASSETS/kube-proxy`, else `/usr/local/kubebuilder/bin/kube-proxy`), on the same
//!   objects, until `kubeproxy_sync_proxy_rules_last_timestamp_seconds` says its first sync
//!   finished or `PROXY_SCALE_BOUND_SECS` (default 300) pass: reported as seconds or as "did not
//!   finish in N s", with its peak resident size either way. Needs `iptables` (Debian package).
//!
//! **Needs root.** Build the binaries first: `cargo build --release --workspace --bins && cargo
//! bench -p svcnet-e2e --bench proxy_scale` (the bench finds the binaries of its own profile).

#![allow(clippy::unwrap_used)]

#[path = "../tests/common_dataplane/mod.rs"]
mod common_dataplane;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common_dataplane::{builder, create_nodes, node_kubeconfig_embedded, sa, Cluster};
use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::{json, Value};
use testkit::netns::Process;

const NS: &str = "scale";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn svc_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i as u32 + 1)
}

fn ep_ip(i: usize, j: usize, e: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + (i * e + j) as u32 + 1)
}

fn service(i: usize) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": NS},
        "spec": {"clusterIP": svc_ip(i).to_string(), "clusterIPs": [svc_ip(i).to_string()],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]},
    }))
    .unwrap()
}

fn endpoints(i: usize, e: usize, generation: usize) -> Value {
    json!((0..e)
        .map(|j| {
            // A change moves the last endpoint to an address outside every Service's range.
            let ip = if generation > 0 && j == e - 1 {
                Ipv4Addr::new(
                    10,
                    255,
                    (generation / 250) as u8,
                    (generation % 250) as u8 + 1,
                )
            } else {
                ep_ip(i, j, e)
            };
            json!({"addresses": [ip.to_string()], "conditions": {"ready": true},
                   "nodeName": format!("elsewhere-{}", j % 50)})
        })
        .collect::<Vec<_>>())
}

fn slice(i: usize, e: usize) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}-abcde"), "namespace": NS, "labels": {
            "kubernetes.io/service-name": format!("svc-{i}"),
            "endpointslice.kubernetes.io/managed-by": "bench.svcnet.io"}},
        "addressType": "IPv4",
        "endpoints": endpoints(i, e, 0),
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .unwrap()
}

/// `VmHWM` / `VmRSS` of `pid`, MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| (kb / 1024.0 * 10.0).round() / 10.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// The first sample of metric `name` (any labels) on 127.0.0.1:10249 in the node.
fn metric(c: &Cluster, name: &str) -> Option<f64> {
    let node = c.topo.node(1).ok()?;
    let r = c
        .topo
        .http_get(node, sa([127, 0, 0, 1], 10249), "/metrics")
        .ok()?;
    let body = &r.response()?.body;
    body.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            return None;
        }
        l.rsplit(' ').next()?.trim().parse().ok()
    })
}

fn kube_proxy_binary() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("KUBE_PROXY").map(PathBuf::from),
        std::env::var_os("KUBEBUILDER_ASSETS").map(|d| PathBuf::from(d).join("kube-proxy")),
        Some(PathBuf::from("/usr/local/kubebuilder/bin/kube-proxy")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

struct Lab {
    cluster: Cluster,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

async fn lab(server: &apiserver::ApiServer, client: &kube::Client) -> Lab {
    let cluster = Cluster::new(builder().prefix("svps").nodes(1).outside_clients(0));
    create_nodes(&cluster, client).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = node_kubeconfig_embedded(&cluster, server, dir.path());
    Lab {
        cluster,
        kubeconfig,
        _dir: dir,
    }
}

fn wait_metric(c: &Cluster, p: &mut Process, name: &str, bound: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < bound {
        if metric(c, name).is_some_and(|v| v > 0.0) {
            return Some(t0.elapsed());
        }
        if p.try_status().is_some() {
            eprintln!("{name}: the proxy exited:\n{}", p.stderr());
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

async fn run_svcnet(
    server: &apiserver::ApiServer,
    client: &kube::Client,
    services: usize,
    e: usize,
    bound: Duration,
) -> Value {
    let lab = lab(server, client).await;
    let c = &lab.cluster;
    let node = c.topo.node(1).unwrap();
    let proxy = testkit::netns::bins::locate("svcnet-proxy").expect("svcnet-proxy built");
    let kc = lab.kubeconfig.display().to_string();
    let started = Instant::now();
    let mut p = c
        .topo
        .spawn(
            node,
            &proxy,
            [
                "run",
                "--kubeconfig",
                &kc,
                "--node-name",
                node.name(),
                "--cluster-cidr",
                "10.128.0.0/9",
                "--service-cluster-ip-range",
                "10.96.0.0/12",
                "--metrics-bind-address",
                "127.0.0.1:10249",
                "--healthz-bind-address",
                "127.0.0.1:10256",
                "--min-sync-period",
                "0s",
            ],
        )
        .unwrap();
    let pid = p.pid();
    let first = wait_metric(
        c,
        &mut p,
        "kubeproxy_sync_full_proxy_rules_duration_seconds_count",
        bound,
    );
    let Some(first) = first else {
        return json!({"did_not_finish_in_s": bound.as_secs(), "peak_rss_mib": rss_mib(pid).0});
    };
    let _ = started;
    let sync_s = metric(c, "kubeproxy_sync_full_proxy_rules_duration_seconds_sum");
    let (peak_after_sync, _) = rss_mib(pid);
    // Single-endpoint changes, each on another Service.
    let changes: usize = env_or("PROXY_SCALE_CHANGES", "10").parse().unwrap_or(10);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    let mut times = Vec::new();
    for k in 0..changes {
        let i = (k * 7919 + 13) % services;
        let before = metric(
            c,
            "kubeproxy_sync_partial_proxy_rules_duration_seconds_count",
        )
        .unwrap_or(0.0);
        let patch = json!({"endpoints": endpoints(i, e, k + 1)});
        let t = Instant::now();
        slices
            .patch(
                &format!("svc-{i}-abcde"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .unwrap();
        loop {
            let now = metric(
                c,
                "kubeproxy_sync_partial_proxy_rules_duration_seconds_count",
            )
            .unwrap_or(0.0);
            if now > before || t.elapsed() > Duration::from_secs(30) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (peak, rss) = rss_mib(pid);
    let _ = p.terminate(Duration::from_secs(10));
    json!({
        "seconds_to_first_sync": first.as_secs_f64(),
        "first_full_sync_seconds_reported": sync_s,
        "peak_rss_mib_after_first_sync": peak_after_sync,
        "peak_rss_mib": peak,
        "rss_mib_at_end": rss,
        "endpoint_change_to_partial_sync_ms": {
            "median": median(&times), "max": times.iter().copied().fold(0.0, f64::max),
            "samples": times.len(), "note": "includes the 10 ms metrics poll and one HTTP GET per poll",
        },
    })
}

async fn run_kube_proxy(
    server: &apiserver::ApiServer,
    client: &kube::Client,
    bound: Duration,
) -> Value {
    let Some(bin) = kube_proxy_binary() else {
        return json!({"skipped": "no kube-proxy binary (KUBE_PROXY, KUBEBUILDER_ASSETS)"});
    };
    let lab = lab(server, client).await;
    let c = &lab.cluster;
    let node = c.topo.node(1).unwrap();
    let kc = lab.kubeconfig.display().to_string();
    let hostname = format!("--hostname-override={}", node.name());
    let kubeconfig = format!("--kubeconfig={kc}");
    let mut p = c
        .topo
        .spawn(
            node,
            &bin,
            [
                kubeconfig.as_str(),
                "--proxy-mode=iptables",
                &hostname,
                "--cluster-cidr=10.128.0.0/9",
                "--metrics-bind-address=127.0.0.1:10249",
                "--healthz-bind-address=127.0.0.1:10256",
                "--conntrack-max-per-core=0",
                "--kube-api-content-type=application/json",
                "--v=2",
            ],
        )
        .unwrap();
    let pid = p.pid();
    let first = wait_metric(
        c,
        &mut p,
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        bound,
    );
    let (peak, rss) = rss_mib(pid);
    let version = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let running = p.try_status().is_none();
    let _ = p.kill();
    let mut out = json!({
        "binary": bin.display().to_string(), "version": version, "mode": "iptables",
        "peak_rss_mib": peak, "rss_mib_at_end": rss, "was_running_at_end": running,
    });
    match first {
        Some(d) => {
            out["seconds_to_first_sync"] = json!(d.as_secs_f64());
            // Proof the sync covered the objects: one DNAT rule per endpoint.
            let nat = node
                .netns()
                .exec("iptables-save", ["-t", "nat"])
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                .unwrap_or_default();
            out["endpoint_dnat_rules"] = json!(nat
                .lines()
                .filter(|l| l.starts_with("-A KUBE-SEP-") && l.contains("DNAT"))
                .count());
        }
        None => out["did_not_finish_in_s"] = json!(bound.as_secs()),
    }
    out
}

async fn shape(services: usize, e: usize, bound: Duration) -> Value {
    let server = apiserver::ApiServer::start(apiserver::ServerConfig::default())
        .await
        .unwrap();
    let client = server.client().unwrap();
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
    )
    .await
    .unwrap();
    let t = Instant::now();
    let svcs: Api<Service> = Api::namespaced(client.clone(), NS);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    stream::iter(0..services)
        .for_each_concurrent(64, |i| {
            let (svcs, slices) = (svcs.clone(), slices.clone());
            async move {
                svcs.create(&PostParams::default(), &service(i))
                    .await
                    .unwrap();
                slices
                    .create(&PostParams::default(), &slice(i, e))
                    .await
                    .unwrap();
            }
        })
        .await;
    eprintln!(
        "{services} x {e}: objects created in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let svcnet = run_svcnet(&server, &client, services, e, bound).await;
    eprintln!("svcnet-proxy: {svcnet}");
    let upstream = run_kube_proxy(&server, &client, bound).await;
    eprintln!("kube-proxy: {upstream}");
    json!({
        "services": services, "endpoints_per_service": e, "endpoints": services * e,
        "svcnet_proxy": svcnet, "kube_proxy": upstream,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let bound = Duration::from_secs(env_or("PROXY_SCALE_BOUND_SECS", "300").parse().unwrap());
    let mut out = Vec::new();
    for s in env_or("PROXY_SCALE_SHAPES", "5000x50,100000x10").split(',') {
        let (a, b) = s.split_once('x').expect("shape like 5000x50");
        out.push(shape(a.trim().parse().unwrap(), b.trim().parse().unwrap(), bound).await);
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({"bound_seconds": bound.as_secs(), "shapes": out}))
            .unwrap()
    );
}
