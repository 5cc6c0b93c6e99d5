//! Just enough SCTP (RFC 9260) to answer an association attempt from user space.
//!
//! The CI kernel has no in-kernel SCTP (`CONFIG_IP_SCTP` is off) but does track and NAT SCTP
//! (`CONFIG_NF_CT_PROTO_SCTP`). `svcnet-echo` therefore speaks SCTP over raw IP sockets
//! (protocol 132): the client sends an INIT, the server answers with an INIT-ACK whose State
//! Cookie carries the JSON reply, or with an ABORT for a port it does not serve (what a real
//! SCTP stack does for a closed port). These are real SCTP packets with valid CRC32c checksums,
//! so conntrack follows the handshake (CLOSED → COOKIE_WAIT) and DNAT / un-DNAT them exactly as
//! it would for a kernel SCTP endpoint. The association is never completed (no COOKIE-ECHO).

use std::net::Ipv4Addr;

/// IP protocol number of SCTP.
pub const IPPROTO_SCTP: i32 = 132;

const CHUNK_INIT: u8 = 1;
const CHUNK_INIT_ACK: u8 = 2;
const CHUNK_ABORT: u8 = 6;
const PARAM_STATE_COOKIE: u16 = 7;

/// CRC32c (Castagnoli), as SCTP uses it.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The SCTP common header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Verification tag.
    pub vtag: u32,
}

/// The first chunk of a packet, as far as the echo protocol cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// INIT with its initiate tag.
    Init {
        /// The sender's initiate tag (the vtag the peer must use).
        tag: u32,
    },
    /// INIT-ACK with its initiate tag and State Cookie.
    InitAck {
        /// The responder's initiate tag.
        tag: u32,
        /// The State Cookie parameter's value (the echo server's JSON reply).
        cookie: Vec<u8>,
    },
    /// ABORT.
    Abort,
    /// Any other chunk type.
    Other(u8),
}

fn push_chunk(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    let len = u16::try_from(4 + body.len()).unwrap_or(u16::MAX);
    out.push(kind);
    out.push(0); // flags (ABORT: T bit clear, the vtag is the peer's initiate tag)
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn init_body(tag: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&tag.to_be_bytes());
    b.extend_from_slice(&65535u32.to_be_bytes()); // a_rwnd
    b.extend_from_slice(&1u16.to_be_bytes()); // outbound streams
    b.extend_from_slice(&1u16.to_be_bytes()); // max inbound streams
    b.extend_from_slice(&tag.to_be_bytes()); // initial TSN
    b
}

/// Serialises a packet with one chunk and a correct checksum.
pub fn encode(header: &Header, chunk: &Chunk) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&header.src_port.to_be_bytes());
    out.extend_from_slice(&header.dst_port.to_be_bytes());
    out.extend_from_slice(&header.vtag.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    match chunk {
        Chunk::Init { tag } => push_chunk(&mut out, CHUNK_INIT, &init_body(*tag)),
        Chunk::InitAck { tag, cookie } => {
            let mut body = init_body(*tag);
            let plen = u16::try_from(4 + cookie.len()).unwrap_or(u16::MAX);
            body.extend_from_slice(&PARAM_STATE_COOKIE.to_be_bytes());
            body.extend_from_slice(&plen.to_be_bytes());
            body.extend_from_slice(cookie);
            push_chunk(&mut out, CHUNK_INIT_ACK, &body);
        }
        Chunk::Abort => push_chunk(&mut out, CHUNK_ABORT, &[]),
        Chunk::Other(kind) => push_chunk(&mut out, *kind, &[]),
    }
    // The CRC is transmitted in little-endian byte order (RFC 9260 appendix A, as Linux does).
    let crc = crc32c(&out);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Parses a packet (starting at the SCTP header). Returns `None` for short or corrupt packets
/// (bad checksum).
pub fn decode(pkt: &[u8]) -> Option<(Header, Chunk)> {
    let header = Header {
        src_port: be16(pkt, 0)?,
        dst_port: be16(pkt, 2)?,
        vtag: be32(pkt, 4)?,
    };
    let sent = u32::from_le_bytes(pkt.get(8..12)?.try_into().ok()?);
    let mut zeroed = pkt.to_vec();
    zeroed[8..12].copy_from_slice(&[0; 4]);
    if crc32c(&zeroed) != sent {
        return None;
    }
    let kind = *pkt.get(12)?;
    let len = usize::from(be16(pkt, 14)?);
    let chunk = pkt.get(12..12 + len)?;
    let chunk = match kind {
        CHUNK_INIT => Chunk::Init {
            tag: be32(chunk, 4)?,
        },
        CHUNK_INIT_ACK => {
            let tag = be32(chunk, 4)?;
            // Parameters follow the 20-byte fixed part; find the State Cookie.
            let mut at = 20;
            let mut cookie = None;
            while at + 4 <= chunk.len() {
                let ptype = be16(chunk, at)?;
                let plen = usize::from(be16(chunk, at + 2)?);
                if plen < 4 {
                    return None;
                }
                if ptype == PARAM_STATE_COOKIE {
                    cookie = Some(chunk.get(at + 4..at + plen)?.to_vec());
                    break;
                }
                at += plen.div_ceil(4) * 4;
            }
            Chunk::InitAck {
                tag,
                cookie: cookie?,
            }
        }
        CHUNK_ABORT => Chunk::Abort,
        other => Chunk::Other(other),
    };
    Some((header, chunk))
}

/// Splits what an IPv4 raw socket returns into (source, destination, IP payload).
pub fn split_ipv4(pkt: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, &[u8])> {
    let first = *pkt.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    let src: [u8; 4] = pkt.get(12..16)?.try_into().ok()?;
    let dst: [u8; 4] = pkt.get(16..20)?.try_into().ok()?;
    Some((src.into(), dst.into(), pkt.get(ihl..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn packets_round_trip() {
        let h = Header {
            src_port: 40000,
            dst_port: 8080,
            vtag: 0,
        };
        for chunk in [
            Chunk::Init { tag: 0xdead_beef },
            Chunk::InitAck {
                tag: 7,
                cookie: br#"{"pod":"a"}"#.to_vec(),
            },
            Chunk::Abort,
        ] {
            let pkt = encode(&h, &chunk);
            assert!(pkt.len().is_multiple_of(4));
            assert_eq!(decode(&pkt), Some((h, chunk)));
        }
    }

    #[test]
    fn corrupt_or_short_packets_are_rejected() {
        let mut pkt = encode(
            &Header {
                src_port: 1,
                dst_port: 2,
                vtag: 3,
            },
            &Chunk::Init { tag: 9 },
        );
        assert!(decode(&pkt[..10]).is_none());
        pkt[20] ^= 1;
        assert!(
            decode(&pkt).is_none(),
            "checksum must catch the flipped bit"
        );
        assert!(decode(&[]).is_none());
    }

    #[test]
    fn ipv4_header_is_split_off() {
        let mut pkt = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 132, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        pkt.extend_from_slice(b"payload");
        let (src, dst, rest) = split_ipv4(&pkt).unwrap();
        assert_eq!(
            (src, dst),
            (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
        );
        assert_eq!(rest, b"payload");
        assert!(split_ipv4(&[0x60, 0, 0]).is_none());
    }
}
