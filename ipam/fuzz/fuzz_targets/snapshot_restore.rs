//! Fuzz target: arbitrary bytes → `Snapshot::from_bytes` → `restore` into several allocators.
//!
//! Run (the toolchain is stable, cargo-fuzz needs nightly flags):
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run snapshot_restore -- -max_total_time=600`
//!
//! Asserts: nothing panics; decoding is the inverse of encoding; a failed restore leaves the allocator
//! unchanged; a successful one yields a consistent allocator whose own snapshot is the canonical form of the
//! input data, and which can still allocate while it has free values.
#![no_main]

use ipam::{IpRange, PortRange, Snapshot};
use libfuzzer_sys::fuzz_target;

/// Don't build allocators bigger than this from the snapshot's own range (keeps executions fast).
const MAX_SELF_RANGE: u64 = 1 << 22;

fn canonical(data: &[u8]) -> Vec<u8> {
    data.iter().copied().skip_while(|&b| b == 0).collect()
}

fn check_ip(mut r: IpRange, snap: &Snapshot) {
    let before = r.clone();
    match r.restore(snap) {
        Ok(()) => {
            r.bitmap()
                .check_invariants()
                .expect("restored bitmap is consistent");
            if r.used() <= 4096 {
                assert_eq!(r.used(), r.iter().count() as u64);
            }
            // Spot-check membership (a full pass costs too much under coverage instrumentation).
            assert!(r
                .iter()
                .step_by(97)
                .all(|ip| r.contains(ip) && r.is_allocated(ip)));
            assert!(r
                .iter()
                .last()
                .is_none_or(|ip| r.contains(ip) && r.is_allocated(ip)));
            assert_eq!(r.snapshot().data, canonical(&snap.data));
            if r.free() > 0 {
                let ip = r.allocate_next().expect("free > 0 so allocation succeeds");
                assert!(r.release(ip));
            } else {
                assert!(r.allocate_next().is_err());
            }
        }
        Err(_) => assert_eq!(r, before, "failed restore changed the allocator"),
    }
}

fn check_port(mut p: PortRange, snap: &Snapshot) {
    let before = p.clone();
    match p.restore(snap) {
        Ok(()) => {
            p.bitmap()
                .check_invariants()
                .expect("restored bitmap is consistent");
            if p.used() <= 4096 {
                assert_eq!(p.used(), p.iter().count() as u64);
            }
            assert!(p
                .iter()
                .step_by(97)
                .all(|port| p.contains(port) && p.is_allocated(port)));
            assert!(p
                .iter()
                .last()
                .is_none_or(|port| p.contains(port) && p.is_allocated(port)));
            assert_eq!(p.snapshot().data, canonical(&snap.data));
            if p.free() > 0 {
                let port = p.allocate_next().expect("free > 0 so allocation succeeds");
                assert!(p.release(port));
            } else {
                assert!(p.allocate_next().is_err());
            }
        }
        Err(_) => assert_eq!(p, before, "failed restore changed the allocator"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(snap) = Snapshot::from_bytes(data) else {
        return;
    };
    assert_eq!(
        snap.to_bytes(),
        data,
        "from_bytes accepts only the canonical encoding"
    );

    for cidr in [
        "10.96.0.0/12",
        "10.0.0.0/24",
        "192.168.1.240/30",
        "fd00::/112",
        "fd00::/64",
    ] {
        let r = IpRange::new(cidr.parse().expect("literal CIDR")).expect("literal range");
        check_ip(r, &snap);
    }
    check_port(PortRange::default(), &snap);
    check_port(PortRange::new(8080, 1).expect("literal range"), &snap);

    // Also restore into an allocator built from the snapshot's own range description.
    if let Ok(net) = snap.range.trim().parse::<ipnet::IpNet>() {
        // IPv6 bitmaps are capped at 65 536 entries; IPv4 ones are as large as the CIDR.
        let small = net.max_prefix_len() == 128 || ipam::cidr_range_size(&net) <= MAX_SELF_RANGE;
        if small {
            if let Ok(r) = IpRange::new(net) {
                check_ip(r, &snap);
            }
        }
    } else if let Ok(p) = PortRange::parse(&snap.range) {
        check_port(p, &snap);
    }
});
