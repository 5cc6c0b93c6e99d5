//! Service IPAM: ClusterIPs, NodePorts, health-check NodePorts and LoadBalancer IPs.
//!
//! # Who allocates
//! On a real kube-apiserver Services arrive with `clusterIPs` and `nodePort`s already set: this
//! controller *adopts* them (claims them, see below) and reports duplicates and out-of-range values
//! as Events (`ClusterIPAlreadyAllocated`, `ClusterIPOutOfRange`, `PortAlreadyAllocated`,
//! `PortOutOfRange`). On an API server that leaves them empty (our embedded server, generic
//! control planes) it *allocates* them, with upstream's semantics ([`plan`]). The rule is per
//! Service and per field: an empty field that must be filled is filled, a filled one is adopted.
//! LoadBalancer IPs (from [`crds::LoadBalancerIPPool`]s) are always ours to allocate.
//!
//! # Durability: one claim object per allocated value
//! Every allocated value is an object in the API, created atomically:
//!
//! * a `networking.k8s.io/v1` `IPAddress` named by the address for every ClusterIP, where the
//!   API serves that type (Kubernetes 1.33+, the embedded server) — the objects kube-apiserver
//!   records its own ClusterIPs with ([`addresses`]); the ranges then come from the
//!   `ServiceCIDR` objects ([`service_cidrs`]), added and removed at run time, the default one
//!   made from `--service-cluster-ip-range`. ClusterIP claims of an older version are migrated
//!   to IPAddresses at start, before any allocation, each IPAddress created before its claim is
//!   deleted;
//! * a [`crds::ServiceIPClaim`] named by the address ([`crds::ServiceIPClaim::name_for`]) for
//!   every LoadBalancer IP, and for ClusterIPs where the API has no IPAddress type, with
//!   `parentRefs` naming the Service(s) by namespace, name and UID;
//! * a [`crds::NodePortClaim`] named by the port number for every nodePort and
//!   healthCheckNodePort (one number serving TCP and UDP of one Service is one claim).
//!
//! This is upstream's `networking.k8s.io/v1` `IPAddress` design. Uniqueness comes from the API
//! server's name uniqueness: a `create` that fails with `409 AlreadyExists` means the value is
//! taken, so two replicas racing (e.g. both believing they lead during a fail-over) can never both
//! win a value. Allocations survive restarts because they *are* API objects: on start the
//! controller lists the claims before it reconciles any Service. A claim is written **before** the
//! Service that uses it; if the Service write then fails (conflict, crash), the Service's next
//! reconcile reuses its unreferenced claim or releases it after confirming the Service against the
//! API; the repair loop ([`repair`]) deletes claims none of whose holders exists any more, after 3
//! consecutive detections and a 60 s grace period (upstream's numbers; both configurable). A live
//! Service's claim is never repair's to delete: its claim-then-write may still be in flight (deleting
//! it there once let a second Service take the same ClusterIP). Shared LoadBalancer IPs keep several `parentRefs`, updated with
//! compare-and-swap on `resourceVersion`; the last holder's release deletes the claim.
//!
//! Watch caches lag behind the API, so the two destructive steps never trust them alone: a
//! reconcile releases values only after a GET confirms the Service still looks as planned, and
//! the repair loop re-reads a leaked claim's holders from the API before deleting it (with the
//! claim's resourceVersion and UID as delete preconditions). Service writes are updates with
//! resourceVersion, so a reconcile planned from a stale view can never land.
//!
//! A compare-and-swap ledger per range (one object holding a bitmap) was rejected: every
//! allocation would contend on one object (a 5,000-Service burst serialises on its
//! resourceVersion), and one object's size caps the range.
//!
//! # Structure
//! * [`svc_view`] — the allocation-relevant parts of a Service, converted at the boundary.
//! * [`plan`] — pure planning (ClusterIP families, node ports, LoadBalancer pools and sharing).
//! * [`state`] — in-memory index of claims + bitmaps (from the `ipam` crate) to pick candidates;
//!   [`cluster_ranges`] — the ClusterIP ranges, ready or not.
//! * [`addresses`], [`service_cidrs`] (pure) and [`service_cidr_io`] — the IPAddress ledger,
//!   the ServiceCIDR lifecycle (finalizer, `Ready`, deletion) and the claim migration.
//! * [`claims`] — API operations on claim objects.
//! * [`reconcile`] — plan → claim → write Service (update with resourceVersion; LB status via
//!   merge patch on `/status`) → release.
//! * [`controller`] — watches, work queue, workers; [`repair`] — leaks, pool status, metrics.
//!
//! Writes never use server-side apply (our embedded API server refuses it).

pub mod addresses;
pub mod apply;
pub mod claim_io;
pub mod claims;
pub mod cluster_ranges;
pub mod config;
pub mod context;
pub mod controller;
pub mod lb_io;
pub mod metrics;
pub mod plan;
pub mod reconcile;
pub mod repair;
pub mod service_cidr_io;
pub mod service_cidrs;
pub mod state;
pub mod svc_view;

pub use config::{parse_service_cidrs, IpamConfig};
pub use context::Ipam;
pub use controller::{run, run_with};
pub use metrics::IpamMetrics;
