//! Prometheus metrics of L2 announcement (prefix `svcnet_l2_`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::responder::Counters;

/// The speaker's metrics; the frame counters are shared with the responders.
#[derive(Clone, Default)]
pub struct L2Metrics {
    /// Frame counters of every responder.
    pub frames: Counters,
    /// Addresses this node answers for now.
    pub announced: Gauge,
    /// Addresses this node acquired (first announcement or take-over).
    pub takeovers: Counter,
    /// Addresses this node released because it was no longer eligible.
    pub releases: Counter,
    /// Heartbeat renewals that failed (API errors, lost writes, skipped while unhealthy).
    pub renew_failures: Counter,
}

impl L2Metrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> L2Metrics {
        let m = L2Metrics::default();
        let r = registry.sub_registry_with_prefix("svcnet_l2");
        r.register(
            "arp_replies",
            "ARP replies sent for announced addresses",
            m.frames.arp_replies.clone(),
        );
        r.register(
            "ndp_replies",
            "Neighbour Advertisements sent in answer to solicitations for announced addresses",
            m.frames.nd_replies.clone(),
        );
        r.register(
            "announcements",
            "Unsolicited announcements sent (gratuitous ARP, unsolicited Neighbour Advertisements)",
            m.frames.announcements.clone(),
        );
        r.register(
            "send_errors",
            "ARP/NDP frames that could not be sent",
            m.frames.send_errors.clone(),
        );
        r.register(
            "announced_addresses",
            "Addresses this node answers for",
            m.announced.clone(),
        );
        r.register(
            "takeovers",
            "Addresses this node started announcing (acquired their Lease)",
            m.takeovers.clone(),
        );
        r.register(
            "releases",
            "Addresses this node stopped announcing because it became ineligible",
            m.releases.clone(),
        );
        r.register(
            "lease_renew_failures",
            "Heartbeat Lease renewals that failed",
            m.renew_failures.clone(),
        );
        m
    }
}
