//! Legacy `core/v1` Endpoints controller, with the semantics of upstream's
//! `pkg/controller/endpoint`.
//!
//! * [`desired`] — the pure layer: subsets, RepackSubsets, the 1000-address
//!   cap with the over-capacity annotation, headless handling.

pub mod controller;
pub mod desired;

pub use controller::{run, Config};

#[cfg(test)]
mod tests;
