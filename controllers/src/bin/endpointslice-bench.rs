//! EndpointSlice controller benchmark; prints one JSON object.
//!
//! Needs an API server: start the embedded one with
//! `svcnet apiserver --kubeconfig /tmp/bench.kubeconfig` (crate svcnet-cli), then
//! `endpointslice-bench --kubeconfig /tmp/bench.kubeconfig`.
//!
//! 1. Creates `--services` headless Services × `--pods-per-service` ready Pods (not timed).
//! 2. Starts the controller as a child process (this binary, `controller` mode) so that its
//!    RSS is measured alone, and times cold convergence: until every Service's slices list
//!    all its Pods as ready (observed through a watch).
//! 3. At steady state flips Pod readiness `--flips` times, one at a time, and measures the
//!    latency from the status write to the slice update seen by the watch, and the number of
//!    slice writes per readiness change.
//!
//! Peak RSS includes the initial Pod list: a real API server pages it (500 per page), the
//! embedded one answers with one response, so the peak there is higher than in a cluster;
//! `controller_rss_mib_steady` is the resident size after the run.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use controllers::endpointslice::build::CONTROLLER_NAME;
use controllers::metrics::ControllerMetrics;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::{watch, Mutex};

#[derive(Parser, Debug)]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// kubeconfig of the API server to use.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Number of Services.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Pods per Service.
    #[arg(long, default_value_t = 100)]
    pods_per_service: usize,
    /// Readiness flips measured at steady state.
    #[arg(long, default_value_t = 200)]
    flips: usize,
    /// Concurrent requests during setup.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Internal: run the controller and report its write count on stdout.
    Controller,
}

async fn client(path: &Option<PathBuf>) -> anyhow::Result<Client> {
    match path {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)?;
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
            Ok(Client::try_from(cfg)?)
        }
        None => Ok(Client::try_default().await?),
    }
}

