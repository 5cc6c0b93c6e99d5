//! A semantic in-memory [`Nft`]: the oracle the renderer's and the sync engine's tests apply
//! transactions to, with the kernel's rules for what a transaction may reference or delete.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use super::nft::Nft;
use crate::compute::diff::{Existing, ExistingTable};
use crate::compute::model::{Chain, Model, Op, Set, Table, Transaction};
use crate::compute::names;
use crate::error::{Error, Result};
use crate::types::Family;

/// A semantic in-memory fake: applies each transaction to a copy of its state and commits only on
/// success; rejects missing objects, dangling `jump`/`goto`/`@set` references, conflicting
/// re-declarations, duplicate map keys with other values, and deletion of referenced objects.
#[derive(Clone, Debug, Default)]
pub struct FakeNft {
    state: Arc<RwLock<FakeState>>,
}

#[derive(Clone, Debug, Default)]
struct FakeState {
    model: Model,
    last: Option<Transaction>,
    runs: usize,
    fail_next: Option<String>,
}

impl FakeNft {
    /// An empty fake.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current state as a model.
    pub fn model(&self) -> Model {
        self.state
            .read()
            .map(|s| s.model.clone())
            .unwrap_or_default()
    }

    /// The current state as canonical script text.
    pub fn dump(&self) -> String {
        self.model().dump()
    }

    /// The last transaction that was run (successful or not).
    pub fn last_transaction(&self) -> Option<Transaction> {
        self.state.read().ok().and_then(|s| s.last.clone())
    }

    /// Number of `run` calls.
    pub fn runs(&self) -> usize {
        self.state.read().map(|s| s.runs).unwrap_or(0)
    }

    /// Makes the next `run` fail (to test failure handling).
    pub fn fail_next(&self, msg: &str) {
        if let Ok(mut s) = self.state.write() {
            s.fail_next = Some(msg.to_string());
        }
    }

    /// Changes state behind the proxy's back (to test drift repair).
    pub fn tamper(&self, f: impl FnOnce(&mut Model)) {
        if let Ok(mut s) = self.state.write() {
            f(&mut s.model);
        }
    }
}

fn rejected(msg: String) -> Error {
    Error::Rejected(msg)
}

/// Chains and sets a rule or verdict refers to.
fn references(text: &str) -> (Vec<String>, Vec<String>) {
    let mut chains = vec![];
    let mut sets = vec![];
    let mut words = text.split_whitespace().peekable();
    while let Some(w) = words.next() {
        if w == "jump" || w == "goto" {
            if let Some(t) = words.peek() {
                chains.push(t.to_string());
            }
        } else if let Some(s) = w.strip_prefix('@') {
            sets.push(s.to_string());
        }
    }
    (chains, sets)
}

fn table(m: &mut Model, fam: Family) -> Result<&mut Table> {
    m.tables.get_mut(&fam).ok_or_else(|| {
        rejected(format!(
            "table {} {} does not exist",
            fam.nft(),
            names::TABLE
        ))
    })
}

fn chain_referenced(t: &Table, name: &str) -> bool {
    t.chains
        .iter()
        .filter(|(n, _)| n.as_str() != name)
        .any(|(_, c)| {
            c.rules
                .iter()
                .any(|r| references(r).0.iter().any(|x| x == name))
        })
        || t.sets.values().any(|s| {
            s.elements
                .values()
                .flatten()
                .any(|v| references(v).0.iter().any(|x| x == name))
        })
}

fn set_referenced(t: &Table, name: &str) -> bool {
    t.chains.values().any(|c| {
        c.rules
            .iter()
            .any(|r| references(r).1.iter().any(|x| x == name))
    })
}

