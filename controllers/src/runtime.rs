//! Process plumbing shared by svcnet-controller's reconcilers.
//!
//! * [`leader`] — leader election on a `coordination.k8s.io/v1` Lease (create / update with
//!   resourceVersion; no server-side apply).
//! * [`admin`] — the admin HTTP server: `/metrics` (prometheus-client text format), `/healthz`,
//!   `/readyz`.
//! * [`app`] — the `svcnet-controller` process (flags, client, election, controllers).
//! * [`events`] — recording Kubernetes Events on the objects users must fix, with de-duplication.

pub mod admin;
pub mod app;
pub mod events;
pub mod leader;
