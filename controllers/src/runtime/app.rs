//! The `svcnet-controller` process: flags, client, admin server, leader election, controllers.
//!
//! `main` only parses [`Args`] and calls [`run`]. Flags keep upstream's names where upstream has
//! them (`--service-cluster-ip-range`, `--service-node-port-range`, `--kubeconfig`,
//! `--leader-elect*`); every flag has a `SVCNET_*` environment fallback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::ipam::{parse_service_cidrs, Ipam, IpamConfig, IpamMetrics};
use crate::runtime::admin::{self, Readiness};
use crate::runtime::leader::{self, LeaderConfig};
use crate::{Error, Result};

/// Parses `500ms`, `15s`, `2m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("invalid duration unit in {s:?} (use ms, s, m, h)")),
    }
}

/// svcnet-controller's command line.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "svcnet-controller",
    version,
    about = "svcnet's Service controllers (IPAM, ...)"
)]
pub struct Args {
    /// Path to a kubeconfig; in-cluster or $KUBECONFIG configuration when unset.
    #[arg(long, env = "SVCNET_KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,

    /// One IPv4 and/or one IPv6 CIDR (comma-separated, primary first) for Service ClusterIPs.
    #[arg(
        long,
        env = "SVCNET_SERVICE_CLUSTER_IP_RANGE",
        default_value = "10.96.0.0/12"
    )]
    pub service_cluster_ip_range: String,

    /// Port range for NodePort Services, inclusive (`30000-32767`).
    #[arg(
        long,
        env = "SVCNET_SERVICE_NODE_PORT_RANGE",
        default_value = "30000-32767"
    )]
    pub service_node_port_range: String,

    /// Serve LoadBalancer Services that set no loadBalancerClass (as well as `svcnet.io/lb`).
    #[arg(long, env = "SVCNET_DEFAULT_LOAD_BALANCER_CLASS", default_value_t = false, action = clap::ArgAction::Set)]
    pub default_load_balancer_class: bool,

    /// Run leader election on a Lease; only the leader allocates.
    #[arg(long, env = "SVCNET_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// Namespace of the leader-election Lease.
    #[arg(
        long,
        env = "SVCNET_LEADER_ELECT_RESOURCE_NAMESPACE",
        default_value = "kube-system"
    )]
    pub leader_elect_resource_namespace: String,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "SVCNET_LEADER_ELECT_RESOURCE_NAME",
        default_value = "svcnet-controller"
    )]
    pub leader_elect_resource_name: String,

    /// Lease duration.
    #[arg(long, env = "SVCNET_LEADER_ELECT_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,

    /// How often to try to acquire / renew the Lease.
    #[arg(long, env = "SVCNET_LEADER_ELECT_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub leader_elect_retry_period: Duration,

    /// Admin server address for /metrics, /healthz, /readyz (`0` disables it).
    #[arg(
        long,
        env = "SVCNET_METRICS_BIND_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    pub metrics_bind_address: String,

    /// Concurrent Service reconciles in the IPAM controller.
    #[arg(long, env = "SVCNET_IPAM_WORKERS", default_value_t = 8)]
    pub ipam_workers: usize,

    /// How often the IPAM repair loop runs.
    #[arg(long, env = "SVCNET_IPAM_REPAIR_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub ipam_repair_interval: Duration,

    /// Minimum age before a leaked claim is released.
    #[arg(long, env = "SVCNET_IPAM_LEAK_GRACE_PERIOD", default_value = "60s", value_parser = parse_duration)]
    pub ipam_leak_grace_period: Duration,

    /// Identity in the Lease and in Events (default: $POD_NAME or $HOSTNAME plus a random suffix).
    #[arg(long, env = "SVCNET_IDENTITY")]
    pub identity: Option<String>,

    /// Log format: `text` or `json`.
    #[arg(long, env = "SVCNET_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

impl Args {
    /// Checks the flags and builds the IPAM configuration (no I/O).
    pub fn ipam_config(&self, instance: String) -> Result<IpamConfig> {
        let service_cidrs = parse_service_cidrs(&self.service_cluster_ip_range)?;
        ipam::PortRange::parse(&self.service_node_port_range).map_err(|e| {
            Error::InvalidConfig {
                flag: "--service-node-port-range",
                value: self.service_node_port_range.clone(),
                reason: e.to_string(),
            }
        })?;
        Ok(IpamConfig {
            service_cidrs,
            node_port_range: self.service_node_port_range.clone(),
            default_lb_class: self.default_load_balancer_class,
            workers: self.ipam_workers.max(1),
            repair_interval: self.ipam_repair_interval,
            leak_grace: self.ipam_leak_grace_period,
            leak_strikes: 3,
            instance,
        })
    }

