//! Stale-cache guard (upstream's `EndpointSliceTracker`, keyed by
//! resourceVersion instead of generation because not every API server
//! maintains `metadata.generation` for EndpointSlices).
//!
//! After every write the controller records what the cache must show next:
//! a created slice must appear, an updated slice must no longer show the
//! resourceVersion it replaced, a deleted slice must disappear. Until the
//! cache catches up, a sync of that owner would work from old data and make
//! duplicate writes, so it is postponed with a "stale cache" error.

use std::collections::{HashMap, HashSet};

/// What the cache must show for one slice UID.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    /// Created or updated: must be present, and not with these replaced RVs.
    Present {
        /// Versions we replaced.
        not_rv: HashSet<String>,
        /// The version we wrote last.
        written_rv: String,
    },
    /// Deleted: must be absent.
    Absent,
}

/// Expectations per owner key (`namespace/name`).
#[derive(Debug, Default)]
pub struct SliceTracker {
    by_owner: HashMap<String, HashMap<String, Expect>>,
}

/// The identity of a slice in the cache: UID and resourceVersion.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SliceVersion {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
}

impl SliceTracker {
    /// Records a successful create (or update) that returned `written`;
    /// `replaced_rv` is the resourceVersion the update replaced.
    pub fn wrote(&mut self, owner: &str, written: &SliceVersion, replaced_rv: Option<&str>) {
        let m = self.by_owner.entry(owner.to_string()).or_default();
        let mut not_rv = match m.remove(&written.uid) {
            Some(Expect::Present { not_rv, .. }) => not_rv,
            _ => HashSet::new(),
        };
        if let Some(rv) = replaced_rv {
            if rv != written.resource_version {
                not_rv.insert(rv.to_string());
            }
        }
        m.insert(
            written.uid.clone(),
            Expect::Present {
                not_rv,
                written_rv: written.resource_version.clone(),
            },
        );
    }

    /// Records a successful delete.
    pub fn deleted(&mut self, owner: &str, uid: &str) {
        self.by_owner
            .entry(owner.to_string())
            .or_default()
            .insert(uid.to_string(), Expect::Absent);
    }

    /// Whether the cached slices of `owner` are older than what we wrote.
    /// Expectations the cache already satisfies are dropped.
    pub fn is_stale(&mut self, owner: &str, cached: &[SliceVersion]) -> bool {
        let Some(m) = self.by_owner.get_mut(owner) else {
            return false;
        };
        let present: HashMap<&str, &str> = cached
            .iter()
            .map(|c| (c.uid.as_str(), c.resource_version.as_str()))
            .collect();
        let mut stale = false;
        m.retain(|uid, exp| match exp {
            Expect::Absent => {
                if present.contains_key(uid.as_str()) {
                    stale = true;
                    true
                } else {
                    false
                }
            }
            Expect::Present { not_rv, .. } => match present.get(uid.as_str()) {
                None => {
                    stale = true;
                    true
                }
                Some(rv) if not_rv.contains(*rv) => {
                    stale = true;
                    true
                }
                Some(_) => false,
            },
        });
        if m.is_empty() {
            self.by_owner.remove(owner);
        }
        stale
    }

    /// Whether a watch event showing `uid` at `resource_version` (or gone,
    /// when `None`) is the result of our own pending write.
    pub fn is_own_write(&self, owner: &str, uid: &str, resource_version: Option<&str>) -> bool {
        match (
            self.by_owner.get(owner).and_then(|m| m.get(uid)),
            resource_version,
        ) {
            (Some(Expect::Present { written_rv, .. }), Some(rv)) => written_rv == rv,
            (Some(Expect::Absent), None) => true,
            _ => false,
        }
    }

    /// Forgets an owner.
    pub fn forget(&mut self, owner: &str) {
        self.by_owner.remove(owner);
    }

    /// An external change (e.g. someone deleted a slice) arrived for this
    /// UID: expectations about it no longer hold.
    pub fn observed_external(&mut self, owner: &str, uid: &str) {
        if let Some(m) = self.by_owner.get_mut(owner) {
            m.remove(uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(uid: &str, rv: &str) -> SliceVersion {
        SliceVersion {
            uid: uid.into(),
            resource_version: rv.into(),
        }
    }

    #[test]
    fn create_update_delete_expectations() {
        let mut t = SliceTracker::default();
        t.wrote("ns/s", &v("a", "5"), None);
        assert!(t.is_stale("ns/s", &[]), "create not yet seen");
        assert!(t.is_own_write("ns/s", "a", Some("5")));
        assert!(!t.is_own_write("ns/s", "a", Some("6")));
        assert!(!t.is_stale("ns/s", &[v("a", "5")]));
        t.wrote("ns/s", &v("a", "7"), Some("5"));
        assert!(t.is_stale("ns/s", &[v("a", "5")]), "old version");
        assert!(!t.is_stale("ns/s", &[v("a", "7")]));
        t.deleted("ns/s", "a");
        assert!(t.is_stale("ns/s", &[v("a", "7")]));
        assert!(!t.is_stale("ns/s", &[]));
        assert!(!t.is_stale("ns/other", &[v("x", "1")]));
    }
}
