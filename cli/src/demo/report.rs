//! The demo's report: what was observed (objects read back from the API server, replies that
//! came back through the dataplane) and the verdict of every step. Serialisable for `--json`,
//! rendered as text for people by [`render_text`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Everything the demo observed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// Whether the dataplane half ran: root, without `--no-dataplane` (network namespaces,
    /// svcnet-proxy, real traffic).
    pub root: bool,
    /// Service CIDR given to the controller.
    pub service_cidr: String,
    /// NodePort range given to the controller (`first-last`).
    pub node_port_range: String,
    /// CIDRs of the demo's LoadBalancerIPPool.
    pub lb_pool_cidrs: Vec<String>,
    /// Nodes: name → InternalIPs.
    pub nodes: BTreeMap<String, Vec<String>>,
    /// Pods as stored in the API server.
    pub pods: Vec<PodSummary>,
    /// Services as read back after allocation.
    pub services: Vec<ServiceSummary>,
    /// EndpointSlices of the demo namespace.
    pub endpoint_slices: Vec<SliceSummary>,
    /// Events about Services in the demo namespace.
    pub events: Vec<EventSummary>,
    /// Requests sent through the dataplane (root only).
    pub traffic: Vec<Probe>,
    /// `svcnet-proxy render` output for the first node (without root, instead of traffic).
    pub ruleset: Option<String>,
    /// Cluster-DNS queries from a pod through the `kube-dns` Service (root only).
    #[serde(default)]
    pub dns: Vec<DnsQuery>,
    /// Why the DNS queries did not run, when they did not.
    #[serde(default)]
    pub dns_skipped: Option<String>,
    /// Every step and its verdict.
    pub steps: Vec<Step>,
    /// Where the logs of the child processes are.
    pub log_dir: Option<String>,
}

impl Report {
    /// Whether every step passed.
    pub fn ok(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(|s| s.ok)
    }

    /// Records a step.
    pub fn step(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        self.steps.push(Step {
            name: name.to_string(),
            ok,
            detail: detail.into(),
        });
    }

    /// The Service called `name`, if it was read back.
    pub fn service(&self, name: &str) -> Option<&ServiceSummary> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The Pod called `name`, if it was read back.
    pub fn pod(&self, name: &str) -> Option<&PodSummary> {
        self.pods.iter().find(|p| p.name == name)
    }
}

/// One DNS query sent with `dig` from a pod, and its answer.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DnsQuery {
    /// Where it was sent from (`pod client (10.244.1.8)`).
    pub from: String,
    /// `dig` arguments (name, type, `+search`, `-x`).
    pub question: String,
    /// The record type asked for.
    pub rtype: String,
    /// The answer section, `TYPE data` each.
    pub answers: Vec<String>,
    /// What the API objects say it must contain, `TYPE data` each.
    pub expected: Vec<String>,
    /// Whether the answer matched.
    pub ok: bool,
}

/// One step of the demo and whether it worked.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Step {
    /// Short name (`cluster-ips`, `traffic web from pod`, …).
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was seen, or the error.
    pub detail: String,
}

/// A Pod as stored.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodSummary {
    /// Name.
    pub name: String,
    /// `spec.nodeName`.
    pub node: String,
    /// `status.podIPs`.
    pub ips: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Ready condition.
    pub ready: bool,
}

/// One Service port.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortSummary {
    /// Port name.
    pub name: String,
    /// Protocol.
    pub protocol: String,
    /// Service port.
    pub port: i32,
    /// Target port (number or name).
    pub target_port: String,
    /// Allocated nodePort, if any.
    pub node_port: Option<i32>,
}

/// A Service as read back after allocation.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceSummary {
    /// Name.
    pub name: String,
    /// `spec.type` (ClusterIP when unset).
    pub type_: String,
    /// `spec.clusterIPs` (`None` for headless).
    pub cluster_ips: Vec<String>,
    /// Ports.
    pub ports: Vec<PortSummary>,
    /// `status.loadBalancer.ingress[*].ip`.
    pub lb_ips: Vec<String>,
    /// `spec.externalName`.
    pub external_name: Option<String>,
    /// `spec.selector`.
    pub selector: BTreeMap<String, String>,
    /// `spec.sessionAffinity`.
    pub session_affinity: Option<String>,
    /// `spec.internalTrafficPolicy`.
    pub internal_traffic_policy: Option<String>,
    /// `spec.publishNotReadyAddresses`.
    pub publish_not_ready: bool,
    /// nodePorts requested in the applied manifest (to check they were honoured).
    pub requested_node_ports: Vec<i32>,
}

