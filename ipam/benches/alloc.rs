//! Allocator benchmarks: `cargo bench -p svcnet-ipam`.
//!
//! allocate-next is timed on its own: each timed batch allocates `batch` values, which are released again
//! outside the timed section, so the fill level stays where the benchmark name says (a batch is at most 10 % of
//! the free values). `baseline_linear_scan` is upstream's algorithm (random start, then a bit-by-bit scan) on the
//! same 99.9 % full /12, for comparison.

use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ipam::{IpRange, PortRange};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SERVICE_CIDR: &str = "10.96.0.0/12";

fn service_range() -> IpRange {
    IpRange::new(SERVICE_CIDR.parse().expect("literal CIDR")).expect("valid range")
}

/// Allocates with `allocate_next` until `fraction` of the range is used.
fn ip_range_filled(fraction: f64) -> IpRange {
    let mut r = service_range();
    let mut rng = StdRng::seed_from_u64(42);
    let target = (r.size() as f64 * fraction) as u64;
    while r.used() < target {
        r.allocate_next_with(&mut rng).expect("not full yet");
    }
    r
}

fn port_range_filled(fraction: f64) -> PortRange {
    let mut r = PortRange::default();
    let mut rng = StdRng::seed_from_u64(42);
    let target = (r.size() as f64 * fraction) as u64;
    while r.used() < target {
        r.allocate_next_with(&mut rng).expect("not full yet");
    }
    r
}

/// Times `alloc` in batches; `release` (untimed) restores the fill level after each batch.
fn timed_batches<T>(
    iters: u64,
    batch: u64,
    mut alloc: impl FnMut() -> T,
    mut release: impl FnMut(T),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    let mut got = Vec::with_capacity(batch as usize);
    while left > 0 {
        let n = left.min(batch);
        let start = Instant::now();
        for _ in 0..n {
            got.push(black_box(alloc()));
        }
        total += start.elapsed();
        for v in got.drain(..) {
            release(v);
        }
        left -= n;
    }
    total
}

fn allocate_next_ip(c: &mut Criterion) {
    let mut group = c.benchmark_group("ip_allocate_next_10.96.0.0/12");
    for (label, fraction) in [("empty", 0.0), ("50pct", 0.5), ("99.9pct", 0.999)] {
        let r = std::cell::RefCell::new(ip_range_filled(fraction));
        let batch = (r.borrow().free() / 10).clamp(1, 1000);
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_custom(|iters| {
                timed_batches(
                    iters,
                    batch,
                    || r.borrow_mut().allocate_next().expect("free values left"),
                    |ip: IpAddr| {
                        r.borrow_mut().release(ip);
                    },
                )
            })
        });
    }
    group.finish();
}

fn allocate_next_port(c: &mut Criterion) {
    let mut group = c.benchmark_group("port_allocate_next_30000-32767");
    for (label, fraction) in [("empty", 0.0), ("99pct", 0.99)] {
        let r = std::cell::RefCell::new(port_range_filled(fraction));
        let batch = (r.borrow().free() / 10).clamp(1, 1000);
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_custom(|iters| {
                timed_batches(
                    iters,
                    batch,
                    || r.borrow_mut().allocate_next().expect("free ports left"),
                    |p: u16| {
                        r.borrow_mut().release(p);
                    },
                )
            })
        });
    }
    group.finish();
}

fn release(c: &mut Criterion) {
    let mut group = c.benchmark_group("release");
    let r = std::cell::RefCell::new(ip_range_filled(0.5));
    group.bench_function("ip_10.96.0.0/12_50pct", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            let mut ips = Vec::with_capacity(1000);
            while left > 0 {
                let n = left.min(1000);
                for _ in 0..n {
                    ips.push(r.borrow_mut().allocate_next().expect("half empty"));
                }
                let mut r = r.borrow_mut();
                let start = Instant::now();
                for ip in ips.drain(..) {
                    black_box(r.release(ip));
                }
                total += start.elapsed();
                left -= n;
            }
            total
        })
    });
    group.finish();
}

fn snapshot_restore(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot_full_10.96.0.0/12");
    let full = ip_range_filled(1.0);
    assert_eq!(full.free(), 0);
    group.bench_function("snapshot", |b| b.iter(|| black_box(full.snapshot())));
    let snap = full.snapshot();
    let mut target = service_range();
    group.bench_function("restore", |b| {
        b.iter(|| target.restore(black_box(&snap)).expect("same range"))
    });
    let bytes = snap.to_bytes();
    group.bench_function("from_bytes+restore", |b| {
        b.iter(|| {
            let s = ipam::Snapshot::from_bytes(black_box(&bytes)).expect("valid encoding");
            target.restore(&s).expect("same range")
        })
    });
    group.finish();
}

/// Upstream's strategy, for comparison: a flat bitmap, random start in the dynamic band, then a bit-by-bit
/// scan with wrap-around (`randomScanStrategyWithOffset` over `big.Int.Bit`).
struct LinearScan {
    bits: Vec<u64>,
    size: u64,
    offset: u64,
}

impl LinearScan {
    fn from(r: &IpRange) -> LinearScan {
        let size = r.size();
        let mut bits = vec![0u64; size.div_ceil(64) as usize];
        for o in r.bitmap().iter() {
            bits[(o / 64) as usize] |= 1 << (o % 64);
        }
        LinearScan {
            bits,
            size,
            offset: r.static_band_size(),
        }
    }

    fn bit(&self, o: u64) -> bool {
        self.bits[(o / 64) as usize] & (1 << (o % 64)) != 0
    }

    fn allocate_next(&mut self, rng: &mut impl Rng) -> Option<u64> {
        let sub = self.size - self.offset;
        let start = rng.random_range(0..sub);
        for i in 0..sub {
            let at = self.offset + (start + i) % sub;
            if !self.bit(at) {
                self.bits[(at / 64) as usize] |= 1 << (at % 64);
                return Some(at);
            }
        }
        let start = rng.random_range(0..self.offset);
        for i in 0..self.offset {
            let at = (start + i) % self.offset;
            if !self.bit(at) {
                self.bits[(at / 64) as usize] |= 1 << (at % 64);
                return Some(at);
            }
        }
        None
    }

    fn release(&mut self, o: u64) {
        self.bits[(o / 64) as usize] &= !(1 << (o % 64));
    }
}

fn baseline(c: &mut Criterion) {
    let mut group = c.benchmark_group("baseline_linear_scan_10.96.0.0/12");
    for (label, fraction) in [("50pct", 0.5), ("99.9pct", 0.999)] {
        let filled = ip_range_filled(fraction);
        let batch = (filled.free() / 10).clamp(1, 1000);
        let naive = std::cell::RefCell::new(LinearScan::from(&filled));
        let mut rng = StdRng::seed_from_u64(1);
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_custom(|iters| {
                timed_batches(
                    iters,
                    batch,
                    || {
                        naive
                            .borrow_mut()
                            .allocate_next(&mut rng)
                            .expect("free left")
                    },
                    |o| naive.borrow_mut().release(o),
                )
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = allocate_next_ip, allocate_next_port, release, snapshot_restore, baseline
}
criterion_main!(benches);
