//! Command-line / environment configuration shared by the subcommands, and its resolution into a
//! [`NodeConfig`]. Flags keep upstream kube-proxy's names; every flag has an `SVCNET_*` env fallback.

use std::net::IpAddr;
use std::process::Command;

use ipnet::IpNet;

use super::detect_local::{DetectLocalArgs, DetectLocalMode};
use crate::error::{Error, Result};
use crate::types::{Family, NodeConfig, NodePortAddresses};
use crate::watch::convert::NodeInfo;

/// Node-level flags.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct NodeArgs {
    /// This node's name (endpoints on it are local); defaults to the hostname for `run`.
    #[arg(
        long,
        alias = "hostname-override",
        env = "SVCNET_NODE_NAME",
        default_value = ""
    )]
    pub node_name: String,
    /// The node's primary IPs (comma-separated or repeated); defaults to the Node's InternalIPs.
    #[arg(long = "node-ip", env = "SVCNET_NODE_IP", value_delimiter = ',')]
    pub node_ips: Vec<IpAddr>,
    /// Pod network CIDRs: traffic from outside them to a ClusterIP is masqueraded.
    #[arg(long, env = "SVCNET_CLUSTER_CIDR", value_delimiter = ',')]
    pub cluster_cidr: Vec<IpNet>,
    /// How pod traffic is recognised: ClusterCIDR (source in --cluster-cidr), NodeCIDR (source
    /// in the Node's spec.podCIDRs), BridgeInterface (arrived on --pod-bridge-interface) or
    /// InterfaceNamePrefix (arrived on an interface named --pod-interface-name-prefix*).
    #[arg(
        long,
        env = "SVCNET_DETECT_LOCAL_MODE",
        value_enum,
        default_value = "ClusterCIDR"
    )]
    pub detect_local_mode: DetectLocalMode,
    /// The pods' bridge, for --detect-local-mode=BridgeInterface.
    #[arg(long, env = "SVCNET_POD_BRIDGE_INTERFACE")]
    pub pod_bridge_interface: Option<String>,
    /// The prefix of the pods' host-side interfaces, for --detect-local-mode=InterfaceNamePrefix.
    #[arg(long, env = "SVCNET_POD_INTERFACE_NAME_PREFIX")]
    pub pod_interface_name_prefix: Option<String>,
    /// Masquerade all traffic sent to ClusterIPs.
    #[arg(long, env = "SVCNET_MASQUERADE_ALL")]
    pub masquerade_all: bool,
    /// Node addresses that accept NodePorts: `primary` (default, like upstream nftables mode), or CIDRs;
    /// `0.0.0.0/0` and/or `::/0` mean every local address.
    #[arg(
        long,
        env = "SVCNET_NODEPORT_ADDRESSES",
        value_delimiter = ',',
        default_value = "primary"
    )]
    pub nodeport_addresses: Vec<String>,
    /// Service CIDRs; traffic to an unallocated IP inside them is dropped. `run` uses them only
    /// where the API does not serve networking.k8s.io/v1 ServiceCIDRs; where it does, it follows
    /// those objects instead.
    #[arg(
        long = "service-cluster-ip-range",
        env = "SVCNET_SERVICE_CLUSTER_IP_RANGE",
        value_delimiter = ','
    )]
    pub service_cidrs: Vec<IpNet>,
    /// Node labels `key=value` (used when there is no Node object, e.g. with `render`).
    #[arg(long = "node-label", env = "SVCNET_NODE_LABELS", value_delimiter = ',')]
    pub node_labels: Vec<String>,
}

impl NodeArgs {
    /// The local-traffic detector settings.
    pub fn detect_local(&self) -> DetectLocalArgs<'_> {
        DetectLocalArgs {
            mode: self.detect_local_mode,
            cluster_cidrs: &self.cluster_cidr,
            bridge_interface: self.pod_bridge_interface.as_deref(),
            interface_name_prefix: self.pod_interface_name_prefix.as_deref(),
        }
    }

    /// Resolves flags plus what is known about the Node (object and local interface addresses).
    pub fn resolve(
        &self,
        node: Option<&NodeInfo>,
        local_addresses: Vec<IpAddr>,
    ) -> Result<NodeConfig> {
        let mut labels = std::collections::BTreeMap::new();
        if let Some(n) = node {
            labels.extend(n.labels.clone());
        }
        for l in &self.node_labels {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| Error::Config(format!("--node-label {l:?} is not key=value")))?;
            labels.insert(k.to_string(), v.to_string());
        }
        let node_ips = if self.node_ips.is_empty() {
            node.map(|n| n.addresses.clone()).unwrap_or_default()
        } else {
            self.node_ips.clone()
        };
        let nodeport_addresses = resolve_nodeport_addresses(&self.nodeport_addresses, &node_ips)?;
        let detect = self.detect_local();
        detect.validate()?;
        let (cluster_cidrs, detect_local) = detect.resolve(node);
        Ok(NodeConfig {
            node_name: self.node_name.clone(),
            node_ips,
            local_addresses,
            node_labels: labels,
            cluster_cidrs,
            detect_local,
            masquerade_all: self.masquerade_all,
            nodeport_addresses,
            service_cidrs: self.service_cidrs.clone(),
            families: Family::ALL.to_vec(),
        })
    }
}

