//! Service CIDRs taken from ServiceCIDR objects: what the renderer makes of them (through the
//! packet tracer), and that syncs follow additions and removals (through the fake nft).

use super::*;
use crate::compute::names::{CLUSTER_IPS_CHECK, SERVICE_CIDRS};
use crate::watch::manifests::Manifests;
use crate::watch::service_cidrs::ServiceCidrSource;
use crate::watch::tracker::Tracker;

/// ServiceCIDR manifests: (name, [cidrs]).
fn service_cidr_objects(objects: &[(&str, &[&str])]) -> Manifests {
    let mut yaml = String::new();
    for (name, cidrs) in objects {
        yaml.push_str(&format!(
            "apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {{name: {name}}}\n\
             spec: {{cidrs: [{}]}}\n---\n",
            cidrs.join(", ")
        ));
    }
    let mut m = Manifests::default();
    m.parse_str(&yaml, std::path::Path::new("servicecidrs.yaml"))
        .unwrap();
    m
}

/// The test node with the Service CIDRs the objects give (its flag, 10.96.0.0/16, unused).
fn node_with(objects: &[(&str, &[&str])]) -> NodeConfig {
    let mut n = node();
    n.service_cidrs = service_cidr_objects(objects)
        .service_cidr_source()
        .effective(&n.service_cidrs);
    n
}

fn one_service() -> ProxyState {
    state(
        vec![svc("ns", "a", "10.100.0.10").tcp(80)],
        vec![slice("ns", "a", "a-1").tcp(8080).ep("10.244.2.5", "node-b")],
    )
}

