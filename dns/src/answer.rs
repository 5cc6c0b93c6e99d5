//! Answers for one question from the [`Index`] (pure: no I/O).
//!
//! Names follow the Kubernetes DNS-Based Service Discovery specification (schema 1.1.0) and
//! CoreDNS's `kubernetes` plugin where the specification leaves room:
//!
//! | name | records |
//! | --- | --- |
//! | `<svc>.<ns>.svc.<zone>` | A/AAAA of the ClusterIPs (both families when dual-stack); headless: of every published endpoint; ExternalName: CNAME; SRV: one per port |
//! | `<label>.<svc>.<ns>.svc.<zone>` | A/AAAA of the endpoints whose hostname (else dashed address) is `<label>` |
//! | `_<port>._<proto>.<svc>.<ns>.svc.<zone>` | SRV per matching named port (ClusterIP: target the Service name; headless: one per endpoint, target its endpoint name), with the targets' A/AAAA in the additional section; A/AAAA as for the Service |
//! | `<a-b-c-d>.<ns>.pod.<zone>` | A/AAAA of the dashed address (`insecure`: any well-formed address; `verified`: only a Pod's IP in that namespace) |
//! | `dns-version.<zone>` | TXT `1.1.0` |
//! | `<reversed ip>.in-addr.arpa` / `.ip6.arpa` | PTR to the Service names of a ClusterIP, else to the endpoint names of an endpoint address |
//!
//! NXDOMAIN versus NODATA: a name that exists with no record of the asked type answers NOERROR
//! with no answer (NODATA); a name that does not exist answers NXDOMAIN. Both carry the zone's
//! SOA in the authority section. As in CoreDNS, the apex, `svc.<zone>` and `pod.<zone>` always
//! exist; `<ns>.svc.<zone>` and `<ns>.pod.<zone>` exist when the Namespace does; a headless
//! Service without published endpoints and an ExternalName whose target is an IP address do
//! not exist (NXDOMAIN). Unlike CoreDNS, `dns-version.<zone>` exists for every type (NODATA
//! for types other than TXT), as RFC 2308 asks of a name that has records.
//!
//! Reverse names of addresses the index does not know, and names outside the zone, are not
//! answered here: [`Outcome::Forward`] hands them to the forwarder (CoreDNS's default
//! Corefile does the same with `fallthrough in-addr.arpa ip6.arpa`).
//!
//! Answer owner names keep the question's case; lookups ignore case.

use std::net::IpAddr;
use std::str::FromStr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::index::{Index, ReverseName, ServiceKind};
use crate::Error;

/// The DNS schema version served at `dns-version.<zone>`.
pub const SCHEMA_VERSION: &str = "1.1.0";
/// TTL of the `dns-version` TXT record (CoreDNS uses 8 hours).
pub const SCHEMA_VERSION_TTL: u32 = 28800;

/// How Pod names `<a-b-c-d>.<ns>.pod.<zone>` are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodMode {
    /// Never (NXDOMAIN).
    Disabled,
    /// Any well-formed dashed address in an existing Namespace (CoreDNS's default).
    #[default]
    Insecure,
    /// Only when a Pod in that Namespace has that IP.
    Verified,
}

impl FromStr for PodMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "disabled" => Ok(Self::Disabled),
            "insecure" => Ok(Self::Insecure),
            "verified" => Ok(Self::Verified),
            other => Err(format!(
                "unknown pod mode {other:?} (use disabled, insecure or verified)"
            )),
        }
    }
}

/// What the answers depend on besides the index.
#[derive(Debug, Clone)]
pub struct Config {
    /// The cluster zone, lowercase and fully qualified (`cluster.local.`).
    pub zone: Name,
    /// TTL of every record served from the index, and the SOA minimum.
    pub ttl: u32,
    /// Pod record mode.
    pub pods: PodMode,
}

impl Config {
    /// A configuration for `zone` (e.g. `cluster.local`).
    pub fn new(zone: &str, ttl: u32, pods: PodMode) -> Result<Self, Error> {
        let mut name = Name::from_ascii(zone).map_err(|e| Error::InvalidConfig {
            flag: "--zone",
            value: zone.to_string(),
            reason: e.to_string(),
        })?;
        name.set_fqdn(true);
        if name.is_root() {
            return Err(Error::InvalidConfig {
                flag: "--zone",
                value: zone.to_string(),
                reason: "the zone cannot be the root".to_string(),
            });
        }
        Ok(Self {
            zone: name.to_lowercase(),
            ttl,
            pods,
        })
    }
}

