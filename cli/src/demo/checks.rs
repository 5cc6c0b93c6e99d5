//! Pure verdicts over what the demo observed: each returns `Ok(summary)` or `Err(what is wrong)`.
//! Nothing here talks to the API server or the kernel, so every rule is unit-tested.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use testkit::netns::Cidr;

use super::report::{Expect, PodSummary, Probe, Report, ServiceSummary};

/// A check's verdict.
pub type Verdict = Result<String, String>;

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Every Service that needs a ClusterIP has one, inside `cidr`, and no two share one; headless
/// Services keep `None` and ExternalName Services have none.
pub fn cluster_ips(services: &[ServiceSummary], cidr: &Cidr) -> Verdict {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for s in services {
        if s.type_ == "ExternalName" {
            if !s.cluster_ips.is_empty() {
                problems.push(format!("ExternalName {} got {:?}", s.name, s.cluster_ips));
            }
            continue;
        }
        if !s.needs_cluster_ip() {
            continue;
        }
        if s.cluster_ips.is_empty() {
            problems.push(format!("{} has no ClusterIP", s.name));
        }
        for ip in &s.cluster_ips {
            match ip.parse::<IpAddr>() {
                Ok(addr) if cidr.contains(addr) => {}
                Ok(_) => problems.push(format!("{} got {ip}, outside {cidr}", s.name)),
                Err(_) => problems.push(format!("{} got unparsable ClusterIP {ip:?}", s.name)),
            }
            if let Some(other) = seen.insert(ip.clone(), s.name.clone()) {
                problems.push(format!("{ip} given to both {other} and {}", s.name));
            }
        }
    }
    if problems.is_empty() {
        Ok(format!("{} unique ClusterIPs in {cidr}", seen.len()))
    } else {
        Err(problems.join("; "))
    }
}

/// NodePort / LoadBalancer Services have a nodePort on every port, inside `range`, unique, and
/// the requested ones were honoured.
pub fn node_ports(services: &[ServiceSummary], range: (i32, i32)) -> Verdict {
    let mut seen: BTreeMap<i32, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for s in services.iter().filter(|s| s.needs_node_ports()) {
        for p in &s.ports {
            match p.node_port {
                None => problems.push(format!("{} port {} has no nodePort", s.name, p.port)),
                Some(np) => {
                    if np < range.0 || np > range.1 {
                        problems.push(format!(
                            "{} nodePort {np} outside {}-{}",
                            s.name, range.0, range.1
                        ));
                    }
                    if let Some(other) = seen.insert(np, s.name.clone()) {
                        problems.push(format!(
                            "nodePort {np} given to both {other} and {}",
                            s.name
                        ));
                    }
                }
            }
        }
        for want in &s.requested_node_ports {
            if !s.ports.iter().any(|p| p.node_port == Some(*want)) {
                problems.push(format!(
                    "{} requested nodePort {want}, not honoured",
                    s.name
                ));
            }
        }
    }
    if problems.is_empty() {
        let list: Vec<_> = seen.iter().map(|(p, s)| format!("{s}={p}")).collect();
        Ok(format!("nodePorts {}", list.join(", ")))
    } else {
        Err(problems.join("; "))
    }
}

/// Every LoadBalancer Service has an ingress IP from one of the pool's CIDRs.
pub fn lb_ips(services: &[ServiceSummary], pool: &[Cidr]) -> Verdict {
    let mut problems = Vec::new();
    let mut got = Vec::new();
    for s in services.iter().filter(|s| s.type_ == "LoadBalancer") {
        if s.lb_ips.is_empty() {
            problems.push(format!("{} has no LoadBalancer IP", s.name));
        }
        for ip in &s.lb_ips {
            let inside = ip
                .parse::<IpAddr>()
                .is_ok_and(|a| pool.iter().any(|c| c.contains(a)));
            if inside {
                got.push(format!("{}={ip}", s.name));
            } else {
                problems.push(format!("{} got {ip}, not from the pool", s.name));
            }
        }
    }
    if problems.is_empty() && !got.is_empty() {
        Ok(format!("pool IPs {}", got.join(", ")))
    } else if problems.is_empty() {
        Err("no LoadBalancer Service".into())
    } else {
        Err(problems.join("; "))
    }
}

