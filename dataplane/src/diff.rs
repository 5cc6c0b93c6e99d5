//! Minimal transactions between two models, and the full-sync transaction that converges any kernel
//! state (described by [`Existing`]) to a model without deleting the table.

use crate::model::{Model, Op, Transaction};
use crate::types::Family;

/// Why a partial diff is impossible and a full sync is required.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeedsFullSync(pub String);

/// Computes the transaction turning `old` (what the kernel holds) into `new`.
///
/// Order: declare new sets and chains; rewrite changed chains (flush + rules) and fill new ones; delete
/// stale or changed elements; add new or changed elements; flush then delete stale chains; delete stale
/// sets. Elements of dynamic (affinity) sets are never touched. A changed set declaration or base-chain
/// hook cannot be done incrementally and yields [`NeedsFullSync`].
pub fn diff(old: &Model, new: &Model) -> Result<Transaction, NeedsFullSync> {
    let mut tx = Transaction::new();
    let empty_tables: Vec<Family> = new
        .tables
        .keys()
        .filter(|f| !old.tables.contains_key(f))
        .copied()
        .collect();
    for f in &empty_tables {
        tx.push(Op::AddTable { family: *f });
    }
    let mut rules = vec![];
    let mut deletes = vec![];
    let mut adds = vec![];
    let mut stale_chains = vec![];
    let mut stale_sets = vec![];
    for (fam, nt) in &new.tables {
        let fam = *fam;
        let ot = old.tables.get(&fam);
        for (name, ns) in &nt.sets {
            match ot.and_then(|t| t.sets.get(name)) {
                Some(os) if os.spec != ns.spec => {
                    return Err(NeedsFullSync(format!("declaration of {name} changed")));
                }
                Some(os) => {
                    if ns.spec.is_dynamic() {
                        continue;
                    }
                    let del: Vec<String> = os
                        .elements
                        .iter()
                        .filter(|(k, v)| ns.elements.get(*k) != Some(*v))
                        .map(|(k, _)| k.clone())
                        .collect();
                    if !del.is_empty() {
                        deletes.push(Op::DeleteElements {
                            family: fam,
                            set: name.clone(),
                            keys: del,
                        });
                    }
                    let add: Vec<(String, Option<String>)> = ns
                        .elements
                        .iter()
                        .filter(|(k, v)| os.elements.get(*k) != Some(*v))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    if !add.is_empty() {
                        adds.push(Op::AddElements {
                            family: fam,
                            set: name.clone(),
                            elements: add,
                        });
                    }
                }
                None => {
                    tx.push(Op::AddSet {
                        family: fam,
                        name: name.clone(),
                        spec: ns.spec.clone(),
                    });
                    if !ns.elements.is_empty() && !ns.spec.is_dynamic() {
                        adds.push(Op::AddElements {
                            family: fam,
                            set: name.clone(),
                            elements: ns
                                .elements
                                .iter()
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect(),
                        });
                    }
                }
            }
        }
        for (name, nc) in &nt.chains {
            match ot.and_then(|t| t.chains.get(name)) {
                Some(oc) if oc.base != nc.base => {
                    return Err(NeedsFullSync(format!("hook of chain {name} changed")));
                }
                Some(oc) if oc.rules == nc.rules => {}
                Some(_) => {
                    rules.push(Op::FlushChain {
                        family: fam,
                        name: name.clone(),
                    });
                    for r in &nc.rules {
                        rules.push(Op::AddRule {
                            family: fam,
                            chain: name.clone(),
                            rule: r.clone(),
                        });
                    }
                }
                None => {
                    tx.push(Op::AddChain {
                        family: fam,
                        name: name.clone(),
                        base: nc.base,
                    });
                    for r in &nc.rules {
                        rules.push(Op::AddRule {
                            family: fam,
                            chain: name.clone(),
                            rule: r.clone(),
                        });
                    }
                }
            }
        }
        if let Some(ot) = ot {
            for name in ot.chains.keys().filter(|n| !nt.chains.contains_key(*n)) {
                stale_chains.push((fam, name.clone()));
            }
            for (name, s) in ot.sets.iter().filter(|(n, _)| !nt.sets.contains_key(*n)) {
                stale_sets.push((fam, name.clone(), s.spec.map));
            }
        }
    }
    for (fam, ot) in &old.tables {
        if !new.tables.contains_key(fam) {
            return Err(NeedsFullSync(format!("family {fam:?} removed")));
        }
        let _ = ot;
    }
    for op in rules.into_iter().chain(deletes).chain(adds) {
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
    for (family, name, map) in stale_sets {
        tx.push(Op::DeleteSet { family, name, map });
    }
    Ok(tx)
}

/// Names of the objects that exist in one kernel table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExistingTable {
    /// Chain names.
    pub chains: Vec<String>,
    /// (set or map name, is_map).
    pub sets: Vec<(String, bool)>,
}

