//! Byte-exact re-implementations of the hashes upstream uses to *order* things.
//!
//! Upstream sorts EndpointSlice ports by the FNV-128a hash of a `go-spew` dump of
//! each port (`NewPortMapKey`), and Endpoints ports and subsets by the MD5 of a
//! `go-spew` dump (`RepackSubsets`). Object-by-object equality with upstream
//! therefore needs the same dump text and the same hashes; both are written here
//! from the algorithm descriptions (RFC 1321 for MD5, the FNV spec for FNV-1a).
//!
//! The dump format is `spew.ConfigState{DisableMethods, DisablePointerAddresses,
//! SortKeys, SpewKeys}.Sprintf("%#v", v)`: every value is prefixed by its Go type
//! in parentheses (`(*string)http`), strings are printed raw, nil pointers and
//! slices print `<nil>`, elements of a slice print without their type.

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use std::fmt::Write as _;

/// FNV-1a, 128-bit, as Go's `hash/fnv.New128a`.
pub fn fnv128a(data: &[u8]) -> [u8; 16] {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    for b in data {
        h ^= u128::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    h.to_be_bytes()
}

/// MD5 digest (RFC 1321), as Go's `crypto/md5`.
pub fn md5(data: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4294967296.0) as u32)
        .collect();
    let (mut a0, mut b0, mut c0, mut d0) =
        (0x67452301u32, 0xefcdab89u32, 0x98badcfeu32, 0x10325476u32);
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_le_bytes());
    for chunk in msg.chunks_exact(64) {
        let m: Vec<u32> = chunk
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        a0 = a0.wrapping_add(a);
        b0 = b0.wrapping_add(b);
        c0 = c0.wrapping_add(c);
        d0 = d0.wrapping_add(d);
    }
    let mut out = [0u8; 16];
    out[0..4].copy_from_slice(&a0.to_le_bytes());
    out[4..8].copy_from_slice(&b0.to_le_bytes());
    out[8..12].copy_from_slice(&c0.to_le_bytes());
    out[12..16].copy_from_slice(&d0.to_le_bytes());
    out
}

/// Lower-case hex, as Go's `hex.EncodeToString`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn ptr_str(out: &mut String, ty: &str, v: Option<&str>) {
    out.push('(');
    out.push_str(ty);
    out.push(')');
    out.push_str(v.unwrap_or("<nil>"));
}

/// Spew body of a discovery/v1 `EndpointPort` (no leading type).
fn spew_discovery_port_body(out: &mut String, p: &discovery::EndpointPort) {
    out.push_str("{Name:");
    ptr_str(out, "*string", p.name.as_deref());
    out.push_str(" Protocol:");
    ptr_str(out, "*v1.Protocol", p.protocol.as_deref());
    out.push_str(" Port:");
    let port = p.port.map(|n| n.to_string());
    ptr_str(out, "*int32", port.as_deref());
    out.push_str(" AppProtocol:");
    ptr_str(out, "*string", p.app_protocol.as_deref());
    out.push('}');
}

/// `dump.ForHash(discovery.EndpointPort)`.
pub fn spew_discovery_port(p: &discovery::EndpointPort) -> String {
    let mut s = String::from("(v1.EndpointPort)");
    spew_discovery_port_body(&mut s, p);
    s
}

/// `dump.ForHash([]discovery.EndpointPort)` for a non-nil list.
pub fn spew_discovery_ports(ports: &[discovery::EndpointPort]) -> String {
    let mut s = String::from("([]v1.EndpointPort)[");
    for (i, p) in ports.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        spew_discovery_port_body(&mut s, p);
    }
    s.push(']');
    s
}

/// Sorts EndpointSlice ports as upstream's `NewPortMapKey` does (by the hex
/// FNV-128a of each port's dump) and returns the port-map key of the list.
pub fn sort_ports_and_key(ports: &mut [discovery::EndpointPort]) -> String {
    ports.sort_by_cached_key(|p| hex(&fnv128a(spew_discovery_port(p).as_bytes())));
    hex(&fnv128a(spew_discovery_ports(ports).as_bytes()))
}

