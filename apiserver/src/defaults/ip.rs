//! IP address and CIDR checks with kube-apiserver's current (strict) rules and messages, as
//! apimachinery's `IsValidIP` / `IsValidCIDR` apply them to fields that never accepted the
//! legacy forms (IPAddress names, ServiceCIDR ranges).
//!
//! Upstream first parses "sloppily" (the pre-Go-1.17 parser: IPv4 octets and IPv6 groups may
//! carry leading zeros) to tell a malformed value from one that is merely written in a
//! forbidden form, then parses strictly. A value that only the sloppy parser accepts has
//! leading zeros; a strict parse that yields an IPv4-mapped IPv6 address is refused too; a
//! value that passes both must still be spelled canonically (lower case, RFC 5952
//! compression, no host bits in a CIDR).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::Value;

use crate::status::FieldError;

const INVALID_IP: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";
const INVALID_CIDR: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

/// An IP family, as upstream derives it from a (sloppily parsed) value: IPv4-mapped IPv6
/// addresses count as IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

/// Strip leading zeros from a run of digits, keeping at least one digit.
fn trim_zeros(s: &str) -> &str {
    let t = s.trim_start_matches('0');
    if t.is_empty() {
        &s[s.len() - 1..]
    } else {
        t
    }
}

/// Dotted-quad IPv4 where octets may carry leading zeros (read as decimal).
fn sloppy_v4(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (o, p) in octets.iter_mut().zip(&parts) {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits = trim_zeros(p);
        if digits.len() > 3 {
            return None;
        }
        *o = digits.parse().ok()?;
    }
    Some(Ipv4Addr::from(octets))
}

/// IPv6 where groups may carry leading zeros (and so more than four hex digits) and an
/// embedded IPv4 tail may too. Rewritten without the zeros, then parsed by the standard parser.
fn sloppy_v6(s: &str) -> Option<Ipv6Addr> {
    let pieces: Vec<&str> = s.split(':').collect();
    let last = pieces.len() - 1;
    let mut out = Vec::with_capacity(pieces.len());
    for (i, p) in pieces.iter().enumerate() {
        if p.contains('.') {
            if i != last {
                return None;
            }
            out.push(sloppy_v4(p)?.to_string());
        } else if p.is_empty() {
            out.push(String::new());
        } else {
            if !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let digits = trim_zeros(p);
            if digits.len() > 4 {
                return None;
            }
            out.push(digits.to_string());
        }
    }
    out.join(":").parse().ok()
}

/// The lenient parse upstream uses to decide whether a value is an IP at all.
fn sloppy_ip(s: &str) -> Option<IpAddr> {
    if s.contains(':') {
        sloppy_v6(s).map(IpAddr::V6)
    } else {
        sloppy_v4(s).map(IpAddr::V4)
    }
}

fn is_mapped(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}

fn family(ip: &IpAddr) -> Family {
    match ip {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) if is_mapped(ip) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

/// The messages of upstream's `IsValidIP` for `value` (empty when it is valid).
pub(crate) fn ip_messages(value: &str) -> Vec<String> {
    let Some(ip) = sloppy_ip(value) else {
        return vec![INVALID_IP.into()];
    };
    match value.parse::<IpAddr>() {
        Err(_) => return vec!["must not have leading 0s".into()],
        Ok(strict) if is_mapped(&strict) => {
            return vec!["must not be an IPv4-mapped IPv6 address".into()]
        }
        Ok(_) => {}
    }
    let canonical = ip.to_string();
    if value != canonical {
        return vec![format!("must be in canonical form ({canonical:?})")];
    }
    Vec::new()
}

/// Upstream's `IsValidIP` as field errors at `field`.
pub(crate) fn validate_ip(field: &str, value: &str) -> Vec<FieldError> {
    ip_messages(value)
        .into_iter()
        .map(|m| FieldError::invalid(field, Value::String(value.into()), m))
        .collect()
}

/// A prefix length of decimal digits (leading zeros allowed here), at most `max`.
fn prefix_len(s: &str, max: u8) -> Option<u8> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = trim_zeros(s);
    if digits.len() > 3 {
        return None;
    }
    let n: u16 = digits.parse().ok()?;
    (n <= u16::from(max)).then_some(n as u8)
}

