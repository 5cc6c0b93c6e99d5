//! The dataplane half (root only): the network-namespace cluster, one `svcnet-proxy run` per
//! node, and requests whose answers go into the report. Synchronous, like [`testkit::netns`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use testkit::netns::{bins, ClientOpts, Outcome, Process, Proto, Topology};

use super::report::{Attempt, Expect, Probe, Report};
use super::Error;

/// One demo pod: name, node index, `app` label, ready.
pub struct DemoPod {
    /// Pod name (and namespace tag).
    pub name: &'static str,
    /// Node index (1-based).
    pub node: u8,
    /// Value of the `app` label.
    pub app: &'static str,
    /// Whether its Ready condition is True.
    pub ready: bool,
}

/// The pods of the demo cluster. `client` is where in-cluster requests come from.
pub const PODS: &[DemoPod] = &[
    DemoPod {
        name: "web-0",
        node: 1,
        app: "web",
        ready: true,
    },
    DemoPod {
        name: "web-1",
        node: 2,
        app: "web",
        ready: true,
    },
    DemoPod {
        name: "web-2",
        node: 2,
        app: "web",
        ready: true,
    },
    DemoPod {
        name: "db-0",
        node: 1,
        app: "db",
        ready: true,
    },
    DemoPod {
        name: "db-1",
        node: 2,
        app: "db",
        ready: false,
    },
    DemoPod {
        name: "nginx-0",
        node: 2,
        app: "nginx",
        ready: true,
    },
    // svcnet-dns runs in this pod's namespace: the kube-dns Service selects it.
    DemoPod {
        name: "dns-0",
        node: 2,
        app: "kube-dns",
        ready: true,
    },
    DemoPod {
        name: "client",
        node: 1,
        app: "client",
        ready: true,
    },
];

/// The pod in-cluster requests come from.
pub const CLIENT_POD: &str = "client";

/// Labels of a demo pod.
pub fn labels(p: &DemoPod) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), p.app.to_string())])
}

/// Builds the 2-node topology with the demo pods (each running svcnet-echo on 8080).
pub fn build_topology() -> Result<Topology, Error> {
    let mut b = Topology::builder()
        .nodes(2)
        .outside_via(1)
        .client_timeout(Duration::from_millis(800))
        .echo_binary(bins::locate("svcnet-echo")?);
    for p in PODS {
        b = b.pod(p.name, p.node);
    }
    Ok(b.build()?)
}

/// Starts `svcnet-proxy run` in every node, talking to the API server through `kubeconfig`.
pub fn start_proxies(
    topo: &Topology,
    kubeconfig: &Path,
    cluster_cidr: &str,
    service_cidr: &str,
) -> Result<Vec<Process>, Error> {
    let proxy = bins::locate("svcnet-proxy")?;
    let mut out = Vec::new();
    for node in topo.nodes() {
        let mut cmd = node.netns().command(&proxy);
        cmd.arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args([
                "--node-name",
                node.name(),
                "--cluster-cidr",
                cluster_cidr,
                "--service-cluster-ip-range",
                service_cidr,
                "--healthz-bind-address",
                "127.0.0.1:10256",
                "--min-sync-period",
                "200ms",
                // Answer ARP/NDP for the LoadBalancer addresses (Leases in the demo namespace).
                "--l2-announce",
                "--l2-lease-namespace",
                super::control::NAMESPACE,
            ])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,dataplane=debug".into()),
            );
        out.push(topo.spawn_command(&format!("{}-svcnet-proxy", node.name()), cmd)?);
    }
    Ok(out)
}

fn attempt(o: &Outcome) -> Attempt {
    match o {
        Outcome::Replied { pod, peer, .. } => Attempt {
            pod: Some(pod.clone()),
            peer: Some(peer.ip().to_string()),
            outcome: "replied".into(),
        },
        Outcome::Refused { reason } => Attempt {
            pod: None,
            peer: None,
            outcome: format!("refused: {reason:?}"),
        },
        Outcome::Timeout => Attempt {
            pod: None,
            peer: None,
            outcome: "timeout".into(),
        },
        Outcome::Error { error } => Attempt {
            pod: None,
            peer: None,
            outcome: format!("error: {error}"),
        },
    }
}

/// Where a probe's requests come from.
#[derive(Clone, Copy)]
pub enum From {
    /// The client pod.
    Pod,
    /// The outside client.
    Outside,
}

/// A request plan: which Service, via which address, from where, expecting what.
pub struct Plan {
    /// Service name.
    pub service: String,
    /// Description of the address.
    pub via: String,
    /// Destination.
    pub target: SocketAddr,
    /// Source.
    pub from: From,
    /// Number of requests.
    pub count: u32,
    /// Expectation.
    pub expect: Expect,
}

