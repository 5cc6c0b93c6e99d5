//! The request path and the UDP / TCP listeners.
//!
//! [`Handler::handle`] turns one request packet into one response packet (or none):
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
//! * Everything else goes to the [`Forwarder`]; a failure there answers SERVFAIL.
//!
//! Listeners: one task reads the UDP socket and spawns a task per request (at most
//! [`MAX_INFLIGHT_UDP`] at once; more are dropped, as an overloaded resolver does); TCP
//! accepts at most [`MAX_TCP_CONNECTIONS`] connections, each serving any number of
//! length-prefixed requests until it idles for [`TCP_IDLE`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::answer::{self, Answer, Config, Outcome};
use crate::forward::{Forwarder, Upstream};
use crate::index::Index;
use crate::metrics::{DurationLabels, Metrics, RequestLabels, ResponseLabels, ZONE};

/// The EDNS payload size this server advertises.
pub const ADVERTISED_PAYLOAD: u16 = 1232;
/// Largest UDP response sent whatever the client advertises.
pub const MAX_UDP_PAYLOAD: u16 = 4096;
/// UDP requests handled at once.
pub const MAX_INFLIGHT_UDP: usize = 10_000;
/// Open TCP connections at most.
pub const MAX_TCP_CONNECTIONS: usize = 1_000;
/// A TCP connection idle this long is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(10);

/// The transport a request came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// UDP: responses are size-limited.
    Udp,
    /// TCP: up to 65,535 bytes.
    Tcp,
}

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
}

/// Which part produced a response (the `plugin` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Kubernetes,
    Forward,
    Server,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Kubernetes => "kubernetes",
            Source::Forward => "forward",
            Source::Server => "",
        }
    }
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

impl Handler {
    /// Answers one request packet. `None`: send nothing.
    pub async fn handle(&self, packet: &[u8], proto: Proto, peer: SocketAddr) -> Option<Vec<u8>> {
        let started = Instant::now();
        let Ok(req) = Message::from_vec(packet) else {
            return undecodable(packet);
        };
        if req.metadata.message_type != MessageType::Query {
            return None;
        }
        let qtype = req
            .queries
            .first()
            .map_or(RecordType::Unknown(0), Query::query_type);
        let type_label = Metrics::type_label(qtype);
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                server: self.metrics.server.clone(),
                zone: ZONE.to_string(),
                proto: match proto {
                    Proto::Udp => "udp",
                    Proto::Tcp => "tcp",
                }
                .to_string(),
                family: if peer.is_ipv4() { "1" } else { "2" }.to_string(),
                qtype: type_label.clone(),
            })
            .inc();
        let (mut resp, source) = self.respond(&req).await;
        let limit = match proto {
            Proto::Tcp => usize::from(u16::MAX),
            Proto::Udp => {
                let asked = req.edns.as_ref().map_or(512, Edns::max_payload);
                usize::from(asked.clamp(512, MAX_UDP_PAYLOAD))
            }
        };
        let rcode = resp.metadata.response_code;
        let bytes = match encode_limited(&mut resp, limit) {
            Some(b) => Some(b),
            None => {
                // Nothing fits (a question too long for the limit): SERVFAIL without records.
                let mut fail =
                    error_response(req.metadata.id, OpCode::Query, ResponseCode::ServFail);
                fail.queries = req.queries.clone();
                encode_limited(&mut fail, limit).or_else(|| fail.to_vec().ok())
            }
        };
        self.metrics
            .responses
            .get_or_create(&ResponseLabels {
                server: self.metrics.server.clone(),
                zone: ZONE.to_string(),
                rcode: rcode.to_str().to_string(),
                plugin: source.label().to_string(),
            })
            .inc();
        self.metrics
            .duration
            .get_or_create(&DurationLabels {
                server: self.metrics.server.clone(),
                zone: ZONE.to_string(),
                qtype: type_label,
            })
            .observe(started.elapsed().as_secs_f64());
        bytes
    }

    async fn respond(&self, req: &Message) -> (Message, Source) {
        let id = req.metadata.id;
        if req.metadata.op_code != OpCode::Query {
            return (
                error_response(id, req.metadata.op_code, ResponseCode::NotImp),
                Source::Server,
            );
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
                return (resp, Source::Server);
            }
        }
        if req.queries.len() != 1 {
            resp.metadata.response_code = ResponseCode::FormErr;
            return (resp, Source::Server);
        }
        let q = &req.queries[0];
        let (qname, qtype, qclass) = (q.name(), q.query_type(), q.query_class());
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            resp.metadata.response_code = ResponseCode::Refused;
            return (resp, Source::Server);
        }
        let outcome = if answer::class_supported(qclass) {
            let in_zone = self.config.zone.zone_of(&qname.to_lowercase());
            if in_zone && !self.synced.load(Ordering::Acquire) {
                resp.metadata.response_code = ResponseCode::ServFail;
                return (resp, Source::Kubernetes);
            }
            // A poisoned lock means a writer panicked mid-update; the index is still a
            // consistent value for reading (each method leaves it whole), so keep serving.
            let index = self.index.read().unwrap_or_else(|e| e.into_inner());
            answer::answer(&index, &self.config, qname, qtype)
        } else if self.config.zone.zone_of(&qname.to_lowercase()) {
            resp.metadata.response_code = ResponseCode::Refused;
            return (resp, Source::Server);
        } else {
            Outcome::Forward
        };
        match outcome {
            Outcome::Answer(a) => {
                fill(&mut resp, a);
                resp.metadata.authoritative = true;
                (resp, Source::Kubernetes)
            }
            Outcome::Chase {
                answer,
                target,
                qtype,
            } => {
                fill(&mut resp, answer);
                resp.metadata.authoritative = true;
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
                (resp, Source::Kubernetes)
            }
            Outcome::Forward => match self.forwarder.resolve(qname, qtype, qclass).await {
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
                    (resp, Source::Forward)
                }
                Err(err) => {
                    tracing::debug!(name = %qname, %err, "forwarding failed");
                    resp.metadata.response_code = ResponseCode::ServFail;
                    (resp, Source::Forward)
                }
            },
        }
    }
}

