//! The request path: one request packet in, one response packet (or none) out.
//!
//! * A packet that does not decode is answered FORMERR when its 12-byte header does (echoing
//!   the id and opcode) and is a query; otherwise it is dropped. Responses are never answered
//!   (a spoofed response could otherwise start a loop between two servers).
//! * Only standard queries with exactly one question are served (other opcodes: NOTIMP; zero or
//!   several questions: FORMERR; EDNS versions above 0: BADVERS; zone transfers: REFUSED).
//! * EDNS0: a request with an OPT record gets one back (payload 1232, as the 2020 DNS flag day
//!   recommends). A UDP response must fit the client's advertised payload size (512 bytes
//!   without EDNS): the additional section is dropped first (RFC 2181 §9: no TC for that),
//!   then answers are cut and TC is set, so the client retries over TCP, where up to 65,535
//!   bytes go.
//! * Cluster names are answered from the shared [`Index`] under a read lock held only while the
//!   answer is computed (updates take the write lock briefly per watch event; requests never
//!   wait on one another). Until every watched kind has been listed once, cluster names answer
//!   SERVFAIL, so that clients neither cache nor trust an answer from incomplete data.
//!   Encoded cluster answers are memoised in the [`AnswerCache`] for the index generation they
//!   came from, so a repeated question costs a lookup and a copy.
//! * Everything else goes to the [`Forwarder`]; a failure there answers SERVFAIL.
//!
//! [`Handler::handle_local`] does everything that needs no network and hands back a
//! [`Pending`] request only when an upstream must be asked; the UDP listener answers the first
//! kind inline and spawns a task only for the second.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::answer::{self, Answer, Config, Outcome};
use crate::answer_cache::{self, AnswerCache};
use crate::forward::{Forwarder, Upstream};
use crate::index::Index;
use crate::metrics::{Metrics, Plugin};
pub use crate::transport::Proto;

/// The EDNS payload size this server advertises.
pub const ADVERTISED_PAYLOAD: u16 = 1232;
/// Largest UDP response sent whatever the client advertises.
pub const MAX_UDP_PAYLOAD: u16 = 4096;
/// Answers kept by [`AnswerCache`] per transport unless configured otherwise.
pub const DEFAULT_ANSWER_CACHE: usize = 10_000;

/// Everything a request needs. Shared by every listener task.
pub struct Handler {
    /// The cluster data.
    pub index: Arc<RwLock<Index>>,
    /// Zone, TTL, pod mode.
    pub config: Config,
    /// Upstream resolution.
    pub forwarder: Forwarder,
    /// Metrics.
    pub metrics: Metrics,
    /// Whether every watched kind has been listed once.
    pub synced: Arc<AtomicBool>,
    /// Encoded cluster answers.
    pub answers: AnswerCache,
}

/// What [`Handler::handle_local`] did with a request.
pub enum Handled {
    /// The response to send (`None`: send nothing).
    Done(Option<Vec<u8>>),
    /// An upstream must be asked first: pass this to [`Handler::resolve`].
    Upstream(Box<Pending>),
}

/// A request waiting on an upstream.
pub struct Pending {
    req: Message,
    resp: Message,
    lookup: Lookup,
    proto: Proto,
    started: Instant,
}

/// What to ask the upstream.
enum Lookup {
    /// Append the answer for an ExternalName's target to the CNAME already in the response.
    Chase {
        target: Name,
        qtype: RecordType,
        qclass: DNSClass,
    },
    /// The whole answer comes from upstream.
    Forward,
}

/// The locally computed part of a response.
enum Local {
    /// Complete. `generation`: the index generation of a cacheable cluster answer.
    Done {
        resp: Message,
        plugin: Plugin,
        generation: Option<u64>,
    },
    /// Needs an upstream.
    Upstream(Message, Lookup),
}

fn error_response(id: u16, op_code: OpCode, rcode: ResponseCode) -> Message {
    let mut m = Message::error_msg(id, op_code, rcode);
    m.metadata.recursion_available = true;
    m
}

