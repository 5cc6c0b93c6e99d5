//! Raw-IP SCTP sockets shared by the server and the client (no in-kernel SCTP needed).

use std::io;
use std::net::{IpAddr, SocketAddr};

use testkit::netns::sctp::{self};
use tokio::net::UdpSocket;

/// A raw IP socket for protocol 132, bound to `ip`, usable through tokio's datagram API
/// (recvfrom / sendto / connect are the same system calls for raw sockets).
pub(crate) fn raw_sctp_socket(ip: IpAddr) -> io::Result<UdpSocket> {
    let domain = if ip.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(
        domain,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(sctp::IPPROTO_SCTP)),
    )?;
    socket.bind(&SocketAddr::new(ip, 0).into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(std::net::UdpSocket::from(socket))
}

/// Splits what a raw socket returned into (source IP, destination IP, SCTP packet). IPv4 raw
/// sockets include the IP header; IPv6 ones do not, so the destination is the bound address.
pub(crate) fn raw_payload(
    buf: &[u8],
    from: SocketAddr,
    bound: IpAddr,
) -> Option<(IpAddr, IpAddr, &[u8])> {
    if bound.is_ipv4() {
        let (src, dst, payload) = sctp::split_ipv4(buf)?;
        Some((src.into(), dst.into(), payload))
    } else {
        Some((from.ip(), bound, buf))
    }
}

pub(crate) fn nonzero_tag() -> u32 {
    rand::random::<u32>().max(1)
}
