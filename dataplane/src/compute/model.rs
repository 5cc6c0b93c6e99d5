//! An in-memory nftables model (tables, chains, rules, sets, maps, elements), transactions over it, and
//! their deterministic rendering to `nft -f` script text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::compute::names;
use crate::error::{Error, Result};
use crate::types::Family;

mod validate;

pub use validate::{validate_element, validate_set_name};

/// Base chain type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainType {
    /// `filter`.
    Filter,
    /// `nat`.
    Nat,
}

/// Netfilter hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// prerouting.
    Prerouting,
    /// input.
    Input,
    /// forward.
    Forward,
    /// output.
    Output,
    /// postrouting.
    Postrouting,
}

/// Hook attachment of a base chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaseChain {
    /// Chain type.
    pub kind: ChainType,
    /// Hook.
    pub hook: Hook,
    /// Numeric priority.
    pub priority: i32,
}

impl BaseChain {
    fn render(&self) -> String {
        let kind = match self.kind {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
        };
        let hook = match self.hook {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        };
        format!("type {kind} hook {hook} priority {} ;", self.priority)
    }
}

/// A chain: optional hook plus ordered rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// Hook attachment for base chains.
    pub base: Option<BaseChain>,
    /// Rules, each one line of nft syntax without the `add rule` prefix.
    pub rules: Vec<String>,
}

/// Declaration of a set or map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetSpec {
    /// Map (`true`) or set.
    pub map: bool,
    /// Key declaration, e.g. `type ipv4_addr` or `typeof ip daddr . th dport`.
    pub key: String,
    /// Value declaration for maps, e.g. `verdict` (rendered after ` : `).
    pub value: Option<String>,
    /// Flags (`interval`, `dynamic`, `timeout`).
    pub flags: Vec<&'static str>,
    /// Default timeout in seconds (dynamic sets).
    pub timeout: Option<u32>,
    /// Declared size (also the kernel's cap on the element count); see [`crate::compute::sizing`].
    pub size: Option<u32>,
}

impl SetSpec {
    /// A plain set of `key`.
    pub fn set(key: impl Into<String>) -> Self {
        SetSpec {
            map: false,
            key: key.into(),
            value: None,
            flags: vec![],
            timeout: None,
            size: None,
        }
    }

    /// A map from `key` to `value`.
    pub fn map(key: impl Into<String>, value: impl Into<String>) -> Self {
        SetSpec {
            map: true,
            key: key.into(),
            value: Some(value.into()),
            flags: vec![],
            timeout: None,
            size: None,
        }
    }

    /// Adds a flag.
    pub fn flag(mut self, f: &'static str) -> Self {
        self.flags.push(f);
        self
    }

    /// Whether elements are added by the packet path (never managed by the proxy).
    pub fn is_dynamic(&self) -> bool {
        self.flags.contains(&"dynamic")
    }

    fn render(&self) -> String {
        let mut s = String::new();
        match &self.value {
            Some(v) => {
                // `typeof` keys need a `typeof` value; `type` keys a `type` value.
                let _ = write!(s, "{} : {v} ;", self.key);
            }
            None => {
                let _ = write!(s, "{} ;", self.key);
            }
        }
        if !self.flags.is_empty() {
            let _ = write!(s, " flags {} ;", self.flags.join(","));
        }
        if let Some(t) = self.timeout {
            let _ = write!(s, " timeout {t}s ;");
        }
        if let Some(n) = self.size {
            let _ = write!(s, " size {n} ;");
        }
        s
    }
}

/// A set or map with its (proxy-managed) elements: key text → value text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    /// Declaration.
    pub spec: SetSpec,
    /// Elements, keyed by their rendered key.
    pub elements: BTreeMap<String, Option<String>>,
}

/// One table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// Family.
    pub family: Family,
    /// Chains by name.
    pub chains: BTreeMap<String, Chain>,
    /// Sets and maps by name.
    pub sets: BTreeMap<String, Set>,
}

impl Table {
    /// An empty table.
    pub fn new(family: Family) -> Self {
        Table {
            family,
            chains: BTreeMap::new(),
            sets: BTreeMap::new(),
        }
    }
}

/// The whole desired (or applied) state: one table per family, all named [`names::TABLE`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    /// Tables by family.
    pub tables: BTreeMap<Family, Table>,
}

/// Counts for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Chains.
    pub chains: usize,
    /// Rules.
    pub rules: usize,
    /// Sets and maps.
    pub sets: usize,
    /// Managed elements.
    pub elements: usize,
}

