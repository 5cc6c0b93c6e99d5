//! The pure core: what the ruleset should be. Per-Service-port endpoint selection
//! ([`endpoints`]), object-derived names ([`names`]), the renderer ([`render`]) and map sizing
//! ([`sizing`]) produce an nftables [`model`]; [`assembly`] keeps that model incrementally and
//! [`diff`] computes minimal transactions. Nothing here does I/O.

pub mod assembly;
pub mod diff;
pub mod endpoints;
pub mod model;
pub mod names;
pub mod render;
pub mod sizing;
