//! svcnet-controller's `/readyz` waits for every selected controller's caches: with IPAM off it
//! stays 503 (naming the endpoint controllers) while the API server cannot be reached, and turns
//! 200 once they have synced against a real one. Runs the `svcnet-controller` binary (build it
//! first: `cargo build --workspace --bins`); no root needed.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::harness::{wait_until, TestEnv};
use testkit::netns::bins;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn start(kubeconfig: &std::path::Path, admin: u16) -> Proc {
    start_with(
        kubeconfig,
        admin,
        &["--controllers=endpointslice,endpoints,endpointslicemirroring"],
    )
}

fn start_with(kubeconfig: &std::path::Path, admin: u16, args: &[&str]) -> Proc {
    let bin = bins::locate("svcnet-controller").expect("svcnet-controller is built");
    let child = Command::new(bin)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .arg("--leader-elect=false")
        .arg(format!("--metrics-bind-address=127.0.0.1:{admin}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("svcnet-controller starts");
    Proc(child)
}

/// (status code, body) of GET /readyz, or None while nothing listens.
async fn readyz(port: u16) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    Some((code, body))
}

#[tokio::test]
async fn not_ready_until_the_endpoint_controllers_have_synced() {
    // An API server nobody serves: the caches can never sync.
    let dir = tempfile::tempdir().expect("temp dir");
    let dead = dir.path().join("dead.kubeconfig");
    std::fs::write(
        &dead,
        apiserver::kubeconfig_yaml(&format!("http://127.0.0.1:{}", free_port())),
    )
    .expect("kubeconfig");
    let port = free_port();
    let _proc = start(&dead, port);
    wait_until(
        "the admin server answers",
        Duration::from_secs(20),
        || async move { readyz(port).await.is_some() },
    )
    .await
    .expect("admin server");
    for _ in 0..3 {
        let (code, body) = readyz(port).await.expect("readyz answers");
        assert_eq!(code, 503, "{body}");
        assert_eq!(
            body, "not ready: endpoints, endpointslice, endpointslicemirroring",
            "{body}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // A reachable server: ready once all three have synced.
    let env = TestEnv::start().await.expect("test env");
    let port = free_port();
    let _proc = start(env.kubeconfig_path(), port);
    wait_until(
        "/readyz turns 200",
        Duration::from_secs(60),
        || async move { matches!(readyz(port).await, Some((200, _))) },
    )
    .await
    .expect("svcnet-controller becomes ready");
}

/// Every controller of one process (IPAM and the three endpoint controllers) shares one watch
/// per kind (and label selector): Services, Pods, Nodes, Endpoints, Namespaces and IPAM's own
/// kinds (claims, pools, IPAddresses, ServiceCIDRs) once each; EndpointSlices twice (each endpoint controller watches only the slices
/// carrying its own managed-by value). Embedded server only: it records the requests it
/// serves.
#[tokio::test]
async fn one_watch_per_kind_per_process() {
    let env = TestEnv::embedded(Default::default())
        .await
        .expect("embedded server");
    let server = env.server().expect("embedded");
    server.enable_audit();
    let port = free_port();
    let _proc = start_with(env.kubeconfig_path(), port, &["--install-crds"]);
    wait_until(
        "/readyz turns 200",
        Duration::from_secs(60),
        || async move { matches!(readyz(port).await, Some((200, _))) },
    )
    .await
    .expect("svcnet-controller becomes ready");
    let mut watches = std::collections::BTreeMap::<String, usize>::new();
    for r in server.audit_log().into_iter().filter(|r| r.verb == "watch") {
        *watches.entry(r.resource).or_default() += 1;
    }
    let want: std::collections::BTreeMap<String, usize> = [
        ("endpoints", 1),
        ("endpointslices", 2),
        // The embedded server serves networking.k8s.io/v1: IPAM's ClusterIP ledger and ranges.
        ("ipaddresses", 1),
        ("loadbalancerippools", 1),
        ("namespaces", 1),
        ("nodeportclaims", 1),
        ("nodes", 1),
        ("pods", 1),
        ("serviceipclaims", 1),
        ("servicecidrs", 1),
        ("services", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(watches, want);
}