/// FORMERR for a packet whose header decodes, `None` (drop) otherwise.
fn undecodable(packet: &[u8]) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(packet)).ok()?;
    if header.metadata.message_type != MessageType::Query {
        return None;
    }
    error_response(
        header.metadata.id,
        header.metadata.op_code,
        ResponseCode::FormErr,
    )
    .to_vec()
    .ok()
}

/// Encodes `msg` into at most `limit` bytes (see the module doc for what is cut).
pub fn encode_limited(msg: &mut Message, limit: usize) -> Option<Vec<u8>> {
    if let Ok(bytes) = msg.to_vec() {
        if bytes.len() <= limit {
            return Some(bytes);
        }
    }
    msg.additionals.clear();
    if let Ok(bytes) = msg.to_vec() {
        if bytes.len() <= limit {
            return Some(bytes);
        }
    }
    msg.metadata.truncation = true;
    msg.authorities.clear();
    let all = std::mem::take(&mut msg.answers);
    // The largest number of answers that still fits (binary search; `0` always fits when the
    // question does).
    let (mut lo, mut hi) = (0usize, all.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        msg.answers = all[..mid].to_vec();
        match msg.to_vec() {
            Ok(b) if b.len() <= limit => lo = mid,
            _ => hi = mid - 1,
        }
    }
    msg.answers = all[..lo].to_vec();
    msg.to_vec().ok().filter(|b| b.len() <= limit)
}

fn qtype_of(req: &Message) -> RecordType {
    req.queries
        .first()
        .map_or(RecordType::Unknown(0), Query::query_type)
}

