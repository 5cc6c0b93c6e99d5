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

use std::sync::{Arc, OnceLock};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
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

/// The query types with a `type` label of their own; every other type is `other`.
const KNOWN_TYPES: [RecordType; 17] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::PTR,
    RecordType::CNAME,
    RecordType::TXT,
    RecordType::SOA,
    RecordType::NS,
    RecordType::MX,
    RecordType::ANY,
    RecordType::HTTPS,
    RecordType::SVCB,
    RecordType::CAA,
    RecordType::DS,
    RecordType::DNSKEY,
    RecordType::AXFR,
    RecordType::IXFR,
];
/// Slots of the per-type handle arrays: the known types, then `other`.
const TYPE_SLOTS: usize = KNOWN_TYPES.len() + 1;
/// Response codes with a cached handle (the ones defined by RFC 1035 / 2136 / 6891 / 8490).
const RCODE_SLOTS: usize = 24;

fn type_slot(t: RecordType) -> usize {
    KNOWN_TYPES
        .iter()
        .position(|k| *k == t)
        .unwrap_or(KNOWN_TYPES.len())
}

/// Which part of the server produced a response (the `plugin` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    /// The cluster zone.
    Kubernetes,
    /// An upstream.
    Forward,
    /// The server itself (bad requests, refused types).
    Server,
}

impl Plugin {
    fn label(self) -> &'static str {
        match self {
            Plugin::Kubernetes => "kubernetes",
            Plugin::Forward => "forward",
            Plugin::Server => "",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// Handles of the per-request series, looked up once per label set and kept, so that the
/// request path neither builds label strings nor hashes them.
struct Handles {
    /// `[udp, tcp][IPv4, IPv6][type]`.
    requests: [[[OnceLock<Counter>; TYPE_SLOTS]; 2]; 2],
    /// `[rcode][plugin]`.
    responses: [[OnceLock<Counter>; 3]; RCODE_SLOTS],
    /// `[type]`.
    duration: [OnceLock<Histogram>; TYPE_SLOTS],
}

impl Default for Handles {
    fn default() -> Self {
        Self {
            requests: std::array::from_fn(|_| {
                std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new()))
            }),
            responses: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
            duration: std::array::from_fn(|_| OnceLock::new()),
        }
    }
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
    /// `svcnet_dns_answer_cache_hits_total`: cluster answers served from the answer cache.
    pub answer_cache_hits: Counter,
    /// `svcnet_dns_answer_cache_misses_total`: cluster answers computed from the index.
    pub answer_cache_misses: Counter,
    handles: Arc<Handles>,
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
            answer_cache_hits: Counter::default(),
            answer_cache_misses: Counter::default(),
            handles: Arc::default(),
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
            "svcnet_dns_answer_cache_hits",
            "Cluster-zone answers served from the answer cache.",
            m.answer_cache_hits.clone(),
        );
        registry.register(
            "svcnet_dns_answer_cache_misses",
            "Cluster-zone answers computed from the index.",
            m.answer_cache_misses.clone(),
        );
        registry.register(
            "coredns_forward_upstream_failures",
            "Counter of upstream exchanges that failed (timeout, I/O error, malformed reply).",
            m.forward_failures.clone(),
        );
        m
    }

    /// The bounded `type` label of a query type.
    pub fn type_label(t: RecordType) -> TypeLabel {
        TypeLabel {
            r#type: match KNOWN_TYPES.get(type_slot(t)) {
                Some(known) => known.to_string(),
                None => "other".to_string(),
            },
        }
    }

    /// Counts a request (`coredns_dns_requests_total`).
    pub fn count_request(&self, tcp: bool, ipv6: bool, qtype: RecordType) {
        let slot = &self.handles.requests[usize::from(tcp)][usize::from(ipv6)][type_slot(qtype)];
        slot.get_or_init(|| {
            self.requests
                .get_or_create(&RequestLabels {
                    server: self.server.clone(),
                    zone: ZONE.to_string(),
                    proto: if tcp { "tcp" } else { "udp" }.to_string(),
                    family: if ipv6 { "2" } else { "1" }.to_string(),
                    qtype: Self::type_label(qtype),
                })
                .clone()
        })
        .inc();
    }

    /// Counts a response (`coredns_dns_responses_total`).
    pub fn count_response(&self, rcode: ResponseCode, plugin: Plugin) {
        let labels = || ResponseLabels {
            server: self.server.clone(),
            zone: ZONE.to_string(),
            rcode: rcode.to_str().to_string(),
            plugin: plugin.label().to_string(),
        };
        match self.handles.responses.get(usize::from(u16::from(rcode))) {
            Some(row) => row[plugin.slot()]
                .get_or_init(|| self.responses.get_or_create(&labels()).clone())
                .inc(),
            None => self.responses.get_or_create(&labels()).inc(),
        };
    }

    /// Records how long a request took (`coredns_dns_request_duration_seconds`).
    pub fn observe_duration(&self, qtype: RecordType, seconds: f64) {
        self.handles.duration[type_slot(qtype)]
            .get_or_init(|| {
                self.duration
                    .get_or_create(&DurationLabels {
                        server: self.server.clone(),
                        zone: ZONE.to_string(),
                        qtype: Self::type_label(qtype),
                    })
                    .clone()
            })
            .observe(seconds);
    }
}
