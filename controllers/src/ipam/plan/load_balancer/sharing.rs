//! When a Service may join a LoadBalancer address other Services already hold. The rules are
//! MetalLB's, so Services written for MetalLB share (or refuse to share) exactly as they did:
//!
//! 1. Both carry the same non-empty sharing key (the claim records the holders' key).
//! 2. No `(port, protocol)` is exposed by both.
//! 3. Their backends agree: both have `externalTrafficPolicy: Cluster`, or both have `Local`
//!    and the same selector. With `Local` the address is announced only from nodes with a
//!    ready endpoint, so Services on one address must pick the same nodes: the same endpoints,
//!    which an identical selector guarantees. A `Local` Service never shares with a `Cluster`
//!    one (they would pick nodes differently), whatever their selectors.
//!
//! MetalLB compares a `Local` Service's selector as text and a `Cluster` Service counts as
//! having the empty one, so there a selector-less `Local` Service may share with another
//! selector-less `Local` one or with a `Cluster` one. svcnet refuses both: without a selector
//! nothing ties the endpoints together.

use super::{lb_ports, sharing_key};
use crate::ipam::svc_view::SvcView;

/// Whether `svc` may join an address recorded with `holder_key` and held by `holders` (the
/// holders that still exist). `Err` explains why not.
pub fn can_share(
    svc: &SvcView,
    holder_key: Option<&str>,
    holders: &[SvcView],
) -> Result<(), String> {
    match (sharing_key(svc), holder_key.filter(|k| !k.is_empty())) {
        (Some(a), Some(b)) if a == b => {}
        (None, _) => return Err("the Service has no sharing key".to_string()),
        (Some(a), Some(b)) => return Err(format!("sharing key {a:?} differs from {b:?}")),
        (Some(_), None) => {
            return Err("the address is held by a Service without a sharing key".to_string())
        }
    }
    let ports = lb_ports(svc);
    for holder in holders {
        let theirs = lb_ports(holder);
        if let Some((port, proto)) = ports.iter().find(|p| theirs.contains(p)) {
            return Err(format!(
                "port {port}/{proto} is already used on that address by {}",
                holder.key()
            ));
        }
        same_backends(svc, holder)?;
    }
    Ok(())
}

/// Rule 3 for one holder.
fn same_backends(svc: &SvcView, holder: &SvcView) -> Result<(), String> {
    if !svc.etp_local && !holder.etp_local {
        return Ok(());
    }
    let local = if svc.etp_local {
        "the Service has".to_string()
    } else {
        format!("{} has", holder.key())
    };
    if svc.etp_local != holder.etp_local {
        return Err(format!(
            "{local} externalTrafficPolicy: Local and the other Cluster; Services sharing an address need the same policy"
        ));
    }
    if !svc.has_selector() || !holder.has_selector() {
        return Err(format!(
            "{local} externalTrafficPolicy: Local, so both Services need the same non-empty selector"
        ));
    }
    if svc.selector != holder.selector {
        return Err(format!(
            "{local} externalTrafficPolicy: Local, so both Services need the same selector ({} has {}, the Service {})",
            holder.key(),
            selector_text(holder),
            selector_text(svc)
        ));
    }
    Ok(())
}

