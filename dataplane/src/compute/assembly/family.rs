//! Per-family bookkeeping of the assembly: every element, shared chain and dynamic set with the
//! contributions that keep it alive, and the operations that turn a batch of removed and added
//! fragments into the difference.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::compute::model::{Chain, Op, SetSpec};
use crate::compute::render::Fragment;
use crate::types::Family;

pub(super) type ElemKey = (&'static str, String);
/// Hash containers for ~10⁵ short string keys: SipHash's DoS resistance buys nothing for keys we
/// render ourselves, and it was the largest single cost of a full sync's bookkeeping.
pub(super) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
pub(super) type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

#[derive(Clone, Debug)]
pub(super) struct FamilyAssembly {
    pub(super) skeleton: crate::compute::model::Table,
    /// Contributed values per element; the first one is in effect.
    pub(super) elements: FastMap<ElemKey, Vec<Option<String>>>,
    /// Number of distinct elements per set (for declared-size checks).
    pub(super) per_set: HashMap<&'static str, usize>,
    /// Chain definition and reference count.
    pub(super) chains: HashMap<String, (Chain, usize)>,
    /// Dynamic set declaration and reference count.
    pub(super) sets: HashMap<String, (SetSpec, usize)>,
}

/// Changes collected during one update, compared at the end to produce operations.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) elements: HashMap<ElemKey, Option<Option<String>>>,
    pub(super) chains: HashMap<String, Option<Chain>>,
    pub(super) sets: HashMap<String, Option<SetSpec>>,
}

impl FamilyAssembly {
    pub(super) fn effective(&self, k: &ElemKey) -> Option<Option<String>> {
        self.elements.get(k).and_then(|v| v.first().cloned())
    }

    pub(super) fn remove(&mut self, f: &Fragment, p: &mut Pending) {
        for (set, key, value) in &f.elements {
            let k = (*set, key.clone());
            let before = self.effective(&k);
            p.elements.entry(k.clone()).or_insert(before);
            if let Some(vals) = self.elements.get_mut(&k) {
                if let Some(i) = vals.iter().position(|v| v == value) {
                    vals.remove(i);
                }
                if vals.is_empty() {
                    self.elements.remove(&k);
                    if let Some(n) = self.per_set.get_mut(set) {
                        *n = n.saturating_sub(1);
                    }
                }
            }
        }
        for name in f.chains.keys() {
            let before = self.chains.get(name).map(|(c, _)| c.clone());
            p.chains.entry(name.clone()).or_insert(before);
            if let Some(entry) = self.chains.get_mut(name) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    self.chains.remove(name);
                }
            }
        }
        for name in f.sets.keys() {
            let before = self.sets.get(name).map(|(s, _)| s.clone());
            p.sets.entry(name.clone()).or_insert(before);
            if let Some(entry) = self.sets.get_mut(name) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    self.sets.remove(name);
                }
            }
        }
    }

    pub(super) fn add(&mut self, f: &Fragment, p: &mut Pending) {
        for (set, key, value) in &f.elements {
            let k = (*set, key.clone());
            let before = self.effective(&k);
            p.elements.entry(k.clone()).or_insert(before);
            let vals = self.elements.entry(k).or_default();
            if vals.is_empty() {
                *self.per_set.entry(set).or_default() += 1;
            }
            vals.push(value.clone());
        }
        for (name, chain) in &f.chains {
            let before = self.chains.get(name).map(|(c, _)| c.clone());
            p.chains.entry(name.clone()).or_insert(before);
            let entry = self
                .chains
                .entry(name.clone())
                .or_insert_with(|| (chain.clone(), 0));
            // A per-Service chain whose content changed: the newest definition wins.
            entry.0 = chain.clone();
            entry.1 += 1;
        }
        for (name, spec) in &f.sets {
            let before = self.sets.get(name).map(|(s, _)| s.clone());
            p.sets.entry(name.clone()).or_insert(before);
            let entry = self
                .sets
                .entry(name.clone())
                .or_insert_with(|| (spec.clone(), 0));
            entry.1 += 1;
        }
    }

    /// Adds a fragment without change tracking (full builds).
    pub(super) fn add_untracked(&mut self, f: &Fragment) {
        for (set, key, value) in &f.elements {
            let vals = self.elements.entry((*set, key.clone())).or_default();
            if vals.is_empty() {
                *self.per_set.entry(set).or_default() += 1;
            }
            vals.push(value.clone());
        }
        for (name, chain) in &f.chains {
            let entry = self
                .chains
                .entry(name.clone())
                .or_insert_with(|| (chain.clone(), 0));
            entry.1 += 1;
        }
        for (name, spec) in &f.sets {
            let entry = self
                .sets
                .entry(name.clone())
                .or_insert_with(|| (spec.clone(), 0));
            entry.1 += 1;
        }
    }

    pub(super) fn ops(&self, fam: Family, p: Pending, out: &mut OpBuckets) {
        let mut del: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        let mut add: BTreeMap<&'static str, Vec<(String, Option<String>)>> = BTreeMap::new();
        for (k, before) in p.elements {
            let after = self.effective(&k);
            if before == after {
                continue;
            }
            if before.is_some() {
                del.entry(k.0).or_default().push(k.1.clone());
            }
            if let Some(v) = after {
                add.entry(k.0).or_default().push((k.1, v));
            }
        }
        for (set, mut keys) in del {
            keys.sort();
            out.delete_elements.push(Op::DeleteElements {
                family: fam,
                set: set.to_string(),
                keys,
            });
        }
        for (set, mut elements) in add {
            elements.sort();
            out.add_elements.push(Op::AddElements {
                family: fam,
                set: set.to_string(),
                elements,
            });
        }
        let mut sets: Vec<_> = p.sets.into_iter().collect();
        sets.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, before) in sets {
            let after = self.sets.get(&name).map(|(s, _)| s.clone());
            match (before, after) {
                (None, Some(spec)) => out.declare.push(Op::AddSet {
                    family: fam,
                    name,
                    spec,
                }),
                (Some(before), None) => out.delete_sets.push(Op::DeleteSet {
                    family: fam,
                    name,
                    map: before.map,
                }),
                _ => {}
            }
        }
        let mut chains: Vec<_> = p.chains.into_iter().collect();
        chains.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, before) in chains {
            let after = self.chains.get(&name).map(|(c, _)| c.clone());
            match (before, after) {
                (None, Some(c)) => {
                    out.declare.push(Op::AddChain {
                        family: fam,
                        name: name.clone(),
                        base: None,
                    });
                    for r in c.rules {
                        out.rules.push(Op::AddRule {
                            family: fam,
                            chain: name.clone(),
                            rule: r,
                        });
                    }
                }
                (Some(_), None) => out.stale_chains.push((fam, name)),
                (Some(b), Some(a)) if b.rules != a.rules => {
                    out.rules.push(Op::FlushChain {
                        family: fam,
                        name: name.clone(),
                    });
                    for r in a.rules {
                        out.rules.push(Op::AddRule {
                            family: fam,
                            chain: name.clone(),
                            rule: r,
                        });
                    }
                }
                _ => {}
            }
        }
    }
}

#[derive(Default)]
pub(super) struct OpBuckets {
    pub(super) declare: Vec<Op>,
    pub(super) rules: Vec<Op>,
    pub(super) delete_elements: Vec<Op>,
    pub(super) add_elements: Vec<Op>,
    pub(super) stale_chains: Vec<(Family, String)>,
    pub(super) delete_sets: Vec<Op>,
}
