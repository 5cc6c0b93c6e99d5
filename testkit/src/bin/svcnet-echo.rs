//! `svcnet-echo`: a small TCP/UDP/SCTP echo server and client for network-namespace tests, with
//! an HTTP probe and a byte relay.
//!
//! ```text
//! svcnet-echo serve --name web-0 --tcp 8080 --udp 5353 --sctp 9999 [--bind 10.244.1.2 …]
//! svcnet-echo client --tcp 10.96.0.10:80 [--timeout-ms 500] [--count 5] [--source 192.168.200.101]
//! svcnet-echo client --udp [fd00:96::a]:53
//! svcnet-echo client --sctp 10.96.0.10:9999
//! svcnet-echo client --tcp 10.96.0.10:80 --interactive   # long-lived: one reply per stdin line
//! svcnet-echo http-get 192.168.200.11:30256 --path /healthz  # e.g. a health-check node port
//! svcnet-echo relay --listen tcp:127.0.0.1:6443 --connect unix:/tmp/api.sock  # byte relay
//! ```
//!
//! The server answers every TCP connection (a greeting on accept, then one reply per line
//! received), every UDP datagram and every SCTP INIT with one JSON line,
//! `{"pod":…,"peer":…,"local":…,"proto":…}`, where `peer` is the source address it saw.
//! Without `--bind` it listens on `[::]`, dual-stack; UDP replies then report `local` as the
//! wildcard address, so the harness binds the pod IPs explicitly. Once every socket is bound it
//! prints one `{"ready":true,…}` line on stdout.
//!
//! The client prints one line per attempt (see `testkit::netns::wire::ClientLine`) and exits 0 when
//! every attempt got a reply, otherwise with the code of the first attempt that did not:
//! 2 = refused (TCP reset / ICMP unreachable), 3 = timeout (dropped), 1 = other error, 64 = usage.
//!
//! SCTP: the CI kernel has no in-kernel SCTP (`CONFIG_IP_SCTP` off), so SCTP is spoken over raw
//! IP sockets: INIT → INIT-ACK carrying the JSON in its State Cookie, or ABORT for a port that is
//! not served (see `testkit::netns::sctp`). Conntrack and NAT treat these as real SCTP packets.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use testkit::netns::sctp::{self, Chunk, Header};
use testkit::netns::wire::{self, ClientLine, Proto, RefuseReason, Reply};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::time::{timeout_at, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "svcnet-echo",
    about = "Echo server and client for svcnet network-namespace tests"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Listen and answer every connection / datagram with a JSON line.
    Serve(ServeArgs),
    /// Connect (or send) and print the outcome of each attempt as a JSON line.
    Client(ClientArgs),
    /// One HTTP/1.1 GET; prints the status, headers and body (or the failure) as a JSON line.
    HttpGet(HttpArgs),
    /// Relays byte streams between a TCP or Unix listener and a TCP or Unix target. A Unix socket
    /// is a file, visible from every network namespace, so two relays carry a connection from a
    /// node namespace to a service on the host's loopback (e.g. the embedded API server).
    Relay(RelayArgs),
}

#[derive(Args, Debug)]
struct RelayArgs {
    /// Where to accept connections: `tcp:ADDR:PORT` or `unix:PATH`.
    #[arg(long)]
    listen: Endpoint,
    /// Where to connect for each accepted connection: `tcp:ADDR:PORT` or `unix:PATH`.
    #[arg(long)]
    connect: Endpoint,
}

/// A stream endpoint of the relay.
#[derive(Clone, Debug)]
enum Endpoint {
    Tcp(SocketAddr),
    Unix(std::path::PathBuf),
}

impl std::str::FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(addr) = s.strip_prefix("tcp:") {
            addr.parse()
                .map(Endpoint::Tcp)
                .map_err(|e| format!("bad address {addr:?}: {e}"))
        } else if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("empty unix socket path".into());
            }
            Ok(Endpoint::Unix(path.into()))
        } else {
            Err(format!("expected tcp:ADDR:PORT or unix:PATH, got {s:?}"))
        }
    }
}

