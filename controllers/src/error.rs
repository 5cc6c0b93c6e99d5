//! The one error type of the controllers crate.

/// Every failure the controllers library can report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),

    /// Process plumbing (client configuration, …) failed.
    #[error(transparent)]
    Runtime(#[from] runtime::Error),

    /// A configuration value (flag) cannot be used.
    #[error("invalid {flag} {value:?}: {reason}")]
    InvalidConfig {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },

    /// IPAM could not give a Service what it needs (range full, value taken or out of range,
    /// invalid request). The user has been told through an Event.
    #[error("{message}")]
    Allocation {
        /// Stable metric label / Event reason family (`full`, `already_allocated`, …).
        reason: &'static str,
        /// Human-readable explanation.
        message: String,
    },

    /// The informer cache does not show this controller's own last write yet; syncing now
    /// could duplicate or undo it, so the key is retried once the cache catches up.
    #[error("stale cache: {0}")]
    Stale(String),

    /// A transient condition (a concurrent writer won, a value is being claimed by another
    /// worker); the work is retried shortly.
    #[error("retry: {0}")]
    Retry(String),
}

impl Error {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "api",
            Error::InvalidConfig { .. } | Error::Runtime(_) => "invalid_config",
            Error::Allocation { reason, .. } => reason,
            Error::Retry(_) => "retry",
            Error::Stale(_) => "stale",
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A flag's value must lie in `lo..=hi`; otherwise an [`Error::InvalidConfig`] naming it.
pub fn in_range(flag: &'static str, value: usize, lo: usize, hi: usize) -> Result<()> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(Error::InvalidConfig {
            flag,
            value: value.to_string(),
            reason: format!("must be between {lo} and {hi}"),
        })
    }
}
