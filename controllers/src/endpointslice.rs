//! EndpointSlice controller: turns a Service's selector into EndpointSlices,
//! with kube-controller-manager's semantics (see
//! `shared/docs/upstream-behavior.md` §1) and svcnet's own managed-by value
//! [`reconcile::CONTROLLER_NAME`], so it can run beside upstream's controller.
//!
//! Layers:
//! * [`model`] — stripped Pod/Node views kept in the caches.
//! * [`hash`] — upstream's ordering hashes (spew dump + FNV-128a / MD5).
//! * [`reconcile`], [`topology`], [`plan`] — the pure reconciler.
//! * [`trigger`] — last-change-trigger-time tracker; [`tracker`] — stale-cache guard.

pub mod apply;
pub mod controller;
pub mod hash;
pub mod index;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod queue;
pub mod reconcile;
pub mod topology;
pub mod tracker;
pub mod trigger;

pub use controller::{run, Config};

#[cfg(test)]
mod tests;