fn apply_op(m: &mut Model, op: &Op) -> Result<()> {
    match op {
        Op::AddTable { family } => {
            m.tables
                .entry(*family)
                .or_insert_with(|| Table::new(*family));
        }
        Op::AddChain { family, name, base } => {
            let t = table(m, *family)?;
            match t.chains.get(name) {
                Some(c) if c.base != *base => {
                    return Err(rejected(format!("chain {name} exists with another hook")))
                }
                Some(_) => {}
                None => {
                    t.chains.insert(
                        name.clone(),
                        Chain {
                            base: *base,
                            rules: vec![],
                        },
                    );
                }
            }
        }
        Op::FlushChain { family, name } => {
            let t = table(m, *family)?;
            t.chains
                .get_mut(name)
                .ok_or_else(|| rejected(format!("flush of missing chain {name}")))?
                .rules
                .clear();
        }
        Op::DeleteChain { family, name } => {
            let t = table(m, *family)?;
            if !t.chains.contains_key(name) {
                return Err(rejected(format!("delete of missing chain {name}")));
            }
            if chain_referenced(t, name) {
                return Err(rejected(format!("chain {name} is still referenced")));
            }
            t.chains.remove(name);
        }
        Op::AddRule {
            family,
            chain,
            rule,
        } => {
            let t = table(m, *family)?;
            let (chains, sets) = references(rule);
            for c in chains {
                if !t.chains.contains_key(&c) {
                    return Err(rejected(format!(
                        "rule in {chain} jumps to missing chain {c}"
                    )));
                }
            }
            for s in sets {
                if !t.sets.contains_key(&s) {
                    return Err(rejected(format!("rule in {chain} uses missing set {s}")));
                }
            }
            t.chains
                .get_mut(chain)
                .ok_or_else(|| rejected(format!("rule added to missing chain {chain}")))?
                .rules
                .push(rule.clone());
        }
        Op::AddSet { family, name, spec } => {
            let t = table(m, *family)?;
            match t.sets.get(name) {
                Some(s) if s.spec != *spec => {
                    return Err(rejected(format!(
                        "set {name} exists with another declaration"
                    )))
                }
                Some(_) => {}
                None => {
                    t.sets.insert(
                        name.clone(),
                        Set {
                            spec: spec.clone(),
                            elements: BTreeMap::new(),
                        },
                    );
                }
            }
        }
        Op::FlushSet { family, name, .. } => {
            table(m, *family)?
                .sets
                .get_mut(name)
                .ok_or_else(|| rejected(format!("flush of missing set {name}")))?
                .elements
                .clear();
        }
        Op::DeleteSet { family, name, .. } => {
            let t = table(m, *family)?;
            if !t.sets.contains_key(name) {
                return Err(rejected(format!("delete of missing set {name}")));
            }
            if set_referenced(t, name) {
                return Err(rejected(format!("set {name} is still referenced")));
            }
            t.sets.remove(name);
        }
        Op::AddElements {
            family,
            set,
            elements,
        } => {
            let t = table(m, *family)?;
            let chain_names: BTreeSet<String> = t.chains.keys().cloned().collect();
            let s = t
                .sets
                .get_mut(set)
                .ok_or_else(|| rejected(format!("elements added to missing set {set}")))?;
            for (k, v) in elements {
                if s.spec.map != v.is_some() {
                    return Err(rejected(format!(
                        "element {k} of {set} has the wrong shape"
                    )));
                }
                if let Some(v) = v {
                    for c in references(v).0 {
                        if !chain_names.contains(&c) {
                            return Err(rejected(format!(
                                "element {k} of {set} points to missing chain {c}"
                            )));
                        }
                    }
                }
                match s.elements.get(k) {
                    Some(old) if old != v => {
                        return Err(rejected(format!(
                            "element {k} of {set} exists with another value"
                        )))
                    }
                    _ => {
                        s.elements.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        Op::DeleteElements { family, set, keys } => {
            let t = table(m, *family)?;
            let s = t
                .sets
                .get_mut(set)
                .ok_or_else(|| rejected(format!("elements deleted from missing set {set}")))?;
            for k in keys {
                if s.elements.remove(k).is_none() {
                    return Err(rejected(format!("delete of missing element {k} in {set}")));
                }
            }
        }
    }
    Ok(())
}

impl Nft for FakeNft {
    fn run(&self, tx: &Transaction) -> Result<()> {
        let mut st = self
            .state
            .write()
            .map_err(|_| rejected("fake state lock poisoned".into()))?;
        st.runs += 1;
        st.last = Some(tx.clone());
        if let Some(msg) = st.fail_next.take() {
            return Err(rejected(msg));
        }
        tx.check()?;
        let mut copy = st.model.clone();
        for op in tx.ops() {
            apply_op(&mut copy, op)?;
        }
        st.model = copy;
        Ok(())
    }

    fn existing(&self) -> Result<Existing> {
        let st = self
            .state
            .read()
            .map_err(|_| rejected("fake state lock poisoned".into()))?;
        Ok(st
            .model
            .tables
            .iter()
            .map(|(f, t)| {
                (
                    *f,
                    ExistingTable {
                        chains: t.chains.keys().cloned().collect(),
                        sets: t
                            .sets
                            .iter()
                            .map(|(n, s)| (n.clone(), s.spec.map))
                            .collect(),
                    },
                )
            })
            .collect())
    }
}