/// `ip` with every bit past the first `len` cleared.
fn masked(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
        }
    }
}

/// The lenient CIDR parse: address (sloppy) and prefix length (leading zeros allowed). The
/// length may reach 32 only for a dotted-quad address, 128 for anything written with colons.
fn sloppy_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = s.split_once('/')?;
    let ip = sloppy_ip(addr)?;
    let max = if addr.contains(':') { 128 } else { 32 };
    Some((ip, prefix_len(len, max)?))
}

/// The strict CIDR parse (Go's `netip.ParsePrefix`): canonical decimal length, strict address.
fn strict_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = s.split_once('/')?;
    let ip: IpAddr = addr.parse().ok()?;
    if len.len() > 1 && len.starts_with('0') {
        return None;
    }
    let max = if ip.is_ipv4() { 32 } else { 128 };
    Some((ip, prefix_len(len, max)?))
}

/// The messages of upstream's `IsValidCIDR` for `value` (empty when it is valid).
pub(crate) fn cidr_messages(value: &str) -> Vec<String> {
    let Some((ip, len)) = sloppy_cidr(value) else {
        return vec![INVALID_CIDR.into()];
    };
    match strict_cidr(value) {
        None => return vec!["must not have leading 0s in IP or prefix length".into()],
        Some((strict, _)) if is_mapped(&strict) => {
            return vec!["must not have an IPv4-mapped IPv6 address".into()]
        }
        Some((strict, len)) if masked(strict, len) != strict => {
            return vec!["must not have bits set beyond the prefix length".into()]
        }
        Some(_) => {}
    }
    let canonical = format!("{}/{len}", masked(ip, len));
    if value != canonical {
        return vec![format!("must be in canonical form ({canonical:?})")];
    }
    Vec::new()
}

/// Upstream's `IsValidCIDR` as field errors at `field`.
pub(crate) fn validate_cidr(field: &str, value: &str) -> Vec<FieldError> {
    cidr_messages(value)
        .into_iter()
        .map(|m| FieldError::invalid(field, Value::String(value.into()), m))
        .collect()
}

