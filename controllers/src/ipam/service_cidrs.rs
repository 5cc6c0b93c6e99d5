//! ServiceCIDR objects, pure part: which ranges they give the allocator, and what their
//! lifecycle controller must do to each (the protection finalizer, the `Ready` condition, and
//! when a deleted one may go) — the behaviour of kube-controller-manager's servicecidrs
//! controller, so running next to it never fights it.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::ResourceExt;

use crate::ipam::cluster_ranges::RangeSpec;

/// Finalizer that keeps a ServiceCIDR while addresses only it contains are held.
pub const FINALIZER: &str = "networking.k8s.io/service-cidr-finalizer";
/// Name of the ServiceCIDR made from `--service-cluster-ip-range`.
pub const DEFAULT_NAME: &str = "kubernetes";
/// Condition type.
pub const READY: &str = "Ready";
/// Reason of `Ready=False` while a deleted ServiceCIDR still has addresses.
pub const REASON_TERMINATING: &str = "Terminating";
/// Message of `Ready=True`.
pub const READY_MESSAGE: &str = "Kubernetes Service CIDR is ready";
/// Message of `Ready=False` / `Terminating`.
pub const TERMINATING_MESSAGE: &str = "There are still IPAddresses referencing the ServiceCIDR, please remove them or create a new ServiceCIDR";
/// How long after its deletion a ServiceCIDR is kept even when empty, so every allocator has
/// seen the deletion and none hands out an address from it any more.
pub const DELETION_GRACE: Duration = Duration::from_secs(10);

/// The CIDRs of `c` that parse.
pub fn cidrs_of(c: &ServiceCIDR) -> Vec<IpNet> {
    c.spec
        .as_ref()
        .and_then(|s| s.cidrs.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|s| s.parse::<IpNet>().ok())
        .map(|n| n.trunc())
        .collect()
}

fn deleting(c: &ServiceCIDR) -> bool {
    c.metadata.deletion_timestamp.is_some()
}

/// Whether new addresses may come from `c`: not being deleted, and its `Ready` condition is not
/// `False` (no condition counts as ready, so a cluster without the lifecycle controller works).
pub fn is_ready(c: &ServiceCIDR) -> bool {
    if deleting(c) {
        return false;
    }
    c.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == READY))
        .is_none_or(|c| c.status != "False")
}

/// The allocator's ranges from every ServiceCIDR: the default one first, then by name.
pub fn range_specs(all: &[ServiceCIDR]) -> Vec<RangeSpec> {
    let mut sorted: Vec<&ServiceCIDR> = all.iter().collect();
    sorted.sort_by_key(|c| (c.name_any() != DEFAULT_NAME, c.name_any()));
    sorted
        .into_iter()
        .flat_map(|c| {
            let ready = is_ready(c);
            cidrs_of(c)
                .into_iter()
                .map(move |cidr| RangeSpec { cidr, ready })
        })
        .collect()
}

/// Whether deleting `target` leaves no held address outside every remaining ServiceCIDR.
/// ServiceCIDRs that are being deleted themselves do not count as remaining.
pub fn can_delete(
    target: &ServiceCIDR,
    all: &[ServiceCIDR],
    held: impl IntoIterator<Item = IpAddr>,
) -> bool {
    let others: Vec<IpNet> = all
        .iter()
        .filter(|c| c.name_any() != target.name_any() && !deleting(c))
        .flat_map(cidrs_of)
        .collect();
    let mine = cidrs_of(target);
    // Every CIDR of the target lies inside another one: nothing can be orphaned.
    if mine
        .iter()
        .all(|m| others.iter().any(|o| o.contains(m) || o == m))
    {
        return true;
    }
    held.into_iter()
        .filter(|ip| mine.iter().any(|m| m.contains(ip)))
        .all(|ip| others.iter().any(|o| o.contains(&ip)))
}

/// The `Ready` condition `c` should carry, as (status, reason, message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedCondition {
    /// `True` / `False`.
    pub status: &'static str,
    /// Empty for `True`.
    pub reason: &'static str,
    /// Human-readable.
    pub message: &'static str,
}

/// One step of the lifecycle controller for one ServiceCIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CidrStep {
    /// Add [`FINALIZER`].
    AddFinalizer,
    /// Write the `Ready` condition.
    SetCondition(WantedCondition),
    /// Remove [`FINALIZER`]: the deletion may complete.
    RemoveFinalizer,
    /// Look again after this long (deletion grace not over yet).
    RecheckAfter(Duration),
}

fn current_condition(c: &ServiceCIDR) -> Option<(String, String, String)> {
    c.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == READY))
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn set_if_changed(c: &ServiceCIDR, want: WantedCondition, out: &mut Vec<CidrStep>) {
    let same = current_condition(c)
        .is_some_and(|(s, r, m)| s == want.status && r == want.reason && m == want.message);
    if !same {
        out.push(CidrStep::SetCondition(want));
    }
}

