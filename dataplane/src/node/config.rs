//! Command-line / environment configuration shared by the subcommands, and its resolution into a
//! [`NodeConfig`]. Flags keep upstream kube-proxy's names; every flag has an `SVCNET_*` env fallback.

use std::net::IpAddr;
use std::process::Command;

use ipnet::IpNet;

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
    /// Service CIDRs; traffic to an unallocated IP inside them is dropped.
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
        Ok(NodeConfig {
            node_name: self.node_name.clone(),
            node_ips,
            local_addresses,
            node_labels: labels,
            cluster_cidrs: self.cluster_cidr.clone(),
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
    /// Delete stale UDP conntrack entries (needs the `conntrack` tool).
    #[arg(long, env = "SVCNET_CONNTRACK_CLEANUP", default_value_t = true, action = clap::ArgAction::Set)]
    pub conntrack_cleanup: bool,
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
}
