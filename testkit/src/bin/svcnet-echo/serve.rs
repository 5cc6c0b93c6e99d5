//! `svcnet-echo serve`: the TCP / UDP / SCTP echo server.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::Context as _;
use testkit::netns::sctp::{self, Chunk, Header};
use testkit::netns::wire::{Proto, Reply};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::{nonzero_tag, raw_payload, raw_sctp_socket, ServeArgs};

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
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
