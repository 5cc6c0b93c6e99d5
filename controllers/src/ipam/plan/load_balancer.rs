//! LoadBalancer IPs from [`crds::LoadBalancerIPPool`]s: which Services we serve, which addresses
//! they ask for, which pools may serve them and in what order (`pool`), and when two Services
//! may share an address (`sharing`, MetalLB's rules).
//!
//! Services are read through svcnet's annotations and MetalLB's (see
//! [`crate::ipam::svc_view::LB_IPS_ANNOTATIONS`] and its siblings for the precedence), so charts
//! written for MetalLB work unchanged.

mod pool;
mod sharing;

use std::collections::BTreeMap;
use std::net::IpAddr;

pub use pool::{overlaps, overlaps_net, PoolView};
pub use sharing::can_share;

use super::PlanError;
use crate::ipam::svc_view::{
    family_of, Family, SvcType, SvcView, LB_CLASS, LB_IPS_ANNOTATIONS, LB_POOL_ANNOTATIONS,
    SHARING_KEY_ANNOTATIONS,
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

/// Addresses the Service asks for: the first IPs annotation set (`svcnet.io/load-balancer-ips`,
/// then MetalLB's `metallb.io/loadBalancerIPs` and `metallb.universe.tf/loadBalancerIPs`;
/// comma-separated, at most one per family), else `spec.loadBalancerIP`. Errors name the
/// annotation (or field) that was read.
pub fn requested_ips(svc: &SvcView) -> Result<Vec<IpAddr>, PlanError> {
    let (field, text) = match svc.annotation(&LB_IPS_ANNOTATIONS) {
        Some((name, v)) => (format!("metadata.annotations[{name}]"), v),
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

/// The sharing key of a Service (`svcnet.io/sharing-key`, then MetalLB's
/// `metallb.io/allow-shared-ip` and `metallb.universe.tf/allow-shared-ip`), if it has a
/// non-blank one.
pub fn sharing_key(svc: &SvcView) -> Option<&str> {
    svc.annotation(&SHARING_KEY_ANNOTATIONS).map(|(_, v)| v)
}

/// The pool a Service names (`svcnet.io/lb-pool`, then MetalLB's `metallb.io/address-pool` and
/// `metallb.universe.tf/address-pool`), if any.
pub fn pool_annotation(svc: &SvcView) -> Option<&str> {
    svc.annotation(&LB_POOL_ANNOTATIONS).map(|(_, v)| v)
}

/// `(port, protocol)` pairs a Service exposes on its LoadBalancer IP.
pub fn lb_ports(svc: &SvcView) -> Vec<(i32, String)> {
    svc.ports
        .iter()
        .map(|p| (p.port, p.protocol.clone()))
        .collect()
}

/// Pools that may serve `svc`, in the order to try them: by [`PoolView::rank`] (priority, then
/// pools that select Services, then the rest), then by name, a stable order so every replica
/// picks alike. A pool with `autoAssign: false` is included only when the Service asks for
/// pools explicitly: it names one, or requests addresses (the caller then takes the pool that
/// holds each).
pub fn eligible_pools<'a>(
    svc: &SvcView,
    ns_labels: &BTreeMap<String, String>,
    pools: &'a [PoolView],
) -> Vec<&'a PoolView> {
    let explicit =
        pool_annotation(svc).is_some() || requested_ips(svc).is_ok_and(|ips| !ips.is_empty());
    let mut v: Vec<&PoolView> = pools
        .iter()
        .filter(|p| p.errors.is_empty() && p.serves(svc, ns_labels))
        .filter(|p| p.spec.auto_assign || explicit)
        .collect();
    v.sort_by(|a, b| a.rank().cmp(&b.rank()).then_with(|| a.name.cmp(&b.name)));
    v
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
    use super::pool::tests::{ip, pool};
    use super::*;
    use crate::ipam::svc_view::fixtures::svc;
    use crate::ipam::svc_view::{LB_IPS_ANNOTATION, LB_POOL_ANNOTATION, SHARING_KEY_ANNOTATION};
    use crds::LabelSelector;

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
        // A blank annotation is unset: the field applies.
        let blank = svc("a")
            .annotate(LB_IPS_ANNOTATION, " ")
            .lb_ip("192.0.2.12");
        assert_eq!(requested_ips(&blank).unwrap(), vec![ip("192.0.2.12")]);
    }

    #[test]
    fn metallb_ip_annotations_are_aliases_with_lower_precedence() {
        let new = "metallb.io/loadBalancerIPs";
        let old = "metallb.universe.tf/loadBalancerIPs";
        let s = svc("a").annotate(old, "192.0.2.1");
        assert_eq!(requested_ips(&s).unwrap(), vec![ip("192.0.2.1")]);
        let s = s.annotate(new, "192.0.2.2,2001:db8::2");
        assert_eq!(
            requested_ips(&s).unwrap(),
            vec![ip("192.0.2.2"), ip("2001:db8::2")]
        );
        let s = s
            .annotate(LB_IPS_ANNOTATION, "192.0.2.3")
            .lb_ip("192.0.2.4");
        assert_eq!(requested_ips(&s).unwrap(), vec![ip("192.0.2.3")]);
        // Any alias wins over the field.
        let s = svc("a").lb_ip("192.0.2.4").annotate(old, "192.0.2.1");
        assert_eq!(requested_ips(&s).unwrap(), vec![ip("192.0.2.1")]);
        // Errors name the annotation that was read.
        let e = requested_ips(&svc("a").annotate(new, "192.0.2.1,192.0.2.9")).unwrap_err();
        assert_eq!(e.field, format!("metadata.annotations[{new}]"));
        assert!(e.to_string().contains(new), "{e}");
        let e = requested_ips(&svc("a").annotate(old, "nope")).unwrap_err();
        assert_eq!(e.field, format!("metadata.annotations[{old}]"));
        assert_eq!(e.reason, "LoadBalancerIPNotValid");
        let e = requested_ips(
            &svc("a")
                .annotate(old, "nope")
                .annotate(LB_IPS_ANNOTATION, "x"),
        )
        .unwrap_err();
        assert_eq!(
            e.field,
            format!("metadata.annotations[{LB_IPS_ANNOTATION}]")
        );
    }

    #[test]
    fn sharing_key_and_pool_aliases() {
        let s = svc("a").annotate("metallb.universe.tf/allow-shared-ip", "old");
        assert_eq!(sharing_key(&s), Some("old"));
        let s = s.annotate("metallb.io/allow-shared-ip", "new");
        assert_eq!(sharing_key(&s), Some("new"));
        let s = s.annotate(SHARING_KEY_ANNOTATION, "ours");
        assert_eq!(sharing_key(&s), Some("ours"));
        // Blank means unset, so the next one in line applies.
        let s = s.annotate(SHARING_KEY_ANNOTATION, "");
        assert_eq!(sharing_key(&s), Some("new"));
        assert_eq!(sharing_key(&svc("a")), None);

        let s = svc("a").annotate("metallb.universe.tf/address-pool", "old");
        assert_eq!(pool_annotation(&s), Some("old"));
        let s = s.annotate("metallb.io/address-pool", "new");
        assert_eq!(pool_annotation(&s), Some("new"));
        let s = s.annotate(LB_POOL_ANNOTATION, "ours");
        assert_eq!(pool_annotation(&s), Some("ours"));
        assert_eq!(pool_annotation(&svc("a")), None);
    }

    fn names(s: &SvcView, ns: &BTreeMap<String, String>, pools: &[PoolView]) -> Vec<String> {
        eligible_pools(s, ns, pools)
            .iter()
            .map(|p| p.name.clone())
            .collect()
    }

    fn views(raw: &[crds::LoadBalancerIPPool]) -> Vec<PoolView> {
        raw.iter().map(PoolView::from_pool).collect()
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
        let pools = views(&[a, b, c, d]);
        let none = BTreeMap::new();
        let team: BTreeMap<String, String> = [("team".to_string(), "net".to_string())].into();
        let edge = svc("x").label("tier", "edge");
        assert!(names(&svc("x"), &none, &pools).is_empty());
        assert_eq!(names(&edge, &none, &pools), ["a"]);
        assert_eq!(names(&edge, &team, &pools), ["a", "b"]);
        let named = edge.clone().annotate(LB_POOL_ANNOTATION, "b");
        assert_eq!(names(&named, &team, &pools), ["b"]);
        // MetalLB's pool annotations name a pool the same way.
        let named = edge.clone().annotate("metallb.io/address-pool", "b");
        assert_eq!(names(&named, &team, &pools), ["b"]);
        let named = edge.annotate("metallb.universe.tf/address-pool", "b");
        assert_eq!(names(&named, &team, &pools), ["b"]);
    }

    #[test]
    fn pools_without_auto_assign_serve_only_services_that_ask() {
        let auto = pool("auto", &["192.0.2.0/28"], &[]);
        let mut manual = pool("manual", &["198.51.100.0/28"], &[]);
        manual.spec.auto_assign = false;
        let pools = views(&[auto, manual]);
        let none = BTreeMap::new();
        assert_eq!(names(&svc("x"), &none, &pools), ["auto"]);
        // Named through any pool annotation.
        for ann in [LB_POOL_ANNOTATION, "metallb.io/address-pool"] {
            let s = svc("x").annotate(ann, "manual");
            assert_eq!(names(&s, &none, &pools), ["manual"]);
        }
        // Requesting one of its addresses, through any IPs annotation or the field.
        for s in [
            svc("x").annotate(LB_IPS_ANNOTATION, "198.51.100.3"),
            svc("x").annotate("metallb.io/loadBalancerIPs", "198.51.100.3"),
            svc("x").lb_ip("198.51.100.3"),
        ] {
            let eligible = eligible_pools(&s, &none, &pools);
            let holder = eligible.iter().find(|p| p.contains(ip("198.51.100.3")));
            assert_eq!(holder.map(|p| p.name.as_str()), Some("manual"));
        }
        // A sharing key alone is no request.
        let s = svc("x").annotate(SHARING_KEY_ANNOTATION, "k");
        assert_eq!(names(&s, &none, &pools), ["auto"]);
    }

    #[test]
    fn pools_are_tried_by_priority_then_selectors_then_name() {
        let sel = || {
            Some(LabelSelector {
                match_labels: [("tier".to_string(), "edge".to_string())].into(),
                ..Default::default()
            })
        };
        let mut raw = vec![
            pool("a-plain", &["10.0.0.0/30"], &[]),
            pool("b-selected", &["10.0.1.0/30"], &[]),
            pool("c-prio-20", &["10.0.2.0/30"], &[]),
            pool("d-prio-5", &["10.0.3.0/30"], &[]),
            pool("e-prio-5", &["10.0.4.0/30"], &[]),
            pool("f-prio-0", &["10.0.5.0/30"], &[]),
            pool("g-ns-selected", &["10.0.6.0/30"], &[]),
        ];
        raw[1].spec.service_selector = sel();
        raw[2].spec.priority = Some(20);
        raw[3].spec.priority = Some(5);
        raw[3].spec.service_selector = sel();
        raw[4].spec.priority = Some(5);
        // Priority 0 is no priority, as in MetalLB.
        raw[5].spec.priority = Some(0);
        raw[6].spec.namespace_selector = Some(LabelSelector::default());
        let pools = views(&raw);
        let edge = svc("x").label("tier", "edge");
        assert_eq!(
            names(&edge, &BTreeMap::new(), &pools),
            [
                "d-prio-5",
                "e-prio-5",
                "c-prio-20",
                "b-selected",
                "g-ns-selected",
                "a-plain",
                "f-prio-0"
            ]
        );
        // Pools whose selectors do not match are left out, not just ranked last.
        assert_eq!(
            names(&svc("x"), &BTreeMap::new(), &pools),
            [
                "e-prio-5",
                "c-prio-20",
                "g-ns-selected",
                "a-plain",
                "f-prio-0"
            ]
        );
        // The input order does not matter.
        let mut reversed = pools.clone();
        reversed.reverse();
        assert_eq!(
            names(&edge, &BTreeMap::new(), &reversed),
            names(&edge, &BTreeMap::new(), &pools)
        );
    }

    #[test]
    fn families() {
        let pools = views(&[
            pool("a", &["192.0.2.0/28"], &[]),
            pool("c", &["2001:db8::/120"], &[]),
        ]);
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
