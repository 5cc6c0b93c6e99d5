//! prometheus-client metrics of the endpoint controllers. Each controller
//! registers its own set under its own prefix (`svcnet_endpointslice_`,
//! `svcnet_endpoints_`, `svcnet_endpointslice_mirroring_`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

type Labels = Vec<(String, String)>;

fn new_histogram_counts() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

/// Metrics of one endpoint controller; cheap to clone (shared handles).
#[derive(Clone, Debug)]
pub struct ControllerMetrics {
    /// `<prefix>_syncs_total{result=success|stale|error}`.
    pub syncs: Family<Labels, Counter>,
    /// `<prefix>_changes_total{operation=create|update|delete}`: API writes.
    pub changes: Family<Labels, Counter>,
    /// `<prefix>_sync_duration_seconds`.
    pub sync_duration: Histogram,
    /// `<prefix>_endpoints_added_per_sync`.
    pub endpoints_added: Histogram,
    /// `<prefix>_endpoints_removed_per_sync`.
    pub endpoints_removed: Histogram,
    /// `<prefix>_endpoints_desired`: endpoints all synced owners want.
    pub endpoints_desired: Gauge,
    /// `<prefix>_desired_endpoint_slices`: slices all synced owners want.
    pub desired_slices: Gauge,
    /// `<prefix>_events_total{type,reason}`: Events recorded.
    pub events: Family<Labels, Counter>,
    /// `<prefix>_queue_depth`.
    pub queue_depth: Gauge,
}

impl ControllerMetrics {
    /// Metrics not attached to any registry (tests, or before registration).
    pub fn unregistered() -> Self {
        ControllerMetrics {
            syncs: Family::default(),
            changes: Family::default(),
            sync_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            endpoints_added: new_histogram_counts(),
            endpoints_removed: new_histogram_counts(),
            endpoints_desired: Gauge::default(),
            desired_slices: Gauge::default(),
            events: Family::default(),
            queue_depth: Gauge::default(),
        }
    }

    /// Creates the metrics and registers them as `<prefix>_*` in `registry`.
    pub fn register(registry: &mut Registry, prefix: &str) -> Self {
        let m = Self::unregistered();
        let n = |s: &str| format!("{prefix}_{s}");
        registry.register(n("syncs"), "Syncs by result", m.syncs.clone());
        registry.register(n("changes"), "API writes by operation", m.changes.clone());
        registry.register(
            n("sync_duration_seconds"),
            "Duration of one sync",
            m.sync_duration.clone(),
        );
        registry.register(
            n("endpoints_added_per_sync"),
            "Endpoints added per sync",
            m.endpoints_added.clone(),
        );
        registry.register(
            n("endpoints_removed_per_sync"),
            "Endpoints removed per sync",
            m.endpoints_removed.clone(),
        );
        registry.register(
            n("endpoints_desired"),
            "Endpoints desired over all owners",
            m.endpoints_desired.clone(),
        );
        registry.register(
            n("desired_endpoint_slices"),
            "Slices desired over all owners",
            m.desired_slices.clone(),
        );
        registry.register(
            n("events"),
            "Events recorded by type and reason",
            m.events.clone(),
        );
        registry.register(
            n("queue_depth"),
            "Keys waiting in the work queue",
            m.queue_depth.clone(),
        );
        m
    }

    /// Counts a sync result and its duration.
    pub fn sync(&self, result: &str, took: Duration) {
        self.syncs
            .get_or_create(&vec![("result".into(), result.into())])
            .inc();
        self.sync_duration.observe(took.as_secs_f64());
    }

    /// Counts one API write.
    pub fn change(&self, operation: &str) {
        self.changes
            .get_or_create(&vec![("operation".into(), operation.into())])
            .inc();
    }

    /// Total API writes so far.
    pub fn total_changes(&self) -> u64 {
        ["create", "update", "delete"]
            .iter()
            .map(|o| {
                self.changes
                    .get_or_create(&vec![("operation".into(), o.to_string())])
                    .get()
            })
            .sum()
    }

    /// Counts one Event.
    pub fn event(&self, type_: &str, reason: &str) {
        self.events
            .get_or_create(&vec![
                ("type".into(), type_.into()),
                ("reason".into(), reason.into()),
            ])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_encodes() {
        let mut r = Registry::default();
        let m = ControllerMetrics::register(&mut r, "svcnet_endpointslice");
        m.change("create");
        m.change("update");
        m.sync("success", Duration::from_millis(3));
        assert_eq!(m.total_changes(), 2);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).expect("encode");
        assert!(
            out.contains("svcnet_endpointslice_changes_total{operation=\"create\"} 1"),
            "{out}"
        );
        assert!(out.contains("svcnet_endpointslice_syncs_total{result=\"success\"} 1"));
    }
}
