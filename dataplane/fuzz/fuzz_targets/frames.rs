//! Fuzz target: arbitrary bytes → `announce::frames::parse_request` → `answer` / `announcement`.
//!
//! Run from `dataplane/` (cargo-fuzz needs nightly flags):
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run frames -- -max_total_time=600`
//! (or `cargo +nightly fuzz run frames -- -max_total_time=600`). Seeds: `python3 make_seeds.py` writes them to `corpus/frames/`.
//!
//! Asserts: nothing panics; a parsed request never comes from our own MAC; its answer is an
//! Ethernet frame from our MAC of the request's ethertype (ARP reply for ARP, Neighbour
//! Advertisement for a solicitation) addressed back to the requester, with a verifying ICMPv6
//! checksum for an advertisement; and neither the answer nor the take-over announcement of the
//! target is itself parsed as a request by another node (an answer must not trigger an answer).
#![no_main]

use std::net::Ipv6Addr;

use dataplane::announce::frames::{announcement, answer, multicast_mac, parse_request, Request};
use libfuzzer_sys::fuzz_target;
use pnet_base::MacAddr;
use pnet_packet::arp::{ArpOperations, ArpPacket};
use pnet_packet::ethernet::{EtherTypes, EthernetPacket};
use pnet_packet::icmpv6::ndp::{NeighborAdvertFlags, NeighborAdvertPacket};
use pnet_packet::icmpv6::{self, Icmpv6Code, Icmpv6Packet, Icmpv6Types};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv6::Ipv6Packet;
use pnet_packet::Packet;

/// The MAC of the node running the parser.
const OWN: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x01);
/// Another node on the same link that receives our frames.
const OTHER: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x03);
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

fuzz_target!(|data: &[u8]| {
    let Some(req) = parse_request(data, OWN) else {
        return;
    };
    let received = EthernetPacket::new(data).expect("a request is an Ethernet frame");
    assert_ne!(received.get_source(), OWN, "own frame parsed as a request");

    let reply = answer(&req, OWN);
    let eth = EthernetPacket::new(&reply).expect("answer is an Ethernet frame");
    assert_eq!(eth.get_source(), OWN, "answer not from our MAC");
    let requester = match &req {
        Request::Arp {
            target,
            sender_mac,
            sender_ip,
        } => {
            assert_eq!(
                eth.get_ethertype(),
                EtherTypes::Arp,
                "ARP answered with {eth:?}"
            );
            assert_eq!(
                eth.get_destination(),
                *sender_mac,
                "ARP reply not unicast back"
            );
            let arp = ArpPacket::new(eth.payload()).expect("answer carries an ARP packet");
            assert_eq!(arp.get_operation(), ArpOperations::Reply);
            assert_eq!(arp.get_sender_hw_addr(), OWN);
            assert_eq!(arp.get_sender_proto_addr(), *target);
            assert_eq!(arp.get_target_hw_addr(), *sender_mac);
            assert_eq!(arp.get_target_proto_addr(), *sender_ip);
            *sender_mac
        }
        Request::Solicit {
            target,
            source_mac,
            source,
        } => {
            assert!(
                !target.is_multicast(),
                "solicitation for multicast {target}"
            );
            assert_eq!(
                eth.get_ethertype(),
                EtherTypes::Ipv6,
                "NS answered with {eth:?}"
            );
            let (dst, dst_mac, flags) = if source.is_unspecified() {
                (
                    ALL_NODES,
                    multicast_mac(ALL_NODES),
                    NeighborAdvertFlags::Override,
                )
            } else {
                (
                    *source,
                    *source_mac,
                    NeighborAdvertFlags::Override | NeighborAdvertFlags::Solicited,
                )
            };
            assert_eq!(eth.get_destination(), dst_mac);
            let ip = Ipv6Packet::new(eth.payload()).expect("answer carries an IPv6 packet");
            assert_eq!(ip.get_version(), 6);
            assert_eq!(ip.get_next_header(), IpNextHeaderProtocols::Icmpv6);
            assert_eq!(ip.get_hop_limit(), 255);
            assert_eq!(usize::from(ip.get_payload_length()), ip.payload().len());
            assert_eq!((ip.get_source(), ip.get_destination()), (*target, dst));
            let icmp = Icmpv6Packet::new(ip.payload()).expect("answer carries ICMPv6");
            assert_eq!(icmp.get_icmpv6_type(), Icmpv6Types::NeighborAdvert);
            assert_eq!(icmp.get_icmpv6_code(), Icmpv6Code(0));
            assert_eq!(
                icmpv6::checksum(&icmp, target, &dst),
                icmp.get_checksum(),
                "NA checksum does not verify"
            );
            let na = NeighborAdvertPacket::new(ip.payload()).expect("answer is an NA");
            assert_eq!(na.get_target_addr(), *target);
            assert_eq!(na.get_flags(), flags);
            // One Target Link-Layer Address option carrying our MAC.
            let opt = &ip.payload()[24..];
            assert_eq!(
                (opt.len(), opt[0], opt[1]),
                (8, 2, 1),
                "TLLA option {opt:02x?}"
            );
            assert_eq!(&opt[2..], &OWN.octets());
            *source_mac
        }
    };

    // An answer must not trigger another answer: not at a bystander, not at the requester.
    for mac in [OTHER, requester] {
        assert_eq!(
            parse_request(&reply, mac),
            None,
            "answer {reply:02x?} parsed as a request by {mac}"
        );
    }
    // Nor does the take-over announcement of the requested address.
    let announce = announcement(req.target(), OWN);
    for mac in [OTHER, requester] {
        assert_eq!(
            parse_request(&announce, mac),
            None,
            "announcement {announce:02x?} parsed as a request by {mac}"
        );
    }
});
