//! This replica's in-memory view of the claims, plus the bitmaps used to pick candidates.
//!
//! The API (the claim objects) is the source of truth; this index only makes picking a free
//! candidate cheap and tells reconciles which claims a Service holds. It is fed by the claim
//! watches and by our own successful writes. A stale index can only make us try a value that is
//! taken (the create then fails with AlreadyExists and we try the next) or skip a value that is
//! free for a moment — never hand out a value twice.
//!
//! A *reservation* marks a value a worker is currently trying to claim, so two workers of this
//! replica do not race for the same candidate.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crds::{IpPurpose, NodePortClaim, PortPurpose, ServiceIPClaim, ServiceRef};
use ipam::{IpRange, PortRange};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::ipam::config::IpamConfig;
use crate::ipam::svc_view::Family;
use crate::{Error, Result};

/// What the index knows of one IP claim.
#[derive(Debug, Clone, PartialEq)]
pub struct IpClaimInfo {
    /// Purpose.
    pub purpose: IpPurpose,
    /// Pool (LoadBalancer IPs).
    pub pool: Option<String>,
    /// Sharing key (LoadBalancer IPs).
    pub sharing_key: Option<String>,
    /// Holders.
    pub parents: Vec<ServiceRef>,
    /// Creation time (for the leak grace period).
    pub created: Option<Timestamp>,
}

/// What the index knows of one node-port claim.
#[derive(Debug, Clone, PartialEq)]
pub struct PortClaimInfo {
    /// Purpose.
    pub purpose: PortPurpose,
    /// Holder.
    pub parent: ServiceRef,
    /// Creation time.
    pub created: Option<Timestamp>,
}

/// Outcome of trying to reserve a specific value.
#[derive(Debug, Clone, PartialEq)]
pub enum Reserve<T> {
    /// Reserved: go and create the claim.
    Reserved,
    /// A claim is known; here is what it says.
    Held(T),
    /// Another worker of this replica is claiming it right now.
    Busy,
    /// Not part of any configured range.
    OutOfRange,
}

/// The index.
pub struct AllocState {
    ranges: Vec<IpRange>,
    ports: PortRange,
    ips: HashMap<IpAddr, IpClaimInfo>,
    node_ports: HashMap<u16, PortClaimInfo>,
    pending_ips: HashSet<IpAddr>,
    pending_ports: HashSet<u16>,
    ips_by_uid: HashMap<String, HashSet<IpAddr>>,
    ports_by_uid: HashMap<String, HashSet<u16>>,
}

