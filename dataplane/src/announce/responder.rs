//! Answers ARP requests and Neighbour Solicitations for the addresses this node announces on one
//! interface, and sends the take-over announcements.
//!
//! The set of addresses is replaced as a whole ([`Responder::set`]); the receive loop reads it on
//! every request, so an address stops being answered the moment it is removed. Frames are judged
//! by the pure [`super::frames`] module; this module only moves them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use pnet_base::MacAddr;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;

use super::frames::{self, Request};
use super::packet_socket::{Interface, Kind, PacketSocket};
use crate::error::{Error, Result};

/// Counters of the responders (shared by all interfaces; registered as metrics by the speaker).
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// ARP replies sent.
    pub arp_replies: Counter,
    /// Neighbour Advertisements sent in answer to a solicitation.
    pub nd_replies: Counter,
    /// Unsolicited announcements (gratuitous ARP, unsolicited NA) sent.
    pub announcements: Counter,
    /// Frames that could not be sent.
    pub send_errors: Counter,
}

/// The ARP/NDP responder of one interface.
pub struct Responder {
    iface: Interface,
    arp: PacketSocket,
    nd: PacketSocket,
    addrs: RwLock<BTreeSet<IpAddr>>,
    /// Joined solicited-node groups (each joined once however many addresses map to it).
    groups: Mutex<BTreeMap<MacAddr, usize>>,
    /// Counters, shared with the metrics.
    pub counters: Arc<Counters>,
}

impl Responder {
    /// Opens the sockets on `iface`. Needs `CAP_NET_RAW`.
    pub fn open(iface: Interface, counters: Arc<Counters>) -> Result<Responder> {
        let link = |what, source| Error::Link {
            what,
            interface: iface.name.clone(),
            source,
        };
        let arp = PacketSocket::open(iface.index, Kind::Arp)
            .map_err(|e| link("opening the ARP socket", e))?;
        let nd = PacketSocket::open(iface.index, Kind::Solicit)
            .map_err(|e| link("opening the neighbour-discovery socket", e))?;
        Ok(Responder {
            iface,
            arp,
            nd,
            addrs: RwLock::new(BTreeSet::new()),
            groups: Mutex::new(BTreeMap::new()),
            counters,
        })
    }

    /// The interface answered on.
    pub fn interface(&self) -> &Interface {
        &self.iface
    }

    /// Replaces the answered addresses; joins and leaves solicited-node groups to match.
    pub fn set(&self, addrs: BTreeSet<IpAddr>) -> Result<()> {
        let mut wanted: BTreeMap<MacAddr, usize> = BTreeMap::new();
        for ip in &addrs {
            if let IpAddr::V6(v6) = ip {
                *wanted
                    .entry(frames::multicast_mac(frames::solicited_node(*v6)))
                    .or_default() += 1;
            }
        }
        {
            let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            for mac in groups.keys().filter(|m| !wanted.contains_key(m)) {
                // Leaving can only fail if the group was never joined; nothing to undo.
                let _ = self.nd.membership(*mac, false);
            }
            for mac in wanted.keys().filter(|m| !groups.contains_key(m)) {
                self.nd
                    .membership(*mac, true)
                    .map_err(|source| Error::Link {
                        what: "joining a solicited-node multicast group",
                        interface: self.iface.name.clone(),
                        source,
                    })?;
            }
            *groups = wanted;
        }
        // A poisoned lock only means a panic elsewhere; the set itself is always whole.
        *self.addrs.write().unwrap_or_else(|p| p.into_inner()) = addrs;
        Ok(())
    }

    fn answers(&self, ip: IpAddr) -> bool {
        self.addrs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&ip)
    }

    /// Sends `count` unsolicited announcements of `ip`, `spacing` apart, stopping early if the
    /// address is no longer answered here.
    pub async fn announce(&self, ip: IpAddr, count: u32, spacing: Duration) {
        let frame = frames::announcement(ip, self.iface.mac);
        let socket = match ip {
            IpAddr::V4(_) => &self.arp,
            IpAddr::V6(_) => &self.nd,
        };
        for i in 0..count {
            if !self.answers(ip) {
                return;
            }
            self.send(socket, &frame, &self.counters.announcements);
            if i + 1 < count {
                tokio::time::sleep(spacing).await;
            }
        }
    }

    fn send(&self, socket: &PacketSocket, frame: &[u8], counter: &Counter) {
        match socket.send(frame) {
            Ok(()) => {
                counter.inc();
            }
            Err(e) => {
                self.counters.send_errors.inc();
                tracing::warn!(interface = %self.iface.name, error = %e, "sending an ARP/NDP frame failed");
            }
        }
    }

    fn handle(&self, frame: &[u8]) {
        let Some(req) = frames::parse_request(frame, self.iface.mac) else {
            return;
        };
        if !self.answers(req.target()) {
            return;
        }
        let reply = frames::answer(&req, self.iface.mac);
        match req {
            Request::Arp { .. } => self.send(&self.arp, &reply, &self.counters.arp_replies),
            Request::Solicit { .. } => self.send(&self.nd, &reply, &self.counters.nd_replies),
        }
    }

    /// Answers requests until `shutdown` turns true. Receive errors are logged and retried after a
    /// short pause (an interface going down returns errors until it is back).
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let (mut a, mut b) = (vec![0u8; 1600], vec![0u8; 1600]);
        loop {
            let result = tokio::select! {
                r = self.arp.recv(&mut a) => r.map(|n| self.handle(&a[..n])),
                r = self.nd.recv(&mut b) => r.map(|n| self.handle(&b[..n])),
                _ = shutdown.changed() => return,
            };
            if *shutdown.borrow() {
                return;
            }
            if let Err(e) = result {
                tracing::warn!(interface = %self.iface.name, error = %e, "receiving ARP/NDP frames failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
