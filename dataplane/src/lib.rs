//! svcnet-proxy: an nftables kube-proxy replacement.
//!
//! Data flow: watch Services + EndpointSlices + own Node ([`convert`] turns objects into [`types`]) →
//! per-Service fragments from [`render::service_fragment`] (pure) → [`assembly::Assembly`], which keeps
//! them reference-counted and turns a change into the minimal transaction (a full sync streams
//! everything) → one atomic transaction through [`nft::Nft`] ([`proxier`] drives it). See [`render`]
//! for the ruleset layout and why it scales.

pub mod diff;
pub mod endpoints;
pub mod error;
pub mod libnft;
pub mod model;
pub mod names;
pub mod nft;
pub mod render;
pub mod sizing;
pub mod types;

pub use error::{Error, Result};
pub mod assembly;
pub mod config;
pub mod conntrack;
pub mod convert;
pub mod daemon;
pub mod health;
pub mod manifests;
pub mod metrics;
pub mod proxier;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub mod tracer;
pub mod tracker;
