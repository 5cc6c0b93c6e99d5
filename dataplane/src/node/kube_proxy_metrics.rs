//! kube-proxy's metrics under kube-proxy's own names, types and labels (`kubeproxy_*`), served
//! on the same `/metrics` as svcnet-proxy's, so that dashboards and alerts written for kube-proxy
//! work unchanged. kube-proxy runs one proxier per IP family and labels its sync metrics
//! `ip_family="IPv4"` / `"IPv6"`; svcnet-proxy programs both families in one nftables
//! transaction, so one sync is recorded once under each family it programs.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family as MetricFamily;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::metrics::CodeLabels;
use crate::compute::endpoints::local_ready_count;
use crate::types::{EndpointSliceInfo, Family, ProxyState};

/// `ip_family` label (`IPv4`, `IPv6`: the values of `v1.IPFamily`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IpFamilyLabels {
    /// `IPv4` or `IPv6`.
    pub ip_family: String,
}

/// Labels of `kubeproxy_sync_proxy_rules_no_local_endpoints_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NoLocalLabels {
    /// `IPv4` or `IPv6`.
    pub ip_family: String,
    /// `internal` or `external`.
    pub traffic_policy: String,
}

type Histograms = MetricFamily<IpFamilyLabels, Histogram, fn() -> Histogram>;
type FloatGauges = MetricFamily<IpFamilyLabels, Gauge<f64, AtomicU64>>;

/// kube-proxy's sync histograms: 1 ms to ~16 s, doubling (15 buckets).
fn sync_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// kube-proxy's network-programming buckets: 0.25 s, 0.5 s, 1..59 s, 60..115 s by 5, 2..5 min
/// by 30 s (with a leading 0, as kube-proxy's merge produces).
fn network_programming_buckets() -> Histogram {
    let mut b = vec![0.0, 0.25, 0.5];
    b.extend((1..=59).map(f64::from));
    b.extend((0..12).map(|i| 60.0 + 5.0 * f64::from(i)));
    b.extend((0..7).map(|i| 120.0 + 30.0 * f64::from(i)));
    Histogram::new(b)
}

/// The label value of a family.
pub fn family_label(f: Family) -> String {
    match f {
        Family::Ipv4 => "IPv4".into(),
        Family::Ipv6 => "IPv6".into(),
    }
}

/// kube-proxy's metrics.
#[derive(Clone)]
pub struct KubeProxyMetrics {
    sync_duration: Histograms,
    full_sync_duration: Histograms,
    partial_sync_duration: Histograms,
    network_programming: Histograms,
    last_sync: FloatGauges,
    last_queued: FloatGauges,
    /// Services with EndpointSlice changes not yet synced.
    pub endpoint_changes_pending: Gauge,
    /// EndpointSlice changes seen.
    pub endpoint_changes: Counter,
    /// Services with Service changes not yet synced.
    pub service_changes_pending: Gauge,
    /// Service changes seen.
    pub service_changes: Counter,
    sync_failures: MetricFamily<IpFamilyLabels, Counter>,
    conntrack_deleted: MetricFamily<IpFamilyLabels, Counter>,
    conntrack_duration: Histograms,
    no_local_endpoints: MetricFamily<NoLocalLabels, Gauge>,
    /// `/healthz` answers by code.
    pub healthz: MetricFamily<CodeLabels, Counter>,
    /// `/livez` answers by code.
    pub livez: MetricFamily<CodeLabels, Counter>,
}

