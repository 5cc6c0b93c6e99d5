//! Inputs: Kubernetes objects become the small internal [`crate::types`] ([`convert`]), watch
//! events are folded into the proxy's state ([`tracker`], and the Service CIDRs' source in
//! [`service_cidrs`]), ServiceCIDR objects are discovered and watched ([`service_cidr_watch`]),
//! and manifests can stand in for a watch (`svcnet-proxy render`/`sync`, [`manifests`]).

pub mod convert;
pub mod manifests;
pub mod service_cidr_watch;
pub mod service_cidrs;
pub mod tracker;
