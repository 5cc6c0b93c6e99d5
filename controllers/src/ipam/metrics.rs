//! IPAM metrics (prefix `svcnet_ipam_`): size / used / free per Service CIDR, node-port range and
//! LoadBalancer pool; allocations, releases and errors by reason; leaked claims released.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of a range gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RangeLabels {
    /// `cluster_ip`, `node_port` or `load_balancer`.
    pub kind: String,
    /// The CIDR, port range or pool name.
    pub range: String,
}

/// Labels of an error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// A stable reason (`full`, `already_allocated`, `out_of_range`, `invalid_spec`, `api`, …).
    pub reason: String,
}

/// Labels of allocation / release counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `cluster_ip`, `node_port`, `health_check_node_port` or `load_balancer`.
    pub kind: String,
}

/// All IPAM metrics.
#[derive(Clone, Default)]
pub struct IpamMetrics {
    /// Usable values per range.
    pub size: Family<RangeLabels, Gauge>,
    /// Allocated values per range.
    pub used: Family<RangeLabels, Gauge>,
    /// Free values per range.
    pub free: Family<RangeLabels, Gauge>,
    /// Allocation errors by reason.
    pub errors: Family<ReasonLabels, Counter>,
    /// Successful new allocations by kind.
    pub allocations: Family<KindLabels, Counter>,
    /// Releases by kind.
    pub releases: Family<KindLabels, Counter>,
    /// Leaked claims released by the repair loop.
    pub leaks_released: Counter,
    /// Service reconciles run.
    pub reconciles: Counter,
}

impl IpamMetrics {
    /// Registers every metric under `svcnet_ipam_` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = IpamMetrics::default();
        let r = registry.sub_registry_with_prefix("svcnet_ipam");
        r.register(
            "range_size",
            "Usable values per range or pool",
            m.size.clone(),
        );
        r.register(
            "range_used",
            "Allocated values per range or pool",
            m.used.clone(),
        );
        r.register(
            "range_free",
            "Free values per range or pool",
            m.free.clone(),
        );
        r.register(
            "allocation_errors",
            "Allocation errors by reason",
            m.errors.clone(),
        );
        r.register(
            "allocations",
            "New allocations by kind",
            m.allocations.clone(),
        );
        r.register("releases", "Releases by kind", m.releases.clone());
        r.register(
            "leaks_released",
            "Leaked claims released by the repair loop",
            m.leaks_released.clone(),
        );
        r.register("reconciles", "Service reconciles", m.reconciles.clone());
        m
    }

    /// Sets the gauges of one range.
    pub fn set_range(&self, kind: &str, range: &str, size: u64, used: u64) {
        let l = RangeLabels {
            kind: kind.to_string(),
            range: range.to_string(),
        };
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.size.get_or_create(&l).set(clamp(size));
        self.used.get_or_create(&l).set(clamp(used));
        self.free
            .get_or_create(&l)
            .set(clamp(size.saturating_sub(used)));
    }

    /// Counts one error.
    pub fn error(&self, reason: &str) {
        self.errors
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts one allocation.
    pub fn allocated(&self, kind: &str) {
        self.allocations
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Counts one release.
    pub fn released(&self, kind: &str) {
        self.releases
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_gauges_clamp_and_free_never_underflows() {
        let m = IpamMetrics::default();
        let get = |f: &Family<RangeLabels, Gauge>, range: &str| {
            f.get_or_create(&RangeLabels {
                kind: "load_balancer".into(),
                range: range.into(),
            })
            .get()
        };
        // A saturated pool size (`::/0`) arrives as u64::MAX.
        m.set_range("load_balancer", "huge", u64::MAX, 5);
        assert_eq!(get(&m.size, "huge"), i64::MAX);
        assert_eq!(get(&m.used, "huge"), 5);
        assert_eq!(get(&m.free, "huge"), i64::MAX);
        // More used than the size (the pool shrank under its claims): free is 0.
        m.set_range("load_balancer", "shrunk", 2, 3);
        assert_eq!(get(&m.free, "shrunk"), 0);
    }
}
