//! Legacy `core/v1` Endpoints controller (upstream `pkg/controller/endpoint`,
//! see `shared/docs/upstream-behavior.md` §2).
//!
//! * [`desired`] — the pure layer: subsets, RepackSubsets, the 1000-address
//!   cap with the over-capacity annotation, headless handling.

pub mod controller;
pub mod desired;

pub use controller::{run, Config};

#[cfg(test)]
mod tests;
