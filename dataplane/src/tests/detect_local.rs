//! The four local-traffic detectors (`--detect-local-mode`): what the renderer matches on, and
//! what that decides (masquerade of ClusterIP traffic, the externalTrafficPolicy Local
//! short-circuit for pods), through the packet tracer and the fake nft's validation.

use super::*;
use crate::compute::names::{CLUSTER_CIDRS, MASQUERADING};
use crate::node::detect_local::{DetectLocalArgs, DetectLocalMode};
use crate::watch::convert::NodeInfo;

const BRIDGE: &str = "cbr0";

/// The test node with the detector of `mode` resolved as `run` does: `--cluster-cidr`
/// 10.244.0.0/16, the Node's podCIDRs 10.244.1.0/24 and fd00:244:1::/64, bridge `cbr0`, prefix
/// `cali`.
fn node_in(mode: DetectLocalMode) -> NodeConfig {
    let cluster: Vec<ipnet::IpNet> = vec!["10.244.0.0/16".parse().unwrap()];
    let info = NodeInfo {
        pod_cidrs: vec![
            "10.244.1.0/24".parse().unwrap(),
            "fd00:244:1::/64".parse().unwrap(),
        ],
        ..Default::default()
    };
    let args = DetectLocalArgs {
        mode,
        cluster_cidrs: &cluster,
        bridge_interface: Some(BRIDGE),
        interface_name_prefix: Some("cali"),
    };
    args.validate().unwrap();
    let (cluster_cidrs, detect_local) = args.resolve(Some(&info));
    NodeConfig {
        cluster_cidrs,
        detect_local,
        ..node()
    }
}

fn one_service() -> ProxyState {
    state(
        vec![svc("ns", "a", "10.96.0.1").tcp(80)],
        vec![slice("ns", "a", "a-1").tcp(8080).ep("10.244.2.5", "node-b")],
    )
}

/// A packet to the ClusterIP from `src` arriving on `iif`.
fn to_cip(src: &str, iif: &'static str) -> Packet {
    Packet {
        iifname: iif,
        ..pkt(src, "10.96.0.1", Protocol::Tcp, 80)
    }
}

fn masqueraded(m: &crate::compute::model::Model, p: &Packet) -> bool {
    match trace(m, p) {
        Verdict::Dnat { masq, .. } => masq,
        other => panic!("{p:?}: not DNATed: {other:?}"),
    }
}

fn masq_rule(m: &crate::compute::model::Model) -> String {
    m.tables[&Family::Ipv4].chains["cip-tcp-1"].rules[0].clone()
}

#[test]
fn cluster_cidr_mode_matches_the_cluster_cidr() {
    let m = render(&one_service(), &node_in(DetectLocalMode::ClusterCidr));
    assert_eq!(
        masq_rule(&m),
        "ip saddr != @cluster-cidrs jump mark-for-masquerade"
    );
    assert!(!masqueraded(&m, &to_cip(POD, "eth0")), "a pod of any node");
    assert!(!masqueraded(&m, &to_cip("10.244.9.9", "eth0")));
    assert!(masqueraded(&m, &to_cip(EXTERNAL, BRIDGE)));
}