impl Handler {
    /// A handler with an answer cache of `answer_cache` entries per transport (0: none).
    pub fn new(
        index: Arc<RwLock<Index>>,
        config: Config,
        forwarder: Forwarder,
        metrics: Metrics,
        synced: Arc<AtomicBool>,
        answer_cache: usize,
    ) -> Self {
        Self {
            index,
            config,
            forwarder,
            metrics,
            synced,
            answers: AnswerCache::new(answer_cache),
        }
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        // A poisoned lock means a writer panicked mid-update; the index is still a consistent
        // value for reading (each method leaves it whole), so keep serving.
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers one request packet, asking an upstream if needed. `None`: send nothing.
    pub async fn handle(&self, packet: &[u8], proto: Proto, peer: SocketAddr) -> Option<Vec<u8>> {
        match self.handle_local(packet, proto, peer) {
            Handled::Done(bytes) => bytes,
            Handled::Upstream(pending) => self.resolve(pending).await,
        }
    }

    /// Everything that needs no upstream, without waiting on anything but the index lock.
    pub fn handle_local(&self, packet: &[u8], proto: Proto, peer: SocketAddr) -> Handled {
        let started = Instant::now();
        let synced = self.synced.load(Ordering::Acquire);
        if synced {
            let generation = self.read_index().generation();
            if let Some((bytes, meta)) = self.answers.get(packet, proto, generation) {
                self.metrics.answer_cache_hits.inc();
                self.metrics
                    .count_request(proto == Proto::Tcp, peer.is_ipv6(), meta.qtype);
                self.metrics.count_response(meta.rcode, Plugin::Kubernetes);
                self.metrics
                    .observe_duration(meta.qtype, started.elapsed().as_secs_f64());
                return Handled::Done(Some(bytes));
            }
        }
        let Ok(req) = Message::from_vec(packet) else {
            return Handled::Done(undecodable(packet));
        };
        if req.metadata.message_type != MessageType::Query {
            return Handled::Done(None);
        }
        let qtype = qtype_of(&req);
        self.metrics
            .count_request(proto == Proto::Tcp, peer.is_ipv6(), qtype);
        match self.respond_local(&req, synced) {
            Local::Done {
                mut resp,
                plugin,
                generation,
            } => {
                let bytes = self.finish(&req, &mut resp, plugin, proto, started);
                if let (Some(generation), Some(bytes)) = (generation, &bytes) {
                    self.metrics.answer_cache_misses.inc();
                    let meta = answer_cache::Meta {
                        qtype,
                        rcode: resp.metadata.response_code,
                    };
                    self.answers.insert(packet, proto, generation, bytes, meta);
                }
                Handled::Done(bytes)
            }
            Local::Upstream(resp, lookup) => Handled::Upstream(Box::new(Pending {
                req,
                resp,
                lookup,
                proto,
                started,
            })),
        }
    }

    /// Completes a request that needed an upstream.
    pub async fn resolve(&self, pending: Box<Pending>) -> Option<Vec<u8>> {
        let Pending {
            req,
            mut resp,
            lookup,
            proto,
            started,
        } = *pending;
        let plugin = match lookup {
            Lookup::Chase {
                target,
                qtype,
                qclass,
            } => {
                match self.forwarder.resolve(&target, qtype, qclass).await {
                    Ok(up) => {
                        if matches!(up.rcode, ResponseCode::NoError | ResponseCode::NXDomain) {
                            resp.metadata.response_code = up.rcode;
                            resp.answers.extend(up.answers);
                        }
                    }
                    Err(err) => {
                        tracing::debug!(%target, %err, "chasing an ExternalName target failed");
                    }
                }
                Plugin::Kubernetes
            }
            Lookup::Forward => {
                let q = &req.queries[0];
                match self
                    .forwarder
                    .resolve(q.name(), q.query_type(), q.query_class())
                    .await
                {
                    Ok(Upstream {
                        rcode,
                        answers,
                        authorities,
                        additionals,
                    }) => {
                        resp.metadata.response_code = rcode;
                        resp.answers = answers;
                        resp.authorities = authorities;
                        resp.additionals = additionals;
                    }
                    Err(err) => {
                        tracing::debug!(name = %q.name(), %err, "forwarding failed");
                        resp.metadata.response_code = ResponseCode::ServFail;
                    }
                }
                Plugin::Forward
            }
        };
        self.finish(&req, &mut resp, plugin, proto, started)
    }

    /// Encodes `resp` within the transport's size limit and records its metrics.
    fn finish(
        &self,
        req: &Message,
        resp: &mut Message,
        plugin: Plugin,
        proto: Proto,
        started: Instant,
    ) -> Option<Vec<u8>> {
        let limit = match proto {
            Proto::Tcp => usize::from(u16::MAX),
            Proto::Udp => {
                let asked = req.edns.as_ref().map_or(512, Edns::max_payload);
                usize::from(asked.clamp(512, MAX_UDP_PAYLOAD))
            }
        };
        let rcode = resp.metadata.response_code;
        let bytes = match encode_limited(resp, limit) {
            Some(b) => Some(b),
            None => {
                // Nothing fits (the question section alone is too long for the limit):
                // SERVFAIL with the question when that fits, else the bare header, which
                // always does.
                let mut fail =
                    error_response(req.metadata.id, OpCode::Query, ResponseCode::ServFail);
                fail.queries = req.queries.clone();
                encode_limited(&mut fail, limit).or_else(|| {
                    fail.queries.clear();
                    fail.to_vec().ok()
                })
            }
        };
        self.metrics.count_response(rcode, plugin);
        self.metrics
            .observe_duration(qtype_of(req), started.elapsed().as_secs_f64());
        bytes
    }

    fn respond_local(&self, req: &Message, synced: bool) -> Local {
        let id = req.metadata.id;
        let server = |resp| Local::Done {
            resp,
            plugin: Plugin::Server,
            generation: None,
        };
        if req.metadata.op_code != OpCode::Query {
            return server(error_response(
                id,
                req.metadata.op_code,
                ResponseCode::NotImp,
            ));
        }
        let mut resp = Message::response(id, OpCode::Query);
        resp.metadata.recursion_desired = req.metadata.recursion_desired;
        resp.metadata.recursion_available = true;
        resp.metadata.checking_disabled = req.metadata.checking_disabled;
        resp.queries = req.queries.clone();
        if let Some(edns) = &req.edns {
            let mut ours = Edns::new();
            ours.set_max_payload(ADVERTISED_PAYLOAD);
            resp.set_edns(ours);
            if edns.version() > 0 {
                resp.metadata.response_code = ResponseCode::BADVERS;
                return server(resp);
            }
        }
        if req.queries.len() != 1 {
            // Echoing several questions could itself exceed the size limit; none is needed.
            resp.queries.clear();
            resp.metadata.response_code = ResponseCode::FormErr;
            return server(resp);
        }
        let q = &req.queries[0];
        let (qname, qtype, qclass) = (q.name(), q.query_type(), q.query_class());
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            resp.metadata.response_code = ResponseCode::Refused;
            return server(resp);
        }
        let in_zone = self.config.zone.zone_of(&qname.to_lowercase());
        if !answer::class_supported(qclass) {
            if in_zone {
                resp.metadata.response_code = ResponseCode::Refused;
                return server(resp);
            }
            return Local::Upstream(resp, Lookup::Forward);
        }
        if in_zone && !synced {
            resp.metadata.response_code = ResponseCode::ServFail;
            return Local::Done {
                resp,
                plugin: Plugin::Kubernetes,
                generation: None,
            };
        }
        let (outcome, generation) = {
            let index = self.read_index();
            (
                answer::answer(&index, &self.config, qname, qtype),
                index.generation(),
            )
        };
        match outcome {
            Outcome::Answer(a) => {
                fill(&mut resp, a);
                resp.metadata.authoritative = true;
                Local::Done {
                    resp,
                    plugin: Plugin::Kubernetes,
                    generation: Some(generation),
                }
            }
            Outcome::Chase {
                answer,
                target,
                qtype,
            } => {
                fill(&mut resp, answer);
                resp.metadata.authoritative = true;
                Local::Upstream(
                    resp,
                    Lookup::Chase {
                        target,
                        qtype,
                        qclass,
                    },
                )
            }
            Outcome::Forward => Local::Upstream(resp, Lookup::Forward),
        }
    }
}

