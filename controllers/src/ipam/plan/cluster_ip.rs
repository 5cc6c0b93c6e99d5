//! ClusterIP families and addresses, following upstream's `initIPFamilyFields`,
//! `allocClusterIPs` and `updateClusterIPs` (pkg/registry/core/service/storage/alloc.go).
//!
//! `old` is the Service as it was after its previous successful allocation (`None` on create).
//! The result says what `spec.ipFamilyPolicy`, `spec.ipFamilies` and `spec.clusterIPs` must be,
//! with each address slot either an address already in the spec (to be claimed, or adopted) or a
//! family to allocate from.

use std::net::IpAddr;

use super::{PlanError, PlanErrors};
use crate::ipam::svc_view::{
    family_of, other_family, parse_family, Family, Policy, SvcType, SvcView,
};

/// One `spec.clusterIPs` entry of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpSlot {
    /// The address the spec already carries (user-requested, or allocated earlier / by a real
    /// apiserver). It must be in range and claimed by this Service.
    Keep(IpAddr),
    /// Allocate a free address of this family.
    Alloc(Family),
}

/// The planned ClusterIP fields of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterIpPlan {
    /// `spec.ipFamilyPolicy` (`None` for ExternalName, which has none).
    pub policy: Option<Policy>,
    /// `spec.ipFamilies`.
    pub families: Vec<Family>,
    /// `spec.clusterIPs`; empty for headless and ExternalName Services.
    pub slots: Vec<IpSlot>,
    /// `clusterIP: None`.
    pub headless: bool,
}

impl ClusterIpPlan {
    fn none() -> Self {
        ClusterIpPlan {
            policy: None,
            families: vec![],
            slots: vec![],
            headless: false,
        }
    }
}

struct Parsed {
    policy: Option<Policy>,
    families: Vec<Family>,
    ips: Vec<IpAddr>,
    headless: bool,
}

fn parse(svc: &SvcView) -> Result<Parsed, PlanErrors> {
    let mut errs = Vec::new();
    let policy = match svc.ip_family_policy.as_deref() {
        None => None,
        Some(p) => match Policy::parse(p) {
            Some(p) => Some(p),
            None => {
                errs.push(PlanError::invalid(
                    "spec.ipFamilyPolicy",
                    p,
                    "supported values: \"SingleStack\", \"PreferDualStack\", \"RequireDualStack\"",
                ));
                None
            }
        },
    };
    let mut families = Vec::new();
    for (i, f) in svc.ip_families.iter().enumerate() {
        match parse_family(f) {
            Some(fam) if families.contains(&fam) => errs.push(PlanError::invalid(
                format!("spec.ipFamilies[{i}]"),
                f,
                "Duplicate value",
            )),
            Some(fam) => families.push(fam),
            None => errs.push(PlanError::invalid(
                format!("spec.ipFamilies[{i}]"),
                f,
                "supported values: \"IPv4\", \"IPv6\"",
            )),
        }
    }
    let headless = svc.is_headless();
    let mut ips = Vec::new();
    if !headless {
        for (i, s) in svc.cluster_ips.iter().enumerate() {
            match s.parse::<IpAddr>() {
                Ok(ip) => {
                    if ips.iter().any(|o: &IpAddr| family_of(*o) == family_of(ip)) {
                        errs.push(PlanError::invalid(
                            "spec.clusterIPs",
                            svc.cluster_ips.join(","),
                            "may specify no more than one IP for each IP family",
                        ));
                    }
                    if let Some(fam) = families.get(i) {
                        if *fam != family_of(ip) {
                            errs.push(PlanError::invalid(
                                format!("spec.clusterIPs[{i}]"),
                                s,
                                format!(
                                    "expected an {fam} value as indicated by `ipFamilies[{i}]`"
                                ),
                            ));
                        }
                    }
                    ips.push(ip);
                }
                Err(_) => errs.push(
                    PlanError::invalid(
                        format!("spec.clusterIPs[{i}]"),
                        s,
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    )
                    .reason("ClusterIPNotValid"),
                ),
            }
        }
    }
    if svc.cluster_ips.len() > 2 {
        errs.push(PlanError::invalid(
            "spec.clusterIPs",
            svc.cluster_ips.join(","),
            "may only hold up to 2 values",
        ));
    }
    if svc.ip_families.len() > 2 {
        errs.push(PlanError::invalid(
            "spec.ipFamilies",
            svc.ip_families.join(","),
            "may only hold up to 2 values",
        ));
    }
    if errs.is_empty() {
        Ok(Parsed {
            policy,
            families,
            ips,
            headless,
        })
    } else {
        Err(PlanErrors(errs))
    }
}

