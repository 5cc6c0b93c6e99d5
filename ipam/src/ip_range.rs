//! Service ClusterIP allocation over one CIDR (upstream `ipallocator.Range`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rand::Rng;

use crate::band::{cidr_range_size, ip_static_band_size};
use crate::bitmap::Bitmap;
use crate::error::{Error, Result, Value};
use crate::snapshot::Snapshot;

/// Upstream keeps at most this many entries in an IPv6 bitmap (offset 0 = network + 1, so 65 535 usable).
pub const IPV6_MAX_RANGE_SIZE: u64 = 1 << 16;

/// The `--service-cluster-ip-range` flag allows at most this many host bits (IPv4 /12, IPv6 /108).
pub const MAX_SERVICE_CIDR_HOST_BITS: u8 = 20;

/// The `--service-cluster-ip-range` flag needs at least this many addresses.
pub const MIN_SERVICE_CIDR_SIZE: u64 = 8;

/// An IP family, named like Kubernetes' `IPFamily` (`IPv4` / `IPv6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

/// Validates a `--service-cluster-ip-range` value the way kube-apiserver does before it builds the allocator.
///
/// * more than [`MAX_SERVICE_CIDR_HOST_BITS`] host bits (IPv4 shorter than /12, IPv6 shorter than /108) →
///   [`Error::ServiceCidrTooLarge`], "specified --service-cluster-ip-range is too large; for 32-bit addresses,
///   the mask must be >= 12";
/// * fewer than [`MIN_SERVICE_CIDR_SIZE`] addresses (IPv4 /30 and longer) → [`Error::ServiceCidrTooSmall`].
///
/// This is a flag check, separate from [`IpRange::new`], which (like upstream's allocator) accepts any CIDR.
pub fn validate_service_cidr(cidr: &IpNet) -> Result<()> {
    let address_bits = cidr.max_prefix_len();
    let host_bits = address_bits - cidr.prefix_len();
    if host_bits > MAX_SERVICE_CIDR_HOST_BITS {
        return Err(Error::ServiceCidrTooLarge {
            cidr: *cidr,
            address_bits,
            min_prefix: address_bits - MAX_SERVICE_CIDR_HOST_BITS,
        });
    }
    if cidr_range_size(cidr).min(IPV6_MAX_RANGE_SIZE) < MIN_SERVICE_CIDR_SIZE {
        return Err(Error::ServiceCidrTooSmall { cidr: *cidr });
    }
    Ok(())
}

/// Number of allocatable addresses in `cidr`, exactly as upstream's `ipallocator.New` computes `max`.
fn usable_size(cidr: &IpNet) -> u64 {
    let size = cidr_range_size(cidr);
    let size = match cidr {
        // The broadcast address is never allocatable.
        IpNet::V4(_) => size.saturating_sub(1),
        // The bitmap is capped; there is no broadcast address.
        IpNet::V6(_) => size.min(IPV6_MAX_RANGE_SIZE),
    };
    // Nor is the network address.
    size.saturating_sub(1)
}

/// Allocator for the IPs of one Service CIDR (upstream's legacy bitmap `ipallocator.Range`).
///
/// Offset 0 is the network address + 1; the network address, and for IPv4 the broadcast address, are never
/// allocatable (not [`contains`](IpRange::contains)ed). Usable sizes therefore are:
///
/// | CIDR | usable | addresses |
/// |---|---|---|
/// | IPv4 /24 | 254 | `.1`–`.254` |
/// | IPv4 /30 | 2 | e.g. `192.168.1.241`, `.242` for `192.168.1.240/30` |
/// | IPv4 /31, /32 | 0 | none — upstream allocates nothing from a /31 (no RFC 3021 special case) |
/// | IPv4 /0, /1 | 0 | none — upstream's `RangeSize` reports 0 for these |
/// | IPv6 /128 | 0 | none |
/// | IPv6 /127 | 1 | the second (all-ones) address |
/// | IPv6 /112 | 65 535 | `::1`–`::ffff` above the network address |
/// | IPv6 /64 (any prefix ≤ /112) | 65 535 | **capped**: only network+1 ..= network+65 535 |
///
/// **IPv6 cap.** Like upstream, an IPv6 bitmap holds at most [`IPV6_MAX_RANGE_SIZE`] (65 536) entries, the first
/// being the unusable network address. For a prefix shorter than /112 only the lowest 65 535 addresses after the
/// network address are managed; every other address of the prefix is outside the range: `contains` is false,
/// `allocate` returns [`Error::OutOfRange`]. IPv4 ranges are not capped; bitmap memory is allocated lazily in
/// 512-byte chunks, so a large, sparsely used range stays cheap.
///
/// Bands follow KEP-3070 ([`ip_static_band_size`](crate::ip_static_band_size)): the lowest
/// `static_band_size()` usable addresses are left to explicit requests for as long as the rest of the range has
/// room.
///
/// A non-canonical CIDR such as `10.96.0.5/12` is truncated to its network (`10.96.0.0/12`), like Go's
/// `net.ParseCIDR`.
///
/// Concurrency: a plain `Send + Sync` value mutated through `&mut self`; share it behind a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRange {
    cidr: IpNet,
    /// Numeric value of offset 0 (network + 1).
    base: u128,
    bitmap: Bitmap,
}

