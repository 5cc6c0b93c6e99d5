//! The `svcnet-controller` process: flags, client, admin server, leader election, controllers.
//!
//! `main` only parses [`Args`] and calls [`run`]. While this replica leads, the selected
//! controllers (`--controllers`, default all: `ipam`, `endpointslice`, `endpoints`,
//! `endpointslicemirroring`) run side by side; each restarts on its own after a failure, and all
//! stop when leadership is lost. Flags keep upstream's names where upstream has
//! them (`--service-cluster-ip-range`, `--service-node-port-range`, `--kubeconfig`,
//! `--leader-elect*`); every flag has a `SVCNET_*` environment fallback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use prometheus_client::registry::Registry;
use runtime::admin::{self, Readiness, ReadyFlag};
use runtime::duration::duration_flag;
use runtime::leader::{self, LeaderConfig};
use tokio::sync::watch;

use crate::ipam::{parse_service_cidrs, Ipam, IpamConfig, IpamMetrics};
use crate::metrics::ControllerMetrics;
use crate::{Error, Result};

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
    #[arg(long, env = "SVCNET_DEFAULT_LOAD_BALANCER_CLASS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub default_load_balancer_class: bool,

    /// Run leader election on a Lease; only the leader allocates.
    #[arg(long, env = "SVCNET_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
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
    #[arg(long, env = "SVCNET_LEADER_ELECT_LEASE_DURATION", default_value = "15s", value_parser = duration_flag)]
    pub leader_elect_lease_duration: Duration,

    /// How often to try to acquire / renew the Lease.
    #[arg(long, env = "SVCNET_LEADER_ELECT_RETRY_PERIOD", default_value = "2s", value_parser = duration_flag)]
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
    #[arg(long, env = "SVCNET_IPAM_REPAIR_INTERVAL", default_value = "60s", value_parser = duration_flag)]
    pub ipam_repair_interval: Duration,

    /// Minimum age before a leaked claim is released.
    #[arg(long, env = "SVCNET_IPAM_LEAK_GRACE_PERIOD", default_value = "60s", value_parser = duration_flag)]
    pub ipam_leak_grace_period: Duration,

    /// Controllers to run, comma-separated: `ipam`, `endpointslice`, `endpoints`,
    /// `endpointslicemirroring`, or `*` for all.
    #[arg(long, env = "SVCNET_CONTROLLERS", default_value = "*")]
    pub controllers: String,

    /// EndpointSlice controller: endpoints per slice (1..=1000).
    #[arg(long, env = "SVCNET_MAX_ENDPOINTS_PER_SLICE", default_value_t = 100)]
    pub max_endpoints_per_slice: usize,

    /// EndpointSlice controller: concurrent Service syncs.
    #[arg(
        long,
        env = "SVCNET_CONCURRENT_SERVICE_ENDPOINT_SYNCS",
        default_value_t = 5
    )]
    pub concurrent_service_endpoint_syncs: usize,

    /// EndpointSlice controller: batching window for Pod-triggered syncs (`0` = immediate).
    #[arg(long, env = "SVCNET_ENDPOINTSLICE_UPDATES_BATCH_PERIOD", default_value = "0s", value_parser = duration_flag)]
    pub endpointslice_updates_batch_period: Duration,

    /// Endpoints controller: concurrent syncs.
    #[arg(long, env = "SVCNET_CONCURRENT_ENDPOINT_SYNCS", default_value_t = 5)]
    pub concurrent_endpoint_syncs: usize,

    /// Endpoints controller: batching window (`0` = immediate).
    #[arg(long, env = "SVCNET_ENDPOINT_UPDATES_BATCH_PERIOD", default_value = "0s", value_parser = duration_flag)]
    pub endpoint_updates_batch_period: Duration,

    /// Mirroring controller: endpoints per mirrored subset (1..=1000).
    #[arg(
        long,
        env = "SVCNET_MIRRORING_MAX_ENDPOINTS_PER_SUBSET",
        default_value_t = 1000
    )]
    pub mirroring_max_endpoints_per_subset: usize,

    /// Mirroring controller: concurrent syncs.
    #[arg(
        long,
        env = "SVCNET_MIRRORING_CONCURRENT_SERVICE_ENDPOINT_SYNCS",
        default_value_t = 5
    )]
    pub mirroring_concurrent_service_endpoint_syncs: usize,

    /// Mirroring controller: batching window (`0` = immediate).
    #[arg(long, env = "SVCNET_MIRRORING_ENDPOINTSLICE_UPDATES_BATCH_PERIOD", default_value = "0s", value_parser = duration_flag)]
    pub mirroring_endpointslice_updates_batch_period: Duration,

    /// How long a "why no backends" finding (selector matches no Pod, no ready Pod, undeclared
    /// named targetPort) must last before the Warning Event on the Service. Creating a Service
    /// before its Pods, or Pods still starting, is ordinary; `0` warns at once.
    #[arg(long, env = "SVCNET_DIAGNOSTICS_GRACE_PERIOD", default_value = "30s", value_parser = duration_flag)]
    pub diagnostics_grace_period: Duration,

    /// Create svcnet's CRDs at start when they are missing (needs RBAC on
    /// customresourcedefinitions; meant for the embedded server and demos).
    #[arg(long, env = "SVCNET_INSTALL_CRDS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub install_crds: bool,

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

    /// The selected controllers, validated.
    pub fn selected(&self) -> Result<Selected> {
        let mut sel = Selected::default();
        for name in self
            .controllers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            match name {
                "*" => {
                    sel = Selected {
                        ipam: true,
                        endpointslice: true,
                        endpoints: true,
                        mirroring: true,
                    }
                }
                "ipam" => sel.ipam = true,
                "endpointslice" => sel.endpointslice = true,
                "endpoints" => sel.endpoints = true,
                "endpointslicemirroring" => sel.mirroring = true,
                other => {
                    return Err(Error::InvalidConfig {
                        flag: "--controllers",
                        value: self.controllers.clone(),
                        reason: format!(
                            "unknown controller {other:?} (known: ipam, endpointslice, endpoints, endpointslicemirroring, *)"
                        ),
                    })
                }
            }
        }
        if sel == Selected::default() {
            return Err(Error::InvalidConfig {
                flag: "--controllers",
                value: self.controllers.clone(),
                reason: "no controller selected".to_string(),
            });
        }
        Ok(sel)
    }

    fn endpointslice_config(&self, instance: &str) -> crate::endpointslice::Config {
        crate::endpointslice::Config {
            max_endpoints_per_slice: self.max_endpoints_per_slice,
            concurrent_syncs: self.concurrent_service_endpoint_syncs,
            batch_period: self.endpointslice_updates_batch_period,
            diagnostics_grace: self.diagnostics_grace_period,
            instance: Some(instance.to_string()),
            ..Default::default()
        }
    }

    fn endpoints_config(&self, instance: &str) -> crate::endpoints::Config {
        crate::endpoints::Config {
            concurrent_syncs: self.concurrent_endpoint_syncs,
            batch_period: self.endpoint_updates_batch_period,
            instance: Some(instance.to_string()),
            ready: None,
        }
    }

    fn mirroring_config(&self, instance: &str) -> crate::mirroring::Config {
        crate::mirroring::Config {
            max_endpoints_per_subset: self.mirroring_max_endpoints_per_subset,
            concurrent_syncs: self.mirroring_concurrent_service_endpoint_syncs,
            batch_period: self.mirroring_endpointslice_updates_batch_period,
            instance: Some(instance.to_string()),
            ..Default::default()
        }
    }

    /// Checks every flag (no I/O); `main` exits 64 when this fails, before anything starts.
    pub fn validate(&self) -> Result<()> {
        self.ipam_config(String::new())?;
        self.admin_addr()?;
        self.selected()?;
        self.endpointslice_config("").validate()?;
        in_range("--ipam-workers", self.ipam_workers, 1, 1000)?;
        in_range(
            "--concurrent-endpoint-syncs",
            self.concurrent_endpoint_syncs,
            1,
            50,
        )?;
        in_range(
            "--mirroring-max-endpoints-per-subset",
            self.mirroring_max_endpoints_per_subset,
            1,
            1000,
        )?;
        in_range(
            "--mirroring-concurrent-service-endpoint-syncs",
            self.mirroring_concurrent_service_endpoint_syncs,
            1,
            50,
        )?;
        if self.leader_elect && self.leader_elect_retry_period >= self.leader_elect_lease_duration {
            return Err(Error::InvalidConfig {
                flag: "--leader-elect-retry-period",
                value: format!("{:?}", self.leader_elect_retry_period),
                reason: format!(
                    "must be shorter than --leader-elect-lease-duration ({:?})",
                    self.leader_elect_lease_duration
                ),
            });
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(Error::InvalidConfig {
                flag: "--log-format",
                value: self.log_format.clone(),
                reason: "must be text or json".into(),
            });
        }
        Ok(())
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

/// `value` must lie in `lo..=hi`.
fn in_range(flag: &'static str, value: usize, lo: usize, hi: usize) -> Result<()> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(Error::InvalidConfig {
            flag,
            value: value.to_string(),
            reason: format!("must be between {lo} and {hi}"),
        })
    }
}

