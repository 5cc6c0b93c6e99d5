//! EndpointSlice controller: turns a Service's selector into EndpointSlices,
//! with kube-controller-manager's semantics (its `endpointslice` controller) and
//! svcnet's own managed-by value
//! [`build::CONTROLLER_NAME`], so it can run beside upstream's controller.
//!
//! Layers:
//! * [`build`], [`desired`], [`topology`] — the pure reconciler: Service + Pods + Nodes + existing
//!   slices → a [`crate::writes::SlicePlan`] (upstream's packing, topology hints).
//! * [`controller`] — configuration, the folds that keep its caches, and the sync of one
//!   Service; the runtime around it is [`crate::driver`], the watches [`crate::watches`].
//!
//! The pieces it shares with the Endpoints and mirroring controllers are top-level modules of
//! this crate: [`crate::views`] (stripped Pod/Node views), [`crate::index`] (typed indexes),
//! [`crate::hash`] (upstream's ordering hashes), [`crate::writes`], [`crate::apply`] (writes and
//! Events), [`crate::tracker`] (stale-cache guard), [`crate::trigger`] (last-change trigger
//! time) and [`crate::metrics`].
//!
//! # Wiring (for `svcnet-controller`)
//!
//! ```no_run
//! # async fn wire(client: kube::Client) -> controllers::Result<()> {
//! use controllers::metrics::ControllerMetrics;
//! let mut registry = prometheus_client::registry::Registry::default();
//! let es = ControllerMetrics::register(&mut registry, "svcnet_endpointslice");
//! let ep = ControllerMetrics::register(&mut registry, "svcnet_endpoints");
//! let mi = ControllerMetrics::register(&mut registry, "svcnet_endpointslice_mirroring");
//! let shutdown = async { let _ = tokio::signal::ctrl_c().await; };
//! // One watch per kind for all three controllers.
//! let w = controllers::watches::Watches::new(client.clone());
//! let (a, b, c) = tokio::join!(
//!     controllers::endpointslice::run(&w, client.clone(), Default::default(), es, shutdown),
//!     controllers::endpoints::run(&w, client.clone(), Default::default(), ep, std::future::pending()),
//!     controllers::mirroring::run(&w, client, Default::default(), mi, std::future::pending()),
//! );
//! a?; b?; c?;
//! # Ok(()) }
//! ```
//! Each `run(watches, client, cfg, metrics, shutdown)` returns when `shutdown` resolves;
//! dropping the future also stops every task it started.

pub mod build;
pub mod controller;
pub mod desired;
pub mod topology;

pub use controller::{run, Config};

#[cfg(test)]
mod tests;
