//! Dataplane benchmark; prints one JSON object. Needs root (creates network namespaces).
//!
//! * `full_sync`: full sync of S Services × E endpoints into a fresh netns (median of R runs), and the
//!   baseline: plain `nft -f` of the same S×E backends as one flat map (same netns shape, same runs).
//! * `single_change`: one endpoint change at that scale (partial sync; median / p90 / max of N changes).
//! * `connect_latency`: TCP connect to a ClusterIP with S Services installed vs with 100.
//! * `peak_rss_mib`: the peak resident size of the process that built the state and ran the full
//!   sync (the proxy's in-memory model, renderer and applier; the real binary's watch caches come
//!   on top — the `proxy_scale` bench of the e2e crate measures the binary).
//!
//! The shapes of interest: `--services 10000 --endpoints 10`, `--services 5000 --endpoints 50`
//! and `--services 100000 --endpoints 10` (one million endpoints).
//!
//! Each measurement runs in a child process started with `ip netns exec`, so nft runs exactly as it
//! does under svcnet-proxy (no `ip netns exec` per transaction).
//!
//! Usage: `dataplane-bench [--services 10000] [--endpoints 10] [--runs 3] [--changes 20]`

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use dataplane::apply::nft::ExecNft;
use dataplane::sync::proxier::Proxier;
use dataplane::types::*;
use serde_json::{json, Value};

struct Opts {
    services: usize,
    endpoints: usize,
    runs: usize,
    changes: usize,
}

fn parse_opts(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        services: 10_000,
        endpoints: 10,
        runs: 3,
        changes: 20,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || -> anyhow::Result<usize> {
            it.next()
                .context("missing value")?
                .parse()
                .context("not a number")
        };
        match a.as_str() {
            "--services" => o.services = val()?,
            "--endpoints" => o.endpoints = val()?,
            "--runs" => o.runs = val()?,
            "--changes" => o.changes = val()?,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(o)
}

fn svc_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i as u32 + 1)
}

fn ep_ip(i: usize, j: usize, e: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + (i * e + j) as u32 + 1)
}

fn node() -> NodeConfig {
    NodeConfig {
        node_name: "node-a".into(),
        node_ips: vec!["192.168.0.10".parse().expect("literal")],
        cluster_cidrs: vec!["10.128.0.0/9".parse().expect("literal")],
        nodeport_addresses: NodePortAddresses::All,
        families: vec![Family::Ipv4, Family::Ipv6],
        ..Default::default()
    }
}

fn state(services: usize, endpoints: usize) -> ProxyState {
    let mut st = ProxyState::default();
    for i in 0..services {
        let name = format!("svc-{i}");
        st.upsert_service(ServiceInfo::cluster_ip(
            ServiceKey::new("bench", &name),
            vec![IpAddr::V4(svc_ip(i))],
            vec![ServicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: None,
            }],
        ));
        st.upsert_slice(EndpointSliceInfo {
            namespace: "bench".into(),
            name: format!("{name}-abcde"),
            service_name: name,
            family: Family::Ipv4,
            ports: vec![EndpointPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 8080,
            }],
            endpoints: (0..endpoints)
                .map(|j| EndpointInfo {
                    address: IpAddr::V4(ep_ip(i, j, endpoints)),
                    ready: true,
                    serving: true,
                    terminating: false,
                    node_name: Some(format!("node-{}", j % 50)),
                    zone_hints: vec![],
                    node_hints: vec![],
                })
                .collect(),
            trigger_time: None,
        });
    }
    st
}

fn flat_script(services: usize, endpoints: usize) -> String {
    let mut s = String::from(
        "add table ip flatbench\nadd map ip flatbench backends { type ipv4_addr . inet_service . inet_service : ipv4_addr . inet_service ; }\n",
    );
    let mut n = 0;
    for i in 0..services {
        for j in 0..endpoints {
            if n % 2048 == 0 {
                if n > 0 {
                    s.push_str(" }\n");
                }
                s.push_str("add element ip flatbench backends { ");
            } else {
                s.push_str(", ");
            }
            let _ = write!(
                s,
                "{} . 80 . {j} : {} . 8080",
                svc_ip(i),
                ep_ip(i, j, endpoints)
            );
            n += 1;
        }
    }
    if n > 0 {
        s.push_str(" }\n");
    }
    s
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(idx).copied().unwrap_or(f64::NAN)
}

