//! svcnet-controller checks every flag before it connects or binds anything: a bad value exits
//! 64 (EX_USAGE) at once with a message naming the flag. The kubeconfig given does not exist,
//! so a flag that slipped through validation would fail later, differently (exit 1).

use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_svcnet-controller"))
        .args(args)
        .arg("--kubeconfig=/nonexistent/kubeconfig")
        .arg("--metrics-bind-address=0")
        .output()
        .expect("svcnet-controller runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_exit_64_naming_the_flag() {
    for (arg, flag) in [
        ("--controllers=bogus", "--controllers"),
        ("--controllers=", "--controllers"),
        (
            "--max-endpoints-per-slice=5000",
            "--max-endpoints-per-slice",
        ),
        (
            "--max-endpoints-per-slice=many",
            "--max-endpoints-per-slice",
        ),
        (
            "--concurrent-service-endpoint-syncs=0",
            "--concurrent-service-endpoint-syncs",
        ),
        (
            "--mirroring-max-endpoints-per-subset=0",
            "--mirroring-max-endpoints-per-subset",
        ),
        (
            "--service-cluster-ip-range=10.96.0.0/33",
            "--service-cluster-ip-range",
        ),
        (
            "--service-node-port-range=40000-30000",
            "--service-node-port-range",
        ),
        ("--ipam-repair-interval=5parsecs", "--ipam-repair-interval"),
        (
            "--leader-elect-retry-period=20s",
            "--leader-elect-retry-period",
        ),
        ("--log-format=yaml", "--log-format"),
    ] {
        let (code, stderr) = run(&[arg]);
        assert_eq!(code, Some(64), "{arg}: {stderr}");
        assert!(stderr.contains(flag), "{arg}: {stderr}");
    }
}

#[test]
fn valid_flags_get_past_validation() {
    // Go-style durations are accepted (the same parser as svcnet-proxy's).
    let (code, stderr) = run(&[
        "--ipam-repair-interval=1m30s",
        "--endpointslice-updates-batch-period=1.5s",
        "--controllers=endpointslice,endpoints",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/kubeconfig"), "{stderr}");
}
