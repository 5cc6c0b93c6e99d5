//! Pure ARP and NDP frames: which received frames ask for an address this node announces, the
//! answer to send back, and the unsolicited announcements sent when a node takes an address over.
//!
//! Parsing and building go through `pnet_packet`'s bounds-checked views; nothing here touches a
//! socket, so every rule below is unit-tested and the parser is fuzzed with arbitrary bytes.
//!
//! Rules (RFC 826, RFC 5227, RFC 4861):
//! * An ARP request (Ethernet/IPv4 only) whose target protocol address is announced gets a unicast
//!   ARP reply from our MAC; that includes probes (sender address `0.0.0.0`), which is how a
//!   duplicate-address check learns the address is in use. Frames we sent ourselves are ignored.
//! * A Neighbour Solicitation (hop limit 255, ICMPv6 code 0, no extension headers) whose target is
//!   announced gets a Neighbour Advertisement with the Solicited and Override flags and our MAC in
//!   a Target Link-Layer Address option, sent to the soliciting address, or to all-nodes with the
//!   Solicited flag clear when the solicitation came from `::` (duplicate address detection).
//! * Take-over announcements: a gratuitous ARP request (sender and target both the address,
//!   broadcast) and an unsolicited Neighbour Advertisement to all-nodes with Override set.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pnet_base::MacAddr;
use pnet_packet::arp::{ArpHardwareTypes, ArpOperations, ArpPacket, MutableArpPacket};
use pnet_packet::ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket};
use pnet_packet::icmpv6::ndp::{
    MutableNeighborAdvertPacket, NdpOptionTypes, NeighborAdvertFlags, NeighborSolicitPacket,
};
use pnet_packet::icmpv6::{self, Icmpv6Code, Icmpv6Packet, Icmpv6Types};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv6::{Ipv6Packet, MutableIpv6Packet};
use pnet_packet::Packet;

const ETH_HEADER: usize = 14;
const ARP_LEN: usize = 28;
const IPV6_HEADER: usize = 40;
/// Neighbour Advertisement with one 8-byte Target Link-Layer Address option.
const NA_LEN: usize = 24 + 8;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// A request for an announced address, as parsed from a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// ARP request: who has `target`? Tell `sender_ip` at `sender_mac`.
    Arp {
        /// The address asked for.
        target: Ipv4Addr,
        /// Requester's hardware address.
        sender_mac: MacAddr,
        /// Requester's protocol address (`0.0.0.0` for a probe).
        sender_ip: Ipv4Addr,
    },
    /// Neighbour Solicitation for `target` from `source` (`::` during duplicate address detection).
    Solicit {
        /// The address asked for.
        target: Ipv6Addr,
        /// Ethernet source of the solicitation.
        source_mac: MacAddr,
        /// IPv6 source of the solicitation.
        source: Ipv6Addr,
    },
}

impl Request {
    /// The address the request asks for.
    pub fn target(&self) -> IpAddr {
        match self {
            Request::Arp { target, .. } => IpAddr::V4(*target),
            Request::Solicit { target, .. } => IpAddr::V6(*target),
        }
    }
}

/// Parses a received Ethernet frame into an address request; anything else (other protocols,
/// replies, malformed or truncated frames, frames from `own_mac`) is `None`.
pub fn parse_request(frame: &[u8], own_mac: MacAddr) -> Option<Request> {
    let eth = EthernetPacket::new(frame)?;
    if eth.get_source() == own_mac {
        return None;
    }
    match eth.get_ethertype() {
        EtherTypes::Arp => parse_arp(eth.payload()),
        EtherTypes::Ipv6 => parse_solicit(eth.payload(), eth.get_source()),
        _ => None,
    }
}

fn parse_arp(payload: &[u8]) -> Option<Request> {
    let arp = ArpPacket::new(payload)?;
    let ethernet_ipv4 = arp.get_hardware_type() == ArpHardwareTypes::Ethernet
        && arp.get_protocol_type() == EtherTypes::Ipv4
        && arp.get_hw_addr_len() == 6
        && arp.get_proto_addr_len() == 4;
    if !ethernet_ipv4 || arp.get_operation() != ArpOperations::Request {
        return None;
    }
    let (target, sender_ip) = (arp.get_target_proto_addr(), arp.get_sender_proto_addr());
    // A gratuitous ARP from another host (sender == target) announces, it does not ask.
    if sender_ip == target {
        return None;
    }
    Some(Request::Arp {
        target,
        sender_mac: arp.get_sender_hw_addr(),
        sender_ip,
    })
}

