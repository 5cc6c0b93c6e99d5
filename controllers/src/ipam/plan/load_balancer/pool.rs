//! A [`LoadBalancerIPPool`], parsed: its address ranges, their size, membership and the first
//! free address, and which Services it serves.
//!
//! Addresses are handled as `u128` (IPv4 in the low 32 bits). Sizes saturate at `u128::MAX`: a
//! pool holding `::/0` has 2^128 addresses, one more than a `u128` counts, and nobody needs the
//! exact number of an inexhaustible pool.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crds::{LoadBalancerIPPool, LoadBalancerIPPoolSpec};
use ipnet::IpNet;

use super::pool_annotation;
use crate::ipam::svc_view::{family_of, Family, SvcView};

/// A pool, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolView {
    /// Pool name.
    pub name: String,
    /// Inclusive ranges (from both `cidrs` and `ranges`), in spec order.
    pub ranges: Vec<(IpAddr, IpAddr)>,
    /// The spec (selectors, switches).
    pub spec: LoadBalancerIPPoolSpec,
    /// Entries that did not parse.
    pub errors: Vec<String>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address `n` of `family`; `None` when `n` does not fit an IPv4 address.
fn from_u128(family: Family, n: u128) -> Option<IpAddr> {
    match family {
        Family::V4 => u32::try_from(n).ok().map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        Family::V6 => Some(IpAddr::V6(Ipv6Addr::from(n))),
    }
}

/// IPv4 addresses ending in `.0` or `.255` within `lo..=hi`, counted arithmetically (a /8 has
/// 131,072 of them). Both ends are IPv4 values, so nothing here comes near `u128`'s limits.
fn buggy_in(lo: u128, hi: u128) -> u128 {
    // Addresses ≤ x whose last octet is r.
    let upto = |x: u128, r: u128| if x < r { 0 } else { (x - r) / 256 + 1 };
    let in_range = |r: u128| upto(hi, r) - if lo == 0 { 0 } else { upto(lo - 1, r) };
    in_range(0) + in_range(255)
}

impl PoolView {
    /// Parses a pool object; entries that do not parse are collected in `errors`.
    pub fn from_pool(pool: &LoadBalancerIPPool) -> PoolView {
        let mut ranges = Vec::new();
        let mut errors = Vec::new();
        for c in &pool.spec.cidrs {
            match c.parse::<IpNet>() {
                Ok(net) => ranges.push((net.network(), net.broadcast())),
                Err(e) => errors.push(format!("cidr {c:?}: {e}")),
            }
        }
        for r in &pool.spec.ranges {
            match (r.start.parse::<IpAddr>(), r.stop.parse::<IpAddr>()) {
                (Ok(a), Ok(b)) if family_of(a) != family_of(b) => errors.push(format!(
                    "range {}-{}: start and stop are of different families",
                    r.start, r.stop
                )),
                (Ok(a), Ok(b)) if to_u128(a) > to_u128(b) => {
                    errors.push(format!("range {}-{}: start is after stop", r.start, r.stop))
                }
                (Ok(a), Ok(b)) => ranges.push((a, b)),
                _ => errors.push(format!(
                    "range {}-{}: not a pair of IP addresses",
                    r.start, r.stop
                )),
            }
        }
        PoolView {
            name: pool.metadata.name.clone().unwrap_or_default(),
            ranges,
            spec: pool.spec.clone(),
            errors,
            generation: pool.metadata.generation,
        }
    }

    fn usable(&self, ip: IpAddr) -> bool {
        !(self.spec.avoid_buggy_ips
            && matches!(ip, IpAddr::V4(v4) if matches!(v4.octets()[3], 0 | 255)))
    }