#[test]
fn node_cidr_mode_matches_the_nodes_pod_cidrs() {
    let n = node_in(DetectLocalMode::NodeCidr);
    let m = render(&one_service(), &n);
    let set = |fam: Family| -> Vec<String> {
        m.tables[&fam].sets[CLUSTER_CIDRS]
            .elements
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(set(Family::Ipv4), ["10.244.1.0/24"], "not --cluster-cidr");
    assert_eq!(set(Family::Ipv6), ["fd00:244:1::/64"]);
    assert_eq!(
        masq_rule(&m),
        "ip saddr != @cluster-cidrs jump mark-for-masquerade"
    );
    assert!(!masqueraded(&m, &to_cip(POD, "eth0")), "this node's pod");
    assert!(
        masqueraded(&m, &to_cip("10.244.2.9", "eth0")),
        "another node's pod is not local"
    );
    assert!(masqueraded(&m, &to_cip(EXTERNAL, "eth0")));
    // Before the Node's podCIDRs are known nothing is local (the daemon waits for them).
    let unknown = DetectLocalArgs {
        mode: DetectLocalMode::NodeCidr,
        ..Default::default()
    }
    .resolve(None);
    let m = render(
        &one_service(),
        &NodeConfig {
            cluster_cidrs: unknown.0,
            detect_local: unknown.1,
            ..node()
        },
    );
    assert!(!m.tables[&Family::Ipv4].sets.contains_key(CLUSTER_CIDRS));
    assert!(!m.tables[&Family::Ipv4].chains.contains_key("cip-tcp-1"));
    assert!(!masqueraded(&m, &to_cip(EXTERNAL, "eth0")));
}

#[test]
fn bridge_interface_mode_matches_the_input_interface() {
    let m = render(&one_service(), &node_in(DetectLocalMode::BridgeInterface));
    assert_eq!(
        masq_rule(&m),
        "iifname != \"cbr0\" jump mark-for-masquerade"
    );
    for fam in Family::ALL {
        assert!(
            !m.tables[&fam].sets.contains_key(CLUSTER_CIDRS),
            "no CIDR set in an interface mode"
        );
    }
    assert!(!masqueraded(&m, &to_cip(POD, BRIDGE)));
    // The source address does not matter, only the interface.
    assert!(!masqueraded(&m, &to_cip(EXTERNAL, BRIDGE)));
    assert!(masqueraded(&m, &to_cip(POD, "eth0")));
    assert!(masqueraded(&m, &to_cip(POD, "cbr01")), "exact name");
    // Sent by the node itself: no input interface, not a pod.
    assert!(masqueraded(&m, &to_cip(NODE_IP, "")));
}

#[test]
fn interface_name_prefix_mode_matches_a_prefix() {
    let m = render(
        &one_service(),
        &node_in(DetectLocalMode::InterfaceNamePrefix),
    );
    assert_eq!(
        masq_rule(&m),
        "iifname != \"cali*\" jump mark-for-masquerade"
    );
    assert!(!masqueraded(&m, &to_cip(POD, "cali12ab")));
    assert!(!masqueraded(&m, &to_cip(POD, "cali")));
    assert!(masqueraded(&m, &to_cip(POD, "eth0")));
    assert!(
        masqueraded(&m, &to_cip(POD, "xcali1")),
        "a prefix, not a substring"
    );
}

#[test]
fn interface_modes_decide_the_external_traffic_policy_local_short_circuit() {
    let all = ["10.244.1.7:8080", "10.244.2.8:8080"];
    for (mode, pod_iif) in [
        (DetectLocalMode::BridgeInterface, BRIDGE),
        (DetectLocalMode::InterfaceNamePrefix, "cali7"),
        (DetectLocalMode::NodeCidr, "eth1"),
    ] {
        let m = render(&lb_service(true), &node_in(mode));
        let from = |src: &str, iif: &'static str| Packet {
            iifname: iif,
            ..pkt(src, "198.51.100.1", Protocol::Tcp, 80)
        };
        // Pods: every endpoint, unmasqueraded; outside: the local endpoint only.
        assert_eq!(
            trace(&m, &from(POD, pod_iif)),
            dnat(&all, false),
            "{mode:?}"
        );
        assert_eq!(
            trace(&m, &from(EXTERNAL, "eth0")),
            dnat(&["10.244.1.7:8080"], false),
            "{mode:?}"
        );
    }
}

/// Interface names are quoted in the rules (an unquoted `tcp` or `meta` would not parse); the
/// transactions pass the model's validation and partial syncs keep the detector.
#[test]
fn interface_mode_rules_pass_validation_through_syncs() {
    for mode in [
        DetectLocalMode::BridgeInterface,
        DetectLocalMode::InterfaceNamePrefix,
    ] {
        let fake = FakeNft::new();
        let n = node_in(mode);
        let mut p = Proxier::new(fake.clone(), n.clone());
        let st = lb_service(true);
        p.sync(&st, None, false).unwrap();
        assert_eq!(fake.model(), render(&st, &n));
        let mut more = st.clone();
        more.upsert_service(svc("ns", "b", "10.96.0.9").tcp(80).0);
        more.upsert_slice(
            slice("ns", "b", "b-1")
                .tcp(8080)
                .ep("10.244.2.6", "node-b")
                .0,
        );
        let out = p
            .sync(&more, Some(&[ServiceKey::new("ns", "b")].into()), false)
            .unwrap();
        assert!(!out.full);
        let m = fake.model();
        assert_eq!(m, render(&more, &n));
        assert!(m.tables[&Family::Ipv4].chains[MASQUERADING]
            .rules
            .iter()
            .all(|r| !r.contains("iifname")));
        assert!(masqueraded(
            &m,
            &Packet {
                iifname: "eth0",
                ..pkt(POD, "10.96.0.9", Protocol::Tcp, 80)
            }
        ));
    }
}
