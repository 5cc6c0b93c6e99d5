//! svcnet-controller: the reconcilers that make a Service work without
//! kube-controller-manager.
//!
//! * [`ipam`] — ClusterIP / NodePort / health-check NodePort / LoadBalancer IP allocation.
//! * [`endpointslice`], [`endpoints`], [`mirroring`] — backends for Services.
//! * [`diagnostics`] — Events that tell users why a Service has no backends.
//! * [`runtime`] — leader election, the admin server (`/metrics`, `/healthz`, `/readyz`), Event recording.

pub mod diagnostics;
pub mod endpoints;
pub mod endpointslice;
pub mod error;
pub mod ipam;
pub mod mirroring;
pub mod runtime;

pub use error::{Error, Result};
