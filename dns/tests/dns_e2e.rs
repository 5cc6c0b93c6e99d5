//! End-to-end tests of the `svcnet-dns` binary against the test kit's API server (embedded by
//! default; a real control plane with `KUBEBUILDER_ASSETS`). Objects are created through the
//! API; answers are read with a hickory-proto client over UDP and with `dig` (from Debian's
//! `bind9-dnsutils`; the `dig` checks are skipped with a message when it is missing).
//!
//! Services carry explicit ClusterIPs (random, inside the control plane's Service ranges), so
//! the tests need no IP allocator; EndpointSlices are written directly, as a controller would.

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use testkit::harness::TestEnv;
use tokio::net::UdpSocket;

const WAIT: Duration = Duration::from_secs(30);

/// The running binary; killed when dropped.
struct Dns {
    addr: SocketAddr,
    admin: SocketAddr,
    child: tokio::process::Child,
}

fn free_port() -> u16 {
    // Bind UDP and TCP on one port, then release it for the binary.
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        let port = udp.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

async fn start_dns(env: &TestEnv, upstream: SocketAddr, extra: &[&str]) -> Dns {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_svcnet-dns"))
        .arg("--kubeconfig")
        .arg(env.kubeconfig_path())
        .args(["--listen", &addr.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .args(["--upstream", &upstream.to_string()])
        .args(["--upstream-timeout", "1s"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start svcnet-dns");
    let dns = Dns { addr, admin, child };
    // Ready once cluster names answer (SERVFAIL until every kind is listed).
    wait(&dns, "cluster.local.", RecordType::SOA, |m| {
        m.metadata.response_code == ResponseCode::NoError
    })
    .await;
    dns
}

/// One question over UDP; `None` when nothing comes back within 3 s.
async fn ask(server: SocketAddr, name: &str, t: RecordType) -> Option<Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut m = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), t));
    sock.send_to(&m.to_vec().expect("encode"), server)
        .await
        .expect("send");
    let mut buf = vec![0u8; 65535];
    let (len, _) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    let reply = Message::from_vec(&buf[..len]).expect("decodable reply");
    assert_eq!(reply.metadata.id, m.metadata.id);
    Some(reply)
}

/// Asks until `ok` holds (or panics after [`WAIT`]); returns the last reply.
async fn wait<F: Fn(&Message) -> bool>(dns: &Dns, name: &str, t: RecordType, ok: F) -> Message {
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = ask(dns.addr, name, t).await;
        if let Some(r) = &reply {
            if ok(r) {
                return r.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name} {t}: condition not met in {WAIT:?}; last reply {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rdatas(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

fn has_dig() -> bool {
    let found = std::process::Command::new("dig")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("SKIPPING dig checks: `dig` is not installed (apt-get install bind9-dnsutils)");
    }
    found
}

/// `dig +short` lines, sorted.
fn dig(dns: &Dns, name: &str, t: &str) -> Vec<String> {
    let out = std::process::Command::new("dig")
        .arg(format!("@{}", dns.addr.ip()))
        .args(["-p", &dns.addr.port().to_string()])
        .args(["+short", "+time=2", "+tries=1"])
        .args(name.split_whitespace())
        .arg(t)
        .output()
        .expect("run dig");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// A fake upstream resolver: `*.upstream.test.` and `example.org.` A → 192.0.2.7;
/// `blackhole.test.` never answers; anything else is NXDOMAIN.
async fn fake_upstream() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = sock.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((len, peer)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            let Ok(q) = Message::from_vec(&buf[..len]) else {
                continue;
            };
            let Some(query) = q.queries.first().cloned() else {
                continue;
            };
            let name = query.name().to_lowercase().to_ascii();
            if name == "blackhole.test." {
                continue;
            }
            let mut r = Message::response(q.metadata.id, OpCode::Query);
            r.metadata.recursion_available = true;
            r.add_query(query.clone());
            if (name == "example.org." || name.ends_with(".upstream.test."))
                && query.query_type() == RecordType::A
            {
                r.add_answer(Record::from_rdata(
                    query.name().clone(),
                    60,
                    RData::A(A::new(192, 0, 2, 7)),
                ));
            } else {
                r.metadata.response_code = ResponseCode::NXDomain;
            }
            if let Ok(bytes) = r.to_vec() {
                let _ = sock.send_to(&bytes, peer).await;
            }
        }
    });
    addr
}

/// A random ClusterIP pair inside the control plane's ranges (10.96.0.0/12, fd00:10:96::/112).
fn random_ips() -> (String, String) {
    let (a, b): (u8, u8) = (
        rand::random::<u8>() % 200 + 20,
        rand::random::<u8>() % 250 + 2,
    );
    (
        format!("10.100.{a}.{b}"),
        format!("fd00:10:96::{:x}", u16::from(a) << 8 | u16::from(b)),
    )
}

fn service(name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("valid Service")
}

fn endpoint(ip: &str, ready: bool, hostname: Option<&str>) -> serde_json::Value {
    let mut e = json!({"addresses": [ip], "conditions": {"ready": ready, "serving": ready, "terminating": false}, "nodeName": "node-a"});
    if let Some(h) = hostname {
        e["hostname"] = json!(h);
    }
    e
}

fn slice(name: &str, svc: &str, endpoints: Vec<serde_json::Value>) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/service-name": svc,
            "endpointslice.kubernetes.io/managed-by": "dns-e2e.svcnet.io",
        }},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .expect("valid EndpointSlice")
}