#[derive(Args, Debug)]
struct HttpArgs {
    /// Server address.
    #[arg(value_name = "ADDR:PORT")]
    target: SocketAddr,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Timeout for connecting and reading the whole response.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Source address to bind before connecting.
    #[arg(long, value_name = "ADDR")]
    source: Option<IpAddr>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Name reported in every reply (the pod name).
    #[arg(long)]
    name: String,
    /// TCP port to listen on (repeatable; 0 picks a free port).
    #[arg(long = "tcp", value_name = "PORT")]
    tcp: Vec<u16>,
    /// UDP port to listen on (repeatable; 0 picks a free port).
    #[arg(long = "udp", value_name = "PORT")]
    udp: Vec<u16>,
    /// SCTP port to answer on (repeatable; raw-socket SCTP, see the module docs).
    #[arg(long = "sctp", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    sctp: Vec<u16>,
    /// Address to bind (repeatable). Default: `::`, which is dual-stack.
    #[arg(long = "bind", value_name = "ADDR")]
    bind: Vec<IpAddr>,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["tcp", "udp", "sctp"])))]
struct ClientArgs {
    /// Connect over TCP to HOST:PORT.
    #[arg(long, value_name = "ADDR:PORT")]
    tcp: Option<SocketAddr>,
    /// Send a UDP datagram to HOST:PORT.
    #[arg(long, value_name = "ADDR:PORT")]
    udp: Option<SocketAddr>,
    /// Send an SCTP INIT to HOST:PORT.
    #[arg(long, value_name = "ADDR:PORT")]
    sctp: Option<SocketAddr>,
    /// Per-attempt timeout (connect + reply).
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Number of attempts, each on a new socket (new source port).
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Source address to bind before connecting / sending.
    #[arg(long, value_name = "ADDR")]
    source: Option<IpAddr>,
    /// Fixed source port for every attempt (default: a new one each time). With UDP this reuses
    /// one conntrack entry across attempts, which is how stale-entry cleanup is observed.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    source_port: Option<u16>,
    /// TCP only: keep one connection open, send each stdin line and print each reply.
    #[arg(long, conflicts_with = "count")]
    interactive: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { wire::EXIT_USAGE } else { 0 };
            // Printing help/usage can only fail if stdout/stderr are closed; nothing to do then.
            let _ = e.print();
            return exit(code);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SVCNET_ECHO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("svcnet-echo: cannot start runtime: {e}");
            return exit(wire::EXIT_ERROR);
        }
    };
    let result = match cli.cmd {
        Cmd::Serve(args) => rt.block_on(serve(args)).map(|()| wire::EXIT_REPLIED),
        Cmd::Client(args) => rt.block_on(client(args)),
        Cmd::HttpGet(args) => rt.block_on(http_get(args)),
        Cmd::Relay(args) => rt.block_on(relay(args)).map(|()| wire::EXIT_REPLIED),
    };
    match result {
        Ok(code) => exit(code),
        Err(e) => {
            eprintln!("svcnet-echo: {e:#}");
            exit(wire::EXIT_ERROR)
        }
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

// === serve ===

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.tcp.is_empty() && args.udp.is_empty() && args.sctp.is_empty() {
        anyhow::bail!("nothing to serve: give at least one --tcp, --udp or --sctp port");
    }
    let binds = if args.bind.is_empty() {
        vec![IpAddr::V6(Ipv6Addr::UNSPECIFIED)]
    } else {
        args.bind.clone()
    };
    let mut tasks = tokio::task::JoinSet::new();
    let (mut tcp_addrs, mut udp_addrs, mut sctp_addrs) = (Vec::new(), Vec::new(), Vec::new());
    for ip in &binds {
        for &port in &args.tcp {
            let addr = SocketAddr::new(*ip, port);
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding tcp {addr}"))?;
            tcp_addrs.push(listener.local_addr()?);
            tasks.spawn(serve_tcp(listener, args.name.clone()));
        }
        for &port in &args.udp {
            let addr = SocketAddr::new(*ip, port);
            let socket = UdpSocket::bind(addr)
                .await
                .with_context(|| format!("binding udp {addr}"))?;
            udp_addrs.push(socket.local_addr()?);
            tasks.spawn(serve_udp(socket, args.name.clone()));
        }
    }
    if !args.sctp.is_empty() {
        // One raw socket per address serves every SCTP port; `::` means both families.
        let mut raw_binds = Vec::new();
        for ip in &binds {
            if *ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
                raw_binds.push(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            }
            raw_binds.push(*ip);
        }
        for ip in raw_binds {
            let socket = raw_sctp_socket(ip)
                .with_context(|| format!("opening a raw SCTP socket on {ip}"))?;
            for port in &args.sctp {
                sctp_addrs.push(SocketAddr::new(ip, *port));
            }
            tasks.spawn(serve_sctp(socket, ip, args.sctp.clone(), args.name.clone()));
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "ready": true,
            "pid": std::process::id(),
            "tcp": tcp_addrs,
            "udp": udp_addrs,
            "sctp": sctp_addrs,
        })
    );
    // Every task loops forever; the first one to fail takes the server down.
    match tasks.join_next().await {
        Some(Ok(Err(e))) => Err(e),
        Some(Err(e)) => Err(anyhow::anyhow!("listener task failed: {e}")),
        Some(Ok(Ok(()))) | None => Ok(()),
    }
}

