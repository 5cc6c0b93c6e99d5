//! svcnet's test kit, a dev-dependency of the suites and the engine of the demo.
//!
//! * [`harness`] — envtest-style backends that hand tests a `kube::Client`: the embedded server
//!   (from `svcnet-apiserver`), a real etcd + kube-apiserver (`KUBEBUILDER_ASSETS`) or an existing
//!   cluster (`E2E_KUBECONFIG`); per-test namespaces and Pod helpers.
//! * [`netns`] — nodes, pods and clients built from Linux network namespaces and veth links, for
//!   dataplane tests and the demo; the `svcnet-echo` binary is the server those pods run.

pub mod harness;
pub mod netns;