// === inner phases (run inside a netns) ===

fn inner_baseline(o: &Opts) -> anyhow::Result<Value> {
    let script = flat_script(o.services, o.endpoints);
    let start = Instant::now();
    ExecNft::new().run_script(&script, false)?;
    Ok(json!({ "seconds": start.elapsed().as_secs_f64() }))
}

fn inner_breakdown(o: &Opts) -> anyhow::Result<Value> {
    let st = state(o.services, o.endpoints);
    let tr = Instant::now();
    let mut n = 0;
    for svc in st.services.values() {
        if let Some(f) =
            dataplane::compute::render::service_fragment(Family::Ipv4, &node(), &st, svc)
        {
            n += f.elements.len();
        }
    }
    let render_only = tr.elapsed().as_secs_f64();
    // What a full sync does before nft can start evaluating (render, de-duplicate, write the
    // script), as it streams to nft, here into memory; then its bookkeeping; then nft alone on
    // exactly that script.
    let ts = Instant::now();
    let mut script = Vec::new();
    let mut build = None;
    dataplane::apply::nft::stream_script(&mut script, &mut |sink| {
        build = Some(dataplane::compute::assembly::Assembly::stream_full(
            &node(),
            &st,
            &Default::default(),
            sink,
        ));
        Ok(())
    })?;
    let stream_s = ts.elapsed().as_secs_f64();
    let tf = Instant::now();
    drop(build.map(|b| b.finish()));
    let finish_s = tf.elapsed().as_secs_f64();
    if let Some(path) = std::env::var_os("SVCNET_BENCH_DUMP") {
        std::fs::write(path, &script)?;
    }
    let text = String::from_utf8(script)?;
    let tn = Instant::now();
    ExecNft::exec_only().run_script(&text, false)?;
    let nft_s = tn.elapsed().as_secs_f64();
    // A two-element delta on the loaded table, nft alone.
    let delta = format!(
        "delete element ip svcnet backends-tcp {{ {ip} . 80 . 0 }}\nadd element ip svcnet backends-tcp {{ {ip} . 80 . 0 : 10.255.255.1 . 8080 }}\n",
        ip = svc_ip(5)
    );
    let t6 = Instant::now();
    ExecNft::exec_only().run_script(&delta, false)?;
    let t7 = Instant::now();
    // The same delta through the long-lived in-process libnftables context partial syncs use.
    let lib = dataplane::apply::libnft::InProcessNft::open().context("libnftables")?;
    lib.run_script(&delta)?; // first use fills its cache
    let mut in_process = vec![];
    for _ in 0..10 {
        let t = Instant::now();
        lib.run_script(&delta)?;
        in_process.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let d = |a: Instant, b: Instant| (b - a).as_secs_f64();
    Ok(json!({
        "fragments_only_s": render_only, "fragment_elements": n, "stream_script_s": stream_s,
        "bookkeeping_s": finish_s, "nft_on_streamed_script_s": nft_s, "script_bytes": text.len(),
        "nft_two_element_delta_ms": d(t6, t7) * 1e3,
        "libnftables_two_element_delta_median_ms": median(&mut in_process),
    }))
}

/// `VmHWM` (peak resident set) of this process, in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn inner_full(o: &Opts) -> anyhow::Result<Value> {
    let st = state(o.services, o.endpoints);
    let mut p = Proxier::new(ExecNft::new(), node());
    let start = Instant::now();
    let out = p.sync(&st, None, true)?;
    let secs = start.elapsed().as_secs_f64();
    Ok(json!({
        "seconds": secs, "chains": out.counts.chains, "rules": out.counts.rules,
        "sets": out.counts.sets, "elements": out.counts.elements,
        "peak_rss_mib": peak_rss_mib(),
    }))
}

