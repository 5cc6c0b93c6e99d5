//! The ctnetlink messages svcnet-proxy exchanges with the kernel's connection tracker (netlink
//! family `NETLINK_NETFILTER`, subsystem `NFNL_SUBSYS_CTNETLINK`): a dump request for one address
//! family, the flows the dump returns, and delete requests naming a flow by its original tuple.
//! Pure encoding and decoding over byte slices; the socket lives in [`super::conntrack_socket`].
//!
//! Layout: a netlink header (length, type, flags, sequence, port id; host byte order), a 4-byte
//! `nfgenmsg` (family, version 0, resource id 0), then attributes (`nlattr`: 16-bit length
//! including its 4-byte header, 16-bit type whose top two bits are the nested and network-order
//! flags), each padded to 4 bytes. Addresses and ports inside tuples are in network order.
//! Anything malformed (short buffers, lengths past the end, wrong address sizes) is a
//! [`CodecError`], never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::types::Family;

const NLMSG_HDRLEN: usize = 16;
const NFGEN_LEN: usize = 4;
const NLA_HDRLEN: usize = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLA_F_NESTED: u16 = 0x8000;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// IP protocol numbers of the flows svcnet-proxy cleans.
pub const IPPROTO_UDP: u8 = 17;
/// SCTP.
pub const IPPROTO_SCTP: u8 = 132;

/// A malformed message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed ctnetlink message: {0}")]
pub struct CodecError(pub &'static str);

/// One direction of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (0 for protocols without ports).
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

/// A conntrack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    /// IP protocol number.
    pub proto: u8,
    /// As the first packet was sent (before DNAT).
    pub orig: Tuple,
    /// As answers come back (after DNAT its source is the endpoint).
    pub reply: Tuple,
    /// Conntrack zone (0 = default).
    pub zone: u16,
}

/// What one message from the kernel says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A flow of a dump.
    Flow(Flow),
    /// The end of a dump.
    Done {
        /// Sequence number of the request.
        seq: u32,
    },
    /// An acknowledgement (`errno` 0) or an error (`errno` > 0, e.g. 2 = ENOENT) for a request.
    Status {
        /// Sequence number of the request.
        seq: u32,
        /// Positive errno, 0 for success.
        errno: i32,
    },
    /// A message this codec does not use (another message type, or a flow of another shape).
    Other,
}

fn family_byte(f: Family) -> u8 {
    match f {
        Family::Ipv4 => AF_INET,
        Family::Ipv6 => AF_INET6,
    }
}

fn header(buf: &mut Vec<u8>, msg_type: u16, flags: u16, seq: u32, family: u8) {
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by `finish`
    buf.extend_from_slice(&msg_type.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&[family, 0, 0, 0]);
}