fn fill(resp: &mut Message, a: Answer) {
    resp.metadata.response_code = a.rcode;
    resp.answers = a.answers;
    resp.authorities = a.authorities;
    resp.additionals = a.additionals;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::PodMode;
    use crate::forward::ForwardConfig;
    use crate::index::tests::{cluster_ip, ep, headless, port, slice};
    use hickory_proto::rr::Name;
    use proptest::prelude::*;
    use std::time::Duration;

    fn handler() -> Handler {
        let mut idx = Index::new();
        idx.reset_namespaces(vec!["ns".to_string()]);
        idx.apply_service(cluster_ip(
            "ns",
            "web",
            &["10.96.0.10"],
            vec![port("http", "TCP", 80)],
        ));
        idx.apply_service(headless("ns", "big", vec![port("http", "TCP", 80)]));
        let eps = (0..100)
            .map(|i| {
                ep(
                    &format!("10.2.{}.{}", i / 250, i % 250 + 1),
                    Some(true),
                    None,
                )
            })
            .collect();
        idx.apply_slice(slice(
            "ns",
            "big-1",
            "big",
            vec![port("http", "TCP", 80)],
            eps,
        ));
        let mut fcfg = ForwardConfig::new(vec![]);
        fcfg.timeout = Duration::from_millis(100);
        Handler::new(
            Arc::new(RwLock::new(idx)),
            Config::new("cluster.local", 5, PodMode::Insecure).expect("zone"),
            Forwarder::new(fcfg, Metrics::unregistered("test")),
            Metrics::unregistered("test"),
            Arc::new(AtomicBool::new(true)),
            DEFAULT_ANSWER_CACHE,
        )
    }

    fn query(name: &str, t: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).expect("name"), t));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().expect("encode")
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:5353".parse().expect("addr")
    }

    async fn ask(h: &Handler, packet: &[u8], proto: Proto) -> Message {
        let bytes = h.handle(packet, proto, peer()).await.expect("a response");
        Message::from_vec(&bytes).expect("decodable response")
    }

    #[tokio::test]
    async fn answers_authoritatively_with_the_question_echoed() {
        let h = handler();
        let r = ask(
            &h,
            &query("web.ns.svc.cluster.local.", RecordType::A, None),
            Proto::Udp,
        )
        .await;
        assert_eq!(r.metadata.id, 0x1234);
        assert_eq!(r.metadata.message_type, MessageType::Response);
        assert!(r.metadata.authoritative && r.metadata.recursion_desired);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(r.queries.len(), 1);
        assert_eq!(r.answers.len(), 1);
        assert!(r.edns.is_none(), "no OPT without one in the request");
        let r = ask(
            &h,
            &query("web.ns.svc.cluster.local.", RecordType::A, Some(4096)),
            Proto::Udp,
        )
        .await;
        assert_eq!(
            r.edns.as_ref().map(Edns::max_payload),
            Some(ADVERTISED_PAYLOAD)
        );
    }

    #[tokio::test]
    async fn repeated_questions_come_from_the_cache_until_the_index_changes() {
        let h = handler();
        let name = "web.ns.svc.cluster.local.";
        let addr = |r: &Message| r.answers.first().map(|a| a.data.to_string());
        let first = ask(&h, &query(name, RecordType::A, None), Proto::Udp).await;
        assert_eq!(addr(&first).as_deref(), Some("10.96.0.10"));
        assert_eq!(h.answers.len(), 1, "the answer was stored");
        // Same question, another id: served from the cache with that id.
        let mut again = query(name, RecordType::A, None);
        again[..2].copy_from_slice(&[0xab, 0xcd]);
        let r = ask(&h, &again, Proto::Udp).await;
        assert_eq!(r.metadata.id, 0xabcd);
        assert_eq!(h.metrics.answer_cache_hits.get(), 1);
        // Another letter case is another key and keeps its case in the answer.
        let r = ask(
            &h,
            &query("WEB.ns.svc.cluster.local.", RecordType::A, None),
            Proto::Udp,
        )
        .await;
        assert_eq!(r.queries[0].name().to_ascii(), "WEB.ns.svc.cluster.local.");
        // A change to the Service is answered at once.
        h.index.write().expect("lock").apply_service(cluster_ip(
            "ns",
            "web",
            &["10.96.0.99"],
            vec![port("http", "TCP", 80)],
        ));
        let r = ask(&h, &query(name, RecordType::A, None), Proto::Udp).await;
        assert_eq!(addr(&r).as_deref(), Some("10.96.0.99"));
        // Unsynced: never from the cache.
        h.synced.store(false, Ordering::Release);
        let r = ask(&h, &query(name, RecordType::A, None), Proto::Udp).await;
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    }

    #[tokio::test]
    async fn udp_responses_respect_the_payload_size_and_set_tc() {
        let h = handler();
        let q = "big.ns.svc.cluster.local.";
        // 100 A records (~1.6 kB) do not fit 512 bytes.
        let r = ask(&h, &query(q, RecordType::A, None), Proto::Udp).await;
        assert!(r.metadata.truncation);
        assert!(r.answers.len() < 100);
        let bytes = h
            .handle(&query(q, RecordType::A, None), Proto::Udp, peer())
            .await
            .expect("response");
        assert!(bytes.len() <= 512);
        // EDNS 4096 fits them all.
        let r = ask(&h, &query(q, RecordType::A, Some(4096)), Proto::Udp).await;
        assert!(!r.metadata.truncation);
        assert_eq!(r.answers.len(), 100);
        // TCP has no such limit.
        let r = ask(&h, &query(q, RecordType::A, None), Proto::Tcp).await;
        assert!(!r.metadata.truncation);
        assert_eq!(r.answers.len(), 100);
        // SRV: additionals go first, without TC, when the answers alone fit.
        let r = ask(&h, &query(q, RecordType::SRV, Some(4096)), Proto::Udp).await;
        assert!(
            r.metadata.truncation,
            "200 SRV records do not fit 4096 bytes"
        );
    }

    #[tokio::test]
    async fn malformed_requests_get_formerr_or_nothing() {
        let h = handler();
        // A header alone claiming one question: FORMERR with the id echoed.
        let mut packet = query("web.ns.svc.cluster.local.", RecordType::A, None);
        packet.truncate(14);
        let r = ask(&h, &packet, Proto::Udp).await;
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(r.metadata.id, 0x1234);
        // Shorter than a header: dropped.
        assert!(h.handle(&[1, 2, 3], Proto::Udp, peer()).await.is_none());
        // A response is never answered.
        let mut resp = Message::response(7, OpCode::Query);
        resp.add_query(Query::query(Name::root(), RecordType::A));
        let bytes = resp.to_vec().expect("encode");
        assert!(h.handle(&bytes, Proto::Udp, peer()).await.is_none());
        // A compression pointer loop in the question name.
        let mut looped = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        let r = ask(&h, &looped, Proto::Udp).await;
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        // No question: FORMERR; an update: NOTIMP.
        let empty = Message::new(9, MessageType::Query, OpCode::Query)
            .to_vec()
            .expect("encode");
        let r = ask(&h, &empty, Proto::Udp).await;
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        let mut update = Message::new(9, MessageType::Query, OpCode::Update);
        update.add_query(Query::query(Name::root(), RecordType::SOA));
        let r = ask(&h, &update.to_vec().expect("encode"), Proto::Udp).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
    }

    #[tokio::test]
    async fn unsynced_index_answers_servfail_and_dead_forwarding_too() {
        let h = handler();
        h.synced.store(false, Ordering::Release);
        let r = ask(
            &h,
            &query("web.ns.svc.cluster.local.", RecordType::A, None),
            Proto::Udp,
        )
        .await;
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        // No upstream configured: SERVFAIL.
        let r = ask(&h, &query("example.com.", RecordType::A, None), Proto::Udp).await;
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        assert!(!r.metadata.authoritative);
    }

    #[tokio::test]
    async fn many_questions_get_a_formerr_that_fits_512_bytes() {
        let h = handler();
        let mut m = Message::new(5, MessageType::Query, OpCode::Query);
        // Distinct names, so that compression cannot shrink them.
        for i in 0..7u8 {
            let label = char::from(b'a' + i).to_string().repeat(60);
            let name = format!("{label}.{label}.ns.svc.cluster.local.");
            m.add_query(Query::query(
                Name::from_ascii(&name).expect("name"),
                RecordType::A,
            ));
        }
        let bytes = m.to_vec().expect("encode");
        assert!(bytes.len() > 512);
        let resp = h
            .handle(&bytes, Proto::Udp, peer())
            .await
            .expect("a response");
        assert!(resp.len() <= 512, "{} bytes", resp.len());
        let r = Message::from_vec(&resp).expect("decodes");
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(r.metadata.id, 5);
    }

    #[tokio::test]
    async fn edns_version_1_is_badvers_and_transfers_are_refused() {
        let h = handler();
        let mut m = Message::new(1, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(
            Name::from_ascii("web.ns.svc.cluster.local.").expect("name"),
            RecordType::A,
        ));
        let mut e = Edns::new();
        e.set_version(1);
        m.set_edns(e);
        let r = ask(&h, &m.to_vec().expect("encode"), Proto::Udp).await;
        // BADVERS is 16 (high bits 1, low bits 0); hickory decodes 16 as BADSIG.
        let code = r.metadata.response_code;
        assert_eq!((code.high(), code.low()), (1, 0), "{code:?}");
        let r = ask(
            &h,
            &query("cluster.local.", RecordType::AXFR, None),
            Proto::Tcp,
        )
        .await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Random bytes never panic the request path.
        #[test]
        fn random_packets_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let h = handler();
            let rt = runtime();
            rt.block_on(async {
                let _ = h.handle(&bytes, Proto::Udp, peer()).await;
                let _ = h.handle(&bytes, Proto::Tcp, peer()).await;
            });
        }

        /// Valid queries cut anywhere, or with bytes flipped, never panic.
        #[test]
        fn mangled_queries_never_panic(cut in 0usize..80, flip in 0usize..80, val in any::<u8>()) {
            let h = handler();
            let rt = runtime();
            let mut q = query("_http._tcp.web.ns.svc.cluster.local.", RecordType::SRV, Some(1232));
            if flip < q.len() {
                q[flip] = val;
            }
            q.truncate(cut.min(q.len()));
            rt.block_on(async {
                let _ = h.handle(&q, Proto::Udp, peer()).await;
            });
        }
    }
}