impl KubeProxyMetrics {
    /// Creates the metrics and registers them under `kubeproxy_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = KubeProxyMetrics {
            sync_duration: MetricFamily::new_with_constructor(sync_buckets as fn() -> Histogram),
            full_sync_duration: MetricFamily::new_with_constructor(
                sync_buckets as fn() -> Histogram,
            ),
            partial_sync_duration: MetricFamily::new_with_constructor(
                sync_buckets as fn() -> Histogram,
            ),
            network_programming: MetricFamily::new_with_constructor(
                network_programming_buckets as fn() -> Histogram,
            ),
            last_sync: MetricFamily::default(),
            last_queued: MetricFamily::default(),
            endpoint_changes_pending: Gauge::default(),
            endpoint_changes: Counter::default(),
            service_changes_pending: Gauge::default(),
            service_changes: Counter::default(),
            sync_failures: MetricFamily::default(),
            conntrack_deleted: MetricFamily::default(),
            conntrack_duration: MetricFamily::new_with_constructor(
                sync_buckets as fn() -> Histogram,
            ),
            no_local_endpoints: MetricFamily::default(),
            healthz: MetricFamily::default(),
            livez: MetricFamily::default(),
        };
        let r = registry.sub_registry_with_prefix("kubeproxy");
        r.register(
            "sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            m.sync_duration.clone(),
        );
        r.register(
            "sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            m.full_sync_duration.clone(),
        );
        r.register(
            "sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            m.partial_sync_duration.clone(),
        );
        r.register(
            "network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            m.network_programming.clone(),
        );
        r.register(
            "sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            m.last_sync.clone(),
        );
        r.register(
            "sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            m.last_queued.clone(),
        );
        r.register(
            "sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            m.endpoint_changes_pending.clone(),
        );
        r.register(
            "sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            m.endpoint_changes.clone(),
        );
        r.register(
            "sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            m.service_changes_pending.clone(),
        );
        r.register(
            "sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            m.service_changes.clone(),
        );
        r.register(
            "sync_proxy_rules_nftables_sync_failures",
            "Cumulative proxy nftables sync failures",
            m.sync_failures.clone(),
        );
        r.register(
            "conntrack_reconciler_deleted_entries",
            "Cumulative conntrack flows deleted by conntrack reconciler",
            m.conntrack_deleted.clone(),
        );
        r.register(
            "conntrack_reconciler_sync_duration_seconds",
            "ReconcileConntrackFlowsLatency latency in seconds",
            m.conntrack_duration.clone(),
        );
        r.register(
            "sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            m.no_local_endpoints.clone(),
        );
        r.register(
            "proxy_healthz",
            "Cumulative proxy healthz HTTP status",
            m.healthz.clone(),
        );
        r.register(
            "proxy_livez",
            "Cumulative proxy livez HTTP status",
            m.livez.clone(),
        );
        m
    }

    fn each<'a>(families: &'a [Family]) -> impl Iterator<Item = IpFamilyLabels> + 'a {
        families.iter().map(|f| IpFamilyLabels {
            ip_family: family_label(*f),
        })
    }

    /// Records a successful sync of `families` that took `seconds`, finished at Unix time `now`,
    /// with the network-programming latencies `programming` (seconds each).
    pub fn synced(
        &self,
        families: &[Family],
        full: bool,
        seconds: f64,
        now: f64,
        programming: &[f64],
    ) {
        for l in Self::each(families) {
            self.sync_duration.get_or_create(&l).observe(seconds);
            let kind = if full {
                &self.full_sync_duration
            } else {
                &self.partial_sync_duration
            };
            kind.get_or_create(&l).observe(seconds);
            self.last_sync.get_or_create(&l).set(now);
            for p in programming {
                self.network_programming.get_or_create(&l).observe(*p);
            }
        }
    }

    /// Records that a sync was queued at Unix time `now`.
    pub fn queued(&self, families: &[Family], now: f64) {
        for l in Self::each(families) {
            self.last_queued.get_or_create(&l).set(now);
        }
    }

    /// Records a failed sync.
    pub fn sync_failed(&self, families: &[Family]) {
        for l in Self::each(families) {
            self.sync_failures.get_or_create(&l).inc();
        }
    }

    /// Records one conntrack reconciliation of `family`.
    pub fn conntrack_reconciled(&self, family: Family, deleted: usize, seconds: f64) {
        let l = IpFamilyLabels {
            ip_family: family_label(family),
        };
        self.conntrack_deleted
            .get_or_create(&l)
            .inc_by(deleted as u64);
        self.conntrack_duration.get_or_create(&l).observe(seconds);
    }

    /// Sets the no-local-endpoints gauges from [`no_local_endpoints`].
    pub fn set_no_local(&self, families: &[Family], counts: &BTreeMap<(Family, Policy), i64>) {
        for f in families {
            for p in [Policy::Internal, Policy::External] {
                let labels = NoLocalLabels {
                    ip_family: family_label(*f),
                    traffic_policy: p.label().into(),
                };
                let n = counts.get(&(*f, p)).copied().unwrap_or(0);
                self.no_local_endpoints.get_or_create(&labels).set(n);
            }
        }
    }
}

/// Which traffic policy a no-local-endpoints count is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Policy {
    /// `internalTrafficPolicy: Local`.
    Internal,
    /// `externalTrafficPolicy: Local` (on a Service reachable from outside).
    External,
}

impl Policy {
    fn label(self) -> &'static str {
        match self {
            Policy::Internal => "internal",
            Policy::External => "external",
        }
    }
}

