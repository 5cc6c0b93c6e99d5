//! The UDP and TCP listeners.
//!
//! UDP: one receive loop per worker thread on the same socket (the kernel hands each datagram
//! to one of them). A loop drains every datagram that is ready, answers each one that needs no
//! upstream inline ([`Handler::handle_local`]: no task, no copy of the request), and spawns a
//! task only for a request that waits on an upstream (at most [`MAX_INFLIGHT_UDP`] at once;
//! more are dropped, as an overloaded resolver does). A response the socket cannot take at
//! once is sent by awaiting, which slows that loop down instead of dropping it.
//!
//! TCP: at most [`MAX_TCP_CONNECTIONS`] connections, each serving any number of
//! length-prefixed requests until it idles for [`TCP_IDLE`].

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::server::{Handled, Handler, Proto};

/// UDP requests waiting on an upstream at once.
pub const MAX_INFLIGHT_UDP: usize = 10_000;
/// Open TCP connections at most.
pub const MAX_TCP_CONNECTIONS: usize = 1_000;
/// A TCP connection idle this long is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(10);

/// Receive buffer asked for on the UDP socket.
pub const UDP_RECV_BUFFER: usize = 4 << 20;

/// Binds the UDP socket and the TCP listener of `addr` (fails fast on a busy port).
pub async fn bind(addr: SocketAddr) -> crate::Result<(UdpSocket, TcpListener)> {
    let io = |what: String| move |source| crate::Error::Io { what, source };
    let udp = UdpSocket::bind(addr)
        .await
        .map_err(io(format!("binding UDP {addr}")))?;
    // Bursts above what one scheduling slice drains would otherwise overflow the default
    // receive buffer (~208 KiB) and be dropped by the kernel; the kernel caps the request at
    // net.core.rmem_max, and failing to enlarge it only costs headroom.
    if let Err(err) = socket2::SockRef::from(&udp).set_recv_buffer_size(UDP_RECV_BUFFER) {
        tracing::debug!(%err, "enlarging the UDP receive buffer failed");
    }
    // The same port for TCP (`:0` picks one for UDP first).
    let tcp_addr = udp
        .local_addr()
        .map_err(io(format!("address of UDP {addr}")))?;
    let tcp = TcpListener::bind(tcp_addr)
        .await
        .map_err(io(format!("binding TCP {tcp_addr}")))?;
    Ok((udp, tcp))
}

/// Serves UDP requests on `sock` forever, with `loops` receive loops (at least one).
pub async fn serve_udp(handler: Arc<Handler>, sock: UdpSocket, loops: usize) {
    let sock = Arc::new(sock);
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT_UDP));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..loops.max(1) {
        tasks.spawn(udp_loop(handler.clone(), sock.clone(), inflight.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

/// The number of UDP receive loops that suits this process: one per CPU it may run on.
pub fn default_udp_loops() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

async fn udp_loop(handler: Arc<Handler>, sock: Arc<UdpSocket>, inflight: Arc<Semaphore>) {
    let mut buf = vec![0u8; 65535];
    loop {
        if let Err(err) = sock.readable().await {
            tracing::warn!(%err, "UDP socket failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        // Drain what is queued before waiting again.
        loop {
            let (len, peer) = match sock.try_recv_from(&mut buf) {
                Ok(x) => x,
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) => {
                    // ICMP errors of earlier sends surface here on some systems; keep reading.
                    tracing::debug!(%err, "UDP receive failed");
                    continue;
                }
            };
            match handler.handle_local(&buf[..len], Proto::Udp, peer) {
                Handled::Done(Some(resp)) => send(&sock, &resp, peer).await,
                Handled::Done(None) => {}
                Handled::Upstream(pending) => {
                    let Ok(permit) = inflight.clone().try_acquire_owned() else {
                        continue;
                    };
                    let (handler, sock) = (handler.clone(), sock.clone());
                    tokio::spawn(async move {
                        if let Some(resp) = handler.resolve(pending).await {
                            send(&sock, &resp, peer).await;
                        }
                        drop(permit);
                    });
                }
            }
        }
    }
}

async fn send(sock: &UdpSocket, resp: &[u8], peer: SocketAddr) {
    let sent = match sock.try_send_to(resp, peer) {
        Err(err) if err.kind() == ErrorKind::WouldBlock => sock.send_to(resp, peer).await,
        other => other,
    };
    if let Err(err) = sent {
        tracing::debug!(%peer, %err, "UDP send failed");
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
