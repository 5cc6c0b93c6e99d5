//! The per-family skeleton: tables, base chains with upstream's hooks and priorities, the
//! shared verdict maps and sets, and the rules every Service relies on.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::FamilyRenderer;
use crate::compute::model::{BaseChain, ChainType, Hook, SetSpec};
use crate::compute::names::*;
use crate::types::{Family, NodePortAddresses};

impl FamilyRenderer<'_> {
    pub(super) fn skeleton(&mut self) {
        let fam = self.fam;
        let addr = fam.addr_type();
        let (d, s) = (self.daddr, self.saddr);
        let vip_verdict = format!("type {addr} . inet_proto . inet_service");
        let port_verdict = "type inet_proto . inet_service".to_string();
        self.declare_set(SERVICE_IPS, SetSpec::map(vip_verdict.clone(), "verdict"));
        self.declare_set(
            NO_ENDPOINT_SERVICES,
            SetSpec::map(vip_verdict.clone(), "verdict"),
        );
        self.declare_set(
            SERVICE_NODEPORTS,
            SetSpec::map(port_verdict.clone(), "verdict"),
        );
        self.declare_set(NO_ENDPOINT_NODEPORTS, SetSpec::map(port_verdict, "verdict"));
        self.declare_set(CLUSTER_IPS, SetSpec::set(format!("type {addr}")));
        self.declare_set(FIREWALL_IPS, SetSpec::set(vip_verdict));
        self.declare_set(
            FIREWALL_ALLOW,
            SetSpec::set(format!("type {addr} . inet_proto . inet_service . {addr}"))
                .flag("interval"),
        );
        self.declare_set(HAIRPIN, SetSpec::set(format!("type {addr} . {addr}")));
        if self.has_cluster_cidrs {
            self.declare_set(
                CLUSTER_CIDRS,
                SetSpec::set(format!("type {addr}")).flag("interval"),
            );
            let cidrs: Vec<_> = self
                .node
                .cluster_cidrs
                .iter()
                .filter(|c| Family::of_net(c) == fam)
                .map(|c| c.trunc().to_string())
                .collect();
            for c in cidrs {
                self.skel_elem(CLUSTER_CIDRS, c, None);
            }
        }
        let service_cidrs: Vec<_> = self
            .node
            .service_cidrs
            .iter()
            .filter(|c| Family::of_net(c) == fam)
            .map(|c| c.trunc().to_string())
            .collect();
        if !service_cidrs.is_empty() {
            self.declare_set(
                SERVICE_CIDRS,
                SetSpec::set(format!("type {addr}")).flag("interval"),
            );
            for c in service_cidrs.iter().cloned() {
                self.skel_elem(SERVICE_CIDRS, c, None);
            }
        }

        let nodeport_match = match &self.node.nodeport_addresses {
            NodePortAddresses::All => {
                let lo = match fam {
                    Family::Ipv4 => "127.0.0.0/8",
                    Family::Ipv6 => "::1",
                };
                format!("fib daddr type local {d} != {lo}")
            }
            NodePortAddresses::Cidrs(cidrs) => {
                self.declare_set(NODEPORT_IPS, SetSpec::set(format!("type {addr}")));
                let ips: BTreeSet<IpAddr> = self
                    .node
                    .local_addresses
                    .iter()
                    .chain(self.node.node_ips.iter())
                    .filter(|ip| Family::of(ip) == fam && !ip.is_loopback())
                    .filter(|ip| cidrs.iter().any(|c| c.contains(*ip)))
                    .copied()
                    .collect();
                for ip in ips {
                    self.skel_elem(NODEPORT_IPS, ip.to_string(), None);
                }
                format!("{d} @{NODEPORT_IPS}")
            }
        };

        let base = |kind, hook, priority| {
            Some(BaseChain {
                kind,
                hook,
                priority,
            })
        };
        let new = "ct state new";
        self.chain(
            "filter-prerouting-pre-dnat",
            base(ChainType::Filter, Hook::Prerouting, -110),
            vec![format!("{new} jump {FIREWALL_CHECK}")],
        );
        self.chain(
            "filter-output-pre-dnat",
            base(ChainType::Filter, Hook::Output, -110),
            vec![format!("{new} jump {FIREWALL_CHECK}")],
        );
        self.chain(
            "filter-input",
            base(ChainType::Filter, Hook::Input, 0),
            vec![
                format!("{new} jump {NODEPORT_ENDPOINTS_CHECK}"),
                format!("{new} jump {SERVICE_ENDPOINTS_CHECK}"),
            ],
        );
        for (name, hook) in [
            ("filter-forward", Hook::Forward),
            ("filter-output", Hook::Output),
        ] {
            self.chain(
                name,
                base(ChainType::Filter, hook, 0),
                vec![
                    format!("{new} jump {SERVICE_ENDPOINTS_CHECK}"),
                    format!("{new} jump {CLUSTER_IPS_CHECK}"),
                ],
            );
        }
        self.chain(
            "nat-prerouting",
            base(ChainType::Nat, Hook::Prerouting, -100),
            vec![format!("jump {SERVICES}")],
        );
        self.chain(
            "nat-output",
            base(ChainType::Nat, Hook::Output, -100),
            vec![format!("jump {SERVICES}")],
        );
        self.chain(
            "nat-postrouting",
            base(ChainType::Nat, Hook::Postrouting, 100),
            vec![format!("jump {MASQUERADING}")],
        );
        let tuple = format!("{d} . meta l4proto . th dport");
        self.chain(
            FIREWALL_CHECK,
            None,
            vec![format!(
                "{tuple} @{FIREWALL_IPS} {tuple} . {s} != @{FIREWALL_ALLOW} drop"
            )],
        );
        self.chain(
            SERVICE_ENDPOINTS_CHECK,
            None,
            vec![format!("{tuple} vmap @{NO_ENDPOINT_SERVICES}")],
        );
        self.chain(
            NODEPORT_ENDPOINTS_CHECK,
            None,
            vec![format!(
                "{nodeport_match} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}"
            )],
        );
        let mut check = vec![format!("{d} @{CLUSTER_IPS} reject")];
        if !service_cidrs.is_empty() {
            check.push(format!("{d} @{SERVICE_CIDRS} drop"));
        }
        self.chain(CLUSTER_IPS_CHECK, None, check);
        // TCP gets a reset: an ICMPv6 error can arrive while the connecting socket is still locked
        // in connect() and be dropped (TcpExtLockDroppedIcmps), which turns a refusal into a 1 s
        // SYN retransmit. A RST is handled either way. Everything else gets ICMP(v6) unreachable.
        self.chain(
            REJECT_CHAIN,
            None,
            vec![
                "meta l4proto tcp reject with tcp reset".into(),
                "reject".into(),
            ],
        );
        self.chain(
            MARK_FOR_MASQUERADE,
            None,
            vec![format!("meta mark set meta mark | {MASQ_MARK}")],
        );
        self.chain(
            MASQUERADING,
            None,
            vec![
                format!("ct status dnat {s} . {d} @{HAIRPIN} jump {MARK_FOR_MASQUERADE}"),
                format!("meta mark & {MASQ_MARK} == 0 return"),
                format!("meta mark set meta mark ^ {MASQ_MARK}"),
                "masquerade fully-random".into(),
            ],
        );
        self.chain(
            SERVICES,
            None,
            vec![
                format!("{tuple} vmap @{SERVICE_IPS}"),
                format!("{nodeport_match} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"),
            ],
        );
    }
}