async fn run_controller(client: Client) -> anyhow::Result<()> {
    let metrics = ControllerMetrics::unregistered();
    let m = metrics.clone();
    tokio::spawn(async move {
        loop {
            println!("{}", json!({"writes": m.total_changes()}));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let cfg = controllers::endpointslice::Config {
        concurrent_syncs: 5,
        ..Default::default()
    };
    controllers::endpointslice::run(
        &controllers::watches::Watches::new(client.clone()),
        client,
        cfg,
        metrics,
        std::future::pending(),
    )
    .await?;
    Ok(())
}

fn ip(i: usize) -> String {
    format!("10.{}.{}.{}", 64 + i / 62500, (i / 250) % 250, i % 250 + 1)
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmHWM:")
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// What the watch saw: per slice, (service, endpoints as pod name → ready).
#[derive(Default)]
struct Seen {
    slices: HashMap<String, (String, Vec<(String, bool)>)>,
}

impl Seen {
    fn ready_by_service(&self) -> HashMap<&str, usize> {
        let mut m: HashMap<&str, usize> = HashMap::new();
        for (svc, eps) in self.slices.values() {
            *m.entry(svc.as_str()).or_default() += eps.iter().filter(|(_, r)| *r).count();
        }
        m
    }
    fn pod_ready(&self, pod: &str) -> Option<bool> {
        self.slices
            .values()
            .flat_map(|(_, e)| e.iter())
            .find(|(p, _)| p == pod)
            .map(|(_, r)| *r)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn set_ready(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) -> anyhow::Result<()> {
    let status = if ready { "True" } else { "False" };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let patch = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": status, "lastTransitionTime": now}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = client(&args.kubeconfig)
        .await
        .context("connecting to the API server")?;
    if let Some(Mode::Controller) = args.mode {
        return run_controller(client).await;
    }
    let kubeconfig = args
        .kubeconfig
        .clone()
        .context("--kubeconfig (or KUBECONFIG) is required")?;

    // 1. Setup.
    let ns_name = format!("svcnet-bench-{}", std::process::id());
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns_name}}))?,
    )
    .await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let node = json!({"metadata": {"name": "bench-node", "labels": {"topology.kubernetes.io/zone": "z1"}}});
    let _ = nodes
        .create(&PostParams::default(), &serde_json::from_value(node)?)
        .await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns_name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns_name);
    let setup_start = Instant::now();
    futures::stream::iter(0..args.services)
        .map(|s| {
            let svcs = svcs.clone();
            async move {
                let svc = json!({"metadata": {"name": format!("svc-{s}")}, "spec": {
                    "clusterIP": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                    "selector": {"svc": format!("svc-{s}")},
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}});
                svcs.create(&PostParams::default(), &serde_json::from_value(svc)?).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    let total_pods = args.services * args.pods_per_service;
    futures::stream::iter(0..total_pods)
        .map(|i| {
            let pods = pods.clone();
            let s = i / args.pods_per_service;
            async move {
                let name = format!("p-{i}");
                let pod = json!({"metadata": {"name": name, "labels": {"svc": format!("svc-{s}")}},
                    "spec": {"nodeName": "bench-node", "containers": [{"name": "c", "image": "x",
                        "ports": [{"containerPort": 8080, "name": "http"}]}]}});
                pods.create(&PostParams::default(), &serde_json::from_value(pod)?)
                    .await?;
                set_ready(&pods, &name, &ip(i), true).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    let setup_secs = setup_start.elapsed().as_secs_f64();

    // Watch our slices.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (tick_tx, mut tick_rx) = watch::channel(0u64);
    {
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns_name);
        let cfg = watcher::Config::default().labels(&format!(
            "endpointslice.kubernetes.io/managed-by={CONTROLLER_NAME}"
        ));
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut stream = watcher(slices, cfg).boxed();
            let mut n = 0u64;
            while let Some(ev) = stream.next().await {
                let mut g = seen.lock().await;
                let put = |s: EndpointSlice, g: &mut Seen| {
                    let name = s.metadata.name.clone().unwrap_or_default();
                    let svc = s
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubernetes.io/service-name").cloned())
                        .unwrap_or_default();
                    let eps = s
                        .endpoints
                        .iter()
                        .map(|e| {
                            (
                                e.target_ref
                                    .as_ref()
                                    .and_then(|r| r.name.clone())
                                    .unwrap_or_default(),
                                e.conditions.as_ref().and_then(|c| c.ready) == Some(true),
                            )
                        })
                        .collect();
                    g.slices.insert(name, (svc, eps));
                };
                match ev {
                    Ok(watcher::Event::Apply(s)) | Ok(watcher::Event::InitApply(s)) => {
                        put(s, &mut g)
                    }
                    Ok(watcher::Event::Delete(s)) => {
                        g.slices.remove(&s.metadata.name.unwrap_or_default());
                    }
                    _ => {}
                }
                drop(g);
                n += 1;
                let _ = tick_tx.send(n);
            }
        });
    }

    // 2. Cold convergence.
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("controller")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let writes = Arc::new(AtomicU64::new(0));
    {
        let out = child.stdout.take().context("child stdout")?;
        let writes = writes.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if let Some(w) = v.get("writes").and_then(|w| w.as_u64()) {
                        writes.store(w, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    let start = Instant::now();
    let converged = loop {
        {
            let g = seen.lock().await;
            let m = g.ready_by_service();
            if m.len() == args.services && m.values().all(|n| *n == args.pods_per_service) {
                break start.elapsed();
            }
        }
        if start.elapsed() > Duration::from_secs(600) {
            let _ = child.kill();
            anyhow::bail!("no convergence within 600 s");
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), tick_rx.changed()).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cold_writes = writes.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after_cold = vm_hwm_kib(pid);

    // 3. Steady state: readiness flips.
    let w0 = writes.load(Ordering::Relaxed);
    let mut lat_ms = Vec::with_capacity(args.flips);
    for f in 0..args.flips {
        // Even flips make a Pod unready, the next flip makes the same Pod ready again.
        let i = ((f / 2) * 7919) % total_pods;
        let name = format!("p-{i}");
        let want = f % 2 == 1;
        let t0 = Instant::now();
        set_ready(&pods, &name, &ip(i), want).await?;
        loop {
            if seen.lock().await.pod_ready(&name) == Some(want) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("slice for {name} never showed ready={want}");
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), tick_rx.changed()).await;
        }
        lat_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let flip_writes = writes.load(Ordering::Relaxed) - w0;
    let rss_peak = vm_hwm_kib(pid);
    let rss_now = proc_status_kib(pid, "VmRSS:");
    let _ = child.kill();
    let _ = child.wait();
    lat_ms.sort_by(|a, b| a.total_cmp(b));

    let out = json!({
        "services": args.services,
        "pods_per_service": args.pods_per_service,
        "setup_seconds": setup_secs,
        "cold_convergence_seconds": converged.as_secs_f64(),
        "cold_api_writes": cold_writes,
        "controller_peak_rss_mib_after_cold": rss_after_cold.map(|k| k as f64 / 1024.0),
        "controller_peak_rss_mib": rss_peak.map(|k| k as f64 / 1024.0),
        "controller_rss_mib_steady": rss_now.map(|k| k as f64 / 1024.0),
        "readiness_flips": args.flips,
        "flip_latency_ms_p50": percentile(&lat_ms, 50.0),
        "flip_latency_ms_p99": percentile(&lat_ms, 99.0),
        "flip_latency_ms_max": lat_ms.last().copied().unwrap_or(0.0),
        "slice_writes_per_readiness_change": if args.flips > 0 { flip_writes as f64 / args.flips as f64 } else { 0.0 },
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    let _ = nss.delete(&ns_name, &Default::default()).await;
    Ok(())
}
