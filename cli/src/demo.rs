//! `svcnet demo`: README's first command.
//!
//! It starts the embedded API server (in-process), svcnet-controller (a child process with a
//! kubeconfig), and — as root — a 2-node network-namespace cluster ([`testkit::netns`]) whose pods
//! run svcnet-echo, with one `svcnet-proxy run` per node. It creates the Node and Pod objects
//! with the namespaces' real addresses, a LoadBalancerIPPool, applies the Services of
//! `examples/services.yaml`, and reports what it observed: allocations read back from the API,
//! the EndpointSlices, which pod answered each request (and the source IP it saw), and the
//! diagnostic Event of the broken Service. Every claim in the report is checked by a step
//! ([`checks`]); any failed step makes the demo exit non-zero.
//!
//! As root it then runs svcnet-dns in a pod behind the `kube-dns` Service, gives every pod a
//! resolv.conf pointing at that Service, and resolves the example Services with `dig` from a pod
//! ([`dns`]).
//!
//! Without root it says so, runs the control-plane half and prints the ruleset
//! `svcnet-proxy render` would program on node1 instead of sending traffic (and no DNS).
//!
//! Cleanup: everything the demo starts is owned by a value dropped when the demo ends — the
//! [`testkit::netns::Topology`] (namespaces, echo servers, proxies and their nft tables), the
//! controller child (`kill_on_drop`) and the API server. Ctrl-C is caught with
//! `tokio::signal::ctrl_c` so that those drops run.
//!
//! `--json` prints the [`report::Report`] as JSON on stdout (the e2e test asserts on it).

pub mod checks;
pub mod control;
pub mod dns;
pub mod l2;
pub mod report;
pub mod traffic;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::Client;

use apiserver::{kubeconfig_yaml, ApiServer, ServerConfig};
use report::Report;
use testkit::netns::{self, bins, plan, Cidr, Topology};

/// The seed scenarios' Services (`examples/services.yaml`), applied unless `--manifest` is given.
pub const EXAMPLE_SERVICES: &str = include_str!("../../examples/services.yaml");