/// Addresses as the server reports them: IPv4-mapped IPv6 shown as IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn reply_line(reply: &Reply) -> String {
    let mut s = serde_json::to_string(reply).expect("Reply always serialises");
    s.push('\n');
    s
}

async fn serve_tcp(listener: TcpListener, name: String) -> anyhow::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            // Per-connection errors (e.g. ECONNABORTED) must not stop the listener.
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let name = name.clone();
        tokio::spawn(async move {
            if let Err(e) = handle_tcp(stream, peer, name).await {
                tracing::debug!(%peer, error = %e, "tcp connection ended with an error");
            }
        });
    }
}

async fn handle_tcp(stream: TcpStream, peer: SocketAddr, name: String) -> io::Result<()> {
    let local = canonical(stream.local_addr()?);
    let peer = canonical(peer);
    tracing::debug!(%peer, %local, "tcp connection");
    let (read, mut write) = stream.into_split();
    let mut reply = Reply {
        pod: name,
        peer,
        local,
        proto: Proto::Tcp,
        seq: Some(0),
        msg: None,
        rtt_us: None,
    };
    write.write_all(reply_line(&reply).as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        reply.seq = Some(reply.seq.unwrap_or(0) + 1);
        reply.msg = Some(line);
        write.write_all(reply_line(&reply).as_bytes()).await?;
    }
    Ok(())
}

async fn serve_udp(socket: UdpSocket, name: String) -> anyhow::Result<()> {
    let local = canonical(socket.local_addr()?);
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors from earlier replies surface here; they concern one peer only.
                tracing::debug!(error = %e, "udp receive error");
                continue;
            }
        };
        let payload = String::from_utf8_lossy(&buf[..n]).trim_end().to_string();
        let reply = Reply {
            pod: name.clone(),
            peer: canonical(peer),
            local,
            proto: Proto::Udp,
            seq: None,
            msg: (!payload.is_empty()).then_some(payload),
            rtt_us: None,
        };
        if let Err(e) = socket.send_to(reply_line(&reply).as_bytes(), peer).await {
            tracing::debug!(%peer, error = %e, "udp send failed");
        }
    }
}

/// A raw IP socket for protocol 132, bound to `ip`, usable through tokio's datagram API
/// (recvfrom / sendto / connect are the same system calls for raw sockets).
fn raw_sctp_socket(ip: IpAddr) -> io::Result<UdpSocket> {
    let domain = if ip.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(
        domain,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(sctp::IPPROTO_SCTP)),
    )?;
    socket.bind(&SocketAddr::new(ip, 0).into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(std::net::UdpSocket::from(socket))
}

