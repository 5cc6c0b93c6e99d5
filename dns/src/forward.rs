//! Forwarding of names the cluster data does not answer to upstream resolvers, with a bounded
//! cache.
//!
//! * Every exchange has one deadline ([`ForwardConfig::timeout`], 2 s by default) across all
//!   upstreams: each upstream is tried in turn (starting from a rotating one) with an equal
//!   share of the time left, so a dead upstream costs its share and never more. When every try
//!   fails the caller answers SERVFAIL.
//! * UDP first (EDNS0, 1232-byte payload); a truncated reply is retried over TCP to the same
//!   upstream. A reply must match the question and the random message id.
//! * The cache holds at most [`ForwardConfig::cache_size`] answers (`0` disables it), evicting
//!   the oldest first. Positive answers live for their smallest TTL, negative answers (NXDOMAIN
//!   and NODATA) for the SOA's negative TTL (RFC 2308), both capped by
//!   [`ForwardConfig::max_ttl`] / [`ForwardConfig::max_negative_ttl`]; SERVFAIL and other
//!   errors are never cached. Answers served from the cache have their TTLs counted down.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::metrics::{
    CacheHitLabels, FailureLabels, ForwardResponseLabels, Metrics, ServerLabel, ToLabel, TypeLabel,
};

/// Forwarder settings.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// Upstream resolvers, tried in turn.
    pub upstreams: Vec<SocketAddr>,
    /// Deadline of one resolution across every upstream.
    pub timeout: Duration,
    /// Cached answers at most (`0`: no cache).
    pub cache_size: usize,
    /// Longest time a positive answer is cached.
    pub max_ttl: Duration,
    /// Longest time a negative answer is cached.
    pub max_negative_ttl: Duration,
}

impl ForwardConfig {
    /// Defaults (2 s deadline, 10,000 entries, 300 s / 60 s TTL caps) for `upstreams`.
    pub fn new(upstreams: Vec<SocketAddr>) -> Self {
        Self {
            upstreams,
            timeout: Duration::from_secs(2),
            cache_size: 10_000,
            max_ttl: Duration::from_secs(300),
            max_negative_ttl: Duration::from_secs(60),
        }
    }
}

/// What an upstream answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Its response code.
    pub rcode: ResponseCode,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Authority section.
    pub authorities: Vec<Record>,
    /// Additional section (without the OPT record).
    pub additionals: Vec<Record>,
}

/// Why a resolution failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// No upstream is configured.
    #[error("no upstream resolver configured")]
    NoUpstream,
    /// Every upstream failed or the deadline passed.
    #[error("every upstream failed: {0}")]
    Failed(String),
}

type CacheKey = (Name, RecordType, DNSClass);

struct CacheEntry {
    value: Upstream,
    stored: Instant,
    expires: Instant,
    seq: u64,
}

/// A bounded FIFO cache with per-entry expiry.
struct Cache {
    cap: usize,
    map: HashMap<CacheKey, CacheEntry>,
    order: VecDeque<(CacheKey, u64)>,
    seq: u64,
}