/// The requests the demo sends, derived from the Services and Nodes read back from the API.
/// Services whose address is missing get no plan here (the allocation steps already fail).
pub fn plans(r: &Report) -> Vec<Plan> {
    let mut out = Vec::new();
    let first_port = |name: &str| r.service(name).and_then(|s| s.ports.first().cloned());
    let cluster_ip = |name: &str| {
        r.service(name)
            .and_then(|s| s.cluster_ips.first())
            .and_then(|ip| ip.parse::<IpAddr>().ok())
    };
    let client_node = PODS
        .iter()
        .find(|p| p.name == CLIENT_POD)
        .map_or(1, |p| p.node);
    let mut cluster = |name: &str, count: u32, expect: Expect| {
        if let (Some(ip), Some(port)) = (cluster_ip(name), first_port(name)) {
            out.push(Plan {
                service: name.into(),
                via: "ClusterIP".into(),
                target: SocketAddr::new(ip, port.port as u16),
                from: From::Pod,
                count,
                expect,
            });
        }
    };
    cluster("web", 6, Expect::Selected);
    cluster("web-sticky", 6, Expect::OnePod);
    cluster(
        "web-local",
        6,
        Expect::LocalTo(format!("node{client_node}")),
    );
    if let Some(np) = first_port("web-nodeport").and_then(|p| p.node_port) {
        for (node, ips) in &r.nodes {
            if let Some(ip) = ips.iter().find_map(|ip| ip.parse::<IpAddr>().ok()) {
                out.push(Plan {
                    service: "web-nodeport".into(),
                    via: format!("NodePort on {node}"),
                    target: SocketAddr::new(ip, np as u16),
                    from: From::Outside,
                    count: 4,
                    expect: Expect::Selected,
                });
            }
        }
    }
    if let (Some(svc), Some(port)) = (r.service("web-lb"), first_port("web-lb")) {
        if let Some(ip) = svc.lb_ips.iter().find_map(|ip| ip.parse::<IpAddr>().ok()) {
            out.push(Plan {
                service: "web-lb".into(),
                via: "LoadBalancer IP".into(),
                target: SocketAddr::new(ip, port.port as u16),
                from: From::Outside,
                count: 4,
                expect: Expect::Selected,
            });
        }
    }
    // Last: a refusal is an ICMP error, which the kernel rate-limits per destination (burst 6,
    // then 1/s); the requests before it give the bucket time to refill after any refusals seen
    // while waiting for the proxies.
    if let (Some(ip), Some(port)) = (cluster_ip("broken"), first_port("broken")) {
        out.push(Plan {
            service: "broken".into(),
            via: "ClusterIP".into(),
            target: SocketAddr::new(ip, port.port as u16),
            from: From::Pod,
            count: 2,
            expect: Expect::Refused,
        });
    }
    out
}

/// Waits until the dataplane answers `target` from the client pod (the proxies have synced).
pub fn wait_programmed(
    topo: &Topology,
    target: SocketAddr,
    timeout: Duration,
) -> Result<(), Error> {
    let pod = topo.pod(CLIENT_POD)?;
    let deadline = Instant::now() + timeout;
    loop {
        let o = topo.client(pod, Proto::Tcp, target)?;
        if o.is_replied() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Step(format!(
                "{target} did not answer within {timeout:?} (last: {o:?})"
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Sends a plan's requests and records what came back.
pub fn run(topo: &Topology, plan: &Plan) -> Result<Probe, Error> {
    let mut opts = ClientOpts::count(plan.count);
    if plan.expect == Expect::Refused {
        opts = opts.timeout(Duration::from_millis(400));
    }
    let (outcomes, from) = match plan.from {
        From::Pod => {
            let pod = topo.pod(CLIENT_POD)?;
            (
                topo.clients(pod, Proto::Tcp, plan.target, &opts)?,
                format!("pod {CLIENT_POD} ({})", pod.ipv4()),
            )
        }
        From::Outside => {
            let out = topo.outside()?;
            (
                topo.clients(out, Proto::Tcp, plan.target, &opts)?,
                format!("outside client ({})", out.ipv4()),
            )
        }
    };
    Ok(Probe {
        service: plan.service.clone(),
        via: plan.via.clone(),
        from,
        target: plan.target.to_string(),
        expect: plan.expect.clone(),
        attempts: outcomes.iter().map(attempt).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::report::{PortSummary, ServiceSummary};

    fn svc(name: &str, ip: &str, node_port: Option<i32>, lb: &[&str]) -> ServiceSummary {
        ServiceSummary {
            name: name.into(),
            cluster_ips: vec![ip.into()],
            ports: vec![PortSummary {
                port: 80,
                node_port,
                ..Default::default()
            }],
            lb_ips: lb.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn plans_use_the_allocated_addresses() {
        let r = Report {
            nodes: BTreeMap::from([
                ("node1".into(), vec!["192.168.200.11".into()]),
                ("node2".into(), vec!["192.168.200.12".into()]),
            ]),
            services: vec![
                svc("web", "10.96.0.7", None, &[]),
                svc("web-nodeport", "10.96.0.8", Some(30080), &[]),
                svc("web-lb", "10.96.0.9", Some(31000), &["10.97.0.17"]),
                svc("web-sticky", "None", None, &[]),
            ],
            ..Default::default()
        };
        let p = plans(&r);
        let targets: Vec<_> = p.iter().map(|p| p.target.to_string()).collect();
        assert_eq!(
            targets,
            vec![
                "10.96.0.7:80",
                "192.168.200.11:30080",
                "192.168.200.12:30080",
                "10.97.0.17:80"
            ]
        );
    }
}
