//! EndpointSlice mirroring controller: selectorless Services with
//! user-written Endpoints get EndpointSlices managed by
//! [`desired::MIRRORING_CONTROLLER_NAME`], as kube-controller-manager's
//! `endpointslicemirroring` controller does it.
//!
//! * [`desired`] — the pure layer (caps, skip rules, invalid-IP events, recycling).

pub mod controller;
pub mod desired;

pub use controller::{run, Config};

#[cfg(test)]
mod tests;
