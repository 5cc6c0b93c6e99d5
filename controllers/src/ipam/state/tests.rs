//! Index tests: reservations, owners, and the two ledgers recording one address.

use super::*;
use crds::{NodePortClaimSpec, ServiceIPClaimSpec};

fn cfg() -> IpamConfig {
    IpamConfig {
        service_cidrs: vec!["10.0.0.0/29".parse().unwrap()],
        node_port_range: "30000-30002".into(),
        ..Default::default()
    }
}

fn owner(uid: &str) -> ServiceRef {
    ServiceRef {
        namespace: "ns".into(),
        name: uid.into(),
        uid: uid.into(),
    }
}

fn ip_claim(ip: &str, uid: &str) -> ServiceIPClaim {
    let ip: IpAddr = ip.parse().unwrap();
    ServiceIPClaim::new(
        &ServiceIPClaim::name_for(ip),
        ServiceIPClaimSpec {
            ip: ip.to_string(),
            purpose: IpPurpose::ClusterIP,
            pool: None,
            sharing_key: None,
            parent_refs: vec![owner(uid)],
        },
    )
}

#[test]
fn reservations_never_hand_out_a_claimed_or_pending_value() {
    let mut st = AllocState::new(&cfg()).unwrap();
    // /29 → 6 usable addresses.
    st.apply_ip_claim(&ip_claim("10.0.0.1", "a"));
    let mut got = HashSet::new();
    while let Ok(ip) = st.reserve_next_ip(Family::V4) {
        assert!(got.insert(ip));
    }
    assert_eq!(got.len(), 5);
    assert!(!got.contains(&"10.0.0.1".parse::<IpAddr>().unwrap()));
    let some = *got.iter().next().unwrap();
    assert_eq!(st.reserve_ip(some, true), Reserve::Busy);
    st.unreserve_ip(some, false);
    assert_eq!(st.reserve_next_ip(Family::V4).unwrap(), some);
    assert!(matches!(
        st.reserve_ip("10.0.0.1".parse().unwrap(), true),
        Reserve::Held(_)
    ));
    assert_eq!(
        st.reserve_ip("10.9.0.1".parse().unwrap(), false),
        Reserve::OutOfRange
    );
}

#[test]
fn index_by_owner_follows_applies_and_removals() {
    let mut st = AllocState::new(&cfg()).unwrap();
    st.apply_ip_claim(&ip_claim("10.0.0.2", "a"));
    st.apply_ip_claim(&ip_claim("10.0.0.3", "a"));
    assert_eq!(st.ips_of("a").len(), 2);
    // Re-owned (e.g. repaired for another Service).
    st.apply_ip_claim(&ip_claim("10.0.0.3", "b"));
    assert_eq!(st.ips_of("a").len(), 1);
    assert_eq!(st.ips_of("b").len(), 1);
    st.remove_ip_claim("10.0.0.2".parse().unwrap());
    assert!(st.ips_of("a").is_empty());
    assert_eq!(st.ranges().iter().next().unwrap().used(), 1);

    let pc = NodePortClaim::new(
        "30001",
        NodePortClaimSpec {
            port: 30001,
            purpose: PortPurpose::NodePort,
            parent_ref: owner("a"),
        },
    );
    st.apply_port_claim(&pc);
    assert_eq!(st.ports_of("a").len(), 1);
    assert_eq!(
        st.reserve_port(30001),
        Reserve::Held(st.port(30001).unwrap().clone())
    );
    assert_eq!(st.reserve_port(40000), Reserve::OutOfRange);
    let mut n = 0;
    while st.reserve_next_port().is_ok() {
        n += 1;
    }
    assert_eq!(n, 2);
    st.reset_ip_claims(&[]);
    st.reset_port_claims(&[]);
    assert!(st.ports_of("a").is_empty() && st.ips_of("b").is_empty());
}

/// While a claim is migrated both objects record the address; whichever goes first, the
/// address stays held until the other goes too.
#[test]
fn an_address_recorded_twice_stays_held_until_both_records_go() {
    let mut st = AllocState::new(&cfg()).unwrap();
    let ip: IpAddr = "10.0.0.4".parse().unwrap();
    let address = IpClaimInfo {
        ledger: Ledger {
            claim: false,
            address: Some(AddressManager::Ours),
        },
        ..IpClaimInfo::from_claim(&ip_claim("10.0.0.4", "a"))
    };
    for claim_goes_first in [true, false] {
        st.apply_ip_claim(&ip_claim("10.0.0.4", "a"));
        st.record(ip, address.clone());
        // A later claim event does not hide the IPAddress.
        st.apply_ip_claim(&ip_claim("10.0.0.4", "a"));
        let l = st.ip(ip).unwrap().ledger;
        assert!(l.claim && l.address == Some(AddressManager::Ours));
        if claim_goes_first {
            st.remove_ip_claim(ip);
        } else {
            st.remove_address(ip);
        }
        assert!(st.ip_taken(ip));
        assert_eq!(
            st.reserve_ip(ip, true),
            Reserve::Held(st.ip(ip).unwrap().clone())
        );
        assert_eq!(st.ips_of("a").len(), 1);
        if claim_goes_first {
            st.remove_address(ip);
        } else {
            st.remove_ip_claim(ip);
        }
        assert!(!st.ip_taken(ip));
        assert!(st.ips_of("a").is_empty());
    }
    // A relist of one ledger leaves the other's records alone.
    st.record(ip, address.clone());
    st.apply_ip_claim(&ip_claim("10.0.0.5", "b"));
    st.reset_ip_claims(&[]);
    assert!(st.ip_taken(ip));
    assert!(!st.ip_taken("10.0.0.5".parse().unwrap()));
    st.reset_addresses(Vec::new());
    assert!(!st.ip_taken(ip));
}

#[test]
fn holders_without_a_uid_match_by_name() {
    let named = ServiceRef {
        namespace: "ns".into(),
        name: "web".into(),
        uid: String::new(),
    };
    assert!(held_by(std::slice::from_ref(&named), "ns", "web", "u9"));
    assert!(!held_by(std::slice::from_ref(&named), "other", "web", "u9"));
    assert!(held_by(&[owner("u1")], "ns", "whatever", "u1"));
    assert!(!held_by(&[owner("u1")], "ns", "u1", "u2"));
}