/// What exists in the kernel, per family (`None` entry = table absent).
pub type Existing = std::collections::BTreeMap<Family, ExistingTable>;

/// A transaction that makes the kernel equal `new` whatever it holds now, without deleting the table
/// (so established connections and affinity state survive):
/// flush every existing chain; delete every existing non-dynamic set (so declarations are repaired) and
/// every stale dynamic set; delete stale chains; declare everything; add all rules and elements. Tables
/// that exist in the kernel for a family no longer configured are deleted.
pub fn full_sync(existing: &Existing, new: &Model) -> Transaction {
    full_sync_with(
        existing,
        new.tables.keys().copied().collect(),
        |fam, name| {
            new.tables
                .get(&fam)
                .and_then(|t| t.sets.get(name))
                .is_some_and(|s| s.spec.is_dynamic())
        },
        |fam, name| {
            new.tables
                .get(&fam)
                .is_some_and(|t| t.chains.contains_key(name))
        },
        new.create_transaction(),
    )
}

/// [`full_sync`] with the desired state described by callbacks and its creation transaction.
pub fn full_sync_with(
    existing: &Existing,
    families: Vec<Family>,
    keep_dynamic_set: impl Fn(Family, &str) -> bool,
    chain_wanted: impl Fn(Family, &str) -> bool,
    create: Transaction,
) -> Transaction {
    let mut tx = Transaction::new();
    for (fam, ex) in existing {
        if !families.contains(fam) {
            for c in &ex.chains {
                tx.push(Op::FlushChain {
                    family: *fam,
                    name: c.clone(),
                });
            }
            for c in &ex.chains {
                tx.push(Op::DeleteChain {
                    family: *fam,
                    name: c.clone(),
                });
            }
            for (s, map) in &ex.sets {
                tx.push(Op::DeleteSet {
                    family: *fam,
                    name: s.clone(),
                    map: *map,
                });
            }
        }
    }
    for fam in &families {
        let fam = *fam;
        tx.push(Op::AddTable { family: fam });
        let Some(ex) = existing.get(&fam) else {
            continue;
        };
        for c in &ex.chains {
            tx.push(Op::FlushChain {
                family: fam,
                name: c.clone(),
            });
        }
        for (s, map) in &ex.sets {
            if !keep_dynamic_set(fam, s) {
                tx.push(Op::DeleteSet {
                    family: fam,
                    name: s.clone(),
                    map: *map,
                });
            }
        }
        for c in ex.chains.iter().filter(|c| !chain_wanted(fam, c)) {
            tx.push(Op::DeleteChain {
                family: fam,
                name: c.clone(),
            });
        }
    }
    // The create transaction starts with AddTable ops, which are already present.
    let mut rest = Transaction::new();
    for op in create.into_ops() {
        if !matches!(op, Op::AddTable { .. }) {
            rest.push(op);
        }
    }
    tx.extend(rest);
    tx
}
