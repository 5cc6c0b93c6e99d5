//! Benchmark of the embedded API server; prints one JSON document.
//!
//! The server runs in a child process (this binary re-executed with `serve`), so its memory can
//! be read from `/proc/<pid>/status` without the load generator's. Measured:
//! * RSS of the idle server (baseline) and with N Pods (default 100,000);
//! * create throughput (POST, 64 concurrent);
//! * list throughput: one unpaginated list, and a paginated list (limit 500);
//! * watch throughput: streaming N ADDED events to a watch from resourceVersion 0, and fan-out of
//!   M updates to W concurrent watchers.
//!
//! Usage: `cargo run --release -p svcnet-apiserver --bin apiserver-bench -- [--pods N] [--updates M] [--watchers W]`

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use apiserver::{ApiServer, ServerConfig};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use http_body_util::BodyExt;
use kube::Client;
use serde_json::json;
use tokio::io::AsyncBufReadExt;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Pods to create.
    #[arg(long, default_value_t = 100_000)]
    pods: usize,
    /// Updates for the watch fan-out measurement.
    #[arg(long, default_value_t = 20_000)]
    updates: usize,
    /// Concurrent watchers for the fan-out measurement.
    #[arg(long, default_value_t = 10)]
    watchers: usize,
}

#[derive(Subcommand)]
enum Mode {
    /// Internal: run the server and print its URL.
    Serve,
}

fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

fn pod_json(ns: &str, i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("pod-{i:06}"), "namespace": ns, "labels": {"app": format!("app-{}", i % 100), "bench": "true"}},
        "spec": {
            "nodeName": format!("node-{}", i % 50),
            "containers": [{"name": "app", "image": "registry.invalid/bench/app:1.0", "ports": [{"containerPort": 8080, "name": "http"}]}],
        },
    }))
    .unwrap_or_default()
}

async fn send(client: &Client, req: http::Request<Vec<u8>>) -> Result<(u16, Bytes)> {
    let resp = client.send(req.map(kube::client::Body::from)).await?;
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((code, body))
}

async fn serve() -> Result<()> {
    let server = ApiServer::start(ServerConfig::default()).await?;
    println!("{}", server.url());
    tokio::signal::ctrl_c().await.ok();
    futures::future::pending::<()>().await;
    Ok(())
}

