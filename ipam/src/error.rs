//! The crate's single error type.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A value that an allocator was asked about: an IP, a port, or a raw bitmap offset.
///
/// `Display` prints the bare value (`10.96.0.10`, `30080`, `17`); [`Value::kind`] names what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Value {
    /// An IP address handed to an [`IpRange`](crate::IpRange).
    Ip(IpAddr),
    /// A port handed to a [`PortRange`](crate::PortRange).
    Port(u16),
    /// An offset handed to a bare [`Bitmap`](crate::Bitmap).
    Offset(u64),
}

impl Value {
    /// What kind of value this is, as used in error messages: `"IP"`, `"port"` or `"offset"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Ip(_) => "IP",
            Value::Port(_) => "port",
            Value::Offset(_) => "offset",
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Ip(ip) => write!(f, "{ip}"),
            Value::Port(p) => write!(f, "{p}"),
            Value::Offset(o) => write!(f, "{o}"),
        }
    }
}

/// Everything that can go wrong in this crate.
///
/// Messages follow upstream Kubernetes' wording (`range is full`, `provided IP is already allocated`,
/// `… is not in the valid range. The range of valid ports is 30000-32767`) and always name the value and the
/// range involved, so they can be surfaced to users unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No free value is left in the range (both bands are exhausted).
    #[error("range is full: no free values left in {range}")]
    Full {
        /// The range, e.g. `10.96.0.0/12` or `30000-32767`.
        range: String,
    },

    /// The value is not an allocatable member of the range (for IPv4 this includes the network and broadcast
    /// addresses, for IPv6 the network address and anything past the 65 535-entry cap).
    #[error(
        "the provided {} ({value}) is not in the valid range. The range of valid {}s is {range}",
        .value.kind(),
        .value.kind()
    )]
    OutOfRange {
        /// The rejected value.
        value: Value,
        /// The range it was checked against.
        range: String,
    },

    /// The value is in range but already allocated.
    #[error("provided {} is already allocated: {value} in {range}", .value.kind())]
    AlreadyAllocated {
        /// The value that is taken.
        value: Value,
        /// The range it belongs to.
        range: String,
    },

    /// A range description could not be used (unparseable port range, reversed bounds, too large a bitmap, …).
    #[error("invalid range {range:?}: {reason}")]
    InvalidRange {
        /// The range as given.
        range: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A snapshot was taken over a different range than the allocator it is restored into.
    #[error("the snapshot's range {found:?} does not match the current range {expected:?}")]
    SnapshotMismatch {
        /// The allocator's range.
        expected: String,
        /// The range recorded in the snapshot.
        found: String,
    },

    /// Snapshot bytes could not be decoded or do not fit the range.
    #[error("corrupt snapshot: {reason}")]
    CorruptSnapshot {
        /// What is wrong with it (names the range where one is known).
        reason: String,
    },

    /// The `--service-cluster-ip-range` flag check: more than 20 host bits (see
    /// [`validate_service_cidr`](crate::validate_service_cidr)).
    #[error(
        "specified --service-cluster-ip-range is too large; for {address_bits}-bit addresses, the mask must be >= {min_prefix} (got {cidr})"
    )]
    ServiceCidrTooLarge {
        /// The rejected CIDR.
        cidr: IpNet,
        /// 32 or 128.
        address_bits: u8,
        /// The smallest prefix length accepted for this family (12 or 108).
        min_prefix: u8,
    },

    /// The `--service-cluster-ip-range` flag check: fewer than 8 addresses.
    #[error("the service cluster IP range must be at least 8 IP addresses (got {cidr})")]
    ServiceCidrTooSmall {
        /// The rejected CIDR.
        cidr: IpNet,
    },
}

impl Error {
    /// A short, stable label for metrics (`svcnet_*_errors_total{reason="…"}`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Full { .. } => "full",
            Error::OutOfRange { .. } => "out_of_range",
            Error::AlreadyAllocated { .. } => "already_allocated",
            Error::InvalidRange { .. } => "invalid_range",
            Error::SnapshotMismatch { .. } => "snapshot_mismatch",
            Error::CorruptSnapshot { .. } => "corrupt_snapshot",
            Error::ServiceCidrTooLarge { .. } => "service_cidr_too_large",
            Error::ServiceCidrTooSmall { .. } => "service_cidr_too_small",
        }
    }
}
