//! `dns-bench`: svcnet-dns's request path under `dnsperf`, next to `nsd` serving the same
//! records from a zone file.
//!
//! Builds an index of `--services` ClusterIP Services (default 10,000, in 100 Namespaces) with
//! `--endpoints-per-service` endpoints each (default 10: 100,000 endpoints), serves it on a
//! loopback UDP port in this process, and runs `dnsperf` for `--seconds` with the A queries of
//! every Service name. Then it writes the same A records into a zone file, starts `nsd` on it
//! (`rrl-ratelimit: 0`, one server process) and runs the same `dnsperf`. Prints one JSON
//! object: qps, p50/p99 latency (from `dnsperf -v`'s per-query lines), RSS of each server, and
//! svcnet-dns's qps as a fraction of nsd's. Needs `dnsperf` and `nsd` on $PATH (Debian
//! packages of those names); `--no-nsd` skips the comparison.
//!
//! Each server is loaded twice: unthrottled (its maximum qps), then for `--seconds` more at half
//! that rate (`dnsperf -Q`), where the latency percentiles say what a client sees below
//! saturation (`half_load` in the JSON).
//!
//! Churn (`churn` in the JSON; `--churn 0` skips it): `svcnet apiserver` (the embedded API
//! server, found next to this binary or given with `--svcnet-bin`) is started, svcnet-dns's
//! watchers run against it in this process, and a headless Service's EndpointSlice is updated
//! `--churn` times through the API, each time to a new address. The latency of one change is
//! from just before the update is sent until a DNS query (repeated every 0.5 ms) answers the
//! new address: API write, watch delivery, index update and the answer together.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use dns::answer::{Config, PodMode};
use dns::forward::{ForwardConfig, Forwarder};
use dns::index::{Endpoint, EndpointSlice, Index, Port, Service, ServiceKind};
use dns::listen;
use dns::metrics::Metrics;
use dns::server::{self, Handler};

mod churn;
mod dnsperf;
mod nsd;

use dnsperf::{max_and_half, perf_json, PerfResult};
use nsd::run_nsd;

#[derive(Debug, Parser)]
#[command(name = "dns-bench", about = "svcnet-dns vs nsd under dnsperf")]
struct Args {
    /// Services.
    #[arg(long, default_value_t = 10_000)]
    services: u32,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 10)]
    endpoints_per_service: u32,
    /// Seconds of load per server.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// dnsperf clients (sockets).
    #[arg(long, default_value_t = 4)]
    clients: u32,
    /// dnsperf queries in flight.
    #[arg(long, default_value_t = 200)]
    outstanding: u32,
    /// Skip the nsd run.
    #[arg(long)]
    no_nsd: bool,
    /// EndpointSlice changes to time through the API (0 skips the churn run).
    #[arg(long, default_value_t = 100)]
    churn: u32,
    /// The `svcnet` binary (for `svcnet apiserver`); default: next to this one, or the debug
    /// build's.
    #[arg(long)]
    svcnet_bin: Option<std::path::PathBuf>,
}

fn cluster_ip(i: u32) -> Ipv4Addr {
    let n = (10u32 << 24 | 96 << 16) + i + 1;
    Ipv4Addr::from(n)
}

fn endpoint_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from((10u32 << 24 | 128 << 16) + i + 1)
}

fn names(i: u32) -> (String, String) {
    (format!("ns-{}", i % 100), format!("svc-{i}"))
}

fn build_index(args: &Args) -> Index {
    let mut idx = Index::new();
    idx.reset_namespaces((0..100).map(|i| format!("ns-{i}")));
    let http = Port {
        name: "http".into(),
        protocol: "TCP".into(),
        port: 80,
    };
    for i in 0..args.services {
        let (ns, name) = names(i);
        idx.apply_service(Service {
            namespace: ns.clone(),
            name: name.clone(),
            kind: ServiceKind::ClusterIp(vec![IpAddr::V4(cluster_ip(i))]),
            ports: vec![http.clone()],
            publish_not_ready: false,
        });
        let endpoints = (0..args.endpoints_per_service)
            .map(|e| Endpoint {
                addresses: vec![IpAddr::V4(endpoint_ip(i * args.endpoints_per_service + e))],
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
                hostname: None,
                node_name: Some(format!("node-{}", e % 50)),
            })
            .collect();
        idx.apply_slice(EndpointSlice {
            namespace: ns,
            name: format!("{name}-abcde"),
            service: name,
            ports: vec![http.clone()],
            endpoints,
        });
    }
    idx
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn free_port() -> anyhow::Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.port())
}

