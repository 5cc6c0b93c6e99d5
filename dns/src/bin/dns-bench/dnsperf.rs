//! Running `dnsperf` against a server and reading its results.

use super::*;

#[derive(Debug, Default)]
pub(super) struct PerfResult {
    pub(super) qps: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) lost: u64,
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

/// Both runs of one server: unthrottled, then at half the qps that run reached.
pub(super) fn max_and_half(
    args: &Args,
    port: u16,
    queries: &Path,
) -> anyhow::Result<(PerfResult, PerfResult)> {
    let max = run_dnsperf(args, port, queries, None)?;
    let half = run_dnsperf(args, port, queries, Some(max.qps / 2.0))?;
    Ok((max, half))
}

pub(super) fn perf_json(r: &PerfResult) -> String {
    format!(
        "\"qps\": {:.0}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"lost\": {}",
        r.qps, r.p50_ms, r.p99_ms, r.lost
    )
}
