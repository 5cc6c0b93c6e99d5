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

/// Endpoints per sync: 2 to 32768, doubling (kube-controller-manager's buckets).
fn new_histogram_counts() -> Histogram {
    Histogram::new(exponential_buckets(2.0, 2.0, 15))
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

    /// Also registers the metrics kube-controller-manager's controller of the same job exports,
    /// under its names and labels (`subsystem`: `endpoint_slice_controller` or
    /// `endpoint_slice_mirroring_controller`), so that its dashboards and alerts work unchanged.
    /// They share the handles of the `svcnet_*` ones. `num_endpoint_slices` (the slices that
    /// exist after a sync) equals `desired_endpoint_slices` here: a sync writes exactly the
    /// slices it wants.
    pub fn register_upstream(&self, registry: &mut Registry, subsystem: &str) {
        let n = |s: &str| format!("{subsystem}_{s}");
        registry.register(
            n("endpoints_added_per_sync"),
            "Number of endpoints added on each Service sync",
            self.endpoints_added.clone(),
        );
        registry.register(
            n("endpoints_removed_per_sync"),
            "Number of endpoints removed on each Service sync",
            self.endpoints_removed.clone(),
        );
        registry.register(
            n("endpoints_desired"),
            "Number of endpoints desired",
            self.endpoints_desired.clone(),
        );
        registry.register(
            n("num_endpoint_slices"),
            "Number of EndpointSlices",
            self.desired_slices.clone(),
        );
        registry.register(
            n("desired_endpoint_slices"),
            "Number of EndpointSlices that would exist with perfect endpoint allocation",
            self.desired_slices.clone(),
        );
        registry.register(
            n("changes"),
            "Number of EndpointSlice changes",
            self.changes.clone(),
        );
        registry.register(
            n("syncs"),
            "Number of EndpointSlice syncs",
            self.syncs.clone(),
        );
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

    #[test]
    fn upstream_names_share_the_handles() {
        let mut r = Registry::default();
        let m = ControllerMetrics::register(&mut r, "svcnet_endpointslice");
        m.register_upstream(&mut r, "endpoint_slice_controller");
        m.change("create");
        m.sync("stale", Duration::from_millis(1));
        m.endpoints_added.observe(3.0);
        m.endpoints_desired.set(7);
        m.desired_slices.set(2);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).expect("encode");
        for line in [
            "# TYPE endpoint_slice_controller_changes counter",
            "endpoint_slice_controller_changes_total{operation=\"create\"} 1",
            "endpoint_slice_controller_syncs_total{result=\"stale\"} 1",
            "# TYPE endpoint_slice_controller_endpoints_added_per_sync histogram",
            "endpoint_slice_controller_endpoints_added_per_sync_bucket{le=\"4.0\"} 1",
            "endpoint_slice_controller_endpoints_added_per_sync_bucket{le=\"32768.0\"} 1",
            "# TYPE endpoint_slice_controller_endpoints_removed_per_sync histogram",
            "endpoint_slice_controller_endpoints_desired 7",
            "endpoint_slice_controller_num_endpoint_slices 2",
            "endpoint_slice_controller_desired_endpoint_slices 2",
        ] {
            assert!(out.contains(line), "{line} missing:\n{out}");
        }
        // The first bucket is 2, as upstream's.
        assert!(
            out.contains("endpoint_slice_controller_endpoints_added_per_sync_bucket{le=\"2.0\"} 0")
        );
    }
}
