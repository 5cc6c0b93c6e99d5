//! The `Ready` condition of an `L2Announcement`: whether its spec is usable (interface patterns
//! compile, the pools it names exist). Every speaker computes the same condition from the same
//! watched objects; the one a round elects (the lowest-named live node) writes it when it differs
//! from what the object carries, so a healthy cluster makes no status writes at all.

use std::collections::BTreeSet;

use crds::{Condition, L2Announcement, L2AnnouncementStatus};

/// The condition type.
pub const READY: &str = "Ready";

/// The status `obj` should carry, given how its spec parsed and which pools exist; `None` when
/// it already carries exactly that (the transition time is kept while the status holds).
pub fn desired(
    obj: &L2Announcement,
    parsed: Result<(), &str>,
    pools: &BTreeSet<String>,
    now: &str,
) -> Option<L2AnnouncementStatus> {
    let missing: Vec<&str> = obj
        .spec
        .ip_pools
        .iter()
        .filter(|p| !pools.contains(*p))
        .map(String::as_str)
        .collect();
    let (ok, reason, message) = match parsed {
        Err(msg) => (false, "InvalidSpec", msg.to_string()),
        Ok(()) if !missing.is_empty() => (
            false,
            "UnknownPool",
            format!(
                "ipPools names LoadBalancerIPPools that do not exist: {}",
                missing.join(", ")
            ),
        ),
        Ok(()) => (true, "Valid", "the spec is valid".to_string()),
    };
    let status = if ok { "True" } else { "False" };
    let prev = obj
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY));
    let generation = obj.metadata.generation;
    if let Some(p) = prev {
        if p.status == status
            && p.reason == reason
            && p.message == message
            && p.observed_generation == generation
        {
            return None;
        }
    }
    let last = prev
        .filter(|p| p.status == status)
        .and_then(|p| p.last_transition_time.clone())
        .unwrap_or_else(|| now.to_string());
    Some(L2AnnouncementStatus {
        conditions: vec![Condition {
            type_: READY.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time: Some(last),
            observed_generation: generation,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(pools: &[&str], status: Option<L2AnnouncementStatus>) -> L2Announcement {
        let mut p = L2Announcement::new(
            "p",
            crds::l2::L2AnnouncementSpec {
                ip_pools: pools.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        );
        p.metadata.generation = Some(3);
        p.status = status;
        p
    }

    #[test]
    fn ready_when_valid_and_written_only_on_change() {
        let pools: BTreeSet<String> = ["a".to_string()].into();
        let st = desired(&policy(&["a"], None), Ok(()), &pools, "t1").expect("first write");
        let c = &st.conditions[0];
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Valid"));
        assert_eq!(c.observed_generation, Some(3));
        // Already carried: nothing to write.
        assert_eq!(
            desired(&policy(&["a"], Some(st.clone())), Ok(()), &pools, "t2"),
            None
        );
    }

    #[test]
    fn invalid_spec_and_unknown_pools_are_false_with_the_reason() {
        let pools: BTreeSet<String> = ["a".to_string()].into();
        let st = desired(
            &policy(&[], None),
            Err("interface pattern \"/(/\": unclosed group"),
            &pools,
            "t1",
        )
        .unwrap();
        assert_eq!(st.conditions[0].status, "False");
        assert_eq!(st.conditions[0].reason, "InvalidSpec");
        assert!(st.conditions[0].message.contains("unclosed"));
        let st = desired(&policy(&["a", "gone"], None), Ok(()), &pools, "t1").unwrap();
        assert_eq!(st.conditions[0].reason, "UnknownPool");
        assert!(st.conditions[0].message.contains("gone"), "{st:?}");
        assert!(!st.conditions[0].message.contains("a,"), "{st:?}");
        // The transition time stays while the status stays False; it moves when it flips.
        let again = desired(
            &policy(&["a", "gone"], Some(st.clone())),
            Err("bad"),
            &pools,
            "t2",
        )
        .unwrap();
        assert_eq!(
            again.conditions[0].last_transition_time.as_deref(),
            Some("t1")
        );
        let fixed = desired(&policy(&["a"], Some(st)), Ok(()), &pools, "t3").unwrap();
        assert_eq!(
            fixed.conditions[0].last_transition_time.as_deref(),
            Some("t3")
        );
    }
}
