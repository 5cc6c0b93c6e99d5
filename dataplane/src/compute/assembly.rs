//! Incremental assembly of the desired model from per-Service [`Fragment`]s.
//!
//! The assembly keeps, per family, the skeleton plus reference-counted contributions of every Service
//! (elements, shared chains, dynamic sets). [`Assembly::update`] re-renders only the Services it is told
//! about and returns the minimal transaction for the difference, so a partial sync costs O(changed
//! Services), not O(all Services) — rendering and diffing 100,000 elements on every change would not.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::compute::model::{Counts, Model, Op, Set, SetSpec, Transaction};
use crate::compute::render::{service_fragment, skeleton, Fragment};
use crate::types::{Family, NodeConfig, ProxyState, ServiceKey};

mod family;

use family::{ElemKey, FamilyAssembly, FastMap, FastSet, OpBuckets, Pending};

/// What a full sync has already written, per family (for de-duplication while streaming).
#[derive(Default)]
struct Seen {
    elements: ElementIndex,
    chains: HashSet<String>,
    sets: HashSet<String>,
}

/// Fragments streamed so far by a full sync: (family, Service, fragment).
type Streamed = Vec<(Family, ServiceKey, Fragment)>;

/// De-duplicates the elements of a full sync without copying them: the first occurrence of each
/// (set, key) hash is remembered by its position in the streamed fragments, and a later hash match
/// is confirmed by comparing the strings there. (Copying 10⁵ keys into a set was most of the time a
/// full sync spent before nft could start evaluating.)
#[derive(Default)]
struct ElementIndex {
    /// Hash of (set, key) → (fragment index, element index) of its first occurrence.
    first: FastMap<u64, (u32, u32)>,
    /// Distinct keys whose hash collided with an earlier, different key.
    collisions: FastSet<ElemKey>,
    hasher: foldhash::fast::FixedState,
}

impl ElementIndex {
    /// Whether element `j` of `current` (about to become fragment `fi`) is the first of its
    /// (set, key) in this family.
    fn first_time(&mut self, done: &Streamed, fi: usize, current: &Fragment, j: usize) -> bool {
        use std::hash::BuildHasher as _;
        let Some((set, key, _)) = current.elements.get(j) else {
            return false;
        };
        let h = self.hasher.hash_one((*set, key.as_str()));
        let (Ok(fi32), Ok(j32)) = (u32::try_from(fi), u32::try_from(j)) else {
            return self.collisions.insert((*set, key.clone()));
        };
        match self.first.entry(h) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert((fi32, j32));
                true
            }
            std::collections::hash_map::Entry::Occupied(o) => {
                let (pf, pj) = *o.get();
                let earlier = if pf as usize == fi {
                    current.elements.get(pj as usize)
                } else {
                    done.get(pf as usize)
                        .and_then(|(_, _, f)| f.elements.get(pj as usize))
                };
                match earlier {
                    Some((s, k, _)) if s == set && k == key => false,
                    _ => self.collisions.insert((*set, key.clone())),
                }
            }
        }
    }
}

/// A full sync whose operations are written; [`FullBuild::finish`] builds the [`Assembly`] that
/// partial syncs continue from.
pub struct FullBuild {
    assembly: Assembly,
    fragments: Vec<(Family, ServiceKey, Fragment)>,
}

impl FullBuild {
    /// The reference-counted bookkeeping of the streamed fragments, in the same order, so the element
    /// in effect is the one that was written.
    pub fn finish(self) -> Assembly {
        let mut a = self.assembly;
        for (fam, key, f) in self.fragments {
            if let Some(fa) = a.families.get_mut(&fam) {
                fa.add_untracked(&f);
                a.fragments.insert((fam, key), f);
            }
        }
        a
    }
}