/// `k=v,k2=v2`, the way `kubectl` prints a selector.
fn selector_text(svc: &SvcView) -> String {
    let parts: Vec<String> = svc
        .selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::svc_view::fixtures::svc;
    use crate::ipam::svc_view::{SvcType, SHARING_KEY_ANNOTATION};

    fn lb(name: &str, key: &str, port: i32, proto: &str) -> SvcView {
        svc(name)
            .typ(SvcType::LoadBalancer)
            .annotate(SHARING_KEY_ANNOTATION, key)
            .port(port, proto, 0)
    }

    /// Checks both directions: `a` joining `b`'s address and `b` joining `a`'s.
    fn both(a: &SvcView, b: &SvcView) -> (Result<(), String>, Result<(), String>) {
        let key = |s: &SvcView| sharing_key(s).map(str::to_string);
        (
            can_share(a, key(b).as_deref(), std::slice::from_ref(b)),
            can_share(b, key(a).as_deref(), std::slice::from_ref(a)),
        )
    }

    #[test]
    fn same_key_and_disjoint_ports_share() {
        let a = lb("a", "k", 80, "TCP");
        assert!(matches!(
            both(&a, &lb("b", "k", 443, "TCP")),
            (Ok(()), Ok(()))
        ));
        // Same number, other protocol: disjoint.
        assert!(matches!(
            both(&a, &lb("b", "k", 80, "UDP")),
            (Ok(()), Ok(()))
        ));
        // No holder left (all deleted): only the key matters.
        assert!(can_share(&a, Some("k"), &[]).is_ok());
    }

    #[test]
    fn keys_must_match_and_be_present() {
        let a = lb("a", "k", 80, "TCP");
        let (x, y) = both(&a, &lb("b", "j", 443, "TCP"));
        assert!(x.unwrap_err().contains("differs"));
        assert!(y.unwrap_err().contains("differs"));
        let none = svc("n").typ(SvcType::LoadBalancer).port(443, "TCP", 0);
        let (x, y) = both(&a, &none);
        assert!(x
            .unwrap_err()
            .contains("held by a Service without a sharing key"));
        assert!(y.unwrap_err().contains("the Service has no sharing key"));
        // A blank key is no key.
        let blank = lb("blank", " ", 443, "TCP");
        assert!(both(&a, &blank).1.unwrap_err().contains("no sharing key"));
        assert!(can_share(&a, Some(""), &[]).is_err());
    }

    #[test]
    fn a_port_used_by_both_blocks_sharing() {
        let a = lb("a", "k", 80, "TCP");
        let b = lb("b", "k", 80, "TCP").port(443, "TCP", 0);
        let (x, y) = both(&a, &b);
        assert!(x.unwrap_err().contains("80/TCP"));
        assert!(y.unwrap_err().contains("80/TCP"));
        // Checked against every holder, not just the first.
        let c = lb("c", "k", 8080, "TCP");
        let err = can_share(&lb("d", "k", 443, "TCP"), Some("k"), &[c, b]).unwrap_err();
        assert!(
            err.contains("443/TCP") && err.contains("default/b"),
            "{err}"
        );
    }

    #[test]
    fn cluster_traffic_policy_shares_whatever_the_selectors() {
        let a = lb("a", "k", 80, "TCP").selector("app", "x");
        let b = lb("b", "k", 443, "TCP").selector("app", "y");
        assert!(matches!(both(&a, &b), (Ok(()), Ok(()))));
        let c = lb("c", "k", 443, "TCP").selectorless();
        assert!(matches!(both(&a, &c), (Ok(()), Ok(()))));
    }

    #[test]
    fn local_traffic_policy_needs_identical_selectors() {
        let a = lb("a", "k", 80, "TCP").selector("app", "x").etp_local();
        // Both Local, same selector: shared.
        let same = lb("b", "k", 443, "TCP").selector("app", "x").etp_local();
        assert!(matches!(both(&a, &same), (Ok(()), Ok(()))));
        // Both Local, different selectors: refused both ways.
        let other = lb("b", "k", 443, "TCP").selector("app", "y").etp_local();
        let (x, y) = both(&a, &other);
        let x = x.unwrap_err();
        assert!(
            x.contains("same selector") && x.contains("app=y") && x.contains("app=x"),
            "{x}"
        );
        assert!(y.unwrap_err().contains("same selector"));
        // One Local, one Cluster: refused both ways, even with identical selectors.
        let cluster_other = lb("c", "k", 443, "TCP").selector("app", "y");
        let (x, y) = both(&a, &cluster_other);
        assert!(x
            .unwrap_err()
            .contains("the Service has externalTrafficPolicy: Local"));
        assert!(y
            .unwrap_err()
            .contains("default/a has externalTrafficPolicy: Local"));
        let cluster_same = lb("c", "k", 443, "TCP").selector("app", "x");
        let (x, y) = both(&a, &cluster_same);
        assert!(x.unwrap_err().contains("the same policy"));
        assert!(y.unwrap_err().contains("the same policy"));
        // Local without selectors: refused both ways, even with the other selector-less too.
        let bare = lb("d", "k", 443, "TCP").selectorless().etp_local();
        let (x, y) = both(&a, &bare);
        assert!(x.unwrap_err().contains("non-empty selector"));
        assert!(y.unwrap_err().contains("non-empty selector"));
        let bare2 = lb("e", "k", 8443, "TCP").selectorless().etp_local();
        let (x, y) = both(&bare, &bare2);
        assert!(x.is_err() && y.is_err());
        let bare_cluster = lb("f", "k", 8443, "TCP").selectorless();
        let (x, y) = both(&bare, &bare_cluster);
        assert!(x.is_err() && y.is_err());
    }
}
