//! The ClusterIP ranges addresses are handed out of: one bitmap per CIDR, each marked ready or
//! not. The set comes from `--service-cluster-ip-range` or, where the API serves them, from the
//! `ServiceCIDR` objects, and changes at run time.
//!
//! Rules (those of kube-apiserver's ServiceCIDR allocator):
//! * a new address — picked or requested — comes only from a *ready* range: one whose
//!   ServiceCIDR is not being deleted and whose `Ready` condition is not `False`;
//! * addresses already held stay valid whatever happens to their range;
//! * ranges may overlap (a /24 inside a /16, or the same CIDR in two objects): a held address is
//!   marked in every range containing it, so no range offers it again.

use std::net::IpAddr;

use ipam::IpRange;
use ipnet::IpNet;

use crate::ipam::svc_view::Family;

/// One CIDR's allocator.
#[derive(Debug, Clone)]
struct Range {
    alloc: IpRange,
    ready: bool,
}

/// What a ServiceCIDR contributes: a CIDR and whether new addresses may come out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeSpec {
    /// The CIDR (network address, no host bits).
    pub cidr: IpNet,
    /// New addresses may be allocated from it.
    pub ready: bool,
}

/// The set of ranges.
#[derive(Debug, Clone, Default)]
pub struct ClusterRanges {
    ranges: Vec<Range>,
}

impl ClusterRanges {
    /// Ranges for `specs` (in order; the same CIDR given twice is one range, ready if any is).
    /// `held` are the addresses already taken.
    pub fn new(
        specs: &[RangeSpec],
        held: impl IntoIterator<Item = IpAddr>,
    ) -> Result<Self, ipam::Error> {
        let mut out = ClusterRanges::default();
        out.set(specs, held)?;
        Ok(out)
    }

    /// Replaces the set with `specs`: allocators of CIDRs still present are kept as they are
    /// (with the new readiness), new CIDRs get an allocator with every `held` address marked,
    /// CIDRs no longer present are dropped. On an invalid CIDR nothing changes.
    pub fn set(
        &mut self,
        specs: &[RangeSpec],
        held: impl IntoIterator<Item = IpAddr>,
    ) -> Result<(), ipam::Error> {
        let mut next: Vec<Range> = Vec::with_capacity(specs.len());
        let mut fresh = Vec::new();
        for spec in specs {
            let cidr = spec.cidr.trunc();
            if let Some(r) = next.iter_mut().find(|r| r.alloc.cidr() == cidr) {
                r.ready |= spec.ready;
                continue;
            }
            match self.ranges.iter().find(|r| r.alloc.cidr() == cidr) {
                Some(r) => next.push(Range {
                    alloc: r.alloc.clone(),
                    ready: spec.ready,
                }),
                None => {
                    fresh.push(next.len());
                    next.push(Range {
                        alloc: IpRange::new(cidr)?,
                        ready: spec.ready,
                    });
                }
            }
        }
        if !fresh.is_empty() {
            for ip in held {
                for &i in &fresh {
                    let r = &mut next[i].alloc;
                    if r.contains(ip) && !r.is_allocated(ip) {
                        let _ = r.allocate(ip);
                    }
                }
            }
        }
        self.ranges = next;
        Ok(())
    }

