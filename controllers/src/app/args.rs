//! `svcnet-controller`'s flags: parsing, validation of every value before anything starts
//! (bad values are [`Error::InvalidConfig`], exit code 64 in `main`), and their translation into
//! each controller's configuration.

use crate::driver::Settings as _;
use crate::error::in_range;
use crate::ipam::config::LedgerChoice;
use crate::ipam::{parse_service_cidrs, IpamConfig};
use crate::{Error, Result};
use runtime::duration::duration_flag;
use std::net::SocketAddr;
use std::time::Duration;

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

    /// Where ClusterIPs are recorded: `auto` (IPAddress objects where the API serves
    /// networking.k8s.io/v1 IPAddress and ServiceCIDR, ServiceIPClaims otherwise),
    /// `ipaddress` (refuse to start without them) or `serviceipclaim` (keep the claims, e.g.
    /// while replicas of an older version that know only claims still run).
    #[arg(long, env = "SVCNET_CLUSTER_IP_LEDGER", default_value = "auto")]
    pub cluster_ip_ledger: String,

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
        let ledger = match self.cluster_ip_ledger.as_str() {
            "auto" => LedgerChoice::Auto,
            "ipaddress" => LedgerChoice::IpAddress,
            "serviceipclaim" => LedgerChoice::ServiceIpClaim,
            other => {
                return Err(Error::InvalidConfig {
                    flag: "--cluster-ip-ledger",
                    value: other.to_string(),
                    reason: "must be auto, ipaddress or serviceipclaim".to_string(),
                })
            }
        };
        Ok(IpamConfig {
            service_cidrs,
            ledger,
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

    pub(super) fn endpointslice_config(&self, instance: &str) -> crate::endpointslice::Config {
        crate::endpointslice::Config {
            max_endpoints_per_slice: self.max_endpoints_per_slice,
            concurrent_syncs: self.concurrent_service_endpoint_syncs,
            batch_period: self.endpointslice_updates_batch_period,
            diagnostics_grace: self.diagnostics_grace_period,
            instance: Some(instance.to_string()),
            ..Default::default()
        }
    }

    pub(super) fn endpoints_config(&self, instance: &str) -> crate::endpoints::Config {
        crate::endpoints::Config {
            concurrent_syncs: self.concurrent_endpoint_syncs,
            batch_period: self.endpoint_updates_batch_period,
            instance: Some(instance.to_string()),
            ready: None,
        }
    }

    pub(super) fn mirroring_config(&self, instance: &str) -> crate::mirroring::Config {
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

    pub(super) fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::env::var("POD_NAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .unwrap_or_else(|_| "svcnet-controller".to_string());
            format!("{host}_{:08x}", rand::random::<u32>())
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
