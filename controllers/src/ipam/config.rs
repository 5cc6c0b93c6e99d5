//! IPAM configuration: the Service CIDRs, the node-port range, LoadBalancer class handling and
//! repair timing.

use std::time::Duration;

use ipnet::IpNet;

use crate::ipam::svc_view::{family_of, Family};
use crate::Error;

/// Parses `--service-cluster-ip-range`: one IPv4 and/or one IPv6 CIDR, comma-separated, the
/// first being the primary family. Each CIDR must pass upstream's flag checks (at most 20 host
/// bits, at least 8 addresses).
pub fn parse_service_cidrs(value: &str) -> Result<Vec<IpNet>, Error> {
    let err = |reason: String| Error::InvalidConfig {
        flag: "--service-cluster-ip-range",
        value: value.to_string(),
        reason,
    };
    let mut out: Vec<IpNet> = Vec::new();
    for part in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let net: IpNet = part
            .parse()
            .map_err(|e| err(format!("{part:?} is not a CIDR: {e}")))?;
        let net = net.trunc();
        ipam::validate_service_cidr(&net).map_err(|e| err(e.to_string()))?;
        if out
            .iter()
            .any(|o| family_of(o.network()) == family_of(net.network()))
        {
            return Err(err(
                "at most one IPv4 and one IPv6 CIDR may be given".to_string()
            ));
        }
        out.push(net);
    }
    if out.is_empty() {
        return Err(err("no CIDR given".to_string()));
    }
    Ok(out)
}

/// Where ClusterIPs are recorded (`--cluster-ip-ledger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LedgerChoice {
    /// IPAddress objects where the API serves them, ServiceIPClaims otherwise.
    #[default]
    Auto,
    /// IPAddress objects; not starting where the API lacks them.
    IpAddress,
    /// ServiceIPClaims, and the ranges from the flag.
    ServiceIpClaim,
}

/// Everything the IPAM controller needs to know about the cluster.
#[derive(Debug, Clone)]
pub struct IpamConfig {
    /// Service CIDRs, primary first. Where ServiceCIDR objects give the ranges, these make the
    /// default one (if it does not exist yet) and fix the families Services may use.
    pub service_cidrs: Vec<IpNet>,
    /// Where ClusterIPs are recorded.
    pub ledger: LedgerChoice,
    /// `--service-node-port-range`, e.g. `30000-32767`.
    pub node_port_range: String,
    /// Whether LoadBalancer Services without a class are ours.
    pub default_lb_class: bool,
    /// Concurrent Service reconciles.
    pub workers: usize,
    /// How often the repair loop runs.
    pub repair_interval: Duration,
    /// A leaked claim is released only when at least this old (upstream IPAddress repair: 60 s).
    pub leak_grace: Duration,
    /// ... and after this many consecutive detections (upstream: 3).
    pub leak_strikes: u32,
    /// Name reported in Events (`reportingInstance`).
    pub instance: String,
}

impl IpamConfig {
    /// Configured families, primary first.
    pub fn families(&self) -> Vec<Family> {
        self.service_cidrs
            .iter()
            .map(|n| family_of(n.network()))
            .collect()
    }
}

impl Default for IpamConfig {
    fn default() -> Self {
        IpamConfig {
            service_cidrs: vec!["10.96.0.0/12".parse().expect("valid literal CIDR")],
            ledger: LedgerChoice::Auto,
            node_port_range: "30000-32767".to_string(),
            default_lb_class: false,
            workers: 8,
            repair_interval: Duration::from_secs(60),
            leak_grace: Duration::from_secs(60),
            leak_strikes: 3,
            instance: "svcnet-controller".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_cidr_flag() {
        let v = parse_service_cidrs("10.96.0.0/12,fd00:10:96::/108").unwrap();
        assert_eq!(v.len(), 2);
        let v = parse_service_cidrs("fd00::/112, 10.0.0.0/24").unwrap();
        assert_eq!(family_of(v[0].network()), Family::V6);
        assert!(parse_service_cidrs("10.0.0.0/24,10.1.0.0/24")
            .unwrap_err()
            .to_string()
            .contains("at most one IPv4"));
        assert!(parse_service_cidrs("10.0.0.0/8")
            .unwrap_err()
            .to_string()
            .contains("too large"));
        assert!(parse_service_cidrs("10.0.0.0/30").is_err());
        assert!(parse_service_cidrs("nonsense").is_err());
        assert!(parse_service_cidrs("").is_err());
    }
}
