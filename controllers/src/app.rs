//! The `svcnet-controller` process: flags, client, admin server, leader election, controllers.
//!
//! `main` only parses [`Args`] and calls [`run`]. While this replica leads, the selected
//! controllers (`--controllers`, default all: `ipam`, `endpointslice`, `endpoints`,
//! `endpointslicemirroring`) run side by side; each restarts on its own after a failure, and all
//! stop when leadership is lost. Flags keep upstream's names where upstream has
//! them (`--service-cluster-ip-range`, `--service-node-port-range`, `--kubeconfig`,
//! `--leader-elect*`); every flag has a `SVCNET_*` environment fallback.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use prometheus_client::registry::Registry;
use runtime::admin::{self, Readiness, ReadyFlag};
use runtime::leader::{self, LeaderConfig};
use tokio::sync::watch;

use crate::ipam::{Ipam, IpamConfig, IpamMetrics};
use crate::metrics::ControllerMetrics;
use crate::Result;

mod args;

pub use args::{Args, Selected};

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
                    crate::endpointslice::run(
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
                    crate::endpoints::run(
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
                    crate::mirroring::run(
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
    // kube-controller-manager's names for the same figures.
    slice_metrics.register_upstream(&mut registry, "endpoint_slice_controller");
    mirroring_metrics.register_upstream(&mut registry, "endpoint_slice_mirroring_controller");
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
        assert_eq!(cfg.ledger, crate::ipam::config::LedgerChoice::Auto);
        let claims = Args::try_parse_from(["x", "--cluster-ip-ledger=serviceipclaim"]).unwrap();
        assert_eq!(
            claims.ipam_config("me".into()).unwrap().ledger,
            crate::ipam::config::LedgerChoice::ServiceIpClaim
        );
        let bad = Args::try_parse_from(["x", "--cluster-ip-ledger=etcd"]).unwrap();
        let err = bad.ipam_config("me".into()).unwrap_err().to_string();
        assert!(err.contains("--cluster-ip-ledger"), "{err}");
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