fn service_cidr_elements(m: &crate::compute::model::Model, fam: Family) -> Vec<String> {
    m.tables[&fam]
        .sets
        .get(SERVICE_CIDRS)
        .map(|s| s.elements.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn object_cidrs_drop_unallocated_ips_and_replace_the_flag() {
    let n = node_with(&[
        ("kubernetes", &["10.100.0.0/16", "fd00:100::/112"]),
        ("extra", &["10.99.0.0/24"]),
    ]);
    let m = render(&one_service(), &n);
    assert_eq!(
        service_cidr_elements(&m, Family::Ipv4),
        ["10.100.0.0/16", "10.99.0.0/24"]
    );
    assert_eq!(service_cidr_elements(&m, Family::Ipv6), ["fd00:100::/112"]);
    assert_eq!(
        m.tables[&Family::Ipv4].chains[CLUSTER_IPS_CHECK].rules,
        [
            "ip daddr @cluster-ips reject",
            "ip daddr @service-cidrs drop"
        ]
    );
    // Unallocated addresses inside either object are dropped, in both families.
    for dst in ["10.99.0.77", "10.100.7.7", "fd00:100::99"] {
        assert_eq!(
            trace(&m, &pkt(POD, dst, Protocol::Tcp, 80)),
            Verdict::Drop,
            "{dst}"
        );
    }
    // A protocol the ClusterIP does not serve is rejected; the served one is DNATed.
    assert_eq!(
        trace(&m, &pkt(POD, "10.100.0.10", Protocol::Udp, 80)),
        Verdict::Reject
    );
    assert_eq!(
        trace(&m, &pkt(POD, "10.100.0.10", Protocol::Tcp, 80)),
        dnat(&["10.244.2.5:8080"], false)
    );
    // The flag's range is not a Service CIDR any more: its addresses pass untouched.
    assert_eq!(
        trace(&m, &pkt(POD, "10.96.0.99", Protocol::Tcp, 80)),
        Verdict::Accept
    );
}

#[test]
fn without_objects_the_flag_is_used() {
    let n = node_with(&[]);
    assert_eq!(n.service_cidrs, node().service_cidrs);
    let m = render(&one_service(), &n);
    assert_eq!(service_cidr_elements(&m, Family::Ipv4), ["10.96.0.0/16"]);
    assert_eq!(
        trace(&m, &pkt(POD, "10.96.0.99", Protocol::Tcp, 80)),
        Verdict::Drop
    );
    assert_eq!(
        trace(&m, &pkt(POD, "10.99.0.77", Protocol::Tcp, 80)),
        Verdict::Accept
    );
}

#[test]
fn nested_object_cidrs_render_as_one_interval() {
    // A /24 inside the default range and the same CIDR in two objects: an nftables interval set
    // refuses overlapping elements, so one interval is programmed.
    let n = node_with(&[
        ("kubernetes", &["10.96.0.0/12"]),
        ("inner", &["10.100.5.0/24"]),
        ("copy", &["10.96.0.0/12"]),
    ]);
    let m = render(&one_service(), &n);
    assert_eq!(service_cidr_elements(&m, Family::Ipv4), ["10.96.0.0/12"]);
    assert!(
        !m.tables[&Family::Ipv6].sets.contains_key(SERVICE_CIDRS),
        "no IPv6 range, no IPv6 set"
    );
    assert_eq!(
        m.tables[&Family::Ipv6].chains[CLUSTER_IPS_CHECK].rules,
        ["ip6 daddr @cluster-ips reject"]
    );
}

/// The sync loop's path: watch events fold into the tracker's source, the effective CIDRs go
/// into the node configuration, and each sync's result follows additions and removals.
#[test]
fn syncs_follow_service_cidrs_added_and_removed() {
    let fake = FakeNft::new();
    let flag = node().service_cidrs;
    let mut t = Tracker::with_service_cidrs(ServiceCidrSource::objects());
    t.services_synced = true;
    t.slices_synced = true;
    t.node_synced = true;
    assert!(!t.ready(), "no sync before the ServiceCIDR list");
    let nets = |l: &[&str]| -> Vec<ipnet::IpNet> { l.iter().map(|s| s.parse().unwrap()).collect() };
    assert!(t
        .service_cidrs
        .reset([("kubernetes".to_string(), nets(&["10.100.0.0/16"]))].into()));
    assert!(t.ready());
    let cfg = |t: &Tracker| NodeConfig {
        service_cidrs: t.service_cidrs.effective(&flag),
        ..node()
    };
    let st = one_service();
    let mut p = Proxier::new(fake.clone(), cfg(&t));
    assert!(p.sync(&st, None, false).unwrap().full);
    assert_eq!(
        service_cidr_elements(&fake.model(), Family::Ipv4),
        ["10.100.0.0/16"]
    );
    let probe = pkt(POD, "10.99.0.77", Protocol::Tcp, 80);
    assert_eq!(trace(&fake.model(), &probe), Verdict::Accept);

    // Added at run time: the next sync programs it.
    assert!(t
        .service_cidrs
        .apply("extra", Some(nets(&["10.99.0.0/24", "fd00:99::/112"]))));
    p.set_node(cfg(&t));
    let out = p.sync(&st, None, false).unwrap();
    assert!(out.full, "a changed node configuration is a full sync");
    assert_eq!(fake.model(), render(&st, &cfg(&t)));
    assert_eq!(trace(&fake.model(), &probe), Verdict::Drop);
    assert_eq!(
        trace(&fake.model(), &pkt(POD, "fd00:99::5", Protocol::Tcp, 80)),
        Verdict::Drop
    );
    assert!(!fake
        .last_transaction()
        .unwrap()
        .render()
        .contains("delete table"));

    // Removed: gone from the kernel at the next sync, IPv6 set and rule included.
    assert!(t.service_cidrs.apply("extra", None));
    p.set_node(cfg(&t));
    p.sync(&st, None, false).unwrap();
    let m = fake.model();
    assert_eq!(m, render(&st, &cfg(&t)));
    assert_eq!(trace(&m, &probe), Verdict::Accept);
    assert!(!m.tables[&Family::Ipv6].sets.contains_key(SERVICE_CIDRS));

    // Every object gone: no drop rule at all; the flag does not come back.
    assert!(t.service_cidrs.reset(Default::default()));
    p.set_node(cfg(&t));
    p.sync(&st, None, false).unwrap();
    let m = fake.model();
    assert_eq!(m, render(&st, &cfg(&t)));
    assert_eq!(
        m.tables[&Family::Ipv4].chains[CLUSTER_IPS_CHECK].rules,
        ["ip daddr @cluster-ips reject"]
    );
    assert_eq!(
        trace(&m, &pkt(POD, "10.100.9.9", Protocol::Tcp, 80)),
        Verdict::Accept
    );
}

#[test]
fn unparsable_object_cidrs_are_skipped() {
    let n = node_with(&[("odd", &["bogus", "10.1.0.0/24"]), ("empty", &[])]);
    assert_eq!(
        n.service_cidrs,
        ["10.1.0.0/24".parse::<ipnet::IpNet>().unwrap()]
    );
}