/// Plans the ClusterIP fields of `new`. `cluster` lists the configured families, primary first
/// (one or two entries).
pub fn plan_cluster_ips(
    new: &SvcView,
    old: Option<&SvcView>,
    cluster: &[Family],
) -> Result<ClusterIpPlan, PlanErrors> {
    if new.type_ == SvcType::ExternalName {
        return Ok(ClusterIpPlan::none());
    }
    let primary = *cluster.first().ok_or_else(|| {
        PlanError::invalid("spec.ipFamilies", "", "no service CIDR is configured")
    })?;
    let configured = |f: Family| cluster.contains(&f);

    let mut p = parse(new)?;
    let old_parsed = match old {
        Some(o) if o.type_ != SvcType::ExternalName => parse(o).ok(),
        _ => None,
    };

    // A PreferDualStack Service is never upgraded or downgraded behind its back when the cluster's
    // dual-stackness changes: same type, same policy, same IPs and families → nothing to do.
    if let (Some(o), Some(op)) = (old, &old_parsed) {
        if p.policy == Some(Policy::PreferDualStack)
            && o.type_ == new.type_
            && op.policy.is_none_or(|x| x == Policy::PreferDualStack)
            && o.cluster_ips == new.cluster_ips
            && o.ip_families == new.ip_families
        {
            return Ok(ClusterIpPlan {
                policy: p.policy,
                families: p.families,
                slots: p.ips.into_iter().map(IpSlot::Keep).collect(),
                headless: p.headless,
            });
        }
    }

    // Default the policy: on update keep the old one; headless + selectorless → RequireDualStack;
    // otherwise SingleStack.
    let policy = match (p.policy, old_parsed.as_ref().and_then(|o| o.policy)) {
        (Some(p), _) => p,
        (None, Some(old_policy)) => old_policy,
        (None, None) if p.headless && !new.has_selector() => Policy::RequireDualStack,
        (None, None) => Policy::SingleStack,
    };

    let mut errs = Vec::new();
    if let (Some(o), Some(op)) = (old, &old_parsed) {
        if policy == Policy::SingleStack {
            // Setting SingleStack while leaving the fields alone is clear intent: trim them.
            if o.cluster_ips == new.cluster_ips && p.ips.len() > 1 {
                p.ips.truncate(1);
            }
            if o.ip_families == new.ip_families && p.families.len() > 1 {
                p.families.truncate(1);
            }
        } else {
            if !new.cluster_ips.is_empty() && new.cluster_ips.len() < o.cluster_ips.len() {
                errs.push(PlanError::invalid(
                    "spec.ipFamilyPolicy",
                    policy,
                    "must be 'SingleStack' to release the secondary cluster IP",
                ));
            }
            if !p.families.is_empty() && p.families.len() < op.families.len() {
                errs.push(PlanError::invalid(
                    "spec.ipFamilyPolicy",
                    policy,
                    "must be 'SingleStack' to release the secondary IP family",
                ));
            }
        }
    }

    if policy == Policy::SingleStack {
        if p.ips.len() == 2 {
            errs.push(PlanError::invalid(
                "spec.ipFamilyPolicy",
                policy,
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
            ));
        }
        if p.families.len() == 2 {
            errs.push(PlanError::invalid(
                "spec.ipFamilyPolicy",
                policy,
                "must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
            ));
        }
    }

    // Infer families from the requested IPs.
    for (i, ip) in p.ips.iter().enumerate() {
        if i >= p.families.len() {
            let fam = family_of(*ip);
            if configured(fam) {
                p.families.push(fam);
            } else {
                errs.push(
                    PlanError::invalid(
                        format!("spec.clusterIPs[{i}]"),
                        new.cluster_ips.join(","),
                        format!("{fam} is not configured on this cluster"),
                    )
                    .reason("ClusterIPNotValid"),
                );
            }
        }
    }
    if !errs.is_empty() {
        return Err(PlanErrors(errs));
    }

    // Headless + selectorless may carry both families even on a single-stack cluster.
    if p.headless && !new.has_selector() {
        if p.families.is_empty() {
            p.families.push(primary);
        }
        if p.families.len() < 2 && policy != Policy::SingleStack {
            let other = other_family(p.families[0]);
            p.families.push(other);
        }
        return Ok(ClusterIpPlan {
            policy: Some(policy),
            families: p.families,
            slots: vec![],
            headless: true,
        });
    }

    if policy == Policy::RequireDualStack && cluster.len() < 2 {
        errs.push(PlanError::invalid(
            "spec.ipFamilyPolicy",
            policy,
            "this cluster is not configured for dual-stack services",
        ));
    }
    for (i, f) in p.families.iter().enumerate() {
        if !configured(*f) {
            errs.push(PlanError::invalid(
                format!("spec.ipFamilies[{i}]"),
                f,
                "not configured on this cluster",
            ));
        }
    }
    if !errs.is_empty() {
        return Err(PlanErrors(errs));
    }
    if p.families.is_empty() {
        p.families.push(primary);
    }
    if policy != Policy::SingleStack && p.families.len() == 1 && cluster.len() == 2 {
        let other = other_family(p.families[0]);
        p.families.push(other);
    }

    // Headless Services (with a selector) get families but no addresses.
    if p.headless {
        return Ok(ClusterIpPlan {
            policy: Some(policy),
            families: p.families,
            slots: vec![],
            headless: true,
        });
    }
    // Existing/requested addresses are kept; missing slots (create, ExternalName → ClusterIP,
    // single → dual upgrade) are allocated. A dual → single downgrade has already trimmed `ips`;
    // the dropped address is released by the executor because the plan no longer holds it.
    let slots = p
        .families
        .iter()
        .enumerate()
        .map(|(i, f)| match p.ips.get(i) {
            Some(ip) => IpSlot::Keep(*ip),
            None => IpSlot::Alloc(*f),
        })
        .collect();
    Ok(ClusterIpPlan {
        policy: Some(policy),
        families: p.families,
        slots,
        headless: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::svc_view::fixtures::svc;
    use Family::{V4, V6};

    const V4ONLY: &[Family] = &[V4];
    const V6ONLY: &[Family] = &[V6];
    const DUAL4: &[Family] = &[V4, V6];
    const DUAL6: &[Family] = &[V6, V4];

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    struct Case {
        name: &'static str,
        svc: SvcView,
        cluster: &'static [Family],
        want: Result<(Policy, Vec<Family>, Vec<IpSlot>), &'static str>,
    }

    fn run(cases: Vec<Case>) {
        for c in cases {
            let got = plan_cluster_ips(&c.svc, None, c.cluster);
            match (&c.want, got) {
                (Ok((pol, fams, slots)), Ok(plan)) => {
                    assert_eq!(plan.policy, Some(*pol), "{}", c.name);
                    assert_eq!(&plan.families, fams, "{}", c.name);
                    assert_eq!(&plan.slots, slots, "{}", c.name);
                }
                (Err(msg), Err(e)) => assert!(e.mentions(msg), "{}: got {e}", c.name),
                (want, got) => panic!("{}: want {want:?}, got {got:?}", c.name),
            }
        }
    }

    #[test]
    fn create_policies_on_single_and_dual_stack_clusters() {
        use IpSlot::{Alloc, Keep};
        use Policy::*;
        run(vec![
            Case {
                name: "default single stack",
                svc: svc("a"),
                cluster: DUAL4,
                want: Ok((SingleStack, vec![V4], vec![Alloc(V4)])),
            },
            Case {
                name: "default on v6-primary cluster",
                svc: svc("a"),
                cluster: DUAL6,
                want: Ok((SingleStack, vec![V6], vec![Alloc(V6)])),
            },
            Case {
                name: "single stack asking for v6 on dual",
                svc: svc("a").fams(&["IPv6"]),
                cluster: DUAL4,
                want: Ok((SingleStack, vec![V6], vec![Alloc(V6)])),
            },
            Case {
                name: "single stack asking for v6 on v4-only",
                svc: svc("a").fams(&["IPv6"]),
                cluster: V4ONLY,
                want: Err("not configured on this cluster"),
            },
            Case {
                name: "single stack with two families",
                svc: svc("a").policy("SingleStack").fams(&["IPv4", "IPv6"]),
                cluster: DUAL4,
                want: Err("must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified"),
            },
            Case {
                name: "single stack with two IPs",
                svc: svc("a").policy("SingleStack").ips(&["10.0.0.5", "fd00::5"]),
                cluster: DUAL4,
                want: Err("must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified"),
            },
            Case {
                name: "prefer dual on dual",
                svc: svc("a").policy("PreferDualStack"),
                cluster: DUAL4,
                want: Ok((PreferDualStack, vec![V4, V6], vec![Alloc(V4), Alloc(V6)])),
            },
            Case {
                name: "prefer dual on single",
                svc: svc("a").policy("PreferDualStack"),
                cluster: V4ONLY,
                want: Ok((PreferDualStack, vec![V4], vec![Alloc(V4)])),
            },
            Case {
                name: "prefer dual with v6 first",
                svc: svc("a").policy("PreferDualStack").fams(&["IPv6"]),
                cluster: DUAL4,
                want: Ok((PreferDualStack, vec![V6, V4], vec![Alloc(V6), Alloc(V4)])),
            },
            Case {
                name: "require dual on dual",
                svc: svc("a").policy("RequireDualStack"),
                cluster: DUAL6,
                want: Ok((RequireDualStack, vec![V6, V4], vec![Alloc(V6), Alloc(V4)])),
            },
            Case {
                name: "require dual on single",
                svc: svc("a").policy("RequireDualStack"),
                cluster: V6ONLY,
                want: Err("this cluster is not configured for dual-stack services"),
            },
            Case {
                name: "requested v4 IP infers family",
                svc: svc("a").ips(&["10.0.0.9"]),
                cluster: DUAL6,
                want: Ok((SingleStack, vec![V4], vec![Keep(ip("10.0.0.9"))])),
            },
            Case {
                name: "requested IP of unconfigured family",
                svc: svc("a").ips(&["fd00::9"]),
                cluster: V4ONLY,
                want: Err("IPv6 is not configured on this cluster"),
            },
            Case {
                name: "require dual with one requested IP allocates the other",
                svc: svc("a").policy("RequireDualStack").ips(&["fd00::9"]),
                cluster: DUAL4,
                want: Ok((RequireDualStack, vec![V6, V4], vec![Keep(ip("fd00::9")), Alloc(V4)])),
            },
            Case {
                name: "two IPs of the same family",
                svc: svc("a").policy("RequireDualStack").ips(&["10.0.0.1", "10.0.0.2"]),
                cluster: DUAL4,
                want: Err("no more than one IP for each IP family"),
            },
            Case {
                name: "IP does not match family",
                svc: svc("a").fams(&["IPv6"]).ips(&["10.0.0.1"]),
                cluster: DUAL4,
                want: Err("expected an IPv6 value"),
            },
            Case {
                name: "garbage IP",
                svc: svc("a").ips(&["10.0.0.300"]),
                cluster: DUAL4,
                want: Err("must be a valid IP address"),
            },
            Case {
                name: "unknown policy",
                svc: svc("a").policy("Sometimes"),
                cluster: DUAL4,
                want: Err("supported values"),
            },
            Case {
                name: "unknown family",
                svc: svc("a").fams(&["IPv5"]),
                cluster: DUAL4,
                want: Err("supported values: \"IPv4\", \"IPv6\""),
            },
        ]);
    }

    #[test]
    fn headless_services_get_families_but_no_ips() {
        use Policy::*;
        run(vec![
            Case {
                name: "headless with selector: single stack",
                svc: svc("h").headless(),
                cluster: DUAL4,
                want: Ok((SingleStack, vec![V4], vec![])),
            },
            Case {
                name: "headless with selector, prefer dual on single-stack cluster",
                svc: svc("h").headless().policy("PreferDualStack"),
                cluster: V4ONLY,
                want: Ok((PreferDualStack, vec![V4], vec![])),
            },
            Case {
                name: "headless selectorless defaults to RequireDualStack even on single stack",
                svc: svc("h").headless().selectorless(),
                cluster: V4ONLY,
                want: Ok((RequireDualStack, vec![V4, V6], vec![])),
            },
            Case {
                name: "headless selectorless single stack stays single",
                svc: svc("h").headless().selectorless().policy("SingleStack"),
                cluster: DUAL4,
                want: Ok((SingleStack, vec![V4], vec![])),
            },
            Case {
                name: "headless selectorless with v6 family on v4 cluster",
                svc: svc("h").headless().selectorless().fams(&["IPv6"]),
                cluster: V4ONLY,
                want: Ok((RequireDualStack, vec![V6, V4], vec![])),
            },
            Case {
                name: "headless with selector requires dual on single stack",
                svc: svc("h").headless().policy("RequireDualStack"),
                cluster: V4ONLY,
                want: Err("not configured for dual-stack"),
            },
        ]);
    }

    #[test]
    fn external_name_gets_nothing() {
        let plan = plan_cluster_ips(&svc("x").typ(SvcType::ExternalName), None, DUAL4).unwrap();
        assert_eq!(plan, ClusterIpPlan::none());
    }

    #[test]
    fn updates_follow_upstream() {
        use IpSlot::{Alloc, Keep};
        let old = svc("a")
            .policy("SingleStack")
            .fams(&["IPv4"])
            .ips(&["10.0.0.5"]);
        // Upgrade: SingleStack → RequireDualStack adds the secondary family and allocates it.
        let new = old.clone().policy("RequireDualStack");
        let plan = plan_cluster_ips(&new, Some(&old), DUAL4).unwrap();
        assert_eq!(plan.families, vec![V4, V6]);
        assert_eq!(plan.slots, vec![Keep(ip("10.0.0.5")), Alloc(V6)]);

        // Policy omitted on update: the old one is kept.
        let dual = svc("a")
            .policy("PreferDualStack")
            .fams(&["IPv4", "IPv6"])
            .ips(&["10.0.0.5", "fd00::5"]);
        let mut no_policy = dual.clone();
        no_policy.ip_family_policy = None;
        let plan = plan_cluster_ips(&no_policy, Some(&dual), DUAL4).unwrap();
        assert_eq!(plan.policy, Some(Policy::PreferDualStack));
        assert_eq!(plan.slots.len(), 2);

        // Downgrade: SingleStack with untouched fields trims to the primary; the secondary is
        // dropped from the plan (and so released).
        let down = dual.clone().policy("SingleStack");
        let plan = plan_cluster_ips(&down, Some(&dual), DUAL4).unwrap();
        assert_eq!(plan.families, vec![V4]);
        assert_eq!(plan.slots, vec![Keep(ip("10.0.0.5"))]);

        // Reducing IPs without SingleStack is an error.
        let reduced = dual
            .clone()
            .policy("RequireDualStack")
            .ips(&["10.0.0.5"])
            .fams(&["IPv4"]);
        let err = plan_cluster_ips(&reduced, Some(&dual), DUAL4).unwrap_err();
        assert!(err.mentions("must be 'SingleStack' to release the secondary cluster IP"));
        assert!(err.mentions("must be 'SingleStack' to release the secondary IP family"));

        // PreferDualStack is not auto-upgraded when the cluster becomes dual-stack...
        let pref = svc("a")
            .policy("PreferDualStack")
            .fams(&["IPv4"])
            .ips(&["10.0.0.5"]);
        let plan = plan_cluster_ips(&pref, Some(&pref), DUAL4).unwrap();
        assert_eq!(plan.slots, vec![Keep(ip("10.0.0.5"))]);
        // ... nor downgraded when it stops being dual-stack.
        let plan = plan_cluster_ips(&dual, Some(&dual), V4ONLY).unwrap();
        assert_eq!(plan.slots.len(), 2);

        // ExternalName → ClusterIP allocates.
        let en = svc("a").typ(SvcType::ExternalName);
        let plan = plan_cluster_ips(&svc("a"), Some(&en), V4ONLY).unwrap();
        assert_eq!(plan.slots, vec![Alloc(V4)]);

        // Headless stays without addresses on update.
        let h = svc("h").headless().policy("SingleStack").fams(&["IPv4"]);
        let plan = plan_cluster_ips(&h, Some(&h), DUAL4).unwrap();
        assert!(plan.headless && plan.slots.is_empty());
    }
}