/// `n` connect times in µs.
fn connect_samples(target: SocketAddr, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(2))
            .context("connect to service")?;
        v.push(start.elapsed().as_secs_f64() * 1e6);
        // Let the server close first (it closes right after accept): TIME_WAIT then sits on the
        // server side, and ~10⁴ client-side TIME_WAITs cannot slow the client's port selection.
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let _ = std::io::Read::read(&mut s, &mut [0u8; 1]);
        drop(s);
    }
    Ok(v)
}

fn latency_summary(mut v: Vec<f64>) -> Value {
    let n = v.len();
    json!({ "p50_us": median(&mut v), "p90_us": percentile(&mut v, 0.9), "samples": n })
}

fn inner_scale(o: &Opts) -> anyhow::Result<Value> {
    // A local listener behind service 0.
    // Loopback plus a veth pair carrying a default route, so that Service IPs are routable.
    for cmd in [
        "link set lo up",
        "link add svb0 type veth peer name svb1",
        "link set svb0 up",
        "link set svb1 up",
        "addr add 192.168.0.10/24 dev svb0",
        "route add default via 192.168.0.1 dev svb0 onlink",
    ] {
        let args: Vec<&str> = cmd.split(' ').collect();
        if !Command::new("ip").args(&args).status()?.success() {
            bail!("ip {cmd} failed");
        }
    }
    for j in 0..o.endpoints {
        Command::new("ip")
            .args([
                "addr",
                "add",
                &format!("{}/32", ep_ip(0, j, o.endpoints)),
                "dev",
                "lo",
            ])
            .status()?;
    }
    let listener = TcpListener::bind("0.0.0.0:8080")?;
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s);
        }
    });
    let target = SocketAddr::new(IpAddr::V4(svc_ip(0)), 80);
    let samples = 2000;

    let mut st = state(o.services, o.endpoints);
    let nft = ExecNft::new();
    let in_process = nft.is_in_process();
    let mut p = Proxier::new(nft, node());
    p.sync(&st, None, true)?;
    let _ = connect_samples(target, 200)?; // warm-up
    let mut lat_big = connect_samples(target, samples)?;

    // Single endpoint changes on random-ish Services.
    let mut times = vec![];
    let mut ops = vec![];
    for c in 0..o.changes {
        let i = (c * 7919 + 13) % o.services;
        let key = ServiceKey::new("bench", format!("svc-{i}"));
        let mut slice = st
            .slices
            .get(&key)
            .and_then(|m| m.values().next())
            .cloned()
            .context("slice exists")?;
        let last = slice.endpoints.len() - 1;
        slice.endpoints[last].address =
            IpAddr::V4(Ipv4Addr::new(10, 255, (c / 250) as u8, (c % 250) as u8 + 1));
        st.upsert_slice(slice);
        let changed = [key].into_iter().collect();
        let start = Instant::now();
        let out = p.sync(&st, Some(&changed), false)?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        ops.push(out.ops);
        if out.full {
            bail!("single change unexpectedly did a full sync");
        }
    }
    let max = times.iter().cloned().fold(0.0, f64::max);

    // Shrink to 100 Services (partial sync) and measure again; then alternate big and small a few
    // times (partial syncs both ways) so that this VM's drift hits both states alike.
    let small = state(100.min(o.services), o.endpoints);
    let start = Instant::now();
    p.sync(&small, None, false)?;
    let shrink = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let _ = connect_samples(target, 200)?;
    let mut lat_small = connect_samples(target, samples)?;
    // After a sync that deleted ~10⁵ elements the kernel frees them from a worker for a while;
    // let that finish before timing connects.
    let settle = || std::thread::sleep(Duration::from_secs(2));
    for _ in 0..3 {
        p.sync(&st, None, false)?;
        settle();
        let _ = connect_samples(target, 100)?;
        lat_big.extend(connect_samples(target, samples)?);
        p.sync(&small, None, false)?;
        settle();
        let _ = connect_samples(target, 100)?;
        lat_small.extend(connect_samples(target, samples)?);
    }
    let (lat_big, lat_small) = (latency_summary(lat_big), latency_summary(lat_small));
    let ratio = lat_big["p50_us"].as_f64().unwrap_or(f64::NAN)
        / lat_small["p50_us"].as_f64().unwrap_or(f64::NAN);
    Ok(json!({
        "single_change": {
            "median_ms": median(&mut times.clone()), "p90_ms": percentile(&mut times.clone(), 0.9), "max_ms": max,
            "ops_per_change": ops, "applied_in_process": in_process,
        },
        "shrink_to_100_partial_seconds": shrink,
        "connect_latency": { "with_all_services": lat_big, "with_100_services": lat_small, "ratio_p50": ratio },
    }))
}

