//! The local-traffic detector: how the rules tell traffic from this node's pods (kept as it is)
//! from everything else (masqueraded on its way to a ClusterIP; sent to the local endpoints only
//! for externalTrafficPolicy Local). kube-proxy's four `--detect-local-mode`s:
//!
//! | mode | pod traffic is | from |
//! |---|---|---|
//! | `ClusterCIDR` (default) | source inside `--cluster-cidr` | the flag |
//! | `NodeCIDR` | source inside the Node's `spec.podCIDRs` | the Node object |
//! | `BridgeInterface` | arriving on `--pod-bridge-interface` | the flag |
//! | `InterfaceNamePrefix` | arriving on an interface named `--pod-interface-name-prefix*` | the flag |
//!
//! Interface modes match `iifname`, the interface the packet came in on as the IP layer sees it.
//! Behind a bridge with bridge netfilter on, that is the bridge, not the pod's port: a prefix
//! matches the bridge's name there, never the veths'.

use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::types::DetectLocal;
use crate::watch::convert::NodeInfo;

/// `--detect-local-mode` values (upstream's names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DetectLocalMode {
    /// Source address inside `--cluster-cidr`.
    #[default]
    #[value(name = "ClusterCIDR")]
    ClusterCidr,
    /// Source address inside the Node's `spec.podCIDRs`.
    #[value(name = "NodeCIDR")]
    NodeCidr,
    /// Arrived on `--pod-bridge-interface`.
    #[value(name = "BridgeInterface")]
    BridgeInterface,
    /// Arrived on an interface whose name starts with `--pod-interface-name-prefix`.
    #[value(name = "InterfaceNamePrefix")]
    InterfaceNamePrefix,
}

impl DetectLocalMode {
    /// Parses upstream's name; the empty string is the default, as in a KubeProxyConfiguration.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "ClusterCIDR" => Some(DetectLocalMode::ClusterCidr),
            "NodeCIDR" => Some(DetectLocalMode::NodeCidr),
            "BridgeInterface" => Some(DetectLocalMode::BridgeInterface),
            "InterfaceNamePrefix" => Some(DetectLocalMode::InterfaceNamePrefix),
            _ => None,
        }
    }
}

/// Linux interface names are at most 15 bytes (IFNAMSIZ less the NUL).
const IFNAME_MAX: usize = 15;

/// Checks an interface name (or prefix) given for `flag`. It ends up quoted inside nftables rules,
/// so besides the kernel's limits only letters, digits and `-_.` are accepted (what interface
/// names use in practice), which keeps quotes and wildcards out.
fn check_ifname(flag: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{flag}={name:?} is not an interface name (1 to {IFNAME_MAX} letters, digits or -_.)"
        )))
    }
}

/// The detector settings (flags, or a KubeProxyConfiguration's `detectLocalMode` and
/// `detectLocal`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DetectLocalArgs<'a> {
    /// The mode.
    pub mode: DetectLocalMode,
    /// `--cluster-cidr`.
    pub cluster_cidrs: &'a [IpNet],
    /// `--pod-bridge-interface`.
    pub bridge_interface: Option<&'a str>,
    /// `--pod-interface-name-prefix`.
    pub interface_name_prefix: Option<&'a str>,
}

