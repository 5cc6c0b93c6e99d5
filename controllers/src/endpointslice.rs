//! EndpointSlice controller: turns a Service's selector into EndpointSlices,
//! with kube-controller-manager's semantics (its `endpointslice` controller) and
//! svcnet's own managed-by value
//! [`reconcile::CONTROLLER_NAME`], so it can run beside upstream's controller.
//!
//! Layers:
//! * [`model`] — stripped Pod/Node views kept in the caches.
//! * [`hash`] — upstream's ordering hashes (spew dump + FNV-128a / MD5).
//! * [`reconcile`], [`topology`], [`plan`] — the pure reconciler.
//! * [`trigger`] — last-change-trigger-time tracker; [`tracker`] — stale-cache guard.
//! * [`index`], [`apply`], [`metrics`], [`controller`] — the process: watches
//!   feeding typed indexes (Pods stripped to [`model::PodInfo`]), a de-duplicating work
//!   queue with per-key backoff, create / replace-with-resourceVersion / delete writes,
//!   prometheus-client metrics and events.k8s.io Events.
//!
//! # Wiring (for `svcnet-controller`)
//!
//! ```no_run
//! # async fn wire(client: kube::Client) -> controllers::Result<()> {
//! use controllers::endpointslice::metrics::ControllerMetrics;
//! let mut registry = prometheus_client::registry::Registry::default();
//! let es = ControllerMetrics::register(&mut registry, "svcnet_endpointslice");
//! let ep = ControllerMetrics::register(&mut registry, "svcnet_endpoints");
//! let mi = ControllerMetrics::register(&mut registry, "svcnet_endpointslice_mirroring");
//! let shutdown = async { let _ = tokio::signal::ctrl_c().await; };
//! let (a, b, c) = tokio::join!(
//!     controllers::endpointslice::run(client.clone(), Default::default(), es, shutdown),
//!     controllers::endpoints::run(client.clone(), Default::default(), ep, std::future::pending()),
//!     controllers::mirroring::run(client, Default::default(), mi, std::future::pending()),
//! );
//! a?; b?; c?;
//! # Ok(()) }
//! ```
//! Each `run(client, cfg, metrics, shutdown)` returns when `shutdown` resolves; dropping
//! the future also stops every task it started.

pub mod apply;
pub mod controller;
pub mod hash;
pub mod index;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod reconcile;
pub mod topology;
pub mod tracker;
pub mod trigger;

pub use controller::{run, run_with, Config};

#[cfg(test)]
mod tests;