impl Cache {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            map: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
        }
    }

    fn get(&mut self, key: &CacheKey, now: Instant) -> Option<Upstream> {
        let entry = self.map.get(key)?;
        if entry.expires <= now {
            self.map.remove(key);
            return None;
        }
        let elapsed = u32::try_from(now.duration_since(entry.stored).as_secs()).unwrap_or(u32::MAX);
        let mut value = entry.value.clone();
        for r in value
            .answers
            .iter_mut()
            .chain(value.authorities.iter_mut())
            .chain(value.additionals.iter_mut())
        {
            r.ttl = r.ttl.saturating_sub(elapsed);
        }
        Some(value)
    }

    fn insert(&mut self, key: CacheKey, value: Upstream, now: Instant, ttl: Duration) {
        if self.cap == 0 {
            return;
        }
        while self.map.len() >= self.cap && !self.map.contains_key(&key) {
            let Some((old, seq)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|e| e.seq == seq) {
                self.map.remove(&old);
            }
        }
        self.seq += 1;
        self.order.push_back((key.clone(), self.seq));
        self.map.insert(
            key,
            CacheEntry {
                value,
                stored: now,
                expires: now + ttl,
                seq: self.seq,
            },
        );
        // Replaced keys leave stale entries in `order`; drop them once they pile up.
        if self.order.len() > self.cap.saturating_mul(2) {
            let map = &self.map;
            self.order
                .retain(|(k, s)| map.get(k).is_some_and(|e| e.seq == *s));
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// The forwarder. Shared by every request (`&self` methods; the cache has its own short lock).
pub struct Forwarder {
    cfg: ForwardConfig,
    cache: Mutex<Cache>,
    next: AtomicUsize,
    metrics: Metrics,
}

/// How long an answer may be cached, or `None` when it must not be.
fn cache_ttl(up: &Upstream, cfg: &ForwardConfig) -> Option<Duration> {
    match up.rcode {
        ResponseCode::NoError if !up.answers.is_empty() => {
            let min = up.answers.iter().map(|r| r.ttl).min()?;
            let ttl = Duration::from_secs(u64::from(min)).min(cfg.max_ttl);
            (!ttl.is_zero()).then_some(ttl)
        }
        ResponseCode::NoError | ResponseCode::NXDomain => {
            let soa = up.authorities.iter().find_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            })?;
            let ttl = Duration::from_secs(u64::from(soa)).min(cfg.max_negative_ttl);
            (!ttl.is_zero()).then_some(ttl)
        }
        _ => None,
    }
}