/// Each selector Service's EndpointSlices list exactly the Pods its selector matches, with
/// `ready` equal to the Pod's readiness (or true for all with publishNotReadyAddresses).
pub fn endpoint_slices(r: &Report) -> Verdict {
    let mut problems = Vec::new();
    let mut summary = Vec::new();
    for s in &r.services {
        let slices: Vec<_> = r
            .endpoint_slices
            .iter()
            .filter(|sl| sl.service == s.name)
            .collect();
        if s.selector.is_empty() || s.type_ == "ExternalName" {
            if !slices.is_empty() && s.type_ == "ExternalName" {
                problems.push(format!("ExternalName {} has EndpointSlices", s.name));
            }
            continue;
        }
        if slices.is_empty() {
            problems.push(format!("{} has no EndpointSlice", s.name));
            continue;
        }
        let has_ip = s.needs_cluster_ip() && !s.cluster_ips.is_empty();
        for sl in slices.iter().filter(|sl| sl.headless_label == has_ip) {
            problems.push(if has_ip {
                format!(
                    "EndpointSlice {} of {} (ClusterIP {}) is labelled service.kubernetes.io/headless, so proxies ignore it",
                    sl.name,
                    s.name,
                    s.cluster_ips.join(",")
                )
            } else {
                format!(
                    "EndpointSlice {} of headless {} lacks the service.kubernetes.io/headless label",
                    sl.name, s.name
                )
            });
        }
        let want: BTreeMap<&str, bool> = r
            .pods
            .iter()
            .filter(|p| selects(&s.selector, &p.labels))
            .map(|p| (p.name.as_str(), p.ready || s.publish_not_ready))
            .collect();
        let mut have: BTreeMap<&str, bool> = BTreeMap::new();
        for e in slices
            .iter()
            .filter(|sl| sl.address_type == "IPv4")
            .flat_map(|sl| &sl.endpoints)
        {
            let pod = e.pod.as_deref().unwrap_or("?");
            have.insert(pod, e.ready.unwrap_or(false));
        }
        if want != have {
            problems.push(format!(
                "{}: expected endpoints (pod→ready) {want:?}, slices have {have:?}",
                s.name
            ));
        } else {
            let ready = have.values().filter(|r| **r).count();
            summary.push(format!("{} {}/{} ready", s.name, ready, have.len()));
        }
    }
    if problems.is_empty() {
        Ok(summary.join(", "))
    } else {
        Err(problems.join("; "))
    }
}

/// A Warning Event on Service `name` whose message names its selector.
pub fn diagnostic_event(r: &Report, name: &str) -> Verdict {
    let svc = r
        .service(name)
        .ok_or_else(|| format!("Service {name} not found"))?;
    let sel = crate::demo::selector_text(&svc.selector);
    r.events
        .iter()
        .find(|e| e.service == name && e.type_ == "Warning" && e.message.contains(&sel))
        .map(|e| format!("{}: {}", e.reason, e.message))
        .ok_or_else(|| {
            format!(
                "no Warning Event on {name} naming selector {sel} (events: {:?})",
                r.events
                    .iter()
                    .filter(|e| e.service == name)
                    .map(|e| &e.message)
                    .collect::<Vec<_>>()
            )
        })
}