/// The family of a CIDR value, `None` when it does not parse even leniently.
pub(crate) fn cidr_family(value: &str) -> Option<Family> {
    sloppy_cidr(value).map(|(ip, _)| family(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(msgs: Vec<String>) -> String {
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        msgs.into_iter().next().unwrap_or_default()
    }

    #[test]
    fn canonical_ips_are_accepted() {
        for ok in [
            "10.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "2001:db8::1",
            "::",
            "::1",
            "fe80::abcd",
            "1:0:0:2::3",
            "2001:db8::1:0:0:1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            assert!(ip_messages(ok).is_empty(), "{ok}: {:?}", ip_messages(ok));
        }
    }

    #[test]
    fn malformed_ips_are_invalid() {
        for bad in [
            "",
            "aaaa",
            "myhost.mydomain",
            "1.2.3",
            "1.2.3.4.5",
            "256.0.0.1",
            "1.2.3.0/24",
            "2001:db8::1::2",
            "12345::",
            "fe80::1%eth0",
            "[::1]",
            " 10.0.0.1",
        ] {
            assert_eq!(one(ip_messages(bad)), INVALID_IP, "{bad:?}");
        }
    }

    #[test]
    fn leading_zeros_and_mapped_addresses_are_refused() {
        assert_eq!(one(ip_messages("010.0.0.1")), "must not have leading 0s");
        assert_eq!(one(ip_messages("1.1.1.01")), "must not have leading 0s");
        assert_eq!(
            one(ip_messages("::ffff:01.2.3.4")),
            "must not have leading 0s"
        );
        // More than four hex digits in a group: only the lenient parser reads it.
        assert_eq!(one(ip_messages("00001::")), "must not have leading 0s");
        assert_eq!(
            one(ip_messages("::ffff:1.1.1.1")),
            "must not be an IPv4-mapped IPv6 address"
        );
        assert_eq!(
            one(ip_messages("::ffff:a01:203")),
            "must not be an IPv4-mapped IPv6 address"
        );
    }

    #[test]
    fn non_canonical_ipv6_is_refused_with_the_canonical_form() {
        assert_eq!(
            one(ip_messages("2001:DB8::1")),
            r#"must be in canonical form ("2001:db8::1")"#
        );
        assert_eq!(
            one(ip_messages("2001:db8:0::1")),
            r#"must be in canonical form ("2001:db8::1")"#
        );
        assert_eq!(
            one(ip_messages("0:0:0:0:0:0:0:0")),
            r#"must be in canonical form ("::")"#
        );
        assert_eq!(
            one(ip_messages("0001:002:03:4::")),
            r#"must be in canonical form ("1:2:3:4::")"#
        );
        assert_eq!(
            one(ip_messages("::1.2.3.4")),
            r#"must be in canonical form ("::102:304")"#
        );
        let errs = validate_ip("metadata.name", "2001:DB8::1");
        assert_eq!(errs[0].field, "metadata.name");
        assert_eq!(errs[0].value, Some(Value::String("2001:DB8::1".into())));
    }

    #[test]
    fn canonical_cidrs_are_accepted() {
        for ok in [
            "10.0.0.0/8",
            "0.0.0.0/0",
            "192.168.1.0/24",
            "10.0.0.1/32",
            "2001:db8::/64",
            "::/0",
            "fd00:10:96::/112",
            "2001:db8::1/128",
        ] {
            assert!(
                cidr_messages(ok).is_empty(),
                "{ok}: {:?}",
                cidr_messages(ok)
            );
        }
    }

    #[test]
    fn malformed_cidrs_are_invalid() {
        for bad in [
            "",
            "bad cidr",
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "2001:db8::/129",
            "10.0.0.0/8/8",
            "fe80::%eth0/64",
            "2001:db8::1::/64",
        ] {
            assert_eq!(one(cidr_messages(bad)), INVALID_CIDR, "{bad:?}");
        }
    }

    #[test]
    fn cidr_strictness_rules() {
        let zeros = "must not have leading 0s in IP or prefix length";
        assert_eq!(one(cidr_messages("010.0.0.0/8")), zeros);
        assert_eq!(one(cidr_messages("10.0.0.0/08")), zeros);
        assert_eq!(one(cidr_messages("2001:db8::/064")), zeros);
        assert_eq!(
            one(cidr_messages("::ffff:10.0.0.0/104")),
            "must not have an IPv4-mapped IPv6 address"
        );
        let bits = "must not have bits set beyond the prefix length";
        assert_eq!(one(cidr_messages("10.0.0.1/8")), bits);
        assert_eq!(one(cidr_messages("2001:db8::1/64")), bits);
        assert_eq!(
            one(cidr_messages("2001:DB8::/64")),
            r#"must be in canonical form ("2001:db8::/64")"#
        );
        assert_eq!(
            one(cidr_messages("2001:db8:0:0::/64")),
            r#"must be in canonical form ("2001:db8::/64")"#
        );
    }

    #[test]
    fn families() {
        assert_eq!(cidr_family("10.0.0.0/8"), Some(Family::V4));
        assert_eq!(cidr_family("010.0.0.1/8"), Some(Family::V4));
        assert_eq!(cidr_family("2001:db8::/64"), Some(Family::V6));
        assert_eq!(cidr_family("::ffff:10.0.0.0/104"), Some(Family::V4));
        assert_eq!(cidr_family("nope"), None);
    }
}