/// Read a watch stream until `n` events (of any type but BOOKMARK) have arrived.
async fn drain_watch(client: Client, path: String, n: usize) -> Result<(usize, Duration)> {
    let start = Instant::now();
    let resp = client
        .send(http::Request::get(path).body(kube::client::Body::empty())?)
        .await?;
    let mut body = resp.into_body().into_data_stream();
    let mut buf = Vec::new();
    let mut seen = 0usize;
    let mut bytes = 0usize;
    while seen < n {
        let Some(chunk) = body.next().await else {
            bail!("watch ended after {seen} events")
        };
        let chunk = chunk?;
        bytes += chunk.len();
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            if !line.starts_with(b"{\"type\":\"BOOKMARK\"") {
                seen += 1;
            }
        }
    }
    Ok((bytes, start.elapsed()))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(Mode::Serve) = args.mode {
        return serve().await;
    }
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("child pid")?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("child stdout")?).lines();
    let url = lines.next_line().await?.context("server URL")?;
    let client = Client::try_from(kube::Config::new(url.parse()?))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss_idle, _) = rss_kib(pid)?;

    let ns = "bench";
    let (code, _) = send(
        &client,
        http::Request::post("/api/v1/namespaces")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&json!({"metadata": {"name": ns}}))?)?,
    )
    .await?;
    if code != 201 {
        bail!("creating namespace: HTTP {code}");
    }

    // Creates.
    let t = Instant::now();
    let results: Vec<Result<u16>> = futures::stream::iter(0..args.pods)
        .map(|i| {
            let client = client.clone();
            async move {
                let req = http::Request::post(format!("/api/v1/namespaces/{ns}/pods"))
                    .header("content-type", "application/json")
                    .body(pod_json(ns, i))?;
                Ok(send(&client, req).await?.0)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let create_secs = t.elapsed().as_secs_f64();
    let failed = results.iter().filter(|r| !matches!(r, Ok(201))).count();
    if failed > 0 {
        bail!("{failed} creates failed");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_loaded, hwm_loaded) = rss_kib(pid)?;

    // Lists.
    let t = Instant::now();
    let (_, full) = send(
        &client,
        http::Request::get(format!("/api/v1/namespaces/{ns}/pods")).body(Vec::new())?,
    )
    .await?;
    let list_secs = t.elapsed().as_secs_f64();
    let listed: serde_json::Value = serde_json::from_slice(&full)?;
    let n_listed = listed["items"].as_array().map_or(0, Vec::len);
    if n_listed != args.pods {
        bail!("list returned {n_listed} pods, expected {}", args.pods);
    }
    let avg_obj = full.len() as f64 / args.pods as f64;
    drop(listed);

    let t = Instant::now();
    let mut cont = String::new();
    let mut pages = 0usize;
    let mut paged_bytes = 0usize;
    loop {
        let q = if cont.is_empty() {
            "limit=500".to_string()
        } else {
            format!("limit=500&continue={cont}")
        };
        let (_, body) = send(
            &client,
            http::Request::get(format!("/api/v1/namespaces/{ns}/pods?{q}")).body(Vec::new())?,
        )
        .await?;
        paged_bytes += body.len();
        pages += 1;
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        match v["metadata"]["continue"].as_str() {
            Some(c) if !c.is_empty() => cont = c.to_string(),
            _ => break,
        }
    }
    let paged_secs = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let (_, sel) = send(
        &client,
        http::Request::get(format!(
            "/api/v1/namespaces/{ns}/pods?labelSelector=app%3Dapp-7"
        ))
        .body(Vec::new())?,
    )
    .await?;
    let sel_secs = t.elapsed().as_secs_f64();
    let sel_n = serde_json::from_slice::<serde_json::Value>(&sel)?["items"]
        .as_array()
        .map_or(0, Vec::len);

    // Watch: initial state streaming.
    let (watch_bytes, watch_time) = drain_watch(
        client.clone(),
        format!("/api/v1/namespaces/{ns}/pods?watch=true&resourceVersion=0"),
        args.pods,
    )
    .await?;

    // Watch fan-out: W watchers, M updates.
    let rv = listed_rv(&client, ns).await?;
    let mut watchers = Vec::new();
    for _ in 0..args.watchers {
        let c = client.clone();
        let path = format!(
            "/api/v1/namespaces/{ns}/pods?watch=true&resourceVersion={rv}&allowWatchBookmarks=true"
        );
        watchers.push(tokio::spawn(drain_watch(c, path, args.updates)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let updates: Vec<Result<u16>> = futures::stream::iter(0..args.updates)
        .map(|i| {
            let client = client.clone();
            async move {
                let name = format!("pod-{:06}", i % args.pods);
                let req = http::Request::patch(format!("/api/v1/namespaces/{ns}/pods/{name}"))
                    .header("content-type", "application/merge-patch+json")
                    .body(serde_json::to_vec(
                        &json!({"metadata": {"annotations": {"bench/i": i.to_string()}}}),
                    )?)?;
                Ok(send(&client, req).await?.0)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let update_secs = t.elapsed().as_secs_f64();
    let bad = updates.iter().filter(|r| !matches!(r, Ok(200))).count();
    if bad > 0 {
        bail!("{bad} updates failed");
    }
    let mut delivered_secs: f64 = 0.0;
    for w in watchers {
        let (_, d) = tokio::time::timeout(Duration::from_secs(300), w).await???;
        delivered_secs = delivered_secs.max(d.as_secs_f64());
    }
    let (rss_end, hwm_end) = rss_kib(pid)?;
    child.kill().await.ok();

    let mib = |kib: u64| kib as f64 / 1024.0;
    let out = json!({
        "pods": args.pods,
        "memory": {
            "rss_idle_mib": mib(rss_idle),
            "rss_with_pods_mib": mib(rss_loaded),
            "peak_rss_after_create_mib": mib(hwm_loaded),
            "rss_per_pod_bytes": ((rss_loaded.saturating_sub(rss_idle)) * 1024) as f64 / args.pods as f64,
            "avg_pod_json_bytes": avg_obj,
            "rss_end_mib": mib(rss_end),
            "peak_rss_end_mib": mib(hwm_end),
        },
        "create": {"concurrency": 64, "seconds": create_secs, "per_second": args.pods as f64 / create_secs},
        "list": {
            "unpaginated": {"seconds": list_secs, "objects_per_second": args.pods as f64 / list_secs, "mib": full.len() as f64 / 1048576.0, "mib_per_second": full.len() as f64 / 1048576.0 / list_secs},
            "paginated_limit_500": {"pages": pages, "seconds": paged_secs, "objects_per_second": args.pods as f64 / paged_secs, "mib": paged_bytes as f64 / 1048576.0},
            "label_selector": {"matched": sel_n, "seconds": sel_secs, "objects_scanned_per_second": args.pods as f64 / sel_secs},
        },
        "watch": {
            "initial_events": {"events": args.pods, "seconds": watch_time.as_secs_f64(), "events_per_second": args.pods as f64 / watch_time.as_secs_f64(), "mib": watch_bytes as f64 / 1048576.0},
            "fanout": {
                "watchers": args.watchers,
                "updates": args.updates,
                "update_seconds": update_secs,
                "updates_per_second": args.updates as f64 / update_secs,
                "all_delivered_seconds": delivered_secs,
                "events_delivered_per_second": (args.updates * args.watchers) as f64 / delivered_secs,
            },
        },
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn listed_rv(client: &Client, ns: &str) -> Result<String> {
    let (_, body) = send(
        client,
        http::Request::get(format!("/api/v1/namespaces/{ns}/pods?limit=1")).body(Vec::new())?,
    )
    .await?;
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    v["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_string)
        .context("list resourceVersion")
}