/// Serves `handler` on a loopback port (UDP and TCP) the way svcnet-dns does.
async fn serve(handler: Handler) -> anyhow::Result<(SocketAddr, [tokio::task::JoinHandle<()>; 2])> {
    let handler = Arc::new(handler);
    let (udp, tcp) = listen::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = udp.local_addr()?;
    let loops = listen::default_udp_loops();
    Ok((
        addr,
        [
            tokio::spawn(listen::serve_udp(handler.clone(), udp, loops)),
            tokio::spawn(listen::serve_tcp(handler, tcp)),
        ],
    ))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("svcnet-dns-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let queries = dir.join("queries.txt");
    let mut q = String::new();
    for i in 0..args.services {
        let (ns, name) = names(i);
        q.push_str(&format!("{name}.{ns}.svc.cluster.local A\n"));
    }
    std::fs::write(&queries, q)?;

    let rss_before = rss_kib(std::process::id());
    let build_started = std::time::Instant::now();
    let index = build_index(&args);
    let build_ms = build_started.elapsed().as_secs_f64() * 1000.0;
    let rss_index = rss_kib(std::process::id());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let index = Arc::new(RwLock::new(index));
    let start = |answer_cache: usize| {
        rt.block_on(async {
            let handler = Handler::new(
                index.clone(),
                Config::new("cluster.local", 5, PodMode::Insecure)?,
                Forwarder::new(ForwardConfig::new(vec![]), Metrics::unregistered("bench")),
                Metrics::unregistered("bench"),
                Arc::new(AtomicBool::new(true)),
                answer_cache,
            );
            let (addr, _tasks) = serve(handler).await?;
            anyhow::Ok(addr.port())
        })
    };
    // The default configuration (answer cache on), then every answer computed from the index.
    let port = start(server::DEFAULT_ANSWER_CACHE)?;
    let (ours, ours_half) = max_and_half(&args, port, &queries)?;
    let rss_serving = rss_kib(std::process::id());
    let uncached = start(0)?;
    let (ours_uncached, ours_uncached_half) = max_and_half(&args, uncached, &queries)?;
    let nsd = if args.no_nsd {
        None
    } else {
        Some(run_nsd(&args, &dir, &queries)?)
    };
    let churn = if args.churn == 0 {
        None
    } else {
        Some(rt.block_on(churn::run(&args, &dir))?)
    };
    let _ = std::fs::remove_dir_all(&dir);
    let mut out = format!(
        "{{\"services\": {}, \"endpoints\": {}, \"seconds\": {}, \"index_build_ms\": {build_ms:.1}, \
\"svcnet_dns\": {{{}, \"rss_kib\": {rss_serving}, \"index_rss_kib\": {}, \
\"half_load\": {{{}}}}}, \"svcnet_dns_uncached\": {{{}, \"half_load\": {{{}}}}}",
        args.services,
        u64::from(args.services) * u64::from(args.endpoints_per_service),
        args.seconds,
        perf_json(&ours),
        rss_index.saturating_sub(rss_before),
        perf_json(&ours_half),
        perf_json(&ours_uncached),
        perf_json(&ours_uncached_half),
    );
    if let Some(((n, n_half), rss)) = nsd {
        let ratio = |q: f64| if n.qps > 0.0 { q / n.qps } else { 0.0 };
        out.push_str(&format!(
            ", \"nsd\": {{{}, \"rss_kib\": {rss}, \"half_load\": {{{}}}}}, \"qps_ratio_vs_nsd\": {:.3}, \"uncached_qps_ratio_vs_nsd\": {:.3}",
            perf_json(&n),
            perf_json(&n_half),
            ratio(ours.qps),
            ratio(ours_uncached.qps),
        ));
    }
    if let Some(c) = churn {
        out.push_str(&format!(
            ", \"churn\": {{\"changes\": {}, \"p50_ms\": {:.2}, \"p99_ms\": {:.2}, \"max_ms\": {:.2}}}",
            c.changes, c.p50_ms, c.p99_ms, c.max_ms
        ));
    }
    out.push('}');
    println!("{out}");
    Ok(())
}
