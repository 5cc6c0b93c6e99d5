//! Process plumbing shared by svcnet's binaries (`svcnet-controller`, `svcnet-proxy`, …), so that
//! each behaves the same way at its edges.
//!
//! * [`duration`] — one parser for every duration flag (Go's `time.ParseDuration` forms, as
//!   upstream components accept them, plus a bare number of seconds).
//! * [`client`] — the Kubernetes client from `--kubeconfig`, or in-cluster / `$KUBECONFIG`.
//! * [`admin`] — the admin HTTP server: `/metrics`, `/healthz`, and `/readyz` over named
//!   readiness components (every component must report ready).
//! * [`leader`] — leader election on a `coordination.k8s.io/v1` Lease.
//! * [`events`] — recording Kubernetes Events with de-duplication.
//! * [`queue`] — the controllers' work queue (client-go's workqueue semantics: de-duplication,
//!   no key processed twice at once, delayed adds, per-key exponential backoff).

pub mod admin;
pub mod client;
pub mod duration;
pub mod events;
pub mod leader;
pub mod queue;

/// Errors of the shared plumbing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client configuration could not be loaded.
    #[error("--kubeconfig {path}: {reason}")]
    Kubeconfig {
        /// The kubeconfig path (empty: in-cluster / `$KUBECONFIG` inference).
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A duration flag did not parse.
    #[error("invalid duration {value:?}: {reason}")]
    Duration {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The Kubernetes client failed.
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