/// The desired state, assembled from per-Service fragments.
#[derive(Clone, Debug)]
pub struct Assembly {
    node: NodeConfig,
    families: BTreeMap<Family, FamilyAssembly>,
    fragments: HashMap<(Family, ServiceKey), Fragment>,
    /// Sets declared with a size by the last full sync (see [`crate::compute::sizing`]).
    capacity: BTreeMap<(Family, String), u32>,
}

impl Assembly {
    /// The skeleton only (no Services).
    pub fn new(node: &NodeConfig) -> Self {
        let families = node
            .families
            .iter()
            .map(|f| {
                let fa = FamilyAssembly {
                    skeleton: skeleton(*f, node),
                    elements: FastMap::default(),
                    per_set: HashMap::new(),
                    chains: HashMap::new(),
                    sets: HashMap::new(),
                };
                (*f, fa)
            })
            .collect();
        Assembly {
            node: node.clone(),
            families,
            fragments: HashMap::new(),
            capacity: BTreeMap::new(),
        }
    }

    /// Full sync, first half: pushes, in a valid order, the operations that turn whatever the kernel
    /// holds (`existing`) into the state of every Service in `state`, without deleting the table:
    /// existing chains are flushed and existing non-affinity sets re-created first; stale chains and
    /// stale affinity sets are deleted last; affinity sets still wanted keep their elements.
    ///
    /// Only what is needed to write the operations happens here (rendering and de-duplication); the
    /// reference-counted bookkeeping is left to [`FullBuild::finish`], which the proxier runs while
    /// nft evaluates and commits the input.
    pub fn stream_full(
        node: &NodeConfig,
        state: &ProxyState,
        existing: &crate::compute::diff::Existing,
        sink: &mut dyn crate::compute::model::OpSink,
    ) -> FullBuild {
        let mut a = Assembly::new(node);
        let sizing = crate::compute::sizing::Sizing::estimate(state, node);
        let mut capacity = BTreeMap::new();
        let mut sized = |fam: Family, name: &str, spec: &SetSpec| -> SetSpec {
            let mut spec = spec.clone();
            if let Some(n) = sizing.size_for(fam, name) {
                spec.size = Some(n);
                capacity.insert((fam, name.to_string()), n);
            }
            spec
        };
        // Tables of families no longer configured: empty them.
        for (fam, ex) in existing {
            if a.families.contains_key(fam) {
                continue;
            }
            for c in &ex.chains {
                sink.push_op(Op::FlushChain {
                    family: *fam,
                    name: c.clone(),
                });
            }
            for c in &ex.chains {
                sink.push_op(Op::DeleteChain {
                    family: *fam,
                    name: c.clone(),
                });
            }
            for (s, map) in &ex.sets {
                sink.push_op(Op::DeleteSet {
                    family: *fam,
                    name: s.clone(),
                    map: *map,
                });
            }
        }
        let fams: Vec<Family> = a.families.keys().copied().collect();
        let mut affinity_kept: BTreeSet<(Family, String)> = BTreeSet::new();
        let mut seen: BTreeMap<Family, Seen> = BTreeMap::new();
        for &fam in &fams {
            sink.push_op(Op::AddTable { family: fam });
            if let Some(ex) = existing.get(&fam) {
                for c in &ex.chains {
                    sink.push_op(Op::FlushChain {
                        family: fam,
                        name: c.clone(),
                    });
                }
                for (s, map) in &ex.sets {
                    // Affinity sets are named `aff-…`; keep them (and their live entries) until we
                    // know they are stale. Everything else is re-created with its elements.
                    if s.starts_with("aff-") && !*map {
                        affinity_kept.insert((fam, s.clone()));
                    } else {
                        sink.push_op(Op::DeleteSet {
                            family: fam,
                            name: s.clone(),
                            map: *map,
                        });
                    }
                }
            }
            let fa = &a.families[&fam];
            for (name, set) in &fa.skeleton.sets {
                sink.push_op(Op::AddSet {
                    family: fam,
                    name: name.clone(),
                    spec: sized(fam, name, &set.spec),
                });
            }
            for (name, c) in &fa.skeleton.chains {
                sink.push_op(Op::AddChain {
                    family: fam,
                    name: name.clone(),
                    base: c.base,
                });
            }
            for (name, c) in &fa.skeleton.chains {
                for r in &c.rules {
                    sink.push_op(Op::AddRule {
                        family: fam,
                        chain: name.clone(),
                        rule: r.clone(),
                    });
                }
            }
            for (name, set) in &fa.skeleton.sets {
                if !set.elements.is_empty() {
                    let elements = set
                        .elements
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    sink.push_op(Op::AddElements {
                        family: fam,
                        set: name.clone(),
                        elements,
                    });
                }
            }
            let mut fresh = Seen::default();
            fresh.elements.first.reserve(sizing.total(fam));
            seen.insert(fam, fresh);
        }
        let mut fragments: Streamed = Vec::with_capacity(state.services.len() * fams.len());
        for svc in state.services.values() {
            for &fam in &fams {
                let Some(f) = service_fragment(fam, node, state, svc) else {
                    continue;
                };
                let seen = seen.entry(fam).or_default();
                for (name, spec) in &f.sets {
                    if !seen.sets.contains(name) {
                        seen.sets.insert(name.clone());
                        sink.push_op(Op::AddSet {
                            family: fam,
                            name: name.clone(),
                            spec: sized(fam, name, spec),
                        });
                    }
                }
                // Declare every new chain before any rule, since rules jump between them.
                let mut new_chains = vec![];
                for (name, chain) in &f.chains {
                    if !seen.chains.contains(name) {
                        seen.chains.insert(name.clone());
                        sink.push_op(Op::AddChain {
                            family: fam,
                            name: name.clone(),
                            base: None,
                        });
                        new_chains.push((name, chain));
                    }
                }
                for (name, chain) in new_chains {
                    for r in &chain.rules {
                        sink.push_op(Op::AddRule {
                            family: fam,
                            chain: name.clone(),
                            rule: r.clone(),
                        });
                    }
                }
                // The first contribution of an element is the one in effect (as in `effective`).
                let fi = fragments.len();
                for (j, (set, key, value)) in f.elements.iter().enumerate() {
                    if seen.elements.first_time(&fragments, fi, &f, j) {
                        sink.add_element(fam, set, key, value.as_deref());
                    }
                }
                fragments.push((fam, svc.key.clone(), f));
            }
        }
        for &fam in &fams {
            let Some(ex) = existing.get(&fam) else {
                continue;
            };
            let fa = &a.families[&fam];
            let wanted = |c: &String| {
                fa.skeleton.chains.contains_key(c)
                    || seen.get(&fam).is_some_and(|s| s.chains.contains(c))
            };
            for c in ex.chains.iter().filter(|c| !wanted(c)) {
                sink.push_op(Op::DeleteChain {
                    family: fam,
                    name: c.clone(),
                });
            }
        }
        for (fam, name) in affinity_kept {
            if !seen.get(&fam).is_some_and(|s| s.sets.contains(&name)) {
                sink.push_op(Op::DeleteSet {
                    family: fam,
                    name,
                    map: false,
                });
            }
        }
        a.capacity = capacity;
        FullBuild {
            assembly: a,
            fragments,
        }
    }