fn spew_core_port_body(out: &mut String, p: &core::EndpointPort) {
    out.push_str("{Name:(string)");
    out.push_str(p.name.as_deref().unwrap_or(""));
    out.push_str(" Port:(int32)");
    out.push_str(&p.port.to_string());
    out.push_str(" Protocol:(v1.Protocol)");
    out.push_str(p.protocol.as_deref().unwrap_or(""));
    out.push_str(" AppProtocol:");
    ptr_str(out, "*string", p.app_protocol.as_deref());
    out.push('}');
}

/// `DeepHashObject` dump of a core/v1 `EndpointPort`.
pub fn spew_core_port(p: &core::EndpointPort) -> String {
    let mut s = String::from("(v1.EndpointPort)");
    spew_core_port_body(&mut s, p);
    s
}

fn spew_core_address_body(out: &mut String, a: &core::EndpointAddress) {
    out.push_str("{IP:(string)");
    out.push_str(&a.ip);
    out.push_str(" Hostname:(string)");
    out.push_str(a.hostname.as_deref().unwrap_or(""));
    out.push_str(" NodeName:");
    ptr_str(out, "*string", a.node_name.as_deref());
    out.push_str(" TargetRef:(*v1.ObjectReference)");
    match &a.target_ref {
        None => out.push_str("<nil>"),
        Some(r) => {
            let f = |o: &Option<String>| o.clone().unwrap_or_default();
            let _ = write!(
                out,
                "{{Kind:(string){} Namespace:(string){} Name:(string){} UID:(types.UID){} APIVersion:(string){} ResourceVersion:(string){} FieldPath:(string){}}}",
                f(&r.kind),
                f(&r.namespace),
                f(&r.name),
                f(&r.uid),
                f(&r.api_version),
                f(&r.resource_version),
                f(&r.field_path)
            );
        }
    }
    out.push('}');
}

fn spew_core_addresses(out: &mut String, addrs: Option<&Vec<core::EndpointAddress>>) {
    out.push_str("([]v1.EndpointAddress)");
    match addrs {
        None => out.push_str("<nil>"),
        Some(v) => {
            out.push('[');
            for (i, a) in v.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                spew_core_address_body(out, a);
            }
            out.push(']');
        }
    }
}

/// `DeepHashObject` dump of a core/v1 `EndpointSubset`.
pub fn spew_core_subset(s: &core::EndpointSubset) -> String {
    let mut out = String::from("(v1.EndpointSubset){Addresses:");
    spew_core_addresses(&mut out, s.addresses.as_ref());
    out.push_str(" NotReadyAddresses:");
    spew_core_addresses(&mut out, s.not_ready_addresses.as_ref());
    out.push_str(" Ports:([]v1.EndpointPort)");
    match &s.ports {
        None => out.push_str("<nil>"),
        Some(v) => {
            out.push('[');
            for (i, p) in v.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                spew_core_port_body(&mut out, p);
            }
            out.push(']');
        }
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_vectors() {
        assert_eq!(hex(&md5(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex(&md5(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            hex(&md5(b"The quick brown fox jumps over the lazy dog")),
            "9e107d9d372bb6826bd81d3542a419d6"
        );
        let digits = "1234567890".repeat(8);
        assert_eq!(
            hex(&md5(digits.as_bytes())),
            "57edf4a22be3c955ac49da2e2107b67a"
        );
    }

    #[test]
    fn fnv128a_vectors() {
        // Reference values of the FNV-1a 128-bit function.
        assert_eq!(hex(&fnv128a(b"")), "6c62272e07bb014262b821756295c58d");
        assert_eq!(hex(&fnv128a(b"a")), "d228cb696f1a8caf78912b704e4a8964");
    }

    #[test]
    fn discovery_port_dump_shape() {
        let p = discovery::EndpointPort {
            name: Some("http".into()),
            port: Some(80),
            protocol: Some("TCP".into()),
            app_protocol: None,
        };
        assert_eq!(
            spew_discovery_port(&p),
            "(v1.EndpointPort){Name:(*string)http Protocol:(*v1.Protocol)TCP Port:(*int32)80 AppProtocol:(*string)<nil>}"
        );
    }
}
