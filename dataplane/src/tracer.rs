//! A packet tracer over a rendered [`Model`] (tests only): answers "where does this new connection
//! go?" by interpreting the rule shapes the renderer emits, in hook order (filter pre-DNAT, nat
//! DNAT, filter checks, postrouting masquerade).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::compute::model::{Model, Table};
use crate::compute::names::*;
use crate::types::{Family, Protocol};

/// A new connection's first packet.
#[derive(Clone, Debug)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Protocol,
    pub dport: u16,
    /// `fib saddr type local`: sent by the node itself.
    pub src_local: bool,
    /// `fib daddr type local`: addressed to one of the node's addresses.
    pub dst_local: bool,
    /// `iifname`: the interface it arrived on ("" when sent by the node itself).
    pub iifname: &'static str,
}

/// What happens to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// DNATed to one of these endpoints; `masq` tells whether it is masqueraded.
    Dnat {
        endpoints: BTreeSet<String>,
        masq: bool,
    },
    /// Rejected.
    Reject,
    /// Dropped.
    Drop,
    /// Untouched by svcnet.
    Accept,
}

pub fn pkt(src: &str, dst: &str, proto: Protocol, dport: u16) -> Packet {
    Packet {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        proto,
        dport,
        src_local: false,
        dst_local: false,
        iifname: "",
    }
}

/// Whether interface `name` matches an `iifname` operand as nft does: `prefix*` is a prefix
/// match, anything else an exact one (quotes stripped).
fn ifname_matches(operand: &str, name: &str) -> bool {
    let operand = operand.trim_matches('"');
    match operand.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == operand,
    }
}

fn in_set(t: &Table, set: &str, key: &str) -> bool {
    t.sets
        .get(set)
        .is_some_and(|s| s.elements.contains_key(key))
}

fn in_cidr_set(t: &Table, set: &str, ip: &IpAddr) -> bool {
    t.sets.get(set).is_some_and(|s| {
        s.elements
            .keys()
            .any(|k| k.parse::<IpNet>().map(|n| n.contains(ip)).unwrap_or(false))
    })
}

fn lookup(t: &Table, set: &str, key: &str) -> Option<String> {
    t.sets
        .get(set)
        .and_then(|s| s.elements.get(key).cloned().flatten())
}

struct Ctx<'a> {
    t: &'a Table,
    p: &'a Packet,
    masq: bool,
    dnat: BTreeSet<String>,
}

impl Ctx<'_> {
    fn tuple(&self) -> String {
        format!("{} . {} . {}", self.p.dst, self.p.proto.nft(), self.p.dport)
    }

    fn nodeport_match(&self) -> bool {
        if self.t.sets.contains_key(NODEPORT_IPS) {
            in_set(self.t, NODEPORT_IPS, &self.p.dst.to_string())
        } else {
            self.p.dst_local && !self.p.dst.is_loopback()
        }
    }

    /// Runs a regular chain; returns true when a terminal verdict (dnat) happened.
    fn run_chain(&mut self, name: &str) -> bool {
        let chain = self
            .t
            .chains
            .get(name)
            .unwrap_or_else(|| panic!("missing chain {name}"));
        for rule in chain.rules.clone() {
            if self.run_rule(&rule) {
                return true;
            }
        }
        false
    }

    fn run_rule(&mut self, rule: &str) -> bool {
        let words: Vec<&str> = rule.split_whitespace().collect();
        let src_in_cidrs = in_cidr_set(self.t, CLUSTER_CIDRS, &self.p.src);
        // Conditions.
        let mut rest: &[&str] = &words;
        loop {
            match rest {
                [_, "saddr", "!=", "@cluster-cidrs", tail @ ..] => {
                    if src_in_cidrs {
                        return false;
                    }
                    rest = tail;
                }
                [_, "saddr", "@cluster-cidrs", tail @ ..] => {
                    if !src_in_cidrs {
                        return false;
                    }
                    rest = tail;
                }
                ["iifname", "!=", name, tail @ ..] => {
                    if ifname_matches(name, self.p.iifname) {
                        return false;
                    }
                    rest = tail;
                }
                ["iifname", name, tail @ ..] => {
                    if !ifname_matches(name, self.p.iifname) {
                        return false;
                    }
                    rest = tail;
                }
                ["fib", "saddr", "type", "local", tail @ ..] => {
                    if !self.p.src_local {
                        return false;
                    }
                    rest = tail;
                }
                // `meta l4proto <p> …` (not the `meta l4proto . th dport` key expression).
                ["meta", "l4proto", proto, tail @ ..] if *proto != "." => {
                    if *proto != self.p.proto.nft() {
                        return false;
                    }
                    rest = tail;
                }
                ["numgen", "random", "mod", _, "==", "0", tail @ ..] => {
                    // Either outcome is possible: record this branch and continue with the next rule.
                    self.collect_affinity_target(tail);
                    return false;
                }
                [_, "saddr", set, "update", ..] if set.starts_with('@') => {
                    // Existing affinity: not present for a first packet.
                    return false;
                }
                _ => break,
            }
        }
        match rest {
            ["jump", "mark-for-masquerade"] => {
                self.masq = true;
                false
            }
            ["goto", target] => self.run_chain(target),
            ["dnat", _, "to", ..] if rule.contains("map @") => {
                let map = rule.rsplit('@').next().unwrap_or_default();
                let n: usize = words
                    .iter()
                    .position(|w| *w == "mod")
                    .and_then(|i| words.get(i + 1))
                    .and_then(|n| n.parse().ok())
                    .expect("numgen modulus");
                // Backend maps are per protocol and keyed without it.
                let prefix = if map.starts_with("nodeport") {
                    self.p.dport.to_string()
                } else {
                    format!("{} . {}", self.p.dst, self.p.dport)
                };
                for i in 0..n {
                    let ep = lookup(self.t, map, &format!("{prefix} . {i}"))
                        .unwrap_or_else(|| panic!("slot {i} of {prefix} missing in {map}"));
                    self.dnat.insert(ep.replace(" . ", ":"));
                }
                true
            }
            ["update", ..] => {
                self.collect_affinity_target(rest);
                true
            }
            other => panic!("tracer does not understand rule {other:?}"),
        }
    }

    fn collect_affinity_target(&mut self, words: &[&str]) {
        let target = words.last().expect("dnat target");
        let t = target.replace(['[', ']'], "");
        let (ip, port) = t.rsplit_once(':').expect("ip:port");
        self.dnat.insert(format!("{ip}:{port}"));
    }
}

