//! `ipam-bench`: end-to-end allocation throughput of the IPAM controller, printed as JSON.
//!
//! Runs the IPAM controller in-process against the API server in `--kubeconfig` (for the embedded
//! server: `svcnet apiserver` prints a kubeconfig path) and measures two things:
//!
//! * `burst`: the controller is running; N Services are created concurrently; time from the first
//!   create until every Service carries its ClusterIP (and nodePorts, for the NodePort share).
//! * `backlog`: N Services are created while no controller runs; then the controller starts; time
//!   from start (including its initial list/watch sync) until every Service is allocated.
//!
//! ```text
//! KC=$(cargo run -q -p svcnet-cli --bin svcnet -- apiserver & ...)   # prints a kubeconfig path
//! cargo run --release -p svcnet-controllers --bin ipam-bench -- --kubeconfig "$KC" --services 5000
//! ```

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use controllers::ipam::config::LedgerChoice;
use controllers::ipam::{Ipam, IpamConfig, IpamMetrics};
use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use runtime::admin::ReadyFlag;
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "IPAM end-to-end allocation benchmark (JSON output)")]
struct Args {
    /// Kubeconfig of the API server to run against.
    #[arg(long)]
    kubeconfig: std::path::PathBuf,
    /// Services per phase.
    #[arg(long, default_value_t = 5000)]
    services: usize,
    /// Concurrent creates.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// One in this many Services is type NodePort (0 = none).
    #[arg(long, default_value_t = 10)]
    nodeport_every: usize,
    /// Reconcile workers.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// Service CIDR.
    #[arg(long, default_value = "10.96.0.0/16")]
    service_cidr: String,
    /// Where ClusterIPs are recorded: `ipaddress` or `serviceipclaim` (run against fresh API
    /// servers to compare the two).
    #[arg(long, default_value = "ipaddress")]
    cluster_ip_ledger: String,
}

async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds::all() {
        match api.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e).context("installing CRDs"),
        }
    }
    let claims: Api<crds::ServiceIPClaim> = Api::all(client.clone());
    for _ in 0..200 {
        if claims.list(&ListParams::default().limit(1)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("CRDs not served")
}

async fn namespace(client: &Client, prefix: &str) -> anyhow::Result<String> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"generateName": format!("{prefix}-")}}))?;
    let created = api.create(&PostParams::default(), &ns).await?;
    created.metadata.name.context("namespace name")
}

async fn create_services(
    api: &Api<Service>,
    n: usize,
    conc: usize,
    np_every: usize,
) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let typ = if np_every > 0 && i % np_every == 0 {
                    "NodePort"
                } else {
                    "ClusterIP"
                };
                let svc: Service = serde_json::from_value(json!({
                    "metadata": {"name": format!("bench-{i}")},
                    "spec": {"type": typ, "selector": {"app": format!("a{i}")},
                             "ports": [{"port": 80, "protocol": "TCP"}]}
                }))?;
                api.create(&PostParams::default(), &svc).await?;
                Ok(())
            }
        })
        .buffer_unordered(conc)
        .collect()
        .await;
    results.into_iter().collect()
}

fn allocated(s: &Service) -> bool {
    let spec = s.spec.as_ref();
    let has_ip = spec
        .and_then(|s| s.cluster_ips.as_ref())
        .is_some_and(|v| !v.is_empty());
    let needs_np = spec.and_then(|s| s.type_.as_deref()) == Some("NodePort");
    let has_np = spec
        .and_then(|s| s.ports.as_ref())
        .is_some_and(|p| p.iter().all(|p| p.node_port.is_some()));
    has_ip && (!needs_np || has_np)
}

async fn wait_all(api: &Api<Service>, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let items = api.list(&ListParams::default()).await?.items;
        if items.len() == n && items.iter().all(allocated) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timed out: {} of {n} allocated",
            items.iter().filter(|s| allocated(s)).count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn start(client: &Client, cfg: IpamConfig) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let ipam = Ipam::new(client.clone(), cfg, IpamMetrics::default())?;
    Ok(tokio::spawn(async move {
        if let Err(err) = controllers::ipam::run(ipam, ReadyFlag::detached("ipam")).await {
            eprintln!("ipam stopped: {err}");
        }
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = runtime::client::client(Some(&args.kubeconfig)).await?;
    install_crds(&client).await?;
    let ledger = match args.cluster_ip_ledger.as_str() {
        "ipaddress" => LedgerChoice::IpAddress,
        "serviceipclaim" => LedgerChoice::ServiceIpClaim,
        other => anyhow::bail!("--cluster-ip-ledger {other:?}: ipaddress or serviceipclaim"),
    };
    let cfg = IpamConfig {
        service_cidrs: controllers::ipam::parse_service_cidrs(&args.service_cidr)?,
        workers: args.workers,
        ledger,
        ..Default::default()
    };
    let n = args.services;

    // Phase 1: backlog (controller starts after the Services exist).
    let ns1 = namespace(&client, "ipam-bench-backlog").await?;
    let api1: Api<Service> = Api::namespaced(client.clone(), &ns1);
    create_services(&api1, n, args.concurrency, args.nodeport_every).await?;
    let t0 = Instant::now();
    let ctl = start(&client, cfg.clone())?;
    wait_all(&api1, n).await?;
    let backlog = t0.elapsed();

    // Phase 2: burst (controller running while Services arrive).
    let ns2 = namespace(&client, "ipam-bench-burst").await?;
    let api2: Api<Service> = Api::namespaced(client.clone(), &ns2);
    let t1 = Instant::now();
    create_services(&api2, n, args.concurrency, args.nodeport_every).await?;
    let created = t1.elapsed();
    wait_all(&api2, n).await?;
    let burst = t1.elapsed();
    ctl.abort();

    let np = if args.nodeport_every > 0 {
        n.div_ceil(args.nodeport_every)
    } else {
        0
    };
    let out = json!({
        "services_per_phase": n,
        "cluster_ip_ledger": args.cluster_ip_ledger,
        "nodeport_services_per_phase": np,
        "workers": args.workers,
        "create_concurrency": args.concurrency,
        "backlog": {
            "seconds": backlog.as_secs_f64(),
            "services_per_second": n as f64 / backlog.as_secs_f64(),
            "allocations_per_second": (n + np) as f64 / backlog.as_secs_f64(),
        },
        "burst": {
            "seconds_to_create": created.as_secs_f64(),
            "seconds_to_all_allocated": burst.as_secs_f64(),
            "services_per_second": n as f64 / burst.as_secs_f64(),
            "create_only_services_per_second": n as f64 / created.as_secs_f64(),
        },
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
