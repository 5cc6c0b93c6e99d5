//! NodePort allocation over a port range (upstream `portallocator.PortAllocator`).

use std::fmt;
use std::str::FromStr;

use rand::Rng;

use crate::band::port_static_band_size;
use crate::bitmap::Bitmap;
use crate::error::{Error, Result, Value};
use crate::snapshot::Snapshot;

/// First port of the default `--service-node-port-range`.
pub const DEFAULT_NODE_PORT_BASE: u16 = 30000;
/// Number of ports in the default `--service-node-port-range` (`30000-32767`).
pub const DEFAULT_NODE_PORT_SIZE: u32 = 2768;

/// Allocator for the ports of an inclusive range such as `30000-32767` (the default).
///
/// Offset = port − first port. Bands follow KEP-3668 ([`port_static_band_size`](crate::port_static_band_size)):
/// for the default range `30000`–`30085` is the static band, and [`allocate_next`](PortRange::allocate_next)
/// prefers `30086`–`32767`.
///
/// Concurrency: a plain `Send + Sync` value mutated through `&mut self`; share it behind a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRange {
    base: u16,
    size: u32,
    bitmap: Bitmap,
}

impl Default for PortRange {
    /// The default NodePort range, `30000-32767`.
    fn default() -> Self {
        PortRange::from_bounds(DEFAULT_NODE_PORT_BASE, DEFAULT_NODE_PORT_SIZE)
    }
}

impl PortRange {
    /// Creates an empty allocator for the `size` ports starting at `base`.
    ///
    /// Errors: [`Error::InvalidRange`] if `size` is 0 or the range would end past port 65535.
    pub fn new(base: u16, size: u32) -> Result<PortRange> {
        let end = u32::from(base) + size;
        if size == 0 || end > 65536 {
            return Err(Error::InvalidRange {
                range: format!("{base}+{size}"),
                reason: if size == 0 {
                    "a port range needs at least one port".into()
                } else {
                    format!("the range would end at port {}, past 65535", end - 1)
                },
            });
        }
        Ok(PortRange::from_bounds(base, size))
    }

    fn from_bounds(base: u16, size: u32) -> PortRange {
        let size64 = u64::from(size);
        PortRange {
            base,
            size,
            bitmap: Bitmap::new(size64, port_static_band_size(size64)),
        }
    }

    /// Parses `"low-high"` (inclusive) or a single port `"port"`, like upstream's `net.ParsePortRange`
    /// (surrounding whitespace is ignored).
    ///
    /// Errors: [`Error::InvalidRange`] for an empty string, non-numbers, ports above 65535 or `high < low`.
    pub fn parse(s: &str) -> Result<PortRange> {
        let invalid = |reason: String| Error::InvalidRange {
            range: s.to_string(),
            reason,
        };
        let value = s.trim();
        if value.is_empty() {
            return Err(invalid("empty port range".into()));
        }
        let parse_port = |p: &str| -> Result<u16> {
            let n: u32 = p
                .trim()
                .parse()
                .map_err(|e| invalid(format!("unable to parse port {p:?}: {e}")))?;
            u16::try_from(n).map_err(|_| invalid(format!("port {n} is greater than 65535")))
        };
        let (low, high) = match value.split_once('-') {
            None => {
                let p = parse_port(value)?;
                (p, p)
            }
            Some((l, h)) => (parse_port(l)?, parse_port(h)?),
        };
        if high < low {
            return Err(invalid(format!(
                "end port {high} cannot be less than start port {low}"
            )));
        }
        Ok(PortRange::from_bounds(low, u32::from(high - low) + 1))
    }

    /// The first port of the range.
    pub fn first(&self) -> u16 {
        self.base
    }

    /// The last port of the range (inclusive).
    pub fn last(&self) -> u16 {
        // size >= 1 and base + size - 1 <= 65535 are checked on construction.
        (u32::from(self.base) + self.size - 1) as u16
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.offset_of(port).is_some()
    }

    fn offset_of(&self, port: u16) -> Option<u64> {
        let off = u32::from(port.checked_sub(self.base)?);
        (off < self.size).then_some(u64::from(off))
    }

    fn port_at(&self, offset: u64) -> u16 {
        // offset < size, so base + offset <= last() <= 65535.
        (u64::from(self.base) + offset) as u16
    }