    /// A set declared with a size (by the last full sync) that now holds more elements than that
    /// size allows: the kernel would refuse the transaction, a full sync re-declares it bigger.
    pub fn over_capacity(&self) -> Option<(Family, String, usize, u32)> {
        self.capacity.iter().find_map(|((fam, name), &cap)| {
            let n = self
                .families
                .get(fam)
                .and_then(|fa| fa.per_set.get(name.as_str()))
                .copied()
                .unwrap_or(0);
            (n > cap as usize).then(|| (*fam, name.clone(), n, cap))
        })
    }

    /// Whether the assembled state has this dynamic set.
    pub fn has_dynamic_set(&self, fam: Family, name: &str) -> bool {
        self.families
            .get(&fam)
            .is_some_and(|fa| fa.sets.contains_key(name))
    }

    /// Whether the assembled state has this chain.
    pub fn has_chain(&self, fam: Family, name: &str) -> bool {
        self.families
            .get(&fam)
            .is_some_and(|fa| fa.chains.contains_key(name) || fa.skeleton.chains.contains_key(name))
    }

    /// The node configuration this assembly was built for.
    pub fn node(&self) -> &NodeConfig {
        &self.node
    }

    /// Every Service key with a fragment.
    pub fn services(&self) -> BTreeSet<ServiceKey> {
        self.fragments.keys().map(|(_, k)| k.clone()).collect()
    }