fn parse_solicit(payload: &[u8], source_mac: MacAddr) -> Option<Request> {
    let ip = Ipv6Packet::new(payload)?;
    if ip.get_next_header() != IpNextHeaderProtocols::Icmpv6 || ip.get_hop_limit() != 255 {
        return None;
    }
    let len = usize::from(ip.get_payload_length());
    let body = ip.payload().get(..len)?;
    let icmp = Icmpv6Packet::new(body)?;
    if icmp.get_icmpv6_type() != Icmpv6Types::NeighborSolicit
        || icmp.get_icmpv6_code() != Icmpv6Code(0)
        || body.len() < 24
    {
        return None;
    }
    let source = ip.get_source();
    if icmpv6::checksum(&icmp, &source, &ip.get_destination()) != icmp.get_checksum() {
        return None;
    }
    let ns = NeighborSolicitPacket::new(body)?;
    let target = ns.get_target_addr();
    if target.is_multicast() {
        return None;
    }
    Some(Request::Solicit {
        target,
        source_mac,
        source,
    })
}

/// The frame answering `req` from `own_mac` (the caller has checked that the target is ours).
pub fn answer(req: &Request, own_mac: MacAddr) -> Vec<u8> {
    match req {
        Request::Arp {
            target,
            sender_mac,
            sender_ip,
        } => arp_frame(
            own_mac,
            *sender_mac,
            ArpOperations::Reply,
            (*target, *sender_mac, *sender_ip),
        ),
        Request::Solicit {
            target,
            source_mac,
            source,
        } => {
            if source.is_unspecified() {
                advert(own_mac, *target, ALL_NODES, multicast_mac(ALL_NODES), false)
            } else {
                advert(own_mac, *target, *source, *source_mac, true)
            }
        }
    }
}

/// The unsolicited announcement of `ip` from `own_mac`: a gratuitous ARP request for IPv4, an
/// unsolicited Neighbour Advertisement (Override) to all-nodes for IPv6.
pub fn announcement(ip: IpAddr, own_mac: MacAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => arp_frame(
            own_mac,
            MacAddr::broadcast(),
            ArpOperations::Request,
            (v4, MacAddr::zero(), v4),
        ),
        IpAddr::V6(v6) => advert(own_mac, v6, ALL_NODES, multicast_mac(ALL_NODES), false),
    }
}

/// The Ethernet multicast address of an IPv6 multicast group (RFC 2464 § 7).
pub fn multicast_mac(group: Ipv6Addr) -> MacAddr {
    let o = group.octets();
    MacAddr::new(0x33, 0x33, o[12], o[13], o[14], o[15])
}

/// The solicited-node multicast group of `ip` (RFC 4291 § 2.7.1), where solicitations for it go.
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// An Ethernet frame carrying an ARP packet; `addrs` is (sender IP, target MAC, target IP), the
/// sender MAC is always ours.
fn arp_frame(
    own_mac: MacAddr,
    dst: MacAddr,
    op: pnet_packet::arp::ArpOperation,
    addrs: (Ipv4Addr, MacAddr, Ipv4Addr),
) -> Vec<u8> {
    let mut buf = vec![0u8; ETH_HEADER + ARP_LEN];
    ethernet_header(&mut buf, own_mac, dst, EtherTypes::Arp);
    if let Some(mut arp) = MutableArpPacket::new(&mut buf[ETH_HEADER..]) {
        arp.set_hardware_type(ArpHardwareTypes::Ethernet);
        arp.set_protocol_type(EtherTypes::Ipv4);
        arp.set_hw_addr_len(6);
        arp.set_proto_addr_len(4);
        arp.set_operation(op);
        arp.set_sender_hw_addr(own_mac);
        arp.set_sender_proto_addr(addrs.0);
        arp.set_target_hw_addr(addrs.1);
        arp.set_target_proto_addr(addrs.2);
    }
    buf
}

/// An Ethernet frame carrying a Neighbour Advertisement for `target` with our MAC as the target
/// link-layer address.
fn advert(
    own_mac: MacAddr,
    target: Ipv6Addr,
    dst: Ipv6Addr,
    dst_mac: MacAddr,
    solicited: bool,
) -> Vec<u8> {
    let mut buf = vec![0u8; ETH_HEADER + IPV6_HEADER + NA_LEN];
    ethernet_header(&mut buf, own_mac, dst_mac, EtherTypes::Ipv6);
    if let Some(mut ip) = MutableIpv6Packet::new(&mut buf[ETH_HEADER..ETH_HEADER + IPV6_HEADER]) {
        ip.set_version(6);
        ip.set_payload_length(NA_LEN as u16);
        ip.set_next_header(IpNextHeaderProtocols::Icmpv6);
        ip.set_hop_limit(255);
        ip.set_source(target);
        ip.set_destination(dst);
    }
    let body = &mut buf[ETH_HEADER + IPV6_HEADER..];
    if let Some(mut na) = MutableNeighborAdvertPacket::new(body) {
        na.set_icmpv6_type(Icmpv6Types::NeighborAdvert);
        na.set_icmpv6_code(Icmpv6Code(0));
        let mut flags = NeighborAdvertFlags::Override;
        if solicited {
            flags |= NeighborAdvertFlags::Solicited;
        }
        na.set_flags(flags);
        na.set_target_addr(target);
    }
    // Target Link-Layer Address option: type 2, length 1 (× 8 bytes), the MAC.
    body[24] = NdpOptionTypes::TargetLLAddr.0;
    body[25] = 1;
    body[26..32].copy_from_slice(&own_mac.octets());
    let sum = Icmpv6Packet::new(body).map(|p| icmpv6::checksum(&p, &target, &dst));
    if let (Some(sum), Some(mut na)) = (sum, MutableNeighborAdvertPacket::new(body)) {
        na.set_checksum(sum);
    }
    buf
}