    /// Allocates `port`, which may be anywhere in the range (either band).
    ///
    /// Errors: [`Error::OutOfRange`] ("the provided port (…) is not in the valid range. The range of valid ports
    /// is 30000-32767") or [`Error::AlreadyAllocated`] ("provided port is already allocated: …").
    pub fn allocate(&mut self, port: u16) -> Result<()> {
        let Some(offset) = self.offset_of(port) else {
            return Err(Error::OutOfRange {
                value: Value::Port(port),
                range: self.to_string(),
            });
        };
        if !self.bitmap.set(offset) {
            return Err(Error::AlreadyAllocated {
                value: Value::Port(port),
                range: self.to_string(),
            });
        }
        Ok(())
    }

    /// Allocates a free port with the thread-local RNG; see [`PortRange::allocate_next_with`].
    pub fn allocate_next(&mut self) -> Result<u16> {
        self.allocate_next_with(&mut rand::rng())
    }

    /// Allocates a free port: random start in the dynamic (upper) band with wrap-around inside it; only if it is
    /// full, the static (lower) band the same way.
    ///
    /// Errors: [`Error::Full`] ("range is full: …").
    pub fn allocate_next_with<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Result<u16> {
        match self.bitmap.allocate_next_with(rng) {
            Ok(offset) => Ok(self.port_at(offset)),
            Err(_) => Err(Error::Full {
                range: self.to_string(),
            }),
        }
    }

    /// Releases `port`. Returns `true` if it was allocated; a free or out-of-range port is ignored (`false`).
    pub fn release(&mut self, port: u16) -> bool {
        match self.offset_of(port) {
            Some(o) => self.bitmap.release(o),
            None => false,
        }
    }

    /// Whether `port` is allocated (always false outside the range).
    pub fn is_allocated(&self, port: u16) -> bool {
        self.offset_of(port)
            .is_some_and(|o| self.bitmap.is_allocated(o))
    }

    /// Number of ports in the range.
    pub fn size(&self) -> u64 {
        u64::from(self.size)
    }

    /// Number of allocated ports.
    pub fn used(&self) -> u64 {
        self.bitmap.used()
    }

    /// Number of free ports.
    pub fn free(&self) -> u64 {
        self.bitmap.free()
    }

    /// Number of ports in the static (lower) band, counted from [`first`](PortRange::first).
    pub fn static_band_size(&self) -> u64 {
        self.bitmap.static_band_size()
    }

    /// The allocated ports, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.bitmap.iter().map(|o| self.port_at(o))
    }

    /// The underlying bitmap (offset 0 = first port).
    pub fn bitmap(&self) -> &Bitmap {
        &self.bitmap
    }

    /// A snapshot: `range` is `"30000-32767"`, `data` the upstream-compatible bitmap bytes.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            range: self.to_string(),
            data: self.bitmap.to_bytes(),
        }
    }

    /// Replaces the allocation state with a snapshot of the same port range.
    ///
    /// Errors: [`Error::SnapshotMismatch`] if the snapshot's range is a different port range (or not one);
    /// [`Error::CorruptSnapshot`] if the data marks ports outside the range. On error nothing changes.
    pub fn restore(&mut self, snapshot: &Snapshot) -> Result<()> {
        let same = snapshot.range == self.to_string()
            || PortRange::parse(&snapshot.range)
                .is_ok_and(|p| p.base == self.base && p.size == self.size);
        if !same {
            return Err(Error::SnapshotMismatch {
                expected: self.to_string(),
                found: snapshot.range.clone(),
            });
        }
        let range = self.to_string();
        self.bitmap.restore_bytes_for(&snapshot.data, &range)
    }
}

impl fmt::Display for PortRange {
    /// `"30000-32767"` (also for a single port: `"8080-8080"`, as upstream prints it).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first(), self.last())
    }
}

impl FromStr for PortRange {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        PortRange::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn default_range() {
        let r = PortRange::default();
        assert_eq!(r.to_string(), "30000-32767");
        assert_eq!((r.first(), r.last(), r.size()), (30000, 32767, 2768));
        assert_eq!(r.static_band_size(), 86);
        assert_eq!(r, PortRange::parse("30000-32767").unwrap());
        assert_eq!(r, PortRange::new(30000, 2768).unwrap());
    }

