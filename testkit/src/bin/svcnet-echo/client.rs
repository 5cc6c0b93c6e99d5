//! `svcnet-echo client` and `http-get`: one line per attempt, exit code by outcome.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use testkit::netns::sctp::{self, Chunk, Header};
use testkit::netns::wire::{self, ClientLine, RefuseReason, Reply};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::time::{timeout_at, Instant};

use crate::{nonzero_tag, raw_payload, raw_sctp_socket, ClientArgs, HttpArgs};

/// What the client binds before connecting / sending.
#[derive(Clone, Copy, Debug, Default)]
struct Source {
    ip: Option<IpAddr>,
    port: Option<u16>,
}

impl Source {
    /// The address to bind for `target`, if anything was asked for.
    fn bind_for(self, target: SocketAddr) -> Option<SocketAddr> {
        if self.ip.is_none() && self.port.is_none() {
            return None;
        }
        Some(SocketAddr::new(
            self.ip.unwrap_or_else(|| unspecified_like(target)),
            self.port.unwrap_or(0),
        ))
    }
}

pub(crate) async fn client(args: ClientArgs) -> anyhow::Result<i32> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let source = Source {
        ip: args.source,
        port: args.source_port,
    };
    if args.interactive {
        let Some(target) = args.tcp else {
            eprintln!("svcnet-echo: --interactive needs --tcp");
            return Ok(wire::EXIT_USAGE);
        };
        return interactive(target, source, timeout).await;
    }
    let mut first_failure = None;
    for attempt in 0..args.count.max(1) {
        let started = std::time::Instant::now();
        let mut line = match (args.tcp, args.udp) {
            (Some(target), _) => tcp_once(target, source, timeout).await,
            (None, Some(target)) => udp_once(target, source, timeout, attempt).await,
            (None, None) => match args.sctp {
                Some(target) => sctp_once(target, source, timeout).await,
                None => anyhow::bail!("give --tcp, --udp or --sctp"),
            },
        };
        if let ClientLine::Replied(reply) = &mut line {
            reply.rtt_us = Some(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        }
        println!("{}", serde_json::to_string(&line)?);
        if first_failure.is_none() && line.exit_code() != wire::EXIT_REPLIED {
            first_failure = Some(line.exit_code());
        }
    }
    Ok(first_failure.unwrap_or(wire::EXIT_REPLIED))
}

/// Maps a socket error to the outcome it means for the test.
fn classify(e: &io::Error) -> ClientLine {
    let reason = match e.kind() {
        io::ErrorKind::ConnectionRefused => Some(RefuseReason::ConnectionRefused),
        io::ErrorKind::HostUnreachable => Some(RefuseReason::HostUnreachable),
        io::ErrorKind::NetworkUnreachable => Some(RefuseReason::NetworkUnreachable),
        // ENOPROTOOPT (ICMP protocol unreachable) and EPROTO (ICMPv6 parameter problem, unknown
        // next header) reach raw SCTP sockets when no SCTP server listens.
        _ if matches!(e.raw_os_error(), Some(92) | Some(71)) => {
            Some(RefuseReason::ProtocolUnreachable)
        }
        _ => None,
    };
    match reason {
        Some(reason) => ClientLine::Refused {
            reason,
            error: e.to_string(),
        },
        None => ClientLine::Error {
            error: e.to_string(),
        },
    }
}

fn timeout_line(timeout: Duration) -> ClientLine {
    ClientLine::Timeout {
        after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    }
}

fn unspecified_like(target: SocketAddr) -> IpAddr {
    match target {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

async fn tcp_connect(
    target: SocketAddr,
    source: Source,
    deadline: Instant,
    timeout: Duration,
) -> Result<TcpStream, ClientLine> {
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| ClientLine::Error {
        error: format!("socket: {e}"),
    })?;
    if let Some(bind) = source.bind_for(target) {
        // A fixed source port may still have a connection in TIME_WAIT.
        let reuse = socket.set_reuseaddr(source.port.is_some());
        socket
            .bind(bind)
            .and(reuse)
            .map_err(|e| ClientLine::Error {
                error: format!("bind {bind}: {e}"),
            })?;
    }
    match timeout_at(deadline, socket.connect(target)).await {
        Err(_) => Err(timeout_line(timeout)),
        Ok(Err(e)) => Err(classify(&e)),
        Ok(Ok(stream)) => Ok(stream),
    }
}

/// Reads one reply line before the deadline.
async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    deadline: Instant,
    timeout: Duration,
) -> ClientLine {
    match timeout_at(deadline, lines.next_line()).await {
        Err(_) => timeout_line(timeout),
        Ok(Err(e)) => ClientLine::Error {
            error: format!("connection broken: {e}"),
        },
        Ok(Ok(None)) => ClientLine::Error {
            error: "connection closed before a reply".into(),
        },
        Ok(Ok(Some(line))) => match serde_json::from_str::<Reply>(&line) {
            Ok(reply) => ClientLine::Replied(reply),
            Err(e) => ClientLine::Error {
                error: format!("unexpected reply {line:?}: {e}"),
            },
        },
    }
}

async fn tcp_once(target: SocketAddr, source: Source, timeout: Duration) -> ClientLine {
    let deadline = Instant::now() + timeout;
    let stream = match tcp_connect(target, source, deadline, timeout).await {
        Ok(s) => s,
        Err(line) => return line,
    };
    let mut lines = BufReader::new(stream).lines();
    read_reply(&mut lines, deadline, timeout).await
}