impl IpRange {
    /// Creates an empty allocator for `cidr`.
    ///
    /// Errors: [`Error::InvalidRange`] for an IPv4-mapped IPv6 CIDR (`::ffff:a.b.c.d/96` and longer): use the
    /// IPv4 CIDR instead. Every other CIDR is accepted, as upstream's allocator does; see
    /// [`validate_service_cidr`] for the `--service-cluster-ip-range` size limits.
    pub fn new(cidr: IpNet) -> Result<IpRange> {
        let cidr = cidr.trunc();
        if let IpNet::V6(v6) = cidr {
            if v6.prefix_len() >= 96 && v6.network().to_ipv4_mapped().is_some() {
                return Err(Error::InvalidRange {
                    range: cidr.to_string(),
                    reason: "IPv4-mapped IPv6 ranges are not supported; use the IPv4 CIDR".into(),
                });
            }
        }
        let size = usable_size(&cidr);
        let bitmap = Bitmap::try_new(size, ip_static_band_size(&cidr))?;
        Ok(IpRange {
            cidr,
            base: ip_to_u128(cidr.network()).wrapping_add(1),
            bitmap,
        })
    }

    /// The CIDR this range covers (truncated to its network address).
    pub fn cidr(&self) -> IpNet {
        self.cidr
    }

    /// The IP family of the range.
    pub fn family(&self) -> IpFamily {
        match self.cidr {
            IpNet::V4(_) => IpFamily::V4,
            IpNet::V6(_) => IpFamily::V6,
        }
    }

