//! `svcnet-echo relay`: a byte relay between TCP and Unix sockets.

use std::io;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};

use crate::{Endpoint, RelayArgs};

/// Either kind of connected stream.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

async fn connect_endpoint(to: &Endpoint) -> io::Result<Box<dyn Stream>> {
    Ok(match to {
        Endpoint::Tcp(addr) => Box::new(TcpStream::connect(addr).await?),
        Endpoint::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
    })
}

pub(crate) async fn relay(args: RelayArgs) -> anyhow::Result<()> {
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