impl DetectLocalArgs<'_> {
    /// Checks the combination, as kube-proxy's configuration validation: an interface mode needs
    /// its interface (here also a valid name). Settings another mode would use are ignored, as
    /// upstream does, with a warning.
    pub fn validate(&self) -> Result<()> {
        match self.mode {
            DetectLocalMode::BridgeInterface => match self.bridge_interface {
                Some(i) => check_ifname("--pod-bridge-interface", i)?,
                None => {
                    return Err(Error::Config(
                        "--detect-local-mode=BridgeInterface needs --pod-bridge-interface \
                         (detectLocal.bridgeInterface)"
                            .into(),
                    ))
                }
            },
            DetectLocalMode::InterfaceNamePrefix => match self.interface_name_prefix {
                Some(p) => check_ifname("--pod-interface-name-prefix", p)?,
                None => {
                    return Err(Error::Config(
                        "--detect-local-mode=InterfaceNamePrefix needs \
                         --pod-interface-name-prefix (detectLocal.interfaceNamePrefix)"
                            .into(),
                    ))
                }
            },
            DetectLocalMode::ClusterCidr | DetectLocalMode::NodeCidr => {}
        }
        Ok(())
    }

    /// Settings given that the mode does not use (reported at start-up).
    pub fn unused(&self) -> Vec<&'static str> {
        let mut out = vec![];
        if self.bridge_interface.is_some() && self.mode != DetectLocalMode::BridgeInterface {
            out.push("--pod-bridge-interface");
        }
        if self.interface_name_prefix.is_some() && self.mode != DetectLocalMode::InterfaceNamePrefix
        {
            out.push("--pod-interface-name-prefix");
        }
        if !self.cluster_cidrs.is_empty() && self.mode != DetectLocalMode::ClusterCidr {
            out.push("--cluster-cidr");
        }
        out
    }

    /// Whether the detector is known with what is known of the Node: `NodeCIDR` needs the
    /// Node's podCIDRs (kube-proxy waits for them too), the other modes need nothing.
    pub fn known(&self, node: Option<&NodeInfo>) -> bool {
        self.mode != DetectLocalMode::NodeCidr || node.is_some_and(|n| !n.pod_cidrs.is_empty())
    }

    /// The detector: the CIDRs that mean "pod traffic" (ClusterCIDR, NodeCIDR; empty when
    /// unknown: no traffic is pod traffic) and the renderer's [`DetectLocal`]. Call
    /// [`DetectLocalArgs::validate`] first; an interface mode without its name detects nothing.
    pub fn resolve(&self, node: Option<&NodeInfo>) -> (Vec<IpNet>, DetectLocal) {
        match self.mode {
            DetectLocalMode::ClusterCidr => (self.cluster_cidrs.to_vec(), DetectLocal::Cidrs),
            DetectLocalMode::NodeCidr => (
                node.map(|n| n.pod_cidrs.clone()).unwrap_or_default(),
                DetectLocal::Cidrs,
            ),
            DetectLocalMode::BridgeInterface => match self.bridge_interface {
                Some(i) => (vec![], DetectLocal::BridgeInterface(i.to_string())),
                None => (vec![], DetectLocal::Cidrs),
            },
            DetectLocalMode::InterfaceNamePrefix => match self.interface_name_prefix {
                Some(p) => (vec![], DetectLocal::InterfaceNamePrefix(p.to_string())),
                None => (vec![], DetectLocal::Cidrs),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(l: &[&str]) -> Vec<IpNet> {
        l.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn each_mode_resolves_to_its_detector() {
        let cluster = nets(&["10.244.0.0/16"]);
        let node = NodeInfo {
            pod_cidrs: nets(&["10.244.3.0/24", "fd00:244:3::/64"]),
            ..Default::default()
        };
        let a = |mode| DetectLocalArgs {
            mode,
            cluster_cidrs: &cluster,
            bridge_interface: Some("cbr0"),
            interface_name_prefix: Some("veth"),
        };
        assert_eq!(
            a(DetectLocalMode::ClusterCidr).resolve(Some(&node)),
            (cluster.clone(), DetectLocal::Cidrs)
        );
        assert_eq!(
            a(DetectLocalMode::NodeCidr).resolve(Some(&node)),
            (node.pod_cidrs.clone(), DetectLocal::Cidrs)
        );
        assert_eq!(
            a(DetectLocalMode::NodeCidr).resolve(None),
            (vec![], DetectLocal::Cidrs)
        );
        assert_eq!(
            a(DetectLocalMode::BridgeInterface).resolve(None),
            (vec![], DetectLocal::BridgeInterface("cbr0".into()))
        );
        assert_eq!(
            a(DetectLocalMode::InterfaceNamePrefix).resolve(None),
            (vec![], DetectLocal::InterfaceNamePrefix("veth".into()))
        );
        // NodeCIDR waits for the Node's podCIDRs; the others need no Node.
        assert!(!a(DetectLocalMode::NodeCidr).known(None));
        assert!(!a(DetectLocalMode::NodeCidr).known(Some(&NodeInfo::default())));
        assert!(a(DetectLocalMode::NodeCidr).known(Some(&node)));
        assert!(a(DetectLocalMode::BridgeInterface).known(None));
        assert_eq!(
            a(DetectLocalMode::NodeCidr).unused(),
            [
                "--pod-bridge-interface",
                "--pod-interface-name-prefix",
                "--cluster-cidr"
            ]
        );
    }

    #[test]
    fn interface_modes_need_a_valid_interface() {
        let base = DetectLocalArgs::default();
        base.validate()
            .expect("ClusterCIDR without a CIDR is valid (detects nothing)");
        for (args, word) in [
            (
                DetectLocalArgs {
                    mode: DetectLocalMode::BridgeInterface,
                    ..base.clone()
                },
                "needs --pod-bridge-interface",
            ),
            (
                DetectLocalArgs {
                    mode: DetectLocalMode::InterfaceNamePrefix,
                    ..base.clone()
                },
                "needs --pod-interface-name-prefix",
            ),
            (
                DetectLocalArgs {
                    mode: DetectLocalMode::BridgeInterface,
                    bridge_interface: Some("a\"; drop"),
                    ..base.clone()
                },
                "--pod-bridge-interface",
            ),
            (
                DetectLocalArgs {
                    mode: DetectLocalMode::InterfaceNamePrefix,
                    interface_name_prefix: Some("a-very-long-prefix"),
                    ..base.clone()
                },
                "--pod-interface-name-prefix",
            ),
            (
                DetectLocalArgs {
                    mode: DetectLocalMode::InterfaceNamePrefix,
                    interface_name_prefix: Some("veth*"),
                    ..base.clone()
                },
                "--pod-interface-name-prefix",
            ),
            (
                DetectLocalArgs {
                    mode: DetectLocalMode::BridgeInterface,
                    bridge_interface: Some(""),
                    ..base.clone()
                },
                "--pod-bridge-interface",
            ),
        ] {
            let err = args.validate().expect_err(word).to_string();
            assert!(err.contains(word), "{args:?}: {err}");
        }
        DetectLocalArgs {
            mode: DetectLocalMode::InterfaceNamePrefix,
            interface_name_prefix: Some("cali"),
            ..base
        }
        .validate()
        .expect("a plain prefix");
        assert_eq!(
            DetectLocalMode::parse(""),
            Some(DetectLocalMode::ClusterCidr)
        );
        assert_eq!(
            DetectLocalMode::parse("NodeCIDR"),
            Some(DetectLocalMode::NodeCidr)
        );
        assert_eq!(DetectLocalMode::parse("nodecidr"), None);
    }
}
