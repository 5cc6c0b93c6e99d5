//! Where the Service CIDRs come from (pure: no I/O). The renderer drops traffic to unallocated
//! IPs inside them and rejects ports a ClusterIP does not serve; this decides which CIDRs those
//! are.
//!
//! * When the API serves `networking.k8s.io/v1` ServiceCIDRs, their `spec.cidrs` are the Service
//!   CIDRs, as kube-proxy's ServiceCIDR handler sees them: an object counts from its creation
//!   until it is gone, including while it is being deleted (its finalizer holds it while
//!   addresses inside it are still allocated, and those must stay protected). The
//!   `--service-cluster-ip-range` flag is not used then: on such clusters the API server turns
//!   its own flag into the default ServiceCIDR, and an admin who deletes a range expects the
//!   proxy to stop claiming it.
//! * Otherwise (older API servers) the flag is the only source.

use std::collections::BTreeMap;

use ipnet::IpNet;

/// The source of the Service CIDRs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ServiceCidrSource {
    /// `--service-cluster-ip-range`: the API does not serve ServiceCIDRs, or there is no API
    /// (`render` / `apply` of manifests without ServiceCIDR objects).
    #[default]
    Flag,
    /// API discovery has not answered yet; nothing is synced until it has.
    Undecided,
    /// The ServiceCIDR objects, by name; `synced` once their initial list is complete.
    Objects {
        /// The initial list is complete.
        synced: bool,
        /// `spec.cidrs` of every object.
        by_name: BTreeMap<String, Vec<IpNet>>,
    },
}

impl ServiceCidrSource {
    /// Following ServiceCIDR objects, before their initial list.
    pub fn objects() -> Self {
        ServiceCidrSource::Objects {
            synced: false,
            by_name: BTreeMap::new(),
        }
    }

    /// Whether the Service CIDRs are known (a sync may happen).
    pub fn ready(&self) -> bool {
        match self {
            ServiceCidrSource::Flag => true,
            ServiceCidrSource::Undecided => false,
            ServiceCidrSource::Objects { synced, .. } => *synced,
        }
    }

    /// Records ServiceCIDR `name` (`Some`: created or updated, `None`: gone). Returns whether
    /// the effective CIDRs may have changed. Ignored unless following objects.
    pub fn apply(&mut self, name: &str, cidrs: Option<Vec<IpNet>>) -> bool {
        let ServiceCidrSource::Objects { by_name, .. } = self else {
            return false;
        };
        match cidrs {
            Some(c) => by_name.insert(name.to_string(), c.clone()) != Some(c),
            None => by_name.remove(name).is_some(),
        }
    }

    /// Replaces every object after a (re)list and marks the source synced. Returns whether
    /// anything changed (the first list always counts as a change).
    pub fn reset(&mut self, all: BTreeMap<String, Vec<IpNet>>) -> bool {
        match self {
            ServiceCidrSource::Objects { synced, by_name } => {
                let changed = !*synced || *by_name != all;
                *by_name = all;
                *synced = true;
                changed
            }
            _ => false,
        }
    }

    /// The Service CIDRs to program: `flag` unless following objects, else the union of every
    /// object's CIDRs. Nested CIDRs (a /24 ServiceCIDR inside the default /12, or the same
    /// CIDR in two objects) are merged, because an nftables interval set refuses overlapping
    /// elements; the covered addresses are the same.
    pub fn effective(&self, flag: &[IpNet]) -> Vec<IpNet> {
        let all: Vec<IpNet> = match self {
            ServiceCidrSource::Objects { by_name, .. } => {
                by_name.values().flatten().map(IpNet::trunc).collect()
            }
            _ => flag.iter().map(IpNet::trunc).collect(),
        };
        IpNet::aggregate(&all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn the_flag_is_used_until_objects_are_followed() {
        let flag = nets(&["10.96.0.0/16", "fd00:96::/112"]);
        let s = ServiceCidrSource::Flag;
        assert!(s.ready());
        assert_eq!(s.effective(&flag), flag);
        assert!(!ServiceCidrSource::Undecided.ready());
        let mut f = ServiceCidrSource::Flag;
        assert!(!f.apply("a", Some(nets(&["10.0.0.0/24"]))), "not following");
        assert_eq!(f.effective(&flag), flag);
    }

    #[test]
    fn objects_replace_the_flag_and_follow_adds_and_removals() {
        let flag = nets(&["10.96.0.0/16"]);
        let mut s = ServiceCidrSource::objects();
        assert!(!s.ready(), "not before the initial list");
        let initial: BTreeMap<String, Vec<IpNet>> =
            [("kubernetes".to_string(), nets(&["10.112.0.0/12"]))].into();
        assert!(s.reset(initial.clone()), "the first list is a change");
        assert!(s.ready());
        assert!(!s.reset(initial), "an identical relist is not");
        assert_eq!(s.effective(&flag), nets(&["10.112.0.0/12"]), "flag unused");

        assert!(s.apply("extra", Some(nets(&["10.99.0.0/24", "fd00:99::/112"]))));
        assert!(!s.apply("extra", Some(nets(&["10.99.0.0/24", "fd00:99::/112"]))));
        assert_eq!(
            s.effective(&flag),
            nets(&["10.99.0.0/24", "10.112.0.0/12", "fd00:99::/112"])
        );
        assert!(s.apply("extra", None));
        assert!(!s.apply("extra", None), "already gone");
        assert_eq!(s.effective(&flag), nets(&["10.112.0.0/12"]));
        // Every object gone: no Service CIDR at all (the flag does not come back).
        assert!(s.reset(BTreeMap::new()));
        assert!(s.effective(&flag).is_empty());
    }

    #[test]
    fn nested_and_repeated_cidrs_are_merged() {
        let mut s = ServiceCidrSource::objects();
        s.reset(
            [
                ("kubernetes".to_string(), nets(&["10.96.0.0/12"])),
                ("inner".to_string(), nets(&["10.100.5.0/24"])),
                ("same".to_string(), nets(&["10.96.0.0/12"])),
                ("host-bits".to_string(), nets(&["10.200.0.9/24"])),
            ]
            .into(),
        );
        assert_eq!(s.effective(&[]), nets(&["10.96.0.0/12", "10.200.0.0/24"]));
        // Deleting one of two objects with the same CIDR keeps it.
        s.apply("same", None);
        assert_eq!(s.effective(&[]), nets(&["10.96.0.0/12", "10.200.0.0/24"]));
    }
}
