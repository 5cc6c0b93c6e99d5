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
use ipam::PortRange;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::ipam::cluster_ranges::{ClusterRanges, RangeSpec};
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
    /// Which objects record it.
    pub ledger: Ledger,
}

/// Which API objects record an address: a `ServiceIPClaim` (LoadBalancer IPs, and ClusterIPs
/// where the API has no IPAddress type), an `IPAddress` (ClusterIPs), or both for a moment while
/// a claim is migrated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ledger {
    /// A `ServiceIPClaim` exists.
    pub claim: bool,
    /// An `IPAddress` exists, and who manages it.
    pub address: Option<AddressManager>,
}

/// Who manages an `IPAddress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressManager {
    /// This controller (it creates and deletes it).
    Ours,
    /// Another allocator, e.g. kube-apiserver's: it is respected, never changed or deleted.
    Other,
}

impl IpClaimInfo {
    /// What a `ServiceIPClaim` says.
    pub fn from_claim(claim: &ServiceIPClaim) -> Self {
        IpClaimInfo {
            purpose: claim.spec.purpose,
            pool: claim.spec.pool.clone(),
            sharing_key: claim.spec.sharing_key.clone(),
            parents: claim.spec.parent_refs.clone(),
            created: claim.metadata.creation_timestamp.as_ref().map(|t| t.0),
            ledger: Ledger {
                claim: true,
                address: None,
            },
        }
    }

    /// Whether the Service `namespace/name` with `uid` is a holder. A holder recorded without
    /// a UID (an IPAddress another allocator made names its Service only by namespace and name)
    /// matches by name.
    pub fn held_by(&self, namespace: &str, name: &str, uid: &str) -> bool {
        held_by(&self.parents, namespace, name, uid)
    }
}