/// Service CIDR given to the controller and the proxies.
pub const SERVICE_CIDR: &str = plan::SERVICE_CIDR_V4;
/// NodePort range given to the controller.
pub const NODE_PORT_RANGE: (i32, i32) = (30000, 32767);
/// The LoadBalancerIPPool: inside the LAN's own prefix, so that the outside client has no route
/// for it and finds it by ARP, answered by the node svcnet-proxy's L2 announcement elects.
pub const LB_POOL_CIDR: &str = "192.168.200.240/28";

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The embedded API server failed.
    #[error("embedded API server: {0}")]
    Server(#[from] apiserver::Error),
    /// An API call failed.
    #[error("API call: {0}")]
    Kube(#[from] kube::Error),
    /// The network-namespace harness failed.
    #[error("netns: {0}")]
    Netns(#[from] netns::Error),
    /// The manifest could not be used.
    #[error("manifest: {0}")]
    Manifest(String),
    /// A filesystem or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A step did not work (the message says what).
    #[error("{0}")]
    Step(String),
    /// Some steps failed (the report lists them).
    #[error("{0} demo step(s) failed; see the report")]
    Failed(usize),
    /// Ctrl-C.
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    pub(crate) fn io(context: &str, source: std::io::Error) -> Self {
        Error::Io {
            context: context.to_string(),
            source,
        }
    }
}

/// Arguments of `svcnet demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Print the report as JSON on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// Services to apply (multi-document YAML); default: the bundled examples/services.yaml.
    /// Requests are sent to the example's Service names (web, web-sticky, web-local,
    /// web-nodeport, web-lb, broken) where present; every Service's allocations and slices are
    /// shown and checked.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Do not build the network-namespace cluster even as root (control plane + render only).
    #[arg(long)]
    pub no_dataplane: bool,
    /// How long to wait for allocations, EndpointSlices and Events.
    #[arg(long, default_value = "30", value_name = "SECONDS")]
    pub timeout: u64,
}

/// `k=v,k2=v2` with keys sorted (as svcnet's diagnostics print a selector).
pub fn selector_text(sel: &BTreeMap<String, String>) -> String {
    sel.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn progress(msg: &str) {
    eprintln!("svcnet demo: {msg}");
}

impl DemoArgs {
    /// Runs the demo, prints the report, and fails if a step failed or on Ctrl-C (after
    /// cleaning up). Needs a multi-threaded tokio runtime: the synchronous netns harness runs
    /// under `block_in_place`.
    pub async fn run(self) -> Result<(), Error> {
        let json = self.json;
        let mut fut = Box::pin(demo(self));
        let outcome = tokio::select! {
            r = &mut fut => Some(r),
            r = tokio::signal::ctrl_c() => {
                if let Err(e) = r {
                    tracing::error!(error = %e, "cannot listen for Ctrl-C");
                }
                progress("interrupted: cleaning up");
                None
            }
        };
        let Some(outcome) = outcome else {
            // Dropping the demo drops the topology (namespaces, proxies, echo servers and their
            // nft tables), the controller child and the API server.
            drop(fut);
            progress("interrupted: cleaned up namespaces, processes and nft tables");
            return Err(Error::Interrupted);
        };
        let report = outcome?;
        if json {
            let text = serde_json::to_string_pretty(&report)
                .map_err(|e| Error::Step(format!("serialising the report: {e}")))?;
            println!("{text}");
        } else {
            print!("{}", report::render_text(&report));
        }
        if report.ok() {
            Ok(())
        } else {
            Err(Error::Failed(report.steps.iter().filter(|s| !s.ok).count()))
        }
    }
}

/// Everything the demo started; dropping it cleans up (fields drop in order: proxies, the
/// topology, the controller, the API server).
#[derive(Default)]
struct Running {
    dns: Vec<netns::Process>,
    proxies: Vec<netns::Process>,
    topo: Option<Topology>,
    controller: Option<control::Controller>,
    server: Option<ApiServer>,
}

async fn demo(args: DemoArgs) -> Result<Report, Error> {
    let root = netns::require_root().is_ok();
    let mut report = Report {
        root: root && !args.no_dataplane,
        service_cidr: SERVICE_CIDR.into(),
        node_port_range: format!("{}-{}", NODE_PORT_RANGE.0, NODE_PORT_RANGE.1),
        lb_pool_cidrs: vec![LB_POOL_CIDR.into()],
        ..Report::default()
    };
    if !root {
        progress("not running as root: no network namespaces, so no traffic; running the control plane and printing the ruleset svcnet-proxy would program");
    }
    let dir = tempfile::Builder::new()
        .prefix("svcnet-demo-")
        .tempdir()
        .map_err(|e| Error::io("creating a temp directory", e))?;
    let mut running = Running::default();
    let result = phases(&args, &mut report, &mut running, dir.path()).await;
    if let Err(e) = result {
        report.step("demo aborted", false, e.to_string());
    }
    if !report.ok() {
        // Keep the logs for whoever reads the failure.
        let kept = dir.keep();
        if let Some(topo) = running.topo.as_ref() {
            // The topology deletes its log directory when dropped: copy the logs first.
            copy_logs(topo.log_dir(), &kept.join("netns"));
        }
        report.log_dir = Some(kept.display().to_string());
    }
    progress("cleaning up");
    let server = running.server.take();
    drop(running);
    if let Some(s) = server {
        s.shutdown().await;
    }
    Ok(report)
}

async fn phases(
    args: &DemoArgs,
    report: &mut Report,
    running: &mut Running,
    dir: &Path,
) -> Result<(), Error> {
    let wait = Duration::from_secs(args.timeout);
    let manifest = match &args.manifest {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| Error::io(&format!("reading {}", p.display()), e))?,
        None => EXAMPLE_SERVICES.to_string(),
    };
    let services = control::parse_services(&manifest)?;
    let requested = control::requested_node_ports(&services);

    progress("starting the embedded API server");
    let server = ApiServer::start(ServerConfig::default()).await?;
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig)?;
    let client = server.client()?;
    let api_addr = server.addr();
    running.server = Some(server);
    report.step("embedded API server", true, api_addr.to_string());

    progress("starting svcnet-controller");
    let controller_bin = bins::locate("svcnet-controller")?;
    let cidr = SERVICE_CIDR.to_string();
    running.controller = Some(control::Controller::spawn(
        &controller_bin,
        &kubeconfig,
        &cidr,
        &report.node_port_range,
        dir.join("svcnet-controller.log"),
    )?);
    report.step(
        "svcnet-controller started",
        true,
        controller_bin.display().to_string(),
    );

    if report.root {
        progress("building the 2-node network-namespace cluster");
        let topo = tokio::task::block_in_place(traffic::build_topology);
        match topo {
            Ok(t) => {
                report.step(
                    "netns cluster",
                    true,
                    format!("namespaces {}", t.namespaces().join(" ")),
                );
                running.topo = Some(t);
            }
            Err(e) => report.step("netns cluster", false, e.to_string()),
        }
    }

    control::create_namespace(&client).await?;
    create_nodes_and_pods(&client, running.topo.as_ref()).await?;
    report.step(
        "Nodes and Pods created",
        true,
        format!("{} pods in namespace demo", traffic::PODS.len()),
    );

    progress("creating the LoadBalancerIPPool (the controller installs the CRD)");
    match control::create_pool(&client, &report.lb_pool_cidrs, wait).await {
        Ok(()) => report.step("LoadBalancerIPPool", true, report.lb_pool_cidrs.join(",")),
        Err(e) => report.step("LoadBalancerIPPool", false, e.to_string()),
    }
    match control::create_l2_announcement(&client, wait).await {
        Ok(()) => report.step(
            "L2Announcement",
            true,
            "every LoadBalancer address, from every node, on the interface of the node IP",
        ),
        Err(e) => report.step("L2Announcement", false, e.to_string()),
    }

    if let Some(topo) = running.topo.as_ref() {
        progress("starting svcnet-proxy in each node");
        let started = tokio::task::block_in_place(|| -> Result<_, Error> {
            let addr = topo.forward_from_host_to_nodes(6443, api_addr)?;
            let kc = dir.join("proxy.kubeconfig");
            std::fs::write(&kc, kubeconfig_yaml(&format!("http://{addr}")))
                .map_err(|e| Error::io("writing the proxy kubeconfig", e))?;
            traffic::start_proxies(topo, &kc, plan::CLUSTER_CIDR_V4, SERVICE_CIDR)
        });
        match started {
            Ok(p) => {
                report.step(
                    "svcnet-proxy run on every node",
                    true,
                    format!("{} proxies", p.len()),
                );
                running.proxies = p;
            }
            Err(e) => report.step("svcnet-proxy run on every node", false, e.to_string()),
        }
    }

    progress("applying the Services");
    control::apply_services(&client, &services).await?;

    progress("waiting for allocations, EndpointSlices and Events");
    let pool: Vec<Cidr> = report
        .lb_pool_cidrs
        .iter()
        .map(|c| c.parse())
        .collect::<Result<_, _>>()?;
    let service_cidr: Cidr = SERVICE_CIDR.parse()?;
    let deadline = tokio::time::Instant::now() + wait;
    let verdicts = loop {
        if let Some(c) = running.controller.as_mut() {
            c.check_running()?;
        }
        control::collect(&client, &requested, report).await?;
        let v = vec![
            (
                "ClusterIPs allocated",
                checks::cluster_ips(&report.services, &service_cidr),
            ),
            (
                "nodePorts allocated",
                checks::node_ports(&report.services, NODE_PORT_RANGE),
            ),
            (
                "LoadBalancer IPs from the pool",
                checks::lb_ips(&report.services, &pool),
            ),
            (
                "EndpointSlices match the pods",
                checks::endpoint_slices(report),
            ),
            (
                "diagnostic Event for broken",
                checks::diagnostic_event(report, "broken"),
            ),
        ];
        // Only the example's broken Service is expected to have a diagnostic Event.
        let v: Vec<_> = v
            .into_iter()
            .filter(|(name, _)| {
                *name != "diagnostic Event for broken" || requested.contains_key("broken")
            })
            .collect();
        if v.iter().all(|(_, r)| r.is_ok()) || tokio::time::Instant::now() >= deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for (name, v) in verdicts {
        match v {
            Ok(d) => report.step(name, true, d),
            Err(d) => report.step(name, false, d),
        }
    }

    match running.topo.as_ref() {
        Some(topo) if !running.proxies.is_empty() => {
            progress("sending requests through the dataplane");
            send_traffic(topo, report, wait);
            progress("starting svcnet-dns and resolving from a pod");
            match tokio::task::block_in_place(|| dns::start(topo, api_addr, dir, report, wait)) {
                Ok(started) => {
                    running.dns = started.processes;
                    tokio::task::block_in_place(|| dns::query(topo, report, wait));
                }
                Err(e) => report.step("cluster DNS", false, e.to_string()),
            }
            // Last: it kills a proxy.
            progress("L2 announcement: who answers for web-lb's address, and a take-over");
            l2::takeover(topo, &mut running.proxies, &client, report, wait).await;
        }
        Some(_) | None if report.root => {
            report.step(
                "traffic",
                false,
                "not sent: the cluster or the proxies did not start (see above)",
            );
        }
        _ => {
            let why = "not root (or --no-dataplane): no pod network namespaces to resolve from, \
                       so svcnet-dns and the DNS queries are skipped";
            progress(why);
            report.dns_skipped = Some(why.replace("  ", ""));
            progress("rendering node1's ruleset with svcnet-proxy render");
            match render(&client, dir).await {
                Ok(rs) => {
                    report.step(
                        "svcnet-proxy render",
                        true,
                        format!("{} lines of nft", rs.lines().count()),
                    );
                    report.ruleset = Some(rs);
                }
                Err(e) => report.step("svcnet-proxy render", false, e.to_string()),
            }
        }
    }
    Ok(())
}

fn send_traffic(topo: &Topology, report: &mut Report, wait: Duration) {
    let plans = traffic::plans(report);
    let Some(first) = plans.first() else {
        report.step("traffic", false, "no Service address to send to");
        return;
    };
    let ready = tokio::task::block_in_place(|| traffic::wait_programmed(topo, first.target, wait));
    match ready {
        Ok(()) => report.step(
            "dataplane programmed",
            true,
            format!("{} answers", first.target),
        ),
        Err(e) => report.step("dataplane programmed", false, e.to_string()),
    }
    for plan in &plans {
        let name = format!("traffic {} via {}", plan.service, plan.via);
        match tokio::task::block_in_place(|| traffic::run(topo, plan)) {
            Ok(probe) => {
                let verdict = match report.service(&probe.service) {
                    Some(svc) => checks::probe(&probe, svc, &report.pods),
                    None => Err(format!("Service {} not found", probe.service)),
                };
                match verdict {
                    Ok(d) => report.step(&name, true, d),
                    Err(d) => report.step(&name, false, d),
                }
                report.traffic.push(probe);
            }
            Err(e) => report.step(&name, false, e.to_string()),
        }
    }
    for (svc, via) in [("web-nodeport", "NodePort"), ("web-lb", "LoadBalancer IP")] {
        if report.service(svc).is_some() && !report.traffic.iter().any(|p| p.service == svc) {
            report.step(
                &format!("traffic {svc} via {via}"),
                false,
                "no address allocated to send to",
            );
        }
    }
}

async fn create_nodes_and_pods(client: &Client, topo: Option<&Topology>) -> Result<(), Error> {
    match topo {
        Some(topo) => {
            for node in topo.k8s_nodes()? {
                control::create_node(client, &node).await?;
            }
            for p in traffic::PODS {
                let mut pod = topo.k8s_pod(p.name, control::NAMESPACE, &traffic::labels(p))?;
                if !p.ready {
                    control::make_not_ready(&mut pod);
                }
                control::create_pod(client, &pod).await?;
            }
        }
        None => {
            // No namespaces: addresses from the same plan the topology would use.
            for i in 1..=2u8 {
                let node = control::plain_node(
                    &format!("node{i}"),
                    &plan::node_ipv4(i).to_string(),
                    &plan::pod_cidr_v4(i).to_string(),
                )?;
                control::create_node(client, &node).await?;
            }
            let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
                kube::Api::namespaced(client.clone(), control::NAMESPACE);
            let mut host: BTreeMap<u8, u8> = BTreeMap::new();
            for p in traffic::PODS {
                let h = host.entry(p.node).or_insert(1);
                *h += 1;
                let ip = plan::pod_ipv4(p.node, *h).to_string();
                let pod =
                    testkit::harness::pod(p.name, &format!("node{}", p.node), &[("app", p.app)]);
                let api_pods = pods.clone();
                match api_pods.create(&Default::default(), &pod).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
                testkit::harness::set_pod_ready(&pods, p.name, &ip, p.ready)
                    .await
                    .map_err(|e| {
                        Error::Step(format!("marking pod {} ready={}: {e}", p.name, p.ready))
                    })?;
            }
        }
    }
    Ok(())
}

/// Copies the regular files of `from` into `to` (best effort: this runs while reporting a
/// failure, and a missing log must not hide it).
fn copy_logs(from: &Path, to: &Path) {
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    if std::fs::create_dir_all(to).is_err() {
        return;
    }
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::copy(entry.path(), to.join(entry.file_name()));
        }
    }
}

async fn render(client: &Client, dir: &Path) -> Result<String, Error> {
    let input = control::render_input(client, "node1").await?;
    let file = dir.join("render-input.yaml");
    std::fs::write(&file, input).map_err(|e| Error::io("writing the render input", e))?;
    let proxy = bins::locate("svcnet-proxy")?;
    let out = tokio::process::Command::new(&proxy)
        .arg("render")
        .arg("-f")
        .arg(&file)
        .args([
            "--node-name",
            "node1",
            "--cluster-cidr",
            plan::CLUSTER_CIDR_V4,
            "--service-cluster-ip-range",
            SERVICE_CIDR,
        ])
        .output()
        .await
        .map_err(|e| Error::io(&format!("running {}", proxy.display()), e))?;
    if !out.status.success() {
        return Err(Error::Step(format!(
            "svcnet-proxy render failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
