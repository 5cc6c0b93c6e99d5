#!/usr/bin/env python3
"""Writes the seed inputs corpus/frames/seed-* for the `frames` fuzz target and
corpus/ctnetlink/seed-* (conntrack dump messages, an error acknowledgement) for `ctnetlink`.

Run from dataplane/fuzz: `python3 make_seeds.py`. The frames are what a Linux client on the link
sends: an ARP request and an ARP probe (padded to the 60-byte Ethernet minimum, as received off
the wire), a Neighbour Solicitation to the solicited-node group with a Source Link-Layer Address
option, and a duplicate-address-detection solicitation from `::` (no option, RFC 4861 § 4.3).
"""
import ipaddress
import os
import struct

CLIENT = bytes([0x02, 0, 0, 0, 0, 0x02])
BROADCAST = b"\xff" * 6


def eth(dst, src, ethertype, payload, pad=True):
    frame = dst + src + struct.pack("!H", ethertype) + payload
    return frame + b"\0" * (60 - len(frame)) if pad and len(frame) < 60 else frame


def arp_request(sender_ip, target_ip):
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
    arp += CLIENT + ipaddress.IPv4Address(sender_ip).packed
    arp += b"\0" * 6 + ipaddress.IPv4Address(target_ip).packed
    return eth(BROADCAST, CLIENT, 0x0806, arp)


def checksum(src, dst, body):
    pseudo = src + dst + struct.pack("!IxxxB", len(body), 58)
    data = pseudo + body + (b"\0" if len(body) % 2 else b"")
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def solicitation(source, target):
    src = ipaddress.IPv6Address(source).packed
    tgt = ipaddress.IPv6Address(target).packed
    group = ipaddress.IPv6Address("ff02::1:ff00:0").packed[:13] + tgt[13:]
    body = struct.pack("!BBHI", 135, 0, 0, 0) + tgt
    if source != "::":
        body += bytes([1, 1]) + CLIENT
    body = body[:2] + struct.pack("!H", checksum(src, group, body)) + body[4:]
    ip = struct.pack("!IHBB", 6 << 28, len(body), 58, 255) + src + group
    return eth(b"\x33\x33" + group[12:], CLIENT, 0x86DD, ip + body)


SEEDS = {
    "seed-arp-request": arp_request("192.0.2.1", "192.0.2.100"),
    "seed-arp-probe": arp_request("0.0.0.0", "192.0.2.100"),
    "seed-ns": solicitation("fd00::1", "fd00:10::100"),
    "seed-ns-dad": solicitation("::", "fd00:10::100"),
}

def nla(kind, payload, nested=False):
    body = struct.pack("=HH", 4 + len(payload), kind | (0x8000 if nested else 0)) + payload
    return body + b"\0" * (-len(body) % 4)


def tuple_attr(kind, src, dst, sport, dport, proto=17):
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    a, b = (1, 2) if s.version == 4 else (3, 4)
    ip = nla(a, s.packed) + nla(b, d.packed)
    pr = nla(1, bytes([proto])) + nla(2, struct.pack("!H", sport)) + nla(3, struct.pack("!H", dport))
    return nla(kind, nla(1, ip, True) + nla(2, pr, True), True)


def nlmsg(kind, flags, seq, body):
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


def ct_flow(family, orig, reply):
    body = bytes([family, 0, 0, 0]) + tuple_attr(1, *orig) + tuple_attr(2, *reply)
    return nlmsg(0x100, 0x2, 1, body)


CT_SEEDS = {
    "seed-dump-v4": ct_flow(2, ("10.0.0.1", "10.96.0.10", 40000, 53), ("10.244.1.5", "10.0.0.1", 53, 40000))
    + nlmsg(3, 0x2, 1, struct.pack("=i", 0)),
    "seed-dump-v6": ct_flow(10, ("fd00::1", "fd00:96::10", 40000, 53), ("fd00:244::5", "fd00::1", 53, 40000)),
    "seed-ack-enoent": nlmsg(2, 0, 9, struct.pack("=i", -2) + b"\0" * 16),
}


def write(directory, seeds):
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", directory)
    os.makedirs(out, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    write("frames", SEEDS)
    write("ctnetlink", CT_SEEDS)
