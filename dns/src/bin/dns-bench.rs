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

#[derive(Debug, Default)]
struct PerfResult {
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
    lost: u64,
}

/// One dnsperf run; `qps` limits the rate (`-Q`), `None` sends as fast as answers come.
fn run_dnsperf(
    args: &Args,
    port: u16,
    queries: &Path,
    qps: Option<f64>,
) -> anyhow::Result<PerfResult> {
    let mut cmd = Command::new("dnsperf");
    if let Some(q) = qps {
        cmd.args(["-Q", &format!("{}", q.max(1.0).round() as u64)]);
    }
    let out = cmd
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

/// Both runs of one server: unthrottled, then at half the qps that run reached.
fn max_and_half(
    args: &Args,
    port: u16,
    queries: &Path,
) -> anyhow::Result<(PerfResult, PerfResult)> {
    let max = run_dnsperf(args, port, queries, None)?;
    let half = run_dnsperf(args, port, queries, Some(max.qps / 2.0))?;
    Ok((max, half))
}

fn perf_json(r: &PerfResult) -> String {
    format!(
        "\"qps\": {:.0}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"lost\": {}",
        r.qps, r.p50_ms, r.p99_ms, r.lost
    )
}

fn run_nsd(
    args: &Args,
    dir: &Path,
    queries: &Path,
) -> anyhow::Result<((PerfResult, PerfResult), u64)> {
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
    let res = max_and_half(args, port, queries);
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

/// EndpointSlice change → answer latency through the API server and the watchers.
mod churn {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::path::{Path, PathBuf};
    use std::process::Stdio;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, RwLock};
    use std::time::{Duration, Instant};

    use anyhow::{bail, Context};
    use dns::answer::{Config, PodMode};
    use dns::forward::{ForwardConfig, Forwarder};
    use dns::index::Index;
    use dns::metrics::Metrics;
    use dns::server::{self, Handler};
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    use k8s_openapi::api::core::v1::{Namespace, Service};
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{
        Endpoint, EndpointConditions, EndpointPort, EndpointSlice,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::api::PostParams;
    use kube::{Api, Client};
    use tokio::io::AsyncBufReadExt;
    use tokio::net::UdpSocket;

    use super::Args;

    pub struct Churn {
        pub changes: u32,
        pub p50_ms: f64,
        pub p99_ms: f64,
        pub max_ms: f64,
    }

    const NS: &str = "churn";
    const NAME: &str = "churn.churn.svc.cluster.local.";

    fn svcnet_bin(args: &Args) -> anyhow::Result<PathBuf> {
        if let Some(p) = &args.svcnet_bin {
            return Ok(p.clone());
        }
        let exe = std::env::current_exe().context("locating dns-bench")?;
        let dir = exe.parent().context("dns-bench has a directory")?;
        for candidate in [dir.join("svcnet"), dir.join("../debug/svcnet")] {
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
        bail!(
            "no svcnet binary next to {} (cargo build -p svcnet-cli, or pass --svcnet-bin)",
            exe.display()
        )
    }

    fn addr(i: u32) -> Ipv4Addr {
        Ipv4Addr::from((10u32 << 24 | 200 << 16) + i + 1)
    }

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            ..ObjectMeta::default()
        }
    }

    fn endpoints(i: u32) -> Vec<Endpoint> {
        vec![Endpoint {
            addresses: vec![addr(i).to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                ..EndpointConditions::default()
            }),
            ..Endpoint::default()
        }]
    }

    fn slice(i: u32) -> EndpointSlice {
        let mut metadata = meta("churn-1");
        metadata.labels = Some(
            [(
                dns::watch::SERVICE_NAME_LABEL.to_string(),
                "churn".to_string(),
            )]
            .into(),
        );
        EndpointSlice {
            metadata,
            address_type: "IPv4".into(),
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(80),
                protocol: Some("TCP".into()),
                ..EndpointPort::default()
            }]),
            endpoints: endpoints(i),
        }
    }

    async fn ask(sock: &UdpSocket, server: SocketAddr) -> Option<Vec<IpAddr>> {
        let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(NAME).ok()?, RecordType::A));
        sock.send_to(&m.to_vec().ok()?, server).await.ok()?;
        let mut buf = [0u8; 4096];
        let (len, _) = tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        let reply = Message::from_vec(&buf[..len]).ok()?;
        Some(
            reply
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    _ => None,
                })
                .collect(),
        )
    }

    /// Polls until the answer is exactly `want`; the time it took, or an error after 10 s.
    async fn until(sock: &UdpSocket, server: SocketAddr, want: Ipv4Addr) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if ask(sock, server).await.as_deref() == Some(&[IpAddr::V4(want)][..]) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{NAME} never answered {want}");
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }

    pub async fn run(args: &Args, dir: &Path) -> anyhow::Result<Churn> {
        let kubeconfig = dir.join("churn.kubeconfig");
        let mut child = tokio::process::Command::new(svcnet_bin(args)?)
            .args(["apiserver", "--kubeconfig"])
            .arg(&kubeconfig)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting svcnet apiserver")?;
        let stdout = child.stdout.take().context("svcnet apiserver's stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("svcnet apiserver printed no kubeconfig in 30 s")??;
        let client: Client = runtime::client::client(Some(&kubeconfig)).await?;

        let nss: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(NS.into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        nss.create(&PostParams::default(), &ns).await?;
        let svcs: Api<Service> = Api::namespaced(client.clone(), NS);
        let svc = Service {
            metadata: meta("churn"),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        svcs.create(&PostParams::default(), &svc).await?;
        let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
        slices.create(&PostParams::default(), &slice(0)).await?;

        let index = Arc::new(RwLock::new(Index::new()));
        let synced = Arc::new(AtomicBool::new(false));
        let watch = tokio::spawn(dns::watch::run(
            client.clone(),
            index.clone(),
            synced.clone(),
            false,
        ));
        let handler = Handler::new(
            index,
            Config::new("cluster.local", 5, PodMode::Insecure)?,
            Forwarder::new(ForwardConfig::new(vec![]), Metrics::unregistered("churn")),
            Metrics::unregistered("churn"),
            synced.clone(),
            server::DEFAULT_ANSWER_CACHE,
        );
        let (server_addr, serving) = super::serve(handler).await?;
        let sock = UdpSocket::bind("127.0.0.1:0").await?;
        let started = Instant::now();
        while !synced.load(Ordering::Acquire) {
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the watchers did not list every kind in 30 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        until(&sock, server_addr, addr(0)).await?;

        let mut lat = Vec::new();
        for i in 1..=args.churn {
            let mut current = slices.get("churn-1").await?;
            current.endpoints = endpoints(i);
            let t0 = Instant::now();
            slices
                .replace("churn-1", &PostParams::default(), &current)
                .await?;
            until(&sock, server_addr, addr(i)).await?;
            lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        watch.abort();
        for s in serving {
            s.abort();
        }
        let _ = child.start_kill();
        lat.sort_by(f64::total_cmp);
        let at = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
        Ok(Churn {
            changes: args.churn,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        })
    }
}