// === orchestration ===

struct Ns(String);

impl Ns {
    fn new(tag: &str) -> anyhow::Result<Ns> {
        let name = format!("svcnet-bench-{tag}-{}", std::process::id());
        if !Command::new("ip")
            .args(["netns", "add", &name])
            .status()?
            .success()
        {
            bail!("ip netns add {name} failed (needs root)");
        }
        Ok(Ns(name))
    }

    fn run(&self, phase: &str, args: &[String]) -> anyhow::Result<Value> {
        let exe = std::env::current_exe()?;
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .arg(exe)
            .args(["--inner", phase])
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "phase {phase} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--inner") {
        let phase = args.get(1).cloned().unwrap_or_default();
        let o = parse_opts(&args[2..])?;
        let v = match phase.as_str() {
            "baseline" => inner_baseline(&o)?,
            "full" => inner_full(&o)?,
            "breakdown" => inner_breakdown(&o)?,
            "scale" => inner_scale(&o)?,
            other => bail!("unknown phase {other}"),
        };
        println!("{v}");
        return Ok(());
    }
    let o = parse_opts(&args)?;
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg = loadavg
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let mut base = vec![];
    let mut full = vec![];
    let mut counts = Value::Null;
    // Deleting a namespace frees its ruleset asynchronously in a kernel worker: wait for that before
    // the next timed load, and alternate which of the two goes first.
    let settle = || std::thread::sleep(Duration::from_secs(2));
    for r in 0..o.runs {
        for phase in if r % 2 == 0 {
            ["baseline", "full"]
        } else {
            ["full", "baseline"]
        } {
            let ns = Ns::new(&format!("{phase}{r}"))?;
            let v = ns.run(phase, &args)?;
            drop(ns);
            settle();
            let secs = v["seconds"].as_f64().unwrap_or(f64::NAN);
            if phase == "baseline" {
                base.push(secs);
            } else {
                full.push(secs);
                counts = v;
            }
        }
    }
    let breakdown = Ns::new("breakdown")?.run("breakdown", &args)?;
    let ns = Ns::new("scale")?;
    let scale = ns.run("scale", &args)?;
    let (bm, fm) = (median(&mut base.clone()), median(&mut full.clone()));
    let mut report = BTreeMap::new();
    report.insert("services", json!(o.services));
    report.insert("endpoints_per_service", json!(o.endpoints));
    report.insert(
        "full_sync",
        json!({
            "runs_seconds": full, "median_seconds": fm,
            "baseline_flat_map_runs_seconds": base, "baseline_flat_map_median_seconds": bm,
            "ratio_to_baseline": fm / bm,
            // Each round times both back to back: the median of the per-round ratios is less
            // sensitive to this VM's run-to-run drift than the ratio of the medians.
            "paired_ratio_median": median(&mut full.iter().zip(&base).map(|(f, b)| f / b).collect::<Vec<_>>()),
            "loadavg_at_start": loadavg,
            "chains": counts["chains"], "rules": counts["rules"], "sets": counts["sets"], "elements": counts["elements"],
            "peak_rss_mib": counts["peak_rss_mib"],
        }),
    );
    report.insert("scale", scale);
    report.insert("full_sync_breakdown", breakdown);
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