impl Forwarder {
    /// A forwarder.
    pub fn new(cfg: ForwardConfig, metrics: Metrics) -> Self {
        Self {
            cache: Mutex::new(Cache::new(cfg.cache_size)),
            cfg,
            next: AtomicUsize::new(0),
            metrics,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ForwardConfig {
        &self.cfg
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding the lock cannot leave the cache inconsistent in a harmful way
        // (at worst an entry is missing), so a poisoned lock is used as it is.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves `name`/`qtype`/`qclass` through the cache and the upstreams.
    pub async fn resolve(
        &self,
        name: &Name,
        qtype: RecordType,
        qclass: DNSClass,
    ) -> Result<Upstream, ForwardError> {
        let key = (name.to_lowercase(), qtype, qclass);
        let server = ServerLabel {
            server: self.metrics.server.clone(),
        };
        if self.cfg.cache_size > 0 {
            if let Some(hit) = self.cache().get(&key, Instant::now()) {
                let kind = if hit.answers.is_empty() {
                    "denial"
                } else {
                    "success"
                };
                self.metrics
                    .cache_hits
                    .get_or_create(&CacheHitLabels {
                        server: server.server.clone(),
                        kind: TypeLabel {
                            r#type: kind.to_string(),
                        },
                    })
                    .inc();
                return Ok(hit);
            }
            self.metrics.cache_misses.get_or_create(&server).inc();
        }
        let up = self.exchange(name, qtype, qclass).await?;
        if let Some(ttl) = cache_ttl(&up, &self.cfg) {
            let mut cache = self.cache();
            cache.insert(key, up.clone(), Instant::now(), ttl);
            let len = i64::try_from(cache.len()).unwrap_or(i64::MAX);
            drop(cache);
            self.metrics.cache_entries.get_or_create(&server).set(len);
        }
        Ok(up)
    }

    async fn exchange(
        &self,
        name: &Name,
        qtype: RecordType,
        qclass: DNSClass,
    ) -> Result<Upstream, ForwardError> {
        let n = self.cfg.upstreams.len();
        if n == 0 {
            return Err(ForwardError::NoUpstream);
        }
        let deadline = tokio::time::Instant::now() + self.cfg.timeout;
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut errors = Vec::new();
        for i in 0..n {
            let upstream = self.cfg.upstreams[(start + i) % n];
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            // An equal share of what is left for each upstream still to try.
            let share = left / u32::try_from(n - i).unwrap_or(1);
            let to = upstream.to_string();
            self.metrics
                .forward_requests
                .get_or_create(&ToLabel { to: to.clone() })
                .inc();
            match tokio::time::timeout(share, exchange_one(upstream, name, qtype, qclass)).await {
                Ok(Ok(up)) => {
                    self.metrics
                        .forward_responses
                        .get_or_create(&ForwardResponseLabels {
                            to,
                            rcode: up.rcode.to_str().to_string(),
                        })
                        .inc();
                    return Ok(up);
                }
                Ok(Err((reason, err))) => {
                    self.failure(&to, reason);
                    tracing::debug!(%upstream, %name, %err, "upstream exchange failed");
                    errors.push(format!("{upstream}: {err}"));
                }
                Err(_) => {
                    self.failure(&to, "timeout");
                    tracing::debug!(%upstream, %name, "upstream timed out");
                    errors.push(format!("{upstream}: timeout"));
                }
            }
        }
        Err(ForwardError::Failed(errors.join("; ")))
    }

    fn failure(&self, to: &str, reason: &str) {
        self.metrics
            .forward_failures
            .get_or_create(&FailureLabels {
                to: to.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }
}

type ExchangeError = (&'static str, String);

fn query_message(name: &Name, qtype: RecordType, qclass: DNSClass) -> Message {
    let mut msg = Message::new(rand::random::<u16>(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    let mut q = Query::query(name.clone(), qtype);
    q.set_query_class(qclass);
    msg.add_query(q);
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    msg.set_edns(edns);
    msg
}

/// Whether `reply` answers `query` (id, response flag, same question).
fn matches(query: &Message, reply: &Message) -> bool {
    reply.metadata.id == query.metadata.id
        && reply.metadata.message_type == MessageType::Response
        && reply.queries.len() == 1
        && query.queries.first().is_some_and(|q| {
            let r = &reply.queries[0];
            r.query_type() == q.query_type()
                && r.query_class() == q.query_class()
                && r.name().to_lowercase() == q.name().to_lowercase()
        })
}

fn upstream_of(reply: Message) -> Upstream {
    Upstream {
        rcode: reply.metadata.response_code,
        answers: reply.answers,
        authorities: reply.authorities,
        additionals: reply
            .additionals
            .into_iter()
            .filter(|r| r.record_type() != RecordType::OPT)
            .collect(),
    }
}

async fn exchange_one(
    upstream: SocketAddr,
    name: &Name,
    qtype: RecordType,
    qclass: DNSClass,
) -> Result<Upstream, ExchangeError> {
    let query = query_message(name, qtype, qclass);
    let bytes = query.to_vec().map_err(|e| ("malformed", e.to_string()))?;
    let bind: SocketAddr = if upstream.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    };
    let io = |e: std::io::Error| ("io", e.to_string());
    let sock = UdpSocket::bind(bind).await.map_err(io)?;
    sock.connect(upstream).await.map_err(io)?;
    sock.send(&bytes).await.map_err(io)?;
    let mut buf = vec![0u8; 65535];
    loop {
        let len = sock.recv(&mut buf).await.map_err(io)?;
        let Ok(reply) = Message::from_vec(&buf[..len]) else {
            // Not a DNS message (or garbage): keep waiting for the real reply.
            continue;
        };
        if !matches(&query, &reply) {
            continue;
        }
        if reply.metadata.truncation {
            return exchange_tcp(upstream, &query, &bytes).await;
        }
        return Ok(upstream_of(reply));
    }
}

async fn exchange_tcp(
    upstream: SocketAddr,
    query: &Message,
    bytes: &[u8],
) -> Result<Upstream, ExchangeError> {
    let io = |e: std::io::Error| ("io", e.to_string());
    let mut stream = TcpStream::connect(upstream).await.map_err(io)?;
    let len = u16::try_from(bytes.len()).map_err(|_| ("malformed", "query too long".into()))?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await.map_err(io)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.map_err(io)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await.map_err(io)?;
    let reply = Message::from_vec(&buf).map_err(|e| ("malformed", e.to_string()))?;
    if !matches(query, &reply) {
        return Err(("malformed", "reply does not match the query".into()));
    }
    Ok(upstream_of(reply))
}

/// The `nameserver` addresses of a resolv.conf text (port 53).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|addr| {
            // Drop an IPv6 zone index (`fe80::1%eth0`): SocketAddr cannot carry its name.
            let addr = addr.split('%').next().unwrap_or(addr);
            addr.parse::<std::net::IpAddr>().ok()
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SOA};

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("test name")
    }

    fn a(ttl: u32) -> Upstream {
        Upstream {
            rcode: ResponseCode::NoError,
            answers: vec![Record::from_rdata(
                name("x.example."),
                ttl,
                RData::A(A::new(192, 0, 2, 1)),
            )],
            authorities: vec![],
            additionals: vec![],
        }
    }

    fn key(s: &str) -> CacheKey {
        (name(s), RecordType::A, DNSClass::IN)
    }

    #[test]
    fn cache_is_bounded_and_expires() {
        let mut c = Cache::new(2);
        let now = Instant::now();
        let ttl = Duration::from_secs(10);
        c.insert(key("a."), a(10), now, ttl);
        c.insert(key("b."), a(10), now, ttl);
        c.insert(key("c."), a(10), now, ttl);
        assert_eq!(c.len(), 2);
        assert!(c.get(&key("a."), now).is_none(), "oldest evicted");
        let hit = c
            .get(&key("b."), now + Duration::from_secs(3))
            .expect("hit");
        assert_eq!(hit.answers[0].ttl, 7, "TTL counts down");
        assert!(c.get(&key("b."), now + ttl).is_none(), "expired");
        // Re-inserting one key many times keeps the order queue bounded.
        for _ in 0..100 {
            c.insert(key("c."), a(10), now, ttl);
        }
        assert!(c.order.len() <= 4);
        let mut off = Cache::new(0);
        off.insert(key("a."), a(10), now, ttl);
        assert_eq!(off.len(), 0);
    }

    #[test]
    fn cache_ttls_are_bounded() {
        let cfg = ForwardConfig::new(vec![]);
        assert_eq!(cache_ttl(&a(30), &cfg), Some(Duration::from_secs(30)));
        assert_eq!(cache_ttl(&a(86400), &cfg), Some(cfg.max_ttl));
        assert_eq!(cache_ttl(&a(0), &cfg), None);
        let soa = Record::from_rdata(
            name("example."),
            3600,
            RData::SOA(SOA::new(
                name("ns.example."),
                name("h.example."),
                1,
                1,
                1,
                1,
                900,
            )),
        );
        let nx = Upstream {
            rcode: ResponseCode::NXDomain,
            answers: vec![],
            authorities: vec![soa],
            additionals: vec![],
        };
        assert_eq!(cache_ttl(&nx, &cfg), Some(cfg.max_negative_ttl));
        let fail = Upstream {
            rcode: ResponseCode::ServFail,
            ..nx.clone()
        };
        assert_eq!(cache_ttl(&fail, &cfg), None);
        let no_soa = Upstream {
            authorities: vec![],
            ..nx
        };
        assert_eq!(cache_ttl(&no_soa, &cfg), None);
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# comment\nsearch svc.cluster.local\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nnameserver bogus\noptions ndots:5\n";
        let got = parse_resolv_conf(text);
        assert_eq!(
            got,
            vec![
                "10.0.0.2:53".parse::<SocketAddr>().expect("addr"),
                "[fe80::1]:53".parse().expect("addr")
            ]
        );
    }

    #[tokio::test]
    async fn dead_upstream_fails_within_the_deadline() {
        // A bound socket that never answers.
        let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = silent.local_addr().expect("addr");
        let mut cfg = ForwardConfig::new(vec![addr, addr]);
        cfg.timeout = Duration::from_millis(300);
        let fwd = Forwarder::new(cfg, Metrics::unregistered("test"));
        let started = Instant::now();
        let err = fwd
            .resolve(&name("example.com."), RecordType::A, DNSClass::IN)
            .await
            .expect_err("no answer");
        assert!(matches!(err, ForwardError::Failed(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
        let none = Forwarder::new(ForwardConfig::new(vec![]), Metrics::unregistered("t"));
        assert_eq!(
            none.resolve(&name("example.com."), RecordType::A, DNSClass::IN)
                .await,
            Err(ForwardError::NoUpstream)
        );
    }
}