fn ethernet_header(
    buf: &mut [u8],
    src: MacAddr,
    dst: MacAddr,
    ethertype: pnet_packet::ethernet::EtherType,
) {
    if let Some(mut eth) = MutableEthernetPacket::new(buf) {
        eth.set_destination(dst);
        eth.set_source(src);
        eth.set_ethertype(ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x01);
    const CLIENT: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x02);

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    /// A solicitation as a Linux client sends it: to the solicited-node group, with a Source
    /// Link-Layer Address option, correct checksum.
    fn solicitation(source: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
        let group = solicited_node(target);
        let mut buf = vec![0u8; ETH_HEADER + IPV6_HEADER + 32];
        ethernet_header(&mut buf, CLIENT, multicast_mac(group), EtherTypes::Ipv6);
        {
            let mut ip = MutableIpv6Packet::new(&mut buf[ETH_HEADER..]).unwrap();
            ip.set_version(6);
            ip.set_payload_length(32);
            ip.set_next_header(IpNextHeaderProtocols::Icmpv6);
            ip.set_hop_limit(255);
            ip.set_source(source);
            ip.set_destination(group);
        }
        let body = &mut buf[ETH_HEADER + IPV6_HEADER..];
        body[0] = 135;
        body[8..24].copy_from_slice(&target.octets());
        body[24] = 1;
        body[25] = 1;
        body[26..32].copy_from_slice(&CLIENT.octets());
        let sum = icmpv6::checksum(&Icmpv6Packet::new(body).unwrap(), &source, &group);
        body[2..4].copy_from_slice(&sum.to_be_bytes());
        buf
    }

    #[test]
    fn arp_request_gets_a_unicast_reply_from_our_mac() {
        let req = arp_frame(
            CLIENT,
            MacAddr::broadcast(),
            ArpOperations::Request,
            (v4("192.0.2.1"), MacAddr::zero(), v4("192.0.2.100")),
        );
        let parsed = parse_request(&req, OURS).unwrap();
        assert_eq!(parsed.target(), IpAddr::V4(v4("192.0.2.100")));
        let reply = answer(&parsed, OURS);
        let eth = EthernetPacket::new(&reply).unwrap();
        assert_eq!((eth.get_destination(), eth.get_source()), (CLIENT, OURS));
        let arp = ArpPacket::new(eth.payload()).unwrap();
        assert_eq!(arp.get_operation(), ArpOperations::Reply);
        assert_eq!(arp.get_sender_hw_addr(), OURS);
        assert_eq!(arp.get_sender_proto_addr(), v4("192.0.2.100"));
        assert_eq!(arp.get_target_hw_addr(), CLIENT);
        assert_eq!(arp.get_target_proto_addr(), v4("192.0.2.1"));
    }

    #[test]
    fn probes_are_answered_announcements_and_replies_and_own_frames_are_not() {
        let probe = arp_frame(
            CLIENT,
            MacAddr::broadcast(),
            ArpOperations::Request,
            (Ipv4Addr::UNSPECIFIED, MacAddr::zero(), v4("192.0.2.100")),
        );
        assert!(parse_request(&probe, OURS).is_some());
        let garp = announcement(IpAddr::V4(v4("192.0.2.100")), CLIENT);
        assert_eq!(parse_request(&garp, OURS), None);
        let own = announcement(IpAddr::V4(v4("192.0.2.100")), OURS);
        assert_eq!(parse_request(&own, OURS), None);
        let reply = arp_frame(
            CLIENT,
            OURS,
            ArpOperations::Reply,
            (v4("192.0.2.1"), OURS, v4("192.0.2.100")),
        );
        assert_eq!(parse_request(&reply, OURS), None);
    }

    #[test]
    fn gratuitous_arp_is_a_broadcast_request_for_the_address_itself() {
        let f = announcement(IpAddr::V4(v4("192.0.2.100")), OURS);
        let eth = EthernetPacket::new(&f).unwrap();
        assert_eq!(eth.get_destination(), MacAddr::broadcast());
        let arp = ArpPacket::new(eth.payload()).unwrap();
        assert_eq!(arp.get_operation(), ArpOperations::Request);
        assert_eq!(arp.get_sender_proto_addr(), v4("192.0.2.100"));
        assert_eq!(arp.get_target_proto_addr(), v4("192.0.2.100"));
        assert_eq!(arp.get_sender_hw_addr(), OURS);
    }

    #[test]
    fn solicitation_gets_a_solicited_override_advert_with_valid_checksum() {
        let (client, target) = (v6("fd00::1"), v6("fd00:10::100"));
        let parsed = parse_request(&solicitation(client, target), OURS).unwrap();
        assert_eq!(parsed.target(), IpAddr::V6(target));
        let reply = answer(&parsed, OURS);
        let eth = EthernetPacket::new(&reply).unwrap();
        assert_eq!((eth.get_destination(), eth.get_source()), (CLIENT, OURS));
        let ip = Ipv6Packet::new(eth.payload()).unwrap();
        assert_eq!((ip.get_source(), ip.get_destination()), (target, client));
        assert_eq!(ip.get_hop_limit(), 255);
        let icmp = Icmpv6Packet::new(ip.payload()).unwrap();
        assert_eq!(icmp.get_icmpv6_type(), Icmpv6Types::NeighborAdvert);
        assert_eq!(
            icmpv6::checksum(&icmp, &target, &client),
            icmp.get_checksum()
        );
        let body = ip.payload();
        assert_eq!(
            body[4],
            NeighborAdvertFlags::Solicited | NeighborAdvertFlags::Override
        );
        assert_eq!(&body[8..24], &target.octets());
        assert_eq!(&body[24..26], &[2, 1]);
        assert_eq!(&body[26..32], &OURS.octets());
    }

    #[test]
    fn duplicate_address_detection_is_answered_to_all_nodes_unsolicited() {
        let target = v6("fd00:10::100");
        let parsed = parse_request(&solicitation(Ipv6Addr::UNSPECIFIED, target), OURS).unwrap();
        let reply = answer(&parsed, OURS);
        let eth = EthernetPacket::new(&reply).unwrap();
        assert_eq!(eth.get_destination(), multicast_mac(ALL_NODES));
        let ip = Ipv6Packet::new(eth.payload()).unwrap();
        assert_eq!(ip.get_destination(), ALL_NODES);
        assert_eq!(ip.payload()[4], NeighborAdvertFlags::Override);
    }

    #[test]
    fn bad_solicitations_are_ignored() {
        let (client, target) = (v6("fd00::1"), v6("fd00:10::100"));
        let good = solicitation(client, target);
        let mut hop = good.clone();
        hop[ETH_HEADER + 7] = 64;
        assert_eq!(parse_request(&hop, OURS), None, "hop limit must be 255");
        let mut sum = good.clone();
        sum[ETH_HEADER + IPV6_HEADER + 2] ^= 0xff;
        assert_eq!(parse_request(&sum, OURS), None, "bad checksum");
        let short = &good[..ETH_HEADER + IPV6_HEADER + 10];
        assert_eq!(parse_request(short, OURS), None, "truncated");
        let mut long_len = good.clone();
        long_len[ETH_HEADER + 4] = 0x10;
        assert_eq!(
            parse_request(&long_len, OURS),
            None,
            "payload length past the frame"
        );
        for n in 0..good.len() {
            // Every prefix parses without panicking.
            let _ = parse_request(&good[..n], OURS);
        }
    }

    #[test]
    fn unsolicited_advert_and_multicast_addresses() {
        let ip = v6("fd00:10::1:2345");
        assert_eq!(solicited_node(ip), v6("ff02::1:ff01:2345"));
        assert_eq!(
            multicast_mac(solicited_node(ip)),
            MacAddr::new(0x33, 0x33, 0xff, 0x01, 0x23, 0x45)
        );
        let f = announcement(IpAddr::V6(ip), OURS);
        let eth = EthernetPacket::new(&f).unwrap();
        let pkt = Ipv6Packet::new(eth.payload()).unwrap();
        assert_eq!((pkt.get_source(), pkt.get_destination()), (ip, ALL_NODES));
        let icmp = Icmpv6Packet::new(pkt.payload()).unwrap();
        assert_eq!(
            icmpv6::checksum(&icmp, &ip, &ALL_NODES),
            icmp.get_checksum()
        );
        assert_eq!(pkt.payload()[4], NeighborAdvertFlags::Override);
    }
}
