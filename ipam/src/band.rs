//! Static/dynamic band sizes, exactly as upstream computes them.
//!
//! Both formulas are `min(max(MIN, size / STEP), MAX)`, and 0 when the size is at most `MIN`.

use ipnet::IpNet;

/// The number of addresses in a CIDR as upstream's `k8s.io/utils/net.RangeSize` reports it.
///
/// That is 2^hostbits, except that it is 0 for IPv4 /0 and /1 and IPv6 /0 and /1 (an upstream quirk, kept so
/// band sizes and usable counts match), and saturates at `i64::MAX` from 63 host bits on.
pub fn cidr_range_size(cidr: &IpNet) -> u64 {
    let bits = u32::from(cidr.max_prefix_len());
    let host_bits = bits - u32::from(cidr.prefix_len());
    if host_bits >= bits - 1 {
        0
    } else if host_bits >= 63 {
        i64::MAX as u64
    } else {
        1u64 << host_bits
    }
}

/// Size of the static (lower) band of a Service IP range (KEP-3070).
///
/// `0` if the CIDR holds at most 16 addresses, otherwise `clamp(cidr_size / 16, 16, 256)`, where `cidr_size` is
/// the full 2^hostbits of the CIDR (network and broadcast included; see [`cidr_range_size`]).
/// A /24 gets 16 (`.1`–`.16`), a /16 or anything larger 256.
pub fn ip_static_band_size(cidr: &IpNet) -> u64 {
    const MIN: u64 = 16;
    const MAX: u64 = 256;
    const STEP: u64 = 16;
    band(cidr_range_size(cidr), MIN, MAX, STEP)
}

/// Size of the static (lower) band of a NodePort range (KEP-3668).
///
/// `0` if the range holds at most 16 ports, otherwise `clamp(size / 32, 16, 128)`. The default
/// `30000-32767` (2768 ports) gets 86: `30000`–`30085` is the static band.
pub fn port_static_band_size(size: u64) -> u64 {
    const MIN: u64 = 16;
    const MAX: u64 = 128;
    const STEP: u64 = 32;
    band(size, MIN, MAX, STEP)
}

fn band(size: u64, min: u64, max: u64, step: u64) -> u64 {
    if size <= min {
        0
    } else {
        (size / step).clamp(min, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn ip_bands_match_kep_3070() {
        // (cidr, full cidr size, expected static band): values worked out by hand from the formula.
        let cases = [
            ("10.0.0.0/32", 1, 0),
            ("10.0.0.0/31", 2, 0),
            ("10.0.0.0/30", 4, 0),
            ("10.0.0.0/28", 16, 0),
            ("10.0.0.0/27", 32, 16),  // 32/16 = 2 → min 16
            ("10.0.0.0/24", 256, 16), // 256/16 = 16
            ("10.0.0.0/23", 512, 32),
            ("10.0.0.0/22", 1024, 64),
            ("10.0.0.0/21", 2048, 128),
            ("10.0.0.0/20", 4096, 256),
            ("10.0.0.0/16", 65536, 256), // 4096 → max 256
            ("10.96.0.0/12", 1 << 20, 256),
            ("10.0.0.0/8", 1 << 24, 256),
            ("0.0.0.0/1", 0, 0), // upstream RangeSize quirk
            ("0.0.0.0/0", 0, 0),
            ("fd00::/128", 1, 0),
            ("fd00::/124", 16, 0),
            ("fd00::/123", 32, 16),
            ("fd00::/120", 256, 16),
            ("fd00::/116", 4096, 256),
            ("fd00::/112", 65536, 256),
            ("fd00::/108", 1 << 20, 256),
            ("fd00::/64", 1 << 63, 256), // saturates at i64::MAX
            ("::/1", 0, 0),
        ];
        for (cidr, size, want) in cases {
            let n = net(cidr);
            let expect_size = if size == 1u64 << 63 {
                i64::MAX as u64
            } else {
                size
            };
            assert_eq!(cidr_range_size(&n), expect_size, "range size of {cidr}");
            assert_eq!(ip_static_band_size(&n), want, "static band of {cidr}");
        }
    }

    #[test]
    fn port_bands_match_kep_3668() {
        let cases = [
            (1, 0),
            (16, 0),
            (17, 16),   // 17/32 = 0 → min 16
            (512, 16),  // 16
            (1024, 32), // 32
            (2768, 86), // default 30000-32767
            (4096, 128),
            (10000, 128), // 312 → max 128
            (65536, 128),
        ];
        for (size, want) in cases {
            assert_eq!(
                port_static_band_size(size),
                want,
                "static band of a {size}-port range"
            );
        }
    }
}