/// An authoritative answer ready to be put into a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// NOERROR, NXDOMAIN, ...
    pub rcode: ResponseCode,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Authority section (the SOA for negative answers).
    pub authorities: Vec<Record>,
    /// Additional section (addresses of SRV targets).
    pub additionals: Vec<Record>,
}

/// What to do with a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answer authoritatively with this.
    Answer(Answer),
    /// An ExternalName CNAME whose target lies outside the zone: answer `answer` (holding the
    /// CNAME) and append what the forwarder finds for `target` / `qtype`.
    Chase {
        /// The answer with the CNAME record.
        answer: Answer,
        /// The CNAME's target.
        target: Name,
        /// The type asked.
        qtype: RecordType,
    },
    /// Not ours: forward it.
    Forward,
}

/// Everything that exists at one name.
#[derive(Debug, Default)]
struct Node {
    addrs: Vec<IpAddr>,
    /// `(port, target, target's addresses)`.
    srv: Vec<(u16, Name, Vec<IpAddr>)>,
    cname: Option<Name>,
    txt: Option<(String, u32)>,
    soa: bool,
}

/// Answers a question. `qname` keeps the client's case; it is compared case-insensitively.
pub fn answer(index: &Index, cfg: &Config, qname: &Name, qtype: RecordType) -> Outcome {
    let lower = qname.to_lowercase();
    if cfg.zone.zone_of(&lower) {
        return zone_answer(index, cfg, qname, &lower, qtype);
    }
    if let Some(ip) = reverse_ip(&lower) {
        let names = index.reverse(ip);
        if names.is_empty() {
            return Outcome::Forward;
        }
        let mut ans = Answer::new(ResponseCode::NoError);
        if qtype == RecordType::PTR || qtype == RecordType::ANY {
            for n in names {
                if let Some(target) = reverse_target(&n, &cfg.zone) {
                    ans.answers.push(Record::from_rdata(
                        qname.clone(),
                        cfg.ttl,
                        RData::PTR(PTR(target)),
                    ));
                }
            }
        }
        return Outcome::Answer(ans);
    }
    Outcome::Forward
}

