//! Pure election: which node answers for each announced address, and what this node must write.
//!
//! Ownership of an address is a `coordination.k8s.io` Lease per address naming its holder. How
//! long a holder stays valid is not renewed per address: every speaker renews one heartbeat Lease
//! for its node, and an address Lease is valid while its holder's heartbeat is. API writes
//! therefore grow with the number of nodes, not of addresses, and every address of a dead node
//! fails over on the same observation. Expiry is judged by *observation time* (the local monotonic
//! instant at which a heartbeat was last seen to change, plus the lease duration), as client-go's
//! leader election does, so clock skew between nodes does not matter.
//!
//! Rules, per wanted address (an address some Service needs announced, with the nodes eligible
//! for it — see [`super::eligibility`]):
//! * held by this node: keep serving while this node is eligible, else release (holder cleared)
//!   so that the next node can take over at once rather than after expiry;
//! * held by another live node: nothing (that node releases when it becomes ineligible);
//! * unheld, or held by a node whose heartbeat expired: eligible live nodes are ranked by a
//!   rendezvous hash of (address, node) — the spread — and the node ranked `r` acquires once the
//!   address has been free for `r` renew intervals, so the first choice normally wins and the
//!   next takes over if it does not act. A holder keeps its addresses while it is eligible
//!   (no move back when a preferred node returns: a move is a failover for the address's clients).
//!
//! Addresses no Service wants any more: the holder deletes the Lease; a Lease whose holder is
//! gone is deleted by the first live node by name.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// One address to announce and the nodes that may announce it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The address.
    pub ip: IpAddr,
    /// Nodes eligible for it (policy node selector, not cordoned, a ready local endpoint for
    /// `externalTrafficPolicy: Local`).
    pub candidates: BTreeSet<String>,
}

/// The observed state of the cluster, as far as the election needs it.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// This node.
    pub me: &'a str,
    /// Now (monotonic).
    pub now: Instant,
    /// Nodes whose heartbeat has not expired (this node included while its own heartbeat is
    /// valid).
    pub live: &'a BTreeSet<String>,
    /// Holder of each existing address Lease (`None` after a release).
    pub holders: &'a BTreeMap<IpAddr, Option<String>>,
    /// Since when each address has been free (unheld, or held by a node that is not live), as
    /// first observed by this node.
    pub free_since: &'a BTreeMap<IpAddr, Instant>,
}

/// A write this node must make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Become the holder of `ip`'s Lease (create it, or take it over from `from`).
    Acquire {
        /// The address.
        ip: IpAddr,
        /// The previous holder, if the Lease names one (a takeover).
        from: Option<String>,
    },
    /// Clear this node as the holder of `ip`'s Lease.
    Release(IpAddr),
    /// Delete `ip`'s Lease: no Service wants the address any more.
    Delete(IpAddr),
}

/// What this node does now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Writes, in address order.
    pub steps: Vec<Step>,
    /// Addresses this node answers for (held by it and it is eligible).
    pub serve: BTreeSet<IpAddr>,
    /// Addresses that are free and that this node is waiting to acquire (ranked after others).
    pub waiting: BTreeSet<IpAddr>,
}

/// The rendezvous score of `node` for `ip`: stable across processes and versions, so every node
/// ranks alike.
pub fn score(ip: IpAddr, node: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(ip.to_string().as_bytes());
    h.update([0]);
    h.update(node.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// Eligible live nodes for `ip`, best first.
pub fn ranking<'a>(ip: IpAddr, candidates: impl Iterator<Item = &'a String>) -> Vec<&'a String> {
    let mut v: Vec<(u64, &String)> = candidates.map(|n| (score(ip, n), n)).collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    v.into_iter().map(|(_, n)| n).collect()
}

