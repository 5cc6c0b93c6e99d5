//! svcnet-proxy checks its flags and its `--config` file before it connects or binds anything: a
//! bad value exits 64 (EX_USAGE) at once with a message naming the flag or field. The
//! kubeconfig given does not exist, so anything that slipped through validation fails later,
//! on the kubeconfig, with a message naming `--kubeconfig` instead.

use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_svcnet-proxy"))
        .arg("run")
        .args(args)
        .arg("--kubeconfig=/nonexistent/kubeconfig")
        .arg("--node-name=n1")
        .env_remove("KUBECONFIG")
        .output()
        .expect("svcnet-proxy runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const HEAD: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

fn config_file(dir: &tempfile::TempDir, name: &str, body: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, format!("{HEAD}{body}")).expect("write config");
    format!("--config={}", p.display())
}

#[test]
fn bad_flags_and_bad_config_files_exit_64_naming_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unknown = config_file(&dir, "unknown.yaml", "nftables: {syncPeriods: 1s}\n");
    let local = config_file(&dir, "local.yaml", "detectLocalMode: BridgeInterface\n");
    for (args, word) in [
        (
            vec!["--l2-announce", "--l2-renew-interval=2s"],
            "--l2-renew-interval",
        ),
        (
            vec!["--l2-announce", "--l2-announce-count=0"],
            "--l2-announce-count",
        ),
        (vec!["--config=/nonexistent/kube-proxy.yaml"], "--config"),
        (vec![unknown.as_str()], "nftables.syncPeriods"),
        (vec![local.as_str()], "BridgeInterface"),
        (vec!["--cluster-cidr=10.0.0.0/40"], "cluster-cidr"),
        (vec!["--detect-local-mode=PodCIDR"], "--detect-local-mode"),
        (
            vec!["--detect-local-mode=InterfaceNamePrefix"],
            "needs --pod-interface-name-prefix",
        ),
        (
            vec![
                "--detect-local-mode=BridgeInterface",
                "--pod-bridge-interface=br0;x",
            ],
            "--pod-bridge-interface",
        ),
    ] {
        let (code, stderr) = run(&args);
        assert_eq!(code, Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(word), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("--kubeconfig /nonexistent"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn a_valid_config_file_gets_past_validation_and_reports_what_it_ignores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ok = config_file(
        &dir,
        "ok.yaml",
        "mode: nftables\nnftables: {minSyncPeriod: 2s}\noomScoreAdj: -999\n",
    );
    let (code, stderr) = run(&[ok.as_str()]);
    // Past validation: it fails on the missing kubeconfig instead.
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("--kubeconfig /nonexistent"), "{stderr}");
    assert!(stderr.contains("oomScoreAdj"), "{stderr}");
    for args in [
        &["--detect-local-mode=NodeCIDR"][..],
        &[
            "--detect-local-mode=BridgeInterface",
            "--pod-bridge-interface=cbr0",
        ],
        &[
            "--detect-local-mode=InterfaceNamePrefix",
            "--pod-interface-name-prefix=cali",
        ],
    ] {
        let (code, stderr) = run(args);
        assert_eq!(code, Some(64), "{args:?}: {stderr}");
        assert!(
            stderr.contains("--kubeconfig /nonexistent"),
            "{args:?}: {stderr}"
        );
    }
}