    /// Whether `ip` is a usable address of this pool.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let n = to_u128(ip);
        self.usable(ip)
            && self.ranges.iter().any(|(a, b)| {
                family_of(*a) == family_of(ip) && to_u128(*a) <= n && n <= to_u128(*b)
            })
    }

    /// Whether the pool has addresses of `family`.
    pub fn has_family(&self, family: Family) -> bool {
        self.ranges.iter().any(|(a, _)| family_of(*a) == family)
    }

    /// Number of usable addresses (overlapping ranges inside one pool count once per range),
    /// saturating at `u128::MAX`: `::/0` alone has 2^128.
    pub fn size(&self) -> u128 {
        self.ranges
            .iter()
            .map(|(a, b)| {
                let (lo, hi) = (to_u128(*a), to_u128(*b));
                let total = (hi - lo).saturating_add(1);
                if self.spec.avoid_buggy_ips && family_of(*a) == Family::V4 {
                    // At most 2^32 here, so `total` is exact and holds every buggy address.
                    total - buggy_in(lo, hi)
                } else {
                    total
                }
            })
            .fold(0, u128::saturating_add)
    }

    /// First usable address of `family` for which `taken` is false, in spec order.
    pub fn first_free(&self, family: Family, taken: impl Fn(IpAddr) -> bool) -> Option<IpAddr> {
        for (a, b) in self.ranges.iter().filter(|(a, _)| family_of(*a) == family) {
            let (mut n, end) = (to_u128(*a), to_u128(*b));
            // Ranges of `family` hold only addresses of it; a value that is not one would end
            // the range rather than the search.
            while let Some(ip) = from_u128(family, n) {
                if self.usable(ip) && !taken(ip) {
                    return Some(ip);
                }
                // Stop at the last address before stepping: `end` may be `u128::MAX`.
                if n >= end {
                    break;
                }
                n += 1;
            }
        }
        None
    }

    /// Whether the pool may serve `svc` living in a namespace with `ns_labels`: enabled, both
    /// selectors match, and the pool the Service names (if any) is this one. `autoAssign` is
    /// not checked here (see [`super::eligible_pools`]).
    pub fn serves(&self, svc: &SvcView, ns_labels: &BTreeMap<String, String>) -> bool {
        !self.spec.disabled
            && self
                .spec
                .service_selector
                .as_ref()
                .is_none_or(|s| s.matches(&svc.labels))
            && self
                .spec
                .namespace_selector
                .as_ref()
                .is_none_or(|s| s.matches(ns_labels))
            && pool_annotation(svc).is_none_or(|p| p == self.name)
    }

    /// Where the pool comes in the order pools are tried, as MetalLB orders them: pools with a
    /// priority first, lowest value first; then pools without one that select Services by
    /// namespace or labels; then the rest. A priority of 0 counts as none, as in MetalLB (whose
    /// field cannot tell 0 from unset). Ties are broken by name by the caller.
    pub fn rank(&self) -> (u8, i32) {
        match self.spec.priority.filter(|p| *p > 0) {
            Some(p) => (0, p),
            None if self.spec.service_selector.is_some()
                || self.spec.namespace_selector.is_some() =>
            {
                (1, 0)
            }
            None => (2, 0),
        }
    }
}

/// Pairs of pools whose address ranges overlap (reported as a condition on both).
pub fn overlaps(pools: &[PoolView]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, a) in pools.iter().enumerate() {
        for b in &pools[i + 1..] {
            let hit = a.ranges.iter().any(|(a1, a2)| {
                b.ranges.iter().any(|(b1, b2)| {
                    family_of(*a1) == family_of(*b1)
                        && to_u128(*a1) <= to_u128(*b2)
                        && to_u128(*b1) <= to_u128(*a2)
                })
            });
            if hit {
                out.push((a.name.clone(), b.name.clone()));
            }
        }
    }
    out
}