fn fill(resp: &mut Message, a: Answer) {
    resp.metadata.response_code = a.rcode;
    resp.answers = a.answers;
    resp.authorities = a.authorities;
    resp.additionals = a.additionals;
}

/// Binds the UDP socket and the TCP listener of `addr` (fails fast on a busy port).
pub async fn bind(addr: SocketAddr) -> crate::Result<(UdpSocket, TcpListener)> {
    let udp = UdpSocket::bind(addr)
        .await
        .map_err(|source| crate::Error::Io {
            what: format!("binding UDP {addr}"),
            source,
        })?;
    // The same port for TCP (`:0` picks one for UDP first).
    let tcp_addr = udp.local_addr().map_err(|source| crate::Error::Io {
        what: format!("address of UDP {addr}"),
        source,
    })?;
    let tcp = TcpListener::bind(tcp_addr)
        .await
        .map_err(|source| crate::Error::Io {
            what: format!("binding TCP {tcp_addr}"),
            source,
        })?;
    Ok((udp, tcp))
}

/// Serves UDP requests on `sock` forever.
pub async fn serve_udp(handler: Arc<Handler>, sock: UdpSocket) {
    let sock = Arc::new(sock);
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT_UDP));
    let mut buf = vec![0u8; 65535];
    loop {
        let (len, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(err) => {
                // ICMP errors of earlier sends surface here on some systems; keep reading.
                tracing::debug!(%err, "UDP receive failed");
                continue;
            }
        };
        let Ok(permit) = inflight.clone().try_acquire_owned() else {
            continue;
        };
        let packet = buf[..len].to_vec();
        let (handler, sock) = (handler.clone(), sock.clone());
        tokio::spawn(async move {
            if let Some(resp) = handler.handle(&packet, Proto::Udp, peer).await {
                if let Err(err) = sock.send_to(&resp, peer).await {
                    tracing::debug!(%peer, %err, "UDP send failed");
                }
            }
            drop(permit);
        });
    }
}

/// Serves TCP connections on `listener` forever.
pub async fn serve_tcp(handler: Arc<Handler>, listener: TcpListener) {
    let conns = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(err) => {
                tracing::warn!(%err, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            if let Err(err) = tcp_connection(&handler, stream, peer).await {
                tracing::debug!(%peer, %err, "TCP connection ended");
            }
            drop(permit);
        });
    }
}

async fn tcp_connection(
    handler: &Handler,
    mut stream: TcpStream,
    peer: SocketAddr,
) -> std::io::Result<()> {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        }
        let mut packet = vec![0u8; usize::from(u16::from_be_bytes(len))];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut packet)).await {
            Ok(r) => {
                r?;
            }
            Err(_) => return Ok(()),
        }
        let Some(resp) = handler.handle(&packet, Proto::Tcp, peer).await else {
            continue;
        };
        let Ok(rlen) = u16::try_from(resp.len()) else {
            continue;
        };
        let mut framed = Vec::with_capacity(resp.len() + 2);
        framed.extend_from_slice(&rlen.to_be_bytes());
        framed.extend_from_slice(&resp);
        stream.write_all(&framed).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::PodMode;
    use crate::forward::ForwardConfig;
    use crate::index::tests::{cluster_ip, ep, headless, port, slice};
    use hickory_proto::rr::Name;
    use proptest::prelude::*;

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
        Handler {
            index: Arc::new(RwLock::new(idx)),
            config: Config::new("cluster.local", 5, PodMode::Insecure).expect("zone"),
            forwarder: Forwarder::new(fcfg, Metrics::unregistered("test")),
            metrics: Metrics::unregistered("test"),
            synced: Arc::new(AtomicBool::new(true)),
        }
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