/// Traces `p` through the model's table of its family.
pub fn trace(m: &Model, p: &Packet) -> Verdict {
    let fam = Family::of(&p.dst);
    let t = m.tables.get(&fam).expect("table for family");
    let mut c = Ctx {
        t,
        p,
        masq: false,
        dnat: BTreeSet::new(),
    };
    let tuple = c.tuple();
    // filter-prerouting-pre-dnat / filter-output-pre-dnat → firewall-check
    if in_set(t, FIREWALL_IPS, &tuple) {
        let allowed = t.sets.get(FIREWALL_ALLOW).is_some_and(|s| {
            s.elements.keys().any(|k| {
                k.strip_prefix(&format!("{tuple} . "))
                    .and_then(|r| r.parse::<IpNet>().ok())
                    .is_some_and(|n| n.contains(&p.src))
            })
        });
        if !allowed {
            return Verdict::Drop;
        }
    }
    // nat → services
    let entry = lookup(t, SERVICE_IPS, &tuple).or_else(|| {
        c.nodeport_match()
            .then(|| {
                lookup(
                    t,
                    SERVICE_NODEPORTS,
                    &format!("{} . {}", p.proto.nft(), p.dport),
                )
            })
            .flatten()
    });
    let dnat = match entry {
        Some(v) => {
            let target = v.strip_prefix("goto ").expect("goto verdict").to_string();
            c.run_chain(&target)
        }
        None => false,
    };
    if dnat {
        // masquerading: hairpin
        let hairpin = c.dnat.iter().any(|ep| {
            let ip = ep.rsplit_once(':').map(|(ip, _)| ip).unwrap_or_default();
            ip == p.src.to_string() && in_set(t, HAIRPIN, &format!("{ip} . {ip}"))
        });
        return Verdict::Dnat {
            endpoints: c.dnat,
            masq: c.masq || hairpin,
        };
    }
    // filter checks (input for local destinations, forward/output otherwise)
    let verdict = |v: Option<String>| match v.as_deref() {
        Some("drop") => Some(Verdict::Drop),
        Some(v) if v.contains(REJECT_CHAIN) => Some(Verdict::Reject),
        _ => None,
    };
    if p.dst_local && c.nodeport_match() {
        if let Some(v) = verdict(lookup(
            t,
            NO_ENDPOINT_NODEPORTS,
            &format!("{} . {}", p.proto.nft(), p.dport),
        )) {
            return v;
        }
    }
    if let Some(v) = verdict(lookup(t, NO_ENDPOINT_SERVICES, &tuple)) {
        return v;
    }
    if !p.dst_local {
        if in_set(t, CLUSTER_IPS, &p.dst.to_string()) {
            return Verdict::Reject;
        }
        if in_cidr_set(t, SERVICE_CIDRS, &p.dst) {
            return Verdict::Drop;
        }
    }
    Verdict::Accept
}
