//! Golden tests of `render` output, and the same golden checked and applied by the real `nft` inside a
//! throwaway network namespace.

#![allow(clippy::unwrap_used)] // test file
use std::path::{Path, PathBuf};
use std::process::Command;

use dataplane::apply::nft::{ExecNft, Nft};
use dataplane::compute::diff::diff;
use dataplane::compute::render::render;
use dataplane::node::config::NodeArgs;
use dataplane::sync::proxier::Proxier;
use dataplane::types::{NodeConfig, ProxyState};
use dataplane::watch::manifests::Manifests;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn load(name: &str) -> (ProxyState, NodeConfig) {
    let m = Manifests::read(&[golden_dir().join(format!("{name}.yaml"))]).expect("manifest parses");
    let node = m.nodes.first().map(dataplane::watch::convert::node);
    let args = NodeArgs {
        node_name: "node-a".into(),
        cluster_cidr: vec![
            "10.244.0.0/16".parse().unwrap(),
            "fd00:244::/48".parse().unwrap(),
        ],
        nodeport_addresses: vec!["primary".into()],
        service_cidrs: vec!["10.96.0.0/16".parse().unwrap()],
        ..Default::default()
    };
    (m.to_state(), args.resolve(node.as_ref(), vec![]).unwrap())
}

/// Compares with `tests/golden/<name>.nft`; `UPDATE_GOLDEN=1` rewrites the file.
fn assert_golden(name: &str, text: &str) {
    let path = golden_dir().join(format!("{name}.nft"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        want == text,
        "golden {name} differs; run with UPDATE_GOLDEN=1 and review the diff\n--- got ---\n{text}"
    );
}

#[test]
fn basic_golden() {
    let (st, node) = load("basic");
    let text = render(&st, &node).dump();
    assert_golden("basic", &text);
}

/// A throwaway network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!(
            "svcnet-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {name} failed (these tests need root)");
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Needs root: `nft -c` and then a real load of the golden ruleset in a fresh netns; then a second full
/// sync over the existing table, and a partial sync, both accepted by the kernel.
#[test]
fn golden_loads_into_real_nft() {
    let (st, node) = load("basic");
    let ns = Netns::new();
    let nft = ExecNft::in_netns(&ns.0);
    let model = render(&st, &node);
    let tx = model.create_transaction();
    nft.check(&tx).expect("nft -c accepts the golden ruleset");

    let mut p = Proxier::new(nft.clone(), node.clone());
    let out = p
        .sync(&st, None, false)
        .expect("full sync into an empty netns");
    assert!(out.full);
    let existing = nft.existing().unwrap();
    let t = &existing[&dataplane::types::Family::Ipv4];
    assert!(t.chains.iter().any(|c| c == "services"));
    for p in ["tcp", "udp", "sctp"] {
        let name = format!("backends-{p}");
        assert!(
            t.sets.iter().any(|(s, map)| *s == name && *map),
            "{name} declared"
        );
    }

    // Full resync over the live table (flush + redeclare, affinity sets kept).
    assert!(p.sync(&st, None, true).expect("full resync").full);

    // Partial: drop one Service and all its slices.
    let mut st2 = st.clone();
    let key = st2.services.keys().next().unwrap().clone();
    st2.services.remove(&key);
    st2.slices.remove(&key);
    let d = diff(&model, &render(&st2, &node)).unwrap();
    assert!(!d.is_empty());
    let out = p.sync(&st2, None, false).expect("partial sync");
    assert!(!out.full);

    // Partial: a Service with a new endpoint count needs new shared chains (lb-7 …) that reference
    // the typeof maps declared by an earlier transaction.
    let mut st3 = st2.clone();
    let mut svc = st
        .services
        .values()
        .find(|s| s.key.name == "multi")
        .unwrap()
        .clone();
    svc.key = dataplane::types::ServiceKey::new("ns9", "seven");
    svc.cluster_ips = vec!["10.96.9.7".parse().unwrap()];
    svc.ports[0].node_port = Some(30999);
    let mut slice = st
        .slices_for(&dataplane::types::ServiceKey::new("ns1", "multi"))
        .next()
        .unwrap()
        .clone();
    slice.namespace = "ns9".into();
    slice.service_name = "seven".into();
    let template = slice.endpoints[0].clone();
    slice.endpoints = (1..=7)
        .map(|i| dataplane::types::EndpointInfo {
            address: format!("10.244.9.{i}").parse().unwrap(),
            ..template.clone()
        })
        .collect();
    st3.upsert_service(svc);
    st3.upsert_slice(slice);
    let out = p
        .sync(&st3, None, false)
        .expect("partial sync adding lb-tcp-7");
    assert!(!out.full);
    assert!(nft.existing().unwrap()[&dataplane::types::Family::Ipv4]
        .chains
        .iter()
        .any(|c| c == "lb-tcp-7"));
    nft.run(&dataplane::compute::model::Transaction::new())
        .unwrap();
}

/// Needs root: a streamed transaction that fails half-way (here: validation of a hostile chain name)
/// applies nothing, not even the operations streamed before the failure.
#[test]
fn failed_stream_applies_nothing() {
    use dataplane::compute::model::Op;
    use dataplane::types::Family;
    let ns = Netns::new();
    let nft = ExecNft::in_netns(&ns.0);
    let mut meanwhile_ran = false;
    let r = nft.run_streaming(
        &mut |sink| {
            sink.push_op(Op::AddTable {
                family: Family::Ipv4,
            });
            sink.push_op(Op::AddChain {
                family: Family::Ipv4,
                name: "ok".into(),
                base: None,
            });
            sink.push_op(Op::AddChain {
                family: Family::Ipv4,
                name: "x; flush ruleset".into(),
                base: None,
            });
            Ok(())
        },
        &mut || meanwhile_ran = true,
    );
    assert!(r.is_err());
    assert!(
        !meanwhile_ran,
        "a failed stream stops before the bookkeeping"
    );
    assert!(nft.existing().unwrap().is_empty(), "nothing was committed");
}
