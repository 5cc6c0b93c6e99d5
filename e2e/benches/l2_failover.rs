//! L2 announcement failover benchmark (prints JSON): how long an outside client on the LAN is
//! without a working path through a live node when the node announcing a LoadBalancer address
//! loses its proxy.
//!
//! Per scenario, `L2_BENCH_RUNS` times (default 10): the proxy of the node holding the address is
//! stopped (SIGKILL: a crash, no goodbye; or SIGTERM: a clean stop, which releases the address at
//! once), then the client opens a new TCP connection every few tens of milliseconds and the run
//! ends at the first one that succeeds *through another node*: its neighbour entry for the
//! address names another node's MAC before and after the connection (the stopped node's kernel
//! still forwards with the rules the proxy left behind, so a success through it does not count).
//! Reported per scenario: median and max of that time, and of the time until the address's Lease
//! names the new node, with the lease duration and renew interval used. The stopped proxy is
//! restarted between runs (the address does not move back to it).
//!
//! Same lab as the `dataplane_l2` e2e test (three nodes, embedded API server unless
//! `KUBEBUILDER_ASSETS` / `E2E_KUBECONFIG` choose another). **Needs root** and the workspace
//! binaries of the same profile: `cargo build --workspace --bins && cargo bench --profile dev -p
//! svcnet-e2e --bench l2_failover` (the failover is bounded by timers, not by code speed; with
//! `cargo bench`'s release profile build the binaries with `--release` first).

#![allow(clippy::unwrap_used)]

#[path = "../tests/common_dataplane/mod.rs"]
mod common_dataplane;

use std::time::{Duration, Instant};

use common_dataplane::l2::{connect, holder, neighbour, replied, wait_holder, Lab, LB4};
use serde_json::json;
use testkit::harness::TestEnv;

/// Give up on a run after this long (reported as a failure, never as a time).
const GIVE_UP: Duration = Duration::from_secs(30);

struct Scenario {
    name: &'static str,
    lease: Duration,
    renew: Duration,
    graceful: bool,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

/// Polls until a new connection succeeds through a node other than the one with `old_mac`;
/// returns when it did, or `None` after [`GIVE_UP`].
fn first_connection_elsewhere(lab: &Lab, old_mac: &str, since: Instant) -> Option<Duration> {
    while since.elapsed() < GIVE_UP {
        let before = neighbour(&lab.c, LB4);
        let moved = |m: &Option<String>| m.as_deref().is_some_and(|m| m != old_mac);
        if moved(&before) {
            let o = connect(&lab.c, LB4);
            let after = neighbour(&lab.c, LB4);
            if replied(&o).is_some() && moved(&after) && before == after {
                return Some(since.elapsed());
            }
        } else {
            // Through the old node (or unresolved): one attempt, which also makes the client
            // ask again when its entry has gone stale.
            let _ = connect(&lab.c, LB4);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

async fn run(env: &TestEnv, s: &Scenario, runs: usize) -> serde_json::Value {
    let ns = env.namespace("l2-bench").await.unwrap();
    let lease = format!("{}ms", s.lease.as_millis());
    let renew = format!("{}ms", s.renew.as_millis());
    let mut lab = Lab::start(
        env,
        ns.name(),
        &["--l2-lease-duration", &lease, "--l2-renew-interval", &renew],
    )
    .await;
    lab.create_shared().await;
    wait_holder(&lab.leases, LB4, "first election", Option::is_some).await;
    let mut client_ms = Vec::new();
    let mut lease_ms = Vec::new();
    let mut failures = 0;
    for i in 0..runs {
        let old = holder(&lab.leases, LB4).await.unwrap();
        let old_mac = lab.mac_of_node(&old);
        // Warm: the client reaches the address through the current holder.
        tokio::task::block_in_place(|| {
            let deadline = Instant::now() + GIVE_UP;
            while !(replied(&connect(&lab.c, LB4)).is_some()
                && neighbour(&lab.c, LB4).as_deref() == Some(old_mac.as_str()))
            {
                assert!(Instant::now() < deadline, "run {i}: no path through {old}");
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let t0 = Instant::now();
        let proxy = lab.proxies.get_mut(&old).unwrap();
        if s.graceful {
            // The signal goes out now; the wait for the exit runs beside the measurement.
            let pid = proxy.pid();
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        } else {
            proxy.kill().unwrap();
        }
        let leases = lab.leases.clone();
        let old2 = old.clone();
        let lease_task = tokio::spawn(async move {
            wait_holder(&leases, LB4, "take-over", |h| {
                h.as_ref().is_some_and(|h| *h != old2)
            })
            .await;
            t0.elapsed()
        });
        let got = tokio::task::block_in_place(|| first_connection_elsewhere(&lab, &old_mac, t0));
        match (got, lease_task.await) {
            (Some(d), Ok(l)) => {
                client_ms.push(ms(d));
                lease_ms.push(ms(l));
            }
            _ => failures += 1,
        }
        if let Some(p) = lab.proxies.get_mut(&old) {
            let _ = p.wait_timeout(Duration::from_secs(10));
        }
        lab.start_proxy(&old);
        // Let the restarted node's heartbeat be seen before the next run.
        tokio::time::sleep(s.lease * 2).await;
    }
    lab.cleanup().await;
    let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    json!({
        "scenario": s.name,
        "stop": if s.graceful { "SIGTERM" } else { "SIGKILL" },
        "lease_duration_ms": s.lease.as_millis() as u64,
        "renew_interval_ms": s.renew.as_millis() as u64,
        "runs": client_ms.len(),
        "failed_runs": failures,
        "first_new_connection_ms": {"median": median(&client_ms), "max": max(&client_ms), "samples": client_ms},
        "lease_moved_ms": {"median": median(&lease_ms), "max": max(&lease_ms), "samples": lease_ms},
    })
}

fn main() {
    let runs: usize = std::env::var("L2_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let scenarios = [
        Scenario {
            name: "default",
            lease: Duration::from_millis(1500),
            renew: Duration::from_millis(400),
            graceful: false,
        },
        Scenario {
            name: "short-lease",
            lease: Duration::from_millis(600),
            renew: Duration::from_millis(150),
            graceful: false,
        },
        Scenario {
            name: "default-clean-stop",
            lease: Duration::from_millis(1500),
            renew: Duration::from_millis(400),
            graceful: true,
        },
    ];
    let out = rt.block_on(async {
        let env = TestEnv::start().await.unwrap();
        let mut results = Vec::new();
        for s in &scenarios {
            results.push(run(&env, s, runs).await);
        }
        json!({
            "bench": "l2_failover",
            "backend": if env.is_embedded() { "embedded" } else { "external" },
            "client_poll": "one new TCP connection (ip netns exec + echo client) every ~10 ms plus its cost",
            "results": results,
        })
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