impl Model {
    /// Counts chains, rules, sets and elements.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for t in self.tables.values() {
            c.chains += t.chains.len();
            c.rules += t.chains.values().map(|ch| ch.rules.len()).sum::<usize>();
            c.sets += t.sets.len();
            c.elements += t.sets.values().map(|s| s.elements.len()).sum::<usize>();
        }
        c
    }

    /// The transaction that creates this model from nothing (also used as the canonical dump).
    pub fn create_transaction(&self) -> Transaction {
        let mut tx = Transaction::new();
        for t in self.tables.values() {
            tx.push(Op::AddTable { family: t.family });
        }
        for t in self.tables.values() {
            for (name, s) in &t.sets {
                tx.push(Op::AddSet {
                    family: t.family,
                    name: name.clone(),
                    spec: s.spec.clone(),
                });
            }
            for (name, c) in &t.chains {
                tx.push(Op::AddChain {
                    family: t.family,
                    name: name.clone(),
                    base: c.base,
                });
            }
        }
        for t in self.tables.values() {
            for (name, c) in &t.chains {
                for r in &c.rules {
                    tx.push(Op::AddRule {
                        family: t.family,
                        chain: name.clone(),
                        rule: r.clone(),
                    });
                }
            }
            for (name, s) in &t.sets {
                if !s.elements.is_empty() {
                    tx.push(Op::AddElements {
                        family: t.family,
                        set: name.clone(),
                        elements: s
                            .elements
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    });
                }
            }
        }
        tx
    }

    /// Canonical text of the model (the script that would create it).
    pub fn dump(&self) -> String {
        self.create_transaction().render()
    }
}

/// One operation of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `add table` (idempotent).
    AddTable {
        /// Family.
        family: Family,
    },
    /// `add chain` (idempotent when identical).
    AddChain {
        /// Family.
        family: Family,
        /// Name.
        name: String,
        /// Hook, for base chains.
        base: Option<BaseChain>,
    },
    /// `flush chain`.
    FlushChain {
        /// Family.
        family: Family,
        /// Name.
        name: String,
    },
    /// `delete chain`.
    DeleteChain {
        /// Family.
        family: Family,
        /// Name.
        name: String,
    },
    /// `add rule`.
    AddRule {
        /// Family.
        family: Family,
        /// Chain.
        chain: String,
        /// Rule text.
        rule: String,
    },
    /// `add set` / `add map` (idempotent when identical).
    AddSet {
        /// Family.
        family: Family,
        /// Name.
        name: String,
        /// Declaration.
        spec: SetSpec,
    },
    /// `flush set`.
    FlushSet {
        /// Family.
        family: Family,
        /// Name.
        name: String,
        /// Map or set (the keyword differs).
        map: bool,
    },
    /// `delete set` / `delete map`.
    DeleteSet {
        /// Family.
        family: Family,
        /// Name.
        name: String,
        /// Map or set.
        map: bool,
    },
    /// `add element`.
    AddElements {
        /// Family.
        family: Family,
        /// Set or map.
        set: String,
        /// (key, value) pairs.
        elements: Vec<(String, Option<String>)>,
    },
    /// `delete element`.
    DeleteElements {
        /// Family.
        family: Family,
        /// Set or map.
        set: String,
        /// Keys.
        keys: Vec<String>,
    },
}

/// A list of operations applied atomically. The first invalid operation is remembered and makes the
/// whole transaction fail (knftables' sticky error).
#[derive(Clone, Debug, Default)]
pub struct Transaction {
    ops: Vec<Op>,
    err: Option<String>,
}

/// Elements per `add element` line in rendered scripts.
const ELEMENTS_PER_LINE: usize = 2048;

impl Transaction {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// The operations.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Whether nothing is to be done.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Number of operations (each element counts as one, as upstream's op counts do).
    pub fn op_count(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Op::AddElements { elements, .. } => elements.len(),
                Op::DeleteElements { keys, .. } => keys.len(),
                _ => 1,
            })
            .sum()
    }

    /// The first validation error, if any.
    pub fn error(&self) -> Option<&str> {
        self.err.as_deref()
    }

    /// Validates and appends an operation.
    pub fn push(&mut self, op: Op) {
        if self.err.is_none() {
            if let Err(e) = validate::validate_op(&op) {
                self.err = Some(e.to_string());
            }
        }
        self.ops.push(op);
    }

    /// Returns an error if any pushed operation was invalid.
    pub fn check(&self) -> Result<()> {
        match &self.err {
            Some(e) => Err(Error::Rejected(e.clone())),
            None => Ok(()),
        }
    }

    /// Renders the script for `nft -f`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for op in &self.ops {
            op.render_into(&mut out);
        }
        out
    }
}

/// Receives operations one by one (a [`Transaction`], or a streaming writer to `nft`).
pub trait OpSink {
    /// Appends an operation.
    fn push_op(&mut self, op: Op);

