//! Property tests: every allocator against a `BTreeSet` model.
//!
//! Any sequence of operations must never hand out a value twice, the counts must always agree with the model,
//! `allocate_next` must prefer the dynamic band, and snapshot → encode → decode → restore must be the identity.

// Helpers outside #[test] fns are test code too (clippy's allow-unwrap-in-tests only covers #[test] bodies).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipam::{Bitmap, Error, IpRange, PortRange, Snapshot};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// The allocators seen through offsets, so one model checks all three.
trait Alloc: Clone {
    fn size(&self) -> u64;
    fn static_band(&self) -> u64;
    /// `offset` may be out of range; implementations map it to an out-of-range value then.
    fn allocate(&mut self, offset: u64) -> Result<(), Error>;
    fn allocate_next(&mut self, rng: &mut StdRng) -> Result<u64, Error>;
    fn release(&mut self, offset: u64) -> bool;
    fn is_allocated(&self, offset: u64) -> bool;
    fn used(&self) -> u64;
    fn free(&self) -> u64;
    fn allocated(&self) -> Vec<u64>;
    fn snapshot(&self) -> Snapshot;
    fn empty_like(&self) -> Self;
    fn restore(&mut self, s: &Snapshot) -> Result<(), Error>;
}

impl Alloc for Bitmap {
    fn size(&self) -> u64 {
        Bitmap::size(self)
    }
    fn static_band(&self) -> u64 {
        self.static_band_size()
    }
    fn allocate(&mut self, o: u64) -> Result<(), Error> {
        Bitmap::allocate(self, o)
    }
    fn allocate_next(&mut self, rng: &mut StdRng) -> Result<u64, Error> {
        self.allocate_next_with(rng)
    }
    fn release(&mut self, o: u64) -> bool {
        Bitmap::release(self, o)
    }
    fn is_allocated(&self, o: u64) -> bool {
        Bitmap::is_allocated(self, o)
    }
    fn used(&self) -> u64 {
        Bitmap::used(self)
    }
    fn free(&self) -> u64 {
        Bitmap::free(self)
    }
    fn allocated(&self) -> Vec<u64> {
        self.iter().collect()
    }
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            range: format!("bitmap/{}", Bitmap::size(self)),
            data: self.to_bytes(),
        }
    }
    fn empty_like(&self) -> Self {
        Bitmap::new(Bitmap::size(self), self.static_band_size())
    }
    fn restore(&mut self, s: &Snapshot) -> Result<(), Error> {
        self.restore_bytes(&s.data)
    }
}

fn ip_add(base: IpAddr, n: u64) -> IpAddr {
    match base {
        IpAddr::V4(v4) => IpAddr::V4(u32::from(v4).wrapping_add(n as u32).into()),
        IpAddr::V6(v6) => IpAddr::V6(u128::from(v6).wrapping_add(u128::from(n)).into()),
    }
}

impl Alloc for IpRange {
    fn size(&self) -> u64 {
        IpRange::size(self)
    }
    fn static_band(&self) -> u64 {
        self.static_band_size()
    }
    fn allocate(&mut self, o: u64) -> Result<(), Error> {
        // Offset o is network + 1 + o; past the end that is the broadcast address and then other networks.
        let ip = ip_add(self.cidr().network(), o + 1);
        IpRange::allocate(self, ip)
    }
    fn allocate_next(&mut self, rng: &mut StdRng) -> Result<u64, Error> {
        let ip = self.allocate_next_with(rng)?;
        Ok(self.offset_of(ip).expect("allocated IP is in range"))
    }
    fn release(&mut self, o: u64) -> bool {
        IpRange::release(self, ip_add(self.cidr().network(), o + 1))
    }
    fn is_allocated(&self, o: u64) -> bool {
        IpRange::is_allocated(self, ip_add(self.cidr().network(), o + 1))
    }
    fn used(&self) -> u64 {
        IpRange::used(self)
    }
    fn free(&self) -> u64 {
        IpRange::free(self)
    }
    fn allocated(&self) -> Vec<u64> {
        self.iter()
            .map(|ip| self.offset_of(ip).expect("iterated IP is in range"))
            .collect()
    }
    fn snapshot(&self) -> Snapshot {
        IpRange::snapshot(self)
    }
    fn empty_like(&self) -> Self {
        IpRange::new(self.cidr()).unwrap()
    }
    fn restore(&mut self, s: &Snapshot) -> Result<(), Error> {
        IpRange::restore(self, s)
    }
}

