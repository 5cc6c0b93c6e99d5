//! Pure planning: given a Service (and what we knew of it before) and the cluster configuration,
//! decide which addresses and ports it must hold. No I/O; every function here is table-tested.
//!
//! * [`cluster_ip`] — ipFamilyPolicy / ipFamilies / clusterIPs, exactly as upstream's
//!   `initIPFamilyFields` + `allocClusterIPs` / `updateClusterIPs`.
//! * [`node_port`] — nodePorts and healthCheckNodePort, with upstream's create-vs-update
//!   asymmetry for one port number served over several protocols.
//! * [`load_balancer`] — LoadBalancer IPs from pools: class, requested IPs, sharing keys, pool
//!   selection.
//!
//! * [`steps`] — the ordered steps of one reconcile (claims, the Service write,
//!   confirm-then-release) and what to release at its end: every claim a Service holds that
//!   its plan no longer needs (type change, port removal, dual → single stack, deletion).

pub mod cluster_ip;
pub mod load_balancer;
pub mod node_port;
pub mod steps;

use std::fmt;

/// Why a Service cannot be given what it asks for. The text mirrors the apiserver's field errors
/// (`spec.ipFamilyPolicy: Invalid value: "SingleStack": must be ...`) so users recognise it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    /// Field path, e.g. `spec.ipFamilies[1]`.
    pub field: String,
    /// Offending value as text.
    pub value: String,
    /// Explanation.
    pub message: String,
    /// Event reason to report it under (e.g. `ClusterIPNotValid`).
    pub reason: &'static str,
}

impl PlanError {
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl fmt::Display,
        message: impl Into<String>,
    ) -> Self {
        PlanError {
            field: field.into(),
            value: value.to_string(),
            message: message.into(),
            reason: "InvalidSpec",
        }
    }

    pub(crate) fn reason(mut self, reason: &'static str) -> Self {
        self.reason = reason;
        self
    }
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: Invalid value: {:?}: {}",
            self.field, self.value, self.message
        )
    }
}

impl std::error::Error for PlanError {}

/// Several [`PlanError`]s, reported together as the apiserver does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanErrors(pub Vec<PlanError>);

impl fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        if parts.len() == 1 {
            f.write_str(&parts[0])
        } else {
            write!(f, "[{}]", parts.join(", "))
        }
    }
}

impl std::error::Error for PlanErrors {}

impl PlanErrors {
    /// The Event reason of the first error.
    pub fn reason(&self) -> &'static str {
        self.0.first().map(|e| e.reason).unwrap_or("InvalidSpec")
    }

    /// Whether any error is about `message` (test helper and for callers that branch).
    pub fn mentions(&self, message: &str) -> bool {
        self.0.iter().any(|e| e.message.contains(message))
    }
}

impl From<PlanError> for PlanErrors {
    fn from(e: PlanError) -> Self {
        PlanErrors(vec![e])
    }
}