    /// Whether a new claim on `ip` may be made: some ready range contains it.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.ready && r.alloc.contains(ip))
    }

    /// Marks `ip` taken in every range containing it.
    pub fn mark(&mut self, ip: IpAddr) {
        for r in &mut self.ranges {
            if r.alloc.contains(ip) && !r.alloc.is_allocated(ip) {
                let _ = r.alloc.allocate(ip);
            }
        }
    }

    /// Marks `ip` free in every range containing it.
    pub fn unmark(&mut self, ip: IpAddr) {
        for r in &mut self.ranges {
            r.alloc.release(ip);
        }
    }

    /// Picks a free address of `family` from the first ready range that has one (upstream's
    /// band-aware random scan within that range) and marks it in every range containing it.
    pub fn allocate_next(&mut self, family: Family) -> Result<IpAddr, ipam::Error> {
        let mut any = false;
        for i in 0..self.ranges.len() {
            let r = &mut self.ranges[i];
            if !r.ready || r.alloc.family() != family {
                continue;
            }
            any = true;
            match r.alloc.allocate_next() {
                Ok(ip) => {
                    self.mark(ip);
                    return Ok(ip);
                }
                Err(ipam::Error::Full { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        if any {
            Err(ipam::Error::Full {
                range: self.cidrs(family).join(","),
            })
        } else {
            Err(ipam::Error::InvalidRange {
                range: family.to_string(),
                reason: "no ready Service CIDR of this family".to_string(),
            })
        }
    }

    /// The ready CIDRs of `family`, as text (for messages).
    pub fn cidrs(&self, family: Family) -> Vec<String> {
        self.ranges
            .iter()
            .filter(|r| r.ready && r.alloc.family() == family)
            .map(|r| r.alloc.cidr().to_string())
            .collect()
    }

    /// The CIDRs and their readiness, in order (to tell whether a change changed anything).
    pub fn specs(&self) -> Vec<RangeSpec> {
        self.ranges
            .iter()
            .map(|r| RangeSpec {
                cidr: r.alloc.cidr(),
                ready: r.ready,
            })
            .collect()
    }

    /// Every allocator (for size / usage metrics).
    pub fn iter(&self) -> impl Iterator<Item = &IpRange> {
        self.ranges.iter().map(|r| &r.alloc)
    }

    /// The families that have a ready range.
    pub fn families(&self) -> Vec<Family> {
        let mut out = Vec::new();
        for r in self.ranges.iter().filter(|r| r.ready) {
            let f = r.alloc.family();
            if !out.contains(&f) {
                out.push(f);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(c: &str, ready: bool) -> RangeSpec {
        RangeSpec {
            cidr: c.parse().unwrap(),
            ready,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn new_addresses_come_only_from_ready_ranges() {
        let mut r = ClusterRanges::new(&[spec("10.0.0.0/29", true)], []).unwrap();
        assert!(r.allows(ip("10.0.0.3")));
        assert!(!r.allows(ip("10.1.0.3")));
        // A second range added at run time; the first one starts terminating.
        r.set(&[spec("10.0.0.0/29", false), spec("10.1.0.0/29", true)], [])
            .unwrap();
        assert!(!r.allows(ip("10.0.0.3")));
        assert!(r.allows(ip("10.1.0.3")));
        for _ in 0..6 {
            let got = r.allocate_next(Family::V4).unwrap();
            assert!(got.to_string().starts_with("10.1.0."), "{got}");
        }
        assert!(matches!(
            r.allocate_next(Family::V4),
            Err(ipam::Error::Full { .. })
        ));
        assert!(matches!(
            r.allocate_next(Family::V6),
            Err(ipam::Error::InvalidRange { .. })
        ));
        assert_eq!(r.cidrs(Family::V4), vec!["10.1.0.0/29".to_string()]);
        assert_eq!(r.families(), vec![Family::V4]);
    }

    #[test]
    fn overlapping_ranges_never_offer_a_held_address_twice() {
        let held = [ip("10.0.0.1"), ip("10.0.0.2")];
        // A /29 inside a /28: every address picked from one is marked in the other.
        let mut r = ClusterRanges::new(
            &[spec("10.0.0.0/29", true), spec("10.0.0.0/28", true)],
            held,
        )
        .unwrap();
        let mut seen: Vec<IpAddr> = held.to_vec();
        while let Ok(a) = r.allocate_next(Family::V4) {
            assert!(!seen.contains(&a), "{a} handed out twice");
            seen.push(a);
        }
        // /28 has 14 usable addresses; all of them are taken exactly once.
        assert_eq!(seen.len(), 14);
        // Releasing frees it in both.
        r.unmark(ip("10.0.0.3"));
        assert_eq!(r.allocate_next(Family::V4).unwrap(), ip("10.0.0.3"));
    }

    #[test]
    fn kept_ranges_keep_their_marks_and_new_ones_learn_the_held_addresses() {
        let mut r = ClusterRanges::new(&[spec("10.0.0.0/30", true)], []).unwrap();
        // /30: two usable addresses.
        let a = r.allocate_next(Family::V4).unwrap();
        let b = r.allocate_next(Family::V4).unwrap();
        assert_ne!(a, b);
        // Same CIDR twice = one range, ready if either is.
        r.set(
            &[spec("10.0.0.0/30", false), spec("10.0.0.0/30", true)],
            [a, b],
        )
        .unwrap();
        assert!(matches!(
            r.allocate_next(Family::V4),
            Err(ipam::Error::Full { .. })
        ));
        // Dropped and re-added: rebuilt from the held addresses.
        r.set(&[], [a, b]).unwrap();
        assert!(!r.allows(a));
        r.set(&[spec("10.0.0.0/30", true)], [a]).unwrap();
        assert_eq!(r.allocate_next(Family::V4).unwrap(), b);
    }
}
