//! Prometheus metrics of svcnet-proxy (prefix `svcnet_proxy_`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// `kind` label: `full` or `partial`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncLabels {
    /// `full` / `partial`.
    pub kind: String,
}

/// `code` label of health endpoints.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    /// HTTP status code.
    pub code: String,
}

/// `reason` label of failures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Error label ([`crate::Error::metric_label`]).
    pub reason: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn sync_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// All metrics of the proxy.
#[derive(Clone)]
pub struct Metrics {
    /// Sync duration by kind.
    pub sync_duration: HistogramFamily<SyncLabels>,
    /// Failed syncs by reason.
    pub sync_failures: Family<ReasonLabels, Counter>,
    /// Operations applied by kind.
    pub sync_ops: Family<SyncLabels, Counter>,
    /// Chains programmed.
    pub chains: Gauge,
    /// Rules programmed.
    pub rules: Gauge,
    /// Sets and maps programmed.
    pub sets: Gauge,
    /// Set/map elements programmed.
    pub elements: Gauge,
    /// Time from the EndpointSlice trigger-time annotation to programmed rules.
    pub network_programming: Histogram,
    /// Unix time of the last successful sync.
    pub last_sync_timestamp: Gauge<f64, AtomicU64>,
    /// Pending Service / EndpointSlice changes.
    pub pending_changes: Gauge,
    /// UDP conntrack deletions that removed entries.
    pub conntrack_deleted: Counter,
    /// Conntrack cleanup failures.
    pub conntrack_failures: Counter,
    /// `/healthz` answers by code.
    pub healthz: Family<CodeLabels, Counter>,
    /// `/livez` answers by code.
    pub livez: Family<CodeLabels, Counter>,
}

impl Metrics {
    /// Creates the metrics and registers them under `svcnet_proxy_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            sync_duration: Family::new_with_constructor(sync_histogram as fn() -> Histogram),
            sync_failures: Family::default(),
            sync_ops: Family::default(),
            chains: Gauge::default(),
            rules: Gauge::default(),
            sets: Gauge::default(),
            elements: Gauge::default(),
            network_programming: Histogram::new([
                0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
            ]),
            last_sync_timestamp: Gauge::default(),
            pending_changes: Gauge::default(),
            conntrack_deleted: Counter::default(),
            conntrack_failures: Counter::default(),
            healthz: Family::default(),
            livez: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("svcnet_proxy");
        r.register(
            "sync_duration_seconds",
            "Duration of nftables syncs, by kind (full/partial)",
            m.sync_duration.clone(),
        );
        r.register(
            "sync_failures",
            "Failed nftables syncs, by reason",
            m.sync_failures.clone(),
        );
        r.register(
            "sync_operations",
            "nftables operations applied, by sync kind",
            m.sync_ops.clone(),
        );
        r.register("chains", "Chains programmed", m.chains.clone());
        r.register("rules", "Rules programmed", m.rules.clone());
        r.register("sets", "Sets and maps programmed", m.sets.clone());
        r.register(
            "elements",
            "Set and map elements programmed",
            m.elements.clone(),
        );
        r.register(
            "network_programming_duration_seconds",
            "Time from the EndpointSlice last-change-trigger-time to programmed rules",
            m.network_programming.clone(),
        );
        r.register(
            "last_sync_timestamp_seconds",
            "Unix time of the last successful sync",
            m.last_sync_timestamp.clone(),
        );
        r.register(
            "pending_changes",
            "Services with changes not yet synced",
            m.pending_changes.clone(),
        );
        r.register(
            "conntrack_deleted",
            "conntrack deletions that removed stale UDP entries",
            m.conntrack_deleted.clone(),
        );
        r.register(
            "conntrack_failures",
            "Failed conntrack cleanups",
            m.conntrack_failures.clone(),
        );
        r.register("healthz", "Answers of /healthz by code", m.healthz.clone());
        r.register("livez", "Answers of /livez by code", m.livez.clone());
        m
    }
}