impl Alloc for PortRange {
    fn size(&self) -> u64 {
        PortRange::size(self)
    }
    fn static_band(&self) -> u64 {
        self.static_band_size()
    }
    fn allocate(&mut self, o: u64) -> Result<(), Error> {
        match u16::try_from(u64::from(self.first()) + o) {
            Ok(p) => PortRange::allocate(self, p),
            Err(_) => Err(Error::OutOfRange {
                value: ipam::Value::Offset(o),
                range: self.to_string(),
            }),
        }
    }
    fn allocate_next(&mut self, rng: &mut StdRng) -> Result<u64, Error> {
        Ok(u64::from(self.allocate_next_with(rng)? - self.first()))
    }
    fn release(&mut self, o: u64) -> bool {
        u16::try_from(u64::from(self.first()) + o).is_ok_and(|p| PortRange::release(self, p))
    }
    fn is_allocated(&self, o: u64) -> bool {
        u16::try_from(u64::from(self.first()) + o).is_ok_and(|p| PortRange::is_allocated(self, p))
    }
    fn used(&self) -> u64 {
        PortRange::used(self)
    }
    fn free(&self) -> u64 {
        PortRange::free(self)
    }
    fn allocated(&self) -> Vec<u64> {
        self.iter().map(|p| u64::from(p - self.first())).collect()
    }
    fn snapshot(&self) -> Snapshot {
        PortRange::snapshot(self)
    }
    fn empty_like(&self) -> Self {
        PortRange::new(self.first(), PortRange::size(self) as u32).unwrap()
    }
    fn restore(&mut self, s: &Snapshot) -> Result<(), Error> {
        PortRange::restore(self, s)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Allocate(u64),
    AllocateNext(u16),
    Release(u64),
    RoundTrip,
}

/// Offsets are drawn a little past the end (`size + 3`) so out-of-range handling is exercised.
fn ops(max_offset: u64, max_burst: u16, len: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            3 => (0..max_offset).prop_map(Op::Allocate),
            4 => (1..=max_burst).prop_map(Op::AllocateNext),
            3 => (0..max_offset).prop_map(Op::Release),
            1 => Just(Op::RoundTrip),
        ],
        0..len,
    )
}

fn check_against_model<A: Alloc>(mut a: A, ops: &[Op], seed: u64) -> Result<(), TestCaseError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model: BTreeSet<u64> = BTreeSet::new();
    let size = a.size();
    let band = a.static_band();
    for op in ops {
        match *op {
            Op::Allocate(o) => {
                let res = a.allocate(o);
                if o >= size {
                    prop_assert!(matches!(res, Err(Error::OutOfRange { .. })), "{o}: {res:?}");
                } else if model.contains(&o) {
                    prop_assert!(
                        matches!(res, Err(Error::AlreadyAllocated { .. })),
                        "{o}: {res:?}"
                    );
                } else {
                    prop_assert!(res.is_ok(), "{o}: {res:?}");
                    model.insert(o);
                }
            }
            Op::AllocateNext(n) => {
                let mut dynamic_free = (size - band) - model.range(band..).count() as u64;
                for _ in 0..n {
                    match a.allocate_next(&mut rng) {
                        Ok(o) => {
                            prop_assert!(o < size);
                            prop_assert!(model.insert(o), "offset {o} handed out twice");
                            let was_dynamic_free = dynamic_free;
                            if o >= band {
                                dynamic_free -= 1;
                            }
                            let dynamic_free = was_dynamic_free;
                            if dynamic_free > 0 {
                                prop_assert!(
                                    o >= band,
                                    "got static offset {o} while {dynamic_free} dynamic were free"
                                );
                            }
                        }
                        Err(e) => {
                            prop_assert!(matches!(e, Error::Full { .. }), "{e:?}");
                            prop_assert_eq!(model.len() as u64, size);
                            break;
                        }
                    }
                }
            }
            Op::Release(o) => {
                prop_assert_eq!(a.release(o), model.remove(&o));
            }
            Op::RoundTrip => {
                let snap = a.snapshot();
                let decoded = Snapshot::from_bytes(&snap.to_bytes()).unwrap();
                prop_assert_eq!(&decoded, &snap);
                let mut fresh = a.empty_like();
                fresh.restore(&decoded).unwrap();
                prop_assert_eq!(fresh.allocated(), a.allocated());
                prop_assert_eq!(fresh.used(), a.used());
                prop_assert_eq!(fresh.snapshot(), snap);
                a = fresh;
            }
        }
        prop_assert_eq!(a.used(), model.len() as u64);
        prop_assert_eq!(a.free(), size - model.len() as u64);
        prop_assert_eq!(a.allocated(), model.iter().copied().collect::<Vec<_>>());
    }
    for o in 0..size.min(512) + 2 {
        prop_assert_eq!(a.is_allocated(o), model.contains(&o));
    }
    Ok(())
}