/// Decides this node's writes and answers. `renew` is the heartbeat renew interval, the step
/// between ranks.
pub fn decide(wanted: &[Wanted], obs: &Observed<'_>, renew: Duration) -> Decision {
    let mut d = Decision::default();
    let me_live = obs.live.contains(obs.me);
    let mut wanted_ips = BTreeSet::new();
    for w in wanted {
        wanted_ips.insert(w.ip);
        let holder = obs.holders.get(&w.ip).cloned().flatten();
        let eligible = w.candidates.contains(obs.me);
        match holder.as_deref() {
            Some(h) if h == obs.me => {
                if eligible && me_live {
                    d.serve.insert(w.ip);
                } else if !eligible {
                    d.steps.push(Step::Release(w.ip));
                }
                // Not live (own heartbeat failing): neither serve nor write; the others take over
                // once the heartbeat has expired for them.
            }
            Some(h) if obs.live.contains(h) => {}
            _ => {
                if !eligible || !me_live {
                    continue;
                }
                let live_candidates = w.candidates.iter().filter(|n| obs.live.contains(*n));
                let rank = ranking(w.ip, live_candidates)
                    .iter()
                    .position(|n| *n == obs.me)
                    .unwrap_or(usize::MAX);
                let free_for = obs
                    .free_since
                    .get(&w.ip)
                    .map(|t| obs.now.saturating_duration_since(*t))
                    .unwrap_or_default();
                let wait = renew.saturating_mul(u32::try_from(rank).unwrap_or(u32::MAX));
                if free_for >= wait {
                    d.steps.push(Step::Acquire {
                        ip: w.ip,
                        from: holder,
                    });
                } else {
                    d.waiting.insert(w.ip);
                }
            }
        }
    }
    // Leases of addresses nobody wants.
    let first_live = obs.live.iter().next().map(String::as_str);
    for (ip, holder) in obs.holders {
        if wanted_ips.contains(ip) {
            continue;
        }
        let ours = holder.as_deref() == Some(obs.me);
        let orphan = holder.as_ref().is_none_or(|h| !obs.live.contains(h));
        if ours || (orphan && me_live && first_live == Some(obs.me)) {
            d.steps.push(Step::Delete(*ip));
        }
    }
    d.steps.sort_by_key(|s| match s {
        Step::Acquire { ip, .. } | Step::Release(ip) | Step::Delete(ip) => *ip,
    });
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENEW: Duration = Duration::from_millis(500);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }
    fn want(addr: &str, candidates: &[&str]) -> Wanted {
        Wanted {
            ip: ip(addr),
            candidates: set(candidates),
        }
    }

    struct World {
        live: BTreeSet<String>,
        holders: BTreeMap<IpAddr, Option<String>>,
        free_since: BTreeMap<IpAddr, Instant>,
        t0: Instant,
    }

    impl World {
        fn new(live: &[&str]) -> World {
            World {
                live: set(live),
                holders: BTreeMap::new(),
                free_since: BTreeMap::new(),
                t0: Instant::now(),
            }
        }
        fn decide(&self, me: &str, wanted: &[Wanted], after: Duration) -> Decision {
            let obs = Observed {
                me,
                now: self.t0 + after,
                live: &self.live,
                holders: &self.holders,
                free_since: &self.free_since,
            };
            decide(wanted, &obs, RENEW)
        }
    }

    /// The first-ranked live candidate for `addr`.
    fn best(addr: &str, nodes: &[&str]) -> String {
        let names = set(nodes);
        ranking(ip(addr), names.iter())[0].clone()
    }

    #[test]
    fn only_the_first_ranked_node_acquires_a_free_address_at_once() {
        let nodes = ["a", "b", "c"];
        let mut w = World::new(&nodes);
        w.free_since.insert(ip("192.0.2.10"), w.t0);
        let wanted = [want("192.0.2.10", &nodes)];
        let first = best("192.0.2.10", &nodes);
        let acquirers: Vec<&str> = nodes
            .iter()
            .copied()
            .filter(|n| {
                w.decide(n, &wanted, Duration::ZERO)
                    .steps
                    .contains(&Step::Acquire {
                        ip: ip("192.0.2.10"),
                        from: None,
                    })
            })
            .collect();
        assert_eq!(acquirers, [first.as_str()]);
        // After one renew interval the second-ranked node acquires too (the first did not act);
        // the third still waits.
        let ranked = ranking(ip("192.0.2.10"), w.live.iter());
        let d = w.decide(ranked[1], &wanted, RENEW);
        assert!(matches!(d.steps[..], [Step::Acquire { .. }]));
        let d = w.decide(ranked[2], &wanted, RENEW);
        assert!(d.steps.is_empty());
        assert!(d.waiting.contains(&ip("192.0.2.10")));
    }

    #[test]
    fn addresses_spread_over_nodes() {
        let nodes = ["node-a", "node-b", "node-c"];
        let names = set(&nodes);
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..300u32 {
            let addr = IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]);
            *per_node
                .entry(ranking(addr, names.iter())[0].clone())
                .or_default() += 1;
        }
        assert_eq!(per_node.len(), 3);
        assert!(per_node.values().all(|n| *n > 60), "{per_node:?}");
    }

    #[test]
    fn holder_serves_while_eligible_and_releases_when_not() {
        let mut w = World::new(&["a", "b"]);
        w.holders.insert(ip("192.0.2.10"), Some("a".into()));
        let d = w.decide("a", &[want("192.0.2.10", &["a", "b"])], Duration::ZERO);
        assert_eq!(d.serve, [ip("192.0.2.10")].into());
        assert!(d.steps.is_empty());
        // b does nothing while a is live and holds it.
        let d = w.decide("b", &[want("192.0.2.10", &["a", "b"])], Duration::ZERO);
        assert_eq!(d, Decision::default());
        // a loses eligibility (its last local endpoint went away): release, stop serving.
        let d = w.decide("a", &[want("192.0.2.10", &["b"])], Duration::ZERO);
        assert!(d.serve.is_empty());
        assert_eq!(d.steps, [Step::Release(ip("192.0.2.10"))]);
    }

    #[test]
    fn a_dead_holder_is_taken_over_and_a_node_without_heartbeat_stops_serving() {
        let mut w = World::new(&["b"]);
        w.holders.insert(ip("192.0.2.10"), Some("a".into()));
        w.free_since.insert(ip("192.0.2.10"), w.t0);
        let d = w.decide("b", &[want("192.0.2.10", &["a", "b"])], Duration::ZERO);
        assert_eq!(
            d.steps,
            [Step::Acquire {
                ip: ip("192.0.2.10"),
                from: Some("a".into())
            }]
        );
        // a itself, if it still runs but its own heartbeat is not valid: no answers, no writes.
        let d = w.decide("a", &[want("192.0.2.10", &["a", "b"])], Duration::ZERO);
        assert_eq!(d, Decision::default());
    }

    #[test]
    fn no_move_back_when_a_better_ranked_node_returns() {
        let addr = "192.0.2.10";
        let nodes = ["a", "b", "c"];
        let first = best(addr, &nodes);
        let other = nodes.iter().find(|n| **n != first).unwrap().to_string();
        let mut w = World::new(&nodes);
        w.holders.insert(ip(addr), Some(other.clone()));
        let d = w.decide(&first, &[want(addr, &nodes)], Duration::from_secs(10));
        assert!(d.steps.is_empty());
        assert!(w
            .decide(&other, &[want(addr, &nodes)], Duration::ZERO)
            .serve
            .contains(&ip(addr)));
    }

    #[test]
    fn ineligible_nodes_never_acquire() {
        let mut w = World::new(&["a", "b"]);
        w.free_since.insert(ip("192.0.2.10"), w.t0);
        let d = w.decide("a", &[want("192.0.2.10", &["b"])], Duration::from_secs(60));
        assert_eq!(d, Decision::default());
        // Nor does a node whose own heartbeat is not live.
        let d = w.decide("c", &[want("192.0.2.10", &["c"])], Duration::from_secs(60));
        assert_eq!(d, Decision::default());
    }

    #[test]
    fn unwanted_leases_are_deleted_by_their_holder_or_the_first_live_node() {
        let mut w = World::new(&["a", "b"]);
        w.holders.insert(ip("192.0.2.10"), Some("b".into()));
        w.holders.insert(ip("192.0.2.11"), Some("gone".into()));
        w.holders.insert(ip("192.0.2.12"), None);
        let d = w.decide("b", &[], Duration::ZERO);
        assert_eq!(d.steps, [Step::Delete(ip("192.0.2.10"))]);
        let d = w.decide("a", &[], Duration::ZERO);
        assert_eq!(
            d.steps,
            [
                Step::Delete(ip("192.0.2.11")),
                Step::Delete(ip("192.0.2.12"))
            ]
        );
    }
}