/// See [`IpClaimInfo::held_by`].
pub fn held_by(parents: &[ServiceRef], namespace: &str, name: &str, uid: &str) -> bool {
    parents.iter().any(|p| {
        if p.uid.is_empty() {
            p.namespace == namespace && p.name == name
        } else {
            p.uid == uid
        }
    })
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
    ranges: ClusterRanges,
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
        let specs: Vec<RangeSpec> = cfg
            .service_cidrs
            .iter()
            .map(|c| RangeSpec {
                cidr: *c,
                ready: true,
            })
            .collect();
        let ranges = ClusterRanges::new(&specs, []).map_err(|e| Error::InvalidConfig {
            flag: "--service-cluster-ip-range",
            value: cfg
                .service_cidrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            reason: e.to_string(),
        })?;
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

    /// The ClusterIP ranges.
    pub fn ranges(&self) -> &ClusterRanges {
        &self.ranges
    }

    /// Replaces the ClusterIP ranges (the ServiceCIDR objects changed); every address known to
    /// be held or being claimed stays marked.
    pub fn set_ranges(&mut self, specs: &[RangeSpec]) -> std::result::Result<(), ipam::Error> {
        let held: Vec<IpAddr> = self
            .ips
            .keys()
            .chain(self.pending_ips.iter())
            .copied()
            .collect();
        self.ranges.set(specs, held)
    }

    /// The node-port allocator.
    pub fn port_range(&self) -> &PortRange {
        &self.ports
    }

    /// Whether a new ClusterIP claim on `ip` may be made (a ready range contains it).
    pub fn in_cluster_range(&self, ip: IpAddr) -> bool {
        self.ranges.allows(ip)
    }

    /// The ready CIDRs of `family`, as text (`None` when there is none).
    pub fn cidr_of(&self, family: Family) -> Option<String> {
        let cidrs = self.ranges.cidrs(family);
        (!cidrs.is_empty()).then(|| cidrs.join(","))
    }

    // --- claims (from watches and our own writes) ---

    /// Records (or updates) an IP claim.
    pub fn apply_ip_claim(&mut self, claim: &ServiceIPClaim) {
        let Some(ip) = ServiceIPClaim::ip_from_name(&claim.name_any()) else {
            return;
        };
        self.record(ip, IpClaimInfo::from_claim(claim));
    }

    /// Records what one ledger object says of `ip` (`info.ledger` names the object: a claim or
    /// an IPAddress). While both exist for one address the IPAddress speaks for it; the other
    /// object's presence is remembered so its removal does not free the address.
    pub fn record(&mut self, ip: IpAddr, mut info: IpClaimInfo) {
        if let Some(old) = self.ips.get(&ip) {
            let by_claim = info.ledger.claim && info.ledger.address.is_none();
            if by_claim && old.ledger.address.is_some() {
                let mut kept = old.clone();
                kept.ledger.claim = true;
                info = kept;
            } else {
                info.ledger.claim |= old.ledger.claim;
                info.ledger.address = info.ledger.address.or(old.ledger.address);
            }
        }
        self.set_ip(ip, info);
    }

    /// Records an IP claim from its parts (after our own create/update).
    pub fn set_ip(&mut self, ip: IpAddr, info: IpClaimInfo) {
        self.forget_ip_owners(ip);
        for p in info.parents.iter().filter(|p| !p.uid.is_empty()) {
            self.ips_by_uid.entry(p.uid.clone()).or_default().insert(ip);
        }
        self.ranges.mark(ip);
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

    /// Forgets the `ServiceIPClaim` of `ip` (deleted); the address stays held if an IPAddress
    /// records it too.
    pub fn remove_ip_claim(&mut self, ip: IpAddr) {
        match self.ips.get_mut(&ip) {
            Some(info) if info.ledger.address.is_some() => info.ledger.claim = false,
            Some(_) => self.forget_ip(ip),
            None => {}
        }
    }

    /// Forgets the `IPAddress` of `ip` (deleted); the address stays held if a claim records it
    /// too.
    pub fn remove_address(&mut self, ip: IpAddr) {
        match self.ips.get_mut(&ip) {
            Some(info) if info.ledger.claim => info.ledger.address = None,
            Some(_) => self.forget_ip(ip),
            None => {}
        }
    }

    fn forget_ip(&mut self, ip: IpAddr) {
        self.forget_ip_owners(ip);
        self.ips.remove(&ip);
        if !self.pending_ips.contains(&ip) {
            self.ranges.unmark(ip);
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

    /// Replaces what the index knows from `ServiceIPClaim`s with a fresh listing (after a
    /// relist of the claim watch).
    pub fn reset_ip_claims(&mut self, ip_claims: &[ServiceIPClaim]) {
        let ips: Vec<IpAddr> = self
            .ips
            .iter()
            .filter(|(_, i)| i.ledger.claim)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in ips {
            self.remove_ip_claim(ip);
        }
        for c in ip_claims {
            self.apply_ip_claim(c);
        }
    }

    /// Replaces what the index knows from `IPAddress` objects with a fresh listing.
    pub fn reset_addresses(&mut self, addresses: Vec<(IpAddr, IpClaimInfo)>) {
        let ips: Vec<IpAddr> = self
            .ips
            .iter()
            .filter(|(_, i)| i.ledger.address.is_some())
            .map(|(ip, _)| *ip)
            .collect();
        for ip in ips {
            self.remove_address(ip);
        }
        for (ip, info) in addresses {
            self.record(ip, info);
        }
    }

    /// Replaces the node-port index with a fresh listing.
    pub fn reset_port_claims(&mut self, port_claims: &[NodePortClaim]) {
        let ports: Vec<u16> = self.node_ports.keys().copied().collect();
        for p in ports {
            self.remove_port(p);
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
        self.ranges.mark(ip);
        self.pending_ips.insert(ip);
        Reserve::Reserved
    }

    /// Reserves a free ClusterIP of `family` (upstream's band-aware random scan).
    pub fn reserve_next_ip(&mut self, family: Family) -> Result<IpAddr, ipam::Error> {
        let ip = self.ranges.allocate_next(family)?;
        self.pending_ips.insert(ip);
        Ok(ip)
    }

    /// Ends a reservation. `claimed` = the claim now exists (recorded with [`Self::set_ip`]),
    /// otherwise the value is freed again unless some claim is known for it.
    pub fn unreserve_ip(&mut self, ip: IpAddr, claimed: bool) {
        self.pending_ips.remove(&ip);
        if !claimed && !self.ips.contains_key(&ip) {
            self.ranges.unmark(ip);
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
mod tests;