    /// Re-renders the given Services (present or deleted in `state`) and returns the transaction that
    /// moves the previous assembly to the new one.
    pub fn update(&mut self, state: &ProxyState, keys: BTreeSet<ServiceKey>) -> Transaction {
        let mut buckets = OpBuckets::default();
        let fams: Vec<Family> = self.families.keys().copied().collect();
        for fam in fams {
            let mut pending = Pending::default();
            for key in &keys {
                let new = state
                    .services
                    .get(key)
                    .and_then(|svc| service_fragment(fam, &self.node, state, svc));
                let idx = (fam, key.clone());
                let old = self.fragments.remove(&idx);
                if old == new {
                    if let Some(f) = old {
                        self.fragments.insert(idx, f);
                    }
                    continue;
                }
                let fa = self
                    .families
                    .get_mut(&fam)
                    .expect("families fixed at construction");
                if let Some(old) = &old {
                    fa.remove(old, &mut pending);
                }
                if let Some(new) = new {
                    fa.add(&new, &mut pending);
                    self.fragments.insert(idx, new);
                }
            }
            self.families[&fam].ops(fam, pending, &mut buckets);
        }
        let mut tx = Transaction::new();
        let OpBuckets {
            declare,
            rules,
            delete_elements,
            add_elements,
            stale_chains,
            delete_sets,
        } = buckets;
        for op in declare
            .into_iter()
            .chain(rules)
            .chain(delete_elements)
            .chain(add_elements)
        {
            tx.push(op);
        }
        for (family, name) in &stale_chains {
            tx.push(Op::FlushChain {
                family: *family,
                name: name.clone(),
            });
        }
        for (family, name) in stale_chains {
            tx.push(Op::DeleteChain { family, name });
        }
        for op in delete_sets {
            tx.push(op);
        }
        tx
    }

    /// The assembled model.
    pub fn model(&self) -> Model {
        let mut m = Model::default();
        for (fam, fa) in &self.families {
            let mut t = fa.skeleton.clone();
            for (name, (chain, _)) in &fa.chains {
                t.chains.insert(name.clone(), chain.clone());
            }
            for (name, (spec, _)) in &fa.sets {
                t.sets.insert(
                    name.clone(),
                    Set {
                        spec: spec.clone(),
                        elements: BTreeMap::new(),
                    },
                );
            }
            for ((set, key), vals) in &fa.elements {
                if let (Some(s), Some(v)) = (t.sets.get_mut(*set), vals.first()) {
                    s.elements.insert(key.clone(), v.clone());
                }
            }
            m.tables.insert(*fam, t);
        }
        m
    }

    /// Size of the assembled model, without building it.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for fa in self.families.values() {
            c.chains += fa.skeleton.chains.len() + fa.chains.len();
            c.rules += fa
                .skeleton
                .chains
                .values()
                .map(|ch| ch.rules.len())
                .sum::<usize>()
                + fa.chains
                    .values()
                    .map(|(ch, _)| ch.rules.len())
                    .sum::<usize>();
            c.sets += fa.skeleton.sets.len() + fa.sets.len();
            c.elements += fa
                .skeleton
                .sets
                .values()
                .map(|s| s.elements.len())
                .sum::<usize>()
                + fa.elements.len();
        }
        c
    }
}