    /// Whether `ip` is an allocatable address of this range (network and broadcast addresses, and IPv6 addresses
    /// beyond the cap, are not). An IPv4-mapped IPv6 address counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.offset_of(ip).is_some()
    }

    /// The bitmap offset of `ip`, if it is allocatable in this range.
    pub fn offset_of(&self, ip: IpAddr) -> Option<u64> {
        let ip = ip.to_canonical();
        if !self.cidr.contains(&ip) {
            return None;
        }
        let offset = ip_to_u128(ip).checked_sub(self.base)?;
        u64::try_from(offset)
            .ok()
            .filter(|&o| o < self.bitmap.size())
    }

    /// The address at bitmap offset `offset`, if `offset < size()`.
    pub fn ip_at(&self, offset: u64) -> Option<IpAddr> {
        (offset < self.bitmap.size()).then(|| self.ip_from_offset(offset))
    }

    /// The first allocatable address (network + 1), the one upstream gives the `default/kubernetes` Service.
    pub fn first(&self) -> Option<IpAddr> {
        self.ip_at(0)
    }

    /// The last allocatable address.
    pub fn last(&self) -> Option<IpAddr> {
        self.bitmap
            .size()
            .checked_sub(1)
            .and_then(|o| self.ip_at(o))
    }

    /// Allocates `ip`, which may be anywhere in the range (either band).
    ///
    /// Errors: [`Error::OutOfRange`] ("the provided IP (…) is not in the valid range. The range of valid IPs is
    /// …") or [`Error::AlreadyAllocated`] ("provided IP is already allocated: …").
    pub fn allocate(&mut self, ip: IpAddr) -> Result<()> {
        let Some(offset) = self.offset_of(ip) else {
            return Err(Error::OutOfRange {
                value: Value::Ip(ip),
                range: self.cidr.to_string(),
            });
        };
        if !self.bitmap.set(offset) {
            return Err(Error::AlreadyAllocated {
                value: Value::Ip(ip.to_canonical()),
                range: self.cidr.to_string(),
            });
        }
        Ok(())
    }

    /// Allocates a free address with the thread-local RNG; see [`IpRange::allocate_next_with`].
    pub fn allocate_next(&mut self) -> Result<IpAddr> {
        self.allocate_next_with(&mut rand::rng())
    }

    /// Allocates a free address: random start in the dynamic (upper) band, scan forward with wrap-around inside
    /// it; only if it is full, the static (lower) band the same way.
    ///
    /// Errors: [`Error::Full`] ("range is full: …").
    pub fn allocate_next_with<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Result<IpAddr> {
        match self.bitmap.allocate_next_with(rng) {
            Ok(offset) => Ok(self.ip_from_offset(offset)),
            Err(_) => Err(Error::Full {
                range: self.cidr.to_string(),
            }),
        }
    }

    /// Releases `ip`. Returns `true` if it was allocated; a free or out-of-range address is ignored (`false`),
    /// as upstream does.
    pub fn release(&mut self, ip: IpAddr) -> bool {
        match self.offset_of(ip) {
            Some(offset) => self.bitmap.release(offset),
            None => false,
        }
    }

    /// Whether `ip` is allocated (always false outside the range).
    pub fn is_allocated(&self, ip: IpAddr) -> bool {
        self.offset_of(ip)
            .is_some_and(|o| self.bitmap.is_allocated(o))
    }

    /// Number of allocatable addresses.
    pub fn size(&self) -> u64 {
        self.bitmap.size()
    }

    /// Number of allocated addresses.
    pub fn used(&self) -> u64 {
        self.bitmap.used()
    }

    /// Number of free addresses.
    pub fn free(&self) -> u64 {
        self.bitmap.free()
    }

    /// Number of addresses in the static (lower) band, counted from network + 1.
    pub fn static_band_size(&self) -> u64 {
        self.bitmap.static_band_size()
    }

    /// The allocated addresses, ascending.
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.bitmap.iter().map(|o| self.ip_from_offset(o))
    }

    /// The underlying bitmap (offset 0 = network + 1).
    pub fn bitmap(&self) -> &Bitmap {
        &self.bitmap
    }

    /// A snapshot: `range` is the CIDR (`10.96.0.0/12`), `data` the upstream-compatible bitmap bytes.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            range: self.cidr.to_string(),
            data: self.bitmap.to_bytes(),
        }
    }

    /// Replaces the allocation state with a snapshot of the same CIDR.
    ///
    /// Errors: [`Error::SnapshotMismatch`] if the snapshot's range is not this CIDR (compared as networks, so
    /// `10.96.0.0/12` and a non-canonical spelling of it match); [`Error::CorruptSnapshot`] if the data marks
    /// addresses outside the range. On error nothing changes.
    pub fn restore(&mut self, snapshot: &Snapshot) -> Result<()> {
        let same = snapshot.range == self.cidr.to_string()
            || snapshot
                .range
                .trim()
                .parse::<IpNet>()
                .is_ok_and(|n| n.trunc() == self.cidr);
        if !same {
            return Err(Error::SnapshotMismatch {
                expected: self.cidr.to_string(),
                found: snapshot.range.clone(),
            });
        }
        self.bitmap
            .restore_bytes_for(&snapshot.data, &self.cidr.to_string())
    }

    fn ip_from_offset(&self, offset: u64) -> IpAddr {
        let n = self.base.wrapping_add(u128::from(offset));
        match self.cidr {
            // offset < size keeps n below the broadcast address, so it fits in 32 bits.
            IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
            IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
        }
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.cidr)
    }
}

fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::BTreeSet;

    fn range(s: &str) -> IpRange {
        IpRange::new(s.parse().unwrap()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn drain(r: &mut IpRange) -> Vec<IpAddr> {
        let mut rng = StdRng::seed_from_u64(1);
        let mut out = Vec::new();
        while let Ok(ip) = r.allocate_next_with(&mut rng) {
            out.push(ip);
        }
        out.sort();
        out
    }

    #[test]
    fn slash_24_reserves_network_and_broadcast() {
        let mut r = range("10.0.0.0/24");
        assert_eq!(r.family(), IpFamily::V4);
        assert_eq!((r.size(), r.free(), r.used()), (254, 254, 0));
        assert_eq!(r.static_band_size(), 16);
        assert_eq!(r.first(), Some(ip("10.0.0.1")));
        assert_eq!(r.last(), Some(ip("10.0.0.254")));
        assert!(!r.contains(ip("10.0.0.0")));
        assert!(!r.contains(ip("10.0.0.255")));
        assert!(r.contains(ip("10.0.0.1")) && r.contains(ip("10.0.0.254")));
        assert!(!r.contains(ip("10.0.1.1")));
        assert!(!r.contains(ip("fd00::1")));
        assert_eq!(r.offset_of(ip("10.0.0.1")), Some(0));
        assert_eq!(
            r.allocate(ip("10.0.0.0")).unwrap_err().to_string(),
            "the provided IP (10.0.0.0) is not in the valid range. The range of valid IPs is 10.0.0.0/24"
        );
        assert!(matches!(
            r.allocate(ip("10.0.0.255")),
            Err(Error::OutOfRange { .. })
        ));
        r.allocate(ip("10.0.0.1")).unwrap();
        assert_eq!(
            r.allocate(ip("10.0.0.1")).unwrap_err().to_string(),
            "provided IP is already allocated: 10.0.0.1 in 10.0.0.0/24"
        );
        let all = drain(&mut r);
        assert_eq!(all.len(), 253);
        assert_eq!(r.free(), 0);
        assert_eq!(
            r.allocate_next().unwrap_err().to_string(),
            "range is full: no free values left in 10.0.0.0/24"
        );
        assert_eq!(r.iter().count(), 254);
        assert_eq!(r.iter().next(), Some(ip("10.0.0.1")));
        assert_eq!(r.iter().last(), Some(ip("10.0.0.254")));
    }

    #[test]
    fn slash_30_has_two_usable() {
        // Upstream TestAllocateSmall: 192.168.1.240/30 → .241 and .242.
        let mut r = range("192.168.1.240/30");
        assert_eq!(r.free(), 2);
        assert_eq!(r.static_band_size(), 0);
        assert_eq!(
            drain(&mut r),
            vec![ip("192.168.1.241"), ip("192.168.1.242")]
        );
        assert!(!r.contains(ip("192.168.1.240")));
        assert!(!r.contains(ip("192.168.1.243")));
    }

    #[test]
    fn slash_31_and_32_have_none() {
        // Upstream TestAllocateTiny: /32 → Free() == 0. A /31 also yields 0 (network and broadcast removed).
        for cidr in [
            "192.168.1.0/31",
            "192.168.1.1/32",
            "255.255.255.255/32",
            "0.0.0.0/32",
        ] {
            let mut r = range(cidr);
            assert_eq!((r.size(), r.free()), (0, 0), "{cidr}");
            assert!(matches!(r.allocate_next(), Err(Error::Full { .. })));
            assert_eq!(r.first(), None);
            assert_eq!(r.last(), None);
            let net = r.cidr().network();
            assert!(matches!(r.allocate(net), Err(Error::OutOfRange { .. })));
            assert!(!r.release(net));
            assert!(r.snapshot().data.is_empty());
        }
    }

    #[test]
    fn huge_ipv4_ranges_follow_upstream_range_size() {
        assert_eq!(range("10.0.0.0/8").size(), (1 << 24) - 2);
        assert_eq!(range("0.0.0.0/2").size(), (1 << 30) - 2);
        // Upstream's RangeSize is 0 for /0 and /1.
        assert_eq!(range("0.0.0.0/1").size(), 0);
        assert_eq!(range("0.0.0.0/0").size(), 0);
        let mut r = range("10.0.0.0/8");
        r.allocate(ip("10.255.255.254")).unwrap();
        assert!(r.contains(ip("10.255.255.254")) && !r.contains(ip("10.255.255.255")));
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![ip("10.255.255.254")]);
    }

    #[test]
    fn ipv6_slash_128_and_127() {
        let mut r = range("fd00::5/128");
        assert_eq!(r.family(), IpFamily::V6);
        assert_eq!(r.size(), 0);
        assert!(r.allocate_next().is_err());
        let mut r = range("fd00::4/127");
        assert_eq!(r.size(), 1);
        assert_eq!(r.allocate_next().unwrap(), ip("fd00::5"));
        let mut r = range("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128");
        assert_eq!(r.size(), 0);
        assert!(!r.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(r.allocate_next().is_err());
    }

    #[test]
    fn ipv6_slash_112_uses_whole_prefix_but_network() {
        let mut r = range("fd00:10:96::/112");
        assert_eq!(r.size(), 65535);
        assert_eq!(r.static_band_size(), 256);
        assert_eq!(r.first(), Some(ip("fd00:10:96::1")));
        assert_eq!(r.last(), Some(ip("fd00:10:96::ffff")));
        assert!(!r.contains(ip("fd00:10:96::")));
        assert!(
            r.contains(ip("fd00:10:96::ffff")),
            "IPv6 has no broadcast address"
        );
        r.allocate(ip("fd00:10:96::ffff")).unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..1000 {
            let got = r.allocate_next_with(&mut rng).unwrap();
            assert!(
                r.offset_of(got).unwrap() >= 256,
                "{got} is in the static band"
            );
        }
    }

    #[test]
    fn ipv6_slash_64_is_capped() {
        let mut r = range("2001:db8:1::/64");
        assert_eq!(r.size(), 65535);
        assert_eq!(r.static_band_size(), 256);
        assert_eq!(r.last(), Some(ip("2001:db8:1::ffff")));
        assert!(
            !r.contains(ip("2001:db8:1::1:0")),
            "beyond the 65536-entry cap"
        );
        assert!(!r.contains(ip("2001:db8:1:0:ffff:ffff:ffff:ffff")));
        assert!(matches!(
            r.allocate(ip("2001:db8:1::1:0")),
            Err(Error::OutOfRange { .. })
        ));
        let got: BTreeSet<IpAddr> = (0..500).map(|_| r.allocate_next().unwrap()).collect();
        assert_eq!(got.len(), 500);
        assert!(got.iter().all(|&i| r.contains(i)));
        assert_eq!(r.used(), 500);
    }

    #[test]
    fn ipv4_mapped_addresses_are_treated_as_ipv4() {
        let mut r = range("10.96.0.0/12");
        let mapped = ip("::ffff:10.96.0.10");
        assert!(r.contains(mapped));
        r.allocate(mapped).unwrap();
        assert!(r.is_allocated(ip("10.96.0.10")));
        assert_eq!(
            r.allocate(ip("10.96.0.10")).unwrap_err(),
            Error::AlreadyAllocated {
                value: Value::Ip(ip("10.96.0.10")),
                range: "10.96.0.0/12".into()
            }
        );
        assert!(r.release(mapped));
        assert!(IpRange::new("::ffff:10.0.0.0/104".parse().unwrap()).is_err());
    }

    #[test]
    fn non_canonical_cidr_is_truncated() {
        let r = range("10.96.0.5/12");
        assert_eq!(r.cidr().to_string(), "10.96.0.0/12");
        assert_eq!(r.to_string(), "10.96.0.0/12");
        assert_eq!(r.first(), Some(ip("10.96.0.1")));
    }

    #[test]
    fn release_and_is_allocated() {
        let mut r = range("10.96.0.0/24");
        let a = r.allocate_next().unwrap();
        assert!(r.is_allocated(a));
        assert!(r.release(a));
        assert!(!r.is_allocated(a));
        assert!(!r.release(a));
        assert!(!r.release(ip("192.168.0.1")));
        assert!(!r.release(ip("10.96.0.0")));
        assert!(!r.is_allocated(ip("10.96.0.255")));
        assert_eq!(r.used(), 0);
    }

    #[test]
    fn static_band_is_used_only_when_dynamic_is_full() {
        let mut r = range("10.0.0.0/24"); // 254 usable, band .1-.16
        let mut rng = StdRng::seed_from_u64(9);
        for _ in 0..(254 - 16) {
            let got = r.allocate_next_with(&mut rng).unwrap();
            let IpAddr::V4(v4) = got else { panic!() };
            assert!(v4.octets()[3] > 16, "{got} taken from static band early");
        }
        for _ in 0..16 {
            let IpAddr::V4(v4) = r.allocate_next_with(&mut rng).unwrap() else {
                panic!()
            };
            assert!((1..=16).contains(&v4.octets()[3]));
        }
        assert!(r.allocate_next_with(&mut rng).is_err());
    }

    #[test]
    fn explicit_allocation_may_use_static_band() {
        let mut r = range("10.96.0.0/12");
        r.allocate(ip("10.96.0.1")).unwrap();
        r.allocate(ip("10.96.0.10")).unwrap();
        assert_eq!(r.used(), 2);
    }

    #[test]
    fn snapshot_restore() {
        let mut r = range("10.96.0.0/12");
        r.allocate(ip("10.96.0.1")).unwrap();
        r.allocate(ip("10.96.0.10")).unwrap();
        for _ in 0..100 {
            r.allocate_next().unwrap();
        }
        let snap = r.snapshot();
        assert_eq!(snap.range, "10.96.0.0/12");
        // offset 0 (10.96.0.1) is the lowest bit of the big-endian integer.
        assert_eq!(snap.data.last().unwrap() & 1, 1);

        let mut fresh = range("10.96.0.0/12");
        fresh.restore(&snap).unwrap();
        assert_eq!(fresh, r);
        assert_eq!(
            fresh.iter().collect::<Vec<_>>(),
            r.iter().collect::<Vec<_>>()
        );

        let mut other = range("10.97.0.0/16");
        assert_eq!(
            other.restore(&snap).unwrap_err().to_string(),
            "the snapshot's range \"10.96.0.0/12\" does not match the current range \"10.97.0.0/16\""
        );
        let mut v6 = range("fd00::/112");
        assert!(matches!(
            v6.restore(&snap),
            Err(Error::SnapshotMismatch { .. })
        ));

        // Data marking the broadcast address (offset 254 in a /24) is corrupt.
        let mut small = range("10.0.0.0/24");
        let mut data = vec![0u8; 32];
        data[0] = 0x40; // bit 254
        let err = small
            .restore(&Snapshot {
                range: "10.0.0.0/24".into(),
                data,
            })
            .unwrap_err();
        assert!(matches!(err, Error::CorruptSnapshot { .. }));
        assert!(err.to_string().contains("10.0.0.0/24"), "{err}");
        // bit 253 (10.0.0.254) is fine
        let mut data = vec![0u8; 32];
        data[0] = 0x20;
        small
            .restore(&Snapshot {
                range: "10.0.0.0/24".into(),
                data,
            })
            .unwrap();
        assert_eq!(small.iter().collect::<Vec<_>>(), vec![ip("10.0.0.254")]);
    }

    #[test]
    fn restore_accepts_equivalent_cidr_spelling() {
        let mut r = range("fd00:0:0:0::/112");
        let snap = Snapshot {
            range: "fd00:0000::/112".into(),
            data: vec![1],
        };
        r.restore(&snap).unwrap();
        assert!(r.is_allocated(ip("fd00::1")));
    }

    #[test]
    fn validate_service_cidr_matches_flag_rules() {
        let ok = [
            "10.96.0.0/12",
            "10.0.0.0/24",
            "10.0.0.0/29",
            "fd00::/108",
            "fd00::/112",
            "fd00::/125",
        ];
        for c in ok {
            validate_service_cidr(&c.parse().unwrap()).unwrap_or_else(|e| panic!("{c}: {e}"));
        }
        assert_eq!(
            validate_service_cidr(&"10.92.0.0/8".parse().unwrap()).unwrap_err().to_string(),
            "specified --service-cluster-ip-range is too large; for 32-bit addresses, the mask must be >= 12 (got 10.92.0.0/8)"
        );
        assert_eq!(
            validate_service_cidr(&"3000::/64".parse().unwrap()).unwrap_err().to_string(),
            "specified --service-cluster-ip-range is too large; for 128-bit addresses, the mask must be >= 108 (got 3000::/64)"
        );
        assert!(matches!(
            validate_service_cidr(&"10.96.0.0/11".parse().unwrap()),
            Err(Error::ServiceCidrTooLarge { min_prefix: 12, .. })
        ));
        for c in ["10.0.0.0/30", "10.0.0.0/32", "fd00::/126"] {
            let err = validate_service_cidr(&c.parse().unwrap()).unwrap_err();
            assert!(matches!(err, Error::ServiceCidrTooSmall { .. }), "{c}");
            assert!(err
                .to_string()
                .starts_with("the service cluster IP range must be at least 8 IP addresses"));
        }
        // The allocator itself accepts what the flag rejects, as upstream's does.
        assert_eq!(range("10.0.0.0/8").size(), (1 << 24) - 2);
    }
}
