//! svcnet-controller: the reconcilers that make a Service work without
//! kube-controller-manager.
//!
//! * [`ipam`] — ClusterIP / NodePort / health-check NodePort / LoadBalancer IP allocation.
//! * [`endpointslice`], [`endpoints`], [`mirroring`] — backends for Services.
//! * [`diagnostics`] — Events that tell users why a Service has no backends.
//! * [`app`] — the `svcnet-controller` process: flags (all validated before anything starts),
//!   client, admin server, leader election, and the selected controllers. The plumbing it
//!   shares with the other binaries is the `svcnet-runtime` crate.

pub mod app;
pub mod diagnostics;
pub mod driver;
pub mod endpoints;
pub mod endpointslice;
pub mod error;
pub mod ipam;
pub mod mirroring;
pub mod watches;

pub use error::{Error, Result};
