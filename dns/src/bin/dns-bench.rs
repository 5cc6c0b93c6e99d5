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
use dns::metrics::Metrics;
use dns::server::{self, Handler};

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

#[derive(Debug, Default)]
struct PerfResult {
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
    lost: u64,
}

fn run_dnsperf(args: &Args, port: u16, queries: &Path) -> anyhow::Result<PerfResult> {
    let out = Command::new("dnsperf")
        .args(["-s", "127.0.0.1", "-p", &port.to_string()])
        .arg("-d")
        .arg(queries)
        .args(["-l", &args.seconds.to_string()])
        .args(["-c", &args.clients.to_string()])
        .args(["-q", &args.outstanding.to_string()])
        .args(["-T", "1", "-v"])
        .stderr(Stdio::null())
        .output()
        .context("running dnsperf (apt-get install dnsperf)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut res = PerfResult::default();
    let mut lat: Vec<f64> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Queries per second:") {
            res.qps = rest.trim().parse().unwrap_or(0.0);
        } else if let Some(rest) = line.strip_prefix("Queries lost:") {
            res.lost = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        } else if line.starts_with('>') {
            // `> NOERROR svc-1.ns-1.svc.cluster.local A 0.000123`
            if let Some(v) = line.split_whitespace().last().and_then(|v| v.parse().ok()) {
                lat.push(v);
            }
        }
    }
    if lat.is_empty() {
        bail!("dnsperf printed no per-query latencies:\n{text}");
    }
    lat.sort_by(f64::total_cmp);
    let at = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize] * 1000.0;
    res.p50_ms = at(0.50);
    res.p99_ms = at(0.99);
    Ok(res)
}

fn free_port() -> anyhow::Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.port())
}

fn run_nsd(args: &Args, dir: &Path, queries: &Path) -> anyhow::Result<(PerfResult, u64)> {
    use std::fmt::Write as _;
    let mut zone = String::from(
        "$ORIGIN cluster.local.\n$TTL 5\n@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5\n@ IN NS ns.dns.cluster.local.\nns.dns IN A 127.0.0.1\n",
    );
    for i in 0..args.services {
        let (ns, name) = names(i);
        writeln!(zone, "{name}.{ns}.svc IN A {}", cluster_ip(i))?;
    }
    std::fs::write(dir.join("cluster.local.zone"), zone)?;
    let port = free_port()?;
    let conf = format!(
        "server:\n  ip-address: 127.0.0.1@{port}\n  server-count: 1\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  database: \"\"\n  xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  logfile: \"{d}/nsd.log\"\n  rrl-ratelimit: 0\n  verbosity: 0\nremote-control:\n  control-enable: no\nzone:\n  name: cluster.local\n  zonefile: cluster.local.zone\n",
        d = dir.display()
    );
    let conf_path = dir.join("nsd.conf");
    std::fs::write(&conf_path, conf)?;
    let mut child = Command::new("nsd")
        .arg("-d")
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nsd (apt-get install nsd)")?;
    // Wait until it answers.
    let probe = dir.join("probe.txt");
    std::fs::write(&probe, "svc-0.ns-0.svc.cluster.local A\n")?;
    let mut up = false;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        let ok = Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &port.to_string(),
                "+short",
                "+time=1",
                "+tries=1",
            ])
            .arg("svc-0.ns-0.svc.cluster.local")
            .output()
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(false);
        if ok {
            up = true;
            break;
        }
    }
    if !up {
        let _ = child.kill();
        bail!(
            "nsd did not answer; its log:\n{}",
            std::fs::read_to_string(dir.join("nsd.log")).unwrap_or_default()
        );
    }
    let res = run_dnsperf(args, port, queries);
    // nsd forks its server process; the pidfile names the main one. Sum every nsd process of
    // this run: the main process's children share its process group.
    let mut rss = rss_kib(child.id());
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Field 4 is the parent pid.
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            if ppid == Some(child.id()) {
                rss += rss_kib(pid);
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok((res?, rss))
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
    let port = rt.block_on(async {
        let handler = Arc::new(Handler {
            index: Arc::new(RwLock::new(index)),
            config: Config::new("cluster.local", 5, PodMode::Insecure)?,
            forwarder: Forwarder::new(ForwardConfig::new(vec![]), Metrics::unregistered("bench")),
            metrics: Metrics::unregistered("bench"),
            synced: Arc::new(AtomicBool::new(true)),
        });
        let (udp, tcp) = server::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let port = udp.local_addr()?.port();
        tokio::spawn(server::serve_udp(handler.clone(), udp));
        tokio::spawn(server::serve_tcp(handler, tcp));
        anyhow::Ok(port)
    })?;
    let ours = run_dnsperf(&args, port, &queries)?;
    let rss_serving = rss_kib(std::process::id());
    let nsd = if args.no_nsd {
        None
    } else {
        Some(run_nsd(&args, &dir, &queries)?)
    };
    let _ = std::fs::remove_dir_all(&dir);
    let mut out = format!(
        "{{\"services\": {}, \"endpoints\": {}, \"seconds\": {}, \"index_build_ms\": {build_ms:.1}, \
\"svcnet_dns\": {{\"qps\": {:.0}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"lost\": {}, \
\"rss_kib\": {rss_serving}, \"index_rss_kib\": {}}}",
        args.services,
        u64::from(args.services) * u64::from(args.endpoints_per_service),
        args.seconds,
        ours.qps,
        ours.p50_ms,
        ours.p99_ms,
        ours.lost,
        rss_index.saturating_sub(rss_before),
    );
    if let Some((n, rss)) = nsd {
        let ratio = if n.qps > 0.0 { ours.qps / n.qps } else { 0.0 };
        out.push_str(&format!(
            ", \"nsd\": {{\"qps\": {:.0}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"lost\": {}, \"rss_kib\": {rss}}}, \"qps_ratio_vs_nsd\": {ratio:.3}",
            n.qps, n.p50_ms, n.p99_ms, n.lost
        ));
    }
    out.push('}');
    println!("{out}");
    Ok(())
}
