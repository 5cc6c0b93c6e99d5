//! Removal of stale UDP conntrack entries when endpoints go away (upstream's per-change cleanup).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::Command;

use crate::compute::endpoints::endpoints_for_port;
use crate::error::{Error, Result};
use crate::types::{Family, NodeConfig, Protocol, ProxyState};

/// Where UDP traffic for a Service port arrives.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UdpTarget {
    /// A service IP (ClusterIP, external IP, LB IP) and port.
    Vip(IpAddr, u16),
    /// A NodePort (any node address) in a family.
    NodePort(Family, u16),
}

/// Serving endpoint IPs of every UDP target (traffic policy and topology deliberately ignored).
pub type UdpEndpoints = BTreeMap<UdpTarget, BTreeSet<IpAddr>>;

/// Computes [`UdpEndpoints`] for a state.
pub fn udp_endpoints(state: &ProxyState, node: &NodeConfig) -> UdpEndpoints {
    let mut out = UdpEndpoints::new();
    for svc in state.services.values() {
        for port in svc.ports.iter().filter(|p| p.protocol == Protocol::Udp) {
            for &fam in &node.families {
                let Some(cip) = svc.cluster_ips.iter().find(|ip| Family::of(ip) == fam) else {
                    continue;
                };
                let eps: BTreeSet<IpAddr> =
                    endpoints_for_port(state.slices_for(&svc.key), port, fam, &node.node_name)
                        .into_iter()
                        .filter(|e| e.serving)
                        .map(|e| e.ip)
                        .collect();
                let vips = std::iter::once(cip)
                    .chain(svc.external_ips.iter())
                    .chain(svc.load_balancer_ips.iter())
                    .filter(|ip| Family::of(ip) == fam);
                for vip in vips {
                    out.insert(UdpTarget::Vip(*vip, port.port), eps.clone());
                }
                if let Some(np) = port.node_port {
                    out.insert(UdpTarget::NodePort(fam, np), eps.clone());
                }
            }
        }
    }
    out
}

/// One `conntrack -D` to run.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deletion {
    /// What the flow was sent to.
    pub target: UdpTarget,
    /// Only flows answered by this endpoint; `None` = every flow to the target.
    pub endpoint: Option<IpAddr>,
}

/// Flows to delete after moving from `old` to `new`: flows to endpoints that are gone, and every flow to a
/// target that had no endpoint before (those were black-holed and would stay so).
pub fn stale(old: &UdpEndpoints, new: &UdpEndpoints) -> Vec<Deletion> {
    let mut out = vec![];
    for (target, old_eps) in old {
        let new_eps = new.get(target);
        for ep in old_eps {
            if !new_eps.is_some_and(|n| n.contains(ep)) {
                out.push(Deletion {
                    target: target.clone(),
                    endpoint: Some(*ep),
                });
            }
        }
    }
    for (target, new_eps) in new {
        let had = old.get(target).is_some_and(|o| !o.is_empty());
        if !had && !new_eps.is_empty() {
            out.push(Deletion {
                target: target.clone(),
                endpoint: None,
            });
        }
    }
    out.sort();
    out
}

/// Arguments of `conntrack` for one deletion.
pub fn args(d: &Deletion) -> Vec<String> {
    let mut a: Vec<String> = vec!["-D".into()];
    let fam = match &d.target {
        UdpTarget::Vip(ip, _) => Family::of(ip),
        UdpTarget::NodePort(f, _) => *f,
    };
    if fam == Family::Ipv6 {
        a.extend(["-f".into(), "ipv6".into()]);
    }
    a.extend(["-p".into(), "udp".into()]);
    match &d.target {
        UdpTarget::Vip(ip, port) => {
            a.extend([
                "--orig-dst".into(),
                ip.to_string(),
                "--orig-port-dst".into(),
                port.to_string(),
            ]);
        }
        UdpTarget::NodePort(_, port) => {
            a.extend(["--orig-port-dst".into(), port.to_string()]);
        }
    }
    if let Some(ep) = d.endpoint {
        a.extend(["--reply-src".into(), ep.to_string()]);
    }
    a
}

/// Runs the deletions with the `conntrack` CLI; "0 flow entries" is not an error. Returns how many
/// commands deleted something.
pub fn run(deletions: &[Deletion]) -> Result<usize> {
    let mut deleted = 0;
    for d in deletions {
        let out = Command::new("conntrack")
            .args(args(d))
            .output()
            .map_err(|source| Error::Exec {
                program: "conntrack".into(),
                source,
            })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            deleted += 1;
        } else if !stderr.contains("0 flow entries") {
            return Err(Error::Exec {
                program: "conntrack".into(),
                source: std::io::Error::other(stderr.into_owned()),
            });
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_endpoint_and_new_endpoints_are_stale() {
        let vip = UdpTarget::Vip("10.0.0.10".parse().unwrap(), 53);
        let np = UdpTarget::NodePort(Family::Ipv4, 30053);
        let a: IpAddr = "10.1.0.1".parse().unwrap();
        let b: IpAddr = "10.1.0.2".parse().unwrap();
        let old: UdpEndpoints =
            [(vip.clone(), [a, b].into()), (np.clone(), BTreeSet::new())].into();
        let new: UdpEndpoints = [(vip.clone(), [a].into()), (np.clone(), [a].into())].into();
        let s = stale(&old, &new);
        assert_eq!(
            s,
            vec![
                Deletion {
                    target: vip.clone(),
                    endpoint: Some(b)
                },
                Deletion {
                    target: np.clone(),
                    endpoint: None
                },
            ]
        );
        assert_eq!(
            args(&s[0]),
            [
                "-D",
                "-p",
                "udp",
                "--orig-dst",
                "10.0.0.10",
                "--orig-port-dst",
                "53",
                "--reply-src",
                "10.1.0.2"
            ]
        );
        assert!(stale(&new, &new).is_empty());
    }
}
