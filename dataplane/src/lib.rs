//! svcnet-proxy: an nftables kube-proxy replacement.
//!
//! The modules are grouped by stage, in the order data flows through them:
//!
//! | stage | what it does | talks to |
//! |---|---|---|
//! | [`watch`] | Kubernetes objects (watched or read from manifests) → [`types`]; folds watch events into the proxy's state and the set of changed Services | the API server |
//! | [`compute`] | pure: per-Service endpoint lists, the renderer (state → nftables [`compute::model::Model`]), the incremental [`compute::assembly::Assembly`] and minimal diffs | nothing |
//! | [`sync`] | the sync engine ([`sync::proxier`]) and the `run` daemon's bounded-frequency loop | the stages around it |
//! | [`apply`] | transactions into the kernel (`nft -f`, in-process libnftables), conntrack cleanup | the kernel |
//! | [`node`] | flags → node configuration, `/healthz` and health-check NodePorts, metrics | the node |
//! | [`announce`] | ARP/NDP answers and take-over announcements for LoadBalancer addresses, and the election of the answering node | the LAN |
//!
//! [`render`](compute::render) describes the ruleset layout and why it scales.

pub mod announce;
pub mod apply;
pub mod compute;
pub mod error;
pub mod node;
pub mod sync;
pub mod types;
pub mod watch;

pub use error::{Error, Result};

#[cfg(test)]
mod tests;
#[cfg(test)]
pub mod tracer;