/// Splits what a raw socket returned into (source IP, destination IP, SCTP packet). IPv4 raw
/// sockets include the IP header; IPv6 ones do not, so the destination is the bound address.
fn raw_payload(buf: &[u8], from: SocketAddr, bound: IpAddr) -> Option<(IpAddr, IpAddr, &[u8])> {
    if bound.is_ipv4() {
        let (src, dst, payload) = sctp::split_ipv4(buf)?;
        Some((src.into(), dst.into(), payload))
    } else {
        Some((from.ip(), bound, buf))
    }
}

fn nonzero_tag() -> u32 {
    rand::random::<u32>().max(1)
}

async fn serve_sctp(
    socket: UdpSocket,
    bound: IpAddr,
    ports: Vec<u16>,
    name: String,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "sctp receive error");
                continue;
            }
        };
        let Some((src, dst, pkt)) = raw_payload(&buf[..n], from, bound) else {
            continue;
        };
        // Only association attempts: INIT with a zero verification tag.
        let Some((h, Chunk::Init { tag })) = sctp::decode(pkt) else {
            continue;
        };
        if h.vtag != 0 {
            continue;
        }
        let chunk = if ports.contains(&h.dst_port) {
            let reply = Reply {
                pod: name.clone(),
                peer: SocketAddr::new(src.to_canonical(), h.src_port),
                local: SocketAddr::new(dst.to_canonical(), h.dst_port),
                proto: Proto::Sctp,
                seq: None,
                msg: None,
                rtt_us: None,
            };
            Chunk::InitAck {
                tag: nonzero_tag(),
                cookie: serde_json::to_vec(&reply)?,
            }
        } else {
            // What an SCTP stack answers for a port nobody listens on.
            Chunk::Abort
        };
        let answer = Header {
            src_port: h.dst_port,
            dst_port: h.src_port,
            vtag: tag,
        };
        if let Err(e) = socket
            .send_to(&sctp::encode(&answer, &chunk), SocketAddr::new(src, 0))
            .await
        {
            tracing::debug!(%src, error = %e, "sctp send failed");
        }
    }
}

// === relay ===

/// Either kind of connected stream.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

async fn connect_endpoint(to: &Endpoint) -> io::Result<Box<dyn Stream>> {
    Ok(match to {
        Endpoint::Tcp(addr) => Box::new(TcpStream::connect(addr).await?),
        Endpoint::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
    })
}

async fn relay(args: RelayArgs) -> anyhow::Result<()> {
    enum Listener {
        Tcp(TcpListener),
        Unix(tokio::net::UnixListener),
    }
    let listener = match &args.listen {
        Endpoint::Tcp(addr) => Listener::Tcp(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?,
        ),
        Endpoint::Unix(path) => Listener::Unix(
            tokio::net::UnixListener::bind(path)
                .with_context(|| format!("listening on {}", path.display()))?,
        ),
    };
    let listening = match &listener {
        Listener::Tcp(l) => format!("tcp:{}", l.local_addr()?),
        Listener::Unix(_) => format!("{:?}", args.listen),
    };
    println!(
        "{}",
        serde_json::json!({"ready": true, "pid": std::process::id(), "listen": listening})
    );
    loop {
        let accepted: io::Result<Box<dyn Stream>> = match &listener {
            Listener::Tcp(l) => l
                .accept()
                .await
                .map(|(s, _)| Box::new(s) as Box<dyn Stream>),
            Listener::Unix(l) => l
                .accept()
                .await
                .map(|(s, _)| Box::new(s) as Box<dyn Stream>),
        };
        let mut inbound = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let to = args.connect.clone();
        tokio::spawn(async move {
            match connect_endpoint(&to).await {
                Ok(mut outbound) => {
                    if let Err(e) = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await
                    {
                        tracing::debug!(error = %e, "relayed connection ended with an error");
                    }
                }
                // Dropping `inbound` closes the client's connection: it sees the target is down.
                Err(e) => tracing::warn!(?to, error = %e, "cannot connect relay target"),
            }
        });
    }
}

// === client ===

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

async fn client(args: ClientArgs) -> anyhow::Result<i32> {
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

async fn http_get(args: HttpArgs) -> anyhow::Result<i32> {
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