async fn udp_once(
    target: SocketAddr,
    source: Source,
    timeout: Duration,
    attempt: u32,
) -> ClientLine {
    let deadline = Instant::now() + timeout;
    let bind = source
        .bind_for(target)
        .unwrap_or_else(|| SocketAddr::new(unspecified_like(target), 0));
    let socket = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => {
            return ClientLine::Error {
                error: format!("bind {bind}: {e}"),
            }
        }
    };
    // A connected socket receives ICMP errors (port unreachable → ECONNREFUSED).
    if let Err(e) = socket.connect(target).await {
        return classify(&e);
    }
    if let Err(e) = socket.send(format!("ping {attempt}").as_bytes()).await {
        return classify(&e);
    }
    let mut buf = vec![0u8; 65536];
    match timeout_at(deadline, socket.recv(&mut buf)).await {
        Err(_) => timeout_line(timeout),
        Ok(Err(e)) => classify(&e),
        Ok(Ok(n)) => match serde_json::from_slice::<Reply>(&buf[..n]) {
            Ok(reply) => ClientLine::Replied(reply),
            Err(e) => ClientLine::Error {
                error: format!(
                    "unexpected reply {:?}: {e}",
                    String::from_utf8_lossy(&buf[..n])
                ),
            },
        },
    }
}

async fn sctp_once(target: SocketAddr, source: Source, timeout: Duration) -> ClientLine {
    let deadline = Instant::now() + timeout;
    let bound = source.ip.unwrap_or_else(|| unspecified_like(target));
    let socket = match raw_sctp_socket(bound) {
        Ok(s) => s,
        Err(e) => {
            return ClientLine::Error {
                error: format!("raw sctp socket on {bound}: {e}"),
            }
        }
    };
    // Connected, the raw socket receives ICMP errors about what it sent.
    if let Err(e) = socket.connect(SocketAddr::new(target.ip(), 0)).await {
        return classify(&e);
    }
    let src_port = source
        .port
        .unwrap_or_else(|| rand::random_range(32768..61000u16));
    let tag = nonzero_tag();
    let init = Header {
        src_port,
        dst_port: target.port(),
        vtag: 0,
    };
    if let Err(e) = socket
        .send(&sctp::encode(&init, &Chunk::Init { tag }))
        .await
    {
        return classify(&e);
    }
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match timeout_at(deadline, socket.recv(&mut buf)).await {
            Err(_) => return timeout_line(timeout),
            Ok(Err(e)) => return classify(&e),
            Ok(Ok(n)) => n,
        };
        let Some((_, _, pkt)) = raw_payload(&buf[..n], target, bound) else {
            continue;
        };
        let Some((h, chunk)) = sctp::decode(pkt) else {
            continue;
        };
        if h.src_port != target.port() || h.dst_port != src_port || h.vtag != tag {
            continue; // someone else's packet
        }
        match chunk {
            Chunk::InitAck { cookie, .. } => {
                return match serde_json::from_slice::<Reply>(&cookie) {
                    Ok(reply) => ClientLine::Replied(reply),
                    Err(e) => ClientLine::Error {
                        error: format!("unexpected INIT-ACK cookie: {e}"),
                    },
                }
            }
            Chunk::Abort => {
                return ClientLine::Refused {
                    reason: RefuseReason::ConnectionRefused,
                    error: "SCTP ABORT".into(),
                }
            }
            _ => continue,
        }
    }
}

pub(crate) async fn http_get(args: HttpArgs) -> anyhow::Result<i32> {
    if !args.path.starts_with('/')
        || args
            .path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        eprintln!(
            "svcnet-echo: --path must start with '/' and contain no spaces or control characters"
        );
        return Ok(wire::EXIT_USAGE);
    }
    let timeout = Duration::from_millis(args.timeout_ms);
    let deadline = Instant::now() + timeout;
    let source = Source {
        ip: args.source,
        port: None,
    };
    let line = match tcp_connect(args.target, source, deadline, timeout).await {
        Err(line) => line,
        Ok(mut stream) => {
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: svcnet-echo\r\nAccept: */*\r\nConnection: close\r\n\r\n",
                args.path, args.target
            );
            let mut raw = Vec::new();
            let exchange = async {
                stream.write_all(request.as_bytes()).await?;
                tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut raw).await
            };
            match timeout_at(deadline, exchange).await {
                Err(_) => timeout_line(timeout),
                Ok(Err(e)) => ClientLine::Error {
                    error: format!("connection broken: {e}"),
                },
                Ok(Ok(_)) => match wire::parse_http_response(&raw) {
                    Ok(response) => ClientLine::Response(response),
                    Err(error) => ClientLine::Error { error },
                },
            }
        }
    };
    println!("{}", serde_json::to_string(&line)?);
    Ok(line.exit_code())
}

/// Long-lived mode: one connection, one reply per stdin line, until stdin closes.
async fn interactive(target: SocketAddr, source: Source, timeout: Duration) -> anyhow::Result<i32> {
    let emit = |line: &ClientLine| -> anyhow::Result<i32> {
        println!("{}", serde_json::to_string(line)?);
        Ok(line.exit_code())
    };
    let stream = match tcp_connect(target, source, Instant::now() + timeout, timeout).await {
        Ok(s) => s,
        Err(line) => return emit(&line),
    };
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let greeting = read_reply(&mut lines, Instant::now() + timeout, timeout).await;
    let code = emit(&greeting)?;
    if code != wire::EXIT_REPLIED {
        return Ok(code);
    }
    // std's blocking stdin in a thread; tokio's stdin needs a feature we do not enable.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = rx.recv().await {
        if let Err(e) = write.write_all(format!("{line}\n").as_bytes()).await {
            return emit(&ClientLine::Error {
                error: format!("connection broken: {e}"),
            });
        }
        let reply = read_reply(&mut lines, Instant::now() + timeout, timeout).await;
        let code = emit(&reply)?;
        if code != wire::EXIT_REPLIED {
            return Ok(code);
        }
    }
    Ok(wire::EXIT_REPLIED)
}