    #[test]
    fn parse_variants() {
        assert_eq!(PortRange::parse(" 8080 ").unwrap().to_string(), "8080-8080");
        assert_eq!(PortRange::parse("0-65535").unwrap().size(), 65536);
        assert_eq!("100-199".parse::<PortRange>().unwrap().size(), 100);
        for bad in [
            "", "  ", "a-b", "30000-", "-5", "70000", "1-70000", "200-100", "1-2-3",
        ] {
            let err = PortRange::parse(bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidRange { .. }),
                "{bad:?} → {err:?}"
            );
        }
        assert_eq!(
            PortRange::parse("200-100").unwrap_err().to_string(),
            "invalid range \"200-100\": end port 100 cannot be less than start port 200"
        );
    }

    #[test]
    fn new_validates() {
        assert!(PortRange::new(1, 0).is_err());
        assert!(PortRange::new(65535, 2).is_err());
        assert_eq!(PortRange::new(65535, 1).unwrap().last(), 65535);
        assert_eq!(PortRange::new(0, 65536).unwrap().last(), 65535);
    }

    #[test]
    fn errors_name_port_and_range() {
        let mut r = PortRange::default();
        assert_eq!(
            r.allocate(40000).unwrap_err().to_string(),
            "the provided port (40000) is not in the valid range. The range of valid ports is 30000-32767"
        );
        assert!(r.allocate(29999).is_err());
        r.allocate(30000).unwrap();
        r.allocate(32767).unwrap();
        assert_eq!(
            r.allocate(30000).unwrap_err().to_string(),
            "provided port is already allocated: 30000 in 30000-32767"
        );
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![30000, 32767]);
    }

    #[test]
    fn single_port_range() {
        let mut r = PortRange::parse("8080").unwrap();
        assert_eq!((r.size(), r.static_band_size()), (1, 0));
        assert!(r.contains(8080) && !r.contains(8079) && !r.contains(8081));
        assert_eq!(r.allocate_next().unwrap(), 8080);
        assert_eq!(
            r.allocate_next().unwrap_err().to_string(),
            "range is full: no free values left in 8080-8080"
        );
        assert!(r.release(8080));
        assert!(!r.release(8080));
        r.allocate(8080).unwrap();
        assert_eq!(r.used(), 1);
    }

    #[test]
    fn dynamic_band_first_on_default_range() {
        let mut r = PortRange::default();
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..(2768 - 86) {
            let p = r.allocate_next_with(&mut rng).unwrap();
            assert!(p >= 30086, "{p} is in the static band");
        }
        for _ in 0..86 {
            let p = r.allocate_next_with(&mut rng).unwrap();
            assert!((30000..30086).contains(&p));
        }
        assert!(matches!(
            r.allocate_next_with(&mut rng),
            Err(Error::Full { .. })
        ));
        assert_eq!(r.free(), 0);
    }

    #[test]
    fn release_and_is_allocated() {
        let mut r = PortRange::default();
        let p = r.allocate_next().unwrap();
        assert!(r.is_allocated(p));
        assert!(!r.is_allocated(80));
        assert!(r.release(p));
        assert!(!r.release(p));
        assert!(!r.release(80), "out of range release is a no-op");
        assert_eq!(r.used(), 0);
    }

    #[test]
    fn snapshot_restore() {
        let mut r = PortRange::default();
        r.allocate(30000).unwrap();
        for _ in 0..50 {
            r.allocate_next().unwrap();
        }
        let snap = r.snapshot();
        assert_eq!(snap.range, "30000-32767");
        let mut other = PortRange::default();
        other.restore(&snap).unwrap();
        assert_eq!(other, r);

        let mut spaced = PortRange::default();
        spaced
            .restore(&Snapshot {
                range: " 30000-32767".into(),
                data: snap.data.clone(),
            })
            .unwrap();
        assert_eq!(spaced, r);

        let mut different = PortRange::parse("30000-32766").unwrap();
        assert_eq!(
            different.restore(&snap).unwrap_err(),
            Error::SnapshotMismatch {
                expected: "30000-32766".into(),
                found: "30000-32767".into()
            }
        );
        // 32767 is offset 2767: data with bit 2768 set is out of range.
        let mut data = vec![0u8; 347];
        data[0] = 0x01; // bit 346*8 = 2768
        let err = other
            .restore(&Snapshot {
                range: "30000-32767".into(),
                data,
            })
            .unwrap_err();
        assert!(matches!(err, Error::CorruptSnapshot { .. }), "{err}");
        assert_eq!(other, r, "failed restore leaves the allocator unchanged");
    }
}