impl ServiceSummary {
    /// Whether the Service needs a ClusterIP (not headless, not ExternalName).
    pub fn needs_cluster_ip(&self) -> bool {
        self.type_ != "ExternalName" && !self.cluster_ips.iter().any(|ip| ip == "None")
    }

    /// Whether the Service needs nodePorts.
    pub fn needs_node_ports(&self) -> bool {
        self.type_ == "NodePort" || self.type_ == "LoadBalancer"
    }
}

/// One endpoint of a slice.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointSummary {
    /// Addresses.
    pub addresses: Vec<String>,
    /// `conditions.ready`.
    pub ready: Option<bool>,
    /// `conditions.serving`.
    pub serving: Option<bool>,
    /// `conditions.terminating`.
    pub terminating: Option<bool>,
    /// `nodeName`.
    pub node: Option<String>,
    /// `targetRef.name`.
    pub pod: Option<String>,
}

/// An EndpointSlice.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SliceSummary {
    /// Name.
    pub name: String,
    /// Owning Service (`kubernetes.io/service-name`).
    pub service: String,
    /// `addressType`.
    pub address_type: String,
    /// `name/port/protocol` of each port.
    pub ports: Vec<String>,
    /// Endpoints.
    pub endpoints: Vec<EndpointSummary>,
    /// Whether it carries `service.kubernetes.io/headless` (proxies ignore such slices).
    #[serde(default)]
    pub headless_label: bool,
}

/// An Event about a Service.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventSummary {
    /// Service name (`involvedObject.name`).
    pub service: String,
    /// `Normal` / `Warning`.
    pub type_: String,
    /// Reason.
    pub reason: String,
    /// Message.
    pub message: String,
}

/// What a probe expects.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Expect {
    /// Every request answered by a pod the Service selects.
    Selected,
    /// Every request answered, all by the same selected pod.
    OnePod,
    /// Every request answered by a selected pod on this node.
    LocalTo(String),
    /// Every request actively refused (no endpoints).
    Refused,
}

/// One request's result.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attempt {
    /// Pod that answered.
    pub pod: Option<String>,
    /// Source address the pod saw.
    pub peer: Option<String>,
    /// `replied`, `refused: …`, `timeout`, `error: …`.
    pub outcome: String,
}

/// A batch of requests to one Service address.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Probe {
    /// Service name.
    pub service: String,
    /// What the request targets (`ClusterIP`, `NodePort on node1`, `LoadBalancer IP`).
    pub via: String,
    /// Where the requests come from (`pod client (10.244.1.5)`, `outside out1 (…)`).
    pub from: String,
    /// Destination `ip:port`.
    pub target: String,
    /// Expectation.
    pub expect: Expect,
    /// Each attempt.
    pub attempts: Vec<Attempt>,
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "true",
        Some(false) => "false",
        None => "-",
    }
}

