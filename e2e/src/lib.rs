//! svcnet's test and demo infrastructure.
//!
//! * [`apiserver`] — an in-process, Kubernetes-API-compatible HTTP server (the embedded default).
//! * [`harness`] — envtest-style helpers that hand tests a `kube::Client` from the embedded server,
//!   a real control plane (`KUBEBUILDER_ASSETS`) or an existing cluster (`E2E_KUBECONFIG`).
//! * [`netns`] — nodes, pods and clients built from Linux network namespaces, for dataplane tests.

pub mod apiserver;
pub mod demo;
pub mod harness;
pub mod netns;
