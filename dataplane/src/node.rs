//! The node's side: flags and their resolution into a node configuration ([`config`]), the
//! proxy's own health and the health-check NodePorts ([`health`]), and Prometheus metrics
//! ([`metrics`]).

pub mod config;
pub mod health;
pub mod metrics;
