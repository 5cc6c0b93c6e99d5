//! LoadBalancer IPs from [`crds::LoadBalancerIPPool`]s: which Services we
//! serve, which addresses they ask for, which pools may serve them, and when two Services may
//! share an address (MetalLB semantics: same `svcnet.io/sharing-key`, no port/protocol used by
//! both).

use std::collections::BTreeMap;
use std::net::IpAddr;

use crds::{LoadBalancerIPPool, LoadBalancerIPPoolSpec};
use ipnet::IpNet;

use super::PlanError;
use crate::ipam::svc_view::{
    family_of, Family, SvcType, SvcView, LB_CLASS, LB_IPS_ANNOTATION, LB_POOL_ANNOTATION,
    SHARING_KEY_ANNOTATION,
};

/// Whether svcnet assigns LoadBalancer IPs to this Service: type LoadBalancer and class
/// `svcnet.io/lb`, or no class when svcnet is the default class.
pub fn handles(svc: &SvcView, default_class: bool) -> bool {
    svc.type_ == SvcType::LoadBalancer
        && match svc.lb_class.as_deref() {
            Some(c) => c == LB_CLASS,
            None => default_class,
        }
}

/// Addresses the Service asks for: the `svcnet.io/load-balancer-ips` annotation (comma-separated,
/// at most one per family) if present, else `spec.loadBalancerIP`.
pub fn requested_ips(svc: &SvcView) -> Result<Vec<IpAddr>, PlanError> {
    let (field, text) = match svc.annotations.get(LB_IPS_ANNOTATION) {
        Some(v) => (
            format!("metadata.annotations[{LB_IPS_ANNOTATION}]"),
            v.as_str(),
        ),
        None => match &svc.load_balancer_ip {
            Some(v) => ("spec.loadBalancerIP".to_string(), v.as_str()),
            None => return Ok(vec![]),
        },
    };
    let mut ips: Vec<IpAddr> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let ip: IpAddr = part.parse().map_err(|_| {
            PlanError::invalid(&field, text, format!("{part:?} is not a valid IP address"))
                .reason("LoadBalancerIPNotValid")
        })?;
        if ips.iter().any(|o| family_of(*o) == family_of(ip)) {
            return Err(PlanError::invalid(
                &field,
                text,
                "may specify no more than one IP for each IP family",
            )
            .reason("LoadBalancerIPNotValid"));
        }
        ips.push(ip);
    }
    Ok(ips)
}

/// The sharing key of a Service, if it has a non-empty one.
pub fn sharing_key(svc: &SvcView) -> Option<&str> {
    svc.annotations
        .get(SHARING_KEY_ANNOTATION)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// `(port, protocol)` pairs a Service exposes on its LoadBalancer IP.
pub fn lb_ports(svc: &SvcView) -> Vec<(i32, String)> {
    svc.ports
        .iter()
        .map(|p| (p.port, p.protocol.clone()))
        .collect()
}

/// Whether a Service (`key`, `ports`) may join an address held by Services with `holder_key`
/// exposing `holder_ports`. `Err` explains why not.
pub fn can_share(
    key: Option<&str>,
    ports: &[(i32, String)],
    holder_key: Option<&str>,
    holder_ports: &[(i32, String)],
) -> Result<(), String> {
    match (key, holder_key) {
        (Some(a), Some(b)) if a == b => {}
        (None, _) => return Err("the Service has no sharing key".to_string()),
        (Some(a), Some(b)) => return Err(format!("sharing key {a:?} differs from {b:?}")),
        (Some(_), None) => {
            return Err("the address is held by a Service without a sharing key".to_string())
        }
    }
    if let Some((port, proto)) = ports.iter().find(|p| holder_ports.contains(p)) {
        return Err(format!(
            "port {port}/{proto} is already used on that address"
        ));
    }
    Ok(())
}

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

fn from_u128(family: Family, n: u128) -> Option<IpAddr> {
    match family {
        Family::V4 => u32::try_from(n)
            .ok()
            .map(|v| IpAddr::V4(std::net::Ipv4Addr::from(v))),
        Family::V6 => Some(IpAddr::V6(std::net::Ipv6Addr::from(n))),
    }
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

    /// Number of usable addresses (overlapping ranges inside one pool count once per range).
    pub fn size(&self) -> u128 {
        self.ranges
            .iter()
            .map(|(a, b)| {
                let total = to_u128(*b) - to_u128(*a) + 1;
                if !self.spec.avoid_buggy_ips || family_of(*a) == Family::V6 {
                    return total;
                }
                // Addresses ending in .0 or .255, counted arithmetically (a /8 has 131,072).
                let upto = |x: u128, r: u128| if x < r { 0 } else { (x - r) / 256 + 1 };
                let in_range = |r: u128| {
                    let (lo, hi) = (to_u128(*a), to_u128(*b));
                    upto(hi, r) - if lo == 0 { 0 } else { upto(lo - 1, r) }
                };
                total - in_range(0) - in_range(255)
            })
            .sum()
    }

    /// First usable address of `family` for which `taken` is false, in spec order.
    pub fn first_free(&self, family: Family, taken: impl Fn(IpAddr) -> bool) -> Option<IpAddr> {
        for (a, b) in self.ranges.iter().filter(|(a, _)| family_of(*a) == family) {
            let (mut n, end) = (to_u128(*a), to_u128(*b));
            while n <= end {
                let ip = from_u128(family, n)?;
                if self.usable(ip) && !taken(ip) {
                    return Some(ip);
                }
                n += 1;
            }
        }
        None
    }

    /// Whether the pool may serve `svc` living in a namespace with `ns_labels`.
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
            && svc
                .annotations
                .get(LB_POOL_ANNOTATION)
                .is_none_or(|p| *p == self.name)
    }
}

