//! The admin HTTP server of svcnet-dns: svcnet-runtime's (`/metrics` in OpenMetrics text,
//! `/healthz`, `/readyz`), with one readiness component, `index`, ready once every watched kind
//! has been listed and not ready again while shutting down.

use std::net::SocketAddr;

pub use runtime::admin::{serve_on as serve, Readiness, ReadyFlag};

/// Binds the admin address.
pub async fn bind(addr: SocketAddr) -> crate::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| crate::Error::Io {
            what: format!("binding admin {addr}"),
            source,
        })
}