impl Answer {
    fn new(rcode: ResponseCode) -> Self {
        Self {
            rcode,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }
}

/// The address of a full reverse name (`4.3.2.1.in-addr.arpa.`, 32 nibbles `.ip6.arpa.`).
pub fn reverse_ip(lower: &Name) -> Option<IpAddr> {
    let text = lower.to_ascii();
    let text = text.trim_end_matches('.');
    let full = if text.ends_with(".in-addr.arpa") {
        lower.iter().count() == 6
    } else if text.ends_with(".ip6.arpa") {
        lower.iter().count() == 34
    } else {
        false
    };
    if !full {
        return None;
    }
    let net = lower.parse_arpa_name().ok()?;
    Some(net.addr())
}

fn reverse_target(n: &ReverseName, zone: &Name) -> Option<Name> {
    let labels = match n {
        ReverseName::Service { namespace, name } => {
            vec![name.as_str(), namespace.as_str(), "svc"]
        }
        ReverseName::Endpoint {
            namespace,
            service,
            label,
        } => vec![label.as_str(), service.as_str(), namespace.as_str(), "svc"],
    };
    under_zone(&labels, zone)
}

/// `labels...` + `zone`, or `None` when that is not a valid name (too long).
fn under_zone(labels: &[&str], zone: &Name) -> Option<Name> {
    Name::from_labels(labels.iter().map(|l| l.as_bytes()))
        .ok()?
        .append_domain(zone)
        .ok()
}

/// The zone's SOA record.
pub fn soa(index: &Index, cfg: &Config) -> Record {
    let mname = under_zone(&["ns", "dns"], &cfg.zone).unwrap_or_else(|| cfg.zone.clone());
    let rname = under_zone(&["hostmaster"], &cfg.zone).unwrap_or_else(|| cfg.zone.clone());
    // The serial only needs to change when the data does; 32 bits of the change counter.
    let serial = (index.generation() & u64::from(u32::MAX)) as u32;
    Record::from_rdata(
        cfg.zone.clone(),
        cfg.ttl,
        RData::SOA(SOA::new(mname, rname, serial, 7200, 1800, 86400, cfg.ttl)),
    )
}

fn zone_answer(
    index: &Index,
    cfg: &Config,
    qname: &Name,
    lower: &Name,
    qtype: RecordType,
) -> Outcome {
    // Counted by iterating: `num_labels` leaves out a leading `*`.
    let rel = lower.iter().count().saturating_sub(cfg.zone.iter().count());
    // Labels below the zone, leftmost first.
    let labels: Vec<String> = lower
        .iter()
        .take(rel)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    let Some(node) = lookup(index, cfg, &labels) else {
        return Outcome::Answer(negative(index, cfg, ResponseCode::NXDomain));
    };
    let mut ans = Answer::new(ResponseCode::NoError);
    if let Some(target) = node.cname {
        ans.answers.push(Record::from_rdata(
            qname.clone(),
            cfg.ttl,
            RData::CNAME(CNAME(target.clone())),
        ));
        if qtype == RecordType::CNAME {
            return Outcome::Answer(ans);
        }
        if cfg.zone.zone_of(&target) {
            // An in-zone target (one Service aliasing another): answer it here, once (no loops).
            if let Outcome::Answer(inner) = zone_answer(index, cfg, &target, &target, qtype) {
                if !matches!(
                    inner.answers.first().map(|r| r.record_type()),
                    Some(RecordType::CNAME)
                ) {
                    ans.answers.extend(inner.answers);
                    ans.additionals.extend(inner.additionals);
                }
            }
            return Outcome::Answer(ans);
        }
        return Outcome::Chase {
            answer: ans,
            target,
            qtype,
        };
    }
    let want = |t: RecordType| qtype == t || qtype == RecordType::ANY;
    for ip in &node.addrs {
        match ip {
            IpAddr::V4(v4) if want(RecordType::A) => {
                ans.answers
                    .push(Record::from_rdata(qname.clone(), cfg.ttl, RData::A(A(*v4))))
            }
            IpAddr::V6(v6) if want(RecordType::AAAA) => ans.answers.push(Record::from_rdata(
                qname.clone(),
                cfg.ttl,
                RData::AAAA(AAAA(*v6)),
            )),
            _ => {}
        }
    }
    if want(RecordType::SRV) && !node.srv.is_empty() {
        // Equal priority; the weights share 100 as CoreDNS does.
        let weight = u16::try_from(100 / node.srv.len()).unwrap_or(0).max(1);
        let mut seen_targets: Vec<&Name> = Vec::new();
        for (port, target, addrs) in &node.srv {
            ans.answers.push(Record::from_rdata(
                qname.clone(),
                cfg.ttl,
                RData::SRV(SRV::new(0, weight, *port, target.clone())),
            ));
            if seen_targets.contains(&target) {
                continue;
            }
            seen_targets.push(target);
            for ip in addrs {
                let rdata = match ip {
                    IpAddr::V4(v4) => RData::A(A(*v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                };
                ans.additionals
                    .push(Record::from_rdata(target.clone(), cfg.ttl, rdata));
            }
        }
    }
    if let Some((text, ttl)) = &node.txt {
        if want(RecordType::TXT) {
            ans.answers.push(Record::from_rdata(
                qname.clone(),
                *ttl,
                RData::TXT(TXT::new(vec![text.clone()])),
            ));
        }
    }
    if node.soa && want(RecordType::SOA) {
        let mut rec = soa(index, cfg);
        rec.name = qname.clone();
        ans.answers.push(rec);
    }
    if ans.answers.is_empty() {
        return Outcome::Answer(negative(index, cfg, ResponseCode::NoError));
    }
    Outcome::Answer(ans)
}

/// NXDOMAIN or NODATA, with the SOA in the authority section.
fn negative(index: &Index, cfg: &Config, rcode: ResponseCode) -> Answer {
    let mut ans = Answer::new(rcode);
    ans.authorities.push(soa(index, cfg));
    ans
}

fn strip_underscore(s: &str) -> &str {
    s.strip_prefix('_').unwrap_or(s)
}

/// What exists at the name made of `labels` (leftmost first) under the zone; `None` when the
/// name does not exist.
fn lookup(index: &Index, cfg: &Config, labels: &[String]) -> Option<Node> {
    let n = labels.len();
    let exists = Some(Node::default());
    match labels {
        [] => Some(Node {
            soa: true,
            ..Node::default()
        }),
        [single] if single == "dns-version" => Some(Node {
            txt: Some((SCHEMA_VERSION.to_string(), SCHEMA_VERSION_TTL)),
            ..Node::default()
        }),
        [single] if single == "svc" || single == "pod" => exists,
        [ns, kind] if kind == "svc" || kind == "pod" => index.has_namespace(ns).then(Node::default),
        _ if labels[n - 1] == "svc" && n <= 5 => {
            let (ns, svc) = (&labels[n - 2], &labels[n - 3]);
            if !index.has_namespace(ns) {
                return None;
            }
            let service = index.service(ns, svc)?;
            match n {
                3 => service_node(index, cfg, service),
                4 => endpoint_node(index, service, &labels[0]),
                _ => port_node(
                    index,
                    cfg,
                    service,
                    strip_underscore(&labels[0]),
                    strip_underscore(&labels[1]),
                ),
            }
        }
        [pod, ns, kind] if kind == "pod" => pod_node(index, cfg, ns, pod),
        _ => None,
    }
}

fn service_name(cfg: &Config, svc: &crate::index::Service) -> Option<Name> {
    under_zone(&[&svc.name, &svc.namespace, "svc"], &cfg.zone).map(|n| n.to_lowercase())
}

fn service_node(index: &Index, cfg: &Config, svc: &crate::index::Service) -> Option<Node> {
    match &svc.kind {
        ServiceKind::ExternalName(target) => {
            // An IP address is not a CNAME target; CoreDNS serves nothing for it either.
            if target.parse::<IpAddr>().is_ok() {
                return None;
            }
            let mut name = Name::from_ascii(target).ok()?;
            name.set_fqdn(true);
            Some(Node {
                cname: Some(name),
                ..Node::default()
            })
        }
        ServiceKind::ClusterIp(ips) => {
            let target = service_name(cfg, svc)?;
            let srv = svc
                .ports
                .iter()
                .map(|p| (p.port, target.clone(), ips.clone()))
                .collect();
            Some(Node {
                addrs: ips.clone(),
                srv,
                ..Node::default()
            })
        }
        ServiceKind::Headless => {
            let eps = index.published_endpoints(&lower(&svc.namespace), &lower(&svc.name));
            if eps.is_empty() {
                return None;
            }
            let base = service_name(cfg, svc)?;
            let mut srv = Vec::new();
            for ep in &eps {
                let Some(target) = base.prepend_label(ep.label().as_str()).ok() else {
                    continue;
                };
                for p in &ep.ports {
                    srv.push((p.port, target.clone(), vec![ep.address]));
                }
            }
            Some(Node {
                addrs: eps.iter().map(|e| e.address).collect(),
                srv,
                ..Node::default()
            })
        }
    }
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

fn endpoint_node(index: &Index, svc: &crate::index::Service, label: &str) -> Option<Node> {
    if matches!(svc.kind, ServiceKind::ExternalName(_)) {
        return None;
    }
    let addrs: Vec<IpAddr> = index
        .published_endpoints(&lower(&svc.namespace), &lower(&svc.name))
        .into_iter()
        .filter(|e| e.label() == label)
        .map(|e| e.address)
        .collect();
    if addrs.is_empty() {
        return None;
    }
    Some(Node {
        addrs,
        ..Node::default()
    })
}

fn port_matches(p: &crate::index::Port, port: &str, proto: &str) -> bool {
    !p.name.is_empty()
        && p.name.eq_ignore_ascii_case(port)
        && p.protocol.eq_ignore_ascii_case(proto)
}

fn port_node(
    index: &Index,
    cfg: &Config,
    svc: &crate::index::Service,
    port: &str,
    proto: &str,
) -> Option<Node> {
    match &svc.kind {
        ServiceKind::ExternalName(_) => None,
        ServiceKind::ClusterIp(ips) => {
            let target = service_name(cfg, svc)?;
            let srv: Vec<_> = svc
                .ports
                .iter()
                .filter(|p| port_matches(p, port, proto))
                .map(|p| (p.port, target.clone(), ips.clone()))
                .collect();
            if srv.is_empty() {
                return None;
            }
            Some(Node {
                addrs: ips.clone(),
                srv,
                ..Node::default()
            })
        }
        ServiceKind::Headless => {
            let base = service_name(cfg, svc)?;
            let mut srv = Vec::new();
            let mut addrs = Vec::new();
            for ep in index.published_endpoints(&lower(&svc.namespace), &lower(&svc.name)) {
                let Some(target) = base.prepend_label(ep.label().as_str()).ok() else {
                    continue;
                };
                for p in ep.ports.iter().filter(|p| port_matches(p, port, proto)) {
                    srv.push((p.port, target.clone(), vec![ep.address]));
                    if !addrs.contains(&ep.address) {
                        addrs.push(ep.address);
                    }
                }
            }
            if srv.is_empty() {
                return None;
            }
            Some(Node {
                addrs,
                srv,
                ..Node::default()
            })
        }
    }
}

/// The address in a Pod label: `10-1-2-3`, or an IPv6 address with `:` written as `-`.
pub fn pod_label_ip(label: &str) -> Option<IpAddr> {
    let text = if label.matches('-').count() == 3 && !label.contains("--") {
        label.replace('-', ".")
    } else {
        label.replace('-', ":")
    };
    text.parse().ok()
}

fn pod_node(index: &Index, cfg: &Config, ns: &str, label: &str) -> Option<Node> {
    if cfg.pods == PodMode::Disabled || !index.has_namespace(ns) {
        return None;
    }
    let ip = pod_label_ip(label)?;
    if cfg.pods == PodMode::Verified && !index.has_pod_ip(ns, ip) {
        return None;
    }
    Some(Node {
        addrs: vec![ip],
        ..Node::default()
    })
}

/// Whether a question of this class can be answered from the cluster data.
pub fn class_supported(class: DNSClass) -> bool {
    matches!(class, DNSClass::IN | DNSClass::ANY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::tests::{cluster_ip, ep, headless, ip, port, slice};
    use crate::index::{Pod, Service};

    fn cfg() -> Config {
        Config::new("cluster.local", 5, PodMode::Insecure).expect("valid zone")
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("test name")
    }

    fn idx() -> Index {
        let mut idx = Index::new();
        idx.reset_namespaces(vec!["ns".to_string(), "other".to_string()]);
        idx.apply_service(cluster_ip(
            "ns",
            "web",
            &["10.96.0.10"],
            vec![port("http", "TCP", 80), port("dns", "UDP", 53)],
        ));
        idx.apply_service(cluster_ip(
            "ns",
            "dual",
            &["10.96.0.11", "fd00:10:96::11"],
            vec![port("http", "TCP", 80)],
        ));
        idx.apply_service(cluster_ip("ns", "v6", &["fd00:10:96::12"], vec![]));
        idx.apply_service(headless("ns", "db", vec![port("pg", "TCP", 5432)]));
        idx.apply_slice(slice(
            "ns",
            "db-abc",
            "db",
            vec![port("pg", "TCP", 5432)],
            vec![
                ep("10.1.0.1", Some(true), Some("db-0")),
                ep("10.1.0.2", Some(true), None),
                ep("10.1.0.3", Some(false), Some("db-2")),
            ],
        ));
        idx.apply_slice(slice(
            "ns",
            "db-def",
            "db",
            vec![port("pg", "TCP", 5432)],
            vec![
                ep("10.1.0.2", Some(true), None),
                ep("fd00:1::2", Some(true), None),
            ],
        ));
        idx.apply_service(headless("ns", "empty", vec![]));
        idx.apply_service(Service {
            namespace: "ns".into(),
            name: "ext".into(),
            kind: ServiceKind::ExternalName("example.com".into()),
            ports: vec![],
            publish_not_ready: false,
        });
        idx.apply_service(Service {
            namespace: "ns".into(),
            name: "alias".into(),
            kind: ServiceKind::ExternalName("web.ns.svc.cluster.local".into()),
            ports: vec![],
            publish_not_ready: false,
        });
        idx
    }

    fn ask(idx: &Index, cfg: &Config, q: &str, t: RecordType) -> Answer {
        match answer(idx, cfg, &name(q), t) {
            Outcome::Answer(a) => a,
            other => panic!("{q} {t}: expected an answer, got {other:?}"),
        }
    }

    fn rdatas(a: &Answer) -> Vec<String> {
        a.answers.iter().map(|r| r.data.to_string()).collect()
    }

    fn assert_negative(a: &Answer, rcode: ResponseCode) {
        assert_eq!(a.rcode, rcode, "{a:?}");
        assert!(a.answers.is_empty(), "{a:?}");
        assert_eq!(a.authorities.len(), 1, "{a:?}");
        assert_eq!(a.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(a.authorities[0].name, name("cluster.local."));
    }

    #[test]
    fn a_record_of_a_cluster_ip_service() {
        let a = ask(&idx(), &cfg(), "web.ns.svc.cluster.local.", RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(rdatas(&a), vec!["10.96.0.10"]);
        assert_eq!(a.answers[0].ttl, 5);
        assert!(a.authorities.is_empty());
    }

    #[test]
    fn aaaa_and_dual_stack() {
        let (i, c) = (idx(), cfg());
        let a = ask(&i, &c, "dual.ns.svc.cluster.local.", RecordType::A);
        assert_eq!(rdatas(&a), vec!["10.96.0.11"]);
        let a = ask(&i, &c, "dual.ns.svc.cluster.local.", RecordType::AAAA);
        assert_eq!(rdatas(&a), vec!["fd00:10:96::11"]);
        let a = ask(&i, &c, "v6.ns.svc.cluster.local.", RecordType::AAAA);
        assert_eq!(rdatas(&a), vec!["fd00:10:96::12"]);
        // Single-stack IPv4: AAAA is NODATA.
        let a = ask(&i, &c, "web.ns.svc.cluster.local.", RecordType::AAAA);
        assert_negative(&a, ResponseCode::NoError);
    }

    #[test]
    fn headless_answers_every_published_endpoint_once() {
        let (i, c) = (idx(), cfg());
        let a = ask(&i, &c, "db.ns.svc.cluster.local.", RecordType::A);
        // 10.1.0.3 is not ready; 10.1.0.2 is in two slices.
        assert_eq!(rdatas(&a), vec!["10.1.0.1", "10.1.0.2"]);
        let a = ask(&i, &c, "db.ns.svc.cluster.local.", RecordType::AAAA);
        assert_eq!(rdatas(&a), vec!["fd00:1::2"]);
        // No published endpoint at all: the name does not exist (as CoreDNS).
        let a = ask(&i, &c, "empty.ns.svc.cluster.local.", RecordType::A);
        assert_negative(&a, ResponseCode::NXDomain);
    }

    #[test]
    fn endpoint_hostnames_and_dashed_addresses() {
        let (i, c) = (idx(), cfg());
        let a = ask(&i, &c, "db-0.db.ns.svc.cluster.local.", RecordType::A);
        assert_eq!(rdatas(&a), vec!["10.1.0.1"]);
        let a = ask(&i, &c, "10-1-0-2.db.ns.svc.cluster.local.", RecordType::A);
        assert_eq!(rdatas(&a), vec!["10.1.0.2"]);
        let a = ask(
            &i,
            &c,
            "fd00-1--2.db.ns.svc.cluster.local.",
            RecordType::AAAA,
        );
        assert_eq!(rdatas(&a), vec!["fd00:1::2"]);
        // Not ready: gone.
        let a = ask(&i, &c, "db-2.db.ns.svc.cluster.local.", RecordType::A);
        assert_negative(&a, ResponseCode::NXDomain);
        // Exists, other type: NODATA.
        let a = ask(&i, &c, "db-0.db.ns.svc.cluster.local.", RecordType::AAAA);
        assert_negative(&a, ResponseCode::NoError);
    }

    #[test]
    fn publish_not_ready_addresses_serves_not_ready_endpoints() {
        let mut i = idx();
        let mut svc = headless("ns", "db", vec![port("pg", "TCP", 5432)]);
        svc.publish_not_ready = true;
        i.apply_service(svc);
        let a = ask(&i, &cfg(), "db.ns.svc.cluster.local.", RecordType::A);
        assert_eq!(rdatas(&a), vec!["10.1.0.1", "10.1.0.2", "10.1.0.3"]);
        let a = ask(&i, &cfg(), "db-2.db.ns.svc.cluster.local.", RecordType::A);
        assert_eq!(rdatas(&a), vec!["10.1.0.3"]);
    }

    #[test]
    fn srv_of_a_cluster_ip_service() {
        let (i, c) = (idx(), cfg());
        let a = ask(
            &i,
            &c,
            "_http._tcp.web.ns.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(rdatas(&a), vec!["0 100 80 web.ns.svc.cluster.local."]);
        assert_eq!(a.additionals.len(), 1);
        assert_eq!(a.additionals[0].name, name("web.ns.svc.cluster.local."));
        assert_eq!(a.additionals[0].data.to_string(), "10.96.0.10");
        // Protocol must match.
        let a = ask(
            &i,
            &c,
            "_http._udp.web.ns.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_negative(&a, ResponseCode::NXDomain);
        let a = ask(
            &i,
            &c,
            "_dns._udp.web.ns.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(rdatas(&a), vec!["0 100 53 web.ns.svc.cluster.local."]);
        // The bare Service name has one SRV per port.
        let a = ask(&i, &c, "web.ns.svc.cluster.local.", RecordType::SRV);
        assert_eq!(a.answers.len(), 2);
        assert_eq!(a.additionals.len(), 1);
        // A at the port name answers the ClusterIP.
        let a = ask(
            &i,
            &c,
            "_http._tcp.web.ns.svc.cluster.local.",
            RecordType::A,
        );
        assert_eq!(rdatas(&a), vec!["10.96.0.10"]);
    }

    #[test]
    fn srv_of_a_headless_service() {
        let (i, c) = (idx(), cfg());
        let a = ask(&i, &c, "_pg._tcp.db.ns.svc.cluster.local.", RecordType::SRV);
        assert_eq!(
            rdatas(&a),
            vec![
                "0 33 5432 db-0.db.ns.svc.cluster.local.",
                "0 33 5432 10-1-0-2.db.ns.svc.cluster.local.",
                "0 33 5432 fd00-1--2.db.ns.svc.cluster.local.",
            ]
        );
        let extra: Vec<String> = a
            .additionals
            .iter()
            .map(|r| format!("{} {}", r.name, r.data))
            .collect();
        assert_eq!(
            extra,
            vec![
                "db-0.db.ns.svc.cluster.local. 10.1.0.1",
                "10-1-0-2.db.ns.svc.cluster.local. 10.1.0.2",
                "fd00-1--2.db.ns.svc.cluster.local. fd00:1::2",
            ]
        );
    }

    #[test]
    fn ptr_for_cluster_ips_and_endpoints() {
        let (i, c) = (idx(), cfg());
        let a = ask(&i, &c, "10.0.96.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(rdatas(&a), vec!["web.ns.svc.cluster.local."]);
        let a = ask(&i, &c, "1.0.1.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(rdatas(&a), vec!["db-0.db.ns.svc.cluster.local."]);
        let v6 = "1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa.";
        let a = ask(&i, &c, v6, RecordType::PTR);
        assert_eq!(rdatas(&a), vec!["dual.ns.svc.cluster.local."]);
        let v6ep = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa.";
        let a = ask(&i, &c, v6ep, RecordType::PTR);
        assert_eq!(rdatas(&a), vec!["fd00-1--2.db.ns.svc.cluster.local."]);
        // Known address, other type: NODATA without SOA (the reverse zone is not ours).
        let a = ask(&i, &c, "10.0.96.10.in-addr.arpa.", RecordType::A);
        assert!(a.answers.is_empty() && a.rcode == ResponseCode::NoError);
        // Unknown addresses, not-ready endpoints and partial names go to the forwarder.
        for q in [
            "9.9.9.9.in-addr.arpa.",
            "3.0.1.10.in-addr.arpa.",
            "0.1.10.in-addr.arpa.",
        ] {
            assert_eq!(
                answer(&i, &c, &name(q), RecordType::PTR),
                Outcome::Forward,
                "{q}"
            );
        }
    }

    #[test]
    fn external_name_is_a_cname_chased_outside_the_zone() {
        let (i, c) = (idx(), cfg());
        match answer(&i, &c, &name("ext.ns.svc.cluster.local."), RecordType::A) {
            Outcome::Chase {
                answer,
                target,
                qtype,
            } => {
                assert_eq!(rdatas(&answer), vec!["example.com."]);
                assert_eq!(target, name("example.com."));
                assert_eq!(qtype, RecordType::A);
            }
            other => panic!("{other:?}"),
        }
        // Asking for the CNAME itself needs no chase.
        let a = ask(&i, &c, "ext.ns.svc.cluster.local.", RecordType::CNAME);
        assert_eq!(rdatas(&a), vec!["example.com."]);
        // An in-zone target is answered directly.
        let a = ask(&i, &c, "alias.ns.svc.cluster.local.", RecordType::A);
        assert_eq!(rdatas(&a), vec!["web.ns.svc.cluster.local.", "10.96.0.10"]);
    }

    #[test]
    fn pods_insecure_verified_disabled() {
        let mut i = idx();
        let mut c = cfg();
        let a = ask(&i, &c, "10-1-0-99.ns.pod.cluster.local.", RecordType::A);
        assert_eq!(rdatas(&a), vec!["10.1.0.99"]);
        let a = ask(&i, &c, "fd00-1--99.ns.pod.cluster.local.", RecordType::AAAA);
        assert_eq!(rdatas(&a), vec!["fd00:1::99"]);
        // Malformed address, unknown namespace: NXDOMAIN.
        for q in [
            "10-1-0.ns.pod.cluster.local.",
            "not-an-ip-x.ns.pod.cluster.local.",
            "10-1-0-99.nope.pod.cluster.local.",
        ] {
            assert_negative(&ask(&i, &c, q, RecordType::A), ResponseCode::NXDomain);
        }
        c.pods = PodMode::Verified;
        let q = "10-1-0-99.ns.pod.cluster.local.";
        assert_negative(&ask(&i, &c, q, RecordType::A), ResponseCode::NXDomain);
        i.apply_pod(Pod {
            namespace: "ns".into(),
            name: "p".into(),
            ips: vec![ip("10.1.0.99")],
        });
        assert_eq!(rdatas(&ask(&i, &c, q, RecordType::A)), vec!["10.1.0.99"]);
        let other = "10-1-0-99.other.pod.cluster.local.";
        assert_negative(&ask(&i, &c, other, RecordType::A), ResponseCode::NXDomain);
        c.pods = PodMode::Disabled;
        assert_negative(&ask(&i, &c, q, RecordType::A), ResponseCode::NXDomain);
    }

    #[test]
    fn dns_version_txt() {
        let (i, c) = (idx(), cfg());
        let a = ask(&i, &c, "dns-version.cluster.local.", RecordType::TXT);
        assert_eq!(rdatas(&a), vec!["1.1.0"]);
        assert_eq!(a.answers[0].ttl, SCHEMA_VERSION_TTL);
        assert_negative(
            &ask(&i, &c, "dns-version.cluster.local.", RecordType::A),
            ResponseCode::NoError,
        );
        // TXT elsewhere: NODATA where the name exists, else NXDOMAIN.
        assert_negative(
            &ask(&i, &c, "web.ns.svc.cluster.local.", RecordType::TXT),
            ResponseCode::NoError,
        );
        assert_negative(
            &ask(&i, &c, "nope.ns.svc.cluster.local.", RecordType::TXT),
            ResponseCode::NXDomain,
        );
    }

    #[test]
    fn nxdomain_versus_nodata() {
        let (i, c) = (idx(), cfg());
        let nodata = [
            ("cluster.local.", RecordType::A),
            ("svc.cluster.local.", RecordType::A),
            ("pod.cluster.local.", RecordType::A),
            ("ns.svc.cluster.local.", RecordType::A),
            ("ns.pod.cluster.local.", RecordType::A),
            ("web.ns.svc.cluster.local.", RecordType::MX),
            ("web.ns.svc.cluster.local.", RecordType::CNAME),
        ];
        for (q, t) in nodata {
            assert_negative(&ask(&i, &c, q, t), ResponseCode::NoError);
        }
        let nxdomain = [
            "nope.svc.cluster.local.",
            "web.nope.svc.cluster.local.",
            "nope.ns.svc.cluster.local.",
            "x.y.z.web.ns.svc.cluster.local.",
            "a.b.c.d.e.f.svc.cluster.local.",
            "web.ns.other.cluster.local.",
            "*.ns.svc.cluster.local.",
            "*.cluster.local.",
            "x.cluster.local.",
            "nobody.db.ns.svc.cluster.local.",
        ];
        for q in nxdomain {
            assert_negative(&ask(&i, &c, q, RecordType::A), ResponseCode::NXDomain);
        }
        // The apex SOA itself.
        let a = ask(&i, &c, "cluster.local.", RecordType::SOA);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn names_are_case_insensitive_and_keep_the_question_case() {
        let (i, c) = (idx(), cfg());
        let a = ask(&i, &c, "WeB.Ns.SVC.Cluster.Local.", RecordType::A);
        assert_eq!(rdatas(&a), vec!["10.96.0.10"]);
        assert_eq!(a.answers[0].name.to_ascii(), "WeB.Ns.SVC.Cluster.Local.");
        let a = ask(
            &i,
            &c,
            "_HTTP._Tcp.web.NS.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(a.answers.len(), 1);
    }

    #[test]
    fn names_outside_the_zone_are_forwarded() {
        let (i, c) = (idx(), cfg());
        assert_eq!(
            answer(&i, &c, &name("example.com."), RecordType::A),
            Outcome::Forward
        );
        assert_eq!(
            answer(&i, &c, &name("local."), RecordType::A),
            Outcome::Forward
        );
    }

    #[test]
    fn custom_zone_and_ttl() {
        let c = Config::new("Corp.Example.", 30, PodMode::Insecure).expect("zone");
        let a = ask(&idx(), &c, "web.ns.svc.corp.example.", RecordType::A);
        assert_eq!(a.answers[0].ttl, 30);
        assert!(Config::new(".", 5, PodMode::Insecure).is_err());
        assert!("verified".parse::<PodMode>().is_ok());
        assert!("bogus".parse::<PodMode>().is_err());
    }
}
