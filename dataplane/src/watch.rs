//! Inputs: Kubernetes objects become the small internal [`crate::types`] ([`convert`]), watch
//! events are folded into the proxy's state ([`tracker`]), and manifests can stand in for a watch
//! (`svcnet-proxy render`/`sync`, [`manifests`]).

pub mod convert;
pub mod manifests;
pub mod tracker;
