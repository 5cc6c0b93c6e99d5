//! `svcnet apiserver`: starts, prints a kubeconfig path that kube-rs can use, stops on SIGINT.
//! No root needed.

use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use tokio::io::AsyncBufReadExt;

/// Kills the child if the test fails half-way.
struct Child(Option<tokio::process::Child>);

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.start_kill();
        }
    }
}

#[tokio::test]
async fn svcnet_apiserver_prints_a_usable_kubeconfig() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    let mut child = Child(Some(
        tokio::process::Command::new(
            testkit::netns::bins::locate("svcnet")
                .expect("svcnet is built (cargo build --workspace --bins)"),
        )
        .args(["apiserver", "--kubeconfig"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn svcnet"),
    ));
    let proc = child.0.as_mut().expect("child");
    let stdout = proc.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let printed = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("kubeconfig path printed in time")
        .expect("read stdout")
        .expect("a line");
    assert_eq!(printed, path.display().to_string());

    let kc = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    let client = kube::Client::try_from(config).expect("client");
    let nss: Api<Namespace> = Api::all(client);
    let default = nss.get("default").await.expect("default namespace exists");
    assert_eq!(default.metadata.name.as_deref(), Some("default"));

    // Ctrl-C stops it cleanly.
    let pid = proc.id().expect("pid");
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), proc.wait())
        .await
        .expect("exits after SIGINT")
        .expect("wait");
    assert!(exit.success(), "exit status {exit:?}");
    child.0 = None;
}
