//! The cluster-DNS half of the demo (root only): svcnet-dns as a real endpoint of a real
//! `kube-dns` Service, and `dig` from a pod through it.
//!
//! svcnet-dns runs inside the network namespace of pod `dns-0` (label `app: kube-dns`, on
//! node2), so it is an ordinary endpoint: the `kube-dns` Service of `examples/services.yaml`
//! selects that pod, svcnet-controller writes its EndpointSlice, and svcnet-proxy programs the
//! ClusterIP. A query from the client pod therefore goes pod netns → `kube-dns` ClusterIP:53 →
//! svcnet-proxy's nftables DNAT on node1 → pod `dns-0`:5353 on node2 → svcnet-dns, exactly the
//! path a kubelet-configured pod takes. (A selectorless Service with a hand-written slice would
//! show the same packets but not that the controller and the proxy treat DNS like any Service.)
//! svcnet-dns reaches the API server through a relay into its pod's loopback, as svcnet-proxy
//! does in the nodes.
//!
//! Every pod namespace gets `/etc/netns/<ns>/resolv.conf` naming the `kube-dns` ClusterIP read
//! back from the API, with the Kubernetes search path and `ndots:5`; `ip netns exec` bind-mounts
//! it, so `dig +search web` inside a pod resolves as in a cluster. The topology removes the files
//! when it is dropped.
//!
//! Names outside the cluster go to a fake upstream: `nsd` in node1's namespace serving the
//! `example.com` zone ([`UPSTREAM_NAME`] → [`UPSTREAM_ADDR`]), given to svcnet-dns as
//! `--upstream`; nothing leaves the machine.
//!
//! Each query is a step comparing the answer with what the API server holds (the allocated
//! ClusterIPs, the pod IPs the Service selects, the Service's ports and ExternalName) or, for
//! the chased A record, with the zone the fake upstream serves.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use apiserver::kubeconfig_yaml;
use testkit::netns::{bins, Place, Process, Topology};

use super::report::{DnsQuery, Report, ServiceSummary};
use super::{control, Error};

/// The pod svcnet-dns runs in.
pub const DNS_POD: &str = "dns-0";
/// The cluster DNS Service (in the demo namespace).
pub const DNS_SERVICE: &str = "kube-dns";
/// The port svcnet-dns listens on inside its pod (the Service maps 53 to it).
pub const DNS_PORT: u16 = 5353;
/// The cluster domain.
pub const ZONE: &str = "cluster.local";
/// The name the fake upstream serves.
pub const UPSTREAM_NAME: &str = "db.example.com";
/// Its address.
pub const UPSTREAM_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// The resolv.conf of a pod in `namespace` with cluster DNS at `nameserver`.
pub fn resolv_conf(nameserver: &str, namespace: &str) -> String {
    format!(
        "nameserver {nameserver}\nsearch {namespace}.svc.{ZONE} svc.{ZONE} {ZONE}\noptions ndots:5\n"
    )
}

fn nsd_files(dir: &Path, listen: Ipv4Addr) -> Result<std::path::PathBuf, Error> {
    let io = |e| Error::io("writing the fake upstream's files", e);
    std::fs::create_dir_all(dir).map_err(io)?;
    let zone = format!(
        "$ORIGIN example.com.\n$TTL 30\n@ IN SOA ns.example.com. hostmaster.example.com. 1 7200 1800 86400 30\n@ IN NS ns.example.com.\nns IN A {listen}\ndb IN A {UPSTREAM_ADDR}\n"
    );
    std::fs::write(dir.join("example.com.zone"), zone).map_err(io)?;
    let conf = format!(
        "server:\n  ip-address: {listen}@53\n  server-count: 1\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  database: \"\"\n  xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  logfile: \"{d}/nsd.log\"\n  verbosity: 1\nremote-control:\n  control-enable: no\nzone:\n  name: example.com\n  zonefile: example.com.zone\n",
        d = dir.display()
    );
    let path = dir.join("nsd.conf");
    std::fs::write(&path, conf).map_err(io)?;
    Ok(path)
}

