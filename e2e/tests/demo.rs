//! `svcnet demo` end to end: runs the binary with `--json` and checks its report.
//!
//! * [`demo_end_to_end_as_root`] needs root (network namespaces, nftables; CI runs as root): the
//!   full demo with real traffic through svcnet-proxy.
//! * [`demo_control_plane_only`] needs no root: `--no-dataplane` (what a non-root user gets),
//!   allocations, slices, the Event and the rendered ruleset.
//!
//! The demo starts svcnet-controller and svcnet-proxy from the workspace's target directory
//! (`testkit::netns::bins::locate`); a workspace-wide `cargo nextest run` builds them, otherwise run
//! `cargo build --bins --workspace` first.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashSet};
use std::io::Read;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli::demo::report::{Expect, Probe, Report};
use cli::demo::{LB_POOL_CIDR, SERVICE_CIDR};
use testkit::netns::{bins, Cidr};

/// The demo process; on drop (a failing test) it gets SIGINT — so it cleans up — then SIGKILL.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill")
                .args(["-INT", &self.0.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs `svcnet demo --json <extra>`; returns the parsed report, whether it exited 0, and stderr.
fn run_demo(extra: &[&str], limit: Duration) -> (Report, bool, String) {
    let mut cmd = Command::new(
        bins::locate("svcnet").expect("svcnet is built (cargo build --workspace --bins)"),
    );
    cmd.args(["demo", "--json", "--timeout", "20"])
        .args(extra)
        .env(
            bins::env_var("svcnet-echo"),
            bins::locate("svcnet-echo")
                .expect("svcnet-echo is built (cargo build --workspace --bins)"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in ["svcnet-controller", "svcnet-proxy"] {
        let path = bins::locate(name)
            .unwrap_or_else(|e| panic!("{e} (run `cargo build --bins --workspace` first)"));
        cmd.env(bins::env_var(name), path);
    }
    let mut demo = Demo(cmd.spawn().expect("svcnet demo starts"));
    let mut stdout = demo.0.stdout.take().unwrap();
    let mut stderr = demo.0.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = demo.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "svcnet demo ran longer than {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = out_reader.join().unwrap();
    let err = err_reader.join().unwrap();
    let report: Report = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("report is not JSON ({e}); stdout:\n{out}\nstderr:\n{err}"));
    (report, status.success(), err)
}

fn failed_steps(r: &Report) -> Vec<String> {
    r.steps
        .iter()
        .filter(|s| !s.ok)
        .map(|s| format!("{}: {}", s.name, s.detail))
        .collect()
}

/// Checks of the allocation part, shared by both modes; computed here from the raw report, not
/// from the demo's own verdicts.
fn check_allocations(r: &Report) {
    let cidr: Cidr = SERVICE_CIDR.parse().unwrap();
    let mut seen = HashSet::new();
    let mut with_ip = 0;
    for s in &r.services {
        match s.name.as_str() {
            "db-peers" => assert_eq!(s.cluster_ips, vec!["None"], "headless keeps None"),
            "external-database" => {
                assert!(s.cluster_ips.is_empty(), "ExternalName has no ClusterIP");
                assert_eq!(s.external_name.as_deref(), Some("db.example.com"));
            }
            _ => {
                assert!(!s.cluster_ips.is_empty(), "{} has no ClusterIP", s.name);
                for ip in &s.cluster_ips {
                    let addr: IpAddr = ip.parse().unwrap();
                    assert!(cidr.contains(addr), "{} got {ip}, outside {cidr}", s.name);
                    assert!(seen.insert(ip.clone()), "{ip} allocated twice");
                }
                with_ip += 1;
            }
        }
    }
    assert_eq!(
        with_ip, 7,
        "seven Services need a ClusterIP: {:?}",
        r.services
    );
    let np = r.service("web-nodeport").expect("web-nodeport");
    assert_eq!(np.ports[0].node_port, Some(30080));
    let lb = r.service("web-lb").expect("web-lb");
    let pool: Cidr = LB_POOL_CIDR.parse().unwrap();
    assert!(
        lb.lb_ips
            .iter()
            .any(|ip| pool.contains(ip.parse().unwrap())),
        "web-lb has no pool IP: {:?}",
        lb.lb_ips
    );
    assert!(
        lb.ports[0].node_port.is_some(),
        "LoadBalancer gets a nodePort"
    );

    // Slices: web lists the three web pods, db-peers also lists the not-ready db-1.
    let pods_of = |svc: &str| -> BTreeSet<String> {
        r.endpoint_slices
            .iter()
            .filter(|s| s.service == svc)
            .flat_map(|s| s.endpoints.iter().filter_map(|e| e.pod.clone()))
            .collect()
    };
    assert_eq!(
        pods_of("web"),
        BTreeSet::from(["web-0".into(), "web-1".into(), "web-2".into()])
    );
    assert_eq!(
        pods_of("db-peers"),
        BTreeSet::from(["db-0".into(), "db-1".into()])
    );
    assert!(pods_of("broken").is_empty());
    assert!(!r.pod("db-1").expect("db-1").ready, "db-1 is not ready");

    // The broken Service's diagnostic names its selector.
    assert!(
        r.events.iter().any(|e| e.service == "broken"
            && e.type_ == "Warning"
            && e.message.contains("app=nginx-typo")),
        "no diagnostic Event naming the selector: {:?}",
        r.events
    );
}

/// Root only: the full demo (netns cluster, svcnet-proxy, real requests) passes, and its report
/// shows requests answered by app=web pods, one pod for the sticky Service, only node-local pods
/// for internalTrafficPolicy Local, the LB IP reachable from outside, and the broken Service
/// refused.
#[test]
fn demo_end_to_end_as_root() {
    testkit::netns::require_root().expect("this test needs root (network namespaces)");
    let (r, ok, err) = run_demo(&[], Duration::from_secs(90));
    assert!(r.root, "ran in root mode");
    assert!(
        ok && r.ok(),
        "demo failed: {:?}\nstderr:\n{err}",
        failed_steps(&r)
    );
    check_allocations(&r);

    let app = |pod: &str| {
        r.pod(pod)
            .and_then(|p| p.labels.get("app").cloned())
            .unwrap_or_default()
    };
    fn probes<'a>(r: &'a Report, svc: &'a str) -> impl Iterator<Item = &'a Probe> + 'a {
        r.traffic.iter().filter(move |p| p.service == svc)
    }
    for svc in ["web", "web-nodeport", "web-sticky", "web-local", "web-lb"] {
        assert!(probes(&r, svc).next().is_some(), "no requests to {svc}");
        for p in probes(&r, svc) {
            assert!(!p.attempts.is_empty());
            for a in &p.attempts {
                let pod = a
                    .pod
                    .as_deref()
                    .unwrap_or_else(|| panic!("{svc}: {}", a.outcome));
                assert_eq!(app(pod), "web", "{svc} answered by {pod}");
                assert!(a.peer.is_some(), "the answer carries the source IP it saw");
            }
        }
    }
    let sticky: BTreeSet<_> = probes(&r, "web-sticky")
        .flat_map(|p| p.attempts.iter().filter_map(|a| a.pod.clone()))
        .collect();
    assert_eq!(sticky.len(), 1, "sticky answered by {sticky:?}");
    for p in probes(&r, "web-local") {
        let Expect::LocalTo(node) = &p.expect else {
            panic!("web-local expects node-local answers")
        };
        for a in &p.attempts {
            let pod = r.pod(a.pod.as_deref().unwrap()).unwrap();
            assert_eq!(&pod.node, node, "ITP Local answered from another node");
        }
    }
    assert!(probes(&r, "web-lb").all(|p| p.from.starts_with("outside")));
    for p in probes(&r, "broken") {
        assert!(p.attempts.iter().all(|a| a.outcome.starts_with("refused")));
    }
    assert!(r.ruleset.is_none());
    check_dns(&r);
}

/// The DNS queries of the root demo, checked against the report's API objects.
fn check_dns(r: &Report) {
    assert!(r.dns_skipped.is_none());
    assert_eq!(r.dns.len(), 6, "six DNS queries: {:?}", r.dns);
    for q in &r.dns {
        assert!(q.ok, "{} answered {:?}", q.question, q.answers);
        assert!(q.from.starts_with("pod client"), "{}", q.from);
    }
    let answers = |question: &str| -> Vec<String> {
        r.dns
            .iter()
            .find(|q| q.question == question)
            .unwrap_or_else(|| panic!("no query {question:?}: {:?}", r.dns))
            .answers
            .clone()
    };
    let web_ip = r.service("web").unwrap().cluster_ips[0].clone();
    assert_eq!(answers("+search web A"), [format!("A {web_ip}")]);
    assert_eq!(
        answers("web.demo.svc.cluster.local. A"),
        [format!("A {web_ip}")]
    );
    let mut peers = answers("+search db-peers A");
    peers.sort();
    let mut db_ips: Vec<String> = ["db-0", "db-1"]
        .iter()
        .map(|p| format!("A {}", r.pod(p).unwrap().ips[0]))
        .collect();
    db_ips.sort();
    assert_eq!(peers, db_ips, "headless: both db pods, db-1 not ready");
    assert_eq!(
        answers(&format!("-x {web_ip}")),
        ["PTR web.demo.svc.cluster.local."]
    );
    assert_eq!(
        answers("_http._tcp.web.demo.svc.cluster.local. SRV"),
        ["SRV 0 100 80 web.demo.svc.cluster.local."]
    );
    let ext = answers("+search external-database A");
    assert!(
        ext.contains(&"CNAME db.example.com.".to_string())
            && ext.iter().any(|a| a.starts_with("A ")),
        "ExternalName: CNAME and the chased A: {ext:?}"
    );
    // The pods' resolv.conf named the kube-dns ClusterIP, and are gone after the demo.
    let dns_ip = &r.service("kube-dns").unwrap().cluster_ips[0];
    assert!(r
        .steps
        .iter()
        .any(|s| s.name == "resolv.conf in every pod" && s.detail.contains(dns_ip.as_str())));
    for e in std::fs::read_dir("/etc/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let conf = std::fs::read_to_string(e.path().join("resolv.conf")).unwrap_or_default();
        assert!(
            !conf.contains(&format!("nameserver {dns_ip}")),
            "{} left behind",
            e.path().display()
        );
    }
}

/// No root needed: `--no-dataplane` runs the control-plane half and prints the ruleset
/// `svcnet-proxy render` would program on node1 instead of sending traffic.
#[test]
fn demo_control_plane_only() {
    let (r, ok, err) = run_demo(&["--no-dataplane"], Duration::from_secs(60));
    assert!(!r.root);
    assert!(
        ok && r.ok(),
        "demo failed: {:?}\nstderr:\n{err}",
        failed_steps(&r)
    );
    check_allocations(&r);
    assert!(r.traffic.is_empty(), "no traffic without the dataplane");
    assert!(r.dns.is_empty(), "no DNS queries without the dataplane");
    assert!(
        r.dns_skipped.is_some(),
        "the report says why DNS was skipped"
    );
    let rs = r.ruleset.as_deref().expect("the rendered ruleset");
    let web_ip = &r.service("web").unwrap().cluster_ips[0];
    assert!(
        rs.contains(web_ip.as_str()),
        "ruleset mentions web's ClusterIP {web_ip}"
    );
}