    /// Appends the addition of one element. Sinks that write text directly override this to avoid
    /// building an [`Op`] per element (full syncs write ~10⁵ of them).
    fn add_element(&mut self, family: Family, set: &str, key: &str, value: Option<&str>) {
        self.push_op(Op::AddElements {
            family,
            set: set.to_string(),
            elements: vec![(key.to_string(), value.map(str::to_string))],
        });
    }
}

impl OpSink for Transaction {
    fn push_op(&mut self, op: Op) {
        self.push(op);
    }
}

impl Op {
    /// Validates the operation's names and fragments.
    pub fn validate(&self) -> Result<()> {
        validate::validate_op(self)
    }

    /// Appends the operation's script text (one or more lines) to `out`.
    pub fn render_into(&self, out: &mut String) {
        let t = names::TABLE;
        {
            let op = self;
            match op {
                Op::AddTable { family } => {
                    let _ = writeln!(
                        out,
                        "add table {} {t} {{ comment \"{}\" ; }}",
                        family.nft(),
                        names::TABLE_COMMENT
                    );
                }
                Op::AddChain { family, name, base } => match base {
                    Some(b) => {
                        let _ = writeln!(
                            out,
                            "add chain {} {t} {name} {{ {} }}",
                            family.nft(),
                            b.render()
                        );
                    }
                    None => {
                        let _ = writeln!(out, "add chain {} {t} {name}", family.nft());
                    }
                },
                Op::FlushChain { family, name } => {
                    let _ = writeln!(out, "flush chain {} {t} {name}", family.nft());
                }
                Op::DeleteChain { family, name } => {
                    let _ = writeln!(out, "delete chain {} {t} {name}", family.nft());
                }
                Op::AddRule {
                    family,
                    chain,
                    rule,
                } => {
                    let _ = writeln!(out, "add rule {} {t} {chain} {rule}", family.nft());
                }
                Op::AddSet { family, name, spec } => {
                    let kw = if spec.map { "map" } else { "set" };
                    let _ = writeln!(
                        out,
                        "add {kw} {} {t} {name} {{ {} }}",
                        family.nft(),
                        spec.render()
                    );
                }
                Op::FlushSet { family, name, map } => {
                    let kw = if *map { "map" } else { "set" };
                    let _ = writeln!(out, "flush {kw} {} {t} {name}", family.nft());
                }
                Op::DeleteSet { family, name, map } => {
                    let kw = if *map { "map" } else { "set" };
                    let _ = writeln!(out, "delete {kw} {} {t} {name}", family.nft());
                }
                Op::AddElements {
                    family,
                    set,
                    elements,
                } => {
                    for chunk in elements.chunks(ELEMENTS_PER_LINE) {
                        let _ = write!(out, "add element {} {t} {set} {{ ", family.nft());
                        for (i, (k, v)) in chunk.iter().enumerate() {
                            if i > 0 {
                                out.push_str(", ");
                            }
                            out.push_str(k);
                            if let Some(v) = v {
                                out.push_str(" : ");
                                out.push_str(v);
                            }
                        }
                        out.push_str(" }\n");
                    }
                }
                Op::DeleteElements { family, set, keys } => {
                    for chunk in keys.chunks(ELEMENTS_PER_LINE) {
                        let _ = writeln!(
                            out,
                            "delete element {} {t} {set} {{ {} }}",
                            family.nft(),
                            chunk.join(", ")
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticky_error_on_hostile_fragment() {
        let mut tx = Transaction::new();
        tx.push(Op::AddRule {
            family: Family::Ipv4,
            chain: "services".into(),
            rule: "accept\nflush ruleset".into(),
        });
        tx.push(Op::AddTable {
            family: Family::Ipv4,
        });
        assert!(tx.check().is_err());

        let mut tx = Transaction::new();
        tx.push(Op::AddElements {
            family: Family::Ipv4,
            set: "cluster-ips".into(),
            elements: vec![("10.0.0.1 } ; flush ruleset".into(), None)],
        });
        assert!(tx.check().is_err());

        let mut tx = Transaction::new();
        tx.push(Op::AddChain {
            family: Family::Ipv4,
            name: "x\"; flush".into(),
            base: None,
        });
        assert!(tx.check().is_err());
    }

    #[test]
    fn renders_elements_in_chunks() {
        let mut tx = Transaction::new();
        tx.push(Op::AddElements {
            family: Family::Ipv6,
            set: "cluster-ips".into(),
            elements: (0..5000).map(|i| (format!("fd00::{i:x}"), None)).collect(),
        });
        assert!(tx.check().is_ok());
        let text = tx.render();
        assert_eq!(text.lines().count(), 3);
        assert!(text.starts_with("add element ip6 svcnet cluster-ips { fd00::0, fd00::1"));
        assert_eq!(tx.op_count(), 5000);
    }
}
