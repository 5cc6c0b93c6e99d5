//! EndpointSlice change → answer latency through the API server and the watchers.

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
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
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