/// Flags of `svcnet-proxy run`.
#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// Path to a kubeconfig; in-cluster or `$KUBECONFIG` configuration when unset.
    #[arg(long, env = "SVCNET_KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// A kube-proxy `KubeProxyConfiguration` file (kubeproxy.config.k8s.io/v1alpha1): the fields
    /// svcnet-proxy implements set their flags unless given explicitly; the others are reported
    /// at start-up; unknown fields are an error.
    #[arg(long = "config", env = "SVCNET_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Node settings.
    #[command(flatten)]
    pub node: NodeArgs,
    /// Minimum time between syncs (bounded-frequency runner).
    #[arg(long, env = "SVCNET_MIN_SYNC_PERIOD", default_value = "1s", value_parser = runtime::duration::duration_flag)]
    pub min_sync_period: std::time::Duration,
    /// Maximum time between syncs; failed syncs are retried within this period.
    #[arg(long, env = "SVCNET_SYNC_PERIOD", default_value = "30s", value_parser = runtime::duration::duration_flag)]
    pub sync_period: std::time::Duration,
    /// Period of full resyncs that repair drift (never deleting the table).
    #[arg(long, env = "SVCNET_FULL_SYNC_PERIOD", default_value = "1h", value_parser = runtime::duration::duration_flag)]
    pub full_sync_period: std::time::Duration,
    /// Address of `/healthz` and `/livez`.
    #[arg(
        long,
        env = "SVCNET_HEALTHZ_BIND_ADDRESS",
        default_value = "0.0.0.0:10256"
    )]
    pub healthz_bind_address: std::net::SocketAddr,
    /// Address of `/metrics`.
    #[arg(
        long,
        env = "SVCNET_METRICS_BIND_ADDRESS",
        default_value = "127.0.0.1:10249"
    )]
    pub metrics_bind_address: std::net::SocketAddr,
    /// Delete stale UDP conntrack entries (over ctnetlink): at start-up, after UDP endpoint
    /// changes and on full syncs, the whole UDP table is compared with the current endpoints.
    #[arg(long, env = "SVCNET_CONNTRACK_CLEANUP", default_value_t = true, action = clap::ArgAction::Set)]
    pub conntrack_cleanup: bool,
    /// L2 announcement of LoadBalancer addresses.
    #[command(flatten)]
    pub l2: L2Args,
}

/// Flags of L2 announcement (ARP/NDP answers for LoadBalancer addresses, `L2Announcement`).
#[derive(Clone, Debug, clap::Args)]
pub struct L2Args {
    /// Answer ARP/NDP for the LoadBalancer addresses this node is elected for, as selected by
    /// `L2Announcement` objects (needs CAP_NET_RAW).
    #[arg(long = "l2-announce", env = "SVCNET_L2_ANNOUNCE", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub enabled: bool,
    /// Namespace of the heartbeat and address Leases.
    #[arg(
        long = "l2-lease-namespace",
        env = "SVCNET_L2_LEASE_NAMESPACE",
        default_value = "svcnet-system"
    )]
    pub lease_namespace: String,
    /// How long a node's heartbeat stays valid: the longest time an address stays unanswered
    /// after its node dies. Every node of the cluster must use the same value.
    #[arg(long = "l2-lease-duration", env = "SVCNET_L2_LEASE_DURATION", default_value = "1500ms", value_parser = runtime::duration::duration_flag)]
    pub lease_duration: std::time::Duration,
    /// How often a node renews its heartbeat (one Lease write per node per interval; at most
    /// a third of the lease duration).
    #[arg(long = "l2-renew-interval", env = "SVCNET_L2_RENEW_INTERVAL", default_value = "400ms", value_parser = runtime::duration::duration_flag)]
    pub renew_interval: std::time::Duration,
    /// Gratuitous ARPs / unsolicited Neighbour Advertisements sent when a node takes an address.
    #[arg(
        long = "l2-announce-count",
        env = "SVCNET_L2_ANNOUNCE_COUNT",
        default_value_t = 3
    )]
    pub announce_count: u32,
    /// Time between those announcements.
    #[arg(long = "l2-announce-interval", env = "SVCNET_L2_ANNOUNCE_INTERVAL", default_value = "250ms", value_parser = runtime::duration::duration_flag)]
    pub announce_interval: std::time::Duration,
}

