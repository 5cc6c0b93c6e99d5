//! Announcing LoadBalancer addresses on the node's LAN: ARP (IPv4) and Neighbour Discovery (IPv6)
//! answers for the addresses this node holds, and unsolicited announcements on take-over.
//!
//! * [`frames`] — pure: parsing requests, building answers and announcements.
//! * [`election`] — pure: which node answers for which address, from the address Leases and the
//!   nodes' heartbeats.
//! * [`packet_socket`] — `AF_PACKET` sockets and interface facts (the kernel side).
//! * [`responder`] — one interface's answer loop and announcements.
//! * [`eligibility`] — pure: the addresses to announce and the nodes eligible for each.
//! * [`leases`] — the heartbeat and address Leases and their conditional writes.
//! * [`inputs`] — the watched policies, pools, Nodes and Leases.
//! * [`speaker`] — the loop inside svcnet-proxy that ties them together; [`metrics`].

pub mod election;
pub mod eligibility;
pub mod frames;
pub mod inputs;
pub mod leases;
pub mod metrics;
pub mod packet_socket;
pub mod responder;
pub mod speaker;
pub mod status;