/// Whether a probe's attempts meet its expectation.
pub fn probe(p: &Probe, svc: &ServiceSummary, pods: &[PodSummary]) -> Verdict {
    if p.attempts.is_empty() {
        return Err("no attempt was made".into());
    }
    let by_name: BTreeMap<&str, &PodSummary> = pods.iter().map(|x| (x.name.as_str(), x)).collect();
    if p.expect == Expect::Refused {
        let bad: Vec<_> = p
            .attempts
            .iter()
            .filter(|a| !a.outcome.starts_with("refused"))
            .map(|a| a.outcome.clone())
            .collect();
        return if bad.is_empty() {
            Ok(format!("{} attempts refused at once", p.attempts.len()))
        } else {
            Err(format!("expected refusals, got {bad:?}"))
        };
    }
    let mut answered = BTreeSet::new();
    for a in &p.attempts {
        let Some(pod) = a.pod.as_deref() else {
            return Err(format!("a request was not answered: {}", a.outcome));
        };
        let Some(info) = by_name.get(pod) else {
            return Err(format!("answered by {pod}, which is no Pod in the API"));
        };
        if !selects(&svc.selector, &info.labels) {
            return Err(format!(
                "answered by {pod}, which the selector {} does not match",
                crate::demo::selector_text(&svc.selector)
            ));
        }
        if let Expect::LocalTo(node) = &p.expect {
            if &info.node != node {
                return Err(format!(
                    "answered by {pod} on {}, not local to {node}",
                    info.node
                ));
            }
        }
        answered.insert(pod);
    }
    if p.expect == Expect::OnePod && answered.len() != 1 {
        return Err(format!("answered by several pods: {answered:?}"));
    }
    let list: Vec<_> = answered.into_iter().collect();
    Ok(format!(
        "{} requests answered by {}",
        p.attempts.len(),
        list.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::report::{Attempt, EndpointSummary, EventSummary, PortSummary, SliceSummary};

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn svc(name: &str, type_: &str, ips: &[&str]) -> ServiceSummary {
        ServiceSummary {
            name: name.into(),
            type_: type_.into(),
            cluster_ips: ips.iter().map(|s| s.to_string()).collect(),
            selector: labels(&[("app", "web")]),
            ports: vec![PortSummary {
                name: "http".into(),
                protocol: "TCP".into(),
                port: 80,
                target_port: "8080".into(),
                node_port: None,
            }],
            ..Default::default()
        }
    }

    fn pod(name: &str, node: &str, app: &str, ready: bool) -> PodSummary {
        PodSummary {
            name: name.into(),
            node: node.into(),
            ips: vec![],
            labels: labels(&[("app", app)]),
            ready,
        }
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().expect("test CIDR")
    }

    #[test]
    fn cluster_ips_unique_and_in_range() {
        let a = svc("a", "ClusterIP", &["10.96.0.10"]);
        let b = svc("b", "NodePort", &["10.96.0.11"]);
        let h = svc("h", "ClusterIP", &["None"]);
        let e = svc("e", "ExternalName", &[]);
        assert!(cluster_ips(&[a.clone(), b.clone(), h, e], &cidr("10.96.0.0/16")).is_ok());
        let dup = svc("c", "ClusterIP", &["10.96.0.10"]);
        let err = cluster_ips(&[a.clone(), dup], &cidr("10.96.0.0/16")).unwrap_err();
        assert!(err.contains("both a and c"), "{err}");
        let out = svc("o", "ClusterIP", &["10.1.0.1"]);
        assert!(cluster_ips(&[out], &cidr("10.96.0.0/16"))
            .unwrap_err()
            .contains("outside"));
        let none = svc("n", "ClusterIP", &[]);
        assert!(cluster_ips(&[none], &cidr("10.96.0.0/16")).is_err());
    }

    #[test]
    fn node_ports_requested_and_in_range() {
        let mut np = svc("np", "NodePort", &["10.96.0.1"]);
        np.ports[0].node_port = Some(30080);
        np.requested_node_ports = vec![30080];
        assert!(node_ports(std::slice::from_ref(&np), (30000, 32767)).is_ok());
        np.ports[0].node_port = Some(30081);
        assert!(node_ports(std::slice::from_ref(&np), (30000, 32767))
            .unwrap_err()
            .contains("not honoured"));
        np.ports[0].node_port = None;
        assert!(node_ports(&[np], (30000, 32767)).is_err());
    }

    #[test]
    fn lb_ips_from_the_pool() {
        let mut lb = svc("lb", "LoadBalancer", &["10.96.0.1"]);
        assert!(lb_ips(std::slice::from_ref(&lb), &[cidr("10.97.0.16/28")]).is_err());
        lb.lb_ips = vec!["10.97.0.17".into()];
        assert!(lb_ips(std::slice::from_ref(&lb), &[cidr("10.97.0.16/28")]).is_ok());
        lb.lb_ips = vec!["10.98.0.1".into()];
        assert!(lb_ips(&[lb], &[cidr("10.97.0.16/28")]).is_err());
    }

    fn report() -> Report {
        let mut db = svc("db", "ClusterIP", &["None"]);
        db.selector = labels(&[("app", "db")]);
        db.publish_not_ready = true;
        let mut broken = svc("broken", "ClusterIP", &["10.96.0.3"]);
        broken.selector = labels(&[("app", "nginx-typo")]);
        Report {
            pods: vec![
                pod("web-0", "node1", "web", true),
                pod("db-0", "node1", "db", true),
                pod("db-1", "node2", "db", false),
            ],
            services: vec![svc("web", "ClusterIP", &["10.96.0.2"]), db, broken],
            endpoint_slices: vec![
                SliceSummary {
                    name: "web-abc".into(),
                    service: "web".into(),
                    address_type: "IPv4".into(),
                    ports: vec![],
                    headless_label: false,
                    endpoints: vec![EndpointSummary {
                        pod: Some("web-0".into()),
                        ready: Some(true),
                        ..Default::default()
                    }],
                },
                SliceSummary {
                    name: "db-abc".into(),
                    service: "db".into(),
                    headless_label: true,
                    address_type: "IPv4".into(),
                    ports: vec![],
                    endpoints: vec![
                        EndpointSummary {
                            pod: Some("db-0".into()),
                            ready: Some(true),
                            ..Default::default()
                        },
                        EndpointSummary {
                            pod: Some("db-1".into()),
                            ready: Some(true),
                            ..Default::default()
                        },
                    ],
                },
                SliceSummary {
                    name: "broken-abc".into(),
                    service: "broken".into(),
                    address_type: "IPv4".into(),
                    ports: vec![],
                    headless_label: false,
                    endpoints: vec![],
                },
            ],
            events: vec![EventSummary {
                service: "broken".into(),
                type_: "Warning".into(),
                reason: "SelectorMatchesNoPods".into(),
                message: "selector app=nginx-typo matches no pods".into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn slices_match_selected_pods_and_readiness() {
        let mut r = report();
        assert!(endpoint_slices(&r).is_ok(), "{:?}", endpoint_slices(&r));
        // Without publishNotReadyAddresses the not-ready pod must be ready=false.
        r.services[1].publish_not_ready = false;
        assert!(endpoint_slices(&r).is_err());
        let mut r = report();
        r.endpoint_slices[0].headless_label = true;
        assert!(endpoint_slices(&r).unwrap_err().contains("ignore it"));
        let mut r = report();
        r.endpoint_slices.remove(0);
        assert!(endpoint_slices(&r)
            .unwrap_err()
            .contains("web has no EndpointSlice"));
    }

    #[test]
    fn event_must_name_the_selector() {
        let mut r = report();
        assert!(diagnostic_event(&r, "broken").is_ok());
        r.events[0].message = "something else".into();
        assert!(diagnostic_event(&r, "broken").is_err());
    }

    fn attempt(pod: Option<&str>, outcome: &str) -> Attempt {
        Attempt {
            pod: pod.map(str::to_string),
            peer: None,
            outcome: outcome.into(),
        }
    }

    #[test]
    fn probes() {
        let r = report();
        let web = r.service("web").expect("web").clone();
        let mut pods = r.pods.clone();
        pods.push(pod("web-1", "node2", "web", true));
        let mut p = Probe {
            service: "web".into(),
            via: "ClusterIP".into(),
            from: "pod client".into(),
            target: "10.96.0.2:80".into(),
            expect: Expect::Selected,
            attempts: vec![
                attempt(Some("web-0"), "replied"),
                attempt(Some("web-1"), "replied"),
            ],
        };
        assert!(probe(&p, &web, &pods).is_ok());
        p.expect = Expect::OnePod;
        assert!(probe(&p, &web, &pods).is_err());
        p.expect = Expect::LocalTo("node1".into());
        assert!(probe(&p, &web, &pods).unwrap_err().contains("not local"));
        p.expect = Expect::Selected;
        p.attempts.push(attempt(Some("db-0"), "replied"));
        assert!(probe(&p, &web, &pods)
            .unwrap_err()
            .contains("does not match"));
        p.attempts = vec![attempt(None, "timeout")];
        assert!(probe(&p, &web, &pods).is_err());
        p.expect = Expect::Refused;
        assert!(probe(&p, &web, &pods).is_err());
        p.attempts = vec![attempt(None, "refused: connection refused")];
        assert!(probe(&p, &web, &pods).is_ok());
        p.attempts.clear();
        assert!(probe(&p, &web, &pods).is_err());
    }
}