impl AllocState {
    /// Empty index for `cfg`'s ranges.
    pub fn new(cfg: &IpamConfig) -> Result<Self> {
        let ranges = cfg
            .service_cidrs
            .iter()
            .map(|c| {
                IpRange::new(*c).map_err(|e| Error::InvalidConfig {
                    flag: "--service-cluster-ip-range",
                    value: c.to_string(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let ports = PortRange::parse(&cfg.node_port_range).map_err(|e| Error::InvalidConfig {
            flag: "--service-node-port-range",
            value: cfg.node_port_range.clone(),
            reason: e.to_string(),
        })?;
        Ok(AllocState {
            ranges,
            ports,
            ips: HashMap::new(),
            node_ports: HashMap::new(),
            pending_ips: HashSet::new(),
            pending_ports: HashSet::new(),
            ips_by_uid: HashMap::new(),
            ports_by_uid: HashMap::new(),
        })
    }

    /// The Service CIDR allocators.
    pub fn ranges(&self) -> &[IpRange] {
        &self.ranges
    }

    /// The node-port allocator.
    pub fn port_range(&self) -> &PortRange {
        &self.ports
    }

    fn range_mut(&mut self, ip: IpAddr) -> Option<&mut IpRange> {
        self.ranges.iter_mut().find(|r| r.contains(ip))
    }

    /// Whether `ip` is an allocatable ClusterIP of a configured range.
    pub fn in_cluster_range(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }

    /// The configured CIDR of `family`, as text.
    pub fn cidr_of(&self, family: Family) -> Option<String> {
        self.ranges
            .iter()
            .find(|r| r.family() == family)
            .map(|r| r.cidr().to_string())
    }

    // --- claims (from watches and our own writes) ---

    /// Records (or updates) an IP claim.
    pub fn apply_ip_claim(&mut self, claim: &ServiceIPClaim) {
        let Some(ip) = ServiceIPClaim::ip_from_name(&claim.name_any()) else {
            return;
        };
        let info = IpClaimInfo {
            purpose: claim.spec.purpose,
            pool: claim.spec.pool.clone(),
            sharing_key: claim.spec.sharing_key.clone(),
            parents: claim.spec.parent_refs.clone(),
            created: claim.metadata.creation_timestamp.as_ref().map(|t| t.0),
        };
        self.set_ip(ip, info);
    }

    /// Records an IP claim from its parts (after our own create/update).
    pub fn set_ip(&mut self, ip: IpAddr, info: IpClaimInfo) {
        self.forget_ip_owners(ip);
        for p in &info.parents {
            self.ips_by_uid.entry(p.uid.clone()).or_default().insert(ip);
        }
        if let Some(r) = self.range_mut(ip) {
            if !r.is_allocated(ip) {
                let _ = r.allocate(ip);
            }
        }
        self.ips.insert(ip, info);
    }

    fn forget_ip_owners(&mut self, ip: IpAddr) {
        if let Some(old) = self.ips.get(&ip) {
            for p in &old.parents {
                if let Some(set) = self.ips_by_uid.get_mut(&p.uid) {
                    set.remove(&ip);
                    if set.is_empty() {
                        self.ips_by_uid.remove(&p.uid);
                    }
                }
            }
        }
    }

    /// Forgets an IP claim (deleted).
    pub fn remove_ip(&mut self, ip: IpAddr) {
        self.forget_ip_owners(ip);
        self.ips.remove(&ip);
        if !self.pending_ips.contains(&ip) {
            if let Some(r) = self.range_mut(ip) {
                r.release(ip);
            }
        }
    }

    /// Records a node-port claim.
    pub fn apply_port_claim(&mut self, claim: &NodePortClaim) {
        let Some(port) = NodePortClaim::port_from_name(&claim.name_any()) else {
            return;
        };
        self.set_port(
            port,
            PortClaimInfo {
                purpose: claim.spec.purpose,
                parent: claim.spec.parent_ref.clone(),
                created: claim.metadata.creation_timestamp.as_ref().map(|t| t.0),
            },
        );
    }

    /// Records a node-port claim from its parts.
    pub fn set_port(&mut self, port: u16, info: PortClaimInfo) {
        self.forget_port_owner(port);
        self.ports_by_uid
            .entry(info.parent.uid.clone())
            .or_default()
            .insert(port);
        if self.ports.contains(port) && !self.ports.is_allocated(port) {
            let _ = self.ports.allocate(port);
        }
        self.node_ports.insert(port, info);
    }

    fn forget_port_owner(&mut self, port: u16) {
        if let Some(old) = self.node_ports.get(&port) {
            if let Some(set) = self.ports_by_uid.get_mut(&old.parent.uid) {
                set.remove(&port);
                if set.is_empty() {
                    self.ports_by_uid.remove(&old.parent.uid);
                }
            }
        }
    }

    /// Forgets a node-port claim.
    pub fn remove_port(&mut self, port: u16) {
        self.forget_port_owner(port);
        self.node_ports.remove(&port);
        if !self.pending_ports.contains(&port) {
            self.ports.release(port);
        }
    }

    /// Replaces the whole index with a fresh listing (after a relist of the claim watches).
    pub fn reset(&mut self, ip_claims: &[ServiceIPClaim], port_claims: &[NodePortClaim]) {
        let ips: Vec<IpAddr> = self.ips.keys().copied().collect();
        for ip in ips {
            self.remove_ip(ip);
        }
        let ports: Vec<u16> = self.node_ports.keys().copied().collect();
        for p in ports {
            self.remove_port(p);
        }
        for c in ip_claims {
            self.apply_ip_claim(c);
        }
        for c in port_claims {
            self.apply_port_claim(c);
        }
    }

    /// The IP claim of `ip`, if known.
    pub fn ip(&self, ip: IpAddr) -> Option<&IpClaimInfo> {
        self.ips.get(&ip)
    }

    /// The node-port claim of `port`, if known.
    pub fn port(&self, port: u16) -> Option<&PortClaimInfo> {
        self.node_ports.get(&port)
    }

    /// IPs claimed by Service `uid`.
    pub fn ips_of(&self, uid: &str) -> Vec<(IpAddr, IpClaimInfo)> {
        let mut v: Vec<(IpAddr, IpClaimInfo)> = self
            .ips_by_uid
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|ip| self.ips.get(ip).map(|i| (*ip, i.clone())))
            .collect();
        v.sort_by_key(|(ip, _)| *ip);
        v
    }

    /// Node ports claimed by Service `uid`.
    pub fn ports_of(&self, uid: &str) -> Vec<(u16, PortClaimInfo)> {
        let mut v: Vec<(u16, PortClaimInfo)> = self
            .ports_by_uid
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|p| self.node_ports.get(p).map(|i| (*p, i.clone())))
            .collect();
        v.sort_by_key(|(p, _)| *p);
        v
    }

    /// Every IP claim.
    pub fn all_ips(&self) -> impl Iterator<Item = (&IpAddr, &IpClaimInfo)> {
        self.ips.iter()
    }

    /// Every node-port claim.
    pub fn all_ports(&self) -> impl Iterator<Item = (&u16, &PortClaimInfo)> {
        self.node_ports.iter()
    }

    // --- reservations ---

    /// Reserves a specific ClusterIP or LoadBalancer IP (`in_range` says whether it belongs to a
    /// range or pool the caller checked).
    pub fn reserve_ip(&mut self, ip: IpAddr, in_range: bool) -> Reserve<IpClaimInfo> {
        if let Some(info) = self.ips.get(&ip) {
            return Reserve::Held(info.clone());
        }
        if self.pending_ips.contains(&ip) {
            return Reserve::Busy;
        }
        if !in_range {
            return Reserve::OutOfRange;
        }
        if let Some(r) = self.range_mut(ip) {
            let _ = r.allocate(ip);
        }
        self.pending_ips.insert(ip);
        Reserve::Reserved
    }

    /// Reserves a free ClusterIP of `family` (upstream's band-aware random scan).
    pub fn reserve_next_ip(&mut self, family: Family) -> Result<IpAddr, ipam::Error> {
        let range = self
            .ranges
            .iter_mut()
            .find(|r| r.family() == family)
            .ok_or_else(|| ipam::Error::InvalidRange {
                range: family.to_string(),
                reason: "family not configured".to_string(),
            })?;
        let ip = range.allocate_next()?;
        self.pending_ips.insert(ip);
        Ok(ip)
    }

    /// Ends a reservation. `claimed` = the claim now exists (recorded with [`Self::set_ip`]),
    /// otherwise the value is freed again unless some claim is known for it.
    pub fn unreserve_ip(&mut self, ip: IpAddr, claimed: bool) {
        self.pending_ips.remove(&ip);
        if !claimed && !self.ips.contains_key(&ip) {
            if let Some(r) = self.range_mut(ip) {
                r.release(ip);
            }
        }
    }

    /// Whether `ip` is claimed or being claimed (for pool scans).
    pub fn ip_taken(&self, ip: IpAddr) -> bool {
        self.ips.contains_key(&ip) || self.pending_ips.contains(&ip)
    }

    /// Reserves a specific node port.
    pub fn reserve_port(&mut self, port: u16) -> Reserve<PortClaimInfo> {
        if let Some(info) = self.node_ports.get(&port) {
            return Reserve::Held(info.clone());
        }
        if self.pending_ports.contains(&port) {
            return Reserve::Busy;
        }
        if !self.ports.contains(port) {
            return Reserve::OutOfRange;
        }
        let _ = self.ports.allocate(port);
        self.pending_ports.insert(port);
        Reserve::Reserved
    }

    /// Reserves a free node port.
    pub fn reserve_next_port(&mut self) -> Result<u16, ipam::Error> {
        let port = self.ports.allocate_next()?;
        self.pending_ports.insert(port);
        Ok(port)
    }

    /// Ends a node-port reservation (see [`Self::unreserve_ip`]).
    pub fn unreserve_port(&mut self, port: u16, claimed: bool) {
        self.pending_ports.remove(&port);
        if !claimed && !self.node_ports.contains_key(&port) {
            self.ports.release(port);
        }
    }

    /// Number of IP claims in `pool`.
    pub fn pool_used(&self, pool: &str) -> u64 {
        self.ips
            .values()
            .filter(|i| i.pool.as_deref() == Some(pool))
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::{NodePortClaimSpec, ServiceIPClaimSpec};

    fn cfg() -> IpamConfig {
        IpamConfig {
            service_cidrs: vec!["10.0.0.0/29".parse().unwrap()],
            node_port_range: "30000-30002".into(),
            ..Default::default()
        }
    }

    fn owner(uid: &str) -> ServiceRef {
        ServiceRef {
            namespace: "ns".into(),
            name: uid.into(),
            uid: uid.into(),
        }
    }

    fn ip_claim(ip: &str, uid: &str) -> ServiceIPClaim {
        let ip: IpAddr = ip.parse().unwrap();
        ServiceIPClaim::new(
            &ServiceIPClaim::name_for(ip),
            ServiceIPClaimSpec {
                ip: ip.to_string(),
                purpose: IpPurpose::ClusterIP,
                pool: None,
                sharing_key: None,
                parent_refs: vec![owner(uid)],
            },
        )
    }

    #[test]
    fn reservations_never_hand_out_a_claimed_or_pending_value() {
        let mut st = AllocState::new(&cfg()).unwrap();
        // /29 → 6 usable addresses.
        st.apply_ip_claim(&ip_claim("10.0.0.1", "a"));
        let mut got = HashSet::new();
        while let Ok(ip) = st.reserve_next_ip(Family::V4) {
            assert!(got.insert(ip));
        }
        assert_eq!(got.len(), 5);
        assert!(!got.contains(&"10.0.0.1".parse::<IpAddr>().unwrap()));
        let some = *got.iter().next().unwrap();
        assert_eq!(st.reserve_ip(some, true), Reserve::Busy);
        st.unreserve_ip(some, false);
        assert_eq!(st.reserve_next_ip(Family::V4).unwrap(), some);
        assert!(matches!(
            st.reserve_ip("10.0.0.1".parse().unwrap(), true),
            Reserve::Held(_)
        ));
        assert_eq!(
            st.reserve_ip("10.9.0.1".parse().unwrap(), false),
            Reserve::OutOfRange
        );
    }

    #[test]
    fn index_by_owner_follows_applies_and_removals() {
        let mut st = AllocState::new(&cfg()).unwrap();
        st.apply_ip_claim(&ip_claim("10.0.0.2", "a"));
        st.apply_ip_claim(&ip_claim("10.0.0.3", "a"));
        assert_eq!(st.ips_of("a").len(), 2);
        // Re-owned (e.g. repaired for another Service).
        st.apply_ip_claim(&ip_claim("10.0.0.3", "b"));
        assert_eq!(st.ips_of("a").len(), 1);
        assert_eq!(st.ips_of("b").len(), 1);
        st.remove_ip("10.0.0.2".parse().unwrap());
        assert!(st.ips_of("a").is_empty());
        assert_eq!(st.ranges()[0].used(), 1);

        let pc = NodePortClaim::new(
            "30001",
            NodePortClaimSpec {
                port: 30001,
                purpose: PortPurpose::NodePort,
                parent_ref: owner("a"),
            },
        );
        st.apply_port_claim(&pc);
        assert_eq!(st.ports_of("a").len(), 1);
        assert_eq!(
            st.reserve_port(30001),
            Reserve::Held(st.port(30001).unwrap().clone())
        );
        assert_eq!(st.reserve_port(40000), Reserve::OutOfRange);
        let mut n = 0;
        while st.reserve_next_port().is_ok() {
            n += 1;
        }
        assert_eq!(n, 2);
        st.reset(&[], &[]);
        assert!(st.ports_of("a").is_empty() && st.ips_of("b").is_empty());
    }
}