fn reverse_v4(ip: &str) -> String {
    let mut parts: Vec<&str> = ip.split('.').collect();
    parts.reverse();
    format!("{}.in-addr.arpa.", parts.join("."))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_follow_the_api() {
    let env = TestEnv::start().await.expect("test env");
    let ns = env.namespace("dns").await.expect("namespace");
    let n = ns.name().to_string();
    let svcs: Api<Service> = Api::namespaced(env.client(), &n);
    let slices: Api<EndpointSlice> = Api::namespaced(env.client(), &n);
    let pp = PostParams::default();

    let (v4, _) = random_ips();
    let (dv4, dv6) = random_ips();
    svcs.create(
        &pp,
        &service(
            "web",
            json!({"clusterIP": v4, "clusterIPs": [v4], "ipFamilies": ["IPv4"],
                   "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}),
        ),
    )
    .await
    .expect("create web");
    svcs.create(
        &pp,
        &service(
            "dual",
            json!({"clusterIP": dv4, "clusterIPs": [dv4, dv6], "ipFamilies": ["IPv4", "IPv6"],
                   "ipFamilyPolicy": "RequireDualStack",
                   "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}),
        ),
    )
    .await
    .expect("create dual");
    svcs.create(
        &pp,
        &service(
            "db",
            json!({"clusterIP": "None", "ipFamilies": ["IPv4"],
                   "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}),
        ),
    )
    .await
    .expect("create db");
    svcs.create(
        &pp,
        &service(
            "ext",
            json!({"type": "ExternalName", "externalName": "db.upstream.test"}),
        ),
    )
    .await
    .expect("create ext");
    slices
        .create(
            &pp,
            &slice(
                "db-1",
                "db",
                vec![
                    endpoint("10.244.1.1", true, Some("db-0")),
                    endpoint("10.244.1.2", true, None),
                    endpoint("10.244.1.3", false, None),
                ],
            ),
        )
        .await
        .expect("create slice");

    let upstream = fake_upstream().await;
    let dns = start_dns(&env, upstream, &[]).await;
    let zone = "svc.cluster.local.";
    let web = format!("web.{n}.{zone}");
    let db = format!("db.{n}.{zone}");

    // A, AAAA, dual-stack.
    let r = wait(&dns, &web, RecordType::A, |m| !m.answers.is_empty()).await;
    assert!(r.metadata.authoritative);
    assert_eq!(rdatas(&r), vec![v4.clone()]);
    let dual = format!("dual.{n}.{zone}");
    let r = ask(dns.addr, &dual, RecordType::AAAA).await.expect("reply");
    assert_eq!(
        rdatas(&r),
        vec![dv6.parse::<IpAddr>().expect("ip").to_string()]
    );
    let r = ask(dns.addr, &dual, RecordType::A).await.expect("reply");
    assert_eq!(rdatas(&r), vec![dv4.clone()]);
    // NODATA vs NXDOMAIN.
    let r = ask(dns.addr, &web, RecordType::AAAA).await.expect("reply");
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities.len(), 1, "SOA in the authority section");
    let r = ask(dns.addr, &format!("nope.{n}.{zone}"), RecordType::A)
        .await
        .expect("reply");
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    // SRV with the target's address in the additional section.
    let r = ask(dns.addr, &format!("_http._tcp.{web}"), RecordType::SRV)
        .await
        .expect("reply");
    assert_eq!(rdatas(&r), vec![format!("0 100 80 {web}")]);
    assert_eq!(r.additionals.len(), 1);
    // Headless: ready endpoints only; hostname; SRV per endpoint.
    let r = ask(dns.addr, &db, RecordType::A).await.expect("reply");
    assert_eq!(rdatas(&r), vec!["10.244.1.1", "10.244.1.2"]);
    let r = ask(dns.addr, &format!("db-0.{db}"), RecordType::A)
        .await
        .expect("reply");
    assert_eq!(rdatas(&r), vec!["10.244.1.1"]);
    let r = ask(dns.addr, &format!("_http._tcp.{db}"), RecordType::SRV)
        .await
        .expect("reply");
    assert_eq!(
        rdatas(&r),
        vec![
            format!("0 50 8080 10-244-1-2.{db}"),
            format!("0 50 8080 db-0.{db}")
        ]
    );
    // PTR of a ClusterIP and of an endpoint.
    let r = ask(dns.addr, &reverse_v4(&v4), RecordType::PTR)
        .await
        .expect("reply");
    assert_eq!(rdatas(&r), vec![web.clone()]);
    let r = ask(dns.addr, &reverse_v4("10.244.1.1"), RecordType::PTR)
        .await
        .expect("reply");
    assert_eq!(rdatas(&r), vec![format!("db-0.{db}")]);
    // ExternalName: the CNAME, and its target chased through the upstream.
    let r = ask(dns.addr, &format!("ext.{n}.{zone}"), RecordType::A)
        .await
        .expect("reply");
    assert_eq!(rdatas(&r), vec!["192.0.2.7", "db.upstream.test."]);
    // Pods (insecure mode: any well-formed address in an existing namespace).
    let r = ask(
        dns.addr,
        &format!("10-244-9-9.{n}.pod.cluster.local."),
        RecordType::A,
    )
    .await
    .expect("reply");
    assert_eq!(rdatas(&r), vec!["10.244.9.9"]);
    // dns-version.
    let r = ask(dns.addr, "dns-version.cluster.local.", RecordType::TXT)
        .await
        .expect("reply");
    assert_eq!(rdatas(&r), vec!["1.1.0"]);

    if has_dig() {
        assert_eq!(dig(&dns, &web, "A"), vec![v4.clone()]);
        assert_eq!(
            dig(&dns, &format!("_http._tcp.{web}"), "SRV"),
            vec![format!("0 100 80 {web}")]
        );
        assert_eq!(dig(&dns, &db, "A"), vec!["10.244.1.1", "10.244.1.2"]);
        assert_eq!(dig(&dns, &reverse_v4(&v4), "PTR"), vec![web.clone()]);
        assert_eq!(
            dig(
                &dns,
                &format!("WEB.{}.SVC.Cluster.Local.", n.to_uppercase()),
                "A"
            ),
            vec![v4.clone()]
        );
        assert_eq!(dig(&dns, "example.org.", "A"), vec!["192.0.2.7"]);
        assert_eq!(
            dig(&dns, &format!("+tcp {db}"), "A"),
            vec!["10.244.1.1", "10.244.1.2"]
        );
    }

    // Updates: an endpoint added, one marked not ready, the Service deleted.
    let patch = json!({"endpoints": [
        endpoint("10.244.1.1", true, Some("db-0")),
        endpoint("10.244.1.2", false, None),
        endpoint("10.244.1.4", true, None),
    ]});
    slices
        .patch("db-1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch slice");
    wait(&dns, &db, RecordType::A, |m| {
        rdatas(m) == vec!["10.244.1.1", "10.244.1.4"]
    })
    .await;
    svcs.delete("web", &DeleteParams::default())
        .await
        .expect("delete web");
    wait(&dns, &web, RecordType::A, |m| {
        m.metadata.response_code == ResponseCode::NXDomain
    })
    .await;
    let r = ask(dns.addr, &reverse_v4(&v4), RecordType::PTR)
        .await
        .expect("reply");
    assert!(r.answers.is_empty(), "{r:?}");

    // A re-list after the watches expire (410): the answers stay, and later changes arrive.
    if let Some(server) = env.server() {
        server.expire_watches();
        let (late_ip, _) = random_ips();
        svcs.create(
            &pp,
            &service(
                "late",
                json!({"clusterIP": late_ip, "clusterIPs": [late_ip], "ipFamilies": ["IPv4"],
                       "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}),
            ),
        )
        .await
        .expect("create late");
        let late = format!("late.{n}.{zone}");
        wait(&dns, &late, RecordType::A, |m| {
            rdatas(m) == vec![late_ip.clone()]
        })
        .await;
        let r = ask(dns.addr, &db, RecordType::A).await.expect("reply");
        assert_eq!(rdatas(&r), vec!["10.244.1.1", "10.244.1.4"]);
    }

    // Metrics in CoreDNS's names.
    let body = http_get(dns.admin, "/metrics").await;
    assert!(body.contains("coredns_dns_requests_total{"), "{body}");
    assert!(body.contains("coredns_dns_responses_total{"), "{body}");
    assert!(http_get(dns.admin, "/readyz")
        .await
        .starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_and_fails_fast_on_a_dead_upstream() {
    let env = TestEnv::start().await.expect("test env");
    let upstream = fake_upstream().await;
    let dns = start_dns(&env, upstream, &[]).await;
    let r = ask(dns.addr, "Example.Org.", RecordType::A)
        .await
        .expect("reply");
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(!r.metadata.authoritative);
    assert_eq!(rdatas(&r), vec!["192.0.2.7"]);
    assert_eq!(r.answers[0].name.to_ascii(), "Example.Org.");
    let r = ask(dns.addr, "missing.test.", RecordType::A)
        .await
        .expect("reply");
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    // The upstream never answers this one: SERVFAIL within the 1 s deadline (plus slack).
    let started = Instant::now();
    let r = ask(dns.addr, "blackhole.test.", RecordType::A)
        .await
        .expect("a reply, not silence");
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    // Malformed input: FORMERR, and the server keeps answering.
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    sock.send_to(&[0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0], dns.addr)
        .await
        .expect("send");
    let mut buf = [0u8; 512];
    let (len, _) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
        .await
        .expect("FORMERR in time")
        .expect("recv");
    let formerr = Message::from_vec(&buf[..len]).expect("decodes");
    assert_eq!(formerr.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(formerr.metadata.id, 0xabcd);
    let r = ask(dns.addr, "example.org.", RecordType::A)
        .await
        .expect("reply");
    assert_eq!(rdatas(&r), vec!["192.0.2.7"]);
    // SIGTERM: a clean exit.
    let mut dns = dns;
    let pid = dns.child.id().expect("running");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(5), dns.child.wait())
        .await
        .expect("exits within 5 s of SIGTERM")
        .expect("wait");
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_pods_answer_only_existing_pod_ips() {
    use k8s_openapi::api::core::v1::Pod;
    let env = TestEnv::start().await.expect("test env");
    let ns = env.namespace("dns-pods").await.expect("namespace");
    let n = ns.name().to_string();
    let pods: Api<Pod> = Api::namespaced(env.client(), &n);
    pods.create(
        &PostParams::default(),
        &testkit::harness::pod("web-0", "node-a", &[("app", "web")]),
    )
    .await
    .expect("create pod");
    testkit::harness::set_pod_ready(&pods, "web-0", "10.244.7.7", true)
        .await
        .expect("pod status");
    let upstream = fake_upstream().await;
    let dns = start_dns(&env, upstream, &["--pods", "verified"]).await;
    let known = format!("10-244-7-7.{n}.pod.cluster.local.");
    let r = wait(&dns, &known, RecordType::A, |m| !m.answers.is_empty()).await;
    assert_eq!(rdatas(&r), vec!["10.244.7.7"]);
    let r = ask(
        dns.addr,
        &format!("10-244-7-8.{n}.pod.cluster.local."),
        RecordType::A,
    )
    .await
    .expect("reply");
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    let r = ask(
        dns.addr,
        "10-244-7-7.default.pod.cluster.local.",
        RecordType::A,
    )
    .await
    .expect("reply");
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::NXDomain,
        "another namespace"
    );
    pods.delete(
        "web-0",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await
    .expect("delete pod");
    wait(&dns, &known, RecordType::A, |m| {
        m.metadata.response_code == ResponseCode::NXDomain
    })
    .await;
}

#[test]
fn bad_flags_exit_64() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_svcnet-dns"))
        .args(["--pods", "sometimes", "--upstream", "127.0.0.1"])
        .output()
        .expect("run svcnet-dns");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pods"));
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}