impl L2Args {
    /// Checks the flags (before anything starts).
    pub fn validate(&self) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let bad = |m: String| Err(Error::Config(m));
        let ns = &self.lease_namespace;
        let label_ok = !ns.is_empty()
            && ns.len() <= 63
            && ns
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !ns.starts_with('-')
            && !ns.ends_with('-');
        if !label_ok {
            return bad(format!(
                "--l2-lease-namespace={ns:?} is not a namespace name (a DNS label: lower-case letters, digits and '-', at most 63)"
            ));
        }
        if self.lease_duration < std::time::Duration::from_millis(100) {
            return bad(format!(
                "--l2-lease-duration={:?} is too short (at least 100ms)",
                self.lease_duration
            ));
        }
        if self.renew_interval.is_zero() || self.renew_interval * 3 > self.lease_duration {
            return bad(format!(
                "--l2-renew-interval={:?} must be positive and at most a third of --l2-lease-duration={:?}",
                self.renew_interval, self.lease_duration
            ));
        }
        if !(1..=20).contains(&self.announce_count) {
            return bad(format!(
                "--l2-announce-count={} must be between 1 and 20",
                self.announce_count
            ));
        }
        if self.announce_interval > std::time::Duration::from_secs(5) {
            return bad(format!(
                "--l2-announce-interval={:?} must be at most 5s",
                self.announce_interval
            ));
        }
        Ok(())
    }
}

/// Resolves `--nodeport-addresses` values.
pub fn resolve_nodeport_addresses(
    values: &[String],
    node_ips: &[IpAddr],
) -> Result<NodePortAddresses> {
    let mut cidrs = vec![];
    let mut all = false;
    for v in values.iter().map(|v| v.trim()).filter(|v| !v.is_empty()) {
        if v == "primary" {
            if node_ips.is_empty() {
                tracing::warn!("--nodeport-addresses=primary but no node IP is known; accepting NodePorts on all addresses");
                all = true;
            }
            cidrs.extend(node_ips.iter().map(|ip| IpNet::from(*ip)));
            continue;
        }
        let net: IpNet = v.parse().map_err(|_| {
            Error::Config(format!(
                "--nodeport-addresses: {v:?} is not a CIDR or `primary`"
            ))
        })?;
        if net.prefix_len() == 0 {
            all = true;
        } else {
            cidrs.push(net);
        }
    }
    if all || cidrs.is_empty() {
        Ok(NodePortAddresses::All)
    } else {
        Ok(NodePortAddresses::Cidrs(cidrs))
    }
}

/// Addresses configured on this network namespace's interfaces (`ip -j addr show`).
pub fn local_addresses() -> Result<Vec<IpAddr>> {
    let out = Command::new("ip")
        .args(["-j", "addr", "show"])
        .output()
        .map_err(|source| Error::Exec {
            program: "ip".into(),
            source,
        })?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(Error::NftJson)?;
    let mut ips = vec![];
    for link in v.as_array().into_iter().flatten() {
        for a in link
            .get("addr_info")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(ip) = a
                .get("local")
                .and_then(|l| l.as_str())
                .and_then(|l| l.parse().ok())
            {
                ips.push(ip);
            }
        }
    }
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodeport_addresses() {
        let ip: IpAddr = "192.168.1.10".parse().unwrap();
        assert_eq!(
            resolve_nodeport_addresses(&["primary".into()], &[ip]).unwrap(),
            NodePortAddresses::Cidrs(vec!["192.168.1.10/32".parse().unwrap()])
        );
        assert_eq!(
            resolve_nodeport_addresses(&["0.0.0.0/0".into()], &[ip]).unwrap(),
            NodePortAddresses::All
        );
        assert!(resolve_nodeport_addresses(&["bogus".into()], &[ip]).is_err());
        assert_eq!(
            resolve_nodeport_addresses(&["primary".into()], &[]).unwrap(),
            NodePortAddresses::All
        );
    }

    fn l2(extra: &[&str]) -> L2Args {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            l2: L2Args,
        }
        use clap::Parser;
        let mut argv = vec!["svcnet-proxy", "--l2-announce"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).expect("flags parse").l2
    }

    #[test]
    fn l2_flags_are_validated() {
        let ok = l2(&[]);
        assert!(ok.enabled);
        assert_eq!(ok.lease_duration, std::time::Duration::from_millis(1500));
        ok.validate().expect("defaults are valid");
        // Disabled: nothing else is checked (the defaults of a node that does not announce).
        let mut off = l2(&["--l2-renew-interval=10s"]);
        off.enabled = false;
        off.validate().expect("disabled flags are not checked");
        for (bad, word) in [
            (
                &["--l2-lease-namespace=Not_A_Namespace"][..],
                "--l2-lease-namespace",
            ),
            (&["--l2-lease-namespace="], "--l2-lease-namespace"),
            (&["--l2-lease-duration=50ms"], "--l2-lease-duration"),
            (&["--l2-renew-interval=600ms"], "--l2-renew-interval"),
            (&["--l2-renew-interval=0s"], "--l2-renew-interval"),
            (&["--l2-announce-count=0"], "--l2-announce-count"),
            (&["--l2-announce-count=21"], "--l2-announce-count"),
            (&["--l2-announce-interval=6s"], "--l2-announce-interval"),
        ] {
            let err = l2(bad).validate().expect_err(bad[0]).to_string();
            assert!(err.contains(word), "{bad:?}: {err}");
        }
        l2(&["--l2-lease-duration=3s", "--l2-renew-interval=1s"])
            .validate()
            .expect("a third of the duration is allowed");
    }
}
