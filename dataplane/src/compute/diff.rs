//! Minimal transactions between two models, and the names of what exists in the kernel
//! ([`Existing`], which a full sync converges without deleting the table: see
//! [`crate::compute::assembly::Assembly::stream_full`]).

use crate::compute::model::{Model, Op, Transaction};
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
