//! Raw link-layer sockets (`AF_PACKET`) for answering ARP and Neighbour Solicitations, and the
//! interface facts they need (index, MAC, addresses).
//!
//! One socket per interface and protocol: ARP frames (`ETH_P_ARP`, so the kernel hands over ARP
//! only), and IPv6 (`ETH_P_IPV6`) narrowed by a classic BPF filter to ICMPv6 Neighbour
//! Solicitations, so ordinary traffic is never copied to user space. Solicitations go to
//! solicited-node multicast groups; the socket joins the group of each announced address
//! ([`PacketSocket::join`]) so that NICs with multicast filters deliver them.
//!
//! # Safety
//!
//! Besides `libnft`, this is the only module of the crate with `unsafe` code: `bind(2)` with a
//! `sockaddr_ll`, `setsockopt(2)` with a `packet_mreq`, and `getifaddrs(3)`. socket2 owns the
//! descriptor (created, made non-blocking and filtered through its safe API); the unsafe calls pass
//! pointers to fully initialised stack values that outlive the call, with their exact sizes, and
//! the `getifaddrs` list is walked read-only and freed once.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::io;
use std::io::Read;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use pnet_base::MacAddr;
use socket2::{Domain, Protocol, SockFilter, Socket, Type};
use tokio::io::unix::AsyncFd;

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;

/// What a socket receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// ARP frames.
    Arp,
    /// ICMPv6 Neighbour Solicitations.
    Solicit,
}

impl Kind {
    fn ethertype(self) -> u16 {
        match self {
            Kind::Arp => ETH_P_ARP,
            Kind::Solicit => ETH_P_IPV6,
        }
    }

    /// The classic BPF program that keeps only the frames this socket answers.
    fn filter(self) -> Vec<SockFilter> {
        const LDB: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
        const LDH: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
        const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
        const RET: u16 = 0x06; // BPF_RET | BPF_K
        match self {
            // ARP operation (offset 14 + 6) must be 1, a request.
            Kind::Arp => vec![
                SockFilter::new(LDH, 0, 0, 20),
                SockFilter::new(JEQ, 0, 1, 1),
                SockFilter::new(RET, 0, 0, 0xffff),
                SockFilter::new(RET, 0, 0, 0),
            ],
            // IPv6 next header (14 + 6) ICMPv6, ICMPv6 type (14 + 40) 135.
            Kind::Solicit => vec![
                SockFilter::new(LDB, 0, 0, 20),
                SockFilter::new(JEQ, 0, 3, 58),
                SockFilter::new(LDB, 0, 0, 54),
                SockFilter::new(JEQ, 0, 1, 135),
                SockFilter::new(RET, 0, 0, 0xffff),
                SockFilter::new(RET, 0, 0, 0),
            ],
        }
    }
}

/// A link-layer interface of this network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Name (`eth0`).
    pub name: String,
    /// Kernel interface index.
    pub index: u32,
    /// Hardware address.
    pub mac: MacAddr,
    /// Addresses configured on it.
    pub addrs: Vec<IpAddr>,
}

/// Every interface with an Ethernet hardware address (loopback and layer-3 tunnels have none), by
/// name, with its addresses. Read through `getifaddrs(3)` (netlink), so it describes the network
/// namespace of the calling thread.
pub fn interfaces() -> io::Result<BTreeMap<String, Interface>> {
    let mut links: BTreeMap<String, (u32, MacAddr)> = BTreeMap::new();
    let mut addrs: Vec<(String, IpAddr)> = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `head`; checked for failure below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: ifa_addr is non-null and its family says which sockaddr type it points to.
        unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    addrs.push((name, IpAddr::from(sa.sin_addr.s_addr.to_ne_bytes())));
                }
                libc::AF_INET6 => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    addrs.push((name, IpAddr::from(sa.sin6_addr.s6_addr)));
                }
                libc::AF_PACKET => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_ll);
                    let m = sa.sll_addr;
                    let mac = MacAddr::new(m[0], m[1], m[2], m[3], m[4], m[5]);
                    let ethernet = sa.sll_hatype == libc::ARPHRD_ETHER && sa.sll_halen == 6;
                    if let (true, Ok(index)) = (ethernet, u32::try_from(sa.sll_ifindex)) {
                        if mac != MacAddr::zero() {
                            links.insert(name, (index, mac));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed exactly once; no reference outlives it.
    unsafe { libc::freeifaddrs(head) };
    let mut out: BTreeMap<String, Interface> = links
        .into_iter()
        .map(|(name, (index, mac))| {
            let iface = Interface {
                name: name.clone(),
                index,
                mac,
                addrs: Vec::new(),
            };
            (name, iface)
        })
        .collect();
    for (name, ip) in addrs {
        if let Some(i) = out.get_mut(&name) {
            i.addrs.push(ip);
        }
    }
    Ok(out)
}

/// A non-blocking `AF_PACKET` socket bound to one interface, registered with tokio.
pub struct PacketSocket {
    fd: AsyncFd<Socket>,
    index: u32,
}

impl PacketSocket {
    /// Opens the socket of `kind` on the interface with index `index` (inside a tokio runtime).
    pub fn open(index: u32, kind: Kind) -> io::Result<PacketSocket> {
        let proto = kind.ethertype().to_be();
        let socket = Socket::new(
            Domain::PACKET,
            Type::RAW,
            Some(Protocol::from(i32::from(proto))),
        )?;
        socket.attach_filter(&kind.filter())?;
        socket.set_nonblocking(true)?;
        let ifindex = i32::try_from(index)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index"))?;
        // SAFETY: an all-zero sockaddr_ll is a valid value; the fields set are plain integers.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex;
        // SAFETY: `addr` is initialised and lives across the call; the length is its size.
        let rc = unsafe {
            libc::bind(
                socket.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // Registering needs a reactor; say so instead of panicking without one.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other(
                "packet sockets must be opened inside a tokio runtime",
            ));
        }
        // SAFETY: socket2's Socket owns its descriptor until dropped and `as_raw_fd` always
        // returns that descriptor, which is what `register` requires.
        let fd = unsafe { AsyncFd::register(socket) }.map_err(io::Error::from)?;
        Ok(PacketSocket { fd, index })
    }

    /// Receives one frame into `buf`, waiting until one arrives.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|s| (&mut s.get_ref()).read(buf)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends one complete Ethernet frame out of the bound interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let n = self.fd.get_ref().send(frame)?;
        if n != frame.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {n} of {} bytes", frame.len()),
            ));
        }
        Ok(())
    }

    /// Joins (or with `join == false` leaves) the link-layer multicast group `mac`.
    pub fn membership(&self, mac: MacAddr, join: bool) -> io::Result<()> {
        let o = mac.octets();
        let req = libc::packet_mreq {
            mr_ifindex: i32::try_from(self.index)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index"))?,
            mr_type: libc::PACKET_MR_MULTICAST as u16,
            mr_alen: 6,
            mr_address: [o[0], o[1], o[2], o[3], o[4], o[5], 0, 0],
        };
        let op = if join {
            libc::PACKET_ADD_MEMBERSHIP
        } else {
            libc::PACKET_DROP_MEMBERSHIP
        };
        // SAFETY: `req` is initialised and lives across the call; the length is its size.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.get_ref().as_raw_fd(),
                libc::SOL_PACKET,
                op,
                (&req as *const libc::packet_mreq).cast(),
                std::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
