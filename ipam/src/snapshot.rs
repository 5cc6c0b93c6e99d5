//! Snapshots: the range description plus the bitmap bytes, and a compact binary encoding of both.

use crate::error::{Error, Result};

/// A point-in-time copy of an allocator, in the shape of upstream's `RangeAllocation`.
///
/// * `range` is the allocator's range description: a CIDR such as `10.96.0.0/12` for an
///   [`IpRange`](crate::IpRange), `30000-32767` for a [`PortRange`](crate::PortRange).
/// * `data` is the bitmap as a big-endian unsigned integer whose bit `i` is offset `i`, without leading zero
///   bytes — byte-for-byte what upstream stores in `RangeAllocation.data`, so snapshots can be exchanged with it.
///
/// Restoring refuses a snapshot whose `range` differs from the allocator's ([`Error::SnapshotMismatch`]) and data
/// that marks offsets outside the range ([`Error::CorruptSnapshot`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The range the snapshot was taken over.
    pub range: String,
    /// Big-endian bitmap bytes.
    pub data: Vec<u8>,
}

/// First byte of [`Snapshot::to_bytes`] output.
const FORMAT_VERSION: u8 = 1;

impl Snapshot {
    /// Encodes the snapshot compactly: a version byte (`1`), the length of `range` as an unsigned LEB128
    /// varint, the UTF-8 `range`, then `data` to the end.
    ///
    /// A snapshot of an empty `10.96.0.0/12` is 14 bytes; a full one about 128 KiB.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 10 + self.range.len() + self.data.len());
        out.push(FORMAT_VERSION);
        let mut len = self.range.len() as u64;
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        out.extend_from_slice(self.range.as_bytes());
        out.extend_from_slice(&self.data);
        out
    }

    /// Decodes [`Snapshot::to_bytes`] output. Any input is safe: malformed bytes give
    /// [`Error::CorruptSnapshot`], never a panic. Only the canonical encoding is accepted (minimal length), so
    /// `Snapshot::from_bytes(b)?.to_bytes() == b`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Snapshot> {
        let corrupt = |reason: String| Error::CorruptSnapshot { reason };
        let (&version, rest) = bytes
            .split_first()
            .ok_or_else(|| corrupt("empty input".into()))?;
        if version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "unknown encoding version {version} (expected {FORMAT_VERSION})"
            )));
        }
        let mut len: u64 = 0;
        let mut consumed = 0usize;
        loop {
            let Some(&byte) = rest.get(consumed) else {
                return Err(corrupt("truncated range length".into()));
            };
            if consumed >= 9 {
                return Err(corrupt("range length does not fit in 64 bits".into()));
            }
            len |= u64::from(byte & 0x7f) << (7 * consumed);
            consumed += 1;
            if byte & 0x80 == 0 {
                if byte == 0 && consumed > 1 {
                    return Err(corrupt("non-minimal range length encoding".into()));
                }
                break;
            }
        }
        let rest = &rest[consumed..];
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= rest.len())
            .ok_or_else(|| {
                corrupt(format!(
                    "range length {len} exceeds the {} remaining bytes",
                    rest.len()
                ))
            })?;
        let (range, data) = rest.split_at(len);
        let range =
            std::str::from_utf8(range).map_err(|e| corrupt(format!("range is not UTF-8: {e}")))?;
        Ok(Snapshot {
            range: range.to_string(),
            data: data.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for s in [
            Snapshot::default(),
            Snapshot {
                range: "10.96.0.0/12".into(),
                data: vec![],
            },
            Snapshot {
                range: "30000-32767".into(),
                data: vec![1, 2, 3, 0, 255],
            },
            Snapshot {
                range: "x".repeat(300),
                data: vec![9; 1000],
            },
        ] {
            let bytes = s.to_bytes();
            assert_eq!(Snapshot::from_bytes(&bytes).unwrap(), s);
        }
    }

    #[test]
    fn compact_layout() {
        let s = Snapshot {
            range: "10.96.0.0/12".into(),
            data: vec![0xab],
        };
        let mut want = vec![1u8, 12];
        want.extend_from_slice(b"10.96.0.0/12");
        want.push(0xab);
        assert_eq!(s.to_bytes(), want);
        let long = Snapshot {
            range: "a".repeat(200),
            data: vec![],
        };
        assert_eq!(&long.to_bytes()[..3], &[1, 0xc8, 0x01]);
    }

    #[test]
    fn rejects_malformed() {
        let cases: &[(&[u8], &str)] = &[
            (&[], "empty input"),
            (&[2, 0], "unknown encoding version 2"),
            (&[1, 0x80, 0x00], "non-minimal range length"),
            (&[1], "truncated range length"),
            (&[1, 0x80], "truncated range length"),
            (
                &[1, 5, b'a'],
                "range length 5 exceeds the 1 remaining bytes",
            ),
            (&[1, 2, 0xff, 0xfe], "range is not UTF-8"),
            (
                &[
                    1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ],
                "does not fit in 64 bits",
            ),
        ];
        for (input, want) in cases {
            let err = Snapshot::from_bytes(input).unwrap_err();
            assert!(matches!(err, Error::CorruptSnapshot { .. }));
            assert!(err.to_string().contains(want), "{input:?}: {err}");
        }
    }
}