/// Per family and policy, the Services with a Local traffic policy and no ready endpoint on
/// `node` (kube-proxy's `no_local_endpoints` gauge): a Service counts in the families of its
/// ClusterIPs; external only when it is reachable from outside in that family.
pub fn no_local_endpoints(state: &ProxyState, node: &str) -> BTreeMap<(Family, Policy), i64> {
    let mut out = BTreeMap::new();
    for svc in state.services.values() {
        if !(svc.internal_policy_local || svc.external_policy_local) {
            continue;
        }
        for fam in Family::ALL {
            if !svc.cluster_ips.iter().any(|ip| Family::of(ip) == fam) {
                continue;
            }
            let slices: Vec<&EndpointSliceInfo> = state
                .slices_for(&svc.key)
                .filter(|s| s.family == fam)
                .collect();
            if local_ready_count(svc, &slices, node) > 0 {
                continue;
            }
            if svc.internal_policy_local {
                *out.entry((fam, Policy::Internal)).or_insert(0) += 1;
            }
            if svc.external_policy_local
                && svc.ports.iter().any(|p| svc.externally_accessible(p, fam))
            {
                *out.entry((fam, Policy::External)).or_insert(0) += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn names_types_and_labels_are_kube_proxys() {
        let mut r = Registry::default();
        let m = KubeProxyMetrics::register(&mut r);
        m.synced(&Family::ALL, true, 0.02, 1.7e9, &[0.3]);
        m.synced(&[Family::Ipv4], false, 0.001, 1.7e9, &[]);
        m.queued(&Family::ALL, 1.7e9);
        m.sync_failed(&[Family::Ipv6]);
        m.endpoint_changes.inc();
        m.service_changes.inc();
        m.healthz
            .get_or_create(&CodeLabels { code: "200".into() })
            .inc();
        m.livez
            .get_or_create(&CodeLabels { code: "200".into() })
            .inc();
        m.set_no_local(&Family::ALL, &BTreeMap::new());
        m.conntrack_reconciled(Family::Ipv4, 2, 0.003);
        let mut text = String::new();
        encode(&mut text, &r).unwrap();
        for (name, kind) in [
            ("kubeproxy_sync_proxy_rules_duration_seconds", "histogram"),
            (
                "kubeproxy_sync_full_proxy_rules_duration_seconds",
                "histogram",
            ),
            (
                "kubeproxy_sync_partial_proxy_rules_duration_seconds",
                "histogram",
            ),
            (
                "kubeproxy_network_programming_duration_seconds",
                "histogram",
            ),
            ("kubeproxy_sync_proxy_rules_last_timestamp_seconds", "gauge"),
            (
                "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
                "gauge",
            ),
            (
                "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
                "gauge",
            ),
            (
                "kubeproxy_sync_proxy_rules_endpoint_changes_total",
                "counter",
            ),
            (
                "kubeproxy_sync_proxy_rules_service_changes_pending",
                "gauge",
            ),
            (
                "kubeproxy_sync_proxy_rules_service_changes_total",
                "counter",
            ),
            (
                "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
                "counter",
            ),
            (
                "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
                "gauge",
            ),
            ("kubeproxy_proxy_healthz_total", "counter"),
            (
                "kubeproxy_conntrack_reconciler_deleted_entries_total",
                "counter",
            ),
            (
                "kubeproxy_conntrack_reconciler_sync_duration_seconds",
                "histogram",
            ),
            ("kubeproxy_proxy_livez_total", "counter"),
        ] {
            let base = name.strip_suffix("_total").filter(|_| kind == "counter");
            let declared = format!("# TYPE {} {kind}", base.unwrap_or(name));
            assert!(text.contains(&declared), "{declared} missing:\n{text}");
        }
        for series in [
            r#"kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"} 2"#,
            r#"kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv6"} 1"#,
            r#"kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family="IPv6"} 1"#,
            r#"kubeproxy_sync_partial_proxy_rules_duration_seconds_count{ip_family="IPv4"} 1"#,
            r#"kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="16.384",ip_family="IPv4"} 2"#,
            r#"kubeproxy_network_programming_duration_seconds_bucket{le="0.5",ip_family="IPv4"} 1"#,
            r#"kubeproxy_network_programming_duration_seconds_bucket{le="300.0",ip_family="IPv4"} 1"#,
            r#"kubeproxy_sync_proxy_rules_nftables_sync_failures_total{ip_family="IPv6"} 1"#,
            r#"kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv4",traffic_policy="external"} 0"#,
            r#"kubeproxy_proxy_healthz_total{code="200"} 1"#,
            r#"kubeproxy_conntrack_reconciler_deleted_entries_total{ip_family="IPv4"} 2"#,
        ] {
            assert!(text.contains(series), "{series} missing:\n{text}");
        }
        // 15 sync buckets, the last at 16.384 s, as kube-proxy's.
        assert!(!text.contains(r#"kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="32.768""#));
    }
}
