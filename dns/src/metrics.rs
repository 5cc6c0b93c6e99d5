//! Prometheus metrics, named and labelled as CoreDNS's so that CoreDNS dashboards and alerts
//! work unchanged:
//!
//! | metric | labels |
//! | --- | --- |
//! | `coredns_dns_requests_total` | `server`, `zone`, `proto` (`udp`/`tcp`), `family` (`1` IPv4, `2` IPv6), `type` |
//! | `coredns_dns_responses_total` | `server`, `zone`, `rcode`, `plugin` (`kubernetes`, `forward`, or empty for errors answered by the server itself) |
//! | `coredns_dns_request_duration_seconds` (histogram) | `server`, `zone`, `type` |
//! | `coredns_cache_hits_total` | `server`, `type` (`success`/`denial`) |
//! | `coredns_cache_misses_total` | `server` |
//! | `coredns_cache_entries` (gauge) | `server` |
//! | `coredns_forward_requests_total` | `to` |
//! | `coredns_forward_responses_total` | `to`, `rcode` |
//! | `coredns_forward_upstream_failures_total` | `to`, `reason` (`timeout`, `io`, `malformed`) — svcnet's own |
//!
//! `server` is `dns://<listen address>` and `zone` is `.` (one server block for every name),
//! as CoreDNS reports them for its default Corefile. Query types outside the common set are
//! counted as `other`, which bounds the label's values.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of `coredns_dns_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `dns://addr`.
    pub server: String,
    /// Server zone (`.`).
    pub zone: String,
    /// `udp` or `tcp`.
    pub proto: String,
    /// `1` (IPv4) or `2` (IPv6).
    pub family: String,
    /// Query type.
    #[prometheus(flatten)]
    pub qtype: TypeLabel,
}

/// The `type` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// Query type (`A`, `AAAA`, ... or `other`).
    pub r#type: String,
}

/// Labels of `coredns_dns_responses_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    /// `dns://addr`.
    pub server: String,
    /// Server zone (`.`).
    pub zone: String,
    /// Response code name.
    pub rcode: String,
    /// Which part answered.
    pub plugin: String,
}

/// Labels of `coredns_dns_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    /// `dns://addr`.
    pub server: String,
    /// Server zone (`.`).
    pub zone: String,
    /// Query type.
    #[prometheus(flatten)]
    pub qtype: TypeLabel,
}

/// Labels of the cache hit counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheHitLabels {
    /// `dns://addr`.
    pub server: String,
    /// `success` or `denial`.
    #[prometheus(flatten)]
    pub kind: TypeLabel,
}

/// A `server` label alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabel {
    /// `dns://addr`.
    pub server: String,
}

/// A `to` label (upstream address).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToLabel {
    /// Upstream `ip:port`.
    pub to: String,
}

/// Labels of `coredns_forward_responses_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForwardResponseLabels {
    /// Upstream `ip:port`.
    pub to: String,
    /// Response code name.
    pub rcode: String,
}

/// Labels of `coredns_forward_upstream_failures_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// Upstream `ip:port`.
    pub to: String,
    /// `timeout`, `io` or `malformed`.
    pub reason: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 250 µs .. ~8 s, as CoreDNS's buckets span.
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

/// Every metric of the server. Cheap to clone (the metrics are shared handles).
#[derive(Clone)]
pub struct Metrics {
    /// The `server` label value.
    pub server: String,
    /// `coredns_dns_requests_total`.
    pub requests: Family<RequestLabels, Counter>,
    /// `coredns_dns_responses_total`.
    pub responses: Family<ResponseLabels, Counter>,
    /// `coredns_dns_request_duration_seconds`.
    pub duration: HistogramFamily<DurationLabels>,
    /// `coredns_cache_hits_total`.
    pub cache_hits: Family<CacheHitLabels, Counter>,
    /// `coredns_cache_misses_total`.
    pub cache_misses: Family<ServerLabel, Counter>,
    /// `coredns_cache_entries`.
    pub cache_entries: Family<ServerLabel, Gauge>,
    /// `coredns_forward_requests_total`.
    pub forward_requests: Family<ToLabel, Counter>,
    /// `coredns_forward_responses_total`.
    pub forward_responses: Family<ForwardResponseLabels, Counter>,
    /// `coredns_forward_upstream_failures_total`.
    pub forward_failures: Family<FailureLabels, Counter>,
}

/// The zone label: one server block serves every name.
pub const ZONE: &str = ".";

impl Metrics {
    /// Metrics not registered anywhere (tests, benchmarks).
    pub fn unregistered(server: &str) -> Self {
        Self {
            server: server.to_string(),
            requests: Family::default(),
            responses: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            cache_entries: Family::default(),
            forward_requests: Family::default(),
            forward_responses: Family::default(),
            forward_failures: Family::default(),
        }
    }

    /// Metrics registered in `registry`; `server` is the `server` label (`dns://0.0.0.0:53`).
    pub fn register(registry: &mut Registry, server: &str) -> Self {
        let m = Self::unregistered(server);
        registry.register(
            "coredns_dns_requests",
            "Counter of DNS requests made per zone, protocol and family.",
            m.requests.clone(),
        );
        registry.register(
            "coredns_dns_responses",
            "Counter of response status codes.",
            m.responses.clone(),
        );
        registry.register(
            "coredns_dns_request_duration_seconds",
            "Histogram of the time (in seconds) each request took.",
            m.duration.clone(),
        );
        registry.register(
            "coredns_cache_hits",
            "The count of cache hits.",
            m.cache_hits.clone(),
        );
        registry.register(
            "coredns_cache_misses",
            "The count of cache misses.",
            m.cache_misses.clone(),
        );
        registry.register(
            "coredns_cache_entries",
            "The number of elements in the cache.",
            m.cache_entries.clone(),
        );
        registry.register(
            "coredns_forward_requests",
            "Counter of requests made per upstream.",
            m.forward_requests.clone(),
        );
        registry.register(
            "coredns_forward_responses",
            "Counter of responses received per upstream.",
            m.forward_responses.clone(),
        );
        registry.register(
            "coredns_forward_upstream_failures",
            "Counter of upstream exchanges that failed (timeout, I/O error, malformed reply).",
            m.forward_failures.clone(),
        );
        m
    }

    /// The bounded `type` label of a query type.
    pub fn type_label(t: hickory_proto::rr::RecordType) -> TypeLabel {
        use hickory_proto::rr::RecordType as T;
        let known = matches!(
            t,
            T::A | T::AAAA
                | T::SRV
                | T::PTR
                | T::CNAME
                | T::TXT
                | T::SOA
                | T::NS
                | T::MX
                | T::ANY
                | T::HTTPS
                | T::SVCB
                | T::CAA
                | T::DS
                | T::DNSKEY
                | T::AXFR
                | T::IXFR
        );
        TypeLabel {
            r#type: if known {
                t.to_string()
            } else {
                "other".to_string()
            },
        }
    }
}
