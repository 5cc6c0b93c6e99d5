//! svcnet-dns: cluster DNS for Services and Pods, following the Kubernetes DNS-Based Service
//! Discovery specification and CoreDNS's `kubernetes` plugin.
//!
//! * [`index`] — the in-memory index of Namespaces, Services, EndpointSlices and Pods (pure).
//! * [`answer`] — the answer to one question from the index (pure).
//! * [`forward`] — upstream resolution with a bounded cache and a bounded deadline.
//! * [`server`] — the request path (decode, answer or forward, EDNS0, truncation).
//! * [`answer_cache`] — encoded cluster answers, per index generation.
//! * [`listen`] — the UDP and TCP listeners.
//! * [`watch`] — the Kubernetes watchers that keep the index current.
//! * [`metrics`] — CoreDNS-compatible Prometheus metrics.
//! * [`admin`] — `/metrics`, `/healthz`, `/readyz`.
//! * [`app`] — flags and the process.

pub mod admin;
pub mod answer;
pub mod answer_cache;
pub mod app;
pub mod forward;
pub mod index;
pub mod listen;
pub mod metrics;
pub mod server;
pub mod transport;
pub mod watch;

/// Errors of the svcnet-dns library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag has an unusable value.
    #[error("invalid {flag} {value:?}: {reason}")]
    InvalidConfig {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
        /// Why it is unusable.
        reason: String,
    },
    /// Binding or using a socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A Kubernetes client error.
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