/// The report as text for people.
pub fn render_text(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "== svcnet demo ==");
    let _ = writeln!(
        o,
        "mode: {}",
        if r.root {
            "root: network-namespace cluster, real packets"
        } else {
            "not root: control plane only; the dataplane is shown as the rendered ruleset"
        }
    );
    let _ = writeln!(
        o,
        "service CIDR {}, nodePort range {}, LoadBalancerIPPool {}",
        r.service_cidr,
        r.node_port_range,
        r.lb_pool_cidrs.join(",")
    );
    let _ = writeln!(o, "\n-- Nodes --");
    for (n, ips) in &r.nodes {
        let _ = writeln!(o, "  {n:<8} {}", ips.join(", "));
    }
    let _ = writeln!(o, "\n-- Pods (namespace demo) --");
    for p in &r.pods {
        let labels: Vec<_> = p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            o,
            "  {:<8} {:<6} {:<28} ready={:<5} {}",
            p.name,
            p.node,
            p.ips.join(","),
            p.ready,
            labels.join(",")
        );
    }
    let _ = writeln!(o, "\n-- Services: allocations --");
    for s in &r.services {
        let ports: Vec<_> = s
            .ports
            .iter()
            .map(|p| match p.node_port {
                Some(np) => format!("{}:{np}/{}→{}", p.port, p.protocol, p.target_port),
                None => format!("{}/{}→{}", p.port, p.protocol, p.target_port),
            })
            .collect();
        let mut extra = Vec::new();
        if !s.selector.is_empty() {
            extra.push(format!(
                "selector {}",
                crate::demo::selector_text(&s.selector)
            ));
        }
        if let Some(n) = &s.external_name {
            extra.push(format!("externalName={n}"));
        }
        if !s.lb_ips.is_empty() {
            extra.push(format!("LB IP={}", s.lb_ips.join(",")));
        } else if s.type_ == "LoadBalancer" {
            extra.push("LB IP=<pending>".into());
        }
        if let Some(a) = s.session_affinity.as_ref().filter(|a| *a != "None") {
            extra.push(format!("sessionAffinity={a}"));
        }
        if let Some(p) = s
            .internal_traffic_policy
            .as_ref()
            .filter(|p| *p != "Cluster")
        {
            extra.push(format!("internalTrafficPolicy={p}"));
        }
        if s.publish_not_ready {
            extra.push("publishNotReadyAddresses".into());
        }
        let ips = if s.cluster_ips.is_empty() {
            "-".to_string()
        } else {
            s.cluster_ips.join(",")
        };
        let _ = writeln!(
            o,
            "  {:<18} {:<12} clusterIP={:<14} {:<22} {}",
            s.name,
            s.type_,
            ips,
            ports.join(" "),
            extra.join(" ")
        );
    }
    let _ = writeln!(o, "\n-- EndpointSlices --");
    for sl in &r.endpoint_slices {
        let _ = writeln!(
            o,
            "  {} (service {}, {}, ports {}{})",
            sl.name,
            sl.service,
            sl.address_type,
            sl.ports.join(","),
            if sl.headless_label {
                ", labelled headless"
            } else {
                ""
            }
        );
        if sl.endpoints.is_empty() {
            let _ = writeln!(o, "      (no endpoints)");
        }
        for e in &sl.endpoints {
            let _ = writeln!(
                o,
                "      {:<14} pod={:<8} node={:<6} ready={} serving={} terminating={}",
                e.addresses.join(","),
                e.pod.as_deref().unwrap_or("-"),
                e.node.as_deref().unwrap_or("-"),
                yes_no(e.ready),
                yes_no(e.serving),
                yes_no(e.terminating)
            );
        }
    }
    if !r.traffic.is_empty() {
        let _ = writeln!(
            o,
            "\n-- Traffic (which pod answered, and the source IP it saw) --"
        );
        for p in &r.traffic {
            let _ = writeln!(
                o,
                "  {} via {} ({}) from {}; expect {:?}",
                p.service, p.via, p.target, p.from, p.expect
            );
            for (i, a) in p.attempts.iter().enumerate() {
                match &a.pod {
                    Some(pod) => {
                        let _ = writeln!(
                            o,
                            "      #{:<2} answered by {:<8} saw source {}",
                            i + 1,
                            pod,
                            a.peer.as_deref().unwrap_or("?")
                        );
                    }
                    None => {
                        let _ = writeln!(o, "      #{:<2} {}", i + 1, a.outcome);
                    }
                }
            }
        }
    }
    if !r.dns.is_empty() {
        let _ = writeln!(
            o,
            "\n-- Cluster DNS (dig in a pod → kube-dns ClusterIP → svcnet-proxy → svcnet-dns) --"
        );
        for q in &r.dns {
            let _ = writeln!(
                o,
                "  [{}] {} from {}",
                if q.ok { "ok" } else { "FAIL" },
                q.question,
                q.from
            );
            for a in &q.answers {
                let _ = writeln!(o, "      {a}");
            }
            if !q.ok {
                let _ = writeln!(o, "      expected: {}", q.expected.join(", "));
            }
        }
    }
    if let Some(why) = &r.dns_skipped {
        let _ = writeln!(o, "\n-- Cluster DNS --\n  skipped: {why}");
    }
    if let Some(rs) = &r.ruleset {
        let _ = writeln!(o, "\n-- Rendered ruleset (svcnet-proxy render, node1) --");
        for line in rs.lines() {
            let _ = writeln!(o, "  {line}");
        }
    }
    let _ = writeln!(o, "\n-- Events --");
    if r.events.is_empty() {
        let _ = writeln!(o, "  (none)");
    }
    for e in &r.events {
        let _ = writeln!(
            o,
            "  {:<8} {:<8} {:<24} {}",
            e.service, e.type_, e.reason, e.message
        );
    }
    let _ = writeln!(o, "\n-- Steps --");
    for s in &r.steps {
        let _ = writeln!(
            o,
            "  [{}] {:<34} {}",
            if s.ok { " ok " } else { "FAIL" },
            s.name,
            s.detail
        );
    }
    if let Some(d) = &r.log_dir {
        let _ = writeln!(o, "\nlogs: {d}");
    }
    let failed = r.steps.iter().filter(|s| !s.ok).count();
    let _ = writeln!(
        o,
        "\nresult: {}",
        if r.ok() {
            "all steps passed".to_string()
        } else {
            format!("{failed} step(s) failed")
        }
    );
    o
}