    /// The admin address, `None` when disabled.
    pub fn admin_addr(&self) -> Result<Option<SocketAddr>> {
        if self.metrics_bind_address == "0" || self.metrics_bind_address.is_empty() {
            return Ok(None);
        }
        self.metrics_bind_address
            .parse()
            .map(Some)
            .map_err(|e| Error::InvalidConfig {
                flag: "--metrics-bind-address",
                value: self.metrics_bind_address.clone(),
                reason: format!("{e}"),
            })
    }

    fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::env::var("POD_NAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .unwrap_or_else(|_| "svcnet-controller".to_string());
            format!("{host}_{:08x}", rand::random::<u32>())
        })
    }
}

/// Builds a client from `--kubeconfig` or the environment.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| Error::InvalidConfig {
                flag: "--kubeconfig",
                value: path.display().to_string(),
                reason: e.to_string(),
            })?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::InvalidConfig {
                    flag: "--kubeconfig",
                    value: path.display().to_string(),
                    reason: e.to_string(),
                })?
        }
        None => Config::infer().await.map_err(|e| Error::InvalidConfig {
            flag: "--kubeconfig",
            value: String::new(),
            reason: e.to_string(),
        })?,
    };
    Client::try_from(config).map_err(Error::Kube)
}

/// Runs one IPAM term: a fresh controller until it fails or `stop` resolves.
async fn ipam_term(client: Client, cfg: IpamConfig, metrics: IpamMetrics, ready: Readiness) {
    loop {
        match Ipam::new(client.clone(), cfg.clone(), metrics.clone()) {
            Ok(ipam) => {
                if let Err(err) = crate::ipam::run(ipam, ready.clone()).await {
                    tracing::warn!(%err, "IPAM controller stopped; restarting");
                }
            }
            Err(err) => {
                tracing::error!(%err, "IPAM controller cannot start");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Runs the controller process until SIGINT/SIGTERM.
pub async fn run(args: Args) -> Result<()> {
    let identity = args.identity();
    let cfg = args.ipam_config(identity.clone())?;
    let admin_addr = args.admin_addr()?;
    let client = client(args.kubeconfig.as_deref()).await?;

    let mut registry = Registry::default();
    let metrics = IpamMetrics::register(&mut registry);
    let registry = Arc::new(registry);
    let ready = Readiness::default();

    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = admin_addr {
        let (registry, ready) = (registry.clone(), ready.clone());
        tasks.spawn(async move {
            if let Err(err) = admin::serve(addr, registry, ready).await {
                tracing::error!(%err, "admin server failed");
            }
        });
    }

    let (tx, mut rx) = watch::channel(!args.leader_elect);
    if args.leader_elect {
        let lcfg = LeaderConfig {
            namespace: args.leader_elect_resource_namespace.clone(),
            name: args.leader_elect_resource_name.clone(),
            identity: identity.clone(),
            lease_duration: args.leader_elect_lease_duration,
            retry_period: args.leader_elect_retry_period,
        };
        tasks.spawn(leader::run(client.clone(), lcfg, tx));
    } else {
        drop(tx);
    }

    let controllers = async {
        loop {
            // Wait for leadership (immediately true without election).
            while !*rx.borrow_and_update() {
                ready.set_ready(false);
                if rx.changed().await.is_err() && !*rx.borrow() {
                    return;
                }
            }
            tracing::info!(%identity, "starting controllers");
            let term = ipam_term(client.clone(), cfg.clone(), metrics.clone(), ready.clone());
            tokio::select! {
                _ = term => {}
                _ = async {
                    loop {
                        if rx.changed().await.is_err() {
                            // No election: never lose leadership.
                            std::future::pending::<()>().await;
                        }
                        if !*rx.borrow() { break; }
                    }
                } => {
                    tracing::warn!("lost leadership; stopping controllers");
                    ready.set_ready(false);
                }
            }
        }
    };
    tokio::select! {
        _ = controllers => {}
        _ = shutdown_signal() => tracing::info!("shutting down"),
    }
    tasks.abort_all();
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn flags_parse_with_upstream_names() {
        let a = Args::try_parse_from([
            "svcnet-controller",
            "--service-cluster-ip-range=10.96.0.0/16,fd00:96::/112",
            "--service-node-port-range=30000-30100",
            "--leader-elect=false",
            "--default-load-balancer-class=true",
            "--ipam-repair-interval=500ms",
        ])
        .unwrap();
        assert!(!a.leader_elect);
        assert!(a.default_load_balancer_class);
        let cfg = a.ipam_config("me".into()).unwrap();
        assert_eq!(cfg.service_cidrs.len(), 2);
        assert_eq!(cfg.repair_interval, Duration::from_millis(500));
        let bad = Args::try_parse_from(["x", "--service-node-port-range=40000-30000"]).unwrap();
        assert!(bad.ipam_config("me".into()).is_err());
        let bad = Args::try_parse_from(["x", "--metrics-bind-address=nope"]).unwrap();
        assert!(bad.admin_addr().is_err());
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5 parsecs").is_err());
    }
}