/// What to do with `target` now. `deleted_for` is how long ago it was deleted (if it was).
pub fn steps(
    target: &ServiceCIDR,
    all: &[ServiceCIDR],
    held: impl IntoIterator<Item = IpAddr>,
    deleted_for: Option<Duration>,
) -> Vec<CidrStep> {
    let mut out = Vec::new();
    let has_finalizer = target.finalizers().iter().any(|f| f == FINALIZER);
    match deleted_for {
        None if deleting(target) => {}
        None => {
            if !has_finalizer {
                out.push(CidrStep::AddFinalizer);
            }
            let want = WantedCondition {
                status: "True",
                reason: "",
                message: READY_MESSAGE,
            };
            set_if_changed(target, want, &mut out);
            return out;
        }
        Some(_) => {}
    }
    if !has_finalizer {
        return out;
    }
    if !can_delete(target, all, held) {
        let want = WantedCondition {
            status: "False",
            reason: REASON_TERMINATING,
            message: TERMINATING_MESSAGE,
        };
        set_if_changed(target, want, &mut out);
        return out;
    }
    let age = deleted_for.unwrap_or(DELETION_GRACE);
    if age < DELETION_GRACE {
        out.push(CidrStep::RecheckAfter(DELETION_GRACE - age));
    } else {
        out.push(CidrStep::RemoveFinalizer);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::networking::v1::{ServiceCIDRSpec, ServiceCIDRStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn cidr(name: &str, cidrs: &[&str]) -> ServiceCIDR {
        ServiceCIDR {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceCIDRSpec {
                cidrs: Some(cidrs.iter().map(|s| s.to_string()).collect()),
            }),
            status: None,
        }
    }

    fn deleted(mut c: ServiceCIDR) -> ServiceCIDR {
        c.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        c.metadata.finalizers = Some(vec![FINALIZER.into()]);
        c
    }

    fn with_ready(mut c: ServiceCIDR, status: &str) -> ServiceCIDR {
        c.status = Some(ServiceCIDRStatus {
            conditions: Some(vec![Condition {
                type_: READY.into(),
                status: status.into(),
                reason: String::new(),
                message: READY_MESSAGE.into(),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
                observed_generation: None,
            }]),
        });
        c
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_put_the_default_first_and_follow_readiness() {
        let all = vec![
            cidr("extra", &["10.100.0.0/24"]),
            with_ready(cidr("kubernetes", &["10.96.0.0/16", "fd00::/108"]), "True"),
            with_ready(cidr("broken", &["10.200.0.0/24"]), "False"),
            deleted(cidr("going", &["10.50.0.0/24"])),
        ];
        let specs = range_specs(&all);
        let text: Vec<(String, bool)> = specs
            .iter()
            .map(|s| (s.cidr.to_string(), s.ready))
            .collect();
        assert_eq!(
            text,
            vec![
                ("10.96.0.0/16".to_string(), true),
                ("fd00::/108".to_string(), true),
                ("10.200.0.0/24".to_string(), false),
                ("10.100.0.0/24".to_string(), true),
                ("10.50.0.0/24".to_string(), false),
            ]
        );
    }

    #[test]
    fn a_live_cidr_gets_the_finalizer_and_ready_once() {
        let c = cidr("extra", &["10.100.0.0/24"]);
        let s = steps(&c, std::slice::from_ref(&c), [], None);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0], CidrStep::AddFinalizer);
        assert!(
            matches!(&s[1], CidrStep::SetCondition(w) if w.status == "True" && w.reason.is_empty())
        );
        let mut done = with_ready(c, "True");
        done.metadata.finalizers = Some(vec![FINALIZER.into()]);
        assert!(steps(&done, std::slice::from_ref(&done), [], None).is_empty());
    }

    #[test]
    fn deletion_waits_for_held_addresses_only_it_contains_then_the_grace() {
        let going = deleted(cidr("extra", &["10.100.0.0/24"]));
        let default = cidr("kubernetes", &["10.96.0.0/16"]);
        let all = vec![going.clone(), default.clone()];
        let long = Some(Duration::from_secs(60));
        // An address inside it is held: Ready=False/Terminating, finalizer stays.
        let s = steps(&going, &all, [ip("10.100.0.5"), ip("10.96.0.1")], long);
        assert!(matches!(&s[..], [CidrStep::SetCondition(w)] if w.reason == REASON_TERMINATING));
        // Only addresses elsewhere: the finalizer goes, after the grace.
        let s = steps(&going, &all, [ip("10.96.0.1")], long);
        assert_eq!(s, vec![CidrStep::RemoveFinalizer]);
        let s = steps(&going, &all, [], Some(Duration::from_secs(4)));
        assert_eq!(s, vec![CidrStep::RecheckAfter(Duration::from_secs(6))]);
        // Contained in a larger live range: deletable whatever it holds.
        let wide = cidr("wide", &["10.100.0.0/16"]);
        let all = vec![going.clone(), wide];
        assert!(can_delete(&going, &all, [ip("10.100.0.5")]));
        // Two overlapping ranges both being deleted do not vouch for each other.
        let twin = deleted(cidr("twin", &["10.100.0.0/24"]));
        let all = vec![going.clone(), twin];
        assert!(!can_delete(&going, &all, [ip("10.100.0.5")]));
        // Without our finalizer there is nothing to do.
        let mut bare = going;
        bare.metadata.finalizers = None;
        assert!(steps(&bare, &all, [ip("10.100.0.5")], long).is_empty());
    }

    #[test]
    fn readiness_defaults_to_true_without_a_condition() {
        assert!(is_ready(&cidr("a", &["10.0.0.0/24"])));
        assert!(!is_ready(&with_ready(cidr("a", &["10.0.0.0/24"]), "False")));
        assert!(!is_ready(&deleted(cidr("a", &["10.0.0.0/24"]))));
    }
}