/// `dig` inside `at`: returns the answer section as `(type, data)` pairs, in order.
fn dig(at: &impl Place, args: &[&str]) -> Result<Vec<(String, String)>, Error> {
    let out = at
        .netns()
        .exec(
            "dig",
            ["+noall", "+answer", "+time=2", "+tries=2"]
                .iter()
                .chain(args.iter()),
        )
        .map_err(Error::Netns)?;
    if !out.status.success() {
        return Err(Error::Step(format!(
            "dig {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            // `name TTL IN TYPE data…`
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 5 && !l.starts_with(';')).then(|| (f[3].to_string(), f[4..].join(" ")))
        })
        .collect())
}

/// Polls `dig` until `ok` holds or `wait` passes; the last answer either way.
fn dig_until(
    at: &impl Place,
    args: &[&str],
    wait: Duration,
    ok: impl Fn(&[(String, String)]) -> bool,
) -> Result<Vec<(String, String)>, Error> {
    let deadline = Instant::now() + wait;
    loop {
        let last = dig(at, args);
        match &last {
            Ok(a) if ok(a) => return last,
            _ if Instant::now() >= deadline => return last,
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// Processes the DNS half started; dropped before the topology.
pub struct Started {
    /// nsd and svcnet-dns.
    pub processes: Vec<Process>,
}

/// Starts the fake upstream and svcnet-dns, writes the pods' resolv.conf. Steps go into
/// `report`; an error means the DNS queries cannot run.
pub fn start(
    topo: &Topology,
    api: SocketAddr,
    dir: &Path,
    report: &mut Report,
    wait: Duration,
) -> Result<Started, Error> {
    let mut processes = Vec::new();
    let node1 = topo.node(1)?;
    let upstream = node1.ipv4();
    let conf = nsd_files(&dir.join("nsd"), upstream)?;
    let mut cmd = node1.netns().command("nsd");
    cmd.arg("-d").arg("-c").arg(&conf);
    processes.push(topo.spawn_command("node1-nsd", cmd)?);
    let server = format!("@{upstream}");
    let answer = dig_until(node1, &[&server, UPSTREAM_NAME, "A"], wait, |a| {
        !a.is_empty()
    })?;
    let got: Vec<String> = answer.iter().map(|(_, d)| d.clone()).collect();
    if got != [UPSTREAM_ADDR.to_string()] {
        return Err(Error::Step(format!(
            "the fake upstream nsd on {upstream}:53 answers {UPSTREAM_NAME} with {got:?}"
        )));
    }
    report.step(
        "fake upstream DNS (nsd)",
        true,
        format!("{upstream}:53 serves {UPSTREAM_NAME} A {UPSTREAM_ADDR}"),
    );

    let pod = topo.pod(DNS_POD)?;
    let relay = topo.forward_from_host(pod, 6443, api)?;
    let kc = dir.join("dns.kubeconfig");
    std::fs::write(&kc, kubeconfig_yaml(&format!("http://{relay}")))
        .map_err(|e| Error::io("writing the svcnet-dns kubeconfig", e))?;
    let bin = bins::locate("svcnet-dns")?;
    let mut cmd = pod.netns().command(&bin);
    cmd.arg("--kubeconfig")
        .arg(&kc)
        .args([
            "--listen",
            &format!("0.0.0.0:{DNS_PORT}"),
            "--admin-listen",
            "127.0.0.1:9153",
            "--upstream",
            &format!("{upstream}:53"),
            "--zone",
            ZONE,
        ])
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        );
    processes.push(topo.spawn_command("dns-0-svcnet-dns", cmd)?);
    // Ready once it answers the cluster zone's SOA (SERVFAIL until every kind is listed).
    let own = format!("@{}", pod.ipv4());
    let port = DNS_PORT.to_string();
    let soa = dig_until(pod, &[&own, "-p", &port, ZONE, "SOA"], wait, |a| {
        a.iter().any(|(t, _)| t == "SOA")
    })?;
    if soa.is_empty() {
        return Err(Error::Step(format!(
            "svcnet-dns in pod {DNS_POD} did not answer the {ZONE} SOA within {wait:?}"
        )));
    }
    report.step(
        "svcnet-dns in pod dns-0",
        true,
        format!(
            "{} on {}:{DNS_PORT}, upstream {upstream}:53",
            bin.display(),
            pod.ipv4()
        ),
    );

    let ip = report
        .service(DNS_SERVICE)
        .and_then(|s| s.cluster_ips.first().cloned())
        .ok_or_else(|| Error::Step(format!("Service {DNS_SERVICE} has no ClusterIP")))?;
    for p in topo.pods() {
        topo.set_resolv_conf(p, &resolv_conf(&ip, control::NAMESPACE))?;
    }
    report.step(
        "resolv.conf in every pod",
        true,
        format!(
            "nameserver {ip} (the {DNS_SERVICE} ClusterIP), search {}.svc.{ZONE} svc.{ZONE} {ZONE}, ndots:5",
            control::NAMESPACE
        ),
    );
    Ok(Started { processes })
}

fn sorted(v: impl IntoIterator<Item = String>) -> Vec<String> {
    v.into_iter().collect::<BTreeSet<_>>().into_iter().collect()
}

fn of_type(a: &[(String, String)], t: &str) -> Vec<String> {
    sorted(a.iter().filter(|(k, _)| k == t).map(|(_, d)| d.clone()))
}

fn fqdn(svc: &str) -> String {
    format!("{svc}.{}.svc.{ZONE}.", control::NAMESPACE)
}

fn ipv4_cluster_ips(s: &ServiceSummary) -> Vec<String> {
    sorted(
        s.cluster_ips
            .iter()
            .filter(|ip| ip.parse::<Ipv4Addr>().is_ok())
            .cloned(),
    )
}

/// One query from the client pod; its expected `(type, data)` values are computed by the
/// caller from the API objects.
struct Ask {
    step: String,
    args: Vec<String>,
    rtype: &'static str,
    expected: Vec<(String, Vec<String>)>,
    note: String,
}

/// The queries and what the API objects say they must answer.
fn asks(report: &Report) -> Result<Vec<Ask>, String> {
    let svc = |n: &str| {
        report
            .service(n)
            .ok_or_else(|| format!("Service {n} was not read back"))
    };
    let web = svc("web")?;
    let web_ips = ipv4_cluster_ips(web);
    if web_ips.is_empty() {
        return Err("web has no IPv4 ClusterIP".into());
    }
    let mut out = vec![
        Ask {
            step: "dns web (short name, search path)".into(),
            args: vec!["+search".into(), "web".into(), "A".into()],
            rtype: "A",
            expected: vec![("A".into(), web_ips.clone())],
            note: "web's ClusterIP".into(),
        },
        Ask {
            step: "dns web FQDN".into(),
            args: vec![fqdn("web"), "A".into()],
            rtype: "A",
            expected: vec![("A".into(), web_ips.clone())],
            note: "web's ClusterIP".into(),
        },
    ];
    let peers = svc("db-peers")?;
    let selected: Vec<_> = report
        .pods
        .iter()
        .filter(|p| {
            !peers.selector.is_empty()
                && peers
                    .selector
                    .iter()
                    .all(|(k, v)| p.labels.get(k) == Some(v))
        })
        .collect();
    let not_ready: Vec<&str> = selected
        .iter()
        .filter(|p| !p.ready)
        .map(|p| p.name.as_str())
        .collect();
    let pod_ips = sorted(
        selected
            .iter()
            .flat_map(|p| p.ips.iter())
            .filter(|ip| ip.parse::<Ipv4Addr>().is_ok())
            .cloned(),
    );
    let wanted = if peers.publish_not_ready {
        pod_ips
    } else {
        sorted(
            selected
                .iter()
                .filter(|p| p.ready)
                .flat_map(|p| p.ips.iter())
                .filter(|ip| ip.parse::<Ipv4Addr>().is_ok())
                .cloned(),
        )
    };
    out.push(Ask {
        step: "dns headless db-peers".into(),
        args: vec!["+search".into(), "db-peers".into(), "A".into()],
        rtype: "A",
        expected: vec![("A".into(), wanted)],
        note: format!(
            "the IPs of the pods it selects; publishNotReadyAddresses={} (not ready: {})",
            peers.publish_not_ready,
            if not_ready.is_empty() {
                "none".to_string()
            } else {
                not_ready.join(",")
            }
        ),
    });
    let http = web
        .ports
        .iter()
        .find(|p| !p.name.is_empty())
        .ok_or("web has no named port")?;
    out.push(Ask {
        step: format!(
            "dns SRV _{}._{} web",
            http.name,
            http.protocol.to_lowercase()
        ),
        args: vec![
            format!(
                "_{}._{}.{}",
                http.name,
                http.protocol.to_lowercase(),
                fqdn("web")
            ),
            "SRV".into(),
        ],
        rtype: "SRV",
        expected: vec![(
            "SRV".into(),
            vec![format!("0 100 {} {}", http.port, fqdn("web"))],
        )],
        note: format!("port {} ({}) of web", http.port, http.name),
    });
    out.push(Ask {
        step: "dns PTR of web's ClusterIP".into(),
        args: vec!["-x".into(), web_ips[0].clone()],
        rtype: "PTR",
        expected: vec![("PTR".into(), vec![fqdn("web")])],
        note: format!("{} → web", web_ips[0]),
    });
    let ext = svc("external-database")?;
    let target = ext
        .external_name
        .clone()
        .ok_or("external-database has no externalName")?;
    let mut expected = vec![(
        "CNAME".to_string(),
        vec![format!("{}.", target.trim_end_matches('.'))],
    )];
    if target.trim_end_matches('.') == UPSTREAM_NAME {
        expected.push(("A".into(), vec![UPSTREAM_ADDR.to_string()]));
    }
    out.push(Ask {
        step: "dns ExternalName external-database".into(),
        args: vec!["+search".into(), "external-database".into(), "A".into()],
        rtype: "A",
        expected,
        note: format!("CNAME {target}, A chased through the fake upstream"),
    });
    Ok(out)
}

/// Runs the queries from the client pod; one step each, recorded in `report.dns`.
pub fn query(topo: &Topology, report: &mut Report, wait: Duration) {
    let asks = match asks(report) {
        Ok(a) => a,
        Err(e) => {
            report.step("dns queries", false, e);
            return;
        }
    };
    let client = match topo.pod(super::traffic::CLIENT_POD) {
        Ok(p) => p,
        Err(e) => {
            report.step("dns queries", false, e.to_string());
            return;
        }
    };
    for ask in asks {
        let args: Vec<&str> = ask.args.iter().map(String::as_str).collect();
        let matches =
            |a: &[(String, String)]| ask.expected.iter().all(|(t, want)| of_type(a, t) == *want);
        // The first query may race the proxy programming the kube-dns ClusterIP.
        let answer = dig_until(client, &args, wait.min(Duration::from_secs(10)), matches);
        let (answers, ok, detail) = match answer {
            Ok(a) => {
                let ok = matches(&a);
                let shown: Vec<String> = a.iter().map(|(t, d)| format!("{t} {d}")).collect();
                let detail = if ok {
                    format!(
                        "{} → {} ({})",
                        ask.args.join(" "),
                        shown.join(", "),
                        ask.note
                    )
                } else {
                    format!(
                        "{} → {:?}, expected {:?} ({})",
                        ask.args.join(" "),
                        shown,
                        ask.expected,
                        ask.note
                    )
                };
                (shown, ok, detail)
            }
            Err(e) => (Vec::new(), false, e.to_string()),
        };
        report.step(&ask.step, ok, detail);
        report.dns.push(DnsQuery {
            from: format!("pod {} ({})", client.name(), client.ipv4()),
            question: ask.args.join(" "),
            rtype: ask.rtype.into(),
            answers,
            expected: ask
                .expected
                .iter()
                .flat_map(|(t, v)| v.iter().map(move |d| format!("{t} {d}")))
                .collect(),
            ok,
        });
    }
}