fn finish(buf: &mut [u8], start: usize) {
    let len = u32::try_from(buf.len() - start).unwrap_or(u32::MAX);
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn pad(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = u16::try_from(NLA_HDRLEN + payload.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    pad(buf);
}

fn nested(buf: &mut Vec<u8>, kind: u16, body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    body(buf);
    let len = u16::try_from(buf.len() - start).unwrap_or(u16::MAX);
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn tuple(buf: &mut Vec<u8>, kind: u16, t: &Tuple, proto: u8) {
    nested(buf, kind, |b| {
        nested(b, CTA_TUPLE_IP, |b| {
            let (s, d) = if t.src.is_ipv4() {
                (CTA_IP_V4_SRC, CTA_IP_V4_DST)
            } else {
                (CTA_IP_V6_SRC, CTA_IP_V6_DST)
            };
            attr(b, s, &ip_bytes(&t.src));
            attr(b, d, &ip_bytes(&t.dst));
        });
        nested(b, CTA_TUPLE_PROTO, |b| {
            attr(b, CTA_PROTO_NUM, &[proto]);
            attr(b, CTA_PROTO_SRC_PORT, &t.sport.to_be_bytes());
            attr(b, CTA_PROTO_DST_PORT, &t.dport.to_be_bytes());
        });
    });
}

/// A request to dump every conntrack entry of `family`.
pub fn dump_request(family: Family, seq: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(NLMSG_HDRLEN + NFGEN_LEN);
    header(
        &mut buf,
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        family_byte(family),
    );
    finish(&mut buf, 0);
    buf
}

/// Appends to `buf` a request (acknowledged) to delete `flow`, named by its original tuple and
/// zone.
pub fn delete_request(buf: &mut Vec<u8>, flow: &Flow, seq: u32) {
    flow_msg(
        buf,
        flow,
        IPCTNL_MSG_CT_DELETE,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        false,
    );
}

/// A ctnetlink message about `flow`: its original tuple, its reply tuple when `with_reply`, its
/// zone when not the default.
fn flow_msg(buf: &mut Vec<u8>, flow: &Flow, kind: u16, flags: u16, seq: u32, with_reply: bool) {
    let start = buf.len();
    let family = if flow.orig.src.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    };
    header(buf, (NFNL_SUBSYS_CTNETLINK << 8) | kind, flags, seq, family);
    tuple(buf, CTA_TUPLE_ORIG, &flow.orig, flow.proto);
    if with_reply {
        tuple(buf, CTA_TUPLE_REPLY, &flow.reply, flow.proto);
    }
    if flow.zone != 0 {
        attr(buf, CTA_ZONE, &flow.zone.to_be_bytes());
    }
    finish(buf, start);
}

/// Appends a message announcing `flow` as the kernel's dump does (tests and fuzz seeds).
pub fn flow_message(buf: &mut Vec<u8>, flow: &Flow, seq: u32) {
    // NLM_F_MULTI, as the messages of a dump.
    flow_msg(buf, flow, IPCTNL_MSG_CT_NEW, 0x2, seq, true);
}

fn u16_ne(b: &[u8], at: usize) -> Result<u16, CodecError> {
    b.get(at..at + 2)
        .map(|s| u16::from_ne_bytes([s[0], s[1]]))
        .ok_or(CodecError("truncated 16-bit field"))
}

fn u32_ne(b: &[u8], at: usize) -> Result<u32, CodecError> {
    b.get(at..at + 4)
        .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(CodecError("truncated 32-bit field"))
}

/// Iterates over the attributes of `b`: (type without flags, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), CodecError>> {
    std::iter::from_fn(move || {
        if b.len() < NLA_HDRLEN {
            return None;
        }
        let r = (|| {
            let len = usize::from(u16_ne(b, 0)?);
            let kind = u16_ne(b, 2)? & NLA_TYPE_MASK;
            if len < NLA_HDRLEN || len > b.len() {
                return Err(CodecError("attribute length out of bounds"));
            }
            let payload = &b[NLA_HDRLEN..len];
            let next = len.next_multiple_of(4).min(b.len());
            b = &b[next..];
            Ok((kind, payload))
        })();
        if r.is_err() {
            b = &[];
        }
        Some(r)
    })
}

fn ip_of(payload: &[u8]) -> Result<IpAddr, CodecError> {
    match payload.len() {
        4 => Ok(IpAddr::V4(Ipv4Addr::new(
            payload[0], payload[1], payload[2], payload[3],
        ))),
        16 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(payload);
            Ok(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => Err(CodecError("address of the wrong size")),
    }
}

fn be16(payload: &[u8]) -> Result<u16, CodecError> {
    match payload {
        [a, b] => Ok(u16::from_be_bytes([*a, *b])),
        _ => Err(CodecError("16-bit attribute of the wrong size")),
    }
}

/// A tuple and its protocol; `None` when an element is missing.
fn parse_tuple(b: &[u8]) -> Result<Option<(Tuple, u8)>, CodecError> {
    let (mut src, mut dst, mut proto, mut sport, mut dport) = (None, None, None, 0, 0);
    for a in attrs(b) {
        let (kind, payload) = a?;
        match kind {
            CTA_TUPLE_IP => {
                for a in attrs(payload) {
                    let (kind, payload) = a?;
                    match kind {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = Some(ip_of(payload)?),
                        CTA_IP_V4_DST | CTA_IP_V6_DST => dst = Some(ip_of(payload)?),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for a in attrs(payload) {
                    let (kind, payload) = a?;
                    match kind {
                        CTA_PROTO_NUM => proto = payload.first().copied(),
                        CTA_PROTO_SRC_PORT => sport = be16(payload)?,
                        CTA_PROTO_DST_PORT => dport = be16(payload)?,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(match (src, dst, proto) {
        (Some(src), Some(dst), Some(p)) if src.is_ipv4() == dst.is_ipv4() => Some((
            Tuple {
                src,
                dst,
                sport,
                dport,
            },
            p,
        )),
        _ => None,
    })
}

fn parse_flow(b: &[u8]) -> Result<Option<Flow>, CodecError> {
    let (mut orig, mut reply, mut zone) = (None, None, 0);
    for a in attrs(b) {
        let (kind, payload) = a?;
        match kind {
            CTA_TUPLE_ORIG => orig = parse_tuple(payload)?,
            CTA_TUPLE_REPLY => reply = parse_tuple(payload)?,
            CTA_ZONE => zone = be16(payload)?,
            _ => {}
        }
    }
    Ok(match (orig, reply) {
        (Some((o, p)), Some((r, _))) => Some(Flow {
            proto: p,
            orig: o,
            reply: r,
            zone,
        }),
        _ => None,
    })
}

/// Parses every message in `buf` (one `recv` worth).
pub fn parse(buf: &[u8]) -> Result<Vec<Reply>, CodecError> {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len().saturating_sub(at) >= NLMSG_HDRLEN {
        let len = usize::try_from(u32_ne(buf, at)?).unwrap_or(usize::MAX);
        if len < NLMSG_HDRLEN || len > buf.len() - at {
            return Err(CodecError("message length out of bounds"));
        }
        let msg = &buf[at..at + len];
        let kind = u16_ne(msg, 4)?;
        let seq = u32_ne(msg, 8)?;
        let body = &msg[NLMSG_HDRLEN..];
        out.push(match kind {
            NLMSG_DONE => Reply::Done { seq },
            NLMSG_ERROR => {
                let code = body
                    .get(..4)
                    .map(|s| i32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
                    .ok_or(CodecError("truncated error message"))?;
                Reply::Status {
                    seq,
                    errno: code.checked_neg().unwrap_or(i32::MAX),
                }
            }
            k if k >> 8 == NFNL_SUBSYS_CTNETLINK && (k & 0xff) == IPCTNL_MSG_CT_NEW => {
                let attrs = body
                    .get(NFGEN_LEN..)
                    .ok_or(CodecError("truncated nfgenmsg"))?;
                match parse_flow(attrs)? {
                    Some(f) => Reply::Flow(f),
                    None => Reply::Other,
                }
            }
            _ => Reply::Other,
        });
        at += len.next_multiple_of(4).min(buf.len() - at);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(orig: (&str, &str, u16, u16), reply: (&str, &str, u16, u16)) -> Flow {
        let t = |(s, d, sp, dp): (&str, &str, u16, u16)| Tuple {
            src: s.parse().unwrap(),
            dst: d.parse().unwrap(),
            sport: sp,
            dport: dp,
        };
        Flow {
            proto: IPPROTO_UDP,
            orig: t(orig),
            reply: t(reply),
            zone: 0,
        }
    }

    #[test]
    fn dump_request_layout() {
        let b = dump_request(Family::Ipv6, 7);
        assert_eq!(b.len(), 20);
        assert_eq!(u32_ne(&b, 0).unwrap(), 20);
        assert_eq!(u16_ne(&b, 4).unwrap(), 0x101);
        assert_eq!(u16_ne(&b, 6).unwrap(), 0x301);
        assert_eq!(u32_ne(&b, 8).unwrap(), 7);
        assert_eq!(b[16], AF_INET6);
    }

    #[test]
    fn flows_round_trip_in_one_buffer_with_done_and_errors() {
        let a = flow(
            ("10.0.0.1", "10.96.0.10", 40000, 53),
            ("10.244.1.5", "10.0.0.1", 53, 40000),
        );
        let mut b6 = flow(
            ("fd00::1", "fd00:96::10", 40001, 53),
            ("fd00:244::5", "fd00::1", 53, 40001),
        );
        b6.zone = 3;
        let mut buf = Vec::new();
        flow_message(&mut buf, &a, 1);
        flow_message(&mut buf, &b6, 1);
        // NLMSG_DONE and an ENOENT error for seq 9.
        let start = buf.len();
        header(&mut buf, NLMSG_DONE, 0x2, 1, 0);
        finish(&mut buf, start);
        let start = buf.len();
        header(&mut buf, NLMSG_ERROR, 0, 9, 0);
        buf.truncate(buf.len() - 4);
        buf.extend_from_slice(&(-2i32).to_ne_bytes());
        finish(&mut buf, start);
        assert_eq!(
            parse(&buf).unwrap(),
            vec![
                Reply::Flow(a),
                Reply::Flow(b6),
                Reply::Done { seq: 1 },
                Reply::Status { seq: 9, errno: 2 }
            ]
        );
    }

    #[test]
    fn delete_request_names_the_original_tuple() {
        let f = flow(
            ("10.0.0.1", "10.96.0.10", 40000, 53),
            ("10.244.1.5", "10.0.0.1", 53, 40000),
        );
        let mut buf = Vec::new();
        delete_request(&mut buf, &f, 5);
        delete_request(&mut buf, &f, 6);
        let len = u32_ne(&buf, 0).unwrap() as usize;
        assert_eq!(len * 2, buf.len());
        assert_eq!(u16_ne(&buf, 4).unwrap(), 0x102);
        assert_eq!(u16_ne(&buf, 6).unwrap(), NLM_F_REQUEST | NLM_F_ACK);
        let (t, p) = parse_tuple(
            attrs(&buf[20..len])
                .next()
                .unwrap()
                .map(|(k, pl)| {
                    assert_eq!(k, CTA_TUPLE_ORIG);
                    pl
                })
                .unwrap(),
        )
        .unwrap()
        .unwrap();
        assert_eq!((t, p), (f.orig, IPPROTO_UDP));
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic() {
        let f = flow(
            ("10.0.0.1", "10.96.0.10", 1, 2),
            ("10.244.1.5", "10.0.0.1", 2, 1),
        );
        let mut good = Vec::new();
        flow_message(&mut good, &f, 1);
        // Every truncation and every single-byte corruption parses or errs, without panicking.
        for cut in 0..good.len() {
            let _ = parse(&good[..cut]);
        }
        for i in 0..good.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut b = good.clone();
                b[i] = v;
                let _ = parse(&b);
            }
        }
        let mut long = good.clone();
        long[0] = 0xff;
        assert!(parse(&long).is_err());
    }
}