const CIDRS: &[&str] = &[
    "10.1.2.0/26",      // 62 usable, static band 16
    "10.1.2.0/27",      // 30 usable, static band 16
    "10.1.2.64/28",     // 14 usable, no band
    "192.168.1.240/30", // 2 usable
    "10.0.0.0/31",      // 0 usable
    "10.0.0.7/32",      // 0 usable
    "fd00::/122",       // 63 usable, static band 16
    "fd00::40/127",     // 1 usable
    "fd00::/128",       // 0 usable
];

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Integration tests have no lib.rs next to them; shrunk failures are printed instead of persisted.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn bitmap_matches_model(size in 0u64..300, band_pct in 0u64..=100, seed: u64, ops in ops(303, 40, 120)) {
        let b = Bitmap::new(size, size * band_pct / 100);
        check_against_model(b, &ops, seed)?;
    }

    #[test]
    fn ip_range_matches_model(idx in 0..CIDRS.len(), seed: u64, ops in ops(66, 20, 100)) {
        let r = IpRange::new(CIDRS[idx].parse().unwrap()).unwrap();
        check_against_model(r, &ops, seed)?;
    }

    #[test]
    fn port_range_matches_model(base in 0u16..=65535, size in 1u32..200, seed: u64, ops in ops(203, 40, 120)) {
        let size = size.min(65536 - u32::from(base));
        let r = PortRange::new(base, size).unwrap();
        check_against_model(r, &ops, seed)?;
    }
}

proptest! {
    #![proptest_config(config(24))]

    /// Large enough for several chunks and three summary levels; bursts reach the full state.
    #[test]
    fn large_bitmap_matches_model(size in 4000u64..300_000, seed: u64, ops in ops(300_003, 30_000, 40)) {
        let b = Bitmap::new(size, 256);
        check_against_model(b, &ops, seed)?;
    }
}

/// Allocators that arbitrary snapshots are restored into.
fn targets() -> (Vec<IpRange>, Vec<PortRange>) {
    let ips = [
        "10.96.0.0/12",
        "10.0.0.0/24",
        "192.168.1.240/30",
        "fd00::/112",
        "fd00::/64",
        "10.0.0.0/32",
    ]
    .iter()
    .map(|c| IpRange::new(c.parse().unwrap()).unwrap())
    .collect();
    let ports = vec![PortRange::default(), PortRange::parse("8080").unwrap()];
    (ips, ports)
}

fn restore_everywhere(snap: &Snapshot) -> Result<(), TestCaseError> {
    let (ips, ports) = targets();
    for mut r in ips {
        let before = r.clone();
        match r.restore(snap) {
            Ok(()) => {
                prop_assert_eq!(r.used(), r.iter().count() as u64);
                prop_assert!(r.iter().all(|ip| r.contains(ip)));
                // Re-snapshotting yields the canonical form (leading zero bytes stripped).
                let canon: Vec<u8> = snap.data.iter().copied().skip_while(|&b| b == 0).collect();
                prop_assert_eq!(r.snapshot().data, canon);
            }
            Err(e) => {
                prop_assert!(
                    matches!(
                        e,
                        Error::SnapshotMismatch { .. } | Error::CorruptSnapshot { .. }
                    ),
                    "{e:?}"
                );
                prop_assert_eq!(r, before, "a failed restore must not change the allocator");
            }
        }
    }
    for mut p in ports {
        let before = p.clone();
        match p.restore(snap) {
            Ok(()) => {
                prop_assert_eq!(p.used(), p.iter().count() as u64);
                prop_assert!(p.iter().all(|port| p.contains(port)));
            }
            Err(_) => prop_assert_eq!(p, before),
        }
    }
    Ok(())
}

fn plausible_snapshot() -> impl Strategy<Value = Vec<u8>> {
    let ranges = prop::sample::select(vec![
        "10.96.0.0/12",
        "10.0.0.0/24",
        "10.0.0.0/024",
        "192.168.1.240/30",
        "fd00::/112",
        "fd00:0::/64",
        "30000-32767",
        " 8080",
        "10.0.0.0/32",
    ]);
    (ranges, prop::collection::vec(any::<u8>(), 0..200)).prop_map(|(range, data)| {
        Snapshot {
            range: range.to_string(),
            data,
        }
        .to_bytes()
    })
}

proptest! {
    #![proptest_config(config(512))]

    /// Arbitrary bytes never panic in decoding or restoring, and failures leave allocators untouched.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(snap) = Snapshot::from_bytes(&bytes) {
            prop_assert_eq!(snap.to_bytes(), bytes, "decoding is the inverse of encoding");
            restore_everywhere(&snap)?;
        }
    }

    /// Well-formed headers with arbitrary data reach the bitmap decoder.
    #[test]
    fn plausible_snapshots_never_panic(bytes in plausible_snapshot()) {
        let snap = Snapshot::from_bytes(&bytes).unwrap();
        restore_everywhere(&snap)?;
    }
}
