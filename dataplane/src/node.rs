//! The node's side: flags and their resolution into a node configuration ([`config`]), the
//! proxy's own health and the health-check NodePorts ([`health`]), and Prometheus metrics
//! ([`metrics`], and kube-proxy's own names in [`kube_proxy_metrics`]).

pub mod config;
pub mod detect_local;
pub mod health;
pub mod kube_proxy_config;
pub mod kube_proxy_metrics;
pub mod metrics;