/// Whether any pool range overlaps `net` (e.g. the Service CIDR).
pub fn overlaps_net(pool: &PoolView, net: &IpNet) -> bool {
    let (n1, n2) = (to_u128(net.network()), to_u128(net.broadcast()));
    pool.ranges.iter().any(|(a, b)| {
        family_of(*a) == family_of(net.network()) && to_u128(*a) <= n2 && n1 <= to_u128(*b)
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crds::AddressRange;

    pub(crate) fn pool(name: &str, cidrs: &[&str], ranges: &[(&str, &str)]) -> LoadBalancerIPPool {
        LoadBalancerIPPool::new(
            name,
            LoadBalancerIPPoolSpec {
                cidrs: cidrs.iter().map(|s| s.to_string()).collect(),
                ranges: ranges
                    .iter()
                    .map(|(a, b)| AddressRange {
                        start: a.to_string(),
                        stop: b.to_string(),
                    })
                    .collect(),
                ..Default::default()
            },
        )
    }

    pub(crate) fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn pools_parse_and_report_errors() {
        let p = PoolView::from_pool(&pool(
            "p",
            &["192.0.2.0/30", "bad"],
            &[
                ("198.51.100.10", "198.51.100.12"),
                ("10.0.0.5", "10.0.0.1"),
                ("10.0.0.1", "fd00::1"),
            ],
        ));
        assert_eq!(p.ranges.len(), 2);
        assert_eq!(p.errors.len(), 3, "{:?}", p.errors);
        assert_eq!(p.size(), 4 + 3);
        assert!(p.contains(ip("192.0.2.0")));
        assert!(p.contains(ip("198.51.100.12")));
        assert!(!p.contains(ip("198.51.100.13")));
        assert_eq!(p.first_free(Family::V4, |_| false), Some(ip("192.0.2.0")));
        assert_eq!(
            p.first_free(Family::V4, |i| i != ip("198.51.100.11")),
            Some(ip("198.51.100.11"))
        );
        assert_eq!(p.first_free(Family::V6, |_| false), None);
        assert_eq!(p.first_free(Family::V4, |_| true), None);
    }

    #[test]
    fn avoid_buggy_ips() {
        let mut raw = pool("p", &["192.0.2.0/24"], &[]);
        raw.spec.avoid_buggy_ips = true;
        let p = PoolView::from_pool(&raw);
        assert_eq!(p.size(), 254);
        let mut big = pool("big", &["10.0.0.0/8"], &[("192.0.2.250", "192.0.3.5")]);
        big.spec.avoid_buggy_ips = true;
        // /8: 65,536 blocks of 256, two buggy each; the range .250–.5 spans .255 and .0.
        assert_eq!(
            PoolView::from_pool(&big).size(),
            (1 << 24) - 2 * 65_536 + 12 - 2
        );
        assert!(!p.contains(ip("192.0.2.0")) && !p.contains(ip("192.0.2.255")));
        assert_eq!(p.first_free(Family::V4, |_| false), Some(ip("192.0.2.1")));
        // The whole IPv4 space, and IPv6 (never buggy) alongside it.
        let mut all = pool("all", &["0.0.0.0/0", "2001:db8::/126"], &[]);
        all.spec.avoid_buggy_ips = true;
        assert_eq!(
            PoolView::from_pool(&all).size(),
            (1 << 32) - 2 * (1 << 24) + 4
        );
    }

    #[test]
    fn sizes_saturate_instead_of_overflowing() {
        let whole_v6 = PoolView::from_pool(&pool("v6", &["::/0"], &[]));
        assert_eq!(whole_v6.size(), u128::MAX);
        let both = PoolView::from_pool(&pool("both", &["0.0.0.0/0", "::/0"], &[]));
        assert_eq!(both.size(), u128::MAX);
        // Two ranges that are each representable but sum past 2^128.
        let halves = PoolView::from_pool(&pool(
            "halves",
            &["::/1", "8000::/1", "2001:db8::/64"],
            &[("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe")],
        ));
        assert!(halves.errors.is_empty(), "{:?}", halves.errors);
        assert_eq!(halves.size(), u128::MAX);
        let just_fits = PoolView::from_pool(&pool(
            "fits",
            &[],
            &[("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe")],
        ));
        assert_eq!(just_fits.size(), u128::MAX);
        let v4_all = PoolView::from_pool(&pool("v4", &["0.0.0.0/0"], &[]));
        assert_eq!(v4_all.size(), 1 << 32);
        // The pool still answers everything else about such ranges.
        assert!(whole_v6.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert_eq!(whole_v6.first_free(Family::V6, |_| false), Some(ip("::")));
        assert_eq!(
            both.first_free(Family::V4, |i| i != ip("0.0.0.7")),
            Some(ip("0.0.0.7"))
        );
    }

    #[test]
    fn first_free_stops_at_the_last_address() {
        // Ranges ending at the very last address of each family: scanning past them must end the
        // range, not overflow (IPv6) or leave the family (IPv4).
        let top = PoolView::from_pool(&pool(
            "top",
            &[
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffc/126",
                "255.255.255.252/30",
            ],
            &[],
        ));
        assert_eq!(top.first_free(Family::V6, |_| true), None);
        assert_eq!(top.first_free(Family::V4, |_| true), None);
        assert_eq!(
            top.first_free(Family::V6, |i| i
                != ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            Some(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
        );
        assert_eq!(
            top.first_free(Family::V4, |i| i != ip("255.255.255.255")),
            Some(ip("255.255.255.255"))
        );
        // A full first range moves on to the next one of the family.
        let two = PoolView::from_pool(&pool("two", &["::/127", "2001:db8::/127"], &[]));
        assert_eq!(
            two.first_free(Family::V6, |i| i == ip("::") || i == ip("::1")),
            Some(ip("2001:db8::"))
        );
        assert_eq!(from_u128(Family::V4, 1 << 32), None);
        assert_eq!(
            from_u128(Family::V6, u128::MAX),
            Some(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
        );
    }

    #[test]
    fn overlap_detection() {
        let pools: Vec<PoolView> = [
            pool("a", &["192.0.2.0/28"], &[]),
            pool("b", &[], &[("192.0.2.15", "192.0.2.20")]),
            pool("c", &["2001:db8::/120"], &[]),
            pool("d", &["192.0.2.16/28"], &[]),
        ]
        .iter()
        .map(PoolView::from_pool)
        .collect();
        assert_eq!(
            overlaps(&pools),
            vec![("a".into(), "b".into()), ("b".into(), "d".into())]
        );
        assert!(overlaps_net(&pools[0], &"192.0.2.8/29".parse().unwrap()));
        assert!(!overlaps_net(&pools[2], &"192.0.2.0/24".parse().unwrap()));
        let huge = PoolView::from_pool(&pool("huge", &["::/0"], &[]));
        assert!(overlaps_net(&huge, &"fd00::/108".parse().unwrap()));
    }
}