/// Pools that may serve `svc`, by name (a stable order, so every replica picks alike).
pub fn eligible_pools<'a>(
    svc: &SvcView,
    ns_labels: &BTreeMap<String, String>,
    pools: &'a [PoolView],
) -> Vec<&'a PoolView> {
    let mut v: Vec<&PoolView> = pools
        .iter()
        .filter(|p| p.errors.is_empty() && p.serves(svc, ns_labels))
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
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

/// The families a served Service wants LoadBalancer IPs for: the requested addresses' families
/// when it requests some, else its `ipFamilies` (from the ClusterIP plan) that some eligible pool
/// offers — all of them for RequireDualStack.
pub fn wanted_families(
    requested: &[IpAddr],
    families: &[Family],
    pools: &[&PoolView],
) -> Vec<Family> {
    if !requested.is_empty() {
        return requested.iter().map(|ip| family_of(*ip)).collect();
    }
    let offered: Vec<Family> = families
        .iter()
        .copied()
        .filter(|f| pools.iter().any(|p| p.has_family(*f)))
        .collect();
    if offered.is_empty() {
        // Nothing offers any family: ask for the primary so the error names it.
        families.iter().take(1).copied().collect()
    } else {
        offered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::svc_view::fixtures::svc;
    use crds::{AddressRange, LabelSelector};

    fn pool(name: &str, cidrs: &[&str], ranges: &[(&str, &str)]) -> LoadBalancerIPPool {
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn class_selection() {
        let lb = svc("a").typ(SvcType::LoadBalancer);
        assert!(handles(&lb, true));
        assert!(!handles(&lb, false));
        assert!(handles(&lb.clone().class(LB_CLASS), false));
        assert!(!handles(&lb.clone().class("metallb.io/x"), true));
        assert!(!handles(&svc("a").typ(SvcType::NodePort), true));
    }

    #[test]
    fn requested_ips_from_annotation_or_field() {
        let s = svc("a").lb_ip("192.0.2.10");
        assert_eq!(requested_ips(&s).unwrap(), vec![ip("192.0.2.10")]);
        let s = s.annotate(LB_IPS_ANNOTATION, "192.0.2.11, 2001:db8::11");
        assert_eq!(
            requested_ips(&s).unwrap(),
            vec![ip("192.0.2.11"), ip("2001:db8::11")]
        );
        let bad = svc("a").annotate(LB_IPS_ANNOTATION, "192.0.2.1,192.0.2.2");
        assert!(requested_ips(&bad)
            .unwrap_err()
            .message
            .contains("no more than one IP for each IP family"));
        let bad = svc("a").lb_ip("nope");
        assert!(requested_ips(&bad).is_err());
        assert!(requested_ips(&svc("a")).unwrap().is_empty());
    }

    #[test]
    fn sharing_rules() {
        let p80 = vec![(80, "TCP".to_string())];
        let p443 = vec![(443, "TCP".to_string())];
        let u80 = vec![(80, "UDP".to_string())];
        assert!(can_share(Some("k"), &p443, Some("k"), &p80).is_ok());
        assert!(can_share(Some("k"), &u80, Some("k"), &p80).is_ok());
        assert!(can_share(Some("k"), &p80, Some("k"), &p80)
            .unwrap_err()
            .contains("80/TCP"));
        assert!(can_share(Some("k"), &p443, Some("j"), &p80).is_err());
        assert!(can_share(None, &p443, Some("k"), &p80).is_err());
        assert!(can_share(Some("k"), &p443, None, &p80).is_err());
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
    }

    #[test]
    fn pool_selection_by_selectors_disable_and_annotation() {
        let mut a = pool("a", &["192.0.2.0/28"], &[]);
        a.spec.service_selector = Some(LabelSelector {
            match_labels: [("tier".to_string(), "edge".to_string())].into(),
            ..Default::default()
        });
        let mut b = pool("b", &["198.51.100.0/28"], &[]);
        b.spec.namespace_selector = Some(LabelSelector {
            match_labels: [("team".to_string(), "net".to_string())].into(),
            ..Default::default()
        });
        let mut c = pool("c", &["203.0.113.0/28"], &[]);
        c.spec.disabled = true;
        let d = pool("d", &["bad"], &[]);
        let pools: Vec<PoolView> = [a, b, c, d].iter().map(PoolView::from_pool).collect();
        let none = BTreeMap::new();
        let team: BTreeMap<String, String> = [("team".to_string(), "net".to_string())].into();
        let names = |s: &SvcView, ns: &BTreeMap<String, String>| -> Vec<String> {
            eligible_pools(s, ns, &pools)
                .iter()
                .map(|p| p.name.clone())
                .collect()
        };
        assert!(names(&svc("x"), &none).is_empty());
        assert_eq!(names(&svc("x").label("tier", "edge"), &none), ["a"]);
        assert_eq!(names(&svc("x").label("tier", "edge"), &team), ["a", "b"]);
        assert_eq!(
            names(
                &svc("x")
                    .label("tier", "edge")
                    .annotate(LB_POOL_ANNOTATION, "b"),
                &team
            ),
            ["b"]
        );
    }

    #[test]
    fn overlap_detection_and_families() {
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

        let refs: Vec<&PoolView> = pools.iter().collect();
        assert_eq!(
            wanted_families(&[], &[Family::V4, Family::V6], &refs),
            vec![Family::V4, Family::V6]
        );
        assert_eq!(
            wanted_families(&[], &[Family::V6, Family::V4], &refs[..1]),
            vec![Family::V4]
        );
        assert_eq!(
            wanted_families(&[ip("2001:db8::5")], &[Family::V4], &refs),
            vec![Family::V6]
        );
    }
}