/// Which controllers run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selected {
    /// Service IPAM.
    pub ipam: bool,
    /// EndpointSlice controller.
    pub endpointslice: bool,
    /// Endpoints controller.
    pub endpoints: bool,
    /// EndpointSlice mirroring controller.
    pub mirroring: bool,
}

/// Runs one IPAM term: a fresh controller until it fails or `stop` resolves.
async fn ipam_term(
    watches: &crate::watches::Watches,
    client: Client,
    cfg: IpamConfig,
    metrics: IpamMetrics,
    ready: ReadyFlag,
) {
    loop {
        match Ipam::new(client.clone(), cfg.clone(), metrics.clone()) {
            Ok(ipam) => {
                if let Err(err) = crate::ipam::run_with(watches, ipam, ready.clone()).await {
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

/// Creates every svcnet CRD that does not exist yet (existing ones are left as they are).
pub async fn install_crds(client: &Client) -> Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    for crd in crds::all() {
        match api.create(&kube::api::PostParams::default(), &crd).await {
            Ok(_) => tracing::info!(crd = ?crd.metadata.name, "installed CRD"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Runs a controller whose `run` ends only on error, restarting it after a pause.
async fn restarting<F, Fut>(name: &'static str, mut start: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    loop {
        match start().await {
            Ok(()) => tracing::warn!(controller = name, "controller stopped; restarting"),
            Err(err) => tracing::warn!(controller = name, %err, "controller failed; restarting"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Everything that runs while we lead.
struct Term {
    client: Client,
    args: Args,
    identity: String,
    selected: Selected,
    ipam_cfg: IpamConfig,
    ipam_metrics: IpamMetrics,
    slice_metrics: ControllerMetrics,
    endpoints_metrics: ControllerMetrics,
    mirroring_metrics: ControllerMetrics,
    flags: ReadyFlags,
}

/// One readiness component per selected controller, reported once its caches are synced.
#[derive(Clone)]
struct ReadyFlags {
    ipam: ReadyFlag,
    endpointslice: ReadyFlag,
    endpoints: ReadyFlag,
    mirroring: ReadyFlag,
}

impl ReadyFlags {
    /// Components of the selected controllers are registered on `ready` (so `/readyz` waits
    /// for them); the others are detached.
    fn register(ready: &Readiness, selected: Selected) -> Self {
        let flag = |on: bool, name: &str| {
            if on {
                ready.component(name)
            } else {
                ReadyFlag::detached(name)
            }
        };
        Self {
            ipam: flag(selected.ipam, "ipam"),
            endpointslice: flag(selected.endpointslice, "endpointslice"),
            endpoints: flag(selected.endpoints, "endpoints"),
            mirroring: flag(selected.mirroring, "endpointslicemirroring"),
        }
    }
}

impl Term {
    async fn run(&self) {
        // One watch per kind for every controller of this term.
        let watches = crate::watches::Watches::new(self.client.clone());
        let ipam = async {
            if self.selected.ipam {
                ipam_term(
                    &watches,
                    self.client.clone(),
                    self.ipam_cfg.clone(),
                    self.ipam_metrics.clone(),
                    self.flags.ipam.clone(),
                )
                .await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let slices = async {
            if self.selected.endpointslice {
                restarting("endpointslice", || {
                    crate::endpointslice::run_with(
                        &watches,
                        self.client.clone(),
                        crate::endpointslice::Config {
                            ready: Some(self.flags.endpointslice.clone()),
                            ..self.args.endpointslice_config(&self.identity)
                        },
                        self.slice_metrics.clone(),
                        std::future::pending::<()>(),
                    )
                })
                .await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let endpoints = async {
            if self.selected.endpoints {
                restarting("endpoints", || {
                    crate::endpoints::run_with(
                        &watches,
                        self.client.clone(),
                        crate::endpoints::Config {
                            ready: Some(self.flags.endpoints.clone()),
                            ..self.args.endpoints_config(&self.identity)
                        },
                        self.endpoints_metrics.clone(),
                        std::future::pending::<()>(),
                    )
                })
                .await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let mirroring = async {
            if self.selected.mirroring {
                restarting("endpointslicemirroring", || {
                    crate::mirroring::run_with(
                        &watches,
                        self.client.clone(),
                        crate::mirroring::Config {
                            ready: Some(self.flags.mirroring.clone()),
                            ..self.args.mirroring_config(&self.identity)
                        },
                        self.mirroring_metrics.clone(),
                        std::future::pending::<()>(),
                    )
                })
                .await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::join!(ipam, slices, endpoints, mirroring);
    }
}

/// Runs the controller process until SIGINT/SIGTERM.
pub async fn run(args: Args) -> Result<()> {
    let identity = args.identity();
    let cfg = args.ipam_config(identity.clone())?;
    let admin_addr = args.admin_addr()?;
    let client = runtime::client::client(args.kubeconfig.as_deref()).await?;

    let selected = args.selected()?;
    if args.install_crds {
        install_crds(&client).await?;
    }
    let mut registry = Registry::default();
    let metrics = IpamMetrics::register(&mut registry);
    let slice_metrics = ControllerMetrics::register(&mut registry, "svcnet_endpointslice");
    let endpoints_metrics = ControllerMetrics::register(&mut registry, "svcnet_endpoints");
    let mirroring_metrics =
        ControllerMetrics::register(&mut registry, "svcnet_endpointslice_mirroring");
    let registry = Arc::new(registry);
    let ready = Readiness::default();
    let flags = ReadyFlags::register(&ready, selected);

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
                ready.set_all(false);
                if rx.changed().await.is_err() && !*rx.borrow() {
                    return;
                }
            }
            tracing::info!(%identity, ?selected, "starting controllers");
            let term = Term {
                client: client.clone(),
                args: args.clone(),
                identity: identity.clone(),
                selected,
                ipam_cfg: cfg.clone(),
                ipam_metrics: metrics.clone(),
                slice_metrics: slice_metrics.clone(),
                endpoints_metrics: endpoints_metrics.clone(),
                mirroring_metrics: mirroring_metrics.clone(),
                flags: flags.clone(),
            };
            tokio::select! {
                _ = term.run() => {}
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
                    ready.set_all(false);
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
        let bare = Args::try_parse_from(["x", "--leader-elect", "--install-crds"]).unwrap();
        assert!(bare.leader_elect && bare.install_crds);
        let bad = Args::try_parse_from(["x", "--service-node-port-range=40000-30000"]).unwrap();
        assert!(bad.ipam_config("me".into()).is_err());
        let bad = Args::try_parse_from(["x", "--metrics-bind-address=nope"]).unwrap();
        assert!(bad.admin_addr().is_err());
        let all = Args::try_parse_from(["x"]).unwrap();
        assert_eq!(
            all.selected().unwrap(),
            Selected {
                ipam: true,
                endpointslice: true,
                endpoints: true,
                mirroring: true
            }
        );
        assert!(all.validate().is_ok());
        let some = Args::try_parse_from(["x", "--controllers=ipam,endpoints"]).unwrap();
        let sel = some.selected().unwrap();
        assert!(sel.ipam && sel.endpoints && !sel.endpointslice && !sel.mirroring);
        let bad = Args::try_parse_from(["x", "--controllers=ipam,bogus"]).unwrap();
        assert!(bad.selected().unwrap_err().to_string().contains("bogus"));
        let bad = Args::try_parse_from(["x", "--max-endpoints-per-slice=5000"]).unwrap();
        assert!(bad.validate().is_err());
        let bad = Args::try_parse_from(["x", "--mirroring-max-endpoints-per-subset=0"]).unwrap();
        assert!(bad.validate().is_err());
        let bad = Args::try_parse_from(["x", "--log-format=yaml"]).unwrap();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--log-format"));
        let go = Args::try_parse_from(["x", "--ipam-repair-interval=1m30s"]).unwrap();
        assert_eq!(go.ipam_repair_interval, Duration::from_secs(90));
        assert!(Args::try_parse_from(["x", "--ipam-repair-interval=5 parsecs"]).is_err());
    }
}
