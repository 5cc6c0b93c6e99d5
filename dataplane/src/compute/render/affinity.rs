//! ClientIP session affinity: per-Service-port chains and one dynamic timeout set per
//! endpoint, with a uniform random pick for new clients.

use std::net::IpAddr;

use super::FamilyRenderer;
use crate::compute::endpoints::{Categorized, Endpoint};
use crate::compute::model::SetSpec;
use crate::compute::names::{self, *};
use crate::types::{ServiceInfo, ServicePort};

impl FamilyRenderer<'_> {
    /// Per-Service-port chains for ClientIP affinity. Returns (ClusterIP entry, external entry, NodePort entry).
    pub(super) fn affinity_chains(
        &mut self,
        svc: &ServiceInfo,
        port: &ServicePort,
        cats: &Categorized,
        external: bool,
        has_internal: bool,
        timeout: u32,
    ) -> (Option<String>, Option<String>, Option<String>) {
        let h = names::hash(&[
            &svc.key.namespace,
            &svc.key.name,
            port.protocol.nft(),
            &port.name,
        ]);
        let cluster_chain = format!("aff-{h}-c");
        let local_chain = format!("aff-{h}-l");
        let ensure_pick = |r: &mut Self, name: &str, eps: &[Endpoint]| {
            if eps.is_empty() || r.frag.chains.contains_key(name) {
                return;
            }
            let rules = r.affinity_pick_rules(svc, port, eps, timeout);
            r.frag_chain(name, rules);
        };
        let internal_list = if svc.internal_policy_local {
            &cats.local
        } else {
            &cats.cluster
        };
        let internal_pick = if svc.internal_policy_local {
            &local_chain
        } else {
            &cluster_chain
        };
        let internal = if has_internal {
            ensure_pick(self, internal_pick, internal_list);
            let mut rules: Vec<String> = self.masq_rule.iter().cloned().collect();
            rules.push(format!("goto {internal_pick}"));
            let name = format!("aff-{h}-cip");
            self.frag_chain(&name, rules);
            Some(name)
        } else {
            None
        };
        let ext = if external {
            ensure_pick(self, &cluster_chain, &cats.cluster);
            let rules = if svc.external_policy_local {
                ensure_pick(self, &local_chain, &cats.local);
                let local = (!cats.local.is_empty()).then_some(local_chain.as_str());
                self.external_local_rules(&cluster_chain, local)
            } else {
                vec![
                    format!("jump {MARK_FOR_MASQUERADE}"),
                    format!("goto {cluster_chain}"),
                ]
            };
            let name = format!("aff-{h}-ext");
            self.frag_chain(&name, rules);
            Some(name)
        } else {
            None
        };
        let np = if port.node_port.is_some() {
            ext.clone()
        } else {
            None
        };
        (internal, ext, np)
    }

    fn affinity_pick_rules(
        &mut self,
        svc: &ServiceInfo,
        port: &ServicePort,
        eps: &[Endpoint],
        timeout: u32,
    ) -> Vec<String> {
        let fam = self.fam;
        let s = self.saddr;
        let proto = port.protocol.nft();
        let timeout_s = timeout.to_string();
        let mut sets = vec![];
        for e in eps {
            let ip = e.ip.to_string();
            let ep_port = e.port.to_string();
            let name = format!(
                "aff-{}",
                names::hash(&[
                    &svc.key.namespace,
                    &svc.key.name,
                    proto,
                    &port.name,
                    &ip,
                    &ep_port,
                    &timeout_s,
                ])
            );
            let mut spec = SetSpec::set(format!("type {}", fam.addr_type()))
                .flag("dynamic")
                .flag("timeout");
            spec.timeout = Some(timeout);
            self.frag.sets.insert(name.clone(), spec);
            let target = match e.ip {
                IpAddr::V4(a) => format!("{a}:{}", e.port),
                IpAddr::V6(a) => format!("[{a}]:{}", e.port),
            };
            sets.push((name, target));
        }
        let f = fam.nft();
        let mut rules = vec![];
        for (set, target) in &sets {
            rules.push(format!(
                "{s} @{set} update @{set} {{ {s} }} meta l4proto {proto} dnat {f} to {target}"
            ));
        }
        let n = sets.len();
        for (i, (set, target)) in sets.iter().enumerate() {
            let pick = if i + 1 < n {
                format!("numgen random mod {} == 0 ", n - i)
            } else {
                String::new()
            };
            rules.push(format!(
                "{pick}update @{set} {{ {s} }} meta l4proto {proto} dnat {f} to {target}"
            ));
        }
        rules
    }
}
