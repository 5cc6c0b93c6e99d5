//! svcnet-controller: the reconcilers that make a Service work without
//! kube-controller-manager.
//!
//! * [`ipam`] — ClusterIP / NodePort / health-check NodePort / LoadBalancer IP allocation.
//! * [`endpointslice`], [`endpoints`], [`mirroring`] — backends for Services.
//! * [`diagnostics`] — Events that tell users why a Service has no backends.
//! * Shared by the endpoint controllers: [`driver`] (the one controller runtime: sync gate,
//!   workers, retries, readiness), [`watches`] (one watch per kind per process), [`index`],
//!   [`views`], [`writes`], [`apply`], [`tracker`], [`trigger`], [`hash`], [`metrics`].
//! * [`app`] — the `svcnet-controller` process: flags (all validated before anything starts),
//!   client, admin server, leader election, and the selected controllers. The plumbing it
//!   shares with the other binaries is the `svcnet-runtime` crate.

pub mod app;
pub mod apply;
pub mod diagnostics;
pub mod driver;
pub mod endpoints;
pub mod endpointslice;
pub mod error;
pub mod hash;
pub mod index;
pub mod ipam;
pub mod metrics;
pub mod mirroring;
pub mod tracker;
pub mod trigger;
pub mod views;
pub mod watches;
pub mod writes;

pub use error::{Error, Result};
