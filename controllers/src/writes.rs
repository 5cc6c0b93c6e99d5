//! The output of a pure reconcile: the writes to make and the Events to emit.

use k8s_openapi::api::discovery::v1::EndpointSlice;

/// `Normal` or `Warning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Informational.
    Normal,
    /// Something a user should look at.
    Warning,
}

/// An Event to record on the owning object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSpec {
    /// Normal / Warning.
    pub kind: EventKind,
    /// CamelCase reason.
    pub reason: String,
    /// Human message.
    pub message: String,
}

impl EventSpec {
    /// A Warning event.
    pub fn warning(reason: &str, message: impl Into<String>) -> Self {
        EventSpec {
            kind: EventKind::Warning,
            reason: reason.into(),
            message: message.into(),
        }
    }
    /// A Normal event.
    pub fn normal(reason: &str, message: impl Into<String>) -> Self {
        EventSpec {
            kind: EventKind::Normal,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Writes for one Service (or Endpoints object, for mirroring), to be applied
/// in this order: creates, updates, deletes.
#[derive(Clone, Debug, Default)]
pub struct SlicePlan {
    /// New slices (`generateName` set, no name).
    pub creates: Vec<EndpointSlice>,
    /// Full replacements of existing slices (name set).
    pub updates: Vec<EndpointSlice>,
    /// Existing slices to delete.
    pub deletes: Vec<EndpointSlice>,
    /// Events for the owner.
    pub events: Vec<EventSpec>,
    /// Non-fatal problems that must make the sync retry (e.g. a Pod's Node
    /// is missing from the cache).
    pub errors: Vec<String>,
    /// Endpoints added by this plan (metrics).
    pub endpoints_added: usize,
    /// Endpoints removed by this plan (metrics).
    pub endpoints_removed: usize,
    /// Endpoints the Service wants in total (metrics).
    pub endpoints_desired: usize,
    /// Slices the Service will have afterwards (metrics).
    pub slices_desired: usize,
}

impl SlicePlan {
    /// Number of API writes this plan makes.
    pub fn writes(&self) -> usize {
        self.creates.len() + self.updates.len() + self.deletes.len()
    }

    /// Nothing to write.
    pub fn is_noop(&self) -> bool {
        self.writes() == 0
    }
}
